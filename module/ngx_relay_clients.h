
/*
 * Copyright (C) The relay authors
 */


#ifndef _NGX_RELAY_CLIENTS_H_INCLUDED_
#define _NGX_RELAY_CLIENTS_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>


/* what a listener allows one client address (0: no limit) */

typedef struct {
    ngx_uint_t                sessions;      /* at once */
    ngx_uint_t                connections;   /* new ones per window */
    time_t                    connection_window;
    ngx_uint_t                auth_failures; /* per window */
    time_t                    auth_window;
} ngx_relay_client_limits_t;


/* the counts behind a refusal, for the log */

typedef struct {
    ngx_uint_t                sessions;
    ngx_uint_t                connections;
    ngx_uint_t                auth_failures;
} ngx_relay_client_counts_t;


ngx_int_t ngx_relay_clients_add_zone(ngx_conf_t *cf, ngx_shm_zone_t **zone,
    void *tag);
ngx_int_t ngx_relay_clients_open(ngx_shm_zone_t *zone, struct sockaddr *sa,
    ngx_relay_client_limits_t *l, ngx_relay_client_counts_t *c);
void ngx_relay_clients_close(ngx_shm_zone_t *zone, struct sockaddr *sa);
ngx_int_t ngx_relay_clients_auth(ngx_shm_zone_t *zone, struct sockaddr *sa,
    ngx_relay_client_limits_t *l, ngx_uint_t failed,
    ngx_relay_client_counts_t *c);


#endif /* _NGX_RELAY_CLIENTS_H_INCLUDED_ */
