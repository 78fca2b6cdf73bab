
/*
 * Copyright (C) The relay authors
 */


/*
 * Internationalized domains (RFC 5890, RFC 6531): what a SMTPUTF8 client
 * sends in U-labels is turned into A-labels once, at MAIL and RCPT, so
 * DNS lookups, routes, local domains and limits only ever see ASCII: no
 * DNS query of raw UTF-8, one spelling per domain in the queue.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <idn2.h>
#include <ngx_relay_idn.h>


ngx_uint_t
ngx_relay_idn_utf8(ngx_str_t *s)
{
    u_char  *p, *last;

    for (p = s->data, last = p + s->len; p < last; p++) {
        if (*p & 0x80) {
            return 1;
        }
    }

    return 0;
}


ngx_int_t
ngx_relay_idn_to_ascii(ngx_str_t *domain, u_char *buf, ngx_str_t *out,
    const char **why)
{
    int     rc;
    char   *ascii, name[NGX_RELAY_IDN_MAX * 4];
    size_t  len;

    if (!ngx_relay_idn_utf8(domain)) {
        *out = *domain;
        return NGX_OK;
    }

    if (domain->len >= sizeof(name)) {
        *why = "name too long";
        return NGX_DECLINED;
    }

    ngx_memcpy(name, domain->data, domain->len);
    name[domain->len] = '\0';

    ascii = NULL;

    rc = idn2_to_ascii_8z(name, &ascii, IDN2_NFC_INPUT|IDN2_NONTRANSITIONAL);

    if (rc != IDN2_OK) {
        *why = idn2_strerror(rc);
        return (rc == IDN2_MALLOC) ? NGX_ERROR : NGX_DECLINED;
    }

    len = ngx_strlen(ascii);

    if (len > 253) {
        idn2_free(ascii);
        *why = "name longer than 253 octets";
        return NGX_DECLINED;
    }

    ngx_memcpy(buf, ascii, len);
    idn2_free(ascii);

    out->data = buf;
    out->len = len;

    return NGX_OK;
}
