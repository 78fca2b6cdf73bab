/*
 * Copyright (C) The relay authors
 */


#ifndef _CTLD_NODE_H_INCLUDED_
#define _CTLD_NODE_H_INCLUDED_


#include <stddef.h>
#include <stdint.h>

#include "relay/control/v1/control.pb-c.h"
#include "ctld_server.h"
#include "ctld_store.h"


#define CTLD_HELLO_TIMEOUT_MS 10000


typedef Relay__Control__V1__NodeMessage     ctld_node_msg_t;

typedef struct ctld_node_s   ctld_node_t;
typedef struct ctld_cmd_s    ctld_cmd_t;


/* a command waiting for its turn on a session */
struct ctld_cmd_s {
    ctld_cmd_t                 *next;
    uint64_t                    id;
    grpc_byte_buffer           *wire;
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


/* what the node side needs from the configuration, given at startup */

typedef struct {
    int                         insecure;     /* ids from Hello alone */
    int                         status_timeout_ms;     /* 0: never */
} ctld_node_conf_t;


void ctld_node_init(const ctld_node_conf_t *conf);
void ctld_node_accept(ctld_call_t *c);
void ctld_node_received(ctld_call_t *c, grpc_byte_buffer *bb);
void ctld_node_sent(ctld_call_t *c, int ok);
void ctld_node_closed(ctld_call_t *c);
void ctld_node_end(ctld_call_t *c, grpc_status_code status, const char *msg);
void ctld_node_tick(int64_t now);
size_t ctld_node_fanout(ctld_version_t *v);
size_t ctld_node_count(void);
ctld_node_t *ctld_node_nth(size_t i);
ctld_node_t *ctld_node_find(const char *id);
int ctld_node_command(ctld_node_t *n, uint64_t id,
    Relay__Control__V1__QueueAction action, size_t n_ids, char **ids);
void ctld_node_free_all(void);


#endif /* _CTLD_NODE_H_INCLUDED_ */
