
/*
 * Copyright (C) The relay authors
 */


#ifndef _RELAY_POLICY_H_INCLUDED_
#define _RELAY_POLICY_H_INCLUDED_


/*
 * The fleet policy outside the wire: its human-readable text form (what
 * operators write, review and diff), its canonical rendering, and complete
 * validation.  Shared by controld, relayctl and the nginx module (which
 * validates every snapshot again before applying it), so it depends on
 * nothing but libc and protobuf-c, and allocates with malloc().
 *
 * Text form: one statement per line group, ended by ";", "#" comments.
 *
 *   comment "free text";
 *   route PATTERN HOP [HOP ...];
 *   backup_mx PATTERN HOP [HOP ...];
 *   fallback_relay HOP [HOP ...];
 *   retry PATTERN min=300s max=4000s lifetime=5d [delay_warning=4h];
 *   inbound_limit client_ip|auth_user|sender_domain|tenant MATCH window=1m
 *       [messages=N] [recipients=N] [scope=node|fleet];
 *   destination_limit PATTERN [connections=N] [messages_per_connection=N]
 *       [messages_per_minute=N] [messages_per_hour=N]
 *       [connections_per_minute=N]
 *       [backoff_reply="TEXT"] [backoff=10m]
 *       [scope=node|fleet] [per=pool|address];
 *   egress_pool NAME ehlo=HOST ADDRESS [weight=N] [ADDRESS [weight=N] ...];
 *   egress_pool NAME local;
 *   egress_rule sender_domain|auth_user|tenant MATCH POOL;
 *   tls PATTERN required|optional [verify];
 *   dkim DOMAIN selector=NAME key=PATH [algorithm=rsa-sha256|ed25519-sha256]
 *       [canonicalization=relaxed/relaxed] [headers=from:to:...]
 *       [expire=D] [fallback=envelope] [on_error=defer|send];
 *
 * Every statement but comment and fallback_relay may end with
 * "nodes=SELECTOR" (relay_scope.h), its scope: it applies to the nodes
 * the selector selects only.  "egress_pool NAME local" names a pool each node defines
 * in its nginx.conf (relay_egress_pool NAME), for egress rules to name.
 *
 * PATTERN: "*", "example.com" or ".example.com" (subdomains).  HOP: the
 * syntax of the relay_route directive, "[host]:port" (no MX lookup) or
 * "host:port" (MX of host), port optional.  Durations: N, Ns, Nm, Nh, Nd.
 */


#include <stddef.h>

#include "relay/control/v1/control.pb-c.h"
#include "relay_scope.h"


/* the message and its parts, by the names of their statements */

typedef Relay__Control__V1__Policy            relay_policy_t;
typedef Relay__Control__V1__Route             relay_policy_route_t;
typedef Relay__Control__V1__BackupMx          relay_policy_backup_mx_t;
typedef Relay__Control__V1__RetryPolicy       relay_policy_retry_t;
typedef Relay__Control__V1__InboundLimit      relay_policy_inbound_t;
typedef Relay__Control__V1__DestinationLimit  relay_policy_dest_t;
typedef Relay__Control__V1__EgressAddress     relay_policy_egress_addr_t;
typedef Relay__Control__V1__EgressPool        relay_policy_pool_t;
typedef Relay__Control__V1__EgressRule        relay_policy_rule_t;
typedef Relay__Control__V1__TlsPolicy         relay_policy_tls_t;
typedef Relay__Control__V1__DkimKey           relay_policy_dkim_t;


/*
 * Parses text into a new policy (free with relay_policy_free()).  On error
 * returns NULL and writes "NAME:LINE: what is wrong" into err.
 */
relay_policy_t *relay_policy_parse(const char *name, const char *text,
    size_t len, char *err, size_t errlen);

/*
 * Appends one statement given as words, words[0] its name ("route",
 * "tls", ...): what nginx.conf's directives hand over, already split and
 * unquoted.  A word's first "=" makes it a parameter.  Returns 0, or -1
 * with "STATEMENT: what is wrong" in err (the parser's message, without a
 * place) and p as it was.  Parsing only: validate p afterwards.
 */
int relay_policy_add(relay_policy_t *p, char *const *words, size_t n,
    char *err, size_t errlen);

/*
 * Checks everything a node relies on.  Returns 0, or -1 with
 * "FIELD: why" in err, FIELD a path such as "routes[2].next_hops[0]".
 */
int relay_policy_validate(const relay_policy_t *p, char *err, size_t errlen);

/*
 * The same checks but one: egress rules may name pools the policy does
 * not hold yet.  For a policy put together statement by statement (the
 * pool may come later), validated whole once complete.
 */
int relay_policy_validate_draft(const relay_policy_t *p, char *err,
    size_t errlen);


/*
 * The policy as node sees it, in place: statements whose scope does not
 * select it go, the others lose their scope.  own[]: the names of the
 * node's nginx.conf pools, which local pools must be.  Returns 0, or -1
 * with "FIELD: why" in err, FIELD as the policy was written (two
 * statements that both apply with one key, a rule naming a pool that does
 * not apply here, a local pool the node lacks), p unchanged.
 */
int relay_policy_for_node(relay_policy_t *p, const relay_scope_node_t *node,
    char *const *own, size_t nown, char *err, size_t errlen);


/* a next hop, split: "[host]:port" is used as is, "host:port" means MX */

typedef struct {
    const char               *host;        /* into the hop's text */
    size_t                    host_len;
    unsigned                  port;        /* 0: none given */
    unsigned                  mx:1;        /* no brackets: MX of host */
} relay_policy_hop_t;

/*
 * Splits hop text s ("[192.0.2.1]:25", "mx.example.com") into hop and
 * checks it as validation does: NULL, or why it is not a hop.
 */
const char *relay_policy_hop(const char *s, relay_policy_hop_t *hop);

/*
 * The canonical text form (malloc()ed, NUL-terminated): statements in a
 * fixed order, durations in their largest exact unit, so that two equal
 * policies render identically and relay_policy_parse(render(p)) == p.
 * Version, author and creation time appear as leading "#" comments.
 */
char *relay_policy_render(const relay_policy_t *p);

/* an empty policy, for relay_policy_add(); NULL on allocation failure */
relay_policy_t *relay_policy_new(void);

/* a deep copy through pack/unpack; NULL on allocation failure */
relay_policy_t *relay_policy_copy(const relay_policy_t *p);

void relay_policy_free(relay_policy_t *p);


#endif /* _RELAY_POLICY_H_INCLUDED_ */
