/*
 * Copyright (C) The relay authors
 */


/*
 * Node sessions and the node table.
 *
 * A node keeps one Node.Session stream open.  Its first message must be a
 * Hello naming the node its certificate names (node:<id>), within 10 s.
 * One session per node: a newer session of the node replaces the active
 * one, an older one is refused, newer by the Hello's incarnation (the
 * start of the node's process).  So after a reload or a binary upgrade the
 * new worker takes the session once, and the old one, retrying, is told
 * "a newer session ... is active" instead of taking it back; two sessions
 * of equal incarnation (a node coming back after its replica died) are
 * one process: the newcomer replaces.  Nodes stay in the table after they
 * go, with connected=false.
 *
 * Sending: one SEND_MESSAGE in flight per session.  Each node is sent the
 * version it is to run, its target: the canary, when a canary is in
 * progress and selects it (by id and labels), else the current version.
 * Whenever the store's versions change, every session is looked at again
 * (ctld_node_retarget()).  Policies coalesce: a session holds at most one
 * pending version, so a node that lags behind a burst of applies gets
 * only the last one; a version NACKed is not sent again on that session.
 * Commands queue FIFO behind it.  Policies go out as the store's cached
 * wire form, which holds only versions that passed relay_policy_validate().
 *
 * Other replicas (controld on etcd): this side publishes its nodes'
 * records and sessions to the fleet (ctld_fleet.c) and learns theirs, so
 * the table holds every node of the fleet.  A session of another replica
 * with an incarnation at least this one's ends the session here (the node
 * moved); one with a lower incarnation is answered by publishing this
 * session again, which ends that one there.  Queue commands for a node of
 * another replica go through the fleet; those that come through it for a
 * node here are sent as any other, and their results go back to their
 * origin.
 *
 * The admin side waits for command results, nodes that go and versions
 * applied: this side reports them through the callbacks it was given at
 * startup (ctld_node_conf_t) and calls nothing of the admin side.
 */


#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ctld_alloc.h"
#include "ctld_clock.h"
#include "ctld_codec.h"
#include "ctld_fleet.h"
#include "ctld_log.h"
#include "ctld_metrics.h"
#include "ctld_node.h"
#include "ctld_server.h"
#include "ctld_store.h"


typedef struct ctld_cmd_s  ctld_cmd_t;

/* a command waiting for its turn on a session, or sent for origin */
struct ctld_cmd_s {
    ctld_cmd_t                 *next;
    uint64_t                    id;
    grpc_byte_buffer           *wire;
    char                       *origin;       /* NULL: this replica's */
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
static int ctld_node_labels(ctld_node_t *n, Relay__Control__V1__Label **l,
    size_t nl);
static void ctld_node_ack(ctld_call_t *c, Relay__Control__V1__Ack *a);
static void ctld_node_result(ctld_call_t *c, ctld_node_msg_t *m);
static void ctld_node_aim(ctld_call_t *c);
static void ctld_node_pump(ctld_call_t *c);
static int ctld_node_queue(ctld_call_t *c, uint64_t id,
    const ctld_command_t *co, const char *origin);
static void ctld_node_publish(ctld_node_t *n);
static void ctld_node_publish_session(ctld_node_t *n);
static void ctld_node_set_status(ctld_node_t *n,
    Relay__Control__V1__NodeStatus *st, ProtobufCMessage *holder);
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
        ctld_node_set_status(n, m->status, &m->base);
        m = NULL;

        ctld_stats_add(&n->stats, n->status, c->last_msg_ms);

        if (n->status->applied_version) {
            n->applied_version = n->status->applied_version;
        }

        ctld_node_publish(n);
        break;

    case RELAY__CONTROL__V1__NODE_MESSAGE__MSG_RESULT:
        ctld_node_result(c, m);             /* takes m */
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
    size_t           i, len;
    uint64_t         target;
    const char      *why;
    ctld_node_t     *n;
    ctld_call_t     *old;

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

    for (i = 0; i < h->n_labels; i++) {
        why = relay_scope_label_check(h->labels[i]->name,
                                      h->labels[i]->value);
        if (why) {
            snprintf(msg, sizeof(msg), "hello: label \"%.64s=%.128s\": %s",
                     h->labels[i]->name, h->labels[i]->value, why);
            ctld_log("session from %s (%s): %s", c->peer, c->who, msg);
            ctld_node_end(c, GRPC_STATUS_INVALID_ARGUMENT, msg);
            return;
        }
    }

    n = ctld_node_find(h->node_id);
    if (n == NULL) {
        n = ctld_node_add(h->node_id);
        if (n == NULL) {
            ctld_node_end(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
            return;
        }
    }

    c->incarnation = h->incarnation;
    old = n->session;

    /* the newer process keeps the session (0: a client that does not say) */

    if (h->incarnation && ((old && h->incarnation < old->incarnation)
                           || (!old && n->remote
                               && h->incarnation < n->incarnation)))
    {
        snprintf(msg, sizeof(msg), "a newer session of node %s is active "
                 "(from %s%s%s)", n->id, old ? old->peer : n->peer,
                 old ? "" : " on controld ", old ? "" : n->replica);
        ctld_log("node %s: refused the session from %s: %s", n->id, c->peer,
                 msg);
        ctld_node_end(c, GRPC_STATUS_FAILED_PRECONDITION, msg);
        return;
    }

    if (old != NULL) {
        ctld_log("node %s: the session from %s replaces the one from %s",
                 n->id, c->peer, n->peer);

        /* commands not yet sent follow the node to its new session */
        c->cmd_head = old->cmd_head;
        c->cmd_tail = old->cmd_tail;
        c->forwarded = old->forwarded;
        old->cmd_head = NULL;
        old->cmd_tail = NULL;
        old->forwarded = NULL;

        old->node = NULL;
        n->session = NULL;
        grpc_call_cancel_with_status(old->call, GRPC_STATUS_ABORTED,
                                     "replaced by a newer session of the "
                                     "same node", NULL);
        ctld_node_end(old, GRPC_STATUS_ABORTED,
                      "replaced by a newer session of the same node");

    } else if (n->remote) {
        ctld_log("node %s: the session from %s replaces the one on "
                 "controld %s", n->id, c->peer, n->replica);
    }

    if (ctld_node_labels(n, h->labels, h->n_labels) != 0) {
        ctld_node_end(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }

    n->session = c;
    n->remote = 0;
    c->node = n;
    free(n->peer);
    n->peer = ctld_strdup(c->peer);
    free(n->software);
    n->software = ctld_strdup(h->software);
    free(n->replica);
    n->replica = ctld_strdup(ctld_fleet_replica());
    n->incarnation = h->incarnation;
    n->connected_unix = time(NULL);
    n->last_seen_unix = n->connected_unix;
    n->applied_version = h->applied_version;

    target = ctld_node_target(n);

    for (i = 0, len = 0; i < n->nlabels && len < sizeof(msg) - 1; i++) {
        len += snprintf(msg + len, sizeof(msg) - len, "%s%s=%s",
                        i ? "," : " labels=", n->labels[i].name,
                        n->labels[i].value);
    }

    msg[len < sizeof(msg) ? len : sizeof(msg) - 1] = '\0';

    ctld_log("node %s connected peer=%s software=\"%.64s\" "
             "applied_version=%llu current=%llu%s", n->id, c->peer,
             h->software, (unsigned long long) h->applied_version,
             (unsigned long long) target, msg);

    ctld_call_enter(c, CTLD_CALL_ACTIVE);
    ctld_metrics_session();

    ctld_node_publish_session(n);
    ctld_node_publish(n);

    ctld_node_aim(c);
    ctld_node_pump(c);

    ctld_node_conf.changed(n);
}


/* the node's labels from its hello: copies of their own */

static int
ctld_node_labels(ctld_node_t *n, Relay__Control__V1__Label **l, size_t nl)
{
    size_t                i;
    relay_scope_label_t  *labels;

    labels = calloc(nl ? nl : 1, sizeof(relay_scope_label_t));
    if (labels == NULL) {
        return -1;
    }

    for (i = 0; i < nl; i++) {
        labels[i].name = ctld_strdup(l[i]->name);
        labels[i].value = ctld_strdup(l[i]->value);
    }

    for (i = 0; i < n->nlabels; i++) {
        free((char *) n->labels[i].name);
        free((char *) n->labels[i].value);
    }

    free(n->labels);
    n->labels = labels;
    n->nlabels = nl;

    return 0;
}


/* the version a node is to run: the canary's when it selects the node */

uint64_t
ctld_node_target(const ctld_node_t *n)
{
    ctld_version_t      *v;
    relay_scope_node_t   node;

    v = ctld_store_canary();

    if (v != NULL) {
        node.id = n->id;
        node.labels = n->labels;
        node.nlabels = n->nlabels;

        if (relay_scope_match(v->canary, &node)) {
            return v->version;
        }
    }

    v = ctld_store_current();

    return v ? v->version : 0;
}


int
ctld_node_connected(const ctld_node_t *n)
{
    return n->session != NULL || n->remote;
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

    } else {
        n->nacked_version = a->version;
        free(n->nack_reason);
        n->nack_reason = ctld_strdup(a->reason);

        ctld_log("node %s NACK version %llu: %s", n->id,
                 (unsigned long long) a->version, a->reason);
    }

    ctld_node_publish(n);
    ctld_node_conf.changed(n);
}


/* a command's result: this replica's, or another's that sent it here */

static void
ctld_node_result(ctld_call_t *c, ctld_node_msg_t *m)
{
    ctld_cmd_t  **pp, *cmd;

    for (pp = &c->forwarded; *pp; pp = &(*pp)->next) {
        cmd = *pp;

        if (cmd->id != m->result->id) {
            continue;
        }

        *pp = cmd->next;

        ctld_log("node %s command %llu result ok=%d for controld %s",
                 c->node->id, (unsigned long long) cmd->id,
                 (int) m->result->ok, cmd->origin);

        ctld_fleet_answer(cmd->origin, c->node->id, m);
        relay__control__v1__node_message__free_unpacked(m, NULL);

        free(cmd->origin);
        free(cmd);
        return;
    }

    ctld_node_conf.result(c->node->id, m);       /* takes m */
}


/* the version this session is to be sent next, if any */

static void
ctld_node_aim(ctld_call_t *c)
{
    uint64_t      target;
    ctld_node_t  *n;

    n = c->node;
    target = ctld_node_target(n);

    if (target == 0 || target == c->sent_version
        || (c->sent_version == 0 && target == n->applied_version))
    {
        return;
    }

    c->pending_version = target;
}


/* every session here looks at its target again: the versions changed */

void
ctld_node_retarget(void)
{
    ctld_call_t  *c;

    for (c = ctld_sessions; c; c = c->next) {
        if (c->state != CTLD_CALL_ACTIVE || c->node == NULL) {
            continue;
        }

        ctld_node_aim(c);
        ctld_node_pump(c);
    }
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
            c->sent_version = v->version;

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
        cmd->wire = NULL;

        if (cmd->origin) {
            cmd->next = c->forwarded;
            c->forwarded = cmd;

        } else {
            free(cmd);
        }

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


/* commands never sent (or never answered) go with their session */

static void
ctld_node_release(ctld_call_t *c)
{
    ctld_cmd_t  *cmd;

    while (c->cmd_head) {
        cmd = c->cmd_head;
        c->cmd_head = cmd->next;
        grpc_byte_buffer_destroy(cmd->wire);
        free(cmd->origin);
        free(cmd);
    }

    while (c->forwarded) {
        cmd = c->forwarded;
        c->forwarded = cmd->next;
        free(cmd->origin);
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

        ctld_node_publish_session(n);
        ctld_node_publish(n);

        ctld_node_conf.gone(n->id);
        ctld_node_conf.changed(n);

    } else if (status != GRPC_STATUS_OK
               && status != GRPC_STATUS_PERMISSION_DENIED
               && status != GRPC_STATUS_ABORTED
               && status != GRPC_STATUS_FAILED_PRECONDITION)
    {
        ctld_log("session from %s ended before a hello: %s", c->peer, msg);
    }

    ctld_call_finish(c, status, msg);
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


/* a queue command: on the node's session here, or through the fleet */

int
ctld_node_command(ctld_node_t *n, uint64_t id,
    Relay__Control__V1__QueueAction action, size_t n_ids, char **ids)
{
    Relay__Control__V1__Command  co = RELAY__CONTROL__V1__COMMAND__INIT;

    co.id = id;
    co.action = action;
    co.n_queue_ids = n_ids;
    co.queue_ids = ids;

    if (n->session && !n->session->ended) {
        return ctld_node_queue(n->session, id, &co, NULL);
    }

    if (n->remote) {
        return ctld_fleet_command(n->id, &co);
    }

    return -1;
}


static int
ctld_node_queue(ctld_call_t *c, uint64_t id, const ctld_command_t *co,
    const char *origin)
{
    ctld_cmd_t                          *cmd;
    Relay__Control__V1__ControlMessage   m =
                                      RELAY__CONTROL__V1__CONTROL_MESSAGE__INIT;

    cmd = calloc(1, sizeof(ctld_cmd_t));
    if (cmd == NULL) {
        return -1;
    }

    m.msg_case = RELAY__CONTROL__V1__CONTROL_MESSAGE__MSG_COMMAND;
    m.command = (ctld_command_t *) co;

    cmd->id = id;
    cmd->wire = ctld_codec_pack(&m.base);
    cmd->origin = origin ? ctld_strdup(origin) : NULL;

    if (c->cmd_tail) {
        c->cmd_tail->next = cmd;

    } else {
        c->cmd_head = cmd;
    }

    c->cmd_tail = cmd;

    ctld_node_pump(c);

    return 0;
}


/* ---------------------------------------------------------------- fleet */


/* this node's record, for the other replicas */

static void
ctld_node_publish(ctld_node_t *n)
{
    size_t                        i;
    ctld_node_record_t            r = RELAY__CONTROL__V1__NODE_RECORD__INIT;
    Relay__Control__V1__Label    *l, **lp;

    /* a session here, or one that ended here (not moved elsewhere) */

    if (!ctld_fleet_enabled() || n->remote) {
        return;
    }

    l = calloc(n->nlabels + 1, sizeof(Relay__Control__V1__Label));
    lp = calloc(n->nlabels + 1, sizeof(Relay__Control__V1__Label *));

    if (l == NULL || lp == NULL) {
        free(l);
        free(lp);
        return;
    }

    for (i = 0; i < n->nlabels; i++) {
        relay__control__v1__label__init(&l[i]);
        l[i].name = (char *) n->labels[i].name;
        l[i].value = (char *) n->labels[i].value;
        lp[i] = &l[i];
    }

    r.node_id = n->id;
    r.replica = (char *) ctld_fleet_replica();
    r.peer = n->peer ? n->peer : (char *) protobuf_c_empty_string;
    r.connected_unix = n->connected_unix;
    r.last_seen_unix = n->last_seen_unix;
    r.applied_version = n->applied_version;
    r.nacked_version = n->nacked_version;
    r.nack_reason = n->nack_reason ? n->nack_reason
                                   : (char *) protobuf_c_empty_string;
    r.status = n->status;
    r.n_labels = n->nlabels;
    r.labels = lp;
    r.software = n->software ? n->software
                             : (char *) protobuf_c_empty_string;
    r.incarnation = n->incarnation;

    ctld_fleet_node(n->id, &r);

    free(l);
    free(lp);
}


static void
ctld_node_publish_session(ctld_node_t *n)
{
    ctld_session_record_t  s = RELAY__CONTROL__V1__SESSION_RECORD__INIT;

    if (!ctld_fleet_enabled()) {
        return;
    }

    if (n->session == NULL) {
        ctld_fleet_session(n->id, NULL);
        return;
    }

    s.replica = (char *) ctld_fleet_replica();
    s.incarnation = n->incarnation;
    s.peer = n->peer;
    s.connected_unix = n->connected_unix;

    ctld_fleet_session(n->id, &s);
}


/* another replica's record of a node: what it last heard of it */

void
ctld_node_remote_record(const char *id, ctld_node_record_t *r)
{
    ctld_node_t  *n;

    if (r == NULL) {
        return;
    }

    n = ctld_node_find(id);
    if (n == NULL) {
        n = ctld_node_add(id);
    }

    if (n == NULL || n->session != NULL
        || strcmp(r->replica, ctld_fleet_replica()) == 0)
    {
        /* the session is here: this replica knows better */
        relay__control__v1__node_record__free_unpacked(r, NULL);
        return;
    }

    if (ctld_node_labels(n, r->labels, r->n_labels) != 0) {
        relay__control__v1__node_record__free_unpacked(r, NULL);
        return;
    }

    free(n->peer);
    n->peer = ctld_strdup(r->peer);
    free(n->software);
    n->software = ctld_strdup(r->software);
    n->connected_unix = r->connected_unix;
    n->last_seen_unix = r->last_seen_unix;
    n->applied_version = r->applied_version;
    n->nacked_version = r->nacked_version;
    free(n->nack_reason);
    n->nack_reason = r->nack_reason[0] ? ctld_strdup(r->nack_reason) : NULL;

    if (!n->remote) {
        free(n->replica);
        n->replica = ctld_strdup(r->replica);
    }

    ctld_node_set_status(n, r->status, &r->base);

    ctld_node_conf.changed(n);
}


/*
 * Another replica holds a node's session (s), or nobody does (NULL).  The
 * newer process wins: a session here of an incarnation at most that one's
 * ends; a newer one here is published again, which ends the other there.
 */

void
ctld_node_remote_session(const char *id, ctld_session_record_t *s)
{
    char          msg[256];
    ctld_node_t  *n;
    ctld_call_t  *c;

    n = ctld_node_find(id);

    if (s == NULL) {
        if (n == NULL) {
            return;
        }

        if (n->session) {
            ctld_node_publish_session(n);     /* ours went: say it again */

        } else if (n->remote) {
            n->remote = 0;
            n->last_seen_unix = time(NULL);
            ctld_log("node %s: its session on controld %s ended", n->id,
                     n->replica);
            ctld_node_conf.gone(n->id);
            ctld_node_conf.changed(n);
        }

        return;
    }

    if (strcmp(s->replica, ctld_fleet_replica()) == 0) {
        relay__control__v1__session_record__free_unpacked(s, NULL);
        return;
    }

    if (n == NULL) {
        n = ctld_node_add(id);
        if (n == NULL) {
            relay__control__v1__session_record__free_unpacked(s, NULL);
            return;
        }
    }

    c = n->session;

    if (c != NULL && s->incarnation && c->incarnation
        && s->incarnation < c->incarnation)
    {
        ctld_node_publish_session(n);
        relay__control__v1__session_record__free_unpacked(s, NULL);
        return;
    }

    if (c != NULL) {
        snprintf(msg, sizeof(msg), "replaced by a newer session of the same "
                 "node on controld %s", s->replica);
        ctld_log("node %s: %s", n->id, msg);

        c->node = NULL;
        n->session = NULL;
        grpc_call_cancel_with_status(c->call, GRPC_STATUS_ABORTED, msg,
                                     NULL);
        ctld_node_end(c, GRPC_STATUS_ABORTED, msg);

        /* not ours to put again (its key is theirs now: not deleted) */
        ctld_node_publish_session(n);

        /* what it was sent here gets no answer any more */
        ctld_node_conf.gone(n->id);
    }

    n->remote = 1;
    free(n->replica);
    n->replica = ctld_strdup(s->replica);
    n->incarnation = s->incarnation;
    free(n->peer);
    n->peer = ctld_strdup(s->peer);
    n->connected_unix = s->connected_unix;

    relay__control__v1__session_record__free_unpacked(s, NULL);

    ctld_node_conf.changed(n);
}


/* another replica's queue command for a node whose session is here */

void
ctld_node_remote_command(const char *node_id, const char *origin,
    ctld_command_t *cmd)
{
    ctld_node_t  *n;

    n = ctld_node_find(node_id);

    if (n != NULL && n->session && !n->session->ended) {
        ctld_log("node %s: command %llu from controld %s", n->id,
                 (unsigned long long) cmd->id, origin);

        if (ctld_node_queue(n->session, cmd->id, cmd, origin) != 0) {
            ctld_log("node %s: command %llu from controld %s: cannot send",
                     n->id, (unsigned long long) cmd->id, origin);
        }
    }

    relay__control__v1__command__free_unpacked(cmd, NULL);
}


/* ---------------------------------------------------------------- table */


static void
ctld_node_set_status(ctld_node_t *n, Relay__Control__V1__NodeStatus *st,
    ProtobufCMessage *holder)
{
    if (n->status_holder) {
        protobuf_c_message_free_unpacked(n->status_holder, NULL);
    }

    n->status_holder = holder;
    n->status = st;
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
    size_t        i, k;
    ctld_node_t  *n;

    for (i = 0; i < ctld_nnodes; i++) {
        n = ctld_nodes[i];

        if (n->status_holder) {
            protobuf_c_message_free_unpacked(n->status_holder, NULL);
        }

        for (k = 0; k < n->nlabels; k++) {
            free((char *) n->labels[k].name);
            free((char *) n->labels[k].value);
        }

        free(n->labels);
        ctld_stats_free(n->stats);
        free(n->id);
        free(n->peer);
        free(n->replica);
        free(n->software);
        free(n->nack_reason);
        free(n);
    }

    free(ctld_nodes);
    ctld_nodes = NULL;
    ctld_nnodes = 0;
}
