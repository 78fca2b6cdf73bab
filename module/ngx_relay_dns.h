
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


/* a TLSA record (RFC 6698): usage, selector, matching type, data */

typedef struct {
    u_char                       usage;
    u_char                       selector;
    u_char                       mtype;
    size_t                       len;
    u_char                      *data;         /* malloc()ed with the query */
} ngx_relay_tlsa_t;

#define NGX_RELAY_DNS_MAX_TLSA    16


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

    ngx_relay_tlsa_t            *tlsa;
    ngx_uint_t                   ntlsa;

    ngx_str_t                    txt;          /* the one record that
                                                  starts with the prefix */
    unsigned                     txt_many:1;   /* more than one did */

    /*
     * The answer carried the AD bit (RFC 4035 3.2.3): with
     * ngx_relay_dns_create(..., dnssec = 1) only, where the operator says
     * the resolver validates; queries then ask for it (RFC 6840 5.7).
     */
    unsigned                     secure:1;

    /* private */
    ngx_relay_dns_t             *dns;
    ngx_event_t                  event;
    ngx_uint_t                   pending;      /* c-ares callbacks to come */
    uint64_t                     started;      /* for the metrics */
    ngx_int_t                    temporary;    /* a part failed for now */
    unsigned                     cancelled:1;
    unsigned                     posted:1;
    void                       (*parse)(ngx_relay_dns_query_t *q,
                                        unsigned char *abuf, int alen);
    const char                  *prefix;
};


ngx_relay_dns_t *ngx_relay_dns_create(ngx_str_t *servers, ngx_msec_t timeout,
    ngx_uint_t dnssec, ngx_log_t *log);
ngx_uint_t ngx_relay_dns_dnssec(ngx_relay_dns_t *dns);
void ngx_relay_dns_destroy(ngx_relay_dns_t *dns);

ngx_relay_dns_query_t *ngx_relay_dns_mx(ngx_relay_dns_t *dns, ngx_str_t *name,
    ngx_relay_dns_handler_pt handler, void *data);
ngx_relay_dns_query_t *ngx_relay_dns_host(ngx_relay_dns_t *dns,
    ngx_str_t *name, ngx_relay_dns_handler_pt handler, void *data);

/* TXT records of name that start with prefix: the first, and how many */
ngx_relay_dns_query_t *ngx_relay_dns_txt(ngx_relay_dns_t *dns,
    ngx_str_t *name, const char *prefix, ngx_relay_dns_handler_pt handler,
    void *data);

/* "_PORT._tcp.HOST" TLSA (RFC 7672 2.2.3); secure tells whether to use it */
ngx_relay_dns_query_t *ngx_relay_dns_tlsa(ngx_relay_dns_t *dns,
    ngx_str_t *host, in_port_t port, ngx_relay_dns_handler_pt handler,
    void *data);

/* after the handler ran, or instead of it (the handler then never runs) */
void ngx_relay_dns_done(ngx_relay_dns_query_t *q);


#endif /* _NGX_RELAY_DNS_H_INCLUDED_ */
