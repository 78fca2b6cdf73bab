/*
 * Copyright (C) The relay authors
 */


#ifndef _CTLD_NODE_H_INCLUDED_
#define _CTLD_NODE_H_INCLUDED_


#include <stddef.h>
#include <stdint.h>

#include "relay/control/v1/control.pb-c.h"
#include "relay_scope.h"
#include "ctld_fleet.h"
#include "ctld_server.h"
#include "ctld_stats.h"
#include "ctld_store.h"


#define CTLD_HELLO_TIMEOUT_MS 10000


typedef struct ctld_node_s   ctld_node_t;


struct ctld_node_s {
    char                       *id;
    char                       *peer;
    ctld_call_t                *session;      /* here; NULL: not here */
    char                       *replica;      /* that holds its session */
    unsigned                    remote:1;     /* another replica does */
    uint64_t                    incarnation;  /* of the session */
    int64_t                     connected_unix;
    int64_t                     last_seen_unix;
    uint64_t                    applied_version;
    uint64_t                    nacked_version;
    char                       *nack_reason;
    char                       *software;
    relay_scope_label_t        *labels;
    size_t                      nlabels;
    Relay__Control__V1__NodeStatus  *status;  /* the last one, in holder */
    ProtobufCMessage           *status_holder;
    ctld_stats_t               *stats;        /* statuses, for rates */
    uint64_t                    sent_version; /* the last policy sent */
    int64_t                     sent_ms;      /* ... and when */
};


/*
 * What the node side needs from the rest of controld, given at startup:
 * its settings, and where it reports what the admin side waits for (the
 * node side calls nothing there itself).
 */

typedef struct {
    int                         insecure;     /* ids from Hello alone */
    int                         status_timeout_ms;     /* 0: never */

    /* a node's result of a queue command; the callee owns m */
    void                      (*result)(const char *node_id,
                                        ctld_node_msg_t *m);

    /* a node's session ended: its commands get no result */
    void                      (*gone)(const char *node_id);

    /* a node's applied version, NACK or session changed, here or not */
    void                      (*changed)(ctld_node_t *n);
} ctld_node_conf_t;


/* Node.Session calls, for the server */
extern const ctld_service_t  ctld_node_service;

void ctld_node_init(const ctld_node_conf_t *conf);
void ctld_node_retarget(void);
uint64_t ctld_node_target(const ctld_node_t *n);
int ctld_node_connected(const ctld_node_t *n);
size_t ctld_node_count(void);
ctld_node_t *ctld_node_nth(size_t i);
ctld_node_t *ctld_node_find(const char *id);
size_t ctld_node_versions(uint64_t *version, size_t *nodes, size_t max,
    size_t *known);
int ctld_node_command(ctld_node_t *n, uint64_t id,
    Relay__Control__V1__QueueAction action, size_t n_ids, char **ids);
void ctld_node_free_all(void);

/* the fleet's side (ctld_fleet_conf_t) */
void ctld_node_remote_record(const char *id, ctld_node_record_t *r);
void ctld_node_remote_session(const char *id, ctld_session_record_t *s);
void ctld_node_remote_command(const char *node_id, const char *origin,
    ctld_command_t *cmd);


#endif /* _CTLD_NODE_H_INCLUDED_ */
