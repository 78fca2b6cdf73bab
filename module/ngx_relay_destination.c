
/*
 * Copyright (C) The relay authors
 */


/*
 * Destinations: a recipient domain within an egress pool (the domain
 * alone when the message has no pool), as this worker sees it.  Here is
 * decided when a delivery may run, over which connection and from which
 * source address; this file never speaks SMTP (the SMTP client does) and
 * never picks a host (the route does).
 *
 * Concurrency: at most relay_destination_concurrency deliveries of a
 * destination run at once in a worker; the others wait, in order, and
 * start when one ends (never failed for it).  Idle connections of a
 * destination plus its running deliveries stay within the same limit.
 *
 * Connection reuse: when a delivery has nothing more for a host, its
 * connection (unless a transaction was cut off midway) goes to the
 * destination's idle connections.  A delivery takes a cached connection
 * to one of the domain's own hosts before any DNS lookup, or one to the
 * host it is about to connect to, and only one that met the destination's
 * TLS policy.  Idle connections close with QUIT after
 * relay_connection_idle_timeout, after relay_connection_reuse_limit
 * messages, when the server closes or says anything, and when the worker
 * exits (their timers are cancelable, and c->idle lets nginx close them at
 * a graceful shutdown).
 *
 * Shaping, shared by the workers (ngx_relay_limits.c): connections open,
 * connections and messages a minute or an hour, and a slow mode after a
 * reply asked for it; relay_destination_limit (or the fleet's
 * destination_limit) sets them, and the concurrency and reuse limits.
 * With scope=fleet the messages a minute and an hour count in Redis,
 * shared by every node, per pool or per source address of the pool: then
 * the delivery keeps to the address it was counted on (its new
 * connections bind to it, and only cached connections from it serve).
 *
 * Egress: the pool of the message (its source addresses in a weighted
 * random order, and its EHLO name); an address that cannot be bound is
 * passed over for the next.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>
#include <ngx_relay_destination.h>
#include <ngx_relay_metrics.h>


static ngx_int_t ngx_relay_destination_pool(ngx_relay_destination_ctx_t *ds,
    ngx_relay_egress_pool_t *ep, ngx_str_t *domain);
static void ngx_relay_destination_limits(ngx_relay_destination_ctx_t *ds,
    ngx_relay_dest_limit_t *dl);
static ngx_relay_destination_t *ngx_relay_destination_get(ngx_queue_t *dests,
    ngx_str_t *name, ngx_log_t *log);
static void ngx_relay_destination_free(ngx_relay_destination_t *dest);
static void ngx_relay_destination_wake(ngx_event_t *ev);
static void ngx_relay_destination_take(ngx_relay_smtp_conn_t *sc);
static void ngx_relay_destination_idle_handler(ngx_event_t *ev);
static void ngx_relay_destination_idle_write_handler(ngx_event_t *ev);
static void ngx_relay_destination_fleet_done(ngx_relay_shape_check_t *sc);
static void ngx_relay_destination_fleet_counted(
    ngx_relay_destination_ctx_t *ds);


/*
 * What the policy says about a delivery besides its hops: the egress pool
 * of the message and the destination's limits.  Concurrency, reuse and
 * cached connections count per pool and domain.
 */

ngx_int_t
ngx_relay_destination_init(ngx_relay_destination_ctx_t *ds,
    ngx_relay_policy_t *p, ngx_relay_queued_t *q, ngx_str_t *domain)
{
    ngx_relay_dest_limit_t   *dl;
    ngx_relay_egress_pool_t  *ep;

    ds->id = &q->id;
    ds->zone = p->limits_zone;
    ds->key = *domain;
    ds->domain = *domain;
    ds->limits = &p->limits;

    ep = ngx_relay_policy_egress(p, &q->sender, &q->auth, &q->tenant);

    if (ep && ngx_relay_destination_pool(ds, ep, domain) != NGX_OK) {
        return NGX_ERROR;
    }

    dl = ngx_relay_policy_dest_limit(p, domain);

    if (dl == NULL) {
        return NGX_OK;
    }

    ngx_relay_destination_limits(ds, dl);

    ds->fleet = (dl->scope == NGX_RELAY_LIMIT_FLEET);
    ds->per_address = dl->per_address;

    if (dl->backoff_reply.len) {
        ds->backoff_reply.data = ngx_pstrdup(ds->pool, &dl->backoff_reply);
        if (ds->backoff_reply.data == NULL) {
            return NGX_ERROR;
        }

        ds->backoff_reply.len = dl->backoff_reply.len;
    }

    return NGX_OK;
}


/* the pool's source addresses, in a weighted random order, and its name */

static ngx_int_t
ngx_relay_destination_pool(ngx_relay_destination_ctx_t *ds,
    ngx_relay_egress_pool_t *ep, ngx_str_t *domain)
{
    u_char                   *k;
    ngx_uint_t                i, n, order[NGX_RELAY_EGRESS_MAX];
    ngx_relay_egress_addr_t  *a;

    ds->egress_pool.data = ngx_pstrdup(ds->pool, &ep->name);
    ds->ehlo.data = ngx_pstrdup(ds->pool, &ep->ehlo);
    ds->egress = ngx_palloc(ds->pool, ep->addrs.nelts * sizeof(ngx_addr_t));
    k = ngx_pnalloc(ds->pool, ep->name.len + 1 + domain->len);

    if (ds->egress_pool.data == NULL || ds->ehlo.data == NULL
        || ds->egress == NULL || k == NULL)
    {
        return NGX_ERROR;
    }

    ds->egress_pool.len = ep->name.len;
    ds->ehlo.len = ep->ehlo.len;

    n = ngx_relay_egress_order(ep, order);
    a = ep->addrs.elts;

    for (i = 0; i < n; i++) {
        ds->egress[i].socklen = a[order[i]].addr.socklen;
        ds->egress[i].sockaddr = ngx_palloc(ds->pool,
                                            a[order[i]].addr.socklen);
        ds->egress[i].name.data = ngx_pstrdup(ds->pool,
                                              &a[order[i]].addr.name);
        ds->egress[i].name.len = a[order[i]].addr.name.len;

        if (ds->egress[i].sockaddr == NULL
            || ds->egress[i].name.data == NULL)
        {
            return NGX_ERROR;
        }

        ngx_memcpy(ds->egress[i].sockaddr, a[order[i]].addr.sockaddr,
                   a[order[i]].addr.socklen);
    }

    ds->negress = n;

    ds->key.data = k;
    ds->key.len = ngx_sprintf(k, "%V/%V", &ep->name, domain) - k;

    return NGX_OK;
}


/* relay_destination_limit: what it leaves at 0 stays nginx.conf's */

static void
ngx_relay_destination_limits(ngx_relay_destination_ctx_t *ds,
    ngx_relay_dest_limit_t *dl)
{
    if (dl->connections) {
        ds->concurrency = dl->connections;
    }

    if (dl->messages_per_connection) {
        ds->reuse_limit = dl->messages_per_connection;
    }

    ds->shape.connections = dl->connections;
    ds->shape.connections_per_minute = dl->connections_per_minute;
    ds->shape.messages_per_minute = dl->messages_per_minute;
    ds->shape.messages_per_hour = dl->messages_per_hour;
    ds->backoff = dl->backoff;
}


/*
 * The destination's message rate, across the workers (or the fleet).
 * NGX_BUSY: not before *wait milliseconds; *slow: it is in slow mode.
 * NGX_AGAIN: Redis counts; ds->shaped runs with ds->fleet_check's rc,
 * wait and slow set.
 */

ngx_int_t
ngx_relay_destination_message(ngx_relay_destination_ctx_t *ds,
    ngx_msec_t *wait, ngx_uint_t *slow)
{
    ngx_relay_shape_check_t  *sc;

    if (!ds->fleet) {
        return ngx_relay_shape_message(ds->zone, &ds->key, &ds->shape, wait,
                                       slow);
    }

    sc = &ds->fleet_check;

    sc->key = ds->key;
    sc->domain = ds->domain;
    sc->pool = ds->egress_pool;
    sc->egress = ds->per_address ? ds->egress : NULL;
    sc->negress = ds->per_address ? ds->negress : 0;
    sc->limits = ds->shape;
    sc->zone = ds->zone;
    sc->conf = ds->limits;
    sc->handler = ngx_relay_destination_fleet_done;
    sc->data = ds;
    sc->log = ds->log;

    if (ngx_relay_shape_fleet(sc) == NGX_AGAIN) {
        return NGX_AGAIN;
    }

    ngx_relay_destination_fleet_counted(ds);

    *wait = sc->wait;
    *slow = sc->slow;

    return sc->rc;
}


static void
ngx_relay_destination_fleet_done(ngx_relay_shape_check_t *sc)
{
    ngx_relay_destination_ctx_t  *ds = sc->data;

    ngx_relay_destination_fleet_counted(ds);

    ds->shaped(ds);
}


/* counted per source address: the delivery keeps to that address */

static void
ngx_relay_destination_fleet_counted(ngx_relay_destination_ctx_t *ds)
{
    ngx_relay_shape_check_t  *sc;

    sc = &ds->fleet_check;

    if (sc->rc == NGX_OK && sc->negress && sc->egress_next < ds->negress) {
        ds->egress_next = sc->egress_next;
        ds->pinned = 1;
    }
}


/*
 * A delivery's turn at its destination.  NGX_OK: it may run now;
 * NGX_AGAIN: it waits, and ds->handler runs when its turn comes.
 */

ngx_int_t
ngx_relay_destination_enter(ngx_relay_destination_ctx_t *ds,
    ngx_queue_t *dests)
{
    ds->dest = ngx_relay_destination_get(dests, &ds->key, ds->log);
    if (ds->dest == NULL) {
        return NGX_ERROR;
    }

    ds->wake.handler = ngx_relay_destination_wake;
    ds->wake.data = ds;
    ds->wake.log = ds->log;

    if (ds->dest->active >= ds->concurrency) {
        ngx_log_debug2(NGX_LOG_DEBUG_CORE, ds->log, 0,
                       "%V: waits: %ui deliveries to the destination",
                       ds->id, ds->dest->active);

        ngx_queue_insert_tail(&ds->dest->waiting, &ds->wait);
        return NGX_AGAIN;
    }

    ds->dest->active++;

    return NGX_OK;
}


/* the delivery ended: the next waiting one of the destination may start */

void
ngx_relay_destination_leave(ngx_relay_destination_ctx_t *ds)
{
    ngx_queue_t                  *q;
    ngx_relay_destination_t      *dest;
    ngx_relay_destination_ctx_t  *w;

    dest = ds->dest;

    if (dest == NULL) {
        return;
    }

    ds->dest = NULL;
    dest->active--;

    if (!ngx_queue_empty(&dest->waiting)) {
        q = ngx_queue_head(&dest->waiting);
        ngx_queue_remove(q);

        w = ngx_queue_data(q, ngx_relay_destination_ctx_t, wait);
        dest->active++;

        ngx_post_event(&w->wake, &ngx_posted_events);
    }

    ngx_relay_destination_free(dest);
}


static void
ngx_relay_destination_wake(ngx_event_t *ev)
{
    ngx_relay_destination_ctx_t  *ds = ev->data;

    ds->handler(ds);
}


static ngx_relay_destination_t *
ngx_relay_destination_get(ngx_queue_t *dests, ngx_str_t *name,
    ngx_log_t *log)
{
    ngx_queue_t              *q;
    ngx_relay_destination_t  *dest;

    for (q = ngx_queue_head(dests);
         q != ngx_queue_sentinel(dests);
         q = ngx_queue_next(q))
    {
        dest = ngx_queue_data(q, ngx_relay_destination_t, queue);

        if (dest->name.len == name->len
            && ngx_strncasecmp(dest->name.data, name->data, name->len) == 0)
        {
            return dest;
        }
    }

    dest = ngx_alloc(sizeof(ngx_relay_destination_t) + name->len, log);
    if (dest == NULL) {
        return NULL;
    }

    dest->name.data = (u_char *) (dest + 1);
    dest->name.len = name->len;
    ngx_memcpy(dest->name.data, name->data, name->len);
    dest->active = 0;
    dest->idle = 0;
    ngx_queue_init(&dest->conns);
    ngx_queue_init(&dest->waiting);

    ngx_queue_insert_tail(dests, &dest->queue);

    return dest;
}


static void
ngx_relay_destination_free(ngx_relay_destination_t *dest)
{
    if (dest->active == 0 && dest->idle == 0
        && ngx_queue_empty(&dest->waiting))
    {
        ngx_queue_remove(&dest->queue);
        ngx_free(dest);
    }
}


/*
 * The source address to bind to: NULL without an egress pool.
 * NGX_DECLINED: none of the pool's addresses is left.
 */

ngx_int_t
ngx_relay_destination_egress(ngx_relay_destination_ctx_t *ds,
    ngx_addr_t **local)
{
    *local = NULL;

    if (ds->negress == 0) {
        return NGX_OK;
    }

    if (ds->egress_next == ds->negress) {
        return NGX_DECLINED;
    }

    *local = &ds->egress[ds->egress_next];

    return NGX_OK;
}


/* bind() failed (nginx logged why): the pool's next address */

void
ngx_relay_destination_egress_failed(ngx_relay_destination_ctx_t *ds)
{
    ngx_log_error(NGX_LOG_WARN, ds->log, 0,
                  "%V: egress address %V of pool \"%V\" cannot be "
                  "used, trying the next", ds->id,
                  &ds->egress[ds->egress_next].name, &ds->egress_pool);

    ds->egress_next++;
}


/*
 * The destination's connections, counted across the workers.  NGX_BUSY:
 * none may open before *wait milliseconds.
 */

ngx_int_t
ngx_relay_destination_connect(ngx_relay_destination_ctx_t *ds,
    ngx_msec_t *wait)
{
    return ngx_relay_shape_connect(ds->zone, &ds->key, &ds->shape, wait);
}


/* a connection counted by ngx_relay_destination_connect() did not open */

void
ngx_relay_destination_disconnect(ngx_relay_destination_ctx_t *ds)
{
    ngx_relay_shape_disconnect(ds->zone, &ds->key);
}


/* a reply that asks for mercy: the destination goes slow for a while */

void
ngx_relay_destination_backoff_reply(ngx_relay_destination_ctx_t *ds,
    ngx_uint_t code, u_char *text, size_t len)
{
    if (ds->backoff_reply.len == 0
        || len < ds->backoff_reply.len
        || ngx_strlcasestrn(text, text + len, ds->backoff_reply.data,
                            ds->backoff_reply.len - 1)
           == NULL)
    {
        return;
    }

    ngx_relay_shape_slow_down(ds->zone, &ds->key, ds->backoff);

    ngx_log_error(NGX_LOG_NOTICE, ds->log, 0,
                  "%V: destination %V in slow mode for %T s after "
                  "\"%d %*s\"", ds->id, &ds->key, ds->backoff, (int) code,
                  len, text);
}


/*
 * A new connection's record, in a pool of its own: it may outlive the
 * delivery.  It stays counted against the destination until it closes.
 */

ngx_relay_smtp_conn_t *
ngx_relay_destination_conn(ngx_relay_destination_ctx_t *ds,
    ngx_connection_t *c, ngx_str_t *host, in_port_t port)
{
    ngx_pool_t             *pool;
    ngx_relay_smtp_conn_t  *sc;

    pool = ngx_create_pool(1024, ds->log);
    sc = pool ? ngx_pcalloc(pool, sizeof(ngx_relay_smtp_conn_t)) : NULL;

    if (sc) {
        sc->host.data = ngx_pstrdup(pool, host);
        sc->shape_key.data = ngx_pstrdup(pool, &ds->key);

        if (ds->egress_next < ds->negress) {
            sc->egress.len = ds->egress[ds->egress_next].name.len;
            sc->egress.data = ngx_pstrdup(pool,
                                          &ds->egress[ds->egress_next].name);
        }
    }

    if (sc == NULL || sc->host.data == NULL || sc->shape_key.data == NULL
        || (sc->egress.len && sc->egress.data == NULL))
    {
        if (pool) {
            ngx_destroy_pool(pool);
        }

        return NULL;
    }

    sc->pool = pool;
    sc->connection = c;
    sc->zone = ds->zone;
    sc->host.len = host->len;
    sc->port = port;
    sc->shape_key.len = ds->key.len;
    sc->shaped = 1;

    ngx_relay_metrics_cache(0);

    return sc;
}


/*
 * An idle connection of the destination, taken out of the cache: to the
 * given host and port, or (host NULL) to any of the domain's own hosts.
 */

ngx_relay_smtp_conn_t *
ngx_relay_destination_cached(ngx_relay_destination_ctx_t *ds,
    ngx_relay_route_ctx_t *rt, ngx_str_t *host, in_port_t port)
{
    ngx_queue_t            *q, *conns;
    ngx_relay_smtp_conn_t  *sc;

    if (!ds->reuse) {
        return NULL;
    }

    conns = &ds->dest->conns;

    for (q = ngx_queue_head(conns);
         q != ngx_queue_sentinel(conns);
         q = ngx_queue_next(q))
    {
        sc = ngx_queue_data(q, ngx_relay_smtp_conn_t, queue);

        if ((rt->tls_required && !sc->tls)
            || (rt->tls_verify && !sc->verified))
        {
            continue;
        }

        if (ds->pinned
            && (sc->egress.len != ds->egress[ds->egress_next].name.len
                || ngx_strncmp(sc->egress.data,
                               ds->egress[ds->egress_next].name.data,
                               sc->egress.len)
                   != 0))
        {
            continue;
        }

        if (host == NULL) {
            if (!sc->own || !ngx_relay_route_own_hop(rt, &sc->hop)) {
                continue;
            }

        } else if (sc->port != port || sc->host.len != host->len
                   || ngx_strncasecmp(sc->host.data, host->data, host->len)
                      != 0)
        {
            continue;
        }

        ngx_relay_destination_take(sc);

        return sc;
    }

    return NULL;
}


static void
ngx_relay_destination_take(ngx_relay_smtp_conn_t *sc)
{
    ngx_connection_t  *c;

    ngx_queue_remove(&sc->queue);
    sc->dest->idle--;
    ngx_relay_metrics_idle(-1);
    ngx_relay_metrics_cache(1);

    c = sc->connection;
    c->idle = 0;
    ngx_reusable_connection(c, 0);

    if (c->read->timer_set) {
        ngx_del_timer(c->read);
    }

    c->read->cancelable = 0;
}


/*
 * The delivery has nothing more for the connection's host: the connection
 * goes to the idle cache, or says QUIT and closes.
 */

void
ngx_relay_destination_release(ngx_relay_destination_ctx_t *ds,
    ngx_relay_smtp_conn_t *sc)
{
    ngx_connection_t         *c;
    ngx_relay_destination_t  *dest;

    c = sc->connection;
    dest = ds->dest;

    if (!ds->reuse || ngx_exiting || ngx_terminate
        || sc->messages >= ds->reuse_limit
        || sc->in->pos != sc->in->last || sc->out->pos != sc->out->last
        || dest->idle + dest->active > ds->concurrency)
    {
        ngx_relay_destination_close(sc, 1);
        return;
    }

    sc->dest = dest;
    dest->idle++;
    ngx_relay_metrics_idle(1);
    ngx_queue_insert_head(&dest->conns, &sc->queue);

    if (c->write->timer_set) {
        ngx_del_timer(c->write);
    }

    if (c->read->timer_set) {
        ngx_del_timer(c->read);
    }

    c->data = sc;
    c->read->handler = ngx_relay_destination_idle_handler;
    c->write->handler = ngx_relay_destination_idle_write_handler;

    c->idle = 1;
    ngx_reusable_connection(c, 1);

    c->read->cancelable = 1;
    ngx_add_timer(c->read, ds->idle_timeout);

    if (c->read->ready) {
        ngx_post_event(c->read, &ngx_posted_events);
    }
}


/*
 * An idle connection: the idle timeout, a graceful shutdown or a shortage
 * of connections (c->close), or the server closed or said something.
 */

static void
ngx_relay_destination_idle_handler(ngx_event_t *ev)
{
    u_char                  buf[1];
    ssize_t                 n;
    ngx_uint_t              quit;
    ngx_connection_t       *c;
    ngx_relay_smtp_conn_t  *sc;

    c = ev->data;
    sc = c->data;

    quit = 1;

    if (!c->close && !ev->timedout) {
        n = c->recv(c, buf, 1);

        if (n == NGX_AGAIN) {
            if (ngx_handle_read_event(ev, 0) == NGX_OK) {
                return;
            }
        }

        quit = 0;            /* closed, or said something: a 421, say */
    }

    ngx_log_debug3(NGX_LOG_DEBUG_CORE, c->log, 0,
                   "relay=%*s: idle connection closes (%s)",
                   sc->relay_len, sc->relay,
                   ev->timedout ? "timeout" : quit ? "worker" : "server");

    ngx_queue_remove(&sc->queue);
    sc->dest->idle--;
    ngx_relay_metrics_idle(-1);
    ngx_relay_destination_free(sc->dest);
    ngx_relay_destination_close(sc, quit);
}


static void
ngx_relay_destination_idle_write_handler(ngx_event_t *ev)
{
    return;
}


void
ngx_relay_destination_close(ngx_relay_smtp_conn_t *sc, ngx_uint_t quit)
{
    ngx_connection_t  *c;

    c = sc->connection;

    if (quit && !c->error) {
        (void) c->send(c, (u_char *) "QUIT" CRLF, 6);
    }

    if (sc->shaped) {
        ngx_relay_shape_disconnect(sc->zone, &sc->shape_key);
    }

    /* the pool is the connection's, but destroyed here, after it */
    c->pool = NULL;

    if (c->ssl) {
        c->ssl->no_wait_shutdown = 1;
        (void) ngx_ssl_shutdown(c);
    }

    ngx_close_connection(c);
    ngx_destroy_pool(sc->pool);
}


/* the worker exits: idle connections say QUIT and close */

void
ngx_relay_destination_exit(ngx_queue_t *dests)
{
    ngx_queue_t              *q, *next;
    ngx_relay_smtp_conn_t    *sc;
    ngx_relay_destination_t  *dest;

    for (q = ngx_queue_head(dests);
         q != ngx_queue_sentinel(dests);
         q = next)
    {
        next = ngx_queue_next(q);
        dest = ngx_queue_data(q, ngx_relay_destination_t, queue);

        while (!ngx_queue_empty(&dest->conns)) {
            sc = ngx_queue_data(ngx_queue_head(&dest->conns),
                                ngx_relay_smtp_conn_t, queue);

            ngx_queue_remove(&sc->queue);
            dest->idle--;
            ngx_relay_metrics_idle(-1);
            ngx_relay_destination_close(sc, 1);
        }

        ngx_relay_destination_free(dest);
    }
}
