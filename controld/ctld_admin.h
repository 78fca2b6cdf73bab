/*
 * Copyright (C) The relay authors
 */


#ifndef _CTLD_ADMIN_H_INCLUDED_
#define _CTLD_ADMIN_H_INCLUDED_


#include "ctld_node.h"
#include "ctld_server.h"


void ctld_admin_init(int command_timeout_ms);
void ctld_admin_handle(ctld_call_t *c);
void ctld_admin_tick(int64_t now);
void ctld_admin_result(const char *node_id, ctld_node_msg_t *m);
void ctld_admin_node_gone(const char *node_id);


#endif /* _CTLD_ADMIN_H_INCLUDED_ */
