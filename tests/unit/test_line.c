
/*
 * Copyright (C) The relay authors
 */


/*
 * ngx_relay_parse_line(): line framing, overlong lines, resumption.
 *
 * Each input is framed whole, split in two at every byte, and one byte at
 * a time; all must give the same trace: each line followed by "|", "!|"
 * for a TOO_LONG, and "~" then whatever is left unconsumed at the end.
 */


#include "t.h"


#define A10   "aaaaaaaaaa"
#define A100  A10 A10 A10 A10 A10 A10 A10 A10 A10 A10


static const struct {
    const char  *label;
    size_t       max;
    ngx_str_t    in;
    ngx_str_t    trace;
} cases[] = {

    { "empty input", 16, T_STR(""), T_STR("") },
    { "empty line", 16, T_STR("\r\n"), T_STR("|") },
    { "empty line, bare LF", 16, T_STR("\n"), T_STR("|") },
    { "CRLF", 16, T_STR("QUIT\r\n"), T_STR("QUIT|") },
    { "bare LF ends a line", 16, T_STR("QUIT\n"), T_STR("QUIT|") },
    { "one CR stripped only", 16, T_STR("QUIT\r\r\n"), T_STR("QUIT\r|") },
    { "bare CR inside", 16, T_STR("a\rb\r\n"), T_STR("a\rb|") },
    { "NUL inside", 16, T_STR("a\0b\r\n"), T_STR("a\0b|") },
    { "8-bit inside", 16, T_STR("\xc3\xa9\r\n"), T_STR("\xc3\xa9|") },
    { "two lines", 16, T_STR("a\r\nb\r\n"), T_STR("a|b|") },
    { "pipelined", 64,
      T_STR("MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n"),
      T_STR("MAIL FROM:<a@b>|RCPT TO:<c@d>|DATA|") },
    { "partial line stays", 16, T_STR("a\r\nbc"), T_STR("a|~bc") },
    { "partial CR stays", 16, T_STR("bc\r"), T_STR("~bc\r") },

    /* max counts octets including CR LF */

    { "exactly max with CRLF", 6, T_STR("abcd\r\n"), T_STR("abcd|") },
    { "exactly max with LF", 6, T_STR("abcde\n"), T_STR("abcde|") },
    { "one over max with CRLF", 6, T_STR("abcde\r\n"), T_STR("!|") },
    { "one over max with LF", 6, T_STR("abcdef\n"), T_STR("!|") },
    { "max 1: empty line fits", 1, T_STR("\n"), T_STR("|") },
    { "max 1: CRLF does not", 1, T_STR("\r\n"), T_STR("!|") },
    { "partial max-1 octets may still fit", 6, T_STR("abcde"),
      T_STR("~abcde") },
    { "partial max-2 and CR may still fit", 6, T_STR("abcd\r"),
      T_STR("~abcd\r") },
    { "partial of max octets is discarded", 6, T_STR("abcdef"),
      T_STR("") },
    { "partial overlong is discarded", 6, T_STR(A100), T_STR("") },

    /* after TOO_LONG the parser is back to normal */

    { "overlong, then a line", 6, T_STR("abcdefghij\r\nQUIT\r\n"),
      T_STR("!|QUIT|") },
    { "overlong, then partial", 6, T_STR("abcdefghij\r\nQU"),
      T_STR("!|~QU") },
    { "overlong twice", 6, T_STR(A100 "\r\n" A100 "\n" "x\r\n"),
      T_STR("!|!|x|") },
    { "line, overlong, line", 6, T_STR("a\r\n" A10 "\r\nb\r\n"),
      T_STR("a|!|b|") },
    { "overlong by CR only", 6, T_STR("abcde\r\nok\r\n"),
      T_STR("!|ok|") },
    { "overlong ends at buffer end", 8, T_STR(A100 "\r\n"), T_STR("!|") },
    { "command overlong at 512", 512,
      T_STR("MAIL FROM:<" A100 A100 A100 A100 A100 "@b>\r\nQUIT\r\n"),
      T_STR("!|QUIT|") },
};


/*
 * Feeds cases[n].in in pieces ending at cuts[] and records the trace.
 * Checks the buffer contract on each call as it goes.
 */

static void
run(ngx_uint_t n, size_t *cuts, ngx_uint_t ncuts, const char *how)
{
    u_char                   *buf, *trace, *t, *old;
    size_t                    off, end, tail;
    ngx_buf_t                 b;
    ngx_int_t                 rc;
    ngx_str_t                 got, *in;
    ngx_uint_t                i, calls;
    ngx_relay_line_parser_t   lp;

    in = (ngx_str_t *) &cases[n].in;

    ngx_memzero(&lp, sizeof(ngx_relay_line_parser_t));
    lp.max = cases[n].max;

    buf = malloc(in->len + 1);
    trace = malloc(2 * in->len + 16);
    if (buf == NULL || trace == NULL) {
        perror("malloc");
        exit(2);
    }

    ngx_memzero(&b, sizeof(ngx_buf_t));
    b.pos = buf;
    b.last = buf;
    t = trace;
    off = 0;
    calls = 0;

    for (i = 0; i <= ncuts; i++) {
        end = (i < ncuts) ? cuts[i] : in->len;

        tail = b.last - b.pos;
        memmove(buf, b.pos, tail);
        b.pos = buf;
        b.last = buf + tail;

        memcpy(b.last, in->data + off, end - off);
        b.last += end - off;
        off = end;

        for ( ;; ) {
            if (++calls > 10000) {
                t_fail("%s: no progress", how);
                goto done;
            }

            old = b.pos;
            rc = ngx_relay_parse_line(&lp, &b);

            if (rc == NGX_AGAIN) {
                if (b.pos != old && b.pos != b.last) {
                    t_fail("%s: NGX_AGAIN moved pos to neither pos nor last",
                           how);
                }

                break;
            }

            if (b.pos <= old || b.pos > b.last || b.pos[-1] != LF) {
                t_fail("%s: %s left pos not just past an LF", how, t_rc(rc));
                goto done;
            }

            if (rc == NGX_OK) {
                if (lp.line.data != old
                    || lp.line.data + lp.line.len > b.pos - 1)
                {
                    t_fail("%s: line is not at the old pos", how);
                    goto done;
                }

                memcpy(t, lp.line.data, lp.line.len);
                t += lp.line.len;
                *t++ = '|';

            } else if (rc == NGX_RELAY_PARSE_TOO_LONG) {
                *t++ = '!';
                *t++ = '|';

            } else {
                t_fail("%s: unexpected rc %s", how, t_rc(rc));
                goto done;
            }
        }
    }

    if (b.last > b.pos) {
        *t++ = '~';
        memcpy(t, b.pos, b.last - b.pos);
        t += b.last - b.pos;
    }

    got.data = trace;
    got.len = t - trace;

    if (got.len != cases[n].trace.len
        || memcmp(got.data, cases[n].trace.data, got.len) != 0)
    {
        t_fail("%s: trace \"%s\", want \"%s\"", how,
               t_esc(got.data, got.len),
               t_esc(cases[n].trace.data, cases[n].trace.len));
    }

done:

    free(buf);
    free(trace);
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

    return t_summary("test_line");
}
