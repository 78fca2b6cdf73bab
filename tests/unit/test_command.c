
/*
 * Copyright (C) The relay authors
 */


/*
 * ngx_relay_parse_command(): verbs, case, arguments, trimming, bad octets.
 *
 * Each line is parsed whole (from an exact-size buffer) and also framed by
 * ngx_relay_parse_line() from line + CRLF split at every byte and one byte
 * at a time; every way must give the same verb, name and argument.
 */


#include "t.h"


#define CMD(c)  NGX_RELAY_CMD_##c


static const struct {
    const char  *label;
    ngx_str_t    line;
    ngx_int_t    rc;
    ngx_uint_t   verb;
    ngx_str_t    name;
    ngx_str_t    arg;
} cases[] = {

    /* every verb, upper, lower and mixed case */

    { "HELO", T_STR("HELO example.com"), NGX_OK, CMD(HELO), T_STR("HELO"),
      T_STR("example.com") },
    { "helo", T_STR("helo example.com"), NGX_OK, CMD(HELO), T_STR("helo"),
      T_STR("example.com") },
    { "EHLO", T_STR("EHLO [127.0.0.1]"), NGX_OK, CMD(EHLO), T_STR("EHLO"),
      T_STR("[127.0.0.1]") },
    { "eHlO", T_STR("eHlO x"), NGX_OK, CMD(EHLO), T_STR("eHlO"),
      T_STR("x") },
    { "MAIL", T_STR("MAIL FROM:<a@b> SIZE=10"), NGX_OK, CMD(MAIL),
      T_STR("MAIL"), T_STR("FROM:<a@b> SIZE=10") },
    { "mail", T_STR("mail from:<>"), NGX_OK, CMD(MAIL), T_STR("mail"),
      T_STR("from:<>") },
    { "RCPT", T_STR("RCPT TO:<a@b>"), NGX_OK, CMD(RCPT), T_STR("RCPT"),
      T_STR("TO:<a@b>") },
    { "Rcpt", T_STR("Rcpt to:<a@b> NOTIFY=NEVER"), NGX_OK, CMD(RCPT),
      T_STR("Rcpt"), T_STR("to:<a@b> NOTIFY=NEVER") },
    { "DATA", T_STR("DATA"), NGX_OK, CMD(DATA), T_STR("DATA"), T_STR("") },
    { "data", T_STR("data"), NGX_OK, CMD(DATA), T_STR("data"), T_STR("") },
    { "BDAT", T_STR("BDAT 100 LAST"), NGX_OK, CMD(BDAT), T_STR("BDAT"),
      T_STR("100 LAST") },
    { "bdat", T_STR("bdat 0"), NGX_OK, CMD(BDAT), T_STR("bdat"),
      T_STR("0") },
    { "RSET", T_STR("RSET"), NGX_OK, CMD(RSET), T_STR("RSET"), T_STR("") },
    { "rset", T_STR("rset"), NGX_OK, CMD(RSET), T_STR("rset"), T_STR("") },
    { "NOOP", T_STR("NOOP"), NGX_OK, CMD(NOOP), T_STR("NOOP"), T_STR("") },
    { "noop with argument", T_STR("noop hello there"), NGX_OK, CMD(NOOP),
      T_STR("noop"), T_STR("hello there") },
    { "QUIT", T_STR("QUIT"), NGX_OK, CMD(QUIT), T_STR("QUIT"), T_STR("") },
    { "qUIT", T_STR("qUIT"), NGX_OK, CMD(QUIT), T_STR("qUIT"), T_STR("") },
    { "VRFY", T_STR("VRFY postmaster"), NGX_OK, CMD(VRFY), T_STR("VRFY"),
      T_STR("postmaster") },
    { "vrfy", T_STR("vrfy x"), NGX_OK, CMD(VRFY), T_STR("vrfy"), T_STR("x") },
    { "EXPN", T_STR("EXPN list"), NGX_OK, CMD(EXPN), T_STR("EXPN"),
      T_STR("list") },
    { "expn", T_STR("expn list"), NGX_OK, CMD(EXPN), T_STR("expn"),
      T_STR("list") },
    { "HELP", T_STR("HELP"), NGX_OK, CMD(HELP), T_STR("HELP"), T_STR("") },
    { "help topic", T_STR("help MAIL"), NGX_OK, CMD(HELP), T_STR("help"),
      T_STR("MAIL") },
    { "STARTTLS", T_STR("STARTTLS"), NGX_OK, CMD(STARTTLS),
      T_STR("STARTTLS"), T_STR("") },
    { "starttls", T_STR("starttls"), NGX_OK, CMD(STARTTLS),
      T_STR("starttls"), T_STR("") },
    { "AUTH", T_STR("AUTH PLAIN AGEAYg=="), NGX_OK, CMD(AUTH), T_STR("AUTH"),
      T_STR("PLAIN AGEAYg==") },
    { "auth", T_STR("auth login"), NGX_OK, CMD(AUTH), T_STR("auth"),
      T_STR("login") },

    /* unknown verbs are NGX_OK */

    { "unknown verb", T_STR("XYZZY plugh"), NGX_OK, CMD(UNKNOWN),
      T_STR("XYZZY"), T_STR("plugh") },
    { "verb prefix", T_STR("MAI FROM:<a@b>"), NGX_OK, CMD(UNKNOWN),
      T_STR("MAI"), T_STR("FROM:<a@b>") },
    { "verb too long", T_STR("MAILX FROM:<a@b>"), NGX_OK, CMD(UNKNOWN),
      T_STR("MAILX"), T_STR("FROM:<a@b>") },
    { "STARTTL", T_STR("STARTTL"), NGX_OK, CMD(UNKNOWN), T_STR("STARTTL"),
      T_STR("") },
    { "STARTTLSS", T_STR("STARTTLSS"), NGX_OK, CMD(UNKNOWN),
      T_STR("STARTTLSS"), T_STR("") },
    { "no space after verb", T_STR("MAIL:FROM:<a@b>"), NGX_OK, CMD(UNKNOWN),
      T_STR("MAIL:FROM:<a@b>"), T_STR("") },
    { "extension-like verb", T_STR("X-FOO bar"), NGX_OK, CMD(UNKNOWN),
      T_STR("X-FOO"), T_STR("bar") },
    { "HTTP request", T_STR("GET / HTTP/1.0"), NGX_OK, CMD(UNKNOWN),
      T_STR("GET"), T_STR("/ HTTP/1.0") },

    /* spaces */

    { "spaces around the argument", T_STR("MAIL   FROM:<a@b>   "), NGX_OK,
      CMD(MAIL), T_STR("MAIL"), T_STR("FROM:<a@b>") },
    { "inner spaces kept", T_STR("NOOP a  b"), NGX_OK, CMD(NOOP),
      T_STR("NOOP"), T_STR("a  b") },
    { "trailing space, no argument", T_STR("QUIT "), NGX_OK, CMD(QUIT),
      T_STR("QUIT"), T_STR("") },
    { "leading spaces", T_STR("  QUIT"), NGX_OK, CMD(QUIT), T_STR("QUIT"),
      T_STR("") },
    { "tab as a space", T_STR("\tRCPT\tTO:<a@b>\t"), NGX_OK, CMD(RCPT),
      T_STR("RCPT"), T_STR("TO:<a@b>") },
    { "UTF-8 argument", T_STR("RCPT TO:<\xc3\xa9@x>"), NGX_OK, CMD(RCPT),
      T_STR("RCPT"), T_STR("TO:<\xc3\xa9@x>") },

    /* invalid */

    { "empty line", T_STR(""), NGX_RELAY_PARSE_INVALID, 0, T_NONE, T_NONE },
    { "spaces only", T_STR("   "), NGX_RELAY_PARSE_INVALID, 0, T_NONE,
      T_NONE },
    { "NUL in verb", T_STR("QU\0IT"), NGX_RELAY_PARSE_INVALID, 0, T_NONE,
      T_NONE },
    { "NUL first", T_STR("\0QUIT"), NGX_RELAY_PARSE_INVALID, 0, T_NONE,
      T_NONE },
    { "NUL in argument", T_STR("MAIL FROM:<a\0@b>"), NGX_RELAY_PARSE_INVALID,
      0, T_NONE, T_NONE },
    { "NUL at the end", T_STR("NOOP \0"), NGX_RELAY_PARSE_INVALID, 0,
      T_NONE, T_NONE },
    { "UTF-8 in verb", T_STR("M\xc3\xa9IL x"), NGX_RELAY_PARSE_INVALID, 0,
      T_NONE, T_NONE },
    { "8-bit verb", T_STR("\xff"), NGX_RELAY_PARSE_INVALID, 0, T_NONE,
      T_NONE },
    { "control in verb", T_STR("QU\x01IT"), NGX_RELAY_PARSE_INVALID, 0,
      T_NONE, T_NONE },
    { "DEL in verb", T_STR("QUIT\x7f"), NGX_RELAY_PARSE_INVALID, 0, T_NONE,
      T_NONE },
    { "CR in verb", T_STR("QUIT\r"), NGX_RELAY_PARSE_INVALID, 0, T_NONE,
      T_NONE },
};


static void
check(ngx_uint_t n, ngx_str_t *line, const char *how)
{
    ngx_int_t            rc;
    ngx_relay_command_t  cmd;

    rc = ngx_relay_parse_command(line, &cmd);

    t_check_rc(how, rc, cases[n].rc);

    if (rc != NGX_OK || cases[n].rc != NGX_OK) {
        return;
    }

    t_check_uint("verb", cmd.verb, cases[n].verb);
    t_check_str("name", &cmd.name, (ngx_str_t *) &cases[n].name);
    t_check_str("arg", &cmd.arg, (ngx_str_t *) &cases[n].arg);

    if (cmd.name.data < line->data
        || cmd.arg.data < line->data
        || cmd.arg.data + cmd.arg.len > line->data + line->len)
    {
        t_fail("%s: results are not inside the line", how);
    }
}


static void
run(ngx_uint_t n)
{
    t_line_every_way(n, &cases[n].line, 512, check);
}


/* an overlong line is TOO_LONG; the next command parses as usual */

static void
run_overlong(void)
{
    u_char                   *buf;
    size_t                    len;
    ngx_buf_t                 b;
    ngx_int_t                 rc;
    ngx_relay_command_t       cmd;
    ngx_relay_line_parser_t   lp;

    t_begin("overlong command, then QUIT");

    len = 600 + sizeof("\r\nQUIT\r\n") - 1;
    buf = malloc(len);
    if (buf == NULL) {
        perror("malloc");
        exit(2);
    }

    memcpy(buf, "MAIL FROM:<", 11);
    memset(buf + 11, 'a', 600 - 11);
    memcpy(buf + 600, "\r\nQUIT\r\n", 8);

    ngx_memzero(&lp, sizeof(ngx_relay_line_parser_t));
    lp.max = 512;

    ngx_memzero(&b, sizeof(ngx_buf_t));
    b.pos = buf;
    b.last = buf + 300;                  /* the first read: half of it */

    rc = ngx_relay_parse_line(&lp, &b);
    t_check_rc("first read", rc, NGX_AGAIN);

    if (b.pos != buf) {
        t_fail("first read: a partial line under max was consumed");
    }

    b.last = buf + len;

    rc = ngx_relay_parse_line(&lp, &b);
    t_check_rc("overlong", rc, NGX_RELAY_PARSE_TOO_LONG);

    if (b.pos != buf + 602) {
        t_fail("overlong: pos at %ld, want 602", (long) (b.pos - buf));
    }

    rc = ngx_relay_parse_line(&lp, &b);
    t_check_rc("next line", rc, NGX_OK);

    if (rc == NGX_OK) {
        rc = ngx_relay_parse_command(&lp.line, &cmd);
        t_check_rc("QUIT", rc, NGX_OK);
        t_check_uint("QUIT verb", cmd.verb, NGX_RELAY_CMD_QUIT);
    }

    if (b.pos != b.last) {
        t_fail("input left after QUIT");
    }

    free(buf);

    t_end();
}


int
main(void)
{
    ngx_uint_t  n;

    for (n = 0; n < sizeof(cases) / sizeof(cases[0]); n++) {
        t_begin(cases[n].label);
        run(n);
        t_end();
    }

    run_overlong();

    return t_summary("test_command");
}
