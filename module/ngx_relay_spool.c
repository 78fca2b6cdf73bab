
/*
 * Copyright (C) The relay authors
 */


/*
 * The spool: the only code that creates, reads, rewrites and removes queue
 * files.
 *
 * Layout: <spool>/incoming/<id> while a message arrives, <spool>/queue/<id>
 * once it is durable.  A queue file is a text envelope ("RELAY-QUEUE 1",
 * "key value" lines, one "rcpt <state> <notify> <orcpt> <address>" line per
 * recipient, an empty line) followed by the message octets.  Recipient
 * states are one byte rewritten in place, so marking a recipient done is a
 * pwrite() and an fdatasync(), never a rewrite of the file.
 *
 * Durability: a message becomes visible in queue/ only after its data were
 * fdatasync()ed and it was renamed there; "250" waits for an fsync() of the
 * queue directory after the rename.  Directory syncs are grouped: every
 * writer renamed while one sync runs waits for the next, so N concurrent
 * sessions cost N data syncs in parallel threads but about one directory
 * sync.  All syncs run in the thread pool, never on the event loop.
 *
 * Ownership: the worker holding flock() on a queue file owns it.  The lock
 * is taken when the file is created and dies with its holder, so kill -9
 * frees it; a file left in incoming/ with no lock holder is debris of a
 * crash and is removed at start.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <sys/file.h>
#include <ngx_relay.h>
#include <ngx_relay_parse.h>
#include <ngx_relay_spool.h>


typedef struct {
    ngx_relay_spool_writer_t     *writer;
    ngx_err_t                     err;
} ngx_relay_spool_sync_ctx_t;

typedef struct {
    ngx_relay_spool_t            *spool;
    ngx_queue_t                   writers;
    ngx_err_t                     err;
} ngx_relay_spool_dirsync_ctx_t;


static void ngx_relay_spool_sync_thread(void *data, ngx_log_t *log);
static void ngx_relay_spool_sync_done(ngx_event_t *ev);
static void ngx_relay_spool_dirsync_start(ngx_relay_spool_t *sp);
static void ngx_relay_spool_dirsync_thread(void *data, ngx_log_t *log);
static void ngx_relay_spool_dirsync_done(ngx_event_t *ev);
static void ngx_relay_spool_finish(ngx_relay_spool_writer_t *w,
    ngx_int_t rc);
static u_char *ngx_relay_spool_path(ngx_relay_spool_t *sp, u_char *buf,
    const char *dir, ngx_str_t *name);
static ngx_int_t ngx_relay_spool_parse_header(ngx_relay_queued_t *q,
    u_char *p, u_char *last);
static ngx_uint_t ngx_relay_spool_parse_notify(u_char *p, u_char *last);


static ngx_str_t  ngx_relay_body_names[] = {
    ngx_string("-"),
    ngx_string("7BIT"),
    ngx_string("8BITMIME"),
    ngx_string("BINARYMIME")
};

static ngx_str_t  ngx_relay_ret_names[] = {
    ngx_string("-"),
    ngx_string("FULL"),
    ngx_string("HDRS")
};


ngx_int_t
ngx_relay_spool_prepare_dirs(ngx_str_t *path, ngx_cycle_t *cycle)
{
    u_char           *p, buf[NGX_MAX_PATH];
    ngx_log_t        *log;
    ngx_uint_t        i;
    ngx_core_conf_t  *ccf;

    static const char  *dirs[] = { "", "incoming", "queue" };

    log = cycle->log;
    ccf = (ngx_core_conf_t *) ngx_get_conf(cycle->conf_ctx, ngx_core_module);

    if (path->len + sizeof("incoming/") >= NGX_MAX_PATH) {
        ngx_log_error(NGX_LOG_EMERG, log, 0, "relay spool path too long");
        return NGX_ERROR;
    }

    for (i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
        p = ngx_cpymem(buf, path->data, path->len);
        p = ngx_cpystrn(p, (u_char *) dirs[i], 16);
        *p = '\0';

        if (ngx_create_dir(buf, 0700) == NGX_FILE_ERROR
            && ngx_errno != NGX_EEXIST)
        {
            ngx_log_error(NGX_LOG_EMERG, log, ngx_errno,
                          ngx_create_dir_n " \"%s\" failed", buf);
            return NGX_ERROR;
        }

        /* workers run unprivileged: they must own the spool */

        if (geteuid() == 0
            && chown((char *) buf, ccf->user, ccf->group) == -1)
        {
            ngx_log_error(NGX_LOG_EMERG, log, ngx_errno,
                          "chown(\"%s\") failed", buf);
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


ngx_int_t
ngx_relay_spool_init(ngx_relay_spool_t *sp, ngx_cycle_t *cycle)
{
    u_char  buf[NGX_MAX_PATH];

    sp->log = cycle->log;
    ngx_queue_init(&sp->dirsync_waiting);

    ngx_relay_spool_path(sp, buf, "queue", NULL);

    sp->queue_fd = open((char *) buf, O_RDONLY|O_DIRECTORY|O_CLOEXEC);
    if (sp->queue_fd == -1) {
        ngx_log_error(NGX_LOG_EMERG, cycle->log, ngx_errno,
                      "open(\"%s\") failed", buf);
        return NGX_ERROR;
    }

    return NGX_OK;
}


/*
 * Queue ids: seconds, microseconds, pid and a per-process sequence, so they
 * are unique on the node without coordination and sort by arrival.
 */

ngx_relay_spool_writer_t *
ngx_relay_spool_create(ngx_relay_spool_t *sp, ngx_log_t *log)
{
    u_char                    *p, path[NGX_MAX_PATH];
    ngx_pool_t                *pool;
    ngx_time_t                *tp;
    ngx_relay_spool_writer_t  *w;

    pool = ngx_create_pool(512, log);
    if (pool == NULL) {
        return NULL;
    }

    w = ngx_pcalloc(pool, sizeof(ngx_relay_spool_writer_t));
    if (w == NULL) {
        ngx_destroy_pool(pool);
        return NULL;
    }

    w->spool = sp;
    w->pool = pool;
    w->log = log;

    tp = ngx_timeofday();

    p = ngx_sprintf(w->id_data, "%08xD%03xiP%xiS%xi",
                    (uint32_t) tp->sec, (ngx_uint_t) tp->msec,
                    (ngx_uint_t) ngx_pid, sp->sequence++ & 0xffffff);
    w->id.data = w->id_data;
    w->id.len = p - w->id_data;

    ngx_relay_spool_path(sp, path, "incoming", &w->id);

    w->fd = open((char *) path, O_RDWR|O_CREAT|O_EXCL|O_CLOEXEC, 0600);
    if (w->fd == -1) {
        w->err = ngx_errno;
        ngx_log_error(NGX_LOG_CRIT, log, w->err,
                      "open(\"%s\") failed", path);
        return w;
    }

    if (flock(w->fd, LOCK_EX|LOCK_NB) == -1) {
        w->err = ngx_errno;
        ngx_log_error(NGX_LOG_ALERT, log, w->err,
                      "flock(\"%s\") failed", path);
        return w;
    }

    return w;
}


ngx_int_t
ngx_relay_spool_write_envelope(ngx_relay_spool_writer_t *w,
    ngx_relay_envelope_t *env)
{
    size_t             len;
    u_char            *buf, *p;
    ngx_uint_t         i;
    ngx_relay_rcpt_t  *r;

    len = sizeof(NGX_RELAY_QUEUE_MAGIC) + 256 + w->id.len + env->client.len
          + env->helo.len + env->auth_user.len + env->envid.len
          + env->sender.len;

    r = env->rcpts.elts;
    for (i = 0; i < env->rcpts.nelts; i++) {
        len += sizeof("rcpt P SUCCESS,FAILURE,DELAY  \n") + r[i].orcpt.len
               + r[i].addr.len + 1;
    }

    buf = ngx_alloc(len, w->log);
    if (buf == NULL) {
        return NGX_ERROR;
    }

    p = ngx_cpymem(buf, NGX_RELAY_QUEUE_MAGIC,
                   sizeof(NGX_RELAY_QUEUE_MAGIC) - 1);
    p = ngx_sprintf(p, "id %V\narrival %T\nclient %V\nhelo %V\n",
                    &w->id, env->arrival, &env->client, &env->helo);
    p = ngx_sprintf(p, "auth %V\nbody %V\nsmtputf8 %d\nret %V\nenvid %V\n",
                    env->auth_user.len ? &env->auth_user
                                       : &ngx_relay_body_names[0],
                    &ngx_relay_body_names[env->body], env->smtputf8 ? 1 : 0,
                    &ngx_relay_ret_names[env->ret],
                    env->envid.len ? &env->envid : &ngx_relay_body_names[0]);
    p = ngx_sprintf(p, "sender %V\nnext 0000000000 0000\n", &env->sender);

    for (i = 0; i < env->rcpts.nelts; i++) {
        p = ngx_cpymem(p, "rcpt P ", 7);

        if (r[i].notify == 0) {
            *p++ = '-';

        } else if (r[i].notify & NGX_RELAY_NOTIFY_NEVER) {
            p = ngx_cpymem(p, "NEVER", 5);

        } else {
            if (r[i].notify & NGX_RELAY_NOTIFY_SUCCESS) {
                p = ngx_cpymem(p, "SUCCESS,", 8);
            }

            if (r[i].notify & NGX_RELAY_NOTIFY_FAILURE) {
                p = ngx_cpymem(p, "FAILURE,", 8);
            }

            if (r[i].notify & NGX_RELAY_NOTIFY_DELAY) {
                p = ngx_cpymem(p, "DELAY,", 6);
            }

            p--;                              /* the last comma */
        }

        *p++ = ' ';

        if (r[i].orcpt.len) {
            p = ngx_cpymem(p, r[i].orcpt.data, r[i].orcpt.len);

        } else {
            *p++ = '-';
        }

        *p++ = ' ';
        p = ngx_cpymem(p, r[i].addr.data, r[i].addr.len);
        *p++ = '\n';

        if (r[i].local) {
            w->local++;
        }
    }

    *p++ = '\n';

    len = p - buf;

    if (ngx_relay_spool_write(w, buf, len) != NGX_OK) {
        ngx_free(buf);
        return NGX_ERROR;
    }

    ngx_free(buf);

    w->size = 0;                     /* count message octets only */

    return NGX_OK;
}


/*
 * Writes go to the page cache from the event loop, as nginx's own temporary
 * files do; only the syncs that wait for the disk go to the thread pool.
 */

ngx_int_t
ngx_relay_spool_write(ngx_relay_spool_writer_t *w, u_char *data, size_t len)
{
    ssize_t  n;

    if (w->err) {
        return NGX_ERROR;
    }

    while (len) {
        n = write(w->fd, data, len);

        if (n == -1) {
            w->err = ngx_errno;

            if (w->err == NGX_EINTR) {
                w->err = 0;
                continue;
            }

            ngx_log_error(NGX_LOG_CRIT, w->log, w->err,
                          "write() to queue file %V failed", &w->id);
            return NGX_ERROR;
        }

        data += n;
        len -= n;
        w->size += n;
    }

    return NGX_OK;
}


ngx_int_t
ngx_relay_spool_commit(ngx_relay_spool_writer_t *w,
    ngx_relay_spool_done_pt handler, void *data)
{
    ngx_thread_task_t           *task;
    ngx_relay_spool_sync_ctx_t  *ctx;

    if (w->err) {
        return NGX_ERROR;
    }

    task = ngx_thread_task_alloc(w->pool,
                                 sizeof(ngx_relay_spool_sync_ctx_t));
    if (task == NULL) {
        return NGX_ERROR;
    }

    ctx = task->ctx;
    ctx->writer = w;

    task->handler = ngx_relay_spool_sync_thread;
    task->event.handler = ngx_relay_spool_sync_done;
    task->event.data = ctx;

    w->handler = handler;
    w->data = data;

    if (ngx_thread_task_post(w->spool->thread_pool, task) != NGX_OK) {
        return NGX_ERROR;
    }

    return NGX_OK;
}


static void
ngx_relay_spool_sync_thread(void *data, ngx_log_t *log)
{
    ngx_relay_spool_sync_ctx_t  *ctx = data;

    u_char                     from[NGX_MAX_PATH], to[NGX_MAX_PATH];
    ngx_relay_spool_writer_t  *w;

    w = ctx->writer;

    if (fdatasync(w->fd) == -1) {
        ctx->err = ngx_errno;
        return;
    }

    ngx_relay_spool_path(w->spool, from, "incoming", &w->id);
    ngx_relay_spool_path(w->spool, to, "queue", &w->id);

    if (rename((char *) from, (char *) to) == -1) {
        ctx->err = ngx_errno;
    }
}


static void
ngx_relay_spool_sync_done(ngx_event_t *ev)
{
    ngx_relay_spool_sync_ctx_t  *ctx = ev->data;

    ngx_relay_spool_t         *sp;
    ngx_relay_spool_writer_t  *w;

    w = ctx->writer;
    sp = w->spool;

    if (ctx->err) {
        w->err = ctx->err;
        ngx_log_error(NGX_LOG_CRIT, w->log, w->err,
                      "sync of queue file %V failed", &w->id);
        ngx_relay_spool_finish(w, NGX_ERROR);
        return;
    }

    ngx_queue_insert_tail(&sp->dirsync_waiting, &w->queue);

    if (!sp->dirsync_busy) {
        ngx_relay_spool_dirsync_start(sp);
    }
}


/*
 * Group commit of renames: one fsync() of queue/ covers every writer that
 * was waiting when it started; writers arriving meanwhile wait for the next.
 */

static void
ngx_relay_spool_dirsync_start(ngx_relay_spool_t *sp)
{
    ngx_thread_task_t              *task;
    ngx_relay_spool_dirsync_ctx_t  *ctx;

    if (ngx_queue_empty(&sp->dirsync_waiting)) {
        return;
    }

    task = ngx_calloc(sizeof(ngx_thread_task_t)
                      + sizeof(ngx_relay_spool_dirsync_ctx_t), sp->log);
    if (task == NULL) {
        goto failed;
    }

    ctx = (ngx_relay_spool_dirsync_ctx_t *) (task + 1);
    task->ctx = ctx;
    ctx->spool = sp;

    ngx_queue_init(&ctx->writers);
    ngx_queue_add(&ctx->writers, &sp->dirsync_waiting);
    ngx_queue_init(&sp->dirsync_waiting);

    task->handler = ngx_relay_spool_dirsync_thread;
    task->event.handler = ngx_relay_spool_dirsync_done;
    task->event.data = task;

    if (ngx_thread_task_post(sp->thread_pool, task) != NGX_OK) {
        ngx_queue_add(&sp->dirsync_waiting, &ctx->writers);
        ngx_free(task);
        goto failed;
    }

    sp->dirsync_busy = 1;

    return;

failed:

    while (!ngx_queue_empty(&sp->dirsync_waiting)) {
        ngx_queue_t  *q = ngx_queue_head(&sp->dirsync_waiting);

        ngx_queue_remove(q);
        ngx_relay_spool_finish(ngx_queue_data(q, ngx_relay_spool_writer_t,
                                              queue), NGX_ERROR);
    }
}


static void
ngx_relay_spool_dirsync_thread(void *data, ngx_log_t *log)
{
    ngx_relay_spool_dirsync_ctx_t  *ctx = data;

    if (fsync(ctx->spool->queue_fd) == -1) {
        ctx->err = ngx_errno;
    }
}


static void
ngx_relay_spool_dirsync_done(ngx_event_t *ev)
{
    ngx_thread_task_t  *task = ev->data;

    ngx_int_t                       rc;
    ngx_queue_t                    *q;
    ngx_relay_spool_t              *sp;
    ngx_relay_spool_dirsync_ctx_t  *ctx;

    ctx = task->ctx;
    sp = ctx->spool;
    sp->dirsync_busy = 0;

    rc = NGX_OK;

    if (ctx->err) {
        ngx_log_error(NGX_LOG_CRIT, sp->log, ctx->err,
                      "fsync() of spool queue directory failed");
        rc = NGX_ERROR;
    }

    while (!ngx_queue_empty(&ctx->writers)) {
        q = ngx_queue_head(&ctx->writers);
        ngx_queue_remove(q);

        ngx_relay_spool_finish(ngx_queue_data(q, ngx_relay_spool_writer_t,
                                              queue), rc);
    }

    ngx_free(task);

    ngx_relay_spool_dirsync_start(sp);
}


/*
 * The writer's end: tell the session (if it is still there), then hand a
 * durable message to the scheduler, which owns it from now on.  A message
 * whose sync failed is removed: the client got a 4xx and will send it again.
 */

static void
ngx_relay_spool_finish(ngx_relay_spool_writer_t *w, ngx_int_t rc)
{
    u_char             path[NGX_MAX_PATH];
    ngx_relay_spool_t  *sp;

    sp = w->spool;

    if (rc != NGX_OK) {
        if (w->err == 0) {
            w->err = EIO;
        }

        /* the rename may or may not have happened */

        ngx_relay_spool_path(sp, path, "queue", &w->id);
        (void) unlink((char *) path);
        ngx_relay_spool_path(sp, path, "incoming", &w->id);
        (void) unlink((char *) path);
    }

    if (w->handler) {
        w->handler(w, rc);
    }

    if (rc == NGX_OK && sp->queued) {
        sp->queued(sp, w);
        return;
    }

    ngx_relay_spool_release(w);
}


void
ngx_relay_spool_abort(ngx_relay_spool_writer_t *w)
{
    u_char  path[NGX_MAX_PATH];

    ngx_relay_spool_path(w->spool, path, "incoming", &w->id);

    if (w->fd != -1 && unlink((char *) path) == -1) {
        ngx_log_error(NGX_LOG_CRIT, w->log, ngx_errno,
                      "unlink(\"%s\") failed", path);
    }

    ngx_relay_spool_release(w);
}


void
ngx_relay_spool_release(ngx_relay_spool_writer_t *w)
{
    if (w->fd != -1 && close(w->fd) == -1) {
        ngx_log_error(NGX_LOG_ALERT, w->log, ngx_errno,
                      "close() of queue file %V failed", &w->id);
    }

    ngx_destroy_pool(w->pool);
}


/*
 * Opens queue/<name> and takes its lock without waiting: NGX_INVALID_FILE
 * with *err == 0 means another worker owns it or it is gone.
 */

ngx_fd_t
ngx_relay_spool_open_locked(ngx_relay_spool_t *sp, u_char *name,
    ngx_err_t *err)
{
    ngx_fd_t     fd;
    struct stat  st;

    *err = 0;

    fd = openat(sp->queue_fd, (char *) name, O_RDWR|O_CLOEXEC);
    if (fd == -1) {
        if (ngx_errno != NGX_ENOENT) {
            *err = ngx_errno;
        }

        return NGX_INVALID_FILE;
    }

    if (flock(fd, LOCK_EX|LOCK_NB) == -1) {
        if (ngx_errno != EWOULDBLOCK) {
            *err = ngx_errno;
        }

        (void) close(fd);
        return NGX_INVALID_FILE;
    }

    /* removed by its previous owner between our open() and flock() */

    if (fstat(fd, &st) == -1 || st.st_nlink == 0) {
        (void) close(fd);
        return NGX_INVALID_FILE;
    }

    return fd;
}


/*
 * At start: an incoming file nobody holds a lock on belongs to a session
 * that died before its "250": the client was never told it was queued.
 */

void
ngx_relay_spool_cleanup_incoming(ngx_relay_spool_t *sp)
{
    int             dfd, fd;
    DIR            *dir;
    ngx_uint_t      n;
    struct dirent  *de;
    u_char          path[NGX_MAX_PATH];

    ngx_relay_spool_path(sp, path, "incoming", NULL);

    dfd = open((char *) path, O_RDONLY|O_DIRECTORY|O_CLOEXEC);
    if (dfd == -1) {
        ngx_log_error(NGX_LOG_CRIT, sp->log, ngx_errno,
                      "open(\"%s\") failed", path);
        return;
    }

    dir = fdopendir(dfd);
    if (dir == NULL) {
        (void) close(dfd);
        return;
    }

    n = 0;

    while ((de = readdir(dir)) != NULL) {
        if (de->d_name[0] == '.') {
            continue;
        }

        fd = openat(dfd, de->d_name, O_RDONLY|O_CLOEXEC);
        if (fd == -1) {
            continue;
        }

        if (flock(fd, LOCK_EX|LOCK_NB) == 0) {
            if (unlinkat(dfd, de->d_name, 0) == 0) {
                n++;
            }
        }

        (void) close(fd);
    }

    (void) closedir(dir);

    if (n) {
        ngx_log_error(NGX_LOG_NOTICE, sp->log, 0,
                      "relay spool: removed %ui incomplete incoming "
                      "message(s)", n);
    }
}


/* reading queue files back: thread-safe, malloc() only */

ngx_int_t
ngx_relay_spool_read(ngx_fd_t fd, ngx_relay_queued_t *q, ngx_err_t *err)
{
    u_char       *buf, *nbuf, *end;
    size_t        size, len;
    ssize_t       n;
    struct stat   st;

    ngx_memzero(q, sizeof(ngx_relay_queued_t));
    *err = 0;

    if (fstat(fd, &st) == -1) {
        *err = errno;
        return NGX_ERROR;
    }

    size = 4096;
    len = 0;
    buf = NULL;

    for ( ;; ) {
        nbuf = realloc(buf, size + 1);
        if (nbuf == NULL) {
            *err = ENOMEM;
            goto failed;
        }

        buf = nbuf;

        n = pread(fd, buf + len, size - len, len);
        if (n == -1) {
            *err = errno;
            goto failed;
        }

        len += n;
        buf[len] = '\0';

        end = (u_char *) strstr((char *) buf, "\n\n");
        if (end) {
            break;
        }

        if (n == 0 || size >= NGX_RELAY_MAX_HEADER) {
            *err = EINVAL;                /* truncated or not ours */
            goto failed;
        }

        size *= 2;
    }

    q->header = buf;
    q->message_offset = end + 2 - buf;
    q->message_size = st.st_size - q->message_offset;

    if (ngx_relay_spool_parse_header(q, buf, end + 1) != NGX_OK) {
        *err = EINVAL;
        ngx_relay_spool_free(q);
        return NGX_ERROR;
    }

    return NGX_OK;

failed:

    free(buf);
    return NGX_ERROR;
}


static ngx_int_t
ngx_relay_spool_parse_header(ngx_relay_queued_t *q, u_char *p, u_char *last)
{
    u_char                   *eol, *sp, *start;
    ngx_uint_t                n;
    ngx_relay_queued_rcpt_t  *r;

    start = p;

    if (ngx_strncmp(p, NGX_RELAY_QUEUE_MAGIC,
                    sizeof(NGX_RELAY_QUEUE_MAGIC) - 1) != 0)
    {
        return NGX_ERROR;
    }

    n = 0;
    for (eol = p; eol < last; eol++) {
        if (*eol == '\n' && eol + 5 < last
            && ngx_strncmp(eol + 1, "rcpt ", 5) == 0)
        {
            n++;
        }
    }

    q->rcpts = calloc(n ? n : 1, sizeof(ngx_relay_queued_rcpt_t));
    if (q->rcpts == NULL) {
        return NGX_ERROR;
    }

    p += sizeof(NGX_RELAY_QUEUE_MAGIC) - 1;

    while (p < last) {
        eol = (u_char *) ngx_strchr(p, '\n');
        if (eol == NULL || eol > last) {
            return NGX_ERROR;
        }

        if (ngx_strncmp(p, "id ", 3) == 0) {
            q->id.data = p + 3;
            q->id.len = eol - p - 3;

        } else if (ngx_strncmp(p, "arrival ", 8) == 0) {
            q->arrival = ngx_atotm(p + 8, eol - p - 8);

        } else if (ngx_strncmp(p, "sender ", 7) == 0) {
            q->sender.data = p + 7;
            q->sender.len = eol - p - 7;

        } else if (ngx_strncmp(p, "rcpt ", 5) == 0 && q->nrcpts < n) {

            /* rcpt <state> <notify> <orcpt> <address> */

            r = &q->rcpts[q->nrcpts];

            if (eol - p < 12) {
                return NGX_ERROR;
            }

            r->state = p[5];
            r->state_offset = p + 5 - start;

            p += 7;
            sp = ngx_strlchr(p, eol, ' ');
            if (sp == NULL) {
                return NGX_ERROR;
            }

            r->notify = ngx_relay_spool_parse_notify(p, sp);

            p = sp + 1;
            sp = ngx_strlchr(p, eol, ' ');
            if (sp == NULL) {
                return NGX_ERROR;
            }

            if (!(sp - p == 1 && *p == '-')) {
                r->orcpt.data = p;
                r->orcpt.len = sp - p;
            }

            r->addr.data = sp + 1;
            r->addr.len = eol - sp - 1;

            q->nrcpts++;
        }

        p = eol + 1;
    }

    return (q->id.len && q->nrcpts) ? NGX_OK : NGX_ERROR;
}


static ngx_uint_t
ngx_relay_spool_parse_notify(u_char *p, u_char *last)
{
    ngx_uint_t  notify;

    notify = 0;

    if (last - p == 1 && *p == '-') {
        return 0;
    }

    while (p < last) {
        if (last - p >= 5 && ngx_strncmp(p, "NEVER", 5) == 0) {
            notify |= NGX_RELAY_NOTIFY_NEVER;

        } else if (last - p >= 7 && ngx_strncmp(p, "SUCCESS", 7) == 0) {
            notify |= NGX_RELAY_NOTIFY_SUCCESS;

        } else if (last - p >= 7 && ngx_strncmp(p, "FAILURE", 7) == 0) {
            notify |= NGX_RELAY_NOTIFY_FAILURE;

        } else if (last - p >= 5 && ngx_strncmp(p, "DELAY", 5) == 0) {
            notify |= NGX_RELAY_NOTIFY_DELAY;
        }

        p = ngx_strlchr(p, last, ',');
        if (p == NULL) {
            break;
        }

        p++;
    }

    return notify;
}


void
ngx_relay_spool_free(ngx_relay_queued_t *q)
{
    free(q->header);
    free(q->rcpts);
    q->header = NULL;
    q->rcpts = NULL;
}


ngx_int_t
ngx_relay_spool_mark(ngx_fd_t fd, ngx_relay_queued_rcpt_t *r, u_char state,
    ngx_err_t *err)
{
    if (pwrite(fd, &state, 1, r->state_offset) != 1) {
        *err = errno;
        return NGX_ERROR;
    }

    r->state = state;

    return NGX_OK;
}


ngx_int_t
ngx_relay_spool_remove(ngx_relay_spool_t *sp, ngx_str_t *id, ngx_err_t *err)
{
    u_char  name[NGX_RELAY_ID_LEN + 1];

    if (id->len > NGX_RELAY_ID_LEN) {
        *err = EINVAL;
        return NGX_ERROR;
    }

    ngx_memcpy(name, id->data, id->len);
    name[id->len] = '\0';

    if (unlinkat(sp->queue_fd, (char *) name, 0) == -1) {
        *err = errno;
        return NGX_ERROR;
    }

    return NGX_OK;
}


static u_char *
ngx_relay_spool_path(ngx_relay_spool_t *sp, u_char *buf, const char *dir,
    ngx_str_t *name)
{
    u_char  *p;

    p = ngx_cpymem(buf, sp->path.data, sp->path.len);
    p = ngx_cpymem(p, dir, ngx_strlen(dir));

    if (name) {
        *p++ = '/';
        p = ngx_cpymem(p, name->data, ngx_min(name->len, NGX_RELAY_ID_LEN));
    }

    *p = '\0';

    return buf;
}
