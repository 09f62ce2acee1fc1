/* The slide job's HDF5 file: provenance (the parameters as JSON),
 * metadata, coords and features, mask, thumbnail, then the summary. */
#include "pipeline_private.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void params_json(const sp_run_opts *o, sp_buf *b) {
    sp_json j;
    sp_json_init(&j, b, false);
    sp_json_begin_object(&j);
    sp_json_key(&j, "tiles");
    sp_json_bool(&j, (o->what & SP_RUN_TILES) != 0);
    sp_json_key(&j, "features");
    sp_json_bool(&j, (o->what & SP_RUN_FEATURES) != 0);
    if (o->what & SP_RUN_TILES) {
        sp_json_key(&j, "container");
        sp_json_string(&j, sp_container_name(o->tile.container));
        sp_json_key(&j, "format");
        sp_json_string(&j, sp_tile_format_ext(o->tile.format));
        sp_json_key(&j, "tile_size");
        sp_json_int(&j, o->tile.tile_size);
        sp_json_key(&j, "overlap");
        sp_json_int(&j, o->tile.overlap);
        sp_json_key(&j, "quality");
        sp_json_int(&j, o->tile.quality);
        sp_json_key(&j, "skip_background");
        sp_json_bool(&j, o->tile.skip_background);
    }
    if (o->what & SP_RUN_FEATURES) {
        const sp_analysis_opts *a = &o->analysis;
        sp_json_key(&j, "analysis_tile_size");
        sp_json_int(&j, a->tile_size);
        sp_json_key(&j, "mpp");
        sp_json_number(&j, a->mpp);
        sp_json_key(&j, "magnification");
        sp_json_number(&j, a->magnification);
        sp_json_key(&j, "all_tiles");
        sp_json_bool(&j, a->all_tiles);
        sp_json_key(&j, "min_coverage");
        sp_json_number(&j, a->min_coverage);
        sp_json_key(&j, "blur_threshold");
        sp_json_number(&j, a->blur_threshold);
        sp_json_key(&j, "pen_threshold");
        sp_json_number(&j, a->pen_threshold);
        sp_json_key(&j, "cellularity_od");
        sp_json_number(&j, a->features.cellularity_od);
        sp_json_key(&j, "mask_threshold");
        sp_json_int(&j, a->mask.threshold);
        sp_json_key(&j, "mask_downsample");
        sp_json_number(&j, a->mask.downsample);
        sp_json_key(&j, "min_object_um2");
        sp_json_number(&j, a->mask.min_object_um2);
        sp_json_key(&j, "max_hole_um2");
        sp_json_number(&j, a->mask.max_hole_um2);
    }
    sp_json_end_object(&j);
}

/* The HDF5 file up to its summary: metadata, coords and features, the
 * mask and the thumbnail (th, or none). The summary waits for
 * sp_analysis_finish (sp__run_store_end); the two may run side by side. */
bool sp__run_store_begin(const char *path, sp_slide *s, const sp_run_opts *o,
                         const sp_analysis_result *ar, const sp__thumb *th,
                         double t_start, sp_store_writer **out, sp_error *err) {
    const sp_level *l0 = sp_slide_level(s, 0);
    const sp_level *lr = sp_slide_level(s, ar->read_level);
    const char *names[SP_N_FEATURES];
    const sp_feature_info *ft = sp_feature_table();
    for (int i = 0; i < SP_N_FEATURES; i++)
        names[i] = ft[i].name;
    sp_buf pj;
    sp_buf_init(&pj);
    if (o->parameters_json)
        sp_buf_puts(&pj, o->parameters_json);
    else
        params_json(o, &pj);
    double mx = NAN, my = NAN, pw = NAN;
    sp_slide_mpp(s, &mx, &my);
    sp_slide_objective_power(s, &pw);
    sp_store_meta m = {
        .source_file = sp_basename(sp_slide_path(s)),
        .vendor = sp_slide_vendor(s),
        .width = l0->width,
        .height = l0->height,
        .mpp_x = mx,
        .mpp_y = my,
        .objective_power = pw,
        .quickhash = sp_slide_quickhash(s),
        .version = SP_VERSION,
        .parameters = pj.data ? pj.data : "{}",
        .start_time = t_start,
        .end_time = NAN,
        /* CLAM: tiles of patch_size px cut at the analysis resolution;
         * patch_level is the slide level read, level_dim its size */
        .patch_size = ar->tile_size,
        .patch_level = ar->read_level,
        .downsample = ar->downsample,
        .level_width = ar->read_ratio == 1.0 ? lr->width : ar->width,
        .level_height = ar->read_ratio == 1.0 ? lr->height : ar->height,
        .columns = names,
        .n_columns = SP_N_FEATURES,
    };
    sp_store_writer *w = NULL;
    bool ok = false;
    if (!sp_store_create(path, &m, &w, err))
        goto out;
    const size_t chunk = 65536;
    for (size_t k = 0; k < ar->n; k += chunk) {
        size_t n = ar->n - k < chunk ? ar->n - k : chunk;
        if (!sp_store_append_rows(w, ar->coords + 2 * k,
                                  ar->features + k * SP_N_FEATURES, n, err))
            goto out;
    }
    if (!sp_store_put_image(w, "mask", ar->mask.data, ar->mask.width,
                            ar->mask.height, 1, ar->mask.downsample, err))
        goto out;
    if (th && th->px &&
        !sp_store_put_image(w, "thumbnail", th->px, th->w, th->h, 3,
                            (double)th->f * th->level_downsample, err))
        goto out;
    ok = true;
out:
    if (ok)
        *out = w;
    else
        sp_store_abort(w);
    sp_buf_free(&pj);
    return ok;
}

/* The summary of sp_analysis_finish, and the commit. Consumes w. */
bool sp__run_store_end(sp_store_writer *w, const sp_analysis_result *ar,
                       sp_error *err) {
    const sp_slide_summary *sm = &ar->summary;
    const char *sn[] = {"tissue_area_px", "tissue_area_mm2", "tiles_total",
                        "tiles_tissue",   "tiles_analysed",  "blurry_fraction",
                        "pen_fraction",   "stain_h_r",       "stain_h_g",
                        "stain_h_b",      "stain_e_r",       "stain_e_g",
                        "stain_e_b",      "stain_pixels",    "otsu_threshold",
                        "mask_threshold"};
    const double sv[] = {sm->tissue_area_px,
                         sm->tissue_area_mm2,
                         (double)sm->tiles_total,
                         (double)sm->tiles_tissue,
                         (double)sm->tiles_analysed,
                         sm->blurry_fraction,
                         sm->pen_fraction,
                         sm->stain_he[0][0],
                         sm->stain_he[0][1],
                         sm->stain_he[0][2],
                         sm->stain_he[1][0],
                         sm->stain_he[1][1],
                         sm->stain_he[1][2],
                         (double)sm->stain_pixels,
                         ar->mask.otsu,
                         ar->mask.threshold};
    if (!sp_store_set_summary(w, sn, sv, sizeof sv / sizeof sv[0], err)) {
        sp_store_abort(w);
        return false;
    }
    return sp_store_commit(w, err);
}
