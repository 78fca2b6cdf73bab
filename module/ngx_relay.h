
/*
 * Copyright (C) The relay authors
 */


/*
 * Types shared by the engine files (spool, maildir, auth) and the stream
 * glue: queue ids, envelope, reply helpers.  Engine files never include
 * ngx_stream.h.
 */


#ifndef _NGX_RELAY_H_INCLUDED_
#define _NGX_RELAY_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_thread_pool.h>


#define NGX_RELAY_ID_LEN          32      /* longest queue id, no NUL */
#define NGX_RELAY_MAX_ADDR        512     /* longest address we store */

/* recipient states, one byte in the queue file, rewritten in place */
#define NGX_RELAY_RCPT_PENDING    'P'
#define NGX_RELAY_RCPT_DONE       'D'
#define NGX_RELAY_RCPT_FAILED     'F'
#define NGX_RELAY_RCPT_BOUNCE     'B'     /* an operator's bounce */


typedef struct {
    ngx_str_t                 addr;        /* local@domain, as accepted */
    ngx_str_t                 orcpt;       /* RFC 3461 ORCPT or empty */
    ngx_uint_t                notify;      /* NGX_RELAY_NOTIFY_* bits */
    unsigned                  local:1;     /* in a local domain */
} ngx_relay_rcpt_t;


/* what goes to disk with the message; built by the session */

typedef struct {
    ngx_str_t                 sender;      /* empty for "<>" */
    ngx_array_t               rcpts;       /* ngx_relay_rcpt_t */
    ngx_str_t                 client;      /* client address text */
    ngx_str_t                 helo;
    ngx_str_t                 auth_user;   /* empty when not authenticated */
    ngx_str_t                 tenant;      /* relay_tenant of the listener */
    ngx_str_t                 envid;
    ngx_uint_t                ret;         /* NGX_RELAY_RET_* */
    ngx_uint_t                body;        /* NGX_RELAY_BODY_* */
    time_t                    arrival;
    unsigned                  smtputf8:1;
} ngx_relay_envelope_t;


ngx_int_t ngx_relay_recv(ngx_connection_t *c, ngx_buf_t *b);
ngx_int_t ngx_relay_tls_start(ngx_connection_t *c, ngx_ssl_t *ssl,
    ngx_msec_t timeout, ngx_connection_handler_pt handler);
ngx_int_t ngx_relay_send(ngx_connection_t *c, ngx_buf_t *b,
    ngx_msec_t timeout);
u_char *ngx_relay_date(u_char *p, time_t t);


#endif /* _NGX_RELAY_H_INCLUDED_ */
