/*
 * Copyright (C) The relay authors
 */


#ifndef _CTLD_CONF_H_INCLUDED_
#define _CTLD_CONF_H_INCLUDED_


#define CTLD_CONF_OK     0
#define CTLD_CONF_DONE   1      /* --help or --version printed: exit 0 */
#define CTLD_CONF_ERROR  2      /* said on stderr: exit 2 */


typedef struct {
    const char                 *listen;
    const char                 *data_dir;
    int                         insecure;     /* no TLS, no identities */
    const char                 *ca;
    const char                 *cert;
    const char                 *key;
    int                         command_timeout_ms;
    int                         status_timeout_ms;     /* 0: never */
    const char                 *store;        /* NULL: data_dir */
    const char                 *store_prefix;
    const char                 *store_ca;     /* TLS to etcd */
    const char                 *store_cert;
    const char                 *store_key;
    int                         store_lease_ms;
    int                         store_timeout_ms;
    const char                 *replica;      /* NULL: host:port */
    const char                 *metrics_listen;        /* NULL: none */
} ctld_conf_t;


/*
 * The defaults, then the file of -c, then the other flags (they win over
 * the file whatever their order).
 */
int ctld_conf_read(ctld_conf_t *conf, int argc, char **argv);


#endif /* _CTLD_CONF_H_INCLUDED_ */
