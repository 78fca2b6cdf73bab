
/*
 * Copyright (C) The relay authors
 */


#ifndef _NGX_RELAY_DKIM_H_INCLUDED_
#define _NGX_RELAY_DKIM_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <relay_policy.h>
#include <ngx_relay_policy.h>
#include <ngx_relay_spool.h>


#define NGX_RELAY_DKIM_RSA_SHA256      0
#define NGX_RELAY_DKIM_ED25519_SHA256  1

#define NGX_RELAY_DKIM_SIMPLE          0
#define NGX_RELAY_DKIM_RELAXED         1

#define NGX_RELAY_DKIM_MAX_SIGS        8      /* signatures per message */
#define NGX_RELAY_DKIM_FIELD_MAX       4096   /* one DKIM-Signature field */


/* one key of a domain: a "dkim" statement, or relay_dkim */

typedef struct {
    ngx_str_t                 domain;        /* d= */
    ngx_str_t                 selector;      /* s= */
    ngx_str_t                 file;          /* NUL-terminated */
    ngx_str_t                 headers;       /* "from:to"; "": the default */
    ngx_uint_t                algorithm;     /* NGX_RELAY_DKIM_*_SHA256 */
    ngx_uint_t                header_canon;  /* NGX_RELAY_DKIM_SIMPLE... */
    ngx_uint_t                body_canon;
    time_t                    expire;        /* x= after; 0: none */
    unsigned                  fallback:1;    /* the envelope sender too */
    unsigned                  send:1;        /* on_error=send */
} ngx_relay_dkim_key_t;


typedef struct ngx_relay_dkim_s  ngx_relay_dkim_t;


/* the keys of a policy, in the shape lookups read */
ngx_int_t ngx_relay_dkim_build(ngx_pool_t *pool, ngx_array_t **keys,
    size_t *reserve, relay_policy_t *pp);

/*
 * Whether this node can sign with every key of pp: each key file is read
 * and kept (thread-safe; the master reads nginx.conf's keys, which the
 * workers inherit).  0, or -1 with "dkim[N].key_file: why" in err.
 */
int ngx_relay_dkim_check(relay_policy_t *pp, char *err, size_t errlen);

/*
 * The signer of one message accepted from a trusted network or an
 * authenticated client, in the queue file writer's pool; it hooks into
 * the writer as its transform (ngx_relay_spool.h).  The keys of the
 * From: domain come from the policy (the fleet's first) on the event
 * loop, at the writer's first flush or the end of data.
 */
ngx_relay_dkim_t *ngx_relay_dkim_create(ngx_pool_t *pool, ngx_log_t *log,
    ngx_relay_policy_t *policy, ngx_str_t *sender, size_t reserve);
ngx_relay_spool_transform_t *ngx_relay_dkim_transform(ngx_relay_dkim_t *dk);

/* after the commit: "example.com:s1,example.net:s2" or why it failed */
u_char *ngx_relay_dkim_result(ngx_relay_dkim_t *dk, u_char *p, u_char *last);
ngx_uint_t ngx_relay_dkim_failed(ngx_relay_dkim_t *dk);


#endif /* _NGX_RELAY_DKIM_H_INCLUDED_ */
