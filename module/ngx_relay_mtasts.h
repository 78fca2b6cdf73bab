
/*
 * Copyright (C) The relay authors
 */


#ifndef _NGX_RELAY_MTASTS_H_INCLUDED_
#define _NGX_RELAY_MTASTS_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_thread_pool.h>
#include <ngx_relay_dns.h>


#define NGX_RELAY_STS_NONE      0
#define NGX_RELAY_STS_TESTING   1
#define NGX_RELAY_STS_ENFORCE   2


typedef struct ngx_relay_mtasts_s       ngx_relay_mtasts_t;
typedef struct ngx_relay_sts_lookup_s   ngx_relay_sts_lookup_t;


/* a domain's policy (RFC 8461 3.2), as a delivery uses it */

typedef struct {
    ngx_uint_t                   mode;         /* NGX_RELAY_STS_* */
    ngx_str_t                    domain;
    ngx_str_t                    id;
    ngx_uint_t                   nmx;
    ngx_str_t                    mx[16];       /* "mx.example.com",
                                                  "*.example.com" */
} ngx_relay_sts_policy_t;


/* the policy of a lookup (a copy in its pool), NULL: none */
typedef void (*ngx_relay_sts_handler_pt)(void *data,
    ngx_relay_sts_policy_t *policy);


typedef struct {
    ngx_str_t                    cache;        /* directory, with "/" */
    ngx_str_t                    ca;           /* "": the system's */
    ngx_msec_t                   timeout;      /* of one HTTPS fetch */
    ngx_relay_dns_t             *dns;
    ngx_thread_pool_t           *thread_pool;
    ngx_log_t                   *log;
} ngx_relay_mtasts_conf_t;


/* a worker's MTA-STS policies: loaded from the cache directory */
ngx_relay_mtasts_t *ngx_relay_mtasts_create(ngx_relay_mtasts_conf_t *conf);
void ngx_relay_mtasts_destroy(ngx_relay_mtasts_t *m);

/*
 * The policy of domain for one delivery: the handler runs later (never
 * inside this call) with a copy in pool; the lookup goes with the pool.
 */
ngx_int_t ngx_relay_mtasts_lookup(ngx_relay_mtasts_t *m, ngx_pool_t *pool,
    ngx_str_t *domain, ngx_relay_sts_handler_pt handler, void *data);

/* RFC 8461 4.1: host against the policy's "mx" patterns */
ngx_uint_t ngx_relay_mtasts_match(ngx_relay_sts_policy_t *p,
    ngx_str_t *host);

/*
 * TLS failures per policy domain (TLS-RPT, RFC 8460, counts only): the
 * count so far in this worker, after this one.
 */
ngx_uint_t ngx_relay_tls_failure(ngx_str_t *domain, const char *source);


#endif /* _NGX_RELAY_MTASTS_H_INCLUDED_ */
