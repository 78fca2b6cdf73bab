/*
 * Copyright (C) The relay authors
 */


/*
 * controld's own metrics: counters of what the daemon did (applies by
 * result, node sessions, ACKs and NACKs, store errors), the latency from
 * sending a version to a node until its answer, and gauges of the node
 * table, served in the Prometheus text format on --metrics-listen.
 *
 * controld speaks only gRPC; this is a small HTTP/1.0 server of its own,
 * on the same single thread: the listening socket and its connections are
 * non-blocking and looked at on every tick of the server's loop (at least
 * every 200 ms), so a scrape never holds up a node session.  A request is
 * read until its empty line (4 KB at most, 5 s at most), answered and
 * closed; "GET /metrics" (or HEAD) is the only resource.
 *
 * A leaf, as the log and the clock: the rest of controld calls it, it
 * calls nothing of the rest but what main() gave it (ctld_metrics_view_t).
 */


#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/socket.h>

#include "relay_buf.h"
#include "ctld_clock.h"
#include "ctld_log.h"
#include "ctld_metrics.h"


#define CTLD_METRICS_CONNS        16
#define CTLD_METRICS_REQUEST      4096
#define CTLD_METRICS_TIMEOUT_MS   5000
#define CTLD_METRICS_VERSIONS     64
#define CTLD_METRICS_BUCKETS      12


typedef struct {
    int                         fd;           /* -1: free */
    int64_t                     deadline;
    size_t                      len;
    char                        in[CTLD_METRICS_REQUEST];
    relay_buf_t                 out;          /* the whole response */
    size_t                      sent;
    unsigned                    answering:1;
} ctld_metrics_conn_t;


static void ctld_metrics_accept(int64_t now);
static void ctld_metrics_serve(ctld_metrics_conn_t *mc, int64_t now);
static void ctld_metrics_answer(ctld_metrics_conn_t *mc);
static void ctld_metrics_render(relay_buf_t *b);
static void ctld_metrics_end(ctld_metrics_conn_t *mc);


static int                         ctld_metrics_fd = -1;
static const ctld_metrics_view_t  *ctld_metrics_view;
static time_t                      ctld_metrics_started;
static ctld_metrics_conn_t         ctld_metrics_conns[CTLD_METRICS_CONNS];

static uint64_t   ctld_metrics_applies[2][CTLD_APPLY_N];
static uint64_t   ctld_metrics_sessions;
static uint64_t   ctld_metrics_acks;
static uint64_t   ctld_metrics_nacks;
static uint64_t   ctld_metrics_store_errors;
static uint64_t   ctld_metrics_ack_buckets[CTLD_METRICS_BUCKETS];
static uint64_t   ctld_metrics_ack_count;
static int64_t    ctld_metrics_ack_sum_ms;

static const char  *ctld_metrics_results[CTLD_APPLY_N] = {
    "applied", "unchanged", "dry_run", "invalid", "failed"
};

/* milliseconds */
static const int64_t  ctld_metrics_bounds[CTLD_METRICS_BUCKETS] = {
    1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000
};


int
ctld_metrics_init(const char *addr, const ctld_metrics_view_t *view)
{
    int               fd, on, rc;
    char              host[256];
    const char       *port;
    struct addrinfo   hints, *ai;
    size_t            i, n;

    ctld_metrics_view = view;
    ctld_metrics_started = time(NULL);

    for (i = 0; i < CTLD_METRICS_CONNS; i++) {
        ctld_metrics_conns[i].fd = -1;
    }

    if (addr == NULL || addr[0] == '\0') {
        return 0;
    }

    port = strrchr(addr, ':');
    n = port ? (size_t) (port - addr) : 0;

    if (port == NULL || n == 0 || n >= sizeof(host) || port[1] == '\0') {
        ctld_log("metrics: \"%s\" is not HOST:PORT", addr);
        return -1;
    }

    /* "[::1]:9026" */

    if (addr[0] == '[' && addr[n - 1] == ']') {
        memcpy(host, addr + 1, n - 2);
        host[n - 2] = '\0';

    } else {
        memcpy(host, addr, n);
        host[n] = '\0';
    }

    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;

    rc = getaddrinfo(host, port + 1, &hints, &ai);
    if (rc != 0) {
        ctld_log("metrics: %s: %s", addr, gai_strerror(rc));
        return -1;
    }

    fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
                0);
    on = 1;

    if (fd == -1
        || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on)) != 0
        || bind(fd, ai->ai_addr, ai->ai_addrlen) != 0
        || listen(fd, 64) != 0)
    {
        ctld_log("metrics: cannot listen on %s: %s", addr,
                 strerror(errno));
        if (fd != -1) {
            close(fd);
        }

        freeaddrinfo(ai);
        return -1;
    }

    freeaddrinfo(ai);

    ctld_metrics_fd = fd;
    ctld_log("metrics on http://%s/metrics", addr);

    return 0;
}


void
ctld_metrics_close(void)
{
    size_t  i;

    for (i = 0; i < CTLD_METRICS_CONNS; i++) {
        if (ctld_metrics_conns[i].fd != -1) {
            ctld_metrics_end(&ctld_metrics_conns[i]);
        }
    }

    if (ctld_metrics_fd != -1) {
        close(ctld_metrics_fd);
        ctld_metrics_fd = -1;
    }
}


/* ------------------------------------------------------------ counting */


void
ctld_metrics_apply(int rollback, ctld_apply_result_e result)
{
    ctld_metrics_applies[rollback ? 1 : 0][result]++;
}


void
ctld_metrics_session(void)
{
    ctld_metrics_sessions++;
}


/* a node answered a version this controld sent it, latency_ms later */

void
ctld_metrics_ack(int ok, int64_t latency_ms)
{
    size_t  i;

    if (ok) {
        ctld_metrics_acks++;

    } else {
        ctld_metrics_nacks++;
    }

    if (latency_ms < 0) {
        return;                          /* not one we sent */
    }

    for (i = 0; i < CTLD_METRICS_BUCKETS; i++) {
        if (latency_ms <= ctld_metrics_bounds[i]) {
            ctld_metrics_ack_buckets[i]++;
            break;
        }
    }

    ctld_metrics_ack_count++;
    ctld_metrics_ack_sum_ms += latency_ms;
}


void
ctld_metrics_store_error(void)
{
    ctld_metrics_store_errors++;
}


/* ------------------------------------------------------------ serving */


void
ctld_metrics_poll(int64_t now)
{
    size_t  i;

    if (ctld_metrics_fd == -1) {
        return;
    }

    ctld_metrics_accept(now);

    for (i = 0; i < CTLD_METRICS_CONNS; i++) {
        if (ctld_metrics_conns[i].fd != -1) {
            ctld_metrics_serve(&ctld_metrics_conns[i], now);
        }
    }
}


static void
ctld_metrics_accept(int64_t now)
{
    int                   fd;
    size_t                i;
    ctld_metrics_conn_t  *mc;

    for (i = 0; i < CTLD_METRICS_CONNS; i++) {
        mc = &ctld_metrics_conns[i];

        if (mc->fd != -1) {
            continue;
        }

        fd = accept(ctld_metrics_fd, NULL, NULL);
        if (fd == -1) {
            return;                      /* EAGAIN: nobody else waits */
        }

        if (fcntl(fd, F_SETFL, O_NONBLOCK) == -1
            || fcntl(fd, F_SETFD, FD_CLOEXEC) == -1)
        {
            close(fd);
            continue;
        }

        memset(mc, 0, sizeof(ctld_metrics_conn_t));
        mc->fd = fd;
        mc->deadline = now + CTLD_METRICS_TIMEOUT_MS;
    }
}


static void
ctld_metrics_serve(ctld_metrics_conn_t *mc, int64_t now)
{
    ssize_t  n;

    while (!mc->answering) {
        n = read(mc->fd, mc->in + mc->len, sizeof(mc->in) - 1 - mc->len);

        if (n == 0 || (n == -1 && errno != EAGAIN && errno != EINTR)) {
            ctld_metrics_end(mc);
            return;
        }

        if (n == -1) {
            if (now > mc->deadline) {
                ctld_metrics_end(mc);
            }

            return;                      /* the rest at the next tick */
        }

        mc->len += n;
        mc->in[mc->len] = '\0';

        if (strstr(mc->in, "\r\n\r\n") || strstr(mc->in, "\n\n")
            || mc->len == sizeof(mc->in) - 1)
        {
            ctld_metrics_answer(mc);
        }
    }

    while (mc->sent < mc->out.len) {
        n = write(mc->fd, mc->out.data + mc->sent, mc->out.len - mc->sent);

        if (n == -1) {
            if ((errno == EAGAIN || errno == EINTR) && now <= mc->deadline) {
                return;
            }

            break;
        }

        mc->sent += n;
    }

    ctld_metrics_end(mc);
}


static void
ctld_metrics_answer(ctld_metrics_conn_t *mc)
{
    int          head;
    char        *path, *sp;
    const char  *status;
    relay_buf_t  body;

    mc->answering = 1;
    memset(&body, 0, sizeof(body));

    head = strncmp(mc->in, "HEAD ", 5) == 0;
    path = head ? mc->in + 5 : mc->in + 4;
    sp = strpbrk(path, " ?\r\n");

    if (!head && strncmp(mc->in, "GET ", 4) != 0) {
        status = "405 Method Not Allowed";

    } else if (sp == NULL || sp - path != 8
               || strncmp(path, "/metrics", 8) != 0)
    {
        status = "404 Not Found";

    } else {
        status = "200 OK";
        ctld_metrics_render(&body);
    }

    if (body.len == 0 && status[0] == '4') {
        relay_buf_printf(&body, "%s\n", status);
    }

    relay_buf_printf(&mc->out, "HTTP/1.0 %s\r\nContent-Type: %s\r\n"
                     "Content-Length: %zu\r\nConnection: close\r\n\r\n",
                     status, status[0] == '2'
                     ? "text/plain; version=0.0.4; charset=utf-8"
                     : "text/plain", body.len);

    if (!head && body.len) {
        relay_buf_add(&mc->out, body.data, body.len);
    }

    free(body.data);

    if (mc->out.failed) {
        mc->out.len = 0;                 /* out of memory: just close */
    }
}


static void
ctld_metrics_end(ctld_metrics_conn_t *mc)
{
    close(mc->fd);
    mc->fd = -1;
    free(mc->out.data);
    memset(&mc->out, 0, sizeof(relay_buf_t));
}


/* ---------------------------------------------------------- exposition */


#define ctld_family(b, name, type, help)                                      \
    relay_buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name,    \
                     type)


static void
ctld_metrics_render(relay_buf_t *b)
{
    size_t    i, n, known, nodes[CTLD_METRICS_VERSIONS];
    uint64_t  cumulative, versions[CTLD_METRICS_VERSIONS];

    static const struct {
        const char  *name;
        const char  *help;
        uint64_t    *value;
    } counters[] = {
        { "relay_controld_node_sessions_total",
          "Node sessions that said hello.", &ctld_metrics_sessions },
        { "relay_controld_acks_total",
          "Policy versions nodes acknowledged.", &ctld_metrics_acks },
        { "relay_controld_nacks_total",
          "Policy versions nodes refused (NACK).", &ctld_metrics_nacks },
        { "relay_controld_store_errors_total",
          "Versions the store could not save.", &ctld_metrics_store_errors }
    };

    known = 0;
    n = ctld_metrics_view->versions(versions, nodes, CTLD_METRICS_VERSIONS,
                                    &known);

    ctld_family(b, "relay_controld_nodes", "gauge",
                "Connected nodes, by the policy version they run.");

    for (i = 0; i < n; i++) {
        relay_buf_printf(b, "relay_controld_nodes{version=\"%llu\"} %zu\n",
                         (unsigned long long) versions[i], nodes[i]);
    }

    ctld_family(b, "relay_controld_nodes_known", "gauge",
                "Nodes in the node table, connected or not.");
    relay_buf_printf(b, "relay_controld_nodes_known %zu\n", known);

    ctld_family(b, "relay_controld_policy_version", "gauge",
                "The current policy version (0: none).");
    relay_buf_printf(b, "relay_controld_policy_version %llu\n",
                     (unsigned long long) ctld_metrics_view->current());

    ctld_family(b, "relay_controld_applies_total", "counter",
                "Apply and Rollback calls, by kind and result.");

    for (i = 0; i < CTLD_APPLY_N; i++) {
        relay_buf_printf(b, "relay_controld_applies_total{kind=\"apply\","
                         "result=\"%s\"} %llu\n"
                         "relay_controld_applies_total{kind=\"rollback\","
                         "result=\"%s\"} %llu\n",
                         ctld_metrics_results[i],
                         (unsigned long long) ctld_metrics_applies[0][i],
                         ctld_metrics_results[i],
                         (unsigned long long) ctld_metrics_applies[1][i]);
    }

    for (i = 0; i < sizeof(counters) / sizeof(counters[0]); i++) {
        ctld_family(b, counters[i].name, "counter", counters[i].help);
        relay_buf_printf(b, "%s %llu\n", counters[i].name,
                         (unsigned long long) *counters[i].value);
    }

    ctld_family(b, "relay_controld_ack_latency_seconds", "histogram",
                "From sending a version to a node to its ACK or NACK.");

    cumulative = 0;

    for (i = 0; i < CTLD_METRICS_BUCKETS; i++) {
        cumulative += ctld_metrics_ack_buckets[i];
        relay_buf_printf(b, "relay_controld_ack_latency_seconds_bucket"
                         "{le=\"%g\"} %llu\n",
                         (double) ctld_metrics_bounds[i] / 1000,
                         (unsigned long long) cumulative);
    }

    relay_buf_printf(b, "relay_controld_ack_latency_seconds_bucket"
                     "{le=\"+Inf\"} %llu\n"
                     "relay_controld_ack_latency_seconds_sum %.3f\n"
                     "relay_controld_ack_latency_seconds_count %llu\n",
                     (unsigned long long) ctld_metrics_ack_count,
                     (double) ctld_metrics_ack_sum_ms / 1000,
                     (unsigned long long) ctld_metrics_ack_count);

    ctld_family(b, "relay_controld_start_time_seconds", "gauge",
                "When this controld started.");
    relay_buf_printf(b, "relay_controld_start_time_seconds %lld\n",
                     (long long) ctld_metrics_started);
}
