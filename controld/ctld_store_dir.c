/*
 * Copyright (C) The relay authors
 */


/*
 * The version store: sole writer of the data directory.
 *
 *   DIR/lock                            flock()ed while controld runs
 *   DIR/versions/NNNNNNNNNNNNNNNNNNNN.meta    "rolled_back_from N;"
 *   DIR/versions/NNNNNNNNNNNNNNNNNNNN.policy  packed relay.control.v1.Policy
 *
 * N is the version, 20 digits so that names sort.  Every file is visible
 * only after write, fsync, rename and a sync of the directory; the .meta
 * goes first, so a .policy file is a complete version.  Version, author,
 * creation time and comment live in the Policy itself.  The current version
 * is the newest: a rollback makes a new version, so numbers only grow, and
 * they survive restarts because they are the file names.  Every version is
 * kept in memory (they are small), unpacked, with its wire form cached.
 */


#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ctld_alloc.h"
#include "ctld_codec.h"
#include "ctld_log.h"
#include "ctld_store.h"


static int ctld_store_load(const char *name);
static int ctld_store_write(const char *name, const void *data, size_t len,
    char *err, size_t errlen);
static int ctld_store_cmp(const void *a, const void *b);


static char              *ctld_store_dir;     /* DIR/versions */
static int                ctld_store_dir_fd = -1;
static int                ctld_store_lock_fd = -1;
static ctld_version_t   **ctld_versions;
static size_t             ctld_nversions;
static size_t             ctld_versions_cap;


int
ctld_store_open(const char *dir)
{
    char            path[4096];
    size_t          len;
    DIR            *d;
    struct dirent  *de;

    if (mkdir(dir, 0750) != 0 && errno != EEXIST) {
        ctld_log("data dir %s: mkdir: %s", dir, strerror(errno));
        return -1;
    }

    snprintf(path, sizeof(path), "%s/lock", dir);

    ctld_store_lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0640);
    if (ctld_store_lock_fd == -1) {
        ctld_log("data dir %s: %s: %s", dir, path, strerror(errno));
        return -1;
    }

    if (flock(ctld_store_lock_fd, LOCK_EX | LOCK_NB) != 0) {
        ctld_log("data dir %s is in use by another controld (%s)", dir,
                 strerror(errno));
        return -1;
    }

    snprintf(path, sizeof(path), "%s/versions", dir);

    if (mkdir(path, 0750) != 0 && errno != EEXIST) {
        ctld_log("data dir %s: mkdir: %s", path, strerror(errno));
        return -1;
    }

    ctld_store_dir = ctld_strdup(path);

    ctld_store_dir_fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (ctld_store_dir_fd == -1) {
        ctld_log("data dir %s: %s", path, strerror(errno));
        return -1;
    }

    d = opendir(path);
    if (d == NULL) {
        ctld_log("data dir %s: %s", path, strerror(errno));
        return -1;
    }

    while ((de = readdir(d)) != NULL) {
        len = strlen(de->d_name);

        if (strncmp(de->d_name, ".tmp.", 5) == 0) {
            /* an interrupted write: never renamed, never a version */
            unlinkat(ctld_store_dir_fd, de->d_name, 0);
            continue;
        }

        if (len == 27 && strcmp(de->d_name + 20, ".policy") == 0
            && strspn(de->d_name, "0123456789") == 20)
        {
            if (ctld_store_load(de->d_name) != 0) {
                closedir(d);
                return -1;
            }
        }
    }

    closedir(d);

    if (ctld_nversions) {
        qsort(ctld_versions, ctld_nversions, sizeof(ctld_version_t *),
              ctld_store_cmp);
    }

    if (ctld_nversions == 0) {
        ctld_log("data dir %s: no versions yet", dir);

    } else {
        ctld_log("data dir %s: %zu versions, current %llu", dir,
                 ctld_nversions,
                 (unsigned long long) ctld_store_current()->version);
    }

    return 0;
}


static int
ctld_store_load(const char *name)
{
    int                  fd;
    char                 path[4096], meta[256], err[512];
    ssize_t              n;
    uint64_t             version;
    struct stat          st;
    unsigned char       *buf;
    relay_policy_t      *p;
    ctld_version_t      *v;
    unsigned long long   rb;

    snprintf(path, sizeof(path), "%s/%s", ctld_store_dir, name);
    version = strtoull(name, NULL, 10);

    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd == -1 || fstat(fd, &st) != 0) {
        ctld_log("%s: %s", path, strerror(errno));
        if (fd != -1) {
            close(fd);
        }
        return -1;
    }

    if (st.st_size > CTLD_MAX_MESSAGE) {
        ctld_log("%s: larger than %d bytes", path, CTLD_MAX_MESSAGE);
        close(fd);
        return -1;
    }

    buf = malloc(st.st_size + 1);
    if (buf == NULL) {
        close(fd);
        return -1;
    }

    n = read(fd, buf, st.st_size);
    close(fd);

    if (n != st.st_size) {
        ctld_log("%s: short read", path);
        free(buf);
        return -1;
    }

    p = relay__control__v1__policy__unpack(NULL, n, buf);
    free(buf);

    if (p == NULL || p->version != version) {
        ctld_log("%s: not a policy of version %llu; move it away to start",
                 path, (unsigned long long) version);
        if (p) {
            relay_policy_free(p);
        }
        return -1;
    }

    if (relay_policy_validate(p, err, sizeof(err)) != 0) {
        /* the validator may have grown stricter: keep it, say so */
        ctld_log("version %llu no longer validates: %s",
                 (unsigned long long) version, err);
    }

    rb = 0;
    memcpy(meta, name, 20);
    snprintf(meta + 20, sizeof(meta) - 20, ".meta");
    snprintf(path, sizeof(path), "%s/%s", ctld_store_dir, meta);

    FILE  *f = fopen(path, "r");

    if (f != NULL) {
        if (fscanf(f, "rolled_back_from %llu;", &rb) != 1) {
            ctld_log("%s: unreadable, rolled_back_from taken as 0", path);
            rb = 0;
        }
        fclose(f);
    }

    v = calloc(1, sizeof(ctld_version_t));
    if (v == NULL) {
        relay_policy_free(p);
        return -1;
    }

    v->version = version;
    v->rolled_back_from = rb;
    v->policy = p;

    if (ctld_nversions == ctld_versions_cap) {
        ctld_version_t  **nv;
        size_t            cap;

        cap = ctld_versions_cap ? ctld_versions_cap * 2 : 16;
        nv = realloc(ctld_versions, cap * sizeof(ctld_version_t *));
        if (nv == NULL) {
            relay_policy_free(p);
            free(v);
            return -1;
        }

        ctld_versions = nv;
        ctld_versions_cap = cap;
    }

    ctld_versions[ctld_nversions++] = v;

    return 0;
}


static int
ctld_store_cmp(const void *a, const void *b)
{
    const ctld_version_t  *va = *(ctld_version_t * const *) a;
    const ctld_version_t  *vb = *(ctld_version_t * const *) b;

    return va->version < vb->version ? -1 : va->version > vb->version;
}


size_t
ctld_store_count(void)
{
    return ctld_nversions;
}


ctld_version_t *
ctld_store_nth(size_t i)
{
    return i < ctld_nversions ? ctld_versions[i] : NULL;
}


ctld_version_t *
ctld_store_current(void)
{
    return ctld_nversions ? ctld_versions[ctld_nversions - 1] : NULL;
}


ctld_version_t *
ctld_store_get(uint64_t version)
{
    size_t  lo, hi, mid;

    lo = 0;
    hi = ctld_nversions;

    while (lo < hi) {
        mid = (lo + hi) / 2;

        if (ctld_versions[mid]->version == version) {
            return ctld_versions[mid];
        }

        if (ctld_versions[mid]->version < version) {
            lo = mid + 1;

        } else {
            hi = mid;
        }
    }

    return NULL;
}


uint64_t
ctld_store_next_version(void)
{
    return ctld_nversions ? ctld_store_current()->version + 1 : 1;
}


/*
 * Stores p, already stamped with ctld_store_next_version() and validated,
 * as a new version (a deep copy is kept).
 */

ctld_version_t *
ctld_store_add(const relay_policy_t *p, uint64_t rolled_back_from, char *err,
    size_t errlen)
{
    int              n;
    char             name[64], meta[64];
    size_t           len;
    unsigned char   *buf;
    ctld_version_t  *v, **nv;

    if (p->version != ctld_store_next_version()) {
        snprintf(err, errlen, "version %llu is not the next one",
                 (unsigned long long) p->version);
        return NULL;
    }

    if (ctld_nversions == ctld_versions_cap) {
        size_t  cap;

        cap = ctld_versions_cap ? ctld_versions_cap * 2 : 16;
        nv = realloc(ctld_versions, cap * sizeof(ctld_version_t *));
        if (nv == NULL) {
            snprintf(err, errlen, "out of memory");
            return NULL;
        }

        ctld_versions = nv;
        ctld_versions_cap = cap;
    }

    v = calloc(1, sizeof(ctld_version_t));
    if (v == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }

    v->policy = relay_policy_copy(p);
    if (v->policy == NULL) {
        free(v);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }

    v->version = p->version;
    v->rolled_back_from = rolled_back_from;

    snprintf(name, sizeof(name), "%020llu.policy",
             (unsigned long long) v->version);
    n = snprintf(meta, sizeof(meta), "rolled_back_from %llu;\n",
                 (unsigned long long) rolled_back_from);

    char  mname[64];

    snprintf(mname, sizeof(mname), "%020llu.meta",
             (unsigned long long) v->version);

    if (ctld_store_write(mname, meta, n, err, errlen) != 0) {
        goto failed;
    }

    len = relay__control__v1__policy__get_packed_size(v->policy);
    buf = malloc(len ? len : 1);
    if (buf == NULL) {
        snprintf(err, errlen, "out of memory");
        goto failed;
    }

    relay__control__v1__policy__pack(v->policy, buf);

    n = ctld_store_write(name, buf, len, err, errlen);
    free(buf);

    if (n != 0) {
        goto failed;
    }

    ctld_versions[ctld_nversions++] = v;

    return v;

failed:

    relay_policy_free(v->policy);
    free(v);
    return NULL;
}


static int
ctld_store_write(const char *name, const void *data, size_t len, char *err,
    size_t errlen)
{
    int          fd;
    char         tmp[128];
    ssize_t      n;
    const char  *what;

    snprintf(tmp, sizeof(tmp), ".tmp.%s", name);

    fd = openat(ctld_store_dir_fd, tmp,
                O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    if (fd == -1) {
        what = "open";
        goto failed;
    }

    n = write(fd, data, len);
    if (n != (ssize_t) len) {
        what = n == -1 ? "write" : "short write";
        close(fd);
        goto failed;
    }

    if (fsync(fd) != 0) {
        what = "fsync";
        close(fd);
        goto failed;
    }

    if (close(fd) != 0) {
        what = "close";
        goto failed;
    }

    if (renameat(ctld_store_dir_fd, tmp, ctld_store_dir_fd, name) != 0) {
        what = "rename";
        goto failed;
    }

    if (fsync(ctld_store_dir_fd) != 0) {
        what = "fsync of the directory";
        goto failed;
    }

    return 0;

failed:

    snprintf(err, errlen, "storing %s/%s: %s: %s", ctld_store_dir, name,
             what, strerror(errno));
    ctld_log("%s", err);
    unlinkat(ctld_store_dir_fd, tmp, 0);
    return -1;
}


grpc_slice
ctld_store_wire(ctld_version_t *v)
{
    Relay__Control__V1__ControlMessage  m =
                                      RELAY__CONTROL__V1__CONTROL_MESSAGE__INIT;

    if (!v->wire_ready) {
        m.msg_case = RELAY__CONTROL__V1__CONTROL_MESSAGE__MSG_POLICY;
        m.policy = v->policy;
        v->wire = ctld_codec_pack_slice(&m.base);
        v->wire_ready = 1;
    }

    return v->wire;
}


void
ctld_store_close(void)
{
    size_t  i;

    for (i = 0; i < ctld_nversions; i++) {
        if (ctld_versions[i]->wire_ready) {
            grpc_slice_unref(ctld_versions[i]->wire);
        }

        relay_policy_free(ctld_versions[i]->policy);
        free(ctld_versions[i]);
    }

    free(ctld_versions);
    ctld_versions = NULL;
    ctld_nversions = 0;

    free(ctld_store_dir);

    if (ctld_store_dir_fd != -1) {
        close(ctld_store_dir_fd);
    }

    if (ctld_store_lock_fd != -1) {
        close(ctld_store_lock_fd);
    }
}
