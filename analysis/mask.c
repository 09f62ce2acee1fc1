/* Tissue mask: a box-averaged thumbnail, Otsu on its 8-bit saturation, then
 * closing, hole filling and small-object removal. */
#include "analysis.h"
#include "analysis_private.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

void sp_mask_opts_default(sp_mask_opts *p) {
    p->downsample = 32.0;
    p->threshold = -1;
    p->min_threshold = 8;
    p->close_radius = 2;
    p->max_hole_um2 = 10000.0;
    p->min_object_um2 = 10000.0;
    p->max_hole_px = 32;
    p->min_object_px = 32;
}

void sp_mask_free(sp_mask *m) {
    if (!m)
        return;
    free(m->data);
    free(m->rgb);
    m->data = NULL;
    m->rgb = NULL;
}

int sp_otsu_u8(const uint64_t hist[256]) {
    int lo = 0, hi = 255;
    while (lo < 255 && !hist[lo])
        lo++;
    while (hi > 0 && !hist[hi])
        hi--;
    if (lo >= hi)
        return lo; /* one value (or none) */
    /* skimage: weight1/mean1 from the left, weight2/mean2 from the right,
     * variance12[i] = w1[i] * w2[i+1] * (m1[i] - m2[i+1])^2, first argmax */
    int nb = hi - lo + 1;
    int64_t w2[256], s2[256];
    int64_t cw = 0, cs = 0;
    for (int i = nb - 1; i >= 0; i--) {
        cw += (int64_t)hist[lo + i];
        cs += (int64_t)hist[lo + i] * (lo + i);
        w2[i] = cw;
        s2[i] = cs;
    }
    int64_t w1 = 0, s1 = 0;
    double best = -1;
    int besti = 0;
    for (int i = 0; i < nb - 1; i++) {
        w1 += (int64_t)hist[lo + i];
        s1 += (int64_t)hist[lo + i] * (lo + i);
        double m1 = (double)s1 / (double)w1;
        double m2 = (double)s2[i + 1] / (double)w2[i + 1];
        double v = (double)(w1 * w2[i + 1]) * ((m1 - m2) * (m1 - m2));
        if (v > best) {
            best = v;
            besti = i;
        }
    }
    return lo + besti;
}

/* Box-averaged thumbnail of `level` by `f`: one read of f level rows (the
 * whole level width) per mask row, one reader per thread. */
static bool read_thumbnail(sp_slide *s, int level, int f, int mw, int mh,
                           int threads, uint8_t *thumb, sp_error *err) {
    const sp_level *l = sp_slide_level(s, level);
    const int64_t lw = l->width, lh = l->height;
    int failed = 0;
    sp_error first = {0};
    /* reads of about 64 level rows (a call has a fixed cost in OpenSlide),
     * or of whole rows of the level's tiles where a tile row is at most
     * 512 level rows and 32 MB (a JPEG tile cut across decodes its top
     * part again) */
    int G = f >= 64 ? 1 : 64 / f;
    const int64_t th = l->tile_height;
    if (th > 0 && th <= 512 && lw * 3 * th <= ((int64_t)32 << 20)) {
        int64_t a = th, b = f; /* G * f = lcm(f, th) */
        while (b) {
            int64_t t = a % b;
            a = b;
            b = t;
        }
        int64_t lcm = th / a * f;
        if (lcm <= 512 && lw * 3 * lcm <= ((int64_t)32 << 20))
            G = (int)(lcm / f);
    }
    const int nitems = (mh + G - 1) / G;
#pragma omp parallel num_threads(threads)
    {
        sp_error e = {0};
        sp_reader *r = sp_reader_create(s, 0, NULL, &e);
        uint8_t *buf = f > 1 ? malloc((size_t)lw * 3 * f * G) : NULL;
        uint32_t *sum = f > 1 ? malloc((size_t)mw * 4 * sizeof *sum) : NULL;
        if (!r || (f > 1 && (!buf || !sum))) {
            if (!sp_error_is_set(&e))
                sp_error_set(&e, SP_ERR_NOMEM, sp_slide_path(s),
                             "tissue mask: out of memory");
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(dynamic)
        for (int it = 0; it < nitems; it++) {
            int stop;
#pragma omp atomic read
            stop = failed;
            if (stop)
                continue;
            /* mask rows [my0, my1): one read of their level rows */
            int my0 = it * G, my1 = my0 + G < mh ? my0 + G : mh;
            int64_t y0 = (int64_t)my0 * f;
            int64_t y1 = (int64_t)my1 * f < lh ? (int64_t)my1 * f : lh;
            int64_t y0_l0 = llround((double)y0 * l->downsample);
            /* at factor 1 the level's rows are the thumbnail's */
            uint8_t *dst = f == 1 ? thumb + (size_t)my0 * mw * 3 : buf;
            if (!sp_reader_read(r, level, 0, y0_l0, lw, y1 - y0, dst, &e)) {
#pragma omp atomic write
                failed = 1;
                continue;
            }
            for (int my = my0; f > 1 && my < my1; my++) {
                int64_t r0 = (int64_t)my * f - y0;
                int64_t nrows = y0 + r0 + f < lh ? f : lh - y0 - r0;
                memset(sum, 0, (size_t)mw * 4 * sizeof *sum);
                for (int64_t y = 0; y < nrows; y++) {
                    const uint8_t *row = buf + (size_t)(r0 + y) * lw * 3;
                    for (int64_t x = 0; x < lw; x++) {
                        uint32_t *acc = sum + 4 * (x / f);
                        acc[0] += row[3 * x];
                        acc[1] += row[3 * x + 1];
                        acc[2] += row[3 * x + 2];
                        acc[3]++;
                    }
                }
                uint8_t *out = thumb + (size_t)my * mw * 3;
                for (int mx = 0; mx < mw; mx++) {
                    uint32_t n = sum[4 * mx + 3];
                    for (int c = 0; c < 3; c++)
                        out[3 * mx + c] =
                            (uint8_t)((sum[4 * mx + c] + n / 2) / n);
                }
            }
        }
        if (sp_error_is_set(&e)) {
#pragma omp critical(sp_mask_error)
            if (!sp_error_is_set(&first))
                first = e;
        }
        free(sum);
        free(buf);
        sp_reader_free(r);
    }
    if (failed) {
        if (err && !sp_error_is_set(err))
            *err = first;
        return false;
    }
    return true;
}

/* out = 1 where some pixel of `in` within the disk of radius r around it
 * (pixels outside the image left out) is set, `in` read as (v != 0) != inv;
 * then written as (hit != inv). The disk's row dy spans |dx| <= hw[dy], so
 * a row's hit is a count over a run of row y + dy: row prefix counts make
 * that one subtraction. pre: h * (w + 1) counts. */
static void dilate_disk(const uint8_t *in, uint8_t *out, int w, int h, int r,
                        bool inv, int32_t *pre, int threads) {
    int hw[33];
    for (int dy = -r; dy <= r; dy++) {
        int k = 0;
        while ((k + 1) * (k + 1) + dy * dy <= r * r)
            k++;
        hw[dy + r] = k;
    }
    const size_t pw = (size_t)w + 1;
#pragma omp parallel num_threads(threads)
    {
#pragma omp for schedule(static)
        for (int y = 0; y < h; y++) {
            const uint8_t *row = in + (size_t)y * w;
            int32_t *p = pre + (size_t)y * pw;
            p[0] = 0;
            for (int x = 0; x < w; x++)
                p[x + 1] = p[x] + ((row[x] != 0) != inv);
        }
#pragma omp for schedule(static)
        for (int y = 0; y < h; y++) {
            int dy0 = y - r < 0 ? -y : -r;
            int dy1 = y + r >= h ? h - 1 - y : r;
            uint8_t *o = out + (size_t)y * w;
            for (int x = 0; x < w; x++) {
                bool hit = false;
                for (int dy = dy0; dy <= dy1 && !hit; dy++) {
                    const int32_t *p = pre + (size_t)(y + dy) * pw;
                    int k = hw[dy + r];
                    int a = x - k < 0 ? 0 : x - k;
                    int b = x + k >= w ? w - 1 : x + k;
                    hit = p[b + 1] != p[a];
                }
                o[x] = (uint8_t)(hit != inv);
            }
        }
    }
}

/* Binary closing with a disk (skimage.morphology.binary_closing): dilation
 * with the outside as background, then erosion with the outside as
 * foreground (a pixel stays unless a pixel of the disk inside the image is
 * clear: the dilation of the clear pixels, inverted). */
static void close_disk(uint8_t *m, uint8_t *tmp, int w, int h, int radius,
                       int32_t *pre, int threads) {
    if (radius <= 0)
        return;
    dilate_disk(m, tmp, w, h, radius, false, pre, threads);
    dilate_disk(tmp, m, w, h, radius, true, pre, threads);
}

/* Components of pixels equal to `value` (4-connected). Those smaller than
 * `min_size` (and, when `interior_only`, not touching the border) are set
 * to !value. */
static void drop_small(uint8_t *m, int w, int h, uint8_t value,
                       int64_t min_size, bool interior_only, uint8_t *seen,
                       int32_t *stack, int32_t *rows) {
    const size_t n = (size_t)w * h;
    memset(seen, 0, n);
    for (size_t start = 0; start < n; start++) {
        if (seen[start] || m[start] != value)
            continue;
        /* flood fill, remembering the members in stack[0..top) and
         * their rows in rows[] (no division per pixel) */
        size_t top = 0, head = 0;
        bool border = false;
        rows[top] = (int32_t)(start / (size_t)w);
        stack[top++] = (int32_t)start;
        seen[start] = 1;
        while (head < top) {
            int32_t y = rows[head], i = stack[head++];
            int x = i - y * w;
            if (x == 0 || y == 0 || x == w - 1 || y == h - 1)
                border = true;
            const int32_t nb[4] = {x > 0 ? i - 1 : -1, x < w - 1 ? i + 1 : -1,
                                   y > 0 ? i - w : -1, y < h - 1 ? i + w : -1};
            const int32_t ny[4] = {y, y, y - 1, y + 1};
            for (int k = 0; k < 4; k++)
                if (nb[k] >= 0 && !seen[nb[k]] && m[nb[k]] == value) {
                    seen[nb[k]] = 1;
                    rows[top] = ny[k];
                    stack[top++] = nb[k];
                }
        }
        if ((int64_t)top < min_size && !(interior_only && border))
            for (size_t k = 0; k < top; k++)
                m[stack[k]] = (uint8_t)!value;
    }
}

bool sp_mask_compute(sp_slide *s, const sp_mask_opts *p, int threads,
                     sp_mask *out, sp_error *err) {
    sp_mask_opts def;
    if (!p) {
        sp_mask_opts_default(&def);
        p = &def;
    }
    memset(out, 0, sizeof *out);
    const char *path = sp_slide_path(s);
    if (!(p->downsample >= 1.0 && p->downsample <= 1024) || p->threshold < -1 ||
        p->threshold > 254 || p->min_threshold < 0 || p->min_threshold > 254 ||
        p->close_radius < 0 || p->close_radius > 16 ||
        !(p->max_hole_um2 >= 0) || !(p->min_object_um2 >= 0) ||
        p->max_hole_px < 0 || p->min_object_px < 0)
        return sp_error_set(err, SP_ERR_USAGE, path,
                            "tissue mask: bad parameters (downsample %g, "
                            "threshold %d, close radius %d)",
                            p->downsample, p->threshold, p->close_radius);
    if (threads <= 0)
        threads = sp_default_threads();
    int level = sp_slide_best_level(s, p->downsample);
    const sp_level *l = sp_slide_level(s, level);
    int f = (int)floor(p->downsample / l->downsample + 0.5);
    if (f < 1)
        f = 1;
    int64_t mw64 = (l->width + f - 1) / f, mh64 = (l->height + f - 1) / f;
    if (mw64 <= 0 || mh64 <= 0 || mw64 * mh64 > INT32_MAX / 2)
        return sp_error_set(err, SP_ERR_USAGE, path,
                            "tissue mask: %lld x %lld mask pixels is out of "
                            "range; choose another downsample",
                            (long long)mw64, (long long)mh64);
    const int mw = (int)mw64, mh = (int)mh64;
    const size_t n = (size_t)mw * mh;
    bool ok = false;
    uint8_t *thumb = malloc(n * 3), *m = malloc(n), *tmp = malloc(n);
    /* the flood fill's stack and rows, and the closing's row prefix
     * counts (in the stack) */
    int32_t *stack = malloc((2 * n + (size_t)mh) * sizeof *stack);
    if (!thumb || !m || !tmp || !stack) {
        sp_error_set(err, SP_ERR_NOMEM, path, "tissue mask: out of memory");
        goto out;
    }
    if (!read_thumbnail(s, level, f, mw, mh, threads, thumb, err))
        goto out;
    uint64_t hist[256] = {0};
    for (size_t i = 0; i < n; i++) {
        m[i] =
            (uint8_t)sp__sat8(thumb[3 * i], thumb[3 * i + 1], thumb[3 * i + 2]);
        hist[m[i]]++;
    }
    out->otsu = sp_otsu_u8(hist);
    out->threshold = p->threshold >= 0              ? p->threshold
                     : out->otsu > p->min_threshold ? out->otsu
                                                    : p->min_threshold;
    for (size_t i = 0; i < n; i++)
        m[i] = m[i] > out->threshold;
    close_disk(m, tmp, mw, mh, p->close_radius, stack, threads);
    out->downsample = f * l->downsample;
    double mx, my;
    int64_t max_hole = p->max_hole_px, min_obj = p->min_object_px;
    if (sp_slide_mpp(s, &mx, &my) && mx > 0 && my > 0) {
        out->mask_um2_per_px = out->downsample * out->downsample * mx * my;
        max_hole = (int64_t)ceil(p->max_hole_um2 / out->mask_um2_per_px);
        min_obj = (int64_t)ceil(p->min_object_um2 / out->mask_um2_per_px);
    }
    drop_small(m, mw, mh, 0, max_hole, true, tmp, stack, stack + n);
    drop_small(m, mw, mh, 1, min_obj, false, tmp, stack, stack + n);
    for (size_t i = 0; i < n; i++)
        m[i] = m[i] ? 255 : 0;
    out->width = mw;
    out->height = mh;
    out->level = level;
    out->factor = f;
    out->data = m;
    m = NULL;
    if (f == 1 && mw <= 4096 && mh <= 4096) { /* the level itself */
        out->rgb = thumb;
        thumb = NULL;
    }
    ok = true;
out:
    free(stack);
    free(tmp);
    free(m);
    free(thumb);
    if (!ok)
        memset(out, 0, sizeof *out);
    return ok;
}
