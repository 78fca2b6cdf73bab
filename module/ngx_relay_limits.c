
/*
 * Copyright (C) The relay authors
 */


/*
 * Inbound sending limits: messages and recipients per time window, per
 * client address, authenticated user, sender domain or tenant, counted in
 * shared memory so that every worker sees the same figures (scope node),
 * or in the fleet's Redis so that every node does (scope fleet).
 *
 * A rule counts separately for each value it matches: "client_ip
 * 10.0.0.0/8 messages=100" lets each client of that network send 100
 * (IPv6 clients count per /64, the usual size of one customer's network);
 * "sender_domain * messages=1000" gives each sender domain 1000.  Windows
 * are fixed (aligned to the window length), as Postfix's anvil counts.
 *
 * The table is open addressing over a fixed array: a counter lives in one
 * of NGX_RELAY_LIMIT_PROBES slots after its hash; an expired slot is free,
 * and when none is, the one expiring first gives way (a hot table forgets
 * the quietest senders first, never the one counting now).
 *
 * Fleet scope.  A rule with scope=fleet counts in Redis, in a hash per
 * rule, value and window (fields "m" and "r"):
 *
 *   PREFIX in:KEY:MATCH:VALUE:WINDOW:START     e.g.
 *   relay:in:auth_user:*:alice@example.com:3600:1712345600
 *
 * and a fleet destination limit in a hash per destination, pool (and
 * source address, or "*") and clock minute or hour (field "n"):
 *
 *   PREFIX out:DOMAIN:POOL:ADDRESS:m:START      ("-": no pool)
 *   PREFIX out:DOMAIN:POOL:ADDRESS:h:START
 *
 * Windows are fixed, aligned to their length by the node's clock (keep
 * the fleet's clocks in time), and every key expires 5 s after its
 * window: nothing stays behind.  One script (relay_limits_script below),
 * run with EVALSHA, checks and counts atomically for every node: in a
 * group of keys, all are below their limits and each counts one, or none
 * counts.  The node's own rules are taken first (in the zone); when a
 * fleet rule then refuses, they are given back.
 *
 * When Redis cannot answer (not connected, or not within
 * relay_limit_redis_timeout), relay_limit_redis_fallback decides: local
 * counts the fleet rules in the zone against their limit divided by
 * relay_limit_fleet_nodes; tempfail refuses for now (451 4.3.0 at the
 * session); accept counts nothing and lets the mail through.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>
#include <ngx_relay_limits.h>


#define NGX_RELAY_LIMIT_PROBES       8
#define NGX_RELAY_LIMIT_MAX_RULES    32
#define NGX_RELAY_LIMIT_KEY_SLACK    5      /* keys outlive their window */
#define NGX_RELAY_LIMIT_TEMPFAIL     10000  /* ms a tempfailed delivery
                                               waits */
#define NGX_RELAY_EGRESS_GROUPS      32     /* NGX_RELAY_EGRESS_MAX */


typedef struct {
    uint64_t                  key;
    time_t                    expires;
    uint32_t                  messages;
    uint32_t                  recipients;
} ngx_relay_limit_slot_t;


#define NGX_RELAY_SHAPE_COLUMNS      32
#define NGX_RELAY_SHAPE_SLOW_FACTOR  10


/*
 * A destination's shaping state.  Open connections are counted per worker
 * process in a column of its own, so that a worker that died leaves
 * nothing behind: the worker that takes its column over clears it.
 */

typedef struct {
    uint64_t                  key;
    time_t                    used;
    time_t                    minute;        /* start of the current one */
    uint32_t                  messages;      /* started this minute */
    uint32_t                  connects;      /* opened this minute */
    time_t                    hour;          /* start of the current one */
    uint32_t                  hour_messages; /* started this hour */
    time_t                    slow_until;
    uint16_t                  conns[NGX_RELAY_SHAPE_COLUMNS];
} ngx_relay_shape_slot_t;


typedef struct {
    ngx_uint_t                nslots;
    ngx_relay_limit_slot_t   *slots;
    ngx_uint_t                nshapes;
    ngx_relay_shape_slot_t   *shapes;
    ngx_pid_t                 columns[NGX_RELAY_SHAPE_COLUMNS];
} ngx_relay_limit_table_t;


/* a counter a check touches: a rule's (copied) and the value it counts */

typedef struct {
    uint32_t                  id;
    ngx_uint_t                key;
    ngx_uint_t                scope;
    time_t                    window;
    ngx_uint_t                limit;         /* of what is counted */
    ngx_str_t                 match;
    ngx_relay_limit_slot_t   *slot;
    u_char                    value[256];
    size_t                    len;
} ngx_relay_limit_hit_t;


/*
 * KEYS: counters (hashes), in groups of ARGV[2] keys; ARGV[1]: the field
 * to count; ARGV[1 + 2i], ARGV[2 + 2i]: limit and expiry (unix time) of
 * KEYS[i].  The first group whose keys are all below their limits counts
 * one in each: {group}.  None: nothing counted, {0, i, count, ttl} of the
 * first key found at its limit.
 */

static ngx_str_t  ngx_relay_limits_script = ngx_string(
    "local f, g = ARGV[1], tonumber(ARGV[2])\n"
    "local block, used\n"
    "for s = 0, #KEYS - g, g do\n"
    "  local ok = true\n"
    "  for i = s + 1, s + g do\n"
    "    local n = tonumber(redis.call('HGET', KEYS[i], f) or '0')\n"
    "    if n >= tonumber(ARGV[1 + 2 * i]) then\n"
    "      if not block then block, used = i, n end\n"
    "      ok = false\n"
    "      break\n"
    "    end\n"
    "  end\n"
    "  if ok then\n"
    "    for i = s + 1, s + g do\n"
    "      redis.call('HINCRBY', KEYS[i], f, 1)\n"
    "      redis.call('EXPIREAT', KEYS[i], ARGV[2 + 2 * i])\n"
    "    end\n"
    "    return {s / g + 1}\n"
    "  end\n"
    "end\n"
    "return {0, block, used, redis.call('TTL', KEYS[block])}\n");


static const char  *ngx_relay_limit_keys[] = {
    "client_ip", "auth_user", "sender_domain", "tenant"
};


static ngx_int_t ngx_relay_limits_init_zone(ngx_shm_zone_t *zone,
    void *data);
static ngx_uint_t ngx_relay_limits_match(ngx_array_t *fleet,
    ngx_array_t *local, ngx_relay_limit_who_t *who, ngx_uint_t what,
    ngx_relay_limit_hit_t *hits);
static ngx_int_t ngx_relay_limits_take(ngx_relay_limit_check_t *lc,
    ngx_relay_limit_hit_t *hits, ngx_uint_t n, ngx_uint_t divisor);
static void ngx_relay_limits_give_back(ngx_relay_limit_check_t *lc);
static ngx_int_t ngx_relay_limits_send(ngx_relay_limit_check_t *lc);
static void ngx_relay_limits_answer(ngx_relay_redis_result_t *res,
    void *data);
static ngx_int_t ngx_relay_limits_fallback(ngx_relay_limit_check_t *lc,
    u_char *err);
static ngx_int_t ngx_relay_limit_match(ngx_relay_limit_t *l,
    ngx_relay_limit_who_t *who, ngx_relay_limit_hit_t *hit);
static ngx_uint_t ngx_relay_limit_overridden(ngx_relay_limit_t *l,
    ngx_array_t *fleet);
static uint64_t ngx_relay_limit_key(ngx_relay_limit_hit_t *hit);
static ngx_relay_limit_slot_t *ngx_relay_limit_slot(
    ngx_relay_limit_table_t *t, uint64_t key, time_t now);
static ngx_relay_limit_slot_t *ngx_relay_limit_find(
    ngx_relay_limit_table_t *t, uint64_t key);
static void ngx_relay_shape_answer(ngx_relay_redis_result_t *res,
    void *data);
static void ngx_relay_shape_fallback(ngx_relay_shape_check_t *sc,
    u_char *err);


ngx_int_t
ngx_relay_limit_init(ngx_relay_limit_t *l, ngx_uint_t key, ngx_str_t *match,
    ngx_uint_t scope)
{
    u_char    buf[300];
    size_t    n;

    l->key = key;
    l->match = *match;
    l->scope = scope;

    if (match->len == 0 || match->len > 255) {
        return NGX_ERROR;
    }

    if (key == NGX_RELAY_LIMIT_CLIENT_IP
        && !(match->len == 1 && match->data[0] == '*'))
    {
        if (ngx_ptocidr(match, &l->cidr) == NGX_ERROR) {
            return NGX_ERROR;
        }
    }

    /* the counter namespace: two rules never share a counter */

    n = ngx_sprintf(buf, "%ui %V%s", key, match,
                    scope == NGX_RELAY_LIMIT_FLEET ? " fleet" : "") - buf;
    l->id = ngx_crc32_long(buf, n);

    return NGX_OK;
}


ngx_int_t
ngx_relay_limits_add_zone(ngx_conf_t *cf, size_t size, ngx_shm_zone_t **zone,
    void *tag)
{
    ngx_str_t  name = ngx_string("relay_limits");

    *zone = ngx_shared_memory_add(cf, &name, size, tag);
    if (*zone == NULL) {
        return NGX_ERROR;
    }

    (*zone)->init = ngx_relay_limits_init_zone;

    return NGX_OK;
}


static ngx_int_t
ngx_relay_limits_init_zone(ngx_shm_zone_t *zone, void *data)
{
    ngx_slab_pool_t          *shpool;
    ngx_relay_limit_table_t  *t;

    if (data) {
        zone->data = data;
        return NGX_OK;
    }

    shpool = (ngx_slab_pool_t *) zone->shm.addr;

    if (zone->shm.exists) {
        zone->data = shpool->data;
        return NGX_OK;
    }

    t = ngx_slab_alloc(shpool, sizeof(ngx_relay_limit_table_t));
    if (t == NULL) {
        return NGX_ERROR;
    }

    ngx_memzero(t, sizeof(ngx_relay_limit_table_t));

    /* a quarter each: the slab allocator keeps its own pages */

    t->nslots = zone->shm.size / 4 / sizeof(ngx_relay_limit_slot_t);
    t->nshapes = zone->shm.size / 4 / sizeof(ngx_relay_shape_slot_t);

    t->slots = ngx_slab_calloc(shpool,
                               t->nslots * sizeof(ngx_relay_limit_slot_t));
    t->shapes = ngx_slab_calloc(shpool,
                                t->nshapes * sizeof(ngx_relay_shape_slot_t));
    if (t->slots == NULL || t->shapes == NULL) {
        return NGX_ERROR;
    }

    shpool->data = t;
    zone->data = t;

    return NGX_OK;
}


ngx_int_t
ngx_relay_limits_check(ngx_relay_limit_check_t *lc, ngx_shm_zone_t *zone,
    ngx_relay_limits_conf_t *conf, ngx_array_t *fleet, ngx_array_t *local)
{
    u_char                    *p, *last;
    ngx_int_t                  rc;
    ngx_uint_t                 i, n, nnode;
    ngx_relay_limit_hit_t      hits[NGX_RELAY_LIMIT_MAX_RULES];
    ngx_relay_limit_shared_t  *sh;

    lc->rc = NGX_OK;
    lc->why[0] = '\0';
    lc->zone = zone;
    lc->conf = conf;
    lc->ntaken = 0;
    lc->nshared = 0;

    if (zone == NULL) {
        return NGX_OK;
    }

    n = ngx_relay_limits_match(fleet, local, &lc->who, lc->what, hits);

    /* fleet rules are copied out: the policy may change while Redis runs */

    p = lc->buf;
    last = lc->buf + sizeof(lc->buf);
    nnode = 0;

    for (i = 0; i < n; i++) {
        if (hits[i].scope != NGX_RELAY_LIMIT_FLEET
            || lc->nshared == NGX_RELAY_LIMIT_MAX_SHARED
            || (size_t) (last - p) < hits[i].match.len + hits[i].len)
        {
            hits[nnode++] = hits[i];     /* the node's, or no room left */
            continue;
        }

        sh = &lc->shared[lc->nshared++];
        sh->id = hits[i].id;
        sh->key = hits[i].key;
        sh->window = hits[i].window;
        sh->limit = hits[i].limit;
        sh->match.data = p;
        sh->match.len = hits[i].match.len;
        p = ngx_cpymem(p, hits[i].match.data, hits[i].match.len);
        sh->value.data = p;
        sh->value.len = hits[i].len;
        p = ngx_cpymem(p, hits[i].value, hits[i].len);
    }

    rc = ngx_relay_limits_take(lc, hits, nnode, 1);

    if (rc != NGX_OK || lc->nshared == 0) {
        lc->rc = rc;
        return rc;
    }

    if (ngx_relay_limits_send(lc) == NGX_AGAIN) {
        return NGX_AGAIN;                /* ngx_relay_limits_answer() */
    }

    lc->rc = ngx_relay_limits_fallback(lc, (u_char *) "not connected");

    return lc->rc;
}


/* the rules that apply, and the value each counts */

static ngx_uint_t
ngx_relay_limits_match(ngx_array_t *fleet, ngx_array_t *local,
    ngx_relay_limit_who_t *who, ngx_uint_t what, ngx_relay_limit_hit_t *hits)
{
    ngx_uint_t          i, j, n, limit;
    ngx_array_t        *lists[2];
    ngx_relay_limit_t  *l;

    lists[0] = fleet;
    lists[1] = local;
    n = 0;

    for (i = 0; i < 2; i++) {
        if (lists[i] == NULL) {
            continue;
        }

        l = lists[i]->elts;

        for (j = 0; j < lists[i]->nelts && n < NGX_RELAY_LIMIT_MAX_RULES;
             j++)
        {
            limit = (what == NGX_RELAY_LIMIT_MESSAGES) ? l[j].messages
                                                       : l[j].recipients;

            if (limit == 0
                || (i == 1 && ngx_relay_limit_overridden(&l[j], fleet))
                || ngx_relay_limit_match(&l[j], who, &hits[n]) != NGX_OK)
            {
                continue;
            }

            hits[n].id = l[j].id;
            hits[n].key = l[j].key;
            hits[n].scope = l[j].scope;
            hits[n].window = l[j].window;
            hits[n].limit = limit;
            hits[n].match = l[j].match;
            n++;
        }
    }

    return n;
}


/*
 * Counts one in each hit's counter of the zone, all or none, against the
 * limits divided by divisor; what was counted goes to lc->taken.
 */

static ngx_int_t
ngx_relay_limits_take(ngx_relay_limit_check_t *lc,
    ngx_relay_limit_hit_t *hits, ngx_uint_t n, ngx_uint_t divisor)
{
    time_t                    now;
    ngx_int_t                 rc;
    ngx_uint_t                i, limit, used, what;
    ngx_slab_pool_t          *shpool;
    ngx_relay_limit_hit_t    *h;
    ngx_relay_limit_taken_t  *tk;
    ngx_relay_limit_table_t  *t;

    if (n == 0) {
        return NGX_OK;
    }

    shpool = (ngx_slab_pool_t *) lc->zone->shm.addr;
    t = lc->zone->data;
    now = ngx_time();
    what = lc->what;
    rc = NGX_OK;

    ngx_shmtx_lock(&shpool->mutex);

    for (i = 0; i < n; i++) {
        h = &hits[i];

        h->slot = ngx_relay_limit_slot(t, ngx_relay_limit_key(h), now);

        if (h->slot->expires <= now) {
            h->slot->expires = now - now % h->window + h->window;
            h->slot->messages = 0;
            h->slot->recipients = 0;
        }

        limit = ngx_max(h->limit / divisor, 1);
        used = (what == NGX_RELAY_LIMIT_MESSAGES) ? h->slot->messages
                                                  : h->slot->recipients;

        if (used >= limit) {
            ngx_snprintf(lc->why, sizeof(lc->why),
                         "%*s reached %ui %s per %T s "
                         "(inbound_limit %s %V%s), %T s to wait%Z",
                         h->len, h->value, limit,
                         what == NGX_RELAY_LIMIT_MESSAGES ? "messages"
                                                          : "recipients",
                         h->window, ngx_relay_limit_keys[h->key], &h->match,
                         h->scope == NGX_RELAY_LIMIT_FLEET
                         ? " scope=fleet, counted on this node" : "",
                         h->slot->expires - now);
            rc = NGX_DECLINED;
            break;
        }
    }

    for (i = 0; rc == NGX_OK && i < n; i++) {
        if (what == NGX_RELAY_LIMIT_MESSAGES) {
            hits[i].slot->messages++;

        } else {
            hits[i].slot->recipients++;
        }

        if (lc->ntaken < sizeof(lc->taken) / sizeof(lc->taken[0])) {
            tk = &lc->taken[lc->ntaken++];
            tk->key = hits[i].slot->key;
            tk->expires = hits[i].slot->expires;
        }
    }

    ngx_shmtx_unlock(&shpool->mutex);

    return rc;
}


/* a fleet rule refused: the node's counters taken for it go back */

static void
ngx_relay_limits_give_back(ngx_relay_limit_check_t *lc)
{
    time_t                    now;
    ngx_uint_t                i;
    ngx_slab_pool_t          *shpool;
    ngx_relay_limit_slot_t   *slot;
    ngx_relay_limit_table_t  *t;

    if (lc->ntaken == 0) {
        return;
    }

    shpool = (ngx_slab_pool_t *) lc->zone->shm.addr;
    t = lc->zone->data;
    now = ngx_time();

    ngx_shmtx_lock(&shpool->mutex);

    for (i = 0; i < lc->ntaken; i++) {
        slot = ngx_relay_limit_find(t, lc->taken[i].key);

        if (slot == NULL || slot->expires != lc->taken[i].expires
            || slot->expires <= now)
        {
            continue;                    /* another window, or given away */
        }

        if (lc->what == NGX_RELAY_LIMIT_MESSAGES) {
            slot->messages -= (slot->messages > 0);

        } else {
            slot->recipients -= (slot->recipients > 0);
        }
    }

    ngx_shmtx_unlock(&shpool->mutex);

    lc->ntaken = 0;
}


/* the fleet rules to Redis: one counter each, one group */

static ngx_int_t
ngx_relay_limits_send(ngx_relay_limit_check_t *lc)
{
    u_char                    *p;
    time_t                     now, start;
    ngx_str_t                 *a;
    ngx_uint_t                 i, n;
    ngx_relay_limit_shared_t  *sh;

    static u_char     buf[NGX_RELAY_LIMIT_MAX_SHARED * 700];
    static ngx_str_t  args[3 * NGX_RELAY_LIMIT_MAX_SHARED + 2];

    if (lc->conf == NULL || !ngx_relay_redis_ready()) {
        return NGX_DECLINED;
    }

    now = ngx_time();
    n = lc->nshared;
    p = buf;

    for (i = 0; i < n; i++) {
        sh = &lc->shared[i];
        start = now - now % sh->window;

        a = &args[i];
        a->data = p;
        p = ngx_sprintf(p, "%Vin:%s:%V:%V:%T:%T", &lc->conf->prefix,
                        ngx_relay_limit_keys[sh->key], &sh->match,
                        &sh->value, sh->window, start);
        a->len = p - a->data;

        a = &args[n + 2 + 2 * i];
        a->data = p;
        p = ngx_sprintf(p, "%ui", sh->limit);
        a->len = p - a->data;

        a = &args[n + 3 + 2 * i];
        a->data = p;
        p = ngx_sprintf(p, "%T", start + sh->window
                                 + NGX_RELAY_LIMIT_KEY_SLACK);
        a->len = p - a->data;
    }

    if (lc->what == NGX_RELAY_LIMIT_MESSAGES) {
        ngx_str_set(&args[n], "m");

    } else {
        ngx_str_set(&args[n], "r");
    }

    args[n + 1].data = p;
    args[n + 1].len = ngx_sprintf(p, "%ui", n) - p;

    return ngx_relay_redis_eval(args, 3 * n + 2, n, ngx_relay_limits_answer,
                                lc, lc->log);
}


static void
ngx_relay_limits_answer(ngx_relay_redis_result_t *res, void *data)
{
    ngx_relay_limit_check_t  *lc = data;

    ngx_uint_t                 i;
    ngx_relay_limit_shared_t  *sh;

    if (res->rc != NGX_OK || res->n == 0
        || (res->v[0] == 0 && (res->n < 4 || res->v[1] < 1
                               || res->v[1] > (int64_t) lc->nshared)))
    {
        if (res->rc == NGX_ERROR) {
            ngx_log_error(NGX_LOG_WARN, lc->log, 0,
                          "relay limit: redis: %s", res->err);
        }

        lc->rc = ngx_relay_limits_fallback(lc, res->err);
        lc->handler(lc);
        return;
    }

    if (res->v[0] > 0) {
        lc->rc = NGX_OK;
        lc->handler(lc);
        return;
    }

    i = (ngx_uint_t) res->v[1] - 1;
    sh = &lc->shared[i];

    ngx_snprintf(lc->why, sizeof(lc->why),
                 "%V reached %ui %s per %T s (inbound_limit %s %V "
                 "scope=fleet), %L s to wait%Z",
                 &sh->value, sh->limit,
                 lc->what == NGX_RELAY_LIMIT_MESSAGES ? "messages"
                                                      : "recipients",
                 sh->window, ngx_relay_limit_keys[sh->key], &sh->match,
                 ngx_max(res->v[3], 0));

    ngx_relay_limits_give_back(lc);

    lc->rc = NGX_DECLINED;
    lc->handler(lc);
}


/* Redis did not answer: relay_limit_redis_fallback decides */

static ngx_int_t
ngx_relay_limits_fallback(ngx_relay_limit_check_t *lc, u_char *err)
{
    ngx_int_t                  rc;
    ngx_uint_t                 i;
    ngx_relay_limit_hit_t      hits[NGX_RELAY_LIMIT_MAX_SHARED];
    ngx_relay_limit_shared_t  *sh;

    switch (lc->conf ? lc->conf->fallback
                     : NGX_RELAY_LIMIT_FALLBACK_LOCAL)
    {

    case NGX_RELAY_LIMIT_FALLBACK_ACCEPT:
        sh = &lc->shared[0];
        ngx_log_error(NGX_LOG_INFO, lc->log, 0,
                      "relay limit: fleet counters unavailable (%s), "
                      "%V not counted (inbound_limit %s %V scope=fleet, "
                      "fallback accept)", err, &sh->value,
                      ngx_relay_limit_keys[sh->key], &sh->match);
        return NGX_OK;

    case NGX_RELAY_LIMIT_FALLBACK_TEMPFAIL:
        ngx_relay_limits_give_back(lc);
        ngx_snprintf(lc->why, sizeof(lc->why),
                     "fleet counters unavailable (%s), fallback "
                     "tempfail%Z", err);
        return NGX_BUSY;

    default: /* NGX_RELAY_LIMIT_FALLBACK_LOCAL */
        break;
    }

    for (i = 0; i < lc->nshared; i++) {
        sh = &lc->shared[i];

        hits[i].id = sh->id;
        hits[i].key = sh->key;
        hits[i].scope = NGX_RELAY_LIMIT_FLEET;
        hits[i].window = sh->window;
        hits[i].limit = sh->limit;
        hits[i].match = sh->match;
        hits[i].len = ngx_min(sh->value.len, sizeof(hits[i].value));
        ngx_memcpy(hits[i].value, sh->value.data, hits[i].len);
    }

    rc = ngx_relay_limits_take(lc, hits, lc->nshared,
                               lc->conf ? lc->conf->nodes : 1);

    if (rc != NGX_OK) {
        ngx_relay_limits_give_back(lc);
    }

    return rc;
}


/* the fleet's rule for the same key and match replaces nginx.conf's */

static ngx_uint_t
ngx_relay_limit_overridden(ngx_relay_limit_t *l, ngx_array_t *fleet)
{
    ngx_uint_t          i;
    ngx_relay_limit_t  *f;

    if (fleet == NULL) {
        return 0;
    }

    f = fleet->elts;

    for (i = 0; i < fleet->nelts; i++) {
        if (f[i].key == l->key && f[i].match.len == l->match.len
            && ngx_strncasecmp(f[i].match.data, l->match.data, l->match.len)
               == 0)
        {
            return 1;
        }
    }

    return 0;
}


/* NGX_OK: the rule applies; hit->value is what it counts */

static ngx_int_t
ngx_relay_limit_match(ngx_relay_limit_t *l, ngx_relay_limit_who_t *who,
    ngx_relay_limit_hit_t *hit)
{
    u_char               *p, *at;
    ngx_str_t             s;
    ngx_uint_t            any, i;
    struct sockaddr_in   *sin;
#if (NGX_HAVE_INET6)
    u_char               *a;
    struct sockaddr_in6  *sin6;
#endif

    any = (l->match.len == 1 && l->match.data[0] == '*');
#if (NGX_HAVE_INET6)
    a = NULL;
#endif

    switch (l->key) {

    case NGX_RELAY_LIMIT_CLIENT_IP:

        if (who->sockaddr == NULL) {
            return NGX_DECLINED;
        }

        switch (who->sockaddr->sa_family) {

        case AF_INET:
            sin = (struct sockaddr_in *) who->sockaddr;

            if (!any && (l->cidr.family != AF_INET
                         || (sin->sin_addr.s_addr & l->cidr.u.in.mask)
                            != l->cidr.u.in.addr))
            {
                return NGX_DECLINED;
            }

            break;

#if (NGX_HAVE_INET6)
        case AF_INET6:
            sin6 = (struct sockaddr_in6 *) who->sockaddr;
            a = sin6->sin6_addr.s6_addr;

            if (!any) {
                if (l->cidr.family != AF_INET6) {
                    return NGX_DECLINED;
                }

                for (i = 0; i < 16; i++) {
                    if ((a[i] & l->cidr.u.in6.mask.s6_addr[i])
                        != l->cidr.u.in6.addr.s6_addr[i])
                    {
                        return NGX_DECLINED;
                    }
                }
            }

            break;
#endif

        default:
            return NGX_DECLINED;
        }

        /* counted per address, IPv6 per /64: the text keeps logs readable */

        hit->len = ngx_min(who->client.len, sizeof(hit->value));
        ngx_memcpy(hit->value, who->client.data, hit->len);

#if (NGX_HAVE_INET6)
        if (a) {
            hit->len = ngx_sprintf(hit->value, "%xd:%xd:%xd:%xd::/64",
                                   (a[0] << 8) | a[1], (a[2] << 8) | a[3],
                                   (a[4] << 8) | a[5], (a[6] << 8) | a[7])
                       - hit->value;
        }
#endif

        return NGX_OK;

    case NGX_RELAY_LIMIT_AUTH_USER:
        s = who->user;
        break;

    case NGX_RELAY_LIMIT_TENANT:
        s = who->tenant;
        break;

    default:

        /* the sender's domain; the null sender (bounces) is never limited */

        at = NULL;

        for (p = who->sender.data; p < who->sender.data + who->sender.len;
             p++)
        {
            if (*p == '@') {
                at = p;
            }
        }

        if (at == NULL) {
            return NGX_DECLINED;
        }

        s.data = at + 1;
        s.len = who->sender.data + who->sender.len - s.data;
        break;
    }

    if (s.len == 0 || s.len > sizeof(hit->value)) {
        return NGX_DECLINED;
    }

    if (!ngx_relay_pattern_match(&l->match, &s)) {
        return NGX_DECLINED;
    }

    ngx_strlow(hit->value, s.data, s.len);
    hit->len = s.len;

    return NGX_OK;
}


/*
 * "*" matches anything, ".example.com" example.com and its subdomains,
 * anything else itself; case-insensitive.
 */

ngx_uint_t
ngx_relay_pattern_match(ngx_str_t *pattern, ngx_str_t *s)
{
    size_t  n;

    n = pattern->len;

    if (n == 1 && pattern->data[0] == '*') {
        return 1;
    }

    if (n > 1 && pattern->data[0] == '.') {
        return (s->len == n - 1
                && ngx_strncasecmp(s->data, pattern->data + 1, n - 1) == 0)
               || (s->len > n
                   && ngx_strncasecmp(s->data + s->len - n, pattern->data, n)
                      == 0);
    }

    return s->len == n && ngx_strncasecmp(s->data, pattern->data, n) == 0;
}


/* the counter of a rule and a value */

static uint64_t
ngx_relay_limit_key(ngx_relay_limit_hit_t *hit)
{
    uint32_t  h1, h2;

    h1 = ngx_crc32_long(hit->value, hit->len) ^ hit->id;
    h2 = ngx_murmur_hash2(hit->value, hit->len) + hit->id;

    return ((uint64_t) h1 << 32 | h2) | 1;       /* 0: a slot never used */
}


static ngx_relay_limit_slot_t *
ngx_relay_limit_slot(ngx_relay_limit_table_t *t, uint64_t key, time_t now)
{
    ngx_uint_t                i, start;
    ngx_relay_limit_slot_t   *s, *free, *oldest;

    start = key % t->nslots;
    free = NULL;
    oldest = NULL;

    for (i = 0; i < NGX_RELAY_LIMIT_PROBES; i++) {
        s = &t->slots[(start + i) % t->nslots];

        if (s->key == key) {
            return s;
        }

        if (free == NULL && (s->key == 0 || s->expires <= now)) {
            free = s;
        }

        if (oldest == NULL || s->expires < oldest->expires) {
            oldest = s;
        }
    }

    s = free ? free : oldest;

    s->key = key;
    s->expires = 0;                     /* reset by the caller */

    return s;
}


static ngx_relay_limit_slot_t *
ngx_relay_limit_find(ngx_relay_limit_table_t *t, uint64_t key)
{
    ngx_uint_t               i;
    ngx_relay_limit_slot_t  *s;

    for (i = 0; i < NGX_RELAY_LIMIT_PROBES; i++) {
        s = &t->slots[(key % t->nslots + i) % t->nslots];

        if (s->key == key) {
            return s;
        }
    }

    return NULL;
}


/* ---------------------------------------------------------------- shaping */


static ngx_int_t  ngx_relay_shape_column = -1;


/* this process's column: a free one, or one whose process is gone */

ngx_int_t
ngx_relay_shape_init_worker(ngx_shm_zone_t *zone)
{
    ngx_uint_t                i, c;
    ngx_pid_t                 pid;
    ngx_slab_pool_t          *shpool;
    ngx_relay_limit_table_t  *t;

    if (zone == NULL) {
        return NGX_OK;
    }

    shpool = (ngx_slab_pool_t *) zone->shm.addr;
    t = zone->data;

    ngx_shmtx_lock(&shpool->mutex);

    for (c = 0; c < NGX_RELAY_SHAPE_COLUMNS; c++) {
        pid = t->columns[c];

        if (pid == 0 || (kill(pid, 0) == -1 && ngx_errno == NGX_ESRCH)) {
            break;
        }
    }

    if (c < NGX_RELAY_SHAPE_COLUMNS) {
        t->columns[c] = ngx_pid;

        for (i = 0; i < t->nshapes; i++) {
            t->shapes[i].conns[c] = 0;
        }

        ngx_relay_shape_column = c;
    }

    ngx_shmtx_unlock(&shpool->mutex);

    if (c == NGX_RELAY_SHAPE_COLUMNS) {
        ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                      "relay shaping: more than %d worker processes, "
                      "connections of this one are not counted",
                      NGX_RELAY_SHAPE_COLUMNS);
    }

    return NGX_OK;
}


/*
 * The destination's slot, found or taken; under the lock.  A full table
 * (no slot idle for two minutes among the probes) shapes nothing: mail is
 * never held up for want of memory.
 */

static ngx_relay_shape_slot_t *
ngx_relay_shape_slot(ngx_relay_limit_table_t *t, ngx_str_t *key, time_t now)
{
    uint64_t                 k;
    ngx_uint_t               i, c, open;
    ngx_relay_shape_slot_t  *s, *free;

    k = ((uint64_t) ngx_crc32_long(key->data, key->len) << 32
         | ngx_murmur_hash2(key->data, key->len)) | 1;

    free = NULL;

    for (i = 0; i < NGX_RELAY_LIMIT_PROBES; i++) {
        s = &t->shapes[(k + i) % t->nshapes];

        if (s->key == k) {
            s->used = now;
            return s;
        }

        if (free || (s->key != 0 && s->used + 120 > now)) {
            continue;
        }

        for (open = 0, c = 0; c < NGX_RELAY_SHAPE_COLUMNS; c++) {
            open += s->conns[c];
        }

        if (open == 0 && s->slow_until <= now) {
            free = s;
        }
    }

    if (free) {
        ngx_memzero(free, sizeof(ngx_relay_shape_slot_t));
        free->key = k;
        free->used = now;
    }

    return free;
}


static void
ngx_relay_shape_roll(ngx_relay_shape_slot_t *s, time_t now)
{
    if (s->minute + 60 <= now) {
        s->minute = now - now % 60;
        s->messages = 0;
        s->connects = 0;
    }

    if (s->hour + 3600 <= now) {
        s->hour = now - now % 3600;
        s->hour_messages = 0;
    }
}


/* the destination's slot, the minute rolled on, with the zone locked */

static ngx_relay_shape_slot_t *
ngx_relay_shape_lock(ngx_shm_zone_t *zone, ngx_str_t *key, time_t now)
{
    ngx_slab_pool_t         *shpool;
    ngx_relay_shape_slot_t  *s;

    shpool = (ngx_slab_pool_t *) zone->shm.addr;

    ngx_shmtx_lock(&shpool->mutex);

    s = ngx_relay_shape_slot(zone->data, key, now);

    if (s) {
        ngx_relay_shape_roll(s, now);
    }

    return s;
}


static void
ngx_relay_shape_unlock(ngx_shm_zone_t *zone)
{
    ngx_slab_pool_t  *shpool;

    shpool = (ngx_slab_pool_t *) zone->shm.addr;

    ngx_shmtx_unlock(&shpool->mutex);
}


ngx_int_t
ngx_relay_shape_connect(ngx_shm_zone_t *zone, ngx_str_t *key,
    ngx_relay_shape_limits_t *l, ngx_msec_t *wait)
{
    time_t                    now;
    ngx_int_t                 rc;
    ngx_uint_t                c, open, limit;
    ngx_relay_shape_slot_t   *s;

    if (zone == NULL || ngx_relay_shape_column < 0) {
        return NGX_OK;
    }

    now = ngx_time();
    rc = NGX_OK;

    s = ngx_relay_shape_lock(zone, key, now);

    if (s) {
        for (open = 0, c = 0; c < NGX_RELAY_SHAPE_COLUMNS; c++) {
            open += s->conns[c];
        }

        limit = (s->slow_until > now) ? 1 : l->connections;

        if (limit && open >= limit) {
            *wait = 200;                /* a connection may close soon */
            rc = NGX_BUSY;

        } else if (l->connections_per_minute
                   && s->connects >= l->connections_per_minute)
        {
            *wait = (s->minute + 60 - now) * 1000;
            rc = NGX_BUSY;

        } else {
            s->conns[ngx_relay_shape_column]++;
            s->connects++;
        }
    }

    ngx_relay_shape_unlock(zone);

    return rc;
}


void
ngx_relay_shape_disconnect(ngx_shm_zone_t *zone, ngx_str_t *key)
{
    ngx_relay_shape_slot_t  *s;

    if (zone == NULL || ngx_relay_shape_column < 0) {
        return;
    }

    s = ngx_relay_shape_lock(zone, key, ngx_time());

    if (s && s->conns[ngx_relay_shape_column]) {
        s->conns[ngx_relay_shape_column]--;
    }

    ngx_relay_shape_unlock(zone);
}


/* in slow mode, a tenth of the usual rate, and at least one a minute */

ngx_int_t
ngx_relay_shape_message(ngx_shm_zone_t *zone, ngx_str_t *key,
    ngx_relay_shape_limits_t *l, ngx_msec_t *wait, ngx_uint_t *slow)
{
    time_t                    now, until;
    ngx_int_t                 rc;
    ngx_uint_t                limit;
    ngx_relay_shape_slot_t   *s;

    *slow = 0;

    if (zone == NULL) {
        return NGX_OK;
    }

    now = ngx_time();
    rc = NGX_OK;

    s = ngx_relay_shape_lock(zone, key, now);

    if (s) {
        limit = l->messages_per_minute;

        if (s->slow_until > now) {
            *slow = 1;
            limit = ngx_max(limit / NGX_RELAY_SHAPE_SLOW_FACTOR, 1);
        }

        if (limit && s->messages >= limit) {

            /* the next minute, or the end of the slow mode if sooner */

            until = s->minute + 60;

            if (*slow && s->slow_until < until) {
                until = s->slow_until;
            }

            *wait = (until - now) * 1000;
            rc = NGX_BUSY;

        } else if (l->messages_per_hour
                   && s->hour_messages >= l->messages_per_hour)
        {
            *wait = (s->hour + 3600 - now) * 1000;
            rc = NGX_BUSY;

        } else {
            s->messages++;
            s->hour_messages++;
        }
    }

    ngx_relay_shape_unlock(zone);

    return rc;
}


void
ngx_relay_shape_slow_down(ngx_shm_zone_t *zone, ngx_str_t *key,
    time_t seconds)
{
    time_t                   now;
    ngx_relay_shape_slot_t  *s;

    if (zone == NULL) {
        return;
    }

    now = ngx_time();

    s = ngx_relay_shape_lock(zone, key, now);

    if (s) {
        s->slow_until = now + seconds;
    }

    ngx_relay_shape_unlock(zone);
}


/* ------------------------------------------------- fleet scope, outbound */


ngx_int_t
ngx_relay_limits_init_process(ngx_relay_limits_conf_t *conf, ngx_log_t *log)
{
    return ngx_relay_redis_init_process(&conf->redis,
                                        &ngx_relay_limits_script, log);
}


void
ngx_relay_limits_exit_process(void)
{
    ngx_relay_redis_exit_process();
}


ngx_int_t
ngx_relay_shape_fleet(ngx_relay_shape_check_t *sc)
{
    u_char                  *p;
    time_t                   now, minute, hour;
    ngx_str_t               *a, addr, pool;
    ngx_uint_t               i, j, k, g, ngroups, nkeys, m, h;
    ngx_slab_pool_t         *shpool;
    ngx_relay_shape_slot_t  *s;

    static u_char     buf[2 * NGX_RELAY_EGRESS_GROUPS * 800];
    static ngx_str_t  args[6 * NGX_RELAY_EGRESS_GROUPS + 2];

    sc->rc = NGX_OK;
    sc->wait = 0;
    sc->slow = 0;
    sc->egress_next = 0;

    now = ngx_time();

    /* slow mode is the node's: a tenth of the minute's rate, at least 1 */

    if (sc->zone) {
        shpool = (ngx_slab_pool_t *) sc->zone->shm.addr;

        ngx_shmtx_lock(&shpool->mutex);

        s = ngx_relay_shape_slot(sc->zone->data, &sc->key, now);
        sc->slow = (s && s->slow_until > now);

        ngx_shmtx_unlock(&shpool->mutex);
    }

    m = sc->limits.messages_per_minute;
    h = sc->limits.messages_per_hour;

    if (sc->slow) {
        m = ngx_max(m / NGX_RELAY_SHAPE_SLOW_FACTOR, 1);
    }

    g = (m != 0) + (h != 0);

    if (g == 0) {
        return NGX_OK;
    }

    ngroups = sc->negress ? ngx_min(sc->negress, NGX_RELAY_EGRESS_GROUPS)
                          : 1;
    nkeys = g * ngroups;

    minute = now - now % 60;
    hour = now - now % 3600;

    if (sc->pool.len) {
        pool = sc->pool;

    } else {
        ngx_str_set(&pool, "-");
    }

    p = buf;

    for (j = 0; j < ngroups; j++) {

        if (sc->negress) {
            addr = sc->egress[j].name;

        } else {
            ngx_str_set(&addr, "*");
        }

        for (k = 0; k < g; k++) {
            i = j * g + k;

            a = &args[i];
            a->data = p;
            p = ngx_sprintf(p, "%Vout:%V:%V:%V:%s:%T", &sc->conf->prefix,
                            &sc->domain, &pool, &addr,
                            (m && k == 0) ? "m" : "h",
                            (m && k == 0) ? minute : hour);
            a->len = p - a->data;

            a = &args[nkeys + 2 + 2 * i];
            a->data = p;
            p = ngx_sprintf(p, "%ui", (m && k == 0) ? m : h);
            a->len = p - a->data;

            a = &args[nkeys + 3 + 2 * i];
            a->data = p;
            p = ngx_sprintf(p, "%T", (m && k == 0)
                                     ? minute + 60 + NGX_RELAY_LIMIT_KEY_SLACK
                                     : hour + 3600
                                       + NGX_RELAY_LIMIT_KEY_SLACK);
            a->len = p - a->data;
        }
    }

    ngx_str_set(&args[nkeys], "n");
    args[nkeys + 1].data = p;
    args[nkeys + 1].len = ngx_sprintf(p, "%ui", g) - p;

    if (sc->conf->redis.addrs
        && ngx_relay_redis_eval(args, 3 * nkeys + 2, nkeys,
                                ngx_relay_shape_answer, sc, sc->log)
           == NGX_AGAIN)
    {
        return NGX_AGAIN;               /* ngx_relay_shape_answer() */
    }

    ngx_relay_shape_fallback(sc, (u_char *) "not connected");

    return sc->rc;
}


static void
ngx_relay_shape_answer(ngx_relay_redis_result_t *res, void *data)
{
    ngx_relay_shape_check_t  *sc = data;

    if (res->rc != NGX_OK || res->n == 0
        || (res->v[0] == 0 && res->n < 4))
    {
        if (res->rc == NGX_ERROR) {
            ngx_log_error(NGX_LOG_WARN, sc->log, 0,
                          "relay shaping: redis: %s", res->err);
        }

        ngx_relay_shape_fallback(sc, res->err);
        sc->handler(sc);
        return;
    }

    if (res->v[0] > 0) {
        sc->egress_next = (ngx_uint_t) res->v[0] - 1;
        sc->handler(sc);
        return;
    }

    /* every group at its limit: until the first key's window ends */

    sc->rc = NGX_BUSY;
    sc->wait = (ngx_msec_t) ngx_max(res->v[3] - NGX_RELAY_LIMIT_KEY_SLACK,
                                    1) * 1000;
    sc->handler(sc);
}


static void
ngx_relay_shape_fallback(ngx_relay_shape_check_t *sc, u_char *err)
{
    ngx_uint_t                nodes, slow;
    ngx_relay_shape_limits_t  l;

    switch (sc->conf->fallback) {

    case NGX_RELAY_LIMIT_FALLBACK_ACCEPT:
        ngx_log_error(NGX_LOG_INFO, sc->log, 0,
                      "relay shaping: fleet counters unavailable (%s), "
                      "%V not counted (fallback accept)", err, &sc->key);
        sc->rc = NGX_OK;
        return;

    case NGX_RELAY_LIMIT_FALLBACK_TEMPFAIL:
        sc->rc = NGX_BUSY;
        sc->wait = NGX_RELAY_LIMIT_TEMPFAIL;
        return;

    default: /* NGX_RELAY_LIMIT_FALLBACK_LOCAL */
        break;
    }

    /* the node's share of the rate, per pool */

    nodes = ngx_max(sc->conf->nodes, 1);

    l = sc->limits;
    l.connections = 0;
    l.connections_per_minute = 0;
    l.messages_per_minute = l.messages_per_minute
                            ? ngx_max(l.messages_per_minute / nodes, 1) : 0;
    l.messages_per_hour = l.messages_per_hour
                          ? ngx_max(l.messages_per_hour / nodes, 1) : 0;

    sc->rc = ngx_relay_shape_message(sc->zone, &sc->key, &l, &sc->wait,
                                     &slow);
    sc->slow = slow;
}
