
/*
 * Copyright (C) The relay authors
 */


#ifndef _NGX_RELAY_SNAPSHOT_H_INCLUDED_
#define _NGX_RELAY_SNAPSHOT_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>


#define NGX_RELAY_SCHEDULE_DIR      "schedule"  /* snapshots, one a worker */

/* what a record says of its message */
#define NGX_RELAY_SNAPSHOT_HELD     0x01
#define NGX_RELAY_SNAPSHOT_LOCAL    0x02        /* local rcpts pending */
#define NGX_RELAY_SNAPSHOT_BOUNCE   0x04        /* an operator's bounce */
#define NGX_RELAY_SNAPSHOT_TRIED    0x08        /* attempts > 0 */

#define NGX_RELAY_SNAPSHOT_DOMAINS  255         /* the most in a record */

/* what the writer's task does */
#define NGX_RELAY_SNAPSHOT_WRITE    0           /* a slice */
#define NGX_RELAY_SNAPSHOT_KEEP     1           /* the end: renamed */
#define NGX_RELAY_SNAPSHOT_DROP     2           /* the end: removed */


/* one message of a snapshot: what its queue file said when it was known */

typedef struct {
    u_char                      *id;
    size_t                       id_len;
    uint64_t                     ino;           /* of the queue file */
    int64_t                      ctime;         /* ns: when it last changed */
    time_t                       arrival;
    uint32_t                     pending;       /* recipients */
    ngx_uint_t                   flags;         /* NGX_RELAY_SNAPSHOT_* */
    ngx_uint_t                   ndomains;
    ngx_str_t                   *domains[NGX_RELAY_SNAPSHOT_DOMAINS];
} ngx_relay_snapshot_rec_t;


/* a snapshot being written: encoded in slices, written by thread tasks */

typedef struct ngx_relay_snapshot_writer_s  ngx_relay_snapshot_writer_t;

typedef void (*ngx_relay_snapshot_written_pt)(
    ngx_relay_snapshot_writer_t *w, ngx_int_t rc);

struct ngx_relay_snapshot_writer_s {
    int                          dir_fd;        /* schedule/ */
    ngx_uint_t                   workers;       /* the partition */
    ngx_uint_t                   worker;        /* names the file */
    uint32_t                     fingerprint;   /* of the local domains */
    ngx_thread_pool_t           *thread_pool;
    ngx_log_t                   *log;

    ngx_relay_snapshot_written_pt  handler;     /* a slice or the end */
    void                        *data;

    ngx_fd_t                     fd;            /* the temporary file */
    off_t                        offset;
    uint64_t                     records;
    uint32_t                     slices;
    u_char                      *buf;           /* the slice being made */
    size_t                       len;
    size_t                       size;
    ngx_thread_task_t           *task;
    ngx_uint_t                   step;          /* what the task does */
    ngx_err_t                    err;
    unsigned                     busy:1;
};


/* what a worker read back at start: records of its share, by id */

typedef struct {
    u_char                     **files;         /* malloc()ed contents */
    ngx_uint_t                   nfiles;
    u_char                     **index;         /* records, open addressing */
    ngx_uint_t                   index_size;    /* a power of two */
    ngx_uint_t                   records;
} ngx_relay_snapshot_t;


void ngx_relay_snapshot_begin(ngx_relay_snapshot_writer_t *w);
ngx_int_t ngx_relay_snapshot_add(ngx_relay_snapshot_writer_t *w,
    ngx_relay_snapshot_rec_t *r);
ngx_int_t ngx_relay_snapshot_flush(ngx_relay_snapshot_writer_t *w);
ngx_int_t ngx_relay_snapshot_finish(ngx_relay_snapshot_writer_t *w,
    ngx_uint_t keep);

/* thread side */
ngx_relay_snapshot_t *ngx_relay_snapshot_load(int dir_fd,
    uint32_t fingerprint, ngx_uint_t workers, ngx_uint_t worker,
    ngx_log_t *log);
u_char *ngx_relay_snapshot_find(ngx_relay_snapshot_t *sn, u_char *id,
    size_t len);
void ngx_relay_snapshot_forget(ngx_relay_snapshot_t *sn, u_char *id,
    size_t len);
void ngx_relay_snapshot_decode(u_char *p, ngx_relay_snapshot_rec_t *r,
    ngx_str_t *domains);
void ngx_relay_snapshot_free(ngx_relay_snapshot_t *sn);


#endif /* _NGX_RELAY_SNAPSHOT_H_INCLUDED_ */
