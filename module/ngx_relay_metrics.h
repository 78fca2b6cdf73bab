
/*
 * Copyright (C) The relay authors
 */


#ifndef _NGX_RELAY_METRICS_H_INCLUDED_
#define _NGX_RELAY_METRICS_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <relay_classify.h>


/* processes with gauges of their own (their slots in the zone) */

#define NGX_RELAY_METRICS_PROCS        128


/* a process's destinations with the most mail, for the node's status */

#define NGX_RELAY_TOP_DESTS            8

typedef struct {
    u_char                    name[64];      /* "": unused; cut to fit */
    uint32_t                  messages;
    uint32_t                  unreachable;
} ngx_relay_dest_figure_t;


/* the states of queued messages, as the queue gauges count them */

#define NGX_RELAY_QUEUE_NEW            0     /* never tried */
#define NGX_RELAY_QUEUE_DEFERRED       1     /* tried, waiting */
#define NGX_RELAY_QUEUE_ACTIVE         2     /* an attempt holds it */
#define NGX_RELAY_QUEUE_HELD           3     /* by an operator */
#define NGX_RELAY_QUEUE_PARKED         4     /* destination unreachable */
#define NGX_RELAY_QUEUE_STATES         5


/*
 * The live figures of one process's schedule, written by the schedule as
 * its messages change state (ngx_relay_sched.c) and read by the node's
 * status (ngx_relay_control.c) and the queue gauges.
 */

typedef struct {
    ngx_atomic_t              messages;      /* in the process's schedule */
    ngx_atomic_t              pending;       /* recipients */
    ngx_atomic_t              deferred;      /* messages tried before */
    ngx_atomic_t              held;          /* by an operator */
    ngx_atomic_t              active;        /* attempts in flight */
    ngx_atomic_t              parked;        /* destination unreachable */
    ngx_atomic_t              oldest;        /* arrival time; 0: none */
    ngx_atomic_t              states[NGX_RELAY_QUEUE_STATES];
    ngx_atomic_t              state_rcpts[NGX_RELAY_QUEUE_STATES];
    ngx_atomic_t              dests_seq;     /* odd while dests[] changes */
    ngx_relay_dest_figure_t   dests[NGX_RELAY_TOP_DESTS];
} ngx_relay_counters_t;


/* the node's totals since the zone was made, for its status */

typedef struct {
    uint64_t                  accepted;      /* messages */
    uint64_t                  delivered;     /* recipients */
    uint64_t                  deferred;
    uint64_t                  bounced;       /* expired ones too */
    uint64_t                  limited;       /* inbound limit refusals */
    uint64_t                  deferred_by[RELAY_CLASS_N];
    uint64_t                  bounced_by[RELAY_CLASS_N];
} ngx_relay_metrics_totals_t;


/* outcomes of a recipient's delivery attempt */

#define NGX_RELAY_OUTCOME_SENT         0
#define NGX_RELAY_OUTCOME_DEFERRED     1
#define NGX_RELAY_OUTCOME_BOUNCED      2
#define NGX_RELAY_OUTCOME_EXPIRED      3
#define NGX_RELAY_OUTCOMES             4


/* one recipient's attempt, as the metrics count it */

typedef struct {
    ngx_uint_t                outcome;       /* NGX_RELAY_OUTCOME_* */
    ngx_uint_t                category;      /* relay_class_e */
    unsigned                  local:1;
    unsigned                  throttled:1;   /* shaped, not tried */
    ngx_str_t                 destination;   /* the policy's pattern */
    ngx_str_t                 pool;          /* egress; "": none */
    ngx_str_t                 address;
    ngx_str_t                 tenant;
    time_t                    arrival;
    off_t                     size;
} ngx_relay_metrics_delivery_t;


/* what a sync was, for relay_spool_sync_seconds */

#define NGX_RELAY_METRICS_SYNC_JOURNAL     0
#define NGX_RELAY_METRICS_SYNC_SYNCFS      1
#define NGX_RELAY_METRICS_SYNC_FILES       2
#define NGX_RELAY_METRICS_SYNC_CHECKPOINT  3     /* live queue files synced */
#define NGX_RELAY_METRICS_SYNC_RETIRE      4     /* no queue file to sync */
#define NGX_RELAY_METRICS_SYNC_KINDS       5

/* control plane events */

#define NGX_RELAY_METRICS_CONTROL_ON       0     /* configured; version */
#define NGX_RELAY_METRICS_CONTROL_UP       1     /* session started */
#define NGX_RELAY_METRICS_CONTROL_DOWN     2     /* session ended */
#define NGX_RELAY_METRICS_CONTROL_ACK      3     /* version applied */
#define NGX_RELAY_METRICS_CONTROL_NACK     4     /* version refused */


/* configuration and processes */
ngx_int_t ngx_relay_metrics_add_zone(ngx_conf_t *cf);
ngx_int_t ngx_relay_metrics_init_process(ngx_cycle_t *cycle, ngx_uint_t on);
void ngx_relay_metrics_exit_process(void);
ngx_relay_counters_t *ngx_relay_metrics_figures(void);

/* the counting, on the event loop (control events: any thread) */
uint64_t ngx_relay_metrics_clock(void);
void ngx_relay_metrics_session(ngx_connection_t *c);
void ngx_relay_metrics_reply(u_char *line, size_t len);
void ngx_relay_metrics_accepted(ngx_str_t *listener, ngx_str_t *tenant,
    ngx_uint_t rcpts, off_t size, uint64_t eod);
void ngx_relay_metrics_limited(u_char *why);
void ngx_relay_metrics_flow_delayed(void);
void ngx_relay_metrics_delivery(ngx_relay_metrics_delivery_t *md);
void ngx_relay_metrics_dsn(ngx_uint_t kind);       /* NGX_RELAY_DSN_* */
void ngx_relay_metrics_operator(const char *action, ngx_uint_t n);
void ngx_relay_metrics_sync(ngx_uint_t kind, uint64_t started);
void ngx_relay_metrics_dns(uint64_t started);
void ngx_relay_metrics_cache(ngx_uint_t hit);
void ngx_relay_metrics_idle(ngx_int_t n);
void ngx_relay_metrics_control(ngx_uint_t event, uint64_t version);
void ngx_relay_metrics_account(ngx_uint_t records, ngx_uint_t errors);

/* readers: the node's status (the control thread), the exposition */
ngx_relay_counters_t *ngx_relay_metrics_process(ngx_uint_t i);
void ngx_relay_metrics_totals(ngx_relay_metrics_totals_t *t);
ngx_int_t ngx_relay_metrics_render(ngx_cycle_t *cycle, ngx_pool_t *pool,
    ngx_chain_t **out, off_t *len);


#endif /* _NGX_RELAY_METRICS_H_INCLUDED_ */
