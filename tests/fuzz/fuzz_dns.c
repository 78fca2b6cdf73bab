
/*
 * Copyright (C) The relay authors
 */


/*
 * link: tests/no_metrics.c -lcares
 *
 * DNS answers as c-ares hands them to the module (ngx_relay_dns.c): the
 * input is the answer to an MX query (first octet even), or to the A and
 * AAAA queries of one host (odd; the second octet says where the AAAA
 * answer starts).  They go through the module's own callbacks, which
 * parse them with c-ares and build the result: at most 32 MX hosts, sorted
 * by preference, none empty, a null MX only alone; at most 16 addresses.
 * The query is then done with as the route does.
 *
 * The module file is included so that its static callbacks can be
 * called; its calls into the nginx core are weak stand-ins
 * (tests/stubs.sh) but for the few defined here.
 */


#include "../../module/ngx_relay_dns.c"

#include "fuzz.h"


ngx_queue_t  ngx_posted_events;


void
ngx_log_error_core(ngx_uint_t level, ngx_log_t *log, ngx_err_t err,
    const char *fmt, ...)
{
}


void *
ngx_calloc(size_t size, ngx_log_t *log)
{
    return calloc(1, size);
}


static ngx_uint_t  fuzz_handled;


static void
fuzz_handler(ngx_relay_dns_query_t *q)
{
    fuzz_handled++;
}


static void
fuzz_check(ngx_relay_dns_query_t *q)
{
    ngx_uint_t  i;

    fuzz_assert(q->status == NGX_OK || q->status == NGX_DECLINED
                || q->status == NGX_AGAIN);
    fuzz_assert(q->status == NGX_OK || q->error != NULL);
    fuzz_assert(q->nmx <= NGX_RELAY_DNS_MAX_MX);
    fuzz_assert(q->naddrs <= NGX_RELAY_DNS_MAX_ADDRS);

    for (i = 0; i < q->nmx; i++) {
        fuzz_assert(q->mx[i].host.len > 0);
        fuzz_assert(q->mx[i].host.data[q->mx[i].host.len] == '\0');
        fuzz_assert(strlen((char *) q->mx[i].host.data) == q->mx[i].host.len);
        fuzz_assert(i == 0
                    || q->mx[i - 1].preference <= q->mx[i].preference);
    }

    fuzz_assert(!(q->null_mx && q->nmx));
    fuzz_assert(q->status != NGX_OK || q->nmx || q->naddrs);

    for (i = 0; i < q->naddrs; i++) {
        fuzz_assert(q->socklens[i] == sizeof(struct sockaddr_in)
                    || q->socklens[i] == sizeof(struct sockaddr_in6));
    }
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    u_char                 *a, *aaaa;
    size_t                  split;
    ngx_log_t               log;
    ngx_relay_dns_t         dns;
    ngx_relay_dns_query_t  *q;

    if (size < 2) {
        return 0;
    }

    ngx_queue_init(&ngx_posted_events);
    ngx_memzero(&log, sizeof(ngx_log_t));
    ngx_memzero(&dns, sizeof(ngx_relay_dns_t));
    dns.log = &log;
    fuzz_handled = 0;

    q = ngx_relay_dns_query(&dns, fuzz_handler, NULL);
    fuzz_assert(q != NULL);

    if (!(data[0] & 1)) {
        a = fuzz_dup(data + 1, size - 1);
        q->pending = 1;
        ngx_relay_dns_mx_callback(q, ARES_SUCCESS, 0, a, (int) size - 1);
        free(a);

    } else {
        q->addrs = ngx_calloc(NGX_RELAY_DNS_MAX_ADDRS
                              * (sizeof(ngx_sockaddr_t) + sizeof(socklen_t)),
                              &log);
        fuzz_assert(q->addrs != NULL);
        q->socklens = (socklen_t *) (q->addrs + NGX_RELAY_DNS_MAX_ADDRS);
        q->pending = 2;

        split = 2 + data[1] % (size - 1);
        split = split < size ? split : size;

        a = fuzz_dup(data + 2, split - 2);
        aaaa = fuzz_dup(data + split, size - split);

        ngx_relay_dns_host_callback(q, ARES_SUCCESS, 0, a, (int) split - 2);
        ngx_relay_dns_host_callback(q, ARES_SUCCESS, 0, aaaa,
                                    (int) (size - split));
        free(a);
        free(aaaa);
    }

    /* posted for the route, which takes it and is done with it */

    fuzz_assert(q->posted && !ngx_queue_empty(&ngx_posted_events));
    fuzz_check(q);

    ngx_relay_dns_done(q);

    fuzz_assert(ngx_queue_empty(&ngx_posted_events));

    return 0;
}
