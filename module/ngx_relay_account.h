
/*
 * Copyright (C) The relay authors
 */


#ifndef _NGX_RELAY_ACCOUNT_H_INCLUDED_
#define _NGX_RELAY_ACCOUNT_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_relay.h>
#include <ngx_relay_sched.h>
#include <ngx_relay_delivery.h>
#include <ngx_relay_dsn.h>
#include <relay_queue.h>


/* relay_accounting_log path [buffer=size] [flush=time] | off; */

typedef struct {
    ngx_open_file_t          *file;          /* NULL: off */
    size_t                    buffer;        /* 0: each record at once */
    ngx_msec_t                flush;         /* 0: when the buffer fills */
} ngx_relay_account_conf_t;


char *ngx_relay_account_directive(ngx_conf_t *cf,
    ngx_relay_account_conf_t *acf);
ngx_int_t ngx_relay_account_init_process(ngx_relay_account_conf_t *acf,
    ngx_thread_pool_t *tp, ngx_cycle_t *cycle);
void ngx_relay_account_exit_process(void);


/*
 * The events that make a record: each writes its line (when the log is
 * on) and counts itself in the metrics, called once where it happens.
 */

void ngx_relay_account_received(ngx_connection_t *c, ngx_str_t *id,
    ngx_relay_envelope_t *env, off_t size, uint64_t eod);
void ngx_relay_account_delivery(ngx_relay_sched_t *sc,
    ngx_relay_queued_t *q, ngx_relay_dest_t *dst, ngx_uint_t attempt,
    ngx_uint_t category);
void ngx_relay_account_local(ngx_relay_sched_t *sc, ngx_relay_queued_t *q,
    ngx_relay_queued_rcpt_t *r, ngx_uint_t deferred, const char *reply);
void ngx_relay_account_dsn(ngx_relay_dsn_t *dsn, ngx_str_t *id);
void ngx_relay_account_operator(const char *action, uint64_t command,
    relay_queue_note_t *note, ngx_uint_t affected);


#endif /* _NGX_RELAY_ACCOUNT_H_INCLUDED_ */
