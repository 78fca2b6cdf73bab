/*
 * Copyright (C) The relay authors
 */


/*
 * The etcd backend of the store: sole user of the key prefix (default
 * "/relay/"), which it mirrors into controld, and of this replica's lease.
 *
 *   P/versions/NNNNNNNNNNNNNNNNNNNN    StoredVersion (store.proto)
 *   P/replicas/NAME                    ReplicaRecord, under the lease
 *   P/nodes/, P/sessions/, P/commands/, P/results/   the fleet's
 *                                      (ctld_fleet.c), handed to it
 *
 * The mirror.  At start, and whenever the watch has lost its place (the
 * revision it would start from was compacted away), one Range reads the
 * whole prefix at a revision R; a Watch from R + 1 then brings every
 * change in order.  A watch that breaks (the member died, etcd is down)
 * starts again from the revision after the last it saw, on the next
 * member, so nothing is missed and nothing is read twice; meanwhile the
 * store is not ready: admin calls fail at once, saying which store, and
 * nodes keep their sessions and their policy.
 *
 * Versions are made by compare-and-swap: a Txn puts version N + 1 if and
 * only if no key of N + 1 exists and the key of N (the newest this
 * replica knows) is as it knows it (its mod revision), so a version is
 * made once even when replicas apply at the same moment: the loser's Txn
 * fails, and its answer (the newest version there) names what it raced
 * with.  A canary promoted or taken back is the same Txn on its own key.
 * The replica that made a version adds it when its Txn succeeds; the
 * others when their watch brings it (the maker's watch brings it too,
 * and finds it there).
 *
 * The lease (TTL --store-lease) holds this replica's record and the
 * sessions of its nodes: kept alive over a LeaseKeepAlive stream at a
 * third of its TTL, revoked at a clean stop, expired at a crash, and
 * granted anew when it was lost (etcd down for longer than the TTL), the
 * fleet then putting its keys again.
 */


#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ctld_alloc.h"
#include "ctld_clock.h"
#include "ctld_etcd.h"
#include "ctld_log.h"
#include "ctld_store_etcd.h"


#define CTLD_ETCD_PARTS         8
#define CTLD_ETCD_VERSIONS      "versions/"
#define CTLD_ETCD_RETRY_MAX     1000          /* ms between attempts */
#define CTLD_ETCD_RECOVER       2000          /* ms: a watch moving on */


typedef enum {
    CTLD_MIRROR_IDLE = 0,
    CTLD_MIRROR_LOADING,                      /* the Range in flight */
    CTLD_MIRROR_WATCHING,                     /* the Watch open */
    CTLD_MIRROR_RETRY                         /* until retry_at */
} ctld_mirror_state_e;


typedef struct {
    ctld_version_t             *v;
    ctld_store_done_pt          done;
    void                       *data;
    ProtobufCBinaryData         record;       /* as put */
    unsigned                    change:1;     /* of newest's state */
} ctld_etcd_save_t;


static int ctld_store_etcd_open(const char *where);
static void ctld_store_etcd_save(ctld_version_t *v,
    const ctld_version_t *newest, ctld_store_done_pt done, void *data);
static void ctld_store_etcd_saved(void *data, grpc_status_code status,
    const char *details, ProtobufCMessage *resp);
static int ctld_store_etcd_ready(char *err, size_t errlen);
static void ctld_store_etcd_close(void);
static void ctld_store_etcd_start(grpc_completion_queue *cq);
static void ctld_store_etcd_tick(int64_t now);
static void ctld_store_etcd_stop(void);
static unsigned ctld_store_etcd_busy(void);
static void ctld_store_etcd_load(void);
static void ctld_store_etcd_loaded(void *data, grpc_status_code status,
    const char *details, ProtobufCMessage *resp);
static void ctld_store_etcd_watch_start(void);
static void ctld_store_etcd_watched(void *data, ProtobufCMessage *m);
static void ctld_store_etcd_watch_end(void *data, grpc_status_code status,
    const char *details);
static void ctld_store_etcd_retry(const char *what, const char *details);
static int ctld_store_etcd_dispatch(const Mvccpb__KeyValue *kv, int put);
static int ctld_store_etcd_version(const Mvccpb__KeyValue *kv);
static void ctld_store_etcd_grant(void);
static void ctld_store_etcd_granted(void *data, grpc_status_code status,
    const char *details, ProtobufCMessage *resp);
static void ctld_store_etcd_keepalive(int64_t now);
static void ctld_store_etcd_kept(void *data, ProtobufCMessage *m);
static void ctld_store_etcd_kept_end(void *data, grpc_status_code status,
    const char *details);
static void ctld_store_etcd_lease_lost(const char *why);
static void ctld_store_etcd_announce(void);
static void ctld_store_etcd_key(char *buf, size_t len, uint64_t version);


static const ctld_client_t  ctld_store_etcd_client = {
    ctld_store_etcd_start,
    ctld_store_etcd_tick,
    ctld_store_etcd_stop,
    ctld_store_etcd_busy
};


const ctld_store_backend_t  ctld_store_etcd = {
    "etcd",
    ctld_store_etcd_open,
    NULL,                                     /* versions come by watch */
    ctld_store_etcd_save,
    ctld_store_etcd_ready,
    ctld_store_etcd_close,
    &ctld_store_etcd_client
};


static ctld_store_etcd_conf_t        ctld_se_conf;
static ctld_etcd_conf_t              ctld_se_etcd;
static char                         *ctld_se_where;     /* for messages */
static const ctld_store_etcd_part_t *ctld_se_parts[CTLD_ETCD_PARTS];
static size_t                        ctld_se_nparts;

static ctld_mirror_state_e           ctld_se_state;
static int64_t                       ctld_se_revision;  /* last seen */
static unsigned                      ctld_se_loaded;    /* a full read done */
static unsigned                      ctld_se_healthy;   /* the watch is on */
static unsigned                      ctld_se_resync;    /* read all again */
static unsigned                      ctld_se_stopping;
static int64_t                       ctld_se_retry_at;
static int64_t                       ctld_se_lost_at;   /* health, ms */
static int                           ctld_se_backoff;
static char                          ctld_se_error[512];
static ctld_etcd_stream_t           *ctld_se_watch;

static int64_t                       ctld_se_lease;
static int64_t                       ctld_se_lease_until;  /* ms, monotonic */
static int64_t                       ctld_se_keep_at;
static unsigned                      ctld_se_granting;
static ctld_etcd_stream_t           *ctld_se_keeper;
static void                        (*ctld_se_on_lease)(int64_t lease);


void
ctld_store_etcd_configure(const ctld_store_etcd_conf_t *conf)
{
    ctld_se_conf = *conf;
}


void
ctld_store_etcd_watch(const ctld_store_etcd_part_t *part)
{
    if (ctld_se_nparts < CTLD_ETCD_PARTS) {
        ctld_se_parts[ctld_se_nparts++] = part;
    }
}


const char *
ctld_store_etcd_prefix(void)
{
    return ctld_se_conf.prefix;
}


int
ctld_store_etcd_healthy(void)
{
    return ctld_se_healthy;
}


int64_t
ctld_store_etcd_lease(void)
{
    return ctld_se_lease;
}


void
ctld_store_etcd_on_lease(void (*granted)(int64_t lease))
{
    ctld_se_on_lease = granted;
}


/* where: "etcd://host:port[,host:port...]" */

static int
ctld_store_etcd_open(const char *where)
{
    char    *list, *p, *comma;
    size_t   n;

    if (strncmp(where, "etcd://", 7) != 0 || where[7] == '\0') {
        ctld_log("store \"%s\": not etcd://host:port[,host:port...]", where);
        return -1;
    }

    ctld_se_where = ctld_strdup(where + 7);
    list = ctld_strdup(where + 7);

    for (n = 1, p = list; *p; p++) {
        n += *p == ',';
    }

    ctld_se_etcd.endpoints = calloc(n, sizeof(char *));
    if (ctld_se_etcd.endpoints == NULL) {
        free(list);
        return -1;
    }

    for (p = list; p; p = comma) {
        comma = strchr(p, ',');
        if (comma) {
            *comma++ = '\0';
        }

        if (*p == '\0' || strchr(p, ':') == NULL) {
            ctld_log("store \"%s\": \"%s\" is not host:port", where, p);
            free(list);
            return -1;
        }

        ctld_se_etcd.endpoints[ctld_se_etcd.nendpoints++] = ctld_strdup(p);
    }

    free(list);

    if (ctld_se_conf.ca) {
        ctld_se_etcd.ca = ctld_read_file(ctld_se_conf.ca);
        if (ctld_se_etcd.ca == NULL) {
            return -1;
        }

        if (ctld_se_conf.cert) {
            ctld_se_etcd.cert = ctld_read_file(ctld_se_conf.cert);
            ctld_se_etcd.key = ctld_read_file(ctld_se_conf.key);

            if (ctld_se_etcd.cert == NULL || ctld_se_etcd.key == NULL) {
                return -1;
            }
        }
    }

    ctld_se_etcd.timeout_ms = ctld_se_conf.timeout_ms;
    snprintf(ctld_se_error, sizeof(ctld_se_error), "not read yet");

    return ctld_etcd_init(&ctld_se_etcd);
}


/* ---------------------------------------------------------------- mirror */


static void
ctld_store_etcd_start(grpc_completion_queue *cq)
{
    ctld_etcd_start(cq);

    ctld_log("store: etcd at %s, key prefix \"%s\", replica \"%s\"%s",
             ctld_se_where, ctld_se_conf.prefix, ctld_se_conf.replica,
             ctld_se_conf.ca ? ", TLS" : "");

    ctld_store_etcd_load();
}


/* the whole prefix at one revision; the watch goes on from there */

static void
ctld_store_etcd_load(void)
{
    Etcdserverpb__RangeRequest  req = ETCDSERVERPB__RANGE_REQUEST__INIT;

    req.key.data = (uint8_t *) ctld_se_conf.prefix;
    req.key.len = strlen(ctld_se_conf.prefix);
    ctld_etcd_prefix_end(ctld_se_conf.prefix, &req.range_end);

    ctld_se_state = CTLD_MIRROR_LOADING;

    if (ctld_etcd_call(CTLD_ETCD_RANGE, &req.base,
                       &etcdserverpb__range_response__descriptor,
                       ctld_store_etcd_loaded, NULL)
        != 0)
    {
        ctld_store_etcd_retry("read", "cannot start the call");
    }

    free(req.range_end.data);
}


static void
ctld_store_etcd_loaded(void *data, grpc_status_code status,
    const char *details, ProtobufCMessage *resp)
{
    size_t                        i, n;
    ctld_version_t               *cur;
    Etcdserverpb__RangeResponse  *r;

    if (status != GRPC_STATUS_OK) {
        ctld_store_etcd_retry("read", details);
        return;
    }

    r = (Etcdserverpb__RangeResponse *) resp;

    for (i = 0; i < ctld_se_nparts; i++) {
        if (ctld_se_parts[i]->sync_begin) {
            ctld_se_parts[i]->sync_begin();
        }
    }

    for (i = 0, n = 0; i < r->n_kvs; i++) {
        n += ctld_store_etcd_dispatch(r->kvs[i], 1);
    }

    for (i = 0; i < ctld_se_nparts; i++) {
        if (ctld_se_parts[i]->sync_end) {
            ctld_se_parts[i]->sync_end();
        }
    }

    ctld_se_revision = r->header ? r->header->revision : 0;
    ctld_se_resync = 0;

    cur = ctld_store_current();

    ctld_log("store: etcd read at revision %lld: %zu keys, %zu versions, "
             "current %llu%s", (long long) ctld_se_revision, r->n_kvs,
             ctld_store_count(),
             (unsigned long long) (cur ? cur->version : 0),
             ctld_store_canary() ? ", a canary in progress" : "");

    etcdserverpb__range_response__free_unpacked(r, NULL);

    ctld_se_loaded = 1;
    ctld_store_changed();

    ctld_store_etcd_watch_start();
}


static void
ctld_store_etcd_watch_start(void)
{
    Etcdserverpb__WatchRequest        req = ETCDSERVERPB__WATCH_REQUEST__INIT;
    Etcdserverpb__WatchCreateRequest  cr =
                                   ETCDSERVERPB__WATCH_CREATE_REQUEST__INIT;

    ctld_se_watch = ctld_etcd_stream(CTLD_ETCD_WATCH,
                                     &etcdserverpb__watch_response__descriptor,
                                     ctld_store_etcd_watched,
                                     ctld_store_etcd_watch_end, NULL);
    if (ctld_se_watch == NULL) {
        ctld_store_etcd_retry("watch", "cannot start the stream");
        return;
    }

    cr.key.data = (uint8_t *) ctld_se_conf.prefix;
    cr.key.len = strlen(ctld_se_conf.prefix);
    ctld_etcd_prefix_end(ctld_se_conf.prefix, &cr.range_end);
    cr.start_revision = ctld_se_revision + 1;
    cr.progress_notify = 1;

    req.request_union_case =
                     ETCDSERVERPB__WATCH_REQUEST__REQUEST_UNION_CREATE_REQUEST;
    req.create_request = &cr;

    ctld_se_state = CTLD_MIRROR_WATCHING;

    if (ctld_etcd_send(ctld_se_watch, &req.base) != 0) {
        ctld_etcd_cancel(ctld_se_watch);
    }

    free(cr.range_end.data);
}


static void
ctld_store_etcd_watched(void *data, ProtobufCMessage *m)
{
    size_t                        i, versions;
    int64_t                       rev;
    Etcdserverpb__WatchResponse  *w;

    w = (Etcdserverpb__WatchResponse *) m;

    if (w->canceled || w->compact_revision) {
        ctld_log("store: etcd watch cancelled%s%s%s: reading everything "
                 "again", w->compact_revision ? " (revision compacted)" : "",
                 w->cancel_reason[0] ? ": " : "", w->cancel_reason);
        ctld_se_resync = 1;
        etcdserverpb__watch_response__free_unpacked(w, NULL);

        if (ctld_se_watch) {
            ctld_etcd_cancel(ctld_se_watch);
        }

        return;
    }

    if (w->created) {
        if (!ctld_se_healthy) {
            ctld_log("store: etcd watch from revision %lld on %s",
                     (long long) ctld_se_revision + 1, ctld_etcd_endpoint());
        }

        ctld_se_healthy = 1;
        ctld_se_backoff = 0;

        if (ctld_se_lease == 0 && !ctld_se_granting) {
            ctld_store_etcd_grant();
        }
    }

    versions = 0;

    for (i = 0; i < w->n_events; i++) {
        if (w->events[i]->kv == NULL) {
            continue;
        }

        versions += ctld_store_etcd_dispatch(
                        w->events[i]->kv,
                        w->events[i]->type == MVCCPB__EVENT__EVENT_TYPE__PUT);

        rev = w->events[i]->kv->mod_revision;

        if (rev > ctld_se_revision) {
            ctld_se_revision = rev;
        }
    }

    if (w->n_events == 0 && !w->created && w->header
        && w->header->revision > ctld_se_revision)
    {
        /* a progress notification: nothing before it is to come */
        ctld_se_revision = w->header->revision;
    }

    etcdserverpb__watch_response__free_unpacked(w, NULL);

    if (versions) {
        ctld_store_changed();
    }
}


static void
ctld_store_etcd_watch_end(void *data, grpc_status_code status,
    const char *details)
{
    ctld_se_watch = NULL;

    if (ctld_se_stopping) {
        ctld_se_healthy = 0;
        ctld_se_state = CTLD_MIRROR_IDLE;
        return;
    }

    ctld_store_etcd_retry("watch", status == GRPC_STATUS_CANCELLED
                                   && ctld_se_resync
                                   ? "to read everything again" : details);
}


/* the next attempt: at once on the next member, then within a second */

static void
ctld_store_etcd_retry(const char *what, const char *details)
{
    int  was;

    was = ctld_se_healthy;

    if (was) {
        ctld_se_lost_at = ctld_now_ms();
    }

    ctld_se_healthy = 0;
    ctld_se_state = CTLD_MIRROR_RETRY;

    snprintf(ctld_se_error, sizeof(ctld_se_error), "%s: %s", what,
             details[0] ? details : "failed");

    if (ctld_se_backoff == 0 && !ctld_se_resync) {
        ctld_log("store: etcd %s failed on %s: %s", what,
                 ctld_etcd_endpoint(), details);
    }

    ctld_se_retry_at = ctld_now_ms() + ctld_se_backoff;
    ctld_se_backoff = ctld_se_backoff ? CTLD_ETCD_RETRY_MAX
                                      : CTLD_ETCD_RETRY_MAX / 4;

    /* a watch that was fine: again at once, on the next member */

    if (was && ctld_se_loaded && !ctld_se_resync && !ctld_se_stopping) {
        ctld_store_etcd_watch_start();
    }
}


/* a key of the prefix to whom it concerns; 1: a version */

static int
ctld_store_etcd_dispatch(const Mvccpb__KeyValue *kv, int put)
{
    char    key[1024];
    size_t  i, plen, slen;

    plen = strlen(ctld_se_conf.prefix);

    if (kv->key.len <= plen || kv->key.len >= sizeof(key)
        || memcmp(kv->key.data, ctld_se_conf.prefix, plen) != 0)
    {
        return 0;
    }

    memcpy(key, kv->key.data + plen, kv->key.len - plen);
    key[kv->key.len - plen] = '\0';

    if (strncmp(key, CTLD_ETCD_VERSIONS, sizeof(CTLD_ETCD_VERSIONS) - 1)
        == 0)
    {
        return put ? ctld_store_etcd_version(kv) : 0;
    }

    for (i = 0; i < ctld_se_nparts; i++) {
        slen = strlen(ctld_se_parts[i]->sub);

        if (strncmp(key, ctld_se_parts[i]->sub, slen) != 0) {
            continue;
        }

        if (put) {
            ctld_se_parts[i]->put(key + slen, &kv->value, kv->lease);

        } else {
            ctld_se_parts[i]->del(key + slen);
        }

        break;
    }

    return 0;
}


static int
ctld_store_etcd_version(const Mvccpb__KeyValue *kv)
{
    uint64_t                            version;
    relay_policy_t                     *p;
    Relay__Control__V1__StoredVersion  *sv;

    sv = relay__control__v1__stored_version__unpack(NULL, kv->value.len,
                                                    kv->value.data);
    if (sv == NULL || sv->policy == NULL || sv->policy->version == 0) {
        ctld_log("store: etcd key %.*s is not a version: ignored",
                 (int) kv->key.len, (char *) kv->key.data);
        if (sv) {
            relay__control__v1__stored_version__free_unpacked(sv, NULL);
        }

        return 0;
    }

    /* the policy changes hands: the store owns it from now on */

    p = sv->policy;
    sv->policy = NULL;
    version = p->version;

    (void) ctld_store_found(version, sv->rolled_back_from, sv->state,
                            sv->canary, p);
    ctld_store_revision(version, kv->mod_revision);

    relay__control__v1__stored_version__free_unpacked(sv, NULL);

    return 1;
}


/*
 * 1: the mirror is current; -1: not now, but it was a moment ago (a
 * member went, the watch goes on on another); 0: etcd does not answer.
 */

static int
ctld_store_etcd_ready(char *err, size_t errlen)
{
    if (ctld_se_healthy && ctld_se_loaded) {
        return 1;
    }

    snprintf(err, errlen, "etcd at %s: %s", ctld_se_where, ctld_se_error);

    if (ctld_se_loaded && ctld_se_lost_at
        && ctld_now_ms() - ctld_se_lost_at < CTLD_ETCD_RECOVER)
    {
        return -1;
    }

    return 0;
}


/* ---------------------------------------------------------------- save */


/*
 * Version v.version made (newest is the newest here), or v, the newest,
 * in another state: if and only if newest is still as this replica knows
 * it and nothing comes after it.
 */

static void
ctld_store_etcd_save(ctld_version_t *v, const ctld_version_t *newest,
    ctld_store_done_pt done, void *data)
{
    char                                key[512], nkey[512], vkey[512];
    char                                rkey[512], msg[640];
    uint64_t                            next;
    ctld_etcd_save_t                   *sv;
    Etcdserverpb__Compare               cmp[2], *cmps[2];
    Etcdserverpb__RequestOp             ok_op, fail_op, *ok_ops[1];
    Etcdserverpb__RequestOp            *fail_ops[1];
    Etcdserverpb__PutRequest            put = ETCDSERVERPB__PUT_REQUEST__INIT;
    Etcdserverpb__RangeRequest          range =
                                           ETCDSERVERPB__RANGE_REQUEST__INIT;
    Etcdserverpb__TxnRequest            txn = ETCDSERVERPB__TXN_REQUEST__INIT;
    Relay__Control__V1__StoredVersion   rec;

    sv = calloc(1, sizeof(ctld_etcd_save_t));
    if (sv == NULL) {
        done(data, NULL, GRPC_STATUS_RESOURCE_EXHAUSTED, NULL,
             "out of memory");
        return;
    }

    sv->v = v;
    sv->done = done;
    sv->data = data;
    sv->change = newest && newest->version == v->version;

    ctld_store_etcd_key(key, sizeof(key), v->version);

    cmps[0] = &cmp[0];
    cmps[1] = &cmp[1];
    txn.compare = cmps;

    /* nothing after the newest: no key of its next version */

    next = newest ? newest->version + 1 : 1;
    ctld_store_etcd_key(nkey, sizeof(nkey), next);
    ctld_etcd_compare(&cmp[0], nkey,
                      ETCDSERVERPB__COMPARE__COMPARE_TARGET__CREATE, 0);
    txn.n_compare = 1;

    /* and the newest as this replica knows it */

    if (newest != NULL) {
        ctld_store_etcd_key(vkey, sizeof(vkey), newest->version);
        ctld_etcd_compare(&cmp[1], vkey,
                          ETCDSERVERPB__COMPARE__COMPARE_TARGET__MOD,
                          newest->revision);
        txn.n_compare = 2;
    }

    if (ctld_etcd_pack(&ctld_store_record(v, &rec)->base, &sv->record) != 0) {
        free(sv);
        done(data, NULL, GRPC_STATUS_RESOURCE_EXHAUSTED, NULL,
             "out of memory");
        return;
    }

    put.key.data = (uint8_t *) key;
    put.key.len = strlen(key);
    put.value = sv->record;

    ctld_etcd_op(&ok_op, ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT, &put);
    ok_ops[0] = &ok_op;
    txn.n_success = 1;
    txn.success = ok_ops;

    /* lost: the newest version there, to say what this raced with */

    snprintf(rkey, sizeof(rkey), "%s" CTLD_ETCD_VERSIONS,
             ctld_se_conf.prefix);
    range.key.data = (uint8_t *) rkey;
    range.key.len = strlen(rkey);
    ctld_etcd_prefix_end(rkey, &range.range_end);
    range.limit = 1;
    range.sort_order = ETCDSERVERPB__RANGE_REQUEST__SORT_ORDER__DESCEND;
    range.sort_target = ETCDSERVERPB__RANGE_REQUEST__SORT_TARGET__KEY;

    ctld_etcd_op(&fail_op, ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_RANGE,
                 &range);
    fail_ops[0] = &fail_op;
    txn.n_failure = 1;
    txn.failure = fail_ops;

    if (ctld_etcd_txn(&txn, ctld_store_etcd_saved, sv) != 0) {
        snprintf(msg, sizeof(msg), "etcd at %s: cannot start the call",
                 ctld_se_where);
        free(sv->record.data);
        free(sv);
        done(data, NULL, GRPC_STATUS_UNAVAILABLE, "store", msg);
    }

    free(range.range_end.data);
}


static void
ctld_store_etcd_saved(void *data, grpc_status_code status,
    const char *details, ProtobufCMessage *resp)
{
    ctld_etcd_save_t  *sv = data;

    char                                msg[1024];
    ctld_version_t                     *v;
    Etcdserverpb__TxnResponse          *r;
    Etcdserverpb__RangeResponse        *rr;
    Relay__Control__V1__StoredVersion  *other;

    v = sv->v;

    if (status != GRPC_STATUS_OK) {
        snprintf(msg, sizeof(msg), "the store is unavailable: etcd at %s: "
                 "%s", ctld_se_where, details);
        sv->done(sv->data, NULL, GRPC_STATUS_UNAVAILABLE, "store", msg);
        free(sv->record.data);
        free(sv);
        return;
    }

    r = (Etcdserverpb__TxnResponse *) resp;

    rr = (r->n_responses && r->responses[0]->response_case
          == ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_RANGE)
         ? r->responses[0]->response_range : NULL;

    /* a Txn made again after its first try went through: it is ours */

    if (!r->succeeded && rr && rr->n_kvs
        && rr->kvs[0]->value.len == sv->record.len
        && memcmp(rr->kvs[0]->value.data, sv->record.data, sv->record.len)
           == 0)
    {
        r->succeeded = 1;
        r->header->revision = rr->kvs[0]->mod_revision;
    }

    free(sv->record.data);

    if (r->succeeded) {
        v->revision = r->header ? r->header->revision : 0;
        sv->done(sv->data, v, GRPC_STATUS_OK, NULL, NULL);
        etcdserverpb__txn_response__free_unpacked(r, NULL);
        free(sv);
        return;
    }

    /* lost the race: name the version this raced with */

    other = NULL;

    if (rr && rr->n_kvs) {
        other = relay__control__v1__stored_version__unpack(NULL,
                    rr->kvs[0]->value.len, rr->kvs[0]->value.data);
    }

    if (other && other->policy) {
        snprintf(msg, sizeof(msg), "conflict: version %llu was %s meanwhile "
                 "by %s through another controld; nothing %s: look at it "
                 "(relayctl history), then try again",
                 (unsigned long long) other->policy->version,
                 sv->change && other->policy->version == v->version
                 ? (other->state == CTLD_STATE_FLEET ? "promoted"
                                                     : "taken back")
                 : other->state == CTLD_STATE_CANARY ? "applied as a canary"
                 : "applied", other->policy->author,
                 sv->change ? "done" : "applied");

    } else {
        snprintf(msg, sizeof(msg), "conflict: the versions changed meanwhile "
                 "through another controld; nothing done: look at them "
                 "(relayctl history), then try again");
    }

    if (other) {
        relay__control__v1__stored_version__free_unpacked(other, NULL);
    }

    etcdserverpb__txn_response__free_unpacked(r, NULL);

    sv->done(sv->data, NULL, GRPC_STATUS_ABORTED, "conflict", msg);
    free(sv);
}


static void
ctld_store_etcd_key(char *buf, size_t len, uint64_t version)
{
    snprintf(buf, len, "%s" CTLD_ETCD_VERSIONS "%020llu", ctld_se_conf.prefix,
             (unsigned long long) version);
}


/* ---------------------------------------------------------------- lease */


static void
ctld_store_etcd_grant(void)
{
    Etcdserverpb__LeaseGrantRequest  req =
                                     ETCDSERVERPB__LEASE_GRANT_REQUEST__INIT;

    req.ttl = (ctld_se_conf.lease_ms + 999) / 1000;

    if (ctld_etcd_call(CTLD_ETCD_GRANT, &req.base,
                       &etcdserverpb__lease_grant_response__descriptor,
                       ctld_store_etcd_granted, NULL)
        == 0)
    {
        ctld_se_granting = 1;
    }
}


static void
ctld_store_etcd_granted(void *data, grpc_status_code status,
    const char *details, ProtobufCMessage *resp)
{
    int64_t                           now;
    Etcdserverpb__LeaseGrantResponse  *r;

    ctld_se_granting = 0;

    if (status != GRPC_STATUS_OK) {
        ctld_log("store: etcd lease grant failed: %s", details);
        return;
    }

    r = (Etcdserverpb__LeaseGrantResponse *) resp;

    if (r->error[0] || r->id == 0) {
        ctld_log("store: etcd lease grant failed: %s", r->error);
        etcdserverpb__lease_grant_response__free_unpacked(r, NULL);
        return;
    }

    now = ctld_now_ms();

    ctld_se_lease = r->id;
    ctld_se_lease_until = now + r->ttl * 1000;
    ctld_se_keep_at = now + r->ttl * 1000 / 3;

    ctld_log("store: etcd lease %llx, TTL %llds", (unsigned long long) r->id,
             (long long) r->ttl);

    etcdserverpb__lease_grant_response__free_unpacked(r, NULL);

    ctld_store_etcd_announce();

    if (ctld_se_on_lease) {
        ctld_se_on_lease(ctld_se_lease);
    }
}


/* this replica, under its lease: P/replicas/NAME */

static void
ctld_store_etcd_announce(void)
{
    char                                key[512];
    Etcdserverpb__PutRequest            put = ETCDSERVERPB__PUT_REQUEST__INIT;
    Relay__Control__V1__ReplicaRecord   rec =
                                     RELAY__CONTROL__V1__REPLICA_RECORD__INIT;

    rec.name = (char *) ctld_se_conf.replica;
    rec.listen = (char *) ctld_se_conf.listen;
    rec.started_unix = time(NULL);

    if (ctld_etcd_pack(&rec.base, &put.value) != 0) {
        return;
    }

    snprintf(key, sizeof(key), "%sreplicas/%s", ctld_se_conf.prefix,
             ctld_se_conf.replica);

    put.key.data = (uint8_t *) key;
    put.key.len = strlen(key);
    put.lease = ctld_se_lease;

    (void) ctld_etcd_call(CTLD_ETCD_PUT, &put.base,
                          &etcdserverpb__put_response__descriptor,
                          ctld_etcd_ignore, NULL);

    free(put.value.data);
}


static void
ctld_store_etcd_keepalive(int64_t now)
{
    Etcdserverpb__LeaseKeepAliveRequest  req =
                                 ETCDSERVERPB__LEASE_KEEP_ALIVE_REQUEST__INIT;

    if (ctld_se_lease == 0) {
        return;
    }

    if (now > ctld_se_lease_until) {
        ctld_store_etcd_lease_lost("not kept alive in time");
        return;
    }

    if (now < ctld_se_keep_at) {
        return;
    }

    if (ctld_se_keeper == NULL) {
        ctld_se_keeper = ctld_etcd_stream(CTLD_ETCD_KEEPALIVE,
                    &etcdserverpb__lease_keep_alive_response__descriptor,
                    ctld_store_etcd_kept, ctld_store_etcd_kept_end, NULL);
        if (ctld_se_keeper == NULL) {
            return;
        }
    }

    req.id = ctld_se_lease;

    if (ctld_etcd_send(ctld_se_keeper, &req.base) == 0) {
        ctld_se_keep_at = now + ctld_se_conf.lease_ms / 3;
    }
}


static void
ctld_store_etcd_kept(void *data, ProtobufCMessage *m)
{
    Etcdserverpb__LeaseKeepAliveResponse  *r;

    r = (Etcdserverpb__LeaseKeepAliveResponse *) m;

    if (r->id == ctld_se_lease) {
        if (r->ttl <= 0) {
            ctld_store_etcd_lease_lost("expired");

        } else {
            ctld_se_lease_until = ctld_now_ms() + r->ttl * 1000;
        }
    }

    etcdserverpb__lease_keep_alive_response__free_unpacked(r, NULL);
}


static void
ctld_store_etcd_kept_end(void *data, grpc_status_code status,
    const char *details)
{
    ctld_se_keeper = NULL;

    /* the next keep-alive opens another stream, on the next member */

    ctld_se_keep_at = 0;
}


/* keys under the lost lease are gone: a new lease, and the fleet's again */

static void
ctld_store_etcd_lease_lost(const char *why)
{
    ctld_log("store: etcd lease %llx lost (%s): the sessions of this "
             "replica are put again under a new one",
             (unsigned long long) ctld_se_lease, why);

    ctld_se_lease = 0;

    if (ctld_se_keeper) {
        ctld_etcd_cancel(ctld_se_keeper);
    }
}


/* ---------------------------------------------------------------- loop */


static void
ctld_store_etcd_tick(int64_t now)
{
    size_t  i;

    if (ctld_se_stopping) {
        return;
    }

    for (i = 0; i < ctld_se_nparts; i++) {
        if (ctld_se_parts[i]->tick) {
            ctld_se_parts[i]->tick(now);
        }
    }

    if (ctld_se_state == CTLD_MIRROR_RETRY && now >= ctld_se_retry_at) {
        if (!ctld_se_loaded || ctld_se_resync) {
            ctld_store_etcd_load();

        } else {
            ctld_store_etcd_watch_start();
        }
    }

    ctld_store_etcd_keepalive(now);

    if (ctld_se_lease == 0 && ctld_se_healthy && !ctld_se_granting) {
        ctld_store_etcd_grant();
    }
}


/* a clean stop: the lease goes (the sessions here end with it), then all */

static void
ctld_store_etcd_stop(void)
{
    Etcdserverpb__LeaseRevokeRequest  req =
                                    ETCDSERVERPB__LEASE_REVOKE_REQUEST__INIT;

    ctld_se_stopping = 1;

    if (ctld_se_lease) {
        req.id = ctld_se_lease;
        (void) ctld_etcd_call(CTLD_ETCD_REVOKE, &req.base,
                              &etcdserverpb__lease_revoke_response__descriptor,
                              ctld_etcd_ignore, NULL);
        ctld_se_lease = 0;
    }

    ctld_etcd_stop();

    if (ctld_se_watch) {
        ctld_etcd_cancel(ctld_se_watch);
    }

    if (ctld_se_keeper) {
        ctld_etcd_cancel(ctld_se_keeper);
    }
}


static unsigned
ctld_store_etcd_busy(void)
{
    return ctld_etcd_busy();
}


static void
ctld_store_etcd_close(void)
{
    size_t  i;

    ctld_etcd_close();

    for (i = 0; i < ctld_se_etcd.nendpoints; i++) {
        free(ctld_se_etcd.endpoints[i]);
    }

    free(ctld_se_etcd.endpoints);
    free(ctld_se_etcd.ca);
    free(ctld_se_etcd.cert);
    free(ctld_se_etcd.key);
    free(ctld_se_where);
}
