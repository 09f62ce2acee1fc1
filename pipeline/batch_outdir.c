/* batch: the output folder: created, locked against a second batch,
 * checked writable once, cleared of what dead batches left. */
#include "batch_private.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <time.h>
#include <unistd.h>

/* Is the temporary ".NAME.tmp-PID" one of this shard's slides? */
static bool shard_owns(const sp_batch *b, const char *tmp) {
    const char *end = strstr(tmp, ".tmp-");
    for (size_t i = 0; i < b->n; i++) {
        const char *id = b->v[i]->id;
        size_t l = id ? strlen(id) : 0;
        if (l && (size_t)(end - tmp - 1) == l && strncmp(tmp + 1, id, l) == 0)
            return true;
    }
    return false;
}

void sp__batch_sweep_temps(sp_batch *b) {
    DIR *d = opendir(b->outdir);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] != '.' || !strstr(e->d_name, ".tmp-"))
            continue;
        if (b->o.shard_count > 0 && !shard_owns(b, e->d_name))
            continue;
        char *p = sp_path_join(b->outdir, e->d_name);
        if (p)
            sp_remove_tree(p, NULL);
        free(p);
    }
    closedir(d);
}

/* OUTDIR/.shard-K-of-N.lock, held for the shard's life: one run of each
 * shard at a time. */
static bool lock_shard(sp_batch *b, sp_error *err) {
    char name[64];
    snprintf(name, sizeof name, ".shard-%d-of-%d.lock", b->o.shard_index,
             b->o.shard_count);
    char *lp = sp_path_join(b->outdir, name);
    if (!lp)
        return sp_error_set(err, SP_ERR_NOMEM, NULL, "out of memory");
    b->shard_lock_fd = open(lp, O_RDWR | O_CREAT, 0666);
    free(lp);
    if (b->shard_lock_fd < 0)
        return sp_error_errno(err, SP_ERR_OUTPUT, b->outdir, errno,
                              "output directory is not writable");
    for (int tries = 0;; tries++) {
        if (flock(b->shard_lock_fd, LOCK_EX | LOCK_NB) == 0)
            return true;
        if (errno != EWOULDBLOCK && errno != EINTR)
            return sp_error_errno(err, SP_ERR_OUTPUT, b->outdir, errno,
                                  "cannot lock the output directory");
        if (tries >= 100)
            return sp_error_set(err, SP_ERR_OUTPUT, b->outdir,
                                "shard %d of %d is already running on this "
                                "output directory",
                                b->o.shard_index, b->o.shard_count);
        struct timespec ts = {0, 100 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}

bool sp__batch_open_outdir(sp_batch *b, sp_error *err) {
    if (!sp_mkdir_p(b->outdir, err))
        return false;
    char *lp = sp_path_join(b->outdir, ".batch.lock");
    if (!lp)
        return sp_error_set(err, SP_ERR_NOMEM, NULL, "out of memory");
    /* not O_CLOEXEC: the children hold the lock too, so a new batch waits
     * until every child of a killed one is gone */
    b->lock_fd = open(lp, O_RDWR | O_CREAT, 0666);
    free(lp);
    if (b->lock_fd < 0)
        return sp_error_errno(err, SP_ERR_OUTPUT, b->outdir, errno,
                              "output directory is not writable");
    /* children of a killed batch die with it, but not instantly. The
     * shards of a job array share OUTDIR (each holds its own lock too);
     * a whole batch or a merge has it alone. */
    const bool shard = b->o.shard_count > 0;
    for (int tries = 0;; tries++) {
        if (flock(b->lock_fd, (shard ? LOCK_SH : LOCK_EX) | LOCK_NB) == 0)
            break;
        if (errno != EWOULDBLOCK && errno != EINTR)
            return sp_error_errno(err, SP_ERR_OUTPUT, b->outdir, errno,
                                  "cannot lock the output directory");
        if (tries >= 100)
            return sp_error_set(err, SP_ERR_OUTPUT, b->outdir,
                                "another slidepipe batch is writing to this "
                                "output directory");
        struct timespec ts = {0, 100 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    if (shard && !lock_shard(b, err))
        return false;
    /* a probe write: a full or read-only file system fails here, once */
    char *probe = sp_path_join(b->outdir, ".batch-write-test");
    if (!probe)
        return sp_error_set(err, SP_ERR_NOMEM, NULL, "out of memory");
    sp_error pe = {0};
    bool ok = sp_write_file_atomic(probe, "ok\n", 3, &pe);
    unlink(probe);
    if (!ok) {
        /* the cause is in pe (errno belongs to the cleanup by now): keep
         * it, naming OUTDIR rather than the probe file */
        size_t k = strlen(probe);
        const char *cause = strncmp(pe.msg, probe, k) == 0 && pe.msg[k] == ':'
                                ? pe.msg + k + 2
                                : pe.msg;
        sp_error_set(err,
                     pe.code == SP_ERR_NOMEM ? SP_ERR_NOMEM : SP_ERR_OUTPUT,
                     b->outdir, "output directory is not writable: %s", cause);
        free(probe);
        return false;
    }
    free(probe);
    /* a shard sweeps its own slides' once it knows them */
    if (!shard)
        sp__batch_sweep_temps(b);
    return true;
}
