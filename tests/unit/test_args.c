
/*
 * Copyright (C) The relay authors
 */


/*
 * The small argument parsers: EHLO/HELO, BDAT (RFC 3030), AUTH PLAIN
 * (RFC 4616) and xtext (RFC 3461 4).  Each is fed whole from an exact-size
 * buffer; HELO and BDAT arguments are also framed as command lines by the
 * line parser split at every byte and split by the command parser.
 */


#include "t.h"


#define OK      NGX_OK
#define INVAL   NGX_RELAY_PARSE_INVALID

#define H10     "hhhhhhhhhh"
#define H60     H10 H10 H10 H10 H10 H10
#define H63     H60 "hhh"

/* 63 * 4 + 3 = 255 */
#define H255    H63 "." H63 "." H63 "." H63
#define H256    H63 "." H63 "." H63 "." H63 "h"


static const struct {
    const char  *label;
    ngx_str_t    arg;
    ngx_int_t    rc;
} helo[] = {

    { "domain", T_STR("mail.example.com"), OK },
    { "single label", T_STR("localhost"), OK },
    { "upper case and digits", T_STR("MX1.Example-2.COM"), OK },
    { "IPv4 literal", T_STR("[192.0.2.1]"), OK },
    { "IPv6 literal", T_STR("[IPv6:2001:db8::1]"), OK },
    { "UTF-8 domain", T_STR("\xc3\xa9t\xc3\xa9.fr"), OK },
    { "trailing spaces", T_STR("mail.example.com  "), OK },
    { "leading space", T_STR(" mail.example.com"), OK },
    { "255-octet domain", T_STR(H255), OK },
    { "256-octet domain", T_STR(H256), INVAL },
    { "63-octet label", T_STR(H63 ".com"), OK },
    { "64-octet label", T_STR(H63 "h.com"), INVAL },
    { "empty", T_STR(""), INVAL },
    { "spaces only", T_STR("   "), INVAL },
    { "two words", T_STR("mail.example.com extra"), INVAL },
    { "leading hyphen", T_STR("-mail.example.com"), INVAL },
    { "trailing hyphen", T_STR("mail-.example.com"), INVAL },
    { "hyphen at the end", T_STR("example.com-"), INVAL },
    { "empty label", T_STR("mail..example.com"), INVAL },
    { "leading dot", T_STR(".example.com"), INVAL },
    { "trailing dot", T_STR("example.com."), INVAL },
    { "underscore", T_STR("my_host"), INVAL },
    { "bad IPv4 literal", T_STR("[192.0.2]"), INVAL },
    { "bad IPv6 literal", T_STR("[IPv6:1::2::3]"), INVAL },
    { "unclosed literal", T_STR("[192.0.2.1"), INVAL },
    { "unopened literal", T_STR("192.0.2.1]"), INVAL },
    { "empty literal", T_STR("[]"), INVAL },
    { "lone bracket", T_STR("["), INVAL },
    { "bare IPv6", T_STR("::1"), INVAL },
    { "bad UTF-8", T_STR("\xc3.fr"), INVAL },
    { "NUL", T_STR("a\0b"), INVAL },
    { "tab", T_STR("a\tb"), INVAL },
};


static const struct {
    const char  *label;
    ngx_str_t    arg;
    ngx_int_t    rc;
    off_t        size;
    ngx_uint_t   last;
} bdat[] = {

    { "size", T_STR("100"), OK, 100, 0 },
    { "size LAST", T_STR("100 LAST"), OK, 100, 1 },
    { "size last", T_STR("7 last"), OK, 7, 1 },
    { "size LaSt", T_STR("7 LaSt"), OK, 7, 1 },
    { "zero", T_STR("0"), OK, 0, 0 },
    { "zero LAST", T_STR("0 LAST"), OK, 0, 1 },
    { "leading zeros", T_STR("0010"), OK, 10, 0 },
    { "18 digits", T_STR("999999999999999999"), OK, 999999999999999999LL,
      0 },
    { "two spaces", T_STR("5  LAST"), OK, 5, 1 },
    { "trailing space", T_STR("5 "), OK, 5, 0 },
    { "trailing space after LAST", T_STR("5 LAST "), OK, 5, 1 },
    { "leading space", T_STR(" 5"), OK, 5, 0 },
    { "19 digits", T_STR("1000000000000000000"), INVAL, 0, 0 },
    { "empty", T_STR(""), INVAL, 0, 0 },
    { "LAST only", T_STR("LAST"), INVAL, 0, 0 },
    { "negative", T_STR("-1"), INVAL, 0, 0 },
    { "plus", T_STR("+1"), INVAL, 0, 0 },
    { "letters", T_STR("1k"), INVAL, 0, 0 },
    { "LAS", T_STR("1 LAS"), INVAL, 0, 0 },
    { "LASTX", T_STR("1 LASTX"), INVAL, 0, 0 },
    { "LAST and more", T_STR("1 LAST x"), INVAL, 0, 0 },
    { "other word", T_STR("1 MORE"), INVAL, 0, 0 },
    { "two sizes", T_STR("1 2"), INVAL, 0, 0 },
    { "tab", T_STR("1\tLAST"), INVAL, 0, 0 },
};


static const struct {
    const char  *label;
    ngx_str_t    in;
    ngx_int_t    rc;
    ngx_str_t    user;
    ngx_str_t    passwd;
} plain[] = {

    { "no authzid", T_STR("\0user\0secret"), OK, T_STR("user"),
      T_STR("secret") },
    { "authzid equals authcid", T_STR("user\0user\0secret"), OK,
      T_STR("user"), T_STR("secret") },
    { "one-octet fields", T_STR("\0u\0p"), OK, T_STR("u"), T_STR("p") },
    { "UTF-8", T_STR("\0\xc3\xa9l\xc3\xa8ve\0m\xc3\xb8t"), OK,
      T_STR("\xc3\xa9l\xc3\xa8ve"), T_STR("m\xc3\xb8t") },
    { "spaces are fine", T_STR("\0a b\0c d "), OK, T_STR("a b"),
      T_STR("c d ") },
    { "authzid differs", T_STR("admin\0user\0secret"), INVAL, T_NONE,
      T_NONE },
    { "authzid differs in case", T_STR("User\0user\0secret"), INVAL, T_NONE,
      T_NONE },
    { "authzid is a prefix", T_STR("use\0user\0secret"), INVAL, T_NONE,
      T_NONE },
    { "empty authcid", T_STR("\0\0secret"), INVAL, T_NONE, T_NONE },
    { "empty passwd", T_STR("\0user\0"), INVAL, T_NONE, T_NONE },
    { "one NUL", T_STR("user\0secret"), INVAL, T_NONE, T_NONE },
    { "no NUL", T_STR("usersecret"), INVAL, T_NONE, T_NONE },
    { "three NULs", T_STR("\0user\0sec\0ret"), INVAL, T_NONE, T_NONE },
    { "empty", T_STR(""), INVAL, T_NONE, T_NONE },
    { "bad UTF-8 in passwd", T_STR("\0user\0s\xff"), INVAL, T_NONE,
      T_NONE },
    { "truncated UTF-8 at the end", T_STR("\0user\0s\xc3"), INVAL, T_NONE,
      T_NONE },
    { "bad UTF-8 in authcid", T_STR("\0\xc0\xafuser\0s"), INVAL, T_NONE,
      T_NONE },
};


static const struct {
    const char  *label;
    ngx_str_t    in;
    ngx_int_t    rc;
} xtext[] = {

    { "empty", T_STR(""), OK },
    { "plain", T_STR("abc"), OK },
    { "all xchars", T_STR("!\"#$%&'()*,-./09:;<>?@AZ[\\]^_`az{|}~"), OK },
    { "hexchar", T_STR("+2B"), OK },
    { "hexchars", T_STR("a+41+42b"), OK },
    { "lower-case hexchar", T_STR("+2b"), INVAL },
    { "not hex", T_STR("+G0"), INVAL },
    { "lone plus", T_STR("+"), INVAL },
    { "one hex digit", T_STR("+2"), INVAL },
    { "equals", T_STR("a=b"), INVAL },
    { "space", T_STR("a b"), INVAL },
    { "control", T_STR("a\x01"), INVAL },
    { "DEL", T_STR("a\x7f"), INVAL },
    { "8-bit", T_STR("\xc3\xa9"), INVAL },
    { "NUL", T_STR("a\0"), INVAL },
};


/*
 * Frames "VERB arg" CRLF with the line parser split at every byte, splits
 * it with the command parser and hands each argument to the checker.
 */

static void
framed(const char *verb, ngx_uint_t cmd_verb, ngx_str_t *arg, ngx_uint_t n,
    void (*check)(ngx_uint_t n, ngx_str_t *arg, const char *how))
{
    char                  how[64];
    u_char               *bytes, *out;
    size_t                k, vlen;
    ngx_int_t             rc;
    ngx_str_t             in, line;
    ngx_relay_command_t   cmd;

    vlen = strlen(verb);
    in.len = vlen + 1 + arg->len + 2;
    bytes = malloc(in.len);
    out = malloc(in.len);
    if (bytes == NULL || out == NULL) {
        perror("malloc");
        exit(2);
    }

    memcpy(bytes, verb, vlen);
    bytes[vlen] = ' ';
    memcpy(bytes + vlen + 1, arg->data, arg->len);
    bytes[in.len - 2] = CR;
    bytes[in.len - 1] = LF;
    in.data = bytes;

    for (k = 0; k < in.len; k++) {
        snprintf(how, sizeof(how), "framed, split at %lu", (unsigned long) k);

        rc = t_frame_line(&in, 512, &k, 1, out, &line);
        if (rc != NGX_OK) {
            t_fail("%s: line parser gave %s", how, t_rc(rc));
            continue;
        }

        rc = ngx_relay_parse_command(&line, &cmd);
        if (rc != NGX_OK) {
            t_fail("%s: command parser gave %s", how, t_rc(rc));
            continue;
        }

        t_check_uint("verb", cmd.verb, cmd_verb);

        check(n, &cmd.arg, how);
    }

    free(bytes);
    free(out);
}


static ngx_uint_t
frameable(ngx_str_t *s)
{
    size_t  i;

    for (i = 0; i < s->len; i++) {
        if (s->data[i] == '\0' || s->data[i] == '\t' || s->data[i] == LF) {
            return 0;
        }
    }

    return 1;
}


static void
check_helo(ngx_uint_t n, ngx_str_t *arg, const char *how)
{
    t_check_rc(how, ngx_relay_parse_helo(arg), helo[n].rc);
}


static void
check_bdat(ngx_uint_t n, ngx_str_t *arg, const char *how)
{
    off_t       size;
    ngx_int_t   rc;
    ngx_uint_t  last;

    size = -5;
    last = 5;

    rc = ngx_relay_parse_bdat(arg, &size, &last);

    t_check_rc(how, rc, bdat[n].rc);

    if (rc != NGX_OK || bdat[n].rc != NGX_OK) {
        return;
    }

    if (size != bdat[n].size) {
        t_fail("%s: size %lld, want %lld", how, (long long) size,
               (long long) bdat[n].size);
    }

    t_check_uint("last", last, bdat[n].last);
}


int
main(void)
{
    ngx_int_t   rc;
    ngx_str_t   s, user, passwd;
    ngx_uint_t  n;

    for (n = 0; n < sizeof(helo) / sizeof(helo[0]); n++) {
        t_begin(helo[n].label);

        s.len = helo[n].arg.len;
        s.data = t_dup((ngx_str_t *) &helo[n].arg);
        check_helo(n, &s, "whole");
        free(s.data);

        if (frameable((ngx_str_t *) &helo[n].arg)) {
            framed("EHLO", NGX_RELAY_CMD_EHLO, (ngx_str_t *) &helo[n].arg, n,
                   check_helo);
        }

        t_end();
    }

    for (n = 0; n < sizeof(bdat) / sizeof(bdat[0]); n++) {
        t_begin(bdat[n].label);

        s.len = bdat[n].arg.len;
        s.data = t_dup((ngx_str_t *) &bdat[n].arg);
        check_bdat(n, &s, "whole");
        free(s.data);

        if (frameable((ngx_str_t *) &bdat[n].arg)) {
            framed("BDAT", NGX_RELAY_CMD_BDAT, (ngx_str_t *) &bdat[n].arg, n,
                   check_bdat);
        }

        t_end();
    }

    for (n = 0; n < sizeof(plain) / sizeof(plain[0]); n++) {
        t_begin(plain[n].label);

        s.len = plain[n].in.len;
        s.data = t_dup((ngx_str_t *) &plain[n].in);

        user.len = 0;
        user.data = NULL;
        passwd = user;

        rc = ngx_relay_parse_auth_plain(&s, &user, &passwd);
        t_check_rc("auth plain", rc, plain[n].rc);

        if (rc == NGX_OK && plain[n].rc == NGX_OK) {
            t_check_str("user", &user, (ngx_str_t *) &plain[n].user);
            t_check_str("passwd", &passwd, (ngx_str_t *) &plain[n].passwd);
        }

        free(s.data);

        t_end();
    }

    for (n = 0; n < sizeof(xtext) / sizeof(xtext[0]); n++) {
        t_begin(xtext[n].label);

        s.len = xtext[n].in.len;
        s.data = t_dup((ngx_str_t *) &xtext[n].in);

        t_check_rc("xtext", ngx_relay_check_xtext(&s), xtext[n].rc);

        free(s.data);

        t_end();
    }

    return t_summary("test_args");
}
