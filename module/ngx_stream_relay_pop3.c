
/*
 * Copyright (C) The relay authors
 */


/*
 * The POP3 server over the local Maildirs (RFC 1939; CAPA and response
 * codes of RFC 2449 and RFC 3206; STLS of RFC 2595; SASL PLAIN of RFC 5034
 * and RFC 4616).  A stream content handler of its own ("relay_pop3;") in the
 * same .so as the SMTP server; it shares the SMTP server's users file
 * (relay_auth_file), TLS context (relay_starttls), relay_timeout and
 * relay_max_errors.
 *
 * States:
 *
 *   auth  -- USER/PASS, AUTH PLAIN --> busy (crypt, lock, list) --> trans
 *     |   -- AUTH PLAIN ------------> sasl -- response --> busy ---+
 *     |   -- STLS ------------------> busy (handshake) --> auth    |
 *     +<-- -ERR [AUTH], [IN-USE], [SYS/TEMP] ----------------------+
 *   trans -- LIST, UIDL -----------> list (lines as room allows) --> trans
 *         -- RETR, TOP ------------> retr <--> busy (read a chunk) --> trans
 *         -- QUIT -----------------> busy (UPDATE: unlink) --> closing
 *   any   -- QUIT, too many errors, timeout, I/O error --> closing
 *
 * As in the SMTP session one loop, ngx_stream_relay_pop3_run(), executes
 * every complete command in the input buffer and sends the replies when it
 * has to wait: pipelined commands (RFC 2449 6.6) are answered in order.
 *
 * The event loop never touches the file system: the password check, the
 * mailbox lock, the listing, the new/ -> cur/ renames, every read of a
 * message and the unlinks at QUIT are thread-pool tasks.  A message is
 * streamed in 16 KB chunks, each converted on the loop to CRLF line ends
 * with dot-stuffing; nothing holds a whole message.
 *
 * Messages are sent as stored, Return-Path: and Delivered-To: of the local
 * delivery included: the SMTP side stores CRLF lines; a bare LF (a file
 * from another delivery agent, or a BDAT chunk) is sent as CRLF, and a
 * file not ending in a line end gets one.  Sizes in STAT, LIST and RETR are
 * exact for that: the listing reads a file once to count its bare LFs and
 * keeps the result in <mailbox>/relay-pop3.sizes for the next sessions.
 *
 * One session per mailbox: flock() of <mailbox>/relay-pop3.lock, taken
 * with LOCK_NB after the password check, across workers and processes; the
 * kernel releases it when the session's file descriptor closes or its
 * process dies.
 *
 * UIDs are the Maildir unique names (the file name before ":2,"), so they
 * survive the rename into cur/ and every session; a name that is not 1 to
 * 70 printable octets is sent as the hex MD5 of itself.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_stream.h>
#include <ngx_md5.h>
#include <dirent.h>
#include <sys/file.h>
#include <ngx_stream_relay.h>
#include <ngx_relay_auth.h>
#include <ngx_relay_maildir.h>


#define NGX_STREAM_RELAY_POP3_LINE_MAX   512     /* RFC 2449 says 255 */
#define NGX_STREAM_RELAY_POP3_SASL_MAX   2048
#define NGX_STREAM_RELAY_POP3_IN_SIZE    4096
#define NGX_STREAM_RELAY_POP3_OUT_SIZE   4096
#define NGX_STREAM_RELAY_POP3_CHUNK      16384
#define NGX_STREAM_RELAY_POP3_SCAN_BUF   65536
#define NGX_STREAM_RELAY_POP3_UIDL_MAX   70      /* RFC 1939 7 */
#define NGX_STREAM_RELAY_POP3_LOCK       "relay-pop3.lock"
#define NGX_STREAM_RELAY_POP3_SIZES      "relay-pop3.sizes"
#define NGX_STREAM_RELAY_POP3_SIZES_MAX  (64 * 1024 * 1024)

typedef struct {
    ngx_flag_t                         enabled;
    ngx_flag_t                         plaintext;
} ngx_stream_relay_pop3_srv_conf_t;


/* a message of the maildrop; filled by the listing task */

typedef struct {
    u_char                            *name;      /* in new/ or cur/ */
    size_t                             len;
    off_t                              size;      /* as sent, CRLF lines */
    off_t                              fsize;     /* of the file */
    time_t                             mtime;
    u_char                             uidl[NGX_STREAM_RELAY_POP3_UIDL_MAX];
    u_char                             uidl_len;
    unsigned                           in_new:1;
    unsigned                           deleted:1;
} ngx_stream_relay_pop3_msg_t;


/*
 * relay-pop3.sizes: "<size as sent> <file size> <unique name>" lines, the
 * sizes of the last listing, so that a login reads only new files (Maildir
 * files never change; a file of another size is scanned again).
 */

typedef struct {
    u_char                            *name;
    size_t                             len;
    off_t                              fsize;
    off_t                              size;
} ngx_stream_relay_pop3_sized_t;


typedef struct {
    u_char                            *data;      /* the file, malloc()ed */
    ngx_stream_relay_pop3_sized_t     *elts;      /* sorted by name */
    ngx_uint_t                         nelts;
    ngx_uint_t                         hits;
} ngx_stream_relay_pop3_sizes_t;


typedef enum {
    ngx_stream_relay_pop3_st_auth = 0,
    ngx_stream_relay_pop3_st_sasl,
    ngx_stream_relay_pop3_st_trans,
    ngx_stream_relay_pop3_st_list,
    ngx_stream_relay_pop3_st_retr,
    ngx_stream_relay_pop3_st_busy,
    ngx_stream_relay_pop3_st_closing
} ngx_stream_relay_pop3_state_e;


typedef enum {
    ngx_stream_relay_pop3_op_login = 0,
    ngx_stream_relay_pop3_op_read,
    ngx_stream_relay_pop3_op_update
} ngx_stream_relay_pop3_op_e;


typedef struct ngx_stream_relay_pop3_session_s
    ngx_stream_relay_pop3_session_t;


/* the one task of a session, reused; "check" first for the crypt thread */

typedef struct {
    ngx_relay_auth_check_t             check;
    ngx_stream_relay_pop3_session_t   *ps;
    ngx_stream_relay_pop3_op_e         op;
    ngx_int_t                          rc;
    ngx_err_t                          err;
    const char                        *failed;
    ngx_uint_t                         mailbox_ok;
    ssize_t                            nread;
    ngx_uint_t                         not_removed;
} ngx_stream_relay_pop3_task_ctx_t;


struct ngx_stream_relay_pop3_session_s {
    ngx_stream_session_t              *session;
    ngx_connection_t                  *connection;
    ngx_stream_relay_srv_conf_t       *conf;
    ngx_stream_relay_pop3_srv_conf_t  *pconf;
    ngx_stream_relay_main_conf_t      *main_conf;

    ngx_stream_relay_pop3_state_e      state;
    ngx_buf_t                         *in;
    ngx_buf_t                         *out;
    ngx_relay_line_parser_t            lp;
    ngx_msec_t                         deadline;     /* of the line */

    ngx_thread_task_t                 *task;

    ngx_str_t                          user;        /* USER, then logged in */
    u_char                            *mailbox;     /* ".../<dom>/<user>/" */
    size_t                             mailbox_len;
    ngx_fd_t                           lock;

    ngx_stream_relay_pop3_msg_t       *msgs;        /* malloc()ed */
    ngx_uint_t                         nmsgs;
    ngx_uint_t                         ndeleted;
    off_t                              deleted_size;
    off_t                              total_size;
    ngx_uint_t                         retrieved;
    ngx_uint_t                         removed;
    ngx_uint_t                         errors;

    /* LIST and UIDL without argument: the next line */
    ngx_uint_t                         list_next;
    unsigned                           list_uidl:1;

    /* RETR and TOP */
    ngx_stream_relay_pop3_msg_t       *msg;
    ngx_uint_t                         msg_no;
    ngx_fd_t                           fd;
    off_t                              offset;
    u_char                            *chunk;
    ngx_int_t                          top_lines;   /* -1: RETR */
    unsigned                           retr:1;      /* RETR, not TOP */
    unsigned                           started:1;   /* "+OK" sent */
    unsigned                           sol:1;       /* at a line start */
    unsigned                           cr:1;        /* last octet was CR */
    unsigned                           empty:1;     /* line empty so far */
    unsigned                           body:1;      /* past the header */

    unsigned                           tls:1;
    unsigned                           logged_in:1;
    unsigned                           quit:1;
    unsigned                           running:1;   /* a task is posted */
    unsigned                           dead:1;      /* close after it */
    unsigned                           logged:1;
};


static void ngx_stream_relay_pop3_init_session(ngx_stream_session_t *s);
static void ngx_stream_relay_pop3_cleanup(void *data);
static void ngx_stream_relay_pop3_enter(ngx_stream_relay_pop3_session_t *ps,
    ngx_stream_relay_pop3_state_e state);
static void ngx_stream_relay_pop3_handler(ngx_event_t *ev);
static void ngx_stream_relay_pop3_run(ngx_stream_relay_pop3_session_t *ps);
static ngx_int_t ngx_stream_relay_pop3_read(
    ngx_stream_relay_pop3_session_t *ps);
static void ngx_stream_relay_pop3_close(ngx_stream_relay_pop3_session_t *ps);
static void ngx_stream_relay_pop3_reply(ngx_stream_relay_pop3_session_t *ps,
    const char *fmt, ...);
static void ngx_stream_relay_pop3_error(ngx_stream_relay_pop3_session_t *ps,
    const char *fmt, ...);
static ngx_int_t ngx_stream_relay_pop3_command(
    ngx_stream_relay_pop3_session_t *ps);
static void ngx_stream_relay_pop3_capa(ngx_stream_relay_pop3_session_t *ps);
static void ngx_stream_relay_pop3_stls(ngx_stream_relay_pop3_session_t *ps);
static void ngx_stream_relay_pop3_tls_handshaked(ngx_connection_t *c);
static void ngx_stream_relay_pop3_tls_established(
    ngx_stream_relay_pop3_session_t *ps);
static ngx_uint_t ngx_stream_relay_pop3_plaintext_ok(
    ngx_stream_relay_pop3_session_t *ps);
static void ngx_stream_relay_pop3_auth(ngx_stream_relay_pop3_session_t *ps,
    ngx_relay_pop3_command_t *cmd);
static ngx_int_t ngx_stream_relay_pop3_sasl_response(
    ngx_stream_relay_pop3_session_t *ps);
static void ngx_stream_relay_pop3_sasl_plain(
    ngx_stream_relay_pop3_session_t *ps, ngx_str_t *line);
static void ngx_stream_relay_pop3_login(ngx_stream_relay_pop3_session_t *ps,
    ngx_str_t *user, ngx_str_t *passwd);
static ngx_uint_t ngx_stream_relay_pop3_mailbox(
    ngx_stream_relay_pop3_session_t *ps, ngx_str_t *user);
static ngx_int_t ngx_stream_relay_pop3_post(
    ngx_stream_relay_pop3_session_t *ps, ngx_stream_relay_pop3_op_e op,
    void (*handler)(void *data, ngx_log_t *log));
static void ngx_stream_relay_pop3_task_done(ngx_event_t *ev);
static void ngx_stream_relay_pop3_login_done(
    ngx_stream_relay_pop3_session_t *ps,
    ngx_stream_relay_pop3_task_ctx_t *ctx);
static void ngx_stream_relay_pop3_read_done(
    ngx_stream_relay_pop3_session_t *ps,
    ngx_stream_relay_pop3_task_ctx_t *ctx);
static void ngx_stream_relay_pop3_update_done(
    ngx_stream_relay_pop3_session_t *ps,
    ngx_stream_relay_pop3_task_ctx_t *ctx);
static ngx_stream_relay_pop3_msg_t *ngx_stream_relay_pop3_msg(
    ngx_stream_relay_pop3_session_t *ps, ngx_str_t *arg);
static void ngx_stream_relay_pop3_list(ngx_stream_relay_pop3_session_t *ps,
    ngx_str_t *arg, ngx_uint_t uidl);
static void ngx_stream_relay_pop3_list_more(
    ngx_stream_relay_pop3_session_t *ps);
static void ngx_stream_relay_pop3_retr(ngx_stream_relay_pop3_session_t *ps,
    ngx_str_t *args, ngx_uint_t nargs, ngx_uint_t retr);
static void ngx_stream_relay_pop3_unlock(
    ngx_stream_relay_pop3_session_t *ps);
static void ngx_stream_relay_pop3_quit(ngx_stream_relay_pop3_session_t *ps);

static void ngx_stream_relay_pop3_login_thread(void *data, ngx_log_t *log);
static void ngx_stream_relay_pop3_read_thread(void *data, ngx_log_t *log);
static void ngx_stream_relay_pop3_update_thread(void *data, ngx_log_t *log);
static ngx_int_t ngx_stream_relay_pop3_open_mailbox(
    ngx_stream_relay_pop3_task_ctx_t *ctx);
static ngx_int_t ngx_stream_relay_pop3_list_dir(
    ngx_stream_relay_pop3_task_ctx_t *ctx, u_char *path, u_char *end,
    ngx_uint_t in_new, size_t *cap, u_char *buf,
    ngx_stream_relay_pop3_sizes_t *sizes);
static void ngx_stream_relay_pop3_sizes_load(u_char *path, u_char *end,
    ngx_stream_relay_pop3_sizes_t *sizes);
static void ngx_stream_relay_pop3_sizes_save(
    ngx_stream_relay_pop3_session_t *ps, u_char *path, u_char *end,
    u_char *buf);
static int ngx_libc_cdecl ngx_stream_relay_pop3_sized_cmp(const void *one,
    const void *two);
static ngx_int_t ngx_stream_relay_pop3_scan(int fd, off_t *size, u_char *buf);
static void ngx_stream_relay_pop3_uidl(ngx_stream_relay_pop3_msg_t *m);
static int ngx_libc_cdecl ngx_stream_relay_pop3_cmp(const void *one,
    const void *two);
static u_char *ngx_stream_relay_pop3_path(ngx_stream_relay_pop3_session_t *ps,
    ngx_stream_relay_pop3_msg_t *m, u_char *buf);
static ngx_int_t ngx_stream_relay_pop3_fail(
    ngx_stream_relay_pop3_task_ctx_t *ctx, const char *call);

static void *ngx_stream_relay_pop3_create_srv_conf(ngx_conf_t *cf);
static char *ngx_stream_relay_pop3_merge_srv_conf(ngx_conf_t *cf,
    void *parent, void *child);
static char *ngx_stream_relay_pop3(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);


static const char  *ngx_stream_relay_pop3_state_names[] = {
    "authorization",
    "sasl",
    "transaction",
    "list",
    "retr",
    "busy",
    "closing"
};


static ngx_command_t  ngx_stream_relay_pop3_commands[] = {

    { ngx_string("relay_pop3"),
      NGX_STREAM_SRV_CONF|NGX_CONF_NOARGS,
      ngx_stream_relay_pop3,
      NGX_STREAM_SRV_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("relay_pop3_plaintext"),
      NGX_STREAM_MAIN_CONF|NGX_STREAM_SRV_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_STREAM_SRV_CONF_OFFSET,
      offsetof(ngx_stream_relay_pop3_srv_conf_t, plaintext),
      NULL },

      ngx_null_command
};


static ngx_stream_module_t  ngx_stream_relay_pop3_module_ctx = {
    NULL,                                  /* preconfiguration */
    NULL,                                  /* postconfiguration */

    NULL,                                  /* create main configuration */
    NULL,                                  /* init main configuration */

    ngx_stream_relay_pop3_create_srv_conf, /* create server configuration */
    ngx_stream_relay_pop3_merge_srv_conf   /* merge server configuration */
};


ngx_module_t  ngx_stream_relay_pop3_module = {
    NGX_MODULE_V1,
    &ngx_stream_relay_pop3_module_ctx,     /* module context */
    ngx_stream_relay_pop3_commands,        /* module directives */
    NGX_STREAM_MODULE,                     /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    NULL,                                  /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    NULL,                                  /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


static void
ngx_stream_relay_pop3_init_session(ngx_stream_session_t *s)
{
    ngx_connection_t                 *c;
    ngx_pool_cleanup_t               *cln;
    ngx_stream_relay_pop3_session_t  *ps;

    c = s->connection;

    ps = ngx_pcalloc(c->pool, sizeof(ngx_stream_relay_pop3_session_t));
    if (ps == NULL) {
        ngx_stream_finalize_session(s, NGX_STREAM_INTERNAL_SERVER_ERROR);
        return;
    }

    ps->session = s;
    ps->connection = c;
    ps->conf = ngx_stream_get_module_srv_conf(s, ngx_stream_relay_module);
    ps->pconf = ngx_stream_get_module_srv_conf(s,
                                               ngx_stream_relay_pop3_module);
    ps->main_conf = ngx_stream_get_module_main_conf(s,
                                                    ngx_stream_relay_module);
    ps->lock = NGX_INVALID_FILE;
    ps->fd = NGX_INVALID_FILE;

    cln = ngx_pool_cleanup_add(c->pool, 0);
    if (cln == NULL) {
        ngx_stream_finalize_session(s, NGX_STREAM_INTERNAL_SERVER_ERROR);
        return;
    }

    cln->handler = ngx_stream_relay_pop3_cleanup;
    cln->data = ps;

    ps->in = ngx_create_temp_buf(c->pool, NGX_STREAM_RELAY_POP3_IN_SIZE);
    ps->out = ngx_create_temp_buf(c->pool, NGX_STREAM_RELAY_POP3_OUT_SIZE);
    if (ps->in == NULL || ps->out == NULL) {
        ngx_stream_finalize_session(s, NGX_STREAM_INTERNAL_SERVER_ERROR);
        return;
    }

    ps->lp.max = NGX_STREAM_RELAY_POP3_LINE_MAX;

    /* implicit TLS ("listen ... ssl"): the handshake is already done */
    ps->tls = (c->ssl != NULL);

    ngx_stream_set_ctx(s, ps, ngx_stream_relay_pop3_module);

    c->read->handler = ngx_stream_relay_pop3_handler;
    c->write->handler = ngx_stream_relay_pop3_handler;
    c->log->action = "in POP3 session";

    ngx_stream_relay_pop3_reply(ps, "+OK %V POP3 server ready",
                                &ps->main_conf->hostname);
    ngx_stream_relay_pop3_run(ps);
}


/*
 * The pool goes: release the mailbox (closing the lock's descriptor is what
 * unlocks it) and what the tasks malloc()ed.  close() of a local file does
 * not block; a task is never in flight here (see ngx_stream_relay_pop3_close).
 */

static void
ngx_stream_relay_pop3_cleanup(void *data)
{
    ngx_stream_relay_pop3_session_t  *ps = data;

    ngx_uint_t  i;

    if (ps->fd != NGX_INVALID_FILE) {
        (void) ngx_close_file(ps->fd);
        ps->fd = NGX_INVALID_FILE;
    }

    if (ps->lock != NGX_INVALID_FILE) {
        (void) ngx_close_file(ps->lock);
        ps->lock = NGX_INVALID_FILE;
    }

    if (ps->msgs) {
        for (i = 0; i < ps->nmsgs; i++) {
            ngx_free(ps->msgs[i].name);
        }

        ngx_free(ps->msgs);
        ps->msgs = NULL;
    }
}


static void
ngx_stream_relay_pop3_enter(ngx_stream_relay_pop3_session_t *ps,
    ngx_stream_relay_pop3_state_e state)
{
    ngx_log_debug2(NGX_LOG_DEBUG_STREAM, ps->connection->log, 0,
                   "relay pop3: %s -> %s",
                   ngx_stream_relay_pop3_state_names[ps->state],
                   ngx_stream_relay_pop3_state_names[state]);

    ps->state = state;
}


static void
ngx_stream_relay_pop3_handler(ngx_event_t *ev)
{
    ngx_connection_t                 *c;
    ngx_stream_session_t             *s;
    ngx_stream_relay_pop3_session_t  *ps;

    c = ev->data;
    s = c->data;
    ps = ngx_stream_get_module_ctx(s, ngx_stream_relay_pop3_module);

    if (ps->dead) {
        return;                          /* the task finishes the session */
    }

    if (ev->timedout && ev->write) {
        ngx_log_error(NGX_LOG_INFO, c->log, NGX_ETIMEDOUT,
                      "client does not read replies");
        ngx_stream_relay_pop3_close(ps);
        return;
    }

    if (ev->timedout) {
        ev->timedout = 0;

        if (ps->state == ngx_stream_relay_pop3_st_busy) {
            ngx_add_timer(ev, ps->conf->timeout);
            return;                      /* the task will resume us */
        }

        if (ps->state != ngx_stream_relay_pop3_st_list
            && ps->state != ngx_stream_relay_pop3_st_retr
            && (ngx_msec_int_t) (ps->deadline - ngx_current_msec) > 0)
        {
            ngx_add_timer(ev, ps->deadline - ngx_current_msec);
            return;                      /* a stale timer */
        }

        if (ps->state != ngx_stream_relay_pop3_st_list
            && ps->state != ngx_stream_relay_pop3_st_retr)
        {
            /* RFC 1939 3: autologout, no UPDATE, no response */

            ngx_log_error(NGX_LOG_INFO, c->log, NGX_ETIMEDOUT,
                          "client timed out");
            ngx_stream_relay_pop3_close(ps);
            return;
        }
    }

    ngx_stream_relay_pop3_run(ps);
}


static void
ngx_stream_relay_pop3_run(ngx_stream_relay_pop3_session_t *ps)
{
    ngx_int_t          rc;
    ngx_msec_int_t     left;
    ngx_buf_t         *out;
    ngx_connection_t  *c;

    c = ps->connection;

    for ( ;; ) {

        if (ps->dead) {
            return;
        }

        out = ps->out;

        /* worker_shutdown_timeout: end the session, without UPDATE */

        if (c->close && ps->state != ngx_stream_relay_pop3_st_busy
            && ps->state != ngx_stream_relay_pop3_st_closing)
        {
            if (!ps->started) {
                ngx_stream_relay_pop3_reply(ps, "-ERR [SYS/TEMP] Server "
                                            "shutting down");
            }

            ngx_stream_relay_pop3_enter(ps, ngx_stream_relay_pop3_st_closing);
        }

        if (out->pos != out->last
            && (ps->state == ngx_stream_relay_pop3_st_closing
                || ps->state == ngx_stream_relay_pop3_st_busy
                || ps->state == ngx_stream_relay_pop3_st_list
                || ps->state == ngx_stream_relay_pop3_st_retr
                || (size_t) (out->end - out->last)
                   < 2 * NGX_STREAM_RELAY_POP3_LINE_MAX))
        {
            rc = ngx_relay_send(c, out, ps->conf->timeout);

            if (rc == NGX_ERROR) {
                ngx_stream_relay_pop3_close(ps);
                return;
            }

            if (rc == NGX_AGAIN) {
                return;                  /* the write event brings us back */
            }
        }

        switch (ps->state) {

        case ngx_stream_relay_pop3_st_closing:
            ngx_stream_relay_pop3_close(ps);
            return;

        case ngx_stream_relay_pop3_st_busy:
            /* a task resumes us; the timer keeps a quitting worker alive */
            ngx_add_timer(c->read, ps->conf->timeout);
            return;

        case ngx_stream_relay_pop3_st_list:
            ngx_stream_relay_pop3_list_more(ps);
            continue;

        case ngx_stream_relay_pop3_st_retr:
            /* the output is flushed: read the next chunk */
            if (ngx_stream_relay_pop3_post(ps, ngx_stream_relay_pop3_op_read,
                                           ngx_stream_relay_pop3_read_thread)
                != NGX_OK)
            {
                ngx_stream_relay_pop3_close(ps);
                return;
            }

            continue;

        case ngx_stream_relay_pop3_st_sasl:
            rc = ngx_stream_relay_pop3_sasl_response(ps);
            break;

        default: /* auth, trans */
            rc = ngx_stream_relay_pop3_command(ps);
            break;
        }

        if (rc == NGX_OK) {
            continue;
        }

        /* NGX_AGAIN: no complete line buffered */

        rc = ngx_stream_relay_pop3_read(ps);

        if (rc == NGX_ERROR) {
            ngx_stream_relay_pop3_close(ps);
            return;
        }

        if (rc == NGX_OK) {
            continue;
        }

        if (out->pos != out->last) {
            rc = ngx_relay_send(c, out, ps->conf->timeout);

            if (rc == NGX_ERROR) {
                ngx_stream_relay_pop3_close(ps);
                return;
            }

            if (rc == NGX_AGAIN) {
                return;
            }
        }

        if (ngx_handle_read_event(c->read, 0) != NGX_OK) {
            ngx_stream_relay_pop3_close(ps);
            return;
        }

        /*
         * relay_timeout for a whole line: it starts when no part of one
         * is buffered, and partial input does not restart it ("slowloris")
         */

        if (ps->in->pos == ps->in->last && ps->lp.state == 0) {
            ps->deadline = ngx_current_msec + ps->conf->timeout;
        }

        left = (ngx_msec_int_t) (ps->deadline - ngx_current_msec);
        ngx_add_timer(c->read, left > 0 ? (ngx_msec_t) left : 1);
        return;
    }
}


static ngx_int_t
ngx_stream_relay_pop3_read(ngx_stream_relay_pop3_session_t *ps)
{
    return ngx_relay_recv(ps->connection, ps->in);
}


/*
 * Ends the session; never while a task runs (it uses the session and the
 * pool): then the task's completion does it.
 */

static void
ngx_stream_relay_pop3_close(ngx_stream_relay_pop3_session_t *ps)
{
    ngx_connection_t  *c;

    c = ps->connection;

    if (ps->running) {
        ps->dead = 1;
        return;
    }

    if (ps->logged_in && !ps->logged) {
        ps->logged = 1;

        ngx_log_error(NGX_LOG_INFO, c->log, 0,
                      "pop3 session end: user=%V, messages=%ui, "
                      "retrieved=%ui, deleted=%ui, %s",
                      &ps->user, ps->nmsgs, ps->retrieved, ps->removed,
                      ps->quit ? "quit" : "no quit, nothing deleted");
    }

    ngx_stream_finalize_session(ps->session, NGX_STREAM_OK);
}


static void
ngx_stream_relay_pop3_reply(ngx_stream_relay_pop3_session_t *ps,
    const char *fmt, ...)
{
    u_char     *p;
    size_t      len;
    va_list     args;
    ngx_buf_t  *b;

    b = ps->out;

    if ((size_t) (b->end - b->last) < NGX_STREAM_RELAY_POP3_LINE_MAX) {

        if (b->pos != b->start) {
            len = b->last - b->pos;
            ngx_memmove(b->start, b->pos, len);
            b->pos = b->start;
            b->last = b->start + len;
        }

        if ((size_t) (b->end - b->last) < NGX_STREAM_RELAY_POP3_LINE_MAX) {
            ngx_log_error(NGX_LOG_INFO, ps->connection->log, 0,
                          "client does not read replies");
            ngx_stream_relay_pop3_enter(ps, ngx_stream_relay_pop3_st_closing);
            return;
        }
    }

    va_start(args, fmt);
    p = ngx_vslprintf(b->last, b->last + NGX_STREAM_RELAY_POP3_LINE_MAX - 2,
                      fmt, args);
    va_end(args);

    *p++ = CR;
    *p++ = LF;
    b->last = p;
}


/* "-ERR reason": counts towards relay_max_errors */

static void
ngx_stream_relay_pop3_error(ngx_stream_relay_pop3_session_t *ps,
    const char *fmt, ...)
{
    u_char   buf[NGX_STREAM_RELAY_POP3_LINE_MAX], *p;
    va_list  args;

    va_start(args, fmt);
    p = ngx_vslprintf(buf, buf + sizeof(buf) - 8, fmt, args);
    va_end(args);

    ngx_stream_relay_pop3_reply(ps, "-ERR %*s", p - buf, buf);

    if (++ps->errors >= ps->conf->max_errors
        && ps->state != ngx_stream_relay_pop3_st_closing)
    {
        ngx_log_error(NGX_LOG_INFO, ps->connection->log, 0,
                      "too many errors from client");
        ngx_stream_relay_pop3_reply(ps, "-ERR Too many errors, closing "
                                    "connection");
        ngx_stream_relay_pop3_enter(ps, ngx_stream_relay_pop3_st_closing);
    }
}


static ngx_int_t
ngx_stream_relay_pop3_command(ngx_stream_relay_pop3_session_t *ps)
{
    ngx_int_t                     rc;
    ngx_str_t                    *args;
    ngx_uint_t                    i, n, trans;
    ngx_relay_pop3_command_t      cmd;
    ngx_stream_relay_pop3_msg_t  *m;

    rc = ngx_relay_parse_line(&ps->lp, ps->in);

    if (rc == NGX_AGAIN) {
        return NGX_AGAIN;
    }

    if (rc == NGX_RELAY_PARSE_TOO_LONG) {
        ngx_stream_relay_pop3_error(ps, "Line too long");
        return NGX_OK;
    }

    /* the keyword and up to two arguments (ngx_relay_parse.c) */

    if (ngx_relay_parse_pop3_command(&ps->lp.line, &cmd) != NGX_OK) {
        ngx_stream_relay_pop3_error(ps, "Unknown command");
        return NGX_OK;
    }

    args = cmd.args;
    n = cmd.nargs + cmd.more;            /* 3: two and more */

    if (cmd.verb == NGX_RELAY_POP3_PASS) {
        ngx_log_debug1(NGX_LOG_DEBUG_STREAM, ps->connection->log, 0,
                       "relay pop3: PASS %s", "********");

    } else {
        ngx_log_debug1(NGX_LOG_DEBUG_STREAM, ps->connection->log, 0,
                       "relay pop3: \"%V\"", &ps->lp.line);
    }

    trans = (ps->state == ngx_stream_relay_pop3_st_trans);

    /* commands of every state */

    switch (cmd.verb) {

    case NGX_RELAY_POP3_CAPA:
        ngx_stream_relay_pop3_capa(ps);
        return NGX_OK;

    case NGX_RELAY_POP3_QUIT:
        ngx_stream_relay_pop3_quit(ps);
        return NGX_OK;

    case NGX_RELAY_POP3_NOOP:
        if (!trans) {
            ngx_stream_relay_pop3_error(ps, "Not logged in");
            return NGX_OK;
        }

        if (n != 0) {
            ngx_stream_relay_pop3_error(ps, "Syntax: NOOP");
            return NGX_OK;
        }

        ngx_stream_relay_pop3_reply(ps, "+OK");
        return NGX_OK;

    case NGX_RELAY_POP3_UNKNOWN:
        ngx_stream_relay_pop3_error(ps, "Unknown command");
        return NGX_OK;

    default:
        break;
    }

    if (!trans) {

        /* AUTHORIZATION */

        switch (cmd.verb) {

        case NGX_RELAY_POP3_USER:
            if (!ngx_stream_relay_pop3_plaintext_ok(ps)) {
                return NGX_OK;
            }

            if (n != 1 || args[0].len > NGX_RELAY_MAX_ADDR) {
                ps->user.len = 0;
                ngx_stream_relay_pop3_error(ps, "Syntax: USER name");
                return NGX_OK;
            }

            ps->user.data = ngx_pnalloc(ps->connection->pool, args[0].len);
            if (ps->user.data == NULL) {
                ps->user.len = 0;
                ngx_stream_relay_pop3_error(ps, "[SYS/TEMP] Out of memory");
                return NGX_OK;
            }

            ngx_memcpy(ps->user.data, args[0].data, args[0].len);
            ps->user.len = args[0].len;

            ngx_stream_relay_pop3_reply(ps, "+OK Send PASS");
            return NGX_OK;

        case NGX_RELAY_POP3_PASS:
            if (!ngx_stream_relay_pop3_plaintext_ok(ps)) {
                return NGX_OK;
            }

            if (ps->user.len == 0) {
                ngx_stream_relay_pop3_error(ps, "Send USER first");
                return NGX_OK;
            }

            /* RFC 1939 7: the password may contain spaces */
            ngx_stream_relay_pop3_login(ps, &ps->user, &cmd.rest);
            return NGX_OK;

        case NGX_RELAY_POP3_AUTH:
            ngx_stream_relay_pop3_auth(ps, &cmd);
            return NGX_OK;

        case NGX_RELAY_POP3_STLS:
            if (n != 0) {
                ngx_stream_relay_pop3_error(ps, "Syntax: STLS");
                return NGX_OK;
            }

            ngx_stream_relay_pop3_stls(ps);
            return NGX_OK;

        default:                     /* the commands of TRANSACTION */
            ngx_stream_relay_pop3_error(ps, "Not logged in");
            return NGX_OK;
        }
    }

    /* TRANSACTION */

    switch (cmd.verb) {

    case NGX_RELAY_POP3_STAT:
        if (n != 0) {
            ngx_stream_relay_pop3_error(ps, "Syntax: STAT");
            return NGX_OK;
        }

        ngx_stream_relay_pop3_reply(ps, "+OK %ui %O",
                                    ps->nmsgs - ps->ndeleted,
                                    ps->total_size - ps->deleted_size);
        return NGX_OK;

    case NGX_RELAY_POP3_LIST:
    case NGX_RELAY_POP3_UIDL:
        if (n > 1) {
            ngx_stream_relay_pop3_error(ps, "Syntax: %s [message]",
                                        cmd.verb == NGX_RELAY_POP3_UIDL
                                        ? "UIDL" : "LIST");
            return NGX_OK;
        }

        ngx_stream_relay_pop3_list(ps, n ? &args[0] : NULL,
                                   cmd.verb == NGX_RELAY_POP3_UIDL);
        return NGX_OK;

    case NGX_RELAY_POP3_RETR:
        if (n != 1) {
            ngx_stream_relay_pop3_error(ps, "Syntax: RETR message");
            return NGX_OK;
        }

        ngx_stream_relay_pop3_retr(ps, args, n, 1);
        return NGX_OK;

    case NGX_RELAY_POP3_TOP:
        if (n != 2) {
            ngx_stream_relay_pop3_error(ps, "Syntax: TOP message lines");
            return NGX_OK;
        }

        ngx_stream_relay_pop3_retr(ps, args, n, 0);
        return NGX_OK;

    case NGX_RELAY_POP3_DELE:
        if (n != 1) {
            ngx_stream_relay_pop3_error(ps, "Syntax: DELE message");
            return NGX_OK;
        }

        m = ngx_stream_relay_pop3_msg(ps, &args[0]);
        if (m == NULL) {
            return NGX_OK;
        }

        m->deleted = 1;
        ps->ndeleted++;
        ps->deleted_size += m->size;

        ngx_stream_relay_pop3_reply(ps, "+OK Message %ui deleted",
                                    (ngx_uint_t) (m - ps->msgs) + 1);
        return NGX_OK;

    case NGX_RELAY_POP3_RSET:
        if (n != 0) {
            ngx_stream_relay_pop3_error(ps, "Syntax: RSET");
            return NGX_OK;
        }

        for (i = 0; i < ps->nmsgs; i++) {
            ps->msgs[i].deleted = 0;
        }

        ps->ndeleted = 0;
        ps->deleted_size = 0;

        ngx_stream_relay_pop3_reply(ps, "+OK %ui messages (%O octets)",
                                    ps->nmsgs, ps->total_size);
        return NGX_OK;

    default:                         /* USER, PASS, AUTH, STLS */
        ngx_stream_relay_pop3_error(ps, "Already logged in");
        return NGX_OK;
    }
}


static void
ngx_stream_relay_pop3_capa(ngx_stream_relay_pop3_session_t *ps)
{
    ngx_uint_t  auth, plain;

    auth = (ps->state != ngx_stream_relay_pop3_st_trans);
    plain = ps->tls || ps->pconf->plaintext;

    ngx_stream_relay_pop3_reply(ps, "+OK Capability list follows");
    ngx_stream_relay_pop3_reply(ps, "CAPA");
    ngx_stream_relay_pop3_reply(ps, "TOP");
    ngx_stream_relay_pop3_reply(ps, "UIDL");
    ngx_stream_relay_pop3_reply(ps, "RESP-CODES");
    ngx_stream_relay_pop3_reply(ps, "AUTH-RESP-CODE");
    ngx_stream_relay_pop3_reply(ps, "PIPELINING");

    if (auth && plain) {
        ngx_stream_relay_pop3_reply(ps, "USER");
        ngx_stream_relay_pop3_reply(ps, "SASL PLAIN");
    }

    if (auth && ps->conf->ssl && !ps->tls) {
        ngx_stream_relay_pop3_reply(ps, "STLS");
    }

    ngx_stream_relay_pop3_reply(ps, "IMPLEMENTATION nginx-relay");
    ngx_stream_relay_pop3_reply(ps, ".");
}


static void
ngx_stream_relay_pop3_stls(ngx_stream_relay_pop3_session_t *ps)
{
    ngx_connection_t  *c;

    c = ps->connection;

    if (ps->tls) {
        ngx_stream_relay_pop3_error(ps, "TLS already active");
        return;
    }

    if (ps->conf->ssl == NULL) {
        ngx_stream_relay_pop3_error(ps, "STLS not available");
        return;
    }

    ngx_stream_relay_pop3_reply(ps, "+OK Begin TLS negotiation");

    /* what the client sent after STLS came in plaintext: drop it */

    ps->in->pos = ps->in->start;
    ps->in->last = ps->in->start;
    ps->lp.state = 0;
    ps->user.len = 0;

    if (ngx_relay_send(c, ps->out, ps->conf->timeout) != NGX_OK) {
        ngx_stream_relay_pop3_enter(ps, ngx_stream_relay_pop3_st_closing);
        return;
    }

    ngx_stream_relay_pop3_enter(ps, ngx_stream_relay_pop3_st_busy);

    c->log->action = "in STLS handshake";

    switch (ngx_relay_tls_start(c, ps->conf->ssl, ps->conf->timeout,
                                ngx_stream_relay_pop3_tls_handshaked))
    {
    case NGX_ERROR:
        ngx_stream_relay_pop3_enter(ps, ngx_stream_relay_pop3_st_closing);
        return;

    case NGX_AGAIN:
        return;

    default:
        ngx_stream_relay_pop3_tls_established(ps);
    }
}


static void
ngx_stream_relay_pop3_tls_handshaked(ngx_connection_t *c)
{
    ngx_stream_session_t             *s;
    ngx_stream_relay_pop3_session_t  *ps;

    s = c->data;
    ps = ngx_stream_get_module_ctx(s, ngx_stream_relay_pop3_module);

    if (c->read->timer_set) {
        ngx_del_timer(c->read);
    }

    c->read->handler = ngx_stream_relay_pop3_handler;
    c->write->handler = ngx_stream_relay_pop3_handler;

    ngx_stream_relay_pop3_tls_established(ps);
    ngx_stream_relay_pop3_run(ps);
}


static void
ngx_stream_relay_pop3_tls_established(ngx_stream_relay_pop3_session_t *ps)
{
    ngx_connection_t  *c;

    c = ps->connection;
    c->log->action = "in POP3 session";

    if (!c->ssl->handshaked) {
        ngx_log_error(NGX_LOG_INFO, c->log, 0, "STLS handshake failed");
        ngx_stream_relay_pop3_enter(ps, ngx_stream_relay_pop3_st_closing);
        return;
    }

    ps->tls = 1;
    ngx_stream_relay_pop3_enter(ps, ngx_stream_relay_pop3_st_auth);
}


static ngx_uint_t
ngx_stream_relay_pop3_plaintext_ok(ngx_stream_relay_pop3_session_t *ps)
{
    if (ps->tls || ps->pconf->plaintext) {
        return 1;
    }

    ngx_stream_relay_pop3_error(ps, "[AUTH] Plaintext authentication "
                                "disallowed on an unencrypted connection, "
                                "use STLS");
    return 0;
}


static void
ngx_stream_relay_pop3_auth(ngx_stream_relay_pop3_session_t *ps,
    ngx_relay_pop3_command_t *cmd)
{
    ngx_str_t  *mech, *initial;

    if (cmd->nargs == 0) {
        /* the list of mechanisms (a widespread extension) */
        ngx_stream_relay_pop3_reply(ps, "+OK");

        if (ps->tls || ps->pconf->plaintext) {
            ngx_stream_relay_pop3_reply(ps, "PLAIN");
        }

        ngx_stream_relay_pop3_reply(ps, ".");
        return;
    }

    if (!ngx_stream_relay_pop3_plaintext_ok(ps)) {
        return;
    }

    mech = &cmd->args[0];
    initial = (cmd->nargs > 1) ? &cmd->args[1] : NULL;

    if (cmd->more) {
        ngx_stream_relay_pop3_error(ps, "Syntax: AUTH mechanism "
                                    "[initial-response]");
        return;
    }

    if (mech->len != 5
        || ngx_strncasecmp(mech->data, (u_char *) "PLAIN", 5) != 0)
    {
        ngx_stream_relay_pop3_error(ps, "Unsupported authentication "
                                    "mechanism");
        return;
    }

    if (initial == NULL) {
        ps->lp.max = NGX_STREAM_RELAY_POP3_SASL_MAX;
        ngx_stream_relay_pop3_enter(ps, ngx_stream_relay_pop3_st_sasl);
        ngx_stream_relay_pop3_reply(ps, "+ ");
        return;
    }

    ngx_stream_relay_pop3_sasl_plain(ps, initial);
}


static ngx_int_t
ngx_stream_relay_pop3_sasl_response(ngx_stream_relay_pop3_session_t *ps)
{
    ngx_int_t  rc;

    rc = ngx_relay_parse_line(&ps->lp, ps->in);

    if (rc == NGX_AGAIN) {
        return NGX_AGAIN;
    }

    ps->lp.max = NGX_STREAM_RELAY_POP3_LINE_MAX;
    ngx_stream_relay_pop3_enter(ps, ngx_stream_relay_pop3_st_auth);

    if (rc == NGX_RELAY_PARSE_TOO_LONG) {
        ngx_stream_relay_pop3_error(ps, "Line too long");
        return NGX_OK;
    }

    ngx_stream_relay_pop3_sasl_plain(ps, &ps->lp.line);

    return NGX_OK;
}


static void
ngx_stream_relay_pop3_sasl_plain(ngx_stream_relay_pop3_session_t *ps,
    ngx_str_t *line)
{
    u_char     buf[NGX_STREAM_RELAY_POP3_SASL_MAX];
    ngx_str_t  decoded, user, passwd;

    /* RFC 5034 4: "*" cancels, "=" is an empty initial response */

    switch (ngx_relay_parse_auth_response(line, buf, sizeof(buf), &decoded)) {

    case NGX_OK:
        break;

    case NGX_DECLINED:
        ngx_stream_relay_pop3_error(ps, "Authentication cancelled");
        return;

    default:
        ngx_stream_relay_pop3_error(ps, "Invalid base64 data");
        return;
    }

    if (ngx_relay_parse_auth_plain(&decoded, &user, &passwd) != NGX_OK) {
        explicit_bzero(buf, sizeof(buf));
        ngx_stream_relay_pop3_error(ps, "[AUTH] Authentication failed");
        return;
    }

    ngx_stream_relay_pop3_login(ps, &user, &passwd);

    explicit_bzero(buf, sizeof(buf));
}


/*
 * The password check, then the mailbox (created when missing), its lock
 * and the listing: one task.  A login that names no mailbox of a local
 * domain costs a crypt() and fails like a wrong password.
 */

static void
ngx_stream_relay_pop3_login(ngx_stream_relay_pop3_session_t *ps,
    ngx_str_t *user, ngx_str_t *passwd)
{
    u_char                            *p;
    ngx_str_t                         *hash;
    ngx_connection_t                  *c;
    ngx_stream_relay_pop3_task_ctx_t  *ctx;

    c = ps->connection;

    if (ps->task == NULL) {
        ps->task = ngx_thread_task_alloc(c->pool,
                                   sizeof(ngx_stream_relay_pop3_task_ctx_t));
        if (ps->task == NULL) {
            goto temporary;
        }
    }

    ctx = ps->task->ctx;
    ngx_memzero(ctx, sizeof(ngx_stream_relay_pop3_task_ctx_t));
    ctx->ps = ps;

    if (user != &ps->user) {
        p = ngx_pnalloc(c->pool, user->len);
        if (p == NULL) {
            goto temporary;
        }

        ngx_memcpy(p, user->data, user->len);
        ps->user.data = p;
        ps->user.len = user->len;
    }

    hash = ngx_relay_users_find(ps->conf->auth_users, &ps->user);

    ctx->mailbox_ok = (hash != NULL && passwd->len != 0
                       && ngx_stream_relay_pop3_mailbox(ps, &ps->user));

    /* unknown users cost a crypt() too: no timing oracle for logins */

    if (hash && hash->len) {
        ctx->check.hash = *hash;

    } else {
        ngx_str_set(&ctx->check.hash,
                    "$6$relaysalt$unknownuserunknownuserunknownuserunknown"
                    "useruseruseruser");
    }

    ctx->check.passwd = ngx_alloc(passwd->len + 1, c->log);
    if (ctx->check.passwd == NULL) {
        goto temporary;
    }

    ngx_memcpy(ctx->check.passwd, passwd->data, passwd->len);
    ctx->check.passwd_len = passwd->len;

    if (ngx_stream_relay_pop3_post(ps, ngx_stream_relay_pop3_op_login,
                                   ngx_stream_relay_pop3_login_thread)
        != NGX_OK)
    {
        explicit_bzero(ctx->check.passwd, ctx->check.passwd_len);
        ngx_free(ctx->check.passwd);
        ctx->check.passwd = NULL;
        goto temporary;
    }

    return;

temporary:

    ps->user.len = 0;
    ngx_stream_relay_pop3_error(ps, "[SYS/TEMP] Temporary authentication "
                                "failure");
}


/*
 * "local@domain" of a local domain -> ps->mailbox, the Maildir the SMTP
 * side delivers to (the same mapping: ngx_relay_maildir_mailbox()).  Login
 * names are plain: no quoting.
 */

static ngx_uint_t
ngx_stream_relay_pop3_mailbox(ngx_stream_relay_pop3_session_t *ps,
    ngx_str_t *user)
{
    u_char               *p;
    size_t                len;
    ngx_relay_mailbox_t   mb;

    if (ngx_strlchr(user->data, user->data + user->len, '"') != NULL
        || ngx_strlchr(user->data, user->data + user->len, '\\') != NULL
        || ngx_relay_maildir_mailbox(ps->main_conf->domains, user, &mb)
           != NGX_OK)
    {
        return 0;
    }

    len = ps->main_conf->maildir.len + mb.domain.len + 1 + mb.local.len + 1;

    if (len + 256 + sizeof(NGX_STREAM_RELAY_POP3_LOCK) >= NGX_MAX_PATH) {
        return 0;
    }

    p = ngx_pnalloc(ps->connection->pool, len + 1);
    if (p == NULL) {
        return 0;
    }

    ps->mailbox = p;
    p = ngx_cpymem(p, ps->main_conf->maildir.data, ps->main_conf->maildir.len);
    p = ngx_cpymem(p, mb.domain.data, mb.domain.len);
    *p++ = '/';
    p = ngx_cpymem(p, mb.local.data, mb.local.len);
    *p++ = '/';
    *p = '\0';

    ps->mailbox_len = len;

    return 1;
}


static ngx_int_t
ngx_stream_relay_pop3_post(ngx_stream_relay_pop3_session_t *ps,
    ngx_stream_relay_pop3_op_e op, void (*handler)(void *data, ngx_log_t *log))
{
    ngx_connection_t                  *c;
    ngx_stream_relay_pop3_task_ctx_t  *ctx;

    c = ps->connection;

    if (ps->task == NULL) {
        ps->task = ngx_thread_task_alloc(c->pool,
                                   sizeof(ngx_stream_relay_pop3_task_ctx_t));
        if (ps->task == NULL) {
            return NGX_ERROR;
        }

        ctx = ps->task->ctx;
        ctx->ps = ps;
    }

    ctx = ps->task->ctx;
    ctx->op = op;
    ctx->rc = NGX_OK;
    ctx->err = 0;
    ctx->failed = NULL;

    ps->task->handler = handler;
    ps->task->event.handler = ngx_stream_relay_pop3_task_done;
    ps->task->event.data = ctx;

    if (ngx_thread_task_post(ps->main_conf->thread_pool, ps->task)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    ps->running = 1;
    ngx_stream_relay_pop3_enter(ps, ngx_stream_relay_pop3_st_busy);

    return NGX_OK;
}


static void
ngx_stream_relay_pop3_task_done(ngx_event_t *ev)
{
    ngx_stream_relay_pop3_task_ctx_t  *ctx = ev->data;

    ngx_connection_t                 *c;
    ngx_stream_relay_pop3_session_t  *ps;

    ps = ctx->ps;
    c = ps->connection;

    ps->running = 0;

    if (c->read->timer_set) {
        ngx_del_timer(c->read);
    }

    switch (ctx->op) {

    case ngx_stream_relay_pop3_op_login:
        ngx_stream_relay_pop3_login_done(ps, ctx);
        break;

    case ngx_stream_relay_pop3_op_read:
        ngx_stream_relay_pop3_read_done(ps, ctx);
        break;

    default: /* ngx_stream_relay_pop3_op_update */
        ngx_stream_relay_pop3_update_done(ps, ctx);
        break;
    }

    if (ps->dead) {
        ps->dead = 0;
        ngx_stream_relay_pop3_close(ps);
        return;
    }

    ngx_stream_relay_pop3_run(ps);
}


static void
ngx_stream_relay_pop3_login_done(ngx_stream_relay_pop3_session_t *ps,
    ngx_stream_relay_pop3_task_ctx_t *ctx)
{
    u_char            user[NGX_RELAY_MAX_ADDR + 16], *p;
    ngx_connection_t  *c;

    c = ps->connection;

    explicit_bzero(ctx->check.passwd, ctx->check.passwd_len);
    ngx_free(ctx->check.passwd);
    ctx->check.passwd = NULL;

    ngx_stream_relay_pop3_enter(ps, ngx_stream_relay_pop3_st_auth);

    /* the name as the client gave it: escaped for the log */

    p = ngx_relay_escape(user, sizeof(user), ps->user.data, ps->user.len);

    if (!ctx->check.ok || !ctx->mailbox_ok) {
        ngx_log_error(NGX_LOG_INFO, c->log, 0,
                      "pop3 authentication failed for \"%*s\"", p - user,
                      user);
        ps->user.len = 0;
        ngx_stream_relay_pop3_error(ps, "[AUTH] Authentication failed");
        return;
    }

    if (ctx->rc == NGX_BUSY) {
        ngx_log_error(NGX_LOG_INFO, c->log, 0,
                      "pop3 mailbox of \"%*s\" is in use", p - user, user);
        ps->user.len = 0;
        ngx_stream_relay_pop3_error(ps, "[IN-USE] Mailbox is locked by "
                                    "another session");
        return;
    }

    if (ctx->rc != NGX_OK) {
        ngx_log_error(NGX_LOG_CRIT, c->log, ctx->err,
                      "pop3 mailbox \"%s\": %s failed", ps->mailbox,
                      ctx->failed);
        ps->user.len = 0;
        ngx_stream_relay_pop3_error(ps, "[SYS/TEMP] Cannot open the "
                                    "mailbox");
        return;
    }

    ps->logged_in = 1;
    ngx_stream_relay_pop3_enter(ps, ngx_stream_relay_pop3_st_trans);

    ngx_log_error(NGX_LOG_INFO, c->log, 0,
                  "pop3 login: user=%V, messages=%ui, size=%O, tls=%d",
                  &ps->user, ps->nmsgs, ps->total_size, ps->tls);

    ngx_stream_relay_pop3_reply(ps, "+OK Logged in, %ui messages "
                                "(%O octets)", ps->nmsgs, ps->total_size);
}


/* "n": a message that exists and is not deleted, or -ERR */

static ngx_stream_relay_pop3_msg_t *
ngx_stream_relay_pop3_msg(ngx_stream_relay_pop3_session_t *ps, ngx_str_t *arg)
{
    ngx_uint_t  n;

    if (ngx_relay_parse_pop3_number(arg, &n) != NGX_OK) {
        ngx_stream_relay_pop3_error(ps, "Invalid message number");
        return NULL;
    }

    if (n < 1 || n > ps->nmsgs) {
        ngx_stream_relay_pop3_error(ps, "No such message");
        return NULL;
    }

    if (ps->msgs[n - 1].deleted) {
        ngx_stream_relay_pop3_error(ps, "Message %ui already deleted", n);
        return NULL;
    }

    return &ps->msgs[n - 1];
}


static void
ngx_stream_relay_pop3_list(ngx_stream_relay_pop3_session_t *ps,
    ngx_str_t *arg, ngx_uint_t uidl)
{
    ngx_stream_relay_pop3_msg_t  *m;

    if (arg) {
        m = ngx_stream_relay_pop3_msg(ps, arg);
        if (m == NULL) {
            return;
        }

        if (uidl) {
            ngx_stream_relay_pop3_reply(ps, "+OK %ui %*s",
                                        (ngx_uint_t) (m - ps->msgs) + 1,
                                        (size_t) m->uidl_len, m->uidl);

        } else {
            ngx_stream_relay_pop3_reply(ps, "+OK %ui %O",
                                        (ngx_uint_t) (m - ps->msgs) + 1,
                                        m->size);
        }

        return;
    }

    if (uidl) {
        ngx_stream_relay_pop3_reply(ps, "+OK Unique-ID listing follows");

    } else {
        ngx_stream_relay_pop3_reply(ps, "+OK %ui messages (%O octets)",
                                    ps->nmsgs - ps->ndeleted,
                                    ps->total_size - ps->deleted_size);
    }

    ps->list_next = 0;
    ps->list_uidl = uidl;
    ngx_stream_relay_pop3_enter(ps, ngx_stream_relay_pop3_st_list);
}


/* as many lines of a LIST or UIDL as fit; the loop flushes in between */

static void
ngx_stream_relay_pop3_list_more(ngx_stream_relay_pop3_session_t *ps)
{
    ngx_buf_t                    *b;
    ngx_stream_relay_pop3_msg_t  *m;

    b = ps->out;

    while (ps->list_next < ps->nmsgs) {

        if ((size_t) (b->end - b->last) < 2 * NGX_STREAM_RELAY_POP3_LINE_MAX) {
            return;
        }

        m = &ps->msgs[ps->list_next++];

        if (m->deleted) {
            continue;
        }

        if (ps->list_uidl) {
            ngx_stream_relay_pop3_reply(ps, "%ui %*s", ps->list_next,
                                        (size_t) m->uidl_len, m->uidl);

        } else {
            ngx_stream_relay_pop3_reply(ps, "%ui %O", ps->list_next,
                                        m->size);
        }
    }

    ngx_stream_relay_pop3_reply(ps, ".");
    ngx_stream_relay_pop3_enter(ps, ngx_stream_relay_pop3_st_trans);
}


static void
ngx_stream_relay_pop3_retr(ngx_stream_relay_pop3_session_t *ps,
    ngx_str_t *args, ngx_uint_t nargs, ngx_uint_t retr)
{
    ngx_int_t                     lines;
    ngx_uint_t                    n;
    ngx_connection_t             *c;
    ngx_stream_relay_pop3_msg_t  *m;

    c = ps->connection;
    lines = -1;

    if (!retr) {
        if (ngx_relay_parse_pop3_number(&args[1], &n) != NGX_OK) {
            ngx_stream_relay_pop3_error(ps, "Invalid number of lines");
            return;
        }

        lines = (ngx_int_t) n;
    }

    m = ngx_stream_relay_pop3_msg(ps, &args[0]);
    if (m == NULL) {
        return;
    }

    if (ps->chunk == NULL) {
        ps->chunk = ngx_pnalloc(c->pool, NGX_STREAM_RELAY_POP3_CHUNK);
        if (ps->chunk == NULL) {
            ngx_stream_relay_pop3_error(ps, "[SYS/TEMP] Out of memory");
            return;
        }
    }

    ps->msg = m;
    ps->msg_no = m - ps->msgs + 1;
    ps->offset = 0;
    ps->top_lines = lines;
    ps->retr = retr;
    ps->started = 0;
    ps->sol = 1;
    ps->cr = 0;
    ps->empty = 1;
    ps->body = 0;

    ngx_stream_relay_pop3_enter(ps, ngx_stream_relay_pop3_st_retr);
}


/*
 * A chunk of the message is in ps->chunk: the "+OK" first time, then the
 * chunk with CRLF line ends and dot-stuffing (at most twice its size), then
 * the terminating line at the end of the file or of TOP's lines.
 */

static void
ngx_stream_relay_pop3_read_done(ngx_stream_relay_pop3_session_t *ps,
    ngx_stream_relay_pop3_task_ctx_t *ctx)
{
    u_char                       *p, *last, *q, ch;
    ngx_buf_t                    *b;
    ngx_uint_t                    done;
    ngx_connection_t             *c;
    ngx_stream_relay_pop3_msg_t  *m;

    c = ps->connection;
    m = ps->msg;

    if (ctx->rc != NGX_OK) {
        ngx_log_error(NGX_LOG_CRIT, c->log, ctx->err,
                      "pop3 message \"%s%s%s\": %s failed", ps->mailbox,
                      m->in_new ? "new/" : "cur/", m->name, ctx->failed);

        if (ps->fd != NGX_INVALID_FILE) {
            (void) ngx_close_file(ps->fd);
            ps->fd = NGX_INVALID_FILE;
        }

        if (ps->started) {
            /* the message is cut short: the client must not take it */
            ngx_stream_relay_pop3_enter(ps, ngx_stream_relay_pop3_st_closing);
            return;
        }

        ngx_stream_relay_pop3_enter(ps, ngx_stream_relay_pop3_st_trans);
        ngx_stream_relay_pop3_error(ps, "[SYS/TEMP] Cannot read message %ui",
                                    ps->msg_no);
        return;
    }

    b = ps->out;

    if (!ps->started) {
        if ((size_t) (b->end - b->start)
            < 2 * NGX_STREAM_RELAY_POP3_CHUNK
              + 2 * NGX_STREAM_RELAY_POP3_LINE_MAX)
        {
            b = ngx_create_temp_buf(c->pool,
                                    2 * NGX_STREAM_RELAY_POP3_CHUNK
                                    + 2 * NGX_STREAM_RELAY_POP3_LINE_MAX);
            if (b == NULL) {
                ngx_stream_relay_pop3_enter(ps,
                                            ngx_stream_relay_pop3_st_closing);
                return;
            }

            /* the old buffer is empty: the loop flushed it */
            ps->out = b;
        }

        ps->started = 1;

        if (ps->retr) {
            ps->retrieved++;
            ngx_stream_relay_pop3_reply(ps, "+OK %O octets", m->size);

        } else {
            ngx_stream_relay_pop3_reply(ps, "+OK Top of message follows");
        }
    }

    /* ngx_stream_relay_pop3_reply() may have compacted: fits 2 * chunk */

    q = b->last;
    done = 0;
    last = ps->chunk + ctx->nread;

    for (p = ps->chunk; p < last; p++) {
        ch = *p;

        if (ch == LF) {
            if (!ps->cr) {
                *q++ = CR;
            }

            *q++ = LF;

            if (!ps->body) {
                if (ps->empty) {
                    ps->body = 1;        /* the empty line ends the header */
                    done = (ps->top_lines == 0);
                }

            } else if (ps->top_lines > 0) {
                done = (--ps->top_lines == 0);
            }

            ps->sol = 1;
            ps->cr = 0;
            ps->empty = 1;

            if (done) {
                break;
            }

            continue;
        }

        if (ps->sol && ch == '.') {
            *q++ = '.';
        }

        *q++ = ch;
        ps->sol = 0;
        ps->cr = (ch == CR);

        if (ch != CR) {
            ps->empty = 0;
        }
    }

    ps->offset += ctx->nread;

    if (ctx->nread == 0 || done) {
        if (!ps->sol) {
            *q++ = CR;
            *q++ = LF;
        }

        *q++ = '.';
        *q++ = CR;
        *q++ = LF;

        b->last = q;

        if (ps->fd != NGX_INVALID_FILE) {
            (void) ngx_close_file(ps->fd);
            ps->fd = NGX_INVALID_FILE;
        }

        ps->msg = NULL;
        ps->started = 0;
        ngx_stream_relay_pop3_enter(ps, ngx_stream_relay_pop3_st_trans);
        return;
    }

    b->last = q;

    ngx_stream_relay_pop3_enter(ps, ngx_stream_relay_pop3_st_retr);
}


static void
ngx_stream_relay_pop3_quit(ngx_stream_relay_pop3_session_t *ps)
{
    ps->quit = 1;

    if (ps->state != ngx_stream_relay_pop3_st_trans || ps->ndeleted == 0) {
        ngx_stream_relay_pop3_unlock(ps);
        ngx_stream_relay_pop3_reply(ps, "+OK %V POP3 server signing off",
                                    &ps->main_conf->hostname);
        ngx_stream_relay_pop3_enter(ps, ngx_stream_relay_pop3_st_closing);
        return;
    }

    /* UPDATE */

    if (ngx_stream_relay_pop3_post(ps, ngx_stream_relay_pop3_op_update,
                                   ngx_stream_relay_pop3_update_thread)
        != NGX_OK)
    {
        ngx_stream_relay_pop3_reply(ps, "-ERR [SYS/TEMP] Deleted messages "
                                    "not removed");
        ngx_stream_relay_pop3_enter(ps, ngx_stream_relay_pop3_st_closing);
    }
}


/*
 * The mailbox is free before the reply to QUIT (RFC 1939 6), so a client
 * that logs in again at once does not find it in use.
 */

static void
ngx_stream_relay_pop3_unlock(ngx_stream_relay_pop3_session_t *ps)
{
    if (ps->lock != NGX_INVALID_FILE) {
        (void) ngx_close_file(ps->lock);
        ps->lock = NGX_INVALID_FILE;
    }
}


static void
ngx_stream_relay_pop3_update_done(ngx_stream_relay_pop3_session_t *ps,
    ngx_stream_relay_pop3_task_ctx_t *ctx)
{
    ps->removed = ps->ndeleted - ctx->not_removed;

    ngx_stream_relay_pop3_unlock(ps);

    if (ctx->not_removed) {
        ngx_log_error(NGX_LOG_CRIT, ps->connection->log, ctx->err,
                      "pop3 mailbox \"%s\": %ui deleted messages not "
                      "removed, %s failed", ps->mailbox, ctx->not_removed,
                      ctx->failed);

        ngx_stream_relay_pop3_reply(ps, "-ERR [SYS/TEMP] Some deleted "
                                    "messages not removed");

    } else {
        ngx_stream_relay_pop3_reply(ps, "+OK %V POP3 server signing off "
                                    "(%ui messages left)",
                                    &ps->main_conf->hostname,
                                    ps->nmsgs - ps->ndeleted);
    }

    ngx_stream_relay_pop3_enter(ps, ngx_stream_relay_pop3_st_closing);
}


/* thread-pool tasks: no pools, no nginx log; results in the task's ctx */

static void
ngx_stream_relay_pop3_login_thread(void *data, ngx_log_t *log)
{
    ngx_stream_relay_pop3_task_ctx_t  *ctx = data;

    ngx_relay_auth_check_thread(&ctx->check, log);

    if (!ctx->check.ok || !ctx->mailbox_ok) {
        return;
    }

    ctx->rc = ngx_stream_relay_pop3_open_mailbox(ctx);
}


static ngx_int_t
ngx_stream_relay_pop3_open_mailbox(ngx_stream_relay_pop3_task_ctx_t *ctx)
{
    int                               fd;
    u_char                           *p, *end, *buf;
    size_t                            cap;
    ngx_int_t                         rc;
    ngx_uint_t                        i;
    struct stat                       st;
    ngx_stream_relay_pop3_sizes_t     sizes;
    ngx_stream_relay_pop3_session_t  *ps;
    u_char                            path[NGX_MAX_PATH];

    static const char  *subdirs[] = { "tmp", "new", "cur" };

    ps = ctx->ps;

    end = ngx_cpymem(path, ps->mailbox, ps->mailbox_len);
    *end = '\0';

    /* a user without mail yet gets the Maildir delivery would make */

    ngx_memcpy(end, "cur", 4);

    if (stat((char *) path, &st) == -1) {
        for (p = path + ps->main_conf->maildir.len; p < end; p++) {
            if (*p != '/') {
                continue;
            }

            *p = '\0';

            if (mkdir((char *) path, 0700) == -1 && errno != EEXIST) {
                return ngx_stream_relay_pop3_fail(ctx, "mkdir");
            }

            *p = '/';
        }

        for (i = 0; i < 3; i++) {
            ngx_memcpy(end, subdirs[i], 4);

            if (mkdir((char *) path, 0700) == -1 && errno != EEXIST) {
                return ngx_stream_relay_pop3_fail(ctx, "mkdir");
            }
        }
    }

    ngx_memcpy(end, NGX_STREAM_RELAY_POP3_LOCK,
               sizeof(NGX_STREAM_RELAY_POP3_LOCK));

    fd = open((char *) path, O_RDWR|O_CREAT|O_CLOEXEC|O_NOFOLLOW, 0600);
    if (fd == -1) {
        return ngx_stream_relay_pop3_fail(ctx, "open");
    }

    if (flock(fd, LOCK_EX|LOCK_NB) == -1) {
        if (errno == EWOULDBLOCK) {
            (void) close(fd);
            return NGX_BUSY;
        }

        ngx_stream_relay_pop3_fail(ctx, "flock");
        (void) close(fd);
        return NGX_ERROR;
    }

    buf = malloc(NGX_STREAM_RELAY_POP3_SCAN_BUF);
    if (buf == NULL) {
        (void) close(fd);
        ctx->err = ENOMEM;
        ctx->failed = "malloc";
        return NGX_ERROR;
    }

    cap = 0;

    ngx_stream_relay_pop3_sizes_load(path, end, &sizes);

    rc = ngx_stream_relay_pop3_list_dir(ctx, path, end, 1, &cap, buf, &sizes);

    if (rc == NGX_OK) {
        rc = ngx_stream_relay_pop3_list_dir(ctx, path, end, 0, &cap, buf,
                                            &sizes);
    }

    if (rc == NGX_OK
        && (sizes.hits != ps->nmsgs || sizes.nelts != ps->nmsgs))
    {
        ngx_stream_relay_pop3_sizes_save(ps, path, end, buf);
    }

    free(sizes.data);
    free(sizes.elts);

    if (rc != NGX_OK) {
        free(buf);
        (void) close(fd);

        for (i = 0; i < ps->nmsgs; i++) {
            free(ps->msgs[i].name);
        }

        free(ps->msgs);
        ps->msgs = NULL;
        ps->nmsgs = 0;

        return NGX_ERROR;
    }

    free(buf);

    if (ps->nmsgs > 1) {
        ngx_qsort(ps->msgs, ps->nmsgs, sizeof(ngx_stream_relay_pop3_msg_t),
                  ngx_stream_relay_pop3_cmp);
    }

    ps->total_size = 0;

    for (i = 0; i < ps->nmsgs; i++) {
        ngx_stream_relay_pop3_uidl(&ps->msgs[i]);
        ps->total_size += ps->msgs[i].size;
    }

    ps->lock = fd;

    return NGX_OK;
}


static ngx_int_t
ngx_stream_relay_pop3_list_dir(ngx_stream_relay_pop3_task_ctx_t *ctx,
    u_char *path, u_char *end, ngx_uint_t in_new, size_t *cap, u_char *buf,
    ngx_stream_relay_pop3_sizes_t *sizes)
{
    int                               dfd, fd;
    DIR                              *dir;
    off_t                             size;
    size_t                            len;
    u_char                           *colon;
    struct stat                       st;
    struct dirent                    *de;
    ngx_stream_relay_pop3_msg_t      *m;
    ngx_stream_relay_pop3_sized_t     key, *found;
    ngx_stream_relay_pop3_session_t  *ps;

    ps = ctx->ps;

    ngx_memcpy(end, in_new ? "new" : "cur", 4);

    dir = opendir((char *) path);
    if (dir == NULL) {
        return ngx_stream_relay_pop3_fail(ctx, "opendir");
    }

    dfd = dirfd(dir);

    for ( ;; ) {
        errno = 0;
        de = readdir(dir);

        if (de == NULL) {
            if (errno) {
                ngx_stream_relay_pop3_fail(ctx, "readdir");
                (void) closedir(dir);
                return NGX_ERROR;
            }

            break;
        }

        if (de->d_name[0] == '.') {
            continue;
        }

        if (de->d_type != DT_REG && de->d_type != DT_UNKNOWN) {
            continue;
        }

        fd = openat(dfd, de->d_name, O_RDONLY|O_CLOEXEC|O_NOFOLLOW);
        if (fd == -1) {
            if (errno == ENOENT || errno == ELOOP) {
                continue;                /* gone, or a symlink */
            }

            ngx_stream_relay_pop3_fail(ctx, "open");
            (void) closedir(dir);
            return NGX_ERROR;
        }

        if (fstat(fd, &st) == -1) {
            ngx_stream_relay_pop3_fail(ctx, "fstat");
            (void) close(fd);
            (void) closedir(dir);
            return NGX_ERROR;
        }

        if (!S_ISREG(st.st_mode)) {
            (void) close(fd);
            continue;
        }

        len = ngx_strlen(de->d_name);
        colon = ngx_strlchr((u_char *) de->d_name,
                            (u_char *) de->d_name + len, ':');

        key.name = (u_char *) de->d_name;
        key.len = colon ? (size_t) (colon - key.name) : len;

        found = NULL;

        if (sizes->nelts) {
            found = bsearch(&key, sizes->elts, sizes->nelts,
                            sizeof(ngx_stream_relay_pop3_sized_t),
                            ngx_stream_relay_pop3_sized_cmp);
        }

        if (found && found->fsize == st.st_size) {
            size = found->size;
            sizes->hits++;

        } else if (ngx_stream_relay_pop3_scan(fd, &size, buf) != NGX_OK) {
            ngx_stream_relay_pop3_fail(ctx, "read");
            (void) close(fd);
            (void) closedir(dir);
            return NGX_ERROR;
        }

        (void) close(fd);

        if (ps->nmsgs == *cap) {
            *cap = *cap ? 2 * *cap : 64;

            m = realloc(ps->msgs, *cap * sizeof(ngx_stream_relay_pop3_msg_t));
            if (m == NULL) {
                (void) closedir(dir);
                ctx->err = ENOMEM;
                ctx->failed = "realloc";
                return NGX_ERROR;
            }

            ps->msgs = m;
        }

        m = &ps->msgs[ps->nmsgs];
        ngx_memzero(m, sizeof(ngx_stream_relay_pop3_msg_t));

        /* room for the ":2," of the rename into cur/ */

        m->name = malloc(len + sizeof(":2,"));
        if (m->name == NULL) {
            (void) closedir(dir);
            ctx->err = ENOMEM;
            ctx->failed = "malloc";
            return NGX_ERROR;
        }

        ngx_memcpy(m->name, de->d_name, len + 1);
        m->len = len;
        m->size = size;
        m->fsize = st.st_size;
        m->mtime = st.st_mtime;
        m->in_new = in_new;

        ps->nmsgs++;
    }

    (void) closedir(dir);

    return NGX_OK;
}


static void
ngx_stream_relay_pop3_sizes_load(u_char *path, u_char *end,
    ngx_stream_relay_pop3_sizes_t *sizes)
{
    int                             fd;
    u_char                         *p, *last, *eol, *sp1, *sp2;
    ssize_t                         n;
    ngx_uint_t                      lines;
    struct stat                     st;
    ngx_stream_relay_pop3_sized_t  *e;

    ngx_memzero(sizes, sizeof(ngx_stream_relay_pop3_sizes_t));

    ngx_memcpy(end, NGX_STREAM_RELAY_POP3_SIZES,
               sizeof(NGX_STREAM_RELAY_POP3_SIZES));

    fd = open((char *) path, O_RDONLY|O_CLOEXEC|O_NOFOLLOW);
    if (fd == -1) {
        return;                          /* no cache: scan everything */
    }

    if (fstat(fd, &st) == -1 || !S_ISREG(st.st_mode) || st.st_size == 0
        || st.st_size > NGX_STREAM_RELAY_POP3_SIZES_MAX)
    {
        (void) close(fd);
        return;
    }

    sizes->data = malloc(st.st_size);
    if (sizes->data == NULL) {
        (void) close(fd);
        return;
    }

    n = pread(fd, sizes->data, st.st_size, 0);
    (void) close(fd);

    if (n != st.st_size) {
        return;
    }

    last = sizes->data + n;
    lines = 0;

    for (p = sizes->data; p < last; p++) {
        lines += (*p == LF);
    }

    sizes->elts = malloc((lines + 1) * sizeof(ngx_stream_relay_pop3_sized_t));
    if (sizes->elts == NULL) {
        return;
    }

    for (p = sizes->data; p < last; p = eol + 1) {
        eol = ngx_strlchr(p, last, LF);
        if (eol == NULL) {
            break;                       /* a torn last line */
        }

        sp1 = ngx_strlchr(p, eol, ' ');
        sp2 = sp1 ? ngx_strlchr(sp1 + 1, eol, ' ') : NULL;

        if (sp2 == NULL || sp2 + 1 == eol) {
            continue;
        }

        e = &sizes->elts[sizes->nelts];
        e->size = ngx_atoof(p, sp1 - p);
        e->fsize = ngx_atoof(sp1 + 1, sp2 - sp1 - 1);
        e->name = sp2 + 1;
        e->len = eol - sp2 - 1;

        if (e->size == NGX_ERROR || e->fsize == NGX_ERROR
            || e->size < e->fsize)
        {
            continue;
        }

        sizes->nelts++;
    }

    if (sizes->nelts > 1) {
        ngx_qsort(sizes->elts, sizes->nelts,
                  sizeof(ngx_stream_relay_pop3_sized_t),
                  ngx_stream_relay_pop3_sized_cmp);
    }
}


/* written anew (tmp file, rename) when the listing found it out of date */

static void
ngx_stream_relay_pop3_sizes_save(ngx_stream_relay_pop3_session_t *ps,
    u_char *path, u_char *end, u_char *buf)
{
    int                           fd;
    u_char                       *p, *colon, tmp[NGX_MAX_PATH];
    size_t                        len;
    ngx_uint_t                    i, ok;
    ngx_stream_relay_pop3_msg_t  *m;

    ngx_memcpy(end, NGX_STREAM_RELAY_POP3_SIZES,
               sizeof(NGX_STREAM_RELAY_POP3_SIZES));

    p = ngx_cpymem(tmp, path, end - path);
    ngx_memcpy(p, NGX_STREAM_RELAY_POP3_SIZES ".tmp",
               sizeof(NGX_STREAM_RELAY_POP3_SIZES ".tmp"));

    fd = open((char *) tmp, O_WRONLY|O_CREAT|O_TRUNC|O_CLOEXEC|O_NOFOLLOW,
              0600);
    if (fd == -1) {
        return;                          /* only a cache */
    }

    ok = 1;
    p = buf;

    for (i = 0; ok && i <= ps->nmsgs; i++) {

        if (i == ps->nmsgs
            || (size_t) (buf + NGX_STREAM_RELAY_POP3_SCAN_BUF - p) < 512)
        {
            len = p - buf;
            ok = (write(fd, buf, len) == (ssize_t) len);
            p = buf;
        }

        if (i == ps->nmsgs) {
            break;
        }

        m = &ps->msgs[i];
        colon = ngx_strlchr(m->name, m->name + m->len, ':');
        len = colon ? (size_t) (colon - m->name) : m->len;

        if (len > 300) {
            continue;
        }

        p = ngx_sprintf(p, "%O %O %*s\n", m->size, m->fsize, len, m->name);
    }

    if (close(fd) == -1 || !ok
        || rename((char *) tmp, (char *) path) == -1)
    {
        (void) unlink((char *) tmp);
    }
}


static int ngx_libc_cdecl
ngx_stream_relay_pop3_sized_cmp(const void *one, const void *two)
{
    const ngx_stream_relay_pop3_sized_t  *a = one;
    const ngx_stream_relay_pop3_sized_t  *b = two;

    int  rc;

    rc = ngx_memcmp(a->name, b->name, ngx_min(a->len, b->len));

    if (rc != 0) {
        return rc;
    }

    return (a->len < b->len) ? -1 : (a->len > b->len);
}


/*
 * The size of the message as RETR sends it: each bare LF becomes CRLF, and
 * a last line without a line end gets one.
 */

static ngx_int_t
ngx_stream_relay_pop3_scan(int fd, off_t *size, u_char *buf)
{
    u_char   *p, *last, prev;
    off_t     add, offset;
    ssize_t   n;

    add = 0;
    offset = 0;
    prev = LF;

    for ( ;; ) {
        n = pread(fd, buf, NGX_STREAM_RELAY_POP3_SCAN_BUF, offset);

        if (n == -1) {
            return NGX_ERROR;
        }

        if (n == 0) {
            break;
        }

        last = buf + n;

        for (p = buf; p < last; p++) {
            if (*p == LF && prev != CR) {
                add++;
            }

            prev = *p;
        }

        offset += n;
    }

    if (offset && prev != LF) {
        add += 2;
    }

    *size = offset + add;

    return NGX_OK;
}


static void
ngx_stream_relay_pop3_uidl(ngx_stream_relay_pop3_msg_t *m)
{
    u_char      *p, *last, digest[16];
    size_t       len;
    ngx_md5_t    md5;
    ngx_uint_t   printable;

    last = m->name + m->len;
    p = ngx_strlchr(m->name, last, ':');
    len = (p ? p : last) - m->name;

    printable = (len >= 1 && len <= NGX_STREAM_RELAY_POP3_UIDL_MAX);

    for (p = m->name; printable && p < m->name + len; p++) {
        if (*p < 0x21 || *p > 0x7e) {
            printable = 0;
        }
    }

    if (printable) {
        ngx_memcpy(m->uidl, m->name, len);
        m->uidl_len = (u_char) len;
        return;
    }

    ngx_md5_init(&md5);
    ngx_md5_update(&md5, m->name, len);
    ngx_md5_final(digest, &md5);

    ngx_hex_dump(m->uidl, digest, 16);
    m->uidl_len = 32;
}


/* oldest first: by modification (delivery) time, then by name */

static int ngx_libc_cdecl
ngx_stream_relay_pop3_cmp(const void *one, const void *two)
{
    const ngx_stream_relay_pop3_msg_t  *a = one;
    const ngx_stream_relay_pop3_msg_t  *b = two;

    if (a->mtime != b->mtime) {
        return (a->mtime < b->mtime) ? -1 : 1;
    }

    return ngx_strcmp(a->name, b->name);
}


static u_char *
ngx_stream_relay_pop3_path(ngx_stream_relay_pop3_session_t *ps,
    ngx_stream_relay_pop3_msg_t *m, u_char *buf)
{
    u_char  *p;

    p = ngx_cpymem(buf, ps->mailbox, ps->mailbox_len);
    p = ngx_cpymem(p, m->in_new ? "new/" : "cur/", 4);
    p = ngx_cpymem(p, m->name, m->len);
    *p = '\0';

    return p;
}


/*
 * Opens the message at its first chunk (RETR moves it from new/ into cur/
 * first, as "<name>:2,": the name the Maildir delivery looks for when it
 * checks for an earlier delivery), then reads the next chunk.
 */

static void
ngx_stream_relay_pop3_read_thread(void *data, ngx_log_t *log)
{
    ngx_stream_relay_pop3_task_ctx_t  *ctx = data;

    u_char                           *p, *e;
    ssize_t                           n;
    ngx_stream_relay_pop3_msg_t      *m;
    ngx_stream_relay_pop3_session_t  *ps;
    u_char                            from[NGX_MAX_PATH];
    u_char                            to[NGX_MAX_PATH];

    ps = ctx->ps;
    m = ps->msg;

    if (ps->fd == NGX_INVALID_FILE) {

        if (m->len + ps->mailbox_len + sizeof("cur/:2,") >= NGX_MAX_PATH) {
            ctx->rc = NGX_ERROR;
            ctx->err = ENAMETOOLONG;
            ctx->failed = "path";
            return;
        }

        ngx_stream_relay_pop3_path(ps, m, from);

        if (ps->retr && m->in_new
            && ngx_strlchr(m->name, m->name + m->len, ':') == NULL)
        {
            p = ngx_cpymem(to, ps->mailbox, ps->mailbox_len);
            p = ngx_cpymem(p, "cur/", 4);
            p = ngx_cpymem(p, m->name, m->len);
            e = ngx_cpymem(p, ":2,", 4);

            if (rename((char *) from, (char *) to) == 0) {
                ngx_memcpy(m->name + m->len, ":2,", 4);
                m->len += 3;
                m->in_new = 0;
                ngx_memcpy(from, to, e - to);
            }
        }

        ps->fd = open((char *) from, O_RDONLY|O_CLOEXEC|O_NOFOLLOW);

        if (ps->fd == -1) {
            ps->fd = NGX_INVALID_FILE;
            ngx_stream_relay_pop3_fail(ctx, "open");
            return;
        }
    }

    n = pread(ps->fd, ps->chunk, NGX_STREAM_RELAY_POP3_CHUNK, ps->offset);

    if (n == -1) {
        ngx_stream_relay_pop3_fail(ctx, "pread");
        return;
    }

    ctx->nread = n;
}


static void
ngx_stream_relay_pop3_update_thread(void *data, ngx_log_t *log)
{
    ngx_stream_relay_pop3_task_ctx_t  *ctx = data;

    int                               dfd;
    ngx_uint_t                        i, dirs;
    ngx_stream_relay_pop3_msg_t      *m;
    ngx_stream_relay_pop3_session_t  *ps;
    u_char                            path[NGX_MAX_PATH];

    ps = ctx->ps;
    ctx->not_removed = 0;
    dirs = 0;

    for (i = 0; i < ps->nmsgs; i++) {
        m = &ps->msgs[i];

        if (!m->deleted) {
            continue;
        }

        if (m->len + ps->mailbox_len + sizeof("cur/") >= NGX_MAX_PATH) {
            ctx->not_removed++;
            ctx->err = ENAMETOOLONG;
            ctx->failed = "path";
            continue;
        }

        ngx_stream_relay_pop3_path(ps, m, path);

        if (unlink((char *) path) == -1 && errno != ENOENT) {
            ctx->not_removed++;
            ngx_stream_relay_pop3_fail(ctx, "unlink");
            continue;
        }

        dirs |= m->in_new ? 1 : 2;
    }

    /* make the removals durable: a crash must not bring messages back */

    for (i = 0; i < 2; i++) {
        if (!(dirs & (1 << i))) {
            continue;
        }

        ngx_memcpy(path, ps->mailbox, ps->mailbox_len);
        ngx_memcpy(path + ps->mailbox_len, i == 0 ? "new" : "cur", 4);

        dfd = open((char *) path, O_RDONLY|O_DIRECTORY|O_CLOEXEC);

        if (dfd == -1) {
            continue;
        }

        (void) fsync(dfd);
        (void) close(dfd);
    }
}


static ngx_int_t
ngx_stream_relay_pop3_fail(ngx_stream_relay_pop3_task_ctx_t *ctx,
    const char *call)
{
    ctx->rc = NGX_ERROR;
    ctx->err = errno;
    ctx->failed = call;

    return NGX_ERROR;
}


static void *
ngx_stream_relay_pop3_create_srv_conf(ngx_conf_t *cf)
{
    ngx_stream_relay_pop3_srv_conf_t  *conf;

    conf = ngx_pcalloc(cf->pool, sizeof(ngx_stream_relay_pop3_srv_conf_t));
    if (conf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     conf->enabled = 0;
     */

    conf->plaintext = NGX_CONF_UNSET;

    return conf;
}


static char *
ngx_stream_relay_pop3_merge_srv_conf(ngx_conf_t *cf, void *parent,
    void *child)
{
    ngx_stream_relay_pop3_srv_conf_t *prev = parent;
    ngx_stream_relay_pop3_srv_conf_t *conf = child;

    ngx_stream_relay_srv_conf_t  *rscf;

    ngx_conf_merge_value(conf->plaintext, prev->plaintext, 0);

    if (!conf->enabled) {
        return NGX_CONF_OK;
    }

    /* the relay module comes first in the .so: its conf is merged */

    rscf = ngx_stream_conf_get_module_srv_conf(cf, ngx_stream_relay_module);

    if (rscf->auth_users == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"relay_pop3\" needs \"relay_auth_file\"");
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static char *
ngx_stream_relay_pop3(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_stream_relay_pop3_srv_conf_t  *pscf = conf;

    ngx_stream_core_srv_conf_t  *cscf;

    cscf = ngx_stream_conf_get_module_srv_conf(cf, ngx_stream_core_module);

    if (cscf->handler) {
        return "is duplicate";
    }

    cscf->handler = ngx_stream_relay_pop3_init_session;
    pscf->enabled = 1;

    return NGX_CONF_OK;
}
