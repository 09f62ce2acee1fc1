/* batch: what it tells: counts and events for the caller, the summary
 * files rewritten as slides finish, the cohort index at the end. */
#include "batch_private.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "store.h"

/* ---- events and counts -------------------------------------------------- */

void sp__batch_recount(sp_batch *b) {
    sp_batch_counts *c = &b->counts;
    size_t total = 0, done = 0, already = 0, failed = 0, intr = 0, ns = 0,
           running = 0;
    int busy = 0;
    double mp_left = 0;
    for (size_t i = 0; i < b->n; i++) {
        const sp_batch_slide *s = &b->v[i]->pub;
        switch (s->status) {
        case SP_BATCH_NOT_SLIDE: ns++; continue;
        case SP_BATCH_DONE: done++; break;
        case SP_BATCH_ALREADY_DONE: already++; break;
        case SP_BATCH_FAILED: failed++; break;
        case SP_BATCH_INTERRUPTED: intr++; break;
        case SP_BATCH_RUNNING:
            running++;
            busy += s->threads;
            mp_left += 0.5 * s->megapixels;
            break;
        case SP_BATCH_PENDING: mp_left += s->megapixels; break;
        }
        total++;
    }
    c->total = total;
    c->done = done;
    c->already_done = already;
    c->failed = failed;
    c->interrupted = intr;
    c->not_slides = ns;
    c->running = running;
    c->finished = done + already + failed + intr;
    c->threads_busy = busy;
    c->elapsed = b->t0 > 0 ? sp_now() - b->t0 : 0;
    double rate = c->elapsed > 0 ? b->mp_done / c->elapsed : 0;
    c->eta = running == 0 && mp_left == 0 ? 0 : rate > 0 ? mp_left / rate : -1;
}

void sp__batch_emit(sp_batch *b, sp_batch_event_kind kind, const sp__bslide *s,
                    const char *error) {
    sp__batch_recount(b);
    if (!b->o.on_event)
        return;
    sp_batch_event ev = {.kind = kind,
                         .slide = s ? &s->pub : NULL,
                         .counts = &b->counts,
                         .error = error};
    b->o.on_event(b->o.user, &ev);
}

/* ---- summary files ------------------------------------------------------ */

static void tsv_field(sp_buf *o, const char *s) {
    for (const char *p = s ? s : ""; *p; p++)
        sp_buf_append(o, *p == '\t' || *p == '\n' || *p == '\r' ? " " : p, 1);
}

bool sp__batch_write_summaries(sp_batch *b, sp_error *err) {
    sp_buf t, j;
    sp_buf_init(&t);
    sp_buf_init(&j);
    sp__batch_recount(b);
    sp_buf_puts(&t, "slide\tpath\tstatus\tseconds\ttiles\ttissue_area_mm2\t"
                    "stage\terror\n");
    sp_json w;
    sp_json_init(&w, &j, true);
    char now[32];
    sp__batch_iso_now(now, sizeof now);
    sp_json_begin_object(&w);
    sp_json_key(&w, "slidepipe_version");
    sp_json_string(&w, SP_VERSION);
    /* the folder's name; its full path only with full_paths */
    char *outdir_abs = b->o.full_paths ? sp__batch_abs_path(b->outdir) : NULL;
    sp_json_key(&w, "outdir");
    sp_json_string(&w, outdir_abs ? outdir_abs : sp_basename(b->outdir));
    free(outdir_abs);
    sp_json_key(&w, "paths");
    sp_json_string(&w, b->o.full_paths ? "full" : "relative");
    sp_json_key(&w, "started");
    sp_json_string(&w, b->started_iso);
    sp_json_key(&w, "updated");
    sp_json_string(&w, now);
    sp_json_key(&w, "finished");
    sp_json_bool(&w, b->finished);
    sp_json_key(&w, "interrupted");
    sp_json_bool(&w, b->cancelling);
    sp_json_key(&w, "threads");
    sp_json_int(&w, b->o.threads);
    if (b->o.shard_count > 0) {
        sp_json_key(&w, "shard");
        sp_json_int(&w, b->o.shard_index);
        sp_json_key(&w, "shards");
        sp_json_int(&w, b->o.shard_count);
    }
    if (b->o.transport) {
        sp_json_key(&w, "ranks");
        sp_json_int(&w, b->o.transport->size);
    }
    sp_json_key(&w, "options");
    sp_json_string(&w, b->common);
    sp_json_key(&w, "counts");
    sp_json_begin_object(&w);
    const sp_batch_counts *c = &b->counts;
    const struct {
        const char *k;
        size_t v;
    } cs[] = {{"slides", c->total},
              {"done", c->done},
              {"already_done", c->already_done},
              {"failed", c->failed},
              {"interrupted", c->interrupted},
              {"running", c->running},
              {"not_slides", c->not_slides}};
    for (size_t i = 0; i < sizeof cs / sizeof cs[0]; i++) {
        sp_json_key(&w, cs[i].k);
        sp_json_int(&w, (int64_t)cs[i].v);
    }
    sp_json_end_object(&w);
    sp_json_key(&w, "cohort");
    sp_json_string(&w, b->cohort_written ? "cohort.h5" : NULL);
    char *cerr = sp__batch_shared_text(b, NULL, b->cohort_error);
    sp_json_key(&w, "cohort_error");
    sp_json_string(&w, cerr);
    free(cerr);
    sp_json_key(&w, "slides");
    sp_json_begin_array(&w);
    for (size_t i = 0; i < b->n; i++) {
        const sp_batch_slide *s = &b->v[i]->pub;
        const char *st = sp_batch_status_name(s->status);
        char *path = sp__batch_recorded_path(b, b->v[i]);
        char *error = sp__batch_shared_text(b, b->v[i], s->error);
        if (!path || (s->error && !error))
            t.oom = true;
        tsv_field(&t, s->id);
        sp_buf_puts(&t, "\t");
        tsv_field(&t, path);
        sp_buf_printf(&t, "\t%s\t", st);
        if (isfinite(s->seconds))
            sp_buf_printf(&t, "%.2f", s->seconds);
        sp_buf_puts(&t, "\t");
        if (s->tiles >= 0)
            sp_buf_printf(&t, "%lld", (long long)s->tiles);
        sp_buf_puts(&t, "\t");
        if (isfinite(s->tissue_area_mm2))
            sp_buf_printf(&t, "%.4f", s->tissue_area_mm2);
        sp_buf_puts(&t, "\t");
        tsv_field(&t, s->stage);
        sp_buf_puts(&t, "\t");
        tsv_field(&t, error);
        sp_buf_puts(&t, "\n");

        sp_json_begin_object(&w);
        sp_json_key(&w, "slide");
        sp_json_string(&w, s->id);
        sp_json_key(&w, "path");
        sp_json_string(&w, path);
        sp_json_key(&w, "status");
        sp_json_string(&w, st);
        sp_json_key(&w, "seconds");
        sp_json_number(&w, s->seconds);
        sp_json_key(&w, "tiles");
        if (s->tiles >= 0)
            sp_json_int(&w, s->tiles);
        else
            sp_json_null(&w);
        sp_json_key(&w, "tissue_area_mm2");
        sp_json_number(&w, s->tissue_area_mm2);
        sp_json_key(&w, "stage");
        sp_json_string(&w, s->stage);
        sp_json_key(&w, "error");
        sp_json_string(&w, error);
        sp_json_key(&w, "error_code");
        sp_json_string(&w, s->status == SP_BATCH_FAILED
                               ? sp_errcode_name(s->error_code)
                               : NULL);
        if (s->note) {
            sp_json_key(&w, "note");
            sp_json_string(&w, s->note);
        }
        if (s->host) {
            /* where it ran (or runs: the summary names the slides in
             * flight) in a batch over several processes */
            sp_json_key(&w, "rank");
            sp_json_int(&w, s->rank);
            sp_json_key(&w, "host");
            sp_json_string(&w, s->host);
        }
        free(path);
        free(error);
        sp_json_key(&w, "vendor");
        sp_json_string(&w, s->vendor);
        sp_json_key(&w, "width");
        if (s->vendor)
            sp_json_int(&w, s->width);
        else
            sp_json_null(&w);
        sp_json_key(&w, "height");
        if (s->vendor)
            sp_json_int(&w, s->height);
        else
            sp_json_null(&w);
        sp_json_key(&w, "quickhash");
        sp_json_string(&w, s->quickhash);
        sp_json_key(&w, "threads");
        if (s->threads > 0)
            sp_json_int(&w, s->threads);
        else
            sp_json_null(&w);
        sp_json_key(&w, "options");
        sp_json_string(&w, s->options);
        sp_json_end_object(&w);
    }
    sp_json_end_array(&w);
    sp_json_end_object(&w);
    sp_buf_puts(&j, "\n");
    bool ok = false;
    if (t.oom || j.oom)
        sp_error_set(err, SP_ERR_NOMEM, NULL, "out of memory");
    else
        ok = sp_write_file_atomic(b->summary_tsv, t.data, t.len, err) &&
             sp_write_file_atomic(b->summary_json, j.data, j.len, err);
    sp_buf_free(&t);
    sp_buf_free(&j);
    b->last_summary = sp_now();
    return ok;
}

void sp__batch_maybe_summary(sp_batch *b) {
    /* every change for small batches; at most once a second for large */
    if (b->n <= 500 || sp_now() - b->last_summary >= 1.0)
        sp__batch_write_summaries(b, NULL);
}

void sp__batch_write_cohort(sp_batch *b) {
    size_t n = 0;
    char **paths = calloc(b->n ? b->n : 1, sizeof *paths);
    b->cohort_path = sp_path_join(b->outdir, "cohort.h5");
    if (!paths || !b->cohort_path) {
        sp__set_str(&b->cohort_error, "out of memory");
        free(paths);
        return;
    }
    bool oom = false;
    for (size_t i = 0; i < b->n; i++) {
        sp__bslide *s = b->v[i];
        if (s->pub.status != SP_BATCH_DONE &&
            s->pub.status != SP_BATCH_ALREADY_DONE)
            continue;
        char *dir = sp_path_join(b->outdir, s->id);
        paths[n] = dir ? sp_path_join(dir, "slide.h5") : NULL;
        free(dir);
        if (!paths[n])
            oom = true;
        else
            n++;
    }
    if (oom) {
        sp__set_str(&b->cohort_error, "out of memory");
    } else if (n > 0) {
        sp_error e = {0};
        if (sp_store_index(b->cohort_path, (const char *const *)paths, n, &e))
            b->cohort_written = true;
        else
            sp__set_str(&b->cohort_error, e.msg);
    }
    for (size_t i = 0; i < n; i++)
        free(paths[i]);
    free(paths);
    if (b->cohort_written || b->cohort_error)
        sp__batch_emit(b, SP_BATCH_EV_COHORT, NULL, b->cohort_error);
}
