
/*
 * Copyright (C) The relay authors
 */


/*
 * Queue files: the format, read and written here only (relay_queue.h has
 * the layout).  Users: the spool and the scheduler of the nginx module,
 * its control client (controld's queue commands), and relayctl's local
 * queue commands, which work on a node's spool whether nginx runs or not.
 *
 * Why an operator's action is safe next to running workers: every action
 * takes the message's flock() without waiting, exactly as a worker does
 * before it delivers.  A locked message is being delivered: the action
 * answers "busy" and touches nothing.  Under the lock every change is a
 * pwrite() of a fixed-width field followed by one fdatasync() (not for a
 * flush, which only moves a time), so a worker that takes the lock next
 * reads either the old or the new bytes of a field, never a mix, and a
 * crash after the sync keeps the change.
 * A worker keeps its own idea of when a message is due; the note written
 * after the actions (one per invocation, <spool>/notes/) tells it to read
 * those messages again.  Notes are hints: a lost note delays a change
 * until the next scan, it never loses one.
 *
 * Nothing here allocates but with malloc(), and nothing is shared between
 * calls but the note counter (an atomic), so threads may call anything.
 */


#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <strings.h>
#include <unistd.h>
#include <dirent.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include "relay_queue.h"


#define RELAY_QUEUE_NEXT_LEN     15          /* "NNNNNNNNNN AAAA" */
#define RELAY_QUEUE_NEXT_MAX     9999999999LL
#define RELAY_QUEUE_ATTEMPTS_MAX 9999
#define RELAY_QUEUE_PROC_LOCKS   "/proc/locks"

#define relay_queue_literal(s)   (s), sizeof(s) - 1


typedef struct relay_queue_key_s  relay_queue_key_t;

/* a key's parser: the value is v up to eol, header is the file's start */

typedef int relay_queue_key_parse_t(relay_queue_msg_t *m,
    const relay_queue_key_t *k, unsigned char *header, unsigned char *v,
    unsigned char *eol);

struct relay_queue_key_s {
    const char                   *name;
    size_t                        len;
    relay_queue_key_parse_t      *parse;
    size_t                        offset;         /* of a relay_str_t, or
                                                     a flag's off_t */
    size_t                        flag;           /* of its unsigned char */
    const relay_str_t            *names;          /* a keyword's values */
    size_t                        nnames;
};


/* flock()s held right now, from /proc/locks */

typedef struct {
    unsigned long                 major;
    unsigned long                 minor;
    unsigned long                 ino;
} relay_queue_lock_t;

typedef struct {
    relay_queue_lock_t           *locks;
    size_t                        n;
    unsigned                      known:1;        /* else ask flock() */
} relay_queue_locks_t;


static int relay_queue_parse_line(relay_queue_msg_t *m,
    unsigned char *header, unsigned char *p, unsigned char *eol);
static relay_queue_key_parse_t  relay_queue_parse_string,
    relay_queue_parse_dash, relay_queue_parse_arrival,
    relay_queue_parse_keyword, relay_queue_parse_smtputf8,
    relay_queue_parse_next,
    relay_queue_parse_flag, relay_queue_parse_error, relay_queue_parse_rcpt;
static unsigned relay_queue_parse_notify(unsigned char *p,
    unsigned char *last);
static int relay_queue_trailer_valid(const unsigned char *buf, off_t size);
static int relay_queue_read_small(int fd, relay_queue_msg_t *m, off_t size,
    int *err);
static int relay_queue_header_end(const unsigned char *data, off_t size,
    unsigned char **end, int *err);
static int relay_queue_take_header(relay_queue_msg_t *m, unsigned char *buf,
    unsigned char *end, off_t size, int *err);
static int relay_queue_number(unsigned char *p, unsigned char *last,
    long long *value);
static int relay_queue_name_index(const relay_str_t *names, size_t n,
    unsigned char *p, unsigned char *last);
static void relay_queue_trim_error(relay_queue_msg_t *m);

static const relay_str_t *relay_queue_body_name(
    const relay_queue_envelope_t *env);
static const relay_str_t *relay_queue_ret_name(
    const relay_queue_envelope_t *env);
static unsigned char *relay_queue_cpy(unsigned char *p, const void *s,
    size_t len);
static size_t relay_queue_notify_len(unsigned notify);
static int relay_queue_pwrite(int fd, const void *buf, size_t len,
    off_t offset, int *err);

static int relay_queue_act_flush(int fd, relay_queue_msg_t *m, time_t now,
    relay_queue_result_t *res);
static int relay_queue_act_hold(int fd, relay_queue_msg_t *m,
    relay_queue_result_t *res);
static int relay_queue_act_release(int fd, relay_queue_msg_t *m,
    time_t now, relay_queue_result_t *res);
static int relay_queue_act_delete(int queue_fd, const char *name,
    relay_queue_result_t *res);
static int relay_queue_act_bounce(int fd, relay_queue_msg_t *m, time_t now,
    relay_queue_result_t *res);
static int relay_queue_due_now(int fd, relay_queue_msg_t *m, time_t now,
    relay_queue_result_t *res);
static int relay_queue_sync(int fd, relay_queue_result_t *res);

static int relay_queue_notes_dir(int spool_fd, int *err);
static void relay_queue_notes_expire(int notes_fd, time_t now);
static int relay_queue_note_put(int notes_fd, const char *tmp,
    const char *data, size_t len, int *err);

static void relay_queue_locks_load(relay_queue_locks_t *locks);
static int relay_queue_locks_held(relay_queue_locks_t *locks, int fd,
    struct stat *st);
static int relay_queue_lock_cmp(const void *a, const void *b);
static int relay_queue_entry_load(int queue_fd, const char *name,
    relay_queue_locks_t *locks, relay_queue_entry_t *e, int *err);
static int relay_queue_match_text(const char *pattern,
    const relay_str_t *s);
static int relay_queue_match_domain(const char *pattern,
    const relay_str_t *addr);
static int relay_queue_match_rcpts(const char *pattern,
    const relay_queue_msg_t *m, int domain);
static int relay_queue_collect(relay_queue_entry_t *e, void *data);
static int relay_queue_entry_cmp(const void *a, const void *b);


#define relay_queue_string(s)    { sizeof(s) - 1, (unsigned char *) s }

static const relay_str_t  relay_queue_body_names[] = {
    relay_queue_string("-"),
    relay_queue_string("7BIT"),
    relay_queue_string("8BITMIME"),
    relay_queue_string("BINARYMIME")
};

static const relay_str_t  relay_queue_ret_names[] = {
    relay_queue_string("-"),
    relay_queue_string("FULL"),
    relay_queue_string("HDRS")
};


#define relay_queue_key(name, parse, field)                                  \
    { name, sizeof(name) - 1, parse, offsetof(relay_queue_msg_t, field), 0,   \
      NULL, 0 }
#define relay_queue_key_value(name, parse)                                    \
    { name, sizeof(name) - 1, parse, 0, 0, NULL, 0 }
#define relay_queue_key_flag(name, at, field)                                 \
    { name, sizeof(name) - 1, relay_queue_parse_flag,                         \
      offsetof(relay_queue_msg_t, at), offsetof(relay_queue_msg_t, field),    \
      NULL, 0 }
#define relay_queue_key_keyword(name, field, names)                           \
    { name, sizeof(name) - 1, relay_queue_parse_keyword,                      \
      offsetof(relay_queue_msg_t, field), 0, names,                           \
      sizeof(names) / sizeof(relay_str_t) }

static const relay_queue_key_t  relay_queue_keys[] = {
    relay_queue_key("id", relay_queue_parse_string, id),
    relay_queue_key_value("arrival", relay_queue_parse_arrival),
    relay_queue_key("client", relay_queue_parse_string, client),
    relay_queue_key("helo", relay_queue_parse_string, helo),
    relay_queue_key("auth", relay_queue_parse_dash, auth),
    relay_queue_key_keyword("body", body, relay_queue_body_names),
    relay_queue_key_value("smtputf8", relay_queue_parse_smtputf8),
    relay_queue_key_keyword("ret", ret, relay_queue_ret_names),
    relay_queue_key("envid", relay_queue_parse_dash, envid),
    relay_queue_key("tenant", relay_queue_parse_string, tenant),
    relay_queue_key("sender", relay_queue_parse_string, sender),
    relay_queue_key_value("next", relay_queue_parse_next),
    relay_queue_key_flag("delay-warned", warned_offset, delay_warned),
    relay_queue_key_flag("hold", hold_offset, held),
    relay_queue_key("error", relay_queue_parse_error, last_error),
    relay_queue_key_value("rcpt", relay_queue_parse_rcpt)
};


static const char  *relay_queue_action_names[] = {
    "flush", "hold", "release", "delete", "bounce"
};

static const struct {
    const char                   *name;
    unsigned                      state;
} relay_queue_states[] = {
    { "new", RELAY_QUEUE_STATE_NEW },
    { "deferred", RELAY_QUEUE_STATE_DEFERRED },
    { "held", RELAY_QUEUE_STATE_HELD },
    { "active", RELAY_QUEUE_STATE_ACTIVE },
    { "incomplete", RELAY_QUEUE_STATE_INCOMPLETE }
};


static unsigned long  relay_queue_note_seq;


/* ---------------------------------------------------------------- reading */


/*
 * Opens an existing queue file without touching its access time: with
 * relatime, the first read after a write would dirty the inode, and
 * reading the whole queue at start would then journal a million inodes.
 * O_NOATIME needs the file's owner (or CAP_FOWNER): others open it as
 * usual.
 */

int
relay_queue_openat(int queue_fd, const char *name, int flags)
{
#ifdef O_NOATIME
    int  fd;

    fd = openat(queue_fd, name, flags|O_NOATIME);

    if (fd != -1 || errno != EPERM) {
        return fd;
    }
#endif

    return openat(queue_fd, name, flags);
}


/*
 * Reads and parses a queue file.  RELAY_QUEUE_INCOMPLETE: no trailer (size
 * and mtime are set all the same); RELAY_QUEUE_ERROR: *err is the errno,
 * EINVAL for a file that is not a queue file.  Free with relay_queue_free().
 */

int
relay_queue_read(int fd, relay_queue_msg_t *m, int *err)
{
    size_t          size, len, limit;
    ssize_t         n;
    struct stat     st;
    unsigned char  *buf, *nbuf, *end;

    memset(m, 0, sizeof(relay_queue_msg_t));
    *err = 0;

    if (fstat(fd, &st) == -1) {
        *err = errno;
        return RELAY_QUEUE_ERROR;
    }

    m->size = st.st_size;
    m->mtime = st.st_mtime;

    if (st.st_size <= RELAY_QUEUE_SMALL_FILE) {
        return relay_queue_read_small(fd, m, st.st_size, err);
    }

    if (!relay_queue_complete(fd, st.st_size)) {
        return RELAY_QUEUE_INCOMPLETE;
    }

    /* the header ends with an empty line, before the trailer */

    limit = st.st_size - RELAY_QUEUE_TRAILER_LEN;
    if (limit > RELAY_QUEUE_MAX_HEADER) {
        limit = RELAY_QUEUE_MAX_HEADER;
    }

    buf = NULL;
    len = 0;
    size = 4096;

    for ( ;; ) {
        if (size > limit) {
            size = limit;
        }

        nbuf = realloc(buf, size + 1);
        if (nbuf == NULL) {
            *err = ENOMEM;
            goto failed;
        }

        buf = nbuf;

        while (len < size) {
            n = pread(fd, buf + len, size - len, len);

            if (n == -1 && errno == EINTR) {
                continue;
            }

            if (n == -1) {
                *err = errno;
                goto failed;
            }

            if (n == 0) {
                break;
            }

            len += n;
        }

        end = memmem(buf, len, "\n\n", 2);
        if (end) {
            break;
        }

        if (len < size || size >= limit) {
            *err = EINVAL;                /* truncated, or not ours */
            goto failed;
        }

        size *= 2;
    }

    return relay_queue_take_header(m, buf, end, st.st_size, err);

failed:

    free(buf);
    return RELAY_QUEUE_ERROR;
}


/* 1: the file ends with "\nRELAY-END <20-digit offset of the trailer>\n" */

int
relay_queue_complete(int fd, off_t size)
{
    unsigned char  buf[RELAY_QUEUE_TRAILER_LEN];

    if (size < RELAY_QUEUE_TRAILER_LEN
        || pread(fd, buf, RELAY_QUEUE_TRAILER_LEN,
                 size - RELAY_QUEUE_TRAILER_LEN)
           != RELAY_QUEUE_TRAILER_LEN)
    {
        return 0;
    }

    return relay_queue_trailer_valid(buf, size);
}


/* the trailer's octets say where it starts: at size - its length */

static int
relay_queue_trailer_valid(const unsigned char *buf, off_t size)
{
    long long  offset;

    if (memcmp(buf, "\nRELAY-END ", 11) != 0
        || buf[RELAY_QUEUE_TRAILER_LEN - 1] != '\n'
        || relay_queue_number((unsigned char *) buf + 11,
                              (unsigned char *) buf
                              + RELAY_QUEUE_TRAILER_LEN - 1, &offset)
           != RELAY_QUEUE_OK)
    {
        return 0;
    }

    return offset == size - RELAY_QUEUE_TRAILER_LEN;
}


/*
 * A small file (most of a queue) in one read: one request to the disk
 * for its header and trailer instead of two, which is what a cold start
 * with a million files waits for.
 */

static int
relay_queue_read_small(int fd, relay_queue_msg_t *m, off_t size, int *err)
{
    int             rc;
    size_t          len;
    ssize_t         n;
    unsigned char  *buf, *end;

    if (size < RELAY_QUEUE_TRAILER_LEN) {
        return RELAY_QUEUE_INCOMPLETE;
    }

    buf = malloc(size + 1);
    if (buf == NULL) {
        *err = ENOMEM;
        return RELAY_QUEUE_ERROR;
    }

    for (len = 0; len < (size_t) size; len += n) {
        n = pread(fd, buf + len, size - len, len);

        if (n == -1 && errno == EINTR) {
            n = 0;
            continue;
        }

        if (n <= 0) {
            free(buf);

            if (n == 0) {
                return RELAY_QUEUE_INCOMPLETE;     /* cut short meanwhile */
            }

            *err = errno;
            return RELAY_QUEUE_ERROR;
        }
    }

    rc = relay_queue_header_end(buf, size, &end, err);
    if (rc != RELAY_QUEUE_OK) {
        free(buf);
        return rc;
    }

    return relay_queue_take_header(m, buf, end, size, err);
}


/*
 * A queue file's octets already in memory (the writer of a new message
 * still has them all): parsed as relay_queue_read() parses the file, with
 * a copy of the header only.  "mtime" stands for the file's.
 */

int
relay_queue_read_memory(const unsigned char *data, size_t size,
    time_t mtime, relay_queue_msg_t *m, int *err)
{
    int             rc;
    unsigned char  *buf, *end;

    memset(m, 0, sizeof(relay_queue_msg_t));
    *err = 0;

    m->size = size;
    m->mtime = mtime;

    rc = relay_queue_header_end(data, size, &end, err);
    if (rc != RELAY_QUEUE_OK) {
        return rc;
    }

    buf = malloc(end + 2 - data + 1);
    if (buf == NULL) {
        *err = ENOMEM;
        return RELAY_QUEUE_ERROR;
    }

    memcpy(buf, data, end + 2 - data);

    return relay_queue_take_header(m, buf, buf + (end - data), size, err);
}


/*
 * A whole queue file's octets: RELAY_QUEUE_OK with *end at the empty line
 * that ends its header; RELAY_QUEUE_INCOMPLETE without a valid trailer;
 * RELAY_QUEUE_ERROR (EINVAL) when no header ends before it.
 */

static int
relay_queue_header_end(const unsigned char *data, off_t size,
    unsigned char **end, int *err)
{
    size_t  limit;

    if (size < RELAY_QUEUE_TRAILER_LEN
        || !relay_queue_trailer_valid(data + size - RELAY_QUEUE_TRAILER_LEN,
                                      size))
    {
        return RELAY_QUEUE_INCOMPLETE;
    }

    limit = size - RELAY_QUEUE_TRAILER_LEN;
    if (limit > RELAY_QUEUE_MAX_HEADER) {
        limit = RELAY_QUEUE_MAX_HEADER;
    }

    *end = memmem(data, limit, "\n\n", 2);
    if (*end == NULL) {
        *err = EINVAL;
        return RELAY_QUEUE_ERROR;
    }

    return RELAY_QUEUE_OK;
}


/*
 * The header read into buf ends at "end" (its empty line): m keeps buf
 * and the message's place in the file of "size" octets.
 */

static int
relay_queue_take_header(relay_queue_msg_t *m, unsigned char *buf,
    unsigned char *end, off_t size, int *err)
{
    m->header = buf;
    m->message_offset = end + 2 - buf;
    m->message_size = size - RELAY_QUEUE_TRAILER_LEN - m->message_offset;

    if (relay_queue_parse(m, buf, end + 1 - buf) != RELAY_QUEUE_OK) {
        *err = EINVAL;
        relay_queue_free(m);
        return RELAY_QUEUE_ERROR;
    }

    return RELAY_QUEUE_OK;
}


/*
 * Parses a header: "RELAY-QUEUE 1\n" up to the "\n" of its last line (len
 * octets, the empty line excluded).  The caller zeroes *m; strings point
 * into header, which the caller keeps; m->rcpts is malloc()ed (free with
 * relay_queue_free(), also after an error).
 */

int
relay_queue_parse(relay_queue_msg_t *m, unsigned char *header, size_t len)
{
    size_t          n;
    unsigned char  *p, *eol, *last;

    last = header + len;

    if (len < sizeof(RELAY_QUEUE_MAGIC) - 1
        || memcmp(header, RELAY_QUEUE_MAGIC, sizeof(RELAY_QUEUE_MAGIC) - 1)
           != 0)
    {
        return RELAY_QUEUE_ERROR;
    }

    n = 0;

    for (p = header; p < last; p = eol + 1) {
        eol = memchr(p, '\n', last - p);
        if (eol == NULL) {
            return RELAY_QUEUE_ERROR;     /* a header ends with a line end */
        }

        n += (eol - p > 5 && memcmp(p, "rcpt ", 5) == 0);
    }

    m->rcpts = calloc(n ? n : 1, sizeof(relay_queue_rcpt_t));
    if (m->rcpts == NULL) {
        return RELAY_QUEUE_ERROR;
    }

    for (p = header + sizeof(RELAY_QUEUE_MAGIC) - 1; p < last; p = eol + 1) {
        eol = memchr(p, '\n', last - p);

        if (relay_queue_parse_line(m, header, p, eol) != RELAY_QUEUE_OK) {
            return RELAY_QUEUE_ERROR;
        }
    }

    m->eightbit = (m->body == RELAY_QUEUE_BODY_8BITMIME);

    return (m->id.len && m->nrcpts) ? RELAY_QUEUE_OK : RELAY_QUEUE_ERROR;
}


static int
relay_queue_parse_line(relay_queue_msg_t *m, unsigned char *header,
    unsigned char *p, unsigned char *eol)
{
    size_t                    i;
    const relay_queue_key_t  *k;

    for (i = 0; i < sizeof(relay_queue_keys) / sizeof(relay_queue_keys[0]);
         i++)
    {
        k = &relay_queue_keys[i];

        if ((size_t) (eol - p) > k->len && p[k->len] == ' '
            && memcmp(p, k->name, k->len) == 0)
        {
            return k->parse(m, k, header, p + k->len + 1, eol);
        }
    }

    return RELAY_QUEUE_OK;                /* a key of a later version */
}


static int
relay_queue_parse_string(relay_queue_msg_t *m, const relay_queue_key_t *k,
    unsigned char *header, unsigned char *v, unsigned char *eol)
{
    relay_str_t  *s;

    s = (relay_str_t *) ((char *) m + k->offset);
    s->data = v;
    s->len = eol - v;

    return RELAY_QUEUE_OK;
}


/* "-" is the empty value */

static int
relay_queue_parse_dash(relay_queue_msg_t *m, const relay_queue_key_t *k,
    unsigned char *header, unsigned char *v, unsigned char *eol)
{
    if (eol - v == 1 && *v == '-') {
        return RELAY_QUEUE_OK;
    }

    return relay_queue_parse_string(m, k, header, v, eol);
}


static int
relay_queue_parse_arrival(relay_queue_msg_t *m, const relay_queue_key_t *k,
    unsigned char *header, unsigned char *v, unsigned char *eol)
{
    long long  t;

    if (relay_queue_number(v, eol, &t) != RELAY_QUEUE_OK) {
        return RELAY_QUEUE_ERROR;
    }

    m->arrival = (time_t) t;

    return RELAY_QUEUE_OK;
}


static int
relay_queue_parse_smtputf8(relay_queue_msg_t *m, const relay_queue_key_t *k,
    unsigned char *header, unsigned char *v, unsigned char *eol)
{
    m->smtputf8 = (*v == '1');

    return RELAY_QUEUE_OK;
}


/* one of the key's names: its index, the first (0) for any other word */

static int
relay_queue_parse_keyword(relay_queue_msg_t *m, const relay_queue_key_t *k,
    unsigned char *header, unsigned char *v, unsigned char *eol)
{
    int  i;

    i = relay_queue_name_index(k->names, k->nnames, v, eol);

    *(unsigned *) ((char *) m + k->offset) = (i == -1) ? 0 : (unsigned) i;

    return RELAY_QUEUE_OK;
}


/* "next NNNNNNNNNN AAAA": fixed width; another width is not this line */

static int
relay_queue_parse_next(relay_queue_msg_t *m, const relay_queue_key_t *k,
    unsigned char *header, unsigned char *v, unsigned char *eol)
{
    long long  next, attempts;

    if (eol - v != RELAY_QUEUE_NEXT_LEN) {
        return RELAY_QUEUE_OK;
    }

    if (v[10] != ' '
        || relay_queue_number(v, v + 10, &next) != RELAY_QUEUE_OK
        || relay_queue_number(v + 11, eol, &attempts) != RELAY_QUEUE_OK)
    {
        return RELAY_QUEUE_ERROR;
    }

    m->next = (time_t) next;
    m->attempts = (unsigned) attempts;
    m->next_offset = v - header;

    return RELAY_QUEUE_OK;
}


/* "delay-warned 0|1", "hold 0|1": one octet; another width is not it */

static int
relay_queue_parse_flag(relay_queue_msg_t *m, const relay_queue_key_t *k,
    unsigned char *header, unsigned char *v, unsigned char *eol)
{
    if (eol - v == 1) {
        *(off_t *) ((char *) m + k->offset) = v - header;
        *((unsigned char *) m + k->flag) = (*v == '1');
    }

    return RELAY_QUEUE_OK;
}


static int
relay_queue_parse_error(relay_queue_msg_t *m, const relay_queue_key_t *k,
    unsigned char *header, unsigned char *v, unsigned char *eol)
{
    if (eol - v != RELAY_QUEUE_ERROR_LEN) {
        return RELAY_QUEUE_OK;
    }

    m->error_offset = v - header;
    m->last_error.data = v;
    relay_queue_trim_error(m);

    return RELAY_QUEUE_OK;
}


/* "rcpt <state> <notify> <orcpt | -> <address>": the address ends the line */

static int
relay_queue_parse_rcpt(relay_queue_msg_t *m, const relay_queue_key_t *k,
    unsigned char *header, unsigned char *v, unsigned char *eol)
{
    unsigned char       *p, *sp;
    relay_queue_rcpt_t  *r;

    if (eol - v < 7 || v[1] != ' ') {
        return RELAY_QUEUE_ERROR;
    }

    r = &m->rcpts[m->nrcpts];

    r->state = v[0];
    r->state_offset = v - header;

    p = v + 2;
    sp = memchr(p, ' ', eol - p);
    if (sp == NULL) {
        return RELAY_QUEUE_ERROR;
    }

    r->notify = relay_queue_parse_notify(p, sp);

    p = sp + 1;
    sp = memchr(p, ' ', eol - p);
    if (sp == NULL || sp + 1 == eol) {
        return RELAY_QUEUE_ERROR;
    }

    if (!(sp - p == 1 && *p == '-')) {
        r->orcpt.data = p;
        r->orcpt.len = sp - p;
    }

    r->addr.data = sp + 1;
    r->addr.len = eol - sp - 1;

    m->nrcpts++;

    return RELAY_QUEUE_OK;
}


static unsigned
relay_queue_parse_notify(unsigned char *p, unsigned char *last)
{
    size_t          i;
    unsigned        notify;
    unsigned char  *comma;

    static const struct {
        const char  *name;
        size_t       len;
        unsigned     bit;
    } words[] = {
        { relay_queue_literal("NEVER"), RELAY_QUEUE_NOTIFY_NEVER },
        { relay_queue_literal("SUCCESS"), RELAY_QUEUE_NOTIFY_SUCCESS },
        { relay_queue_literal("FAILURE"), RELAY_QUEUE_NOTIFY_FAILURE },
        { relay_queue_literal("DELAY"), RELAY_QUEUE_NOTIFY_DELAY }
    };

    notify = 0;

    while (p < last) {
        comma = memchr(p, ',', last - p);
        if (comma == NULL) {
            comma = last;
        }

        for (i = 0; i < sizeof(words) / sizeof(words[0]); i++) {
            if ((size_t) (comma - p) == words[i].len
                && memcmp(p, words[i].name, words[i].len) == 0)
            {
                notify |= words[i].bit;
            }
        }

        p = comma + 1;
    }

    return notify;
}


/* decimal digits only: up to 20 of them (zero-padded), as a long long */

static int
relay_queue_number(unsigned char *p, unsigned char *last, long long *value)
{
    long long  v;

    if (p == last || last - p > 20) {
        return RELAY_QUEUE_ERROR;
    }

    for (v = 0; p < last; p++) {
        if (*p < '0' || *p > '9' || v > (LLONG_MAX - 9) / 10) {
            return RELAY_QUEUE_ERROR;
        }

        v = v * 10 + (*p - '0');
    }

    *value = v;

    return RELAY_QUEUE_OK;
}


static int
relay_queue_name_index(const relay_str_t *names, size_t n, unsigned char *p,
    unsigned char *last)
{
    size_t  i;

    for (i = 0; i < n; i++) {
        if ((size_t) (last - p) == names[i].len
            && memcmp(p, names[i].data, names[i].len) == 0)
        {
            return (int) i;
        }
    }

    return -1;
}


static void
relay_queue_trim_error(relay_queue_msg_t *m)
{
    m->last_error.len = RELAY_QUEUE_ERROR_LEN;

    while (m->last_error.len
           && m->last_error.data[m->last_error.len - 1] == ' ')
    {
        m->last_error.len--;
    }
}


void
relay_queue_free(relay_queue_msg_t *m)
{
    free(m->header);
    free(m->rcpts);
    m->header = NULL;
    m->rcpts = NULL;
    m->nrcpts = 0;
}


/* ---------------------------------------------------------------- writing */


/* the octets relay_queue_render_envelope() writes */

size_t
relay_queue_envelope_len(const relay_queue_envelope_t *env)
{
    size_t  len;

    len = sizeof(RELAY_QUEUE_MAGIC) - 1
          + sizeof("id \narrival \nclient \nhelo \nauth \nbody \n"
                   "smtputf8 0\nret \nenvid \nsender \n"
                   "next 0000000000 0000\ndelay-warned 0\nhold 0\n"
                   "error \n") - 1
          + RELAY_QUEUE_ERROR_LEN
          + env->id.len + env->client.len + env->helo.len + env->sender.len
          + (env->auth.len ? env->auth.len : 1)
          + (env->envid.len ? env->envid.len : 1)
          + relay_queue_body_name(env)->len
          + relay_queue_ret_name(env)->len
          + snprintf(NULL, 0, "%lld", (long long) env->arrival);

    if (env->tenant.len) {
        len += sizeof("tenant \n") - 1 + env->tenant.len;
    }

    return len;
}


/*
 * A new file's header up to its recipients: the keys in the order the
 * spool has always written them, the fixed-width fields at their start
 * values.  Then one relay_queue_render_rcpt() per recipient and "\n".
 */

unsigned char *
relay_queue_render_envelope(unsigned char *p,
    const relay_queue_envelope_t *env)
{
    char                number[32];
    const relay_str_t  *body, *ret;

    body = relay_queue_body_name(env);
    ret = relay_queue_ret_name(env);

    p = relay_queue_cpy(p, relay_queue_literal(RELAY_QUEUE_MAGIC));

    p = relay_queue_cpy(p, relay_queue_literal("id "));
    p = relay_queue_cpy(p, env->id.data, env->id.len);

    p = relay_queue_cpy(p, relay_queue_literal("\narrival "));
    p = relay_queue_cpy(p, number, snprintf(number, sizeof(number), "%lld",
                                            (long long) env->arrival));

    p = relay_queue_cpy(p, relay_queue_literal("\nclient "));
    p = relay_queue_cpy(p, env->client.data, env->client.len);

    p = relay_queue_cpy(p, relay_queue_literal("\nhelo "));
    p = relay_queue_cpy(p, env->helo.data, env->helo.len);

    p = relay_queue_cpy(p, relay_queue_literal("\nauth "));
    p = env->auth.len ? relay_queue_cpy(p, env->auth.data, env->auth.len)
                      : relay_queue_cpy(p, "-", 1);

    p = relay_queue_cpy(p, relay_queue_literal("\nbody "));
    p = relay_queue_cpy(p, body->data, body->len);

    p = relay_queue_cpy(p, env->smtputf8 ? "\nsmtputf8 1\nret "
                                         : "\nsmtputf8 0\nret ", 16);
    p = relay_queue_cpy(p, ret->data, ret->len);

    p = relay_queue_cpy(p, relay_queue_literal("\nenvid "));
    p = env->envid.len ? relay_queue_cpy(p, env->envid.data, env->envid.len)
                       : relay_queue_cpy(p, "-", 1);

    if (env->tenant.len) {
        p = relay_queue_cpy(p, relay_queue_literal("\ntenant "));
        p = relay_queue_cpy(p, env->tenant.data, env->tenant.len);
    }

    p = relay_queue_cpy(p, relay_queue_literal("\nsender "));
    p = relay_queue_cpy(p, env->sender.data, env->sender.len);

    p = relay_queue_cpy(p, relay_queue_literal("\nnext 0000000000 0000"
                                               "\ndelay-warned 0\nhold 0"
                                               "\nerror "));
    memset(p, ' ', RELAY_QUEUE_ERROR_LEN);
    p += RELAY_QUEUE_ERROR_LEN;
    *p++ = '\n';

    return p;
}


static const relay_str_t *
relay_queue_body_name(const relay_queue_envelope_t *env)
{
    return &relay_queue_body_names[env->body < sizeof(relay_queue_body_names)
                                               / sizeof(relay_str_t)
                                   ? env->body : 0];
}


static const relay_str_t *
relay_queue_ret_name(const relay_queue_envelope_t *env)
{
    return &relay_queue_ret_names[env->ret < sizeof(relay_queue_ret_names)
                                             / sizeof(relay_str_t)
                                  ? env->ret : 0];
}


size_t
relay_queue_rcpt_len(unsigned notify, const relay_str_t *orcpt,
    const relay_str_t *addr)
{
    return sizeof("rcpt P   \n") - 1 + relay_queue_notify_len(notify)
           + (orcpt->len ? orcpt->len : 1) + addr->len;
}


/* "rcpt P <notify> <orcpt | -> <address>\n", a pending recipient */

unsigned char *
relay_queue_render_rcpt(unsigned char *p, unsigned notify,
    const relay_str_t *orcpt, const relay_str_t *addr)
{
    unsigned char  *start;

    p = relay_queue_cpy(p, relay_queue_literal("rcpt P "));

    if (notify & RELAY_QUEUE_NOTIFY_NEVER) {
        p = relay_queue_cpy(p, relay_queue_literal("NEVER"));

    } else {
        start = p;

        if (notify & RELAY_QUEUE_NOTIFY_SUCCESS) {
            p = relay_queue_cpy(p, relay_queue_literal("SUCCESS,"));
        }

        if (notify & RELAY_QUEUE_NOTIFY_FAILURE) {
            p = relay_queue_cpy(p, relay_queue_literal("FAILURE,"));
        }

        if (notify & RELAY_QUEUE_NOTIFY_DELAY) {
            p = relay_queue_cpy(p, relay_queue_literal("DELAY,"));
        }

        if (p == start) {
            *p++ = '-';

        } else {
            p--;                          /* the last comma */
        }
    }

    *p++ = ' ';

    p = orcpt->len ? relay_queue_cpy(p, orcpt->data, orcpt->len)
                   : relay_queue_cpy(p, "-", 1);

    *p++ = ' ';
    p = relay_queue_cpy(p, addr->data, addr->len);
    *p++ = '\n';

    return p;
}


static size_t
relay_queue_notify_len(unsigned notify)
{
    size_t  len;

    if (notify & RELAY_QUEUE_NOTIFY_NEVER) {
        return sizeof("NEVER") - 1;
    }

    len = 0;

    if (notify & RELAY_QUEUE_NOTIFY_SUCCESS) {
        len += sizeof("SUCCESS,") - 1;
    }

    if (notify & RELAY_QUEUE_NOTIFY_FAILURE) {
        len += sizeof("FAILURE,") - 1;
    }

    if (notify & RELAY_QUEUE_NOTIFY_DELAY) {
        len += sizeof("DELAY,") - 1;
    }

    return len ? len - 1 : 1;             /* no last comma, or "-" */
}


/* RELAY_QUEUE_TRAILER_LEN octets; offset is where the trailer starts */

unsigned char *
relay_queue_render_trailer(unsigned char *p, off_t offset)
{
    char  buf[64];

    (void) snprintf(buf, sizeof(buf), "\nRELAY-END %020lld\n",
                    (long long) offset);

    return relay_queue_cpy(p, buf, RELAY_QUEUE_TRAILER_LEN);
}


static unsigned char *
relay_queue_cpy(unsigned char *p, const void *s, size_t len)
{
    if (len == 0) {
        return p;                         /* s may be NULL then */
    }

    memcpy(p, s, len);

    return p + len;
}


/* ---------------------------------------------------------------- in place */


int
relay_queue_set_state(int fd, relay_queue_rcpt_t *r, unsigned char state,
    int *err)
{
    if (relay_queue_pwrite(fd, &state, 1, r->state_offset, err)
        != RELAY_QUEUE_OK)
    {
        return RELAY_QUEUE_ERROR;
    }

    r->state = state;

    return RELAY_QUEUE_OK;
}


int
relay_queue_set_schedule(int fd, relay_queue_msg_t *m, time_t next,
    unsigned attempts, int *err)
{
    long long  t;
    char       buf[32];

    if (m->next_offset == 0) {
        return RELAY_QUEUE_ABSENT;
    }

    t = next < 0 ? 0 : (long long) next;
    t = t > RELAY_QUEUE_NEXT_MAX ? RELAY_QUEUE_NEXT_MAX : t;
    attempts = attempts > RELAY_QUEUE_ATTEMPTS_MAX ? RELAY_QUEUE_ATTEMPTS_MAX
                                                   : attempts;

    (void) snprintf(buf, sizeof(buf), "%010lld %04u", t, attempts);

    if (relay_queue_pwrite(fd, buf, RELAY_QUEUE_NEXT_LEN, m->next_offset, err)
        != RELAY_QUEUE_OK)
    {
        return RELAY_QUEUE_ERROR;
    }

    m->next = (time_t) t;
    m->attempts = attempts;

    return RELAY_QUEUE_OK;
}


/* one line of at most 200 octets: control characters become spaces */

int
relay_queue_set_error(int fd, relay_queue_msg_t *m, const unsigned char *text,
    size_t len, int *err)
{
    size_t         i;
    unsigned char  buf[RELAY_QUEUE_ERROR_LEN];

    if (m->error_offset == 0) {
        return RELAY_QUEUE_ABSENT;
    }

    len = len < RELAY_QUEUE_ERROR_LEN ? len : RELAY_QUEUE_ERROR_LEN;

    for (i = 0; i < len; i++) {
        buf[i] = (text[i] < 0x20 || text[i] == 0x7f) ? ' ' : text[i];
    }

    memset(buf + len, ' ', RELAY_QUEUE_ERROR_LEN - len);

    if (relay_queue_pwrite(fd, buf, RELAY_QUEUE_ERROR_LEN, m->error_offset,
                           err)
        != RELAY_QUEUE_OK)
    {
        return RELAY_QUEUE_ERROR;
    }

    if (m->last_error.data) {
        memcpy(m->last_error.data, buf, RELAY_QUEUE_ERROR_LEN);
        relay_queue_trim_error(m);
    }

    return RELAY_QUEUE_OK;
}


int
relay_queue_set_delay_warned(int fd, relay_queue_msg_t *m, int *err)
{
    if (m->warned_offset == 0) {
        return RELAY_QUEUE_ABSENT;
    }

    if (relay_queue_pwrite(fd, "1", 1, m->warned_offset, err)
        != RELAY_QUEUE_OK)
    {
        return RELAY_QUEUE_ERROR;
    }

    m->delay_warned = 1;

    return RELAY_QUEUE_OK;
}


int
relay_queue_set_hold(int fd, relay_queue_msg_t *m, int hold, int *err)
{
    if (m->hold_offset == 0) {
        return RELAY_QUEUE_ABSENT;
    }

    if (relay_queue_pwrite(fd, hold ? "1" : "0", 1, m->hold_offset, err)
        != RELAY_QUEUE_OK)
    {
        return RELAY_QUEUE_ERROR;
    }

    m->held = hold ? 1 : 0;

    return RELAY_QUEUE_OK;
}


static int
relay_queue_pwrite(int fd, const void *buf, size_t len, off_t offset,
    int *err)
{
    ssize_t  n;

    do {
        n = pwrite(fd, buf, len, offset);
    } while (n == -1 && errno == EINTR);

    if (n == (ssize_t) len) {
        return RELAY_QUEUE_OK;
    }

    *err = (n == -1) ? errno : EIO;

    return RELAY_QUEUE_ERROR;
}


/* ---------------------------------------------------------------- actions */


/* a queue id: 1 to 32 octets, no "/" and no "." (temporary names have) */

int
relay_queue_name_valid(const char *name)
{
    size_t  len;

    len = strlen(name);

    return len && len <= RELAY_QUEUE_ID_LEN && strpbrk(name, "/.") == NULL;
}


/*
 * Opens queue/<name> and takes its lock without waiting: RELAY_QUEUE_OK
 * with *fd, RELAY_QUEUE_BUSY (someone holds it: a worker delivering the
 * message, or its session still writing it), RELAY_QUEUE_GONE, or
 * RELAY_QUEUE_ERROR with *err.
 */

int
relay_queue_open_locked(int queue_fd, const char *name, int *fd, int *err)
{
    int          f, e;
    struct stat  st;

    *fd = -1;
    *err = 0;

    if (!relay_queue_name_valid(name)) {
        return RELAY_QUEUE_GONE;
    }

    f = relay_queue_openat(queue_fd, name, O_RDWR|O_CLOEXEC);
    if (f == -1) {
        if (errno == ENOENT) {
            return RELAY_QUEUE_GONE;
        }

        *err = errno;
        return RELAY_QUEUE_ERROR;
    }

    if (flock(f, LOCK_EX|LOCK_NB) == -1) {
        e = errno;
        (void) close(f);

        if (e == EWOULDBLOCK) {
            return RELAY_QUEUE_BUSY;
        }

        *err = e;
        return RELAY_QUEUE_ERROR;
    }

    /* removed by its previous owner between our open() and flock() */

    if (fstat(f, &st) == -1 || st.st_nlink == 0) {
        (void) close(f);
        return RELAY_QUEUE_GONE;
    }

    *fd = f;

    return RELAY_QUEUE_OK;
}


/*
 * One operator action on one message, under its lock.  res->rc is the
 * outcome: RELAY_QUEUE_OK (done), _BUSY, _GONE, _INCOMPLETE,
 * _NOT_APPLICABLE (res->why says why) or _ERROR (res->err, res->why the
 * call that failed).  The caller writes the note.
 */

int
relay_queue_act(int queue_fd, const char *name, relay_queue_action_e action,
    time_t now, relay_queue_result_t *res)
{
    int                fd, rc;
    relay_queue_msg_t  m;

    memset(res, 0, sizeof(relay_queue_result_t));

    rc = relay_queue_open_locked(queue_fd, name, &fd, &res->err);
    if (rc != RELAY_QUEUE_OK) {
        res->why = (rc == RELAY_QUEUE_ERROR) ? "open" : NULL;
        res->rc = rc;
        return rc;
    }

    rc = relay_queue_read(fd, &m, &res->err);

    if (rc == RELAY_QUEUE_ERROR) {
        res->why = "read";

    } else if (rc == RELAY_QUEUE_OK) {

        switch (action) {

        case relay_queue_flush:
            rc = relay_queue_act_flush(fd, &m, now, res);
            break;

        case relay_queue_hold:
            rc = relay_queue_act_hold(fd, &m, res);
            break;

        case relay_queue_release:
            rc = relay_queue_act_release(fd, &m, now, res);
            break;

        case relay_queue_delete:
            rc = relay_queue_act_delete(queue_fd, name, res);
            break;

        case relay_queue_bounce:
            rc = relay_queue_act_bounce(fd, &m, now, res);
            break;

        default:
            res->why = "unknown action";
            rc = RELAY_QUEUE_NOT_APPLICABLE;
            break;
        }

        relay_queue_free(&m);
    }

    (void) close(fd);

    res->rc = rc;

    return rc;
}


/*
 * Due now; a held message stays held.  Not synced: only a time changes,
 * and a flush lost in a crash makes the message wait for its own time, as
 * a deferral's time does (flushing a million messages costs no million
 * disk flushes).
 */

static int
relay_queue_act_flush(int fd, relay_queue_msg_t *m, time_t now,
    relay_queue_result_t *res)
{
    switch (relay_queue_set_schedule(fd, m, now, m->attempts, &res->err)) {

    case RELAY_QUEUE_OK:
        return RELAY_QUEUE_OK;

    case RELAY_QUEUE_ABSENT:
        res->why = "no \"next\" line";
        return RELAY_QUEUE_NOT_APPLICABLE;

    default:
        res->why = "pwrite";
        return RELAY_QUEUE_ERROR;
    }
}


static int
relay_queue_act_hold(int fd, relay_queue_msg_t *m, relay_queue_result_t *res)
{
    if (m->hold_offset == 0) {
        res->why = "queued before holds existed (no \"hold\" line)";
        return RELAY_QUEUE_NOT_APPLICABLE;
    }

    if (m->held) {
        res->why = "already held";
        return RELAY_QUEUE_NOT_APPLICABLE;
    }

    if (relay_queue_set_hold(fd, m, 1, &res->err) != RELAY_QUEUE_OK) {
        res->why = "pwrite";
        return RELAY_QUEUE_ERROR;
    }

    return relay_queue_sync(fd, res);
}


/* not held any more, and due now */

static int
relay_queue_act_release(int fd, relay_queue_msg_t *m, time_t now,
    relay_queue_result_t *res)
{
    if (!m->held) {
        res->why = "not held";
        return RELAY_QUEUE_NOT_APPLICABLE;
    }

    return relay_queue_due_now(fd, m, now, res);
}


/* no DSN; the lock is still ours, so no worker is delivering it */

static int
relay_queue_act_delete(int queue_fd, const char *name,
    relay_queue_result_t *res)
{
    if (unlinkat(queue_fd, name, 0) == -1) {
        res->err = errno;
        res->why = "unlink";
        return RELAY_QUEUE_ERROR;
    }

    return RELAY_QUEUE_OK;
}


/*
 * Pending recipients become "B"; the next attempt, due now and not held,
 * fails them ("5.0.0 message bounced by the operator") and sends the DSN.
 */

static int
relay_queue_act_bounce(int fd, relay_queue_msg_t *m, time_t now,
    relay_queue_result_t *res)
{
    size_t  i;

    for (i = 0; i < m->nrcpts; i++) {
        if (m->rcpts[i].state != RELAY_QUEUE_RCPT_PENDING) {
            continue;
        }

        if (relay_queue_set_state(fd, &m->rcpts[i], RELAY_QUEUE_RCPT_BOUNCE,
                                  &res->err)
            != RELAY_QUEUE_OK)
        {
            res->why = "pwrite";
            return RELAY_QUEUE_ERROR;
        }

        res->bounced++;
    }

    if (res->bounced == 0) {
        res->why = "no pending recipient";
        return RELAY_QUEUE_NOT_APPLICABLE;
    }

    return relay_queue_due_now(fd, m, now, res);
}


/* not held (any more) and due now, synced */

static int
relay_queue_due_now(int fd, relay_queue_msg_t *m, time_t now,
    relay_queue_result_t *res)
{
    if ((m->held
         && relay_queue_set_hold(fd, m, 0, &res->err) != RELAY_QUEUE_OK)
        || relay_queue_set_schedule(fd, m, now, m->attempts, &res->err)
           == RELAY_QUEUE_ERROR)
    {
        res->why = "pwrite";
        return RELAY_QUEUE_ERROR;
    }

    return relay_queue_sync(fd, res);
}


static int
relay_queue_sync(int fd, relay_queue_result_t *res)
{
    if (fdatasync(fd) == -1) {
        res->err = errno;
        res->why = "fdatasync";
        return RELAY_QUEUE_ERROR;
    }

    return RELAY_QUEUE_OK;
}


const char *
relay_queue_action_name(relay_queue_action_e action)
{
    if ((unsigned) action
        >= sizeof(relay_queue_action_names) / sizeof(char *))
    {
        return "unknown";
    }

    return relay_queue_action_names[action];
}


/* the outcome in words; errors: the failed call (add strerror(res->err)) */

const char *
relay_queue_result_text(const relay_queue_result_t *res)
{
    switch (res->rc) {

    case RELAY_QUEUE_OK:
        return "done";

    case RELAY_QUEUE_BUSY:
        return "in delivery now, try again";

    case RELAY_QUEUE_GONE:
        return "no such message";

    case RELAY_QUEUE_INCOMPLETE:
        return "incomplete: being written, or left by a crash";

    case RELAY_QUEUE_NOT_APPLICABLE:
    case RELAY_QUEUE_ERROR:
        return res->why ? res->why : "failed";

    default:
        return "unknown outcome";
    }
}


/* ---------------------------------------------------------------- notes */


/*
 * A note tells running workers which messages an operator changed:
 * <spool>/notes/<10-digit unix time>.<pid>.<seq>, one queue id a line, or
 * the one line "*" (read the whole queue again).  It is written under a
 * "." name and renamed, so readers see whole notes only; it is not synced
 * (a note is a hint).  Each writer removes notes older than
 * RELAY_QUEUE_NOTE_MAX_AGE on its way.
 */

void
relay_queue_note_init(relay_queue_note_t *n)
{
    memset(n, 0, sizeof(relay_queue_note_t));
}


/* out of memory or too many ids: the note says "*", which covers them */

void
relay_queue_note_add(relay_queue_note_t *n, const char *id)
{
    char    *ids;
    size_t   len, size;

    if (n->whole) {
        return;
    }

    len = strlen(id);

    if (n->n >= RELAY_QUEUE_NOTE_MAX_IDS || len == 0 || strchr(id, '\n')) {
        relay_queue_note_whole(n);
        return;
    }

    if (n->len + len + 1 > n->size) {
        size = (n->size ? n->size * 2 : 1024) + len + 1;

        ids = realloc(n->ids, size);
        if (ids == NULL) {
            relay_queue_note_whole(n);
            return;
        }

        n->ids = ids;
        n->size = size;
    }

    memcpy(n->ids + n->len, id, len);
    n->ids[n->len + len] = '\n';
    n->len += len + 1;
    n->n++;
}


void
relay_queue_note_whole(relay_queue_note_t *n)
{
    n->whole = 1;
}


/* nothing added: no note */

int
relay_queue_note_write(int spool_fd, relay_queue_note_t *n, time_t now,
    int *err)
{
    int            notes_fd, rc;
    char           name[64], tmp[72];
    unsigned long  seq;

    *err = 0;

    if (!n->whole && n->n == 0) {
        return RELAY_QUEUE_OK;
    }

    notes_fd = relay_queue_notes_dir(spool_fd, err);
    if (notes_fd == -1) {
        return RELAY_QUEUE_ERROR;
    }

    relay_queue_notes_expire(notes_fd, now);

    seq = __atomic_add_fetch(&relay_queue_note_seq, 1, __ATOMIC_RELAXED);

    (void) snprintf(name, sizeof(name), "%010lld.%ld.%lu",
                    (long long) now, (long) getpid(), seq);
    (void) snprintf(tmp, sizeof(tmp), ".%s.tmp", name);

    rc = n->whole ? relay_queue_note_put(notes_fd, tmp, "*\n", 2, err)
                  : relay_queue_note_put(notes_fd, tmp, n->ids, n->len, err);

    if (rc == RELAY_QUEUE_OK && renameat(notes_fd, tmp, notes_fd, name) == -1)
    {
        *err = errno;
        (void) unlinkat(notes_fd, tmp, 0);
        rc = RELAY_QUEUE_ERROR;
    }

    (void) close(notes_fd);

    return rc;
}


void
relay_queue_note_free(relay_queue_note_t *n)
{
    free(n->ids);
    relay_queue_note_init(n);
}


/* notes/, made when missing (nginx makes it at start), owned as the spool */

static int
relay_queue_notes_dir(int spool_fd, int *err)
{
    int          fd;
    struct stat  st;

    fd = openat(spool_fd, RELAY_QUEUE_NOTES_DIR,
                O_RDONLY|O_DIRECTORY|O_CLOEXEC);
    if (fd != -1 || errno != ENOENT) {
        *err = (fd == -1) ? errno : 0;
        return fd;
    }

    if (mkdirat(spool_fd, RELAY_QUEUE_NOTES_DIR, 0700) == -1
        && errno != EEXIST)
    {
        *err = errno;
        return -1;
    }

    fd = openat(spool_fd, RELAY_QUEUE_NOTES_DIR,
                O_RDONLY|O_DIRECTORY|O_CLOEXEC);
    if (fd == -1) {
        *err = errno;
        return -1;
    }

    /* root made it: the workers must read it */

    if (geteuid() == 0 && fstat(spool_fd, &st) == 0) {
        if (fchown(fd, st.st_uid, st.st_gid) == -1) {
            *err = errno;
            (void) close(fd);
            return -1;
        }
    }

    return fd;
}


static void
relay_queue_notes_expire(int notes_fd, time_t now)
{
    int             dfd;
    DIR            *dir;
    char           *p;
    long long       t;
    struct dirent  *de;

    dfd = openat(notes_fd, ".", O_RDONLY|O_DIRECTORY|O_CLOEXEC);
    if (dfd == -1) {
        return;
    }

    dir = fdopendir(dfd);
    if (dir == NULL) {
        (void) close(dfd);
        return;
    }

    while ((de = readdir(dir)) != NULL) {
        p = de->d_name + (de->d_name[0] == '.');

        if (strlen(p) <= 10 || p[10] != '.'
            || relay_queue_number((unsigned char *) p,
                                  (unsigned char *) p + 10, &t)
               != RELAY_QUEUE_OK)
        {
            continue;
        }

        if (t + RELAY_QUEUE_NOTE_MAX_AGE < (long long) now) {
            (void) unlinkat(notes_fd, de->d_name, 0);
        }
    }

    (void) closedir(dir);
}


static int
relay_queue_note_put(int notes_fd, const char *tmp, const char *data,
    size_t len, int *err)
{
    int      fd;
    ssize_t  n;

    fd = openat(notes_fd, tmp, O_WRONLY|O_CREAT|O_TRUNC|O_CLOEXEC, 0644);
    if (fd == -1) {
        *err = errno;
        return RELAY_QUEUE_ERROR;
    }

    while (len) {
        n = write(fd, data, len);

        if (n == -1 && errno == EINTR) {
            continue;
        }

        if (n <= 0) {
            *err = (n == -1) ? errno : EIO;
            (void) close(fd);
            (void) unlinkat(notes_fd, tmp, 0);
            return RELAY_QUEUE_ERROR;
        }

        data += n;
        len -= n;
    }

    if (close(fd) == -1) {
        *err = errno;
        (void) unlinkat(notes_fd, tmp, 0);
        return RELAY_QUEUE_ERROR;
    }

    return RELAY_QUEUE_OK;
}


/* ---------------------------------------------------------------- listing */


const char *
relay_queue_state_name(unsigned state)
{
    size_t  i;

    for (i = 0; i < sizeof(relay_queue_states) / sizeof(relay_queue_states[0]);
         i++)
    {
        if (relay_queue_states[i].state == state) {
            return relay_queue_states[i].name;
        }
    }

    return "unknown";
}


/* a state's bit, 0 for an unknown name */

unsigned
relay_queue_state_parse(const char *name)
{
    size_t  i;

    for (i = 0; i < sizeof(relay_queue_states) / sizeof(relay_queue_states[0]);
         i++)
    {
        if (strcmp(relay_queue_states[i].name, name) == 0) {
            return relay_queue_states[i].state;
        }
    }

    return 0;
}


/*
 * One message as a listing shows it.  Whether a worker has it locked is
 * seen in /proc/locks, so the listing itself never takes a lock that
 * could make a worker skip the message; without /proc, flock(LOCK_SH)
 * asks, for an instant.  RELAY_QUEUE_GONE, _ERROR (EINVAL: not a queue
 * file) or _OK: free e->msg with relay_queue_free().
 */

int
relay_queue_entry_read(int queue_fd, const char *name,
    relay_queue_entry_t *e, int *err)
{
    int                  rc;
    relay_queue_locks_t  locks;

    relay_queue_locks_load(&locks);

    rc = relay_queue_entry_load(queue_fd, name, &locks, e, err);

    free(locks.locks);

    return rc;
}


static int
relay_queue_entry_load(int queue_fd, const char *name,
    relay_queue_locks_t *locks, relay_queue_entry_t *e, int *err)
{
    int                 fd, rc;
    struct stat         st;
    relay_queue_msg_t  *m;

    memset(e, 0, sizeof(relay_queue_entry_t));
    *err = 0;

    if (!relay_queue_name_valid(name)) {
        return RELAY_QUEUE_GONE;
    }

    memcpy(e->name, name, strlen(name) + 1);

    fd = relay_queue_openat(queue_fd, name, O_RDONLY|O_CLOEXEC);
    if (fd == -1) {
        *err = errno;
        return (errno == ENOENT) ? RELAY_QUEUE_GONE : RELAY_QUEUE_ERROR;
    }

    m = &e->msg;

    rc = relay_queue_read(fd, m, err);

    e->size = m->size;
    e->mtime = m->mtime;

    if (rc == RELAY_QUEUE_INCOMPLETE) {
        e->state = RELAY_QUEUE_STATE_INCOMPLETE;
        rc = RELAY_QUEUE_OK;

    } else if (rc == RELAY_QUEUE_OK) {
        if (fstat(fd, &st) == 0 && relay_queue_locks_held(locks, fd, &st)) {
            e->state = RELAY_QUEUE_STATE_ACTIVE;

        } else {
            e->state = m->held ? RELAY_QUEUE_STATE_HELD
                               : m->attempts ? RELAY_QUEUE_STATE_DEFERRED
                                             : RELAY_QUEUE_STATE_NEW;
        }
    }

    (void) close(fd);

    return rc;
}


static void
relay_queue_locks_load(relay_queue_locks_t *locks)
{
    char                *line, *tok[6], *save;
    FILE                *f;
    size_t               size, n, i;
    relay_queue_lock_t   lk, *nlocks;

    memset(locks, 0, sizeof(relay_queue_locks_t));

    f = fopen(RELAY_QUEUE_PROC_LOCKS, "re");
    if (f == NULL) {
        return;
    }

    line = NULL;
    size = 0;
    n = 0;

    /* "7: FLOCK  ADVISORY  WRITE 19629 fe:00:10978392 0 EOF"; "->" waits */

    while (getline(&line, &size, f) != -1) {
        tok[0] = strtok_r(line, " \t\n", &save);

        for (i = 1; i < 6 && tok[i - 1]; i++) {
            tok[i] = strtok_r(NULL, " \t\n", &save);
        }

        if (i < 6 || tok[5] == NULL || strcmp(tok[1], "FLOCK") != 0
            || sscanf(tok[5], "%lx:%lx:%lu", &lk.major, &lk.minor, &lk.ino)
               != 3)
        {
            continue;
        }

        if (locks->n == n) {
            n = n ? n * 2 : 64;

            nlocks = realloc(locks->locks, n * sizeof(relay_queue_lock_t));
            if (nlocks == NULL) {
                break;
            }

            locks->locks = nlocks;
        }

        locks->locks[locks->n++] = lk;
    }

    free(line);

    if (ferror(f) || !feof(f)) {
        (void) fclose(f);
        free(locks->locks);
        memset(locks, 0, sizeof(relay_queue_locks_t));
        return;
    }

    (void) fclose(f);

    if (locks->n) {
        qsort(locks->locks, locks->n, sizeof(relay_queue_lock_t),
              relay_queue_lock_cmp);
    }

    locks->known = 1;
}


static int
relay_queue_locks_held(relay_queue_locks_t *locks, int fd, struct stat *st)
{
    relay_queue_lock_t  key;

    if (!locks->known) {
        if (flock(fd, LOCK_SH|LOCK_NB) == -1) {
            return errno == EWOULDBLOCK;
        }

        (void) flock(fd, LOCK_UN);
        return 0;
    }

    key.major = major(st->st_dev);
    key.minor = minor(st->st_dev);
    key.ino = st->st_ino;

    return locks->n
           && bsearch(&key, locks->locks, locks->n,
                      sizeof(relay_queue_lock_t), relay_queue_lock_cmp)
              != NULL;
}


static int
relay_queue_lock_cmp(const void *a, const void *b)
{
    const relay_queue_lock_t  *x = a, *y = b;

    if (x->ino != y->ino) {
        return x->ino < y->ino ? -1 : 1;
    }

    if (x->major != y->major) {
        return x->major < y->major ? -1 : 1;
    }

    return (x->minor > y->minor) - (x->minor < y->minor);
}


/*
 * Does the entry pass the filter?  Age is the time since arrival (the
 * file's mtime for incomplete files): "older than D" means D or more.
 * sender and recipient match as a substring in any case, or exactly (in
 * any case) when written "<...>", so "<>" is the null sender; recipient
 * and domain look at the recipients still pending (P and B); domain is
 * "example.com" or ".example.com" (that domain and its subdomains).
 * States: 0 takes every complete message; "incomplete" must be asked for.
 */

int
relay_queue_match(const relay_queue_filter_t *f, const relay_queue_entry_t *e,
    time_t now)
{
    time_t    age;
    unsigned  states;

    states = f->states ? f->states
                       : (RELAY_QUEUE_STATE_NEW|RELAY_QUEUE_STATE_DEFERRED
                          |RELAY_QUEUE_STATE_HELD|RELAY_QUEUE_STATE_ACTIVE);

    if (!(e->state & states)) {
        return 0;
    }

    age = now - (e->state == RELAY_QUEUE_STATE_INCOMPLETE ? e->mtime
                                                          : e->msg.arrival);

    if ((f->older_than && age < f->older_than)
        || (f->younger_than && age >= f->younger_than))
    {
        return 0;
    }

    if (e->state == RELAY_QUEUE_STATE_INCOMPLETE) {
        return f->sender == NULL && f->recipient == NULL
               && f->domain == NULL;
    }

    if (f->sender && !relay_queue_match_text(f->sender, &e->msg.sender)) {
        return 0;
    }

    if (f->recipient && !relay_queue_match_rcpts(f->recipient, &e->msg, 0)) {
        return 0;
    }

    if (f->domain && !relay_queue_match_rcpts(f->domain, &e->msg, 1)) {
        return 0;
    }

    return 1;
}


static int
relay_queue_match_rcpts(const char *pattern, const relay_queue_msg_t *m,
    int domain)
{
    size_t                     i;
    const relay_queue_rcpt_t  *r;

    for (i = 0; i < m->nrcpts; i++) {
        r = &m->rcpts[i];

        if (r->state != RELAY_QUEUE_RCPT_PENDING
            && r->state != RELAY_QUEUE_RCPT_BOUNCE)
        {
            continue;
        }

        if (domain ? relay_queue_match_domain(pattern, &r->addr)
                   : relay_queue_match_text(pattern, &r->addr))
        {
            return 1;
        }
    }

    return 0;
}


static int
relay_queue_match_text(const char *pattern, const relay_str_t *s)
{
    size_t  len, i;

    len = strlen(pattern);

    if (len >= 2 && pattern[0] == '<' && pattern[len - 1] == '>') {
        return s->len == len - 2
               && strncasecmp(pattern + 1, (char *) s->data, s->len) == 0;
    }

    for (i = 0; i + len <= s->len; i++) {
        if (strncasecmp(pattern, (char *) s->data + i, len) == 0) {
            return 1;
        }
    }

    return 0;
}


static int
relay_queue_match_domain(const char *pattern, const relay_str_t *addr)
{
    size_t          len, dlen;
    unsigned char  *at, *d;

    at = memrchr(addr->data, '@', addr->len);
    if (at == NULL) {
        return 0;
    }

    d = at + 1;
    dlen = addr->data + addr->len - d;
    len = strlen(pattern);

    if (pattern[0] == '.') {
        if (dlen == len - 1 && strncasecmp(pattern + 1, (char *) d, dlen) == 0)
        {
            return 1;                     /* the domain itself */
        }

        return dlen > len
               && strncasecmp(pattern, (char *) d + dlen - len, len) == 0;
    }

    return dlen == len && strncasecmp(pattern, (char *) d, len) == 0;
}


/*
 * Every queue id, without opening the files: an action on the whole
 * queue reads each file once (under its lock), not twice.
 */

int
relay_queue_each_name(int queue_fd, relay_queue_each_name_pt handler,
    void *data, int *err)
{
    int             dfd;
    DIR            *dir;
    struct dirent  *de;

    *err = 0;

    dfd = openat(queue_fd, ".", O_RDONLY|O_DIRECTORY|O_CLOEXEC);
    if (dfd == -1) {
        *err = errno;
        return RELAY_QUEUE_ERROR;
    }

    dir = fdopendir(dfd);
    if (dir == NULL) {
        *err = errno;
        (void) close(dfd);
        return RELAY_QUEUE_ERROR;
    }

    while ((de = readdir(dir)) != NULL) {
        if (relay_queue_name_valid(de->d_name) && handler(de->d_name, data)) {
            break;
        }
    }

    (void) closedir(dir);

    return RELAY_QUEUE_OK;
}


/*
 * Calls handler(e, data) for every message of queue/ that passes the
 * filter, in directory order, until it returns non-zero.  Files that
 * vanish meanwhile or are not queue files are passed over.  e->msg is
 * freed after the call unless the handler took it (and zeroed e->msg), so
 * the memory is that of one message, whatever the size of the queue.
 */

int
relay_queue_each(int queue_fd, const relay_queue_filter_t *f, time_t now,
    relay_queue_each_pt handler, void *data, int *err)
{
    int                   dfd, rc, stop;
    DIR                  *dir;
    struct dirent        *de;
    relay_queue_entry_t   e;
    relay_queue_locks_t   locks;

    *err = 0;

    dfd = openat(queue_fd, ".", O_RDONLY|O_DIRECTORY|O_CLOEXEC);
    if (dfd == -1) {
        *err = errno;
        return RELAY_QUEUE_ERROR;
    }

    dir = fdopendir(dfd);
    if (dir == NULL) {
        *err = errno;
        (void) close(dfd);
        return RELAY_QUEUE_ERROR;
    }

    relay_queue_locks_load(&locks);

    rc = RELAY_QUEUE_OK;
    stop = 0;

    while (!stop && (de = readdir(dir)) != NULL) {
        if (!relay_queue_name_valid(de->d_name)) {
            continue;
        }

        switch (relay_queue_entry_load(queue_fd, de->d_name, &locks, &e,
                                       err))
        {
        case RELAY_QUEUE_OK:
            break;

        case RELAY_QUEUE_ERROR:
            if (*err != EINVAL) {
                rc = RELAY_QUEUE_ERROR;
                goto done;
            }

            /* fall through */

        default:
            *err = 0;
            continue;                     /* gone, or not a queue file */
        }

        if (relay_queue_match(f, &e, now)) {
            stop = handler(&e, data);
        }

        relay_queue_free(&e.msg);
    }

done:

    (void) closedir(dir);
    free(locks.locks);

    return rc;
}


typedef struct {
    relay_queue_list_t           *list;
    size_t                        max;
    size_t                        size;
    int                           err;
} relay_queue_collect_t;


/*
 * The messages of queue/ that pass the filter, oldest first (then by
 * name), at most max of them (0: all; more sets l->truncated).
 */

int
relay_queue_list(int queue_fd, const relay_queue_filter_t *f, time_t now,
    size_t max, relay_queue_list_t *l, int *err)
{
    relay_queue_collect_t  c;

    memset(l, 0, sizeof(relay_queue_list_t));

    c.list = l;
    c.max = max;
    c.size = 0;
    c.err = 0;

    if (relay_queue_each(queue_fd, f, now, relay_queue_collect, &c, err)
        != RELAY_QUEUE_OK
        || c.err)
    {
        *err = c.err ? c.err : *err;
        relay_queue_list_free(l);
        return RELAY_QUEUE_ERROR;
    }

    if (l->n) {
        qsort(l->entries, l->n, sizeof(relay_queue_entry_t),
              relay_queue_entry_cmp);
    }

    return RELAY_QUEUE_OK;
}


static int
relay_queue_collect(relay_queue_entry_t *e, void *data)
{
    relay_queue_collect_t  *c = data;

    size_t                 size;
    relay_queue_list_t    *l;
    relay_queue_entry_t   *entries;

    l = c->list;

    if (c->max && l->n == c->max) {
        l->truncated = 1;
        return 1;
    }

    if (l->n == c->size) {
        size = c->size ? c->size * 2 : 64;

        entries = realloc(l->entries, size * sizeof(relay_queue_entry_t));
        if (entries == NULL) {
            c->err = ENOMEM;
            return 1;
        }

        l->entries = entries;
        c->size = size;
    }

    l->entries[l->n++] = *e;
    memset(&e->msg, 0, sizeof(relay_queue_msg_t));     /* the list's now */

    return 0;
}


static int
relay_queue_entry_cmp(const void *a, const void *b)
{
    time_t                      ta, tb;
    const relay_queue_entry_t  *x = a, *y = b;

    ta = (x->state == RELAY_QUEUE_STATE_INCOMPLETE) ? x->mtime
                                                    : x->msg.arrival;
    tb = (y->state == RELAY_QUEUE_STATE_INCOMPLETE) ? y->mtime
                                                    : y->msg.arrival;

    if (ta != tb) {
        return ta < tb ? -1 : 1;
    }

    return strcmp(x->name, y->name);
}


void
relay_queue_list_free(relay_queue_list_t *l)
{
    size_t  i;

    for (i = 0; i < l->n; i++) {
        relay_queue_free(&l->entries[i].msg);
    }

    free(l->entries);
    memset(l, 0, sizeof(relay_queue_list_t));
}
