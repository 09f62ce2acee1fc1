/* On-the-fly Deep Zoom tiles: one tile rendered on demand with the same
 * geometry, the same 2x2 box cascade (sp__shrink_row) and the same encoder
 * (sp__codec) as the streaming pyramid, so a tile rendered here is
 * byte-identical to the one sp_pyramid writes -- as long as the region it
 * covers is read from level 0.
 *
 * A tile of Deep Zoom level `dz` is d = N-1-dz halvings below level 0, so
 * it covers up to (T+2*O) * 2^d level-0 pixels per side. Every read is
 * bounded:
 *   - up to SP_RENDER_EXACT_MAX_PIXELS of level 0: read from level 0 and
 *     cascaded (exact);
 *   - past that, a native slide level when one reads at most
 *     SP_RENDER_EXACT_MAX_PIXELS (the sharpest one whose region is at most
 *     SP_RENDER_NATIVE_MAX_PIXELS, else the coarsest one not above the
 *     tile's scale): cascaded when its downsample is a power of two within
 *     1%, else box-resampled (close to the pyramid's tile, not identical);
 *   - else level 0 again, read in bands of SP_RENDER_BAND_PIXELS through a
 *     streaming cascade that keeps one row per halving (exact; memory
 *     bounded, time grows 4x per level: callers serve such levels from an
 *     overview instead).
 * An overview (sp_tile_overview) is one whole Deep Zoom level, built once
 * by streaming level 0 in column stripes and bands through the same
 * cascade: tiles of that level and every lower one are cut from it,
 * byte-identical to the pyramid's. */
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
                    int w, int h, size_t stride, sp_buf *out, sp_error *err) {
    const sp__codec_ops *c = sp__codec(format);
    if (!c)
        return sp_error_set(err, SP_ERR_USAGE, NULL, "unknown tile format");
    sp__codec_state *st = c->create(quality);
    if (!st)
        return sp_error_set(err, SP_ERR_NOMEM, NULL,
                            "cannot start the %s encoder", c->name);
    const uint8_t *enc;
    size_t n;
    char why[256];
    bool ok = c->encode(st, rgb, w, h, stride, &enc, &n, why, sizeof why);
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

/* ---- the streaming cascade --------------------------------------------- */

/* Rows of a w0-wide image go in at the top, one at a time, in order; rows
 * d halvings down come out into `out` (rows `out_stride` bytes apart).
 * Each level holds one row waiting for its pair, so memory is about three
 * input rows whatever the height; the result equals d halvings of the whole
 * image by the pyramid (an odd last row pairs with itself). */
typedef struct {
    int d;
    int64_t w[SP_TILER_MAX_LEVELS + 1];
    uint8_t *pend[SP_TILER_MAX_LEVELS]; /* level i's waiting row */
    bool has[SP_TILER_MAX_LEVELS];
    uint8_t *tmp[SP_TILER_MAX_LEVELS + 1]; /* a shrunk row of level i */
    uint8_t *mem;
    uint8_t *out;
    int64_t out_stride, out_rows, out_cap;
} cascade;

static bool cascade_init(cascade *c, int d, int64_t w0, uint8_t *out,
                         int64_t out_stride, int64_t out_cap) {
    memset(c, 0, sizeof *c);
    if (d < 0 || d >= SP_TILER_MAX_LEVELS)
        return false;
    c->d = d;
    c->w[0] = w0;
    size_t total = 0;
    for (int i = 0; i < d; i++) {
        c->w[i + 1] = (c->w[i] + 1) / 2;
        total += (size_t)(c->w[i] + c->w[i + 1]) * 3;
    }
    c->out = out;
    c->out_stride = out_stride;
    c->out_cap = out_cap;
    if (d == 0)
        return true;
    c->mem = malloc(total);
    if (!c->mem)
        return false;
    uint8_t *p = c->mem;
    for (int i = 0; i < d; i++) {
        c->pend[i] = p;
        p += c->w[i] * 3;
        c->tmp[i + 1] = p;
        p += c->w[i + 1] * 3;
    }
    return true;
}

static void cascade_free(cascade *c) {
    free(c->mem);
    c->mem = NULL;
}

static void cascade_push(cascade *c, int i, const uint8_t *row) {
    for (;;) {
        if (i == c->d) {
            if (c->out_rows < c->out_cap)
                memcpy(c->out + c->out_rows * c->out_stride, row,
                       (size_t)c->w[i] * 3);
            c->out_rows++;
            return;
        }
        if (!c->has[i]) {
            memcpy(c->pend[i], row, (size_t)c->w[i] * 3);
            c->has[i] = true;
            return;
        }
        sp__shrink_row(c->pend[i], row, c->w[i], c->tmp[i + 1]);
        c->has[i] = false;
        row = c->tmp[i + 1];
        i++;
    }
}

/* After the last row: pair each level's odd last row with itself. */
static void cascade_flush(cascade *c) {
    for (int i = 0; i < c->d; i++)
        if (c->has[i]) {
            sp__shrink_row(c->pend[i], c->pend[i], c->w[i], c->tmp[i + 1]);
            c->has[i] = false;
            cascade_push(c, i + 1, c->tmp[i + 1]);
        }
}

/* ---- choosing what to read ---------------------------------------------- */

typedef struct {
    int level;  /* slide level read */
    int start;  /* cascade level it stands for; -1: box-resample */
    double ds;  /* its downsample */
    bool exact; /* level 0 */
} render_src;

/* Where a tile whose level-0 region is X0..X1 x Y0..Y1, d halvings down,
 * is read from: level 0 when the region is at most
 * SP_RENDER_EXACT_MAX_PIXELS; else the sharpest native level whose region
 * is at most SP_RENDER_NATIVE_MAX_PIXELS (else the coarsest one not above
 * the tile's scale), when what it reads there is at most
 * SP_RENDER_EXACT_MAX_PIXELS; else level 0 again, read in bands. */
static render_src pick_source(const sp_slide *s, int d, int64_t X0, int64_t Y0,
                              int64_t X1, int64_t Y1) {
    render_src r = {.level = 0, .start = 0, .ds = 1.0, .exact = true};
    double area = (double)(X1 - X0) * (double)(Y1 - Y0);
    if (area <= (double)SP_RENDER_EXACT_MAX_PIXELS)
        return r;
    int nl = sp_slide_level_count(s), level = 0;
    double ds = 1.0;
    for (int k = 1; k < nl; k++) {
        const sp_level *lk = sp_slide_level(s, k);
        if (lk->downsample > ldexp(1.0, d) * 1.01)
            break;
        level = k;
        ds = lk->downsample;
        if (area / (ds * ds) <= (double)SP_RENDER_NATIVE_MAX_PIXELS)
            break;
    }
    /* a native level that still reads more than the bound is no better
     * than level 0 in bands (which at least gives the exact tile) */
    if (level == 0 || area / (ds * ds) > (double)SP_RENDER_EXACT_MAX_PIXELS)
        return r;
    r.exact = false;
    r.level = level;
    r.ds = ds;
    int e = (int)lround(log2(ds));
    if (e >= 0 && e <= d && fabs(ds - ldexp(1.0, e)) <= 0.01 * ldexp(1.0, e))
        r.start = e;
    else
        r.start = -1;
    return r;
}

static int tile_size_of(const sp_tile_opts *o) {
    return o->tile_size ? o->tile_size : 254;
}

static bool check_opts(const sp_tile_opts *o, const char *path, sp_error *err) {
    if (o->container != SP_CONTAINER_DZI)
        return sp_error_set(err, SP_ERR_USAGE, path,
                            "on-the-fly tiles are Deep Zoom tiles only");
    int T = tile_size_of(o);
    if (T < 1 || T > 8192 || o->overlap < 0 || o->overlap > T / 2 ||
        o->quality < 1 || o->quality > 100)
        return sp_error_set(err, SP_ERR_USAGE, path, "invalid tile parameters");
    return true;
}

sp_render_path sp_tile_render_path(const sp_slide *s, const sp_tile_opts *o,
                                   int dz_level) {
    const sp_level *l0 = sp_slide_level(s, 0);
    int n = sp__dzi_level_count(l0->width, l0->height);
    int d = n - 1 - dz_level;
    if (d < 0)
        d = 0;
    if (d >= 40)
        d = 40;
    int64_t e = (int64_t)(tile_size_of(o) + 2 * o->overlap);
    int64_t w = e << d, h = e << d;
    if (w > l0->width)
        w = l0->width;
    if (h > l0->height)
        h = l0->height;
    render_src r = pick_source(s, d, 0, 0, w, h);
    if (!r.exact)
        return SP_RENDER_NATIVE;
    return (double)w * (double)h <= (double)SP_RENDER_EXACT_MAX_PIXELS
               ? SP_RENDER_EXACT
               : SP_RENDER_WIDE;
}

/* Encode `img` (t->w x t->h) into out, naming the slide on failure. */
static bool encode_tile(const sp_tile_opts *o, const uint8_t *img,
                        const sp_tile_rect *t, const char *path, sp_buf *out,
                        sp_error *err) {
    if (sp_tile_encode(o->format, o->quality, img, (int)t->w, (int)t->h,
                       t->w * 3, out, err))
        return true;
    sp_error err2 = {0};
    sp_error_set(&err2, err->code, path, "%s", err->msg);
    *err = err2;
    return false;
}

/* Level 0 rows Y0..Y1 of columns X0..X0+rw, read in bands of at most
 * SP_RENDER_BAND_PIXELS (aligned to the native tile rows when they fit)
 * and cascaded d times into `tile`. */
static bool render_level0(sp_reader *r, const sp_slide *s, int d, int64_t X0,
                          int64_t Y0, int64_t rw, int64_t Y1,
                          const sp_tile_rect *t, uint8_t *tile,
                          const char *path, sp_error *err) {
    const sp_level *l0 = sp_slide_level(s, 0);
    int64_t th = l0->tile_height > 0 ? l0->tile_height : 256;
    int64_t nb = SP_RENDER_BAND_PIXELS / rw;
    if (nb < 1)
        nb = 1;
    if (nb > Y1 - Y0)
        nb = Y1 - Y0;
    cascade c;
    uint8_t *band = malloc((size_t)(nb * rw * 3));
    bool ok = false;
    if (!band || !cascade_init(&c, d, rw, tile, t->w * 3, t->h)) {
        free(band);
        return sp_error_set(err, SP_ERR_NOMEM, path, "out of memory");
    }
    for (int64_t y = Y0; y < Y1;) {
        int64_t next = y + nb;
        if (nb >= th && Y1 - y > nb)
            next = next / th * th; /* end on a native tile row */
        if (next > Y1)
            next = Y1;
        if (!sp_reader_read(r, 0, X0, y, rw, next - y, band, err))
            goto out;
        for (int64_t k = 0; k < next - y; k++)
            cascade_push(&c, 0, band + k * rw * 3);
        y = next;
    }
    cascade_flush(&c);
    if (c.w[d] != t->w || c.out_rows != t->h) {
        sp_error_set(err, SP_ERR_INTERNAL, path,
                     "cascade gave %lldx%lld, want %lldx%lld",
                     (long long)c.w[d], (long long)c.out_rows, (long long)t->w,
                     (long long)t->h);
        goto out;
    }
    ok = true;
out:
    cascade_free(&c);
    free(band);
    return ok;
}

/* A native level: the region read whole (at most
 * SP_RENDER_EXACT_MAX_PIXELS), cascaded or box-resampled into `tile`. */
static bool render_native(sp_reader *r, const sp_slide *s,
                          const render_src *src, int d, int64_t X0, int64_t Y0,
                          int64_t X1, int64_t Y1, const sp_tile_rect *t,
                          uint8_t *tile, const char *path, sp_error *err) {
    const sp_level *l0 = sp_slide_level(s, 0);
    int64_t rw, rh;
    if (src->start >= 0) {
        int64_t We = l0->width, He = l0->height;
        for (int i = 0; i < src->start; i++) {
            We = (We + 1) / 2;
            He = (He + 1) / 2;
        }
        int e = d - src->start;
        int64_t ex0 = t->x << e, ey0 = t->y << e;
        int64_t ex1 = (t->x + t->w) << e, ey1 = (t->y + t->h) << e;
        rw = (ex1 < We ? ex1 : We) - ex0;
        rh = (ey1 < He ? ey1 : He) - ey0;
    } else {
        rw = (int64_t)ceil((double)(X1 - X0) / src->ds);
        rh = (int64_t)ceil((double)(Y1 - Y0) / src->ds);
    }
    if (rw < 1)
        rw = 1;
    if (rh < 1)
        rh = 1;
    uint8_t *px = malloc((size_t)(rw * rh * 3));
    if (!px)
        return sp_error_set(err, SP_ERR_NOMEM, path, "out of memory");
    bool ok = false;
    if (!sp_reader_read(r, src->level, X0, Y0, rw, rh, px, err))
        goto out;
    if (src->start >= 0) {
        cascade c;
        if (!cascade_init(&c, d - src->start, rw, tile, t->w * 3, t->h)) {
            sp_error_set(err, SP_ERR_NOMEM, path, "out of memory");
            goto out;
        }
        for (int64_t k = 0; k < rh; k++)
            cascade_push(&c, 0, px + k * rw * 3);
        cascade_flush(&c);
        bool fits = c.w[c.d] == t->w && c.out_rows == t->h;
        cascade_free(&c);
        if (!fits) {
            sp_error_set(err, SP_ERR_INTERNAL, path,
                         "native cascade does not give the tile's size");
            goto out;
        }
    } else {
        box_resample(px, rw, rh, tile, t->w, t->h);
    }
    ok = true;
out:
    free(px);
    return ok;
}

bool sp_tile_render(sp_reader *r, const sp_slide *s, const sp_tile_opts *o,
                    int dz_level, int64_t col, int64_t row, sp_buf *out,
                    sp_error *err) {
    const char *path = sp_slide_path(s);
    if (!check_opts(o, path, err))
        return false;
    const sp_level *l0 = sp_slide_level(s, 0);
    const int64_t W = l0->width, H = l0->height;
    sp_tile_rect t;
    if (!sp_tile_dz_geometry(W, H, tile_size_of(o), o->overlap, dz_level, col,
                             row, &t))
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
    render_src src = pick_source(s, d, X0, Y0, X1, Y1);
    uint8_t *tile = malloc((size_t)(t.w * t.h * 3));
    if (!tile)
        return sp_error_set(err, SP_ERR_NOMEM, path, "out of memory");
    bool ok =
        src.exact
            ? render_level0(r, s, d, X0, Y0, X1 - X0, Y1, &t, tile, path, err)
            : render_native(r, s, &src, d, X0, Y0, X1, Y1, &t, tile, path, err);
    if (ok)
        ok = encode_tile(o, tile, &t, path, out, err);
    free(tile);
    return ok;
}

/* ---- overviews ---------------------------------------------------------- */

struct sp_tile_overview {
    int64_t W, H; /* level 0 */
    int dz_level, shrinks;
    int64_t w, h; /* the image */
    uint8_t *px;
};

int sp_tile_overview_level(int64_t width, int64_t height, int64_t max_pixels) {
    int n = sp__dzi_level_count(width, height);
    int64_t w = width, h = height;
    for (int lv = n - 1; lv > 0; lv--) {
        if ((double)w * (double)h <= (double)max_pixels)
            return lv;
        w = (w + 1) / 2;
        h = (h + 1) / 2;
    }
    return 0;
}

size_t sp_tile_overview_bytes(int64_t width, int64_t height, int dz_level) {
    int n = sp__dzi_level_count(width, height);
    int64_t w = width, h = height;
    for (int i = 0; i < n - 1 - dz_level; i++) {
        w = (w + 1) / 2;
        h = (h + 1) / 2;
    }
    return (size_t)(w * h * 3);
}

typedef struct {
    sp_tile_overview *v;
    int64_t sw; /* stripe width, a multiple of 2^shrinks */
    int stripe; /* the stripe the cascade is on; -1 none */
    cascade c;
    bool live;
} ov_build;

static bool ov_start_stripe(ov_build *b, int stripe) {
    sp_tile_overview *v = b->v;
    if (b->live) {
        cascade_flush(&b->c);
        cascade_free(&b->c);
        b->live = false;
    }
    int64_t x0 = stripe * b->sw, x1 = x0 + b->sw < v->W ? x0 + b->sw : v->W;
    if (!cascade_init(&b->c, v->shrinks, x1 - x0,
                      v->px + (x0 >> v->shrinks) * 3, v->w * 3, v->h))
        return false;
    b->stripe = stripe;
    b->live = true;
    return true;
}

static bool ov_band(void *user, int stripe, const uint8_t *rgb, size_t stride,
                    int64_t y0, int64_t rows, sp_error *err) {
    (void)y0;
    ov_build *b = user;
    if ((stripe != b->stripe || !b->live) && !ov_start_stripe(b, stripe))
        return sp_error_set(err, SP_ERR_NOMEM, NULL, "out of memory");
    for (int64_t k = 0; k < rows; k++)
        cascade_push(&b->c, 0, rgb + k * stride);
    return true;
}

bool sp_tile_overview_build(sp_slide *s, const sp_tile_opts *o, int dz_level,
                            int threads, sp_tile_overview **out,
                            sp_error *err) {
    *out = NULL;
    const char *path = sp_slide_path(s);
    if (!check_opts(o, path, err))
        return false;
    const sp_level *l0 = sp_slide_level(s, 0);
    int n = sp__dzi_level_count(l0->width, l0->height);
    if (dz_level < 0 || dz_level >= n)
        return sp_error_set(err, SP_ERR_USAGE, path, "no Deep Zoom level %d",
                            dz_level);
    sp_tile_overview *v = calloc(1, sizeof *v);
    if (!v)
        return sp_error_set(err, SP_ERR_NOMEM, path, "out of memory");
    v->W = l0->width;
    v->H = l0->height;
    v->dz_level = dz_level;
    v->shrinks = n - 1 - dz_level;
    v->w = v->W;
    v->h = v->H;
    for (int i = 0; i < v->shrinks; i++) {
        v->w = (v->w + 1) / 2;
        v->h = (v->h + 1) / 2;
    }
    v->px = malloc((size_t)(v->w * v->h * 3));
    if (!v->px) {
        free(v);
        return sp_error_set(err, SP_ERR_NOMEM, path, "out of memory");
    }
    /* column stripes of SP_OVERVIEW_STRIPE (or 2^shrinks) level-0 pixels:
     * a multiple of 2^shrinks, so every stripe's cascade is the image's */
    ov_build b = {.v = v, .stripe = -1};
    int64_t unit = INT64_C(1) << v->shrinks;
    b.sw = (SP_OVERVIEW_STRIPE + unit - 1) / unit * unit;
    int nst = (int)((v->W + b.sw - 1) / b.sw);
    sp_col_span *spans = malloc((size_t)nst * sizeof *spans);
    bool ok = false;
    if (!spans) {
        sp_error_set(err, SP_ERR_NOMEM, path, "out of memory");
        goto out;
    }
    for (int i = 0; i < nst; i++) {
        spans[i].x0 = i * b.sw;
        spans[i].x1 = spans[i].x0 + b.sw < v->W ? spans[i].x0 + b.sw : v->W;
    }
    sp_band_hooks hooks = {.fn = ov_band, .user = &b};
    if (!sp_band_loop(s, threads > 0 ? threads : 1, o->background,
                      SP_OVERVIEW_BAND_ROWS, spans, nst, &hooks, err))
        goto out;
    if (b.live) {
        cascade_flush(&b.c);
        if (b.c.out_rows != v->h) {
            sp_error_set(err, SP_ERR_INTERNAL, path,
                         "overview: %lld rows, want %lld",
                         (long long)b.c.out_rows, (long long)v->h);
            goto out;
        }
    }
    ok = true;
out:
    if (b.live)
        cascade_free(&b.c);
    free(spans);
    if (!ok) {
        sp_tile_overview_free(v);
        return false;
    }
    *out = v;
    return true;
}

void sp_tile_overview_free(sp_tile_overview *v) {
    if (!v)
        return;
    free(v->px);
    free(v);
}

int sp_tile_overview_dz_level(const sp_tile_overview *v) { return v->dz_level; }

bool sp_tile_overview_render(const sp_tile_overview *v, const sp_tile_opts *o,
                             int dz_level, int64_t col, int64_t row,
                             sp_buf *out, sp_error *err) {
    if (!check_opts(o, NULL, err))
        return false;
    sp_tile_rect t;
    if (dz_level > v->dz_level ||
        !sp_tile_dz_geometry(v->W, v->H, tile_size_of(o), o->overlap, dz_level,
                             col, row, &t))
        return sp_error_set(err, SP_ERR_USAGE, NULL, "no tile %d/%lld_%lld",
                            dz_level, (long long)col, (long long)row);
    int j = v->dz_level - dz_level;
    int64_t x0 = t.x << j, y0 = t.y << j;
    int64_t x1 = (t.x + t.w) << j, y1 = (t.y + t.h) << j;
    if (x1 > v->w)
        x1 = v->w;
    if (y1 > v->h)
        y1 = v->h;
    uint8_t *tile = malloc((size_t)(t.w * t.h * 3));
    cascade c;
    if (!tile || !cascade_init(&c, j, x1 - x0, tile, t.w * 3, t.h)) {
        free(tile);
        return sp_error_set(err, SP_ERR_NOMEM, NULL, "out of memory");
    }
    for (int64_t y = y0; y < y1; y++)
        cascade_push(&c, 0, v->px + (y * v->w + x0) * 3);
    cascade_flush(&c);
    bool ok = c.w[j] == t.w && c.out_rows == t.h;
    cascade_free(&c);
    if (!ok)
        sp_error_set(err, SP_ERR_INTERNAL, NULL,
                     "overview tile %d/%lld_%lld has the wrong size", dz_level,
                     (long long)col, (long long)row);
    else
        ok = encode_tile(o, tile, &t, NULL, out, err);
    free(tile);
    return ok;
}
