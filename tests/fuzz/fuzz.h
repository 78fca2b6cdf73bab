
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


#endif /* _FUZZ_H_INCLUDED_ */
