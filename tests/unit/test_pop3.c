
/*
 * Copyright (C) The relay authors
 */


/*
 * POP3 command lines: ngx_relay_parse_pop3_command() (keyword, up to two
 * arguments and "more", the rest for PASS) and ngx_relay_parse_pop3_number().
 * Each line is parsed whole and framed by ngx_relay_parse_line() from
 * line + CRLF split at every byte and one byte at a time.
 */


#include "t.h"


#define P3(c)  NGX_RELAY_POP3_##c


static const struct {
    const char  *label;
    ngx_str_t    line;
    ngx_int_t    rc;
    ngx_uint_t   verb;
    ngx_uint_t   nargs;
    ngx_uint_t   more;
    ngx_str_t    arg0;
    ngx_str_t    arg1;
    ngx_str_t    rest;
} cases[] = {

    { "USER", T_STR("USER alice@example.test"), NGX_OK, P3(USER), 1, 0,
      T_STR("alice@example.test"), T_NONE, T_STR("alice@example.test") },
    { "PASS with spaces", T_STR("PASS b0b pass  w0rd"), NGX_OK, P3(PASS), 2,
      1, T_STR("b0b"), T_STR("pass"), T_STR("b0b pass  w0rd") },
    { "pass lowercase", T_STR("pass x"), NGX_OK, P3(PASS), 1, 0, T_STR("x"),
      T_NONE, T_STR("x") },
    { "AUTH PLAIN initial", T_STR("AUTH PLAIN AGEAYg=="), NGX_OK, P3(AUTH),
      2, 0, T_STR("PLAIN"), T_STR("AGEAYg=="), T_STR("PLAIN AGEAYg==") },
    { "STLS", T_STR("STLS"), NGX_OK, P3(STLS), 0, 0, T_NONE, T_NONE,
      T_STR("") },
    { "CAPA", T_STR("capa"), NGX_OK, P3(CAPA), 0, 0, T_NONE, T_NONE,
      T_STR("") },
    { "QUIT", T_STR("QuIt"), NGX_OK, P3(QUIT), 0, 0, T_NONE, T_NONE,
      T_STR("") },
    { "NOOP", T_STR("NOOP"), NGX_OK, P3(NOOP), 0, 0, T_NONE, T_NONE,
      T_STR("") },
    { "STAT", T_STR("STAT"), NGX_OK, P3(STAT), 0, 0, T_NONE, T_NONE,
      T_STR("") },
    { "LIST", T_STR("LIST"), NGX_OK, P3(LIST), 0, 0, T_NONE, T_NONE,
      T_STR("") },
    { "LIST n", T_STR("LIST 2"), NGX_OK, P3(LIST), 1, 0, T_STR("2"), T_NONE,
      T_STR("2") },
    { "RETR", T_STR("RETR 1"), NGX_OK, P3(RETR), 1, 0, T_STR("1"), T_NONE,
      T_STR("1") },
    { "DELE", T_STR("DELE 3"), NGX_OK, P3(DELE), 1, 0, T_STR("3"), T_NONE,
      T_STR("3") },
    { "RSET", T_STR("RSET"), NGX_OK, P3(RSET), 0, 0, T_NONE, T_NONE,
      T_STR("") },
    { "TOP", T_STR("TOP 1 10"), NGX_OK, P3(TOP), 2, 0, T_STR("1"),
      T_STR("10"), T_STR("1 10") },
    { "UIDL", T_STR("UIDL"), NGX_OK, P3(UIDL), 0, 0, T_NONE, T_NONE,
      T_STR("") },
    { "three arguments", T_STR("TOP 1 2 3"), NGX_OK, P3(TOP), 2, 1,
      T_STR("1"), T_STR("2"), T_STR("1 2 3") },
    { "spaces between and after", T_STR("TOP  1   2   "), NGX_OK, P3(TOP), 2,
      0, T_STR("1"), T_STR("2"), T_STR("1   2") },
    { "trailing space, no argument", T_STR("STAT "), NGX_OK, P3(STAT), 0, 0,
      T_NONE, T_NONE, T_STR("") },
    { "unknown keyword", T_STR("APOP a b"), NGX_OK, P3(UNKNOWN), 2, 0,
      T_STR("a"), T_STR("b"), T_STR("a b") },
    { "unknown three letters", T_STR("XYZ"), NGX_OK, P3(UNKNOWN), 0, 0,
      T_NONE, T_NONE, T_STR("") },
    { "UTF-8 argument", T_STR("USER \xc3\xa9@x"), NGX_OK, P3(USER), 1, 0,
      T_STR("\xc3\xa9@x"), T_NONE, T_STR("\xc3\xa9@x") },

    /* invalid */

    { "empty", T_STR(""), NGX_RELAY_PARSE_INVALID, 0, 0, 0, T_NONE, T_NONE,
      T_NONE },
    { "leading space", T_STR(" QUIT"), NGX_RELAY_PARSE_INVALID, 0, 0, 0,
      T_NONE, T_NONE, T_NONE },
    { "keyword too long", T_STR("RETRX 1"), NGX_RELAY_PARSE_INVALID, 0, 0, 0,
      T_NONE, T_NONE, T_NONE },
    { "keyword too short", T_STR("QU"), NGX_RELAY_PARSE_INVALID, 0, 0, 0,
      T_NONE, T_NONE, T_NONE },
    { "digit in keyword", T_STR("RET1 1"), NGX_RELAY_PARSE_INVALID, 0, 0, 0,
      T_NONE, T_NONE, T_NONE },
    { "HTTP", T_STR("GET / HTTP/1.0"), NGX_OK, P3(UNKNOWN), 2, 0, T_STR("/"),
      T_STR("HTTP/1.0"), T_STR("/ HTTP/1.0") },
    { "NUL in argument", T_STR("USER a\0b"), NGX_RELAY_PARSE_INVALID, 0, 0,
      0, T_NONE, T_NONE, T_NONE },
    { "tab is no space", T_STR("QUIT\t"), NGX_RELAY_PARSE_INVALID, 0, 0, 0,
      T_NONE, T_NONE, T_NONE },
    { "8-bit keyword", T_STR("\xc3\xa9XYZ"), NGX_RELAY_PARSE_INVALID, 0, 0,
      0, T_NONE, T_NONE, T_NONE },
};


static void
check(ngx_uint_t n, ngx_str_t *line, const char *how)
{
    ngx_int_t                  rc;
    ngx_uint_t                 i;
    ngx_relay_pop3_command_t   cmd;

    rc = ngx_relay_parse_pop3_command(line, &cmd);

    t_check_rc(how, rc, cases[n].rc);

    if (rc != NGX_OK || cases[n].rc != NGX_OK) {
        return;
    }

    t_check_uint("verb", cmd.verb, cases[n].verb);
    t_check_uint("nargs", cmd.nargs, cases[n].nargs);
    t_check_uint("more", cmd.more, cases[n].more);

    if (cases[n].nargs > 0) {
        t_check_str("arg 0", &cmd.args[0], (ngx_str_t *) &cases[n].arg0);
    }

    if (cases[n].nargs > 1) {
        t_check_str("arg 1", &cmd.args[1], (ngx_str_t *) &cases[n].arg1);
    }

    t_check_str("rest", &cmd.rest, (ngx_str_t *) &cases[n].rest);

    for (i = 0; i < cmd.nargs; i++) {
        if (cmd.args[i].data < line->data
            || cmd.args[i].data + cmd.args[i].len > line->data + line->len)
        {
            t_fail("%s: argument %lu is not inside the line", how,
                   (unsigned long) i);
        }
    }
}


static void
run(ngx_uint_t n)
{
    t_line_every_way(n, &cases[n].line, 512, check);
}


static const struct {
    ngx_str_t   arg;
    ngx_int_t   rc;
    ngx_uint_t  n;
} numbers[] = {
    { T_STR("1"), NGX_OK, 1 },
    { T_STR("0"), NGX_OK, 0 },
    { T_STR("007"), NGX_OK, 7 },
    { T_STR("999999999"), NGX_OK, 999999999 },
    { T_STR("1000000000"), NGX_RELAY_PARSE_INVALID, 0 },
    { T_STR(""), NGX_RELAY_PARSE_INVALID, 0 },
    { T_STR("-1"), NGX_RELAY_PARSE_INVALID, 0 },
    { T_STR("+1"), NGX_RELAY_PARSE_INVALID, 0 },
    { T_STR("1a"), NGX_RELAY_PARSE_INVALID, 0 },
};


int
main(void)
{
    ngx_int_t   rc;
    ngx_str_t   arg;
    ngx_uint_t  n, v;

    for (n = 0; n < sizeof(cases) / sizeof(cases[0]); n++) {
        t_begin(cases[n].label);
        run(n);
        t_end();
    }

    for (n = 0; n < sizeof(numbers) / sizeof(numbers[0]); n++) {
        t_begin((char *) numbers[n].arg.data);

        arg.len = numbers[n].arg.len;
        arg.data = t_dup((ngx_str_t *) &numbers[n].arg);

        v = 0;
        rc = ngx_relay_parse_pop3_number(&arg, &v);
        t_check_rc("number", rc, numbers[n].rc);

        if (rc == NGX_OK) {
            t_check_uint("value", v, numbers[n].n);
        }

        free(arg.data);
        t_end();
    }

    return t_summary("test_pop3");
}
