
/*
 * Copyright (C) The relay authors
 */


/*
 * Inbound sending limits: messages and recipients per time window, per
 * client address, authenticated user or sender domain, counted in shared
 * memory so that every worker sees the same figures.
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
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_relay_limits.h>


#define NGX_RELAY_LIMIT_PROBES       8
#define NGX_RELAY_LIMIT_MAX_RULES    32


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


typedef struct {
    ngx_relay_limit_t        *rule;
    ngx_relay_limit_slot_t   *slot;
    u_char                    value[256];
    size_t                    len;
} ngx_relay_limit_hit_t;


static ngx_int_t ngx_relay_limits_init_zone(ngx_shm_zone_t *zone,
    void *data);
static ngx_int_t ngx_relay_limit_match(ngx_relay_limit_t *l,
    ngx_relay_limit_who_t *who, ngx_relay_limit_hit_t *hit);
static ngx_uint_t ngx_relay_limit_overridden(ngx_relay_limit_t *l,
    ngx_array_t *fleet);
static ngx_relay_limit_slot_t *ngx_relay_limit_slot(
    ngx_relay_limit_table_t *t, ngx_relay_limit_hit_t *hit, time_t now);


ngx_int_t
ngx_relay_limit_init(ngx_relay_limit_t *l, ngx_uint_t key, ngx_str_t *match)
{
    u_char    buf[300];
    size_t    n;

    l->key = key;
    l->match = *match;

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

    n = ngx_sprintf(buf, "%ui %V", key, match) - buf;
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
ngx_relay_limits_count(ngx_shm_zone_t *zone, ngx_array_t *fleet,
    ngx_array_t *local, ngx_relay_limit_who_t *who, ngx_uint_t what,
    u_char *why, size_t len)
{
    time_t                    now;
    ngx_int_t                 rc;
    ngx_uint_t                i, j, n, limit, used;
    ngx_array_t              *lists[2];
    ngx_slab_pool_t          *shpool;
    ngx_relay_limit_t        *l;
    ngx_relay_limit_hit_t     hits[NGX_RELAY_LIMIT_MAX_RULES];
    ngx_relay_limit_table_t  *t;

    if (zone == NULL) {
        return NGX_OK;
    }

    /* the rules that apply, and the value each counts */

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
            if ((what == NGX_RELAY_LIMIT_MESSAGES ? l[j].messages
                                                  : l[j].recipients) == 0
                || (i == 1 && ngx_relay_limit_overridden(&l[j], fleet))
                || ngx_relay_limit_match(&l[j], who, &hits[n]) != NGX_OK)
            {
                continue;
            }

            hits[n++].rule = &l[j];
        }
    }

    if (n == 0) {
        return NGX_OK;
    }

    shpool = (ngx_slab_pool_t *) zone->shm.addr;
    t = zone->data;
    now = ngx_time();
    rc = NGX_OK;

    ngx_shmtx_lock(&shpool->mutex);

    for (i = 0; i < n; i++) {
        l = hits[i].rule;

        hits[i].slot = ngx_relay_limit_slot(t, &hits[i], now);

        if (hits[i].slot->expires <= now) {
            hits[i].slot->expires = now - now % l->window + l->window;
            hits[i].slot->messages = 0;
            hits[i].slot->recipients = 0;
        }

        limit = (what == NGX_RELAY_LIMIT_MESSAGES) ? l->messages
                                                   : l->recipients;
        used = (what == NGX_RELAY_LIMIT_MESSAGES) ? hits[i].slot->messages
                                                  : hits[i].slot->recipients;

        if (used >= limit) {
            ngx_snprintf(why, len, "%*s reached %ui %s per %T s "
                         "(inbound_limit %s %V), %T s to wait%Z",
                         hits[i].len, hits[i].value, limit,
                         what == NGX_RELAY_LIMIT_MESSAGES ? "messages"
                                                          : "recipients",
                         l->window,
                         l->key == NGX_RELAY_LIMIT_CLIENT_IP ? "client_ip"
                         : l->key == NGX_RELAY_LIMIT_AUTH_USER ? "auth_user"
                         : "sender_domain",
                         &l->match, hits[i].slot->expires - now);
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
    }

    ngx_shmtx_unlock(&shpool->mutex);

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


static ngx_relay_limit_slot_t *
ngx_relay_limit_slot(ngx_relay_limit_table_t *t, ngx_relay_limit_hit_t *hit,
    time_t now)
{
    uint32_t                  h1, h2;
    uint64_t                  key;
    ngx_uint_t                i, start;
    ngx_relay_limit_slot_t   *s, *free, *oldest;

    h1 = ngx_crc32_long(hit->value, hit->len) ^ hit->rule->id;
    h2 = ngx_murmur_hash2(hit->value, hit->len) + hit->rule->id;
    key = ((uint64_t) h1 << 32 | h2) | 1;         /* 0: a slot never used */

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
