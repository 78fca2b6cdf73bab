
/*
 * Copyright (C) The relay authors
 */


/*
 * MTA-STS (RFC 8461): whether a recipient domain asks for verified TLS
 * towards its MX hosts, and which hosts those may be.
 *
 * A delivery asks for its domain's policy once, before its first host:
 *   1. "_mta-sts.<domain>" TXT (c-ares): "v=STSv1; id=...".
 *   2. The worker's policies in memory: one with that id (or any, when
 *      there is no TXT record) that has not expired answers.
 *   3. Else a thread task: the cache file <relay_mta_sts_cache>/<domain>
 *      (written by any worker, kept across restarts until max_age runs
 *      out); when its id differs, HTTPS: libcurl fetches
 *      https://mta-sts.<domain>/.well-known/mta-sts.txt, no redirects,
 *      the certificate checked against the system's CAs or
 *      relay_mta_sts_trusted_certificate, the host's address from our own
 *      resolver (CURLOPT_RESOLVE), so every lookup goes the same way.  A
 *      fetch that fails keeps the cached policy until it expires.
 * The event loop never waits: DNS is c-ares, files and HTTPS are the
 * thread pool's.  Policies of this worker's memory are loaded from the
 * cache at its start.
 *
 * The route applies it per host (ngx_relay_route.c): "enforce" allows
 * only MX hosts the policy names, with TLS and a certificate valid for the
 * host name; "testing" delivers anyway and logs what would have failed.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>
#include <dirent.h>
#include <curl/curl.h>
#include <ngx_relay_mtasts.h>


#define NGX_RELAY_STS_MAX_POLICY   65536
#define NGX_RELAY_STS_MAX_AGE      31557600
#define NGX_RELAY_STS_MAX_ENTRIES  4096
#define NGX_RELAY_STS_MAGIC        "RELAY-MTA-STS 1\n"


typedef struct {
    ngx_queue_t                  queue;
    time_t                       expires;
    ngx_relay_sts_policy_t       policy;     /* strings into text */
    u_char                      *text;       /* malloc()ed */
} ngx_relay_sts_entry_t;


struct ngx_relay_mtasts_s {
    ngx_relay_mtasts_conf_t      conf;
    ngx_queue_t                  entries;
    ngx_uint_t                   n;
};


struct ngx_relay_sts_lookup_s {
    ngx_relay_mtasts_t          *m;
    ngx_pool_t                  *pool;
    ngx_relay_sts_handler_pt     handler;
    void                        *data;
    ngx_relay_dns_query_t       *query;
    ngx_event_t                  posted;
    ngx_thread_task_t           *task;

    u_char                       domain[256];
    size_t                       domain_len;
    u_char                       id[33];
    size_t                       id_len;
    char                         addr[NGX_SOCKADDR_STRLEN + 3];

    /* thread: what the cache or the fetch gave */
    char                        *text;       /* malloc()ed */
    size_t                       len;
    time_t                       fetched;
    u_char                       text_id[33];
    size_t                       text_id_len;
    char                         error[CURL_ERROR_SIZE + 64];

    unsigned                     busy:1;     /* a query or task in flight */
    unsigned                     detached:1; /* its delivery went */
    unsigned                     fetch:1;    /* the thread may fetch */
    unsigned                     done:1;
};


static ngx_int_t ngx_relay_mtasts_parse(ngx_relay_sts_entry_t *e, u_char *p,
    size_t len, time_t *max_age);
static ngx_relay_sts_entry_t *ngx_relay_mtasts_find(ngx_relay_mtasts_t *m,
    u_char *domain, size_t len);
static void ngx_relay_mtasts_store(ngx_relay_mtasts_t *m, u_char *domain,
    size_t len, u_char *id, size_t id_len, char *text, size_t text_len,
    time_t fetched);
static void ngx_relay_mtasts_load(ngx_relay_mtasts_t *m);
static void ngx_relay_mtasts_cleanup(void *data);
static void ngx_relay_mtasts_txt_done(ngx_relay_dns_query_t *q);
static void ngx_relay_mtasts_host_done(ngx_relay_dns_query_t *q);
static void ngx_relay_mtasts_post(ngx_relay_sts_lookup_t *l);
static void ngx_relay_mtasts_thread(void *data, ngx_log_t *log);
static void ngx_relay_mtasts_thread_done(ngx_event_t *ev);
static ngx_int_t ngx_relay_mtasts_read(ngx_relay_sts_lookup_t *l,
    char *path);
static ngx_int_t ngx_relay_mtasts_fetch(ngx_relay_sts_lookup_t *l);
static void ngx_relay_mtasts_write(ngx_relay_sts_lookup_t *l, char *path);
static void ngx_relay_mtasts_none(ngx_event_t *ev);
static void ngx_relay_mtasts_finish(ngx_relay_sts_lookup_t *l,
    ngx_relay_sts_entry_t *e);


ngx_relay_mtasts_t *
ngx_relay_mtasts_create(ngx_relay_mtasts_conf_t *conf)
{
    ngx_relay_mtasts_t  *m;

    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        ngx_log_error(NGX_LOG_EMERG, conf->log, 0,
                      "curl_global_init() failed");
        return NULL;
    }

    m = ngx_calloc(sizeof(ngx_relay_mtasts_t), conf->log);
    if (m == NULL) {
        return NULL;
    }

    m->conf = *conf;
    ngx_queue_init(&m->entries);

    /* the cache directory is the worker's own (it owns the spool) */

    if (ngx_create_dir(m->conf.cache.data, 0700) == NGX_FILE_ERROR
        && ngx_errno != NGX_EEXIST)
    {
        ngx_log_error(NGX_LOG_WARN, conf->log, ngx_errno,
                      ngx_create_dir_n " \"%s\" failed", m->conf.cache.data);
    }

    ngx_relay_mtasts_load(m);

    return m;
}


void
ngx_relay_mtasts_destroy(ngx_relay_mtasts_t *m)
{
    ngx_queue_t            *q;
    ngx_relay_sts_entry_t  *e;

    while (!ngx_queue_empty(&m->entries)) {
        q = ngx_queue_head(&m->entries);
        ngx_queue_remove(q);
        e = ngx_queue_data(q, ngx_relay_sts_entry_t, queue);
        ngx_free(e->text);
        ngx_free(e);
    }

    ngx_free(m);
}


/* ---------------------------------------------------------------- policies */


/*
 * RFC 8461 3.2: "key: value" lines; version STSv1, mode, max_age and (but
 * for mode none) at least one mx.  e->policy's strings point into p.
 */

static ngx_int_t
ngx_relay_mtasts_parse(ngx_relay_sts_entry_t *e, u_char *p, size_t len,
    time_t *max_age)
{
    u_char     *last, *eol, *colon, *v, *ve;
    ngx_int_t   n, version;
    ngx_str_t   key;

    last = p + len;
    version = 0;
    *max_age = -1;
    e->policy.mode = (ngx_uint_t) -1;
    e->policy.nmx = 0;

    for ( /* void */ ; p < last; p = eol + 1) {
        eol = ngx_strlchr(p, last, LF);
        if (eol == NULL) {
            eol = last;
        }

        colon = ngx_strlchr(p, eol, ':');
        if (colon == NULL) {
            continue;
        }

        key.data = p;
        key.len = colon - p;

        for (v = colon + 1; v < eol && (*v == ' ' || *v == '\t'); v++) {
            /* void */
        }

        for (ve = eol; ve > v && (ve[-1] == CR || ve[-1] == ' '
                                  || ve[-1] == '\t'); ve--)
        {
            /* void */
        }

        if (key.len == 7 && ngx_strncmp(key.data, "version", 7) == 0) {
            version = (ve - v == 5 && ngx_strncmp(v, "STSv1", 5) == 0);

        } else if (key.len == 4 && ngx_strncmp(key.data, "mode", 4) == 0) {
            if (ve - v == 7 && ngx_strncmp(v, "enforce", 7) == 0) {
                e->policy.mode = NGX_RELAY_STS_ENFORCE;

            } else if (ve - v == 7 && ngx_strncmp(v, "testing", 7) == 0) {
                e->policy.mode = NGX_RELAY_STS_TESTING;

            } else if (ve - v == 4 && ngx_strncmp(v, "none", 4) == 0) {
                e->policy.mode = NGX_RELAY_STS_NONE;
            }

        } else if (key.len == 7 && ngx_strncmp(key.data, "max_age", 7) == 0) {
            n = ngx_atoi(v, ve - v);
            if (n != NGX_ERROR) {
                *max_age = ngx_min(n, NGX_RELAY_STS_MAX_AGE);
            }

        } else if (key.len == 2 && ngx_strncmp(key.data, "mx", 2) == 0
                   && e->policy.nmx < 16 && ve > v)
        {
            e->policy.mx[e->policy.nmx].data = v;
            e->policy.mx[e->policy.nmx].len = ve - v;
            ngx_strlow(v, v, ve - v);
            e->policy.nmx++;
        }
    }

    if (!version || e->policy.mode == (ngx_uint_t) -1 || *max_age < 0
        || (e->policy.mode != NGX_RELAY_STS_NONE && e->policy.nmx == 0))
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


static ngx_relay_sts_entry_t *
ngx_relay_mtasts_find(ngx_relay_mtasts_t *m, u_char *domain, size_t len)
{
    ngx_queue_t            *q;
    ngx_relay_sts_entry_t  *e;

    for (q = ngx_queue_head(&m->entries);
         q != ngx_queue_sentinel(&m->entries);
         q = ngx_queue_next(q))
    {
        e = ngx_queue_data(q, ngx_relay_sts_entry_t, queue);

        if (e->policy.domain.len == len
            && ngx_strncmp(e->policy.domain.data, domain, len) == 0)
        {
            return e;
        }
    }

    return NULL;
}


/* a policy into memory, replacing the domain's; an invalid one is none */

static void
ngx_relay_mtasts_store(ngx_relay_mtasts_t *m, u_char *domain, size_t len,
    u_char *id, size_t id_len, char *text, size_t text_len, time_t fetched)
{
    u_char                 *p;
    time_t                  max_age;
    ngx_relay_sts_entry_t  *e, *old;

    e = ngx_calloc(sizeof(ngx_relay_sts_entry_t), m->conf.log);
    if (e == NULL) {
        return;
    }

    e->text = ngx_alloc(len + id_len + text_len + 1, m->conf.log);
    if (e->text == NULL) {
        ngx_free(e);
        return;
    }

    p = e->text;
    e->policy.domain.data = p;
    e->policy.domain.len = len;
    p = ngx_cpymem(p, domain, len);
    e->policy.id.data = p;
    e->policy.id.len = id_len;
    p = ngx_cpymem(p, id, id_len);

    ngx_memcpy(p, text, text_len);

    if (ngx_relay_mtasts_parse(e, p, text_len, &max_age) != NGX_OK) {
        ngx_log_error(NGX_LOG_WARN, m->conf.log, 0,
                      "MTA-STS policy of %*s is not valid", len, domain);
        ngx_free(e->text);
        ngx_free(e);
        return;
    }

    e->expires = fetched + max_age;

    old = ngx_relay_mtasts_find(m, domain, len);

    if (old) {
        ngx_queue_remove(&old->queue);
        ngx_free(old->text);
        ngx_free(old);
        m->n--;
    }

    if (m->n == NGX_RELAY_STS_MAX_ENTRIES) {
        old = ngx_queue_data(ngx_queue_last(&m->entries),
                             ngx_relay_sts_entry_t, queue);
        ngx_queue_remove(&old->queue);
        ngx_free(old->text);
        ngx_free(old);
        m->n--;
    }

    ngx_queue_insert_head(&m->entries, &e->queue);
    m->n++;
}


/* at the worker's start: the cached policies that have not expired */

static void
ngx_relay_mtasts_load(ngx_relay_mtasts_t *m)
{
    DIR                     *dir;
    char                     path[NGX_MAX_PATH];
    struct dirent           *de;
    ngx_relay_sts_lookup_t   l;

    dir = opendir((char *) m->conf.cache.data);
    if (dir == NULL) {
        return;
    }

    while ((de = readdir(dir)) != NULL) {
        if (de->d_name[0] == '.' || ngx_strlen(de->d_name) > 253) {
            continue;
        }

        ngx_memzero(&l, sizeof(ngx_relay_sts_lookup_t));
        (void) ngx_snprintf((u_char *) path, sizeof(path), "%V%s%Z",
                            &m->conf.cache, de->d_name);

        if (ngx_relay_mtasts_read(&l, path) == NGX_OK) {
            ngx_relay_mtasts_store(m, (u_char *) de->d_name,
                                   ngx_strlen(de->d_name), l.text_id,
                                   l.text_id_len, l.text, l.len, l.fetched);
        }

        free(l.text);
    }

    (void) closedir(dir);
}


ngx_uint_t
ngx_relay_mtasts_match(ngx_relay_sts_policy_t *p, ngx_str_t *host)
{
    u_char      *dot;
    size_t       len;
    ngx_str_t   *mx;
    ngx_uint_t   i;

    len = host->len;

    if (len && host->data[len - 1] == '.') {
        len--;
    }

    for (i = 0; i < p->nmx; i++) {
        mx = &p->mx[i];

        if (mx->len == len && ngx_strncasecmp(mx->data, host->data, len) == 0)
        {
            return 1;
        }

        /* "*.example.com": one label, the leftmost, in its place */

        if (mx->len > 2 && mx->data[0] == '*' && mx->data[1] == '.') {
            dot = ngx_strlchr(host->data, host->data + len, '.');

            if (dot && dot > host->data
                && (size_t) (host->data + len - dot) == mx->len - 1
                && ngx_strncasecmp(dot, mx->data + 1, mx->len - 1) == 0)
            {
                return 1;
            }
        }
    }

    return 0;
}


/* ---------------------------------------------------------------- lookup */


ngx_int_t
ngx_relay_mtasts_lookup(ngx_relay_mtasts_t *m, ngx_pool_t *pool,
    ngx_str_t *domain, ngx_relay_sts_handler_pt handler, void *data)
{
    u_char                  *p, name[300];
    ngx_str_t                txt;
    ngx_pool_cleanup_t      *cln;
    ngx_relay_sts_lookup_t  *l;

    if (domain->len == 0 || domain->len > 253) {
        return NGX_DECLINED;
    }

    l = ngx_calloc(sizeof(ngx_relay_sts_lookup_t), m->conf.log);
    if (l == NULL) {
        return NGX_ERROR;
    }

    cln = ngx_pool_cleanup_add(pool, 0);
    if (cln == NULL) {
        ngx_free(l);
        return NGX_ERROR;
    }

    cln->handler = ngx_relay_mtasts_cleanup;
    cln->data = l;

    l->m = m;
    l->pool = pool;
    l->handler = handler;
    l->data = data;
    l->domain_len = domain->len;
    ngx_strlow(l->domain, domain->data, domain->len);

    l->posted.handler = ngx_relay_mtasts_none;
    l->posted.data = l;
    l->posted.log = m->conf.log;

    p = ngx_sprintf(name, "_mta-sts.%*s", l->domain_len, l->domain);
    txt.data = name;
    txt.len = p - name;

    l->query = ngx_relay_dns_txt(m->conf.dns, &txt, "v=STSv1",
                                 ngx_relay_mtasts_txt_done, l);
    if (l->query == NULL) {
        ngx_post_event(&l->posted, &ngx_posted_events);
        return NGX_AGAIN;
    }

    l->busy = 1;

    return NGX_AGAIN;
}


static void
ngx_relay_mtasts_cleanup(void *data)
{
    ngx_relay_sts_lookup_t  *l = data;

    if (l->posted.posted) {
        ngx_delete_posted_event(&l->posted);
    }

    if (l->query) {
        ngx_relay_dns_done(l->query);
        l->query = NULL;
        l->busy = 0;
    }

    if (l->busy) {
        l->detached = 1;                 /* the task frees it */
        return;
    }

    free(l->text);
    ngx_free(l);
}


static void
ngx_relay_mtasts_none(ngx_event_t *ev)
{
    ngx_relay_mtasts_finish(ev->data, NULL);
}


/* "v=STSv1; id=20240101;": the id, 1 to 32 letters and digits */

static void
ngx_relay_mtasts_txt_done(ngx_relay_dns_query_t *q)
{
    ngx_relay_sts_lookup_t  *l = q->data;

    u_char                 *p, *last, *id;
    ngx_str_t               host;
    ngx_relay_sts_entry_t  *e;

    l->query = NULL;
    l->busy = 0;

    if (q->status == NGX_OK && !q->txt_many) {
        p = q->txt.data;
        last = p + q->txt.len;
        id = ngx_strlcasestrn(p, last, (u_char *) "id=", 3 - 1);

        if (id) {
            for (p = id + 3;
                 p < last && l->id_len < 32
                 && ((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'z')
                     || (*p >= 'A' && *p <= 'Z'));
                 p++)
            {
                l->id[l->id_len++] = *p;
            }
        }
    }

    ngx_relay_dns_done(q);

    e = ngx_relay_mtasts_find(l->m, l->domain, l->domain_len);

    if (e && e->expires <= ngx_time()) {
        e = NULL;
    }

    if (l->id_len == 0) {
        /* no policy announced (or DNS failed): the cached one, if any */
        ngx_relay_mtasts_finish(l, e);
        return;
    }

    if (e && e->policy.id.len == l->id_len
        && ngx_strncmp(e->policy.id.data, l->id, l->id_len) == 0)
    {
        ngx_relay_mtasts_finish(l, e);
        return;
    }

    /* a new id: the cache file, else HTTPS, at mta-sts.<domain> */

    p = ngx_sprintf((u_char *) l->addr, "mta-sts.%*s", l->domain_len,
                    l->domain);
    host.data = (u_char *) l->addr;
    host.len = p - (u_char *) l->addr;

    l->query = ngx_relay_dns_host(l->m->conf.dns, &host,
                                  ngx_relay_mtasts_host_done, l);
    if (l->query == NULL) {
        l->addr[0] = '\0';
        ngx_relay_mtasts_post(l);
        return;
    }

    l->busy = 1;
}


static void
ngx_relay_mtasts_host_done(ngx_relay_dns_query_t *q)
{
    ngx_relay_sts_lookup_t  *l = q->data;

    size_t       n;
    ngx_uint_t   i;
    u_char       text[NGX_SOCKADDR_STRLEN];

    l->query = NULL;
    l->busy = 0;
    l->addr[0] = '\0';

    if (q->status == NGX_OK && q->naddrs) {

        /* an IPv4 address first, else the first */

        for (i = 0; i < q->naddrs; i++) {
            if (q->addrs[i].sockaddr.sa_family == AF_INET) {
                break;
            }
        }

        if (i == q->naddrs) {
            i = 0;
        }

        n = ngx_sock_ntop(&q->addrs[i].sockaddr, q->socklens[i], text,
                          sizeof(text), 0);

        if (q->addrs[i].sockaddr.sa_family == AF_INET6) {
            *ngx_sprintf((u_char *) l->addr, "[%*s]", n, text) = '\0';

        } else {
            *ngx_sprintf((u_char *) l->addr, "%*s", n, text) = '\0';
        }

        l->fetch = 1;
    }

    ngx_relay_dns_done(q);

    ngx_relay_mtasts_post(l);
}


static void
ngx_relay_mtasts_post(ngx_relay_sts_lookup_t *l)
{
    ngx_thread_task_t  *task;

    task = ngx_calloc(sizeof(ngx_thread_task_t), l->m->conf.log);
    if (task == NULL) {
        ngx_relay_mtasts_finish(l, NULL);
        return;
    }

    task->ctx = l;
    task->handler = ngx_relay_mtasts_thread;
    task->event.handler = ngx_relay_mtasts_thread_done;
    task->event.data = task;

    if (ngx_thread_task_post(l->m->conf.thread_pool, task) != NGX_OK) {
        ngx_free(task);
        ngx_relay_mtasts_finish(l, NULL);
        return;
    }

    l->task = task;
    l->busy = 1;
}


/*
 * Thread: the cache file when its id is the TXT record's and it has not
 * expired; else HTTPS, written to the cache; a fetch that fails leaves the
 * cache file (its policy holds until it expires).
 */

static void
ngx_relay_mtasts_thread(void *data, ngx_log_t *log)
{
    ngx_relay_sts_lookup_t  *l = data;

    char    *cached, path[NGX_MAX_PATH];
    size_t   len;
    time_t   fetched;
    u_char   id[33];
    size_t   id_len;

    (void) ngx_snprintf((u_char *) path, sizeof(path), "%V%*s%Z",
                        &l->m->conf.cache, l->domain_len, l->domain);

    if (ngx_relay_mtasts_read(l, path) == NGX_OK
        && l->text_id_len == l->id_len
        && ngx_strncmp(l->text_id, l->id, l->id_len) == 0)
    {
        return;
    }

    if (!l->fetch) {
        ngx_cpystrn((u_char *) l->error, (u_char *) "no address for the "
                    "policy host", sizeof(l->error));
        return;
    }

    /* the cached policy, if any, stands while the fetch runs or fails */

    cached = l->text;
    len = l->len;
    fetched = l->fetched;
    id_len = l->text_id_len;
    ngx_memcpy(id, l->text_id, id_len);

    l->text = NULL;

    if (ngx_relay_mtasts_fetch(l) == NGX_OK) {
        free(cached);
        ngx_relay_mtasts_write(l, path);
        return;
    }

    l->text = cached;
    l->len = len;
    l->fetched = fetched;
    l->text_id_len = id_len;
    ngx_memcpy(l->text_id, id, id_len);
}


static void
ngx_relay_mtasts_thread_done(ngx_event_t *ev)
{
    ngx_thread_task_t  *task = ev->data;

    ngx_relay_sts_lookup_t  *l;
    ngx_relay_sts_entry_t   *e;

    l = task->ctx;
    ngx_free(task);

    l->task = NULL;
    l->busy = 0;

    if (l->detached) {
        free(l->text);
        ngx_free(l);
        return;
    }

    if (l->error[0]) {
        ngx_log_error(NGX_LOG_WARN, l->m->conf.log, 0,
                      "MTA-STS policy of %*s not fetched: %s",
                      l->domain_len, l->domain, l->error);
    }

    if (l->text) {
        ngx_relay_mtasts_store(l->m, l->domain, l->domain_len, l->text_id,
                               l->text_id_len, l->text, l->len, l->fetched);
    }

    e = ngx_relay_mtasts_find(l->m, l->domain, l->domain_len);

    if (e && e->expires <= ngx_time()) {
        e = NULL;
    }

    ngx_relay_mtasts_finish(l, e);
}


/* thread: "RELAY-MTA-STS 1", "id ID", "fetched T", "", the policy text */

static ngx_int_t
ngx_relay_mtasts_read(ngx_relay_sts_lookup_t *l, char *path)
{
    int          fd;
    char        *buf, *p, *end, *id, *fetched;
    ssize_t      n;
    struct stat  st;

    fd = open(path, O_RDONLY|O_CLOEXEC);
    if (fd == -1) {
        return NGX_DECLINED;
    }

    if (fstat(fd, &st) == -1 || st.st_size > NGX_RELAY_STS_MAX_POLICY + 256) {
        (void) close(fd);
        return NGX_DECLINED;
    }

    buf = malloc(st.st_size + 1);
    if (buf == NULL) {
        (void) close(fd);
        return NGX_DECLINED;
    }

    n = read(fd, buf, st.st_size);
    (void) close(fd);

    if (n != st.st_size) {
        free(buf);
        return NGX_DECLINED;
    }

    buf[n] = '\0';

    end = strstr(buf, "\n\n");
    id = strstr(buf, "\nid ");
    fetched = strstr(buf, "\nfetched ");

    if (ngx_strncmp(buf, NGX_RELAY_STS_MAGIC,
                    sizeof(NGX_RELAY_STS_MAGIC) - 1) != 0
        || end == NULL || id == NULL || fetched == NULL
        || id > end || fetched > end)
    {
        free(buf);
        return NGX_DECLINED;
    }

    for (p = id + 4, l->text_id_len = 0;
         *p != '\n' && l->text_id_len < 32; p++)
    {
        l->text_id[l->text_id_len++] = *p;
    }

    l->fetched = (time_t) strtoll(fetched + 9, NULL, 10);

    free(l->text);
    l->len = n - (end + 2 - buf);
    l->text = malloc(l->len + 1);

    if (l->text == NULL) {
        free(buf);
        return NGX_DECLINED;
    }

    ngx_memcpy(l->text, end + 2, l->len);
    free(buf);

    return NGX_OK;
}


static size_t
ngx_relay_mtasts_body(char *ptr, size_t size, size_t nmemb, void *data)
{
    ngx_relay_sts_lookup_t  *l = data;

    char    *p;
    size_t   n;

    n = size * nmemb;

    if (l->len + n > NGX_RELAY_STS_MAX_POLICY) {
        return 0;                         /* too big: curl fails */
    }

    p = realloc(l->text, l->len + n + 1);
    if (p == NULL) {
        return 0;
    }

    ngx_memcpy(p + l->len, ptr, n);
    l->text = p;
    l->len += n;

    return n;
}


/* thread: RFC 8461 3.3, HTTPS only, no redirects, 200 and text/plain */

static ngx_int_t
ngx_relay_mtasts_fetch(ngx_relay_sts_lookup_t *l)
{
    long                code;
    char               *type, url[400], resolve[400];
    CURL               *curl;
    CURLcode            rc;
    struct curl_slist  *res;

    curl = curl_easy_init();
    if (curl == NULL) {
        ngx_cpystrn((u_char *) l->error, (u_char *) "curl_easy_init() failed",
                    sizeof(l->error));
        return NGX_ERROR;
    }

    l->len = 0;

    (void) ngx_snprintf((u_char *) url, sizeof(url),
                        "https://mta-sts.%*s/.well-known/mta-sts.txt%Z",
                        l->domain_len, l->domain);
    (void) ngx_snprintf((u_char *) resolve, sizeof(resolve),
                        "mta-sts.%*s:443:%s%Z", l->domain_len, l->domain,
                        l->addr);

    res = curl_slist_append(NULL, resolve);

    (void) curl_easy_setopt(curl, CURLOPT_URL, url);
    (void) curl_easy_setopt(curl, CURLOPT_RESOLVE, res);
    (void) curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "https");
    (void) curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 0L);
    (void) curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    (void) curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS,
                            (long) l->m->conf.timeout);
    (void) curl_easy_setopt(curl, CURLOPT_SSL_VERIFYPEER, 1L);
    (void) curl_easy_setopt(curl, CURLOPT_SSL_VERIFYHOST, 2L);
    (void) curl_easy_setopt(curl, CURLOPT_USERAGENT, "nginx-relay");
    (void) curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION,
                            ngx_relay_mtasts_body);
    (void) curl_easy_setopt(curl, CURLOPT_WRITEDATA, l);
    (void) curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, l->error);

    if (l->m->conf.ca.len) {
        (void) curl_easy_setopt(curl, CURLOPT_CAINFO,
                                (char *) l->m->conf.ca.data);
    }

    l->error[0] = '\0';
    rc = curl_easy_perform(curl);

    code = 0;
    type = NULL;
    (void) curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &code);
    (void) curl_easy_getinfo(curl, CURLINFO_CONTENT_TYPE, &type);

    if (rc != CURLE_OK) {
        if (l->error[0] == '\0') {
            ngx_cpystrn((u_char *) l->error,
                        (u_char *) curl_easy_strerror(rc), sizeof(l->error));
        }

    } else if (code != 200) {
        (void) ngx_snprintf((u_char *) l->error, sizeof(l->error),
                            "HTTP status %l%Z", code);

    } else if (type == NULL || ngx_strncasecmp((u_char *) type,
                                               (u_char *) "text/plain", 10)
                               != 0)
    {
        ngx_cpystrn((u_char *) l->error, (u_char *) "not text/plain",
                    sizeof(l->error));

    } else {
        l->error[0] = '\0';
    }

    curl_easy_cleanup(curl);
    curl_slist_free_all(res);

    if (l->error[0]) {
        free(l->text);
        l->text = NULL;
        l->len = 0;
        return NGX_ERROR;
    }

    ngx_memcpy(l->text_id, l->id, l->id_len);
    l->text_id_len = l->id_len;
    l->fetched = time(NULL);

    return NGX_OK;
}


/* thread: a temporary file renamed over the old one (a cache: no sync) */

static void
ngx_relay_mtasts_write(ngx_relay_sts_lookup_t *l, char *path)
{
    int      fd;
    char     tmp[NGX_MAX_PATH], head[128];
    u_char  *p;
    ssize_t  n;

    (void) ngx_snprintf((u_char *) tmp, sizeof(tmp), "%s.%P.tmp%Z", path,
                        ngx_pid);

    fd = open(tmp, O_WRONLY|O_CREAT|O_TRUNC|O_CLOEXEC, 0600);
    if (fd == -1) {
        return;
    }

    p = ngx_snprintf((u_char *) head, sizeof(head),
                     NGX_RELAY_STS_MAGIC "id %*s\nfetched %T\n\n",
                     l->id_len, l->id, l->fetched);

    n = write(fd, head, p - (u_char *) head);

    if (n == p - (u_char *) head) {
        n = write(fd, l->text, l->len);
    }

    if (close(fd) == -1 || n != (ssize_t) l->len
        || rename(tmp, path) == -1)
    {
        (void) unlink(tmp);
    }
}


static void
ngx_relay_mtasts_finish(ngx_relay_sts_lookup_t *l, ngx_relay_sts_entry_t *e)
{
    u_char                  *p;
    size_t                   len;
    ngx_uint_t               i;
    ngx_relay_sts_policy_t  *copy;

    l->done = 1;
    copy = NULL;

    if (e) {
        len = e->policy.domain.len + e->policy.id.len;

        for (i = 0; i < e->policy.nmx; i++) {
            len += e->policy.mx[i].len;
        }

        copy = ngx_palloc(l->pool, sizeof(ngx_relay_sts_policy_t) + len);

        if (copy) {
            *copy = e->policy;
            p = (u_char *) (copy + 1);

            copy->domain.data = p;
            p = ngx_cpymem(p, e->policy.domain.data, e->policy.domain.len);
            copy->id.data = p;
            p = ngx_cpymem(p, e->policy.id.data, e->policy.id.len);

            for (i = 0; i < e->policy.nmx; i++) {
                copy->mx[i].data = p;
                p = ngx_cpymem(p, e->policy.mx[i].data, e->policy.mx[i].len);
            }
        }
    }

    l->handler(l->data, copy);
}


/* ---------------------------------------------------------------- TLS-RPT */


typedef struct {
    u_char                       domain[64];
    const char                  *source;
    ngx_uint_t                   count;
} ngx_relay_tls_failures_t;


ngx_uint_t
ngx_relay_tls_failure(ngx_str_t *domain, const char *source)
{
    size_t      len;
    ngx_uint_t  i;

    static ngx_relay_tls_failures_t  failures[64];

    len = ngx_min(domain->len, sizeof(failures[0].domain) - 1);

    for (i = 0; i < 64; i++) {
        if (failures[i].source == NULL) {
            ngx_memcpy(failures[i].domain, domain->data, len);
            failures[i].domain[len] = '\0';
            failures[i].source = source;
            break;
        }

        if (failures[i].source == source
            && ngx_strlen(failures[i].domain) == len
            && ngx_strncmp(failures[i].domain, domain->data, len) == 0)
        {
            break;
        }
    }

    if (i == 64) {
        return 0;                          /* not counted: too many */
    }

    return ++failures[i].count;
}
