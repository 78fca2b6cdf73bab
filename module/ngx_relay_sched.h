
/*
 * Copyright (C) The relay authors
 */


#ifndef _NGX_RELAY_SCHED_H_INCLUDED_
#define _NGX_RELAY_SCHED_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>
#include <ngx_relay.h>
#include <ngx_relay_spool.h>
#include <ngx_relay_policy.h>
#include <ngx_relay_metrics.h>
#include <ngx_relay_maildir.h>
#include <ngx_relay_parse.h>
#include <ngx_relay_snapshot.h>


/* where an entry is */

typedef enum {
    ngx_relay_sched_waiting = 0,   /* in the heap until it is due */
    ngx_relay_sched_running,       /* an attempt holds the message */
    ngx_relay_sched_held,          /* an operator's hold: never tried */
    ngx_relay_sched_parked,        /* its destinations are unreachable */
    ngx_relay_sched_idle           /* remote mail, relay_delivery off */
} ngx_relay_sched_state_e;


typedef struct ngx_relay_sched_s        ngx_relay_sched_t;
typedef struct ngx_relay_sched_dest_s   ngx_relay_sched_dest_t;
typedef struct ngx_relay_sched_entry_s  ngx_relay_sched_entry_t;


/*
 * A destination (a recipient domain) as the schedule sees it: how much
 * mail waits for it and whether it is unreachable.  An unreachable one
 * gets one probe when its time comes; the mail due for it meanwhile waits
 * in memory ("parked") instead of each message trying the dead hosts.
 */

struct ngx_relay_sched_dest_s {
    ngx_str_node_t               node;          /* in sc->dests, by name */
    ngx_relay_sched_t           *sched;
    ngx_uint_t                   messages;      /* entries naming it */
    ngx_uint_t                   rcpts;         /* their pending ones */
    ngx_uint_t                   failures;      /* unreachable in a row */
    time_t                       dead_until;    /* 0: reachable */
    ngx_relay_sched_entry_t     *prober;        /* the attempt probing it */
    ngx_queue_t                  parked;        /* entries */
    ngx_uint_t                   nparked;
    ngx_event_t                  probe;         /* at dead_until */

    /* why it is unreachable: what suspended deferrals report */
    u_char                       dsn[12];
    u_char                       reply[NGX_RELAY_REPLY_TEXT + 8];
    size_t                       reply_len;
    u_char                       relay[NGX_SOCKADDR_STRLEN + 300];
    size_t                       relay_len;
};


/* one message of this worker's share: what scheduling needs, no envelope */

struct ngx_relay_sched_entry_s {
    time_t                       due;
    time_t                       arrival;
    time_t                       expires;       /* 0: unknown */
    uint32_t                     hash;          /* of the id */
    uint32_t                     heap;          /* index, or NONE */
    uint32_t                     pending;       /* recipients */
    uint64_t                     ino;           /* of the file it read */
    int64_t                      ctime;         /* ns, then; 0: unknown */
    ngx_relay_sched_dest_t      *dest;          /* first remote domain */
    ngx_relay_sched_dest_t     **more;          /* the other ones */
    ngx_relay_sched_dest_t      *probe;         /* this attempt probes it */
    ngx_relay_sched_dest_t      *waits;         /* parked on its list */
    ngx_queue_t                  park;          /* in waits->parked */
    uint16_t                     nmore;
    uint8_t                      state;         /* ngx_relay_sched_state_e */
    uint8_t                      gen;           /* of the last scan */
    unsigned                     tried:1;       /* attempts > 0 */
    unsigned                     local:1;       /* local rcpts pending */
    unsigned                     bounce:1;      /* an operator's bounce */
    unsigned                     counted:1;     /* in the figures */
    u_char                       id_len;
    u_char                       id[NGX_RELAY_ID_LEN];
};


/*
 * What a queue file says, for the schedule: read by a thread (an attempt,
 * a scan or a note), applied on the event loop.  Domains are lowercased
 * copies, each once (one malloc()ed block with domains[] and rcpts[]).
 */

#define NGX_RELAY_SCHED_GONE      0     /* delivered, removed, not ours */
#define NGX_RELAY_SCHED_QUEUED    1     /* pending recipients remain */
#define NGX_RELAY_SCHED_HELD      2
#define NGX_RELAY_SCHED_BUSY      3     /* locked by another process */
#define NGX_RELAY_SCHED_FAILED    4     /* could not be read */

typedef struct {
    ngx_uint_t                   outcome;
    time_t                       arrival;
    time_t                       next;
    ngx_uint_t                   attempts;
    ngx_uint_t                   pending;
    unsigned                     local:1;
    unsigned                     bounce:1;
    uint64_t                     ino;           /* for snapshots */
    int64_t                      ctime;         /* ns; 0: unknown */
    ngx_str_t                   *domains;
    ngx_uint_t                  *rcpts;         /* per domain */
    ngx_uint_t                   ndomains;
} ngx_relay_sched_summary_t;


typedef struct {
    ngx_uint_t                   messages;
    ngx_uint_t                   pending;       /* recipients */
    ngx_uint_t                   deferred;      /* tried before */
    ngx_uint_t                   held;
    ngx_uint_t                   active;        /* attempts in flight */
    ngx_uint_t                   parked;
    ngx_uint_t                   states[NGX_RELAY_QUEUE_STATES];
    ngx_uint_t                   state_rcpts[NGX_RELAY_QUEUE_STATES];
    time_t                       oldest;        /* arrival; 0: none */
    unsigned                     oldest_stale:1;
} ngx_relay_sched_figures_t;


/* one per worker */

struct ngx_relay_sched_s {
    ngx_relay_spool_t            spool;
    ngx_str_t                    maildir;       /* with "/" */
    ngx_str_t                    hostname;
    ngx_array_t                 *domains;       /* ngx_relay_domain_t */
    struct ngx_relay_delivery_conf_s  *delivery; /* NULL: keep remote mail */
    ngx_relay_policy_t          *policy;

    ngx_msec_t                   scan_interval; /* the safety net */
    ngx_msec_t                   snapshot_interval; /* 0: none */
    ngx_uint_t                   workers;       /* partition of the queue */
    ngx_uint_t                   worker;

    ngx_relay_counters_t        *counters;      /* this process's, shm */
    relay_classify_rules_t      *bounce_rules;  /* NULL: built-in only */
    ngx_log_t                   *log;

    /* the schedule */
    ngx_relay_sched_entry_t    **heap;          /* by due time */
    ngx_uint_t                   nheap;
    ngx_uint_t                   heap_size;
    ngx_relay_sched_entry_t    **index;         /* by id, open addressing */
    ngx_uint_t                   index_size;    /* a power of two */
    ngx_uint_t                   nindex;
    ngx_relay_sched_entry_t     *free;          /* unused entries */
    ngx_rbtree_t                 dests;
    ngx_rbtree_node_t            dests_sentinel;
    ngx_relay_sched_figures_t    figures;
    ngx_event_t                  due_event;
    ngx_event_t                  dests_event;   /* publishes the top ones */
    ngx_uint_t                   busy;          /* attempts in flight */
    ngx_uint_t                   recording;     /* record tasks in flight */
    ngx_queue_t                  record_wait;   /* attempts, for the next */

    /* scans and notes */
    ngx_event_t                  scan_event;
    ngx_uint_t                   scanning;      /* tasks of a scan */
    unsigned                     rebuilt:1;     /* the first scan ended */
    unsigned                     rescan:1;      /* asked for mid-scan */
    unsigned                     refresh:1;     /* the next scan reads all */
    ngx_msec_t                   started;       /* for the rebuild's log */
    uint8_t                      gen;
    ngx_connection_t            *notes;         /* inotify on notes/ */
    int                          notes_fd;      /* notes/ directory */
    time_t                       exiting_since; /* took mail meanwhile */
    ngx_array_t                 *handover;      /* note lines, exiting */
    ngx_event_t                  handover_event;

    /* snapshots of the schedule (ngx_relay_snapshot.c) */
    int                          schedule_fd;   /* schedule/: -1 none */
    uint32_t                     fingerprint;   /* of the local domains */
    ngx_relay_snapshot_t        *snapshot;      /* read back at start */
    ngx_uint_t                   from_snapshot; /* entries it gave */
    ngx_relay_snapshot_writer_t  writer;
    ngx_event_t                  snapshot_event;
    ngx_uint_t                   changes;       /* since the last one */
    ngx_uint_t                   snapshot_next; /* index slot to walk */
    ngx_uint_t                   snapshot_size; /* index size it walks */
};


ngx_int_t ngx_relay_sched_init(ngx_relay_sched_t *sc, ngx_cycle_t *cycle);
void ngx_relay_sched_exit(ngx_relay_sched_t *sc);
void ngx_relay_sched_scan_now(ngx_relay_sched_t *sc, ngx_uint_t refresh);

/* for attempts (ngx_relay_attempt.c) */
void ngx_relay_sched_attempted(ngx_relay_sched_t *sc,
    ngx_relay_sched_entry_t *e, ngx_relay_sched_summary_t *s);
ngx_relay_sched_dest_t *ngx_relay_sched_suspended(ngx_relay_sched_t *sc,
    ngx_relay_sched_entry_t *e, ngx_str_t *domain);
void ngx_relay_sched_reached(ngx_relay_sched_t *sc,
    ngx_relay_sched_entry_t *e, ngx_str_t *domain, ngx_uint_t unreachable,
    u_char *dsn, u_char *reply, size_t reply_len, u_char *relay,
    size_t relay_len);

/* thread-safe: a queue file's summary for the schedule */
void ngx_relay_sched_file_version(ngx_fd_t fd,
    ngx_relay_sched_summary_t *s);
void ngx_relay_sched_summarize(ngx_relay_queued_t *q, ngx_array_t *domains,
    ngx_relay_sched_summary_t *s);
void ngx_relay_sched_summary_free(ngx_relay_sched_summary_t *s);


#endif /* _NGX_RELAY_SCHED_H_INCLUDED_ */
