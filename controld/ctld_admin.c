/*
 * Copyright (C) The relay authors
 */


/*
 * The Admin service: Apply, Get, History, Rollback, ListNodes, Queue.
 *
 * Apply and Rollback stamp the proposed policy (next version, the operator
 * as author, now), validate it, compare its canonical text with the
 * current one's (version, author and time left out), and only then store
 * and fan out.  Nothing reaches a node that did not validate here.
 *
 * Queue sends one Command (a fresh id) to each target node and answers when
 * every node has answered, gone away or timed out (command_timeout); the
 * call waits in a ctld_wait_t meanwhile.  The node side reports results
 * and nodes that go through ctld_admin_node_result() and
 * ctld_admin_node_gone(), which main() gave it.
 */


#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "relay_diff.h"
#include "relay_policy.h"
#include "ctld_admin.h"
#include "ctld_alloc.h"
#include "ctld_clock.h"
#include "ctld_codec.h"
#include "ctld_log.h"
#include "ctld_metrics.h"
#include "ctld_node.h"
#include "ctld_server.h"
#include "ctld_store.h"


typedef Relay__Control__V1__CommandResult   ctld_result_t;

typedef struct ctld_wait_s  ctld_wait_t;


typedef struct {
    char                        *node_id;
    uint64_t                     cmd_id;
    unsigned                     done:1;
    const char                  *error;
    ctld_node_msg_t             *msg;      /* with the CommandResult */
} ctld_slot_t;


struct ctld_wait_s {
    ctld_wait_t                 *next;
    ctld_call_t                 *call;
    int64_t                      deadline;
    size_t                       nslots;
    size_t                       left;
    ctld_slot_t                 *slots;
    unsigned                     starting:1;   /* no reply yet */
};


static void ctld_admin_handle(ctld_call_t *c);
static void ctld_admin_tick(int64_t now);
static void ctld_admin_apply(ctld_call_t *c);
static void ctld_admin_rollback(ctld_call_t *c);
static void ctld_admin_propose(ctld_call_t *c, const relay_policy_t *src,
    uint64_t rolled_back_from, int dry_run);
static char *ctld_admin_render(const relay_policy_t *p);
static void ctld_admin_get(ctld_call_t *c);
static void ctld_admin_history(ctld_call_t *c);
static void ctld_admin_list_nodes(ctld_call_t *c);
static void ctld_admin_queue(ctld_call_t *c);
static void ctld_admin_slot_done(ctld_wait_t *w, ctld_slot_t *s,
    const char *error, ctld_node_msg_t *m);
static void ctld_admin_queue_reply(ctld_wait_t *w);


const ctld_service_t  ctld_admin_service = {
    ctld_admin_handle,                     /* accept */
    NULL,                                  /* received */
    NULL,                                  /* read_ended */
    NULL,                                  /* sent */
    NULL,                                  /* cancelled */
    NULL,                                  /* release */
    ctld_admin_tick                        /* tick */
};


static int           ctld_command_timeout_ms;
static ctld_wait_t  *ctld_waits;
static uint64_t      ctld_cmd_seq;

static const char   *ctld_actions[] = { "LIST", "FLUSH", "DELETE", "BOUNCE",
                                         "HOLD", "RELEASE" };


void
ctld_admin_init(int command_timeout_ms)
{
    ctld_command_timeout_ms = command_timeout_ms;
}


static void
ctld_admin_handle(ctld_call_t *c)
{
    if (c->request == NULL) {
        ctld_call_reply(c, NULL, GRPC_STATUS_INVALID_ARGUMENT,
                        "no request message");
        return;
    }

    switch (c->method) {

    case CTLD_M_APPLY:
        ctld_admin_apply(c);
        break;

    case CTLD_M_GET:
        ctld_admin_get(c);
        break;

    case CTLD_M_HISTORY:
        ctld_admin_history(c);
        break;

    case CTLD_M_ROLLBACK:
        ctld_admin_rollback(c);
        break;

    case CTLD_M_LIST_NODES:
        ctld_admin_list_nodes(c);
        break;

    case CTLD_M_QUEUE:
        ctld_admin_queue(c);
        break;

    default:
        ctld_call_reply(c, NULL, GRPC_STATUS_UNIMPLEMENTED, "no such method");
        break;
    }
}


static void *
ctld_admin_request(ctld_call_t *c, const ProtobufCMessageDescriptor *d)
{
    char               err[256];
    ProtobufCMessage  *m;

    m = ctld_codec_unpack(d, c->request, err, sizeof(err));
    if (m == NULL) {
        ctld_log("%s by %s: %s", ctld_method_name(c->method), c->who, err);
        ctld_call_reply(c, NULL, GRPC_STATUS_INVALID_ARGUMENT, err);
    }

    return m;
}


static void
ctld_admin_apply(ctld_call_t *c)
{
    Relay__Control__V1__ApplyRequest  *req;

    req = ctld_admin_request(c, &relay__control__v1__apply_request__descriptor);
    if (req == NULL) {
        return;
    }

    if (req->policy == NULL) {
        ctld_log("apply by %s refused: no policy", c->who);
        ctld_call_reply(c, NULL, GRPC_STATUS_INVALID_ARGUMENT,
                        "policy: missing");

    } else {
        ctld_admin_propose(c, req->policy, 0, req->dry_run);
    }

    relay__control__v1__apply_request__free_unpacked(req, NULL);
}


static void
ctld_admin_rollback(ctld_call_t *c)
{
    char                                 msg[128];
    ctld_version_t                      *v;
    Relay__Control__V1__RollbackRequest  *req;

    req = ctld_admin_request(c,
                             &relay__control__v1__rollback_request__descriptor);
    if (req == NULL) {
        return;
    }

    v = req->version ? ctld_store_get(req->version) : NULL;

    if (v == NULL) {
        snprintf(msg, sizeof(msg), "version %llu does not exist",
                 (unsigned long long) req->version);
        ctld_log("rollback by %s refused: %s", c->who, msg);
        ctld_call_reply(c, NULL, GRPC_STATUS_NOT_FOUND, msg);

    } else {
        ctld_admin_propose(c, v->policy, v->version, req->dry_run);
    }

    relay__control__v1__rollback_request__free_unpacked(req, NULL);
}


static void
ctld_admin_propose(ctld_call_t *c, const relay_policy_t *src,
    uint64_t rolled_back_from, int dry_run)
{
    char                               err[1024], cur_name[64];
    char                              *cur_text, *new_text, *diff;
    size_t                             sent;
    const char                        *what;
    relay_policy_t                     p;
    ctld_version_t                    *cur, *v;
    Relay__Control__V1__ApplyResponse  resp =
                                      RELAY__CONTROL__V1__APPLY_RESPONSE__INIT;

    what = rolled_back_from ? "rollback" : "apply";

    /* stamp a shallow copy: src stays untouched */

    p = *src;
    p.version = ctld_store_next_version();
    p.author = (char *) c->name;
    p.created_unix = time(NULL);

    if (relay_policy_validate(&p, err, sizeof(err)) != 0) {
        ctld_metrics_apply(rolled_back_from != 0, CTLD_APPLY_INVALID);
        ctld_log("%s by %s refused: %s", what, c->who, err);
        ctld_call_reply(c, NULL, GRPC_STATUS_INVALID_ARGUMENT, err);
        return;
    }

    cur = ctld_store_current();

    new_text = ctld_admin_render(&p);
    cur_text = cur ? ctld_admin_render(cur->policy) : ctld_strdup("");

    if (new_text == NULL || cur_text == NULL) {
        free(new_text);
        free(cur_text);
        ctld_call_reply(c, NULL, GRPC_STATUS_INTERNAL, "render failed");
        return;
    }

    if (cur != NULL && strcmp(cur_text, new_text) == 0) {
        ctld_log("%s by %s: same as the current version %llu, nothing to do",
                 what, c->who, (unsigned long long) cur->version);
        resp.changed = 0;
        ctld_metrics_apply(rolled_back_from != 0, CTLD_APPLY_UNCHANGED);
        ctld_call_reply(c, &resp.base, GRPC_STATUS_OK, NULL);
        free(new_text);
        free(cur_text);
        return;
    }

    snprintf(cur_name, sizeof(cur_name), "version %llu",
             (unsigned long long) (cur ? cur->version : 0));

    diff = relay_diff(cur_name, cur_text, "proposed", new_text);
    free(new_text);
    free(cur_text);

    if (diff == NULL) {
        ctld_call_reply(c, NULL, GRPC_STATUS_INTERNAL, "diff failed");
        return;
    }

    resp.diff = diff;
    resp.changed = 1;

    if (dry_run) {
        ctld_metrics_apply(rolled_back_from != 0, CTLD_APPLY_DRY_RUN);
        ctld_log("%s by %s: dry run against version %llu",
                 what, c->who, (unsigned long long) (cur ? cur->version : 0));
        ctld_call_reply(c, &resp.base, GRPC_STATUS_OK, NULL);
        free(diff);
        return;
    }

    v = ctld_store_add(&p, rolled_back_from, err, sizeof(err));
    if (v == NULL) {
        ctld_metrics_apply(rolled_back_from != 0, CTLD_APPLY_FAILED);
        ctld_call_reply(c, NULL, GRPC_STATUS_INTERNAL, err);
        free(diff);
        return;
    }

    resp.version = v->version;
    ctld_metrics_apply(rolled_back_from != 0, CTLD_APPLIED);

    sent = ctld_node_fanout(v);

    if (rolled_back_from) {
        ctld_log("rollback by %s: version %llu copies version %llu, "
                 "sent to %zu nodes", c->who,
                 (unsigned long long) v->version,
                 (unsigned long long) rolled_back_from, sent);

    } else {
        ctld_log("apply by %s: version %llu (\"%.80s\"), sent to %zu nodes",
                 c->who, (unsigned long long) v->version, p.comment, sent);
    }

    ctld_call_reply(c, &resp.base, GRPC_STATUS_OK, NULL);
    free(diff);
}


/* canonical text without version, author and time */

static char *
ctld_admin_render(const relay_policy_t *src)
{
    relay_policy_t  p;

    p = *src;
    p.version = 0;
    p.author = (char *) protobuf_c_empty_string;
    p.created_unix = 0;

    return relay_policy_render(&p);
}


static void
ctld_admin_get(ctld_call_t *c)
{
    char                            msg[128];
    ctld_version_t                 *v;
    Relay__Control__V1__GetRequest  *req;

    req = ctld_admin_request(c, &relay__control__v1__get_request__descriptor);
    if (req == NULL) {
        return;
    }

    v = req->version ? ctld_store_get(req->version) : ctld_store_current();

    if (v == NULL) {
        if (req->version) {
            snprintf(msg, sizeof(msg), "version %llu does not exist",
                     (unsigned long long) req->version);

        } else {
            snprintf(msg, sizeof(msg), "no policy has been applied yet");
        }

        ctld_call_reply(c, NULL, GRPC_STATUS_NOT_FOUND, msg);

    } else {
        ctld_call_reply(c, &v->policy->base, GRPC_STATUS_OK, NULL);
    }

    relay__control__v1__get_request__free_unpacked(req, NULL);
}


static void
ctld_admin_history(ctld_call_t *c)
{
    size_t                                i, n, total;
    ctld_version_t                       *v;
    Relay__Control__V1__HistoryEntry     *e, **ep;
    Relay__Control__V1__HistoryRequest   *req;
    Relay__Control__V1__HistoryResponse   resp =
                                    RELAY__CONTROL__V1__HISTORY_RESPONSE__INIT;

    req = ctld_admin_request(c,
                             &relay__control__v1__history_request__descriptor);
    if (req == NULL) {
        return;
    }

    total = ctld_store_count();
    n = total;

    if (req->limit && req->limit < n) {
        n = req->limit;
    }

    relay__control__v1__history_request__free_unpacked(req, NULL);

    e = calloc(n ? n : 1, sizeof(Relay__Control__V1__HistoryEntry));
    ep = calloc(n ? n : 1, sizeof(Relay__Control__V1__HistoryEntry *));

    if (e == NULL || ep == NULL) {
        free(e);
        free(ep);
        ctld_call_reply(c, NULL, GRPC_STATUS_RESOURCE_EXHAUSTED,
                        "out of memory");
        return;
    }

    for (i = 0; i < n; i++) {
        v = ctld_store_nth(total - 1 - i);       /* newest first */

        relay__control__v1__history_entry__init(&e[i]);
        e[i].version = v->version;
        e[i].author = v->policy->author;
        e[i].created_unix = v->policy->created_unix;
        e[i].comment = v->policy->comment;
        e[i].rolled_back_from = v->rolled_back_from;
        ep[i] = &e[i];
    }

    resp.current = total ? ctld_store_current()->version : 0;
    resp.n_entries = n;
    resp.entries = ep;

    ctld_call_reply(c, &resp.base, GRPC_STATUS_OK, NULL);

    free(e);
    free(ep);
}


static void
ctld_admin_list_nodes(ctld_call_t *c)
{
    size_t                                  i, n;
    int64_t                                 now;
    ctld_node_t                            *node;
    Relay__Control__V1__NodeInfo           *e, **ep;
    Relay__Control__V1__ListNodesRequest   *req;
    Relay__Control__V1__ListNodesResponse   resp =
                                 RELAY__CONTROL__V1__LIST_NODES_RESPONSE__INIT;

    req = ctld_admin_request(c,
                             &relay__control__v1__list_nodes_request__descriptor);
    if (req == NULL) {
        return;
    }

    relay__control__v1__list_nodes_request__free_unpacked(req, NULL);

    n = ctld_node_count();
    now = ctld_now_ms();

    e = calloc(n ? n : 1, sizeof(Relay__Control__V1__NodeInfo));
    ep = calloc(n ? n : 1, sizeof(Relay__Control__V1__NodeInfo *));

    if (e == NULL || ep == NULL) {
        free(e);
        free(ep);
        ctld_call_reply(c, NULL, GRPC_STATUS_RESOURCE_EXHAUSTED,
                        "out of memory");
        return;
    }

    for (i = 0; i < n; i++) {
        node = ctld_node_nth(i);

        relay__control__v1__node_info__init(&e[i]);
        e[i].node_id = node->id;
        e[i].connected = node->session != NULL;
        e[i].applied_version = node->applied_version;
        e[i].nacked_version = node->nacked_version;
        e[i].nack_reason = node->nack_reason ? node->nack_reason
                                             : (char *) protobuf_c_empty_string;
        e[i].connected_unix = node->connected_unix;
        e[i].last_seen_unix = node->last_seen_unix;
        e[i].peer = node->peer ? node->peer : (char *) protobuf_c_empty_string;
        e[i].status = node->status_msg ? node->status_msg->status : NULL;
        e[i].rates = ctld_stats_rates(node->stats, now);
        ep[i] = &e[i];
    }

    resp.current = ctld_store_current() ? ctld_store_current()->version : 0;
    resp.n_nodes = n;
    resp.nodes = ep;

    ctld_call_reply(c, &resp.base, GRPC_STATUS_OK, NULL);

    for (i = 0; i < n; i++) {
        ctld_stats_rates_free(e[i].rates);
    }

    free(e);
    free(ep);
}


static void
ctld_admin_queue(ctld_call_t *c)
{
    char                               msg[256];
    size_t                             i, n;
    ctld_node_t                       *node;
    ctld_wait_t                       *w;
    Relay__Control__V1__QueueRequest  *req;

    req = ctld_admin_request(c, &relay__control__v1__queue_request__descriptor);
    if (req == NULL) {
        return;
    }

    if ((unsigned) req->action >= sizeof(ctld_actions) / sizeof(char *)) {
        ctld_call_reply(c, NULL, GRPC_STATUS_INVALID_ARGUMENT,
                        "action: unknown queue action");
        goto done;
    }

    n = 0;

    if (req->node_id[0] == '\0') {
        for (i = 0; i < ctld_node_count(); i++) {
            n += ctld_node_nth(i)->session != NULL;
        }

        if (n == 0) {
            /* every connected node: none, so no results */
            Relay__Control__V1__QueueResponse  empty =
                                    RELAY__CONTROL__V1__QUEUE_RESPONSE__INIT;

            ctld_log("queue %s by %s: no node is connected",
                     ctld_actions[req->action], c->who);
            ctld_call_reply(c, &empty.base, GRPC_STATUS_OK, NULL);
            goto done;
        }

    } else {
        node = ctld_node_find(req->node_id);

        if (node == NULL || node->session == NULL) {
            snprintf(msg, sizeof(msg), node ? "node \"%s\" is not connected"
                                            : "unknown node \"%s\"",
                     req->node_id);
            ctld_log("queue %s by %s: %s", ctld_actions[req->action], c->who,
                     msg);
            ctld_call_reply(c, NULL, node ? GRPC_STATUS_UNAVAILABLE
                                          : GRPC_STATUS_NOT_FOUND, msg);
            goto done;
        }

        n = 1;
    }

    w = calloc(1, sizeof(ctld_wait_t));
    if (w == NULL || (w->slots = calloc(n, sizeof(ctld_slot_t))) == NULL) {
        free(w);
        ctld_call_reply(c, NULL, GRPC_STATUS_RESOURCE_EXHAUSTED,
                        "out of memory");
        goto done;
    }

    if (ctld_cmd_seq == 0) {
        /* ids stay unique across restarts too */
        ctld_cmd_seq = (uint64_t) time(NULL) << 20;
    }

    w->call = c;
    w->nslots = n;
    w->left = n;
    w->deadline = ctld_now_ms() + ctld_command_timeout_ms;
    w->next = ctld_waits;
    ctld_waits = w;
    c->wait = w;
    w->starting = 1;
    ctld_call_enter(c, CTLD_CALL_WAITING);

    n = 0;

    for (i = 0; i < ctld_node_count(); i++) {
        node = ctld_node_nth(i);

        if (node->session == NULL
            || (req->node_id[0] && strcmp(req->node_id, node->id) != 0))
        {
            continue;
        }

        w->slots[n].node_id = ctld_strdup(node->id);
        w->slots[n].cmd_id = ++ctld_cmd_seq;

        ctld_log("queue %s by %s: command %llu to node %s",
                 ctld_actions[req->action], c->who,
                 (unsigned long long) w->slots[n].cmd_id, node->id);

        n++;
    }

    for (i = 0; i < n; i++) {
        node = ctld_node_find(w->slots[i].node_id);

        if (ctld_node_command(node, w->slots[i].cmd_id, req->action,
                              req->n_queue_ids, req->queue_ids)
            != 0)
        {
            ctld_admin_slot_done(w, &w->slots[i], "cannot send the command",
                                 NULL);
        }
    }

    w->starting = 0;

    if (w->left == 0) {
        ctld_admin_queue_reply(w);
    }

done:

    relay__control__v1__queue_request__free_unpacked(req, NULL);
}


static void
ctld_admin_slot_done(ctld_wait_t *w, ctld_slot_t *s, const char *error,
    ctld_node_msg_t *m)
{
    s->done = 1;
    s->error = error;
    s->msg = m;
    w->left--;

    if (error) {
        ctld_log("node %s command %llu: %s", s->node_id,
                 (unsigned long long) s->cmd_id, error);
    }
}


void
ctld_admin_node_result(const char *node_id, ctld_node_msg_t *m)
{
    size_t          i;
    ctld_slot_t    *s;
    ctld_wait_t    *w;
    ctld_result_t  *r;

    r = m->result;

    for (w = ctld_waits; w; w = w->next) {
        for (i = 0; i < w->nslots; i++) {
            s = &w->slots[i];

            if (s->done || s->cmd_id != r->id
                || strcmp(s->node_id, node_id) != 0)
            {
                continue;
            }

            ctld_log("node %s command %llu result ok=%d affected=%u "
                     "entries=%zu%s%s", node_id, (unsigned long long) r->id,
                     (int) r->ok, r->affected, r->n_entries,
                     r->ok ? "" : " error=", r->ok ? "" : r->error);

            ctld_admin_slot_done(w, s, NULL, m);

            if (w->left == 0) {
                ctld_admin_queue_reply(w);
            }

            return;
        }
    }

    ctld_log("node %s: result of unknown or expired command %llu", node_id,
             (unsigned long long) r->id);

    relay__control__v1__node_message__free_unpacked(m, NULL);
}


void
ctld_admin_node_gone(const char *node_id)
{
    size_t        i;
    ctld_wait_t  *w, *next;

    for (w = ctld_waits; w; w = next) {
        next = w->next;

        for (i = 0; i < w->nslots; i++) {
            if (!w->slots[i].done
                && strcmp(w->slots[i].node_id, node_id) == 0)
            {
                ctld_admin_slot_done(w, &w->slots[i], "node disconnected",
                                     NULL);
            }
        }

        if (w->left == 0 && !w->starting) {
            ctld_admin_queue_reply(w);
        }
    }
}


static void
ctld_admin_tick(int64_t now)
{
    size_t        i;
    ctld_wait_t  *w, *next;

    for (w = ctld_waits; w; w = next) {
        next = w->next;

        if (now < w->deadline) {
            continue;
        }

        for (i = 0; i < w->nslots; i++) {
            if (!w->slots[i].done) {
                ctld_admin_slot_done(w, &w->slots[i], "timeout", NULL);
            }
        }

        ctld_admin_queue_reply(w);
    }
}


static void
ctld_admin_queue_reply(ctld_wait_t *w)
{
    size_t                                 i;
    ctld_slot_t                           *s;
    ctld_wait_t                          **pw;
    ctld_result_t                         *r;
    Relay__Control__V1__NodeQueueResult   *e, **ep;
    Relay__Control__V1__QueueResponse      resp =
                                    RELAY__CONTROL__V1__QUEUE_RESPONSE__INIT;

    for (pw = &ctld_waits; *pw; pw = &(*pw)->next) {
        if (*pw == w) {
            *pw = w->next;
            break;
        }
    }

    e = calloc(w->nslots ? w->nslots : 1,
               sizeof(Relay__Control__V1__NodeQueueResult));
    ep = calloc(w->nslots ? w->nslots : 1,
                sizeof(Relay__Control__V1__NodeQueueResult *));

    if (e == NULL || ep == NULL) {
        ctld_call_reply(w->call, NULL, GRPC_STATUS_RESOURCE_EXHAUSTED,
                        "out of memory");

    } else {
        for (i = 0; i < w->nslots; i++) {
            s = &w->slots[i];

            relay__control__v1__node_queue_result__init(&e[i]);
            e[i].node_id = s->node_id;

            if (s->msg) {
                r = s->msg->result;
                e[i].ok = r->ok;
                e[i].error = r->error;
                e[i].affected = r->affected;
                e[i].n_entries = r->n_entries;
                e[i].entries = r->entries;

            } else {
                e[i].ok = 0;
                e[i].error = (char *) (s->error ? s->error : "no result");
            }

            ep[i] = &e[i];
        }

        resp.n_results = w->nslots;
        resp.results = ep;

        ctld_call_reply(w->call, &resp.base, GRPC_STATUS_OK, NULL);
    }

    free(e);
    free(ep);

    for (i = 0; i < w->nslots; i++) {
        free(w->slots[i].node_id);

        if (w->slots[i].msg) {
            relay__control__v1__node_message__free_unpacked(w->slots[i].msg,
                                                             NULL);
        }
    }

    w->call->wait = NULL;
    free(w->slots);
    free(w);
}
