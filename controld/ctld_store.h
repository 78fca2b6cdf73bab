/*
 * Copyright (C) The relay authors
 */


#ifndef _CTLD_STORE_H_INCLUDED_
#define _CTLD_STORE_H_INCLUDED_


#include <stddef.h>
#include <stdint.h>

#include <grpc/slice.h>

#include "relay_policy.h"


typedef struct {
    uint64_t                    version;
    uint64_t                    rolled_back_from;
    relay_policy_t             *policy;               /* stamped, validated */
    grpc_slice                  wire;                 /* ControlMessage */
    unsigned                    wire_ready:1;
} ctld_version_t;


/*
 * Where versions persist: the store keeps every version in memory, and a
 * backend loads them all at start and saves each new one, durably, before
 * anyone sees it.  ctld_store_dir (ctld_store_dir.h) is the data
 * directory; another backend is another such struct.
 */

/* a stored version found by load; the callee owns p from now on */
typedef int (*ctld_store_found_pt)(uint64_t version,
    uint64_t rolled_back_from, relay_policy_t *p);

typedef struct {
    const char                 *name;                 /* for the log */
    int                       (*open)(const char *where);
    int                       (*load)(ctld_store_found_pt found);
    int                       (*save)(const ctld_version_t *v, char *err,
                                      size_t errlen);
    void                      (*close)(void);
} ctld_store_backend_t;


int ctld_store_open(const ctld_store_backend_t *backend, const char *where);
void ctld_store_close(void);
size_t ctld_store_count(void);
ctld_version_t *ctld_store_nth(size_t i);         /* 0: oldest */
ctld_version_t *ctld_store_current(void);         /* NULL: none yet */
ctld_version_t *ctld_store_get(uint64_t version);
uint64_t ctld_store_next_version(void);
ctld_version_t *ctld_store_add(const relay_policy_t *p,
    uint64_t rolled_back_from, char *err, size_t errlen);
grpc_slice ctld_store_wire(ctld_version_t *v);


#endif /* _CTLD_STORE_H_INCLUDED_ */
