/*
 * tiler: the tile pyramids viewers load (Deep Zoom, pyramidal TIFF), built
 * from a slide's level 0 read once, in bands, top to bottom; and single
 * Deep Zoom tiles rendered on demand for a tile server.
 *
 *   sp_tile_slide    the whole job (`slidepipe tile`): a slide into a
 *                    pyramid. Output is atomic: everything is built under
 *                    hidden temporary names next to the output and renamed
 *                    at the end; an existing output is refused unless
 *                    `force`; stale temporaries of dead runs are removed.
 *   sp_tile_render   one Deep Zoom tile on demand, the bytes of the
 *                    pyramid's; sp_tile_overview keeps one level in memory
 *                    to cut the tiles of the levels below it.
 *   Advanced, for the fused pass of pipeline/: sp_pyramid, the streaming
 *   pyramid fed level-0 rows in order, and sp_band_loop, which reads level
 *   0 in bands and hands each band to hooks.
 *
 * Thread rules: an sp_pyramid belongs to one thread (the caller); it runs
 * its own OpenMP teams inside push/finish. The render and encode functions
 * keep no state; an overview is immutable once built and may be shared.
 * Progress (util.h) is called from the caller's thread. Nothing here
 * prints.
 */
#ifndef SP_TILER_H
#define SP_TILER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ingest.h"
#include "util.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- a slide into a pyramid -------------------------------------------- */

/* Layouts
 *   SP_CONTAINER_DZI   OUT.dzi + OUT_files/<level>/<col>_<row>.<ext>, the
 *                      geometry of `vips dzsave --depth onepixel`: levels
 *                      0..N with N = ceil(log2(max(w, h))), level k of size
 *                      ceil(size / 2^(N-k)), tile (col,row) covering
 *                      [col*T - (col>0 ? O : 0), min(W, (col+1)*T + O)).
 *   SP_CONTAINER_TIFF  OUT.tiff: tiled (T x T, T a multiple of 16),
 *                      JPEG (YCbCr), BigTIFF when over 2 GB is possible,
 *                      one directory per level down to one tile, with an
 *                      Aperio-style description and resolution tags so
 *                      OpenSlide reports openslide.mpp-x and vips reads
 *                      every level.
 *   SP_CONTAINER_DICOM OUT.dicom/level-<d>.dcm: a DICOM VL Whole Slide
 *                      Microscopy series, one instance per level (the
 *                      TIFF geometry), TILED_FULL, JPEG baseline frames
 *                      with an offset table (dcmout.cpp, DCMTK).
 *   SP_CONTAINER_OME_TIFF OUT.ome.tiff: the TIFF container's tiles and
 *                      geometry as a pyramidal OME-TIFF: level 0 in the
 *                      first directory with the OME-XML (2016-06 schema)
 *                      as its ImageDescription, the reduced levels as its
 *                      SubIFDs (NewSubfileType reduced), so Bio-Formats,
 *                      QuPath and OMERO import it (tiff.c, ome.c).
 *   All write OUT.json next to the pyramid: source metadata (vendor, mpp,
 *   objective power, level-0 size, quickhash), the slidepipe version and
 *   parameters, and the manifest (which tiles exist, per level, one string
 *   per tile row: '1' written, '0' skipped as background). */
typedef enum {
    SP_CONTAINER_DZI = 0,
    SP_CONTAINER_TIFF,
    SP_CONTAINER_DICOM,
    SP_CONTAINER_OME_TIFF
} sp_container;
typedef enum { SP_TILE_JPEG = 0, SP_TILE_PNG, SP_TILE_WEBP } sp_tile_format;

/* Parse "dzi"/"tiff"/"dicom"/"ome-tiff" and "jpeg"/"png"/"webp"; false
 * when unknown. */
bool sp_container_parse(const char *s, sp_container *out);
/* The name sp_container_parse takes for `c` ("dzi", "tiff", "dicom",
 * "ome-tiff"), as the sidecar and the run's parameters record it. */
const char *sp_container_name(sp_container c);
bool sp_tile_format_parse(const char *s, sp_tile_format *out);
/* File extension (no dot) of a tile format: "jpeg", "png", "webp". */
const char *sp_tile_format_ext(sp_tile_format f);

/* A tissue mask as plain data: cell (i, j) covers level-0 pixels
 * [i*scale, (i+1)*scale) x [j*scale, (j+1)*scale); non-zero is tissue.
 * The caller owns `cells` and keeps it alive while the tiler runs. */
typedef struct {
    const uint8_t *cells; /* width*height bytes, row-major */
    int64_t width, height;
    double scale; /* level-0 pixels per cell, > 0 */
} sp_tissue_mask;

/* Background (skip_background): with `tissue_fn`, it decides; else with
 * `mask`, a tile is background when no mask cell under it is non-zero;
 * else a pixel is tissue when max(R,G,B) - min(R,G,B) >= 24 or
 * min(R,G,B) < 180 (coloured or dark) and a tile with no tissue pixel is
 * background. Skipped DZI tiles are not written; TIFF needs every tile, so
 * a skipped one holds a solid background tile (encoded once). */
typedef struct {
    sp_container container;
    sp_tile_format format;
    int tile_size; /* DZI: 254; TIFF: 256 (0 picks the default) */
    int overlap;   /* DZI only (TIFF tiles never overlap); 1 */
    int quality;   /* 1..100 for jpeg and webp; 75 */
    int threads;   /* <= 0: all cores */
    bool skip_background;
    bool force;                 /* replace an existing output */
    uint8_t background[3];      /* fill outside the scan; 255,255,255 */
    const sp_tissue_mask *mask; /* optional, for skip_background */
    /* Optional, for skip_background, before `mask`: decides from a tile's
     * own pixels (w x h RGB at its level, rows `stride` bytes apart)
     * whether it holds tissue. Called from the encoding threads at once:
     * must be reentrant. The pipeline passes analysis/'s per-pixel rule. */
    bool (*tissue_fn)(void *user, const uint8_t *rgb, int64_t w, int64_t h,
                      size_t stride);
    void *tissue_user;
    /* Progress (util.h): phase "tiles", `done` of `total` tiles handled
     * (written or skipped); `cancel` is checked as rows come in. */
    sp_progress_fn progress;
    void *progress_user;
    volatile sig_atomic_t *cancel;
    /* SP_CONTAINER_DICOM: a JSON object of DICOM keywords to string
     * values for the patient and study attributes (empty otherwise:
     * de-identified), or NULL; kept by the caller while the pyramid runs */
    const char *dicom_attributes;
    /* Level-0 columns per stripe (see sp_stripe): 0 picks about 16k;
     * < 0 builds the whole width at once. Rounded up to T * 2^k, k >= 1.
     * The tiles are the same whatever the width. */
    int64_t stripe_width;
    /* TIFF and DICOM: copy level 0's tiles from the slide as stored
     * (JPEG, not decoded and re-encoded: lossless, cheaper) instead of
     * encoding them. Level 0 must store baseline JPEG tiles of exactly
     * tile_size (sp_tile_passthrough_check); sp_tile_slide fails when it
     * does not. Level 0 is still decoded, for the levels below it (and
     * damage in it still fails the run); every level-0 tile is written,
     * background or not. */
    bool passthrough;
} sp_tile_opts;

/* Fill `o` with the defaults above. */
void sp_tile_opts_default(sp_tile_opts *o);

/* Whether sp_tile_opts.passthrough can copy level 0 of `s` with the
 * container, format and tile size of `o`: true, or false with the reason
 * in `why` ("the slide's tiles are 240x240, the output's 256x256: use
 * --tile-size 240", ...). Reads the first tile's header. */
bool sp_tile_passthrough_check(const sp_slide *s, const sp_tile_opts *o,
                               char *why, size_t why_n);
/* Whether a pyramid of `s` made with `o` is best fed level 1 at half size
 * (sp_pyramid_opts.half_input, sp_band_hooks.half): level 0 is copied
 * (o->passthrough, already checked), its JPEG tiles can be decoded at
 * half size (sp_slide_can_read_half), and there are levels below it.
 * Nothing then needs level 0's pixels at full size, and the decode costs
 * about half. The levels below 0 come from libjpeg's DCT scaling instead
 * of a 2x2 box of the full decode (the sidecar's "reduction"). */
bool sp_tile_half_input(const sp_slide *s, const sp_tile_opts *o);

typedef struct {
    int64_t width, height; /* level 0 */
    int levels;
    int stripes; /* column stripes it was built in (1: whole width) */
    int64_t tiles_total;
    int64_t tiles_written;
    int64_t tiles_skipped; /* background tiles not written */
    int64_t tiles_copied;  /* level-0 tiles copied as stored (passthrough) */
    int64_t tiles_reused;  /* tiles of one colour: an earlier one's bytes */
    int64_t bytes_written; /* encoded tile bytes */
    double seconds;
    char output[4096]; /* the main output file (.dzi or .tiff) */
} sp_tile_stats;

/* Build the pyramid of `s` at `out` (OUT: "x" or "x.dzi" for DZI; "x" or
 * "x.tif(f)" for TIFF; "x" or "x.ome.tif(f)" for OME-TIFF). `stats` may be
 * NULL. On failure (and when cancelled: "interrupted") nothing is left at the
 * output path, no temporaries either, and `err` names the slide or the output
 * and the cause. */
bool sp_tile_slide(sp_slide *s, const char *out, const sp_tile_opts *opts,
                   sp_tile_stats *stats, sp_error *err);

/* ---- on-the-fly tiles (render.c) -------------------------------------- */
/* One Deep Zoom tile rendered on demand, for a tile server. Thread rules:
 * the functions keep no state; each call makes its own encoder. */

/* Above this many level-0 pixels under one tile, sp_tile_render starts
 * from the best native level instead of level 0 (bounded time; the tile
 * then differs slightly from the pyramid's). */
#define SP_RENDER_EXACT_MAX_PIXELS (INT64_C(4) << 20)

/* Where a Deep Zoom tile lies, in the pixels of its level. */
typedef struct {
    int shrinks; /* halvings below level 0 */
    int64_t level_width, level_height;
    int64_t cols, rows; /* tiles of the level */
    int64_t x, y, w, h; /* the tile, overlap included */
} sp_tile_rect;

/* Number of Deep Zoom levels of a w x h image (levels 0..N-1, level N-1
 * full size, level 0 one pixel), the geometry of SP_CONTAINER_DZI. */
int sp_tile_dz_level_count(int64_t width, int64_t height);
/* Fill `out` for tile (col, row) of Deep Zoom level `dz_level` of a
 * `width` x `height` image; false when the tile does not exist. */
bool sp_tile_dz_geometry(int64_t width, int64_t height, int tile_size,
                         int overlap, int dz_level, int64_t col, int64_t row,
                         sp_tile_rect *out);

/* Render Deep Zoom tile (col, row) of level `dz_level` of `s` with the
 * geometry and codec of `o` (container DZI; tile_size 0 means 254) into
 * `out_encoded` (reset first). Reads the level-0 region under the tile
 * through `r` (a reader of `s` owned by the calling thread), shrinks it
 * with the pyramid's 2x2 cascade and encodes it with the pyramid's
 * encoder: the bytes equal those of the tile sp_tile_slide writes with
 * the same options. When the region exceeds SP_RENDER_EXACT_MAX_PIXELS it
 * starts from the best native level instead (not byte-identical) when one
 * reads at most 1 Mpixel, else from level 0 in bands of at most 4 Mpixels
 * (exact, bounded memory, slow: see sp_tile_render_path and the
 * overview). False with `err` set: SP_ERR_USAGE for a tile that does not
 * exist or bad options, SP_ERR_INPUT for a failed read (the reader is
 * then spent). */
bool sp_tile_render(sp_reader *r, const sp_slide *s, const sp_tile_opts *o,
                    int dz_level, int64_t col, int64_t row, sp_buf *out_encoded,
                    sp_error *err);

/* How sp_tile_render reads the (full-size) tiles of a Deep Zoom level. */
typedef enum {
    SP_RENDER_EXACT = 0, /* level 0, at most SP_RENDER_EXACT_MAX_PIXELS */
    SP_RENDER_NATIVE,    /* a native level, at most that many pixels */
    SP_RENDER_WIDE       /* level 0 in bands: bounded memory, but time
                            grows 4x per level down (use an overview) */
} sp_render_path;
sp_render_path sp_tile_render_path(const sp_slide *s, const sp_tile_opts *o,
                                   int dz_level);

/* An overview: one whole Deep Zoom level of a slide in memory, from which
 * the tiles of that level and of every lower one are cut, byte-identical
 * to the pyramid's. Built once by reading level 0 in column stripes of
 * about 8192 pixels and bands of 256 rows through the pyramid's cascade:
 * besides the image (w*h*3 bytes), the build holds one band of one stripe
 * and `threads` readers. Immutable once built: may be shared by threads. */
typedef struct sp_tile_overview sp_tile_overview;

/* The largest Deep Zoom level of a width x height image that holds at
 * most max_pixels pixels (0 when none does but the one-pixel level). */
int sp_tile_overview_level(int64_t width, int64_t height, int64_t max_pixels);
/* Bytes of the image of Deep Zoom level dz_level (w*h*3). */
size_t sp_tile_overview_bytes(int64_t width, int64_t height, int dz_level);
/* Build the overview of Deep Zoom level dz_level of `s` with `threads`
 * private readers (o: background colour, container DZI). False with err
 * set on a failed read or out of memory; *out NULL then. */
bool sp_tile_overview_build(sp_slide *s, const sp_tile_opts *o, int dz_level,
                            int threads, sp_tile_overview **out, sp_error *err);
/* Accepts NULL. */
void sp_tile_overview_free(sp_tile_overview *v);
int sp_tile_overview_dz_level(const sp_tile_overview *v);
/* Tile (col, row) of Deep Zoom level dz_level <= the overview's, encoded
 * with `o` into out (reset first). Memory: the tile and a few rows. */
bool sp_tile_overview_render(const sp_tile_overview *v, const sp_tile_opts *o,
                             int dz_level, int64_t col, int64_t row,
                             sp_buf *out, sp_error *err);

/* ---- advanced: the streaming pyramid ------------------------------------ */
/* sp_tile_slide is sp_band_loop feeding an sp_pyramid; pipeline/ drives
 * the two itself so that one decode also feeds the features. The pyramid
 * keeps one band per level, shrinks each 2x2 into the next, encodes every
 * finished tile on an OpenMP team and writes it under a temporary name;
 * sp_pyramid_finish renames the result into place (OUT.dzi last). A wide
 * image is built in column stripes, so memory does not grow with width. */

/* What the pyramid records about its source (plain data; strings are
 * copied by sp_pyramid_create; NULL or <= 0 means unknown). */
typedef struct {
    const char *path, *vendor, *quickhash;
    double mpp_x, mpp_y, objective_power;
} sp_source_info;

typedef struct {
    const char *output;    /* OUT, as for sp_tile_slide */
    int64_t width, height; /* level-0 size */
    sp_tile_opts opts;
    sp_source_info source;
    int64_t band_rows; /* most rows one push holds; 0: 256 */
    /* Columns past a stripe's x1 that a caller may read in place along
     * with it (sp_pyramid_input); 0: none. */
    int64_t input_extra;
    /* The slide whose level-0 tiles opts.passthrough copies (its level 0
     * must be width x height); NULL otherwise. */
    const sp_slide *slide;
    /* With opts.passthrough: the caller pushes level 1 instead of level
     * 0 (the slide's level 0 read at half size, sp_reader_read_half), and
     * level 0 is only copied. Every row, column and width that
     * sp_pyramid_input, sp_pyramid_push_rows and band_rows speak of is
     * then level 1's: a stripe's columns [x0/2, (x1+1)/2), band_rows / 2
     * rows a push. */
    bool half_input;
    /* The main file's path once the caller renames it into place (a
     * staged output); NULL: the output's own. The OME-TIFF container
     * names its file in its OME-XML. */
    const char *final_main;
} sp_pyramid_opts;

/* One column stripe. Stripes are built one after the other, each top to
 * bottom: levels 0..k of a stripe from its own level-0 columns, and the
 * smaller levels at the end from level k, kept whole (1/4^k of level 0).
 * The cores of the stripes partition [0, width); a stripe reads its core
 * plus a margin of overlap * 2^k on each side, so the pixels of those
 * margins are decoded by both neighbours (about 1% of level 0). An
 * image no wider than 1.5 stripes is one stripe of the full width. */
typedef struct {
    int64_t x0, x1;       /* the level-0 columns the stripe needs */
    int64_t core0, core1; /* the columns whose tiles it writes */
} sp_stripe;

typedef struct sp_pyramid sp_pyramid;

/* Validate the parameters, refuse an existing output (unless force),
 * create the temporary output. NULL with `err` set on failure. */
sp_pyramid *sp_pyramid_create(const sp_pyramid_opts *params, sp_error *err);
/* How many stripes the pyramid is built in (1 for most slides), and the
 * columns of stripe `i` (0 <= i < count). */
int sp_pyramid_stripes(const sp_pyramid *p);
void sp_pyramid_stripe(const sp_pyramid *p, int i, sp_stripe *out);
/* Feed `rows` level-0 rows of the current stripe starting at row `y0`:
 * stripe 0 first, each stripe's rows 0..height-1 in order, each exactly
 * once (y0 must equal the rows pushed so far in the stripe; y0 = 0 after
 * a complete stripe starts the next). `rgb` holds packed RGB rows
 * `stride` bytes apart, starting at the stripe's column x0 and x1 - x0
 * pixels wide. Tiles that become complete are encoded and written before
 * this returns. False with `err` set on failure; the pyramid is then only
 * good for sp_pyramid_abort. */
bool sp_pyramid_push_rows(sp_pyramid *p, const uint8_t *rgb, size_t stride,
                          int64_t y0, int64_t rows, sp_error *err);
/* Optional, to save a copy: where the next `rows` level-0 rows of the
 * current stripe (of the next one when it is complete) may be written,
 * `width` >= x1 - x0 pixels from the stripe's x0, rows `*stride` bytes
 * apart. Rows written there and then pushed from that very address are
 * not copied. NULL when `rows` is more than one push holds or `width`
 * more than x1 - x0 + input_extra (or, within a stripe, wider than its
 * first band); the caller then pushes from its own buffer. */
uint8_t *sp_pyramid_input(sp_pyramid *p, int64_t rows, int64_t width,
                          size_t *stride);
/* After the last row: flush, write metadata, rename into place and free.
 * `stats` may be NULL. On failure nothing is left at the final path and
 * the pyramid is freed as well. */
bool sp_pyramid_finish(sp_pyramid *p, sp_tile_stats *stats, sp_error *err);
/* Remove the temporary output and free. Accepts NULL. */
void sp_pyramid_abort(sp_pyramid *p);

/* ---- advanced: reading level 0 in bands --------------------------------- */

/* Level-0 columns [x0, x1). */
typedef struct {
    int64_t x0, x1;
} sp_col_span;

/* Receives each band of stripe `stripe`: `rows` rows from `y0`, the
 * stripe's columns (x0 first), packed RGB `stride` bytes apart. Return
 * false (with `err` set) to stop. */
typedef bool (*sp_band_fn)(void *user, int stripe, const uint8_t *rgb,
                           size_t stride, int64_t y0, int64_t rows,
                           sp_error *err);

/* Optional: where to read the next band of stripe `stripe` (`rows` rows
 * from `y0`, the stripe's width): a buffer and its row stride, or NULL for
 * the loop's own band buffer. */
typedef uint8_t *(*sp_band_dest_fn)(void *user, int stripe, int64_t y0,
                                    int64_t rows, int64_t width,
                                    size_t *stride);

/* Optional: which part of the level-0 rectangle *x, *y, *w, *h (one
 * native tile, or its part inside the stripe) is needed: false for none,
 * else true with the rectangle narrowed (or left) to the part to read.
 * Pixels not read are left as they are in the band (undefined: the caller
 * must not read them); the direct JPEG path decodes only the part asked
 * for. Called from the reading threads at once. */
typedef bool (*sp_band_want_fn)(void *user, int64_t *x, int64_t *y, int64_t *w,
                                int64_t *h);

/* Optional pair, with no `dest`: the work on a band as items that run on
 * the loop's threads while the next band is read, so that no thread waits
 * for the reads to end. `plan` is called alone once the band is read (the
 * same arguments as sp_band_fn) and returns how many items it has (< 0:
 * failed, with `err` set); `item` runs item i of the band planned last,
 * from any thread, beside other items and the next band's reads. `fn` is
 * then called alone once every item of the band is done. */
typedef int64_t (*sp_band_plan_fn)(void *user, int stripe, const uint8_t *rgb,
                                   size_t stride, int64_t y0, int64_t rows,
                                   sp_error *err);
typedef bool (*sp_band_item_fn)(void *user, int64_t i, sp_error *err);

typedef struct {
    sp_band_fn fn;        /* required */
    sp_band_want_fn want; /* optional */
    sp_band_dest_fn dest; /* optional */
    sp_band_plan_fn plan; /* optional, with item and without dest */
    sp_band_item_fn item; /* optional, with plan */
    void *user;
    /* Read level 0 at half size (sp_reader_read_half; the slide must
     * allow it, no `want`): the hooks get rows and columns of that image,
     * a band of B level-0 rows from y0 being its rows [y0/2, (y0+B+1)/2)
     * and a stripe [x0, x1) its columns [x0/2, (x1+1)/2). */
    bool half;
} sp_band_hooks;

/* Read level 0 of `s`, stripe after stripe (`stripes`, `nstripes`; NULL
 * or 0: one stripe of the full width), each top to bottom in bands whose
 * height is a multiple of the native tile height (about `band_rows`; 0:
 * 256), each band read by `threads` readers (private OpenSlide handles),
 * one native tile at a time straight into the band, so within a stripe no
 * source tile is decoded twice; `want` skips native tiles nobody needs;
 * `dest` picks where a band is read (e.g. straight into the pyramid);
 * `plan` and `item` overlap the work on a band with the next one's reads.
 * `bg` fills areas outside the scan (NULL: white). Memory: one band of
 * the widest stripe (two with `plan`) unless `dest` always gives one.
 * Returns false on a read failure or when a hook fails. */
bool sp_band_loop(sp_slide *s, int threads, const uint8_t bg[3],
                  int64_t band_rows, const sp_col_span *stripes, int nstripes,
                  const sp_band_hooks *hooks, sp_error *err);
/* The band height sp_band_loop uses for `s` and a wish of `band_rows`. */
int64_t sp_band_rows_for(const sp_slide *s, int64_t band_rows);

/* ---- encoding one tile ------------------------------------------------- */

/* Encode a w x h packed RGB image (rows `stride` bytes apart) with the
 * tile codec `format` into `out` (reset first). */
bool sp_tile_encode(sp_tile_format format, int quality, const uint8_t *rgb,
                    int w, int h, size_t stride, sp_buf *out, sp_error *err);

/* ==== a pyramid's files: their names, and reading them back ============
 * The one owner of the layout above (layout.c): the writers (dzi.c,
 * tiff.c), the pipeline's staging and the viewer take every name from
 * here; pyramid_read.c reads the descriptor and the sidecar back. */

/* Every file name of one pyramid; malloc'd strings. */
typedef struct {
    char *stem;    /* OUT: the output without its main file's extension */
    char *main;    /* the file a viewer opens, renamed into place last:
                      OUT.dzi; OUT.tiff (OUT.tif when so named);
                      OUT.ome.tiff (OUT.ome.tif) */
    char *files;   /* DZI: the tile folder OUT_files; TIFF: NULL */
    char *sidecar; /* OUT.json */
} sp_pyramid_names;

/* The main file's extension that `name` ends with in container `c`
 * (".dzi"; ".tiff" or ".tif"; ".ome.tiff" or ".ome.tif"), or "" when none;
 * `name` without it is the pyramid's stem. A static string. */
const char *sp_pyramid_ext(const char *name, sp_container c);
/* The names of the pyramid with stem `stem` (taken as it is) in container
 * `c`; `ext` is the main file's extension (".tif"), NULL or "" for the
 * container's (".dzi", ".tiff", ".ome.tiff"). False when out of memory, `n`
 * then empty. Free with sp_pyramid_names_free. */
bool sp_pyramid_names_init(sp_pyramid_names *n, const char *stem,
                           sp_container c, const char *ext);
/* The names of the output `out` as sp_pyramid_opts.output takes it: a
 * stem ("x") or a name ending with the main file's extension ("x.dzi",
 * "x.tiff", "x.tif", "x.ome.tiff"), whose extension is kept. False when out of
 * memory. */
bool sp_pyramid_names_of(sp_pyramid_names *n, const char *out, sp_container c);
/* Free the strings and empty `n`; accepts an empty (zeroed) one. */
void sp_pyramid_names_free(sp_pyramid_names *n);
/* The name of tile (col, row) in its level folder OUT_files/<level>/:
 * "<col>_<row>.<ext>" (ext: sp_tile_format_ext). Returns what snprintf
 * returns; the name is cut short when that is >= `size`. */
int sp_pyramid_tile_name(char *buf, size_t size, int64_t col, int64_t row,
                         const char *ext);

/* A Deep Zoom descriptor as read back (OUT.dzi, or a vips pyramid's). */
typedef struct {
    int64_t width, height; /* 1 .. 2^31 */
    int tile_size;         /* 1 .. 8192 */
    int overlap;           /* 0 .. tile_size / 2 */
    sp_tile_format format;
    int levels; /* sp_tile_dz_level_count(width, height) */
} sp_dzi_info;

/* Parse descriptor `xml` (NUL-terminated; `path` names it in errors):
 * the TileSize, Overlap, Format, Width and Height attributes. False with
 * SP_ERR_INPUT when one is missing or outside the ranges above, or the
 * format is not a tile format's extension. */
bool sp_dzi_parse(const char *xml, const char *path, sp_dzi_info *out,
                  sp_error *err);
/* Read (a regular file of at most 1 MiB, not a symbolic link) and parse
 * the descriptor at `path`. */
bool sp_dzi_read(const char *path, sp_dzi_info *out, sp_error *err);

/* One level of a sidecar's manifest: cols x rows bytes, row-major, 1 for a
 * tile written, 0 for one skipped as background. */
typedef struct {
    uint8_t *tiles; /* NULL when the sidecar does not spell the level */
    int64_t cols, rows;
} sp_manifest_level;

/* What a sidecar (OUT.json) says, read back beside its descriptor. What
 * is absent or malformed is unknown; a malformed level is left out. */
typedef struct {
    char *vendor, *quickhash;             /* NULL: unknown */
    double mpp_x, mpp_y, objective_power; /* > 0, or NAN */
    int quality; /* 1..100 (75 when absent); 0 when out of range */
    bool has_background;
    uint8_t background[3];
    int levels;                  /* the descriptor's Deep Zoom levels */
    sp_manifest_level *manifest; /* levels of them, by Deep Zoom level */
} sp_sidecar;

/* Parse the `n` bytes of sidecar `text` (`path` names it in errors) for
 * the pyramid of descriptor `dzi`: a level's manifest is kept only when
 * it has one string of '0'/'1' (anything but '1' is 0) per tile row of
 * that level, each one character per tile column. False with SP_ERR_INPUT
 * when it is not a JSON object ("malformed JSON"), SP_ERR_NOMEM. On
 * success free `out` with sp_sidecar_free. */
bool sp_sidecar_parse(const char *text, size_t n, const char *path,
                      const sp_dzi_info *dzi, sp_sidecar *out, sp_error *err);
/* Read (a regular file of at most 64 MiB, not a symbolic link) and parse
 * the sidecar at `path`. */
bool sp_sidecar_read(const char *path, const sp_dzi_info *dzi, sp_sidecar *out,
                     sp_error *err);
/* Free what `s` holds and empty it; accepts NULL. */
void sp_sidecar_free(sp_sidecar *s);

/* ---- versions ----------------------------------------------------------- */
/* Add the versions of the loaded libpng, libwebp and json-c (libtiff and
 * libjpeg-turbo, shared with ingest, are ingest's to report). */
void sp_tiler_versions(sp_lib_versions *l);

#ifdef __cplusplus
}
#endif
#endif
