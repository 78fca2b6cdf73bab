
/*
 * Copyright (C) The relay authors
 */


/*
 * AUTH responses (RFC 4954 4): ngx_relay_parse_auth_response() decodes
 * base64 (RFC 4648) into a buffer of a given size, "*" cancels, "=" is
 * empty; then ngx_relay_parse_auth_plain() splits a PLAIN response
 * (RFC 4616).  Each line is framed from line + CRLF split at every byte,
 * with the limit an AUTH exchange has, and decoded into an exact-size
 * buffer.
 */


#include "t.h"


static const struct {
    const char  *label;
    ngx_str_t    line;
    size_t       room;
    ngx_int_t    rc;
    ngx_str_t    decoded;
    ngx_int_t    plain;               /* rc of the PLAIN split, when OK */
    ngx_str_t    user;
} cases[] = {

    { "PLAIN", T_STR("AGFsaWNlAHNlY3JldA=="), 64, NGX_OK,
      T_STR("\0alice\0secret"), NGX_OK, T_STR("alice") },
    { "PLAIN with authzid", T_STR("YWxpY2UAYWxpY2UAc2VjcmV0"), 64, NGX_OK,
      T_STR("alice\0alice\0secret"), NGX_OK, T_STR("alice") },
    { "PLAIN acting as another", T_STR("Ym9iAGFsaWNlAHNlY3JldA=="), 64,
      NGX_OK, T_STR("bob\0alice\0secret"), NGX_RELAY_PARSE_INVALID,
      T_NONE },
    { "PLAIN without padding", T_STR("AGFsaWNlAHNlY3JldA"), 64, NGX_OK,
      T_STR("\0alice\0secret"), NGX_OK, T_STR("alice") },
    { "PLAIN empty password", T_STR("AGFsaWNlAA=="), 64, NGX_OK,
      T_STR("\0alice\0"), NGX_RELAY_PARSE_INVALID, T_NONE },
    { "PLAIN one part", T_STR("YWxpY2U="), 64, NGX_OK, T_STR("alice"),
      NGX_RELAY_PARSE_INVALID, T_NONE },
    { "PLAIN four parts", T_STR("AGEAYgBj"), 64, NGX_OK, T_STR("\0a\0b\0c"),
      NGX_RELAY_PARSE_INVALID, T_NONE },
    { "LOGIN user", T_STR("VXNlcm5hbWU6"), 64, NGX_OK, T_STR("Username:"),
      NGX_RELAY_PARSE_INVALID, T_NONE },
    { "one padding", T_STR("YWI="), 2, NGX_OK, T_STR("ab"),
      NGX_RELAY_PARSE_INVALID, T_NONE },
    { "binary", T_STR("/+8A"), 3, NGX_OK, T_STR("\xff\xef\0"),
      NGX_RELAY_PARSE_INVALID, T_NONE },
    { "empty response", T_STR("="), 64, NGX_OK, T_STR(""),
      NGX_RELAY_PARSE_INVALID, T_NONE },
    { "empty line", T_STR(""), 64, NGX_OK, T_STR(""),
      NGX_RELAY_PARSE_INVALID, T_NONE },
    { "exactly the room", T_STR("YWJj"), 3, NGX_OK, T_STR("abc"),
      NGX_RELAY_PARSE_INVALID, T_NONE },

    /* refused */

    { "cancel", T_STR("*"), 64, NGX_DECLINED, T_NONE, 0, T_NONE },
    { "over the room", T_STR("YWJjZA=="), 3, NGX_RELAY_PARSE_INVALID,
      T_NONE, 0, T_NONE },
    { "over the room by one", T_STR("YWJj"), 2, NGX_RELAY_PARSE_INVALID,
      T_NONE, 0, T_NONE },
    { "not base64", T_STR("YW-j"), 64, NGX_RELAY_PARSE_INVALID, T_NONE, 0,
      T_NONE },
    { "space inside", T_STR("YW Jj"), 64, NGX_RELAY_PARSE_INVALID, T_NONE,
      0, T_NONE },
    { "a length no encoding has", T_STR("YWJjZ"), 64,
      NGX_RELAY_PARSE_INVALID, T_NONE, 0, T_NONE },
    { "data after padding", T_STR("YQ==YWJj"), 64, NGX_RELAY_PARSE_INVALID,
      T_NONE, 0, T_NONE },
    { "three paddings", T_STR("YQ==="), 64, NGX_RELAY_PARSE_INVALID, T_NONE,
      0, T_NONE },
    { "wrong padding", T_STR("YWI=="), 64, NGX_RELAY_PARSE_INVALID, T_NONE,
      0, T_NONE },
    { "padding alone", T_STR("=="), 64, NGX_RELAY_PARSE_INVALID, T_NONE, 0,
      T_NONE },
    { "star with more", T_STR("**"), 64, NGX_RELAY_PARSE_INVALID, T_NONE, 0,
      T_NONE },
    { "NUL", T_STR("YW\0j"), 64, NGX_RELAY_PARSE_INVALID, T_NONE, 0,
      T_NONE },
};


static void
check(ngx_uint_t n, ngx_str_t *line, const char *how)
{
    u_char     *buf;
    ngx_int_t   rc;
    ngx_str_t   decoded, user, passwd;

    buf = malloc(cases[n].room ? cases[n].room : 1);
    if (buf == NULL) {
        perror("malloc");
        exit(2);
    }

    rc = ngx_relay_parse_auth_response(line, buf, cases[n].room, &decoded);

    t_check_rc(how, rc, cases[n].rc);

    if (rc == NGX_OK && cases[n].rc == NGX_OK) {
        t_check_str("decoded", &decoded, (ngx_str_t *) &cases[n].decoded);

        rc = ngx_relay_parse_auth_plain(&decoded, &user, &passwd);
        t_check_rc("PLAIN", rc, cases[n].plain);

        if (rc == NGX_OK && cases[n].plain == NGX_OK) {
            t_check_str("user", &user, (ngx_str_t *) &cases[n].user);
        }
    }

    free(buf);
}


static void
run(ngx_uint_t n)
{
    t_line_every_way(n, &cases[n].line, 4000, check);
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

    return t_summary("test_auth");
}
