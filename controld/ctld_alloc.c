/*
 * Copyright (C) The relay authors
 */


/*
 * Allocations controld cannot go on without: small strings (node ids,
 * peers, reasons).  Running out of memory there ends the process, with a
 * log line, rather than a half-updated node table.
 */


#include <stdlib.h>
#include <string.h>

#include "ctld_alloc.h"
#include "ctld_log.h"


char *
ctld_strdup(const char *s)
{
    char  *p;

    p = strdup(s ? s : "");
    if (p == NULL) {
        ctld_log("out of memory");
        abort();
    }

    return p;
}
