/*
 * Copyright (C) The relay authors
 */


/*
 * The data directory, the store's backend: sole writer of it.
 *
 *   DIR/lock                            flock()ed while controld runs
 *   DIR/versions/NNNNNNNNNNNNNNNNNNNN.meta    "rolled_back_from N;"
 *                                       ["state canary|aborted;"]
 *                                       ["canary SELECTOR;"]
 *   DIR/versions/NNNNNNNNNNNNNNNNNNNN.policy  packed relay.control.v1.Policy
 *
 * N is the version, 20 digits so that names sort.  Every file is visible
 * only after write, fsync, rename and a sync of the directory; the .meta
 * goes first, so a .policy file is a complete version.  Version, author,
 * creation time and comment live in the Policy itself.  Versions survive
 * restarts because they are the file names; a canary's state lives in its
 * .meta, written again (atomically) when it is promoted or taken back.
 * One controld per directory: saves are done when they return.
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
#include "ctld_store_dir.h"


static int ctld_store_dir_open(const char *dir);
static int ctld_store_dir_load(ctld_store_found_pt found);
static int ctld_store_dir_read(const char *name, ctld_store_found_pt found);
static uint64_t ctld_store_dir_meta(const char *name, ctld_state_e *state,
    char *canary, size_t len);
static void ctld_store_dir_save(ctld_version_t *v,
    const ctld_version_t *newest, ctld_store_done_pt done, void *data);
static int ctld_store_dir_write(const char *name, const void *data,
    size_t len, char *err, size_t errlen);
static void ctld_store_dir_close(void);


const ctld_store_backend_t  ctld_store_dir = {
    "data dir",
    ctld_store_dir_open,
    ctld_store_dir_load,
    ctld_store_dir_save,
    NULL,
    ctld_store_dir_close,
    NULL
};


static char  *ctld_dir_versions;         /* DIR/versions */
static int    ctld_dir_fd = -1;
static int    ctld_dir_lock_fd = -1;


static int
ctld_store_dir_open(const char *dir)
{
    char  path[4096];

    if (mkdir(dir, 0750) != 0 && errno != EEXIST) {
        ctld_log("data dir %s: mkdir: %s", dir, strerror(errno));
        return -1;
    }

    snprintf(path, sizeof(path), "%s/lock", dir);

    ctld_dir_lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0640);
    if (ctld_dir_lock_fd == -1) {
        ctld_log("data dir %s: %s: %s", dir, path, strerror(errno));
        return -1;
    }

    if (flock(ctld_dir_lock_fd, LOCK_EX | LOCK_NB) != 0) {
        ctld_log("data dir %s is in use by another controld (%s)", dir,
                 strerror(errno));
        return -1;
    }

    snprintf(path, sizeof(path), "%s/versions", dir);

    if (mkdir(path, 0750) != 0 && errno != EEXIST) {
        ctld_log("data dir %s: mkdir: %s", path, strerror(errno));
        return -1;
    }

    ctld_dir_versions = ctld_strdup(path);

    ctld_dir_fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (ctld_dir_fd == -1) {
        ctld_log("data dir %s: %s", path, strerror(errno));
        return -1;
    }

    return 0;
}


static int
ctld_store_dir_load(ctld_store_found_pt found)
{
    size_t          len;
    DIR            *d;
    struct dirent  *de;

    d = opendir(ctld_dir_versions);
    if (d == NULL) {
        ctld_log("data dir %s: %s", ctld_dir_versions, strerror(errno));
        return -1;
    }

    while ((de = readdir(d)) != NULL) {
        len = strlen(de->d_name);

        if (strncmp(de->d_name, ".tmp.", 5) == 0) {
            /* an interrupted write: never renamed, never a version */
            unlinkat(ctld_dir_fd, de->d_name, 0);
            continue;
        }

        if (len == 27 && strcmp(de->d_name + 20, ".policy") == 0
            && strspn(de->d_name, "0123456789") == 20)
        {
            if (ctld_store_dir_read(de->d_name, found) != 0) {
                closedir(d);
                return -1;
            }
        }
    }

    closedir(d);

    return 0;
}


static int
ctld_store_dir_read(const char *name, ctld_store_found_pt found)
{
    int              fd;
    char             path[4096], canary[1100];
    ssize_t          n;
    uint64_t         version, rb;
    ctld_state_e     state;
    struct stat      st;
    unsigned char   *buf;
    relay_policy_t  *p;

    snprintf(path, sizeof(path), "%s/%s", ctld_dir_versions, name);
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

    rb = ctld_store_dir_meta(name, &state, canary, sizeof(canary));

    return found(version, rb, state, canary, p);
}


/*
 * rolled_back_from, state and canary of a version, from NNN.meta beside
 * NNN.policy (a .meta of before canaries holds the first line only)
 */

static uint64_t
ctld_store_dir_meta(const char *name, ctld_state_e *state, char *canary,
    size_t len)
{
    char                 meta[256], path[4096], line[1200], word[1100];
    FILE                *f;
    unsigned long long   rb;

    rb = 0;
    *state = CTLD_STATE_FLEET;
    canary[0] = '\0';

    memcpy(meta, name, 20);
    snprintf(meta + 20, sizeof(meta) - 20, ".meta");
    snprintf(path, sizeof(path), "%s/%s", ctld_dir_versions, meta);

    f = fopen(path, "r");
    if (f == NULL) {
        return 0;
    }

    if (fscanf(f, "rolled_back_from %llu;", &rb) != 1) {
        ctld_log("%s: unreadable, rolled_back_from taken as 0", path);
        rb = 0;
    }

    while (fgets(line, sizeof(line), f) != NULL) {
        if (sscanf(line, " state %1099[a-z];", word) == 1) {
            *state = strcmp(word, "canary") == 0 ? CTLD_STATE_CANARY
                     : strcmp(word, "aborted") == 0 ? CTLD_STATE_ABORTED
                     : CTLD_STATE_FLEET;

        } else if (sscanf(line, " canary %1099[^;];", word) == 1) {
            snprintf(canary, len, "%s", word);
        }
    }

    fclose(f);

    return rb;
}


/* the .meta first: a .policy file is a complete version */

static void
ctld_store_dir_save(ctld_version_t *v, const ctld_version_t *newest,
    ctld_store_done_pt done, void *data)
{
    int             n;
    char            name[64], mname[64], meta[1200], err[512];
    size_t          len;
    unsigned char  *buf;

    snprintf(name, sizeof(name), "%020llu.policy",
             (unsigned long long) v->version);
    snprintf(mname, sizeof(mname), "%020llu.meta",
             (unsigned long long) v->version);
    n = snprintf(meta, sizeof(meta), "rolled_back_from %llu;\n%s%s%s%s",
                 (unsigned long long) v->rolled_back_from,
                 v->state == CTLD_STATE_CANARY ? "state canary;\n"
                 : v->state == CTLD_STATE_ABORTED ? "state aborted;\n" : "",
                 v->canary && v->canary[0] ? "canary " : "",
                 v->canary && v->canary[0] ? v->canary : "",
                 v->canary && v->canary[0] ? ";\n" : "");

    if (ctld_store_dir_write(mname, meta, n, err, sizeof(err)) != 0) {
        done(data, NULL, GRPC_STATUS_INTERNAL, NULL, err);
        return;
    }

    len = relay__control__v1__policy__get_packed_size(v->policy);
    buf = malloc(len ? len : 1);
    if (buf == NULL) {
        done(data, NULL, GRPC_STATUS_RESOURCE_EXHAUSTED, NULL,
             "out of memory");
        return;
    }

    relay__control__v1__policy__pack(v->policy, buf);

    n = ctld_store_dir_write(name, buf, len, err, sizeof(err));
    free(buf);

    if (n != 0) {
        done(data, NULL, GRPC_STATUS_INTERNAL, NULL, err);
        return;
    }

    done(data, v, GRPC_STATUS_OK, NULL, NULL);
}


static int
ctld_store_dir_write(const char *name, const void *data, size_t len,
    char *err, size_t errlen)
{
    int          fd;
    char         tmp[128];
    ssize_t      n;
    const char  *what;

    snprintf(tmp, sizeof(tmp), ".tmp.%s", name);

    fd = openat(ctld_dir_fd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
                0640);
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

    if (renameat(ctld_dir_fd, tmp, ctld_dir_fd, name) != 0) {
        what = "rename";
        goto failed;
    }

    if (fsync(ctld_dir_fd) != 0) {
        what = "fsync of the directory";
        goto failed;
    }

    return 0;

failed:

    snprintf(err, errlen, "storing %s/%s: %s: %s", ctld_dir_versions, name,
             what, strerror(errno));
    ctld_log("%s", err);
    unlinkat(ctld_dir_fd, tmp, 0);
    return -1;
}


static void
ctld_store_dir_close(void)
{
    free(ctld_dir_versions);
    ctld_dir_versions = NULL;

    if (ctld_dir_fd != -1) {
        close(ctld_dir_fd);
        ctld_dir_fd = -1;
    }

    if (ctld_dir_lock_fd != -1) {
        close(ctld_dir_lock_fd);
        ctld_dir_lock_fd = -1;
    }
}
