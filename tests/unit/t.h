
/*
 * Copyright (C) The relay authors
 */


/*
 * A tiny harness for the table-driven unit tests of the parsers: cases as
 * in tests/tcase.h (t_begin(), t_fail() with the bytes escaped by t_esc(),
 * t_end()), checks of results, and feeding a parser in every split.
 *
 * Inputs are copied into heap buffers of their exact size before a parser
 * sees them, so that a read past "last" is caught by AddressSanitizer.
 */


#ifndef _T_H_INCLUDED_
#define _T_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_relay_parse.h>

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../tcase.h"


#define T_STR(s)        { sizeof(s) - 1, (u_char *) s }
#define T_NONE          { 0, NULL }


/* printable form of arbitrary bytes; a few rotating static buffers */

static ngx_inline const char *
t_esc(const u_char *p, size_t len)
{
    static char        bufs[4][4096];
    static ngx_uint_t  n;

    char    *b, *q;
    size_t   i;

    b = bufs[n++ % 4];
    q = b;

    if (p == NULL) {
        return "(null)";
    }

    for (i = 0; i < len && q < b + sizeof(bufs[0]) - 8; i++) {
        switch (p[i]) {
        case '\r':
            *q++ = '\\'; *q++ = 'r';
            break;
        case '\n':
            *q++ = '\\'; *q++ = 'n';
            break;
        case '\\':
            *q++ = '\\'; *q++ = '\\';
            break;
        default:
            if (p[i] < 0x20 || p[i] >= 0x7f) {
                q += sprintf(q, "\\x%02x", p[i]);

            } else {
                *q++ = p[i];
            }
        }
    }

    *q = '\0';

    return b;
}


static ngx_inline const char *
t_rc(ngx_int_t rc)
{
    switch (rc) {
    case NGX_OK:
        return "NGX_OK";
    case NGX_AGAIN:
        return "NGX_AGAIN";
    case NGX_ERROR:
        return "NGX_ERROR";
    case NGX_RELAY_PARSE_INVALID:
        return "INVALID";
    case NGX_RELAY_PARSE_TOO_LONG:
        return "TOO_LONG";
    case NGX_RELAY_PARSE_BAD_ADDRESS:
        return "BAD_ADDRESS";
    case NGX_RELAY_PARSE_BAD_PARAM:
        return "BAD_PARAM";
    case NGX_RELAY_PARSE_TOO_BIG:
        return "TOO_BIG";
    }

    return "(unknown rc)";
}


static ngx_inline void
t_check_rc(const char *what, ngx_int_t got, ngx_int_t want)
{
    if (got != want) {
        t_fail("%s: rc %s, want %s", what, t_rc(got), t_rc(want));
    }
}


/* got is a result string; want is a C string or NULL for "empty" */

static ngx_inline void
t_check_str(const char *what, ngx_str_t *got, ngx_str_t *want)
{
    if (got->len != want->len
        || (want->len && (got->data == NULL
                          || memcmp(got->data, want->data, want->len) != 0)))
    {
        t_fail("%s: \"%s\", want \"%s\"", what,
               t_esc(got->data, got->len), t_esc(want->data, want->len));
    }
}


static ngx_inline void
t_check_uint(const char *what, ngx_uint_t got, ngx_uint_t want)
{
    if (got != want) {
        t_fail("%s: %lu, want %lu", what,
               (unsigned long) got, (unsigned long) want);
    }
}


/* an exact-size heap copy; the caller frees it */

static ngx_inline u_char *
t_dup(ngx_str_t *s)
{
    u_char  *p;

    p = malloc(s->len ? s->len : 1);
    if (p == NULL) {
        perror("malloc");
        exit(2);
    }

    if (s->len) {
        memcpy(p, s->data, s->len);
    }

    return p;
}


/*
 * Frames "bytes" with the line parser fed in pieces that end at each
 * offset of cuts[] (then the rest), the way a session reads: the buffer
 * keeps its unparsed tail and new input is appended.  The tail is moved to
 * the start of the buffer between reads, so a parser that kept a pointer
 * into the old position would be caught.  Returns the rc of the first
 * complete result, the line in *line (a copy in out[]).
 */

static ngx_inline ngx_int_t
t_frame_line(ngx_str_t *bytes, size_t max, size_t *cuts, ngx_uint_t ncuts,
    u_char *out, ngx_str_t *line)
{
    u_char                   *buf;
    size_t                    off, end, tail;
    ngx_buf_t                 b;
    ngx_int_t                 rc;
    ngx_uint_t                i;
    ngx_relay_line_parser_t   lp;

    ngx_memzero(&lp, sizeof(ngx_relay_line_parser_t));
    lp.max = max;

    buf = malloc(bytes->len + 1);
    if (buf == NULL) {
        perror("malloc");
        exit(2);
    }

    ngx_memzero(&b, sizeof(ngx_buf_t));
    b.pos = buf;
    b.last = buf;
    off = 0;
    rc = NGX_AGAIN;

    for (i = 0; i <= ncuts; i++) {
        end = (i < ncuts) ? cuts[i] : bytes->len;

        /* move the tail to the front, then append */

        tail = b.last - b.pos;
        memmove(buf, b.pos, tail);
        b.pos = buf;
        b.last = buf + tail;

        memcpy(b.last, bytes->data + off, end - off);
        b.last += end - off;
        off = end;

        rc = ngx_relay_parse_line(&lp, &b);

        if (rc != NGX_AGAIN) {
            line->data = out;
            line->len = 0;

            if (rc == NGX_OK && lp.line.len) {
                memcpy(out, lp.line.data, lp.line.len);
                line->len = lp.line.len;
            }

            break;
        }
    }

    free(buf);

    return rc;
}


/*
 * Feeds case n of an input of len octets to run() whole, split in two at
 * every octet, and one octet at a time: a resumable parser must give the
 * same result every way.
 */

typedef void (*t_run_pt)(ngx_uint_t n, size_t *cuts, ngx_uint_t ncuts,
    const char *how);

static ngx_inline void
t_feed_every_way(ngx_uint_t n, size_t len, t_run_pt run)
{
    char     how[64];
    size_t  *cuts, k;

    run(n, NULL, 0, "whole");

    for (k = 1; k < len; k++) {
        snprintf(how, sizeof(how), "split at %lu", (unsigned long) k);
        run(n, &k, 1, how);
    }

    if (len > 1) {
        cuts = malloc(len * sizeof(size_t));
        if (cuts == NULL) {
            perror("malloc");
            exit(2);
        }

        for (k = 0; k < len - 1; k++) {
            cuts[k] = k + 1;
        }

        run(n, cuts, len - 1, "byte at a time");
        free(cuts);
    }
}


/*
 * A line checked every way a session could get it: whole (an exact-size
 * copy), and framed by the line parser (with the limit max) from the
 * line and CRLF split in two at every octet and one octet at a time; the
 * framed line must be the line.  check(n, line, how) judges each.
 */

typedef void (*t_check_line_pt)(ngx_uint_t n, ngx_str_t *line,
    const char *how);

static ngx_inline void
t_line_every_way(ngx_uint_t n, const ngx_str_t *text, size_t max,
    t_check_line_pt check)
{
    char        how[64];
    u_char     *framed, *out;
    size_t      k, *cuts;
    ngx_int_t   rc;
    ngx_str_t   line, crlf;
    ngx_uint_t  i;

    line.len = text->len;
    line.data = t_dup((ngx_str_t *) text);
    check(n, &line, "whole");
    free(line.data);

    crlf.len = text->len + 2;
    framed = malloc(crlf.len);
    out = malloc(crlf.len);
    cuts = malloc(crlf.len * sizeof(size_t));
    if (framed == NULL || out == NULL || cuts == NULL) {
        perror("malloc");
        exit(2);
    }

    memcpy(framed, text->data, text->len);
    framed[crlf.len - 2] = CR;
    framed[crlf.len - 1] = LF;
    crlf.data = framed;

    for (k = 0; k < crlf.len - 1; k++) {
        cuts[k] = k + 1;
    }

    for (i = 0; i <= crlf.len; i++) {
        if (i < crlf.len) {
            snprintf(how, sizeof(how), "framed, split at %lu",
                     (unsigned long) i);
            k = i;
            rc = t_frame_line(&crlf, max, &k, 1, out, &line);

        } else {
            snprintf(how, sizeof(how), "framed, byte at a time");
            rc = t_frame_line(&crlf, max, cuts, crlf.len - 1, out, &line);
        }

        if (rc != NGX_OK) {
            t_fail("%s: line parser gave %s", how, t_rc(rc));
            continue;
        }

        if (line.len != text->len
            || (line.len && memcmp(line.data, text->data, line.len) != 0))
        {
            t_fail("%s: framed \"%s\"", how, t_esc(line.data, line.len));
            continue;
        }

        line.data = t_dup(&line);
        check(n, &line, how);
        free(line.data);
    }

    free(framed);
    free(out);
    free(cuts);
}


/*
 * Frames arg as "MAIL arg" or "RCPT arg" with CRLF, feeds it through the
 * line parser split at every octet, checks the command parser gives the
 * verb, and hands the argument it found to check() each time.
 */

typedef void (*t_check_arg_pt)(ngx_uint_t n, ngx_str_t *arg, const char *how);

static ngx_inline void
t_framed_command(ngx_uint_t n, ngx_uint_t mail, const ngx_str_t *arg,
    t_check_arg_pt check)
{
    char                  how[64];
    u_char               *framed, *out;
    size_t                k, len;
    ngx_int_t             rc;
    ngx_str_t             bytes, line;
    ngx_relay_command_t   cmd;

    len = 5 + arg->len + 2;
    framed = malloc(len);
    out = malloc(len);
    if (framed == NULL || out == NULL) {
        perror("malloc");
        exit(2);
    }

    memcpy(framed, mail ? "MAIL " : "RCPT ", 5);
    memcpy(framed + 5, arg->data, arg->len);
    framed[len - 2] = CR;
    framed[len - 1] = LF;

    bytes.data = framed;
    bytes.len = len;

    for (k = 0; k < len; k++) {
        snprintf(how, sizeof(how), "framed, split at %lu", (unsigned long) k);

        rc = t_frame_line(&bytes, 1024, &k, 1, out, &line);
        if (rc != NGX_OK) {
            t_fail("%s: line parser gave %s", how, t_rc(rc));
            continue;
        }

        rc = ngx_relay_parse_command(&line, &cmd);
        if (rc != NGX_OK) {
            t_fail("%s: command parser gave %s", how, t_rc(rc));
            continue;
        }

        t_check_uint("verb", cmd.verb, mail ? NGX_RELAY_CMD_MAIL
                                            : NGX_RELAY_CMD_RCPT);

        check(n, &cmd.arg, how);
    }

    free(framed);
    free(out);
}


#endif /* _T_H_INCLUDED_ */
