/*
 * Copyright (C) The relay authors
 */


/*
 * Rates of a node from its statuses: a node sends its totals (accepted
 * messages, delivered recipients, deferrals by bounce category) every
 * relay_control_status_interval; the last 90 seconds of them are kept
 * here, one sample a second at most, and the rate over the last minute is
 * the difference between the newest sample and the oldest of that minute,
 * over the time between them ("relayctl stats").  Totals that go back
 * (the node restarted and its metrics with it) start the samples afresh.
 *
 * A leaf: the node side adds statuses, the admin side asks for rates.
 */


#include <stdlib.h>
#include <string.h>

#include "relay_classify.h"
#include "ctld_stats.h"


#define CTLD_STATS_SAMPLES   128
#define CTLD_STATS_KEEP_MS   90000
#define CTLD_STATS_WINDOW_MS 60000
#define CTLD_STATS_APART_MS  1000


typedef struct {
    int64_t                     ms;
    uint64_t                    accepted;
    uint64_t                    delivered;
    uint64_t                    deferred[RELAY_CLASS_N];
} ctld_stats_sample_t;


struct ctld_stats_s {
    ctld_stats_sample_t         samples[CTLD_STATS_SAMPLES];  /* a ring */
    size_t                      first;
    size_t                      n;
};


static ctld_stats_sample_t *ctld_stats_nth(const ctld_stats_t *s, size_t i);


void
ctld_stats_add(ctld_stats_t **sp, const Relay__Control__V1__NodeStatus *st,
    int64_t now_ms)
{
    int                   c;
    size_t                i;
    ctld_stats_t         *s;
    ctld_stats_sample_t   sample, *last;

    memset(&sample, 0, sizeof(sample));
    sample.ms = now_ms;
    sample.accepted = st->accepted_total;
    sample.delivered = st->delivered_total;

    for (i = 0; i < st->n_deferred_by_category; i++) {
        c = relay_classify_find(st->deferred_by_category[i]->category,
                                strlen(st->deferred_by_category[i]->category));
        if (c >= 0) {
            sample.deferred[c] = st->deferred_by_category[i]->count;
        }
    }

    s = *sp;

    if (s == NULL) {
        s = calloc(1, sizeof(ctld_stats_t));
        if (s == NULL) {
            return;
        }

        *sp = s;
    }

    last = s->n ? ctld_stats_nth(s, s->n - 1) : NULL;

    if (last && (sample.accepted < last->accepted
                 || sample.delivered < last->delivered))
    {
        s->n = 0;                        /* the node started again */
        last = NULL;
    }

    /* older than we keep, or one more than the ring holds: they go */

    while (s->n && (now_ms - ctld_stats_nth(s, 0)->ms > CTLD_STATS_KEEP_MS
                    || s->n == CTLD_STATS_SAMPLES))
    {
        s->first = (s->first + 1) % CTLD_STATS_SAMPLES;
        s->n--;
    }

    last = s->n ? ctld_stats_nth(s, s->n - 1) : NULL;

    if (last && now_ms - last->ms < CTLD_STATS_APART_MS) {
        *last = sample;                  /* one a second is enough */
        return;
    }

    *ctld_stats_nth(s, s->n) = sample;
    s->n++;
}


void
ctld_stats_free(ctld_stats_t *s)
{
    free(s);
}


Relay__Control__V1__NodeRates *
ctld_stats_rates(const ctld_stats_t *s, int64_t now_ms)
{
    size_t                              i, n;
    double                              secs;
    uint64_t                            d;
    ctld_stats_sample_t                *old, *new;
    Relay__Control__V1__NodeRates      *r;
    Relay__Control__V1__CategoryCount  *cc, **ccp;

    if (s == NULL || s->n == 0) {
        return NULL;
    }

    new = ctld_stats_nth(s, s->n - 1);
    old = new;

    for (i = 0; i < s->n; i++) {
        old = ctld_stats_nth(s, i);

        if (new->ms - old->ms <= CTLD_STATS_WINDOW_MS) {
            break;
        }
    }

    r = calloc(1, sizeof(Relay__Control__V1__NodeRates));
    cc = calloc(RELAY_CLASS_N, sizeof(Relay__Control__V1__CategoryCount));
    ccp = calloc(RELAY_CLASS_N, sizeof(Relay__Control__V1__CategoryCount *));

    if (r == NULL || cc == NULL || ccp == NULL) {
        free(r);
        free(cc);
        free(ccp);
        return NULL;
    }

    relay__control__v1__node_rates__init(r);

    secs = (double) (new->ms - old->ms) / 1000;
    r->window_s = (uint32_t) (secs + 0.5);

    if (secs > 0) {
        r->accepted_per_s = (double) (new->accepted - old->accepted) / secs;
        r->delivered_per_s = (double) (new->delivered - old->delivered)
                             / secs;
    }

    r->deferred = ccp;

    for (i = 0, n = 0; i < RELAY_CLASS_N; i++) {
        d = new->deferred[i] - old->deferred[i];

        if (new->deferred[i] < old->deferred[i] || d == 0) {
            continue;
        }

        relay__control__v1__category_count__init(&cc[n]);
        cc[n].category = (char *) relay_classify_name(i);
        cc[n].count = d;
        ccp[n] = &cc[n];
        n++;
    }

    r->n_deferred = n;

    if (n == 0) {
        free(cc);
        free(ccp);
        r->deferred = NULL;
    }

    return r;
}


void
ctld_stats_rates_free(Relay__Control__V1__NodeRates *r)
{
    if (r == NULL) {
        return;
    }

    free(r->n_deferred ? r->deferred[0] : NULL);
    free(r->deferred);
    free(r);
}


static ctld_stats_sample_t *
ctld_stats_nth(const ctld_stats_t *s, size_t i)
{
    return (ctld_stats_sample_t *)
               &s->samples[(s->first + i) % CTLD_STATS_SAMPLES];
}
