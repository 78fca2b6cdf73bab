
/*
 * Copyright (C) The relay authors
 */


/*
 * Address literals (RFC 5321 4.1.3): a recipient domain "[192.0.2.1]" or
 * "[IPv6:2001:db8::1]" names a host, not a domain.  This file turns one
 * into its address (the route connects to it, no DNS) and knows this
 * node's own addresses, so that a literal naming this node is told from
 * one to relay to.  The session decides what either means.
 *
 * Own addresses are those of the stream listeners, and for a wildcard
 * listener ("listen 25;") every address of that family on the machine's
 * interfaces, read once with the configuration.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ifaddrs.h>
#include <ngx_relay_literal.h>


static ngx_int_t ngx_relay_literal_push(ngx_array_t *own,
    struct sockaddr *sa, socklen_t socklen);


/* "[1.2.3.4]" -> "1.2.3.4", "[IPv6:2001:db8::1]" -> "2001:db8::1" */

ngx_int_t
ngx_relay_literal_host(ngx_str_t *domain, ngx_str_t *host)
{
    if (domain->len < 3 || domain->data[0] != '['
        || domain->data[domain->len - 1] != ']')
    {
        return NGX_DECLINED;
    }

    host->data = domain->data + 1;
    host->len = domain->len - 2;

    if (host->len > 5 && ngx_strncasecmp(host->data, (u_char *) "IPv6:", 5)
                         == 0)
    {
        host->data += 5;
        host->len -= 5;
    }

    return NGX_OK;
}


ngx_int_t
ngx_relay_literal_addr(ngx_str_t *domain, ngx_sockaddr_t *sa,
    socklen_t *socklen)
{
    u_char     text[NGX_SOCKADDR_STRLEN + 1];
    ngx_str_t  host;

    if (ngx_relay_literal_host(domain, &host) != NGX_OK
        || host.len >= sizeof(text))
    {
        return NGX_DECLINED;
    }

    ngx_memcpy(text, host.data, host.len);
    text[host.len] = '\0';

    ngx_memzero(sa, sizeof(ngx_sockaddr_t));

    if (host.len == domain->len - 2
        && inet_pton(AF_INET, (char *) text, &sa->sockaddr_in.sin_addr) == 1)
    {
        sa->sockaddr_in.sin_family = AF_INET;
        *socklen = sizeof(struct sockaddr_in);
        return NGX_OK;
    }

#if (NGX_HAVE_INET6)
    if (host.len != domain->len - 2
        && inet_pton(AF_INET6, (char *) text, &sa->sockaddr_in6.sin6_addr)
           == 1)
    {
        sa->sockaddr_in6.sin6_family = AF_INET6;
        *socklen = sizeof(struct sockaddr_in6);
        return NGX_OK;
    }
#endif

    return NGX_DECLINED;
}


/*
 * A listener's address; a wildcard one stands for every address of its
 * family on the machine's interfaces.
 */

ngx_int_t
ngx_relay_literal_add_own(ngx_array_t *own, struct sockaddr *sa,
    socklen_t socklen, ngx_uint_t wildcard, ngx_log_t *log)
{
    struct ifaddrs  *ifa, *i;

    if (!wildcard) {
        return ngx_relay_literal_push(own, sa, socklen);
    }

    if (getifaddrs(&ifa) == -1) {
        ngx_log_error(NGX_LOG_WARN, log, ngx_errno,
                      "getifaddrs() failed: literals naming this host's "
                      "addresses are not told from others");
        return NGX_OK;
    }

    for (i = ifa; i; i = i->ifa_next) {
        if (i->ifa_addr == NULL || i->ifa_addr->sa_family != sa->sa_family) {
            continue;
        }

        if (ngx_relay_literal_push(own, i->ifa_addr,
                                   i->ifa_addr->sa_family == AF_INET
                                   ? sizeof(struct sockaddr_in)
                                   : sizeof(struct sockaddr_in6))
            != NGX_OK)
        {
            freeifaddrs(ifa);
            return NGX_ERROR;
        }
    }

    freeifaddrs(ifa);

    return NGX_OK;
}


static ngx_int_t
ngx_relay_literal_push(ngx_array_t *own, struct sockaddr *sa,
    socklen_t socklen)
{
    ngx_relay_own_addr_t  *a;

    if (socklen > sizeof(ngx_sockaddr_t)
        || ngx_relay_literal_own(own, sa, socklen))
    {
        return NGX_OK;
    }

    a = ngx_array_push(own);
    if (a == NULL) {
        return NGX_ERROR;
    }

    ngx_memzero(a, sizeof(ngx_relay_own_addr_t));
    ngx_memcpy(&a->sockaddr, sa, socklen);
    a->socklen = socklen;

    return NGX_OK;
}


ngx_uint_t
ngx_relay_literal_own(ngx_array_t *own, struct sockaddr *sa,
    socklen_t socklen)
{
    ngx_uint_t             i;
    ngx_relay_own_addr_t  *a;

    if (own == NULL) {
        return 0;
    }

    a = own->elts;

    for (i = 0; i < own->nelts; i++) {
        if (ngx_cmp_sockaddr(&a[i].sockaddr.sockaddr, a[i].socklen, sa,
                             socklen, 0)
            == NGX_OK)
        {
            return 1;
        }
    }

    return 0;
}
