
/*
 * Copyright (C) The relay authors
 */


/*
 * The policy: nginx.conf's and the fleet's, one grammar, one shape.
 *
 * nginx.conf's directives that mirror policy statements (relay_route is
 * "route", relay_limit "inbound_limit", ...) hand their arguments to the
 * policy library as the statement's words, which parses them into one
 * Policy message and checks them as controld checks the fleet's: the same
 * words are accepted or refused alike, with the same message.  At the end
 * of the stream block that message is built, by the builder that builds
 * the fleet's, into the shape lookups read (ngx_relay_rules_t).
 *
 * With a control zone, the fleet policy from controld lives in shared
 * memory as a packed protobuf snapshot and overrides nginx.conf's per
 * domain: a lookup first checks that the snapshot has not moved (one
 * atomic read), rebuilds this worker's copy when it has, and asks the
 * fleet's before nginx.conf's.  Deliveries copy what they use at their
 * start, so a swap never pulls data from under one in flight.
 *
 * Route patterns: "example.com" matches that domain only, ".example.com"
 * its subdomains and itself, "*" everything; the most specific (longest)
 * match wins.  Hops: "[host]:port" is used as is, "host:port" means the MX
 * hosts of "host" (as Postfix's relayhost does).
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_relay_policy.h>
#include <ngx_relay_dkim.h>


#define NGX_RELAY_POLICY_READ_TRIES  100
#define NGX_RELAY_POLICY_ERRLEN      512


static ngx_int_t ngx_relay_policy_conf(ngx_conf_t *cf, ngx_relay_policy_t *p);
static void ngx_relay_policy_conf_cleanup(void *data);
static ngx_int_t ngx_relay_policy_retry_words(ngx_relay_retry_conf_t *rc,
    ngx_pool_t *pool, char **words);
static ngx_int_t ngx_relay_policy_add_retry(ngx_conf_t *cf,
    ngx_relay_policy_t *p);
static ngx_int_t ngx_relay_policy_node_check(relay_policy_t *pp, char *err,
    size_t errlen);
static ngx_uint_t ngx_relay_policy_fleet_scoped(relay_policy_t *pp);
static void ngx_relay_policy_refresh(ngx_relay_policy_t *p);
static ngx_relay_rules_t *ngx_relay_policy_fleet(ngx_relay_policy_t *p,
    u_char *data, size_t len, uint64_t version, ngx_log_t *log);
static ngx_relay_rules_t *ngx_relay_policy_build(ngx_pool_t *pool,
    relay_policy_t *pp, ngx_relay_retry_t *defaults);
static ngx_int_t ngx_relay_policy_build_routes(ngx_pool_t *pool,
    ngx_array_t **routes, const char *pattern, char **hops, size_t nhops,
    ngx_uint_t literal);
static ngx_int_t ngx_relay_policy_build_retry(ngx_pool_t *pool,
    ngx_relay_rules_t *rules, relay_policy_t *pp,
    ngx_relay_retry_t *defaults);
static ngx_int_t ngx_relay_policy_build_limits(ngx_pool_t *pool,
    ngx_relay_rules_t *rules, relay_policy_t *pp);
static ngx_int_t ngx_relay_policy_array(ngx_pool_t *pool,
    ngx_array_t **array, size_t n, size_t size);
static ngx_int_t ngx_relay_policy_strdup(ngx_pool_t *pool, ngx_str_t *dst,
    const char *src);
static ngx_relay_egress_pool_t *ngx_relay_policy_pool(ngx_array_t *pools,
    ngx_str_t *name);
static ngx_int_t ngx_relay_policy_add_pool(ngx_pool_t *pool,
    ngx_array_t **pools, relay_policy_pool_t *ep);
static ngx_int_t ngx_relay_policy_build_egress(ngx_pool_t *pool,
    ngx_relay_rules_t *rules, relay_policy_t *pp);
static ngx_int_t ngx_relay_policy_build_dest(ngx_pool_t *pool,
    ngx_relay_rules_t *rules, relay_policy_t *pp);


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
 * A directive that mirrors a policy statement: its arguments are the
 * statement's words.  The policy library parses them into nginx.conf's
 * policy and checks it as controld checks the fleet's (a draft: a rule may
 * name a pool defined further down), then the node's own limits.
 */

char *
ngx_relay_policy_directive(ngx_conf_t *cf, ngx_relay_policy_t *p,
    char *statement)
{
    char        **words, err[NGX_RELAY_POLICY_ERRLEN];
    ngx_str_t    *value;
    ngx_uint_t    i;

    if (ngx_relay_policy_conf(cf, p) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    words = ngx_palloc(cf->temp_pool, cf->args->nelts * sizeof(char *));
    if (words == NULL) {
        return NGX_CONF_ERROR;
    }

    /* nginx ends every word with a NUL */

    value = cf->args->elts;
    words[0] = statement;

    for (i = 1; i < cf->args->nelts; i++) {
        words[i] = (char *) value[i].data;
    }

    if (relay_policy_add(p->conf, words, cf->args->nelts, err, sizeof(err))
        != 0
        || relay_policy_validate_draft(p->conf, err, sizeof(err)) != 0
        || ngx_relay_policy_node_check(p->conf, err, sizeof(err)) != NGX_OK)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "%V: %s", &value[0], err);
        return NGX_CONF_ERROR;
    }

    /* a fleet scope needs relay_limit_redis, which may follow */

    if (p->fleet_directive.len == 0
        && ngx_relay_policy_fleet_scoped(p->conf))
    {
        p->fleet_directive = value[0];
        p->fleet_file = cf->conf_file->file.name;
        p->fleet_line = cf->conf_file->line;
    }

    return NGX_CONF_OK;
}


/*
 * relay_retry_backoff, relay_queue_lifetime and relay_delay_warning have
 * already kept their words in p->retry: the statement they make so far
 * must parse (a bad duration is refused here, at its line).  Whether min,
 * max and lifetime agree is known once all are read, at the end of the
 * stream block, which says so at the line of the last of them.
 */

char *
ngx_relay_policy_retry_directive(ngx_conf_t *cf, ngx_relay_policy_t *p)
{
    char            *words[6], err[NGX_RELAY_POLICY_ERRLEN];
    ngx_int_t        n;
    ngx_str_t       *value;
    relay_policy_t  *scratch;

    value = cf->args->elts;

    p->retry.directive = value[0];
    p->retry.file = cf->conf_file->file.name;
    p->retry.line = cf->conf_file->line;

    n = ngx_relay_policy_retry_words(&p->retry, cf->temp_pool, words);
    if (n == NGX_ERROR) {
        return NGX_CONF_ERROR;
    }

    scratch = relay_policy_new();
    if (scratch == NULL) {
        return NGX_CONF_ERROR;
    }

    if (relay_policy_add(scratch, words, n, err, sizeof(err)) != 0) {
        relay_policy_free(scratch);
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "%V: %s", &value[0], err);
        return NGX_CONF_ERROR;
    }

    relay_policy_free(scratch);

    return NGX_CONF_OK;
}


/* "retry * min=A max=B lifetime=C [delay_warning=D]": how many words */

static ngx_int_t
ngx_relay_policy_retry_words(ngx_relay_retry_conf_t *rc, ngx_pool_t *pool,
    char **words)
{
    u_char      *w;
    ngx_int_t    n, i;
    ngx_str_t   *value, *given[4];

    static ngx_str_t  names[] = {
        ngx_string("min="), ngx_string("max="), ngx_string("lifetime="),
        ngx_string("delay_warning=")
    };

    /* Postfix's defaults: 300 s doubling up to 4000 s, for 5 days */

    static ngx_str_t  defaults[] = {
        ngx_string("300s"), ngx_string("4000s"), ngx_string("5d"),
        ngx_null_string
    };

    given[0] = &rc->min;
    given[1] = &rc->max;
    given[2] = &rc->lifetime;
    given[3] = &rc->delay_warning;

    words[0] = "retry";
    words[1] = "*";
    n = 2;

    for (i = 0; i < 4; i++) {
        value = given[i];

        if (value->data == NULL) {
            value = &defaults[i];
        }

        if (value->data == NULL) {
            continue;
        }

        w = ngx_pnalloc(pool, names[i].len + value->len + 1);
        if (w == NULL) {
            return NGX_ERROR;
        }

        words[n++] = (char *) w;
        ngx_sprintf(w, "%V%V%Z", &names[i], value);
    }

    return n;
}


/*
 * The end of the stream block: nginx.conf's "retry *" joins its policy,
 * which is then checked whole and built for the lookups.
 */

ngx_int_t
ngx_relay_policy_init_conf(ngx_conf_t *cf, ngx_relay_policy_t *p)
{
    char  err[NGX_RELAY_POLICY_ERRLEN];

    if (ngx_relay_policy_conf(cf, p) != NGX_OK
        || ngx_relay_policy_add_retry(cf, p) != NGX_OK)
    {
        return NGX_ERROR;
    }

    /* what a draft may leave open: egress rules naming no pool */

    if (relay_policy_validate(p->conf, err, sizeof(err)) != 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "relay_egress_rule: %s",
                           err);
        return NGX_ERROR;
    }

    if (p->fleet_directive.len && p->limits.redis.addrs == NULL) {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "%V: scope=fleet needs \"relay_limit_redis\" in "
                      "%V:%ui", &p->fleet_directive, &p->fleet_file,
                      p->fleet_line);
        return NGX_ERROR;
    }

    p->local = ngx_relay_policy_build(cf->pool, p->conf, NULL);
    if (p->local == NULL) {
        return NGX_ERROR;
    }

    relay_policy_free(p->conf);
    p->conf = NULL;

    return NGX_OK;
}


static ngx_int_t
ngx_relay_policy_add_retry(ngx_conf_t *cf, ngx_relay_policy_t *p)
{
    char       *words[6], err[NGX_RELAY_POLICY_ERRLEN];
    ngx_int_t   n;

    n = ngx_relay_policy_retry_words(&p->retry, cf->temp_pool, words);
    if (n == NGX_ERROR) {
        return NGX_ERROR;
    }

    if (relay_policy_add(p->conf, words, n, err, sizeof(err)) == 0
        && relay_policy_validate_draft(p->conf, err, sizeof(err)) == 0)
    {
        return NGX_OK;
    }

    if (p->retry.directive.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "relay_retry_backoff: %s",
                           err);
        return NGX_ERROR;
    }

    ngx_log_error(NGX_LOG_EMERG, cf->log, 0, "%V: %s in %V:%ui",
                  &p->retry.directive, err, &p->retry.file, p->retry.line);

    return NGX_ERROR;
}


/* nginx.conf's policy message, made by the first directive that needs it */

static ngx_int_t
ngx_relay_policy_conf(ngx_conf_t *cf, ngx_relay_policy_t *p)
{
    ngx_pool_cleanup_t  *cln;

    if (p->conf) {
        return NGX_OK;
    }

    cln = ngx_pool_cleanup_add(cf->pool, 0);
    if (cln == NULL) {
        return NGX_ERROR;
    }

    cln->handler = ngx_relay_policy_conf_cleanup;
    cln->data = p;

    p->conf = relay_policy_new();

    return (p->conf != NULL) ? NGX_OK : NGX_ERROR;
}


static void
ngx_relay_policy_conf_cleanup(void *data)
{
    ngx_relay_policy_t  *p = data;

    relay_policy_free(p->conf);
    p->conf = NULL;
}


/* what this node can hold, besides what the policy allows */

static ngx_int_t
ngx_relay_policy_node_check(relay_policy_t *pp, char *err, size_t errlen)
{
    u_char  *last;
    size_t   i;

    for (i = 0; i < pp->n_egress_pools; i++) {
        if (pp->egress_pools[i]->n_addresses > NGX_RELAY_EGRESS_MAX) {
            last = ngx_snprintf((u_char *) err, errlen - 1,
                                "egress_pools[%uz].addresses: more than %d "
                                "addresses (the most a node uses)", i,
                                NGX_RELAY_EGRESS_MAX);
            *last = '\0';
            return NGX_ERROR;
        }
    }

    /* the keys are read now, by the master: nginx -t says what fails */

    if (ngx_relay_dkim_check(pp, err, errlen) != 0) {
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* the policy has a limit counted across the fleet */

static ngx_uint_t
ngx_relay_policy_fleet_scoped(relay_policy_t *pp)
{
    size_t  i;

    for (i = 0; i < pp->n_inbound_limits; i++) {
        if (pp->inbound_limits[i]->scope
            == RELAY__CONTROL__V1__LIMIT_SCOPE__FLEET)
        {
            return 1;
        }
    }

    for (i = 0; i < pp->n_destination_limits; i++) {
        if (pp->destination_limits[i]->scope
            == RELAY__CONTROL__V1__LIMIT_SCOPE__FLEET)
        {
            return 1;
        }
    }

    return 0;
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

    return ngx_relay_policy_route(p->local->routes, domain);
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

    return ngx_relay_policy_route(p->local->backup_mx, domain);
}


ngx_relay_route_t *
ngx_relay_policy_fallback(ngx_relay_policy_t *p)
{
    ngx_relay_policy_refresh(p);

    if (p->fleet && p->fleet->fallback) {
        return p->fleet->fallback->elts;
    }

    return p->local->fallback ? p->local->fallback->elts : NULL;
}


void
ngx_relay_policy_retry(ngx_relay_policy_t *p, ngx_str_t *domain,
    ngx_relay_retry_t *retry)
{
    ngx_relay_route_t  *r;

    ngx_relay_policy_refresh(p);

    r = NULL;

    if (p->fleet) {
        r = ngx_relay_policy_route(p->fleet->retry, domain);
    }

    if (r == NULL) {
        r = ngx_relay_policy_route(p->local->retry, domain);  /* "*" */
    }

    *retry = *(ngx_relay_retry_t *) r;
}


/* inbound limits: the fleet's rules, then nginx.conf's not overridden */

ngx_int_t
ngx_relay_policy_limit(ngx_relay_policy_t *p, ngx_relay_limit_check_t *lc)
{
    ngx_relay_policy_refresh(p);

    return ngx_relay_limits_check(lc, p->limits_zone, &p->limits,
                                  p->fleet ? p->fleet->limits : NULL,
                                  p->local->limits);
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
    rules[1] = p->local->rules;
    pools[0] = p->fleet ? p->fleet->pools : NULL;
    pools[1] = p->local->pools;

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

    return (ngx_relay_dest_limit_t *)
               ngx_relay_policy_route(p->local->dest_limits, domain);
}


/* the fleet's "tls" for the domain, else relay_tls_policy's; NULL: none */

ngx_relay_tls_rule_t *
ngx_relay_policy_tls(ngx_relay_policy_t *p, ngx_str_t *domain)
{
    ngx_relay_route_t  *r;

    ngx_relay_policy_refresh(p);

    if (p->fleet) {
        r = ngx_relay_policy_route(p->fleet->tls, domain);
        if (r) {
            return (ngx_relay_tls_rule_t *) r;
        }
    }

    return (ngx_relay_tls_rule_t *) ngx_relay_policy_route(p->local->tls,
                                                           domain);
}


/*
 * The DKIM keys to look at for a domain: the fleet's when it has a key of
 * that domain, else nginx.conf's (the caller picks the domain's keys).
 */

ngx_array_t *
ngx_relay_policy_dkim(ngx_relay_policy_t *p, ngx_str_t *domain)
{
    ngx_uint_t             i;
    ngx_relay_dkim_key_t  *k;

    ngx_relay_policy_refresh(p);

    if (p->fleet && p->fleet->dkim) {
        k = p->fleet->dkim->elts;

        for (i = 0; i < p->fleet->dkim->nelts; i++) {
            if (k[i].domain.len == domain->len
                && ngx_strncmp(k[i].domain.data, domain->data, domain->len)
                   == 0)
            {
                return p->fleet->dkim;
            }
        }
    }

    return p->local->dkim;
}


/* the room a signed message reserves: 0 when nothing is ever signed */

size_t
ngx_relay_policy_dkim_reserve(ngx_relay_policy_t *p)
{
    size_t  fleet;

    ngx_relay_policy_refresh(p);

    fleet = p->fleet ? p->fleet->dkim_reserve : 0;

    return ngx_max(p->local->dkim_reserve, fleet);
}


static ngx_int_t
ngx_relay_policy_add_pool(ngx_pool_t *pool, ngx_array_t **pools,
    relay_policy_pool_t *ep)
{
    size_t                    i;
    ngx_str_t                 addr;
    ngx_relay_egress_addr_t  *a;
    ngx_relay_egress_pool_t  *pl;

    if (ep->n_addresses == 0 || ep->n_addresses > NGX_RELAY_EGRESS_MAX) {
        return NGX_ERROR;
    }

    if (*pools == NULL) {
        *pools = ngx_array_create(pool, 2, sizeof(ngx_relay_egress_pool_t));
        if (*pools == NULL) {
            return NGX_ERROR;
        }
    }

    pl = ngx_array_push(*pools);
    if (pl == NULL
        || ngx_array_init(&pl->addrs, pool, ep->n_addresses,
                          sizeof(ngx_relay_egress_addr_t))
           != NGX_OK
        || ngx_relay_policy_strdup(pool, &pl->name, ep->name) != NGX_OK
        || ngx_relay_policy_strdup(pool, &pl->ehlo, ep->ehlo_name) != NGX_OK)
    {
        return NGX_ERROR;
    }

    for (i = 0; i < ep->n_addresses; i++) {
        a = ngx_array_push(&pl->addrs);
        if (a == NULL
            || ngx_relay_policy_strdup(pool, &addr,
                                       ep->addresses[i]->address)
               != NGX_OK
            || ngx_parse_addr(pool, &a->addr, addr.data, addr.len) != NGX_OK)
        {
            return NGX_ERROR;
        }

        a->addr.name = addr;
        a->weight = ep->addresses[i]->weight ? ep->addresses[i]->weight : 1;
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
    ngx_relay_rules_t       *fleet;
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

    fleet = ngx_relay_policy_fleet(p, p->copy, len, version, ngx_cycle->log);
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


/*
 * This worker's copy of the fleet's snapshot, in a pool of its own; its
 * "retry" fields left unset take nginx.conf's ("retry *").
 */

static ngx_relay_rules_t *
ngx_relay_policy_fleet(ngx_relay_policy_t *p, u_char *data, size_t len,
    uint64_t version, ngx_log_t *log)
{
    ngx_pool_t         *pool;
    relay_policy_t     *pp;
    ngx_relay_rules_t  *fleet;

    pp = relay__control__v1__policy__unpack(NULL, len, data);
    if (pp == NULL) {
        ngx_log_error(NGX_LOG_ALERT, log, 0,
                      "relay policy version %uL: cannot unpack", version);
        return NULL;
    }

    fleet = NULL;

    pool = ngx_create_pool(4096, log);
    if (pool) {
        fleet = ngx_relay_policy_build(pool, pp, p->local->retry->elts);
    }

    if (fleet && p->limits.redis.addrs == NULL
        && ngx_relay_policy_fleet_scoped(pp))
    {
        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "relay policy version %uL: limits of scope fleet, "
                      "but no relay_limit_redis: they count by "
                      "relay_limit_redis_fallback", version);
    }

    relay_policy_free(pp);

    if (fleet == NULL) {
        ngx_log_error(NGX_LOG_ALERT, log, 0,
                      "relay policy version %uL: cannot build", version);

        if (pool) {
            ngx_destroy_pool(pool);
        }

        return NULL;
    }

    fleet->pool = pool;
    fleet->version = version;

    return fleet;
}


/*
 * The one builder: a Policy message, validated, into the shape lookups
 * read, allocated from pool.  defaults: the retry fields a "retry"
 * statement leaves unset (0) take (NULL: none).
 */

static ngx_relay_rules_t *
ngx_relay_policy_build(ngx_pool_t *pool, relay_policy_t *pp,
    ngx_relay_retry_t *defaults)
{
    size_t              i;
    ngx_relay_rules_t  *rules;

    rules = ngx_pcalloc(pool, sizeof(ngx_relay_rules_t));
    if (rules == NULL) {
        return NULL;
    }

    if (ngx_relay_dkim_build(pool, &rules->dkim, &rules->dkim_reserve, pp)
        != NGX_OK)
    {
        return NULL;
    }

    for (i = 0; i < pp->n_routes; i++) {
        if (ngx_relay_policy_build_routes(pool, &rules->routes,
                                          pp->routes[i]->pattern,
                                          pp->routes[i]->next_hops,
                                          pp->routes[i]->n_next_hops, 0)
            != NGX_OK)
        {
            return NULL;
        }
    }

    for (i = 0; i < pp->n_backup_mx; i++) {
        if (ngx_relay_policy_build_routes(pool, &rules->backup_mx,
                                          pp->backup_mx[i]->pattern,
                                          pp->backup_mx[i]->hosts,
                                          pp->backup_mx[i]->n_hosts, 1)
            != NGX_OK)
        {
            return NULL;
        }
    }

    if (pp->n_fallback_relay
        && ngx_relay_policy_build_routes(pool, &rules->fallback, "*",
                                         pp->fallback_relay,
                                         pp->n_fallback_relay, 0)
           != NGX_OK)
    {
        return NULL;
    }

    /* the lists of one element per statement; none: NULL, lookups skip */

    if (ngx_relay_policy_array(pool, &rules->retry, pp->n_retry,
                               sizeof(ngx_relay_retry_t))
        != NGX_OK
        || ngx_relay_policy_array(pool, &rules->limits, pp->n_inbound_limits,
                                  sizeof(ngx_relay_limit_t))
           != NGX_OK
        || ngx_relay_policy_array(pool, &rules->rules, pp->n_egress_rules,
                                  sizeof(ngx_relay_egress_rule_t))
           != NGX_OK
        || ngx_relay_policy_array(pool, &rules->tls, pp->n_tls,
                                  sizeof(ngx_relay_tls_rule_t))
           != NGX_OK
        || ngx_relay_policy_array(pool, &rules->dest_limits,
                                  pp->n_destination_limits,
                                  sizeof(ngx_relay_dest_limit_t))
           != NGX_OK)
    {
        return NULL;
    }

    if (ngx_relay_policy_build_retry(pool, rules, pp, defaults) != NGX_OK
        || ngx_relay_policy_build_limits(pool, rules, pp) != NGX_OK
        || ngx_relay_policy_build_egress(pool, rules, pp) != NGX_OK
        || ngx_relay_policy_build_dest(pool, rules, pp) != NGX_OK)
    {
        return NULL;
    }

    return rules;
}


static ngx_int_t
ngx_relay_policy_build_retry(ngx_pool_t *pool, ngx_relay_rules_t *rules,
    relay_policy_t *pp, ngx_relay_retry_t *defaults)
{
    size_t                 i;
    ngx_relay_retry_t     *rt;
    relay_policy_retry_t  *rp;

    for (i = 0; i < pp->n_retry; i++) {
        rp = pp->retry[i];

        rt = ngx_array_push(rules->retry);
        if (rt == NULL
            || ngx_relay_policy_strdup(pool, &rt->pattern, rp->pattern)
               != NGX_OK)
        {
            return NGX_ERROR;
        }

        rt->backoff_min = rp->backoff_min_s;
        rt->backoff_max = rp->backoff_max_s;
        rt->lifetime = rp->lifetime_s;
        rt->delay_warning = rp->delay_warning_s;

        if (defaults) {
            rt->backoff_min = rt->backoff_min ? rt->backoff_min
                                              : defaults->backoff_min;
            rt->backoff_max = rt->backoff_max ? rt->backoff_max
                                              : defaults->backoff_max;
            rt->lifetime = rt->lifetime ? rt->lifetime : defaults->lifetime;
        }
    }

    return NGX_OK;
}


static ngx_int_t
ngx_relay_policy_build_limits(ngx_pool_t *pool, ngx_relay_rules_t *rules,
    relay_policy_t *pp)
{
    size_t                   i;
    ngx_str_t                match;
    ngx_relay_limit_t       *lim;
    relay_policy_inbound_t  *il;

    for (i = 0; i < pp->n_inbound_limits; i++) {
        il = pp->inbound_limits[i];

        lim = ngx_array_push(rules->limits);
        if (lim == NULL) {
            return NGX_ERROR;
        }

        ngx_memzero(lim, sizeof(ngx_relay_limit_t));

        if (ngx_relay_policy_strdup(pool, &match, il->match) != NGX_OK
            || ngx_relay_limit_init(lim, il->key, &match,
                                    il->scope
                                    == RELAY__CONTROL__V1__LIMIT_SCOPE__FLEET
                                    ? NGX_RELAY_LIMIT_FLEET
                                    : NGX_RELAY_LIMIT_NODE)
               != NGX_OK)
        {
            return NGX_ERROR;
        }

        lim->window = il->window_s ? il->window_s : 60;
        lim->messages = il->messages;
        lim->recipients = il->recipients;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_relay_policy_build_egress(ngx_pool_t *pool, ngx_relay_rules_t *rules,
    relay_policy_t *pp)
{
    size_t                    i;
    relay_policy_rule_t      *er;
    ngx_relay_egress_rule_t  *r;

    for (i = 0; i < pp->n_egress_pools; i++) {

        /* "egress_pool NAME local": nginx.conf's pool answers for it */

        if (pp->egress_pools[i]->node_local) {
            continue;
        }

        if (ngx_relay_policy_add_pool(pool, &rules->pools,
                                      pp->egress_pools[i])
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    for (i = 0; i < pp->n_egress_rules; i++) {
        er = pp->egress_rules[i];

        r = ngx_array_push(rules->rules);
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
ngx_relay_policy_build_dest(ngx_pool_t *pool, ngx_relay_rules_t *rules,
    relay_policy_t *pp)
{
    size_t                   i;
    relay_policy_dest_t     *d;
    ngx_relay_tls_rule_t    *tr;
    ngx_relay_dest_limit_t  *dl;

    for (i = 0; i < pp->n_tls; i++) {
        tr = ngx_array_push(rules->tls);
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

    for (i = 0; i < pp->n_destination_limits; i++) {
        d = pp->destination_limits[i];

        dl = ngx_array_push(rules->dest_limits);
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
        dl->scope = (d->scope == RELAY__CONTROL__V1__LIMIT_SCOPE__FLEET)
                    ? NGX_RELAY_LIMIT_FLEET : NGX_RELAY_LIMIT_NODE;
        dl->per_address = (d->per
                   == RELAY__CONTROL__V1__DESTINATION_LIMIT__PER__ADDRESS);
    }

    return NGX_OK;
}


/* hops as the policy library splits them; a backup MX is always a host */

static ngx_int_t
ngx_relay_policy_build_routes(ngx_pool_t *pool, ngx_array_t **routes,
    const char *pattern, char **hops, size_t nhops, ngx_uint_t literal)
{
    size_t               i;
    ngx_relay_hop_t     *h;
    ngx_relay_route_t   *r;
    relay_policy_hop_t   hop;

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
        if (relay_policy_hop(hops[i], &hop) != NULL) {
            return NGX_ERROR;
        }

        h = ngx_array_push(&r->hops);
        if (h == NULL) {
            return NGX_ERROR;
        }

        h->host.len = hop.host_len;
        h->host.data = ngx_pnalloc(pool, hop.host_len);
        if (h->host.data == NULL) {
            return NGX_ERROR;
        }

        ngx_memcpy(h->host.data, hop.host, hop.host_len);
        h->port = (in_port_t) hop.port;
        h->mx = literal ? 0 : hop.mx;
    }

    return NGX_OK;
}


/* an array for n elements, or none (NULL) when n is 0 */

static ngx_int_t
ngx_relay_policy_array(ngx_pool_t *pool, ngx_array_t **array, size_t n,
    size_t size)
{
    if (n == 0) {
        return NGX_OK;
    }

    *array = ngx_array_create(pool, n, size);
    if (*array == NULL) {
        return NGX_ERROR;
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

/*
 * The names of nginx.conf's egress pools, which "egress_pool NAME local"
 * of the fleet must be: one ngx_alloc()ed block (pointers, then the
 * strings), freed with ngx_free(); NULL when out of memory.
 */

char **
ngx_relay_policy_pool_names(ngx_relay_policy_t *p, size_t *n)
{
    char                     **names, *s;
    size_t                     size;
    ngx_uint_t                 i, npools;
    ngx_relay_egress_pool_t   *pool;

    npools = p->local->pools ? p->local->pools->nelts : 0;
    pool = npools ? p->local->pools->elts : NULL;
    size = (npools + 1) * sizeof(char *);

    for (i = 0; i < npools; i++) {
        size += pool[i].name.len + 1;
    }

    names = ngx_alloc(size, ngx_cycle->log);
    if (names == NULL) {
        return NULL;
    }

    s = (char *) (names + npools + 1);

    for (i = 0; i < npools; i++) {
        names[i] = s;
        s = (char *) ngx_cpymem(s, pool[i].name.data, pool[i].name.len);
        *s++ = '\0';
    }

    names[npools] = NULL;
    *n = npools;

    return names;
}


ngx_int_t
ngx_relay_policy_load_file(ngx_relay_policy_shm_t *shm, ngx_str_t *path,
    ngx_relay_policy_t *p, const relay_scope_node_t *node, ngx_log_t *log)
{
    size_t                       nown, len;
    ssize_t                      n;
    ngx_fd_t                     fd;
    ngx_file_info_t              fi;
    relay_policy_t              *pp;
    u_char                      *buf;
    char                         err[512], **own;

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

    /* stored as controld sent it: this node's part, by today's labels */

    own = ngx_relay_policy_pool_names(p, &nown);
    if (own == NULL) {
        relay__control__v1__policy__free_unpacked(pp, NULL);
        goto failed;
    }

    if (pp->version == 0
        || relay_policy_for_node(pp, node, own, nown, err, sizeof(err)) != 0
        || relay_policy_validate(pp, err, sizeof(err)) != 0)
    {
        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "relay policy \"%V\" is invalid: %s", path,
                      pp->version ? err : "no version");
        relay__control__v1__policy__free_unpacked(pp, NULL);
        ngx_free(own);
        goto failed;
    }

    ngx_free(own);

    len = relay__control__v1__policy__get_packed_size(pp);

    if (len > (size_t) n) {
        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "relay policy \"%V\" grew when filtered", path);
        relay__control__v1__policy__free_unpacked(pp, NULL);
        goto failed;
    }

    (void) relay__control__v1__policy__pack(pp, buf);

    ngx_relay_policy_publish(shm, pp->version, buf, len);

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
