
/*
 * Copyright (C) The relay authors
 */


#ifndef _NGX_RELAY_LIMITS_H_INCLUDED_
#define _NGX_RELAY_LIMITS_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_relay_redis.h>


#define NGX_RELAY_LIMIT_CLIENT_IP      0
#define NGX_RELAY_LIMIT_AUTH_USER      1
#define NGX_RELAY_LIMIT_SENDER_DOMAIN  2
#define NGX_RELAY_LIMIT_TENANT         3

#define NGX_RELAY_LIMIT_MESSAGES       0
#define NGX_RELAY_LIMIT_RECIPIENTS     1

/* where a limit counts: the policy's LimitScope */
#define NGX_RELAY_LIMIT_NODE           0
#define NGX_RELAY_LIMIT_FLEET          1

/* relay_limit_redis_fallback: fleet limits while Redis is away */
#define NGX_RELAY_LIMIT_FALLBACK_LOCAL     0
#define NGX_RELAY_LIMIT_FALLBACK_TEMPFAIL  1
#define NGX_RELAY_LIMIT_FALLBACK_ACCEPT    2

#define NGX_RELAY_LIMIT_MAX_SHARED     8      /* fleet rules of one check */


/* the relay_limit_redis* directives */

typedef struct {
    ngx_relay_redis_conf_t    redis;         /* redis.addrs NULL: none */
    ngx_str_t                 prefix;        /* of every key */
    ngx_uint_t                fallback;
    ngx_uint_t                nodes;         /* "local" divides by this */
} ngx_relay_limits_conf_t;


/* "inbound_limit client_ip 10.0.0.0/8 window=1m messages=100;" */

typedef struct {
    ngx_uint_t                key;           /* NGX_RELAY_LIMIT_* */
    ngx_str_t                 match;         /* "*", CIDR, user, domain */
    ngx_cidr_t                cidr;          /* client_ip */
    time_t                    window;
    ngx_uint_t                messages;      /* 0: unlimited */
    ngx_uint_t                recipients;
    ngx_uint_t                scope;         /* NGX_RELAY_LIMIT_NODE, FLEET */
    uint32_t                  id;            /* of key, match and scope */
} ngx_relay_limit_t;


/* who is asking: the facts a rule can match */

typedef struct {
    struct sockaddr          *sockaddr;
    ngx_str_t                 client;        /* address text, for logs */
    ngx_str_t                 user;          /* "": not authenticated */
    ngx_str_t                 sender;        /* the envelope sender */
    ngx_str_t                 tenant;        /* "": the listener has none */
} ngx_relay_limit_who_t;


/* a fleet rule that applies to a check: its counter, copied */

typedef struct {
    uint32_t                  id;
    ngx_uint_t                key;
    time_t                    window;
    ngx_uint_t                limit;
    ngx_str_t                 match;         /* into the check's buf[] */
    ngx_str_t                 value;
} ngx_relay_limit_shared_t;


/* a node counter a check took, given back when a fleet rule refuses */

typedef struct {
    uint64_t                  key;
    time_t                    expires;
} ngx_relay_limit_taken_t;


typedef struct ngx_relay_limit_check_s  ngx_relay_limit_check_t;

typedef void (*ngx_relay_limit_done_pt)(ngx_relay_limit_check_t *lc);

/*
 * One check of a message or a recipient against the limits; the caller
 * fills the first fields.  rc: NGX_OK (counted), NGX_DECLINED (a limit is
 * reached; why says which) or NGX_BUSY (fleet counters unavailable and
 * relay_limit_redis_fallback tempfail).
 */

struct ngx_relay_limit_check_s {
    ngx_relay_limit_who_t     who;
    ngx_uint_t                what;          /* NGX_RELAY_LIMIT_MESSAGES.. */
    ngx_relay_limit_done_pt   handler;       /* after NGX_AGAIN */
    void                     *data;
    ngx_log_t                *log;

    ngx_int_t                 rc;
    u_char                    why[512];

    /* private */
    ngx_shm_zone_t           *zone;
    ngx_relay_limits_conf_t  *conf;
    ngx_uint_t                ntaken;
    ngx_relay_limit_taken_t   taken[NGX_RELAY_LIMIT_MAX_SHARED * 4];
    ngx_uint_t                nshared;
    ngx_relay_limit_shared_t  shared[NGX_RELAY_LIMIT_MAX_SHARED];
    u_char                    buf[2048];     /* match and value texts */
};


ngx_uint_t ngx_relay_pattern_match(ngx_str_t *pattern, ngx_str_t *s);
ngx_int_t ngx_relay_limit_init(ngx_relay_limit_t *l, ngx_uint_t key,
    ngx_str_t *match, ngx_uint_t scope);
ngx_int_t ngx_relay_limits_add_zone(ngx_conf_t *cf, size_t size,
    ngx_shm_zone_t **zone, void *tag);

/*
 * Counts one message or recipient against every rule that matches (the
 * fleet policy's first; nginx.conf's unless the fleet policy has the same
 * key and match): node rules in the zone, fleet rules in Redis, or by the
 * fallback.  Returns lc->rc, or NGX_AGAIN: Redis answers, lc->handler
 * runs with lc->rc set (within relay_limit_redis_timeout).
 */
ngx_int_t ngx_relay_limits_check(ngx_relay_limit_check_t *lc,
    ngx_shm_zone_t *zone, ngx_relay_limits_conf_t *conf, ngx_array_t *fleet,
    ngx_array_t *local);

/* this worker's Redis connection, when nginx.conf has relay_limit_redis */
ngx_int_t ngx_relay_limits_init_process(ngx_relay_limits_conf_t *conf,
    ngx_log_t *log);
void ngx_relay_limits_exit_process(void);


/*
 * Outbound shaping of a destination (a pool and a domain), shared by the
 * workers: connections open, connections and messages started this minute,
 * and a slow mode after a reply asked for it.  NGX_BUSY: not now, try
 * again in *wait milliseconds.
 */

typedef struct {
    ngx_uint_t                connections;   /* 0: no limit */
    ngx_uint_t                connections_per_minute;
    ngx_uint_t                messages_per_minute;
    ngx_uint_t                messages_per_hour;
} ngx_relay_shape_limits_t;

ngx_int_t ngx_relay_shape_init_worker(ngx_shm_zone_t *zone);
ngx_int_t ngx_relay_shape_connect(ngx_shm_zone_t *zone, ngx_str_t *key,
    ngx_relay_shape_limits_t *l, ngx_msec_t *wait);
void ngx_relay_shape_disconnect(ngx_shm_zone_t *zone, ngx_str_t *key);
ngx_int_t ngx_relay_shape_message(ngx_shm_zone_t *zone, ngx_str_t *key,
    ngx_relay_shape_limits_t *l, ngx_msec_t *wait, ngx_uint_t *slow);
void ngx_relay_shape_slow_down(ngx_shm_zone_t *zone, ngx_str_t *key,
    time_t seconds);


/*
 * A destination's messages per minute and hour counted across the fleet,
 * in Redis: per egress pool, or per source address of the pool (the
 * first address in egress[] order below its limits is the one counted,
 * egress_next).  Slow mode is the node's, as are connections.
 */

typedef struct ngx_relay_shape_check_s  ngx_relay_shape_check_t;

typedef void (*ngx_relay_shape_done_pt)(ngx_relay_shape_check_t *sc);

struct ngx_relay_shape_check_s {
    ngx_str_t                 key;           /* "pool/domain" in the zone */
    ngx_str_t                 domain;
    ngx_str_t                 pool;          /* "": none */
    ngx_addr_t               *egress;        /* per address: candidates */
    ngx_uint_t                negress;       /* 0: per pool */
    ngx_relay_shape_limits_t  limits;
    ngx_shm_zone_t           *zone;
    ngx_relay_limits_conf_t  *conf;
    ngx_relay_shape_done_pt   handler;       /* after NGX_AGAIN */
    void                     *data;
    ngx_log_t                *log;

    ngx_int_t                 rc;            /* NGX_OK, NGX_BUSY */
    ngx_msec_t                wait;
    ngx_uint_t                slow;
    ngx_uint_t                egress_next;   /* per address: counted on */
};

ngx_int_t ngx_relay_shape_fleet(ngx_relay_shape_check_t *sc);


#endif /* _NGX_RELAY_LIMITS_H_INCLUDED_ */
