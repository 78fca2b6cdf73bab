
/*
 * Copyright (C) The relay authors
 */


/*
 * lib/relay_policy.c and lib/relay_diff.c: parse errors (message and
 * line), validation errors (field path) for every rule, canonical
 * rendering and its round trip, copies, statements given as words (as
 * nginx.conf's directives give them) against the same text, drafts, hops,
 * diffs, and the bounds that keep validation linear (cases from an outside
 * fuzzing run in tests/unit-policy/data, RELAY_POLICY_DATA).
 */


#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "relay_policy.h"
#include "relay_diff.h"


typedef struct {
    const char  *text;
    const char  *error;               /* NULL: parses */
} t_case_t;


static int  t_passed;
static int  t_failed;


static void
t_check(int ok, const char *what, const char *text, const char *got,
    const char *want)
{
    if (ok) {
        t_passed++;
        return;
    }

    t_failed++;
    printf("FAIL %s\n  input: %s\n  got:   %s\n  want:  %s\n", what,
           text, got ? got : "(null)", want ? want : "(null)");
}


/* ---------------------------------------------------------------- parse */


static const t_case_t  t_parse[] = {
    { "route example.com [mx.example.net]:25;", NULL },
    { "", NULL },
    { "# only a comment\n", NULL },
    { "frob x;", "t.policy:1: unknown statement \"frob\"" },
    { "\n\n  frob x;", "t.policy:3: unknown statement \"frob\"" },
    { "x=1;", "t.policy:1: unknown statement \"x=1\"" },
    { "route example.com;", "t.policy:1: route: missing argument" },
    { "route;", "t.policy:1: route: missing argument" },
    { "backup_mx *;", "t.policy:1: backup_mx: missing argument" },
    { "fallback_relay;", "t.policy:1: fallback_relay: missing argument" },
    { "route a.com\n  [b.com];\nroute x.com b.com", 
      "t.policy:3: missing \";\" at the end of \"route\"" },
    { ";", "t.policy:1: empty statement" },
    { "comment \"abc", "t.policy:1: unterminated string" },
    { "comment \"abc\ndef\";", "t.policy:1: unterminated string" },
    { "comment \"a\\nb\";",
      "t.policy:1: bad escape in string (only \\\" and \\\\)" },
    { "comment \"a\tb\";", "t.policy:1: control character in string" },
    { "comment a\001b;", "t.policy:1: control character" },
    { "comment \"x\";\ncomment \"y\";", "t.policy:2: duplicate comment" },
    { "comment;", "t.policy:1: comment: missing argument" },
    { "comment a b;", "t.policy:1: comment: unexpected argument \"b\"" },
    { "comment a x=1;", "t.policy:1: comment: unexpected argument \"x=1\"" },
    { "route a.com b.com x=1;",
      "t.policy:1: route: unexpected parameter \"x=1\"" },
    { "retry * min=5m max=1h;",
      "t.policy:1: retry: missing parameter \"lifetime=\"" },
    { "retry min=5m max=1h lifetime=1d;", "t.policy:1: retry: missing argument" },
    { "retry * 5m;", "t.policy:1: retry: unexpected argument \"5m\"" },
    { "retry * min=5m max=1h lifetime=1d extra;",
      "t.policy:1: retry: unexpected argument \"extra\"" },
    { "retry * min=5x max=1h lifetime=1d;",
      "t.policy:1: retry: bad duration \"5x\"" },
    { "retry * min= max=1h lifetime=1d;",
      "t.policy:1: retry: bad duration \"\"" },
    { "retry * min=1ms max=1h lifetime=1d;",
      "t.policy:1: retry: bad duration \"1ms\"" },
    { "retry * min=5m max=50000d lifetime=1d;",
      "t.policy:1: retry: bad duration \"50000d\"" },
    { "retry * min=5m max=4294967296 lifetime=1d;",
      "t.policy:1: retry: bad duration \"4294967296\"" },
    { "retry * min=5m max=1h lifetime=1d\n  ttl=3;",
      "t.policy:2: retry: unknown parameter \"ttl\"" },
    { "retry * min=5m min=1h max=1h lifetime=1d;",
      "t.policy:1: retry: duplicate parameter \"min\"" },
    { "inbound_limit client_ip * window=1m messages=x;",
      "t.policy:1: inbound_limit: bad number \"x\"" },
    { "inbound_limit client_ip * window=1m messages=-1;",
      "t.policy:1: inbound_limit: bad number \"-1\"" },
    { "inbound_limit peer * window=1m messages=1;",
      "t.policy:1: inbound_limit: unknown key \"peer\" (client_ip, "
      "auth_user, sender_domain or tenant)" },
    { "inbound_limit tenant acme window=1m messages=1 scope=fleet;", NULL },
    { "inbound_limit client_ip * window=1m messages=1 scope=cluster;",
      "t.policy:1: inbound_limit: bad scope \"cluster\" (node or fleet)" },
    { "inbound_limit client_ip * window=1m messages=1 scope=node "
      "scope=fleet;",
      "t.policy:1: inbound_limit: duplicate parameter \"scope\"" },
    { "destination_limit * messages_per_minute=1 scope=fleet per=ip;",
      "t.policy:1: destination_limit: bad per \"ip\" (pool or address)" },
    { "inbound_limit client_ip * messages=1;",
      "t.policy:1: inbound_limit: missing parameter \"window=\"" },
    { "inbound_limit client_ip window=1m;",
      "t.policy:1: inbound_limit: missing argument" },
    { "destination_limit * connections=1 rate=2;",
      "t.policy:1: destination_limit: unknown parameter \"rate\"" },
    { "destination_limit * backoff_reply=\"a \\\"b\\\" \\\\ c\" backoff=1m;",
      NULL },
    { "egress_pool p;", "t.policy:1: egress_pool: missing parameter \"ehlo=\"" },
    { "egress_pool p ehlo=a.com;", "t.policy:1: egress_pool: missing argument" },
    { "egress_pool ehlo=a.com 192.0.2.1;",
      "t.policy:1: egress_pool: missing argument" },
    { "egress_pool p ehlo=a.com weight=2 192.0.2.1;",
      "t.policy:1: egress_pool: \"weight=\" before any address" },
    { "egress_pool p ehlo=a.com 192.0.2.1 weight=2 weight=3;",
      "t.policy:1: egress_pool: duplicate parameter \"weight\"" },
    { "egress_pool p ehlo=a.com 192.0.2.1 weight=w;",
      "t.policy:1: egress_pool: bad number \"w\"" },
    { "egress_pool p ehlo=a.com ehlo=b.com 192.0.2.1;",
      "t.policy:1: egress_pool: duplicate parameter \"ehlo\"" },
    { "egress_pool p ehlo=a.com 192.0.2.1 mtu=1;",
      "t.policy:1: egress_pool: unknown parameter \"mtu\"" },
    { "egress_rule tenant t;", "t.policy:1: egress_rule: missing argument" },
    { "egress_rule tenant t p q;",
      "t.policy:1: egress_rule: unexpected argument \"q\"" },
    { "egress_rule ip t p;",
      "t.policy:1: egress_rule: unknown key \"ip\" (sender_domain, "
      "auth_user or tenant)" },
    { "tls *;", "t.policy:1: tls: missing argument" },
    { "tls * maybe;",
      "t.policy:1: tls: expected \"required\" or \"optional\", got \"maybe\"" },
    { "tls * required check;", "t.policy:1: tls: unexpected argument \"check\"" },
    { "tls * required verify more;",
      "t.policy:1: tls: unexpected argument \"more\"" },
    { "tls * required verify=1;",
      "t.policy:1: tls: unexpected parameter \"verify=1\"" },
    { "dkim example.com key=/k.pem;",
      "t.policy:1: dkim: missing parameter \"selector=\"" },
    { "dkim example.com selector=s;",
      "t.policy:1: dkim: missing parameter \"key=\"" },
    { "dkim selector=s key=/k.pem;", "t.policy:1: dkim: missing argument" },
    { "dkim a.com selector=s key=/k.pem bits=2048;",
      "t.policy:1: dkim: unknown parameter \"bits\"" },
    { "dkim a.com selector=s key=/k.pem expire=1w;",
      "t.policy:1: dkim: bad duration \"1w\"" },
    { "route \"a;b\" [x]; # a comment ; with ;\nfrob;",
      "t.policy:2: unknown statement \"frob\"" },
    { NULL, NULL }
};


/* ---------------------------------------------------------------- validate */


static const t_case_t  t_validate[] = {
    { "comment \"\303\251t\303\251 2024\";\n"
      "route example.com [mx.example.net]:2525 [192.0.2.1] [2001:db8::1]:25;\n"
      "route .example.org relay.example.net relay2.example.net:587;\n"
      "route * [smarthost.example.net];\n"
      "backup_mx example.com [backup.example.net]:25;\n"
      "fallback_relay [fallback.example.net]:2525;\n"
      "retry * min=5m max=1h lifetime=5d delay_warning=4h;\n"
      "retry .example.org min=1m max=1m lifetime=1m;\n"
      "inbound_limit client_ip 10.0.0.0/8 window=1m messages=100;\n"
      "inbound_limit client_ip 2001:db8::/32 window=1m recipients=5;\n"
      "inbound_limit client_ip 192.0.2.9 window=1m recipients=5;\n"
      "inbound_limit client_ip * window=1h messages=1000;\n"
      "inbound_limit auth_user alice@example.com window=1d messages=10;\n"
      "inbound_limit sender_domain .example.com window=1m messages=10;\n"
      "destination_limit .gmail.com connections=10 "
      "backoff_reply=\"rate limited\" backoff=10m;\n"
      "destination_limit * connections=50;\n"
      "inbound_limit tenant acme window=1h messages=1000 scope=fleet;\n"
      "inbound_limit auth_user * window=1h messages=100 scope=node;\n"
      "destination_limit .outlook.com messages_per_minute=100 scope=fleet "
      "per=address;\n"
      "destination_limit .yahoo.com messages_per_hour=1000 scope=fleet;\n"
      "egress_pool bulk ehlo=bulk.example.com 192.0.2.10 weight=3 "
      "2001:db8::10;\n"
      "egress_pool main ehlo=mail.example.com 192.0.2.11 weight=0;\n"
      "egress_rule sender_domain .example.com bulk;\n"
      "egress_rule auth_user bob main;\n"
      "egress_rule tenant acme main;\n"
      "tls .example.com required verify;\n"
      "tls * optional;\n"
      "dkim example.com selector=s2026 key=/etc/relay/dkim/example.pem;\n"
      "dkim example.com selector=ed key=/etc/relay/dkim/ed.pem "
      "algorithm=ed25519-sha256 canonicalization=simple/relaxed "
      "headers=from:to:subject expire=7d fallback=envelope "
      "on_error=send;\n", NULL },

    /* dkim */

    { "dkim Example.com selector=s key=/k;",
      "dkim[0].domain: must be lowercase" },
    { "dkim a.com selector=s_1 key=/k;",
      "dkim[0].selector: invalid character in name" },
    { "dkim a.com selector=s key=k.pem;",
      "dkim[0].key_file: not an absolute path" },
    { "dkim a.com selector=s key=/k algorithm=rsa-sha1;",
      "dkim[0].algorithm: \"rsa-sha1\" is neither rsa-sha256 nor "
      "ed25519-sha256" },
    { "dkim a.com selector=s key=/k canonicalization=relaxed;",
      "dkim[0].canonicalization: \"relaxed\" is not "
      "relaxed|simple/relaxed|simple" },
    { "dkim a.com selector=s key=/k headers=to:subject;",
      "dkim[0].headers: must sign \"from\"" },
    { "dkim a.com selector=s key=/k headers=From:to;",
      "dkim[0].headers: lowercase header names separated by \":\"" },
    { "dkim a.com selector=s key=/k headers=from::to;",
      "dkim[0].headers: empty header name" },
    { "dkim a.com selector=s key=/k fallback=from;",
      "dkim[0].fallback: \"from\" is not \"envelope\"" },
    { "dkim a.com selector=s key=/k on_error=accept;",
      "dkim[0].on_error: \"accept\" is neither defer nor send" },
    { "dkim a.com selector=s key=/k;\ndkim a.com selector=s key=/j;",
      "dkim[1]: domain a.com selector s is already dkim[0]" },

    { "comment \"x\";", NULL },

    /* patterns */

    { "route Example.com [x.net];", "routes[0].pattern: must be lowercase" },
    { "route \"\" [x.net];", "routes[0].pattern: empty pattern" },
    { "route *.example.com [x.net];",
      "routes[0].pattern: \"*\" only alone; \".example.com\" matches "
      "subdomains" },
    { "route a..b [x.net];", "routes[0].pattern: empty label in name" },
    { "route .a.com. [x.net];", "routes[0].pattern: empty label in name" },
    { "route -a.com [x.net];", "routes[0].pattern: label starts with \"-\"" },
    { "route a-.com [x.net];", "routes[0].pattern: label ends with \"-\"" },
    { "route a_b.com [x.net];", "routes[0].pattern: invalid character in name" },
    { "route aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.com"
      " [x.net];", "routes[0].pattern: label longer than 63 characters" },
    { "route a.com [x.net];\nroute b.com [x.net];\nroute a.com [y.net];",
      "routes[2].pattern: \"a.com\" duplicates routes[0]" },

    /* hops */

    { "route a.com b.com [c.com]:x;",
      "routes[0].next_hops[1]: \"[c.com]:x\": port is not a number" },
    { "route a.com b.com:0;",
      "routes[0].next_hops[0]: \"b.com:0\": port out of range 1..65535" },
    { "route a.com b.com:65536;",
      "routes[0].next_hops[0]: \"b.com:65536\": port out of range 1..65535" },
    { "route a.com b.com:;",
      "routes[0].next_hops[0]: \"b.com:\": empty port" },
    { "route a.com [b.com;",
      "routes[0].next_hops[0]: \"[b.com\": missing \"]\"" },
    { "route a.com []:25;", "routes[0].next_hops[0]: \"[]:25\": empty host" },
    { "route a.com :25;", "routes[0].next_hops[0]: \":25\": empty host" },
    { "route a.com [b.com]x;",
      "routes[0].next_hops[0]: \"[b.com]x\": expected \":port\" after \"]\"" },
    { "route a.com 192.0.2.1:25;",
      "routes[0].next_hops[0]: \"192.0.2.1:25\": an IP address needs "
      "brackets: \"[192.0.2.1]:25\"" },
    { "route a.com [2001:db8::g];",
      "routes[0].next_hops[0]: \"[2001:db8::g]\": invalid IPv6 address" },
    { "route a.com [B.com];",
      "routes[0].next_hops[0]: \"[B.com]\": must be lowercase" },
    { "route a.com b.com [b.com] b.com;",
      "routes[0].next_hops[2]: \"b.com\" duplicates routes[0].next_hops[0]" },
    { "backup_mx a.com [b.com]:99999;",
      "backup_mx[0].hosts[0]: \"[b.com]:99999\": port out of range 1..65535" },
    { "backup_mx A.com b.com;", "backup_mx[0].pattern: must be lowercase" },
    { "backup_mx a.com b.com;\nbackup_mx a.com c.com;",
      "backup_mx[1].pattern: \"a.com\" duplicates backup_mx[0]" },
    { "fallback_relay [a.com] b_c.com;",
      "fallback_relay[1]: \"b_c.com\": invalid character in name" },

    /* retry */

    { "retry * min=0 max=1h lifetime=1d;",
      "retry[0].backoff_min_s: must be greater than 0" },
    { "retry * min=1h max=5m lifetime=1d;",
      "retry[0].backoff_max_s: 300s is less than backoff_min_s (3600s)" },
    { "retry * min=1h max=2h lifetime=30m;",
      "retry[0].lifetime_s: 1800s is less than backoff_min_s (3600s)" },
    { "retry * min=1m max=2h lifetime=1d delay_warning=1d;",
      "retry[0].delay_warning_s: 86400s is not less than lifetime_s "
      "(86400s)" },
    { "retry .a.com min=1m max=1h lifetime=1d;\n"
      "retry .a.com min=1m max=1h lifetime=1d;",
      "retry[1].pattern: \".a.com\" duplicates retry[0]" },
    { "retry a..com min=1m max=1h lifetime=1d;",
      "retry[0].pattern: empty label in name" },

    /* inbound limits */

    { "inbound_limit client_ip 10.0.0.1/8 window=1m messages=1;",
      "inbound_limits[0].match: host bits set after the prefix length" },
    { "inbound_limit client_ip 10.0.0.0/33 window=1m messages=1;",
      "inbound_limits[0].match: bad prefix length" },
    { "inbound_limit client_ip 10.0.0.0/ window=1m messages=1;",
      "inbound_limits[0].match: bad prefix length" },
    { "inbound_limit client_ip 10.0.0/8 window=1m messages=1;",
      "inbound_limits[0].match: not an address or CIDR network" },
    { "inbound_limit client_ip example.com window=1m messages=1;",
      "inbound_limits[0].match: not an address or CIDR network" },
    { "inbound_limit client_ip 2001:db8::1/32 window=1m messages=1;",
      "inbound_limits[0].match: host bits set after the prefix length" },
    { "inbound_limit client_ip * window=0 messages=1;",
      "inbound_limits[0].window_s: must be greater than 0" },
    { "inbound_limit client_ip * window=1m;",
      "inbound_limits[0]: neither messages nor recipients is limited" },
    { "inbound_limit auth_user \"a b\" window=1m messages=1;",
      "inbound_limits[0].match: invalid character" },
    { "inbound_limit sender_domain Example.com window=1m messages=1;",
      "inbound_limits[0].match: must be lowercase" },
    { "inbound_limit client_ip * window=1m messages=1;\n"
      "inbound_limit auth_user * window=1m messages=1;\n"
      "inbound_limit client_ip * window=1h messages=1;",
      "inbound_limits[2].match: \"*\" duplicates inbound_limits[0]" },

    { "inbound_limit tenant \"a b\" window=1m messages=1;",
      "inbound_limits[0].match: invalid character" },

    /* destination limits */

    { "destination_limit a.com connections=1 scope=fleet;",
      "destination_limits[0].scope: fleet needs messages_per_minute or "
      "messages_per_hour" },
    { "destination_limit a.com messages_per_minute=1 per=address;",
      "destination_limits[0].per: address needs scope fleet" },

    { "destination_limit Gmail.com connections=1;",
      "destination_limits[0].pattern: must be lowercase" },
    { "destination_limit * connections=1;\ndestination_limit * connections=2;",
      "destination_limits[1].pattern: \"*\" duplicates destination_limits[0]"
    },
    { "destination_limit * backoff_reply=\"rate\";",
      "destination_limits[0].backoff_s: must be greater than 0 with "
      "backoff_reply_pattern" },
    { "destination_limit * backoff=1m;",
      "destination_limits[0].backoff_reply_pattern: needed with backoff_s" },

    /* egress */

    { "egress_pool p ehlo=a.com 192.0.2.1;\negress_pool p ehlo=b.com 192.0.2.2;",
      "egress_pools[1].name: \"p\" duplicates egress_pools[0]" },
    { "egress_pool \"a b\" ehlo=a.com 192.0.2.1;",
      "egress_pools[0].name: invalid character" },
    { "egress_pool * ehlo=a.com 192.0.2.1;",
      "egress_pools[0].name: \"*\" is not a pool name" },
    { "egress_pool p ehlo=a_b.com 192.0.2.1;",
      "egress_pools[0].ehlo_name: invalid character in name" },
    { "egress_pool p ehlo= 192.0.2.1;",
      "egress_pools[0].ehlo_name: empty name" },
    { "egress_pool p ehlo=a.com 192.0.2.1 192.0.2.300;",
      "egress_pools[0].addresses[1].address: \"192.0.2.300\" is not an IPv4 "
      "or IPv6 address" },
    { "egress_pool p ehlo=a.com 2001:db8::1 2001:db8::1;",
      "egress_pools[0].addresses[1].address: \"2001:db8::1\" duplicates "
      "addresses[0]" },
    { "egress_pool p ehlo=a.com 192.0.2.1 weight=1001;",
      "egress_pools[0].addresses[0].weight: 1001 is more than 1000" },
    { "egress_pool p ehlo=a.com 192.0.2.1;\negress_rule tenant t q;",
      "egress_rules[0].pool: no egress pool \"q\"" },
    { "egress_pool p ehlo=a.com 192.0.2.1;\negress_rule sender_domain A.com p;",
      "egress_rules[0].match: must be lowercase" },
    { "egress_pool p ehlo=a.com 192.0.2.1;\negress_rule auth_user \"\" p;",
      "egress_rules[0].match: empty" },
    { "egress_pool p ehlo=a.com 192.0.2.1;\negress_rule tenant t p;\n"
      "egress_rule auth_user t p;\negress_rule tenant t p;",
      "egress_rules[2].match: \"t\" duplicates egress_rules[0]" },

    /* tls */

    { "tls A.com required;", "tls[0].pattern: must be lowercase" },
    { "tls * required;\ntls * optional;",
      "tls[1].pattern: \"*\" duplicates tls[0]" },

    { NULL, NULL }
};


/* ---------------------------------------------------------------- render */


typedef struct {
    const char  *text;
    const char  *canonical;
} t_render_t;


static const t_render_t  t_render[] = {
    { "", "" },

    { "tls * optional; route b.com [x.net];\n"
      "comment \"say \\\"hi\\\" \\\\ bye\";",
      "comment \"say \\\"hi\\\" \\\\ bye\";\n"
      "\n"
      "route b.com [x.net];\n"
      "\n"
      "tls * optional;\n" },

    { "# version 12\n# author operator:alice\n"
      "# created 2024-02-29T23:59:58Z\n# other\n"
      "retry * min=60 max=7200s lifetime=120h delay_warning=90s;",
      "# version 12\n# author operator:alice\n"
      "# created 2024-02-29T23:59:58Z\n"
      "\n"
      "retry * min=1m max=2h lifetime=5d delay_warning=90s;\n" },

    { "egress_rule tenant acme p;\n"
      "egress_pool p ehlo=a.com 192.0.2.1 weight=1 192.0.2.2 weight=7;\n"
      "destination_limit * messages_per_minute=5 connections=2 "
      "backoff=3600 backoff_reply=slow messages_per_connection=9 "
      "messages_per_hour=100 connections_per_minute=4;\n"
      "inbound_limit auth_user \"a=b\" window=86400 recipients=3 "
      "messages=2;\n"
      "fallback_relay [f.net]; fallback_relay g.net:25;\n"
      "backup_mx \"#x\" \"a;b\";\n",
      "backup_mx \"#x\" \"a;b\";\n"
      "\n"
      "fallback_relay [f.net] g.net:25;\n"
      "\n"
      "inbound_limit auth_user \"a=b\" window=1d messages=2 recipients=3;\n"
      "\n"
      "destination_limit * connections=2 messages_per_connection=9 "
      "messages_per_minute=5 messages_per_hour=100 connections_per_minute=4 "
      "backoff_reply=\"slow\" backoff=1h;\n"
      "\n"
      "egress_pool p ehlo=a.com 192.0.2.1 192.0.2.2 weight=7;\n"
      "\n"
      "egress_rule tenant acme p;\n" },

    { "route \"\" \"\";", "route \"\" \"\";\n" },

    { "inbound_limit tenant t window=60 messages=1 scope=fleet;\n"
      "inbound_limit auth_user u window=60 messages=1 scope=node;\n"
      "destination_limit * scope=fleet per=address messages_per_hour=9;\n"
      "destination_limit a.com per=pool scope=fleet messages_per_minute=1;",
      "inbound_limit tenant t window=1m messages=1 scope=fleet;\n"
      "inbound_limit auth_user u window=1m messages=1;\n"
      "\n"
      "destination_limit * messages_per_hour=9 scope=fleet per=address;\n"
      "destination_limit a.com messages_per_minute=1 scope=fleet;\n" },
    /* found by fuzzing: weight=0 (which counts as 1) did not round-trip */

    { "egress_pool p ehlo=a.com 192.0.2.1 weight=0 192.0.2.2;",
      "egress_pool p ehlo=a.com 192.0.2.1 192.0.2.2;\n" },

    { NULL, NULL }
};


static void
t_parse_cases(void)
{
    char                 err[512];
    const t_case_t      *c;
    relay_policy_t      *p;

    for (c = t_parse; c->text; c++) {
        p = relay_policy_parse("t.policy", c->text, strlen(c->text), err,
                               sizeof(err));

        if (c->error == NULL) {
            t_check(p != NULL, "parse", c->text, err, "(parses)");

        } else {
            t_check(p == NULL && strcmp(err, c->error) == 0, "parse error",
                    c->text, p ? "(parsed)" : err, c->error);
        }

        relay_policy_free(p);
    }
}


static void
t_validate_cases(void)
{
    int              rc;
    char             err[512];
    const char      *s;
    const t_case_t  *c;
    relay_policy_t  *p;

    for (c = t_validate; c->text; c++) {
        p = relay_policy_parse("t.policy", c->text, strlen(c->text), err,
                               sizeof(err));
        if (p == NULL) {
            t_check(0, "validate: parse", c->text, err, "(parses)");
            continue;
        }

        rc = relay_policy_validate(p, err, sizeof(err));

        if (c->error == NULL) {
            t_check(rc == 0, "validate", c->text, err, "(valid)");

        } else {
            t_check(rc == -1 && strcmp(err, c->error) == 0, "validate error",
                    c->text, rc == 0 ? "(valid)" : err, c->error);
        }

        relay_policy_free(p);
    }

    /* what only the wire can carry */

    s = "inbound_limit client_ip * window=1m messages=1;\n"
        "egress_pool p ehlo=a.com 192.0.2.1;\n"
        "egress_rule tenant t p;\ncomment x;";

    p = relay_policy_parse("t", s, strlen(s), err, sizeof(err));
    if (p == NULL) {
        t_check(0, "wire: parse", "", err, "(parses)");
        return;
    }

    p->inbound_limits[0]->key = 7;
    rc = relay_policy_validate(p, err, sizeof(err));
    t_check(rc == -1 && strcmp(err, "inbound_limits[0].key: unknown key 7")
            == 0, "wire: inbound key", "key 7", err,
            "inbound_limits[0].key: unknown key 7");
    p->inbound_limits[0]->key = 0;

    p->egress_rules[0]->key = 9;
    rc = relay_policy_validate(p, err, sizeof(err));
    t_check(rc == -1 && strcmp(err, "egress_rules[0].key: unknown key 9")
            == 0, "wire: rule key", "key 9", err,
            "egress_rules[0].key: unknown key 9");
    p->egress_rules[0]->key = 2;

    free(p->comment);
    p->comment = strdup("line\nbreak");
    rc = relay_policy_validate(p, err, sizeof(err));
    t_check(rc == -1 && strcmp(err, "comment: control character") == 0,
            "wire: comment", "line\\nbreak", err,
            "comment: control character");

    free(p->comment);
    p->comment = strdup("fine");

    relay__control__v1__egress_address__free_unpacked(
        p->egress_pools[0]->addresses[0], NULL);
    free(p->egress_pools[0]->addresses);
    p->egress_pools[0]->addresses = NULL;
    p->egress_pools[0]->n_addresses = 0;
    rc = relay_policy_validate(p, err, sizeof(err));
    t_check(rc == -1
            && strcmp(err, "egress_pools[0].addresses: no address") == 0,
            "wire: no address", "", err,
            "egress_pools[0].addresses: no address");

    relay_policy_free(p);
}


/* the same message, packed */

static int
t_same(const relay_policy_t *a, const relay_policy_t *b)
{
    int       same;
    size_t    la, lb;
    uint8_t  *pa, *pb;

    la = protobuf_c_message_get_packed_size(&a->base);
    lb = protobuf_c_message_get_packed_size(&b->base);

    if (la != lb) {
        return 0;
    }

    pa = malloc(la + 1);
    pb = malloc(lb + 1);

    protobuf_c_message_pack(&a->base, pa);
    protobuf_c_message_pack(&b->base, pb);

    same = (memcmp(pa, pb, la) == 0);

    free(pa);
    free(pb);

    return same;
}


static void
t_render_cases(void)
{
    FILE               *f;
    char               *r1, *r2, *r3, err[512];
    char                buf[65536];
    size_t              n;
    const char         *s;
    relay_policy_t     *p, *q, *c;
    const t_render_t   *t;

    for (t = t_render; t->text; t++) {
        p = relay_policy_parse("t", t->text, strlen(t->text), err,
                               sizeof(err));
        if (p == NULL) {
            t_check(0, "render: parse", t->text, err, "(parses)");
            continue;
        }

        r1 = relay_policy_render(p);
        t_check(r1 && strcmp(r1, t->canonical) == 0, "render", t->text, r1,
                t->canonical);

        q = r1 ? relay_policy_parse("r", r1, strlen(r1), err, sizeof(err))
               : NULL;
        r2 = q ? relay_policy_render(q) : NULL;
        t_check(r2 && strcmp(r1, r2) == 0, "render round trip", r1,
                q ? r2 : err, r1);
        t_check(q && t_same(p, q), "parse(render) is the same policy",
                t->text, "(differs)", "(the same)");

        c = q ? relay_policy_copy(q) : NULL;
        r3 = c ? relay_policy_render(c) : NULL;
        t_check(r3 && strcmp(r1, r3) == 0, "copy", r1, r3, r1);

        if (q && c) {
            t_check(p->version == c->version
                    && p->created_unix == c->created_unix
                    && strcmp(p->author, c->author) == 0,
                    "copy header", t->text, "", "");
        }

        free(r1);
        free(r2);
        free(r3);
        relay_policy_free(p);
        relay_policy_free(q);
        relay_policy_free(c);
    }

    /* the example policy in config/ parses, validates, round-trips */

    s = getenv("RELAY_POLICY_EXAMPLE");
    f = s ? fopen(s, "r") : NULL;

    if (f != NULL) {
        n = fread(buf, 1, sizeof(buf) - 1, f);
        fclose(f);

        p = relay_policy_parse(s, buf, n, err, sizeof(err));
        t_check(p && relay_policy_validate(p, err, sizeof(err)) == 0,
                "config/policy.example", s, err, "(valid)");

        r1 = p ? relay_policy_render(p) : NULL;
        q = r1 ? relay_policy_parse("r", r1, strlen(r1), err, sizeof(err))
               : NULL;
        r2 = q ? relay_policy_render(q) : NULL;
        t_check(r2 && strcmp(r1, r2) == 0, "config/policy.example round trip",
                s, r2, r1);

        free(r1);
        free(r2);
        relay_policy_free(p);
        relay_policy_free(q);

    } else {
        t_check(0, "config/policy.example", s ? s : "(no path)",
                "cannot open", "RELAY_POLICY_EXAMPLE");
    }

    p = relay_policy_parse("t", "# created 1970-01-01T00:00:01Z\n", 31, err,
                           sizeof(err));
    t_check(p && p->created_unix == 1, "created epoch", "", err, "1");
    relay_policy_free(p);
}


/* ---------------------------------------------------------------- words */


/*
 * One statement as words (what nginx.conf's directives hand over) and as
 * text: the same policy, or the same message but for the text's place.
 */

typedef struct {
    const char  *words;               /* split at "|", else at spaces */
    const char  *text;                /* NULL: the words and ";" */
    const char  *error;               /* NULL: valid */
} t_words_t;


static const t_words_t  t_words[] = {
    { "route example.com [10.0.0.1]:25 mx.example.net", NULL, NULL },
    { "route example.com 10.0.0.1", NULL,
      "routes[0].next_hops[0]: \"10.0.0.1\": an IP address needs brackets: "
      "\"[192.0.2.1]:25\"" },
    { "route Example.COM [10.0.0.1]", NULL,
      "routes[0].pattern: must be lowercase" },
    { "route example.com", NULL, "route: missing argument" },
    { "route example.com a.net x=1", NULL,
      "route: unexpected parameter \"x=1\"" },
    { "backup_mx .example.com [backup.example.net]:2525", NULL, NULL },
    { "backup_mx bk.test 127.0.0.11:2525", NULL,
      "backup_mx[0].hosts[0]: \"127.0.0.11:2525\": an IP address needs "
      "brackets: \"[192.0.2.1]:25\"" },
    { "fallback_relay [192.0.2.9]:2525 relay.example.net", NULL, NULL },
    { "retry * min=5m max=4000s lifetime=5d", NULL, NULL },
    { "retry * min=5x max=1h lifetime=1d", NULL,
      "retry: bad duration \"5x\"" },
    { "retry * min=1h max=5m lifetime=1d", NULL,
      "retry[0].backoff_max_s: 300s is less than backoff_min_s (3600s)" },
    { "inbound_limit client_ip 10.0.0.0/8 window=1m messages=3", NULL,
      NULL },
    { "inbound_limit client_ip 10.0.0.1/8 window=1m messages=3", NULL,
      "inbound_limits[0].match: host bits set after the prefix length" },
    { "inbound_limit client_ip * window=1m", NULL,
      "inbound_limits[0]: neither messages nor recipients is limited" },
    { "destination_limit|slow.test|backoff_reply=rate limited|backoff=4s",
      "destination_limit slow.test backoff_reply=\"rate limited\" "
      "backoff=4s;", NULL },
    { "destination_limit x.test backoff_reply=busy", NULL,
      "destination_limits[0].backoff_s: must be greater than 0 with "
      "backoff_reply_pattern" },
    { "destination_limit x.test rate=2", NULL,
      "destination_limit: unknown parameter \"rate\"" },
    { "egress_pool bulk ehlo=bulk.example.net 192.0.2.1 weight=9 192.0.2.2",
      NULL, NULL },
    { "egress_pool bulk ehlo=bulk.example.net mx.example.net", NULL,
      "egress_pools[0].addresses[0].address: \"mx.example.net\" is not an "
      "IPv4 or IPv6 address" },
    { "egress_rule tenant acme bulk", NULL,
      "egress_rules[0].pool: no egress pool \"bulk\"" },
    { "egress_rule ip acme bulk", NULL,
      "egress_rule: unknown key \"ip\" (sender_domain, auth_user or "
      "tenant)" },
    { "tls example.org required verify", NULL, NULL },
    { "tls example.org sometimes", NULL,
      "tls: expected \"required\" or \"optional\", got \"sometimes\"" },
    { "frob x", NULL, "unknown statement \"frob\"" },
    { NULL, NULL, NULL }
};


/* the case's words, in buf, and its text, in text[] when it has none */

static size_t
t_split(const t_words_t *c, char *buf, size_t len, char **words,
    size_t max, char *text, size_t textlen)
{
    int      sep;
    char    *w;
    size_t   n;

    snprintf(buf, len, "%s", c->words);
    snprintf(text, textlen, "%s;", c->words);

    sep = strchr(buf, '|') ? '|' : ' ';
    n = 0;

    for (w = buf; w && n < max; w = strchr(w, sep) ? strchr(w, sep) + 1 : NULL)
    {
        words[n++] = w;
    }

    for (w = buf; *w; w++) {
        if (*w == sep) {
            *w = '\0';
        }
    }

    return n;
}


/* a policy's outcome: NULL and its render, or the validation message */

static const char *
t_outcome(relay_policy_t *p, char *err, size_t errlen, char **text)
{
    const char  *why;

    why = NULL;

    if (relay_policy_validate(p, err, errlen) != 0) {
        why = err;

    } else {
        *text = relay_policy_render(p);
    }

    relay_policy_free(p);

    return why;
}


/* the words' outcome: a parse error, or the policy's */

static const char *
t_words_outcome(char **words, size_t n, char *err, size_t errlen,
    char **text)
{
    relay_policy_t  *p;

    *text = NULL;

    p = relay_policy_new();

    if (relay_policy_add(p, words, n, err, errlen) != 0) {
        relay_policy_free(p);
        return err;
    }

    return t_outcome(p, err, errlen, text);
}


/* the text's outcome: a parse error, its "t.policy:1: " left out */

static const char *
t_text_outcome(const char *s, char *err, size_t errlen, char **text)
{
    size_t           n;
    relay_policy_t  *p;

    *text = NULL;

    p = relay_policy_parse("t.policy", s, strlen(s), err, errlen);
    if (p != NULL) {
        return t_outcome(p, err, errlen, text);
    }

    n = strlen("t.policy:1: ");

    return strncmp(err, "t.policy:1: ", n) == 0 ? err + n : err;
}


static void
t_words_cases(void)
{
    char             *wt, *tt, *words[16], buf[256], text[256];
    char              werr[512], terr[512];
    size_t            n;
    const char       *we, *te, *s;
    const t_words_t  *c;

    for (c = t_words; c->words; c++) {
        n = t_split(c, buf, sizeof(buf), words, 16, text, sizeof(text));
        s = c->text ? c->text : text;

        we = t_words_outcome(words, n, werr, sizeof(werr), &wt);
        te = t_text_outcome(s, terr, sizeof(terr), &tt);

        if (c->error == NULL) {
            t_check(we == NULL, "words", s, we, "(valid)");
            t_check(te == NULL, "words: text", s, te, "(valid)");
            t_check(wt && tt && strcmp(wt, tt) == 0, "words: same policy",
                    s, wt, tt);

        } else {
            t_check(we && strcmp(we, c->error) == 0, "words error", s,
                    we ? we : "(valid)", c->error);
            t_check(te && strcmp(te, c->error) == 0, "words: text error",
                    s, te ? te : "(valid)", c->error);
        }

        free(wt);
        free(tt);
    }
}


/* a statement that fails leaves the policy as it was */

static void
t_words_rollback(void)
{
    char            *before, *after, err[512];
    relay_policy_t  *p;

    static char *const  route[] = { "route", "a.test", "[192.0.2.1]" };
    static char *const  bad_route[] = { "route", "b.test", "x.net", "y=1" };
    static char *const  bad_pool[] = { "egress_pool", "p", "ehlo=a.test",
                                       "weight=2", "192.0.2.1" };
    static char *const  tab[] = { "comment", "a\tb" };

    p = relay_policy_new();

    t_check(p && relay_policy_add(p, route, 3, err, sizeof(err)) == 0,
            "rollback: route", "route a.test [192.0.2.1]", err, "(added)");

    before = relay_policy_render(p);

    t_check(relay_policy_add(p, bad_route, 4, err, sizeof(err)) == -1
            && p->n_routes == 1, "rollback: bad route",
            "route b.test x.net y=1", err, "(refused, one route)");

    t_check(relay_policy_add(p, bad_pool, 5, err, sizeof(err)) == -1
            && p->n_egress_pools == 0
            && strcmp(err, "egress_pool: \"weight=\" before any address")
               == 0, "rollback: bad pool", "egress_pool p ...", err,
            "egress_pool: \"weight=\" before any address");

    t_check(relay_policy_add(p, tab, 2, err, sizeof(err)) == -1
            && strcmp(err, "control character") == 0, "words: control",
            "comment a<TAB>b", err, "control character");

    after = relay_policy_render(p);

    t_check(before && after && strcmp(before, after) == 0,
            "rollback: unchanged", "", after, before);

    free(before);
    free(after);
    relay_policy_free(p);
}


/* a draft's rules may name pools still to come */

static void
t_draft(void)
{
    char             err[512];
    const char      *s;
    relay_policy_t  *p;

    s = "egress_rule tenant acme bulk;\nroute a.test [192.0.2.1];\n";

    p = relay_policy_parse("t", s, strlen(s), err, sizeof(err));

    t_check(p && relay_policy_validate_draft(p, err, sizeof(err)) == 0,
            "draft", s, err, "(valid draft)");
    t_check(p && relay_policy_validate(p, err, sizeof(err)) == -1
            && strcmp(err, "egress_rules[0].pool: no egress pool \"bulk\"")
               == 0, "draft: complete", s, err,
            "egress_rules[0].pool: no egress pool \"bulk\"");

    relay_policy_free(p);

    s = "egress_rule tenant acme bulk;\nroute A.test [192.0.2.1];\n";

    p = relay_policy_parse("t", s, strlen(s), err, sizeof(err));

    t_check(p && relay_policy_validate_draft(p, err, sizeof(err)) == -1
            && strcmp(err, "routes[0].pattern: must be lowercase") == 0,
            "draft: other checks", s, err,
            "routes[0].pattern: must be lowercase");

    relay_policy_free(p);
}


/* ---------------------------------------------------------------- hops */


typedef struct {
    const char  *hop;
    const char  *host;                /* NULL: refused with error */
    unsigned     port;
    unsigned     mx;
    const char  *error;
} t_hop_t;


static const t_hop_t  t_hops[] = {
    { "[192.0.2.1]:25", "192.0.2.1", 25, 0, NULL },
    { "[2001:db8::1]", "2001:db8::1", 0, 0, NULL },
    { "[relay.example.net]:2525", "relay.example.net", 2525, 0, NULL },
    { "mx.example.net", "mx.example.net", 0, 1, NULL },
    { "mx.example.net:587", "mx.example.net", 587, 1, NULL },
    { "192.0.2.1:25", NULL, 0, 0,
      "an IP address needs brackets: \"[192.0.2.1]:25\"" },
    { "[192.0.2.1", NULL, 0, 0, "missing \"]\"" },
    { "mx.example.net:0", NULL, 0, 0, "port out of range 1..65535" },
    { "", NULL, 0, 0, "empty hop" },
    { NULL, NULL, 0, 0, NULL }
};


static void
t_hop_cases(void)
{
    const char          *why;
    const t_hop_t       *t;
    relay_policy_hop_t   h;

    for (t = t_hops; t->hop; t++) {
        why = relay_policy_hop(t->hop, &h);

        if (t->host == NULL) {
            t_check(why && strcmp(why, t->error) == 0, "hop error", t->hop,
                    why ? why : "(a hop)", t->error);
            continue;
        }

        t_check(why == NULL && h.host_len == strlen(t->host)
                && strncmp(h.host, t->host, h.host_len) == 0
                && h.port == t->port && h.mx == t->mx, "hop", t->hop,
                why ? why : h.host, t->host);
    }
}


/* ---------------------------------------------------------------- diff */


typedef struct {
    const char  *a;
    const char  *b;
    const char  *diff;
} t_diff_t;


static const t_diff_t  t_diffs[] = {
    /* equal, equal but for comments */
    { "a\nb\n", "a\nb\n", "" },
    { "# version 1\na\nb\n", "# version 2\n# author x\na\nb\n", "" },
    { "", "", "" },

    /* insert in the middle, with context cut to 3 lines */
    { "1\n2\n3\n4\n5\n6\n7\n8\n",
      "1\n2\n3\n4\nnew\n5\n6\n7\n8\n",
      "--- a\n+++ b\n@@ -2,6 +2,7 @@\n 2\n 3\n 4\n+new\n 5\n 6\n 7\n" },

    /* insert into nothing, delete everything */
    { "", "x\ny\n", "--- a\n+++ b\n@@ -0,0 +1,2 @@\n+x\n+y\n" },
    { "x\n", "", "--- a\n+++ b\n@@ -1 +0,0 @@\n-x\n" },

    /* delete at the start */
    { "1\n2\n3\n4\n5\n", "2\n3\n4\n5\n",
      "--- a\n+++ b\n@@ -1,4 +1,3 @@\n-1\n 2\n 3\n 4\n" },

    /* change at the end: deletions before insertions */
    { "1\n2\n3\n4\n5\n", "1\n2\n3\nfour\nfive\n",
      "--- a\n+++ b\n@@ -1,5 +1,5 @@\n 1\n 2\n 3\n-4\n-5\n+four\n+five\n" },

    /* two changes 7 lines apart: two hunks; 6 apart: one */
    { "a\n1\n2\n3\n4\n5\n6\n7\nb\n", "A\n1\n2\n3\n4\n5\n6\n7\nB\n",
      "--- a\n+++ b\n@@ -1,4 +1,4 @@\n-a\n+A\n 1\n 2\n 3\n"
      "@@ -6,4 +6,4 @@\n 5\n 6\n 7\n-b\n+B\n" },
    { "a\n1\n2\n3\n4\n5\n6\nb\n", "A\n1\n2\n3\n4\n5\n6\nB\n",
      "--- a\n+++ b\n@@ -1,8 +1,8 @@\n-a\n+A\n 1\n 2\n 3\n 4\n 5\n 6\n"
      "-b\n+B\n" },

    /* comment lines take no part, a last line without "\n" counts */
    { "x\n# c1\ny", "x\ny\n# c2\nz\n",
      "--- a\n+++ b\n@@ -1,2 +1,3 @@\n x\n y\n+z\n" },

    /* a shortest script where lines move */
    { "a\nb\nc\na\nb\nb\na\n", "c\nb\na\nb\na\nc\n",
      NULL },

    { NULL, NULL, NULL }
};


static void
t_diff_cases(void)
{
    char            *d;
    size_t           plus, minus;
    const char      *s;
    const t_diff_t  *t;

    for (t = t_diffs; t->a; t++) {
        d = relay_diff("a", t->a, "b", t->b);

        if (t->diff) {
            t_check(d && strcmp(d, t->diff) == 0, "diff", t->a, d, t->diff);

        } else {
            /* Myers' example: edit distance 5 */

            plus = 0;
            minus = 0;

            for (s = d; s && *s; s = strchr(s, '\n') + 1) {
                plus += (*s == '+' && s[1] != '+');
                minus += (*s == '-' && s[1] != '-');
            }

            t_check(d && plus + minus == 5, "diff shortest", t->a, d,
                    "5 lines changed");
        }

        free(d);
    }
}


/* ---------------------------------------------------------------- bounds */


static double
t_seconds(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);

    return ts.tv_sec + ts.tv_nsec / 1e9;
}


/*
 * Big policies are made here element by element: the parser grows its
 * lists one element at a time, which AddressSanitizer's realloc() makes
 * quadratic.  Strings are malloc()ed so that relay_policy_free() frees.
 */

static char *
t_strf(const char *fmt, size_t i)
{
    char  buf[128];

    snprintf(buf, sizeof(buf), fmt, i);

    return strdup(buf);
}


/* n routes "dI.example" -> "[mxI.example.net]:25"; dup repeats the 5th */

static relay_policy_t *
t_routes(size_t n, size_t dup)
{
    size_t                       i;
    relay_policy_t              *p;
    Relay__Control__V1__Route   *r;

    p = relay_policy_new();
    p->routes = calloc(n, sizeof(void *));

    for (i = 0; i < n; i++) {
        r = malloc(sizeof(Relay__Control__V1__Route));
        relay__control__v1__route__init(r);
        r->pattern = t_strf("d%zu.example", i == dup ? 5 : i);
        r->next_hops = malloc(sizeof(char *));
        r->next_hops[0] = t_strf("[mx%zu.example.net]:25", i);
        r->n_next_hops = 1;
        p->routes[i] = r;
    }

    p->n_routes = n;

    return p;
}


static relay_policy_t *
t_tls_rules(size_t n)
{
    size_t                          i;
    relay_policy_t                 *p;
    Relay__Control__V1__TlsPolicy  *t;

    p = relay_policy_new();
    p->tls = calloc(n, sizeof(void *));

    for (i = 0; i < n; i++) {
        t = malloc(sizeof(Relay__Control__V1__TlsPolicy));
        relay__control__v1__tls_policy__init(t);
        t->pattern = t_strf("d%zu.example", i);
        p->tls[i] = t;
    }

    p->n_tls = n;

    return p;
}


/* one pool "p" and n egress rules naming it */

static relay_policy_t *
t_rules(size_t n)
{
    char                           *err, buf[512];
    size_t                          i;
    const char                     *s;
    relay_policy_t                 *p;
    Relay__Control__V1__EgressRule  *r;

    s = "egress_pool p ehlo=a.example 192.0.2.1;";
    err = buf;
    p = relay_policy_parse("t", s, strlen(s), err, sizeof(buf));
    p->egress_rules = calloc(n, sizeof(void *));

    for (i = 0; i < n; i++) {
        r = malloc(sizeof(Relay__Control__V1__EgressRule));
        relay__control__v1__egress_rule__init(r);
        r->key = RELAY__CONTROL__V1__EGRESS_RULE__KEY__AUTH_USER;
        r->match = t_strf("u%zu", i);
        r->pool = strdup("p");
        p->egress_rules[i] = r;
    }

    p->n_egress_rules = n;

    return p;
}


static void
t_validate_timed(const char *what, relay_policy_t *p, const char *want)
{
    int      rc;
    char     err[512];
    double   t;

    t = t_seconds();
    rc = relay_policy_validate(p, err, sizeof(err));
    t = t_seconds() - t;

    if (want == NULL) {
        t_check(rc == 0, what, "", rc ? err : "(valid)", "(valid)");

    } else {
        t_check(rc == -1 && strcmp(err, want) == 0, what, "",
                rc ? err : "(valid)", want);
    }

    /* linear: milliseconds; pairwise, 100,000 entries took minutes */

    t_check(t < 1.0, what, "(time)", t < 1.0 ? "fast" : "slow", "fast");
}


/*
 * A fuzz finding of the snapshot harness's format (a first octet, then a
 * packed Policy) from tests/unit-policy/data, or NULL (a failed check).
 */

static relay_policy_t *
t_finding_policy(const char *name)
{
    FILE            *f;
    char             path[512], buf[4096];
    size_t           n;
    const char      *dir;
    relay_policy_t  *p;

    dir = getenv("RELAY_POLICY_DATA");
    snprintf(path, sizeof(path), "%s/%s", dir ? dir : "tests/unit-policy/data",
             name);

    f = fopen(path, "rb");
    n = f ? fread(buf, 1, sizeof(buf), f) : 0;
    if (f) {
        fclose(f);
    }

    p = n > 1 ? relay__control__v1__policy__unpack(NULL, n - 1,
                                                   (uint8_t *) buf + 1)
              : NULL;

    if (p == NULL) {
        t_check(0, "finding: unpack", path, "(nothing)", "a policy");
    }

    return p;
}


static void
t_bounds(void)
{
    int              rc;
    char             err[512], *r;
    char             buf[64];
    size_t           i, n;
    relay_policy_t  *p, *q;

    /*
     * The outside finding: a snapshot whose created_unix has a 6-digit
     * year rendered a "# created" line the parser did not read back.
     * Validation bounds it now; the last second of 9999 goes round.
     */

    p = t_finding_policy("crash-policy-created-roundtrip.bin");

    if (p != NULL) {
        rc = relay_policy_validate(p, err, sizeof(err));
        t_check(rc == -1 && strcmp(err, "created_unix: 3104992991870 is not "
                                   "in the years 1970 to 9999") == 0,
                "finding: crash-policy-created-roundtrip", "",
                rc ? err : "(valid)",
                "created_unix: 3104992991870 is not in the years 1970 to "
                "9999");

        p->created_unix = 253402300799LL;
        rc = relay_policy_validate(p, err, sizeof(err));
        r = relay_policy_render(p);
        q = r ? relay_policy_parse("t", r, strlen(r), err, sizeof(err))
              : NULL;
        t_check(rc == 0 && q && q->created_unix == p->created_unix,
                "created 9999-12-31T23:59:59Z round trip", r ? r : "",
                q ? "(differs)" : err, "(the same)");
        relay_policy_free(q);
        free(r);

        p->created_unix = -1;
        rc = relay_policy_validate(p, err, sizeof(err));
        t_check(rc == -1, "created before 1970", "", rc ? err : "(valid)",
                "(refused)");

        relay_policy_free(p);
    }

    /* caps: hops of a list, addresses of a pool, entries of a list */

    p = relay_policy_new();
    if (p == NULL) {
        exit(2);
    }

    n = 20000;
    p->fallback_relay = calloc(n, sizeof(char *));
    for (i = 0; i < n; i++) {
        snprintf(buf, sizeof(buf), "[10.%zu.%zu.1]:25", i / 256, i % 256);
        p->fallback_relay[i] = strdup(buf);
    }
    p->n_fallback_relay = n;

    t_validate_timed("20,000 fallback hops", p,
                     "fallback_relay: 20000 hops, more than 64");

    p->n_fallback_relay = 64;
    t_validate_timed("64 fallback hops", p, NULL);

    p->n_fallback_relay = n;
    relay_policy_free(p);

    r = malloc(40 * 33 + 64);
    strcpy(r, "egress_pool p ehlo=a.example");
    for (i = 0; i < 33; i++) {
        snprintf(r + strlen(r), 40, " 192.0.2.%zu", i + 1);
    }
    strcat(r, ";");
    p = relay_policy_parse("t", r, strlen(r), err, sizeof(err));
    free(r);
    if (p) {
        t_validate_timed("33 addresses in a pool", p,
                         "egress_pools[0].addresses: 33 addresses, more "
                         "than 32");
        relay_policy_free(p);
    }

    /* 100,000 routes, the last repeating the 5th: found, and in time */

    p = t_routes(100000, 99999);
    t_validate_timed("100,000 routes, a duplicate", p,
                     "routes[99999].pattern: \"d5.example\" duplicates "
                     "routes[5]");
    relay_policy_free(p);

    p = t_routes(100000, (size_t) -1);
    t_validate_timed("100,000 routes", p, NULL);
    relay_policy_free(p);

    p = t_tls_rules(100001);
    t_validate_timed("100,001 tls rules", p,
                     "tls: 100001 entries, more than 100000");
    relay_policy_free(p);

    p = t_rules(50000);
    t_validate_timed("50,000 egress rules naming one pool", p, NULL);
    relay_policy_free(p);
}


/*
 * Found by the snapshot fuzzer: a policy from the wire whose node selector
 * is not in the order the text form writes ("n=Z,m=ILm") rendered as
 * "m=ILm,n=Z", so its text did not parse back to the same policy.  Such a
 * selector is refused now; the canonical one goes round.
 */

static void
t_selector_order(void)
{
    char            *r, err[512];
    relay_policy_t  *p, *q;

    p = t_finding_policy("fuzz-snapshot-selector-order.bin");

    if (p == NULL || p->n_egress_pools != 2) {
        t_check(p != NULL, "finding: two pools", "", "(other)", "2");
        relay_policy_free(p);
        return;
    }

    (void) relay_policy_validate(p, err, sizeof(err));
    t_check(strcmp(err, "egress_pools[1].nodes: \"n=Z,m=ILm\" is not in "
                   "canonical form") == 0,
            "finding: fuzz-snapshot-selector-order", "", err,
            "egress_pools[1].nodes: \"n=Z,m=ILm\" is not in canonical form");

    free(p->egress_pools[1]->nodes);
    p->egress_pools[1]->nodes = strdup("m=ILm,n=Z");

    r = relay_policy_validate(p, err, sizeof(err)) == 0
        ? relay_policy_render(p) : NULL;
    q = r ? relay_policy_parse("t", r, strlen(r), err, sizeof(err)) : NULL;
    t_check(q && q->n_egress_pools == 2
            && strcmp(q->egress_pools[1]->nodes, "m=ILm,n=Z") == 0,
            "canonical selector round trip", r ? r : "",
            q ? q->egress_pools[1]->nodes : err, "m=ILm,n=Z");

    relay_policy_free(q);
    free(r);
    relay_policy_free(p);
}


int
main(void)
{
    t_parse_cases();
    t_validate_cases();
    t_render_cases();
    t_words_cases();
    t_words_rollback();
    t_draft();
    t_hop_cases();
    t_diff_cases();
    t_bounds();
    t_selector_order();

    printf("test_policy: %d passed, %d failed\n", t_passed, t_failed);

    return t_failed ? 1 : 0;
}
