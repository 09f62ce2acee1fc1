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
    int P = threads > 0 ? threads : sp_default_threads();
    int64_t ntw, nth;
    native_tile(s, &ntw, &nth);
    const int64_t B = sp_band_rows_for(s, band_rows);

    bool ok = false;
    uint8_t *own = NULL; /* our band buffer, made when first needed */
    band_thread *bt = calloc((size_t)P, sizeof *bt);
    if (!bt) {
        sp_error_set(err, SP_ERR_NOMEM, sp_slide_path(s), "out of memory");
        goto out;
    }
    for (int si = 0; si < nstripes; si++) {
        const int64_t sx0 = stripes[si].x0, sx1 = stripes[si].x1;
        const int64_t sw = sx1 - sx0;
        /* work items: the native tiles (their part inside the stripe),
         * read straight into the band: no copy, none decoded twice */
        const int64_t tc0 = sx0 / ntw, tcols = (sx1 - 1) / ntw - tc0 + 1;
        const int64_t trows = B / nth, nitems = tcols * trows;
        for (int64_t y0 = 0; y0 < H; y0 += B) {
            int64_t rows = H - y0 < B ? H - y0 : B;
            int64_t bs = 0; /* band stride */
            uint8_t *band =
                hooks->dest ? hooks->dest(user, si, y0, rows, sw, &bs) : NULL;
            if (!band) {
                if (!own && !(own = sp_big_alloc((size_t)(maxw * 3 * B)))) {
                    sp_error_set(err, SP_ERR_NOMEM, sp_slide_path(s),
                                 "out of memory");
                    goto out;
                }
                band = own;
                bs = sw * 3;
            }
            _Atomic bool failed = false;
#pragma omp parallel num_threads(P)
            {
                band_thread *me = &bt[omp_get_thread_num()];
                if (!me->reader && !sp_error_is_set(&me->err))
                    me->reader = sp_reader_create(s, SP_READER_PRIVATE_HANDLE,
                                                  bg, &me->err);
                if (sp_error_is_set(&me->err))
                    atomic_store(&failed, true);
#pragma omp for schedule(dynamic, 2)
                for (int64_t i = 0; i < nitems; i++) {
                    if (atomic_load_explicit(&failed, memory_order_relaxed))
                        continue;
                    int64_t x = (tc0 + i % tcols) * ntw, y = (i / tcols) * nth;
                    int64_t xe = x + ntw < sx1 ? x + ntw : sx1;
                    if (x < sx0)
                        x = sx0;
                    int64_t w = xe - x;
                    int64_t h = rows - y < nth ? rows - y : nth;
                    if (h <= 0)
                        continue;
                    int64_t ry = y0 + y; /* level-0 row */
                    if (want && !want(user, &x, &ry, &w, &h))
                        continue; /* nobody reads it: left as it is */
                    uint8_t *dst = band + (ry - y0) * bs + (x - sx0) * 3;
                    if (!sp_reader_read_stride(me->reader, 0, x, ry, w, h, dst,
                                               (size_t)bs, &me->err))
                        atomic_store(&failed, true);
                }
            }
            if (failed) {
                for (int t = 0; t < P; t++)
                    if (sp_error_is_set(&bt[t].err)) {
                        *err = bt[t].err;
                        goto out;
                    }
                sp_error_set(err, SP_ERR_INPUT, sp_slide_path(s),
                             "read failed");
                goto out;
            }
            if (!hooks->fn(user, si, band, bs, y0, rows, err))
                goto out;
        }
    }
    ok = true;
out:
    if (bt)
        for (int t = 0; t < P; t++)
            sp_reader_free(bt[t].reader);
    free(bt);
    free(own);
    return ok;
}
