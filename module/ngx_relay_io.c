
/*
 * Copyright (C) The relay authors
 */


/* Small pieces the SMTP server and the SMTP client share. */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>
#include <ngx_relay.h>


/*
 * Sends what b holds.  NGX_AGAIN: the socket is full, the write event is
 * armed with a timer; NGX_OK: all sent, b is empty again.
 */

/*
 * A server session's read: into the free end of the input buffer,
 * compacted first (the line parsers never leave a full buffer).  NGX_OK:
 * data came (the idle timer is off), NGX_AGAIN, or NGX_ERROR: the client
 * is gone.
 */

ngx_int_t
ngx_relay_recv(ngx_connection_t *c, ngx_buf_t *b)
{
    size_t   len;
    ssize_t  n;

    if (b->pos == b->last) {
        b->pos = b->start;
        b->last = b->start;

    } else if (b->pos != b->start) {
        len = b->last - b->pos;
        ngx_memmove(b->start, b->pos, len);
        b->pos = b->start;
        b->last = b->start + len;
    }

    if (b->last == b->end) {
        ngx_log_error(NGX_LOG_ALERT, c->log, 0, "relay input buffer full");
        ngx_debug_point();
        return NGX_ERROR;
    }

    n = c->recv(c, b->last, b->end - b->last);

    if (n == NGX_AGAIN) {
        return NGX_AGAIN;
    }

    if (n == NGX_ERROR || n == 0) {
        ngx_log_error(NGX_LOG_INFO, c->log, 0, "client closed connection");
        return NGX_ERROR;
    }

    b->last += n;

    if (c->read->timer_set) {
        ngx_del_timer(c->read);
    }

    return NGX_OK;
}


/*
 * STARTTLS (RFC 3207) and STLS (RFC 2595): the server side's handshake.
 * NGX_OK: done at once; NGX_AGAIN: handler runs when it ends (or times
 * out); NGX_ERROR: no TLS connection could be made.
 */

ngx_int_t
ngx_relay_tls_start(ngx_connection_t *c, ngx_ssl_t *ssl, ngx_msec_t timeout,
    ngx_connection_handler_pt handler)
{
    if (ngx_ssl_create_connection(ssl, c, 0) != NGX_OK) {
        return NGX_ERROR;
    }

    if (ngx_ssl_handshake(c) == NGX_AGAIN) {
        ngx_add_timer(c->read, timeout);
        c->ssl->handler = handler;
        return NGX_AGAIN;
    }

    return NGX_OK;
}


ngx_int_t
ngx_relay_send(ngx_connection_t *c, ngx_buf_t *b, ngx_msec_t timeout)
{
    ssize_t  n;

    while (b->pos < b->last) {
        n = c->send(c, b->pos, b->last - b->pos);

        if (n == NGX_ERROR) {
            return NGX_ERROR;
        }

        if (n == NGX_AGAIN || n == 0) {
            if (ngx_handle_write_event(c->write, 0) != NGX_OK) {
                return NGX_ERROR;
            }

            if (!c->write->timer_set) {
                ngx_add_timer(c->write, timeout);
            }

            return NGX_AGAIN;
        }

        b->pos += n;
    }

    b->pos = b->start;
    b->last = b->start;

    if (c->write->timer_set) {
        ngx_del_timer(c->write);
    }

    return NGX_OK;
}


/* RFC 5322 3.3 date-time, in UTC */

u_char *
ngx_relay_date(u_char *p, time_t t)
{
    ngx_tm_t  tm;

    static const char  *week[] = { "Sun", "Mon", "Tue", "Wed", "Thu", "Fri",
                                   "Sat" };
    static const char  *months[] = { "Jan", "Feb", "Mar", "Apr", "May",
                                     "Jun", "Jul", "Aug", "Sep", "Oct",
                                     "Nov", "Dec" };

    ngx_gmtime(t, &tm);

    return ngx_sprintf(p, "%s, %02d %s %4d %02d:%02d:%02d +0000",
                       week[tm.ngx_tm_wday], tm.ngx_tm_mday,
                       months[tm.ngx_tm_mon - 1], tm.ngx_tm_year,
                       tm.ngx_tm_hour, tm.ngx_tm_min, tm.ngx_tm_sec);
}
