
/*
 * Copyright (C) The relay authors
 */


/*
 * MAIL and RCPT parameters: SIZE (RFC 1870), BODY (RFC 6152, RFC 3030),
 * SMTPUTF8 (RFC 6531), RET, ENVID, NOTIFY, ORCPT (RFC 3461), AUTH (RFC
 * 4954).  Each case: valid, case, repeated, unknown, malformed.
 *
 * Each argument is parsed whole from an exact-size buffer, then again
 * framed by the line parser (split at every byte) and split by the command
 * parser.  For NGX_OK and NGX_RELAY_PARSE_TOO_BIG every field is checked.
 */


#include "t.h"


#define M       0
#define R       1

#define OK      NGX_OK
#define INVAL   NGX_RELAY_PARSE_INVALID
#define BADADDR NGX_RELAY_PARSE_BAD_ADDRESS
#define BADPAR  NGX_RELAY_PARSE_BAD_PARAM
#define TOOBIG  NGX_RELAY_PARSE_TOO_BIG

#define B_7BIT  NGX_RELAY_BODY_7BIT
#define B_8BIT  NGX_RELAY_BODY_8BITMIME
#define B_BIN   NGX_RELAY_BODY_BINARYMIME

#define N_NEVER NGX_RELAY_NOTIFY_NEVER
#define N_SUCC  NGX_RELAY_NOTIFY_SUCCESS
#define N_FAIL  NGX_RELAY_NOTIFY_FAILURE
#define N_DELAY NGX_RELAY_NOTIFY_DELAY

#define MAXOFF  NGX_MAX_OFF_T_VALUE

/* an error: the fields are not looked at */
#define ERR(rc)  rc, -1, 0, 0, T_NONE, T_NONE, 0, 0, T_NONE

#define E10     "eeeeeeeeee"
#define E100    E10 E10 E10 E10 E10 E10 E10 E10 E10 E10

/* "rfc822;" (7) + 493 = 500 */
#define O493    E100 E100 E100 E100 E10 E10 E10 E10 E10 E10 E10 E10 E10 "eee"


static const struct {
    const char  *label;
    ngx_uint_t   cmd;
    ngx_str_t    arg;
    off_t        max_size;
    ngx_int_t    rc;

    off_t        size;
    ngx_uint_t   body;
    ngx_uint_t   ret;
    ngx_str_t    envid;
    ngx_str_t    auth;
    ngx_uint_t   smtputf8;
    ngx_uint_t   notify;
    ngx_str_t    orcpt;
} cases[] = {

    { "no parameters", M, T_STR("FROM:<a@b>"), 0, OK,
      -1, 0, 0, T_NONE, T_NONE, 0, 0, T_NONE },

    /* SIZE */

    { "SIZE", M, T_STR("FROM:<a@b> SIZE=1000"), 0, OK,
      1000, 0, 0, T_NONE, T_NONE, 0, 0, T_NONE },
    { "size lower case", M, T_STR("FROM:<a@b> size=12"), 0, OK,
      12, 0, 0, T_NONE, T_NONE, 0, 0, T_NONE },
    { "SIZE=0", M, T_STR("FROM:<a@b> SIZE=0"), 100, OK,
      0, 0, 0, T_NONE, T_NONE, 0, 0, T_NONE },
    { "SIZE with leading zeros", M, T_STR("FROM:<a@b> SIZE=007"), 0, OK,
      7, 0, 0, T_NONE, T_NONE, 0, 0, T_NONE },
    { "SIZE on null path", M, T_STR("FROM:<> SIZE=5"), 0, OK,
      5, 0, 0, T_NONE, T_NONE, 0, 0, T_NONE },
    { "SIZE at the limit", M, T_STR("FROM:<a@b> SIZE=100"), 100, OK,
      100, 0, 0, T_NONE, T_NONE, 0, 0, T_NONE },
    { "SIZE over the limit", M, T_STR("FROM:<a@b> SIZE=101"), 100, TOOBIG,
      101, 0, 0, T_NONE, T_NONE, 0, 0, T_NONE },
    { "SIZE over, other params kept", M,
      T_STR("FROM:<a@b> SIZE=101 BODY=8BITMIME"), 100, TOOBIG,
      101, B_8BIT, 0, T_NONE, T_NONE, 0, 0, T_NONE },
    { "SIZE with no limit", M, T_STR("FROM:<a@b> SIZE=99999999999"), 0, OK,
      99999999999LL, 0, 0, T_NONE, T_NONE, 0, 0, T_NONE },
    { "SIZE 20 digits clamps", M,
      T_STR("FROM:<a@b> SIZE=99999999999999999999"), 0, OK,
      MAXOFF, 0, 0, T_NONE, T_NONE, 0, 0, T_NONE },
    { "SIZE off_t max", M, T_STR("FROM:<a@b> SIZE=9223372036854775807"), 0,
      OK, MAXOFF, 0, 0, T_NONE, T_NONE, 0, 0, T_NONE },
    { "SIZE off_t max + 1 clamps", M,
      T_STR("FROM:<a@b> SIZE=9223372036854775808"), 0, OK,
      MAXOFF, 0, 0, T_NONE, T_NONE, 0, 0, T_NONE },
    { "SIZE 20 digits over limit", M,
      T_STR("FROM:<a@b> SIZE=99999999999999999999"), 1000, TOOBIG,
      MAXOFF, 0, 0, T_NONE, T_NONE, 0, 0, T_NONE },
    { "SIZE 21 digits", M, T_STR("FROM:<a@b> SIZE=000000000000000000001"), 0,
      ERR(BADPAR) },
    { "SIZE empty", M, T_STR("FROM:<a@b> SIZE="), 0, ERR(BADPAR) },
    { "SIZE no value", M, T_STR("FROM:<a@b> SIZE"), 0, ERR(BADPAR) },
    { "SIZE negative", M, T_STR("FROM:<a@b> SIZE=-1"), 0, ERR(BADPAR) },
    { "SIZE plus", M, T_STR("FROM:<a@b> SIZE=+1"), 0, ERR(BADPAR) },
    { "SIZE not a number", M, T_STR("FROM:<a@b> SIZE=1k"), 0, ERR(BADPAR) },
    { "SIZE repeated", M, T_STR("FROM:<a@b> SIZE=1 SIZE=1"), 0, ERR(BADPAR) },
    { "SIZE repeated, other case", M, T_STR("FROM:<a@b> SIZE=1 size=2"), 0,
      ERR(BADPAR) },
    { "SIZE in RCPT", R, T_STR("TO:<a@b> SIZE=1"), 0, ERR(BADPAR) },
    { "syntax beats TOO_BIG", M, T_STR("FROM:<a@b> SIZE=101 FOO=1"), 100,
      ERR(BADPAR) },

    /* BODY */

    { "BODY=7BIT", M, T_STR("FROM:<a@b> BODY=7BIT"), 0, OK,
      -1, B_7BIT, 0, T_NONE, T_NONE, 0, 0, T_NONE },
    { "BODY=8BITMIME", M, T_STR("FROM:<a@b> BODY=8BITMIME"), 0, OK,
      -1, B_8BIT, 0, T_NONE, T_NONE, 0, 0, T_NONE },
    { "BODY=BINARYMIME", M, T_STR("FROM:<a@b> BODY=BINARYMIME"), 0, OK,
      -1, B_BIN, 0, T_NONE, T_NONE, 0, 0, T_NONE },
    { "body=8bitmime", M, T_STR("FROM:<a@b> body=8bitmime"), 0, OK,
      -1, B_8BIT, 0, T_NONE, T_NONE, 0, 0, T_NONE },
    { "BODY unknown", M, T_STR("FROM:<a@b> BODY=9BIT"), 0, ERR(BADPAR) },
    { "BODY prefix", M, T_STR("FROM:<a@b> BODY=8BIT"), 0, ERR(BADPAR) },
    { "BODY empty", M, T_STR("FROM:<a@b> BODY="), 0, ERR(BADPAR) },
    { "BODY no value", M, T_STR("FROM:<a@b> BODY"), 0, ERR(BADPAR) },
    { "BODY repeated", M, T_STR("FROM:<a@b> BODY=7BIT BODY=7BIT"), 0,
      ERR(BADPAR) },
    { "BODY in RCPT", R, T_STR("TO:<a@b> BODY=7BIT"), 0, ERR(BADPAR) },

    /* SMTPUTF8 */

    { "SMTPUTF8", M, T_STR("FROM:<a@b> SMTPUTF8"), 0, OK,
      -1, 0, 0, T_NONE, T_NONE, 1, 0, T_NONE },
    { "smtputf8", M, T_STR("FROM:<\xc3\xa9@b> smtputf8"), 0, OK,
      -1, 0, 0, T_NONE, T_NONE, 1, 0, T_NONE },
    { "SMTPUTF8 with a value", M, T_STR("FROM:<a@b> SMTPUTF8=YES"), 0,
      ERR(BADPAR) },
    { "SMTPUTF8 with an empty value", M, T_STR("FROM:<a@b> SMTPUTF8="), 0,
      ERR(BADPAR) },
    { "SMTPUTF8 repeated", M, T_STR("FROM:<a@b> SMTPUTF8 SMTPUTF8"), 0,
      ERR(BADPAR) },
    { "SMTPUTF8 in RCPT", R, T_STR("TO:<a@b> SMTPUTF8"), 0, ERR(BADPAR) },

    /* RET */

    { "RET=FULL", M, T_STR("FROM:<a@b> RET=FULL"), 0, OK,
      -1, 0, NGX_RELAY_RET_FULL, T_NONE, T_NONE, 0, 0, T_NONE },
    { "RET=HDRS", M, T_STR("FROM:<a@b> RET=HDRS"), 0, OK,
      -1, 0, NGX_RELAY_RET_HDRS, T_NONE, T_NONE, 0, 0, T_NONE },
    { "ret=hdrs", M, T_STR("FROM:<a@b> ret=hdrs"), 0, OK,
      -1, 0, NGX_RELAY_RET_HDRS, T_NONE, T_NONE, 0, 0, T_NONE },
    { "RET unknown", M, T_STR("FROM:<a@b> RET=BODY"), 0, ERR(BADPAR) },
    { "RET empty", M, T_STR("FROM:<a@b> RET="), 0, ERR(BADPAR) },
    { "RET repeated", M, T_STR("FROM:<a@b> RET=FULL RET=HDRS"),
      0, ERR(BADPAR) },
    { "RET in RCPT", R, T_STR("TO:<a@b> RET=FULL"), 0, ERR(BADPAR) },

    /* ENVID */

    { "ENVID", M, T_STR("FROM:<a@b> ENVID=QQ314159"), 0, OK,
      -1, 0, 0, T_STR("QQ314159"), T_NONE, 0, 0, T_NONE },
    { "ENVID with hexchar", M, T_STR("FROM:<a@b> envid=a+2Bb+3D"), 0, OK,
      -1, 0, 0, T_STR("a+2Bb+3D"), T_NONE, 0, 0, T_NONE },
    { "ENVID of 100", M, T_STR("FROM:<a@b> ENVID=" E100), 0, OK,
      -1, 0, 0, T_STR(E100), T_NONE, 0, 0, T_NONE },
    { "ENVID of 101", M, T_STR("FROM:<a@b> ENVID=" E100 "e"), 0, ERR(BADPAR) },
    { "ENVID lower-case hex", M, T_STR("FROM:<a@b> ENVID=a+2b"),
      0, ERR(BADPAR) },
    { "ENVID short hex", M, T_STR("FROM:<a@b> ENVID=a+2"), 0, ERR(BADPAR) },
    { "ENVID lone plus", M, T_STR("FROM:<a@b> ENVID=a+"), 0, ERR(BADPAR) },
    { "ENVID with =", M, T_STR("FROM:<a@b> ENVID=a=b"), 0, ERR(BADPAR) },
    { "ENVID UTF-8", M, T_STR("FROM:<a@b> ENVID=\xc3\xa9"), 0, ERR(BADPAR) },
    { "ENVID empty", M, T_STR("FROM:<a@b> ENVID="), 0, ERR(BADPAR) },
    { "ENVID repeated", M, T_STR("FROM:<a@b> ENVID=a ENVID=a"),
      0, ERR(BADPAR) },
    { "ENVID in RCPT", R, T_STR("TO:<a@b> ENVID=a"), 0, ERR(BADPAR) },

    /* AUTH= */

    { "AUTH=<>", M, T_STR("FROM:<a@b> AUTH=<>"), 0, OK,
      -1, 0, 0, T_NONE, T_STR("<>"), 0, 0, T_NONE },
    { "AUTH mailbox", M, T_STR("FROM:<a@b> auth=e+2Bx@example.org"), 0, OK,
      -1, 0, 0, T_NONE, T_STR("e+2Bx@example.org"), 0, 0, T_NONE },
    { "AUTH bad xtext", M, T_STR("FROM:<a@b> AUTH=a+4"), 0, ERR(BADPAR) },
    { "AUTH empty", M, T_STR("FROM:<a@b> AUTH="), 0, ERR(BADPAR) },
    { "AUTH half of <>", M, T_STR("FROM:<a@b> AUTH=<"), 0, OK,
      -1, 0, 0, T_NONE, T_STR("<"), 0, 0, T_NONE },
    { "AUTH repeated", M, T_STR("FROM:<a@b> AUTH=<> AUTH=<>"),
      0, ERR(BADPAR) },
    { "AUTH in RCPT", R, T_STR("TO:<a@b> AUTH=<>"), 0, ERR(BADPAR) },

    /* NOTIFY */

    { "NOTIFY=NEVER", R, T_STR("TO:<a@b> NOTIFY=NEVER"), 0, OK,
      -1, 0, 0, T_NONE, T_NONE, 0, N_NEVER, T_NONE },
    { "NOTIFY=SUCCESS", R, T_STR("TO:<a@b> NOTIFY=SUCCESS"), 0, OK,
      -1, 0, 0, T_NONE, T_NONE, 0, N_SUCC, T_NONE },
    { "NOTIFY list", R, T_STR("TO:<a@b> NOTIFY=SUCCESS,FAILURE,DELAY"), 0, OK,
      -1, 0, 0, T_NONE, T_NONE, 0, N_SUCC|N_FAIL|N_DELAY, T_NONE },
    { "notify lower case", R, T_STR("TO:<a@b> notify=delay,failure"), 0, OK,
      -1, 0, 0, T_NONE, T_NONE, 0, N_DELAY|N_FAIL, T_NONE },
    { "NOTIFY NEVER and more", R, T_STR("TO:<a@b> NOTIFY=NEVER,SUCCESS"), 0,
      ERR(BADPAR) },
    { "NOTIFY more and NEVER", R, T_STR("TO:<a@b> NOTIFY=DELAY,NEVER"), 0,
      ERR(BADPAR) },
    { "NOTIFY item twice", R, T_STR("TO:<a@b> NOTIFY=SUCCESS,SUCCESS"), 0,
      ERR(BADPAR) },
    { "NOTIFY trailing comma", R, T_STR("TO:<a@b> NOTIFY=SUCCESS,"), 0,
      ERR(BADPAR) },
    { "NOTIFY leading comma", R, T_STR("TO:<a@b> NOTIFY=,SUCCESS"), 0,
      ERR(BADPAR) },
    { "NOTIFY empty item", R, T_STR("TO:<a@b> NOTIFY=SUCCESS,,DELAY"), 0,
      ERR(BADPAR) },
    { "NOTIFY unknown item", R, T_STR("TO:<a@b> NOTIFY=ALWAYS"),
      0, ERR(BADPAR) },
    { "NOTIFY empty", R, T_STR("TO:<a@b> NOTIFY="), 0, ERR(BADPAR) },
    { "NOTIFY repeated", R, T_STR("TO:<a@b> NOTIFY=NEVER NOTIFY=NEVER"), 0,
      ERR(BADPAR) },
    { "NOTIFY in MAIL", M, T_STR("FROM:<a@b> NOTIFY=NEVER"), 0, ERR(BADPAR) },

    /* ORCPT */

    { "ORCPT", R, T_STR("TO:<a@b> ORCPT=rfc822;a@b"), 0, OK,
      -1, 0, 0, T_NONE, T_NONE, 0, 0, T_STR("rfc822;a@b") },
    { "ORCPT with hexchar", R, T_STR("TO:<a@b> orcpt=RFC822;a+2Bb@c"), 0, OK,
      -1, 0, 0, T_NONE, T_NONE, 0, 0, T_STR("RFC822;a+2Bb@c") },
    { "ORCPT utf-8 raw", R, T_STR("TO:<a@b> ORCPT=utf-8;\xc3\xa9@x"), 0, OK,
      -1, 0, 0, T_NONE, T_NONE, 0, 0, T_STR("utf-8;\xc3\xa9@x") },
    { "ORCPT utf-8 escaped", R, T_STR("TO:<a@b> ORCPT=UTF-8;a\\x{E9}@x"), 0,
      OK, -1, 0, 0, T_NONE, T_NONE, 0, 0, T_STR("UTF-8;a\\x{E9}@x") },
    { "ORCPT of 500", R, T_STR("TO:<a@b> ORCPT=rfc822;" O493), 0, OK,
      -1, 0, 0, T_NONE, T_NONE, 0, 0, T_STR("rfc822;" O493) },
    { "ORCPT of 501", R, T_STR("TO:<a@b> ORCPT=rfc822;" O493 "e"), 0,
      ERR(BADPAR) },
    { "ORCPT no type", R, T_STR("TO:<a@b> ORCPT=a@b"), 0, ERR(BADPAR) },
    { "ORCPT empty type", R, T_STR("TO:<a@b> ORCPT=;a@b"), 0, ERR(BADPAR) },
    { "ORCPT empty address", R, T_STR("TO:<a@b> ORCPT=rfc822;"),
      0, ERR(BADPAR) },
    { "ORCPT bad xtext", R, T_STR("TO:<a@b> ORCPT=rfc822;a+zz"),
      0, ERR(BADPAR) },
    { "ORCPT raw UTF-8 in rfc822", R,
      T_STR("TO:<a@b> ORCPT=rfc822;\xc3\xa9@x"), 0, ERR(BADPAR) },
    { "ORCPT bad UTF-8 in utf-8", R, T_STR("TO:<a@b> ORCPT=utf-8;\xc3@x"), 0,
      ERR(BADPAR) },
    { "ORCPT utf-8 with plus", R, T_STR("TO:<a@b> ORCPT=utf-8;a+2B@x"), 0,
      ERR(BADPAR) },
    { "ORCPT utf-8 bad escape", R, T_STR("TO:<a@b> ORCPT=utf-8;a\\x{}@x"), 0,
      ERR(BADPAR) },
    { "ORCPT utf-8 open escape", R, T_STR("TO:<a@b> ORCPT=utf-8;a\\x{E9"), 0,
      ERR(BADPAR) },
    { "ORCPT bad type", R, T_STR("TO:<a@b> ORCPT=rfc(822);a@b"),
      0, ERR(BADPAR) },
    { "ORCPT repeated", R,
      T_STR("TO:<a@b> ORCPT=rfc822;a@b ORCPT=rfc822;a@b"), 0, ERR(BADPAR) },
    { "ORCPT in MAIL", M, T_STR("FROM:<a@b> ORCPT=rfc822;a@b"),
      0, ERR(BADPAR) },

    /* together, spacing, keywords */

    { "all MAIL parameters", M,
      T_STR("FROM:<a@b> SIZE=10 BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=x1 "
            "AUTH=<>"), 1000, OK,
      10, B_8BIT, NGX_RELAY_RET_HDRS, T_STR("x1"), T_STR("<>"), 1, 0,
      T_NONE },
    { "all RCPT parameters", R,
      T_STR("TO:<a@b> NOTIFY=FAILURE,DELAY ORCPT=rfc822;a@b"), 0, OK,
      -1, 0, 0, T_NONE, T_NONE, 0, N_FAIL|N_DELAY, T_STR("rfc822;a@b") },
    { "several spaces between", M, T_STR("FROM:<a@b>   SIZE=1   BODY=7BIT"),
      0, OK, 1, B_7BIT, 0, T_NONE, T_NONE, 0, 0, T_NONE },
    { "one space after FROM: and params", M, T_STR("FROM: <a@b> SIZE=3"), 0,
      OK, 3, 0, 0, T_NONE, T_NONE, 0, 0, T_NONE },
    { "unknown keyword", M, T_STR("FROM:<a@b> FOO=bar"), 0, ERR(BADPAR) },
    { "unknown keyword, no value", M, T_STR("FROM:<a@b> X-FOO"),
      0, ERR(BADPAR) },
    { "unknown after good ones", R, T_STR("TO:<a@b> NOTIFY=NEVER XTRA=1"), 0,
      ERR(BADPAR) },
    { "empty keyword", M, T_STR("FROM:<a@b> =1"), 0, ERR(BADPAR) },
    { "keyword starts with hyphen", M, T_STR("FROM:<a@b> -SIZE=1"), 0,
      ERR(BADPAR) },
    { "underscore in keyword", M, T_STR("FROM:<a@b> SI_ZE=1"),
      0, ERR(BADPAR) },
    { "double =", M, T_STR("FROM:<a@b> SIZE==1"), 0, ERR(BADPAR) },
    { "control in value", M, T_STR("FROM:<a@b> ENVID=a\x01"), 0, ERR(BADPAR) },
    { "DEL in value", M, T_STR("FROM:<a@b> ENVID=a\x7f"), 0, ERR(BADPAR) },
    { "tab between parameters", M, T_STR("FROM:<a@b> SIZE=1\tBODY=7BIT"), 0,
      ERR(BADPAR) },
    { "no space before parameters", M, T_STR("FROM:<a@b>SIZE=1"), 0,
      ERR(BADADDR) },
    { "bad path wins", M, T_STR("FROM:<a@@b> FOO=1"), 0, ERR(BADADDR) },
    { "bad UTF-8 in value", R, T_STR("TO:<a@b> ORCPT=utf-8;\xff"), 0,
      ERR(BADPAR) },
};


static void
check(ngx_uint_t n, ngx_str_t *arg, const char *how)
{
    u_char                *gt;
    ngx_int_t              rc;
    ngx_str_t              want;
    ngx_relay_mail_args_t  ma;

    if (cases[n].cmd == M) {
        rc = ngx_relay_parse_mail_from(arg, cases[n].max_size, &ma);

    } else {
        rc = ngx_relay_parse_rcpt_to(arg, &ma);
    }

    t_check_rc(how, rc, cases[n].rc);

    if (rc != cases[n].rc || (rc != NGX_OK && rc != TOOBIG)) {
        return;
    }

    if (ma.size != cases[n].size) {
        t_fail("%s: size %lld, want %lld", how, (long long) ma.size,
               (long long) cases[n].size);
    }

    t_check_uint("body", ma.body, cases[n].body);
    t_check_uint("ret", ma.ret, cases[n].ret);
    t_check_str("envid", &ma.envid, (ngx_str_t *) &cases[n].envid);
    t_check_str("auth", &ma.auth, (ngx_str_t *) &cases[n].auth);
    t_check_uint("smtputf8", ma.smtputf8, cases[n].smtputf8);
    t_check_uint("notify", ma.notify, cases[n].notify);
    t_check_str("orcpt", &ma.orcpt, (ngx_str_t *) &cases[n].orcpt);

    /* the path is what stands between the brackets */

    want.data = memchr(arg->data, '<', arg->len);
    gt = memchr(arg->data, '>', arg->len);

    if (want.data == NULL || gt == NULL) {
        t_fail("%s: bad test case", how);
        return;
    }

    want.data++;
    want.len = gt - want.data;

    t_check_str("path", &ma.path.addr, &want);
}


static void
run(ngx_uint_t n)
{
    ngx_str_t  arg;

    arg.len = cases[n].arg.len;
    arg.data = t_dup((ngx_str_t *) &cases[n].arg);

    check(n, &arg, "whole");

    free(arg.data);

    t_framed_command(n, cases[n].cmd == M, (ngx_str_t *) &cases[n].arg,
                     check);
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

    return t_summary("test_params");
}
