
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
