/*
 * Copyright (C) The relay authors
 */


/*
 * The version store: every version of the policy, in memory (they are
 * small), unpacked, with its wire form cached; sole owner of what the
 * backend persists.  Numbers only grow, across restarts too, since the
 * backend keeps them; a version is added only once its backend has saved
 * it (or, on etcd, once another replica's save is seen in the watch).
 *
 * A version's state: the fleet's (FLEET), a canary's (CANARY: only the
 * nodes its selector selects run it), or a canary taken back (ABORTED).
 * The current version is the newest of the fleet; a canary is always the
 * newest version, one at a time; promoting it makes it the fleet's,
 * taking it back makes it ABORTED, and either way the current version is
 * what the others ran all along.  A rollback to an older version makes a
 * new version with its content, so the current version only grows too.
 *
 * Saving is asynchronous (etcd answers on the completion queue): add and
 * set_state end in a callback.  Whenever versions change, whoever changed
 * them, the store calls the changed() main() gave it, and the node side
 * sends each node the version it is to run.
 */


#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctld_alloc.h"
#include "ctld_codec.h"
#include "ctld_log.h"
#include "ctld_metrics.h"
#include "ctld_store.h"


typedef struct {
    ctld_version_t             *v;            /* not in the store yet */
    ctld_version_t             *target;       /* a state change: of this */
    ctld_store_done_pt          done;
    void                       *data;
} ctld_store_op_t;


static void ctld_store_saved(void *data, ctld_version_t *v,
    grpc_status_code status, const char *kind, const char *err);
static ctld_version_t *ctld_store_insert(ctld_version_t *v);
static void ctld_store_free_version(ctld_version_t *v);
static int ctld_store_room(void);


static const ctld_store_backend_t  *ctld_backend;
static ctld_store_changed_pt        ctld_store_changed_cb;
static ctld_version_t             **ctld_versions;
static size_t                       ctld_nversions;
static size_t                       ctld_versions_cap;


int
ctld_store_open(const ctld_store_backend_t *backend, const char *where,
    ctld_store_changed_pt changed)
{
    ctld_backend = backend;
    ctld_store_changed_cb = changed;

    if (backend->open(where) != 0
        || (backend->load && backend->load(ctld_store_found) != 0))
    {
        return -1;
    }

    if (backend->load == NULL) {
        ctld_log("store %s: versions load once it answers", where);

    } else if (ctld_nversions == 0) {
        ctld_log("%s %s: no versions yet", backend->name, where);

    } else {
        ctld_log("%s %s: %zu versions, current %llu%s", backend->name, where,
                 ctld_nversions,
                 (unsigned long long) (ctld_store_current()
                                       ? ctld_store_current()->version : 0),
                 ctld_store_canary() ? ", a canary in progress" : "");
    }

    return 0;
}


const ctld_client_t *
ctld_store_client(void)
{
    return ctld_backend ? ctld_backend->client : NULL;
}


/*
 * 1: the store answers (admin calls may go on); 0 and why in err; -1: not
 * now but in a moment (etcd's watch moves to another member): wait.
 */

int
ctld_store_ready(char *err, size_t errlen)
{
    if (ctld_backend == NULL || ctld_backend->ready == NULL) {
        return 1;
    }

    return ctld_backend->ready(err, errlen);
}


/*
 * A version from the backend: loaded, or seen in its watch.  One that is
 * here already may have a new state (promoted, taken back); p is freed.
 */

int
ctld_store_found(uint64_t version, uint64_t rolled_back_from,
    ctld_state_e state, const char *canary, relay_policy_t *p)
{
    char             err[512];
    ctld_version_t  *v;

    v = ctld_store_get(version);

    if (v != NULL) {
        relay_policy_free(p);

        if (v->state != state) {
            v->state = state;
        }

        return 0;
    }

    if (relay_policy_validate(p, err, sizeof(err)) != 0) {
        /* the validator may have grown stricter: keep it, say so */
        ctld_log("version %llu no longer validates: %s",
                 (unsigned long long) version, err);
    }

    v = calloc(1, sizeof(ctld_version_t));
    if (v == NULL) {
        relay_policy_free(p);
        return -1;
    }

    v->version = version;
    v->rolled_back_from = rolled_back_from;
    v->state = state;
    v->canary = ctld_strdup(canary);
    v->policy = p;

    if (ctld_store_insert(v) == NULL) {
        ctld_store_free_version(v);
        return -1;
    }

    return 0;
}


void
ctld_store_changed(void)
{
    if (ctld_store_changed_cb) {
        ctld_store_changed_cb();
    }
}


void
ctld_store_revision(uint64_t version, int64_t revision)
{
    ctld_version_t  *v;

    v = ctld_store_get(version);

    if (v != NULL && revision > v->revision) {
        v->revision = revision;
    }
}


/* in version order; the one already there when the watch was first */

static ctld_version_t *
ctld_store_insert(ctld_version_t *v)
{
    size_t           i;
    ctld_version_t  *have;

    have = ctld_store_get(v->version);
    if (have != NULL) {
        return have;
    }

    if (ctld_store_room() != 0) {
        return NULL;
    }

    for (i = ctld_nversions; i > 0; i--) {
        if (ctld_versions[i - 1]->version < v->version) {
            break;
        }

        ctld_versions[i] = ctld_versions[i - 1];
    }

    ctld_versions[i] = v;
    ctld_nversions++;

    return v;
}


/* room for one more version */

static int
ctld_store_room(void)
{
    size_t            cap;
    ctld_version_t  **nv;

    if (ctld_nversions < ctld_versions_cap) {
        return 0;
    }

    cap = ctld_versions_cap ? ctld_versions_cap * 2 : 16;

    nv = realloc(ctld_versions, cap * sizeof(ctld_version_t *));
    if (nv == NULL) {
        return -1;
    }

    ctld_versions = nv;
    ctld_versions_cap = cap;

    return 0;
}


ctld_version_t *
ctld_store_current(void)
{
    size_t  i;

    for (i = ctld_nversions; i > 0; i--) {
        if (ctld_versions[i - 1]->state == CTLD_STATE_FLEET) {
            return ctld_versions[i - 1];
        }
    }

    return NULL;
}


ctld_version_t *
ctld_store_canary(void)
{
    ctld_version_t  *v;

    v = ctld_store_newest();

    return (v && v->state == CTLD_STATE_CANARY) ? v : NULL;
}


ctld_version_t *
ctld_store_newest(void)
{
    return ctld_nversions ? ctld_versions[ctld_nversions - 1] : NULL;
}


ctld_version_t *
ctld_store_nth(size_t i)
{
    return i < ctld_nversions ? ctld_versions[i] : NULL;
}


size_t
ctld_store_count(void)
{
    return ctld_nversions;
}


ctld_version_t *
ctld_store_get(uint64_t version)
{
    size_t  lo, hi, mid;

    lo = 0;
    hi = ctld_nversions;

    while (lo < hi) {
        mid = (lo + hi) / 2;

        if (ctld_versions[mid]->version == version) {
            return ctld_versions[mid];
        }

        if (ctld_versions[mid]->version < version) {
            lo = mid + 1;

        } else {
            hi = mid;
        }
    }

    return NULL;
}


uint64_t
ctld_store_next_version(void)
{
    return ctld_nversions ? ctld_store_newest()->version + 1 : 1;
}


/*
 * Stores p, already stamped with ctld_store_next_version() and validated,
 * as a new version (a deep copy is kept): the fleet's, or with canary a
 * canary of the nodes it selects.  done() follows, maybe at once.
 */

void
ctld_store_add(const relay_policy_t *p, uint64_t rolled_back_from,
    const char *canary, ctld_store_done_pt done, void *data)
{
    char              err[128];
    ctld_store_op_t  *op;
    ctld_version_t   *v;

    if (p->version != ctld_store_next_version()) {
        snprintf(err, sizeof(err), "version %llu is not the next one",
                 (unsigned long long) p->version);
        done(data, NULL, GRPC_STATUS_INTERNAL, NULL, err);
        return;
    }

    v = calloc(1, sizeof(ctld_version_t));
    op = calloc(1, sizeof(ctld_store_op_t));

    if (v == NULL || op == NULL
        || (v->policy = relay_policy_copy(p)) == NULL)
    {
        free(v);
        free(op);
        done(data, NULL, GRPC_STATUS_RESOURCE_EXHAUSTED, NULL,
             "out of memory");
        return;
    }

    v->version = p->version;
    v->rolled_back_from = rolled_back_from;
    v->state = (canary && canary[0]) ? CTLD_STATE_CANARY : CTLD_STATE_FLEET;
    v->canary = ctld_strdup(canary);

    op->v = v;
    op->done = done;
    op->data = data;

    ctld_backend->save(v, ctld_store_newest(), ctld_store_saved, op);
}


/*
 * The canary (the newest version) promoted to the fleet's, or taken back:
 * saved as the same version in another state.
 */

void
ctld_store_set_state(ctld_version_t *v, ctld_state_e state,
    ctld_store_done_pt done, void *data)
{
    ctld_store_op_t  *op;
    ctld_version_t   *copy;

    copy = calloc(1, sizeof(ctld_version_t));
    op = calloc(1, sizeof(ctld_store_op_t));

    if (copy == NULL || op == NULL) {
        free(copy);
        free(op);
        done(data, NULL, GRPC_STATUS_RESOURCE_EXHAUSTED, NULL,
             "out of memory");
        return;
    }

    *copy = *v;                         /* the policy stays v's */
    copy->state = state;
    copy->wire_ready = 0;

    op->v = copy;
    op->target = v;
    op->done = done;
    op->data = data;

    ctld_backend->save(copy, ctld_store_newest(), ctld_store_saved, op);
}


static void
ctld_store_saved(void *data, ctld_version_t *v, grpc_status_code status,
    const char *kind, const char *err)
{
    ctld_store_op_t  *op = data;

    ctld_version_t  *have;

    if (status != GRPC_STATUS_OK) {

        /* a lost race for the version is the callers', not the store's */

        if (status != GRPC_STATUS_ABORTED) {
            ctld_metrics_store_error();
        }

        if (op->target == NULL) {
            ctld_store_free_version(op->v);

        } else {
            free(op->v);
        }

        op->done(op->data, NULL, status, kind, err);
        free(op);
        return;
    }

    if (op->target) {

        /* a state change: the version is the target, whose policy it is */

        have = op->target;
        have->state = op->v->state;

        if (op->v->revision > have->revision) {
            have->revision = op->v->revision;
        }

        free(op->v);

    } else {
        have = ctld_store_insert(op->v);

        if (have == NULL) {
            ctld_store_free_version(op->v);
            op->done(op->data, NULL, GRPC_STATUS_RESOURCE_EXHAUSTED, NULL,
                     "out of memory");
            free(op);
            return;
        }

        if (have != op->v) {
            /* the watch brought it first */
            if (op->v->revision > have->revision) {
                have->revision = op->v->revision;
            }

            ctld_store_free_version(op->v);
        }
    }

    ctld_store_changed();

    op->done(op->data, have, GRPC_STATUS_OK, NULL, NULL);
    free(op);
}


grpc_slice
ctld_store_wire(ctld_version_t *v)
{
    Relay__Control__V1__ControlMessage  m =
                                      RELAY__CONTROL__V1__CONTROL_MESSAGE__INIT;

    if (!v->wire_ready) {
        m.msg_case = RELAY__CONTROL__V1__CONTROL_MESSAGE__MSG_POLICY;
        m.policy = v->policy;
        v->wire = ctld_codec_pack_slice(&m.base);
        v->wire_ready = 1;
    }

    return v->wire;
}


/* a version's record, pointing into v: valid while v is */

Relay__Control__V1__StoredVersion *
ctld_store_record(const ctld_version_t *v,
    Relay__Control__V1__StoredVersion *r)
{
    relay__control__v1__stored_version__init(r);

    r->policy = v->policy;
    r->rolled_back_from = v->rolled_back_from;
    r->state = v->state;
    r->canary = v->canary ? v->canary : (char *) protobuf_c_empty_string;

    return r;
}


static void
ctld_store_free_version(ctld_version_t *v)
{
    if (v->wire_ready) {
        grpc_slice_unref(v->wire);
    }

    relay_policy_free(v->policy);
    free(v->canary);
    free(v);
}


void
ctld_store_close(void)
{
    size_t  i;

    for (i = 0; i < ctld_nversions; i++) {
        ctld_store_free_version(ctld_versions[i]);
    }

    free(ctld_versions);
    ctld_versions = NULL;
    ctld_nversions = 0;

    if (ctld_backend) {
        ctld_backend->close();
    }
}
