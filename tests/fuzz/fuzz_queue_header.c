
/*
 * Copyright (C) The relay authors
 */


/*
 * Queue files (lib/relay_queue.c), read from disk by workers, relayctl
 * and controld's queue commands.  The input is a whole file: it is parsed
 * as a header by relay_queue_parse() (what every reader does after
 * finding the header's end), and read as a file by relay_queue_read()
 * from a memfd (the trailer, the header's end, the message's place).
 * Every string found must lie in the header, every offset in the file.
 */


#define _GNU_SOURCE
#include <sys/mman.h>
#include <unistd.h>

#include "relay_queue.h"
#include "fuzz.h"


static void
fuzz_inside(relay_str_t *s, unsigned char *h, size_t len)
{
    if (s->len == 0) {
        return;
    }

    fuzz_assert(s->data >= h && s->data + s->len <= h + len);
}


static void
fuzz_msg(relay_queue_msg_t *m, unsigned char *h, size_t len)
{
    size_t  i;

    fuzz_inside(&m->id, h, len);
    fuzz_inside(&m->client, h, len);
    fuzz_inside(&m->helo, h, len);
    fuzz_inside(&m->auth, h, len);
    fuzz_inside(&m->tenant, h, len);
    fuzz_inside(&m->envid, h, len);
    fuzz_inside(&m->sender, h, len);
    fuzz_inside(&m->last_error, h, len);

    for (i = 0; i < m->nrcpts; i++) {
        fuzz_inside(&m->rcpts[i].addr, h, len);
        fuzz_inside(&m->rcpts[i].orcpt, h, len);
        fuzz_assert(m->rcpts[i].state_offset >= 0
                    && (size_t) m->rcpts[i].state_offset < len);
    }

    fuzz_assert(m->next_offset >= 0 && (size_t) m->next_offset <= len);
    fuzz_assert(m->warned_offset >= 0 && (size_t) m->warned_offset <= len);
    fuzz_assert(m->hold_offset >= 0 && (size_t) m->hold_offset <= len);
    fuzz_assert(m->error_offset >= 0 && (size_t) m->error_offset <= len);
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int                 fd, err;
    unsigned char      *h;
    relay_queue_msg_t   m;

    h = fuzz_dup(data, size);
    memset(&m, 0, sizeof(relay_queue_msg_t));

    if (relay_queue_parse(&m, h, size) == RELAY_QUEUE_OK) {
        fuzz_msg(&m, h, size);
    }

    free(m.rcpts);
    free(h);

    /* as a file: trailer, header end, message offset and size */

    fd = memfd_create("queue", MFD_CLOEXEC);
    if (fd == -1) {
        return 0;
    }

    if (write(fd, data, size) == (ssize_t) size
        && relay_queue_read(fd, &m, &err) == RELAY_QUEUE_OK)
    {
        fuzz_assert(m.message_offset >= 0 && m.message_size >= 0
                    && m.message_offset + m.message_size <= (off_t) size);
        fuzz_msg(&m, m.header, (size_t) m.message_offset);
        relay_queue_free(&m);
    }

    close(fd);

    return 0;
}
