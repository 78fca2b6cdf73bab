/*
 * Copyright (C) The relay authors
 */


#ifndef _CTLD_CLOCK_H_INCLUDED_
#define _CTLD_CLOCK_H_INCLUDED_


#include <stdint.h>


/* milliseconds of the monotonic clock: for timeouts, never for dates */
int64_t ctld_now_ms(void);


#endif /* _CTLD_CLOCK_H_INCLUDED_ */
