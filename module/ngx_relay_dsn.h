
/*
 * Copyright (C) The relay authors
 */


#ifndef _NGX_RELAY_DSN_H_INCLUDED_
#define _NGX_RELAY_DSN_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_relay.h>
#include <ngx_relay_spool.h>
#include <ngx_relay_delivery.h>


/* the kinds of report (RFC 3464 2.3.3 Action) */
#define NGX_RELAY_DSN_FAILED      0
#define NGX_RELAY_DSN_DELAYED     1
#define NGX_RELAY_DSN_SUCCESS     2       /* "delivered" or "relayed" */


/* one report: the recipients of dests[] that it concerns */

typedef struct {
    ngx_relay_spool_t           *spool;       /* where the report goes */
    ngx_str_t                    hostname;    /* Reporting-MTA */
    ngx_array_t                 *domains;     /* local: is the sender? */
    ngx_relay_queued_t          *queued;      /* the message reported on */
    ngx_relay_dest_t            *dests;
    ngx_uint_t                   ndests;
    u_char                      *original;    /* header or whole message */
    size_t                       original_len;
    ngx_uint_t                   kind;        /* NGX_RELAY_DSN_* */
} ngx_relay_dsn_t;


ngx_uint_t ngx_relay_dsn_wants_failure(ngx_uint_t notify);
ngx_uint_t ngx_relay_dsn_reported(ngx_relay_queued_t *q,
    ngx_relay_dest_t *dst, ngx_uint_t kind);
ngx_int_t ngx_relay_dsn_send(ngx_relay_dsn_t *dsn);

/* thread-safe: what the report returns of the message, malloc()ed */
void ngx_relay_dsn_read_original(ngx_fd_t fd, ngx_relay_queued_t *q,
    u_char **out, size_t *out_len);


#endif /* _NGX_RELAY_DSN_H_INCLUDED_ */
