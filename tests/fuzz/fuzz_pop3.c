
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
    u_char         *in;
    ngx_uint_t      i, n;
    fuzz_line_t     lines[FUZZ_MAX_LINES];
    fuzz_pieces_t   fp;

    in = fuzz_dup(data, size);

    /* as the POP3 session frames them: 512 octets at most */

    n = fuzz_frame_whole(in, size, 512, lines);

    for (i = 0; i < n; i++) {
        if (lines[i].rc == NGX_OK) {
            fuzz_line(in + lines[i].off, lines[i].len);
        }
    }

    fuzz_pieces_init(&fp, data, size);
    fuzz_frame_pieces(in, size, 512, lines, n, &fp);

    free(in);

    return 0;
}
