
/*
 * Copyright (C) The relay authors
 */


/*
 * Schedule snapshots: what each worker's schedule knew of its queue files,
 * so that a restart after a crash does not read a million headers again.
 *
 * A worker writes its snapshot every few minutes while its schedule
 * changes (schedule/<worker>, through a temporary file and rename()).  It
 * is a hint, never a source of truth: at start a record is taken only if
 * its queue file still has the inode and the change time (ns) that the
 * record names, and the change time is taken before a header is read or
 * after an attempt's last write under the file's lock, so any later write
 * to the file makes the record stale.  Everything else (files the
 * snapshot does not name, changed ones, a snapshot of other local domains
 * or a damaged one) is read from its header, as without a snapshot.
 *
 * Nothing is synced: a snapshot lost or torn by a power failure only
 * costs the reads it would have saved.  Each slice of records carries its
 * CRC, and a record is used only if it is whole.
 *
 *   header:  "RLYSNAP1" | u32 fingerprint | u32 slices | u64 records
 *            | u32 workers | u32 worker (the writer's share)
 *   slice:   u32 length | u32 crc32 | records
 *   record:  u8 id length | id | u64 ino | i64 ctime | i64 arrival
 *            | u32 pending | u8 flags | u8 domains | (u8 length | domain)*
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>
#include <ngx_relay.h>
#include <ngx_relay_spool.h>
#include <ngx_relay_snapshot.h>


#define NGX_RELAY_SNAPSHOT_MAGIC    "RLYSNAP1"
#define NGX_RELAY_SNAPSHOT_HEADER   32
#define NGX_RELAY_SNAPSHOT_SLICE    8           /* length and crc */
#define NGX_RELAY_SNAPSHOT_FIXED    30          /* a record without id, names */
#define NGX_RELAY_SNAPSHOT_BUF      (256 * 1024)
#define NGX_RELAY_SNAPSHOT_TMP_AGE  600         /* s: a dead writer's */
#define NGX_RELAY_SNAPSHOT_NAME     (2 * NGX_INT_T_LEN + 8)


static void ngx_relay_snapshot_thread(void *data, ngx_log_t *log);
static ngx_int_t ngx_relay_snapshot_write(ngx_relay_snapshot_writer_t *w);
static ngx_int_t ngx_relay_snapshot_rename(ngx_relay_snapshot_writer_t *w);
static void ngx_relay_snapshot_tmp_name(ngx_relay_snapshot_writer_t *w,
    u_char *name);
static void ngx_relay_snapshot_done(ngx_event_t *ev);
static ngx_int_t ngx_relay_snapshot_post(ngx_relay_snapshot_writer_t *w,
    ngx_uint_t step);
static u_char *ngx_relay_snapshot_read_file(int dir_fd, char *name,
    ngx_uint_t workers, ngx_uint_t worker, size_t *size);
static ngx_uint_t ngx_relay_snapshot_walk(ngx_relay_snapshot_t *sn,
    u_char *file, size_t size, uint32_t fingerprint, ngx_uint_t workers,
    ngx_uint_t worker);
static size_t ngx_relay_snapshot_record_len(u_char *p, u_char *last);
static ngx_int_t ngx_relay_snapshot_index(ngx_relay_snapshot_t *sn,
    ngx_uint_t records);
static void ngx_relay_snapshot_insert(ngx_relay_snapshot_t *sn, u_char *p);
static u_char **ngx_relay_snapshot_slot(ngx_relay_snapshot_t *sn, u_char *id,
    size_t len);
static u_char *ngx_relay_snapshot_int(u_char *p, uint64_t v, size_t n);
static uint64_t ngx_relay_snapshot_get(u_char *p, size_t n);


/* a record removed from the index: probing goes on past it */

static u_char  ngx_relay_snapshot_gone;


/* ---------------------------------------------------------------- writing */


void
ngx_relay_snapshot_begin(ngx_relay_snapshot_writer_t *w)
{
    w->fd = NGX_INVALID_FILE;
    w->offset = NGX_RELAY_SNAPSHOT_HEADER;
    w->records = 0;
    w->slices = 0;
    w->len = 0;
    w->err = 0;
}


ngx_int_t
ngx_relay_snapshot_add(ngx_relay_snapshot_writer_t *w,
    ngx_relay_snapshot_rec_t *r)
{
    u_char      *p;
    size_t       need, size;
    ngx_uint_t   i;

    need = 1 + r->id_len + NGX_RELAY_SNAPSHOT_FIXED;

    for (i = 0; i < r->ndomains; i++) {
        need += 1 + r->domains[i]->len;
    }

    if (w->len + need > w->size) {
        size = ngx_max(w->size * 2, NGX_RELAY_SNAPSHOT_BUF);
        size = ngx_max(size, w->len + need);

        p = ngx_alloc(NGX_RELAY_SNAPSHOT_SLICE + size, w->log);
        if (p == NULL) {
            return NGX_ERROR;
        }

        if (w->buf) {
            ngx_memcpy(p, w->buf, NGX_RELAY_SNAPSHOT_SLICE + w->len);
            ngx_free(w->buf);
        }

        w->buf = p;
        w->size = size;
    }

    p = w->buf + NGX_RELAY_SNAPSHOT_SLICE + w->len;

    *p++ = (u_char) r->id_len;
    p = ngx_cpymem(p, r->id, r->id_len);
    p = ngx_relay_snapshot_int(p, r->ino, 8);
    p = ngx_relay_snapshot_int(p, (uint64_t) r->ctime, 8);
    p = ngx_relay_snapshot_int(p, (uint64_t) r->arrival, 8);
    p = ngx_relay_snapshot_int(p, r->pending, 4);
    *p++ = (u_char) r->flags;
    *p++ = (u_char) r->ndomains;

    for (i = 0; i < r->ndomains; i++) {
        *p++ = (u_char) r->domains[i]->len;
        p = ngx_cpymem(p, r->domains[i]->data, r->domains[i]->len);
    }

    w->len += need;
    w->records++;

    return NGX_OK;
}


/* the slice made so far goes to the file; the handler hears when */

ngx_int_t
ngx_relay_snapshot_flush(ngx_relay_snapshot_writer_t *w)
{
    return ngx_relay_snapshot_post(w, NGX_RELAY_SNAPSHOT_WRITE);
}


/* keep: the file replaces the worker's snapshot; else it goes */

ngx_int_t
ngx_relay_snapshot_finish(ngx_relay_snapshot_writer_t *w, ngx_uint_t keep)
{
    return ngx_relay_snapshot_post(w, keep ? NGX_RELAY_SNAPSHOT_KEEP
                                           : NGX_RELAY_SNAPSHOT_DROP);
}


static ngx_int_t
ngx_relay_snapshot_post(ngx_relay_snapshot_writer_t *w, ngx_uint_t step)
{
    if (w->task == NULL) {
        w->task = ngx_calloc(sizeof(ngx_thread_task_t), w->log);
        if (w->task == NULL) {
            return NGX_ERROR;
        }

        w->task->ctx = w;
        w->task->handler = ngx_relay_snapshot_thread;
        w->task->event.handler = ngx_relay_snapshot_done;
        w->task->event.data = w;
        w->task->event.log = w->log;
    }

    w->step = step;

    if (ngx_thread_task_post(w->thread_pool, w->task) != NGX_OK) {
        return NGX_ERROR;
    }

    w->busy = 1;

    return NGX_OK;
}


static void
ngx_relay_snapshot_thread(void *data, ngx_log_t *log)
{
    ngx_relay_snapshot_writer_t  *w = data;

    u_char  name[NGX_RELAY_SNAPSHOT_NAME];

    switch (w->step) {

    case NGX_RELAY_SNAPSHOT_WRITE:
        if (ngx_relay_snapshot_write(w) != NGX_OK) {
            w->err = ngx_errno ? ngx_errno : EIO;
        }

        return;

    case NGX_RELAY_SNAPSHOT_KEEP:
        if (w->err == 0 && ngx_relay_snapshot_rename(w) == NGX_OK) {
            return;
        }

        w->err = w->err ? w->err : ngx_errno;

        /* fall through */

    default:
        if (w->fd != NGX_INVALID_FILE) {
            (void) close(w->fd);
            w->fd = NGX_INVALID_FILE;
        }

        ngx_relay_snapshot_tmp_name(w, name);
        (void) unlinkat(w->dir_fd, (char *) name, 0);
        return;
    }
}


static ngx_int_t
ngx_relay_snapshot_write(ngx_relay_snapshot_writer_t *w)
{
    u_char   name[NGX_RELAY_SNAPSHOT_NAME];
    size_t   len;
    ssize_t  n;

    if (w->fd == NGX_INVALID_FILE) {
        ngx_relay_snapshot_tmp_name(w, name);

        w->fd = openat(w->dir_fd, (char *) name,
                       O_WRONLY|O_CREAT|O_TRUNC|O_CLOEXEC, 0600);
        if (w->fd == NGX_INVALID_FILE) {
            return NGX_ERROR;
        }
    }

    if (w->len == 0) {
        return NGX_OK;
    }

    (void) ngx_relay_snapshot_int(w->buf, w->len, 4);
    (void) ngx_relay_snapshot_int(w->buf + 4,
                                  ngx_crc32_long(w->buf
                                                 + NGX_RELAY_SNAPSHOT_SLICE,
                                                 w->len), 4);

    len = NGX_RELAY_SNAPSHOT_SLICE + w->len;

    n = pwrite(w->fd, w->buf, len, w->offset);
    if (n != (ssize_t) len) {
        if (n >= 0) {
            ngx_set_errno(NGX_ENOSPC);
        }

        return NGX_ERROR;
    }

    w->offset += len;
    w->slices++;
    w->len = 0;

    return NGX_OK;
}


static ngx_int_t
ngx_relay_snapshot_rename(ngx_relay_snapshot_writer_t *w)
{
    u_char  *p, header[NGX_RELAY_SNAPSHOT_HEADER];
    u_char   tmp[NGX_RELAY_SNAPSHOT_NAME], name[NGX_RELAY_SNAPSHOT_NAME];

    /* the last slice */

    if (ngx_relay_snapshot_write(w) != NGX_OK) {
        return NGX_ERROR;
    }

    ngx_memzero(header, sizeof(header));

    p = ngx_cpymem(header, NGX_RELAY_SNAPSHOT_MAGIC,
                   sizeof(NGX_RELAY_SNAPSHOT_MAGIC) - 1);
    p = ngx_relay_snapshot_int(p, w->fingerprint, 4);
    p = ngx_relay_snapshot_int(p, w->slices, 4);
    p = ngx_relay_snapshot_int(p, w->records, 8);
    p = ngx_relay_snapshot_int(p, w->workers, 4);
    (void) ngx_relay_snapshot_int(p, w->worker, 4);

    if (pwrite(w->fd, header, sizeof(header), 0) != (ssize_t) sizeof(header)) {
        return NGX_ERROR;
    }

    if (close(w->fd) == -1) {
        w->fd = NGX_INVALID_FILE;
        return NGX_ERROR;
    }

    w->fd = NGX_INVALID_FILE;

    ngx_relay_snapshot_tmp_name(w, tmp);
    ngx_sprintf(name, "%ui%Z", w->worker);

    return renameat(w->dir_fd, (char *) tmp, w->dir_fd, (char *) name) == 0
           ? NGX_OK : NGX_ERROR;
}


/*
 * Made by one process: during a reload the old and the new worker of a
 * slot may both be writing.  A killed writer's file goes at a later start.
 */

static void
ngx_relay_snapshot_tmp_name(ngx_relay_snapshot_writer_t *w, u_char *name)
{
    ngx_sprintf(name, ".%ui.%P.tmp%Z", w->worker, ngx_pid);
}


static void
ngx_relay_snapshot_done(ngx_event_t *ev)
{
    ngx_relay_snapshot_writer_t  *w = ev->data;

    ngx_int_t  rc;

    w->busy = 0;
    rc = w->err ? NGX_ERROR : NGX_OK;

    if (w->step != NGX_RELAY_SNAPSHOT_WRITE) {
        ngx_free(w->buf);
        w->buf = NULL;
        w->size = 0;
        w->len = 0;
    }

    w->handler(w, rc);
}


/* ---------------------------------------------------------------- reading */


/*
 * Thread side, at start: every worker's snapshot (the shares may have
 * changed with worker_processes), keeping the records of our share.
 */

ngx_relay_snapshot_t *
ngx_relay_snapshot_load(int dir_fd, uint32_t fingerprint, ngx_uint_t workers,
    ngx_uint_t worker, ngx_log_t *log)
{
    DIR                   *dir;
    time_t                 old;
    u_char                *file, **files;
    size_t                 size;
    ngx_uint_t             i, records;
    struct stat            st;
    struct dirent         *de;
    ngx_relay_snapshot_t  *sn;

    sn = calloc(1, sizeof(ngx_relay_snapshot_t));
    if (sn == NULL) {
        return NULL;
    }

    dir = ngx_relay_spool_opendir(dir_fd);
    if (dir == NULL) {
        free(sn);
        return NULL;
    }

    records = 0;
    old = time(NULL) - NGX_RELAY_SNAPSHOT_TMP_AGE;

    while ((de = readdir(dir)) != NULL) {
        if (de->d_name[0] == '.' && ngx_strstr(de->d_name, ".tmp")
            && fstatat(dir_fd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0
            && st.st_mtime < old)
        {
            (void) unlinkat(dir_fd, de->d_name, 0);
            continue;
        }

        if (de->d_name[0] < '0' || de->d_name[0] > '9'
            || ngx_atoi((u_char *) de->d_name, ngx_strlen(de->d_name))
               == NGX_ERROR)
        {
            continue;
        }

        file = ngx_relay_snapshot_read_file(dir_fd, de->d_name, workers,
                                            worker, &size);
        if (file == NULL) {
            continue;
        }

        files = realloc(sn->files, (sn->nfiles + 1) * sizeof(u_char *));
        if (files == NULL) {
            free(file);
            break;
        }

        sn->files = files;
        sn->files[sn->nfiles++] = file;

        records += ngx_relay_snapshot_walk(NULL, file, size, fingerprint,
                                           workers, worker);
    }

    (void) closedir(dir);

    if (records == 0 || ngx_relay_snapshot_index(sn, records) != NGX_OK) {
        ngx_relay_snapshot_free(sn);
        return NULL;
    }

    for (i = 0; i < sn->nfiles; i++) {
        size = *(size_t *) sn->files[i];
        (void) ngx_relay_snapshot_walk(sn, sn->files[i], size, fingerprint,
                                       workers, worker);
    }

    ngx_log_debug2(NGX_LOG_DEBUG_CORE, log, 0,
                   "relay schedule snapshot: %ui record(s) in %ui file(s)",
                   sn->records, sn->nfiles);

    return sn;
}


/*
 * A file's contents after a size_t with their size.  The file of another
 * share of the same partition has nothing for us: only its header is read.
 */

static u_char *
ngx_relay_snapshot_read_file(int dir_fd, char *name, ngx_uint_t workers,
    ngx_uint_t worker, size_t *size)
{
    int          fd;
    u_char      *file, header[NGX_RELAY_SNAPSHOT_HEADER];
    size_t       done;
    ssize_t      n;
    struct stat  st;

    fd = openat(dir_fd, name, O_RDONLY|O_CLOEXEC);
    if (fd == -1) {
        return NULL;
    }

    if (fstat(fd, &st) == -1 || !S_ISREG(st.st_mode)
        || st.st_size < NGX_RELAY_SNAPSHOT_HEADER)
    {
        (void) close(fd);
        return NULL;
    }

    if (pread(fd, header, sizeof(header), 0) != (ssize_t) sizeof(header)
        || (ngx_relay_snapshot_get(header + 24, 4) == workers
            && ngx_relay_snapshot_get(header + 28, 4) != worker))
    {
        (void) close(fd);
        return NULL;
    }

    file = malloc(sizeof(size_t) + st.st_size);
    if (file == NULL) {
        (void) close(fd);
        return NULL;
    }

    for (done = 0; done < (size_t) st.st_size; done += n) {
        n = pread(fd, file + sizeof(size_t) + done, st.st_size - done, done);
        if (n <= 0) {
            break;
        }
    }

    (void) close(fd);

    *(size_t *) file = done;
    *size = done;

    return file;
}


/*
 * Counts (sn == NULL) or indexes the whole records of our share: the walk
 * stops at a slice whose CRC does not match or a record that overruns.
 */

static ngx_uint_t
ngx_relay_snapshot_walk(ngx_relay_snapshot_t *sn, u_char *file, size_t size,
    uint32_t fingerprint, ngx_uint_t workers, ngx_uint_t worker)
{
    u_char      *p, *last, *end;
    size_t       len;
    uint32_t     crc;
    ngx_uint_t   slices, records;

    p = file + sizeof(size_t);
    last = p + size;

    if (size < NGX_RELAY_SNAPSHOT_HEADER
        || ngx_memcmp(p, NGX_RELAY_SNAPSHOT_MAGIC,
                      sizeof(NGX_RELAY_SNAPSHOT_MAGIC) - 1) != 0
        || ngx_relay_snapshot_get(p + 8, 4) != fingerprint)
    {
        return 0;
    }

    slices = ngx_relay_snapshot_get(p + 12, 4);
    p += NGX_RELAY_SNAPSHOT_HEADER;
    records = 0;

    while (slices-- && (size_t) (last - p) >= NGX_RELAY_SNAPSHOT_SLICE) {
        len = ngx_relay_snapshot_get(p, 4);
        crc = (uint32_t) ngx_relay_snapshot_get(p + 4, 4);
        p += NGX_RELAY_SNAPSHOT_SLICE;

        if (len > (size_t) (last - p) || ngx_crc32_long(p, len) != crc) {
            break;
        }

        end = p + len;

        while (p < end) {
            len = ngx_relay_snapshot_record_len(p, end);
            if (len == 0) {
                return records;
            }

            if (ngx_relay_spool_slot(p + 1, p[0], workers) == worker) {
                records++;

                if (sn) {
                    ngx_relay_snapshot_insert(sn, p);
                }
            }

            p += len;
        }
    }

    return records;
}


/* 0: the record does not fit before "last" */

static size_t
ngx_relay_snapshot_record_len(u_char *p, u_char *last)
{
    u_char      *start;
    ngx_uint_t   n;

    start = p;

    if (p == last || p[0] == 0 || p[0] > NGX_RELAY_ID_LEN
        || (size_t) (last - p) < 1 + (size_t) p[0] + NGX_RELAY_SNAPSHOT_FIXED)
    {
        return 0;
    }

    p += 1 + p[0] + NGX_RELAY_SNAPSHOT_FIXED;
    n = p[-1];

    while (n--) {
        if (p == last || (size_t) (last - p) < 1 + (size_t) p[0]) {
            return 0;
        }

        p += 1 + p[0];
    }

    return p - start;
}


static ngx_int_t
ngx_relay_snapshot_index(ngx_relay_snapshot_t *sn, ngx_uint_t records)
{
    ngx_uint_t  size;

    for (size = 1024; size < records * 2; size *= 2) { /* void */ }

    sn->index = calloc(size, sizeof(u_char *));
    if (sn->index == NULL) {
        return NGX_ERROR;
    }

    sn->index_size = size;

    return NGX_OK;
}


/* the same id twice (two workers' files): the later change wins */

static void
ngx_relay_snapshot_insert(ngx_relay_snapshot_t *sn, u_char *p)
{
    u_char  **slot;

    slot = ngx_relay_snapshot_slot(sn, p + 1, p[0]);

    if (*slot == NULL) {
        *slot = p;
        sn->records++;
        return;
    }

    if ((int64_t) ngx_relay_snapshot_get(p + 1 + p[0] + 8, 8)
        > (int64_t) ngx_relay_snapshot_get(*slot + 1 + (*slot)[0] + 8, 8))
    {
        *slot = p;
    }
}


u_char *
ngx_relay_snapshot_find(ngx_relay_snapshot_t *sn, u_char *id, size_t len)
{
    u_char  **slot;

    slot = ngx_relay_snapshot_slot(sn, id, len);

    return *slot;
}


void
ngx_relay_snapshot_forget(ngx_relay_snapshot_t *sn, u_char *id, size_t len)
{
    u_char  **slot;

    slot = ngx_relay_snapshot_slot(sn, id, len);

    if (*slot) {
        *slot = &ngx_relay_snapshot_gone;
        sn->records--;
    }
}


/* the record's slot, or the empty one where it would go */

static u_char **
ngx_relay_snapshot_slot(ngx_relay_snapshot_t *sn, u_char *id, size_t len)
{
    u_char      *p;
    ngx_uint_t   i, mask;

    mask = sn->index_size - 1;

    for (i = ngx_murmur_hash2(id, len) & mask; /* void */ ;
         i = (i + 1) & mask)
    {
        p = sn->index[i];

        if (p == NULL) {
            return &sn->index[i];
        }

        if (p != &ngx_relay_snapshot_gone && p[0] == len
            && ngx_memcmp(p + 1, id, len) == 0)
        {
            return &sn->index[i];
        }
    }
}


/* a record the walk found whole; domains[], if any, gets its names */

void
ngx_relay_snapshot_decode(u_char *p, ngx_relay_snapshot_rec_t *r,
    ngx_str_t *domains)
{
    ngx_uint_t  i;

    r->id_len = p[0];
    r->id = p + 1;
    p += 1 + p[0];

    r->ino = ngx_relay_snapshot_get(p, 8);
    r->ctime = (int64_t) ngx_relay_snapshot_get(p + 8, 8);
    r->arrival = (time_t) ngx_relay_snapshot_get(p + 16, 8);
    r->pending = (uint32_t) ngx_relay_snapshot_get(p + 24, 4);
    r->flags = p[28];
    r->ndomains = p[29];
    p += NGX_RELAY_SNAPSHOT_FIXED;

    if (domains == NULL) {
        return;                         /* only checking the file's version */
    }

    for (i = 0; i < r->ndomains; i++) {
        domains[i].len = p[0];
        domains[i].data = p + 1;
        r->domains[i] = &domains[i];
        p += 1 + p[0];
    }
}


void
ngx_relay_snapshot_free(ngx_relay_snapshot_t *sn)
{
    ngx_uint_t  i;

    if (sn == NULL) {
        return;
    }

    for (i = 0; i < sn->nfiles; i++) {
        free(sn->files[i]);
    }

    free(sn->files);
    free(sn->index);
    free(sn);
}


/* little-endian integers of n bytes, whatever the alignment */

static u_char *
ngx_relay_snapshot_int(u_char *p, uint64_t v, size_t n)
{
    while (n--) {
        *p++ = (u_char) v;
        v >>= 8;
    }

    return p;
}


static uint64_t
ngx_relay_snapshot_get(u_char *p, size_t n)
{
    uint64_t  v;

    v = 0;

    while (n--) {
        v = (v << 8) | p[n];
    }

    return v;
}
