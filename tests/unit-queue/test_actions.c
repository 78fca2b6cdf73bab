
/*
 * Copyright (C) The relay authors
 */


/*
 * lib/relay_queue.c, what operators do: every action on a message (flush,
 * hold, release, delete, bounce) and its outcome when the message is
 * locked by another descriptor or another process (busy), gone,
 * incomplete or older than the "hold" line; notes (names, contents, the
 * removal of old ones); the listing and its filters and states.
 */


#include <signal.h>
#include <dirent.h>
#include <regex.h>
#include <sys/file.h>
#include <sys/wait.h>

#include "t.h"


#define T_NOW  1800000000


typedef struct {
    const char  *state;               /* one octet per recipient */
    const char  *addr[4];
} t_rcpts_t;


static t_spool_t  sp;


/* a complete queue file made with the library's renderer */

static void
t_queue(t_spool_t *s, const char *id, time_t arrival, const char *sender,
    const t_rcpts_t *rc, unsigned attempts, int held, int trailer)
{
    int                      fd, err;
    size_t                   i, len;
    unsigned char           *buf, *p;
    relay_str_t              addr, none = { 0, NULL };
    relay_queue_msg_t        m;
    relay_queue_envelope_t   env;

    memset(&env, 0, sizeof(env));
    env.id.data = (unsigned char *) id;
    env.id.len = strlen(id);
    env.arrival = arrival;
    env.client.data = (unsigned char *) "127.0.0.1";
    env.client.len = 9;
    env.helo.data = (unsigned char *) "t.test";
    env.helo.len = 6;
    env.sender.data = (unsigned char *) sender;
    env.sender.len = strlen(sender);

    buf = malloc(8192);
    p = relay_queue_render_envelope(buf, &env);

    for (i = 0; rc->addr[i]; i++) {
        addr.data = (unsigned char *) rc->addr[i];
        addr.len = strlen(rc->addr[i]);
        p = relay_queue_render_rcpt(p, 0, &none, &addr);
    }

    *p++ = '\n';
    memcpy(p, "Subject: t\r\n\r\nbody of ", 22);
    p += 22;
    memcpy(p, id, strlen(id));
    p += strlen(id);
    memcpy(p, "\r\n", 2);
    p += 2;

    if (trailer) {
        p = relay_queue_render_trailer(p, p - buf);
    }

    len = p - buf;
    t_put(s, id, buf, len);
    free(buf);

    if (!trailer) {
        return;
    }

    fd = t_open(s, id, O_RDWR);

    if (relay_queue_read(fd, &m, &err) != RELAY_QUEUE_OK) {
        printf("FAIL t_queue %s: errno %d\n", id, err);
        exit(1);
    }

    for (i = 0; rc->addr[i]; i++) {
        (void) relay_queue_set_state(fd, &m.rcpts[i],
                                     (unsigned char) rc->state[i], &err);
    }

    (void) relay_queue_set_schedule(fd, &m, attempts ? arrival + 3600 : 0,
                                    attempts, &err);
    (void) relay_queue_set_hold(fd, &m, held, &err);

    relay_queue_free(&m);
    (void) close(fd);
}


static int
t_msg(t_spool_t *s, const char *id, relay_queue_msg_t *m)
{
    int  fd, err, rc;

    fd = openat(s->queue_fd, id, O_RDONLY);
    if (fd == -1) {
        memset(m, 0, sizeof(relay_queue_msg_t));
        return RELAY_QUEUE_GONE;
    }

    rc = relay_queue_read(fd, m, &err);
    (void) close(fd);

    return rc;
}


static const t_rcpts_t  t_two = { "PD", { "a@x.test", "b@y.test", NULL } };
static const t_rcpts_t  t_three = { "PDP",
                                    { "a@x.test", "b@y.test", "c@x.test",
                                      NULL } };


/* ---------------------------------------------------------------- actions */


static const struct {
    const char             *label;
    relay_queue_action_e    action;
    int                     held;       /* before */
    int                     rc;
    const char             *why;
    int                     want_held;  /* after */
    int                     due;        /* next == now after */
} t_acts[] = {
    { "flush", relay_queue_flush, 0, RELAY_QUEUE_OK, NULL, 0, 1 },
    { "flush keeps a hold", relay_queue_flush, 1, RELAY_QUEUE_OK, NULL, 1,
      1 },
    { "hold", relay_queue_hold, 0, RELAY_QUEUE_OK, NULL, 1, 0 },
    { "hold of a held message", relay_queue_hold, 1,
      RELAY_QUEUE_NOT_APPLICABLE, "already held", 1, 0 },
    { "release", relay_queue_release, 1, RELAY_QUEUE_OK, NULL, 0, 1 },
    { "release of a message not held", relay_queue_release, 0,
      RELAY_QUEUE_NOT_APPLICABLE, "not held", 0, 0 },
    { "bounce", relay_queue_bounce, 0, RELAY_QUEUE_OK, NULL, 0, 1 },
    { "bounce of a held message releases it", relay_queue_bounce, 1,
      RELAY_QUEUE_OK, NULL, 0, 1 }
};


static void
test_actions(void)
{
    size_t                 i;
    relay_queue_msg_t      m;
    relay_queue_result_t   res;

    for (i = 0; i < sizeof(t_acts) / sizeof(t_acts[0]); i++) {
        t_begin(t_acts[i].label);

        t_queue(&sp, "ACT", T_NOW - 100, "s@example.org", &t_three, 2,
                t_acts[i].held, 1);

        t_expect(relay_queue_act(sp.queue_fd, "ACT", t_acts[i].action, T_NOW,
                                 &res) == t_acts[i].rc
                 && res.rc == t_acts[i].rc, "rc %d (%s)", res.rc,
                 relay_queue_result_text(&res));

        if (t_acts[i].why) {
            t_expect(res.why && strcmp(res.why, t_acts[i].why) == 0,
                     "why \"%s\"", res.why ? res.why : "");
        }

        if (t_msg(&sp, "ACT", &m) != RELAY_QUEUE_OK) {
            t_fail("read after");
            t_end();
            continue;
        }

        t_expect(m.held == t_acts[i].want_held, "held %d", m.held);
        t_expect(m.attempts == 2, "attempts %u", m.attempts);
        t_expect((m.next == T_NOW) == t_acts[i].due, "next %lld",
                 (long long) m.next);

        if (t_acts[i].action == relay_queue_bounce) {
            t_expect(res.bounced == 2 && m.rcpts[0].state == 'B'
                     && m.rcpts[1].state == 'D' && m.rcpts[2].state == 'B',
                     "states %c%c%c, bounced %zu", m.rcpts[0].state,
                     m.rcpts[1].state, m.rcpts[2].state, res.bounced);

        } else {
            t_expect(m.rcpts[0].state == 'P' && m.rcpts[1].state == 'D',
                     "states");
        }

        relay_queue_free(&m);
        t_end();
    }

    t_begin("bounce with no pending recipient");
    t_queue(&sp, "ACT", T_NOW - 100, "s@example.org", &t_three, 2, 0, 1);
    (void) relay_queue_act(sp.queue_fd, "ACT", relay_queue_bounce, T_NOW,
                           &res);
    t_expect(relay_queue_act(sp.queue_fd, "ACT", relay_queue_bounce, T_NOW,
                             &res) == RELAY_QUEUE_NOT_APPLICABLE
             && strcmp(res.why, "no pending recipient") == 0, "rc %d",
             res.rc);
    t_end();

    t_begin("delete, then gone");
    t_queue(&sp, "DEL", T_NOW - 100, "s@example.org", &t_two, 0, 1, 1);
    t_expect(relay_queue_act(sp.queue_fd, "DEL", relay_queue_delete, T_NOW,
                             &res) == RELAY_QUEUE_OK, "rc %d", res.rc);
    t_expect(faccessat(sp.queue_fd, "DEL", F_OK, 0) == -1
             && errno == ENOENT, "file still there");
    t_expect(relay_queue_act(sp.queue_fd, "DEL", relay_queue_delete, T_NOW,
                             &res) == RELAY_QUEUE_GONE
             && strcmp(relay_queue_result_text(&res), "no such message")
                == 0, "again: %d", res.rc);
    t_end();
}


/* names that are no queue id are never opened */

static void
test_gone(void)
{
    size_t                 i, k;
    relay_queue_result_t   res;

    static const char  *names[] = {
        "NOSUCH", "", "../queue", ".", "..", "a/b", ".hidden", "x.tmp",
        "012345678901234567890123456789012"
    };

    t_begin("gone: missing and invalid names, every action");

    for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        for (k = relay_queue_flush; k <= relay_queue_bounce; k++) {
            t_expect(relay_queue_act(sp.queue_fd, names[i],
                                     (relay_queue_action_e) k, T_NOW, &res)
                     == RELAY_QUEUE_GONE, "\"%s\" %s: %d", names[i],
                     relay_queue_action_name((relay_queue_action_e) k),
                     res.rc);
        }
    }

    t_expect(relay_queue_name_valid("6b1132a80feP6c8fSe948")
             && relay_queue_name_valid("01234567890123456789012345678901"),
             "valid ids");
    t_end();
}


static int
t_same(t_spool_t *s, const char *id, const unsigned char *before,
    size_t len)
{
    int             same;
    size_t          alen;
    unsigned char  *after;

    after = t_get(s, id, &alen);
    same = after && alen == len && memcmp(after, before, len) == 0;
    free(after);

    return same;
}


/* a worker delivering the message holds its lock: nothing is touched */

static void
test_busy(void)
{
    int                    fd, to_child[2], to_parent[2];
    char                   c;
    pid_t                  pid;
    size_t                 k, len;
    unsigned char         *before;
    relay_queue_result_t   res;

    t_queue(&sp, "BUSY", T_NOW - 100, "s@example.org", &t_three, 1, 1, 1);
    before = t_get(&sp, "BUSY", &len);

    t_begin("busy: locked through another descriptor");

    fd = t_open(&sp, "BUSY", O_RDWR);
    if (flock(fd, LOCK_EX) == -1) {
        t_fail("flock: %s", strerror(errno));
    }

    for (k = relay_queue_flush; k <= relay_queue_bounce; k++) {
        t_expect(relay_queue_act(sp.queue_fd, "BUSY",
                                 (relay_queue_action_e) k, T_NOW, &res)
                 == RELAY_QUEUE_BUSY, "%s: %d",
                 relay_queue_action_name((relay_queue_action_e) k), res.rc);
    }

    t_expect(strcmp(relay_queue_result_text(&res),
                    "in delivery now, try again") == 0, "text");
    t_expect(t_same(&sp, "BUSY", before, len), "file changed");

    (void) close(fd);
    t_end();

    t_begin("busy: locked by another process");

    if (pipe(to_child) == -1 || pipe(to_parent) == -1) {
        t_fail("pipe");
        t_end();
        free(before);
        return;
    }

    pid = fork();

    if (pid == 0) {
        fd = openat(sp.queue_fd, "BUSY", O_RDWR);
        if (fd == -1 || flock(fd, LOCK_EX) == -1
            || write(to_parent[1], "L", 1) != 1)
        {
            _exit(1);
        }

        _exit(read(to_child[0], &c, 1) == 1 ? 0 : 2);
    }

    if (pid == -1 || read(to_parent[0], &c, 1) != 1) {
        t_fail("child");

    } else {
        for (k = relay_queue_flush; k <= relay_queue_bounce; k++) {
            t_expect(relay_queue_act(sp.queue_fd, "BUSY",
                                     (relay_queue_action_e) k, T_NOW, &res)
                     == RELAY_QUEUE_BUSY, "%s: %d",
                     relay_queue_action_name((relay_queue_action_e) k),
                     res.rc);
        }

        t_expect(t_same(&sp, "BUSY", before, len), "file changed");
    }

    if (pid > 0) {
        if (write(to_child[1], "x", 1) != 1) {
            (void) kill(pid, SIGKILL);
        }

        (void) waitpid(pid, NULL, 0);
    }

    (void) close(to_child[0]);
    (void) close(to_child[1]);
    (void) close(to_parent[0]);
    (void) close(to_parent[1]);

    t_expect(relay_queue_act(sp.queue_fd, "BUSY", relay_queue_release, T_NOW,
                             &res) == RELAY_QUEUE_OK, "after the lock: %d",
             res.rc);
    t_end();

    free(before);
}


static void
test_incomplete(void)
{
    size_t                 k, len;
    unsigned char         *before;
    relay_queue_result_t   res;

    t_begin("incomplete: no action, file untouched");

    t_queue(&sp, "PART", T_NOW - 100, "s@example.org", &t_two, 0, 0, 0);
    before = t_get(&sp, "PART", &len);

    for (k = relay_queue_flush; k <= relay_queue_bounce; k++) {
        t_expect(relay_queue_act(sp.queue_fd, "PART",
                                 (relay_queue_action_e) k, T_NOW, &res)
                 == RELAY_QUEUE_INCOMPLETE, "%s: %d",
                 relay_queue_action_name((relay_queue_action_e) k), res.rc);
    }

    t_expect(t_same(&sp, "PART", before, len), "file changed");
    (void) unlinkat(sp.queue_fd, "PART", 0);
    free(before);
    t_end();
}


/* a file from before the "hold" line: no hold, the rest works */

static void
test_no_hold_line(void)
{
    char                  *hold;
    size_t                 len, tlen;
    unsigned char         *data, *file;
    relay_queue_msg_t      m;
    relay_queue_result_t   res;

    t_begin("no hold line: hold and release not applicable");

    data = t_read_data("deferred.q", &len);

    hold = strstr((char *) data, "hold 0\n");
    file = malloc(len);
    memcpy(file, data, hold - (char *) data);
    memcpy(file + (hold - (char *) data), hold + 7,
           len - RELAY_QUEUE_TRAILER_LEN - (hold + 7 - (char *) data));
    tlen = len - RELAY_QUEUE_TRAILER_LEN - 7;
    (void) relay_queue_render_trailer(file + tlen, tlen);
    t_put(&sp, "OLD", file, tlen + RELAY_QUEUE_TRAILER_LEN);

    t_expect(relay_queue_act(sp.queue_fd, "OLD", relay_queue_hold, T_NOW,
                             &res) == RELAY_QUEUE_NOT_APPLICABLE
             && strstr(res.why, "before holds existed") != NULL,
             "hold: %d %s", res.rc, relay_queue_result_text(&res));
    t_expect(relay_queue_act(sp.queue_fd, "OLD", relay_queue_release, T_NOW,
                             &res) == RELAY_QUEUE_NOT_APPLICABLE, "release");
    t_expect(relay_queue_act(sp.queue_fd, "OLD", relay_queue_flush, T_NOW,
                             &res) == RELAY_QUEUE_OK, "flush");
    t_expect(relay_queue_act(sp.queue_fd, "OLD", relay_queue_bounce, T_NOW,
                             &res) == RELAY_QUEUE_OK && res.bounced == 4,
             "bounce");

    if (t_msg(&sp, "OLD", &m) == RELAY_QUEUE_OK) {
        t_expect(m.hold_offset == 0 && m.next == T_NOW
                 && m.rcpts[3].state == 'B', "after");
    }

    relay_queue_free(&m);
    free(data);
    free(file);
    t_end();
}


/* ---------------------------------------------------------------- notes */


static int
t_notes(t_spool_t *s, char names[][64], size_t max)
{
    int             fd;
    DIR            *dir;
    size_t          n;
    struct dirent  *de;

    fd = openat(s->spool_fd, RELAY_QUEUE_NOTES_DIR, O_RDONLY|O_DIRECTORY);
    if (fd == -1) {
        return -1;
    }

    dir = fdopendir(fd);
    n = 0;

    while ((de = readdir(dir)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0) {
            continue;
        }

        if (n < max) {
            (void) snprintf(names[n], 64, "%.63s", de->d_name);
        }

        n++;
    }

    (void) closedir(dir);

    return (int) n;
}


static char *
t_note_text(t_spool_t *s, const char *name)
{
    int      fd;
    char    *buf;
    ssize_t  n;

    fd = openat(s->spool_fd, RELAY_QUEUE_NOTES_DIR, O_RDONLY|O_DIRECTORY);
    buf = calloc(1, 65536);
    n = read(openat(fd, name, O_RDONLY), buf, 65535);
    (void) close(fd);

    if (n < 0) {
        buf[0] = '\0';
    }

    return buf;
}


static void
test_notes(void)
{
    int                  err, n, fd;
    char                 names[8][64], *text, re[64], old[64];
    size_t               i;
    regex_t              rx;
    t_spool_t            ns;
    relay_queue_note_t   note;
    unsigned long        seq1, seq2;

    t_spool_make(&ns, "notes");

    t_begin("note: an empty one is not written; notes/ is made");
    relay_queue_note_init(&note);
    t_expect(relay_queue_note_write(ns.spool_fd, &note, T_NOW, &err)
             == RELAY_QUEUE_OK, "rc");
    t_expect(t_notes(&ns, names, 8) == -1, "notes/ made for nothing");
    relay_queue_note_add(&note, "QA");
    relay_queue_note_add(&note, "QB");
    t_expect(relay_queue_note_write(ns.spool_fd, &note, T_NOW, &err)
             == RELAY_QUEUE_OK, "rc: errno %d", err);
    relay_queue_note_free(&note);
    n = t_notes(&ns, names, 8);
    t_expect(n == 1, "%d notes", n);
    t_end();

    t_begin("note: name <time>.<pid>.<seq>, one id a line, no temporary");
    (void) snprintf(re, sizeof(re), "^%d\\.%ld\\.([0-9]+)$", T_NOW,
                    (long) getpid());
    (void) regcomp(&rx, re, REG_EXTENDED);
    t_expect(n == 1 && regexec(&rx, names[0], 0, NULL, 0) == 0,
             "name %s", names[0]);
    text = t_note_text(&ns, names[0]);
    t_expect(strcmp(text, "QA\nQB\n") == 0, "text \"%s\"", text);
    free(text);
    seq1 = strtoul(strrchr(names[0], '.') + 1, NULL, 10);
    t_end();

    t_begin("note: \"*\", and the next sequence number");
    relay_queue_note_init(&note);
    relay_queue_note_add(&note, "QC");
    relay_queue_note_whole(&note);
    t_expect(relay_queue_note_write(ns.spool_fd, &note, T_NOW, &err)
             == RELAY_QUEUE_OK, "rc");
    relay_queue_note_free(&note);
    n = t_notes(&ns, names, 8);
    t_expect(n == 2, "%d notes", n);

    for (i = 0; i < (size_t) n && i < 8; i++) {
        seq2 = strtoul(strrchr(names[i], '.') + 1, NULL, 10);
        if (seq2 != seq1) {
            t_expect(seq2 == seq1 + 1, "seq %lu after %lu", seq2, seq1);
            text = t_note_text(&ns, names[i]);
            t_expect(strcmp(text, "*\n") == 0, "text \"%s\"", text);
            free(text);
        }
    }

    t_end();

    t_begin("note: too many ids make \"*\"");
    relay_queue_note_init(&note);
    for (i = 0; i <= RELAY_QUEUE_NOTE_MAX_IDS; i++) {
        relay_queue_note_add(&note, "Q0123456789");
    }
    t_expect(note.whole, "whole");
    relay_queue_note_free(&note);
    t_end();

    t_begin("note: notes older than 10 minutes go, newer ones stay");
    fd = openat(ns.spool_fd, RELAY_QUEUE_NOTES_DIR, O_RDONLY|O_DIRECTORY);
    (void) snprintf(old, sizeof(old), "%d.1.1", T_NOW + 100 - 601);
    (void) close(openat(fd, old, O_WRONLY|O_CREAT, 0644));
    (void) snprintf(old, sizeof(old), ".%d.1.2.tmp", T_NOW + 100 - 700);
    (void) close(openat(fd, old, O_WRONLY|O_CREAT, 0644));
    (void) snprintf(old, sizeof(old), "%d.1.3", T_NOW + 100 - 599);
    (void) close(openat(fd, old, O_WRONLY|O_CREAT, 0644));
    (void) close(openat(fd, "README", O_WRONLY|O_CREAT, 0644));
    (void) close(fd);

    relay_queue_note_init(&note);
    relay_queue_note_add(&note, "QD");
    t_expect(relay_queue_note_write(ns.spool_fd, &note, T_NOW + 100, &err)
             == RELAY_QUEUE_OK, "rc");
    relay_queue_note_free(&note);

    n = t_notes(&ns, names, 8);

    /* the two of T_NOW, the one 599 s old, README, the new one */
    t_expect(n == 5, "%d notes", n);

    for (i = 0; i < (size_t) n && i < 8; i++) {
        t_expect(strcmp(names[i], "1799999499.1.1") != 0
                 && strcmp(names[i], ".1799999400.1.2.tmp") != 0,
                 "left: %s", names[i]);
    }

    t_end();

    regfree(&rx);
    t_spool_free(&ns);
}


/* ---------------------------------------------------------------- listing */


static t_spool_t  ls;


static void
t_list_spool(void)
{
    static const t_rcpts_t  ra = { "PD", { "bob@dest.example",
                                           "carol@other.example", NULL } };
    static const t_rcpts_t  rb = { "P", { "postmaster@Sub.Dest.Example",
                                          NULL } };
    static const t_rcpts_t  rc = { "P", { "x@dest.example", NULL } };
    static const t_rcpts_t  rd = { "P", { "y@z.example", NULL } };

    t_spool_make(&ls, "list");

    t_queue(&ls, "QA", T_NOW - 7200, "alice@example.org", &ra, 2, 0, 1);
    t_queue(&ls, "QB", T_NOW - 60, "", &rb, 0, 0, 1);
    t_queue(&ls, "QC", T_NOW - 600, "bob@example.net", &rc, 1, 1, 1);
    t_queue(&ls, "QD", T_NOW - 30, "dan@example.org", &rd, 0, 0, 1);
    t_queue(&ls, "QE", T_NOW - 10, "eve@example.org", &rd, 0, 0, 0);
    t_put(&ls, "JUNK", "not a queue\n\nfile\nRELAY-END 00000000000000000017\n",
          49);
    t_queue(&ls, "QF", T_NOW - 5, "fay@example.org", &rd, 0, 0, 1);
    (void) renameat(ls.queue_fd, "QF", ls.queue_fd, "QF.tmp");
}


static const struct {
    const char            *label;
    relay_queue_filter_t   f;
    const char            *want;
} t_filters[] = {
    { "list: every complete message, oldest first", { 0 }, "QA QC QB QD" },
    { "list: incomplete only",
      { .states = RELAY_QUEUE_STATE_INCOMPLETE }, "QE" },
    { "list: held", { .states = RELAY_QUEUE_STATE_HELD }, "QC" },
    { "list: deferred", { .states = RELAY_QUEUE_STATE_DEFERRED }, "QA" },
    { "list: new", { .states = RELAY_QUEUE_STATE_NEW }, "QB" },
    { "list: active", { .states = RELAY_QUEUE_STATE_ACTIVE }, "QD" },
    { "list: held or new",
      { .states = RELAY_QUEUE_STATE_HELD|RELAY_QUEUE_STATE_NEW }, "QC QB" },
    { "list: sender substring, any case", { .sender = "ALICE" }, "QA" },
    { "list: sender <>", { .sender = "<>" }, "QB" },
    { "list: sender exact", { .sender = "<alice@example.org>" }, "QA" },
    { "list: sender exact, no substring", { .sender = "<alice>" }, "" },
    { "list: recipient done is not pending", { .recipient = "carol" }, "" },
    { "list: recipient substring", { .recipient = "bob@" }, "QA" },
    { "list: recipient exact", { .recipient = "<x@dest.example>" }, "QC" },
    { "list: domain", { .domain = "dest.example" }, "QA QC" },
    { "list: domain and subdomains", { .domain = ".dest.example" },
      "QA QC QB" },
    { "list: subdomain, any case", { .domain = "sub.dest.example" }, "QB" },
    { "list: domain of a done recipient", { .domain = "other.example" }, "" },
    { "list: older than 1h", { .older_than = 3600 }, "QA" },
    { "list: younger than 5m", { .younger_than = 300 }, "QB QD" },
    { "list: between 5m and 1h", { .older_than = 300, .younger_than = 3600 },
      "QC" },
    { "list: exactly the age is older", { .older_than = 600 }, "QA QC" },
    { "list: incomplete by mtime, no sender filter",
      { .states = RELAY_QUEUE_STATE_INCOMPLETE, .sender = "eve" }, "" }
};


/* counts calls; starting at -1, stops at the first */

static int
t_count(relay_queue_entry_t *e, void *data)
{
    int  *calls = data;

    (*calls)++;

    return *calls == 0 || e->msg.nrcpts == 0;
}


static void
test_list(void)
{
    int                  fd, err, calls;
    char                 got[256];
    size_t               i, k;
    relay_queue_list_t   l;
    relay_queue_entry_t  e;

    t_list_spool();

    /* a worker delivers QD right now */

    fd = t_open(&ls, "QD", O_RDWR);
    (void) flock(fd, LOCK_EX);

    for (i = 0; i < sizeof(t_filters) / sizeof(t_filters[0]); i++) {
        t_begin(t_filters[i].label);

        if (relay_queue_list(ls.queue_fd, &t_filters[i].f, T_NOW, 0, &l, &err)
            != RELAY_QUEUE_OK)
        {
            t_fail("list: errno %d", err);
            t_end();
            continue;
        }

        got[0] = '\0';

        for (k = 0; k < l.n; k++) {
            (void) snprintf(got + strlen(got), sizeof(got) - strlen(got),
                            "%s%s", k ? " " : "", l.entries[k].name);
        }

        t_expect(strcmp(got, t_filters[i].want) == 0 && !l.truncated,
                 "got \"%s\", want \"%s\"", got, t_filters[i].want);

        relay_queue_list_free(&l);
        t_end();
    }

    t_begin("each: every message once, and a stop");
    calls = 0;
    t_expect(relay_queue_each(ls.queue_fd, &t_filters[0].f, T_NOW, t_count,
                              &calls, &err) == RELAY_QUEUE_OK && calls == 4,
             "calls %d", calls);
    calls = -1;
    t_expect(relay_queue_each(ls.queue_fd, &t_filters[0].f, T_NOW, t_count,
                              &calls, &err) == RELAY_QUEUE_OK && calls == 0,
             "stopped after %d", calls + 1);
    t_end();

    t_begin("list: at most 2");
    t_expect(relay_queue_list(ls.queue_fd, &t_filters[0].f, T_NOW, 2, &l,
                              &err) == RELAY_QUEUE_OK
             && l.n == 2 && l.truncated, "n %zu", l.n);
    relay_queue_list_free(&l);
    t_end();

    t_begin("entry: active while locked, new after");
    t_expect(relay_queue_entry_read(ls.queue_fd, "QD", &e, &err)
             == RELAY_QUEUE_OK && e.state == RELAY_QUEUE_STATE_ACTIVE
             && t_str_is(&e.msg.sender, "dan@example.org"), "state %u",
             e.state);
    relay_queue_free(&e.msg);
    (void) close(fd);
    t_expect(relay_queue_entry_read(ls.queue_fd, "QD", &e, &err)
             == RELAY_QUEUE_OK && e.state == RELAY_QUEUE_STATE_NEW,
             "state %u", e.state);
    relay_queue_free(&e.msg);
    t_expect(relay_queue_entry_read(ls.queue_fd, "QE", &e, &err)
             == RELAY_QUEUE_OK && e.state == RELAY_QUEUE_STATE_INCOMPLETE
             && e.size > 0 && e.msg.nrcpts == 0, "incomplete");
    relay_queue_free(&e.msg);
    t_expect(relay_queue_entry_read(ls.queue_fd, "NOPE", &e, &err)
             == RELAY_QUEUE_GONE, "gone");
    t_expect(relay_queue_entry_read(ls.queue_fd, "JUNK", &e, &err)
             == RELAY_QUEUE_ERROR && err == EINVAL, "junk");
    relay_queue_free(&e.msg);
    t_end();

    t_begin("state names");
    t_expect(relay_queue_state_parse("held") == RELAY_QUEUE_STATE_HELD
             && relay_queue_state_parse("incomplete")
                == RELAY_QUEUE_STATE_INCOMPLETE
             && relay_queue_state_parse("frozen") == 0
             && strcmp(relay_queue_state_name(RELAY_QUEUE_STATE_DEFERRED),
                       "deferred") == 0
             && strcmp(relay_queue_state_name(RELAY_QUEUE_STATE_ACTIVE),
                       "active") == 0, "names");
    t_end();
}


int
main(void)
{
    t_spool_make(&sp, "actions");

    test_actions();
    test_gone();
    test_busy();
    test_incomplete();
    test_no_hold_line();
    test_notes();
    test_list();

    t_spool_free(&ls);
    t_spool_free(&sp);

    return t_summary("test_actions");
}
