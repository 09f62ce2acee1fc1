/* Per-tile features of a plain RGB buffer, in one pass over the pixels
 * (the Laplacian trails one row behind the colour statistics). The row
 * kernels come in portable C and in x86 AVX2, chosen once at run time;
 * both give the same bytes, as every sum is an exact integer (H and E in
 * fixed point, analysis_private.h). */
#include "analysis.h"
#include "analysis_private.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#if defined(__GNUC__) && defined(__x86_64__)
#define SP_FEATURES_X86 1
#include <immintrin.h>
#endif

static const sp_feature_info feature_table[SP_N_FEATURES] = {
    [SP_F_TISSUE_FRACTION] = {"tissue_fraction", "fraction",
                              "share of pixels whose 8-bit saturation is above "
                              "the tissue threshold"},
    [SP_F_MEAN_R] = {"mean_r", "0-255", "mean red"},
    [SP_F_MEAN_G] = {"mean_g", "0-255", "mean green"},
    [SP_F_MEAN_B] = {"mean_b", "0-255", "mean blue"},
    [SP_F_STD_R] = {"std_r", "0-255", "standard deviation of red"},
    [SP_F_STD_G] = {"std_g", "0-255", "standard deviation of green"},
    [SP_F_STD_B] = {"std_b", "0-255", "standard deviation of blue"},
    [SP_F_SATURATION] = {"saturation", "0-1",
                         "mean HSV saturation (max-min)/max"},
    [SP_F_BRIGHTNESS] = {"brightness", "0-1", "mean ITU-R 601 luma / 255"},
    [SP_F_CONTRAST] = {"contrast", "0-1",
                       "RMS contrast: standard deviation of luma / 255"},
    [SP_F_OD_H] = {"od_h", "OD",
                   "mean hematoxylin optical density (Ruifrok-Johnston)"},
    [SP_F_OD_E] = {"od_e", "OD",
                   "mean eosin optical density (Ruifrok-Johnston)"},
    [SP_F_BLUR] = {"blur", "0-255 squared",
                   "variance of the 4-neighbour Laplacian of luma "
                   "(low means blurry)"},
    [SP_F_PEN_FRACTION] = {"pen_fraction", "fraction",
                           "share of pixels with pen-ink colours"},
    [SP_F_CELLULARITY] = {"cellularity", "fraction",
                          "share of pixels whose hematoxylin OD is above the "
                          "cellularity threshold"},
    [SP_F_ENTROPY] = {"entropy", "bits",
                      "Shannon entropy of the 256-bin luma histogram"},
};

const sp_feature_info *sp_feature_table(void) { return feature_table; }

void sp_feature_opts_default(sp_feature_opts *p) {
    p->tissue_threshold = SP_DEFAULT_TISSUE_THRESHOLD;
    p->cellularity_od = SP_DEFAULT_CELLULARITY_OD;
}

/* A pixel's saturation (max - min) / max in fixed point, SAT_ONE units:
 * the single-precision quotient of (max - min) * SAT_ONE (exact) by max
 * (at least 1), rounded to the nearest integer (ties to even). One
 * correctly rounded division and one rounding, which the AVX2 kernel
 * repeats lane by lane (vdivps, vcvtps2dq), so both give the same
 * integers; each is within 0.75 unit (9e-8) of the exact ratio. */
#define SAT_SHIFT 23
#define SAT_ONE (1u << SAT_SHIFT)
static inline uint32_t sat_fix(unsigned mx, unsigned d) {
    float q = (float)(d << SAT_SHIFT) / (float)(mx ? mx : 1);
    return (uint32_t)lrintf(q);
}

/* ITU-R 601-2 luma exactly as Pillow's convert("L"). */
static inline unsigned luma(unsigned r, unsigned g, unsigned b) {
    return (r * 19595u + g * 38470u + b * 7471u + 0x8000u) >> 16;
}

/* Sums of one tile, all exact integers. The histograms are split four ways
 * by column (x % 4) so that runs of equal values do not queue on one
 * counter; the four are added at the end. */
typedef struct {
    uint64_t sum[3], sq[3]; /* R, G, B: sums and sums of squares */
    uint32_t hist[4][256];  /* luma */
    uint64_t sat;           /* saturations, SAT_ONE units (sat_fix) */
    int64_t sum_h, sum_e;   /* densities clipped at 0, SP__OD_FIX_ONE units */
    uint64_t tissue, pen, cell;
    int64_t lap_sum;
    uint64_t lap_sq;
} acc;

/* Constants of the row kernels for one call. */
typedef struct {
    const sp__stain_tables *T;
    unsigned thr1; /* tissue threshold + 1 */
    double cell_od;
    /* A fixed-point H density above cell_hi is cellular, one at or below
     * cell_lo is not; in between (a few 2^-28 OD around cell_od) the pixel
     * is decided in double, so the count is that of the double definition. */
    int32_t cell_lo, cell_hi;
} row_ctx;

/* cell_lo and cell_hi for `cell_od` (finite). A fixed-point density hf is
 * within 1.5 units of the double one times 2^28 (analysis_private.h). */
static void cell_bounds(double cell_od, int32_t *lo, int32_t *hi) {
    double c = cell_od * SP__OD_FIX_ONE;
    if (c < 0) { /* a clipped density, >= 0, is always above */
        *lo = *hi = INT32_MIN;
    } else if (c > 2e9) { /* above any density (|hf| < 1.71e9) */
        *lo = *hi = INT32_MAX;
    } else {
        *hi = (int32_t)ceil(c) + 3;  /* hf > hi: hf >= c + 4 */
        *lo = (int32_t)floor(c) - 4; /* hf <= lo: hf <= c - 4 */
    }
}

/* A pixel's cellularity in double, as FEATURES.md defines it. */
static unsigned cell_exact(const row_ctx *c, unsigned r, unsigned g,
                           unsigned b) {
    const sp__stain_tables *T = c->T;
    double hv = T->h[0][r] + T->h[1][g] + T->h[2][b];
    hv = hv > 0.0 ? hv : 0.0;
    return hv > c->cell_od;
}

/* Colour statistics of pixels x0 .. w-1 of a row (`px` points at pixel 0);
 * writes their luma into grey[x0 .. w-1]. The portable kernel, and the
 * tail of the vector one. */
static void colour_span(const uint8_t *px, int x0, int w, const row_ctx *c,
                        acc *a, uint8_t *grey) {
    const int32_t(*F)[256][2] = c->T->he_fix;
    const unsigned thr1 = c->thr1;
    const int32_t cell_lo = c->cell_lo, cell_hi = c->cell_hi;
    int64_t sh = 0, se = 0;
    uint64_t tissue = 0, pen = 0, cell = 0, sat = 0;
    uint64_t s0 = 0, s1 = 0, s2 = 0;
    uint64_t q0 = 0, q1 = 0, q2 = 0;
    px += 3 * (size_t)x0;
    for (int x = x0; x < w; x++, px += 3) {
        unsigned r = px[0], g = px[1], b = px[2];
        s0 += r;
        s1 += g;
        s2 += b;
        q0 += r * r;
        q1 += g * g;
        q2 += b * b;
        unsigned y = luma(r, g, b);
        grey[x] = (uint8_t)y;
        a->hist[x & 3][y]++;
        unsigned mx = r > g ? r : g, mn = r < g ? r : g;
        mx = mx > b ? mx : b;
        mn = mn < b ? mn : b;
        unsigned d = mx - mn;
        sat += sat_fix(mx, d);
        /* floor(255 d / mx) > thr  <=>  255 d >= (thr + 1) mx, d > 0 */
        tissue += (unsigned)(d * 255u >= thr1 * mx) & (unsigned)(d > 0);
        int32_t hv = F[0][r][0] + F[1][g][0] + F[2][b][0];
        int32_t ev = F[0][r][1] + F[1][g][1] + F[2][b][1];
        cell += hv > cell_hi;
        if (hv > cell_lo && hv <= cell_hi) /* too close to call: rare */
            cell += cell_exact(c, r, g, b);
        sh += hv > 0 ? hv : 0; /* maxsd, no branch */
        se += ev > 0 ? ev : 0;
        pen += sp__is_pen((int)r, (int)g, (int)b);
    }
    a->sum[0] += s0;
    a->sum[1] += s1;
    a->sum[2] += s2;
    a->sq[0] += q0;
    a->sq[1] += q1;
    a->sq[2] += q2;
    a->sum_h += sh;
    a->sum_e += se;
    a->tissue += tissue;
    a->pen += pen;
    a->cell += cell;
    a->sat += sat;
}

/* Colour statistics of one row; writes the row's luma into `grey`. */
static void colour_row(const uint8_t *px, int w, const row_ctx *c, acc *a,
                       uint8_t *grey) {
    colour_span(px, 0, w, c, a, grey);
}

/* Laplacians of the interior pixels x0 .. x1-1 of row `c`, added to *s and
 * *q. */
static void laplace_span(const uint8_t *u, const uint8_t *c, const uint8_t *d,
                         int x0, int x1, int64_t *s, uint64_t *q) {
    int64_t ls = 0;
    uint64_t lq = 0;
    for (int x = x0; x < x1; x++) {
        int l = 4 * c[x] - c[x - 1] - c[x + 1] - u[x] - d[x];
        ls += l;
        lq += (uint64_t)(l * l);
    }
    *s += ls;
    *q += lq;
}

/* The two edge pixels of row `c` (w >= 2), added to *s and *q. */
static void laplace_edges(const uint8_t *u, const uint8_t *c, const uint8_t *d,
                          int w, int64_t *s, uint64_t *q) {
    int l = 3 * c[0] - c[1] - u[0] - d[0];
    *s += l;
    *q += (uint64_t)(l * l);
    l = 3 * c[w - 1] - c[w - 2] - u[w - 1] - d[w - 1];
    *s += l;
    *q += (uint64_t)(l * l);
}

/* Laplacian of row `c` given its neighbours (scipy "reflect": the edge
 * pixel stands in for the missing neighbour). */
static void laplace_row(const uint8_t *u, const uint8_t *c, const uint8_t *d,
                        int w, acc *a) {
    if (w == 1) {
        int l = 2 * c[0] - u[0] - d[0];
        a->lap_sum += l;
        a->lap_sq += (uint64_t)(l * l);
        return;
    }
    laplace_edges(u, c, d, w, &a->lap_sum, &a->lap_sq);
    laplace_span(u, c, d, 1, w - 1, &a->lap_sum, &a->lap_sq);
}

typedef void (*colour_fn)(const uint8_t *px, int w, const row_ctx *c, acc *a,
                          uint8_t *grey);
typedef void (*laplace_fn)(const uint8_t *u, const uint8_t *c, const uint8_t *d,
                           int w, acc *a);

/* ---- x86 AVX2 kernels ------------------------------------------------- */
#ifdef SP_FEATURES_X86
#define SP_AVX2 __attribute__((target("avx2,popcnt")))

/* Per-row vector loops run in blocks short enough that no 32-bit lane of
 * their partial sums can overflow. */
#define COLOUR_BLOCK                                                           \
    64                    /* 32-pixel steps: squares < 64 * 4 * 255^2,         \
                            saturations <= 64 * 4 * SAT_ONE = 2^31 */
#define LAPLACE_BLOCK 512 /* 16-pixel steps: squares < 512 * 2 * 1020^2 */

/* pshufb controls picking channel k of 16 pixels out of each 16-byte third
 * t of their 48 bytes (-1: none), the same in both 128-bit lanes. */
#define SEL_R0 0, 3, 6, 9, 12, 15, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1
#define SEL_R1 -1, -1, -1, -1, -1, -1, 2, 5, 8, 11, 14, -1, -1, -1, -1, -1
#define SEL_R2 -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 1, 4, 7, 10, 13
#define SEL_G0 1, 4, 7, 10, 13, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1
#define SEL_G1 -1, -1, -1, -1, -1, 0, 3, 6, 9, 12, 15, -1, -1, -1, -1, -1
#define SEL_G2 -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 2, 5, 8, 11, 14
#define SEL_B0 2, 5, 8, 11, 14, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1
#define SEL_B1 -1, -1, -1, -1, -1, 1, 4, 7, 10, 13, -1, -1, -1, -1, -1, -1
#define SEL_B2 -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 0, 3, 6, 9, 12, 15
static const _Alignas(32) int8_t deinterleave[3][3][32] = {
    {{SEL_R0, SEL_R0}, {SEL_R1, SEL_R1}, {SEL_R2, SEL_R2}},
    {{SEL_G0, SEL_G0}, {SEL_G1, SEL_G1}, {SEL_G2, SEL_G2}},
    {{SEL_B0, SEL_B0}, {SEL_B1, SEL_B1}, {SEL_B2, SEL_B2}},
};

SP_AVX2 static inline __m256i load_2x128(const uint8_t *lo, const uint8_t *hi) {
    return _mm256_inserti128_si256(
        _mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)lo)),
        _mm_loadu_si128((const __m128i *)hi), 1);
}

/* Channel k of the 32 pixels whose 96 bytes are in t0 .. t2 (load_2x128
 * of bytes 0, 16, 32 with 48, 64, 80). */
SP_AVX2 static inline __m256i channel(__m256i t0, __m256i t1, __m256i t2,
                                      int k) {
    const __m256i *s = (const __m256i *)(const void *)deinterleave[k];
    return _mm256_or_si256(
        _mm256_or_si256(_mm256_shuffle_epi8(t0, _mm256_load_si256(s)),
                        _mm256_shuffle_epi8(t1, _mm256_load_si256(s + 1))),
        _mm256_shuffle_epi8(t2, _mm256_load_si256(s + 2)));
}

/* Adds the bytes of channel v to *sum (64-bit lanes) and their squares to
 * *sq (32-bit lanes); returns its zero-extended 16-bit halves in *lo, *hi
 * (bytes 0-7 and 8-15 of each 128-bit lane). */
SP_AVX2 static inline void channel_sums(__m256i v, __m256i *sum, __m256i *sq,
                                        __m256i *lo, __m256i *hi) {
    const __m256i z = _mm256_setzero_si256();
    *sum = _mm256_add_epi64(*sum, _mm256_sad_epu8(v, z));
    *lo = _mm256_unpacklo_epi8(v, z);
    *hi = _mm256_unpackhi_epi8(v, z);
    *sq = _mm256_add_epi32(*sq, _mm256_add_epi32(_mm256_madd_epi16(*lo, *lo),
                                                 _mm256_madd_epi16(*hi, *hi)));
}

SP_AVX2 static inline uint64_t hsum_epi64(__m256i v) {
    __m128i s = _mm_add_epi64(_mm256_castsi256_si128(v),
                              _mm256_extracti128_si256(v, 1));
    return (uint64_t)_mm_cvtsi128_si64(s) + (uint64_t)_mm_extract_epi64(s, 1);
}

/* 32-bit lanes, zero-extended, added into 64-bit lanes of `acc`. */
SP_AVX2 static inline __m256i widen_u32(__m256i acc, __m256i v) {
    acc =
        _mm256_add_epi64(acc, _mm256_cvtepu32_epi64(_mm256_castsi256_si128(v)));
    return _mm256_add_epi64(
        acc, _mm256_cvtepu32_epi64(_mm256_extracti128_si256(v, 1)));
}

/* Luma of the 16 pixels whose R, G, B are the zero-extended 16-bit lanes
 * r, g, b, in the same lanes: 38470 G is 2 x 19235 G, so every factor of
 * vpmaddwd fits a signed 16-bit word. */
SP_AVX2 static inline __m256i luma_x16(__m256i r, __m256i g, __m256i b) {
    const __m256i crg = _mm256_set1_epi32(19595 | 19235 << 16);
    const __m256i cgb = _mm256_set1_epi32(19235 | 7471 << 16);
    const __m256i half = _mm256_set1_epi32(0x8000);
    __m256i lo =
        _mm256_add_epi32(_mm256_madd_epi16(_mm256_unpacklo_epi16(r, g), crg),
                         _mm256_madd_epi16(_mm256_unpacklo_epi16(g, b), cgb));
    __m256i hi =
        _mm256_add_epi32(_mm256_madd_epi16(_mm256_unpackhi_epi16(r, g), crg),
                         _mm256_madd_epi16(_mm256_unpackhi_epi16(g, b), cgb));
    lo = _mm256_srli_epi32(_mm256_add_epi32(lo, half), 16);
    hi = _mm256_srli_epi32(_mm256_add_epi32(hi, half), 16);
    return _mm256_packus_epi32(lo, hi);
}

/* Tissue mask of 16 pixels (max and max - min in 16-bit lanes):
 * 255 d >= thr1 mx and d > 0, i.e. max(thr1 mx, 1) -sat 255 d == 0. */
SP_AVX2 static inline __m256i tissue_x16(__m256i mx, __m256i d, __m256i thr1) {
    __m256i t =
        _mm256_max_epu16(_mm256_mullo_epi16(mx, thr1), _mm256_set1_epi16(1));
    __m256i d255 = _mm256_sub_epi16(_mm256_slli_epi16(d, 8), d);
    return _mm256_cmpeq_epi16(_mm256_subs_epu16(t, d255),
                              _mm256_setzero_si256());
}

/* Adds sat_fix of the 8 pixels whose max and max - min are the 32-bit
 * lanes of mx and d to the 32-bit lanes of acc. */
SP_AVX2 static inline __m256i sat_x8(__m256i acc, __m256i mx, __m256i d) {
    __m256 q = _mm256_div_ps(
        _mm256_cvtepi32_ps(_mm256_slli_epi32(d, SAT_SHIFT)),
        _mm256_cvtepi32_ps(_mm256_max_epi32(mx, _mm256_set1_epi32(1))));
    return _mm256_add_epi32(acc, _mm256_cvtps_epi32(q));
}

/* x >= k and x <= k for unsigned bytes */
SP_AVX2 static inline __m256i ge_u8(__m256i x, __m256i k) {
    return _mm256_cmpeq_epi8(_mm256_max_epu8(x, k), x);
}
SP_AVX2 static inline __m256i le_u8(__m256i x, __m256i k) {
    return _mm256_cmpeq_epi8(_mm256_min_epu8(x, k), x);
}

/* sp__is_pen on 32 pixels, with saturating differences: g -sat r >= 30 is
 * g - r >= 30, r -sat g <= 5 is g + 5 >= r. */
SP_AVX2 static inline __m256i pen_x32(__m256i r, __m256i g, __m256i b,
                                      __m256i mx, __m256i mn, __m256i d) {
    __m256i chroma = _mm256_and_si256(
        le_u8(mn, _mm256_set1_epi8((char)200)),
        ge_u8(_mm256_max_epu8(_mm256_subs_epu8(g, r), _mm256_subs_epu8(g, b)),
              _mm256_set1_epi8(30)));
    __m256i blue = _mm256_and_si256(
        ge_u8(_mm256_min_epu8(_mm256_subs_epu8(b, r), _mm256_subs_epu8(b, g)),
              _mm256_set1_epi8(60)),
        le_u8(_mm256_subs_epu8(r, g), _mm256_set1_epi8(5)));
    __m256i black = _mm256_and_si256(le_u8(mx, _mm256_set1_epi8(39)),
                                     le_u8(d, _mm256_set1_epi8(24)));
    return _mm256_or_si256(_mm256_or_si256(chroma, blue), black);
}

/* Running H and E sums of a row in colour_row_avx2. */
typedef struct {
    const long long *F[3]; /* he_fix[c] as 8-byte {H, E} pairs */
    __m256i hi, lo;        /* cell_hi / cell_lo in H lanes, never in E */
    __m256i sh, se;        /* 64-bit sums of clipped H and E */
    __m256i cell, near;    /* 32-bit counts of H > cell_hi, H > cell_lo */
} he_state;

/* Adds the 8 pixels whose R, G, B are the 32-bit lanes of ir, ig, ib. */
SP_AVX2 static inline void he_x8(he_state *s, __m256i ir, __m256i ig,
                                 __m256i ib) {
    const __m256i lo32 = _mm256_set1_epi64x(0xffffffff);
    for (int half = 0; half < 2; half++) {
        __m128i xr =
            half ? _mm256_extracti128_si256(ir, 1) : _mm256_castsi256_si128(ir);
        __m128i xg =
            half ? _mm256_extracti128_si256(ig, 1) : _mm256_castsi256_si128(ig);
        __m128i xb =
            half ? _mm256_extracti128_si256(ib, 1) : _mm256_castsi256_si128(ib);
        __m256i v = _mm256_add_epi32(
            _mm256_add_epi32(_mm256_i32gather_epi64(s->F[0], xr, 8),
                             _mm256_i32gather_epi64(s->F[1], xg, 8)),
            _mm256_i32gather_epi64(s->F[2], xb, 8));
        __m256i gh = _mm256_cmpgt_epi32(v, s->hi);
        __m256i gl = _mm256_cmpgt_epi32(v, s->lo);
        s->cell = _mm256_sub_epi32(s->cell, gh);
        s->near = _mm256_sub_epi32(s->near, gl);
        v = _mm256_max_epi32(v, _mm256_setzero_si256());
        s->sh = _mm256_add_epi64(s->sh, _mm256_and_si256(v, lo32));
        s->se = _mm256_add_epi64(s->se, _mm256_srli_epi64(v, 32));
    }
}

/* colour_row with AVX2, 32 pixels a step; the tail in colour_span. */
SP_AVX2 static void colour_row_avx2(const uint8_t *px, int w, const row_ctx *c,
                                    acc *a, uint8_t *grey) {
    const __m256i z = _mm256_setzero_si256();
    const __m256i thr1 = _mm256_set1_epi16((short)c->thr1);
    he_state hs;
    for (int k = 0; k < 3; k++)
        hs.F[k] = (const long long *)(const void *)c->T->he_fix[k];
    hs.hi = _mm256_set_epi32(INT32_MAX, c->cell_hi, INT32_MAX, c->cell_hi,
                             INT32_MAX, c->cell_hi, INT32_MAX, c->cell_hi);
    hs.lo = _mm256_set_epi32(INT32_MAX, c->cell_lo, INT32_MAX, c->cell_lo,
                             INT32_MAX, c->cell_lo, INT32_MAX, c->cell_lo);
    hs.sh = hs.se = z;
    __m256i sum_r = z, sum_g = z, sum_b = z, sq_r = z, sq_g = z, sq_b = z;
    __m256i cell = z, near = z, sat = z;
    uint64_t tissue = 0, pen = 0;
    int x = 0;
    while (w - x >= 32) {
        int n = (w - x) / 32;
        n = n < COLOUR_BLOCK ? n : COLOUR_BLOCK;
        __m256i q_r = z, q_g = z, q_b = z, q_s = z;
        hs.cell = hs.near = z;
        for (int i = 0; i < n; i++, x += 32) {
            const uint8_t *p = px + 3 * (size_t)x;
            __m256i t0 = load_2x128(p, p + 48);
            __m256i t1 = load_2x128(p + 16, p + 64);
            __m256i t2 = load_2x128(p + 32, p + 80);
            __m256i r = channel(t0, t1, t2, 0), g = channel(t0, t1, t2, 1),
                    b = channel(t0, t1, t2, 2);
            __m256i rl, rh, gl, gh, bl, bh;
            channel_sums(r, &sum_r, &q_r, &rl, &rh);
            channel_sums(g, &sum_g, &q_g, &gl, &gh);
            channel_sums(b, &sum_b, &q_b, &bl, &bh);
            __m256i y =
                _mm256_packus_epi16(luma_x16(rl, gl, bl), luma_x16(rh, gh, bh));
            _mm256_storeu_si256((__m256i *)(grey + x), y);
            __m256i mx = _mm256_max_epu8(_mm256_max_epu8(r, g), b);
            __m256i mn = _mm256_min_epu8(_mm256_min_epu8(r, g), b);
            __m256i d = _mm256_sub_epi8(mx, mn);
            __m256i mxl = _mm256_unpacklo_epi8(mx, z),
                    mxh = _mm256_unpackhi_epi8(mx, z);
            __m256i dl = _mm256_unpacklo_epi8(d, z),
                    dh = _mm256_unpackhi_epi8(d, z);
            q_s = sat_x8(q_s, _mm256_unpacklo_epi16(mxl, z),
                         _mm256_unpacklo_epi16(dl, z));
            q_s = sat_x8(q_s, _mm256_unpackhi_epi16(mxl, z),
                         _mm256_unpackhi_epi16(dl, z));
            q_s = sat_x8(q_s, _mm256_unpacklo_epi16(mxh, z),
                         _mm256_unpacklo_epi16(dh, z));
            q_s = sat_x8(q_s, _mm256_unpackhi_epi16(mxh, z),
                         _mm256_unpackhi_epi16(dh, z));
            __m256i tis = _mm256_packs_epi16(tissue_x16(mxl, dl, thr1),
                                             tissue_x16(mxh, dh, thr1));
            tissue +=
                (unsigned)_mm_popcnt_u32((unsigned)_mm256_movemask_epi8(tis));
            pen += (unsigned)_mm_popcnt_u32(
                (unsigned)_mm256_movemask_epi8(pen_x32(r, g, b, mx, mn, d)));
            he_x8(&hs, _mm256_unpacklo_epi16(rl, z),
                  _mm256_unpacklo_epi16(gl, z), _mm256_unpacklo_epi16(bl, z));
            he_x8(&hs, _mm256_unpackhi_epi16(rl, z),
                  _mm256_unpackhi_epi16(gl, z), _mm256_unpackhi_epi16(bl, z));
            he_x8(&hs, _mm256_unpacklo_epi16(rh, z),
                  _mm256_unpacklo_epi16(gh, z), _mm256_unpacklo_epi16(bh, z));
            he_x8(&hs, _mm256_unpackhi_epi16(rh, z),
                  _mm256_unpackhi_epi16(gh, z), _mm256_unpackhi_epi16(bh, z));
            const uint8_t *gy = grey + x;
            for (int j = 0; j < 32; j += 4) {
                a->hist[0][gy[j]]++;
                a->hist[1][gy[j + 1]]++;
                a->hist[2][gy[j + 2]]++;
                a->hist[3][gy[j + 3]]++;
            }
        }
        sq_r = widen_u32(sq_r, q_r);
        sq_g = widen_u32(sq_g, q_g);
        sq_b = widen_u32(sq_b, q_b);
        sat = widen_u32(sat, q_s);
        cell = widen_u32(cell, hs.cell);
        near = widen_u32(near, hs.near);
    }
    a->sum[0] += hsum_epi64(sum_r);
    a->sum[1] += hsum_epi64(sum_g);
    a->sum[2] += hsum_epi64(sum_b);
    a->sq[0] += hsum_epi64(sq_r);
    a->sq[1] += hsum_epi64(sq_g);
    a->sq[2] += hsum_epi64(sq_b);
    a->sum_h += (int64_t)hsum_epi64(hs.sh);
    a->sum_e += (int64_t)hsum_epi64(hs.se);
    a->sat += hsum_epi64(sat);
    a->tissue += tissue;
    a->pen += pen;
    uint64_t ncell = hsum_epi64(cell), nnear = hsum_epi64(near);
    _mm256_zeroupper();   /* the caller's SSE code would pay for dirty uppers */
    if (nnear != ncell) { /* some pixels too close to call (rare) */
        const int32_t(*F)[256][2] = c->T->he_fix;
        for (int j = 0; j < x; j++) {
            const uint8_t *q = px + 3 * (size_t)j;
            unsigned r = q[0], g = q[1], b = q[2];
            int32_t hv = F[0][r][0] + F[1][g][0] + F[2][b][0];
            if (hv > c->cell_lo && hv <= c->cell_hi)
                ncell += cell_exact(c, r, g, b);
        }
    }
    a->cell += ncell;
    if (x < w)
        colour_span(px, x, w, c, a, grey);
}

/* laplace_row with AVX2, 16 interior pixels a step. */
SP_AVX2 static void laplace_row_avx2(const uint8_t *u, const uint8_t *c,
                                     const uint8_t *d, int w, acc *a) {
    if (w < 18) {
        laplace_row(u, c, d, w, a);
        return;
    }
    laplace_edges(u, c, d, w, &a->lap_sum, &a->lap_sq);
    const __m256i ones = _mm256_set1_epi16(1);
    __m256i s64 = _mm256_setzero_si256(), q64 = _mm256_setzero_si256();
    int x = 1;
    while (w - 1 - x >= 16) {
        int n = (w - 1 - x) / 16;
        n = n < LAPLACE_BLOCK ? n : LAPLACE_BLOCK;
        __m256i s = _mm256_setzero_si256(), q = _mm256_setzero_si256();
        for (int i = 0; i < n; i++, x += 16) {
#define LOAD16(p) _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(p)))
            __m256i l = _mm256_sub_epi16(
                _mm256_slli_epi16(LOAD16(c + x), 2),
                _mm256_add_epi16(
                    _mm256_add_epi16(LOAD16(c + x - 1), LOAD16(c + x + 1)),
                    _mm256_add_epi16(LOAD16(u + x), LOAD16(d + x))));
#undef LOAD16
            s = _mm256_add_epi32(s, _mm256_madd_epi16(l, ones));
            q = _mm256_add_epi32(q, _mm256_madd_epi16(l, l));
        }
        s64 = _mm256_add_epi64(
            s64, _mm256_cvtepi32_epi64(_mm256_castsi256_si128(s)));
        s64 = _mm256_add_epi64(
            s64, _mm256_cvtepi32_epi64(_mm256_extracti128_si256(s, 1)));
        q64 = widen_u32(q64, q);
    }
    a->lap_sum += (int64_t)hsum_epi64(s64);
    a->lap_sq += hsum_epi64(q64);
    _mm256_zeroupper(); /* the caller's SSE code would pay for dirty uppers */
    laplace_span(u, c, d, x, w - 1, &a->lap_sum, &a->lap_sq);
}
#endif /* SP_FEATURES_X86 */

static bool cpu_avx2;
static pthread_once_t cpu_once = PTHREAD_ONCE_INIT;

static void cpu_detect(void) {
#ifdef SP_FEATURES_X86
    __builtin_cpu_init();
    cpu_avx2 =
        __builtin_cpu_supports("avx2") && __builtin_cpu_supports("popcnt");
#endif
}

bool sp__features_have_avx2(void) {
    pthread_once(&cpu_once, cpu_detect);
    return cpu_avx2;
}

static void mean_std(const uint32_t *hist, double n, double *mean, double *sd) {
    double s = 0;
    for (int v = 0; v < 256; v++)
        s += (double)v * hist[v];
    double m = s / n, q = 0;
    for (int v = 0; v < 256; v++)
        if (hist[v])
            q += hist[v] * (v - m) * (v - m);
    *mean = m;
    *sd = sqrt(q / n);
}

/* The features of `a`, the sums of a w x h buffer, into out[]. */
static void features_of(const acc *a, int w, int h, float *out) {
    uint32_t hist[256];
    for (int v = 0; v < 256; v++)
        hist[v] = a->hist[0][v] + a->hist[1][v] + a->hist[2][v] + a->hist[3][v];
    const double sat = (double)a->sat / SAT_ONE;

    const double n = (double)w * h;
    double mean[4], sd[4];
    for (int c = 0; c < 3; c++) { /* exact integer moments */
        mean[c] = (double)a->sum[c] / n;
        double var = (double)a->sq[c] / n - mean[c] * mean[c];
        sd[c] = sqrt(var > 0 ? var : 0);
    }
    mean_std(hist, n, &mean[3], &sd[3]);
    double ent = 0;
    for (int v = 0; v < 256; v++)
        if (hist[v]) {
            double q = hist[v] / n;
            ent -= q * log2(q);
        }
    double lm = (double)a->lap_sum / n;
    double lv = (double)a->lap_sq / n - lm * lm;

    out[SP_F_TISSUE_FRACTION] = (float)(a->tissue / n);
    for (int c = 0; c < 3; c++) {
        out[SP_F_MEAN_R + c] = (float)mean[c];
        out[SP_F_STD_R + c] = (float)sd[c];
    }
    out[SP_F_SATURATION] = (float)(sat / n);
    out[SP_F_BRIGHTNESS] = (float)(mean[3] / 255.0);
    out[SP_F_CONTRAST] = (float)(sd[3] / 255.0);
    out[SP_F_OD_H] = (float)((double)a->sum_h / SP__OD_FIX_ONE / n);
    out[SP_F_OD_E] = (float)((double)a->sum_e / SP__OD_FIX_ONE / n);
    out[SP_F_BLUR] = (float)(lv > 0 ? lv : 0);
    out[SP_F_PEN_FRACTION] = (float)(a->pen / n);
    out[SP_F_CELLULARITY] = (float)(a->cell / n);
    out[SP_F_ENTROPY] = (float)(ent > 0 ? ent : 0);
}

/* ---- streaming -------------------------------------------------------- */

/* magic of a stream that takes rows, and of one that has had all of them;
 * anything else is a state not begun, or ended */
#define STREAM_OPEN 0x53504631u
#define STREAM_FULL 0x53504632u

/* A streaming state: the sums so far, the kernels' constants, and which
 * of the row buffers (analysis_private.h: 0 and 1 in the state, 2 in the
 * state or on the stack) hold the luma of rows y-1 and y-2. */
typedef struct {
    acc a;
    row_ctx ctx;
    uint32_t magic;
    int w, h, y; /* y: rows had so far */
    int nrows;   /* luma rows kept in the state, 2 or 3 */
    int i1, i2;  /* buffers of rows y-1 and y-2, distinct, 0..2 */
    bool simd;
} fstream;

_Static_assert(sizeof(fstream) <= SP__FEATURES_STREAM_HEAD,
               "SP__FEATURES_STREAM_HEAD is too small");
_Static_assert(_Alignof(fstream) <= _Alignof(max_align_t),
               "a streaming state needs more than malloc's alignment");

static bool check_args(int w, int h, const sp_feature_opts *p,
                       sp__features_impl impl, sp_error *err) {
    if (w <= 0 || h <= 0 || (int64_t)w * h > UINT32_MAX)
        return sp_error_set(err, SP_ERR_USAGE, NULL,
                            "features: bad buffer size (%d x %d)", w, h);
    if (p->tissue_threshold < 0 || p->tissue_threshold > 254 ||
        !isfinite(p->cellularity_od))
        return sp_error_set(err, SP_ERR_USAGE, NULL,
                            "features: bad parameters (tissue threshold %d, "
                            "cellularity OD %g)",
                            p->tissue_threshold, p->cellularity_od);
    if (impl == SP__FEATURES_AVX2 && !sp__features_have_avx2())
        return sp_error_set(err, SP_ERR_USAGE, NULL,
                            "features: this CPU has no AVX2");
    return true;
}

bool sp__features_begin(void *state, int w, int h, const sp_feature_opts *p,
                        int nrows, sp__features_impl impl, sp_error *err) {
    sp_feature_opts def;
    if (!p) {
        sp_feature_opts_default(&def);
        p = &def;
    }
    if (!state || (nrows != 2 && nrows != 3) ||
        (nrows == 2 && w > SP__TILE_SIZE_MAX))
        return sp_error_set(err, SP_ERR_USAGE, NULL,
                            "features: no state for a stream %d px wide", w);
    if (!check_args(w, h, p, impl, err))
        return false;
    fstream *st = state;
    memset(&st->a, 0, sizeof st->a);
    st->ctx = (row_ctx){.T = sp__stain_tables_get(),
                        .thr1 = (unsigned)p->tissue_threshold + 1,
                        .cell_od = p->cellularity_od};
    cell_bounds(p->cellularity_od, &st->ctx.cell_lo, &st->ctx.cell_hi);
    st->simd = impl == SP__FEATURES_AVX2 ||
               (impl == SP__FEATURES_AUTO && sp__features_have_avx2());
    st->w = w;
    st->h = h;
    st->y = 0;
    st->nrows = nrows;
    st->i1 = 0;
    st->i2 = 1;
    st->magic = STREAM_OPEN;
    return true;
}

size_t sp_features_stream_size(int w) {
    return w > 0 ? SP__FEATURES_STREAM_BYTES(w, 3) : 0;
}

bool sp_features_begin(void *state, int w, int h, const sp_feature_opts *p,
                       sp_error *err) {
    return sp__features_begin(state, w, h, p, 3, SP__FEATURES_AUTO, err);
}

int sp__features_rows_done(const void *state) {
    return ((const fstream *)state)->y;
}

/* Rows are asked for this far ahead of the kernels. A tile's rows lie a
 * band's width apart, each in its own pages, where the hardware prefetcher
 * does not follow; asked for two rows early they come in while the kernels
 * run (a fifth less time on a wide band). */
#define PREFETCH_ROWS 2

static inline void prefetch_row(const uint8_t *p, int bytes) {
#if defined(__GNUC__)
    for (int o = 0; o < bytes; o += 64)
        __builtin_prefetch(p + o);
#else
    (void)p;
    (void)bytes;
#endif
}

/* The next n rows of an open stream (at most those left). The Laplacian
 * trails one row behind: row y's is added when row y+1 arrives, the last
 * row's (its own reflection below) when it does. `scratch` is row buffer 2
 * when the state keeps 2 rows (w bytes). */
static void feed(fstream *st, const uint8_t *rgb, size_t stride, int n,
                 uint8_t *scratch) {
    const int w = st->w, h = st->h;
    uint8_t *base = (uint8_t *)st + SP__FEATURES_STREAM_HEAD;
    uint8_t *b[3] = {base, base + w,
                     st->nrows == 3 ? base + 2 * (size_t)w : scratch};
    colour_fn colour = colour_row;
    laplace_fn laplace = laplace_row;
#ifdef SP_FEATURES_X86
    if (st->simd) {
        colour = colour_row_avx2;
        laplace = laplace_row_avx2;
    }
#endif
    acc *a = &st->a;
    int y = st->y, i1 = st->i1, i2 = st->i2;
    for (int i = 0; i < n; i++, y++) {
        const int f = 3 - i1 - i2; /* the buffer holding neither */
        if (i + PREFETCH_ROWS < n) /* rows of a wide band: each starts cold */
            prefetch_row(rgb + (size_t)(i + PREFETCH_ROWS) * stride, 3 * w);
        colour(rgb + (size_t)i * stride, w, &st->ctx, a, b[f]);
        if (y >= 1)
            laplace(b[y >= 2 ? i2 : i1], b[i1], b[f], w, a);
        i2 = i1;
        i1 = f;
    }
    if (y == h) {
        laplace(b[h >= 2 ? i2 : i1], b[i1], b[i1], w, a);
        st->magic = STREAM_FULL;
    } else if (st->nrows == 2) { /* keep rows y-1 and y-2 in the state */
        if (i1 == 2) {
            i1 = 1 - i2;
            memcpy(b[i1], scratch, (size_t)w);
        } else if (i2 == 2) {
            i2 = 1 - i1;
            if (y >= 2)
                memcpy(b[i2], scratch, (size_t)w);
        }
    }
    st->y = y;
    st->i1 = i1;
    st->i2 = i2;
}

/* feed for a state that keeps 2 rows, with the third on this stack. */
static void feed_2rows(fstream *st, const uint8_t *rgb, size_t stride, int n) {
    uint8_t scratch[SP__TILE_SIZE_MAX];
    feed(st, rgb, stride, n, scratch);
}

bool sp_features_rows(void *state, const uint8_t *rgb, size_t stride, int rows,
                      sp_error *err) {
    fstream *st = state;
    if (!st || (st->magic != STREAM_OPEN && st->magic != STREAM_FULL))
        return sp_error_set(err, SP_ERR_USAGE, NULL,
                            "features: stream not begun");
    if (rows < 0 || rows > st->h - st->y)
        return sp_error_set(err, SP_ERR_USAGE, NULL,
                            "features: %d rows given, %d of %d left", rows,
                            st->h - st->y, st->h);
    if (rows == 0)
        return true;
    if (!rgb || stride < (size_t)st->w * 3)
        return sp_error_set(err, SP_ERR_USAGE, NULL,
                            "features: bad buffer (width %d, stride %zu)",
                            st->w, stride);
    if (st->nrows == 2)
        feed_2rows(st, rgb, stride, rows);
    else
        feed(st, rgb, stride, rows, NULL);
    return true;
}

bool sp_features_end(void *state, float *out, sp_error *err) {
    fstream *st = state;
    if (!st || (st->magic != STREAM_OPEN && st->magic != STREAM_FULL))
        return sp_error_set(err, SP_ERR_USAGE, NULL,
                            "features: stream not begun");
    if (st->magic != STREAM_FULL)
        return sp_error_set(err, SP_ERR_USAGE, NULL,
                            "features: %d of %d rows given", st->y, st->h);
    if (!out)
        return sp_error_set(err, SP_ERR_USAGE, NULL, "features: no output");
    features_of(&st->a, st->w, st->h, out);
    st->magic = 0;
    return true;
}

/* ---- one buffer ------------------------------------------------------- */

/* Widest buffer whose stream lives on the stack of sp_features_compute. */
#define STACK_W 4096

bool sp__features_compute_impl(const uint8_t *rgb, int w, int h, size_t stride,
                               const sp_feature_opts *p, float *out,
                               sp_error *err, sp__features_impl impl) {
    if (!rgb || !out || w <= 0 || h <= 0 || stride < (size_t)w * 3 ||
        (int64_t)w * h > UINT32_MAX)
        return sp_error_set(err, SP_ERR_USAGE, NULL,
                            "features: bad buffer (%d x %d, stride %zu)", w, h,
                            stride);
    sp_feature_opts def;
    if (!p) {
        sp_feature_opts_default(&def);
        p = &def;
    }
    if (!check_args(w, h, p, impl, err))
        return false;
    union {
        fstream st;
        uint8_t bytes[SP__FEATURES_STREAM_BYTES(STACK_W, 3)];
    } local;
    void *heap = NULL, *state = &local;
    if (w > STACK_W) {
        state = heap = malloc(SP__FEATURES_STREAM_BYTES(w, 3));
        if (!heap)
            return sp_error_set(err, SP_ERR_NOMEM, NULL,
                                "features: out of memory");
    }
    bool ok = sp__features_begin(state, w, h, p, 3, impl, err);
    if (ok) {
        feed(state, rgb, stride, h, NULL);
        ok = sp_features_end(state, out, err);
    }
    free(heap);
    return ok;
}

bool sp_features_compute(const uint8_t *rgb, int w, int h, size_t stride,
                         const sp_feature_opts *p, float *out, sp_error *err) {
    return sp__features_compute_impl(rgb, w, h, stride, p, out, err,
                                     SP__FEATURES_AUTO);
}

int64_t sp_tissue_pixels(const uint8_t *rgb, int w, int h, size_t stride,
                         int threshold, int64_t stop_at) {
    int64_t n = 0;
    for (int y = 0; y < h; y++) {
        const uint8_t *p = rgb + (size_t)y * stride;
        for (int x = 0; x < w; x++, p += 3)
            n += sp__sat8(p[0], p[1], p[2]) > (unsigned)threshold;
        if (stop_at > 0 && n >= stop_at)
            break;
    }
    return n;
}
