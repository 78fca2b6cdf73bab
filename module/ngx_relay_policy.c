
/*
 * Copyright (C) The relay authors
 */


/*
 * Routing and retry policy lookups.  Today the policy is static, from
 * nginx.conf; the control plane will swap in a shared-memory snapshot with
 * the same lookups.
 *
 * Route patterns: "example.com" matches that domain only, ".example.com"
 * its subdomains and itself, "*" everything; the most specific (longest)
 * match wins.  Hops: "[host]:port" is used as is, "host:port" means the MX
 * hosts of "host" (as Postfix's relayhost does).
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_relay_policy.h>


static ngx_int_t ngx_relay_policy_parse_hop(ngx_str_t *s, ngx_relay_hop_t *h);


ngx_relay_route_t *
ngx_relay_policy_route(ngx_array_t *routes, ngx_str_t *domain)
{
    size_t              plen;
    ngx_uint_t          i;
    ngx_str_t          *pat;
    ngx_relay_route_t  *r, *best;

    if (routes == NULL) {
        return NULL;
    }

    r = routes->elts;
    best = NULL;

    for (i = 0; i < routes->nelts; i++) {
        pat = &r[i].pattern;
        plen = pat->len;

        if (plen == 1 && pat->data[0] == '*') {
            if (best == NULL) {
                best = &r[i];
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

        if (best == NULL || (best->pattern.len == 1
                             && best->pattern.data[0] == '*')
            || best->pattern.len < plen)
        {
            best = &r[i];
        }
    }

    return best;
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


static ngx_int_t
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
ngx_relay_policy_backoff(ngx_relay_policy_t *p, ngx_uint_t attempts)
{
    time_t      t;
    ngx_uint_t  i;

    t = p->backoff_min;

    for (i = 1; i < attempts && t < p->backoff_max; i++) {
        t *= 2;
    }

    return ngx_min(t, p->backoff_max);
}
