
/*
 * Copyright (C) The relay authors
 */


/*
 * The cases of the C unit tests, for every harness (tests/unit/t.h with
 * nginx's headers, tests/unit-queue/t.h without).  A case is one table
 * row: t_begin() names it, t_fail() marks it failed and says why, t_end()
 * counts it.  The last line a test program prints is "name: N passed, N
 * failed" (t_summary()); tests/tally.sh adds those up.
 */


#ifndef _TCASE_H_INCLUDED_
#define _TCASE_H_INCLUDED_


#include <stdarg.h>
#include <stdio.h>


static const char     *t_label;
static unsigned long   t_case_failed;
static unsigned long   t_passed;
static unsigned long   t_failed;


static inline void
t_begin(const char *label)
{
    t_label = label;
    t_case_failed = 0;
}


static inline void
t_fail(const char *fmt, ...)
{
    va_list  args;

    /* one broken case fails in every split: the first few say enough */

    if (t_case_failed++ >= 4) {
        if (t_case_failed == 5) {
            printf("FAIL %s: ...\n", t_label);
        }

        return;
    }

    printf("FAIL %s: ", t_label);

    va_start(args, fmt);
    vprintf(fmt, args);
    va_end(args);

    printf("\n");
}


static inline void
t_end(void)
{
    if (t_case_failed) {
        t_failed++;

    } else {
        t_passed++;
    }
}


static inline int
t_summary(const char *name)
{
    printf("%s: %lu passed, %lu failed\n", name, t_passed, t_failed);
    (void) fflush(stdout);

    return t_failed ? 1 : 0;
}


#endif /* _TCASE_H_INCLUDED_ */
