
/*
 * Copyright (C) The relay authors
 */


#ifndef _NGX_RELAY_MAILDIR_H_INCLUDED_
#define _NGX_RELAY_MAILDIR_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_relay.h>


/* relay_local_domain: a domain whose mail goes into Maildirs here */

typedef struct {
    ngx_str_t          name;          /* lowercased */
    ngx_hash_t        *users;         /* NULL: any local part */
} ngx_relay_domain_t;


/* where a local recipient's mail goes: <root><domain>/<local part>/ */

typedef struct {
    ngx_str_t          domain;        /* lowercased */
    ngx_str_t          local;         /* unquoted, lowercased */
    u_char             domain_data[NGX_RELAY_MAX_ADDR];
    u_char             local_data[NGX_RELAY_MAX_ADDR];
} ngx_relay_mailbox_t;


typedef struct {
    ngx_str_t          root;          /* maildir root, with "/" */
    ngx_str_t          domain;        /* lowercased */
    ngx_str_t          mailbox;       /* lowercased local part */
    ngx_str_t          name;          /* unique file name in tmp/ and new/ */
    ngx_str_t          headers;       /* Return-Path:, Delivered-To: */
    ngx_fd_t           src;           /* the queue file */
    off_t              offset;        /* where the message starts */
    off_t              size;

    ngx_err_t          err;           /* on NGX_ERROR */
    const char        *failed;        /* the call that failed */
} ngx_relay_maildir_job_t;


/* thread-safe; NGX_DECLINED means "already delivered by an earlier try" */
ngx_int_t ngx_relay_maildir_deliver(ngx_relay_maildir_job_t *job);
ngx_int_t ngx_relay_maildir_mailbox_valid(ngx_str_t *local);
ngx_relay_domain_t *ngx_relay_maildir_local_domain(ngx_array_t *domains,
    ngx_str_t *domain);
ngx_int_t ngx_relay_maildir_mailbox(ngx_array_t *domains, ngx_str_t *addr,
    ngx_relay_mailbox_t *mb);
ngx_str_t *ngx_relay_maildir_split(ngx_str_t *addr, ngx_str_t *domain);


#endif /* _NGX_RELAY_MAILDIR_H_INCLUDED_ */
