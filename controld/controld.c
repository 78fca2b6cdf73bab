/*
 * Copyright (C) The relay authors
 */


/*
 * controld: main(), the configuration file, flags and the log.
 *
 * The configuration file holds "key value;" lines ("#" comments); flags
 * given on the command line win over the file whatever their order.  The
 * log is stderr, one line per event, UTC timestamps with milliseconds.
 */


#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "ctld.h"


#define CTLD_DEFAULT_LISTEN    "127.0.0.1:7443"
#define CTLD_DEFAULT_DATA_DIR  "./controld-data"


typedef struct {
    const char  *name;
    const char **str;
    int         *num;          /* milliseconds for durations */
    int          flag;         /* on|off */
} ctld_conf_key_t;


static int ctld_conf_file(const char *path);
static int ctld_conf_set(const char *key, const char *val, int *set,
    const char *where);
static int ctld_parse_duration(const char *s, int *ms);
static void ctld_usage(FILE *f);


ctld_conf_t  ctld_conf = {
    CTLD_DEFAULT_LISTEN,
    CTLD_DEFAULT_DATA_DIR,
    NULL, NULL, NULL,
    0,
    10000,
    0
};


static ctld_conf_key_t  ctld_conf_keys[] = {
    { "listen",          &ctld_conf.listen,   NULL, 0 },
    { "data_dir",        &ctld_conf.data_dir, NULL, 0 },
    { "tls_ca",          &ctld_conf.ca,       NULL, 0 },
    { "tls_cert",        &ctld_conf.cert,     NULL, 0 },
    { "tls_key",         &ctld_conf.key,      NULL, 0 },
    { "insecure",        NULL, &ctld_conf.insecure, 1 },
    { "command_timeout", NULL, &ctld_conf.command_timeout_ms, 0 },
    { "status_timeout",  NULL, &ctld_conf.status_timeout_ms, 0 },
    { NULL, NULL, NULL, 0 }
};


int
main(int argc, char **argv)
{
    int          ch, i, set[16];
    const char  *conf_file;

    static const struct option  opts[] = {
        { "config",          required_argument, NULL, 'c' },
        { "listen",          required_argument, NULL, 'l' },
        { "data-dir",        required_argument, NULL, 'd' },
        { "ca",              required_argument, NULL, 'A' },
        { "cert",            required_argument, NULL, 'C' },
        { "key",             required_argument, NULL, 'K' },
        { "command-timeout", required_argument, NULL, 'T' },
        { "status-timeout",  required_argument, NULL, 'S' },
        { "insecure",        no_argument,       NULL, 'I' },
        { "help",            no_argument,       NULL, 'h' },
        { NULL, 0, NULL, 0 }
    };

    static const struct {
        int          opt;
        const char  *key;
    } flag_keys[] = {
        { 'l', "listen" }, { 'd', "data_dir" }, { 'A', "tls_ca" },
        { 'C', "tls_cert" }, { 'K', "tls_key" }, { 'T', "command_timeout" },
        { 'S', "status_timeout" }, { 'I', "insecure" }, { 0, NULL }
    };

    memset(set, 0, sizeof(set));
    conf_file = NULL;

    /* first pass: the file, whose values the flags then override */

    while ((ch = getopt_long(argc, argv, "c:l:d:h", opts, NULL)) != -1) {
        if (ch == 'c') {
            conf_file = optarg;

        } else if (ch == 'h') {
            ctld_usage(stdout);
            return 0;

        } else if (ch == '?') {
            ctld_usage(stderr);
            return 2;
        }
    }

    if (optind < argc) {
        fprintf(stderr, "controld: unexpected argument \"%s\"\n",
                argv[optind]);
        return 2;
    }

    if (conf_file != NULL && ctld_conf_file(conf_file) != 0) {
        return 2;
    }

    memset(set, 0, sizeof(set));
    optind = 1;

    while ((ch = getopt_long(argc, argv, "c:l:d:h", opts, NULL)) != -1) {
        for (i = 0; flag_keys[i].key; i++) {
            if (flag_keys[i].opt != ch) {
                continue;
            }

            if (ctld_conf_set(flag_keys[i].key,
                              ch == 'I' ? "on" : optarg, set, "flag")
                != 0)
            {
                return 2;
            }
        }
    }

    if (!ctld_conf.insecure
        && (ctld_conf.ca == NULL || ctld_conf.cert == NULL
            || ctld_conf.key == NULL))
    {
        fprintf(stderr, "controld: mTLS needs tls_ca, tls_cert and tls_key "
                "(--ca, --cert, --key); --insecure only for debugging\n");
        return 2;
    }

    if (ctld_store_open(ctld_conf.data_dir) != 0) {
        return 1;
    }

    return ctld_server_run() == 0 ? 0 : 1;
}


static void
ctld_usage(FILE *f)
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
        "      --insecure             no TLS, no identities: debugging only\n");
}


static int
ctld_conf_file(const char *path)
{
    int      line, set[16];
    char    *p, *key, *val, *end, buf[4096];
    FILE    *f;
    size_t   len;

    f = fopen(path, "r");
    if (f == NULL) {
        fprintf(stderr, "controld: %s: %s\n", path, strerror(errno));
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

        len = strlen(buf);
        while (len > 0 && strchr(" \t\r\n", buf[len - 1]) != NULL) {
            buf[--len] = '\0';
        }

        for (p = buf; *p == ' ' || *p == '\t'; p++) { /* void */ }

        if (*p == '\0') {
            continue;
        }

        char  where[256];

        snprintf(where, sizeof(where), "%s:%d", path, line);

        if (p[strlen(p) - 1] != ';') {
            fprintf(stderr, "controld: %s: missing \";\"\n", where);
            goto failed;
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
            fprintf(stderr, "controld: %s: \"%s\" needs a value\n", where,
                    key);
            goto failed;
        }

        if (ctld_conf_set(key, ctld_strdup(val), set, where) != 0) {
            goto failed;
        }
    }

    fclose(f);
    return 0;

failed:

    fclose(f);
    return -1;
}


static int
ctld_conf_set(const char *key, const char *val, int *set, const char *where)
{
    int               i;
    ctld_conf_key_t  *k;

    for (i = 0; ctld_conf_keys[i].name; i++) {
        k = &ctld_conf_keys[i];

        if (strcmp(k->name, key) != 0) {
            continue;
        }

        if (set[i]) {
            fprintf(stderr, "controld: %s: \"%s\" is duplicate\n", where,
                    key);
            return -1;
        }

        set[i] = 1;

        if (k->str) {
            *k->str = val;
            return 0;
        }

        if (k->flag) {
            if (strcmp(val, "on") == 0) {
                *k->num = 1;

            } else if (strcmp(val, "off") == 0) {
                *k->num = 0;

            } else {
                fprintf(stderr, "controld: %s: \"%s\" takes on or off\n",
                        where, key);
                return -1;
            }

            return 0;
        }

        if (ctld_parse_duration(val, k->num) != 0) {
            fprintf(stderr, "controld: %s: invalid duration \"%s\" for "
                    "\"%s\" (N, Nms, Ns, Nm)\n", where, val, key);
            return -1;
        }

        return 0;
    }

    fprintf(stderr, "controld: %s: unknown key \"%s\"\n", where, key);
    return -1;
}


static int
ctld_parse_duration(const char *s, int *ms)
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


void
ctld_log(const char *fmt, ...)
{
    char            ts[32], line[2048];
    va_list         ap;
    struct tm       tm;
    struct timeval  tv;

    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);

    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);

    fprintf(stderr, "%s.%03dZ controld: %s\n", ts, (int) (tv.tv_usec / 1000),
            line);
}


int64_t
ctld_now_ms(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);

    return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}


char *
ctld_strdup(const char *s)
{
    char  *p;

    p = strdup(s ? s : "");
    if (p == NULL) {
        ctld_log("out of memory");
        abort();
    }

    return p;
}
