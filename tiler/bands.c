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
    uint8_t *scratch;
    size_t cap;
    sp_error err;
} band_thread;

bool sp_band_loop(sp_slide *s, int threads, const uint8_t bg[3],
                  int64_t band_rows, sp_band_fn fn, void *user,
                  sp_error *err) {
    const sp_level *l0 = sp_slide_level(s, 0);
    const int64_t W = l0->width, H = l0->height;
    int P = threads > 0 ? threads : sp_default_threads();
    int64_t ntw, nth;
    native_tile(s, &ntw, &nth);
    const int64_t B = sp_band_rows_for(s, band_rows);
    /* pieces: runs of whole native tiles, about 4 per thread per band */
    int64_t tcols = (W + ntw - 1) / ntw, trows = B / nth;
    int64_t want = 4 * (int64_t)P;
    int64_t kc = (tcols + want - 1) / want; /* native columns per piece */
    int64_t pcols = (tcols + kc - 1) / kc;
    int64_t kr = trows; /* native rows per piece */
    if (pcols < want) {
        int64_t need_rows = (want + pcols - 1) / pcols;
        kr = (trows + need_rows - 1) / need_rows;
        if (kr < 1)
            kr = 1;
    }
    const int64_t pw = kc * ntw, ph = kr * nth;
    const int64_t prows = (B + ph - 1) / ph;
    const int64_t npieces = pcols * prows;

    bool ok = false;
    uint8_t *band = malloc((size_t)(W * 3 * B));
    band_thread *bt = calloc((size_t)P, sizeof *bt);
    if (!band || !bt) {
        sp_error_set(err, SP_ERR_NOMEM, sp_slide_path(s), "out of memory");
        goto out;
    }
    for (int64_t y0 = 0; y0 < H; y0 += B) {
        int64_t rows = H - y0 < B ? H - y0 : B;
        _Atomic bool failed = false;
#pragma omp parallel num_threads(P)
        {
            band_thread *me = &bt[omp_get_thread_num()];
            if (!me->reader && !sp_error_is_set(&me->err)) {
                me->reader = sp_reader_create(s, SP_READER_PRIVATE_HANDLE,
                                              bg, &me->err);
                me->cap = (size_t)(pw * ph * 3);
                me->scratch = me->reader ? malloc(me->cap) : NULL;
                if (me->reader && !me->scratch)
                    sp_error_set(&me->err, SP_ERR_NOMEM, sp_slide_path(s),
                                 "out of memory");
            }
            if (sp_error_is_set(&me->err))
                atomic_store(&failed, true);
#pragma omp for schedule(dynamic, 1)
            for (int64_t i = 0; i < npieces; i++) {
                if (atomic_load_explicit(&failed, memory_order_relaxed))
                    continue;
                int64_t x = (i % pcols) * pw, y = (i / pcols) * ph;
                int64_t w = W - x < pw ? W - x : pw;
                int64_t h = rows - y < ph ? rows - y : ph;
                if (h <= 0)
                    continue;
                if (!sp_reader_read(me->reader, 0, x, y0 + y, w, h,
                                    me->scratch, &me->err)) {
                    atomic_store(&failed, true);
                    continue;
                }
                for (int64_t r = 0; r < h; r++)
                    memcpy(band + (y + r) * W * 3 + x * 3,
                           me->scratch + r * w * 3, (size_t)(w * 3));
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
        if (!fn(user, band, W * 3, y0, rows, err))
            goto out;
    }
    ok = true;
out:
    if (bt)
        for (int t = 0; t < P; t++) {
            sp_reader_free(bt[t].reader);
            free(bt[t].scratch);
        }
    free(bt);
    free(band);
    return ok;
}
