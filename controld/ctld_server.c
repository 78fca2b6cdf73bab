/*
 * Copyright (C) The relay authors
 */


/*
 * The gRPC server: one completion queue, one thread, every in-flight call a
 * ctld_call_t.  A call owns one tag per kind of batch (request, recv, send,
 * close, status); the loop only calls ctld_call_advance(tag, ok).  At most
 * one batch of each kind is in flight, counted in c->refs; a call is freed
 * when its status has been sent and every batch has been reaped (the tags
 * live in the call, so they must outlive their events).
 *
 *   REQUESTED --accept, auth ok--> HELLO --Hello--> ACTIVE      (Session)
 *   REQUESTED --accept, auth ok--> [handled at once] | WAITING  (Admin)
 *   any --ctld_call_finish()--> FINISHING --last batch reaped--> DONE
 *
 * The server knows its methods but not what they do: once a caller is
 * identified (ctld_auth.c), its call goes to the service main() gave for
 * the method (ctld_service_t: node sessions, admin calls), which answers
 * through the ctld_call_*() functions here.  Calls go one way only.
 *
 * Every tag on the queue is a ctld_event_t whose handler the loop calls:
 * the server's own calls, and the calls of a client main() may give
 * (ctld_client_t: the etcd store), which shares the queue and the thread.
 *
 * The loop wakes at least every 200 ms (CTLD_TICK_MS) for the services'
 * timers (hello and command timeouts) and the signal flag that SIGTERM/
 * SIGINT set.  Shutdown: stop accepting, cancel every call, tell the
 * client to stop, reap until no call is left, destroy the server, drain
 * the queue to GRPC_QUEUE_SHUTDOWN.
 */


#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>

#include "ctld_auth.h"
#include "ctld_clock.h"
#include "ctld_codec.h"
#include "ctld_log.h"
#include "ctld_metrics.h"
#include "ctld_server.h"


static void ctld_server_signals(void);
static void ctld_server_create(void);
static int ctld_server_listen(uint64_t version, char *ca, char *cert,
    char *key);
static void ctld_server_loop(int rc);
static void ctld_server_tick(int64_t now);
static void ctld_server_destroy(void);
static int ctld_server_request(ctld_method_e m);
static const ctld_service_t *ctld_server_service(ctld_call_t *c);
static void ctld_call_tag(ctld_call_t *c, ctld_tag_t *tag, ctld_op_e op);
static void ctld_call_event(ctld_event_t *ev, int ok);
static void ctld_call_advance(ctld_tag_t *tag, int ok);
static void ctld_server_accept(ctld_call_t *c);
static void ctld_call_status(ctld_call_t *c);
static void ctld_call_free(ctld_call_t *c);
static void ctld_signal(int signo);


static const char  *ctld_method_paths[CTLD_M_N] = {
    "/relay.control.v1.Node/Session",
    "/relay.control.v1.Admin/Apply",
    "/relay.control.v1.Admin/Get",
    "/relay.control.v1.Admin/History",
    "/relay.control.v1.Admin/Rollback",
    "/relay.control.v1.Admin/ListNodes",
    "/relay.control.v1.Admin/Queue",
    "/relay.control.v1.Admin/Promote"
};


static const char  *ctld_state_names[] = {
    "REQUESTED", "HELLO", "ACTIVE", "WAITING", "FINISHING", "DONE"
};


static const ctld_conf_t      *ctld_conf;
static const ctld_service_t   *ctld_node_svc;
static const ctld_service_t   *ctld_admin_svc;
static const ctld_client_t    *ctld_client;
static grpc_server            *ctld_server;
static grpc_completion_queue  *ctld_cq;
static void                   *ctld_methods[CTLD_M_N];
static unsigned                ctld_live_calls;
static int                     ctld_stopping;
static volatile sig_atomic_t   ctld_quit;
static int                     ctld_debug;


const char *
ctld_method_name(ctld_method_e m)
{
    return strrchr(ctld_method_paths[m], '.') + 1;
}


int
ctld_server_run(const ctld_conf_t *conf, uint64_t version,
    const ctld_service_t *node, const ctld_service_t *admin,
    const ctld_client_t *client)
{
    int    rc;
    char  *ca, *cert, *key;

    ctld_conf = conf;
    ctld_node_svc = node;
    ctld_admin_svc = admin;
    ctld_client = client;
    ctld_debug = getenv("CTLD_DEBUG") != NULL;

    ctld_server_signals();

    ca = cert = key = NULL;

    if (!conf->insecure) {
        ca = ctld_read_file(conf->ca);
        cert = ctld_read_file(conf->cert);
        key = ctld_read_file(conf->key);

        if (ca == NULL || cert == NULL || key == NULL) {
            free(ca);
            free(cert);
            free(key);
            return -1;
        }
    }

    ctld_server_create();

    rc = ctld_server_listen(version, ca, cert, key);

    free(ca);
    free(cert);
    free(key);

    if (rc == 0 && ctld_client) {
        ctld_client->start(ctld_cq);
    }

    ctld_server_loop(rc);
    ctld_server_destroy();

    return rc;
}


static void
ctld_server_signals(void)
{
    struct sigaction  sa;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = ctld_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
}


static void
ctld_server_create(void)
{
    int                m;
    grpc_arg           args[8];
    grpc_channel_args  cargs;

    ctld_arg_int(&args[0], GRPC_ARG_ALLOW_REUSEPORT, 0);
    ctld_arg_int(&args[1], GRPC_ARG_KEEPALIVE_TIME_MS, 30000);
    ctld_arg_int(&args[2], GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 10000);
    ctld_arg_int(&args[3], GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
    ctld_arg_int(&args[4],
                 GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 5000);
    ctld_arg_int(&args[5], GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
    ctld_arg_int(&args[6], GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH,
                 CTLD_MAX_MESSAGE);

    cargs.num_args = 7;
    cargs.args = args;

    ctld_server = grpc_server_create(&cargs, NULL);
    ctld_cq = grpc_completion_queue_create_for_next(NULL);
    grpc_server_register_completion_queue(ctld_server, ctld_cq, NULL);

    for (m = 0; m < CTLD_M_N; m++) {
        ctld_methods[m] = grpc_server_register_method(ctld_server,
                              ctld_method_paths[m], NULL,
                              m == CTLD_M_SESSION
                                  ? GRPC_SRM_PAYLOAD_NONE
                                  : GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER,
                              0);
    }
}


/* 0: listening, a call of each method requested; -1: quit at once */

static int
ctld_server_listen(uint64_t version, char *ca, char *cert, char *key)
{
    int                          m, port, rc;
    grpc_server_credentials     *creds;
    grpc_ssl_pem_key_cert_pair   kp;

    if (ctld_conf->insecure) {
        creds = grpc_insecure_server_credentials_create();

    } else {
        kp.private_key = key;
        kp.cert_chain = cert;
        creds = grpc_ssl_server_credentials_create_ex(ca, &kp, 1,
                    GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY,
                    NULL);
    }

    port = 0;

    if (creds != NULL) {
        port = grpc_server_add_http2_port(ctld_server, ctld_conf->listen,
                                          creds);
        grpc_server_credentials_release(creds);
    }

    grpc_server_start(ctld_server);

    if (port == 0) {
        ctld_log("cannot listen on %s (address in use, bad address or "
                 "bad TLS files)", ctld_conf->listen);
        ctld_quit = 1;
        return -1;
    }

    ctld_log("listening on %s (%s), current version %llu", ctld_conf->listen,
             ctld_conf->insecure ? "INSECURE: no TLS, no identities" : "mTLS",
             (unsigned long long) version);

    rc = 0;

    for (m = 0; m < CTLD_M_N; m++) {
        if (ctld_server_request(m) != 0) {
            rc = -1;
            ctld_quit = 1;
        }
    }

    return rc;
}


/* until the signal, then until every call is reaped (5 s at the most) */

static void
ctld_server_loop(int rc)
{
    int          shutdown_seen;
    int64_t      now, last_tick, stop_started;
    grpc_event   ev;
    static int   shutdown_tag;

    last_tick = ctld_now_ms();
    stop_started = 0;
    shutdown_seen = 0;

    for ( ;; ) {
        ev = grpc_completion_queue_next(ctld_cq,
                 gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                              gpr_time_from_millis(CTLD_TICK_MS,
                                                   GPR_TIMESPAN)),
                 NULL);

        if (ev.type == GRPC_OP_COMPLETE) {
            if (ev.tag == &shutdown_tag) {
                shutdown_seen = 1;

            } else {
                ((ctld_event_t *) ev.tag)->handler(ev.tag, ev.success);
            }
        }

        now = ctld_now_ms();

        if (now - last_tick >= CTLD_TICK_MS) {
            last_tick = now;
            ctld_server_tick(now);
        }

        if (ctld_quit && !ctld_stopping) {
            if (rc == 0) {
                ctld_log("shutting down: %u calls to cancel",
                         ctld_live_calls);
            }

            ctld_stopping = 1;
            stop_started = now;
            grpc_server_shutdown_and_notify(ctld_server, ctld_cq,
                                            &shutdown_tag);
            grpc_server_cancel_all_calls(ctld_server);

            if (ctld_client) {
                ctld_client->stop();
            }
        }

        if (ctld_stopping && shutdown_seen && ctld_live_calls == 0
            && (ctld_client == NULL || ctld_client->busy() == 0))
        {
            break;
        }

        if (ctld_stopping && now - stop_started > 5000) {
            ctld_log("shutdown: %u calls still busy after 5s, leaving them",
                     ctld_live_calls);
            break;
        }
    }
}


/* the services' timers: node sessions first, then admin calls */

static void
ctld_server_tick(int64_t now)
{
    if (ctld_node_svc->tick) {
        ctld_node_svc->tick(now);
    }

    if (ctld_admin_svc->tick) {
        ctld_admin_svc->tick(now);
    }

    if (ctld_client) {
        ctld_client->tick(now);
    }
    ctld_metrics_poll(now);
}


static void
ctld_server_destroy(void)
{
    grpc_event  ev;

    grpc_server_destroy(ctld_server);
    grpc_completion_queue_shutdown(ctld_cq);

    do {
        ev = grpc_completion_queue_next(ctld_cq,
                                        gpr_inf_future(GPR_CLOCK_REALTIME),
                                        NULL);
    } while (ev.type != GRPC_QUEUE_SHUTDOWN);

    grpc_completion_queue_destroy(ctld_cq);
}


static void
ctld_signal(int signo)
{
    ctld_quit = 1;
}


static int
ctld_server_request(ctld_method_e m)
{
    ctld_call_t      *c;
    grpc_call_error   err;

    c = calloc(1, sizeof(ctld_call_t));
    if (c == NULL) {
        ctld_log("out of memory");
        return -1;
    }

    c->method = m;
    c->state = CTLD_CALL_REQUESTED;
    ctld_call_tag(c, &c->tag_request, CTLD_OP_REQUEST);
    ctld_call_tag(c, &c->tag_recv, CTLD_OP_RECV);
    ctld_call_tag(c, &c->tag_send, CTLD_OP_SEND);
    ctld_call_tag(c, &c->tag_close, CTLD_OP_CLOSE);
    ctld_call_tag(c, &c->tag_status, CTLD_OP_STATUS);
    c->details = grpc_empty_slice();
    grpc_metadata_array_init(&c->request_md);

    err = grpc_server_request_registered_call(ctld_server, ctld_methods[m],
              &c->call, &c->deadline, &c->request_md,
              m == CTLD_M_SESSION ? NULL : &c->request,
              ctld_cq, ctld_cq, &c->tag_request);

    if (err != GRPC_CALL_OK) {
        ctld_log("requesting %s calls failed: %d", ctld_method_paths[m], err);
        grpc_metadata_array_destroy(&c->request_md);
        free(c);
        return -1;
    }

    c->refs = 1;
    ctld_live_calls++;

    return 0;
}


void
ctld_call_enter(ctld_call_t *c, ctld_call_state_e st)
{
    if (ctld_debug) {
        ctld_log("call %p %s: %s -> %s", (void *) c,
                 ctld_method_name(c->method), ctld_state_names[c->state],
                 ctld_state_names[st]);
    }

    c->state = st;
}


static void
ctld_call_tag(ctld_call_t *c, ctld_tag_t *tag, ctld_op_e op)
{
    ctld_event_set(&tag->ev, ctld_call_event, c);
    tag->call = c;
    tag->op = op;
}


static void
ctld_call_event(ctld_event_t *ev, int ok)
{
    ctld_call_advance((ctld_tag_t *) ev, ok);
}


static void
ctld_call_advance(ctld_tag_t *tag, int ok)
{
    ctld_call_t           *c;
    grpc_byte_buffer      *bb;
    const ctld_service_t  *svc;

    c = tag->call;
    c->refs--;
    svc = ctld_server_service(c);

    switch (tag->op) {

    case CTLD_OP_REQUEST:
        if (!ok) {
            /* the server is shutting down: no call came */
            ctld_call_free(c);
            return;
        }

        if (!ctld_stopping) {
            ctld_server_request(c->method);
        }

        ctld_server_accept(c);
        break;

    case CTLD_OP_RECV:
        c->recving = 0;
        bb = c->recv_buf;
        c->recv_buf = NULL;

        if (c->ended) {
            if (bb) {
                grpc_byte_buffer_destroy(bb);
            }

        } else if (!ok || bb == NULL) {
            /* half-close by the peer, or a read failure */
            if (bb) {
                grpc_byte_buffer_destroy(bb);
            }

            if (svc->read_ended) {
                svc->read_ended(c, ok);
            }

        } else if (svc->received) {
            svc->received(c, bb);

        } else {
            grpc_byte_buffer_destroy(bb);
        }

        break;

    case CTLD_OP_SEND:
        c->sending = 0;
        c->md_sent = 1;

        if (c->send_buf) {
            grpc_byte_buffer_destroy(c->send_buf);
            c->send_buf = NULL;
        }

        if (c->want_status) {
            ctld_call_status(c);

        } else if (!c->ended && svc->sent) {
            svc->sent(c, ok);
        }

        break;

    case CTLD_OP_CLOSE:
        if (c->cancelled && !c->ended && svc->cancelled) {
            svc->cancelled(c);
        }

        break;

    case CTLD_OP_STATUS:
        break;
    }

    if (c->refs == 0 && c->status_sent) {
        ctld_call_free(c);
    }
}


static void
ctld_server_accept(ctld_call_t *c)
{
    char              err[512];
    grpc_op           op;
    ctld_role_e       role, want;
    grpc_call_error   rc;

    c->peer = grpc_call_get_peer(c->call);

    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    op.data.recv_close_on_server.cancelled = &c->cancelled;

    rc = grpc_call_start_batch(c->call, &op, 1, &c->tag_close, NULL);
    if (rc != GRPC_CALL_OK) {
        ctld_log("%s from %s: start_batch failed: %d",
                 ctld_method_name(c->method), c->peer, rc);
        c->status_sent = 1;     /* nothing can be sent: just free it */
        return;
    }

    c->refs++;

    err[0] = '\0';
    role = ctld_auth_identify(c, ctld_conf->insecure, err, sizeof(err));
    want = c->method == CTLD_M_SESSION ? CTLD_ROLE_NODE : CTLD_ROLE_OPERATOR;

    if (role != want) {
        if (role != CTLD_ROLE_NONE) {
            snprintf(err, sizeof(err), "\"%s\" may not call %s: %s",
                     c->who, ctld_method_paths[c->method],
                     want == CTLD_ROLE_NODE
                     ? "node sessions need a node:<id> certificate"
                     : "admin calls need an operator:<name> certificate");
        }

        ctld_log("refused caller %s on %s: %s", c->peer,
                 ctld_method_paths[c->method], err);
        ctld_call_finish(c, GRPC_STATUS_PERMISSION_DENIED, err);
        return;
    }

    ctld_server_service(c)->accept(c);
}


static const ctld_service_t *
ctld_server_service(ctld_call_t *c)
{
    return (c->method == CTLD_M_SESSION) ? ctld_node_svc : ctld_admin_svc;
}


/* a unary answer: metadata, message (NULL on error) and status at once */

void
ctld_call_reply(ctld_call_t *c, const ProtobufCMessage *m,
    grpc_status_code status, const char *msg)
{
    if (m != NULL && status == GRPC_STATUS_OK) {
        c->send_buf = ctld_codec_pack(m);
    }

    ctld_call_finish(c, status, msg);
}


void
ctld_call_fail(ctld_call_t *c, grpc_status_code status, const char *kind,
    const char *msg)
{
    c->error = kind;

    ctld_call_finish(c, status, msg);
}


void
ctld_call_finish(ctld_call_t *c, grpc_status_code status, const char *msg)
{
    if (c->status_sent || c->want_status) {
        return;
    }

    c->status = status;
    grpc_slice_unref(c->details);
    c->details = grpc_slice_from_copied_string(msg ? msg : "");
    c->want_status = 1;
    ctld_call_enter(c, CTLD_CALL_FINISHING);

    if (!c->sending) {
        ctld_call_status(c);
    }
}


static void
ctld_call_status(ctld_call_t *c)
{
    size_t            n;
    grpc_op           ops[3];
    grpc_call_error   rc;
    static grpc_metadata  trailer;

    c->want_status = 0;
    c->status_sent = 1;

    memset(ops, 0, sizeof(ops));
    n = 0;

    if (!c->md_sent) {
        ops[n].op = GRPC_OP_SEND_INITIAL_METADATA;
        n++;
        c->md_sent = 1;
    }

    if (c->send_buf) {
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n].data.send_message.send_message = c->send_buf;
        n++;
    }

    ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[n].data.send_status_from_server.status = c->status;
    ops[n].data.send_status_from_server.status_details = &c->details;

    if (c->error) {
        /* copied by the batch: one static entry serves every call */
        trailer.key = grpc_slice_from_static_string("relay-error");
        trailer.value = grpc_slice_from_static_string(c->error);
        ops[n].data.send_status_from_server.trailing_metadata_count = 1;
        ops[n].data.send_status_from_server.trailing_metadata = &trailer;
    }

    n++;

    rc = grpc_call_start_batch(c->call, ops, n, &c->tag_status, NULL);
    if (rc != GRPC_CALL_OK) {
        ctld_log("%s from %s: sending the status failed: %d",
                 ctld_method_name(c->method), c->peer, rc);
        return;
    }

    c->refs++;
}


/* sessions: one SEND_MESSAGE in flight; bb is owned by the call from now */

int
ctld_call_send(ctld_call_t *c, grpc_byte_buffer *bb)
{
    size_t            n;
    grpc_op           ops[2];
    grpc_call_error   rc;

    if (c->sending || c->status_sent || c->want_status) {
        if (bb) {
            grpc_byte_buffer_destroy(bb);
        }
        return -1;
    }

    memset(ops, 0, sizeof(ops));
    n = 0;

    if (!c->md_sent) {
        ops[n].op = GRPC_OP_SEND_INITIAL_METADATA;
        n++;
    }

    if (bb) {
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n].data.send_message.send_message = bb;
        n++;
    }

    if (n == 0) {
        return -1;
    }

    c->send_buf = bb;

    rc = grpc_call_start_batch(c->call, ops, n, &c->tag_send, NULL);
    if (rc != GRPC_CALL_OK) {
        ctld_log("%s from %s: send failed: %d", ctld_method_name(c->method),
                 c->peer, rc);
        c->send_buf = NULL;
        if (bb) {
            grpc_byte_buffer_destroy(bb);
        }
        return -1;
    }

    c->md_sent = 1;
    c->sending = 1;
    c->refs++;

    return 0;
}


int
ctld_call_recv(ctld_call_t *c)
{
    grpc_op           op;
    grpc_call_error   rc;

    if (c->recving || c->ended) {
        return 0;
    }

    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_RECV_MESSAGE;
    op.data.recv_message.recv_message = &c->recv_buf;

    rc = grpc_call_start_batch(c->call, &op, 1, &c->tag_recv, NULL);
    if (rc != GRPC_CALL_OK) {
        ctld_log("%s from %s: recv failed: %d", ctld_method_name(c->method),
                 c->peer, rc);
        return -1;
    }

    c->recving = 1;
    c->refs++;

    return 0;
}


static void
ctld_call_free(ctld_call_t *c)
{
    const ctld_service_t  *svc;

    ctld_call_enter(c, CTLD_CALL_DONE);

    svc = ctld_server_service(c);

    if (svc->release) {
        svc->release(c);
    }

    if (c->call) {
        grpc_call_unref(c->call);
    }

    if (c->request) {
        grpc_byte_buffer_destroy(c->request);
    }

    if (c->recv_buf) {
        grpc_byte_buffer_destroy(c->recv_buf);
    }

    if (c->send_buf) {
        grpc_byte_buffer_destroy(c->send_buf);
    }

    grpc_slice_unref(c->details);
    grpc_metadata_array_destroy(&c->request_md);

    if (c->peer) {
        gpr_free(c->peer);
    }

    free(c);
    ctld_live_calls--;
}


void
ctld_event_set(ctld_event_t *ev, ctld_event_pt handler, void *data)
{
    ev->handler = handler;
    ev->data = data;
}


void
ctld_arg_int(grpc_arg *a, char *key, int value)
{
    a->type = GRPC_ARG_INTEGER;
    a->key = key;
    a->value.integer = value;
}


char *
ctld_read_file(const char *path)
{
    long   len;
    char  *buf;
    FILE  *f;

    f = fopen(path, "r");
    if (f == NULL) {
        ctld_log("%s: %s", path, strerror(errno));
        return NULL;
    }

    if (fseek(f, 0, SEEK_END) != 0 || (len = ftell(f)) < 0
        || fseek(f, 0, SEEK_SET) != 0 || len > 1024 * 1024)
    {
        ctld_log("%s: unreadable or too large", path);
        fclose(f);
        return NULL;
    }

    buf = malloc(len + 1);
    if (buf == NULL || fread(buf, 1, len, f) != (size_t) len) {
        ctld_log("%s: read failed", path);
        free(buf);
        fclose(f);
        return NULL;
    }

    buf[len] = '\0';
    fclose(f);

    return buf;
}
