/* tiler's private header: codecs, output writers and the pyramid state. */
#ifndef SP_TILER_PRIVATE_H
#define SP_TILER_PRIVATE_H

#ifdef __cplusplus
/* dcmout.cpp includes this header: C11's _Atomic int64_t has int64_t's
 * size and alignment on the platforms we build for, and C++ code here
 * never touches such a field */
#define SP__ATOMIC
#define restrict __restrict
#else
#include <stdatomic.h>
#define SP__ATOMIC _Atomic
#endif
#include <stddef.h>
#include <stdint.h>

#include "tiler.h"

#define SP_TILER_MAX_LEVELS 48

/* The default stripe width wish (sp_tile_opts.stripe_width 0): T * 2^k is
 * the first multiple at or above it (16256 for T = 254, 16384 for T =
 * 256). */
#define SP_STRIPE_AUTO 12288

/* sp_tile_render (render.c): past SP_RENDER_EXACT_MAX_PIXELS, from the
 * sharpest native level whose region is at most this... */
#define SP_RENDER_NATIVE_MAX_PIXELS (INT64_C(1) << 20)
/* ...else level 0 in bands of at most this many pixels (the per-request
 * bound on the band buffer). */
#define SP_RENDER_BAND_PIXELS (INT64_C(4) << 20)
/* An overview is read in column stripes of about this many level-0
 * pixels, in bands of this many rows. */
#define SP_OVERVIEW_STRIPE INT64_C(8192)
#define SP_OVERVIEW_BAND_ROWS 256

/* ---- codecs (encode.c) ------------------------------------------------- */
/* A codec keeps per-thread state (a TurboJPEG handle, a growable output
 * buffer); make one per thread, never share. */
typedef struct sp__codec_state sp__codec_state;

typedef struct {
    const char *name; /* also the file extension */
    sp__codec_state *(*create)(int quality);
    /* Encode w x h packed RGB rows `stride` bytes apart. On success *out
     * points into the state's buffer (valid until the next call). */
    bool (*encode)(sp__codec_state *st, const uint8_t *rgb, int w, int h,
                   size_t stride, const uint8_t **out, size_t *n, char *why,
                   size_t why_n);
    void (*destroy)(sp__codec_state *st);
} sp__codec_ops;

const sp__codec_ops *sp__codec(sp_tile_format f);
/* JPEG with 4:2:0 chroma at every quality (the DICOM container's). */
extern const sp__codec_ops sp__jpeg420_codec;

/* ---- geometry ---------------------------------------------------------- */
typedef struct {
    int64_t w, h;       /* pixels */
    int64_t cols, rows; /* tiles */
} sp__geom_level;

/* ---- writers (dzi.c, tiff.c) ------------------------------------------- */
typedef struct sp__writer sp__writer;

typedef struct {
    const char *name;
    /* Create the temporary output (refusing an existing final one unless
     * force). `p` is fully set up except for the writer. */
    sp__writer *(*open)(sp_pyramid *p, sp_error *err);
    /* Store one encoded tile; called from many threads at once, `t` the
     * caller's thread slot (0 <= t < the pyramid's threads). Level d is
     * the pyramid's index (0 = full resolution). */
    bool (*put)(sp__writer *w, int t, int d, int64_t col, int64_t row,
                const uint8_t *data, size_t n, sp_error *err);
    /* Everything written: complete the output, write `sidecar` (JSON) and
     * rename all into place. */
    bool (*finish)(sp__writer *w, const char *sidecar, size_t sidecar_n,
                   sp_error *err);
    /* Remove temporaries and free (also after a failed finish). */
    void (*abort)(sp__writer *w);
} sp__writer_ops;

extern const sp__writer_ops sp__dzi_writer;
extern const sp__writer_ops sp__tiff_writer;
extern const sp__writer_ops sp__ome_tiff_writer; /* tiff.c, with ome.c */
extern const sp__writer_ops sp__dicom_writer;    /* dcmout.cpp, DCMTK */

/* ---- the pyramid ------------------------------------------------------- */
typedef struct {
    int64_t w, h, cols, rows;
    /* the window of the current pass: columns [x0, x0 + ww), whose tile
     * columns [c0, c1) it writes */
    int64_t x0, ww, c0, c1;
    int64_t buf_w;        /* widest window: the width of buf and pending */
    int64_t rs;           /* row stride of buf in bytes: ww*3 (level 0: more
                             when the caller reads a wider band into it) */
    uint8_t *buf;         /* rows [y0, y0 + n) of this level at rows
                             [start, start + n) of buf */
    int64_t cap;          /* rows */
    int64_t y0, n, start; /* buffered rows; compacted only when full */
    int64_t next_row;     /* first tile row not yet emitted */
    int64_t received;     /* rows received so far */
    uint8_t *pending;     /* an odd row waiting for its pair (w*3) */
    bool has_pending;
    uint8_t *down;     /* output rows for the next level (its buf_w) */
    int64_t down_cap;  /* rows */
    uint8_t *manifest; /* cols*rows: 1 written, 0 skipped */
} sp__plevel;

/* A tile of one colour, encoded: its bytes are the encoder's for that
 * colour and size, so they are kept and reused (pyramid.c). */
typedef struct {
    uint8_t rgb[3];
    int w, h;
    sp_buf enc;
} sp__solid;

#define SP_SOLID_KEEP 4

typedef struct {
    sp__codec_state *codec;
    uint8_t *scratch;               /* a padded tile (TIFF edge tiles) */
    sp__solid solid[SP_SOLID_KEEP]; /* most recently used first */
    int nsolid;
    sp_buf stored; /* a level-0 tile copied from the slide */
    sp_error err;
} sp__pthread;

struct sp_pyramid {
    sp_pyramid_opts prm; /* strings below are our copies */
    char *output, *src_path, *src_vendor, *src_quickhash;
    char *final_given; /* prm.final_main */
    char *final_main;  /* set by the writer: OUT.dzi or OUT.tiff */
    int T, O;
    bool pad_edges; /* TIFF: edge tiles are T x T, padded */
    int nlevels;
    sp__plevel lv[SP_TILER_MAX_LEVELS];
    /* stripes: levels 0..k per stripe; with more than one stripe, level
     * k's core columns go to `tail` and levels k+1.. are built from it */
    int k, nstripes, stripe;
    int lo, hi;       /* levels of the current pass */
    int64_t push_max; /* most level-0 rows one push holds (band rows) */
    uint8_t *tail;    /* level k, whole: lv[k].w x lv[k].h */
    int threads;
    sp__pthread *pt; /* one slot per thread, used only by that thread */
    const sp__codec_ops *codec;
    const sp__writer_ops *wops;
    sp__writer *writer;
    int64_t tiles_total, tiles_done, tiles_written, tiles_skipped;
    int64_t tiles_copied, tiles_reused;
    SP__ATOMIC int64_t bytes;
    bool copy0; /* level 0 copied (prm.slide, passthrough) */
    int base;   /* the level the caller pushes: 0, or 1 with half_input */
    sp_stored_tiles stored0; /* how: the writers' level-0 photometric */
    uint8_t *bg_tile;        /* TIFF: encoded solid background tile */
    size_t bg_tile_n;
    double t_start;
    int64_t pushed; /* rows received of level `base` */
    bool failed;
};

/* Geometry helpers shared by the writers. */
int sp__dzi_level_count(int64_t w, int64_t h);
const char *sp__pyramid_output(const sp_pyramid *p);
/* One 2x2 box-filtered output row from input rows a and b (b may equal a),
 * w input pixels, an odd last column paired with itself (pyramid.c; also
 * used by render.c so on-the-fly tiles match the pyramid's bytes). */
void sp__shrink_row(const uint8_t *restrict a, const uint8_t *restrict b,
                    int64_t w, uint8_t *restrict out);
/* Encode the background tile (T x T) once; used by the TIFF writer. */
bool sp__pyramid_bg_tile(sp_pyramid *p, sp_error *err);

/* Hidden temporary sibling of `final`: "<dir>/.<base>.tmp-<pid>"; removes
 * stale ones of dead processes first. malloc'd; NULL on OOM. */
char *sp__tiler_temp_name(const char *final_path);
void sp__tiler_clean_stale(const char *final_path);
/* The spool of the TIFF and DICOM writers: `n` bytes of `data` (and one
 * zero byte after them when `pad`) at offset `off` of `fd`, which the
 * caller took with an atomic add, so threads write at once without a
 * lock. `name` is the output the errors name. */
bool sp__spool_write(int fd, uint64_t off, const uint8_t *data, size_t n,
                     bool pad, const char *name, sp_error *err);
/* The spool (outfiles.c): tiles from many threads at once, each thread
 * collecting its tiles in a run of SP_SPOOL_RUN bytes in memory and
 * writing the run with one pwrite at the spool's end when it is full, so
 * a tile costs a copy rather than a system call (32,000 pwrites
 * contending for the file's lock, for a 33k x 25k slide), and the spool
 * holds the tiles and nothing else. Tiles larger than a quarter run are
 * written at once. sp__spool_put stores `n` bytes (and one zero after
 * them when `pad`) from thread `t` (0 <= t < threads); where they lie in
 * the file is stored in *where when their run is written (at once for a
 * large tile), so *where must stay valid until sp__spool_flush, which,
 * called alone before the spool is read, writes every thread's run. */
#define SP_SPOOL_RUN ((size_t)1 << 20)
typedef struct sp__spool sp__spool;
sp__spool *sp__spool_create(int fd, int threads);
bool sp__spool_put(sp__spool *s, int t, const uint8_t *data, size_t n, bool pad,
                   uint64_t *where, const char *name, sp_error *err);
bool sp__spool_flush(sp__spool *s, const char *name, sp_error *err);
/* The spool's size: every tile's bytes once flushed. */
uint64_t sp__spool_size(sp__spool *s);
void sp__spool_free(sp__spool *s);

/* The OME-XML of an OME-TIFF pyramid (ome.c): one Image of p's level-0
 * size, its PhysicalSize from the source's mpp when known, one TiffData
 * at IFD 0 naming the file `file_name` (its base name is taken) by the
 * document's UUID `uuid` ("urn:uuid:..."). Into `out` (reset first); false
 * when out of memory. */
bool sp__ome_xml(const sp_pyramid *p, const char *file_name, const char *uuid,
                 sp_buf *out);
/* A random (version 4) UUID as "urn:uuid:xxxxxxxx-...", 46 bytes with the
 * NUL; false when no randomness could be read. */
bool sp__ome_uuid(char out[46]);
/* Write all of `data` to a new file `path`. */
bool sp__write_file(const char *path, const uint8_t *data, size_t n,
                    sp_error *err);

#endif
