
/*
 * Copyright (C) The relay authors
 */


#ifndef _NGX_RELAY_POLICY_H_INCLUDED_
#define _NGX_RELAY_POLICY_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_relay_limits.h>
#include <relay_policy.h>


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


typedef struct {
    ngx_str_t                 pattern;
    time_t                    backoff_min;
    time_t                    backoff_max;
    time_t                    lifetime;
    time_t                    delay_warning;  /* 0: none */
} ngx_relay_retry_t;


/* egress: named pools of source addresses, each with its EHLO name */

#define NGX_RELAY_EGRESS_SENDER_DOMAIN  0
#define NGX_RELAY_EGRESS_AUTH_USER      1
#define NGX_RELAY_EGRESS_TENANT         2

#define NGX_RELAY_EGRESS_MAX            32

typedef struct {
    ngx_addr_t                addr;          /* port 0 */
    ngx_uint_t                weight;
} ngx_relay_egress_addr_t;

typedef struct {
    ngx_str_t                 name;
    ngx_str_t                 ehlo;
    ngx_array_t               addrs;         /* ngx_relay_egress_addr_t */
} ngx_relay_egress_pool_t;

typedef struct {
    ngx_uint_t                key;           /* NGX_RELAY_EGRESS_* */
    ngx_str_t                 match;         /* "*", domain, .domain, name */
    ngx_str_t                 pool;
} ngx_relay_egress_rule_t;


/* outbound shaping of a destination (the recipient's domain) */

typedef struct {
    ngx_str_t                 pattern;       /* first: a route-like list */
    ngx_uint_t                connections;   /* 0: the default */
    ngx_uint_t                messages_per_connection;
    ngx_uint_t                messages_per_minute;
    ngx_uint_t                messages_per_hour;
    ngx_uint_t                connections_per_minute;
    ngx_str_t                 backoff_reply; /* "": none */
    time_t                    backoff;
    ngx_uint_t                scope;         /* NGX_RELAY_LIMIT_NODE, FLEET */
    ngx_uint_t                per_address;   /* fleet: per source address */
} ngx_relay_dest_limit_t;


/* outbound TLS of a destination: "tls" and relay_tls_policy */

typedef struct {
    ngx_str_t                 pattern;       /* first: a route-like list */
    ngx_uint_t                required;
    ngx_uint_t                verify;
} ngx_relay_tls_rule_t;


/*
 * The fleet policy in shared memory: the packed protobuf snapshot that
 * controld sent, written by the one worker that holds the control stream
 * under a sequence lock (odd while being written) and copied out by every
 * worker when the sequence moves.  A worker that dies while writing leaves
 * the sequence odd; readers then keep their copy and the next write
 * repairs it.
 */

typedef struct {
    ngx_atomic_t              seq;
    uint64_t                  version;
    size_t                    len;
    size_t                    size;          /* room in data[] */
    time_t                    started;
    u_char                    data[1];
} ngx_relay_policy_shm_t;


/*
 * A policy in the shape lookups read, built from a Policy message by one
 * builder: nginx.conf's (built once, at configuration time) and this
 * worker's copy of the fleet's (rebuilt when the snapshot changes).
 */

typedef struct {
    uint64_t                  version;       /* the fleet's; 0: nginx.conf */
    ngx_pool_t               *pool;
    ngx_array_t              *routes;        /* ngx_relay_route_t */
    ngx_array_t              *backup_mx;     /* ngx_relay_route_t */
    ngx_array_t              *fallback;      /* one ngx_relay_route_t "*" */
    ngx_array_t              *retry;         /* ngx_relay_retry_t */
    ngx_array_t              *limits;        /* ngx_relay_limit_t */
    ngx_array_t              *pools;         /* ngx_relay_egress_pool_t */
    ngx_array_t              *rules;         /* ngx_relay_egress_rule_t */
    ngx_array_t              *dest_limits;   /* ngx_relay_dest_limit_t */
    ngx_array_t              *tls;           /* ngx_relay_tls_rule_t */
    ngx_array_t              *dkim;          /* ngx_relay_dkim_key_t */
    size_t                    dkim_reserve;  /* room a message's fields
                                                need */
} ngx_relay_rules_t;


/*
 * relay_retry_backoff, relay_queue_lifetime and relay_delay_warning: the
 * words of nginx.conf's "retry *" statement, as written ("": the default),
 * and where the last of them stands, for its errors.
 */

typedef struct {
    ngx_str_t                 min;           /* relay_retry_backoff's two */
    ngx_str_t                 max;
    ngx_str_t                 lifetime;
    ngx_str_t                 delay_warning;
    ngx_str_t                 directive;
    ngx_str_t                 file;
    ngx_uint_t                line;
} ngx_relay_retry_conf_t;


/*
 * The policy: nginx.conf's directives that mirror policy statements make
 * one Policy message (conf) as they are read, built into local at the end
 * of the stream block; the fleet policy from controld, when a control zone
 * is configured, overrides it per domain.
 */

typedef struct {
    relay_policy_t           *conf;          /* until built; malloc()ed */
    ngx_relay_retry_conf_t    retry;
    ngx_relay_rules_t        *local;         /* nginx.conf's */
    in_port_t                 smtp_port;
    ngx_shm_zone_t           *limits_zone;   /* counters; NULL: no limits */
    ngx_relay_limits_conf_t   limits;        /* fleet scope: Redis */
    ngx_str_t                 fleet_directive; /* the first scope=fleet */
    ngx_str_t                 fleet_file;
    ngx_uint_t                fleet_line;

    ngx_shm_zone_t           *zone;          /* NULL: no controld */
    ngx_relay_rules_t        *fleet;         /* this worker's copy */
    ngx_atomic_uint_t         seen_seq;
    u_char                   *copy;          /* scratch for the snapshot */
} ngx_relay_policy_t;


/* configuration: the directives and the end of the stream block */
char *ngx_relay_policy_directive(ngx_conf_t *cf, ngx_relay_policy_t *p,
    char *statement);
char *ngx_relay_policy_retry_directive(ngx_conf_t *cf, ngx_relay_policy_t *p);
ngx_int_t ngx_relay_policy_init_conf(ngx_conf_t *cf, ngx_relay_policy_t *p);

ngx_relay_route_t *ngx_relay_policy_route(ngx_array_t *routes,
    ngx_str_t *domain);

/* lookups: the fleet policy first, then nginx.conf */
ngx_relay_route_t *ngx_relay_policy_next_hops(ngx_relay_policy_t *p,
    ngx_str_t *domain);
ngx_relay_route_t *ngx_relay_policy_backup(ngx_relay_policy_t *p,
    ngx_str_t *domain);
ngx_relay_route_t *ngx_relay_policy_fallback(ngx_relay_policy_t *p);
void ngx_relay_policy_retry(ngx_relay_policy_t *p, ngx_str_t *domain,
    ngx_relay_retry_t *retry);
time_t ngx_relay_policy_backoff(ngx_relay_retry_t *retry,
    ngx_uint_t attempts);
uint64_t ngx_relay_policy_version(ngx_relay_policy_t *p);
ngx_relay_egress_pool_t *ngx_relay_policy_egress(ngx_relay_policy_t *p,
    ngx_str_t *sender, ngx_str_t *auth, ngx_str_t *tenant);
ngx_uint_t ngx_relay_egress_order(ngx_relay_egress_pool_t *pool,
    ngx_uint_t *order);
ngx_relay_dest_limit_t *ngx_relay_policy_dest_limit(ngx_relay_policy_t *p,
    ngx_str_t *domain);
ngx_relay_tls_rule_t *ngx_relay_policy_tls(ngx_relay_policy_t *p,
    ngx_str_t *domain);
ngx_array_t *ngx_relay_policy_dkim(ngx_relay_policy_t *p, ngx_str_t *domain);
size_t ngx_relay_policy_dkim_reserve(ngx_relay_policy_t *p);
ngx_int_t ngx_relay_policy_limit(ngx_relay_policy_t *p,
    ngx_relay_limit_check_t *lc);

ngx_relay_policy_shm_t *ngx_relay_policy_shm(ngx_relay_policy_t *p);
void ngx_relay_policy_publish(ngx_relay_policy_shm_t *shm, uint64_t version,
    u_char *data, size_t len);
char **ngx_relay_policy_pool_names(ngx_relay_policy_t *p, size_t *n);
ngx_int_t ngx_relay_policy_load_file(ngx_relay_policy_shm_t *shm,
    ngx_str_t *path, ngx_relay_policy_t *p, const relay_scope_node_t *node,
    ngx_log_t *log);


#endif /* _NGX_RELAY_POLICY_H_INCLUDED_ */
