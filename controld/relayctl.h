
/*
 * Copyright (C) The relay authors
 */


#ifndef _RELAYCTL_H_INCLUDED_
#define _RELAYCTL_H_INCLUDED_


/*
 * What relayctl's two halves share: the exit codes, messages, JSON strings
 * and aligned tables of relayctl.c (the client of controld), used by
 * relayctl_spool.c (queue commands on a node's own spool).
 */


#include <stdio.h>
#include <stddef.h>
#include <stdint.h>

#include "relay/control/v1/control.pb-c.h"


#define CTLD_EXIT_OK           0
#define CTLD_EXIT_NOTHING      1
#define CTLD_EXIT_USAGE        2
#define CTLD_EXIT_INVALID      3
#define CTLD_EXIT_UNAVAILABLE  4
#define CTLD_EXIT_DENIED       5
#define CTLD_EXIT_NOT_FOUND    6
#define CTLD_EXIT_OTHER        7
#define CTLD_EXIT_STORE        8        /* controld's store unreachable */
#define CTLD_EXIT_CONFLICT     9        /* another apply got there first */
#define CTLD_EXIT_NACK        10        /* a node refused the version */
#define CTLD_EXIT_NO_ANSWER   11        /* a node did not answer in time */


typedef struct {
    size_t          ncols;
    size_t          nrows;
    char          **cells;
} ctld_table_t;


void ctld_cli_error(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));
int ctld_cli_usage(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));
void ctld_json_string(FILE *f, const char *s);

void ctld_table_init(ctld_table_t *t, size_t ncols);
void ctld_table_row(ctld_table_t *t, ...);
void ctld_table_print(ctld_table_t *t, FILE *f);
void ctld_table_free(ctld_table_t *t);
char *ctld_fmt(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));
const char *ctld_time_iso(int64_t t, char *buf, size_t len);
const char *ctld_duration(uint64_t s, char *buf, size_t len);

/* relayctl_diag.c: why a call got UNAVAILABLE, said on stderr */
void ctld_cli_diagnose(const char *server, const char *ca, const char *cert,
    const char *key, double timeout);

/* relayctl --spool DIR queue ...: argv[0] is "queue" */
int ctld_spool_queue(const char *spool, int json, int argc, char **argv);

/* relayctl stats: one answer of ListNodes (relayctl_stats.c) */
void ctld_stats_show(FILE *f, Relay__Control__V1__ListNodesResponse *r,
    int json, int clear);

/* the category of a last error, for queue listings: "-" without one */
const char *ctld_category(const char *last_error, size_t len,
    const char *category);


#endif /* _RELAYCTL_H_INCLUDED_ */
