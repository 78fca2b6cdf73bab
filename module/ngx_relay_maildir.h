
/*
 * Copyright (C) The relay authors
 */


#ifndef _NGX_RELAY_MAILDIR_H_INCLUDED_
#define _NGX_RELAY_MAILDIR_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>


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


#endif /* _NGX_RELAY_MAILDIR_H_INCLUDED_ */
