/*
 * Copyright (C) The relay authors
 */


/* The clock of controld's timers (hello, status and command timeouts). */


#include <time.h>

#include "ctld_clock.h"


int64_t
ctld_now_ms(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);

    return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}
