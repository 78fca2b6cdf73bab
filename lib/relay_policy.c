
/*
 * Copyright (C) The relay authors
 */


/*
 * The policy text form: parser, canonical renderer and validation.
 *
 * Tokens: words, double-quoted strings ("\"" and "\\" escapes) and ";".
 * A word may mix bare and quoted parts (backoff_reply="rate limited");
 * its first unquoted "=" makes it a parameter NAME=VALUE.  "#" starts a
 * comment where a token could start.  Leading "# version N", "# author X"
 * and "# created YYYY-MM-DDTHH:MM:SSZ" comments (what the renderer
 * writes) fill version, author and created_unix, so that a rendered
 * policy parses back to the same policy.
 *
 * One grammar: nginx.conf's directives that mirror statements hand their
 * arguments to relay_policy_add() as words, which the same statement
 * handlers parse (a word stands for a token, its first "=" for the first
 * unquoted one), and the module validates what it built with the same
 * checks as controld.  Only the place differs in a message: "FILE:LINE:"
 * in front of a text's, nginx's "in FILE:LINE" after a directive's.
 *
 * Decisions the header leaves open:
 *   - a hop is "[HOST]", "[HOST]:PORT", "HOST" or "HOST:PORT"; HOST is a
 *     lowercase DNS name, or inside brackets also an IPv4 or IPv6 literal
 *     ("[192.0.2.1]:25", "[2001:db8::1]"); an IP address without brackets
 *     is refused (it would mean "the MX of an address"); PORT is 1..65535;
 *   - an egress weight of 0 (proto3's unset) counts as 1; at most 1000;
 *   - the parser keeps names as written; validation refuses uppercase.
 */


#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdarg.h>
#include <stdint.h>
#include <time.h>
#include <errno.h>
#include <arpa/inet.h>

#include "relay_buf.h"
#include "relay_policy.h"
#include "relay_scope.h"


#define RELAY_POLICY_NO_EQ           ((size_t) -1)
#define RELAY_POLICY_MAX_NAME        253
#define RELAY_POLICY_MAX_TEXT        1024
#define RELAY_POLICY_MAX_WEIGHT      1000
#define RELAY_POLICY_MAX_LISTS       32      /* repeated fields of Policy */
#define RELAY_POLICY_MAX_ENTRIES     100000  /* in each list of Policy */
#define RELAY_POLICY_MAX_HOPS        64      /* in one list of hops */
#define RELAY_POLICY_MAX_ADDRESSES   32      /* in one egress pool */
#define RELAY_POLICY_MAX_CREATED     253402300799LL  /* 9999-12-31 */

#define relay_policy_nomem(ps)                                                \
    relay_policy_perror(ps, (ps)->line, "out of memory")


typedef struct {
    char          *data;              /* malloc()ed, NUL-terminated */
    size_t         len;
    size_t         eq;                /* first unquoted '=', or NO_EQ */
    unsigned       line;
} relay_policy_token_t;


typedef struct {
    const char            *name;
    char                  *err;
    size_t                 errlen;
    relay_policy_t        *policy;
    relay_policy_token_t  *tok;
    size_t                 ntok;
    size_t                 ctok;
    unsigned               line;              /* the statement's first line */
    unsigned               comment_seen:1;
    unsigned               directive:1;       /* nginx.conf's words */
} relay_policy_parse_t;


/*
 * Validation finds what a list holds twice in one pass: each element goes
 * into a hash table of the strings (and keys) seen so far.  A new
 * generation empties the table without touching it.
 */

typedef struct {
    int            key;               /* a list's key (EgressRule's), or 0 */
    const char    *s;                 /* a pattern, match, name or hop */
    const char    *also;              /* a second string, or NULL */
    const char    *nodes;             /* the node selector, or NULL */
} relay_policy_seen_key_t;


typedef struct {
    relay_policy_seen_key_t   k;
    size_t                    index;
    unsigned                  gen;
} relay_policy_seen_entry_t;


typedef struct {
    relay_policy_seen_entry_t  *e;
    size_t                      mask;
    unsigned                    gen;
} relay_policy_seen_t;


/* the tables of one validation: a list, the items of one element, pools */

typedef struct {
    relay_policy_seen_t    list;
    relay_policy_seen_t    items;
    relay_policy_seen_t    pools;
} relay_policy_check_t;


typedef enum {
    RELAY_POLICY_PARAM_NUMBER = 0,
    RELAY_POLICY_PARAM_DURATION,
    RELAY_POLICY_PARAM_STRING,
    RELAY_POLICY_PARAM_KEYWORD
} relay_policy_param_type_e;


typedef struct {
    const char                *name;
    relay_policy_param_type_e  type;
    int                        required;
    size_t                     offset;       /* in the message */
    const char *const         *words;        /* KEYWORD: NULL-ended; the
                                                index is the enum value */
} relay_policy_param_t;


typedef int (*relay_policy_stmt_pt)(relay_policy_parse_t *ps);

typedef void (*relay_policy_render_pt)(relay_buf_t *b, const void *elt);


typedef struct {
    const char            *name;
    relay_policy_stmt_pt   handler;
} relay_policy_stmt_t;


static int relay_policy_tokenize(relay_policy_parse_t *ps, const char *text,
    size_t len);
static int relay_policy_words(relay_policy_parse_t *ps, char *const *words,
    size_t n);
static void relay_policy_lists_mark(const relay_policy_t *p, size_t *lists);
static void relay_policy_lists_rollback(relay_policy_t *p,
    const size_t *lists);
static int relay_policy_grow(relay_policy_parse_t *ps, char **data,
    size_t *size);
static void relay_policy_header(relay_policy_parse_t *ps, const char *p,
    size_t n);
static unsigned relay_policy_digits(const char *p, size_t n);
static int relay_policy_statement(relay_policy_parse_t *ps);
static int relay_policy_scope_take(relay_policy_parse_t *ps, char **scope);
static int relay_policy_scope_set(relay_policy_t *p, const size_t *lists,
    char *scope);
static const ProtobufCFieldDescriptor *relay_policy_list_at(unsigned k);
static void relay_policy_perror(relay_policy_parse_t *ps, unsigned line,
    const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void relay_policy_tokens_free(relay_policy_parse_t *ps);
static int relay_policy_positional(relay_policy_parse_t *ps, size_t min,
    size_t max);
static int relay_policy_params(relay_policy_parse_t *ps, size_t first,
    void *msg, const relay_policy_param_t *params, size_t nparams);
static int relay_policy_number(const char *s, uint32_t *v);
static int relay_policy_duration(const char *s, uint32_t *v);
static char *relay_policy_strdup(const char *s);
static int relay_policy_push(void *arrayp, size_t *n, void *elt);
static int relay_policy_key(relay_policy_parse_t *ps, const char **keys,
    int n);
static void *relay_policy_append(relay_policy_parse_t *ps,
    const ProtobufCMessageDescriptor *d, void *arrayp, size_t *n);
static char **relay_policy_strings(relay_policy_parse_t *ps, size_t first,
    size_t *n);

static int relay_policy_stmt_comment(relay_policy_parse_t *ps);
static int relay_policy_stmt_route(relay_policy_parse_t *ps);
static int relay_policy_stmt_backup_mx(relay_policy_parse_t *ps);
static int relay_policy_stmt_fallback_relay(relay_policy_parse_t *ps);
static int relay_policy_stmt_retry(relay_policy_parse_t *ps);
static int relay_policy_stmt_inbound_limit(relay_policy_parse_t *ps);
static int relay_policy_stmt_destination_limit(relay_policy_parse_t *ps);
static int relay_policy_stmt_egress_pool(relay_policy_parse_t *ps);
static int relay_policy_stmt_egress_rule(relay_policy_parse_t *ps);
static int relay_policy_stmt_tls(relay_policy_parse_t *ps);
static int relay_policy_stmt_dkim(relay_policy_parse_t *ps);

static void relay_policy_render_header(relay_buf_t *b,
    const relay_policy_t *p);
static void relay_policy_render_section(relay_buf_t *b);
static void relay_policy_render_list(relay_buf_t *b, void *const *elts,
    size_t n, relay_policy_render_pt render);
static void relay_policy_render_scope(relay_buf_t *b, const void *elt);
static void relay_policy_render_route(relay_buf_t *b, const void *elt);
static void relay_policy_render_backup_mx(relay_buf_t *b, const void *elt);
static void relay_policy_render_hops(relay_buf_t *b, const char *statement,
    const void *elt, const char *hops);
static void relay_policy_render_retry(relay_buf_t *b, const void *elt);
static void relay_policy_render_inbound(relay_buf_t *b, const void *elt);
static void relay_policy_render_destination(relay_buf_t *b,
    const void *elt);
static void relay_policy_render_pool(relay_buf_t *b, const void *elt);
static void relay_policy_render_rule(relay_buf_t *b, const void *elt);
static void relay_policy_render_tls(relay_buf_t *b, const void *elt);
static void relay_policy_render_dkim(relay_buf_t *b, const void *elt);
static void relay_policy_render_keyed(relay_buf_t *b, const char *statement,
    const char **keys, unsigned nkeys, unsigned key, const char *match);
static void relay_policy_buf_number(relay_buf_t *b, const char *name,
    uint32_t v);
static void relay_policy_buf_words(relay_buf_t *b, char **words, size_t n);
static void relay_policy_buf_word(relay_buf_t *b, const char *s, int always);
static void relay_policy_buf_duration(relay_buf_t *b, const char *name,
    uint32_t v);

static int relay_policy_check(const relay_policy_t *p, int complete,
    char *err, size_t errlen);
static int relay_policy_check_all(const relay_policy_t *p, int complete,
    relay_policy_check_t *ck, char *err, size_t errlen);
static int relay_policy_check_lengths(const relay_policy_t *p, char *err,
    size_t errlen);
static int relay_policy_check_scopes(const relay_policy_t *p, char *err,
    size_t errlen);
static const char *relay_policy_scope_of(const void *elt);
static int relay_policy_seen_init(relay_policy_seen_t *st, size_t n);
static void relay_policy_seen_reset(relay_policy_seen_t *st);
static size_t relay_policy_seen(relay_policy_seen_t *st,
    const relay_policy_seen_key_t *k, size_t index);
static int relay_policy_seen_has(relay_policy_seen_t *st, const char *s);
static size_t relay_policy_seen_hash(int key, const char *s);
static void relay_policy_seen_free(relay_policy_seen_t *st);
static int relay_policy_check_hop_lists(void *const *elts, size_t n,
    const char *list, const char *hops, const char *none,
    relay_policy_check_t *ck, char *err, size_t errlen);
static int relay_policy_check_pattern_at(void *const *elts, size_t i,
    const char *list, relay_policy_seen_t *seen, char *err, size_t errlen);
static int relay_policy_check_match_at(void *const *elts, size_t i,
    const char *list, const char *why, relay_policy_seen_t *seen, char *err,
    size_t errlen);
static const void *relay_policy_field_of(const void *elt, const char *name,
    size_t *n);
static const char *relay_policy_pattern_of(const void *elt);
static char **relay_policy_strings_of(const void *elt, const char *field,
    size_t *n);
static int relay_policy_check_retry(const relay_policy_t *p,
    relay_policy_check_t *ck, char *err, size_t errlen);
static int relay_policy_check_inbound(const relay_policy_t *p,
    relay_policy_check_t *ck, char *err, size_t errlen);
static int relay_policy_check_destinations(const relay_policy_t *p,
    relay_policy_check_t *ck, char *err, size_t errlen);
static int relay_policy_check_pools(const relay_policy_t *p,
    relay_policy_check_t *ck, char *err, size_t errlen);
static int relay_policy_check_addresses(const relay_policy_pool_t *pool,
    size_t i, relay_policy_check_t *ck, char *err, size_t errlen);
static int relay_policy_check_rules(const relay_policy_t *p, int complete,
    relay_policy_check_t *ck, char *err, size_t errlen);
static int relay_policy_check_tls(const relay_policy_t *p,
    relay_policy_check_t *ck, char *err, size_t errlen);
static int relay_policy_check_dkim(const relay_policy_t *p,
    relay_policy_check_t *ck, char *err, size_t errlen);
static void relay_policy_verror(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static const char *relay_policy_check_name(const char *s);
static const char *relay_policy_check_pattern(const char *s);
static const char *relay_policy_check_cidr(const char *s);
static const char *relay_policy_check_text(const char *s, size_t max);
static const char *relay_policy_check_word(const char *s);
static int relay_policy_check_hops(char **hops, size_t n, const char *field,
    relay_policy_seen_t *seen, char *err, size_t errlen);
static int relay_policy_is_ipv4(const char *s, size_t len);
static int relay_policy_is_ipv6(const char *s, size_t len);
static int64_t relay_policy_days_from_civil(int64_t y, unsigned m, unsigned d);


static const relay_policy_stmt_t  relay_policy_statements[] = {
    { "comment", relay_policy_stmt_comment },
    { "route", relay_policy_stmt_route },
    { "backup_mx", relay_policy_stmt_backup_mx },
    { "fallback_relay", relay_policy_stmt_fallback_relay },
    { "retry", relay_policy_stmt_retry },
    { "inbound_limit", relay_policy_stmt_inbound_limit },
    { "destination_limit", relay_policy_stmt_destination_limit },
    { "egress_pool", relay_policy_stmt_egress_pool },
    { "egress_rule", relay_policy_stmt_egress_rule },
    { "tls", relay_policy_stmt_tls },
    { "dkim", relay_policy_stmt_dkim },
    { NULL, NULL }
};


static const char  *relay_policy_inbound_keys[] = {
    "client_ip", "auth_user", "sender_domain", "tenant"
};

static const char  *relay_policy_rule_keys[] = {
    "sender_domain", "auth_user", "tenant"
};

#define relay_policy_nkeys(keys)  (int) (sizeof(keys) / sizeof(keys[0]))

/* "scope=" and "per=": by LimitScope and DestinationLimit.Per */

static const char *const  relay_policy_scopes[] = { "node", "fleet", NULL };
static const char *const  relay_policy_pers[] = { "pool", "address", NULL };


/* ---------------------------------------------------------------- parse */


relay_policy_t *
relay_policy_parse(const char *name, const char *text, size_t len, char *err,
    size_t errlen)
{
    relay_policy_parse_t    ps;
    relay_policy_t         *p;

    if (errlen) {
        err[0] = '\0';
    }

    p = relay_policy_new();
    if (p == NULL) {
        relay_policy_verror(err, errlen, "%s: out of memory", name);
        return NULL;
    }

    memset(&ps, 0, sizeof(relay_policy_parse_t));
    ps.name = name;
    ps.err = err;
    ps.errlen = errlen;
    ps.policy = p;

    if (relay_policy_tokenize(&ps, text, len) != 0) {
        relay_policy_tokens_free(&ps);
        free(ps.tok);
        relay_policy_free(p);
        return NULL;
    }

    free(ps.tok);

    return p;
}


int
relay_policy_add(relay_policy_t *p, char *const *words, size_t n, char *err,
    size_t errlen)
{
    int                    rc;
    size_t                 lists[RELAY_POLICY_MAX_LISTS];
    relay_policy_parse_t   ps;

    if (errlen) {
        err[0] = '\0';
    }

    memset(&ps, 0, sizeof(relay_policy_parse_t));
    ps.err = err;
    ps.errlen = errlen;
    ps.policy = p;
    ps.comment_seen = (p->comment != NULL && p->comment[0] != '\0');
    ps.directive = 1;

    if (relay_policy_words(&ps, words, n) != 0) {
        relay_policy_tokens_free(&ps);
        free(ps.tok);
        return -1;
    }

    relay_policy_lists_mark(p, lists);

    rc = relay_policy_statement(&ps);

    if (rc != 0) {
        relay_policy_lists_rollback(p, lists);
    }

    relay_policy_tokens_free(&ps);
    free(ps.tok);

    return rc;
}


/* words as the tokenizer's tokens: a word's first "=" makes a parameter */

static int
relay_policy_words(relay_policy_parse_t *ps, char *const *words, size_t n)
{
    size_t                 i;
    const char            *c, *eq;
    relay_policy_token_t  *t;

    if (n == 0) {
        relay_policy_perror(ps, 0, "empty statement");
        return -1;
    }

    ps->tok = calloc(n, sizeof(relay_policy_token_t));
    if (ps->tok == NULL) {
        relay_policy_perror(ps, 0, "out of memory");
        return -1;
    }

    ps->ctok = n;

    for (i = 0; i < n; i++) {
        for (c = words[i]; *c; c++) {
            if ((unsigned char) *c < 0x20 || *c == 0x7f) {
                relay_policy_perror(ps, 0, "control character");
                return -1;
            }
        }

        t = &ps->tok[i];

        t->data = relay_policy_strdup(words[i]);
        if (t->data == NULL) {
            relay_policy_perror(ps, 0, "out of memory");
            return -1;
        }

        ps->ntok++;

        eq = strchr(t->data, '=');
        t->len = strlen(t->data);
        t->eq = eq ? (size_t) (eq - t->data) : RELAY_POLICY_NO_EQ;
    }

    return 0;
}


/*
 * The lengths of the policy's lists before a statement, and back to them
 * after it failed: a statement adds to one list at most, and what it added
 * is its own (strings and messages from malloc()).
 */

static void
relay_policy_lists_mark(const relay_policy_t *p, size_t *lists)
{
    unsigned                          i, k;
    const ProtobufCFieldDescriptor   *f;

    f = relay__control__v1__policy__descriptor.fields;

    for (i = 0, k = 0; i < relay__control__v1__policy__descriptor.n_fields;
         i++)
    {
        if (f[i].label == PROTOBUF_C_LABEL_REPEATED
            && k < RELAY_POLICY_MAX_LISTS)
        {
            lists[k++] = *(const size_t *) ((const char *) p
                                            + f[i].quantifier_offset);
        }
    }
}


static void
relay_policy_lists_rollback(relay_policy_t *p, const size_t *lists)
{
    void                            **elts;
    size_t                           *n;
    unsigned                          i, k;
    const ProtobufCFieldDescriptor   *f;

    f = relay__control__v1__policy__descriptor.fields;

    for (i = 0, k = 0; i < relay__control__v1__policy__descriptor.n_fields;
         i++)
    {
        if (f[i].label != PROTOBUF_C_LABEL_REPEATED
            || k == RELAY_POLICY_MAX_LISTS)
        {
            continue;
        }

        n = (size_t *) ((char *) p + f[i].quantifier_offset);
        elts = *(void ***) ((char *) p + f[i].offset);

        while (*n > lists[k]) {
            (*n)--;

            if (f[i].type == PROTOBUF_C_TYPE_MESSAGE) {
                protobuf_c_message_free_unpacked(elts[*n], NULL);

            } else {
                free(elts[*n]);
            }
        }

        k++;
    }
}


static int
relay_policy_tokenize(relay_policy_parse_t *ps, const char *text, size_t len)
{
    char                  *q, *data;
    size_t                 n, size;
    unsigned               line, tline, sline;
    relay_policy_token_t  *t;
    const char            *p, *last, *s;
    int                    statements;

    p = text;
    last = text + len;
    line = 1;
    sline = 1;
    statements = 0;

    while (p < last) {

        if (*p == '\n') {
            line++;
            p++;
            continue;
        }

        if (*p == ' ' || *p == '\t' || *p == '\r') {
            p++;
            continue;
        }

        if (*p == '#') {
            s = p;
            while (p < last && *p != '\n') {
                p++;
            }

            if (!statements && ps->ntok == 0) {
                relay_policy_header(ps, s, p - s);
            }

            continue;
        }

        if (*p == ';') {
            if (ps->ntok == 0) {
                relay_policy_perror(ps, line, "empty statement");
                return -1;
            }

            ps->line = sline;

            if (relay_policy_statement(ps) != 0) {
                return -1;
            }

            relay_policy_tokens_free(ps);
            statements = 1;
            p++;
            continue;
        }

        /* a token: bare and quoted parts up to a space, ";" or the end */

        if (ps->ntok == ps->ctok) {
            n = ps->ctok ? 2 * ps->ctok : 8;
            t = realloc(ps->tok, n * sizeof(relay_policy_token_t));
            if (t == NULL) {
                relay_policy_perror(ps, line, "out of memory");
                return -1;
            }

            ps->tok = t;
            ps->ctok = n;
        }

        tline = line;

        if (ps->ntok == 0) {
            sline = line;
        }

        size = 64;

        data = malloc(size);
        if (data == NULL) {
            relay_policy_perror(ps, line, "out of memory");
            return -1;
        }

        t = &ps->tok[ps->ntok];
        t->data = data;
        t->len = 0;
        t->eq = RELAY_POLICY_NO_EQ;
        t->line = tline;
        ps->ntok++;

        q = data;

        while (p < last) {

            if (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n'
                || *p == ';')
            {
                break;
            }

            if ((size_t) (q - data) + 2 >= size) {
                n = q - data;

                if (relay_policy_grow(ps, &t->data, &size) != 0) {
                    return -1;
                }

                data = t->data;
                q = data + n;
            }

            if (*p == '"') {
                p++;

                for ( ;; ) {
                    if (p == last || *p == '\n') {
                        relay_policy_perror(ps, tline,
                                            "unterminated string");
                        return -1;
                    }

                    if (*p == '"') {
                        p++;
                        break;
                    }

                    if (*p == '\\') {
                        p++;

                        if (p == last || (*p != '"' && *p != '\\')) {
                            relay_policy_perror(ps, line,
                                                "bad escape in string "
                                                "(only \\\" and \\\\)");
                            return -1;
                        }
                    }

                    if ((unsigned char) *p < 0x20 || *p == 0x7f) {
                        relay_policy_perror(ps, line,
                                            "control character in string");
                        return -1;
                    }

                    if ((size_t) (q - data) + 2 >= size) {
                        n = q - data;

                        if (relay_policy_grow(ps, &t->data, &size) != 0) {
                            return -1;
                        }

                        data = t->data;
                        q = data + n;
                    }

                    *q++ = *p++;
                }

                continue;
            }

            if ((unsigned char) *p < 0x20 || *p == 0x7f) {
                relay_policy_perror(ps, line, "control character");
                return -1;
            }

            if (*p == '=' && t->eq == RELAY_POLICY_NO_EQ) {
                t->eq = q - data;
            }

            *q++ = *p++;
        }

        *q = '\0';
        t->len = q - data;
    }

    if (ps->ntok) {
        relay_policy_perror(ps, ps->tok[ps->ntok - 1].line,
                            "missing \";\" at the end of \"%s\"",
                            ps->tok[0].data);
        return -1;
    }

    return 0;
}


static int
relay_policy_grow(relay_policy_parse_t *ps, char **data, size_t *size)
{
    char  *d;

    if (*size > 1024 * 1024) {
        relay_policy_perror(ps, ps->tok[ps->ntok - 1].line, "token too long");
        return -1;
    }

    d = realloc(*data, *size * 2);
    if (d == NULL) {
        relay_policy_perror(ps, ps->tok[ps->ntok - 1].line, "out of memory");
        return -1;
    }

    *data = d;
    *size *= 2;

    return 0;
}


/* "# version N", "# author X", "# created 2024-01-02T03:04:05Z" */

static void
relay_policy_header(relay_policy_parse_t *ps, const char *p, size_t n)
{
    char                *e;
    char                 buf[512];
    size_t               i;
    unsigned             y, mo, d, h, mi, s;
    unsigned long long   v;

    if (n >= sizeof(buf)) {
        return;
    }

    memcpy(buf, p, n);
    buf[n] = '\0';

    if (n > 10 && strncmp(buf, "# version ", 10) == 0) {
        for (i = 10; i < n; i++) {
            if (buf[i] < '0' || buf[i] > '9') {
                return;
            }
        }

        errno = 0;
        v = strtoull(buf + 10, &e, 10);

        if (errno == 0) {
            ps->policy->version = v;
        }

        return;
    }

    if (n > 9 && strncmp(buf, "# author ", 9) == 0) {
        e = relay_policy_strdup(buf + 9);
        if (e == NULL) {
            return;
        }

        if (ps->policy->author != protobuf_c_empty_string) {
            free(ps->policy->author);
        }

        ps->policy->author = e;
        return;
    }

    if (n != 30 || strncmp(buf, "# created ", 10) != 0) {
        return;
    }

    p = buf + 10;

    for (i = 0; i < 20; i++) {
        switch (i) {
        case 4:
        case 7:
            if (p[i] != '-') {
                return;
            }
            break;
        case 10:
            if (p[i] != 'T') {
                return;
            }
            break;
        case 13:
        case 16:
            if (p[i] != ':') {
                return;
            }
            break;
        case 19:
            if (p[i] != 'Z') {
                return;
            }
            break;
        default:
            if (p[i] < '0' || p[i] > '9') {
                return;
            }
        }
    }

    y = relay_policy_digits(p, 4);
    mo = relay_policy_digits(p + 5, 2);
    d = relay_policy_digits(p + 8, 2);
    h = relay_policy_digits(p + 11, 2);
    mi = relay_policy_digits(p + 14, 2);
    s = relay_policy_digits(p + 17, 2);

    if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || s > 59)
    {
        return;
    }

    ps->policy->created_unix = relay_policy_days_from_civil(y, mo, d) * 86400
                               + h * 3600 + mi * 60 + s;
}


static unsigned
relay_policy_digits(const char *p, size_t n)
{
    unsigned  v;

    for (v = 0; n; n--, p++) {
        v = v * 10 + (*p - '0');
    }

    return v;
}


static int
relay_policy_statement(relay_policy_parse_t *ps)
{
    char                       *scope;
    size_t                      lists[RELAY_POLICY_MAX_LISTS];
    const relay_policy_stmt_t  *st;

    if (ps->tok[0].eq != RELAY_POLICY_NO_EQ) {
        relay_policy_perror(ps, ps->line, "unknown statement \"%s\"",
                            ps->tok[0].data);
        return -1;
    }

    for (st = relay_policy_statements; st->name; st++) {
        if (strcmp(st->name, ps->tok[0].data) == 0) {
            break;
        }
    }

    if (st->name == NULL) {
        relay_policy_perror(ps, ps->line, "unknown statement \"%s\"",
                            ps->tok[0].data);
        return -1;
    }

    if (relay_policy_scope_take(ps, &scope) != 0) {
        return -1;
    }

    if (scope == NULL) {
        return st->handler(ps);
    }

    relay_policy_lists_mark(ps->policy, lists);

    if (st->handler(ps) != 0) {
        free(scope);
        return -1;
    }

    return relay_policy_scope_set(ps->policy, lists, scope);
}


/*
 * The statement's "nodes=SELECTOR" (its scope) out of its tokens, checked
 * and in
 * canonical form (NULL: none), so that its handler never sees it.  Every
 * statement that adds one element to a list may carry one; the comment
 * and fallback_relay (whose hops add up, a statement is no element) may
 * not, nor may nginx.conf's directives: a node's own file is its scope.
 */

static int
relay_policy_scope_take(relay_policy_parse_t *ps, char **scope)
{
    char                  *value;
    size_t                 i, found;
    const char            *why;
    relay_policy_token_t  *t;

    *scope = NULL;
    found = 0;

    for (i = 1; i < ps->ntok; i++) {
        t = &ps->tok[i];

        if (t->eq != 5 || strncmp(t->data, "nodes", 5) != 0) {
            continue;
        }

        if (ps->directive) {
            relay_policy_perror(ps, t->line, "%s: \"nodes=\" belongs to "
                                "the fleet policy, not to a node's own "
                                "configuration", ps->tok[0].data);
            return -1;
        }

        if (strcmp(ps->tok[0].data, "comment") == 0
            || strcmp(ps->tok[0].data, "fallback_relay") == 0)
        {
            relay_policy_perror(ps, t->line, "%s: cannot be scoped",
                                ps->tok[0].data);
            return -1;
        }

        if (found) {
            relay_policy_perror(ps, t->line, "%s: duplicate parameter "
                                "\"nodes\"", ps->tok[0].data);
            return -1;
        }

        found = i;
    }

    if (found == 0) {
        return 0;
    }

    t = &ps->tok[found];
    value = t->data + 6;

    why = value[0] ? relay_scope_check(value) : "empty";
    if (why) {
        relay_policy_perror(ps, t->line, "%s: bad nodes \"%s\": %s",
                            ps->tok[0].data, value, why);
        return -1;
    }

    *scope = malloc(strlen(value) + 1);
    if (*scope == NULL) {
        relay_policy_nomem(ps);
        return -1;
    }

    (void) relay_scope_canonical(value, *scope, strlen(value) + 1);

    /* the token goes: the handler sees the statement without it */

    free(t->data);
    memmove(t, t + 1, (ps->ntok - found - 1) * sizeof(relay_policy_token_t));
    ps->ntok--;

    return 0;
}


/* the scope onto the element the statement appended (the list that grew) */

static int
relay_policy_scope_set(relay_policy_t *p, const size_t *lists, char *scope)
{
    char                            **sp;
    size_t                            now[RELAY_POLICY_MAX_LISTS];
    unsigned                          k;
    ProtobufCMessage                 *m;
    const ProtobufCFieldDescriptor   *f, *sf;

    relay_policy_lists_mark(p, now);

    for (k = 0; k < RELAY_POLICY_MAX_LISTS; k++) {
        f = relay_policy_list_at(k);

        if (f == NULL) {
            break;
        }

        if (now[k] <= lists[k] || f->type != PROTOBUF_C_TYPE_MESSAGE) {
            continue;
        }

        m = (*(ProtobufCMessage ***) ((char *) p + f->offset))[now[k] - 1];
        sf = protobuf_c_message_descriptor_get_field_by_name(m->descriptor,
                                                             "nodes");
        if (sf == NULL) {
            break;
        }

        sp = (char **) ((char *) m + sf->offset);

        if (*sp != protobuf_c_empty_string) {
            free(*sp);
        }

        *sp = scope;
        return 0;
    }

    free(scope);

    return 0;
}


/* the k-th list of Policy (its k-th repeated field), or NULL */

static const ProtobufCFieldDescriptor *
relay_policy_list_at(unsigned k)
{
    unsigned                          i;
    const ProtobufCFieldDescriptor   *f;

    f = relay__control__v1__policy__descriptor.fields;

    for (i = 0; i < relay__control__v1__policy__descriptor.n_fields; i++) {
        if (f[i].label == PROTOBUF_C_LABEL_REPEATED && k-- == 0) {
            return &f[i];
        }
    }

    return NULL;
}


static void
relay_policy_perror(relay_policy_parse_t *ps, unsigned line, const char *fmt,
    ...)
{
    int      n;
    va_list  args;

    if (ps->errlen == 0) {
        return;
    }

    n = 0;

    if (ps->name != NULL) {
        n = snprintf(ps->err, ps->errlen, "%s:%u: ", ps->name, line);
        if (n < 0 || (size_t) n >= ps->errlen) {
            return;
        }
    }

    va_start(args, fmt);
    vsnprintf(ps->err + n, ps->errlen - n, fmt, args);
    va_end(args);
}


static void
relay_policy_tokens_free(relay_policy_parse_t *ps)
{
    size_t  i;

    for (i = 0; i < ps->ntok; i++) {
        free(ps->tok[i].data);
    }

    ps->ntok = 0;
}


/*
 * Positional arguments after the statement name: between min and max
 * (max 0: any number), none of them a parameter.  Returns how many.
 */

static int
relay_policy_positional(relay_policy_parse_t *ps, size_t min, size_t max)
{
    size_t  i, n;

    for (n = 1; n < ps->ntok && ps->tok[n].eq == RELAY_POLICY_NO_EQ; n++) {
        /* void */
    }

    n--;

    if (n < min) {
        relay_policy_perror(ps, ps->line, "%s: missing argument",
                            ps->tok[0].data);
        return -1;
    }

    if (max && n > max) {
        i = max + 1;
        relay_policy_perror(ps, ps->tok[i].line,
                            "%s: unexpected argument \"%s\"",
                            ps->tok[0].data, ps->tok[i].data);
        return -1;
    }

    return (int) n;
}


/* a statement of positional arguments only: no "name=value" after them */

static int
relay_policy_positional_only(relay_policy_parse_t *ps, size_t min, size_t max)
{
    int  n;

    n = relay_policy_positional(ps, min, max);
    if (n < 0) {
        return -1;
    }

    if ((size_t) n + 1 != ps->ntok) {
        relay_policy_perror(ps, ps->tok[n + 1].line,
                            "%s: unexpected parameter \"%s\"",
                            ps->tok[0].data, ps->tok[n + 1].data);
        return -1;
    }

    return n;
}


static int
relay_policy_params(relay_policy_parse_t *ps, size_t first, void *msg,
    const relay_policy_param_t *params, size_t nparams)
{
    char                  *name, *value, **sp;
    size_t                 i, k;
    uint32_t               v, seen;
    relay_policy_token_t  *t;

    seen = 0;

    for (i = first; i < ps->ntok; i++) {
        t = &ps->tok[i];

        if (t->eq == RELAY_POLICY_NO_EQ) {
            relay_policy_perror(ps, t->line, "%s: unexpected argument \"%s\"",
                                ps->tok[0].data, t->data);
            return -1;
        }

        name = t->data;
        name[t->eq] = '\0';
        value = name + t->eq + 1;

        for (k = 0; k < nparams; k++) {
            if (strcmp(params[k].name, name) == 0) {
                break;
            }
        }

        if (k == nparams) {
            relay_policy_perror(ps, t->line, "%s: unknown parameter \"%s\"",
                                ps->tok[0].data, name);
            return -1;
        }

        if (seen & (1u << k)) {
            relay_policy_perror(ps, t->line,
                                "%s: duplicate parameter \"%s\"",
                                ps->tok[0].data, name);
            return -1;
        }

        seen |= 1u << k;

        switch (params[k].type) {

        case RELAY_POLICY_PARAM_NUMBER:
            if (relay_policy_number(value, &v) != 0) {
                relay_policy_perror(ps, t->line, "%s: bad number \"%s\"",
                                    ps->tok[0].data, value);
                return -1;
            }

            *(uint32_t *) ((char *) msg + params[k].offset) = v;
            break;

        case RELAY_POLICY_PARAM_DURATION:
            if (relay_policy_duration(value, &v) != 0) {
                relay_policy_perror(ps, t->line, "%s: bad duration \"%s\"",
                                    ps->tok[0].data, value);
                return -1;
            }

            *(uint32_t *) ((char *) msg + params[k].offset) = v;
            break;

        case RELAY_POLICY_PARAM_KEYWORD:
            for (v = 0; params[k].words[v]; v++) {
                if (strcmp(params[k].words[v], value) == 0) {
                    break;
                }
            }

            if (params[k].words[v] == NULL) {
                relay_policy_perror(ps, t->line, "%s: bad %s \"%s\" (%s)",
                                    ps->tok[0].data, name, value,
                                    params[k].words == relay_policy_scopes
                                    ? "node or fleet" : "pool or address");
                return -1;
            }

            /* a protobuf-c enum field is an int */
            *(int *) ((char *) msg + params[k].offset) = (int) v;
            break;

        default: /* RELAY_POLICY_PARAM_STRING */
            sp = (char **) ((char *) msg + params[k].offset);

            value = relay_policy_strdup(value);
            if (value == NULL) {
                relay_policy_perror(ps, t->line, "out of memory");
                return -1;
            }

            if (*sp != protobuf_c_empty_string) {
                free(*sp);
            }

            *sp = value;
            break;
        }
    }

    for (k = 0; k < nparams; k++) {
        if (params[k].required && !(seen & (1u << k))) {
            relay_policy_perror(ps, ps->line,
                                "%s: missing parameter \"%s=\"",
                                ps->tok[0].data, params[k].name);
            return -1;
        }
    }

    return 0;
}


static int
relay_policy_number(const char *s, uint32_t *v)
{
    uint64_t  n;

    if (*s == '\0') {
        return -1;
    }

    for (n = 0; *s; s++) {
        if (*s < '0' || *s > '9') {
            return -1;
        }

        n = n * 10 + (*s - '0');

        if (n > UINT32_MAX) {
            return -1;
        }
    }

    *v = (uint32_t) n;

    return 0;
}


static int
relay_policy_duration(const char *s, uint32_t *v)
{
    uint64_t  n, unit;

    if (*s < '0' || *s > '9') {
        return -1;
    }

    for (n = 0; *s >= '0' && *s <= '9'; s++) {
        n = n * 10 + (*s - '0');

        if (n > UINT32_MAX) {
            return -1;
        }
    }

    switch (*s) {
    case '\0':
    case 's':
        unit = 1;
        break;
    case 'm':
        unit = 60;
        break;
    case 'h':
        unit = 3600;
        break;
    case 'd':
        unit = 86400;
        break;
    default:
        return -1;
    }

    if (*s && s[1] != '\0') {
        return -1;
    }

    n *= unit;

    if (n > UINT32_MAX) {
        return -1;
    }

    *v = (uint32_t) n;

    return 0;
}


static char *
relay_policy_strdup(const char *s)
{
    char    *d;
    size_t   n;

    n = strlen(s) + 1;

    d = malloc(n);
    if (d == NULL) {
        return NULL;
    }

    return memcpy(d, s, n);
}


/* appends a pointer to a malloc()ed array of pointers */

static int
relay_policy_push(void *arrayp, size_t *n, void *elt)
{
    void  **a;

    a = realloc(*(void ***) arrayp, (*n + 1) * sizeof(void *));
    if (a == NULL) {
        return -1;
    }

    a[*n] = elt;
    (*n)++;
    *(void ***) arrayp = a;

    return 0;
}


/* tokens from first to the end as a malloc()ed string array */

static char **
relay_policy_strings(relay_policy_parse_t *ps, size_t first, size_t *n)
{
    char   **a;
    size_t   i;

    a = malloc((ps->ntok - first) * sizeof(char *));
    if (a == NULL) {
        return NULL;
    }

    for (i = first; i < ps->ntok; i++) {
        a[i - first] = ps->tok[i].data;
        ps->tok[i].data = NULL;            /* moved */
    }

    *n = ps->ntok - first;

    return a;
}


/* moves a token's string out of the token list */

static char *
relay_policy_take(relay_policy_parse_t *ps, size_t i)
{
    char  *s;

    s = ps->tok[i].data;
    ps->tok[i].data = NULL;

    return s;
}


#define relay_policy_nomem(ps)                                                \
    relay_policy_perror(ps, (ps)->line, "out of memory")


/* the key of "inbound_limit" and "egress_rule": its index in keys[n] */

static int
relay_policy_key(relay_policy_parse_t *ps, const char **keys, int n)
{
    int  k;

    for (k = 0; k < n; k++) {
        if (strcmp(ps->tok[1].data, keys[k]) == 0) {
            return k;
        }
    }

    if (n == 4) {
        relay_policy_perror(ps, ps->tok[1].line,
                            "%s: unknown key \"%s\" (%s, %s, %s or %s)",
                            ps->tok[0].data, ps->tok[1].data, keys[0],
                            keys[1], keys[2], keys[3]);
        return -1;
    }

    relay_policy_perror(ps, ps->tok[1].line,
                        "%s: unknown key \"%s\" (%s, %s or %s)",
                        ps->tok[0].data, ps->tok[1].data, keys[0], keys[1],
                        keys[2]);
    return -1;
}


/* a new message of type d at the end of one of the policy's lists */

static void *
relay_policy_append(relay_policy_parse_t *ps,
    const ProtobufCMessageDescriptor *d, void *arrayp, size_t *n)
{
    void  *m;

    m = malloc(d->sizeof_message);
    if (m == NULL) {
        relay_policy_nomem(ps);
        return NULL;
    }

    protobuf_c_message_init(d, m);

    if (relay_policy_push(arrayp, n, m) != 0) {
        free(m);
        relay_policy_nomem(ps);
        return NULL;
    }

    return m;
}


static int
relay_policy_stmt_comment(relay_policy_parse_t *ps)
{
    relay_policy_t  *p;

    if (relay_policy_positional(ps, 1, 1) < 0) {
        return -1;
    }

    if (ps->ntok > 2) {
        relay_policy_perror(ps, ps->tok[2].line,
                            "comment: unexpected argument \"%s\"",
                            ps->tok[2].data);
        return -1;
    }

    if (ps->comment_seen) {
        relay_policy_perror(ps, ps->line, "duplicate comment");
        return -1;
    }

    ps->comment_seen = 1;
    p = ps->policy;

    if (p->comment != protobuf_c_empty_string) {
        free(p->comment);
    }

    p->comment = relay_policy_take(ps, 1);

    return 0;
}


/* "route PATTERN HOP ..." and "backup_mx PATTERN HOP ...": the same shape */

static int
relay_policy_stmt_hops(relay_policy_parse_t *ps, char **pattern, char ***hops,
    size_t *nhops)
{
    if (relay_policy_positional_only(ps, 2, 0) < 0) {
        return -1;
    }

    *pattern = relay_policy_take(ps, 1);

    *hops = relay_policy_strings(ps, 2, nhops);
    if (*hops == NULL) {
        relay_policy_nomem(ps);
        return -1;
    }

    return 0;
}


static int
relay_policy_stmt_route(relay_policy_parse_t *ps)
{
    relay_policy_route_t  *r;

    r = relay_policy_append(ps, &relay__control__v1__route__descriptor,
                            &ps->policy->routes, &ps->policy->n_routes);
    if (r == NULL) {
        return -1;
    }

    return relay_policy_stmt_hops(ps, &r->pattern, &r->next_hops,
                                  &r->n_next_hops);
}


static int
relay_policy_stmt_backup_mx(relay_policy_parse_t *ps)
{
    relay_policy_backup_mx_t  *b;

    b = relay_policy_append(ps, &relay__control__v1__backup_mx__descriptor,
                            &ps->policy->backup_mx, &ps->policy->n_backup_mx);
    if (b == NULL) {
        return -1;
    }

    return relay_policy_stmt_hops(ps, &b->pattern, &b->hosts, &b->n_hosts);
}


static int
relay_policy_stmt_fallback_relay(relay_policy_parse_t *ps)
{
    int              n;
    size_t           i;
    relay_policy_t  *p;

    n = relay_policy_positional_only(ps, 1, 0);
    if (n < 0) {
        return -1;
    }

    p = ps->policy;

    for (i = 1; i < ps->ntok; i++) {
        if (relay_policy_push(&p->fallback_relay, &p->n_fallback_relay,
                              ps->tok[i].data)
            != 0)
        {
            relay_policy_nomem(ps);
            return -1;
        }

        ps->tok[i].data = NULL;
    }

    return 0;
}


static int
relay_policy_stmt_retry(relay_policy_parse_t *ps)
{
    relay_policy_retry_t  *r;

    static const relay_policy_param_t  params[] = {
        { "min", RELAY_POLICY_PARAM_DURATION, 1,
          offsetof(relay_policy_retry_t, backoff_min_s), NULL },
        { "max", RELAY_POLICY_PARAM_DURATION, 1,
          offsetof(relay_policy_retry_t, backoff_max_s), NULL },
        { "lifetime", RELAY_POLICY_PARAM_DURATION, 1,
          offsetof(relay_policy_retry_t, lifetime_s), NULL },
        { "delay_warning", RELAY_POLICY_PARAM_DURATION, 0,
          offsetof(relay_policy_retry_t, delay_warning_s), NULL }
    };

    if (relay_policy_positional(ps, 1, 1) < 0) {
        return -1;
    }

    r = relay_policy_append(ps, &relay__control__v1__retry_policy__descriptor,
                            &ps->policy->retry, &ps->policy->n_retry);
    if (r == NULL) {
        return -1;
    }

    r->pattern = relay_policy_take(ps, 1);

    return relay_policy_params(ps, 2, r, params,
                               sizeof(params) / sizeof(params[0]));
}


static int
relay_policy_stmt_inbound_limit(relay_policy_parse_t *ps)
{
    int                      k;
    relay_policy_inbound_t  *l;

    static const relay_policy_param_t  params[] = {
        { "window", RELAY_POLICY_PARAM_DURATION, 1,
          offsetof(relay_policy_inbound_t, window_s), NULL },
        { "messages", RELAY_POLICY_PARAM_NUMBER, 0,
          offsetof(relay_policy_inbound_t, messages), NULL },
        { "recipients", RELAY_POLICY_PARAM_NUMBER, 0,
          offsetof(relay_policy_inbound_t, recipients), NULL },
        { "scope", RELAY_POLICY_PARAM_KEYWORD, 0,
          offsetof(relay_policy_inbound_t, scope), relay_policy_scopes }
    };

    if (relay_policy_positional(ps, 2, 2) < 0) {
        return -1;
    }

    k = relay_policy_key(ps, relay_policy_inbound_keys,
                         relay_policy_nkeys(relay_policy_inbound_keys));
    if (k < 0) {
        return -1;
    }

    l = relay_policy_append(ps, &relay__control__v1__inbound_limit__descriptor,
                            &ps->policy->inbound_limits,
                            &ps->policy->n_inbound_limits);
    if (l == NULL) {
        return -1;
    }

    l->key = (Relay__Control__V1__InboundLimit__Key) k;
    l->match = relay_policy_take(ps, 2);

    return relay_policy_params(ps, 3, l, params,
                               sizeof(params) / sizeof(params[0]));
}


static int
relay_policy_stmt_destination_limit(relay_policy_parse_t *ps)
{
    relay_policy_dest_t  *d;

    static const relay_policy_param_t  params[] = {
        { "connections", RELAY_POLICY_PARAM_NUMBER, 0,
          offsetof(relay_policy_dest_t, max_connections), NULL },
        { "messages_per_connection", RELAY_POLICY_PARAM_NUMBER, 0,
          offsetof(relay_policy_dest_t, messages_per_connection), NULL },
        { "messages_per_minute", RELAY_POLICY_PARAM_NUMBER, 0,
          offsetof(relay_policy_dest_t, messages_per_minute), NULL },
        { "messages_per_hour", RELAY_POLICY_PARAM_NUMBER, 0,
          offsetof(relay_policy_dest_t, messages_per_hour), NULL },
        { "connections_per_minute", RELAY_POLICY_PARAM_NUMBER, 0,
          offsetof(relay_policy_dest_t, connections_per_minute), NULL },
        { "backoff_reply", RELAY_POLICY_PARAM_STRING, 0,
          offsetof(relay_policy_dest_t, backoff_reply_pattern), NULL },
        { "backoff", RELAY_POLICY_PARAM_DURATION, 0,
          offsetof(relay_policy_dest_t, backoff_s), NULL },
        { "scope", RELAY_POLICY_PARAM_KEYWORD, 0,
          offsetof(relay_policy_dest_t, scope), relay_policy_scopes },
        { "per", RELAY_POLICY_PARAM_KEYWORD, 0,
          offsetof(relay_policy_dest_t, per), relay_policy_pers }
    };

    if (relay_policy_positional(ps, 1, 1) < 0) {
        return -1;
    }

    d = relay_policy_append(ps,
                            &relay__control__v1__destination_limit__descriptor,
                            &ps->policy->destination_limits,
                            &ps->policy->n_destination_limits);
    if (d == NULL) {
        return -1;
    }

    d->pattern = relay_policy_take(ps, 1);

    return relay_policy_params(ps, 2, d, params,
                               sizeof(params) / sizeof(params[0]));
}


/* egress_pool NAME ehlo=HOST ADDRESS [weight=N] [ADDRESS [weight=N] ...]; */

static int
relay_policy_stmt_egress_pool(relay_policy_parse_t *ps)
{
    char                        *value;
    size_t                       i;
    uint32_t                     w;
    relay_policy_pool_t         *pool;
    relay_policy_token_t        *t;
    relay_policy_egress_addr_t  *a;
    int                          ehlo, weight;

    if (ps->ntok < 2 || ps->tok[1].eq != RELAY_POLICY_NO_EQ) {
        relay_policy_perror(ps, ps->line, "egress_pool: missing argument");
        return -1;
    }

    pool = relay_policy_append(ps,
                               &relay__control__v1__egress_pool__descriptor,
                               &ps->policy->egress_pools,
                               &ps->policy->n_egress_pools);
    if (pool == NULL) {
        return -1;
    }

    pool->name = relay_policy_take(ps, 1);
    a = NULL;
    ehlo = 0;
    weight = 0;

    /* "egress_pool NAME local;": each node's own relay_egress_pool NAME */

    if (ps->ntok == 3 && ps->tok[2].eq == RELAY_POLICY_NO_EQ
        && strcmp(ps->tok[2].data, "local") == 0)
    {
        if (ps->directive) {
            relay_policy_perror(ps, ps->tok[2].line, "egress_pool: "
                                "\"local\" belongs to the fleet policy: "
                                "the pools of nginx.conf are the node's own");
            return -1;
        }

        pool->node_local = 1;
        return 0;
    }

    for (i = 2; i < ps->ntok; i++) {
        t = &ps->tok[i];

        if (t->eq == RELAY_POLICY_NO_EQ) {
            a = relay_policy_append(ps,
                          &relay__control__v1__egress_address__descriptor,
                          &pool->addresses, &pool->n_addresses);
            if (a == NULL) {
                return -1;
            }

            a->address = relay_policy_take(ps, i);
            a->weight = 1;
            weight = 0;
            continue;
        }

        t->data[t->eq] = '\0';
        value = t->data + t->eq + 1;

        if (strcmp(t->data, "ehlo") == 0) {
            if (ehlo) {
                relay_policy_perror(ps, t->line, "egress_pool: duplicate "
                                    "parameter \"ehlo\"");
                return -1;
            }

            ehlo = 1;

            value = relay_policy_strdup(value);
            if (value == NULL) {
                relay_policy_nomem(ps);
                return -1;
            }

            pool->ehlo_name = value;
            continue;
        }

        if (strcmp(t->data, "weight") == 0) {
            if (a == NULL) {
                relay_policy_perror(ps, t->line, "egress_pool: \"weight=\" "
                                    "before any address");
                return -1;
            }

            if (weight) {
                relay_policy_perror(ps, t->line, "egress_pool: duplicate "
                                    "parameter \"weight\"");
                return -1;
            }

            if (relay_policy_number(value, &w) != 0) {
                relay_policy_perror(ps, t->line,
                                    "egress_pool: bad number \"%s\"", value);
                return -1;
            }

            a->weight = w ? w : 1;        /* 0 counts as 1: one form */
            weight = 1;
            continue;
        }

        relay_policy_perror(ps, t->line,
                            "egress_pool: unknown parameter \"%s\"", t->data);
        return -1;
    }

    if (!ehlo) {
        relay_policy_perror(ps, ps->line,
                            "egress_pool: missing parameter \"ehlo=\"");
        return -1;
    }

    if (pool->n_addresses == 0) {
        relay_policy_perror(ps, ps->line, "egress_pool: missing argument");
        return -1;
    }

    return 0;
}


static int
relay_policy_stmt_egress_rule(relay_policy_parse_t *ps)
{
    int                   k;
    relay_policy_rule_t  *r;

    if (relay_policy_positional(ps, 3, 3) < 0) {
        return -1;
    }

    if (ps->ntok > 4) {
        relay_policy_perror(ps, ps->tok[4].line,
                            "egress_rule: unexpected argument \"%s\"",
                            ps->tok[4].data);
        return -1;
    }

    k = relay_policy_key(ps, relay_policy_rule_keys,
                         relay_policy_nkeys(relay_policy_rule_keys));
    if (k < 0) {
        return -1;
    }

    r = relay_policy_append(ps, &relay__control__v1__egress_rule__descriptor,
                            &ps->policy->egress_rules,
                            &ps->policy->n_egress_rules);
    if (r == NULL) {
        return -1;
    }

    r->key = (Relay__Control__V1__EgressRule__Key) k;
    r->match = relay_policy_take(ps, 2);
    r->pool = relay_policy_take(ps, 3);

    return 0;
}


static int
relay_policy_stmt_tls(relay_policy_parse_t *ps)
{
    int                  n, required;
    relay_policy_tls_t  *t;

    n = relay_policy_positional_only(ps, 2, 3);
    if (n < 0) {
        return -1;
    }

    if (strcmp(ps->tok[2].data, "required") == 0) {
        required = 1;

    } else if (strcmp(ps->tok[2].data, "optional") == 0) {
        required = 0;

    } else {
        relay_policy_perror(ps, ps->tok[2].line, "tls: expected \"required\" "
                            "or \"optional\", got \"%s\"", ps->tok[2].data);
        return -1;
    }

    if (n == 3 && strcmp(ps->tok[3].data, "verify") != 0) {
        relay_policy_perror(ps, ps->tok[3].line,
                            "tls: unexpected argument \"%s\"",
                            ps->tok[3].data);
        return -1;
    }

    t = relay_policy_append(ps, &relay__control__v1__tls_policy__descriptor,
                            &ps->policy->tls, &ps->policy->n_tls);
    if (t == NULL) {
        return -1;
    }

    t->pattern = relay_policy_take(ps, 1);
    t->required = required;
    t->verify = (n == 3);

    return 0;
}


static int
relay_policy_stmt_dkim(relay_policy_parse_t *ps)
{
    relay_policy_dkim_t  *d;

    static const relay_policy_param_t  params[] = {
        { "selector", RELAY_POLICY_PARAM_STRING, 1,
          offsetof(relay_policy_dkim_t, selector), NULL },
        { "key", RELAY_POLICY_PARAM_STRING, 1,
          offsetof(relay_policy_dkim_t, key_file), NULL },
        { "algorithm", RELAY_POLICY_PARAM_STRING, 0,
          offsetof(relay_policy_dkim_t, algorithm), NULL },
        { "canonicalization", RELAY_POLICY_PARAM_STRING, 0,
          offsetof(relay_policy_dkim_t, canonicalization), NULL },
        { "headers", RELAY_POLICY_PARAM_STRING, 0,
          offsetof(relay_policy_dkim_t, headers), NULL },
        { "expire", RELAY_POLICY_PARAM_DURATION, 0,
          offsetof(relay_policy_dkim_t, expire_s), NULL },
        { "fallback", RELAY_POLICY_PARAM_STRING, 0,
          offsetof(relay_policy_dkim_t, fallback), NULL },
        { "on_error", RELAY_POLICY_PARAM_STRING, 0,
          offsetof(relay_policy_dkim_t, on_error), NULL }
    };

    if (relay_policy_positional(ps, 1, 1) < 0) {
        return -1;
    }

    d = relay_policy_append(ps, &relay__control__v1__dkim_key__descriptor,
                            &ps->policy->dkim, &ps->policy->n_dkim);
    if (d == NULL) {
        return -1;
    }

    d->domain = relay_policy_take(ps, 1);

    return relay_policy_params(ps, 2, d, params,
                               sizeof(params) / sizeof(params[0]));
}


/* ---------------------------------------------------------------- render */


char *
relay_policy_render(const relay_policy_t *p)
{
    relay_buf_t  b;

    memset(&b, 0, sizeof(relay_buf_t));

    relay_buf_printf(&b, "%s", "");

    relay_policy_render_header(&b, p);

    if (p->comment && p->comment[0]) {
        relay_policy_render_section(&b);
        relay_buf_printf(&b, "comment ");
        relay_policy_buf_word(&b, p->comment, 1);
        relay_buf_printf(&b, ";\n");
    }

    relay_policy_render_list(&b, (void *const *) p->routes, p->n_routes,
                             relay_policy_render_route);
    relay_policy_render_list(&b, (void *const *) p->backup_mx,
                             p->n_backup_mx, relay_policy_render_backup_mx);

    if (p->n_fallback_relay) {
        relay_policy_render_section(&b);
        relay_buf_printf(&b, "fallback_relay");
        relay_policy_buf_words(&b, p->fallback_relay, p->n_fallback_relay);
        relay_buf_printf(&b, ";\n");
    }

    relay_policy_render_list(&b, (void *const *) p->retry, p->n_retry,
                             relay_policy_render_retry);
    relay_policy_render_list(&b, (void *const *) p->inbound_limits,
                             p->n_inbound_limits,
                             relay_policy_render_inbound);
    relay_policy_render_list(&b, (void *const *) p->destination_limits,
                             p->n_destination_limits,
                             relay_policy_render_destination);
    relay_policy_render_list(&b, (void *const *) p->egress_pools,
                             p->n_egress_pools, relay_policy_render_pool);
    relay_policy_render_list(&b, (void *const *) p->egress_rules,
                             p->n_egress_rules, relay_policy_render_rule);
    relay_policy_render_list(&b, (void *const *) p->tls, p->n_tls,
                             relay_policy_render_tls);
    relay_policy_render_list(&b, (void *const *) p->dkim, p->n_dkim,
                             relay_policy_render_dkim);

    if (b.failed) {
        free(b.data);
        return NULL;
    }

    return b.data;
}


/* "# version N", "# author X", "# created ..." when set */

static void
relay_policy_render_header(relay_buf_t *b, const relay_policy_t *p)
{
    char       date[32];
    time_t     t;
    struct tm  tm;

    if (p->version) {
        relay_buf_printf(b, "# version %llu\n",
                         (unsigned long long) p->version);
    }

    if (p->author && p->author[0]) {
        relay_buf_printf(b, "# author %s\n", p->author);
    }

    if (p->created_unix) {
        t = (time_t) p->created_unix;

        if (gmtime_r(&t, &tm) != NULL
            && strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%SZ", &tm))
        {
            relay_buf_printf(b, "# created %s\n", date);
        }
    }
}


/* a blank line between kinds of statements */

static void
relay_policy_render_section(relay_buf_t *b)
{
    if (b->len) {
        relay_buf_printf(b, "\n");
    }
}


/* the statements of one list, a line each, after a blank line */

static void
relay_policy_render_list(relay_buf_t *b, void *const *elts, size_t n,
    relay_policy_render_pt render)
{
    size_t  i;

    if (n) {
        relay_policy_render_section(b);
    }

    for (i = 0; i < n; i++) {
        render(b, elts[i]);
        relay_policy_render_scope(b, elts[i]);
        relay_buf_printf(b, ";\n");
    }
}


/* " nodes=SELECTOR" in canonical form, when the statement has one */

static void
relay_policy_render_scope(relay_buf_t *b, const void *elt)
{
    char         canon[RELAY_SCOPE_MAX_LEN + 1];
    const char  *scope;

    scope = *(char *const *) relay_policy_field_of(elt, "nodes", NULL);

    if (scope == NULL || scope[0] == '\0') {
        return;
    }

    if (relay_scope_canonical(scope, canon, sizeof(canon)) == 0) {
        relay_buf_printf(b, " nodes=%s", canon);

    } else {
        relay_buf_printf(b, " nodes=");
        relay_policy_buf_word(b, scope, 1);
    }
}


static void
relay_policy_render_route(relay_buf_t *b, const void *elt)
{
    relay_policy_render_hops(b, "route", elt, "next_hops");
}


static void
relay_policy_render_backup_mx(relay_buf_t *b, const void *elt)
{
    relay_policy_render_hops(b, "backup_mx", elt, "hosts");
}


/* "STATEMENT PATTERN HOP ..." */

static void
relay_policy_render_hops(relay_buf_t *b, const char *statement,
    const void *elt, const char *hops)
{
    char    **hop;
    size_t    n;

    hop = relay_policy_strings_of(elt, hops, &n);

    relay_buf_printf(b, "%s ", statement);
    relay_policy_buf_word(b, relay_policy_pattern_of(elt), 0);
    relay_policy_buf_words(b, hop, n);
}


static void
relay_policy_render_retry(relay_buf_t *b, const void *elt)
{
    const relay_policy_retry_t  *r = elt;

    relay_buf_printf(b, "retry ");
    relay_policy_buf_word(b, r->pattern, 0);
    relay_policy_buf_duration(b, "min", r->backoff_min_s);
    relay_policy_buf_duration(b, "max", r->backoff_max_s);
    relay_policy_buf_duration(b, "lifetime", r->lifetime_s);

    if (r->delay_warning_s) {
        relay_policy_buf_duration(b, "delay_warning", r->delay_warning_s);
    }
}


static void
relay_policy_render_inbound(relay_buf_t *b, const void *elt)
{
    const relay_policy_inbound_t  *l = elt;

    relay_policy_render_keyed(b, "inbound_limit", relay_policy_inbound_keys,
                              relay_policy_nkeys(relay_policy_inbound_keys),
                              l->key, l->match);
    relay_policy_buf_duration(b, "window", l->window_s);
    relay_policy_buf_number(b, "messages", l->messages);
    relay_policy_buf_number(b, "recipients", l->recipients);

    if (l->scope == RELAY__CONTROL__V1__LIMIT_SCOPE__FLEET) {
        relay_buf_printf(b, " scope=fleet");
    }
}


static void
relay_policy_render_destination(relay_buf_t *b, const void *elt)
{
    const relay_policy_dest_t  *d = elt;

    relay_buf_printf(b, "destination_limit ");
    relay_policy_buf_word(b, d->pattern, 0);
    relay_policy_buf_number(b, "connections", d->max_connections);
    relay_policy_buf_number(b, "messages_per_connection",
                            d->messages_per_connection);
    relay_policy_buf_number(b, "messages_per_minute",
                            d->messages_per_minute);
    relay_policy_buf_number(b, "messages_per_hour", d->messages_per_hour);
    relay_policy_buf_number(b, "connections_per_minute",
                            d->connections_per_minute);

    if (d->backoff_reply_pattern && d->backoff_reply_pattern[0]) {
        relay_buf_printf(b, " backoff_reply=");
        relay_policy_buf_word(b, d->backoff_reply_pattern, 1);
    }

    if (d->backoff_s) {
        relay_policy_buf_duration(b, "backoff", d->backoff_s);
    }

    if (d->scope == RELAY__CONTROL__V1__LIMIT_SCOPE__FLEET) {
        relay_buf_printf(b, " scope=fleet");
    }

    if (d->per == RELAY__CONTROL__V1__DESTINATION_LIMIT__PER__ADDRESS) {
        relay_buf_printf(b, " per=address");
    }
}


static void
relay_policy_render_pool(relay_buf_t *b, const void *elt)
{
    size_t                      i;
    const relay_policy_pool_t  *pool = elt;

    relay_buf_printf(b, "egress_pool ");
    relay_policy_buf_word(b, pool->name, 0);

    if (pool->node_local) {
        relay_buf_printf(b, " local");
        return;
    }

    relay_buf_printf(b, " ehlo=");
    relay_policy_buf_word(b, pool->ehlo_name, 0);

    for (i = 0; i < pool->n_addresses; i++) {
        relay_buf_printf(b, " ");
        relay_policy_buf_word(b, pool->addresses[i]->address, 0);

        if (pool->addresses[i]->weight > 1) {
            relay_buf_printf(b, " weight=%u", pool->addresses[i]->weight);
        }
    }
}


static void
relay_policy_render_rule(relay_buf_t *b, const void *elt)
{
    const relay_policy_rule_t  *r = elt;

    relay_policy_render_keyed(b, "egress_rule", relay_policy_rule_keys,
                              relay_policy_nkeys(relay_policy_rule_keys),
                              r->key, r->match);
    relay_buf_printf(b, " ");
    relay_policy_buf_word(b, r->pool, 0);
}


static void
relay_policy_render_tls(relay_buf_t *b, const void *elt)
{
    const relay_policy_tls_t  *t = elt;

    relay_buf_printf(b, "tls ");
    relay_policy_buf_word(b, t->pattern, 0);
    relay_buf_printf(b, " %s%s", t->required ? "required" : "optional",
                     t->verify ? " verify" : "");
}


static void
relay_policy_render_dkim(relay_buf_t *b, const void *elt)
{
    const relay_policy_dkim_t  *d = elt;

    relay_buf_printf(b, "dkim ");
    relay_policy_buf_word(b, d->domain, 0);
    relay_buf_printf(b, " selector=");
    relay_policy_buf_word(b, d->selector, 0);
    relay_buf_printf(b, " key=");
    relay_policy_buf_word(b, d->key_file, 1);

    if (d->algorithm[0] && strcmp(d->algorithm, "rsa-sha256") != 0) {
        relay_buf_printf(b, " algorithm=%s", d->algorithm);
    }

    if (d->canonicalization[0]
        && strcmp(d->canonicalization, "relaxed/relaxed") != 0)
    {
        relay_buf_printf(b, " canonicalization=%s", d->canonicalization);
    }

    if (d->headers[0]) {
        relay_buf_printf(b, " headers=");
        relay_policy_buf_word(b, d->headers, 0);
    }

    if (d->expire_s) {
        relay_policy_buf_duration(b, "expire", d->expire_s);
    }

    if (d->fallback[0]) {
        relay_buf_printf(b, " fallback=%s", d->fallback);
    }

    if (d->on_error[0] && strcmp(d->on_error, "defer") != 0) {
        relay_buf_printf(b, " on_error=%s", d->on_error);
    }
}


/* "STATEMENT KEY MATCH" of inbound_limit and egress_rule */

static void
relay_policy_render_keyed(relay_buf_t *b, const char *statement,
    const char **keys, unsigned nkeys, unsigned key, const char *match)
{
    relay_buf_printf(b, "%s %s ", statement,
                     key < nkeys ? keys[key] : "unknown");
    relay_policy_buf_word(b, match, 0);
}


/* " NAME=N" unless N is 0, the default */

static void
relay_policy_buf_number(relay_buf_t *b, const char *name, uint32_t v)
{
    if (v) {
        relay_buf_printf(b, " %s=%u", name, v);
    }
}


/* " WORD" each */

static void
relay_policy_buf_words(relay_buf_t *b, char **words, size_t n)
{
    size_t  i;

    for (i = 0; i < n; i++) {
        relay_buf_printf(b, " ");
        relay_policy_buf_word(b, words[i], 0);
    }
}


/* a word as is, or quoted when it must be (or always) */

static void
relay_policy_buf_word(relay_buf_t *b, const char *s, int always)
{
    const char  *c;

    if (!always && s[0] != '\0') {
        for (c = s; *c; c++) {
            if (*c == ' ' || *c == '\t' || *c == '\r' || *c == '\n'
                || *c == ';' || *c == '"' || *c == '#' || *c == '\\'
                || *c == '=' || (unsigned char) *c < 0x20 || *c == 0x7f)
            {
                break;
            }
        }

        if (*c == '\0') {
            relay_buf_printf(b, "%s", s);
            return;
        }
    }

    relay_buf_printf(b, "\"");

    for (c = s; *c; c++) {
        if (*c == '"' || *c == '\\') {
            relay_buf_printf(b, "\\%c", *c);

        } else {
            relay_buf_printf(b, "%c", *c);
        }
    }

    relay_buf_printf(b, "\"");
}


static void
relay_policy_buf_duration(relay_buf_t *b, const char *name, uint32_t v)
{
    if (v == 0) {
        relay_buf_printf(b, " %s=0s", name);

    } else if (v % 86400 == 0) {
        relay_buf_printf(b, " %s=%ud", name, v / 86400);

    } else if (v % 3600 == 0) {
        relay_buf_printf(b, " %s=%uh", name, v / 3600);

    } else if (v % 60 == 0) {
        relay_buf_printf(b, " %s=%um", name, v / 60);

    } else {
        relay_buf_printf(b, " %s=%us", name, v);
    }
}


/* ---------------------------------------------------------------- copy */


relay_policy_t *
relay_policy_new(void)
{
    relay_policy_t  *p;

    p = malloc(sizeof(relay_policy_t));
    if (p == NULL) {
        return NULL;
    }

    relay__control__v1__policy__init(p);

    return p;
}


relay_policy_t *
relay_policy_copy(const relay_policy_t *p)
{
    size_t           len;
    uint8_t         *buf;
    relay_policy_t  *c;

    len = relay__control__v1__policy__get_packed_size(p);

    buf = malloc(len ? len : 1);
    if (buf == NULL) {
        return NULL;
    }

    relay__control__v1__policy__pack(p, buf);

    c = relay__control__v1__policy__unpack(NULL, len, buf);

    free(buf);

    return c;
}


void
relay_policy_free(relay_policy_t *p)
{
    if (p != NULL) {
        relay__control__v1__policy__free_unpacked(p, NULL);
    }
}


/* ---------------------------------------------------------------- nodes */


typedef struct {
    const ProtobufCFieldDescriptor   *field;      /* the list in Policy */
    size_t                           *n;
    ProtobufCMessage                **elts;
    unsigned char                    *keep;
} relay_policy_list_t;


static size_t relay_policy_lists(relay_policy_t *p, relay_policy_list_t *l);
static int relay_policy_same_key(const ProtobufCMessage *a,
    const ProtobufCMessage *b, const char **what, const char **key);
static int relay_policy_node_pools(relay_policy_t *p,
    relay_policy_list_t *pools, relay_policy_list_t *rules,
    const relay_scope_node_t *node, char *const *own, size_t nown,
    char *err, size_t errlen);


/*
 * The policy as one node sees it, in place: the statements whose scope
 * selects the node stay (without their scope), the others go.  Checked on
 * the way, with the indexes of the policy as written: two statements of a
 * list that both apply here with one key (a pattern, a pool name, a key
 * and match) make the policy ambiguous for this node; an egress rule must
 * name a pool that applies here; a local pool must be one of own[] (the
 * pools of the node's nginx.conf).  On error p is unchanged.  Validate
 * the result as usual afterwards.
 */

int
relay_policy_for_node(relay_policy_t *p, const relay_scope_node_t *node,
    char *const *own, size_t nown, char *err, size_t errlen)
{
    int                   rc;
    char                **sp;
    size_t                i, j, k, n, nl;
    const char           *what, *key;
    relay_policy_list_t   l[RELAY_POLICY_MAX_LISTS], *pools, *rules;

    if (errlen) {
        err[0] = '\0';
    }

    nl = relay_policy_lists(p, l);
    pools = NULL;
    rules = NULL;
    rc = -1;

    for (i = 0; i < nl; i++) {
        n = *l[i].n;

        l[i].keep = malloc(n ? n : 1);
        if (l[i].keep == NULL) {
            relay_policy_verror(err, errlen, "out of memory");
            nl = i;
            goto done;
        }

        for (j = 0; j < n; j++) {
            l[i].keep[j] = relay_scope_match(
                               relay_policy_scope_of(l[i].elts[j]), node);
        }

        if (strcmp(l[i].field->name, "egress_pools") == 0) {
            pools = &l[i];

        } else if (strcmp(l[i].field->name, "egress_rules") == 0) {
            rules = &l[i];
        }
    }

    for (i = 0; i < nl; i++) {
        for (j = 0; j < *l[i].n; j++) {
            for (k = 0; l[i].keep[j] && k < j; k++) {
                if (!l[i].keep[k]
                    || !relay_policy_same_key(l[i].elts[k], l[i].elts[j],
                                              &what, &key))
                {
                    continue;
                }

                relay_policy_verror(err, errlen, "%s[%zu].%s: \"%s\" "
                                    "duplicates %s[%zu] on node %s: scopes "
                                    "\"%s\" and \"%s\" both select it",
                                    l[i].field->name, j, what, key,
                                    l[i].field->name, k, node->id,
                                    relay_policy_scope_of(l[i].elts[k]),
                                    relay_policy_scope_of(l[i].elts[j]));
                goto done;
            }
        }
    }

    if (pools && rules
        && relay_policy_node_pools(p, pools, rules, node, own, nown, err,
                                   errlen)
           != 0)
    {
        goto done;
    }

    /* only now, the policy accepted for this node: out with the others */

    for (i = 0; i < nl; i++) {
        for (j = 0, k = 0; j < *l[i].n; j++) {
            if (!l[i].keep[j]) {
                protobuf_c_message_free_unpacked(l[i].elts[j], NULL);
                continue;
            }

            sp = (char **) relay_policy_field_of(l[i].elts[j], "nodes",
                                                 NULL);

            if (*sp != protobuf_c_empty_string) {
                free(*sp);
                *sp = (char *) protobuf_c_empty_string;
            }

            l[i].elts[k++] = l[i].elts[j];
        }

        *l[i].n = k;
    }

    rc = 0;

done:

    for (i = 0; i < nl; i++) {
        free(l[i].keep);
    }

    return rc;
}


/* Policy's lists of scoped statements */

static size_t
relay_policy_lists(relay_policy_t *p, relay_policy_list_t *l)
{
    size_t                            i, n;
    const ProtobufCFieldDescriptor   *f;
    const ProtobufCMessageDescriptor *d;

    d = &relay__control__v1__policy__descriptor;
    n = 0;

    for (i = 0; i < d->n_fields && n < RELAY_POLICY_MAX_LISTS; i++) {
        f = &d->fields[i];

        if (f->label != PROTOBUF_C_LABEL_REPEATED
            || f->type != PROTOBUF_C_TYPE_MESSAGE
            || protobuf_c_message_descriptor_get_field_by_name(f->descriptor,
                                                               "nodes")
               == NULL)
        {
            continue;
        }

        l[n].field = f;
        l[n].n = (size_t *) ((char *) p + f->quantifier_offset);
        l[n].elts = *(ProtobufCMessage ***) ((char *) p + f->offset);
        l[n].keep = NULL;
        n++;
    }

    return n;
}


/*
 * Whether two elements of a list are one thing to a node: the same
 * pattern (routes, retry, ...), pool name, or key and match (inbound
 * limits, egress rules).  *what and *key say which, for the message.
 */

static int
relay_policy_same_key(const ProtobufCMessage *a, const ProtobufCMessage *b,
    const char **what, const char **key)
{
    const char                       *fields[] = { "pattern", "name" };
    const char                       *sa, *sb;
    size_t                            i;
    const ProtobufCMessageDescriptor *d;

    d = a->descriptor;

    for (i = 0; i < 2; i++) {
        if (protobuf_c_message_descriptor_get_field_by_name(d, fields[i])) {
            sa = *(char *const *) relay_policy_field_of(a, fields[i], NULL);
            sb = *(char *const *) relay_policy_field_of(b, fields[i], NULL);
            *what = fields[i];
            *key = sb;

            return strcmp(sa, sb) == 0;
        }
    }

    sa = *(char *const *) relay_policy_field_of(a, "match", NULL);
    sb = *(char *const *) relay_policy_field_of(b, "match", NULL);
    *what = "match";
    *key = sb;

    return *(const int *) relay_policy_field_of(a, "key", NULL)
           == *(const int *) relay_policy_field_of(b, "key", NULL)
           && strcmp(sa, sb) == 0;
}


/*
 * The pools of the node: a rule that applies here must name a pool that
 * applies here (the fleet's, or a local one); a local pool must be one of
 * the node's nginx.conf.
 */

static int
relay_policy_node_pools(relay_policy_t *p, relay_policy_list_t *pools,
    relay_policy_list_t *rules, const relay_scope_node_t *node,
    char *const *own, size_t nown, char *err, size_t errlen)
{
    size_t                i, j, elsewhere;
    relay_policy_pool_t  *pool;
    relay_policy_rule_t  *rule;

    for (i = 0; i < *pools->n; i++) {
        pool = (relay_policy_pool_t *) pools->elts[i];

        if (!pools->keep[i] || !pool->node_local) {
            continue;
        }

        for (j = 0; j < nown; j++) {
            if (strcmp(own[j], pool->name) == 0) {
                break;
            }
        }

        if (j == nown) {
            relay_policy_verror(err, errlen, "egress_pools[%zu]: \"%s\" is "
                                "to be each node's own pool, but node %s has "
                                "no relay_egress_pool %s", i, pool->name,
                                node->id, pool->name);
            return -1;
        }
    }

    for (i = 0; i < *rules->n; i++) {
        rule = (relay_policy_rule_t *) rules->elts[i];

        if (!rules->keep[i]) {
            continue;
        }

        elsewhere = 0;

        for (j = 0; j < *pools->n; j++) {
            pool = (relay_policy_pool_t *) pools->elts[j];

            if (strcmp(pool->name, rule->pool) != 0) {
                continue;
            }

            if (pools->keep[j]) {
                break;
            }

            elsewhere++;
        }

        if (j == *pools->n && elsewhere) {
            relay_policy_verror(err, errlen, "egress_rules[%zu].pool: \"%s\" "
                                "is not defined for node %s: its egress_pool "
                                "statements select other nodes", i,
                                rule->pool, node->id);
            return -1;
        }
    }

    return 0;
}


/* ---------------------------------------------------------------- validate */


/* in the checks below: the message into err, and -1 */

#define relay_fail(...)                                                       \
    do { relay_policy_verror(err, errlen, __VA_ARGS__); return -1; } while (0)


int
relay_policy_validate(const relay_policy_t *p, char *err, size_t errlen)
{
    return relay_policy_check(p, 1, err, errlen);
}


int
relay_policy_validate_draft(const relay_policy_t *p, char *err,
    size_t errlen)
{
    return relay_policy_check(p, 0, err, errlen);
}


/*
 * complete: a policy as a node gets it, its rules name pools it holds.
 * Every check is linear in the size of the policy (a policy near the
 * message size limit costs milliseconds, on controld and on every node):
 * lists have caps, duplicates are found through hash tables.
 */

static int
relay_policy_check(const relay_policy_t *p, int complete, char *err,
    size_t errlen)
{
    int                   rc;
    size_t                n;
    relay_policy_check_t  ck;

    if (errlen) {
        err[0] = '\0';
    }

    if (relay_policy_check_lengths(p, err, errlen) != 0) {
        return -1;
    }

    /* the longest list of Policy, at most RELAY_POLICY_MAX_ENTRIES */

    n = p->n_routes;
    n = n > p->n_backup_mx ? n : p->n_backup_mx;
    n = n > p->n_retry ? n : p->n_retry;
    n = n > p->n_inbound_limits ? n : p->n_inbound_limits;
    n = n > p->n_destination_limits ? n : p->n_destination_limits;
    n = n > p->n_egress_rules ? n : p->n_egress_rules;
    n = n > p->n_tls ? n : p->n_tls;
    n = n > p->n_dkim ? n : p->n_dkim;

    memset(&ck, 0, sizeof(relay_policy_check_t));

    if (relay_policy_seen_init(&ck.list, n) != 0
        || relay_policy_seen_init(&ck.items, RELAY_POLICY_MAX_HOPS) != 0
        || relay_policy_seen_init(&ck.pools, p->n_egress_pools) != 0)
    {
        relay_policy_verror(err, errlen, "out of memory");
        rc = -1;

    } else {
        rc = relay_policy_check_all(p, complete, &ck, err, errlen);
    }

    relay_policy_seen_free(&ck.list);
    relay_policy_seen_free(&ck.items);
    relay_policy_seen_free(&ck.pools);

    return rc;
}


static int
relay_policy_check_all(const relay_policy_t *p, int complete,
    relay_policy_check_t *ck, char *err, size_t errlen)
{
    const char  *why;

    why = relay_policy_check_text(p->comment, RELAY_POLICY_MAX_TEXT);
    if (why) {
        relay_fail("comment: %s", why);
    }

    why = relay_policy_check_text(p->author, RELAY_POLICY_MAX_TEXT);
    if (why) {
        relay_fail("author: %s", why);
    }

    /* the text form writes a four-digit year, and reads only that */

    if (p->created_unix < 0 || p->created_unix > RELAY_POLICY_MAX_CREATED) {
        relay_fail("created_unix: %lld is not in the years 1970 to 9999",
                   (long long) p->created_unix);
    }

    if (relay_policy_check_scopes(p, err, errlen) != 0
        || relay_policy_check_hop_lists((void *const *) p->routes, p->n_routes,
                                     "routes", "next_hops", "no next hop",
                                     ck, err, errlen)
           != 0
        || relay_policy_check_hop_lists((void *const *) p->backup_mx,
                                        p->n_backup_mx, "backup_mx", "hosts",
                                        "no host", ck, err, errlen)
           != 0
        || relay_policy_check_hops(p->fallback_relay, p->n_fallback_relay,
                                   "fallback_relay", &ck->items, err, errlen)
           != 0
        || relay_policy_check_retry(p, ck, err, errlen) != 0
        || relay_policy_check_inbound(p, ck, err, errlen) != 0
        || relay_policy_check_destinations(p, ck, err, errlen) != 0
        || relay_policy_check_pools(p, ck, err, errlen) != 0
        || relay_policy_check_rules(p, complete, ck, err, errlen) != 0
        || relay_policy_check_tls(p, ck, err, errlen) != 0
        || relay_policy_check_dkim(p, ck, err, errlen) != 0)
    {
        return -1;
    }

    return 0;
}


/* the caps on list lengths, before anything else is looked at */

static int
relay_policy_check_lengths(const relay_policy_t *p, char *err, size_t errlen)
{
    size_t  i;
    struct {
        const char  *name;
        size_t       n;
    } lists[] = {
        { "routes", p->n_routes },
        { "backup_mx", p->n_backup_mx },
        { "retry", p->n_retry },
        { "inbound_limits", p->n_inbound_limits },
        { "destination_limits", p->n_destination_limits },
        { "egress_pools", p->n_egress_pools },
        { "egress_rules", p->n_egress_rules },
        { "tls", p->n_tls },
        { "dkim", p->n_dkim }
    };

    for (i = 0; i < sizeof(lists) / sizeof(lists[0]); i++) {
        if (lists[i].n > RELAY_POLICY_MAX_ENTRIES) {
            relay_fail("%s: %zu entries, more than %d", lists[i].name,
                       lists[i].n, RELAY_POLICY_MAX_ENTRIES);
        }
    }

    if (p->n_fallback_relay > RELAY_POLICY_MAX_HOPS) {
        relay_fail("fallback_relay: %zu hops, more than %d",
                   p->n_fallback_relay, RELAY_POLICY_MAX_HOPS);
    }

    return 0;
}


/* room for n strings at most half full: n of 0 still gets a table */

static int
relay_policy_seen_init(relay_policy_seen_t *st, size_t n)
{
    size_t  size;

    for (size = 16; size < 2 * n; size *= 2) {
        /* void */
    }

    st->e = calloc(size, sizeof(relay_policy_seen_entry_t));
    if (st->e == NULL) {
        return -1;
    }

    st->mask = size - 1;
    st->gen = 1;

    return 0;
}


static void
relay_policy_seen_reset(relay_policy_seen_t *st)
{
    if (++st->gen == 0) {
        memset(st->e, 0, (st->mask + 1) * sizeof(relay_policy_seen_entry_t));
        st->gen = 1;
    }
}


/*
 * The key of element "index": the index of an element seen before with the
 * same, or (size_t) -1 when it is new (then it is remembered).  The node
 * selector is not hashed: elements that differ only in it share a chain,
 * and equal selectors (relay_scope_same) make a duplicate.
 */

static size_t
relay_policy_seen(relay_policy_seen_t *st, const relay_policy_seen_key_t *k,
    size_t index)
{
    size_t                      h;
    const unsigned char        *c;
    relay_policy_seen_entry_t  *e;

    h = relay_policy_seen_hash(k->key, k->s);

    if (k->also) {
        for (c = (const unsigned char *) k->also; *c; c++) {
            h = (h ^ *c) * 16777619u;
        }
    }

    for ( ;; ) {
        e = &st->e[h & st->mask];

        if (e->gen != st->gen) {
            e->gen = st->gen;
            e->k = *k;
            e->index = index;
            return (size_t) -1;
        }

        if (e->k.key == k->key && strcmp(e->k.s, k->s) == 0
            && (e->k.also == NULL) == (k->also == NULL)
            && (k->also == NULL || strcmp(e->k.also, k->also) == 0)
            && relay_scope_same(e->k.nodes ? e->k.nodes : "",
                                k->nodes ? k->nodes : ""))
        {
            return e->index;
        }

        h++;
    }
}


/* whether s (key 0, any selector) was seen; nothing is remembered */

static int
relay_policy_seen_has(relay_policy_seen_t *st, const char *s)
{
    size_t                      h;
    relay_policy_seen_entry_t  *e;

    for (h = relay_policy_seen_hash(0, s); ; h++) {
        e = &st->e[h & st->mask];

        if (e->gen != st->gen) {
            return 0;
        }

        if (e->k.key == 0 && e->k.also == NULL && strcmp(e->k.s, s) == 0) {
            return 1;
        }
    }
}


/* FNV-1a of key and s: where a chain starts */

static size_t
relay_policy_seen_hash(int key, const char *s)
{
    size_t                h;
    const unsigned char  *c;

    h = 2166136261u ^ (unsigned) key;

    for (c = (const unsigned char *) s; *c; c++) {
        h = (h ^ *c) * 16777619u;
    }

    return h;
}


static void
relay_policy_seen_free(relay_policy_seen_t *st)
{
    free(st->e);
    st->e = NULL;
}


/*
 * The scope of every element of every list that has one (the lists are
 * Policy's repeated fields: their names are the paths of the messages).
 */

static int
relay_policy_check_scopes(const relay_policy_t *p, char *err, size_t errlen)
{
    char                  canon[RELAY_SCOPE_MAX_LEN + 1];
    size_t                j, k, nl;
    const char           *why, *scope;
    relay_policy_list_t   l[RELAY_POLICY_MAX_LISTS];

    nl = relay_policy_lists((relay_policy_t *) p, l);

    for (k = 0; k < nl; k++) {
        for (j = 0; j < *l[k].n; j++) {
            scope = relay_policy_scope_of(l[k].elts[j]);

            why = relay_scope_check(scope);
            if (why) {
                relay_fail("%s[%zu].nodes: %s", l[k].field->name, j, why);
            }

            /*
             * One way to write each selector, the text form's (its terms
             * sorted), so that the text form of a policy parses back to
             * the same policy.  Policies made from text always are.
             */

            if (scope[0]
                && (relay_scope_canonical(scope, canon, sizeof(canon)) != 0
                    || strcmp(scope, canon) != 0))
            {
                relay_fail("%s[%zu].nodes: \"%s\" is not in canonical "
                           "form", l[k].field->name, j, scope);
            }
        }
    }

    return 0;
}


static const char *
relay_policy_scope_of(const void *elt)
{
    return *(char *const *) relay_policy_field_of(elt, "nodes", NULL);
}


/*
 * routes[] and backup_mx[]: a pattern once each, then a list of hops (the
 * field named hops) with at least one, each valid and there once.
 */

static int
relay_policy_check_hop_lists(void *const *elts, size_t n, const char *list,
    const char *hops, const char *none, relay_policy_check_t *ck, char *err,
    size_t errlen)
{
    char     field[64];
    char   **hop;
    size_t   i, nhops;

    relay_policy_seen_reset(&ck->list);

    for (i = 0; i < n; i++) {
        if (relay_policy_check_pattern_at(elts, i, list, &ck->list, err,
                                          errlen)
            != 0)
        {
            return -1;
        }

        hop = relay_policy_strings_of(elts[i], hops, &nhops);

        if (nhops == 0) {
            relay_fail("%s[%zu].%s: %s", list, i, hops, none);
        }

        if (nhops > RELAY_POLICY_MAX_HOPS) {
            relay_fail("%s[%zu].%s: %zu hops, more than %d", list, i, hops,
                       nhops, RELAY_POLICY_MAX_HOPS);
        }

        snprintf(field, sizeof(field), "%s[%zu].%s", list, i, hops);

        if (relay_policy_check_hops(hop, nhops, field, &ck->items, err,
                                    errlen)
            != 0)
        {
            return -1;
        }
    }

    return 0;
}


/*
 * The pattern of element i of a list whose messages have one (Route,
 * RetryPolicy, ...): valid, and no element before it has the same.
 */

static int
relay_policy_check_pattern_at(void *const *elts, size_t i, const char *list,
    relay_policy_seen_t *seen, char *err, size_t errlen)
{
    size_t                   k;
    const char              *pattern, *why;
    relay_policy_seen_key_t  key;

    pattern = relay_policy_pattern_of(elts[i]);

    why = relay_policy_check_pattern(pattern);
    if (why) {
        relay_fail("%s[%zu].pattern: %s", list, i, why);
    }

    /* twice for one node only: statements of other scopes may share it */

    key.key = 0;
    key.s = pattern;
    key.also = NULL;
    key.nodes = relay_policy_scope_of(elts[i]);

    k = relay_policy_seen(seen, &key, i);

    if (k != (size_t) -1) {
        relay_fail("%s[%zu].pattern: \"%s\" duplicates %s[%zu]", list, i,
                   pattern, list, k);
    }

    return 0;
}


/*
 * Element i of inbound_limits[] or egress_rules[]: its match valid (why
 * says otherwise), and its key and match not those of an element before.
 */

static int
relay_policy_check_match_at(void *const *elts, size_t i, const char *list,
    const char *why, relay_policy_seen_t *seen, char *err, size_t errlen)
{
    size_t                   k;
    relay_policy_seen_key_t  key;

    if (why) {
        relay_fail("%s[%zu].match: %s", list, i, why);
    }

    key.key = *(const int *) relay_policy_field_of(elts[i], "key", NULL);
    key.s = *(char *const *) relay_policy_field_of(elts[i], "match", NULL);
    key.also = NULL;
    key.nodes = relay_policy_scope_of(elts[i]);

    k = relay_policy_seen(seen, &key, i);

    if (k != (size_t) -1) {
        relay_fail("%s[%zu].match: \"%s\" duplicates %s[%zu]", list, i,
                   key.s, list, k);
    }

    return 0;
}


/*
 * The field called name of a message (Route, EgressRule, ...), found by
 * its descriptor, and for a repeated one how many it holds in *n.
 */

static const void *
relay_policy_field_of(const void *elt, const char *name, size_t *n)
{
    const ProtobufCMessage          *m;
    const ProtobufCFieldDescriptor  *f;

    m = elt;
    f = protobuf_c_message_descriptor_get_field_by_name(m->descriptor, name);

    if (n) {
        *n = *(const size_t *) ((const char *) m + f->quantifier_offset);
    }

    return (const char *) m + f->offset;
}


static char **
relay_policy_strings_of(const void *elt, const char *field, size_t *n)
{
    return *(char **const *) relay_policy_field_of(elt, field, n);
}


static const char *
relay_policy_pattern_of(const void *elt)
{
    return *(char *const *) relay_policy_field_of(elt, "pattern", NULL);
}


static int
relay_policy_check_retry(const relay_policy_t *p, relay_policy_check_t *ck,
    char *err, size_t errlen)
{
    size_t                 i;
    relay_policy_retry_t  *rt;

    relay_policy_seen_reset(&ck->list);

    for (i = 0; i < p->n_retry; i++) {
        rt = p->retry[i];

        if (relay_policy_check_pattern_at((void *const *) p->retry, i,
                                          "retry", &ck->list, err, errlen)
            != 0)
        {
            return -1;
        }

        if (rt->backoff_min_s == 0) {
            relay_fail("retry[%zu].backoff_min_s: must be greater than 0", i);
        }

        if (rt->backoff_max_s < rt->backoff_min_s) {
            relay_fail("retry[%zu].backoff_max_s: %us is less than "
                       "backoff_min_s (%us)", i, rt->backoff_max_s,
                       rt->backoff_min_s);
        }

        if (rt->lifetime_s < rt->backoff_min_s) {
            relay_fail("retry[%zu].lifetime_s: %us is less than "
                       "backoff_min_s (%us)", i, rt->lifetime_s,
                       rt->backoff_min_s);
        }

        if (rt->delay_warning_s && rt->delay_warning_s >= rt->lifetime_s) {
            relay_fail("retry[%zu].delay_warning_s: %us is not less than "
                       "lifetime_s (%us)", i, rt->delay_warning_s,
                       rt->lifetime_s);
        }
    }

    return 0;
}


static int
relay_policy_check_inbound(const relay_policy_t *p, relay_policy_check_t *ck,
    char *err, size_t errlen)
{
    size_t                   i;
    const char              *why;
    relay_policy_inbound_t  *l;

    relay_policy_seen_reset(&ck->list);

    for (i = 0; i < p->n_inbound_limits; i++) {
        l = p->inbound_limits[i];

        switch (l->key) {

        case RELAY__CONTROL__V1__INBOUND_LIMIT__KEY__CLIENT_IP:
            why = strcmp(l->match, "*") == 0
                  ? NULL : relay_policy_check_cidr(l->match);
            break;

        case RELAY__CONTROL__V1__INBOUND_LIMIT__KEY__AUTH_USER:
        case RELAY__CONTROL__V1__INBOUND_LIMIT__KEY__TENANT:
            why = relay_policy_check_word(l->match);
            break;

        case RELAY__CONTROL__V1__INBOUND_LIMIT__KEY__SENDER_DOMAIN:
            why = relay_policy_check_pattern(l->match);
            break;

        default:
            relay_fail("inbound_limits[%zu].key: unknown key %d", i,
                       (int) l->key);
        }

        if (relay_policy_check_match_at((void *const *) p->inbound_limits, i,
                                        "inbound_limits", why, &ck->list, err,
                                        errlen)
            != 0)
        {
            return -1;
        }

        if (l->messages == 0 && l->recipients == 0) {
            relay_fail("inbound_limits[%zu]: neither messages nor "
                       "recipients is limited", i);
        }

        if (l->window_s == 0) {
            relay_fail("inbound_limits[%zu].window_s: must be greater than 0",
                       i);
        }

        if ((unsigned) l->scope > RELAY__CONTROL__V1__LIMIT_SCOPE__FLEET) {
            relay_fail("inbound_limits[%zu].scope: unknown scope %d", i,
                       (int) l->scope);
        }
    }

    return 0;
}


static int
relay_policy_check_destinations(const relay_policy_t *p,
    relay_policy_check_t *ck, char *err, size_t errlen)
{
    size_t                i;
    const char           *why;
    relay_policy_dest_t  *d;

    relay_policy_seen_reset(&ck->list);

    for (i = 0; i < p->n_destination_limits; i++) {
        d = p->destination_limits[i];

        if (relay_policy_check_pattern_at(
                (void *const *) p->destination_limits, i,
                "destination_limits", &ck->list, err, errlen)
            != 0)
        {
            return -1;
        }

        why = relay_policy_check_text(d->backoff_reply_pattern, 256);
        if (why) {
            relay_fail("destination_limits[%zu].backoff_reply_pattern: %s",
                       i, why);
        }

        if (d->backoff_reply_pattern[0] && d->backoff_s == 0) {
            relay_fail("destination_limits[%zu].backoff_s: must be greater "
                       "than 0 with backoff_reply_pattern", i);
        }

        if (d->backoff_s && d->backoff_reply_pattern[0] == '\0') {
            relay_fail("destination_limits[%zu].backoff_reply_pattern: "
                       "needed with backoff_s", i);
        }

        if ((unsigned) d->scope > RELAY__CONTROL__V1__LIMIT_SCOPE__FLEET) {
            relay_fail("destination_limits[%zu].scope: unknown scope %d", i,
                       (int) d->scope);
        }

        if ((unsigned) d->per
            > RELAY__CONTROL__V1__DESTINATION_LIMIT__PER__ADDRESS)
        {
            relay_fail("destination_limits[%zu].per: unknown value %d", i,
                       (int) d->per);
        }

        /* the fleet counts messages; connections are always the node's */

        if (d->scope == RELAY__CONTROL__V1__LIMIT_SCOPE__FLEET
            && d->messages_per_minute == 0 && d->messages_per_hour == 0)
        {
            relay_fail("destination_limits[%zu].scope: fleet needs "
                       "messages_per_minute or messages_per_hour", i);
        }

        if (d->per == RELAY__CONTROL__V1__DESTINATION_LIMIT__PER__ADDRESS
            && d->scope != RELAY__CONTROL__V1__LIMIT_SCOPE__FLEET)
        {
            relay_fail("destination_limits[%zu].per: address needs "
                       "scope fleet", i);
        }
    }

    return 0;
}


static int
relay_policy_check_pools(const relay_policy_t *p, relay_policy_check_t *ck,
    char *err, size_t errlen)
{
    size_t                   i, k;
    const char              *why;
    relay_policy_pool_t     *pool;
    relay_policy_seen_key_t  key = { 0, NULL, NULL, NULL };

    relay_policy_seen_reset(&ck->pools);

    for (i = 0; i < p->n_egress_pools; i++) {
        pool = p->egress_pools[i];

        why = relay_policy_check_word(pool->name);
        if (why == NULL && strcmp(pool->name, "*") == 0) {
            why = "\"*\" is not a pool name";
        }

        if (why) {
            relay_fail("egress_pools[%zu].name: %s", i, why);
        }

        key.s = pool->name;
        key.nodes = pool->nodes;

        k = relay_policy_seen(&ck->pools, &key, i);

        if (k != (size_t) -1) {
            relay_fail("egress_pools[%zu].name: \"%s\" duplicates "
                       "egress_pools[%zu]", i, pool->name, k);
        }

        if (pool->node_local) {
            if (pool->ehlo_name[0] || pool->n_addresses) {
                relay_fail("egress_pools[%zu]: a local pool (each node's "
                           "own) has no ehlo_name and no addresses", i);
            }

            continue;
        }

        why = relay_policy_check_name(pool->ehlo_name);
        if (why) {
            relay_fail("egress_pools[%zu].ehlo_name: %s", i, why);
        }

        if (pool->n_addresses == 0) {
            relay_fail("egress_pools[%zu].addresses: no address", i);
        }

        if (pool->n_addresses > RELAY_POLICY_MAX_ADDRESSES) {
            relay_fail("egress_pools[%zu].addresses: %zu addresses, more "
                       "than %d", i, pool->n_addresses,
                       RELAY_POLICY_MAX_ADDRESSES);
        }

        if (relay_policy_check_addresses(pool, i, ck, err, errlen) != 0) {
            return -1;
        }
    }

    return 0;
}


static int
relay_policy_check_addresses(const relay_policy_pool_t *pool, size_t i,
    relay_policy_check_t *ck, char *err, size_t errlen)
{
    size_t                       j, k;
    relay_policy_seen_key_t      key = { 0, NULL, NULL, NULL };
    relay_policy_egress_addr_t  *a;

    relay_policy_seen_reset(&ck->items);

    for (j = 0; j < pool->n_addresses; j++) {
        a = pool->addresses[j];

        if (!relay_policy_is_ipv4(a->address, strlen(a->address))
            && !relay_policy_is_ipv6(a->address, strlen(a->address)))
        {
            relay_fail("egress_pools[%zu].addresses[%zu].address: \"%s\" "
                       "is not an IPv4 or IPv6 address", i, j, a->address);
        }

        key.s = a->address;
        k = relay_policy_seen(&ck->items, &key, j);

        if (k != (size_t) -1) {
            relay_fail("egress_pools[%zu].addresses[%zu].address: "
                       "\"%s\" duplicates addresses[%zu]", i, j,
                       a->address, k);
        }

        if (a->weight > RELAY_POLICY_MAX_WEIGHT) {
            relay_fail("egress_pools[%zu].addresses[%zu].weight: %u is "
                       "more than %u", i, j, a->weight,
                       RELAY_POLICY_MAX_WEIGHT);
        }
    }

    return 0;
}


static int
relay_policy_check_rules(const relay_policy_t *p, int complete,
    relay_policy_check_t *ck, char *err, size_t errlen)
{
    size_t                i;
    const char           *why;
    relay_policy_rule_t  *rule;

    relay_policy_seen_reset(&ck->list);

    for (i = 0; i < p->n_egress_rules; i++) {
        rule = p->egress_rules[i];

        switch (rule->key) {

        case RELAY__CONTROL__V1__EGRESS_RULE__KEY__SENDER_DOMAIN:
            why = relay_policy_check_pattern(rule->match);
            break;

        case RELAY__CONTROL__V1__EGRESS_RULE__KEY__AUTH_USER:
        case RELAY__CONTROL__V1__EGRESS_RULE__KEY__TENANT:
            why = relay_policy_check_word(rule->match);
            break;

        default:
            relay_fail("egress_rules[%zu].key: unknown key %d", i,
                       (int) rule->key);
        }

        if (relay_policy_check_match_at((void *const *) p->egress_rules, i,
                                        "egress_rules", why, &ck->list, err,
                                        errlen)
            != 0)
        {
            return -1;
        }

        /* the pools' table holds every pool name (checked before) */

        if (complete && !relay_policy_seen_has(&ck->pools, rule->pool)) {
            relay_fail("egress_rules[%zu].pool: no egress pool \"%s\"", i,
                       rule->pool);
        }
    }

    return 0;
}


static int
relay_policy_check_tls(const relay_policy_t *p, relay_policy_check_t *ck,
    char *err, size_t errlen)
{
    size_t  i;

    relay_policy_seen_reset(&ck->list);

    for (i = 0; i < p->n_tls; i++) {
        if (relay_policy_check_pattern_at((void *const *) p->tls, i, "tls",
                                          &ck->list, err, errlen)
            != 0)
        {
            return -1;
        }
    }

    return 0;
}


/*
 * dkim[]: a key file path (absolute; the nodes read it), known names and
 * values, a header list that signs From; a domain and selector once.
 */

static int
relay_policy_check_dkim(const relay_policy_t *p, relay_policy_check_t *ck,
    char *err, size_t errlen)
{
    size_t                   i, j;
    const char              *why, *c;
    relay_policy_dkim_t     *d;
    relay_policy_seen_key_t  key = { 0, NULL, NULL, NULL };

    static const char  *canons[] = {
        "", "relaxed/relaxed", "relaxed/simple", "simple/relaxed",
        "simple/simple"
    };

    relay_policy_seen_reset(&ck->list);

    for (i = 0; i < p->n_dkim; i++) {
        d = p->dkim[i];

        why = relay_policy_check_name(d->domain);
        if (why) {
            relay_fail("dkim[%zu].domain: %s", i, why);
        }

        why = relay_policy_check_name(d->selector);
        if (why) {
            relay_fail("dkim[%zu].selector: %s", i, why);
        }

        why = relay_policy_check_text(d->key_file, 1024);
        if (why) {
            relay_fail("dkim[%zu].key_file: %s", i, why);
        }

        if (d->key_file[0] != '/') {
            relay_fail("dkim[%zu].key_file: not an absolute path", i);
        }

        if (d->algorithm[0] && strcmp(d->algorithm, "rsa-sha256") != 0
            && strcmp(d->algorithm, "ed25519-sha256") != 0)
        {
            relay_fail("dkim[%zu].algorithm: \"%s\" is neither rsa-sha256 "
                       "nor ed25519-sha256", i, d->algorithm);
        }

        for (j = 0; j < sizeof(canons) / sizeof(canons[0]); j++) {
            if (strcmp(d->canonicalization, canons[j]) == 0) {
                break;
            }
        }

        if (j == sizeof(canons) / sizeof(canons[0])) {
            relay_fail("dkim[%zu].canonicalization: \"%s\" is not "
                       "relaxed|simple/relaxed|simple", i,
                       d->canonicalization);
        }

        if (d->headers[0]) {
            for (c = d->headers; *c; c++) {
                if (!((*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9')
                      || *c == '-' || *c == '_' || *c == ':'))
                {
                    relay_fail("dkim[%zu].headers: lowercase header names "
                               "separated by \":\"", i);
                }
            }

            if (d->headers[0] == ':' || c[-1] == ':'
                || strstr(d->headers, "::"))
            {
                relay_fail("dkim[%zu].headers: empty header name", i);
            }

            if (strcmp(d->headers, "from") != 0
                && strncmp(d->headers, "from:", 5) != 0
                && strstr(d->headers, ":from:") == NULL
                && (strlen(d->headers) < 5
                    || strcmp(d->headers + strlen(d->headers) - 5, ":from")
                       != 0))
            {
                relay_fail("dkim[%zu].headers: must sign \"from\"", i);
            }

            if (strlen(d->headers) > 512) {
                relay_fail("dkim[%zu].headers: longer than 512 characters",
                           i);
            }
        }

        if (d->fallback[0] && strcmp(d->fallback, "envelope") != 0) {
            relay_fail("dkim[%zu].fallback: \"%s\" is not \"envelope\"",
                       i, d->fallback);
        }

        if (d->on_error[0] && strcmp(d->on_error, "defer") != 0
            && strcmp(d->on_error, "send") != 0)
        {
            relay_fail("dkim[%zu].on_error: \"%s\" is neither defer nor "
                       "send", i, d->on_error);
        }

        key.s = d->domain;
        key.also = d->selector;
        j = relay_policy_seen(&ck->list, &key, i);

        if (j != (size_t) -1) {
            relay_fail("dkim[%zu]: domain %s selector %s is already "
                       "dkim[%zu]", i, d->domain, d->selector, j);
        }
    }

    return 0;
}


#undef relay_fail


static void
relay_policy_verror(char *err, size_t errlen, const char *fmt, ...)
{
    va_list  args;

    if (errlen == 0) {
        return;
    }

    va_start(args, fmt);
    vsnprintf(err, errlen, fmt, args);
    va_end(args);
}


/* a lowercase DNS name: labels of [a-z0-9-], not starting/ending with "-" */

static const char *
relay_policy_check_name(const char *s)
{
    size_t       len, label;
    const char  *c;

    len = strlen(s);

    if (len == 0) {
        return "empty name";
    }

    if (len > RELAY_POLICY_MAX_NAME) {
        return "name longer than 253 characters";
    }

    label = 0;

    for (c = s; ; c++) {
        if (*c == '.' || *c == '\0') {
            if (label == 0) {
                return "empty label in name";
            }

            if (c[-1] == '-') {
                return "label ends with \"-\"";
            }

            if (*c == '\0') {
                break;
            }

            label = 0;
            continue;
        }

        if (*c >= 'A' && *c <= 'Z') {
            return "must be lowercase";
        }

        if (*c == '-') {
            if (label == 0) {
                return "label starts with \"-\"";
            }

        } else if (!((*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9'))) {
            return "invalid character in name";
        }

        if (++label > 63) {
            return "label longer than 63 characters";
        }
    }

    return NULL;
}


static const char *
relay_policy_check_pattern(const char *s)
{
    if (s[0] == '\0') {
        return "empty pattern";
    }

    if (strcmp(s, "*") == 0) {
        return NULL;
    }

    if (s[0] == '*') {
        return "\"*\" only alone; \".example.com\" matches subdomains";
    }

    return relay_policy_check_name(s[0] == '.' ? s + 1 : s);
}


/* "[host]", "[host]:port", "host", "host:port" */

const char *
relay_policy_hop(const char *s, relay_policy_hop_t *hop)
{
    size_t       n;
    char         host[RELAY_POLICY_MAX_NAME + 1];
    const char  *c, *end, *port, *why;
    unsigned     v;

    memset(hop, 0, sizeof(relay_policy_hop_t));

    if (s[0] == '\0') {
        return "empty hop";
    }

    if (s[0] == '[') {
        end = strchr(s, ']');
        if (end == NULL) {
            return "missing \"]\"";
        }

        if (end == s + 1) {
            return "empty host";
        }

        port = end + 1;

        if (*port != '\0' && *port != ':') {
            return "expected \":port\" after \"]\"";
        }

        n = end - s - 1;

        if (n > RELAY_POLICY_MAX_NAME) {
            return "name longer than 253 characters";
        }

        memcpy(host, s + 1, n);
        host[n] = '\0';

        hop->host = s + 1;
        hop->host_len = n;

        if (!relay_policy_is_ipv4(host, n) && !relay_policy_is_ipv6(host, n)) {
            if (strchr(host, ':')) {
                return "invalid IPv6 address";
            }

            why = relay_policy_check_name(host);
            if (why) {
                return why;
            }
        }

    } else {
        end = strchr(s, ':');
        n = end ? (size_t) (end - s) : strlen(s);
        port = s + n;

        if (n == 0) {
            return "empty host";
        }

        if (n > RELAY_POLICY_MAX_NAME) {
            return "name longer than 253 characters";
        }

        memcpy(host, s, n);
        host[n] = '\0';

        hop->host = s;
        hop->host_len = n;
        hop->mx = 1;

        if (relay_policy_is_ipv4(host, n)) {
            return "an IP address needs brackets: \"[192.0.2.1]:25\"";
        }

        why = relay_policy_check_name(host);
        if (why) {
            return why;
        }
    }

    if (*port == '\0') {
        return NULL;
    }

    port++;

    if (*port == '\0') {
        return "empty port";
    }

    v = 0;

    for (c = port; *c; c++) {
        if (*c < '0' || *c > '9') {
            return "port is not a number";
        }

        v = v * 10 + (*c - '0');

        if (v > 65535) {
            return "port out of range 1..65535";
        }
    }

    if (v == 0) {
        return "port out of range 1..65535";
    }

    hop->port = v;

    return NULL;
}


static int
relay_policy_check_hops(char **hops, size_t n, const char *field,
    relay_policy_seen_t *seen, char *err, size_t errlen)
{
    size_t                   i, k;
    const char              *why;
    relay_policy_hop_t       hop;
    relay_policy_seen_key_t  key = { 0, NULL, NULL, NULL };

    relay_policy_seen_reset(seen);

    for (i = 0; i < n; i++) {
        why = relay_policy_hop(hops[i], &hop);
        if (why) {
            relay_policy_verror(err, errlen, "%s[%zu]: \"%s\": %s", field, i,
                                hops[i], why);
            return -1;
        }

        key.s = hops[i];
        k = relay_policy_seen(seen, &key, i);

        if (k != (size_t) -1) {
            relay_policy_verror(err, errlen, "%s[%zu]: \"%s\" duplicates "
                                "%s[%zu]", field, i, hops[i], field, k);
            return -1;
        }
    }

    return 0;
}


/* "192.0.2.0/24", "2001:db8::/32", or an address alone */

static const char *
relay_policy_check_cidr(const char *s)
{
    char           addr[64];
    size_t         n, i;
    unsigned       bits, max, v;
    unsigned char  buf[16];
    const char    *slash, *c;
    int            family;

    if (s[0] == '\0') {
        return "empty network";
    }

    slash = strchr(s, '/');
    n = slash ? (size_t) (slash - s) : strlen(s);

    if (n == 0 || n >= sizeof(addr)) {
        return "not an address or CIDR network";
    }

    memcpy(addr, s, n);
    addr[n] = '\0';

    if (inet_pton(AF_INET, addr, buf) == 1 && relay_policy_is_ipv4(addr, n)) {
        family = AF_INET;
        max = 32;

    } else if (inet_pton(AF_INET6, addr, buf) == 1) {
        family = AF_INET6;
        max = 128;

    } else {
        return "not an address or CIDR network";
    }

    if (slash == NULL) {
        return NULL;
    }

    c = slash + 1;

    if (*c == '\0' || strlen(c) > 3) {
        return "bad prefix length";
    }

    for (v = 0; *c; c++) {
        if (*c < '0' || *c > '9') {
            return "bad prefix length";
        }

        v = v * 10 + (*c - '0');
    }

    if (v > max || (c - slash > 2 && slash[1] == '0')) {
        return "bad prefix length";
    }

    bits = v;

    /* no bits set after the prefix */

    for (i = 0; i < (family == AF_INET ? 4u : 16u); i++) {
        unsigned  keep;

        keep = bits >= 8 * (i + 1) ? 8 : (bits > 8 * i ? bits - 8 * i : 0);

        if (buf[i] & (0xff >> keep)) {
            return "host bits set after the prefix length";
        }
    }

    return NULL;
}


/* printable, no control characters, at most max bytes */

static const char *
relay_policy_check_text(const char *s, size_t max)
{
    const char  *c;

    for (c = s; *c; c++) {
        if ((unsigned char) *c < 0x20 || *c == 0x7f) {
            return "control character";
        }
    }

    if ((size_t) (c - s) > max) {
        return "too long";
    }

    return NULL;
}


/* a user, tenant or pool name: no spaces, quotes, ";" or "#" */

static const char *
relay_policy_check_word(const char *s)
{
    const char  *c;

    if (s[0] == '\0') {
        return "empty";
    }

    for (c = s; *c; c++) {
        if ((unsigned char) *c <= 0x20 || *c == 0x7f || *c == '"'
            || *c == ';' || *c == '#' || *c == '\\' || *c == '=')
        {
            return "invalid character";
        }
    }

    if (c - s > 255) {
        return "too long";
    }

    return NULL;
}


/* a dotted quad of decimal numbers 0..255, no leading zeros */

static int
relay_policy_is_ipv4(const char *s, size_t len)
{
    size_t    i, digits, dots;
    unsigned  v;

    digits = 0;
    dots = 0;
    v = 0;

    for (i = 0; i <= len; i++) {
        if (i == len || s[i] == '.') {
            if (digits == 0 || v > 255) {
                return 0;
            }

            if (i < len) {
                dots++;
            }

            digits = 0;
            v = 0;
            continue;
        }

        if (s[i] < '0' || s[i] > '9') {
            return 0;
        }

        if (digits == 1 && v == 0) {
            return 0;
        }

        v = v * 10 + (s[i] - '0');

        if (++digits > 3) {
            return 0;
        }
    }

    return dots == 3;
}


static int
relay_policy_is_ipv6(const char *s, size_t len)
{
    char           buf[64];
    unsigned char  addr[16];

    if (len == 0 || len >= sizeof(buf) || memchr(s, ':', len) == NULL) {
        return 0;
    }

    memcpy(buf, s, len);
    buf[len] = '\0';

    return inet_pton(AF_INET6, buf, addr) == 1;
}


/* days since 1970-01-01 of a proleptic Gregorian date */

static int64_t
relay_policy_days_from_civil(int64_t y, unsigned m, unsigned d)
{
    int64_t   era;
    unsigned  yoe, doy, doe;

    y -= m <= 2;
    era = (y >= 0 ? y : y - 399) / 400;
    yoe = (unsigned) (y - era * 400);
    doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;

    return era * 146097 + (int64_t) doe - 719468;
}
