/*
 * Copyright (C) The relay authors
 */


/*
 * The version store: every version of the policy, in memory (they are
 * small), unpacked, with its wire form cached; sole owner of what the
 * backend persists.  The current version is the newest: a rollback makes
 * a new version, so numbers only grow, across restarts too, since the
 * backend keeps them.  A version is added only once its backend has saved
 * it.
 */


#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctld_codec.h"
#include "ctld_log.h"
#include "ctld_metrics.h"
#include "ctld_store.h"


static int ctld_store_found(uint64_t version, uint64_t rolled_back_from,
    relay_policy_t *p);
static int ctld_store_room(void);
static int ctld_store_cmp(const void *a, const void *b);


static const ctld_store_backend_t  *ctld_backend;
static ctld_version_t             **ctld_versions;
static size_t                       ctld_nversions;
static size_t                       ctld_versions_cap;


int
ctld_store_open(const ctld_store_backend_t *backend, const char *where)
{
    ctld_backend = backend;

    if (backend->open(where) != 0 || backend->load(ctld_store_found) != 0) {
        return -1;
    }

    if (ctld_nversions) {
        qsort(ctld_versions, ctld_nversions, sizeof(ctld_version_t *),
              ctld_store_cmp);
    }

    if (ctld_nversions == 0) {
        ctld_log("%s %s: no versions yet", backend->name, where);

    } else {
        ctld_log("%s %s: %zu versions, current %llu", backend->name, where,
                 ctld_nversions,
                 (unsigned long long) ctld_store_current()->version);
    }

    return 0;
}


static int
ctld_store_found(uint64_t version, uint64_t rolled_back_from,
    relay_policy_t *p)
{
    char             err[512];
    ctld_version_t  *v;

    if (relay_policy_validate(p, err, sizeof(err)) != 0) {
        /* the validator may have grown stricter: keep it, say so */
        ctld_log("version %llu no longer validates: %s",
                 (unsigned long long) version, err);
    }

    v = calloc(1, sizeof(ctld_version_t));
    if (v == NULL || ctld_store_room() != 0) {
        free(v);
        relay_policy_free(p);
        return -1;
    }

    v->version = version;
    v->rolled_back_from = rolled_back_from;
    v->policy = p;

    ctld_versions[ctld_nversions++] = v;

    return 0;
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


static int
ctld_store_cmp(const void *a, const void *b)
{
    const ctld_version_t  *va = *(ctld_version_t * const *) a;
    const ctld_version_t  *vb = *(ctld_version_t * const *) b;

    return va->version < vb->version ? -1 : va->version > vb->version;
}


ctld_version_t *
ctld_store_current(void)
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
    return ctld_nversions ? ctld_store_current()->version + 1 : 1;
}


/*
 * Stores p, already stamped with ctld_store_next_version() and validated,
 * as a new version (a deep copy is kept).
 */

ctld_version_t *
ctld_store_add(const relay_policy_t *p, uint64_t rolled_back_from, char *err,
    size_t errlen)
{
    ctld_version_t  *v;

    if (p->version != ctld_store_next_version()) {
        snprintf(err, errlen, "version %llu is not the next one",
                 (unsigned long long) p->version);
        return NULL;
    }

    if (ctld_store_room() != 0) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }

    v = calloc(1, sizeof(ctld_version_t));
    if (v == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }

    v->policy = relay_policy_copy(p);
    if (v->policy == NULL) {
        free(v);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }

    v->version = p->version;
    v->rolled_back_from = rolled_back_from;

    if (ctld_backend->save(v, err, errlen) != 0) {
        ctld_metrics_store_error();
        relay_policy_free(v->policy);
        free(v);
        return NULL;
    }

    ctld_versions[ctld_nversions++] = v;

    return v;
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


void
ctld_store_close(void)
{
    size_t  i;

    for (i = 0; i < ctld_nversions; i++) {
        if (ctld_versions[i]->wire_ready) {
            grpc_slice_unref(ctld_versions[i]->wire);
        }

        relay_policy_free(ctld_versions[i]->policy);
        free(ctld_versions[i]);
    }

    free(ctld_versions);
    ctld_versions = NULL;
    ctld_nversions = 0;

    if (ctld_backend) {
        ctld_backend->close();
    }
}
