
/*
 * Copyright (C) The relay authors
 */


#ifndef _NGX_RELAY_POLICY_H_INCLUDED_
#define _NGX_RELAY_POLICY_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_relay_limits.h>


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


/* per-worker counters summed into the node's status for controld */

typedef struct {
    ngx_atomic_t              messages;      /* in queue/, by the last scan */
    ngx_atomic_t              pending;       /* recipients */
    ngx_atomic_t              deferred;      /* messages tried before */
    ngx_atomic_t              accepted;      /* totals since start */
    ngx_atomic_t              delivered;
    ngx_atomic_t              deferrals;
    ngx_atomic_t              bounced;
    ngx_atomic_t              limited;
} ngx_relay_counters_t;

#define NGX_RELAY_MAX_WORKERS   64


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
    ngx_atomic_t              kick;          /* bumped: every worker scans */
    uint64_t                  version;
    size_t                    len;
    size_t                    size;          /* room in data[] */
    time_t                    started;
    ngx_relay_counters_t      counters[NGX_RELAY_MAX_WORKERS];
    u_char                    data[1];
} ngx_relay_policy_shm_t;


/* a worker's copy of the fleet policy, rebuilt when the snapshot changes */

typedef struct {
    uint64_t                  version;
    ngx_pool_t               *pool;
    ngx_array_t              *routes;        /* ngx_relay_route_t */
    ngx_array_t              *backup_mx;     /* ngx_relay_route_t */
    ngx_array_t              *fallback;      /* one ngx_relay_route_t "*" */
    ngx_array_t              *retry;         /* ngx_relay_retry_t */
    ngx_array_t              *limits;        /* ngx_relay_limit_t */
} ngx_relay_fleet_t;


/*
 * The policy: static from nginx.conf, overridden per domain by the fleet
 * policy from controld when a control zone is configured.
 */

typedef struct {
    ngx_array_t              *routes;        /* ngx_relay_route_t */
    ngx_array_t              *backup_mx;     /* ngx_relay_route_t */
    ngx_array_t              *fallback;      /* ngx_relay_route_t "*" */
    in_port_t                 smtp_port;
    time_t                    backoff_min;
    time_t                    backoff_max;
    time_t                    lifetime;
    ngx_array_t              *limits;        /* ngx_relay_limit_t */
    ngx_shm_zone_t           *limits_zone;   /* counters; NULL: no limits */

    ngx_shm_zone_t           *zone;          /* NULL: no controld */
    ngx_relay_fleet_t        *fleet;         /* this worker's copy */
    ngx_atomic_uint_t         seen_seq;
    u_char                   *copy;          /* scratch for the snapshot */
} ngx_relay_policy_t;


ngx_relay_route_t *ngx_relay_policy_route(ngx_array_t *routes,
    ngx_str_t *domain);
char *ngx_relay_policy_parse_route(ngx_conf_t *cf, ngx_array_t **routes,
    ngx_uint_t hops_only);
ngx_int_t ngx_relay_policy_parse_hop(ngx_str_t *s, ngx_relay_hop_t *h);

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
ngx_int_t ngx_relay_policy_limit(ngx_relay_policy_t *p,
    ngx_relay_limit_who_t *who, ngx_uint_t what, u_char *why, size_t len);

ngx_relay_policy_shm_t *ngx_relay_policy_shm(ngx_relay_policy_t *p);
ngx_relay_counters_t *ngx_relay_policy_counters(ngx_relay_policy_t *p);
void ngx_relay_policy_publish(ngx_relay_policy_shm_t *shm, uint64_t version,
    u_char *data, size_t len);
ngx_int_t ngx_relay_policy_load_file(ngx_relay_policy_shm_t *shm,
    ngx_str_t *path, ngx_log_t *log);


#endif /* _NGX_RELAY_POLICY_H_INCLUDED_ */
