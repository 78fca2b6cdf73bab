
/*
 * Copyright (C) The relay authors
 */


/*
 * lib/relay_classify.c: real-world replies (RFC 3463 codes, and the texts
 * of large receivers as their postmaster pages document them) and the
 * relay's own failure texts, each to its category; the same texts as a
 * queue file's last error; an operator's rules before the built-in ones;
 * errors of a rules file.
 */


#include <stdio.h>
#include <string.h>

#include "relay_classify.h"
#include "../tcase.h"


typedef struct {
    const char  *label;
    const char  *status;               /* the dsn the relay recorded */
    const char  *reply;
    const char  *category;
} t_reply_t;


static const t_reply_t  t_replies[] = {

    /* Gmail */
    { "gmail no such user", "5.1.1",
      "550 5.1.1 The email account that you tried to reach does not exist. "
      "Please try double-checking the recipient's email address for typos "
      "or unnecessary spaces. https://support.google.com/mail/?p=NoSuchUser",
      "bad-mailbox" },
    { "gmail over quota (permanent)", "5.2.2",
      "552 5.2.2 The email account that you tried to reach is over quota. "
      "Please direct the recipient to "
      "https://support.google.com/mail/?p=OverQuotaPerm", "mailbox-full" },
    { "gmail over quota (temporary)", "4.2.2",
      "452 4.2.2 The email account that you tried to reach is over quota.",
      "mailbox-full" },
    { "gmail disabled account", "5.2.1",
      "550 5.2.1 The email account that you tried to reach is disabled.",
      "bad-mailbox" },
    { "gmail receiving rate", "4.2.1",
      "450 4.2.1 The user you are trying to contact is receiving mail at a "
      "rate that prevents additional messages from being delivered.",
      "rate-limited" },
    { "gmail unsolicited rate", "4.7.0",
      "421 4.7.0 [192.0.2.1 15] Our system has detected an unusual rate of "
      "unsolicited mail originating from your IP address. To protect our "
      "users from spam, mail sent from your IP address has been "
      "temporarily rate limited.", "rate-limited" },
    { "gmail blocked as spam", "5.7.1",
      "550 5.7.1 [192.0.2.1] Our system has detected that this message is "
      "likely unsolicited mail. To reduce the amount of spam sent to Gmail, "
      "this message has been blocked.", "policy-rejected" },
    { "gmail unauthenticated sender", "5.7.26",
      "550 5.7.26 This mail has been blocked because the sender is "
      "unauthenticated. Gmail requires all senders to authenticate with "
      "either SPF or DKIM.", "policy-rejected" },
    { "gmail TLS required", "4.7.0",
      "421 4.7.0 TLS required for RCPT domain, closing connection.",
      "auth-tls-required" },
    { "gmail size", "5.3.4",
      "552 5.3.4 Your message exceeded Google's message size limits.",
      "message-too-large" },

    /* Microsoft 365, Outlook.com */
    { "outlook mailbox unavailable", "5.5.0",
      "550 5.5.0 Requested action not taken: mailbox unavailable "
      "(S2017062302). [AM4PEPF00025F9C.EURPRD83.prod.outlook.com]",
      "bad-mailbox" },
    { "m365 directory based edge blocking", "5.4.1",
      "550 5.4.1 Recipient address rejected: Access denied. "
      "AS(201806281) [DB5EUR03FT012.eop-EUR03.prod.protection.outlook.com]",
      "bad-mailbox" },
    { "m365 recipient not found", "5.1.10",
      "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by "
      "SMTP address lookup", "bad-mailbox" },
    { "m365 banned IP", "5.7.606",
      "550 5.7.606 Access denied, banned sending IP [192.0.2.1]. To request "
      "removal from this list please visit https://sender.office.com/",
      "policy-rejected" },
    { "m365 server busy", "4.7.500",
      "451 4.7.500 Server busy. Please try again later from [192.0.2.1]. "
      "(S77719)", "rate-limited" },
    { "m365 quota", "5.2.2",
      "554 5.2.2 mailbox full; "
      "STOREDRV.Deliver.Exception:QuotaExceededException", "mailbox-full" },
    { "m365 anonymous", "5.7.57",
      "530 5.7.57 Client not authenticated to send mail during MAIL FROM",
      "auth-tls-required" },

    /* Yahoo, AOL */
    { "yahoo deferred volume", "4.7.0",
      "421 4.7.0 [TSS04] Messages from 192.0.2.1 temporarily deferred due to "
      "unexpected volume or user complaints - 4.16.55.1; see "
      "https://postmaster.yahooinc.com/error-codes", "rate-limited" },
    { "yahoo policy", "5.7.9",
      "554 5.7.9 Message not accepted for policy reasons.  See "
      "https://postmaster.yahooinc.com/error-codes", "policy-rejected" },
    { "yahoo mailbox not found", "5.0.0",
      "552 1 Requested mail action aborted, mailbox not found",
      "bad-mailbox" },
    { "yahoo spamhaus", "5.7.1",
      "553 5.7.1 [BL21] Connections will not be accepted from 192.0.2.1, "
      "because the ip is in Spamhaus's list; see "
      "https://postmaster.yahooinc.com/error-codes", "policy-rejected" },
    { "yahoo no account", "5.0.0",
      "554 delivery error: dd This user doesn't have a yahoo.com account "
      "(x@yahoo.com) [0] - mta1234.mail.ne1.yahoo.com", "bad-mailbox" },

    /* iCloud */
    { "icloud no user", "5.1.1",
      "550 5.1.1 <x@icloud.com>: user does not exist", "bad-mailbox" },
    { "icloud local policy", "5.7.1",
      "554 5.7.1 [CS01] Message rejected due to local policy. Please visit "
      "https://support.apple.com/en-us/HT204137", "policy-rejected" },

    /* Postfix, Exim, postgrey */
    { "postgrey", "4.2.0",
      "450 4.2.0 <x@example.com>: Recipient address rejected: Greylisted, "
      "see http://postgrey.schweikert.ch/help/example.com.html",
      "rate-limited" },
    { "greylisted 4.7.1", "4.7.1",
      "450 4.7.1 <x@example.com>: Recipient address rejected: Greylisted "
      "for 300 seconds", "rate-limited" },
    { "postfix user unknown", "5.1.1",
      "550 5.1.1 <x@example.com>: Recipient address rejected: User unknown "
      "in virtual mailbox table", "bad-mailbox" },
    { "postfix relay denied", "5.7.1",
      "554 5.7.1 <x@example.com>: Relay access denied", "policy-rejected" },
    { "postfix mailbox full", "5.2.2",
      "552 5.2.2 <x@example.com>: Recipient address rejected: Mailbox full",
      "mailbox-full" },
    { "postfix rbl", "5.7.1",
      "554 5.7.1 Service unavailable; Client host [192.0.2.1] blocked using "
      "zen.spamhaus.org", "policy-rejected" },
    { "postfix storage", "4.3.1", "452 4.3.1 Insufficient system storage",
      "other" },
    { "postfix sender domain", "4.1.8",
      "450 4.1.8 <x@nonexistent.example>: Sender address rejected: Domain "
      "not found", "policy-rejected" },
    { "postfix recipient domain", "4.1.2",
      "450 4.1.2 <x@nonexistent.example>: Recipient address rejected: "
      "Domain not found", "bad-domain" },
    { "too many recipients", "4.5.3", "452 4.5.3 Error: too many recipients",
      "rate-limited" },
    { "exim unrouteable", "5.0.0", "550 Unrouteable address", "bad-domain" },
    { "exim prohibition", "5.0.0", "550 Administrative prohibition",
      "policy-rejected" },
    { "no enhanced code, mailbox", "5.0.0",
      "550 Requested action not taken: mailbox unavailable", "bad-mailbox" },
    { "no enhanced code, 421", "4.0.0",
      "421 Service not available, closing transmission channel",
      "connection-failure" },
    { "no enhanced code, syntax", "5.0.0",
      "500 Syntax error, command unrecognized", "protocol-error" },
    { "no enhanced code, too big", "5.0.0",
      "552 Message size exceeds fixed maximum message size",
      "message-too-large" },

    /* the relay's own words (ngx_relay_route.c, ngx_relay_delivery.c) */
    { "connect refused", "4.4.1",
      "connect failed: Connection refused", "connection-failure" },
    { "reply timeout", "4.4.2", "timed out waiting for a reply",
      "connection-failure" },
    { "dns unreachable", "4.4.3",
      "MX lookup of nowhere.example: Could not contact DNS servers",
      "dns-failure" },
    { "nxdomain", "5.1.2",
      "nowhere.example: host or domain name not found", "bad-domain" },
    { "null mx", "5.1.10",
      "null MX: the domain nomail.example accepts no mail", "bad-domain" },
    { "loops back", "5.4.6", "mail for self.example loops back to myself",
      "bad-domain" },
    { "expired", "5.4.7",
      "delivery time expired; last error: connect failed: Connection "
      "refused", "expired" },
    { "throttled", "4.7.0",
      "throttled: example.com reached its messages per minute or hour, "
      "retry in 5000 ms", "rate-limited" },
    { "tls required", "4.7.4",
      "TLS is required for example.com, but the server does not offer "
      "STARTTLS", "auth-tls-required" },
    { "tls verify", "4.7.5",
      "TLS verification for example.com: certificate of mx.example.com not "
      "trusted: (18) self-signed certificate", "auth-tls-required" },
    { "tls handshake", "4.7.0", "TLS handshake failed",
      "auth-tls-required" },
    { "invalid reply", "4.5.0", "invalid reply from the server",
      "protocol-error" },
    { "size limit of the server", "5.3.4",
      "message size 2000000 exceeds the limit 1000000 of "
      "mx.example[192.0.2.1]:25", "message-too-large" },
    { "smtputf8", "5.6.7",
      "mx.example[192.0.2.1]:25 does not support SMTPUTF8",
      "protocol-error" },
    { "operator bounce", "5.0.0", "message bounced by the operator",
      "other" },
    { "out of memory", "4.3.0", "out of memory", "other" },
    { "no status at all", "", "", "other" }
};


static const char  t_rules[] =
    "# an operator's additions\n"
    "rate-limited 5.7.1 \"daily sending quota\"   # a partner's wording\n"
    "policy-rejected * listed at\n"
    "\n"
    "bad-mailbox 550\n"
    "mailbox-full *.2.* inbox full\n"
    "policy-rejected 5.7.8|5.7.9 \"token expired|bad token\"\n";


static void
t_check_reply(const t_reply_t *t, const relay_classify_rules_t *r,
    const char *want)
{
    unsigned  got;

    got = relay_classify(r, t->status, strlen(t->status),
                         (const unsigned char *) t->reply, strlen(t->reply));

    if (strcmp(relay_classify_name(got), want) != 0) {
        t_fail("\"%s\" \"%s\": got %s, want %s", t->status, t->reply,
               relay_classify_name(got), want);
    }
}


static void
t_check_last_error(const t_reply_t *t)
{
    char      text[1024];
    unsigned  got;

    /* "<rcpt> relay: dsn reply", as ngx_relay_attempt.c writes it */

    snprintf(text, sizeof(text), "<r@example.com> mx.example.com"
             "[192.0.2.10]:25 from 192.0.2.20 (pool bulk): %s %s",
             t->status[0] ? t->status : "4.0.0", t->reply);

    got = relay_classify_text(NULL, (const unsigned char *) text,
                              strlen(text));

    if (t->status[0] && strcmp(relay_classify_name(got), t->category) != 0)
    {
        t_fail("last error \"%s\": got %s, want %s", text,
               relay_classify_name(got), t->category);
    }
}


static void
t_operator_rules(void)
{
    char                    err[256];
    relay_classify_rules_t  r;

    static const t_reply_t  cases[] = {
        { "own text rule", "5.7.1",
          "550 5.7.1 You have reached your daily sending quota",
          "rate-limited" },
        { "own text, any code", "4.0.0", "451 you are listed at rbl.example",
          "policy-rejected" },
        { "own reply code", "5.0.0", "550 go away", "bad-mailbox" },
        { "own wildcard status", "4.2.0", "450 4.2.0 Inbox full, try later",
          "mailbox-full" },
        { "own alternatives", "5.7.8", "535 5.7.8 your token expired",
          "policy-rejected" },
        { "own alternatives, no match", "5.7.8", "535 5.7.8 bad password",
          "auth-tls-required" },
        { "built-in behind", "5.1.1", "550 5.1.1 unknown", "bad-mailbox" }
    };

    size_t  i;

    t_begin("operator rules parse");

    if (relay_classify_parse(&r, t_rules, sizeof(t_rules) - 1, "t.rules",
                             err, sizeof(err))
        != 0)
    {
        t_fail("%s", err);
        t_end();
        return;
    }

    if (r.n != 5) {
        t_fail("%zu rules, want 5", r.n);
    }

    t_end();

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        t_begin(cases[i].label);
        t_check_reply(&cases[i], &r, cases[i].category);
        t_end();
    }

    relay_classify_free(&r);
}


static void
t_rule_errors(void)
{
    char                    err[256];
    size_t                  i;
    relay_classify_rules_t  r;

    static const struct {
        const char  *text;
        const char  *error;
    } cases[] = {
        { "spammy 5.1.1\n", "t.rules:1: unknown category \"spammy\"" },
        { "\n\nbad-mailbox\n",
          "t.rules:3: \"bad-mailbox\" needs a status (or \"*\")" },
        { "bad-mailbox 6.1.1 x\n",
          "t.rules:1: bad status \"6.1.1\" (5.1.1, 4.7.*, 550 or *)" },
        { "bad-mailbox 5.1 x\n",
          "t.rules:1: bad status \"5.1\" (5.1.1, 4.7.*, 550 or *)" },
        { "bad-mailbox 5.1.1|6.1.1\n",
          "t.rules:1: bad status \"5.1.1|6.1.1\" (5.1.1, 4.7.*, 550 or *)" },
        { "bad-mailbox 5.1.1 \"x\n", "t.rules:1: unterminated string" },
        { "bad-mailbox 5.1.1 \"x\" y\n",
          "t.rules:1: unexpected \"y\" after the text" }
    };

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        t_begin(cases[i].text);

        if (relay_classify_parse(&r, cases[i].text, strlen(cases[i].text),
                                 "t.rules", err, sizeof(err))
            == 0)
        {
            t_fail("parsed, want \"%s\"", cases[i].error);
            relay_classify_free(&r);

        } else if (strcmp(err, cases[i].error) != 0) {
            t_fail("\"%s\", want \"%s\"", err, cases[i].error);
        }

        t_end();
    }
}


int
main(void)
{
    size_t  i;

    for (i = 0; i < sizeof(t_replies) / sizeof(t_replies[0]); i++) {
        t_begin(t_replies[i].label);
        t_check_reply(&t_replies[i], NULL, t_replies[i].category);
        t_check_last_error(&t_replies[i]);
        t_end();
    }

    t_begin("names round trip");

    for (i = 0; i < RELAY_CLASS_N; i++) {
        if (relay_classify_find(relay_classify_name(i),
                                strlen(relay_classify_name(i)))
            != (int) i)
        {
            t_fail("%s", relay_classify_name(i));
        }
    }

    t_end();

    t_operator_rules();
    t_rule_errors();

    return t_summary("test_classify");
}
