
/*
 * Copyright (C) The relay authors
 */


#ifndef _NGX_RELAY_ATTEMPT_H_INCLUDED_
#define _NGX_RELAY_ATTEMPT_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_relay.h>
#include <ngx_relay_spool.h>
#include <ngx_relay_sched.h>


/*
 * One attempt of one message: w is a new message handed over by the spool
 * (its lock held), or NULL for a queued one the schedule found due.  The
 * outcome goes back through ngx_relay_sched_attempted().
 */

ngx_int_t ngx_relay_attempt_start(ngx_relay_sched_t *sc,
    ngx_relay_sched_entry_t *e, ngx_relay_spool_writer_t *w);


#endif /* _NGX_RELAY_ATTEMPT_H_INCLUDED_ */
