
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


#define RELAY_POLICY_NO_EQ           ((size_t) -1)
#define RELAY_POLICY_MAX_NAME        253
#define RELAY_POLICY_MAX_TEXT        1024
#define RELAY_POLICY_MAX_WEIGHT      1000
#define RELAY_POLICY_MAX_LISTS       32      /* repeated fields of Policy */
#define RELAY_POLICY_MAX_ENTRIES     100000  /* in each list of Policy */
#define RELAY_POLICY_MAX_HOPS        64      /* in one list of hops */
#define RELAY_POLICY_MAX_ADDRESSES   32      /* in one egress pool */
#define RELAY_POLICY_MAX_CREATED     253402300799LL  /* 9999-12-31 */


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
} relay_policy_parse_t;


/*
 * Validation finds what a list holds twice in one pass: each element goes
 * into a hash table of the strings (and keys) seen so far.  A new
 * generation empties the table without touching it.
 */

typedef struct {
    const char    *s;
    size_t         index;
    unsigned       gen;
    int            key;
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
    RELAY_POLICY_PARAM_STRING
} relay_policy_param_type_e;


typedef struct {
    const char                *name;
    relay_policy_param_type_e  type;
    int                        required;
    size_t                     offset;       /* in the message */
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
static int relay_policy_key(relay_policy_parse_t *ps, const char **keys);
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

static void relay_policy_render_header(relay_buf_t *b,
    const relay_policy_t *p);
static void relay_policy_render_section(relay_buf_t *b);
static void relay_policy_render_list(relay_buf_t *b, void *const *elts,
    size_t n, relay_policy_render_pt render);
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
static void relay_policy_render_keyed(relay_buf_t *b, const char *statement,
    const char **keys, unsigned key, const char *match);
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
static int relay_policy_seen_init(relay_policy_seen_t *st, size_t n);
static void relay_policy_seen_reset(relay_policy_seen_t *st);
static size_t relay_policy_seen(relay_policy_seen_t *st, int key,
    const char *s, size_t index);
static int relay_policy_seen_has(relay_policy_seen_t *st, const char *s);
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
    { NULL, NULL }
};


static const char  *relay_policy_inbound_keys[] = {
    "client_ip", "auth_user", "sender_domain"
};

static const char  *relay_policy_rule_keys[] = {
    "sender_domain", "auth_user", "tenant"
};


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
    const relay_policy_stmt_t  *st;

    if (ps->tok[0].eq != RELAY_POLICY_NO_EQ) {
        relay_policy_perror(ps, ps->line, "unknown statement \"%s\"",
                            ps->tok[0].data);
        return -1;
    }

    for (st = relay_policy_statements; st->name; st++) {
        if (strcmp(st->name, ps->tok[0].data) == 0) {
            return st->handler(ps);
        }
    }

    relay_policy_perror(ps, ps->line, "unknown statement \"%s\"",
                        ps->tok[0].data);
    return -1;
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


/* the key of "inbound_limit" and "egress_rule": its index in keys[3] */

static int
relay_policy_key(relay_policy_parse_t *ps, const char **keys)
{
    int  k;

    for (k = 0; k < 3; k++) {
        if (strcmp(ps->tok[1].data, keys[k]) == 0) {
            return k;
        }
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
          offsetof(relay_policy_retry_t, backoff_min_s) },
        { "max", RELAY_POLICY_PARAM_DURATION, 1,
          offsetof(relay_policy_retry_t, backoff_max_s) },
        { "lifetime", RELAY_POLICY_PARAM_DURATION, 1,
          offsetof(relay_policy_retry_t, lifetime_s) },
        { "delay_warning", RELAY_POLICY_PARAM_DURATION, 0,
          offsetof(relay_policy_retry_t, delay_warning_s) }
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
          offsetof(relay_policy_inbound_t, window_s) },
        { "messages", RELAY_POLICY_PARAM_NUMBER, 0,
          offsetof(relay_policy_inbound_t, messages) },
        { "recipients", RELAY_POLICY_PARAM_NUMBER, 0,
          offsetof(relay_policy_inbound_t, recipients) }
    };

    if (relay_policy_positional(ps, 2, 2) < 0) {
        return -1;
    }

    k = relay_policy_key(ps, relay_policy_inbound_keys);
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
          offsetof(relay_policy_dest_t, max_connections) },
        { "messages_per_connection", RELAY_POLICY_PARAM_NUMBER, 0,
          offsetof(relay_policy_dest_t, messages_per_connection) },
        { "messages_per_minute", RELAY_POLICY_PARAM_NUMBER, 0,
          offsetof(relay_policy_dest_t, messages_per_minute) },
        { "messages_per_hour", RELAY_POLICY_PARAM_NUMBER, 0,
          offsetof(relay_policy_dest_t, messages_per_hour) },
        { "connections_per_minute", RELAY_POLICY_PARAM_NUMBER, 0,
          offsetof(relay_policy_dest_t, connections_per_minute) },
        { "backoff_reply", RELAY_POLICY_PARAM_STRING, 0,
          offsetof(relay_policy_dest_t, backoff_reply_pattern) },
        { "backoff", RELAY_POLICY_PARAM_DURATION, 0,
          offsetof(relay_policy_dest_t, backoff_s) }
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

    k = relay_policy_key(ps, relay_policy_rule_keys);
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
        relay_buf_printf(b, ";\n");
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
                              l->key, l->match);
    relay_policy_buf_duration(b, "window", l->window_s);
    relay_policy_buf_number(b, "messages", l->messages);
    relay_policy_buf_number(b, "recipients", l->recipients);
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
}


static void
relay_policy_render_pool(relay_buf_t *b, const void *elt)
{
    size_t                      i;
    const relay_policy_pool_t  *pool = elt;

    relay_buf_printf(b, "egress_pool ");
    relay_policy_buf_word(b, pool->name, 0);
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


/* "STATEMENT KEY MATCH" of inbound_limit and egress_rule */

static void
relay_policy_render_keyed(relay_buf_t *b, const char *statement,
    const char **keys, unsigned key, const char *match)
{
    relay_buf_printf(b, "%s %s ", statement, key < 3 ? keys[key] : "unknown");
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

    if (relay_policy_check_hop_lists((void *const *) p->routes, p->n_routes,
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
        || relay_policy_check_tls(p, ck, err, errlen) != 0)
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
        { "tls", p->n_tls }
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
 * (key, s) of element "index": the index of an element seen before with
 * the same, or (size_t) -1 when it is new (then it is remembered).
 */

static size_t
relay_policy_seen(relay_policy_seen_t *st, int key, const char *s,
    size_t index)
{
    size_t                      h;
    const unsigned char        *c;
    relay_policy_seen_entry_t  *e;

    h = 2166136261u ^ (unsigned) key;

    for (c = (const unsigned char *) s; *c; c++) {
        h = (h ^ *c) * 16777619u;
    }

    for ( ;; ) {
        e = &st->e[h & st->mask];

        if (e->gen != st->gen) {
            e->gen = st->gen;
            e->s = s;
            e->key = key;
            e->index = index;
            return (size_t) -1;
        }

        if (e->key == key && strcmp(e->s, s) == 0) {
            return e->index;
        }

        h++;
    }
}


/* whether s (key 0) was seen; nothing is remembered */

static int
relay_policy_seen_has(relay_policy_seen_t *st, const char *s)
{
    size_t                      h;
    const unsigned char        *c;
    relay_policy_seen_entry_t  *e;

    h = 2166136261u;

    for (c = (const unsigned char *) s; *c; c++) {
        h = (h ^ *c) * 16777619u;
    }

    for ( ;; ) {
        e = &st->e[h & st->mask];

        if (e->gen != st->gen) {
            return 0;
        }

        if (e->key == 0 && strcmp(e->s, s) == 0) {
            return 1;
        }

        h++;
    }
}


static void
relay_policy_seen_free(relay_policy_seen_t *st)
{
    free(st->e);
    st->e = NULL;
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
    size_t       k;
    const char  *pattern, *why;

    pattern = relay_policy_pattern_of(elts[i]);

    why = relay_policy_check_pattern(pattern);
    if (why) {
        relay_fail("%s[%zu].pattern: %s", list, i, why);
    }

    k = relay_policy_seen(seen, 0, pattern, i);

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
    int          key;
    size_t       k;
    const char  *match;

    if (why) {
        relay_fail("%s[%zu].match: %s", list, i, why);
    }

    key = *(const int *) relay_policy_field_of(elts[i], "key", NULL);
    match = *(char *const *) relay_policy_field_of(elts[i], "match", NULL);

    k = relay_policy_seen(seen, key, match, i);

    if (k != (size_t) -1) {
        relay_fail("%s[%zu].match: \"%s\" duplicates %s[%zu]", list, i,
                   match, list, k);
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
    }

    return 0;
}


static int
relay_policy_check_pools(const relay_policy_t *p, relay_policy_check_t *ck,
    char *err, size_t errlen)
{
    size_t                i, k;
    const char           *why;
    relay_policy_pool_t  *pool;

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

        k = relay_policy_seen(&ck->pools, 0, pool->name, i);

        if (k != (size_t) -1) {
            relay_fail("egress_pools[%zu].name: \"%s\" duplicates "
                       "egress_pools[%zu]", i, pool->name, k);
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

        k = relay_policy_seen(&ck->items, 0, a->address, j);

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
    size_t               i, k;
    const char          *why;
    relay_policy_hop_t   hop;

    relay_policy_seen_reset(seen);

    for (i = 0; i < n; i++) {
        why = relay_policy_hop(hops[i], &hop);
        if (why) {
            relay_policy_verror(err, errlen, "%s[%zu]: \"%s\": %s", field, i,
                                hops[i], why);
            return -1;
        }

        k = relay_policy_seen(seen, 0, hops[i], i);

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
