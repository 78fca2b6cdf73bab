/*
 * Copyright (C) The relay authors
 */


#ifndef _CTLD_METRICS_H_INCLUDED_
#define _CTLD_METRICS_H_INCLUDED_


#include <stddef.h>
#include <stdint.h>


typedef enum {
    CTLD_APPLIED = 0,          /* a new version */
    CTLD_APPLY_UNCHANGED,      /* the same as the current one */
    CTLD_APPLY_DRY_RUN,
    CTLD_APPLY_INVALID,        /* refused by validation */
    CTLD_APPLY_FAILED,         /* could not be stored */
    CTLD_APPLY_N
} ctld_apply_result_e;


/*
 * What main() gives the metrics from the parts above them (the metrics
 * are a leaf: they call nothing of controld's).  versions() fills up to
 * max pairs of (version, connected nodes that run it), counts the nodes
 * known in *known and returns the pairs; current() is the current version.
 */

typedef struct {
    size_t                    (*versions)(uint64_t *version, size_t *nodes,
                                          size_t max, size_t *known);
    uint64_t                  (*current)(void);
} ctld_metrics_view_t;


/* NULL or "": no listener; -1: it could not listen (said in the log) */
int ctld_metrics_init(const char *addr, const ctld_metrics_view_t *view);
void ctld_metrics_poll(int64_t now);
void ctld_metrics_close(void);

void ctld_metrics_apply(int rollback, ctld_apply_result_e result);
void ctld_metrics_session(void);
void ctld_metrics_ack(int ok, int64_t latency_ms);
void ctld_metrics_store_error(void);


#endif /* _CTLD_METRICS_H_INCLUDED_ */
