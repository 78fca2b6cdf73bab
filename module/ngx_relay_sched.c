
/*
 * Copyright (C) The relay authors
 */


/*
 * The scheduler decides what to try when; it never reads message content
 * and never writes the spool (attempts do, ngx_relay_attempt.c).
 *
 * Shares: the queue is partitioned across workers by a hash of the queue
 * id (ngx_relay_spool_slot()), and a worker makes ids of its own share, so
 * new messages stay with the worker that took them.  flock() keeps
 * ownership exclusive when old and new workers overlap during a reload.
 *
 * The schedule: every message of the worker's share has an entry in
 * memory (id, due time, arrival, destinations, a few flags; never the
 * envelope), in an index by id and, while it waits, in a heap by due
 * time.  One timer wakes the worker when the earliest entry is due; at
 * most NGX_RELAY_SCHED_MAX_BUSY attempts run at once.  Files that are not
 * due are not opened, so the cost follows the work that is due, not the
 * size of the queue.
 *
 * Where entries come from:
 *   - the spool hands over every new message (durable, locked): it is
 *     attempted at once;
 *   - the first scan after start lists queue/ (due files first: an
 *     attempt sets a file's mtime to its next attempt) and reads each
 *     header of the share in thread tasks;
 *   - notes: an operator tool or the control client that changes queue
 *     files drops a note (a list of ids) into notes/; every worker hears
 *     of it through inotify and reads those headers again;
 *   - a scan every relay_queue_scan_interval is the safety net: it lists
 *     queue/, reads only files it does not know and forgets entries whose
 *     files are gone;
 *   - a worker that exits gracefully notes the ids of its recent messages,
 *     so the next generation adopts what it took after their first scan.
 *
 * Destinations: when no host of a destination greets us (refused, timed
 * out, 4xx greeting, no address for now), the destination is unreachable
 * until its backoff passes; mail due for it meanwhile waits in memory
 * ("parked") instead of each message trying the dead hosts, one message
 * probes it when its time comes, and a success releases the others.  Mail
 * past its lifetime is attempted anyway, so it expires and bounces.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>
#include <sys/file.h>
#include <sys/inotify.h>
#include <ngx_relay.h>
#include <ngx_relay_spool.h>
#include <ngx_relay_maildir.h>
#include <ngx_relay_sched.h>
#include <ngx_relay_attempt.h>
#include <ngx_relay_delivery.h>


#define NGX_RELAY_SCHED_MAX_BUSY      16
#define NGX_RELAY_SCHED_NONE          0xffffffff  /* not in the heap */
#define NGX_RELAY_SCHED_CHUNK         4096        /* entries per malloc */
#define NGX_RELAY_SCHED_BATCH         256         /* headers per task */
#define NGX_RELAY_SCHED_READERS       8           /* such tasks at once */
#define NGX_RELAY_SCHED_BUSY_RETRY    2           /* s: locked elsewhere */
#define NGX_RELAY_SCHED_FAIL_RETRY    60          /* s: unreadable */
#define NGX_RELAY_SCHED_LOCAL_RETRY   60          /* s: at most */
#define NGX_RELAY_SCHED_ADOPT_AGE     600         /* s: noted at exit */
#define NGX_RELAY_SCHED_NOTE_AGE      600         /* s: notes kept */
#define NGX_RELAY_SCHED_DEBRIS_AGE    10          /* s */
#define NGX_RELAY_SCHED_OLDEST_DELAY  2000        /* ms */
#define NGX_RELAY_SCHED_SNAPSHOT_SLOTS  8192      /* index slots a slice */
#define NGX_RELAY_SCHED_MAX_NOTE      (64 * 1024 * 1024)

/* why a header is read */
#define NGX_RELAY_SCHED_SCAN          0     /* unknown ones only */
#define NGX_RELAY_SCHED_NOTE          1     /* changed: known ones too */
#define NGX_RELAY_SCHED_ADOPT         2     /* unknown ones only */


/* a name to read, and what the read found */

typedef struct {
    u_char                      *name;         /* malloc()ed */
    ngx_uint_t                   mode;         /* NGX_RELAY_SCHED_SCAN... */
    u_char                      *record;       /* in sc->snapshot, or NULL */
    time_t                       mtime;        /* with a record: when due */
} ngx_relay_sched_todo_t;

typedef struct {
    ngx_relay_sched_todo_t       todo;
    ngx_relay_sched_summary_t    summary;
} ngx_relay_sched_read_t;


/* a name listed by a scan, with its file's time (its next attempt) */

typedef struct {
    u_char                      *name;         /* malloc()ed */
    time_t                       mtime;
    ino_t                        ino;
    u_char                      *record;       /* a snapshot's that holds */
} ngx_relay_sched_listed_t;


typedef struct {
    ngx_relay_sched_t           *sched;
    ngx_relay_sched_read_t      *reads;
    ngx_uint_t                   nreads;
    ngx_uint_t                   debris;       /* files removed */
} ngx_relay_sched_batch_t;


typedef struct {
    ngx_relay_sched_t           *sched;
    ngx_relay_sched_listed_t    *names;
    ngx_uint_t                   nnames;
    ngx_uint_t                   mode;         /* of the reads it makes */
    unsigned                     sort:1;       /* due files first */
    ngx_err_t                    err;
    ngx_relay_snapshot_t        *snapshot;     /* the first scan's */
} ngx_relay_sched_list_t;


typedef struct {
    ngx_relay_sched_t           *sched;
    u_char                     **notes;        /* names, malloc()ed */
    ngx_uint_t                   nnotes;
    ngx_relay_sched_todo_t      *ids;
    ngx_uint_t                   nids;
    unsigned                     rescan:1;     /* a "*" line */
} ngx_relay_sched_notes_t;


/* a note on its way to notes/, by a thread task */

typedef struct {
    ngx_relay_sched_t           *sched;
    u_char                      *text;
    size_t                       len;
    ngx_int_t                    rc;
} ngx_relay_note_t;


/* names waiting for a header read */

static ngx_relay_sched_todo_t  *ngx_relay_sched_todo;
static ngx_uint_t               ngx_relay_sched_ntodo;
static ngx_uint_t               ngx_relay_sched_todo_size;
static ngx_uint_t               ngx_relay_sched_todo_next;


static ngx_relay_sched_entry_t *ngx_relay_sched_entry(ngx_relay_sched_t *sc,
    u_char *id, size_t len);
static void ngx_relay_sched_entry_free(ngx_relay_sched_t *sc,
    ngx_relay_sched_entry_t *e);
static ngx_relay_sched_entry_t *ngx_relay_sched_find(ngx_relay_sched_t *sc,
    u_char *id, size_t len);
static ngx_relay_sched_entry_t **ngx_relay_sched_index_slot(
    ngx_relay_sched_t *sc, uint32_t hash, u_char *id, size_t len);
static ngx_int_t ngx_relay_sched_index_add(ngx_relay_sched_t *sc,
    ngx_relay_sched_entry_t *e);
static void ngx_relay_sched_index_del(ngx_relay_sched_t *sc,
    ngx_relay_sched_entry_t *e);
static ngx_int_t ngx_relay_sched_index_grow(ngx_relay_sched_t *sc);
static ngx_int_t ngx_relay_sched_heap_push(ngx_relay_sched_t *sc,
    ngx_relay_sched_entry_t *e);
static void ngx_relay_sched_heap_del(ngx_relay_sched_t *sc,
    ngx_relay_sched_entry_t *e);
static void ngx_relay_sched_heap_up(ngx_relay_sched_t *sc, ngx_uint_t i);
static void ngx_relay_sched_heap_down(ngx_relay_sched_t *sc, ngx_uint_t i);
static void ngx_relay_sched_detach(ngx_relay_sched_t *sc,
    ngx_relay_sched_entry_t *e);
static void ngx_relay_sched_wait(ngx_relay_sched_t *sc,
    ngx_relay_sched_entry_t *e, time_t due);
static void ngx_relay_sched_set(ngx_relay_sched_t *sc,
    ngx_relay_sched_entry_t *e, ngx_relay_sched_summary_t *s,
    ngx_uint_t attempted);
static ngx_int_t ngx_relay_sched_set_dests(ngx_relay_sched_t *sc,
    ngx_relay_sched_entry_t *e, ngx_relay_sched_summary_t *s);
static void ngx_relay_sched_drop_dests(ngx_relay_sched_t *sc,
    ngx_relay_sched_entry_t *e);
static time_t ngx_relay_sched_expires(ngx_relay_sched_t *sc,
    ngx_relay_sched_entry_t *e);
static void ngx_relay_sched_count(ngx_relay_sched_t *sc,
    ngx_relay_sched_entry_t *e, ngx_int_t n);
static void ngx_relay_sched_publish(ngx_relay_sched_t *sc);
static void ngx_relay_sched_oldest_handler(ngx_event_t *ev);
static void ngx_relay_sched_dests_changed(ngx_relay_sched_t *sc);
static void ngx_relay_sched_dests_handler(ngx_event_t *ev);
static void ngx_relay_sched_top(ngx_relay_dest_figure_t *top,
    ngx_relay_sched_dest_t *d);
static ngx_relay_sched_dest_t *ngx_relay_sched_dest(ngx_relay_sched_t *sc,
    ngx_str_t *name, ngx_uint_t create);
static void ngx_relay_sched_dest_release(ngx_relay_sched_t *sc,
    ngx_relay_sched_dest_t *dest, ngx_uint_t all);
static void ngx_relay_sched_dest_gc(ngx_relay_sched_t *sc,
    ngx_relay_sched_dest_t *dest);
static void ngx_relay_sched_probe_handler(ngx_event_t *ev);
static ngx_uint_t ngx_relay_sched_park(ngx_relay_sched_t *sc,
    ngx_relay_sched_entry_t *e, time_t now);
static void ngx_relay_sched_unpark(ngx_relay_sched_t *sc,
    ngx_relay_sched_entry_t *e);
static void ngx_relay_sched_dispatch(ngx_relay_sched_t *sc);
static void ngx_relay_sched_due_handler(ngx_event_t *ev);
static void ngx_relay_sched_run(ngx_relay_sched_t *sc,
    ngx_relay_sched_entry_t *e, ngx_relay_spool_writer_t *w);
static void ngx_relay_sched_queued(ngx_relay_spool_t *sp,
    ngx_relay_spool_writer_t *w);
static void ngx_relay_sched_scan_handler(ngx_event_t *ev);
static void ngx_relay_sched_list_thread(void *data, ngx_log_t *log);
static void ngx_relay_sched_old_notes(ngx_relay_sched_t *sc);
static void ngx_relay_sched_order(ngx_relay_sched_t *sc,
    ngx_relay_sched_list_t *ls);
static int ngx_cdecl ngx_relay_sched_cmp_ino(const void *a, const void *b);
static void ngx_relay_sched_listed(ngx_event_t *ev);
static void ngx_relay_sched_sweep(ngx_relay_sched_t *sc);
static ngx_int_t ngx_relay_sched_todo_add(ngx_relay_sched_todo_t *t);
static void ngx_relay_sched_read_more(ngx_relay_sched_t *sc);
static void ngx_relay_sched_batch_thread(void *data, ngx_log_t *log);
static void ngx_relay_sched_recall(ngx_relay_sched_read_t *r);
static void ngx_relay_sched_read_one(ngx_relay_sched_t *sc,
    ngx_relay_sched_read_t *r, ngx_uint_t *debris);
static void ngx_relay_sched_batch_done(ngx_event_t *ev);
static void ngx_relay_sched_apply(ngx_relay_sched_t *sc,
    ngx_relay_sched_read_t *r);
static void ngx_relay_sched_scan_end(ngx_relay_sched_t *sc);
static ngx_int_t ngx_relay_sched_notes_init(ngx_relay_sched_t *sc,
    ngx_cycle_t *cycle);
static void ngx_relay_sched_notes_handler(ngx_event_t *ev);
static void ngx_relay_sched_notes_thread(void *data, ngx_log_t *log);
static void ngx_relay_sched_note_read(ngx_relay_sched_notes_t *nt,
    char *name);
static void ngx_relay_sched_note_parse(ngx_relay_sched_notes_t *nt,
    u_char *p, u_char *last);
static void ngx_relay_sched_notes_done(ngx_event_t *ev);
static void ngx_relay_sched_hand_over(ngx_relay_sched_t *sc,
    ngx_relay_sched_entry_t *e);
static void ngx_relay_sched_handover_handler(ngx_event_t *ev);
static void ngx_relay_sched_handover_thread(void *data, ngx_log_t *log);
static void ngx_relay_sched_handover_done(ngx_event_t *ev);
static void ngx_relay_sched_note_exit(ngx_relay_sched_t *sc);
static ngx_int_t ngx_relay_sched_write_note(int notes_fd, u_char *text,
    size_t len, const char *kind);
static void ngx_relay_sched_note_id(ngx_array_t *note, u_char *id,
    size_t len);
static ngx_uint_t ngx_relay_sched_valid_id(u_char *p, size_t len);
static ngx_int_t ngx_relay_sched_snapshot_init(ngx_relay_sched_t *sc);
static int ngx_relay_sched_open_dir(ngx_relay_sched_t *sc, char *name);
static uint32_t ngx_relay_sched_fingerprint(ngx_array_t *domains);
static void ngx_relay_sched_snapshot_handler(ngx_event_t *ev);
static void ngx_relay_sched_snapshot_slice(ngx_relay_sched_t *sc);
static ngx_int_t ngx_relay_sched_snapshot_add(ngx_relay_sched_t *sc,
    ngx_relay_sched_entry_t *e);
static void ngx_relay_sched_snapshot_written(ngx_relay_snapshot_writer_t *w,
    ngx_int_t rc);
static void ngx_relay_sched_snapshot_load(ngx_relay_sched_list_t *ls);
static void ngx_relay_sched_snapshot_notes(ngx_relay_sched_t *sc,
    ngx_relay_snapshot_t *sn);
static void ngx_relay_sched_snapshot_drop(ngx_relay_sched_t *sc);


ngx_int_t
ngx_relay_sched_init(ngx_relay_sched_t *sc, ngx_cycle_t *cycle)
{
    sc->log = cycle->log;
    sc->started = ngx_current_msec;
    sc->spool.workers = sc->workers;
    sc->spool.worker = sc->worker;

    if (ngx_relay_spool_init(&sc->spool, cycle) != NGX_OK) {
        return NGX_ERROR;
    }

    sc->spool.queued = ngx_relay_sched_queued;
    sc->spool.data = sc;

    ngx_queue_init(&sc->record_wait);

    ngx_rbtree_init(&sc->dests, &sc->dests_sentinel,
                    ngx_str_rbtree_insert_value);

    if (ngx_relay_sched_index_grow(sc) != NGX_OK) {
        return NGX_ERROR;
    }

    sc->due_event.handler = ngx_relay_sched_due_handler;
    sc->due_event.data = sc;
    sc->due_event.log = cycle->log;
    sc->due_event.cancelable = 1;

    sc->dests_event.handler = ngx_relay_sched_dests_handler;
    sc->dests_event.data = sc;
    sc->dests_event.log = cycle->log;
    sc->dests_event.cancelable = 1;

    sc->scan_event.handler = ngx_relay_sched_scan_handler;
    sc->scan_event.data = sc;
    sc->scan_event.log = cycle->log;
    sc->scan_event.cancelable = 1;

    sc->notes_fd = -1;

    if (ngx_relay_sched_notes_init(sc, cycle) != NGX_OK) {
        ngx_log_error(NGX_LOG_ALERT, cycle->log, 0,
                      "relay queue: no notes from other processes, "
                      "changes by operators wait for a queue scan");
    }

    if (ngx_relay_sched_snapshot_init(sc) != NGX_OK) {
        ngx_log_error(NGX_LOG_WARN, cycle->log, 0,
                      "relay queue: no schedule snapshots, a restart reads "
                      "every queue file's header");
    }

    /* the first scan builds the schedule from what is on disk */

    ngx_add_timer(&sc->scan_event, 1);

    return NGX_OK;
}


/*
 * Look at the whole queue again: list it and read what is not known, or
 * with "refresh" (an operator changed files without naming them) read
 * every header again.
 */

void
ngx_relay_sched_scan_now(ngx_relay_sched_t *sc, ngx_uint_t refresh)
{
    if (ngx_exiting || ngx_terminate) {
        return;
    }

    sc->refresh |= refresh;

    if (sc->scanning) {
        sc->rescan = 1;
        return;
    }

    if (sc->scan_event.timer_set) {
        ngx_del_timer(&sc->scan_event);
    }

    ngx_add_timer(&sc->scan_event, 1);
}


void
ngx_relay_sched_exit(ngx_relay_sched_t *sc)
{
    if (ngx_exiting && !ngx_terminate) {
        ngx_relay_sched_note_exit(sc);
    }

    if (sc->scan_event.timer_set) {
        ngx_del_timer(&sc->scan_event);
    }

    if (sc->due_event.timer_set) {
        ngx_del_timer(&sc->due_event);
    }

    if (sc->handover_event.timer_set) {
        ngx_del_timer(&sc->handover_event);
    }

    if (sc->dests_event.timer_set) {
        ngx_del_timer(&sc->dests_event);
    }

    if (sc->snapshot_event.timer_set) {
        ngx_del_timer(&sc->snapshot_event);
    }

    ngx_relay_snapshot_free(sc->snapshot);
    sc->snapshot = NULL;

    if (sc->notes) {
        ngx_close_connection(sc->notes);
        sc->notes = NULL;
    }

    if (sc->notes_fd != -1) {
        (void) close(sc->notes_fd);
        sc->notes_fd = -1;
    }

    ngx_relay_spool_exit(&sc->spool);

    if (sc->spool.queue_fd > 0) {
        (void) close(sc->spool.queue_fd);
        sc->spool.queue_fd = -1;
    }
}


/* ---------------------------------------------------------------- entries */


static ngx_relay_sched_entry_t *
ngx_relay_sched_entry(ngx_relay_sched_t *sc, u_char *id, size_t len)
{
    ngx_uint_t                i;
    ngx_relay_sched_entry_t  *e, *chunk;

    if (len == 0 || len > NGX_RELAY_ID_LEN) {
        return NULL;
    }

    if (sc->free == NULL) {

        /* entries come in chunks: no malloc() header per message */

        chunk = ngx_alloc(NGX_RELAY_SCHED_CHUNK
                          * sizeof(ngx_relay_sched_entry_t), sc->log);
        if (chunk == NULL) {
            return NULL;
        }

        for (i = 0; i < NGX_RELAY_SCHED_CHUNK; i++) {
            chunk[i].more = (ngx_relay_sched_dest_t **) sc->free;
            sc->free = &chunk[i];
        }
    }

    e = sc->free;
    sc->free = (ngx_relay_sched_entry_t *) e->more;

    ngx_memzero(e, sizeof(ngx_relay_sched_entry_t));

    e->heap = NGX_RELAY_SCHED_NONE;
    e->state = ngx_relay_sched_idle;
    e->gen = sc->gen;
    e->arrival = ngx_time();
    e->id_len = (u_char) len;
    ngx_memcpy(e->id, id, len);
    e->hash = ngx_murmur_hash2(id, len);

    if (ngx_relay_sched_index_add(sc, e) != NGX_OK) {
        e->more = (ngx_relay_sched_dest_t **) sc->free;
        sc->free = e;
        return NULL;
    }

    return e;
}


static void
ngx_relay_sched_entry_free(ngx_relay_sched_t *sc, ngx_relay_sched_entry_t *e)
{
    if (e->probe && e->probe->prober == e) {
        e->probe->prober = NULL;
    }

    ngx_relay_sched_detach(sc, e);
    ngx_relay_sched_count(sc, e, -1);
    ngx_relay_sched_drop_dests(sc, e);
    ngx_relay_sched_index_del(sc, e);

    e->more = (ngx_relay_sched_dest_t **) sc->free;
    sc->free = e;

    sc->changes++;
}


static ngx_relay_sched_entry_t *
ngx_relay_sched_find(ngx_relay_sched_t *sc, u_char *id, size_t len)
{
    return *ngx_relay_sched_index_slot(sc, ngx_murmur_hash2(id, len), id,
                                       len);
}


/* the index: open addressing, linear probing, at most half full */

static ngx_relay_sched_entry_t **
ngx_relay_sched_index_slot(ngx_relay_sched_t *sc, uint32_t hash, u_char *id,
    size_t len)
{
    ngx_uint_t                i, mask;
    ngx_relay_sched_entry_t  *e;

    mask = sc->index_size - 1;

    for (i = hash & mask; /* void */ ; i = (i + 1) & mask) {
        e = sc->index[i];

        if (e == NULL
            || (e->hash == hash && e->id_len == len
                && ngx_memcmp(e->id, id, len) == 0))
        {
            return &sc->index[i];
        }
    }
}


static ngx_int_t
ngx_relay_sched_index_add(ngx_relay_sched_t *sc, ngx_relay_sched_entry_t *e)
{
    if ((sc->nindex + 1) * 2 > sc->index_size
        && ngx_relay_sched_index_grow(sc) != NGX_OK)
    {
        return NGX_ERROR;
    }

    *ngx_relay_sched_index_slot(sc, e->hash, e->id, e->id_len) = e;
    sc->nindex++;

    return NGX_OK;
}


/* removal shifts the entries of the probe run back: no tombstones */

static void
ngx_relay_sched_index_del(ngx_relay_sched_t *sc, ngx_relay_sched_entry_t *e)
{
    ngx_uint_t                i, j, k, mask;
    ngx_relay_sched_entry_t **slot;

    slot = ngx_relay_sched_index_slot(sc, e->hash, e->id, e->id_len);
    if (*slot != e) {
        return;
    }

    mask = sc->index_size - 1;
    i = slot - sc->index;
    j = i;

    for ( ;; ) {
        j = (j + 1) & mask;

        if (sc->index[j] == NULL) {
            break;
        }

        k = sc->index[j]->hash & mask;

        /* k, the home of j's entry, cyclically outside (i, j]: move it */

        if ((i <= j) ? (k <= i || k > j) : (k <= i && k > j)) {
            sc->index[i] = sc->index[j];
            i = j;
        }
    }

    sc->index[i] = NULL;
    sc->nindex--;
}


static ngx_int_t
ngx_relay_sched_index_grow(ngx_relay_sched_t *sc)
{
    ngx_uint_t                 i, size;
    ngx_relay_sched_entry_t  **old, *e;

    old = sc->index;
    size = sc->index_size;

    sc->index_size = size ? size * 2 : 1024;
    sc->index = ngx_calloc(sc->index_size * sizeof(ngx_relay_sched_entry_t *),
                           sc->log);
    if (sc->index == NULL) {
        sc->index = old;
        sc->index_size = size;
        return NGX_ERROR;
    }

    for (i = 0; i < size; i++) {
        e = old[i];

        if (e) {
            *ngx_relay_sched_index_slot(sc, e->hash, e->id, e->id_len) = e;
        }
    }

    ngx_free(old);

    return NGX_OK;
}


/* ------------------------------------------------------------------- heap */


static ngx_int_t
ngx_relay_sched_heap_push(ngx_relay_sched_t *sc, ngx_relay_sched_entry_t *e)
{
    ngx_uint_t                 size;
    ngx_relay_sched_entry_t  **heap;

    if (sc->nheap == sc->heap_size) {
        size = sc->heap_size ? sc->heap_size * 2 : 1024;

        heap = ngx_alloc(size * sizeof(ngx_relay_sched_entry_t *), sc->log);
        if (heap == NULL) {
            return NGX_ERROR;
        }

        if (sc->nheap) {
            ngx_memcpy(heap, sc->heap,
                       sc->nheap * sizeof(ngx_relay_sched_entry_t *));
        }

        ngx_free(sc->heap);
        sc->heap = heap;
        sc->heap_size = size;
    }

    e->heap = sc->nheap;
    sc->heap[sc->nheap++] = e;

    ngx_relay_sched_heap_up(sc, e->heap);

    return NGX_OK;
}


static void
ngx_relay_sched_heap_del(ngx_relay_sched_t *sc, ngx_relay_sched_entry_t *e)
{
    ngx_uint_t                i;
    ngx_relay_sched_entry_t  *last;

    i = e->heap;
    e->heap = NGX_RELAY_SCHED_NONE;

    last = sc->heap[--sc->nheap];

    if (last == e) {
        return;
    }

    sc->heap[i] = last;
    last->heap = i;

    ngx_relay_sched_heap_up(sc, i);
    ngx_relay_sched_heap_down(sc, last->heap);
}


static void
ngx_relay_sched_heap_up(ngx_relay_sched_t *sc, ngx_uint_t i)
{
    ngx_uint_t                parent;
    ngx_relay_sched_entry_t  *e;

    e = sc->heap[i];

    while (i > 0) {
        parent = (i - 1) / 2;

        if (sc->heap[parent]->due <= e->due) {
            break;
        }

        sc->heap[i] = sc->heap[parent];
        sc->heap[i]->heap = i;
        i = parent;
    }

    sc->heap[i] = e;
    e->heap = i;
}


static void
ngx_relay_sched_heap_down(ngx_relay_sched_t *sc, ngx_uint_t i)
{
    ngx_uint_t                child;
    ngx_relay_sched_entry_t  *e;

    e = sc->heap[i];

    for ( ;; ) {
        child = 2 * i + 1;

        if (child >= sc->nheap) {
            break;
        }

        if (child + 1 < sc->nheap
            && sc->heap[child + 1]->due < sc->heap[child]->due)
        {
            child++;
        }

        if (e->due <= sc->heap[child]->due) {
            break;
        }

        sc->heap[i] = sc->heap[child];
        sc->heap[i]->heap = i;
        i = child;
    }

    sc->heap[i] = e;
    e->heap = i;
}


/* --------------------------------------------------------- entry states */


/* out of the heap or the parked list: the entry is nowhere to run from */

static void
ngx_relay_sched_detach(ngx_relay_sched_t *sc, ngx_relay_sched_entry_t *e)
{
    if (e->heap != NGX_RELAY_SCHED_NONE) {
        ngx_relay_sched_heap_del(sc, e);
    }

    if (e->state == ngx_relay_sched_parked) {
        ngx_relay_sched_unpark(sc, e);
    }
}


static void
ngx_relay_sched_wait(ngx_relay_sched_t *sc, ngx_relay_sched_entry_t *e,
    time_t due)
{
    ngx_relay_sched_count(sc, e, -1);
    ngx_relay_sched_detach(sc, e);

    e->state = ngx_relay_sched_waiting;
    e->due = due;

    if (ngx_relay_sched_heap_push(sc, e) != NGX_OK) {
        e->state = ngx_relay_sched_idle;  /* the next scan tries again */
    }

    ngx_relay_sched_count(sc, e, 1);
}


/*
 * What a queue file says becomes the entry's state.  "attempted": right
 * after an attempt, whose local failures and unchanged next time must not
 * make the message due again at once.
 */

static void
ngx_relay_sched_set(ngx_relay_sched_t *sc, ngx_relay_sched_entry_t *e,
    ngx_relay_sched_summary_t *s, ngx_uint_t attempted)
{
    time_t  now, due, retry;

    now = ngx_time();

    /* what a snapshot may say of it: the file as it was read */

    sc->changes++;
    e->ino = s->ino;
    e->ctime = s->ctime;

    switch (s->outcome) {

    case NGX_RELAY_SCHED_GONE:
        ngx_relay_sched_entry_free(sc, e);
        return;

    case NGX_RELAY_SCHED_BUSY:
        e->ctime = 0;
        ngx_relay_sched_wait(sc, e, now + NGX_RELAY_SCHED_BUSY_RETRY);
        return;

    case NGX_RELAY_SCHED_FAILED:
        e->ctime = 0;
        ngx_relay_sched_wait(sc, e, attempted
                                    ? now + NGX_RELAY_SCHED_FAIL_RETRY : now);
        return;

    default:
        break;
    }

    ngx_relay_sched_count(sc, e, -1);
    ngx_relay_sched_detach(sc, e);

    e->arrival = s->arrival ? s->arrival : e->arrival;
    e->pending = (uint32_t) s->pending;
    e->tried = (s->attempts > 0);
    e->local = s->local;
    e->bounce = s->bounce;

    if (ngx_relay_sched_set_dests(sc, e, s) != NGX_OK) {
        ngx_log_error(NGX_LOG_ALERT, sc->log, 0,
                      "relay queue %*s: out of memory, destinations unknown",
                      (size_t) e->id_len, e->id);
    }

    e->expires = ngx_relay_sched_expires(sc, e);

    if (s->outcome == NGX_RELAY_SCHED_HELD) {
        e->state = ngx_relay_sched_held;
        ngx_relay_sched_count(sc, e, 1);
        return;
    }

    /*
     * Remote mail without delivery stays queued.  A file with nothing
     * pending (a crash between its last mark and its removal) is due: its
     * attempt removes it.
     */

    if (e->pending && !e->local && !e->bounce && sc->delivery == NULL) {
        e->state = ngx_relay_sched_idle;
        ngx_relay_sched_count(sc, e, 1);
        return;
    }

    due = s->next;

    if (attempted && due <= now) {

        /* local deliveries that failed: again in a minute, or sooner */

        retry = ngx_min((time_t) (sc->scan_interval / 1000),
                        NGX_RELAY_SCHED_LOCAL_RETRY);
        due = now + ngx_max(retry, 1);
    }

    ngx_relay_sched_count(sc, e, 1);
    ngx_relay_sched_wait(sc, e, due);
}


static ngx_int_t
ngx_relay_sched_set_dests(ngx_relay_sched_t *sc, ngx_relay_sched_entry_t *e,
    ngx_relay_sched_summary_t *s)
{
    ngx_uint_t               i;
    ngx_relay_sched_dest_t  *d, **more;

    ngx_relay_sched_drop_dests(sc, e);

    if (s->ndomains == 0) {
        return NGX_OK;
    }

    more = NULL;

    if (s->ndomains > 1) {
        more = ngx_alloc((s->ndomains - 1) * sizeof(ngx_relay_sched_dest_t *),
                         sc->log);
        if (more == NULL) {
            return NGX_ERROR;
        }
    }

    for (i = 0; i < s->ndomains; i++) {
        d = ngx_relay_sched_dest(sc, &s->domains[i], 1);
        if (d == NULL) {
            break;
        }

        d->messages++;
        ngx_relay_sched_dests_changed(sc);

        if (i == 0) {
            e->dest = d;

        } else {
            more[e->nmore++] = d;
        }
    }

    e->more = more;

    return (i == s->ndomains) ? NGX_OK : NGX_ERROR;
}


static void
ngx_relay_sched_drop_dests(ngx_relay_sched_t *sc, ngx_relay_sched_entry_t *e)
{
    ngx_uint_t               i;
    ngx_relay_sched_dest_t  *d;

    for (i = 0; i <= e->nmore; i++) {
        d = (i == 0) ? e->dest : e->more[i - 1];

        if (d == NULL) {
            continue;
        }

        d->messages--;
        ngx_relay_sched_dests_changed(sc);
        ngx_relay_sched_dest_gc(sc, d);
    }

    ngx_free(e->more);
    e->dest = NULL;
    e->more = NULL;
    e->nmore = 0;
}


/* the soonest lifetime of its destinations: mail past it is tried anyway */

static time_t
ngx_relay_sched_expires(ngx_relay_sched_t *sc, ngx_relay_sched_entry_t *e)
{
    time_t                   expires;
    ngx_uint_t               i;
    ngx_relay_retry_t        retry;
    ngx_relay_sched_dest_t  *d;

    if (sc->delivery == NULL || e->dest == NULL) {
        return 0;
    }

    expires = 0;

    for (i = 0; i <= e->nmore; i++) {
        d = (i == 0) ? e->dest : e->more[i - 1];

        ngx_relay_policy_retry(sc->policy, &d->node.str, &retry);

        if (expires == 0 || e->arrival + retry.lifetime < expires) {
            expires = e->arrival + retry.lifetime;
        }
    }

    return expires;
}


/* ---------------------------------------------------------------- figures */


static void
ngx_relay_sched_count(ngx_relay_sched_t *sc, ngx_relay_sched_entry_t *e,
    ngx_int_t n)
{
    ngx_uint_t                  s;
    ngx_relay_sched_figures_t  *f;

    if ((n > 0) == e->counted) {
        return;                      /* counted once, uncounted once */
    }

    e->counted = (n > 0);
    f = &sc->figures;

    f->messages += n;
    f->pending += n * (ngx_int_t) e->pending;
    f->deferred += n * e->tried;
    f->held += n * (e->state == ngx_relay_sched_held);
    f->active += n * (e->state == ngx_relay_sched_running);
    f->parked += n * (e->state == ngx_relay_sched_parked);

    s = (e->state == ngx_relay_sched_running) ? NGX_RELAY_QUEUE_ACTIVE
        : (e->state == ngx_relay_sched_held) ? NGX_RELAY_QUEUE_HELD
        : (e->state == ngx_relay_sched_parked) ? NGX_RELAY_QUEUE_PARKED
        : e->tried ? NGX_RELAY_QUEUE_DEFERRED : NGX_RELAY_QUEUE_NEW;

    f->states[s] += n;
    f->state_rcpts[s] += n * (ngx_int_t) e->pending;

    if (n > 0 && (f->oldest == 0 || e->arrival < f->oldest)) {
        f->oldest = e->arrival;

    } else if (n < 0 && e->arrival <= f->oldest && !f->oldest_stale) {
        f->oldest_stale = 1;
    }

    ngx_relay_sched_publish(sc);
}


/* live figures for the node's status and the queue gauges */

static void
ngx_relay_sched_publish(ngx_relay_sched_t *sc)
{
    ngx_uint_t                  s;
    ngx_relay_counters_t       *c;
    ngx_relay_sched_figures_t  *f;
    static ngx_event_t          oldest_event;

    c = sc->counters;
    f = &sc->figures;

    c->messages = f->messages;
    c->pending = f->pending;
    c->deferred = f->deferred;
    c->held = f->held;
    c->active = f->active;
    c->parked = f->parked;

    for (s = 0; s < NGX_RELAY_QUEUE_STATES; s++) {
        c->states[s] = f->states[s];
        c->state_rcpts[s] = f->state_rcpts[s];
    }

    if (!f->oldest_stale) {
        c->oldest = f->messages ? f->oldest : 0;
        return;
    }

    /* the oldest message left: found again by a walk, now and then */

    if (!oldest_event.timer_set && !ngx_exiting) {
        oldest_event.handler = ngx_relay_sched_oldest_handler;
        oldest_event.data = sc;
        oldest_event.log = sc->log;
        oldest_event.cancelable = 1;

        ngx_add_timer(&oldest_event, NGX_RELAY_SCHED_OLDEST_DELAY);
    }
}


static void
ngx_relay_sched_oldest_handler(ngx_event_t *ev)
{
    ngx_relay_sched_t *sc = ev->data;

    time_t                    oldest;
    ngx_uint_t                i;
    ngx_relay_sched_entry_t  *e;

    oldest = 0;

    for (i = 0; i < sc->index_size; i++) {
        e = sc->index[i];

        if (e && e->counted && (oldest == 0 || e->arrival < oldest)) {
            oldest = e->arrival;
        }
    }

    sc->figures.oldest = oldest;
    sc->figures.oldest_stale = 0;

    ngx_relay_sched_publish(sc);
}


/*
 * The destinations with the most mail, into this worker's slot of the
 * zone once a second while they change (a sequence lock for readers).
 */

static void
ngx_relay_sched_dests_changed(ngx_relay_sched_t *sc)
{
    if (!sc->dests_event.timer_set && !ngx_exiting && !ngx_terminate) {
        ngx_add_timer(&sc->dests_event, 1000);
    }
}


static void
ngx_relay_sched_dests_handler(ngx_event_t *ev)
{
    ngx_relay_sched_t  *sc = ev->data;

    ngx_rbtree_node_t        *node, *root, *sentinel;
    ngx_relay_counters_t     *c;
    ngx_relay_dest_figure_t   top[NGX_RELAY_TOP_DESTS];

    ngx_memzero(top, sizeof(top));

    root = sc->dests.root;
    sentinel = sc->dests.sentinel;

    if (root != sentinel) {
        for (node = ngx_rbtree_min(root, sentinel);
             node;
             node = ngx_rbtree_next(&sc->dests, node))
        {
            ngx_relay_sched_top(top, (ngx_relay_sched_dest_t *) node);
        }
    }

    c = sc->counters;

    (void) ngx_atomic_fetch_add(&c->dests_seq, 1);
    ngx_memory_barrier();
    ngx_memcpy(c->dests, top, sizeof(top));
    ngx_memory_barrier();
    (void) ngx_atomic_fetch_add(&c->dests_seq, 1);
}


/* into the sorted top list, if it has more mail than the last one there */

static void
ngx_relay_sched_top(ngx_relay_dest_figure_t *top, ngx_relay_sched_dest_t *d)
{
    size_t      len;
    ngx_uint_t  i;

    if (d->messages == 0
        || d->messages <= top[NGX_RELAY_TOP_DESTS - 1].messages)
    {
        return;
    }

    for (i = NGX_RELAY_TOP_DESTS - 1; i > 0; i--) {
        if (top[i - 1].messages >= d->messages) {
            break;
        }

        top[i] = top[i - 1];
    }

    len = ngx_min(d->node.str.len, sizeof(top[i].name) - 1);
    ngx_memcpy(top[i].name, d->node.str.data, len);
    top[i].name[len] = '\0';
    top[i].messages = (uint32_t) d->messages;
    top[i].unreachable = (d->dead_until != 0);
}


/* ----------------------------------------------------------- destinations */


static ngx_relay_sched_dest_t *
ngx_relay_sched_dest(ngx_relay_sched_t *sc, ngx_str_t *name,
    ngx_uint_t create)
{
    u_char                  *p;
    uint32_t                 hash;
    ngx_str_t                low;
    ngx_relay_sched_dest_t  *d;
    u_char                   buf[256];

    if (name->len == 0 || name->len > sizeof(buf)) {
        return NULL;
    }

    ngx_strlow(buf, name->data, name->len);
    low.data = buf;
    low.len = name->len;

    hash = ngx_crc32_short(low.data, low.len);

    d = (ngx_relay_sched_dest_t *) ngx_str_rbtree_lookup(&sc->dests, &low,
                                                         hash);
    if (d || !create) {
        return d;
    }

    d = ngx_calloc(sizeof(ngx_relay_sched_dest_t) + low.len, sc->log);
    if (d == NULL) {
        return NULL;
    }

    p = (u_char *) (d + 1);
    ngx_memcpy(p, low.data, low.len);

    d->node.str.data = p;
    d->node.str.len = low.len;
    d->node.node.key = hash;
    d->sched = sc;

    ngx_queue_init(&d->parked);

    d->probe.handler = ngx_relay_sched_probe_handler;
    d->probe.data = d;
    d->probe.log = sc->log;
    d->probe.cancelable = 1;

    ngx_rbtree_insert(&sc->dests, &d->node.node);

    return d;
}


/* a destination nobody waits for and that is reachable is forgotten */

static void
ngx_relay_sched_dest_gc(ngx_relay_sched_t *sc, ngx_relay_sched_dest_t *dest)
{
    if (dest->messages || dest->nparked || dest->prober
        || (dest->dead_until && dest->dead_until > ngx_time()))
    {
        return;
    }

    if (dest->probe.timer_set) {
        ngx_del_timer(&dest->probe);
    }

    ngx_rbtree_delete(&sc->dests, &dest->node.node);
    ngx_free(dest);
}


/*
 * Before a delivery to a domain: NULL to go ahead, or the destination
 * whose recipients are to be deferred without trying ("suspended").  The
 * first attempt after an unreachable destination's backoff probes it.
 */

ngx_relay_sched_dest_t *
ngx_relay_sched_suspended(ngx_relay_sched_t *sc, ngx_relay_sched_entry_t *e,
    ngx_str_t *domain)
{
    ngx_relay_sched_dest_t  *dest;

    dest = ngx_relay_sched_dest(sc, domain, 0);

    if (dest == NULL || dest->dead_until == 0 || dest->prober == e) {
        return NULL;
    }

    if (dest->prober == NULL && dest->dead_until <= ngx_time()) {
        dest->prober = e;
        e->probe = dest;
        return NULL;
    }

    return dest;
}


/* after a delivery to a domain: was the destination there? */

void
ngx_relay_sched_reached(ngx_relay_sched_t *sc, ngx_relay_sched_entry_t *e,
    ngx_str_t *domain, ngx_uint_t unreachable, u_char *dsn, u_char *reply,
    size_t reply_len, u_char *relay, size_t relay_len)
{
    time_t                   now, backoff;
    ngx_uint_t               probed;
    ngx_relay_retry_t        retry;
    ngx_relay_sched_dest_t  *dest;

    dest = ngx_relay_sched_dest(sc, domain, unreachable);
    if (dest == NULL) {
        return;
    }

    probed = (dest->prober == e);

    if (probed) {
        dest->prober = NULL;
        e->probe = NULL;
    }

    ngx_relay_sched_dests_changed(sc);

    if (!unreachable) {
        if (dest->dead_until) {
            ngx_log_error(NGX_LOG_NOTICE, sc->log, 0,
                          "relay destination %V is reachable again, "
                          "%ui waiting message(s) go on",
                          &dest->node.str, dest->nparked);

            dest->dead_until = 0;
            dest->failures = 0;
            ngx_relay_sched_dest_release(sc, dest, 1);
        }

        ngx_relay_sched_dest_gc(sc, dest);
        return;
    }

    now = ngx_time();

    /*
     * Attempts that were under way when the destination was found
     * unreachable fail as well: one failure per round, not per attempt.
     */

    if (dest->dead_until > now && !probed) {
        return;
    }

    ngx_relay_policy_retry(sc->policy, &dest->node.str, &retry);
    backoff = ngx_relay_policy_backoff(&retry, ++dest->failures);
    dest->dead_until = now + backoff;

    ngx_cpystrn(dest->dsn, dsn, sizeof(dest->dsn));
    dest->reply_len = ngx_min(reply_len, sizeof(dest->reply));
    ngx_memcpy(dest->reply, reply, dest->reply_len);
    dest->relay_len = ngx_min(relay_len, sizeof(dest->relay));
    ngx_memcpy(dest->relay, relay, dest->relay_len);

    ngx_log_error(NGX_LOG_NOTICE, sc->log, 0,
                  "relay destination %V is unreachable (%ui in a row): its "
                  "mail waits %T s", &dest->node.str, dest->failures,
                  backoff);

    if (dest->probe.timer_set) {
        ngx_del_timer(&dest->probe);
    }

    ngx_add_timer(&dest->probe, (ngx_msec_t) backoff * 1000);

    ngx_relay_sched_dest_release(sc, dest, 0);
}


/* parked entries back into the heap: all of them, or the expired ones */

static void
ngx_relay_sched_dest_release(ngx_relay_sched_t *sc,
    ngx_relay_sched_dest_t *dest, ngx_uint_t all)
{
    time_t                    now;
    ngx_queue_t              *q, *next;
    ngx_relay_sched_entry_t  *e;

    now = ngx_time();

    for (q = ngx_queue_head(&dest->parked);
         q != ngx_queue_sentinel(&dest->parked);
         q = next)
    {
        next = ngx_queue_next(q);
        e = ngx_queue_data(q, ngx_relay_sched_entry_t, park);

        if (all || (e->expires && e->expires <= now)) {
            ngx_relay_sched_wait(sc, e, now);
        }
    }

    ngx_relay_sched_dispatch(sc);
}


/* an unreachable destination's time has come: one message probes it */

static void
ngx_relay_sched_probe_handler(ngx_event_t *ev)
{
    ngx_relay_sched_dest_t  *dest = ev->data;

    ngx_queue_t              *q;
    ngx_relay_sched_t        *sc;
    ngx_relay_sched_entry_t  *e;

    sc = dest->sched;

    if (ngx_exiting || ngx_terminate || dest->prober) {
        return;
    }

    if (ngx_queue_empty(&dest->parked)) {
        ngx_relay_sched_dest_gc(sc, dest);  /* the next attempt probes */
        return;
    }

    q = ngx_queue_head(&dest->parked);
    e = ngx_queue_data(q, ngx_relay_sched_entry_t, park);

    dest->prober = e;
    e->probe = dest;

    ngx_relay_sched_wait(sc, e, ngx_time());
    ngx_relay_sched_dest_release(sc, dest, 0);
}


/*
 * A due entry whose destinations are all unreachable waits for them
 * instead (unless it has local work, an operator's bounce, or is past
 * its lifetime).  One of them past its backoff: this entry probes it.
 */

static ngx_uint_t
ngx_relay_sched_park(ngx_relay_sched_t *sc, ngx_relay_sched_entry_t *e,
    time_t now)
{
    ngx_uint_t               i;
    ngx_relay_sched_dest_t  *d, *wait;

    if (e->local || e->bounce || e->dest == NULL
        || (e->expires && e->expires <= now))
    {
        return 0;
    }

    wait = NULL;

    for (i = 0; i <= e->nmore; i++) {
        d = (i == 0) ? e->dest : e->more[i - 1];

        if (d->dead_until == 0 || d->prober == e) {
            return 0;
        }

        if (d->prober == NULL && d->dead_until <= now) {
            d->prober = e;
            e->probe = d;
            return 0;
        }

        if (wait == NULL) {
            wait = d;
        }
    }

    ngx_relay_sched_count(sc, e, -1);

    e->state = ngx_relay_sched_parked;
    e->waits = wait;
    ngx_queue_insert_tail(&wait->parked, &e->park);
    wait->nparked++;

    ngx_relay_sched_count(sc, e, 1);

    if (!wait->probe.timer_set && wait->prober == NULL) {
        ngx_add_timer(&wait->probe,
                      (ngx_msec_t) ngx_max(wait->dead_until - now, 0) * 1000);
    }

    return 1;
}


static void
ngx_relay_sched_unpark(ngx_relay_sched_t *sc, ngx_relay_sched_entry_t *e)
{
    ngx_queue_remove(&e->park);

    e->waits->nparked--;
    e->waits = NULL;
    e->state = ngx_relay_sched_idle;
}


/* --------------------------------------------------------------- running */


static void
ngx_relay_sched_dispatch(ngx_relay_sched_t *sc)
{
    time_t                    now;
    ngx_msec_int_t            delay;
    ngx_time_t               *tp;
    ngx_relay_sched_entry_t  *e;

    if (ngx_exiting || ngx_terminate) {
        return;
    }

    now = ngx_time();

    while (sc->nheap && sc->heap[0]->due <= now
           && sc->busy < NGX_RELAY_SCHED_MAX_BUSY)
    {
        e = sc->heap[0];
        ngx_relay_sched_heap_del(sc, e);

        if (ngx_relay_sched_park(sc, e, now)) {
            continue;
        }

        ngx_relay_sched_run(sc, e, NULL);
    }

    if (sc->nheap == 0 || sc->busy >= NGX_RELAY_SCHED_MAX_BUSY) {
        return;                        /* an attempt's end comes back here */
    }

    /* to the millisecond: a retry due at 12:00:00 starts at 12:00:00 */

    tp = ngx_timeofday();
    delay = (ngx_msec_int_t) (sc->heap[0]->due - tp->sec) * 1000
            - (ngx_msec_int_t) tp->msec;

    if (delay < 1) {
        delay = 1;
    }

    ngx_add_timer(&sc->due_event, (ngx_msec_t) delay);
}


static void
ngx_relay_sched_due_handler(ngx_event_t *ev)
{
    ngx_relay_sched_dispatch(ev->data);
}


static void
ngx_relay_sched_run(ngx_relay_sched_t *sc, ngx_relay_sched_entry_t *e,
    ngx_relay_spool_writer_t *w)
{
    ngx_relay_sched_count(sc, e, -1);
    ngx_relay_sched_detach(sc, e);

    e->state = ngx_relay_sched_running;
    ngx_relay_sched_count(sc, e, 1);

    sc->busy++;

    if (ngx_relay_attempt_start(sc, e, w) == NGX_OK) {
        return;
    }

    sc->busy--;

    if (w) {
        ngx_relay_spool_release(w);  /* the file stays: a retry finds it */
    }

    ngx_relay_sched_wait(sc, e, ngx_time() + NGX_RELAY_SCHED_BUSY_RETRY);
}


/* the spool hands over a durable message, its lock still held */

static void
ngx_relay_sched_queued(ngx_relay_spool_t *sp, ngx_relay_spool_writer_t *w)
{
    ngx_relay_sched_t  *sc = sp->data;

    ngx_relay_sched_entry_t  *e;

    e = ngx_relay_sched_find(sc, w->id.data, w->id.len);

    if (e == NULL) {
        e = ngx_relay_sched_entry(sc, w->id.data, w->id.len);
    }

    if (e == NULL || e->state == ngx_relay_sched_running) {
        ngx_relay_spool_release(w);    /* the file stays: a scan finds it */
        return;
    }

    if (ngx_exiting && sc->exiting_since == 0) {

        /* the next generation may have scanned before this one was made */

        sc->exiting_since = ngx_time();
    }

    ngx_relay_sched_run(sc, e, w);
}


void
ngx_relay_sched_attempted(ngx_relay_sched_t *sc, ngx_relay_sched_entry_t *e,
    ngx_relay_sched_summary_t *s)
{
    ngx_relay_sched_dest_t  *probe;

    sc->busy--;

    /* a probe that did not reach its destination: the next one goes */

    probe = e->probe;

    if (probe && probe->prober == e) {
        probe->prober = NULL;

        if (!probe->probe.timer_set && !ngx_exiting) {
            ngx_add_timer(&probe->probe, 1);
        }
    }

    e->probe = NULL;

    if (ngx_exiting && s->outcome == NGX_RELAY_SCHED_QUEUED
        && s->ndomains && sc->delivery)
    {
        ngx_relay_sched_hand_over(sc, e);
    }

    ngx_relay_sched_set(sc, e, s, 1);
    ngx_relay_sched_dispatch(sc);
}


/*
 * An exiting worker attempts no remote delivery (its connections would
 * keep it alive): the mail it takes meanwhile goes to the next generation
 * at once, in a note written by a thread task, rather than when this
 * worker's last session ends.
 */

static void
ngx_relay_sched_hand_over(ngx_relay_sched_t *sc, ngx_relay_sched_entry_t *e)
{
    if (sc->notes_fd == -1) {
        return;
    }

    if (sc->handover == NULL) {
        sc->handover = ngx_array_create(ngx_cycle->pool, 16,
                                        NGX_RELAY_ID_LEN + 2);
        if (sc->handover == NULL) {
            return;
        }

        sc->handover_event.handler = ngx_relay_sched_handover_handler;
        sc->handover_event.data = sc;
        sc->handover_event.log = sc->log;
        sc->handover_event.cancelable = 1;
    }

    ngx_relay_sched_note_id(sc->handover, e->id, e->id_len);

    if (!sc->handover_event.timer_set) {
        ngx_add_timer(&sc->handover_event, 100);
    }
}


static void
ngx_relay_sched_handover_handler(ngx_event_t *ev)
{
    ngx_relay_sched_t  *sc = ev->data;

    size_t               len;
    ngx_thread_task_t   *task;
    ngx_relay_note_t    *nt;

    len = sc->handover->nelts * sc->handover->size;

    task = ngx_calloc(sizeof(ngx_thread_task_t) + sizeof(ngx_relay_note_t)
                      + len, sc->log);
    if (task == NULL) {
        return;                    /* the note at exit has them too */
    }

    nt = (ngx_relay_note_t *) (task + 1);
    nt->sched = sc;
    nt->text = (u_char *) (nt + 1);
    nt->len = len;

    ngx_memcpy(nt->text, sc->handover->elts, len);
    sc->handover->nelts = 0;

    task->ctx = nt;
    task->handler = ngx_relay_sched_handover_thread;
    task->event.handler = ngx_relay_sched_handover_done;
    task->event.data = task;

    if (ngx_thread_task_post(sc->spool.thread_pool, task) != NGX_OK) {
        ngx_free(task);
    }
}


static void
ngx_relay_sched_handover_thread(void *data, ngx_log_t *log)
{
    ngx_relay_note_t  *nt = data;

    nt->rc = ngx_relay_sched_write_note(nt->sched->notes_fd, nt->text,
                                        nt->len, "handover");
}


static void
ngx_relay_sched_handover_done(ngx_event_t *ev)
{
    ngx_thread_task_t  *task = ev->data;

    ngx_relay_note_t  *nt;

    nt = task->ctx;

    if (nt->rc != NGX_OK) {
        ngx_log_error(NGX_LOG_ALERT, nt->sched->log, ngx_errno,
                      "relay queue: the note for the next workers failed, "
                      "they find that mail at their next scan");
    }

    ngx_free(task);
}


/* ------------------------------------------------------------------ scans */


static void
ngx_relay_sched_scan_handler(ngx_event_t *ev)
{
    ngx_relay_sched_t  *sc = ev->data;

    ngx_thread_task_t       *task;
    ngx_relay_sched_list_t  *ls;

    if (ngx_exiting || ngx_terminate) {
        return;
    }

    if (sc->scanning) {
        sc->rescan = 1;
        return;
    }

    task = ngx_calloc(sizeof(ngx_thread_task_t)
                      + sizeof(ngx_relay_sched_list_t), ev->log);
    if (task == NULL) {
        goto next;
    }

    ls = (ngx_relay_sched_list_t *) (task + 1);
    ls->sched = sc;
    ls->sort = !sc->rebuilt;
    ls->mode = sc->refresh ? NGX_RELAY_SCHED_NOTE : NGX_RELAY_SCHED_SCAN;

    sc->refresh = 0;

    task->ctx = ls;
    task->handler = ngx_relay_sched_list_thread;
    task->event.handler = ngx_relay_sched_listed;
    task->event.data = task;

    if (ngx_thread_task_post(sc->spool.thread_pool, task) != NGX_OK) {
        ngx_free(task);
        goto next;
    }

    /* entries made from now on count as seen by this scan */

    sc->gen++;
    sc->scanning++;
    return;

next:

    ngx_add_timer(ev, sc->scan_interval);
}


static void
ngx_relay_sched_list_thread(void *data, ngx_log_t *log)
{
    ngx_relay_sched_list_t  *ls = data;

    DIR                     *dir;
    size_t                   len;
    ngx_uint_t               size;
    struct dirent           *de;
    ngx_relay_sched_t         *sc;
    ngx_relay_sched_listed_t  *names, *n;

    sc = ls->sched;

    /* journals of dead workers first: their messages are whole then */

    if (sc->spool.journal.dir_fd != -1) {
        (void) ngx_relay_journal_recover(sc->spool.journal.dir_fd,
                                         sc->spool.queue_fd, sc->log);
    }

    if (sc->worker == 0) {
        ngx_relay_sched_old_notes(sc);
    }

    dir = ngx_relay_spool_opendir(sc->spool.queue_fd);
    if (dir == NULL) {
        ls->err = errno;
        return;
    }

    names = NULL;
    size = 0;

    while ((de = readdir(dir)) != NULL) {
        len = ngx_strlen(de->d_name);

        /* "." entries and anything that is not a queue id of the share */

        if (!ngx_relay_sched_valid_id((u_char *) de->d_name, len)
            || ngx_relay_spool_slot((u_char *) de->d_name, len, sc->workers)
               != sc->worker)
        {
            continue;
        }

        if (ls->nnames == size) {
            size = size ? size * 2 : 256;
            n = realloc(names, size * sizeof(ngx_relay_sched_listed_t));
            if (n == NULL) {
                break;
            }

            names = n;
        }

        n = &names[ls->nnames];
        n->mtime = 0;
        n->record = NULL;

        n->name = (u_char *) strdup(de->d_name);
        if (n->name == NULL) {
            break;
        }

        n->ino = de->d_ino;
        ls->nnames++;
    }

    (void) closedir(dir);

    ls->names = names;

    if (ls->sort && ls->nnames) {
        ngx_relay_sched_snapshot_load(ls);
        ngx_relay_sched_order(sc, ls);
    }
}


/*
 * The first scan reads the headers in the order of their inodes, which is
 * about the order of their blocks on the disk: with a cold cache (after a
 * reboot) a million queue files are read at the disk's sequential speed
 * instead of one seek each.  Due ones first all the same (a file's time is
 * its next attempt), so that a restart delivers them at once.  A file that
 * a snapshot's record still describes (same inode, same change time) is
 * not read at all.
 */

static void
ngx_relay_sched_order(ngx_relay_sched_t *sc, ngx_relay_sched_list_t *ls)
{
    time_t                     now;
    u_char                    *record;
    ngx_uint_t                 i, due;
    struct stat                st;
    ngx_relay_snapshot_rec_t   r;
    ngx_relay_sched_listed_t  *n, *ordered;

    ngx_qsort(ls->names, ls->nnames, sizeof(ngx_relay_sched_listed_t),
              ngx_relay_sched_cmp_ino);

    now = time(NULL);
    due = 0;

    for (i = 0; i < ls->nnames; i++) {
        n = &ls->names[i];

        if (fstatat(sc->spool.queue_fd, (char *) n->name, &st,
                    AT_SYMLINK_NOFOLLOW) == 0)
        {
            n->mtime = st.st_mtime;

            record = ls->snapshot
                     ? ngx_relay_snapshot_find(ls->snapshot, n->name,
                                               ngx_strlen(n->name))
                     : NULL;

            if (record) {
                ngx_relay_snapshot_decode(record, &r, NULL);

                if (r.ino == (uint64_t) st.st_ino
                    && r.ctime == (int64_t) st.st_ctim.tv_sec * 1000000000
                                  + st.st_ctim.tv_nsec)
                {
                    n->record = record;
                }
            }
        }

        due += (n->mtime <= now);
    }

    if (due == 0 || due == ls->nnames) {
        return;
    }

    ordered = malloc(ls->nnames * sizeof(ngx_relay_sched_listed_t));
    if (ordered == NULL) {
        return;                          /* read in inode order only */
    }

    n = ordered;

    for (i = 0; i < ls->nnames; i++) {
        if (ls->names[i].mtime <= now) {
            *n++ = ls->names[i];
        }
    }

    for (i = 0; i < ls->nnames; i++) {
        if (ls->names[i].mtime > now) {
            *n++ = ls->names[i];
        }
    }

    free(ls->names);
    ls->names = ordered;
}


/* thread side: notes are hints for running workers; old ones go */

static void
ngx_relay_sched_old_notes(ngx_relay_sched_t *sc)
{
    DIR            *dir;
    time_t          old;
    struct stat     st;
    struct dirent  *de;

    if (sc->notes_fd == -1) {
        return;
    }

    dir = ngx_relay_spool_opendir(sc->notes_fd);
    if (dir == NULL) {
        return;
    }

    old = time(NULL) - NGX_RELAY_SCHED_NOTE_AGE;

    while ((de = readdir(dir)) != NULL) {
        if (de->d_name[0] == '.' && (de->d_name[1] == '\0'
                                     || (de->d_name[1] == '.'
                                         && de->d_name[2] == '\0')))
        {
            continue;
        }

        if (fstatat(sc->notes_fd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0
            && S_ISREG(st.st_mode) && st.st_mtime < old)
        {
            (void) unlinkat(sc->notes_fd, de->d_name, 0);
        }
    }

    (void) closedir(dir);
}


static int ngx_cdecl
ngx_relay_sched_cmp_ino(const void *a, const void *b)
{
    const ngx_relay_sched_listed_t  *x = a, *y = b;

    return (x->ino > y->ino) - (x->ino < y->ino);
}


static void
ngx_relay_sched_listed(ngx_event_t *ev)
{
    ngx_thread_task_t  *task = ev->data;

    ngx_uint_t                i, known;
    ngx_relay_sched_t        *sc;
    ngx_relay_sched_todo_t    todo;
    ngx_relay_sched_list_t   *ls;
    ngx_relay_sched_entry_t  *e;

    ls = task->ctx;
    sc = ls->sched;

    if (ls->err) {
        ngx_log_error(NGX_LOG_CRIT, sc->log, ls->err,
                      "relay queue scan failed");
    }

    if (ls->snapshot) {
        ngx_relay_snapshot_free(sc->snapshot);
        sc->snapshot = ls->snapshot;     /* its records are read from */
    }

    known = 0;

    for (i = 0; i < ls->nnames; i++) {
        e = ngx_relay_sched_find(sc, ls->names[i].name,
                                 ngx_strlen(ls->names[i].name));

        if (e) {
            e->gen = sc->gen;
            known++;

            if (ls->mode != NGX_RELAY_SCHED_NOTE) {
                free(ls->names[i].name);
                continue;
            }

            ls->names[i].record = NULL;  /* changed since: read it */
        }

        todo.name = ls->names[i].name;
        todo.mode = ls->mode;
        todo.record = ls->names[i].record;
        todo.mtime = ls->names[i].mtime;

        if (ngx_relay_sched_todo_add(&todo) != NGX_OK) {
            free(ls->names[i].name);
        }
    }

    ngx_log_debug3(NGX_LOG_DEBUG_CORE, sc->log, 0,
                   "relay queue scan: %ui message(s), %ui known, %ui to read",
                   ls->nnames, known, ls->nnames - known);

    if (!ls->err) {
        ngx_relay_sched_sweep(sc);
    }

    free(ls->names);
    ngx_free(task);

    ngx_relay_sched_read_more(sc);

    if (--sc->scanning == 0) {
        ngx_relay_sched_scan_end(sc);
    }
}


/* entries whose files a scan did not see: gone without a word */

static void
ngx_relay_sched_sweep(ngx_relay_sched_t *sc)
{
    ngx_uint_t                i;
    ngx_relay_sched_entry_t  *e;

    for (i = 0; i < sc->index_size; /* void */ ) {
        e = sc->index[i];

        if (e == NULL || e->gen == sc->gen
            || e->state == ngx_relay_sched_running)
        {
            i++;
            continue;
        }

        /* removal may shift another entry into slot i: look at it again */

        ngx_relay_sched_entry_free(sc, e);
    }
}


static ngx_int_t
ngx_relay_sched_todo_add(ngx_relay_sched_todo_t *t)
{
    ngx_uint_t               size;
    ngx_relay_sched_todo_t  *todo;

    if (ngx_relay_sched_todo_next == ngx_relay_sched_ntodo) {
        ngx_relay_sched_todo_next = 0;
        ngx_relay_sched_ntodo = 0;
    }

    if (ngx_relay_sched_ntodo == ngx_relay_sched_todo_size) {
        size = ngx_relay_sched_todo_size ? ngx_relay_sched_todo_size * 2
                                         : 256;
        todo = realloc(ngx_relay_sched_todo,
                       size * sizeof(ngx_relay_sched_todo_t));
        if (todo == NULL) {
            return NGX_ERROR;
        }

        ngx_relay_sched_todo = todo;
        ngx_relay_sched_todo_size = size;
    }

    ngx_relay_sched_todo[ngx_relay_sched_ntodo++] = *t;

    return NGX_OK;
}


/* headers to read: a few batches in the thread pool at a time */

static void
ngx_relay_sched_read_more(ngx_relay_sched_t *sc)
{
    ngx_uint_t                i, n;
    ngx_thread_task_t        *task;
    ngx_relay_sched_batch_t  *b;

    while (sc->scanning < NGX_RELAY_SCHED_READERS
           && ngx_relay_sched_todo_next < ngx_relay_sched_ntodo
           && !ngx_exiting && !ngx_terminate)
    {
        n = ngx_min(ngx_relay_sched_ntodo - ngx_relay_sched_todo_next,
                    NGX_RELAY_SCHED_BATCH);

        task = ngx_calloc(sizeof(ngx_thread_task_t)
                          + sizeof(ngx_relay_sched_batch_t)
                          + n * sizeof(ngx_relay_sched_read_t), sc->log);
        if (task == NULL) {
            return;
        }

        b = (ngx_relay_sched_batch_t *) (task + 1);
        b->sched = sc;
        b->reads = (ngx_relay_sched_read_t *) (b + 1);
        b->nreads = n;

        for (i = 0; i < n; i++) {
            b->reads[i].todo =
                ngx_relay_sched_todo[ngx_relay_sched_todo_next + i];
        }

        task->ctx = b;
        task->handler = ngx_relay_sched_batch_thread;
        task->event.handler = ngx_relay_sched_batch_done;
        task->event.data = task;

        if (ngx_thread_task_post(sc->spool.thread_pool, task) != NGX_OK) {
            ngx_free(task);
            return;
        }

        ngx_relay_sched_todo_next += n;
        sc->scanning++;
    }
}


static void
ngx_relay_sched_batch_thread(void *data, ngx_log_t *log)
{
    ngx_relay_sched_batch_t  *b = data;

    ngx_uint_t  i;

    for (i = 0; i < b->nreads; i++) {
        ngx_relay_sched_read_one(b->sched, &b->reads[i], &b->debris);
    }
}


/* thread side: one header, without the lock (fixed-width fields only) */

static void
ngx_relay_sched_read_one(ngx_relay_sched_t *sc, ngx_relay_sched_read_t *r,
    ngx_uint_t *debris)
{
    ngx_fd_t             fd;
    ngx_err_t            err;
    struct stat          st;
    ngx_relay_queued_t   q;

    ngx_memzero(&r->summary, sizeof(ngx_relay_sched_summary_t));

    if (r->todo.record) {
        ngx_relay_sched_recall(r);
        return;
    }

    fd = relay_queue_openat(sc->spool.queue_fd, (char *) r->todo.name,
                            O_RDONLY|O_CLOEXEC);
    if (fd == -1) {
        r->summary.outcome = (errno == ENOENT) ? NGX_RELAY_SCHED_GONE
                                               : NGX_RELAY_SCHED_FAILED;
        return;
    }

    /* the version first: a write after it makes the file newer than that */

    ngx_relay_sched_file_version(fd, &r->summary);

    switch (ngx_relay_spool_read(fd, &q, &err)) {

    case NGX_OK:
        r->summary.outcome = q.held ? NGX_RELAY_SCHED_HELD
                                    : NGX_RELAY_SCHED_QUEUED;
        ngx_relay_sched_summarize(&q, sc->domains, &r->summary);
        ngx_relay_spool_free(&q);
        break;

    case NGX_DECLINED:

        /*
         * No trailer: being written, left by a session that died before
         * "250" (then nobody holds its lock and it is old: removed), or
         * hollow and its worker died (written from its journal first).
         */

        r->summary.outcome = NGX_RELAY_SCHED_BUSY;

        if (fstat(fd, &st) == 0
            && st.st_mtime + NGX_RELAY_SCHED_DEBRIS_AGE <= time(NULL)
            && flock(fd, LOCK_EX|LOCK_NB) == 0
            && ngx_relay_spool_debris(&sc->spool, fd, r->todo.name)
               == NGX_OK)
        {
            r->summary.outcome = NGX_RELAY_SCHED_GONE;
            (*debris)++;
        }

        break;

    default:
        r->summary.outcome = NGX_RELAY_SCHED_FAILED;
        break;
    }

    (void) close(fd);
}


/* thread side: what a snapshot's record says, for a file it still describes */

static void
ngx_relay_sched_recall(ngx_relay_sched_read_t *r)
{
    u_char                    *p;
    size_t                     size;
    ngx_uint_t                 i;
    ngx_str_t                  domains[NGX_RELAY_SNAPSHOT_DOMAINS];
    ngx_relay_snapshot_rec_t   rec;
    ngx_relay_sched_summary_t *s;

    s = &r->summary;

    ngx_relay_snapshot_decode(r->todo.record, &rec, domains);

    s->outcome = (rec.flags & NGX_RELAY_SNAPSHOT_HELD)
                 ? NGX_RELAY_SCHED_HELD : NGX_RELAY_SCHED_QUEUED;
    s->arrival = rec.arrival;
    s->next = r->todo.mtime;             /* an attempt set it so */
    s->attempts = (rec.flags & NGX_RELAY_SNAPSHOT_TRIED) ? 1 : 0;
    s->pending = rec.pending;
    s->local = (rec.flags & NGX_RELAY_SNAPSHOT_LOCAL) ? 1 : 0;
    s->bounce = (rec.flags & NGX_RELAY_SNAPSHOT_BOUNCE) ? 1 : 0;
    s->ino = rec.ino;
    s->ctime = rec.ctime;

    if (rec.ndomains == 0) {
        return;
    }

    size = rec.ndomains * (sizeof(ngx_str_t) + sizeof(ngx_uint_t));

    for (i = 0; i < rec.ndomains; i++) {
        size += domains[i].len;
    }

    s->domains = malloc(size);
    if (s->domains == NULL) {
        s->outcome = NGX_RELAY_SCHED_FAILED;
        return;
    }

    s->rcpts = (ngx_uint_t *) (s->domains + rec.ndomains);
    p = (u_char *) (s->rcpts + rec.ndomains);

    for (i = 0; i < rec.ndomains; i++) {
        s->domains[i].data = p;
        s->domains[i].len = domains[i].len;
        p = ngx_cpymem(p, domains[i].data, domains[i].len);
        s->rcpts[i] = 0;                 /* not kept: nothing counts them */
    }

    s->ndomains = rec.ndomains;
}


static void
ngx_relay_sched_batch_done(ngx_event_t *ev)
{
    ngx_thread_task_t  *task = ev->data;

    ngx_uint_t                i;
    ngx_relay_sched_t        *sc;
    ngx_relay_sched_batch_t  *b;

    b = task->ctx;
    sc = b->sched;

    if (b->debris) {
        ngx_log_error(NGX_LOG_NOTICE, sc->log, 0,
                      "relay queue: removed %ui incomplete queue file(s) of "
                      "sessions that ended before \"250\"", b->debris);
    }

    for (i = 0; i < b->nreads; i++) {
        ngx_relay_sched_apply(sc, &b->reads[i]);
        ngx_relay_sched_summary_free(&b->reads[i].summary);
        free(b->reads[i].todo.name);
    }

    ngx_free(task);

    ngx_relay_sched_dispatch(sc);
    ngx_relay_sched_read_more(sc);

    if (--sc->scanning == 0) {
        ngx_relay_sched_scan_end(sc);
    }
}


static void
ngx_relay_sched_apply(ngx_relay_sched_t *sc, ngx_relay_sched_read_t *r)
{
    size_t                    len;
    ngx_relay_sched_entry_t  *e;

    len = ngx_strlen(r->todo.name);
    e = ngx_relay_sched_find(sc, r->todo.name, len);

    if (e) {
        if (r->todo.mode != NGX_RELAY_SCHED_NOTE
            || e->state == ngx_relay_sched_running)
        {
            return;         /* known, or its attempt reads it afresh */
        }

        ngx_relay_sched_set(sc, e, &r->summary, 0);
        return;
    }

    /* a file that does not read: its attempt retries or moves it aside */

    if (r->summary.outcome != NGX_RELAY_SCHED_QUEUED
        && r->summary.outcome != NGX_RELAY_SCHED_HELD
        && r->summary.outcome != NGX_RELAY_SCHED_FAILED)
    {
        return;
    }

    e = ngx_relay_sched_entry(sc, r->todo.name, len);
    if (e == NULL) {
        ngx_log_error(NGX_LOG_ALERT, sc->log, 0,
                      "relay queue %s: out of memory, left for a later scan",
                      r->todo.name);
        return;
    }

    sc->from_snapshot += (r->todo.record != NULL);

    ngx_relay_sched_set(sc, e, &r->summary, 0);
}


static void
ngx_relay_sched_scan_end(ngx_relay_sched_t *sc)
{
    if (!sc->rebuilt) {
        sc->rebuilt = 1;

        ngx_log_error(NGX_LOG_NOTICE, sc->log, 0,
                      "relay queue: %ui message(s) of this worker's share "
                      "scheduled in %M ms, %ui from the snapshot",
                      sc->figures.messages, ngx_current_msec - sc->started,
                      sc->from_snapshot);
    }

    ngx_relay_sched_snapshot_drop(sc);

    if (ngx_exiting || ngx_terminate) {
        return;
    }

    if (sc->rescan) {
        sc->rescan = 0;
        ngx_relay_sched_scan_now(sc, 0);
        return;
    }

    if (!sc->scan_event.timer_set) {
        ngx_add_timer(&sc->scan_event, sc->scan_interval);
    }
}


/* -------------------------------------------------------------- snapshots */


static ngx_int_t
ngx_relay_sched_snapshot_init(ngx_relay_sched_t *sc)
{
    ngx_relay_snapshot_writer_t  *w;

    sc->schedule_fd = -1;

    if (sc->snapshot_interval == 0) {
        return NGX_OK;
    }

    sc->schedule_fd = ngx_relay_sched_open_dir(sc, NGX_RELAY_SCHEDULE_DIR);
    if (sc->schedule_fd == -1) {
        return NGX_ERROR;
    }

    sc->fingerprint = ngx_relay_sched_fingerprint(sc->domains);

    w = &sc->writer;
    w->dir_fd = sc->schedule_fd;
    w->workers = sc->workers;
    w->worker = sc->worker;
    w->fingerprint = sc->fingerprint;
    w->thread_pool = sc->spool.thread_pool;
    w->log = sc->log;
    w->handler = ngx_relay_sched_snapshot_written;
    w->data = sc;

    sc->snapshot_event.handler = ngx_relay_sched_snapshot_handler;
    sc->snapshot_event.data = sc;
    sc->snapshot_event.log = sc->log;
    sc->snapshot_event.cancelable = 1;

    ngx_add_timer(&sc->snapshot_event, sc->snapshot_interval);

    return NGX_OK;
}


/*
 * Which recipients are local decides what a record says (its domains, its
 * local flag): a snapshot made with other local domains is not used.
 */

static uint32_t
ngx_relay_sched_fingerprint(ngx_array_t *domains)
{
    uint32_t             crc;
    ngx_uint_t           i;
    ngx_relay_domain_t  *d;

    ngx_crc32_init(crc);

    if (domains) {
        d = domains->elts;

        for (i = 0; i < domains->nelts; i++) {
            ngx_crc32_update(&crc, d[i].name.data, d[i].name.len);
            ngx_crc32_update(&crc, (u_char *) "\n", 1);
        }
    }

    ngx_crc32_final(crc);

    return crc;
}


/*
 * Every snapshot_interval, if the schedule changed: the index is walked in
 * slices of NGX_RELAY_SCHED_SNAPSHOT_SLOTS, one slice encoded on the event
 * loop while the previous one is written by a thread task, so that a
 * million entries never hold the worker for long.  Entries that change
 * meanwhile are written as they are when their slice is made, or missed
 * (then read from their headers at start); an index that grows restarts
 * the snapshot later.
 */

static void
ngx_relay_sched_snapshot_handler(ngx_event_t *ev)
{
    ngx_relay_sched_t  *sc = ev->data;

    if (ngx_exiting || ngx_terminate) {
        return;
    }

    if (!sc->rebuilt || sc->changes == 0 || sc->writer.busy) {
        ngx_add_timer(ev, sc->snapshot_interval);
        return;
    }

    sc->changes = 0;
    sc->snapshot_next = 0;
    sc->snapshot_size = sc->index_size;

    ngx_relay_snapshot_begin(&sc->writer);
    ngx_relay_sched_snapshot_slice(sc);
}


static void
ngx_relay_sched_snapshot_slice(ngx_relay_sched_t *sc)
{
    ngx_int_t                 rc;
    ngx_uint_t                i, last;
    ngx_relay_sched_entry_t  *e;

    if (sc->index_size != sc->snapshot_size || ngx_exiting || ngx_terminate) {
        sc->changes++;
        rc = ngx_relay_snapshot_finish(&sc->writer, 0);
        goto posted;
    }

    last = ngx_min(sc->snapshot_next + NGX_RELAY_SCHED_SNAPSHOT_SLOTS,
                   sc->snapshot_size);

    for (i = sc->snapshot_next; i < last; i++) {
        e = sc->index[i];

        if (e && ngx_relay_sched_snapshot_add(sc, e) != NGX_OK) {
            rc = ngx_relay_snapshot_finish(&sc->writer, 0);
            goto posted;
        }
    }

    sc->snapshot_next = last;

    rc = (last == sc->snapshot_size)
         ? ngx_relay_snapshot_finish(&sc->writer, 1)
         : ngx_relay_snapshot_flush(&sc->writer);

posted:

    if (rc != NGX_OK && !ngx_exiting && !ngx_terminate) {
        ngx_add_timer(&sc->snapshot_event, sc->snapshot_interval);
    }
}


/* what the file said when it was last read: not while an attempt has it */

static ngx_int_t
ngx_relay_sched_snapshot_add(ngx_relay_sched_t *sc, ngx_relay_sched_entry_t *e)
{
    ngx_uint_t                i;
    ngx_relay_snapshot_rec_t  r;

    if (e->ctime == 0 || e->state == ngx_relay_sched_running
        || (e->dest && e->nmore >= NGX_RELAY_SNAPSHOT_DOMAINS))
    {
        return NGX_OK;
    }

    r.id = e->id;
    r.id_len = e->id_len;
    r.ino = e->ino;
    r.ctime = e->ctime;
    r.arrival = e->arrival;
    r.pending = e->pending;
    r.flags = (e->state == ngx_relay_sched_held ? NGX_RELAY_SNAPSHOT_HELD : 0)
              | (e->local ? NGX_RELAY_SNAPSHOT_LOCAL : 0)
              | (e->bounce ? NGX_RELAY_SNAPSHOT_BOUNCE : 0)
              | (e->tried ? NGX_RELAY_SNAPSHOT_TRIED : 0);
    r.ndomains = 0;

    if (e->dest) {
        r.domains[r.ndomains++] = &e->dest->node.str;

        for (i = 0; i < e->nmore; i++) {
            r.domains[r.ndomains++] = &e->more[i]->node.str;
        }
    }

    return ngx_relay_snapshot_add(&sc->writer, &r);
}


static void
ngx_relay_sched_snapshot_written(ngx_relay_snapshot_writer_t *w,
    ngx_int_t rc)
{
    ngx_relay_sched_t  *sc = w->data;

    if (w->step != NGX_RELAY_SNAPSHOT_WRITE) {
        if (w->step == NGX_RELAY_SNAPSHOT_KEEP) {
            if (rc == NGX_OK) {
                ngx_log_debug1(NGX_LOG_DEBUG_CORE, sc->log, 0,
                               "relay schedule snapshot: %uL record(s)",
                               w->records);

            } else {
                sc->changes++;
                ngx_log_error(NGX_LOG_WARN, sc->log, w->err,
                              "relay schedule snapshot not written");
            }
        }

        if (!ngx_exiting && !ngx_terminate) {
            ngx_add_timer(&sc->snapshot_event, sc->snapshot_interval);
        }

        return;
    }

    if (rc != NGX_OK) {
        sc->changes++;
        ngx_log_error(NGX_LOG_WARN, sc->log, w->err,
                      "relay schedule snapshot not written");

        if (ngx_relay_snapshot_finish(w, 0) != NGX_OK
            && !ngx_exiting && !ngx_terminate)
        {
            ngx_add_timer(&sc->snapshot_event, sc->snapshot_interval);
        }

        return;
    }

    ngx_relay_sched_snapshot_slice(sc);
}


/*
 * Thread side, the first scan: the snapshots of every worker, less the
 * messages that notes name (an operator's change that the worker may not
 * have heard of before it died).
 */

static void
ngx_relay_sched_snapshot_load(ngx_relay_sched_list_t *ls)
{
    ngx_relay_sched_t     *sc;
    ngx_relay_snapshot_t  *sn;

    sc = ls->sched;

    if (sc->schedule_fd == -1) {
        return;
    }

    sn = ngx_relay_snapshot_load(sc->schedule_fd, sc->fingerprint,
                                 sc->workers, sc->worker, sc->log);
    if (sn == NULL) {
        return;
    }

    ngx_relay_sched_snapshot_notes(sc, sn);

    if (sn->records == 0) {
        ngx_relay_snapshot_free(sn);
        return;
    }

    ls->snapshot = sn;
}


static void
ngx_relay_sched_snapshot_notes(ngx_relay_sched_t *sc,
    ngx_relay_snapshot_t *sn)
{
    DIR                      *dir;
    ngx_uint_t                i;
    struct dirent            *de;
    ngx_relay_sched_notes_t   nt;

    if (sc->notes_fd == -1) {
        return;
    }

    dir = ngx_relay_spool_opendir(sc->notes_fd);
    if (dir == NULL) {
        sn->records = 0;                 /* notes unknown: trust none */
        return;
    }

    ngx_memzero(&nt, sizeof(ngx_relay_sched_notes_t));
    nt.sched = sc;

    while ((de = readdir(dir)) != NULL && !nt.rescan) {
        if (de->d_name[0] != '.') {
            ngx_relay_sched_note_read(&nt, de->d_name);
        }
    }

    (void) closedir(dir);

    for (i = 0; i < nt.nids; i++) {
        ngx_relay_snapshot_forget(sn, nt.ids[i].name,
                                  ngx_strlen(nt.ids[i].name));
        free(nt.ids[i].name);
    }

    free(nt.ids);

    if (nt.rescan) {
        sn->records = 0;                 /* "*": anything may have changed */
    }
}


/* its records are no longer read from once the names they gave are done */

static void
ngx_relay_sched_snapshot_drop(ngx_relay_sched_t *sc)
{
    if (sc->snapshot && ngx_relay_sched_todo_next == ngx_relay_sched_ntodo) {
        ngx_relay_snapshot_free(sc->snapshot);
        sc->snapshot = NULL;
    }
}


/*
 * Thread-safe: the file's version for snapshots, taken before its header
 * is read or after an attempt's last write under its lock.
 */

void
ngx_relay_sched_file_version(ngx_fd_t fd, ngx_relay_sched_summary_t *s)
{
    struct stat  st;

    if (fstat(fd, &st) == -1) {
        s->ctime = 0;
        return;
    }

    s->ino = st.st_ino;
    s->ctime = (int64_t) st.st_ctim.tv_sec * 1000000000 + st.st_ctim.tv_nsec;
}


/* a directory of the spool, for *at() calls; -1 (logged) if it fails */

static int
ngx_relay_sched_open_dir(ngx_relay_sched_t *sc, char *name)
{
    int      fd;
    u_char  *p, path[NGX_MAX_PATH];

    if (sc->spool.path.len + ngx_strlen(name) >= NGX_MAX_PATH) {
        return -1;
    }

    p = ngx_cpymem(path, sc->spool.path.data, sc->spool.path.len);
    ngx_memcpy(p, name, ngx_strlen(name) + 1);

    fd = open((char *) path, O_RDONLY|O_DIRECTORY|O_CLOEXEC);
    if (fd == -1) {
        ngx_log_error(NGX_LOG_ALERT, sc->log, ngx_errno,
                      "open(\"%s\") failed", path);
    }

    return fd;
}


/* ------------------------------------------------------------------ notes */


static ngx_int_t
ngx_relay_sched_notes_init(ngx_relay_sched_t *sc, ngx_cycle_t *cycle)
{
    int                fd;
    u_char            *p, path[NGX_MAX_PATH];
    ngx_connection_t  *c;

    sc->notes_fd = ngx_relay_sched_open_dir(sc, NGX_RELAY_NOTES_DIR);
    if (sc->notes_fd == -1) {
        return NGX_ERROR;
    }

    p = ngx_cpymem(path, sc->spool.path.data, sc->spool.path.len);
    ngx_memcpy(p, NGX_RELAY_NOTES_DIR, sizeof(NGX_RELAY_NOTES_DIR));

    fd = inotify_init1(IN_NONBLOCK|IN_CLOEXEC);
    if (fd == -1) {
        ngx_log_error(NGX_LOG_ALERT, cycle->log, ngx_errno,
                      "inotify_init1() failed");
        return NGX_ERROR;
    }

    if (inotify_add_watch(fd, (char *) path, IN_MOVED_TO) == -1) {
        ngx_log_error(NGX_LOG_ALERT, cycle->log, ngx_errno,
                      "inotify_add_watch(\"%s\") failed", path);
        (void) close(fd);
        return NGX_ERROR;
    }

    c = ngx_get_connection(fd, cycle->log);
    if (c == NULL) {
        (void) close(fd);
        return NGX_ERROR;
    }

    c->data = sc;
    c->read->handler = ngx_relay_sched_notes_handler;
    c->read->log = cycle->log;

    if (ngx_handle_read_event(c->read, 0) != NGX_OK) {
        ngx_close_connection(c);
        return NGX_ERROR;
    }

    sc->notes = c;

    return NGX_OK;
}


/* the names of new notes, then their contents in a thread */

static void
ngx_relay_sched_notes_handler(ngx_event_t *ev)
{
    ngx_connection_t  *c = ev->data;

    u_char                    **notes, **n, *name;
    ssize_t                     size, i;
    ngx_uint_t                  nnotes, room;
    ngx_thread_task_t          *task;
    ngx_relay_sched_t          *sc;
    ngx_relay_sched_notes_t    *nt;
    struct inotify_event       *ie;
    union {
        struct inotify_event    event;
        u_char                  data[4096];
    }                           buf;

    sc = c->data;
    notes = NULL;
    nnotes = 0;
    room = 0;

    for ( ;; ) {
        size = read(c->fd, buf.data, sizeof(buf.data));

        if (size <= 0) {
            break;                  /* EAGAIN: drained (edge-triggered) */
        }

        for (i = 0; i < size; i += sizeof(struct inotify_event) + ie->len) {
            ie = (struct inotify_event *) (buf.data + i);

            if (ie->len == 0 || ie->name[0] == '.') {
                continue;
            }

            if (nnotes == room) {
                room = room ? room * 2 : 8;
                n = realloc(notes, room * sizeof(u_char *));
                if (n == NULL) {
                    break;
                }

                notes = n;
            }

            name = (u_char *) strdup(ie->name);
            if (name) {
                notes[nnotes++] = name;
            }
        }
    }

    if (nnotes == 0 || ngx_exiting || ngx_terminate) {
        goto free;
    }

    task = ngx_calloc(sizeof(ngx_thread_task_t)
                      + sizeof(ngx_relay_sched_notes_t), sc->log);
    if (task == NULL) {
        goto free;
    }

    nt = (ngx_relay_sched_notes_t *) (task + 1);
    nt->sched = sc;
    nt->notes = notes;
    nt->nnotes = nnotes;

    task->ctx = nt;
    task->handler = ngx_relay_sched_notes_thread;
    task->event.handler = ngx_relay_sched_notes_done;
    task->event.data = task;

    if (ngx_thread_task_post(sc->spool.thread_pool, task) == NGX_OK) {
        return;
    }

    ngx_free(task);

free:

    while (nnotes) {
        free(notes[--nnotes]);
    }

    free(notes);
}


static void
ngx_relay_sched_notes_thread(void *data, ngx_log_t *log)
{
    ngx_relay_sched_notes_t  *nt = data;

    ngx_uint_t  i;

    for (i = 0; i < nt->nnotes; i++) {
        ngx_relay_sched_note_read(nt, (char *) nt->notes[i]);
    }
}


static void
ngx_relay_sched_note_read(ngx_relay_sched_notes_t *nt, char *name)
{
    u_char       *text;
    ssize_t       n;
    ngx_fd_t      fd;
    struct stat   st;

    fd = openat(nt->sched->notes_fd, name, O_RDONLY|O_CLOEXEC);
    if (fd == -1) {
        return;                           /* removed as too old */
    }

    if (fstat(fd, &st) == -1 || !S_ISREG(st.st_mode)
        || st.st_size > NGX_RELAY_SCHED_MAX_NOTE)
    {
        (void) close(fd);
        return;
    }

    text = malloc(st.st_size + 1);
    n = text ? pread(fd, text, st.st_size, 0) : -1;

    (void) close(fd);

    if (n > 0) {
        ngx_relay_sched_note_parse(nt, text, text + n);
    }

    free(text);
}


/*
 * A note: one queue id per line ("changed: look again"), "+id" ("adopt
 * it if you do not know it": from an exiting worker), or "*" ("list the
 * whole queue again").
 */

static void
ngx_relay_sched_note_parse(ngx_relay_sched_notes_t *nt, u_char *p,
    u_char *last)
{
    u_char                  *eol, *name;
    size_t                   len, room;
    ngx_uint_t               mode;
    ngx_relay_sched_t       *sc;
    ngx_relay_sched_todo_t  *ids;

    sc = nt->sched;
    room = nt->nids;

    for ( /* void */ ; p < last; p = eol + 1) {
        eol = ngx_strlchr(p, last, '\n');
        if (eol == NULL) {
            eol = last;
        }

        mode = NGX_RELAY_SCHED_NOTE;

        if (eol - p == 1 && *p == '*') {
            nt->rescan = 1;
            continue;
        }

        if (p < eol && *p == '+') {
            mode = NGX_RELAY_SCHED_ADOPT;
            p++;
        }

        len = eol - p;

        while (len && p[len - 1] == ' ') {
            len--;
        }

        if (!ngx_relay_sched_valid_id(p, len)
            || ngx_relay_spool_slot(p, len, sc->workers) != sc->worker)
        {
            continue;
        }

        if (nt->nids == room) {
            room = room ? room * 2 : 64;
            ids = realloc(nt->ids, room * sizeof(ngx_relay_sched_todo_t));
            if (ids == NULL) {
                return;
            }

            nt->ids = ids;
        }

        name = malloc(len + 1);
        if (name == NULL) {
            return;
        }

        ngx_memcpy(name, p, len);
        name[len] = '\0';

        nt->ids[nt->nids].name = name;
        nt->ids[nt->nids].mode = mode;
        nt->ids[nt->nids].record = NULL;
        nt->ids[nt->nids].mtime = 0;
        nt->nids++;
    }
}


static void
ngx_relay_sched_notes_done(ngx_event_t *ev)
{
    ngx_thread_task_t  *task = ev->data;

    ngx_uint_t                i;
    ngx_relay_sched_t        *sc;
    ngx_relay_sched_notes_t  *nt;
    ngx_relay_sched_entry_t  *e;

    nt = task->ctx;
    sc = nt->sched;

    for (i = 0; i < nt->nnotes; i++) {
        free(nt->notes[i]);
    }

    free(nt->notes);

    for (i = 0; i < nt->nids; i++) {
        e = ngx_relay_sched_find(sc, nt->ids[i].name,
                                 ngx_strlen(nt->ids[i].name));

        if ((e && nt->ids[i].mode == NGX_RELAY_SCHED_ADOPT)
            || ngx_relay_sched_todo_add(&nt->ids[i]) != NGX_OK)
        {
            free(nt->ids[i].name);
        }
    }

    ngx_log_debug2(NGX_LOG_DEBUG_CORE, sc->log, 0,
                   "relay queue: %ui note(s), %ui id(s)", nt->nnotes,
                   nt->nids);

    if (nt->rescan) {
        ngx_relay_sched_scan_now(sc, 1);
    }

    free(nt->ids);
    ngx_free(task);

    ngx_relay_sched_read_more(sc);
}


/*
 * A worker that exits gracefully (a reload, a binary upgrade) notes what
 * it took recently: the next generation's first scan may have missed
 * those.  Blocking file I/O, but the process is going anyway.
 */

static void
ngx_relay_sched_note_exit(ngx_relay_sched_t *sc)
{
    time_t                    since;
    ngx_uint_t                i;
    ngx_array_t               note;
    ngx_relay_sched_entry_t  *e;

    if (sc->notes_fd == -1
        || ngx_array_init(&note, ngx_cycle->pool, 64, NGX_RELAY_ID_LEN + 2)
           != NGX_OK)
    {
        return;
    }

    since = ngx_time();

    if (sc->exiting_since && sc->exiting_since < since) {
        since = sc->exiting_since;
    }

    since -= NGX_RELAY_SCHED_ADOPT_AGE;

    for (i = 0; i < sc->index_size; i++) {
        e = sc->index[i];

        if (e && e->arrival >= since) {
            ngx_relay_sched_note_id(&note, e->id, e->id_len);
        }
    }

    if (note.nelts == 0) {
        return;
    }

    if (ngx_relay_sched_write_note(sc->notes_fd, note.elts,
                                   note.nelts * note.size, "exit")
        == NGX_OK)
    {
        ngx_log_error(NGX_LOG_NOTICE, sc->log, 0,
                      "relay queue: %ui recent message(s) noted for the "
                      "workers that follow", note.nelts);
    }
}


/* thread-safe: a note goes in whole (a temporary name, then rename()) */

static ngx_int_t
ngx_relay_sched_write_note(int notes_fd, u_char *text, size_t len,
    const char *kind)
{
    u_char      name[64], tmp[64];
    ssize_t     n;
    ngx_fd_t    fd;
    ngx_int_t   rc;
    static ngx_atomic_t  seq;

    *ngx_sprintf(name, "%010T.%P.%s%uA", time(NULL), ngx_pid, kind,
                 ngx_atomic_fetch_add(&seq, 1)) = '\0';
    *ngx_sprintf(tmp, ".%s.tmp", name) = '\0';

    fd = openat(notes_fd, (char *) tmp, O_WRONLY|O_CREAT|O_TRUNC|O_CLOEXEC,
                0600);
    if (fd == -1) {
        return NGX_ERROR;
    }

    n = write(fd, text, len);
    (void) close(fd);

    rc = (n == (ssize_t) len
          && renameat(notes_fd, (char *) tmp, notes_fd, (char *) name) == 0)
         ? NGX_OK : NGX_ERROR;

    if (rc != NGX_OK) {
        (void) unlinkat(notes_fd, (char *) tmp, 0);
    }

    return rc;
}


static void
ngx_relay_sched_note_id(ngx_array_t *note, u_char *id, size_t len)
{
    u_char  *line;

    if (len > NGX_RELAY_ID_LEN) {
        return;
    }

    line = ngx_array_push(note);
    if (line == NULL) {
        return;
    }

    /* "+" id, padded with spaces to the line's end: trailing blanks go */

    ngx_memset(line, ' ', note->size);
    line[0] = '+';
    ngx_memcpy(line + 1, id, len);
    line[note->size - 1] = '\n';
}


static ngx_uint_t
ngx_relay_sched_valid_id(u_char *p, size_t len)
{
    size_t  i;

    if (len == 0 || len > NGX_RELAY_ID_LEN) {
        return 0;
    }

    for (i = 0; i < len; i++) {
        if (!((p[i] >= '0' && p[i] <= '9') || (p[i] >= 'a' && p[i] <= 'z')
              || (p[i] >= 'A' && p[i] <= 'Z')))
        {
            return 0;
        }
    }

    return 1;
}


/* --------------------------------------------------------------- summaries */


/*
 * Thread-safe (malloc() only): pending recipients and the remote domains
 * they wait for, lowercased copies, each once; nothing points into q.
 */

void
ngx_relay_sched_summarize(ngx_relay_queued_t *q, ngx_array_t *domains,
    ngx_relay_sched_summary_t *s)
{
    u_char                   *p;
    size_t                    size;
    ngx_str_t                 domain;
    ngx_uint_t                i, j;
    ngx_relay_queued_rcpt_t  *r;

    s->arrival = q->arrival;
    s->next = q->next;
    s->attempts = q->attempts;
    s->pending = 0;
    s->ndomains = 0;

    size = q->nrcpts * (sizeof(ngx_str_t) + sizeof(ngx_uint_t));

    for (i = 0; i < q->nrcpts; i++) {
        size += q->rcpts[i].addr.len;
    }

    s->domains = malloc(size);
    if (s->domains == NULL) {
        return;
    }

    s->rcpts = (ngx_uint_t *) (s->domains + q->nrcpts);
    p = (u_char *) (s->rcpts + q->nrcpts);

    for (i = 0; i < q->nrcpts; i++) {
        r = &q->rcpts[i];

        if (r->state == NGX_RELAY_RCPT_BOUNCE) {
            s->bounce = 1;
            s->pending++;
            continue;
        }

        if (r->state != NGX_RELAY_RCPT_PENDING) {
            continue;
        }

        s->pending++;

        if (ngx_relay_maildir_split(&r->addr, &domain) == NULL) {
            continue;
        }

        if (ngx_relay_maildir_local_domain(domains, &domain)) {
            s->local = 1;
            continue;
        }

        for (j = 0; j < s->ndomains; j++) {
            if (s->domains[j].len == domain.len
                && ngx_strncasecmp(s->domains[j].data, domain.data,
                                   domain.len)
                   == 0)
            {
                break;
            }
        }

        if (j == s->ndomains) {
            ngx_strlow(p, domain.data, domain.len);
            s->domains[j].data = p;
            s->domains[j].len = domain.len;
            p += domain.len;

            s->rcpts[j] = 0;
            s->ndomains++;
        }

        s->rcpts[j]++;
    }
}


void
ngx_relay_sched_summary_free(ngx_relay_sched_summary_t *s)
{
    free(s->domains);
    s->domains = NULL;
    s->ndomains = 0;
}
