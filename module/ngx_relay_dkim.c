
/*
 * Copyright (C) The relay authors
 */


/*
 * DKIM signing at acceptance (RFC 6376; Ed25519, RFC 8463): one signer
 * per message from a trusted network or an authenticated client, hooked
 * into the queue file's writer as its transform (ngx_relay_spool.c), so
 * the message is signed once and the queue holds the signed octets:
 * retries, another node after a move and DSN copies see the same bytes.
 *
 *   event loop, start():  at the writer's first flush or the end of data,
 *       the header block is copied, the From: domain found and its keys
 *       (the policy's, the fleet's first; else the envelope sender's
 *       domain's keys that say fallback=envelope) copied: threads never
 *       read the policy, which a new version may free.
 *   thread, feed():       the body is canonicalized and hashed as the
 *       spool's tasks write it (64 KB at a time when it is written out as
 *       it arrives, whole when the spool kept it in memory).
 *   thread, finish():     the header fields are selected and hashed, the
 *       signature made, the DKIM-Signature fields written into the room
 *       the spool reserved before the message.
 *
 * Keys are read and parsed once per process and kept (the master reads
 * nginx.conf's, which the workers inherit; the fleet's are read when a
 * node checks a new policy, and again when the file changes).
 *
 * Why OpenSSL and not libopendkim: measured here (OpenSSL 3.0, one core),
 * libopendkim's dkim_sign() to dkim_getsighdr() takes 2.1 ms per message
 * with an RSA-2048 key and 0.86 ms with Ed25519, against 0.45 ms and
 * 0.07 ms for the signatures alone: it decodes the PEM key for every
 * message, and OpenSSL 3.0's decoders take 0.47 to 0.58 ms for that,
 * behind locks the threads share.  Canonicalization is ours, tested
 * against python3-dkim's verifier.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <sys/stat.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <ngx_relay_dkim.h>


#define NGX_RELAY_DKIM_H_MAX  1024       /* octets of h=, folded */
#define NGX_RELAY_DKIM_FOLD   72


typedef struct {
    EVP_MD_CTX               *md;
    size_t                    n;
    u_char                    out[2048];
} ngx_relay_dkim_out_t;


/* a body canonicalization and its hash, as the octets come */

typedef struct {
    ngx_relay_dkim_out_t      out;
    ngx_uint_t                relaxed;
    ngx_uint_t                crlfs;         /* empty lines withheld */
    unsigned                  cr:1;          /* a CR withheld */
    unsigned                  wsp:1;         /* white space withheld */
    unsigned                  any:1;         /* content emitted */
    u_char                    bh[EVP_MAX_MD_SIZE * 2];
} ngx_relay_dkim_body_t;


typedef struct {
    u_char                   *data;          /* the field with its CRLF */
    size_t                    len;
    size_t                    name_len;
} ngx_relay_dkim_field_t;


struct ngx_relay_dkim_s {
    ngx_relay_spool_transform_t   transform;
    ngx_pool_t                   *pool;
    ngx_log_t                    *log;
    ngx_relay_policy_t           *policy;
    ngx_str_t                     sender;    /* envelope sender's domain */

    ngx_array_t                   fields;    /* ngx_relay_dkim_field_t */
    off_t                         skip;      /* message octets before body */
    off_t                         fed;

    ngx_relay_dkim_body_t         body[2];   /* simple, relaxed */
    ngx_relay_dkim_key_t          keys[NGX_RELAY_DKIM_MAX_SIGS];
    ngx_uint_t                    nkeys;
    ngx_uint_t                    signed_keys;  /* bits: made */

    unsigned                      failed:1;  /* refused: 451 */
    unsigned                      skipped:1; /* on_error=send used */
    u_char                        error[160];
};


typedef struct ngx_relay_dkim_cached_s  ngx_relay_dkim_cached_t;

struct ngx_relay_dkim_cached_s {
    ngx_relay_dkim_cached_t      *next;
    EVP_PKEY                     *pkey;
    dev_t                         dev;
    ino_t                         ino;
    time_t                        mtime;
    off_t                         size;
    char                          path[1];
};


static ngx_int_t ngx_relay_dkim_start(void *data, u_char *p, size_t len,
    ngx_uint_t whole);
static void ngx_relay_dkim_feed(void *data, u_char *p, size_t len);
static ngx_int_t ngx_relay_dkim_finish(void *data, u_char *buf, size_t *len);
static ngx_int_t ngx_relay_dkim_fields(ngx_relay_dkim_t *dk, u_char *p,
    size_t len);
static ngx_int_t ngx_relay_dkim_from(ngx_relay_dkim_t *dk, ngx_str_t *domain);
static ngx_uint_t ngx_relay_dkim_keys_of(ngx_relay_dkim_t *dk,
    ngx_str_t *domain, ngx_uint_t fallback);
static void ngx_relay_dkim_cleanup(void *data);
static void ngx_relay_dkim_body(ngx_relay_dkim_body_t *b, u_char *p,
    u_char *last);
static void ngx_relay_dkim_body_end(ngx_relay_dkim_body_t *b);
static void ngx_relay_dkim_flush(ngx_relay_dkim_out_t *o);
static void ngx_relay_dkim_emit_run(ngx_relay_dkim_out_t *o, u_char *p,
    size_t len);
static u_char *ngx_relay_dkim_sign(ngx_relay_dkim_t *dk,
    ngx_relay_dkim_key_t *key, u_char *p, u_char *last);
static ngx_uint_t ngx_relay_dkim_listed(u_char *list, u_char *name,
    size_t n);
static ngx_int_t ngx_relay_dkim_copy(ngx_pool_t *pool, ngx_str_t *s);
static void ngx_relay_dkim_header(ngx_relay_dkim_out_t *o, u_char *p,
    size_t len, ngx_uint_t relaxed, ngx_uint_t crlf);
static EVP_PKEY *ngx_relay_dkim_key(const char *path, ngx_uint_t algorithm,
    char *err, size_t errlen);
static EVP_PKEY *ngx_relay_dkim_key_read(const char *path, char *err,
    size_t errlen);


/* RFC 6376 5.4.1; "from" is signed once more than it appears */

static const char  ngx_relay_dkim_default_headers[] =
    "from:reply-to:subject:date:to:cc:resent-date:resent-from:resent-to:"
    "resent-cc:in-reply-to:references:list-id:list-help:list-unsubscribe:"
    "list-subscribe:list-post:list-owner:list-archive";


static pthread_mutex_t           ngx_relay_dkim_mutex =
                                     PTHREAD_MUTEX_INITIALIZER;
static ngx_relay_dkim_cached_t  *ngx_relay_dkim_cache;


/* ---------------------------------------------------------------- policy */


ngx_int_t
ngx_relay_dkim_build(ngx_pool_t *pool, ngx_array_t **keys, size_t *reserve,
    relay_policy_t *pp)
{
    size_t                 i, j, n, most;
    ngx_relay_dkim_key_t  *k;
    relay_policy_dkim_t   *d;

    *keys = NULL;
    *reserve = 0;

    if (pp->n_dkim == 0) {
        return NGX_OK;
    }

    *keys = ngx_array_create(pool, pp->n_dkim, sizeof(ngx_relay_dkim_key_t));
    if (*keys == NULL) {
        return NGX_ERROR;
    }

    most = 0;

    for (i = 0; i < pp->n_dkim; i++) {
        d = pp->dkim[i];

        k = ngx_array_push(*keys);
        if (k == NULL) {
            return NGX_ERROR;
        }

        ngx_memzero(k, sizeof(ngx_relay_dkim_key_t));

        k->domain.len = ngx_strlen(d->domain);
        k->domain.data = (u_char *) d->domain;
        k->selector.len = ngx_strlen(d->selector);
        k->selector.data = (u_char *) d->selector;
        k->headers.len = ngx_strlen(d->headers);
        k->headers.data = (u_char *) d->headers;
        k->file.len = ngx_strlen(d->key_file);
        k->file.data = (u_char *) d->key_file;

        /* copies: the message is freed after the build */

        if (ngx_relay_dkim_copy(pool, &k->domain) != NGX_OK
            || ngx_relay_dkim_copy(pool, &k->selector) != NGX_OK
            || ngx_relay_dkim_copy(pool, &k->headers) != NGX_OK
            || ngx_relay_dkim_copy(pool, &k->file) != NGX_OK)
        {
            return NGX_ERROR;
        }

        k->algorithm = (ngx_strcmp(d->algorithm, "ed25519-sha256") == 0)
                       ? NGX_RELAY_DKIM_ED25519_SHA256
                       : NGX_RELAY_DKIM_RSA_SHA256;

        k->header_canon = (ngx_strncmp(d->canonicalization, "simple/", 7)
                           == 0)
                          ? NGX_RELAY_DKIM_SIMPLE : NGX_RELAY_DKIM_RELAXED;
        k->body_canon = (ngx_strlen(d->canonicalization) > 7
                         && ngx_strcmp(d->canonicalization
                                       + ngx_strlen(d->canonicalization) - 7,
                                       "/simple") == 0)
                        ? NGX_RELAY_DKIM_SIMPLE : NGX_RELAY_DKIM_RELAXED;

        k->expire = d->expire_s;
        k->fallback = (d->fallback[0] != '\0');
        k->send = (ngx_strcmp(d->on_error, "send") == 0);

        /* the room a message's signatures need: the most of one domain */

        for (j = 0, n = 0; j < pp->n_dkim; j++) {
            n += (ngx_strcmp(pp->dkim[j]->domain, d->domain) == 0);
        }

        most = ngx_max(most, ngx_min(n, NGX_RELAY_DKIM_MAX_SIGS));
    }

    *reserve = most * NGX_RELAY_DKIM_FIELD_MAX;

    return NGX_OK;
}


int
ngx_relay_dkim_check(relay_policy_t *pp, char *err, size_t errlen)
{
    char                  why[256];
    size_t                i;
    EVP_PKEY             *pkey;
    relay_policy_dkim_t  *d;

    for (i = 0; i < pp->n_dkim; i++) {
        d = pp->dkim[i];

        pkey = ngx_relay_dkim_key(d->key_file,
                                  ngx_strcmp(d->algorithm, "ed25519-sha256")
                                  == 0 ? NGX_RELAY_DKIM_ED25519_SHA256
                                       : NGX_RELAY_DKIM_RSA_SHA256,
                                  why, sizeof(why));
        if (pkey == NULL) {
            (void) snprintf(err, errlen, "dkim[%zu].key_file: %s", i, why);
            return -1;
        }

        EVP_PKEY_free(pkey);
    }

    return 0;
}


/* ---------------------------------------------------------------- signer */


ngx_relay_dkim_t *
ngx_relay_dkim_create(ngx_pool_t *pool, ngx_log_t *log,
    ngx_relay_policy_t *policy, ngx_str_t *sender, size_t reserve)
{
    u_char              *at;
    ngx_relay_dkim_t    *dk;
    ngx_pool_cleanup_t  *cln;

    dk = ngx_pcalloc(pool, sizeof(ngx_relay_dkim_t));
    if (dk == NULL) {
        return NULL;
    }

    cln = ngx_pool_cleanup_add(pool, 0);
    if (cln == NULL) {
        return NULL;
    }

    cln->handler = ngx_relay_dkim_cleanup;
    cln->data = dk;

    dk->pool = pool;
    dk->log = log;
    dk->policy = policy;

    at = ngx_strlchr(sender->data, sender->data + sender->len, '@');

    if (at) {
        dk->sender.len = sender->data + sender->len - (at + 1);
        dk->sender.data = ngx_pnalloc(pool, dk->sender.len);
        if (dk->sender.data == NULL) {
            return NULL;
        }

        ngx_strlow(dk->sender.data, at + 1, dk->sender.len);
    }

    dk->transform.reserve = reserve;
    dk->transform.data = dk;
    dk->transform.start = ngx_relay_dkim_start;
    dk->transform.feed = ngx_relay_dkim_feed;
    dk->transform.finish = ngx_relay_dkim_finish;

    return dk;
}


ngx_relay_spool_transform_t *
ngx_relay_dkim_transform(ngx_relay_dkim_t *dk)
{
    return &dk->transform;
}


static void
ngx_relay_dkim_cleanup(void *data)
{
    ngx_relay_dkim_t  *dk = data;

    ngx_uint_t  i;

    for (i = 0; i < 2; i++) {
        if (dk->body[i].out.md) {
            EVP_MD_CTX_free(dk->body[i].out.md);
            dk->body[i].out.md = NULL;
        }
    }
}


/*
 * Event loop: the header block (from the start of the message to its
 * empty line; our Received: is its first field), the From: domain and its
 * keys.  NGX_DECLINED: nothing to sign.
 */

static ngx_int_t
ngx_relay_dkim_start(void *data, u_char *p, size_t len, ngx_uint_t whole)
{
    ngx_relay_dkim_t  *dk = data;

    u_char      *end;
    ngx_str_t    domain;
    ngx_uint_t   i, b, send;

    if (len >= 2 && p[0] == CR && p[1] == LF) {
        end = p;                             /* no header at all */
        dk->skip = 2;

    } else {
        end = ngx_strlcasestrn(p, p + len, (u_char *) "\r\n\r\n", 4 - 1);

        if (end) {
            end += 2;
            dk->skip = end + 2 - p;

        } else if (whole) {
            end = p + len;                   /* a header without a body */
            dk->skip = len;

        } else {
            end = NULL;
        }
    }

    if (ngx_relay_dkim_fields(dk, p, end ? (size_t) (end - p) : len)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (ngx_relay_dkim_from(dk, &domain) != NGX_OK
        || (ngx_relay_dkim_keys_of(dk, &domain, 0) == 0
            && ngx_relay_dkim_keys_of(dk, &dk->sender, 1) == 0))
    {
        return NGX_DECLINED;                 /* nobody to sign for */
    }

    if (end == NULL) {
        ngx_sprintf(dk->error, "header of over %uz octets%Z", len);

        for (i = 0, send = 1; i < dk->nkeys; i++) {
            send &= dk->keys[i].send;
        }

        if (send) {
            dk->skipped = 1;
            dk->nkeys = 0;
            return NGX_DECLINED;
        }

        dk->failed = 1;
        return NGX_ERROR;
    }

    /* the fields' octets outlive the writer's buffer */

    for (i = 0; i < dk->fields.nelts; i++) {
        ngx_relay_dkim_field_t  *f = &((ngx_relay_dkim_field_t *)
                                       dk->fields.elts)[i];
        u_char                  *copy;

        copy = ngx_pnalloc(dk->pool, f->len);
        if (copy == NULL) {
            return NGX_ERROR;
        }

        f->data = ngx_cpymem(copy, f->data, f->len) - f->len;
    }

    for (i = 0; i < dk->nkeys; i++) {
        b = dk->keys[i].body_canon;

        if (dk->body[b].out.md) {
            continue;
        }

        dk->body[b].relaxed = (b == NGX_RELAY_DKIM_RELAXED);
        dk->body[b].out.md = EVP_MD_CTX_new();

        if (dk->body[b].out.md == NULL
            || EVP_DigestInit_ex(dk->body[b].out.md, EVP_sha256(), NULL) != 1)
        {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


/* the header block split into fields (a field's folded lines included) */

static ngx_int_t
ngx_relay_dkim_fields(ngx_relay_dkim_t *dk, u_char *p, size_t len)
{
    u_char                  *last, *start, *colon;
    ngx_relay_dkim_field_t  *f;

    if (ngx_array_init(&dk->fields, dk->pool, 16,
                       sizeof(ngx_relay_dkim_field_t))
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    last = p + len;

    while (p < last) {
        start = p;

        /* to the end of the field: a line end not followed by WSP */

        for ( ;; ) {
            p = ngx_strlchr(p, last, LF);

            if (p == NULL) {
                p = last;
                break;
            }

            p++;

            if (p == last || (*p != ' ' && *p != '\t')) {
                break;
            }
        }

        colon = ngx_strlchr(start, p, ':');
        if (colon == NULL) {
            continue;                        /* not a field: not signed */
        }

        f = ngx_array_push(&dk->fields);
        if (f == NULL) {
            return NGX_ERROR;
        }

        f->data = start;
        f->len = p - start;

        for (f->name_len = colon - start;
             f->name_len && (start[f->name_len - 1] == ' '
                             || start[f->name_len - 1] == '\t');
             f->name_len--)
        {
            /* void */
        }
    }

    return NGX_OK;
}


/*
 * The domain of the first From: field's first address: inside "<...>"
 * when there is one, outside quoted strings and comments, after the last
 * "@".  Lowercase, without a final dot.
 */

static ngx_int_t
ngx_relay_dkim_from(ngx_relay_dkim_t *dk, ngx_str_t *domain)
{
    u_char                  *p, *last, *at, *start, ch;
    ngx_uint_t               i, quoted, comment, angle;
    ngx_relay_dkim_field_t  *f;

    f = dk->fields.elts;

    for (i = 0; i < dk->fields.nelts; i++) {
        if (f[i].name_len == 4
            && ngx_strncasecmp(f[i].data, (u_char *) "from", 4) == 0)
        {
            break;
        }
    }

    if (i == dk->fields.nelts) {
        return NGX_DECLINED;
    }

    p = ngx_strlchr(f[i].data, f[i].data + f[i].len, ':') + 1;
    last = f[i].data + f[i].len;

    /* the angle address, if any */

    quoted = 0;
    comment = 0;
    angle = 0;
    start = p;

    for ( /* void */ ; p < last; p++) {
        ch = *p;

        if (quoted) {
            if (ch == '\\' && p + 1 < last) {
                p++;

            } else if (ch == '"') {
                quoted = 0;
            }

            continue;
        }

        if (ch == '"') {
            quoted = 1;

        } else if (ch == '(') {
            comment++;

        } else if (ch == ')' && comment) {
            comment--;

        } else if (!comment && ch == '<') {
            start = p + 1;
            angle = 1;

        } else if (!comment && (ch == '>' || (ch == ',' && !angle))) {
            break;
        }
    }

    last = p;
    at = NULL;

    for (p = start; p < last; p++) {
        if (*p == '@') {
            at = p;
        }
    }

    if (at == NULL) {
        return NGX_DECLINED;
    }

    for (p = at + 1; p < last; p++) {
        ch = *p;

        if (ch == ' ' || ch == '\t' || ch == CR || ch == LF || ch == '('
            || ch == ';' || ch == '>')
        {
            break;
        }
    }

    if (p > at + 1 && p[-1] == '.') {
        p--;
    }

    domain->len = p - (at + 1);

    if (domain->len == 0 || domain->len > 253) {
        return NGX_DECLINED;
    }

    domain->data = ngx_pnalloc(dk->pool, domain->len);
    if (domain->data == NULL) {
        return NGX_ERROR;
    }

    ngx_strlow(domain->data, at + 1, domain->len);

    return NGX_OK;
}


/* the keys of domain (those that say fallback=envelope, for the sender) */

static ngx_uint_t
ngx_relay_dkim_keys_of(ngx_relay_dkim_t *dk, ngx_str_t *domain,
    ngx_uint_t fallback)
{
    ngx_uint_t             i;
    ngx_array_t           *keys;
    ngx_relay_dkim_key_t  *k;

    if (domain->len == 0) {
        return 0;
    }

    keys = ngx_relay_policy_dkim(dk->policy, domain);
    if (keys == NULL) {
        return 0;
    }

    k = keys->elts;

    for (i = 0; i < keys->nelts && dk->nkeys < NGX_RELAY_DKIM_MAX_SIGS; i++) {
        if (k[i].domain.len != domain->len
            || ngx_strncmp(k[i].domain.data, domain->data, domain->len) != 0
            || (fallback && !k[i].fallback))
        {
            continue;
        }

        /* a copy: a new policy version may free the table */

        dk->keys[dk->nkeys] = k[i];

        if (ngx_relay_dkim_copy(dk->pool, &dk->keys[dk->nkeys].domain)
            != NGX_OK
            || ngx_relay_dkim_copy(dk->pool, &dk->keys[dk->nkeys].selector)
               != NGX_OK
            || ngx_relay_dkim_copy(dk->pool, &dk->keys[dk->nkeys].headers)
               != NGX_OK
            || ngx_relay_dkim_copy(dk->pool, &dk->keys[dk->nkeys].file)
               != NGX_OK)
        {
            return 0;
        }

        dk->nkeys++;
    }

    return dk->nkeys;
}


/* thread: the body, as the spool writes it */

static void
ngx_relay_dkim_feed(void *data, u_char *p, size_t len)
{
    ngx_relay_dkim_t  *dk = data;

    off_t       skip;
    ngx_uint_t  b;

    if (dk->fed < dk->skip) {
        skip = ngx_min((off_t) len, dk->skip - dk->fed);
        dk->fed += skip;
        p += skip;
        len -= skip;
    }

    if (len == 0) {
        return;
    }

    dk->fed += len;

    for (b = 0; b < 2; b++) {
        if (dk->body[b].out.md) {
            ngx_relay_dkim_body(&dk->body[b], p, p + len);
        }
    }
}


static ngx_inline void
ngx_relay_dkim_emit(ngx_relay_dkim_out_t *o, u_char ch)
{
    if (o->n == sizeof(o->out)) {
        (void) EVP_DigestUpdate(o->md, o->out, o->n);
        o->n = 0;
    }

    o->out[o->n++] = ch;
}


static void
ngx_relay_dkim_emit_run(ngx_relay_dkim_out_t *o, u_char *p, size_t len)
{
    if (o->n + len > sizeof(o->out)) {
        ngx_relay_dkim_flush(o);

        if (len >= sizeof(o->out)) {
            (void) EVP_DigestUpdate(o->md, p, len);
            return;
        }
    }

    ngx_memcpy(o->out + o->n, p, len);
    o->n += len;
}


static void
ngx_relay_dkim_flush(ngx_relay_dkim_out_t *o)
{
    if (o->n) {
        (void) EVP_DigestUpdate(o->md, o->out, o->n);
        o->n = 0;
    }
}


/* withheld empty lines and white space go out before content */

static ngx_inline void
ngx_relay_dkim_content(ngx_relay_dkim_body_t *b, u_char ch)
{
    for ( /* void */ ; b->crlfs; b->crlfs--) {
        ngx_relay_dkim_emit(&b->out, CR);
        ngx_relay_dkim_emit(&b->out, LF);
    }

    if (b->wsp) {
        ngx_relay_dkim_emit(&b->out, ' ');
        b->wsp = 0;
    }

    ngx_relay_dkim_emit(&b->out, ch);
    b->any = 1;
}


/*
 * RFC 6376 3.4.3 and 3.4.4.  Line ends are withheld until content follows,
 * so empty lines at the end never count; relaxed also withholds white
 * space, dropped at a line end and reduced to one SP before content.
 */

static void
ngx_relay_dkim_body(ngx_relay_dkim_body_t *b, u_char *p, u_char *last)
{
    u_char  ch, *run;

    while (p < last) {
        ch = *p++;

        if (b->cr) {
            b->cr = 0;

            if (ch == LF) {
                b->wsp = 0;
                b->crlfs++;
                continue;
            }

            ngx_relay_dkim_content(b, CR);   /* a bare CR is content */
        }

        if (ch == CR) {
            b->cr = 1;
            continue;
        }

        if (b->relaxed && (ch == ' ' || ch == '\t')) {
            b->wsp = 1;
            continue;
        }

        ngx_relay_dkim_content(b, ch);

        /*
         * Nothing is withheld now: the octets up to the next line end (or
         * white space, relaxed) go to the hash as they are, in one call.
         */

        for (run = p;
             p < last && *p != CR && *p != LF
             && !(b->relaxed && (*p == ' ' || *p == '\t'));
             p++)
        {
            /* void */
        }

        if (p > run) {
            ngx_relay_dkim_emit_run(&b->out, run, p - run);
        }
    }
}


static void
ngx_relay_dkim_body_end(ngx_relay_dkim_body_t *b)
{
    u_char        hash[EVP_MAX_MD_SIZE];
    unsigned int  len;

    if (b->cr) {
        b->cr = 0;
        ngx_relay_dkim_content(b, CR);
    }

    /* the last line's end; an empty body is CRLF (simple) or nothing */

    if (b->any || !b->relaxed) {
        ngx_relay_dkim_emit(&b->out, CR);
        ngx_relay_dkim_emit(&b->out, LF);
    }

    ngx_relay_dkim_flush(&b->out);

    if (EVP_DigestFinal_ex(b->out.md, hash, &len) != 1) {
        b->bh[0] = '\0';
        return;
    }

    b->bh[EVP_EncodeBlock(b->bh, hash, len)] = '\0';
}


/* thread: the DKIM-Signature fields into buf, one per key */

static ngx_int_t
ngx_relay_dkim_finish(void *data, u_char *buf, size_t *len)
{
    ngx_relay_dkim_t  *dk = data;

    u_char      *p, *q, *last;
    ngx_uint_t   i;

    for (i = 0; i < 2; i++) {
        if (dk->body[i].out.md) {
            ngx_relay_dkim_body_end(&dk->body[i]);
        }
    }

    p = buf;
    last = buf + dk->transform.reserve;

    for (i = 0; i < dk->nkeys; i++) {
        q = ngx_relay_dkim_sign(dk, &dk->keys[i], p,
                                ngx_min(last, p + NGX_RELAY_DKIM_FIELD_MAX));

        if (q) {
            dk->signed_keys |= 1 << i;
            p = q;
            continue;
        }

        if (!dk->keys[i].send) {
            dk->failed = 1;
            return NGX_ERROR;
        }

        dk->skipped = 1;
    }

    *len = p - buf;

    return NGX_OK;
}


/*
 * One signature: the field with "b=" empty, its header hash (the selected
 * fields, bottom up per name, then the field itself without its CRLF),
 * the signature, then "b=" filled in, folded.  NULL, with dk->error,
 * when the key or the room fails.
 */

static u_char *
ngx_relay_dkim_sign(ngx_relay_dkim_t *dk, ngx_relay_dkim_key_t *key,
    u_char *p, u_char *last)
{
    u_char                  *start, *name, *next, *hlast, *line;
    u_char                   hash[EVP_MAX_MD_SIZE], sig[1024];
    u_char                   b64[1400];
    size_t                   n, siglen, b64len;
    time_t                   now;
    ngx_str_t                list;
    ngx_int_t                k;
    ngx_uint_t               relaxed, from;
    unsigned int             hlen;
    EVP_PKEY                *pkey;
    EVP_MD_CTX              *md, *smd;
    EVP_PKEY_CTX            *pctx;
    ngx_relay_dkim_out_t     out;
    ngx_relay_dkim_field_t  *f;

    pkey = ngx_relay_dkim_key((char *) key->file.data, key->algorithm,
                              (char *) dk->error, sizeof(dk->error));
    if (pkey == NULL) {
        return NULL;
    }

    md = EVP_MD_CTX_new();
    smd = NULL;
    pctx = NULL;

    if (md == NULL || EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1) {
        goto failed;
    }

    out.md = md;
    out.n = 0;

    relaxed = (key->header_canon == NGX_RELAY_DKIM_RELAXED);
    now = time(NULL);
    start = p;

    if ((size_t) (last - p) < NGX_RELAY_DKIM_FIELD_MAX) {
        goto room;
    }

    p = ngx_sprintf(p, "DKIM-Signature: v=1; a=%s; c=%s/%s; d=%V; s=%V;"
                    CRLF "\tt=%T;",
                    key->algorithm == NGX_RELAY_DKIM_ED25519_SHA256
                    ? "ed25519-sha256" : "rsa-sha256",
                    key->header_canon ? "relaxed" : "simple",
                    key->body_canon ? "relaxed" : "simple",
                    &key->domain, &key->selector, now);

    if (key->expire) {
        p = ngx_sprintf(p, " x=%T;", now + key->expire);
    }

    p = ngx_cpymem(p, CRLF "\th=", 5);
    line = p - 3;

    /* h=: each name of the list, as often as it occurs, and From once more */

    if (key->headers.len) {
        list = key->headers;

    } else {
        list.data = (u_char *) ngx_relay_dkim_default_headers;
        list.len = sizeof(ngx_relay_dkim_default_headers) - 1;
    }

    hlast = p + NGX_RELAY_DKIM_H_MAX;
    f = dk->fields.elts;

    for (name = list.data; name < list.data + list.len; name = next + 1) {
        next = ngx_strlchr(name, list.data + list.len, ':');
        if (next == NULL) {
            next = list.data + list.len;
        }

        n = next - name;

        /* a name the list has twice is signed once (all its instances) */

        if (n == 0 || ngx_relay_dkim_listed(list.data, name, n)) {
            continue;
        }

        from = (n == 4 && ngx_strncmp(name, "from", 4) == 0);

        for (k = dk->fields.nelts - 1; k >= 0; k--) {
            if (f[k].name_len != n
                || ngx_strncasecmp(f[k].data, name, n) != 0)
            {
                continue;
            }

            if (p + n + 4 > hlast) {
                break;                       /* the rest goes unsigned */
            }

            if (p - line > NGX_RELAY_DKIM_FOLD) {
                p = ngx_cpymem(p, CRLF "\t ", 4);
                line = p - 2;
            }

            p = ngx_cpymem(p, name, n);
            *p++ = ':';

            ngx_relay_dkim_header(&out, f[k].data, f[k].len, relaxed, 1);
        }

        if (from) {
            p = ngx_cpymem(p, name, n);
            *p++ = ':';
        }
    }

    if (p[-1] == ':') {
        p--;
    }

    p = ngx_sprintf(p, ";" CRLF "\tbh=%s;" CRLF "\tb=",
                    dk->body[key->body_canon].bh);

    ngx_relay_dkim_header(&out, start, p - start, relaxed, 0);
    ngx_relay_dkim_flush(&out);

    if (EVP_DigestFinal_ex(md, hash, &hlen) != 1) {
        goto failed;
    }

    /* RFC 8463: Ed25519 signs the SHA-256 hash, as RSA signs its DigestInfo */

    siglen = sizeof(sig);

    if (key->algorithm == NGX_RELAY_DKIM_ED25519_SHA256) {
        smd = EVP_MD_CTX_new();

        if (smd == NULL
            || EVP_DigestSignInit(smd, NULL, NULL, NULL, pkey) != 1
            || EVP_DigestSign(smd, sig, &siglen, hash, hlen) != 1)
        {
            goto failed;
        }

    } else {
        pctx = EVP_PKEY_CTX_new(pkey, NULL);

        if (pctx == NULL
            || EVP_PKEY_sign_init(pctx) != 1
            || EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING) != 1
            || EVP_PKEY_CTX_set_signature_md(pctx, EVP_sha256()) != 1
            || EVP_PKEY_sign(pctx, sig, &siglen, hash, hlen) != 1)
        {
            goto failed;
        }
    }

    b64len = EVP_EncodeBlock(b64, sig, siglen);

    for (n = 0; n < b64len; n += NGX_RELAY_DKIM_FOLD - 8) {
        if (n) {
            p = ngx_cpymem(p, CRLF "\t ", 4);
        }

        p = ngx_cpymem(p, b64 + n, ngx_min(b64len - n,
                                           NGX_RELAY_DKIM_FOLD - 8));
    }

    p = ngx_cpymem(p, CRLF, 2);

    EVP_MD_CTX_free(md);
    EVP_MD_CTX_free(smd);
    EVP_PKEY_CTX_free(pctx);
    EVP_PKEY_free(pkey);

    return p;

room:

    ngx_sprintf(dk->error, "no room for the signature%Z");
    goto done;

failed:

    ngx_sprintf(dk->error, "signing with \"%V\" failed%Z", &key->file);

done:

    EVP_MD_CTX_free(md);
    EVP_MD_CTX_free(smd);
    EVP_PKEY_CTX_free(pctx);
    EVP_PKEY_free(pkey);

    return NULL;
}


/* whether the ":"-separated list names name before it */

static ngx_uint_t
ngx_relay_dkim_listed(u_char *list, u_char *name, size_t n)
{
    u_char  *q, *next;

    for (q = list; q < name; q = next + 1) {
        next = ngx_strlchr(q, name, ':');
        if (next == NULL) {
            break;
        }

        if ((size_t) (next - q) == n && ngx_strncmp(q, name, n) == 0) {
            return 1;
        }
    }

    return 0;
}


static ngx_int_t
ngx_relay_dkim_copy(ngx_pool_t *pool, ngx_str_t *s)
{
    u_char  *p;

    if (s->len == 0) {
        return NGX_OK;
    }

    p = ngx_pnalloc(pool, s->len + 1);
    if (p == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(p, s->data, s->len);
    p[s->len] = '\0';
    s->data = p;

    return NGX_OK;
}


/*
 * RFC 6376 3.4.1 and 3.4.2: simple is the field as it is; relaxed
 * lowercases the name, unfolds, reduces white space to one SP and drops
 * it at the end and around the colon.
 */

static void
ngx_relay_dkim_header(ngx_relay_dkim_out_t *o, u_char *p, size_t len,
    ngx_uint_t relaxed, ngx_uint_t crlf)
{
    u_char      ch, *last;
    ngx_uint_t  wsp, started;

    last = p + len;

    if (!relaxed) {
        for ( /* void */ ; p < last; p++) {
            ngx_relay_dkim_emit(o, *p);
        }

        return;
    }

    for ( /* void */ ; p < last && *p != ':'; p++) {
        ch = *p;

        if (ch != ' ' && ch != '\t' && ch != CR && ch != LF) {
            ngx_relay_dkim_emit(o, ngx_tolower(ch));
        }
    }

    ngx_relay_dkim_emit(o, ':');

    wsp = 0;
    started = 0;

    for (p++; p < last; p++) {
        ch = *p;

        if (ch == CR || ch == LF) {
            continue;
        }

        if (ch == ' ' || ch == '\t') {
            wsp = 1;
            continue;
        }

        if (wsp && started) {
            ngx_relay_dkim_emit(o, ' ');
        }

        wsp = 0;
        started = 1;
        ngx_relay_dkim_emit(o, ch);
    }

    if (crlf) {
        ngx_relay_dkim_emit(o, CR);
        ngx_relay_dkim_emit(o, LF);
    }
}


/* ---------------------------------------------------------------- results */


u_char *
ngx_relay_dkim_result(ngx_relay_dkim_t *dk, u_char *p, u_char *last)
{
    ngx_uint_t  i, n;

    for (i = 0, n = 0; i < dk->nkeys; i++) {
        if (dk->signed_keys & (1 << i)) {
            p = ngx_slprintf(p, last, "%s%V:%V", n++ ? "," : "",
                             &dk->keys[i].domain, &dk->keys[i].selector);
        }
    }

    if (dk->failed || dk->skipped) {
        p = ngx_slprintf(p, last, "%s%s (%s)", n ? " " : "",
                         dk->failed ? "failed" : "unsigned",
                         dk->error);
    }

    return p;
}


ngx_uint_t
ngx_relay_dkim_failed(ngx_relay_dkim_t *dk)
{
    return dk->failed;
}


/* ---------------------------------------------------------------- keys */


/*
 * A key of the process: read once and kept, read again when its file
 * changes; a file this process may not read any more (nginx.conf's keys,
 * read by the master) keeps the key read before.  Any thread; returns a
 * reference the caller frees.
 */

static EVP_PKEY *
ngx_relay_dkim_key(const char *path, ngx_uint_t algorithm, char *err,
    size_t errlen)
{
    int                       id, bits;
    size_t                    len;
    EVP_PKEY                 *pkey;
    struct stat               st;
    ngx_uint_t                same;
    ngx_relay_dkim_cached_t  *c;

    (void) pthread_mutex_lock(&ngx_relay_dkim_mutex);

    for (c = ngx_relay_dkim_cache; c; c = c->next) {
        if (ngx_strcmp(c->path, path) == 0) {
            break;
        }
    }

    same = 0;

    if (stat(path, &st) == 0) {
        same = (c && c->dev == st.st_dev && c->ino == st.st_ino
                && c->mtime == st.st_mtime && c->size == st.st_size);

    } else if (c == NULL) {
        (void) snprintf(err, errlen, "cannot read \"%s\": %s", path,
                        strerror(errno));
        goto failed;

    } else {
        same = 1;
    }

    if (!same) {
        pkey = ngx_relay_dkim_key_read(path, err, errlen);

        if (pkey == NULL && c == NULL) {
            goto failed;
        }

        if (pkey) {
            if (c == NULL) {
                len = ngx_strlen(path);

                c = calloc(1, sizeof(ngx_relay_dkim_cached_t) + len);
                if (c == NULL) {
                    EVP_PKEY_free(pkey);
                    (void) snprintf(err, errlen, "out of memory");
                    goto failed;
                }

                ngx_memcpy(c->path, path, len + 1);
                c->next = ngx_relay_dkim_cache;
                ngx_relay_dkim_cache = c;

            } else {
                EVP_PKEY_free(c->pkey);
            }

            c->pkey = pkey;
            c->dev = st.st_dev;
            c->ino = st.st_ino;
            c->mtime = st.st_mtime;
            c->size = st.st_size;
        }
    }

    pkey = c->pkey;
    id = EVP_PKEY_get_base_id(pkey);

    if (algorithm == NGX_RELAY_DKIM_ED25519_SHA256) {
        if (id != EVP_PKEY_ED25519) {
            (void) snprintf(err, errlen, "\"%s\" is not an Ed25519 key",
                            path);
            goto failed;
        }

    } else {
        bits = EVP_PKEY_get_bits(pkey);

        if (id != EVP_PKEY_RSA) {
            (void) snprintf(err, errlen, "\"%s\" is not an RSA key", path);
            goto failed;
        }

        if (bits < 1024 || bits > 4096) {
            (void) snprintf(err, errlen, "\"%s\" is an RSA key of %d bits, "
                            "not 1024 to 4096", path, bits);
            goto failed;
        }
    }

    if (EVP_PKEY_up_ref(pkey) != 1) {
        (void) snprintf(err, errlen, "out of memory");
        goto failed;
    }

    (void) pthread_mutex_unlock(&ngx_relay_dkim_mutex);

    return pkey;

failed:

    (void) pthread_mutex_unlock(&ngx_relay_dkim_mutex);

    return NULL;
}


static EVP_PKEY *
ngx_relay_dkim_key_read(const char *path, char *err, size_t errlen)
{
    FILE      *fp;
    EVP_PKEY  *pkey;

    fp = fopen(path, "re");
    if (fp == NULL) {
        (void) snprintf(err, errlen, "cannot read \"%s\": %s", path,
                        strerror(errno));
        return NULL;
    }

    pkey = PEM_read_PrivateKey(fp, NULL, NULL, NULL);

    (void) fclose(fp);

    if (pkey == NULL) {
        (void) snprintf(err, errlen, "\"%s\" is not a PEM private key",
                        path);
    }

    return pkey;
}
