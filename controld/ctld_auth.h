/*
 * Copyright (C) The relay authors
 */


#ifndef _CTLD_AUTH_H_INCLUDED_
#define _CTLD_AUTH_H_INCLUDED_


#include <stddef.h>

#include "ctld_server.h"


typedef enum {
    CTLD_ROLE_NONE = 0,
    CTLD_ROLE_NODE,
    CTLD_ROLE_OPERATOR
} ctld_role_e;


/*
 * Who calls, from the client certificate: fills c->who and c->name.
 * Insecure: no certificate, every caller trusted for the method it calls.
 */
ctld_role_e ctld_auth_identify(ctld_call_t *c, int insecure, char *err,
    size_t errlen);


#endif /* _CTLD_AUTH_H_INCLUDED_ */
