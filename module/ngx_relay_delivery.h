
/*
 * Copyright (C) The relay authors
 */


#ifndef _NGX_RELAY_DELIVERY_H_INCLUDED_
#define _NGX_RELAY_DELIVERY_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>
#include <ngx_event_connect.h>
#include <ngx_relay.h>
#include <ngx_relay_parse.h>
#include <ngx_relay_spool.h>
#include <ngx_relay_policy.h>
#include <ngx_relay_dns.h>
#include <ngx_relay_route.h>


#define NGX_RELAY_DELIVERY_PENDING   0
#define NGX_RELAY_DELIVERY_SENT      2
#define NGX_RELAY_DELIVERY_DEFERRED  4
#define NGX_RELAY_DELIVERY_FAILED    5


/*
 * What the SMTP client saw of a recipient's last try, for the accounting
 * record: how long the delivery spent in DNS lookups, connecting, the TLS
 * handshake and the transfer (MAIL to the reply to the end of data), and
 * the TLS of the connection that answered for the recipient.
 */

typedef struct {
    ngx_msec_t                   dns;
    ngx_msec_t                   connect;
    ngx_msec_t                   tls;
    ngx_msec_t                   transfer;
    u_char                       tls_version[16];   /* "": plaintext */
    u_char                       tls_cipher[64];
} ngx_relay_dest_facts_t;


/* the parts of a relay text: "host[ip]:port from address (pool name)" */

typedef struct {
    ngx_str_t                    host;
    ngx_str_t                    ip;
    ngx_str_t                    port;
    ngx_str_t                    egress;       /* "": the system chose */
    ngx_str_t                    pool;
} ngx_relay_relay_parts_t;


typedef struct {
    ngx_uint_t                   index;        /* in the queue file */
    ngx_str_t                    addr;
    ngx_uint_t                   status;       /* NGX_RELAY_DELIVERY_* */
    ngx_uint_t                   accepted;     /* RCPT got 2xx this try */
    unsigned                     skip:1;       /* 4xx from this host */
    unsigned                     soft:1;       /* reply: a 4xx to RCPT */
    unsigned                     reused:1;     /* over a cached connection */
    unsigned                     delayed:1;    /* gets a "delayed" DSN */
    unsigned                     relayed:1;    /* sent to a server without
                                                  DSN: "relayed" DSN */
    unsigned                     local:1;      /* a Maildir delivery */
    time_t                       until;        /* retried until (lifetime) */
    unsigned                     throttled:1;  /* shaped: not an attempt */
    unsigned                     expired:1;    /* past the queue lifetime */
    time_t                       retry_at;     /* throttled: when */
    u_char                       dsn[12];      /* "5.1.1" */
    u_char                       reply[NGX_RELAY_REPLY_TEXT + 8];
    size_t                       reply_len;
    u_char                       relay[NGX_SOCKADDR_STRLEN + 300];
    size_t                       relay_len;
    const char                  *tls;          /* "verify:dane": the host's
                                                  TLS policy and its source */
    ngx_relay_dest_facts_t       facts;
} ngx_relay_dest_t;


/* what the delivery engine needs from the worker */

typedef struct ngx_relay_delivery_conf_s {
    ngx_relay_dns_t             *dns;
    struct ngx_relay_mtasts_s   *mtasts;       /* NULL: MTA-STS off */
    ngx_relay_policy_t          *policy;
    ngx_thread_pool_t           *thread_pool;
    ngx_ssl_t                   *ssl;          /* client side, for STARTTLS */
    ngx_str_t                    hostname;
    ngx_msec_t                   connect_timeout;
    ngx_msec_t                   timeout;
    ngx_log_t                   *log;

    /* connection reuse and per-destination concurrency, per worker */
    ngx_flag_t                   reuse;
    ngx_uint_t                   reuse_limit;  /* messages a connection */
    ngx_msec_t                   idle_timeout;
    ngx_uint_t                   concurrency;  /* deliveries a destination */
    ngx_uint_t                   rcpts_per_txn;
    ngx_queue_t                  dests;        /* ngx_relay_destination_t */
} ngx_relay_delivery_conf_t;


typedef struct ngx_relay_delivery_s  ngx_relay_delivery_t;

typedef void (*ngx_relay_delivery_done_pt)(ngx_relay_delivery_t *d);


/*
 * One delivery attempt of one message to one domain: its recipients in
 * dests[]; on return each is SENT, DEFERRED or FAILED.
 */

ngx_int_t ngx_relay_delivery_start(ngx_relay_delivery_conf_t *dc,
    ngx_fd_t fd, ngx_str_t *file, ngx_relay_queued_t *q, ngx_str_t *domain,
    ngx_relay_dest_t *dests, ngx_uint_t ndests,
    ngx_relay_delivery_done_pt handler, void *data);
void *ngx_relay_delivery_data(ngx_relay_delivery_t *d);
ngx_uint_t ngx_relay_delivery_unreachable(ngx_relay_delivery_t *d);
void ngx_relay_delivery_free(ngx_relay_delivery_t *d);
void ngx_relay_delivery_exit(ngx_relay_delivery_conf_t *dc);
void ngx_relay_delivery_relay_parts(ngx_relay_dest_t *dst,
    ngx_relay_relay_parts_t *parts);


#endif /* _NGX_RELAY_DELIVERY_H_INCLUDED_ */
