/*
 * Copyright (C) The relay authors
 */


#ifndef _CTLD_H_INCLUDED_
#define _CTLD_H_INCLUDED_


/*
 * controld's shared types.  One thread runs everything: the completion
 * queue loop (ctld_server.c) hands every event to ctld_call_advance(), which
 * moves one call along; node sessions (ctld_node.c), admin calls
 * (ctld_admin.c), the version store (ctld_store.c), peer identities
 * (ctld_auth.c) and the byte buffer codec (ctld_codec.c) are plain
 * functions called from there.  Nothing here is thread-safe, nor needs be.
 */


#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/support/alloc.h>

#include "relay/control/v1/control.pb-c.h"
#include "relay_policy.h"


#define CTLD_MAX_MESSAGE      (4 * 1024 * 1024)
#define CTLD_TICK_MS          200
#define CTLD_HELLO_TIMEOUT_MS 10000


typedef Relay__Control__V1__NodeMessage     ctld_node_msg_t;
typedef Relay__Control__V1__CommandResult   ctld_result_t;


typedef struct {
    const char                 *listen;
    const char                 *data_dir;
    const char                 *ca;
    const char                 *cert;
    const char                 *key;
    int                         insecure;
    int                         command_timeout_ms;
    int                         status_timeout_ms;     /* 0: never */
} ctld_conf_t;


/* ------------------------------------------------------------ store */

typedef struct {
    uint64_t                    version;
    uint64_t                    rolled_back_from;
    relay_policy_t             *policy;               /* stamped, validated */
    grpc_slice                  wire;                 /* ControlMessage */
    unsigned                    wire_ready:1;
} ctld_version_t;


/* ------------------------------------------------------------ calls */

typedef enum {
    CTLD_M_SESSION = 0,
    CTLD_M_APPLY,
    CTLD_M_GET,
    CTLD_M_HISTORY,
    CTLD_M_ROLLBACK,
    CTLD_M_LIST_NODES,
    CTLD_M_QUEUE,
    CTLD_M_N
} ctld_method_e;


typedef enum {
    CTLD_OP_REQUEST = 0,        /* grpc_server_request_registered_call */
    CTLD_OP_RECV,               /* RECV_MESSAGE */
    CTLD_OP_SEND,               /* SEND_MESSAGE (+ initial metadata) */
    CTLD_OP_CLOSE,              /* RECV_CLOSE_ON_SERVER */
    CTLD_OP_STATUS              /* SEND_STATUS_FROM_SERVER (+ message) */
} ctld_op_e;


typedef enum {
    CTLD_CALL_REQUESTED = 0,    /* waiting for a client */
    CTLD_CALL_HELLO,            /* session: waiting for Hello */
    CTLD_CALL_ACTIVE,           /* session: streaming */
    CTLD_CALL_WAITING,          /* admin Queue: waiting for nodes */
    CTLD_CALL_FINISHING,        /* status sent or pending; no new work */
    CTLD_CALL_DONE              /* every batch reaped: freed */
} ctld_call_state_e;


typedef struct ctld_call_s   ctld_call_t;
typedef struct ctld_node_s   ctld_node_t;
typedef struct ctld_cmd_s    ctld_cmd_t;
typedef struct ctld_wait_s   ctld_wait_t;


/* the tag of one kind of batch; the call owns one of each */
typedef struct {
    ctld_call_t                *call;
    ctld_op_e                   op;
} ctld_tag_t;


struct ctld_cmd_s {
    ctld_cmd_t                 *next;
    uint64_t                    id;
    grpc_byte_buffer           *wire;
};


struct ctld_call_s {
    ctld_method_e               method;
    ctld_call_state_e           state;
    grpc_call                  *call;
    gpr_timespec                deadline;
    grpc_metadata_array         request_md;
    grpc_byte_buffer           *request;      /* unary payload */
    grpc_byte_buffer           *recv_buf;
    grpc_byte_buffer           *send_buf;
    int                         cancelled;    /* RECV_CLOSE_ON_SERVER */
    unsigned                    refs;         /* batches in flight */

    unsigned                    md_sent:1;
    unsigned                    sending:1;
    unsigned                    recving:1;
    unsigned                    status_sent:1;
    unsigned                    want_status:1;
    unsigned                    ended:1;

    grpc_status_code            status;
    grpc_slice                  details;      /* of the status */

    ctld_tag_t                  tag_request;
    ctld_tag_t                  tag_recv;
    ctld_tag_t                  tag_send;
    ctld_tag_t                  tag_close;
    ctld_tag_t                  tag_status;

    char                       *peer;
    char                        who[160];     /* "node:x", "operator:y" */
    const char                 *name;         /* into who, after ':' */

    /* node sessions */
    ctld_call_t                *prev;
    ctld_call_t                *next;
    ctld_node_t                *node;
    int64_t                     hello_deadline;
    int64_t                     last_msg_ms;
    uint64_t                    pending_version;   /* coalesced, 0: none */
    ctld_cmd_t                 *cmd_head;
    ctld_cmd_t                 *cmd_tail;

    /* admin Queue */
    ctld_wait_t                *wait;
};


struct ctld_node_s {
    char                       *id;
    char                       *peer;
    ctld_call_t                *session;      /* NULL: disconnected */
    int64_t                     connected_unix;
    int64_t                     last_seen_unix;
    uint64_t                    applied_version;
    uint64_t                    nacked_version;
    char                       *nack_reason;
    ctld_node_msg_t            *status_msg;   /* holds the last status */
};


/* controld.c */
extern ctld_conf_t   ctld_conf;

void ctld_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int64_t ctld_now_ms(void);
char *ctld_strdup(const char *s);

/* ctld_codec.c: the only code that turns byte buffers into protobuf-c */
ProtobufCMessage *ctld_codec_unpack(const ProtobufCMessageDescriptor *d,
    grpc_byte_buffer *bb, char *err, size_t errlen);
grpc_slice ctld_codec_pack_slice(const ProtobufCMessage *m);
grpc_byte_buffer *ctld_codec_pack(const ProtobufCMessage *m);

/* ctld_store.c */
int ctld_store_open(const char *dir);
void ctld_store_close(void);
size_t ctld_store_count(void);
ctld_version_t *ctld_store_nth(size_t i);         /* 0: oldest */
ctld_version_t *ctld_store_current(void);         /* NULL: none yet */
ctld_version_t *ctld_store_get(uint64_t version);
uint64_t ctld_store_next_version(void);
ctld_version_t *ctld_store_add(const relay_policy_t *p,
    uint64_t rolled_back_from, char *err, size_t errlen);
grpc_slice ctld_store_wire(ctld_version_t *v);

/* ctld_auth.c */
typedef enum {
    CTLD_ROLE_NONE = 0,
    CTLD_ROLE_NODE,
    CTLD_ROLE_OPERATOR
} ctld_role_e;

ctld_role_e ctld_auth_identify(ctld_call_t *c, char *err, size_t errlen);

/* ctld_server.c */
const char *ctld_method_name(ctld_method_e m);
int ctld_server_run(void);
void ctld_call_advance(ctld_tag_t *tag, int ok);
void ctld_call_reply(ctld_call_t *c, const ProtobufCMessage *m,
    grpc_status_code status, const char *msg);
int ctld_call_send(ctld_call_t *c, grpc_byte_buffer *bb);
int ctld_call_recv(ctld_call_t *c);
void ctld_call_finish(ctld_call_t *c, grpc_status_code status,
    const char *msg);
void ctld_call_enter(ctld_call_t *c, ctld_call_state_e st);

/* ctld_node.c */
void ctld_node_accept(ctld_call_t *c);
void ctld_node_received(ctld_call_t *c, grpc_byte_buffer *bb);
void ctld_node_sent(ctld_call_t *c, int ok);
void ctld_node_closed(ctld_call_t *c);
void ctld_node_end(ctld_call_t *c, grpc_status_code status, const char *msg);
size_t ctld_node_fanout(ctld_version_t *v);
void ctld_node_tick(int64_t now);
size_t ctld_node_count(void);
ctld_node_t *ctld_node_nth(size_t i);
ctld_node_t *ctld_node_find(const char *id);
int ctld_node_command(ctld_node_t *n, uint64_t id,
    Relay__Control__V1__QueueAction action, size_t n_ids, char **ids);
void ctld_node_free_all(void);

/* ctld_admin.c */
void ctld_admin_handle(ctld_call_t *c);
void ctld_admin_result(const char *node_id, ctld_node_msg_t *m);
void ctld_admin_node_gone(const char *node_id);
void ctld_admin_tick(int64_t now);


#endif /* _CTLD_H_INCLUDED_ */
