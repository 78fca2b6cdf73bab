
/*
 * Copyright (C) The relay authors
 */


/*
 * Users files and password checks.  Files are read at configuration time
 * (a reload re-reads them) into an exact-match hash of lowercased names.
 * crypt(3) is deliberately slow, so it runs in the thread pool.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <crypt.h>
#include <ngx_relay_auth.h>


static ngx_int_t ngx_relay_users_add(ngx_conf_t *cf, ngx_hash_keys_arrays_t *ha,
    u_char *p, u_char *last, ngx_str_t *domain);


ngx_hash_t *
ngx_relay_users_load(ngx_conf_t *cf, ngx_str_t *path, ngx_str_t *domain)
{
    u_char                  *p, *eol, *last;
    ssize_t                  n;
    ngx_fd_t                 fd;
    ngx_str_t                name;
    ngx_file_t               file;
    ngx_hash_t              *hash;
    ngx_file_info_t          fi;
    ngx_hash_init_t          hinit;
    ngx_hash_keys_arrays_t   ha;

    name = *path;

    if (ngx_conf_full_name(cf->cycle, &name, 1) != NGX_OK) {
        return NULL;
    }

    fd = ngx_open_file(name.data, NGX_FILE_RDONLY, NGX_FILE_OPEN, 0);
    if (fd == NGX_INVALID_FILE) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           ngx_open_file_n " \"%V\" failed", &name);
        return NULL;
    }

    ngx_memzero(&file, sizeof(ngx_file_t));
    file.fd = fd;
    file.name = name;
    file.log = cf->log;

    if (ngx_fd_info(fd, &fi) == NGX_FILE_ERROR
        || ngx_file_size(&fi) > 64 * 1024 * 1024)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           "users file \"%V\" unreadable or too large",
                           &name);
        (void) ngx_close_file(fd);
        return NULL;
    }

    p = ngx_pnalloc(cf->temp_pool, ngx_file_size(&fi) + 1);
    if (p == NULL) {
        (void) ngx_close_file(fd);
        return NULL;
    }

    n = ngx_read_file(&file, p, ngx_file_size(&fi), 0);
    (void) ngx_close_file(fd);

    if (n == NGX_ERROR) {
        return NULL;
    }

    last = p + n;

    ngx_memzero(&ha, sizeof(ngx_hash_keys_arrays_t));
    ha.temp_pool = cf->temp_pool;
    ha.pool = cf->pool;

    if (ngx_hash_keys_array_init(&ha, NGX_HASH_LARGE) != NGX_OK) {
        return NULL;
    }

    while (p < last) {
        eol = ngx_strlchr(p, last, '\n');
        if (eol == NULL) {
            eol = last;
        }

        if (ngx_relay_users_add(cf, &ha, p, eol, domain) != NGX_OK) {
            return NULL;
        }

        p = eol + 1;
    }

    hash = ngx_pcalloc(cf->pool, sizeof(ngx_hash_t));
    if (hash == NULL) {
        return NULL;
    }

    hinit.hash = hash;
    hinit.key = ngx_hash_key_lc;
    hinit.max_size = 65536;
    hinit.bucket_size = ngx_align(128, ngx_cacheline_size);
    hinit.name = "relay_users_hash";
    hinit.pool = cf->pool;
    hinit.temp_pool = NULL;

    if (ngx_hash_init(&hinit, ha.keys.elts, ha.keys.nelts) != NGX_OK) {
        return NULL;
    }

    return hash;
}


static ngx_int_t
ngx_relay_users_add(ngx_conf_t *cf, ngx_hash_keys_arrays_t *ha, u_char *p,
    u_char *last, ngx_str_t *domain)
{
    u_char     *colon, *at;
    ngx_int_t   rc;
    ngx_str_t   key, *value;

    while (p < last && (*p == ' ' || *p == '\t')) {
        p++;
    }

    while (last > p && (last[-1] == '\r' || last[-1] == ' '
                        || last[-1] == '\t'))
    {
        last--;
    }

    if (p == last || *p == '#') {
        return NGX_OK;
    }

    value = ngx_pcalloc(cf->pool, sizeof(ngx_str_t));
    if (value == NULL) {
        return NGX_ERROR;
    }

    colon = ngx_strlchr(p, last, ':');

    key.data = p;
    key.len = (colon ? colon : last) - p;

    if (colon) {
        value->len = last - colon - 1;
        value->data = ngx_pstrdup(cf->pool, &(ngx_str_t) { value->len,
                                                           colon + 1 });
        if (value->data == NULL) {
            return NGX_ERROR;
        }
    }

    if (domain) {
        /* a local domain's list: "user" or "user@<that domain>" */

        at = ngx_strlchr(key.data, key.data + key.len, '@');

        if (at) {
            if ((size_t) (key.data + key.len - at - 1) != domain->len
                || ngx_strncasecmp(at + 1, domain->data, domain->len) != 0)
            {
                return NGX_OK;
            }

            key.len = at - key.data;
        }
    }

    if (key.len == 0) {
        return NGX_OK;
    }

    key.data = ngx_pstrdup(cf->pool, &key);
    if (key.data == NULL) {
        return NGX_ERROR;
    }

    ngx_strlow(key.data, key.data, key.len);

    rc = ngx_hash_add_key(ha, &key, value, NGX_HASH_READONLY_KEY);

    if (rc == NGX_BUSY) {
        ngx_conf_log_error(NGX_LOG_WARN, cf, 0,
                           "duplicate user \"%V\" ignored", &key);
        return NGX_OK;
    }

    return rc;
}


ngx_str_t *
ngx_relay_users_find(ngx_hash_t *users, ngx_str_t *name)
{
    u_char      buf[512];
    ngx_uint_t  key;

    if (users == NULL || name->len == 0 || name->len > sizeof(buf)) {
        return NULL;
    }

    key = ngx_hash_strlow(buf, name->data, name->len);

    return ngx_hash_find(users, key, buf, name->len);
}


void
ngx_relay_auth_check_thread(void *data, ngx_log_t *log)
{
    ngx_relay_auth_check_t  *ac = data;

    char                *out;
    u_char              *pw, *salt;
    struct crypt_data   *cd;

    ac->ok = 0;

    if (ac->hash.len == 0 || ac->passwd == NULL) {
        return;
    }

    cd = calloc(1, sizeof(struct crypt_data));
    pw = malloc(ac->passwd_len + 1);
    salt = malloc(ac->hash.len + 1);

    if (cd && pw && salt) {
        ngx_memcpy(pw, ac->passwd, ac->passwd_len);
        pw[ac->passwd_len] = '\0';
        ngx_memcpy(salt, ac->hash.data, ac->hash.len);
        salt[ac->hash.len] = '\0';

        out = crypt_r((char *) pw, (char *) salt, cd);

        ac->ok = (out != NULL && out[0] != '*'
                  && ngx_strlen(out) == ac->hash.len
                  && ngx_memcmp(out, ac->hash.data, ac->hash.len) == 0);

        explicit_bzero(pw, ac->passwd_len);
        explicit_bzero(cd, sizeof(struct crypt_data));
    }

    free(pw);
    free(salt);
    free(cd);
}
