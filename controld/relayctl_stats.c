/*
 * Copyright (C) The relay authors
 */


/*
 * relayctl stats: the fleet at a glance, from controld's ListNodes.  Per
 * node the rates controld computes over the statuses of the last minute
 * (messages accepted and recipients delivered per second, deferrals by
 * bounce category), the queue and the applied version; a total row.  The
 * loop that asks again and again is relayctl.c's; this file only shows
 * one answer, as a table or as one JSON object on one line.
 */


#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "relay_classify.h"
#include "relayctl.h"


static char *ctld_stats_categories(Relay__Control__V1__NodeRates *rates);
static void ctld_stats_json(FILE *f, Relay__Control__V1__ListNodesResponse *r,
    double accepted, double delivered, uint64_t queue, uint64_t deferred,
    uint64_t *by);


void
ctld_stats_show(FILE *f, Relay__Control__V1__ListNodesResponse *r, int json,
    int clear)
{
    int                              c;
    char                            *cats, *more;
    size_t                           k, i;
    double                           accepted, delivered;
    uint64_t                         queue, deferred, by[RELAY_CLASS_N];
    ctld_table_t                     t;
    Relay__Control__V1__NodeInfo    *n;
    Relay__Control__V1__NodeRates   *rt;
    Relay__Control__V1__NodeStatus  *st;

    accepted = 0;
    delivered = 0;
    queue = 0;
    deferred = 0;
    memset(by, 0, sizeof(by));

    for (k = 0; k < r->n_nodes; k++) {
        n = r->nodes[k];

        if (!n->connected) {
            continue;
        }

        if (n->rates) {
            accepted += n->rates->accepted_per_s;
            delivered += n->rates->delivered_per_s;

            for (i = 0; i < n->rates->n_deferred; i++) {
                c = relay_classify_find(n->rates->deferred[i]->category,
                                    strlen(n->rates->deferred[i]->category));
                if (c >= 0) {
                    by[c] += n->rates->deferred[i]->count;
                }
            }
        }

        if (n->status) {
            queue += n->status->queue_messages;
            deferred += n->status->queue_deferred;
        }
    }

    if (json) {
        ctld_stats_json(f, r, accepted, delivered, queue, deferred, by);
        return;
    }

    if (clear) {
        fputs("\033[H\033[2J", f);
    }

    ctld_table_init(&t, 9);
    ctld_table_row(&t, "NODE", "CONNECTED", "APPLIED", "ACCEPTED/S",
                   "DELIVERED/S", "QUEUE", "DEFERRED", "WINDOW",
                   "DEFERRALS-LAST-MINUTE");

    for (k = 0; k < r->n_nodes; k++) {
        n = r->nodes[k];
        rt = n->rates;
        st = n->status;
        cats = ctld_stats_categories(rt);

        ctld_table_row(&t,
            ctld_fmt("%s", n->node_id),
            ctld_fmt("%s", n->connected ? "yes" : "no"),
            n->applied_version
                ? ctld_fmt("%llu%s", (unsigned long long) n->applied_version,
                           n->applied_version != r->current ? " (behind)"
                                                            : "")
                : ctld_fmt("none"),
            rt ? ctld_fmt("%.1f", rt->accepted_per_s) : ctld_fmt("-"),
            rt ? ctld_fmt("%.1f", rt->delivered_per_s) : ctld_fmt("-"),
            st ? ctld_fmt("%u", st->queue_messages) : ctld_fmt("-"),
            st ? ctld_fmt("%u", st->queue_deferred) : ctld_fmt("-"),
            rt ? ctld_fmt("%us", rt->window_s) : ctld_fmt("-"),
            ctld_fmt("%s", cats && cats[0] ? cats : "-"));

        free(cats);
    }

    cats = NULL;

    for (i = 0; i < RELAY_CLASS_N; i++) {
        if (by[i]) {
            more = ctld_fmt("%s%s%s %llu", cats ? cats : "",
                            cats ? ", " : "", relay_classify_name(i),
                            (unsigned long long) by[i]);
            free(cats);
            cats = more;
        }
    }

    ctld_table_row(&t, ctld_fmt("TOTAL"), ctld_fmt("-"),
                   ctld_fmt("%llu", (unsigned long long) r->current),
                   ctld_fmt("%.1f", accepted), ctld_fmt("%.1f", delivered),
                   ctld_fmt("%llu", (unsigned long long) queue),
                   ctld_fmt("%llu", (unsigned long long) deferred),
                   ctld_fmt("-"), ctld_fmt("%s", cats ? cats : "-"));
    free(cats);

    ctld_table_print(&t, f);
    ctld_table_free(&t);
}


/* "rate-limited 12, bad-mailbox 3", most first; malloc()ed */

static char *
ctld_stats_categories(Relay__Control__V1__NodeRates *rt)
{
    char                               *s, *p;
    size_t                              i, j, len;
    Relay__Control__V1__CategoryCount  *d[RELAY_CLASS_N], *x;

    if (rt == NULL || rt->n_deferred == 0) {
        return NULL;
    }

    len = 1;

    for (i = 0; i < rt->n_deferred && i < RELAY_CLASS_N; i++) {
        d[i] = rt->deferred[i];
        len += strlen(d[i]->category) + 24;

        for (j = i; j > 0 && d[j - 1]->count < d[j]->count; j--) {
            x = d[j];
            d[j] = d[j - 1];
            d[j - 1] = x;
        }
    }

    s = malloc(len);
    if (s == NULL) {
        return NULL;
    }

    p = s;
    *p = '\0';

    for (j = 0; j < i; j++) {
        p += sprintf(p, "%s%s %llu", j ? ", " : "", d[j]->category,
                     (unsigned long long) d[j]->count);
    }

    return s;
}


/* one line: {"time":..., "current":N, "nodes":[...], "total":{...}} */

static void
ctld_stats_json(FILE *f, Relay__Control__V1__ListNodesResponse *r,
    double accepted, double delivered, uint64_t queue, uint64_t deferred,
    uint64_t *by)
{
    size_t                           k, i;
    Relay__Control__V1__NodeInfo    *n;
    Relay__Control__V1__NodeRates   *rt;
    Relay__Control__V1__NodeStatus  *st;

    fprintf(f, "{\"time\":%lld,\"current\":%llu,\"nodes\":[",
            (long long) time(NULL), (unsigned long long) r->current);

    for (k = 0; k < r->n_nodes; k++) {
        n = r->nodes[k];
        rt = n->rates;
        st = n->status;

        fprintf(f, "%s{\"node_id\":", k ? "," : "");
        ctld_json_string(f, n->node_id);
        fprintf(f, ",\"connected\":%s,\"applied_version\":%llu,"
                "\"accepted_per_s\":%.3f,\"delivered_per_s\":%.3f,"
                "\"window_s\":%u,\"queue_messages\":%u,"
                "\"queue_deferred\":%u,\"deferred_last_minute\":{",
                n->connected ? "true" : "false",
                (unsigned long long) n->applied_version,
                rt ? rt->accepted_per_s : 0.0,
                rt ? rt->delivered_per_s : 0.0, rt ? rt->window_s : 0,
                st ? st->queue_messages : 0, st ? st->queue_deferred : 0);

        for (i = 0; rt && i < rt->n_deferred; i++) {
            fprintf(f, "%s", i ? "," : "");
            ctld_json_string(f, rt->deferred[i]->category);
            fprintf(f, ":%llu", (unsigned long long) rt->deferred[i]->count);
        }

        fprintf(f, "},\"deferred_total_by_category\":{");

        for (i = 0; st && i < st->n_deferred_by_category; i++) {
            fprintf(f, "%s", i ? "," : "");
            ctld_json_string(f, st->deferred_by_category[i]->category);
            fprintf(f, ":%llu", (unsigned long long)
                                st->deferred_by_category[i]->count);
        }

        fprintf(f, "}}");
    }

    fprintf(f, "],\"total\":{\"accepted_per_s\":%.3f,\"delivered_per_s\":"
            "%.3f,\"queue_messages\":%llu,\"queue_deferred\":%llu,"
            "\"deferred_last_minute\":{", accepted, delivered,
            (unsigned long long) queue, (unsigned long long) deferred);

    for (i = 0, k = 0; i < RELAY_CLASS_N; i++) {
        if (by[i]) {
            fprintf(f, "%s\"%s\":%llu", k++ ? "," : "",
                    relay_classify_name(i), (unsigned long long) by[i]);
        }
    }

    fprintf(f, "}}}\n");
}
