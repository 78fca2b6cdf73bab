/*
 * Copyright (C) The relay authors
 */


#ifndef _CTLD_STORE_ETCD_H_INCLUDED_
#define _CTLD_STORE_ETCD_H_INCLUDED_


#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "ctld_store.h"


/* versions, and what the fleet keeps, in etcd (--store etcd://...) */
extern const ctld_store_backend_t  ctld_store_etcd;


typedef struct {
    const char                 *prefix;         /* of every key, "/relay/" */
    const char                 *ca;             /* files; NULL: plaintext */
    const char                 *cert;
    const char                 *key;
    int                         lease_ms;       /* of this replica's keys */
    int                         timeout_ms;     /* of a call to etcd */
    const char                 *replica;        /* this replica's name */
    const char                 *listen;
} ctld_store_etcd_conf_t;


/*
 * A part of the key space (under the prefix) someone else keeps: the
 * store's watch hands it the puts and deletes of its keys (rest: the key
 * after prefix and sub).  A full read (the first, and after the watch
 * lost its place) is framed by sync_begin() and sync_end(): what was not
 * put in between is gone.  tick(): the loop's, for retries.
 */

typedef struct {
    const char                 *sub;            /* "nodes/", ... */
    void                      (*put)(const char *rest,
                                     const ProtobufCBinaryData *value,
                                     int64_t lease);
    void                      (*del)(const char *rest);
    void                      (*sync_begin)(void);
    void                      (*sync_end)(void);
    void                      (*tick)(int64_t now);
} ctld_store_etcd_part_t;


void ctld_store_etcd_configure(const ctld_store_etcd_conf_t *conf);
void ctld_store_etcd_watch(const ctld_store_etcd_part_t *part);
const char *ctld_store_etcd_prefix(void);
int ctld_store_etcd_healthy(void);

/* this replica's lease (0: none now); granted() hears of each new one */
int64_t ctld_store_etcd_lease(void);
void ctld_store_etcd_on_lease(void (*granted)(int64_t lease));


#endif /* _CTLD_STORE_ETCD_H_INCLUDED_ */
