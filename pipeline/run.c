/* The fused pass: one decode of each level-0 band feeds the tile pyramid,
 * the per-tile features and the slide thumbnail; results go to the HDF5
 * store from this thread only. */
#include "pipeline_private.h"

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define THUMB_MAX 1024 /* longest side of the stored thumbnail */
#define THUMB_READ_MAX (64.0 * 1024 * 1024) /* see sp__thumb_from_level */
#define TISSUE_MIN_SHARE 0.001 /* --skip-background: see tile_has_tissue */
#define TISSUE_MIN_PIXELS 16

void sp_run_opts_default(sp_run_opts *o) {
    memset(o, 0, sizeof *o);
    o->what = SP_RUN_TILES | SP_RUN_FEATURES;
    sp_tile_opts_default(&o->tile);
    sp_analysis_opts_default(&o->analysis);
    o->mask_for_background = true;
}

/* ---- the band callback ------------------------------------------------ */

/* The part of a native tile that analysis needs, tile-relative; empty
 * (x0 >= x1) when none. */
typedef struct {
    int32_t x0, y0, x1, y1;
} need_box;

/* Rows [a, b) of analysis tile k. */
typedef struct {
    size_t k;
    int64_t a, b;
} seg;

typedef struct {
    const sp_run_opts *o;
    sp_slide *slide;
    int threads;
    int64_t W, H;
    sp_pyramid *pyr;         /* or NULL */
    bool half;               /* bands of level 0 at half size (the
                                pyramid's half_input) */
    sp_analysis_result *ar;  /* features in the band loop, or NULL */
    size_t *row_first;       /* ar->rows + 1: first tile of each row */
    uint8_t *streams;        /* a feature stream per tile of a row */
    need_box *need;          /* per native tile: the part to decode
                                (empty: none), or NULL: all */
    int64_t ntw, nth, ncols; /* native tile size, tiles per row */
    sp_col_span *spans;      /* the columns each stripe reads */
    sp_col_span *cores;      /* the columns each stripe owns */
    int nstripes, stripe;    /* stripe of the last band */
    int64_t arow;            /* next analysis row to compute */
    /* The analysis work on one band: per slot (a column of analysis tiles
     * of the stripe's core, with its own stream) the tile rows the band
     * holds, top to bottom, so one thread runs a slot's pieces in order. */
    int64_t nslots;  /* slots: streams */
    int maxr;        /* most analysis rows one band meets */
    seg *segs;       /* nslots * maxr: slot i's pieces from i*maxr */
    int *nseg;       /* pieces per slot */
    int64_t *active; /* slots with pieces, nactive of them */
    int64_t nactive;
    const uint8_t *band;      /* the band planned: pixels, first column and */
    int64_t band_x0, band_y0; /* the band: its first column and row */
    size_t band_stride;
    sp__thumb th;
    int64_t rows_done;
} band_ctx;

/* The tiles of analysis row `r` whose left edge lies in [c0, c1). */
static void row_tiles(const band_ctx *c, int64_t r, int64_t c0, int64_t c1,
                      size_t *k0, size_t *k1) {
    const sp_analysis_result *ar = c->ar;
    size_t a = c->row_first[r], b = c->row_first[r + 1];
    while (a < b && ar->coords[2 * a] < c0)
        a++;
    size_t e = a;
    while (e < b && ar->coords[2 * e] < c1)
        e++;
    *k0 = a;
    *k1 = e;
}

/* The analysis work on a band (the level-0 rows [y0, y0 + rows) of the
 * current stripe, from column bx0, `stride` bytes apart): the rows of each
 * analysis tile starting in the stripe's core, grouped by slot. Returns
 * the number of active slots (band_item runs them). */
static int64_t plan_features(band_ctx *c, const uint8_t *rgb, int64_t bx0,
                             size_t stride, int64_t y0, int64_t rows) {
    const sp_analysis_result *ar = c->ar;
    const sp_col_span *core = &c->cores[c->stripe];
    const int64_t T = ar->tile_size;
    c->band = rgb;
    c->band_x0 = bx0;
    c->band_stride = stride;
    c->band_y0 = y0;
    memset(c->nseg, 0, (size_t)c->nslots * sizeof *c->nseg);
    c->nactive = 0;
    int64_t pos = y0, end = y0 + rows;
    while (pos < end && c->arow < ar->rows) {
        int64_t rs = c->arow * T, re = rs + T < c->H ? rs + T : c->H;
        int64_t a = pos > rs ? pos : rs, b = end < re ? end : re;
        size_t k0, k1;
        row_tiles(c, c->arow, core->x0, core->x1, &k0, &k1);
        for (size_t k = k0; k < k1; k++) {
            int64_t i = (ar->coords[2 * k] - core->x0) / T;
            if (c->nseg[i] == 0)
                c->active[c->nactive++] = i;
            c->segs[i * c->maxr + c->nseg[i]++] = (seg){k, a, b};
        }
        pos = b;
        if (b == re)
            c->arow++;
    }
    return c->nactive;
}

/* Active slot i of the band planned last: its pieces, in order. */
static bool band_item(void *user, int64_t i, sp_error *err) {
    band_ctx *c = user;
    sp_analysis_result *ar = c->ar;
    const int64_t slot = c->active[i];
    void *st = c->streams + slot * sp_analysis_stream_size();
    for (int j = 0; j < c->nseg[slot]; j++) {
        const seg *g = &c->segs[slot * c->maxr + j];
        if (g->a == ar->coords[2 * g->k + 1])
            sp_analysis_stream_begin(ar, g->k, st);
        const uint8_t *p = c->band + (g->a - c->band_y0) * c->band_stride +
                           (ar->coords[2 * g->k] - c->band_x0) * 3;
        if (!sp_analysis_stream_rows(ar, st, p, c->band_stride,
                                     (int)(g->b - g->a), err))
            return false;
    }
    return true;
}

/* The analysis work on a band, run here on `threads` threads. */
static bool features_now(band_ctx *c, const uint8_t *rgb, int64_t bx0,
                         size_t stride, int64_t y0, int64_t rows,
                         sp_error *err) {
    const int64_t n = plan_features(c, rgb, bx0, stride, y0, rows);
    int failed = 0;
    sp_error first = {0};
#pragma omp parallel for num_threads(c->threads) schedule(dynamic, 1)
    for (int64_t i = 0; i < n; i++) {
        sp_error e = {0};
        if (!band_item(c, i, &e)) {
#pragma omp critical(sp_run_err)
            if (!failed) {
                failed = 1;
                first = e;
            }
        }
    }
    if (failed) {
        if (err && !sp_error_is_set(err))
            *err = first;
        return false;
    }
    return true;
}

/* Analysis alone: mark the native tiles under the chosen analysis tiles;
 * the band loop decodes only those. */
static bool needed_tiles(sp_slide *s, const sp_analysis_result *ar,
                         band_ctx *c) {
    const sp_level *l0 = sp_slide_level(s, 0);
    c->ntw = l0->tile_width > 0 ? l0->tile_width : 256;
    c->nth = l0->tile_height > 0 ? l0->tile_height : 256;
    c->ncols = (l0->width + c->ntw - 1) / c->ntw;
    int64_t nrows = (l0->height + c->nth - 1) / c->nth;
    c->need = malloc((size_t)(c->ncols * nrows) * sizeof *c->need);
    if (!c->need)
        return false;
    for (int64_t i = 0; i < c->ncols * nrows; i++)
        c->need[i] = (need_box){INT32_MAX, INT32_MAX, 0, 0};
    for (size_t k = 0; k < ar->n; k++) {
        int64_t x0 = ar->coords[2 * k], y0 = ar->coords[2 * k + 1];
        int64_t x1 = x0 + ar->size[2 * k], y1 = y0 + ar->size[2 * k + 1];
        for (int64_t ty = y0 / c->nth; ty * c->nth < y1 && ty < nrows; ty++)
            for (int64_t tx = x0 / c->ntw; tx * c->ntw < x1 && tx < c->ncols;
                 tx++) {
                need_box *b = &c->need[ty * c->ncols + tx];
                int64_t bx = tx * c->ntw, by = ty * c->nth;
                int32_t a0 = (int32_t)(x0 > bx ? x0 - bx : 0);
                int32_t a1 = (int32_t)(x1 - bx < c->ntw ? x1 - bx : c->ntw);
                int32_t b0 = (int32_t)(y0 > by ? y0 - by : 0);
                int32_t b1 = (int32_t)(y1 - by < c->nth ? y1 - by : c->nth);
                b->x0 = a0 < b->x0 ? a0 : b->x0;
                b->x1 = a1 > b->x1 ? a1 : b->x1;
                b->y0 = b0 < b->y0 ? b0 : b->y0;
                b->y1 = b1 > b->y1 ? b1 : b->y1;
            }
    }
    return true;
}

/* The band loop asks per native tile (or its part in the stripe): narrow
 * the box to what the chosen analysis tiles cover. */
static bool want_native(void *user, int64_t *x, int64_t *y, int64_t *w,
                        int64_t *h) {
    const band_ctx *c = user;
    int64_t tx = *x / c->ntw, ty = *y / c->nth;
    const need_box *b = &c->need[ty * c->ncols + tx];
    int64_t bx = tx * c->ntw, by = ty * c->nth;
    int64_t x0 = bx + b->x0 > *x ? bx + b->x0 : *x;
    int64_t x1 = bx + b->x1 < *x + *w ? bx + b->x1 : *x + *w;
    int64_t y0 = by + b->y0 > *y ? by + b->y0 : *y;
    int64_t y1 = by + b->y1 < *y + *h ? by + b->y1 : *y + *h;
    if (x0 >= x1 || y0 >= y1)
        return false;
    *x = x0;
    *y = y0;
    *w = x1 - x0;
    *h = y1 - y0;
    return true;
}

/* A band done: progress, and the chance to stop. */
static bool band_progress(band_ctx *c, int64_t rows, sp_error *err) {
    const sp_run_opts *o = c->o;
    if (sp_cancelled(o->cancel))
        return sp_error_set(err, SP_ERR_INTERNAL, sp_slide_path(c->slide),
                            "interrupted");
    c->rows_done += rows;
    const int64_t H = c->half ? (c->H + 1) / 2 : c->H; /* rows a stripe */
    if (o->progress)
        o->progress(o->progress_user, "pixels", c->rows_done, H * c->nstripes);
    return true;
}

static void set_stripe(band_ctx *c, int stripe) {
    if (stripe != c->stripe) {
        c->stripe = stripe;
        c->arow = 0;
    }
}

/* Analysis alone: the band loop runs each band's work (band_item) beside
 * the next band's reads. */
static int64_t plan_band(void *user, int stripe, const uint8_t *rgb,
                         size_t stride, int64_t y0, int64_t rows,
                         sp_error *err) {
    band_ctx *c = user;
    (void)err;
    set_stripe(c, stripe);
    return plan_features(c, rgb, c->spans[stripe].x0, stride, y0, rows);
}

static bool band_done(void *user, int stripe, const uint8_t *rgb, size_t stride,
                      int64_t y0, int64_t rows, sp_error *err) {
    (void)stripe;
    (void)rgb;
    (void)stride;
    (void)y0;
    return band_progress(user, rows, err);
}

/* With a pyramid: the band's pixels feed the pyramid, then the features
 * and the thumbnail. */
static bool on_band(void *user, int stripe, const uint8_t *rgb, size_t stride,
                    int64_t y0, int64_t rows, sp_error *err) {
    band_ctx *c = user;
    set_stripe(c, stripe);
    const sp_col_span *span = &c->spans[stripe], *core = &c->cores[stripe];
    /* spans start at the pyramid's stripe x0 (plan_spans) */
    if (c->pyr && !sp_pyramid_push_rows(c->pyr, rgb, stride, y0, rows, err))
        return false;
    /* analysis rows stream through the bands */
    if (c->ar && !features_now(c, rgb, span->x0, stride, y0, rows, err))
        return false;
    if (c->th.sum)
        sp__thumb_add(&c->th, rgb + (core->x0 - span->x0) * 3, stride, core->x0,
                      core->x1, y0, rows, c->threads);
    return band_progress(c, rows, err);
}

/* Stripe cores of analysis alone: whole analysis tiles, about 16k px. */
static int64_t analysis_core(int64_t T) { return (16384 + T - 1) / T * T; }

/* With a pyramid, bands are read straight into its level-0 rows. */
static uint8_t *band_dest(void *user, int stripe, int64_t y0, int64_t rows,
                          int64_t width, size_t *stride) {
    band_ctx *c = user;
    (void)stripe;
    (void)y0;
    return sp_pyramid_input(c->pyr, rows, width, stride);
}

/* The stripes of the band loop: the pyramid's (each widened to the right
 * edge of the analysis tiles that start in its core), or with no pyramid
 * cores of whole analysis tiles (analysis_core). */
static bool plan_spans(band_ctx *c) {
    const int64_t W = c->W;
    int n = 1;
    if (c->pyr) {
        n = sp_pyramid_stripes(c->pyr);
    } else if (c->ar) {
        int64_t core = analysis_core(c->ar->tile_size);
        int64_t k = W / core;
        if (W - k * core >= core / 2)
            k++;
        n = k > 1 ? (int)k : 1;
    }
    c->nstripes = n;
    c->spans = malloc((size_t)n * sizeof *c->spans);
    c->cores = malloc((size_t)n * sizeof *c->cores);
    if (!c->spans || !c->cores)
        return false;
    for (int i = 0; i < n; i++) {
        if (c->pyr) {
            sp_stripe ps;
            sp_pyramid_stripe(c->pyr, i, &ps);
            c->spans[i] = (sp_col_span){ps.x0, ps.x1};
            c->cores[i] = (sp_col_span){ps.core0, ps.core1};
        } else {
            int64_t core = n > 1 ? analysis_core(c->ar->tile_size) : W;
            int64_t x0 = i * core, x1 = i == n - 1 ? W : x0 + core;
            c->spans[i] = c->cores[i] = (sp_col_span){x0, x1};
        }
        if (c->ar) { /* the analysis tiles starting in the core */
            int64_t right = c->spans[i].x1;
            for (int64_t r = 0; r < c->ar->rows; r++) {
                size_t k0, k1;
                row_tiles(c, r, c->cores[i].x0, c->cores[i].x1, &k0, &k1);
                if (k1 > k0) {
                    int64_t e =
                        c->ar->coords[2 * (k1 - 1)] + c->ar->size[2 * (k1 - 1)];
                    right = e > right ? e : right;
                }
            }
            c->spans[i].x1 = right;
        }
    }
    c->stripe = -1;
    return true;
}

/* --skip-background: a tile is tissue when at least TISSUE_MIN_SHARE of
 * its pixels (and never fewer than TISSUE_MIN_PIXELS) pass analysis/'s
 * per-pixel tissue rule; a few specks of dust do not make a tile. */
typedef struct {
    int threshold;
} tissue_ctx;

static bool tile_has_tissue(void *user, const uint8_t *rgb, int64_t w,
                            int64_t h, size_t stride) {
    const tissue_ctx *t = user;
    int64_t need = (int64_t)(w * h * TISSUE_MIN_SHARE);
    if (need < TISSUE_MIN_PIXELS)
        need = TISSUE_MIN_PIXELS;
    if (need > w * h)
        need = w * h;
    return sp_tissue_pixels(rgb, (int)w, (int)h, stride, t->threshold, need) >=
           need;
}

static void set_stage(sp_run_result *res, const char *stage) {
    snprintf(res->stage, sizeof res->stage, "%s", stage);
}

/* Fill the record's code and message from the failure in `err`: a file
 * OpenSlide does not recognise at all is not a slide, a stop asked for
 * is a cancellation, whatever the step that noticed it said. */
static void record_failure(const char *slide_path, const sp_run_opts *o,
                           sp_run_result *res, sp_error *err) {
    if (!sp_error_is_set(err))
        sp_error_set(err, SP_ERR_INTERNAL, slide_path, "failed");
    if (o->cancel && *o->cancel) {
        sp_error_clear(err);
        sp_error_set(err, SP_ERR_CANCELLED, slide_path, "interrupted");
    } else if (err->code == SP_ERR_INPUT && strcmp(res->stage, "open") == 0 &&
               sp_slide_not_a_slide(slide_path)) {
        err->code = SP_ERR_NOT_SLIDE;
    }
    res->code = err->code;
    snprintf(res->error, sizeof res->error, "%s", err->msg);
}

static bool run_slide(const char *slide_path, const sp_run_opts *o,
                      sp_run_result *res, sp_error *err) {
    const double t0 = sp_now(), t_start = sp_wall_clock();
    sp_run_result dummy;
    if (!res)
        res = &dummy;
    memset(res, 0, sizeof *res);
    res->tissue_area_mm2 = NAN;
    set_stage(res, "open");
    const bool want_tiles = o->what & SP_RUN_TILES;
    const bool want_feat = o->what & SP_RUN_FEATURES;
    if (!want_tiles && !want_feat)
        return sp_error_set(err, SP_ERR_USAGE, slide_path, "nothing to do");
    if ((want_tiles && !o->tiles_out) || (want_feat && !o->features_out))
        return sp_error_set(err, SP_ERR_USAGE, slide_path, "no output given");
    sp__staging stg;
    if (!sp__staging_plan(o, &stg)) {
        sp__staging_free(&stg);
        return sp_error_set(err, SP_ERR_NOMEM, slide_path, "out of memory");
    }
    /* the final names are the ones that must not exist (the pyramid is
     * told a staged name): its main file, the HDF5 file */
    const bool force = o->force || o->tile.force;
    const char *exists = NULL;
    if (stg.main_tiles >= 0 && sp_path_exists(stg.final[stg.main_tiles]))
        exists = stg.final[stg.main_tiles];
    else if (want_feat && sp_path_exists(o->features_out))
        exists = o->features_out;
    if (exists && !force) {
        sp_error_set(err, SP_ERR_OUTPUT, exists,
                     "already exists (use --force to replace it)");
        sp__staging_free(&stg);
        return false;
    }
    sp__staging_clean_stale(o, &stg);

    const int threads = o->threads > 0 ? o->threads : sp_default_threads();
    sp_slide *s = NULL;
    sp_pyramid *pyr = NULL;
    bool pp_half = false; /* the pyramid takes level 1 at half size */
    sp_analysis_result ar;
    memset(&ar, 0, sizeof ar);
    band_ctx bc;
    memset(&bc, 0, sizeof bc);
    sp_tile_stats tstats;
    memset(&tstats, 0, sizeof tstats);
    tissue_ctx tissue_rule = {0};
    sp_mask bg_mask;
    memset(&bg_mask, 0, sizeof bg_mask);
    sp_store_writer *store = NULL; /* the HDF5 file until its commit */
    bool ok = false;

    if (!sp_slide_open(slide_path, true, &s, err))
        goto out;
    set_stage(res, "mask");
    if (sp_slide_quickhash(s))
        snprintf(res->quickhash, sizeof res->quickhash, "%s",
                 sp_slide_quickhash(s));
    const sp_level *l0 = sp_slide_level(s, 0);
    sp_analysis_opts ap = o->analysis;
    ap.threads = threads;
    ap.progress = NULL;
    ap.cancel = o->cancel;

    /* 1. the mask (and, with features, the analysis grid) */
    const sp_mask *mask = NULL;
    if (want_feat) {
        if (!sp_analysis_prepare(s, &ap, &ar, err))
            goto out;
        mask = &ar.mask;
    }
    if (o->progress && mask)
        o->progress(o->progress_user, "mask", 1, 1);
    /* Features on level-0 pixels ride along with the band loop (with no
     * pyramid to build, only the native tiles under chosen analysis tiles
     * are decoded); at another resolution analysis/ reads its own level. */
    const bool feat_in_bands = want_feat && ar.downsample == 1.0 &&
                               ar.read_level == 0 && ar.read_ratio == 1.0;
    res->fused = want_tiles && feat_in_bands;

    /* 2. the pyramid */
    set_stage(res, want_tiles ? "tiles" : "features");
    if (want_tiles) {
        sp_pyramid_opts pp;
        memset(&pp, 0, sizeof pp);
        pp.output = stg.tiles_stage_out;
        pp.final_main = stg.final[stg.main_tiles]; /* named in OME-XML */
        pp.width = l0->width;
        pp.height = l0->height;
        pp.opts = o->tile;
        pp.opts.threads = threads;
        pp.opts.force = true; /* a staged name: ours alone */
        pp.opts.progress = NULL;
        pp.opts.cancel = NULL;
        pp.band_rows = sp_band_rows_for(s, 0);
        pp.slide = s;
        char why[200];
        if (pp.opts.passthrough && o->passthrough_if_possible &&
            !sp_tile_passthrough_check(s, &pp.opts, why, sizeof why)) {
            pp.opts.passthrough = false;
            snprintf(res->note, sizeof res->note,
                     "level 0 encoded, not copied: %s", why);
        }
        /* analysis tiles may reach past a stripe: read them in place too */
        pp.input_extra = feat_in_bands ? ar.tile_size : 0;
        /* level 0 copied and its pixels wanted by nobody else: the
         * pyramid gets level 1, decoded at half size */
        pp.half_input = !want_feat && sp_tile_half_input(s, &pp.opts);
        if (o->tile.skip_background && o->mask_for_background) {
            /* analysis/'s per-pixel decision (saturation above the
             * slide's Otsu threshold), on each tile's own pixels */
            if (!mask) {
                if (!sp_mask_compute(s, &ap.mask, threads, &bg_mask, err))
                    goto out;
                mask = &bg_mask;
            }
            tissue_rule.threshold = mask->threshold;
            pp.opts.tissue_fn = tile_has_tissue;
            pp.opts.tissue_user = &tissue_rule;
        }
        double mx = 0, my = 0, pw = 0;
        sp_slide_mpp(s, &mx, &my);
        sp_slide_objective_power(s, &pw);
        pp.source.path =
            o->source_name ? o->source_name : sp_basename(sp_slide_path(s));
        pp.source.vendor = sp_slide_vendor(s);
        pp.source.quickhash = sp_slide_quickhash(s);
        pp.source.mpp_x = mx;
        pp.source.mpp_y = my;
        pp.source.objective_power = pw;
        pp_half = pp.half_input;
        pyr = sp_pyramid_create(&pp, err);
        if (!pyr)
            goto out;
    }

    /* 3. one pass over level 0 */
    bc.o = o;
    bc.slide = s;
    bc.threads = threads;
    bc.W = l0->width;
    bc.H = l0->height;
    bc.pyr = pyr;
    bc.half = pyr && pp_half;
    /* the thumbnail: from a native level when the slide has one near the
     * size (cheap), else summed from the bands as they go by */
    double thumb_ds = (double)(bc.W > bc.H ? bc.W : bc.H) / THUMB_MAX;
    bool band_thumb = want_feat && want_tiles && feat_in_bands &&
                      sp_slide_best_level(s, thumb_ds < 1 ? 1 : thumb_ds) == 0;
    if (band_thumb && !sp__thumb_init(&bc.th, bc.W, bc.H)) {
        sp_error_set(err, SP_ERR_NOMEM, slide_path, "out of memory");
        goto out;
    }
    if (feat_in_bands) {
        bc.ar = &ar;
        bc.row_first = malloc((size_t)(ar.rows + 1) * sizeof *bc.row_first);
        if (!bc.row_first) {
            sp_error_set(err, SP_ERR_NOMEM, slide_path, "out of memory");
            goto out;
        }
        size_t k = 0;
        for (int64_t r = 0; r <= ar.rows; r++) {
            while (k < ar.n && ar.coords[2 * k + 1] < r * ar.tile_size)
                k++;
            bc.row_first[r] = k;
        }
    }
    if ((want_tiles || feat_in_bands) && !plan_spans(&bc)) {
        sp_error_set(err, SP_ERR_NOMEM, slide_path, "out of memory");
        goto out;
    }
    if (feat_in_bands) { /* a stream per tile of one row of a stripe */
        int64_t most = 0;
        for (int i = 0; i < bc.nstripes; i++) {
            int64_t k = (bc.cores[i].x1 - bc.cores[i].x0) / ar.tile_size + 2;
            most = k > most ? k : most;
        }
        most = most < ar.cols ? most : ar.cols;
        bc.nslots = most;
        bc.maxr = (int)(sp_band_rows_for(s, 0) / ar.tile_size + 2);
        bc.streams = malloc((size_t)most * sp_analysis_stream_size());
        bc.segs = malloc((size_t)most * (size_t)bc.maxr * sizeof *bc.segs);
        bc.nseg = malloc((size_t)most * sizeof *bc.nseg);
        bc.active = malloc((size_t)most * sizeof *bc.active);
        if (!bc.streams || !bc.segs || !bc.nseg || !bc.active) {
            sp_error_set(err, SP_ERR_NOMEM, slide_path, "out of memory");
            goto out;
        }
    }
    if (feat_in_bands && !want_tiles && !needed_tiles(s, &ar, &bc)) {
        sp_error_set(err, SP_ERR_NOMEM, slide_path, "out of memory");
        goto out;
    }
    if (want_tiles || feat_in_bands) {
        sp_band_hooks hooks = {.fn = on_band,
                               .want = bc.need ? want_native : NULL,
                               .dest = pyr ? band_dest : NULL,
                               .user = &bc,
                               .half = bc.half};
        if (!pyr) { /* analysis alone: its work beside the next reads */
            hooks.fn = band_done;
            hooks.plan = plan_band;
            hooks.item = band_item;
        }
        if (!sp_band_loop(s, threads, o->tile.background, 0, bc.spans,
                          bc.nstripes, &hooks, err))
            goto out;
        res->megapixels = (double)bc.W * (double)bc.H / 1e6;
        if (bc.th.sum && !sp__thumb_finish(&bc.th)) {
            sp_error_set(err, SP_ERR_NOMEM, slide_path, "out of memory");
            goto out;
        }
    }
    if (want_feat && !feat_in_bands) {
        set_stage(res, "features");
        if (!sp_analysis_read_tiles(s, &ap, &ar, err))
            goto out;
    }
    /* 4. the slide's summary (Macenko) beside the HDF5 file up to that
     * summary (thumbnail, features, mask), then the pyramid's last
     * levels, then the summary and the commit */
    if (want_feat && !bc.th.complete &&
        !sp__thumb_from_level(s, mask, &bc.th, threads, err))
        goto out;
    if (want_feat) {
        if (o->progress)
            o->progress(o->progress_user, "write", 0, 1);
        bool fin_ok = true, st_ok = true;
        sp_error fin_err = {0}, st_err = {0};
        const sp__thumb *th = bc.th.complete ? &bc.th : NULL;
        /* Macenko a task of the team, the store in its single thread:
         * the store's image chunks are tasks too (write_image_chunks) */
#pragma omp parallel num_threads(threads)
#pragma omp single
        {
#pragma omp task shared(fin_ok, fin_err, ar, ap)
            fin_ok = sp_analysis_finish(s, &ap, &ar, &fin_err);
            st_ok = sp__run_store_begin(stg.h5_stage, s, o, &ar, th, t_start,
                                        &store, &st_err);
        }
        if (!fin_ok || !st_ok) {
            set_stage(res, !fin_ok ? "features" : "write");
            if (err && !sp_error_is_set(err))
                *err = !fin_ok ? fin_err : st_err;
            goto out;
        }
    }
    set_stage(res, "write");
    if (pyr) {
        sp_pyramid *p = pyr;
        pyr = NULL;
        if (!sp_pyramid_finish(p, &tstats, err))
            goto out;
        /* the name it will have */
        snprintf(tstats.output, sizeof tstats.output, "%s",
                 stg.final[stg.main_tiles]);
    }
    if (want_feat) {
        sp_store_writer *w = store;
        store = NULL;
        if (!sp__run_store_end(w, &ar, err))
            goto out;
        res->tiles_analysed = (int64_t)ar.n;
        res->tissue_tiles = (int64_t)ar.summary.tiles_tissue;
        res->tissue_area_mm2 = ar.summary.tissue_area_mm2;
    }
    if (stg.png_stage && mask && !sp_mask_write_png(mask, stg.png_stage, err))
        goto out;
    /* every output is complete: all of them into place, or none */
    if (!sp__staging_commit(&stg, force, err))
        goto out;
    if (want_tiles)
        res->tiles = tstats;
    ok = true;
    set_stage(res, "done");
out:
    if (!ok) {
        sp_store_abort(store);
        sp_pyramid_abort(pyr);
        sp__staging_remove(&stg);
        sp__unstage_msg(&stg, err);
    }
    sp__staging_free(&stg);
    free(bc.streams);
    free(bc.segs);
    free(bc.nseg);
    free(bc.active);
    free(bc.row_first);
    free(bc.spans);
    free(bc.cores);
    free(bc.need);
    sp_mask_free(&bg_mask);
    sp__thumb_free(&bc.th);
    sp_analysis_result_free(&ar);
    sp_slide_close(s);
    res->seconds = sp_now() - t0;
    return ok;
}

bool sp_run_slide(const char *slide_path, const sp_run_opts *o,
                  sp_run_result *res, sp_error *err) {
    sp_run_result dummy;
    if (!res)
        res = &dummy;
    sp_error e = {0};
    if (run_slide(slide_path, o, res, &e))
        return true;
    record_failure(slide_path, o, res, &e);
    if (err && !sp_error_is_set(err))
        *err = e;
    return false;
}
