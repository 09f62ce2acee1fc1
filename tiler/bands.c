/* Read level 0 in bands aligned to the slide's native tiles, one reader
 * (private OpenSlide handle) and one scratch buffer per thread, made once
 * inside the parallel region and kept across bands. */
#include "tiler_private.h"

#include <omp.h>
#include <stdlib.h>
#include <string.h>

static void native_tile(const sp_slide *s, int64_t *tw, int64_t *th) {
    const sp_level *l = sp_slide_level(s, 0);
    *tw = l->tile_width > 0 ? l->tile_width : 256;
    *th = l->tile_height > 0 ? l->tile_height : 256;
    if (*tw > l->width)
        *tw = l->width;
}

int64_t sp_band_rows_for(const sp_slide *s, int64_t band_rows) {
    int64_t tw, th;
    native_tile(s, &tw, &th);
    int64_t want = band_rows > 0 ? band_rows : 256;
    int64_t k = (want + th / 2) / th;
    return (k < 1 ? 1 : k) * th;
}

typedef struct {
    sp_reader *reader;
    sp_error err;
} band_thread;

/* A band: where it lies and where its pixels are. */
typedef struct {
    int stripe;
    int64_t y0, rows;
    int64_t x0, x1; /* the stripe's columns */
    uint8_t *px;
    size_t stride;
    int64_t tc0, tcols, trows; /* its native tiles: first column, counts */
    int64_t nwork;             /* items planned on it */
    int64_t uy0, urows;        /* the rows the hooks see (half size: halved) */
} band;

/* Reads native tile item i (row-major over the band's tiles) of `b`, the
 * part inside the stripe that `want` asks for. */
static bool read_item(sp_reader *r, const band *b, int64_t i, int64_t ntw,
                      int64_t nth, bool half, sp_band_want_fn want, void *user,
                      sp_error *err) {
    int64_t x = (b->tc0 + i % b->tcols) * ntw, y = (i / b->tcols) * nth;
    int64_t xe = x + ntw < b->x1 ? x + ntw : b->x1;
    if (x < b->x0)
        x = b->x0;
    int64_t w = xe - x;
    int64_t h = b->rows - y < nth ? b->rows - y : nth;
    if (h <= 0)
        return true;
    int64_t ry = b->y0 + y; /* level-0 row */
    if (half) {
        /* x, ry and the band's x0, y0 are even (tile and stripe edges) */
        int64_t hx = x / 2, hy = ry / 2;
        uint8_t *dst =
            b->px + (hy - b->y0 / 2) * b->stride + (hx - b->x0 / 2) * 3;
        return sp_reader_read_half(r, hx, hy, (x + w + 1) / 2 - hx,
                                   (ry + h + 1) / 2 - hy, dst, b->stride, err);
    }
    if (want && !want(user, &x, &ry, &w, &h))
        return true; /* nobody reads it: left as it is */
    uint8_t *dst = b->px + (ry - b->y0) * b->stride + (x - b->x0) * 3;
    return sp_reader_read_stride(r, 0, x, ry, w, h, dst, b->stride, err);
}

bool sp_band_loop(sp_slide *s, int threads, const uint8_t bg[3],
                  int64_t band_rows, const sp_col_span *stripes, int nstripes,
                  const sp_band_hooks *hooks, sp_error *err) {
    sp_band_want_fn want = hooks->want;
    void *user = hooks->user;
    static const uint8_t white[3] = {255, 255, 255};
    if (!bg)
        bg = white;
    const sp_level *l0 = sp_slide_level(s, 0);
    const int64_t W = l0->width, H = l0->height;
    const sp_col_span whole = {0, W};
    if (!stripes || nstripes <= 0) {
        stripes = &whole;
        nstripes = 1;
    }
    int64_t maxw = 0;
    for (int i = 0; i < nstripes; i++) {
        const sp_col_span *c = &stripes[i];
        if (c->x0 < 0 || c->x1 > W || c->x0 >= c->x1)
            return sp_error_set(err, SP_ERR_USAGE, sp_slide_path(s),
                                "band loop: bad stripe %lld..%lld of %lld",
                                (long long)c->x0, (long long)c->x1,
                                (long long)W);
        if (c->x1 - c->x0 > maxw)
            maxw = c->x1 - c->x0;
    }
    const bool pipe = hooks->plan && hooks->item && !hooks->dest;
    const bool half = hooks->half;
    int P = threads > 0 ? threads : sp_default_threads();
    int64_t ntw, nth;
    native_tile(s, &ntw, &nth);
    if (half && (want || !sp_slide_can_read_half(s) || ntw % 2 || nth % 2))
        return sp_error_set(err, SP_ERR_USAGE, sp_slide_path(s),
                            "band loop: level 0 cannot be read at half size");
    for (int i = 0; half && i < nstripes; i++)
        if (stripes[i].x0 % 2)
            return sp_error_set(err, SP_ERR_USAGE, sp_slide_path(s),
                                "band loop: a stripe at an odd column");
    const int64_t B = sp_band_rows_for(s, band_rows);
    const int64_t per = (H + B - 1) / B; /* bands per stripe */
    const int64_t nb = per * nstripes;

    bool ok = false;
    uint8_t *own[2] = {NULL, NULL}; /* our band buffers, made when needed */
    band prev;                      /* read, its items not yet run */
    bool have_prev = false;
    band_thread *bt = calloc((size_t)P, sizeof *bt);
    if (!bt) {
        sp_error_set(err, SP_ERR_NOMEM, sp_slide_path(s), "out of memory");
        goto out;
    }
    /* Step b reads band b and, piped, runs the items of band b - 1 beside
     * it; one more step runs the last band's items. */
    for (int64_t b = 0; b < nb || have_prev; b++) {
        band cur = {0};
        int64_t nread = 0;
        if (b < nb) {
            cur.stripe = (int)(b / per);
            cur.y0 = (b % per) * B;
            cur.rows = H - cur.y0 < B ? H - cur.y0 : B;
            cur.x0 = stripes[cur.stripe].x0;
            cur.x1 = stripes[cur.stripe].x1;
            const int64_t sw = cur.x1 - cur.x0;
            /* what the hooks see: at half size, the band's half rows */
            cur.uy0 = half ? cur.y0 / 2 : cur.y0;
            cur.urows = half ? (cur.y0 + cur.rows + 1) / 2 - cur.uy0 : cur.rows;
            const int64_t uw = half ? (cur.x1 + 1) / 2 - cur.x0 / 2 : sw;
            cur.px = hooks->dest ? hooks->dest(user, cur.stripe, cur.uy0,
                                               cur.urows, uw, &cur.stride)
                                 : NULL;
            if (!cur.px) {
                uint8_t **o = &own[pipe ? b & 1 : 0];
                if (!*o && !(*o = sp_big_alloc((size_t)(maxw * 3 * B)))) {
                    sp_error_set(err, SP_ERR_NOMEM, sp_slide_path(s),
                                 "out of memory");
                    goto out;
                }
                cur.px = *o;
                cur.stride = uw * 3;
            }
            /* work items: the native tiles (their part inside the stripe),
             * read straight into the band: no copy, none decoded twice */
            cur.tc0 = cur.x0 / ntw;
            cur.tcols = (cur.x1 - 1) / ntw - cur.tc0 + 1;
            cur.trows = B / nth;
            nread = cur.tcols * cur.trows;
        }
        const int64_t nwork = have_prev ? prev.nwork : 0;
        _Atomic bool failed = false;
        if (nread + nwork > 0) {
#pragma omp parallel num_threads(P)
            {
                band_thread *me = &bt[omp_get_thread_num()];
                if (!me->reader && !sp_error_is_set(&me->err))
                    me->reader = sp_reader_create(s, SP_READER_PRIVATE_HANDLE,
                                                  bg, &me->err);
                if (sp_error_is_set(&me->err)) {
                    atomic_store(&failed, true);
                }
                /* the reads first: the items, shorter, fill the end */
#pragma omp for schedule(dynamic, 1)
                for (int64_t i = 0; i < nread + nwork; i++) {
                    if (atomic_load_explicit(&failed, memory_order_relaxed))
                        continue;
                    bool done = i < nread
                                    ? read_item(me->reader, &cur, i, ntw, nth,
                                                half, want, user, &me->err)
                                    : hooks->item(user, i - nread, &me->err);
                    if (!done)
                        atomic_store(&failed, true);
                }
            }
        }
        if (failed) {
            for (int t = 0; t < P; t++)
                if (sp_error_is_set(&bt[t].err)) {
                    *err = bt[t].err;
                    goto out;
                }
            sp_error_set(err, SP_ERR_INPUT, sp_slide_path(s), "read failed");
            goto out;
        }
        if (have_prev) {
            have_prev = false;
            if (!hooks->fn(user, prev.stripe, prev.px, prev.stride, prev.uy0,
                           prev.urows, err))
                goto out;
        }
        if (b >= nb)
            continue;
        if (!pipe) {
            if (!hooks->fn(user, cur.stripe, cur.px, cur.stride, cur.uy0,
                           cur.urows, err))
                goto out;
            continue;
        }
        cur.nwork = hooks->plan(user, cur.stripe, cur.px, cur.stride, cur.uy0,
                                cur.urows, err);
        if (cur.nwork < 0)
            goto out;
        prev = cur;
        have_prev = true;
    }
    ok = true;
out:
    if (bt)
        for (int t = 0; t < P; t++)
            sp_reader_free(bt[t].reader);
    free(bt);
    free(own[0]);
    free(own[1]);
    return ok;
}
