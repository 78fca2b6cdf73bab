
/*
 * Copyright (C) The relay authors
 */


/*
 * Selectors of nodes (relay_scope.h): syntax, canonical form, matching.
 * Pure functions over strings: no allocation, so that the module's gRPC
 * thread, the master at configuration time and controld can all call
 * them.  A selector is split into at most RELAY_SCOPE_MAX_TERMS terms
 * pointing into it; matching is a pass per key over the terms.
 */


#include <string.h>

#include "relay_scope.h"


typedef struct {
    const char                 *key;
    size_t                      key_len;
    const char                 *value;
    size_t                      value_len;
} relay_scope_term_t;


static const char *relay_scope_terms(const char *s, relay_scope_term_t *t,
    size_t *n);
static const char *relay_scope_check_key(const char *p, size_t len);
static const char *relay_scope_check_value(const char *p, size_t len);
static int relay_scope_chars(const char *p, size_t len, int upper);
static int relay_scope_cmp(const relay_scope_term_t *a,
    const relay_scope_term_t *b);
static size_t relay_scope_sort(relay_scope_term_t *t, size_t n);
static const char *relay_scope_value_of(const relay_scope_node_t *node,
    const char *key, size_t len);


const char *
relay_scope_check(const char *s)
{
    size_t              n;
    relay_scope_term_t  t[RELAY_SCOPE_MAX_TERMS];

    return relay_scope_terms(s, t, &n);
}


/* s into its terms: NULL, or why it is not a selector */

static const char *
relay_scope_terms(const char *s, relay_scope_term_t *t, size_t *n)
{
    size_t       len;
    const char  *p, *end, *eq, *why;

    *n = 0;

    len = strlen(s);

    if (len == 0) {
        return NULL;
    }

    if (len > RELAY_SCOPE_MAX_LEN) {
        return "longer than 1024 characters";
    }

    for (p = s; ; p = end + 1) {
        end = strchr(p, ',');
        if (end == NULL) {
            end = s + len;
        }

        if (end == p) {
            return "an empty term (\",\" at the start, the end or twice)";
        }

        if (*n == RELAY_SCOPE_MAX_TERMS) {
            return "more than 32 terms";
        }

        eq = memchr(p, '=', end - p);
        if (eq == NULL) {
            return "a term is not KEY=VALUE";
        }

        why = relay_scope_check_key(p, eq - p);
        if (why == NULL) {
            why = relay_scope_check_value(eq + 1, end - eq - 1);
        }

        if (why) {
            return why;
        }

        t[*n].key = p;
        t[*n].key_len = eq - p;
        t[*n].value = eq + 1;
        t[*n].value_len = end - eq - 1;
        (*n)++;

        if (*end == '\0') {
            return NULL;
        }
    }
}


/* a label name: 1-63 of [a-z0-9_.-], a letter or a digit first */

static const char *
relay_scope_check_key(const char *p, size_t len)
{
    if (len == 0) {
        return "an empty label name";
    }

    if (len > 63) {
        return "a label name longer than 63 characters";
    }

    if (!((p[0] >= 'a' && p[0] <= 'z') || (p[0] >= '0' && p[0] <= '9'))) {
        return "a label name must start with a-z or 0-9";
    }

    return relay_scope_chars(p, len, 0)
           ? "a label name is made of a-z 0-9 _ . -" : NULL;
}


/* a value: 1-128 of [A-Za-z0-9_.-] */

static const char *
relay_scope_check_value(const char *p, size_t len)
{
    if (len == 0) {
        return "an empty value";
    }

    if (len > 128) {
        return "a value longer than 128 characters";
    }

    return relay_scope_chars(p, len, 1)
           ? "a value is made of A-Z a-z 0-9 _ . -" : NULL;
}


/* 0 when p is made of a-z 0-9 _ . - (and A-Z with upper) only */

static int
relay_scope_chars(const char *p, size_t len, int upper)
{
    size_t  i;

    for (i = 0; i < len; i++) {
        if (!((p[i] >= 'a' && p[i] <= 'z') || (p[i] >= '0' && p[i] <= '9')
              || (upper && p[i] >= 'A' && p[i] <= 'Z')
              || p[i] == '_' || p[i] == '.' || p[i] == '-'))
        {
            return -1;
        }
    }

    return 0;
}


const char *
relay_scope_label_check(const char *name, const char *value)
{
    const char  *why;

    why = relay_scope_check_key(name, strlen(name));
    if (why) {
        return why;
    }

    if (strcmp(name, "node") == 0) {
        return "\"node\" is the node id, not a label";
    }

    return relay_scope_check_value(value, strlen(value));
}


int
relay_scope_canonical(const char *s, char *buf, size_t len)
{
    size_t              i, n, used;
    relay_scope_term_t  t[RELAY_SCOPE_MAX_TERMS];

    if (relay_scope_terms(s, t, &n) != NULL || len == 0) {
        return -1;
    }

    n = relay_scope_sort(t, n);
    used = 0;

    for (i = 0; i < n; i++) {
        if (used + (i > 0) + t[i].key_len + 1 + t[i].value_len + 1 > len) {
            return -1;
        }

        if (i > 0) {
            buf[used++] = ',';
        }

        memcpy(buf + used, t[i].key, t[i].key_len);
        used += t[i].key_len;
        buf[used++] = '=';
        memcpy(buf + used, t[i].value, t[i].value_len);
        used += t[i].value_len;
    }

    buf[used] = '\0';

    return 0;
}


int
relay_scope_same(const char *a, const char *b)
{
    char  ca[RELAY_SCOPE_MAX_LEN + 1], cb[RELAY_SCOPE_MAX_LEN + 1];

    if (relay_scope_canonical(a, ca, sizeof(ca)) != 0
        || relay_scope_canonical(b, cb, sizeof(cb)) != 0)
    {
        return strcmp(a, b) == 0;
    }

    return strcmp(ca, cb) == 0;
}


static int
relay_scope_cmp(const relay_scope_term_t *a, const relay_scope_term_t *b)
{
    int     rc;
    size_t  n;

    n = a->key_len < b->key_len ? a->key_len : b->key_len;
    rc = memcmp(a->key, b->key, n);

    if (rc == 0 && a->key_len != b->key_len) {
        rc = a->key_len < b->key_len ? -1 : 1;
    }

    if (rc != 0) {
        return rc;
    }

    n = a->value_len < b->value_len ? a->value_len : b->value_len;
    rc = memcmp(a->value, b->value, n);

    if (rc == 0 && a->value_len != b->value_len) {
        rc = a->value_len < b->value_len ? -1 : 1;
    }

    return rc;
}


/* insertion sort (32 terms at most), then duplicates out: the new count */

static size_t
relay_scope_sort(relay_scope_term_t *t, size_t n)
{
    size_t              i, j;
    relay_scope_term_t  x;

    for (i = 1; i < n; i++) {
        x = t[i];

        for (j = i; j > 0 && relay_scope_cmp(&t[j - 1], &x) > 0; j--) {
            t[j] = t[j - 1];
        }

        t[j] = x;
    }

    for (i = 0, j = 0; i < n; i++) {
        if (j == 0 || relay_scope_cmp(&t[j - 1], &t[i]) != 0) {
            t[j++] = t[i];
        }
    }

    return j;
}


int
relay_scope_match(const char *s, const relay_scope_node_t *node)
{
    size_t               i, k, n;
    const char          *have;
    relay_scope_term_t   t[RELAY_SCOPE_MAX_TERMS];
    int                  seen, found;

    if (s == NULL || s[0] == '\0') {
        return 1;
    }

    if (relay_scope_terms(s, t, &n) != NULL) {
        return 0;
    }

    for (i = 0; i < n; i++) {

        /* a key once: at its first term, with all its terms */

        seen = 0;

        for (k = 0; k < i; k++) {
            if (t[k].key_len == t[i].key_len
                && memcmp(t[k].key, t[i].key, t[i].key_len) == 0)
            {
                seen = 1;
                break;
            }
        }

        if (seen) {
            continue;
        }

        have = relay_scope_value_of(node, t[i].key, t[i].key_len);
        found = 0;

        for (k = i; have && k < n; k++) {
            if (t[k].key_len == t[i].key_len
                && memcmp(t[k].key, t[i].key, t[i].key_len) == 0
                && strlen(have) == t[k].value_len
                && memcmp(have, t[k].value, t[k].value_len) == 0)
            {
                found = 1;
                break;
            }
        }

        if (!found) {
            return 0;
        }
    }

    return 1;
}


/* the node's value of a key: its id for "node", else a label's; NULL */

static const char *
relay_scope_value_of(const relay_scope_node_t *node, const char *key,
    size_t len)
{
    size_t  i;

    if (len == 4 && memcmp(key, "node", 4) == 0) {
        return node->id;
    }

    for (i = 0; i < node->nlabels; i++) {
        if (strlen(node->labels[i].name) == len
            && memcmp(node->labels[i].name, key, len) == 0)
        {
            return node->labels[i].value;
        }
    }

    return NULL;
}
