
/*
 * Copyright (C) The relay authors
 */


/*
 * ngx_relay_parse_reply(): a server's replies, single and multiline, their
 * code and collected text, the EHLO keywords found with rp->ehlo (and
 * SIZE's value), and ngx_relay_parse_enhanced() on the text.
 *
 * Each input is fed whole, split in two at every byte, and one byte at a
 * time, each piece in its own exact-size buffer; every way must give the
 * same result and leave the same octets after the reply.
 */


#include "t.h"


#define EXT(e)  NGX_RELAY_EXT_##e


static const struct {
    const char  *label;
    ngx_uint_t   ehlo;
    ngx_str_t    in;
    ngx_int_t    rc;
    ngx_uint_t   code;
    ngx_str_t    text;
    ngx_uint_t   ext;
    off_t        size;
    ngx_str_t    rest;
    const char  *enhanced;            /* of the code's class, or NULL */
} cases[] = {

    { "single line", 0, T_STR("250 2.0.0 Ok\r\n"), NGX_OK, 250,
      T_STR("2.0.0 Ok"), 0, 0, T_STR(""), "2.0.0" },
    { "bare LF tolerated", 0, T_STR("354 go on\n"), NGX_OK, 354,
      T_STR("go on"), 0, 0, T_STR(""), NULL },
    { "no text", 0, T_STR("250\r\n"), NGX_OK, 250, T_STR(""), 0, 0,
      T_STR(""), NULL },
    { "pipelined replies: the first", 0,
      T_STR("250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n"), NGX_OK, 250,
      T_STR("2.1.0 Ok"), 0, 0, T_STR("250 2.1.5 Ok\r\n"), "2.1.0" },
    { "multiline", 0, T_STR("452-4.5.3 Too many\r\n452 4.5.3 recipients\r\n"),
      NGX_OK, 452, T_STR("4.5.3 Too many 4.5.3 recipients"), 0, 0,
      T_STR(""), "4.5.3" },
    { "enhanced code after text", 0,
      T_STR("550 <x@y>: 5.1.1 unknown\r\n"), NGX_OK, 550,
      T_STR("<x@y>: 5.1.1 unknown"), 0, 0, T_STR(""), "5.1.1" },
    { "no enhanced code of the class", 0, T_STR("550 4.1.1 odd\r\n"),
      NGX_OK, 550, T_STR("4.1.1 odd"), 0, 0, T_STR(""), NULL },
    { "not an enhanced code", 0, T_STR("550 5.1234.1 x 5.1.\r\n"), NGX_OK,
      550, T_STR("5.1234.1 x 5.1."), 0, 0, T_STR(""), NULL },
    { "control characters become spaces", 0,
      T_STR("421 a\x01" "b\x7f" "c\tbye\r\n"), NGX_OK, 421,
      T_STR("a b c bye"), 0, 0, T_STR(""), NULL },
    { "incomplete", 0, T_STR("250-mx\r\n250-PIPE"), NGX_AGAIN, 0, T_NONE,
      0, 0, T_NONE, NULL },

    /* EHLO keywords: a line's first word, from the second line on */

    { "EHLO keywords", 1,
      T_STR("250-mx.example Hello PIPELINING\r\n250-PIPELINING\r\n"
            "250-SIZE 10240000\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n"
            "250-STARTTLS\r\n250-DSN\r\n250-CHUNKING\r\n250-BINARYMIME\r\n"
            "250 ENHANCEDSTATUSCODES\r\n"),
      NGX_OK, 250, T_NONE,
      EXT(PIPELINING)|EXT(SIZE)|EXT(8BITMIME)|EXT(SMTPUTF8)|EXT(STARTTLS)
      |EXT(DSN)|EXT(CHUNKING)|EXT(BINARYMIME)|EXT(ENHANCED),
      10240000, T_STR(""), NULL },
    { "keywords in any case", 1,
      T_STR("250-mx\r\n250-pipelining\r\n250 Chunking\r\n"), NGX_OK, 250,
      T_STR("mx pipelining Chunking"), EXT(PIPELINING)|EXT(CHUNKING), 0,
      T_STR(""), NULL },
    { "greeting words are no keywords", 1,
      T_STR("250-mx STARTTLS PIPELINING\r\n250 8BITMIME\r\n"), NGX_OK, 250,
      T_NONE, EXT(8BITMIME), 0, T_STR(""), NULL },
    { "parameters are no keywords", 1,
      T_STR("250-mx\r\n250-AUTH PLAIN STARTTLS\r\n250-X-FOO DSN\r\n"
            "250 XSTARTTLS\r\n"),
      NGX_OK, 250, T_NONE, 0, 0, T_STR(""), NULL },
    { "SIZE without a value", 1, T_STR("250-mx\r\n250 SIZE\r\n"), NGX_OK,
      250, T_NONE, EXT(SIZE), 0, T_STR(""), NULL },
    { "SIZE with spaces and more", 1,
      T_STR("250-mx\r\n250 SIZE  52428800 x\r\n"), NGX_OK, 250, T_NONE,
      EXT(SIZE), 52428800, T_STR(""), NULL },
    { "SIZE beyond off_t", 1,
      T_STR("250-mx\r\n250 SIZE 99999999999999999999999\r\n"), NGX_OK, 250,
      T_NONE, EXT(SIZE), 0, T_STR(""), NULL },
    { "SIZE not a number", 1, T_STR("250-mx\r\n250 SIZE 10k\r\n"), NGX_OK,
      250, T_NONE, EXT(SIZE), 0, T_STR(""), NULL },
    { "keyword with a bad octet", 1,
      T_STR("250-mx\r\n250-DS_N\r\n250 PIPELINING.\r\n"), NGX_OK, 250,
      T_NONE, 0, 0, T_STR(""), NULL },
    { "long keyword", 1,
      T_STR("250-mx\r\n250 ENHANCEDSTATUSCODESENHANCEDSTATUSCODES\r\n"),
      NGX_OK, 250, T_NONE, 0, 0, T_STR(""), NULL },
    { "single-line EHLO reply", 1, T_STR("250 mx.example\r\n"), NGX_OK, 250,
      T_STR("mx.example"), 0, 0, T_STR(""), NULL },
    { "keywords only with ehlo", 0,
      T_STR("250-mx\r\n250 PIPELINING\r\n"), NGX_OK, 250, T_NONE, 0, 0,
      T_STR(""), NULL },

    /* invalid */

    { "not a code", 0, T_STR("2x0 Ok\r\n"), NGX_RELAY_PARSE_INVALID, 0,
      T_NONE, 0, 0, T_NONE, NULL },
    { "code out of range", 0, T_STR("199 Ok\r\n"), NGX_RELAY_PARSE_INVALID,
      0, T_NONE, 0, 0, T_NONE, NULL },
    { "code changes", 0, T_STR("250-a\r\n251 b\r\n"),
      NGX_RELAY_PARSE_INVALID, 0, T_NONE, 0, 0, T_NONE, NULL },
    { "bad separator", 0, T_STR("250_Ok\r\n"), NGX_RELAY_PARSE_INVALID, 0,
      T_NONE, 0, 0, T_NONE, NULL },
    { "CR without LF", 0, T_STR("250 Ok\rx\n"), NGX_RELAY_PARSE_INVALID, 0,
      T_NONE, 0, 0, T_NONE, NULL },
};


static void
run(ngx_uint_t n, size_t *cuts, ngx_uint_t ncuts, const char *how)
{
    u_char                    *piece, out[12];
    size_t                     off, end, len;
    ngx_buf_t                  b;
    ngx_int_t                  rc;
    ngx_str_t                  got, rest, *in;
    ngx_uint_t                 i;
    ngx_relay_reply_parser_t   rp;

    in = (ngx_str_t *) &cases[n].in;

    ngx_memzero(&rp, sizeof(ngx_relay_reply_parser_t));
    rp.ehlo = cases[n].ehlo;

    off = 0;
    rc = NGX_AGAIN;
    rest.len = 0;
    rest.data = NULL;

    for (i = 0; i <= ncuts; i++) {
        end = (i < ncuts) ? cuts[i] : in->len;
        len = end - off;

        if (rc != NGX_AGAIN) {
            off = end;                  /* after the reply: not fed */
            continue;
        }

        rest.data = in->data + off;
        piece = malloc(len ? len : 1);
        if (piece == NULL) {
            perror("malloc");
            exit(2);
        }

        memcpy(piece, in->data + off, len);

        ngx_memzero(&b, sizeof(ngx_buf_t));
        b.pos = piece;
        b.last = piece + len;

        rc = ngx_relay_parse_reply(&rp, &b);

        if (rc == NGX_OK) {
            rest.data = in->data + off + (b.pos - piece);
        }

        if (rc == NGX_AGAIN && b.pos != b.last) {
            t_fail("%s: AGAIN with input left", how);
        }

        free(piece);
        off = end;
    }

    t_check_rc(how, rc, cases[n].rc);

    if (rc != NGX_OK || cases[n].rc != NGX_OK) {
        return;
    }

    rest.len = in->data + in->len - rest.data;

    t_check_uint("code", rp.code, cases[n].code);
    t_check_str("rest", &rest, (ngx_str_t *) &cases[n].rest);

    if (cases[n].text.data) {
        got.data = rp.text;
        got.len = rp.text_len;
        t_check_str("text", &got, (ngx_str_t *) &cases[n].text);
    }

    t_check_uint("ext", rp.ext, cases[n].ext);
    t_check_uint("size", (ngx_uint_t) rp.size, (ngx_uint_t) cases[n].size);

    rc = ngx_relay_parse_enhanced(rp.text, rp.text_len,
                                  (u_char) ('0' + rp.code / 100), out);

    if (cases[n].enhanced == NULL) {
        if (rc == NGX_OK) {
            t_fail("%s: enhanced code \"%s\" found", how, out);
        }

    } else if (rc != NGX_OK || strcmp((char *) out, cases[n].enhanced) != 0) {
        t_fail("%s: enhanced code \"%s\", want \"%s\"", how,
               rc == NGX_OK ? (char *) out : "(none)", cases[n].enhanced);
    }
}


int
main(void)
{
    ngx_uint_t  n;

    for (n = 0; n < sizeof(cases) / sizeof(cases[0]); n++) {
        t_begin(cases[n].label);
        t_feed_every_way(n, cases[n].in.len, run);
        t_end();
    }

    return t_summary("test_reply");
}
