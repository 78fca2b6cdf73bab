
/*
 * Copyright (C) The relay authors
 */


#ifndef _NGX_RELAY_REDIS_H_INCLUDED_
#define _NGX_RELAY_REDIS_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>


#define NGX_RELAY_REDIS_MAX_ARGS     256
#define NGX_RELAY_REDIS_MAX_INTS     4


/* an address of relay_limit_redis: numeric host and port, or a path */

typedef struct {
    ngx_str_t                    name;         /* as written, for logs */
    u_char                       host[NGX_SOCKADDR_STRLEN + 1];
    int                          port;         /* 0: host is a unix path */
} ngx_relay_redis_addr_t;


typedef struct {
    ngx_array_t                 *addrs;        /* NULL: no Redis */
    ngx_str_t                    user;         /* "": AUTH password only */
    ngx_str_t                    password;     /* "": no AUTH */
    ngx_int_t                    database;
    ngx_msec_t                   timeout;      /* of one command */
} ngx_relay_redis_conf_t;


/* what an answer said, copied out of hiredis's reply */

typedef struct {
    ngx_int_t                    rc;           /* NGX_OK: an answer;
                                                  NGX_ERROR: an error reply;
                                                  NGX_DECLINED: none in
                                                  time, or the connection
                                                  went away */
    ngx_uint_t                   n;            /* integers in v[] */
    int64_t                      v[NGX_RELAY_REDIS_MAX_INTS];
    u_char                       err[128];     /* an error reply's text */
} ngx_relay_redis_result_t;


typedef void (*ngx_relay_redis_handler_pt)(ngx_relay_redis_result_t *res,
    void *data);


char *ngx_relay_redis_add_addr(ngx_conf_t *cf, ngx_relay_redis_conf_t *rc,
    ngx_str_t *value);

/*
 * Starts this worker's connection.  script: the Lua text that
 * ngx_relay_redis_eval() runs, loaded again on every connection.
 */
ngx_int_t ngx_relay_redis_init_process(ngx_relay_redis_conf_t *rc,
    ngx_str_t *script, ngx_log_t *log);
void ngx_relay_redis_exit_process(void);

/* connected, and the last command did not time out */
ngx_uint_t ngx_relay_redis_ready(void);

/*
 * EVALSHA of the script with args (nkeys of them keys).  NGX_AGAIN: the
 * handler runs once, from a posted event or the timer, within the
 * timeout; NGX_DECLINED: Redis is not ready (nothing runs later).
 */
ngx_int_t ngx_relay_redis_eval(ngx_str_t *args, ngx_uint_t nargs,
    ngx_uint_t nkeys, ngx_relay_redis_handler_pt handler, void *data,
    ngx_log_t *log);


#endif /* _NGX_RELAY_REDIS_H_INCLUDED_ */
