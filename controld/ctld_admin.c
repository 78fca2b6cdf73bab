/*
 * Copyright (C) The relay authors
 */


/*
 * The Admin service: Apply, Get, History, Rollback, ListNodes, Queue,
 * Promote.
 *
 * Apply and Rollback stamp the proposed policy (next version, the operator
 * as author, now), validate it, compare its canonical text with the
 * current one's (version, author and time left out), and only then store
 * and fan out.  Nothing reaches a node that did not validate here.  The
 * store saves asynchronously (etcd compares and swaps: a version another
 * replica made meanwhile is a conflict, ABORTED, naming it); the call
 * waits in its ctld_apply_t meanwhile.  An Apply with a canary selector
 * makes the new version a canary (one at a time): only the nodes it
 * selects are to run it until Promote makes it the fleet's or Rollback
 * without a version takes it back.
 *
 * With wait_ms the answer waits until every target node (connected, and
 * to run the version: the canary's nodes for a canary) ACKed or NACKed
 * the version, its session ended, or wait_ms passed, and lists each one's
 * outcome.  The node side reports what changes through
 * ctld_admin_node_changed(), for nodes here and of other replicas alike.
 *
 * Queue sends one Command (a fresh id) to each target node and answers when
 * every node has answered, gone away or timed out (command_timeout); the
 * call waits in a ctld_wait_t meanwhile.  The node side reports results
 * and nodes that go through ctld_admin_node_result() and
 * ctld_admin_node_gone(), which main() gave it; a node of another replica
 * answers through the fleet, which reports the same way.
 *
 * Every method first asks whether the store answers: when it does not
 * (etcd unreachable) the call fails at once, UNAVAILABLE with the trailer
 * "relay-error: store", naming the store.
 */


#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "relay_diff.h"
#include "relay_policy.h"
#include "relay_scope.h"
#include "ctld_admin.h"
#include "ctld_alloc.h"
#include "ctld_clock.h"
#include "ctld_codec.h"
#include "ctld_fleet.h"
#include "ctld_log.h"
#include "ctld_metrics.h"
#include "ctld_node.h"
#include "ctld_server.h"
#include "ctld_store.h"


typedef Relay__Control__V1__CommandResult   ctld_result_t;
typedef Relay__Control__V1__NodeOutcome     ctld_outcome_t;

typedef struct ctld_wait_s    ctld_wait_t;
typedef struct ctld_apply_s   ctld_apply_t;
typedef struct ctld_parked_s  ctld_parked_t;


#define CTLD_ADMIN_PARK_MS   2500       /* for a store that moves on */


#define CTLD_WAITING     (-1)                /* an outcome not known yet */
#define CTLD_ACK         RELAY__CONTROL__V1__NODE_OUTCOME__OUTCOME__ACK
#define CTLD_NACK        RELAY__CONTROL__V1__NODE_OUTCOME__OUTCOME__NACK
#define CTLD_NO_ANSWER   RELAY__CONTROL__V1__NODE_OUTCOME__OUTCOME__NO_ANSWER
#define CTLD_GONE        RELAY__CONTROL__V1__NODE_OUTCOME__OUTCOME__DISCONNECTED


typedef struct {
    char                        *node_id;
    uint64_t                     cmd_id;
    unsigned                     done:1;
    unsigned                     remote:1;    /* through the fleet */
    const char                  *error;
    ctld_node_msg_t             *msg;      /* with the CommandResult */
} ctld_slot_t;


/* a call waiting for the store to be back in a moment */

struct ctld_parked_s {
    ctld_parked_t               *next;
    ctld_call_t                 *call;
    int64_t                      deadline;
};


struct ctld_wait_s {
    ctld_wait_t                 *next;
    ctld_call_t                 *call;
    int64_t                      deadline;
    size_t                       nslots;
    size_t                       left;
    ctld_slot_t                 *slots;
    unsigned                     starting:1;   /* no reply yet */
};


/* an Apply, Rollback or Promote: saved, then maybe waiting for nodes */

typedef enum {
    CTLD_APPLY = 0,
    CTLD_ROLLBACK,
    CTLD_PROMOTE,
    CTLD_TAKE_BACK                              /* the canary */
} ctld_change_e;


struct ctld_apply_s {
    ctld_apply_t                *next;
    ctld_call_t                 *call;
    ctld_change_e                change;
    char                        *diff;
    char                        *comment;
    uint64_t                     rolled_back_from;
    uint64_t                     version;     /* the targets are to run */
    uint64_t                     made;        /* the version made */
    int                          wait_ms;
    int64_t                      started;     /* ms, for the log */
    int64_t                      deadline;
    size_t                       ntargets;
    size_t                       left;
    ctld_outcome_t              *targets;
    int                         *outcome;     /* CTLD_WAITING or one */
};


static void ctld_admin_handle(ctld_call_t *c);
static void ctld_admin_dispatch(ctld_call_t *c);
static void ctld_admin_tick(int64_t now);
static void ctld_admin_release(ctld_call_t *c);
static int ctld_admin_store_ready(ctld_call_t *c, int64_t deadline);
static void ctld_admin_apply(ctld_call_t *c);
static void ctld_admin_rollback(ctld_call_t *c);
static void ctld_admin_promote(ctld_call_t *c);
static void ctld_admin_take_back(ctld_call_t *c, int dry_run, int wait_ms);
static void ctld_admin_canary_end(ctld_call_t *c, ctld_change_e change,
    int wait_ms);
static int ctld_admin_canary_busy(ctld_call_t *c, const char *what);
static void ctld_admin_propose(ctld_call_t *c, const relay_policy_t *src,
    uint64_t rolled_back_from, int dry_run, const char *canary,
    int wait_ms);
static ctld_apply_t *ctld_admin_change(ctld_call_t *c, ctld_change_e change,
    int wait_ms);
static void ctld_admin_saved(void *data, ctld_version_t *v,
    grpc_status_code status, const char *kind, const char *err);
static size_t ctld_admin_fanout_count(uint64_t version);
static void ctld_admin_wait(ctld_apply_t *a);
static int ctld_admin_outcome(ctld_apply_t *a, size_t i);
static void ctld_admin_apply_reply(ctld_apply_t *a);
static void ctld_admin_apply_free(ctld_apply_t *a);
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
    ctld_admin_release,                    /* release */
    ctld_admin_tick                        /* tick */
};


static int            ctld_command_timeout_ms;
static ctld_wait_t   *ctld_waits;
static ctld_apply_t  *ctld_applies;          /* waiting for nodes */
static ctld_parked_t *ctld_parked;           /* waiting for the store */
static uint64_t       ctld_cmd_seq;

static const char    *ctld_actions[] = { "LIST", "FLUSH", "DELETE", "BOUNCE",
                                         "HOLD", "RELEASE" };

static const char    *ctld_changes[] = { "apply", "rollback", "promote",
                                         "canary rollback" };


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

    if (ctld_admin_store_ready(c, ctld_now_ms() + CTLD_ADMIN_PARK_MS)) {
        ctld_admin_dispatch(c);
    }
}


static void
ctld_admin_dispatch(ctld_call_t *c)
{
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

    case CTLD_M_PROMOTE:
        ctld_admin_promote(c);
        break;

    default:
        ctld_call_reply(c, NULL, GRPC_STATUS_UNIMPLEMENTED, "no such method");
        break;
    }
}


/*
 * The store unreachable: every method fails fast, saying which store.
 * When it was there a moment ago (its watch moves to another member of
 * etcd) the call waits for it, until deadline (CTLD_ADMIN_PARK_MS).
 * 1: go on now; 0: failed or parked.
 */

static int
ctld_admin_store_ready(ctld_call_t *c, int64_t deadline)
{
    int             rc;
    char            err[512], msg[640];
    ctld_parked_t  *pk;

    rc = ctld_store_ready(err, sizeof(err));

    if (rc == 1) {
        return 1;
    }

    if (rc == -1 && ctld_now_ms() < deadline) {
        pk = calloc(1, sizeof(ctld_parked_t));

        if (pk != NULL) {
            pk->call = c;
            pk->deadline = deadline;
            pk->next = ctld_parked;
            ctld_parked = pk;
            ctld_call_enter(c, CTLD_CALL_WAITING);
            return 0;
        }
    }

    snprintf(msg, sizeof(msg), "the store is unavailable: %s", err);
    ctld_log("%s by %s refused: %s", ctld_method_name(c->method), c->who,
             msg);
    ctld_call_fail(c, GRPC_STATUS_UNAVAILABLE, "store", msg);

    return 0;
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
    const char                        *why;
    Relay__Control__V1__ApplyRequest  *req;

    req = ctld_admin_request(c, &relay__control__v1__apply_request__descriptor);
    if (req == NULL) {
        return;
    }

    why = req->canary[0] ? relay_scope_check(req->canary) : NULL;

    if (req->policy == NULL) {
        ctld_log("apply by %s refused: no policy", c->who);
        ctld_call_reply(c, NULL, GRPC_STATUS_INVALID_ARGUMENT,
                        "policy: missing");

    } else if (why) {
        char  msg[1200];

        snprintf(msg, sizeof(msg), "canary: \"%.1024s\": %s", req->canary,
                 why);
        ctld_log("apply by %s refused: %s", c->who, msg);
        ctld_call_reply(c, NULL, GRPC_STATUS_INVALID_ARGUMENT, msg);

    } else if (!ctld_admin_canary_busy(c, "apply")) {
        ctld_admin_propose(c, req->policy, 0, req->dry_run, req->canary,
                           (int) req->wait_ms);
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

    if (req->version == 0 && ctld_store_canary() != NULL) {
        ctld_admin_take_back(c, req->dry_run, (int) req->wait_ms);
        relay__control__v1__rollback_request__free_unpacked(req, NULL);
        return;
    }

    v = req->version ? ctld_store_get(req->version) : NULL;

    if (v == NULL) {
        if (req->version) {
            snprintf(msg, sizeof(msg), "version %llu does not exist",
                     (unsigned long long) req->version);

        } else {
            snprintf(msg, sizeof(msg), "no canary in progress: give the "
                     "version to roll back to");
        }

        ctld_log("rollback by %s refused: %s", c->who, msg);
        ctld_call_reply(c, NULL, req->version ? GRPC_STATUS_NOT_FOUND
                                              : GRPC_STATUS_FAILED_PRECONDITION,
                        msg);

    } else if (!ctld_admin_canary_busy(c, "rollback")) {
        ctld_admin_propose(c, v->policy, v->version, req->dry_run, "",
                           (int) req->wait_ms);
    }

    relay__control__v1__rollback_request__free_unpacked(req, NULL);
}


/* a canary in progress: only promote or take back; 1 when refused */

static int
ctld_admin_canary_busy(ctld_call_t *c, const char *what)
{
    char             msg[1400];
    ctld_version_t  *v;

    v = ctld_store_canary();
    if (v == NULL) {
        return 0;
    }

    snprintf(msg, sizeof(msg), "version %llu is a canary of \"%.1024s\": "
             "promote it or roll it back first", (unsigned long long)
             v->version, v->canary);
    ctld_log("%s by %s refused: %s", what, c->who, msg);
    ctld_call_reply(c, NULL, GRPC_STATUS_FAILED_PRECONDITION, msg);

    return 1;
}


static void
ctld_admin_promote(ctld_call_t *c)
{
    Relay__Control__V1__PromoteRequest  *req;

    req = ctld_admin_request(c,
                             &relay__control__v1__promote_request__descriptor);
    if (req == NULL) {
        return;
    }

    if (ctld_store_canary() == NULL) {
        ctld_log("promote by %s refused: no canary in progress", c->who);
        ctld_call_reply(c, NULL, GRPC_STATUS_FAILED_PRECONDITION,
                        "no canary in progress");

    } else {
        ctld_admin_canary_end(c, CTLD_PROMOTE, (int) req->wait_ms);
    }

    relay__control__v1__promote_request__free_unpacked(req, NULL);
}


/* the canary taken back: its nodes run the current version again */

static void
ctld_admin_take_back(ctld_call_t *c, int dry_run, int wait_ms)
{
    Relay__Control__V1__ApplyResponse   resp =
                                      RELAY__CONTROL__V1__APPLY_RESPONSE__INIT;

    if (dry_run) {
        resp.changed = 1;
        resp.version = ctld_store_current() ? ctld_store_current()->version
                                            : 0;
        resp.canary = ctld_store_canary()->canary;
        ctld_call_reply(c, &resp.base, GRPC_STATUS_OK, NULL);
        return;
    }

    ctld_admin_canary_end(c, CTLD_TAKE_BACK, wait_ms);
}


/* the canary the fleet's (promote), or taken back: its state saved */

static void
ctld_admin_canary_end(ctld_call_t *c, ctld_change_e change, int wait_ms)
{
    ctld_apply_t    *a;
    ctld_version_t  *v;

    v = ctld_store_canary();

    a = ctld_admin_change(c, change, wait_ms);
    if (a == NULL) {
        return;
    }

    a->made = v->version;

    ctld_store_set_state(v, change == CTLD_PROMOTE ? CTLD_STATE_FLEET
                                                   : CTLD_STATE_ABORTED,
                         ctld_admin_saved, a);
}


static void
ctld_admin_propose(ctld_call_t *c, const relay_policy_t *src,
    uint64_t rolled_back_from, int dry_run, const char *canary, int wait_ms)
{
    char                               err[1024], cur_name[64];
    char                              *cur_text, *new_text, *diff;
    const char                        *what;
    ctld_apply_t                      *a;
    relay_policy_t                     p;
    ctld_version_t                    *cur;
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

    if (dry_run) {
        ctld_metrics_apply(rolled_back_from != 0, CTLD_APPLY_DRY_RUN);
        ctld_log("%s by %s: dry run against version %llu",
                 what, c->who, (unsigned long long) (cur ? cur->version : 0));
        resp.diff = diff;
        resp.changed = 1;
        resp.canary = (char *) canary;
        ctld_call_reply(c, &resp.base, GRPC_STATUS_OK, NULL);
        free(diff);
        return;
    }

    a = ctld_admin_change(c, rolled_back_from ? CTLD_ROLLBACK : CTLD_APPLY,
                          wait_ms);
    if (a == NULL) {
        free(diff);
        return;
    }

    a->diff = diff;
    a->rolled_back_from = rolled_back_from;
    a->comment = ctld_strdup(p.comment);

    /* a deep copy is taken at once; done() may be called before return */

    ctld_store_add(&p, rolled_back_from, canary, ctld_admin_saved, a);
}


/* the call waits for the store now, then maybe for the nodes */

static ctld_apply_t *
ctld_admin_change(ctld_call_t *c, ctld_change_e change, int wait_ms)
{
    ctld_apply_t  *a;

    a = calloc(1, sizeof(ctld_apply_t));
    if (a == NULL) {
        ctld_call_reply(c, NULL, GRPC_STATUS_RESOURCE_EXHAUSTED,
                        "out of memory");
        return NULL;
    }

    a->call = c;
    a->change = change;
    a->wait_ms = wait_ms;
    a->started = ctld_now_ms();
    c->apply = a;
    ctld_call_enter(c, CTLD_CALL_WAITING);

    return a;
}


static void
ctld_admin_saved(void *data, ctld_version_t *v, grpc_status_code status,
    const char *kind, const char *err)
{
    ctld_apply_t  *a = data;

    size_t           sent;
    ctld_call_t     *c;
    ctld_version_t  *cur;

    c = a->call;

    if (a->change == CTLD_APPLY || a->change == CTLD_ROLLBACK) {
        ctld_metrics_apply(a->change == CTLD_ROLLBACK,
                           v ? CTLD_APPLIED : CTLD_APPLY_FAILED);
    }

    if (c == NULL) {
        ctld_admin_apply_free(a);
        return;
    }

    if (v == NULL) {
        ctld_log("%s by %s failed: %s", ctld_changes[a->change], c->who,
                 err);
        ctld_call_fail(c, status, kind, err);
        ctld_admin_apply_free(a);
        return;
    }

    cur = ctld_store_current();

    switch (a->change) {

    case CTLD_APPLY:
    case CTLD_ROLLBACK:
        a->made = v->version;
        a->version = v->version;
        sent = ctld_admin_fanout_count(v->version);

        if (a->change == CTLD_ROLLBACK) {
            ctld_log("rollback by %s: version %llu copies version %llu, "
                     "sent to %zu nodes (stored in %lld ms)", c->who,
                     (unsigned long long) v->version,
                     (unsigned long long) a->rolled_back_from, sent,
                     (long long) (ctld_now_ms() - a->started));

        } else if (v->state == CTLD_STATE_CANARY) {
            ctld_log("apply by %s: version %llu (\"%.80s\") as a canary of "
                     "\"%s\", sent to %zu nodes (stored in %lld ms)",
                     c->who, (unsigned long long) v->version, a->comment,
                     v->canary, sent,
                     (long long) (ctld_now_ms() - a->started));

        } else {
            ctld_log("apply by %s: version %llu (\"%.80s\"), sent to %zu "
                     "nodes (stored in %lld ms)", c->who,
                     (unsigned long long) v->version, a->comment, sent,
                     (long long) (ctld_now_ms() - a->started));
        }

        break;

    case CTLD_PROMOTE:
        a->version = v->version;
        ctld_log("promote by %s: version %llu is the fleet's, sent to %zu "
                 "nodes", c->who, (unsigned long long) v->version,
                 ctld_admin_fanout_count(v->version));
        break;

    default: /* CTLD_TAKE_BACK */
        a->version = cur ? cur->version : 0;
        ctld_log("canary rollback by %s: version %llu taken back, its "
                 "nodes go back to version %llu", c->who,
                 (unsigned long long) v->version,
                 (unsigned long long) a->version);
        break;
    }

    ctld_admin_wait(a);
}


/* the connected nodes to run version and not running it yet */

static size_t
ctld_admin_fanout_count(uint64_t version)
{
    size_t        i, n;
    ctld_node_t  *node;

    n = 0;

    for (i = 0; i < ctld_node_count(); i++) {
        node = ctld_node_nth(i);

        n += ctld_node_connected(node) && node->applied_version != version
             && ctld_node_target(node) == version;
    }

    return n;
}


/* every connected node to run a->version is a target: wait for them */

static void
ctld_admin_wait(ctld_apply_t *a)
{
    size_t        i, n;
    ctld_node_t  *node;

    if (a->wait_ms <= 0) {
        ctld_admin_apply_reply(a);
        return;
    }

    n = 0;

    for (i = 0; i < ctld_node_count(); i++) {
        node = ctld_node_nth(i);
        n += ctld_node_connected(node) && ctld_node_target(node) == a->version;
    }

    a->targets = calloc(n ? n : 1, sizeof(ctld_outcome_t));
    a->outcome = calloc(n ? n : 1, sizeof(int));

    if (a->targets == NULL || a->outcome == NULL) {
        ctld_call_reply(a->call, NULL, GRPC_STATUS_RESOURCE_EXHAUSTED,
                        "out of memory");
        ctld_admin_apply_free(a);
        return;
    }

    for (i = 0, n = 0; i < ctld_node_count(); i++) {
        node = ctld_node_nth(i);

        if (!ctld_node_connected(node)
            || ctld_node_target(node) != a->version)
        {
            continue;
        }

        relay__control__v1__node_outcome__init(&a->targets[n]);
        a->targets[n].node_id = ctld_strdup(node->id);
        a->targets[n].version = a->version;
        a->outcome[n] = CTLD_WAITING;
        n++;
    }

    a->ntargets = n;
    a->left = n;
    a->deadline = ctld_now_ms() + a->wait_ms;

    for (i = 0; i < n; i++) {
        if (ctld_admin_outcome(a, i)) {
            a->left--;
        }
    }

    if (a->left == 0) {
        ctld_admin_apply_reply(a);
        return;
    }

    a->next = ctld_applies;
    ctld_applies = a;
}


/* 1 when target i has an outcome now (and had none before) */

static int
ctld_admin_outcome(ctld_apply_t *a, size_t i)
{
    ctld_node_t  *n;

    if (a->outcome[i] != CTLD_WAITING) {
        return 0;
    }

    n = ctld_node_find(a->targets[i].node_id);

    if (n == NULL || !ctld_node_connected(n)) {
        a->outcome[i] = CTLD_GONE;

    } else if (n->applied_version == a->version) {
        a->outcome[i] = CTLD_ACK;

    } else if (n->nacked_version == a->version) {
        a->outcome[i] = CTLD_NACK;
        a->targets[i].reason = ctld_strdup(n->nack_reason);

    } else {
        return 0;
    }

    return 1;
}


/* a node ACKed, NACKed, came or went: here or on another replica */

void
ctld_admin_node_changed(ctld_node_t *n)
{
    size_t         i;
    ctld_apply_t  *a, *next;

    for (a = ctld_applies; a; a = next) {
        next = a->next;

        for (i = 0; i < a->ntargets; i++) {
            if (strcmp(a->targets[i].node_id, n->id) == 0
                && ctld_admin_outcome(a, i))
            {
                a->left--;
            }
        }

        if (a->left == 0) {
            ctld_admin_apply_reply(a);
        }
    }
}


static void
ctld_admin_apply_reply(ctld_apply_t *a)
{
    size_t                              i, acks;
    ctld_apply_t                      **pa;
    ctld_outcome_t                    **op;
    ctld_version_t                     *v;
    Relay__Control__V1__ApplyResponse   resp =
                                      RELAY__CONTROL__V1__APPLY_RESPONSE__INIT;

    for (pa = &ctld_applies; *pa; pa = &(*pa)->next) {
        if (*pa == a) {
            *pa = a->next;
            break;
        }
    }

    if (a->call == NULL) {
        ctld_admin_apply_free(a);
        return;
    }

    op = calloc(a->ntargets ? a->ntargets : 1, sizeof(ctld_outcome_t *));
    if (op == NULL) {
        ctld_call_reply(a->call, NULL, GRPC_STATUS_RESOURCE_EXHAUSTED,
                        "out of memory");
        ctld_admin_apply_free(a);
        return;
    }

    acks = 0;

    for (i = 0; i < a->ntargets; i++) {
        if (a->outcome[i] == CTLD_WAITING) {
            a->outcome[i] = CTLD_NO_ANSWER;
        }

        a->targets[i].outcome = a->outcome[i];
        acks += a->outcome[i] == CTLD_ACK;
        op[i] = &a->targets[i];
    }

    v = ctld_store_get(a->made);

    resp.version = a->change == CTLD_TAKE_BACK ? a->version : a->made;
    resp.diff = a->diff ? a->diff : (char *) protobuf_c_empty_string;
    resp.changed = 1;
    resp.n_outcomes = a->ntargets;
    resp.outcomes = op;
    resp.waited = a->wait_ms > 0;
    resp.canary = (v && v->canary) ? v->canary
                                   : (char *) protobuf_c_empty_string;

    if (a->wait_ms > 0) {
        ctld_log("%s by %s: version %llu: %zu of %zu nodes ACKed",
                 ctld_changes[a->change], a->call->who,
                 (unsigned long long) a->version, acks, a->ntargets);
    }

    ctld_call_reply(a->call, &resp.base, GRPC_STATUS_OK, NULL);

    free(op);
    ctld_admin_apply_free(a);
}


static void
ctld_admin_apply_free(ctld_apply_t *a)
{
    size_t  i;

    for (i = 0; i < a->ntargets; i++) {
        free(a->targets[i].node_id);

        if (a->targets[i].reason != protobuf_c_empty_string) {
            free(a->targets[i].reason);
        }
    }

    if (a->call) {
        a->call->apply = NULL;
    }

    free(a->targets);
    free(a->outcome);
    free(a->diff);
    free(a->comment);
    free(a);
}


/* a call that ends while it waits (never: its status is not sent yet) */

static void
ctld_admin_release(ctld_call_t *c)
{
    if (c->apply) {
        c->apply->call = NULL;
    }
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
        e[i].state = v->state;
        e[i].canary = v->canary;
        ep[i] = &e[i];
    }

    v = ctld_store_canary();

    resp.current = ctld_store_current() ? ctld_store_current()->version : 0;
    resp.n_entries = n;
    resp.entries = ep;
    resp.canary = v ? v->version : 0;
    resp.canary_selector = v ? v->canary : (char *) protobuf_c_empty_string;

    ctld_call_reply(c, &resp.base, GRPC_STATUS_OK, NULL);

    free(e);
    free(ep);
}


static void
ctld_admin_list_nodes(ctld_call_t *c)
{
    size_t                                  i, k, n, nlabels;
    int64_t                                 now;
    ctld_node_t                            *node;
    ctld_version_t                         *v;
    Relay__Control__V1__Label              *l, **lp;
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

    for (i = 0, nlabels = 0; i < n; i++) {
        nlabels += ctld_node_nth(i)->nlabels;
    }

    e = calloc(n ? n : 1, sizeof(Relay__Control__V1__NodeInfo));
    ep = calloc(n ? n : 1, sizeof(Relay__Control__V1__NodeInfo *));
    l = calloc(nlabels ? nlabels : 1, sizeof(Relay__Control__V1__Label));
    lp = calloc(nlabels ? nlabels : 1, sizeof(Relay__Control__V1__Label *));

    if (e == NULL || ep == NULL || l == NULL || lp == NULL) {
        free(e);
        free(ep);
        free(l);
        free(lp);
        ctld_call_reply(c, NULL, GRPC_STATUS_RESOURCE_EXHAUSTED,
                        "out of memory");
        return;
    }

    for (i = 0, nlabels = 0; i < n; i++) {
        node = ctld_node_nth(i);

        relay__control__v1__node_info__init(&e[i]);
        e[i].node_id = node->id;
        e[i].connected = ctld_node_connected(node);
        e[i].applied_version = node->applied_version;
        e[i].nacked_version = node->nacked_version;
        e[i].nack_reason = node->nack_reason ? node->nack_reason
                                             : (char *) protobuf_c_empty_string;
        e[i].connected_unix = node->connected_unix;
        e[i].last_seen_unix = node->last_seen_unix;
        e[i].peer = node->peer ? node->peer : (char *) protobuf_c_empty_string;
        e[i].status = node->status;
        e[i].rates = ctld_stats_rates(node->stats, now);
        e[i].replica = node->replica ? node->replica
                                     : (char *) protobuf_c_empty_string;
        e[i].software = node->software ? node->software
                                       : (char *) protobuf_c_empty_string;
        e[i].target_version = ctld_node_target(node);
        e[i].labels = &lp[nlabels];
        e[i].n_labels = node->nlabels;

        for (k = 0; k < node->nlabels; k++, nlabels++) {
            relay__control__v1__label__init(&l[nlabels]);
            l[nlabels].name = (char *) node->labels[k].name;
            l[nlabels].value = (char *) node->labels[k].value;
            lp[nlabels] = &l[nlabels];
        }

        ep[i] = &e[i];
    }

    v = ctld_store_canary();

    resp.current = ctld_store_current() ? ctld_store_current()->version : 0;
    resp.n_nodes = n;
    resp.nodes = ep;
    resp.canary = v ? v->version : 0;
    resp.canary_selector = v ? v->canary : (char *) protobuf_c_empty_string;

    ctld_call_reply(c, &resp.base, GRPC_STATUS_OK, NULL);

    for (i = 0; i < n; i++) {
        ctld_stats_rates_free(e[i].rates);
    }

    free(e);
    free(ep);
    free(l);
    free(lp);
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
            n += ctld_node_connected(ctld_node_nth(i));
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

        if (node == NULL || !ctld_node_connected(node)) {
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
        /* ids stay unique across restarts, and across replicas too */
        srandom((unsigned) time(NULL) ^ (unsigned) getpid());
        ctld_cmd_seq = ((uint64_t) time(NULL) << 24)
                       ^ ((uint64_t) (random() & 0xffff) << 8);
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

        if (!ctld_node_connected(node)
            || (req->node_id[0] && strcmp(req->node_id, node->id) != 0))
        {
            continue;
        }

        w->slots[n].node_id = ctld_strdup(node->id);
        w->slots[n].cmd_id = ++ctld_cmd_seq;
        w->slots[n].remote = node->session == NULL;

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
    size_t          i;
    ctld_wait_t    *w, *next;
    ctld_apply_t   *a, *anext;
    ctld_parked_t  *pk, *parked;

    /* the parked calls: each goes on, waits on or fails */

    parked = ctld_parked;
    ctld_parked = NULL;

    while (parked) {
        pk = parked;
        parked = pk->next;

        if (ctld_admin_store_ready(pk->call, pk->deadline)) {
            ctld_admin_dispatch(pk->call);
        }

        free(pk);
    }

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

    /* applies whose nodes did not all answer in time: NO_ANSWER */

    for (a = ctld_applies; a; a = anext) {
        anext = a->next;

        if (now >= a->deadline) {
            ctld_admin_apply_reply(a);
        }
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
        if (w->slots[i].remote) {
            ctld_fleet_forget(w->slots[i].node_id, w->slots[i].cmd_id);
        }

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
