/* On-the-fly Deep Zoom tiles: one tile rendered on demand with the same
 * geometry, the same 2x2 box cascade (sp__shrink_row) and the same encoder
 * (sp__codec) as the streaming pyramid, so a tile rendered here is
 * byte-identical to the one sp_pyramid writes -- as long as the region it
 * covers is read from level 0.
 *
 * A tile of Deep Zoom level `dz` is d = N-1-dz halvings below level 0, so
 * it covers up to (T+2*O) * 2^d level-0 pixels per side. Past
 * SP_RENDER_EXACT_MAX_PIXELS level-0 pixels the cascade starts instead from
 * a native slide level: the sharpest one whose region is at most
 * SP_RENDER_NATIVE_MAX_PIXELS (else the coarsest one not above the tile's
 * scale). A native level whose downsample is a power of two within 1% is
 * cascaded from there; any other is box-resampled straight to the tile.
 * Such tiles are close to the pre-built ones, not byte-identical (the
 * scanner's own downsampled level differs from a box cascade of level 0),
 * and cost about as much as a full-resolution tile. */
#include "tiler_private.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

bool sp_tile_dz_geometry(int64_t width, int64_t height, int tile_size,
                         int overlap, int dz_level, int64_t col, int64_t row,
                         sp_tile_rect *out) {
    if (width <= 0 || height <= 0 || tile_size < 1 || overlap < 0)
        return false;
    int n = sp__dzi_level_count(width, height);
    if (dz_level < 0 || dz_level >= n || col < 0 || row < 0)
        return false;
    int d = n - 1 - dz_level;
    int64_t w = width, h = height;
    for (int i = 0; i < d; i++) {
        w = (w + 1) / 2;
        h = (h + 1) / 2;
    }
    int64_t T = tile_size, O = overlap;
    int64_t cols = (w + T - 1) / T, rows = (h + T - 1) / T;
    if (col >= cols || row >= rows)
        return false;
    int64_t x0 = col * T - (col > 0 ? O : 0), y0 = row * T - (row > 0 ? O : 0);
    int64_t x1 = (col + 1) * T + O, y1 = (row + 1) * T + O;
    out->shrinks = d;
    out->level_width = w;
    out->level_height = h;
    out->cols = cols;
    out->rows = rows;
    out->x = x0;
    out->y = y0;
    out->w = (x1 < w ? x1 : w) - x0;
    out->h = (y1 < h ? y1 : h) - y0;
    return true;
}

int sp_tile_dz_level_count(int64_t width, int64_t height) {
    return sp__dzi_level_count(width, height);
}

bool sp_tile_encode(sp_tile_format format, int quality, const uint8_t *rgb,
                    int w, int h, int64_t pitch, sp_buf *out, sp_error *err) {
    const sp_codec_ops *c = sp__codec(format);
    if (!c)
        return sp_error_set(err, SP_ERR_USAGE, NULL, "unknown tile format");
    sp_codec_state *st = c->create(quality);
    if (!st)
        return sp_error_set(err, SP_ERR_NOMEM, NULL,
                            "cannot start the %s encoder", c->name);
    const uint8_t *enc;
    size_t n;
    char why[256];
    bool ok = c->encode(st, rgb, w, h, pitch, &enc, &n, why, sizeof why);
    if (ok) {
        sp_buf_reset(out);
        sp_buf_append(out, enc, n);
        if (out->oom)
            ok = sp_error_set(err, SP_ERR_NOMEM, NULL, "out of memory");
    } else {
        sp_error_set(err, SP_ERR_INTERNAL, NULL, "%s", why);
    }
    c->destroy(st);
    return ok;
}

/* Halve a packed w x h RGB image (rows w*3 apart) into `dst` (rows
 * ceil(w/2)*3 apart), exactly as the pyramid does. */
static void cascade_step(const uint8_t *src, uint8_t *dst, int64_t *w,
                         int64_t *h) {
    int64_t iw = *w, ih = *h, ow = (iw + 1) / 2, oh = (ih + 1) / 2;
    for (int64_t k = 0; k < oh; k++) {
        const uint8_t *a = src + 2 * k * iw * 3;
        const uint8_t *b = 2 * k + 1 < ih ? a + iw * 3 : a;
        sp__shrink_row(a, b, iw, dst + k * ow * 3);
    }
    *w = ow;
    *h = oh;
}

/* Box-resample sw x sh to dw x dh (area average over covered pixels). */
static void box_resample(const uint8_t *src, int64_t sw, int64_t sh,
                         uint8_t *dst, int64_t dw, int64_t dh) {
    double fx = (double)sw / (double)dw, fy = (double)sh / (double)dh;
    for (int64_t y = 0; y < dh; y++) {
        int64_t sy0 = (int64_t)floor(y * fy), sy1 = (int64_t)ceil((y + 1) * fy);
        if (sy1 > sh)
            sy1 = sh;
        if (sy1 <= sy0)
            sy1 = sy0 + 1 <= sh ? sy0 + 1 : sh, sy0 = sy1 - 1;
        for (int64_t x = 0; x < dw; x++) {
            int64_t sx0 = (int64_t)floor(x * fx),
                    sx1 = (int64_t)ceil((x + 1) * fx);
            if (sx1 > sw)
                sx1 = sw;
            if (sx1 <= sx0)
                sx1 = sx0 + 1 <= sw ? sx0 + 1 : sw, sx0 = sx1 - 1;
            uint32_t acc[3] = {0, 0, 0}, n = 0;
            for (int64_t yy = sy0; yy < sy1; yy++)
                for (int64_t xx = sx0; xx < sx1; xx++) {
                    const uint8_t *p = src + (yy * sw + xx) * 3;
                    acc[0] += p[0];
                    acc[1] += p[1];
                    acc[2] += p[2];
                    n++;
                }
            uint8_t *o = dst + (y * dw + x) * 3;
            for (int c = 0; c < 3; c++)
                o[c] = (uint8_t)((acc[c] + n / 2) / (n ? n : 1));
        }
    }
}

bool sp_tile_render(sp_reader *r, const sp_slide *s, const sp_tile_opts *o,
                    int dz_level, int64_t col, int64_t row, sp_buf *out,
                    sp_error *err) {
    const char *path = sp_slide_path(s);
    if (o->container != SP_CONTAINER_DZI)
        return sp_error_set(err, SP_ERR_USAGE, path,
                            "on-the-fly tiles are Deep Zoom tiles only");
    int T = o->tile_size ? o->tile_size : 254;
    if (T < 1 || T > 8192 || o->overlap < 0 || o->overlap > T / 2 ||
        o->quality < 1 || o->quality > 100)
        return sp_error_set(err, SP_ERR_USAGE, path, "invalid tile parameters");
    const sp_level *l0 = sp_slide_level(s, 0);
    const int64_t W = l0->width, H = l0->height;
    sp_tile_rect t;
    if (!sp_tile_dz_geometry(W, H, T, o->overlap, dz_level, col, row, &t))
        return sp_error_set(err, SP_ERR_USAGE, path, "no tile %d/%lld_%lld",
                            dz_level, (long long)col, (long long)row);
    const int d = t.shrinks;
    /* the level-0 region, clipped to the image */
    int64_t X0 = t.x << d, Y0 = t.y << d;
    int64_t X1 = (t.x + t.w) << d, Y1 = (t.y + t.h) << d;
    if (X1 > W)
        X1 = W;
    if (Y1 > H)
        Y1 = H;

    /* pick the level to start from */
    int level = 0, start = 0; /* slide level, cascade level it stands for */
    double ds = 1.0;
    if ((X1 - X0) * (Y1 - Y0) > SP_RENDER_EXACT_MAX_PIXELS) {
        int nl = sp_slide_level_count(s);
        for (int k = 1; k < nl; k++) {
            const sp_level *lk = sp_slide_level(s, k);
            if (lk->downsample > ldexp(1.0, d) * 1.01)
                break;
            level = k;
            ds = lk->downsample;
            /* the sharpest native level that reads at most ~4 tiles'
             * worth, else the coarsest one not above the tile's scale */
            if ((double)(X1 - X0) * (double)(Y1 - Y0) / (ds * ds) <=
                (double)SP_RENDER_NATIVE_MAX_PIXELS)
                break;
        }
        if (level > 0) {
            int e = (int)lround(log2(ds));
            if (e >= 0 && e <= d &&
                fabs(ds - ldexp(1.0, e)) <= 0.01 * ldexp(1.0, e))
                start = e;
            else
                start = -1; /* resample */
        }
    }

    int64_t rw, rh; /* region read, in pixels of the level read */
    if (start >= 0) {
        int64_t We = W, He = H;
        for (int i = 0; i < start; i++) {
            We = (We + 1) / 2;
            He = (He + 1) / 2;
        }
        int64_t ex0 = t.x << (d - start), ey0 = t.y << (d - start);
        int64_t ex1 = (t.x + t.w) << (d - start), ey1 = (t.y + t.h)
                                                        << (d - start);
        rw = (ex1 < We ? ex1 : We) - ex0;
        rh = (ey1 < He ? ey1 : He) - ey0;
    } else {
        rw = (int64_t)ceil((double)(X1 - X0) / ds);
        rh = (int64_t)ceil((double)(Y1 - Y0) / ds);
    }
    if (rw < 1)
        rw = 1;
    if (rh < 1)
        rh = 1;
    uint8_t *px = malloc((size_t)(rw * rh * 3));
    uint8_t *tile = NULL;
    bool ok = false;
    if (!px) {
        sp_error_set(err, SP_ERR_NOMEM, path, "out of memory");
        goto out;
    }
    if (!sp_reader_read(r, level, X0, Y0, rw, rh, px, err))
        goto out;
    const uint8_t *img = px;
    if (start >= 0) {
        int64_t w = rw, h = rh;
        if (start < d) {
            tile = malloc((size_t)(((rw + 1) / 2) * ((rh + 1) / 2) * 3));
            if (!tile) {
                sp_error_set(err, SP_ERR_NOMEM, path, "out of memory");
                goto out;
            }
        }
        uint8_t *a = px, *b = tile;
        for (int i = start; i < d; i++) {
            cascade_step(a, b, &w, &h);
            uint8_t *tmp = a;
            a = b;
            b = tmp;
        }
        img = a;
        if (w != t.w || h != t.h) {
            sp_error_set(err, SP_ERR_INTERNAL, path,
                         "tile %d/%lld_%lld: cascade gave %lldx%lld, want "
                         "%lldx%lld",
                         dz_level, (long long)col, (long long)row, (long long)w,
                         (long long)h, (long long)t.w, (long long)t.h);
            goto out;
        }
    } else {
        tile = malloc((size_t)(t.w * t.h * 3));
        if (!tile) {
            sp_error_set(err, SP_ERR_NOMEM, path, "out of memory");
            goto out;
        }
        box_resample(px, rw, rh, tile, t.w, t.h);
        img = tile;
    }
    if (!sp_tile_encode(o->format, o->quality, img, (int)t.w, (int)t.h, t.w * 3,
                        out, err)) {
        sp_error err2 = {0};
        sp_error_set(&err2, err->code, path, "%s", err->msg);
        *err = err2;
        goto out;
    }
    ok = true;
out:
    free(tile);
    free(px);
    return ok;
}
