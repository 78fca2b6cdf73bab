
/*
 * Copyright (C) The relay authors
 */


#ifndef _RELAY_QUEUE_H_INCLUDED_
#define _RELAY_QUEUE_H_INCLUDED_


/*
 * Queue files, the one place that knows their format: reading and parsing
 * them, rendering a new header and its trailer, the in-place updates, the
 * lock that says who owns a message, the operator's actions on one
 * message, the notes that tell running workers about those actions, and
 * the listing behind "relayctl queue list" and controld's queue commands.
 *
 * Plain C on libc and POSIX: no nginx header is needed, memory comes from
 * malloc(), nothing is global but an atomic note counter, so any thread
 * may call anything here on its own descriptors.
 *
 * A queue file, <spool>/queue/<id>:
 *
 *   RELAY-QUEUE 1
 *   id <id>
 *   arrival <unix time>
 *   client <address>
 *   helo <name>
 *   auth <user> | -
 *   body - | 7BIT | 8BITMIME | BINARYMIME
 *   smtputf8 0 | 1
 *   ret - | FULL | HDRS
 *   envid <xtext> | -
 *   tenant <name>                   (only with relay_tenant)
 *   sender <address>                (empty for "<>")
 *   next NNNNNNNNNN AAAA            next attempt (unix time), attempts
 *   delay-warned 0 | 1
 *   hold 0 | 1
 *   error <200 octets, space-padded>
 *   rcpt <P|D|F|B> <notify> <orcpt | -> <address>     (one per recipient)
 *   pad <spaces>                    room of a transform at acceptance (DKIM
 *                                   signing) left over: skipped
 *   <empty line>
 *   <the message>
 *   \nRELAY-END <20-digit offset of this trailer>\n
 *
 * Keys this code does not know are skipped.  "next", "delay-warned",
 * "hold", "error" and the recipient state are fixed width and rewritten in
 * place (pwrite()), never by rewriting the file.  Files written before
 * "delay-warned", "hold" or "error" existed lack those lines: they parse,
 * with offset 0 for the missing line.  A file without its trailer is
 * incomplete: a session is still writing it, or died before "250".
 *
 * Ownership: whoever holds flock(LOCK_EX) on a queue file owns it; a
 * worker keeps that lock while it delivers the message, so an operator's
 * action on a locked file answers "busy".
 */


#include <stddef.h>
#include <time.h>
#include <sys/types.h>


#if defined(_NGX_CORE_H_INCLUDED_)
typedef ngx_str_t  relay_str_t;          /* the same layout inside nginx */
#else
typedef struct { size_t len; unsigned char *data; } relay_str_t;
#endif


#define RELAY_QUEUE_MAGIC            "RELAY-QUEUE 1\n"
#define RELAY_QUEUE_TRAILER_LEN      32
#define RELAY_QUEUE_ERROR_LEN        200     /* "error " text, padded */
#define RELAY_QUEUE_MAX_HEADER       (4 * 1024 * 1024)
#define RELAY_QUEUE_SMALL_FILE       16384           /* read in one go */
#define RELAY_QUEUE_ID_LEN           32      /* longest queue id */
#define RELAY_QUEUE_DIR              "queue"
#define RELAY_QUEUE_NOTES_DIR        "notes"
#define RELAY_QUEUE_NOTE_MAX_AGE     600     /* seconds, then removed */
#define RELAY_QUEUE_NOTE_MAX_IDS     10000   /* more: "*" */

/* recipient states, one octet */
#define RELAY_QUEUE_RCPT_PENDING     'P'
#define RELAY_QUEUE_RCPT_DONE        'D'
#define RELAY_QUEUE_RCPT_FAILED      'F'
#define RELAY_QUEUE_RCPT_BOUNCE      'B'     /* an operator's bounce */

/* the values of NGX_RELAY_NOTIFY_*, _BODY_*, _RET_* (ngx_relay_parse.h) */
#define RELAY_QUEUE_NOTIFY_NEVER     0x01
#define RELAY_QUEUE_NOTIFY_SUCCESS   0x02
#define RELAY_QUEUE_NOTIFY_FAILURE   0x04
#define RELAY_QUEUE_NOTIFY_DELAY     0x08

#define RELAY_QUEUE_BODY_NONE        0
#define RELAY_QUEUE_BODY_7BIT        1
#define RELAY_QUEUE_BODY_8BITMIME    2
#define RELAY_QUEUE_BODY_BINARYMIME  3

#define RELAY_QUEUE_RET_NONE         0
#define RELAY_QUEUE_RET_FULL         1
#define RELAY_QUEUE_RET_HDRS         2

/* results */
#define RELAY_QUEUE_OK               0
#define RELAY_QUEUE_ERROR           -1       /* errno in *err */
#define RELAY_QUEUE_INCOMPLETE      -2       /* no trailer */
#define RELAY_QUEUE_ABSENT          -3       /* the file lacks that line */
#define RELAY_QUEUE_BUSY            -4       /* locked: in delivery now */
#define RELAY_QUEUE_GONE            -5       /* no such message */
#define RELAY_QUEUE_NOT_APPLICABLE  -6       /* see the result's "why" */

/* what a message is doing, one bit each (filters take several) */
#define RELAY_QUEUE_STATE_NEW        0x01    /* never tried, not held */
#define RELAY_QUEUE_STATE_DEFERRED   0x02    /* tried, not held */
#define RELAY_QUEUE_STATE_HELD       0x04    /* hold 1 */
#define RELAY_QUEUE_STATE_ACTIVE     0x08    /* locked by a worker now */
#define RELAY_QUEUE_STATE_INCOMPLETE 0x10    /* no trailer */


typedef struct {
    unsigned char                 state;          /* RELAY_QUEUE_RCPT_* */
    off_t                         state_offset;   /* of state, in the file */
    unsigned                      notify;         /* RELAY_QUEUE_NOTIFY_* */
    relay_str_t                   orcpt;          /* len 0: none */
    relay_str_t                   addr;
} relay_queue_rcpt_t;


/* a parsed queue file; strings point into header */

typedef struct {
    unsigned char                *header;         /* malloc()ed text */
    off_t                         message_offset; /* first message octet */
    off_t                         message_size;
    off_t                         size;           /* of the file */
    time_t                        mtime;
    time_t                        arrival;
    relay_str_t                   id;
    relay_str_t                   client;
    relay_str_t                   helo;
    relay_str_t                   auth;           /* len 0: none */
    relay_str_t                   tenant;         /* len 0: none */
    relay_str_t                   envid;          /* len 0: none */
    relay_str_t                   sender;         /* len 0: "<>" */
    unsigned                      body;           /* RELAY_QUEUE_BODY_* */
    unsigned                      ret;            /* RELAY_QUEUE_RET_* */
    time_t                        next;           /* next attempt */
    unsigned                      attempts;
    off_t                         next_offset;    /* of "next"'s value */
    off_t                         warned_offset;  /* 0: no such line */
    off_t                         hold_offset;    /* 0: no such line */
    off_t                         error_offset;   /* 0: no such line */
    relay_str_t                   last_error;     /* padding trimmed */
    unsigned char                 delay_warned;   /* 0 or 1 */
    unsigned char                 held;           /* 0 or 1 */
    unsigned                      smtputf8:1;
    unsigned                      eightbit:1;
    size_t                        nrcpts;
    relay_queue_rcpt_t           *rcpts;
} relay_queue_msg_t;


/* what a new queue file's header says; len 0 strings are "-" or absent */

typedef struct {
    relay_str_t                   id;
    time_t                        arrival;
    relay_str_t                   client;
    relay_str_t                   helo;
    relay_str_t                   auth;
    unsigned                      body;           /* RELAY_QUEUE_BODY_* */
    unsigned                      smtputf8;
    unsigned                      ret;            /* RELAY_QUEUE_RET_* */
    relay_str_t                   envid;
    relay_str_t                   tenant;         /* len 0: no line */
    relay_str_t                   sender;
} relay_queue_envelope_t;


typedef enum {
    relay_queue_flush = 0,                        /* next attempt: now */
    relay_queue_hold,                             /* never tried until */
    relay_queue_release,                          /* ... released: now */
    relay_queue_delete,                           /* unlink, no DSN */
    relay_queue_bounce                            /* P -> B, due now */
} relay_queue_action_e;


typedef struct {
    int                           rc;             /* RELAY_QUEUE_* */
    int                           err;            /* with RELAY_QUEUE_ERROR */
    const char                   *why;            /* not applicable: why;
                                                     error: the call */
    size_t                        bounced;        /* recipients marked B */
} relay_queue_result_t;


/* ids for the running workers, written as one note */

typedef struct {
    char                         *ids;            /* "id\n"..., malloc()ed */
    size_t                        len;
    size_t                        size;
    size_t                        n;
    unsigned                      whole:1;        /* "*": list everything */
} relay_queue_note_t;


typedef struct {
    const char                   *sender;         /* see relay_queue_match */
    const char                   *recipient;
    const char                   *domain;
    time_t                        older_than;     /* seconds; 0: any age */
    time_t                        younger_than;
    unsigned                      states;         /* RELAY_QUEUE_STATE_*;
                                                     0: complete messages */
} relay_queue_filter_t;


typedef struct {
    char                          name[RELAY_QUEUE_ID_LEN + 1];
    unsigned                      state;          /* one RELAY_QUEUE_STATE_ */
    off_t                         size;           /* of the file */
    time_t                        mtime;
    relay_queue_msg_t             msg;            /* zeroed: incomplete */
} relay_queue_entry_t;


typedef int (*relay_queue_each_pt)(relay_queue_entry_t *e, void *data);
typedef int (*relay_queue_each_name_pt)(const char *name, void *data);


typedef struct {
    relay_queue_entry_t          *entries;        /* arrival, then name */
    size_t                        n;
    unsigned                      truncated:1;    /* more than "max" */
} relay_queue_list_t;


/* reading */
int relay_queue_read(int fd, relay_queue_msg_t *m, int *err);
int relay_queue_read_memory(const unsigned char *data, size_t size,
    time_t mtime, relay_queue_msg_t *m, int *err);
int relay_queue_parse(relay_queue_msg_t *m, unsigned char *header,
    size_t len);
int relay_queue_complete(int fd, off_t size);
void relay_queue_free(relay_queue_msg_t *m);

/* writing a new file */
size_t relay_queue_envelope_len(const relay_queue_envelope_t *env);
unsigned char *relay_queue_render_envelope(unsigned char *p,
    const relay_queue_envelope_t *env);
size_t relay_queue_rcpt_len(unsigned notify, const relay_str_t *orcpt,
    const relay_str_t *addr);
unsigned char *relay_queue_render_rcpt(unsigned char *p, unsigned notify,
    const relay_str_t *orcpt, const relay_str_t *addr);
unsigned char *relay_queue_render_trailer(unsigned char *p, off_t offset);

/* in place, pwrite() only: the caller syncs */
int relay_queue_set_state(int fd, relay_queue_rcpt_t *r,
    unsigned char state, int *err);
int relay_queue_set_schedule(int fd, relay_queue_msg_t *m, time_t next,
    unsigned attempts, int *err);
int relay_queue_set_error(int fd, relay_queue_msg_t *m,
    const unsigned char *text, size_t len, int *err);
int relay_queue_set_delay_warned(int fd, relay_queue_msg_t *m, int *err);
int relay_queue_set_hold(int fd, relay_queue_msg_t *m, int hold, int *err);

/* ownership and the operator's actions */
int relay_queue_name_valid(const char *name);
int relay_queue_openat(int queue_fd, const char *name, int flags);
int relay_queue_open_locked(int queue_fd, const char *name, int *fd,
    int *err);
int relay_queue_act(int queue_fd, const char *name,
    relay_queue_action_e action, time_t now, relay_queue_result_t *res);
const char *relay_queue_action_name(relay_queue_action_e action);
const char *relay_queue_result_text(const relay_queue_result_t *res);

/* notes to the running workers */
void relay_queue_note_init(relay_queue_note_t *n);
void relay_queue_note_add(relay_queue_note_t *n, const char *id);
void relay_queue_note_whole(relay_queue_note_t *n);
int relay_queue_note_write(int spool_fd, relay_queue_note_t *n, time_t now,
    int *err);
void relay_queue_note_free(relay_queue_note_t *n);

/* listing */
const char *relay_queue_state_name(unsigned state);
unsigned relay_queue_state_parse(const char *name);
int relay_queue_entry_read(int queue_fd, const char *name,
    relay_queue_entry_t *e, int *err);
int relay_queue_match(const relay_queue_filter_t *f,
    const relay_queue_entry_t *e, time_t now);
int relay_queue_each(int queue_fd, const relay_queue_filter_t *f,
    time_t now, relay_queue_each_pt handler, void *data, int *err);
int relay_queue_each_name(int queue_fd, relay_queue_each_name_pt handler,
    void *data, int *err);
int relay_queue_list(int queue_fd, const relay_queue_filter_t *f,
    time_t now, size_t max, relay_queue_list_t *l, int *err);
void relay_queue_list_free(relay_queue_list_t *l);


#endif /* _RELAY_QUEUE_H_INCLUDED_ */
