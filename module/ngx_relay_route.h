
/*
 * Copyright (C) The relay authors
 */


#ifndef _NGX_RELAY_ROUTE_H_INCLUDED_
#define _NGX_RELAY_ROUTE_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_relay_parse.h>
#include <ngx_relay_policy.h>
#include <ngx_relay_dns.h>
#include <ngx_relay_mtasts.h>


typedef struct ngx_relay_route_ctx_s  ngx_relay_route_ctx_t;


/* where the current host's TLS policy comes from, by precedence */

#define NGX_RELAY_TLS_DEFAULT      0    /* opportunistic (RFC 7435) */
#define NGX_RELAY_TLS_POLICY       1    /* relay_tls_policy, fleet's tls */
#define NGX_RELAY_TLS_MTA_STS      2    /* RFC 8461 enforce */
#define NGX_RELAY_TLS_STS_TESTING  3    /* RFC 8461 testing: log only */
#define NGX_RELAY_TLS_DANE         4    /* RFC 7672 */

typedef void (*ngx_relay_route_handler_pt)(ngx_relay_route_ctx_t *rt);


typedef struct {
    ngx_str_t                    host;
    in_port_t                    port;
    unsigned                     secure:1;     /* from a signed MX answer */
    unsigned                     mx:1;         /* an MX host of the domain */
} ngx_relay_target_t;


/*
 * The route of one delivery, as ngx_resolver_ctx_t is a lookup: the caller
 * fills the first fields, ngx_relay_route_init() the rest.
 */

struct ngx_relay_route_ctx_s {
    ngx_pool_t                  *pool;
    ngx_log_t                   *log;
    ngx_str_t                   *id;           /* the queue id, for logs */
    ngx_relay_dns_t             *dns;
    ngx_str_t                   *hostname;     /* an MX naming it: a loop */
    ngx_relay_mtasts_t          *mtasts;       /* NULL: MTA-STS off */
    ngx_relay_route_handler_pt   handler;      /* a lookup ended */
    void                        *data;

    /*
     * The TLS policy of the current host: the destination's (the fleet's
     * tls, relay_tls_policy), unless DANE or MTA-STS speak for the host.
     * dane: authenticate by tlsa[] (usable DANE-TA and DANE-EE records);
     * tls_required without dane or tls_verify under DANE: the records
     * were unusable, so TLS without authentication (RFC 7672 2.2).
     */
    unsigned                     tls_required:1;
    unsigned                     tls_verify:1;
    unsigned                     dane:1;
    ngx_uint_t                   tls_source;   /* NGX_RELAY_TLS_* */
    ngx_relay_tlsa_t            *tlsa;
    ngx_uint_t                   ntlsa;
    ngx_relay_sts_policy_t      *sts;          /* the domain's MTA-STS */

    /* the address to try, by ngx_relay_route_next() */
    ngx_str_t                    host;
    in_port_t                    port;
    struct sockaddr             *sockaddr;
    socklen_t                    socklen;
    unsigned                     first:1;      /* the host's first address */

    /* why ngx_relay_route_next() said NGX_DECLINED or NGX_ABORT */
    const char                  *dsn;
    ngx_str_t                    error;
    ngx_str_t                    relay;        /* "none" or the host */

    /* private */
    in_port_t                    smtp_port;
    ngx_array_t                  hops;         /* ngx_relay_hop_t */
    ngx_uint_t                   hop;          /* the next one */
    ngx_uint_t                   own_hops;     /* first hops: the domain's */
    ngx_array_t                  targets;      /* ngx_relay_target_t */
    ngx_uint_t                   target;       /* the next one */
    ngx_relay_dns_query_t       *query;
    ngx_int_t                    failed;       /* what the lookup found */
    unsigned                     policy_required:1;  /* the destination's */
    unsigned                     policy_verify:1;
    unsigned                     policy_set:1;
    unsigned                     mx_secure:1;  /* the hop's MX, signed */
    unsigned                     sts_state:2;  /* 0, 1 looking, 2 known */
    ngx_str_t                    domain;

    ngx_sockaddr_t               addrs[NGX_RELAY_DNS_MAX_ADDRS];
    socklen_t                    socklens[NGX_RELAY_DNS_MAX_ADDRS];
    ngx_uint_t                   naddrs;
    ngx_uint_t                   addr;         /* the current one */

    ngx_str_t                    skip_host;    /* a cached connection's */
    in_port_t                    skip_port;
    unsigned                     skip:1;

    u_char                       text[NGX_RELAY_REPLY_TEXT + 64];
};


ngx_int_t ngx_relay_route_init(ngx_relay_route_ctx_t *rt,
    ngx_relay_policy_t *p, ngx_str_t *domain);
ngx_int_t ngx_relay_route_next(ngx_relay_route_ctx_t *rt);
void ngx_relay_route_next_addr(ngx_relay_route_ctx_t *rt);
void ngx_relay_route_next_host(ngx_relay_route_ctx_t *rt);
void ngx_relay_route_skip(ngx_relay_route_ctx_t *rt, ngx_str_t *host,
    in_port_t port);
ngx_uint_t ngx_relay_route_own(ngx_relay_route_ctx_t *rt);
const char *ngx_relay_route_tls_text(ngx_relay_route_ctx_t *rt);
ngx_uint_t ngx_relay_route_own_hop(ngx_relay_route_ctx_t *rt, ngx_str_t *id);
size_t ngx_relay_route_hop_id(ngx_relay_route_ctx_t *rt, u_char *buf,
    size_t len);


#endif /* _NGX_RELAY_ROUTE_H_INCLUDED_ */
