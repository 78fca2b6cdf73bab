
/*
 * Copyright (C) The relay authors
 */


#ifndef _NGX_RELAY_SCHED_H_INCLUDED_
#define _NGX_RELAY_SCHED_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_relay.h>
#include <ngx_relay_spool.h>
#include <ngx_relay_policy.h>


typedef struct {
    ngx_str_t                 name;         /* lowercased */
    ngx_hash_t               *users;        /* NULL: any local part */
} ngx_relay_domain_t;


/* one per worker */

typedef struct {
    ngx_relay_spool_t         spool;
    ngx_str_t                 maildir;      /* with "/" */
    ngx_str_t                 hostname;
    ngx_array_t              *domains;      /* ngx_relay_domain_t */
    struct ngx_relay_delivery_conf_s  *delivery;  /* NULL: keep remote mail */

    ngx_msec_t                scan_interval;
    ngx_event_t               scan_event;
    ngx_uint_t                workers;      /* partition of the queue */
    ngx_uint_t                worker;

    ngx_relay_counters_t     *counters;     /* this worker's, for status */
    struct {
        ngx_uint_t            messages;
        ngx_uint_t            pending;
        ngx_uint_t            deferred;
    } tally;                                /* of the scan in progress */

    ngx_uint_t                busy;         /* delivery tasks in flight */
    ngx_uint_t                scanning;
    ngx_uint_t                rescan;       /* a flush came mid-scan */
    u_char                  **backlog;      /* scanned names still to try */
    ngx_uint_t                nbacklog;
    ngx_uint_t                next;
} ngx_relay_sched_t;


ngx_int_t ngx_relay_sched_init(ngx_relay_sched_t *sc, ngx_cycle_t *cycle);
void ngx_relay_sched_exit(ngx_relay_sched_t *sc);
void ngx_relay_sched_scan_now(ngx_relay_sched_t *sc);
ngx_relay_domain_t *ngx_relay_sched_local_domain(ngx_array_t *domains,
    ngx_str_t *domain);


#endif /* _NGX_RELAY_SCHED_H_INCLUDED_ */
