/*
 * Copyright (C) The relay authors
 */


/*
 * The fleet across replicas, in etcd: which replica holds which node's
 * session, what each node last said, and queue commands for nodes of
 * other replicas.  Only with the etcd store (ctld_store_etcd.c, whose
 * watch hands this file its keys); with the data directory there is one
 * replica and nothing here runs.
 *
 *   P/nodes/ID                   NodeRecord: applied version, NACK, labels,
 *                                status; no lease, it outlives the session
 *   P/sessions/ID                SessionRecord {replica, incarnation, ...}
 *                                under the holder's lease: a replica that
 *                                dies loses its sessions within the TTL
 *   P/commands/ID/ORIGIN-N       StoredCommand N of replica ORIGIN for node
 *                                ID, under ORIGIN's lease
 *   P/results/ORIGIN/N/ID        StoredResult of node ID, under the lease
 *                                of the replica that holds its session
 *
 * Writes coalesce: each node has one entry, whose record and session are
 * the newest this replica wants written; dirty entries go out in Txns of
 * at most 64 puts, a few in flight, so a thousand ACKs make a dozen
 * writes.  A node's record is written at most once a second: the first
 * change after a quiet second goes out at once (an apply's ACKs reach a
 * replica that waits for them within milliseconds), changes that follow
 * it closely wait for the second to pass and go out as one (a burst of
 * applies costs etcd one record per node a second, not one per ACK).
 * A session that ends is deleted only if the key still holds what this
 * replica put there (Compare VALUE): a session another replica took
 * meanwhile stays theirs.  When etcd does not answer, entries stay dirty
 * and go out when it does; a new lease puts every session again.
 *
 * Queue commands go through etcd, not between replicas: the origin puts
 * the command, the holder of the node's session sees it in its watch,
 * sends it on the session, and puts the result where the origin's watch
 * sees it; the origin then deletes both.  A result larger than 1 MiB
 * (etcd refuses requests of more than 1.5 MiB by default) loses list
 * entries from its end and says so.
 */


#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctld_alloc.h"
#include "ctld_clock.h"
#include "ctld_etcd.h"
#include "ctld_fleet.h"
#include "ctld_log.h"
#include "ctld_store_etcd.h"


#define CTLD_FLEET_BUCKETS      1024
#define CTLD_FLEET_BATCH        64
#define CTLD_FLEET_IN_FLIGHT    4
#define CTLD_FLEET_SEEN         256             /* commands run, by key */
#define CTLD_FLEET_MAX_RESULT   (1024 * 1024)
#define CTLD_FLEET_RECORD_MS    1000            /* a record at most so often */


typedef struct ctld_fleet_entry_s  ctld_fleet_entry_t;

struct ctld_fleet_entry_s {
    ctld_fleet_entry_t         *hnext;
    ctld_fleet_entry_t         *dnext;
    char                       *id;
    ProtobufCBinaryData         record;       /* the newest of ours */
    ProtobufCBinaryData         session;      /* ours now; len 0: none */
    ProtobufCBinaryData         written;      /* ours in etcd */
    ProtobufCBinaryData         stale;        /* an old one of ours there */
    int64_t                     record_at;    /* last written, ms */
    int64_t                     record_due;   /* to be written, ms */
    unsigned                    record_dirty:1;
    unsigned                    session_dirty:1;
    unsigned                    stale_dirty:1;
    unsigned                    listed:1;     /* on the dirty list */
    unsigned                    remote:1;     /* another replica holds it */
    unsigned                    seen:1;       /* in the current full read */
};


typedef struct {
    ctld_fleet_entry_t         *entry[CTLD_FLEET_BATCH];
    unsigned char               what[CTLD_FLEET_BATCH];
    int64_t                     at;
    ProtobufCBinaryData         put[CTLD_FLEET_BATCH];   /* sessions put */
    size_t                      n;
} ctld_fleet_batch_t;


#define CTLD_FLEET_RECORD    1
#define CTLD_FLEET_SESSION   2
#define CTLD_FLEET_DELETE    4
#define CTLD_FLEET_STALE     8


static void ctld_fleet_nodes_put(const char *rest,
    const ProtobufCBinaryData *value, int64_t lease);
static void ctld_fleet_sessions_put(const char *rest,
    const ProtobufCBinaryData *value, int64_t lease);
static void ctld_fleet_sessions_del(const char *rest);
static void ctld_fleet_sync_begin(void);
static void ctld_fleet_sync_end(void);
static void ctld_fleet_commands_put(const char *rest,
    const ProtobufCBinaryData *value, int64_t lease);
static void ctld_fleet_results_put(const char *rest,
    const ProtobufCBinaryData *value, int64_t lease);
static void ctld_fleet_nothing(const char *rest);
static void ctld_fleet_granted(int64_t lease);
static void ctld_fleet_tick(int64_t now);
static ctld_fleet_entry_t *ctld_fleet_entry(const char *id);
static void ctld_fleet_dirty(ctld_fleet_entry_t *e);
static void ctld_fleet_list(ctld_fleet_entry_t *e);
static void ctld_fleet_flush(void);
static void ctld_fleet_flushed(void *data, grpc_status_code status,
    const char *details, ProtobufCMessage *resp);
static void ctld_fleet_delete(ctld_fleet_entry_t *e, int what,
    ProtobufCBinaryData *value);
static void ctld_fleet_put(const char *key, const ProtobufCMessage *m,
    int64_t lease);
static char *ctld_fleet_key(Etcdserverpb__PutRequest *put, const char *sub,
    const char *id, const ProtobufCBinaryData *value, int64_t lease);
static int ctld_fleet_set(ProtobufCBinaryData *b, const void *data,
    size_t len);
static int ctld_fleet_same(const ProtobufCBinaryData *a,
    const ProtobufCBinaryData *b);
static unsigned ctld_fleet_hash(const char *s);


static const ctld_store_etcd_part_t  ctld_fleet_nodes = {
    "nodes/", ctld_fleet_nodes_put, ctld_fleet_nothing, NULL, NULL,
    ctld_fleet_tick
};

static const ctld_store_etcd_part_t  ctld_fleet_sessions = {
    "sessions/", ctld_fleet_sessions_put, ctld_fleet_sessions_del,
    ctld_fleet_sync_begin, ctld_fleet_sync_end, NULL
};

static const ctld_store_etcd_part_t  ctld_fleet_commands = {
    "commands/", ctld_fleet_commands_put, ctld_fleet_nothing, NULL, NULL,
    NULL
};

static const ctld_store_etcd_part_t  ctld_fleet_results = {
    "results/", ctld_fleet_results_put, ctld_fleet_nothing, NULL, NULL,
    NULL
};


static ctld_fleet_conf_t      ctld_fleet_conf;
static int                    ctld_fleet_on;
static char                  *ctld_fleet_name;
static ctld_fleet_entry_t    *ctld_fleet_table[CTLD_FLEET_BUCKETS];
static ctld_fleet_entry_t    *ctld_fleet_dirty_head;
static ctld_fleet_entry_t    *ctld_fleet_dirty_tail;
static size_t                 ctld_fleet_ndirty;
static unsigned               ctld_fleet_in_flight;
static int64_t                ctld_fleet_pause_until;
static char                  *ctld_fleet_seen[CTLD_FLEET_SEEN];
static size_t                 ctld_fleet_seen_next;


int
ctld_fleet_init(const ctld_fleet_conf_t *conf, const char *replica,
    const char *listen)
{
    if (strchr(replica, '/') != NULL || replica[0] == '\0') {
        ctld_log("replica name \"%s\": empty, or with \"/\"", replica);
        return -1;
    }

    ctld_fleet_conf = *conf;
    ctld_fleet_name = ctld_strdup(replica);
    ctld_fleet_on = 1;

    ctld_store_etcd_watch(&ctld_fleet_nodes);
    ctld_store_etcd_watch(&ctld_fleet_sessions);
    ctld_store_etcd_watch(&ctld_fleet_commands);
    ctld_store_etcd_watch(&ctld_fleet_results);
    ctld_store_etcd_on_lease(ctld_fleet_granted);

    return 0;
}


int
ctld_fleet_enabled(void)
{
    return ctld_fleet_on;
}


const char *
ctld_fleet_replica(void)
{
    return ctld_fleet_name ? ctld_fleet_name : "";
}


/* ---------------------------------------------------------------- ours */


void
ctld_fleet_node(const char *id, const ctld_node_record_t *r)
{
    ctld_fleet_entry_t   *e;
    ProtobufCBinaryData   b;

    e = ctld_fleet_on ? ctld_fleet_entry(id) : NULL;

    if (e == NULL || ctld_etcd_pack(&r->base, &b) != 0) {
        return;
    }

    free(e->record.data);
    e->record = b;

    if (!e->record_dirty) {
        e->record_dirty = 1;
        e->record_due = e->record_at + CTLD_FLEET_RECORD_MS;
    }

    ctld_fleet_dirty(e);
}


void
ctld_fleet_session(const char *id, const ctld_session_record_t *s)
{
    ctld_fleet_entry_t  *e;

    e = ctld_fleet_on ? ctld_fleet_entry(id) : NULL;
    if (e == NULL) {
        return;
    }

    free(e->session.data);
    e->session.data = NULL;
    e->session.len = 0;

    if (s != NULL) {
        if (ctld_etcd_pack(&s->base, &e->session) != 0) {
            return;
        }

        e->remote = 0;
    }

    e->session_dirty = 1;

    ctld_fleet_dirty(e);
}


static void
ctld_fleet_dirty(ctld_fleet_entry_t *e)
{
    ctld_fleet_list(e);
    ctld_fleet_flush();
}


static void
ctld_fleet_list(ctld_fleet_entry_t *e)
{
    if (e->listed) {
        return;
    }

    e->listed = 1;
    e->dnext = NULL;

    if (ctld_fleet_dirty_tail) {
        ctld_fleet_dirty_tail->dnext = e;

    } else {
        ctld_fleet_dirty_head = e;
    }

    ctld_fleet_dirty_tail = e;
    ctld_fleet_ndirty++;
}


/*
 * Dirty entries out: their records and sessions put in one Txn of up to
 * 64 puts; ended sessions deleted each on its own (their compares).
 * Sessions wait for a lease.
 */

static void
ctld_fleet_flush(void)
{
    size_t                     i, n, pass;
    int64_t                    lease, now;
    ctld_fleet_entry_t        *e;
    ctld_fleet_batch_t        *b;
    Etcdserverpb__PutRequest   put[CTLD_FLEET_BATCH * 2];
    Etcdserverpb__RequestOp    op[CTLD_FLEET_BATCH * 2];
    Etcdserverpb__RequestOp   *ops[CTLD_FLEET_BATCH * 2];
    Etcdserverpb__TxnRequest   txn = ETCDSERVERPB__TXN_REQUEST__INIT;
    char                      *keys[CTLD_FLEET_BATCH * 2];

    now = ctld_now_ms();

    /* one pass over what is listed: records not due yet go to its end */

    pass = ctld_fleet_ndirty;

    while (pass && ctld_fleet_dirty_head
           && ctld_fleet_in_flight < CTLD_FLEET_IN_FLIGHT
           && now >= ctld_fleet_pause_until
           && ctld_store_etcd_healthy())
    {
        b = calloc(1, sizeof(ctld_fleet_batch_t));
        if (b == NULL) {
            return;
        }

        lease = ctld_store_etcd_lease();
        n = 0;

        b->at = now;

        while (pass && ctld_fleet_dirty_head && b->n < CTLD_FLEET_BATCH
               && n + 2 <= CTLD_FLEET_BATCH * 2)
        {
            e = ctld_fleet_dirty_head;
            ctld_fleet_dirty_head = e->dnext;
            if (ctld_fleet_dirty_head == NULL) {
                ctld_fleet_dirty_tail = NULL;
            }

            e->listed = 0;
            ctld_fleet_ndirty--;
            pass--;

            if (e->stale_dirty) {
                e->stale_dirty = 0;
                ctld_fleet_delete(e, CTLD_FLEET_STALE, &e->stale);
            }

            if (e->session_dirty && e->session.len == 0) {
                e->session_dirty = 0;

                if (e->written.len) {
                    ctld_fleet_delete(e, CTLD_FLEET_DELETE, &e->written);
                }
            }

            b->entry[b->n] = e;
            b->what[b->n] = 0;

            if (e->record_dirty && e->record_due > now) {
                ctld_fleet_list(e);                 /* its second later */

            } else if (e->record_dirty) {
                keys[n] = ctld_fleet_key(&put[n], "nodes/", e->id,
                                         &e->record, 0);
                n++;

                e->record_dirty = 0;
                b->what[b->n] |= CTLD_FLEET_RECORD;
            }

            /* no lease now: the session stays dirty, the grant lists it */

            if (e->session_dirty && e->session.len && lease) {
                keys[n] = ctld_fleet_key(&put[n], "sessions/", e->id,
                                         &e->session, lease);
                n++;

                (void) ctld_fleet_set(&b->put[b->n], e->session.data,
                                      e->session.len);
                e->session_dirty = 0;
                b->what[b->n] |= CTLD_FLEET_SESSION;
            }

            if (b->what[b->n]) {
                b->n++;
            }
        }

        if (n == 0) {
            free(b);
            continue;
        }

        for (i = 0; i < n; i++) {
            ctld_etcd_op(&op[i], ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT,
                         &put[i]);
            ops[i] = &op[i];
        }

        txn.n_success = n;
        txn.success = ops;

        ctld_fleet_in_flight++;

        if (ctld_etcd_txn(&txn, ctld_fleet_flushed, b) != 0) {
            ctld_fleet_flushed(b, GRPC_STATUS_UNAVAILABLE,
                               "cannot start the call", NULL);
        }

        for (i = 0; i < n; i++) {
            free(keys[i]);
        }
    }
}


static void
ctld_fleet_flushed(void *data, grpc_status_code status, const char *details,
    ProtobufCMessage *resp)
{
    ctld_fleet_batch_t  *b = data;

    size_t               i;
    ctld_fleet_entry_t  *e;

    ctld_fleet_in_flight--;

    if (resp) {
        protobuf_c_message_free_unpacked(resp, NULL);
    }

    if (status != GRPC_STATUS_OK) {
        if (ctld_fleet_pause_until < ctld_now_ms()) {
            ctld_log("fleet: writing to etcd failed: %s (tried again "
                     "shortly)", details);
        }

        /* first: what goes back on the list is not sent again at once */
        ctld_fleet_pause_until = ctld_now_ms() + 500;
    }

    for (i = 0; i < b->n; i++) {
        e = b->entry[i];

        if (status == GRPC_STATUS_OK) {
            if (b->what[i] & CTLD_FLEET_RECORD) {
                e->record_at = b->at;
            }

            if (b->what[i] & CTLD_FLEET_SESSION) {
                free(e->written.data);
                e->written = b->put[i];
                b->put[i].data = NULL;
            }

        } else {
            /* again later, unless something newer came meanwhile */

            if ((b->what[i] & CTLD_FLEET_RECORD) && !e->record_dirty) {
                e->record_dirty = 1;
                e->record_due = 0;
            }

            if ((b->what[i] & CTLD_FLEET_SESSION) && !e->session_dirty) {
                e->session_dirty = 1;
            }

            ctld_fleet_dirty(e);
        }

        free(b->put[i].data);
    }

    free(b);

    ctld_fleet_flush();
}


/* a session key deleted if and only if it holds value (ours) */

static void
ctld_fleet_delete(ctld_fleet_entry_t *e, int what, ProtobufCBinaryData *value)
{
    char                               key[1024];
    Etcdserverpb__Compare              cmp = ETCDSERVERPB__COMPARE__INIT;
    Etcdserverpb__Compare             *cmps[1];
    Etcdserverpb__RequestOp            op = ETCDSERVERPB__REQUEST_OP__INIT;
    Etcdserverpb__RequestOp           *ops[1];
    Etcdserverpb__DeleteRangeRequest   del =
                                    ETCDSERVERPB__DELETE_RANGE_REQUEST__INIT;
    Etcdserverpb__TxnRequest           txn = ETCDSERVERPB__TXN_REQUEST__INIT;

    snprintf(key, sizeof(key), "%ssessions/%s", ctld_store_etcd_prefix(),
             e->id);

    cmp.result = ETCDSERVERPB__COMPARE__COMPARE_RESULT__EQUAL;
    cmp.target = ETCDSERVERPB__COMPARE__COMPARE_TARGET__VALUE;
    cmp.key.data = (uint8_t *) key;
    cmp.key.len = strlen(key);
    cmp.target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_VALUE;
    cmp.value = *value;
    cmps[0] = &cmp;

    del.key = cmp.key;
    ctld_etcd_op(&op, ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_DELETE_RANGE,
                 &del);
    ops[0] = &op;

    txn.n_compare = 1;
    txn.compare = cmps;
    txn.n_success = 1;
    txn.success = ops;

    if (ctld_etcd_txn(&txn, ctld_etcd_ignore, NULL) != 0) {
        return;
    }

    if (what == CTLD_FLEET_DELETE) {
        free(e->written.data);
        e->written.data = NULL;
        e->written.len = 0;

    } else {
        free(e->stale.data);
        e->stale.data = NULL;
        e->stale.len = 0;
    }
}


/* what waited for etcd to answer again goes out */

static void
ctld_fleet_tick(int64_t now)
{
    ctld_fleet_flush();
}


/* a new lease: every session of this replica is put under it */

static void
ctld_fleet_granted(int64_t lease)
{
    size_t               i;
    ctld_fleet_entry_t  *e;

    for (i = 0; i < CTLD_FLEET_BUCKETS; i++) {
        for (e = ctld_fleet_table[i]; e; e = e->hnext) {
            if (e->session.len) {
                e->session_dirty = 1;
                ctld_fleet_dirty(e);
            }
        }
    }

    ctld_fleet_flush();
}


/* ---------------------------------------------------------------- theirs */


static void
ctld_fleet_nodes_put(const char *rest, const ProtobufCBinaryData *value,
    int64_t lease)
{
    ctld_node_record_t  *r;

    r = relay__control__v1__node_record__unpack(NULL, value->len, value->data);
    if (r == NULL) {
        return;
    }

    if (strcmp(r->replica, ctld_fleet_name) == 0) {
        relay__control__v1__node_record__free_unpacked(r, NULL);
        return;
    }

    ctld_fleet_conf.node(rest, r);
}


static void
ctld_fleet_sessions_put(const char *rest, const ProtobufCBinaryData *value,
    int64_t lease)
{
    ctld_fleet_entry_t     *e;
    ctld_session_record_t  *s;

    s = relay__control__v1__session_record__unpack(NULL, value->len,
                                                   value->data);
    if (s == NULL) {
        return;
    }

    e = ctld_fleet_entry(rest);
    if (e == NULL) {
        relay__control__v1__session_record__free_unpacked(s, NULL);
        return;
    }

    e->seen = 1;

    if (strcmp(s->replica, ctld_fleet_name) == 0) {

        /* ours: as put now, or left by an earlier run of this replica */

        if (!ctld_fleet_same(value, &e->written)
            && !ctld_fleet_same(value, &e->session)
            && lease != ctld_store_etcd_lease())
        {
            if (ctld_fleet_set(&e->stale, value->data, value->len) == 0) {
                e->stale_dirty = 1;
                ctld_fleet_dirty(e);
            }
        }

        relay__control__v1__session_record__free_unpacked(s, NULL);
        return;
    }

    e->remote = 1;

    ctld_fleet_conf.session(rest, s);
}


static void
ctld_fleet_sessions_del(const char *rest)
{
    ctld_fleet_entry_t  *e;

    e = ctld_fleet_entry(rest);
    if (e == NULL) {
        return;
    }

    if (e->written.len) {
        /* ours went (the lease): put it again, if the session goes on */
        free(e->written.data);
        e->written.data = NULL;
        e->written.len = 0;
    }

    e->remote = 0;

    ctld_fleet_conf.session(rest, NULL);
}


static void
ctld_fleet_sync_begin(void)
{
    size_t               i;
    ctld_fleet_entry_t  *e;

    for (i = 0; i < CTLD_FLEET_BUCKETS; i++) {
        for (e = ctld_fleet_table[i]; e; e = e->hnext) {
            e->seen = 0;
        }
    }
}


/* after a full read: the sessions not in it ended while we did not look */

static void
ctld_fleet_sync_end(void)
{
    size_t               i;
    ctld_fleet_entry_t  *e;

    for (i = 0; i < CTLD_FLEET_BUCKETS; i++) {
        for (e = ctld_fleet_table[i]; e; e = e->hnext) {
            if (e->seen) {
                continue;
            }

            if (e->remote) {
                e->remote = 0;
                ctld_fleet_conf.session(e->id, NULL);

            } else if (e->session.len && e->written.len) {
                free(e->written.data);
                e->written.data = NULL;
                e->written.len = 0;
                e->session_dirty = 1;
                ctld_fleet_dirty(e);
            }
        }
    }
}


/* ---------------------------------------------------------------- queue */


int
ctld_fleet_command(const char *node_id, const ctld_command_t *cmd)
{
    char                              key[1024];
    Relay__Control__V1__StoredCommand  sc =
                                     RELAY__CONTROL__V1__STORED_COMMAND__INIT;

    if (!ctld_fleet_on || ctld_store_etcd_lease() == 0
        || !ctld_store_etcd_healthy())
    {
        return -1;
    }

    snprintf(key, sizeof(key), "%scommands/%s/%s-%llu",
             ctld_store_etcd_prefix(), node_id, ctld_fleet_name,
             (unsigned long long) cmd->id);

    sc.origin = ctld_fleet_name;
    sc.command = (ctld_command_t *) cmd;

    ctld_fleet_put(key, &sc.base, ctld_store_etcd_lease());

    return 0;
}


static void
ctld_fleet_commands_put(const char *rest, const ProtobufCBinaryData *value,
    int64_t lease)
{
    char                               node[256], *slash;
    size_t                             i;
    Relay__Control__V1__StoredCommand  *sc;
    ctld_command_t                     *cmd;

    slash = strchr(rest, '/');
    if (slash == NULL || (size_t) (slash - rest) >= sizeof(node)) {
        return;
    }

    memcpy(node, rest, slash - rest);
    node[slash - rest] = '\0';

    for (i = 0; i < CTLD_FLEET_SEEN; i++) {
        if (ctld_fleet_seen[i] && strcmp(ctld_fleet_seen[i], rest) == 0) {
            return;                     /* run already (a full read again) */
        }
    }

    sc = relay__control__v1__stored_command__unpack(NULL, value->len,
                                                    value->data);
    if (sc == NULL || sc->command == NULL
        || strcmp(sc->origin, ctld_fleet_name) == 0)
    {
        if (sc) {
            relay__control__v1__stored_command__free_unpacked(sc, NULL);
        }

        return;
    }

    free(ctld_fleet_seen[ctld_fleet_seen_next]);
    ctld_fleet_seen[ctld_fleet_seen_next] = ctld_strdup(rest);
    ctld_fleet_seen_next = (ctld_fleet_seen_next + 1) % CTLD_FLEET_SEEN;

    cmd = sc->command;
    sc->command = NULL;

    ctld_fleet_conf.command(node, sc->origin, cmd);

    relay__control__v1__stored_command__free_unpacked(sc, NULL);
}


void
ctld_fleet_answer(const char *origin, const char *node_id,
    const ctld_node_msg_t *m)
{
    char                               key[1024];
    size_t                             n;
    Relay__Control__V1__CommandResult  r;
    Relay__Control__V1__StoredResult   sr =
                                      RELAY__CONTROL__V1__STORED_RESULT__INIT;

    if (!ctld_fleet_on || m->result == NULL) {
        return;
    }

    r = *m->result;
    sr.result = &r;

    /* within what etcd takes: the list loses entries from its end */

    n = r.n_entries;

    while (n > 0 && relay__control__v1__stored_result__get_packed_size(&sr)
                    > CTLD_FLEET_MAX_RESULT)
    {
        n = n * 3 / 4;
        r.n_entries = n;
        r.error = "listing truncated: too large to pass between controld "
                  "replicas";
    }

    snprintf(key, sizeof(key), "%sresults/%s/%llu/%s",
             ctld_store_etcd_prefix(), origin,
             (unsigned long long) r.id, node_id);

    ctld_fleet_put(key, &sr.base, ctld_store_etcd_lease());
}


static void
ctld_fleet_results_put(const char *rest, const ProtobufCBinaryData *value,
    int64_t lease)
{
    size_t                             len;
    const char                        *node, *p;
    ctld_node_msg_t                   *m;
    Relay__Control__V1__StoredResult  *sr;

    len = strlen(ctld_fleet_name);

    if (strncmp(rest, ctld_fleet_name, len) != 0 || rest[len] != '/') {
        return;                         /* another replica's */
    }

    p = rest + len + 1;
    node = strchr(p, '/');
    if (node == NULL) {
        return;
    }

    sr = relay__control__v1__stored_result__unpack(NULL, value->len,
                                                   value->data);
    if (sr == NULL || sr->result == NULL) {
        if (sr) {
            relay__control__v1__stored_result__free_unpacked(sr, NULL);
        }

        return;
    }

    m = malloc(sizeof(ctld_node_msg_t));
    if (m == NULL) {
        relay__control__v1__stored_result__free_unpacked(sr, NULL);
        return;
    }

    relay__control__v1__node_message__init(m);
    m->msg_case = RELAY__CONTROL__V1__NODE_MESSAGE__MSG_RESULT;
    m->result = sr->result;
    sr->result = NULL;

    relay__control__v1__stored_result__free_unpacked(sr, NULL);

    ctld_fleet_conf.result(node + 1, m);
}


void
ctld_fleet_forget(const char *node_id, uint64_t cmd_id)
{
    char                               ckey[1024], rkey[1024];
    Etcdserverpb__RequestOp            op[2], *ops[2];
    Etcdserverpb__DeleteRangeRequest   del[2];
    Etcdserverpb__TxnRequest           txn = ETCDSERVERPB__TXN_REQUEST__INIT;

    if (!ctld_fleet_on) {
        return;
    }

    snprintf(ckey, sizeof(ckey), "%scommands/%s/%s-%llu",
             ctld_store_etcd_prefix(), node_id, ctld_fleet_name,
             (unsigned long long) cmd_id);
    snprintf(rkey, sizeof(rkey), "%sresults/%s/%llu/%s",
             ctld_store_etcd_prefix(), ctld_fleet_name,
             (unsigned long long) cmd_id, node_id);

    etcdserverpb__delete_range_request__init(&del[0]);
    etcdserverpb__delete_range_request__init(&del[1]);
    del[0].key.data = (uint8_t *) ckey;
    del[0].key.len = strlen(ckey);
    del[1].key.data = (uint8_t *) rkey;
    del[1].key.len = strlen(rkey);

    ctld_etcd_op(&op[0], ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_DELETE_RANGE,
                 &del[0]);
    ctld_etcd_op(&op[1], ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_DELETE_RANGE,
                 &del[1]);
    ops[0] = &op[0];
    ops[1] = &op[1];

    txn.n_success = 2;
    txn.success = ops;

    (void) ctld_etcd_txn(&txn, ctld_etcd_ignore, NULL);
}


/* ---------------------------------------------------------------- utils */


static void
ctld_fleet_put(const char *key, const ProtobufCMessage *m, int64_t lease)
{
    Etcdserverpb__PutRequest  put = ETCDSERVERPB__PUT_REQUEST__INIT;

    if (ctld_etcd_pack(m, &put.value) != 0) {
        return;
    }

    put.key.data = (uint8_t *) key;
    put.key.len = strlen(key);
    put.lease = lease;

    if (ctld_etcd_call(CTLD_ETCD_PUT, &put.base,
                       &etcdserverpb__put_response__descriptor,
                       ctld_etcd_ignore, NULL)
        != 0)
    {
        ctld_log("fleet: cannot put %s", key);
    }

    free(put.value.data);
}


static void
ctld_fleet_nothing(const char *rest)
{
    /* records and commands are deleted by who wrote them: nothing to do */
}


static ctld_fleet_entry_t *
ctld_fleet_entry(const char *id)
{
    unsigned             h;
    ctld_fleet_entry_t  *e;

    h = ctld_fleet_hash(id) % CTLD_FLEET_BUCKETS;

    for (e = ctld_fleet_table[h]; e; e = e->hnext) {
        if (strcmp(e->id, id) == 0) {
            return e;
        }
    }

    e = calloc(1, sizeof(ctld_fleet_entry_t));
    if (e == NULL) {
        return NULL;
    }

    e->id = ctld_strdup(id);
    e->hnext = ctld_fleet_table[h];
    ctld_fleet_table[h] = e;

    return e;
}


/* a put of P/SUB/ID; its key malloc()ed (the caller frees it) */

static char *
ctld_fleet_key(Etcdserverpb__PutRequest *put, const char *sub,
    const char *id, const ProtobufCBinaryData *value, int64_t lease)
{
    char  key[1024];

    snprintf(key, sizeof(key), "%s%s%s", ctld_store_etcd_prefix(), sub, id);

    etcdserverpb__put_request__init(put);
    put->key.data = (uint8_t *) ctld_strdup(key);
    put->key.len = strlen(key);
    put->value = *value;
    put->lease = lease;

    return (char *) put->key.data;
}


static int
ctld_fleet_set(ProtobufCBinaryData *b, const void *data, size_t len)
{
    uint8_t  *p;

    p = malloc(len ? len : 1);
    if (p == NULL) {
        return -1;
    }

    memcpy(p, data, len);
    free(b->data);
    b->data = p;
    b->len = len;

    return 0;
}


static int
ctld_fleet_same(const ProtobufCBinaryData *a, const ProtobufCBinaryData *b)
{
    return a->len == b->len && a->len && memcmp(a->data, b->data, a->len) == 0;
}


static unsigned
ctld_fleet_hash(const char *s)
{
    unsigned  h;

    for (h = 2166136261u; *s; s++) {
        h = (h ^ (unsigned char) *s) * 16777619u;
    }

    return h;
}
