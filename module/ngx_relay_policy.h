
/*
 * Copyright (C) The relay authors
 */


#ifndef _NGX_RELAY_POLICY_H_INCLUDED_
#define _NGX_RELAY_POLICY_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>


/* a next hop: "[host]:port" (no MX lookup) or "host:port" (MX of host) */

typedef struct {
    ngx_str_t                 host;
    in_port_t                 port;          /* 0: relay_smtp_port */
    unsigned                  mx:1;          /* look up MX of host */
} ngx_relay_hop_t;


typedef struct {
    ngx_str_t                 pattern;       /* "example.com", ".sub", "*" */
    ngx_array_t               hops;          /* ngx_relay_hop_t */
} ngx_relay_route_t;


/* the static policy from nginx.conf; the control plane will override it */

typedef struct {
    ngx_array_t              *routes;        /* ngx_relay_route_t */
    ngx_array_t              *backup_mx;     /* ngx_relay_route_t */
    ngx_array_t              *fallback;      /* ngx_relay_hop_t */
    in_port_t                 smtp_port;
    time_t                    backoff_min;
    time_t                    backoff_max;
    time_t                    lifetime;
} ngx_relay_policy_t;


ngx_relay_route_t *ngx_relay_policy_route(ngx_array_t *routes,
    ngx_str_t *domain);
char *ngx_relay_policy_parse_route(ngx_conf_t *cf, ngx_array_t **routes,
    ngx_uint_t hops_only);
time_t ngx_relay_policy_backoff(ngx_relay_policy_t *p, ngx_uint_t attempts);


#endif /* _NGX_RELAY_POLICY_H_INCLUDED_ */
