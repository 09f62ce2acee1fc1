/*
 * slidepipe-synth private header: the procedural H&E-like scene.
 *
 *   synth_scene    the seeded description of one slide's content: tissue
 *                  outline, stroma texture, cellular regions, nuclei.
 *                  Filled once by synth_scene_init, then read-only and safe
 *                  to share between threads.
 *   synth_painter  per-thread scratch for painting tiles of that scene;
 *                  never share one between threads.
 *
 * Every pixel is a pure function of (seed, slide size, mpp, tissue share,
 * pixel position), so tiles can be painted in any order on any thread and
 * the output does not depend on the thread count.
 */
#ifndef SP_SYNTH_H
#define SP_SYNTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util.h"

/* Near-white glass background, RGB. */
#define SYNTH_BG_R 242
#define SYNTH_BG_G 242
#define SYNTH_BG_B 240

typedef struct {
    /* inputs */
    int64_t width, height; /* level-0 size in pixels */
    double mpp;            /* microns per level-0 pixel */
    double tissue;         /* requested share of tissue, 0..1 */
    uint64_t seed;
    /* derived by synth_scene_init */
    uint32_t key[12];  /* per-field hash keys derived from the seed */
    double outline_px; /* lattice spacing of the tissue outline field */
    double detail_px;  /* lattice spacing of the outline's ragged edge */
    double margin_px;  /* width of the border kept mostly free of tissue */
    double threshold;  /* outline field level that bounds the tissue */
    double lumen_px;   /* spacing of holes (vessels, fat) inside tissue */
    double hole_level; /* hole field level above which tissue is absent */
    double stroma_px;  /* spacing of stroma density variation */
    double region_px;  /* spacing of cellular (purple) regions */
    double fibre_len_px, fibre_wid_px, warp_px; /* collagen fibres */
    int nucleus_cell;                           /* nucleus grid cell, pixels */
    double mpp_inv;                             /* 1 / mpp */
} synth_scene;

/* Derive the scene from the parameters. Validates them (width, height >= 1,
 * mpp > 0, 0 <= tissue <= 1); on failure records SP_ERR_USAGE or
 * SP_ERR_NOMEM in `err` and returns false. Owns no memory afterwards. */
bool synth_scene_init(synth_scene *s, int64_t width, int64_t height, double mpp,
                      double tissue, uint64_t seed, sp_error *err);

typedef struct synth_painter synth_painter;

/* Scratch for painting `tile` x `tile` tiles (tile a multiple of 8) of
 * `scene`, which must outlive the painter. NULL when out of memory. */
synth_painter *synth_painter_create(const synth_scene *scene, int tile);
/* Accepts NULL. */
void synth_painter_free(synth_painter *p);

/* Paint the tile whose top-left level-0 pixel is (x0, y0) as packed RGB
 * into `dst` (row pitch `pitch` bytes). Pixels outside the slide are filled
 * with the flat background colour. */
void synth_paint_tile(synth_painter *p, int64_t x0, int64_t y0, uint8_t *dst,
                      size_t pitch);

#endif
