
/*
 * Copyright (C) The relay authors
 */


/*
 * link: module/ngx_relay_journal.c module/ngx_relay_crc32.c tests/no_metrics.c -lz
 *
 * Journal recovery (ngx_relay_journal_recover()), what the master and
 * every queue scan read from disk after a crash: the input is a journal
 * file of an earlier boot.  Unless the first octet is odd, the CRCs of
 * its segment headers and records are made right first, so that the
 * fuzzer gets past them to the sizes and offsets.  Recovery runs on a
 * private spool in /dev/shm; it must neither crash nor write a queue
 * file whose name is not a queue id, and must retire the journal.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_relay_journal.h>
#include <zlib.h>
#include <dirent.h>

#include "fuzz.h"


static int  fuzz_dir_fd = -1;
static int  fuzz_queue_fd = -1;


void
ngx_log_error_core(ngx_uint_t level, ngx_log_t *log, ngx_err_t err,
    const char *fmt, ...)
{
}


static uint64_t
fuzz_get(u_char *p, ngx_uint_t n)
{
    uint64_t    v;
    ngx_uint_t  i;

    for (v = 0, i = n; i; i--) {
        v = (v << 8) | p[i - 1];
    }

    return v;
}


static void
fuzz_put(u_char *p, uint64_t v, ngx_uint_t n)
{
    ngx_uint_t  i;

    for (i = 0; i < n; i++) {
        p[i] = (u_char) (v >> (8 * i));
    }
}


/* the records of the segment at base: CRCs made right while they parse */

static void
fuzz_fix_records(u_char *img, size_t size, size_t base, size_t seg)
{
    size_t    off, end, len, id_len, rec;
    uint32_t  magic, crc;
    u_char   *h;

    end = (seg <= size - base) ? base + seg : size;

    for (off = base + NGX_RELAY_JOURNAL_RECORDS_AT;
         off + NGX_RELAY_JOURNAL_RECORD_LEN <= end;
         off += rec)
    {
        h = img + off;
        magic = (uint32_t) fuzz_get(h, 4);
        len = (size_t) fuzz_get(h + 16, 4);
        id_len = (size_t) fuzz_get(h + 20, 2);
        rec = ngx_relay_journal_record_size(id_len, len);

        if ((magic != NGX_RELAY_JOURNAL_RECORD
             && magic != NGX_RELAY_JOURNAL_PAD)
            || rec > end - off)
        {
            return;
        }

        fuzz_put(h + 4, 0, 4);
        crc = crc32(0, h, NGX_RELAY_JOURNAL_RECORD_LEN);

        if (magic == NGX_RELAY_JOURNAL_RECORD) {
            crc = crc32(crc, h + NGX_RELAY_JOURNAL_RECORD_LEN, id_len + len);
        }

        fuzz_put(h + 4, crc, 4);
    }
}


static void
fuzz_fix(u_char *img, size_t size)
{
    size_t    at, seg;
    u_char   *h;

    seg = 0;

    for (at = 0; at + NGX_RELAY_JOURNAL_HEADER_LEN <= size; ) {
        h = img + at;

        if (ngx_memcmp(h, NGX_RELAY_JOURNAL_MAGIC, 8) != 0) {
            break;
        }

        fuzz_put(h + 60, crc32(0, h, 60), 4);

        if (at == 0) {
            seg = (size_t) fuzz_get(h + 16, 8);
        }

        if (seg <= NGX_RELAY_JOURNAL_RECORDS_AT || seg > size) {
            break;
        }

        fuzz_fix_records(img, size, at, seg);

        if (at) {
            break;
        }

        at = seg;
    }
}


int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    char       top[] = "/dev/shm/relay-fuzz-journal-XXXXXX", path[256];
    ngx_log_t  log;

    ngx_memzero(&log, sizeof(ngx_log_t));

    if (ngx_relay_journal_boot_id(&log) != NGX_OK || mkdtemp(top) == NULL) {
        abort();
    }

    snprintf(path, sizeof(path), "%s/journal", top);
    (void) mkdir(path, 0700);
    fuzz_dir_fd = open(path, O_RDONLY|O_DIRECTORY);
    snprintf(path, sizeof(path), "%s/queue", top);
    (void) mkdir(path, 0700);
    fuzz_queue_fd = open(path, O_RDONLY|O_DIRECTORY);

    if (fuzz_dir_fd == -1 || fuzz_queue_fd == -1) {
        abort();
    }

    return 0;
}


static void
fuzz_clean_queue(void)
{
    DIR            *d;
    size_t          i;
    struct dirent  *de;

    d = fdopendir(dup(fuzz_queue_fd));
    fuzz_assert(d != NULL);

    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.'
            && (de->d_name[1] == '\0'
                || (de->d_name[1] == '.' && de->d_name[2] == '\0')))
        {
            continue;
        }

        /* only queue ids name files: letters and digits */

        for (i = 0; de->d_name[i]; i++) {
            fuzz_assert((de->d_name[i] >= '0' && de->d_name[i] <= '9')
                        || (de->d_name[i] >= 'a' && de->d_name[i] <= 'z')
                        || (de->d_name[i] >= 'A' && de->d_name[i] <= 'Z'));
        }

        fuzz_assert(i <= NGX_RELAY_ID_LEN);
        (void) unlinkat(fuzz_queue_fd, de->d_name, 0);
    }

    closedir(d);
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int        fd;
    u_char    *img;
    ngx_log_t  log;

    if (size == 0 || size > 1024 * 1024) {
        return 0;
    }

    img = fuzz_dup(data + 1, size - 1);

    if (!(data[0] & 1)) {
        fuzz_fix(img, size - 1);
    }

    fd = openat(fuzz_dir_fd, "4242", O_WRONLY|O_CREAT|O_TRUNC, 0600);
    fuzz_assert(fd != -1);
    fuzz_assert(write(fd, img, size - 1) == (ssize_t) (size - 1));
    close(fd);
    free(img);

    ngx_memzero(&log, sizeof(ngx_log_t));
    log.log_level = NGX_LOG_DEBUG;

    (void) ngx_relay_journal_recover(fuzz_dir_fd, fuzz_queue_fd, &log);

    /* retired, whatever it held: no journal is kept for ever */

    fuzz_assert(faccessat(fuzz_dir_fd, "4242", F_OK, 0) == -1);

    fuzz_clean_queue();

    return 0;
}
