
/*
 * Copyright (C) The relay authors
 */


/*
 * The route of one delivery: which hosts to try for a recipient domain,
 * in which order, and the TLS they must offer.  It looks names up and
 * hands out addresses; it never connects and never decides about a
 * recipient (the SMTP client does, with what it reports).
 *
 * Hops, in order (RFC 5321 5.1): the route's next hops, or the domain's
 * MX hosts by preference (random among equals; the domain itself when it
 * has no MX); then the domain's backup MX list; then the fallback relay.
 * A hop "[host]" or an address is a host; "host" is looked up as MX.
 * Each hop gives targets (host and port), each target its addresses.
 * An address literal (RFC 5321 4.1.3, "[192.0.2.1]", "[IPv6:...]") is
 * its own and only hop before the fallback relay: that address, no DNS,
 * no route and no backup MX (whose patterns name domains).
 *
 * The domain's own hops speak for the domain: a null MX (RFC 7505), a
 * name that does not exist, or an MX naming this host (a loop) fail its
 * mail at once; from a later hop they are no verdict.  A lookup that
 * fails for now is an error to report, and the walk goes on.
 *
 * TLS policy, per host, by precedence: DANE (RFC 7672) when the host came
 * from a DNSSEC-signed MX answer of the domain's own and has TLSA records
 * in a signed zone (relay_dnssec on: the resolver's AD bit is trusted);
 * then MTA-STS (RFC 8461); then the destination's policy (the fleet's
 * tls, relay_tls_policy); else opportunistic TLS.  A TLSA lookup that
 * fails for now fails that host (4.7.5), never a fallback.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_relay_route.h>
#include <ngx_relay_literal.h>


static ngx_int_t ngx_relay_route_add_hops(ngx_relay_route_ctx_t *rt,
    ngx_relay_route_t *r, ngx_uint_t mx);
static void ngx_relay_route_tls_policy(ngx_relay_route_ctx_t *rt,
    ngx_relay_policy_t *p, ngx_str_t *domain);
static ngx_int_t ngx_relay_route_next_target(ngx_relay_route_ctx_t *rt);
static ngx_int_t ngx_relay_route_next_hop(ngx_relay_route_ctx_t *rt);
static ngx_int_t ngx_relay_route_literal(ngx_relay_route_ctx_t *rt,
    ngx_str_t *host);
static void ngx_relay_route_mx_done(ngx_relay_dns_query_t *q);
static void ngx_relay_route_mx_hosts(ngx_relay_route_ctx_t *rt,
    ngx_relay_dns_query_t *q, in_port_t port);
static void ngx_relay_route_host_done(ngx_relay_dns_query_t *q);
static void ngx_relay_route_host_policy(ngx_relay_route_ctx_t *rt);
static void ngx_relay_route_tlsa_done(ngx_relay_dns_query_t *q);
static void ngx_relay_route_sts_done(void *data,
    ngx_relay_sts_policy_t *policy);
static ngx_int_t ngx_relay_route_sts_host(ngx_relay_route_ctx_t *rt,
    ngx_relay_target_t *t);
static void ngx_relay_route_fail(ngx_relay_route_ctx_t *rt, ngx_int_t rc,
    const char *dsn, const char *fmt, ...);
static size_t ngx_relay_route_hop_text(ngx_relay_route_ctx_t *rt,
    ngx_relay_hop_t *h, u_char *buf, size_t len);


ngx_int_t
ngx_relay_route_init(ngx_relay_route_ctx_t *rt, ngx_relay_policy_t *p,
    ngx_str_t *domain)
{
    ngx_str_t           host;
    ngx_relay_hop_t    *h;
    ngx_relay_route_t  *r;

    rt->smtp_port = p->smtp_port;
    rt->domain = *domain;

    ngx_relay_route_tls_policy(rt, p, domain);

    if (ngx_array_init(&rt->hops, rt->pool, 4, sizeof(ngx_relay_hop_t))
        != NGX_OK
        || ngx_array_init(&rt->targets, rt->pool, 4,
                          sizeof(ngx_relay_target_t))
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    /* the domain's own hops: a route, or its MX hosts; a literal's host */

    if (ngx_relay_literal_host(domain, &host) == NGX_OK) {
        h = ngx_array_push(&rt->hops);
        if (h == NULL) {
            return NGX_ERROR;
        }

        ngx_memzero(h, sizeof(ngx_relay_hop_t));
        h->host = host;
        rt->own_hops = 1;

        r = ngx_relay_policy_fallback(p);

        if (r && ngx_relay_route_add_hops(rt, r, 1) != NGX_OK) {
            return NGX_ERROR;
        }

        return NGX_OK;
    }

    r = ngx_relay_policy_next_hops(p, domain);

    if (r) {
        if (ngx_relay_route_add_hops(rt, r, 1) != NGX_OK) {
            return NGX_ERROR;
        }

    } else {
        h = ngx_array_push(&rt->hops);
        if (h == NULL) {
            return NGX_ERROR;
        }

        ngx_memzero(h, sizeof(ngx_relay_hop_t));
        h->host = *domain;
        h->mx = 1;
    }

    rt->own_hops = rt->hops.nelts;

    /* then the backup MX list (hosts, no MX lookup), the fallback relay */

    r = ngx_relay_policy_backup(p, domain);

    if (r && ngx_relay_route_add_hops(rt, r, 0) != NGX_OK) {
        return NGX_ERROR;
    }

    r = ngx_relay_policy_fallback(p);

    if (r && ngx_relay_route_add_hops(rt, r, 1) != NGX_OK) {
        return NGX_ERROR;
    }

    return NGX_OK;
}


/*
 * The fleet policy may be swapped while the delivery runs: it keeps
 * copies of the hops it started with.
 */

static ngx_int_t
ngx_relay_route_add_hops(ngx_relay_route_ctx_t *rt, ngx_relay_route_t *r,
    ngx_uint_t mx)
{
    ngx_uint_t        i;
    ngx_relay_hop_t  *h, *hop;

    hop = r->hops.elts;

    for (i = 0; i < r->hops.nelts; i++) {
        h = ngx_array_push(&rt->hops);
        if (h == NULL) {
            return NGX_ERROR;
        }

        *h = hop[i];
        h->mx = mx ? hop[i].mx : 0;

        h->host.data = ngx_pstrdup(rt->pool, &hop[i].host);
        if (h->host.data == NULL) {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


/* the fleet's "tls" for the domain, else relay_tls_policy's */

static void
ngx_relay_route_tls_policy(ngx_relay_route_ctx_t *rt, ngx_relay_policy_t *p,
    ngx_str_t *domain)
{
    ngx_relay_tls_rule_t  *tls;

    tls = ngx_relay_policy_tls(p, domain);

    if (tls) {
        rt->policy_required = tls->required;
        rt->policy_verify = tls->verify;
        rt->policy_set = 1;
    }

    ngx_relay_route_host_policy(rt);
}


/* the destination's policy, for a host nothing else speaks for */

static void
ngx_relay_route_host_policy(ngx_relay_route_ctx_t *rt)
{
    rt->tls_required = rt->policy_required;
    rt->tls_verify = rt->policy_verify;
    rt->tls_source = rt->policy_set ? NGX_RELAY_TLS_POLICY
                                    : NGX_RELAY_TLS_DEFAULT;
    rt->dane = 0;
    rt->tlsa = NULL;
    rt->ntlsa = 0;
}


/* the current host's TLS policy and its source, for logs: "verify:dane" */

const char *
ngx_relay_route_tls_text(ngx_relay_route_ctx_t *rt)
{
    static const char  *sources[] = {
        "default", "policy", "mta-sts", "mta-sts-testing", "dane"
    };
    static const char  *texts[][5] = {
        { "opportunistic:default", "opportunistic:policy",
          "opportunistic:mta-sts", "opportunistic:mta-sts-testing",
          "opportunistic:dane" },
        { "required:default", "required:policy", "required:mta-sts",
          "required:mta-sts-testing", "required:dane" },
        { "verify:default", "verify:policy", "verify:mta-sts",
          "verify:mta-sts-testing", "verify:dane" }
    };

    if (rt->tls_source >= sizeof(sources) / sizeof(sources[0])) {
        return "unknown";
    }

    if (rt->dane) {
        return "dane:dane";
    }

    return texts[rt->tls_verify ? 2 : (rt->tls_required ? 1 : 0)]
                [rt->tls_source];
}


/*
 * The address to try now: the current one, or the next of the walk.
 *
 *   NGX_OK        rt->host, rt->port, rt->sockaddr (the port set in it),
 *                 rt->first
 *   NGX_AGAIN     a lookup runs; rt->handler runs when it ends
 *   NGX_DECLINED  a lookup failed for now (rt->dsn, rt->error, rt->relay);
 *                 ask again for the rest of the walk
 *   NGX_ABORT     the domain takes no mail (rt->dsn, rt->error)
 *   NGX_DONE      no hop is left
 *   NGX_ERROR     no memory for a lookup
 */

ngx_int_t
ngx_relay_route_next(ngx_relay_route_ctx_t *rt)
{
    ngx_int_t  rc;

    if (rt->failed) {
        rc = rt->failed;
        rt->failed = 0;
        return rc;
    }

    /* the domain's MTA-STS policy, once, before its first host */

    if (rt->mtasts && rt->sts_state != 2) {
        if (rt->sts_state == 0) {
            rt->sts_state = 1;

            if (ngx_relay_mtasts_lookup(rt->mtasts, rt->pool, &rt->domain,
                                        ngx_relay_route_sts_done, rt)
                == NGX_AGAIN)
            {
                return NGX_AGAIN;
            }
        }

        rt->sts_state = 2;
    }

    while (rt->addr == rt->naddrs) {
        rc = ngx_relay_route_next_target(rt);

        if (rc != NGX_OK) {
            return rc;
        }
    }

    rt->sockaddr = (struct sockaddr *) &rt->addrs[rt->addr];
    rt->socklen = rt->socklens[rt->addr];
    rt->first = (rt->addr == 0);

    ngx_inet_set_port(rt->sockaddr, rt->port);

    return NGX_OK;
}


/* the current address was used: the next call gives the next one */

void
ngx_relay_route_next_addr(ngx_relay_route_ctx_t *rt)
{
    rt->addr++;
}


/* done with the current host: its other addresses are not tried */

void
ngx_relay_route_next_host(ngx_relay_route_ctx_t *rt)
{
    rt->addr = rt->naddrs;
}


/* a cached connection served this host: the walk passes it over */

void
ngx_relay_route_skip(ngx_relay_route_ctx_t *rt, ngx_str_t *host,
    in_port_t port)
{
    rt->skip = 0;

    if (host == NULL) {
        return;
    }

    rt->skip_host.data = ngx_pstrdup(rt->pool, host);

    if (rt->skip_host.data) {
        rt->skip_host.len = host->len;
        rt->skip_port = port;
        rt->skip = 1;
    }
}


static ngx_int_t
ngx_relay_route_next_target(ngx_relay_route_ctx_t *rt)
{
    ngx_int_t            rc;
    ngx_relay_target_t  *t;

    for ( ;; ) {

        /* between targets: no address is current */

        rt->naddrs = 0;
        rt->addr = 0;

        if (rt->target == rt->targets.nelts) {
            rc = ngx_relay_route_next_hop(rt);

            if (rc != NGX_OK) {
                return rc;
            }

            continue;
        }

        t = (ngx_relay_target_t *) rt->targets.elts + rt->target++;

        if (rt->skip && t->port == rt->skip_port
            && t->host.len == rt->skip_host.len
            && ngx_strncasecmp(t->host.data, rt->skip_host.data, t->host.len)
               == 0)
        {
            continue;
        }

        rt->host = t->host;
        rt->port = t->port;

        ngx_relay_route_host_policy(rt);

        if (ngx_relay_route_sts_host(rt, t) != NGX_OK) {
            return NGX_DECLINED;         /* MTA-STS enforce: not this host */
        }

        if (ngx_relay_route_literal(rt, &t->host) == NGX_OK) {
            return NGX_OK;
        }

        /* DANE: a host of a signed MX answer of the domain's own */

        if (t->secure) {
            rt->query = ngx_relay_dns_tlsa(rt->dns, &t->host, t->port,
                                           ngx_relay_route_tlsa_done, rt);
            if (rt->query) {
                return NGX_AGAIN;
            }

            continue;                    /* no memory: not this host */
        }

        rt->query = ngx_relay_dns_host(rt->dns, &t->host,
                                       ngx_relay_route_host_done, rt);
        if (rt->query) {
            return NGX_AGAIN;
        }
    }
}


/* the next hop into targets (hosts with ports), or an MX lookup for them */

static ngx_int_t
ngx_relay_route_next_hop(ngx_relay_route_ctx_t *rt)
{
    ngx_relay_hop_t     *h;
    ngx_relay_target_t  *t;

    if (rt->hop == rt->hops.nelts) {
        return NGX_DONE;
    }

    h = (ngx_relay_hop_t *) rt->hops.elts + rt->hop++;

    if (h->mx && ngx_relay_route_literal(rt, &h->host) != NGX_OK) {
        rt->query = ngx_relay_dns_mx(rt->dns, &h->host,
                                     ngx_relay_route_mx_done, rt);

        return rt->query ? NGX_AGAIN : NGX_ERROR;
    }

    t = ngx_array_push(&rt->targets);
    if (t == NULL) {
        return NGX_DONE;        /* what is open is deferred as it stands */
    }

    t->host = h->host;
    t->port = h->port ? h->port : rt->smtp_port;
    t->secure = 0;
    t->mx = 0;

    return NGX_OK;
}


/* an IP address as host name: no DNS */

static ngx_int_t
ngx_relay_route_literal(ngx_relay_route_ctx_t *rt, ngx_str_t *host)
{
    ngx_addr_t  addr;

    if (ngx_parse_addr(rt->pool, &addr, host->data, host->len) != NGX_OK) {
        return NGX_DECLINED;
    }

    ngx_memcpy(&rt->addrs[0], addr.sockaddr, addr.socklen);
    rt->socklens[0] = addr.socklen;
    rt->naddrs = 1;
    rt->addr = 0;

    return NGX_OK;
}


static void
ngx_relay_route_mx_done(ngx_relay_dns_query_t *q)
{
    ngx_relay_route_ctx_t  *rt = q->data;

    in_port_t            port;
    ngx_uint_t           own;
    ngx_relay_hop_t     *h;
    ngx_relay_target_t  *t;

    rt->query = NULL;

    h = (ngx_relay_hop_t *) rt->hops.elts + rt->hop - 1;
    port = h->port ? h->port : rt->smtp_port;
    own = (rt->hop <= rt->own_hops);

    switch (q->status) {

    case NGX_OK:
        rt->mx_secure = (q->secure && own);
        ngx_relay_route_mx_hosts(rt, q, port);
        break;

    case NGX_DECLINED:
        if (q->nxdomain && own) {
            ngx_relay_route_fail(rt, NGX_ABORT, "5.1.2", "%V: host or "
                                 "domain name not found", &h->host);
            break;
        }

        if (q->null_mx && own) {
            ngx_relay_route_fail(rt, NGX_ABORT, "5.1.10", "null MX: the "
                                 "domain accepts no mail (RFC 7505)");
            break;
        }

        /* no MX: the host itself (implicit MX, RFC 5321 5.1) */

        t = ngx_array_push(&rt->targets);
        if (t != NULL) {
            t->host = h->host;
            t->port = port;
            t->secure = 0;
            t->mx = own;
        }

        break;

    default: /* NGX_AGAIN */
        ngx_relay_route_fail(rt, NGX_DECLINED, "4.4.3", "MX lookup of %V: %s",
                             &h->host, q->error);
        ngx_str_set(&rt->relay, "none");

        ngx_log_error(NGX_LOG_WARN, rt->log, 0,
                      "%V: MX lookup of %V failed: %s", rt->id, &h->host,
                      q->error);
        break;
    }

    ngx_relay_dns_done(q);

    rt->handler(rt);
}


/* the MX hosts as targets, by preference; the walk stops at ourselves */

static void
ngx_relay_route_mx_hosts(ngx_relay_route_ctx_t *rt, ngx_relay_dns_query_t *q,
    in_port_t port)
{
    ngx_uint_t           i;
    ngx_relay_target_t  *t;

    for (i = 0; i < q->nmx; i++) {
        t = ngx_array_push(&rt->targets);
        if (t == NULL) {
            return;
        }

        t->host.data = ngx_pstrdup(rt->pool, &q->mx[i].host);
        t->host.len = q->mx[i].host.len;
        t->port = port;
        t->secure = rt->mx_secure;
        t->mx = (rt->hop <= rt->own_hops);

        if (t->host.data == NULL) {
            rt->targets.nelts--;
            return;
        }

        /* an MX pointing back at us is a loop (RFC 5321 5.1) */

        if (t->host.len == rt->hostname->len
            && ngx_strncasecmp(t->host.data, rt->hostname->data, t->host.len)
               == 0)
        {
            rt->targets.nelts--;

            if (rt->targets.nelts == 0 && rt->hop <= rt->own_hops) {
                ngx_relay_route_fail(rt, NGX_ABORT, "5.4.6", "mail for the "
                                     "domain loops back to myself");
            }

            return;
        }
    }
}


static void
ngx_relay_route_host_done(ngx_relay_dns_query_t *q)
{
    ngx_relay_route_ctx_t  *rt = q->data;

    ngx_uint_t  i;

    rt->query = NULL;

    if (q->status == NGX_OK) {
        for (i = 0; i < q->naddrs; i++) {
            ngx_memcpy(&rt->addrs[i], &q->addrs[i], q->socklens[i]);
            rt->socklens[i] = q->socklens[i];
        }

        rt->naddrs = q->naddrs;
        rt->addr = 0;

    } else {
        ngx_relay_route_fail(rt, NGX_DECLINED, "4.4.3", "address lookup of "
                             "%V: %s", &rt->host, q->error);
        rt->relay = rt->host;

        ngx_log_error(NGX_LOG_WARN, rt->log, 0,
                      "%V: address lookup of %V failed: %s", rt->id,
                      &rt->host, q->error);
    }

    ngx_relay_dns_done(q);

    rt->handler(rt);
}


/*
 * RFC 7672 2.2: TLSA records in a signed zone make TLS mandatory; usable
 * ones (DANE-TA, DANE-EE) authenticate the server, unusable ones leave
 * TLS unauthenticated.  Signed NODATA or NXDOMAIN, or an insecure answer:
 * no DANE for this host.  A lookup that fails for now fails the host.
 * Then the host's addresses.
 */

static void
ngx_relay_route_tlsa_done(ngx_relay_dns_query_t *q)
{
    ngx_relay_route_ctx_t  *rt = q->data;

    ngx_uint_t         i, n;
    ngx_relay_tlsa_t  *t;

    rt->query = NULL;

    if (q->status == NGX_AGAIN) {
        ngx_relay_route_fail(rt, NGX_DECLINED, "4.7.5", "TLSA lookup of "
                             "_%d._tcp.%V: %s", (int) rt->port, &rt->host,
                             q->error);
        rt->relay = rt->host;

        ngx_log_error(NGX_LOG_WARN, rt->log, 0,
                      "%V: TLSA lookup of _%d._tcp.%V failed: %s", rt->id,
                      (int) rt->port, &rt->host, q->error);

        ngx_relay_dns_done(q);
        rt->handler(rt);
        return;
    }

    if (q->status == NGX_OK && q->secure) {
        rt->tls_source = NGX_RELAY_TLS_DANE;
        rt->tls_required = 1;
        rt->tls_verify = 0;

        t = ngx_palloc(rt->pool, q->ntlsa * sizeof(ngx_relay_tlsa_t));

        for (i = 0, n = 0; t && i < q->ntlsa; i++) {
            if ((q->tlsa[i].usage != 2 && q->tlsa[i].usage != 3)
                || q->tlsa[i].selector > 1 || q->tlsa[i].mtype > 2)
            {
                continue;
            }

            t[n] = q->tlsa[i];
            t[n].data = ngx_pnalloc(rt->pool, q->tlsa[i].len);

            if (t[n].data == NULL) {
                continue;
            }

            ngx_memcpy(t[n].data, q->tlsa[i].data, q->tlsa[i].len);
            n++;
        }

        rt->tlsa = t;
        rt->ntlsa = n;
        rt->dane = (n > 0);
    }

    ngx_relay_dns_done(q);

    rt->query = ngx_relay_dns_host(rt->dns, &rt->host,
                                   ngx_relay_route_host_done, rt);
    if (rt->query == NULL) {
        ngx_relay_route_fail(rt, NGX_DECLINED, "4.3.0", "address lookup of "
                             "%V: out of memory", &rt->host);
        rt->relay = rt->host;
        rt->handler(rt);
    }
}


static void
ngx_relay_route_sts_done(void *data, ngx_relay_sts_policy_t *policy)
{
    ngx_relay_route_ctx_t  *rt = data;

    static const char  *modes[] = { "none", "testing", "enforce" };

    rt->sts = policy;
    rt->sts_state = 2;

    if (policy) {
        ngx_log_debug3(NGX_LOG_DEBUG_CORE, rt->log, 0,
                       "relay route: MTA-STS policy of %V: %s, id %V",
                       &rt->domain, modes[policy->mode], &policy->id);
    }

    rt->handler(rt);
}


/*
 * RFC 8461 4: the domain's own MX hosts only.  enforce: a host the policy
 * does not name is not used (4.7.5, counted); the others need TLS with a
 * certificate valid for their name.  testing: the host's own policy
 * stands, and what would have failed is logged.
 */

static ngx_int_t
ngx_relay_route_sts_host(ngx_relay_route_ctx_t *rt, ngx_relay_target_t *t)
{
    ngx_uint_t               n;
    ngx_relay_sts_policy_t  *p;

    p = rt->sts;

    if (p == NULL || p->mode == NGX_RELAY_STS_NONE || !t->mx) {
        return NGX_OK;
    }

    if (p->mode == NGX_RELAY_STS_TESTING) {
        rt->tls_source = NGX_RELAY_TLS_STS_TESTING;

        if (!ngx_relay_mtasts_match(p, &t->host)) {
            n = ngx_relay_tls_failure(&rt->domain, "mta-sts");

            ngx_log_error(NGX_LOG_WARN, rt->log, 0,
                          "%V: MTA-STS testing: MX host %V is not in the "
                          "policy of %V, it would not be used (failure %ui "
                          "of the domain)", rt->id, &t->host, &rt->domain, n);
        }

        return NGX_OK;
    }

    if (!ngx_relay_mtasts_match(p, &t->host)) {
        n = ngx_relay_tls_failure(&rt->domain, "mta-sts");

        ngx_relay_route_fail(rt, NGX_DECLINED, "4.7.5", "MX host %V is not "
                             "in the MTA-STS policy of %V (tls=verify:"
                             "mta-sts)", &t->host, &rt->domain);
        rt->failed = 0;
        rt->relay = t->host;

        ngx_log_error(NGX_LOG_WARN, rt->log, 0,
                      "%V: MX host %V is not in the MTA-STS policy of %V "
                      "(failure %ui of the domain)", rt->id, &t->host,
                      &rt->domain, n);

        return NGX_DECLINED;
    }

    rt->tls_source = NGX_RELAY_TLS_MTA_STS;
    rt->tls_required = 1;
    rt->tls_verify = 1;

    return NGX_OK;
}


/* what the next call of ngx_relay_route_next() says, and why */

static void
ngx_relay_route_fail(ngx_relay_route_ctx_t *rt, ngx_int_t rc,
    const char *dsn, const char *fmt, ...)
{
    u_char   *p;
    va_list   args;

    va_start(args, fmt);
    p = ngx_vslprintf(rt->text, rt->text + sizeof(rt->text), fmt, args);
    va_end(args);

    rt->error.data = rt->text;
    rt->error.len = p - rt->text;
    rt->dsn = dsn;
    rt->failed = rc;
}


/* whether the current host came from one of the domain's own hops */

ngx_uint_t
ngx_relay_route_own(ngx_relay_route_ctx_t *rt)
{
    return rt->hop <= rt->own_hops;
}


/*
 * Which hop a connection was made for: "[host]:port" or "host:port" (MX),
 * the route's own words.  A cached connection serves the domain only while
 * its hop is still one of the domain's: after a route change, connections
 * to the old next hop are left to idle out.
 */

size_t
ngx_relay_route_hop_id(ngx_relay_route_ctx_t *rt, u_char *buf, size_t len)
{
    if (rt->hop == 0 || rt->hop > rt->hops.nelts) {
        return 0;
    }

    return ngx_relay_route_hop_text(rt,
                                    (ngx_relay_hop_t *) rt->hops.elts
                                    + rt->hop - 1,
                                    buf, len);
}


ngx_uint_t
ngx_relay_route_own_hop(ngx_relay_route_ctx_t *rt, ngx_str_t *id)
{
    u_char            buf[NGX_MAXHOSTNAMELEN + 16];
    size_t            n;
    ngx_uint_t        i;
    ngx_relay_hop_t  *h;

    h = rt->hops.elts;

    for (i = 0; i < rt->own_hops; i++) {
        n = ngx_relay_route_hop_text(rt, &h[i], buf, sizeof(buf));

        if (n == id->len && ngx_strncasecmp(buf, id->data, n) == 0) {
            return 1;
        }
    }

    return 0;
}


static size_t
ngx_relay_route_hop_text(ngx_relay_route_ctx_t *rt, ngx_relay_hop_t *h,
    u_char *buf, size_t len)
{
    return ngx_snprintf(buf, len, h->mx ? "%V:%d" : "[%V]:%d", &h->host,
                        (int) (h->port ? h->port : rt->smtp_port))
           - buf;
}
