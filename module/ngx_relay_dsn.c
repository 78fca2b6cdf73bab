
/*
 * Copyright (C) The relay authors
 */


/*
 * Delivery status notifications (RFC 3464): one report per message and
 * kind, to the envelope sender, from the null sender, queued like any
 * mail.  "failed" for recipients that failed and asked for it (RFC 3461:
 * NOTIFY=FAILURE or no NOTIFY); "delayed" for those still being retried
 * after the warning time; with NOTIFY=SUCCESS, "delivered" for a Maildir
 * delivery and "relayed" for a hand-over to a server without DSN (one
 * with DSN got the parameters and reports itself).  NOTIFY=NEVER gets
 * nothing.  Every report carries the ENVID and each recipient's ORCPT
 * (RFC 3464 2.2.1, 2.3.1), decoded from xtext.  Never for a message from
 * <>, so reports never loop.  Composition only: the attempt decides who
 * gets reported.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_relay.h>
#include <ngx_relay_spool.h>
#include <ngx_relay_maildir.h>
#include <ngx_relay_dsn.h>
#include <ngx_relay_account.h>


#define NGX_RELAY_DSN_MAX_ORIGINAL  (10 * 1024 * 1024)


static ngx_uint_t ngx_relay_dsn_ascii(ngx_str_t *s);
static u_char *ngx_relay_dsn_xtext(u_char *p, u_char *s, size_t len);


static const char  *ngx_relay_dsn_subjects[] = {
    "Undelivered Mail Returned to Sender",
    "Delayed Mail (still being retried)",
    "Successful Mail Delivery Report"
};


static const char  *ngx_relay_dsn_texts[] = {
    "Your message could not be delivered to one or more recipients.",
    "Your message could not be delivered yet to one or more recipients; "
    "delivery will be tried again.  This is a warning only: you need not "
    "send the message again.",
    "Your message was delivered to the recipients below (\"delivered\"), "
    "or handed to a server that sends no delivery reports (\"relayed\"): "
    "you asked to be told."
};


static const char  *ngx_relay_dsn_ids[] = { "dsn", "delay", "success" };


/* RFC 3461 4.1: no NOTIFY means FAILURE */

ngx_uint_t
ngx_relay_dsn_wants_failure(ngx_uint_t notify)
{
    return notify == 0 || (notify & NGX_RELAY_NOTIFY_FAILURE);
}


/*
 * Thread side: what the DSN returns of the message: all of it for
 * RET=FULL, else its header (RFC 3461 4.3), at most 10 MB.
 */

void
ngx_relay_dsn_read_original(ngx_fd_t fd, ngx_relay_queued_t *q, u_char **out,
    size_t *out_len)
{
    off_t     limit;
    u_char   *buf, *end;
    size_t    len;
    ssize_t   n;

    *out = NULL;
    *out_len = 0;

    limit = (q->ret == NGX_RELAY_RET_FULL) ? NGX_RELAY_DSN_MAX_ORIGINAL
                                           : 65536;
    len = (size_t) ngx_min(q->message_size, limit);

    buf = malloc(len + 1);
    if (buf == NULL) {
        return;
    }

    n = pread(fd, buf, len, q->message_offset);
    if (n < 0) {
        free(buf);
        return;
    }

    buf[n] = '\0';
    len = n;

    if (q->ret != NGX_RELAY_RET_FULL) {
        end = (u_char *) strstr((char *) buf, "\r\n\r\n");
        if (end) {
            len = end + 2 - buf;
        }
    }

    *out = buf;
    *out_len = len;
}


ngx_uint_t
ngx_relay_dsn_reported(ngx_relay_queued_t *q, ngx_relay_dest_t *dst,
    ngx_uint_t kind)
{
    ngx_uint_t  notify;

    notify = q->rcpts[dst->index].notify;

    switch (kind) {

    case NGX_RELAY_DSN_DELAYED:
        return dst->delayed;

    case NGX_RELAY_DSN_SUCCESS:
        return dst->status == NGX_RELAY_DELIVERY_SENT
               && (dst->local || dst->relayed)
               && (notify & NGX_RELAY_NOTIFY_SUCCESS);

    default: /* NGX_RELAY_DSN_FAILED */
        return dst->status == NGX_RELAY_DELIVERY_FAILED
               && ngx_relay_dsn_wants_failure(notify);
    }
}


/*
 * The failed recipients that asked for it get one RFC 3464 report, to the
 * envelope sender, from the null sender, through the queue like any mail;
 * "delayed": the still deferred ones that get the delay warning.
 */

ngx_int_t
ngx_relay_dsn_send(ngx_relay_dsn_t *dsn)
{
    u_char                    *p, *s, *e, *original;
    size_t                     len;
    ngx_str_t                  domain, host;
    ngx_uint_t                 i;
    ngx_relay_rcpt_t          *rcpt;
    ngx_relay_dest_t          *dst;
    ngx_uint_t                 kind;
    ngx_relay_queued_t        *q;
    ngx_relay_envelope_t       env;
    ngx_relay_spool_t         *sp;
    ngx_relay_spool_writer_t  *w;
    ngx_relay_queued_rcpt_t   *r;

    sp = dsn->spool;
    q = dsn->queued;
    kind = dsn->kind;

    w = ngx_relay_spool_create(sp, sp->log);
    if (w == NULL) {
        goto failed;
    }

    ngx_memzero(&env, sizeof(ngx_relay_envelope_t));

    if (ngx_array_init(&env.rcpts, w->pool, 1, sizeof(ngx_relay_rcpt_t))
        != NGX_OK)
    {
        goto failed;
    }

    rcpt = ngx_array_push(&env.rcpts);
    if (rcpt == NULL) {
        goto failed;
    }

    ngx_memzero(rcpt, sizeof(ngx_relay_rcpt_t));
    rcpt->addr = q->sender;
    rcpt->notify = NGX_RELAY_NOTIFY_NEVER;
    rcpt->local = (ngx_relay_maildir_split(&q->sender, &domain)
                   && ngx_relay_maildir_local_domain(dsn->domains, &domain));

    ngx_str_set(&env.client, "127.0.0.1");
    env.helo = dsn->hostname;
    env.arrival = ngx_time();

    if (ngx_relay_spool_write_envelope(w, &env) != NGX_OK) {
        goto failed;
    }

    len = 4096 + dsn->original_len + q->envid.len
          + dsn->ndests * (3 * NGX_RELAY_MAX_ADDR + 2 * NGX_RELAY_REPLY_TEXT
                           + 512);

    if (ngx_relay_spool_reserve(w, len) != NGX_OK) {
        goto failed_writer;
    }

    p = w->pos;

    p = ngx_sprintf(p, "From: Mail Delivery System <MAILER-DAEMON@%V>\r\n"
                    "To: <%V>\r\n"
                    "Subject: %s\r\n"
                    "Auto-Submitted: auto-replied\r\n"
                    "Message-ID: <%V.%s@%V>\r\nDate: ",
                    &dsn->hostname, &q->sender,
                    ngx_relay_dsn_subjects[kind], &q->id,
                    ngx_relay_dsn_ids[kind], &dsn->hostname);
    p = ngx_relay_date(p, ngx_time());
    p = ngx_sprintf(p, "\r\nMIME-Version: 1.0\r\n"
                    "Content-Type: multipart/report; "
                    "report-type=delivery-status;\r\n"
                    "\tboundary=\"%V/%V\"\r\n\r\n"
                    "This is a MIME-encapsulated message.\r\n\r\n"
                    "--%V/%V\r\n"
                    "Content-Type: text/plain; charset=%s\r\n\r\n"
                    "This is the mail system at host %V.\r\n\r\n"
                    "%s\r\n\r\n",
                    &q->id, &dsn->hostname, &q->id, &dsn->hostname,
                    q->smtputf8 ? "utf-8" : "us-ascii", &dsn->hostname,
                    ngx_relay_dsn_texts[kind]);

    for (i = 0; i < dsn->ndests; i++) {
        dst = &dsn->dests[i];

        if (ngx_relay_dsn_reported(q, dst, kind)) {
            p = ngx_sprintf(p, "<%V>: %*s\r\n", &dst->addr, dst->reply_len,
                            dst->reply);
        }
    }

    p = ngx_sprintf(p, "\r\n--%V/%V\r\n"
                    "Content-Type: message/%sdelivery-status\r\n\r\n"
                    "Reporting-MTA: dns; %V\r\n"
                    "X-Queue-ID: %V\r\n",
                    &q->id, &dsn->hostname, q->smtputf8 ? "global-" : "",
                    &dsn->hostname, &q->id);

    if (q->envid.len) {
        p = ngx_cpymem(p, "Original-Envelope-Id: ", 22);
        p = ngx_relay_dsn_xtext(p, q->envid.data, q->envid.len);
        p = ngx_cpymem(p, "\r\n", 2);
    }

    p = ngx_cpymem(p, "Arrival-Date: ", 14);
    p = ngx_relay_date(p, q->arrival);
    p = ngx_cpymem(p, "\r\n", 2);

    for (i = 0; i < dsn->ndests; i++) {
        dst = &dsn->dests[i];
        r = &q->rcpts[dst->index];

        if (!ngx_relay_dsn_reported(q, dst, kind)) {
            continue;
        }

        /* RFC 6533: non-ASCII addresses are of type utf-8 */

        p = ngx_sprintf(p, "\r\nFinal-Recipient: %s; %V\r\n",
                        ngx_relay_dsn_ascii(&dst->addr) ? "rfc822"
                                                          : "utf-8",
                        &dst->addr);

        if (r->orcpt.len) {

            /* "rfc822;xtext" as received: the address decoded */

            s = ngx_strlchr(r->orcpt.data, r->orcpt.data + r->orcpt.len, ';');

            if (s) {
                p = ngx_sprintf(p, "Original-Recipient: %*s; ",
                                s - r->orcpt.data, r->orcpt.data);

                if (s - r->orcpt.data == 5
                    && ngx_strncasecmp(r->orcpt.data, (u_char *) "utf-8", 5)
                       == 0)
                {
                    p = ngx_cpymem(p, s + 1, r->orcpt.data + r->orcpt.len
                                             - s - 1);

                } else {
                    p = ngx_relay_dsn_xtext(p, s + 1, r->orcpt.data
                                                      + r->orcpt.len - s - 1);
                }

                p = ngx_cpymem(p, "\r\n", 2);
            }
        }

        p = ngx_sprintf(p, "Action: %s\r\nStatus: %s\r\n",
                        kind == NGX_RELAY_DSN_DELAYED ? "delayed"
                        : kind == NGX_RELAY_DSN_FAILED ? "failed"
                        : dst->local ? "delivered" : "relayed",
                        dst->dsn);

        if (kind == NGX_RELAY_DSN_DELAYED) {
            p = ngx_cpymem(p, "Will-Retry-Until: ", 18);
            p = ngx_relay_date(p, dst->until);
            p = ngx_cpymem(p, "\r\n", 2);
        }

        /* Remote-MTA: the host name of "host[ip]:port" */

        host.data = dst->relay;
        e = ngx_strlchr(dst->relay, dst->relay + dst->relay_len, '[');
        host.len = (e ? e : dst->relay + dst->relay_len) - dst->relay;

        if (host.len && !dst->local
            && !(host.len == 4 && ngx_strncmp(host.data, "none", 4) == 0))
        {
            p = ngx_sprintf(p, "Remote-MTA: dns; %V\r\n", &host);
        }

        if (dst->reply_len) {
            p = ngx_sprintf(p, "Diagnostic-Code: smtp; %*s\r\n",
                            dst->reply_len, dst->reply);
        }
    }

    p = ngx_sprintf(p, "\r\n--%V/%V\r\n", &q->id, &dsn->hostname);

    /* RET=FULL returns the message with a failure; a success, its header */

    original = dsn->original;
    len = dsn->original_len;

    if (q->ret == NGX_RELAY_RET_FULL && kind == NGX_RELAY_DSN_SUCCESS
        && original)
    {
        e = ngx_strlcasestrn(original, original + len,
                             (u_char *) "\r\n\r\n", 3);
        if (e) {
            len = e + 2 - original;
        }
    }

    if (q->ret == NGX_RELAY_RET_FULL && kind != NGX_RELAY_DSN_SUCCESS) {
        p = ngx_sprintf(p, "Content-Type: message/%s\r\n\r\n",
                        q->smtputf8 ? "global" : "rfc822");

    } else {
        p = ngx_sprintf(p, "Content-Type: %s\r\n\r\n",
                        q->smtputf8 ? "message/global-headers"
                                    : "text/rfc822-headers");
    }

    if (original) {
        p = ngx_cpymem(p, original, len);
    }

    if (p[-1] != LF) {
        *p++ = CR;
        *p++ = LF;
    }

    p = ngx_sprintf(p, "\r\n--%V/%V--\r\n", &q->id, &dsn->hostname);

    w->pos = p;

    if (ngx_relay_spool_commit(w, NULL, NULL) != NGX_OK) {
        goto failed_writer;
    }

    ngx_log_error(NGX_LOG_INFO, sp->log, 0,
                  "%V: sender %s notification: %V", &q->id,
                  kind == NGX_RELAY_DSN_DELAYED ? "delay"
                  : kind == NGX_RELAY_DSN_FAILED ? "non-delivery"
                  : "success", &w->id);

    ngx_relay_account_dsn(dsn, &w->id);

    return NGX_OK;

failed_writer:

    ngx_relay_spool_abort(w);

failed:

    ngx_log_error(NGX_LOG_ALERT, sp->log, 0,
                  "%V: could not queue the delivery status notification",
                  &q->id);

    return NGX_ERROR;
}


static ngx_uint_t
ngx_relay_dsn_ascii(ngx_str_t *s)
{
    size_t  i;

    for (i = 0; i < s->len; i++) {
        if (s->data[i] >= 0x80) {
            return 0;
        }
    }

    return 1;
}


/*
 * RFC 3461 4: "+HH" decoded for a DSN field (RFC 3464 2.2.1, 2.3.1);
 * what would decode to a control character or DEL stays "+HH", so that
 * no value can start a field or a line of its own.
 */

static u_char *
ngx_relay_dsn_xtext(u_char *p, u_char *s, size_t len)
{
    u_char  *last;
    ngx_int_t  hi, lo;

    last = s + len;

    while (s < last) {
        if (*s == '+' && last - s >= 3) {
            hi = ngx_hextoi(s + 1, 1);
            lo = ngx_hextoi(s + 2, 1);

            if (hi >= 0 && lo >= 0 && hi * 16 + lo >= 0x20
                && hi * 16 + lo < 0x7f)
            {
                *p++ = (u_char) (hi * 16 + lo);
                s += 3;
                continue;
            }
        }

        *p++ = *s++;
    }

    return p;
}
