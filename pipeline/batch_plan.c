/* batch: the plan. Every candidate is probed; not-a-slide files found in
 * folders are set aside; slides get ids (manifest ids first, then file
 * names with -2, -3... on collisions), the fingerprint of their
 * parameters, a thread share by size, and the resume decision. */
#include "batch_private.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "ingest.h"

#define MP_PER_THREAD 64.0 /* level-0 megapixels per thread a slide asks */

/* The parameters' fingerprint: FNV-1a, stable across builds and
 * machines, as 16 hex digits. */
static void fingerprint(const char *s, char out[17]) {
    uint64_t h = sp_fnv1a(SP_FNV_SEED, s, strlen(s));
    snprintf(out, 17, "%016llx", (unsigned long long)h);
}

/* Names that cannot be slide ids: they are the batch's own files. */
static bool reserved_id(const char *id) {
    return strcmp(id, "cohort.h5") == 0 ||
           strcmp(id, "batch-summary.tsv") == 0 ||
           strcmp(id, "batch-summary.json") == 0;
}

static bool id_taken(sp_batch *b, size_t upto, const char *id) {
    if (reserved_id(id))
        return true;
    for (size_t i = 0; i < upto; i++)
        if (b->v[i]->id && strcmp(b->v[i]->id, id) == 0)
            return true;
    return false;
}

/* Ids: manifest ids first (duplicates are a usage error), then derived
 * ones in input order with -2, -3... on collisions. */
static bool assign_ids(sp_batch *b, sp_error *err) {
    for (size_t i = 0; i < b->n; i++) {
        sp__bslide *s = b->v[i];
        if (!s->has_id)
            continue;
        for (size_t k = 0; k < i; k++)
            if (b->v[k]->has_id && strcmp(b->v[k]->id, s->id) == 0)
                return sp_error_set(err, SP_ERR_USAGE, s->path,
                                    "slide id '%s' is also given to %s", s->id,
                                    b->v[k]->path);
        if (reserved_id(s->id))
            return sp_error_set(err, SP_ERR_USAGE, s->path,
                                "slide id '%s' is reserved", s->id);
    }
    for (size_t i = 0; i < b->n; i++) {
        sp__bslide *s = b->v[i];
        if (s->has_id || s->pub.status == SP_BATCH_NOT_SLIDE)
            continue;
        char *id = sp_slide_id(s->path);
        if (!id)
            return sp_error_set(err, SP_ERR_NOMEM, NULL, "out of memory");
        /* check against every manifest id and earlier derived ones */
        size_t len = strlen(id);
        for (int k = 2;; k++) {
            bool clash = id_taken(b, i, id);
            for (size_t m = i + 1; m < b->n && !clash; m++)
                clash = b->v[m]->has_id && strcmp(b->v[m]->id, id) == 0;
            if (!clash)
                break;
            snprintf(id + len, 16, "-%d", k);
        }
        s->id = id;
        sp__bslide_sync(s);
    }
    return true;
}

/* Threads by size (at most 1 << 20), before any budget's cap. */
static int want_threads(const sp__bslide *s) {
    double k = ceil(s->pub.megapixels / MP_PER_THREAD);
    if (!(k >= 1))
        k = 1;
    return k > (1 << 20) ? 1 << 20 : (int)k;
}

/* Parameters: the canonical merge of the common and per-slide options. */
static bool plan_params(sp_batch *b, sp__bslide *s, sp_error *err) {
    char *cv[SP__BATCH_NKEYS], *sv[SP__BATCH_NKEYS];
    if (!sp__batch_option_values(b->common, cv, err))
        return false;
    if (!sp__batch_option_values(s->options, sv, err)) {
        sp__batch_values_free(cv);
        return false;
    }
    for (int k = 0; k < SP__BATCH_NKEYS; k++)
        if (sv[k]) {
            free(cv[k]);
            cv[k] = sv[k];
            sv[k] = NULL;
        }
    char *text = sp__batch_values_text(cv);
    sp__batch_values_free(cv);
    sp__batch_values_free(sv);
    if (!text)
        return sp_error_set(err, SP_ERR_NOMEM, NULL, "out of memory");
    /* the merge is checked as a whole (container=tiff from the command
     * line, overlap=1 from the manifest) */
    if (!sp__batch_option_values(text, cv, err)) {
        free(text);
        return false;
    }
    sp__batch_values_free(cv);
    sp_buf p;
    sp_buf_init(&p);
    sp_buf_printf(&p, "%s%s%s", SP__BATCH_FINGERPRINT_TAG, text[0] ? " " : "",
                  text);
    free(text);
    if (p.oom) {
        sp_buf_free(&p);
        return sp_error_set(err, SP_ERR_NOMEM, NULL, "out of memory");
    }
    char fp[17];
    fingerprint(p.data, fp);
    free(s->params);
    s->params = p.data;
    sp__set_str(&s->fingerprint, fp);
    sp__bslide_sync(s);
    return s->fingerprint != NULL ||
           sp_error_set(err, SP_ERR_NOMEM, NULL, "out of memory");
}

/* probe children at once: OpenSlide's opens wait on the disk as much
 * as on a core */
#define MAX_PROBERS 32

/* Probe every candidate, give ids, fingerprints, resume decisions. */
bool sp__batch_plan(sp_batch *b, sp_error *err) {
    sp__probe *res = calloc(b->n ? b->n : 1, sizeof *res);
    if (!res)
        return sp_error_set(err, SP_ERR_NOMEM, NULL, "out of memory");
    int procs = b->o.threads > MAX_PROBERS ? MAX_PROBERS : b->o.threads;
    bool ok = sp__batch_probe_all(b, procs, res, err);
    for (size_t i = 0; ok && i < b->n; i++) {
        sp__bslide *s = b->v[i];
        sp__probe *pe = &res[i];
        if (b->o.cancel && *b->o.cancel)
            break;
        char small[SP_ERROR_MAX];
        if (pe->code == SP_OK && !s->pub.is_explicit && pe->below_rule) {
            sp__batch_size_rule_msg(s->path, pe->width, pe->height, small,
                                    sizeof small);
            /* an image too small to be a slide, found in a folder */
            s->pub.status = SP_BATCH_NOT_SLIDE;
            s->pub.width = pe->width;
            s->pub.height = pe->height;
            sp__set_str(&s->error, small);
        } else if (pe->code == SP_OK) {
            s->vendor = pe->vendor;
            pe->vendor = NULL;
            s->pub.width = pe->width;
            s->pub.height = pe->height;
            s->pub.megapixels = (double)pe->width * (double)pe->height / 1e6;
            char *qh = pe->quickhash;
            pe->quickhash = NULL;
            if (!qh) {
                /* no quickhash: the file's size and time stand for it */
                struct stat st;
                char tmp[96];
                if (stat(s->path, &st) == 0)
                    snprintf(tmp, sizeof tmp, "size:%lld:mtime:%lld.%09ld",
                             (long long)st.st_size,
                             (long long)st.st_mtim.tv_sec,
                             (long)st.st_mtim.tv_nsec);
                else
                    snprintf(tmp, sizeof tmp, "unknown");
                qh = strdup(tmp);
            }
            s->quickhash = qh;
            if (!s->vendor || !s->quickhash) {
                ok = sp_error_set(err, SP_ERR_NOMEM, NULL, "out of memory");
                break;
            }
            s->probed = true;
            s->pub.status = SP_BATCH_PENDING;
        } else if (!s->pub.is_explicit && pe->code == SP_ERR_NOT_SLIDE &&
                   sp_slide_ext_kind(s->path) != SP_EXT_SLIDE) {
            s->pub.status = SP_BATCH_NOT_SLIDE;
            sp__set_str(&s->error, pe->msg);
        } else {
            sp__bslide_fail(s, "open", pe->code, pe->msg);
        }
        sp__bslide_sync(s);
    }
    for (size_t i = 0; i < b->n; i++) {
        free(res[i].vendor);
        free(res[i].quickhash);
    }
    free(res);
    if (!ok || (b->o.cancel && *b->o.cancel))
        return ok;
    if (!assign_ids(b, err))
        return false;
    /* a shard keeps its share of what every shard found alike */
    if (b->o.shard_count > 0)
        sp__batch_keep_shard(b);
    sp__batch_read_previous(b);
    for (size_t i = 0; i < b->n; i++) {
        sp__bslide *s = b->v[i];
        s->wire = i;
        if (!s->probed)
            continue;
        if (!plan_params(b, s, err))
            return false;
        s->want = want_threads(s);
        s->pub.threads = s->want > b->o.threads ? b->o.threads : s->want;
        if (!b->o.force && sp__batch_already_done(b, s))
            s->pub.status = SP_BATCH_ALREADY_DONE;
        else
            b->mp_total += s->pub.megapixels;
    }
    if (b->o.merge)
        sp__batch_merge_missing(b);
    return true;
}
