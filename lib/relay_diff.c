
/*
 * Copyright (C) The relay authors
 */


/*
 * A unified diff of two texts, by lines, for policy reviews.
 *
 * Lines starting with "#" (the version/author/created header and
 * comments) take no part: they are left out of both texts before the
 * comparison, and the line numbers in "@@" headers count the remaining
 * lines.  The edit script is a shortest one (Myers, "An O(ND) Difference
 * Algorithm and Its Variations", 1986, the greedy forward search with
 * one saved V array per step), after the common head and tail are cut
 * off; a run of changes is printed as its deletions, then its insertions,
 * with 3 lines of context, hunks closer than 6 lines merged, as diff -u.
 */


#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdarg.h>

#include "relay_buf.h"
#include "relay_diff.h"


#define RELAY_DIFF_CONTEXT  3
#define RELAY_DIFF_MAX_D    2000


typedef struct {
    const char   *data;
    size_t        len;
} relay_diff_line_t;


typedef struct {
    relay_diff_line_t  *lines;
    size_t              n;
} relay_diff_lines_t;


typedef enum {
    RELAY_DIFF_EQUAL = 0,
    RELAY_DIFF_DELETE,
    RELAY_DIFF_INSERT
} relay_diff_op_e;


typedef struct {
    relay_diff_op_e  op;
    size_t           a;               /* line index in a (EQUAL, DELETE) */
    size_t           b;               /* line index in b (EQUAL, INSERT) */
} relay_diff_edit_t;


static int relay_diff_split(const char *text, relay_diff_lines_t *l);
static int relay_diff_equal(const relay_diff_line_t *x,
    const relay_diff_line_t *y);
static relay_diff_edit_t *relay_diff_script(relay_diff_lines_t *a,
    relay_diff_lines_t *b, size_t *nedits);
static void relay_diff_hunks(relay_buf_t *o, relay_diff_edit_t *e,
    size_t n, relay_diff_lines_t *a, relay_diff_lines_t *b);
static void relay_diff_range(relay_buf_t *o, size_t start, size_t count);


char *
relay_diff(const char *a_name, const char *a, const char *b_name,
    const char *b)
{
    size_t               i, n;
    relay_buf_t          o;
    relay_diff_edit_t   *e;
    relay_diff_lines_t   la, lb;

    memset(&o, 0, sizeof(relay_buf_t));
    la.lines = NULL;
    lb.lines = NULL;
    e = NULL;

    if (relay_diff_split(a, &la) != 0 || relay_diff_split(b, &lb) != 0) {
        goto failed;
    }

    e = relay_diff_script(&la, &lb, &n);
    if (e == NULL) {
        goto failed;
    }

    relay_buf_add(&o, "", 0);

    for (i = 0; i < n; i++) {
        if (e[i].op != RELAY_DIFF_EQUAL) {
            break;
        }
    }

    if (i < n) {
        relay_buf_add(&o, "--- ", 4);
        relay_buf_add(&o, a_name, strlen(a_name));
        relay_buf_add(&o, "\n+++ ", 5);
        relay_buf_add(&o, b_name, strlen(b_name));
        relay_buf_add(&o, "\n", 1);

        relay_diff_hunks(&o, e, n, &la, &lb);
    }

    if (o.failed) {
        goto failed;
    }

    free(e);
    free(la.lines);
    free(lb.lines);

    return o.data;

failed:

    free(o.data);
    free(e);
    free(la.lines);
    free(lb.lines);

    return NULL;
}


/* the lines of text without "\n", comment lines left out */

static int
relay_diff_split(const char *text, relay_diff_lines_t *l)
{
    size_t       n;
    const char  *p, *nl;

    n = 1;
    for (p = text; *p; p++) {
        n += (*p == '\n');
    }

    l->lines = malloc(n * sizeof(relay_diff_line_t));
    if (l->lines == NULL) {
        return -1;
    }

    l->n = 0;

    for (p = text; *p; p = nl + 1) {
        nl = strchr(p, '\n');
        if (nl == NULL) {
            nl = p + strlen(p);
        }

        if (*p != '#') {
            l->lines[l->n].data = p;
            l->lines[l->n].len = nl - p;
            l->n++;
        }

        if (*nl == '\0') {
            break;
        }
    }

    return 0;
}


static int
relay_diff_equal(const relay_diff_line_t *x, const relay_diff_line_t *y)
{
    return x->len == y->len && memcmp(x->data, y->data, x->len) == 0;
}


/*
 * The edit script: EQUAL, DELETE and INSERT steps in order, covering
 * every line of a and b.  NULL on allocation failure.  Beyond
 * RELAY_DIFF_MAX_D differing lines the middle part becomes one change
 * (all deleted, all inserted), which bounds the memory the saved V
 * arrays take (about RELAY_DIFF_MAX_D squared longs).
 */

static relay_diff_edit_t *
relay_diff_script(relay_diff_lines_t *a, relay_diff_lines_t *b, size_t *nedits)
{
    long               *v, **trace, max, d, dmax, k, x, y, px, py, pk, n, m, i;
    size_t              head, tail, count, j;
    relay_diff_edit_t  *e, *mid;

    /* common head and tail */

    for (head = 0; head < a->n && head < b->n; head++) {
        if (!relay_diff_equal(&a->lines[head], &b->lines[head])) {
            break;
        }
    }

    for (tail = 0; tail < a->n - head && tail < b->n - head; tail++) {
        if (!relay_diff_equal(&a->lines[a->n - 1 - tail],
                              &b->lines[b->n - 1 - tail]))
        {
            break;
        }
    }

    n = (long) (a->n - head - tail);
    m = (long) (b->n - head - tail);
    max = n + m;
    dmax = max < RELAY_DIFF_MAX_D ? max : RELAY_DIFF_MAX_D;

    e = malloc((a->n + b->n + 1) * sizeof(relay_diff_edit_t));
    mid = malloc((n + m + 1) * sizeof(relay_diff_edit_t));
    trace = calloc(dmax + 1, sizeof(long *));
    v = calloc(2 * dmax + 3, sizeof(long));

    if (e == NULL || mid == NULL || trace == NULL || v == NULL) {
        goto failed;
    }

    count = 0;

    for (j = 0; j < head; j++) {
        e[count].op = RELAY_DIFF_EQUAL;
        e[count].a = j;
        e[count].b = j;
        count++;
    }

    /*
     * Myers on the middle: a[head .. head + n), b[head .. head + m).
     * v[dmax + 1 + k] is the furthest x on diagonal k; trace[d] is v[-d-1
     * .. d+1] as it was before step d.
     */

#define V(k)  v[dmax + 1 + (k)]

    V(1) = 0;

    for (d = 0; d <= dmax; d++) {

        trace[d] = malloc((2 * d + 3) * sizeof(long));
        if (trace[d] == NULL) {
            goto failed;
        }

        memcpy(trace[d], &V(-d - 1), (2 * d + 3) * sizeof(long));

        for (k = -d; k <= d; k += 2) {
            if (k == -d || (k != d && V(k - 1) < V(k + 1))) {
                x = V(k + 1);                        /* down: insert */

            } else {
                x = V(k - 1) + 1;                    /* right: delete */
            }

            y = x - k;

            while (x < n && y < m
                   && relay_diff_equal(&a->lines[head + x],
                                       &b->lines[head + y]))
            {
                x++;
                y++;
            }

            V(k) = x;

            if (x >= n && y >= m) {
                goto found;
            }
        }
    }

#undef V

    /* too many differences: delete everything, then insert everything */

    i = 0;

    for (y = m; y > 0; y--) {
        mid[i].op = RELAY_DIFF_INSERT;
        mid[i].a = head + n;
        mid[i].b = head + y - 1;
        i++;
    }

    for (x = n; x > 0; x--) {
        mid[i].op = RELAY_DIFF_DELETE;
        mid[i].a = head + x - 1;
        mid[i].b = head;
        i++;
    }

    d = dmax;
    goto script;

found:

    /* walk back from (n, m), writing the middle steps backwards */

#define T(d, k)  trace[d][(k) + (d) + 1]

    i = 0;
    x = n;
    y = m;

    for ( ; d >= 0; d--) {
        k = x - y;

        if (k == -d || (k != d && T(d, k - 1) < T(d, k + 1))) {
            pk = k + 1;

        } else {
            pk = k - 1;
        }

        px = T(d, pk);
        py = px - pk;

        while (x > px && y > py && x > 0 && y > 0) {
            x--;
            y--;
            mid[i].op = RELAY_DIFF_EQUAL;
            mid[i].a = head + x;
            mid[i].b = head + y;
            i++;
        }

        if (d == 0) {
            break;
        }

        if (x == px) {
            y--;
            mid[i].op = RELAY_DIFF_INSERT;

        } else {
            x--;
            mid[i].op = RELAY_DIFF_DELETE;
        }

        mid[i].a = head + x;
        mid[i].b = head + y;
        i++;
    }

#undef T

script:

    /* forwards, each run of changes as its deletions then insertions */

    while (i > 0) {
        if (mid[i - 1].op == RELAY_DIFF_EQUAL) {
            e[count++] = mid[--i];
            continue;
        }

        for (j = (size_t) i; j > 0 && mid[j - 1].op != RELAY_DIFF_EQUAL; j--) {
            /* void */
        }

        for (x = i; x > (long) j; x--) {
            if (mid[x - 1].op == RELAY_DIFF_DELETE) {
                e[count++] = mid[x - 1];
            }
        }

        for (x = i; x > (long) j; x--) {
            if (mid[x - 1].op == RELAY_DIFF_INSERT) {
                e[count++] = mid[x - 1];
            }
        }

        i = (long) j;
    }

    for (j = 0; j < tail; j++) {
        e[count].op = RELAY_DIFF_EQUAL;
        e[count].a = a->n - tail + j;
        e[count].b = b->n - tail + j;
        count++;
    }

    for (k = 0; k <= dmax; k++) {
        free(trace[k]);
    }

    free(trace);
    free(mid);
    free(v);

    *nedits = count;

    return e;

failed:

    if (trace) {
        for (k = 0; k <= dmax; k++) {
            free(trace[k]);
        }
    }

    free(trace);
    free(mid);
    free(v);
    free(e);

    return NULL;
}


/*
 * Hunks of the script: changes with up to 3 lines of context on each
 * side, two changes separated by at most 6 equal lines in one hunk.
 */

static void
relay_diff_hunks(relay_buf_t *o, relay_diff_edit_t *e, size_t n,
    relay_diff_lines_t *a, relay_diff_lines_t *b)
{
    size_t  i, start, end, last, k, na, nb, sa, sb;

    i = 0;

    for ( ;; ) {
        while (i < n && e[i].op == RELAY_DIFF_EQUAL) {
            i++;
        }

        if (i == n) {
            return;
        }

        /* the hunk: from i - context to the last change followed by more
         * than 2 * context equal lines (or the end) */

        start = i > RELAY_DIFF_CONTEXT ? i - RELAY_DIFF_CONTEXT : 0;
        last = i;

        for (k = i; k < n; k++) {
            if (e[k].op != RELAY_DIFF_EQUAL) {
                last = k;

            } else if (k - last > 2 * RELAY_DIFF_CONTEXT) {
                break;
            }
        }

        end = last + 1 + RELAY_DIFF_CONTEXT;
        if (end > n) {
            end = n;
        }

        na = 0;
        nb = 0;
        sa = (size_t) -1;
        sb = (size_t) -1;

        for (k = start; k < end; k++) {
            if (e[k].op != RELAY_DIFF_INSERT) {
                if (sa == (size_t) -1) {
                    sa = e[k].a;
                }

                na++;
            }

            if (e[k].op != RELAY_DIFF_DELETE) {
                if (sb == (size_t) -1) {
                    sb = e[k].b;
                }

                nb++;
            }
        }

        /* an empty side starts at the line before (diff -u) */

        if (na == 0) {
            sa = e[start].a;
        } else {
            sa++;
        }

        if (nb == 0) {
            sb = e[start].b;
        } else {
            sb++;
        }

        relay_buf_add(o, "@@ -", 4);
        relay_diff_range(o, sa, na);
        relay_buf_add(o, " +", 2);
        relay_diff_range(o, sb, nb);
        relay_buf_add(o, " @@\n", 4);

        for (k = start; k < end; k++) {
            switch (e[k].op) {

            case RELAY_DIFF_EQUAL:
                relay_buf_add(o, " ", 1);
                relay_buf_add(o, a->lines[e[k].a].data,
                              a->lines[e[k].a].len);
                break;

            case RELAY_DIFF_DELETE:
                relay_buf_add(o, "-", 1);
                relay_buf_add(o, a->lines[e[k].a].data,
                              a->lines[e[k].a].len);
                break;

            default:
                relay_buf_add(o, "+", 1);
                relay_buf_add(o, b->lines[e[k].b].data,
                              b->lines[e[k].b].len);
                break;
            }

            relay_buf_add(o, "\n", 1);
        }

        i = end;
    }
}


static void
relay_diff_range(relay_buf_t *o, size_t start, size_t count)
{
    char  buf[64];
    int   len;

    if (count == 1) {
        len = snprintf(buf, sizeof(buf), "%zu", start);

    } else {
        len = snprintf(buf, sizeof(buf), "%zu,%zu", start, count);
    }

    relay_buf_add(o, buf, (size_t) len);
}
