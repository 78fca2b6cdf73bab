
/*
 * Copyright (C) The relay authors
 */


/*
 * relayctl --spool DIR queue ...: one node's queue as its operator sees
 * it, read and changed on disk with lib/relay_queue.c, the code nginx
 * itself reads queue files with; so it works whether nginx and controld
 * run or not, and never needs either.
 *
 *   list      the messages, oldest first, each in one state: new (never
 *             tried), deferred (tried), held, active (a worker holds its
 *             lock: being delivered now), incomplete (no trailer: being
 *             written, or left by a crash; listed only when asked for)
 *   show      the envelope, then the message, as Postfix's postcat
 *   summary   pending recipients per destination domain and age, as
 *             Postfix's qshape
 *   flush, hold, release, delete, bounce
 *             each message under its lock (relay_queue_act()), then one
 *             note in <spool>/notes/ naming the messages changed, so that
 *             running workers look at them again.
 *
 * Nothing waits for a lock: a message in delivery is reported busy, and
 * flushing it counts as done (it is being tried right now).
 */


#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>
#include <time.h>

#include "relay_queue.h"
#include "relayctl.h"


#define CTLD_SPOOL_CHUNK      65536
#define CTLD_SPOOL_BUCKETS    10

/* what a command accepts */
#define CTLD_SPOOL_FILTERS    0x01
#define CTLD_SPOOL_IDS        0x02
#define CTLD_SPOOL_ALL        0x04
#define CTLD_SPOOL_SHOW       0x08


typedef struct {
    const char                 *path;
    int                         spool_fd;
    int                         queue_fd;
    int                         json;
    time_t                      now;
    relay_queue_filter_t        filter;
    unsigned                    filtered:1;     /* a FILTER was given */
    unsigned                    all:1;
    unsigned                    header_only:1;
    unsigned                    body_only:1;
    char                      **ids;
    size_t                      nids;
} ctld_spool_t;


typedef int (*ctld_spool_pt)(ctld_spool_t *sp, relay_queue_action_e action);


typedef struct {
    const char                 *name;
    ctld_spool_pt               handler;
    unsigned                    accepts;
    relay_queue_action_e        action;
    const char                 *done;           /* "flushed" */
} ctld_spool_cmd_t;


/* one row of a summary: pending recipients of a domain, by age */

typedef struct {
    char                       *domain;
    unsigned long               total;
    unsigned long               bucket[CTLD_SPOOL_BUCKETS];
} ctld_spool_row_t;


/* a summary in the making */

typedef struct {
    time_t                      now;
    ctld_spool_row_t           *rows;
    size_t                      n;
    unsigned                    failed:1;
} ctld_spool_shape_t;


/* what the actions of one invocation came to */

typedef struct {
    ctld_spool_t               *sp;
    relay_queue_action_e        action;
    size_t                      seen;
    size_t                      done;
    size_t                      busy;
    size_t                      gone;
    size_t                      failed;
    relay_queue_note_t          note;
    unsigned                    whole:1;    /* --all: not named ids */
} ctld_spool_tally_t;


static int ctld_spool_options(ctld_spool_t *sp, const ctld_spool_cmd_t *cmd,
    int argc, char **argv);
static int ctld_spool_filter(ctld_spool_t *sp, const char *option,
    const char *value);
static int ctld_spool_duration(const char *s, time_t *v);
static int ctld_spool_states(const char *s, unsigned *states);
static int ctld_spool_open(ctld_spool_t *sp);

static int ctld_spool_select(ctld_spool_t *sp, relay_queue_list_t *l);
static int ctld_spool_list(ctld_spool_t *sp, relay_queue_action_e action);
static void ctld_spool_list_text(ctld_spool_t *sp, relay_queue_list_t *l);
static void ctld_spool_list_json(ctld_spool_t *sp, relay_queue_list_t *l);
static void ctld_spool_entry_json(ctld_spool_t *sp, relay_queue_entry_t *e);
static char *ctld_spool_pending(relay_queue_msg_t *m, size_t *n);
static const char *ctld_spool_next(ctld_spool_t *sp, relay_queue_msg_t *m,
    char *buf, size_t len);

static int ctld_spool_show(ctld_spool_t *sp, relay_queue_action_e action);
static void ctld_spool_show_envelope(ctld_spool_t *sp,
    relay_queue_entry_t *e);
static int ctld_spool_show_message(ctld_spool_t *sp, relay_queue_msg_t *m);
static const char *ctld_spool_notify(unsigned notify, char *buf,
    size_t len);

static int ctld_spool_summary(ctld_spool_t *sp, relay_queue_action_e action);
static int ctld_spool_summary_each(relay_queue_entry_t *e, void *data);
static int ctld_spool_count(ctld_spool_shape_t *shape,
    const relay_str_t *addr, time_t age);
static int ctld_spool_row_cmp(const void *a, const void *b);
static void ctld_spool_summary_text(ctld_spool_row_t *total,
    ctld_spool_row_t *rows, size_t n);
static void ctld_spool_summary_json(ctld_spool_row_t *total,
    ctld_spool_row_t *rows, size_t n);

static int ctld_spool_act(ctld_spool_t *sp, relay_queue_action_e action);
static int ctld_spool_act_each(relay_queue_entry_t *e, void *data);
static void ctld_spool_act_one(const char *id, ctld_spool_tally_t *tally);
static int ctld_spool_act_name(const char *name, void *data);

static void ctld_spool_json_str(FILE *f, const char *key,
    const relay_str_t *s);


static const ctld_spool_cmd_t  ctld_spool_commands[] = {
    { "list", ctld_spool_list, CTLD_SPOOL_FILTERS, relay_queue_flush,
      NULL },
    { "show", ctld_spool_show, CTLD_SPOOL_IDS|CTLD_SPOOL_SHOW,
      relay_queue_flush, NULL },
    { "summary", ctld_spool_summary, CTLD_SPOOL_FILTERS, relay_queue_flush,
      NULL },
    { "flush", ctld_spool_act, CTLD_SPOOL_IDS|CTLD_SPOOL_ALL,
      relay_queue_flush, "flushed" },
    { "hold", ctld_spool_act, CTLD_SPOOL_IDS|CTLD_SPOOL_ALL,
      relay_queue_hold, "held" },
    { "release", ctld_spool_act, CTLD_SPOOL_IDS|CTLD_SPOOL_ALL,
      relay_queue_release, "released" },
    { "delete", ctld_spool_act, CTLD_SPOOL_IDS|CTLD_SPOOL_ALL,
      relay_queue_delete, "deleted" },
    { "bounce", ctld_spool_act, CTLD_SPOOL_IDS|CTLD_SPOOL_ALL,
      relay_queue_bounce, "bounced" },
    { NULL, NULL, 0, relay_queue_flush, NULL }
};


/* the age buckets of a summary, in minutes, as qshape's defaults */

static const unsigned  ctld_spool_bounds[CTLD_SPOOL_BUCKETS - 1] = {
    5, 10, 20, 40, 80, 160, 320, 640, 1280
};


static const ctld_spool_cmd_t  *ctld_spool_cmd;


int
ctld_spool_queue(const char *spool, int json, int argc, char **argv)
{
    int                      rc;
    ctld_spool_t             sp;
    const ctld_spool_cmd_t  *cmd;

    if (argc < 2) {
        return ctld_cli_usage("usage: queue list|show|summary|flush|hold|"
                              "release|delete|bounce ...");
    }

    for (cmd = ctld_spool_commands; cmd->name; cmd++) {
        if (strcmp(cmd->name, argv[1]) == 0) {
            break;
        }
    }

    if (cmd->name == NULL) {
        return ctld_cli_usage("queue: unknown action \"%s\"", argv[1]);
    }

    memset(&sp, 0, sizeof(ctld_spool_t));
    sp.path = spool;
    sp.json = json;
    sp.spool_fd = -1;
    sp.queue_fd = -1;

    rc = ctld_spool_options(&sp, cmd, argc - 2, argv + 2);

    if (rc == CTLD_EXIT_OK) {
        rc = ctld_spool_open(&sp);
    }

    if (rc == CTLD_EXIT_OK) {
        ctld_spool_cmd = cmd;
        sp.now = time(NULL);
        rc = cmd->handler(&sp, cmd->action);
    }

    if (sp.queue_fd != -1) {
        (void) close(sp.queue_fd);
    }

    if (sp.spool_fd != -1) {
        (void) close(sp.spool_fd);
    }

    free(sp.ids);

    return rc;
}


static int
ctld_spool_options(ctld_spool_t *sp, const ctld_spool_cmd_t *cmd, int argc,
    char **argv)
{
    int          i;
    unsigned     accepts;
    const char  *o;

    sp->ids = calloc(argc + 1, sizeof(char *));
    if (sp->ids == NULL) {
        ctld_cli_error("out of memory");
        return CTLD_EXIT_OTHER;
    }

    accepts = cmd->accepts;

    for (i = 0; i < argc; i++) {
        o = argv[i];

        if (o[0] != '-' || o[1] == '\0') {
            if (!(accepts & CTLD_SPOOL_IDS)) {
                return ctld_cli_usage("queue %s: unexpected \"%s\"",
                                      cmd->name, o);
            }

            sp->ids[sp->nids++] = argv[i];

        } else if (strcmp(o, "--all") == 0 && (accepts & CTLD_SPOOL_ALL)) {
            sp->all = 1;

        } else if (strcmp(o, "--header-only") == 0
                   && (accepts & CTLD_SPOOL_SHOW))
        {
            sp->header_only = 1;

        } else if (strcmp(o, "--body-only") == 0
                   && (accepts & CTLD_SPOOL_SHOW))
        {
            sp->body_only = 1;

        } else if (strcmp(o, "--node") == 0) {
            return ctld_cli_usage("queue: --node asks controld, and --spool "
                                  "(or RELAYCTL_SPOOL) is set");

        } else if (accepts & (CTLD_SPOOL_FILTERS|CTLD_SPOOL_ALL)) {
            if (i + 1 >= argc) {
                return ctld_cli_usage("queue %s: \"%s\" needs a value",
                                      cmd->name, o);
            }

            if (ctld_spool_filter(sp, o, argv[i + 1]) != CTLD_EXIT_OK) {
                return CTLD_EXIT_USAGE;
            }

            sp->filtered = 1;
            i++;

        } else {
            return ctld_cli_usage("queue %s: unknown option \"%s\"",
                                  cmd->name, o);
        }
    }

    if (accepts & CTLD_SPOOL_SHOW) {
        if (sp->nids != 1) {
            return ctld_cli_usage("queue show: one QUEUE-ID");
        }

        if (sp->header_only && sp->body_only) {
            return ctld_cli_usage("queue show: --header-only or "
                                  "--body-only, not both");
        }

        return CTLD_EXIT_OK;
    }

    if (!(accepts & CTLD_SPOOL_ALL)) {
        return CTLD_EXIT_OK;
    }

    if (sp->all && sp->nids) {
        return ctld_cli_usage("queue %s: --all or QUEUE-IDs, not both",
                              cmd->name);
    }

    if (sp->filtered && !sp->all) {
        return ctld_cli_usage("queue %s: filters go with --all", cmd->name);
    }

    if (!sp->all && sp->nids == 0 && cmd->action != relay_queue_flush) {
        return ctld_cli_usage("queue %s: give QUEUE-IDs, or --all for "
                              "every message", cmd->name);
    }

    return CTLD_EXIT_OK;
}


static int
ctld_spool_filter(ctld_spool_t *sp, const char *option, const char *value)
{
    relay_queue_filter_t  *f;

    f = &sp->filter;

    if (strcmp(option, "--sender") == 0) {
        f->sender = value;

    } else if (strcmp(option, "--recipient") == 0) {
        f->recipient = value;

    } else if (strcmp(option, "--domain") == 0) {
        f->domain = value;

    } else if (strcmp(option, "--older-than") == 0) {
        if (ctld_spool_duration(value, &f->older_than) != 0) {
            return ctld_cli_usage("bad --older-than \"%s\" (N, Ns, Nm, Nh, "
                                  "Nd)", value);
        }

    } else if (strcmp(option, "--younger-than") == 0) {
        if (ctld_spool_duration(value, &f->younger_than) != 0) {
            return ctld_cli_usage("bad --younger-than \"%s\" (N, Ns, Nm, "
                                  "Nh, Nd)", value);
        }

    } else if (strcmp(option, "--state") == 0) {
        if (ctld_spool_states(value, &f->states) != 0) {
            return ctld_cli_usage("bad --state \"%s\" (new, deferred, held, "
                                  "active, incomplete)", value);
        }

    } else {
        return ctld_cli_usage("queue: unknown option \"%s\"", option);
    }

    return CTLD_EXIT_OK;
}


/* N, Ns, Nm, Nh, Nd: up to 100 years */

static int
ctld_spool_duration(const char *s, time_t *v)
{
    char           *end;
    size_t          i;
    unsigned long   n;

    static const struct {
        const char     *suffix;
        unsigned long   seconds;
    } units[] = {
        { "", 1 }, { "s", 1 }, { "m", 60 }, { "h", 3600 }, { "d", 86400 }
    };

    if (*s < '0' || *s > '9') {
        return -1;
    }

    errno = 0;
    n = strtoul(s, &end, 10);

    for (i = 0; errno == 0 && i < sizeof(units) / sizeof(units[0]); i++) {
        if (strcmp(end, units[i].suffix) == 0
            && n <= 100UL * 365 * 86400 / units[i].seconds)
        {
            *v = (time_t) (n * units[i].seconds);
            return 0;
        }
    }

    return -1;
}


/* "held", "held,deferred"; repeated options add up */

static int
ctld_spool_states(const char *s, unsigned *states)
{
    char      *copy, *word, *save;
    unsigned   state;

    copy = strdup(s);
    if (copy == NULL) {
        return -1;
    }

    for (word = strtok_r(copy, ",", &save); word;
         word = strtok_r(NULL, ",", &save))
    {
        state = relay_queue_state_parse(word);
        if (state == 0) {
            free(copy);
            return -1;
        }

        *states |= state;
    }

    free(copy);

    return *states ? 0 : -1;
}


static int
ctld_spool_open(ctld_spool_t *sp)
{
    sp->spool_fd = open(sp->path, O_RDONLY|O_DIRECTORY|O_CLOEXEC);
    if (sp->spool_fd == -1) {
        ctld_cli_error("%s: %s", sp->path, strerror(errno));
        return CTLD_EXIT_INVALID;
    }

    sp->queue_fd = openat(sp->spool_fd, RELAY_QUEUE_DIR,
                          O_RDONLY|O_DIRECTORY|O_CLOEXEC);
    if (sp->queue_fd == -1) {
        ctld_cli_error("%s: not a spool (%s/: %s)", sp->path,
                       RELAY_QUEUE_DIR, strerror(errno));
        return CTLD_EXIT_INVALID;
    }

    return CTLD_EXIT_OK;
}


/* ---------------------------------------------------------------- list */


/* the messages the filters select, oldest first */

static int
ctld_spool_select(ctld_spool_t *sp, relay_queue_list_t *l)
{
    int  err;

    if (relay_queue_list(sp->queue_fd, &sp->filter, sp->now, 0, l, &err)
        != RELAY_QUEUE_OK)
    {
        ctld_cli_error("%s/%s: %s", sp->path, RELAY_QUEUE_DIR,
                       strerror(err));
        return CTLD_EXIT_OTHER;
    }

    return CTLD_EXIT_OK;
}


static int
ctld_spool_list(ctld_spool_t *sp, relay_queue_action_e action)
{
    relay_queue_list_t  l;

    if (ctld_spool_select(sp, &l) != CTLD_EXIT_OK) {
        return CTLD_EXIT_OTHER;
    }

    if (sp->json) {
        ctld_spool_list_json(sp, &l);

    } else {
        ctld_spool_list_text(sp, &l);
    }

    relay_queue_list_free(&l);

    return CTLD_EXIT_OK;
}


static void
ctld_spool_list_text(ctld_spool_t *sp, relay_queue_list_t *l)
{
    char                 age[32], next[32], *pending;
    size_t               i, n;
    ctld_table_t         t;
    relay_queue_msg_t   *m;
    relay_queue_entry_t *e;

    ctld_table_init(&t, 10);
    ctld_table_row(&t, "ID", "AGE", "STATE", "SENDER", "RCPTS", "PENDING",
                   "NEXT", "ATTEMPTS", "CATEGORY", "LAST-ERROR");

    for (i = 0; i < l->n; i++) {
        e = &l->entries[i];
        m = &e->msg;

        if (e->state == RELAY_QUEUE_STATE_INCOMPLETE) {
            ctld_table_row(&t, ctld_fmt("%s", e->name),
                ctld_fmt("%s", ctld_duration(sp->now > e->mtime
                                             ? sp->now - e->mtime : 0,
                                             age, sizeof(age))),
                ctld_fmt("incomplete"), ctld_fmt("-"), ctld_fmt("-"),
                ctld_fmt("-"), ctld_fmt("-"), ctld_fmt("-"), ctld_fmt("-"),
                ctld_fmt("-"));
            continue;
        }

        pending = ctld_spool_pending(m, &n);

        ctld_table_row(&t, ctld_fmt("%s", e->name),
            ctld_fmt("%s", ctld_duration(sp->now > m->arrival
                                         ? sp->now - m->arrival : 0,
                                         age, sizeof(age))),
            ctld_fmt("%s", relay_queue_state_name(e->state)),
            ctld_fmt("<%.*s>", (int) m->sender.len, m->sender.data),
            ctld_fmt("%zu/%zu", n, m->nrcpts),
            ctld_fmt("%s", pending && pending[0] ? pending : "-"),
            ctld_fmt("%s", ctld_spool_next(sp, m, next, sizeof(next))),
            ctld_fmt("%u", m->attempts),
            ctld_fmt("%s", ctld_category((char *) m->last_error.data,
                                         m->last_error.len, NULL)),
            m->last_error.len ? ctld_fmt("%.*s", (int) m->last_error.len,
                                         m->last_error.data)
                              : ctld_fmt("-"));

        free(pending);
    }

    if (l->n) {
        ctld_table_print(&t, stdout);
    }

    ctld_table_free(&t);

    printf("%zu message%s\n", l->n, l->n == 1 ? "" : "s");
}


/* the pending (P and B) recipients, comma-separated, malloc()ed */

static char *
ctld_spool_pending(relay_queue_msg_t *m, size_t *n)
{
    char                *s, *p;
    size_t               i, len;
    relay_queue_rcpt_t  *r;

    len = 1;

    for (i = 0; i < m->nrcpts; i++) {
        len += m->rcpts[i].addr.len + 1;
    }

    s = malloc(len);
    p = s;
    *n = 0;

    for (i = 0; i < m->nrcpts; i++) {
        r = &m->rcpts[i];

        if (r->state != RELAY_QUEUE_RCPT_PENDING
            && r->state != RELAY_QUEUE_RCPT_BOUNCE)
        {
            continue;
        }

        if (s) {
            if (p != s) {
                *p++ = ',';
            }

            memcpy(p, r->addr.data, r->addr.len);
            p += r->addr.len;
        }

        (*n)++;
    }

    if (s) {
        *p = '\0';
    }

    return s;
}


static const char *
ctld_spool_next(ctld_spool_t *sp, relay_queue_msg_t *m, char *buf,
    size_t len)
{
    if (m->held) {
        return "held";
    }

    if (m->next <= sp->now) {
        return "now";
    }

    (void) snprintf(buf, len, "in ");
    ctld_duration(m->next - sp->now, buf + 3, len - 3);

    return buf;
}


/* {"entries": [...]}: QueueEntry's field names, and more */

static void
ctld_spool_list_json(ctld_spool_t *sp, relay_queue_list_t *l)
{
    size_t  i;

    printf("{\n  \"entries\": [");

    for (i = 0; i < l->n; i++) {
        printf("%s\n    {", i ? "," : "");
        ctld_spool_entry_json(sp, &l->entries[i]);
        printf("\n    }");
    }

    printf("%s]\n}\n", l->n ? "\n  " : "");
}


static void
ctld_spool_entry_json(ctld_spool_t *sp, relay_queue_entry_t *e)
{
    size_t               i, n;
    relay_str_t          id;
    relay_queue_msg_t   *m;
    relay_queue_rcpt_t  *r;

    m = &e->msg;
    id.data = (unsigned char *) e->name;
    id.len = strlen(e->name);

    printf("\n      ");
    ctld_spool_json_str(stdout, "id", &id);
    printf(",\n      \"state\": \"%s\"", relay_queue_state_name(e->state));

    if (e->state == RELAY_QUEUE_STATE_INCOMPLETE) {
        printf(",\n      \"file_size\": %lld,\n      \"mtime_unix\": %lld",
               (long long) e->size, (long long) e->mtime);
        return;
    }

    printf(",\n      \"held\": %s,\n      ", m->held ? "true" : "false");
    ctld_spool_json_str(stdout, "sender", &m->sender);
    printf(",\n      \"pending\": [");

    for (i = 0, n = 0; i < m->nrcpts; i++) {
        r = &m->rcpts[i];

        if (r->state == RELAY_QUEUE_RCPT_PENDING
            || r->state == RELAY_QUEUE_RCPT_BOUNCE)
        {
            printf("%s", n++ ? ", " : "");
            ctld_spool_json_str(stdout, NULL, &r->addr);
        }
    }

    printf("],\n      \"recipients\": %zu,\n      \"rcpts\": [", m->nrcpts);

    for (i = 0; i < m->nrcpts; i++) {
        r = &m->rcpts[i];
        printf("%s{", i ? ", " : "");
        ctld_spool_json_str(stdout, "address", &r->addr);
        printf(", \"state\": \"%c\"}", r->state);
    }

    printf("],\n      \"arrival_unix\": %lld,\n      \"age_s\": %lld,\n"
           "      \"next_attempt_unix\": %lld,\n      \"attempts\": %u,\n"
           "      \"size\": %lld,\n      ",
           (long long) m->arrival, (long long) (sp->now - m->arrival),
           (long long) m->next, m->attempts, (long long) m->message_size);
    ctld_spool_json_str(stdout, "last_error", &m->last_error);
    printf(",\n      \"category\": \"%s\",\n      ",
           m->last_error.len ? ctld_category((char *) m->last_error.data,
                                             m->last_error.len, NULL)
                             : "");
    ctld_spool_json_str(stdout, "client", &m->client);
    printf(",\n      ");
    ctld_spool_json_str(stdout, "helo", &m->helo);
    printf(",\n      ");
    ctld_spool_json_str(stdout, "auth", &m->auth);
    printf(",\n      ");
    ctld_spool_json_str(stdout, "tenant", &m->tenant);
}


/* ---------------------------------------------------------------- show */


static int
ctld_spool_show(ctld_spool_t *sp, relay_queue_action_e action)
{
    int                  rc, err;
    relay_queue_entry_t  e;

    rc = relay_queue_entry_read(sp->queue_fd, sp->ids[0], &e, &err);

    if (rc == RELAY_QUEUE_GONE) {
        ctld_cli_error("%s: no such message", sp->ids[0]);
        return CTLD_EXIT_NOT_FOUND;
    }

    if (rc != RELAY_QUEUE_OK) {
        ctld_cli_error("%s: %s", sp->ids[0],
                       err == EINVAL ? "not a queue file" : strerror(err));
        return CTLD_EXIT_OTHER;
    }

    if (e.state == RELAY_QUEUE_STATE_INCOMPLETE) {
        ctld_cli_error("%s: incomplete: being written, or left by a crash",
                       sp->ids[0]);
        return CTLD_EXIT_OTHER;
    }

    rc = CTLD_EXIT_OK;

    if (!sp->body_only) {
        ctld_spool_show_envelope(sp, &e);
    }

    if (!sp->header_only) {
        if (!sp->body_only) {
            printf("*** MESSAGE CONTENTS %s ***\n", e.name);
        }

        (void) fflush(stdout);
        rc = ctld_spool_show_message(sp, &e.msg);

        if (!sp->body_only) {
            printf("*** END OF MESSAGE %s ***\n", e.name);
        }
    }

    relay_queue_free(&e.msg);

    return rc;
}


static void
ctld_spool_show_envelope(ctld_spool_t *sp, relay_queue_entry_t *e)
{
    char                 date[32], ago[32], next[32], notify[32];
    size_t               i;
    relay_queue_msg_t   *m;
    relay_queue_rcpt_t  *r;

    static const char  *body[] = { "-", "7BIT", "8BITMIME", "BINARYMIME" };
    static const char  *ret[] = { "-", "FULL", "HDRS" };

    m = &e->msg;

    printf("*** ENVELOPE RECORDS %s ***\n", e->name);
    printf("queue file: %s/%s/%s\n", sp->path, RELAY_QUEUE_DIR, e->name);
    printf("state: %s\n", relay_queue_state_name(e->state));
    printf("arrival: %s (%s ago)\n", ctld_time_iso(m->arrival, date,
                                                   sizeof(date)),
           ctld_duration(sp->now > m->arrival ? sp->now - m->arrival : 0,
                         ago, sizeof(ago)));
    printf("client: %.*s\n", (int) m->client.len, m->client.data);
    printf("helo: %.*s\n", (int) m->helo.len, m->helo.data);
    printf("auth: %.*s\n", m->auth.len ? (int) m->auth.len : 1,
           m->auth.len ? (char *) m->auth.data : "-");
    printf("tenant: %.*s\n", m->tenant.len ? (int) m->tenant.len : 1,
           m->tenant.len ? (char *) m->tenant.data : "-");
    printf("body: %s\nsmtputf8: %s\nret: %s\n", body[m->body & 3],
           m->smtputf8 ? "yes" : "no", ret[m->ret < 3 ? m->ret : 0]);
    printf("envid: %.*s\n", m->envid.len ? (int) m->envid.len : 1,
           m->envid.len ? (char *) m->envid.data : "-");
    printf("sender: <%.*s>\n", (int) m->sender.len, m->sender.data);
    printf("next attempt: %s", ctld_spool_next(sp, m, next, sizeof(next)));

    if (m->next > sp->now) {
        printf(" (%s)", ctld_time_iso(m->next, date, sizeof(date)));
    }

    printf("\nattempts: %u\n", m->attempts);
    printf("held: %s\n", m->hold_offset == 0 ? "no (no hold line)"
                         : m->held ? "yes" : "no");
    printf("delay warning sent: %s\n", m->delay_warned ? "yes" : "no");
    printf("last error: %.*s\n", m->last_error.len ? (int) m->last_error.len
                                                   : 1,
           m->last_error.len ? (char *) m->last_error.data : "-");

    for (i = 0; i < m->nrcpts; i++) {
        r = &m->rcpts[i];

        printf("recipient: %c <%.*s> notify=%s orcpt=%.*s\n", r->state,
               (int) r->addr.len, r->addr.data,
               ctld_spool_notify(r->notify, notify, sizeof(notify)),
               r->orcpt.len ? (int) r->orcpt.len : 1,
               r->orcpt.len ? (char *) r->orcpt.data : "-");
    }

    printf("message: %lld octets\n", (long long) m->message_size);
}


static const char *
ctld_spool_notify(unsigned notify, char *buf, size_t len)
{
    if (notify == 0) {
        return "-";
    }

    if (notify & RELAY_QUEUE_NOTIFY_NEVER) {
        return "NEVER";
    }

    (void) snprintf(buf, len, "%s%s%s",
                    (notify & RELAY_QUEUE_NOTIFY_SUCCESS) ? "SUCCESS," : "",
                    (notify & RELAY_QUEUE_NOTIFY_FAILURE) ? "FAILURE," : "",
                    (notify & RELAY_QUEUE_NOTIFY_DELAY) ? "DELAY," : "");

    if (buf[0]) {
        buf[strlen(buf) - 1] = '\0';
    }

    return buf;
}


/* the message octets as stored, from the file, a chunk at a time */

static int
ctld_spool_show_message(ctld_spool_t *sp, relay_queue_msg_t *m)
{
    int      fd;
    char    *buf;
    off_t    off, end;
    ssize_t  n;

    fd = relay_queue_openat(sp->queue_fd, sp->ids[0], O_RDONLY|O_CLOEXEC);
    buf = malloc(CTLD_SPOOL_CHUNK);

    if (fd == -1 || buf == NULL) {
        ctld_cli_error("%s: %s", sp->ids[0], strerror(errno));
        free(buf);
        if (fd != -1) {
            (void) close(fd);
        }

        return CTLD_EXIT_OTHER;
    }

    end = m->message_offset + m->message_size;

    for (off = m->message_offset; off < end; off += n) {
        n = pread(fd, buf, end - off < CTLD_SPOOL_CHUNK ? end - off
                                                        : CTLD_SPOOL_CHUNK,
                  off);
        if (n <= 0) {
            break;
        }

        if (fwrite(buf, 1, n, stdout) != (size_t) n) {
            break;
        }
    }

    free(buf);
    (void) close(fd);

    if (off < end) {
        ctld_cli_error("%s: the message could not be read whole",
                       sp->ids[0]);
        return CTLD_EXIT_OTHER;
    }

    return CTLD_EXIT_OK;
}


/* ---------------------------------------------------------------- summary */


/*
 * Pending recipients (P and B) of the selected messages, per recipient
 * domain, in age buckets: "5" counts those queued less than 5 minutes,
 * "10" from 5 to less than 10, ..., "1280+" 1280 minutes or more.
 */

static int
ctld_spool_summary(ctld_spool_t *sp, relay_queue_action_e action)
{
    int                 err, rc;
    size_t              i, k;
    ctld_spool_row_t    total;
    ctld_spool_shape_t  shape;

    memset(&shape, 0, sizeof(ctld_spool_shape_t));
    shape.now = sp->now;

    rc = CTLD_EXIT_OK;

    if (relay_queue_each(sp->queue_fd, &sp->filter, sp->now,
                         ctld_spool_summary_each, &shape, &err)
        != RELAY_QUEUE_OK)
    {
        ctld_cli_error("%s/%s: %s", sp->path, RELAY_QUEUE_DIR,
                       strerror(err));
        rc = CTLD_EXIT_OTHER;

    } else if (shape.failed) {
        ctld_cli_error("out of memory");
        rc = CTLD_EXIT_OTHER;
    }

    if (rc == CTLD_EXIT_OK) {
        memset(&total, 0, sizeof(ctld_spool_row_t));
        total.domain = "TOTAL";

        for (i = 0; i < shape.n; i++) {
            total.total += shape.rows[i].total;

            for (k = 0; k < CTLD_SPOOL_BUCKETS; k++) {
                total.bucket[k] += shape.rows[i].bucket[k];
            }
        }

        if (shape.n) {
            qsort(shape.rows, shape.n, sizeof(ctld_spool_row_t),
                  ctld_spool_row_cmp);
        }

        if (sp->json) {
            ctld_spool_summary_json(&total, shape.rows, shape.n);

        } else {
            ctld_spool_summary_text(&total, shape.rows, shape.n);
        }
    }

    for (i = 0; i < shape.n; i++) {
        free(shape.rows[i].domain);
    }

    free(shape.rows);

    return rc;
}


static int
ctld_spool_summary_each(relay_queue_entry_t *e, void *data)
{
    ctld_spool_shape_t  *shape = data;

    size_t               k;
    time_t               age;
    relay_queue_msg_t   *m;

    m = &e->msg;
    age = shape->now > m->arrival ? shape->now - m->arrival : 0;

    for (k = 0; k < m->nrcpts; k++) {
        if ((m->rcpts[k].state == RELAY_QUEUE_RCPT_PENDING
             || m->rcpts[k].state == RELAY_QUEUE_RCPT_BOUNCE)
            && ctld_spool_count(shape, &m->rcpts[k].addr, age) != 0)
        {
            shape->failed = 1;
            return 1;
        }
    }

    return 0;
}


static int
ctld_spool_count(ctld_spool_shape_t *shape, const relay_str_t *addr,
    time_t age)
{
    char              *d;
    size_t             i, len;
    unsigned char     *at;
    ctld_spool_row_t  *r;

    at = memrchr(addr->data, '@', addr->len);
    len = at ? addr->len - (at + 1 - addr->data) : 0;

    for (i = 0; i < shape->n; i++) {
        d = shape->rows[i].domain;

        if (strlen(d) == len && strncasecmp(d, (char *) at + 1, len) == 0) {
            break;
        }
    }

    if (i == shape->n) {
        r = realloc(shape->rows, (shape->n + 1) * sizeof(ctld_spool_row_t));
        if (r == NULL) {
            return -1;
        }

        shape->rows = r;
        r = &r[shape->n];
        memset(r, 0, sizeof(ctld_spool_row_t));

        r->domain = strndup(at ? (char *) at + 1 : "", len);
        if (r->domain == NULL) {
            return -1;
        }

        for (d = r->domain; *d; d++) {
            *d = (*d >= 'A' && *d <= 'Z') ? *d + ('a' - 'A') : *d;
        }

        shape->n++;
    }

    r = &shape->rows[i];
    r->total++;

    for (i = 0; i < CTLD_SPOOL_BUCKETS - 1; i++) {
        if (age < (time_t) ctld_spool_bounds[i] * 60) {
            break;
        }
    }

    r->bucket[i]++;

    return 0;
}


/* most recipients first, then by name */

static int
ctld_spool_row_cmp(const void *a, const void *b)
{
    const ctld_spool_row_t  *x = a, *y = b;

    if (x->total != y->total) {
        return x->total > y->total ? -1 : 1;
    }

    return strcmp(x->domain, y->domain);
}


static void
ctld_spool_summary_text(ctld_spool_row_t *total, ctld_spool_row_t *rows,
    size_t n)
{
    int                      w[CTLD_SPOOL_BUCKETS + 2];
    char                     head[CTLD_SPOOL_BUCKETS + 1][16];
    size_t                   i, k;
    const ctld_spool_row_t  *r;

    (void) snprintf(head[0], sizeof(head[0]), "T");

    for (k = 0; k < CTLD_SPOOL_BUCKETS - 1; k++) {
        (void) snprintf(head[k + 1], sizeof(head[0]), "%u",
                        ctld_spool_bounds[k]);
    }

    (void) snprintf(head[CTLD_SPOOL_BUCKETS], sizeof(head[0]), "%u+",
                    ctld_spool_bounds[CTLD_SPOOL_BUCKETS - 2]);

    /* the domain left-aligned, the counts right-aligned */

    w[0] = 5;

    for (i = 0; i < n; i++) {
        if ((int) strlen(rows[i].domain) > w[0]) {
            w[0] = (int) strlen(rows[i].domain);
        }
    }

    for (k = 0; k <= CTLD_SPOOL_BUCKETS; k++) {
        w[k + 1] = (int) strlen(head[k]);

        if (snprintf(NULL, 0, "%lu", total->total) > w[k + 1]) {
            w[k + 1] = snprintf(NULL, 0, "%lu", total->total);
        }
    }

    printf("%-*s", w[0], "");

    for (k = 0; k <= CTLD_SPOOL_BUCKETS; k++) {
        printf(" %*s", w[k + 1], head[k]);
    }

    printf("\n");

    for (i = 0; i <= n; i++) {
        r = i ? &rows[i - 1] : total;

        printf("%-*s %*lu", w[0], r->domain[0] ? r->domain : "-", w[1],
               r->total);

        for (k = 0; k < CTLD_SPOOL_BUCKETS; k++) {
            printf(" %*lu", w[k + 2], r->bucket[k]);
        }

        printf("\n");
    }
}


static void
ctld_spool_summary_json(ctld_spool_row_t *total, ctld_spool_row_t *rows,
    size_t n)
{
    size_t                   i, k;
    const ctld_spool_row_t  *r;

    printf("{\n  \"bucket_minutes\": [");

    for (k = 0; k < CTLD_SPOOL_BUCKETS - 1; k++) {
        printf("%s%u", k ? ", " : "", ctld_spool_bounds[k]);
    }

    printf("],\n  \"rows\": [");

    for (i = 0; i <= n; i++) {
        r = i ? &rows[i - 1] : total;

        printf("%s\n    {\"domain\": ", i ? "," : "");
        ctld_json_string(stdout, r->domain);
        printf(", \"total\": %lu, \"buckets\": [", r->total);

        for (k = 0; k < CTLD_SPOOL_BUCKETS; k++) {
            printf("%s%lu", k ? ", " : "", r->bucket[k]);
        }

        printf("]}");
    }

    printf("\n  ]\n}\n");
}


/* ---------------------------------------------------------------- actions */


static int
ctld_spool_act(ctld_spool_t *sp, relay_queue_action_e action)
{
    int                  err;
    size_t               i;
    ctld_spool_tally_t   tally;

    memset(&tally, 0, sizeof(ctld_spool_tally_t));
    relay_queue_note_init(&tally.note);
    tally.sp = sp;
    tally.action = action;

    for (i = 0; i < sp->nids; i++) {
        ctld_spool_act_one(sp->ids[i], &tally);
    }

    if (sp->nids == 0) {
        tally.whole = 1;

        if ((sp->filtered
             ? relay_queue_each(sp->queue_fd, &sp->filter, sp->now,
                                ctld_spool_act_each, &tally, &err)
             : relay_queue_each_name(sp->queue_fd, ctld_spool_act_name,
                                     &tally, &err))
            != RELAY_QUEUE_OK)
        {
            ctld_cli_error("%s/%s: %s", sp->path, RELAY_QUEUE_DIR,
                           strerror(err));
            tally.failed++;
        }

        if (tally.seen == 0) {
            printf("no message %s\n", sp->filtered ? "matches" : "queued");
        }
    }

    /* one note for the running workers, whatever nginx is doing */

    if (relay_queue_note_write(sp->spool_fd, &tally.note, time(NULL), &err)
        != RELAY_QUEUE_OK)
    {
        ctld_cli_error("%s/%s: no note for the workers: %s (they see the "
                       "change at their next queue scan)", sp->path,
                       RELAY_QUEUE_NOTES_DIR, strerror(err));
    }

    relay_queue_note_free(&tally.note);

    if (tally.seen) {
        printf("%s %zu message%s\n", ctld_spool_cmd->done, tally.done,
               tally.done == 1 ? "" : "s");
    }

    if (tally.failed || tally.busy) {
        return CTLD_EXIT_OTHER;
    }

    if (tally.gone) {
        return CTLD_EXIT_NOT_FOUND;
    }

    return tally.done ? CTLD_EXIT_OK : CTLD_EXIT_NOTHING;
}


static int
ctld_spool_act_each(relay_queue_entry_t *e, void *data)
{
    ctld_spool_act_one(e->name, data);

    return 0;
}


static int
ctld_spool_act_name(const char *name, void *data)
{
    ctld_spool_act_one(name, data);

    return 0;
}


static void
ctld_spool_act_one(const char *id, ctld_spool_tally_t *tally)
{
    relay_queue_action_e   action;
    relay_queue_result_t   res;

    action = tally->action;
    tally->seen++;

    switch (relay_queue_act(tally->sp->queue_fd, id, action, tally->sp->now,
                            &res))
    {

    case RELAY_QUEUE_OK:
        tally->done++;
        relay_queue_note_add(&tally->note, id);

        if (action == relay_queue_bounce) {
            printf("%s: bounced (%zu recipient%s)\n", id, res.bounced,
                   res.bounced == 1 ? "" : "s");

        } else {
            printf("%s: %s\n", id, ctld_spool_cmd->done);
        }

        break;

    case RELAY_QUEUE_BUSY:
        if (action == relay_queue_flush) {
            tally->done++;              /* being tried right now */
            printf("%s: in delivery now\n", id);
            break;
        }

        tally->busy++;
        ctld_cli_error("%s: %s", id, relay_queue_result_text(&res));
        break;

    case RELAY_QUEUE_GONE:
        tally->gone++;
        ctld_cli_error("%s: %s", id, relay_queue_result_text(&res));
        break;

    case RELAY_QUEUE_NOT_APPLICABLE:
        printf("%s: not %s: %s\n", id, ctld_spool_cmd->done,
               relay_queue_result_text(&res));
        break;

    case RELAY_QUEUE_INCOMPLETE:
        if (tally->whole) {
            tally->seen--;              /* still being written: not queued */
            break;
        }

        tally->failed++;
        ctld_cli_error("%s: %s", id, relay_queue_result_text(&res));
        break;

    default:
        tally->failed++;
        ctld_cli_error("%s: %s: %s", id, relay_queue_result_text(&res),
                       strerror(res.err));
        break;
    }
}


/* "key": "value" (no key: the value alone), the value a JSON string */

static void
ctld_spool_json_str(FILE *f, const char *key, const relay_str_t *s)
{
    char  *v;

    if (key) {
        fprintf(f, "\"%s\": ", key);
    }

    v = strndup(s->len ? (char *) s->data : "", s->len);
    ctld_json_string(f, v ? v : "");
    free(v);
}
