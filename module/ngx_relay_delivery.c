
/*
 * Copyright (C) The relay authors
 */


/*
 * The SMTP client: one attempt to deliver one message to the recipients
 * of one domain.  It never writes the spool (the scheduler records the
 * outcome) and reads the message through thread tasks.  The route
 * (ngx_relay_route.c) gives the next address to try; the destination
 * (ngx_relay_destination.c) says when the delivery may run, and gives
 * cached connections and source addresses.
 *
 * States of a connection, entered only through ngx_relay_delivery_enter(),
 * which sends each state's command; the reply handler only decides what
 * a reply means (for a recipient, the host or the message) and which
 * state comes next:
 *
 *   CONNECT -> GREETING -> EHLO (-> STARTTLS -> EHLO | HELO)
 *     -> MAIL -> RCPT ... -> DATA -> BODY -> DOT -> MAIL ... | QUIT
 *                         -> BODY (BDAT) -> LAST -> MAIL ... | QUIT
 *
 * (after an aborted transaction: -> RSET -> MAIL).  QUIT: nothing more
 * for this host; its connection goes to the idle cache, or says QUIT.
 *
 * BDAT (RFC 3030): towards a server that offers CHUNKING the message goes
 * as one "BDAT <size> LAST" whose octets are read from the spool 64 KB at
 * a time as for DATA, without dot-stuffing and byte for byte; a message
 * that came with BODY=BINARYMIME goes so with BODY=BINARYMIME, and only
 * to a server that offers both (else it fails, 5.6.3).
 *
 * DSN (RFC 3461): towards a server that offers it, RET and ENVID go with
 * MAIL, NOTIFY and ORCPT (as received, or made from the address) with
 * each RCPT, and the next hop reports.  A recipient sent to a server
 * without DSN is marked "relayed": its sender gets a "relayed" DSN when
 * it asked for NOTIFY=SUCCESS.
 *
 * A transaction carries at most relay_max_rcpts_per_transaction open
 * recipients; a "452 4.5.3 too many recipients" leaves the rest for the
 * next transaction on the same connection.  With PIPELINING (RFC 2920)
 * MAIL, the RCPTs and DATA go in one write and the replies are matched in
 * order; without it, one command per reply.  After a complete transaction
 * the next one starts at once; after an aborted one (no recipient
 * accepted) RSET first.
 *
 * A refused connection, a timeout, garbage, a 4xx or 5xx greeting, a 4xx
 * to HELO/MAIL/DATA (EHLO refused: HELO) or a lost connection moves on to
 * the next address or host with the recipients still open.  Per
 * recipient: 2xx sent, 5xx failed, 4xx: that recipient goes on to the
 * next host (RFC 5321 5.1), the others stay done.  Whatever is open when
 * the hosts run out is deferred with its own 4xx reply, or the last error
 * seen.
 *
 * Connection reuse (ngx_relay_destination.c): when a host has nothing
 * more for this delivery, its connection goes to the destination's idle
 * connections, unless its transaction was aborted midway.  A cached
 * connection found dead at its first MAIL (closed, reset, 421) is dropped
 * and the delivery goes on with a fresh connection: not a failed attempt.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>
#include <ngx_event_connect.h>
#include <ngx_relay_delivery.h>
#include <ngx_relay_destination.h>
#include <ngx_relay_mtasts.h>


#define NGX_RELAY_DELIVERY_CHUNK   65536


typedef enum {
    ngx_relay_dst_connect = 0,
    ngx_relay_dst_greeting,
    ngx_relay_dst_ehlo,
    ngx_relay_dst_starttls,
    ngx_relay_dst_helo,
    ngx_relay_dst_mail,
    ngx_relay_dst_rcpt,
    ngx_relay_dst_data,
    ngx_relay_dst_body,
    ngx_relay_dst_dot,
    ngx_relay_dst_last,
    ngx_relay_dst_rset,
    ngx_relay_dst_quit
} ngx_relay_delivery_state_e;


/* by ngx_relay_delivery_state_e, for the log */

static ngx_str_t  ngx_relay_no_envid = ngx_null_string;


static ngx_str_t  ngx_relay_delivery_state_names[] = {
    ngx_string("CONNECT"),
    ngx_string("GREETING"),
    ngx_string("EHLO"),
    ngx_string("STARTTLS"),
    ngx_string("HELO"),
    ngx_string("MAIL"),
    ngx_string("RCPT"),
    ngx_string("DATA"),
    ngx_string("BODY"),
    ngx_string("DOT"),
    ngx_string("LAST"),
    ngx_string("RSET"),
    ngx_string("QUIT")
};


struct ngx_relay_delivery_s {
    ngx_relay_delivery_conf_t   *conf;
    ngx_pool_t                  *pool;
    ngx_fd_t                     fd;
    ngx_relay_queued_t          *queued;
    ngx_str_t                    domain;
    ngx_relay_dest_t            *dests;
    ngx_uint_t                   ndests;
    ngx_relay_delivery_done_pt   handler;
    void                        *data;

    ngx_relay_route_ctx_t        route;
    ngx_str_t                    host;         /* of the connection */
    in_port_t                    port;

    ngx_relay_destination_ctx_t  destination;
    ngx_event_t                  throttle;     /* waits for a connection */

    ngx_peer_connection_t        peer;
    ngx_connection_t            *connection;
    ngx_relay_smtp_conn_t       *conn;
    ngx_relay_delivery_state_e   state;
    ngx_buf_t                   *in;
    ngx_buf_t                   *out;
    ngx_relay_reply_parser_t     rp;

    ngx_uint_t                  *batch;        /* dests[] of a transaction */
    ngx_uint_t                   nbatch;
    ngx_uint_t                   rcpt;         /* next RCPT reply in batch */
    ngx_uint_t                   accepted;
    ngx_uint_t                   txns;         /* MAIL accepted, this conn */
    unsigned                     pipelined:1;    /* this transaction */
    unsigned                     bdat:1;         /* this transaction */
    unsigned                     discard:1;      /* no RCPT accepted */
    unsigned                     reused:1;       /* from the cache */
    unsigned                     no_cache:1;
    unsigned                     answered:1;     /* a host said 2xx hello */
    unsigned                     egress_failed:1; /* no source: ours */

    off_t                        body_off;
    ngx_thread_task_t           *task;
    u_char                      *chunk;
    u_char                      *chunk_data;    /* chunk, or into file */
    ngx_str_t                    file;          /* the queue file in memory */
    ssize_t                      chunk_len;
    ngx_err_t                    chunk_err;
    unsigned                     reading:1;
    unsigned                     line_start:1;
    unsigned                     last_lf:1;

    u_char                       relay[NGX_SOCKADDR_STRLEN + 300];
    size_t                       relay_len;
    ngx_relay_dest_facts_t       facts;        /* for the records */
    ngx_msec_t                   mark;         /* the phase started */
    u_char                       error[NGX_RELAY_REPLY_TEXT + 64];
    size_t                       error_len;
    const char                  *error_dsn;
};


static void ngx_relay_delivery_turn(ngx_relay_destination_ctx_t *ds);
static void ngx_relay_delivery_begin(ngx_relay_delivery_t *d);
static ngx_relay_smtp_conn_t *ngx_relay_delivery_cached(
    ngx_relay_delivery_t *d, ngx_str_t *host, in_port_t port);
static void ngx_relay_delivery_reuse(ngx_relay_delivery_t *d,
    ngx_relay_smtp_conn_t *sc);
static void ngx_relay_delivery_attach(ngx_relay_delivery_t *d,
    ngx_relay_smtp_conn_t *sc);
static void ngx_relay_delivery_release(ngx_relay_delivery_t *d);
static void ngx_relay_delivery_next_host(ngx_relay_delivery_t *d);
static void ngx_relay_delivery_route_handler(ngx_relay_route_ctx_t *rt);
static void ngx_relay_delivery_connect(ngx_relay_delivery_t *d);
static void ngx_relay_delivery_lookup_failed(ngx_relay_delivery_t *d);
static ngx_int_t ngx_relay_delivery_dial(ngx_relay_delivery_t *d);
static ngx_int_t ngx_relay_delivery_new_conn(ngx_relay_delivery_t *d,
    ngx_int_t rc);
static void ngx_relay_delivery_close_peer(ngx_relay_delivery_t *d);
static ngx_int_t ngx_relay_delivery_enter(ngx_relay_delivery_t *d,
    ngx_relay_delivery_state_e state);
static void ngx_relay_delivery_append(ngx_relay_delivery_t *d,
    const char *fmt, ...);
static void ngx_relay_delivery_envelope(ngx_relay_delivery_t *d);
static void ngx_relay_delivery_rcpt(ngx_relay_delivery_t *d, ngx_uint_t i);
static void ngx_relay_delivery_expect(ngx_relay_delivery_t *d);
static ngx_int_t ngx_relay_delivery_send(ngx_relay_delivery_t *d);
static ngx_uint_t ngx_relay_delivery_expecting(ngx_relay_delivery_t *d);
static void ngx_relay_delivery_write_handler(ngx_event_t *ev);
static void ngx_relay_delivery_read_handler(ngx_event_t *ev);
static void ngx_relay_delivery_reply(ngx_relay_delivery_t *d);
static void ngx_relay_delivery_ehlo_reply(ngx_relay_delivery_t *d,
    ngx_uint_t code);
static void ngx_relay_delivery_starttls_reply(ngx_relay_delivery_t *d,
    ngx_uint_t code);
static void ngx_relay_delivery_helo_reply(ngx_relay_delivery_t *d,
    ngx_uint_t code);
static void ngx_relay_delivery_no_tls(ngx_relay_delivery_t *d,
    const char *why, ngx_uint_t reply);
static void ngx_relay_delivery_mail_reply(ngx_relay_delivery_t *d,
    ngx_uint_t code);
static void ngx_relay_delivery_rcpt_reply(ngx_relay_delivery_t *d,
    ngx_uint_t code);
static void ngx_relay_delivery_data_reply(ngx_relay_delivery_t *d,
    ngx_uint_t code);
static void ngx_relay_delivery_dot_reply(ngx_relay_delivery_t *d,
    ngx_uint_t code);
static void ngx_relay_delivery_refused(ngx_relay_delivery_t *d,
    const char *dsn, const char *what);
static void ngx_relay_delivery_rset(ngx_relay_delivery_t *d);
static void ngx_relay_delivery_extensions(ngx_relay_delivery_t *d);
static void ngx_relay_delivery_start_tls(ngx_relay_delivery_t *d);
static void ngx_relay_delivery_tls_handshaked(ngx_connection_t *c);
static ngx_int_t ngx_relay_delivery_dane(ngx_relay_delivery_t *d,
    char *name);
static ngx_int_t ngx_relay_delivery_dane_verify(ngx_relay_delivery_t *d);
static void ngx_relay_delivery_tls_failed(ngx_relay_delivery_t *d);
static void ngx_relay_delivery_sts_testing(ngx_relay_delivery_t *d,
    const char *why);
static void ngx_relay_delivery_sts_check(ngx_relay_delivery_t *d);
static u_char *ngx_relay_delivery_cert_check(ngx_relay_delivery_t *d,
    u_char *why, size_t len);
static ngx_int_t ngx_relay_delivery_verify(ngx_relay_delivery_t *d);
static ngx_int_t ngx_relay_delivery_literal_name(ngx_str_t *host);
static void ngx_relay_delivery_next_transaction(ngx_relay_delivery_t *d);
static void ngx_relay_delivery_fail_message(ngx_relay_delivery_t *d,
    const char *dsn);
static void ngx_relay_delivery_read_chunk(ngx_relay_delivery_t *d);
static void ngx_relay_delivery_chunk_thread(void *data, ngx_log_t *log);
static void ngx_relay_delivery_chunk_done(ngx_event_t *ev);
static void ngx_relay_delivery_chunk_ready(ngx_relay_delivery_t *d);
static void ngx_relay_delivery_host_failed(ngx_relay_delivery_t *d,
    const char *dsn, const char *fmt, ...);
static void ngx_relay_delivery_close(ngx_relay_delivery_t *d);
static void ngx_relay_delivery_set_accepted(ngx_relay_delivery_t *d,
    ngx_uint_t status, const char *dsn);
static void ngx_relay_delivery_set_all(ngx_relay_delivery_t *d,
    ngx_uint_t status, const char *dsn, u_char *text, size_t len);
static void ngx_relay_delivery_set(ngx_relay_delivery_t *d,
    ngx_relay_dest_t *dst, ngx_uint_t status, const char *dsn);
static void ngx_relay_delivery_finish(ngx_relay_delivery_t *d);
static ngx_uint_t ngx_relay_delivery_open(ngx_relay_delivery_t *d);
static void ngx_relay_delivery_throttled(ngx_relay_delivery_t *d,
    ngx_msec_t wait, ngx_uint_t slow);
static void ngx_relay_delivery_throttle_handler(ngx_event_t *ev);
static void ngx_relay_delivery_shaped(ngx_relay_destination_ctx_t *ds);
static ngx_int_t ngx_relay_delivery_admit(ngx_relay_delivery_t *d,
    ngx_int_t rc, ngx_msec_t wait, ngx_uint_t slow);
static void ngx_relay_delivery_facts(ngx_relay_delivery_t *d,
    ngx_relay_dest_t *dst);


ngx_int_t
ngx_relay_delivery_start(ngx_relay_delivery_conf_t *dc, ngx_fd_t fd,
    ngx_str_t *file, ngx_relay_queued_t *q, ngx_str_t *domain,
    ngx_relay_dest_t *dests,
    ngx_uint_t ndests, ngx_relay_delivery_done_pt handler, void *data)
{
    ngx_int_t                     rc;
    ngx_uint_t                    slow;
    ngx_msec_t                    wait;
    ngx_pool_t                   *pool;
    ngx_relay_policy_t           *p;
    ngx_relay_delivery_t         *d;
    ngx_relay_route_ctx_t        *rt;
    ngx_relay_destination_ctx_t  *ds;

    pool = ngx_create_pool(4096, dc->log);
    if (pool == NULL) {
        return NGX_ERROR;
    }

    d = ngx_pcalloc(pool, sizeof(ngx_relay_delivery_t));
    if (d == NULL) {
        goto failed;
    }

    d->conf = dc;
    d->pool = pool;
    d->fd = fd;
    d->queued = q;

    /* a new message's file still in memory: the body comes from there */

    if (file->data
        && (off_t) file->len >= q->message_offset + q->message_size)
    {
        d->file = *file;
    }
    d->domain = *domain;
    d->dests = dests;
    d->ndests = ndests;
    d->handler = handler;
    d->data = data;

    d->chunk = ngx_pnalloc(pool, NGX_RELAY_DELIVERY_CHUNK);
    d->task = ngx_thread_task_alloc(pool, 0);
    d->batch = ngx_palloc(pool, ndests * sizeof(ngx_uint_t));

    if (d->chunk == NULL || d->task == NULL || d->batch == NULL) {
        goto failed;
    }

    p = dc->policy;

    rt = &d->route;
    rt->pool = pool;
    rt->log = dc->log;
    rt->id = &q->id;
    rt->dns = dc->dns;
    rt->hostname = &dc->hostname;
    rt->mtasts = dc->mtasts;
    rt->handler = ngx_relay_delivery_route_handler;
    rt->data = d;

    if (ngx_relay_route_init(rt, p, domain) != NGX_OK) {
        goto failed;
    }

    d->error_len = ngx_sprintf(d->error, "no host tried") - d->error;
    d->error_dsn = "4.4.1";

    ds = &d->destination;
    ds->pool = pool;
    ds->log = dc->log;
    ds->handler = ngx_relay_delivery_turn;
    ds->shaped = ngx_relay_delivery_shaped;
    ds->data = d;
    ds->reuse = dc->reuse;
    ds->idle_timeout = dc->idle_timeout;

    /* nginx.conf's, unless the egress pool or the destination limit says */

    ds->ehlo = dc->hostname;
    ds->concurrency = dc->concurrency;
    ds->reuse_limit = dc->reuse_limit;

    if (ngx_relay_destination_init(ds, p, q, domain) != NGX_OK) {
        goto failed;
    }

    d->throttle.handler = ngx_relay_delivery_throttle_handler;
    d->throttle.data = d;
    d->throttle.log = dc->log;
    d->throttle.cancelable = 1;

    wait = 0;
    slow = 0;

    rc = ngx_relay_destination_message(ds, &wait, &slow);

    if (rc == NGX_AGAIN) {
        return NGX_OK;                 /* ngx_relay_delivery_shaped() */
    }

    /* the handler may run before this returns: d is gone then */

    if (ngx_relay_delivery_admit(d, rc, wait, slow) == NGX_ERROR) {
        goto failed;
    }

    return NGX_OK;

failed:

    ngx_destroy_pool(pool);
    return NGX_ERROR;
}


/* the fleet's counters answered (or the fallback did) */

static void
ngx_relay_delivery_shaped(ngx_relay_destination_ctx_t *ds)
{
    ngx_relay_delivery_t     *d = ds->data;
    ngx_relay_shape_check_t  *sc;

    sc = &ds->fleet_check;

    if (ngx_relay_delivery_admit(d, sc->rc, sc->wait, sc->slow)
        == NGX_ERROR)
    {
        d->error_len = ngx_sprintf(d->error, "out of memory") - d->error;
        d->error_dsn = "4.3.0";
        ngx_relay_delivery_finish(d);
    }
}


/* within the destination's rate: its turn, now or when one ends */

static ngx_int_t
ngx_relay_delivery_admit(ngx_relay_delivery_t *d, ngx_int_t rc,
    ngx_msec_t wait, ngx_uint_t slow)
{
    if (rc == NGX_BUSY) {
        ngx_relay_delivery_throttled(d, wait, slow);
        return NGX_OK;
    }

    switch (ngx_relay_destination_enter(&d->destination, &d->conf->dests)) {

    case NGX_ERROR:
        return NGX_ERROR;

    case NGX_AGAIN:
        return NGX_OK;                 /* ngx_relay_delivery_turn() */

    default:
        break;
    }

    ngx_relay_delivery_begin(d);

    return NGX_OK;
}


/*
 * Over the destination's message rate: every recipient waits in the
 * queue until the minute turns; not an attempt, never a bounce.
 */

static void
ngx_relay_delivery_throttled(ngx_relay_delivery_t *d, ngx_msec_t wait,
    ngx_uint_t slow)
{
    ngx_uint_t         i;
    ngx_relay_dest_t  *dst;

    d->error_len = ngx_sprintf(d->error, "throttled: %V %s, retry in %M ms",
                               &d->destination.key,
                               slow ? "is in slow mode after a backoff reply"
                                    : "reached its messages per minute or hour",
                               wait)
                   - d->error;
    d->error_dsn = "4.7.0";

    for (i = 0; i < d->ndests; i++) {
        dst = &d->dests[i];

        if (dst->status == NGX_RELAY_DELIVERY_PENDING) {
            dst->throttled = 1;
            dst->retry_at = ngx_time() + (time_t) (wait + 999) / 1000;
        }
    }

    ngx_relay_delivery_finish(d);
}


static void
ngx_relay_delivery_throttle_handler(ngx_event_t *ev)
{
    ngx_relay_delivery_connect(ev->data);
}


void *
ngx_relay_delivery_data(ngx_relay_delivery_t *d)
{
    return d->data;
}


/*
 * The destination itself failed: no host of it (nor of its backup MX and
 * fallback lists) greeted us, or its name did not resolve for now, and
 * everything was deferred for that, not for shaping.  The scheduler then
 * holds back the destination's other mail until its next attempt
 * (Postfix's "dead destination").
 */

ngx_uint_t
ngx_relay_delivery_unreachable(ngx_relay_delivery_t *d)
{
    ngx_uint_t         i;
    ngx_relay_dest_t  *dst;

    /* a pool of ours without a usable address says nothing of the hosts */

    if (d->answered || d->egress_failed) {
        return 0;
    }

    for (i = 0; i < d->ndests; i++) {
        dst = &d->dests[i];

        if (dst->status != NGX_RELAY_DELIVERY_DEFERRED || dst->throttled) {
            return 0;
        }
    }

    return d->ndests > 0;
}


void
ngx_relay_delivery_free(ngx_relay_delivery_t *d)
{
    ngx_destroy_pool(d->pool);
}


/* the worker exits: idle connections say QUIT and close */

void
ngx_relay_delivery_exit(ngx_relay_delivery_conf_t *dc)
{
    ngx_relay_destination_exit(&dc->dests);
}


/* the delivery's turn came at its destination */

static void
ngx_relay_delivery_turn(ngx_relay_destination_ctx_t *ds)
{
    ngx_relay_delivery_begin(ds->data);
}


/* a cached connection to one of the domain's hosts, else DNS and connect */

static void
ngx_relay_delivery_begin(ngx_relay_delivery_t *d)
{
    ngx_relay_smtp_conn_t  *sc;

    sc = ngx_relay_delivery_cached(d, NULL, 0);

    if (sc) {
        /* once used, the walk does not try that host again */

        ngx_relay_route_skip(&d->route, &sc->host, sc->port);

        ngx_relay_delivery_reuse(d, sc);
        return;
    }

    ngx_relay_delivery_connect(d);
}


static ngx_relay_smtp_conn_t *
ngx_relay_delivery_cached(ngx_relay_delivery_t *d, ngx_str_t *host,
    in_port_t port)
{
    if (d->no_cache) {
        return NULL;
    }

    return ngx_relay_destination_cached(&d->destination, &d->route, host,
                                        port);
}


static void
ngx_relay_delivery_reuse(ngx_relay_delivery_t *d, ngx_relay_smtp_conn_t *sc)
{
    ngx_relay_delivery_attach(d, sc);

    d->host.data = ngx_pstrdup(d->pool, &sc->host);
    d->host.len = d->host.data ? sc->host.len : 0;
    d->port = sc->port;

    ngx_memcpy(d->relay, sc->relay, sc->relay_len);
    d->relay_len = sc->relay_len;

    d->reused = 1;
    d->answered = 1;

    ngx_log_debug3(NGX_LOG_DEBUG_CORE, d->conf->log, 0,
                   "%V: relay=%*s: cached connection", &d->queued->id,
                   d->relay_len, d->relay);

    ngx_relay_delivery_next_transaction(d);
}


/* the connection becomes this delivery's: its events come here */

static void
ngx_relay_delivery_attach(ngx_relay_delivery_t *d, ngx_relay_smtp_conn_t *sc)
{
    ngx_connection_t  *c;

    c = sc->connection;
    c->data = d;
    c->read->handler = ngx_relay_delivery_read_handler;
    c->write->handler = ngx_relay_delivery_write_handler;

    d->conn = sc;
    d->connection = c;
    d->peer.connection = c;
    d->in = sc->in;
    d->out = sc->out;
    d->txns = 0;

    ngx_memzero(&d->rp, sizeof(ngx_relay_reply_parser_t));
}


/*
 * This delivery has nothing more for the connection's host: the
 * connection goes to the idle cache, or says QUIT and closes.
 */

static void
ngx_relay_delivery_release(ngx_relay_delivery_t *d)
{
    ngx_relay_smtp_conn_t  *sc;

    sc = d->conn;

    if (sc == NULL) {
        return;
    }

    d->conn = NULL;
    d->connection = NULL;
    d->peer.connection = NULL;

    ngx_relay_destination_release(&d->destination, sc);
}


/* done with this host: the recipients it deferred try the next one */

static void
ngx_relay_delivery_next_host(ngx_relay_delivery_t *d)
{
    ngx_uint_t  i;

    for (i = 0; i < d->ndests; i++) {
        d->dests[i].skip = 0;
    }

    ngx_relay_route_next_host(&d->route);

    ngx_relay_delivery_connect(d);
}


/* a lookup of the route ended: on with the walk */

static void
ngx_relay_delivery_route_handler(ngx_relay_route_ctx_t *rt)
{
    ngx_relay_delivery_t  *d = rt->data;

    d->facts.dns += ngx_current_msec - d->mark;

    ngx_relay_delivery_connect(d);
}


/*
 * The next address of the route, unless nothing is open any more: over a
 * cached connection to its host, or a new one.
 */

static void
ngx_relay_delivery_connect(ngx_relay_delivery_t *d)
{
    ngx_relay_route_ctx_t  *rt;
    ngx_relay_smtp_conn_t  *sc;

    rt = &d->route;

    for ( ;; ) {

        if (!ngx_relay_delivery_open(d)) {
            ngx_relay_delivery_finish(d);
            return;
        }

        switch (ngx_relay_route_next(rt)) {

        case NGX_OK:
            break;

        case NGX_AGAIN:
            d->mark = ngx_current_msec;
            return;                 /* ngx_relay_delivery_route_handler() */

        case NGX_DECLINED:
            ngx_relay_delivery_lookup_failed(d);
            continue;

        case NGX_ABORT:
            ngx_relay_delivery_set_all(d, NGX_RELAY_DELIVERY_FAILED, rt->dsn,
                                       rt->error.data, rt->error.len);
            ngx_relay_delivery_finish(d);
            return;

        case NGX_ERROR:
            ngx_relay_delivery_set_all(d, NGX_RELAY_DELIVERY_DEFERRED,
                                       "4.3.0", (u_char *) "out of memory",
                                       13);
            ngx_relay_delivery_finish(d);
            return;

        default: /* NGX_DONE */
            ngx_relay_delivery_finish(d);
            return;
        }

        /* a host's first address: a cached connection may serve it */

        if (rt->first) {
            sc = ngx_relay_delivery_cached(d, &rt->host, rt->port);

            if (sc) {
                ngx_relay_delivery_reuse(d, sc);
                return;
            }
        }

        if (ngx_relay_delivery_dial(d) != NGX_DECLINED) {
            return;
        }
    }
}


/* a lookup failed for now: the last error, unless a host says more */

static void
ngx_relay_delivery_lookup_failed(ngx_relay_delivery_t *d)
{
    ngx_relay_route_ctx_t  *rt;

    rt = &d->route;

    d->error_len = ngx_min(rt->error.len, sizeof(d->error));
    ngx_memcpy(d->error, rt->error.data, d->error_len);
    d->error_dsn = rt->dsn;

    d->relay_len = ngx_snprintf(d->relay, sizeof(d->relay), "%V",
                                &rt->relay)
                   - d->relay;
}


/*
 * A new connection to the route's current address, from the egress
 * pool's current source address.  NGX_DECLINED: that did not work, on to
 * the next; else the connection is under way, or the delivery waits for
 * the destination's connection limit (d->throttle), or has ended.
 */

static ngx_int_t
ngx_relay_delivery_dial(ngx_relay_delivery_t *d)
{
    u_char                        text[NGX_SOCKADDR_STRLEN];
    size_t                        len;
    ngx_int_t                     rc;
    ngx_msec_t                    wait;
    ngx_addr_t                   *local;
    ngx_relay_route_ctx_t        *rt;
    ngx_relay_destination_ctx_t  *ds;

    rt = &d->route;
    ds = &d->destination;

    d->host = rt->host;
    d->port = rt->port;

    len = ngx_sock_ntop(rt->sockaddr, rt->socklen, text, NGX_SOCKADDR_STRLEN,
                        0);
    d->relay_len = ngx_snprintf(d->relay, sizeof(d->relay), "%V[%*s]:%d",
                                &d->host, len, text, (int) d->port)
                   - d->relay;

    if (ngx_relay_destination_egress(ds, &local) != NGX_OK) {
        d->error_len = ngx_sprintf(d->error, "no source address of "
                                   "egress pool \"%V\" can be used",
                                   &ds->egress_pool)
                       - d->error;
        d->egress_failed = 1;
        ngx_relay_delivery_set_all(d, NGX_RELAY_DELIVERY_DEFERRED, "4.4.0",
                                   d->error, d->error_len);
        ngx_relay_delivery_finish(d);
        return NGX_DONE;
    }

    if (local) {
        d->relay_len += ngx_snprintf(d->relay + d->relay_len,
                                     sizeof(d->relay) - d->relay_len,
                                     " from %V (pool %V)", &local->name,
                                     &ds->egress_pool)
                        - (d->relay + d->relay_len);
    }

    ngx_memzero(&d->peer, sizeof(ngx_peer_connection_t));
    d->peer.sockaddr = rt->sockaddr;
    d->peer.socklen = rt->socklen;
    d->peer.name = &d->host;
    d->peer.get = ngx_event_get_peer;
    d->peer.log = d->conf->log;
    d->peer.log_error = NGX_ERROR_INFO;    /* we log the outcome */
    d->peer.local = local;

    if (ngx_relay_destination_connect(ds, &wait) == NGX_BUSY) {
        if (wait > 2000) {
            ngx_relay_delivery_throttled(d, wait, 0);
            return NGX_DONE;
        }

        ngx_add_timer(&d->throttle, wait);
        return NGX_AGAIN;
    }

    d->mark = ngx_current_msec;

    rc = ngx_event_connect_peer(&d->peer);

    if (rc == NGX_ERROR || rc == NGX_DECLINED || rc == NGX_BUSY) {
        ngx_relay_destination_disconnect(ds);

        if (rc == NGX_ERROR && local) {
            ngx_relay_destination_egress_failed(ds);
            ngx_relay_delivery_close_peer(d);
            return NGX_DECLINED;             /* the same address again */
        }

        ngx_relay_route_next_addr(rt);
        ngx_relay_delivery_close_peer(d);

        d->error_len = ngx_sprintf(d->error, "connect to %*s failed",
                                   d->relay_len, d->relay)
                       - d->error;
        d->error_dsn = "4.4.1";
        return NGX_DECLINED;
    }

    ngx_relay_route_next_addr(rt);

    return ngx_relay_delivery_new_conn(d, rc);
}


/* a connection under way: its own record and buffers, then CONNECT */

static ngx_int_t
ngx_relay_delivery_new_conn(ngx_relay_delivery_t *d, ngx_int_t rc)
{
    ngx_connection_t       *c;
    ngx_relay_smtp_conn_t  *sc;

    c = d->peer.connection;

    sc = ngx_relay_destination_conn(&d->destination, c, &d->host, d->port);

    if (sc) {
        sc->in = ngx_create_temp_buf(sc->pool, 4096);
        sc->out = ngx_create_temp_buf(sc->pool,
                                      2 * NGX_RELAY_DELIVERY_CHUNK + 16);
        sc->hop.data = ngx_pnalloc(sc->pool, NGX_MAXHOSTNAMELEN + 16);
    }

    if (sc == NULL || sc->in == NULL || sc->out == NULL
        || sc->hop.data == NULL)
    {
        if (sc) {
            ngx_relay_destination_close(sc, 0);
            d->peer.connection = NULL;

        } else {
            ngx_relay_destination_disconnect(&d->destination);
            ngx_relay_delivery_close_peer(d);
        }

        ngx_relay_delivery_set_all(d, NGX_RELAY_DELIVERY_DEFERRED, "4.3.0",
                                   (u_char *) "out of memory", 13);
        ngx_relay_delivery_finish(d);
        return NGX_DONE;
    }

    sc->hop.len = ngx_relay_route_hop_id(&d->route, sc->hop.data,
                                         NGX_MAXHOSTNAMELEN + 16);
    sc->own = ngx_relay_route_own(&d->route);
    ngx_memcpy(sc->relay, d->relay, d->relay_len);
    sc->relay_len = d->relay_len;

    c->pool = sc->pool;
    ngx_relay_delivery_attach(d, sc);

    (void) ngx_relay_delivery_enter(d, ngx_relay_dst_connect);
    d->reused = 0;

    ngx_add_timer(c->write, d->conf->connect_timeout);

    if (rc == NGX_OK) {
        ngx_relay_delivery_write_handler(c->write);
    }

    return NGX_OK;
}


/* a connection that did not get far: no QUIT, nothing cached */

static void
ngx_relay_delivery_close_peer(ngx_relay_delivery_t *d)
{
    if (d->peer.connection) {
        ngx_close_connection(d->peer.connection);
        d->peer.connection = NULL;
    }
}


/*
 * The one way into a state: d->state changes here only, and the state's
 * command goes out (with PIPELINING, MAIL carries the RCPTs and DATA,
 * which then send nothing of their own).  NGX_ERROR: the write failed;
 * the caller fails the host now, or lets the read handler find the
 * connection gone (after what the server still said).
 */

static ngx_int_t
ngx_relay_delivery_enter(ngx_relay_delivery_t *d,
    ngx_relay_delivery_state_e state)
{
    ngx_log_debug3(NGX_LOG_DEBUG_CORE, d->conf->log, 0,
                   "%V: relay delivery: %V -> %V", &d->queued->id,
                   &ngx_relay_delivery_state_names[d->state],
                   &ngx_relay_delivery_state_names[state]);

    d->state = state;

    switch (state) {

    case ngx_relay_dst_connect:
        return NGX_OK;

    case ngx_relay_dst_greeting:
        ngx_relay_delivery_expect(d);
        return NGX_OK;

    case ngx_relay_dst_ehlo:
        ngx_relay_delivery_append(d, "EHLO %V", &d->destination.ehlo);
        break;

    case ngx_relay_dst_starttls:
        ngx_relay_delivery_append(d, "STARTTLS");
        break;

    case ngx_relay_dst_helo:
        ngx_relay_delivery_append(d, "HELO %V", &d->destination.ehlo);
        break;

    case ngx_relay_dst_mail:
        d->mark = ngx_current_msec;
        ngx_relay_delivery_envelope(d);
        break;

    case ngx_relay_dst_rcpt:
        if (d->pipelined) {
            return NGX_OK;
        }

        ngx_relay_delivery_rcpt(d, d->batch[d->rcpt]);
        break;

    case ngx_relay_dst_data:
        if (d->pipelined) {
            return NGX_OK;
        }

        ngx_relay_delivery_append(d, "DATA");
        break;

    case ngx_relay_dst_body:
        d->body_off = 0;
        d->line_start = 1;
        d->last_lf = 1;

        if (d->bdat) {
            ngx_relay_delivery_append(d, "BDAT %O LAST",
                                      d->queued->message_size);
        }

        ngx_relay_delivery_read_chunk(d);
        return NGX_OK;

    case ngx_relay_dst_dot:
        ngx_relay_delivery_append(d, ".");
        break;

    case ngx_relay_dst_last:
        break;                           /* the chunk is on its way */

    case ngx_relay_dst_rset:
        d->discard = 0;
        ngx_relay_delivery_append(d, "RSET");
        break;

    default: /* ngx_relay_dst_quit */
        ngx_relay_delivery_release(d);
        return NGX_OK;
    }

    ngx_relay_delivery_expect(d);

    return ngx_relay_delivery_send(d);
}


/* a command into the output buffer, sent with what else is there */

static void
ngx_relay_delivery_append(ngx_relay_delivery_t *d, const char *fmt, ...)
{
    u_char   *p;
    va_list   args;

    va_start(args, fmt);
    p = ngx_vslprintf(d->out->last, d->out->end - 2, fmt, args);
    va_end(args);

    *p++ = CR;
    *p++ = LF;
    d->out->last = p;
}


/*
 * MAIL FROM, and with PIPELINING (RFC 2920) the whole envelope in one
 * write, DATA last.
 */

static void
ngx_relay_delivery_envelope(ngx_relay_delivery_t *d)
{
    ngx_uint_t              i;
    ngx_relay_queued_t     *q;
    ngx_relay_smtp_conn_t  *sc;

    q = d->queued;
    sc = d->conn;

    if (!sc->esmtp) {
        ngx_relay_delivery_append(d, "MAIL FROM:<%V>", &q->sender);

    } else {
        ngx_relay_delivery_append(d, "MAIL FROM:<%V> SIZE=%O%s%s%s%s%s%V",
                                  &q->sender, q->message_size,
                                  (q->body == NGX_RELAY_BODY_BINARYMIME)
                                  ? " BODY=BINARYMIME"
                                  : (q->eightbit && sc->eightbit)
                                  ? " BODY=8BITMIME" : "",
                                  q->smtputf8 ? " SMTPUTF8" : "",
                                  (sc->dsn && q->ret == NGX_RELAY_RET_FULL)
                                  ? " RET=FULL" : "",
                                  (sc->dsn && q->ret == NGX_RELAY_RET_HDRS)
                                  ? " RET=HDRS" : "",
                                  (sc->dsn && q->envid.len)
                                  ? " ENVID=" : "",
                                  sc->dsn ? &q->envid : &ngx_relay_no_envid);
    }

    if (!d->pipelined) {
        return;
    }

    for (i = 0; i < d->nbatch; i++) {
        if ((size_t) (d->out->end - d->out->last)
            < NGX_RELAY_MAX_ADDR + NGX_RELAY_MAX_ORCPT + 64)
        {
            d->nbatch = i;        /* the others: the next transaction */
            break;
        }

        ngx_relay_delivery_rcpt(d, d->batch[i]);
    }

    if (!d->bdat) {
        ngx_relay_delivery_append(d, "DATA");
    }
}


/*
 * RCPT TO of dests[i]; towards a DSN server with its NOTIFY as received
 * and its ORCPT, as received or made from the address (RFC 3461 4.2).
 */

static void
ngx_relay_delivery_rcpt(ngx_relay_delivery_t *d, ngx_uint_t i)
{
    u_char                   *p, notify[32], orcpt[NGX_RELAY_MAX_ORCPT];
    ngx_str_t                 n, o;
    ngx_relay_dest_t         *dst;
    ngx_relay_queued_rcpt_t  *r;

    dst = &d->dests[i];
    r = &d->queued->rcpts[dst->index];

    if (!d->conn->dsn) {
        ngx_relay_delivery_append(d, "RCPT TO:<%V>", &dst->addr);
        return;
    }

    p = notify;

    if (r->notify & NGX_RELAY_NOTIFY_NEVER) {
        p = ngx_cpymem(p, " NOTIFY=NEVER", 13);

    } else if (r->notify) {
        p = ngx_cpymem(p, " NOTIFY=", 8);

        if (r->notify & NGX_RELAY_NOTIFY_SUCCESS) {
            p = ngx_cpymem(p, "SUCCESS,", 8);
        }

        if (r->notify & NGX_RELAY_NOTIFY_FAILURE) {
            p = ngx_cpymem(p, "FAILURE,", 8);
        }

        if (r->notify & NGX_RELAY_NOTIFY_DELAY) {
            p = ngx_cpymem(p, "DELAY,", 6);
        }

        p--;                             /* the last "," */
    }

    n.data = notify;
    n.len = p - notify;

    if (r->orcpt.len) {
        o.data = r->orcpt.data;
        o.len = r->orcpt.len;

    } else {
        p = ngx_relay_orcpt(orcpt, sizeof(orcpt), &dst->addr);
        o.data = orcpt;
        o.len = p ? (size_t) (p - orcpt) : 0;
    }

    ngx_relay_delivery_append(d, "RCPT TO:<%V>%V%s%V", &dst->addr, &n,
                              o.len ? " ORCPT=" : "", &o);
}


/* a reply is due: the server has relay_smtp_timeout for it */

static void
ngx_relay_delivery_expect(ngx_relay_delivery_t *d)
{
    if (!d->connection->read->timer_set) {
        ngx_add_timer(d->connection->read, d->conf->timeout);
    }
}


static ngx_int_t
ngx_relay_delivery_send(ngx_relay_delivery_t *d)
{
    return ngx_relay_send(d->connection, d->out, d->conf->timeout);
}


static ngx_uint_t
ngx_relay_delivery_expecting(ngx_relay_delivery_t *d)
{
    return d->state != ngx_relay_dst_body
           && d->state != ngx_relay_dst_connect
           && d->state != ngx_relay_dst_quit;
}


static void
ngx_relay_delivery_write_handler(ngx_event_t *ev)
{
    int                    err;
    socklen_t              len;
    ngx_connection_t      *c;
    ngx_relay_delivery_t  *d;

    c = ev->data;
    d = c->data;

    if (ev->timedout) {
        ngx_relay_delivery_host_failed(d, "4.4.2", "%s timed out",
                                       d->state == ngx_relay_dst_connect
                                       ? "connection" : "sending");
        return;
    }

    if (d->state == ngx_relay_dst_connect) {
        err = 0;
        len = sizeof(int);

        if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, (void *) &err, &len)
            == -1)
        {
            err = ngx_socket_errno;
        }

        if (err) {
            ngx_relay_delivery_host_failed(d, "4.4.1", "connect failed: %s",
                                           strerror(err));
            return;
        }

        if (ev->timer_set) {
            ngx_del_timer(ev);
        }

        d->facts.connect += ngx_current_msec - d->mark;

        (void) ngx_relay_delivery_enter(d, ngx_relay_dst_greeting);

        if (c->read->ready) {
            ngx_relay_delivery_read_handler(c->read);
        }

        return;
    }

    if (ngx_relay_delivery_send(d) == NGX_ERROR) {
        ngx_relay_delivery_host_failed(d, "4.4.2", "connection lost while "
                                       "sending");
        return;
    }

    if (d->state == ngx_relay_dst_body && d->out->pos == d->out->last
        && !d->reading)
    {
        ngx_relay_delivery_read_chunk(d);
    }
}


static void
ngx_relay_delivery_read_handler(ngx_event_t *ev)
{
    size_t                 len;
    ssize_t                n;
    ngx_int_t              rc;
    ngx_buf_t             *b;
    ngx_connection_t      *c;
    ngx_atomic_uint_t      number;
    ngx_relay_delivery_t  *d;

    c = ev->data;
    d = c->data;
    b = d->in;

    if (ev->timedout) {
        ngx_relay_delivery_host_failed(d, "4.4.2", "timed out waiting for a "
                                       "reply");
        return;
    }

    if (d->state == ngx_relay_dst_connect) {

        /*
         * The greeting came with the connect in one epoll event, and the
         * read event runs first: finish the connect, which reads it then.
         */

        ngx_relay_delivery_write_handler(c->write);
        return;
    }

    for ( ;; ) {

        if (b->pos < b->last) {
            d->rp.ehlo = (d->state == ngx_relay_dst_ehlo);
            rc = ngx_relay_parse_reply(&d->rp, b);

            if (rc == NGX_RELAY_PARSE_INVALID) {
                ngx_relay_delivery_host_failed(d, "4.5.0", "invalid reply "
                                               "from the server");
                return;
            }

            if (rc == NGX_OK) {
                if (c->read->timer_set) {
                    ngx_del_timer(c->read);
                }

                number = c->number;

                ngx_relay_delivery_reply(d);

                /*
                 * The reply may have closed or cached this connection, or
                 * ended the delivery (d is gone then: c->data is not d),
                 * or started a TLS handshake.  A closed c may already
                 * serve the connection to the next address (nginx hands
                 * out the last freed one), with a new number: b went with
                 * the old connection.
                 */

                if (c->number != number || c->data != d
                    || d->connection != c
                    || c->read->handler != ngx_relay_delivery_read_handler)
                {
                    return;
                }

                ngx_memzero(&d->rp, sizeof(ngx_relay_reply_parser_t));

                if (ngx_relay_delivery_expecting(d)) {
                    ngx_relay_delivery_expect(d);
                }

                continue;
            }
        }

        if (b->pos == b->last) {
            b->pos = b->start;
            b->last = b->start;

        } else if (b->pos != b->start) {
            len = b->last - b->pos;
            ngx_memmove(b->start, b->pos, len);
            b->pos = b->start;
            b->last = b->start + len;
        }

        n = c->recv(c, b->last, b->end - b->last);

        if (n == NGX_AGAIN) {
            if (ngx_handle_read_event(c->read, 0) != NGX_OK) {
                ngx_relay_delivery_host_failed(d, "4.4.2", "read error");
                return;
            }

            return;
        }

        if (n == NGX_ERROR) {
            ngx_relay_delivery_host_failed(d, d->state
                                              == ngx_relay_dst_greeting
                                              ? "4.4.1" : "4.4.2",
                                           "%s", strerror(ngx_socket_errno));
            return;
        }

        if (n == 0) {
            ngx_relay_delivery_host_failed(d, "4.4.2", "connection closed "
                                           "by the server");
            return;
        }

        b->last += n;
    }
}


static void
ngx_relay_delivery_remember(ngx_relay_delivery_t *d)
{
    d->error_len = ngx_snprintf(d->error, sizeof(d->error), "%ui %*s",
                                d->rp.code, d->rp.text_len, d->rp.text)
                   - d->error;
}


/*
 * One complete reply in the current state: what it means for the host,
 * the recipients or the message, and which state comes next.  A failed
 * write of what follows shows on the read side, unless noted.
 */

static void
ngx_relay_delivery_reply(ngx_relay_delivery_t *d)
{
    ngx_uint_t  code;

    code = d->rp.code;

    if (code >= 400) {
        ngx_relay_destination_backoff_reply(&d->destination, code,
                                            d->rp.text, d->rp.text_len);
    }

    switch (d->state) {

    case ngx_relay_dst_greeting:
        if (code / 100 != 2) {
            ngx_relay_delivery_refused(d, code / 100 == 5 ? "5.0.0"
                                                          : "4.0.0",
                                       "greeting");
            return;
        }

        d->answered = 1;
        (void) ngx_relay_delivery_enter(d, ngx_relay_dst_ehlo);
        return;

    case ngx_relay_dst_ehlo:
        ngx_relay_delivery_ehlo_reply(d, code);
        return;

    case ngx_relay_dst_starttls:
        ngx_relay_delivery_starttls_reply(d, code);
        return;

    case ngx_relay_dst_helo:
        ngx_relay_delivery_helo_reply(d, code);
        return;

    case ngx_relay_dst_mail:
        ngx_relay_delivery_mail_reply(d, code);
        return;

    case ngx_relay_dst_rcpt:
        ngx_relay_delivery_rcpt_reply(d, code);
        return;

    case ngx_relay_dst_data:
        ngx_relay_delivery_data_reply(d, code);
        return;

    case ngx_relay_dst_dot:
    case ngx_relay_dst_last:
        ngx_relay_delivery_dot_reply(d, code);
        return;

    case ngx_relay_dst_rset:
        if (code / 100 != 2) {
            ngx_relay_delivery_close(d);
            ngx_relay_delivery_next_host(d);
            return;
        }

        ngx_relay_delivery_next_transaction(d);
        return;

    default:
        return;
    }
}


/* EHLO refused: HELO; else STARTTLS when offered, or the first MAIL */

static void
ngx_relay_delivery_ehlo_reply(ngx_relay_delivery_t *d, ngx_uint_t code)
{
    if (code / 100 != 2) {
        (void) ngx_relay_delivery_enter(d, ngx_relay_dst_helo);
        return;
    }

    ngx_relay_delivery_extensions(d);

    /* opportunistic TLS (RFC 3207) whenever the server offers it */

    if (d->conn->starttls && !d->conn->tls && d->conf->ssl) {
        (void) ngx_relay_delivery_enter(d, ngx_relay_dst_starttls);
        return;
    }

    if (d->route.tls_required && !d->conn->tls) {
        ngx_relay_delivery_no_tls(d, "the server does not offer STARTTLS",
                                  0);
        return;
    }

    if (d->route.tls_source == NGX_RELAY_TLS_STS_TESTING && !d->conn->tls) {
        ngx_relay_delivery_sts_testing(d, "the server does not offer "
                                       "STARTTLS");
    }

    ngx_relay_delivery_next_transaction(d);
}


static void
ngx_relay_delivery_starttls_reply(ngx_relay_delivery_t *d, ngx_uint_t code)
{
    if (code == 220) {
        ngx_relay_delivery_start_tls(d);
        return;
    }

    if (d->route.tls_required) {
        ngx_relay_delivery_no_tls(d, "STARTTLS was refused: ", 1);
        return;
    }

    /* offered but refused: carry on in plaintext */

    ngx_relay_delivery_next_transaction(d);
}


static void
ngx_relay_delivery_helo_reply(ngx_relay_delivery_t *d, ngx_uint_t code)
{
    if (code / 100 != 2) {
        ngx_relay_delivery_refused(d, "4.0.0", "HELO");
        return;
    }

    if (d->route.tls_required) {
        ngx_relay_delivery_no_tls(d, "the server does not speak ESMTP", 0);
        return;
    }

    ngx_relay_delivery_next_transaction(d);
}


/* the destination's TLS policy asks for TLS this host does not give */

static void
ngx_relay_delivery_no_tls(ngx_relay_delivery_t *d, const char *why,
    ngx_uint_t reply)
{
    size_t  len;

    len = 0;

    if (reply) {
        ngx_relay_delivery_remember(d);
        len = d->error_len;
    }

    ngx_relay_delivery_tls_failed(d);
    ngx_relay_delivery_host_failed(d, "4.7.4", "TLS is required for %V, "
                                   "but %s%*s (tls=%s)", &d->domain, why,
                                   len, d->error,
                                   ngx_relay_route_tls_text(&d->route));
}


static void
ngx_relay_delivery_mail_reply(ngx_relay_delivery_t *d, ngx_uint_t code)
{
    if (code / 100 == 2) {
        d->txns++;
        d->rcpt = 0;
        d->accepted = 0;
        (void) ngx_relay_delivery_enter(d, ngx_relay_dst_rcpt);
        return;
    }

    if (code / 100 == 5) {
        /* the sender is refused: a verdict on the message */
        ngx_relay_delivery_remember(d);
        ngx_relay_delivery_fail_message(d, "5.0.0");
        return;
    }

    /* a 421 on a cached connection is dealt with there */

    ngx_relay_delivery_refused(d, "4.0.0", "MAIL");
}


/* a recipient's reply: its result, then the next RCPT, DATA or RSET */

static void
ngx_relay_delivery_rcpt_reply(ngx_relay_delivery_t *d, ngx_uint_t code)
{
    ngx_relay_dest_t  *dst;

    dst = &d->dests[d->batch[d->rcpt++]];
    ngx_relay_delivery_remember(d);

    if (code / 100 == 2) {
        dst->accepted = 1;
        d->accepted++;

    } else if (code == 421) {
        ngx_relay_delivery_refused(d, "4.0.0", "RCPT");
        return;

    } else if (code / 100 == 4) {

        if (code == 452 && d->accepted
            && (ngx_strlcasestrn(d->error, d->error + d->error_len,
                                 (u_char *) "4.5.3", 4)
                || ngx_strlcasestrn(d->error, d->error + d->error_len,
                                    (u_char *) "too many", 7)))
        {
            /* RFC 5321 4.5.3.1.10: the rest in the next transaction */

        } else {
            /* this recipient tries the next host */
            ngx_memcpy(dst->reply, d->error, d->error_len);
            dst->reply_len = d->error_len;
            ngx_memcpy(dst->relay, d->relay, d->relay_len);
            dst->relay_len = d->relay_len;
            dst->skip = 1;
            dst->soft = 1;
        }

    } else {
        ngx_memcpy(dst->reply, d->error, d->error_len);
        dst->reply_len = d->error_len;
        ngx_relay_delivery_set(d, dst, NGX_RELAY_DELIVERY_FAILED, "5.0.0");
    }

    if (d->rcpt < d->nbatch) {
        (void) ngx_relay_delivery_enter(d, ngx_relay_dst_rcpt);
        return;
    }

    if (d->accepted) {
        (void) ngx_relay_delivery_enter(d, d->bdat ? ngx_relay_dst_body
                                                   : ngx_relay_dst_data);
        return;
    }

    if (d->pipelined && !d->bdat) {
        d->discard = 1;                  /* the reply to DATA comes */
        (void) ngx_relay_delivery_enter(d, ngx_relay_dst_data);
        return;
    }

    ngx_relay_delivery_rset(d);
}


/* the reply to DATA: the message goes, or the accepted recipients learn */

static void
ngx_relay_delivery_data_reply(ngx_relay_delivery_t *d, ngx_uint_t code)
{
    if (d->discard) {
        if (code == 354) {
            /* RFC 2920 3.1: no recipient, yet 354: an empty message */
            (void) ngx_relay_delivery_enter(d, ngx_relay_dst_dot);
            return;
        }

        ngx_relay_delivery_rset(d);
        return;
    }

    if (code == 354) {
        (void) ngx_relay_delivery_enter(d, ngx_relay_dst_body);
        return;
    }

    ngx_relay_delivery_remember(d);

    if (code / 100 == 5) {
        ngx_relay_delivery_set_accepted(d, NGX_RELAY_DELIVERY_FAILED,
                                        "5.0.0");
        ngx_relay_delivery_rset(d);
        return;
    }

    ngx_relay_delivery_refused(d, "4.0.0", "DATA");
}


/* the end of data: the accepted recipients' result, the next transaction */

static void
ngx_relay_delivery_dot_reply(ngx_relay_delivery_t *d, ngx_uint_t code)
{
    if (d->discard) {
        ngx_relay_delivery_rset(d);
        return;
    }

    ngx_relay_delivery_remember(d);

    d->facts.transfer += ngx_current_msec - d->mark;

    if (code / 100 == 2) {
        ngx_relay_delivery_set_accepted(d, NGX_RELAY_DELIVERY_SENT, "2.0.0");

    } else if (code / 100 == 5) {
        ngx_relay_delivery_set_accepted(d, NGX_RELAY_DELIVERY_FAILED,
                                        "5.0.0");

    } else {
        ngx_relay_delivery_set_accepted(d, NGX_RELAY_DELIVERY_DEFERRED,
                                        "4.0.0");
    }

    d->conn->messages++;

    /* no RSET after a complete transaction: the next one, if any */

    ngx_relay_delivery_next_transaction(d);
}


/* the server refused the host as a whole: its words end the attempt */

static void
ngx_relay_delivery_refused(ngx_relay_delivery_t *d, const char *dsn,
    const char *what)
{
    ngx_relay_delivery_remember(d);
    ngx_relay_delivery_host_failed(d, dsn, "%s: %*s", what, d->error_len,
                                   d->error);
}


/* after an aborted transaction: RSET, then the next one */

static void
ngx_relay_delivery_rset(ngx_relay_delivery_t *d)
{
    if (ngx_relay_delivery_enter(d, ngx_relay_dst_rset) == NGX_ERROR) {
        ngx_relay_delivery_host_failed(d, "4.4.2", "connection lost while "
                                       "sending");
    }
}


/* what the server offers: kept with the connection, which may be reused */

static void
ngx_relay_delivery_extensions(ngx_relay_delivery_t *d)
{
    ngx_uint_t              ext;
    ngx_relay_smtp_conn_t  *sc;

    sc = d->conn;
    sc->esmtp = 1;

    /* the EHLO keywords, each a line's first word (ngx_relay_parse.c) */

    ext = d->rp.ext;

    sc->smtputf8 = (ext & NGX_RELAY_EXT_SMTPUTF8) != 0;
    sc->starttls = (ext & NGX_RELAY_EXT_STARTTLS) != 0;
    sc->eightbit = (ext & NGX_RELAY_EXT_8BITMIME) != 0;
    sc->pipelining = (ext & NGX_RELAY_EXT_PIPELINING) != 0;
    sc->dsn = (ext & NGX_RELAY_EXT_DSN) != 0;
    sc->chunking = (ext & NGX_RELAY_EXT_CHUNKING) != 0;
    sc->binarymime = (ext & NGX_RELAY_EXT_BINARYMIME) != 0;
    sc->size_limit = (ext & NGX_RELAY_EXT_SIZE) ? d->rp.size : 0;
}


static void
ngx_relay_delivery_start_tls(ngx_relay_delivery_t *d)
{
    u_char            *name;
    ngx_int_t          rc;
    ngx_connection_t  *c;

    c = d->connection;

    if (ngx_ssl_create_connection(d->conf->ssl, c,
                                  NGX_SSL_BUFFER|NGX_SSL_CLIENT)
        != NGX_OK)
    {
        ngx_relay_delivery_host_failed(d, "4.7.0", "TLS setup failed");
        return;
    }

    /* SNI: the host name we connected to, unless it is an address */

    name = ngx_pnalloc(d->pool, d->host.len + 1);

    if (name && ngx_relay_delivery_literal_name(&d->host) != NGX_OK) {
        (void) ngx_cpystrn(name, d->host.data, d->host.len + 1);
        (void) SSL_set_tlsext_host_name(c->ssl->connection, (char *) name);
    }

    if (d->route.dane && ngx_relay_delivery_dane(d, (char *) name) != NGX_OK)
    {
        ngx_relay_delivery_host_failed(d, "4.7.5", "TLS setup failed: no "
                                       "usable TLSA record of %V", &d->host);
        return;
    }

    d->in->pos = d->in->start;
    d->in->last = d->in->start;
    ngx_memzero(&d->rp, sizeof(ngx_relay_reply_parser_t));

    d->mark = ngx_current_msec;

    rc = ngx_ssl_handshake(c);

    if (rc == NGX_AGAIN) {
        ngx_add_timer(c->read, d->conf->timeout);
        c->ssl->handler = ngx_relay_delivery_tls_handshaked;
        return;
    }

    ngx_relay_delivery_tls_handshaked(c);
}


static void
ngx_relay_delivery_tls_handshaked(ngx_connection_t *c)
{
    ngx_relay_delivery_t  *d = c->data;

    if (c->read->timer_set) {
        ngx_del_timer(c->read);
    }

    c->read->handler = ngx_relay_delivery_read_handler;
    c->write->handler = ngx_relay_delivery_write_handler;

    if (!c->ssl->handshaked) {
        if (d->route.tls_required) {
            ngx_relay_delivery_tls_failed(d);
        }

        ngx_relay_delivery_host_failed(d, d->route.tls_required ? "4.7.5"
                                                                : "4.7.0",
                                       "TLS handshake failed%s",
                                       d->route.tls_required ? " and TLS is "
                                       "required" : "");
        return;
    }

    d->facts.tls += ngx_current_msec - d->mark;

    if (d->route.dane) {
        if (ngx_relay_delivery_dane_verify(d) != NGX_OK) {
            return;
        }

    } else if (d->route.tls_verify && ngx_relay_delivery_verify(d) != NGX_OK)
    {
        return;

    } else if (d->route.tls_source == NGX_RELAY_TLS_STS_TESTING) {
        ngx_relay_delivery_sts_check(d);
    }

    ngx_log_error(NGX_LOG_INFO, d->conf->log, 0,
                  "%V: relay=%*s: TLS %s %s", &d->queued->id, d->relay_len,
                  d->relay, SSL_get_version(c->ssl->connection),
                  SSL_get_cipher_name(c->ssl->connection));

    /* RFC 3207 4.2: start over */

    d->conn->tls = 1;
    d->conn->esmtp = 0;
    d->conn->pipelining = 0;
    ngx_memzero(&d->rp, sizeof(ngx_relay_reply_parser_t));
    (void) ngx_relay_delivery_enter(d, ngx_relay_dst_ehlo);
}


/*
 * relay_tls_policy ... verify: the chain against
 * relay_tls_trusted_certificate, and the name against the MX host name
 * (RFC 6125 via ngx_ssl_check_host); a failure fails the host with 4.7.5.
 */

static ngx_int_t
ngx_relay_delivery_verify(ngx_relay_delivery_t *d)
{
    u_char  *p, why[NGX_RELAY_REPLY_TEXT];

    p = ngx_relay_delivery_cert_check(d, why, sizeof(why));

    if (p) {
        ngx_relay_delivery_tls_failed(d);
        ngx_relay_delivery_host_failed(d, "4.7.5", "TLS verification for "
                                       "%V: %*s (tls=%s)", &d->domain,
                                       p - why, why,
                                       ngx_relay_route_tls_text(&d->route));
        return NGX_ERROR;
    }

    d->conn->verified = 1;

    return NGX_OK;
}


/* NULL when the certificate chains and names d->host, else the end of why */

static u_char *
ngx_relay_delivery_cert_check(ngx_relay_delivery_t *d, u_char *why,
    size_t len)
{
    long               rc;
    X509              *cert;
    ngx_connection_t  *c;

    c = d->connection;

    cert = SSL_get_peer_certificate(c->ssl->connection);

    if (cert == NULL) {
        return ngx_snprintf(why, len, "the server sent no certificate");
    }

    X509_free(cert);

    rc = SSL_get_verify_result(c->ssl->connection);

    if (rc != X509_V_OK) {
        return ngx_snprintf(why, len, "certificate of %V not trusted: "
                            "(%l) %s", &d->host, rc,
                            X509_verify_cert_error_string(rc));
    }

    if (ngx_ssl_check_host(c, &d->host) != NGX_OK) {
        return ngx_snprintf(why, len, "certificate does not match the host "
                            "name %V", &d->host);
    }

    return NULL;
}


/*
 * TLS-RPT (RFC 8460) without reports: failures under a DANE or MTA-STS
 * policy are counted per policy domain and logged, so an operator sees
 * them.
 */

static void
ngx_relay_delivery_tls_failed(ngx_relay_delivery_t *d)
{
    const char  *source;

    switch (d->route.tls_source) {

    case NGX_RELAY_TLS_DANE:
        source = "dane";
        break;

    case NGX_RELAY_TLS_MTA_STS:
    case NGX_RELAY_TLS_STS_TESTING:
        source = "mta-sts";
        break;

    default:
        return;
    }

    ngx_log_error(NGX_LOG_NOTICE, d->conf->log, 0,
                  "%V: relay tls-rpt: %s policy of %V, failure %ui here",
                  &d->queued->id, source, &d->domain,
                  ngx_relay_tls_failure(&d->domain, source));
}


/* MTA-STS testing: what enforce would have failed, delivered anyway */

static void
ngx_relay_delivery_sts_testing(ngx_relay_delivery_t *d, const char *why)
{
    ngx_relay_delivery_tls_failed(d);

    ngx_log_error(NGX_LOG_WARN, d->conf->log, 0,
                  "%V: relay=%*s: MTA-STS testing for %V: would have "
                  "failed: %s", &d->queued->id, d->relay_len, d->relay,
                  &d->domain, why);
}


static void
ngx_relay_delivery_sts_check(ngx_relay_delivery_t *d)
{
    u_char  *p, why[NGX_RELAY_REPLY_TEXT];

    p = ngx_relay_delivery_cert_check(d, why, sizeof(why) - 1);

    if (p) {
        *p = '\0';
        ngx_relay_delivery_sts_testing(d, (char *) why);
    }
}


/*
 * DANE (RFC 7672 3.1): the host's usable TLSA records, its name as the
 * reference identifier for DANE-TA (DANE-EE needs no name check).
 * OpenSSL does the matching during the handshake; the context verifies
 * nothing by itself, so the result is read afterwards.
 */

static ngx_int_t
ngx_relay_delivery_dane(ngx_relay_delivery_t *d, char *name)
{
    SSL               *ssl;
    ngx_uint_t         i, n;
    ngx_relay_tlsa_t  *t;

    ssl = d->connection->ssl->connection;

    if (name == NULL || SSL_dane_enable(ssl, name) <= 0) {
        return NGX_ERROR;
    }

    /* RFC 7672 3.1.1: DANE-EE(3) binds the key, names do not matter */

    (void) SSL_dane_set_flags(ssl, DANE_FLAG_NO_DANE_EE_NAMECHECKS);

    for (i = 0, n = 0; i < d->route.ntlsa; i++) {
        t = &d->route.tlsa[i];

        if (SSL_dane_tlsa_add(ssl, t->usage, t->selector, t->mtype,
                              t->data, t->len)
            > 0)
        {
            n++;
        }
    }

    return n ? NGX_OK : NGX_ERROR;
}


/* a mismatch defers the host (4.7.5): never plaintext, never unverified */

static ngx_int_t
ngx_relay_delivery_dane_verify(ngx_relay_delivery_t *d)
{
    long   rc;
    SSL   *ssl;

    ssl = d->connection->ssl->connection;

    rc = SSL_get_verify_result(ssl);

    if (rc != X509_V_OK || SSL_get0_dane_authority(ssl, NULL, NULL) < 0) {
        ngx_relay_delivery_tls_failed(d);
        ngx_relay_delivery_host_failed(d, "4.7.5", "DANE verification for "
                                       "%V: the certificate of %V does not "
                                       "match its TLSA records: (%l) %s",
                                       &d->domain, &d->host, rc,
                                       X509_verify_cert_error_string(rc));
        return NGX_ERROR;
    }

    d->conn->verified = 1;

    return NGX_OK;
}


static ngx_int_t
ngx_relay_delivery_literal_name(ngx_str_t *host)
{
    u_char  *p;

    for (p = host->data; p < host->data + host->len; p++) {
        if (*p == ':' || ((*p < '0' || *p > '9') && *p != '.')) {
            return (*p == ':') ? NGX_OK : NGX_DECLINED;
        }
    }

    return NGX_OK;
}


/*
 * The next transaction on this connection: the open recipients this host
 * did not defer, at most relay_max_rcpts_per_transaction; with none left,
 * QUIT (or the idle cache) and the next host.
 */

static void
ngx_relay_delivery_next_transaction(ngx_relay_delivery_t *d)
{
    off_t                   size;
    ngx_uint_t              i, n;
    ngx_relay_dest_t       *dst;
    ngx_relay_queued_t     *q;
    ngx_relay_smtp_conn_t  *sc;

    q = d->queued;
    sc = d->conn;
    size = q->message_size;

    n = 0;

    for (i = 0; i < d->ndests && n < d->conf->rcpts_per_txn; i++) {
        dst = &d->dests[i];

        if (dst->status == NGX_RELAY_DELIVERY_PENDING && !dst->skip) {
            d->batch[n++] = i;
        }
    }

    d->nbatch = n;

    if (n == 0) {
        (void) ngx_relay_delivery_enter(d, ngx_relay_dst_quit);
        ngx_relay_delivery_next_host(d);
        return;
    }

    if (sc->size_limit && size > sc->size_limit) {
        d->error_len = ngx_sprintf(d->error, "message size %O exceeds the "
                                   "limit %O of %*s", size, sc->size_limit,
                                   d->relay_len, d->relay)
                       - d->error;
        ngx_relay_delivery_fail_message(d, "5.3.4");
        return;
    }

    if (q->smtputf8 && !sc->smtputf8) {
        d->error_len = ngx_sprintf(d->error, "%*s does not support "
                                   "SMTPUTF8", d->relay_len, d->relay)
                       - d->error;
        ngx_relay_delivery_fail_message(d, "5.6.7");
        return;
    }

    if (q->body == NGX_RELAY_BODY_BINARYMIME
        && !(sc->chunking && sc->binarymime))
    {
        d->error_len = ngx_sprintf(d->error, "%*s does not support "
                                   "BINARYMIME and CHUNKING, which the "
                                   "message needs", d->relay_len, d->relay)
                       - d->error;
        ngx_relay_delivery_fail_message(d, "5.6.3");
        return;
    }

    d->discard = 0;
    d->pipelined = sc->pipelining;
    d->bdat = sc->chunking;

    if (ngx_relay_delivery_enter(d, ngx_relay_dst_mail) == NGX_ERROR) {
        ngx_relay_delivery_host_failed(d, "4.4.2", "connection lost while "
                                       "sending");
    }
}


/* a verdict on the message (d->error says why): every open recipient */

static void
ngx_relay_delivery_fail_message(ngx_relay_delivery_t *d, const char *dsn)
{
    ngx_relay_delivery_set_all(d, NGX_RELAY_DELIVERY_FAILED, dsn, d->error,
                               d->error_len);
    ngx_relay_delivery_close(d);
    ngx_relay_delivery_finish(d);
}


/* the message from the queue file, 64 KB at a time, read by a thread */

static void
ngx_relay_delivery_read_chunk(ngx_relay_delivery_t *d)
{
    off_t               left;
    ngx_thread_task_t  *task;

    if (d->file.data) {
        left = d->queued->message_size - d->body_off;

        d->chunk_data = d->file.data + d->queued->message_offset
                        + d->body_off;
        d->chunk_len = (ssize_t) ngx_min(left, NGX_RELAY_DELIVERY_CHUNK);
        d->chunk_err = 0;

        /* at most 4 deep: a file in memory is at most 256 KB */

        ngx_relay_delivery_chunk_ready(d);
        return;
    }

    task = d->task;
    task->ctx = d;
    task->handler = ngx_relay_delivery_chunk_thread;
    task->event.handler = ngx_relay_delivery_chunk_done;
    task->event.data = d;

    if (ngx_thread_task_post(d->conf->thread_pool, task) != NGX_OK) {
        ngx_relay_delivery_host_failed(d, "4.3.0", "cannot read the "
                                       "message");
        return;
    }

    d->reading = 1;
}


static void
ngx_relay_delivery_chunk_thread(void *data, ngx_log_t *log)
{
    ngx_relay_delivery_t  *d = data;

    off_t   left;
    size_t  len;

    left = d->queued->message_size - d->body_off;
    len = (size_t) ngx_min(left, NGX_RELAY_DELIVERY_CHUNK);

    d->chunk_err = 0;
    d->chunk_data = d->chunk;
    d->chunk_len = len ? pread(d->fd, d->chunk, len,
                               d->queued->message_offset + d->body_off)
                       : 0;

    if (d->chunk_len == -1) {
        d->chunk_err = errno;
    }
}


static void
ngx_relay_delivery_chunk_done(ngx_event_t *ev)
{
    ngx_relay_delivery_t  *d = ev->data;

    d->reading = 0;

    if (d->connection == NULL) {
        /* the connection failed meanwhile: now we can move on */
        ngx_relay_delivery_connect(d);
        return;
    }

    ngx_relay_delivery_chunk_ready(d);
}


/* a chunk of the body in d->chunk_data: into the output buffer, sent */

static void
ngx_relay_delivery_chunk_ready(ngx_relay_delivery_t *d)
{
    u_char      *p, *q, *last, *dot;
    ngx_uint_t   line_start;

    if (d->chunk_len < 0
        || (d->chunk_len == 0 && d->body_off < d->queued->message_size))
    {
        ngx_relay_delivery_host_failed(d, "4.3.0", "cannot read the "
                                       "message");
        return;
    }

    if (d->bdat) {

        /* BDAT: the octets as they are (RFC 3030 2) */

        d->out->last = ngx_cpymem(d->out->last, d->chunk_data,
                                  d->chunk_len);
        d->body_off += d->chunk_len;

        if (d->body_off >= d->queued->message_size) {
            if (ngx_relay_delivery_enter(d, ngx_relay_dst_last) == NGX_ERROR)
            {
                ngx_relay_delivery_host_failed(d, "4.4.2", "connection lost "
                                               "while sending");
            }

            return;
        }

        goto send;
    }

    /* dot-stuffing (RFC 5321 4.5.2) into the output buffer */

    q = d->out->last;
    last = d->chunk_data + d->chunk_len;
    line_start = d->line_start;

    /* the runs between line-start dots in one copy each */

    for (p = d->chunk_data; /* void */ ; p = dot + 1) {
        dot = ngx_relay_parse_line_dot(p, last, line_start);
        q = ngx_cpymem(q, p, dot - p);

        if (dot == last) {
            break;
        }

        *q++ = '.';
        *q++ = '.';
        line_start = 0;
    }

    if (d->chunk_len) {
        d->last_lf = (last[-1] == LF);
        d->line_start = d->last_lf;
    }

    d->out->last = q;
    d->body_off += d->chunk_len;

    if (d->body_off >= d->queued->message_size) {
        if (!d->last_lf) {
            *d->out->last++ = CR;
            *d->out->last++ = LF;
        }

        if (ngx_relay_delivery_enter(d, ngx_relay_dst_dot) == NGX_ERROR) {
            ngx_relay_delivery_host_failed(d, "4.4.2", "connection lost "
                                           "while sending");
        }

        return;
    }

send:

    switch (ngx_relay_delivery_send(d)) {

    case NGX_ERROR:
        ngx_relay_delivery_host_failed(d, "4.4.2", "connection lost while "
                                       "sending");
        return;

    case NGX_AGAIN:
        return;                          /* the write handler goes on */

    default:
        ngx_relay_delivery_read_chunk(d);
    }
}


/*
 * This host did not work out: what is still open goes to the next address
 * or host.
 */

static void
ngx_relay_delivery_host_failed(ngx_relay_delivery_t *d, const char *dsn,
    const char *fmt, ...)
{
    u_char      buf[NGX_RELAY_REPLY_TEXT + 64], *p;
    va_list     args;
    ngx_uint_t  i;

    va_start(args, fmt);
    p = ngx_vslprintf(buf, buf + sizeof(buf), fmt, args);
    va_end(args);

    if (d->reused && d->txns == 0 && d->state == ngx_relay_dst_mail) {

        /* a cached connection that died meanwhile: not an attempt */

        ngx_log_error(NGX_LOG_INFO, d->conf->log, 0,
                      "%V: relay=%*s: cached connection is gone (%*s), "
                      "connecting again", &d->queued->id, d->relay_len,
                      d->relay, p - buf, buf);

        d->reused = 0;
        d->no_cache = 1;
        ngx_relay_route_skip(&d->route, NULL, 0);
        ngx_relay_delivery_close(d);

        /* this host afresh, or (taken before DNS) the walk from its start */

        ngx_relay_delivery_connect(d);
        return;
    }

    ngx_memcpy(d->error, buf, p - buf);
    d->error_len = p - buf;
    d->error_dsn = dsn;

    ngx_log_error(NGX_LOG_WARN, d->conf->log, 0,
                  "%V: relay=%*s: %*s while in state %V", &d->queued->id,
                  d->relay_len, d->relay, d->error_len, d->error,
                  &ngx_relay_delivery_state_names[d->state]);

    for (i = 0; i < d->ndests; i++) {
        d->dests[i].accepted = 0;
    }

    ngx_relay_delivery_close(d);

    if (d->reading) {
        return;                  /* chunk_done continues once the task ends */
    }

    ngx_relay_delivery_connect(d);
}


static void
ngx_relay_delivery_close(ngx_relay_delivery_t *d)
{
    if (d->conn == NULL) {
        return;
    }

    ngx_relay_destination_close(d->conn, 0);

    d->conn = NULL;
    d->connection = NULL;
    d->peer.connection = NULL;
}


static void
ngx_relay_delivery_set(ngx_relay_delivery_t *d, ngx_relay_dest_t *dst,
    ngx_uint_t status, const char *dsn)
{
    dst->status = status;
    dst->relayed = (status == NGX_RELAY_DELIVERY_SENT && d->conn
                    && !d->conn->dsn);
    ngx_cpystrn(dst->dsn, (u_char *) dsn, sizeof(dst->dsn));

    /* an enhanced code in the reply is more precise than ours */

    (void) ngx_relay_parse_enhanced(dst->reply, dst->reply_len, dsn[0],
                                       dst->dsn);

    ngx_memcpy(dst->relay, d->relay, d->relay_len);
    dst->relay_len = d->relay_len;
    dst->reused = d->reused;
    dst->tls = ngx_relay_route_tls_text(&d->route);

    ngx_relay_delivery_facts(d, dst);
}


/* the recipients the server accepted in this transaction get its reply */

static void
ngx_relay_delivery_set_accepted(ngx_relay_delivery_t *d, ngx_uint_t status,
    const char *dsn)
{
    ngx_uint_t         i;
    ngx_relay_dest_t  *dst;

    for (i = 0; i < d->nbatch; i++) {
        dst = &d->dests[d->batch[i]];

        if (!dst->accepted) {
            continue;
        }

        dst->accepted = 0;
        ngx_memcpy(dst->reply, d->error, d->error_len);
        dst->reply_len = d->error_len;
        ngx_relay_delivery_set(d, dst, status, dsn);
    }
}


static void
ngx_relay_delivery_set_all(ngx_relay_delivery_t *d, ngx_uint_t status,
    const char *dsn, u_char *text, size_t len)
{
    ngx_uint_t         i;
    ngx_relay_dest_t  *dst;

    len = ngx_min(len, NGX_RELAY_REPLY_TEXT);

    for (i = 0; i < d->ndests; i++) {
        dst = &d->dests[i];

        if (dst->status != NGX_RELAY_DELIVERY_PENDING) {
            continue;
        }

        ngx_memcpy(dst->reply, text, len);
        dst->reply_len = len;
        ngx_relay_delivery_set(d, dst, status, dsn);
    }
}


static ngx_uint_t
ngx_relay_delivery_open(ngx_relay_delivery_t *d)
{
    ngx_uint_t  i;

    for (i = 0; i < d->ndests; i++) {
        if (d->dests[i].status == NGX_RELAY_DELIVERY_PENDING) {
            return 1;
        }
    }

    return 0;
}


/* the hosts ran out: what is still open is deferred with the last error */

static void
ngx_relay_delivery_finish(ngx_relay_delivery_t *d)
{
    ngx_uint_t         i;
    ngx_relay_dest_t  *dst;

    ngx_relay_delivery_close(d);

    if (d->relay_len == 0) {
        d->relay_len = ngx_sprintf(d->relay, "none") - d->relay;
    }

    /* a 4xx to RCPT is more telling than the last host's error */

    for (i = 0; i < d->ndests; i++) {
        dst = &d->dests[i];

        if (dst->status == NGX_RELAY_DELIVERY_PENDING && dst->soft) {
            dst->status = NGX_RELAY_DELIVERY_DEFERRED;
            ngx_cpystrn(dst->dsn, (u_char *) "4.0.0", sizeof(dst->dsn));
            (void) ngx_relay_parse_enhanced(dst->reply, dst->reply_len,
                                               '4', dst->dsn);
        }
    }

    ngx_relay_delivery_set_all(d, NGX_RELAY_DELIVERY_DEFERRED, d->error_dsn,
                               d->error, d->error_len);

    /* the next waiting delivery of the destination may start */

    ngx_relay_destination_leave(&d->destination);

    d->handler(d);
}


/* the delays so far, and the TLS of the connection that answered */

static void
ngx_relay_delivery_facts(ngx_relay_delivery_t *d, ngx_relay_dest_t *dst)
{
    ngx_connection_t  *c;

    dst->facts = d->facts;

    c = d->connection;

    if (c == NULL || c->ssl == NULL || !c->ssl->handshaked) {
        return;
    }

    (void) ngx_cpystrn(dst->facts.tls_version,
                       (u_char *) SSL_get_version(c->ssl->connection),
                       sizeof(dst->facts.tls_version));
    (void) ngx_cpystrn(dst->facts.tls_cipher,
                       (u_char *) SSL_get_cipher_name(c->ssl->connection),
                       sizeof(dst->facts.tls_cipher));
}


/*
 * A recipient's relay text, as ngx_relay_delivery_dial() writes it,
 * "host[ip]:port from address (pool name)" (the last part only with an
 * egress pool), or a single word ("none", "local"), taken apart.
 */

void
ngx_relay_delivery_relay_parts(ngx_relay_dest_t *dst,
    ngx_relay_relay_parts_t *parts)
{
    u_char  *p, *q, *last;

    ngx_memzero(parts, sizeof(ngx_relay_relay_parts_t));

    p = dst->relay;
    last = p + dst->relay_len;

    q = ngx_strlchr(p, last, '[');

    parts->host.data = p;
    parts->host.len = (q ? q : last) - p;

    if (q == NULL) {
        return;
    }

    p = q + 1;
    q = ngx_strlchr(p, last, ']');

    if (q == NULL) {
        return;
    }

    parts->ip.data = p;
    parts->ip.len = q - p;

    p = q + 1;

    if (p < last && *p == ':') {
        for (q = ++p; q < last && *q >= '0' && *q <= '9'; q++) {
            /* void */
        }

        parts->port.data = p;
        parts->port.len = q - p;
        p = q;
    }

    if (last - p <= 6 || ngx_strncmp(p, " from ", 6) != 0) {
        return;
    }

    p += 6;
    q = ngx_strlchr(p, last, ' ');

    parts->egress.data = p;
    parts->egress.len = (q ? q : last) - p;

    if (q && last - q > 8 && ngx_strncmp(q, " (pool ", 7) == 0
        && last[-1] == ')')
    {
        parts->pool.data = q + 7;
        parts->pool.len = last - 1 - parts->pool.data;
    }
}
