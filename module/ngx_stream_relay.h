
/*
 * Copyright (C) The relay authors
 */


/* Stream glue: configuration, the SMTP session and its transaction. */


#ifndef _NGX_STREAM_RELAY_H_INCLUDED_
#define _NGX_STREAM_RELAY_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_stream.h>
#include <ngx_relay.h>
#include <ngx_relay_parse.h>
#include <ngx_relay_spool.h>
#include <ngx_relay_sched.h>
#include <ngx_relay_policy.h>
#include <ngx_relay_control.h>
#include <ngx_relay_clients.h>
#include <ngx_relay_account.h>


#define NGX_STREAM_RELAY_LINE_MAX      512     /* RFC 5321 4.5.3.1.4 */
#define NGX_STREAM_RELAY_ESMTP_LINE_MAX 2048   /* MAIL/RCPT with params */
#define NGX_STREAM_RELAY_AUTH_LINE_MAX 4000    /* fits the input buffer */
#define NGX_STREAM_RELAY_IN_SIZE       4096
#define NGX_STREAM_RELAY_FLOW_DELAY    1000      /* ms, at most, per MAIL */
#define NGX_STREAM_RELAY_DATA_IN_SIZE  32768   /* a fast client's message */
#define NGX_STREAM_RELAY_OUT_SIZE      4096
#define NGX_STREAM_RELAY_REPLY_MAX     128


typedef struct {
    ngx_str_t                    spool;
    ngx_str_t                    maildir;
    ngx_str_t                    hostname;
    ngx_str_t                    thread_pool_name;
    ngx_thread_pool_t           *thread_pool;
    ngx_array_t                 *domains;        /* ngx_relay_domain_t */
    ngx_array_t                 *own_addrs;      /* ngx_relay_own_addr_t */
    ngx_shm_zone_t              *clients_zone;   /* per client address */
    ngx_msec_t                   scan_interval;
    ngx_msec_t                   snapshot_interval;  /* 0: none */
    ngx_uint_t                   spool_sync;     /* NGX_RELAY_SYNC_* */
    size_t                       journal_size;   /* both segments */
    size_t                       spool_memory;   /* a worker's messages */
    size_t                       in_flow_memory; /* first attempts: 0 off */
    ngx_msec_t                   checkpoint_interval;
    ngx_flag_t                   enabled;        /* a server has relay_smtp */

    /* outbound delivery */
    ngx_flag_t                   delivery;
    ngx_str_t                    resolver;
    ngx_msec_t                   resolver_timeout;
    ngx_flag_t                   dnssec;          /* trust the AD bit */
    ngx_flag_t                   mta_sts;
    ngx_str_t                    mta_sts_cache;
    ngx_str_t                    mta_sts_trusted;
    ngx_msec_t                   mta_sts_timeout;
    ngx_msec_t                   connect_timeout;
    ngx_msec_t                   smtp_timeout;
    ngx_int_t                    smtp_port;
    ngx_flag_t                   conn_reuse;
    ngx_uint_t                   conn_reuse_limit;
    ngx_msec_t                   conn_idle_timeout;
    ngx_uint_t                   dest_concurrency;
    ngx_uint_t                   rcpts_per_txn;
    ngx_str_t                    tls_trusted;
    ngx_relay_policy_t           policy;
    ngx_relay_control_conf_t     control;
    size_t                       limit_zone_size;

    /* observers */
    ngx_flag_t                   metrics;
    ngx_relay_account_conf_t     account;
    relay_classify_rules_t      *bounce_rules;
} ngx_stream_relay_main_conf_t;


typedef struct {
    ngx_flag_t                   starttls;
    ngx_str_t                    tenant;         /* for egress rules */
    ngx_ssl_t                   *ssl;
    ngx_hash_t                  *auth_users;
    ngx_array_t                 *trusted;        /* ngx_cidr_t */
    off_t                        max_message_size;
    ngx_uint_t                   max_recipients;
    ngx_uint_t                   max_errors;
    ngx_msec_t                   timeout;
    ngx_flag_t                   strict_pipelining;
    ngx_flag_t                   address_literals;  /* relay to them */
    ngx_flag_t                   literal_local;     /* own: local */
    size_t                       min_data_rate;     /* octets a second */
    ngx_relay_client_limits_t    client_limits;
} ngx_stream_relay_srv_conf_t;


/* MAIL .. end of data: its own pool, so RSET frees one thing */

typedef struct {
    ngx_pool_t                  *pool;
    ngx_relay_envelope_t         env;
    ngx_relay_spool_writer_t    *writer;
    struct ngx_relay_dkim_s     *dkim;           /* signer: the writer's */
    ngx_relay_data_parser_t      dp;

    off_t                        size;           /* message octets */
    off_t                        bdat_left;      /* of the current chunk */
    off_t                        bdat_chunk;

    ngx_uint_t                   rejected_rcpts;
    uint64_t                     eod;            /* end of data, for the
                                                    metrics */

    unsigned                     data:1;         /* DATA received */
    unsigned                     bdat:1;         /* BDAT used */
    unsigned                     bdat_last:1;
    unsigned                     too_big:1;
    unsigned                     failed:1;       /* BDAT error: until RSET */
} ngx_stream_relay_txn_t;


typedef enum {
    ngx_stream_relay_st_command = 0,
    ngx_stream_relay_st_data,
    ngx_stream_relay_st_bdat,
    ngx_stream_relay_st_auth_plain,
    ngx_stream_relay_st_auth_login_user,
    ngx_stream_relay_st_auth_login_passwd,
    ngx_stream_relay_st_busy,
    ngx_stream_relay_st_closing
} ngx_stream_relay_state_e;


typedef struct {
    ngx_stream_session_t        *session;
    ngx_connection_t            *connection;
    ngx_stream_relay_srv_conf_t *conf;
    ngx_stream_relay_main_conf_t *main_conf;

    ngx_stream_relay_state_e     state;
    ngx_stream_relay_state_e     resume_state;   /* after a flush */
    ngx_buf_t                   *in;
    u_char                      *in_small;   /* its 4 KB, while it is big */
    ngx_buf_t                   *out;
    ngx_relay_line_parser_t      lp;

    ngx_str_t                    helo;
    ngx_str_t                    auth_user;
    ngx_str_t                    login_user;     /* AUTH LOGIN, step 1 */
    ngx_str_t                    client;         /* address text */

    ngx_stream_relay_txn_t      *txn;
    ngx_uint_t                   errors;

    /*
     * A limit check that waits for Redis, or in-flow control, and the
     * command waiting on it
     */
    ngx_relay_limit_check_t     *limit;
    ngx_relay_mail_args_t        limit_args;
    ngx_uint_t                   limit_local;
    ngx_relay_spool_flow_t       flow;

    /* a command after which the client must wait for our reply */
    const char                  *sync;

    /* by when the next command (or the content) must be in */
    ngx_msec_t                   deadline;

    /* for access_log variables: the last transaction's facts */
    ngx_str_t                    last_sender;
    ngx_uint_t                   last_rcpts;
    ngx_str_t                    last_queue_id;
    ngx_str_t                    last_reply;

    u_char                       sender_buf[NGX_RELAY_MAX_PATH + 1];
    u_char                       queue_id_buf[NGX_RELAY_ID_LEN];
    u_char                       reply_buf[NGX_STREAM_RELAY_REPLY_MAX];

    unsigned                     esmtp:1;
    unsigned                     tls:1;
    unsigned                     quit:1;
    unsigned                     trusted:1;
    unsigned                     blocked:1;      /* output not yet sent */
    unsigned                     counted:1;      /* in the clients zone */
} ngx_stream_relay_session_t;


extern ngx_module_t  ngx_stream_relay_module;
extern ngx_relay_sched_t  *ngx_stream_relay_sched;

void ngx_stream_relay_init_session(ngx_stream_session_t *s);
ngx_int_t ngx_stream_relay_add_variables(ngx_conf_t *cf);


#endif /* _NGX_STREAM_RELAY_H_INCLUDED_ */
