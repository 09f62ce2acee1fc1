/*
 * ingest: open whole-slide images through OpenSlide, describe them, and
 * read regions as straight (non-premultiplied) 8-bit RGB.
 *
 * Thread rules
 *   sp_slide   is immutable after sp_slide_open: any number of threads may
 *              call its getters at once. Close it after every reader made
 *              from it has been freed.
 *   sp_reader  belongs to one thread at a time. Make one per worker thread
 *              (inside `#pragma omp parallel`, before the loop); readers of
 *              the same slide read concurrently without a lock of ours.
 *
 * Errors are reported through sp_error (util.h) with a message that names
 * the slide file and the cause. Nothing here prints or exits.
 */
#ifndef SP_INGEST_H
#define SP_INGEST_H

#include <stdbool.h>
#include <stdint.h>

#include "util.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sp_slide sp_slide;
typedef struct sp_reader sp_reader;

typedef struct {
    int64_t width, height; /* pixels at this level */
    double downsample;     /* level-0 pixels per pixel of this level */
    int64_t tile_width;    /* native tile size; 0 when OpenSlide gives none */
    int64_t tile_height;
} sp_level;

typedef struct {
    const char *name; /* "label", "macro", "thumbnail", ... */
    int64_t width, height;
} sp_associated;

typedef struct {
    const char *name;
    const char *value;
} sp_property;

/* Open `path`. On failure returns false, *out is NULL and `err` says why
 * (missing file, directory, empty file, format not recognised, OpenSlide's
 * own error). The slide is also checked for readability when `verify` is
 * true: a small read of the lowest-resolution level must succeed. */
bool sp_slide_open(const char *path, bool verify, sp_slide **out,
                   sp_error *err);
/* Free the slide. Accepts NULL. */
void sp_slide_close(sp_slide *s);

const char *sp_slide_path(const sp_slide *s);
/* OpenSlide's vendor name ("aperio", "hamamatsu", "generic-tiff", ...),
 * "dicom", or "vips:<loader>" ("vips:tiffload", "vips:jpegload", ...) for
 * an image read through libvips (ingest/vips.c). */
const char *sp_slide_vendor(const sp_slide *s);
int sp_slide_level_count(const sp_slide *s);
/* Level `i` (0 <= i < level count); NULL when out of range. */
const sp_level *sp_slide_level(const sp_slide *s, int i);
/* The lowest-numbered level whose downsample is <= `downsample` + 1e-6
 * (the best level to read when shrinking by `downsample`); 0 at worst. */
int sp_slide_best_level(const sp_slide *s, double downsample);

/* True when level-0 reads bypass OpenSlide (see SP_READER_OPENSLIDE_ONLY). */
bool sp_slide_has_direct_path(const sp_slide *s);

/* Microns per pixel at level 0. Returns false (and leaves the outputs
 * untouched) when the slide does not record it. */
bool sp_slide_mpp(const sp_slide *s, double *mpp_x, double *mpp_y);
/* Scanning objective power; false when absent. */
bool sp_slide_objective_power(const sp_slide *s, double *power);
/* openslide.quickhash-1, or NULL when absent. */
const char *sp_slide_quickhash(const sp_slide *s);
/* Bounds of the non-empty region (openslide.bounds-*), or the whole level 0
 * when absent. Returns true when the slide records bounds. */
bool sp_slide_bounds(const sp_slide *s, int64_t *x, int64_t *y, int64_t *w,
                     int64_t *h);

/* All properties, in OpenSlide's order. Strings live as long as `s`. */
int sp_slide_property_count(const sp_slide *s);
const sp_property *sp_slide_property_at(const sp_slide *s, int i);
/* A property by name, or NULL. */
const char *sp_slide_property(const sp_slide *s, const char *name);

int sp_slide_associated_count(const sp_slide *s);
const sp_associated *sp_slide_associated_at(const sp_slide *s, int i);
/* Read an associated image as straight RGB into `rgb` (width*height*3
 * bytes, sizes from sp_slide_associated_at), transparent areas filled with
 * `bg`. Thread-safe. Fails (SP_ERR_INPUT) when the file claims a size
 * that is not positive or over SP_MAX_ASSOCIATED_PX pixels: callers
 * should check the sizes the same way before allocating `rgb`. */
#define SP_MAX_ASSOCIATED_PX (INT64_C(1) << 28)
bool sp_slide_read_associated(sp_slide *s, const char *name, uint8_t *rgb,
                              const uint8_t bg[3], sp_error *err);

/* ---- region reading ---------------------------------------------------- */

enum {
    /* The reader opens its own OpenSlide handle (its own tile cache, no
     * state shared with other readers). Without it, readers share the
     * slide's handle, which OpenSlide documents as thread-safe. */
    SP_READER_PRIVATE_HANDLE = 1u << 0,
    /* Read every level through OpenSlide. Without it, level-0 reads of
     * JPEG-tiled TIFF slides (Aperio, generic TIFF) decode the tiles
     * directly with libjpeg-turbo: the same pixels, several times faster. */
    SP_READER_OPENSLIDE_ONLY = 1u << 1,
};

/* Make a reader for one thread. `bg` (may be NULL: white) fills areas
 * outside the scanned region and is composited under partial alpha. */
sp_reader *sp_reader_create(sp_slide *s, unsigned flags, const uint8_t bg[3],
                            sp_error *err);
/* Free. Accepts NULL. */
void sp_reader_free(sp_reader *r);
/* The tiles this reader copied rather than decoded: a whole tile (or
 * DICOM frame) whose compressed bytes equal a tile's it decoded before at
 * the same level and scale gives the same pixels (blank tiles a scanner
 * writes over and over). 0 for slides read through OpenSlide or libvips. */
int64_t sp_reader_repeats(const sp_reader *r);

/* Read a w x h region of `level` whose top-left is (x, y) in level-0
 * coordinates (as openslide_read_region) into `rgb`, w*h*3 bytes, rows
 * packed. Areas outside the slide come back as the background colour.
 * Returns false with an error naming the slide on failure; after a failed
 * read the reader (and, with a shared handle, the slide) stays failed. */
bool sp_reader_read(sp_reader *r, int level, int64_t x, int64_t y, int64_t w,
                    int64_t h, uint8_t *rgb, sp_error *err);

/* The same into rows `stride` bytes apart (stride >= w*3), e.g. straight
 * into a larger buffer. */
bool sp_reader_read_stride(sp_reader *r, int level, int64_t x, int64_t y,
                           int64_t w, int64_t h, uint8_t *rgb, size_t stride,
                           sp_error *err);

/* ---- level 0 at half size ----------------------------------------------- */

/* Whether level 0 can be read at half size (sp_reader_read_half): its
 * tiles are JPEG that slidepipe decodes directly (Aperio, generic tiled
 * TIFF, a DICOM series' JPEG frames), with an even width and height. */
bool sp_slide_can_read_half(const sp_slide *s);

/* Level 0 at half size: the image of ceil(W/2) x ceil(H/2) pixels whose
 * pixel (i, j) stands for level 0's 2x2 block at (2i, 2j). It is made by
 * libjpeg's DCT scaling (each 8x8 block's 4x4 lowest frequencies inverse
 * transformed into 4x4 pixels), not by averaging a full decode: about
 * half the decode's cost, pixels within a few levels of a 2x2 box's. The
 * region w x h at (x, y), in half-size pixels, into `rgb`, rows `stride`
 * bytes apart; outside the image, the reader's background. As strict as
 * a full-size read: every row of every tile touched is entropy-decoded
 * and any libjpeg warning fails it. False with `err` naming the slide;
 * a usage error unless sp_slide_can_read_half. */
bool sp_reader_read_half(sp_reader *r, int64_t x, int64_t y, int64_t w,
                         int64_t h, uint8_t *rgb, size_t stride, sp_error *err);

/* ---- stored tiles, copied without decoding (passthrough) ------------- */

/* How a level stores its tiles when they can be copied as they are:
 * baseline 8-bit JPEG, 3 components, every tile present. */
typedef struct {
    int64_t tile_width, tile_height;
    bool rgb;   /* the JPEG data are RGB (Aperio), not YCbCr */
    int h_samp; /* luma sampling over chroma: 1 x 1 is 4:4:4, 2 x 1 */
    int v_samp; /* 4:2:2, 2 x 2 4:2:0 (of the level's first tile) */
} sp_stored_tiles;

/* Whether the tiles of `level` can be copied: true and *out filled, or
 * false with *why (a static phrase: "its tiles are JPEG 2000", ...) when
 * not. Reads the first tile's JPEG header. Thread-safe. */
bool sp_slide_stored_tiles(const sp_slide *s, int level, sp_stored_tiles *out,
                           const char **why);
/* Tile (col, row) of `level` as stored, made a self-contained JPEG (the
 * directory's JPEGTables merged in) into `out` (reset first). The bytes
 * are not decoded: callers that need them checked decode the level as
 * well (slidepipe's pyramid does). Thread-safe (pread, no lock). False
 * with `err` naming the slide, level and tile: bytes outside the file,
 * a tile that is not a JPEG stream, a level that cannot be copied. */
bool sp_slide_read_stored_tile(const sp_slide *s, int level, int64_t col,
                               int64_t row, sp_buf *out, sp_error *err);

/* Make the process's libtiff silent, once (sp_slide_open does it): its
 * warnings are dropped and its errors kept per thread (sp_capture_message,
 * util.h) for the caller's sp_error. Thread-safe. For modules that use
 * libtiff themselves (the TIFF writer). */
void sp_libtiff_quiet(void);

/* True when `path` is a readable regular file that OpenSlide's vendor
 * detection does not recognise, that is no DICOM file and that libvips
 * has none of our loaders for (no slide is opened): not a slide at all,
 * as opposed to a missing, unreadable or damaged slide. For a caller that
 * must tell the two apart after sp_slide_open failed. */
bool sp_slide_not_a_slide(const char *path);

/* What a file name's extension says, from the one list of slide
 * extensions: SP_EXT_SLIDE when only whole-slide formats use it (.svs
 * .ndpi .vms .vmu .scn .mrxs .svslide .bif: such a file that cannot be
 * opened is a damaged slide), SP_EXT_IMAGE when slides and other images
 * share it (.tif .tiff) or it names an image libvips reads (.jpg .jpeg
 * .png .webp .jp2), else SP_EXT_OTHER. Case-insensitive. */
typedef enum { SP_EXT_OTHER = 0, SP_EXT_IMAGE, SP_EXT_SLIDE } sp_ext_kind;
sp_ext_kind sp_slide_ext_kind(const char *name);

/* The slide size rule of folder walks (batch discovery, serve's folder
 * scan): an image read only through libvips (vendor "vips:...") that a
 * walk finds counts as a slide only when it is an OME-TIFF or SubIFD
 * pyramid of more than one level (made for viewing at many scales) or
 * the longer side of its level 0 is at least SP_IMAGE_MIN_SIDE pixels,
 * so a folder of thumbnails and figures is not converted by accident;
 * OpenSlide's and DICOM slides always count, and so does any file named
 * explicitly (command line, manifest). True when `s`, found in a
 * folder, counts. */
#define SP_IMAGE_MIN_SIDE 10000
bool sp_slide_size_rule_ok(const sp_slide *s);

/* The series a DICOM whole-slide image file belongs to (its
 * SeriesInstanceUID, malloc'd), or NULL for any other file: every file of
 * a series opens the same slide, so a folder walk keeps one per series. */
char *sp_slide_series_key(const char *path);
/* True when the folder `path` holds a DICOM series among its first
 * entries: a slide of its own (sp_slide_open takes the folder). */
bool sp_slide_is_series_dir(const char *path);

/* Add the versions of the libraries ingest reads slides with: OpenSlide,
 * libtiff, GLib (read from the loaded libraries) and libjpeg-turbo (its
 * headers' version: libjpeg has no run-time call). */
void sp_ingest_versions(sp_lib_versions *l);

#ifdef __cplusplus
}
#endif
#endif
