
/*
 * Copyright (C) The relay authors
 */


/*
 * CRC-32 (the zlib and gzip one) of the journal's records, which carry
 * whole messages: every accepted octet goes through it once.  zlib's
 * table-driven loop does about 2 GB/s here, which at 100 KB messages was
 * 6 % of a worker's CPU.  On x86-64 with PCLMULQDQ the bulk is folded with
 * carry-less multiplications instead, 64 octets a round in four lanes
 * (the method of Intel's white paper "Fast CRC Computation for Generic
 * Polynomials Using PCLMULQDQ Instruction", 2009).
 *
 * Folding keeps the data's remainder modulo the polynomial in a 128-bit
 * lane, so instead of a Barrett reduction the folded lane's 16 octets go
 * through zlib's crc32(): their CRC from a zero register is the CRC of the
 * data folded into them.  Short buffers, the tail under 16 octets and
 * other machines use zlib all the way.  The result is the same value as
 * crc32() in every case (tests/unit/test_crc32.c), so the journal's format
 * does not change.
 *
 * The constants are x^n mod P(x), bit-reflected, for the folding distances
 * 512 and 128 bits (the exponents are those distances plus and minus 32,
 * one less for the reflected product's shift).
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <zlib.h>
#include <ngx_relay_crc32.h>


#if (defined __x86_64__ && (defined __GNUC__ || defined __clang__))

#include <immintrin.h>

#define NGX_RELAY_CRC32_FOLD 1

#define NGX_RELAY_CRC32_K1   0x154442bd4ULL     /* x^(512+32-1), reflected */
#define NGX_RELAY_CRC32_K2   0x1c6e41596ULL     /* x^(512-32-1) */
#define NGX_RELAY_CRC32_K3   0x1751997d0ULL     /* x^(128+32-1) */
#define NGX_RELAY_CRC32_K4   0x0ccaa009eULL     /* x^(128-32-1) */


static uint32_t ngx_relay_crc32_fold(uint32_t crc, const u_char *p,
    size_t len);
static int ngx_relay_crc32_have_clmul(void);

#endif


#define NGX_RELAY_CRC32_FOLD_MIN  256      /* below: the set-up costs more */


uint32_t
ngx_relay_crc32(uint32_t crc, const void *buf, size_t len)
{
#if (NGX_RELAY_CRC32_FOLD)
    if (len >= NGX_RELAY_CRC32_FOLD_MIN && ngx_relay_crc32_have_clmul()) {
        return ngx_relay_crc32_fold(crc, buf, len);
    }
#endif

    return (uint32_t) crc32_z(crc, buf, len);
}


#if (NGX_RELAY_CRC32_FOLD)

/*
 * libgcc fills in the CPU's features before main(): reading them is two
 * loads, and threads calling this at once share nothing they write.
 */

static int
ngx_relay_crc32_have_clmul(void)
{
    return __builtin_cpu_supports("pclmul")
           && __builtin_cpu_supports("sse4.1");
}


/* the lane moved "distance" bits on: its halves times the two constants */

__attribute__((target("pclmul,sse4.1")))
static inline __m128i
ngx_relay_crc32_fold_lane(__m128i lane, __m128i k)
{
    return _mm_xor_si128(_mm_clmulepi64_si128(lane, k, 0x00),
                         _mm_clmulepi64_si128(lane, k, 0x11));
}


__attribute__((target("pclmul,sse4.1")))
static uint32_t
ngx_relay_crc32_fold(uint32_t crc, const u_char *p, size_t len)
{
    __m128i        x0, x1, x2, x3, k;
    u_char         lane[16];

    /* zlib's register starts inverted: the inversion goes into the data */

    x0 = _mm_xor_si128(_mm_loadu_si128((const __m128i *) p),
                       _mm_cvtsi32_si128((int) ~crc));
    x1 = _mm_loadu_si128((const __m128i *) (p + 16));
    x2 = _mm_loadu_si128((const __m128i *) (p + 32));
    x3 = _mm_loadu_si128((const __m128i *) (p + 48));
    p += 64;
    len -= 64;

    k = _mm_set_epi64x(NGX_RELAY_CRC32_K2, NGX_RELAY_CRC32_K1);

    while (len >= 64) {
        x0 = _mm_xor_si128(ngx_relay_crc32_fold_lane(x0, k),
                           _mm_loadu_si128((const __m128i *) p));
        x1 = _mm_xor_si128(ngx_relay_crc32_fold_lane(x1, k),
                           _mm_loadu_si128((const __m128i *) (p + 16)));
        x2 = _mm_xor_si128(ngx_relay_crc32_fold_lane(x2, k),
                           _mm_loadu_si128((const __m128i *) (p + 32)));
        x3 = _mm_xor_si128(ngx_relay_crc32_fold_lane(x3, k),
                           _mm_loadu_si128((const __m128i *) (p + 48)));
        p += 64;
        len -= 64;
    }

    /* four lanes into one, then the rest 16 octets at a time */

    k = _mm_set_epi64x(NGX_RELAY_CRC32_K4, NGX_RELAY_CRC32_K3);

    x0 = _mm_xor_si128(ngx_relay_crc32_fold_lane(x0, k), x1);
    x0 = _mm_xor_si128(ngx_relay_crc32_fold_lane(x0, k), x2);
    x0 = _mm_xor_si128(ngx_relay_crc32_fold_lane(x0, k), x3);

    while (len >= 16) {
        x0 = _mm_xor_si128(ngx_relay_crc32_fold_lane(x0, k),
                           _mm_loadu_si128((const __m128i *) p));
        p += 16;
        len -= 16;
    }

    /*
     * The lane from a zero register: zlib's crc32() starts from ~crc, so
     * ~0; its result is then the CRC so far, and the tail goes on from it.
     */

    _mm_storeu_si128((__m128i *) lane, x0);

    crc = (uint32_t) crc32_z(0xffffffff, lane, sizeof(lane));

    return (uint32_t) crc32_z(crc, p, len);
}

#endif
