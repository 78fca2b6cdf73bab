
/*
 * Copyright (C) The relay authors
 */


#ifndef _NGX_RELAY_DNS_H_INCLUDED_
#define _NGX_RELAY_DNS_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>


#define NGX_RELAY_DNS_MAX_MX      32
#define NGX_RELAY_DNS_MAX_ADDRS   16


typedef struct ngx_relay_dns_s        ngx_relay_dns_t;
typedef struct ngx_relay_dns_query_s  ngx_relay_dns_query_t;

typedef void (*ngx_relay_dns_handler_pt)(ngx_relay_dns_query_t *q);


typedef struct {
    ngx_str_t                    host;         /* malloc()ed with the query */
    ngx_uint_t                   preference;
} ngx_relay_mx_t;


/*
 * One lookup.  Results arrive through q->handler from a posted event, never
 * from inside the call that started the lookup.  status:
 *   NGX_OK        answers in mx[] or addrs[]
 *   NGX_DECLINED  the name does not exist or has no such records (for MX:
 *                 use the implicit MX, RFC 5321 5.1); null_mx for RFC 7505
 *   NGX_AGAIN     temporary failure (SERVFAIL, timeout, refused): defer
 */

struct ngx_relay_dns_query_s {
    ngx_relay_dns_handler_pt     handler;
    void                        *data;
    ngx_int_t                    status;
    const char                  *error;        /* c-ares' words for it */

    ngx_relay_mx_t              *mx;           /* by preference, equal ones
                                                  in random order */
    ngx_uint_t                   nmx;
    unsigned                     null_mx:1;
    unsigned                     nxdomain:1;   /* the name does not exist */

    ngx_sockaddr_t              *addrs;
    socklen_t                   *socklens;
    ngx_uint_t                   naddrs;

    /* private */
    ngx_relay_dns_t             *dns;
    ngx_event_t                  event;
    ngx_uint_t                   pending;      /* c-ares callbacks to come */
    uint64_t                     started;      /* for the metrics */
    ngx_int_t                    temporary;    /* a part failed for now */
    unsigned                     cancelled:1;
    unsigned                     posted:1;
};


ngx_relay_dns_t *ngx_relay_dns_create(ngx_str_t *servers, ngx_msec_t timeout,
    ngx_log_t *log);
void ngx_relay_dns_destroy(ngx_relay_dns_t *dns);

ngx_relay_dns_query_t *ngx_relay_dns_mx(ngx_relay_dns_t *dns, ngx_str_t *name,
    ngx_relay_dns_handler_pt handler, void *data);
ngx_relay_dns_query_t *ngx_relay_dns_host(ngx_relay_dns_t *dns,
    ngx_str_t *name, ngx_relay_dns_handler_pt handler, void *data);

/* after the handler ran, or instead of it (the handler then never runs) */
void ngx_relay_dns_done(ngx_relay_dns_query_t *q);


#endif /* _NGX_RELAY_DNS_H_INCLUDED_ */
