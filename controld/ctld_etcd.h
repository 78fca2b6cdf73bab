/*
 * Copyright (C) The relay authors
 */


#ifndef _CTLD_ETCD_H_INCLUDED_
#define _CTLD_ETCD_H_INCLUDED_


#include <stddef.h>
#include <stdint.h>

#include <grpc/grpc.h>
#include <protobuf-c/protobuf-c.h>

#include "etcd/etcdserverpb/rpc.pb-c.h"


#define CTLD_ETCD_RANGE      "/etcdserverpb.KV/Range"
#define CTLD_ETCD_PUT        "/etcdserverpb.KV/Put"
#define CTLD_ETCD_DELETE     "/etcdserverpb.KV/DeleteRange"
#define CTLD_ETCD_TXN        "/etcdserverpb.KV/Txn"
#define CTLD_ETCD_WATCH      "/etcdserverpb.Watch/Watch"
#define CTLD_ETCD_GRANT      "/etcdserverpb.Lease/LeaseGrant"
#define CTLD_ETCD_REVOKE     "/etcdserverpb.Lease/LeaseRevoke"
#define CTLD_ETCD_KEEPALIVE  "/etcdserverpb.Lease/LeaseKeepAlive"


typedef struct ctld_etcd_stream_s  ctld_etcd_stream_t;


typedef struct {
    char                      **endpoints;      /* "host:port" */
    size_t                      nendpoints;
    char                       *ca;             /* PEM; NULL: plaintext */
    char                       *cert;           /* PEM, with key; or NULL */
    char                       *key;
    int                         timeout_ms;     /* of a unary call */
} ctld_etcd_conf_t;


/*
 * The end of a unary call: resp (the callee frees it) when status is OK,
 * else NULL and why.
 */
typedef void (*ctld_etcd_done_pt)(void *data, grpc_status_code status,
    const char *details, ProtobufCMessage *resp);

/* a message of a stream (the callee frees it), and the stream's end */
typedef void (*ctld_etcd_recv_pt)(void *data, ProtobufCMessage *m);
typedef void (*ctld_etcd_end_pt)(void *data, grpc_status_code status,
    const char *details);


int ctld_etcd_init(const ctld_etcd_conf_t *conf);
void ctld_etcd_start(grpc_completion_queue *cq);
void ctld_etcd_stop(void);
unsigned ctld_etcd_busy(void);
const char *ctld_etcd_endpoint(void);             /* the one in use */
void ctld_etcd_close(void);

int ctld_etcd_call(const char *method, const ProtobufCMessage *req,
    const ProtobufCMessageDescriptor *resp, ctld_etcd_done_pt done,
    void *data);

int ctld_etcd_txn(const Etcdserverpb__TxnRequest *txn,
    ctld_etcd_done_pt done, void *data);

ctld_etcd_stream_t *ctld_etcd_stream(const char *method,
    const ProtobufCMessageDescriptor *resp, ctld_etcd_recv_pt recv,
    ctld_etcd_end_pt end, void *data);
int ctld_etcd_send(ctld_etcd_stream_t *s, const ProtobufCMessage *m);
void ctld_etcd_cancel(ctld_etcd_stream_t *s);

void ctld_etcd_op(Etcdserverpb__RequestOp *op,
    Etcdserverpb__RequestOp__RequestCase kind, void *request);
int ctld_etcd_pack(const ProtobufCMessage *m, ProtobufCBinaryData *out);
void ctld_etcd_ignore(void *data, grpc_status_code status,
    const char *details, ProtobufCMessage *resp);
void ctld_etcd_compare(Etcdserverpb__Compare *cmp, const char *key,
    Etcdserverpb__Compare__CompareTarget target, int64_t value);

/* "key" + 1 in its last byte: the end of the range of keys with prefix */
void ctld_etcd_prefix_end(const char *prefix, ProtobufCBinaryData *end);


#endif /* _CTLD_ETCD_H_INCLUDED_ */
