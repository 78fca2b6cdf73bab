/*
 * Copyright (C) The relay authors
 */


#ifndef _CTLD_STATS_H_INCLUDED_
#define _CTLD_STATS_H_INCLUDED_


#include <stdint.h>

#include "relay/control/v1/control.pb-c.h"


typedef struct ctld_stats_s  ctld_stats_t;


/* a node's status, remembered for its rates; *s is made at the first */
void ctld_stats_add(ctld_stats_t **s, const Relay__Control__V1__NodeStatus *st,
    int64_t now_ms);
void ctld_stats_free(ctld_stats_t *s);

/*
 * What the statuses of the last minute say: messages accepted and
 * recipients delivered per second, deferrals by category.  malloc()ed,
 * NULL without statuses; ctld_stats_rates_free() frees it.
 */
Relay__Control__V1__NodeRates *ctld_stats_rates(const ctld_stats_t *s,
    int64_t now_ms);
void ctld_stats_rates_free(Relay__Control__V1__NodeRates *r);


#endif /* _CTLD_STATS_H_INCLUDED_ */
