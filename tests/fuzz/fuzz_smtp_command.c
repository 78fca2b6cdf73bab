
/*
 * Copyright (C) The relay authors
 */


/*
 * SMTP command lines and their arguments, as a session reads them: the
 * input is a client's byte stream, framed into lines by
 * ngx_relay_parse_line() (whole, then again in pieces as reads would
 * bring it: the same lines must come out), and each line goes to the
 * command parser and every argument parser (MAIL and RCPT with their
 * parameters, HELO, BDAT, xtext), each on an exact-size copy.  Results
 * must lie inside their input.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_relay_parse.h>

#include "fuzz.h"


#define FUZZ_MAX_LINES  256


typedef struct {
    ngx_int_t   rc;
    size_t      off;             /* of the line in the input */
    size_t      len;
} fuzz_line_t;


static void
fuzz_inside(ngx_str_t *s, u_char *start, size_t len)
{
    if (s->len == 0) {
        return;
    }

    fuzz_assert(s->data >= start && s->data + s->len <= start + len);
}


static void
fuzz_path(ngx_relay_path_t *path, u_char *start, size_t len)
{
    fuzz_inside(&path->addr, start, len);
    fuzz_inside(&path->local, start, len);
    fuzz_inside(&path->domain, start, len);
    fuzz_assert(path->addr.len <= NGX_RELAY_MAX_PATH);
    fuzz_assert(path->local.len <= NGX_RELAY_MAX_LOCAL_PART + 2);
}


static void
fuzz_arguments(ngx_str_t *arg)
{
    off_t                  size;
    ngx_int_t              rc;
    ngx_uint_t             last;
    ngx_relay_mail_args_t  ma;

    rc = ngx_relay_parse_mail_from(arg, 10485760, &ma);

    if (rc == NGX_OK || rc == NGX_RELAY_PARSE_TOO_BIG) {
        fuzz_path(&ma.path, arg->data, arg->len);
        fuzz_inside(&ma.envid, arg->data, arg->len);
        fuzz_inside(&ma.auth, arg->data, arg->len);
        fuzz_assert(ma.envid.len <= NGX_RELAY_MAX_ENVID);
        fuzz_assert(rc == NGX_OK || ma.size > 10485760);
    }

    rc = ngx_relay_parse_rcpt_to(arg, &ma);

    if (rc == NGX_OK) {
        fuzz_path(&ma.path, arg->data, arg->len);
        fuzz_inside(&ma.orcpt, arg->data, arg->len);
        fuzz_assert(ma.orcpt.len <= NGX_RELAY_MAX_ORCPT);
        fuzz_assert(!(ma.notify & NGX_RELAY_NOTIFY_NEVER)
                    || ma.notify == NGX_RELAY_NOTIFY_NEVER);
        fuzz_assert(!ma.path.null);
    }

    (void) ngx_relay_parse_helo(arg);

    if (ngx_relay_parse_bdat(arg, &size, &last) == NGX_OK) {
        fuzz_assert(size >= 0 && last <= 1);
    }

    (void) ngx_relay_check_xtext(arg);
}


static void
fuzz_line(u_char *data, size_t len)
{
    u_char               *line;
    ngx_str_t             s, arg;
    ngx_relay_command_t   cmd;

    line = fuzz_dup(data, len);
    s.data = line;
    s.len = len;

    if (ngx_relay_parse_command(&s, &cmd) == NGX_OK) {
        fuzz_inside(&cmd.name, line, len);
        fuzz_inside(&cmd.arg, line, len);
        fuzz_assert(cmd.verb <= NGX_RELAY_CMD_AUTH);

        /* the argument alone, in a buffer of its own */

        arg.data = fuzz_dup(cmd.arg.data, cmd.arg.len);
        arg.len = cmd.arg.len;
        fuzz_arguments(&arg);
        free(arg.data);
    }

    free(line);
}


/* frames the whole input at once; the lines found */

static ngx_uint_t
fuzz_frame_whole(u_char *in, size_t size, size_t max, fuzz_line_t *out)
{
    ngx_int_t                rc;
    ngx_buf_t                b;
    ngx_uint_t               n;
    ngx_relay_line_parser_t  lp;

    ngx_memzero(&lp, sizeof(ngx_relay_line_parser_t));
    ngx_memzero(&b, sizeof(ngx_buf_t));
    lp.max = max;
    b.pos = in;
    b.last = in + size;
    n = 0;

    while (n < FUZZ_MAX_LINES) {
        rc = ngx_relay_parse_line(&lp, &b);

        if (rc == NGX_AGAIN) {
            break;
        }

        fuzz_assert(rc == NGX_OK || rc == NGX_RELAY_PARSE_TOO_LONG);

        out[n].rc = rc;
        out[n].off = 0;
        out[n].len = 0;

        if (rc == NGX_OK) {
            fuzz_assert(lp.line.data >= in
                        && lp.line.data + lp.line.len <= in + size);
            fuzz_assert(lp.line.len + 1 <= max);
            out[n].off = lp.line.data - in;
            out[n].len = lp.line.len;
        }

        n++;
    }

    return n;
}


/*
 * The same bytes arriving in pieces into a 4096-octet buffer that keeps
 * its unparsed tail (moved to the front before each read), as a session
 * reads: every line must be the one framed whole.
 */

static void
fuzz_frame_pieces(u_char *in, size_t size, size_t max, fuzz_line_t *want,
    ngx_uint_t nwant, fuzz_pieces_t *fp)
{
    u_char                   *buf;
    size_t                    off, n, tail, room;
    ngx_int_t                 rc;
    ngx_buf_t                 b;
    ngx_uint_t                got;
    ngx_relay_line_parser_t   lp;

    buf = malloc(4096);
    if (buf == NULL) {
        abort();
    }

    ngx_memzero(&lp, sizeof(ngx_relay_line_parser_t));
    ngx_memzero(&b, sizeof(ngx_buf_t));
    lp.max = max;
    b.start = buf;
    b.end = buf + 4096;
    b.pos = buf;
    b.last = buf;
    off = 0;
    got = 0;

    while (got < nwant) {
        rc = ngx_relay_parse_line(&lp, &b);

        if (rc == NGX_AGAIN) {
            if (off == size) {
                break;
            }

            tail = b.last - b.pos;
            memmove(buf, b.pos, tail);
            b.pos = buf;
            b.last = buf + tail;

            room = b.end - b.last;
            fuzz_assert(room > 0);      /* max < the buffer: never full */

            n = fuzz_piece(fp, 64);
            n = n < room ? n : room;
            n = n < size - off ? n : size - off;

            memcpy(b.last, in + off, n);
            b.last += n;
            off += n;
            continue;
        }

        fuzz_assert(rc == want[got].rc);

        if (rc == NGX_OK) {
            fuzz_assert(lp.line.len == want[got].len
                        && memcmp(lp.line.data, in + want[got].off,
                                  lp.line.len) == 0);
        }

        got++;
    }

    fuzz_assert(got == nwant);

    free(buf);
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    u_char         *in;
    size_t          max;
    ngx_uint_t      i, n;
    fuzz_line_t     lines[FUZZ_MAX_LINES];
    fuzz_pieces_t   fp;

    /* the limits a session uses: commands, ESMTP MAIL/RCPT, AUTH */

    if (size == 0) {
        return 0;
    }

    max = (data[0] % 3 == 0) ? 512 : (data[0] % 3 == 1) ? 2048 : 4000;
    data++;
    size--;

    in = fuzz_dup(data, size);

    n = fuzz_frame_whole(in, size, max, lines);

    for (i = 0; i < n; i++) {
        if (lines[i].rc == NGX_OK) {
            fuzz_line(in + lines[i].off, lines[i].len);
        }
    }

    fuzz_pieces_init(&fp, data, size);
    fuzz_frame_pieces(in, size, max, lines, n, &fp);

    free(in);

    return 0;
}
