
/*
 * Copyright (C) The relay authors
 */


/*
 * EHLO keywords (ngx_relay_parse_reply() with rp->ehlo) and enhanced
 * status codes (ngx_relay_parse_enhanced()): the input is a server's
 * reply to EHLO, parsed whole and in pieces (the same keywords, the same
 * SIZE), and checked against a plain reference written here: split the
 * reply into lines, take each line's first word after the code.  The
 * enhanced code found in the text must be one (c.d.d, 1-3 digits).
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_relay_parse.h>

#include "fuzz.h"


static const struct {
    const char  *name;
    ngx_uint_t   ext;
} fuzz_keywords[] = {
    { "PIPELINING", NGX_RELAY_EXT_PIPELINING },
    { "SIZE", NGX_RELAY_EXT_SIZE },
    { "8BITMIME", NGX_RELAY_EXT_8BITMIME },
    { "SMTPUTF8", NGX_RELAY_EXT_SMTPUTF8 },
    { "STARTTLS", NGX_RELAY_EXT_STARTTLS },
    { "DSN", NGX_RELAY_EXT_DSN },
    { "CHUNKING", NGX_RELAY_EXT_CHUNKING },
    { "BINARYMIME", NGX_RELAY_EXT_BINARYMIME },
    { "ENHANCEDSTATUSCODES", NGX_RELAY_EXT_ENHANCED },
};


/* the keywords of the lines [start, end) of one valid reply */

static ngx_uint_t
fuzz_reference(u_char *start, u_char *end)
{
    u_char      *p, *eol, *w;
    size_t       i, len;
    ngx_uint_t   ext, line;

    ext = 0;
    line = 0;

    for (p = start; p < end; p = eol + 1, line++) {
        eol = memchr(p, LF, end - p);
        if (eol == NULL) {
            break;
        }

        if (line == 0 || eol - p < 5) {
            continue;
        }

        w = p + 4;                       /* after "250-" or "250 " */
        len = 0;

        while (w + len < eol
               && (isalnum(w[len]) || w[len] == '-'))
        {
            len++;
        }

        /* a keyword ends at a space or the line's end (CR or LF) */

        if (len == 0
            || (w + len < eol && w[len] != ' ' && w[len] != CR))
        {
            continue;
        }

        for (i = 0; i < sizeof(fuzz_keywords) / sizeof(fuzz_keywords[0]);
             i++)
        {
            if (strlen(fuzz_keywords[i].name) == len
                && strncasecmp((char *) w, fuzz_keywords[i].name, len) == 0)
            {
                ext |= fuzz_keywords[i].ext;
            }
        }
    }

    return ext;
}


static ngx_int_t
fuzz_parse(u_char *in, size_t size, fuzz_pieces_t *fp,
    ngx_relay_reply_parser_t *rp, size_t *end)
{
    u_char     *piece;
    size_t      off, n;
    ngx_int_t   rc;
    ngx_buf_t   b;

    ngx_memzero(rp, sizeof(ngx_relay_reply_parser_t));
    rp->ehlo = 1;
    off = 0;
    rc = NGX_AGAIN;

    while (off < size) {
        n = fp ? fuzz_piece(fp, 29) : size - off;
        n = n < size - off ? n : size - off;

        piece = fuzz_dup(in + off, n);

        ngx_memzero(&b, sizeof(ngx_buf_t));
        b.pos = piece;
        b.last = piece + n;

        rc = ngx_relay_parse_reply(rp, &b);

        off += b.pos - piece;
        free(piece);

        if (rc != NGX_AGAIN) {
            break;
        }
    }

    *end = off;

    return rc;
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    u_char                    *in, out[12], class;
    size_t                     e1, e2, i, dots;
    ngx_int_t                  r1, r2;
    fuzz_pieces_t              fp;
    ngx_relay_reply_parser_t   rp1, rp2;

    in = fuzz_dup(data, size);

    r1 = fuzz_parse(in, size, NULL, &rp1, &e1);

    fuzz_pieces_init(&fp, data, size);
    r2 = fuzz_parse(in, size, &fp, &rp2, &e2);

    fuzz_assert(r1 == r2);

    if (r1 == NGX_OK) {
        fuzz_assert(e1 == e2);
        fuzz_assert(rp1.ext == rp2.ext && rp1.size == rp2.size);
        fuzz_assert(rp1.size >= 0);
        fuzz_assert(rp1.size == 0 || (rp1.ext & NGX_RELAY_EXT_SIZE));

        fuzz_assert(fuzz_reference(in, in + e1) == rp1.ext);

        for (class = '2'; class <= '5'; class++) {
            if (ngx_relay_parse_enhanced(rp1.text, rp1.text_len, class, out)
                != NGX_OK)
            {
                continue;
            }

            fuzz_assert(out[0] == class && out[1] == '.');

            for (i = 2, dots = 0; out[i]; i++) {
                fuzz_assert(isdigit(out[i]) || out[i] == '.');
                dots += (out[i] == '.');
            }

            fuzz_assert(dots == 1 && i <= 9);
        }
    }

    free(in);

    return 0;
}
