/*
 * Copyright (C) The relay authors
 */


#ifndef _CTLD_ALLOC_H_INCLUDED_
#define _CTLD_ALLOC_H_INCLUDED_


/* a copy of s (NULL: ""); out of memory logs and aborts, never NULL */
char *ctld_strdup(const char *s);


#endif /* _CTLD_ALLOC_H_INCLUDED_ */
