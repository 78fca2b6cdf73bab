
/*
 * Copyright (C) The relay authors
 */


/*
 * ngx_relay_parse_data(): DATA content, dot-stuffing, the end marker and
 * the bare CR/LF flags (SMTP smuggling: only CRLF "." CRLF ends DATA).
 *
 * Each input is fed whole, split in two at every byte, and one byte at a
 * time, each piece in its own exact-size buffer with an exact-size
 * (len + 1) output buffer.  Checked: rc, the copied output, what is left
 * after the end (pipelined commands), and both flags.
 *
 * The parser copies runs of regular lines 16 octets at a time, which the
 * short cases above hardly reach: long generated inputs (CRLF lines with
 * a stuffed dot, a bare CR or LF, a CR or LF at every place around a
 * 16-octet block) are checked against a plain octet-at-a-time reference,
 * fed whole and in random pieces.  ngx_relay_parse_line_dot(), the
 * delivery's search for dots to stuff, is checked the same way.
 */


#include "t.h"
#include "../data_reference.h"


static const struct {
    const char  *label;
    ngx_str_t    in;
    ngx_int_t    rc;
    ngx_str_t    out;
    ngx_str_t    rest;
    ngx_uint_t   bare_cr;
    ngx_uint_t   bare_lf;
} cases[] = {

    { "empty message", T_STR(".\r\n"), NGX_OK, T_STR(""), T_STR(""),
      0, 0 },
    { "one line", T_STR("a\r\n.\r\n"), NGX_OK, T_STR("a\r\n"), T_STR(""),
      0, 0 },
    { "empty first line", T_STR("\r\n.\r\n"), NGX_OK, T_STR("\r\n"),
      T_STR(""), 0, 0 },
    { "CRLF inside", T_STR("a\r\nb\r\n\r\nc\r\n.\r\n"), NGX_OK,
      T_STR("a\r\nb\r\n\r\nc\r\n"), T_STR(""), 0, 0 },
    { "stuffed dot", T_STR("..x\r\n.\r\n"), NGX_OK, T_STR(".x\r\n"),
      T_STR(""), 0, 0 },
    { "stuffed dot alone", T_STR("a\r\n..\r\n.\r\n"), NGX_OK,
      T_STR("a\r\n.\r\n"), T_STR(""), 0, 0 },
    { "stuffed dots", T_STR("...\r\n..a.\r\n.\r\n"), NGX_OK,
      T_STR("..\r\n.a.\r\n"), T_STR(""), 0, 0 },
    { "dot mid-line", T_STR("a.b\r\n.\r\n"), NGX_OK, T_STR("a.b\r\n"),
      T_STR(""), 0, 0 },
    { "dot alone mid-line", T_STR("a . b\r\n.\r\n"), NGX_OK,
      T_STR("a . b\r\n"), T_STR(""), 0, 0 },
    { "dot CRLF not at line start", T_STR("x.\r\nmore\r\n.\r\n"), NGX_OK,
      T_STR("x.\r\nmore\r\n"), T_STR(""), 0, 0 },
    { "space dot CRLF", T_STR(" .\r\n.\r\n"), NGX_OK, T_STR(" .\r\n"),
      T_STR(""), 0, 0 },
    { "message ends at buffer end", T_STR("Subject: x\r\n\r\nbody\r\n.\r\n"),
      NGX_OK, T_STR("Subject: x\r\n\r\nbody\r\n"), T_STR(""), 0, 0 },
    { "pipelined after the end", T_STR("a\r\n.\r\nQUIT\r\n"), NGX_OK,
      T_STR("a\r\n"), T_STR("QUIT\r\n"), 0, 0 },
    { "second end marker is not ours", T_STR(".\r\n.\r\n"), NGX_OK,
      T_STR(""), T_STR(".\r\n"), 0, 0 },
    { "8-bit and NUL are payload", T_STR("\xc3\xa9\0\xff\r\n.\r\n"), NGX_OK,
      T_STR("\xc3\xa9\0\xff\r\n"), T_STR(""), 0, 0 },

    /* not the end yet */

    { "no input", T_STR(""), NGX_AGAIN, T_STR(""), T_STR(""), 0, 0 },
    { "unterminated", T_STR("a\r\nb"), NGX_AGAIN, T_STR("a\r\nb"),
      T_STR(""), 0, 0 },
    { "dot held", T_STR("a\r\n."), NGX_AGAIN, T_STR("a\r\n"), T_STR(""),
      0, 0 },
    { "dot CR held", T_STR("a\r\n.\r"), NGX_AGAIN, T_STR("a\r\n"),
      T_STR(""), 0, 0 },
    { "stuffed, unterminated", T_STR("..\r\n"), NGX_AGAIN, T_STR(".\r\n"),
      T_STR(""), 0, 0 },

    /* smuggling: bare CR or LF never ends DATA, and is flagged */

    { "LF dot LF", T_STR("\n.\n"), NGX_AGAIN, T_STR("\n.\n"), T_STR(""),
      0, 1 },
    { "text LF dot LF", T_STR("a\n.\n"), NGX_AGAIN, T_STR("a\n.\n"),
      T_STR(""), 0, 1 },
    { "CR dot CR", T_STR("\r.\r"), NGX_AGAIN, T_STR("\r.\r"), T_STR(""),
      1, 0 },
    { "CR dot CR then LF", T_STR("a\r.\r\nb"), NGX_AGAIN,
      T_STR("a\r.\r\nb"), T_STR(""), 1, 0 },
    { "LF dot CRLF", T_STR("a\n.\r\nb"), NGX_AGAIN, T_STR("a\n.\r\nb"),
      T_STR(""), 0, 1 },
    { "CRLF dot LF", T_STR("a\r\n.\nb"), NGX_AGAIN, T_STR("a\r\n\nb"),
      T_STR(""), 0, 1 },
    { "CRLF dot CR x", T_STR("a\r\n.\rx"), NGX_AGAIN, T_STR("a\r\n\rx"),
      T_STR(""), 1, 0 },
    { "CRLF dot CR CR LF", T_STR("a\r\n.\r\r\nb"), NGX_AGAIN,
      T_STR("a\r\n\r\r\nb"), T_STR(""), 1, 0 },
    { "smuggled end then real end",
      T_STR("a\n.\nMAIL FROM:<x@y>\r\n.\r\n"), NGX_OK,
      T_STR("a\n.\nMAIL FROM:<x@y>\r\n"), T_STR(""), 0, 1 },
    { "bare CR in text", T_STR("a\rb\r\n.\r\n"), NGX_OK,
      T_STR("a\rb\r\n"), T_STR(""), 1, 0 },
    { "bare LF in text", T_STR("a\nb\r\n.\r\n"), NGX_OK,
      T_STR("a\nb\r\n"), T_STR(""), 0, 1 },
    { "CR CR LF", T_STR("a\r\r\n.\r\n"), NGX_OK, T_STR("a\r\r\n"),
      T_STR(""), 1, 0 },
    { "both flags", T_STR("a\rb\nc\r\n.\r\n"), NGX_OK,
      T_STR("a\rb\nc\r\n"), T_STR(""), 1, 1 },
    { "CR at the very end", T_STR("a\r"), NGX_AGAIN, T_STR("a\r"),
      T_STR(""), 0, 0 },
};


static void
run(ngx_uint_t n, size_t *cuts, ngx_uint_t ncuts, const char *how)
{
    u_char                   *piece, *dst, *q, *out, *o, *rest, *r;
    size_t                    off, end, len;
    ngx_buf_t                 b;
    ngx_int_t                 rc;
    ngx_str_t                 got, *in;
    ngx_uint_t                i;
    ngx_relay_data_parser_t   dp;

    in = (ngx_str_t *) &cases[n].in;

    ngx_memzero(&dp, sizeof(ngx_relay_data_parser_t));

    out = malloc(in->len + 1);
    rest = malloc(in->len + 1);
    if (out == NULL || rest == NULL) {
        perror("malloc");
        exit(2);
    }

    o = out;
    r = rest;
    off = 0;
    rc = NGX_AGAIN;

    for (i = 0; i <= ncuts; i++) {
        end = (i < ncuts) ? cuts[i] : in->len;
        len = end - off;

        if (rc == NGX_OK) {
            memcpy(r, in->data + off, len);     /* after the end: not fed */
            r += len;
            off = end;
            continue;
        }

        piece = malloc(len ? len : 1);
        dst = malloc(len + 1);
        if (piece == NULL || dst == NULL) {
            perror("malloc");
            exit(2);
        }

        memcpy(piece, in->data + off, len);
        off = end;

        ngx_memzero(&b, sizeof(ngx_buf_t));
        b.pos = piece;
        b.last = piece + len;
        q = dst;

        rc = ngx_relay_parse_data(&dp, &b, &q);

        if (q < dst || q > dst + len + 1) {
            t_fail("%s: wrote %ld octets for %lu in", how,
                   (long) (q - dst), (unsigned long) len);
            q = dst;
        }

        memcpy(o, dst, q - dst);
        o += q - dst;

        if (rc == NGX_AGAIN && b.pos != b.last) {
            t_fail("%s: NGX_AGAIN did not consume everything", how);
        }

        if (rc == NGX_OK) {
            if (b.pos < piece + 1 || b.pos > b.last || b.pos[-1] != LF) {
                t_fail("%s: NGX_OK with pos not past the final LF", how);

            } else {
                memcpy(r, b.pos, b.last - b.pos);
                r += b.last - b.pos;
            }
        }

        free(piece);
        free(dst);

        if (rc != NGX_OK && rc != NGX_AGAIN) {
            break;
        }
    }

    t_check_rc(how, rc, cases[n].rc);

    got.data = out;
    got.len = o - out;
    t_check_str(how, &got, (ngx_str_t *) &cases[n].out);

    got.data = rest;
    got.len = r - rest;
    t_check_str("rest", &got, (ngx_str_t *) &cases[n].rest);

    t_check_uint("bare_cr", dp.bare_cr, cases[n].bare_cr);
    t_check_uint("bare_lf", dp.bare_lf, cases[n].bare_lf);

    free(out);
    free(rest);
}



/*
 * A message of regular CRLF lines of 1 to 100 octets, with one of: a
 * stuffed dot, a bare CR, a bare LF, a "." CR x, or nothing, placed at
 * "at"; ends with the end marker and a pipelined command when "end".
 */

static size_t
generate(u_char *buf, size_t len, size_t at, ngx_uint_t odd, ngx_uint_t end)
{
    size_t      n, line;
    u_char     *p;
    ngx_uint_t  done;

    p = buf;
    done = 0;

    while ((size_t) (p - buf) < len) {
        line = 1 + random() % 100;

        for (n = 0; n < line; n++) {
            if (!done && (size_t) (p - buf) >= at) {
                done = 1;

                switch (odd) {
                case 1: p = ngx_cpymem(p, "\r\n..x", 6); break;
                case 2: *p++ = CR; break;
                case 3: *p++ = LF; break;
                case 4: p = ngx_cpymem(p, "\r\n.\rx", 6); break;
                case 5: p = ngx_cpymem(p, "\r\n\r\n", 4); break;
                }
            }

            *p++ = "X .a"[random() % 4];
        }

        *p++ = CR;
        *p++ = LF;
    }

    if (end) {
        p = ngx_cpymem(p, ".\r\nQUIT\r\n", 9);
    }

    return p - buf;
}


static void
run_long_messages(void)
{
    u_char                   *in, *want, *got, *q;
    size_t                    len, size, off, piece;
    ngx_int_t                 rc;
    ngx_buf_t                 b;
    ngx_str_t                 s1, s2;
    ngx_uint_t                i, odd;
    data_result_t             ref;
    ngx_relay_data_parser_t   dp;

    t_begin("long messages against the octet reference");

    in = malloc(4096);
    want = malloc(8192);
    got = malloc(8192);
    if (in == NULL || want == NULL || got == NULL) {
        perror("malloc");
        exit(2);
    }

    srandom(5321);

    for (i = 0; i < 20000; i++) {
        len = 16 + random() % 600;
        odd = random() % 6;
        size = generate(in, len, random() % len, odd, random() % 4 != 0);

        data_reference(in, size, want, &ref);

        ngx_memzero(&dp, sizeof(ngx_relay_data_parser_t));
        q = got;
        rc = NGX_AGAIN;

        /* whole, or in random pieces of 1 to 80 octets */

        for (off = 0; off < size && rc == NGX_AGAIN; off = b.pos - in) {
            piece = (i % 2) ? size - off : (size_t) (1 + random() % 80);
            piece = ngx_min(piece, size - off);

            b.pos = in + off;
            b.last = b.pos + piece;
            rc = ngx_relay_parse_data(&dp, &b, &q);

            if (rc == NGX_AGAIN && b.pos != b.last) {
                t_fail("input %lu: NGX_AGAIN did not consume everything",
                       (unsigned long) i);
                break;
            }
        }

        t_check_rc("rc", rc, ref.rc);

        if ((size_t) (b.pos - in) != ref.consumed) {
            t_fail("input %lu (odd %lu): consumed %lu, reference %lu",
                   (unsigned long) i, (unsigned long) odd,
                   (unsigned long) (b.pos - in),
                   (unsigned long) ref.consumed);
        }

        s1.data = got;
        s1.len = q - got;
        s2.data = want;
        s2.len = ref.out_len;
        t_check_str("output", &s1, &s2);

        t_check_uint("bare_cr", dp.bare_cr, ref.bare_cr);
        t_check_uint("bare_lf", dp.bare_lf, ref.bare_lf);

        if (t_case_failed) {
            break;
        }
    }

    free(in);
    free(want);
    free(got);

    t_end();
}


static void
run_line_dot(void)
{
    u_char      in[200], *want, *got;
    size_t      i, start, len;
    ngx_uint_t  n, line_start, ls;

    t_begin("the first dot at a line start");

    srandom(4552);

    for (n = 0; n < 20000; n++) {
        len = random() % sizeof(in);

        for (i = 0; i < len; i++) {
            in[i] = "X.\n\r"[random() % (n % 3 ? 4 : 2)];
        }

        start = len ? random() % len : 0;
        line_start = random() % 2;

        want = in + len;
        ls = line_start;

        for (i = start; i < len; i++) {
            if (ls && in[i] == '.') {
                want = in + i;
                break;
            }

            ls = (in[i] == LF);
        }

        got = ngx_relay_parse_line_dot(in + start, in + len, line_start);

        if (got != want) {
            t_fail("input %lu: at %ld, the reference at %ld",
                   (unsigned long) n, (long) (got - in), (long) (want - in));
            break;
        }
    }

    t_end();
}


/* the parser is reusable: after NGX_OK it is back at a line start */

static void
run_two_messages(void)
{
    u_char                   *q, dst[32], in[] = "a\r\n.\r\n.b\r\n.\r\n";
    ngx_buf_t                 b;
    ngx_int_t                 rc;
    ngx_str_t                 got, want;
    ngx_relay_data_parser_t   dp;

    t_begin("two messages, one parser");

    ngx_memzero(&dp, sizeof(ngx_relay_data_parser_t));
    ngx_memzero(&b, sizeof(ngx_buf_t));
    b.pos = in;
    b.last = in + sizeof(in) - 1;

    q = dst;
    rc = ngx_relay_parse_data(&dp, &b, &q);
    t_check_rc("first", rc, NGX_OK);

    got.data = dst;
    got.len = q - dst;
    want.data = (u_char *) "a\r\n";
    want.len = 3;
    t_check_str("first", &got, &want);

    q = dst;
    rc = ngx_relay_parse_data(&dp, &b, &q);
    t_check_rc("second", rc, NGX_OK);

    got.len = q - dst;
    want.data = (u_char *) "b\r\n";
    t_check_str("second", &got, &want);

    if (b.pos != b.last) {
        t_fail("second: input not consumed");
    }

    t_end();
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

    run_two_messages();
    run_long_messages();
    run_line_dot();

    return t_summary("test_data");
}
