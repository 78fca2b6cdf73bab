
/*
 * Copyright (C) The relay authors
 */


/*
 * The spool: the module's only code that creates, reads, rewrites and
 * removes queue files, on lib/relay_queue.c, which alone knows their
 * format (also used by relayctl and controld's queue commands).
 *
 * Layout: <spool>/queue/<id>.  A queue file is a text envelope
 * ("RELAY-QUEUE 1", "key value" lines, one "rcpt <state> <notify> <orcpt>
 * <address>" line per recipient, an empty line), the message octets, and a
 * trailer "\nRELAY-END <20-digit offset of the trailer>\n".  Recipient
 * states are one byte rewritten in place, so marking a recipient done is a
 * pwrite() and an fdatasync(), never a rewrite of the file.
 *
 * Durability and group commit: the event loop never touches the file
 * system here.  A small message stays in its writer's buffer until its
 * end, a large one is written out 64 KB at a time by thread tasks; the
 * first of them creates and locks the file.  Messages whose data have
 * ended wait for the next commit group; one thread task per group writes
 * what is still in memory and makes the whole group durable:
 *   - relay_spool_sync journal (the default), for groups of messages
 *     still whole in memory: the queue files are made, not synced, and
 *     a copy of each goes to the worker's journal with one fdatasync()
 *     (ngx_relay_journal.c).  One such group at a time.  A message whose
 *     buffer stays for its first attempt gets its file empty ("hollow",
 *     see ngx_relay_spool_make_hollow()): delivered at once, its content
 *     never goes through the page cache;
 *   - otherwise one syncfs() (one journal commit of the file system and
 *     one disk cache flush for the group), or with relay_spool_sync files
 *     an fdatasync() per file and one fsync() of queue/.  Up to
 *     NGX_RELAY_SPOOL_GROUPS such groups are on the disk at once while the
 *     next one gathers.
 * "250" is sent only after the group's syncs returned.
 *
 * Transforms at acceptance (DKIM signing) see the message in the same
 * thread tasks that write it, and put their header fields before it at
 * the end of data, into room reserved after the envelope: a message still
 * in memory closes the room up, a large one that went out already gets
 * its fields written into it, after a shorter "pad" line of the envelope
 * (a key the queue format skips).  Either way the queued octets are the
 * signed ones and the message is written once.
 *
 * A file without its trailer is incomplete: its session is still writing
 * it (and holds its lock), or died before "250" (then nobody holds the lock
 * and the queue scan removes it).  No renames, so no cross-directory
 * rename lock and one metadata operation per message.
 *
 * Ownership: the worker holding flock() on a queue file owns it.  The lock
 * is taken when the file is created and dies with its holder, so kill -9
 * frees it.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <sys/file.h>
#if (NGX_LINUX)
#include <malloc.h>
#endif
#include <ngx_relay.h>
#include <ngx_relay_parse.h>
#include <ngx_relay_spool.h>
#include <ngx_relay_snapshot.h>
#include <ngx_relay_metrics.h>


typedef struct {
    ngx_relay_spool_t            *spool;
    ngx_queue_t                   writers;

    /* a group whose records go to the journal */
    unsigned                      journal:1;
    unsigned                      journal_failed:1;
    ngx_relay_journal_slot_t      slot;
    ngx_uint_t                    records;     /* written and synced */
    uint64_t                      started;     /* for the metrics */
} ngx_relay_spool_group_t;


static ngx_int_t ngx_relay_spool_post(ngx_relay_spool_writer_t *w,
    void (*thread)(void *data, ngx_log_t *log), ngx_event_handler_pt done);
static void ngx_relay_spool_open_thread(void *data, ngx_log_t *log);
static void ngx_relay_spool_next(ngx_relay_spool_writer_t *w);
static ngx_int_t ngx_relay_spool_put(ngx_relay_spool_writer_t *w);
static void ngx_relay_spool_flush_thread(void *data, ngx_log_t *log);
static void ngx_relay_spool_flush_done(ngx_event_t *ev);
static void ngx_relay_spool_join_group(ngx_relay_spool_writer_t *w);
static void ngx_relay_spool_group_start(ngx_relay_spool_t *sp);
static void ngx_relay_spool_group_thread(void *data, ngx_log_t *log);
static void ngx_relay_spool_group_done(ngx_event_t *ev);
static void ngx_relay_spool_journal_reserve(ngx_relay_spool_group_t *g);
static void ngx_relay_spool_journal_thread(ngx_relay_spool_group_t *g);
static void ngx_relay_spool_journal_done(ngx_relay_spool_group_t *g);
static void ngx_relay_spool_group_end(ngx_relay_spool_group_t *g);
static void ngx_relay_spool_finish(ngx_relay_spool_writer_t *w,
    ngx_int_t rc, ngx_relay_journal_slot_t *slot);
static void ngx_relay_spool_discard_thread(void *data, ngx_log_t *log);
static void ngx_relay_spool_discard_done(ngx_event_t *ev);
static ngx_int_t ngx_relay_spool_grow(ngx_relay_spool_writer_t *w,
    size_t len);
static void ngx_relay_spool_free_buf(ngx_relay_spool_writer_t *w);
static void ngx_relay_spool_flow_wake(ngx_relay_spool_t *sp);
static void ngx_relay_spool_keep_for_attempt(ngx_relay_spool_writer_t *w);
static ngx_int_t ngx_relay_spool_transform_start(ngx_relay_spool_writer_t *w,
    ngx_uint_t whole);
static void ngx_relay_spool_transform_feed(ngx_relay_spool_writer_t *w);
static void ngx_relay_spool_transform_thread(void *data, ngx_log_t *log);
static void ngx_relay_spool_transform_done(ngx_event_t *ev);
static ngx_int_t ngx_relay_spool_place(ngx_relay_spool_writer_t *w,
    u_char *fields, size_t len);
static ngx_int_t ngx_relay_spool_pwrite(ngx_relay_spool_writer_t *w,
    u_char *p, size_t len, off_t offset);
static ngx_int_t ngx_relay_spool_result(int rc);
static ngx_int_t ngx_relay_spool_read_result(int rc, int e, ngx_err_t *err);
static void ngx_relay_spool_keep_heap(void);
static ngx_uint_t ngx_relay_spool_may_stay_hollow(ngx_relay_spool_writer_t *w);
static ngx_uint_t ngx_relay_spool_may_keep(ngx_relay_spool_writer_t *w,
    size_t more);
static ngx_int_t ngx_relay_spool_make_hollow(ngx_relay_spool_writer_t *w);
static void ngx_relay_spool_unlink_hollow(ngx_relay_spool_writer_t *w);
static void ngx_relay_spool_fill_thread(void *data, ngx_log_t *log);
static void ngx_relay_spool_fill_done(ngx_event_t *ev);
static void ngx_relay_spool_fill_at_exit(ngx_relay_spool_t *sp);
static ngx_int_t ngx_relay_spool_pin_live(void *data, ngx_uint_t segment);
static ngx_int_t ngx_relay_spool_fill_live(void *data, ngx_err_t *err);
static void ngx_relay_spool_unpin_live(void *data, ngx_uint_t filled);




ngx_int_t
ngx_relay_spool_prepare_dirs(ngx_str_t *path, ngx_cycle_t *cycle)
{
    u_char           *p, buf[NGX_MAX_PATH];
    ngx_log_t        *log;
    ngx_uint_t        i;
    ngx_core_conf_t  *ccf;

    static const char  *dirs[] = { "", "queue", NGX_RELAY_JOURNAL_DIR,
                                   NGX_RELAY_NOTES_DIR,
                                   NGX_RELAY_CORRUPT_DIR,
                                   NGX_RELAY_SCHEDULE_DIR };

    log = cycle->log;
    ccf = (ngx_core_conf_t *) ngx_get_conf(cycle->conf_ctx, ngx_core_module);

    if (path->len + sizeof(NGX_RELAY_JOURNAL_DIR "/") + NGX_INT_T_LEN + 8
        >= NGX_MAX_PATH)
    {
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


/*
 * Thread side: a listing of a spool directory held open by its fd, from
 * its start; the fd stays open (the DIR has a copy).
 */

DIR *
ngx_relay_spool_opendir(int dir_fd)
{
    int   fd;
    DIR  *dir;

    fd = dup(dir_fd);
    if (fd == -1) {
        return NULL;
    }

    dir = fdopendir(fd);
    if (dir == NULL) {
        (void) close(fd);
        return NULL;
    }

    rewinddir(dir);

    return dir;
}


/*
 * A message's buffer grows past glibc's first mmap threshold (128 KB) and
 * goes when the message goes, hundreds of times a second.  With the
 * dynamic thresholds such buffers can be mapped and unmapped, or the top
 * of the heap given back and taken again, and every page is then faulted
 * in afresh (page faults under memcpy were 2.5 % of a worker at 100 KB;
 * with fixed thresholds fewer, those left come from the heap growing with
 * a backlog).  Buffers up to a few whole messages come from the heap, and
 * up to 16 MB of free heap stays with the process.
 */

static void
ngx_relay_spool_keep_heap(void)
{
#if (NGX_LINUX && defined M_TRIM_THRESHOLD)
    (void) mallopt(M_MMAP_THRESHOLD, 4 * NGX_RELAY_SPOOL_WHOLE_MAX);
    (void) mallopt(M_TRIM_THRESHOLD, 16 * 1024 * 1024);
#endif
}


ngx_int_t
ngx_relay_spool_init(ngx_relay_spool_t *sp, ngx_cycle_t *cycle)
{
    u_char               *p, buf[NGX_MAX_PATH];
    ngx_relay_journal_t  *j;

    sp->log = cycle->log;
    sp->corrupt_fd = -1;
    ngx_queue_init(&sp->commit_waiting);
    ngx_queue_init(&sp->hollow[0]);
    ngx_queue_init(&sp->hollow[1]);
    ngx_queue_init(&sp->flow_waiting);

    if (pthread_mutex_init(&sp->fill_mutex, NULL) != 0) {
        ngx_log_error(NGX_LOG_EMERG, cycle->log, 0,
                      "pthread_mutex_init() failed");
        return NGX_ERROR;
    }

    ngx_relay_spool_keep_heap();

    p = ngx_cpymem(buf, sp->path.data, sp->path.len);
    ngx_memcpy(p, "queue", sizeof("queue"));

    sp->queue_fd = open((char *) buf, O_RDONLY|O_DIRECTORY|O_CLOEXEC);
    if (sp->queue_fd == -1) {
        ngx_log_error(NGX_LOG_EMERG, cycle->log, ngx_errno,
                      "open(\"%s\") failed", buf);
        return NGX_ERROR;
    }

    ngx_memcpy(p, NGX_RELAY_CORRUPT_DIR, sizeof(NGX_RELAY_CORRUPT_DIR));

    sp->corrupt_fd = open((char *) buf, O_RDONLY|O_DIRECTORY|O_CLOEXEC);
    if (sp->corrupt_fd == -1) {
        ngx_log_error(NGX_LOG_WARN, cycle->log, ngx_errno,
                      "open(\"%s\") failed, queue files that do not parse "
                      "stay in the queue", buf);
    }

    j = &sp->journal;
    j->dir_fd = -1;
    j->fd = NGX_INVALID_FILE;

    if (sp->sync != NGX_RELAY_SYNC_JOURNAL) {
        return NGX_OK;
    }

    ngx_memcpy(p, NGX_RELAY_JOURNAL_DIR, sizeof(NGX_RELAY_JOURNAL_DIR));

    j->dir_fd = open((char *) buf, O_RDONLY|O_DIRECTORY|O_CLOEXEC);
    if (j->dir_fd == -1) {
        ngx_log_error(NGX_LOG_EMERG, cycle->log, ngx_errno,
                      "open(\"%s\") failed", buf);
        return NGX_ERROR;
    }

    j->queue_fd = sp->queue_fd;
    j->log = cycle->log;
    j->thread_pool = sp->thread_pool;
    j->pin_live = ngx_relay_spool_pin_live;
    j->fill_live = ngx_relay_spool_fill_live;
    j->unpin_live = ngx_relay_spool_unpin_live;
    j->live_data = sp;

    /* until the journal is ready (or if it never is) groups sync files */

    (void) ngx_relay_journal_open(j);

    return NGX_OK;
}


void
ngx_relay_spool_exit(ngx_relay_spool_t *sp)
{
    if (sp->corrupt_fd != -1) {
        (void) close(sp->corrupt_fd);
        sp->corrupt_fd = -1;
    }

    ngx_relay_spool_fill_at_exit(sp);

    /* a file still hollow needs the journal: recovery writes it */

    ngx_relay_journal_close(&sp->journal,
                            !ngx_queue_empty(&sp->hollow[0])
                            || !ngx_queue_empty(&sp->hollow[1]));

    if (sp->journal.dir_fd != -1) {
        (void) close(sp->journal.dir_fd);
        sp->journal.dir_fd = -1;
    }
}


/*
 * Queue ids: seconds, milliseconds, pid and a per-process sequence, so they
 * are unique on the node without coordination and sort by arrival.  The
 * file is created by the first thread task that writes it: the commit
 * group for a small message, the first flush for a large one.
 */

ngx_relay_spool_writer_t *
ngx_relay_spool_create(ngx_relay_spool_t *sp, ngx_log_t *log)
{
    u_char                    *p;
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
    w->fd = NGX_INVALID_FILE;

    w->buf = ngx_alloc(NGX_RELAY_SPOOL_BUF, log);
    w->task = ngx_thread_task_alloc(pool, 0);

    if (w->buf == NULL || w->task == NULL) {
        ngx_free(w->buf);
        ngx_destroy_pool(pool);
        return NULL;
    }

    w->pos = w->buf;
    w->end = w->buf + NGX_RELAY_SPOOL_BUF;

    tp = ngx_timeofday();

    /* an id of this worker's share: the message stays with its scheduler */

    do {
        p = ngx_sprintf(w->id_data, "%08xD%03xiP%xiS%xi",
                        (uint32_t) tp->sec, (ngx_uint_t) tp->msec,
                        (ngx_uint_t) ngx_pid, sp->sequence++ & 0xffffff);
        w->id.data = w->id_data;
        w->id.len = p - w->id_data;

    } while (ngx_relay_spool_slot(w->id.data, w->id.len, sp->workers)
             != sp->worker);

    return w;
}


/* the share of the queue a queue id belongs to (FNV-1a) */

ngx_uint_t
ngx_relay_spool_slot(u_char *name, size_t len, ngx_uint_t workers)
{
    uint32_t  h;
    u_char   *last;

    if (workers <= 1) {
        return 0;
    }

    for (h = 2166136261u, last = name + len; name < last; name++) {
        h = (h ^ *name) * 16777619u;
    }

    return h % workers;
}


static ngx_int_t
ngx_relay_spool_post(ngx_relay_spool_writer_t *w,
    void (*thread)(void *data, ngx_log_t *log), ngx_event_handler_pt done)
{
    ngx_thread_task_t  *task;

    task = w->task;

    task->ctx = w;
    task->handler = thread;
    task->event.handler = done;
    task->event.data = w;

    if (ngx_thread_task_post(w->spool->thread_pool, task) != NGX_OK) {
        return NGX_ERROR;
    }

    w->busy = 1;

    return NGX_OK;
}


static void
ngx_relay_spool_open_thread(void *data, ngx_log_t *log)
{
    ngx_relay_spool_writer_t  *w = data;

    u_char  name[NGX_RELAY_ID_LEN + 1];

    ngx_memcpy(name, w->id.data, w->id.len);
    name[w->id.len] = '\0';

    w->fd = openat(w->spool->queue_fd, (char *) name,
                   O_RDWR|O_CREAT|O_EXCL|O_CLOEXEC, 0600);
    if (w->fd == -1) {
        w->err = errno;
        return;
    }

    /*
     * Blocking: a queue scan may have opened the new file and hold its lock
     * for a moment; it finds no trailer, leaves a file this young alone and
     * lets go.
     */

    while (flock(w->fd, LOCK_EX) == -1) {
        if (errno != EINTR) {
            w->err = errno;
            return;
        }
    }
}


static void
ngx_relay_spool_next(ngx_relay_spool_writer_t *w)
{
    switch (w->want) {

    case ngx_relay_spool_want_flush:
        w->want = ngx_relay_spool_want_nothing;

        if (w->err
            || ngx_relay_spool_post(w, ngx_relay_spool_flush_thread,
                                    ngx_relay_spool_flush_done)
               != NGX_OK)
        {
            if (w->err == 0) {
                w->err = NGX_ENOMEM;
            }

            ngx_relay_spool_flush_done(&w->task->event);
        }

        return;

    case ngx_relay_spool_want_commit:
        w->want = ngx_relay_spool_want_nothing;

        if (w->transform && !w->transformed) {
            if (w->err == 0
                && ngx_relay_spool_post(w, ngx_relay_spool_transform_thread,
                                        ngx_relay_spool_transform_done)
                   == NGX_OK)
            {
                return;
            }

            if (w->err == 0) {
                w->err = NGX_ENOMEM;
            }

            ngx_relay_spool_finish(w, NGX_ERROR, NULL);
            return;
        }

        ngx_relay_spool_join_group(w);
        return;

    case ngx_relay_spool_want_abort:
        w->want = ngx_relay_spool_want_nothing;
        ngx_relay_spool_abort(w);
        return;

    default:
        return;
    }
}


/* before the envelope: a transform reserves its room after it */

void
ngx_relay_spool_set_transform(ngx_relay_spool_writer_t *w,
    ngx_relay_spool_transform_t *t)
{
    w->transform = t;
}


/* "pad" SP ... LF LF: the room's line, the envelope's empty line */

#define NGX_RELAY_SPOOL_PAD_LEN  (sizeof("pad\n\n") - 1)


/* the envelope goes first into the buffer; a huge one grows it */

ngx_int_t
ngx_relay_spool_write_envelope(ngx_relay_spool_writer_t *w,
    ngx_relay_envelope_t *env)
{
    size_t                   len;
    u_char                  *p;
    ngx_uint_t               i;
    ngx_relay_rcpt_t        *r;
    relay_queue_envelope_t   qe;

    ngx_memzero(&qe, sizeof(relay_queue_envelope_t));

    qe.id = w->id;
    qe.arrival = env->arrival;
    qe.client = env->client;
    qe.helo = env->helo;
    qe.auth = env->auth_user;
    qe.body = env->body;
    qe.smtputf8 = env->smtputf8;
    qe.ret = env->ret;
    qe.envid = env->envid;
    qe.tenant = env->tenant;
    qe.sender = env->sender;

    len = relay_queue_envelope_len(&qe) + 1;

    r = env->rcpts.elts;
    for (i = 0; i < env->rcpts.nelts; i++) {
        len += relay_queue_rcpt_len(r[i].notify, &r[i].orcpt, &r[i].addr);
    }

    if (w->transform) {
        len += w->transform->reserve + NGX_RELAY_SPOOL_PAD_LEN;

        w->transform_buf = ngx_palloc(w->pool, w->transform->reserve
                                               + NGX_RELAY_SPOOL_PAD_LEN);
        if (w->transform_buf == NULL) {
            return NGX_ERROR;
        }
    }

    /* room for the Received: header and the first data too */

    if (ngx_relay_spool_grow(w, len + NGX_RELAY_SPOOL_BUF / 2) != NGX_OK) {
        return NGX_ERROR;
    }

    p = relay_queue_render_envelope(w->pos, &qe);

    for (i = 0; i < env->rcpts.nelts; i++) {
        p = relay_queue_render_rcpt(p, r[i].notify, &r[i].orcpt,
                                    &r[i].addr);

        if (r[i].local) {
            w->local++;
        }
    }

    if (w->transform) {
        w->reserve_start = p - w->buf;
        p = ngx_cpymem(p, "pad", 3);
        ngx_memset(p, ' ', w->transform->reserve);
        p += w->transform->reserve;
        *p++ = '\n';
    }

    *p++ = '\n';

    w->pos = p;
    w->message_start = p - w->buf;

    return NGX_OK;
}


static ngx_int_t
ngx_relay_spool_grow(ngx_relay_spool_writer_t *w, size_t len)
{
    u_char  *buf;
    size_t   size, used;

    if ((size_t) (w->end - w->pos) >= len) {
        return NGX_OK;
    }

    used = w->pos - w->buf;
    size = ngx_max((size_t) (w->end - w->buf), used + len);

    /* realloc(): often in place, a 100 KB message not copied once more */

    buf = realloc(w->buf, size);
    if (buf == NULL) {
        ngx_log_error(NGX_LOG_EMERG, w->log, ngx_errno,
                      "realloc(%uz) failed", size);
        return NGX_ERROR;
    }

    w->buf = buf;
    w->pos = buf + used;
    w->end = buf + size;

    return NGX_OK;
}


/*
 * The buffer is full: a message of up to NGX_RELAY_SPOOL_WHOLE_MAX stays
 * whole in memory instead of being written out, so that it goes through
 * the journal like a small one (one overwrite and no file made durable;
 * delivered at once, its queue file never reaches the disk).  What the
 * worker's messages keep so stays under relay_spool_memory; past it
 * they are written out as they come.  NGX_DECLINED: write it out.
 */

ngx_int_t
ngx_relay_spool_keep_whole(ngx_relay_spool_writer_t *w)
{
    size_t              size, more;
    ngx_relay_spool_t  *sp;

    sp = w->spool;
    size = w->end - w->buf;

    if (sp->sync != NGX_RELAY_SYNC_JOURNAL || !sp->journal.ready
        || w->written || w->fd != NGX_INVALID_FILE || w->err || w->busy
        || size >= NGX_RELAY_SPOOL_WHOLE_MAX)
    {
        return NGX_DECLINED;
    }

    more = ngx_min(size, NGX_RELAY_SPOOL_WHOLE_MAX - size);

    if (sp->kept + more > sp->memory
        || ngx_relay_spool_grow(w, (w->end - w->pos) + more) != NGX_OK)
    {
        return NGX_DECLINED;
    }

    sp->kept += more;
    w->kept += more;

    return NGX_OK;
}


static void
ngx_relay_spool_keep_for_attempt(ngx_relay_spool_writer_t *w)
{
    u_char             *buf;
    size_t              used, size, more;
    ngx_relay_spool_t  *sp;

    sp = w->spool;
    used = (size_t) w->written;          /* the whole file, from buf */

    /*
     * The buffer shrinks to its message (in place): a 100 KB message had
     * grown it to 128 KB, and the budget now keeps a quarter more of them.
     */

    if (used && used < (size_t) (w->end - w->buf)) {
        buf = realloc(w->buf, used);

        if (buf) {
            w->buf = buf;
            w->pos = buf + used;
            w->end = w->pos;
        }
    }

    size = w->end - w->buf;

    if (w->kept > size) {
        sp->kept -= w->kept - size;
        w->kept = size;
    }

    more = (w->end - w->buf) - w->kept;  /* the part not counted yet */

    /*
     * A journaled message was whole in buf: put() wrote it from there.  A
     * hollow file's content is only there: kept whatever the budget (its
     * group was let in under it).
     */

    if (!w->hollow && !ngx_relay_spool_may_keep(w, more)) {
        ngx_relay_spool_free_buf(w);
        return;
    }

    sp->kept += more;
    w->kept += more;
    w->whole = 1;

    sp->kept_first += w->kept;
}


static void
ngx_relay_spool_free_buf(ngx_relay_spool_writer_t *w)
{
    ngx_uint_t  freed;

    freed = w->whole;

    if (w->whole) {
        w->spool->kept_first -= w->kept;
    }

    w->spool->kept -= w->kept;
    w->kept = 0;
    w->whole = 0;

    ngx_free(w->buf);
    w->buf = NULL;
    w->pos = NULL;
    w->end = NULL;

    if (freed) {
        ngx_relay_spool_flow_wake(w->spool);
    }
}


/*
 * In-flow control, as Postfix's in_flow_delay: once the messages waiting
 * for their first attempt hold relay_in_flow_memory, acceptance waits for
 * deliveries instead of outrunning them; each such message that goes lets
 * one waiting session start its next.  Accepted past it, messages would
 * wait longer than a checkpoint interval and have their hollow files
 * written and synced by it, or past relay_spool_memory be written out and
 * read back, and their first attempt would come no sooner.
 */

ngx_uint_t
ngx_relay_spool_flow_full(ngx_relay_spool_t *sp)
{
    return sp->in_flow && sp->delivers && sp->queued != NULL
           && sp->journal.ready && sp->kept_first >= sp->in_flow;
}


void
ngx_relay_spool_flow_wait(ngx_relay_spool_t *sp, ngx_relay_spool_flow_t *f)
{
    ngx_queue_insert_tail(&sp->flow_waiting, &f->queue);
    f->queued = 1;
}


static void
ngx_relay_spool_flow_wake(ngx_relay_spool_t *sp)
{
    ngx_queue_t             *q;
    ngx_relay_spool_flow_t  *f;

    if (ngx_queue_empty(&sp->flow_waiting) || ngx_relay_spool_flow_full(sp)) {
        return;
    }

    q = ngx_queue_head(&sp->flow_waiting);
    ngx_queue_remove(q);

    f = ngx_queue_data(q, ngx_relay_spool_flow_t, queue);
    f->queued = 0;

    ngx_post_event(&f->event, &ngx_posted_events);
}


/* the session ends or goes on by its timer */

void
ngx_relay_spool_flow_cancel(ngx_relay_spool_flow_t *f)
{
    if (f->queued) {
        ngx_queue_remove(&f->queue);
        f->queued = 0;
    }

    if (f->event.timer_set) {
        ngx_del_timer(&f->event);
    }

    if (f->event.posted) {
        ngx_delete_posted_event(&f->event);
    }
}


/* room for len more octets in memory, for content made by the node */

ngx_int_t
ngx_relay_spool_reserve(ngx_relay_spool_writer_t *w, size_t len)
{
    return ngx_relay_spool_grow(w, len);
}


/*
 * Writes the buffer out in a thread when it is full; the caller waits for
 * "handler" before it fills the buffer again.
 */

ngx_int_t
ngx_relay_spool_flush(ngx_relay_spool_writer_t *w,
    ngx_relay_spool_done_pt handler, void *data)
{
    if (w->err) {
        return NGX_ERROR;
    }

    if (ngx_relay_spool_transform_start(w, 0) != NGX_OK) {
        return NGX_ERROR;
    }

    w->handler = handler;
    w->data = data;
    w->want = ngx_relay_spool_want_flush;

    if (!w->busy) {
        ngx_relay_spool_next(w);
    }

    return NGX_AGAIN;
}


static void
ngx_relay_spool_flush_thread(void *data, ngx_log_t *log)
{
    ngx_relay_spool_writer_t  *w = data;

    if (w->transform && w->err == 0) {
        ngx_relay_spool_transform_feed(w);
    }

    (void) ngx_relay_spool_put(w);
}


static void
ngx_relay_spool_flush_done(ngx_event_t *ev)
{
    ngx_relay_spool_writer_t  *w = ev->data;

    w->busy = 0;

    if (w->err) {
        ngx_log_error(NGX_LOG_CRIT, w->log, w->err,
                      "write of queue file %V failed", &w->id);
    }

    if (w->handler) {
        w->handler(w, w->err ? NGX_ERROR : NGX_OK);
        return;
    }

    /* the session went away meanwhile */
    ngx_relay_spool_abort(w);
}


/* thread side: write the buffer, count what reached the file */

static ngx_int_t
ngx_relay_spool_put(ngx_relay_spool_writer_t *w)
{
    if (w->err) {
        return NGX_ERROR;
    }

    if (w->fd == NGX_INVALID_FILE) {
        ngx_relay_spool_open_thread(w, NULL);

        if (w->err) {
            return NGX_ERROR;
        }
    }

    if (ngx_relay_spool_pwrite(w, w->buf, w->pos - w->buf, w->written)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    w->written += w->pos - w->buf;
    w->pos = w->buf;

    return NGX_OK;
}


/*
 * The end of data: the trailer, then the next commit group.  The trailer
 * ("RELAY-END" and the offset where the message ends) is what tells a
 * complete queue file from debris after a crash.
 */

ngx_int_t
ngx_relay_spool_commit(ngx_relay_spool_writer_t *w,
    ngx_relay_spool_done_pt handler, void *data)
{
    if (w->err
        || ngx_relay_spool_grow(w, NGX_RELAY_TRAILER_LEN) != NGX_OK
        || ngx_relay_spool_transform_start(w, 1) != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (w->transform == NULL) {
        w->pos = relay_queue_render_trailer(w->pos,
                                            w->written + (w->pos - w->buf));
    }

    /* else the transform's task puts the trailer after its fields */

    w->handler = handler;
    w->data = data;
    w->want = ngx_relay_spool_want_commit;

    if (!w->busy) {
        ngx_relay_spool_next(w);
    }

    return NGX_OK;
}


/*
 * The transform sees the message's first octets on the event loop, at the
 * first flush or at the end of data, whichever comes first.  Declined: the
 * room goes (a message still in memory closes it up; one written out
 * keeps a longer pad line) and the writer goes on as without a transform.
 */

static ngx_int_t
ngx_relay_spool_transform_start(ngx_relay_spool_writer_t *w,
    ngx_uint_t whole)
{
    u_char                       *p;
    ngx_int_t                     rc;
    ngx_relay_spool_transform_t  *t;

    t = w->transform;

    if (t == NULL || w->transform_started) {
        return NGX_OK;
    }

    w->transform_started = 1;

    p = w->buf + w->message_start;

    rc = t->start(t->data, p, w->pos - p, whole);

    if (rc == NGX_ERROR) {
        w->transform_failed = 1;
        w->err = NGX_EINVAL;
        return NGX_ERROR;
    }

    if (rc == NGX_DECLINED) {
        (void) ngx_relay_spool_place(w, NULL, 0);
        w->transform = NULL;
    }

    return NGX_OK;
}


/* thread: what of the buffer is message, to the transform */

static void
ngx_relay_spool_transform_feed(ngx_relay_spool_writer_t *w)
{
    u_char                       *p;
    ngx_relay_spool_transform_t  *t;

    t = w->transform;

    p = (w->fd == NGX_INVALID_FILE) ? w->buf + w->message_start : w->buf;

    if (w->pos > p) {
        t->feed(t->data, p, w->pos - p);
    }
}


/* thread: the end of data with a transform, then the trailer */

static void
ngx_relay_spool_transform_thread(void *data, ngx_log_t *log)
{
    ngx_relay_spool_writer_t  *w = data;

    size_t                        len;
    ngx_relay_spool_transform_t  *t;

    t = w->transform;

    ngx_relay_spool_transform_feed(w);

    if (t->finish(t->data, w->transform_buf, &len) != NGX_OK) {
        w->transform_failed = 1;
        w->err = NGX_EINVAL;
        return;
    }

    if (ngx_relay_spool_place(w, w->transform_buf, len) != NGX_OK) {
        return;
    }

    w->pos = relay_queue_render_trailer(w->pos,
                                        w->written + (w->pos - w->buf));
}


static void
ngx_relay_spool_transform_done(ngx_event_t *ev)
{
    ngx_relay_spool_writer_t  *w = ev->data;

    w->busy = 0;
    w->transformed = 1;

    if (w->err) {
        if (!w->transform_failed) {
            ngx_log_error(NGX_LOG_CRIT, w->log, w->err,
                          "write of queue file %V failed", &w->id);
        }

        ngx_relay_spool_finish(w, NGX_ERROR, NULL);
        return;
    }

    ngx_relay_spool_join_group(w);
}


/*
 * The fields into the room after the envelope, which is "pad", spaces,
 * LF, LF (reserve + NGX_RELAY_SPOOL_PAD_LEN octets).  In memory the room
 * closes up: LF, the fields, the message.  Written out already, the room
 * keeps its size: a shorter pad line, LF, LF, the fields (a thread's
 * pwrite()).  fields may be the room's own scratch buffer, transform_buf.
 */

static ngx_int_t
ngx_relay_spool_place(ngx_relay_spool_writer_t *w, u_char *fields,
    size_t len)
{
    u_char  *p, *room;
    size_t   size;

    size = w->message_start - w->reserve_start;

    if (len + NGX_RELAY_SPOOL_PAD_LEN > size) {
        w->transform_failed = 1;
        w->err = NGX_EINVAL;
        return NGX_ERROR;
    }

    if (w->fd == NGX_INVALID_FILE) {
        room = w->buf + w->reserve_start;

        ngx_memmove(room + 1 + len, w->buf + w->message_start,
                    w->pos - (w->buf + w->message_start));

        *room = '\n';

        if (len) {
            ngx_memmove(room + 1, fields, len);
        }

        w->pos -= size - 1 - len;
        w->message_start = w->reserve_start + 1;

        return NGX_OK;
    }

    if (len == 0) {
        return NGX_OK;                   /* the pad line as written */
    }

    p = w->transform_buf;

    ngx_memmove(p + size - len, fields, len);
    ngx_memcpy(p, "pad", 3);
    ngx_memset(p + 3, ' ', size - len - NGX_RELAY_SPOOL_PAD_LEN);
    p[size - len - 2] = '\n';
    p[size - len - 1] = '\n';

    return ngx_relay_spool_pwrite(w, w->transform_buf, size,
                                  w->reserve_start);
}


/* thread: len octets at offset, or w->err */

static ngx_int_t
ngx_relay_spool_pwrite(ngx_relay_spool_writer_t *w, u_char *p, size_t len,
    off_t offset)
{
    ssize_t  n;

    for ( /* void */ ; len; p += n, len -= n, offset += n) {
        n = pwrite(w->fd, p, len, offset);

        if (n == -1) {
            if (errno == EINTR) {
                n = 0;
                continue;
            }

            w->err = errno;
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


static void
ngx_relay_spool_join_group(ngx_relay_spool_writer_t *w)
{
    ngx_relay_spool_t  *sp;

    sp = w->spool;

    ngx_queue_insert_tail(&sp->commit_waiting, &w->queue);

    /* a third journal group would only wait for the second */

    if (sp->journal_busy >= NGX_RELAY_JOURNAL_INFLIGHT) {
        return;
    }

    if (sp->commit_busy < NGX_RELAY_SPOOL_GROUPS) {
        ngx_relay_spool_group_start(sp);
    }
}


static void
ngx_relay_spool_group_start(ngx_relay_spool_t *sp)
{
    ngx_queue_t               *q;
    ngx_thread_task_t         *task;
    ngx_relay_spool_group_t   *g;
    ngx_relay_spool_writer_t  *w;

    if (ngx_queue_empty(&sp->commit_waiting)) {
        return;
    }

    task = ngx_calloc(sizeof(ngx_thread_task_t)
                      + sizeof(ngx_relay_spool_group_t), sp->log);
    if (task == NULL) {
        goto failed;
    }

    g = (ngx_relay_spool_group_t *) (task + 1);
    g->spool = sp;

    ngx_queue_init(&g->writers);
    ngx_queue_add(&g->writers, &sp->commit_waiting);
    ngx_queue_init(&sp->commit_waiting);

    ngx_relay_spool_journal_reserve(g);

    g->started = ngx_relay_metrics_clock();

    task->ctx = g;
    task->handler = ngx_relay_spool_group_thread;
    task->event.handler = ngx_relay_spool_group_done;
    task->event.data = task;

    if (ngx_thread_task_post(sp->thread_pool, task) != NGX_OK) {
        if (g->journal) {
            ngx_relay_journal_skip(&sp->journal, &g->slot);
        }

        ngx_queue_add(&sp->commit_waiting, &g->writers);
        ngx_free(task);
        goto failed;
    }

    sp->commit_busy++;
    sp->journal_busy += g->journal;

    return;

failed:

    while (!ngx_queue_empty(&sp->commit_waiting)) {
        q = ngx_queue_head(&sp->commit_waiting);
        ngx_queue_remove(q);

        w = ngx_queue_data(q, ngx_relay_spool_writer_t, queue);
        w->err = NGX_ENOMEM;
        ngx_relay_spool_finish(w, NGX_ERROR, NULL);
    }
}


/*
 * One group: write what is still in memory, then fdatasync() each file.
 * The first sync makes the journal commit that carries the others' data
 * and directory entries; the fsync() of queue/ that follows makes the
 * entries durable by the book and costs nothing more on ext4.
 */

static void
ngx_relay_spool_group_thread(void *data, ngx_log_t *log)
{
    ngx_relay_spool_group_t  *g = data;

    ngx_err_t                  err;
    ngx_queue_t               *q;
    ngx_relay_spool_writer_t  *w;

    if (g->journal) {
        ngx_relay_spool_journal_thread(g);
        return;
    }

    for (q = ngx_queue_head(&g->writers);
         q != ngx_queue_sentinel(&g->writers);
         q = ngx_queue_next(q))
    {
        w = ngx_queue_data(q, ngx_relay_spool_writer_t, queue);
        (void) ngx_relay_spool_put(w);
    }

#if (NGX_LINUX)

    if (g->spool->sync != NGX_RELAY_SYNC_FILES) {

        /*
         * One syncfs() makes every file of the group durable, data,
         * metadata and directory entries, with one journal commit and one
         * disk cache flush; per-file syncs would flush the cache once per
         * file.  It also flushes whatever else is dirty on that file
         * system: best on a file system of its own.
         */

        if (syncfs(g->spool->queue_fd) == 0) {
            return;
        }

        err = errno;
        goto failed;
    }

    /*
     * Start the writeback of every file first: with delayed allocation the
     * blocks are allocated now, all in the running journal transaction, so
     * the first fdatasync() below commits every file of the group and the
     * others find their transaction committed already.  Syncing one file
     * after the other without this costs one journal commit each.
     */

    for (q = ngx_queue_head(&g->writers);
         q != ngx_queue_sentinel(&g->writers);
         q = ngx_queue_next(q))
    {
        w = ngx_queue_data(q, ngx_relay_spool_writer_t, queue);

        if (w->err == 0) {
            (void) sync_file_range(w->fd, 0, 0, SYNC_FILE_RANGE_WRITE);
        }
    }

#endif

    for (q = ngx_queue_head(&g->writers);
         q != ngx_queue_sentinel(&g->writers);
         q = ngx_queue_next(q))
    {
        w = ngx_queue_data(q, ngx_relay_spool_writer_t, queue);

        if (w->err == 0 && fdatasync(w->fd) == -1) {
            w->err = errno;
        }
    }

    if (fsync(g->spool->queue_fd) == 0) {
        return;
    }

    err = errno;

#if (NGX_LINUX)
failed:
#endif

    for (q = ngx_queue_head(&g->writers);
         q != ngx_queue_sentinel(&g->writers);
         q = ngx_queue_next(q))
    {
        w = ngx_queue_data(q, ngx_relay_spool_writer_t, queue);

        if (w->err == 0) {
            w->err = err;
        }
    }
}


static void
ngx_relay_spool_group_done(ngx_event_t *ev)
{
    ngx_thread_task_t  *task = ev->data;

    ngx_relay_spool_t        *sp;
    ngx_relay_spool_group_t  *g;

    g = task->ctx;
    sp = g->spool;
    sp->commit_busy--;

    ngx_relay_metrics_sync(g->journal ? NGX_RELAY_METRICS_SYNC_JOURNAL
                           : sp->sync == NGX_RELAY_SYNC_FILES
                           ? NGX_RELAY_METRICS_SYNC_FILES
                           : NGX_RELAY_METRICS_SYNC_SYNCFS, g->started);

    if (g->journal) {
        ngx_relay_spool_journal_done(g);
        ngx_free(task);
        return;
    }

    /* the next group gathered while this one was on the disk */

    ngx_relay_spool_group_start(sp);
    ngx_relay_spool_group_end(g);

    ngx_free(task);
}


static void
ngx_relay_spool_group_end(ngx_relay_spool_group_t *g)
{
    ngx_queue_t               *q;
    ngx_relay_spool_writer_t  *w;

    while (!ngx_queue_empty(&g->writers)) {
        q = ngx_queue_head(&g->writers);
        ngx_queue_remove(q);

        w = ngx_queue_data(q, ngx_relay_spool_writer_t, queue);

        if (w->err) {
            ngx_log_error(NGX_LOG_CRIT, w->log, w->err,
                          "commit of queue file %V failed", &w->id);
        }

        ngx_relay_spool_finish(w, w->err ? NGX_ERROR : NGX_OK,
                               g->journal ? &g->slot : NULL);
    }
}


/*
 * A group goes to the journal when the journal is ready, has room, and
 * every member is still whole in memory (small messages; a large one that
 * was written out as it came syncs its file).
 */

static void
ngx_relay_spool_journal_reserve(ngx_relay_spool_group_t *g)
{
    size_t                     len;
    ngx_queue_t               *q;
    ngx_relay_spool_t         *sp;
    ngx_relay_spool_writer_t  *w;

    sp = g->spool;

    if (sp->sync != NGX_RELAY_SYNC_JOURNAL || !sp->journal.ready) {
        return;
    }

    len = 0;

    for (q = ngx_queue_head(&g->writers);
         q != ngx_queue_sentinel(&g->writers);
         q = ngx_queue_next(q))
    {
        w = ngx_queue_data(q, ngx_relay_spool_writer_t, queue);

        if (w->written || w->fd != NGX_INVALID_FILE || w->err) {
            return;
        }

        len += ngx_relay_journal_record_size(w->id.len, w->pos - w->buf);
    }

    if (ngx_relay_journal_reserve(&sp->journal, len, &g->slot) != NGX_OK) {
        return;
    }

    g->journal = 1;

    for (q = ngx_queue_head(&g->writers);
         q != ngx_queue_sentinel(&g->writers);
         q = ngx_queue_next(q))
    {
        w = ngx_queue_data(q, ngx_relay_spool_writer_t, queue);
        w->hollow = ngx_relay_spool_may_stay_hollow(w);
    }
}


/*
 * A message of a journal group whose buffer will stay for its first
 * attempt (as in ngx_relay_spool_keep_for_attempt()) need not be written:
 * its record has it, and most such messages are delivered at once.  A
 * node that does not deliver remote mail keeps it queued and lets go of
 * it at once: written in the group's task, not in one more.
 */

static ngx_uint_t
ngx_relay_spool_may_stay_hollow(ngx_relay_spool_writer_t *w)
{
    size_t              more;
    ngx_relay_spool_t  *sp;

    sp = w->spool;
    more = (w->pos - w->buf) - ngx_min(w->kept, (size_t) (w->pos - w->buf));

    return sp->delivers && ngx_relay_spool_may_keep(w, more);
}


/*
 * The rule of the first attempts' share: "more" octets of the writer's
 * buffer may stay for its first attempt.
 */

static ngx_uint_t
ngx_relay_spool_may_keep(ngx_relay_spool_writer_t *w, size_t more)
{
    ngx_relay_spool_t  *sp;

    sp = w->spool;

    return sp->queued != NULL && !w->transform_failed
           && sp->kept + more <= sp->memory / 2;
}


/*
 * Thread side: each queue file is written, not synced; its copy goes into
 * the journal, and one fdatasync() of the journal makes the group durable.
 */

static void
ngx_relay_spool_journal_thread(ngx_relay_spool_group_t *g)
{
    size_t                     len, pad;
    u_char                    *hdr, *hdrs;
    ngx_err_t                  err;
    ngx_uint_t                 n, niov;
    ngx_queue_t               *q;
    struct iovec              *iov;
    ngx_relay_spool_writer_t  *w;

    static u_char  zeros[8];

    n = 0;

    for (q = ngx_queue_head(&g->writers);
         q != ngx_queue_sentinel(&g->writers);
         q = ngx_queue_next(q))
    {
        n++;
    }

    err = 0;
    niov = 0;

    iov = malloc(n * 4 * sizeof(struct iovec));
    hdrs = malloc(n * NGX_RELAY_JOURNAL_RECORD_LEN);

    if (iov == NULL || hdrs == NULL) {
        err = NGX_ENOMEM;
        goto append;                     /* the next groups wait for us */
    }

    hdr = hdrs;

    for (q = ngx_queue_head(&g->writers);
         q != ngx_queue_sentinel(&g->writers);
         q = ngx_queue_next(q))
    {
        w = ngx_queue_data(q, ngx_relay_spool_writer_t, queue);

        len = w->pos - w->buf;            /* the whole file, still in buf */

        if ((w->hollow ? ngx_relay_spool_make_hollow(w)
                       : ngx_relay_spool_put(w))
            == NGX_OK)
        {
            ngx_relay_journal_record_header(hdr, g->slot.nonce, &w->id,
                                            w->buf, len);
            g->records++;

        } else {
            /* its client gets a 4xx; its place is kept, without a hole */
            ngx_relay_journal_pad_header(hdr, g->slot.nonce, w->id.len, len);
        }

        pad = ngx_relay_journal_record_size(w->id.len, len)
              - NGX_RELAY_JOURNAL_RECORD_LEN - w->id.len - len;

        iov[niov].iov_base = hdr;
        iov[niov++].iov_len = NGX_RELAY_JOURNAL_RECORD_LEN;
        iov[niov].iov_base = w->id.data;
        iov[niov++].iov_len = w->id.len;
        iov[niov].iov_base = w->buf;
        iov[niov++].iov_len = len;

        if (pad) {
            iov[niov].iov_base = zeros;
            iov[niov++].iov_len = pad;
        }

        hdr += NGX_RELAY_JOURNAL_RECORD_LEN;
    }

append:

    if (ngx_relay_journal_append(&g->spool->journal, &g->slot, iov,
                                 err ? 0 : niov, &err)
        == NGX_OK
        && err == 0)
    {
        free(iov);
        free(hdrs);
        return;
    }

    free(iov);
    free(hdrs);

    g->records = 0;
    g->journal_failed = 1;

    for (q = ngx_queue_head(&g->writers);
         q != ngx_queue_sentinel(&g->writers);
         q = ngx_queue_next(q))
    {
        w = ngx_queue_data(q, ngx_relay_spool_writer_t, queue);

        if (w->err == 0) {
            w->err = err ? err : EIO;
        }
    }
}


/* the journal has the group: "250" now, and the scheduler gets them */

static void
ngx_relay_spool_journal_done(ngx_relay_spool_group_t *g)
{
    ngx_relay_spool_t  *sp;

    sp = g->spool;

    /*
     * The segment's accounts first; sessions that answer and commit again
     * meanwhile start or join a later group.
     */

    ngx_relay_journal_written(&sp->journal, g->slot.segment, g->records,
                              g->journal_failed);

    ngx_relay_spool_group_end(g);

    sp->journal_busy--;

    ngx_relay_spool_group_start(sp);
}


/*
 * The writer's end: tell the session (if it is still there), then hand a
 * durable message to the scheduler, which owns it from now on.  A message
 * that failed is removed: its client got a 4xx and will send it again.
 */

static void
ngx_relay_spool_finish(ngx_relay_spool_writer_t *w, ngx_int_t rc,
    ngx_relay_journal_slot_t *slot)
{
    ngx_relay_spool_t  *sp;

    sp = w->spool;

    if (rc != NGX_OK) {
        w->hollow = 0;                   /* the file goes, content or not */
    }

    if (w->handler) {
        w->handler(w, rc);
    }

    if (rc == NGX_OK && slot) {

        /*
         * In the journal: the queue file has it all.  The buffer, the
         * whole file, stays for the message's first attempt if the
         * worker's budget allows (at most half of it: new messages keep
         * the rest), which then sends the body from memory.
         */

        ngx_relay_spool_keep_for_attempt(w);

        w->journaled = 1;
        w->journal_segment = slot->segment;
        w->journal_nonce = slot->nonce;

        if (w->hollow) {
            ngx_queue_insert_tail(&sp->hollow[slot->segment],
                                  &w->hollow_link);
            w->hollow_linked = 1;
        }
    }

    if (rc == NGX_OK && sp->queued) {
        sp->queued(sp, w);
        return;
    }

    ngx_relay_spool_abort(w);
}


/* a refused or failed message: remove what reached the disk, in a thread */

void
ngx_relay_spool_abort(ngx_relay_spool_writer_t *w)
{
    if (w->busy) {
        w->handler = NULL;
        w->want = ngx_relay_spool_want_abort;
        return;
    }

    if (w->fd == NGX_INVALID_FILE
        || ngx_relay_spool_post(w, ngx_relay_spool_discard_thread,
                                ngx_relay_spool_discard_done)
           != NGX_OK)
    {
        /* no file, or unlocked debris that the queue scan removes */
        ngx_relay_spool_release(w);
    }
}


static void
ngx_relay_spool_discard_thread(void *data, ngx_log_t *log)
{
    ngx_relay_spool_writer_t  *w = data;

    u_char  name[NGX_RELAY_ID_LEN + 1];

    ngx_memcpy(name, w->id.data, w->id.len);
    name[w->id.len] = '\0';

    (void) unlinkat(w->spool->queue_fd, (char *) name, 0);
}


static void
ngx_relay_spool_discard_done(ngx_event_t *ev)
{
    ngx_relay_spool_release(ev->data);
}


void
ngx_relay_spool_release(ngx_relay_spool_writer_t *w)
{
    if (w->pins) {
        w->release_wanted = 1;           /* a checkpoint writes from buf */
        return;
    }

    /* no thread has the writer now: hollow is read without the mutex */

    if (w->hollow && w->fd != NGX_INVALID_FILE) {

        /* its lock goes: the file must hold what the record holds */

        if (ngx_relay_spool_post(w, ngx_relay_spool_fill_thread,
                                 ngx_relay_spool_fill_done)
            != NGX_OK)
        {
            /* as a failed write: the checkpoint writes it, then releases */

            ngx_log_error(NGX_LOG_ALERT, w->log, 0,
                          "queue file %V left to the checkpoint: no thread "
                          "task", &w->id);
            w->release_wanted = 1;
        }

        return;
    }

    ngx_relay_spool_unlink_hollow(w);

    if (w->fd != NGX_INVALID_FILE && close(w->fd) == -1) {
        ngx_log_error(NGX_LOG_ALERT, w->log, ngx_errno,
                      "close() of queue file %V failed", &w->id);
    }

    ngx_relay_spool_free_buf(w);
    ngx_destroy_pool(w->pool);
}


/*
 * The scheduler removed the message's queue file: its journal record needs
 * no checkpoint sync for it.
 */

void
ngx_relay_spool_gone(ngx_relay_spool_writer_t *w)
{
    if (w->journaled) {
        ngx_relay_journal_gone(&w->spool->journal, w->journal_segment,
                               w->journal_nonce);
    }
}


/*
 * Hollow queue files.  The journal thread makes the file and takes its
 * lock, and the record in the journal carries the content.  Whichever
 * thread first needs the content in the file writes it, under the
 * spool's fill mutex so that its marks never cross another's write:
 *   - the attempt's record thread, before the marks of recipients left
 *     pending or a DSN's copy of the message;
 *   - the attempt's open thread (local recipients, a held message);
 *   - the release of the writer, before its lock goes;
 *   - the checkpoint of the record's segment, for those still there;
 *   - the worker's exit.
 * A file delivered in its first attempt is unlinked hollow.
 */

static ngx_int_t
ngx_relay_spool_make_hollow(ngx_relay_spool_writer_t *w)
{
    if (w->err) {
        return NGX_ERROR;
    }

    ngx_relay_spool_open_thread(w, NULL);

    if (w->err) {
        return NGX_ERROR;
    }

    w->written = w->pos - w->buf;
    w->pos = w->buf;

    return NGX_OK;
}


/* thread-safe: the content into the file, once */

ngx_int_t
ngx_relay_spool_fill(ngx_relay_spool_writer_t *w, ngx_err_t *err)
{
    ngx_int_t  rc;

    rc = NGX_OK;

    /* w->err too is written under the mutex: threads may race to fill */

    (void) pthread_mutex_lock(&w->spool->fill_mutex);

    if (w->hollow) {
        rc = ngx_relay_spool_pwrite(w, w->buf, (size_t) w->written, 0);

        if (rc == NGX_OK) {
            w->hollow = 0;

        } else {
            *err = w->err;
        }
    }

    (void) pthread_mutex_unlock(&w->spool->fill_mutex);

    return rc;
}


/* thread-safe: the file was unlinked, its content is needed nowhere */

void
ngx_relay_spool_removed(ngx_relay_spool_writer_t *w)
{
    (void) pthread_mutex_lock(&w->spool->fill_mutex);
    w->hollow = 0;
    (void) pthread_mutex_unlock(&w->spool->fill_mutex);
}


static void
ngx_relay_spool_fill_thread(void *data, ngx_log_t *log)
{
    ngx_relay_spool_writer_t  *w = data;

    ngx_err_t  err;

    (void) ngx_relay_spool_fill(w, &err);     /* a failure is in w->err */
}


static void
ngx_relay_spool_fill_done(ngx_event_t *ev)
{
    ngx_relay_spool_writer_t  *w = ev->data;

    w->busy = 0;

    if (w->hollow) {

        /*
         * The writer stays, with its lock and its place in the segment's
         * list: the checkpoint writes it or fails (and does not retire the
         * record), and its end releases the writer.
         */

        ngx_log_error(NGX_LOG_CRIT, w->log, w->err,
                      "write of queue file %V failed, its journal record "
                      "is kept", &w->id);
        w->release_wanted = 1;
        return;
    }

    ngx_relay_spool_release(w);
}


static void
ngx_relay_spool_unlink_hollow(ngx_relay_spool_writer_t *w)
{
    if (w->hollow_linked) {
        ngx_queue_remove(&w->hollow_link);
        w->hollow_linked = 0;
    }
}


/* event loop: the writers whose records the checkpoint retires */

static ngx_int_t
ngx_relay_spool_pin_live(void *data, ngx_uint_t segment)
{
    ngx_relay_spool_t  *sp = data;

    ngx_uint_t                 n;
    ngx_queue_t               *q;
    ngx_relay_spool_writer_t  *w;

    n = 0;

    for (q = ngx_queue_head(&sp->hollow[segment]);
         q != ngx_queue_sentinel(&sp->hollow[segment]);
         q = ngx_queue_next(q))
    {
        n++;
    }

    sp->filling = NULL;
    sp->nfilling = 0;

    if (n == 0) {
        return NGX_OK;
    }

    sp->filling = ngx_alloc(n * sizeof(ngx_relay_spool_writer_t *), sp->log);
    if (sp->filling == NULL) {
        return NGX_ERROR;
    }

    for (q = ngx_queue_head(&sp->hollow[segment]);
         q != ngx_queue_sentinel(&sp->hollow[segment]);
         q = ngx_queue_next(q))
    {
        w = ngx_queue_data(q, ngx_relay_spool_writer_t, hollow_link);
        w->pins++;
        sp->filling[sp->nfilling++] = w;
    }

    return NGX_OK;
}


/* the checkpoint's thread, before its syncfs() */

static ngx_int_t
ngx_relay_spool_fill_live(void *data, ngx_err_t *err)
{
    ngx_relay_spool_t  *sp = data;

    ngx_uint_t  i;

    for (i = 0; i < sp->nfilling; i++) {
        if (ngx_relay_spool_fill(sp->filling[i], err) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


static void
ngx_relay_spool_unpin_live(void *data, ngx_uint_t filled)
{
    ngx_relay_spool_t  *sp = data;

    ngx_uint_t                 i;
    ngx_relay_spool_writer_t  *w;

    for (i = 0; i < sp->nfilling; i++) {
        w = sp->filling[i];
        w->pins--;

        if (filled) {
            ngx_relay_spool_unlink_hollow(w);   /* none hollow now */
        }

        if (w->pins == 0 && w->release_wanted && !w->busy) {
            w->release_wanted = 0;
            ngx_relay_spool_release(w);
        }
    }

    ngx_free(sp->filling);
    sp->filling = NULL;
    sp->nfilling = 0;
}


/*
 * The worker's end, its threads gone: what is still hollow is written
 * now; a file that cannot be keeps the journal for the recovery.
 */

static void
ngx_relay_spool_fill_at_exit(ngx_relay_spool_t *sp)
{
    ngx_err_t                  err;
    ngx_uint_t                 i;
    ngx_queue_t               *q, *next;
    ngx_relay_spool_writer_t  *w;

    for (i = 0; i < 2; i++) {
        for (q = ngx_queue_head(&sp->hollow[i]);
             q != ngx_queue_sentinel(&sp->hollow[i]);
             q = next)
        {
            next = ngx_queue_next(q);
            w = ngx_queue_data(q, ngx_relay_spool_writer_t, hollow_link);

            if (ngx_relay_spool_fill(w, &err) != NGX_OK) {
                ngx_log_error(NGX_LOG_CRIT, sp->log, err,
                              "write of queue file %V failed at exit",
                              &w->id);
                continue;
            }

            ngx_relay_spool_unlink_hollow(w);
        }
    }
}


/*
 * Thread side: an incomplete queue file, old, whose lock the caller took:
 * a session's debris, or a hollow file whose worker died.  The journals
 * of dead workers are recovered first (under journal/'s lock), which
 * writes such a file; NGX_DECLINED: complete now, not debris.
 */

ngx_int_t
ngx_relay_spool_debris(ngx_relay_spool_t *sp, ngx_fd_t fd, u_char *name)
{
    ngx_err_t            err;
    ngx_relay_queued_t   q;

    if (sp->journal.dir_fd != -1) {
        (void) ngx_relay_journal_recover(sp->journal.dir_fd, sp->queue_fd,
                                         sp->log);
    }

    if (ngx_relay_spool_read(fd, &q, &err) != NGX_DECLINED) {
        ngx_relay_spool_free(&q);
        return NGX_DECLINED;
    }

    return (unlinkat(sp->queue_fd, (char *) name, 0) == 0) ? NGX_OK
                                                            : NGX_ERROR;
}


/*
 * Opens queue/<name> and takes its lock without waiting.  NGX_INVALID_FILE
 * with *err == NGX_EAGAIN: another process holds it; with *err == 0: it is
 * gone.
 */

ngx_fd_t
ngx_relay_spool_open_locked(ngx_relay_spool_t *sp, u_char *name,
    ngx_err_t *err)
{
    int  fd, e;

    *err = 0;

    switch (relay_queue_open_locked(sp->queue_fd, (char *) name, &fd, &e)) {

    case RELAY_QUEUE_OK:
        return fd;

    case RELAY_QUEUE_BUSY:
        *err = NGX_EAGAIN;
        return NGX_INVALID_FILE;

    case RELAY_QUEUE_GONE:
        return NGX_INVALID_FILE;

    default:
        *err = e;
        return NGX_INVALID_FILE;
    }
}


/*
 * Reading queue files back and rewriting their fixed-width fields, in
 * thread-pool tasks: the format is lib/relay_queue.c's; these only turn
 * its results into nginx's.  NGX_DECLINED: no trailer (incomplete).
 */

ngx_int_t
ngx_relay_spool_read(ngx_fd_t fd, ngx_relay_queued_t *q, ngx_err_t *err)
{
    int  rc, e;

    rc = relay_queue_read(fd, q, &e);

    return ngx_relay_spool_read_result(rc, e, err);
}


/* the same from the queue file's octets in memory, as its writer has them */

ngx_int_t
ngx_relay_spool_read_memory(ngx_str_t *file, ngx_relay_queued_t *q,
    ngx_err_t *err)
{
    int  rc, e;

    rc = relay_queue_read_memory(file->data, file->len, ngx_time(), q, &e);

    return ngx_relay_spool_read_result(rc, e, err);
}


static ngx_int_t
ngx_relay_spool_read_result(int rc, int e, ngx_err_t *err)
{
    *err = 0;

    switch (rc) {

    case RELAY_QUEUE_OK:
        return NGX_OK;

    case RELAY_QUEUE_INCOMPLETE:
        return NGX_DECLINED;

    default:
        *err = e;
        return NGX_ERROR;
    }
}


void
ngx_relay_spool_free(ngx_relay_queued_t *q)
{
    relay_queue_free(q);
}


ngx_int_t
ngx_relay_spool_mark(ngx_fd_t fd, ngx_relay_queued_rcpt_t *r, u_char state,
    ngx_err_t *err)
{
    return ngx_relay_spool_result(relay_queue_set_state(fd, r, state, err));
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


/* the last attempt's error, one line, cut to fit; older files: nothing */

ngx_int_t
ngx_relay_spool_set_error(ngx_fd_t fd, ngx_relay_queued_t *q, u_char *text,
    size_t len, ngx_err_t *err)
{
    int  rc;

    rc = relay_queue_set_error(fd, q, text, len, err);

    return (rc == RELAY_QUEUE_ABSENT) ? NGX_OK : ngx_relay_spool_result(rc);
}


/* the delay DSN went out (queue files without the line: an error) */

ngx_int_t
ngx_relay_spool_mark_delay_warned(ngx_fd_t fd, ngx_relay_queued_t *q,
    ngx_err_t *err)
{
    int  rc;

    rc = relay_queue_set_delay_warned(fd, q, err);

    if (rc == RELAY_QUEUE_ABSENT) {
        *err = EINVAL;
    }

    return ngx_relay_spool_result(rc);
}


/* the next attempt time and the attempt count */

ngx_int_t
ngx_relay_spool_schedule(ngx_fd_t fd, ngx_relay_queued_t *q, time_t next,
    ngx_uint_t attempts, ngx_err_t *err)
{
    int  rc;

    rc = relay_queue_set_schedule(fd, q, next,
                                  (unsigned) ngx_min(attempts, 9999), err);

    if (rc == RELAY_QUEUE_ABSENT) {
        *err = EINVAL;
    }

    return ngx_relay_spool_result(rc);
}


static ngx_int_t
ngx_relay_spool_result(int rc)
{
    return (rc == RELAY_QUEUE_OK) ? NGX_OK : NGX_ERROR;
}


/*
 * Thread side: the file's mtime becomes its next attempt, so a scan after a
 * restart can take the due files first without opening any.  The last
 * write to the file, or it would move the time back to now.
 */

ngx_int_t
ngx_relay_spool_touch(ngx_fd_t fd, time_t next)
{
    struct timespec  ts[2];

    ts[0].tv_sec = 0;
    ts[0].tv_nsec = UTIME_OMIT;
    ts[1].tv_sec = next;
    ts[1].tv_nsec = 0;

    return futimens(fd, ts) == 0 ? NGX_OK : NGX_ERROR;
}
