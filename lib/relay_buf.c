
/*
 * Copyright (C) The relay authors
 */


/* Growing text buffers for the policy renderer and the diff. */


#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "relay_buf.h"


static int relay_buf_room(relay_buf_t *b, size_t len);


void
relay_buf_add(relay_buf_t *b, const char *data, size_t len)
{
    if (relay_buf_room(b, len) != 0) {
        return;
    }

    memcpy(b->data + b->len, data, len);
    b->len += len;
    b->data[b->len] = '\0';
}


void
relay_buf_printf(relay_buf_t *b, const char *fmt, ...)
{
    int      n;
    va_list  args;

    va_start(args, fmt);
    n = vsnprintf(NULL, 0, fmt, args);
    va_end(args);

    if (n < 0) {
        b->failed = 1;
        return;
    }

    if (relay_buf_room(b, n) != 0) {
        return;
    }

    va_start(args, fmt);
    vsnprintf(b->data + b->len, n + 1, fmt, args);
    va_end(args);

    b->len += n;
}


/* room for len more bytes and a NUL, the size doubled as needed */

static int
relay_buf_room(relay_buf_t *b, size_t len)
{
    char    *d;
    size_t   size;

    if (b->failed) {
        return -1;
    }

    if (b->size - b->len >= len + 1) {
        return 0;
    }

    size = b->size ? b->size : 256;

    while (size - b->len < len + 1) {
        size *= 2;
    }

    d = realloc(b->data, size);
    if (d == NULL) {
        b->failed = 1;
        return -1;
    }

    b->data = d;
    b->size = size;

    return 0;
}
