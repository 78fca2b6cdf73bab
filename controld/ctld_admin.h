/*
 * Copyright (C) The relay authors
 */


#ifndef _CTLD_ADMIN_H_INCLUDED_
#define _CTLD_ADMIN_H_INCLUDED_


#include "ctld_node.h"
#include "ctld_server.h"


/* the Admin methods' calls, for the server */
extern const ctld_service_t  ctld_admin_service;

void ctld_admin_init(int command_timeout_ms);

/* what the node side reports (ctld_node_conf_t) */
void ctld_admin_node_result(const char *node_id, ctld_node_msg_t *m);
void ctld_admin_node_gone(const char *node_id);
void ctld_admin_node_changed(ctld_node_t *n);


#endif /* _CTLD_ADMIN_H_INCLUDED_ */
