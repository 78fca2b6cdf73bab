
/*
 * Copyright (C) The relay authors
 */


/*
 * The DATA state machine, and BDAT framing as the session does it.
 *
 * DATA (first octet even): the input after "354" goes through
 * ngx_relay_parse_data() whole, and again in pieces with the output room
 * a session gives it (its input plus one octet); both must agree with
 * each other and with the plain reference of RFC 5321 4.5.2 in
 * tests/data_reference.h, octet by octet (the parser copies runs of
 * regular lines found 16 octets at a time, and the rest of a line found
 * with memchr()): the same output, the same end, the same bare CR / bare
 * LF flags.  The delivery's search for dots to stuff
 * (ngx_relay_parse_line_dot()) is checked on the same input against an
 * octet loop.
 *
 * BDAT (first octet odd): the input is a client's stream of "BDAT n
 * [LAST]" commands and chunks; commands are framed and parsed as the
 * session does, and each chunk is consumed by its size: whatever follows
 * must again be framed as a command, and LAST ends the message.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_relay_parse.h>

#include "fuzz.h"
#include "../data_reference.h"


typedef data_result_t  fuzz_data_t;


static void
fuzz_parse(u_char *in, size_t size, u_char *out, fuzz_pieces_t *fp,
    fuzz_data_t *r)
{
    u_char                   *dst, *piece;
    size_t                    off, n;
    ngx_int_t                 rc;
    ngx_buf_t                 b;
    ngx_relay_data_parser_t   dp;

    ngx_memzero(&dp, sizeof(ngx_relay_data_parser_t));
    ngx_memzero(r, sizeof(fuzz_data_t));

    dst = out;
    off = 0;
    rc = NGX_AGAIN;

    while (off < size) {
        n = fp ? fuzz_piece(fp, 97) : size;
        n = n < size - off ? n : size - off;

        /* each piece in its own buffer, its output room exact */

        piece = fuzz_dup(in + off, n);

        ngx_memzero(&b, sizeof(ngx_buf_t));
        b.pos = piece;
        b.last = piece + n;

        rc = ngx_relay_parse_data(&dp, &b, &dst);

        fuzz_assert(b.pos >= piece && b.pos <= piece + n);
        fuzz_assert(rc == NGX_OK || (rc == NGX_AGAIN && b.pos == b.last));
        fuzz_assert((size_t) (dst - out) <= off + (b.pos - piece) + 1);

        off += b.pos - piece;
        free(piece);

        if (rc == NGX_OK) {
            break;
        }
    }

    r->rc = rc;
    r->consumed = off;
    r->out_len = dst - out;
    r->bare_cr = dp.bare_cr;
    r->bare_lf = dp.bare_lf;
}


static void fuzz_line_dot(u_char *in, size_t size, ngx_uint_t line_start);


static void
fuzz_data(u_char *in, size_t size, const uint8_t *seed, size_t seed_len)
{
    u_char         *o1, *o2, *o3;
    fuzz_data_t     whole, pieces, ref;
    fuzz_pieces_t   fp;

    o1 = malloc(size + 1);
    o2 = malloc(size + 1);
    o3 = malloc(2 * size + 2);
    if (o1 == NULL || o2 == NULL || o3 == NULL) {
        abort();
    }

    fuzz_parse(in, size, o1, NULL, &whole);

    fuzz_pieces_init(&fp, seed, seed_len);
    fuzz_parse(in, size, o2, &fp, &pieces);

    data_reference(in, size, o3, &ref);

    fuzz_assert(whole.rc == ref.rc && pieces.rc == ref.rc);
    fuzz_assert(whole.consumed == ref.consumed
                && pieces.consumed == ref.consumed);
    fuzz_assert(whole.out_len == ref.out_len
                && pieces.out_len == ref.out_len);
    fuzz_assert(memcmp(o1, o3, ref.out_len) == 0
                && memcmp(o2, o3, ref.out_len) == 0);
    fuzz_assert(whole.bare_cr == ref.bare_cr
                && pieces.bare_cr == ref.bare_cr);
    fuzz_assert(whole.bare_lf == ref.bare_lf
                && pieces.bare_lf == ref.bare_lf);

    /* the end marker is CRLF "." CRLF, only ever at a line start */

    if (ref.rc == NGX_OK) {
        fuzz_assert(ref.consumed >= 3
                    && memcmp(in + ref.consumed - 3, ".\r\n", 3) == 0);
        fuzz_assert(ref.consumed == 3
                    || (in[ref.consumed - 4] == LF
                        && ref.consumed >= 5 && in[ref.consumed - 5] == CR));
    }

    fuzz_line_dot(in, size, 0);
    fuzz_line_dot(in, size, 1);

    free(o1);
    free(o2);
    free(o3);
}


/* the first "." at a line start, from every offset, against an octet loop */

static void
fuzz_line_dot(u_char *in, size_t size, ngx_uint_t line_start)
{
    u_char      *want;
    size_t       start, i;
    ngx_uint_t   ls;

    for (start = 0; start <= size; start += 1 + start / 8) {
        want = in + size;
        ls = line_start;

        for (i = start; i < size; i++) {
            if (ls && in[i] == '.') {
                want = in + i;
                break;
            }

            ls = (in[i] == LF);
        }

        fuzz_assert(ngx_relay_parse_line_dot(in + start, in + size,
                                             line_start)
                    == want);
    }
}


/* BDAT framing: commands and counted chunks, as the session reads them */

static void
fuzz_bdat(u_char *in, size_t size)
{
    off_t                    chunk;
    u_char                  *line;
    size_t                   pos, n;
    ngx_str_t                s;
    ngx_int_t                rc;
    ngx_buf_t                b;
    ngx_uint_t               last, chunks;
    ngx_relay_command_t      cmd;
    ngx_relay_line_parser_t  lp;

    ngx_memzero(&lp, sizeof(ngx_relay_line_parser_t));
    lp.max = 512;
    pos = 0;
    chunks = 0;

    while (pos < size) {
        ngx_memzero(&b, sizeof(ngx_buf_t));
        b.pos = in + pos;
        b.last = in + size;

        rc = ngx_relay_parse_line(&lp, &b);

        if (rc == NGX_AGAIN) {
            return;
        }

        pos = b.pos - in;

        if (rc != NGX_OK) {
            continue;
        }

        line = fuzz_dup(lp.line.data, lp.line.len);
        s.data = line;
        s.len = lp.line.len;

        if (ngx_relay_parse_command(&s, &cmd) != NGX_OK
            || cmd.verb != NGX_RELAY_CMD_BDAT
            || ngx_relay_parse_bdat(&cmd.arg, &chunk, &last) != NGX_OK)
        {
            free(line);
            continue;                   /* a session: 5xx, the next line */
        }

        free(line);

        fuzz_assert(chunk >= 0);

        /* the chunk's octets are data, whatever they look like */

        n = (size_t) chunk < size - pos ? (size_t) chunk : size - pos;
        pos += n;
        chunks++;

        if (last) {
            break;                      /* the message ends: commands */
        }
    }

    fuzz_assert(pos <= size);
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    u_char  *in;

    if (size == 0) {
        return 0;
    }

    in = fuzz_dup(data + 1, size - 1);

    if (data[0] & 1) {
        fuzz_bdat(in, size - 1);

    } else {
        fuzz_data(in, size - 1, data, size);
    }

    free(in);

    return 0;
}
