
/*
 * Copyright (C) The relay authors
 */


/*
 * The harness of the queue library's unit tests (no nginx here): cases as
 * in tests/tcase.h, checked with t_expect().  Files go to a scratch spool
 * made per program below $T_TMP (run.sh sets it); the queue files
 * captured from a real relay are in $T_DATA.
 */


#ifndef _T_H_INCLUDED_
#define _T_H_INCLUDED_


#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>
#include <sys/stat.h>

#include "relay_queue.h"
#include "../tcase.h"


#define T_STR(s)        { sizeof(s) - 1, (unsigned char *) s }


typedef struct {
    char                *path;            /* the spool */
    int                  spool_fd;
    int                  queue_fd;
} t_spool_t;


#define t_expect(cond, ...)                                                   \
    do {                                                                      \
        if (!(cond)) {                                                        \
            t_fail(__VA_ARGS__);                                              \
        }                                                                     \
    } while (0)


static inline int
t_str_is(const relay_str_t *s, const char *want)
{
    return s->len == strlen(want)
           && (s->len == 0 || memcmp(s->data, want, s->len) == 0);
}


static inline const char *
t_show(const relay_str_t *s)
{
    static char  buf[512];

    (void) snprintf(buf, sizeof(buf), "\"%.*s\"", (int) s->len,
                    s->data ? (char *) s->data : "");
    return buf;
}


static inline unsigned char *
t_read_data(const char *name, size_t *len)
{
    FILE           *f;
    long            size;
    char            path[1024];
    const char     *dir;
    unsigned char  *buf;

    dir = getenv("T_DATA");
    (void) snprintf(path, sizeof(path), "%s/%s", dir ? dir : "data", name);

    f = fopen(path, "rb");
    if (f == NULL) {
        printf("FAIL cannot open %s: %s\n", path, strerror(errno));
        exit(1);
    }

    if (fseek(f, 0, SEEK_END) != 0 || (size = ftell(f)) < 0
        || fseek(f, 0, SEEK_SET) != 0)
    {
        printf("FAIL cannot size %s\n", path);
        exit(1);
    }

    buf = malloc(size + 1);
    if (buf == NULL || fread(buf, 1, size, f) != (size_t) size) {
        printf("FAIL cannot read %s\n", path);
        exit(1);
    }

    buf[size] = '\0';
    *len = size;
    (void) fclose(f);

    return buf;
}


static inline void
t_spool_make(t_spool_t *sp, const char *name)
{
    char         buf[1024];
    const char  *base;

    base = getenv("T_TMP");
    (void) snprintf(buf, sizeof(buf), "%s/%s.XXXXXX", base ? base : "/tmp",
                    name);

    if (mkdtemp(buf) == NULL) {
        printf("FAIL mkdtemp %s: %s\n", buf, strerror(errno));
        exit(1);
    }

    sp->path = strdup(buf);
    sp->spool_fd = open(buf, O_RDONLY|O_DIRECTORY);

    if (sp->path == NULL || sp->spool_fd == -1
        || mkdirat(sp->spool_fd, RELAY_QUEUE_DIR, 0700) == -1)
    {
        printf("FAIL spool %s: %s\n", buf, strerror(errno));
        exit(1);
    }

    sp->queue_fd = openat(sp->spool_fd, RELAY_QUEUE_DIR,
                          O_RDONLY|O_DIRECTORY);
    if (sp->queue_fd == -1) {
        printf("FAIL open queue/: %s\n", strerror(errno));
        exit(1);
    }
}


static inline void
t_spool_free(t_spool_t *sp)
{
    (void) close(sp->queue_fd);
    (void) close(sp->spool_fd);
    free(sp->path);
}


/* queue/<name> with these octets */

static inline void
t_put(t_spool_t *sp, const char *name, const void *data, size_t len)
{
    int  fd;

    fd = openat(sp->queue_fd, name, O_WRONLY|O_CREAT|O_TRUNC, 0600);

    if (fd == -1 || write(fd, data, len) != (ssize_t) len || close(fd) == -1)
    {
        printf("FAIL write %s: %s\n", name, strerror(errno));
        exit(1);
    }
}


/* queue/<name>'s octets, malloc()ed; NULL when there is none */

static inline unsigned char *
t_get(t_spool_t *sp, const char *name, size_t *len)
{
    int             fd;
    ssize_t         n;
    struct stat     st;
    unsigned char  *buf;

    fd = openat(sp->queue_fd, name, O_RDONLY);
    if (fd == -1) {
        return NULL;
    }

    if (fstat(fd, &st) == -1 || (buf = malloc(st.st_size + 1)) == NULL) {
        (void) close(fd);
        return NULL;
    }

    n = pread(fd, buf, st.st_size, 0);
    (void) close(fd);

    if (n != st.st_size) {
        free(buf);
        return NULL;
    }

    buf[n] = '\0';
    *len = n;

    return buf;
}


static inline int
t_open(t_spool_t *sp, const char *name, int flags)
{
    int  fd;

    fd = openat(sp->queue_fd, name, flags);
    if (fd == -1) {
        printf("FAIL open %s: %s\n", name, strerror(errno));
        exit(1);
    }

    return fd;
}


#endif /* _T_H_INCLUDED_ */
