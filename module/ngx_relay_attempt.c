
/*
 * Copyright (C) The relay authors
 */


/*
 * One attempt of one message, from the moment the schedule finds it due
 * (or the spool hands over a new one) until its outcome is on disk:
 *
 *   open  (thread)  take the lock, read the envelope; recipients in local
 *                   domains go into their Maildirs at once.  A new message
 *                   for remote recipients only, still whole in its
 *                   writer's memory, is read from there on the event loop
 *   remote          the other pending recipients, one delivery per domain
 *                   (ngx_relay_delivery.c), all domains at once; a domain
 *                   whose destination is unreachable is not tried again
 *                   before its time: its recipients are deferred with the
 *                   destination's error ("suspended")
 *   record (thread) done and failed marks, the next attempt and the last
 *                   error in the queue file, or the file goes
 *   end             DSNs (ngx_relay_dsn.c) for what failed, and with
 *                   NOTIFY=SUCCESS for what was relayed to a server
 *                   without DSN; the outcome goes back to the schedule
 *
 * With NOTIFY=SUCCESS a Maildir delivery sends a "delivered" DSN as soon
 * as the local recipients are done, before the remote phase.
 *
 * The message stays locked by this worker from open to end.  A message
 * found held, locked by another process, or not due by its file (another
 * process deferred it meanwhile) is not attempted.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_relay.h>
#include <ngx_relay_spool.h>
#include <ngx_relay_maildir.h>
#include <ngx_relay_sched.h>
#include <ngx_relay_delivery.h>
#include <ngx_relay_dsn.h>
#include <ngx_relay_account.h>
#include <ngx_relay_attempt.h>


#define NGX_RELAY_ATTEMPT_DEBRIS_AGE   10      /* seconds */
#define NGX_RELAY_ATTEMPT_RECORDING    2       /* record tasks at a time */


typedef struct ngx_relay_attempt_s  ngx_relay_attempt_t;


typedef struct {
    ngx_uint_t                 index;        /* recipient in the envelope */
    ngx_int_t                  rc;           /* NGX_OK, NGX_DECLINED, ERROR */
    ngx_err_t                  err;
    const char                *failed;
} ngx_relay_local_result_t;


/* the recipients of one domain, handed to one delivery */

typedef struct {
    ngx_relay_attempt_t       *attempt;
    ngx_uint_t                 first;        /* in dests[] */
    ngx_uint_t                 n;
} ngx_relay_attempt_group_t;


struct ngx_relay_attempt_s {
    ngx_relay_sched_t         *sched;
    ngx_relay_sched_entry_t   *entry;
    ngx_relay_spool_writer_t  *writer;       /* a new message, or NULL */
    ngx_thread_task_t         *task;
    ngx_queue_t                link;         /* waiting, or in a batch */
    ngx_queue_t                batch;        /* the others its task does */
    ngx_fd_t                   fd;
    ngx_str_t                  file;         /* in memory: the writer's */
    time_t                     started;
    u_char                     name[NGX_RELAY_ID_LEN + 1];

    ngx_relay_queued_t         queued;
    ngx_uint_t                 outcome;      /* NGX_RELAY_SCHED_* */
    ngx_relay_local_result_t  *results;
    ngx_uint_t                 nresults;
    ngx_uint_t                 remaining;    /* recipients still pending */
    ngx_uint_t                 remote;       /* pending, not local */
    unsigned                   removed:1;    /* queue file is gone */
    unsigned                   debris:1;     /* incomplete, removed */
    unsigned                   corrupt:1;    /* moved to corrupt/ */
    unsigned                   not_due:1;    /* by its file */

    /* the remote phase */
    ngx_relay_dest_t          *dests;
    ngx_uint_t                 ndests;
    ngx_relay_attempt_group_t *groups;
    ngx_uint_t                 deliveries;   /* domains in flight */
    time_t                     next;         /* next attempt to record */
    ngx_uint_t                 attempts;
    ngx_uint_t                 bounces;      /* failed, want a DSN */
    ngx_uint_t                 delays;       /* want a "delayed" DSN */
    ngx_uint_t                 relayed;      /* want a "relayed" DSN */
    ngx_uint_t                 delivered;    /* local, want "delivered" */
    u_char                    *original;     /* for the DSN, malloc()ed */
    size_t                     original_len;
    ngx_err_t                  err;
    const char                *failed;
};


static ngx_int_t ngx_relay_attempt_open_memory(ngx_relay_attempt_t *at);
static void ngx_relay_attempt_open_thread(void *data, ngx_log_t *log);
static ngx_int_t ngx_relay_attempt_lock(ngx_relay_attempt_t *at);
static void ngx_relay_attempt_local(ngx_relay_attempt_t *at);
static void ngx_relay_attempt_remove(ngx_relay_attempt_t *at);
static void ngx_relay_attempt_debris(ngx_relay_attempt_t *at);
static void ngx_relay_attempt_corrupt(ngx_relay_attempt_t *at);
static ngx_int_t ngx_relay_attempt_deliver_local(ngx_relay_attempt_t *at,
    ngx_relay_queued_rcpt_t *r, ngx_uint_t index,
    ngx_relay_local_result_t *res);
static void ngx_relay_attempt_opened(ngx_event_t *ev);
static void ngx_relay_attempt_log_local(ngx_relay_attempt_t *at);
static void ngx_relay_attempt_report_local(ngx_relay_attempt_t *at);
static ngx_int_t ngx_relay_attempt_remote(ngx_relay_attempt_t *at);
static ngx_uint_t ngx_relay_attempt_collect(ngx_relay_attempt_t *at);
static void ngx_relay_attempt_operator_bounces(ngx_relay_attempt_t *at);
static ngx_uint_t ngx_relay_attempt_same_domain(ngx_str_t *a, ngx_str_t *b);
static void ngx_relay_attempt_deliver(ngx_relay_attempt_t *at,
    ngx_relay_attempt_group_t *g, ngx_str_t *domain);
static void ngx_relay_attempt_suspend(ngx_relay_attempt_t *at,
    ngx_relay_attempt_group_t *g, ngx_relay_sched_dest_t *dest);
static void ngx_relay_attempt_delivered(ngx_relay_delivery_t *d);
static ngx_int_t ngx_relay_attempt_record(ngx_relay_attempt_t *at);
static void ngx_relay_attempt_expire(ngx_relay_attempt_t *at,
    ngx_relay_dest_t *dst, ngx_relay_retry_t *retry, time_t now);
static void ngx_relay_attempt_record_thread(void *data, ngx_log_t *log);
static ngx_int_t ngx_relay_attempt_mark_all(ngx_relay_attempt_t *at,
    ngx_uint_t write);
static ngx_int_t ngx_relay_attempt_last_error(ngx_relay_attempt_t *at);
static void ngx_relay_attempt_recorded(ngx_relay_attempt_t *at);
static ngx_int_t ngx_relay_attempt_post_records(ngx_relay_attempt_t *at);
static void ngx_relay_attempt_records_thread(void *data, ngx_log_t *log);
static void ngx_relay_attempt_records_done(ngx_event_t *ev);
static void ngx_relay_attempt_log_remote(ngx_relay_attempt_t *at);
static void ngx_relay_attempt_report(ngx_relay_attempt_t *at,
    ngx_uint_t kind);
static void ngx_relay_attempt_end(ngx_relay_attempt_t *at);


ngx_int_t
ngx_relay_attempt_start(ngx_relay_sched_t *sc, ngx_relay_sched_entry_t *e,
    ngx_relay_spool_writer_t *w)
{
    ngx_thread_task_t    *task;
    ngx_relay_attempt_t  *at;

    task = ngx_calloc(sizeof(ngx_thread_task_t)
                      + sizeof(ngx_relay_attempt_t), sc->log);
    if (task == NULL) {
        return NGX_ERROR;
    }

    at = (ngx_relay_attempt_t *) (task + 1);
    at->sched = sc;
    at->entry = e;
    at->writer = w;
    at->task = task;
    at->fd = w ? w->fd : NGX_INVALID_FILE;
    at->started = ngx_time();

    if (w && w->whole) {
        at->file.data = w->buf;          /* lives until the writer's release */
        at->file.len = (size_t) w->written;
    }

    ngx_memcpy(at->name, e->id, e->id_len);
    at->name[e->id_len] = '\0';

    task->ctx = at;
    task->handler = ngx_relay_attempt_open_thread;
    task->event.handler = ngx_relay_attempt_opened;
    task->event.data = at;
    task->event.log = sc->log;

    if (at->file.data && ngx_relay_attempt_open_memory(at) == NGX_OK) {
        ngx_post_event(&task->event, &ngx_posted_events);
        return NGX_OK;
    }

    if (ngx_thread_task_post(sc->spool.thread_pool, task) != NGX_OK) {
        ngx_free(task);
        return NGX_ERROR;
    }

    return NGX_OK;
}


/*
 * A new message whose writer still has the whole queue file in memory,
 * and the file locked since its creation: its envelope is read from there,
 * with no thread task, when all of its recipients are remote.  Anything
 * else (a local recipient, a file that does not parse) goes the usual way
 * through the open thread.  The outcome is posted, not called: the caller
 * is still in the middle of starting attempts.
 */

static ngx_int_t
ngx_relay_attempt_open_memory(ngx_relay_attempt_t *at)
{
    ngx_uint_t                i;
    ngx_relay_queued_t       *q;
    ngx_relay_mailbox_t       mb;
    ngx_relay_queued_rcpt_t  *r;

    q = &at->queued;

    if (ngx_relay_spool_read_memory(&at->file, q, &at->err) != NGX_OK
        || q->held)
    {
        goto declined;
    }

    for (i = 0; i < q->nrcpts; i++) {
        r = &q->rcpts[i];

        if (r->state == NGX_RELAY_RCPT_PENDING
            && ngx_relay_maildir_mailbox(at->sched->domains, &r->addr, &mb)
               != NGX_DECLINED)
        {
            goto declined;                /* a Maildir: the thread's work */
        }

        if (r->state == NGX_RELAY_RCPT_PENDING
            || r->state == NGX_RELAY_RCPT_BOUNCE)
        {
            at->remaining++;
            at->remote++;
        }
    }

    if (at->remote == 0) {
        goto declined;
    }

    at->outcome = NGX_RELAY_SCHED_QUEUED;

    return NGX_OK;

declined:

    /* the open thread starts afresh */

    ngx_relay_spool_free(q);
    ngx_memzero(q, sizeof(ngx_relay_queued_t));
    at->err = 0;
    at->remaining = 0;
    at->remote = 0;

    return NGX_DECLINED;
}


static void
ngx_relay_attempt_open_thread(void *data, ngx_log_t *log)
{
    ngx_relay_attempt_t  *at = data;

    ngx_relay_queued_t  *q;

    at->outcome = NGX_RELAY_SCHED_QUEUED;

    if (ngx_relay_attempt_lock(at) != NGX_OK) {
        return;
    }

    /* a new message's hollow file: read from the file from now on */

    if (at->writer && ngx_relay_spool_fill(at->writer, &at->err) != NGX_OK) {
        at->failed = "pwrite";
        at->outcome = NGX_RELAY_SCHED_FAILED;
        return;
    }

    q = &at->queued;

    switch (ngx_relay_spool_read(at->fd, q, &at->err)) {

    case NGX_OK:
        break;

    case NGX_DECLINED:
        ngx_relay_attempt_debris(at);
        return;

    default:
        if (at->err == EINVAL) {
            ngx_relay_attempt_corrupt(at);
            return;
        }

        at->failed = "read";
        at->outcome = NGX_RELAY_SCHED_FAILED;
        return;
    }

    if (q->held) {
        at->outcome = NGX_RELAY_SCHED_HELD;
        return;
    }

    /* deferred by another process since the schedule last looked */

    if (at->writer == NULL && q->next > at->started) {
        at->not_due = 1;
        return;
    }

    ngx_relay_attempt_local(at);
}


static ngx_int_t
ngx_relay_attempt_lock(ngx_relay_attempt_t *at)
{
    if (at->fd != NGX_INVALID_FILE) {
        return NGX_OK;
    }

    at->fd = ngx_relay_spool_open_locked(&at->sched->spool, at->name,
                                         &at->err);
    if (at->fd != NGX_INVALID_FILE) {
        return NGX_OK;
    }

    if (at->err == NGX_EAGAIN) {
        at->err = 0;
        at->outcome = NGX_RELAY_SCHED_BUSY;

    } else if (at->err) {
        at->failed = "open";
        at->outcome = NGX_RELAY_SCHED_FAILED;

    } else {
        at->outcome = NGX_RELAY_SCHED_GONE;
    }

    return NGX_ERROR;
}


/* thread side: recipients in local domains go into their Maildirs now */

static void
ngx_relay_attempt_local(ngx_relay_attempt_t *at)
{
    ngx_uint_t                i, marked;
    ngx_relay_queued_t       *q;
    ngx_relay_queued_rcpt_t  *r;

    q = &at->queued;

    at->results = calloc(q->nrcpts, sizeof(ngx_relay_local_result_t));
    if (at->results == NULL) {
        at->err = ENOMEM;
        at->failed = "calloc";
        return;
    }

    marked = 0;

    for (i = 0; i < q->nrcpts; i++) {
        r = &q->rcpts[i];

        if (r->state == NGX_RELAY_RCPT_BOUNCE) {
            at->remaining++;             /* failed by the remote phase */
            at->remote++;
            continue;
        }

        if (r->state != NGX_RELAY_RCPT_PENDING) {
            continue;
        }

        switch (ngx_relay_attempt_deliver_local(at, r, i,
                                                &at->results[at->nresults]))
        {
        case NGX_OK:

            /* delivered now (not found there by a retry): "delivered" */

            if (at->results[at->nresults].rc == NGX_OK
                && (r->notify & NGX_RELAY_NOTIFY_SUCCESS) && q->sender.len)
            {
                at->delivered++;
            }

            at->nresults++;
            marked++;
            break;

        case NGX_AGAIN:
            at->nresults++;
            at->remaining++;
            break;

        default:                          /* NGX_DECLINED: not local */
            at->remaining++;
            at->remote++;
            break;
        }
    }

    /* the descriptor still reads the message once the file is removed */

    if (at->delivered) {
        ngx_relay_dsn_read_original(at->fd, q, &at->original,
                                    &at->original_len);
    }

    if (at->remaining == 0) {
        ngx_relay_attempt_remove(at);
        return;
    }

    /* done marks must survive a crash, or a retry redoes the work */

    if (marked && fdatasync(at->fd) == -1) {
        at->err = errno;
        at->failed = "fdatasync";
    }
}


/* thread side: every recipient is done, the message goes */

static void
ngx_relay_attempt_remove(ngx_relay_attempt_t *at)
{
    if (ngx_relay_spool_remove(&at->sched->spool, &at->queued.id, &at->err)
        == NGX_OK)
    {
        at->removed = 1;
        at->outcome = NGX_RELAY_SCHED_GONE;

        if (at->writer) {
            ngx_relay_spool_removed(at->writer);   /* hollow or not */
        }

    } else {
        at->failed = "unlink";
    }
}


/*
 * A queue file without its trailer whose lock we could take: its session
 * died before "250" (a crash), so its client still has the message.  The
 * age test leaves alone a file whose creator has not yet locked it.
 */

static void
ngx_relay_attempt_debris(ngx_relay_attempt_t *at)
{
    struct stat  st;

    if (at->writer == NULL
        && fstat(at->fd, &st) == 0
        && st.st_mtime + NGX_RELAY_ATTEMPT_DEBRIS_AGE <= time(NULL)
        && ngx_relay_spool_debris(&at->sched->spool, at->fd, at->name)
           == NGX_OK)
    {
        at->debris = 1;
        at->outcome = NGX_RELAY_SCHED_GONE;
        return;
    }

    at->outcome = NGX_RELAY_SCHED_BUSY;  /* being written: look later */
}


/*
 * A complete queue file that does not parse (damaged on disk, or not
 * ours): out of the queue into spool/corrupt/, once, for an operator to
 * look at, instead of an attempt failing every minute forever.
 */

static void
ngx_relay_attempt_corrupt(ngx_relay_attempt_t *at)
{
    ngx_relay_spool_t  *sp;

    sp = &at->sched->spool;
    at->err = 0;

    if (sp->corrupt_fd != -1
        && renameat(sp->queue_fd, (char *) at->name, sp->corrupt_fd,
                    (char *) at->name)
           == 0)
    {
        at->corrupt = 1;
        at->outcome = NGX_RELAY_SCHED_GONE;
        return;
    }

    at->err = (sp->corrupt_fd == -1) ? EINVAL : errno;
    at->failed = "rename to corrupt/";
    at->outcome = NGX_RELAY_SCHED_FAILED;
}


/*
 * NGX_OK: delivered (now or by an earlier try) and marked done;
 * NGX_AGAIN: a local failure, retry later; NGX_DECLINED: not a local domain.
 */

static ngx_int_t
ngx_relay_attempt_deliver_local(ngx_relay_attempt_t *at,
    ngx_relay_queued_rcpt_t *r, ngx_uint_t index, ngx_relay_local_result_t *res)
{
    ngx_int_t                 rc;
    ngx_relay_sched_t        *sc;
    ngx_relay_queued_t       *q;
    ngx_relay_mailbox_t       mb;
    ngx_relay_maildir_job_t   job;
    u_char                    name[NGX_RELAY_ID_LEN + 512];
    u_char                    hdr[2 * NGX_RELAY_MAX_ADDR + 64];

    sc = at->sched;
    q = &at->queued;

    if (sc->hostname.len > 255) {
        return NGX_DECLINED;
    }

    rc = ngx_relay_maildir_mailbox(sc->domains, &r->addr, &mb);

    if (rc == NGX_DECLINED) {
        return NGX_DECLINED;
    }

    res->index = index;

    if (rc == NGX_ERROR) {
        res->rc = NGX_ERROR;
        res->err = EINVAL;
        res->failed = "mailbox name";
        return NGX_AGAIN;
    }

    ngx_memzero(&job, sizeof(ngx_relay_maildir_job_t));

    job.root = sc->maildir;
    job.domain = mb.domain;
    job.mailbox = mb.local;

    job.name.data = name;
    job.name.len = ngx_sprintf(name, "%T.M%VR%ui.%V", q->arrival, &q->id,
                               index, &sc->hostname)
                   - name;

    job.headers.data = hdr;
    job.headers.len = ngx_sprintf(hdr, "Return-Path: <%V>\r\n"
                                  "Delivered-To: %V\r\n",
                                  &q->sender, &r->addr)
                      - hdr;

    job.src = at->fd;
    job.offset = q->message_offset;
    job.size = q->message_size;

    rc = ngx_relay_maildir_deliver(&job);

    if (rc == NGX_ERROR) {
        res->rc = NGX_ERROR;
        res->err = job.err;
        res->failed = job.failed;
        return NGX_AGAIN;
    }

    res->rc = rc;

    if (ngx_relay_spool_mark(at->fd, r, NGX_RELAY_RCPT_DONE, &res->err)
        != NGX_OK)
    {
        res->failed = "pwrite";
    }

    return NGX_OK;
}


static void
ngx_relay_attempt_opened(ngx_event_t *ev)
{
    ngx_relay_attempt_t  *at = ev->data;

    ngx_relay_sched_t  *sc;

    sc = at->sched;

    if (at->failed && at->err) {
        ngx_log_error(NGX_LOG_CRIT, sc->log, at->err,
                      "relay queue %s: %s() failed", at->name, at->failed);
    }

    ngx_relay_attempt_log_local(at);

    if (at->delivered && !at->failed) {
        ngx_relay_attempt_report_local(at);
    }

    free(at->original);
    at->original = NULL;

    if (at->debris) {
        ngx_log_error(NGX_LOG_NOTICE, sc->log, 0,
                      "%s: removed incomplete queue file of a session that "
                      "ended before \"250\"", at->name);
    }

    if (at->corrupt) {
        ngx_log_error(NGX_LOG_CRIT, sc->log, 0,
                      "%s: the queue file does not parse, moved to "
                      "\"%Vcorrupt/%s\"", at->name, &sc->spool.path,
                      at->name);
    }

    if (at->outcome == NGX_RELAY_SCHED_QUEUED && !at->not_due
        && !at->failed && at->remote && sc->delivery
        && !ngx_exiting && !ngx_terminate
        && ngx_relay_attempt_remote(at) == NGX_OK)
    {
        return;                           /* it ends the attempt */
    }

    ngx_relay_attempt_end(at);
}


/* one line per recipient and attempt, queue id first */

static void
ngx_relay_attempt_log_local(ngx_relay_attempt_t *at)
{
    time_t                     delay;
    ngx_uint_t                 i;
    ngx_relay_queued_t        *q;
    ngx_relay_queued_rcpt_t   *r;
    ngx_relay_local_result_t  *res;

    q = &at->queued;
    delay = ngx_time() - q->arrival;

    for (i = 0; i < at->nresults; i++) {
        res = &at->results[i];
        r = &q->rcpts[res->index];

        if (res->rc == NGX_ERROR) {
            ngx_log_error(NGX_LOG_WARN, at->sched->log, res->err,
                          "%V: to=<%V>, relay=local, delay=%T, dsn=4.3.0, "
                          "status=deferred (maildir %s failed), "
                          "category=other", &q->id, &r->addr, delay,
                          res->failed);
            ngx_relay_account_local(at->sched, q, r, 1, res->failed);
            continue;
        }

        ngx_relay_account_local(at->sched, q, r, 0,
                                res->rc == NGX_DECLINED
                                ? "already in maildir"
                                : "delivered to maildir");

        ngx_log_error(NGX_LOG_INFO, at->sched->log, 0,
                      "%V: to=<%V>, relay=local, delay=%T, dsn=2.0.0, "
                      "status=sent (%s)", &q->id, &r->addr, delay,
                      res->rc == NGX_DECLINED ? "already in maildir"
                                              : "delivered to maildir");
    }

    if (at->removed) {
        ngx_log_error(NGX_LOG_INFO, at->sched->log, 0, "%V: removed",
                      &q->id);
    }
}


/* the "delivered" DSN of the Maildir deliveries with NOTIFY=SUCCESS */

static void
ngx_relay_attempt_report_local(ngx_relay_attempt_t *at)
{
    ngx_uint_t                 i, n;
    ngx_relay_dsn_t            dsn;
    ngx_relay_dest_t          *dests, *dst;
    ngx_relay_queued_t        *q;
    ngx_relay_local_result_t  *res;

    q = &at->queued;

    dests = ngx_calloc(at->nresults * sizeof(ngx_relay_dest_t),
                       at->sched->log);
    if (dests == NULL) {
        return;
    }

    n = 0;

    for (i = 0; i < at->nresults; i++) {
        res = &at->results[i];

        if (res->rc != NGX_OK) {
            continue;
        }

        dst = &dests[n++];
        dst->index = res->index;
        dst->addr = q->rcpts[res->index].addr;
        dst->status = NGX_RELAY_DELIVERY_SENT;
        dst->local = 1;
        ngx_cpystrn(dst->dsn, (u_char *) "2.0.0", sizeof(dst->dsn));
        dst->reply_len = ngx_sprintf(dst->reply, "250 2.0.0 delivered to "
                                     "maildir")
                         - dst->reply;
    }

    dsn.spool = &at->sched->spool;
    dsn.hostname = at->sched->hostname;
    dsn.domains = at->sched->domains;
    dsn.queued = q;
    dsn.dests = dests;
    dsn.ndests = n;
    dsn.original = at->original;
    dsn.original_len = at->original_len;
    dsn.kind = NGX_RELAY_DSN_SUCCESS;

    (void) ngx_relay_dsn_send(&dsn);

    ngx_free(dests);
}


/*
 * The remote phase: the pending recipients outside the local domains, one
 * delivery per domain, all domains at once.
 */

static ngx_int_t
ngx_relay_attempt_remote(ngx_relay_attempt_t *at)
{
    ngx_str_t                   domain, other;
    ngx_uint_t                  i, n, first, ngroups;
    ngx_relay_sched_t          *sc;
    ngx_relay_sched_dest_t     *dest;
    ngx_relay_attempt_group_t  *g;

    sc = at->sched;

    at->dests = ngx_calloc(at->queued.nrcpts * sizeof(ngx_relay_dest_t),
                           sc->log);
    at->groups = ngx_calloc(at->queued.nrcpts
                            * sizeof(ngx_relay_attempt_group_t), sc->log);

    if (at->dests == NULL || at->groups == NULL) {
        return NGX_ERROR;
    }

    n = ngx_relay_attempt_collect(at);

    ngx_relay_attempt_operator_bounces(at);

    if (at->ndests == 0) {
        return NGX_ERROR;
    }

    /*
     * One delivery per run of equal domains.  A delivery may end before
     * its start returns (a refused connection on loopback): the extra
     * count keeps the message from being recorded before all have started.
     */

    at->deliveries = 1;
    ngroups = 0;

    for (first = 0; first < n; first = i) {
        (void) ngx_relay_maildir_split(&at->dests[first].addr, &domain);

        for (i = first + 1; i < n; i++) {
            if (ngx_relay_maildir_split(&at->dests[i].addr, &other) == NULL
                || !ngx_relay_attempt_same_domain(&domain, &other))
            {
                break;
            }
        }

        g = &at->groups[ngroups++];
        g->attempt = at;
        g->first = first;
        g->n = i - first;

        dest = ngx_relay_sched_suspended(sc, at->entry, &domain);

        if (dest) {
            ngx_relay_attempt_suspend(at, g, dest);
            continue;
        }

        ngx_relay_attempt_deliver(at, g, &domain);
    }

    if (--at->deliveries == 0) {
        return ngx_relay_attempt_record(at);
    }

    return NGX_OK;
}


/* pending remote recipients into dests[], grouped by domain */

static ngx_uint_t
ngx_relay_attempt_collect(ngx_relay_attempt_t *at)
{
    ngx_str_t                 domain, other;
    ngx_uint_t                i, j, n;
    ngx_relay_queued_t       *q;
    ngx_relay_queued_rcpt_t  *r;

    q = &at->queued;
    n = 0;

    for (i = 0; i < q->nrcpts; i++) {
        r = &q->rcpts[i];

        if (r->state != NGX_RELAY_RCPT_PENDING
            || ngx_relay_maildir_split(&r->addr, &domain) == NULL
            || ngx_relay_maildir_local_domain(at->sched->domains, &domain))
        {
            continue;
        }

        for (j = 0; j < n; j++) {
            if (ngx_relay_maildir_split(&at->dests[j].addr, &other)
                && ngx_relay_attempt_same_domain(&domain, &other))
            {
                break;
            }
        }

        /* keep a domain's recipients together: insert after its last */

        while (j < n
               && ngx_relay_maildir_split(&at->dests[j].addr, &other)
               && ngx_relay_attempt_same_domain(&domain, &other))
        {
            j++;
        }

        if (j < n) {
            ngx_memmove(&at->dests[j + 1], &at->dests[j],
                        (n - j) * sizeof(ngx_relay_dest_t));
        }

        ngx_memzero(&at->dests[j], sizeof(ngx_relay_dest_t));
        at->dests[j].index = i;
        at->dests[j].addr = r->addr;
        n++;
    }

    at->ndests = n;

    return n;
}


/* recipients an operator bounced fail now, after those to deliver */

static void
ngx_relay_attempt_operator_bounces(ngx_relay_attempt_t *at)
{
    ngx_uint_t                i;
    ngx_relay_dest_t         *dst;
    ngx_relay_queued_t       *q;
    ngx_relay_queued_rcpt_t  *r;

    q = &at->queued;

    for (i = 0; i < q->nrcpts; i++) {
        r = &q->rcpts[i];

        if (r->state != NGX_RELAY_RCPT_BOUNCE) {
            continue;
        }

        dst = &at->dests[at->ndests++];

        ngx_memzero(dst, sizeof(ngx_relay_dest_t));
        dst->index = i;
        dst->addr = r->addr;
        dst->status = NGX_RELAY_DELIVERY_FAILED;
        ngx_cpystrn(dst->dsn, (u_char *) "5.0.0", 6);
        dst->reply_len = ngx_sprintf(dst->reply, "message bounced by the "
                                     "operator")
                         - dst->reply;
        dst->relay_len = ngx_sprintf(dst->relay, "none") - dst->relay;
    }
}


static ngx_uint_t
ngx_relay_attempt_same_domain(ngx_str_t *a, ngx_str_t *b)
{
    return a->len == b->len && ngx_strncasecmp(a->data, b->data, a->len) == 0;
}


static void
ngx_relay_attempt_deliver(ngx_relay_attempt_t *at,
    ngx_relay_attempt_group_t *g, ngx_str_t *domain)
{
    ngx_uint_t         j;
    ngx_relay_dest_t  *dst;

    at->deliveries++;

    if (ngx_relay_delivery_start(at->sched->delivery, at->fd, &at->file,
                                 &at->queued, domain, &at->dests[g->first],
                                 g->n,
                                 ngx_relay_attempt_delivered, g)
        == NGX_OK)
    {
        return;
    }

    at->deliveries--;

    for (j = g->first; j < g->first + g->n; j++) {
        dst = &at->dests[j];
        dst->status = NGX_RELAY_DELIVERY_DEFERRED;
        ngx_cpystrn(dst->dsn, (u_char *) "4.3.0", 6);
        dst->reply_len = ngx_sprintf(dst->reply, "out of memory")
                         - dst->reply;
    }
}


/*
 * The destination was unreachable and its time has not come: no attempt,
 * its recipients are deferred with its last error (an attempt all the
 * same: their backoff and lifetime go on).
 */

static void
ngx_relay_attempt_suspend(ngx_relay_attempt_t *at,
    ngx_relay_attempt_group_t *g, ngx_relay_sched_dest_t *dest)
{
    ngx_uint_t         j;
    ngx_relay_dest_t  *dst;

    for (j = g->first; j < g->first + g->n; j++) {
        dst = &at->dests[j];
        dst->status = NGX_RELAY_DELIVERY_DEFERRED;
        ngx_cpystrn(dst->dsn, dest->dsn, sizeof(dst->dsn));
        dst->reply_len = ngx_snprintf(dst->reply, NGX_RELAY_REPLY_TEXT,
                                      "delivery temporarily suspended: %*s",
                                      dest->reply_len, dest->reply)
                         - dst->reply;
        ngx_memcpy(dst->relay, dest->relay, dest->relay_len);
        dst->relay_len = dest->relay_len;
    }
}


static void
ngx_relay_attempt_delivered(ngx_relay_delivery_t *d)
{
    ngx_str_t                   domain;
    ngx_uint_t                  j;
    ngx_relay_dest_t           *dst, *why;
    ngx_relay_attempt_t        *at;
    ngx_relay_attempt_group_t  *g;

    g = ngx_relay_delivery_data(d);
    at = g->attempt;

    /* what the destination said, for its record in the schedule */

    why = &at->dests[g->first];

    for (j = g->first; j < g->first + g->n; j++) {
        dst = &at->dests[j];

        if (dst->status == NGX_RELAY_DELIVERY_DEFERRED) {
            why = dst;
            break;
        }
    }

    if (ngx_relay_maildir_split(&why->addr, &domain)) {
        ngx_relay_sched_reached(at->sched, at->entry, &domain,
                                ngx_relay_delivery_unreachable(d), why->dsn,
                                why->reply, why->reply_len, why->relay,
                                why->relay_len);
    }

    ngx_relay_delivery_free(d);

    if (--at->deliveries) {
        return;
    }

    if (ngx_relay_attempt_record(at) != NGX_OK) {
        ngx_relay_attempt_end(at);
    }
}


/*
 * After the attempt: recipients past the queue lifetime fail; the outcome
 * goes to the queue file in a thread (done and failed marks, the next
 * attempt), or the file goes when nothing is left.
 */

static ngx_int_t
ngx_relay_attempt_record(ngx_relay_attempt_t *at)
{
    time_t               now, backoff;
    ngx_str_t            domain;
    ngx_uint_t           i, tried;
    ngx_relay_retry_t    retry;
    ngx_relay_dest_t    *dst;
    ngx_relay_policy_t  *p;

    p = at->sched->delivery->policy;
    now = ngx_time();

    at->next = 0;

    /*
     * Recipients held back by shaping were not tried: when nothing else
     * was, the attempt does not count, and they never expire for it.
     */

    tried = 0;

    for (i = 0; i < at->ndests; i++) {
        tried += !at->dests[i].throttled;
    }

    at->attempts = at->queued.attempts + (tried ? 1 : 0);

    /* each recipient by its domain's retry policy; the soonest retry wins */

    for (i = 0; i < at->ndests; i++) {
        dst = &at->dests[i];

        if (dst->status != NGX_RELAY_DELIVERY_DEFERRED) {
            continue;
        }

        if (dst->throttled) {
            if (at->next == 0 || dst->retry_at < at->next) {
                at->next = dst->retry_at;
            }

            continue;
        }

        if (ngx_relay_maildir_split(&dst->addr, &domain) == NULL) {
            ngx_str_set(&domain, "");
        }

        ngx_relay_policy_retry(p, &domain, &retry);

        backoff = ngx_relay_policy_backoff(&retry, at->attempts);

        if (at->next == 0 || now + backoff < at->next) {
            at->next = now + backoff;
        }

        ngx_relay_attempt_expire(at, dst, &retry, now);
    }

    at->delays = 0;

    for (i = 0; i < at->ndests; i++) {
        at->delays += at->dests[i].delayed;
    }

    if (at->next == 0) {
        at->next = now;
    }

    /* never for a null sender */

    at->bounces = 0;
    at->relayed = 0;

    for (i = 0; at->queued.sender.len && i < at->ndests; i++) {
        dst = &at->dests[i];

        at->bounces += ngx_relay_dsn_reported(&at->queued, dst,
                                              NGX_RELAY_DSN_FAILED);
        at->relayed += ngx_relay_dsn_reported(&at->queued, dst,
                                              NGX_RELAY_DSN_SUCCESS);
    }

    ngx_relay_attempt_log_remote(at);

    ngx_queue_init(&at->batch);

    if (at->sched->recording >= NGX_RELAY_ATTEMPT_RECORDING) {
        ngx_queue_insert_tail(&at->sched->record_wait, &at->link);
        return NGX_OK;
    }

    return ngx_relay_attempt_post_records(at);
}


/*
 * Records go to the thread pool in batches: at most
 * NGX_RELAY_ATTEMPT_RECORDING tasks at a time, and the attempts that end
 * meanwhile wait for the next one, which takes them all.  A task per
 * delivered message cost a wake-up of a thread and of the event loop
 * each (futex and context switches were a tenth of a worker's time);
 * under load one task now takes many messages.  At rest each attempt
 * still gets its task at once.
 */

static ngx_int_t
ngx_relay_attempt_post_records(ngx_relay_attempt_t *at)
{
    ngx_thread_task_t  *task;

    task = at->task;
    task->ctx = at;
    task->handler = ngx_relay_attempt_records_thread;
    task->event.handler = ngx_relay_attempt_records_done;
    task->event.data = at;

    if (ngx_thread_task_post(at->sched->spool.thread_pool, task) != NGX_OK) {
        return NGX_ERROR;
    }

    at->sched->recording++;

    return NGX_OK;
}


static void
ngx_relay_attempt_records_thread(void *data, ngx_log_t *log)
{
    ngx_relay_attempt_t  *at = data;

    ngx_queue_t  *q;

    ngx_relay_attempt_record_thread(at, log);

    for (q = ngx_queue_head(&at->batch);
         q != ngx_queue_sentinel(&at->batch);
         q = ngx_queue_next(q))
    {
        ngx_relay_attempt_record_thread(
            ngx_queue_data(q, ngx_relay_attempt_t, link), log);
    }
}


static void
ngx_relay_attempt_records_done(ngx_event_t *ev)
{
    ngx_relay_attempt_t  *at = ev->data;

    ngx_queue_t           done, *q;
    ngx_relay_sched_t    *sc;
    ngx_relay_attempt_t  *next;

    sc = at->sched;
    sc->recording--;

    /* the batch: its attempts end below and free their tasks */

    ngx_queue_init(&done);
    ngx_queue_add(&done, &at->batch);
    ngx_queue_init(&at->batch);
    ngx_queue_insert_head(&done, &at->link);

    /* the thread goes on at once with those that waited */

    if (!ngx_queue_empty(&sc->record_wait)) {
        q = ngx_queue_head(&sc->record_wait);
        ngx_queue_remove(q);
        next = ngx_queue_data(q, ngx_relay_attempt_t, link);

        ngx_queue_init(&next->batch);
        ngx_queue_add(&next->batch, &sc->record_wait);
        ngx_queue_init(&sc->record_wait);

        if (ngx_relay_attempt_post_records(next) != NGX_OK) {

            /* not recorded, as when one attempt's task cannot be posted */

            while (!ngx_queue_empty(&next->batch)) {
                q = ngx_queue_head(&next->batch);
                ngx_queue_remove(q);
                ngx_relay_attempt_end(ngx_queue_data(q, ngx_relay_attempt_t,
                                                     link));
            }

            ngx_relay_attempt_end(next);
        }
    }

    while (!ngx_queue_empty(&done)) {
        q = ngx_queue_head(&done);
        ngx_queue_remove(q);
        ngx_relay_attempt_recorded(ngx_queue_data(q, ngx_relay_attempt_t,
                                                  link));
    }
}


/* a deferred recipient past its lifetime fails; or gets a delay warning */

static void
ngx_relay_attempt_expire(ngx_relay_attempt_t *at, ngx_relay_dest_t *dst,
    ngx_relay_retry_t *retry, time_t now)
{
    u_char               last[NGX_RELAY_REPLY_TEXT + 8];
    size_t               len;
    ngx_uint_t           notify;
    ngx_relay_queued_t  *q;

    q = &at->queued;

    if (now - q->arrival >= retry->lifetime) {
        dst->status = NGX_RELAY_DELIVERY_FAILED;
        dst->expired = 1;

        ngx_memcpy(last, dst->reply, dst->reply_len);
        len = dst->reply_len;

        dst->reply_len = ngx_snprintf(dst->reply, sizeof(dst->reply),
                                      "delivery time expired; last "
                                      "error: %*s", len, last)
                         - dst->reply;
        ngx_cpystrn(dst->dsn, (u_char *) "5.4.7", 6);
        return;
    }

    /*
     * RFC 3461 4.1: one "delayed" DSN per message, after
     * relay_delay_warning, to recipients with NOTIFY=DELAY or without
     * NOTIFY (as Postfix's delay_warning_time does); never for <>.
     */

    dst->until = q->arrival + retry->lifetime;
    notify = q->rcpts[dst->index].notify;

    if (retry->delay_warning
        && now - q->arrival >= retry->delay_warning
        && !q->delay_warned && q->warned_offset && q->sender.len
        && (notify == 0 || (notify & NGX_RELAY_NOTIFY_DELAY)))
    {
        dst->delayed = 1;
    }
}


static void
ngx_relay_attempt_record_thread(void *data, ngx_log_t *log)
{
    ngx_relay_attempt_t  *at = data;

    ngx_int_t            marked;
    ngx_uint_t           i, pending, dsn;
    ngx_relay_queued_t  *q;

    q = &at->queued;
    at->failed = NULL;
    at->err = 0;

    (void) ngx_relay_attempt_mark_all(at, 0);

    pending = 0;

    for (i = 0; i < q->nrcpts; i++) {
        pending += (q->rcpts[i].state == NGX_RELAY_RCPT_PENDING);
    }

    /*
     * A new message's file may be hollow: written now if it stays or a DSN
     * copies from it; delivered in full, it goes without.
     */

    dsn = at->bounces || at->delays || at->relayed;

    if (at->writer && (pending || dsn)
        && ngx_relay_spool_fill(at->writer, &at->err) != NGX_OK)
    {
        at->failed = "pwrite";
        return;
    }

    if (dsn) {
        ngx_relay_dsn_read_original(at->fd, q, &at->original,
                                    &at->original_len);
    }

    if (pending == 0) {

        /* the file goes, and the marks would go with it: none written */

        ngx_relay_attempt_remove(at);

        if (!at->removed
            && (at->writer == NULL
                || ngx_relay_spool_fill(at->writer, &at->err) == NGX_OK))
        {
            (void) ngx_relay_attempt_mark_all(at, 1);  /* no other try */
        }

        return;
    }

    marked = ngx_relay_attempt_mark_all(at, 1);
    if (marked == NGX_ERROR) {
        return;
    }

    if (ngx_relay_spool_schedule(at->fd, q, at->next, at->attempts,
                                 &at->err)
        != NGX_OK
        || ngx_relay_attempt_last_error(at) != NGX_OK)
    {
        at->failed = "pwrite";
        return;
    }

    /* synced with the rest: the delay DSN goes once, restarts or not */

    if (at->delays
        && ngx_relay_spool_mark_delay_warned(at->fd, q, &at->err) != NGX_OK)
    {
        at->failed = "pwrite";
        return;
    }

    /*
     * Only a deferral: the next attempt time, the count and the last error
     * need no sync.  Lost in a crash, they make the retry come sooner.
     */

    if ((marked || at->delays) && fdatasync(at->fd) == -1) {
        at->err = errno;
        at->failed = "fdatasync";
        return;
    }

    /* the file's time says when it is due: a rebuild takes due ones first */

    (void) ngx_relay_spool_touch(at->fd, at->next);
}


/*
 * Thread side: done and failed marks, into the queue file when "write",
 * else in memory only; the number made, or NGX_ERROR.
 */

static ngx_int_t
ngx_relay_attempt_mark_all(ngx_relay_attempt_t *at, ngx_uint_t write)
{
    u_char             state;
    ngx_int_t          marked;
    ngx_uint_t         i;
    ngx_relay_dest_t  *dst;

    marked = 0;

    for (i = 0; i < at->ndests; i++) {
        dst = &at->dests[i];

        if (dst->status == NGX_RELAY_DELIVERY_SENT) {
            state = NGX_RELAY_RCPT_DONE;

        } else if (dst->status == NGX_RELAY_DELIVERY_FAILED) {
            state = NGX_RELAY_RCPT_FAILED;

        } else {
            continue;
        }

        if (!write) {
            at->queued.rcpts[dst->index].state = state;

        } else if (ngx_relay_spool_mark(at->fd, &at->queued.rcpts[dst->index],
                                        state, &at->err)
                   != NGX_OK)
        {
            at->failed = "pwrite";
            return NGX_ERROR;
        }

        marked++;
    }

    return marked;
}


/* thread side: what operators see in the queue listing as the last error */

static ngx_int_t
ngx_relay_attempt_last_error(ngx_relay_attempt_t *at)
{
    u_char             text[NGX_RELAY_SPOOL_ERROR_LEN], *p, *last;
    ngx_uint_t         i;
    ngx_relay_dest_t  *dst;

    for (i = 0; i < at->ndests; i++) {
        dst = &at->dests[i];

        if (dst->status != NGX_RELAY_DELIVERY_DEFERRED) {
            continue;
        }

        last = text + sizeof(text);
        p = ngx_slprintf(text, last, "<%V> %*s: %s %*s", &dst->addr,
                         dst->relay_len, dst->relay, dst->dsn,
                         dst->reply_len, dst->reply);

        return ngx_relay_spool_set_error(at->fd, &at->queued, text,
                                         p - text, &at->err);
    }

    return NGX_OK;
}


static void
ngx_relay_attempt_recorded(ngx_relay_attempt_t *at)
{
    ngx_log_t  *log;

    log = at->sched->log;

    if (at->failed) {
        ngx_log_error(NGX_LOG_CRIT, log, at->err,
                      "%V: %s() of queue file failed", &at->queued.id,
                      at->failed);

    } else if (at->removed) {
        ngx_log_error(NGX_LOG_INFO, log, 0, "%V: removed", &at->queued.id);
    }

    if (at->bounces && !at->failed) {
        ngx_relay_attempt_report(at, NGX_RELAY_DSN_FAILED);
    }

    if (at->delays && !at->failed && !at->removed) {
        ngx_relay_attempt_report(at, NGX_RELAY_DSN_DELAYED);
    }

    if (at->relayed && !at->failed) {
        ngx_relay_attempt_report(at, NGX_RELAY_DSN_SUCCESS);
    }

    free(at->original);
    at->original = NULL;

    ngx_relay_attempt_end(at);
}


/* one line per recipient and attempt, queue id first */

static void
ngx_relay_attempt_log_remote(ngx_relay_attempt_t *at)
{
    time_t              delay;
    ngx_uint_t          i, level, category;
    ngx_relay_dest_t   *dst;
    static const char  *status[] = { "pending", "", "sent", "", "deferred",
                                     "bounced" };

    delay = ngx_time() - at->queued.arrival;

    for (i = 0; i < at->ndests; i++) {
        dst = &at->dests[i];

        category = (dst->status == NGX_RELAY_DELIVERY_SENT)
                   ? RELAY_CLASS_OTHER
                   : relay_classify(at->sched->bounce_rules,
                                    (char *) dst->dsn,
                                    ngx_strlen(dst->dsn), dst->reply,
                                    dst->reply_len);

        level = (dst->status == NGX_RELAY_DELIVERY_SENT) ? NGX_LOG_INFO
                                                          : NGX_LOG_NOTICE;

        ngx_log_error(level, at->sched->log, 0,
                      "%V: to=<%V>, relay=%*s, delay=%T, dsn=%s, "
                      "status=%s (%*s)%s%s%s%s%s", &at->queued.id, &dst->addr,
                      dst->relay_len, dst->relay, delay, dst->dsn,
                      status[dst->status], dst->reply_len, dst->reply,
                      dst->reused ? ", conn=reused" : "",
                      dst->tls ? ", tls=" : "", dst->tls ? dst->tls : "",
                      dst->status == NGX_RELAY_DELIVERY_SENT
                      ? "" : ", category=",
                      dst->status == NGX_RELAY_DELIVERY_SENT
                      ? "" : relay_classify_name(category));

        ngx_relay_account_delivery(at->sched, &at->queued, dst, at->attempts,
                                   category);
    }
}


static void
ngx_relay_attempt_report(ngx_relay_attempt_t *at, ngx_uint_t kind)
{
    ngx_relay_dsn_t  dsn;

    dsn.spool = &at->sched->spool;
    dsn.hostname = at->sched->hostname;
    dsn.domains = at->sched->domains;
    dsn.queued = &at->queued;
    dsn.dests = at->dests;
    dsn.ndests = at->ndests;
    dsn.original = at->original;
    dsn.original_len = at->original_len;
    dsn.kind = kind;

    (void) ngx_relay_dsn_send(&dsn);
}


/* the lock goes, the outcome goes to the schedule */

static void
ngx_relay_attempt_end(ngx_relay_attempt_t *at)
{
    ngx_relay_sched_t          *sc;
    ngx_relay_sched_summary_t   s;

    sc = at->sched;

    ngx_memzero(&s, sizeof(ngx_relay_sched_summary_t));
    s.outcome = at->outcome;

    if (at->outcome == NGX_RELAY_SCHED_QUEUED && at->queued.header) {
        ngx_relay_sched_summarize(&at->queued, sc->domains, &s);

        /* after the attempt's last write, the lock still held: fstat() */

        ngx_relay_sched_file_version(at->writer ? at->writer->fd : at->fd,
                                     &s);
    }

    if (at->writer) {
        if (at->removed) {
            ngx_relay_spool_gone(at->writer);
        }

        ngx_relay_spool_release(at->writer);

    } else if (at->fd != NGX_INVALID_FILE) {
        (void) close(at->fd);
    }

    ngx_relay_spool_free(&at->queued);
    free(at->results);
    ngx_free(at->dests);
    ngx_free(at->groups);

    ngx_relay_sched_attempted(sc, at->entry, &s);

    ngx_relay_sched_summary_free(&s);
    ngx_free(at->task);
}
