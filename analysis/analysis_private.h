/* analysis private header: lookup tables shared by the feature files, and
 * the working state of an analysis between prepare and finish. */
#ifndef SP_ANALYSIS_PRIVATE_H
#define SP_ANALYSIS_PRIVATE_H

#include "analysis.h"

/* The Ruifrok & Johnston matrix used for deconvolution (rows H, E, DAB;
 * columns R, G, B OD), as scikit-image's rgb_from_hed. */
extern const double sp__ruifrok_rgb_from_hed[3][3];

/* Fixed-point scale of the per-pixel H and E densities: 2^28 units per
 * OD. A table entry is within 0.5 unit of od * hed * 2^28, so a pixel's H
 * or E density is within 1.5 units (< 6e-9 OD) of the double sum. A sum of
 * three entries is below 2.41 OD (the largest od) x 2.63 (the largest sum
 * of |hed| down a column) = 6.4 OD = 1.72e9 units whatever the signs, so
 * it fits an int32. */
#define SP__OD_FIX_SHIFT 28
#define SP__OD_FIX_ONE ((double)(1 << SP__OD_FIX_SHIFT))

typedef struct {
    double od[256];   /* -log10(max(v, 1) / 255) */
    double hed[3][3]; /* inverse of sp__ruifrok_rgb_from_hed: OD row x hed
                         gives (H, E, DAB) */
    double h[3][256]; /* od[v] * hed[c][0], per channel c */
    double e[3][256]; /* od[v] * hed[c][1] */
    /* {h, e}[c][v] * SP__OD_FIX_ONE rounded: one 8-byte {H, E} pair per
     * value, so one 64-bit load (or gather) fetches both */
    int32_t he_fix[3][256][2];
} sp__stain_tables;

/* The tables, built once (thread-safe) on first use. Never NULL. */
const sp__stain_tables *sp__stain_tables_get(void);

/* 8-bit saturation: floor(255 * (max - min) / max), 0 for black. */
static inline unsigned sp__sat8(unsigned r, unsigned g, unsigned b) {
    unsigned mx = r > g ? r : g, mn = r < g ? r : g;
    mx = mx > b ? mx : b;
    mn = mn < b ? mn : b;
    return mx ? (mx - mn) * 255u / mx : 0u;
}

/* Pen-ink rule of FEATURES.md (branch-free: it runs on every pixel). */
static inline bool sp__is_pen(int r, int g, int b) {
    int mx = r > g ? r : g, mn = r < g ? r : g;
    mx = mx > b ? mx : b;
    mn = mn < b ? mn : b;
    /* blue, green, cyan, yellow inks: green passes more than red or blue */
    int chroma = (mn <= 200) & ((g - r >= 30) | (g - b >= 30));
    int blue = (b - r >= 60) & (b - g >= 60) & (g + 5 >= r); /* pure blue */
    int black = (mx < 40) & (mx - mn < 25);
    return (chroma | blue | black) != 0;
}

/* Implementations of sp_features_compute (sp__features_compute_impl). */
typedef enum {
    SP__FEATURES_AUTO,   /* the fastest the CPU supports */
    SP__FEATURES_SCALAR, /* portable C */
    SP__FEATURES_AVX2,   /* x86 AVX2; refused where the CPU lacks it */
} sp__features_impl;

/* True when the AVX2 implementation is built in and the CPU supports it. */
bool sp__features_have_avx2(void);

/* sp_analysis_result.work: what sp_analysis_prepare leaves for
 * sp_analysis_tile/_stream_rows and sp_analysis_finish (grid.c). */
struct sp_analysis_work {
    uint8_t *is_tissue;           /* n: tile's mask coverage above min */
    uint8_t *samples;             /* n x SP_STAIN_SAMPLE_N RGB lattice pixels */
    sp_feature_opts feature_opts; /* with the mask's threshold */
};

/* Largest analysis tile side (sp_analysis_opts.tile_size). */
#define SP__TILE_SIZE_MAX 8192

/* Memory of a streaming feature state (features.c): its sums and
 * bookkeeping in the first SP__FEATURES_STREAM_HEAD bytes, then `nrows`
 * luma rows of w bytes. With nrows 3 the state holds every row buffer the
 * Laplacian needs; with nrows 2 (w <= SP__TILE_SIZE_MAX) a row on the
 * stack of sp_features_rows stands in for the third, and the last two
 * rows are moved into the state at the end of each chunk. Any memory
 * aligned for any type will do; the state holds no pointer into itself. */
#define SP__FEATURES_STREAM_HEAD 4352
#define SP__FEATURES_STREAM_BYTES(w, nrows)                                    \
    (SP__FEATURES_STREAM_HEAD + (size_t)(nrows) * (size_t)(w))

/* sp_features_begin with a chosen implementation and number of rows kept
 * (2 or 3, as above). */
bool sp__features_begin(void *state, int w, int h, const sp_feature_opts *p,
                        int nrows, sp__features_impl impl, sp_error *err);

/* Rows a begun stream has had so far. */
int sp__features_rows_done(const void *state);

/* sp_stain_sample of a w x h buffer whose rows y0 .. y0+rows-1 are at
 * `rgb` (row y0 first): copies the lattice pixels that lie in them. */
void sp__stain_sample_rows(const uint8_t *rgb, int w, int h, size_t stride,
                           int y0, int rows, uint8_t *out);

/* sp_features_compute with a chosen implementation (tests, benchmarks).
 * Every implementation gives the same bytes. Asking for one the CPU lacks
 * returns false (SP_ERR_USAGE). */
bool sp__features_compute_impl(const uint8_t *rgb, int w, int h, size_t stride,
                               const sp_feature_opts *p, float *out,
                               sp_error *err, sp__features_impl impl);

#endif
