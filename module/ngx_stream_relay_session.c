
/*
 * Copyright (C) The relay authors
 */


/*
 * The SMTP server session (RFC 5321 with SIZE, PIPELINING, 8BITMIME,
 * ENHANCEDSTATUSCODES, SMTPUTF8, CHUNKING, DSN, STARTTLS, AUTH).
 *
 * States:
 *
 *   command  -- DATA --------> data  -- CRLF.CRLF --> busy (commit) --+
 *      |     -- BDAT n ------> bdat  -- n octets ---> command / busy  |
 *      |     -- AUTH --------> auth_* -- response --> busy (crypt) ---+
 *      |     -- STARTTLS ----> busy (handshake) ----------------------+
 *      |     -- MAIL, RCPT under a fleet limit --> busy (Redis) ------+
 *      +<-------------------------------------------------------------+
 *   any -- QUIT, too many errors, timeout, I/O error --> closing
 *
 * One loop, ngx_stream_relay_run(), drives everything: it executes every
 * complete command already in the input buffer, queueing replies, and sends
 * them when it has to wait (no more input, or a thread-pool task).  That is
 * the flush rule of RFC 2920: replies of a pipelined group go out together,
 * in order, and nothing is held back while the client waits.
 *
 * Pipelining discipline (RFC 2920 3.1, relay_strict_pipelining): after
 * DATA, the last chunk of BDAT LAST, STARTTLS, each step of AUTH and QUIT
 * the client must wait for the reply.  Input that is there before the
 * reply goes out (in the buffer, or read at once when the reply is due)
 * is out of sync: 554 5.5.0, nothing of it executed, the connection
 * closed.  MAIL, RCPT and DATA in one write, and the next MAIL right after
 * the final dot, are legitimate and go on.
 *
 * Time: a command line (or an AUTH response) must be complete within
 * relay_timeout of the moment the session waits for it: partial input
 * does not reset the clock, so a client sending a byte every few seconds
 * ("slowloris") is closed with 421 4.4.2 all the same.  DATA and BDAT
 * content starts with relay_timeout and earns time as it comes, a second
 * for every relay_min_data_rate octets, never more than relay_timeout
 * ahead.  Abuse bounds per client address (ngx_relay_clients.c): sessions
 * at once and new connections per window at the greeting, AUTH failures
 * per window at AUTH: 421 4.7.0 and a warn line.
 *
 * DATA is copied through the byte parser into a 64 KB buffer written to the
 * spool as it fills: a large message costs one buffer, never its size.
 * Bare CR or LF never ends DATA; a message containing either is refused
 * with 550 5.6.0 at its end, so nothing ambiguous reaches the queue (SMTP
 * smuggling).  BDAT chunks are stored as sent.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_stream.h>
#include <ngx_stream_relay.h>
#include <ngx_relay_auth.h>
#include <ngx_relay_maildir.h>
#include <ngx_relay_dkim.h>
#include <ngx_relay_idn.h>
#include <ngx_relay_literal.h>


static void ngx_stream_relay_greet(ngx_stream_relay_session_t *rs);
static ngx_int_t ngx_stream_relay_admit(ngx_stream_relay_session_t *rs);
static void ngx_stream_relay_uncount(void *data);
static void ngx_stream_relay_wait(ngx_stream_relay_session_t *rs);
static void ngx_stream_relay_earn(ngx_stream_relay_session_t *rs,
    size_t n);
static void ngx_stream_relay_handler(ngx_event_t *ev);
static void ngx_stream_relay_run(ngx_stream_relay_session_t *rs);
static ngx_int_t ngx_stream_relay_read(ngx_stream_relay_session_t *rs);
static void ngx_stream_relay_in_fit(ngx_stream_relay_session_t *rs);
static void ngx_stream_relay_in_grow(ngx_stream_relay_session_t *rs);
static void ngx_stream_relay_in_shrink(ngx_stream_relay_session_t *rs);
static ngx_int_t ngx_stream_relay_flush(ngx_stream_relay_session_t *rs);
static void ngx_stream_relay_close(ngx_stream_relay_session_t *rs);
static void ngx_stream_relay_enter(ngx_stream_relay_session_t *rs,
    ngx_stream_relay_state_e state);
static void ngx_stream_relay_reply(ngx_stream_relay_session_t *rs,
    const char *fmt, ...);
static void ngx_stream_relay_error_reply(ngx_stream_relay_session_t *rs,
    const char *fmt, ...);

static ngx_int_t ngx_stream_relay_command(ngx_stream_relay_session_t *rs);
static void ngx_stream_relay_execute(ngx_stream_relay_session_t *rs,
    ngx_relay_command_t *cmd);
static void ngx_stream_relay_helo(ngx_stream_relay_session_t *rs,
    ngx_relay_command_t *cmd);
static void ngx_stream_relay_mail(ngx_stream_relay_session_t *rs,
    ngx_relay_command_t *cmd);
static void ngx_stream_relay_rcpt(ngx_stream_relay_session_t *rs,
    ngx_relay_command_t *cmd);
static ngx_int_t ngx_stream_relay_idn(ngx_stream_relay_session_t *rs,
    ngx_relay_path_t *path, u_char *buf, const char *reply);
static ngx_int_t ngx_stream_relay_flow(ngx_stream_relay_session_t *rs,
    ngx_relay_mail_args_t *ma);
static void ngx_stream_relay_flow_done(ngx_event_t *ev);
static void ngx_stream_relay_proceed_mail(ngx_stream_relay_session_t *rs,
    ngx_relay_mail_args_t *ma);
static void ngx_stream_relay_proceed_rcpt(ngx_stream_relay_session_t *rs,
    ngx_relay_mail_args_t *ma, ngx_uint_t local);
static ngx_int_t ngx_stream_relay_limit(ngx_stream_relay_session_t *rs,
    ngx_relay_mail_args_t *ma, ngx_uint_t local, ngx_uint_t what);
static void ngx_stream_relay_limit_done(ngx_relay_limit_check_t *lc);
static ngx_int_t ngx_stream_relay_limited(ngx_stream_relay_session_t *rs,
    ngx_relay_limit_check_t *lc);
static ngx_int_t ngx_stream_relay_check_rcpt(ngx_stream_relay_session_t *rs,
    ngx_relay_path_t *path, ngx_uint_t *local);
static ngx_int_t ngx_stream_relay_check_literal(
    ngx_stream_relay_session_t *rs, ngx_relay_path_t *path,
    ngx_relay_domain_t **domain);
static void ngx_stream_relay_data(ngx_stream_relay_session_t *rs,
    ngx_relay_command_t *cmd);
static void ngx_stream_relay_bdat(ngx_stream_relay_session_t *rs,
    ngx_relay_command_t *cmd);
static void ngx_stream_relay_starttls(ngx_stream_relay_session_t *rs,
    ngx_relay_command_t *cmd);
static void ngx_stream_relay_tls_handshaked(ngx_connection_t *c);
static void ngx_stream_relay_tls_established(ngx_stream_relay_session_t *rs);
static void ngx_stream_relay_auth(ngx_stream_relay_session_t *rs,
    ngx_relay_command_t *cmd);
static ngx_int_t ngx_stream_relay_auth_response(
    ngx_stream_relay_session_t *rs);
static void ngx_stream_relay_auth_step(ngx_stream_relay_session_t *rs,
    ngx_str_t *line);
static void ngx_stream_relay_auth_check(ngx_stream_relay_session_t *rs,
    ngx_str_t *user, ngx_str_t *passwd);
static void ngx_stream_relay_auth_done(ngx_event_t *ev);
static void ngx_stream_relay_auth_refused(ngx_stream_relay_session_t *rs,
    ngx_relay_client_counts_t *n);

static ngx_int_t ngx_stream_relay_txn_begin(ngx_stream_relay_session_t *rs);
static void ngx_stream_relay_txn_end(ngx_stream_relay_session_t *rs);
static ngx_int_t ngx_stream_relay_open_spool(ngx_stream_relay_session_t *rs);
static ngx_int_t ngx_stream_relay_received(ngx_stream_relay_session_t *rs);
static ngx_int_t ngx_stream_relay_read_data(ngx_stream_relay_session_t *rs);
static ngx_int_t ngx_stream_relay_read_bdat(ngx_stream_relay_session_t *rs);
static ngx_int_t ngx_stream_relay_flush_data(ngx_stream_relay_session_t *rs);
static void ngx_stream_relay_flushed(ngx_relay_spool_writer_t *w,
    ngx_int_t rc);
static void ngx_stream_relay_message_end(ngx_stream_relay_session_t *rs);
static void ngx_stream_relay_committed(ngx_relay_spool_writer_t *w,
    ngx_int_t rc);
static void ngx_stream_relay_disk_error(ngx_stream_relay_session_t *rs,
    ngx_err_t err);
static void ngx_stream_relay_resume(ngx_stream_relay_session_t *rs);
static void ngx_stream_relay_unsigned(ngx_stream_relay_session_t *rs);
static ngx_uint_t ngx_stream_relay_out_of_sync(
    ngx_stream_relay_session_t *rs, const char *after);


static const char  *ngx_stream_relay_state_names[] = {
    "command",
    "data",
    "bdat",
    "auth plain",
    "auth login user",
    "auth login password",
    "busy",
    "closing"
};


void
ngx_stream_relay_init_session(ngx_stream_session_t *s)
{
    ngx_connection_t            *c;
    ngx_stream_relay_session_t  *rs;

    c = s->connection;

    if (ngx_stream_relay_sched == NULL) {
        ngx_log_error(NGX_LOG_ALERT, c->log, 0, "relay engine not started");
        ngx_stream_finalize_session(s, NGX_STREAM_INTERNAL_SERVER_ERROR);
        return;
    }

    rs = ngx_pcalloc(c->pool, sizeof(ngx_stream_relay_session_t));
    if (rs == NULL) {
        ngx_stream_finalize_session(s, NGX_STREAM_INTERNAL_SERVER_ERROR);
        return;
    }

    rs->session = s;
    rs->connection = c;
    rs->conf = ngx_stream_get_module_srv_conf(s, ngx_stream_relay_module);
    rs->main_conf = ngx_stream_get_module_main_conf(s,
                                                    ngx_stream_relay_module);

    rs->in = ngx_create_temp_buf(c->pool, NGX_STREAM_RELAY_IN_SIZE);
    rs->out = ngx_create_temp_buf(c->pool, NGX_STREAM_RELAY_OUT_SIZE);
    if (rs->in == NULL || rs->out == NULL) {
        ngx_stream_finalize_session(s, NGX_STREAM_INTERNAL_SERVER_ERROR);
        return;
    }

    rs->lp.max = NGX_STREAM_RELAY_ESMTP_LINE_MAX;
    rs->client = c->addr_text;
    rs->last_sender.data = rs->sender_buf;
    rs->last_queue_id.data = rs->queue_id_buf;
    rs->last_reply.data = rs->reply_buf;

    if (rs->conf->trusted
        && ngx_cidr_match(c->sockaddr, rs->conf->trusted) == NGX_OK)
    {
        rs->trusted = 1;
    }

    ngx_stream_set_ctx(s, rs, ngx_stream_relay_module);

    ngx_relay_metrics_session(c);

    c->read->handler = ngx_stream_relay_handler;
    c->write->handler = ngx_stream_relay_handler;
    c->log->action = "in SMTP session";

    rs->deadline = ngx_current_msec + rs->conf->timeout;

    if (ngx_stream_relay_admit(rs) != NGX_OK) {
        ngx_stream_relay_run(rs);
        return;
    }

    ngx_stream_relay_greet(rs);
}


static void
ngx_stream_relay_greet(ngx_stream_relay_session_t *rs)
{
    ngx_stream_relay_reply(rs, "220 %V ESMTP ready",
                           &rs->main_conf->hostname);
    ngx_stream_relay_run(rs);
}


/*
 * relay_max_sessions_per_ip, relay_max_connections_per_ip: NGX_OK, or a
 * 421 4.7.0 is queued and the session is closing.
 */

static ngx_int_t
ngx_stream_relay_admit(ngx_stream_relay_session_t *rs)
{
    ngx_int_t                   rc;
    ngx_connection_t           *c;
    ngx_pool_cleanup_t         *cln;
    ngx_relay_client_limits_t  *l;
    ngx_relay_client_counts_t   n;

    c = rs->connection;
    l = &rs->conf->client_limits;

    if (rs->main_conf->clients_zone == NULL
        || (l->sessions == 0 && l->connections == 0))
    {
        return NGX_OK;
    }

    cln = ngx_pool_cleanup_add(c->pool, 0);
    if (cln == NULL) {
        return NGX_OK;
    }

    rc = ngx_relay_clients_open(rs->main_conf->clients_zone, c->sockaddr, l,
                                &n);

    if (rc == NGX_OK) {
        cln->handler = ngx_stream_relay_uncount;
        cln->data = rs;
        rs->counted = 1;
        return NGX_OK;
    }

    if (rc == NGX_BUSY) {
        ngx_log_error(NGX_LOG_WARN, c->log, 0,
                      "relay client %V: %ui sessions at once, more than "
                      "relay_max_sessions_per_ip %ui: 421", &rs->client,
                      n.sessions, l->sessions);

    } else {
        ngx_log_error(NGX_LOG_WARN, c->log, 0,
                      "relay client %V: %ui connections in %T s, more than "
                      "relay_max_connections_per_ip %ui: 421", &rs->client,
                      n.connections, l->connection_window, l->connections);
    }

    ngx_stream_relay_reply(rs, "421 4.7.0 %V Error: too many connections "
                           "from your address, try again later",
                           &rs->main_conf->hostname);
    ngx_stream_relay_enter(rs, ngx_stream_relay_st_closing);

    return NGX_DECLINED;
}


static void
ngx_stream_relay_uncount(void *data)
{
    ngx_stream_relay_session_t  *rs = data;

    if (rs->counted) {
        rs->counted = 0;
        ngx_relay_clients_close(rs->main_conf->clients_zone,
                                rs->connection->sockaddr);
    }
}


/* the read timer: what is left until the deadline */

static void
ngx_stream_relay_wait(ngx_stream_relay_session_t *rs)
{
    ngx_msec_int_t  left;

    left = (ngx_msec_int_t) (rs->deadline - ngx_current_msec);

    ngx_add_timer(rs->connection->read, left > 0 ? (ngx_msec_t) left : 1);
}


/* content came: a second for every relay_min_data_rate octets */

static void
ngx_stream_relay_earn(ngx_stream_relay_session_t *rs, size_t n)
{
    ngx_msec_t      most;
    ngx_msec_int_t  left;

    if (rs->conf->min_data_rate == 0) {
        rs->deadline = ngx_current_msec + rs->conf->timeout;
        return;
    }

    most = ngx_current_msec + rs->conf->timeout;
    left = (ngx_msec_int_t) (most - rs->deadline);

    if (left <= 0) {
        return;
    }

    rs->deadline += ngx_min((ngx_msec_t) left,
                            (ngx_msec_t) (n * 1000 / rs->conf->min_data_rate));
}


static void
ngx_stream_relay_enter(ngx_stream_relay_session_t *rs,
    ngx_stream_relay_state_e state)
{
    ngx_log_debug2(NGX_LOG_DEBUG_STREAM, rs->connection->log, 0,
                   "relay session: %s -> %s",
                   ngx_stream_relay_state_names[rs->state],
                   ngx_stream_relay_state_names[state]);

    rs->state = state;
}


static void
ngx_stream_relay_handler(ngx_event_t *ev)
{
    ngx_connection_t            *c;
    ngx_stream_session_t        *s;
    ngx_stream_relay_session_t  *rs;

    c = ev->data;
    s = c->data;
    rs = ngx_stream_get_module_ctx(s, ngx_stream_relay_module);

    if (ev->timedout && ev->write) {
        ngx_log_error(NGX_LOG_INFO, c->log, NGX_ETIMEDOUT,
                      "client does not read replies");
        ngx_stream_relay_close(rs);
        return;
    }

    if (ev->timedout) {
        ev->timedout = 0;

        if (rs->state == ngx_stream_relay_st_busy) {
            ngx_add_timer(ev, rs->conf->timeout);
            return;                      /* a task will resume us */
        }

        if ((ngx_msec_int_t) (rs->deadline - ngx_current_msec) > 0) {
            ngx_stream_relay_wait(rs);   /* a stale timer */
            return;
        }

        ngx_log_error(NGX_LOG_INFO, c->log, NGX_ETIMEDOUT,
                      "client timed out");

        rs->out->pos = rs->out->start;
        rs->out->last = rs->out->start;
        ngx_stream_relay_reply(rs, "421 4.4.2 %V Error: timeout exceeded",
                               &rs->main_conf->hostname);
        ngx_stream_relay_enter(rs, ngx_stream_relay_st_closing);
    }

    ngx_stream_relay_run(rs);
}


/*
 * The session loop: flush pending output, then handle buffered input item
 * by item; when the buffer holds no complete item, flush replies and read.
 */

static void
ngx_stream_relay_run(ngx_stream_relay_session_t *rs)
{
    size_t             n;
    ngx_int_t          rc;
    ngx_connection_t  *c;

    c = rs->connection;

    for ( ;; ) {

        /*
         * A reload lets sessions finish on the old worker; only when
         * worker_shutdown_timeout expires does nginx ask us to close.  Nothing
         * acknowledged is at stake: a commit in flight (busy) finishes first.
         */

        if (c->close && rs->state != ngx_stream_relay_st_busy
            && rs->state != ngx_stream_relay_st_closing)
        {
            ngx_stream_relay_txn_end(rs);
            rs->out->pos = rs->out->start;
            rs->out->last = rs->out->start;
            ngx_stream_relay_reply(rs, "421 4.3.2 %V Service shutting down",
                                   &rs->main_conf->hostname);
            ngx_stream_relay_enter(rs, ngx_stream_relay_st_closing);
        }

        /*
         * Replies go out when the input is drained (below), or here when a
         * long pipelined group has filled the output buffer; until the
         * client reads them we read no further commands.
         */

        if (rs->out->pos != rs->out->last
            && (rs->state == ngx_stream_relay_st_closing
                || rs->state == ngx_stream_relay_st_busy
                || (size_t) (rs->out->end - rs->out->last)
                   < 2 * NGX_STREAM_RELAY_LINE_MAX))
        {
            rc = ngx_stream_relay_flush(rs);

            if (rc == NGX_ERROR) {
                ngx_stream_relay_close(rs);
                return;
            }

            if (rc == NGX_AGAIN) {
                return;                  /* the write event brings us back */
            }
        }

        /* the reply to a command the client must wait for is due */

        if (rs->sync && rs->state != ngx_stream_relay_st_busy
            && rs->state != ngx_stream_relay_st_closing)
        {
            (void) ngx_stream_relay_out_of_sync(rs, rs->sync);
            continue;
        }

        switch (rs->state) {

        case ngx_stream_relay_st_closing:
            ngx_stream_relay_close(rs);
            return;

        case ngx_stream_relay_st_busy:
            /*
             * A task will resume us.  The timer stays: a shutting-down
             * worker exits once no timer is left, open sessions or not.
             */
            ngx_add_timer(c->read, rs->conf->timeout);
            return;

        case ngx_stream_relay_st_data:
            rc = ngx_stream_relay_read_data(rs);
            break;

        case ngx_stream_relay_st_bdat:
            rc = ngx_stream_relay_read_bdat(rs);
            break;

        case ngx_stream_relay_st_auth_plain:
        case ngx_stream_relay_st_auth_login_user:
        case ngx_stream_relay_st_auth_login_passwd:
            rc = ngx_stream_relay_auth_response(rs);
            break;

        default: /* ngx_stream_relay_st_command */
            rc = ngx_stream_relay_command(rs);
            break;
        }

        if (rc == NGX_OK) {

            /* an item was handled: the next one has its relay_timeout */

            if (rs->state != ngx_stream_relay_st_data
                && rs->state != ngx_stream_relay_st_bdat)
            {
                rs->deadline = ngx_current_msec + rs->conf->timeout;
            }

            continue;
        }

        if (rc == NGX_DONE) {
            continue;                    /* a task runs: state is busy */
        }

        /* NGX_AGAIN: the buffer has no complete item */

        ngx_stream_relay_in_fit(rs);

        n = rs->in->last - rs->in->pos;

        rc = ngx_stream_relay_read(rs);

        if (rc == NGX_ERROR) {
            ngx_stream_relay_close(rs);
            return;
        }

        if (rc == NGX_OK) {
            if (rs->state == ngx_stream_relay_st_data
                || rs->state == ngx_stream_relay_st_bdat)
            {
                ngx_stream_relay_earn(rs, (rs->in->last - rs->in->pos) - n);
            }

            continue;
        }

        /* nothing more to read: now the replies must go (RFC 2920 3.2) */

        if (rs->out->pos != rs->out->last) {
            rc = ngx_stream_relay_flush(rs);

            if (rc == NGX_ERROR) {
                ngx_stream_relay_close(rs);
                return;
            }

            if (rc == NGX_AGAIN) {
                return;                  /* the write event brings us back */
            }
        }

        if (ngx_handle_read_event(c->read, 0) != NGX_OK) {
            ngx_stream_relay_close(rs);
            return;
        }

        ngx_stream_relay_wait(rs);
        return;
    }
}


/* reads into the free end of the input buffer, compacting it first */

static ngx_int_t
ngx_stream_relay_read(ngx_stream_relay_session_t *rs)
{
    return ngx_relay_recv(rs->connection, rs->in);
}


/*
 * Between reads, when nothing points into the input buffer: 32 KB for a
 * message that comes fast, 4 KB again for commands.
 */

static void
ngx_stream_relay_in_fit(ngx_stream_relay_session_t *rs)
{
    ngx_uint_t  message;

    message = (rs->state == ngx_stream_relay_st_data
               || rs->state == ngx_stream_relay_st_bdat);

    if (message && rs->in_small == NULL && rs->in->last == rs->in->end) {
        ngx_stream_relay_in_grow(rs);

    } else if (!message && rs->in_small) {
        ngx_stream_relay_in_shrink(rs);
    }
}


/*
 * A client whose message fills the 4 KB input buffer in one read gets 32
 * KB for it, so that a 100 KB message takes 4 reads, not 25.  Slow clients
 * never fill it, and so thousands of sessions in DATA keep 4 KB each.
 * Failing that, the session reads on in 4 KB.
 */

static void
ngx_stream_relay_in_grow(ngx_stream_relay_session_t *rs)
{
    u_char     *big;
    size_t      len;
    ngx_buf_t  *in;

    big = ngx_palloc(rs->connection->pool, NGX_STREAM_RELAY_DATA_IN_SIZE);
    if (big == NULL) {
        return;
    }

    in = rs->in;
    len = in->last - in->pos;

    ngx_memcpy(big, in->pos, len);

    rs->in_small = in->start;
    in->start = big;
    in->pos = big;
    in->last = big + len;
    in->end = big + NGX_STREAM_RELAY_DATA_IN_SIZE;
}


/* back to 4 KB for commands, once what is left fits */

static void
ngx_stream_relay_in_shrink(ngx_stream_relay_session_t *rs)
{
    u_char     *big;
    size_t      len;
    ngx_buf_t  *in;

    in = rs->in;
    len = in->last - in->pos;

    if (len > NGX_STREAM_RELAY_IN_SIZE / 2) {
        return;
    }

    big = in->start;

    ngx_memcpy(rs->in_small, in->pos, len);

    in->start = rs->in_small;
    in->pos = in->start;
    in->last = in->start + len;
    in->end = in->start + NGX_STREAM_RELAY_IN_SIZE;
    rs->in_small = NULL;

    ngx_pfree(rs->connection->pool, big);
}


static ngx_int_t
ngx_stream_relay_flush(ngx_stream_relay_session_t *rs)
{
    return ngx_relay_send(rs->connection, rs->out, rs->conf->timeout);
}


static void
ngx_stream_relay_close(ngx_stream_relay_session_t *rs)
{
    ngx_stream_session_t  *s;

    s = rs->session;

    ngx_relay_spool_flow_cancel(&rs->flow);
    ngx_stream_relay_txn_end(rs);

    ngx_stream_finalize_session(s, NGX_STREAM_OK);
}


/*
 * Queues one reply line (CRLF added) and remembers it for $relay_last_reply.
 * A multiline reply is queued by calling this once per line with "250-...".
 */

static void
ngx_stream_relay_reply(ngx_stream_relay_session_t *rs, const char *fmt, ...)
{
    u_char     *p, *start;
    size_t      len;
    va_list     args;
    ngx_buf_t  *b;

    b = rs->out;

    if ((size_t) (b->end - b->last) < NGX_STREAM_RELAY_LINE_MAX) {

        /* a long pipelined group: compact, the socket drains it later */

        if (b->pos != b->start) {
            len = b->last - b->pos;
            ngx_memmove(b->start, b->pos, len);
            b->pos = b->start;
            b->last = b->start + len;
        }

        if ((size_t) (b->end - b->last) < NGX_STREAM_RELAY_LINE_MAX) {
            ngx_log_error(NGX_LOG_INFO, rs->connection->log, 0,
                          "client does not read replies");
            ngx_stream_relay_enter(rs, ngx_stream_relay_st_closing);
            return;
        }
    }

    start = b->last;

    va_start(args, fmt);
    p = ngx_vslprintf(start, b->end - 2, fmt, args);
    va_end(args);

    *p++ = CR;
    *p++ = LF;
    b->last = p;

    len = ngx_min((size_t) (p - 2 - start), NGX_STREAM_RELAY_REPLY_MAX);
    ngx_memcpy(rs->reply_buf, start, len);
    rs->last_reply.len = len;

    ngx_relay_metrics_reply(start, p - 2 - start);
}


/* a 4xx/5xx reply to a command: counts towards relay_max_errors */

static void
ngx_stream_relay_error_reply(ngx_stream_relay_session_t *rs,
    const char *fmt, ...)
{
    u_char   buf[NGX_STREAM_RELAY_LINE_MAX], *p;
    va_list  args;

    va_start(args, fmt);
    p = ngx_vslprintf(buf, buf + sizeof(buf), fmt, args);
    va_end(args);

    ngx_stream_relay_reply(rs, "%*s", p - buf, buf);

    if (++rs->errors >= rs->conf->max_errors) {
        ngx_log_error(NGX_LOG_INFO, rs->connection->log, 0,
                      "too many errors from client");
        ngx_stream_relay_reply(rs, "421 4.7.0 %V Error: too many errors",
                               &rs->main_conf->hostname);
        ngx_stream_relay_enter(rs, ngx_stream_relay_st_closing);
    }
}


static ngx_int_t
ngx_stream_relay_command(ngx_stream_relay_session_t *rs)
{
    ngx_int_t            rc;
    ngx_relay_command_t  cmd;

    rc = ngx_relay_parse_line(&rs->lp, rs->in);

    if (rc == NGX_AGAIN) {
        return NGX_AGAIN;
    }

    if (rc == NGX_RELAY_PARSE_TOO_LONG) {
        ngx_stream_relay_error_reply(rs, "500 5.5.6 Error: line too long");
        return NGX_OK;
    }

    if (ngx_relay_parse_command(&rs->lp.line, &cmd) != NGX_OK) {
        ngx_stream_relay_error_reply(rs,
                                "500 5.5.2 Error: command not recognized");
        return NGX_OK;
    }

    /*
     * 512 octets with CRLF (RFC 5321 4.5.3.1.4); MAIL and RCPT of an ESMTP
     * client may be longer by their parameters (RFC 1870, 3461, 4954).
     */

    if (rs->lp.line.len + 2 > NGX_STREAM_RELAY_LINE_MAX
        && !(rs->esmtp && (cmd.verb == NGX_RELAY_CMD_MAIL
                           || cmd.verb == NGX_RELAY_CMD_RCPT)))
    {
        ngx_stream_relay_error_reply(rs, "500 5.5.6 Error: line too long");
        return NGX_OK;
    }

    ngx_stream_relay_execute(rs, &cmd);

    return NGX_OK;
}


static void
ngx_stream_relay_execute(ngx_stream_relay_session_t *rs,
    ngx_relay_command_t *cmd)
{
    switch (cmd->verb) {

    case NGX_RELAY_CMD_HELO:
    case NGX_RELAY_CMD_EHLO:
        ngx_stream_relay_helo(rs, cmd);
        return;

    case NGX_RELAY_CMD_MAIL:
        ngx_stream_relay_mail(rs, cmd);
        return;

    case NGX_RELAY_CMD_RCPT:
        ngx_stream_relay_rcpt(rs, cmd);
        return;

    case NGX_RELAY_CMD_DATA:
        ngx_stream_relay_data(rs, cmd);
        return;

    case NGX_RELAY_CMD_BDAT:
        ngx_stream_relay_bdat(rs, cmd);
        return;

    case NGX_RELAY_CMD_RSET:
        if (cmd->arg.len) {
            ngx_stream_relay_error_reply(rs, "501 5.5.4 Syntax: RSET");
            return;
        }

        ngx_stream_relay_txn_end(rs);
        ngx_stream_relay_reply(rs, "250 2.0.0 Ok");
        return;

    case NGX_RELAY_CMD_NOOP:
        ngx_stream_relay_reply(rs, "250 2.0.0 Ok");
        return;

    case NGX_RELAY_CMD_QUIT:
        if (ngx_stream_relay_out_of_sync(rs, "QUIT")) {
            return;
        }

        ngx_stream_relay_reply(rs, "221 2.0.0 %V Bye",
                               &rs->main_conf->hostname);
        ngx_stream_relay_enter(rs, ngx_stream_relay_st_closing);
        return;

    case NGX_RELAY_CMD_VRFY:
        if (cmd->arg.len == 0) {
            ngx_stream_relay_error_reply(rs, "501 5.5.4 Syntax: VRFY address");
            return;
        }

        /* RFC 5321 3.5.3: say nothing about who exists */
        ngx_stream_relay_reply(rs, "252 2.5.0 Cannot VRFY user, but will "
                               "accept message and attempt delivery");
        return;

    case NGX_RELAY_CMD_EXPN:
        ngx_stream_relay_error_reply(rs, "502 5.5.1 Error: command not "
                                     "implemented");
        return;

    case NGX_RELAY_CMD_HELP:
        ngx_stream_relay_reply(rs, "214 2.0.0 Commands: EHLO HELO MAIL RCPT "
                               "DATA BDAT RSET NOOP QUIT VRFY HELP STARTTLS "
                               "AUTH");
        return;

    case NGX_RELAY_CMD_STARTTLS:
        ngx_stream_relay_starttls(rs, cmd);
        return;

    case NGX_RELAY_CMD_AUTH:
        ngx_stream_relay_auth(rs, cmd);
        return;

    default:
        ngx_stream_relay_error_reply(rs,
                                "500 5.5.2 Error: command not recognized");
        return;
    }
}


static void
ngx_stream_relay_helo(ngx_stream_relay_session_t *rs,
    ngx_relay_command_t *cmd)
{
    ngx_str_t                     *host;
    ngx_connection_t              *c;
    ngx_stream_relay_srv_conf_t   *conf;

    c = rs->connection;
    conf = rs->conf;
    host = &rs->main_conf->hostname;

    if (ngx_relay_parse_helo(&cmd->arg) != NGX_OK) {
        ngx_stream_relay_error_reply(rs, "501 5.5.4 Syntax: %s hostname",
                                     cmd->verb == NGX_RELAY_CMD_EHLO
                                     ? "EHLO" : "HELO");
        return;
    }

    /* RFC 5321 4.1.4: EHLO/HELO also resets the transaction */

    ngx_stream_relay_txn_end(rs);

    rs->helo.data = ngx_pnalloc(c->pool, cmd->arg.len);
    if (rs->helo.data == NULL) {
        rs->helo.len = 0;
        ngx_stream_relay_reply(rs, "451 4.3.0 Error: out of memory");
        return;
    }

    rs->helo.len = cmd->arg.len;
    ngx_memcpy(rs->helo.data, cmd->arg.data, cmd->arg.len);

    if (cmd->verb == NGX_RELAY_CMD_HELO) {
        rs->esmtp = 0;
        ngx_stream_relay_reply(rs, "250 %V", host);
        return;
    }

    rs->esmtp = 1;

    ngx_stream_relay_reply(rs, "250-%V Hello %V", host, &rs->helo);
    ngx_stream_relay_reply(rs, "250-SIZE %O", conf->max_message_size);
    ngx_stream_relay_reply(rs, "250-PIPELINING");
    ngx_stream_relay_reply(rs, "250-8BITMIME");
    ngx_stream_relay_reply(rs, "250-SMTPUTF8");
    ngx_stream_relay_reply(rs, "250-CHUNKING");
    ngx_stream_relay_reply(rs, "250-BINARYMIME");
    ngx_stream_relay_reply(rs, "250-DSN");

    if (conf->ssl && !rs->tls) {
        ngx_stream_relay_reply(rs, "250-STARTTLS");
    }

    if (conf->auth_users && rs->tls) {
        ngx_stream_relay_reply(rs, "250-AUTH PLAIN LOGIN");
    }

    ngx_stream_relay_reply(rs, "250 ENHANCEDSTATUSCODES");
}


static void
ngx_stream_relay_mail(ngx_stream_relay_session_t *rs,
    ngx_relay_command_t *cmd)
{
    u_char                   idn[NGX_RELAY_MAX_PATH + NGX_RELAY_IDN_MAX];
    ngx_int_t                rc;
    ngx_relay_mail_args_t    ma;

    if (rs->helo.len == 0) {
        ngx_stream_relay_error_reply(rs,
                                   "503 5.5.1 Error: send HELO/EHLO first");
        return;
    }

    if (rs->txn) {
        ngx_stream_relay_error_reply(rs,
                                   "503 5.5.1 Error: nested MAIL command");
        return;
    }

    rc = ngx_relay_parse_mail_from(&cmd->arg, rs->conf->max_message_size,
                                   &ma);

    switch (rc) {

    case NGX_OK:
        break;

    case NGX_RELAY_PARSE_BAD_ADDRESS:
        ngx_stream_relay_error_reply(rs,
                                "501 5.1.7 Bad sender address syntax");
        return;

    case NGX_RELAY_PARSE_BAD_PARAM:
        ngx_stream_relay_error_reply(rs, "555 5.5.4 Unsupported or "
                                     "malformed MAIL parameter");
        return;

    case NGX_RELAY_PARSE_TOO_BIG:
        ngx_stream_relay_error_reply(rs, "552 5.3.4 Message size exceeds "
                                     "fixed limit");
        return;

    default:
        ngx_stream_relay_error_reply(rs,
                                "501 5.5.4 Syntax: MAIL FROM:<address>");
        return;
    }

    if (!rs->esmtp
        && (ma.size != -1 || ma.body || ma.smtputf8 || ma.ret
            || ma.envid.len || ma.auth.len))
    {
        ngx_stream_relay_error_reply(rs, "555 5.5.4 MAIL parameters need "
                                     "EHLO");
        return;
    }

    if (ma.path.utf8 && !ma.smtputf8) {
        ngx_stream_relay_error_reply(rs, "553 5.6.7 Non-ASCII address "
                                     "needs SMTPUTF8");
        return;
    }

    if (ngx_stream_relay_idn(rs, &ma.path, idn, "501 5.1.7") != NGX_OK) {
        return;
    }

    if (ngx_stream_relay_limit(rs, &ma, 0, NGX_RELAY_LIMIT_MESSAGES)
        != NGX_OK)
    {
        return;                 /* refused, or ngx_stream_relay_limit_done() */
    }

    if (ngx_stream_relay_flow(rs, &ma) == NGX_AGAIN) {
        return;                 /* ngx_stream_relay_flow_done() */
    }

    ngx_stream_relay_proceed_mail(rs, &ma);
}


/*
 * In-flow control (ngx_relay_spool_flow_full()): the MAIL command waits
 * until a first attempt ends, at most NGX_STREAM_RELAY_FLOW_DELAY, then
 * goes on either way, as Postfix's in_flow_delay.
 */

static ngx_int_t
ngx_stream_relay_flow(ngx_stream_relay_session_t *rs,
    ngx_relay_mail_args_t *ma)
{
    ngx_relay_spool_t  *sp;

    if (ngx_stream_relay_sched == NULL) {
        return NGX_OK;
    }

    sp = &ngx_stream_relay_sched->spool;

    if (!ngx_relay_spool_flow_full(sp)) {
        return NGX_OK;
    }

    rs->limit_args = *ma;

    rs->flow.event.handler = ngx_stream_relay_flow_done;
    rs->flow.event.data = rs;
    rs->flow.event.log = rs->connection->log;

    ngx_relay_spool_flow_wait(sp, &rs->flow);
    ngx_add_timer(&rs->flow.event, NGX_STREAM_RELAY_FLOW_DELAY);

    ngx_relay_metrics_flow_delayed();

    ngx_stream_relay_enter(rs, ngx_stream_relay_st_busy);

    return NGX_AGAIN;
}


static void
ngx_stream_relay_flow_done(ngx_event_t *ev)
{
    ngx_stream_relay_session_t  *rs = ev->data;

    ngx_relay_spool_flow_cancel(&rs->flow);

    ngx_stream_relay_enter(rs, ngx_stream_relay_st_command);
    ngx_stream_relay_proceed_mail(rs, &rs->limit_args);
    ngx_stream_relay_resume(rs);
}


static void
ngx_stream_relay_proceed_mail(ngx_stream_relay_session_t *rs,
    ngx_relay_mail_args_t *ma)
{
    ngx_stream_relay_txn_t  *txn;

    if (ngx_stream_relay_txn_begin(rs) != NGX_OK) {
        ngx_stream_relay_reply(rs, "451 4.3.0 Error: out of memory");
        return;
    }

    txn = rs->txn;

    txn->env.sender.data = ngx_pnalloc(txn->pool, ma->path.addr.len + 1);
    if (txn->env.sender.data == NULL) {
        ngx_stream_relay_txn_end(rs);
        ngx_stream_relay_reply(rs, "451 4.3.0 Error: out of memory");
        return;
    }

    ngx_memcpy(txn->env.sender.data, ma->path.addr.data, ma->path.addr.len);
    txn->env.sender.len = ma->path.addr.len;

    if (ma->envid.len) {
        txn->env.envid.data = ngx_pstrdup(txn->pool, &ma->envid);
        if (txn->env.envid.data == NULL) {
            ngx_stream_relay_txn_end(rs);
            ngx_stream_relay_reply(rs, "451 4.3.0 Error: out of memory");
            return;
        }

        txn->env.envid.len = ma->envid.len;
    }

    txn->env.ret = ma->ret;
    txn->env.body = ma->body;
    txn->env.smtputf8 = ma->smtputf8;

    ngx_memcpy(rs->sender_buf, ma->path.addr.data,
               ngx_min(ma->path.addr.len, NGX_RELAY_MAX_PATH));
    rs->last_sender.len = ngx_min(ma->path.addr.len, NGX_RELAY_MAX_PATH);
    rs->last_rcpts = 0;

    ngx_stream_relay_reply(rs, "250 2.1.0 Ok");
}


static void
ngx_stream_relay_rcpt(ngx_stream_relay_session_t *rs,
    ngx_relay_command_t *cmd)
{
    u_char                   idn[NGX_RELAY_MAX_PATH + NGX_RELAY_IDN_MAX];
    u_char                   orcpt[NGX_RELAY_MAX_ORCPT], *p;
    ngx_int_t                rc;
    ngx_str_t                given;
    ngx_uint_t               local;
    ngx_relay_mail_args_t    ma;
    ngx_stream_relay_txn_t  *txn;

    txn = rs->txn;

    if (txn == NULL) {
        ngx_stream_relay_error_reply(rs, "503 5.5.1 Error: need MAIL command");
        return;
    }

    rc = ngx_relay_parse_rcpt_to(&cmd->arg, &ma);

    switch (rc) {

    case NGX_OK:
        break;

    case NGX_RELAY_PARSE_BAD_ADDRESS:
        ngx_stream_relay_error_reply(rs,
                                "501 5.1.3 Bad recipient address syntax");
        return;

    case NGX_RELAY_PARSE_BAD_PARAM:
        ngx_stream_relay_error_reply(rs, "555 5.5.4 Unsupported or "
                                     "malformed RCPT parameter");
        return;

    default:
        ngx_stream_relay_error_reply(rs, "501 5.5.4 Syntax: RCPT TO:<address>");
        return;
    }

    if (!rs->esmtp && (ma.notify || ma.orcpt.len)) {
        ngx_stream_relay_error_reply(rs, "555 5.5.4 RCPT parameters need "
                                     "EHLO");
        return;
    }

    if (ma.path.utf8 && !txn->env.smtputf8) {
        ngx_stream_relay_error_reply(rs, "553 5.6.7 Non-ASCII address "
                                     "needs SMTPUTF8");
        return;
    }

    if (ngx_stream_relay_idn(rs, &ma.path, idn, "553 5.1.3") != NGX_OK) {
        return;
    }

    if (txn->env.rcpts.nelts >= rs->conf->max_recipients) {
        /* not an error: the client sends the rest later (RFC 5321 4.5.3.1.8) */
        ngx_stream_relay_reply(rs, "452 4.5.3 Error: too many recipients");
        return;
    }

    given = ma.path.addr;

    if (ngx_stream_relay_check_rcpt(rs, &ma.path, &local) != NGX_OK) {
        return;
    }

    /* a literal of this host became a local address: ORCPT keeps it */

    if (ma.path.literal && ma.path.addr.data != given.data
        && ma.orcpt.len == 0)
    {
        p = ngx_relay_orcpt(orcpt, sizeof(orcpt), &given);

        if (p) {
            ma.orcpt.data = orcpt;
            ma.orcpt.len = p - orcpt;
        }
    }

    if (ngx_stream_relay_limit(rs, &ma, local, NGX_RELAY_LIMIT_RECIPIENTS)
        != NGX_OK)
    {
        return;                 /* refused, or ngx_stream_relay_limit_done() */
    }

    ngx_stream_relay_proceed_rcpt(rs, &ma, local);
}


static void
ngx_stream_relay_proceed_rcpt(ngx_stream_relay_session_t *rs,
    ngx_relay_mail_args_t *ma, ngx_uint_t local)
{
    ngx_relay_rcpt_t        *r;
    ngx_stream_relay_txn_t  *txn;

    txn = rs->txn;

    r = ngx_array_push(&txn->env.rcpts);
    if (r == NULL) {
        ngx_stream_relay_reply(rs, "451 4.3.0 Error: out of memory");
        return;
    }

    ngx_memzero(r, sizeof(ngx_relay_rcpt_t));

    r->addr.data = ngx_pstrdup(txn->pool, &ma->path.addr);
    r->orcpt.data = ngx_pstrdup(txn->pool, &ma->orcpt);
    if (r->addr.data == NULL || (ma->orcpt.len && r->orcpt.data == NULL)) {
        txn->env.rcpts.nelts--;
        ngx_stream_relay_reply(rs, "451 4.3.0 Error: out of memory");
        return;
    }

    r->addr.len = ma->path.addr.len;
    r->orcpt.len = ma->orcpt.len;
    r->notify = ma->notify;
    r->local = local;

    rs->last_rcpts = txn->env.rcpts.nelts;

    ngx_stream_relay_reply(rs, "250 2.1.5 Ok");
}


/*
 * A domain in U-labels becomes A-labels here, once: DNS, routes, local
 * domains and limits never see UTF-8 (RFC 5890, RFC 6531 3.3).  The local
 * part stays as sent.  buf: NGX_RELAY_MAX_PATH + NGX_RELAY_IDN_MAX octets.
 */

static ngx_int_t
ngx_stream_relay_idn(ngx_stream_relay_session_t *rs, ngx_relay_path_t *path,
    u_char *buf, const char *reply)
{
    u_char      *p, ascii[NGX_RELAY_IDN_MAX];
    ngx_str_t    domain;
    ngx_int_t    rc;
    const char  *why;

    if (!path->utf8 || path->literal || path->domain.len == 0
        || !ngx_relay_idn_utf8(&path->domain))
    {
        return NGX_OK;
    }

    rc = ngx_relay_idn_to_ascii(&path->domain, ascii, &domain, &why);

    if (rc == NGX_ERROR) {
        ngx_stream_relay_reply(rs, "451 4.3.0 Error: out of memory");
        return NGX_ERROR;
    }

    if (rc == NGX_DECLINED) {
        ngx_stream_relay_error_reply(rs, "%s <%V>: invalid internationalized "
                                     "domain name: %s", reply, &path->addr,
                                     why);
        return NGX_ERROR;
    }

    p = ngx_cpymem(buf, path->local.data, path->local.len);
    *p++ = '@';
    path->domain.data = p;
    path->domain.len = domain.len;
    p = ngx_cpymem(p, domain.data, domain.len);

    path->addr.data = buf;
    path->addr.len = p - buf;
    path->local.data = buf;
    path->utf8 = ngx_relay_idn_utf8(&path->local);

    return NGX_OK;
}


/*
 * Inbound limits (relay_limit, the fleet's inbound_limit): a refusal is a
 * temporary one the client retries, not an error of the session.  A
 * check of a fleet limit waits for Redis as a commit waits for the disk:
 * the session is busy, its command's arguments stay in the input buffer
 * (nothing is read while busy), and ngx_stream_relay_limit_done() goes
 * on with the command.  NGX_OK: go on now.
 */

static ngx_int_t
ngx_stream_relay_limit(ngx_stream_relay_session_t *rs,
    ngx_relay_mail_args_t *ma, ngx_uint_t local, ngx_uint_t what)
{
    ngx_int_t                 rc;
    ngx_relay_limit_check_t  *lc;

    lc = rs->limit;

    if (lc == NULL) {
        lc = ngx_palloc(rs->connection->pool,
                        sizeof(ngx_relay_limit_check_t));
        if (lc == NULL) {
            ngx_stream_relay_reply(rs, "451 4.3.0 Error: out of memory");
            return NGX_ERROR;
        }

        rs->limit = lc;
    }

    lc->who.sockaddr = rs->connection->sockaddr;
    lc->who.client = rs->client;
    lc->who.user = rs->auth_user;
    lc->who.sender = (what == NGX_RELAY_LIMIT_MESSAGES) ? ma->path.addr
                                                        : rs->txn->env.sender;
    lc->who.tenant = rs->conf->tenant;
    lc->what = what;
    lc->handler = ngx_stream_relay_limit_done;
    lc->data = rs;
    lc->log = rs->connection->log;

    rc = ngx_relay_policy_limit(&rs->main_conf->policy, lc);

    if (rc == NGX_AGAIN) {
        rs->limit_args = *ma;
        rs->limit_local = local;
        ngx_stream_relay_enter(rs, ngx_stream_relay_st_busy);
        return NGX_AGAIN;
    }

    return ngx_stream_relay_limited(rs, lc);
}


static void
ngx_stream_relay_limit_done(ngx_relay_limit_check_t *lc)
{
    ngx_stream_relay_session_t  *rs = lc->data;

    ngx_stream_relay_enter(rs, ngx_stream_relay_st_command);

    if (ngx_stream_relay_limited(rs, lc) == NGX_OK) {
        if (lc->what == NGX_RELAY_LIMIT_MESSAGES) {
            if (ngx_stream_relay_flow(rs, &rs->limit_args) == NGX_AGAIN) {
                return;
            }

            ngx_stream_relay_proceed_mail(rs, &rs->limit_args);

        } else {
            ngx_stream_relay_proceed_rcpt(rs, &rs->limit_args,
                                          rs->limit_local);
        }
    }

    ngx_stream_relay_resume(rs);
}


/* the check's answer: NGX_OK, or the reply has been queued */

static ngx_int_t
ngx_stream_relay_limited(ngx_stream_relay_session_t *rs,
    ngx_relay_limit_check_t *lc)
{
    if (lc->rc == NGX_OK) {
        return NGX_OK;
    }

    ngx_log_error(NGX_LOG_NOTICE, rs->connection->log, 0,
                  "relay limit: %s", lc->why);

    if (lc->rc == NGX_BUSY) {
        ngx_stream_relay_reply(rs, "451 4.3.0 Error: sending limits cannot "
                               "be checked now, try again later");
        return NGX_BUSY;
    }

    ngx_relay_metrics_limited(lc->why);

    if (lc->what == NGX_RELAY_LIMIT_MESSAGES) {
        ngx_stream_relay_reply(rs, "450 4.7.1 Error: too many messages, "
                               "try again later");

    } else {
        ngx_stream_relay_reply(rs, "452 4.5.3 Error: too many recipients, "
                               "try again later");
    }

    return NGX_DECLINED;
}


/*
 * Who may receive: a local domain (its user list, when it has one;
 * postmaster always), or any domain for trusted networks and authenticated
 * clients.  No routing through this host: "%" and "!" in a local part of a
 * local domain are refused rather than interpreted.
 */

static ngx_int_t
ngx_stream_relay_check_rcpt(ngx_stream_relay_session_t *rs,
    ngx_relay_path_t *path, ngx_uint_t *local)
{
    u_char              *p;
    ngx_str_t            lp;
    ngx_relay_domain_t  *d;

    *local = 0;

    if (path->domain.len == 0) {

        /* bare <Postmaster> (RFC 5321 4.1.1.3): the first local domain */

        d = rs->main_conf->domains ? rs->main_conf->domains->elts : NULL;

        if (d == NULL) {
            ngx_stream_relay_error_reply(rs, "550 5.1.1 <%V>: Recipient "
                                         "address rejected: no local "
                                         "domain", &path->addr);
            return NGX_ERROR;
        }

        p = ngx_pnalloc(rs->txn->pool, sizeof("postmaster@") - 1
                                       + d->name.len);
        if (p == NULL) {
            ngx_stream_relay_reply(rs, "451 4.3.0 Error: out of memory");
            return NGX_ERROR;
        }

        path->addr.data = p;
        path->addr.len = ngx_cpymem(ngx_cpymem(p, "postmaster@", 11),
                                    d->name.data, d->name.len) - p;
        *local = 1;
        return NGX_OK;
    }

    if (path->literal) {
        switch (ngx_stream_relay_check_literal(rs, path, &d)) {

        case NGX_OK:
            break;                       /* this host: a local domain */

        case NGX_DECLINED:
            return NGX_OK;               /* relayed to the address */

        default:
            return NGX_ERROR;
        }

    } else {
        d = ngx_relay_maildir_local_domain(rs->main_conf->domains,
                                           &path->domain);
    }

    if (d == NULL) {
        if (rs->trusted || rs->auth_user.len) {
            return NGX_OK;
        }

        ngx_stream_relay_error_reply(rs, "554 5.7.1 <%V>: Relay access "
                                     "denied", &path->addr);
        return NGX_ERROR;
    }

    lp = path->local;

    if (ngx_strlchr(lp.data, lp.data + lp.len, '%')
        || ngx_strlchr(lp.data, lp.data + lp.len, '!')
        || ngx_strlchr(lp.data, lp.data + lp.len, '@'))
    {
        ngx_stream_relay_error_reply(rs, "550 5.7.1 <%V>: Recipient address "
                                     "rejected: no routing through this "
                                     "host", &path->addr);
        return NGX_ERROR;
    }

    if (lp.len == sizeof("postmaster") - 1
        && ngx_strncasecmp(lp.data, (u_char *) "postmaster", lp.len) == 0)
    {
        *local = 1;
        return NGX_OK;
    }

    if (!ngx_relay_maildir_mailbox_valid(&lp)
        || (d->users && ngx_relay_users_find(d->users, &lp) == NULL))
    {
        ngx_stream_relay_error_reply(rs, "550 5.1.1 <%V>: Recipient address "
                                     "rejected: User unknown", &path->addr);
        return NGX_ERROR;
    }

    *local = 1;

    return NGX_OK;
}


/*
 * user@[192.0.2.1], user@[IPv6:2001:db8::1] (RFC 5321 4.1.3).  One of this
 * node's own addresses: a local domain only with
 * relay_address_literal_local (the first local domain's mailbox of that
 * local part; NGX_OK with *domain), else refused (it would loop).  Any
 * other address: relayed to it (NGX_DECLINED) for clients that may relay,
 * unless relay_address_literals is off; 550 5.7.1 otherwise.
 */

static ngx_int_t
ngx_stream_relay_check_literal(ngx_stream_relay_session_t *rs,
    ngx_relay_path_t *path, ngx_relay_domain_t **domain)
{
    u_char              *p;
    socklen_t            socklen;
    ngx_sockaddr_t       sa;
    ngx_relay_domain_t  *d;

    if (ngx_relay_literal_addr(&path->domain, &sa, &socklen) != NGX_OK) {
        ngx_stream_relay_error_reply(rs, "501 5.1.3 Bad recipient address "
                                     "syntax");
        return NGX_ERROR;
    }

    if (!ngx_relay_literal_own(rs->main_conf->own_addrs, &sa.sockaddr,
                               socklen))
    {
        if (!rs->conf->address_literals) {
            ngx_stream_relay_error_reply(rs, "550 5.7.1 <%V>: Recipient "
                                         "address rejected: address "
                                         "literals are not accepted here",
                                         &path->addr);
            return NGX_ERROR;
        }

        if (!rs->trusted && rs->auth_user.len == 0) {
            ngx_stream_relay_error_reply(rs, "550 5.7.1 <%V>: Relay access "
                                         "denied", &path->addr);
            return NGX_ERROR;
        }

        return NGX_DECLINED;
    }

    d = rs->main_conf->domains ? rs->main_conf->domains->elts : NULL;

    if (!rs->conf->literal_local || d == NULL) {
        ngx_stream_relay_error_reply(rs, "550 5.7.1 <%V>: Recipient address "
                                     "rejected: this host takes no mail "
                                     "for its address literals",
                                     &path->addr);
        return NGX_ERROR;
    }

    /* the local part at the first local domain */

    p = ngx_pnalloc(rs->txn->pool, path->local.len + 1 + d->name.len);
    if (p == NULL) {
        ngx_stream_relay_reply(rs, "451 4.3.0 Error: out of memory");
        return NGX_ERROR;
    }

    path->addr.data = p;
    p = ngx_cpymem(p, path->local.data, path->local.len);
    *p++ = '@';
    p = ngx_cpymem(p, d->name.data, d->name.len);
    path->addr.len = p - path->addr.data;
    path->domain = d->name;

    *domain = d;

    return NGX_OK;
}


static void
ngx_stream_relay_data(ngx_stream_relay_session_t *rs,
    ngx_relay_command_t *cmd)
{
    ngx_stream_relay_txn_t  *txn;

    txn = rs->txn;
    rs->sync = "DATA";                   /* whatever we answer */

    if (cmd->arg.len) {
        ngx_stream_relay_error_reply(rs, "501 5.5.4 Syntax: DATA");
        return;
    }

    if (txn == NULL) {
        ngx_stream_relay_error_reply(rs, "503 5.5.1 Error: need MAIL command");
        return;
    }

    if (txn->bdat) {
        ngx_stream_relay_error_reply(rs, "503 5.5.1 Error: DATA after BDAT");
        return;
    }

    if (txn->env.body == NGX_RELAY_BODY_BINARYMIME) {
        /* RFC 3030 3: binary content cannot be sent with DATA */
        ngx_stream_relay_error_reply(rs, "503 5.5.1 Error: BODY=BINARYMIME "
                                     "needs BDAT");
        return;
    }

    if (txn->env.rcpts.nelts == 0) {
        ngx_stream_relay_error_reply(rs, "503 5.5.1 Error: need RCPT command");
        return;
    }

    /* the content must wait for "354": 554 instead, nothing stored */

    if (ngx_stream_relay_out_of_sync(rs, "DATA")) {
        return;
    }

    if (ngx_stream_relay_open_spool(rs) != NGX_OK) {
        return;
    }

    txn->data = 1;
    ngx_memzero(&txn->dp, sizeof(ngx_relay_data_parser_t));

    ngx_stream_relay_reply(rs, "354 End data with <CR><LF>.<CR><LF>");
    ngx_stream_relay_enter(rs, ngx_stream_relay_st_data);
    rs->deadline = ngx_current_msec + rs->conf->timeout;
}


/*
 * BDAT always consumes its chunk, even when the command is refused:
 * otherwise the chunk's octets would be read as commands.
 */

static void
ngx_stream_relay_bdat(ngx_stream_relay_session_t *rs,
    ngx_relay_command_t *cmd)
{
    off_t                    size;
    ngx_uint_t               last;
    ngx_stream_relay_txn_t  *txn;

    if (ngx_relay_parse_bdat(&cmd->arg, &size, &last) != NGX_OK) {
        /* the chunk cannot be found: the stream is lost */
        ngx_stream_relay_reply(rs, "501 5.5.4 Syntax: BDAT size [LAST]");
        ngx_stream_relay_enter(rs, ngx_stream_relay_st_closing);
        return;
    }

    if (rs->txn == NULL && ngx_stream_relay_txn_begin(rs) != NGX_OK) {
        ngx_stream_relay_reply(rs, "451 4.3.0 Error: out of memory");
        ngx_stream_relay_enter(rs, ngx_stream_relay_st_closing);
        return;
    }

    txn = rs->txn;

    txn->bdat_left = size;
    txn->bdat_chunk = size;
    txn->bdat_last = last;

    if (txn->env.sender.data == NULL && !txn->failed) {
        /* a transaction opened only to swallow this chunk */
        ngx_stream_relay_error_reply(rs, "503 5.5.1 Error: need MAIL "
                                     "command");
        txn->failed = 1;

    } else if (txn->env.rcpts.nelts == 0 && !txn->failed) {
        ngx_stream_relay_error_reply(rs, "503 5.5.1 Error: need RCPT "
                                     "command");
        txn->failed = 1;

    } else if (txn->failed) {
        ngx_stream_relay_error_reply(rs, "503 5.5.1 Error: an earlier BDAT "
                                     "failed, send RSET");

    } else if (!txn->bdat) {
        txn->bdat = 1;

        if (ngx_stream_relay_open_spool(rs) != NGX_OK) {
            txn->failed = 1;
        }
    }

    ngx_stream_relay_enter(rs, ngx_stream_relay_st_bdat);
    rs->deadline = ngx_current_msec + rs->conf->timeout;
}


static ngx_int_t
ngx_stream_relay_read_bdat(ngx_stream_relay_session_t *rs)
{
    size_t                     n;
    ngx_buf_t                 *in;
    ngx_stream_relay_txn_t    *txn;
    ngx_relay_spool_writer_t  *w;

    txn = rs->txn;
    in = rs->in;
    w = txn->writer;

    while (txn->bdat_left) {
        n = ngx_min((off_t) (in->last - in->pos), txn->bdat_left);

        if (n == 0) {
            return NGX_AGAIN;
        }

        if (!txn->failed && !txn->too_big && !w->err) {
            if (txn->size + (off_t) n > rs->conf->max_message_size) {
                txn->too_big = 1;

            } else {
                if (w->pos == w->end
                    && ngx_relay_spool_keep_whole(w) != NGX_OK)
                {
                    return ngx_stream_relay_flush_data(rs);
                }

                n = ngx_min(n, (size_t) (w->end - w->pos));
                w->pos = ngx_cpymem(w->pos, in->pos, n);
                txn->size += n;
            }
        }

        in->pos += n;
        txn->bdat_left -= n;
    }

    ngx_stream_relay_enter(rs, ngx_stream_relay_st_command);

    if (txn->bdat_last) {
        rs->sync = "BDAT LAST";
    }

    if (txn->failed) {
        /*
         * The error was said with the command.  A transaction opened only
         * to swallow a chunk ends with it; a real one stays failed (later
         * chunks are refused too) until LAST or RSET.
         */

        if (txn->bdat_last || txn->env.sender.data == NULL) {
            ngx_stream_relay_txn_end(rs);
        }

        return NGX_OK;
    }

    if (txn->too_big) {
        ngx_stream_relay_error_reply(rs, "552 5.3.4 Message size exceeds "
                                     "fixed limit");
        txn->failed = 1;

        if (txn->bdat_last) {
            ngx_stream_relay_txn_end(rs);
        }

        return NGX_OK;
    }

    if (txn->bdat_last) {
        ngx_stream_relay_message_end(rs);
        return NGX_OK;
    }

    ngx_stream_relay_reply(rs, "250 2.0.0 %O octets received",
                           txn->bdat_chunk);

    return NGX_OK;
}


static ngx_int_t
ngx_stream_relay_read_data(ngx_stream_relay_session_t *rs)
{
    size_t                     room;
    u_char                    *dst;
    ngx_int_t                  rc;
    ngx_buf_t                 *in, view;
    ngx_stream_relay_txn_t    *txn;
    ngx_relay_spool_writer_t  *w;

    txn = rs->txn;
    in = rs->in;
    w = txn->writer;

    while (in->pos < in->last) {

        /* the parser writes at most its input plus one octet */

        room = w->end - w->pos;

        if (room < 2) {
            if (ngx_relay_spool_keep_whole(w) != NGX_OK) {
                return ngx_stream_relay_flush_data(rs);
            }

            room = w->end - w->pos;
        }

        view = *in;
        view.last = in->pos + ngx_min((size_t) (in->last - in->pos),
                                      room - 1);

        dst = w->pos;
        rc = ngx_relay_parse_data(&txn->dp, &view, &dst);
        in->pos = view.pos;

        txn->size += dst - w->pos;

        if (txn->size > rs->conf->max_message_size) {
            txn->too_big = 1;
        }

        if (!txn->too_big && !w->err) {
            w->pos = dst;                /* else read on, store nothing */
        }

        if (rc == NGX_OK) {
            ngx_stream_relay_enter(rs, ngx_stream_relay_st_command);
            ngx_stream_relay_message_end(rs);
            return NGX_OK;
        }
    }

    return NGX_AGAIN;
}


/* the writer's buffer is full: a thread writes it out, reading pauses */

static ngx_int_t
ngx_stream_relay_flush_data(ngx_stream_relay_session_t *rs)
{
    ngx_relay_spool_writer_t  *w;

    w = rs->txn->writer;

    if (ngx_relay_spool_flush(w, ngx_stream_relay_flushed, rs) != NGX_AGAIN) {
        if (w->err == 0) {
            w->err = NGX_ENOMEM;
        }

        w->pos = w->buf;                 /* discard from now on */
        return NGX_OK;
    }

    rs->resume_state = rs->state;
    ngx_stream_relay_enter(rs, ngx_stream_relay_st_busy);

    return NGX_DONE;
}


static void
ngx_stream_relay_flushed(ngx_relay_spool_writer_t *w, ngx_int_t rc)
{
    ngx_stream_relay_session_t  *rs = w->data;

    if (rc != NGX_OK) {
        w->pos = w->buf;                 /* w->err answers at the end */
    }

    ngx_stream_relay_enter(rs, rs->resume_state);
    ngx_stream_relay_run(rs);
}


static void
ngx_stream_relay_message_end(ngx_stream_relay_session_t *rs)
{
    ngx_stream_relay_txn_t  *txn;

    txn = rs->txn;

    if (txn->too_big) {
        ngx_stream_relay_txn_end(rs);
        ngx_stream_relay_error_reply(rs, "552 5.3.4 Message size exceeds "
                                     "fixed limit");
        return;
    }

    if (txn->data && (txn->dp.bare_cr || txn->dp.bare_lf)) {
        ngx_log_error(NGX_LOG_INFO, rs->connection->log, 0,
                      "message refused: bare %s in DATA",
                      txn->dp.bare_lf ? "LF" : "CR");
        ngx_stream_relay_txn_end(rs);
        ngx_stream_relay_error_reply(rs, "550 5.6.0 Message refused: bare "
                                     "CR or LF in data (RFC 5321 2.3.8)");
        return;
    }

    txn->eod = ngx_relay_metrics_clock();

    if (ngx_relay_spool_commit(txn->writer, ngx_stream_relay_committed, rs)
        != NGX_OK)
    {
        if (txn->writer->transform_failed) {
            ngx_stream_relay_unsigned(rs);
            ngx_stream_relay_txn_end(rs);
            return;
        }

        ngx_stream_relay_disk_error(rs, txn->writer->err);
        ngx_stream_relay_txn_end(rs);
        return;
    }

    ngx_stream_relay_enter(rs, ngx_stream_relay_st_busy);
}


/* on the event loop once message and envelope are on stable storage */

static void
ngx_stream_relay_committed(ngx_relay_spool_writer_t *w, ngx_int_t rc)
{
    ngx_stream_relay_session_t  *rs = w->data;

    u_char                  *p, dkim[512];
    ngx_stream_relay_txn_t  *txn;

    txn = rs->txn;
    txn->writer = NULL;                  /* the scheduler owns it now */

    p = dkim;

    if (txn->dkim) {
        p = ngx_cpymem(p, ", dkim=", 7);
        p = ngx_relay_dkim_result(txn->dkim, p, dkim + sizeof(dkim));

        if (p == dkim + 7) {
            p = dkim;                    /* no key for its domains */
        }
    }

    if (rc != NGX_OK && w->transform_failed) {
        ngx_stream_relay_unsigned(rs);

    } else if (rc != NGX_OK) {
        ngx_stream_relay_disk_error(rs, w->err);

    } else {
        ngx_log_error(NGX_LOG_INFO, rs->connection->log, 0,
                      "%V: queued from=<%V>, nrcpt=%ui, size=%O, "
                      "client=%V%*s", &w->id, &txn->env.sender,
                      txn->env.rcpts.nelts, txn->size, &rs->client,
                      p - dkim, dkim);

        ngx_memcpy(rs->queue_id_buf, w->id.data, w->id.len);
        rs->last_queue_id.len = w->id.len;

        ngx_relay_account_received(rs->connection, &w->id, &txn->env,
                                   txn->size, txn->eod);

        ngx_stream_relay_reply(rs, "250 2.0.0 Ok: queued as %V", &w->id);
    }

    ngx_stream_relay_txn_end(rs);
    ngx_stream_relay_enter(rs, ngx_stream_relay_st_command);
    ngx_stream_relay_resume(rs);
}


static void
ngx_stream_relay_disk_error(ngx_stream_relay_session_t *rs, ngx_err_t err)
{
    if (err == NGX_ENOSPC || err == EDQUOT) {
        ngx_stream_relay_reply(rs, "452 4.3.1 Insufficient system storage");

    } else {
        ngx_stream_relay_reply(rs, "451 4.3.0 Error: local error in "
                               "processing");
    }
}


/* DKIM signing failed and the key's policy says on_error=defer */

static void
ngx_stream_relay_unsigned(ngx_stream_relay_session_t *rs)
{
    u_char  *p, why[256];

    p = ngx_relay_dkim_result(rs->txn->dkim, why, why + sizeof(why));

    ngx_log_error(NGX_LOG_WARN, rs->connection->log, 0,
                  "message refused: DKIM signing %*s", p - why, why);

    ngx_stream_relay_reply(rs, "451 4.3.0 Error: the message could not be "
                           "signed, try again later");
}


/*
 * RFC 2920 3.1: after "after", the client waits for our reply.  Input in
 * the buffer, or readable right now, came before it could have seen that
 * reply: 554 5.5.0 and close, none of it executed (an open transaction is
 * dropped with it).  Returns 1 then.  With relay_strict_pipelining off,
 * the session goes on as before (STARTTLS still drops what came along).
 */

static ngx_uint_t
ngx_stream_relay_out_of_sync(ngx_stream_relay_session_t *rs,
    const char *after)
{
    u_char     text[96], *p;
    ngx_buf_t  *in;

    rs->sync = NULL;
    in = rs->in;

    if (!rs->conf->strict_pipelining) {
        return 0;
    }

    if (in->pos == in->last) {
        switch (ngx_stream_relay_read(rs)) {

        case NGX_AGAIN:
            return 0;

        case NGX_ERROR:
            ngx_stream_relay_enter(rs, ngx_stream_relay_st_closing);
            return 1;

        default:
            break;                       /* it came: out of sync */
        }
    }

    p = ngx_relay_escape(text, sizeof(text), in->pos, in->last - in->pos);

    ngx_log_error(NGX_LOG_INFO, rs->connection->log, 0,
                  "SMTP protocol synchronization error: input after %s "
                  "before the reply: \"%*s\"", after, p - text, text);

    in->pos = in->last;
    ngx_stream_relay_txn_end(rs);

    ngx_stream_relay_reply(rs, "554 5.5.0 Error: SMTP protocol "
                           "synchronization");
    ngx_stream_relay_enter(rs, ngx_stream_relay_st_closing);

    return 1;
}


/* back from a task: run the loop outside the task's completion handler */

static void
ngx_stream_relay_resume(ngx_stream_relay_session_t *rs)
{
    rs->deadline = ngx_current_msec + rs->conf->timeout;
    ngx_stream_relay_run(rs);
}


static ngx_int_t
ngx_stream_relay_txn_begin(ngx_stream_relay_session_t *rs)
{
    ngx_pool_t              *pool;
    ngx_stream_relay_txn_t  *txn;

    pool = ngx_create_pool(1024, rs->connection->log);
    if (pool == NULL) {
        return NGX_ERROR;
    }

    txn = ngx_pcalloc(pool, sizeof(ngx_stream_relay_txn_t));
    if (txn == NULL
        || ngx_array_init(&txn->env.rcpts, pool, 4, sizeof(ngx_relay_rcpt_t))
           != NGX_OK)
    {
        ngx_destroy_pool(pool);
        return NGX_ERROR;
    }

    txn->pool = pool;
    rs->txn = txn;

    return NGX_OK;
}


static void
ngx_stream_relay_txn_end(ngx_stream_relay_session_t *rs)
{
    ngx_stream_relay_txn_t  *txn;

    txn = rs->txn;

    if (txn == NULL) {
        return;
    }

    if (txn->writer) {
        if (rs->state == ngx_stream_relay_st_busy) {
            /* a flush or the commit in flight finishes without us */
            txn->writer->handler = NULL;

        } else {
            ngx_relay_spool_abort(txn->writer);
        }
    }

    ngx_destroy_pool(txn->pool);
    rs->txn = NULL;
}


/*
 * Opens the queue file at DATA or the first BDAT: envelope first, then our
 * Received: header, then the message as it arrives.
 */

static ngx_int_t
ngx_stream_relay_open_spool(ngx_stream_relay_session_t *rs)
{
    size_t                     reserve;
    ngx_relay_envelope_t      *env;
    ngx_stream_relay_txn_t    *txn;
    ngx_relay_spool_writer_t  *w;

    txn = rs->txn;
    env = &txn->env;

    /* the writer may outlive the connection: not its log */
    w = ngx_relay_spool_create(&ngx_stream_relay_sched->spool,
                               ngx_cycle->log);
    if (w == NULL) {
        ngx_stream_relay_reply(rs, "451 4.3.0 Error: out of memory");
        return NGX_ERROR;
    }

    txn->writer = w;

    env->client = rs->client;
    env->helo = rs->helo;
    env->auth_user = rs->auth_user;
    env->tenant = rs->conf->tenant;
    env->arrival = ngx_time();

    /* DKIM: mail of our own users only, never mail for local domains */

    reserve = (rs->trusted || rs->auth_user.len)
              ? ngx_relay_policy_dkim_reserve(&rs->main_conf->policy) : 0;

    if (reserve) {
        txn->dkim = ngx_relay_dkim_create(w->pool, w->log,
                                          &rs->main_conf->policy,
                                          &env->sender, reserve);
        if (txn->dkim == NULL) {
            ngx_stream_relay_reply(rs, "451 4.3.0 Error: out of memory");
            ngx_relay_spool_abort(w);
            txn->writer = NULL;
            return NGX_ERROR;
        }

        ngx_relay_spool_set_transform(w, ngx_relay_dkim_transform(txn->dkim));
    }

    if (ngx_relay_spool_write_envelope(w, env) != NGX_OK
        || ngx_stream_relay_received(rs) != NGX_OK)
    {
        ngx_stream_relay_disk_error(rs, w->err);
        ngx_relay_spool_abort(w);
        txn->writer = NULL;
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* RFC 5321 4.4 trace header, RFC 3848 / RFC 6531 protocol names */

static ngx_int_t
ngx_stream_relay_received(ngx_stream_relay_session_t *rs)
{
    u_char                  *p, buf[NGX_STREAM_RELAY_LINE_MAX * 4];
    ngx_str_t                proto, tls;
    ngx_stream_relay_txn_t  *txn;
    ngx_relay_rcpt_t        *r;

    txn = rs->txn;

    p = buf;

    if (txn->env.smtputf8) {
        p = ngx_cpymem(p, "UTF8SMTP", 8);

    } else {
        p = ngx_cpymem(p, rs->esmtp ? "ESMTP" : "SMTP", rs->esmtp ? 5 : 4);
    }

    if (rs->tls) {
        *p++ = 'S';
    }

    if (rs->auth_user.len) {
        *p++ = 'A';
    }

    proto.data = buf;
    proto.len = p - buf;

    ngx_str_null(&tls);

#if (NGX_SSL)
    if (rs->tls && rs->connection->ssl) {
        tls.data = p;
        p = ngx_sprintf(p, " (%s:%s)",
                        SSL_get_version(rs->connection->ssl->connection),
                        SSL_get_cipher_name(rs->connection->ssl->connection));
        tls.len = p - tls.data;
    }
#endif

    p = ngx_sprintf(p, "Received: from %V (unknown [%V])\r\n"
                    "\tby %V (nginx-relay/" NGX_RELAY_VERSION ") with %V%V\r\n"
                    "\tid %V",
                    &rs->helo, &rs->client, &rs->main_conf->hostname,
                    &proto, &tls, &txn->writer->id);

    if (txn->env.rcpts.nelts == 1) {
        r = txn->env.rcpts.elts;

        if (r->addr.len < NGX_STREAM_RELAY_LINE_MAX) {
            p = ngx_sprintf(p, "\r\n\tfor <%V>", &r->addr);
        }
    }

    p = ngx_cpymem(p, "; ", 2);
    p = ngx_relay_date(p, txn->env.arrival);
    p = ngx_cpymem(p, "\r\n", 2);

    txn->writer->pos = ngx_cpymem(txn->writer->pos,
                                  proto.data + proto.len + tls.len,
                                  p - (proto.data + proto.len + tls.len));

    return NGX_OK;
}


static void
ngx_stream_relay_starttls(ngx_stream_relay_session_t *rs,
    ngx_relay_command_t *cmd)
{
    ngx_connection_t  *c;

    c = rs->connection;

    if (rs->conf->ssl == NULL) {
        ngx_stream_relay_error_reply(rs, "502 5.5.1 Error: command not "
                                     "implemented");
        return;
    }

    if (rs->tls) {
        ngx_stream_relay_error_reply(rs, "554 5.5.1 Error: TLS already "
                                     "active");
        return;
    }

    if (cmd->arg.len) {
        ngx_stream_relay_error_reply(rs, "501 5.5.4 Syntax: STARTTLS");
        return;
    }

    if (rs->txn) {
        ngx_stream_relay_error_reply(rs, "503 5.5.1 Error: STARTTLS inside "
                                     "a transaction");
        return;
    }

    if (ngx_stream_relay_out_of_sync(rs, "STARTTLS")) {
        return;
    }

    ngx_stream_relay_reply(rs, "220 2.0.0 Ready to start TLS");

    /*
     * Whatever the client pipelined after STARTTLS came in plaintext and
     * must not be executed inside TLS (CVE-2011-0411).
     */

    rs->in->pos = rs->in->start;
    rs->in->last = rs->in->start;

    if (ngx_stream_relay_flush(rs) != NGX_OK) {
        ngx_stream_relay_enter(rs, ngx_stream_relay_st_closing);
        return;
    }

    ngx_stream_relay_enter(rs, ngx_stream_relay_st_busy);

    c->log->action = "in STARTTLS handshake";

    switch (ngx_relay_tls_start(c, rs->conf->ssl, rs->conf->timeout,
                                ngx_stream_relay_tls_handshaked))
    {
    case NGX_ERROR:
        ngx_stream_relay_enter(rs, ngx_stream_relay_st_closing);
        return;

    case NGX_AGAIN:
        return;

    default:
        /* done at once: the loop we are called from goes on */
        ngx_stream_relay_tls_established(rs);
    }
}


static void
ngx_stream_relay_tls_handshaked(ngx_connection_t *c)
{
    ngx_stream_session_t        *s;
    ngx_stream_relay_session_t  *rs;

    s = c->data;
    rs = ngx_stream_get_module_ctx(s, ngx_stream_relay_module);

    if (c->read->timer_set) {
        ngx_del_timer(c->read);
    }

    c->read->handler = ngx_stream_relay_handler;
    c->write->handler = ngx_stream_relay_handler;

    rs->deadline = ngx_current_msec + rs->conf->timeout;

    ngx_stream_relay_tls_established(rs);
    ngx_stream_relay_run(rs);
}


static void
ngx_stream_relay_tls_established(ngx_stream_relay_session_t *rs)
{
    ngx_connection_t  *c;

    c = rs->connection;
    c->log->action = "in SMTP session";

    if (!c->ssl->handshaked) {
        ngx_log_error(NGX_LOG_INFO, c->log, 0, "STARTTLS handshake failed");
        ngx_stream_relay_enter(rs, ngx_stream_relay_st_closing);
        return;
    }

    /* RFC 3207 4.2: forget everything learnt before TLS */

    rs->tls = 1;
    rs->esmtp = 0;
    rs->helo.len = 0;

    ngx_stream_relay_enter(rs, ngx_stream_relay_st_command);
}


static void
ngx_stream_relay_auth(ngx_stream_relay_session_t *rs,
    ngx_relay_command_t *cmd)
{
    u_char                     *p, *last;
    ngx_str_t                   mech, initial;
    ngx_relay_client_counts_t   n;

    rs->sync = "AUTH";

    if (rs->conf->client_limits.auth_failures
        && ngx_relay_clients_auth(rs->main_conf->clients_zone,
                                  rs->connection->sockaddr,
                                  &rs->conf->client_limits, 0, &n)
           == NGX_DECLINED)
    {
        ngx_stream_relay_auth_refused(rs, &n);
        return;
    }

    if (rs->conf->auth_users == NULL) {
        ngx_stream_relay_error_reply(rs, "502 5.5.1 Error: command not "
                                     "implemented");
        return;
    }

    if (!rs->tls) {
        ngx_stream_relay_error_reply(rs, "530 5.7.0 Must issue a STARTTLS "
                                     "command first");
        return;
    }

    if (!rs->esmtp) {
        ngx_stream_relay_error_reply(rs, "503 5.5.1 Error: send EHLO first");
        return;
    }

    if (rs->auth_user.len) {
        ngx_stream_relay_error_reply(rs, "503 5.5.1 Error: already "
                                     "authenticated");
        return;
    }

    if (rs->txn) {
        ngx_stream_relay_error_reply(rs, "503 5.5.1 Error: AUTH inside a "
                                     "transaction");
        return;
    }

    p = cmd->arg.data;
    last = p + cmd->arg.len;

    mech.data = p;
    while (p < last && *p != ' ') {
        p++;
    }

    mech.len = p - mech.data;

    while (p < last && *p == ' ') {
        p++;
    }

    initial.data = p;
    initial.len = last - p;

    rs->lp.max = NGX_STREAM_RELAY_AUTH_LINE_MAX;

    if (mech.len == 5
        && ngx_strncasecmp(mech.data, (u_char *) "PLAIN", 5) == 0)
    {
        ngx_stream_relay_enter(rs, ngx_stream_relay_st_auth_plain);

        if (initial.len == 0) {
            ngx_stream_relay_reply(rs, "334 ");
            return;
        }

        ngx_stream_relay_auth_step(rs, &initial);
        return;
    }

    if (mech.len == 5
        && ngx_strncasecmp(mech.data, (u_char *) "LOGIN", 5) == 0)
    {
        ngx_stream_relay_enter(rs, ngx_stream_relay_st_auth_login_user);

        if (initial.len == 0) {
            ngx_stream_relay_reply(rs, "334 VXNlcm5hbWU6");
            return;
        }

        ngx_stream_relay_auth_step(rs, &initial);
        return;
    }

    rs->lp.max = NGX_STREAM_RELAY_ESMTP_LINE_MAX;
    ngx_stream_relay_error_reply(rs, "504 5.5.4 Unrecognized authentication "
                                 "type");
}


/* relay_max_auth_failures_per_ip reached: 421 and close */

static void
ngx_stream_relay_auth_refused(ngx_stream_relay_session_t *rs,
    ngx_relay_client_counts_t *n)
{
    ngx_log_error(NGX_LOG_WARN, rs->connection->log, 0,
                  "relay client %V: %ui AUTH failures in %T s, "
                  "relay_max_auth_failures_per_ip %ui: 421", &rs->client,
                  n->auth_failures, rs->conf->client_limits.auth_window,
                  rs->conf->client_limits.auth_failures);

    ngx_stream_relay_reply(rs, "421 4.7.0 %V Error: too many "
                           "authentication failures, try again later",
                           &rs->main_conf->hostname);
    ngx_stream_relay_enter(rs, ngx_stream_relay_st_closing);
}


/* reads one client response of an AUTH exchange */

static ngx_int_t
ngx_stream_relay_auth_response(ngx_stream_relay_session_t *rs)
{
    ngx_int_t  rc;

    rc = ngx_relay_parse_line(&rs->lp, rs->in);

    if (rc == NGX_AGAIN) {
        return NGX_AGAIN;
    }

    rs->sync = "AUTH";

    if (rc == NGX_RELAY_PARSE_TOO_LONG) {
        rs->lp.max = NGX_STREAM_RELAY_ESMTP_LINE_MAX;
        ngx_stream_relay_enter(rs, ngx_stream_relay_st_command);
        ngx_stream_relay_error_reply(rs, "500 5.5.6 Error: line too long");
        return NGX_OK;
    }

    ngx_stream_relay_auth_step(rs, &rs->lp.line);

    return NGX_OK;
}


static void
ngx_stream_relay_auth_step(ngx_stream_relay_session_t *rs, ngx_str_t *line)
{
    u_char     buf[NGX_STREAM_RELAY_AUTH_LINE_MAX];
    ngx_str_t  decoded, user, passwd;

    rs->lp.max = NGX_STREAM_RELAY_ESMTP_LINE_MAX;

    switch (ngx_relay_parse_auth_response(line, buf, sizeof(buf), &decoded)) {

    case NGX_OK:
        break;

    case NGX_DECLINED:
        ngx_stream_relay_enter(rs, ngx_stream_relay_st_command);
        ngx_stream_relay_error_reply(rs, "501 5.7.0 Authentication "
                                     "cancelled");
        return;

    default:
        ngx_stream_relay_enter(rs, ngx_stream_relay_st_command);
        ngx_stream_relay_error_reply(rs, "501 5.5.2 Invalid base64 data");
        return;
    }

    switch (rs->state) {

    case ngx_stream_relay_st_auth_plain:
        if (ngx_relay_parse_auth_plain(&decoded, &user, &passwd) != NGX_OK) {
            ngx_stream_relay_enter(rs, ngx_stream_relay_st_command);
            /* malformed, empty password, or acting as someone else */
            ngx_stream_relay_error_reply(rs, "535 5.7.8 Authentication "
                                         "credentials invalid");
            return;
        }

        ngx_stream_relay_auth_check(rs, &user, &passwd);
        return;

    case ngx_stream_relay_st_auth_login_user:
        rs->login_user.data = ngx_pnalloc(rs->connection->pool,
                                          decoded.len + 1);
        if (rs->login_user.data == NULL) {
            ngx_stream_relay_enter(rs, ngx_stream_relay_st_command);
            ngx_stream_relay_reply(rs, "454 4.7.0 Temporary authentication "
                                   "failure");
            return;
        }

        ngx_memcpy(rs->login_user.data, decoded.data, decoded.len);
        rs->login_user.len = decoded.len;

        rs->lp.max = NGX_STREAM_RELAY_AUTH_LINE_MAX;
        ngx_stream_relay_enter(rs, ngx_stream_relay_st_auth_login_passwd);
        ngx_stream_relay_reply(rs, "334 UGFzc3dvcmQ6");
        return;

    default: /* ngx_stream_relay_st_auth_login_passwd */
        ngx_stream_relay_auth_check(rs, &rs->login_user, &decoded);
        return;
    }
}


/* "check" comes first: the thread function sees only it */

typedef struct {
    ngx_relay_auth_check_t       check;
    ngx_stream_relay_session_t  *rs;
    ngx_str_t                    user;
} ngx_stream_relay_auth_ctx_t;


static void
ngx_stream_relay_auth_check(ngx_stream_relay_session_t *rs, ngx_str_t *user,
    ngx_str_t *passwd)
{
    ngx_str_t                    *hash;
    ngx_connection_t             *c;
    ngx_thread_task_t            *task;
    ngx_stream_relay_auth_ctx_t  *ctx;

    c = rs->connection;


    task = ngx_thread_task_alloc(c->pool,
                                 sizeof(ngx_stream_relay_auth_ctx_t));
    if (task == NULL) {
        goto temporary;
    }

    ctx = task->ctx;
    ctx->rs = rs;

    hash = ngx_relay_users_find(rs->conf->auth_users, user);

    ctx->user.data = ngx_pnalloc(c->pool, user->len);
    ctx->check.passwd = ngx_alloc(passwd->len + 1, c->log);
    if (ctx->user.data == NULL || ctx->check.passwd == NULL) {
        goto temporary;
    }

    /* unknown users cost a crypt() too: no timing oracle for logins */

    if (hash) {
        ctx->check.hash = *hash;

    } else {
        ngx_str_set(&ctx->check.hash,
                    "$6$relaysalt$unknownuserunknownuserunknownuserunknown"
                    "useruseruseruser");
    }

    ngx_memcpy(ctx->user.data, user->data, user->len);
    ctx->user.len = hash ? user->len : 0;
    ngx_memcpy(ctx->check.passwd, passwd->data, passwd->len);
    ctx->check.passwd_len = passwd->len;

    task->handler = ngx_relay_auth_check_thread;
    task->event.handler = ngx_stream_relay_auth_done;
    task->event.data = ctx;

    ngx_stream_relay_enter(rs, ngx_stream_relay_st_busy);

    if (ngx_thread_task_post(rs->main_conf->thread_pool, task) != NGX_OK) {
        ngx_free(ctx->check.passwd);
        goto temporary;
    }

    return;

temporary:

    ngx_stream_relay_enter(rs, ngx_stream_relay_st_command);
    ngx_stream_relay_reply(rs, "454 4.7.0 Temporary authentication failure");
}


static void
ngx_stream_relay_auth_done(ngx_event_t *ev)
{
    ngx_stream_relay_auth_ctx_t  *ctx = ev->data;

    ngx_stream_relay_session_t  *rs;
    ngx_relay_client_counts_t    n;

    rs = ctx->rs;

    explicit_bzero(ctx->check.passwd, ctx->check.passwd_len);
    ngx_free(ctx->check.passwd);

    ngx_stream_relay_enter(rs, ngx_stream_relay_st_command);

    if (ctx->check.ok && ctx->user.len) {
        rs->auth_user = ctx->user;

        ngx_log_error(NGX_LOG_INFO, rs->connection->log, 0,
                      "client authenticated as \"%V\"", &rs->auth_user);

        ngx_stream_relay_reply(rs, "235 2.7.0 Authentication successful");

    } else {
        ngx_log_error(NGX_LOG_INFO, rs->connection->log, 0,
                      "authentication failed for \"%V\"", &ctx->user);

        ngx_stream_relay_error_reply(rs, "535 5.7.8 Authentication "
                                     "credentials invalid");

        if (rs->conf->client_limits.auth_failures
            && ngx_relay_clients_auth(rs->main_conf->clients_zone,
                                      rs->connection->sockaddr,
                                      &rs->conf->client_limits, 1, &n)
               == NGX_DECLINED)
        {
            ngx_stream_relay_auth_refused(rs, &n);
        }
    }

    ngx_stream_relay_resume(rs);
}


/* access_log variables: the session's facts, the last transaction's */

typedef enum {
    ngx_stream_relay_var_helo = 0,
    ngx_stream_relay_var_sender,
    ngx_stream_relay_var_rcpt_count,
    ngx_stream_relay_var_queue_id,
    ngx_stream_relay_var_tls,
    ngx_stream_relay_var_auth_user,
    ngx_stream_relay_var_last_reply
} ngx_stream_relay_var_e;


static ngx_int_t
ngx_stream_relay_variable(ngx_stream_session_t *s,
    ngx_stream_variable_value_t *v, uintptr_t data)
{
    u_char                      *p;
    ngx_str_t                    val;
    ngx_stream_relay_session_t  *rs;

    rs = ngx_stream_get_module_ctx(s, ngx_stream_relay_module);

    if (rs == NULL) {
        v->not_found = 1;
        return NGX_OK;
    }

    ngx_str_null(&val);

    switch (data) {

    case ngx_stream_relay_var_helo:
        val = rs->helo;
        break;

    case ngx_stream_relay_var_sender:
        val = rs->last_sender;
        break;

    case ngx_stream_relay_var_rcpt_count:
        p = ngx_pnalloc(s->connection->pool, NGX_INT_T_LEN);
        if (p == NULL) {
            return NGX_ERROR;
        }

        val.data = p;
        val.len = ngx_sprintf(p, "%ui", rs->last_rcpts) - p;
        break;

    case ngx_stream_relay_var_queue_id:
        val = rs->last_queue_id;
        break;

    case ngx_stream_relay_var_tls:
#if (NGX_SSL)
        if (rs->tls && s->connection->ssl) {
            val.data = (u_char *) SSL_get_version(
                                            s->connection->ssl->connection);
            val.len = ngx_strlen(val.data);
        }
#endif
        break;

    case ngx_stream_relay_var_auth_user:
        val = rs->auth_user;
        break;

    default: /* ngx_stream_relay_var_last_reply */
        val = rs->last_reply;
        break;
    }

    v->data = val.data;
    v->len = val.len;
    v->valid = 1;
    v->no_cacheable = 1;
    v->not_found = 0;

    return NGX_OK;
}


static ngx_stream_variable_t  ngx_stream_relay_vars[] = {

    { ngx_string("relay_helo"), NULL, ngx_stream_relay_variable,
      ngx_stream_relay_var_helo, NGX_STREAM_VAR_NOCACHEABLE, 0 },

    { ngx_string("relay_sender"), NULL, ngx_stream_relay_variable,
      ngx_stream_relay_var_sender, NGX_STREAM_VAR_NOCACHEABLE, 0 },

    { ngx_string("relay_rcpt_count"), NULL, ngx_stream_relay_variable,
      ngx_stream_relay_var_rcpt_count, NGX_STREAM_VAR_NOCACHEABLE, 0 },

    { ngx_string("relay_queue_id"), NULL, ngx_stream_relay_variable,
      ngx_stream_relay_var_queue_id, NGX_STREAM_VAR_NOCACHEABLE, 0 },

    { ngx_string("relay_tls"), NULL, ngx_stream_relay_variable,
      ngx_stream_relay_var_tls, NGX_STREAM_VAR_NOCACHEABLE, 0 },

    { ngx_string("relay_auth_user"), NULL, ngx_stream_relay_variable,
      ngx_stream_relay_var_auth_user, NGX_STREAM_VAR_NOCACHEABLE, 0 },

    { ngx_string("relay_last_reply"), NULL, ngx_stream_relay_variable,
      ngx_stream_relay_var_last_reply, NGX_STREAM_VAR_NOCACHEABLE, 0 },

      ngx_stream_null_variable
};


ngx_int_t
ngx_stream_relay_add_variables(ngx_conf_t *cf)
{
    ngx_stream_variable_t  *var, *v;

    for (v = ngx_stream_relay_vars; v->name.len; v++) {
        var = ngx_stream_add_variable(cf, &v->name, v->flags);
        if (var == NULL) {
            return NGX_ERROR;
        }

        var->get_handler = v->get_handler;
        var->data = v->data;
    }

    return NGX_OK;
}
