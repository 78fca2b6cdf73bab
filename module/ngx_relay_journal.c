
/*
 * Copyright (C) The relay authors
 */


/*
 * The acceptance journal: how "250" costs one small overwrite and one
 * fdatasync() instead of a file creation made durable.
 *
 * Each worker owns one journal file, <spool>/journal/<pid>, zero-filled
 * when the worker starts and locked with flock() for its life.  It holds
 * two segments.  A commit group writes its queue files without syncing
 * them and appends one record per message to the active segment: the
 * queue id and the whole queue file.  One fdatasync() of the journal makes
 * the group durable.  The blocks were written at creation, so that sync
 * carries no metadata, no journal commit of the file system and no
 * directory entry: on this kind of disk it costs a fifth of what creating
 * a durable file costs.
 *
 * A message goes to the scheduler as soon as its group is durable: it may
 * be delivered, marked or removed while its record is still valid.
 * A message kept whole in memory for its first attempt has its queue file
 * made and locked but not written ("hollow", ngx_relay_spool.c): when
 * that attempt delivers it, the file goes without its content ever
 * reaching the page cache.  The content is written as soon as anything
 * else may need it, and by the checkpoint below at the latest.
 *
 * Checkpoint: once a segment is full or its first record is "interval"
 * old, the other segment takes the new records and the segment is sealed.
 * Each of its messages whose queue file is still there ("live") needs
 * that file durable by itself before the record may go, and a thread task
 * writes those still hollow and runs syncfs() on the spool for them;
 * messages delivered meanwhile need nothing.  So a sealed segment waits up to another "interval" for its
 * live messages to go: when they all went, as they do when the next hops
 * answer at once, the checkpoint syncs no queue file at all, and a queue
 * file that lived a few milliseconds never reaches the disk.  Then the
 * task gives the segment a new nonce.  Records carry the nonce of their
 * segment, so that one header write retires all of them.
 *
 * What a crash costs:
 *   - a process crash (kill -9): nothing; the page cache has every queue
 *     file as the scheduler left it, and the journal the content of those
 *     still hollow;
 *   - a machine crash: the records of segments not yet retired are written
 *     back as they were accepted.  A message delivered or bounced in the
 *     last moments before the crash may be delivered again, as with any
 *     MTA whose removal of a queue file had not reached the disk; none is
 *     lost.
 *
 * Recovery, by the master at start and by every queue scan for journals
 * whose owner died:
 *   - written during this boot: the dead process's writes are in the page
 *     cache; a queue file still there but shorter than its valid record
 *     (hollow) gets the record's content, no other file is touched (a
 *     missing one was delivered); syncfs() and the journal goes;
 *   - written during an earlier boot (the machine went down): every valid
 *     record of each segment is written back to its queue file, then
 *     syncfs() and the journal goes.
 * The boot is told apart by /proc/sys/kernel/random/boot_id, kept in each
 * segment header.  Without it the journal is never used.  Recoveries take
 * a lock on journal/, and so does a queue scan before it removes an
 * incomplete file as debris (ngx_relay_spool_debris()): a hollow file of a
 * dead worker is written back first, never taken for debris.
 *
 * On disk, little-endian:
 *   segment header (at 0 and at segment_size, 64 octets):
 *     "RLYJNL01", nonce u64, segment_size u64, boot id (36 octets),
 *     CRC-32 of the 60 octets before it
 *   record (from 512 octets into the segment, 8-octet aligned):
 *     "REC1" u32, CRC-32 u32 (of the 32-octet header with this field 0,
 *     the id and the data), nonce u64, data length u32, id length u16,
 *     10 zero octets, then the id and the queue file's octets
 *   pad record: the same with "PAD1", its CRC-32 over the header alone; it
 *     fills the place of a message whose queue file could not be written
 *     and is stepped over
 * A segment's records end at the first one that is not valid.  Commit
 * groups write their records in the order of their places (two may be in
 * flight: the second writes once the first has written, and syncs
 * alongside it), so no acknowledged record lies after a hole.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <sys/file.h>
#include <sys/uio.h>
#include <pthread.h>
#include <dirent.h>
#include <sys/random.h>
#include <ngx_relay.h>
#include <ngx_relay_journal.h>
#include <ngx_relay_crc32.h>
#include <ngx_relay_metrics.h>


#define NGX_RELAY_JOURNAL_FILL    65536
#define NGX_RELAY_JOURNAL_RETRY   1000    /* after a failed checkpoint */


typedef struct {
    off_t                      offset;
    uint64_t                   nonce;
    size_t                     id_len;
    size_t                     len;
} ngx_relay_journal_restored_t;


/* one journal being written back */

typedef struct {
    ngx_fd_t                       fd;
    int                            queue_fd;
    ngx_log_t                     *log;
    ngx_uint_t                     fill;        /* same boot: hollow only */
    ngx_uint_t                     failed;      /* the journal must stay */
    ngx_relay_journal_restored_t  *done;        /* written back */
    ngx_uint_t                     ndone;
    ngx_uint_t                     nalloc;
} ngx_relay_journal_replay_t;


static void ngx_relay_journal_open_thread(void *data, ngx_log_t *log);
static void ngx_relay_journal_open_done(ngx_event_t *ev);
static ngx_int_t ngx_relay_journal_fill(ngx_relay_journal_t *j);
static void ngx_relay_journal_advance(ngx_relay_journal_t *j);
static void ngx_relay_journal_timer_handler(ngx_event_t *ev);
static void ngx_relay_journal_seal(ngx_relay_journal_segment_t *s);
static ngx_uint_t ngx_relay_journal_linger(ngx_relay_journal_t *j,
    ngx_relay_journal_segment_t *s);
static void ngx_relay_journal_linger_handler(ngx_event_t *ev);
static void ngx_relay_journal_checkpoint_thread(void *data, ngx_log_t *log);
static void ngx_relay_journal_checkpoint_done(ngx_event_t *ev);
static ngx_int_t ngx_relay_journal_recover_one(int dir_fd, int queue_fd,
    const char *name, ngx_log_t *log);
static ngx_int_t ngx_relay_journal_read_header(ngx_fd_t fd, off_t offset,
    uint64_t *nonce, off_t *segment_size, u_char *boot_id);
static void ngx_relay_journal_replay(ngx_relay_journal_replay_t *r,
    off_t base, off_t segment_size, uint64_t nonce);
static void ngx_relay_journal_restored(ngx_relay_journal_replay_t *r,
    off_t offset, uint64_t nonce, size_t id_len, size_t len);
static void ngx_relay_journal_retire_restored(ngx_relay_journal_replay_t *r);
static ngx_uint_t ngx_relay_journal_valid_id(u_char *id, size_t len);
static ngx_int_t ngx_relay_journal_restore(int queue_fd, u_char *id,
    size_t id_len, u_char *data, size_t len);
static ngx_int_t ngx_relay_journal_fill_hollow(int queue_fd, u_char *id,
    size_t id_len, u_char *data, size_t len);
static ngx_int_t ngx_relay_journal_write_file(ngx_fd_t fd, u_char *data,
    size_t len);
static int ngx_relay_journal_lock_dir(int dir_fd);
static void ngx_relay_journal_header(u_char *h, uint64_t nonce,
    off_t segment_size);
static uint64_t ngx_relay_journal_nonce(void);
static void ngx_relay_journal_put(u_char *p, uint64_t v, ngx_uint_t n);
static uint64_t ngx_relay_journal_get(u_char *p, ngx_uint_t n);


static u_char      ngx_relay_boot_id[NGX_RELAY_BOOT_ID_LEN];
static ngx_uint_t  ngx_relay_boot_id_known;
static ngx_uid_t   ngx_relay_journal_user = (ngx_uid_t) -1;
static ngx_gid_t   ngx_relay_journal_group = (ngx_gid_t) -1;


/* the master reads it once; workers inherit it */

ngx_int_t
ngx_relay_journal_boot_id(ngx_log_t *log)
{
    ssize_t   n;
    ngx_fd_t  fd;

    if (ngx_relay_boot_id_known) {
        return NGX_OK;
    }

    fd = open("/proc/sys/kernel/random/boot_id", O_RDONLY|O_CLOEXEC);
    if (fd == -1) {
        ngx_log_error(NGX_LOG_WARN, log, ngx_errno,
                      "relay journal: no boot id, the spool syncs files");
        return NGX_DECLINED;
    }

    n = read(fd, ngx_relay_boot_id, NGX_RELAY_BOOT_ID_LEN);
    (void) close(fd);

    if (n != NGX_RELAY_BOOT_ID_LEN) {
        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "relay journal: no boot id, the spool syncs files");
        return NGX_DECLINED;
    }

    ngx_relay_boot_id_known = 1;

    return NGX_OK;
}


/* master, at start: the spool's journals left by processes now dead */

ngx_int_t
ngx_relay_journal_recover_dirs(ngx_str_t *spool, ngx_cycle_t *cycle)
{
    int               dir_fd, queue_fd;
    u_char           *p, buf[NGX_MAX_PATH];
    ngx_int_t         rc;
    ngx_log_t        *log;
    ngx_core_conf_t  *ccf;

    if (!ngx_relay_boot_id_known) {
        return NGX_OK;
    }

    log = cycle->log;
    ccf = (ngx_core_conf_t *) ngx_get_conf(cycle->conf_ctx, ngx_core_module);
    if (geteuid() == 0) {
        ngx_relay_journal_user = ccf->user;
        ngx_relay_journal_group = ccf->group;
    }

    p = ngx_cpymem(buf, spool->data, spool->len);
    ngx_memcpy(p, NGX_RELAY_JOURNAL_DIR, sizeof(NGX_RELAY_JOURNAL_DIR));

    dir_fd = open((char *) buf, O_RDONLY|O_DIRECTORY|O_CLOEXEC);
    if (dir_fd == -1) {
        ngx_log_error(NGX_LOG_EMERG, log, ngx_errno,
                      "open(\"%s\") failed", buf);
        return NGX_ERROR;
    }

    ngx_memcpy(p, "queue", sizeof("queue"));

    queue_fd = open((char *) buf, O_RDONLY|O_DIRECTORY|O_CLOEXEC);
    if (queue_fd == -1) {
        ngx_log_error(NGX_LOG_EMERG, log, ngx_errno,
                      "open(\"%s\") failed", buf);
        (void) close(dir_fd);
        return NGX_ERROR;
    }

    rc = ngx_relay_journal_recover(dir_fd, queue_fd, log);

    (void) close(queue_fd);
    (void) close(dir_fd);

    return rc;
}


/*
 * Every journal nobody holds: its owner died (or a creation was cut
 * short, "<pid>.new").  Thread-safe, blocking; live owners are skipped.
 */

ngx_int_t
ngx_relay_journal_recover(int dir_fd, int queue_fd, ngx_log_t *log)
{
    int             fd, lock;
    DIR            *dir;
    ngx_int_t       rc;
    struct dirent  *de;

    if (!ngx_relay_boot_id_known) {
        return NGX_OK;
    }

    lock = ngx_relay_journal_lock_dir(dir_fd);
    if (lock == -1) {
        return NGX_ERROR;
    }

    fd = dup(dir_fd);
    if (fd == -1) {
        (void) close(lock);
        return NGX_ERROR;
    }

    dir = fdopendir(fd);
    if (dir == NULL) {
        (void) close(fd);
        (void) close(lock);
        return NGX_ERROR;
    }

    rewinddir(dir);
    rc = NGX_OK;

    while ((de = readdir(dir)) != NULL) {
        if (de->d_name[0] == '.') {
            continue;
        }

        /*
         * A worker may be making that one right now, between its open()
         * and its flock(): only the master, at start, removes them.
         */

        if (ngx_process == NGX_PROCESS_WORKER
            && ngx_strstr(de->d_name, ".new") != NULL)
        {
            continue;
        }

        if (ngx_relay_journal_recover_one(dir_fd, queue_fd, de->d_name, log)
            == NGX_ERROR)
        {
            rc = NGX_ERROR;
        }
    }

    (void) closedir(dir);
    (void) close(lock);

    return rc;
}


/*
 * Recoveries, and a queue scan's verdict on an incomplete file, one at a
 * time on the node: a journal found locked is then held by its living
 * owner, never by another recovery half done, so a hollow queue file
 * whose owner died is written back before anyone judges it debris.  Its
 * own open file description: threads of one process exclude each other.
 */

static int
ngx_relay_journal_lock_dir(int dir_fd)
{
    int  fd;

    fd = openat(dir_fd, ".", O_RDONLY|O_DIRECTORY|O_CLOEXEC);
    if (fd == -1) {
        return -1;
    }

    while (flock(fd, LOCK_EX) == -1) {
        if (errno != EINTR) {
            (void) close(fd);
            return -1;
        }
    }

    return fd;
}


static ngx_int_t
ngx_relay_journal_recover_one(int dir_fd, int queue_fd, const char *name,
    ngx_log_t *log)
{
    off_t                        segment_size, size, base;
    u_char                       boot_id[NGX_RELAY_BOOT_ID_LEN];
    uint64_t                     nonce;
    ngx_fd_t                     fd;
    ngx_uint_t                   i, replay, walk;
    struct stat                  st;
    ngx_relay_journal_replay_t   r;

    fd = openat(dir_fd, name, O_RDWR|O_CLOEXEC);
    if (fd == -1) {
        return NGX_DECLINED;                 /* recovered by someone else */
    }

    if (flock(fd, LOCK_EX|LOCK_NB) == -1
        || fstat(fd, &st) == -1
        || st.st_nlink == 0)
    {
        (void) close(fd);
        return NGX_DECLINED;                 /* its owner lives */
    }

    ngx_memzero(&r, sizeof(ngx_relay_journal_replay_t));
    r.fd = fd;
    r.queue_fd = queue_fd;
    r.log = log;

    replay = 0;
    walk = 0;

    if (ngx_strstr(name, ".new") == NULL
        && ngx_relay_journal_read_header(fd, 0, &nonce, &segment_size,
                                         boot_id)
           == NGX_OK)
    {
        replay = ngx_memcmp(boot_id, ngx_relay_boot_id,
                            NGX_RELAY_BOOT_ID_LEN) != 0;
        size = st.st_size;

        /*
         * Same boot: every queue file is as its writer left it in the page
         * cache, but those still hollow get their records' content.
         */

        walk = 1;
        r.fill = !replay;

        /*
         * Both segments lie in the file and have the size header 0 says
         * (so that "base + segment_size" cannot overflow); a segment whose
         * header disagrees was never written by a worker: it is not
         * replayed, and nothing is replayed from a wrong offset.
         */

        if (segment_size > size / 2) {
            ngx_log_error(NGX_LOG_ERR, log, 0,
                          "relay journal \"%s\": segment size %O does not "
                          "fit a file of %O octets, nothing replayed",
                          name, segment_size, size);
            walk = 0;
        }

        for (i = 0; walk && i < 2; i++) {
            base = (off_t) i * segment_size;

            if (ngx_relay_journal_read_header(fd, base, &nonce, &size,
                                              boot_id)
                != NGX_OK)
            {
                continue;
            }

            if (size != segment_size) {
                ngx_log_error(NGX_LOG_ERR, log, 0,
                              "relay journal \"%s\": segment %ui says its "
                              "size is %O, segment 0 says %O, not replayed",
                              name, i, size, segment_size);
                continue;
            }

            ngx_relay_journal_replay(&r, base, segment_size, nonce);
        }
    }

    /* the queue files are durable now: the journal may go */

    if (syncfs(queue_fd) == -1) {
        ngx_log_error(NGX_LOG_CRIT, log, ngx_errno,
                      "relay journal \"%s\": syncfs() failed, kept", name);
        free(r.done);
        (void) close(fd);
        return NGX_ERROR;
    }

    if (r.failed) {
        ngx_relay_journal_retire_restored(&r);

        ngx_log_error(NGX_LOG_CRIT, log, 0,
                      "relay journal \"%s\": %ui message(s) restored, "
                      "the others could not be, kept for the next try",
                      name, r.ndone);
        free(r.done);
        (void) close(fd);
        return NGX_ERROR;
    }

    free(r.done);

    if (unlinkat(dir_fd, name, 0) == -1 || fsync(dir_fd) == -1) {
        ngx_log_error(NGX_LOG_CRIT, log, ngx_errno,
                      "relay journal \"%s\": removal failed", name);
    }

    (void) close(fd);

    if (replay) {
        ngx_log_error(NGX_LOG_NOTICE, log, 0,
                      "relay journal \"%s\" of an earlier boot: "
                      "%ui message(s) restored", name, r.ndone);

    } else if (r.ndone) {
        ngx_log_error(NGX_LOG_NOTICE, log, 0,
                      "relay journal \"%s\" of a dead process retired, "
                      "%ui hollow queue file(s) written from it",
                      name, r.ndone);

    } else {
        ngx_log_error(NGX_LOG_INFO, log, 0,
                      "relay journal \"%s\" of a dead process retired",
                      name);
    }

    return NGX_OK;
}


static ngx_int_t
ngx_relay_journal_read_header(ngx_fd_t fd, off_t offset, uint64_t *nonce,
    off_t *segment_size, u_char *boot_id)
{
    u_char  h[NGX_RELAY_JOURNAL_HEADER_LEN];

    if (pread(fd, h, sizeof(h), offset) != (ssize_t) sizeof(h)
        || ngx_memcmp(h, NGX_RELAY_JOURNAL_MAGIC, 8) != 0
        || ngx_relay_journal_get(h + 60, 4) != ngx_relay_crc32(0, h, 60))
    {
        return NGX_DECLINED;
    }

    *nonce = ngx_relay_journal_get(h + 8, 8);
    *segment_size = (off_t) ngx_relay_journal_get(h + 16, 8);
    ngx_memcpy(boot_id, h + 24, NGX_RELAY_BOOT_ID_LEN);

    if (*segment_size <= NGX_RELAY_JOURNAL_RECORDS_AT) {
        return NGX_DECLINED;
    }

    return NGX_OK;
}


/*
 * Writes back every valid record of one segment.  A record that cannot be
 * read ends it; one that cannot be written is left for the next try.
 * Either sets r->failed: the journal must then stay.
 */

static void
ngx_relay_journal_replay(ngx_relay_journal_replay_t *r, off_t base,
    off_t segment_size, uint64_t nonce)
{
    off_t      off, end;
    size_t     len, id_len, size;
    u_char    *data, h[NGX_RELAY_JOURNAL_RECORD_LEN];
    uint32_t   crc, stored, magic;
    ngx_int_t  rc;

    end = base + segment_size;

    for (off = base + NGX_RELAY_JOURNAL_RECORDS_AT;
         off + NGX_RELAY_JOURNAL_RECORD_LEN <= end;
         off += size)
    {
        if (pread(r->fd, h, sizeof(h), off) != (ssize_t) sizeof(h)) {
            r->failed = 1;
            return;
        }

        if (ngx_relay_journal_get(h + 8, 8) != nonce) {
            return;                      /* the end of the records */
        }

        magic = (uint32_t) ngx_relay_journal_get(h, 4);
        len = (size_t) ngx_relay_journal_get(h + 16, 4);
        id_len = (size_t) ngx_relay_journal_get(h + 20, 2);
        size = ngx_relay_journal_record_size(id_len, len);

        if ((magic != NGX_RELAY_JOURNAL_RECORD
             && magic != NGX_RELAY_JOURNAL_PAD)
            || id_len == 0 || id_len > NGX_RELAY_ID_LEN
            || (off_t) size > end - off)
        {
            return;
        }

        stored = (uint32_t) ngx_relay_journal_get(h + 4, 4);
        ngx_relay_journal_put(h + 4, 0, 4);

        if (magic == NGX_RELAY_JOURNAL_PAD) {
            if (ngx_relay_crc32(0, h, sizeof(h)) != stored) {
                return;
            }

            continue;
        }

        data = malloc(id_len + len);
        if (data == NULL) {
            r->failed = 1;
            return;
        }

        if (pread(r->fd, data, id_len + len, off + sizeof(h))
            != (ssize_t) (id_len + len))
        {
            free(data);
            r->failed = 1;
            return;
        }

        crc = ngx_relay_crc32(ngx_relay_crc32(0, h, sizeof(h)), data,
                              id_len + len);

        if (crc != stored || !ngx_relay_journal_valid_id(data, id_len)) {
            free(data);
            return;
        }

        rc = r->fill
             ? ngx_relay_journal_fill_hollow(r->queue_fd, data, id_len,
                                             data + id_len, len)
             : ngx_relay_journal_restore(r->queue_fd, data, id_len,
                                         data + id_len, len);

        if (rc == NGX_OK) {
            ngx_relay_journal_restored(r, off, nonce, id_len, len);

        } else if (rc == NGX_ERROR) {
            ngx_log_error(NGX_LOG_CRIT, r->log, ngx_errno,
                          "relay journal: restoring \"%*s\" failed",
                          id_len, data);
            r->failed = 1;
        }

        free(data);
    }
}


static void
ngx_relay_journal_restored(ngx_relay_journal_replay_t *r, off_t offset,
    uint64_t nonce, size_t id_len, size_t len)
{
    ngx_uint_t                     n;
    ngx_relay_journal_restored_t  *done;

    if (r->ndone == r->nalloc) {
        n = r->nalloc ? 2 * r->nalloc : 64;

        done = realloc(r->done, n * sizeof(ngx_relay_journal_restored_t));
        if (done == NULL) {
            r->failed = 1;               /* it may come back once more */
            return;
        }

        r->done = done;
        r->nalloc = n;
    }

    done = &r->done[r->ndone++];
    done->offset = offset;
    done->nonce = nonce;
    done->id_len = id_len;
    done->len = len;
}


/*
 * A journal kept after a partial write-back: the records whose queue files
 * are durable now (after the syncfs()) become pads, so that the next try
 * does not bring back a message the workers may have delivered meanwhile.
 */

static void
ngx_relay_journal_retire_restored(ngx_relay_journal_replay_t *r)
{
    u_char      h[NGX_RELAY_JOURNAL_RECORD_LEN];
    ngx_uint_t  i;

    for (i = 0; i < r->ndone; i++) {
        ngx_relay_journal_pad_header(h, r->done[i].nonce, r->done[i].id_len,
                                     r->done[i].len);

        if (pwrite(r->fd, h, sizeof(h), r->done[i].offset)
            != (ssize_t) sizeof(h))
        {
            break;
        }
    }

    (void) fdatasync(r->fd);
}


/* queue ids are letters and digits: nothing else may name a file */

static ngx_uint_t
ngx_relay_journal_valid_id(u_char *id, size_t len)
{
    size_t  i;

    for (i = 0; i < len; i++) {
        if (!((id[i] >= '0' && id[i] <= '9')
              || (id[i] >= 'a' && id[i] <= 'z')
              || (id[i] >= 'A' && id[i] <= 'Z')))
        {
            return 0;
        }
    }

    return 1;
}


static ngx_int_t
ngx_relay_journal_restore(int queue_fd, u_char *id, size_t id_len,
    u_char *data, size_t len)
{
    u_char    name[NGX_RELAY_ID_LEN + 1];
    ngx_fd_t  fd;

    ngx_memcpy(name, id, id_len);
    name[id_len] = '\0';

    fd = openat(queue_fd, (char *) name, O_WRONLY|O_CREAT|O_TRUNC|O_CLOEXEC,
                0600);
    if (fd == -1) {
        return NGX_ERROR;
    }

    if (ngx_relay_journal_write_file(fd, data, len) != NGX_OK) {
        (void) close(fd);
        return NGX_ERROR;
    }

    /* the master restores as root; the workers own the queue */

    if (ngx_relay_journal_user != (ngx_uid_t) -1
        && fchown(fd, ngx_relay_journal_user, ngx_relay_journal_group) == -1)
    {
        (void) close(fd);
        return NGX_ERROR;
    }

    return close(fd) == 0 ? NGX_OK : NGX_ERROR;
}


/*
 * Same boot: the queue file of a record is written only if it is still
 * there (a missing one was delivered or removed) and shorter than the
 * record (hollow, or its content cut short by its owner's death; its
 * marks come only after its content).  NGX_DECLINED: nothing to do.
 */

static ngx_int_t
ngx_relay_journal_fill_hollow(int queue_fd, u_char *id, size_t id_len,
    u_char *data, size_t len)
{
    u_char       name[NGX_RELAY_ID_LEN + 1];
    ngx_fd_t     fd;
    struct stat  st;

    ngx_memcpy(name, id, id_len);
    name[id_len] = '\0';

    fd = openat(queue_fd, (char *) name, O_WRONLY|O_CLOEXEC);
    if (fd == -1) {
        return (errno == ENOENT) ? NGX_DECLINED : NGX_ERROR;
    }

    if (fstat(fd, &st) == -1) {
        (void) close(fd);
        return NGX_ERROR;
    }

    if (st.st_size >= (off_t) len) {
        (void) close(fd);
        return NGX_DECLINED;
    }

    if (ngx_relay_journal_write_file(fd, data, len) != NGX_OK) {
        (void) close(fd);
        return NGX_ERROR;
    }

    return close(fd) == 0 ? NGX_OK : NGX_ERROR;
}


/* the queue file's octets from its start, for restore and fill alike */

static ngx_int_t
ngx_relay_journal_write_file(ngx_fd_t fd, u_char *data, size_t len)
{
    off_t    off;
    ssize_t  n;

    for (off = 0; (size_t) off < len; off += n) {
        n = pwrite(fd, data + off, len - off, off);

        if (n == -1) {
            if (errno == EINTR) {
                n = 0;
                continue;
            }

            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


/*
 * A worker's journal is made in a thread task: the file is filled under a
 * temporary name, then renamed, so a queue scan never takes a half-made
 * journal for a dead one.  Until it is ready, groups sync their files.
 */

ngx_int_t
ngx_relay_journal_open(ngx_relay_journal_t *j)
{
    ngx_thread_task_t  *task;

    if (!ngx_relay_boot_id_known) {
        j->failed = 1;
        return NGX_DECLINED;
    }

    j->fd = NGX_INVALID_FILE;

    if (pthread_mutex_init(&j->mutex, NULL) != 0
        || pthread_cond_init(&j->cond, NULL) != 0)
    {
        j->failed = 1;
        return NGX_ERROR;
    }

    j->segment[0].nonce = ngx_relay_journal_nonce();
    j->segment[1].nonce = ngx_relay_journal_nonce();

    (void) ngx_sprintf(j->name, "%P%Z", ngx_pid);

    j->timer.handler = ngx_relay_journal_timer_handler;
    j->timer.data = j;
    j->timer.log = j->log;
    j->timer.cancelable = 1;

    j->linger.handler = ngx_relay_journal_linger_handler;
    j->linger.data = j;
    j->linger.log = j->log;
    j->linger.cancelable = 1;

    task = ngx_calloc(sizeof(ngx_thread_task_t), j->log);
    if (task == NULL) {
        j->failed = 1;
        return NGX_ERROR;
    }

    j->task = task;
    task->ctx = j;
    task->handler = ngx_relay_journal_open_thread;
    task->event.handler = ngx_relay_journal_open_done;
    task->event.data = j;

    if (ngx_thread_task_post(j->thread_pool, task) != NGX_OK) {
        j->failed = 1;
        return NGX_ERROR;
    }

    j->busy = 1;

    return NGX_OK;
}


static void
ngx_relay_journal_open_thread(void *data, ngx_log_t *log)
{
    ngx_relay_journal_t  *j = data;

    int     lock;
    u_char  tmp[NGX_INT_T_LEN + sizeof(".new")];

    (void) ngx_sprintf(tmp, "%s.new%Z", j->name);

    /* an earlier process with our pid died and left its journal */

    lock = ngx_relay_journal_lock_dir(j->dir_fd);

    (void) ngx_relay_journal_recover_one(j->dir_fd, j->queue_fd,
                                         (char *) j->name, log);
    if (lock != -1) {
        (void) close(lock);
    }
    (void) unlinkat(j->dir_fd, (char *) tmp, 0);

    j->fd = openat(j->dir_fd, (char *) tmp,
                   O_RDWR|O_CREAT|O_EXCL|O_CLOEXEC, 0600);
    if (j->fd == -1) {
        j->err = errno;
        return;
    }

    if (flock(j->fd, LOCK_EX|LOCK_NB) == -1
        || ngx_relay_journal_fill(j) != NGX_OK
        || renameat(j->dir_fd, (char *) tmp, j->dir_fd, (char *) j->name)
           == -1
        || fsync(j->dir_fd) == -1)
    {
        j->err = errno;
        (void) unlinkat(j->dir_fd, (char *) tmp, 0);
        (void) close(j->fd);
        j->fd = NGX_INVALID_FILE;
    }
}


/*
 * Zeros through the whole file, then both segment headers: records are
 * overwrites of blocks already allocated and written, so syncing them
 * changes no metadata.
 */

static ngx_int_t
ngx_relay_journal_fill(ngx_relay_journal_t *j)
{
    off_t    off, size;
    u_char  *zeros, h[NGX_RELAY_JOURNAL_HEADER_LEN];
    ssize_t  n;

    zeros = calloc(1, NGX_RELAY_JOURNAL_FILL);
    if (zeros == NULL) {
        return NGX_ERROR;
    }

    size = 2 * j->segment_size;

    for (off = 0; off < size; off += n) {
        n = pwrite(j->fd, zeros,
                   (size_t) ngx_min(size - off, NGX_RELAY_JOURNAL_FILL), off);
        if (n <= 0) {
            free(zeros);
            return NGX_ERROR;
        }
    }

    free(zeros);

    ngx_relay_journal_header(h, j->segment[0].nonce, j->segment_size);
    if (pwrite(j->fd, h, sizeof(h), 0) != (ssize_t) sizeof(h)) {
        return NGX_ERROR;
    }

    ngx_relay_journal_header(h, j->segment[1].nonce, j->segment_size);
    if (pwrite(j->fd, h, sizeof(h), j->segment_size) != (ssize_t) sizeof(h)) {
        return NGX_ERROR;
    }

    return fsync(j->fd) == 0 ? NGX_OK : NGX_ERROR;
}


static void
ngx_relay_journal_open_done(ngx_event_t *ev)
{
    ngx_relay_journal_t  *j = ev->data;

    j->busy = 0;

    if (j->fd == NGX_INVALID_FILE) {
        ngx_log_error(NGX_LOG_CRIT, j->log, j->err,
                      "relay journal \"%s\" could not be made, "
                      "the spool syncs files", j->name);
        j->failed = 1;
        return;
    }

    j->ready = 1;

    ngx_log_error(NGX_LOG_INFO, j->log, 0,
                  "relay journal \"%s\": 2 segments of %O octets",
                  j->name, j->segment_size);
}


/*
 * A worker's end: one syncfs() makes every queue file durable by itself,
 * then the journal goes.
 */

void
ngx_relay_journal_close(ngx_relay_journal_t *j, ngx_uint_t keep)
{
    if (j->timer.timer_set) {
        ngx_del_timer(&j->timer);
    }

    if (j->linger.timer_set) {
        ngx_del_timer(&j->linger);
    }

    if (!j->ready || j->fd == NGX_INVALID_FILE) {
        return;
    }

    j->ready = 0;

    if (keep) {
        ngx_log_error(NGX_LOG_CRIT, j->log, 0,
                      "relay journal \"%s\": kept, queue files still need "
                      "its records", j->name);
        (void) close(j->fd);
        return;
    }

    if (syncfs(j->queue_fd) == -1) {
        ngx_log_error(NGX_LOG_CRIT, j->log, ngx_errno,
                      "relay journal \"%s\": syncfs() failed, kept for "
                      "recovery", j->name);
        (void) close(j->fd);
        return;
    }

    if (unlinkat(j->dir_fd, (char *) j->name, 0) == -1
        || fsync(j->dir_fd) == -1)
    {
        ngx_log_error(NGX_LOG_CRIT, j->log, ngx_errno,
                      "relay journal \"%s\": removal failed", j->name);
    }

    (void) close(j->fd);
    j->fd = NGX_INVALID_FILE;
}


/*
 * Room for "len" octets of records in the active segment, or NGX_DECLINED:
 * the caller then syncs its files the usual way.
 */

ngx_int_t
ngx_relay_journal_reserve(ngx_relay_journal_t *j, size_t len,
    ngx_relay_journal_slot_t *slot)
{
    off_t                         room;
    ngx_relay_journal_segment_t  *s;

    room = j->segment_size - NGX_RELAY_JOURNAL_RECORDS_AT;

    if (!j->ready || (off_t) len > room) {
        return NGX_DECLINED;
    }

    s = &j->segment[j->active];

    if (s->sealed || s->used + (off_t) len > room) {
        ngx_relay_journal_seal(s);
        ngx_relay_journal_advance(j);

        s = &j->segment[j->active];

        if (s->sealed || s->used + (off_t) len > room) {
            return NGX_DECLINED;
        }
    }

    slot->segment = j->active;
    slot->nonce = s->nonce;
    slot->ticket = ++j->tickets;
    slot->offset = j->active * j->segment_size + NGX_RELAY_JOURNAL_RECORDS_AT
                   + s->used;

    s->used += len;
    s->writing++;

    return NGX_OK;
}


/*
 * A reserved slot whose group never reached a thread: the next tickets
 * must not wait for it, and its segment has a hole now.
 */

void
ngx_relay_journal_skip(ngx_relay_journal_t *j, ngx_relay_journal_slot_t *slot)
{
    (void) pthread_mutex_lock(&j->mutex);

    j->hole_segment = slot->segment;
    j->hole_nonce = slot->nonce;

    if (j->written == slot->ticket - 1) {
        j->written = slot->ticket;

    } else {
        j->skipped = slot->ticket;
    }

    (void) pthread_cond_broadcast(&j->cond);
    (void) pthread_mutex_unlock(&j->mutex);

    ngx_relay_journal_written(j, slot->segment, 0, 1);
}


/*
 * A message of the segment whose queue file was removed (delivered,
 * bounced): the checkpoint has one file fewer to make durable.  Nothing
 * when the segment has been retired since.
 */

void
ngx_relay_journal_gone(ngx_relay_journal_t *j, ngx_uint_t segment,
    uint64_t nonce)
{
    ngx_relay_journal_segment_t  *s;

    s = &j->segment[segment];

    if (s->nonce != nonce || s->live == 0) {
        return;
    }

    s->live--;

    if (s->live == 0 && s->sealed && !s->checkpointing) {
        ngx_relay_journal_advance(j);
    }
}


/*
 * A group's records are on disk, "records" of them; a failed group leaves
 * a hole, and then the segment takes no more: nothing may follow a hole.
 */

void
ngx_relay_journal_written(ngx_relay_journal_t *j, ngx_uint_t segment,
    ngx_uint_t records, ngx_uint_t failed)
{
    ngx_relay_journal_segment_t  *s;

    s = &j->segment[segment];
    s->writing--;
    s->records += records;
    s->live += records;

    /* a hole, or a segment long enough: a checkpoint bounds the replay */

    if (failed || s->records >= NGX_RELAY_JOURNAL_MAX_RECORDS) {
        ngx_relay_journal_seal(s);
    }

    if (!j->timer.timer_set && (s->records || s->sealed)) {
        ngx_add_timer(&j->timer, j->interval);
    }

    ngx_relay_journal_advance(j);
}


static void
ngx_relay_journal_seal(ngx_relay_journal_segment_t *s)
{
    if (!s->sealed) {
        s->sealed = 1;
        s->sealed_at = ngx_current_msec;
    }
}


/* switch segments when the active one is sealed; checkpoint sealed ones */

static void
ngx_relay_journal_advance(ngx_relay_journal_t *j)
{
    ngx_uint_t                    i;
    ngx_thread_task_t            *task;
    ngx_relay_journal_segment_t  *s, *other;

    s = &j->segment[j->active];
    other = &j->segment[j->active ^ 1];

    if (s->sealed && !other->sealed && !other->checkpointing
        && other->records == 0)
    {
        j->active ^= 1;
    }

    /*
     * Checkpoints go on while a reload lets the old workers finish their
     * sessions: their messages reach the scheduler as usual.
     */

    if (j->busy || ngx_terminate) {
        return;
    }

    for (i = 0; i < 2; i++) {
        s = &j->segment[i];

        if (!s->sealed || s->writing || s->checkpointing) {
            continue;
        }

        if (s->live && !j->segment[i ^ 1].sealed
            && ngx_relay_journal_linger(j, s))
        {
            continue;
        }

        task = j->task;
        task->handler = ngx_relay_journal_checkpoint_thread;
        task->event.handler = ngx_relay_journal_checkpoint_done;
        task->event.data = j;

        j->checkpoint = i;
        j->sync_queue = (s->live != 0);
        j->next_nonce = ngx_relay_journal_nonce();
        j->err = 0;
        j->started = ngx_relay_metrics_clock();

        if (j->sync_queue && j->pin_live
            && j->pin_live(j->live_data, i) != NGX_OK)
        {
            if (!j->timer.timer_set) {
                ngx_add_timer(&j->timer, NGX_RELAY_JOURNAL_RETRY);
            }

            return;
        }

        if (ngx_thread_task_post(j->thread_pool, task) != NGX_OK) {
            if (j->sync_queue && j->unpin_live) {
                j->unpin_live(j->live_data, 0);
            }

            if (!j->timer.timer_set) {
                ngx_add_timer(&j->timer, NGX_RELAY_JOURNAL_RETRY);
            }

            return;
        }

        s->checkpointing = 1;
        j->busy = 1;

        return;
    }
}


/*
 * A sealed segment whose messages are still being delivered waits for
 * them, up to "interval": with none left, its checkpoint syncs nothing.
 * It waits only while the other segment takes the records: once that one
 * is sealed too (full), the new records need this one's room now.
 */

static ngx_uint_t
ngx_relay_journal_linger(ngx_relay_journal_t *j,
    ngx_relay_journal_segment_t *s)
{
    ngx_msec_int_t  left;

    left = (ngx_msec_int_t) (s->sealed_at + j->interval - ngx_current_msec);

    if (left <= 0) {
        return 0;
    }

    if (!j->linger.timer_set) {
        ngx_add_timer(&j->linger, (ngx_msec_t) left);
    }

    return 1;
}


static void
ngx_relay_journal_linger_handler(ngx_event_t *ev)
{
    ngx_relay_journal_advance(ev->data);
}


/*
 * The active segment's oldest record is "interval" old: seal it when the
 * other segment can take over at once, or look again shortly.
 */

static void
ngx_relay_journal_timer_handler(ngx_event_t *ev)
{
    ngx_relay_journal_t  *j = ev->data;

    ngx_relay_journal_segment_t  *s, *other;

    s = &j->segment[j->active];
    other = &j->segment[j->active ^ 1];

    if (s->records == 0 && !s->sealed && !other->sealed) {
        return;
    }

    if (other->checkpointing || other->records || other->sealed) {

        /* the other one is still on its way to disk */

        if (other->sealed && !other->checkpointing) {
            ngx_relay_journal_advance(j);
        }

        ngx_add_timer(ev, ngx_max(j->interval / 10, 1));
        return;
    }

    ngx_relay_journal_seal(s);
    ngx_relay_journal_advance(j);
}


static void
ngx_relay_journal_checkpoint_thread(void *data, ngx_log_t *log)
{
    ngx_relay_journal_t  *j = data;

    u_char  h[NGX_RELAY_JOURNAL_HEADER_LEN];

    /*
     * The queue files of live messages become durable by themselves; those
     * made hollow get their content first.
     */

    if (j->sync_queue && j->fill_live
        && j->fill_live(j->live_data, &j->err) != NGX_OK)
    {
        return;
    }

    if (j->sync_queue && syncfs(j->queue_fd) == -1) {
        j->err = errno;
        return;
    }

    /* the new nonce retires every record of the segment at once */

    ngx_relay_journal_header(h, j->next_nonce, j->segment_size);

    if (pwrite(j->fd, h, sizeof(h), j->checkpoint * j->segment_size)
        != (ssize_t) sizeof(h))
    {
        j->err = errno ? errno : EIO;
        return;
    }

    /*
     * When every message of the segment left, the header need not be on
     * the disk now: the first group that writes into the segment again
     * syncs it with its records, before its "250".  Until then a crash
     * replays records of messages that left, so some may go out twice,
     * none is lost; an fdatasync() here would only meet the next group's
     * on the disk.
     */

    if (j->sync_queue && fdatasync(j->fd) == -1) {
        j->err = errno;
    }
}


static void
ngx_relay_journal_checkpoint_done(ngx_event_t *ev)
{
    ngx_relay_journal_t  *j = ev->data;

    ngx_relay_journal_segment_t  *s;

    j->busy = 0;
    s = &j->segment[j->checkpoint];
    s->checkpointing = 0;

    if (j->sync_queue && j->unpin_live) {
        j->unpin_live(j->live_data, j->err == 0);
    }

    ngx_relay_metrics_sync(j->sync_queue ? NGX_RELAY_METRICS_SYNC_CHECKPOINT
                                         : NGX_RELAY_METRICS_SYNC_RETIRE,
                           j->started);

    if (j->err) {
        ngx_log_error(NGX_LOG_CRIT, j->log, j->err,
                      "relay journal \"%s\": checkpoint failed, "
                      "will try again", j->name);

        if (!j->timer.timer_set) {
            ngx_add_timer(&j->timer, NGX_RELAY_JOURNAL_RETRY);
        }

        return;
    }

    s->nonce = j->next_nonce;
    s->used = 0;
    s->records = 0;
    s->live = 0;
    s->sealed = 0;

    ngx_relay_journal_advance(j);

    s = &j->segment[j->active];

    if (s->records && !j->timer.timer_set) {
        ngx_add_timer(&j->timer, j->interval);
    }
}


/* thread side: one record's header, its CRC over header, id and data */

void
ngx_relay_journal_record_header(u_char *hdr, uint64_t nonce, ngx_str_t *id,
    u_char *data, size_t len)
{
    uint32_t  crc;

    ngx_memzero(hdr, NGX_RELAY_JOURNAL_RECORD_LEN);
    ngx_relay_journal_put(hdr, NGX_RELAY_JOURNAL_RECORD, 4);
    ngx_relay_journal_put(hdr + 8, nonce, 8);
    ngx_relay_journal_put(hdr + 16, len, 4);
    ngx_relay_journal_put(hdr + 20, id->len, 2);

    /* zlib's CRC-32, the same as nginx's, folded (ngx_relay_crc32.c) */

    crc = ngx_relay_crc32(0, hdr, NGX_RELAY_JOURNAL_RECORD_LEN);
    crc = ngx_relay_crc32(crc, id->data, id->len);
    crc = ngx_relay_crc32(crc, data, len);

    ngx_relay_journal_put(hdr + 4, crc, 4);
}


/*
 * Thread side: the header of a record that only fills the place of one
 * whose queue file could not be written (its client gets a 4xx).  Its CRC
 * covers the header only; the replay steps over it.
 */

void
ngx_relay_journal_pad_header(u_char *hdr, uint64_t nonce, size_t id_len,
    size_t len)
{
    ngx_memzero(hdr, NGX_RELAY_JOURNAL_RECORD_LEN);
    ngx_relay_journal_put(hdr, NGX_RELAY_JOURNAL_PAD, 4);
    ngx_relay_journal_put(hdr + 8, nonce, 8);
    ngx_relay_journal_put(hdr + 16, len, 4);
    ngx_relay_journal_put(hdr + 20, id_len, 2);
    ngx_relay_journal_put(hdr + 4,
                          ngx_relay_crc32(0, hdr, NGX_RELAY_JOURNAL_RECORD_LEN),
                          4);
}


/*
 * Thread side: a group's records at its slot, once the group before it has
 * written its own (a failed one left a hole: then this one fails too, in
 * the same segment), then one fdatasync().  The sync may run alongside the
 * next group's: either one covers the pages of both.
 */

ngx_int_t
ngx_relay_journal_append(ngx_relay_journal_t *j,
    ngx_relay_journal_slot_t *slot, struct iovec *iov, ngx_uint_t niov,
    ngx_err_t *err)
{
    off_t       offset;
    ssize_t     n;
    ngx_uint_t  hole;

    (void) pthread_mutex_lock(&j->mutex);

    while (j->written != slot->ticket - 1) {
        if (j->skipped == j->written + 1) {
            j->written++;
            continue;
        }

        (void) pthread_cond_wait(&j->cond, &j->mutex);
    }

    /* nothing to write means the group failed: its place is a hole */

    hole = (niov == 0
            || (j->hole_nonce == slot->nonce
                && j->hole_segment == slot->segment));

    (void) pthread_mutex_unlock(&j->mutex);

    offset = slot->offset;

    while (niov && !hole) {
        n = pwritev(j->fd, iov, (int) ngx_min(niov, IOV_MAX), offset);

        if (n == -1) {
            if (errno == EINTR) {
                continue;
            }

            *err = errno;
            hole = 1;
            break;
        }

        if (n == 0) {
            *err = EIO;
            hole = 1;
            break;
        }

        offset += n;

        while (niov && (size_t) n >= iov->iov_len) {
            n -= iov->iov_len;
            iov++;
            niov--;
        }

        if (niov) {
            iov->iov_base = (u_char *) iov->iov_base + n;
            iov->iov_len -= n;
        }
    }

    (void) pthread_mutex_lock(&j->mutex);

    if (hole) {
        j->hole_segment = slot->segment;
        j->hole_nonce = slot->nonce;
    }

    j->written = slot->ticket;

    (void) pthread_cond_broadcast(&j->cond);
    (void) pthread_mutex_unlock(&j->mutex);

    if (hole) {
        if (*err == 0) {
            *err = EIO;
        }

        return NGX_ERROR;
    }

    if (fdatasync(j->fd) == -1) {
        *err = errno;
        return NGX_ERROR;
    }

    return NGX_OK;
}


static void
ngx_relay_journal_header(u_char *h, uint64_t nonce, off_t segment_size)
{
    ngx_memzero(h, NGX_RELAY_JOURNAL_HEADER_LEN);
    ngx_memcpy(h, NGX_RELAY_JOURNAL_MAGIC, 8);
    ngx_relay_journal_put(h + 8, nonce, 8);
    ngx_relay_journal_put(h + 16, (uint64_t) segment_size, 8);
    ngx_memcpy(h + 24, ngx_relay_boot_id, NGX_RELAY_BOOT_ID_LEN);
    ngx_relay_journal_put(h + 60, ngx_relay_crc32(0, h, 60), 4);
}


/* unpredictable, so that no message can carry a record that passes */

static uint64_t
ngx_relay_journal_nonce(void)
{
    uint64_t  v;

    if (getrandom(&v, sizeof(v), GRND_NONBLOCK) != (ssize_t) sizeof(v)) {
        v = ((uint64_t) ngx_random() << 33) ^ ((uint64_t) ngx_random() << 11)
            ^ (uint64_t) ngx_random() ^ (uint64_t) ngx_time();
    }

    return v ? v : 1;
}


static void
ngx_relay_journal_put(u_char *p, uint64_t v, ngx_uint_t n)
{
    ngx_uint_t  i;

    for (i = 0; i < n; i++) {
        p[i] = (u_char) (v >> (8 * i));
    }
}


static uint64_t
ngx_relay_journal_get(u_char *p, ngx_uint_t n)
{
    uint64_t    v;
    ngx_uint_t  i;

    v = 0;

    for (i = 0; i < n; i++) {
        v |= (uint64_t) p[i] << (8 * i);
    }

    return v;
}
