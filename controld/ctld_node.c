/*
 * Copyright (C) The relay authors
 */


/*
 * Node sessions and the node table.
 *
 * A node keeps one Node.Session stream open.  Its first message must be a
 * Hello naming the node its certificate names (node:<id>), within 10 s; a
 * newer session of the same node replaces (cancels) the older one.  Nodes
 * stay in the table after they go, with connected=false.
 *
 * Sending: one SEND_MESSAGE in flight per session.  Policies coalesce: a
 * session holds at most one pending version, the newest, so a node that
 * lags behind a burst of applies gets only the last one.  Commands queue
 * FIFO behind it.  Policies go out as the store's cached wire form, which
 * holds only versions that passed relay_policy_validate().
 *
 * The admin side waits for command results and for nodes that go: this
 * side reports both through the callbacks it was given at startup
 * (ctld_node_conf_t) and calls nothing of the admin side.
 */


#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ctld_alloc.h"
#include "ctld_clock.h"
#include "ctld_codec.h"
#include "ctld_log.h"
#include "ctld_metrics.h"
#include "ctld_node.h"
#include "ctld_server.h"
#include "ctld_store.h"


typedef struct ctld_cmd_s  ctld_cmd_t;

/* a command waiting for its turn on a session */
struct ctld_cmd_s {
    ctld_cmd_t                 *next;
    uint64_t                    id;
    grpc_byte_buffer           *wire;
};


static void ctld_node_accept(ctld_call_t *c);
static void ctld_node_received(ctld_call_t *c, grpc_byte_buffer *bb);
static void ctld_node_read_ended(ctld_call_t *c, int ok);
static void ctld_node_sent(ctld_call_t *c, int ok);
static void ctld_node_cancelled(ctld_call_t *c);
static void ctld_node_release(ctld_call_t *c);
static void ctld_node_tick(int64_t now);
static void ctld_node_end(ctld_call_t *c, grpc_status_code status,
    const char *msg);
static void ctld_node_hello(ctld_call_t *c, Relay__Control__V1__Hello *h);
static void ctld_node_ack(ctld_call_t *c, Relay__Control__V1__Ack *a);
static void ctld_node_pump(ctld_call_t *c);
static ctld_node_t *ctld_node_add(const char *id);
static int ctld_node_id_valid(const char *id);


const ctld_service_t  ctld_node_service = {
    ctld_node_accept,                      /* accept */
    ctld_node_received,                    /* received */
    ctld_node_read_ended,                  /* read_ended */
    ctld_node_sent,                        /* sent */
    ctld_node_cancelled,                   /* cancelled */
    ctld_node_release,                     /* release */
    ctld_node_tick                         /* tick */
};


static ctld_node_conf_t   ctld_node_conf;
static ctld_node_t      **ctld_nodes;
static size_t             ctld_nnodes;
static size_t             ctld_nodes_cap;
static ctld_call_t       *ctld_sessions;          /* not ended yet */


void
ctld_node_init(const ctld_node_conf_t *conf)
{
    ctld_node_conf = *conf;
}


static void
ctld_node_accept(ctld_call_t *c)
{
    c->next = ctld_sessions;
    c->prev = NULL;

    if (ctld_sessions) {
        ctld_sessions->prev = c;
    }

    ctld_sessions = c;

    c->last_msg_ms = ctld_now_ms();
    c->hello_deadline = c->last_msg_ms + CTLD_HELLO_TIMEOUT_MS;
    ctld_call_enter(c, CTLD_CALL_HELLO);

    /* initial metadata at once: the node sees the stream is up */
    ctld_call_send(c, NULL);

    if (ctld_call_recv(c) != 0) {
        ctld_node_end(c, GRPC_STATUS_INTERNAL, "cannot read");
    }
}


static void
ctld_node_received(ctld_call_t *c, grpc_byte_buffer *bb)
{
    char              err[256];
    ctld_node_t      *n;
    ctld_node_msg_t  *m;

    m = (ctld_node_msg_t *) ctld_codec_unpack(
                                &relay__control__v1__node_message__descriptor,
                                bb, err, sizeof(err));
    grpc_byte_buffer_destroy(bb);

    if (m == NULL) {
        ctld_log("session from %s (%s): %s", c->peer, c->who, err);
        ctld_node_end(c, GRPC_STATUS_INVALID_ARGUMENT, err);
        return;
    }

    c->last_msg_ms = ctld_now_ms();

    if (c->state == CTLD_CALL_HELLO) {
        if (m->msg_case != RELAY__CONTROL__V1__NODE_MESSAGE__MSG_HELLO) {
            ctld_log("session from %s (%s): first message is not a hello",
                     c->peer, c->who);
            ctld_node_end(c, GRPC_STATUS_INVALID_ARGUMENT,
                          "the first message must be a hello");

        } else {
            ctld_node_hello(c, m->hello);
        }

        relay__control__v1__node_message__free_unpacked(m, NULL);
        goto next;
    }

    n = c->node;
    n->last_seen_unix = time(NULL);

    switch (m->msg_case) {

    case RELAY__CONTROL__V1__NODE_MESSAGE__MSG_ACK:
        ctld_node_ack(c, m->ack);
        break;

    case RELAY__CONTROL__V1__NODE_MESSAGE__MSG_STATUS:
        if (n->status_msg) {
            relay__control__v1__node_message__free_unpacked(n->status_msg,
                                                            NULL);
        }

        n->status_msg = m;
        m = NULL;

        ctld_stats_add(&n->stats, n->status_msg->status, c->last_msg_ms);

        if (n->status_msg->status->applied_version) {
            n->applied_version = n->status_msg->status->applied_version;
        }

        break;

    case RELAY__CONTROL__V1__NODE_MESSAGE__MSG_RESULT:
        ctld_node_conf.result(n->id, m);    /* takes m */
        m = NULL;
        break;

    case RELAY__CONTROL__V1__NODE_MESSAGE__MSG_HELLO:
        ctld_log("node %s: a second hello", n->id);
        ctld_node_end(c, GRPC_STATUS_INVALID_ARGUMENT,
                      "hello is only the first message");
        break;

    default:
        ctld_log("node %s: empty message", n->id);
        ctld_node_end(c, GRPC_STATUS_INVALID_ARGUMENT, "empty NodeMessage");
        break;
    }

    if (m) {
        relay__control__v1__node_message__free_unpacked(m, NULL);
    }

next:

    if (!c->ended && ctld_call_recv(c) != 0) {
        ctld_node_end(c, GRPC_STATUS_INTERNAL, "cannot read");
    }
}


static void
ctld_node_hello(ctld_call_t *c, Relay__Control__V1__Hello *h)
{
    char             msg[512];
    ctld_node_t     *n;
    ctld_call_t     *old;
    ctld_version_t  *cur;

    if (!ctld_node_id_valid(h->node_id)) {
        ctld_log("session from %s (%s): invalid hello node_id \"%.64s\"",
                 c->peer, c->who, h->node_id);
        ctld_node_end(c, GRPC_STATUS_INVALID_ARGUMENT,
                      "hello: node_id must be 1-128 characters of "
                      "[A-Za-z0-9._-]");
        return;
    }

    if (ctld_node_conf.insecure) {
        snprintf(c->who, sizeof(c->who), "node:%s", h->node_id);
        c->name = c->who + 5;

    } else if (strcmp(h->node_id, c->name) != 0) {
        snprintf(msg, sizeof(msg), "hello node_id \"%s\" does not match the "
                 "certificate \"%s\"", h->node_id, c->who);
        ctld_log("refused caller %s on Node/Session: %s", c->peer, msg);
        ctld_node_end(c, GRPC_STATUS_PERMISSION_DENIED, msg);
        return;
    }

    n = ctld_node_find(h->node_id);
    if (n == NULL) {
        n = ctld_node_add(h->node_id);
        if (n == NULL) {
            ctld_node_end(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
            return;
        }
    }

    old = n->session;

    if (old != NULL) {
        ctld_log("node %s: the session from %s replaces the one from %s",
                 n->id, c->peer, n->peer);

        /* commands not yet sent follow the node to its new session */
        c->cmd_head = old->cmd_head;
        c->cmd_tail = old->cmd_tail;
        old->cmd_head = NULL;
        old->cmd_tail = NULL;

        old->node = NULL;
        n->session = NULL;
        grpc_call_cancel_with_status(old->call, GRPC_STATUS_ABORTED,
                                     "replaced by a newer session of the "
                                     "same node", NULL);
        ctld_node_end(old, GRPC_STATUS_ABORTED,
                      "replaced by a newer session of the same node");
    }

    n->session = c;
    c->node = n;
    free(n->peer);
    n->peer = ctld_strdup(c->peer);
    n->connected_unix = time(NULL);
    n->last_seen_unix = n->connected_unix;
    n->applied_version = h->applied_version;

    cur = ctld_store_current();

    ctld_log("node %s connected peer=%s software=\"%.64s\" "
             "applied_version=%llu current=%llu", n->id, c->peer,
             h->software, (unsigned long long) h->applied_version,
             (unsigned long long) (cur ? cur->version : 0));

    ctld_call_enter(c, CTLD_CALL_ACTIVE);
    ctld_metrics_session();

    if (cur != NULL && h->applied_version != cur->version) {
        c->pending_version = cur->version;
    }

    ctld_node_pump(c);
}


static void
ctld_node_ack(ctld_call_t *c, Relay__Control__V1__Ack *a)
{
    ctld_node_t  *n;

    n = c->node;

    ctld_metrics_ack(a->ok, a->version == n->sent_version
                            ? ctld_now_ms() - n->sent_ms : -1);

    if (a->ok) {
        n->applied_version = a->version;

        if (n->nacked_version && a->version >= n->nacked_version) {
            n->nacked_version = 0;
            free(n->nack_reason);
            n->nack_reason = NULL;
        }

        ctld_log("node %s ACK version %llu", n->id,
                 (unsigned long long) a->version);
        return;
    }

    n->nacked_version = a->version;
    free(n->nack_reason);
    n->nack_reason = ctld_strdup(a->reason);

    ctld_log("node %s NACK version %llu: %s", n->id,
             (unsigned long long) a->version, a->reason);
}


static void
ctld_node_pump(ctld_call_t *c)
{
    grpc_slice        s;
    ctld_cmd_t       *cmd;
    ctld_version_t   *v;
    grpc_byte_buffer *bb;

    if (c->sending || c->ended || c->state != CTLD_CALL_ACTIVE) {
        return;
    }

    if (c->pending_version) {
        v = ctld_store_get(c->pending_version);
        c->pending_version = 0;

        if (v != NULL) {
            s = ctld_store_wire(v);
            bb = grpc_raw_byte_buffer_create(&s, 1);

            if (c->node) {
                c->node->sent_version = v->version;
                c->node->sent_ms = ctld_now_ms();
            }

            if (ctld_call_send(c, bb) != 0) {
                ctld_node_end(c, GRPC_STATUS_INTERNAL, "cannot send");
            }

            return;
        }
    }

    cmd = c->cmd_head;

    if (cmd != NULL) {
        c->cmd_head = cmd->next;
        if (c->cmd_head == NULL) {
            c->cmd_tail = NULL;
        }

        bb = cmd->wire;
        free(cmd);

        if (ctld_call_send(c, bb) != 0) {
            ctld_node_end(c, GRPC_STATUS_INTERNAL, "cannot send");
        }
    }
}


/* the peer half-closed the stream, or reading failed */

static void
ctld_node_read_ended(ctld_call_t *c, int ok)
{
    ctld_node_end(c, GRPC_STATUS_OK, ok ? "" : "read failed");
}


static void
ctld_node_sent(ctld_call_t *c, int ok)
{
    if (!ok) {
        ctld_node_end(c, GRPC_STATUS_UNAVAILABLE, "write failed");
        return;
    }

    ctld_node_pump(c);
}


static void
ctld_node_cancelled(ctld_call_t *c)
{
    ctld_node_end(c, GRPC_STATUS_CANCELLED, "cancelled");
}


/* commands never sent go with their session */

static void
ctld_node_release(ctld_call_t *c)
{
    ctld_cmd_t  *cmd;

    while (c->cmd_head) {
        cmd = c->cmd_head;
        c->cmd_head = cmd->next;
        grpc_byte_buffer_destroy(cmd->wire);
        free(cmd);
    }

    c->cmd_tail = NULL;
}


static void
ctld_node_end(ctld_call_t *c, grpc_status_code status, const char *msg)
{
    ctld_node_t  *n;

    if (c->ended) {
        return;
    }

    c->ended = 1;

    if (c->prev) {
        c->prev->next = c->next;

    } else if (ctld_sessions == c) {
        ctld_sessions = c->next;
    }

    if (c->next) {
        c->next->prev = c->prev;
    }

    c->prev = c->next = NULL;

    n = c->node;

    if (n != NULL) {
        c->node = NULL;
        n->session = NULL;
        n->last_seen_unix = time(NULL);

        ctld_log("node %s disconnected peer=%s (%s)", n->id, c->peer,
                 status == GRPC_STATUS_OK && *msg == '\0' ? "closed" : msg);

        ctld_node_conf.gone(n->id);

    } else if (status != GRPC_STATUS_OK
               && status != GRPC_STATUS_PERMISSION_DENIED
               && status != GRPC_STATUS_ABORTED)
    {
        ctld_log("session from %s ended before a hello: %s", c->peer, msg);
    }

    ctld_call_finish(c, status, msg);
}


size_t
ctld_node_fanout(ctld_version_t *v)
{
    size_t        n;
    ctld_call_t  *c;

    n = 0;

    for (c = ctld_sessions; c; c = c->next) {
        if (c->state != CTLD_CALL_ACTIVE || c->node == NULL
            || c->node->applied_version == v->version)
        {
            continue;
        }

        c->pending_version = v->version;
        ctld_node_pump(c);
        n++;
    }

    return n;
}


static void
ctld_node_tick(int64_t now)
{
    ctld_call_t  *c, *next;

    for (c = ctld_sessions; c; c = next) {
        next = c->next;

        if (c->state == CTLD_CALL_HELLO && now > c->hello_deadline) {
            ctld_log("session from %s: no hello within %d ms", c->peer,
                     CTLD_HELLO_TIMEOUT_MS);
            grpc_call_cancel_with_status(c->call,
                                         GRPC_STATUS_DEADLINE_EXCEEDED,
                                         "no hello", NULL);
            ctld_node_end(c, GRPC_STATUS_DEADLINE_EXCEEDED, "no hello");
            continue;
        }

        if (c->state == CTLD_CALL_ACTIVE && ctld_node_conf.status_timeout_ms
            && now - c->last_msg_ms > ctld_node_conf.status_timeout_ms)
        {
            grpc_call_cancel_with_status(c->call,
                                         GRPC_STATUS_DEADLINE_EXCEEDED,
                                         "silent for too long", NULL);
            ctld_node_end(c, GRPC_STATUS_DEADLINE_EXCEEDED,
                          "silent longer than status_timeout");
        }
    }
}


int
ctld_node_command(ctld_node_t *n, uint64_t id,
    Relay__Control__V1__QueueAction action, size_t n_ids, char **ids)
{
    ctld_cmd_t                          *cmd;
    ctld_call_t                         *c;
    Relay__Control__V1__Command          co = RELAY__CONTROL__V1__COMMAND__INIT;
    Relay__Control__V1__ControlMessage   m =
                                      RELAY__CONTROL__V1__CONTROL_MESSAGE__INIT;

    c = n->session;
    if (c == NULL || c->ended) {
        return -1;
    }

    cmd = calloc(1, sizeof(ctld_cmd_t));
    if (cmd == NULL) {
        return -1;
    }

    co.id = id;
    co.action = action;
    co.n_queue_ids = n_ids;
    co.queue_ids = ids;
    m.msg_case = RELAY__CONTROL__V1__CONTROL_MESSAGE__MSG_COMMAND;
    m.command = &co;

    cmd->id = id;
    cmd->wire = ctld_codec_pack(&m.base);

    if (c->cmd_tail) {
        c->cmd_tail->next = cmd;

    } else {
        c->cmd_head = cmd;
    }

    c->cmd_tail = cmd;

    ctld_node_pump(c);

    return 0;
}


size_t
ctld_node_count(void)
{
    return ctld_nnodes;
}


ctld_node_t *
ctld_node_nth(size_t i)
{
    return i < ctld_nnodes ? ctld_nodes[i] : NULL;
}


ctld_node_t *
ctld_node_find(const char *id)
{
    size_t  i;

    for (i = 0; i < ctld_nnodes; i++) {
        if (strcmp(ctld_nodes[i]->id, id) == 0) {
            return ctld_nodes[i];
        }
    }

    return NULL;
}


static ctld_node_t *
ctld_node_add(const char *id)
{
    size_t         cap;
    ctld_node_t   *n, **nn;

    if (ctld_nnodes == ctld_nodes_cap) {
        cap = ctld_nodes_cap ? ctld_nodes_cap * 2 : 64;
        nn = realloc(ctld_nodes, cap * sizeof(ctld_node_t *));
        if (nn == NULL) {
            return NULL;
        }

        ctld_nodes = nn;
        ctld_nodes_cap = cap;
    }

    n = calloc(1, sizeof(ctld_node_t));
    if (n == NULL) {
        return NULL;
    }

    n->id = ctld_strdup(id);
    ctld_nodes[ctld_nnodes++] = n;

    return n;
}


/* connected nodes by the version they run, for controld's metrics */

size_t
ctld_node_versions(uint64_t *version, size_t *nodes, size_t max,
    size_t *known)
{
    size_t        i, j, n;
    ctld_node_t  *node;

    n = 0;
    *known = ctld_nnodes;

    for (i = 0; i < ctld_nnodes; i++) {
        node = ctld_nodes[i];

        if (node->session == NULL) {
            continue;
        }

        for (j = 0; j < n && version[j] != node->applied_version; j++) {
            /* void */
        }

        if (j == n) {
            if (n == max) {
                continue;
            }

            version[n] = node->applied_version;
            nodes[n++] = 0;
        }

        nodes[j]++;
    }

    return n;
}


static int
ctld_node_id_valid(const char *id)
{
    size_t  len;

    len = strlen(id);

    return len > 0 && len <= 128
           && strspn(id, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                         "0123456789._-") == len;
}


void
ctld_node_free_all(void)
{
    size_t        i;
    ctld_node_t  *n;

    for (i = 0; i < ctld_nnodes; i++) {
        n = ctld_nodes[i];

        if (n->status_msg) {
            relay__control__v1__node_message__free_unpacked(n->status_msg,
                                                            NULL);
        }

        ctld_stats_free(n->stats);
        free(n->id);
        free(n->peer);
        free(n->nack_reason);
        free(n);
    }

    free(ctld_nodes);
    ctld_nodes = NULL;
    ctld_nnodes = 0;
}
