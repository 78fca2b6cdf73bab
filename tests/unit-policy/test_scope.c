
/*
 * Copyright (C) The relay authors
 */


/*
 * lib/relay_scope.c and the scopes of lib/relay_policy.c: selector syntax,
 * canonical form and matching; "nodes=" in the text (parse errors, the
 * canonical rendering and its round trip, nginx.conf's words refused);
 * validation of scoped lists; local pools; and the policy as one node
 * sees it (relay_policy_for_node): what stays, what goes, and the errors
 * with the indexes of the policy as written.
 */


#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "relay_policy.h"
#include "relay_scope.h"
#include "../tcase.h"


static const relay_scope_label_t  t_labels[] = {
    { "region", "eu" }, { "rack", "r12" }
};

static const relay_scope_node_t   t_node = { "relay-1", t_labels, 2 };


/* ---------------------------------------------------------------- syntax */


static const struct {
    const char  *label;
    const char  *in;
    const char  *why;                  /* NULL: a selector */
    const char  *canonical;
} t_selectors[] = {
    { "empty: every node", "", NULL, "" },
    { "one label", "rack=r12", NULL, "rack=r12" },
    { "node ids", "node=b,node=a", NULL, "node=a,node=b" },
    { "sorted, once each", "rack=r2,region=eu,rack=r1,rack=r2", NULL,
      "rack=r1,rack=r2,region=eu" },
    { "no value", "rack=", "an empty value", NULL },
    { "no key", "=r1", "an empty label name", NULL },
    { "no =", "rack", "a term is not KEY=VALUE", NULL },
    { "empty term", "rack=r1,,x=y",
      "an empty term (\",\" at the start, the end or twice)", NULL },
    { "trailing comma", "rack=r1,",
      "an empty term (\",\" at the start, the end or twice)", NULL },
    { "uppercase key", "Rack=r1", "a label name must start with a-z or 0-9",
      NULL },
    { "bad key char", "ra ck=r1", "a label name is made of a-z 0-9 _ . -",
      NULL },
    { "bad value char", "rack=r1;", "a value is made of A-Z a-z 0-9 _ . -",
      NULL },
    { "= in value", "rack=a=b", "a value is made of A-Z a-z 0-9 _ . -",
      NULL }
};


static void
t_selector_syntax(void)
{
    char         buf[RELAY_SCOPE_MAX_LEN + 1];
    size_t       i;
    const char  *why;

    for (i = 0; i < sizeof(t_selectors) / sizeof(t_selectors[0]); i++) {
        t_begin(t_selectors[i].label);

        why = relay_scope_check(t_selectors[i].in);

        if ((why == NULL) != (t_selectors[i].why == NULL)
            || (why && strcmp(why, t_selectors[i].why) != 0))
        {
            t_fail("check(\"%s\"): \"%s\", want \"%s\"", t_selectors[i].in,
                   why ? why : "ok",
                   t_selectors[i].why ? t_selectors[i].why : "ok");
        }

        if (t_selectors[i].canonical
            && (relay_scope_canonical(t_selectors[i].in, buf, sizeof(buf))
                != 0
                || strcmp(buf, t_selectors[i].canonical) != 0))
        {
            t_fail("canonical(\"%s\"): \"%s\"", t_selectors[i].in, buf);
        }

        t_end();
    }

    t_begin("33 terms are too many");
    {
        char    s[400];
        size_t  k, n;

        for (k = 0, n = 0; k < 33; k++) {
            n += snprintf(s + n, sizeof(s) - n, "%sn=%zu", k ? "," : "", k);
        }

        why = relay_scope_check(s);
        if (why == NULL || strcmp(why, "more than 32 terms") != 0) {
            t_fail("got \"%s\"", why ? why : "ok");
        }
    }
    t_end();

    t_begin("same selector written two ways");
    if (!relay_scope_same("region=eu,rack=r1", "rack=r1,region=eu")
        || relay_scope_same("rack=r1", "rack=r2")
        || !relay_scope_same("", ""))
    {
        t_fail("relay_scope_same");
    }
    t_end();

    t_begin("labels");
    if (relay_scope_label_check("rack", "r12") != NULL
        || relay_scope_label_check("node", "x") == NULL
        || relay_scope_label_check("rack", "") == NULL
        || relay_scope_label_check("Rack", "x") == NULL)
    {
        t_fail("relay_scope_label_check");
    }
    t_end();
}


static const struct {
    const char  *label;
    const char  *selector;
    int          match;
} t_matches[] = {
    { "empty", "", 1 },
    { "its rack", "rack=r12", 1 },
    { "another rack", "rack=r13", 0 },
    { "one of two racks", "rack=r13,rack=r12", 1 },
    { "rack and region", "rack=r12,region=eu", 1 },
    { "rack but not region", "rack=r12,region=us", 0 },
    { "a label it lacks", "zone=a", 0 },
    { "its id", "node=relay-1", 1 },
    { "another id", "node=relay-2", 0 },
    { "ids or nothing", "node=relay-2,node=relay-1", 1 },
    { "id and rack", "node=relay-1,rack=r13", 0 },
    { "values are exact", "rack=r1", 0 },
    { "not a selector", "rack", 0 }
};


static void
t_selector_match(void)
{
    size_t  i;

    for (i = 0; i < sizeof(t_matches) / sizeof(t_matches[0]); i++) {
        t_begin(t_matches[i].label);

        if (relay_scope_match(t_matches[i].selector, &t_node)
            != t_matches[i].match)
        {
            t_fail("match(\"%s\") is not %d", t_matches[i].selector,
                   t_matches[i].match);
        }

        t_end();
    }
}


/* ---------------------------------------------------------------- text */


static const struct {
    const char  *label;
    const char  *text;
    const char  *error;                /* NULL: parses and validates */
} t_texts[] = {
    { "scoped route", "route a.example [h.example] nodes=rack=r1;", NULL },
    { "scope first", "route nodes=rack=r1 a.example [h.example];", NULL },
    { "scoped pool and rule",
      "egress_pool p ehlo=m.example 192.0.2.1 nodes=rack=r1;\n"
      "egress_rule tenant acme p nodes=rack=r1;", NULL },
    { "one pattern, two scopes",
      "route a.example [h1.example] nodes=rack=r1;\n"
      "route a.example [h2.example] nodes=rack=r2;\n"
      "route a.example [h3.example];", NULL },
    { "one pool name, two scopes",
      "egress_pool p ehlo=m.example 192.0.2.1 nodes=rack=r1;\n"
      "egress_pool p ehlo=m.example 192.0.2.2 nodes=rack=r2;\n"
      "egress_rule tenant acme p;", NULL },
    { "a local pool", "egress_pool bulk local;\n"
      "egress_rule tenant acme bulk;", NULL },
    { "same pattern, same scope written two ways",
      "tls a.example required nodes=a=1,b=2;\n"
      "tls a.example optional nodes=b=2,a=1;",
      "validate: tls[1].pattern: \"a.example\" duplicates tls[0]" },
    { "same match, same scope",
      "inbound_limit auth_user u window=1m messages=1 nodes=rack=r1;\n"
      "inbound_limit auth_user u window=1m messages=2 nodes=rack=r1;",
      "validate: inbound_limits[1].match: \"u\" duplicates "
      "inbound_limits[0]" },
    { "comment", "comment x nodes=rack=r1;",
      "t.policy:1: comment: cannot be scoped" },
    { "fallback_relay", "fallback_relay [h.example] nodes=rack=r1;",
      "t.policy:1: fallback_relay: cannot be scoped" },
    { "twice", "route a.example [h] nodes=a=1 nodes=b=2;",
      "t.policy:1: route: duplicate parameter \"nodes\"" },
    { "empty", "route a.example [h] nodes=;",
      "t.policy:1: route: bad nodes \"\": empty" },
    { "bad", "route a.example [h] nodes=rack;",
      "t.policy:1: route: bad nodes \"rack\": a term is not KEY=VALUE" },
    { "local with an address", "egress_pool bulk local 192.0.2.1;",
      "t.policy:1: egress_pool: missing parameter \"ehlo=\"" },
    { "rule naming no pool at all", "egress_rule tenant acme q;",
      "validate: egress_rules[0].pool: no egress pool \"q\"" }
};


static void
t_text(void)
{
    char             err[512], got[600];
    size_t           i;
    relay_policy_t  *p;

    for (i = 0; i < sizeof(t_texts) / sizeof(t_texts[0]); i++) {
        t_begin(t_texts[i].label);

        p = relay_policy_parse("t.policy", t_texts[i].text,
                               strlen(t_texts[i].text), err, sizeof(err));

        if (p == NULL) {
            snprintf(got, sizeof(got), "%s", err);

        } else if (relay_policy_validate(p, err, sizeof(err)) != 0) {
            snprintf(got, sizeof(got), "validate: %s", err);

        } else {
            got[0] = '\0';
        }

        if (t_texts[i].error == NULL ? got[0] != '\0'
                                     : strcmp(got, t_texts[i].error) != 0)
        {
            t_fail("got \"%s\", want \"%s\"", got,
                   t_texts[i].error ? t_texts[i].error : "ok");
        }

        relay_policy_free(p);
        t_end();
    }
}


static void
t_render(void)
{
    char            *text, *again, err[256];
    relay_policy_t  *p, *q;

    static const char  in[] =
        "route a.example [h1.example] nodes=region=eu,rack=r2,rack=r1;\n"
        "route a.example [h2.example];\n"
        "egress_pool bulk local nodes=node=relay-1;\n"
        "egress_rule tenant acme bulk;\n";

    static const char  want[] =
        "route a.example [h1.example] nodes=rack=r1,rack=r2,region=eu;\n"
        "route a.example [h2.example];\n"
        "\n"
        "egress_pool bulk local nodes=node=relay-1;\n"
        "\n"
        "egress_rule tenant acme bulk;\n";

    t_begin("canonical text of scopes and local pools");

    p = relay_policy_parse("t.policy", in, sizeof(in) - 1, err, sizeof(err));
    text = p ? relay_policy_render(p) : NULL;

    if (text == NULL || strcmp(text, want) != 0) {
        t_fail("rendered:\n%s\nerror: %s", text ? text : "(null)",
               p ? "" : err);
    }

    q = text ? relay_policy_parse("t2", text, strlen(text), err, sizeof(err))
             : NULL;
    again = q ? relay_policy_render(q) : NULL;

    if (again == NULL || text == NULL || strcmp(again, text) != 0) {
        t_fail("the rendered text does not parse back the same");
    }

    free(text);
    free(again);
    relay_policy_free(p);
    relay_policy_free(q);
    t_end();
}


static void
t_directives(void)
{
    char            *words[5], err[256];
    relay_policy_t  *p;

    p = relay_policy_new();

    t_begin("nginx.conf's words: no scope");
    words[0] = "route";
    words[1] = "a.example";
    words[2] = "[h.example]";
    words[3] = "nodes=rack=r1";

    if (p == NULL || relay_policy_add(p, words, 4, err, sizeof(err)) != -1
        || strcmp(err, "route: \"nodes=\" belongs to the fleet policy, not "
                  "to a node's own configuration") != 0
        || p->n_routes != 0)
    {
        t_fail("got \"%s\"", err);
    }
    t_end();

    t_begin("nginx.conf's words: no local pool");
    words[0] = "egress_pool";
    words[1] = "bulk";
    words[2] = "local";

    if (p == NULL || relay_policy_add(p, words, 3, err, sizeof(err)) != -1
        || strncmp(err, "egress_pool: \"local\" belongs to the fleet", 40)
           != 0
        || p->n_egress_pools != 0)
    {
        t_fail("got \"%s\"", err);
    }
    t_end();

    relay_policy_free(p);
}


/* ---------------------------------------------------------------- nodes */


static const char  t_fleet[] =
    "route a.example [eu.example] nodes=region=eu;\n"              /* 0 */
    "route a.example [us.example] nodes=region=us;\n"              /* 1 */
    "route b.example [b.example];\n"                               /* 2 */
    "retry * min=1m max=1h lifetime=1d nodes=node=relay-2;\n"
    "egress_pool rackpool ehlo=r12.example 192.0.2.12 nodes=rack=r12;\n"
    "egress_pool rackpool ehlo=r13.example 192.0.2.13 nodes=rack=r13;\n"
    "egress_pool bulk local;\n"
    "egress_rule tenant acme rackpool;\n"
    "egress_rule tenant news bulk;\n";


static relay_policy_t *
t_fleet_policy(const char *text)
{
    char             err[256];
    relay_policy_t  *p;

    p = relay_policy_parse("fleet", text, strlen(text), err, sizeof(err));
    if (p == NULL || relay_policy_validate(p, err, sizeof(err)) != 0) {
        printf("FAIL fleet policy: %s\n", err);
        relay_policy_free(p);
        return NULL;
    }

    return p;
}


static void
t_for_node(void)
{
    char                 *own[] = { "bulk", "other" }, err[512], *text;
    relay_policy_t       *p;
    relay_scope_label_t   us[] = { { "region", "us" }, { "rack", "r13" } };
    relay_scope_node_t    n2 = { "relay-2", us, 2 };
    relay_scope_node_t    bare = { "relay-9", NULL, 0 };

    t_begin("what stays for a node of eu, rack r12");
    p = t_fleet_policy(t_fleet);

    if (p == NULL
        || relay_policy_for_node(p, &t_node, own, 2, err, sizeof(err)) != 0)
    {
        t_fail("for_node: %s", p ? err : "no policy");

    } else {
        text = relay_policy_render(p);

        if (text == NULL || strcmp(text,
                "route a.example [eu.example];\n"
                "route b.example [b.example];\n"
                "\n"
                "egress_pool rackpool ehlo=r12.example 192.0.2.12;\n"
                "egress_pool bulk local;\n"
                "\n"
                "egress_rule tenant acme rackpool;\n"
                "egress_rule tenant news bulk;\n") != 0)
        {
            t_fail("got:\n%s", text ? text : "(null)");
        }

        if (relay_policy_validate(p, err, sizeof(err)) != 0) {
            t_fail("the node's policy does not validate: %s", err);
        }

        free(text);
    }

    relay_policy_free(p);
    t_end();

    t_begin("what stays for relay-2 of us, rack r13");
    p = t_fleet_policy(t_fleet);

    if (p == NULL
        || relay_policy_for_node(p, &n2, own, 1, err, sizeof(err)) != 0
        || p->n_routes != 2 || strcmp(p->routes[0]->next_hops[0],
                                      "[us.example]") != 0
        || p->n_retry != 1 || p->retry[0]->nodes[0] != '\0'
        || p->n_egress_pools != 2
        || strcmp(p->egress_pools[0]->ehlo_name, "r13.example") != 0)
    {
        t_fail("for_node: %s", err);
    }

    relay_policy_free(p);
    t_end();

    t_begin("a rule whose pool selects other nodes");
    p = t_fleet_policy(t_fleet);

    if (p == NULL
        || relay_policy_for_node(p, &bare, own, 2, err, sizeof(err)) != -1
        || strcmp(err, "egress_rules[0].pool: \"rackpool\" is not defined "
                  "for node relay-9: its egress_pool statements select "
                  "other nodes") != 0
        || p->n_routes != 3)
    {
        t_fail("got \"%s\"", err);
    }

    relay_policy_free(p);
    t_end();

    t_begin("a local pool the node lacks");
    p = t_fleet_policy(t_fleet);

    if (p == NULL
        || relay_policy_for_node(p, &t_node, own + 1, 1, err, sizeof(err))
           != -1
        || strcmp(err, "egress_pools[2]: \"bulk\" is to be each node's own "
                  "pool, but node relay-1 has no relay_egress_pool bulk")
           != 0)
    {
        t_fail("got \"%s\"", err);
    }

    relay_policy_free(p);
    t_end();

    t_begin("two scopes select one node");
    p = t_fleet_policy("route a.example [x.example] nodes=rack=r12;\n"
                       "route b.example [y.example];\n"
                       "route a.example [z.example] nodes=region=eu;\n");

    if (p == NULL
        || relay_policy_for_node(p, &t_node, NULL, 0, err, sizeof(err)) != -1
        || strcmp(err, "routes[2].pattern: \"a.example\" duplicates "
                  "routes[0] on node relay-1: scopes \"rack=r12\" and "
                  "\"region=eu\" both select it") != 0
        || p->n_routes != 3)
    {
        t_fail("got \"%s\"", err);
    }

    relay_policy_free(p);
    t_end();

    t_begin("unscoped: nothing changes");
    p = t_fleet_policy("route a.example [x.example];\n"
                       "tls * optional;\n");

    if (p == NULL
        || relay_policy_for_node(p, &bare, NULL, 0, err, sizeof(err)) != 0
        || p->n_routes != 1 || p->n_tls != 1)
    {
        t_fail("got \"%s\"", err);
    }

    relay_policy_free(p);
    t_end();
}


int
main(void)
{
    t_selector_syntax();
    t_selector_match();
    t_text();
    t_render();
    t_directives();
    t_for_node();

    return t_summary("test_scope");
}
