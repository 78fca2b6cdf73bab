
/*
 * Copyright (C) The relay authors
 */


/*
 * What the fuzz harnesses share: an exact-size heap copy of the input (so
 * that AddressSanitizer sees a read past it), a deterministic stream of
 * piece sizes derived from the input (to feed resumable parsers in
 * pieces and compare with feeding them whole), and a failure that
 * libFuzzer reports as a crash.
 */


#ifndef _FUZZ_H_INCLUDED_
#define _FUZZ_H_INCLUDED_


#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


#define fuzz_assert(cond)                                                     \
    do {                                                                      \
        if (!(cond)) {                                                        \
            fprintf(stderr, "%s:%d: assertion \"%s\" failed\n", __FILE__,     \
                    __LINE__, #cond);                                         \
            abort();                                                          \
        }                                                                     \
    } while (0)


static inline unsigned char *
fuzz_dup(const uint8_t *data, size_t size)
{
    unsigned char  *p;

    p = malloc(size ? size : 1);
    if (p == NULL) {
        abort();
    }

    if (size) {
        memcpy(p, data, size);
    }

    return p;
}


/* piece sizes 1..max, from a seed taken from the input */

typedef struct {
    uint32_t  state;
} fuzz_pieces_t;


static inline void
fuzz_pieces_init(fuzz_pieces_t *fp, const uint8_t *data, size_t size)
{
    size_t    i;
    uint32_t  h;

    h = 2166136261u;

    for (i = 0; i < size && i < 64; i++) {
        h = (h ^ data[i]) * 16777619u;
    }

    fp->state = h | 1;
}


static inline size_t
fuzz_piece(fuzz_pieces_t *fp, size_t max)
{
    fp->state ^= fp->state << 13;
    fp->state ^= fp->state >> 17;
    fp->state ^= fp->state << 5;

    return 1 + fp->state % max;
}


#if defined(_NGX_CORE_H_INCLUDED_)

/* a result of a parser lies inside its input */

static inline void
fuzz_inside(ngx_str_t *s, u_char *start, size_t len)
{
    if (s->len == 0) {
        return;
    }

    fuzz_assert(s->data >= start && s->data + s->len <= start + len);
}

#endif


#if defined(_NGX_RELAY_PARSE_H_INCLUDED_)

/*
 * Line framing as the sessions read: the whole input at once, then the
 * same bytes again in pieces, which must give the same lines.
 */

#define FUZZ_MAX_LINES  256


typedef struct {
    ngx_int_t   rc;
    size_t      off;             /* of the line in the input */
    size_t      len;
} fuzz_line_t;


/* frames the whole input at once; the lines found */

static inline ngx_uint_t
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

static inline void
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

#endif


#endif /* _FUZZ_H_INCLUDED_ */
