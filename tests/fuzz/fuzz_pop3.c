
/*
 * Copyright (C) The relay authors
 */


/*
 * POP3 command lines: a client's byte stream framed into lines as the
 * POP3 session reads it (whole, then in pieces: the same lines), each
 * line parsed by ngx_relay_parse_pop3_command() from an exact-size copy,
 * and its arguments by ngx_relay_parse_pop3_number().  The keyword, the
 * arguments and the rest lie inside the line; arguments hold no space.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_relay_parse.h>

#include "fuzz.h"


static void
fuzz_inside(ngx_str_t *s, u_char *start, size_t len)
{
    if (s->len == 0) {
        return;
    }

    fuzz_assert(s->data >= start && s->data + s->len <= start + len);
}


static void
fuzz_line(u_char *data, size_t len)
{
    u_char                    *line;
    ngx_str_t                  s;
    ngx_uint_t                 i, n;
    ngx_relay_pop3_command_t   cmd;

    line = fuzz_dup(data, len);
    s.data = line;
    s.len = len;

    if (ngx_relay_parse_pop3_command(&s, &cmd) == NGX_OK) {
        fuzz_assert(cmd.name.len >= 3 && cmd.name.len <= 4);
        fuzz_assert(cmd.nargs <= 2 && (!cmd.more || cmd.nargs == 2));
        fuzz_assert(cmd.verb <= NGX_RELAY_POP3_UIDL);
        fuzz_inside(&cmd.name, line, len);
        fuzz_inside(&cmd.rest, line, len);

        for (i = 0; i < cmd.nargs; i++) {
            fuzz_assert(cmd.args[i].len > 0);
            fuzz_inside(&cmd.args[i], line, len);
            fuzz_assert(memchr(cmd.args[i].data, ' ', cmd.args[i].len)
                        == NULL);

            if (ngx_relay_parse_pop3_number(&cmd.args[i], &n) == NGX_OK) {
                fuzz_assert(n <= 999999999);
            }
        }

        fuzz_assert(cmd.nargs == 0 || cmd.rest.data == cmd.args[0].data);
    }

    free(line);
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    u_char                   *in, *buf;
    size_t                    off, n, tail, room;
    ngx_int_t                 rc;
    ngx_buf_t                 b;
    ngx_uint_t                lines, got;
    fuzz_pieces_t             fp;
    ngx_relay_line_parser_t   lp;

    in = fuzz_dup(data, size);

    /* whole: every line to the command parser */

    ngx_memzero(&lp, sizeof(ngx_relay_line_parser_t));
    ngx_memzero(&b, sizeof(ngx_buf_t));
    lp.max = 512;
    b.pos = in;
    b.last = in + size;
    lines = 0;

    for ( ;; ) {
        rc = ngx_relay_parse_line(&lp, &b);

        if (rc == NGX_AGAIN) {
            break;
        }

        if (rc == NGX_OK) {
            fuzz_line(lp.line.data, lp.line.len);
        }

        lines++;
    }

    /* in pieces through a session's 4096-octet buffer: as many items */

    buf = malloc(4096);
    fuzz_assert(buf != NULL);

    ngx_memzero(&lp, sizeof(ngx_relay_line_parser_t));
    ngx_memzero(&b, sizeof(ngx_buf_t));
    lp.max = 512;
    b.pos = buf;
    b.last = buf;
    b.end = buf + 4096;
    fuzz_pieces_init(&fp, data, size);
    off = 0;
    got = 0;

    for ( ;; ) {
        rc = ngx_relay_parse_line(&lp, &b);

        if (rc != NGX_AGAIN) {
            got++;
            continue;
        }

        if (off == size) {
            break;
        }

        tail = b.last - b.pos;
        memmove(buf, b.pos, tail);
        b.pos = buf;
        b.last = buf + tail;
        room = b.end - b.last;

        n = fuzz_piece(&fp, 50);
        n = n < room ? n : room;
        n = n < size - off ? n : size - off;

        memcpy(b.last, in + off, n);
        b.last += n;
        off += n;
    }

    fuzz_assert(got == lines);

    free(buf);
    free(in);

    return 0;
}
