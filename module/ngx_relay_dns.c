
/*
 * Copyright (C) The relay authors
 */


/*
 * Asynchronous MX, A and AAAA lookups with c-ares on nginx's event loop
 * (nginx's own resolver has no MX).  One channel per worker.  c-ares tells
 * us which sockets to watch (sock_state_cb): each becomes an nginx
 * connection with level-triggered events that call ares_process_fd(); one
 * cancelable timer follows ares_timeout().  Nothing here blocks.
 *
 * With relay_dnssec on (the operator says the resolver validates), MX and
 * TLSA queries are sent with the AD bit set and the answer's AD bit is
 * reported (q->secure): what DANE (RFC 7672) starts from.  Otherwise the
 * AD bit is never looked at.
 *
 * Results are handed over through a posted event, so a handler never runs
 * inside the call that started its lookup, and a query can be dropped at
 * any time (ngx_relay_dns_done): c-ares' late callback then only frees it.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>
#include <ares.h>
#include <arpa/nameser.h>
#include <ngx_relay_dns.h>
#include <ngx_relay_metrics.h>


typedef struct ngx_relay_dns_sock_s  ngx_relay_dns_sock_t;

struct ngx_relay_dns_sock_s {
    ngx_relay_dns_sock_t        *next;
    ngx_connection_t            *connection;
    ngx_relay_dns_t             *dns;
};


struct ngx_relay_dns_s {
    ares_channel                 channel;
    ngx_log_t                   *log;
    ngx_event_t                  timer;
    ngx_relay_dns_sock_t        *socks;
    ngx_uint_t                   dnssec;
};


static void ngx_relay_dns_sock_state(void *data, ares_socket_t fd,
    int readable, int writable);
static void ngx_relay_dns_read_handler(ngx_event_t *ev);
static void ngx_relay_dns_write_handler(ngx_event_t *ev);
static void ngx_relay_dns_timer_handler(ngx_event_t *ev);
static void ngx_relay_dns_arm_timer(ngx_relay_dns_t *dns);
static ngx_relay_dns_query_t *ngx_relay_dns_query(ngx_relay_dns_t *dns,
    ngx_relay_dns_handler_pt handler, void *data);
static ngx_relay_dns_query_t *ngx_relay_dns_named(ngx_relay_dns_t *dns,
    ngx_str_t *name, ngx_relay_dns_handler_pt handler, void *data,
    char **cname);
static char *ngx_relay_dns_cname(ngx_str_t *name);
static void ngx_relay_dns_mx_callback(void *arg, int status, int timeouts,
    unsigned char *abuf, int alen);
static void ngx_relay_dns_host_callback(void *arg, int status, int timeouts,
    unsigned char *abuf, int alen);
static ngx_int_t ngx_relay_dns_send(ngx_relay_dns_query_t *q, char *name,
    int type);
static void ngx_relay_dns_ad_callback(void *arg, int status, int timeouts,
    unsigned char *abuf, int alen);
static void ngx_relay_dns_mx_parse(ngx_relay_dns_query_t *q,
    unsigned char *abuf, int alen);
static void ngx_relay_dns_tlsa_parse(ngx_relay_dns_query_t *q,
    unsigned char *abuf, int alen);
static void ngx_relay_dns_txt_parse(ngx_relay_dns_query_t *q,
    unsigned char *abuf, int alen);
static ngx_int_t ngx_relay_dns_answered(ngx_relay_dns_query_t *q,
    int status);
static ngx_int_t ngx_relay_dns_parsed(ngx_relay_dns_query_t *q, int status);
static void ngx_relay_dns_finish(ngx_relay_dns_query_t *q);
static void ngx_relay_dns_posted(ngx_event_t *ev);
static void ngx_relay_dns_free(ngx_relay_dns_query_t *q);
static int ngx_relay_dns_mx_cmp(const void *a, const void *b);
static void ngx_relay_dns_sort_mx(ngx_relay_mx_t *mx, ngx_uint_t n);


ngx_relay_dns_t *
ngx_relay_dns_create(ngx_str_t *servers, ngx_msec_t timeout,
    ngx_uint_t dnssec, ngx_log_t *log)
{
    int                  rc;
    char                *csv;
    ngx_relay_dns_t     *dns;
    struct ares_options  opts;

    if (ares_library_init(ARES_LIB_INIT_ALL) != ARES_SUCCESS) {
        ngx_log_error(NGX_LOG_EMERG, log, 0, "ares_library_init() failed");
        return NULL;
    }

    dns = ngx_calloc(sizeof(ngx_relay_dns_t), log);
    if (dns == NULL) {
        return NULL;
    }

    dns->log = log;
    dns->dnssec = dnssec;

    ngx_memzero(&opts, sizeof(struct ares_options));
    opts.sock_state_cb = ngx_relay_dns_sock_state;
    opts.sock_state_cb_data = dns;
    opts.timeout = (int) timeout;
    opts.tries = 2;

    rc = ares_init_options(&dns->channel, &opts,
                           ARES_OPT_SOCK_STATE_CB|ARES_OPT_TIMEOUTMS
                           |ARES_OPT_TRIES);
    if (rc != ARES_SUCCESS) {
        ngx_log_error(NGX_LOG_EMERG, log, 0, "ares_init_options() failed: %s",
                      ares_strerror(rc));
        ngx_free(dns);
        return NULL;
    }

    if (servers && servers->len) {
        csv = ngx_relay_dns_cname(servers);
        if (csv == NULL) {
            ares_destroy(dns->channel);
            ngx_free(dns);
            return NULL;
        }

        rc = ares_set_servers_ports_csv(dns->channel, csv);
        free(csv);

        if (rc != ARES_SUCCESS) {
            ngx_log_error(NGX_LOG_EMERG, log, 0,
                          "invalid relay_resolver \"%V\": %s", servers,
                          ares_strerror(rc));
            ares_destroy(dns->channel);
            ngx_free(dns);
            return NULL;
        }
    }

    dns->timer.handler = ngx_relay_dns_timer_handler;
    dns->timer.data = dns;
    dns->timer.log = log;
    dns->timer.cancelable = 1;

    return dns;
}


ngx_uint_t
ngx_relay_dns_dnssec(ngx_relay_dns_t *dns)
{
    return dns->dnssec;
}


void
ngx_relay_dns_destroy(ngx_relay_dns_t *dns)
{
    /* pending queries get ARES_EDESTRUCTION: their callbacks free them */

    ares_destroy(dns->channel);

    if (dns->timer.timer_set) {
        ngx_del_timer(&dns->timer);
    }

    ngx_free(dns);
}


/* c-ares opens, watches and closes its sockets; we mirror that in nginx */

static void
ngx_relay_dns_sock_state(void *data, ares_socket_t fd, int readable,
    int writable)
{
    ngx_relay_dns_t  *dns = data;

    ngx_connection_t       *c;
    ngx_relay_dns_sock_t  **link, *s;

    for (link = &dns->socks; *link; link = &(*link)->next) {
        if ((*link)->connection->fd == fd) {
            break;
        }
    }

    s = *link;

    if (!readable && !writable) {
        if (s == NULL) {
            return;
        }

        c = s->connection;

        if (c->read->active) {
            ngx_del_event(c->read, NGX_READ_EVENT, 0);
        }

        if (c->write->active) {
            ngx_del_event(c->write, NGX_WRITE_EVENT, 0);
        }

        /* c-ares closes the descriptor itself */
        c->fd = (ngx_socket_t) -1;
        ngx_free_connection(c);

        *link = s->next;
        ngx_free(s);
        return;
    }

    if (s == NULL) {
        s = ngx_calloc(sizeof(ngx_relay_dns_sock_t), dns->log);
        if (s == NULL) {
            return;
        }

        c = ngx_get_connection(fd, dns->log);
        if (c == NULL) {
            ngx_free(s);
            return;
        }

        c->data = s;
        c->read->handler = ngx_relay_dns_read_handler;
        c->write->handler = ngx_relay_dns_write_handler;
        c->read->log = dns->log;
        c->write->log = dns->log;

        s->connection = c;
        s->dns = dns;
        s->next = dns->socks;
        dns->socks = s;
    }

    c = s->connection;

    /* level-triggered: c-ares may leave data in the socket */

    if (readable && !c->read->active) {
        (void) ngx_add_event(c->read, NGX_READ_EVENT, 0);

    } else if (!readable && c->read->active) {
        (void) ngx_del_event(c->read, NGX_READ_EVENT, 0);
    }

    if (writable && !c->write->active) {
        (void) ngx_add_event(c->write, NGX_WRITE_EVENT, 0);

    } else if (!writable && c->write->active) {
        (void) ngx_del_event(c->write, NGX_WRITE_EVENT, 0);
    }
}


static void
ngx_relay_dns_read_handler(ngx_event_t *ev)
{
    ngx_connection_t      *c = ev->data;
    ngx_relay_dns_sock_t  *s = c->data;

    ngx_relay_dns_t  *dns = s->dns;

    ares_process_fd(dns->channel, c->fd, ARES_SOCKET_BAD);
    ngx_relay_dns_arm_timer(dns);
}


static void
ngx_relay_dns_write_handler(ngx_event_t *ev)
{
    ngx_connection_t      *c = ev->data;
    ngx_relay_dns_sock_t  *s = c->data;

    ngx_relay_dns_t  *dns = s->dns;

    ares_process_fd(dns->channel, ARES_SOCKET_BAD, c->fd);
    ngx_relay_dns_arm_timer(dns);
}


static void
ngx_relay_dns_timer_handler(ngx_event_t *ev)
{
    ngx_relay_dns_t  *dns = ev->data;

    ares_process_fd(dns->channel, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
    ngx_relay_dns_arm_timer(dns);
}


static void
ngx_relay_dns_arm_timer(ngx_relay_dns_t *dns)
{
    ngx_msec_t       ms;
    struct timeval   tv, *tvp;

    tvp = ares_timeout(dns->channel, NULL, &tv);

    if (tvp == NULL) {
        if (dns->timer.timer_set) {
            ngx_del_timer(&dns->timer);
        }

        return;
    }

    ms = (ngx_msec_t) tvp->tv_sec * 1000 + tvp->tv_usec / 1000 + 1;

    ngx_add_timer(&dns->timer, ms);
}


static ngx_relay_dns_query_t *
ngx_relay_dns_query(ngx_relay_dns_t *dns, ngx_relay_dns_handler_pt handler,
    void *data)
{
    ngx_relay_dns_query_t  *q;

    q = ngx_calloc(sizeof(ngx_relay_dns_query_t), dns->log);
    if (q == NULL) {
        return NULL;
    }

    q->dns = dns;
    q->handler = handler;
    q->data = data;
    q->started = ngx_relay_metrics_clock();
    q->event.handler = ngx_relay_dns_posted;
    q->event.data = q;
    q->event.log = dns->log;

    return q;
}


/* a query of name, and name NUL-terminated (malloc()ed) */

static ngx_relay_dns_query_t *
ngx_relay_dns_named(ngx_relay_dns_t *dns, ngx_str_t *name,
    ngx_relay_dns_handler_pt handler, void *data, char **cname)
{
    ngx_relay_dns_query_t  *q;

    q = ngx_relay_dns_query(dns, handler, data);
    if (q == NULL) {
        return NULL;
    }

    *cname = ngx_relay_dns_cname(name);
    if (*cname == NULL) {
        ngx_free(q);
        return NULL;
    }

    q->pending = 1;

    return q;
}


ngx_relay_dns_query_t *
ngx_relay_dns_mx(ngx_relay_dns_t *dns, ngx_str_t *name,
    ngx_relay_dns_handler_pt handler, void *data)
{
    char                   *cname;
    ngx_relay_dns_query_t  *q;

    q = ngx_relay_dns_named(dns, name, handler, data, &cname);
    if (q == NULL) {
        return NULL;
    }

    if (dns->dnssec) {
        q->parse = ngx_relay_dns_mx_parse;
        return (ngx_relay_dns_send(q, cname, ns_t_mx) == NGX_OK) ? q : NULL;
    }

    ares_query(dns->channel, cname, ns_c_in, ns_t_mx,
               ngx_relay_dns_mx_callback, q);
    free(cname);

    ngx_relay_dns_arm_timer(dns);

    return q;
}


/* A and AAAA together; either may be empty */

ngx_relay_dns_query_t *
ngx_relay_dns_host(ngx_relay_dns_t *dns, ngx_str_t *name,
    ngx_relay_dns_handler_pt handler, void *data)
{
    char                   *cname;
    ngx_relay_dns_query_t  *q;

    q = ngx_relay_dns_query(dns, handler, data);
    if (q == NULL) {
        return NULL;
    }

    q->addrs = ngx_calloc(NGX_RELAY_DNS_MAX_ADDRS * (sizeof(ngx_sockaddr_t)
                                                     + sizeof(socklen_t)),
                          dns->log);
    cname = ngx_relay_dns_cname(name);

    if (q->addrs == NULL || cname == NULL) {
        ngx_free(q->addrs);
        ngx_free(q);
        free(cname);
        return NULL;
    }

    q->socklens = (socklen_t *) (q->addrs + NGX_RELAY_DNS_MAX_ADDRS);

    q->pending = 2;
    ares_query(dns->channel, cname, ns_c_in, ns_t_a,
               ngx_relay_dns_host_callback, q);
    ares_query(dns->channel, cname, ns_c_in, ns_t_aaaa,
               ngx_relay_dns_host_callback, q);
    free(cname);

    ngx_relay_dns_arm_timer(dns);

    return q;
}


static char *
ngx_relay_dns_cname(ngx_str_t *name)
{
    char  *s;

    s = malloc(name->len + 1);
    if (s == NULL) {
        return NULL;
    }

    ngx_memcpy(s, name->data, name->len);
    s[name->len] = '\0';

    return s;
}


static ngx_int_t
ngx_relay_dns_status(int status)
{
    switch (status) {

    case ARES_SUCCESS:
        return NGX_OK;

    case ARES_ENODATA:
    case ARES_ENOTFOUND:
        return NGX_DECLINED;

    default:       /* SERVFAIL, REFUSED, timeouts, no memory ... */
        return NGX_AGAIN;
    }
}


/* a c-ares callback's start: NGX_DONE when the query was dropped (freed) */

static ngx_int_t
ngx_relay_dns_answered(ngx_relay_dns_query_t *q, int status)
{
    q->pending--;

    if (q->cancelled) {
        ngx_relay_dns_free(q);
        return NGX_DONE;
    }

    q->status = ngx_relay_dns_status(status);
    q->error = ares_strerror(status);
    q->nxdomain = (status == ARES_ENOTFOUND);

    return NGX_OK;
}


/* what parsing an answer said; NGX_DECLINED: the query is finished */

static ngx_int_t
ngx_relay_dns_parsed(ngx_relay_dns_query_t *q, int status)
{
    if (q->status == NGX_OK) {
        q->status = ngx_relay_dns_status(status);
        q->error = ares_strerror(status);
    }

    if (q->status != NGX_OK) {
        ngx_relay_dns_finish(q);
        return NGX_DECLINED;
    }

    return NGX_OK;
}


static void
ngx_relay_dns_mx_callback(void *arg, int status, int timeouts,
    unsigned char *abuf, int alen)
{
    ngx_relay_dns_query_t  *q = arg;

    if (ngx_relay_dns_answered(q, status) != NGX_OK) {
        return;
    }

    ngx_relay_dns_mx_parse(q, abuf, alen);
}


static void
ngx_relay_dns_mx_parse(ngx_relay_dns_query_t *q, unsigned char *abuf,
    int alen)
{
    u_char                 *p;
    size_t                  len, size;
    ngx_uint_t              n;
    struct ares_mx_reply   *reply, *r;

    reply = NULL;

    if (ngx_relay_dns_parsed(q, q->status == NGX_OK
                                ? ares_parse_mx_reply(abuf, alen, &reply)
                                : ARES_SUCCESS)
        != NGX_OK)
    {
        return;
    }

    size = 0;
    n = 0;

    for (r = reply; r && n < NGX_RELAY_DNS_MAX_MX; r = r->next, n++) {
        size += sizeof(ngx_relay_mx_t) + ngx_strlen(r->host) + 1;
    }

    q->mx = ngx_calloc(size ? size : 1, q->dns->log);
    if (q->mx == NULL) {
        ares_free_data(reply);
        q->status = NGX_AGAIN;
        q->error = "out of memory";
        ngx_relay_dns_finish(q);
        return;
    }

    p = (u_char *) (q->mx + n);

    for (r = reply; r && q->nmx < n; r = r->next) {
        len = ngx_strlen(r->host);

        /* RFC 7505: a single MX "." of preference 0 says "no mail" */

        if (len == 0 || (len == 1 && r->host[0] == '.')) {
            q->null_mx = 1;
            continue;
        }

        q->mx[q->nmx].host.data = p;
        q->mx[q->nmx].host.len = len;
        q->mx[q->nmx].preference = r->priority;
        p = ngx_cpymem(p, r->host, len);
        *p++ = '\0';
        q->nmx++;
    }

    ares_free_data(reply);

    if (q->nmx == 0) {
        q->status = NGX_DECLINED;
        q->error = q->null_mx ? "null MX" : "no MX host";

    } else {
        q->null_mx = 0;           /* "." among real hosts: ignore it */
        ngx_relay_dns_sort_mx(q->mx, q->nmx);
    }

    ngx_relay_dns_finish(q);
}


/*
 * A query with the AD bit set (RFC 6840 5.7 asks a validating resolver to
 * say whether the answer is authentic), through ares_send(): the rcode is
 * ours to read, as ares_query() would.  It takes name (malloc()ed) and,
 * when it fails, q.
 */

static ngx_int_t
ngx_relay_dns_send(ngx_relay_dns_query_t *q, char *name, int type)
{
    int             len, rc;
    unsigned char  *buf;

    rc = ares_create_query(name, ns_c_in, type, 0, 1, &buf, &len, 1232);
    free(name);

    if (rc != ARES_SUCCESS) {
        ngx_free(q);
        return NGX_ERROR;
    }

    buf[3] |= 0x20;                      /* AD */

    ares_send(q->dns->channel, buf, len, ngx_relay_dns_ad_callback, q);
    ares_free_string(buf);

    ngx_relay_dns_arm_timer(q->dns);

    return NGX_OK;
}


static void
ngx_relay_dns_ad_callback(void *arg, int status, int timeouts,
    unsigned char *abuf, int alen)
{
    ngx_relay_dns_query_t  *q = arg;

    if (status == ARES_SUCCESS && alen >= 12) {
        q->secure = (abuf[3] & 0x20) ? 1 : 0;

        switch (abuf[3] & 0x0f) {

        case 0:      /* NOERROR */
            if (((abuf[6] << 8) | abuf[7]) == 0) {
                status = ARES_ENODATA;
            }

            break;

        case 3:      /* NXDOMAIN */
            status = ARES_ENOTFOUND;
            break;

        case 2:      /* SERVFAIL */
            status = ARES_ESERVFAIL;
            break;

        case 5:      /* REFUSED */
            status = ARES_EREFUSED;
            break;

        default:
            status = ARES_EBADRESP;
            break;
        }
    }

    if (ngx_relay_dns_answered(q, status) != NGX_OK) {
        return;
    }

    q->parse(q, abuf, alen);
}


ngx_relay_dns_query_t *
ngx_relay_dns_txt(ngx_relay_dns_t *dns, ngx_str_t *name, const char *prefix,
    ngx_relay_dns_handler_pt handler, void *data)
{
    char                   *cname;
    ngx_relay_dns_query_t  *q;

    q = ngx_relay_dns_named(dns, name, handler, data, &cname);
    if (q == NULL) {
        return NULL;
    }

    q->prefix = prefix;
    q->parse = ngx_relay_dns_txt_parse;

    return (ngx_relay_dns_send(q, cname, ns_t_txt) == NGX_OK) ? q : NULL;
}


/* a record's strings are joined (RFC 7208 3.3 style) */

static void
ngx_relay_dns_txt_parse(ngx_relay_dns_query_t *q, unsigned char *abuf,
    int alen)
{
    u_char                    *p;
    size_t                     len, plen;
    ngx_uint_t                 n;
    struct ares_txt_ext       *reply, *r, *start;

    reply = NULL;

    if (ngx_relay_dns_parsed(q, q->status == NGX_OK
                                ? ares_parse_txt_reply_ext(abuf, alen, &reply)
                                : ARES_SUCCESS)
        != NGX_OK)
    {
        return;
    }

    plen = ngx_strlen(q->prefix);
    n = 0;

    for (start = reply; start; start = r) {

        /* one record: its first string, then its others */

        len = start->length;

        for (r = start->next; r && !r->record_start; r = r->next) {
            len += r->length;
        }

        if (start->length < plen
            || ngx_strncasecmp(start->txt, (u_char *) q->prefix, plen) != 0)
        {
            continue;
        }

        if (n++ > 0) {
            continue;
        }

        q->txt.data = ngx_alloc(len + 1, q->dns->log);
        if (q->txt.data == NULL) {
            break;
        }

        p = q->txt.data;

        for (r = start; r && (r == start || !r->record_start); r = r->next) {
            p = ngx_cpymem(p, r->txt, r->length);
        }

        q->txt.len = p - q->txt.data;
    }

    ares_free_data(reply);

    q->txt_many = (n > 1);

    if (n == 0 || q->txt.data == NULL) {
        q->status = NGX_DECLINED;
        q->error = "no such TXT record";
    }

    ngx_relay_dns_finish(q);
}


ngx_relay_dns_query_t *
ngx_relay_dns_tlsa(ngx_relay_dns_t *dns, ngx_str_t *host, in_port_t port,
    ngx_relay_dns_handler_pt handler, void *data)
{
    char                   *name;
    ngx_relay_dns_query_t  *q;

    q = ngx_relay_dns_query(dns, handler, data);
    if (q == NULL) {
        return NULL;
    }

    name = malloc(host->len + sizeof("_65535._tcp."));
    if (name == NULL) {
        ngx_free(q);
        return NULL;
    }

    *ngx_sprintf((u_char *) name, "_%d._tcp.%V", (int) port, host) = '\0';

    q->pending = 1;
    q->parse = ngx_relay_dns_tlsa_parse;

    return (ngx_relay_dns_send(q, name, 52) == NGX_OK) ? q : NULL;
}


/* the answer section's TLSA records (type 52), CNAMEs passed over */

static void
ngx_relay_dns_tlsa_parse(ngx_relay_dns_query_t *q, unsigned char *abuf,
    int alen)
{
    int              i, n, qd, an;
    long             len;
    char            *name;
    u_char          *p, *last, *data;
    size_t           size, rdlen;
    ngx_relay_tlsa_t *t;

    if (q->status != NGX_OK) {
        ngx_relay_dns_finish(q);
        return;
    }

    q->status = NGX_AGAIN;
    q->error = "bad TLSA answer";

    p = abuf + 12;
    last = abuf + alen;
    qd = (abuf[4] << 8) | abuf[5];
    an = (abuf[6] << 8) | abuf[7];

    for (i = 0; i < qd; i++) {
        if (ares_expand_name(p, abuf, alen, &name, &len) != ARES_SUCCESS) {
            ngx_relay_dns_finish(q);
            return;
        }

        ares_free_string(name);
        p += len + 4;
    }

    size = NGX_RELAY_DNS_MAX_TLSA * sizeof(ngx_relay_tlsa_t) + alen;

    q->tlsa = ngx_calloc(size, q->dns->log);
    if (q->tlsa == NULL) {
        q->error = "out of memory";
        ngx_relay_dns_finish(q);
        return;
    }

    data = (u_char *) (q->tlsa + NGX_RELAY_DNS_MAX_TLSA);

    for (i = 0, n = 0; i < an && p < last; i++) {
        if (ares_expand_name(p, abuf, alen, &name, &len) != ARES_SUCCESS) {
            ngx_relay_dns_finish(q);
            return;
        }

        ares_free_string(name);
        p += len;

        if (last - p < 10) {
            ngx_relay_dns_finish(q);
            return;
        }

        rdlen = (p[8] << 8) | p[9];

        if ((size_t) (last - p - 10) < rdlen) {
            ngx_relay_dns_finish(q);
            return;
        }

        if (((p[0] << 8) | p[1]) == 52 && rdlen > 3
            && n < NGX_RELAY_DNS_MAX_TLSA)
        {
            t = &q->tlsa[n++];
            t->usage = p[10];
            t->selector = p[11];
            t->mtype = p[12];
            t->len = rdlen - 3;
            t->data = data;
            data = ngx_cpymem(data, p + 13, t->len);
        }

        p += 10 + rdlen;
    }

    q->ntlsa = n;
    q->status = n ? NGX_OK : NGX_DECLINED;
    q->error = n ? "" : "no TLSA records";

    ngx_relay_dns_finish(q);
}


static int
ngx_relay_dns_mx_cmp(const void *a, const void *b)
{
    const ngx_relay_mx_t  *x = a, *y = b;

    if (x->preference == y->preference) {
        return 0;
    }

    return x->preference < y->preference ? -1 : 1;
}


/*
 * RFC 5321 5.1: lowest preference first, and hosts of equal preference in
 * random order, which spreads the load over them.
 */

static void
ngx_relay_dns_sort_mx(ngx_relay_mx_t *mx, ngx_uint_t n)
{
    ngx_uint_t      i, j, k, start;
    ngx_relay_mx_t  t;

    qsort(mx, n, sizeof(ngx_relay_mx_t), ngx_relay_dns_mx_cmp);

    for (start = 0; start < n; start = i) {
        for (i = start + 1; i < n && mx[i].preference == mx[start].preference;
             i++)
        {
            /* void */
        }

        /* Fisher-Yates over [start, i) */

        for (j = i - 1; j > start; j--) {
            k = start + (ngx_uint_t) ngx_random() % (j - start + 1);

            t = mx[j];
            mx[j] = mx[k];
            mx[k] = t;
        }
    }
}


static void
ngx_relay_dns_host_callback(void *arg, int status, int timeouts,
    unsigned char *abuf, int alen)
{
    ngx_relay_dns_query_t  *q = arg;

    int                    i, naddr;
    ngx_int_t              rc;
    struct sockaddr_in    *sin;
    struct sockaddr_in6   *sin6;
    struct ares_addrttl    a[NGX_RELAY_DNS_MAX_ADDRS];
    struct ares_addr6ttl   a6[NGX_RELAY_DNS_MAX_ADDRS];

    q->pending--;

    if (q->cancelled) {
        if (q->pending == 0) {
            ngx_relay_dns_free(q);
        }

        return;
    }

    rc = ngx_relay_dns_status(status);

    if (rc == NGX_OK) {
        naddr = NGX_RELAY_DNS_MAX_ADDRS;

        /* the record type tells which parser: try A, then AAAA */

        if (ares_parse_a_reply(abuf, alen, NULL, a, &naddr) == ARES_SUCCESS) {
            for (i = 0; i < naddr
                        && q->naddrs < NGX_RELAY_DNS_MAX_ADDRS; i++)
            {
                sin = (struct sockaddr_in *) &q->addrs[q->naddrs];
                sin->sin_family = AF_INET;
                sin->sin_addr = a[i].ipaddr;
                q->socklens[q->naddrs++] = sizeof(struct sockaddr_in);
            }

        } else {
            naddr = NGX_RELAY_DNS_MAX_ADDRS;

            if (ares_parse_aaaa_reply(abuf, alen, NULL, a6, &naddr)
                == ARES_SUCCESS)
            {
                for (i = 0; i < naddr
                            && q->naddrs < NGX_RELAY_DNS_MAX_ADDRS; i++)
                {
                    sin6 = (struct sockaddr_in6 *) &q->addrs[q->naddrs];
                    sin6->sin6_family = AF_INET6;
                    ngx_memcpy(&sin6->sin6_addr, &a6[i].ip6addr,
                               sizeof(struct in6_addr));
                    q->socklens[q->naddrs++] = sizeof(struct sockaddr_in6);
                }
            }
        }

    } else if (rc == NGX_AGAIN) {
        q->temporary = 1;
        q->error = ares_strerror(status);
    }

    if (q->pending) {
        return;
    }

    if (q->naddrs) {
        q->status = NGX_OK;

    } else if (q->temporary) {
        q->status = NGX_AGAIN;

    } else {
        q->status = NGX_DECLINED;
        q->error = "no address";
    }

    ngx_relay_dns_finish(q);
}


static void
ngx_relay_dns_finish(ngx_relay_dns_query_t *q)
{
    if (ngx_exiting || ngx_terminate) {
        /* ares_destroy() at exit: nobody waits any more */
        q->cancelled = 1;
    }

    if (q->cancelled) {
        ngx_relay_dns_free(q);
        return;
    }

    ngx_relay_metrics_dns(q->started);

    q->posted = 1;
    ngx_post_event(&q->event, &ngx_posted_events);
}


static void
ngx_relay_dns_posted(ngx_event_t *ev)
{
    ngx_relay_dns_query_t  *q = ev->data;

    q->posted = 0;
    q->handler(q);
}


void
ngx_relay_dns_done(ngx_relay_dns_query_t *q)
{
    if (q->posted) {
        ngx_delete_posted_event(&q->event);
        q->posted = 0;
    }

    if (q->pending) {
        q->cancelled = 1;          /* c-ares' callback frees it */
        return;
    }

    ngx_relay_dns_free(q);
}


static void
ngx_relay_dns_free(ngx_relay_dns_query_t *q)
{
    ngx_free(q->mx);
    ngx_free(q->addrs);
    ngx_free(q->tlsa);
    ngx_free(q->txt.data);
    ngx_free(q);
}
