
/*
 * Copyright (C) The relay authors
 */


/*
 * HTTP glue of the metrics: "relay_metrics;" in a location makes it
 * answer GET with the relay's metrics in the Prometheus text format, as
 * stub_status answers with nginx's.  The operator picks listener, access
 * rules and TLS with ordinary http directives.  The values come from the
 * stream side's zone, found by name in the cycle's shared memory
 * (ngx_relay_metrics.c renders them); this module lives in the same .so
 * as the stream modules and keeps nothing of its own.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include <ngx_relay_metrics.h>


static ngx_int_t ngx_http_relay_metrics_handler(ngx_http_request_t *r);
static char *ngx_http_relay_metrics(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);


static ngx_command_t  ngx_http_relay_metrics_commands[] = {

    { ngx_string("relay_metrics"),
      NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_relay_metrics,
      0,
      0,
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_relay_metrics_module_ctx = {
    NULL,                                  /* preconfiguration */
    NULL,                                  /* postconfiguration */

    NULL,                                  /* create main configuration */
    NULL,                                  /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    NULL,                                  /* create location configuration */
    NULL                                   /* merge location configuration */
};


ngx_module_t  ngx_http_relay_metrics_module = {
    NGX_MODULE_V1,
    &ngx_http_relay_metrics_module_ctx,    /* module context */
    ngx_http_relay_metrics_commands,       /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    NULL,                                  /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    NULL,                                  /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


static ngx_int_t
ngx_http_relay_metrics_handler(ngx_http_request_t *r)
{
    off_t         len;
    ngx_int_t     rc;
    ngx_chain_t  *out;

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    rc = ngx_http_discard_request_body(r);

    if (rc != NGX_OK) {
        return rc;
    }

    rc = ngx_relay_metrics_render((ngx_cycle_t *) ngx_cycle, r->pool, &out,
                                  &len);

    if (rc == NGX_DECLINED) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "relay_metrics: no relay in this nginx, or "
                      "\"relay_metrics off\" in its stream{}");
        return NGX_HTTP_NOT_FOUND;
    }

    if (rc != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_str_set(&r->headers_out.content_type,
                "text/plain; version=0.0.4; charset=utf-8");
    r->headers_out.content_type_len = r->headers_out.content_type.len;
    r->headers_out.content_type_lowcase = NULL;
    r->headers_out.status = NGX_HTTP_OK;
    r->headers_out.content_length_n = len;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    return ngx_http_output_filter(r, out);
}


static char *
ngx_http_relay_metrics(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_core_loc_conf_t  *clcf;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_relay_metrics_handler;

    return NGX_CONF_OK;
}
