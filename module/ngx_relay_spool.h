
/*
 * Copyright (C) The relay authors
 */


#ifndef _NGX_RELAY_SPOOL_H_INCLUDED_
#define _NGX_RELAY_SPOOL_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_relay.h>
#include <ngx_relay_journal.h>
#include <relay_queue.h>
#include <pthread.h>


#define NGX_RELAY_SPOOL_BUF       65536
#define NGX_RELAY_SPOOL_WHOLE_MAX (256 * 1024)      /* kept whole in memory */
#define NGX_RELAY_SPOOL_GROUPS    4       /* commit groups in flight */
#define NGX_RELAY_TRAILER_LEN     RELAY_QUEUE_TRAILER_LEN
#define NGX_RELAY_NOTES_DIR       "notes"   /* queue change notes */
#define NGX_RELAY_CORRUPT_DIR     "corrupt" /* files that do not parse */

/* relay_spool_sync */
#define NGX_RELAY_SYNC_FILES      1
#define NGX_RELAY_SYNC_SYNCFS     2
#define NGX_RELAY_SYNC_JOURNAL    3


typedef enum {
    ngx_relay_spool_want_nothing = 0,
    ngx_relay_spool_want_flush,
    ngx_relay_spool_want_commit,
    ngx_relay_spool_want_abort
} ngx_relay_spool_want_e;

typedef struct ngx_relay_spool_s         ngx_relay_spool_t;
typedef struct ngx_relay_spool_writer_s  ngx_relay_spool_writer_t;

typedef void (*ngx_relay_spool_done_pt)(ngx_relay_spool_writer_t *w,
    ngx_int_t rc);


/*
 * In-flow control: a session about to start a message while the worker's
 * memory for messages awaiting their first attempt is spent waits (up to
 * its own timer) until a first attempt ends and frees some.  Its event is
 * posted then.
 */

typedef struct {
    ngx_queue_t                   queue;
    ngx_event_t                   event;
    ngx_uint_t                    queued;
} ngx_relay_spool_flow_t;


/*
 * A transform at acceptance (DKIM signing): it sees the message's octets
 * in the thread tasks that write them, and at the end of data makes header
 * fields that go before the message, into room reserved after the
 * envelope (a "pad" line the queue format skips), so the queued message
 * is the transformed one, written once.
 */

typedef struct {
    size_t                        reserve;     /* most octets finish() adds */
    void                         *data;

    /*
     * Event loop: the message's first octets (all of them when whole),
     * at the first flush or the end of data.  NGX_DECLINED: nothing to
     * do; NGX_ERROR: the message is refused (4xx).
     */
    ngx_int_t                   (*start)(void *data, u_char *p, size_t len,
                                         ngx_uint_t whole);

    /* thread: the message's octets, in order, each once */
    void                        (*feed)(void *data, u_char *p, size_t len);

    /* thread: the fields (*len octets) into buf; NGX_ERROR refuses */
    ngx_int_t                   (*finish)(void *data, u_char *buf,
                                          size_t *len);
} ngx_relay_spool_transform_t;
typedef void (*ngx_relay_spool_queued_pt)(ngx_relay_spool_t *sp,
    ngx_relay_spool_writer_t *w);


/* one per worker, made in init process */

struct ngx_relay_spool_s {
    ngx_str_t                     path;            /* spool root, with "/" */
    ngx_thread_pool_t            *thread_pool;
    ngx_log_t                    *log;
    int                           queue_fd;        /* queue/ directory */
    int                           corrupt_fd;      /* corrupt/: -1 none */

    ngx_queue_t                   commit_waiting;  /* for the next group */
    ngx_uint_t                    commit_busy;     /* groups syncing */

    ngx_relay_spool_queued_pt     queued;          /* the scheduler takes it */
    void                         *data;            /* for "queued" */

    ngx_uint_t                    sequence;
    ngx_uint_t                    sync;            /* NGX_RELAY_SYNC_* */
    ngx_uint_t                    delivers;        /* remote mail: a first
                                                      attempt at once */
    ngx_uint_t                    workers;         /* shares of the queue */
    ngx_uint_t                    worker;          /* ours: ids we make */

    ngx_relay_journal_t           journal;         /* relay_spool_sync journal */
    ngx_uint_t                    journal_busy;    /* a group writes records */
    size_t                        kept;            /* buffers grown past
                                                      NGX_RELAY_SPOOL_BUF */
    size_t                        memory;          /* relay_spool_memory:
                                                      most "kept" */
    size_t                        kept_first;      /* of it, for first
                                                      attempts */
    size_t                        in_flow;         /* relay_in_flow_memory */

    /*
     * Queue files made without their content (a writer's "hollow"), by
     * the journal segment of their records: the segment's checkpoint
     * writes those still hollow ("filling", pinned) before its sync.
     */
    ngx_queue_t                   hollow[2];
    pthread_mutex_t               fill_mutex;      /* w->hollow, threads */
    ngx_relay_spool_writer_t    **filling;
    ngx_uint_t                    nfilling;

    ngx_queue_t                   flow_waiting;    /* ngx_relay_spool_flow_t */
};


/*
 * One message on its way to disk.  It owns its pool and outlives the session
 * that made it: a client that vanishes mid-commit detaches (handler = NULL)
 * and the message still reaches the queue.
 */

struct ngx_relay_spool_writer_s {
    ngx_relay_spool_t            *spool;
    ngx_pool_t                   *pool;
    ngx_log_t                    *log;
    ngx_fd_t                      fd;              /* O_RDWR, flock()ed;
                                                      -1 until written */
    ngx_str_t                     id;
    ngx_err_t                     err;             /* first failure */

    u_char                       *buf;             /* not yet written */
    u_char                       *pos;
    u_char                       *end;
    off_t                         written;         /* octets in the file */
    off_t                         message_start;   /* after the envelope */
    ngx_thread_task_t            *task;            /* one at a time */
    ngx_relay_spool_want_e        want;            /* once task is done */

    ngx_relay_spool_done_pt       handler;
    void                         *data;

    ngx_queue_t                   queue;           /* in a commit group */
    ngx_uint_t                    local;           /* local rcpts pending */

    ngx_relay_spool_transform_t  *transform;       /* NULL: none */
    u_char                       *transform_buf;   /* reserve + pad line */
    off_t                         reserve_start;   /* of the pad line */

    size_t                        kept;            /* its share of sp->kept */

    /*
     * The file exists and is locked but is empty: its content is only in
     * buf and in the journal record, until an attempt leaves recipients
     * pending, the message goes to the open thread, the writer is
     * released or the record's segment is checkpointed (whichever comes
     * first writes it).  Changed under spool->fill_mutex by threads; not a
     * bit field, the bits beside it change on the event loop.
     */
    ngx_uint_t                    hollow;
    ngx_queue_t                   hollow_link;     /* in spool->hollow[] */
    ngx_uint_t                    pins;            /* checkpoints using buf */

    uint64_t                      journal_nonce;   /* of its record */
    unsigned                      journal_segment:1;
    unsigned                      journaled:1;     /* a record was synced */
    unsigned                      whole:1;         /* buf: the whole file,
                                                      for the attempt */

    unsigned                      busy:1;          /* task in flight */
    unsigned                      transform_started:1;
    unsigned                      transformed:1;
    unsigned                      transform_failed:1;
    unsigned                      hollow_linked:1;
    unsigned                      release_wanted:1; /* once unpinned */

    u_char                        id_data[NGX_RELAY_ID_LEN];
};


/*
 * A queue file read back (lib/relay_queue.h: malloc()ed, no pools; its
 * strings are ngx_str_t inside nginx).
 */

typedef relay_queue_rcpt_t  ngx_relay_queued_rcpt_t;
typedef relay_queue_msg_t   ngx_relay_queued_t;


ngx_int_t ngx_relay_spool_init(ngx_relay_spool_t *sp, ngx_cycle_t *cycle);
void ngx_relay_spool_exit(ngx_relay_spool_t *sp);
ngx_int_t ngx_relay_spool_prepare_dirs(ngx_str_t *path, ngx_cycle_t *cycle);

ngx_relay_spool_writer_t *ngx_relay_spool_create(ngx_relay_spool_t *sp,
    ngx_log_t *log);
void ngx_relay_spool_set_transform(ngx_relay_spool_writer_t *w,
    ngx_relay_spool_transform_t *t);
ngx_int_t ngx_relay_spool_write_envelope(ngx_relay_spool_writer_t *w,
    ngx_relay_envelope_t *env);
ngx_int_t ngx_relay_spool_reserve(ngx_relay_spool_writer_t *w, size_t len);
ngx_int_t ngx_relay_spool_keep_whole(ngx_relay_spool_writer_t *w);
ngx_int_t ngx_relay_spool_flush(ngx_relay_spool_writer_t *w,
    ngx_relay_spool_done_pt handler, void *data);
ngx_int_t ngx_relay_spool_commit(ngx_relay_spool_writer_t *w,
    ngx_relay_spool_done_pt handler, void *data);
void ngx_relay_spool_abort(ngx_relay_spool_writer_t *w);
void ngx_relay_spool_release(ngx_relay_spool_writer_t *w);
void ngx_relay_spool_gone(ngx_relay_spool_writer_t *w);

ngx_uint_t ngx_relay_spool_flow_full(ngx_relay_spool_t *sp);
void ngx_relay_spool_flow_wait(ngx_relay_spool_t *sp,
    ngx_relay_spool_flow_t *f);
void ngx_relay_spool_flow_cancel(ngx_relay_spool_flow_t *f);

/* thread-safe: a hollow file gets its content; its file was removed */
ngx_int_t ngx_relay_spool_fill(ngx_relay_spool_writer_t *w, ngx_err_t *err);
void ngx_relay_spool_removed(ngx_relay_spool_writer_t *w);
ngx_int_t ngx_relay_spool_debris(ngx_relay_spool_t *sp, ngx_fd_t fd,
    u_char *name);

ngx_fd_t ngx_relay_spool_open_locked(ngx_relay_spool_t *sp, u_char *name,
    ngx_err_t *err);
ngx_uint_t ngx_relay_spool_slot(u_char *name, size_t len, ngx_uint_t workers);
DIR *ngx_relay_spool_opendir(int dir_fd);

/* no system call: a writer's buffer parsed on the event loop */
ngx_int_t ngx_relay_spool_read_memory(ngx_str_t *file, ngx_relay_queued_t *q,
    ngx_err_t *err);

/* thread-safe: run in thread-pool tasks only */
ngx_int_t ngx_relay_spool_read(ngx_fd_t fd, ngx_relay_queued_t *q,
    ngx_err_t *err);
void ngx_relay_spool_free(ngx_relay_queued_t *q);
ngx_int_t ngx_relay_spool_mark(ngx_fd_t fd, ngx_relay_queued_rcpt_t *r,
    u_char state, ngx_err_t *err);
ngx_int_t ngx_relay_spool_remove(ngx_relay_spool_t *sp, ngx_str_t *id,
    ngx_err_t *err);
ngx_int_t ngx_relay_spool_set_error(ngx_fd_t fd, ngx_relay_queued_t *q,
    u_char *text, size_t len, ngx_err_t *err);
ngx_int_t ngx_relay_spool_mark_delay_warned(ngx_fd_t fd,
    ngx_relay_queued_t *q, ngx_err_t *err);
ngx_int_t ngx_relay_spool_schedule(ngx_fd_t fd, ngx_relay_queued_t *q,
    time_t next, ngx_uint_t attempts, ngx_err_t *err);
ngx_int_t ngx_relay_spool_touch(ngx_fd_t fd, time_t next);


/* "error <this many octets>": the last attempt's error, space-padded */
#define NGX_RELAY_SPOOL_ERROR_LEN     RELAY_QUEUE_ERROR_LEN


#endif /* _NGX_RELAY_SPOOL_H_INCLUDED_ */
