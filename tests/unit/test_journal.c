
/*
 * Copyright (C) The relay authors
 */


/*
 * link: module/ngx_relay_journal.c module/ngx_relay_crc32.c tests/no_metrics.c -lz
 *
 * Journal recovery of an earlier boot (ngx_relay_journal_recover()) on
 * journal images made here, with real CRCs: which records come back as
 * queue files, and that a journal whose headers lie is retired without
 * replaying from a wrong offset, without overflow (UBSan) and without a
 * CRIT (a journal kept forever).  Cases from an outside fuzzing run are in
 * tests/unit/data (RELAY_UNIT_DATA).
 */


#include "t.h"
#include <ngx_relay_journal.h>
#include <zlib.h>
#include <dirent.h>


#define T_SEG    4096


static ngx_uint_t  t_crit;


void
ngx_log_error_core(ngx_uint_t level, ngx_log_t *log, ngx_err_t err,
    const char *fmt, ...)
{
    if (level <= NGX_LOG_CRIT) {
        t_crit++;
    }
}


static void
t_put(u_char *p, uint64_t v, ngx_uint_t n)
{
    ngx_uint_t  i;

    for (i = 0; i < n; i++) {
        p[i] = (u_char) (v >> (8 * i));
    }
}


static void
t_header(u_char *img, size_t at, uint64_t nonce, uint64_t size)
{
    u_char  *h;

    h = img + at;
    ngx_memcpy(h, NGX_RELAY_JOURNAL_MAGIC, 8);
    t_put(h + 8, nonce, 8);
    t_put(h + 16, size, 8);
    ngx_memset(h + 24, 'b', NGX_RELAY_BOOT_ID_LEN);   /* not this boot */
    t_put(h + 60, crc32(0, h, 60), 4);
}


/* a record of queue id "id" with the octets "data", at "at"; its size */

static size_t
t_record(u_char *img, size_t at, uint64_t nonce, const char *id,
    const char *data)
{
    u_char     *h;
    size_t      id_len, len;
    ngx_str_t   s;

    id_len = strlen(id);
    len = strlen(data);
    h = img + at;

    ngx_memcpy(h + NGX_RELAY_JOURNAL_RECORD_LEN, id, id_len);
    ngx_memcpy(h + NGX_RELAY_JOURNAL_RECORD_LEN + id_len, data, len);

    s.data = (u_char *) id;
    s.len = id_len;
    ngx_relay_journal_record_header(h, nonce, &s,
                                    h + NGX_RELAY_JOURNAL_RECORD_LEN + id_len,
                                    len);

    return ngx_relay_journal_record_size(id_len, len);
}


/* recovers one journal image in a fresh spool; the queue files it made */

static ngx_uint_t
t_recover(const char *label, u_char *img, size_t len, const char *want,
    ngx_uint_t journal_stays)
{
    int             dir_fd, queue_fd, fd;
    DIR            *d;
    char            top[] = "/tmp/relay-journal-XXXXXX", path[256];
    char            got[256];
    ngx_log_t       log;
    struct dirent  *de;
    ngx_uint_t      n;

    t_begin(label);

    ngx_memzero(&log, sizeof(ngx_log_t));
    log.log_level = NGX_LOG_DEBUG;
    t_crit = 0;

    if (mkdtemp(top) == NULL) {
        perror("mkdtemp");
        exit(2);
    }

    snprintf(path, sizeof(path), "%s/journal", top);
    (void) mkdir(path, 0700);
    dir_fd = open(path, O_RDONLY|O_DIRECTORY);
    snprintf(path, sizeof(path), "%s/queue", top);
    (void) mkdir(path, 0700);
    queue_fd = open(path, O_RDONLY|O_DIRECTORY);

    fd = openat(dir_fd, "4242", O_WRONLY|O_CREAT, 0600);
    if (dir_fd == -1 || queue_fd == -1 || fd == -1
        || write(fd, img, len) != (ssize_t) len)
    {
        perror("journal image");
        exit(2);
    }

    (void) close(fd);

    (void) ngx_relay_journal_recover(dir_fd, queue_fd, &log);

    /* the queue files made, sorted by name (ids are chosen in order) */

    got[0] = '\0';
    n = 0;

    d = fdopendir(dup(queue_fd));
    while (d && (de = readdir(d)) != NULL) {
        if (de->d_name[0] != '.') {
            n++;
        }
    }

    if (d) {
        closedir(d);
    }

    for (fd = 'A'; fd <= 'Z'; fd++) {
        snprintf(path, sizeof(path), "%c1", fd);

        if (faccessat(queue_fd, path, F_OK, 0) == 0) {
            strcat(got, path);
            strcat(got, " ");
            (void) unlinkat(queue_fd, path, 0);
        }
    }

    if (strcmp(got, want) != 0 || n != strlen(want) / 3) {
        t_fail("restored \"%s\" (%lu files), want \"%s\"", got,
               (unsigned long) n, want);
    }

    if ((faccessat(dir_fd, "4242", F_OK, 0) == 0) != (int) journal_stays) {
        t_fail("the journal %s", journal_stays ? "went" : "stayed");
        (void) unlinkat(dir_fd, "4242", 0);
    }

    if (t_crit) {
        t_fail("%lu CRIT or worse", (unsigned long) t_crit);
    }

    (void) close(dir_fd);
    (void) close(queue_fd);

    snprintf(path, sizeof(path), "%s/journal", top);
    (void) rmdir(path);
    snprintf(path, sizeof(path), "%s/queue", top);
    (void) rmdir(path);
    (void) rmdir(top);

    t_end();

    return n;
}


static u_char *
t_image(void)
{
    u_char  *img;

    img = calloc(1, 2 * T_SEG);
    if (img == NULL) {
        perror("calloc");
        exit(2);
    }

    return img;
}


static void
t_read_finding(const char *name, u_char **img, size_t *len)
{
    int          fd;
    char         path[512];
    const char  *dir;
    struct stat  st;

    dir = getenv("RELAY_UNIT_DATA");
    snprintf(path, sizeof(path), "%s/%s", dir ? dir : "tests/unit/data",
             name);

    fd = open(path, O_RDONLY);
    if (fd == -1 || fstat(fd, &st) == -1) {
        perror(path);
        exit(2);
    }

    *img = malloc(st.st_size);
    if (*img == NULL || read(fd, *img, st.st_size) != st.st_size) {
        perror(path);
        exit(2);
    }

    (void) close(fd);
    *len = st.st_size;
}


int
main(void)
{
    u_char  *img, *raw;
    size_t   off, len;
    uint64_t   crc;
    ngx_log_t  log0;

    ngx_memzero(&log0, sizeof(ngx_log_t));

    if (ngx_relay_journal_boot_id(&log0) != NGX_OK) {
        printf("test_journal: 0 passed, 0 failed\n");   /* no /proc */
        return 0;
    }

    /* both segments valid: every record comes back */

    img = t_image();
    t_header(img, 0, 7, T_SEG);
    off = NGX_RELAY_JOURNAL_RECORDS_AT;
    off += t_record(img, off, 7, "A1", "queue file A\n");
    (void) t_record(img, off, 7, "B1", "queue file B\n");
    t_header(img, T_SEG, 9, T_SEG);
    (void) t_record(img, T_SEG + NGX_RELAY_JOURNAL_RECORDS_AT, 9, "C1",
                    "queue file C\n");
    t_recover("two segments replayed", img, 2 * T_SEG, "A1 B1 C1 ", 0);

    /* a record of another nonce ends its segment */

    ngx_memzero(img + T_SEG, T_SEG);
    t_header(img, T_SEG, 9, T_SEG);
    (void) t_record(img, T_SEG + NGX_RELAY_JOURNAL_RECORDS_AT, 8, "C1",
                    "stale\n");
    t_recover("stale record not replayed", img, 2 * T_SEG, "A1 B1 ", 0);

    /* header 1 disagrees on the segment size: not from 1 * its size */

    ngx_memzero(img + T_SEG, T_SEG);
    t_header(img, T_SEG, 9, T_SEG / 2);
    (void) t_record(img, T_SEG / 2 + NGX_RELAY_JOURNAL_RECORDS_AT, 9, "D1",
                    "from the wrong offset\n");
    (void) t_record(img, T_SEG + NGX_RELAY_JOURNAL_RECORDS_AT, 9, "E1",
                    "under a header that lies\n");
    t_recover("segment sizes disagree", img, 2 * T_SEG, "A1 B1 ", 0);

    /* header 1 with a huge size: no overflow, no CRIT, the journal goes */

    t_header(img, T_SEG, 9, 0x4000000000000000ULL);
    t_recover("huge segment size in header 1", img, 2 * T_SEG, "A1 B1 ", 0);

    t_header(img, T_SEG, 9, 0x7ffffffffffffe00ULL);
    t_recover("largest segment size in header 1", img, 2 * T_SEG,
              "A1 B1 ", 0);

    /* header 0 says more than the file holds: nothing, and it goes */

    t_header(img, 0, 7, 0x4000000000000000ULL);
    t_header(img, T_SEG, 9, T_SEG);
    t_recover("huge segment size in header 0", img, 2 * T_SEG, "", 0);

    t_header(img, 0, 7, T_SEG);
    t_recover("file shorter than two segments", img, 2 * T_SEG - 1, "", 0);

    free(img);

    /*
     * The outside finding: a selector octet, then header 0 (size 513) and
     * header 1 at 513 (size 2^62), CRCs 0; with real CRCs here.
     */

    t_read_finding("crash-journal-seg1-overflow.bin", &raw, &len);

    img = raw + 1;
    len--;

    for (off = 0; off < len; off += 513) {
        if (off + NGX_RELAY_JOURNAL_HEADER_LEN <= len
            && ngx_memcmp(img + off, NGX_RELAY_JOURNAL_MAGIC, 8) == 0)
        {
            crc = crc32(0, img + off, 60);
            t_put(img + off + 60, crc, 4);
        }
    }

    t_recover("finding: crash-journal-seg1-overflow", img, len, "", 0);

    free(raw);

    return t_summary("test_journal");
}
