/*
 * pipeline: the fused pass and the batch.
 *
 *   sp_run_slide   one slide, one decode: the tissue mask is computed at
 *                  low resolution first; then level 0 is read once, band by
 *                  band, and each band goes both to the tile pyramid
 *                  (tiler/) and to the per-tile features (analysis/); the
 *                  results go to the HDF5 store (store/) from this thread
 *                  only. `slidepipe run`, `slidepipe analyze` and
 *                  `slidepipe tile` are all this call with different parts
 *                  switched on.
 *
 * When features are asked at a resolution other than level 0 (--mpp or
 * --magnification that is not the scan's), the features are computed by
 * analysis/'s own reader instead (a second decode, at the lower level);
 * the result says whether the pass was fused.
 *
 * Thread rules: sp_run_slide runs its own OpenMP teams of `threads`
 * threads and calls HDF5 only from the calling thread. Two sp_run_slide
 * calls must not run at once in one process (HDF5 is not thread-safe);
 * the batch runs slides in forked child processes. A process that forks
 * children to run sp_run_slide must not have run it (or any OpenMP code)
 * itself: libgomp's thread pool does not survive fork, and the child
 * would wait for it forever. Nothing here prints.
 */
#ifndef SP_PIPELINE_H
#define SP_PIPELINE_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

#include "analysis.h"
#include "tiler.h"
#include "util.h"

#ifdef __cplusplus
extern "C" {
#endif

enum {
    SP_RUN_TILES = 1u << 0,    /* build the pyramid */
    SP_RUN_FEATURES = 1u << 1, /* compute features, write the HDF5 file */
};

typedef struct {
    unsigned what;             /* SP_RUN_TILES | SP_RUN_FEATURES */
    const char *tiles_out;     /* pyramid name (see tiler.h), with TILES */
    const char *features_out;  /* HDF5 path, with FEATURES */
    const char *mask_png;      /* also write the tissue mask here, or NULL */
    sp_tile_opts tile;         /* threads, progress, cancel: ignored */
    sp_analysis_opts analysis; /* threads, progress, cancel: ignored */
    /* The tissue mask decides which tiles are background for
     * tile.skip_background (instead of the tiler's colour rule). */
    bool mask_for_background;
    int threads; /* 0: all cores */
    bool force;  /* replace existing outputs */
    /* With tile.passthrough: a slide whose level 0 cannot be copied
     * (sp_tile_passthrough_check) is encoded instead, the reason in the
     * result's `note`, rather than failed (what a batch wants). */
    bool passthrough_if_possible;
    const char *parameters_json; /* recorded as provenance; NULL: built */
    /* What the pyramid's sidecar records as the slide's path
     * (source.path): NULL records the file name alone, never a folder
     * (outputs are shared; folders often name patients). The caller
     * passes a full path only when the user asks for it. The HDF5 file
     * always records the file name alone (source_file). */
    const char *source_name;
    /* Progress and cancel (util.h), from the calling thread: phases
     * "mask" (1 of 1), "pixels" (level-0 rows read, of height x stripes),
     * "write" (0 of 1). The run checks `cancel` at every band and while
     * features are read at another resolution. */
    sp_progress_fn progress;
    void *progress_user;
    volatile sig_atomic_t *cancel;
} sp_run_opts;

/* Defaults: tiles and features, tiler and analysis defaults, mask used for
 * background decisions, all cores. */
void sp_run_opts_default(sp_run_opts *o);

/* The slide job's result record: what every scheduler (the CLI, the
 * batch's forked children, a cluster rank) gets back from one slide.
 * Plain data, no pointers: it may be copied as bytes over a pipe or a
 * message between processes of the same build. */
typedef struct {
    /* SP_OK, or why the job failed:
     *   SP_ERR_NOT_SLIDE  OpenSlide does not recognise the input at all
     *   SP_ERR_INPUT      a slide that cannot be opened or read (damaged)
     *   SP_ERR_OUTPUT     an output could not be written (or exists)
     *   SP_ERR_CANCELLED  the cancel flag was set
     *   SP_ERR_USAGE      bad options
     *   SP_ERR_NOMEM, SP_ERR_INTERNAL */
    sp_errcode code;
    char error[SP_ERROR_MAX]; /* "" when ok; one line naming the file */
    char stage[16];           /* where it stopped: "open", "mask", "tiles",
                                 "features", "write", "done" */
    bool fused;               /* one decode fed both tiles and features */
    sp_tile_stats tiles;      /* when TILES */
    int64_t tiles_analysed;   /* feature rows written */
    int64_t tissue_tiles;
    double tissue_area_mm2; /* NAN when mpp unknown or no FEATURES */
    double megapixels;      /* level-0 pixels decoded, in millions */
    double seconds;
    char quickhash[80]; /* OpenSlide's quickhash-1, "" when absent */
    char note[256];     /* what the job chose to do otherwise, or "" */
} sp_run_result;

/* Run `slide_path`: the whole job of one slide, and the one call every
 * scheduler makes. All or nothing: every output (the pyramid and its
 * sidecar, the HDF5 file, the mask PNG) is completed under a hidden
 * temporary name ("<dir>/.<name>.tmp-<pid>...") and they are renamed into
 * place together only once every one of them succeeded (the .dzi/.tiff
 * last); when one rename fails, those already renamed are removed again.
 * On failure nothing is left at any final output path (an output replaced
 * with `force` is then gone too), and `res` (always filled) and `err` (may
 * be NULL) hold the code and a message naming the slide or the final
 * output path and the cause. Temporaries of dead runs with the same
 * output names are removed first. */
bool sp_run_slide(const char *slide_path, const sp_run_opts *opts,
                  sp_run_result *res, sp_error *err);

/* The record as one line of JSON (no newline), appended to `out`: the
 * line `slidepipe run --json` prints and the batch keeps in done.json.
 * `slide` names the slide; `output` names the pyramid (NULL: the one in
 * the record). Keys: slide, ok; then stage and error on failure, or
 * quickhash, fused, [output, width, height, levels, stripes,
 * tiles_written, tiles_skipped, bytes,] tiles_analysed, tissue_tiles,
 * tissue_area_mm2, megapixels; then seconds. False when out of memory. */
bool sp_run_result_json(const sp_run_result *r, const char *slide,
                        const char *output, sp_buf *out);

#ifdef __cplusplus
}
#endif
#endif
