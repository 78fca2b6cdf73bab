
/*
 * Copyright (C) The relay authors
 */


/*
 * Abuse bounds per client address, shared by the workers: sessions at
 * once (relay_max_sessions_per_ip), new connections per window
 * (relay_max_connections_per_ip) and failed AUTHs per window
 * (relay_max_auth_failures_per_ip).  A client is its IPv4 address, or
 * the /64 of its IPv6 address (one host's share of a network).  The
 * session asks; this file only counts.
 *
 * The zone ("relay_clients", 1 MB) is a table of slots, open addressing
 * with eight probes, under the zone's mutex.  A new client takes a free
 * slot among its probes, else the one idle longest without a session;
 * when all eight have sessions, it is not counted (the bounds fail open
 * rather than refuse a client nobody can account for).  A worker that
 * dies leaves its sessions counted until the slot is reused, as nginx's
 * limit_conn does.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_relay_clients.h>


#define NGX_RELAY_CLIENTS_SIZE    (1024 * 1024)
#define NGX_RELAY_CLIENTS_PROBES  8


typedef struct {
    u_char                    key[8];
    u_char                    len;           /* 0: free */
    ngx_uint_t                sessions;
    time_t                    last;
    time_t                    connection_start;
    ngx_uint_t                connections;
    time_t                    auth_start;
    ngx_uint_t                auth_failures;
} ngx_relay_client_slot_t;


typedef struct {
    ngx_uint_t                nslots;
    ngx_relay_client_slot_t  *slots;
} ngx_relay_clients_table_t;


static ngx_int_t ngx_relay_clients_init_zone(ngx_shm_zone_t *zone,
    void *data);
static size_t ngx_relay_clients_key(struct sockaddr *sa, u_char *key);
static ngx_relay_client_slot_t *ngx_relay_clients_find(
    ngx_relay_clients_table_t *t, u_char *key, size_t len, time_t now,
    ngx_uint_t add);
static ngx_uint_t ngx_relay_clients_window(time_t *start, ngx_uint_t *n,
    time_t window, time_t now);


ngx_int_t
ngx_relay_clients_add_zone(ngx_conf_t *cf, ngx_shm_zone_t **zone, void *tag)
{
    ngx_str_t  name = ngx_string("relay_clients");

    *zone = ngx_shared_memory_add(cf, &name, NGX_RELAY_CLIENTS_SIZE, tag);
    if (*zone == NULL) {
        return NGX_ERROR;
    }

    (*zone)->init = ngx_relay_clients_init_zone;

    return NGX_OK;
}


static ngx_int_t
ngx_relay_clients_init_zone(ngx_shm_zone_t *zone, void *data)
{
    ngx_slab_pool_t            *shpool;
    ngx_relay_clients_table_t  *t;

    if (data) {
        zone->data = data;
        return NGX_OK;
    }

    shpool = (ngx_slab_pool_t *) zone->shm.addr;

    if (zone->shm.exists) {
        zone->data = shpool->data;
        return NGX_OK;
    }

    t = ngx_slab_alloc(shpool, sizeof(ngx_relay_clients_table_t));
    if (t == NULL) {
        return NGX_ERROR;
    }

    /* half of the zone: the slab allocator keeps pages of its own */

    t->nslots = zone->shm.size / 2 / sizeof(ngx_relay_client_slot_t);
    t->slots = ngx_slab_calloc(shpool,
                               t->nslots * sizeof(ngx_relay_client_slot_t));
    if (t->slots == NULL) {
        return NGX_ERROR;
    }

    shpool->data = t;
    zone->data = t;

    return NGX_OK;
}


/*
 * A new session: NGX_OK when admitted (and counted: close it with
 * ngx_relay_clients_close()), NGX_BUSY over the sessions at once,
 * NGX_DECLINED over the new connections of the window; *c has the counts.
 */

ngx_int_t
ngx_relay_clients_open(ngx_shm_zone_t *zone, struct sockaddr *sa,
    ngx_relay_client_limits_t *l, ngx_relay_client_counts_t *c)
{
    u_char                      key[8];
    size_t                      len;
    time_t                      now;
    ngx_int_t                   rc;
    ngx_slab_pool_t            *shpool;
    ngx_relay_client_slot_t    *s;
    ngx_relay_clients_table_t  *t;

    ngx_memzero(c, sizeof(ngx_relay_client_counts_t));

    len = ngx_relay_clients_key(sa, key);
    if (len == 0 || zone == NULL) {
        return NGX_OK;
    }

    t = zone->data;
    shpool = (ngx_slab_pool_t *) zone->shm.addr;
    now = ngx_time();
    rc = NGX_OK;

    ngx_shmtx_lock(&shpool->mutex);

    s = ngx_relay_clients_find(t, key, len, now, 1);

    if (s) {
        c->connections = ngx_relay_clients_window(&s->connection_start,
                                                  &s->connections,
                                                  l->connection_window, now);
        c->sessions = s->sessions + 1;

        if (l->sessions && s->sessions >= l->sessions) {
            rc = NGX_BUSY;

        } else if (l->connections && c->connections > l->connections) {
            rc = NGX_DECLINED;

        } else {
            s->sessions++;
        }
    }

    ngx_shmtx_unlock(&shpool->mutex);

    return rc;
}


void
ngx_relay_clients_close(ngx_shm_zone_t *zone, struct sockaddr *sa)
{
    u_char                      key[8];
    size_t                      len;
    ngx_slab_pool_t            *shpool;
    ngx_relay_client_slot_t    *s;

    len = ngx_relay_clients_key(sa, key);
    if (len == 0 || zone == NULL) {
        return;
    }

    shpool = (ngx_slab_pool_t *) zone->shm.addr;

    ngx_shmtx_lock(&shpool->mutex);

    s = ngx_relay_clients_find(zone->data, key, len, ngx_time(), 0);

    if (s && s->sessions) {
        s->sessions--;
    }

    ngx_shmtx_unlock(&shpool->mutex);
}


/*
 * AUTH: with failed, one more failure is counted.  NGX_DECLINED when the
 * failures of the window have reached the limit (no more AUTH from that
 * client until the window ends), else NGX_OK.
 */

ngx_int_t
ngx_relay_clients_auth(ngx_shm_zone_t *zone, struct sockaddr *sa,
    ngx_relay_client_limits_t *l, ngx_uint_t failed,
    ngx_relay_client_counts_t *c)
{
    u_char                      key[8];
    size_t                      len;
    time_t                      now;
    ngx_int_t                   rc;
    ngx_slab_pool_t            *shpool;
    ngx_relay_client_slot_t    *s;

    ngx_memzero(c, sizeof(ngx_relay_client_counts_t));

    len = ngx_relay_clients_key(sa, key);
    if (len == 0 || zone == NULL || l->auth_failures == 0) {
        return NGX_OK;
    }

    shpool = (ngx_slab_pool_t *) zone->shm.addr;
    now = ngx_time();
    rc = NGX_OK;

    ngx_shmtx_lock(&shpool->mutex);

    s = ngx_relay_clients_find(zone->data, key, len, now, failed);

    if (s) {
        if (now - s->auth_start >= l->auth_window) {
            s->auth_start = now;
            s->auth_failures = 0;
        }

        s->auth_failures += failed;
        c->auth_failures = s->auth_failures;

        if (s->auth_failures >= l->auth_failures) {
            rc = NGX_DECLINED;
        }
    }

    ngx_shmtx_unlock(&shpool->mutex);

    return rc;
}


/* the count of a fixed window, this event included */

static ngx_uint_t
ngx_relay_clients_window(time_t *start, ngx_uint_t *n, time_t window,
    time_t now)
{
    if (window == 0 || now - *start >= window) {
        *start = now;
        *n = 0;
    }

    return ++*n;
}


static size_t
ngx_relay_clients_key(struct sockaddr *sa, u_char *key)
{
    struct sockaddr_in   *sin;
#if (NGX_HAVE_INET6)
    u_char               *p;
    struct sockaddr_in6  *sin6;
#endif

    switch (sa->sa_family) {

    case AF_INET:
        sin = (struct sockaddr_in *) sa;
        ngx_memcpy(key, &sin->sin_addr, 4);
        return 4;

#if (NGX_HAVE_INET6)
    case AF_INET6:
        sin6 = (struct sockaddr_in6 *) sa;
        p = sin6->sin6_addr.s6_addr;

        if (IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr)) {
            ngx_memcpy(key, p + 12, 4);
            return 4;
        }

        ngx_memcpy(key, p, 8);           /* the /64 */
        return 8;
#endif

    default:
        return 0;                        /* unix sockets: not limited */
    }
}


static ngx_relay_client_slot_t *
ngx_relay_clients_find(ngx_relay_clients_table_t *t, u_char *key, size_t len,
    time_t now, ngx_uint_t add)
{
    uint32_t                  h;
    ngx_uint_t                i;
    ngx_relay_client_slot_t  *s, *free, *old;

    h = ngx_crc32_short(key, len);
    free = NULL;
    old = NULL;

    for (i = 0; i < NGX_RELAY_CLIENTS_PROBES; i++) {
        s = &t->slots[(h + i) % t->nslots];

        if (s->len == len && ngx_memcmp(s->key, key, len) == 0) {
            s->last = now;
            return s;
        }

        if (s->len == 0) {
            if (free == NULL) {
                free = s;
            }

            continue;
        }

        if (s->sessions == 0 && (old == NULL || s->last < old->last)) {
            old = s;
        }
    }

    if (!add) {
        return NULL;
    }

    s = free ? free : old;

    if (s == NULL) {
        return NULL;
    }

    ngx_memzero(s, sizeof(ngx_relay_client_slot_t));
    ngx_memcpy(s->key, key, len);
    s->len = (u_char) len;
    s->last = now;

    return s;
}
