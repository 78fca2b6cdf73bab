/*
 * Copyright (C) The relay authors
 */


/*
 * controld's configuration: defaults, the configuration file and flags.
 *
 * The configuration file holds "key value;" lines ("#" comments); flags
 * given on the command line win over the file whatever their order.
 * Durations: N or Ns seconds, Nms, Nm.
 */


#include <errno.h>
#include <getopt.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/grpc.h>
#include <protobuf-c/protobuf-c.h>

#include "ctld_alloc.h"
#include "ctld_conf.h"
#include "ctld_log.h"


#define CTLD_DEFAULT_LISTEN    "127.0.0.1:7443"
#define CTLD_DEFAULT_DATA_DIR  "/var/lib/nginx-relay-controld"
#define CTLD_DEFAULT_PREFIX    "/relay/"
#define CTLD_CONF_MAX_KEYS     32

#define ctld_conf_at(field)    offsetof(ctld_conf_t, field)


typedef enum {
    CTLD_CONF_STRING = 0,
    CTLD_CONF_MSEC,            /* durations, in milliseconds */
    CTLD_CONF_FLAG             /* on|off */
} ctld_conf_type_e;


typedef struct {
    const char        *name;
    ctld_conf_type_e   type;
    size_t             offset;
} ctld_conf_key_t;


static int ctld_conf_flags(ctld_conf_t *conf, int argc, char **argv);
static int ctld_conf_file(ctld_conf_t *conf, const char *path);
static int ctld_conf_line(ctld_conf_t *conf, char *p, int *set,
    const char *where);
static int ctld_conf_set(ctld_conf_t *conf, const char *key,
    const char *val, int *set, const char *where);
static int ctld_conf_duration(const char *s, int *ms);
static void ctld_conf_usage(FILE *f);
static void ctld_conf_version(FILE *f);


static const ctld_conf_key_t  ctld_conf_keys[] = {
    { "listen",          CTLD_CONF_STRING, ctld_conf_at(listen) },
    { "data_dir",        CTLD_CONF_STRING, ctld_conf_at(data_dir) },
    { "tls_ca",          CTLD_CONF_STRING, ctld_conf_at(ca) },
    { "tls_cert",        CTLD_CONF_STRING, ctld_conf_at(cert) },
    { "tls_key",         CTLD_CONF_STRING, ctld_conf_at(key) },
    { "insecure",        CTLD_CONF_FLAG,   ctld_conf_at(insecure) },
    { "command_timeout", CTLD_CONF_MSEC,   ctld_conf_at(command_timeout_ms) },
    { "status_timeout",  CTLD_CONF_MSEC,   ctld_conf_at(status_timeout_ms) },
    { "store",           CTLD_CONF_STRING, ctld_conf_at(store) },
    { "store_prefix",    CTLD_CONF_STRING, ctld_conf_at(store_prefix) },
    { "store_tls_ca",    CTLD_CONF_STRING, ctld_conf_at(store_ca) },
    { "store_tls_cert",  CTLD_CONF_STRING, ctld_conf_at(store_cert) },
    { "store_tls_key",   CTLD_CONF_STRING, ctld_conf_at(store_key) },
    { "store_lease",     CTLD_CONF_MSEC,   ctld_conf_at(store_lease_ms) },
    { "store_timeout",   CTLD_CONF_MSEC,   ctld_conf_at(store_timeout_ms) },
    { "replica",         CTLD_CONF_STRING, ctld_conf_at(replica) },
    { "metrics_listen",  CTLD_CONF_STRING, ctld_conf_at(metrics_listen) },
    { NULL, 0, 0 }
};


static const struct option  ctld_conf_options[] = {
    { "config",          required_argument, NULL, 'c' },
    { "listen",          required_argument, NULL, 'l' },
    { "data-dir",        required_argument, NULL, 'd' },
    { "ca",              required_argument, NULL, 'A' },
    { "cert",            required_argument, NULL, 'C' },
    { "key",             required_argument, NULL, 'K' },
    { "command-timeout", required_argument, NULL, 'T' },
    { "status-timeout",  required_argument, NULL, 'S' },
    { "metrics-listen",  required_argument, NULL, 'M' },
    { "insecure",        no_argument,       NULL, 'I' },
    { "store",           required_argument, NULL, 1000 },
    { "store-prefix",    required_argument, NULL, 1001 },
    { "store-ca",        required_argument, NULL, 1002 },
    { "store-cert",      required_argument, NULL, 1003 },
    { "store-key",       required_argument, NULL, 1004 },
    { "store-lease",     required_argument, NULL, 1005 },
    { "store-timeout",   required_argument, NULL, 1006 },
    { "replica",         required_argument, NULL, 1007 },
    { "help",            no_argument,       NULL, 'h' },
    { "version",         no_argument,       NULL, 'V' },
    { NULL, 0, NULL, 0 }
};


int
ctld_conf_read(ctld_conf_t *conf, int argc, char **argv)
{
    int          ch, rc;
    const char  *conf_file;

    memset(conf, 0, sizeof(ctld_conf_t));
    conf->listen = CTLD_DEFAULT_LISTEN;
    conf->data_dir = CTLD_DEFAULT_DATA_DIR;
    conf->command_timeout_ms = 10000;
    conf->store_prefix = CTLD_DEFAULT_PREFIX;
    conf->store_lease_ms = 10000;
    conf->store_timeout_ms = 5000;

    conf_file = NULL;

    /* first pass: the file, whose values the flags then override */

    while ((ch = getopt_long(argc, argv, "c:l:d:hV", ctld_conf_options, NULL))
           != -1)
    {
        if (ch == 'c') {
            conf_file = optarg;

        } else if (ch == 'h') {
            ctld_conf_usage(stdout);
            return CTLD_CONF_DONE;

        } else if (ch == 'V') {
            ctld_conf_version(stdout);
            return CTLD_CONF_DONE;

        } else if (ch == '?') {
            ctld_conf_usage(stderr);
            return CTLD_CONF_ERROR;
        }
    }

    if (optind < argc) {
        ctld_log("unexpected argument \"%s\"", argv[optind]);
        return CTLD_CONF_ERROR;
    }

    if (conf_file != NULL && ctld_conf_file(conf, conf_file) != 0) {
        return CTLD_CONF_ERROR;
    }

    rc = ctld_conf_flags(conf, argc, argv);
    if (rc != CTLD_CONF_OK) {
        return rc;
    }

    if (!conf->insecure
        && (conf->ca == NULL || conf->cert == NULL || conf->key == NULL))
    {
        ctld_log("mTLS needs tls_ca, tls_cert and tls_key "
                 "(--ca, --cert, --key); --insecure only for debugging");
        return CTLD_CONF_ERROR;
    }

    if (conf->store && strncmp(conf->store, "etcd://", 7) != 0) {
        fprintf(stderr, "controld: store \"%s\": etcd://host:port"
                "[,host:port...], or none for the data directory\n",
                conf->store);
        return CTLD_CONF_ERROR;
    }

    if (conf->store_prefix[0] != '/'
        || conf->store_prefix[strlen(conf->store_prefix) - 1] != '/')
    {
        fprintf(stderr, "controld: store_prefix \"%s\" must start and end "
                "with \"/\"\n", conf->store_prefix);
        return CTLD_CONF_ERROR;
    }

    if ((conf->store_cert == NULL) != (conf->store_key == NULL)
        || (conf->store_cert && conf->store_ca == NULL))
    {
        fprintf(stderr, "controld: store_tls_cert and store_tls_key go "
                "together, and with store_tls_ca\n");
        return CTLD_CONF_ERROR;
    }

    if (conf->store_lease_ms < 2000 || conf->store_timeout_ms < 100) {
        fprintf(stderr, "controld: store_lease is at least 2s, "
                "store_timeout at least 100ms\n");
        return CTLD_CONF_ERROR;
    }

    return CTLD_CONF_OK;
}


/* second pass: every flag but -c sets its key */

static int
ctld_conf_flags(ctld_conf_t *conf, int argc, char **argv)
{
    int  ch, i, set[CTLD_CONF_MAX_KEYS];

    static const struct {
        int          opt;
        const char  *key;
    } flag_keys[] = {
        { 'l', "listen" }, { 'd', "data_dir" }, { 'A', "tls_ca" },
        { 'C', "tls_cert" }, { 'K', "tls_key" }, { 'T', "command_timeout" },
        { 'S', "status_timeout" }, { 'I', "insecure" },
        { 1000, "store" }, { 1001, "store_prefix" }, { 1002, "store_tls_ca" },
        { 1003, "store_tls_cert" }, { 1004, "store_tls_key" },
        { 1005, "store_lease" }, { 1006, "store_timeout" },
        { 1007, "replica" }, { 'M', "metrics_listen" }, { 0, NULL }
    };

    memset(set, 0, sizeof(set));
    optind = 1;

    while ((ch = getopt_long(argc, argv, "c:l:d:hV", ctld_conf_options, NULL))
           != -1)
    {
        for (i = 0; flag_keys[i].key; i++) {
            if (flag_keys[i].opt != ch) {
                continue;
            }

            if (ctld_conf_set(conf, flag_keys[i].key,
                              ch == 'I' ? "on" : optarg, set, "flag")
                != 0)
            {
                return CTLD_CONF_ERROR;
            }
        }
    }

    return CTLD_CONF_OK;
}


static void
ctld_conf_usage(FILE *f)
{
    fprintf(f,
        "usage: controld [-c FILE] [options]\n"
        "  -c, --config FILE          key value; lines (flags win)\n"
        "  -l, --listen ADDR          listen (" CTLD_DEFAULT_LISTEN ")\n"
        "  -d, --data-dir DIR         versions (" CTLD_DEFAULT_DATA_DIR ")\n"
        "      --ca FILE              CA of node and operator certificates\n"
        "      --cert FILE            server certificate chain\n"
        "      --key FILE             server private key\n"
        "      --command-timeout DUR  wait for a queue command (10s)\n"
        "      --status-timeout DUR   drop a silent node session (0: never)\n"
        "      --metrics-listen ADDR  Prometheus metrics on http://ADDR/metrics\n"
        "      --insecure             no TLS, no identities: debugging only\n"
        "      --store etcd://HOST:PORT[,HOST:PORT...]\n"
        "                             versions, nodes and sessions in etcd\n"
        "                             (replicas share it); else --data-dir\n"
        "      --store-prefix P       etcd key prefix "
        "(" CTLD_DEFAULT_PREFIX ")\n"
        "      --store-ca FILE        TLS to etcd: its CA\n"
        "      --store-cert FILE, --store-key FILE\n"
        "                             TLS to etcd: a client certificate\n"
        "      --store-lease DUR      this replica's lease (10s)\n"
        "      --store-timeout DUR    a call to etcd (5s)\n"
        "      --replica NAME         this replica's name (host:port)\n"
        "  -V, --version              print the version and exit\n");
}


static void
ctld_conf_version(FILE *f)
{
    fprintf(f, "controld (nginx-relay) %s\n"
            "gRPC core %s, protobuf-c %s\n",
            RELAY_VERSION, grpc_version_string(), protobuf_c_version());
}


static int
ctld_conf_file(ctld_conf_t *conf, const char *path)
{
    int    line, set[CTLD_CONF_MAX_KEYS];
    char  *p, where[256], buf[4096];
    FILE  *f;

    f = fopen(path, "r");
    if (f == NULL) {
        ctld_log("%s: %s", path, strerror(errno));
        return -1;
    }

    memset(set, 0, sizeof(set));
    line = 0;

    while (fgets(buf, sizeof(buf), f) != NULL) {
        line++;

        p = strchr(buf, '#');
        if (p != NULL) {
            *p = '\0';
        }

        snprintf(where, sizeof(where), "%s:%d", path, line);

        if (ctld_conf_line(conf, buf, set, where) != 0) {
            fclose(f);
            return -1;
        }
    }

    fclose(f);
    return 0;
}


/* one line without its comment: empty, or "key value;" */

static int
ctld_conf_line(ctld_conf_t *conf, char *p, int *set, const char *where)
{
    char    *key, *val, *end;
    size_t   len;

    len = strlen(p);
    while (len > 0 && strchr(" \t\r\n", p[len - 1]) != NULL) {
        p[--len] = '\0';
    }

    while (*p == ' ' || *p == '\t') {
        p++;
    }

    if (*p == '\0') {
        return 0;
    }

    if (p[strlen(p) - 1] != ';') {
        ctld_log("%s: missing \";\"", where);
        return -1;
    }

    p[strlen(p) - 1] = '\0';

    key = p;
    for (end = p; *end && *end != ' ' && *end != '\t'; end++) {
        /* void */
    }

    val = end;
    if (*end) {
        *end = '\0';
        val = end + 1;
    }

    while (*val == ' ' || *val == '\t') {
        val++;
    }

    len = strlen(val);
    while (len > 0 && (val[len - 1] == ' ' || val[len - 1] == '\t')) {
        val[--len] = '\0';
    }

    if (len >= 2 && val[0] == '"' && val[len - 1] == '"') {
        val[len - 1] = '\0';
        val++;
    }

    if (*val == '\0') {
        ctld_log("%s: \"%s\" needs a value", where, key);
        return -1;
    }

    return ctld_conf_set(conf, key, ctld_strdup(val), set, where);
}


static int
ctld_conf_set(ctld_conf_t *conf, const char *key, const char *val, int *set,
    const char *where)
{
    int                     i, *num;
    const ctld_conf_key_t  *k;

    for (i = 0; ctld_conf_keys[i].name; i++) {
        k = &ctld_conf_keys[i];

        if (strcmp(k->name, key) != 0) {
            continue;
        }

        if (set[i]) {
            ctld_log("%s: \"%s\" is duplicate", where, key);
            return -1;
        }

        set[i] = 1;

        if (k->type == CTLD_CONF_STRING) {
            *(const char **) ((char *) conf + k->offset) = val;
            return 0;
        }

        num = (int *) ((char *) conf + k->offset);

        if (k->type == CTLD_CONF_FLAG) {
            if (strcmp(val, "on") == 0) {
                *num = 1;

            } else if (strcmp(val, "off") == 0) {
                *num = 0;

            } else {
                ctld_log("%s: \"%s\" takes on or off", where, key);
                return -1;
            }

            return 0;
        }

        if (ctld_conf_duration(val, num) != 0) {
            ctld_log("%s: invalid duration \"%s\" for \"%s\" "
                     "(N, Nms, Ns, Nm)", where, val, key);
            return -1;
        }

        return 0;
    }

    ctld_log("%s: unknown key \"%s\"", where, key);
    return -1;
}


static int
ctld_conf_duration(const char *s, int *ms)
{
    char       *end;
    long long   n;

    errno = 0;
    n = strtoll(s, &end, 10);

    if (errno || end == s || n < 0 || n > 86400000) {
        return -1;
    }

    if (strcmp(end, "ms") == 0) {
        /* void */

    } else if (*end == '\0' || strcmp(end, "s") == 0) {
        n *= 1000;

    } else if (strcmp(end, "m") == 0) {
        n *= 60000;

    } else {
        return -1;
    }

    if (n > 86400000) {
        return -1;
    }

    *ms = (int) n;
    return 0;
}
