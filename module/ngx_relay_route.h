
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


typedef struct ngx_relay_route_ctx_s  ngx_relay_route_ctx_t;

typedef void (*ngx_relay_route_handler_pt)(ngx_relay_route_ctx_t *rt);


typedef struct {
    ngx_str_t                    host;
    in_port_t                    port;
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
    ngx_relay_route_handler_pt   handler;      /* a lookup ended */
    void                        *data;

    /* the TLS policy of the destination: what every host must offer */
    unsigned                     tls_required:1;
    unsigned                     tls_verify:1;

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
ngx_uint_t ngx_relay_route_own_hop(ngx_relay_route_ctx_t *rt, ngx_str_t *id);
size_t ngx_relay_route_hop_id(ngx_relay_route_ctx_t *rt, u_char *buf,
    size_t len);


#endif /* _NGX_RELAY_ROUTE_H_INCLUDED_ */
