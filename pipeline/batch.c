/* batch: the public object (batch.h) and sp_batch_run, which plans,
 * runs and reports through the files listed in batch_private.h. */
#include "batch_private.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

const char *sp_batch_status_name(sp_batch_status s) {
    switch (s) {
    case SP_BATCH_PENDING: return "pending";
    case SP_BATCH_RUNNING: return "running";
    case SP_BATCH_DONE: return "done";
    case SP_BATCH_ALREADY_DONE: return "already-done";
    case SP_BATCH_FAILED: return "failed";
    case SP_BATCH_INTERRUPTED: return "interrupted";
    case SP_BATCH_NOT_SLIDE: return "not-a-slide";
    }
    return "?";
}

sp_batch *sp_batch_new(const sp_batch_opts *o, sp_error *err) {
    if (!o->outdir || !o->outdir[0]) {
        sp_error_set(err, SP_ERR_USAGE, NULL, "no output directory");
        return NULL;
    }
    sp_batch *b = calloc(1, sizeof *b);
    if (!b) {
        sp_error_set(err, SP_ERR_NOMEM, NULL, "out of memory");
        return NULL;
    }
    b->o = *o;
    b->lock_fd = b->shard_lock_fd = -1;
    b->outdir = strdup(o->outdir);
    if (!b->outdir)
        goto oom;
    size_t ol = strlen(b->outdir);
    while (ol > 1 && b->outdir[ol - 1] == '/')
        b->outdir[--ol] = '\0';
    if (!sp_batch_parse_options(o->options, &b->common, err))
        goto fail;
    b->o.outdir = b->outdir;
    b->o.options = b->common;
    if (b->o.threads <= 0)
        b->o.threads = sp_default_threads();
    struct stat st;
    if (stat(b->outdir, &st) == 0 && S_ISDIR(st.st_mode)) {
        b->outdir_exists = true;
        b->out_dev = st.st_dev;
        b->out_ino = st.st_ino;
    }
    if (o->shard_count < 0 || o->shard_count > 1000000 ||
        (o->shard_count > 0 &&
         (o->shard_index < 0 || o->shard_index >= o->shard_count))) {
        sp_error_set(err, SP_ERR_USAGE, NULL,
                     "shard %d of %d: the index must be 0..count-1",
                     o->shard_index, o->shard_count);
        goto fail;
    }
    if (o->shard_count > 0 && (o->merge || o->transport)) {
        sp_error_set(err, SP_ERR_USAGE, NULL,
                     "a shard cannot also be a merge or a batch over MPI");
        goto fail;
    }
    char names[2][64];
    for (int k = 0; k < 2; k++) {
        const char *ext = k ? "json" : "tsv";
        if (o->shard_count > 0)
            snprintf(names[k], sizeof names[k],
                     "batch-summary.shard-%d-of-%d.%s", o->shard_index,
                     o->shard_count, ext);
        else
            snprintf(names[k], sizeof names[k], "batch-summary.%s", ext);
    }
    b->summary_tsv = sp_path_join(b->outdir, names[0]);
    b->summary_json = sp_path_join(b->outdir, names[1]);
    if (!b->summary_tsv || !b->summary_json)
        goto oom;
    b->counts.threads_total = b->o.threads;
    b->counts.eta = -1;
    return b;
oom:
    sp_error_set(err, SP_ERR_NOMEM, NULL, "out of memory");
fail:
    sp_batch_free(b);
    return NULL;
}

void sp_batch_free(sp_batch *b) {
    if (!b)
        return;
    for (size_t i = 0; i < b->n; i++)
        sp__bslide_free(b->v[i]);
    free(b->v);
    if (b->lock_fd >= 0)
        close(b->lock_fd);
    if (b->shard_lock_fd >= 0)
        close(b->shard_lock_fd);
    free(b->outdir);
    free(b->common);
    free(b->cohort_error);
    free(b->cohort_path);
    free(b->summary_error);
    free(b->summary_tsv);
    free(b->summary_json);
    free(b);
}

size_t sp_batch_count(const sp_batch *b) { return b->n; }
const sp_batch_slide *sp_batch_slide_at(const sp_batch *b, size_t i) {
    return i < b->n ? &b->v[i]->pub : NULL;
}
const sp_batch_counts *sp_batch_get_counts(const sp_batch *b) {
    return &b->counts;
}
const char *sp_batch_cohort_error(const sp_batch *b) { return b->cohort_error; }
const char *sp_batch_summary_error(const sp_batch *b) {
    return b->summary_error;
}
const char *sp_batch_cohort_path(const sp_batch *b) {
    return b->cohort_written ? b->cohort_path : NULL;
}

sp_errcode sp_batch_exit_category(const sp_batch *b) {
    int rank = 0; /* 0 ok, 1 input, 2 output, 3 internal */
    for (size_t i = 0; i < b->n; i++) {
        const sp_batch_slide *s = &b->v[i]->pub;
        if (s->status != SP_BATCH_FAILED)
            continue;
        int r =
            s->error_code == SP_ERR_INPUT || s->error_code == SP_ERR_NOT_SLIDE
                ? 1
            : s->error_code == SP_ERR_OUTPUT ? 2
                                             : 3;
        if (r > rank)
            rank = r;
    }
    if ((b->cohort_error || b->summary_error) && rank < 2)
        rank = 2;
    static const sp_errcode codes[] = {SP_OK, SP_ERR_INPUT, SP_ERR_OUTPUT,
                                       SP_ERR_INTERNAL};
    return codes[rank];
}

bool sp_batch_run(sp_batch *b, sp_error *err) {
    b->t0 = sp_now();
    sp__batch_iso_now(b->started_iso, sizeof b->started_iso);
    if (!b->o.dry_run && !sp__batch_open_outdir(b, err))
        return false;
    if (!sp__batch_plan(b, err))
        return false;
    if (!b->o.dry_run && b->o.shard_count > 0)
        sp__batch_sweep_temps(b);
    if (b->o.cancel && *b->o.cancel)
        b->cancelling = true;
    sp__batch_emit(b, SP_BATCH_EV_PLANNED, NULL, NULL);
    for (size_t i = 0; i < b->n; i++) {
        const sp_batch_status st = b->v[i]->pub.status;
        if (st == SP_BATCH_ALREADY_DONE || st == SP_BATCH_NOT_SLIDE)
            sp__batch_emit(b, SP_BATCH_EV_SKIP, b->v[i], NULL);
        else if (st == SP_BATCH_FAILED)
            sp__batch_emit(b, SP_BATCH_EV_FINISH, b->v[i], NULL);
    }
    if (b->o.dry_run)
        return true;
    /* the first write: a full or read-only file system stops the batch
     * here with one message instead of failing every slide */
    if (!sp__batch_write_summaries(b, err))
        return false;
    /* a file-size limit makes writes fail with EFBIG (children inherit the
     * ignored disposition) instead of killing the process */
    struct sigaction ign, old_xfsz;
    memset(&ign, 0, sizeof ign);
    ign.sa_handler = SIG_IGN;
    sigemptyset(&ign.sa_mask);
    sigaction(SIGXFSZ, &ign, &old_xfsz);
    bool ok = !b->cancelling && !b->o.merge ? sp__batch_run_all(b, err) : true;
    if (ok && b->cancelling)
        for (size_t i = 0; i < b->n; i++)
            if (b->v[i]->pub.status == SP_BATCH_PENDING) {
                b->v[i]->pub.status = SP_BATCH_INTERRUPTED;
                sp__set_str(&b->v[i]->error, "not started: batch interrupted");
                sp__bslide_sync(b->v[i]);
            }
    /* the cohort of a job array is the merge's */
    if (ok && !b->cancelling && b->o.shard_count == 0)
        sp__batch_write_cohort(b);
    b->finished = ok;
    sp_error se = {0};
    if (!sp__batch_write_summaries(b, &se))
        sp__set_str(&b->summary_error, se.msg);
    sigaction(SIGXFSZ, &old_xfsz, NULL);
    sp__batch_recount(b);
    return ok;
}
