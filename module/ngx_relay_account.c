
/*
 * Copyright (C) The relay authors
 */


/*
 * The accounting log: one JSON object per line for each message received,
 * each delivery attempt of each recipient, each DSN queued, each expiry
 * and each operator action (relay_accounting_log).  An observer: the
 * deciding code calls one function here per event; each writes its
 * record and counts the event in the metrics (ngx_relay_metrics.c), and
 * decides nothing.
 *
 * Writing never blocks the worker.  Records are formatted on the event
 * loop into a chunk of memory; a sealed chunk goes to a thread of
 * relay_thread_pool, which write()s it to the file (opened with O_APPEND
 * by nginx, as its logs are).  One write task at a time per worker keeps
 * the worker's records in order; what comes meanwhile waits in memory.
 * nginx's buffering conventions: without "buffer=", a record is handed to
 * the thread at once (records that arrive while a write runs go out with
 * the next one); with "buffer=size" records wait until size octets are
 * there, or "flush=time" after the first.  A disk that does not keep up
 * costs memory up to 32 MB a worker; beyond, records are dropped, logged
 * and counted (relay_accounting_errors_total), never the worker stalled.
 *
 * Reopening (nginx -s reopen, USR1): nginx calls our flush handler before
 * it reopens the file; every chunk not yet written is then bound to a
 * dup() of the old descriptor, so records made before the reopen go to
 * the old file (wherever it was moved) and none is lost; later ones go to
 * the new file.  At exit, after the thread pool has finished its tasks,
 * what is left is written at once.
 *
 * Strings are escaped by relay_json_escape() (lib/relay_json.c): NULs,
 * quotes, control characters and broken UTF-8 from clients and servers
 * still make a line that parses.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_relay.h>
#include <ngx_relay_metrics.h>
#include <ngx_relay_account.h>
#include <relay_json.h>


#define NGX_RELAY_ACCOUNT_CHUNK        (64 * 1024)
#define NGX_RELAY_ACCOUNT_MAX_QUEUED   (32 * 1024 * 1024)


typedef struct ngx_relay_account_chunk_s  ngx_relay_account_chunk_t;

struct ngx_relay_account_chunk_s {
    ngx_relay_account_chunk_t   *next;
    ngx_fd_t                     fd;           /* a dup(); -1: not bound */
    ngx_err_t                    err;          /* of its write */
    ngx_uint_t                   records;
    size_t                       len;
    size_t                       size;
    u_char                       data[1];
};


typedef struct {
    ngx_open_file_t             *file;
    size_t                       buffer;
    ngx_msec_t                   flush;
    ngx_thread_pool_t           *thread_pool;
    ngx_log_t                   *log;

    ngx_relay_account_chunk_t   *current;      /* being filled */
    size_t                       record;       /* where the record starts */
    ngx_uint_t                   failed;       /* the record being made */

    ngx_relay_account_chunk_t   *queue;        /* sealed, in order */
    ngx_relay_account_chunk_t  **tail;
    size_t                       queued;       /* octets not yet written */

    ngx_thread_task_t           *task;
    ngx_relay_account_chunk_t   *writing;      /* the task's */
    unsigned                     busy:1;
    ngx_event_t                  timer;        /* flush= */
    time_t                       warned;
} ngx_relay_account_t;


static void ngx_relay_account_flush_file(ngx_open_file_t *file,
    ngx_log_t *log);
static ngx_int_t ngx_relay_account_begin(const char *type);
static u_char *ngx_relay_account_reserve(size_t n);
static void ngx_relay_account_raw(const char *s, size_t len);
static void ngx_relay_account_str(const char *key, u_char *data,
    size_t len);
static void ngx_relay_account_opt(const char *key, u_char *data,
    size_t len);
static void ngx_relay_account_uint(const char *key, uint64_t n);
static void ngx_relay_account_secs(const char *key, ngx_msec_t ms);
static void ngx_relay_account_printf(size_t max, const char *fmt, ...);
static void ngx_relay_account_end(void);
static void ngx_relay_account_seal(void);
static void ngx_relay_account_kick(void);
static void ngx_relay_account_thread(void *data, ngx_log_t *log);
static void ngx_relay_account_written(ngx_event_t *ev);
static void ngx_relay_account_timer(ngx_event_t *ev);
static ngx_err_t ngx_relay_account_write(ngx_fd_t fd, u_char *p, size_t n);
static void ngx_relay_account_lost(const char *why, ngx_err_t err);
static ngx_int_t ngx_relay_account_head(ngx_relay_queued_t *q,
    ngx_str_t *rcpt, const char *class, ngx_uint_t outcome, const char *dsn,
    ngx_uint_t category);
static void ngx_relay_account_destination(ngx_relay_policy_t *p,
    ngx_str_t *domain, ngx_str_t *pattern);


static ngx_relay_account_t  *ngx_relay_account;    /* NULL: off */

static const char  *ngx_relay_account_outcomes[NGX_RELAY_OUTCOMES] = {
    "sent", "deferred", "bounced", "expired"
};


/* ------------------------------------------------------ configuration */


char *
ngx_relay_account_directive(ngx_conf_t *cf, ngx_relay_account_conf_t *acf)
{
    ssize_t     size;
    ngx_str_t  *value, s;
    ngx_msec_t  flush;
    ngx_uint_t  i;

    if (acf->file || acf->buffer == (size_t) -1) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (ngx_strcmp(value[1].data, "off") == 0) {
        if (cf->args->nelts > 2) {
            return "takes no parameters with \"off\"";
        }

        acf->buffer = (size_t) -1;
        return NGX_CONF_OK;
    }

    size = 0;
    flush = 0;

    for (i = 2; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "buffer=", 7) == 0) {
            s.len = value[i].len - 7;
            s.data = value[i].data + 7;

            size = ngx_parse_size(&s);

            if (size == NGX_ERROR || size < 256) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid buffer size \"%V\" (at least "
                                   "256)", &s);
                return NGX_CONF_ERROR;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "flush=", 6) == 0) {
            s.len = value[i].len - 6;
            s.data = value[i].data + 6;

            flush = ngx_parse_time(&s, 0);

            if (flush == (ngx_msec_t) NGX_ERROR || flush == 0) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid flush time \"%V\"", &s);
                return NGX_CONF_ERROR;
            }

            continue;
        }

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid parameter \"%V\"", &value[i]);
        return NGX_CONF_ERROR;
    }

    if (flush && size == 0) {
        return "needs \"buffer=\" for \"flush=\"";
    }

    acf->file = ngx_conf_open_file(cf->cycle, &value[1]);
    if (acf->file == NULL) {
        return NGX_CONF_ERROR;
    }

    if (acf->file->flush && acf->file->flush != ngx_relay_account_flush_file)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\" is another log's file", &value[1]);
        return NGX_CONF_ERROR;
    }

    acf->file->flush = ngx_relay_account_flush_file;
    acf->buffer = (size_t) size;
    acf->flush = flush;

    return NGX_CONF_OK;
}


ngx_int_t
ngx_relay_account_init_process(ngx_relay_account_conf_t *acf,
    ngx_thread_pool_t *tp, ngx_cycle_t *cycle)
{
    ngx_relay_account_t  *a;

    if (acf->file == NULL) {
        return NGX_OK;
    }

    a = ngx_pcalloc(cycle->pool, sizeof(ngx_relay_account_t));
    if (a == NULL) {
        return NGX_ERROR;
    }

    a->task = ngx_thread_task_alloc(cycle->pool, 0);
    if (a->task == NULL) {
        return NGX_ERROR;
    }

    a->file = acf->file;
    a->buffer = acf->buffer;
    a->flush = acf->flush;
    a->thread_pool = tp;
    a->log = cycle->log;
    a->tail = &a->queue;

    a->timer.handler = ngx_relay_account_timer;
    a->timer.data = a;
    a->timer.log = cycle->log;
    a->timer.cancelable = 1;

    ngx_relay_account = a;

    return NGX_OK;
}


/*
 * The worker's end: the thread pool has finished (and written) what it
 * was given; the rest is written now, in order, each chunk to its file.
 */

void
ngx_relay_account_exit_process(void)
{
    ngx_relay_account_t        *a;
    ngx_relay_account_chunk_t  *c;

    a = ngx_relay_account;

    if (a == NULL) {
        return;
    }

    if (a->timer.timer_set) {
        ngx_del_timer(&a->timer);
    }

    ngx_relay_account_seal();

    while (a->queue) {
        c = a->queue;
        a->queue = c->next;

        c->err = ngx_relay_account_write(c->fd != -1 ? c->fd : a->file->fd,
                                         c->data, c->len);

        ngx_relay_metrics_account(c->err ? 0 : c->records,
                                  c->err ? c->records : 0);

        if (c->err) {
            ngx_log_error(NGX_LOG_CRIT, a->log, c->err,
                          "relay accounting log \"%V\": %ui records lost "
                          "at exit", &a->file->name, c->records);
        }

        if (c->fd != -1) {
            (void) close(c->fd);
        }

        ngx_free(c);
    }

    a->tail = &a->queue;
    ngx_relay_account = NULL;
}


/*
 * Before nginx reopens the file: whatever is not yet written belongs to
 * the old file, so it keeps a descriptor of it.  At exit exit_process()
 * writes the rest, once the thread pool is idle.
 */

static void
ngx_relay_account_flush_file(ngx_open_file_t *file, ngx_log_t *log)
{
    ngx_relay_account_t        *a;
    ngx_relay_account_chunk_t  *c;

    a = ngx_relay_account;

    if (a == NULL || a->file != file || ngx_exiting || ngx_quit
        || ngx_terminate)
    {
        return;
    }

    ngx_relay_account_seal();

    for (c = a->queue; c; c = c->next) {
        if (c->fd != -1) {
            continue;
        }

        c->fd = dup(file->fd);

        if (c->fd == -1) {
            c->err = ngx_errno;
        }
    }

    ngx_relay_account_kick();
}


/* ------------------------------------------------------------ events */


void
ngx_relay_account_received(ngx_connection_t *c, ngx_str_t *id,
    ngx_relay_envelope_t *env, off_t size, uint64_t eod)
{
    u_char            *p;
    ngx_str_t          listener, v;
    ngx_uint_t         i;
    ngx_relay_rcpt_t  *r;

    if (c->listening) {
        listener = c->listening->addr_text;

    } else {
        ngx_str_null(&listener);
    }

    ngx_relay_metrics_accepted(&listener, &env->tenant, env->rcpts.nelts,
                               size, eod);

    if (ngx_relay_account_begin("received") != NGX_OK) {
        return;
    }

    ngx_relay_account_str("queue_id", id->data, id->len);
    ngx_relay_account_str("client_ip", env->client.data, env->client.len);
    ngx_relay_account_str("helo", env->helo.data, env->helo.len);

#if (NGX_SSL)
    if (c->ssl && c->ssl->handshaked) {
        p = (u_char *) SSL_get_version(c->ssl->connection);
        ngx_relay_account_str("tls_version", p, ngx_strlen(p));
        p = (u_char *) SSL_get_cipher_name(c->ssl->connection);
        ngx_relay_account_str("tls_cipher", p, ngx_strlen(p));

    } else
#endif
    {
        ngx_relay_account_opt("tls_version", NULL, 0);
        ngx_relay_account_opt("tls_cipher", NULL, 0);
    }

    ngx_relay_account_opt("auth_user", env->auth_user.data,
                          env->auth_user.len);
    ngx_relay_account_opt("tenant", env->tenant.data, env->tenant.len);
    ngx_relay_account_str("sender", env->sender.data, env->sender.len);

    ngx_relay_account_raw(",\"recipients\":[", 15);

    r = env->rcpts.elts;

    for (i = 0; i < env->rcpts.nelts; i++) {
        v = r[i].addr;
        ngx_relay_account_str(i ? "" : NULL, v.data, v.len);
    }

    ngx_relay_account_raw("]", 1);

    ngx_relay_account_uint("size", size);
    ngx_relay_account_str("listener", listener.data, listener.len);

    ngx_relay_account_end();
}


/* one remote recipient's attempt: its outcome, where and how it went */

void
ngx_relay_account_delivery(ngx_relay_sched_t *sc, ngx_relay_queued_t *q,
    ngx_relay_dest_t *dst, ngx_uint_t attempt, ngx_uint_t category)
{
    u_char                        *at;
    ngx_str_t                      domain;
    ngx_uint_t                     outcome;
    ngx_relay_dest_facts_t        *f;
    ngx_relay_relay_parts_t        parts;
    ngx_relay_metrics_delivery_t   md;

    switch (dst->status) {
    case NGX_RELAY_DELIVERY_SENT:
        outcome = NGX_RELAY_OUTCOME_SENT;
        break;
    case NGX_RELAY_DELIVERY_DEFERRED:
        outcome = NGX_RELAY_OUTCOME_DEFERRED;
        break;
    default:
        outcome = dst->expired ? NGX_RELAY_OUTCOME_EXPIRED
                               : NGX_RELAY_OUTCOME_BOUNCED;
    }

    ngx_relay_delivery_relay_parts(dst, &parts);

    ngx_memzero(&md, sizeof(ngx_relay_metrics_delivery_t));

    md.outcome = outcome;
    md.category = category;
    md.throttled = dst->throttled;
    md.pool = parts.pool;
    md.address = parts.egress;
    md.tenant = q->tenant;
    md.arrival = q->arrival;
    md.size = q->message_size;

    at = ngx_strlchr(dst->addr.data, dst->addr.data + dst->addr.len, '@');

    if (at) {
        domain.data = at + 1;
        domain.len = dst->addr.data + dst->addr.len - domain.data;

    } else {
        ngx_str_null(&domain);
    }

    ngx_relay_account_destination(sc->policy, &domain, &md.destination);

    ngx_relay_metrics_delivery(&md);

    if (ngx_relay_account_head(q, &dst->addr, "remote", outcome,
                               (char *) dst->dsn, category)
        != NGX_OK)
    {
        return;
    }

    f = &dst->facts;

    ngx_relay_account_str("destination", md.destination.data,
                          md.destination.len);
    ngx_relay_account_opt("remote_host", parts.host.data, parts.host.len);
    ngx_relay_account_opt("remote_ip", parts.ip.data, parts.ip.len);

    if (parts.port.len) {
        ngx_relay_account_uint("remote_port",
                               ngx_atoi(parts.port.data, parts.port.len));

    } else {
        ngx_relay_account_opt("remote_port", NULL, 0);
    }

    ngx_relay_account_opt("egress_ip", parts.egress.data, parts.egress.len);
    ngx_relay_account_opt("egress_pool", parts.pool.data, parts.pool.len);
    ngx_relay_account_opt("tls_version", f->tls_version,
                          ngx_strlen(f->tls_version));
    ngx_relay_account_opt("tls_cipher", f->tls_cipher,
                          ngx_strlen(f->tls_cipher));
    ngx_relay_account_opt("tls_policy", (u_char *) dst->tls,
                          dst->tls ? ngx_strlen(dst->tls) : 0);
    ngx_relay_account_str("reply", dst->reply, dst->reply_len);
    ngx_relay_account_uint("attempt", attempt);
    ngx_relay_account_printf(64, ",\"reused\":%s,\"throttled\":%s",
                             dst->reused ? "true" : "false",
                             dst->throttled ? "true" : "false");
    ngx_relay_account_uint("size", q->message_size);
    ngx_relay_account_uint("delay_queue",
                           ngx_time() > q->arrival ? ngx_time() - q->arrival
                                                   : 0);
    ngx_relay_account_secs("delay_dns", f->dns);
    ngx_relay_account_secs("delay_connect", f->connect);
    ngx_relay_account_secs("delay_tls", f->tls);
    ngx_relay_account_secs("delay_transfer", f->transfer);

    ngx_relay_account_end();

    if (outcome != NGX_RELAY_OUTCOME_EXPIRED
        || ngx_relay_account_begin("expiry") != NGX_OK)
    {
        return;
    }

    ngx_relay_account_str("queue_id", q->id.data, q->id.len);
    ngx_relay_account_str("recipient", dst->addr.data, dst->addr.len);
    ngx_relay_account_str("sender", q->sender.data, q->sender.len);
    ngx_relay_account_opt("tenant", q->tenant.data, q->tenant.len);
    ngx_relay_account_uint("arrival", q->arrival);
    ngx_relay_account_uint("age", ngx_time() > q->arrival
                                  ? ngx_time() - q->arrival : 0);
    ngx_relay_account_uint("attempts", attempt);
    ngx_relay_account_str("last_error", dst->reply, dst->reply_len);

    ngx_relay_account_end();
}


/* one recipient of a local domain: into its Maildir, or not for now */

void
ngx_relay_account_local(ngx_relay_sched_t *sc, ngx_relay_queued_t *q,
    ngx_relay_queued_rcpt_t *r, ngx_uint_t deferred, const char *reply)
{
    ngx_relay_metrics_delivery_t  md;

    ngx_memzero(&md, sizeof(ngx_relay_metrics_delivery_t));

    md.outcome = deferred ? NGX_RELAY_OUTCOME_DEFERRED
                          : NGX_RELAY_OUTCOME_SENT;
    md.local = 1;
    md.tenant = q->tenant;
    md.arrival = q->arrival;
    md.size = q->message_size;

    ngx_relay_metrics_delivery(&md);

    if (ngx_relay_account_head(q, &r->addr, "local", md.outcome,
                               deferred ? "4.3.0" : "2.0.0",
                               RELAY_CLASS_OTHER)
        != NGX_OK)
    {
        return;
    }

    ngx_relay_account_str("reply", (u_char *) reply, ngx_strlen(reply));
    ngx_relay_account_uint("attempt", q->attempts + 1);
    ngx_relay_account_uint("size", q->message_size);
    ngx_relay_account_uint("delay_queue",
                           ngx_time() > q->arrival ? ngx_time() - q->arrival
                                                   : 0);

    ngx_relay_account_end();
}


void
ngx_relay_account_dsn(ngx_relay_dsn_t *dsn, ngx_str_t *id)
{
    ngx_uint_t           i, n;
    ngx_relay_dest_t    *dst;
    ngx_relay_queued_t  *q;

    static ngx_str_t  kinds[] = {
        ngx_string("failure"), ngx_string("delay"), ngx_string("success")
    };

    ngx_relay_metrics_dsn(dsn->kind);

    if (ngx_relay_account_begin("dsn") != NGX_OK) {
        return;
    }

    q = dsn->queued;

    ngx_relay_account_str("queue_id", q->id.data, q->id.len);
    ngx_relay_account_str("dsn_queue_id", id->data, id->len);
    ngx_relay_account_str("kind", kinds[dsn->kind].data,
                          kinds[dsn->kind].len);
    ngx_relay_account_str("to", q->sender.data, q->sender.len);
    ngx_relay_account_opt("tenant", q->tenant.data, q->tenant.len);

    ngx_relay_account_raw(",\"recipients\":[", 15);

    for (i = 0, n = 0; i < dsn->ndests; i++) {
        dst = &dsn->dests[i];

        if (ngx_relay_dsn_reported(q, dst, dsn->kind)) {
            ngx_relay_account_str(n++ ? "" : NULL, dst->addr.data,
                                  dst->addr.len);
        }
    }

    ngx_relay_account_raw("]", 1);

    ngx_relay_account_end();
}


/* an operator's queue command changed these messages (a note's ids) */

void
ngx_relay_account_operator(const char *action, uint64_t command,
    relay_queue_note_t *note, ngx_uint_t affected)
{
    u_char  *p, *nl, *last;

    ngx_relay_metrics_operator(action, affected);

    if (ngx_relay_account == NULL || note->n == 0) {
        return;
    }

    p = (u_char *) (note->whole ? "*\n" : note->ids);
    last = p + (note->whole ? 2 : note->len);

    for ( /* void */ ; p < last; p = nl + 1) {
        nl = ngx_strlchr(p, last, '\n');
        if (nl == NULL) {
            nl = last;
        }

        if (nl == p || ngx_relay_account_begin("operator") != NGX_OK) {
            continue;
        }

        ngx_relay_account_str("action", (u_char *) action,
                              ngx_strlen(action));
        ngx_relay_account_str("queue_id", p, nl - p);
        ngx_relay_account_str("source", (u_char *) "controld", 8);
        ngx_relay_account_uint("command", command);

        ngx_relay_account_end();
    }
}


/* what every delivery record starts with; its category unless sent */

static ngx_int_t
ngx_relay_account_head(ngx_relay_queued_t *q, ngx_str_t *rcpt,
    const char *class, ngx_uint_t outcome, const char *dsn,
    ngx_uint_t category)
{
    const char  *cat;

    if (ngx_relay_account_begin("delivery") != NGX_OK) {
        return NGX_DECLINED;
    }

    cat = (outcome == NGX_RELAY_OUTCOME_SENT) ? NULL
                                              : relay_classify_name(category);

    ngx_relay_account_str("queue_id", q->id.data, q->id.len);
    ngx_relay_account_str("recipient", rcpt->data, rcpt->len);
    ngx_relay_account_str("sender", q->sender.data, q->sender.len);
    ngx_relay_account_opt("tenant", q->tenant.data, q->tenant.len);
    ngx_relay_account_str("class", (u_char *) class, ngx_strlen(class));
    ngx_relay_account_str("outcome",
                          (u_char *) ngx_relay_account_outcomes[outcome],
                          ngx_strlen(ngx_relay_account_outcomes[outcome]));
    ngx_relay_account_str("dsn", (u_char *) dsn, ngx_strlen(dsn));
    ngx_relay_account_opt("category", (u_char *) cat,
                          cat ? ngx_strlen(cat) : 0);

    return NGX_OK;
}


/*
 * The destination label of a recipient's domain: the pattern of the
 * policy's destination_limit that matches it, else of its route, else
 * "*": bounded by the policy, never the domain itself.
 */

static void
ngx_relay_account_destination(ngx_relay_policy_t *p, ngx_str_t *domain,
    ngx_str_t *pattern)
{
    ngx_relay_route_t       *rt;
    ngx_relay_dest_limit_t  *dl;

    ngx_str_set(pattern, "*");

    if (p == NULL || domain->len == 0) {
        return;
    }

    dl = ngx_relay_policy_dest_limit(p, domain);

    if (dl) {
        *pattern = dl->pattern;
        return;
    }

    rt = ngx_relay_policy_next_hops(p, domain);

    if (rt) {
        *pattern = rt->pattern;
    }
}


/* ------------------------------------------------------------ records */


/* {"type":"...","time":"2026-12-03T10:45:12.345Z" */

static ngx_int_t
ngx_relay_account_begin(const char *type)
{
    u_char               *p;
    ngx_tm_t              tm;
    ngx_time_t           *tp;
    ngx_relay_account_t  *a;

    a = ngx_relay_account;

    if (a == NULL) {
        return NGX_DECLINED;
    }

    a->failed = 0;
    a->record = a->current ? a->current->len : 0;

    if (a->queued > NGX_RELAY_ACCOUNT_MAX_QUEUED) {
        ngx_relay_metrics_account(0, 1);
        ngx_relay_account_lost("the disk does not keep up", 0);
        return NGX_DECLINED;
    }

    p = ngx_relay_account_reserve(64 + ngx_strlen(type));
    if (p == NULL) {
        return NGX_DECLINED;
    }

    tp = ngx_timeofday();
    ngx_gmtime(tp->sec, &tm);

    p = ngx_sprintf(p, "{\"type\":\"%s\",\"time\":\"%4d-%02d-%02dT%02d:%02d:"
                    "%02d.%03MZ\"", type, tm.ngx_tm_year, tm.ngx_tm_mon,
                    tm.ngx_tm_mday, tm.ngx_tm_hour, tm.ngx_tm_min,
                    tm.ngx_tm_sec, tp->msec);

    a->current->len = p - a->current->data;

    return NGX_OK;
}


/*
 * Room for n more octets of the record being made; a new chunk takes the
 * record so far with it, and the full one is sealed.
 */

static u_char *
ngx_relay_account_reserve(size_t n)
{
    size_t                      part, size;
    ngx_relay_account_t        *a;
    ngx_relay_account_chunk_t  *c, *nc;

    a = ngx_relay_account;
    c = a->current;

    if (a->failed) {
        return NULL;
    }

    if (c && c->size - c->len >= n) {
        return c->data + c->len;
    }

    part = c ? c->len - a->record : 0;
    size = ngx_max(a->buffer ? a->buffer : NGX_RELAY_ACCOUNT_CHUNK,
                   part + n + 1024);

    nc = ngx_alloc(sizeof(ngx_relay_account_chunk_t) + size, a->log);
    if (nc == NULL) {
        a->failed = 1;
        ngx_relay_account_lost("out of memory", 0);
        return NULL;
    }

    nc->next = NULL;
    nc->fd = -1;
    nc->err = 0;
    nc->records = 0;
    nc->len = part;
    nc->size = size;

    if (c) {
        ngx_memcpy(nc->data, c->data + a->record, part);
        c->len = a->record;
        ngx_relay_account_seal();
    }

    a->record = 0;
    a->current = nc;

    return nc->data + nc->len;
}


static void
ngx_relay_account_raw(const char *s, size_t len)
{
    u_char  *p;

    p = ngx_relay_account_reserve(len);

    if (p) {
        ngx_memcpy(p, s, len);
        ngx_relay_account->current->len += len;
    }
}


/* ,"key":"value" (key ""): ,"value" (key NULL): "value" */

static void
ngx_relay_account_str(const char *key, u_char *data, size_t len)
{
    u_char  *p;
    size_t   klen;

    klen = key ? ngx_strlen(key) : 0;

    p = ngx_relay_account_reserve(klen + RELAY_JSON_ESCAPED_MAX(len) + 8);
    if (p == NULL) {
        return;
    }

    if (key) {
        *p++ = ',';

        if (klen) {
            *p++ = '"';
            p = ngx_cpymem(p, key, klen);
            *p++ = '"';
            *p++ = ':';
        }
    }

    *p++ = '"';
    p += relay_json_escape(p, data, len);
    *p++ = '"';

    ngx_relay_account->current->len = p - ngx_relay_account->current->data;
}


/* a string, or null when empty */

static void
ngx_relay_account_opt(const char *key, u_char *data, size_t len)
{
    if (data && len) {
        ngx_relay_account_str(key, data, len);
        return;
    }

    ngx_relay_account_printf(ngx_strlen(key) + 16, ",\"%s\":null", key);
}


static void
ngx_relay_account_uint(const char *key, uint64_t n)
{
    ngx_relay_account_printf(ngx_strlen(key) + 32, ",\"%s\":%uL", key, n);
}


static void
ngx_relay_account_secs(const char *key, ngx_msec_t ms)
{
    ngx_relay_account_printf(ngx_strlen(key) + 32, ",\"%s\":%M.%03M", key,
                             ms / 1000, ms % 1000);
}


/* what fmt makes of the arguments, at most max octets */

static void
ngx_relay_account_printf(size_t max, const char *fmt, ...)
{
    u_char   *p;
    va_list   args;

    p = ngx_relay_account_reserve(max);
    if (p == NULL) {
        return;
    }

    va_start(args, fmt);
    p = ngx_vslprintf(p, p + max, fmt, args);
    va_end(args);

    ngx_relay_account->current->len = p - ngx_relay_account->current->data;
}


static void
ngx_relay_account_end(void)
{
    ngx_relay_account_t  *a;

    a = ngx_relay_account;

    ngx_relay_account_raw("}\n", 2);

    if (a->failed) {
        if (a->current) {
            a->current->len = a->record;    /* no half records */
        }

        ngx_relay_metrics_account(0, 1);
        return;
    }

    a->current->records++;

    /* without buffer=: to the thread now, or with the write under way */

    if (a->buffer == 0) {
        if (!a->busy) {
            ngx_relay_account_seal();
            ngx_relay_account_kick();
        }

        return;
    }

    if (a->current->len >= a->buffer) {
        ngx_relay_account_seal();
        ngx_relay_account_kick();
        return;
    }

    if (a->flush && !a->timer.timer_set && !ngx_exiting) {
        ngx_add_timer(&a->timer, a->flush);
    }
}


static void
ngx_relay_account_timer(ngx_event_t *ev)
{
    ngx_relay_account_seal();
    ngx_relay_account_kick();
}


/* ------------------------------------------------------------- writing */


static void
ngx_relay_account_seal(void)
{
    ngx_relay_account_t        *a;
    ngx_relay_account_chunk_t  *c;

    a = ngx_relay_account;
    c = a->current;

    if (c == NULL) {
        return;
    }

    a->current = NULL;
    a->record = 0;

    if (c->len == 0) {
        ngx_free(c);
        return;
    }

    *a->tail = c;
    a->tail = &c->next;
    a->queued += c->len;
}


/* the sealed chunks to the thread, unless a write is under way */

static void
ngx_relay_account_kick(void)
{
    ngx_thread_task_t          *task;
    ngx_relay_account_t        *a;
    ngx_relay_account_chunk_t  *c;

    a = ngx_relay_account;

    if (a->busy || a->queue == NULL) {
        return;
    }

    for (c = a->queue; c; c = c->next) {
        if (c->fd == -1 && c->err == 0) {
            c->fd = dup(a->file->fd);

            if (c->fd == -1) {
                c->err = ngx_errno;
            }
        }
    }

    a->writing = a->queue;
    a->queue = NULL;
    a->tail = &a->queue;

    task = a->task;
    task->ctx = a;
    task->handler = ngx_relay_account_thread;
    task->event.handler = ngx_relay_account_written;
    task->event.data = a;

    if (ngx_thread_task_post(a->thread_pool, task) != NGX_OK) {

        /* back to the front of the queue: the next record tries again */

        for (c = a->writing; c->next; c = c->next) {
            /* void */
        }

        c->next = a->queue;

        if (a->queue == NULL) {
            a->tail = &c->next;
        }

        a->queue = a->writing;
        a->writing = NULL;
        return;
    }

    a->busy = 1;
}


static void
ngx_relay_account_thread(void *data, ngx_log_t *log)
{
    ngx_relay_account_t  *a = data;

    ngx_relay_account_chunk_t  *c;

    for (c = a->writing; c; c = c->next) {
        if (c->err == 0) {
            c->err = ngx_relay_account_write(c->fd, c->data, c->len);
        }

        if (c->fd != -1) {
            (void) close(c->fd);
            c->fd = -1;
        }
    }
}


static void
ngx_relay_account_written(ngx_event_t *ev)
{
    ngx_relay_account_t  *a = ev->data;

    ngx_relay_account_chunk_t  *c;

    a->busy = 0;

    while (a->writing) {
        c = a->writing;
        a->writing = c->next;
        a->queued -= c->len;

        ngx_relay_metrics_account(c->err ? 0 : c->records,
                                  c->err ? c->records : 0);

        if (c->err) {
            ngx_relay_account_lost("write failed", c->err);
        }

        ngx_free(c);
    }

    if (a->buffer == 0) {
        ngx_relay_account_seal();
    }

    ngx_relay_account_kick();
}


static ngx_err_t
ngx_relay_account_write(ngx_fd_t fd, u_char *p, size_t n)
{
    ssize_t  rc;

    while (n) {
        rc = write(fd, p, n);

        if (rc == -1) {
            if (errno == EINTR) {
                continue;
            }

            return errno;
        }

        p += rc;
        n -= rc;
    }

    return 0;
}


/* at most one line a minute about records lost */

static void
ngx_relay_account_lost(const char *why, ngx_err_t err)
{
    ngx_relay_account_t  *a;

    a = ngx_relay_account;

    if (ngx_time() - a->warned < 60) {
        return;
    }

    a->warned = ngx_time();

    ngx_log_error(NGX_LOG_CRIT, a->log, err,
                  "relay accounting log \"%V\": records lost: %s",
                  &a->file->name, why);
}
