/* viewer's private header: the catalogue's slides and what serves them
 * (browser assets, reader pools, features, associated images, on-the-fly
 * tiles), the tile cache, pages and the request handlers' helpers. */
#ifndef SP_VIEWER_PRIVATE_H
#define SP_VIEWER_PRIVATE_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ingest.h"
#include "tiler.h"
#include "util.h"
#include "viewer.h"

#define SP_VIEWER_MAX_LEVELS 48
#define SP_VIEWER_MAX_READERS 32

/* ---- routes.c ----------------------------------------------------------- */
extern const char *const sp__viewer_assets[]; /* NULL-terminated */

/* ---- the catalogue (catalog.c): ids to sources ------------------------- */

/* Per-tile features of a slide, loaded from its HDF5 file on first use. */
typedef struct {
    int64_t n; /* tiles */
    int ncols;
    char **columns;
    int64_t *xy;        /* n (x, y) level-0 top-left corners */
    float *vals;        /* column-major: vals[c * n + i] */
    float *vmin, *vmax; /* per column, over finite values (NAN if none) */
    double extent;      /* level-0 pixels per tile edge */
} sp_vfeatures;

typedef struct {
    char id[SP_ROUTE_ID_MAX + 1];
    char *name;       /* display name: the file or folder name */
    char *slide_path; /* source slide (on-the-fly tiles), or NULL */
    sp_slide *slide;
    char *dzi_path;                     /* pre-built pyramid, or NULL */
    int level_fd[SP_VIEWER_MAX_LEVELS]; /* X_files/<level>/, -1 if absent */
    char *h5_path;                      /* features, or NULL */
    /* geometry and codec of the tiles served */
    int64_t width, height;
    int dz_levels;
    sp_tile_opts topts; /* container DZI, tile size, overlap, format... */
    const char *ext;
    /* manifest of the pre-built pyramid: per Deep Zoom level cols*rows
     * bytes, 1 written, 0 skipped as background; NULL when unknown */
    uint8_t *manifest[SP_VIEWER_MAX_LEVELS];
    int64_t mcols[SP_VIEWER_MAX_LEVELS], mrows[SP_VIEWER_MAX_LEVELS];
    /* metadata */
    char *vendor, *quickhash;
    double mpp_x, mpp_y, objective_power; /* NAN unknown */
    double tissue_area_mm2;               /* NAN unknown */
    char **columns; /* feature column names from the HDF5 file */
    int ncols;
    char version[17]; /* hex token naming this slide's content */
    /* readers for on-the-fly tiles: idle ones kept here, all of them
     * counted against the catalogue's bound (guarded by c->rd_mu) */
    sp_reader *idle[SP_VIEWER_MAX_READERS];
    int nidle, nmade;
    /* the overview for low levels (guarded by c->ov_mu): Deep Zoom level
     * ov_level (-1: none needed), built on first use */
    int ov_level;
    sp_render_path path[SP_VIEWER_MAX_LEVELS]; /* per Deep Zoom level */
    sp_tile_overview *ov;
    bool ov_building, ov_failed;
    int ov_users;
    uint64_t ov_used; /* LRU tick */
    char ov_error[300];
    /* features, loaded once under the catalogue's HDF5 lock */
    bool feat_tried;
    sp_vfeatures *feat;
    char feat_error[256];
} sp_vslide;

typedef struct {
    const char *name;
    const char *type; /* Content-Type */
    char *data;
    size_t size;
    char etag[24]; /* quoted */
    char version[17];
} sp_vasset;

typedef struct sp_tile_cache sp_tile_cache;

struct sp_catalog {
    sp_catalog_opts opts;
    sp_vslide **slides;
    size_t n, cap;
    char **warnings;
    size_t nwarn;
    sp_vasset assets[8];
    size_t nassets;
    pthread_mutex_t h5_lock; /* every HDF5 call, process-wide */
    sp_tile_cache *cache;
    /* open readers of all slides, at most rd_max */
    pthread_mutex_t rd_mu;
    pthread_cond_t rd_cv;
    int rd_open, rd_max;
    /* overviews in memory or being built, at most ov_max */
    pthread_mutex_t ov_mu;
    pthread_cond_t ov_cv;
    int ov_resident, ov_max, ov_threads;
    int64_t ov_pixels;
    uint64_t ov_tick;
    uint64_t ov_builds; /* counters for the tests */
};

sp_vslide *sp__catalog_find(const sp_catalog *c, const char *id);

/* ---- browser assets (assets.c) ----------------------------------------- */
/* Read every asset of sp__viewer_assets into c->assets from the first
 * folder that holds them all: c->opts.asset_dir alone when set, else the
 * installed folder beside the binary, else SP_VIEWER_DIR (assets.c). False
 * with err naming every file tried when none does. */
bool sp__assets_load(sp_catalog *c, sp_error *err);
void sp__assets_free(sp_catalog *c);
/* The asset called `name`, or NULL. */
const sp_vasset *sp__catalog_asset(const sp_catalog *c, const char *name);

/* ---- reader pools (readers.c) ------------------------------------------ */
/* Borrow a reader of s: an idle one of s, else a new one while fewer than
 * the catalogue's bound are open, else after closing an idle reader of
 * another slide; blocks while every reader is busy. NULL with err set. */
sp_reader *sp__slide_reader_get(sp_catalog *c, sp_vslide *s, sp_error *err);
/* Return it; `spent` frees it (after a failed read). */
void sp__slide_reader_put(sp_catalog *c, sp_vslide *s, sp_reader *r,
                          bool spent);
/* Free the idle readers of s (when the catalogue closes). */
void sp__slide_readers_free(sp_vslide *s);

/* ---- on-the-fly tiles (flytile.c) ---------------------------------------- */
/* Plan the on-the-fly tiles of s (its overview level and per-level read
 * path); called once when the slide is added. */
void sp__fly_plan(sp_catalog *c, sp_vslide *s);
/* Render tile (level, col, row) of s into out: cut from the slide's
 * overview when the level would read level 0 past the exact bound
 * (building the overview once, whoever asks), else with a pooled reader.
 * False with err set. */
bool sp__fly_render(sp_catalog *c, sp_vslide *s, int level, int64_t col,
                    int64_t row, sp_buf *out, sp_error *err);

/* ---- features (features.c) --------------------------------------------- */
/* When a slide is added: the column names, the tissue area and the
 * metadata the slide did not give, from s->h5_path (refused when it is a
 * cohort file). False with err set. */
bool sp__slide_features_meta(sp_catalog *c, sp_vslide *s, sp_error *err);
/* The slide's features, loading them on first use; NULL when it has none
 * (why in s->feat_error). */
const sp_vfeatures *sp__slide_features(sp_catalog *c, sp_vslide *s);
/* Free the column names and the features of s. */
void sp__slide_features_free(sp_vslide *s);

/* ---- associated images (associated.c) ---------------------------------- */
/* Render an associated image as PNG into out; false when absent. */
bool sp__slide_associated_png(sp_vslide *s, const char *name, sp_buf *out,
                              sp_error *err);

/* ---- tile cache (tilecache.c) ------------------------------------------ */
/* A byte-bounded LRU of encoded tiles, keyed by (slide, level, col, row),
 * safe to share between threads (one mutex around lookups and inserts;
 * the bytes are reference-counted so a hit is served without copying),
 * with single-flight misses (sp__tile_cache_claim). */
typedef struct sp_cached_tile sp_cached_tile;
sp_tile_cache *sp__tile_cache_new(size_t max_bytes);
void sp__tile_cache_free(sp_tile_cache *c);
/* A hit takes a reference: release it with sp__cached_tile_unref. */
sp_cached_tile *sp__tile_cache_get(sp_tile_cache *c, const void *slide,
                                   int level, int64_t col, int64_t row);
/* A hit, referenced; or NULL with *claimed true: the caller renders the
 * tile, sp__tile_cache_put()s it and must then sp__tile_cache_land() it
 * (even on failure, with NULL); or, when another thread has claimed it,
 * waits for that thread's result and returns it referenced (NULL, with
 * *claimed false, when that render failed). */
sp_cached_tile *sp__tile_cache_claim(sp_tile_cache *c, const void *slide,
                                     int level, int64_t col, int64_t row,
                                     bool *claimed);
/* End a claim: hand `t` (may be NULL; not consumed) to the waiters. */
void sp__tile_cache_land(sp_tile_cache *c, const void *slide, int level,
                         int64_t col, int64_t row, sp_cached_tile *t);
/* Insert a copy of data; returns a referenced entry (NULL on OOM). */
sp_cached_tile *sp__tile_cache_put(sp_tile_cache *c, const void *slide,
                                   int level, int64_t col, int64_t row,
                                   const void *data, size_t n);
const void *sp__cached_tile_data(const sp_cached_tile *t);
size_t sp__cached_tile_size(const sp_cached_tile *t);
void sp__cached_tile_unref(sp_cached_tile *t);
/* Counters for the tests and the log. */
void sp__tile_cache_stats(sp_tile_cache *c, size_t *bytes, size_t *entries,
                          uint64_t *hits, uint64_t *misses, uint64_t *waits);

/* ---- pages (pages.c) ---------------------------------------------------- */
void sp__page_index(const sp_catalog *c, sp_buf *out);
void sp__page_slide(const sp_catalog *c, const sp_vslide *s, sp_buf *out);
void sp__json_slide(const sp_catalog *c, const sp_vslide *s, sp_json *j);
/* Append s with HTML escaping (& < > " '). */
void sp__html_escape(sp_buf *b, const char *s);

#endif
