/* analysis: hand-checkable features on synthetic buffers, Otsu and OD
 * against values computed with scikit-image, Macenko on synthetic stain
 * mixtures, parameter checks, the vector (AVX2) and portable feature kernels
 * against each other and against the per-pixel definitions, and the
 * 1-thread / N-thread identity of a whole-slide analysis.
 * (tests/test_features_ref.py compares real tiles with scikit-image.) */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "analysis.h"
#include "analysis_private.h"
#include "testutil.h"

static void fill(uint8_t *buf, int w, int h, size_t stride, uint8_t r,
                 uint8_t g, uint8_t b) {
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            uint8_t *p = buf + (size_t)y * stride + 3 * (size_t)x;
            p[0] = r;
            p[1] = g;
            p[2] = b;
        }
}

static bool features(const uint8_t *buf, int w, int h, size_t stride,
                     float *f) {
    sp_error e = {0};
    bool ok = sp_features_compute(buf, w, h, stride, NULL, f, &e);
    if (!ok)
        fprintf(stderr, "features: %s\n", e.msg);
    return ok;
}

static void test_feature_table(void) {
    const sp_feature_info *t = sp_feature_table();
    for (int i = 0; i < SP_N_FEATURES; i++) {
        CU_ASSERT_PTR_NOT_NULL_FATAL(t[i].name);
        CU_ASSERT_PTR_NOT_NULL(t[i].unit);
        CU_ASSERT_PTR_NOT_NULL(t[i].description);
        for (int j = 0; j < i; j++)
            CU_ASSERT_NOT_EQUAL(strcmp(t[i].name, t[j].name), 0);
    }
    CU_ASSERT_STRING_EQUAL(t[SP_F_OD_H].name, "od_h");
    CU_ASSERT_STRING_EQUAL(t[SP_F_BLUR].name, "blur");
}

/* A uniform colour: every spread is 0, means are the colour. */
static void test_uniform(void) {
    const uint8_t cols[][3] = {
        {100, 50, 150}, {255, 255, 255}, {0, 0, 0}, {230, 150, 200}};
    for (size_t c = 0; c < sizeof cols / sizeof cols[0]; c++) {
        for (int shape = 0; shape < 3; shape++) {
            int w = shape == 0 ? 64 : shape == 1 ? 1 : 37;
            int h = shape == 0 ? 48 : shape == 1 ? 1 : 5;
            size_t stride = (size_t)w * 3 + 7; /* padded rows */
            uint8_t *buf = malloc(stride * h);
            fill(buf, w, h, stride, cols[c][0], cols[c][1], cols[c][2]);
            float f[SP_N_FEATURES];
            CU_ASSERT_TRUE_FATAL(features(buf, w, h, stride, f));
            for (int k = 0; k < 3; k++) {
                CU_ASSERT_EQUAL(f[SP_F_MEAN_R + k], cols[c][k]);
                CU_ASSERT_EQUAL(f[SP_F_STD_R + k], 0);
            }
            CU_ASSERT_EQUAL(f[SP_F_BLUR], 0);
            CU_ASSERT_EQUAL(f[SP_F_CONTRAST], 0);
            CU_ASSERT_EQUAL(f[SP_F_ENTROPY], 0);
            free(buf);
        }
    }
    /* values from scikit-image: rgb2hed(...) * 6, rgb2hsv(...)[..., 1] */
    uint8_t px[3 * 4];
    float f[SP_N_FEATURES];
    fill(px, 2, 2, 6, 100, 50, 150);
    CU_ASSERT_TRUE_FATAL(features(px, 2, 2, 6, f));
    CU_ASSERT_DOUBLE_EQUAL(f[SP_F_OD_H], 0.5781319588236946, 1e-6);
    CU_ASSERT_DOUBLE_EQUAL(f[SP_F_OD_E], 0.2825285629973132, 1e-6);
    CU_ASSERT_DOUBLE_EQUAL(f[SP_F_SATURATION], 0.6666666666666667, 1e-7);
    CU_ASSERT_EQUAL(f[SP_F_TISSUE_FRACTION], 1);
    CU_ASSERT_EQUAL(f[SP_F_CELLULARITY], 1); /* 0.578 > 0.4 */
    CU_ASSERT_EQUAL(f[SP_F_PEN_FRACTION], 0);
    fill(px, 2, 2, 6, 230, 150, 200);
    CU_ASSERT_TRUE_FATAL(features(px, 2, 2, 6, f));
    CU_ASSERT_DOUBLE_EQUAL(f[SP_F_OD_H], 0.0054610102313609465, 1e-7);
    CU_ASSERT_DOUBLE_EQUAL(f[SP_F_OD_E], 0.16565235625241634, 1e-6);
    CU_ASSERT_EQUAL(f[SP_F_CELLULARITY], 0);
    fill(px, 2, 2, 6, 0, 10, 255); /* OD clamp: 0 counts as 1 */
    CU_ASSERT_TRUE_FATAL(features(px, 2, 2, 6, f));
    CU_ASSERT_DOUBLE_EQUAL(f[SP_F_OD_H], 4.4267385766640075, 1e-5);
    CU_ASSERT_EQUAL(f[SP_F_OD_E], 0);
    CU_ASSERT_EQUAL(f[SP_F_PEN_FRACTION], 1); /* pure blue ink */
    fill(px, 2, 2, 6, 255, 255, 255);         /* glass: no OD, no saturation */
    CU_ASSERT_TRUE_FATAL(features(px, 2, 2, 6, f));
    CU_ASSERT_EQUAL(f[SP_F_OD_H], 0);
    CU_ASSERT_EQUAL(f[SP_F_OD_E], 0);
    CU_ASSERT_EQUAL(f[SP_F_SATURATION], 0);
    CU_ASSERT_EQUAL(f[SP_F_TISSUE_FRACTION], 0);
    CU_ASSERT_EQUAL(f[SP_F_BRIGHTNESS], 1);
}

/* A one-pixel black/white checkerboard: each interior Laplacian is +-1020,
 * an edge pixel's +-765 (the mirrored neighbour equals itself), a corner's
 * +-510; the values sum to zero. */
static void test_checkerboard(void) {
    const int sizes[][2] = {{16, 16}, {7, 5}, {256, 256}, {5000, 3}};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        int w = sizes[s][0], h = sizes[s][1];
        uint8_t *buf = malloc((size_t)w * h * 3);
        double sum = 0, sq = 0;
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++) {
                uint8_t v = (x + y) % 2 ? 255 : 0;
                memset(buf + 3 * ((size_t)y * w + x), v, 3);
                int nb = (x > 0) + (x < w - 1) + (y > 0) + (y < h - 1);
                double l = (v ? 255.0 : -255.0) * nb;
                sum += l;
                sq += l * l;
            }
        double n = (double)w * h, mean = sum / n;
        float f[SP_N_FEATURES];
        CU_ASSERT_TRUE_FATAL(features(buf, w, h, (size_t)w * 3, f));
        CU_ASSERT_DOUBLE_EQUAL(f[SP_F_BLUR], sq / n - mean * mean,
                               1e-6 * (sq / n));
        if (w % 2 == 0 || h % 2 == 0) { /* as many black as white */
            CU_ASSERT_DOUBLE_EQUAL(f[SP_F_ENTROPY], 1.0, 1e-6);
            CU_ASSERT_DOUBLE_EQUAL(f[SP_F_CONTRAST], 0.5, 1e-6);
            CU_ASSERT_DOUBLE_EQUAL(f[SP_F_BRIGHTNESS], 0.5, 1e-6);
            CU_ASSERT_DOUBLE_EQUAL(f[SP_F_STD_G], 127.5, 1e-4);
        }
        if (s == 0) /* interior 14x14 at 1020^2, 56 edges, 4 corners */
            CU_ASSERT_DOUBLE_EQUAL(
                f[SP_F_BLUR],
                (196 * 1020.0 * 1020 + 56 * 765.0 * 765 + 4 * 510.0 * 510) /
                    256,
                1);
        free(buf);
    }
}

/* A strided view gives the same features as a packed copy. */
static void test_stride(void) {
    const int w = 53, h = 41;
    size_t stride = 3 * 64;
    uint8_t *a = malloc(stride * h), *b = malloc((size_t)w * h * 3);
    unsigned seed = 12345;
    for (size_t i = 0; i < stride * h; i++) {
        seed = seed * 1103515245u + 12345u;
        a[i] = (uint8_t)(seed >> 16);
    }
    for (int y = 0; y < h; y++)
        memcpy(b + (size_t)y * w * 3, a + (size_t)y * stride, (size_t)w * 3);
    float fa[SP_N_FEATURES], fb[SP_N_FEATURES];
    CU_ASSERT_TRUE(features(a, w, h, stride, fa));
    CU_ASSERT_TRUE(features(b, w, h, (size_t)w * 3, fb));
    CU_ASSERT_EQUAL(memcmp(fa, fb, sizeof fa), 0);
    free(a);
    free(b);
}

/* Per-pixel parts of the features straight from FEATURES.md's definitions
 * in double (sp__sat8's division, the double OD tables, no fixed point). */
typedef struct {
    double od_h, od_e;
    uint64_t tissue, pen, cell;
} pixel_ref;

static pixel_ref pixel_reference(const uint8_t *buf, int w, int h,
                                 size_t stride, const sp_feature_opts *fp) {
    const sp__stain_tables *T = sp__stain_tables_get();
    pixel_ref r = {0};
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            const uint8_t *p = buf + (size_t)y * stride + 3 * (size_t)x;
            double hv = T->h[0][p[0]] + T->h[1][p[1]] + T->h[2][p[2]];
            double ev = T->e[0][p[0]] + T->e[1][p[1]] + T->e[2][p[2]];
            hv = hv > 0 ? hv : 0;
            ev = ev > 0 ? ev : 0;
            r.od_h += hv;
            r.od_e += ev;
            r.cell += hv > fp->cellularity_od;
            r.tissue +=
                sp__sat8(p[0], p[1], p[2]) > (unsigned)fp->tissue_threshold;
            r.pen += sp__is_pen(p[0], p[1], p[2]);
        }
    r.od_h /= (double)w * h;
    r.od_e /= (double)w * h;
    return r;
}

static int impl_failures;

/* The portable kernel agrees with the per-pixel definitions (counts
 * exactly, H and E means to the fixed point's 6e-9 OD), and the AVX2 kernel
 * (where the CPU has it) gives the portable kernel's bytes. */
static void check_impls(const uint8_t *buf, int w, int h, size_t stride,
                        const sp_feature_opts *fp, const char *what) {
    float fs[SP_N_FEATURES], fv[SP_N_FEATURES], fa[SP_N_FEATURES];
    sp_error e = {0};
    CU_ASSERT_TRUE_FATAL(sp__features_compute_impl(buf, w, h, stride, fp, fs,
                                                   &e, SP__FEATURES_SCALAR));
    pixel_ref r = pixel_reference(buf, w, h, stride, fp);
    const double n = (double)w * h;
    bool ok = fs[SP_F_TISSUE_FRACTION] == (float)(r.tissue / n) &&
              fs[SP_F_PEN_FRACTION] == (float)(r.pen / n) &&
              fs[SP_F_CELLULARITY] == (float)(r.cell / n) &&
              fabs(fs[SP_F_OD_H] - r.od_h) <= 1e-6 * r.od_h + 1e-7 &&
              fabs(fs[SP_F_OD_E] - r.od_e) <= 1e-6 * r.od_e + 1e-7;
    if (!ok && impl_failures++ < 5)
        fprintf(stderr,
                "%s %dx%d thr %d cell %.17g: scalar tissue %g pen %g cell %g "
                "od %.9g %.9g, reference %g %g %g %.9g %.9g\n",
                what, w, h, fp->tissue_threshold, fp->cellularity_od,
                fs[SP_F_TISSUE_FRACTION], fs[SP_F_PEN_FRACTION],
                fs[SP_F_CELLULARITY], fs[SP_F_OD_H], fs[SP_F_OD_E],
                r.tissue / n, r.pen / n, r.cell / n, r.od_h, r.od_e);
    CU_ASSERT_TRUE(ok);
    CU_ASSERT_TRUE_FATAL(sp__features_compute_impl(buf, w, h, stride, fp, fa,
                                                   &e, SP__FEATURES_AUTO));
    if (!sp__features_have_avx2()) {
        CU_ASSERT_EQUAL(memcmp(fs, fa, sizeof fs), 0);
        CU_ASSERT_FALSE(sp__features_compute_impl(buf, w, h, stride, fp, fv, &e,
                                                  SP__FEATURES_AVX2));
        return;
    }
    CU_ASSERT_TRUE_FATAL(sp__features_compute_impl(buf, w, h, stride, fp, fv,
                                                   &e, SP__FEATURES_AVX2));
    for (int k = 0; k < SP_N_FEATURES; k++)
        if (memcmp(&fs[k], &fv[k], sizeof fs[k]) != 0 && impl_failures++ < 5)
            fprintf(stderr, "%s %dx%d: %s scalar %.9g avx2 %.9g\n", what, w, h,
                    sp_feature_table()[k].name, fs[k], fv[k]);
    CU_ASSERT_EQUAL(memcmp(fs, fv, sizeof fs), 0);
    CU_ASSERT_EQUAL(memcmp(fv, fa, sizeof fs), 0);
}

/* Buffer kinds for test_kernels. */
enum { PX_RANDOM, PX_STAINED, PX_EDGES, PX_KINDS };

/* Fill a w x h buffer: uniform random bytes; H&E-like stain mixtures on
 * glass with a few pen strokes, black specks and dust; or the corner cases
 * of every rule (0, 1, 254, 255, the pen rule's margins, luma ties). */
static void fill_kind(uint8_t *buf, int w, int h, size_t stride, int kind,
                      unsigned *seed) {
    /* the last three: luma exactly halfway before rounding */
    static const uint8_t edges[][3] = {
        {0, 0, 0},       {255, 255, 255}, {1, 0, 0},       {0, 0, 255},
        {255, 0, 0},     {0, 255, 0},     {100, 130, 100}, {100, 129, 100},
        {201, 240, 201}, {200, 240, 200}, {50, 60, 120},   {55, 60, 120},
        {56, 60, 120},   {39, 20, 30},    {40, 20, 30},    {39, 15, 30},
        {254, 254, 253}, {230, 150, 200}, {100, 50, 150},  {128, 128, 0},
        {0, 52, 184},    {210, 37, 228},  {255, 203, 71},
    };
    const double H[3] = {0.65, 0.70, 0.29}, E[3] = {0.07, 0.99, 0.11};
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            uint8_t *p = buf + (size_t)y * stride + 3 * (size_t)x;
            *seed = *seed * 1103515245u + 12345u;
            unsigned v = *seed >> 8;
            if (kind == PX_RANDOM) {
                for (int c = 0; c < 3; c++)
                    p[c] = (uint8_t)(v >> (5 * c));
            } else if (kind == PX_EDGES) {
                memcpy(p, edges[v % (sizeof edges / sizeof edges[0])], 3);
            } else if (v % 100 < 25) { /* glass */
                for (int c = 0; c < 3; c++)
                    p[c] = (uint8_t)(235 + (v >> (4 * c + 8)) % 21);
            } else if (v % 100 < 28) { /* pen: green, blue, black */
                static const uint8_t ink[3][3] = {
                    {60, 140, 90}, {40, 50, 160}, {20, 22, 25}};
                memcpy(p, ink[(v >> 8) % 3], 3);
            } else {
                double ch = ((v >> 8) & 0xff) / 255.0 * 1.6;
                double ce = ((v >> 16) & 0xff) / 255.0 * 1.2;
                for (int c = 0; c < 3; c++) {
                    double od = ch * H[c] + ce * E[c] + 0.05;
                    p[c] = (uint8_t)(255.0 * pow(10.0, -od) + 0.5);
                }
            }
        }
}

/* The AVX2 and portable kernels on random, stained and corner-case pixels
 * and on real tissue, at widths around the vector lengths (32 pixels for
 * the colour statistics, 16 for the Laplacian) and with thresholds that put
 * pixels exactly on the cellularity boundary. */
static void test_kernels(void) {
    const int widths[] = {1, 2, 7, 16, 17, 18, 19, 31, 32, 33, 63, 255, 256};
    const int heights[] = {1, 2, 5};
    const sp__stain_tables *T = sp__stain_tables_get();
    /* H of {100, 50, 150} (an edge colour) as the definition computes it:
     * those pixels sit exactly on the threshold (not above it) */
    const double on = T->h[0][100] + T->h[1][50] + T->h[2][150];
    const double cells[] = {0.4, 0, -1, on, nextafter(on, 0), 1e6};
    const int thrs[] = {20, 0, 254};
    unsigned seed = 2024;
    for (int kind = 0; kind < PX_KINDS; kind++)
        for (size_t wi = 0; wi < sizeof widths / sizeof widths[0]; wi++)
            for (size_t hi = 0; hi < sizeof heights / sizeof heights[0]; hi++) {
                int w = widths[wi], h = heights[hi];
                size_t stride = 3 * (size_t)w + 5;
                uint8_t *buf = malloc(stride * h);
                CU_ASSERT_PTR_NOT_NULL_FATAL(buf);
                fill_kind(buf, w, h, stride, kind, &seed);
                for (size_t k = 0; k < sizeof cells / sizeof cells[0]; k++) {
                    sp_feature_opts fp = {.tissue_threshold = thrs[k % 3],
                                          .cellularity_od = cells[k]};
                    check_impls(buf, w, h, stride, &fp,
                                kind == PX_RANDOM    ? "random"
                                : kind == PX_STAINED ? "stained"
                                                     : "edges");
                }
                free(buf);
            }
    /* a wide row: several vector blocks and the heap row buffers */
    {
        int w = 5000, h = 3;
        uint8_t *buf = malloc((size_t)w * h * 3);
        CU_ASSERT_PTR_NOT_NULL_FATAL(buf);
        fill_kind(buf, w, h, (size_t)w * 3, PX_STAINED, &seed);
        sp_feature_opts fp;
        sp_feature_opts_default(&fp);
        check_impls(buf, w, h, (size_t)w * 3, &fp, "wide");
        free(buf);
    }
    /* real tissue: CMU-1 level 0, whole 256 px tiles and odd pieces */
    char *path = sp_test_path("CMU-1-Small-Region.svs");
    sp_slide *s = NULL;
    sp_reader *r = NULL;
    sp_error e = {0};
    const int side = 512;
    uint8_t *img = malloc((size_t)side * side * 3);
    CU_ASSERT_PTR_NOT_NULL_FATAL(img);
    CU_ASSERT_TRUE_FATAL(sp_slide_open(path, false, &s, &e));
    r = sp_reader_create(s, 0, NULL, &e);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_TRUE_FATAL(sp_reader_read(r, 0, 900, 1300, side, side, img, &e));
    sp_feature_opts fp;
    sp_feature_opts_default(&fp);
    const size_t stride = (size_t)side * 3;
    for (int ty = 0; ty < 2; ty++)
        for (int tx = 0; tx < 2; tx++)
            check_impls(img + (size_t)ty * 256 * stride + (size_t)tx * 768, 256,
                        256, stride, &fp, "CMU-1");
    for (size_t wi = 0; wi < sizeof widths / sizeof widths[0]; wi++)
        check_impls(img + 3 * (size_t)wi, widths[wi], 97, stride, &fp,
                    "CMU-1 piece");
    /* real pixels with every pixel's own H as the threshold, in turn */
    for (int i = 0; i < 8; i++) {
        const uint8_t *p = img + 3 * (size_t)(i * 7919 % (side * side));
        fp.cellularity_od = T->h[0][p[0]] + T->h[1][p[1]] + T->h[2][p[2]];
        check_impls(img, 256, 64, stride, &fp, "CMU-1 on threshold");
    }
    sp_reader_free(r);
    sp_slide_close(s);
    free(img);
    free(path);
}

/* ---- streaming ------------------------------------------------------- */

/* Chunkings of a stream: one chunk, one row at a time, and mixed sizes
 * (empty chunks and whole remainders among them). */
enum { CHUNK_ONE, CHUNK_ROWS, CHUNK_MIXED, CHUNK_KINDS };

static int next_chunk(int mode, int left, unsigned *seed) {
    if (mode == CHUNK_ONE)
        return left;
    if (mode == CHUNK_ROWS)
        return 1;
    *seed = *seed * 1103515245u + 12345u;
    int v = (int)(*seed >> 16);
    int n = v % 5 == 0   ? (v >> 3) % 3
            : v % 5 == 1 ? left
            : v % 5 == 2 ? 1 + (v >> 3) % 4
                         : 1 + (v >> 3) % 40;
    return n < left ? n : left;
}

/* Rows y .. y+n-1 of `buf` copied into a fresh buffer with a stride of its
 * own, so that a stream keeping a pointer to an earlier chunk trips ASan. */
static uint8_t *chunk_copy(const uint8_t *buf, size_t stride, int w, int y,
                           int n, size_t *cstride) {
    *cstride = 3 * (size_t)w + (size_t)(y % 7);
    uint8_t *c = malloc(n > 0 ? *cstride * n : 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    for (int i = 0; i < n; i++)
        memcpy(c + i * *cstride, buf + (size_t)(y + i) * stride, 3 * (size_t)w);
    return c;
}

/* The features of a buffer streamed in chunks (`nrows` luma rows kept, as
 * in analysis_private.h; 0: the public sp_features_begin). */
static bool stream_features(const uint8_t *buf, int w, int h, size_t stride,
                            const sp_feature_opts *fp, int nrows,
                            sp__features_impl impl, int mode, unsigned *seed,
                            float *out) {
    size_t size = nrows ? SP__FEATURES_STREAM_BYTES(w, nrows)
                        : sp_features_stream_size(w);
    void *st = malloc(size);
    CU_ASSERT_PTR_NOT_NULL_FATAL(st);
    memset(st, 0xa5, size);
    sp_error e = {0};
    bool ok = nrows ? sp__features_begin(st, w, h, fp, nrows, impl, &e)
                    : sp_features_begin(st, w, h, fp, &e);
    for (int y = 0; ok && y < h;) {
        int n = next_chunk(mode, h - y, seed);
        size_t cs;
        uint8_t *c = chunk_copy(buf, stride, w, y, n, &cs);
        ok = sp_features_rows(st, c, cs, n, &e);
        free(c);
        y += n;
    }
    if (ok)
        ok = sp_features_end(st, out, &e);
    if (!ok)
        fprintf(stderr, "stream %dx%d: %s\n", w, h, e.msg);
    free(st);
    return ok;
}

static int stream_failures;

/* Every chunking, with 2 and 3 rows kept, on the portable and the AVX2
 * path, gives sp_features_compute's bytes. */
static void check_stream(const uint8_t *buf, int w, int h, size_t stride,
                         const sp_feature_opts *fp, unsigned *seed,
                         const char *what) {
    const sp__features_impl impls[] = {SP__FEATURES_SCALAR, SP__FEATURES_AUTO};
    for (size_t i = 0; i < sizeof impls / sizeof impls[0]; i++) {
        float one[SP_N_FEATURES], st[SP_N_FEATURES];
        sp_error e = {0};
        CU_ASSERT_TRUE_FATAL(sp__features_compute_impl(buf, w, h, stride, fp,
                                                       one, &e, impls[i]));
        for (int nrows = 0; nrows <= 3; nrows++) {
            if (nrows == 1 || (nrows == 2 && w > SP__TILE_SIZE_MAX) ||
                (nrows == 0 && impls[i] != SP__FEATURES_AUTO))
                continue;
            for (int mode = 0; mode < CHUNK_KINDS; mode++) {
                memset(st, 0, sizeof st);
                CU_ASSERT_TRUE_FATAL(stream_features(
                    buf, w, h, stride, fp, nrows, impls[i], mode, seed, st));
                bool same = memcmp(one, st, sizeof one) == 0;
                if (!same && stream_failures++ < 5)
                    fprintf(stderr,
                            "%s %dx%d impl %d rows %d mode %d: stream "
                            "differs\n",
                            what, w, h, (int)impls[i], nrows, mode);
                CU_ASSERT_TRUE(same);
            }
        }
    }
}

/* sp_features_begin/rows/end against sp_features_compute, on synthetic
 * buffers of odd sizes (heights of 1, 2, 3 too) and on real tissue. */
static void test_features_stream(void) {
    const int widths[] = {1, 2, 3, 17, 33, 97, 256};
    const int heights[] = {1, 2, 3, 5, 37};
    unsigned seed = 99;
    sp_feature_opts fp;
    sp_feature_opts_default(&fp);
    for (int kind = 0; kind < PX_KINDS; kind++)
        for (size_t wi = 0; wi < sizeof widths / sizeof widths[0]; wi++)
            for (size_t hi = 0; hi < sizeof heights / sizeof heights[0]; hi++) {
                int w = widths[wi], h = heights[hi];
                size_t stride = 3 * (size_t)w + 3;
                uint8_t *buf = malloc(stride * h);
                CU_ASSERT_PTR_NOT_NULL_FATAL(buf);
                fill_kind(buf, w, h, stride, kind, &seed);
                check_stream(buf, w, h, stride, &fp, &seed, "synthetic");
                free(buf);
            }
    { /* wider than the stack rows of sp_features_compute and than a tile */
        int w = 8200, h = 4;
        uint8_t *buf = malloc((size_t)w * h * 3);
        CU_ASSERT_PTR_NOT_NULL_FATAL(buf);
        fill_kind(buf, w, h, (size_t)w * 3, PX_STAINED, &seed);
        check_stream(buf, w, h, (size_t)w * 3, &fp, &seed, "wide");
        free(buf);
    }
    char *path = sp_test_path("CMU-1-Small-Region.svs");
    sp_slide *s = NULL;
    sp_error e = {0};
    const int side = 512;
    uint8_t *img = malloc((size_t)side * side * 3);
    CU_ASSERT_PTR_NOT_NULL_FATAL(img);
    CU_ASSERT_TRUE_FATAL(sp_slide_open(path, false, &s, &e));
    sp_reader *r = sp_reader_create(s, 0, NULL, &e);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_TRUE_FATAL(sp_reader_read(r, 0, 900, 1300, side, side, img, &e));
    const size_t stride = (size_t)side * 3;
    check_stream(img, 256, 256, stride, &fp, &seed, "CMU-1");
    check_stream(img + 256 * stride + 3 * 200, 255, 97, stride, &fp, &seed,
                 "CMU-1 piece");
    check_stream(img + 3 * 7, 500, 3, stride, &fp, &seed, "CMU-1 strip");
    fp.tissue_threshold = 40;
    fp.cellularity_od = 0.7;
    check_stream(img, side, side, stride, &fp, &seed, "CMU-1 whole");
    sp_reader_free(r);
    sp_slide_close(s);
    free(img);
    free(path);
}

/* A hand-made analysis result over `img` (side x side): tiles of odd sizes
 * at odd places, every other one a tissue tile. */
typedef struct {
    int x, y, w, h;
} tile_box;

static const tile_box stream_tiles[] = {
    {0, 0, 256, 256}, {256, 0, 255, 97}, {10, 300, 200, 167}, {5, 480, 33, 1},
    {40, 470, 17, 2}, {511, 100, 1, 3},  {60, 500, 300, 3},   {300, 300, 1, 1},
    {70, 80, 64, 31}, {0, 0, 512, 512},  {128, 256, 32, 2},   {1, 2, 31, 33},
};
#define N_STREAM_TILES (sizeof stream_tiles / sizeof stream_tiles[0])

static void fake_result(sp_analysis_result *r, int tissue_threshold) {
    memset(r, 0, sizeof *r);
    size_t n = N_STREAM_TILES;
    r->n = n;
    r->size = malloc(n * 2 * sizeof *r->size);
    r->features = malloc(n * SP_N_FEATURES * sizeof *r->features);
    r->work = calloc(1, sizeof *r->work);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r->work);
    r->work->samples = malloc(n * 3 * SP_STAIN_SAMPLE_N);
    r->work->is_tissue = malloc(n);
    CU_ASSERT_FATAL(r->size && r->features && r->work->samples &&
                    r->work->is_tissue);
    for (size_t k = 0; k < n; k++) {
        r->size[2 * k] = stream_tiles[k].w;
        r->size[2 * k + 1] = stream_tiles[k].h;
        r->work->is_tissue[k] = k % 2 == 0;
    }
    memset(r->features, 0x5a, n * SP_N_FEATURES * sizeof *r->features);
    memset(r->work->samples, 0x5a, n * 3 * SP_STAIN_SAMPLE_N);
    sp_feature_opts_default(&r->work->feature_opts);
    r->work->feature_opts.tissue_threshold = tissue_threshold;
}

static bool same_tiles(const sp_analysis_result *a,
                       const sp_analysis_result *b) {
    return memcmp(a->features, b->features,
                  a->n * SP_N_FEATURES * sizeof *a->features) == 0 &&
           memcmp(a->work->samples, b->work->samples,
                  a->n * 3 * SP_STAIN_SAMPLE_N) == 0;
}

/* sp_analysis_stream_* against sp_analysis_tile on real pixels: tiles of
 * odd sizes (heights 1, 2, 3 among them), tissue and not, every chunking,
 * the streams of all tiles interleaved (one state each), each chunk in a
 * buffer of its own. */
static void test_analysis_stream(void) {
    char *path = sp_test_path("CMU-1-Small-Region.svs");
    sp_slide *s = NULL;
    sp_error e = {0};
    const int side = 512;
    uint8_t *img = malloc((size_t)side * side * 3);
    CU_ASSERT_PTR_NOT_NULL_FATAL(img);
    CU_ASSERT_TRUE_FATAL(sp_slide_open(path, false, &s, &e));
    sp_reader *rd = sp_reader_create(s, 0, NULL, &e);
    CU_ASSERT_PTR_NOT_NULL_FATAL(rd);
    CU_ASSERT_TRUE_FATAL(sp_reader_read(rd, 0, 900, 1300, side, side, img, &e));
    const size_t stride = (size_t)side * 3;
    const size_t n = N_STREAM_TILES;
    sp_analysis_result one, st;
    fake_result(&one, 20);
    for (size_t k = 0; k < n; k++) {
        const tile_box *t = &stream_tiles[k];
        CU_ASSERT_TRUE_FATAL(sp_analysis_tile(
            &one, k, img + t->y * stride + 3 * (size_t)t->x, stride, &e));
    }
    /* the one-shot path is sp_features_compute and sp_stain_sample */
    for (size_t k = 0; k < n; k++) {
        const tile_box *t = &stream_tiles[k];
        const uint8_t *p = img + t->y * stride + 3 * (size_t)t->x;
        float f[SP_N_FEATURES];
        uint8_t smp[3 * SP_STAIN_SAMPLE_N];
        CU_ASSERT_TRUE(sp_features_compute(p, t->w, t->h, stride,
                                           &one.work->feature_opts, f, &e));
        CU_ASSERT_EQUAL(memcmp(f, one.features + k * SP_N_FEATURES, sizeof f),
                        0);
        sp_stain_sample(p, t->w, t->h, stride, smp);
        const uint8_t *got = one.work->samples + k * sizeof smp;
        if (one.work->is_tissue[k]) {
            CU_ASSERT_EQUAL(memcmp(smp, got, sizeof smp), 0);
        } else {
            CU_ASSERT_TRUE(got[0] == 0x5a && got[sizeof smp - 1] == 0x5a);
        }
    }
    void *states[N_STREAM_TILES];
    for (size_t k = 0; k < n; k++) {
        states[k] = malloc(sp_analysis_stream_size());
        CU_ASSERT_PTR_NOT_NULL_FATAL(states[k]);
    }
    unsigned seed = 4242;
    for (int mode = 0; mode < CHUNK_KINDS; mode++) {
        fake_result(&st, 20);
        int done[N_STREAM_TILES] = {0};
        for (size_t k = 0; k < n; k++)
            sp_analysis_stream_begin(&st, k, states[k]);
        for (bool more = true; more;) {
            more = false;
            for (size_t k = 0; k < n; k++) {
                const tile_box *t = &stream_tiles[k];
                if (done[k] == t->h)
                    continue;
                int m = next_chunk(mode, t->h - done[k], &seed);
                size_t cs;
                uint8_t *c = chunk_copy(img + 3 * (size_t)t->x, stride, t->w,
                                        t->y + done[k], m, &cs);
                CU_ASSERT_TRUE_FATAL(
                    sp_analysis_stream_rows(&st, states[k], c, cs, m, &e));
                free(c);
                done[k] += m;
                more = true;
            }
        }
        bool same = same_tiles(&one, &st);
        if (!same)
            fprintf(stderr, "analysis stream mode %d differs\n", mode);
        CU_ASSERT_TRUE(same);
        sp_analysis_result_free(&st);
    }
    for (size_t k = 0; k < n; k++)
        free(states[k]);
    sp_analysis_result_free(&one);
    sp_reader_free(rd);
    sp_slide_close(s);
    free(img);
    free(path);
}

/* The fused pass's use: a real analysis grid (tile 228: the right column
 * 168 px wide, the bottom row 3 px high; tissue and glass tiles), level 0
 * arriving in bands of 240 rows (and of 97), one state per tile of an
 * analysis row, reused row after row. */
static void test_analysis_stream_bands(void) {
    char *path = sp_test_path("CMU-1-Small-Region.svs");
    sp_slide *s = NULL;
    sp_error e = {0};
    CU_ASSERT_TRUE_FATAL(sp_slide_open(path, false, &s, &e));
    sp_analysis_opts ap;
    sp_analysis_opts_default(&ap);
    ap.tile_size = 228;
    ap.all_tiles = true;
    ap.threads = 2;
    sp_analysis_result r;
    CU_ASSERT_TRUE_FATAL(sp_analysis_prepare(s, &ap, &r, &e));
    CU_ASSERT_EQUAL_FATAL(r.read_ratio, 1.0);
    CU_ASSERT_EQUAL_FATAL(r.n, (size_t)r.cols * r.rows);
    CU_ASSERT_EQUAL(r.size[2 * r.n - 1], 3);
    CU_ASSERT_EQUAL(r.size[2 * r.n - 2], 168);
    size_t tissue = 0;
    for (size_t k = 0; k < r.n; k++)
        tissue += r.work->is_tissue[k];
    CU_ASSERT_TRUE(tissue > 0 && tissue < r.n);
    const int W = (int)r.width, H = (int)r.height;
    uint8_t *img = malloc((size_t)W * H * 3);
    CU_ASSERT_PTR_NOT_NULL_FATAL(img);
    sp_reader *rd = sp_reader_create(s, 0, NULL, &e);
    CU_ASSERT_PTR_NOT_NULL_FATAL(rd);
    CU_ASSERT_TRUE_FATAL(sp_reader_read(rd, 0, 0, 0, W, H, img, &e));
    const size_t stride = (size_t)W * 3;
    const size_t nf = r.n * SP_N_FEATURES * sizeof *r.features;
    const size_t ns = r.n * 3 * SP_STAIN_SAMPLE_N;
    memset(r.features, 0, nf);
    memset(r.work->samples, 0, ns);
    for (size_t k = 0; k < r.n; k++)
        CU_ASSERT_TRUE_FATAL(sp_analysis_tile(
            &r, k, img + r.coords[2 * k + 1] * stride + 3 * r.coords[2 * k],
            stride, &e));
    float *f1 = malloc(nf);
    uint8_t *s1 = malloc(ns);
    CU_ASSERT_FATAL(f1 && s1);
    memcpy(f1, r.features, nf);
    memcpy(s1, r.work->samples, ns);
    void **states = calloc((size_t)r.cols, sizeof *states);
    CU_ASSERT_PTR_NOT_NULL_FATAL(states);
    for (int i = 0; i < r.cols; i++) {
        states[i] = malloc(sp_analysis_stream_size());
        CU_ASSERT_PTR_NOT_NULL_FATAL(states[i]);
    }
    const int bands[] = {240, 97};
    for (size_t bi = 0; bi < sizeof bands / sizeof bands[0]; bi++) {
        memset(r.features, 0, nf);
        memset(r.work->samples, 0, ns);
        for (int b0 = 0; b0 < H; b0 += bands[bi]) {
            int b1 = b0 + bands[bi] < H ? b0 + bands[bi] : H;
            size_t bs;
            uint8_t *band = chunk_copy(img, stride, W, b0, b1 - b0, &bs);
            for (size_t k = 0; k < r.n; k++) {
                int ty = (int)r.coords[2 * k + 1], th = r.size[2 * k + 1];
                int y0 = ty > b0 ? ty : b0;
                int y1 = ty + th < b1 ? ty + th : b1;
                if (y0 >= y1)
                    continue;
                void *state = states[k % (size_t)r.cols];
                if (y0 == ty)
                    sp_analysis_stream_begin(&r, k, state);
                const uint8_t *p =
                    band + (size_t)(y0 - b0) * bs + 3 * r.coords[2 * k];
                CU_ASSERT_TRUE_FATAL(
                    sp_analysis_stream_rows(&r, state, p, bs, y1 - y0, &e));
            }
            free(band);
        }
        CU_ASSERT_EQUAL(memcmp(f1, r.features, nf), 0);
        CU_ASSERT_EQUAL(memcmp(s1, r.work->samples, ns), 0);
    }
    for (int i = 0; i < r.cols; i++)
        free(states[i]);
    free(states);
    free(f1);
    free(s1);
    free(img);
    sp_reader_free(rd);
    sp_analysis_result_free(&r);
    sp_slide_close(s);
    free(path);
}

/* Misuse of the streams: SP_ERR_USAGE, and the stream goes on unharmed. */
static void test_stream_misuse(void) {
    const int w = 40, h = 9;
    uint8_t *buf = malloc((size_t)w * h * 3);
    CU_ASSERT_PTR_NOT_NULL_FATAL(buf);
    unsigned seed = 5;
    fill_kind(buf, w, h, (size_t)w * 3, PX_STAINED, &seed);
    const size_t stride = (size_t)w * 3;
    float want[SP_N_FEATURES], f[SP_N_FEATURES];
    sp_error e = {0};
    CU_ASSERT_TRUE_FATAL(
        sp_features_compute(buf, w, h, stride, NULL, want, &e));

    /* features */
    CU_ASSERT_EQUAL(sp_features_stream_size(0), 0);
    void *fs = malloc(sp_features_stream_size(w));
    CU_ASSERT_PTR_NOT_NULL_FATAL(fs);
    memset(fs, 0, sp_features_stream_size(w));
    CU_ASSERT_FALSE(sp_features_rows(fs, buf, stride, 1, &e)); /* not begun */
    CU_ASSERT_EQUAL(e.code, SP_ERR_USAGE);
    sp_error_clear(&e);
    CU_ASSERT_FALSE(sp_features_begin(fs, w, 0, NULL, &e));
    CU_ASSERT_EQUAL(e.code, SP_ERR_USAGE);
    sp_error_clear(&e);
    sp_feature_opts bad;
    sp_feature_opts_default(&bad);
    bad.tissue_threshold = 255;
    CU_ASSERT_FALSE(sp_features_begin(fs, w, h, &bad, &e));
    CU_ASSERT_EQUAL(e.code, SP_ERR_USAGE);
    sp_error_clear(&e);
    CU_ASSERT_TRUE_FATAL(sp_features_begin(fs, w, h, NULL, &e));
    CU_ASSERT_TRUE(sp_features_rows(fs, buf, stride, 4, &e));
    CU_ASSERT_FALSE(sp_features_end(fs, f, &e)); /* 4 of 9 rows */
    CU_ASSERT_EQUAL(e.code, SP_ERR_USAGE);
    sp_error_clear(&e);
    CU_ASSERT_FALSE(sp_features_rows(fs, buf + 4 * stride, stride, 6, &e));
    CU_ASSERT_EQUAL(e.code, SP_ERR_USAGE);
    CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "5 of 9 left"));
    sp_error_clear(&e);
    CU_ASSERT_FALSE(sp_features_rows(fs, buf + 4 * stride, stride, -1, &e));
    CU_ASSERT_EQUAL(e.code, SP_ERR_USAGE);
    sp_error_clear(&e);
    CU_ASSERT_FALSE(sp_features_rows(fs, buf + 4 * stride, 3, 2, &e));
    CU_ASSERT_EQUAL(e.code, SP_ERR_USAGE);
    sp_error_clear(&e);
    CU_ASSERT_TRUE(sp_features_rows(fs, NULL, 0, 0, &e));
    CU_ASSERT_TRUE(sp_features_rows(fs, buf + 4 * stride, stride, 5, &e));
    CU_ASSERT_FALSE(sp_features_rows(fs, buf, stride, 1, &e)); /* all in */
    CU_ASSERT_EQUAL(e.code, SP_ERR_USAGE);
    sp_error_clear(&e);
    CU_ASSERT_TRUE(sp_features_end(fs, f, &e));
    CU_ASSERT_EQUAL(memcmp(f, want, sizeof f), 0);
    CU_ASSERT_FALSE(sp_features_end(fs, f, &e)); /* ended */
    CU_ASSERT_EQUAL(e.code, SP_ERR_USAGE);
    sp_error_clear(&e);
    free(fs);

    /* analysis */
    sp_analysis_result r, one;
    fake_result(&r, 20);
    fake_result(&one, 20);
    const size_t k = 4;  /* 17 x 2 at (40, 470): a tissue tile */
    const size_t k2 = 3; /* 33 x 1: not a tissue tile */
    const int side = 600;
    uint8_t *img = malloc((size_t)side * side * 3);
    CU_ASSERT_PTR_NOT_NULL_FATAL(img);
    fill_kind(img, side, side, (size_t)side * 3, PX_STAINED, &seed);
    const size_t is = (size_t)side * 3;
    const tile_box *t = &stream_tiles[k];
    const uint8_t *p = img + t->y * is + 3 * (size_t)t->x;
    CU_ASSERT_TRUE_FATAL(sp_analysis_tile(&one, k, p, is, &e));
    void *st = malloc(sp_analysis_stream_size());
    CU_ASSERT_PTR_NOT_NULL_FATAL(st);
    memset(st, 0, sp_analysis_stream_size());
    CU_ASSERT_FALSE(sp_analysis_stream_rows(&r, st, p, is, 1, &e));
    CU_ASSERT_EQUAL(e.code, SP_ERR_USAGE); /* not begun */
    sp_error_clear(&e);
    sp_analysis_stream_begin(&r, r.n, st);
    CU_ASSERT_FALSE(sp_analysis_stream_rows(&r, st, p, is, 1, &e));
    CU_ASSERT_EQUAL(e.code, SP_ERR_USAGE);
    CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "out of range"));
    sp_error_clear(&e);
    CU_ASSERT_FALSE(sp_analysis_tile(&r, r.n, p, is, &e));
    CU_ASSERT_EQUAL(e.code, SP_ERR_USAGE);
    sp_error_clear(&e);
    sp_analysis_stream_begin(&r, k, st);
    CU_ASSERT_FALSE(sp_analysis_stream_rows(&r, st, p, is, 3, &e));
    CU_ASSERT_EQUAL(e.code, SP_ERR_USAGE); /* 3 rows of a 2-row tile */
    CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "2 of 2 left"));
    sp_error_clear(&e);
    CU_ASSERT_TRUE(sp_analysis_stream_rows(&r, st, p, is, 1, &e));
    CU_ASSERT_FALSE(sp_analysis_stream_rows(&r, st, p + is, is, 2, &e));
    CU_ASSERT_EQUAL(e.code, SP_ERR_USAGE);
    sp_error_clear(&e);
    CU_ASSERT_FALSE(sp_analysis_stream_rows(&r, st, NULL, is, 1, &e));
    CU_ASSERT_EQUAL(e.code, SP_ERR_USAGE);
    sp_error_clear(&e);
    /* nothing stored before the last row */
    CU_ASSERT_EQUAL(((const uint8_t *)(r.features + k * SP_N_FEATURES))[0],
                    0x5a);
    CU_ASSERT_TRUE(sp_analysis_stream_rows(&r, st, p + is, is, 1, &e));
    CU_ASSERT_EQUAL(memcmp(r.features + k * SP_N_FEATURES,
                           one.features + k * SP_N_FEATURES,
                           SP_N_FEATURES * sizeof *r.features),
                    0);
    CU_ASSERT_EQUAL(memcmp(r.work->samples + k * 3 * SP_STAIN_SAMPLE_N,
                           one.work->samples + k * 3 * SP_STAIN_SAMPLE_N,
                           3 * SP_STAIN_SAMPLE_N),
                    0);
    CU_ASSERT_FALSE(sp_analysis_stream_rows(&r, st, p, is, 1, &e));
    CU_ASSERT_EQUAL(e.code, SP_ERR_USAGE); /* complete */
    sp_error_clear(&e);
    /* the state is free again: a glass tile, dropped part way first */
    t = &stream_tiles[k2];
    p = img + t->y * is + 3 * (size_t)t->x;
    CU_ASSERT_TRUE_FATAL(sp_analysis_tile(&one, k2, p, is, &e));
    sp_analysis_stream_begin(&r, k, st);
    CU_ASSERT_TRUE(sp_analysis_stream_rows(&r, st, img, is, 1, &e));
    sp_analysis_stream_begin(&r, k2, st);
    CU_ASSERT_TRUE(sp_analysis_stream_rows(&r, st, p, is, 0, &e));
    CU_ASSERT_TRUE(sp_analysis_stream_rows(&r, st, p, is, 1, &e));
    CU_ASSERT_TRUE(same_tiles(&r, &one));
    free(st);
    free(img);
    sp_analysis_result_free(&r);
    sp_analysis_result_free(&one);
    free(buf);
}

static void test_otsu(void) {
    uint64_t h[256] = {0};
    h[50] = 100;
    h[200] = 100;
    CU_ASSERT_EQUAL(sp_otsu_u8(h), 50); /* skimage: 50 */
    memset(h, 0, sizeof h);
    h[77] = 9;
    CU_ASSERT_EQUAL(sp_otsu_u8(h), 77); /* one value: that value */
    memset(h, 0, sizeof h);
    for (int v = 0; v < 256; v++)
        h[v] = (uint64_t)(int)(1000 * exp(-pow((v - 60) / 10.0, 2))) +
               (uint64_t)(int)(400 * exp(-pow((v - 180) / 20.0, 2)));
    CU_ASSERT_EQUAL(sp_otsu_u8(h), 86); /* skimage threshold_otsu: 86 */
}

/* Pixels mixed from two known OD vectors: Macenko finds them, H first. */
static void test_macenko_synthetic(void) {
    const double H[3] = {0.65, 0.70, 0.29}, E[3] = {0.07, 0.99, 0.11};
    const size_t n = 20000;
    uint8_t *px = malloc(n * 3);
    unsigned seed = 7;
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1103515245u + 12345u;
        double ch = ((seed >> 8) & 0xffff) / 65535.0 * 1.5;
        seed = seed * 1103515245u + 12345u;
        double ce = ((seed >> 8) & 0xffff) / 65535.0 * 1.5;
        if (i % 3 == 0)
            ch *= 0.05; /* pure-ish eosin */
        else if (i % 3 == 1)
            ce *= 0.05; /* pure-ish hematoxylin */
        for (int c = 0; c < 3; c++) {
            double od = ch * H[c] + ce * E[c] + 0.2;
            double v = 255.0 * pow(10.0, -od);
            px[3 * i + c] = (uint8_t)(v + 0.5);
        }
    }
    double he[2][3];
    size_t used = 0;
    sp_error e = {0};
    CU_ASSERT_TRUE_FATAL(sp_stain_macenko(px, n, NULL, he, &used, &e));
    CU_ASSERT_TRUE(used > n / 2);
    double nh = sqrt(H[0] * H[0] + H[1] * H[1] + H[2] * H[2]);
    double ne = sqrt(E[0] * E[0] + E[1] * E[1] + E[2] * E[2]);
    double ch = (he[0][0] * H[0] + he[0][1] * H[1] + he[0][2] * H[2]) / nh;
    double ce = (he[1][0] * E[0] + he[1][1] * E[1] + he[1][2] * E[2]) / ne;
    CU_ASSERT_TRUE(ch > 0.98);
    CU_ASSERT_TRUE(ce > 0.98);
    if (ch <= 0.98 || ce <= 0.98)
        fprintf(stderr, "macenko cos H %g E %g\n", ch, ce);
    for (int a = 0; a < 2; a++)
        CU_ASSERT_DOUBLE_EQUAL(he[a][0] * he[a][0] + he[a][1] * he[a][1] +
                                   he[a][2] * he[a][2],
                               1.0, 1e-9);
    /* glass only: too few stained pixels */
    memset(px, 250, n * 3);
    CU_ASSERT_FALSE(sp_stain_macenko(px, n, NULL, he, &used, &e));
    CU_ASSERT_EQUAL(e.code, SP_ERR_INPUT);
    CU_ASSERT_EQUAL(used, 0);
    free(px);
}

static void test_bad_parameters(void) {
    uint8_t px[3 * 16] = {0};
    float f[SP_N_FEATURES];
    sp_error e = {0};
    CU_ASSERT_FALSE(sp_features_compute(px, 0, 4, 12, NULL, f, &e));
    CU_ASSERT_EQUAL(e.code, SP_ERR_USAGE);
    sp_error_clear(&e);
    CU_ASSERT_FALSE(sp_features_compute(px, 4, 4, 11, NULL, f, &e));
    CU_ASSERT_EQUAL(e.code, SP_ERR_USAGE);
    sp_error_clear(&e);
    CU_ASSERT_FALSE(sp_features_compute(NULL, 4, 4, 12, NULL, f, &e));
    CU_ASSERT_EQUAL(e.code, SP_ERR_USAGE);
    sp_error_clear(&e);
    sp_feature_opts fp;
    sp_feature_opts_default(&fp);
    fp.tissue_threshold = 300;
    CU_ASSERT_FALSE(sp_features_compute(px, 4, 4, 12, &fp, f, &e));
    CU_ASSERT_EQUAL(e.code, SP_ERR_USAGE);
    sp_error_clear(&e);
    fp.tissue_threshold = 20;
    fp.cellularity_od = NAN;
    CU_ASSERT_FALSE(sp_features_compute(px, 4, 4, 12, &fp, f, &e));
    CU_ASSERT_EQUAL(e.code, SP_ERR_USAGE);
    sp_error_clear(&e);

    char *p = sp_test_path("CMU-1-Small-Region.svs");
    char *q = sp_test_path("tcga-cr-7395-01a-01-ts1.svs");
    sp_slide *cmu = NULL, *tcga = NULL;
    CU_ASSERT_TRUE_FATAL(sp_slide_open(p, false, &cmu, &e));
    CU_ASSERT_TRUE_FATAL(sp_slide_open(q, false, &tcga, &e));
    sp_analysis_opts ap;
    sp_analysis_result r;
    /* each case: one bad field, SP_ERR_USAGE naming the slide, result zeroed */
    for (int k = 0; k < 9; k++) {
        sp_analysis_opts_default(&ap);
        sp_slide *s = cmu;
        const char *want = NULL;
        switch (k) {
        case 0:
            ap.tile_size = 4;
            want = "tile size";
            break;
        case 1:
            ap.mpp = 0.1;
            want = "finer than level 0";
            break;
        case 2:
            s = tcga;
            ap.mpp = 0.5;
            want = "records no mpp";
            break;
        case 3:
            s = tcga;
            ap.magnification = 10;
            want = "no objective power";
            break;
        case 4:
            ap.mpp = 1;
            ap.magnification = 10;
            want = "not both";
            break;
        case 5:
            ap.mask.close_radius = -1;
            want = "tissue mask";
            break;
        case 6:
            ap.pen_threshold = 2;
            want = "pen threshold";
            break;
        case 7:
            ap.mask.threshold = 255;
            want = "tissue mask";
            break;
        case 8:
            ap.macenko.alpha = 60;
            want = "alpha";
            break;
        }
        sp_error_clear(&e);
        memset(&r, 0x5a, sizeof r);
        CU_ASSERT_FALSE(sp_analyze_slide(s, &ap, &r, &e));
        CU_ASSERT_EQUAL(e.code, SP_ERR_USAGE);
        CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, sp_slide_path(s)));
        if (!strstr(e.msg, want)) {
            fprintf(stderr, "case %d: '%s' lacks '%s'\n", k, e.msg, want);
            CU_FAIL("message");
        }
        CU_ASSERT_PTR_NULL(r.features);
        CU_ASSERT_EQUAL(r.n, 0);
        sp_analysis_result_free(&r);
    }
    sp_analysis_result_free(NULL);
    sp_mask_free(NULL);
    sp_slide_close(cmu);
    sp_slide_close(tcga);
    free(p);
    free(q);
}

static pthread_t progress_thread;
static int progress_calls, progress_other_thread;
static int64_t progress_last;

static void on_progress(void *user, const char *phase, int64_t done,
                        int64_t total) {
    (void)user;
    if (!pthread_equal(pthread_self(), progress_thread))
        progress_other_thread++;
    if (strcmp(phase, "tiles") == 0) {
        CU_ASSERT_TRUE(done <= total);
        CU_ASSERT_TRUE(done >= progress_last);
        progress_last = done;
    }
    progress_calls++;
}

static bool same_result(const sp_analysis_result *a,
                        const sp_analysis_result *b) {
    if (a->n != b->n || a->cols != b->cols || a->rows != b->rows ||
        a->mask.width != b->mask.width || a->mask.height != b->mask.height)
        return false;
    size_t n = a->n;
    return memcmp(a->mask.data, b->mask.data,
                  (size_t)a->mask.width * a->mask.height) == 0 &&
           memcmp(a->coords, b->coords, n * 2 * sizeof *a->coords) == 0 &&
           memcmp(a->size, b->size, n * 2 * sizeof *a->size) == 0 &&
           memcmp(a->coverage, b->coverage, n * sizeof *a->coverage) == 0 &&
           memcmp(a->features, b->features,
                  n * SP_N_FEATURES * sizeof *a->features) == 0 &&
           memcmp(&a->summary, &b->summary, sizeof a->summary) == 0;
}

/* Sets the cancel flag once the mask is done. */
static volatile sig_atomic_t cancel_flag;

static void cancel_after_mask(void *user, const char *phase, int64_t done,
                              int64_t total) {
    (void)user;
    (void)done;
    (void)total;
    if (strcmp(phase, "mask") == 0)
        cancel_flag = 1;
}

/* The whole analysis gives the same bytes with 1 and with 3 threads, on
 * the level-0 grid and on a resampled (--mpp) grid; cancelled, it fails
 * with "interrupted" and leaves a zeroed result. */
static void test_threads_identical(void) {
    struct {
        const char *slide;
        double mpp;
        bool all;
        int tile;
    } runs[] = {
        {"CMU-1-Small-Region.svs", 0, false, 256},
        {"CMU-1-Small-Region.svs", 1.3, true, 200},
        {"tcga-cr-7395-01a-01-ts1.svs", 0, false, 512},
    };
    for (size_t k = 0; k < sizeof runs / sizeof runs[0]; k++) {
        char *p = sp_test_path(runs[k].slide);
        sp_slide *s = NULL;
        sp_error e = {0};
        CU_ASSERT_TRUE_FATAL(sp_slide_open(p, false, &s, &e));
        sp_analysis_opts ap;
        sp_analysis_opts_default(&ap);
        ap.mpp = runs[k].mpp;
        ap.all_tiles = runs[k].all;
        ap.tile_size = runs[k].tile;
        ap.progress = on_progress;
        progress_thread = pthread_self();
        progress_calls = progress_other_thread = 0;
        progress_last = 0;
        sp_analysis_result one, many;
        ap.threads = 1;
        CU_ASSERT_TRUE_FATAL(sp_analyze_slide(s, &ap, &one, &e));
        ap.threads = 3;
        progress_last = 0;
        CU_ASSERT_TRUE_FATAL(sp_analyze_slide(s, &ap, &many, &e));
        CU_ASSERT_TRUE(progress_calls > 2);
        CU_ASSERT_EQUAL(progress_other_thread, 0);
        CU_ASSERT_TRUE(one.n > 0);
        CU_ASSERT_TRUE(same_result(&one, &many));
        if (runs[k].all) {
            CU_ASSERT_EQUAL(one.n, (size_t)one.cols * one.rows);
        } else {
            CU_ASSERT_TRUE(one.n < (size_t)one.cols * one.rows);
        }
        CU_ASSERT_EQUAL(one.summary.tiles_analysed, one.n);
        CU_ASSERT_TRUE(one.summary.stain_ok);
        /* H is the vector with the larger red OD */
        CU_ASSERT_TRUE(one.summary.stain_he[0][0] > one.summary.stain_he[1][0]);
        if (k == 0) {
            CU_ASSERT_TRUE(one.summary.mpp_known);
            CU_ASSERT_TRUE(one.summary.tissue_area_mm2 > 0.2 &&
                           one.summary.tissue_area_mm2 < 1.0);
            CU_ASSERT_EQUAL(one.summary.pen_fraction, 0);
            CU_ASSERT_EQUAL(one.summary.blurry_fraction, 0);
            /* glass in the top-left corner, none of its tiles analysed */
            CU_ASSERT_EQUAL(one.mask.data[0], 0);
            CU_ASSERT_TRUE(one.coords[0] > 0 || one.coords[1] > 0);
        } else if (k == 1) {
            CU_ASSERT_EQUAL(one.read_level, 0);
            CU_ASSERT_DOUBLE_EQUAL(one.downsample, 1.3 / 0.499, 1e-9);
        } else {
            CU_ASSERT_FALSE(one.summary.mpp_known);
            CU_ASSERT_TRUE(isnan(one.summary.tissue_area_mm2));
            CU_ASSERT_TRUE(one.summary.tissue_area_px > 0);
        }
        sp_analysis_result_free(&one);
        sp_analysis_result_free(&many);
        cancel_flag = 0;
        ap.progress = cancel_after_mask;
        ap.cancel = &cancel_flag;
        CU_ASSERT_FALSE(sp_analyze_slide(s, &ap, &one, &e));
        CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "interrupted"));
        CU_ASSERT_TRUE(one.n == 0 && !one.work && !one.features);
        sp_slide_close(s);
        free(p);
    }
}

/* A slide whose pixels cannot be decoded: the analysis fails with the
 * decoder's cause and leaves nothing behind. */
static void test_unreadable_slide(void) {
    char *p = sp_test_path("unreadable.svs");
    sp_slide *s = NULL;
    sp_error e = {0};
    CU_ASSERT_TRUE_FATAL(sp_slide_open(p, false, &s, &e));
    sp_analysis_opts ap;
    sp_analysis_opts_default(&ap);
    ap.threads = 2;
    sp_analysis_result r;
    CU_ASSERT_FALSE(sp_analyze_slide(s, &ap, &r, &e));
    CU_ASSERT_EQUAL(e.code, SP_ERR_INPUT);
    CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, p));
    CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "Bogus marker length"));
    CU_ASSERT_PTR_NULL(r.mask.data);
    CU_ASSERT_PTR_NULL(r.features);
    sp_mask m;
    sp_error_clear(&e);
    CU_ASSERT_FALSE(sp_mask_compute(s, NULL, 1, &m, &e));
    CU_ASSERT_EQUAL(e.code, SP_ERR_INPUT);
    CU_ASSERT_PTR_NULL(m.data);
    sp_slide_close(s);
    free(p);
}

/* The PNG writer produces a valid signature and IHDR. */
static void test_mask_png(void) {
    uint8_t data[5 * 3] = {0, 255, 0, 255, 0, 255, 255, 255,
                           0, 0,   0, 0,   0, 0,   255};
    sp_mask m = {.width = 5, .height = 3, .data = data};
    char path[512];
    snprintf(path, sizeof path, "%s/mask.png", sp_test_tmpdir());
    sp_error e = {0};
    CU_ASSERT_TRUE_FATAL(sp_mask_write_png(&m, path, &e));
    FILE *f = fopen(path, "rb");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    uint8_t head[33];
    CU_ASSERT_EQUAL(fread(head, 1, sizeof head, f), sizeof head);
    fclose(f);
    CU_ASSERT_EQUAL(memcmp(head, "\x89PNG\r\n\x1a\n", 8), 0);
    CU_ASSERT_EQUAL(memcmp(head + 12, "IHDR", 4), 0);
    CU_ASSERT_EQUAL(head[19], 5);
    CU_ASSERT_EQUAL(head[23], 3);
    sp_mask empty = {0};
    CU_ASSERT_FALSE(sp_mask_write_png(&empty, path, &e));
}

int main(void) {
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 2;
    CU_pSuite s = CU_add_suite("analysis", NULL, NULL);
    CU_ADD_TEST(s, test_feature_table);
    CU_ADD_TEST(s, test_uniform);
    CU_ADD_TEST(s, test_checkerboard);
    CU_ADD_TEST(s, test_stride);
    CU_ADD_TEST(s, test_kernels);
    CU_ADD_TEST(s, test_features_stream);
    CU_ADD_TEST(s, test_analysis_stream);
    CU_ADD_TEST(s, test_analysis_stream_bands);
    CU_ADD_TEST(s, test_stream_misuse);
    CU_ADD_TEST(s, test_otsu);
    CU_ADD_TEST(s, test_macenko_synthetic);
    CU_ADD_TEST(s, test_bad_parameters);
    CU_ADD_TEST(s, test_threads_identical);
    CU_ADD_TEST(s, test_unreadable_slide);
    CU_ADD_TEST(s, test_mask_png);
    return sp_test_run();
}
