
/*
 * Copyright (C) The relay authors
 */


#ifndef _RELAY_SCOPE_H_INCLUDED_
#define _RELAY_SCOPE_H_INCLUDED_


/*
 * Selectors of nodes: which nodes a scoped policy statement applies to,
 * which nodes a canary goes to.  A selector is "" (every node) or terms
 * "KEY=VALUE" joined by ",": KEY a label name or "node" (the node's id).
 * Terms of one key select a node when any of them matches its value of
 * that key; terms of different keys when every key does:
 *
 *   rack=r12                  the nodes labelled rack=r12
 *   node=relay-1,node=relay-2 those two nodes
 *   region=eu,rack=r1,rack=r2 in region eu, on rack r1 or r2
 *
 * Label names: 1-63 of [a-z0-9_.-], starting with a letter or a digit;
 * values: 1-128 of [A-Za-z0-9_.-] (node ids are the same).  A node without
 * a label is not selected by a term of that label.
 */


#include <stddef.h>


#define RELAY_SCOPE_MAX_LEN     1024
#define RELAY_SCOPE_MAX_TERMS   32


typedef struct {
    const char                 *name;
    const char                 *value;
} relay_scope_label_t;


/* a node as selectors see it */

typedef struct {
    const char                 *id;
    const relay_scope_label_t  *labels;
    size_t                      nlabels;
} relay_scope_node_t;


/* NULL, or why s is not a selector; "" is one (every node) */
const char *relay_scope_check(const char *s);

/*
 * The canonical form of selector s into buf (len bytes, strlen(s) + 1 is
 * enough): terms sorted by key then value, each once.  0, or -1 when s is
 * not a selector or buf is too small.
 */
int relay_scope_canonical(const char *s, char *buf, size_t len);

/* 1 when the selectors a and b select the same nodes as written */
int relay_scope_same(const char *a, const char *b);

/* 1 when selector s selects node ("" selects every node), else 0 */
int relay_scope_match(const char *s, const relay_scope_node_t *node);

/* NULL, or why name=value is not a label a node may carry */
const char *relay_scope_label_check(const char *name, const char *value);


#endif /* _RELAY_SCOPE_H_INCLUDED_ */
