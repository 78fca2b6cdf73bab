/*
 * Copyright (C) The relay authors
 */


#ifndef _CTLD_FLEET_H_INCLUDED_
#define _CTLD_FLEET_H_INCLUDED_


#include "relay/control/v1/store.pb-c.h"


typedef Relay__Control__V1__NodeRecord      ctld_node_record_t;
typedef Relay__Control__V1__SessionRecord   ctld_session_record_t;
typedef Relay__Control__V1__Command         ctld_command_t;
typedef Relay__Control__V1__NodeMessage     ctld_node_msg_t;


/*
 * What the fleet's side reports, given by main(): other replicas' node
 * records and sessions (NULL: the record or session is gone), queue
 * commands for a node whose session is here (from another replica), and
 * results of this replica's commands run through another.  The callee
 * owns what it gets.
 */

typedef struct {
    void                      (*node)(const char *id, ctld_node_record_t *r);
    void                      (*session)(const char *id,
                                         ctld_session_record_t *s);
    void                      (*command)(const char *node_id,
                                         const char *origin,
                                         ctld_command_t *cmd);
    void                      (*result)(const char *node_id,
                                        ctld_node_msg_t *m);
} ctld_fleet_conf_t;


/* with the etcd store: start the fleet over it; else never called */
int ctld_fleet_init(const ctld_fleet_conf_t *conf, const char *replica,
    const char *listen);

/* 1: other replicas share this store (etcd); 0: this replica is alone */
int ctld_fleet_enabled(void);
const char *ctld_fleet_replica(void);

/* a node of this replica: its record, its session (NULL: ended) */
void ctld_fleet_node(const char *id, const ctld_node_record_t *r);
void ctld_fleet_session(const char *id, const ctld_session_record_t *s);

/* a queue command for a node of another replica; the result: a result() */
int ctld_fleet_command(const char *node_id, const ctld_command_t *cmd);

/* a node here answered origin's command */
void ctld_fleet_answer(const char *origin, const char *node_id,
    const ctld_node_msg_t *m);

/* origin's command is over (answered, timed out): its keys go */
void ctld_fleet_forget(const char *node_id, uint64_t cmd_id);


#endif /* _CTLD_FLEET_H_INCLUDED_ */
