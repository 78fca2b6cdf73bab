
/*
 * Copyright (C) The relay authors
 */


#ifndef _NGX_RELAY_DESTINATION_H_INCLUDED_
#define _NGX_RELAY_DESTINATION_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>
#include <ngx_relay_spool.h>
#include <ngx_relay_policy.h>
#include <ngx_relay_limits.h>
#include <ngx_relay_route.h>


/* a destination in this worker: its deliveries and idle connections */

typedef struct {
    ngx_queue_t                  queue;        /* in the worker's list */
    ngx_str_t                    name;         /* "pool/domain" or domain */
    ngx_uint_t                   active;
    ngx_uint_t                   idle;
    ngx_queue_t                  conns;        /* idle ngx_relay_smtp_conn_t */
    ngx_queue_t                  waiting;      /* ngx_relay_destination_ctx_t */
} ngx_relay_destination_t;


/* an SMTP connection, which may outlive its delivery in the idle cache */

typedef struct {
    ngx_queue_t                  queue;        /* in dest->conns */
    ngx_pool_t                  *pool;         /* the connection's */
    ngx_connection_t            *connection;
    ngx_relay_destination_t     *dest;
    ngx_shm_zone_t              *zone;         /* shaping counters */
    ngx_str_t                    host;
    in_port_t                    port;
    ngx_buf_t                   *in;
    ngx_buf_t                   *out;
    ngx_uint_t                   messages;
    off_t                        size_limit;
    unsigned                     own:1;        /* one of the domain's hosts */
    unsigned                     esmtp:1;
    unsigned                     smtputf8:1;
    unsigned                     eightbit:1;
    unsigned                     starttls:1;
    unsigned                     tls:1;
    unsigned                     pipelining:1;
    unsigned                     dsn:1;
    unsigned                     chunking:1;
    unsigned                     binarymime:1;
    unsigned                     verified:1;   /* chain and name checked */
    unsigned                     shaped:1;     /* counted as open */
    ngx_str_t                    shape_key;
    ngx_str_t                    egress;       /* source address; "" */
    ngx_str_t                    hop;          /* ngx_relay_route_hop_id() */
    u_char                       relay[NGX_SOCKADDR_STRLEN + 300];
    size_t                       relay_len;
} ngx_relay_smtp_conn_t;


typedef struct ngx_relay_destination_ctx_s  ngx_relay_destination_ctx_t;

typedef void (*ngx_relay_destination_handler_pt)(
    ngx_relay_destination_ctx_t *ds);


/*
 * One delivery at its destination.  The caller fills the first fields,
 * the defaults too (nginx.conf's); ngx_relay_destination_init() applies
 * the policy: the egress pool and the destination's limits.
 */

struct ngx_relay_destination_ctx_s {
    ngx_pool_t                       *pool;
    ngx_log_t                        *log;
    ngx_relay_destination_handler_pt  handler;      /* its turn came */
    ngx_relay_destination_handler_pt  shaped;       /* fleet counted:
                                                       fleet_check.rc */
    void                             *data;
    ngx_flag_t                        reuse;        /* cache connections */
    ngx_msec_t                        idle_timeout;

    ngx_str_t                         ehlo;         /* the pool's, or ours */
    ngx_uint_t                        concurrency;  /* deliveries at once */
    ngx_uint_t                        reuse_limit;  /* messages a conn */

    ngx_str_t                         key;          /* "pool/domain" or
                                                       the domain */
    ngx_str_t                         egress_pool;  /* "": none */

    /* private */
    ngx_str_t                        *id;           /* queue id, for logs */
    ngx_relay_destination_t          *dest;
    ngx_addr_t                       *egress;       /* weighted random
                                                       order */
    ngx_uint_t                        negress;
    ngx_uint_t                        egress_next;  /* the address in use */
    ngx_shm_zone_t                   *zone;
    ngx_relay_shape_limits_t          shape;
    ngx_str_t                         domain;
    ngx_relay_limits_conf_t          *limits;       /* relay_limit_redis */
    ngx_relay_shape_check_t           fleet_check;
    unsigned                          fleet:1;      /* scope fleet */
    unsigned                          per_address:1;
    unsigned                          pinned:1;     /* to egress_next */
    ngx_str_t                         backoff_reply;
    time_t                            backoff;
    ngx_queue_t                       wait;         /* in dest->waiting */
    ngx_event_t                       wake;
};


ngx_int_t ngx_relay_destination_init(ngx_relay_destination_ctx_t *ds,
    ngx_relay_policy_t *p, ngx_relay_queued_t *q, ngx_str_t *domain);
ngx_int_t ngx_relay_destination_message(ngx_relay_destination_ctx_t *ds,
    ngx_msec_t *wait, ngx_uint_t *slow);
ngx_int_t ngx_relay_destination_enter(ngx_relay_destination_ctx_t *ds,
    ngx_queue_t *dests);
void ngx_relay_destination_leave(ngx_relay_destination_ctx_t *ds);

ngx_int_t ngx_relay_destination_egress(ngx_relay_destination_ctx_t *ds,
    ngx_addr_t **local);
void ngx_relay_destination_egress_failed(ngx_relay_destination_ctx_t *ds);
ngx_int_t ngx_relay_destination_connect(ngx_relay_destination_ctx_t *ds,
    ngx_msec_t *wait);
void ngx_relay_destination_disconnect(ngx_relay_destination_ctx_t *ds);
void ngx_relay_destination_backoff_reply(ngx_relay_destination_ctx_t *ds,
    ngx_uint_t code, u_char *text, size_t len);

ngx_relay_smtp_conn_t *ngx_relay_destination_conn(
    ngx_relay_destination_ctx_t *ds, ngx_connection_t *c, ngx_str_t *host,
    in_port_t port);
ngx_relay_smtp_conn_t *ngx_relay_destination_cached(
    ngx_relay_destination_ctx_t *ds, ngx_relay_route_ctx_t *rt,
    ngx_str_t *host, in_port_t port);
void ngx_relay_destination_release(ngx_relay_destination_ctx_t *ds,
    ngx_relay_smtp_conn_t *sc);
void ngx_relay_destination_close(ngx_relay_smtp_conn_t *sc, ngx_uint_t quit);
void ngx_relay_destination_exit(ngx_queue_t *dests);


#endif /* _NGX_RELAY_DESTINATION_H_INCLUDED_ */
