/*
 * Copyright (C) The relay authors
 */


#ifndef _CTLD_CONF_H_INCLUDED_
#define _CTLD_CONF_H_INCLUDED_


#define CTLD_CONF_OK     0
#define CTLD_CONF_DONE   1      /* --help was printed: exit 0 */
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
    const char                 *metrics_listen;        /* NULL: none */
} ctld_conf_t;


/*
 * The defaults, then the file of -c, then the other flags (they win over
 * the file whatever their order).
 */
int ctld_conf_read(ctld_conf_t *conf, int argc, char **argv);


#endif /* _CTLD_CONF_H_INCLUDED_ */
