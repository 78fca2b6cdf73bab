
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
