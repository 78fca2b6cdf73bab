/*
 * Copyright (C) The relay authors
 */


/*
 * Peer identities.  TLS has already verified the client certificate against
 * our CA; the identity is its common name:
 *
 *   node:<node-id>       may call Node/Session only, as <node-id>
 *   operator:<name>      may call Admin methods only, as author <name>
 *
 * Anything else is refused.  In --insecure mode there is no certificate:
 * every caller is trusted, nodes are who their Hello says, the author is
 * "insecure".
 */


#include <stdio.h>
#include <string.h>

#include <grpc/grpc_security.h>

#include "ctld_auth.h"


ctld_role_e
ctld_auth_identify(ctld_call_t *c, int insecure, char *err, size_t errlen)
{
    size_t                       len, n, plen;
    const char                  *cn;
    grpc_auth_context           *ctx;
    const grpc_auth_property    *prop;
    grpc_auth_property_iterator  it;

    if (insecure) {
        if (c->method == CTLD_M_SESSION) {
            snprintf(c->who, sizeof(c->who), "node:");
            c->name = c->who + 5;
            return CTLD_ROLE_NODE;
        }

        snprintf(c->who, sizeof(c->who), "operator:insecure");
        c->name = c->who + 9;
        return CTLD_ROLE_OPERATOR;
    }

    ctx = grpc_call_auth_context(c->call);
    if (ctx == NULL) {
        snprintf(err, errlen, "no authenticated peer");
        return CTLD_ROLE_NONE;
    }

    it = grpc_auth_context_find_properties_by_name(ctx,
                                                   GRPC_X509_CN_PROPERTY_NAME);
    prop = grpc_auth_property_iterator_next(&it);

    if (prop == NULL) {
        grpc_auth_context_release(ctx);
        snprintf(err, errlen, "client certificate has no common name");
        return CTLD_ROLE_NONE;
    }

    n = prop->value_length;
    plen = n;
    if (n >= sizeof(c->who)) {
        n = sizeof(c->who) - 1;
    }

    memcpy(c->who, prop->value, n);
    c->who[n] = '\0';
    grpc_auth_context_release(ctx);

    cn = c->who;
    len = strlen(cn);

    if (len != plen || strchr(cn, '\n') != NULL) {
        snprintf(err, errlen, "unusable certificate common name");
        return CTLD_ROLE_NONE;
    }

    if (strncmp(cn, "node:", 5) == 0 && len > 5) {
        c->name = cn + 5;
        return CTLD_ROLE_NODE;
    }

    if (strncmp(cn, "operator:", 9) == 0 && len > 9) {
        c->name = cn + 9;
        return CTLD_ROLE_OPERATOR;
    }

    snprintf(err, errlen, "certificate \"%s\" is neither node:<id> nor "
             "operator:<name>", cn);

    return CTLD_ROLE_NONE;
}
