
/*
 * Copyright (C) The relay authors
 */


/*
 * Bounce classification: the category of a deferral or a failure, from
 * the enhanced status code (RFC 3463) first and the reply's words second.
 *
 * The built-in table is ordered in three bands: rules that name a code
 * and words (where large receivers use a code for something else than
 * RFC 3463 says: Gmail's 4.2.1 for its rate limit, Microsoft's 5.4.1 for
 * an unknown recipient, greylisting under any 4xx), rules of a code
 * alone, and rules of words alone for replies whose code says nothing
 * ("4.0.0", "5.0.0": the relay's own when the server gave none), then the
 * basic reply code.  An operator's rules (relay_bounce_rules, or relayctl
 * --bounce-rules) come before all of them, first match wins.
 *
 * Plain C without state: any thread may classify at any time; rules are
 * read-only once parsed.
 */


#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "relay_classify.h"


struct relay_classify_rule_s {
    unsigned                  category;
    const char               *status;        /* "*", "5.1.*", "550" */
    const char               *text;          /* NULL: any */
};


typedef struct {
    int                       cls;           /* 0: no enhanced code */
    int                       subject;
    int                       detail;
    int                       reply;         /* 0: no reply code */
} relay_classify_status_t;


static const char  *relay_classify_names[] = {
    "other",
    "bad-mailbox",
    "bad-domain",
    "mailbox-full",
    "message-too-large",
    "policy-rejected",
    "rate-limited",
    "auth-tls-required",
    "dns-failure",
    "connection-failure",
    "protocol-error",
    "expired"
};


#define R(cat, status, text)  { RELAY_CLASS_ ## cat, status, text }

static const relay_classify_rule_t  relay_classify_builtin[] = {

    /* a code and words: where the code alone would mislead */

    R(RATE_LIMITED, "4.*.*", "greylist|graylist|grey-list"),
    R(RATE_LIMITED, "4.2.1", "rate"),                 /* Gmail */
    R(RATE_LIMITED, "4.7.*", "rate|try again later|busy"),  /* Microsoft */
    R(BAD_MAILBOX, "*.5.0", "mailbox unavailable"),   /* Outlook.com */
    R(MAILBOX_FULL, "*.2.0|*.2.1", "quota|full"),
    R(BAD_MAILBOX, "5.4.1", "recipient"),             /* Microsoft 365 */
    R(BAD_DOMAIN, "*.1.10", "null mx"),               /* RFC 7505 */
    R(AUTH_TLS, "*.7.0", "tls|authenticat"),
    R(POLICY, "*.7.9", "policy"),                     /* Yahoo */
    R(POLICY, "*.7.*", "spam"),
    R(BAD_MAILBOX, "*.7.1", "user unknown"),
    R(POLICY, "*.1.0", "sender"),

    /* a code alone (RFC 3463, RFC 7505, what receivers use) */

    R(BAD_MAILBOX, "*.1.0|*.1.1|*.1.3|*.1.4|*.1.6|*.1.10|*.2.0|*.2.1",
      NULL),
    R(BAD_DOMAIN, "*.1.2|*.4.6", NULL),
    R(POLICY, "*.1.7|*.1.8", NULL),                   /* the sender */
    R(MAILBOX_FULL, "*.2.2", NULL),
    R(TOO_LARGE, "*.2.3|*.3.4", NULL),
    R(CONNECTION, "*.4.0|*.4.1|*.4.2", NULL),
    R(DNS, "*.4.3|*.4.4", NULL),
    R(EXPIRED, "*.4.7", NULL),
    R(RATE_LIMITED, "*.4.5|*.5.3|4.7.0", NULL),       /* 4.7.0: "later" */
    R(PROTOCOL, "*.5.*|*.6.*", NULL),
    R(AUTH_TLS, "*.7.4|*.7.5|*.7.8|*.7.9|*.7.10|*.7.11|*.7.57", NULL),
    R(POLICY, "*.7.*", NULL),

    /* words alone: the code said nothing */

    R(RATE_LIMITED, "*", "greylist|graylist"),
    R(BAD_MAILBOX, "*", "user unknown|unknown user|no such user"
                        "|unknown recipient|recipient unknown"
                        "|invalid recipient|recipient not found"
                        "|address rejected|mailbox not found"
                        "|mailbox unavailable|mailbox not available"
                        "|no mailbox|does not exist|account disabled"
                        "|doesn't have a"),
    R(MAILBOX_FULL, "*", "mailbox full|mailbox is full|quota"),
    R(TOO_LARGE, "*", "too large|too big|size exceeds|message size"),
    R(BAD_DOMAIN, "*", "domain not found|no such domain|unrouteable"),
    R(DNS, "*", "host not found|lookup|dns"),
    R(POLICY, "*", "spam|blocked|blacklist|blocklist|spamhaus|reputation"
                   "|policy|denied|prohibit|not allowed"),
    R(RATE_LIMITED, "*", "too many|rate limit|throttl|try again later"
                         "|temporarily deferred|slow down"),
    R(AUTH_TLS, "*", "starttls|tls|authentication required|encryption"),
    R(CONNECTION, "*", "connection refused|connection reset"
                       "|connection closed|connection lost|timed out"
                       "|timeout|unreachable|no route to host"),
    R(PROTOCOL, "*", "syntax|not recognized|unrecognized|invalid reply"
                     "|bad sequence"),
    R(EXPIRED, "*", "expired"),

    /* the basic reply code (RFC 5321 4.2.2) */

    R(BAD_MAILBOX, "550|551|553", NULL),
    R(MAILBOX_FULL, "552", NULL),
    R(POLICY, "554", NULL),
    R(CONNECTION, "421", NULL),
    R(PROTOCOL, "500|501|502|503|504", NULL)
};

#undef R


static int relay_classify_number(const char **p, const char *last, int *n);
static void relay_classify_status(relay_classify_status_t *st,
    const char *status, size_t status_len, const unsigned char *text,
    size_t len);
static int relay_classify_match(const relay_classify_rule_t *rule,
    const relay_classify_status_t *st, const unsigned char *text,
    size_t len);
static int relay_classify_pattern(const char *pattern,
    const relay_classify_status_t *st);
static int relay_classify_one(const char *p, const char *last,
    const relay_classify_status_t *st);
static int relay_classify_contains(const unsigned char *text, size_t len,
    const char *word);
static int relay_classify_valid_status(const char *s);
static void relay_classify_error(char *err, size_t errlen, const char *name,
    size_t line, const char *fmt, const char *arg);


const char *
relay_classify_name(unsigned category)
{
    return category < RELAY_CLASS_N ? relay_classify_names[category]
                                    : relay_classify_names[0];
}


int
relay_classify_find(const char *name, size_t len)
{
    unsigned  i;

    for (i = 0; i < RELAY_CLASS_N; i++) {
        if (strlen(relay_classify_names[i]) == len
            && memcmp(relay_classify_names[i], name, len) == 0)
        {
            return (int) i;
        }
    }

    return -1;
}


unsigned
relay_classify(const relay_classify_rules_t *r, const char *status,
    size_t status_len, const unsigned char *text, size_t len)
{
    size_t                   i;
    relay_classify_status_t  st;

    relay_classify_status(&st, status, status_len, text, len);

    for (i = 0; r && i < r->n; i++) {
        if (relay_classify_match(&r->rules[i], &st, text, len)) {
            return r->rules[i].category;
        }
    }

    for (i = 0; i < sizeof(relay_classify_builtin)
                    / sizeof(relay_classify_builtin[0]); i++)
    {
        if (relay_classify_match(&relay_classify_builtin[i], &st, text, len))
        {
            return relay_classify_builtin[i].category;
        }
    }

    return RELAY_CLASS_OTHER;
}


/*
 * A last error as the queue file keeps it, "<rcpt> relay: 4.4.1 text":
 * the first word that is an enhanced status code is the status, what
 * follows it the reply.
 */

unsigned
relay_classify_text(const relay_classify_rules_t *r,
    const unsigned char *text, size_t len)
{
    int                   n;
    const char           *p, *q, *last;
    const unsigned char  *s;

    last = (const char *) text + len;

    for (s = text; s < text + len; s++) {
        if ((s > text && s[-1] != ' ')
            || (*s != '2' && *s != '4' && *s != '5')
            || s + 1 >= text + len || s[1] != '.')
        {
            continue;
        }

        p = (const char *) s + 2;

        if (relay_classify_number(&p, last, &n) != 0
            || p >= last || *p != '.')
        {
            continue;
        }

        p++;

        if (relay_classify_number(&p, last, &n) != 0
            || (p < last && *p != ' '))
        {
            continue;
        }

        q = p < last ? p + 1 : p;

        return relay_classify(r, (const char *) s, p - (const char *) s,
                              (const unsigned char *) q, last - q);
    }

    return relay_classify(r, NULL, 0, text, len);
}


/* "c.s.d" of status, and the reply code the text starts with */

static void
relay_classify_status(relay_classify_status_t *st, const char *status,
    size_t status_len, const unsigned char *text, size_t len)
{
    const char  *p, *last;

    memset(st, 0, sizeof(relay_classify_status_t));

    if (len >= 3 && text[0] >= '2' && text[0] <= '5'
        && text[1] >= '0' && text[1] <= '9'
        && text[2] >= '0' && text[2] <= '9'
        && (len == 3 || text[3] == ' ' || text[3] == '-'))
    {
        st->reply = (text[0] - '0') * 100 + (text[1] - '0') * 10
                    + (text[2] - '0');
    }

    if (status == NULL || status_len < 5) {
        return;
    }

    p = status;
    last = status + status_len;

    if ((*p != '2' && *p != '4' && *p != '5') || p[1] != '.') {
        return;
    }

    p += 2;

    if (relay_classify_number(&p, last, &st->subject) != 0
        || p >= last || *p++ != '.'
        || relay_classify_number(&p, last, &st->detail) != 0
        || p != last)
    {
        return;
    }

    st->cls = status[0] - '0';
}


static int
relay_classify_number(const char **p, const char *last, int *n)
{
    const char  *s;

    *n = 0;

    for (s = *p; s < last && *s >= '0' && *s <= '9' && s - *p < 3; s++) {
        *n = *n * 10 + (*s - '0');
    }

    if (s == *p || (s < last && *s >= '0' && *s <= '9')) {
        return -1;
    }

    *p = s;

    return 0;
}


static int
relay_classify_match(const relay_classify_rule_t *rule,
    const relay_classify_status_t *st, const unsigned char *text,
    size_t len)
{
    if (!relay_classify_pattern(rule->status, st)) {
        return 0;
    }

    return rule->text == NULL
           || relay_classify_contains(text, len, rule->text);
}


/* "*", "c.s.d" with "*" for any of them, a reply code "550"; "a|b": either */

static int
relay_classify_pattern(const char *pattern, const relay_classify_status_t *st)
{
    const char  *p, *bar;

    for (p = pattern; /* void */ ; p = bar + 1) {
        bar = strchr(p, '|');

        if (relay_classify_one(p, bar ? bar : p + strlen(p), st)) {
            return 1;
        }

        if (bar == NULL) {
            return 0;
        }
    }
}


static int
relay_classify_one(const char *p, const char *last,
    const relay_classify_status_t *st)
{
    int  i, n, want, got[3];

    if (last - p == 1 && *p == '*') {
        return 1;
    }

    if (last - p == 3 && p[1] != '.') {
        return st->reply == (p[0] - '0') * 100 + (p[1] - '0') * 10
                            + (p[2] - '0');
    }

    if (st->cls == 0) {
        return 0;
    }

    got[0] = st->cls;
    got[1] = st->subject;
    got[2] = st->detail;

    for (i = 0; i < 3; i++) {
        if (p < last && *p == '*') {
            want = -1;
            p++;

        } else if (relay_classify_number(&p, last, &n) == 0) {
            want = n;

        } else {
            return 0;
        }

        if (i < 2 && (p >= last || *p++ != '.')) {
            return 0;
        }

        if (want != -1 && want != got[i]) {
            return 0;
        }
    }

    return p == last;
}


/* one of the words ("a|b") occurs in text, in any case */

static int
relay_classify_contains(const unsigned char *text, size_t len,
    const char *words)
{
    size_t       i, j, n;
    const char  *w, *bar;

    for (w = words; /* void */ ; w = bar + 1) {
        bar = strchr(w, '|');
        n = bar ? (size_t) (bar - w) : strlen(w);

        for (i = 0; n && i + n <= len; i++) {
            for (j = 0; j < n; j++) {
                if (((text[i + j] >= 'A' && text[i + j] <= 'Z')
                     ? text[i + j] + 32 : text[i + j])
                    != (unsigned char) w[j])
                {
                    break;
                }
            }

            if (j == n) {
                return 1;
            }
        }

        if (bar == NULL) {
            return 0;
        }
    }
}


int
relay_classify_load(relay_classify_rules_t *r, const char *path,
    char *err, size_t errlen)
{
    int     rc;
    char   *text;
    long    size;
    FILE   *f;
    size_t  len;

    f = fopen(path, "r");
    if (f == NULL) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }

    text = NULL;
    len = 0;

    if (fseek(f, 0, SEEK_END) == 0 && (size = ftell(f)) >= 0
        && size < 1024 * 1024 && fseek(f, 0, SEEK_SET) == 0)
    {
        text = malloc(size + 1);

        if (text) {
            len = fread(text, 1, size, f);
        }
    }

    if (text == NULL || ferror(f)) {
        snprintf(err, errlen, "%s: cannot be read (at most 1 MB)", path);
        free(text);
        (void) fclose(f);
        return -1;
    }

    (void) fclose(f);

    rc = relay_classify_parse(r, text, len, path, err, errlen);

    free(text);

    return rc;
}


/*
 * The rules' strings go into one copy of the text, cut in place: each
 * rule points into it.
 */

int
relay_classify_parse(relay_classify_rules_t *r, const char *text,
    size_t len, const char *name, char *err, size_t errlen)
{
    int                     cat;
    char                   *p, *eol, *word[3], *end, *s;
    size_t                  line, n, i;
    relay_classify_rule_t  *rule;

    memset(r, 0, sizeof(relay_classify_rules_t));

    r->text = malloc(len + 1);
    r->rules = malloc((len / 2 + 1) * sizeof(relay_classify_rule_t));

    if (r->text == NULL || r->rules == NULL) {
        snprintf(err, errlen, "%s: out of memory", name);
        relay_classify_free(r);
        return -1;
    }

    memcpy(r->text, text, len);
    r->text[len] = '\0';

    line = 0;

    for (p = r->text; p < r->text + len; p = eol + 1) {
        line++;

        eol = memchr(p, '\n', r->text + len - p);
        if (eol == NULL) {
            eol = r->text + len;
        }

        *eol = '\0';

        if (memchr(p, '\0', eol - p) != NULL) {
            relay_classify_error(err, errlen, name, line, "NUL in a rule%s",
                                 "");
            goto failed;
        }

        /* two words, then the text: the rest, or a quoted string */

        for (n = 0; n < 3; n++) {
            while (*p == ' ' || *p == '\t' || *p == '\r') {
                p++;
            }

            if (*p == '\0' || *p == '#') {
                break;
            }

            if (n == 2 && *p == '"') {
                s = strchr(p + 1, '"');
                if (s == NULL) {
                    relay_classify_error(err, errlen, name, line,
                                         "unterminated string%s", "");
                    goto failed;
                }

                *s++ = '\0';
                word[n] = p + 1;
                p = s;

                while (*p == ' ' || *p == '\t' || *p == '\r') {
                    p++;
                }

                if (*p != '\0' && *p != '#') {
                    relay_classify_error(err, errlen, name, line,
                                         "unexpected \"%s\" after the text",
                                         p);
                    goto failed;
                }

                n++;
                break;
            }

            word[n] = p;

            if (n == 2) {
                end = strchr(p, '#');
                end = end ? end : eol;

                while (end > p && (end[-1] == ' ' || end[-1] == '\t'
                                   || end[-1] == '\r'))
                {
                    end--;
                }

                *end = '\0';
                n++;
                break;
            }

            while (*p && *p != ' ' && *p != '\t' && *p != '\r') {
                p++;
            }

            if (*p) {
                *p++ = '\0';
            }
        }

        if (n == 0) {
            continue;
        }

        if (n == 1) {
            relay_classify_error(err, errlen, name, line,
                                 "\"%s\" needs a status (or \"*\")",
                                 word[0]);
            goto failed;
        }

        cat = relay_classify_find(word[0], strlen(word[0]));
        if (cat < 0) {
            relay_classify_error(err, errlen, name, line,
                                 "unknown category \"%s\"", word[0]);
            goto failed;
        }

        if (!relay_classify_valid_status(word[1])) {
            relay_classify_error(err, errlen, name, line,
                                 "bad status \"%s\" (5.1.1, 4.7.*, 550 "
                                 "or *)", word[1]);
            goto failed;
        }

        rule = &r->rules[r->n++];
        rule->category = (unsigned) cat;
        rule->status = word[1];
        rule->text = NULL;

        if (n == 3 && word[2][0] != '\0') {
            for (i = 0; word[2][i]; i++) {
                if (word[2][i] >= 'A' && word[2][i] <= 'Z') {
                    word[2][i] += 32;
                }
            }

            rule->text = word[2];
        }
    }

    return 0;

failed:

    relay_classify_free(r);

    return -1;
}


static int
relay_classify_valid_status(const char *s)
{
    int          i, n;
    const char  *p, *last, *bar;

    for ( /* void */ ; /* void */ ; s = bar + 1) {
        bar = strchr(s, '|');
        last = bar ? bar : s + strlen(s);
        p = s;

        if (last - p == 1 && *p == '*') {
            goto next;
        }

        if (last - p == 3 && p[0] >= '2' && p[0] <= '5'
            && p[1] >= '0' && p[1] <= '9' && p[2] >= '0' && p[2] <= '9')
        {
            goto next;
        }

        for (i = 0; i < 3; i++) {
            if (p < last && *p == '*') {
                p++;

            } else if (relay_classify_number(&p, last, &n) != 0
                       || (i == 0 && n != 2 && n != 4 && n != 5))
            {
                return 0;
            }

            if (i < 2 && (p >= last || *p++ != '.')) {
                return 0;
            }
        }

        if (p != last) {
            return 0;
        }

    next:

        if (bar == NULL) {
            return 1;
        }
    }
}


void
relay_classify_free(relay_classify_rules_t *r)
{
    free(r->rules);
    free(r->text);

    r->rules = NULL;
    r->text = NULL;
    r->n = 0;
}


static void
relay_classify_error(char *err, size_t errlen, const char *name, size_t line,
    const char *fmt, const char *arg)
{
    int  n;

    n = snprintf(err, errlen, "%s:%zu: ", name, line);

    if (n >= 0 && (size_t) n < errlen) {
        snprintf(err + n, errlen - n, fmt, arg);
    }
}
