
/*
 * Copyright (C) The relay authors
 */


#ifndef _NGX_RELAY_IDN_H_INCLUDED_
#define _NGX_RELAY_IDN_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>


#define NGX_RELAY_IDN_MAX  256


/*
 * A domain in U-labels (RFC 5890) as A-labels, with libidn2 (IDNA2008,
 * UTS #46 non-transitional mapping, so "BÜCHER.test" is
 * "xn--bcher-kva.test"), into buf (NGX_RELAY_IDN_MAX octets).  An ASCII
 * domain is left as it is.  NGX_DECLINED: not a valid internationalized
 * domain name (*why says why); NGX_ERROR: no memory.
 */
ngx_int_t ngx_relay_idn_to_ascii(ngx_str_t *domain, u_char *buf,
    ngx_str_t *out, const char **why);

/* whether s holds an octet above 0x7f */
ngx_uint_t ngx_relay_idn_utf8(ngx_str_t *s);


#endif /* _NGX_RELAY_IDN_H_INCLUDED_ */
