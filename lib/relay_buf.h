
/*
 * Copyright (C) The relay authors
 */


#ifndef _RELAY_BUF_H_INCLUDED_
#define _RELAY_BUF_H_INCLUDED_


#include <stddef.h>


/*
 * A text that grows as it is written (the policy's canonical form, a
 * diff): malloc()ed, NUL-terminated after the first addition.  Out of
 * memory sets failed and drops the rest: check it once, at the end.
 */

typedef struct {
    char                     *data;
    size_t                    len;
    size_t                    size;
    int                       failed;
} relay_buf_t;


void relay_buf_add(relay_buf_t *b, const char *data, size_t len);
void relay_buf_printf(relay_buf_t *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));


#endif /* _RELAY_BUF_H_INCLUDED_ */
