
/*
 * Copyright (C) The relay authors
 */


/*
 * Routing and retry policy lookups.  The static policy comes from
 * nginx.conf; with a control zone, the fleet policy from controld lives in
 * shared memory as a packed protobuf snapshot and overrides it per domain:
 * a lookup first checks that the snapshot has not moved (one atomic read),
 * rebuilds this worker's copy when it has, and asks the fleet policy before
 * nginx.conf.  Deliveries copy what they use at their start, so a swap
 * never pulls data from under one in flight.
 *
 * Route patterns: "example.com" matches that domain only, ".example.com"
 * its subdomains and itself, "*" everything; the most specific (longest)
 * match wins.  Hops: "[host]:port" is used as is, "host:port" means the MX
 * hosts of "host" (as Postfix's relayhost does).
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_relay_policy.h>

#include <relay_policy.h>


#define NGX_RELAY_POLICY_READ_TRIES  100


static void ngx_relay_policy_refresh(ngx_relay_policy_t *p);
static ngx_relay_fleet_t *ngx_relay_policy_build(ngx_relay_policy_t *p,
    u_char *data, size_t len, uint64_t version, ngx_log_t *log);
static ngx_int_t ngx_relay_policy_build_routes(ngx_pool_t *pool,
    ngx_array_t **routes, const char *pattern, char **hops, size_t nhops,
    ngx_uint_t literal);
static ngx_int_t ngx_relay_policy_strdup(ngx_pool_t *pool, ngx_str_t *dst,
    const char *src);
static ngx_relay_egress_pool_t *ngx_relay_policy_pool(ngx_array_t *pools,
    ngx_str_t *name);
static ngx_int_t ngx_relay_policy_build_egress(ngx_pool_t *pool,
    ngx_relay_fleet_t *fleet, Relay__Control__V1__Policy *pp);
static ngx_int_t ngx_relay_policy_build_dest(ngx_pool_t *pool,
    ngx_relay_fleet_t *fleet, Relay__Control__V1__Policy *pp);


static ngx_relay_counters_t  ngx_relay_policy_no_counters;


/*
 * The best match for domain in a list whose elements start with their
 * pattern (routes, retry policies): the array's element size is the stride.
 */

ngx_relay_route_t *
ngx_relay_policy_route(ngx_array_t *routes, ngx_str_t *domain)
{
    size_t       plen;
    u_char      *e;
    ngx_str_t   *pat, *best;
    ngx_uint_t   i;

    if (routes == NULL) {
        return NULL;
    }

    best = NULL;

    for (i = 0, e = routes->elts; i < routes->nelts; i++, e += routes->size) {
        pat = (ngx_str_t *) e;
        plen = pat->len;

        if (plen == 1 && pat->data[0] == '*') {
            if (best == NULL) {
                best = pat;
            }

            continue;
        }

        if (pat->data[0] == '.') {

            /* ".example.com": example.com itself or any subdomain */

            if (!((domain->len == plen - 1
                   && ngx_strncasecmp(domain->data, pat->data + 1, plen - 1)
                      == 0)
                  || (domain->len > plen
                      && ngx_strncasecmp(domain->data + domain->len - plen,
                                         pat->data, plen)
                         == 0)))
            {
                continue;
            }

        } else if (domain->len != plen
                   || ngx_strncasecmp(domain->data, pat->data, plen) != 0)
        {
            continue;
        }

        if (best == NULL || (best->len == 1 && best->data[0] == '*')
            || best->len < plen)
        {
            best = pat;
        }
    }

    return (ngx_relay_route_t *) best;
}


/*
 * "relay_route pattern hop ...;" and "relay_backup_mx domain hop ...;"
 * (hops_only == 0), or "relay_fallback_relay hop ...;" (hops_only == 1:
 * the pattern "*" is implied).
 */

char *
ngx_relay_policy_parse_route(ngx_conf_t *cf, ngx_array_t **routes,
    ngx_uint_t hops_only)
{
    ngx_str_t          *value;
    ngx_uint_t          i, first;
    ngx_relay_hop_t    *h;
    ngx_relay_route_t  *r;

    value = cf->args->elts;

    if (*routes == NULL) {
        *routes = ngx_array_create(cf->pool, 4, sizeof(ngx_relay_route_t));
        if (*routes == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    r = ngx_array_push(*routes);
    if (r == NULL) {
        return NGX_CONF_ERROR;
    }

    if (hops_only) {
        ngx_str_set(&r->pattern, "*");
        first = 1;

    } else {
        r->pattern = value[1];
        first = 2;

        if (r->pattern.len == 0 || r->pattern.len > 255) {
            return "has an invalid domain pattern";
        }

        ngx_strlow(r->pattern.data, r->pattern.data, r->pattern.len);
    }

    if (ngx_array_init(&r->hops, cf->pool, cf->args->nelts - first,
                       sizeof(ngx_relay_hop_t))
        != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    for (i = first; i < cf->args->nelts; i++) {
        h = ngx_array_push(&r->hops);
        if (h == NULL) {
            return NGX_CONF_ERROR;
        }

        if (ngx_relay_policy_parse_hop(&value[i], h) != NGX_OK) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid next hop \"%V\"", &value[i]);
            return NGX_CONF_ERROR;
        }
    }

    return NGX_CONF_OK;
}


ngx_int_t
ngx_relay_policy_parse_hop(ngx_str_t *s, ngx_relay_hop_t *h)
{
    u_char     *p, *last, *colon;
    ngx_int_t   port;

    p = s->data;
    last = p + s->len;

    ngx_memzero(h, sizeof(ngx_relay_hop_t));
    h->mx = 1;

    if (p < last && *p == '[') {
        colon = ngx_strlchr(p, last, ']');
        if (colon == NULL || colon == p + 1) {
            return NGX_ERROR;
        }

        h->host.data = p + 1;
        h->host.len = colon - p - 1;
        h->mx = 0;
        p = colon + 1;

        if (p < last && *p != ':') {
            return NGX_ERROR;
        }

    } else {
        colon = ngx_strlchr(p, last, ':');
        h->host.data = p;
        h->host.len = (colon ? colon : last) - p;
        p = colon ? colon : last;
    }

    if (h->host.len == 0) {
        return NGX_ERROR;
    }

    if (p < last) {
        port = ngx_atoi(p + 1, last - p - 1);
        if (port < 1 || port > 65535) {
            return NGX_ERROR;
        }

        h->port = (in_port_t) port;
    }

    return NGX_OK;
}


/* Postfix's schedule: the minimum, doubling per attempt, up to the maximum */

time_t
ngx_relay_policy_backoff(ngx_relay_retry_t *retry, ngx_uint_t attempts)
{
    time_t      t;
    ngx_uint_t  i;

    t = retry->backoff_min;

    for (i = 1; i < attempts && t < retry->backoff_max; i++) {
        t *= 2;
    }

    return ngx_min(t, retry->backoff_max);
}


ngx_relay_route_t *
ngx_relay_policy_next_hops(ngx_relay_policy_t *p, ngx_str_t *domain)
{
    ngx_relay_route_t  *r;

    ngx_relay_policy_refresh(p);

    if (p->fleet) {
        r = ngx_relay_policy_route(p->fleet->routes, domain);
        if (r) {
            return r;
        }
    }

    return ngx_relay_policy_route(p->routes, domain);
}


ngx_relay_route_t *
ngx_relay_policy_backup(ngx_relay_policy_t *p, ngx_str_t *domain)
{
    ngx_relay_route_t  *r;

    ngx_relay_policy_refresh(p);

    if (p->fleet) {
        r = ngx_relay_policy_route(p->fleet->backup_mx, domain);
        if (r) {
            return r;
        }
    }

    return ngx_relay_policy_route(p->backup_mx, domain);
}


ngx_relay_route_t *
ngx_relay_policy_fallback(ngx_relay_policy_t *p)
{
    ngx_relay_policy_refresh(p);

    if (p->fleet && p->fleet->fallback) {
        return p->fleet->fallback->elts;
    }

    return p->fallback ? p->fallback->elts : NULL;
}


void
ngx_relay_policy_retry(ngx_relay_policy_t *p, ngx_str_t *domain,
    ngx_relay_retry_t *retry)
{
    ngx_relay_route_t  *r;

    ngx_relay_policy_refresh(p);

    if (p->fleet && p->fleet->retry) {
        r = ngx_relay_policy_route(p->fleet->retry, domain);
        if (r) {
            *retry = *(ngx_relay_retry_t *) r;
            return;
        }
    }

    ngx_str_set(&retry->pattern, "*");
    retry->backoff_min = p->backoff_min;
    retry->backoff_max = p->backoff_max;
    retry->lifetime = p->lifetime;
    retry->delay_warning = p->delay_warning;
}


/* inbound limits: the fleet's rules, then nginx.conf's not overridden */

ngx_int_t
ngx_relay_policy_limit(ngx_relay_policy_t *p, ngx_relay_limit_who_t *who,
    ngx_uint_t what, u_char *why, size_t len)
{
    ngx_relay_policy_refresh(p);

    return ngx_relay_limits_count(p->limits_zone,
                                  p->fleet ? p->fleet->limits : NULL,
                                  p->limits, who, what, why, len);
}


/*
 * The egress pool of a message: the first rule that matches, the fleet's
 * before nginx.conf's; its pool by name, the fleet's before nginx.conf's.
 * NULL: no pool, the system picks the source address.
 */

ngx_relay_egress_pool_t *
ngx_relay_policy_egress(ngx_relay_policy_t *p, ngx_str_t *sender,
    ngx_str_t *auth, ngx_str_t *tenant)
{
    u_char                   *c;
    ngx_str_t                 domain, *value;
    ngx_uint_t                i, j, k;
    ngx_array_t              *rules[2], *pools[2];
    ngx_relay_egress_rule_t  *r;
    ngx_relay_egress_pool_t  *pool;

    ngx_relay_policy_refresh(p);

    ngx_str_null(&domain);

    for (c = sender->data + sender->len; c > sender->data; c--) {
        if (c[-1] == '@') {
            domain.data = c;
            domain.len = sender->data + sender->len - c;
            break;
        }
    }

    rules[0] = p->fleet ? p->fleet->rules : NULL;
    rules[1] = p->rules;
    pools[0] = p->fleet ? p->fleet->pools : NULL;
    pools[1] = p->pools;

    for (i = 0; i < 2; i++) {
        if (rules[i] == NULL) {
            continue;
        }

        r = rules[i]->elts;

        for (j = 0; j < rules[i]->nelts; j++) {
            value = (r[j].key == NGX_RELAY_EGRESS_SENDER_DOMAIN) ? &domain
                    : (r[j].key == NGX_RELAY_EGRESS_AUTH_USER) ? auth
                    : tenant;

            if (value->len == 0 || !ngx_relay_pattern_match(&r[j].match, value))
            {
                continue;
            }

            for (k = 0; k < 2; k++) {
                pool = ngx_relay_policy_pool(pools[k], &r[j].pool);
                if (pool) {
                    return pool;
                }
            }
        }
    }

    return NULL;
}


static ngx_relay_egress_pool_t *
ngx_relay_policy_pool(ngx_array_t *pools, ngx_str_t *name)
{
    ngx_uint_t                i;
    ngx_relay_egress_pool_t  *pool;

    if (pools == NULL) {
        return NULL;
    }

    pool = pools->elts;

    for (i = 0; i < pools->nelts; i++) {
        if (pool[i].name.len == name->len
            && ngx_strncmp(pool[i].name.data, name->data, name->len) == 0)
        {
            return &pool[i];
        }
    }

    return NULL;
}


/*
 * A weighted random order of the pool's addresses: the first is the
 * choice, the rest are tried in turn when an address cannot be bound.
 */

ngx_uint_t
ngx_relay_egress_order(ngx_relay_egress_pool_t *pool, ngx_uint_t *order)
{
    ngx_uint_t                i, k, n, total, r;
    ngx_uint_t                w[NGX_RELAY_EGRESS_MAX];
    ngx_relay_egress_addr_t  *a;

    a = pool->addrs.elts;
    n = ngx_min(pool->addrs.nelts, NGX_RELAY_EGRESS_MAX);

    for (i = 0; i < n; i++) {
        w[i] = a[i].weight ? a[i].weight : 1;
    }

    for (k = 0; k < n; k++) {
        total = 0;

        for (i = 0; i < n; i++) {
            total += w[i];
        }

        r = ngx_random() % total;

        for (i = 0; i < n; i++) {
            if (w[i] == 0) {
                continue;
            }

            if (r < w[i]) {
                break;
            }

            r -= w[i];
        }

        order[k] = i;
        w[i] = 0;
    }

    return n;
}


ngx_relay_dest_limit_t *
ngx_relay_policy_dest_limit(ngx_relay_policy_t *p, ngx_str_t *domain)
{
    ngx_relay_route_t  *r;

    ngx_relay_policy_refresh(p);

    if (p->fleet) {
        r = ngx_relay_policy_route(p->fleet->dest_limits, domain);
        if (r) {
            return (ngx_relay_dest_limit_t *) r;
        }
    }

    return (ngx_relay_dest_limit_t *) ngx_relay_policy_route(p->dest_limits,
                                                             domain);
}


/* only the fleet's: nginx.conf's relay_tls_policy is the delivery's own */

ngx_relay_tls_rule_t *
ngx_relay_policy_tls(ngx_relay_policy_t *p, ngx_str_t *domain)
{
    ngx_relay_policy_refresh(p);

    if (p->fleet == NULL) {
        return NULL;
    }

    return (ngx_relay_tls_rule_t *) ngx_relay_policy_route(p->fleet->tls,
                                                           domain);
}


ngx_int_t
ngx_relay_policy_add_pool(ngx_pool_t *pool, ngx_array_t **pools,
    ngx_str_t *name, ngx_str_t *ehlo, ngx_str_t *addrs, ngx_uint_t *weights,
    ngx_uint_t n)
{
    ngx_uint_t                i;
    ngx_relay_egress_addr_t  *a;
    ngx_relay_egress_pool_t  *ep;

    if (n == 0 || n > NGX_RELAY_EGRESS_MAX) {
        return NGX_ERROR;
    }

    if (*pools == NULL) {
        *pools = ngx_array_create(pool, 2, sizeof(ngx_relay_egress_pool_t));
        if (*pools == NULL) {
            return NGX_ERROR;
        }
    }

    ep = ngx_array_push(*pools);
    if (ep == NULL
        || ngx_array_init(&ep->addrs, pool, n,
                          sizeof(ngx_relay_egress_addr_t))
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    ep->name = *name;
    ep->ehlo = *ehlo;

    for (i = 0; i < n; i++) {
        a = ngx_array_push(&ep->addrs);
        if (a == NULL
            || ngx_parse_addr(pool, &a->addr, addrs[i].data, addrs[i].len)
               != NGX_OK)
        {
            return NGX_ERROR;
        }

        a->addr.name = addrs[i];
        a->weight = weights[i] ? weights[i] : 1;
    }

    return NGX_OK;
}


uint64_t
ngx_relay_policy_version(ngx_relay_policy_t *p)
{
    ngx_relay_policy_refresh(p);

    return p->fleet ? p->fleet->version : 0;
}


ngx_relay_policy_shm_t *
ngx_relay_policy_shm(ngx_relay_policy_t *p)
{
    return p->zone ? ((ngx_slab_pool_t *) p->zone->shm.addr)->data : NULL;
}


ngx_relay_counters_t *
ngx_relay_policy_counters(ngx_relay_policy_t *p)
{
    ngx_uint_t               w;
    ngx_relay_policy_shm_t  *shm;

    shm = ngx_relay_policy_shm(p);
    if (shm == NULL) {
        return &ngx_relay_policy_no_counters;
    }

    w = (ngx_process == NGX_PROCESS_WORKER) ? (ngx_uint_t) ngx_worker : 0;

    return &shm->counters[w % NGX_RELAY_MAX_WORKERS];
}


/* the writer side of the sequence lock: one process at a time writes */

void
ngx_relay_policy_publish(ngx_relay_policy_shm_t *shm, uint64_t version,
    u_char *data, size_t len)
{
    ngx_atomic_uint_t  seq;

    seq = shm->seq | 1;                 /* odd: a dead writer's too */
    shm->seq = seq;
    ngx_memory_barrier();

    ngx_memcpy(shm->data, data, len);
    shm->len = len;
    shm->version = version;

    ngx_memory_barrier();
    shm->seq = seq + 1;
}


/*
 * The reader side: copy the snapshot out while the sequence stays even and
 * unchanged, then build this worker's copy from it.  A bad snapshot (it
 * was validated before it got here, so only memory trouble) keeps the old.
 */

static void
ngx_relay_policy_refresh(ngx_relay_policy_t *p)
{
    size_t                   len;
    uint64_t                 version;
    ngx_uint_t               tries;
    ngx_atomic_uint_t        seq;
    ngx_relay_fleet_t       *fleet;
    ngx_relay_policy_shm_t  *shm;

    shm = ngx_relay_policy_shm(p);

    if (shm == NULL || shm->seq == p->seen_seq) {
        return;
    }

    if (p->copy == NULL) {
        p->copy = ngx_alloc(shm->size, ngx_cycle->log);
        if (p->copy == NULL) {
            return;
        }
    }

    for (tries = 0; tries < NGX_RELAY_POLICY_READ_TRIES; tries++) {
        seq = shm->seq;

        if (seq & 1) {
            ngx_cpu_pause();
            continue;
        }

        ngx_memory_barrier();

        len = ngx_min(shm->len, shm->size);
        version = shm->version;
        ngx_memcpy(p->copy, shm->data, len);

        ngx_memory_barrier();

        if (shm->seq == seq) {
            break;
        }
    }

    if (tries == NGX_RELAY_POLICY_READ_TRIES) {
        return;                         /* try again at the next lookup */
    }

    p->seen_seq = seq;

    if (version == 0 || (p->fleet && p->fleet->version == version)) {
        return;
    }

    fleet = ngx_relay_policy_build(p, p->copy, len, version, ngx_cycle->log);
    if (fleet == NULL) {
        return;
    }

    if (p->fleet) {
        ngx_destroy_pool(p->fleet->pool);
    }

    p->fleet = fleet;

    ngx_log_error(NGX_LOG_NOTICE, ngx_cycle->log, 0,
                  "relay policy version %uL in use", version);
}


static ngx_relay_fleet_t *
ngx_relay_policy_build(ngx_relay_policy_t *p, u_char *data, size_t len,
    uint64_t version, ngx_log_t *log)
{
    size_t                             i;
    ngx_str_t                          match;
    ngx_pool_t                        *pool;
    ngx_relay_limit_t                 *lim;
    ngx_relay_retry_t                 *rt;
    Relay__Control__V1__InboundLimit  *il;
    ngx_relay_fleet_t                 *fleet;
    Relay__Control__V1__Policy        *pp;
    Relay__Control__V1__RetryPolicy   *rp;

    pp = relay__control__v1__policy__unpack(NULL, len, data);
    if (pp == NULL) {
        ngx_log_error(NGX_LOG_ALERT, log, 0,
                      "relay policy version %uL: cannot unpack", version);
        return NULL;
    }

    pool = ngx_create_pool(4096, log);
    if (pool == NULL) {
        goto failed;
    }

    fleet = ngx_pcalloc(pool, sizeof(ngx_relay_fleet_t));
    if (fleet == NULL) {
        goto failed;
    }

    fleet->pool = pool;
    fleet->version = version;

    for (i = 0; i < pp->n_routes; i++) {
        if (ngx_relay_policy_build_routes(pool, &fleet->routes,
                                          pp->routes[i]->pattern,
                                          pp->routes[i]->next_hops,
                                          pp->routes[i]->n_next_hops, 0)
            != NGX_OK)
        {
            goto failed;
        }
    }

    for (i = 0; i < pp->n_backup_mx; i++) {
        if (ngx_relay_policy_build_routes(pool, &fleet->backup_mx,
                                          pp->backup_mx[i]->pattern,
                                          pp->backup_mx[i]->hosts,
                                          pp->backup_mx[i]->n_hosts, 1)
            != NGX_OK)
        {
            goto failed;
        }
    }

    if (pp->n_fallback_relay
        && ngx_relay_policy_build_routes(pool, &fleet->fallback, "*",
                                         pp->fallback_relay,
                                         pp->n_fallback_relay, 0)
           != NGX_OK)
    {
        goto failed;
    }

    if (pp->n_retry) {
        fleet->retry = ngx_array_create(pool, pp->n_retry,
                                        sizeof(ngx_relay_retry_t));
        if (fleet->retry == NULL) {
            goto failed;
        }
    }

    for (i = 0; i < pp->n_retry; i++) {
        rp = pp->retry[i];

        rt = ngx_array_push(fleet->retry);
        if (rt == NULL
            || ngx_relay_policy_strdup(pool, &rt->pattern, rp->pattern)
               != NGX_OK)
        {
            goto failed;
        }

        rt->backoff_min = rp->backoff_min_s ? rp->backoff_min_s
                                            : p->backoff_min;
        rt->backoff_max = rp->backoff_max_s ? rp->backoff_max_s
                                            : p->backoff_max;
        rt->lifetime = rp->lifetime_s ? rp->lifetime_s : p->lifetime;
        rt->delay_warning = rp->delay_warning_s;
    }

    if (pp->n_inbound_limits) {
        fleet->limits = ngx_array_create(pool, pp->n_inbound_limits,
                                         sizeof(ngx_relay_limit_t));
        if (fleet->limits == NULL) {
            goto failed;
        }
    }

    for (i = 0; i < pp->n_inbound_limits; i++) {
        il = pp->inbound_limits[i];

        lim = ngx_array_push(fleet->limits);
        if (lim == NULL
            || ngx_relay_policy_strdup(pool, &match, il->match) != NGX_OK
            || ngx_relay_limit_init(lim, il->key, &match) != NGX_OK)
        {
            goto failed;
        }

        lim->window = il->window_s ? il->window_s : 60;
        lim->messages = il->messages;
        lim->recipients = il->recipients;
    }

    if (ngx_relay_policy_build_egress(pool, fleet, pp) != NGX_OK
        || ngx_relay_policy_build_dest(pool, fleet, pp) != NGX_OK)
    {
        goto failed;
    }

    relay__control__v1__policy__free_unpacked(pp, NULL);

    return fleet;

failed:

    ngx_log_error(NGX_LOG_ALERT, log, 0,
                  "relay policy version %uL: cannot build", version);

    relay__control__v1__policy__free_unpacked(pp, NULL);

    if (pool) {
        ngx_destroy_pool(pool);
    }

    return NULL;
}


static ngx_int_t
ngx_relay_policy_build_egress(ngx_pool_t *pool, ngx_relay_fleet_t *fleet,
    Relay__Control__V1__Policy *pp)
{
    size_t                             i, j;
    ngx_str_t                          name, ehlo;
    ngx_str_t                          addrs[NGX_RELAY_EGRESS_MAX];
    ngx_uint_t                         weights[NGX_RELAY_EGRESS_MAX];
    ngx_relay_egress_rule_t           *r;
    Relay__Control__V1__EgressPool    *ep;
    Relay__Control__V1__EgressRule    *er;

    for (i = 0; i < pp->n_egress_pools; i++) {
        ep = pp->egress_pools[i];

        if (ep->n_addresses > NGX_RELAY_EGRESS_MAX
            || ngx_relay_policy_strdup(pool, &name, ep->name) != NGX_OK
            || ngx_relay_policy_strdup(pool, &ehlo, ep->ehlo_name) != NGX_OK)
        {
            return NGX_ERROR;
        }

        for (j = 0; j < ep->n_addresses; j++) {
            if (ngx_relay_policy_strdup(pool, &addrs[j],
                                        ep->addresses[j]->address)
                != NGX_OK)
            {
                return NGX_ERROR;
            }

            weights[j] = ep->addresses[j]->weight;
        }

        if (ngx_relay_policy_add_pool(pool, &fleet->pools, &name, &ehlo,
                                      addrs, weights, ep->n_addresses)
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    if (pp->n_egress_rules) {
        fleet->rules = ngx_array_create(pool, pp->n_egress_rules,
                                        sizeof(ngx_relay_egress_rule_t));
        if (fleet->rules == NULL) {
            return NGX_ERROR;
        }
    }

    for (i = 0; i < pp->n_egress_rules; i++) {
        er = pp->egress_rules[i];

        r = ngx_array_push(fleet->rules);
        if (r == NULL
            || ngx_relay_policy_strdup(pool, &r->match, er->match) != NGX_OK
            || ngx_relay_policy_strdup(pool, &r->pool, er->pool) != NGX_OK)
        {
            return NGX_ERROR;
        }

        r->key = er->key;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_relay_policy_build_dest(ngx_pool_t *pool, ngx_relay_fleet_t *fleet,
    Relay__Control__V1__Policy *pp)
{
    size_t                                i;
    ngx_relay_tls_rule_t                 *tr;
    ngx_relay_dest_limit_t               *dl;
    Relay__Control__V1__DestinationLimit  *d;

    if (pp->n_tls) {
        fleet->tls = ngx_array_create(pool, pp->n_tls,
                                      sizeof(ngx_relay_tls_rule_t));
        if (fleet->tls == NULL) {
            return NGX_ERROR;
        }
    }

    for (i = 0; i < pp->n_tls; i++) {
        tr = ngx_array_push(fleet->tls);
        if (tr == NULL
            || ngx_relay_policy_strdup(pool, &tr->pattern,
                                       pp->tls[i]->pattern)
               != NGX_OK)
        {
            return NGX_ERROR;
        }

        ngx_strlow(tr->pattern.data, tr->pattern.data, tr->pattern.len);
        tr->required = pp->tls[i]->required;
        tr->verify = pp->tls[i]->verify;
    }

    if (pp->n_destination_limits == 0) {
        return NGX_OK;
    }

    fleet->dest_limits = ngx_array_create(pool, pp->n_destination_limits,
                                          sizeof(ngx_relay_dest_limit_t));
    if (fleet->dest_limits == NULL) {
        return NGX_ERROR;
    }

    for (i = 0; i < pp->n_destination_limits; i++) {
        d = pp->destination_limits[i];

        dl = ngx_array_push(fleet->dest_limits);
        if (dl == NULL
            || ngx_relay_policy_strdup(pool, &dl->pattern, d->pattern)
               != NGX_OK
            || ngx_relay_policy_strdup(pool, &dl->backoff_reply,
                                       d->backoff_reply_pattern)
               != NGX_OK)
        {
            return NGX_ERROR;
        }

        ngx_strlow(dl->pattern.data, dl->pattern.data, dl->pattern.len);

        dl->connections = d->max_connections;
        dl->messages_per_connection = d->messages_per_connection;
        dl->messages_per_minute = d->messages_per_minute;
        dl->messages_per_hour = d->messages_per_hour;
        dl->connections_per_minute = d->connections_per_minute;
        dl->backoff = d->backoff_s;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_relay_policy_build_routes(ngx_pool_t *pool, ngx_array_t **routes,
    const char *pattern, char **hops, size_t nhops, ngx_uint_t literal)
{
    size_t              i;
    ngx_str_t           s;
    ngx_relay_hop_t    *h;
    ngx_relay_route_t  *r;

    if (*routes == NULL) {
        *routes = ngx_array_create(pool, 4, sizeof(ngx_relay_route_t));
        if (*routes == NULL) {
            return NGX_ERROR;
        }
    }

    r = ngx_array_push(*routes);
    if (r == NULL
        || ngx_relay_policy_strdup(pool, &r->pattern, pattern) != NGX_OK
        || ngx_array_init(&r->hops, pool, nhops ? nhops : 1,
                          sizeof(ngx_relay_hop_t))
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    ngx_strlow(r->pattern.data, r->pattern.data, r->pattern.len);

    for (i = 0; i < nhops; i++) {
        h = ngx_array_push(&r->hops);
        if (h == NULL || ngx_relay_policy_strdup(pool, &s, hops[i]) != NGX_OK
            || ngx_relay_policy_parse_hop(&s, h) != NGX_OK)
        {
            return NGX_ERROR;
        }

        if (literal) {
            h->mx = 0;                  /* a backup MX is a host */
        }
    }

    return NGX_OK;
}


static ngx_int_t
ngx_relay_policy_strdup(ngx_pool_t *pool, ngx_str_t *dst, const char *src)
{
    dst->len = ngx_strlen(src);
    dst->data = ngx_pnalloc(pool, dst->len + 1);
    if (dst->data == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(dst->data, src, dst->len + 1);

    return NGX_OK;
}


/*
 * At configuration time, in the master: the last-known-good snapshot from
 * disk, so a node started while controld is away routes by it.  It is
 * validated again: a file edited by hand must not take the fleet down.
 */

ngx_int_t
ngx_relay_policy_load_file(ngx_relay_policy_shm_t *shm, ngx_str_t *path,
    ngx_log_t *log)
{
    ssize_t                      n;
    ngx_fd_t                     fd;
    ngx_file_info_t              fi;
    relay_policy_t              *pp;
    u_char                      *buf;
    char                         err[256];

    fd = ngx_open_file(path->data, NGX_FILE_RDONLY, NGX_FILE_OPEN, 0);
    if (fd == NGX_INVALID_FILE) {
        if (ngx_errno != NGX_ENOENT) {
            ngx_log_error(NGX_LOG_WARN, log, ngx_errno,
                          ngx_open_file_n " \"%V\" failed", path);
        }

        return NGX_DECLINED;
    }

    buf = NULL;

    if (ngx_fd_info(fd, &fi) == NGX_FILE_ERROR
        || (size_t) ngx_file_size(&fi) > shm->size)
    {
        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "relay policy \"%V\" is unreadable or larger than "
                      "the control zone", path);
        goto failed;
    }

    buf = ngx_alloc(ngx_file_size(&fi) + 1, log);
    if (buf == NULL) {
        goto failed;
    }

    n = ngx_read_fd(fd, buf, ngx_file_size(&fi));
    if (n != (ssize_t) ngx_file_size(&fi)) {
        ngx_log_error(NGX_LOG_WARN, log, ngx_errno,
                      "relay policy \"%V\": short read", path);
        goto failed;
    }

    pp = relay__control__v1__policy__unpack(NULL, n, buf);
    if (pp == NULL) {
        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "relay policy \"%V\" is not a policy snapshot", path);
        goto failed;
    }

    if (relay_policy_validate(pp, err, sizeof(err)) != 0 || pp->version == 0) {
        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "relay policy \"%V\" is invalid: %s", path,
                      pp->version ? err : "no version");
        relay__control__v1__policy__free_unpacked(pp, NULL);
        goto failed;
    }

    ngx_relay_policy_publish(shm, pp->version, buf, n);

    ngx_log_error(NGX_LOG_NOTICE, log, 0,
                  "relay policy version %uL loaded from \"%V\"",
                  (uint64_t) pp->version, path);

    relay__control__v1__policy__free_unpacked(pp, NULL);
    ngx_free(buf);
    (void) ngx_close_file(fd);

    return NGX_OK;

failed:

    if (buf) {
        ngx_free(buf);
    }

    (void) ngx_close_file(fd);

    return NGX_ERROR;
}
