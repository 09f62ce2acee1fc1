/* A slide's per-tile features, from its HDF5 file through store/'s reader:
 * the column names and summary at startup, the values on first use. Every
 * HDF5 call is made under the catalogue's h5_lock (one thread at a time). */
#include "viewer_private.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store.h"

#define MAX_FEATURE_VALUES (INT64_C(64) << 20)

bool sp__slide_features_meta(sp_catalog *c, sp_vslide *s, sp_error *err) {
    sp_store_reader *r = NULL;
    pthread_mutex_lock(&c->h5_lock);
    bool ok = sp_store_open(s->h5_path, &r, err);
    if (ok && sp_store_reader_kind(r) != SP_STORE_SLIDE)
        ok = sp_error_set(err, SP_ERR_INPUT, s->h5_path,
                          "a cohort file, not a slide file");
    if (ok) {
        const sp_store_meta *m = sp_store_reader_meta(r);
        s->columns = calloc(m->n_columns + 1, sizeof *s->columns);
        for (size_t i = 0; s->columns && i < m->n_columns; i++)
            if ((s->columns[i] = strdup(m->columns[i])))
                s->ncols++;
        for (size_t i = 0; i < sp_store_summary_count(r); i++) {
            const char *name;
            double v;
            if (sp_store_summary_at(r, i, &name, &v) &&
                strcmp(name, "tissue_area_mm2") == 0)
                s->tissue_area_mm2 = v;
        }
        if (!s->vendor && m->vendor)
            s->vendor = strdup(m->vendor);
        if (isnan(s->mpp_x) && m->mpp_x > 0)
            s->mpp_x = m->mpp_x;
        if (isnan(s->mpp_y) && m->mpp_y > 0)
            s->mpp_y = m->mpp_y;
        if (!s->width) {
            s->width = m->width;
            s->height = m->height;
        }
    }
    sp_store_close(r);
    pthread_mutex_unlock(&c->h5_lock);
    return ok;
}

static void features_free(sp_vfeatures *f) {
    if (!f)
        return;
    for (int i = 0; i < f->ncols; i++)
        free(f->columns[i]);
    free(f->columns);
    free(f->xy);
    free(f->vals);
    free(f->vmin);
    free(f->vmax);
    free(f);
}

static sp_vfeatures *read_features(sp_store_reader *r, char *why, size_t whyn) {
    sp_error e = {0};
    const sp_store_meta *m = sp_store_reader_meta(r);
    int64_t n = sp_store_row_count(r);
    int nc = (int)m->n_columns;
    if (n < 0 || (n > 0 && (int64_t)nc * n > MAX_FEATURE_VALUES) ||
        n > MAX_FEATURE_VALUES) {
        snprintf(why, whyn, "too many tiles to serve (%lld)", (long long)n);
        return NULL;
    }
    sp_vfeatures *f = calloc(1, sizeof *f);
    if (!f)
        goto oom;
    f->n = n;
    f->extent =
        (double)m->patch_size * (m->downsample >= 1 ? m->downsample : 1.0);
    f->columns = calloc((size_t)nc + 1, sizeof *f->columns);
    f->xy = malloc((size_t)(n ? n : 1) * 2 * sizeof *f->xy);
    f->vals =
        malloc((size_t)(n ? n : 1) * (size_t)(nc ? nc : 1) * sizeof *f->vals);
    f->vmin = malloc((size_t)(nc ? nc : 1) * sizeof *f->vmin);
    f->vmax = malloc((size_t)(nc ? nc : 1) * sizeof *f->vmax);
    if (!f->columns || !f->xy || !f->vals || !f->vmin || !f->vmax)
        goto oom;
    for (int i = 0; i < nc; i++) {
        if (!(f->columns[i] = strdup(m->columns[i])))
            goto oom;
        f->ncols++;
    }
    if (n > 0 && !sp_store_read_coords(r, 0, (size_t)n, f->xy, &e))
        goto fail;
    for (int i = 0; i < nc; i++) {
        float *col = f->vals + (size_t)i * (size_t)n;
        if (n > 0 && !sp_store_read_column(r, i, 0, (size_t)n, col, &e))
            goto fail;
        float lo = NAN, hi = NAN;
        for (int64_t k = 0; k < n; k++)
            if (isfinite(col[k])) {
                if (!(col[k] >= lo))
                    lo = col[k];
                if (!(col[k] <= hi))
                    hi = col[k];
            }
        f->vmin[i] = lo;
        f->vmax[i] = hi;
    }
    return f;
oom:
    snprintf(why, whyn, "out of memory");
    goto out;
fail:
    snprintf(why, whyn, "%.200s", e.msg);
out:
    features_free(f);
    return NULL;
}

const sp_vfeatures *sp__slide_features(sp_catalog *c, sp_vslide *s) {
    if (!s->h5_path)
        return NULL;
    pthread_mutex_lock(&c->h5_lock);
    if (!s->feat_tried) {
        s->feat_tried = true;
        sp_store_reader *r = NULL;
        sp_error e = {0};
        if (sp_store_open(s->h5_path, &r, &e))
            s->feat = read_features(r, s->feat_error, sizeof s->feat_error);
        else
            snprintf(s->feat_error, sizeof s->feat_error, "%.200s", e.msg);
        sp_store_close(r);
    }
    sp_vfeatures *f = s->feat;
    pthread_mutex_unlock(&c->h5_lock);
    return f;
}

void sp__slide_features_free(sp_vslide *s) {
    for (int i = 0; i < s->ncols; i++)
        free(s->columns[i]);
    free(s->columns);
    s->columns = NULL;
    s->ncols = 0;
    features_free(s->feat);
    s->feat = NULL;
}
