
/*
 * Copyright (C) The relay authors
 */


#ifndef _RELAY_CLASSIFY_H_INCLUDED_
#define _RELAY_CLASSIFY_H_INCLUDED_


#include <stddef.h>


/*
 * Why a recipient was deferred or failed, in a word an operator can count
 * and graph: the category of a reply.  The set is fixed (metrics, logs and
 * queue listings name these); the rules that map replies to them are a
 * built-in table that an operator extends with rules of their own.
 */

typedef enum {
    RELAY_CLASS_OTHER = 0,
    RELAY_CLASS_BAD_MAILBOX,
    RELAY_CLASS_BAD_DOMAIN,
    RELAY_CLASS_MAILBOX_FULL,
    RELAY_CLASS_TOO_LARGE,
    RELAY_CLASS_POLICY,
    RELAY_CLASS_RATE_LIMITED,
    RELAY_CLASS_AUTH_TLS,
    RELAY_CLASS_DNS,
    RELAY_CLASS_CONNECTION,
    RELAY_CLASS_PROTOCOL,
    RELAY_CLASS_EXPIRED,
    RELAY_CLASS_N
} relay_class_e;


typedef struct relay_classify_rule_s  relay_classify_rule_t;

/* an operator's rules, tried before the built-in ones */
typedef struct {
    relay_classify_rule_t    *rules;
    size_t                    n;
    char                     *text;          /* the rules' strings */
} relay_classify_rules_t;


const char *relay_classify_name(unsigned category);
int relay_classify_find(const char *name, size_t len);

/*
 * Rules, one a line: "CATEGORY STATUS [TEXT]", "#" comments.  STATUS is
 * an enhanced status code with "*" for any of its numbers ("5.1.1",
 * "4.7.*", "*.2.2"), a reply code ("550"), or "*"; TEXT (optional, in
 * double quotes when it has "#" or leading or trailing spaces) must occur
 * in the reply, in any case.  Both may list alternatives, "a|b".  0, or
 * -1 with "NAME:LINE: why" in err.
 */
int relay_classify_parse(relay_classify_rules_t *r, const char *text,
    size_t len, const char *name, char *err, size_t errlen);
int relay_classify_load(relay_classify_rules_t *r, const char *path,
    char *err, size_t errlen);
void relay_classify_free(relay_classify_rules_t *r);

/*
 * The category of a reply: the operator's rules (r may be NULL), then the
 * built-in ones, the first that matches.  status: the enhanced status
 * code ("4.4.1"; len 0: none); text: the reply ("550 5.1.1 <a@b>: ...")
 * or the relay's own words for a failure.  A rule naming a status and a
 * text comes before one naming a status only, and those before rules of
 * text only: the code says first, the words second.
 */
unsigned relay_classify(const relay_classify_rules_t *r, const char *status,
    size_t status_len, const unsigned char *text, size_t len);

/* the same for a text with the status somewhere in it (a last error) */
unsigned relay_classify_text(const relay_classify_rules_t *r,
    const unsigned char *text, size_t len);


#endif /* _RELAY_CLASSIFY_H_INCLUDED_ */
