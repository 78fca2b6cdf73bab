
/*
 * Copyright (C) The relay authors
 */


/*
 * Maildir delivery (the qmail layout: tmp/, new/, cur/).  A message is
 * written to tmp/<name>, fsync()ed, renamed into new/<name> and new/ is
 * fsync()ed: it appears whole or not at all.
 *
 * <name> is derived from the queue id and the recipient's index, not made up
 * per try: a retry after a crash between "delivered" and "marked done in the
 * queue" finds new/<name> (or cur/<name>:2,...) and does not deliver twice.
 *
 * Runs only in thread-pool tasks: no pools, no nginx log.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_relay_maildir.h>


#define NGX_RELAY_COPY_BUF  65536


static ngx_int_t ngx_relay_maildir_mkdirs(u_char *path, u_char *end,
    ngx_relay_maildir_job_t *job);
static ngx_int_t ngx_relay_maildir_copy(ngx_fd_t fd,
    ngx_relay_maildir_job_t *job);
static ngx_int_t ngx_relay_maildir_seen(u_char *base, u_char *end,
    ngx_str_t *name);
static ngx_int_t ngx_relay_maildir_fail(ngx_relay_maildir_job_t *job,
    const char *call);


/*
 * Local parts that are safe as a directory name: no "/", no leading dot,
 * no control characters; everything else (spaces of quoted local parts and
 * UTF-8 included) is kept.  Quotes and backslashes of a quoted local part
 * are checked as they will be removed.
 */

ngx_int_t
ngx_relay_maildir_mailbox_valid(ngx_str_t *local)
{
    u_char      ch;
    ngx_uint_t  i;

    if (local->len == 0 || local->len > 255 || local->data[0] == '.'
        || (local->len > 1 && local->data[0] == '"' && local->data[1] == '.'))
    {
        return 0;
    }

    for (i = 0; i < local->len; i++) {
        ch = local->data[i];

        if (ch < 0x20 || ch == 0x7f || ch == '/') {
            return 0;
        }
    }

    return 1;
}


ngx_relay_domain_t *
ngx_relay_maildir_local_domain(ngx_array_t *domains, ngx_str_t *domain)
{
    ngx_uint_t           i;
    ngx_relay_domain_t  *d;

    if (domains == NULL) {
        return NULL;
    }

    d = domains->elts;

    for (i = 0; i < domains->nelts; i++) {
        if (d[i].name.len == domain->len
            && ngx_strncasecmp(d[i].name.data, domain->data, domain->len)
               == 0)
        {
            return &d[i];
        }
    }

    return NULL;
}


/* the domain of "local@domain": after the last "@"; NULL if none */

ngx_str_t *
ngx_relay_maildir_split(ngx_str_t *addr, ngx_str_t *domain)
{
    u_char  *p, *at;

    at = NULL;

    for (p = addr->data; p < addr->data + addr->len; p++) {
        if (*p == '@') {
            at = p;
        }
    }

    if (at == NULL || at + 1 == addr->data + addr->len) {
        return NULL;
    }

    domain->data = at + 1;
    domain->len = addr->data + addr->len - domain->data;

    return domain;
}


/*
 * The mailbox of an address in a local domain: the domain and the local
 * part, lowercased, the local part unquoted.  SMTP delivery and POP3
 * logins both map addresses here, so they meet in the same Maildir.
 * NGX_DECLINED: not in a local domain; NGX_ERROR: no safe mailbox name.
 */

ngx_int_t
ngx_relay_maildir_mailbox(ngx_array_t *domains, ngx_str_t *addr,
    ngx_relay_mailbox_t *mb)
{
    u_char     *p, *s, *last;
    ngx_str_t   domain;

    if (addr->len >= NGX_RELAY_MAX_ADDR
        || ngx_relay_maildir_split(addr, &domain) == NULL
        || ngx_relay_maildir_local_domain(domains, &domain) == NULL)
    {
        return NGX_DECLINED;
    }

    ngx_strlow(mb->domain_data, domain.data, domain.len);
    mb->domain.data = mb->domain_data;
    mb->domain.len = domain.len;

    last = domain.data - 1;              /* the "@" */
    s = mb->local_data;

    for (p = addr->data; p < last; p++) {
        if (*p == '"') {
            continue;
        }

        if (*p == '\\' && p + 1 < last) {
            p++;
        }

        *s++ = ngx_tolower(*p);
    }

    mb->local.data = mb->local_data;
    mb->local.len = s - mb->local_data;

    return ngx_relay_maildir_mailbox_valid(&mb->local) ? NGX_OK : NGX_ERROR;
}


ngx_int_t
ngx_relay_maildir_deliver(ngx_relay_maildir_job_t *job)
{
    int        dfd;
    u_char    *p, *base, *end, tmp[NGX_MAX_PATH], new[NGX_MAX_PATH];
    ngx_fd_t   fd;

    if (job->root.len + job->domain.len + job->mailbox.len + job->name.len
        + sizeof("//new/:2,") >= NGX_MAX_PATH)
    {
        job->err = ENAMETOOLONG;
        job->failed = "path";
        return NGX_ERROR;
    }

    p = ngx_cpymem(tmp, job->root.data, job->root.len);
    p = ngx_cpymem(p, job->domain.data, job->domain.len);
    *p++ = '/';
    p = ngx_cpymem(p, job->mailbox.data, job->mailbox.len);
    *p++ = '/';
    base = p;
    *p = '\0';

    if (ngx_relay_maildir_mkdirs(tmp, base, job) != NGX_OK) {
        return NGX_ERROR;
    }

    ngx_memcpy(new, tmp, base - tmp);
    end = new + (base - tmp);

    if (ngx_relay_maildir_seen(new, end, &job->name)) {
        return NGX_DECLINED;
    }

    p = ngx_cpymem(base, "tmp/", 4);
    p = ngx_cpymem(p, job->name.data, job->name.len);
    *p = '\0';

    fd = open((char *) tmp, O_WRONLY|O_CREAT|O_TRUNC|O_CLOEXEC, 0600);
    if (fd == -1) {
        return ngx_relay_maildir_fail(job, "open");
    }

    if (ngx_relay_maildir_copy(fd, job) != NGX_OK) {
        (void) close(fd);
        (void) unlink((char *) tmp);
        return NGX_ERROR;
    }

    if (fsync(fd) == -1) {
        ngx_relay_maildir_fail(job, "fsync");
        (void) close(fd);
        (void) unlink((char *) tmp);
        return NGX_ERROR;
    }

    if (close(fd) == -1) {
        ngx_relay_maildir_fail(job, "close");
        (void) unlink((char *) tmp);
        return NGX_ERROR;
    }

    p = ngx_cpymem(end, "new/", 4);
    p = ngx_cpymem(p, job->name.data, job->name.len);
    *p = '\0';

    if (rename((char *) tmp, (char *) new) == -1) {
        ngx_relay_maildir_fail(job, "rename");
        (void) unlink((char *) tmp);
        return NGX_ERROR;
    }

    end[4] = '\0';                                /* ".../new/" */

    dfd = open((char *) new, O_RDONLY|O_DIRECTORY|O_CLOEXEC);
    if (dfd == -1) {
        return ngx_relay_maildir_fail(job, "open");
    }

    if (fsync(dfd) == -1) {
        ngx_relay_maildir_fail(job, "fsync");
        (void) close(dfd);
        return NGX_ERROR;
    }

    (void) close(dfd);

    return NGX_OK;
}


/* path is "<root><domain>/<mailbox>/", end points past its last "/" */

static ngx_int_t
ngx_relay_maildir_mkdirs(u_char *path, u_char *end,
    ngx_relay_maildir_job_t *job)
{
    u_char       *p;
    ngx_uint_t    i;
    struct stat   st;

    static const char  *subdirs[] = { "tmp", "new", "cur" };

    ngx_memcpy(end, "new", 4);

    if (stat((char *) path, &st) == 0) {
        *end = '\0';
        return NGX_OK;                  /* the usual case: it exists */
    }

    /* create every missing component below the root */

    for (p = path + job->root.len; p < end; p++) {
        if (*p != '/') {
            continue;
        }

        *p = '\0';

        if (mkdir((char *) path, 0700) == -1 && errno != EEXIST) {
            *p = '/';
            return ngx_relay_maildir_fail(job, "mkdir");
        }

        *p = '/';
    }

    for (i = 0; i < 3; i++) {
        ngx_memcpy(end, subdirs[i], 4);

        if (mkdir((char *) path, 0700) == -1 && errno != EEXIST) {
            return ngx_relay_maildir_fail(job, "mkdir");
        }
    }

    *end = '\0';

    return NGX_OK;
}


static ngx_int_t
ngx_relay_maildir_seen(u_char *base, u_char *end, ngx_str_t *name)
{
    u_char       *p;
    struct stat   st;

    p = ngx_cpymem(end, "new/", 4);
    p = ngx_cpymem(p, name->data, name->len);
    *p = '\0';

    if (stat((char *) base, &st) == 0) {
        return 1;
    }

    p = ngx_cpymem(end, "cur/", 4);
    p = ngx_cpymem(p, name->data, name->len);
    p = ngx_cpymem(p, ":2,", 3);
    *p = '\0';

    if (stat((char *) base, &st) == 0) {
        return 1;
    }

    *end = '\0';

    return 0;
}


static ngx_int_t
ngx_relay_maildir_copy(ngx_fd_t fd, ngx_relay_maildir_job_t *job)
{
    u_char   *buf, *p;
    off_t     offset, left;
    size_t    len;
    ssize_t   n;

    buf = malloc(NGX_RELAY_COPY_BUF);
    if (buf == NULL) {
        job->err = ENOMEM;
        job->failed = "malloc";
        return NGX_ERROR;
    }

    p = ngx_cpymem(buf, job->headers.data, job->headers.len);

    offset = job->offset;
    left = job->size;

    for ( ;; ) {
        len = ngx_min((off_t) (buf + NGX_RELAY_COPY_BUF - p), left);

        if (len) {
            n = pread(job->src, p, len, offset);
            if (n == -1) {
                ngx_relay_maildir_fail(job, "pread");
                goto failed;
            }

            if (n == 0) {
                job->err = EIO;
                job->failed = "pread (queue file truncated)";
                goto failed;
            }

            p += n;
            offset += n;
            left -= n;
        }

        if (p == buf) {
            break;
        }

        len = p - buf;

        if (write(fd, buf, len) != (ssize_t) len) {
            ngx_relay_maildir_fail(job, "write");
            if (job->err == 0) {
                job->err = ENOSPC;
            }
            goto failed;
        }

        p = buf;
    }

    free(buf);
    return NGX_OK;

failed:

    free(buf);
    return NGX_ERROR;
}


static ngx_int_t
ngx_relay_maildir_fail(ngx_relay_maildir_job_t *job, const char *call)
{
    job->err = errno;
    job->failed = call;
    return NGX_ERROR;
}
