
/*
 * Copyright (C) The relay authors
 */


/*
 * AUTH PLAIN and LOGIN responses (SMTP and POP3): the input is the line
 * a client sends, decoded by ngx_relay_parse_auth_response() into a
 * buffer of the sessions' size and, for a buffer one octet too small,
 * refused rather than overrun; decoded octets must be what a plain
 * RFC 4648 decoder written here gives.  The result goes to
 * ngx_relay_parse_auth_plain(), whose user and password lie inside it.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_relay_parse.h>

#include "fuzz.h"


static int
fuzz_b64(u_char ch)
{
    const char  *a, *p;

    a = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    p = ch ? strchr(a, ch) : NULL;

    return p ? (int) (p - a) : -1;
}


/* octets of a valid encoding, or -1 */

static ssize_t
fuzz_reference(u_char *in, size_t len, u_char *out)
{
    size_t    i, n;
    uint32_t  bits;
    ssize_t   o;

    while (len && in[len - 1] == '=') {
        len--;
    }

    bits = 0;
    o = 0;

    for (i = 0, n = 0; i < len; i++) {
        if (fuzz_b64(in[i]) < 0) {
            return -1;
        }

        bits = (bits << 6) | fuzz_b64(in[i]);

        if (++n % 4 == 0) {
            out[o++] = bits >> 16;
            out[o++] = bits >> 8;
            out[o++] = bits;
        }
    }

    if (n % 4 == 1) {
        return -1;
    }

    if (n % 4 == 2) {
        out[o++] = bits >> 4;
    }

    if (n % 4 == 3) {
        out[o++] = bits >> 10;
        out[o++] = bits >> 2;
    }

    return o;
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    u_char     *line, *buf, *ref;
    size_t      room;
    ssize_t     n;
    ngx_int_t   rc;
    ngx_str_t   l, decoded, user, passwd;

    if (size > 4000) {                   /* an AUTH line's limit */
        return 0;
    }

    line = fuzz_dup(data, size);
    l.data = line;
    l.len = size;

    room = 3 * (size / 4) + 3;
    buf = malloc(room);
    ref = malloc(room);
    fuzz_assert(buf != NULL && ref != NULL);

    rc = ngx_relay_parse_auth_response(&l, buf, room, &decoded);

    if (rc == NGX_DECLINED) {
        fuzz_assert(size == 1 && data[0] == '*');
        goto done;
    }

    if (rc != NGX_OK) {
        fuzz_assert(rc == NGX_RELAY_PARSE_INVALID);
        goto done;
    }

    fuzz_assert(decoded.data == buf && decoded.len <= room);

    if (!(size == 1 && data[0] == '=')) {
        n = fuzz_reference(line, size, ref);
        fuzz_assert(n == (ssize_t) decoded.len);
        fuzz_assert(memcmp(ref, buf, decoded.len) == 0);
    }

    if (ngx_relay_parse_auth_plain(&decoded, &user, &passwd) == NGX_OK) {
        fuzz_assert(user.len > 0 && passwd.len > 0);
        fuzz_assert(user.data >= decoded.data
                    && user.data + user.len <= decoded.data + decoded.len);
        fuzz_assert(passwd.data >= decoded.data
                    && passwd.data + passwd.len
                       <= decoded.data + decoded.len);
    }

    /* one octet less room than needed: refused, never overrun */

    if (decoded.len) {
        room = decoded.len - 1;
        free(buf);
        buf = malloc(room ? room : 1);
        fuzz_assert(buf != NULL);
        fuzz_assert(ngx_relay_parse_auth_response(&l, buf, room, &decoded)
                    == NGX_RELAY_PARSE_INVALID);
    }

done:

    free(line);
    free(buf);
    free(ref);

    return 0;
}
