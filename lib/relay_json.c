
/*
 * Copyright (C) The relay authors
 */


/*
 * JSON string escaping, one place for every writer of JSON: relayctl's
 * --json output and the node's accounting log, whose strings come from
 * clients and remote servers (NULs, quotes, broken UTF-8) and must parse
 * all the same.
 */


#include <stdint.h>
#include <string.h>

#include "relay_json.h"


static size_t relay_json_utf8(const unsigned char *p, size_t len);
static unsigned char *relay_json_put(unsigned char *dst, size_t *n,
    const char *s, size_t len);


size_t
relay_json_escape(unsigned char *dst, const unsigned char *src, size_t len)
{
    size_t                n, seq;
    char                  hex[8];
    unsigned char         c;
    const char           *esc;
    const unsigned char  *p, *q, *last;

    static const char  digits[] = "0123456789abcdef";

    n = 0;
    last = src + len;

    for (p = src; p < last; /* void */) {

        /* a run of printable ASCII but '"' and '\\': at once */

        for (q = p;
             q < last && *q >= 0x20 && *q < 0x7f && *q != '"' && *q != '\\';
             q++)
        {
            /* void */
        }

        if (q > p) {
            dst = relay_json_put(dst, &n, (const char *) p, q - p);
            p = q;
            continue;
        }

        c = *p;

        if (c >= 0x80) {
            seq = relay_json_utf8(p, last - p);

            if (seq == 0) {
                dst = relay_json_put(dst, &n, "\\ufffd", 6);
                p++;
                continue;
            }

            dst = relay_json_put(dst, &n, (const char *) p, seq);
            p += seq;
            continue;
        }

        switch (c) {
        case '"':
            esc = "\\\"";
            break;
        case '\\':
            esc = "\\\\";
            break;
        case '\n':
            esc = "\\n";
            break;
        case '\r':
            esc = "\\r";
            break;
        case '\t':
            esc = "\\t";
            break;
        case '\b':
            esc = "\\b";
            break;
        case '\f':
            esc = "\\f";
            break;
        default:
            esc = NULL;
        }

        if (esc) {
            dst = relay_json_put(dst, &n, esc, 2);

        } else if (c < 0x20 || c == 0x7f) {
            memcpy(hex, "\\u00", 4);
            hex[4] = digits[c >> 4];
            hex[5] = digits[c & 0xf];
            dst = relay_json_put(dst, &n, hex, 6);

        } else {
            dst = relay_json_put(dst, &n, (const char *) p, 1);
        }

        p++;
    }

    return n;
}


/* the length of the valid UTF-8 sequence at p, or 0 */

static size_t
relay_json_utf8(const unsigned char *p, size_t len)
{
    size_t    n, i;
    uint32_t  cp;

    if (p[0] >= 0xc2 && p[0] <= 0xdf) {
        n = 2;
        cp = p[0] & 0x1f;

    } else if (p[0] >= 0xe0 && p[0] <= 0xef) {
        n = 3;
        cp = p[0] & 0x0f;

    } else if (p[0] >= 0xf0 && p[0] <= 0xf4) {
        n = 4;
        cp = p[0] & 0x07;

    } else {
        return 0;
    }

    if (len < n) {
        return 0;
    }

    for (i = 1; i < n; i++) {
        if ((p[i] & 0xc0) != 0x80) {
            return 0;
        }

        cp = (cp << 6) | (p[i] & 0x3f);
    }

    if ((n == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff)))
        || (n == 4 && (cp < 0x10000 || cp > 0x10ffff)))
    {
        return 0;
    }

    return n;
}


static unsigned char *
relay_json_put(unsigned char *dst, size_t *n, const char *s, size_t len)
{
    *n += len;

    if (dst == NULL) {
        return NULL;
    }

    memcpy(dst, s, len);

    return dst + len;
}
