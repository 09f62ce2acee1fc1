/* Output-file helpers shared by the writers: hidden temporary names, the
 * removal of temporaries left by dead runs, whole-file writes. */
#include "tiler_private.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

char *sp__tiler_temp_name(const char *final_path) {
    return sp_temp_sibling(final_path); /* "<dir>/.<base>.tmp-<pid>" */
}

void sp__tiler_clean_stale(const char *final_path) {
    const char *base = sp_basename(final_path);
    size_t dirlen = (size_t)(base - final_path);
    char *dir = dirlen ? strndup(final_path, dirlen) : strdup(".");
    size_t plen = strlen(base) + 6; /* ".<base>.tmp-" */
    char *prefix = malloc(plen + 1);
    if (!dir || !prefix)
        goto out;
    snprintf(prefix, plen + 1, ".%s.tmp-", base);
    DIR *dp = opendir(dir);
    if (!dp)
        goto out;
    struct dirent *e;
    while ((e = readdir(dp)) != NULL) {
        if (strncmp(e->d_name, prefix, plen) != 0)
            continue;
        char *end = NULL;
        long pid = strtol(e->d_name + plen, &end, 10);
        if (!end || *end != '\0' || pid <= 0)
            continue;
        /* only a dead process's leftovers (or our own pid's, from a run
         * whose pid was recycled) */
        if (pid != (long)getpid() &&
            !(kill((pid_t)pid, 0) != 0 && errno == ESRCH))
            continue;
        size_t n = strlen(dir) + strlen(e->d_name) + 2;
        char *path = malloc(n);
        if (path) {
            snprintf(path, n, "%s/%s", dir, e->d_name);
            sp_remove_tree(path, NULL);
            free(path);
        }
    }
    closedir(dp);
out:
    free(dir);
    free(prefix);
}

bool sp__write_file(const char *path, const uint8_t *data, size_t n,
                    sp_error *err) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
    if (fd < 0)
        return sp_error_errno(err, SP_ERR_OUTPUT, path, errno, "cannot create");
    while (n > 0) {
        ssize_t w = write(fd, data, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            int e = errno;
            close(fd);
            return sp_error_errno(err, SP_ERR_OUTPUT, path, e, "write failed");
        }
        data += w;
        n -= (size_t)w;
    }
    if (close(fd) != 0)
        return sp_error_errno(err, SP_ERR_OUTPUT, path, errno, "write failed");
    return true;
}

bool sp__spool_write(int fd, uint64_t off, const uint8_t *data, size_t n,
                     bool pad, const char *name, sp_error *err) {
    static const uint8_t zero = 0;
    const size_t total = n + (pad ? 1 : 0);
    size_t done = 0;
    while (done < total) {
        const uint8_t *src = done < n ? data + done : &zero;
        ssize_t k =
            pwrite(fd, src, done < n ? n - done : 1, (off_t)(off + done));
        if (k < 0) {
            if (errno == EINTR)
                continue;
            return sp_error_errno(err, SP_ERR_OUTPUT, name, errno,
                                  "write failed");
        }
        done += (size_t)k;
    }
    return true;
}

/* ---- the spool ---------------------------------------------------------- */

struct spool_ent {
    uint64_t *where; /* the writer's index slot of the tile */
    size_t rel;      /* its offset in the run */
};

struct sp__spool {
    int fd;
    int threads;
    _Atomic uint64_t end; /* the bytes written or being written */
    struct spool_run {
        uint8_t *buf; /* SP_SPOOL_RUN bytes */
        size_t used;
        struct spool_ent *ent; /* the tiles in buf */
        size_t nent, cap;
    } * run;
};

sp__spool *sp__spool_create(int fd, int threads) {
    sp__spool *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->fd = fd;
    s->threads = threads > 0 ? threads : 1;
    atomic_init(&s->end, 0);
    s->run = calloc((size_t)s->threads, sizeof *s->run);
    if (!s->run) {
        free(s);
        return NULL;
    }
    return s;
}

void sp__spool_free(sp__spool *s) {
    if (!s)
        return;
    for (int t = 0; t < s->threads; t++) {
        free(s->run[t].buf);
        free(s->run[t].ent);
    }
    free(s->run);
    free(s);
}

/* Write thread t's run at the spool's end, tell its tiles where they
 * went, and empty it. */
static bool flush_run(sp__spool *s, int t, const char *name, sp_error *err) {
    struct spool_run *r = &s->run[t];
    if (r->used == 0)
        return true;
    uint64_t base = atomic_fetch_add(&s->end, (uint64_t)r->used);
    bool ok = sp__spool_write(s->fd, base, r->buf, r->used, false, name, err);
    for (size_t k = 0; k < r->nent; k++)
        *r->ent[k].where = base + r->ent[k].rel;
    r->used = r->nent = 0;
    return ok;
}

bool sp__spool_put(sp__spool *s, int t, const uint8_t *data, size_t n, bool pad,
                   uint64_t *where, const char *name, sp_error *err) {
    const size_t total = n + (pad ? 1 : 0);
    if (t < 0 || t >= s->threads)
        return sp_error_set(err, SP_ERR_INTERNAL, name, "spool thread %d", t);
    struct spool_run *r = &s->run[t];
    if (total > SP_SPOOL_RUN / 4) { /* large: written now, at the end */
        *where = atomic_fetch_add(&s->end, (uint64_t)total);
        return sp__spool_write(s->fd, *where, data, n, pad, name, err);
    }
    if (!r->buf && !(r->buf = malloc(SP_SPOOL_RUN)))
        return sp_error_set(err, SP_ERR_NOMEM, name, "out of memory");
    if (r->used + total > SP_SPOOL_RUN && !flush_run(s, t, name, err))
        return false;
    if (r->nent == r->cap) {
        size_t cap = r->cap ? 2 * r->cap : 256;
        struct spool_ent *e = realloc(r->ent, cap * sizeof *e);
        if (!e)
            return sp_error_set(err, SP_ERR_NOMEM, name, "out of memory");
        r->ent = e;
        r->cap = cap;
    }
    r->ent[r->nent++] = (struct spool_ent){where, r->used};
    memcpy(r->buf + r->used, data, n);
    if (pad)
        r->buf[r->used + n] = 0;
    r->used += total;
    return true;
}

bool sp__spool_flush(sp__spool *s, const char *name, sp_error *err) {
    bool ok = true;
    for (int t = 0; t < s->threads; t++)
        if (!flush_run(s, t, name, ok ? err : &(sp_error){0}))
            ok = false;
    return ok;
}

uint64_t sp__spool_size(sp__spool *s) { return atomic_load(&s->end); }
