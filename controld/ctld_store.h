/*
 * Copyright (C) The relay authors
 */


#ifndef _CTLD_STORE_H_INCLUDED_
#define _CTLD_STORE_H_INCLUDED_


#include <stddef.h>
#include <stdint.h>

#include <grpc/grpc.h>
#include <grpc/slice.h>

#include "relay_policy.h"
#include "relay/control/v1/store.pb-c.h"
#include "ctld_server.h"


typedef Relay__Control__V1__VersionState   ctld_state_e;

#define CTLD_STATE_FLEET    RELAY__CONTROL__V1__VERSION_STATE__VERSION_FLEET
#define CTLD_STATE_CANARY   RELAY__CONTROL__V1__VERSION_STATE__VERSION_CANARY
#define CTLD_STATE_ABORTED  RELAY__CONTROL__V1__VERSION_STATE__VERSION_ABORTED


typedef struct {
    uint64_t                    version;
    uint64_t                    rolled_back_from;
    ctld_state_e                state;
    char                       *canary;               /* selector, or "" */
    relay_policy_t             *policy;               /* stamped, validated */
    int64_t                     revision;             /* etcd's: its key's */
    grpc_slice                  wire;                 /* ControlMessage */
    unsigned                    wire_ready:1;
} ctld_version_t;


/*
 * The end of a store operation: v (NULL on error), else status and why
 * (ABORTED: another replica got there first; UNAVAILABLE: the store is
 * unreachable, kind "store").
 */
typedef void (*ctld_store_done_pt)(void *data, ctld_version_t *v,
    grpc_status_code status, const char *kind, const char *err);

/* a stored version found by load; the callee owns p from now on */
typedef int (*ctld_store_found_pt)(uint64_t version,
    uint64_t rolled_back_from, ctld_state_e state, const char *canary,
    relay_policy_t *p);


/*
 * Where versions persist: the store keeps every version in memory, and a
 * backend loads them and saves each new one, durably, before anyone sees
 * it.  ctld_store_dir (ctld_store_dir.h) is the data directory, whose
 * save is done when it returns; ctld_store_etcd is etcd, whose versions
 * arrive through its watch (ctld_store_found(), ctld_store_changed()) and
 * whose save ends later, on the completion queue: it compares and swaps,
 * so two replicas never make one version twice.  client: the backend's
 * calls on the server's queue (NULL: none).
 */

typedef struct {
    const char                 *name;                 /* for the log */
    int                       (*open)(const char *where);
    int                       (*load)(ctld_store_found_pt found);
    void                      (*save)(ctld_version_t *v,
                                      const ctld_version_t *newest,
                                      ctld_store_done_pt done, void *data);
    int                       (*ready)(char *err, size_t errlen);
    void                      (*close)(void);
    const ctld_client_t        *client;
} ctld_store_backend_t;


/*
 * What the store tells the rest of controld (given by main()): versions
 * or their states changed, from this replica or another.
 */
typedef void (*ctld_store_changed_pt)(void);


int ctld_store_open(const ctld_store_backend_t *backend, const char *where,
    ctld_store_changed_pt changed);
void ctld_store_close(void);
const ctld_client_t *ctld_store_client(void);
int ctld_store_ready(char *err, size_t errlen);
size_t ctld_store_count(void);
ctld_version_t *ctld_store_nth(size_t i);         /* 0: oldest */
ctld_version_t *ctld_store_current(void);         /* the fleet's; NULL */
ctld_version_t *ctld_store_canary(void);          /* in progress; NULL */
ctld_version_t *ctld_store_newest(void);
ctld_version_t *ctld_store_get(uint64_t version);
uint64_t ctld_store_next_version(void);
void ctld_store_add(const relay_policy_t *p, uint64_t rolled_back_from,
    const char *canary, ctld_store_done_pt done, void *data);
void ctld_store_set_state(ctld_version_t *v, ctld_state_e state,
    ctld_store_done_pt done, void *data);
grpc_slice ctld_store_wire(ctld_version_t *v);

/* for backends: a version found or changed; 0, or -1 out of memory */
int ctld_store_found(uint64_t version, uint64_t rolled_back_from,
    ctld_state_e state, const char *canary, relay_policy_t *p);
void ctld_store_changed(void);
void ctld_store_revision(uint64_t version, int64_t revision);

/* the record of a version, as backends keep it */
Relay__Control__V1__StoredVersion *ctld_store_record(const ctld_version_t *v,
    Relay__Control__V1__StoredVersion *r);


#endif /* _CTLD_STORE_H_INCLUDED_ */
