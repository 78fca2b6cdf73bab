
/*
 * Copyright (C) The relay authors
 */


#ifndef _NGX_RELAY_LITERAL_H_INCLUDED_
#define _NGX_RELAY_LITERAL_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>


/* one of this node's own addresses */

typedef struct {
    ngx_sockaddr_t               sockaddr;
    socklen_t                    socklen;
} ngx_relay_own_addr_t;


ngx_int_t ngx_relay_literal_host(ngx_str_t *domain, ngx_str_t *host);
ngx_int_t ngx_relay_literal_addr(ngx_str_t *domain, ngx_sockaddr_t *sa,
    socklen_t *socklen);
ngx_int_t ngx_relay_literal_add_own(ngx_array_t *own, struct sockaddr *sa,
    socklen_t socklen, ngx_uint_t wildcard, ngx_log_t *log);
ngx_uint_t ngx_relay_literal_own(ngx_array_t *own, struct sockaddr *sa,
    socklen_t socklen);


#endif /* _NGX_RELAY_LITERAL_H_INCLUDED_ */
