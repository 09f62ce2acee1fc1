/*
 * pipeline internals, a file per job of the slide job (run.c):
 *   thumb.c      the thumbnail, averaged from the bands as they go by
 *   run_store.c  the HDF5 file: provenance, features, summary
 *   staging.c    all or nothing: outputs under hidden names, renamed
 *                together
 * Not for use outside pipeline/.
 */
#ifndef SP_PIPELINE_PRIVATE_H
#define SP_PIPELINE_PRIVATE_H

#include "pipeline.h"
#include "store.h"

/* ---- thumb.c ------------------------------------------------------------ */

typedef struct {
    int64_t f;               /* level-0 px per thumbnail px */
    int64_t w, h;            /* thumbnail size */
    int64_t W, H;            /* the image it is made from */
    uint8_t *px;             /* w*h*3, once complete */
    uint32_t *sum;           /* w*h*3 sums while it is built (f < 4096) */
    bool complete;           /* px holds the thumbnail */
    double level_downsample; /* of the level the pixels came from (1) */
} sp__thumb;

bool sp__thumb_init(sp__thumb *t, int64_t W, int64_t H);
void sp__thumb_free(sp__thumb *t);
/* Add columns [x0, x1) of rows [y0, y0 + rows); `rgb` is pixel (x0, y0).
 * Stripes may come in any order, each column of a row exactly once. */
void sp__thumb_add(sp__thumb *t, const uint8_t *rgb, size_t stride, int64_t x0,
                   int64_t x1, int64_t y0, int64_t rows, int threads);
/* All pixels added: the averages. */
bool sp__thumb_finish(sp__thumb *t);
/* Without a pass over level 0: the thumbnail from the native level that is
 * nearest below THUMB_MAX on its longest side, box-averaged by a whole
 * factor. Skipped (no /thumbnail) when that level would exceed
 * THUMB_READ_MAX pixels, e.g. a huge single-level slide. The tissue
 * mask's pixels stand in for the read when they are that level, whole. */
bool sp__thumb_from_level(sp_slide *s, const sp_mask *m, sp__thumb *t,
                          int threads, sp_error *err);

/* ---- run_store.c -------------------------------------------------------- */

/* The HDF5 file up to its summary: metadata, coords and features, the
 * mask and the thumbnail (th, or none). The summary waits for
 * sp_analysis_finish (sp__run_store_end); the two may run side by side. */
bool sp__run_store_begin(const char *path, sp_slide *s, const sp_run_opts *o,
                         const sp_analysis_result *ar, const sp__thumb *th,
                         double t_start, sp_store_writer **out, sp_error *err);
/* The summary of sp_analysis_finish, and the commit. Consumes w. */
bool sp__run_store_end(sp_store_writer *w, const sp_analysis_result *ar,
                       sp_error *err);

/* ---- staging.c ---------------------------------------------------------- */

#define SP__MAX_STAGED 5

/* Every output of a run is completed under a hidden name and renamed into
 * place with the others at the end (commit_staged), so that a failure in
 * any of them leaves none at a final path. */
typedef struct {
    char *final[SP__MAX_STAGED], *stage[SP__MAX_STAGED];
    bool is_dir[SP__MAX_STAGED];
    int n;
    int main_tiles; /* the .dzi/.tiff: renamed last; -1 when none */
    char *tiles_stem, *tiles_stage_stem; /* pyramid names without ext */
    char *tiles_stage_out;               /* what the pyramid is told */
    char *h5_stage, *png_stage;
} sp__staging;

void sp__staging_free(sp__staging *g);
/* The names (tiler's sp_pyramid_names): the pyramid OUT (+ .dzi or
 * .tiff/.tif) is built as <dir>/.<OUT>.tmp-<pid> with the same extension,
 * so its .json and _files follow; the HDF5 file and the PNG are built at
 * their sp_temp_sibling names. False when out of memory. */
bool sp__staging_plan(const sp_run_opts *o, sp__staging *g);
/* Remove every staged output (after a failure). */
void sp__staging_remove(const sp__staging *g);
/* Error messages name the final paths, never the staged ones: replace
 * every staged name in err->msg (longest first, so the pyramid's stem
 * comes after the names built on it). */
void sp__unstage_msg(const sp__staging *g, sp_error *err);
void sp__staging_clean_stale(const sp_run_opts *o, const sp__staging *g);
/* Rename every staged output into place, the .dzi/.tiff last (an old one
 * is removed first: it stops looking complete before it is replaced).
 * When one fails, the ones already renamed are removed, and with `force`
 * the old outputs not yet replaced as well: none is left. */
bool sp__staging_commit(const sp__staging *g, bool force, sp_error *err);

#endif
