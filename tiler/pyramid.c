/* The streaming band pyramid: level-0 rows in, tiles of every level out.
 *
 * Each level keeps the rows that its unfinished tile row still needs
 * (at most T + 2*O plus one incoming band). Rows arriving at a level are
 * shrunk 2x2 (box filter, the edge row/column repeated when the size is
 * odd, as libvips does) into the next level at once, so one read of level
 * 0 feeds every level. After each band, every tile that became complete in
 * any level is encoded and written by one OpenMP team (dynamic schedule),
 * each thread with its own codec and scratch, no lock on the path.
 *
 * A wide image goes in column stripes (T * 2^k level-0 columns, ~16k):
 * each stripe streams levels 0..k over its own columns (plus a margin of
 * O * 2^k for the overlap), so the buffers are as wide as a stripe, not
 * the image; the core columns of its level k go into `tail`, level k whole
 * (1/4^k of the pixels), from which levels k+1.. are built at the end.
 * Every level is the same 2x2 box of the level above as without stripes,
 * so the tiles are byte-identical either way.
 *
 * With passthrough, level 0's tiles are the slide's own and need no
 * pixels; with half_input the caller then pushes level 1 (level 0's JPEG
 * tiles decoded at half size) and level 0 keeps no rows, only the count
 * that makes its tile rows ready in step with level 1's. */
#include "tiler_private.h"

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void sp_tile_opts_default(sp_tile_opts *o) {
    memset(o, 0, sizeof *o);
    o->container = SP_CONTAINER_DZI;
    o->format = SP_TILE_JPEG;
    o->tile_size = 0;
    o->overlap = 1;
    o->quality = 75;
    o->threads = 0;
    memset(o->background, 255, 3);
}

/* sp_tile_passthrough_check, and how level 0 is stored into *st. */
static bool copy_check(const sp_slide *s, const sp_tile_opts *o,
                       sp_stored_tiles *stp, char *why, size_t why_n) {
    const char *cause = NULL;
    sp_stored_tiles st;
    int T = o->tile_size ? o->tile_size : 256;
    if (o->container == SP_CONTAINER_DZI) {
        snprintf(why, why_n,
                 "Deep Zoom tiles overlap their neighbours: only the tiff, "
                 "ome-tiff and dicom containers copy tiles");
        return false;
    }
    if (o->format != SP_TILE_JPEG) {
        snprintf(why, why_n, "the tiles are JPEG: the format must be jpeg");
        return false;
    }
    if (!sp_slide_stored_tiles(s, 0, &st, &cause)) {
        snprintf(why, why_n, "the slide's level 0 cannot be copied: %s", cause);
        return false;
    }
    if (st.tile_width != T || st.tile_height != T) {
        if (st.tile_width == st.tile_height && st.tile_width % 16 == 0)
            snprintf(why, why_n,
                     "the slide's tiles are %lldx%lld, the output's %dx%d: "
                     "use --tile-size %lld",
                     (long long)st.tile_width, (long long)st.tile_height, T, T,
                     (long long)st.tile_width);
        else
            snprintf(why, why_n,
                     "the slide's tiles are %lldx%lld: the output's are "
                     "square, a multiple of 16",
                     (long long)st.tile_width, (long long)st.tile_height);
        return false;
    }
    if (o->container == SP_CONTAINER_DICOM && !st.rgb && st.h_samp == 1 &&
        st.v_samp == 1) {
        snprintf(why, why_n,
                 "the slide's tiles are YCbCr 4:4:4, which the DICOM WSM IOD "
                 "cannot label (no YBR_FULL for JPEG)");
        return false;
    }
    *stp = st;
    return true;
}

bool sp_tile_passthrough_check(const sp_slide *s, const sp_tile_opts *o,
                               char *why, size_t why_n) {
    sp_stored_tiles st;
    return copy_check(s, o, &st, why, why_n);
}

bool sp_tile_half_input(const sp_slide *s, const sp_tile_opts *o) {
    const sp_level *l0 = sp_slide_level(s, 0);
    int T = o->tile_size ? o->tile_size : 256;
    return o->passthrough && o->container != SP_CONTAINER_DZI &&
           sp_slide_can_read_half(s) && (l0->width > T || l0->height > T);
}

bool sp_container_parse(const char *s, sp_container *out) {
    if (strcmp(s, "dzi") == 0 || strcmp(s, "dz") == 0) {
        *out = SP_CONTAINER_DZI;
        return true;
    }
    if (strcmp(s, "tiff") == 0 || strcmp(s, "tif") == 0) {
        *out = SP_CONTAINER_TIFF;
        return true;
    }
    if (strcmp(s, "dicom") == 0 || strcmp(s, "dcm") == 0) {
        *out = SP_CONTAINER_DICOM;
        return true;
    }
    if (strcmp(s, "ome-tiff") == 0 || strcmp(s, "ome-tif") == 0 ||
        strcmp(s, "ometiff") == 0) {
        *out = SP_CONTAINER_OME_TIFF;
        return true;
    }
    return false;
}

const char *sp_container_name(sp_container c) {
    switch (c) {
    case SP_CONTAINER_TIFF: return "tiff";
    case SP_CONTAINER_DICOM: return "dicom";
    case SP_CONTAINER_OME_TIFF: return "ome-tiff";
    case SP_CONTAINER_DZI: break;
    }
    return "dzi";
}

int sp__dzi_level_count(int64_t w, int64_t h) {
    int64_t m = w > h ? w : h;
    int n = 0;
    while (((int64_t)1 << n) < m)
        n++;
    return n + 1; /* levels 0..N, N = ceil(log2(max)) */
}

const char *sp__pyramid_output(const sp_pyramid *p) { return p->output; }

static char *dup_or_null(const char *s) { return s ? strdup(s) : NULL; }

static void pyramid_free(sp_pyramid *p) {
    if (!p)
        return;
    for (int d = 0; d < p->nlevels; d++) {
        free(p->lv[d].buf);
        free(p->lv[d].pending);
        free(p->lv[d].down);
        free(p->lv[d].manifest);
    }
    if (p->pt) {
        for (int t = 0; t < p->threads; t++) {
            if (p->pt[t].codec)
                p->codec->destroy(p->pt[t].codec);
            free(p->pt[t].scratch);
            sp_buf_free(&p->pt[t].stored);
            for (int k = 0; k < SP_SOLID_KEEP; k++)
                sp_buf_free(&p->pt[t].solid[k].enc);
        }
        free(p->pt);
    }
    free(p->bg_tile);
    free(p->tail);
    free(p->output);
    free(p->final_main);
    free(p->src_path);
    free(p->src_vendor);
    free(p->src_quickhash);
    free(p->final_given);
    free(p);
}

void sp_pyramid_abort(sp_pyramid *p) {
    if (!p)
        return;
    if (p->writer)
        p->wops->abort(p->writer);
    p->writer = NULL;
    pyramid_free(p);
}

bool sp__pyramid_bg_tile(sp_pyramid *p, sp_error *err) {
    size_t n = (size_t)p->T * (size_t)p->T * 3;
    uint8_t *px = malloc(n);
    sp__codec_state *st = p->codec->create(p->prm.opts.quality);
    bool ok = false;
    if (!px || !st) {
        sp_error_set(err, SP_ERR_NOMEM, p->output, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < n; i += 3)
        memcpy(px + i, p->prm.opts.background, 3);
    const uint8_t *enc;
    size_t len;
    char why[256];
    if (!p->codec->encode(st, px, p->T, p->T, (int64_t)p->T * 3, &enc, &len,
                          why, sizeof why)) {
        sp_error_set(err, SP_ERR_INTERNAL, p->output, "%s", why);
        goto out;
    }
    p->bg_tile = malloc(len);
    if (!p->bg_tile) {
        sp_error_set(err, SP_ERR_NOMEM, p->output, "out of memory");
        goto out;
    }
    memcpy(p->bg_tile, enc, len);
    p->bg_tile_n = len;
    ok = true;
out:
    if (st)
        p->codec->destroy(st);
    free(px);
    return ok;
}

/* ---- stripes ----------------------------------------------------------- */

/* Stripe cores are T * 2^k level-0 columns (the last one takes the rest):
 * whole tile columns at every level 0..k. One stripe when the image is no
 * wider than 1.5 cores or striping is off. */
static void plan_stripes(sp_pyramid *p, int64_t wish) {
    const int64_t W = p->prm.width, T = p->T;
    p->k = p->nlevels - 1;
    p->nstripes = 1;
    if (wish < 0)
        return;
    if (wish == 0)
        wish = SP_STRIPE_AUTO;
    int k = 1;
    while ((T << k) < wish && k < 40)
        k++;
    const int64_t core = T << k;
    int64_t n = W / core;
    if (W - n * core >= core / 2)
        n++;
    if (n <= 1 || k >= p->nlevels - 1)
        return;
    p->k = k;
    p->nstripes = (int)n;
}

/* Tile columns [c0, c1) stripe `s` writes at level d <= k. */
static void stripe_cols(const sp_pyramid *p, int s, int d, int64_t *c0,
                        int64_t *c1) {
    const int64_t per = (int64_t)1 << (p->k - d), cols = p->lv[d].cols;
    *c0 = s * per;
    *c1 = s == p->nstripes - 1 || (s + 1) * per > cols ? cols : (s + 1) * per;
}

/* Columns [a, b) of level d <= k that stripe `s` needs: its tiles (with
 * their overlap) at level k, and at each level below twice the columns of
 * the level above, which covers that level's own tiles as well. */
static void stripe_window(const sp_pyramid *p, int s, int d, int64_t *a,
                          int64_t *b) {
    int64_t c0, c1;
    stripe_cols(p, s, p->k, &c0, &c1);
    int64_t x0 = c0 * p->T - p->O, x1 = c1 * p->T + p->O;
    x0 = x0 < 0 ? 0 : x0;
    x1 = x1 > p->lv[p->k].w ? p->lv[p->k].w : x1;
    for (int e = p->k - 1; e >= d; e--) {
        x0 *= 2;
        x1 *= 2;
        if (x1 > p->lv[e].w)
            x1 = p->lv[e].w;
    }
    *a = x0;
    *b = x1;
}

/* Give level L the window [x0, x1) and the tile columns [c0, c1), empty. */
static void set_window(sp__plevel *L, int64_t x0, int64_t x1, int64_t c0,
                       int64_t c1) {
    L->x0 = x0;
    L->ww = x1 - x0;
    L->rs = L->ww * 3;
    L->c0 = c0;
    L->c1 = c1;
    L->y0 = L->n = L->start = L->next_row = L->received = 0;
    L->has_pending = false;
}

/* Start stripe s: levels 0..k get its windows. */
static void begin_stripe(sp_pyramid *p, int s) {
    p->stripe = s;
    p->lo = 0;
    p->hi = p->k;
    p->pushed = 0;
    for (int d = 0; d <= p->k; d++) {
        int64_t a, b, c0, c1;
        stripe_window(p, s, d, &a, &b);
        stripe_cols(p, s, d, &c0, &c1);
        set_window(&p->lv[d], a, b, c0, c1);
    }
}

/* The rows the caller pushes in all: level `base`'s height. */
static int64_t base_height(const sp_pyramid *p) { return p->lv[p->base].h; }

/* The current stripe complete and another to come: start it. */
static void next_stripe_if_done(sp_pyramid *p) {
    if (p->pushed == base_height(p) && p->stripe + 1 < p->nstripes)
        begin_stripe(p, p->stripe + 1);
}

int sp_pyramid_stripes(const sp_pyramid *p) { return p->nstripes; }

void sp_pyramid_stripe(const sp_pyramid *p, int i, sp_stripe *out) {
    int64_t c0, c1;
    stripe_window(p, i, 0, &out->x0, &out->x1);
    stripe_cols(p, i, 0, &c0, &c1);
    out->core0 = c0 * p->T;
    out->core1 = c1 * p->T < p->prm.width ? c1 * p->T : p->prm.width;
}

sp_pyramid *sp_pyramid_create(const sp_pyramid_opts *prm, sp_error *err) {
    const sp_tile_opts *o = &prm->opts;
    const char *out = prm->output ? prm->output : "(null)";
    if (!prm->output || !*prm->output) {
        sp_error_set(err, SP_ERR_USAGE, NULL, "no output path given");
        return NULL;
    }
    if (prm->width <= 0 || prm->height <= 0) {
        sp_error_set(err, SP_ERR_USAGE, out, "invalid image size %lldx%lld",
                     (long long)prm->width, (long long)prm->height);
        return NULL;
    }
    /* TIFF, OME-TIFF and DICOM: a fixed grid of whole tiles, no overlap */
    const bool grid = o->container != SP_CONTAINER_DZI;
    int T = o->tile_size ? o->tile_size : (grid ? 256 : 254);
    int O = grid ? 0 : o->overlap;
    if (T < 1 || T > 8192 || O < 0 || O > T / 2) {
        sp_error_set(err, SP_ERR_USAGE, out,
                     "invalid tile size %d / overlap %d (need 1 <= tile size "
                     "<= 8192, 0 <= overlap <= tile size / 2)",
                     T, O);
        return NULL;
    }
    if (grid && (T % 16 != 0 || o->format != SP_TILE_JPEG)) {
        sp_error_set(err, SP_ERR_USAGE, out,
                     "the %s container needs JPEG tiles whose size is a "
                     "multiple of 16 (got %s, %d)",
                     o->container == SP_CONTAINER_DICOM      ? "DICOM"
                     : o->container == SP_CONTAINER_OME_TIFF ? "OME-TIFF"
                                                             : "TIFF",
                     sp_tile_format_ext(o->format), T);
        return NULL;
    }
    if (o->quality < 1 || o->quality > 100) {
        sp_error_set(err, SP_ERR_USAGE, out, "invalid quality %d (1..100)",
                     o->quality);
        return NULL;
    }
    const sp__codec_ops *codec = sp__codec(o->format);
    if (!codec) {
        sp_error_set(err, SP_ERR_USAGE, out, "unknown tile format");
        return NULL;
    }
    if (o->mask && (!o->mask->cells || o->mask->width <= 0 ||
                    o->mask->height <= 0 || !(o->mask->scale > 0))) {
        sp_error_set(err, SP_ERR_USAGE, out, "invalid tissue mask");
        return NULL;
    }
    if (prm->width > INT64_C(1) << 31 || prm->height > INT64_C(1) << 31) {
        sp_error_set(err, SP_ERR_USAGE, out, "image too large");
        return NULL;
    }

    sp_pyramid *p = calloc(1, sizeof *p);
    if (!p) {
        sp_error_set(err, SP_ERR_NOMEM, out, "out of memory");
        return NULL;
    }
    p->t_start = sp_now();
    p->prm = *prm;
    p->output = strdup(prm->output);
    p->src_path = dup_or_null(prm->source.path);
    p->src_vendor = dup_or_null(prm->source.vendor);
    p->src_quickhash = dup_or_null(prm->source.quickhash);
    p->prm.output = p->output;
    p->prm.source.path = p->src_path;
    p->prm.source.vendor = p->src_vendor;
    p->prm.source.quickhash = p->src_quickhash;
    p->final_given = dup_or_null(prm->final_main);
    p->prm.final_main = p->final_given;
    p->T = T;
    p->O = O;
    p->pad_edges = grid;
    p->codec = o->container == SP_CONTAINER_DICOM ? &sp__jpeg420_codec : codec;
    p->wops = o->container == SP_CONTAINER_TIFF       ? &sp__tiff_writer
              : o->container == SP_CONTAINER_OME_TIFF ? &sp__ome_tiff_writer
              : o->container == SP_CONTAINER_DICOM    ? &sp__dicom_writer
                                                      : &sp__dzi_writer;
    p->threads = o->threads > 0 ? o->threads : sp_default_threads();
    if (!p->output)
        goto oom;

    /* levels: d = 0 is full resolution */
    int64_t w = prm->width, h = prm->height;
    int n = grid ? 0 : sp__dzi_level_count(w, h);
    int64_t B = prm->band_rows > 0 ? prm->band_rows : 256;
    p->push_max = B;
    int64_t in_max = B;
    for (int d = 0;; d++) {
        if (d >= SP_TILER_MAX_LEVELS) {
            sp_error_set(err, SP_ERR_USAGE, out, "too many levels");
            goto fail;
        }
        sp__plevel *L = &p->lv[d];
        L->w = w;
        L->h = h;
        L->cols = (w + T - 1) / T;
        L->rows = (h + T - 1) / T;
        /* room for two pushes: the kept rows move down every other one */
        L->cap = 2 * in_max + T + 2 * O + 2;
        L->manifest = calloc((size_t)(L->cols * L->rows), 1);
        if (!L->manifest)
            goto oom;
        p->tiles_total += L->cols * L->rows;
        p->nlevels = d + 1;
        bool last = grid ? (w <= T && h <= T) : (d + 1 >= n);
        if (last)
            break;
        L->down_cap = in_max / 2 + 2;
        in_max = L->down_cap;
        w = (w + 1) / 2;
        h = (h + 1) / 2;
    }
    plan_stripes(p, o->stripe_width);
    /* buffers as wide as the widest window any pass gives each level */
    for (int s = 0; s < p->nstripes; s++)
        for (int d = 0; d <= p->k; d++) {
            int64_t a, b;
            stripe_window(p, s, d, &a, &b);
            if (b - a > p->lv[d].buf_w)
                p->lv[d].buf_w = b - a;
        }
    for (int d = p->k + 1; d < p->nlevels; d++)
        p->lv[d].buf_w = p->lv[d].w;
    if (prm->input_extra > 0) /* wider bands read in place (pyramid_input) */
        p->lv[0].buf_w += prm->input_extra;
    /* half input: level 0 holds no pixels, only its tiles' progress */
    p->base = prm->half_input ? 1 : 0;
    if (prm->half_input && (!o->passthrough || p->nlevels < 2)) {
        sp_error_set(err, SP_ERR_USAGE, out,
                     "half-size input needs passthrough and two levels");
        goto fail;
    }
    if (p->base)
        p->push_max = B / 2;
    for (int d = 0; d < p->nlevels; d++) {
        sp__plevel *L = &p->lv[d];
        if (d < p->base) {
            L->cap = 0;
            continue;
        }
        L->buf = sp_big_alloc((size_t)(L->cap * L->buf_w * 3));
        L->pending = malloc((size_t)(L->buf_w * 3));
        if (!L->buf || !L->pending)
            goto oom;
        if (d + 1 < p->nlevels && d >= p->base) {
            L->down =
                sp_big_alloc((size_t)(L->down_cap * p->lv[d + 1].buf_w * 3));
            if (!L->down)
                goto oom;
        }
    }
    if (p->nstripes > 1) {
        const sp__plevel *K = &p->lv[p->k];
        p->tail = sp_big_alloc((size_t)(K->w * K->h * 3));
        if (!p->tail)
            goto oom;
    }
    if (o->passthrough) {
        char why[300];
        const sp_level *l0 = prm->slide ? sp_slide_level(prm->slide, 0) : NULL;
        if (!l0 || l0->width != prm->width || l0->height != prm->height) {
            sp_error_set(err, SP_ERR_USAGE, out,
                         "passthrough: no slide whose level 0 is the image");
            goto fail;
        }
        if (!copy_check(prm->slide, o, &p->stored0, why, sizeof why)) {
            sp_error_set(err, SP_ERR_USAGE, sp_slide_path(prm->slide),
                         "--passthrough: %s", why);
            goto fail;
        }
        p->copy0 = true;
    }
    begin_stripe(p, 0);
    p->pt = calloc((size_t)p->threads, sizeof *p->pt);
    if (!p->pt)
        goto oom;
    if (p->pad_edges)
        if (!sp__pyramid_bg_tile(p, err))
            goto fail;
    p->writer = p->wops->open(p, err);
    if (!p->writer)
        goto fail;
    return p;
oom:
    sp_error_set(err, SP_ERR_NOMEM, out, "out of memory");
fail:
    pyramid_free(p);
    return NULL;
}

/* ---- shrinking --------------------------------------------------------- */

/* One output row from input rows a and b (b may equal a), w input pixels;
 * an odd last column is paired with itself. Scalar, from pixel pair j0. */
static void shrink_scalar(const uint8_t *restrict a, const uint8_t *restrict b,
                          int64_t w, int64_t j0, uint8_t *restrict out) {
    int64_t pairs = w / 2;
    for (int64_t j = j0; j < pairs; j++) {
        const uint8_t *pa = a + 6 * j, *pb = b + 6 * j;
        uint8_t *o = out + 3 * j;
        o[0] = (uint8_t)((pa[0] + pa[3] + pb[0] + pb[3] + 2) >> 2);
        o[1] = (uint8_t)((pa[1] + pa[4] + pb[1] + pb[4] + 2) >> 2);
        o[2] = (uint8_t)((pa[2] + pa[5] + pb[2] + pb[5] + 2) >> 2);
    }
    if (w & 1) {
        const uint8_t *pa = a + 6 * pairs, *pb = b + 6 * pairs;
        uint8_t *o = out + 3 * pairs;
        for (int c = 0; c < 3; c++)
            o[c] = (uint8_t)((2 * pa[c] + 2 * pb[c] + 2) >> 2);
    }
}

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define SP_HAVE_SSSE3_SHRINK 1

/* 8 output pixels at a time: 16-bit vertical sums S of 48 input bytes,
 * T[i] = S[i] + S[i + 3] (the horizontal pair), (T + 2) >> 2, packed to
 * bytes, and the bytes i with i % 6 < 3 gathered with pshufb. Exactly
 * the scalar arithmetic. */
__attribute__((target("ssse3"))) static void
shrink_ssse3(const uint8_t *restrict a, const uint8_t *restrict b, int64_t w,
             uint8_t *restrict out) {
    const int64_t pairs = w / 2;
    const __m128i z = _mm_setzero_si128(), two = _mm_set1_epi16(2);
    const __m128i m00 =
        _mm_setr_epi8(0, 1, 2, 6, 7, 8, 12, 13, 14, -1, -1, -1, -1, -1, -1, -1);
    const __m128i m10 = _mm_setr_epi8(-1, -1, -1, -1, -1, -1, -1, -1, -1, 2, 3,
                                      4, 8, 9, 10, 14);
    const __m128i m11 = _mm_setr_epi8(15, -1, -1, -1, -1, -1, -1, -1, -1, -1,
                                      -1, -1, -1, -1, -1, -1);
    const __m128i m21 = _mm_setr_epi8(-1, 0, 4, 5, 6, 10, 11, 12, -1, -1, -1,
                                      -1, -1, -1, -1, -1);
    int64_t j = 0;
    for (; j + 8 <= pairs; j += 8) {
        const uint8_t *pa = a + 6 * j, *pb = b + 6 * j;
        __m128i S[7], T[6];
        for (int n = 0; n < 3; n++) {
            __m128i va = _mm_loadu_si128((const __m128i *)(pa + 16 * n));
            __m128i vb = _mm_loadu_si128((const __m128i *)(pb + 16 * n));
            S[2 * n] = _mm_add_epi16(_mm_unpacklo_epi8(va, z),
                                     _mm_unpacklo_epi8(vb, z));
            S[2 * n + 1] = _mm_add_epi16(_mm_unpackhi_epi8(va, z),
                                         _mm_unpackhi_epi8(vb, z));
        }
        S[6] = z;
        for (int n = 0; n < 6; n++)
            T[n] = _mm_srli_epi16(
                _mm_add_epi16(
                    _mm_add_epi16(S[n], _mm_alignr_epi8(S[n + 1], S[n], 6)),
                    two),
                2);
        __m128i P0 = _mm_packus_epi16(T[0], T[1]);
        __m128i P1 = _mm_packus_epi16(T[2], T[3]);
        __m128i P2 = _mm_packus_epi16(T[4], T[5]);
        __m128i y0 =
            _mm_or_si128(_mm_shuffle_epi8(P0, m00), _mm_shuffle_epi8(P1, m10));
        __m128i y1 =
            _mm_or_si128(_mm_shuffle_epi8(P1, m11), _mm_shuffle_epi8(P2, m21));
        _mm_storeu_si128((__m128i *)(out + 3 * j), y0);
        _mm_storel_epi64((__m128i *)(out + 3 * j + 16), y1);
    }
    shrink_scalar(a, b, w, j, out);
}
#endif

void sp__shrink_row(const uint8_t *restrict a, const uint8_t *restrict b,
                    int64_t w, uint8_t *restrict out) {
#ifdef SP_HAVE_SSSE3_SHRINK
    /* -1 unknown; every thread that races here computes the same */
    static _Atomic int have = -1;
    int h = atomic_load_explicit(&have, memory_order_relaxed);
    if (h < 0) {
        h = __builtin_cpu_supports("ssse3") && !getenv("SP_NO_SIMD");
        atomic_store_explicit(&have, h, memory_order_relaxed);
    }
    if (h) {
        shrink_ssse3(a, b, w, out);
        return;
    }
#endif
    shrink_scalar(a, b, w, 0, out);
}

/* Make room for n more rows after the buffered ones: move the buffered
 * rows to the top of the buffer when the end is reached (every other push
 * with the capacity above), in parallel when the ranges do not overlap. */
static void make_room(sp_pyramid *p, sp__plevel *L, int64_t n) {
    if (L->start + L->n + n <= L->cap || L->start == 0)
        return;
    const int64_t rs = L->rs, left = L->n;
    uint8_t *buf = L->buf;
    const uint8_t *from = buf + L->start * rs;
    if (left > 0 && left <= L->start && left * rs > (1 << 20)) {
#pragma omp parallel for num_threads(p->threads) schedule(static)
        for (int64_t i = 0; i < left; i++)
            memcpy(buf + i * rs, from + i * rs, (size_t)rs);
    } else if (left > 0) {
        memmove(buf, from, (size_t)(left * rs));
    }
    L->start = 0;
}

/* Append n rows (of the level's window) to level d, shrinking them into
 * level d + 1 first; in a stripe with a tail, level k's rows go to the
 * tail instead. */
static bool feed(sp_pyramid *p, int d, const uint8_t *src, int64_t stride,
                 int64_t n, sp_error *err) {
    sp__plevel *L = &p->lv[d];
    const int64_t rs = L->rs;
    if (n <= 0)
        return true;
    if (L->received + n > L->h || L->n + n > L->cap)
        return sp_error_set(err, SP_ERR_INTERNAL, p->output,
                            "pyramid level %d overflow", d);
    make_room(p, L, n);
    uint8_t *dst = L->buf + (L->start + L->n) * rs;
    if (src != dst) { /* else read in place (sp_pyramid_input) */
        bool big = n * rs > (1 << 20);
        const size_t row = (size_t)L->ww * 3;
#pragma omp parallel for num_threads(p->threads) if (big) schedule(static)
        for (int64_t i = 0; i < n; i++)
            memcpy(dst + i * rs, src + i * stride, row);
    }
    L->n += n;
    L->received += n;
    if (d == p->hi && p->tail && p->hi == p->k) {
        /* the stripe's core columns of level k, kept for the tail */
        int64_t c0 = L->c0 * p->T, c1 = L->c1 * p->T;
        c1 = c1 < L->w ? c1 : L->w;
        for (int64_t i = 0; i < n; i++)
            memcpy(p->tail + ((L->received - n + i) * L->w + c0) * 3,
                   dst + i * rs + (c0 - L->x0) * 3, (size_t)(c1 - c0) * 3);
        return true;
    }
    if (d >= p->hi)
        return true;

    /* pair rows: the pending odd row (if any) comes first */
    int hp = L->has_pending ? 1 : 0;
    int64_t avail = hp + n;
    bool at_end = L->received == L->h;
    int64_t m = avail / 2 + ((at_end && (avail & 1)) ? 1 : 0);
    sp__plevel *N = &p->lv[d + 1];
    if (m > L->down_cap || N->x0 * 2 != L->x0 || (L->ww + 1) / 2 != N->ww)
        return sp_error_set(err, SP_ERR_INTERNAL, p->output,
                            "pyramid level %d overflow", d + 1);
    int64_t ors = N->ww * 3;
    bool bigd = m * rs > (1 << 19);
#pragma omp parallel for num_threads(p->threads) if (bigd) schedule(static)
    for (int64_t k = 0; k < m; k++) {
        int64_t i0 = 2 * k - hp; /* index into the new rows; -1 = pending */
        const uint8_t *a = i0 < 0 ? L->pending : dst + i0 * rs;
        const uint8_t *b = i0 + 1 < n ? dst + (i0 + 1) * rs : a;
        sp__shrink_row(a, b, L->ww, L->down + k * ors);
    }
    if ((avail & 1) && !at_end) {
        memcpy(L->pending, dst + (n - 1) * rs, (size_t)L->ww * 3);
        L->has_pending = true;
    } else {
        L->has_pending = false;
    }
    return feed(p, d + 1, L->down, ors, m, err);
}

/* ---- tiles ------------------------------------------------------------- */

static bool is_tissue_px(const uint8_t *px) {
    int r = px[0], g = px[1], b = px[2];
    int mx = r > g ? (r > b ? r : b) : (g > b ? g : b);
    int mn = r < g ? (r < b ? r : b) : (g < b ? g : b);
    return mx - mn >= 24 || mn < 180;
}

static bool has_tissue(const sp_pyramid *p, int d, const uint8_t *px,
                       int64_t pitch, int64_t x0, int64_t y0, int64_t tw,
                       int64_t th) {
    if (p->prm.opts.tissue_fn)
        return p->prm.opts.tissue_fn(p->prm.opts.tissue_user, px, tw, th,
                                     (size_t)pitch);
    const sp_tissue_mask *m = p->prm.opts.mask;
    if (m) {
        double f = ldexp(1.0, d) / m->scale; /* mask cells per pixel */
        int64_t cx0 = (int64_t)floor(x0 * f), cy0 = (int64_t)floor(y0 * f);
        int64_t cx1 = (int64_t)ceil((x0 + tw) * f),
                cy1 = (int64_t)ceil((y0 + th) * f);
        if (cx1 > m->width)
            cx1 = m->width;
        if (cy1 > m->height)
            cy1 = m->height;
        for (int64_t y = cy0 < 0 ? 0 : cy0; y < cy1; y++)
            for (int64_t x = cx0 < 0 ? 0 : cx0; x < cx1; x++)
                if (m->cells[y * m->width + x])
                    return true;
        return false;
    }
    for (int64_t y = 0; y < th; y++) {
        const uint8_t *row = px + y * pitch;
        for (int64_t x = 0; x < tw; x++)
            if (is_tissue_px(row + 3 * x))
                return true;
    }
    return false;
}

typedef struct {
    int d;
    int64_t row, col;
} tile_job;

/* Whether every pixel of the w x h tile at px (rows pitch bytes apart) is
 * the first one's colour. Tissue differs within a few pixels; a solid
 * tile costs a compare of its bytes, a fraction of encoding it. */
static bool solid_tile(const uint8_t *px, int64_t w, int64_t h, int64_t pitch) {
    const size_t row = (size_t)w * 3;
    /* pixel i+1 equals pixel i for all i: the row against itself, shifted */
    if (memcmp(px, px + 3, row - 3) != 0)
        return false;
    for (int64_t y = 1; y < h; y++)
        if (memcmp(px + y * pitch, px, row) != 0)
            return false;
    return true;
}

/* A solid tile's encoding from the thread's few kept ones (moved to the
 * front), or NULL. */
static const sp_buf *solid_find(sp__pthread *me, const uint8_t rgb[3], int w,
                                int h) {
    for (int k = 0; k < me->nsolid; k++) {
        sp__solid *s = &me->solid[k];
        if (s->w == w && s->h == h && memcmp(s->rgb, rgb, 3) == 0) {
            if (k > 0) {
                sp__solid hit = *s;
                memmove(&me->solid[1], &me->solid[0], (size_t)k * sizeof hit);
                me->solid[0] = hit;
            }
            return &me->solid[0].enc;
        }
    }
    return NULL;
}

/* Keep a solid tile's encoding at the front, dropping the least recently
 * used; out of memory, it is simply not kept. */
static void solid_keep(sp__pthread *me, const uint8_t rgb[3], int w, int h,
                       const uint8_t *enc, size_t n) {
    sp__solid last = me->solid[SP_SOLID_KEEP - 1];
    int moved = me->nsolid < SP_SOLID_KEEP ? me->nsolid : SP_SOLID_KEEP - 1;
    memmove(&me->solid[1], &me->solid[0], (size_t)moved * sizeof last);
    if (me->nsolid < SP_SOLID_KEEP)
        me->nsolid++;
    me->solid[0] = last; /* reuse the dropped one's buffer */
    sp__solid *s = &me->solid[0];
    sp_buf_reset(&s->enc);
    sp_buf_append(&s->enc, enc, n);
    if (s->enc.oom) {
        /* keep the slot but never match it */
        s->w = s->h = 0;
        return;
    }
    memcpy(s->rgb, rgb, 3);
    s->w = w;
    s->h = h;
}

static bool do_tile(sp_pyramid *p, sp__pthread *me, const tile_job *j,
                    int64_t *written, int64_t *skipped, int64_t *copied,
                    int64_t *reused) {
    sp__plevel *L = &p->lv[j->d];
    int T = p->T, O = p->O;
    const int t = (int)(me - p->pt); /* the writer's thread slot */
    if (p->copy0 && j->d == 0) {
        /* passthrough: the slide's own tile, every one (lossless) */
        sp_buf *b = &me->stored;
        if (!sp_slide_read_stored_tile(p->prm.slide, 0, j->col, j->row, b,
                                       &me->err) ||
            !p->wops->put(p->writer, t, 0, j->col, j->row,
                          (const uint8_t *)b->data, b->len, &me->err))
            return false;
        L->manifest[j->row * L->cols + j->col] = 1;
        atomic_fetch_add_explicit(&p->bytes, (int64_t)b->len,
                                  memory_order_relaxed);
        (*written)++;
        (*copied)++;
        return true;
    }
    int64_t x0 = j->col * T - (j->col > 0 ? O : 0);
    int64_t x1 = (j->col + 1) * T + O;
    int64_t y0 = j->row * T - (j->row > 0 ? O : 0);
    int64_t y1 = (j->row + 1) * T + O;
    if (x1 > L->w)
        x1 = L->w;
    if (y1 > L->h)
        y1 = L->h;
    int64_t rs = L->rs;
    const uint8_t *px =
        L->buf + (L->start + y0 - L->y0) * rs + (x0 - L->x0) * 3;
    int64_t pitch = rs, tw = x1 - x0, th = y1 - y0;
    int64_t ow = tw, oh = th;

    if (p->prm.opts.skip_background &&
        !has_tissue(p, j->d, px, pitch, x0, y0, tw, th)) {
        (*skipped)++;
        if (p->pad_edges) /* TIFF needs every tile */
            return p->wops->put(p->writer, t, j->d, j->col, j->row, p->bg_tile,
                                p->bg_tile_n, &me->err);
        return true;
    }
    if (p->pad_edges && (tw < T || th < T)) {
        /* a full T x T tile, the edge repeated past the image */
        if (!me->scratch) {
            me->scratch = malloc((size_t)T * T * 3);
            if (!me->scratch)
                return sp_error_set(&me->err, SP_ERR_NOMEM, p->output,
                                    "out of memory");
        }
        for (int64_t y = 0; y < T; y++) {
            const uint8_t *s = px + (y < th ? y : th - 1) * pitch;
            uint8_t *o = me->scratch + y * T * 3;
            memcpy(o, s, (size_t)tw * 3);
            for (int64_t x = tw; x < T; x++)
                memcpy(o + 3 * x, s + 3 * (tw - 1), 3);
        }
        px = me->scratch;
        pitch = (int64_t)T * 3;
        ow = oh = T;
    }
    const uint8_t *enc;
    size_t n;
    char why[256];
    /* a tile of one colour (background, unscanned areas the slide
     * library fills) is encoded once per colour and size: the encoders
     * are deterministic, so the bytes are the same */
    const bool solid = solid_tile(px, ow, oh, pitch);
    const sp_buf *kept = solid ? solid_find(me, px, (int)ow, (int)oh) : NULL;
    if (kept) {
        enc = (const uint8_t *)kept->data;
        n = kept->len;
        (*reused)++;
    } else {
        if (!p->codec->encode(me->codec, px, (int)ow, (int)oh, pitch, &enc, &n,
                              why, sizeof why))
            return sp_error_set(&me->err, SP_ERR_INTERNAL, p->output,
                                "level %d tile %lld,%lld: %s", j->d,
                                (long long)j->col, (long long)j->row, why);
        if (solid)
            solid_keep(me, px, (int)ow, (int)oh, enc, n);
    }
    if (!p->wops->put(p->writer, t, j->d, j->col, j->row, enc, n, &me->err))
        return false;
    L->manifest[j->row * L->cols + j->col] = 1;
    atomic_fetch_add_explicit(&p->bytes, (int64_t)n, memory_order_relaxed);
    (*written)++;
    return true;
}

/* The rows level L must hold before tile row r can be encoded. */
static int64_t row_needs(const sp_pyramid *p, const sp__plevel *L, int64_t r) {
    int64_t need = (r + 1) * p->T + p->O;
    return need > L->h ? L->h : need;
}

/* Encode every tile that became complete, then drop rows no longer used. */
static bool emit_ready(sp_pyramid *p, sp_error *err) {
    int64_t njobs = 0;
    for (int d = p->lo; d <= p->hi; d++) {
        sp__plevel *L = &p->lv[d];
        for (int64_t r = L->next_row;
             r < L->rows && L->received >= row_needs(p, L, r); r++)
            njobs += L->c1 - L->c0;
    }
    if (njobs == 0)
        return true;
    tile_job *jobs = malloc((size_t)njobs * sizeof *jobs);
    if (!jobs)
        return sp_error_set(err, SP_ERR_NOMEM, p->output, "out of memory");
    int64_t k = 0;
    for (int d = p->lo; d <= p->hi; d++) {
        sp__plevel *L = &p->lv[d];
        for (; L->next_row < L->rows &&
               L->received >= row_needs(p, L, L->next_row);
             L->next_row++)
            for (int64_t c = L->c0; c < L->c1; c++)
                jobs[k++] = (tile_job){d, L->next_row, c};
    }

    _Atomic bool failed = false;
    int64_t written = 0, skipped = 0, copied = 0, reused = 0;
#pragma omp parallel num_threads(p->threads)                                   \
    reduction(+ : written, skipped, copied, reused)
    {
        sp__pthread *me = &p->pt[omp_get_thread_num()];
        if (!me->codec) {
            me->codec = p->codec->create(p->prm.opts.quality);
            if (!me->codec) {
                sp_error_set(&me->err, SP_ERR_NOMEM, p->output,
                             "cannot start the %s encoder", p->codec->name);
                atomic_store(&failed, true);
            }
        }
#pragma omp for schedule(dynamic, 1)
        for (int64_t i = 0; i < njobs; i++) {
            if (atomic_load_explicit(&failed, memory_order_relaxed))
                continue;
            if (!do_tile(p, me, &jobs[i], &written, &skipped, &copied, &reused))
                atomic_store(&failed, true);
        }
    }
    free(jobs);
    if (failed) {
        for (int t = 0; t < p->threads; t++)
            if (sp_error_is_set(&p->pt[t].err)) {
                *err = p->pt[t].err;
                return false;
            }
        return sp_error_set(err, SP_ERR_INTERNAL, p->output, "tile failed");
    }
    p->tiles_written += written;
    p->tiles_skipped += skipped;
    p->tiles_copied += copied;
    p->tiles_reused += reused;
    p->tiles_done += njobs;

    /* keep only rows from the next tile row's top (with overlap) */
    for (int d = p->lo; d <= p->hi; d++) {
        sp__plevel *L = &p->lv[d];
        int64_t keep = L->next_row * p->T - (L->next_row > 0 ? p->O : 0);
        if (keep > L->received)
            keep = L->received;
        if (d < p->base) { /* no rows held: only where they would start */
            L->y0 = keep;
            continue;
        }
        int64_t drop = keep - L->y0;
        if (drop <= 0)
            continue;
        L->n -= drop;
        L->y0 += drop;
        L->start = L->n ? L->start + drop : 0;
    }
    return true;
}

uint8_t *sp_pyramid_input(sp_pyramid *p, int64_t rows, int64_t width,
                          size_t *stride) {
    if (p->failed)
        return NULL;
    next_stripe_if_done(p);
    sp__plevel *L = &p->lv[p->base];
    if (rows <= 0 || rows > p->push_max || width < L->ww || width > L->buf_w)
        return NULL;
    if (L->received == 0 && L->n == 0)
        L->rs = width * 3; /* a stripe's first band sets the layout */
    else if (width * 3 > L->rs)
        return NULL;
    make_room(p, L, rows);
    *stride = (size_t)L->rs;
    return L->buf + (L->start + L->n) * L->rs;
}

/* Progress; false (and failed) when the run is cancelled. */
static bool report(sp_pyramid *p, sp_error *err) {
    const sp_tile_opts *o = &p->prm.opts;
    if (o->progress)
        o->progress(o->progress_user, "tiles", p->tiles_done, p->tiles_total);
    if (sp_cancelled(o->cancel)) {
        p->failed = true;
        return sp_error_set(err, SP_ERR_INTERNAL, p->output, "interrupted");
    }
    return true;
}

bool sp_pyramid_push_rows(sp_pyramid *p, const uint8_t *rgb, size_t row_bytes,
                          int64_t y0, int64_t rows, sp_error *err) {
    const int64_t stride = (int64_t)row_bytes;
    if (p->failed)
        return sp_error_set(err, SP_ERR_USAGE, p->output,
                            "pyramid already failed");
    if (y0 == 0 && rows > 0)
        next_stripe_if_done(p);
    if (y0 != p->pushed || rows < 0 || y0 + rows > base_height(p) ||
        stride < p->lv[p->base].ww * 3) {
        p->failed = true;
        return sp_error_set(err, SP_ERR_USAGE, p->output,
                            "rows pushed out of order (%lld+%lld, expected "
                            "row %lld of %lld, stripe %d of %d)",
                            (long long)y0, (long long)rows,
                            (long long)p->pushed, (long long)base_height(p),
                            p->stripe + 1, p->nstripes);
    }
    const int64_t B = p->push_max;
    for (int64_t done = 0; done < rows;) {
        int64_t n = rows - done < B ? rows - done : B;
        if (!feed(p, p->base, rgb + done * stride, stride, n, err)) {
            p->failed = true;
            return false;
        }
        if (p->base) { /* level 0's tiles are ready as level 1's rows are */
            sp__plevel *L0 = &p->lv[0];
            int64_t r = 2 * p->lv[1].received;
            L0->received = r < L0->h ? r : L0->h;
        }
        if (!emit_ready(p, err)) {
            p->failed = true;
            return false;
        }
        done += n;
        p->pushed += n;
        if (!report(p, err))
            return false;
    }
    return true;
}

/* After the last stripe: levels k+1.. from the whole level k. */
static bool build_tail(sp_pyramid *p, sp_error *err) {
    const sp__plevel *K = &p->lv[p->k];
    p->lo = p->hi = p->k + 1;
    for (int d = p->k + 1; d < p->nlevels; d++) {
        sp__plevel *L = &p->lv[d];
        set_window(L, 0, L->w, 0, L->cols);
        p->hi = d;
    }
    sp__plevel *N = &p->lv[p->k + 1];
    const int64_t M = K->down_cap, rs = K->w * 3, ors = N->w * 3;
    for (int64_t r = 0; r < N->h; r += M) {
        int64_t m = N->h - r < M ? N->h - r : M;
        uint8_t *down = p->lv[p->k].down;
#pragma omp parallel for num_threads(p->threads) schedule(static)
        for (int64_t i = 0; i < m; i++) {
            int64_t y = 2 * (r + i);
            const uint8_t *a = p->tail + y * rs;
            const uint8_t *b = y + 1 < K->h ? a + rs : a;
            sp__shrink_row(a, b, K->w, down + i * ors);
        }
        if (!feed(p, p->k + 1, down, ors, m, err) || !emit_ready(p, err) ||
            !report(p, err)) {
            p->failed = true;
            return false;
        }
    }
    return true;
}

/* ---- metadata ---------------------------------------------------------- */

static void write_sidecar(const sp_pyramid *p, sp_buf *b) {
    const sp_tile_opts *o = &p->prm.opts;
    const sp_source_info *s = &p->prm.source;
    sp_json j;
    sp_json_init(&j, b, false);
    sp_json_begin_object(&j);
    sp_json_key(&j, "slidepipe_version");
    sp_json_string(&j, SP_VERSION);
    sp_json_key(&j, "source");
    sp_json_begin_object(&j);
    sp_json_key(&j, "path");
    sp_json_string(&j, s->path);
    sp_json_key(&j, "vendor");
    sp_json_string(&j, s->vendor);
    sp_json_key(&j, "width");
    sp_json_int(&j, p->prm.width);
    sp_json_key(&j, "height");
    sp_json_int(&j, p->prm.height);
    sp_json_key(&j, "mpp_x");
    s->mpp_x > 0 ? sp_json_number(&j, s->mpp_x) : sp_json_null(&j);
    sp_json_key(&j, "mpp_y");
    s->mpp_y > 0 ? sp_json_number(&j, s->mpp_y) : sp_json_null(&j);
    sp_json_key(&j, "objective_power");
    s->objective_power > 0 ? sp_json_number(&j, s->objective_power)
                           : sp_json_null(&j);
    sp_json_key(&j, "quickhash");
    sp_json_string(&j, s->quickhash);
    sp_json_end_object(&j);
    sp_json_key(&j, "parameters");
    sp_json_begin_object(&j);
    sp_json_key(&j, "container");
    sp_json_string(&j, sp_container_name(o->container));
    sp_json_key(&j, "format");
    sp_json_string(&j, p->codec->name);
    sp_json_key(&j, "tile_size");
    sp_json_int(&j, p->T);
    sp_json_key(&j, "overlap");
    sp_json_int(&j, p->O);
    sp_json_key(&j, "quality");
    sp_json_int(&j, o->quality);
    sp_json_key(&j, "passthrough");
    sp_json_bool(&j, p->copy0);
    /* how the levels below 0 were made */
    sp_json_key(&j, "reduction");
    sp_json_string(&j, p->base ? "jpeg-dct-half" : "box");
    sp_json_key(&j, "skip_background");
    sp_json_bool(&j, o->skip_background);
    sp_json_key(&j, "background_rule");
    sp_json_string(&j, !o->skip_background ? NULL
                       : o->mask           ? "tissue mask"
                                 : "colour: max-min >= 24 or min < 180");
    sp_json_key(&j, "background");
    sp_json_begin_array(&j);
    for (int c = 0; c < 3; c++)
        sp_json_int(&j, o->background[c]);
    sp_json_end_array(&j);
    sp_json_end_object(&j);
    sp_json_key(&j, "tiles_written");
    sp_json_int(&j, p->tiles_written);
    sp_json_key(&j, "tiles_skipped");
    sp_json_int(&j, p->tiles_skipped);
    sp_json_key(&j, "tiles_copied");
    sp_json_int(&j, p->tiles_copied);
    sp_json_key(&j, "levels");
    sp_json_begin_array(&j);
    /* DZI names the smallest level 0; TIFF the largest */
    int order = o->container != SP_CONTAINER_DZI ? 1 : -1;
    for (int i = 0; i < p->nlevels; i++) {
        int d = order > 0 ? i : p->nlevels - 1 - i;
        const sp__plevel *L = &p->lv[d];
        sp_json_begin_object(&j);
        sp_json_key(&j, "level");
        sp_json_int(&j, i);
        sp_json_key(&j, "width");
        sp_json_int(&j, L->w);
        sp_json_key(&j, "height");
        sp_json_int(&j, L->h);
        sp_json_key(&j, "downsample");
        sp_json_int(&j, (int64_t)1 << d);
        sp_json_key(&j, "cols");
        sp_json_int(&j, L->cols);
        sp_json_key(&j, "rows");
        sp_json_int(&j, L->rows);
        sp_json_key(&j, "tiles");
        sp_json_begin_array(&j);
        char *row = malloc((size_t)L->cols + 1);
        if (!row) {
            b->oom = true;
        } else {
            for (int64_t r = 0; r < L->rows; r++) {
                for (int64_t c = 0; c < L->cols; c++)
                    row[c] = L->manifest[r * L->cols + c] ? '1' : '0';
                row[L->cols] = '\0';
                sp_json_string(&j, row);
            }
        }
        free(row);
        sp_json_end_array(&j);
        sp_json_end_object(&j);
    }
    sp_json_end_array(&j);
    sp_json_end_object(&j);
    sp_buf_puts(b, "\n");
}

bool sp_pyramid_finish(sp_pyramid *p, sp_tile_stats *stats, sp_error *err) {
    bool ok = false;
    sp_buf b;
    sp_buf_init(&b);
    if (p->failed) {
        sp_error_set(err, SP_ERR_USAGE, p->output, "pyramid already failed");
        goto out;
    }
    if (p->pushed == base_height(p) && p->stripe + 1 == p->nstripes &&
        p->tail && !build_tail(p, err))
        goto out;
    if (p->pushed != base_height(p) || p->stripe + 1 != p->nstripes ||
        p->tiles_done != p->tiles_total) {
        sp_error_set(err, SP_ERR_INTERNAL, p->output,
                     "incomplete input: stripe %d of %d, %lld of %lld rows, "
                     "%lld of %lld tiles",
                     p->stripe + 1, p->nstripes, (long long)p->pushed,
                     (long long)base_height(p), (long long)p->tiles_done,
                     (long long)p->tiles_total);
        goto out;
    }
    write_sidecar(p, &b);
    if (b.oom) {
        sp_error_set(err, SP_ERR_NOMEM, p->output, "out of memory");
        goto out;
    }
    sp__writer *w = p->writer;
    p->writer = NULL; /* finish frees the writer, also on failure */
    if (!p->wops->finish(w, b.data, b.len, err))
        goto out;
    if (stats) {
        memset(stats, 0, sizeof *stats);
        stats->width = p->prm.width;
        stats->height = p->prm.height;
        stats->levels = p->nlevels;
        stats->stripes = p->nstripes;
        stats->tiles_total = p->tiles_total;
        stats->tiles_written = p->tiles_written;
        stats->tiles_skipped = p->tiles_skipped;
        stats->tiles_copied = p->tiles_copied;
        stats->tiles_reused = p->tiles_reused;
        stats->bytes_written = atomic_load(&p->bytes);
        stats->seconds = sp_now() - p->t_start;
        snprintf(stats->output, sizeof stats->output, "%s",
                 p->final_main ? p->final_main : p->output);
    }
    ok = true;
out:
    sp_buf_free(&b);
    sp_pyramid_abort(p);
    return ok;
}
