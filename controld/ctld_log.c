/*
 * Copyright (C) The relay authors
 */


/*
 * controld's log: stderr, one line per event, UTC timestamps with
 * milliseconds.  gRPC's own lines come here too (ctld_log_grpc(), set
 * before grpc_init()), so that every line has one format whoever writes
 * it; they may come from gRPC's threads, and one fprintf() per line keeps
 * lines whole.  Depends on nothing of controld.
 */


#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <sys/time.h>

#include <grpc/support/log.h>

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


/* "grpc E: message [file:line]": severity first, where it came from last */

void
ctld_log_grpc(gpr_log_func_args *args)
{
    const char  *file;

    file = strrchr(args->file, '/');
    file = file ? file + 1 : args->file;

    ctld_log("grpc %s: %s [%s:%d]", gpr_log_severity_string(args->severity),
             args->message, file, args->line);
}
