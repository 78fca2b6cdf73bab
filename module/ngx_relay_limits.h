
/*
 * Copyright (C) The relay authors
 */


#ifndef _NGX_RELAY_LIMITS_H_INCLUDED_
#define _NGX_RELAY_LIMITS_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>


#define NGX_RELAY_LIMIT_CLIENT_IP      0
#define NGX_RELAY_LIMIT_AUTH_USER      1
#define NGX_RELAY_LIMIT_SENDER_DOMAIN  2

#define NGX_RELAY_LIMIT_MESSAGES       0
#define NGX_RELAY_LIMIT_RECIPIENTS     1


/* "inbound_limit client_ip 10.0.0.0/8 window=1m messages=100;" */

typedef struct {
    ngx_uint_t                key;           /* NGX_RELAY_LIMIT_* */
    ngx_str_t                 match;         /* "*", CIDR, user, domain */
    ngx_cidr_t                cidr;          /* client_ip */
    time_t                    window;
    ngx_uint_t                messages;      /* 0: unlimited */
    ngx_uint_t                recipients;
    uint32_t                  id;            /* of key and match */
} ngx_relay_limit_t;


/* who is asking: the facts a rule can match */

typedef struct {
    struct sockaddr          *sockaddr;
    ngx_str_t                 client;        /* address text, for logs */
    ngx_str_t                 user;          /* "": not authenticated */
    ngx_str_t                 sender;        /* the envelope sender */
} ngx_relay_limit_who_t;


ngx_uint_t ngx_relay_pattern_match(ngx_str_t *pattern, ngx_str_t *s);
ngx_int_t ngx_relay_limit_init(ngx_relay_limit_t *l, ngx_uint_t key,
    ngx_str_t *match);
ngx_int_t ngx_relay_limits_add_zone(ngx_conf_t *cf, size_t size,
    ngx_shm_zone_t **zone, void *tag);

/*
 * Counts one message or recipient against every rule that matches (the
 * fleet's first; nginx.conf's unless the fleet has the same key and
 * match).  NGX_OK: counted; NGX_DECLINED: a rule is exhausted, nothing
 * counted, and why[] says which for the log.
 */
ngx_int_t ngx_relay_limits_count(ngx_shm_zone_t *zone, ngx_array_t *fleet,
    ngx_array_t *local, ngx_relay_limit_who_t *who, ngx_uint_t what,
    u_char *why, size_t len);


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


#endif /* _NGX_RELAY_LIMITS_H_INCLUDED_ */
