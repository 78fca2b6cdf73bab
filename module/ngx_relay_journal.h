
/*
 * Copyright (C) The relay authors
 */


#ifndef _NGX_RELAY_JOURNAL_H_INCLUDED_
#define _NGX_RELAY_JOURNAL_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_relay.h>


#define NGX_RELAY_JOURNAL_DIR         "journal"
#define NGX_RELAY_JOURNAL_MAGIC       "RLYJNL01"
#define NGX_RELAY_JOURNAL_RECORD      0x31434552      /* "REC1" */
#define NGX_RELAY_JOURNAL_PAD         0x31444150      /* "PAD1" */
#define NGX_RELAY_JOURNAL_INFLIGHT    2               /* groups writing */
#define NGX_RELAY_JOURNAL_MAX_RECORDS 512             /* then checkpoint */
#define NGX_RELAY_JOURNAL_HEADER_LEN  64
#define NGX_RELAY_JOURNAL_RECORDS_AT  512             /* in a segment */
#define NGX_RELAY_JOURNAL_RECORD_LEN  32
#define NGX_RELAY_BOOT_ID_LEN         36


/* the record size on disk for a message: header, id, octets, padding */
#define ngx_relay_journal_record_size(id_len, len)                           \
    ngx_align(NGX_RELAY_JOURNAL_RECORD_LEN + (id_len) + (len), 8)


typedef struct ngx_relay_journal_s  ngx_relay_journal_t;


typedef struct {
    off_t                          used;        /* record octets */
    uint64_t                       nonce;       /* of its valid records */
    ngx_uint_t                     records;
    ngx_uint_t                     live;        /* queue files still there */
    ngx_msec_t                     sealed_at;
    ngx_uint_t                     writing;     /* groups writing into it */
    unsigned                       sealed:1;    /* checkpoint it next */
    unsigned                       checkpointing:1;
} ngx_relay_journal_segment_t;


/* one per worker process, file <spool>/journal/<pid> */

struct ngx_relay_journal_s {
    ngx_fd_t                       fd;
    int                            dir_fd;      /* journal/ */
    int                            queue_fd;    /* queue/ */
    ngx_log_t                     *log;
    ngx_thread_pool_t             *thread_pool;

    off_t                          segment_size;
    ngx_msec_t                     interval;    /* most a record waits */
    ngx_uint_t                     active;
    ngx_relay_journal_segment_t    segment[2];

    ngx_event_t                    timer;
    ngx_event_t                    linger;      /* a sealed one's live end */
    ngx_thread_task_t             *task;        /* open or checkpoint */
    ngx_uint_t                     checkpoint;  /* segment of the task */
    uint64_t                       started;     /* the task's, for metrics */
    uint64_t                       next_nonce;
    ngx_err_t                      err;
    unsigned                       sync_queue:1;  /* the task's syncfs() */

    /*
     * The spool's hollow queue files of a segment: pinned on the event
     * loop before its checkpoint, written by the checkpoint's thread
     * before its syncfs(), let go when the checkpoint is done.
     */
    ngx_int_t                    (*pin_live)(void *data, ngx_uint_t segment);
    ngx_int_t                    (*fill_live)(void *data, ngx_err_t *err);
    void                         (*unpin_live)(void *data, ngx_uint_t filled);
    void                          *live_data;

    /*
     * Groups write their records in the order of their tickets, each once
     * the one before has written (not synced) its own: the journal never
     * has a hole before a record that was acknowledged.  Under "mutex".
     */
    uint64_t                       tickets;     /* issued, event loop */
    pthread_mutex_t                mutex;
    pthread_cond_t                 cond;
    uint64_t                       written;     /* the last ticket done */
    uint64_t                       skipped;     /* a ticket never posted */
    ngx_uint_t                     hole_segment;
    uint64_t                       hole_nonce;  /* 0: no hole */

    unsigned                       ready:1;
    unsigned                       busy:1;      /* task in flight */
    unsigned                       failed:1;    /* open failed: never */

    u_char                         name[NGX_INT_T_LEN + 1];
};


ngx_int_t ngx_relay_journal_boot_id(ngx_log_t *log);
ngx_int_t ngx_relay_journal_recover(int dir_fd, int queue_fd,
    ngx_log_t *log);
ngx_int_t ngx_relay_journal_recover_dirs(ngx_str_t *spool, ngx_cycle_t *cycle);

ngx_int_t ngx_relay_journal_open(ngx_relay_journal_t *j);
void ngx_relay_journal_close(ngx_relay_journal_t *j, ngx_uint_t keep);

typedef struct {
    ngx_uint_t                     segment;
    uint64_t                       nonce;
    uint64_t                       ticket;
    off_t                          offset;      /* of the first record */
} ngx_relay_journal_slot_t;


ngx_int_t ngx_relay_journal_reserve(ngx_relay_journal_t *j, size_t len,
    ngx_relay_journal_slot_t *slot);
void ngx_relay_journal_skip(ngx_relay_journal_t *j,
    ngx_relay_journal_slot_t *slot);
void ngx_relay_journal_gone(ngx_relay_journal_t *j, ngx_uint_t segment,
    uint64_t nonce);
void ngx_relay_journal_written(ngx_relay_journal_t *j, ngx_uint_t segment,
    ngx_uint_t records, ngx_uint_t failed);

/* thread side */
void ngx_relay_journal_record_header(u_char *hdr, uint64_t nonce,
    ngx_str_t *id, u_char *data, size_t len);
void ngx_relay_journal_pad_header(u_char *hdr, uint64_t nonce,
    size_t id_len, size_t len);
ngx_int_t ngx_relay_journal_append(ngx_relay_journal_t *j,
    ngx_relay_journal_slot_t *slot, struct iovec *iov, ngx_uint_t niov,
    ngx_err_t *err);


#endif /* _NGX_RELAY_JOURNAL_H_INCLUDED_ */
