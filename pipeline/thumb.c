/* The slide thumbnail: a box average of level 0, built as the bands go
 * by, or read from a low level when there is no pass over level 0. */
#include "pipeline_private.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define THUMB_MAX 1024 /* longest side of the stored thumbnail */
#define THUMB_READ_MAX (64.0 * 1024 * 1024) /* see sp__thumb_from_level */

bool sp__thumb_init(sp__thumb *t, int64_t W, int64_t H) {
    int64_t m = W > H ? W : H;
    t->f = (m + THUMB_MAX - 1) / THUMB_MAX;
    if (t->f < 1)
        t->f = 1;
    t->W = W;
    t->H = H;
    t->w = (W + t->f - 1) / t->f;
    t->h = (H + t->f - 1) / t->f;
    t->px = NULL;
    t->sum = calloc((size_t)(t->w * t->h * 3), sizeof *t->sum);
    t->complete = false;
    t->level_downsample = 1.0;
    return t->sum != NULL;
}

void sp__thumb_free(sp__thumb *t) {
    free(t->px);
    free(t->sum);
}

/* Add columns [x0, x1) of rows [y0, y0 + rows); `rgb` is pixel (x0, y0).
 * Stripes may come in any order, each column of a row exactly once. */
void sp__thumb_add(sp__thumb *t, const uint8_t *rgb, size_t stride, int64_t x0,
                   int64_t x1, int64_t y0, int64_t rows, int threads) {
    const int64_t f = t->f;
    const int64_t tx0 = x0 / f, tx1 = (x1 + f - 1) / f;
    uint32_t *sum = t->sum;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t tx = tx0; tx < tx1; tx++) {
        int64_t a = tx * f > x0 ? tx * f : x0;
        int64_t b = tx * f + f < x1 ? tx * f + f : x1;
        for (int64_t r = 0; r < rows; r++) {
            const uint8_t *p = rgb + r * stride + (a - x0) * 3;
            uint32_t s0 = 0, s1 = 0, s2 = 0;
            for (int64_t x = a; x < b; x++, p += 3) {
                s0 += p[0];
                s1 += p[1];
                s2 += p[2];
            }
            uint32_t *o = sum + (((y0 + r) / f) * t->w + tx) * 3;
            o[0] += s0;
            o[1] += s1;
            o[2] += s2;
        }
    }
}

/* All pixels added: the averages. */
bool sp__thumb_finish(sp__thumb *t) {
    t->px = malloc((size_t)(t->w * t->h * 3));
    if (!t->px)
        return false;
    const int64_t f = t->f;
    for (int64_t ty = 0; ty < t->h; ty++) {
        int64_t rh = (ty + 1) * f < t->H ? f : t->H - ty * f;
        for (int64_t tx = 0; tx < t->w; tx++) {
            int64_t cw = (tx + 1) * f < t->W ? f : t->W - tx * f;
            uint32_t cnt = (uint32_t)(cw * rh);
            for (int c = 0; c < 3; c++) {
                size_t i = (size_t)((ty * t->w + tx) * 3 + c);
                t->px[i] = (uint8_t)((t->sum[i] + cnt / 2) / cnt);
            }
        }
    }
    free(t->sum);
    t->sum = NULL;
    t->complete = true;
    return true;
}

/* Without a pass over level 0: the thumbnail from the native level that is
 * nearest below THUMB_MAX on its longest side, box-averaged by a whole
 * factor. Skipped (no /thumbnail) when that level would exceed
 * THUMB_READ_MAX pixels, e.g. a huge single-level slide. The tissue
 * mask's pixels stand in for the read when they are that level, whole. */
bool sp__thumb_from_level(sp_slide *s, const sp_mask *m, sp__thumb *t,
                          int threads, sp_error *err) {
    const sp_level *l0 = sp_slide_level(s, 0);
    double want =
        (double)(l0->width > l0->height ? l0->width : l0->height) / THUMB_MAX;
    int L = sp_slide_best_level(s, want < 1 ? 1 : want);
    const sp_level *l = sp_slide_level(s, L);
    if ((double)l->width * (double)l->height > THUMB_READ_MAX)
        return true;
    /* the mask read the level row by row from level-0 offsets: the same
     * pixels when the downsample is whole */
    const bool reuse = m && m->rgb && m->level == L && m->factor == 1 &&
                       m->width == l->width && m->height == l->height &&
                       l->downsample == floor(l->downsample);
    uint8_t *px = NULL;
    sp_reader *r = NULL;
    bool ok = false;
    if (!reuse) {
        px = malloc((size_t)(l->width * l->height * 3));
        r = px ? sp_reader_create(s, 0, NULL, err) : NULL;
        if (!px || !r) {
            sp_error_set(err, SP_ERR_NOMEM, sp_slide_path(s), "out of memory");
            goto out;
        }
        if (!sp_reader_read(r, L, 0, 0, l->width, l->height, px, err))
            goto out;
    }
    if (!sp__thumb_init(t, l->width, l->height)) {
        sp_error_set(err, SP_ERR_NOMEM, sp_slide_path(s), "out of memory");
        goto out;
    }
    /* sp__thumb_init picks the whole factor from the level's own size; at 1
     * the level is the thumbnail */
    if (t->f == 1) {
        free(t->sum);
        t->sum = NULL;
        if (reuse) {
            px = malloc((size_t)(l->width * l->height * 3));
            if (!px) {
                sp_error_set(err, SP_ERR_NOMEM, sp_slide_path(s),
                             "out of memory");
                goto out;
            }
            memcpy(px, m->rgb, (size_t)(l->width * l->height * 3));
        }
        t->px = px;
        px = NULL;
        t->complete = true;
    } else {
        sp__thumb_add(t, reuse ? m->rgb : px, l->width * 3, 0, l->width, 0,
                      l->height, threads);
        if (!sp__thumb_finish(t)) {
            sp_error_set(err, SP_ERR_NOMEM, sp_slide_path(s), "out of memory");
            goto out;
        }
    }
    t->level_downsample = l->downsample;
    ok = true;
out:
    sp_reader_free(r);
    free(px);
    return ok;
}
