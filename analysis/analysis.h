/*
 * analysis: the tissue mask, per-tile features and stain vectors of a
 * slide (docs/FEATURES.md defines every number exactly).
 *
 *   sp_analyze_slide  the whole job: mask, analysis grid, features of every
 *                     tissue tile, slide summary.
 *   building blocks   features of one RGB buffer, whole or in row chunks
 *                     (sp_features_*); Macenko stain vectors (sp_stain_*);
 *                     the low-resolution tissue mask (sp_mask_*).
 *   Advanced, for the fused pass of pipeline/: the steps of
 *   sp_analyze_slide for a caller that already has the pixels
 *   (sp_analysis_prepare, _tile or _stream_*, _finish).
 *
 * Thread rules: every function is reentrant and takes no lock of ours;
 * the building blocks may run on any number of threads at once on
 * distinct outputs (inputs are only read). sp_analyze_slide runs its own
 * OpenMP team (one sp_reader and one scratch set per thread); its result
 * is the same, byte for byte, for any thread count, and its progress
 * callback is called from one thread at a time. Results are plain data
 * owned by the caller: sp_analysis_result_free, sp_mask_free.
 *
 * Errors are reported through sp_error (util.h); functions return false
 * and leave no partial result that looks valid. Nothing here prints.
 */
#ifndef SP_ANALYSIS_H
#define SP_ANALYSIS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ingest.h"
#include "util.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- options and results ----------------------------------------------- */

/* Feature columns, in output order. */
enum {
    SP_F_TISSUE_FRACTION = 0,
    SP_F_MEAN_R,
    SP_F_MEAN_G,
    SP_F_MEAN_B,
    SP_F_STD_R,
    SP_F_STD_G,
    SP_F_STD_B,
    SP_F_SATURATION,
    SP_F_BRIGHTNESS,
    SP_F_CONTRAST,
    SP_F_OD_H,
    SP_F_OD_E,
    SP_F_BLUR,
    SP_F_PEN_FRACTION,
    SP_F_CELLULARITY,
    SP_F_ENTROPY,
    SP_N_FEATURES
};

typedef struct {
    const char *name;        /* column name, e.g. "od_h" */
    const char *unit;        /* "fraction", "0-255", "OD", "bits", ... */
    const char *description; /* one line */
} sp_feature_info;

/* The table of SP_N_FEATURES entries, indexed by SP_F_*. Static storage. */
const sp_feature_info *sp_feature_table(void);

typedef struct {
    /* A pixel is tissue when its 8-bit saturation (FEATURES.md) is above
     * this, 0..254. sp_analyze_slide sets it to the slide mask's threshold. */
    int tissue_threshold;
    /* A pixel counts towards `cellularity` when its hematoxylin OD is above
     * this. */
    double cellularity_od;
} sp_feature_opts;

#define SP_DEFAULT_TISSUE_THRESHOLD 20
#define SP_DEFAULT_CELLULARITY_OD 0.4

/* Fill `p` with the documented defaults. */
void sp_feature_opts_default(sp_feature_opts *p);

typedef struct {
    double beta;       /* drop pixels with OD below this in any channel: 0.15 */
    double alpha;      /* percentile of the extreme angles, in percent: 1 */
    size_t min_pixels; /* fewer usable pixels than this is an error: 100 */
} sp_macenko_opts;

void sp_macenko_opts_default(sp_macenko_opts *p);

typedef struct {
    double downsample;     /* target level-0 px per mask px: 32 */
    int threshold;         /* fixed 8-bit saturation threshold, or -1: Otsu */
    int min_threshold;     /* floor applied to the Otsu threshold: 8 */
    int close_radius;      /* closing with a disk of this radius, mask px: 2 */
    double max_hole_um2;   /* fill enclosed holes smaller than this: 10000 */
    double min_object_um2; /* drop objects smaller than this: 10000 */
    int max_hole_px;       /* the same two in mask pixels, used when the */
    int min_object_px;     /* slide records no mpp: 32 and 32 */
} sp_mask_opts;

void sp_mask_opts_default(sp_mask_opts *p);

typedef struct {
    int width, height; /* mask pixels */
    uint8_t *data;     /* width*height bytes, rows packed: 255 tissue, 0 not */
    int level;         /* slide level the thumbnail was read from */
    int factor;        /* box-average factor applied to that level */
    double downsample; /* level-0 px per mask px (factor * level downsample) */
    int otsu;          /* Otsu threshold of the thumbnail's saturation */
    int threshold;     /* the threshold applied (saturation > threshold) */
    double mask_um2_per_px; /* area of a mask px in um^2, 0 if no mpp */
    /* The level's own pixels the mask was made from (width*height*3 RGB)
     * when it was read whole (factor 1, at most 4096 px a side), so a
     * caller can reuse them; else NULL. */
    uint8_t *rgb;
} sp_mask;

typedef struct {
    sp_mask_opts mask;
    sp_feature_opts features; /* tissue_threshold is replaced by the
                                   mask's threshold */
    sp_macenko_opts macenko;
    int tile_size;         /* analysis px per tile side: 256 */
    double mpp;            /* analyse at this um/px (0: not set) */
    double magnification;  /* or at this objective power (0: not set) */
    bool all_tiles;        /* analyse every tile, not only tissue ones */
    double min_coverage;   /* a tile is a tissue tile when the share of
                              mask px over it is above this: 0 */
    double blur_threshold; /* a tissue tile is blurry when blur < this:
                              50 */
    double pen_threshold;  /* a tissue tile is pen-marked when
                              pen_fraction > this: 0.10 */
    int threads;           /* 0: sp_default_threads() */
    /* Progress (util.h): phases "mask" (1 of 1) and "tiles" (tiles read,
     * of those chosen); must not call back into this module. `cancel` is
     * checked between tiles (sp_analyze_slide, sp_analysis_read_tiles). */
    sp_progress_fn progress;
    void *progress_user;
    volatile sig_atomic_t *cancel;
} sp_analysis_opts;

void sp_analysis_opts_default(sp_analysis_opts *p);

typedef struct {
    bool mpp_known;
    double mpp_x, mpp_y;    /* level 0, um/px; 0 when unknown */
    double tissue_area_px;  /* mask area, level-0 px^2 */
    double tissue_area_mm2; /* NaN when mpp is unknown */
    size_t tiles_total;     /* grid tiles */
    size_t tiles_tissue;    /* tiles with mask coverage above min */
    size_t tiles_analysed;  /* rows of the feature matrix */
    double blurry_fraction; /* of tissue tiles; NaN when there are none */
    double pen_fraction;    /* of tissue tiles; NaN when there are none */
    bool stain_ok;          /* false: too few stained pixels */
    double stain_he[2][3];  /* Macenko H then E (unit OD vectors, RGB);
                               NaN when !stain_ok */
    size_t stain_pixels;    /* pixels that went into Macenko */
} sp_slide_summary;

/* What sp_analysis_prepare keeps for sp_analysis_tile and
 * sp_analysis_finish (which tiles are tissue, their stain samples).
 * Opaque; owned by the result. */
typedef struct sp_analysis_work sp_analysis_work;

typedef struct {
    sp_mask mask;
    /* grid */
    int tile_size;         /* analysis px */
    double downsample;     /* level-0 px per analysis px */
    int read_level;        /* slide level the tiles are read from */
    double read_ratio;     /* read_level px per analysis px; exactly 1 when
                              tiles are that level's pixels, unscaled */
    int64_t width, height; /* analysis image size, analysis px */
    int cols, rows;        /* grid size */
    size_t n;              /* tiles analysed (in row-major grid order) */
    int64_t *coords;       /* n x 2: level-0 top-left x, y */
    int32_t *size;         /* n x 2: tile width, height in analysis px
                              (smaller than tile_size at the right/bottom) */
    float *coverage;       /* n: share of mask px over the tile */
    float *features;       /* n x SP_N_FEATURES, row-major */
    sp_slide_summary summary;
    double seconds;         /* wall time of sp_analyze_slide */
    sp_analysis_work *work; /* between prepare and finish */
} sp_analysis_result;

/* ---- a whole slide ------------------------------------------------------- */

/* Analyse `s`: tissue mask, grid, features of every tissue tile (or every
 * tile), summary. `p` may be NULL (defaults). Fails with SP_ERR_USAGE on
 * bad parameters (mpp asked of a slide without mpp, a resolution finer than
 * level 0, ...), SP_ERR_INPUT when the slide cannot be read, "interrupted"
 * when cancelled; then `*out` is zeroed. On success the caller frees `out`
 * with sp_analysis_result_free. */
bool sp_analyze_slide(sp_slide *s, const sp_analysis_opts *p,
                      sp_analysis_result *out, sp_error *err);

/* Free what a result owns and zero it. Accepts NULL. */
void sp_analysis_result_free(sp_analysis_result *r);

/* ---- building blocks: the features of one buffer ------------------------- */

/* Compute the SP_N_FEATURES features of the w x h RGB image at `rgb`
 * (3 bytes per pixel, rows `stride` bytes apart, stride >= 3*w) into
 * out[SP_N_FEATURES]. Every pixel of the buffer counts. `p` may be NULL
 * (defaults). Returns false (SP_ERR_USAGE) on bad sizes or parameters and
 * SP_ERR_NOMEM when a row buffer cannot be had (only for w > 4096); `out`
 * is then untouched. Reentrant; allocates nothing for w <= 4096. */
bool sp_features_compute(const uint8_t *rgb, int w, int h, size_t stride,
                         const sp_feature_opts *p, float *out, sp_error *err);

/* Streaming form of sp_features_compute, for a w x h buffer whose rows
 * arrive in order, in chunks of any sizes that add up to h:
 *   sp_features_begin  starts a stream in `state`, caller-owned memory of
 *                      sp_features_stream_size(w) bytes aligned for any type
 *                      (malloc's), about 12.3 KB + 3 w;
 *   sp_features_rows   adds the next `rows` rows (0 or more), row 0 of the
 *                      chunk at `rgb`, rows `stride` >= 3 w bytes apart;
 *   sp_features_end    after the last row: the features into
 *                      out[SP_N_FEATURES], bit for bit those of
 *                      sp_features_compute on the whole buffer, whatever
 *                      the chunking. The state may then be begun again.
 * Each returns false with SP_ERR_USAGE on bad sizes, parameters or buffer,
 * on a state not begun, on more rows than are left, and (end) before the
 * last row; the stream is then as it was. The state holds no pointer to
 * the pixels or into itself, so chunks may come from different buffers.
 * No allocation. One state per stream; distinct states on any threads. */
size_t sp_features_stream_size(int w);
bool sp_features_begin(void *state, int w, int h, const sp_feature_opts *p,
                       sp_error *err);
bool sp_features_rows(void *state, const uint8_t *rgb, size_t stride, int rows,
                      sp_error *err);
bool sp_features_end(void *state, float *out, sp_error *err);

/* Pixels of a w x h RGB buffer (rows `stride` bytes apart) whose 8-bit
 * saturation is above `threshold`: the per-pixel tissue decision behind
 * `tissue_fraction`, with the slide mask's threshold (sp_mask.threshold).
 * Counting stops once `stop_at` (> 0) is reached. Reentrant. */
int64_t sp_tissue_pixels(const uint8_t *rgb, int w, int h, size_t stride,
                         int threshold, int64_t stop_at);

/* ---- building blocks: stain vectors -------------------------------------- */

/* Side of the sampling lattice: sp_stain_sample takes SP_STAIN_SAMPLE_SIDE^2
 * pixels of a buffer. */
#define SP_STAIN_SAMPLE_SIDE 16
#define SP_STAIN_SAMPLE_N (SP_STAIN_SAMPLE_SIDE * SP_STAIN_SAMPLE_SIDE)

/* Copy the lattice pixels of a w x h RGB buffer (FEATURES.md: column
 * ((2i+1)*w)/(2*16), same for rows) into out[3 * SP_STAIN_SAMPLE_N].
 * w and h must be positive. */
void sp_stain_sample(const uint8_t *rgb, int w, int h, size_t stride,
                     uint8_t *out);

/* Macenko 2009 stain vectors of `n` RGB pixels (3 bytes each). On success
 * he[0] is hematoxylin and he[1] eosin (the vector with the larger red OD
 * component is hematoxylin), each a unit OD vector (R, G, B) with a
 * positive sum; *used (may be NULL) receives the number of pixels that
 * passed the OD filter. Fails with SP_ERR_INPUT when fewer than min_pixels
 * pixels pass the filter. `p` may be NULL (defaults). */
bool sp_stain_macenko(const uint8_t *rgb, size_t n, const sp_macenko_opts *p,
                      double he[2][3], size_t *used, sp_error *err);

/* ---- building blocks: the tissue mask ------------------------------------ */

/* Compute the tissue mask of `s` (FEATURES.md, "Tissue mask"), reading with
 * `threads` threads (0: sp_default_threads()). `p` may be NULL. On success
 * `*out` is filled and owns `data`. */
bool sp_mask_compute(sp_slide *s, const sp_mask_opts *p, int threads,
                     sp_mask *out, sp_error *err);
/* Free the data of a mask (not the struct). Accepts NULL. */
void sp_mask_free(sp_mask *m);

/* The Otsu threshold of 8-bit values, exactly as skimage.filters.
 * threshold_otsu on a uint8 image (bins between the smallest and largest
 * value present; when only one value is present, that value). The
 * histogram must hold at least one count. */
int sp_otsu_u8(const uint64_t hist[256]);

/* Write a mask (or any 8-bit grey image) as a PNG file, atomically. */
bool sp_mask_write_png(const sp_mask *m, const char *path, sp_error *err);

/* ---- advanced: the steps of sp_analyze_slide ----------------------------- */
/* For a caller that already has the pixels (the fused pass of pipeline/
 * hands over the level-0 bands it decoded for the tile pyramid):
 *   sp_analysis_prepare  mask, grid and the chosen tiles (coords, size,
 *                        coverage); allocates the feature matrix;
 *   sp_analysis_tile     features (and stain samples) of tile k from its
 *                        pixels: size[2k] x size[2k+1] RGB at the analysis
 *                        resolution, rows `stride` bytes apart. Reentrant
 *                        for distinct k (call from any thread);
 *   sp_analysis_finish   the slide summary, in tile order.
 * Any thread count and any order of sp_analysis_tile calls give the same
 * bytes. On failure free `r` with sp_analysis_result_free. */
bool sp_analysis_prepare(sp_slide *s, const sp_analysis_opts *p,
                         sp_analysis_result *r, sp_error *err);
bool sp_analysis_tile(sp_analysis_result *r, size_t k, const uint8_t *rgb,
                      size_t stride, sp_error *err);
bool sp_analysis_finish(sp_slide *s, const sp_analysis_opts *p,
                        sp_analysis_result *r, sp_error *err);
/* Streaming analysis of tile k (between prepare and finish), for a caller
 * whose pixels arrive in bands: the tile's rows come in order, in chunks of
 * any sizes that add up to its height size[2k+1].
 *   sp_analysis_stream_size   bytes of a state (about 29 KB, whatever the
 *                             tile size);
 *   sp_analysis_stream_begin  starts tile k in `state`: caller-owned memory
 *                             of that size, aligned for any type (malloc's),
 *                             reusable once the tile is complete, so one
 *                             per tile of an analysis row will do. It only
 *                             records k: a bad k is reported by the first
 *                             sp_analysis_stream_rows;
 *   sp_analysis_stream_rows   adds the next `rows` rows (0 or more): `rgb`
 *                             points at the tile's left column of the
 *                             chunk's first row, rows `stride` bytes apart.
 *                             With the last row, the tile's features (and,
 *                             for a tissue tile, its stain samples) are
 *                             stored exactly as sp_analysis_tile stores
 *                             them, bit for bit, whatever the chunking, and
 *                             the state is free again.
 * sp_analysis_stream_rows returns false with SP_ERR_USAGE for k out of
 * range, more rows than are left, a bad buffer, a state not begun or
 * already complete; the stream is then as it was. It writes only tile k's
 * slots of `r`, so threads may stream distinct tiles at once (one state
 * each). No allocation; a stream may be dropped part way (begin again). */
size_t sp_analysis_stream_size(void);
void sp_analysis_stream_begin(const sp_analysis_result *r, size_t k,
                              void *state);
bool sp_analysis_stream_rows(sp_analysis_result *r, void *state,
                             const uint8_t *rgb, size_t stride, int rows,
                             sp_error *err);
/* Between prepare and finish, for a caller without the pixels: read each
 * chosen tile (only those: background is never decoded) on an OpenMP team
 * of p->threads, one reader per thread, and call sp_analysis_tile. */
bool sp_analysis_read_tiles(sp_slide *s, const sp_analysis_opts *p,
                            sp_analysis_result *r, sp_error *err);

#ifdef __cplusplus
}
#endif
#endif
