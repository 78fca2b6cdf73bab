
/*
 * Copyright (C) The relay authors
 */


/*
 * Directives, configuration create/merge, and the per-process start and
 * stop of the engine (spool, scheduler).  The SMTP session itself lives in
 * ngx_stream_relay_session.c.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_stream.h>
#include <ngx_stream_ssl_module.h>
#include <ngx_relay_idn.h>
#include <ngx_relay_mtasts.h>
#include <ngx_stream_relay.h>
#include <ngx_relay_auth.h>
#include <ngx_relay_dns.h>
#include <ngx_relay_delivery.h>
#include <ngx_relay_literal.h>


static void *ngx_stream_relay_create_main_conf(ngx_conf_t *cf);
static char *ngx_stream_relay_init_main_conf(ngx_conf_t *cf, void *conf);
static void *ngx_stream_relay_create_srv_conf(ngx_conf_t *cf);
static char *ngx_stream_relay_merge_srv_conf(ngx_conf_t *cf, void *parent,
    void *child);
static ngx_int_t ngx_stream_relay_setup_tls(ngx_conf_t *cf,
    ngx_stream_relay_srv_conf_t *conf);
static char *ngx_stream_relay_smtp(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_stream_relay_local_domain(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_stream_relay_trusted_networks(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_stream_relay_auth_file(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_stream_relay_statement(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_stream_relay_retry_backoff(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_stream_relay_retry_time(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_stream_relay_resolver(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static ngx_int_t ngx_stream_relay_control_labels(ngx_conf_t *cf,
    ngx_relay_control_conf_t *ctl, ngx_str_t *word);
static char *ngx_stream_relay_control(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_stream_relay_limit_redis(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static ngx_int_t ngx_stream_relay_init_limits(ngx_conf_t *cf,
    ngx_relay_limits_conf_t *lc);
static char *ngx_stream_relay_client_limit(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_stream_relay_accounting_log(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_stream_relay_bounce_rules(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static void ngx_stream_relay_free_rules(void *data);
static ngx_int_t ngx_stream_relay_init_control(ngx_conf_t *cf,
    ngx_stream_relay_main_conf_t *rmcf);
static ngx_int_t ngx_stream_relay_init_delivery(ngx_cycle_t *cycle,
    ngx_stream_relay_main_conf_t *rmcf, ngx_relay_sched_t *sc);
static ngx_int_t ngx_stream_relay_own_addrs(ngx_conf_t *cf,
    ngx_stream_relay_main_conf_t *rmcf);
static ngx_int_t ngx_stream_relay_init_module(ngx_cycle_t *cycle);
static ngx_int_t ngx_stream_relay_init_process(ngx_cycle_t *cycle);
static void ngx_stream_relay_exit_process(ngx_cycle_t *cycle);


ngx_relay_sched_t  *ngx_stream_relay_sched;


static ngx_conf_enum_t  ngx_stream_relay_limit_fallbacks[] = {
    { ngx_string("local"), NGX_RELAY_LIMIT_FALLBACK_LOCAL },
    { ngx_string("tempfail"), NGX_RELAY_LIMIT_FALLBACK_TEMPFAIL },
    { ngx_string("accept"), NGX_RELAY_LIMIT_FALLBACK_ACCEPT },
    { ngx_null_string, 0 }
};


static ngx_conf_enum_t  ngx_stream_relay_spool_syncs[] = {
    { ngx_string("files"), NGX_RELAY_SYNC_FILES },
    { ngx_string("syncfs"), NGX_RELAY_SYNC_SYNCFS },
    { ngx_string("journal"), NGX_RELAY_SYNC_JOURNAL },
    { ngx_null_string, 0 }
};


static ngx_command_t  ngx_stream_relay_commands[] = {

    /*
     * Directives that mirror a policy statement, whose name is in "post":
     * the policy library parses and checks their arguments as it does the
     * statement's (ngx_relay_policy.c), so the library counts them.
     */

    { ngx_string("relay_egress_pool"),
      NGX_STREAM_MAIN_CONF|NGX_CONF_1MORE,
      ngx_stream_relay_statement,
      NGX_STREAM_MAIN_CONF_OFFSET,
      0,
      "egress_pool" },

    { ngx_string("relay_egress_rule"),
      NGX_STREAM_MAIN_CONF|NGX_CONF_1MORE,
      ngx_stream_relay_statement,
      NGX_STREAM_MAIN_CONF_OFFSET,
      0,
      "egress_rule" },

    { ngx_string("relay_destination_limit"),
      NGX_STREAM_MAIN_CONF|NGX_CONF_1MORE,
      ngx_stream_relay_statement,
      NGX_STREAM_MAIN_CONF_OFFSET,
      0,
      "destination_limit" },

    { ngx_string("relay_limit"),
      NGX_STREAM_MAIN_CONF|NGX_CONF_1MORE,
      ngx_stream_relay_statement,
      NGX_STREAM_MAIN_CONF_OFFSET,
      0,
      "inbound_limit" },

    { ngx_string("relay_limit_zone_size"),
      NGX_STREAM_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_STREAM_MAIN_CONF_OFFSET,
      offsetof(ngx_stream_relay_main_conf_t, limit_zone_size),
      NULL },

    /* limits of scope fleet: counted in Redis */

    { ngx_string("relay_limit_redis"),
      NGX_STREAM_MAIN_CONF|NGX_CONF_1MORE,
      ngx_stream_relay_limit_redis,
      NGX_STREAM_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("relay_limit_redis_user"),
      NGX_STREAM_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_STREAM_MAIN_CONF_OFFSET,
      offsetof(ngx_stream_relay_main_conf_t, policy.limits.redis.user),
      NULL },

    { ngx_string("relay_limit_redis_password"),
      NGX_STREAM_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_STREAM_MAIN_CONF_OFFSET,
      offsetof(ngx_stream_relay_main_conf_t, policy.limits.redis.password),
      NULL },

    { ngx_string("relay_limit_redis_database"),
      NGX_STREAM_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_STREAM_MAIN_CONF_OFFSET,
      offsetof(ngx_stream_relay_main_conf_t, policy.limits.redis.database),
      NULL },

    { ngx_string("relay_limit_redis_prefix"),
      NGX_STREAM_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_STREAM_MAIN_CONF_OFFSET,
      offsetof(ngx_stream_relay_main_conf_t, policy.limits.prefix),
      NULL },

    { ngx_string("relay_limit_redis_timeout"),
      NGX_STREAM_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_STREAM_MAIN_CONF_OFFSET,
      offsetof(ngx_stream_relay_main_conf_t, policy.limits.redis.timeout),
      NULL },

    { ngx_string("relay_limit_redis_fallback"),
      NGX_STREAM_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_enum_slot,
      NGX_STREAM_MAIN_CONF_OFFSET,
      offsetof(ngx_stream_relay_main_conf_t, policy.limits.fallback),
      &ngx_stream_relay_limit_fallbacks },

    { ngx_string("relay_limit_fleet_nodes"),
      NGX_STREAM_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_STREAM_MAIN_CONF_OFFSET,
      offsetof(ngx_stream_relay_main_conf_t, policy.limits.nodes),
      NULL },

    { ngx_string("relay_control"),
      NGX_STREAM_MAIN_CONF|NGX_CONF_1MORE,
      ngx_stream_relay_control,
      NGX_STREAM_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("relay_control_certificate"),
      NGX_STREAM_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_STREAM_MAIN_CONF_OFFSET,
      offsetof(ngx_stream_relay_main_conf_t, control.certificate),
      NULL },

    { ngx_string("relay_control_certificate_key"),
      NGX_STREAM_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_STREAM_MAIN_CONF_OFFSET,
      offsetof(ngx_stream_relay_main_conf_t, control.certificate_key),
      NULL },

    { ngx_string("relay_control_trusted_certificate"),
      NGX_STREAM_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_STREAM_MAIN_CONF_OFFSET,
      offsetof(ngx_stream_relay_main_conf_t, control.trusted_certificate),
      NULL },

    { ngx_string("relay_control_state"),
      NGX_STREAM_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_STREAM_MAIN_CONF_OFFSET,
      offsetof(ngx_stream_relay_main_conf_t, control.state),
      NULL },

    { ngx_string("relay_control_zone_size"),
      NGX_STREAM_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_STREAM_MAIN_CONF_OFFSET,
      offsetof(ngx_stream_relay_main_conf_t, control.zone_size),
      NULL },

    { ngx_string("relay_control_status_interval"),
      NGX_STREAM_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_STREAM_MAIN_CONF_OFFSET,
      offsetof(ngx_stream_relay_main_conf_t, control.status_interval),
      NULL },

    { ngx_string("relay_metrics"),
      NGX_STREAM_MAIN_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_STREAM_MAIN_CONF_OFFSET,
      offsetof(ngx_stream_relay_main_conf_t, metrics),
      NULL },

    { ngx_string("relay_accounting_log"),
      NGX_STREAM_MAIN_CONF|NGX_CONF_1MORE,
      ngx_stream_relay_accounting_log,
      NGX_STREAM_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("relay_bounce_rules"),
      NGX_STREAM_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_stream_relay_bounce_rules,
      NGX_STREAM_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("relay_tenant"),
      NGX_STREAM_MAIN_CONF|NGX_STREAM_SRV_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_STREAM_SRV_CONF_OFFSET,
      offsetof(ngx_stream_relay_srv_conf_t, tenant),
      NULL },

    { ngx_string("relay_smtp"),
      NGX_STREAM_SRV_CONF|NGX_CONF_NOARGS,
      ngx_stream_relay_smtp,
      NGX_STREAM_SRV_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("relay_spool"),
      NGX_STREAM_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_STREAM_MAIN_CONF_OFFSET,
      offsetof(ngx_stream_relay_main_conf_t, spool),
      NULL },

    { ngx_string("relay_spool_sync"),
      NGX_STREAM_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_enum_slot,
      NGX_STREAM_MAIN_CONF_OFFSET,
      offsetof(ngx_stream_relay_main_conf_t, spool_sync),
      &ngx_stream_relay_spool_syncs },

    { ngx_string("relay_spool_journal_size"),
      NGX_STREAM_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_STREAM_MAIN_CONF_OFFSET,
      offsetof(ngx_stream_relay_main_conf_t, journal_size),
      NULL },

    { ngx_string("relay_spool_memory"),
      NGX_STREAM_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_STREAM_MAIN_CONF_OFFSET,
      offsetof(ngx_stream_relay_main_conf_t, spool_memory),
      NULL },

    { ngx_string("relay_in_flow_memory"),
      NGX_STREAM_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_STREAM_MAIN_CONF_OFFSET,
      offsetof(ngx_stream_relay_main_conf_t, in_flow_memory),
      NULL },

    { ngx_string("relay_spool_checkpoint_interval"),
      NGX_STREAM_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_STREAM_MAIN_CONF_OFFSET,
      offsetof(ngx_stream_relay_main_conf_t, checkpoint_interval),
      NULL },

    { ngx_string("relay_maildir"),
      NGX_STREAM_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_STREAM_MAIN_CONF_OFFSET,
      offsetof(ngx_stream_relay_main_conf_t, maildir),
      NULL },

    { ngx_string("relay_hostname"),
      NGX_STREAM_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_STREAM_MAIN_CONF_OFFSET,
      offsetof(ngx_stream_relay_main_conf_t, hostname),
      NULL },

    { ngx_string("relay_thread_pool"),
      NGX_STREAM_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_STREAM_MAIN_CONF_OFFSET,
      offsetof(ngx_stream_relay_main_conf_t, thread_pool_name),
      NULL },

    { ngx_string("relay_queue_scan_interval"),
      NGX_STREAM_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_STREAM_MAIN_CONF_OFFSET,
      offsetof(ngx_stream_relay_main_conf_t, scan_interval),
      NULL },

    { ngx_string("relay_queue_snapshot_interval"),
      NGX_STREAM_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_STREAM_MAIN_CONF_OFFSET,
      offsetof(ngx_stream_relay_main_conf_t, snapshot_interval),
      NULL },

    { ngx_string("relay_local_domain"),
      NGX_STREAM_MAIN_CONF|NGX_CONF_TAKE12,
      ngx_stream_relay_local_domain,
      NGX_STREAM_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("relay_delivery"),
      NGX_STREAM_MAIN_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_STREAM_MAIN_CONF_OFFSET,
      offsetof(ngx_stream_relay_main_conf_t, delivery),
      NULL },

    { ngx_string("relay_resolver"),
      NGX_STREAM_MAIN_CONF|NGX_CONF_1MORE,
      ngx_stream_relay_resolver,
      NGX_STREAM_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("relay_dnssec"),
      NGX_STREAM_MAIN_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_STREAM_MAIN_CONF_OFFSET,
      offsetof(ngx_stream_relay_main_conf_t, dnssec),
      NULL },

    { ngx_string("relay_mta_sts"),
      NGX_STREAM_MAIN_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_STREAM_MAIN_CONF_OFFSET,
      offsetof(ngx_stream_relay_main_conf_t, mta_sts),
      NULL },

    { ngx_string("relay_mta_sts_cache"),
      NGX_STREAM_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_STREAM_MAIN_CONF_OFFSET,
      offsetof(ngx_stream_relay_main_conf_t, mta_sts_cache),
      NULL },

    { ngx_string("relay_mta_sts_trusted_certificate"),
      NGX_STREAM_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_STREAM_MAIN_CONF_OFFSET,
      offsetof(ngx_stream_relay_main_conf_t, mta_sts_trusted),
      NULL },

    { ngx_string("relay_mta_sts_timeout"),
      NGX_STREAM_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_STREAM_MAIN_CONF_OFFSET,
      offsetof(ngx_stream_relay_main_conf_t, mta_sts_timeout),
      NULL },

    { ngx_string("relay_resolver_timeout"),
      NGX_STREAM_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_STREAM_MAIN_CONF_OFFSET,
      offsetof(ngx_stream_relay_main_conf_t, resolver_timeout),
      NULL },

    { ngx_string("relay_route"),
      NGX_STREAM_MAIN_CONF|NGX_CONF_1MORE,
      ngx_stream_relay_statement,
      NGX_STREAM_MAIN_CONF_OFFSET,
      0,
      "route" },

    { ngx_string("relay_backup_mx"),
      NGX_STREAM_MAIN_CONF|NGX_CONF_1MORE,
      ngx_stream_relay_statement,
      NGX_STREAM_MAIN_CONF_OFFSET,
      0,
      "backup_mx" },

    { ngx_string("relay_fallback_relay"),
      NGX_STREAM_MAIN_CONF|NGX_CONF_1MORE,
      ngx_stream_relay_statement,
      NGX_STREAM_MAIN_CONF_OFFSET,
      0,
      "fallback_relay" },

    { ngx_string("relay_smtp_port"),
      NGX_STREAM_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_STREAM_MAIN_CONF_OFFSET,
      offsetof(ngx_stream_relay_main_conf_t, smtp_port),
      NULL },

    { ngx_string("relay_connect_timeout"),
      NGX_STREAM_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_STREAM_MAIN_CONF_OFFSET,
      offsetof(ngx_stream_relay_main_conf_t, connect_timeout),
      NULL },

    { ngx_string("relay_smtp_timeout"),
      NGX_STREAM_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_STREAM_MAIN_CONF_OFFSET,
      offsetof(ngx_stream_relay_main_conf_t, smtp_timeout),
      NULL },

    { ngx_string("relay_tls_policy"),
      NGX_STREAM_MAIN_CONF|NGX_CONF_1MORE,
      ngx_stream_relay_statement,
      NGX_STREAM_MAIN_CONF_OFFSET,
      0,
      "tls" },

    { ngx_string("relay_dkim"),
      NGX_STREAM_MAIN_CONF|NGX_CONF_2MORE,
      ngx_stream_relay_statement,
      NGX_STREAM_MAIN_CONF_OFFSET,
      0,
      "dkim" },

    { ngx_string("relay_tls_trusted_certificate"),
      NGX_STREAM_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_STREAM_MAIN_CONF_OFFSET,
      offsetof(ngx_stream_relay_main_conf_t, tls_trusted),
      NULL },

    { ngx_string("relay_connection_reuse"),
      NGX_STREAM_MAIN_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_STREAM_MAIN_CONF_OFFSET,
      offsetof(ngx_stream_relay_main_conf_t, conn_reuse),
      NULL },

    { ngx_string("relay_connection_reuse_limit"),
      NGX_STREAM_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_STREAM_MAIN_CONF_OFFSET,
      offsetof(ngx_stream_relay_main_conf_t, conn_reuse_limit),
      NULL },

    { ngx_string("relay_connection_idle_timeout"),
      NGX_STREAM_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_STREAM_MAIN_CONF_OFFSET,
      offsetof(ngx_stream_relay_main_conf_t, conn_idle_timeout),
      NULL },

    { ngx_string("relay_destination_concurrency"),
      NGX_STREAM_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_STREAM_MAIN_CONF_OFFSET,
      offsetof(ngx_stream_relay_main_conf_t, dest_concurrency),
      NULL },

    { ngx_string("relay_max_rcpts_per_transaction"),
      NGX_STREAM_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_STREAM_MAIN_CONF_OFFSET,
      offsetof(ngx_stream_relay_main_conf_t, rcpts_per_txn),
      NULL },

    /* nginx.conf's "retry *" statement, a field each */

    { ngx_string("relay_retry_backoff"),
      NGX_STREAM_MAIN_CONF|NGX_CONF_TAKE2,
      ngx_stream_relay_retry_backoff,
      NGX_STREAM_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("relay_delay_warning"),
      NGX_STREAM_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_stream_relay_retry_time,
      NGX_STREAM_MAIN_CONF_OFFSET,
      offsetof(ngx_stream_relay_main_conf_t, policy.retry.delay_warning),
      NULL },

    { ngx_string("relay_queue_lifetime"),
      NGX_STREAM_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_stream_relay_retry_time,
      NGX_STREAM_MAIN_CONF_OFFSET,
      offsetof(ngx_stream_relay_main_conf_t, policy.retry.lifetime),
      NULL },

    { ngx_string("relay_starttls"),
      NGX_STREAM_MAIN_CONF|NGX_STREAM_SRV_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_STREAM_SRV_CONF_OFFSET,
      offsetof(ngx_stream_relay_srv_conf_t, starttls),
      NULL },

    { ngx_string("relay_auth_file"),
      NGX_STREAM_MAIN_CONF|NGX_STREAM_SRV_CONF|NGX_CONF_TAKE1,
      ngx_stream_relay_auth_file,
      NGX_STREAM_SRV_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("relay_trusted_networks"),
      NGX_STREAM_MAIN_CONF|NGX_STREAM_SRV_CONF|NGX_CONF_1MORE,
      ngx_stream_relay_trusted_networks,
      NGX_STREAM_SRV_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("relay_max_message_size"),
      NGX_STREAM_MAIN_CONF|NGX_STREAM_SRV_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_off_slot,
      NGX_STREAM_SRV_CONF_OFFSET,
      offsetof(ngx_stream_relay_srv_conf_t, max_message_size),
      NULL },

    { ngx_string("relay_max_recipients"),
      NGX_STREAM_MAIN_CONF|NGX_STREAM_SRV_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_STREAM_SRV_CONF_OFFSET,
      offsetof(ngx_stream_relay_srv_conf_t, max_recipients),
      NULL },

    { ngx_string("relay_max_errors"),
      NGX_STREAM_MAIN_CONF|NGX_STREAM_SRV_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_STREAM_SRV_CONF_OFFSET,
      offsetof(ngx_stream_relay_srv_conf_t, max_errors),
      NULL },

    { ngx_string("relay_timeout"),
      NGX_STREAM_MAIN_CONF|NGX_STREAM_SRV_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_STREAM_SRV_CONF_OFFSET,
      offsetof(ngx_stream_relay_srv_conf_t, timeout),
      NULL },

    { ngx_string("relay_strict_pipelining"),
      NGX_STREAM_MAIN_CONF|NGX_STREAM_SRV_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_STREAM_SRV_CONF_OFFSET,
      offsetof(ngx_stream_relay_srv_conf_t, strict_pipelining),
      NULL },

    { ngx_string("relay_min_data_rate"),
      NGX_STREAM_MAIN_CONF|NGX_STREAM_SRV_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_STREAM_SRV_CONF_OFFSET,
      offsetof(ngx_stream_relay_srv_conf_t, min_data_rate),
      NULL },

    { ngx_string("relay_max_sessions_per_ip"),
      NGX_STREAM_MAIN_CONF|NGX_STREAM_SRV_CONF|NGX_CONF_TAKE1,
      ngx_stream_relay_client_limit,
      NGX_STREAM_SRV_CONF_OFFSET,
      offsetof(ngx_stream_relay_srv_conf_t, client_limits.sessions),
      NULL },

    { ngx_string("relay_max_connections_per_ip"),
      NGX_STREAM_MAIN_CONF|NGX_STREAM_SRV_CONF|NGX_CONF_TAKE2,
      ngx_stream_relay_client_limit,
      NGX_STREAM_SRV_CONF_OFFSET,
      offsetof(ngx_stream_relay_srv_conf_t, client_limits.connections),
      NULL },

    { ngx_string("relay_max_auth_failures_per_ip"),
      NGX_STREAM_MAIN_CONF|NGX_STREAM_SRV_CONF|NGX_CONF_TAKE2,
      ngx_stream_relay_client_limit,
      NGX_STREAM_SRV_CONF_OFFSET,
      offsetof(ngx_stream_relay_srv_conf_t, client_limits.auth_failures),
      NULL },

    { ngx_string("relay_address_literals"),
      NGX_STREAM_MAIN_CONF|NGX_STREAM_SRV_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_STREAM_SRV_CONF_OFFSET,
      offsetof(ngx_stream_relay_srv_conf_t, address_literals),
      NULL },

    { ngx_string("relay_address_literal_local"),
      NGX_STREAM_MAIN_CONF|NGX_STREAM_SRV_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_STREAM_SRV_CONF_OFFSET,
      offsetof(ngx_stream_relay_srv_conf_t, literal_local),
      NULL },

      ngx_null_command
};


static ngx_stream_module_t  ngx_stream_relay_module_ctx = {
    ngx_stream_relay_add_variables,        /* preconfiguration */
    NULL,                                  /* postconfiguration */

    ngx_stream_relay_create_main_conf,     /* create main configuration */
    ngx_stream_relay_init_main_conf,       /* init main configuration */

    ngx_stream_relay_create_srv_conf,      /* create server configuration */
    ngx_stream_relay_merge_srv_conf        /* merge server configuration */
};


ngx_module_t  ngx_stream_relay_module = {
    NGX_MODULE_V1,
    &ngx_stream_relay_module_ctx,          /* module context */
    ngx_stream_relay_commands,             /* module directives */
    NGX_STREAM_MODULE,                     /* module type */
    NULL,                                  /* init master */
    ngx_stream_relay_init_module,          /* init module */
    ngx_stream_relay_init_process,         /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_stream_relay_exit_process,         /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


static void *
ngx_stream_relay_create_main_conf(ngx_conf_t *cf)
{
    ngx_stream_relay_main_conf_t  *rmcf;

    rmcf = ngx_pcalloc(cf->pool, sizeof(ngx_stream_relay_main_conf_t));
    if (rmcf == NULL) {
        return NULL;
    }

    rmcf->scan_interval = NGX_CONF_UNSET_MSEC;
    rmcf->snapshot_interval = NGX_CONF_UNSET_MSEC;
    rmcf->spool_sync = NGX_CONF_UNSET_UINT;
    rmcf->journal_size = NGX_CONF_UNSET_SIZE;
    rmcf->spool_memory = NGX_CONF_UNSET_SIZE;
    rmcf->in_flow_memory = NGX_CONF_UNSET_SIZE;
    rmcf->checkpoint_interval = NGX_CONF_UNSET_MSEC;
    rmcf->delivery = NGX_CONF_UNSET;
    rmcf->resolver_timeout = NGX_CONF_UNSET_MSEC;
    rmcf->dnssec = NGX_CONF_UNSET;
    rmcf->mta_sts = NGX_CONF_UNSET;
    rmcf->mta_sts_timeout = NGX_CONF_UNSET_MSEC;
    rmcf->connect_timeout = NGX_CONF_UNSET_MSEC;
    rmcf->smtp_timeout = NGX_CONF_UNSET_MSEC;
    rmcf->smtp_port = NGX_CONF_UNSET;
    rmcf->conn_reuse = NGX_CONF_UNSET;
    rmcf->conn_reuse_limit = NGX_CONF_UNSET_UINT;
    rmcf->conn_idle_timeout = NGX_CONF_UNSET_MSEC;
    rmcf->dest_concurrency = NGX_CONF_UNSET_UINT;
    rmcf->rcpts_per_txn = NGX_CONF_UNSET_UINT;
    rmcf->control.zone_size = NGX_CONF_UNSET_SIZE;
    rmcf->limit_zone_size = NGX_CONF_UNSET_SIZE;
    rmcf->policy.limits.redis.database = NGX_CONF_UNSET;
    rmcf->policy.limits.redis.timeout = NGX_CONF_UNSET_MSEC;
    rmcf->policy.limits.fallback = NGX_CONF_UNSET_UINT;
    rmcf->policy.limits.nodes = NGX_CONF_UNSET_UINT;
    rmcf->control.status_interval = NGX_CONF_UNSET_MSEC;
    rmcf->metrics = NGX_CONF_UNSET;

    return rmcf;
}


static ngx_int_t
ngx_stream_relay_full_dir(ngx_conf_t *cf, ngx_str_t *dir, char *dflt)
{
    u_char  *p;

    if (dir->len == 0) {
        dir->data = (u_char *) dflt;
        dir->len = ngx_strlen(dflt);
    }

    if (ngx_conf_full_name(cf->cycle, dir, 0) != NGX_OK) {
        return NGX_ERROR;
    }

    if (dir->data[dir->len - 1] != '/') {
        p = ngx_pnalloc(cf->pool, dir->len + 1);
        if (p == NULL) {
            return NGX_ERROR;
        }

        ngx_memcpy(p, dir->data, dir->len);
        p[dir->len++] = '/';
        dir->data = p;
    }

    return NGX_OK;
}


/*
 * With controld: the zone for the fleet policy, the last-known-good
 * snapshot in the spool by default, mTLS unless "insecure" was asked for.
 */

static ngx_int_t
ngx_stream_relay_init_control(ngx_conf_t *cf,
    ngx_stream_relay_main_conf_t *rmcf)
{
    ngx_relay_control_conf_t  *ctl;

    ctl = &rmcf->control;

    ngx_conf_init_size_value(ctl->zone_size, 1024 * 1024);
    ngx_conf_init_msec_value(ctl->status_interval, 10000);

    if (ctl->address.len == 0) {
        return NGX_OK;
    }

    if (ctl->node_id.len == 0) {
        ctl->node_id = cf->cycle->hostname;
    }

    /* who this node is to the selectors of scopes and canaries */

    ctl->node.id = ngx_pnalloc(cf->pool, ctl->node_id.len + 1);
    if (ctl->node.id == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy((u_char *) ctl->node.id, ctl->node_id.data, ctl->node_id.len);
    ((u_char *) ctl->node.id)[ctl->node_id.len] = '\0';

    ctl->node.labels = ctl->labels->elts;
    ctl->node.nlabels = ctl->labels->nelts;

    if (ctl->state.len == 0) {
        ctl->state.len = rmcf->spool.len + sizeof("policy.pb") - 1;
        ctl->state.data = ngx_pnalloc(cf->pool, ctl->state.len + 1);
        if (ctl->state.data == NULL) {
            return NGX_ERROR;
        }

        ngx_sprintf(ctl->state.data, "%Vpolicy.pb%Z", &rmcf->spool);

    } else if (ngx_conf_full_name(cf->cycle, &ctl->state, 0) != NGX_OK) {
        return NGX_ERROR;
    }

    if (!ctl->insecure) {
        if (ctl->certificate.len == 0 || ctl->certificate_key.len == 0
            || ctl->trusted_certificate.len == 0)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"relay_control\" needs "
                               "\"relay_control_certificate\", "
                               "\"relay_control_certificate_key\" and "
                               "\"relay_control_trusted_certificate\" "
                               "(or \"insecure\")");
            return NGX_ERROR;
        }

        if (ngx_conf_full_name(cf->cycle, &ctl->certificate, 1) != NGX_OK
            || ngx_conf_full_name(cf->cycle, &ctl->certificate_key, 1)
               != NGX_OK
            || ngx_conf_full_name(cf->cycle, &ctl->trusted_certificate, 1)
               != NGX_OK)
        {
            return NGX_ERROR;
        }

        ctl->certificate_pem = ngx_relay_control_read_pem(cf,
                                                          &ctl->certificate);
        ctl->certificate_key_pem = ngx_relay_control_read_pem(cf,
                                                     &ctl->certificate_key);
        ctl->trusted_certificate_pem = ngx_relay_control_read_pem(cf,
                                                 &ctl->trusted_certificate);

        if (ctl->certificate_pem == NULL || ctl->certificate_key_pem == NULL
            || ctl->trusted_certificate_pem == NULL)
        {
            return NGX_ERROR;
        }
    }

    if (ctl->zone_size < 64 * 1024) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"relay_control_zone_size\" must be at least "
                           "64k");
        return NGX_ERROR;
    }

    return ngx_relay_control_add_zone(cf, ctl, &rmcf->policy,
                                      &ngx_stream_relay_module);
}


/* relay_limit_redis*: defaults and checks */

static ngx_int_t
ngx_stream_relay_init_limits(ngx_conf_t *cf, ngx_relay_limits_conf_t *lc)
{
    ngx_conf_init_value(lc->redis.database, 0);
    ngx_conf_init_msec_value(lc->redis.timeout, 50);
    ngx_conf_init_uint_value(lc->fallback, NGX_RELAY_LIMIT_FALLBACK_LOCAL);
    ngx_conf_init_uint_value(lc->nodes, 1);

    if (lc->prefix.data == NULL) {
        ngx_str_set(&lc->prefix, "relay:");
    }

    if (lc->redis.database < 0 || lc->nodes == 0
        || lc->redis.timeout == 0)
    {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "\"relay_limit_redis_database\" must not be "
                      "negative, \"relay_limit_fleet_nodes\" and "
                      "\"relay_limit_redis_timeout\" must be above 0");
        return NGX_ERROR;
    }

    if (lc->redis.user.len && lc->redis.password.len == 0) {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "\"relay_limit_redis_user\" needs "
                      "\"relay_limit_redis_password\"");
        return NGX_ERROR;
    }

    if (lc->redis.addrs == NULL
        && (lc->redis.user.len || lc->redis.password.len))
    {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "\"relay_limit_redis_user\" and "
                      "\"relay_limit_redis_password\" need "
                      "\"relay_limit_redis\"");
        return NGX_ERROR;
    }

    return NGX_OK;
}


static char *
ngx_stream_relay_init_main_conf(ngx_conf_t *cf, void *conf)
{
    ngx_stream_relay_main_conf_t  *rmcf = conf;

    ngx_str_t  name;

    if (ngx_stream_relay_full_dir(cf, &rmcf->spool, "spool") != NGX_OK
        || ngx_stream_relay_full_dir(cf, &rmcf->maildir, "maildir")
           != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    if (rmcf->hostname.len == 0) {
        rmcf->hostname = cf->cycle->hostname;
    }

    if (ngx_stream_relay_own_addrs(cf, rmcf) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    if (ngx_stream_relay_init_control(cf, rmcf) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    /* the observers' zone: counters that outlive reloads */

    ngx_conf_init_value(rmcf->metrics, 1);

    if (ngx_relay_metrics_add_zone(cf) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    if (ngx_stream_relay_init_limits(cf, &rmcf->policy.limits) != NGX_OK
        || ngx_relay_policy_init_conf(cf, &rmcf->policy) != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    /* counters for inbound limits, also when only the fleet may set some */

    ngx_conf_init_size_value(rmcf->limit_zone_size, 1024 * 1024);

    if ((rmcf->policy.local->limits || rmcf->control.address.len
         || rmcf->delivery == 1)
        && ngx_relay_limits_add_zone(cf, rmcf->limit_zone_size,
                                     &rmcf->policy.limits_zone,
                                     &ngx_stream_relay_module)
           != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    ngx_conf_init_msec_value(rmcf->scan_interval, 600000);
    ngx_conf_init_msec_value(rmcf->snapshot_interval, 60000);
    ngx_conf_init_uint_value(rmcf->spool_sync, NGX_RELAY_SYNC_JOURNAL);
    ngx_conf_init_size_value(rmcf->journal_size, 128 * 1024 * 1024);
    ngx_conf_init_size_value(rmcf->spool_memory, 128 * 1024 * 1024);
    ngx_conf_init_size_value(rmcf->in_flow_memory, 16 * 1024 * 1024);
    ngx_conf_init_msec_value(rmcf->checkpoint_interval, 500);

    if (rmcf->journal_size < 2 * 64 * 1024) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"relay_spool_journal_size\" must be at least "
                           "128k");
        return NGX_CONF_ERROR;
    }

    rmcf->journal_size = ngx_align(rmcf->journal_size, 2 * 4096);

    if (rmcf->checkpoint_interval == 0) {
        rmcf->checkpoint_interval = 1;
    }
    ngx_conf_init_value(rmcf->delivery, 0);
    ngx_conf_init_msec_value(rmcf->resolver_timeout, 5000);
    ngx_conf_init_value(rmcf->dnssec, 0);
    ngx_conf_init_value(rmcf->mta_sts, 0);
    ngx_conf_init_msec_value(rmcf->mta_sts_timeout, 10000);
    ngx_conf_init_msec_value(rmcf->connect_timeout, 30000);
    ngx_conf_init_msec_value(rmcf->smtp_timeout, 300000);

    ngx_conf_init_value(rmcf->smtp_port, 25);
    ngx_conf_init_value(rmcf->conn_reuse, 1);
    ngx_conf_init_uint_value(rmcf->conn_reuse_limit, 100);
    ngx_conf_init_msec_value(rmcf->conn_idle_timeout, 5000);
    ngx_conf_init_uint_value(rmcf->dest_concurrency, 20);
    ngx_conf_init_uint_value(rmcf->rcpts_per_txn, 50);

    if (rmcf->conn_reuse_limit == 0 || rmcf->dest_concurrency == 0
        || rmcf->rcpts_per_txn == 0)
    {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "\"relay_connection_reuse_limit\", "
                      "\"relay_destination_concurrency\" and "
                      "\"relay_max_rcpts_per_transaction\" must be "
                      "at least 1");
        return NGX_CONF_ERROR;
    }

    if (rmcf->smtp_port < 1 || rmcf->smtp_port > 65535) {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "invalid \"relay_smtp_port\" %i", rmcf->smtp_port);
        return NGX_CONF_ERROR;
    }

    rmcf->policy.smtp_port = (in_port_t) rmcf->smtp_port;

    if (rmcf->thread_pool_name.len == 0) {
        ngx_str_set(&rmcf->thread_pool_name, "default");
    }

    name = rmcf->thread_pool_name;

    rmcf->thread_pool = ngx_thread_pool_add(cf, &name);
    if (rmcf->thread_pool == NULL) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static void *
ngx_stream_relay_create_srv_conf(ngx_conf_t *cf)
{
    ngx_stream_relay_srv_conf_t  *conf;

    conf = ngx_pcalloc(cf->pool, sizeof(ngx_stream_relay_srv_conf_t));
    if (conf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     conf->ssl = NULL;
     */

    conf->starttls = NGX_CONF_UNSET;
    conf->auth_users = NGX_CONF_UNSET_PTR;
    conf->trusted = NGX_CONF_UNSET_PTR;
    conf->max_message_size = NGX_CONF_UNSET;
    conf->max_recipients = NGX_CONF_UNSET_UINT;
    conf->max_errors = NGX_CONF_UNSET_UINT;
    conf->timeout = NGX_CONF_UNSET_MSEC;
    conf->strict_pipelining = NGX_CONF_UNSET;
    conf->address_literals = NGX_CONF_UNSET;
    conf->literal_local = NGX_CONF_UNSET;
    conf->min_data_rate = NGX_CONF_UNSET_SIZE;
    conf->client_limits.sessions = NGX_CONF_UNSET_UINT;
    conf->client_limits.connections = NGX_CONF_UNSET_UINT;
    conf->client_limits.auth_failures = NGX_CONF_UNSET_UINT;

    return conf;
}


static char *
ngx_stream_relay_merge_srv_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_stream_relay_srv_conf_t *prev = parent;
    ngx_stream_relay_srv_conf_t *conf = child;

    ngx_conf_merge_value(conf->starttls, prev->starttls, 0);
    ngx_conf_merge_str_value(conf->tenant, prev->tenant, "");
    ngx_conf_merge_ptr_value(conf->auth_users, prev->auth_users, NULL);
    ngx_conf_merge_ptr_value(conf->trusted, prev->trusted, NULL);
    ngx_conf_merge_off_value(conf->max_message_size, prev->max_message_size,
                             10 * 1024 * 1024);
    ngx_conf_merge_uint_value(conf->max_recipients, prev->max_recipients,
                              1000);
    ngx_conf_merge_uint_value(conf->max_errors, prev->max_errors, 20);
    ngx_conf_merge_msec_value(conf->timeout, prev->timeout, 300000);
    ngx_conf_merge_value(conf->strict_pipelining, prev->strict_pipelining,
                         1);
    ngx_conf_merge_value(conf->address_literals, prev->address_literals, 1);
    ngx_conf_merge_value(conf->literal_local, prev->literal_local, 0);
    ngx_conf_merge_size_value(conf->min_data_rate, prev->min_data_rate, 500);

    if (conf->client_limits.sessions == NGX_CONF_UNSET_UINT) {
        conf->client_limits.sessions = prev->client_limits.sessions;
    }

    if (conf->client_limits.connections == NGX_CONF_UNSET_UINT) {
        conf->client_limits.connections = prev->client_limits.connections;
        conf->client_limits.connection_window =
                                        prev->client_limits.connection_window;
    }

    if (conf->client_limits.auth_failures == NGX_CONF_UNSET_UINT) {
        conf->client_limits.auth_failures = prev->client_limits.auth_failures;
        conf->client_limits.auth_window = prev->client_limits.auth_window;
    }

    ngx_conf_init_uint_value(conf->client_limits.sessions, 0);
    ngx_conf_init_uint_value(conf->client_limits.connections, 0);
    ngx_conf_init_uint_value(conf->client_limits.auth_failures, 0);

    if (conf->starttls && ngx_stream_relay_setup_tls(cf, conf) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/*
 * STARTTLS uses the server's own ssl_certificate, ssl_protocols and
 * ssl_ciphers.  The stream ssl module builds its context only for
 * "listen ... ssl", so we build ours from its (already merged) settings.
 */

static ngx_int_t
ngx_stream_relay_setup_tls(ngx_conf_t *cf, ngx_stream_relay_srv_conf_t *conf)
{
    ngx_pool_cleanup_t     *cln;
    ngx_stream_ssl_conf_t  *sslcf;

    sslcf = ngx_stream_conf_get_module_srv_conf(cf, ngx_stream_ssl_module);

    if (sslcf->certificates == NULL || sslcf->certificate_keys == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"relay_starttls on\" needs \"ssl_certificate\" "
                           "and \"ssl_certificate_key\" in the server");
        return NGX_ERROR;
    }

    conf->ssl = ngx_pcalloc(cf->pool, sizeof(ngx_ssl_t));
    if (conf->ssl == NULL) {
        return NGX_ERROR;
    }

    conf->ssl->log = cf->log;

    if (ngx_ssl_create(conf->ssl, sslcf->protocols, NULL) != NGX_OK) {
        return NGX_ERROR;
    }

    cln = ngx_pool_cleanup_add(cf->pool, 0);
    if (cln == NULL) {
        ngx_ssl_cleanup_ctx(conf->ssl);
        return NGX_ERROR;
    }

    cln->handler = ngx_ssl_cleanup_ctx;
    cln->data = conf->ssl;

    if (ngx_ssl_certificates(cf, conf->ssl, sslcf->certificates,
                             sslcf->certificate_keys, sslcf->passwords)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (ngx_ssl_ciphers(cf, conf->ssl, &sslcf->ciphers,
                        sslcf->prefer_server_ciphers)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (ngx_ssl_dhparam(cf, conf->ssl, &sslcf->dhparam) != NGX_OK) {
        return NGX_ERROR;
    }

    if (ngx_ssl_ecdh_curve(cf, conf->ssl, &sslcf->ecdh_curve) != NGX_OK) {
        return NGX_ERROR;
    }

    return NGX_OK;
}


static char *
ngx_stream_relay_smtp(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_stream_core_srv_conf_t    *cscf;
    ngx_stream_relay_main_conf_t  *rmcf;

    cscf = ngx_stream_conf_get_module_srv_conf(cf, ngx_stream_core_module);

    if (cscf->handler) {
        return "is duplicate";
    }

    cscf->handler = ngx_stream_relay_init_session;

    rmcf = ngx_stream_conf_get_module_main_conf(cf, ngx_stream_relay_module);
    rmcf->enabled = 1;

    return NGX_CONF_OK;
}


static char *
ngx_stream_relay_local_domain(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_stream_relay_main_conf_t  *rmcf = conf;

    u_char              *buf;
    ngx_str_t           *value, path, name;
    const char          *why;
    ngx_relay_domain_t  *d;

    value = cf->args->elts;

    /* a domain in U-labels is matched as its A-labels (RCPT has those) */

    buf = ngx_pnalloc(cf->pool, NGX_RELAY_IDN_MAX);
    if (buf == NULL) {
        return NGX_CONF_ERROR;
    }

    if (ngx_relay_idn_to_ascii(&value[1], buf, &name, &why) != NGX_OK) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid domain \"%V\": %s", &value[1], why);
        return NGX_CONF_ERROR;
    }

    value[1] = name;

    if (rmcf->domains == NULL) {
        rmcf->domains = ngx_array_create(cf->pool, 4,
                                         sizeof(ngx_relay_domain_t));
        if (rmcf->domains == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    if (ngx_relay_maildir_local_domain(rmcf->domains, &value[1]) != NULL) {
        return "is duplicate";
    }

    if (value[1].len == 0 || value[1].len > NGX_RELAY_MAX_DOMAIN) {
        return "has an invalid domain";
    }

    d = ngx_array_push(rmcf->domains);
    if (d == NULL) {
        return NGX_CONF_ERROR;
    }

    d->name = value[1];
    ngx_strlow(d->name.data, d->name.data, d->name.len);
    d->users = NULL;

    if (cf->args->nelts == 3) {
        if (ngx_strncmp(value[2].data, "users=", 6) != 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid parameter \"%V\"", &value[2]);
            return NGX_CONF_ERROR;
        }

        path.data = value[2].data + 6;
        path.len = value[2].len - 6;

        d->users = ngx_relay_users_load(cf, &path, &d->name);
        if (d->users == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    return NGX_CONF_OK;
}


static char *
ngx_stream_relay_trusted_networks(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_stream_relay_srv_conf_t  *rscf = conf;

    ngx_int_t    rc;
    ngx_str_t   *value;
    ngx_uint_t   i;
    ngx_cidr_t  *cidr;

    if (rscf->trusted != NGX_CONF_UNSET_PTR) {
        return "is duplicate";
    }

    rscf->trusted = ngx_array_create(cf->pool, 4, sizeof(ngx_cidr_t));
    if (rscf->trusted == NULL) {
        return NGX_CONF_ERROR;
    }

    value = cf->args->elts;

    for (i = 1; i < cf->args->nelts; i++) {
        cidr = ngx_array_push(rscf->trusted);
        if (cidr == NULL) {
            return NGX_CONF_ERROR;
        }

        rc = ngx_ptocidr(&value[i], cidr);

        if (rc == NGX_ERROR) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid network \"%V\"", &value[i]);
            return NGX_CONF_ERROR;
        }

        if (rc == NGX_DONE) {
            ngx_conf_log_error(NGX_LOG_WARN, cf, 0,
                               "low address bits of %V are meaningless",
                               &value[i]);
        }
    }

    return NGX_CONF_OK;
}


static char *
ngx_stream_relay_auth_file(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_stream_relay_srv_conf_t  *rscf = conf;

    ngx_str_t  *value;

    if (rscf->auth_users != NGX_CONF_UNSET_PTR) {
        return "is duplicate";
    }

    value = cf->args->elts;

    rscf->auth_users = ngx_relay_users_load(cf, &value[1], NULL);
    if (rscf->auth_users == NULL) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/* relay_route, relay_limit, ...: a policy statement, named in cmd->post */

static char *
ngx_stream_relay_statement(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_stream_relay_main_conf_t  *rmcf = conf;

    return ngx_relay_policy_directive(cf, &rmcf->policy, cmd->post);
}


/* relay_retry_backoff MIN MAX: "retry * min=MIN max=MAX ..." */

static char *
ngx_stream_relay_retry_backoff(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_stream_relay_main_conf_t  *rmcf = conf;

    ngx_str_t  *value;

    value = cf->args->elts;

    rmcf->policy.retry.min = value[1];
    rmcf->policy.retry.max = value[2];

    return ngx_relay_policy_retry_directive(cf, &rmcf->policy);
}


/* relay_queue_lifetime, relay_delay_warning: one field of "retry *" */

static char *
ngx_stream_relay_retry_time(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_stream_relay_main_conf_t  *rmcf = conf;

    ngx_str_t  *field, *value;

    field = (ngx_str_t *) ((char *) conf + cmd->offset);

    if (field->data) {
        return "is duplicate";
    }

    value = cf->args->elts;
    *field = value[1];

    return ngx_relay_policy_retry_directive(cf, &rmcf->policy);
}


static char *
ngx_stream_relay_resolver(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_stream_relay_main_conf_t  *rmcf = conf;

    u_char      *p;
    size_t       len;
    ngx_str_t   *value;
    ngx_uint_t   i;

    if (rmcf->resolver.len) {
        return "is duplicate";
    }

    value = cf->args->elts;
    len = 0;

    for (i = 1; i < cf->args->nelts; i++) {
        len += value[i].len + 1;
    }

    p = ngx_pnalloc(cf->pool, len);
    if (p == NULL) {
        return NGX_CONF_ERROR;
    }

    rmcf->resolver.data = p;

    /* c-ares' "host:port,host:port" */

    for (i = 1; i < cf->args->nelts; i++) {
        if (i > 1) {
            *p++ = ',';
        }

        p = ngx_cpymem(p, value[i].data, value[i].len);
    }

    rmcf->resolver.len = p - rmcf->resolver.data;

    return NGX_CONF_OK;
}


/* relay_limit_redis address [address ...]; (host:port, unix:path) */

static char *
ngx_stream_relay_limit_redis(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_stream_relay_main_conf_t  *rmcf = conf;

    char        *rv;
    ngx_str_t   *value;
    ngx_uint_t   i;

    if (rmcf->policy.limits.redis.addrs) {
        return "is duplicate";
    }

    value = cf->args->elts;

    for (i = 1; i < cf->args->nelts; i++) {
        rv = ngx_relay_redis_add_addr(cf, &rmcf->policy.limits.redis,
                                      &value[i]);
        if (rv != NGX_CONF_OK) {
            return rv;
        }
    }

    return NGX_CONF_OK;
}


/*
 * relay_max_sessions_per_ip N; relay_max_connections_per_ip N TIME;
 * relay_max_auth_failures_per_ip N TIME: counted per client address in
 * the "relay_clients" zone (ngx_relay_clients.c), made with the first.
 */

static char *
ngx_stream_relay_client_limit(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_stream_relay_srv_conf_t  *rscf = conf;

    ngx_int_t                      n;
    ngx_str_t                     *value;
    ngx_uint_t                    *limit;
    time_t                        *window;
    ngx_stream_relay_main_conf_t  *rmcf;

    limit = (ngx_uint_t *) ((char *) conf + cmd->offset);
    window = (limit == &rscf->client_limits.connections)
             ? &rscf->client_limits.connection_window
             : &rscf->client_limits.auth_window;

    if (*limit != NGX_CONF_UNSET_UINT) {
        return "is duplicate";
    }

    value = cf->args->elts;

    n = ngx_atoi(value[1].data, value[1].len);
    if (n == NGX_ERROR) {
        return "has an invalid number";
    }

    *limit = (ngx_uint_t) n;

    if (cf->args->nelts == 3) {
        *window = ngx_parse_time(&value[2], 1);

        if (*window == (time_t) NGX_ERROR || *window == 0) {
            return "has an invalid time";
        }
    }

    rmcf = ngx_stream_conf_get_module_main_conf(cf, ngx_stream_relay_module);

    if (rmcf->clients_zone == NULL
        && ngx_relay_clients_add_zone(cf, &rmcf->clients_zone,
                                      &ngx_stream_relay_module)
           != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/*
 * relay_control address[,address...] [address ...] [node=ID]
 *     [labels=NAME=VALUE[,NAME=VALUE...]] [insecure];
 */

static char *
ngx_stream_relay_control(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_stream_relay_main_conf_t  *rmcf = conf;

    u_char                    *p, *last, *comma;
    ngx_str_t                 *value, *t;
    ngx_uint_t                 i;
    ngx_relay_control_conf_t  *ctl;

    ctl = &rmcf->control;

    if (ctl->address.len) {
        return "is duplicate";
    }

    value = cf->args->elts;

    ctl->targets = ngx_array_create(cf->pool, 2, sizeof(ngx_str_t));
    ctl->labels = ngx_array_create(cf->pool, 2, sizeof(relay_scope_label_t));
    if (ctl->targets == NULL || ctl->labels == NULL) {
        return NGX_CONF_ERROR;
    }

    for (i = 1; i < cf->args->nelts; i++) {
        if (ngx_strncmp(value[i].data, "node=", 5) == 0) {
            if (value[i].len == 5) {
                goto invalid;
            }

            ctl->node_id.data = value[i].data + 5;
            ctl->node_id.len = value[i].len - 5;
            continue;
        }

        if (ngx_strncmp(value[i].data, "labels=", 7) == 0) {
            if (ngx_stream_relay_control_labels(cf, ctl, &value[i])
                != NGX_OK)
            {
                return NGX_CONF_ERROR;
            }

            continue;
        }

        if (ngx_strcmp(value[i].data, "insecure") == 0) {
            ctl->insecure = 1;
            continue;
        }

        if (ngx_strlchr(value[i].data, value[i].data + value[i].len, '=')) {
            goto invalid;
        }

        /* controld addresses: "a:7443,b:7443" or several words */

        if (ctl->address.len == 0) {
            ctl->address = value[i];
        }

        p = value[i].data;
        last = p + value[i].len;

        while (p < last) {
            comma = ngx_strlchr(p, last, ',');
            if (comma == NULL) {
                comma = last;
            }

            if (comma == p) {
                goto invalid;
            }

            t = ngx_array_push(ctl->targets);
            if (t == NULL) {
                return NGX_CONF_ERROR;
            }

            t->len = comma - p;
            t->data = ngx_pnalloc(cf->pool, t->len + 1);
            if (t->data == NULL) {
                return NGX_CONF_ERROR;
            }

            ngx_memcpy(t->data, p, t->len);
            t->data[t->len] = '\0';

            p = comma + 1;
        }
    }

    if (ctl->targets->nelts == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"relay_control\" needs the address of controld");
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "invalid parameter \"%V\"",
                       &value[i]);
    return NGX_CONF_ERROR;
}


/* labels=NAME=VALUE[,NAME=VALUE...]: checked as selectors will read them */

static ngx_int_t
ngx_stream_relay_control_labels(ngx_conf_t *cf,
    ngx_relay_control_conf_t *ctl, ngx_str_t *word)
{
    char                 *s, *term, *eq, *next;
    ngx_uint_t            i;
    const char           *why;
    relay_scope_label_t  *l, *all;

    s = ngx_pnalloc(cf->pool, word->len - 7 + 1);
    if (s == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(s, word->data + 7, word->len - 7);
    s[word->len - 7] = '\0';

    for (term = s; term; term = next) {
        next = strchr(term, ',');
        if (next) {
            *next++ = '\0';
        }

        eq = strchr(term, '=');
        if (eq == NULL) {
            why = "a label is NAME=VALUE";
            goto invalid;
        }

        *eq = '\0';

        why = relay_scope_label_check(term, eq + 1);
        if (why) {
            goto invalid;
        }

        all = ctl->labels->elts;

        for (i = 0; i < ctl->labels->nelts; i++) {
            if (ngx_strcmp(all[i].name, term) == 0) {
                why = "a label is given twice";
                goto invalid;
            }
        }

        l = ngx_array_push(ctl->labels);
        if (l == NULL) {
            return NGX_ERROR;
        }

        l->name = term;
        l->value = eq + 1;
    }

    return NGX_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "invalid parameter \"%V\": %s",
                       word, why);
    return NGX_ERROR;
}


/*
 * This node's own addresses, for address literals: the stream
 * listeners', the interfaces' for a wildcard listener (read now, again at
 * each reload).
 */

static ngx_int_t
ngx_stream_relay_own_addrs(ngx_conf_t *cf, ngx_stream_relay_main_conf_t *rmcf)
{
    ngx_uint_t                    i;
    ngx_stream_listen_t          *ls;
    ngx_stream_core_main_conf_t  *cmcf;

    rmcf->own_addrs = ngx_array_create(cf->pool, 4,
                                       sizeof(ngx_relay_own_addr_t));
    if (rmcf->own_addrs == NULL) {
        return NGX_ERROR;
    }

    cmcf = ngx_stream_conf_get_module_main_conf(cf, ngx_stream_core_module);
    ls = cmcf->listen.elts;

    for (i = 0; i < cmcf->listen.nelts; i++) {
        if (ngx_relay_literal_add_own(rmcf->own_addrs, ls[i].sockaddr,
                                      ls[i].socklen, ls[i].wildcard, cf->log)
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


/* relay_accounting_log path [buffer=size] [flush=time] | off; */

static char *
ngx_stream_relay_accounting_log(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_stream_relay_main_conf_t  *rmcf = conf;

    return ngx_relay_account_directive(cf, &rmcf->account);
}


/* relay_bounce_rules file; an operator's rules before the built-in ones */

static char *
ngx_stream_relay_bounce_rules(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_stream_relay_main_conf_t  *rmcf = conf;

    char                 err[512];
    ngx_str_t           *value, path;
    ngx_pool_cleanup_t  *cln;

    if (rmcf->bounce_rules) {
        return "is duplicate";
    }

    value = cf->args->elts;
    path = value[1];

    if (ngx_conf_full_name(cf->cycle, &path, 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    rmcf->bounce_rules = ngx_pcalloc(cf->pool,
                                     sizeof(relay_classify_rules_t));
    cln = ngx_pool_cleanup_add(cf->pool, 0);

    if (rmcf->bounce_rules == NULL || cln == NULL) {
        return NGX_CONF_ERROR;
    }

    if (relay_classify_load(rmcf->bounce_rules, (char *) path.data, err,
                            sizeof(err))
        != 0)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "%s", err);
        return NGX_CONF_ERROR;
    }

    cln->handler = ngx_stream_relay_free_rules;
    cln->data = rmcf->bounce_rules;

    return NGX_CONF_OK;
}


static void
ngx_stream_relay_free_rules(void *data)
{
    relay_classify_free(data);
}


static ngx_int_t
ngx_stream_relay_init_module(ngx_cycle_t *cycle)
{
    ngx_core_conf_t               *ccf;
    ngx_stream_relay_main_conf_t  *rmcf;

    if (ngx_stream_cycle_get_module_main_conf(cycle, ngx_stream_module)
        == NULL)
    {
        return NGX_OK;
    }

    rmcf = ngx_stream_cycle_get_module_main_conf(cycle,
                                                 ngx_stream_relay_module);
    if (rmcf == NULL || !rmcf->enabled) {
        return NGX_OK;
    }

    /* what "nginx -V" cannot say: the module's own version */

    ngx_log_error(NGX_LOG_NOTICE, cycle->log, 0,
                  "nginx-relay/" NGX_RELAY_VERSION ", built for nginx/"
                  NGINX_VERSION);

    if (ngx_relay_spool_prepare_dirs(&rmcf->spool, cycle) != NGX_OK) {
        return NGX_ERROR;
    }

    /*
     * Journals of dead processes: written back if the machine went down
     * since, retired either way, before any worker scans the queue.
     */

    if (ngx_relay_journal_boot_id(cycle->log) != NGX_OK
        && rmcf->spool_sync == NGX_RELAY_SYNC_JOURNAL)
    {
        rmcf->spool_sync = NGX_RELAY_SYNC_SYNCFS;
    }

    /* one that cannot be restored now stays for the queue scans to retry */

    (void) ngx_relay_journal_recover_dirs(&rmcf->spool, cycle);

    rmcf->maildir.data[rmcf->maildir.len - 1] = '\0';

    if (ngx_create_dir(rmcf->maildir.data, 0700) == NGX_FILE_ERROR
        && ngx_errno != NGX_EEXIST)
    {
        ngx_log_error(NGX_LOG_EMERG, cycle->log, ngx_errno,
                      ngx_create_dir_n " \"%s\" failed", rmcf->maildir.data);
        rmcf->maildir.data[rmcf->maildir.len - 1] = '/';
        return NGX_ERROR;
    }

    ccf = (ngx_core_conf_t *) ngx_get_conf(cycle->conf_ctx, ngx_core_module);

    if (geteuid() == 0
        && chown((char *) rmcf->maildir.data, ccf->user, ccf->group) == -1)
    {
        ngx_log_error(NGX_LOG_EMERG, cycle->log, ngx_errno,
                      "chown(\"%s\") failed", rmcf->maildir.data);
        rmcf->maildir.data[rmcf->maildir.len - 1] = '/';
        return NGX_ERROR;
    }

    rmcf->maildir.data[rmcf->maildir.len - 1] = '/';

    return NGX_OK;
}


static ngx_int_t
ngx_stream_relay_init_process(ngx_cycle_t *cycle)
{
    ngx_core_conf_t               *ccf;
    ngx_relay_sched_t             *sc;
    ngx_stream_relay_main_conf_t  *rmcf;

    if (ngx_process != NGX_PROCESS_WORKER
        && ngx_process != NGX_PROCESS_SINGLE)
    {
        return NGX_OK;
    }

    if (ngx_stream_cycle_get_module_main_conf(cycle, ngx_stream_module)
        == NULL)
    {
        return NGX_OK;
    }

    rmcf = ngx_stream_cycle_get_module_main_conf(cycle,
                                                 ngx_stream_relay_module);
    if (rmcf == NULL || !rmcf->enabled) {
        return NGX_OK;
    }

    sc = ngx_pcalloc(cycle->pool, sizeof(ngx_relay_sched_t));
    if (sc == NULL) {
        return NGX_ERROR;
    }

    ccf = (ngx_core_conf_t *) ngx_get_conf(cycle->conf_ctx, ngx_core_module);

    if (ngx_relay_metrics_init_process(cycle, rmcf->metrics) != NGX_OK
        || ngx_relay_account_init_process(&rmcf->account,
                                          rmcf->thread_pool, cycle)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    sc->counters = ngx_relay_metrics_figures();
    sc->bounce_rules = rmcf->bounce_rules;
    sc->spool.path = rmcf->spool;
    sc->spool.thread_pool = rmcf->thread_pool;
    sc->spool.sequence = ngx_random() & 0xffff;
    sc->spool.sync = rmcf->spool_sync;
    sc->spool.journal.segment_size = rmcf->journal_size / 2;
    sc->spool.memory = rmcf->spool_memory;
    sc->spool.in_flow = rmcf->in_flow_memory;
    sc->spool.journal.interval = rmcf->checkpoint_interval;
    sc->maildir = rmcf->maildir;
    sc->hostname = rmcf->hostname;
    sc->domains = rmcf->domains;
    sc->policy = &rmcf->policy;
    sc->scan_interval = rmcf->scan_interval;
    sc->snapshot_interval = rmcf->snapshot_interval;
    sc->workers = ngx_process == NGX_PROCESS_SINGLE
                  ? 1 : (ngx_uint_t) ccf->worker_processes;
    sc->worker = ngx_process == NGX_PROCESS_SINGLE ? 0 : ngx_worker;

    if (rmcf->delivery
        && ngx_stream_relay_init_delivery(cycle, rmcf, sc) != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (ngx_relay_sched_init(sc, cycle) != NGX_OK) {
        return NGX_ERROR;
    }

    ngx_stream_relay_sched = sc;

    (void) ngx_relay_shape_init_worker(rmcf->policy.limits_zone);

    if (ngx_relay_limits_init_process(&rmcf->policy.limits, cycle->log)
        != NGX_OK)
    {
        ngx_log_error(NGX_LOG_ALERT, cycle->log, 0,
                      "relay limits: cannot start the Redis client");
    }

    if (ngx_relay_control_init_process(&rmcf->control, &rmcf->policy, sc,
                                       cycle)
        != NGX_OK)
    {
        ngx_log_error(NGX_LOG_ALERT, cycle->log, 0,
                      "relay control: cannot start the control client");
    }

    return NGX_OK;
}


static ngx_int_t
ngx_stream_relay_init_delivery(ngx_cycle_t *cycle,
    ngx_stream_relay_main_conf_t *rmcf, ngx_relay_sched_t *sc)
{
    ngx_relay_mtasts_conf_t     sts;
    ngx_relay_delivery_conf_t  *dc;

    dc = ngx_pcalloc(cycle->pool, sizeof(ngx_relay_delivery_conf_t));
    if (dc == NULL) {
        return NGX_ERROR;
    }

    dc->dns = ngx_relay_dns_create(&rmcf->resolver, rmcf->resolver_timeout,
                                   rmcf->dnssec, cycle->log);
    if (dc->dns == NULL) {
        return NGX_ERROR;
    }

    /*
     * Opportunistic STARTTLS towards other servers: encryption without
     * verification, as RFC 7435 has it; a context per worker.
     */

    dc->ssl = ngx_pcalloc(cycle->pool, sizeof(ngx_ssl_t));
    if (dc->ssl == NULL) {
        return NGX_ERROR;
    }

    dc->ssl->log = cycle->log;

    if (ngx_ssl_create(dc->ssl, NGX_SSL_TLSv1_2|NGX_SSL_TLSv1_3, NULL)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    /*
     * For relay_tls_policy ... verify: the chain is checked after the
     * handshake (SSL_get_verify_result), so the context verifies nothing
     * by itself and opportunistic TLS still works with any certificate.
     */

    if (rmcf->tls_trusted.len) {
        if (ngx_conf_full_name(cycle, &rmcf->tls_trusted, 1) != NGX_OK
            || SSL_CTX_load_verify_locations(dc->ssl->ctx,
                                    (char *) rmcf->tls_trusted.data, NULL)
               == 0)
        {
            ngx_ssl_error(NGX_LOG_EMERG, cycle->log, 0,
                          "relay_tls_trusted_certificate \"%V\" failed",
                          &rmcf->tls_trusted);
            return NGX_ERROR;
        }

    } else if (SSL_CTX_set_default_verify_paths(dc->ssl->ctx) == 0) {
        ngx_ssl_error(NGX_LOG_WARN, cycle->log, 0,
                      "SSL_CTX_set_default_verify_paths() failed");
    }

    /* MTA-STS (RFC 8461): a worker's policies, cached in the spool */

    if (rmcf->mta_sts) {
        ngx_memzero(&sts, sizeof(ngx_relay_mtasts_conf_t));

        if (rmcf->mta_sts_cache.len == 0) {
            rmcf->mta_sts_cache.len = rmcf->spool.len + sizeof("mta-sts/");
            rmcf->mta_sts_cache.data = ngx_pnalloc(cycle->pool,
                                                   rmcf->mta_sts_cache.len);
            if (rmcf->mta_sts_cache.data == NULL) {
                return NGX_ERROR;
            }

            ngx_sprintf(rmcf->mta_sts_cache.data, "%Vmta-sts/%Z",
                        &rmcf->spool);
            rmcf->mta_sts_cache.len--;

        } else if (ngx_conf_full_name(cycle, &rmcf->mta_sts_cache, 1)
                   != NGX_OK)
        {
            return NGX_ERROR;
        }

        sts.cache.len = rmcf->mta_sts_cache.len;
        sts.cache.data = ngx_pnalloc(cycle->pool, sts.cache.len + 2);
        if (sts.cache.data == NULL) {
            return NGX_ERROR;
        }

        /* with its "/" and a NUL */

        ngx_memcpy(sts.cache.data, rmcf->mta_sts_cache.data, sts.cache.len);

        if (sts.cache.data[sts.cache.len - 1] != '/') {
            sts.cache.data[sts.cache.len++] = '/';
        }

        sts.cache.data[sts.cache.len] = '\0';

        if (rmcf->mta_sts_trusted.len
            && ngx_conf_full_name(cycle, &rmcf->mta_sts_trusted, 1)
               != NGX_OK)
        {
            return NGX_ERROR;
        }

        sts.ca = rmcf->mta_sts_trusted;
        sts.timeout = rmcf->mta_sts_timeout;
        sts.dns = dc->dns;
        sts.thread_pool = rmcf->thread_pool;
        sts.log = cycle->log;

        dc->mtasts = ngx_relay_mtasts_create(&sts);
        if (dc->mtasts == NULL) {
            return NGX_ERROR;
        }
    }

    /* DANE (RFC 7672): connections to hosts with usable TLSA records */

    if (rmcf->dnssec && SSL_CTX_dane_enable(dc->ssl->ctx) <= 0) {
        ngx_ssl_error(NGX_LOG_EMERG, cycle->log, 0,
                      "SSL_CTX_dane_enable() failed");
        return NGX_ERROR;
    }

    dc->policy = &rmcf->policy;
    dc->thread_pool = rmcf->thread_pool;
    dc->hostname = rmcf->hostname;
    dc->connect_timeout = rmcf->connect_timeout;
    dc->timeout = rmcf->smtp_timeout;
    dc->reuse = rmcf->conn_reuse;
    dc->reuse_limit = rmcf->conn_reuse_limit;
    dc->idle_timeout = rmcf->conn_idle_timeout;
    dc->concurrency = rmcf->dest_concurrency;
    dc->rcpts_per_txn = rmcf->rcpts_per_txn;
    dc->log = cycle->log;

    ngx_queue_init(&dc->dests);

    sc->delivery = dc;
    sc->spool.delivers = 1;

    return NGX_OK;
}


static void
ngx_stream_relay_exit_process(ngx_cycle_t *cycle)
{
    ngx_relay_control_exit_process(cycle);
    ngx_relay_limits_exit_process();

    if (ngx_stream_relay_sched && ngx_stream_relay_sched->delivery) {
        ngx_relay_delivery_exit(ngx_stream_relay_sched->delivery);
        ngx_relay_dns_destroy(ngx_stream_relay_sched->delivery->dns);
        ngx_stream_relay_sched->delivery = NULL;
        ngx_stream_relay_sched->spool.delivers = 0;
    }

    if (ngx_stream_relay_sched) {
        ngx_relay_sched_exit(ngx_stream_relay_sched);
        ngx_stream_relay_sched = NULL;
    }

    ngx_relay_account_exit_process();
    ngx_relay_metrics_exit_process();
}
