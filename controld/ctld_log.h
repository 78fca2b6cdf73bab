/*
 * Copyright (C) The relay authors
 */


#ifndef _CTLD_LOG_H_INCLUDED_
#define _CTLD_LOG_H_INCLUDED_


/* stderr, one line per event: "2024-01-02T03:04:05.678Z controld: ..." */
void ctld_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));


#endif /* _CTLD_LOG_H_INCLUDED_ */
