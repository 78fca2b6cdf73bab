
/*
 * Copyright (C) The relay authors
 */


/*
 * ngx_relay_escape(): what logs and replies quote of a client's or a
 * server's octets.  Each case is escaped into an exact-size buffer; the
 * result never holds a control character, a quote or a lone backslash.
 */


#include "t.h"


static const struct {
    const char  *label;
    ngx_str_t    in;
    size_t       size;
    ngx_str_t    out;
} cases[] = {

    { "printable", T_STR("MAIL FROM:<a@b>"), 64, T_STR("MAIL FROM:<a@b>") },
    { "CR LF", T_STR("QUIT\r\n"), 64, T_STR("QUIT\\x0d\\x0a") },
    { "quote and backslash", T_STR("a\"b\\c"), 64,
      T_STR("a\\x22b\\x5cc") },
    { "NUL, DEL, 8-bit", T_STR("\0\x7f\xc3\xa9"), 64,
      T_STR("\\x00\\x7f\\xc3\\xa9") },
    { "ANSI escape", T_STR("\x1b[31mred"), 64, T_STR("\\x1b[31mred") },
    { "empty", T_STR(""), 8, T_STR("") },
    { "exactly the room", T_STR("abcdef"), 6, T_STR("abcdef") },
    { "cut with dots", T_STR("abcdefgh"), 6, T_STR("abc...") },
    { "cut before an escape", T_STR("ab\r\ncd"), 8, T_STR("ab...") },
    { "escape exactly fits", T_STR("ab\r"), 6, T_STR("ab\\x0d") },
    { "tiny room", T_STR("\r\n"), 2, T_STR("") },
    { "room for the dots only", T_STR("\r\n"), 3, T_STR("...") },
};


int
main(void)
{
    u_char     *buf, *p, *q;
    ngx_str_t   got, in;
    ngx_uint_t  n;

    for (n = 0; n < sizeof(cases) / sizeof(cases[0]); n++) {
        t_begin(cases[n].label);

        in.len = cases[n].in.len;
        in.data = t_dup((ngx_str_t *) &cases[n].in);

        buf = malloc(cases[n].size ? cases[n].size : 1);
        if (buf == NULL) {
            perror("malloc");
            exit(2);
        }

        p = ngx_relay_escape(buf, cases[n].size, in.data, in.len);

        got.data = buf;
        got.len = p - buf;
        t_check_str("escaped", &got, (ngx_str_t *) &cases[n].out);

        for (q = buf; q < p; q++) {
            if (*q < 0x20 || *q >= 0x7f || *q == '"') {
                t_fail("octet 0x%02x in the output", *q);
            }
        }

        free(buf);
        free(in.data);
        t_end();
    }

    return t_summary("test_escape");
}
