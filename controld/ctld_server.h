/*
 * Copyright (C) The relay authors
 */


#ifndef _CTLD_SERVER_H_INCLUDED_
#define _CTLD_SERVER_H_INCLUDED_


#include <stdint.h>

#include <grpc/grpc.h>
#include <grpc/byte_buffer.h>
#include <protobuf-c/protobuf-c.h>

#include "ctld_conf.h"


#define CTLD_TICK_MS          200


typedef enum {
    CTLD_M_SESSION = 0,
    CTLD_M_APPLY,
    CTLD_M_GET,
    CTLD_M_HISTORY,
    CTLD_M_ROLLBACK,
    CTLD_M_LIST_NODES,
    CTLD_M_QUEUE,
    CTLD_M_PROMOTE,
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
    CTLD_CALL_WAITING,          /* admin: waiting for nodes or the store */
    CTLD_CALL_FINISHING,        /* status sent or pending; no new work */
    CTLD_CALL_DONE              /* every batch reaped: freed */
} ctld_call_state_e;


typedef struct ctld_call_s   ctld_call_t;
typedef struct ctld_event_s  ctld_event_t;

typedef void (*ctld_event_pt)(ctld_event_t *ev, int ok);


/*
 * What the completion queue hands back: every tag is an event, whose
 * handler the loop calls.  The server's calls have theirs; the clients of
 * other servers (the etcd store) have their own, on the same queue.
 */

struct ctld_event_s {
    ctld_event_pt               handler;
    void                       *data;
};


/* the tag of one kind of batch; the call owns one of each */
typedef struct {
    ctld_event_t                ev;           /* first: the loop's view */
    ctld_call_t                *call;
    ctld_op_e                   op;
} ctld_tag_t;


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
    unsigned                    ended:1;      /* its service is done */

    grpc_status_code            status;
    grpc_slice                  details;      /* of the status */
    const char                 *error;        /* "relay-error" trailer */

    ctld_tag_t                  tag_request;
    ctld_tag_t                  tag_recv;
    ctld_tag_t                  tag_send;
    ctld_tag_t                  tag_close;
    ctld_tag_t                  tag_status;

    char                       *peer;
    char                        who[160];     /* "node:x", "operator:y" */
    const char                 *name;         /* into who, after ':' */

    /* node sessions (ctld_node.c); the server never looks at these */
    ctld_call_t                *prev;
    ctld_call_t                *next;
    struct ctld_node_s         *node;
    int64_t                     hello_deadline;
    int64_t                     last_msg_ms;
    uint64_t                    pending_version;   /* coalesced, 0: none */
    uint64_t                    sent_version;      /* last one sent */
    uint64_t                    incarnation;       /* of the Hello */
    struct ctld_cmd_s          *cmd_head;
    struct ctld_cmd_s          *cmd_tail;
    struct ctld_cmd_s          *forwarded;   /* sent for other replicas */

    /* admin calls (ctld_admin.c) */
    struct ctld_wait_s         *wait;
    struct ctld_apply_s        *apply;
};


/*
 * A service: what becomes of the calls of its methods once their caller
 * is identified.  The server calls a service only through these, which
 * main() hands it, one for Node.Session and one for the Admin methods; a
 * NULL member: nothing to do.
 */

typedef struct {
    void                      (*accept)(ctld_call_t *c);
    void                      (*received)(ctld_call_t *c,
                                          grpc_byte_buffer *bb);
    void                      (*read_ended)(ctld_call_t *c, int ok);
    void                      (*sent)(ctld_call_t *c, int ok);
    void                      (*cancelled)(ctld_call_t *c);
    void                      (*release)(ctld_call_t *c);
    void                      (*tick)(int64_t now);
} ctld_service_t;


/*
 * A client of other servers on the same completion queue (the etcd
 * store): started once the queue exists, ticked with the services, told
 * to stop at shutdown, and waited for until it has no call in flight.
 */

typedef struct {
    void                      (*start)(grpc_completion_queue *cq);
    void                      (*tick)(int64_t now);
    void                      (*stop)(void);
    unsigned                  (*busy)(void);
} ctld_client_t;


/*
 * Runs the server on conf's address and TLS files until SIGTERM or
 * SIGINT: 0, or -1 when it could not listen.  version: the current one,
 * for the log; node: the service of Node.Session, admin: of the Admin
 * methods; client: NULL, or a client to run on the queue.  grpc_init()
 * comes before, grpc_shutdown() after.
 */
int ctld_server_run(const ctld_conf_t *conf, uint64_t version,
    const ctld_service_t *node, const ctld_service_t *admin,
    const ctld_client_t *client);

const char *ctld_method_name(ctld_method_e m);
void ctld_call_enter(ctld_call_t *c, ctld_call_state_e st);

/* an event of the loop: handler(ev, ok) when its batch completes */
void ctld_event_set(ctld_event_t *ev, ctld_event_pt handler, void *data);

/* an integer channel argument */
void ctld_arg_int(grpc_arg *a, char *key, int value);

/* a file's contents, NUL-terminated (malloc()ed): NULL and a log line */
char *ctld_read_file(const char *path);

/* a unary answer: message (NULL on error) and status at once */
void ctld_call_reply(ctld_call_t *c, const ProtobufCMessage *m,
    grpc_status_code status, const char *msg);

/*
 * An error whose kind a client tells by the trailer "relay-error: kind"
 * (relayctl's exit codes): "store" when the store is unreachable.
 */
void ctld_call_fail(ctld_call_t *c, grpc_status_code status,
    const char *kind, const char *msg);

/* streams: one SEND_MESSAGE in flight; bb is the call's from now on */
int ctld_call_send(ctld_call_t *c, grpc_byte_buffer *bb);
int ctld_call_recv(ctld_call_t *c);
void ctld_call_finish(ctld_call_t *c, grpc_status_code status,
    const char *msg);


#endif /* _CTLD_SERVER_H_INCLUDED_ */
