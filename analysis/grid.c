/* The per-slide driver: tissue mask, analysis grid, features of the chosen
 * tiles on an OpenMP team (one reader and one scratch set per thread,
 * results stored by tile index so any thread count gives the same bytes),
 * then the slide summary. */
#include "analysis.h"
#include "analysis_private.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

/* Most pixels handed to Macenko (tissue tiles are thinned evenly above). */
#define STAIN_MAX_PIXELS (1u << 20)

void sp_analysis_opts_default(sp_analysis_opts *p) {
    memset(p, 0, sizeof *p);
    sp_mask_opts_default(&p->mask);
    sp_feature_opts_default(&p->features);
    sp_macenko_opts_default(&p->macenko);
    p->tile_size = 256;
    p->min_coverage = 0.0;
    p->blur_threshold = 50.0;
    p->pen_threshold = 0.10;
}

void sp_analysis_result_free(sp_analysis_result *r) {
    if (!r)
        return;
    sp_mask_free(&r->mask);
    free(r->coords);
    free(r->size);
    free(r->coverage);
    free(r->features);
    if (r->work) {
        free(r->work->is_tissue);
        free(r->work->samples);
        free(r->work);
    }
    memset(r, 0, sizeof *r);
}

/* Share of mask pixels set among those whose centres fall in the level-0
 * box [x0, x1) x [y0, y1); the pixel under the box centre when none do. */
static double mask_coverage(const sp_mask *m, int64_t x0, int64_t x1,
                            int64_t y0, int64_t y1) {
    const double d = m->downsample;
    int64_t ax = (int64_t)ceil(x0 / d - 0.5), bx = (int64_t)ceil(x1 / d - 0.5);
    int64_t ay = (int64_t)ceil(y0 / d - 0.5), by = (int64_t)ceil(y1 / d - 0.5);
    if (ax < 0)
        ax = 0;
    if (ay < 0)
        ay = 0;
    if (bx > m->width)
        bx = m->width;
    if (by > m->height)
        by = m->height;
    if (ax >= bx || ay >= by) {
        int64_t cx = (int64_t)((x0 + x1) / 2.0 / d),
                cy = (int64_t)((y0 + y1) / 2.0 / d);
        cx = cx < 0 ? 0 : cx >= m->width ? m->width - 1 : cx;
        cy = cy < 0 ? 0 : cy >= m->height ? m->height - 1 : cy;
        return m->data[cy * m->width + cx] ? 1.0 : 0.0;
    }
    int64_t set = 0;
    for (int64_t y = ay; y < by; y++)
        for (int64_t x = ax; x < bx; x++)
            set += m->data[y * m->width + x] != 0;
    return (double)set / (double)((bx - ax) * (by - ay));
}

/* Area-average `src` (sw x sh) down by `r` >= 1 into `dst` (w x h). */
static void shrink(const uint8_t *src, int sw, int sh, double r, uint8_t *dst,
                   int w, int h) {
    for (int oy = 0; oy < h; oy++) {
        int ya = (int)floor(oy * r), yb = (int)floor((oy + 1) * r);
        if (yb <= ya)
            yb = ya + 1;
        if (yb > sh)
            yb = sh;
        if (ya >= yb)
            ya = yb - 1;
        for (int ox = 0; ox < w; ox++) {
            int xa = (int)floor(ox * r), xb = (int)floor((ox + 1) * r);
            if (xb <= xa)
                xb = xa + 1;
            if (xb > sw)
                xb = sw;
            if (xa >= xb)
                xa = xb - 1;
            uint32_t s[3] = {0, 0, 0}, n = 0;
            for (int y = ya; y < yb; y++)
                for (int x = xa; x < xb; x++) {
                    const uint8_t *p = src + 3 * ((size_t)y * sw + x);
                    s[0] += p[0];
                    s[1] += p[1];
                    s[2] += p[2];
                    n++;
                }
            for (int c = 0; c < 3; c++)
                dst[3 * ((size_t)oy * w + ox) + c] =
                    (uint8_t)((s[c] + n / 2) / n);
        }
    }
}

static bool check_params(const sp_analysis_opts *p, const char *path,
                         sp_error *err) {
    if (p->tile_size < 8 || p->tile_size > SP__TILE_SIZE_MAX)
        return sp_error_set(err, SP_ERR_USAGE, path,
                            "analysis: tile size %d is outside 8..%d",
                            p->tile_size, SP__TILE_SIZE_MAX);
    if (p->mpp < 0 || !isfinite(p->mpp) || p->magnification < 0 ||
        !isfinite(p->magnification))
        return sp_error_set(
            err, SP_ERR_USAGE, path,
            "analysis: bad resolution (mpp %g, magnification %g)", p->mpp,
            p->magnification);
    if (p->mpp > 0 && p->magnification > 0)
        return sp_error_set(
            err, SP_ERR_USAGE, path,
            "analysis: give an mpp or a magnification, not both");
    if (!(p->min_coverage >= 0 && p->min_coverage < 1) ||
        !isfinite(p->blur_threshold) ||
        !(p->pen_threshold >= 0 && p->pen_threshold <= 1) || p->threads < 0)
        return sp_error_set(err, SP_ERR_USAGE, path,
                            "analysis: bad parameters (min coverage %g, blur "
                            "threshold %g, pen threshold %g, threads %d)",
                            p->min_coverage, p->blur_threshold,
                            p->pen_threshold, p->threads);
    if (!isfinite(p->features.cellularity_od) || !(p->macenko.beta >= 0) ||
        !(p->macenko.alpha >= 0 && p->macenko.alpha < 50))
        return sp_error_set(err, SP_ERR_USAGE, path,
                            "analysis: bad feature or stain parameters "
                            "(cellularity OD %g, beta %g, alpha %g)",
                            p->features.cellularity_od, p->macenko.beta,
                            p->macenko.alpha);
    return true;
}

/* Level-0 px per analysis px. */
static bool analysis_downsample(sp_slide *s, const sp_analysis_opts *p,
                                double *ds, sp_error *err) {
    const char *path = sp_slide_path(s);
    *ds = 1.0;
    if (p->mpp > 0) {
        double mx, my;
        if (!sp_slide_mpp(s, &mx, &my) || !(mx > 0))
            return sp_error_set(err, SP_ERR_USAGE, path,
                                "analysis at %g um/px asked, but the slide "
                                "records no mpp",
                                p->mpp);
        *ds = p->mpp / mx;
    } else if (p->magnification > 0) {
        double pw;
        if (!sp_slide_objective_power(s, &pw) || !(pw > 0))
            return sp_error_set(err, SP_ERR_USAGE, path,
                                "analysis at %gx asked, but the slide records "
                                "no objective power",
                                p->magnification);
        *ds = pw / p->magnification;
    }
    if (*ds < 1.0 - 1e-6)
        return sp_error_set(err, SP_ERR_USAGE, path,
                            "analysis resolution is finer than level 0 "
                            "(downsample %g)",
                            *ds);
    if (*ds < 1.0)
        *ds = 1.0;
    return true;
}

bool sp_analysis_prepare(sp_slide *s, const sp_analysis_opts *p,
                         sp_analysis_result *out, sp_error *err) {
    sp_analysis_opts def;
    if (!p) {
        sp_analysis_opts_default(&def);
        p = &def;
    }
    memset(out, 0, sizeof *out);
    const char *path = sp_slide_path(s);
    if (!check_params(p, path, err))
        return false;
    const int threads = p->threads > 0 ? p->threads : sp_default_threads();
    double D;
    if (!analysis_downsample(s, p, &D, err))
        return false;

    bool ok = false;
    int64_t *tile_xy = NULL; /* grid tiles chosen: col, row */
    sp_analysis_result r;
    memset(&r, 0, sizeof r);

    r.work = calloc(1, sizeof *r.work);
    if (!r.work) {
        sp_error_set(err, SP_ERR_NOMEM, path, "analysis: out of memory");
        goto out;
    }
    sp_analysis_work *wk = r.work;
    if (!sp_mask_compute(s, &p->mask, threads, &r.mask, err))
        goto out;
    if (p->progress)
        p->progress(p->progress_user, "mask", 1, 1);

    const sp_level *l0 = sp_slide_level(s, 0);
    r.tile_size = p->tile_size;
    r.downsample = D;
    r.read_level = sp_slide_best_level(s, D);
    const sp_level *lr = sp_slide_level(s, r.read_level);
    r.read_ratio = D / lr->downsample; /* level px per analysis px */
    if (fabs(r.read_ratio - 1.0) < 1e-6)
        r.read_ratio = 1.0;
    r.width = (int64_t)floor(l0->width / D + 1e-9);
    r.height = (int64_t)floor(l0->height / D + 1e-9);
    if (r.width < 1)
        r.width = 1;
    if (r.height < 1)
        r.height = 1;
    const int T = p->tile_size;
    int64_t cols = (r.width + T - 1) / T, rows = (r.height + T - 1) / T;
    if (cols * rows > INT32_MAX) {
        sp_error_set(err, SP_ERR_USAGE, path, "analysis: too many tiles");
        goto out;
    }
    r.cols = (int)cols;
    r.rows = (int)rows;
    const size_t total = (size_t)cols * (size_t)rows;

    /* choose the tiles, in row-major order */
    tile_xy = malloc(total * 2 * sizeof *tile_xy);
    r.coverage = malloc(total * sizeof *r.coverage);
    wk->is_tissue = malloc(total);
    if (!tile_xy || !r.coverage || !wk->is_tissue) {
        sp_error_set(err, SP_ERR_NOMEM, path, "analysis: out of memory");
        goto out;
    }
    size_t n = 0, n_tissue = 0;
    for (int64_t j = 0; j < rows; j++)
        for (int64_t i = 0; i < cols; i++) {
            int64_t ax1 = (i + 1) * T < r.width ? (i + 1) * T : r.width;
            int64_t ay1 = (j + 1) * T < r.height ? (j + 1) * T : r.height;
            double cov =
                mask_coverage(&r.mask, llround(i * T * D), llround(ax1 * D),
                              llround(j * T * D), llround(ay1 * D));
            bool tissue = cov > p->min_coverage;
            n_tissue += tissue;
            if (!tissue && !p->all_tiles)
                continue;
            tile_xy[2 * n] = i;
            tile_xy[2 * n + 1] = j;
            r.coverage[n] = (float)cov;
            wk->is_tissue[n] = tissue;
            n++;
        }
    r.n = n;
    r.summary.tiles_total = total;
    r.summary.tiles_tissue = n_tissue;
    r.coords = malloc((n ? n : 1) * 2 * sizeof *r.coords);
    r.size = malloc((n ? n : 1) * 2 * sizeof *r.size);
    r.features = malloc((n ? n : 1) * SP_N_FEATURES * sizeof *r.features);
    wk->samples = malloc((n ? n : 1) * 3 * SP_STAIN_SAMPLE_N);
    if (!r.coords || !r.size || !r.features || !wk->samples) {
        sp_error_set(err, SP_ERR_NOMEM, path, "analysis: out of memory");
        goto out;
    }
    for (size_t k = 0; k < n; k++) {
        int64_t i = tile_xy[2 * k], j = tile_xy[2 * k + 1];
        r.coords[2 * k] = llround(i * T * D);
        r.coords[2 * k + 1] = llround(j * T * D);
        r.size[2 * k] = (int32_t)((i + 1) * T < r.width ? T : r.width - i * T);
        r.size[2 * k + 1] =
            (int32_t)((j + 1) * T < r.height ? T : r.height - j * T);
    }
    wk->feature_opts = p->features;
    wk->feature_opts.tissue_threshold = r.mask.threshold;
    ok = true;
out:
    free(tile_xy);
    if (ok)
        *out = r;
    else
        sp_analysis_result_free(&r);
    return ok;
}

/* magic of a begun stream whose features are not yet begun, and of one
 * that takes rows; anything else: not begun, or complete */
#define STREAM_BEGUN 0x53504131u
#define STREAM_OPEN 0x53504132u

/* The state of sp_analysis_stream_*: the tile, its stain samples so far,
 * and a streaming feature state keeping 2 luma rows (analysis_private.h). */
typedef struct {
    uint32_t magic;
    size_t k;
    uint8_t samples[3 * SP_STAIN_SAMPLE_N];
    _Alignas(max_align_t)
        uint8_t features[SP__FEATURES_STREAM_BYTES(SP__TILE_SIZE_MAX, 2)];
} stream_state;

size_t sp_analysis_stream_size(void) { return sizeof(stream_state); }

void sp_analysis_stream_begin(const sp_analysis_result *r, size_t k,
                              void *state) {
    (void)r; /* checked by the first sp_analysis_stream_rows */
    stream_state *st = state;
    st->magic = STREAM_BEGUN;
    st->k = k;
}

bool sp_analysis_stream_rows(sp_analysis_result *r, void *state,
                             const uint8_t *rgb, size_t stride, int rows,
                             sp_error *err) {
    stream_state *st = state;
    if (!r || !r->work || !st ||
        (st->magic != STREAM_BEGUN && st->magic != STREAM_OPEN))
        return sp_error_set(err, SP_ERR_USAGE, NULL,
                            "analysis: stream not begun, or its tile "
                            "already complete");
    const size_t k = st->k;
    if (k >= r->n)
        return sp_error_set(err, SP_ERR_USAGE, NULL,
                            "analysis: tile %zu out of range", k);
    const int w = r->size[2 * k], h = r->size[2 * k + 1];
    if (st->magic == STREAM_BEGUN) {
        if (!sp__features_begin(st->features, w, h, &r->work->feature_opts, 2,
                                SP__FEATURES_AUTO, err))
            return false;
        st->magic = STREAM_OPEN;
    }
    const int y0 = sp__features_rows_done(st->features);
    if (rows < 0 || rows > h - y0)
        return sp_error_set(err, SP_ERR_USAGE, NULL,
                            "analysis: tile %zu: %d rows given, %d of %d left",
                            k, rows, h - y0, h);
    if (!sp_features_rows(st->features, rgb, stride, rows, err))
        return false;
    const bool tissue = r->work->is_tissue[k];
    if (tissue)
        sp__stain_sample_rows(rgb, w, h, stride, y0, rows, st->samples);
    if (y0 + rows == h) { /* complete: cannot fail */
        sp_features_end(st->features, r->features + k * SP_N_FEATURES, NULL);
        if (tissue)
            memcpy(r->work->samples + k * 3 * SP_STAIN_SAMPLE_N, st->samples,
                   sizeof st->samples);
        st->magic = 0;
    }
    return true;
}

bool sp_analysis_tile(sp_analysis_result *r, size_t k, const uint8_t *rgb,
                      size_t stride, sp_error *err) {
    if (k >= r->n)
        return sp_error_set(err, SP_ERR_USAGE, NULL,
                            "analysis: tile %zu out of range", k);
    stream_state st;
    sp_analysis_stream_begin(r, k, &st);
    return sp_analysis_stream_rows(r, &st, rgb, stride, r->size[2 * k + 1],
                                   err);
}

bool sp_analysis_finish(sp_slide *s, const sp_analysis_opts *p,
                        sp_analysis_result *r, sp_error *err) {
    sp_analysis_opts def;
    if (!p) {
        sp_analysis_opts_default(&def);
        p = &def;
    }
    const char *path = sp_slide_path(s);
    if (!r->work)
        return sp_error_set(err, SP_ERR_USAGE, path,
                            "analysis: finish without prepare");
    const sp_analysis_work *wk = r->work;
    const sp_level *l0 = sp_slide_level(s, 0);
    const size_t n = r->n;
    uint8_t *stain_px = NULL;
    bool ok = false;

    /* ---- summary (serial, in tile order) ---- */
    sp_slide_summary *sm = &r->summary;
    sm->mpp_known = sp_slide_mpp(s, &sm->mpp_x, &sm->mpp_y) && sm->mpp_x > 0 &&
                    sm->mpp_y > 0;
    if (!sm->mpp_known)
        sm->mpp_x = sm->mpp_y = 0;
    {
        const sp_mask *m = &r->mask;
        double area = 0;
        for (int y = 0; y < m->height; y++) {
            double ya = y * m->downsample, yb = (y + 1) * m->downsample;
            if (yb > l0->height)
                yb = (double)l0->height;
            for (int x = 0; x < m->width; x++) {
                if (!m->data[(size_t)y * m->width + x])
                    continue;
                double xa = x * m->downsample, xb = (x + 1) * m->downsample;
                if (xb > l0->width)
                    xb = (double)l0->width;
                if (xb > xa && yb > ya)
                    area += (xb - xa) * (yb - ya);
            }
        }
        sm->tissue_area_px = area;
        sm->tissue_area_mm2 =
            sm->mpp_known ? area * sm->mpp_x * sm->mpp_y / 1e6 : NAN;
    }
    sm->tiles_analysed = n;
    size_t blurry = 0, pen = 0, analysed_tissue = 0;
    for (size_t k = 0; k < n; k++) {
        if (!wk->is_tissue[k])
            continue;
        const float *f = r->features + k * SP_N_FEATURES;
        analysed_tissue++;
        blurry += f[SP_F_BLUR] < p->blur_threshold;
        pen += f[SP_F_PEN_FRACTION] > p->pen_threshold;
    }
    sm->blurry_fraction =
        analysed_tissue ? (double)blurry / analysed_tissue : NAN;
    sm->pen_fraction = analysed_tissue ? (double)pen / analysed_tissue : NAN;

    /* Macenko on the lattice samples of the tissue tiles */
    {
        size_t step = 1;
        while (analysed_tissue / step * SP_STAIN_SAMPLE_N > STAIN_MAX_PIXELS)
            step++;
        size_t cap = (analysed_tissue / step + 1) * SP_STAIN_SAMPLE_N;
        stain_px = malloc(cap * 3);
        if (!stain_px) {
            sp_error_set(err, SP_ERR_NOMEM, path, "analysis: out of memory");
            goto out;
        }
        size_t m = 0, seen = 0;
        for (size_t k = 0; k < n; k++) {
            if (!wk->is_tissue[k])
                continue;
            if (seen++ % step)
                continue;
            memcpy(stain_px + m * 3, wk->samples + k * 3 * SP_STAIN_SAMPLE_N,
                   3 * SP_STAIN_SAMPLE_N);
            m += SP_STAIN_SAMPLE_N;
        }
        sp_error se = {0};
        sm->stain_ok = sp_stain_macenko(stain_px, m, &p->macenko, sm->stain_he,
                                        &sm->stain_pixels, &se);
        if (!sm->stain_ok) {
            if (se.code != SP_ERR_INPUT) { /* bad parameters, memory */
                if (err && !sp_error_is_set(err))
                    *err = se;
                goto out;
            }
            for (int a = 0; a < 2; a++)
                for (int c = 0; c < 3; c++)
                    sm->stain_he[a][c] = NAN;
        }
    }
    ok = true;
out:
    free(stain_px);
    return ok;
}

bool sp_analysis_read_tiles(sp_slide *s, const sp_analysis_opts *p,
                            sp_analysis_result *rr, sp_error *err) {
    sp_analysis_opts def;
    if (!p) {
        sp_analysis_opts_default(&def);
        p = &def;
    }
    const char *path = sp_slide_path(s);
    const int threads = p->threads > 0 ? p->threads : sp_default_threads();
    sp_analysis_result r = *rr; /* a local copy: OpenMP shares it read-only */
    const size_t n = r.n;
    const int T = r.tile_size;
    const double ratio = r.read_ratio;
    const int src_side = ratio == 1.0 ? T : (int)ceil(T * ratio) + 1;
    size_t done = 0;
    int failed = 0;
    sp_error first = {0};
#pragma omp parallel num_threads(threads)
    {
        sp_error e = {0};
        sp_reader *rd = sp_reader_create(s, 0, NULL, &e);
        uint8_t *tile = malloc((size_t)T * T * 3);
        uint8_t *src =
            ratio == 1.0 ? NULL : malloc((size_t)src_side * src_side * 3);
        if (!rd || !tile || (ratio != 1.0 && !src)) {
            if (!sp_error_is_set(&e))
                sp_error_set(&e, SP_ERR_NOMEM, path, "analysis: out of memory");
#pragma omp atomic write
            failed = 1;
        }
        const bool master = omp_get_thread_num() == 0;
#pragma omp for schedule(dynamic, 4)
        for (size_t k = 0; k < n; k++) {
            int stop;
#pragma omp atomic read
            stop = failed;
            if (stop)
                continue;
            if (sp_cancelled(p->cancel)) {
                sp_error_set(&e, SP_ERR_INTERNAL, path, "interrupted");
#pragma omp atomic write
                failed = 1;
                continue;
            }
            int w = r.size[2 * k], h = r.size[2 * k + 1];
            bool read_ok;
            if (ratio == 1.0) {
                read_ok = sp_reader_read(rd, r.read_level, r.coords[2 * k],
                                         r.coords[2 * k + 1], w, h, tile, &e);
            } else {
                int sw = (int)ceil(w * ratio), sh = (int)ceil(h * ratio);
                sw = sw < 1 ? 1 : sw > src_side ? src_side : sw;
                sh = sh < 1 ? 1 : sh > src_side ? src_side : sh;
                read_ok = sp_reader_read(rd, r.read_level, r.coords[2 * k],
                                         r.coords[2 * k + 1], sw, sh, src, &e);
                if (read_ok)
                    shrink(src, sw, sh, ratio, tile, w, h);
            }
            if (!read_ok || !sp_analysis_tile(&r, k, tile, (size_t)w * 3, &e)) {
#pragma omp atomic write
                failed = 1;
                continue;
            }
            size_t now;
#pragma omp atomic capture
            now = ++done;
            if (master && p->progress)
                p->progress(p->progress_user, "tiles", (int64_t)now,
                            (int64_t)n);
        }
        if (sp_error_is_set(&e)) {
#pragma omp critical(sp_grid_error)
            if (!sp_error_is_set(&first))
                first = e;
        }
        free(src);
        free(tile);
        sp_reader_free(rd);
    }
    if (failed) {
        if (err && !sp_error_is_set(err))
            *err = first;
        return false;
    }
    if (p->progress)
        p->progress(p->progress_user, "tiles", (int64_t)n, (int64_t)n);
    return true;
}

bool sp_analyze_slide(sp_slide *s, const sp_analysis_opts *p,
                      sp_analysis_result *out, sp_error *err) {
    const double t0 = sp_now();
    sp_analysis_result r;
    if (!sp_analysis_prepare(s, p, &r, err)) {
        memset(out, 0, sizeof *out);
        return false;
    }
    if (!sp_analysis_read_tiles(s, p, &r, err) ||
        !sp_analysis_finish(s, p, &r, err)) {
        sp_analysis_result_free(&r);
        memset(out, 0, sizeof *out);
        return false;
    }
    r.seconds = sp_now() - t0;
    *out = r;
    return true;
}
