
/*
 * Copyright (C) The relay authors
 */


/*
 * The module's metrics (ngx_relay_metrics.c) as calls that count nothing,
 * for the unit tests and fuzz harnesses that link a module file without
 * the metrics zone (" * link: ... tests/no_metrics.c").
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_relay_metrics.h>


uint64_t
ngx_relay_metrics_clock(void)
{
    return 0;
}


void
ngx_relay_metrics_sync(ngx_uint_t kind, uint64_t started)
{
}


void
ngx_relay_metrics_dns(uint64_t started)
{
}
