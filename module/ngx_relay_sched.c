
/*
 * Copyright (C) The relay authors
 */


/*
 * The scheduler decides what to try when; it never reads message content.
 *
 * New messages come from the spool with their lock held: recipients in
 * local domains are delivered into Maildirs right away by a thread-pool
 * task, then the lock is dropped.  Recipients in other domains stay pending
 * in the queue file for the delivery engine; nothing here bounces them.
 *
 * Recovery: every scan_interval (and right after start) a worker lists
 * queue/ in a thread, keeps the names that hash to its slot (the queue is
 * partitioned across workers to avoid lock contention, while flock() keeps
 * ownership exclusive even when old and new workers overlap during a
 * reload), and retries the local recipients still pending.  That is how
 * messages survive kill -9, reloads and changes of worker count.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_relay.h>
#include <ngx_relay_spool.h>
#include <ngx_relay_maildir.h>
#include <ngx_relay_sched.h>
#include <ngx_relay_delivery.h>


#define NGX_RELAY_SCHED_MAX_BUSY     16
#define NGX_RELAY_SCHED_DEBRIS_AGE   10      /* seconds */


typedef struct {
    ngx_uint_t                 index;        /* recipient in the envelope */
    ngx_int_t                  rc;           /* NGX_OK, NGX_DECLINED, ERROR */
    ngx_err_t                  err;
    const char                *failed;
} ngx_relay_local_result_t;


typedef struct {
    ngx_relay_sched_t         *sched;
    ngx_relay_spool_writer_t  *writer;       /* a new message, or NULL */
    u_char                    *name;         /* found by a scan: malloc()ed */
    ngx_fd_t                   fd;

    ngx_relay_queued_t         queued;
    ngx_relay_local_result_t  *results;
    ngx_uint_t                 nresults;
    ngx_uint_t                 remaining;    /* recipients still pending */
    ngx_uint_t                 removed;      /* queue file is gone */
    ngx_uint_t                 debris;       /* incomplete, removed */
    ngx_uint_t                 remote;       /* pending, not local */

    /* the remote phase */
    ngx_thread_task_t         *task;
    ngx_relay_dest_t          *dests;
    ngx_uint_t                 ndests;
    ngx_uint_t                 deliveries;   /* domains in flight */
    time_t                     next;         /* next attempt to record */
    ngx_uint_t                 attempts;
    ngx_uint_t                 bounces;      /* failed, want a DSN */
    ngx_uint_t                 delays;       /* want a "delayed" DSN */
    u_char                    *original;     /* for the DSN, malloc()ed */
    size_t                     original_len;
    ngx_err_t                  err;
    const char                *failed;
} ngx_relay_local_ctx_t;


typedef struct {
    ngx_relay_sched_t         *sched;
    u_char                   **names;
    ngx_uint_t                 nnames;
    ngx_err_t                  err;
} ngx_relay_scan_ctx_t;


static void ngx_relay_sched_queued(ngx_relay_spool_t *sp,
    ngx_relay_spool_writer_t *w);
static ngx_int_t ngx_relay_sched_post_local(ngx_relay_sched_t *sc,
    ngx_relay_spool_writer_t *w, u_char *name);
static void ngx_relay_sched_local_thread(void *data, ngx_log_t *log);
static void ngx_relay_sched_remove(ngx_relay_local_ctx_t *ctx);
static void ngx_relay_sched_debris(ngx_relay_local_ctx_t *ctx);
static ngx_int_t ngx_relay_sched_deliver_one(ngx_relay_local_ctx_t *ctx,
    ngx_relay_queued_rcpt_t *r, ngx_uint_t index,
    ngx_relay_local_result_t *res);
static void ngx_relay_sched_local_done(ngx_event_t *ev);
static void ngx_relay_sched_end(ngx_relay_local_ctx_t *ctx);
static ngx_int_t ngx_relay_sched_remote(ngx_relay_local_ctx_t *ctx);
static void ngx_relay_sched_delivered(ngx_relay_delivery_t *d);
static void ngx_relay_sched_record_thread(void *data, ngx_log_t *log);
static ngx_int_t ngx_relay_sched_last_error(ngx_relay_local_ctx_t *ctx);
static void ngx_relay_sched_record_done(ngx_event_t *ev);
static ngx_str_t *ngx_relay_sched_domain(ngx_str_t *addr, ngx_str_t *domain);
static ngx_int_t ngx_relay_sched_record(ngx_relay_local_ctx_t *ctx);
static void ngx_relay_sched_log_remote(ngx_relay_local_ctx_t *ctx);
static ngx_uint_t ngx_relay_sched_notify_failure(ngx_uint_t notify);
static void ngx_relay_sched_read_original(ngx_relay_local_ctx_t *ctx);
static void ngx_relay_sched_bounce(ngx_relay_local_ctx_t *ctx,
    ngx_uint_t delayed);
static ngx_uint_t ngx_relay_sched_reported(ngx_relay_local_ctx_t *ctx,
    ngx_relay_dest_t *dst, ngx_uint_t delayed);
static ngx_uint_t ngx_relay_sched_ascii(ngx_str_t *s);
static void ngx_relay_sched_log_results(ngx_relay_local_ctx_t *ctx,
    ngx_log_t *log);
static void ngx_relay_sched_scan_handler(ngx_event_t *ev);
static void ngx_relay_sched_scan_thread(void *data, ngx_log_t *log);
static void ngx_relay_sched_scan_done(ngx_event_t *ev);
static void ngx_relay_sched_dispatch(ngx_relay_sched_t *sc);
static ngx_uint_t ngx_relay_sched_slot(u_char *name, ngx_uint_t workers);


ngx_int_t
ngx_relay_sched_init(ngx_relay_sched_t *sc, ngx_cycle_t *cycle)
{
    if (ngx_relay_spool_init(&sc->spool, cycle) != NGX_OK) {
        return NGX_ERROR;
    }

    sc->spool.queued = ngx_relay_sched_queued;
    sc->spool.data = sc;

    sc->scan_event.handler = ngx_relay_sched_scan_handler;
    sc->scan_event.data = sc;
    sc->scan_event.log = cycle->log;
    sc->scan_event.cancelable = 1;

    /* the first scan finds what a crash or the previous workers left */

    ngx_add_timer(&sc->scan_event, 1000);

    return NGX_OK;
}


/*
 * An operator asked for a retry (a flush through controld): scan now, or
 * right after the scan in progress.
 */

void
ngx_relay_sched_scan_now(ngx_relay_sched_t *sc)
{
    if (ngx_exiting || ngx_terminate) {
        return;
    }

    if (sc->scanning || sc->backlog) {
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
    if (sc->scan_event.timer_set) {
        ngx_del_timer(&sc->scan_event);
    }

    ngx_relay_spool_exit(&sc->spool);

    if (sc->spool.queue_fd > 0) {
        (void) close(sc->spool.queue_fd);
        sc->spool.queue_fd = -1;
    }
}


ngx_relay_domain_t *
ngx_relay_sched_local_domain(ngx_array_t *domains, ngx_str_t *domain)
{
    ngx_uint_t           i;
    ngx_relay_domain_t  *d;

    if (domains == NULL) {
        return NULL;
    }

    d = domains->elts;

    for (i = 0; i < domains->nelts; i++) {
        if (d[i].name.len == domain->len
            && ngx_strncasecmp(d[i].name.data, domain->data, domain->len)
               == 0)
        {
            return &d[i];
        }
    }

    return NULL;
}


/* the spool hands over a durable message, its lock still held */

static void
ngx_relay_sched_queued(ngx_relay_spool_t *sp, ngx_relay_spool_writer_t *w)
{
    ngx_relay_sched_t  *sc = sp->data;

    if ((w->local == 0 && sc->delivery == NULL)
        || ngx_relay_sched_post_local(sc, w, NULL) != NGX_OK)
    {
        /* remote only, or retried by the next scan */
        ngx_relay_spool_release(w);
    }
}


static ngx_int_t
ngx_relay_sched_post_local(ngx_relay_sched_t *sc, ngx_relay_spool_writer_t *w,
    u_char *name)
{
    ngx_thread_task_t      *task;
    ngx_relay_local_ctx_t  *ctx;

    task = ngx_calloc(sizeof(ngx_thread_task_t)
                      + sizeof(ngx_relay_local_ctx_t), sc->spool.log);
    if (task == NULL) {
        return NGX_ERROR;
    }

    ctx = (ngx_relay_local_ctx_t *) (task + 1);
    ctx->sched = sc;
    ctx->writer = w;
    ctx->name = name;
    ctx->fd = w ? w->fd : NGX_INVALID_FILE;

    task->ctx = ctx;
    task->handler = ngx_relay_sched_local_thread;
    task->event.handler = ngx_relay_sched_local_done;
    task->event.data = task;

    if (ngx_thread_task_post(sc->spool.thread_pool, task) != NGX_OK) {
        ngx_free(task);
        return NGX_ERROR;
    }

    sc->busy++;

    return NGX_OK;
}


static void
ngx_relay_sched_local_thread(void *data, ngx_log_t *log)
{
    ngx_relay_local_ctx_t  *ctx = data;

    ngx_uint_t                i, marked;
    ngx_relay_queued_t       *q;
    ngx_relay_queued_rcpt_t  *r;

    if (ctx->fd == NGX_INVALID_FILE) {
        ctx->fd = ngx_relay_spool_open_locked(&ctx->sched->spool, ctx->name,
                                              &ctx->err);
        if (ctx->fd == NGX_INVALID_FILE) {
            ctx->failed = "open";
            return;                       /* someone else's, or gone */
        }
    }

    q = &ctx->queued;

    switch (ngx_relay_spool_read(ctx->fd, q, &ctx->err)) {

    case NGX_OK:
        break;

    case NGX_DECLINED:
        ngx_relay_sched_debris(ctx);
        return;

    default:
        ctx->failed = "read";
        return;
    }

    /* an operator's hold: nothing is attempted until it is released */

    if (q->held) {
        for (i = 0; i < q->nrcpts; i++) {
            ctx->remaining += (q->rcpts[i].state == NGX_RELAY_RCPT_PENDING
                               || q->rcpts[i].state == NGX_RELAY_RCPT_BOUNCE);
        }

        return;
    }

    ctx->results = calloc(q->nrcpts, sizeof(ngx_relay_local_result_t));
    if (ctx->results == NULL) {
        ctx->err = ENOMEM;
        ctx->failed = "calloc";
        return;
    }

    marked = 0;

    for (i = 0; i < q->nrcpts; i++) {
        r = &q->rcpts[i];

        if (r->state == NGX_RELAY_RCPT_BOUNCE) {
            ctx->remaining++;             /* failed by the remote phase */
            ctx->remote++;
            continue;
        }

        if (r->state != NGX_RELAY_RCPT_PENDING) {
            continue;
        }

        switch (ngx_relay_sched_deliver_one(ctx, r, i,
                                            &ctx->results[ctx->nresults]))
        {
        case NGX_OK:
            ctx->nresults++;
            marked++;
            break;

        case NGX_AGAIN:
            ctx->nresults++;
            ctx->remaining++;
            break;

        default:                          /* NGX_DECLINED: not local */
            ctx->remaining++;
            ctx->remote++;
            break;
        }
    }

    if (ctx->remaining == 0) {
        ngx_relay_sched_remove(ctx);
        return;
    }

    /* done marks must survive a crash, or a retry redoes the work */

    if (marked && fdatasync(ctx->fd) == -1) {
        ctx->err = errno;
        ctx->failed = "fdatasync";
    }
}


/* thread side: every recipient is done, the message goes */

static void
ngx_relay_sched_remove(ngx_relay_local_ctx_t *ctx)
{
    if (ngx_relay_spool_remove(&ctx->sched->spool, &ctx->queued.id,
                               &ctx->err)
        == NGX_OK)
    {
        ctx->removed = 1;

    } else {
        ctx->failed = "unlink";
    }
}


/*
 * A queue file without its trailer whose lock we could take: its session
 * died before "250" (a crash), so its client still has the message.  The
 * age test leaves alone a file whose creator has not yet locked it.
 */

static void
ngx_relay_sched_debris(ngx_relay_local_ctx_t *ctx)
{
    struct stat  st;

    if (ctx->name == NULL
        || fstat(ctx->fd, &st) == -1
        || st.st_mtime + NGX_RELAY_SCHED_DEBRIS_AGE > time(NULL))
    {
        return;
    }

    if (unlinkat(ctx->sched->spool.queue_fd, (char *) ctx->name, 0) == 0) {
        ctx->debris = 1;
    }
}


/*
 * NGX_OK: delivered (now or by an earlier try) and marked done;
 * NGX_AGAIN: a local failure, retry later; NGX_DECLINED: not a local domain.
 */

static ngx_int_t
ngx_relay_sched_deliver_one(ngx_relay_local_ctx_t *ctx,
    ngx_relay_queued_rcpt_t *r, ngx_uint_t index, ngx_relay_local_result_t *res)
{
    u_char                   *at, *p, *s;
    ngx_int_t                 rc;
    ngx_str_t                 domain;
    ngx_relay_sched_t        *sc;
    ngx_relay_queued_t       *q;
    ngx_relay_maildir_job_t   job;
    u_char                    dom[NGX_RELAY_MAX_ADDR];
    u_char                    box[NGX_RELAY_MAX_ADDR];
    u_char                    name[NGX_RELAY_ID_LEN + 512];
    u_char                    hdr[2 * NGX_RELAY_MAX_ADDR + 64];

    sc = ctx->sched;
    q = &ctx->queued;

    at = NULL;
    for (p = r->addr.data; p < r->addr.data + r->addr.len; p++) {
        if (*p == '@') {
            at = p;
        }
    }

    if (at == NULL || r->addr.len >= NGX_RELAY_MAX_ADDR
        || sc->hostname.len > 255)
    {
        return NGX_DECLINED;
    }

    domain.data = at + 1;
    domain.len = r->addr.data + r->addr.len - domain.data;

    if (ngx_relay_sched_local_domain(sc->domains, &domain) == NULL) {
        return NGX_DECLINED;
    }

    res->index = index;

    ngx_strlow(dom, domain.data, domain.len);

    /* the mailbox is the local part, unquoted and lowercased */

    s = box;
    for (p = r->addr.data; p < at; p++) {
        if (*p == '"') {
            continue;
        }

        if (*p == '\\' && p + 1 < at) {
            p++;
        }

        *s++ = ngx_tolower(*p);
    }

    ngx_memzero(&job, sizeof(ngx_relay_maildir_job_t));

    job.root = sc->maildir;
    job.domain.data = dom;
    job.domain.len = domain.len;
    job.mailbox.data = box;
    job.mailbox.len = s - box;

    if (!ngx_relay_maildir_mailbox_valid(&job.mailbox)) {
        res->rc = NGX_ERROR;
        res->err = EINVAL;
        res->failed = "mailbox name";
        return NGX_AGAIN;
    }

    job.name.data = name;
    job.name.len = ngx_sprintf(name, "%T.M%VR%ui.%V", q->arrival, &q->id,
                               index, &sc->hostname)
                   - name;

    job.headers.data = hdr;
    job.headers.len = ngx_sprintf(hdr, "Return-Path: <%V>\r\n"
                                  "Delivered-To: %V\r\n",
                                  &q->sender, &r->addr)
                      - hdr;

    job.src = ctx->fd;
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

    if (ngx_relay_spool_mark(ctx->fd, r, NGX_RELAY_RCPT_DONE, &res->err)
        != NGX_OK)
    {
        res->failed = "pwrite";
    }

    return NGX_OK;
}


static void
ngx_relay_sched_local_done(ngx_event_t *ev)
{
    ngx_thread_task_t  *task = ev->data;

    ngx_relay_sched_t      *sc;
    ngx_relay_local_ctx_t  *ctx;

    ctx = task->ctx;
    sc = ctx->sched;

    if (ctx->failed && ctx->err) {
        ngx_log_error(NGX_LOG_CRIT, sc->spool.log, ctx->err,
                      "relay queue %s: %s() failed",
                      ctx->name ? (char *) ctx->name
                                : (char *) ctx->writer->id_data,
                      ctx->failed);
    }

    ngx_relay_sched_log_results(ctx, sc->spool.log);

    if (ctx->debris) {
        ngx_log_error(NGX_LOG_NOTICE, sc->spool.log, 0,
                      "%s: removed incomplete queue file of a session that "
                      "ended before \"250\"", ctx->name);
    }

    if (ctx->name && !ctx->failed && !ctx->removed && !ctx->debris) {
        sc->tally.messages++;
        sc->tally.pending += ctx->remaining;
        sc->tally.deferred += (ctx->queued.attempts > 0);
    }

    ctx->task = task;

    if (ctx->remote && !ctx->removed && !ctx->failed && sc->delivery
        && !ngx_exiting && !ngx_terminate
        && (ctx->writer || ctx->queued.next <= ngx_time()))
    {
        if (ngx_relay_sched_remote(ctx) == NGX_OK) {
            return;                      /* it ends the message */
        }
    }

    ngx_relay_sched_end(ctx);
}


static void
ngx_relay_sched_end(ngx_relay_local_ctx_t *ctx)
{
    ngx_relay_sched_t  *sc;

    sc = ctx->sched;

    if (ctx->writer) {
        ngx_relay_spool_release(ctx->writer);

    } else if (ctx->fd != NGX_INVALID_FILE) {
        (void) close(ctx->fd);
    }

    ngx_relay_spool_free(&ctx->queued);
    free(ctx->results);
    free(ctx->name);
    ngx_free(ctx->dests);
    ngx_free(ctx->task);

    sc->busy--;

    ngx_relay_sched_dispatch(sc);
}


/* one line per recipient and attempt, queue id first */

static void
ngx_relay_sched_log_results(ngx_relay_local_ctx_t *ctx, ngx_log_t *log)
{
    time_t                     delay;
    ngx_uint_t                 i;
    ngx_relay_queued_t        *q;
    ngx_relay_queued_rcpt_t   *r;
    ngx_relay_local_result_t  *res;

    q = &ctx->queued;
    delay = ngx_time() - q->arrival;

    for (i = 0; i < ctx->nresults; i++) {
        res = &ctx->results[i];
        r = &q->rcpts[res->index];

        if (res->rc == NGX_ERROR) {
            ngx_log_error(NGX_LOG_WARN, log, res->err,
                          "%V: to=<%V>, relay=local, delay=%T, dsn=4.3.0, "
                          "status=deferred (maildir %s failed)",
                          &q->id, &r->addr, delay, res->failed);
            continue;
        }

        (void) ngx_atomic_fetch_add(&ctx->sched->counters->delivered, 1);

        ngx_log_error(NGX_LOG_INFO, log, 0,
                      "%V: to=<%V>, relay=local, delay=%T, dsn=2.0.0, "
                      "status=sent (%s)", &q->id, &r->addr, delay,
                      res->rc == NGX_DECLINED ? "already in maildir"
                                              : "delivered to maildir");
    }

    if (ctx->removed) {
        ngx_log_error(NGX_LOG_INFO, log, 0, "%V: removed", &q->id);
    }
}


static void
ngx_relay_sched_scan_handler(ngx_event_t *ev)
{
    ngx_relay_sched_t  *sc = ev->data;

    ngx_thread_task_t     *task;
    ngx_relay_scan_ctx_t  *ctx;

    if (ngx_exiting || ngx_terminate || sc->scanning || sc->backlog) {
        goto next;
    }

    task = ngx_calloc(sizeof(ngx_thread_task_t)
                      + sizeof(ngx_relay_scan_ctx_t), ev->log);
    if (task == NULL) {
        goto next;
    }

    ctx = (ngx_relay_scan_ctx_t *) (task + 1);
    ctx->sched = sc;

    task->ctx = ctx;
    task->handler = ngx_relay_sched_scan_thread;
    task->event.handler = ngx_relay_sched_scan_done;
    task->event.data = task;

    if (ngx_thread_task_post(sc->spool.thread_pool, task) != NGX_OK) {
        ngx_free(task);
        goto next;
    }

    sc->scanning = 1;
    return;

next:

    if (!ngx_exiting && !ngx_terminate) {
        ngx_add_timer(ev, sc->scan_interval);
    }
}


static void
ngx_relay_sched_scan_thread(void *data, ngx_log_t *log)
{
    ngx_relay_scan_ctx_t  *ctx = data;

    int                 dfd;
    DIR                *dir;
    u_char            **names, **n;
    ngx_uint_t          size;
    struct dirent      *de;
    ngx_relay_sched_t  *sc;

    sc = ctx->sched;

    /* journals of dead workers first: their messages are whole then */

    if (sc->spool.journal.dir_fd != -1) {
        (void) ngx_relay_journal_recover(sc->spool.journal.dir_fd,
                                         sc->spool.queue_fd, sc->spool.log);
    }

    dfd = dup(sc->spool.queue_fd);
    if (dfd == -1) {
        ctx->err = errno;
        return;
    }

    dir = fdopendir(dfd);
    if (dir == NULL) {
        ctx->err = errno;
        (void) close(dfd);
        return;
    }

    rewinddir(dir);

    names = NULL;
    size = 0;

    while ((de = readdir(dir)) != NULL) {
        /* "." entries and anything that is not a queue id */

        if (ngx_strchr(de->d_name, '.') != NULL
            || ngx_relay_sched_slot((u_char *) de->d_name, sc->workers)
               != sc->worker)
        {
            continue;
        }

        if (ctx->nnames == size) {
            size = size ? size * 2 : 64;
            n = realloc(names, size * sizeof(u_char *));
            if (n == NULL) {
                break;
            }

            names = n;
        }

        names[ctx->nnames] = (u_char *) strdup(de->d_name);
        if (names[ctx->nnames] == NULL) {
            break;
        }

        ctx->nnames++;
    }

    (void) closedir(dir);

    ctx->names = names;
}


static void
ngx_relay_sched_scan_done(ngx_event_t *ev)
{
    ngx_thread_task_t  *task = ev->data;

    ngx_relay_sched_t     *sc;
    ngx_relay_scan_ctx_t  *ctx;

    ctx = task->ctx;
    sc = ctx->sched;
    sc->scanning = 0;

    if (ctx->err) {
        ngx_log_error(NGX_LOG_CRIT, sc->spool.log, ctx->err,
                      "relay queue scan failed");
    }

    ngx_log_debug1(NGX_LOG_DEBUG_CORE, sc->spool.log, 0,
                   "relay queue scan: %ui message(s)", ctx->nnames);

    /* the previous pass's figures, for the node's status */

    sc->counters->messages = sc->tally.messages;
    sc->counters->pending = sc->tally.pending;
    sc->counters->deferred = sc->tally.deferred;
    ngx_memzero(&sc->tally, sizeof(sc->tally));

    sc->backlog = ctx->names;
    sc->nbacklog = ctx->nnames;
    sc->next = 0;

    ngx_free(task);

    ngx_relay_sched_dispatch(sc);
}


/* keep at most NGX_RELAY_SCHED_MAX_BUSY retries in the thread pool */

static void
ngx_relay_sched_dispatch(ngx_relay_sched_t *sc)
{
    u_char  *name;

    if (sc->backlog == NULL) {
        goto rearm;                      /* an empty scan, or between scans */
    }

    while (sc->next < sc->nbacklog && sc->busy < NGX_RELAY_SCHED_MAX_BUSY
           && !ngx_exiting && !ngx_terminate)
    {
        name = sc->backlog[sc->next++];

        if (ngx_relay_sched_post_local(sc, NULL, name) != NGX_OK) {
            free(name);
        }
    }

    if (sc->next < sc->nbacklog && !ngx_exiting && !ngx_terminate) {
        return;
    }

    while (sc->next < sc->nbacklog) {
        free(sc->backlog[sc->next++]);
    }

    free(sc->backlog);
    sc->backlog = NULL;

rearm:

    if (!ngx_exiting && !ngx_terminate && !sc->scanning && sc->rescan) {
        sc->rescan = 0;

        if (sc->scan_event.timer_set) {
            ngx_del_timer(&sc->scan_event);
        }

        ngx_add_timer(&sc->scan_event, 1);
        return;
    }

    if (!ngx_exiting && !ngx_terminate && !sc->scanning
        && !sc->scan_event.timer_set)
    {
        ngx_add_timer(&sc->scan_event, sc->scan_interval);
    }
}


static ngx_uint_t
ngx_relay_sched_slot(u_char *name, ngx_uint_t workers)
{
    uint32_t  h;

    if (workers <= 1) {
        return 0;
    }

    for (h = 2166136261u; *name; name++) {
        h = (h ^ *name) * 16777619u;
    }

    return h % workers;
}


/*
 * The remote phase of a message: its pending recipients outside the local
 * domains, one delivery per domain, all domains at once.  The message stays
 * locked by this worker until the outcome is on disk.
 */

static ngx_int_t
ngx_relay_sched_remote(ngx_relay_local_ctx_t *ctx)
{
    ngx_str_t                 domain, other;
    ngx_uint_t                i, j, n, first;
    ngx_relay_dest_t         *dst;
    ngx_relay_sched_t        *sc;
    ngx_relay_queued_t       *q;
    ngx_relay_queued_rcpt_t  *r;

    sc = ctx->sched;
    q = &ctx->queued;

    ctx->dests = ngx_calloc(q->nrcpts * sizeof(ngx_relay_dest_t),
                            sc->spool.log);
    if (ctx->dests == NULL) {
        return NGX_ERROR;
    }

    /* pending remote recipients, grouped by domain */

    n = 0;

    for (i = 0; i < q->nrcpts; i++) {
        r = &q->rcpts[i];

        if (r->state != NGX_RELAY_RCPT_PENDING
            || ngx_relay_sched_domain(&r->addr, &domain) == NULL
            || ngx_relay_sched_local_domain(sc->domains, &domain))
        {
            continue;
        }

        for (j = 0; j < n; j++) {
            if (ngx_relay_sched_domain(&ctx->dests[j].addr, &other)
                && other.len == domain.len
                && ngx_strncasecmp(other.data, domain.data, domain.len) == 0)
            {
                break;
            }
        }

        /* keep a domain's recipients together: insert after its last */

        while (j < n && ngx_relay_sched_domain(&ctx->dests[j].addr, &other)
               && other.len == domain.len
               && ngx_strncasecmp(other.data, domain.data, domain.len) == 0)
        {
            j++;
        }

        if (j < n) {
            ngx_memmove(&ctx->dests[j + 1], &ctx->dests[j],
                        (n - j) * sizeof(ngx_relay_dest_t));
        }

        ngx_memzero(&ctx->dests[j], sizeof(ngx_relay_dest_t));
        ctx->dests[j].index = i;
        ctx->dests[j].addr = r->addr;
        n++;
    }

    /* recipients an operator bounced fail now, after those to deliver */

    ctx->ndests = n;

    for (i = 0; i < q->nrcpts; i++) {
        r = &q->rcpts[i];

        if (r->state == NGX_RELAY_RCPT_BOUNCE) {
            dst = &ctx->dests[ctx->ndests++];

            ngx_memzero(dst, sizeof(ngx_relay_dest_t));
            dst->index = i;
            dst->addr = r->addr;
            dst->status = NGX_RELAY_DELIVERY_FAILED;
            ngx_cpystrn(dst->dsn, (u_char *) "5.0.0", 6);
            dst->reply_len = ngx_sprintf(dst->reply, "message bounced by "
                                         "the operator")
                             - dst->reply;
            dst->relay_len = ngx_sprintf(dst->relay, "none") - dst->relay;
        }
    }

    if (ctx->ndests == 0) {
        return NGX_ERROR;
    }

    /*
     * One delivery per run of equal domains.  A delivery may end before
     * its start returns (a refused connection on loopback): the extra
     * count keeps the message from being recorded before all have started.
     */

    ctx->deliveries = 1;

    for (first = 0; first < n; first = i) {
        (void) ngx_relay_sched_domain(&ctx->dests[first].addr, &domain);

        for (i = first + 1; i < n; i++) {
            if (ngx_relay_sched_domain(&ctx->dests[i].addr, &other) == NULL
                || other.len != domain.len
                || ngx_strncasecmp(other.data, domain.data, domain.len) != 0)
            {
                break;
            }
        }

        ctx->deliveries++;

        if (ngx_relay_delivery_start(sc->delivery, ctx->fd, q, &domain,
                                     &ctx->dests[first], i - first,
                                     ngx_relay_sched_delivered, ctx)
            != NGX_OK)
        {
            ctx->deliveries--;

            for (j = first; j < i; j++) {
                dst = &ctx->dests[j];
                dst->status = NGX_RELAY_DELIVERY_DEFERRED;
                ngx_cpystrn(dst->dsn, (u_char *) "4.3.0", 6);
                dst->reply_len = ngx_sprintf(dst->reply, "out of memory")
                                 - dst->reply;
            }
        }
    }

    if (--ctx->deliveries == 0) {
        return ngx_relay_sched_record(ctx);
    }

    return NGX_OK;
}


static ngx_str_t *
ngx_relay_sched_domain(ngx_str_t *addr, ngx_str_t *domain)
{
    u_char  *p, *at;

    at = NULL;

    for (p = addr->data; p < addr->data + addr->len; p++) {
        if (*p == '@') {
            at = p;
        }
    }

    if (at == NULL || at + 1 == addr->data + addr->len) {
        return NULL;
    }

    domain->data = at + 1;
    domain->len = addr->data + addr->len - domain->data;

    return domain;
}


static void
ngx_relay_sched_delivered(ngx_relay_delivery_t *d)
{
    ngx_relay_local_ctx_t  *ctx;

    ctx = ngx_relay_delivery_data(d);
    ngx_relay_delivery_free(d);

    if (--ctx->deliveries) {
        return;
    }

    if (ngx_relay_sched_record(ctx) != NGX_OK) {
        ngx_relay_sched_end(ctx);
    }
}


/*
 * After the attempt: recipients past the queue lifetime fail; the outcome
 * goes to the queue file in a thread (done and failed marks, the next
 * attempt), or the file goes when nothing is left.
 */

static ngx_int_t
ngx_relay_sched_record(ngx_relay_local_ctx_t *ctx)
{
    u_char               last[NGX_RELAY_REPLY_TEXT + 8];
    size_t               len;
    time_t               now, backoff;
    ngx_str_t            domain;
    ngx_uint_t           i, deferred, tried;
    ngx_relay_retry_t    retry;
    ngx_thread_task_t   *task;
    ngx_relay_dest_t    *dst;
    ngx_relay_sched_t   *sc;
    ngx_relay_policy_t  *p;

    sc = ctx->sched;
    p = sc->delivery->policy;
    now = ngx_time();
    deferred = 0;

    ctx->next = 0;

    /*
     * Recipients held back by shaping were not tried: when nothing else
     * was, the attempt does not count, and they never expire for it.
     */

    tried = 0;

    for (i = 0; i < ctx->ndests; i++) {
        tried += !ctx->dests[i].throttled;
    }

    ctx->attempts = ctx->queued.attempts + (tried ? 1 : 0);

    /* each recipient by its domain's retry policy; the soonest retry wins */

    for (i = 0; i < ctx->ndests; i++) {
        dst = &ctx->dests[i];

        if (dst->status != NGX_RELAY_DELIVERY_DEFERRED) {
            continue;
        }

        if (dst->throttled) {
            if (ctx->next == 0 || dst->retry_at < ctx->next) {
                ctx->next = dst->retry_at;
            }

            deferred++;
            continue;
        }

        if (ngx_relay_sched_domain(&dst->addr, &domain) == NULL) {
            ngx_str_set(&domain, "");
        }

        ngx_relay_policy_retry(p, &domain, &retry);

        backoff = ngx_relay_policy_backoff(&retry, ctx->attempts);

        if (ctx->next == 0 || now + backoff < ctx->next) {
            ctx->next = now + backoff;
        }

        if (now - ctx->queued.arrival >= retry.lifetime) {
            dst->status = NGX_RELAY_DELIVERY_FAILED;

            ngx_memcpy(last, dst->reply, dst->reply_len);
            len = dst->reply_len;

            dst->reply_len = ngx_snprintf(dst->reply, sizeof(dst->reply),
                                          "delivery time expired; last "
                                          "error: %*s", len, last)
                             - dst->reply;
            ngx_cpystrn(dst->dsn, (u_char *) "5.4.7", 6);
        }

        /*
         * RFC 3461 4.1: one "delayed" DSN per message, after
         * relay_delay_warning, to recipients with NOTIFY=DELAY or without
         * NOTIFY (as Postfix's delay_warning_time does); never for <>.
         */

        dst->until = ctx->queued.arrival + retry.lifetime;

        if (dst->status == NGX_RELAY_DELIVERY_DEFERRED
            && retry.delay_warning
            && now - ctx->queued.arrival >= retry.delay_warning
            && !ctx->queued.delay_warned && ctx->queued.warned_offset
            && ctx->queued.sender.len
            && (ctx->queued.rcpts[dst->index].notify == 0
                || (ctx->queued.rcpts[dst->index].notify
                    & NGX_RELAY_NOTIFY_DELAY)))
        {
            dst->delayed = 1;
        }

        deferred += (dst->status == NGX_RELAY_DELIVERY_DEFERRED);
    }

    ctx->delays = 0;

    for (i = 0; i < ctx->ndests; i++) {
        ctx->delays += ctx->dests[i].delayed;
    }

    if (ctx->next == 0) {
        ctx->next = now;
    }

    /* RFC 3461 4.1: no NOTIFY means FAILURE; never for a null sender */

    ctx->bounces = 0;

    for (i = 0; ctx->queued.sender.len && i < ctx->ndests; i++) {
        dst = &ctx->dests[i];

        if (dst->status == NGX_RELAY_DELIVERY_FAILED
            && ngx_relay_sched_notify_failure(
                   ctx->queued.rcpts[dst->index].notify))
        {
            ctx->bounces++;
        }
    }

    ngx_relay_sched_log_remote(ctx);

    task = ctx->task;
    task->ctx = ctx;
    task->handler = ngx_relay_sched_record_thread;
    task->event.handler = ngx_relay_sched_record_done;
    task->event.data = ctx;

    return ngx_thread_task_post(sc->spool.thread_pool, task);
}


/* thread side: what operators see in the queue listing as the last error */

static ngx_int_t
ngx_relay_sched_last_error(ngx_relay_local_ctx_t *ctx)
{
    u_char             text[NGX_RELAY_SPOOL_ERROR_LEN], *p, *last;
    ngx_uint_t         i;
    ngx_relay_dest_t  *dst;

    for (i = 0; i < ctx->ndests; i++) {
        dst = &ctx->dests[i];

        if (dst->status != NGX_RELAY_DELIVERY_DEFERRED) {
            continue;
        }

        last = text + sizeof(text);
        p = ngx_slprintf(text, last, "<%V> %*s: %s %*s", &dst->addr,
                         dst->relay_len, dst->relay, dst->dsn,
                         dst->reply_len, dst->reply);

        return ngx_relay_spool_set_error(ctx->fd, &ctx->queued, text,
                                         p - text, &ctx->err);
    }

    return NGX_OK;
}


static void
ngx_relay_sched_record_thread(void *data, ngx_log_t *log)
{
    ngx_relay_local_ctx_t  *ctx = data;

    u_char                    state;
    ngx_uint_t                i, pending, marked;
    ngx_relay_dest_t         *dst;
    ngx_relay_queued_t       *q;
    ngx_relay_queued_rcpt_t  *r;

    q = &ctx->queued;
    ctx->failed = NULL;
    ctx->err = 0;

    if (ctx->bounces || ctx->delays) {
        ngx_relay_sched_read_original(ctx);
    }

    marked = 0;

    for (i = 0; i < ctx->ndests; i++) {
        dst = &ctx->dests[i];

        if (dst->status == NGX_RELAY_DELIVERY_SENT) {
            state = NGX_RELAY_RCPT_DONE;

        } else if (dst->status == NGX_RELAY_DELIVERY_FAILED) {
            state = NGX_RELAY_RCPT_FAILED;

        } else {
            continue;
        }

        if (ngx_relay_spool_mark(ctx->fd, &q->rcpts[dst->index], state,
                                 &ctx->err)
            != NGX_OK)
        {
            ctx->failed = "pwrite";
            return;
        }

        marked++;
    }

    pending = 0;

    for (i = 0; i < q->nrcpts; i++) {
        r = &q->rcpts[i];
        pending += (r->state == NGX_RELAY_RCPT_PENDING);
    }

    if (pending == 0) {
        ngx_relay_sched_remove(ctx);
        return;
    }

    if (ngx_relay_spool_schedule(ctx->fd, q, ctx->next, ctx->attempts,
                                 &ctx->err)
        != NGX_OK
        || ngx_relay_sched_last_error(ctx) != NGX_OK)
    {
        ctx->failed = "pwrite";
        return;
    }

    /* synced with the rest: the delay DSN goes once, restarts or not */

    if (ctx->delays
        && ngx_relay_spool_mark_delay_warned(ctx->fd, q, &ctx->err)
           != NGX_OK)
    {
        ctx->failed = "pwrite";
        return;
    }

    /*
     * Only a deferral: the next attempt time, the count and the last error
     * need no sync.  Lost in a crash, they make the retry come sooner.
     */

    if (marked == 0 && ctx->delays == 0) {
        return;
    }

    if (fdatasync(ctx->fd) == -1) {
        ctx->err = errno;
        ctx->failed = "fdatasync";
    }
}


static void
ngx_relay_sched_record_done(ngx_event_t *ev)
{
    ngx_relay_local_ctx_t  *ctx = ev->data;

    ngx_relay_sched_t  *sc;

    sc = ctx->sched;

    if (ctx->failed) {
        ngx_log_error(NGX_LOG_CRIT, sc->spool.log, ctx->err,
                      "%V: %s() of queue file failed", &ctx->queued.id,
                      ctx->failed);

    } else if (ctx->removed) {
        ngx_log_error(NGX_LOG_INFO, sc->spool.log, 0, "%V: removed",
                      &ctx->queued.id);
    }

    if (ctx->bounces && !ctx->failed) {
        ngx_relay_sched_bounce(ctx, 0);
    }

    if (ctx->delays && !ctx->failed && !ctx->removed) {
        ngx_relay_sched_bounce(ctx, 1);
    }

    free(ctx->original);
    ctx->original = NULL;

    ngx_relay_sched_end(ctx);
}


/* one line per recipient and attempt, queue id first */

static void
ngx_relay_sched_log_remote(ngx_relay_local_ctx_t *ctx)
{
    time_t              delay;
    ngx_uint_t          i, level;
    ngx_relay_dest_t   *dst;
    ngx_relay_counters_t  *cn;
    static const char  *status[] = { "pending", "", "sent", "", "deferred",
                                     "bounced" };

    delay = ngx_time() - ctx->queued.arrival;
    cn = ctx->sched->counters;

    for (i = 0; i < ctx->ndests; i++) {
        dst = &ctx->dests[i];

        switch (dst->status) {
        case NGX_RELAY_DELIVERY_SENT:
            (void) ngx_atomic_fetch_add(&cn->delivered, 1);
            break;
        case NGX_RELAY_DELIVERY_DEFERRED:
            (void) ngx_atomic_fetch_add(&cn->deferrals, 1);
            break;
        default:
            (void) ngx_atomic_fetch_add(&cn->bounced, 1);
        }

        level = (dst->status == NGX_RELAY_DELIVERY_SENT) ? NGX_LOG_INFO
                                                          : NGX_LOG_NOTICE;

        ngx_log_error(level, ctx->sched->spool.log, 0,
                      "%V: to=<%V>, relay=%*s, delay=%T, dsn=%s, "
                      "status=%s (%*s)%s", &ctx->queued.id, &dst->addr,
                      dst->relay_len, dst->relay, delay, dst->dsn,
                      status[dst->status], dst->reply_len, dst->reply,
                      dst->reused ? ", conn=reused" : "");
    }
}


static ngx_uint_t
ngx_relay_sched_notify_failure(ngx_uint_t notify)
{
    return notify == 0 || (notify & NGX_RELAY_NOTIFY_FAILURE);
}


/*
 * Thread side: what the DSN returns of the message: all of it for
 * RET=FULL, else its header (RFC 3461 4.3), at most 10 MB.
 */

#define NGX_RELAY_DSN_MAX_ORIGINAL  (10 * 1024 * 1024)

static void
ngx_relay_sched_read_original(ngx_relay_local_ctx_t *ctx)
{
    off_t                limit;
    u_char              *buf, *end;
    size_t               len;
    ssize_t              n;
    ngx_relay_queued_t  *q;

    q = &ctx->queued;

    limit = (q->ret == NGX_RELAY_RET_FULL) ? NGX_RELAY_DSN_MAX_ORIGINAL
                                           : 65536;
    len = (size_t) ngx_min(q->message_size, limit);

    buf = malloc(len + 1);
    if (buf == NULL) {
        return;
    }

    n = pread(ctx->fd, buf, len, q->message_offset);
    if (n < 0) {
        free(buf);
        return;
    }

    buf[n] = '\0';
    len = n;

    if (q->ret != NGX_RELAY_RET_FULL) {
        end = (u_char *) strstr((char *) buf, "\r\n\r\n");
        if (end) {
            len = end + 2 - buf;
        }
    }

    ctx->original = buf;
    ctx->original_len = len;
}


static ngx_uint_t
ngx_relay_sched_reported(ngx_relay_local_ctx_t *ctx, ngx_relay_dest_t *dst,
    ngx_uint_t delayed)
{
    if (delayed) {
        return dst->delayed;
    }

    return dst->status == NGX_RELAY_DELIVERY_FAILED
           && ngx_relay_sched_notify_failure(
                  ctx->queued.rcpts[dst->index].notify);
}


/*
 * The failed recipients that asked for it get one RFC 3464 report, to the
 * envelope sender, from the null sender, through the queue like any mail;
 * "delayed": the still deferred ones that get the delay warning.
 */

static void
ngx_relay_sched_bounce(ngx_relay_local_ctx_t *ctx, ngx_uint_t delayed)
{
    u_char                    *p, *s, *e;
    size_t                     len;
    ngx_str_t                  domain, host;
    ngx_uint_t                 i;
    ngx_relay_rcpt_t          *rcpt;
    ngx_relay_dest_t          *dst;
    ngx_relay_sched_t         *sc;
    ngx_relay_queued_t        *q;
    ngx_relay_envelope_t       env;
    ngx_relay_spool_writer_t  *w;
    ngx_relay_queued_rcpt_t   *r;

    sc = ctx->sched;
    q = &ctx->queued;

    w = ngx_relay_spool_create(&sc->spool, sc->spool.log);
    if (w == NULL) {
        goto failed;
    }

    ngx_memzero(&env, sizeof(ngx_relay_envelope_t));

    if (ngx_array_init(&env.rcpts, w->pool, 1, sizeof(ngx_relay_rcpt_t))
        != NGX_OK)
    {
        goto failed;
    }

    rcpt = ngx_array_push(&env.rcpts);
    if (rcpt == NULL) {
        goto failed;
    }

    ngx_memzero(rcpt, sizeof(ngx_relay_rcpt_t));
    rcpt->addr = q->sender;
    rcpt->notify = NGX_RELAY_NOTIFY_NEVER;
    rcpt->local = (ngx_relay_sched_domain(&q->sender, &domain)
                   && ngx_relay_sched_local_domain(sc->domains, &domain));

    ngx_str_set(&env.client, "127.0.0.1");
    env.helo = sc->hostname;
    env.arrival = ngx_time();

    if (ngx_relay_spool_write_envelope(w, &env) != NGX_OK) {
        goto failed;
    }

    len = 4096 + ctx->original_len + q->envid.len
          + ctx->ndests * (3 * NGX_RELAY_MAX_ADDR + 2 * NGX_RELAY_REPLY_TEXT
                           + 512);

    if (ngx_relay_spool_reserve(w, len) != NGX_OK) {
        goto failed_writer;
    }

    p = w->pos;

    p = ngx_sprintf(p, "From: Mail Delivery System <MAILER-DAEMON@%V>\r\n"
                    "To: <%V>\r\n"
                    "Subject: %s\r\n"
                    "Auto-Submitted: auto-replied\r\n"
                    "Message-ID: <%V.%s@%V>\r\nDate: ",
                    &sc->hostname, &q->sender,
                    delayed ? "Delayed Mail (still being retried)"
                            : "Undelivered Mail Returned to Sender",
                    &q->id, delayed ? "delay" : "dsn", &sc->hostname);
    p = ngx_relay_date(p, ngx_time());
    p = ngx_sprintf(p, "\r\nMIME-Version: 1.0\r\n"
                    "Content-Type: multipart/report; "
                    "report-type=delivery-status;\r\n"
                    "\tboundary=\"%V/%V\"\r\n\r\n"
                    "This is a MIME-encapsulated message.\r\n\r\n"
                    "--%V/%V\r\n"
                    "Content-Type: text/plain; charset=%s\r\n\r\n"
                    "This is the mail system at host %V.\r\n\r\n"
                    "%s\r\n\r\n",
                    &q->id, &sc->hostname, &q->id, &sc->hostname,
                    q->smtputf8 ? "utf-8" : "us-ascii", &sc->hostname,
                    delayed ? "Your message could not be delivered yet to "
                              "one or more recipients; delivery will be "
                              "tried again.  This is a warning only: you "
                              "need not send the message again."
                            : "Your message could not be delivered to one "
                              "or more recipients.");

    for (i = 0; i < ctx->ndests; i++) {
        dst = &ctx->dests[i];

        if (ngx_relay_sched_reported(ctx, dst, delayed)) {
            p = ngx_sprintf(p, "<%V>: %*s\r\n", &dst->addr, dst->reply_len,
                            dst->reply);
        }
    }

    p = ngx_sprintf(p, "\r\n--%V/%V\r\n"
                    "Content-Type: message/%sdelivery-status\r\n\r\n"
                    "Reporting-MTA: dns; %V\r\n"
                    "X-Queue-ID: %V\r\n",
                    &q->id, &sc->hostname, q->smtputf8 ? "global-" : "",
                    &sc->hostname, &q->id);

    if (q->envid.len) {
        p = ngx_sprintf(p, "Original-Envelope-Id: %V\r\n", &q->envid);
    }

    p = ngx_cpymem(p, "Arrival-Date: ", 14);
    p = ngx_relay_date(p, q->arrival);
    p = ngx_cpymem(p, "\r\n", 2);

    for (i = 0; i < ctx->ndests; i++) {
        dst = &ctx->dests[i];
        r = &q->rcpts[dst->index];

        if (!ngx_relay_sched_reported(ctx, dst, delayed)) {
            continue;
        }

        /* RFC 6533: non-ASCII addresses are of type utf-8 */

        p = ngx_sprintf(p, "\r\nFinal-Recipient: %s; %V\r\n",
                        ngx_relay_sched_ascii(&dst->addr) ? "rfc822"
                                                          : "utf-8",
                        &dst->addr);

        if (r->orcpt.len) {

            /* "rfc822;xtext" as received: "addr-type; xtext" */

            s = ngx_strlchr(r->orcpt.data, r->orcpt.data + r->orcpt.len, ';');

            if (s) {
                p = ngx_sprintf(p, "Original-Recipient: %*s; %*s\r\n",
                                s - r->orcpt.data, r->orcpt.data,
                                r->orcpt.data + r->orcpt.len - s - 1, s + 1);
            }
        }

        p = ngx_sprintf(p, "Action: %s\r\nStatus: %s\r\n",
                        delayed ? "delayed" : "failed", dst->dsn);

        if (delayed) {
            p = ngx_cpymem(p, "Will-Retry-Until: ", 18);
            p = ngx_relay_date(p, dst->until);
            p = ngx_cpymem(p, "\r\n", 2);
        }

        /* Remote-MTA: the host name of "host[ip]:port" */

        host.data = dst->relay;
        e = ngx_strlchr(dst->relay, dst->relay + dst->relay_len, '[');
        host.len = (e ? e : dst->relay + dst->relay_len) - dst->relay;

        if (host.len && !(host.len == 4
                          && ngx_strncmp(host.data, "none", 4) == 0))
        {
            p = ngx_sprintf(p, "Remote-MTA: dns; %V\r\n", &host);
        }

        p = ngx_sprintf(p, "Diagnostic-Code: smtp; %*s\r\n",
                        dst->reply_len, dst->reply);
    }

    p = ngx_sprintf(p, "\r\n--%V/%V\r\n", &q->id, &sc->hostname);

    if (q->ret == NGX_RELAY_RET_FULL) {
        p = ngx_sprintf(p, "Content-Type: message/%s\r\n\r\n",
                        q->smtputf8 ? "global" : "rfc822");

    } else {
        p = ngx_sprintf(p, "Content-Type: %s\r\n\r\n",
                        q->smtputf8 ? "message/global-headers"
                                    : "text/rfc822-headers");
    }

    if (ctx->original) {
        p = ngx_cpymem(p, ctx->original, ctx->original_len);
    }

    if (p[-1] != LF) {
        *p++ = CR;
        *p++ = LF;
    }

    p = ngx_sprintf(p, "\r\n--%V/%V--\r\n", &q->id, &sc->hostname);

    w->pos = p;

    if (ngx_relay_spool_commit(w, NULL, NULL) != NGX_OK) {
        goto failed_writer;
    }

    ngx_log_error(NGX_LOG_INFO, sc->spool.log, 0,
                  "%V: sender %s notification: %V", &q->id,
                  delayed ? "delay" : "non-delivery", &w->id);

    return;

failed_writer:

    ngx_relay_spool_abort(w);

failed:

    ngx_log_error(NGX_LOG_ALERT, sc->spool.log, 0,
                  "%V: could not queue the delivery status notification",
                  &q->id);
}


static ngx_uint_t
ngx_relay_sched_ascii(ngx_str_t *s)
{
    size_t  i;

    for (i = 0; i < s->len; i++) {
        if (s->data[i] >= 0x80) {
            return 0;
        }
    }

    return 1;
}
