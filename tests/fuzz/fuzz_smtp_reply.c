
/*
 * Copyright (C) The relay authors
 */


/*
 * The SMTP client's reply parser: a server's byte stream, replies one
 * after the other (single and multiline), parsed whole and again in
 * pieces; both must give the same replies (code, text, where each ends).
 * A reply's code is 200..599, its text at most NGX_RELAY_REPLY_TEXT
 * octets without control characters.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_relay_parse.h>

#include "fuzz.h"


#define FUZZ_MAX_REPLIES  64


typedef struct {
    ngx_int_t                  rc;
    size_t                     end;
    ngx_relay_reply_parser_t   rp;
} fuzz_reply_t;


static void
fuzz_check(ngx_relay_reply_parser_t *rp)
{
    size_t  i;

    fuzz_assert(rp->code >= 200 && rp->code <= 599);
    fuzz_assert(rp->text_len <= NGX_RELAY_REPLY_TEXT);
    fuzz_assert(rp->lines >= 1 && rp->lines <= 100);

    for (i = 0; i < rp->text_len; i++) {
        fuzz_assert(rp->text[i] >= 0x20);
    }
}


/* replies of the whole input, parsed from pieces of at most max octets */

static ngx_uint_t
fuzz_replies(u_char *in, size_t size, fuzz_pieces_t *fp, fuzz_reply_t *out)
{
    u_char                    *piece;
    size_t                     off, n;
    ngx_int_t                  rc;
    ngx_buf_t                  b;
    ngx_uint_t                 nr;
    ngx_relay_reply_parser_t   rp;

    ngx_memzero(&rp, sizeof(ngx_relay_reply_parser_t));
    off = 0;
    nr = 0;

    while (off < size && nr < FUZZ_MAX_REPLIES) {
        n = fp ? fuzz_piece(fp, 37) : size - off;
        n = n < size - off ? n : size - off;

        piece = fuzz_dup(in + off, n);

        ngx_memzero(&b, sizeof(ngx_buf_t));
        b.pos = piece;
        b.last = piece + n;

        rc = ngx_relay_parse_reply(&rp, &b);

        fuzz_assert(b.pos >= piece && b.pos <= piece + n);

        off += b.pos - piece;
        free(piece);

        if (rc == NGX_AGAIN) {
            fuzz_assert(off == size || b.pos == b.last);
            continue;
        }

        out[nr].rc = rc;
        out[nr].end = off;
        out[nr].rp = rp;
        nr++;

        if (rc != NGX_OK) {
            break;                      /* the client drops the host */
        }

        fuzz_check(&rp);
        ngx_memzero(&rp, sizeof(ngx_relay_reply_parser_t));
    }

    return nr;
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    u_char          *in;
    ngx_uint_t       i, n1, n2;
    fuzz_reply_t    *whole, *pieces;
    fuzz_pieces_t    fp;

    whole = calloc(2 * FUZZ_MAX_REPLIES, sizeof(fuzz_reply_t));
    if (whole == NULL) {
        abort();
    }

    pieces = whole + FUZZ_MAX_REPLIES;

    in = fuzz_dup(data, size);

    n1 = fuzz_replies(in, size, NULL, whole);

    fuzz_pieces_init(&fp, data, size);
    n2 = fuzz_replies(in, size, &fp, pieces);

    /* an invalid reply may be found at a different octet; not a valid one */

    for (i = 0; i < n1 && i < n2; i++) {
        fuzz_assert(whole[i].rc == pieces[i].rc);

        if (whole[i].rc != NGX_OK) {
            break;
        }

        fuzz_assert(whole[i].end == pieces[i].end);
        fuzz_assert(whole[i].rp.code == pieces[i].rp.code);
        fuzz_assert(whole[i].rp.text_len == pieces[i].rp.text_len);
        fuzz_assert(memcmp(whole[i].rp.text, pieces[i].rp.text,
                           whole[i].rp.text_len) == 0);
    }

    fuzz_assert(n1 == n2);

    free(in);
    free(whole);

    return 0;
}
