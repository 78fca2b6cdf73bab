
/*
 * Copyright (C) The relay authors
 */


#ifndef _NGX_RELAY_AUTH_H_INCLUDED_
#define _NGX_RELAY_AUTH_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>


/*
 * A users file: one "name[:crypt-hash]" per line, "#" comments.  For AUTH
 * the names are logins ("user@domain" or "user"); for a local domain's user
 * list "user" and "user@thatdomain" both name the local part "user".
 */

ngx_hash_t *ngx_relay_users_load(ngx_conf_t *cf, ngx_str_t *path,
    ngx_str_t *domain);
ngx_str_t *ngx_relay_users_find(ngx_hash_t *users, ngx_str_t *name);


/* crypt(3) check of a password, run in a thread-pool task */

typedef struct {
    ngx_str_t          hash;           /* from the users file */
    u_char            *passwd;         /* malloc()ed copy, wiped after use */
    size_t             passwd_len;
    ngx_uint_t         ok;
} ngx_relay_auth_check_t;

void ngx_relay_auth_check_thread(void *data, ngx_log_t *log);


#endif /* _NGX_RELAY_AUTH_H_INCLUDED_ */
