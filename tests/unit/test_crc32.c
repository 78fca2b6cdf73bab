
/*
 * Copyright (C) The relay authors
 */


/*
 * link: module/ngx_relay_crc32.c -lz
 *
 * ngx_relay_crc32() against zlib's crc32(): the same value for every
 * length around the folding's edges (under 256 octets zlib does it all;
 * then 64-octet rounds, 16-octet steps and a tail), at every alignment,
 * from a running CRC (how the journal chains header, id and data) and
 * over a whole message.  A wrong folding constant or a lost tail octet
 * changes the value for most lengths.
 */


#include "t.h"
#include <ngx_relay_crc32.h>
#include <zlib.h>


#define T_BUF  (128 * 1024)


static void
t_same(const char *label, uint32_t start, const u_char *p, size_t len)
{
    uint32_t  want, got;

    want = (uint32_t) crc32(start, p, len);
    got = ngx_relay_crc32(start, p, len);

    if (got != want) {
        t_fail("%s: length %lu, from %08x: %08x, zlib %08x", label,
               (unsigned long) len, (unsigned) start, (unsigned) got,
               (unsigned) want);
    }
}


int
main(void)
{
    u_char      *buf, *p;
    size_t       len, align;
    uint32_t     seed, running;
    ngx_uint_t   i;

    buf = malloc(T_BUF + 16);
    if (buf == NULL) {
        return 1;
    }

    for (seed = 2463534242u, i = 0; i < T_BUF + 16; i++) {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        buf[i] = (u_char) seed;
    }

    t_begin("every length up to 1100, every alignment");

    for (align = 0; align < 16; align++) {
        for (len = 0; len <= 1100; len++) {
            t_same("fresh", 0, buf + align, len);
        }
    }

    t_end();

    t_begin("from a running CRC");

    for (len = 0; len <= 1100; len += 7) {
        t_same("running", 0xdeadbeef ^ (uint32_t) len, buf + 3, len);
    }

    t_end();

    t_begin("a 100 KB message in three pieces, as a record is made");

    p = buf + 5;
    running = ngx_relay_crc32(0, p, 32);
    running = ngx_relay_crc32(running, p + 32, 26);
    running = ngx_relay_crc32(running, p + 58, 102400);

    if (running != (uint32_t) crc32(0, p, 32 + 26 + 102400)) {
        t_fail("chained %08x, zlib %08x", (unsigned) running,
               (unsigned) crc32(0, p, 32 + 26 + 102400));
    }

    t_end();

    t_begin("long buffers");

    for (len = T_BUF - 100; len <= T_BUF; len++) {
        t_same("long", 0, buf + (len & 15), len);
    }

    t_end();

    t_begin("zeros and ones");

    ngx_memzero(buf, T_BUF);
    t_same("zeros", 0, buf, T_BUF);
    ngx_memset(buf, 0xff, T_BUF);
    t_same("ones", 0xffffffff, buf, T_BUF);

    t_end();

    free(buf);

    return t_summary("test_crc32");
}
