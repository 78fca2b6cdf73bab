/*
 * Copyright (C) The relay authors
 */


#ifndef _CTLD_LOG_H_INCLUDED_
#define _CTLD_LOG_H_INCLUDED_


#include <grpc/support/log.h>


/* stderr, one line per event: "2024-01-02T03:04:05.678Z controld: ..." */
void ctld_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* gRPC's log function: its lines in the same format, "grpc E: ..." */
void ctld_log_grpc(gpr_log_func_args *args);


#endif /* _CTLD_LOG_H_INCLUDED_ */
