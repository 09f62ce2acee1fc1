/* ingest's private header: the slide's layout, shared by its files. */
#ifndef SP_INGEST_PRIVATE_H
#define SP_INGEST_PRIVATE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <openslide/openslide.h>

#include "ingest.h"

typedef struct sp__direct sp__direct;
typedef struct sp__direct_reader sp__direct_reader;
typedef struct sp__dicom sp__dicom;
typedef struct sp__dicom_reader sp__dicom_reader;
typedef struct sp__vips sp__vips;
typedef struct sp__vips_reader sp__vips_reader;
typedef struct sp__strips sp__strips;
typedef struct sp__strips_reader sp__strips_reader;

struct sp_slide {
    char *path;
    openslide_t *osr;   /* shared handle; OpenSlide reads are thread-safe */
    const char *vendor; /* points into OpenSlide's properties */
    int level_count;
    sp_level *levels;
    int prop_count;
    sp_property *props; /* strings owned by osr */
    int assoc_count;
    sp_associated *assoc;
    bool has_mpp, has_objective;
    double mpp_x, mpp_y, objective;
    const char *quickhash;
    sp__direct *direct; /* level-0 JPEG tiles read directly, or NULL */
    sp__dicom *dicom;   /* a DICOM series (dicom.cpp) instead of osr */
    sp__vips *vips;     /* an image through libvips (vips.c) instead */
};

/* Premultiplied ARGB (OpenSlide's layout) to straight RGB composited over
 * `bg`: opaque pixels are copied, transparent ones become `bg`. */
void sp__argb_to_rgb(const uint32_t *argb, size_t n, const uint8_t bg[3],
                     uint8_t *rgb);
/* The w x h pixels at rgb (rows `stride` bytes apart) in the colour bg:
 * the first row pixel by pixel, the others copied from it (region.c;
 * the readers' background where no tile or frame gives the pixels). */
void sp__fill_bg(uint8_t *rgb, size_t stride, int64_t w, int64_t h,
                 const uint8_t bg[3]);

/* " (libtiff: CAUSE)" when libtiff reported an error on this thread since
 * the last sp_capture_clear(), with `path` dropped from its front; ""
 * when none. Written into buf (n bytes). */
const char *sp__libtiff_cause(const char *path, char *buf, size_t n);

/* (Re)install slidepipe's libtiff and GLib handlers (sp_libtiff_quiet
 * does it once); for vips.c, after libvips has put its own in. */
void sp__quiet_handlers(void);

/* direct.c: JPEG tiles of TIFF-based slides without OpenSlide's cache and
 * painting (same pixels). sp__direct_probe is NULL unless level 0 can be
 * read so; other levels may or may not (sp__direct_has_level).
 * sp__direct_read takes the level's own pixel coordinates. */
sp__direct *sp__direct_probe(const sp_slide *s);
void sp__direct_free(sp__direct *d);
bool sp__direct_has_level(const sp__direct *d, int level);
sp__direct_reader *sp__direct_reader_create(const sp__direct *d);
void sp__direct_reader_free(sp__direct_reader *r);
/* Tiles copied from the reader's memo (sp__memo_hits); 0 for NULL. */
int64_t sp__direct_reader_repeats(const sp__direct_reader *r);
bool sp__direct_read(sp__direct_reader *r, const sp__direct *d, int level,
                     int64_t x, int64_t y, int64_t w, int64_t h,
                     const uint8_t bg[3], uint8_t *rgb, size_t stride,
                     const char *path, sp_error *err);

/* direct.c: level 0 decoded at half size (ingest.h's
 * sp_reader_read_half), in half-size pixels; sp__direct_can_half: its
 * tiles are read directly and have an even width and height. */
bool sp__direct_can_half(const sp__direct *d);
bool sp__direct_read_half(sp__direct_reader *r, const sp__direct *d, int64_t x,
                          int64_t y, int64_t w, int64_t h, const uint8_t bg[3],
                          uint8_t *rgb, size_t stride, const char *path,
                          sp_error *err);

/* Half-size reads (direct.c, dicom.cpp): whether the image (`size`
 * pixels across) ends inside tile `t` of `tile` pixels after an odd number
 * of them, and such a tile's 2x2 box, rounded, the last image row `ylast`
 * and column `xlast` of the tile paired with themselves (as the pyramid's
 * box does): columns [c0, c1) and rows [r0, r1) of the half-size tile
 * from the decoded tile (rows of tw pixels) into `out`, its pixel
 * (c0, r0), rows `stride` bytes apart. */
bool sp__odd_edge(int64_t size, int64_t t, int64_t tile);
void sp__box_half(const uint8_t *tile, int64_t tw, int64_t xlast, int64_t ylast,
                  int64_t c0, int64_t c1, int64_t r0, int64_t r1, uint8_t *out,
                  size_t stride);

/* Tiles whose compressed bytes repeat, decoded once (memo.c; one per
 * reader, so no lock): sp__memo_get copies the w x h RGB pixels of a
 * kept tile with exactly these `n` bytes and `kind` (the caller's key for
 * everything else that changes the decode: level, scale) into `dst`
 * (rows `stride` bytes apart) and returns true; else false, and the
 * caller decodes the tile whole and offers the result to sp__memo_put,
 * which keeps it when these bytes were seen before. sp__memo_hits counts
 * the tiles copied. A NULL memo keeps nothing. */
typedef struct sp__memo sp__memo;
sp__memo *sp__memo_create(void);
void sp__memo_free(sp__memo *m);
bool sp__memo_get(sp__memo *m, uint32_t kind, const uint8_t *data, size_t n,
                  int64_t w, int64_t h, uint8_t *dst, size_t stride);
void sp__memo_put(sp__memo *m, uint32_t kind, const uint8_t *data, size_t n,
                  int64_t w, int64_t h, const uint8_t *src, size_t stride);
int64_t sp__memo_hits(const sp__memo *m);

/* `n` bytes at `off` of `fd` into `buf`, retried past short reads and
 * EINTR (direct.c; tiles and DICOM frames): 0, or errno (-1: the file
 * ends sooner, shorter than it was when opened). */
int sp__pread_all(int fd, uint8_t *buf, uint64_t n, uint64_t off);

/* direct.c: the stored tiles of a level directly read (ingest.h's
 * sp_slide_stored_tiles and sp_slide_read_stored_tile). */
bool sp__direct_stored(const sp__direct *d, int level, sp_stored_tiles *out,
                       const char **why);
bool sp__direct_stored_tile(const sp__direct *d, int level, int64_t col,
                            int64_t row, sp_buf *out, const char *path,
                            sp_error *err);

/* Whether `jpeg` (n bytes, a self-contained stream) is a tile that can be
 * copied as stored: baseline 8-bit 3-component JPEG of tw x th pixels
 * whose chroma is not subsampled below luma's own factors. True and *out
 * filled (`rgb`: the data are RGB, as the container says), or false with
 * *why. direct.c; used by dicom.cpp too. */
bool sp__jpeg_stored_info(const uint8_t *jpeg, size_t n, int64_t tw, int64_t th,
                          bool rgb, sp_stored_tiles *out, const char **why);

/* dicom.cpp: DICOM whole-slide image series through DCMTK (osr is NULL
 * for them). sp__dicom_candidate: a file with the DICOM preamble, or a
 * folder holding one among its first entries. sp__dicom_open fills the
 * slide's levels, properties, associated images, mpp, objective,
 * quickhash and vendor ("dicom") and sets s->dicom; false with `err`
 * naming the file and the cause. sp__dicom_read takes the level's own
 * pixel coordinates; readers are per thread (frames are fetched under
 * the instance's lock). sp__dicom_series_of: the SeriesInstanceUID of a
 * DICOM WSI file (malloc'd), or NULL. */
bool sp__dicom_candidate(const char *path);
bool sp__dicom_open(sp_slide *s, const char *path, sp_error *err);
void sp__dicom_free(sp__dicom *d);
sp__dicom_reader *sp__dicom_reader_create(const sp__dicom *d);
void sp__dicom_reader_free(sp__dicom_reader *r);
int64_t sp__dicom_reader_repeats(const sp__dicom_reader *r); /* as direct */
bool sp__dicom_read(sp__dicom_reader *r, int level, int64_t x, int64_t y,
                    int64_t w, int64_t h, const uint8_t bg[3], uint8_t *rgb,
                    size_t stride, const char *path, sp_error *err);
bool sp__dicom_read_associated(sp__dicom *d, int index, const uint8_t bg[3],
                               uint8_t *rgb, const char *path, sp_error *err);
char *sp__dicom_series_of(const char *path);
const char *sp__dicom_version(void);
/* dicom.cpp: level 0 at half size (ingest.h's sp_reader_read_half), in
 * half-size pixels; sp__dicom_can_half: every frame of level 0 is JPEG of
 * the level's tile size, which is even. */
bool sp__dicom_can_half(const sp__dicom *d);
bool sp__dicom_read_half(sp__dicom_reader *r, int64_t x, int64_t y, int64_t w,
                         int64_t h, const uint8_t bg[3], uint8_t *rgb,
                         size_t stride, const char *path, sp_error *err);
/* dicom.cpp: a level's JPEG frames as stored tiles (ingest.h's
 * sp_slide_stored_tiles and sp_slide_read_stored_tile). */
bool sp__dicom_stored(const sp__dicom *d, int level, sp_stored_tiles *out,
                      const char **why);
bool sp__dicom_stored_tile(const sp__dicom *d, int level, int64_t col,
                           int64_t row, sp_buf *out, const char *path,
                           sp_error *err);

/* vips.c: images OpenSlide does not read (plain, tiled, multi-page and
 * OME-TIFF, BigTIFF, JPEG, PNG, WebP, JPEG 2000) through libvips (osr is
 * NULL for them). sp__vips_candidate: libvips has a loader of ours for
 * the file's first bytes. sp__vips_prefer: a TIFF OpenSlide's
 * generic-tiff would take but libvips reads better (OME-XML description
 * or SubIFDs). sp__vips_open fills the slide's levels, properties, mpp
 * and vendor ("vips:tiffload", ...) and sets s->vips; false with `err`
 * naming the file and the cause. sp__vips_read takes the level's own
 * pixel coordinates; readers are per thread (a VipsRegion per level). */
bool sp__vips_candidate(const char *path);
bool sp__vips_prefer(const char *path);
bool sp__vips_open(sp_slide *s, const char *path, sp_error *err);
void sp__vips_free(sp__vips *v);
sp__vips_reader *sp__vips_reader_create(const sp__vips *v);
void sp__vips_reader_free(sp__vips_reader *r);
bool sp__vips_read(sp__vips_reader *r, int level, int64_t x, int64_t y,
                   int64_t w, int64_t h, const uint8_t bg[3], uint8_t *rgb,
                   size_t stride, const char *path, sp_error *err);
const char *sp__vips_version(void);

/* strips.c: a stripped TIFF directory read strip by strip through libtiff
 * (for vips.c: libvips would decode it whole first). sp__strips_probe:
 * page `page` of `path`, or its SubIFD `subifd` (>= 0), when it is
 * `width` x `height` and of a kind read so (see strips.c); else NULL.
 * sp__strips_rows: rows per strip (its native tile is that many rows of
 * the full width). A sp__strips is immutable (shared by threads); a
 * reader belongs to one thread. sp__strips_read reads the rectangle, which
 * must lie inside the directory, as RGB (alpha over `bg`); false with
 * `cause` (ncause bytes) saying which strip failed and why (libtiff's
 * words); the caller names the file. sp__rgba_over: n straight RGBA
 * pixels composited over `bg`, rounded, as RGB. */
sp__strips *sp__strips_probe(const char *path, int page, int subifd,
                             int64_t width, int64_t height);
void sp__strips_free(sp__strips *s);
int64_t sp__strips_rows(const sp__strips *s);
sp__strips_reader *sp__strips_reader_create(const sp__strips *s);
void sp__strips_reader_free(sp__strips_reader *r);
bool sp__strips_read(sp__strips_reader *r, int64_t x, int64_t y, int64_t w,
                     int64_t h, const uint8_t bg[3], uint8_t *rgb,
                     size_t stride, char *cause, size_t ncause);
void sp__rgba_over(const uint8_t *rgba, int64_t n, const uint8_t bg[3],
                   uint8_t *rgb);

#endif
