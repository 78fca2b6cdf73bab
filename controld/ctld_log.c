/*
 * Copyright (C) The relay authors
 */


/*
 * controld's log: stderr, one line per event, UTC timestamps with
 * milliseconds.  Depends on nothing of controld.
 */


#include <stdarg.h>
#include <stdio.h>
#include <time.h>
#include <sys/time.h>

#include "ctld_log.h"


void
ctld_log(const char *fmt, ...)
{
    char            ts[32], line[2048];
    va_list         ap;
    struct tm       tm;
    struct timeval  tv;

    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);

    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);

    fprintf(stderr, "%s.%03dZ controld: %s\n", ts, (int) (tv.tv_usec / 1000),
            line);
}
