
/*
 * Copyright (C) The relay authors
 */


#ifndef _RELAY_DIFF_H_INCLUDED_
#define _RELAY_DIFF_H_INCLUDED_


/*
 * Unified diff (3 lines of context) of two texts, malloc()ed; "" when they
 * are equal.  Lines starting with "#" are ignored by the comparison.
 */
char *relay_diff(const char *a_name, const char *a, const char *b_name,
    const char *b);


#endif /* _RELAY_DIFF_H_INCLUDED_ */
