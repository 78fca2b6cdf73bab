
/*
 * Copyright (C) The relay authors
 */


/*
 * The Redis client of a worker: one connection, on nginx's event loop,
 * that runs one Lua script (ngx_relay_redis_eval()) for the fleet's
 * counters.  hiredis (Debian's 0.14) speaks the protocol through its
 * asynchronous API; this file is its adapter to nginx events, as
 * hiredis's adapters/libev.h is to libev.  The worker never waits on
 * Redis: a command's answer comes back through a posted event, or its
 * timer says it is late.
 *
 * The adapter.  hiredis owns the socket: it connects without blocking
 * (the address is numeric, resolved when nginx.conf was read), reads,
 * writes and closes.  The socket is wrapped in an nginx connection whose
 * read and write events hiredis turns on and off through the hooks
 * (addRead, delRead, addWrite, delWrite, cleanup); they are
 * level-triggered (NGX_LEVEL_EVENT), since hiredis reads at most 16 KB
 * per event and writes until its buffer is empty, as its own adapters
 * expect.  A write asked for on a connected socket is a posted event:
 * the commands of one turn of the loop go out in one write(), and epoll
 * is asked only when the socket is full.  cleanup runs before hiredis closes the socket: the events go,
 * the connection goes back to nginx with fd -1 so that a pending event of
 * the same epoll round sees it stale.
 *
 * States of the connection:
 *
 *   down --(timer)--> connecting --(AUTH, SELECT, SCRIPT LOAD answered)--> up
 *   up --(a command timed out)--> suspect --(PING answered)--> up
 *   connecting | up | suspect --(error, close, no answer in time)--> down
 *
 * Only "up" takes commands: in the other states the caller's fallback
 * decides at once, so that a Redis that is away costs a session nothing,
 * and one that is slow costs one timeout, not one per message.  From
 * "down" the next connection is tried after a backoff (100 ms doubling
 * to 5 s), on the next address of the list when there are several.  A
 * warn line says when Redis goes away (or cannot be reached at start), a
 * notice when it is back; nothing in between.
 *
 * Answers never call their handler from inside hiredis: the reply is
 * copied, the request's event posted, and the handler runs after hiredis
 * has returned (a handler may send the next command).  A request is freed
 * when both hiredis has given it back (answer, or NULL when the
 * connection went) and its handler has run (answer, or timeout).
 *
 * No TLS: hiredis 0.14 has none (it came with hiredis 1.0); AUTH with a
 * password, and an ACL user (Redis 6 and later), is supported.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>
#include <ngx_relay_redis.h>

#include <hiredis/hiredis.h>
#include <hiredis/async.h>


#define NGX_RELAY_REDIS_BACKOFF_MIN  100
#define NGX_RELAY_REDIS_BACKOFF_MAX  5000
#define NGX_RELAY_REDIS_PROBE_MIN    1000


typedef enum {
    ngx_relay_redis_st_down = 0,
    ngx_relay_redis_st_connecting,
    ngx_relay_redis_st_up,
    ngx_relay_redis_st_suspect
} ngx_relay_redis_state_e;


static const char  *ngx_relay_redis_state_names[] = {
    "down",
    "connecting",
    "up",
    "suspect"
};


typedef struct {
    ngx_event_t                  ev;           /* the timer, then posted */
    ngx_relay_redis_handler_pt   handler;
    void                        *data;
    ngx_relay_redis_result_t     res;
    unsigned                     answered:1;   /* hiredis gave it back */
    unsigned                     finished:1;   /* the handler ran */
} ngx_relay_redis_req_t;


typedef struct {
    ngx_relay_redis_conf_t      *conf;
    ngx_log_t                   *log;
    ngx_str_t                    script;
    redisAsyncContext           *ac;
    ngx_connection_t            *connection;
    ngx_relay_redis_state_e      state;
    ngx_uint_t                   addr;         /* in use, or next */
    ngx_msec_t                   backoff;
    ngx_msec_t                   probe_time;
    ngx_event_t                  reconnect;
    ngx_event_t                  probe;        /* connect or PING timeout */
    u_char                       sha[41];
    u_char                       why[128];     /* of the last close */
    unsigned                     away:1;       /* said so; not yet back */
    unsigned                     refused:1;    /* the handshake failed */
    unsigned                     writing:1;    /* in the write handler */
} ngx_relay_redis_t;


static void ngx_relay_redis_enter(ngx_relay_redis_state_e state);
static void ngx_relay_redis_connect(ngx_event_t *ev);
static void ngx_relay_redis_connected(const redisAsyncContext *ac,
    int status);
static void ngx_relay_redis_disconnected(const redisAsyncContext *ac,
    int status);
static void ngx_relay_redis_handshake(redisAsyncContext *ac, void *r,
    void *privdata);
static void ngx_relay_redis_pong(redisAsyncContext *ac, void *r,
    void *privdata);
static void ngx_relay_redis_suspect(void);
static void ngx_relay_redis_probe_handler(ngx_event_t *ev);
static void ngx_relay_redis_close(const char *why, size_t len);
static void ngx_relay_redis_lost(void);
static void ngx_relay_redis_reply(redisAsyncContext *ac, void *r,
    void *privdata);
static void ngx_relay_redis_done(ngx_event_t *ev);

static void ngx_relay_redis_event(ngx_event_t *ev, ngx_uint_t event,
    ngx_uint_t on);
static void ngx_relay_redis_add_read(void *privdata);
static void ngx_relay_redis_del_read(void *privdata);
static void ngx_relay_redis_add_write(void *privdata);
static void ngx_relay_redis_del_write(void *privdata);
static void ngx_relay_redis_cleanup(void *privdata);
static void ngx_relay_redis_read_handler(ngx_event_t *ev);
static void ngx_relay_redis_write_handler(ngx_event_t *ev);


static ngx_relay_redis_t  *ngx_relay_redis;


/* the handshake's commands, as their callbacks' privdata */

static char  ngx_relay_redis_auth_tag[] = "AUTH";
static char  ngx_relay_redis_select_tag[] = "SELECT";
static char  ngx_relay_redis_load_tag[] = "SCRIPT LOAD";


char *
ngx_relay_redis_add_addr(ngx_conf_t *cf, ngx_relay_redis_conf_t *rc,
    ngx_str_t *value)
{
    ngx_url_t                u;
    ngx_relay_redis_addr_t  *a;

    if (rc->addrs == NULL) {
        rc->addrs = ngx_array_create(cf->pool, 2,
                                     sizeof(ngx_relay_redis_addr_t));
        if (rc->addrs == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    a = ngx_array_push(rc->addrs);
    if (a == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memzero(a, sizeof(ngx_relay_redis_addr_t));
    a->name = *value;

    if (value->len > 5 && ngx_strncmp(value->data, "unix:", 5) == 0) {
        if (value->len - 5 > NGX_SOCKADDR_STRLEN) {
            return "has a socket path too long";
        }

        ngx_memcpy(a->host, value->data + 5, value->len - 5);
        return NGX_CONF_OK;
    }

    /* resolved now: hiredis would resolve a name with a blocking call */

    ngx_memzero(&u, sizeof(ngx_url_t));

    u.url = *value;
    u.default_port = 6379;

    if (ngx_parse_url(cf->pool, &u) != NGX_OK) {
        if (u.err) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "%s in Redis address \"%V\"", u.err, value);
        }

        return NGX_CONF_ERROR;
    }

    if (u.naddrs == 0) {
        return "needs an address";
    }

    (void) ngx_sock_ntop(u.addrs[0].sockaddr, u.addrs[0].socklen, a->host,
                         NGX_SOCKADDR_STRLEN, 0);
    a->port = u.port;

    return NGX_CONF_OK;
}


ngx_int_t
ngx_relay_redis_init_process(ngx_relay_redis_conf_t *rc, ngx_str_t *script,
    ngx_log_t *log)
{
    ngx_relay_redis_t  *r;

    if (rc->addrs == NULL) {
        return NGX_OK;
    }

    r = ngx_calloc(sizeof(ngx_relay_redis_t), log);
    if (r == NULL) {
        return NGX_ERROR;
    }

    r->conf = rc;
    r->log = log;
    r->script = *script;
    r->backoff = NGX_RELAY_REDIS_BACKOFF_MIN;
    r->probe_time = ngx_max(rc->timeout * 10, NGX_RELAY_REDIS_PROBE_MIN);

    r->reconnect.handler = ngx_relay_redis_connect;
    r->reconnect.log = log;
    r->reconnect.cancelable = 1;

    r->probe.handler = ngx_relay_redis_probe_handler;
    r->probe.log = log;
    r->probe.cancelable = 1;

    ngx_relay_redis = r;

    ngx_relay_redis_connect(&r->reconnect);

    return NGX_OK;
}


void
ngx_relay_redis_exit_process(void)
{
    ngx_relay_redis_t  *r;

    r = ngx_relay_redis;

    if (r == NULL) {
        return;
    }

    if (r->reconnect.timer_set) {
        ngx_del_timer(&r->reconnect);
    }

    if (r->probe.timer_set) {
        ngx_del_timer(&r->probe);
    }

    if (r->ac) {
        ngx_str_set(&r->script, "");        /* nothing more is sent */
        ngx_relay_redis_close("worker exits", sizeof("worker exits") - 1);
    }

    ngx_relay_redis = NULL;
    ngx_free(r);
}


ngx_uint_t
ngx_relay_redis_ready(void)
{
    return ngx_relay_redis && ngx_relay_redis->state == ngx_relay_redis_st_up;
}


static void
ngx_relay_redis_enter(ngx_relay_redis_state_e state)
{
    ngx_relay_redis_t  *r;

    r = ngx_relay_redis;

    ngx_log_debug2(NGX_LOG_DEBUG_EVENT, r->log, 0, "relay redis: %s -> %s",
                   ngx_relay_redis_state_names[r->state],
                   ngx_relay_redis_state_names[state]);

    r->state = state;
}


/* a new connection, with AUTH, SELECT and SCRIPT LOAD pipelined */

static void
ngx_relay_redis_connect(ngx_event_t *ev)
{
    const char              *argv[4];
    size_t                   argvlen[4];
    int                      argc;
    u_char                   db[NGX_INT_T_LEN];
    ngx_connection_t        *c;
    redisAsyncContext       *ac;
    ngx_relay_redis_t       *r;
    ngx_relay_redis_addr_t  *a;

    r = ngx_relay_redis;
    a = (ngx_relay_redis_addr_t *) r->conf->addrs->elts + r->addr;

    ac = a->port ? redisAsyncConnect((char *) a->host, a->port)
                 : redisAsyncConnectUnix((char *) a->host);

    if (ac == NULL) {
        ngx_relay_redis_close("out of memory", sizeof("out of memory") - 1);
        return;
    }

    if (ac->err) {
        r->ac = ac;
        ngx_relay_redis_close(ac->errstr, ngx_strlen(ac->errstr));
        return;
    }

    c = ngx_get_connection(ac->c.fd, r->log);
    if (c == NULL) {
        r->ac = ac;
        ngx_relay_redis_close("no free connection",
                              sizeof("no free connection") - 1);
        return;
    }

    c->data = ac;
    c->log = r->log;
    c->read->log = r->log;
    c->write->log = r->log;
    c->read->handler = ngx_relay_redis_read_handler;
    c->write->handler = ngx_relay_redis_write_handler;

    ac->data = r;
    ac->ev.data = c;
    ac->ev.addRead = ngx_relay_redis_add_read;
    ac->ev.delRead = ngx_relay_redis_del_read;
    ac->ev.addWrite = ngx_relay_redis_add_write;
    ac->ev.delWrite = ngx_relay_redis_del_write;
    ac->ev.cleanup = ngx_relay_redis_cleanup;

    r->ac = ac;
    r->connection = c;

    (void) redisAsyncSetConnectCallback(ac, ngx_relay_redis_connected);
    (void) redisAsyncSetDisconnectCallback(ac, ngx_relay_redis_disconnected);

    ngx_relay_redis_enter(ngx_relay_redis_st_connecting);
    r->refused = 0;

    if (r->conf->password.len) {
        argc = 0;
        argv[argc] = "AUTH";
        argvlen[argc++] = 4;

        if (r->conf->user.len) {
            argv[argc] = (char *) r->conf->user.data;
            argvlen[argc++] = r->conf->user.len;
        }

        argv[argc] = (char *) r->conf->password.data;
        argvlen[argc++] = r->conf->password.len;

        (void) redisAsyncCommandArgv(ac, ngx_relay_redis_handshake,
                                     ngx_relay_redis_auth_tag, argc, argv,
                                     argvlen);
    }

    if (r->conf->database) {
        argv[0] = "SELECT";
        argvlen[0] = 6;
        argv[1] = (char *) db;
        argvlen[1] = ngx_sprintf(db, "%i", r->conf->database) - db;

        (void) redisAsyncCommandArgv(ac, ngx_relay_redis_handshake,
                                     ngx_relay_redis_select_tag, 2, argv,
                                     argvlen);
    }

    argv[0] = "SCRIPT";
    argvlen[0] = 6;
    argv[1] = "LOAD";
    argvlen[1] = 4;
    argv[2] = (char *) r->script.data;
    argvlen[2] = r->script.len;

    if (redisAsyncCommandArgv(ac, ngx_relay_redis_handshake,
                              ngx_relay_redis_load_tag, 3, argv, argvlen)
        != REDIS_OK)
    {
        ngx_relay_redis_close("cannot send", sizeof("cannot send") - 1);
        return;
    }

    ngx_add_timer(&r->probe, r->probe_time);
}


static void
ngx_relay_redis_connected(const redisAsyncContext *ac, int status)
{
    ngx_relay_redis_t  *r;

    r = ngx_relay_redis;

    if (r == NULL || ac != r->ac || status == REDIS_OK) {
        return;
    }

    /* hiredis frees the context when this returns */

    ngx_cpystrn(r->why, (u_char *) ac->errstr, sizeof(r->why));
    r->ac = NULL;
    ngx_relay_redis_lost();
}


static void
ngx_relay_redis_disconnected(const redisAsyncContext *ac, int status)
{
    ngx_relay_redis_t  *r;

    r = ngx_relay_redis;

    if (r == NULL || ac != r->ac) {
        return;
    }

    if (status == REDIS_OK) {
        if (r->why[0] == '\0') {
            ngx_cpystrn(r->why, (u_char *) "closed", sizeof(r->why));
        }

    } else {
        ngx_cpystrn(r->why, (u_char *) (ac->errstr[0] ? ac->errstr
                                                       : "connection lost"),
                    sizeof(r->why));
    }

    r->ac = NULL;
    ngx_relay_redis_lost();
}


static void
ngx_relay_redis_handshake(redisAsyncContext *ac, void *reply, void *privdata)
{
    size_t                   n;
    redisReply              *rp;
    ngx_relay_redis_t       *r;
    ngx_relay_redis_addr_t  *a;

    r = ngx_relay_redis;
    rp = reply;

    if (r == NULL || ac != r->ac || rp == NULL || r->refused) {
        return;                        /* the connection goes: lost() */
    }

    if (rp->type == REDIS_REPLY_ERROR) {
        r->refused = 1;                /* the first error says why */
        (void) ngx_snprintf(r->why, sizeof(r->why) - 1, "%s: %*s%Z",
                            (char *) privdata, (size_t) rp->len, rp->str);
        redisAsyncDisconnect(ac);      /* disconnected() follows */
        return;
    }

    if (privdata != ngx_relay_redis_load_tag) {
        return;
    }

    n = ngx_min((size_t) rp->len, sizeof(r->sha) - 1);

    if (rp->type != REDIS_REPLY_STRING || n != 40) {
        r->refused = 1;
        ngx_cpystrn(r->why, (u_char *) "SCRIPT LOAD: not a SHA1",
                    sizeof(r->why));
        redisAsyncDisconnect(ac);
        return;
    }

    ngx_memcpy(r->sha, rp->str, n);
    r->sha[n] = '\0';

    if (r->state != ngx_relay_redis_st_connecting) {
        return;                        /* loaded again after NOSCRIPT */
    }

    if (r->probe.timer_set) {
        ngx_del_timer(&r->probe);
    }

    r->backoff = NGX_RELAY_REDIS_BACKOFF_MIN;
    r->why[0] = '\0';

    ngx_relay_redis_enter(ngx_relay_redis_st_up);

    a = (ngx_relay_redis_addr_t *) r->conf->addrs->elts + r->addr;

    if (r->away) {
        r->away = 0;
        ngx_log_error(NGX_LOG_NOTICE, r->log, 0,
                      "relay limits: redis %V is back, fleet limits count "
                      "there again", &a->name);

    } else {
        ngx_log_error(NGX_LOG_INFO, r->log, 0,
                      "relay limits: redis %V connected", &a->name);
    }
}


/* a command was late: is the server still there? */

static void
ngx_relay_redis_suspect(void)
{
    ngx_relay_redis_t  *r;

    r = ngx_relay_redis;

    if (r->state != ngx_relay_redis_st_up) {
        return;
    }

    if (redisAsyncCommand(r->ac, ngx_relay_redis_pong, NULL, "PING")
        != REDIS_OK)
    {
        return;
    }

    ngx_relay_redis_enter(ngx_relay_redis_st_suspect);
    ngx_add_timer(&r->probe, r->probe_time);
}


static void
ngx_relay_redis_pong(redisAsyncContext *ac, void *reply, void *privdata)
{
    ngx_relay_redis_t  *r;

    r = ngx_relay_redis;

    if (r == NULL || ac != r->ac || reply == NULL
        || r->state != ngx_relay_redis_st_suspect)
    {
        return;
    }

    if (r->probe.timer_set) {
        ngx_del_timer(&r->probe);
    }

    ngx_relay_redis_enter(ngx_relay_redis_st_up);
}


/* no handshake, or no PONG, in time */

static void
ngx_relay_redis_probe_handler(ngx_event_t *ev)
{
    u_char              buf[64], *p;
    ngx_relay_redis_t  *r;

    r = ngx_relay_redis;

    p = ngx_snprintf(buf, sizeof(buf), "no answer within %M ms",
                     r->probe_time);

    ngx_relay_redis_close((char *) buf, p - buf);
}


/* closes the connection now (outside hiredis's callbacks) */

static void
ngx_relay_redis_close(const char *why, size_t len)
{
    redisAsyncContext  *ac;
    ngx_relay_redis_t  *r;

    r = ngx_relay_redis;

    len = ngx_min(len, sizeof(r->why) - 1);
    ngx_memcpy(r->why, why, len);
    r->why[len] = '\0';

    ac = r->ac;
    r->ac = NULL;

    if (ac) {
        redisAsyncFree(ac);            /* the callbacks see r->ac NULL */
    }

    ngx_relay_redis_lost();
}


/* the connection is gone: say so once, and try again later */

static void
ngx_relay_redis_lost(void)
{
    ngx_uint_t               was;
    ngx_relay_redis_t       *r;
    ngx_relay_redis_addr_t  *a;

    r = ngx_relay_redis;
    a = (ngx_relay_redis_addr_t *) r->conf->addrs->elts + r->addr;

    was = r->state;
    r->connection = NULL;

    if (r->probe.timer_set) {
        ngx_del_timer(&r->probe);
    }

    ngx_relay_redis_enter(ngx_relay_redis_st_down);

    if (r->script.len == 0) {
        return;                        /* the worker exits */
    }

    if (!r->away) {
        r->away = 1;
        ngx_log_error(NGX_LOG_WARN, r->log, 0,
                      "relay limits: redis %V %s (%s), fleet limits count "
                      "by relay_limit_redis_fallback until it is back",
                      &a->name,
                      (was == ngx_relay_redis_st_up
                       || was == ngx_relay_redis_st_suspect)
                      ? "went away" : "cannot be reached",
                      r->why);

    } else {
        ngx_log_debug2(NGX_LOG_DEBUG_EVENT, r->log, 0,
                       "relay limits: redis %V: %s", &a->name, r->why);
    }

    r->addr = (r->addr + 1) % r->conf->addrs->nelts;

    if (!r->reconnect.timer_set) {
        ngx_add_timer(&r->reconnect, r->backoff);
    }

    r->backoff = ngx_min(r->backoff * 2, NGX_RELAY_REDIS_BACKOFF_MAX);
}


ngx_int_t
ngx_relay_redis_eval(ngx_str_t *args, ngx_uint_t nargs, ngx_uint_t nkeys,
    ngx_relay_redis_handler_pt handler, void *data, ngx_log_t *log)
{
    u_char                  nk[NGX_INT_T_LEN];
    ngx_uint_t              i;
    ngx_relay_redis_t      *r;
    ngx_relay_redis_req_t  *req;

    static const char      *argv[NGX_RELAY_REDIS_MAX_ARGS + 3];
    static size_t           argvlen[NGX_RELAY_REDIS_MAX_ARGS + 3];

    r = ngx_relay_redis;

    if (!ngx_relay_redis_ready() || nargs > NGX_RELAY_REDIS_MAX_ARGS) {
        return NGX_DECLINED;
    }

    req = ngx_calloc(sizeof(ngx_relay_redis_req_t), log);
    if (req == NULL) {
        return NGX_DECLINED;
    }

    argv[0] = "EVALSHA";
    argvlen[0] = 7;
    argv[1] = (char *) r->sha;
    argvlen[1] = 40;
    argv[2] = (char *) nk;
    argvlen[2] = ngx_sprintf(nk, "%ui", nkeys) - nk;

    for (i = 0; i < nargs; i++) {
        argv[i + 3] = (char *) args[i].data;
        argvlen[i + 3] = args[i].len;
    }

    /* hiredis copies the command into its buffer now */

    if (redisAsyncCommandArgv(r->ac, ngx_relay_redis_reply, req,
                              (int) nargs + 3, argv, argvlen)
        != REDIS_OK)
    {
        ngx_free(req);
        return NGX_DECLINED;
    }

    req->handler = handler;
    req->data = data;
    req->ev.handler = ngx_relay_redis_done;
    req->ev.data = req;
    req->ev.log = log;

    ngx_add_timer(&req->ev, r->conf->timeout);

    return NGX_AGAIN;
}


static void
ngx_relay_redis_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    size_t                  i;
    redisReply             *rp, *e;
    ngx_relay_redis_t      *r;
    ngx_relay_redis_req_t  *req;

    r = ngx_relay_redis;
    rp = reply;
    req = privdata;

    req->answered = 1;

    if (req->finished) {
        ngx_free(req);                 /* too late: the handler timed out */
        return;
    }

    req->res.rc = NGX_OK;

    if (rp == NULL) {
        req->res.rc = NGX_DECLINED;

    } else if (rp->type == REDIS_REPLY_ERROR) {
        req->res.rc = NGX_ERROR;
        (void) ngx_snprintf(req->res.err, sizeof(req->res.err) - 1, "%*s%Z",
                            (size_t) rp->len, rp->str);

        /*
         * NOSCRIPT: the script cache was flushed; load it again for the
         * next commands.  READONLY: a replica; the next address may be
         * the primary.
         */

        if (r && ac == r->ac) {
            if (ngx_strncmp(rp->str, "NOSCRIPT", 8) == 0) {
                (void) redisAsyncCommand(ac, ngx_relay_redis_handshake,
                                         ngx_relay_redis_load_tag,
                                         "SCRIPT LOAD %b", r->script.data,
                                         r->script.len);

            } else if (ngx_strncmp(rp->str, "READONLY", 8) == 0
                       || ngx_strncmp(rp->str, "LOADING", 7) == 0)
            {
                (void) ngx_snprintf(r->why, sizeof(r->why) - 1, "%*s%Z",
                                    (size_t) rp->len, rp->str);
                redisAsyncDisconnect(ac);
            }
        }

    } else if (rp->type == REDIS_REPLY_INTEGER) {
        req->res.n = 1;
        req->res.v[0] = rp->integer;

    } else if (rp->type == REDIS_REPLY_ARRAY) {
        for (i = 0; i < rp->elements && i < NGX_RELAY_REDIS_MAX_INTS; i++) {
            e = rp->element[i];
            req->res.v[i] = (e->type == REDIS_REPLY_INTEGER) ? e->integer : 0;
        }

        req->res.n = i;

    } else {
        req->res.rc = NGX_ERROR;
        ngx_cpystrn(req->res.err, (u_char *) "unexpected reply type",
                    sizeof(req->res.err));
    }

    if (req->ev.timer_set) {
        ngx_del_timer(&req->ev);
    }

    ngx_post_event(&req->ev, &ngx_posted_events);
}


static void
ngx_relay_redis_done(ngx_event_t *ev)
{
    ngx_relay_redis_req_t  *req;

    req = ev->data;

    if (ev->timedout) {
        ev->timedout = 0;
        req->res.rc = NGX_DECLINED;
        ngx_cpystrn(req->res.err, (u_char *) "timed out",
                    sizeof(req->res.err));

        ngx_log_error(NGX_LOG_INFO, ev->log, 0,
                      "relay limits: redis did not answer within "
                      "relay_limit_redis_timeout");

        if (ngx_relay_redis) {
            ngx_relay_redis_suspect();
        }

    } else if (req->res.rc == NGX_DECLINED && req->res.err[0] == '\0') {
        ngx_cpystrn(req->res.err, (u_char *) "connection lost",
                    sizeof(req->res.err));
    }

    req->finished = 1;

    req->handler(&req->res, req->data);

    if (req->answered) {
        ngx_free(req);
    }
}


/* ------------------------------------------------- the adapter's hooks */


/* level-triggered: hiredis reads 16 KB an event, writes until done */

static void
ngx_relay_redis_event(ngx_event_t *ev, ngx_uint_t event, ngx_uint_t on)
{
    if (!on) {
        if (ev->active) {
            (void) ngx_del_event(ev, event, 0);
        }

        return;
    }

    if (!ev->active
        && ngx_add_event(ev, event, NGX_LEVEL_EVENT) != NGX_OK)
    {
        ngx_log_error(NGX_LOG_ALERT, ev->log, 0,
                      "relay redis: cannot add an event");
    }
}


static void
ngx_relay_redis_add_read(void *privdata)
{
    ngx_connection_t  *c = privdata;

    ngx_relay_redis_event(c->read, NGX_READ_EVENT, 1);
}


static void
ngx_relay_redis_del_read(void *privdata)
{
    ngx_connection_t  *c = privdata;

    ngx_relay_redis_event(c->read, NGX_READ_EVENT, 0);
}


/*
 * A command to send: once connected, it goes out at the end of this turn
 * of the event loop, with every command queued until then, without
 * asking epoll; only a socket that is full waits for the write event.
 */

static void
ngx_relay_redis_add_write(void *privdata)
{
    ngx_connection_t   *c = privdata;
    redisAsyncContext  *ac;

    ac = c->data;

    if (c->write->posted || c->write->active) {
        return;
    }

    if ((ac->c.flags & REDIS_CONNECTED) && !ngx_relay_redis->writing) {
        ngx_post_event(c->write, &ngx_posted_events);
        return;
    }

    ngx_relay_redis_event(c->write, NGX_WRITE_EVENT, 1);
}


static void
ngx_relay_redis_del_write(void *privdata)
{
    ngx_connection_t  *c = privdata;

    if (c->write->posted) {
        ngx_delete_posted_event(c->write);
    }

    ngx_relay_redis_event(c->write, NGX_WRITE_EVENT, 0);
}


/* before hiredis closes the socket: the connection goes back to nginx */

static void
ngx_relay_redis_cleanup(void *privdata)
{
    ngx_connection_t  *c = privdata;

    ngx_relay_redis_del_read(c);
    ngx_relay_redis_del_write(c);

    if (c->read->posted) {
        ngx_delete_posted_event(c->read);
    }

    if (c->write->posted) {
        ngx_delete_posted_event(c->write);
    }

    if (ngx_relay_redis && ngx_relay_redis->connection == c) {
        ngx_relay_redis->connection = NULL;
    }

    ngx_free_connection(c);

    c->fd = (ngx_socket_t) -1;
}


static void
ngx_relay_redis_read_handler(ngx_event_t *ev)
{
    ngx_connection_t  *c = ev->data;

    redisAsyncHandleRead(c->data);     /* may free c */
}


static void
ngx_relay_redis_write_handler(ngx_event_t *ev)
{
    ngx_connection_t   *c = ev->data;
    ngx_relay_redis_t  *r;

    r = ngx_relay_redis;

    r->writing = 1;
    redisAsyncHandleWrite(c->data);    /* may free c */
    r->writing = 0;
}
