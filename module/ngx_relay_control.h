
/*
 * Copyright (C) The relay authors
 */


#ifndef _NGX_RELAY_CONTROL_H_INCLUDED_
#define _NGX_RELAY_CONTROL_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_relay_policy.h>
#include <ngx_relay_sched.h>


typedef struct {
    ngx_str_t                 address;       /* as written; "": no controld */
    ngx_array_t              *targets;       /* ngx_str_t, NUL-terminated */
    ngx_str_t                 node_id;
    relay_scope_node_t        node;          /* id and labels, C strings */
    ngx_array_t              *labels;        /* relay_scope_label_t */
    ngx_relay_policy_t       *policy;
    ngx_str_t                 certificate;
    ngx_str_t                 certificate_key;
    ngx_str_t                 trusted_certificate;
    ngx_str_t                 state;         /* last-known-good snapshot */

    /* read by the master: workers may not be able to read key files */
    u_char                   *certificate_pem;
    u_char                   *certificate_key_pem;
    u_char                   *trusted_certificate_pem;
    size_t                    zone_size;
    ngx_msec_t                status_interval;
    ngx_flag_t                insecure;
} ngx_relay_control_conf_t;


u_char *ngx_relay_control_read_pem(ngx_conf_t *cf, ngx_str_t *path);
ngx_int_t ngx_relay_control_add_zone(ngx_conf_t *cf,
    ngx_relay_control_conf_t *ccf, ngx_relay_policy_t *p, void *tag);
ngx_int_t ngx_relay_control_init_process(ngx_relay_control_conf_t *ccf,
    ngx_relay_policy_t *p, ngx_relay_sched_t *sc, ngx_cycle_t *cycle);
void ngx_relay_control_exit_process(ngx_cycle_t *cycle);


#endif /* _NGX_RELAY_CONTROL_H_INCLUDED_ */
