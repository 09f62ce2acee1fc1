/* The slide job's result record as the JSON line of `run --json` and of
 * the batch's done.json. */
#include "pipeline.h"

bool sp_run_result_json(const sp_run_result *r, const char *slide,
                        const char *output, sp_buf *out) {
    const bool ok = r->code == SP_OK;
    sp_json j;
    sp_json_init(&j, out, false);
    sp_json_begin_object(&j);
    sp_json_key(&j, "slide");
    sp_json_string(&j, slide);
    sp_json_key(&j, "ok");
    sp_json_bool(&j, ok);
    if (!ok) {
        sp_json_key(&j, "stage");
        sp_json_string(&j, r->stage[0] ? r->stage : "open");
        sp_json_key(&j, "error");
        sp_json_string(&j, r->error);
    } else {
        sp_json_key(&j, "quickhash");
        sp_json_string(&j, r->quickhash[0] ? r->quickhash : NULL);
        sp_json_key(&j, "fused");
        sp_json_bool(&j, r->fused);
        if (r->note[0]) {
            sp_json_key(&j, "note");
            sp_json_string(&j, r->note);
        }
        if (r->tiles.output[0]) {
            sp_json_key(&j, "output");
            sp_json_string(&j, output ? output : r->tiles.output);
            const struct {
                const char *k;
                int64_t v;
            } t[] = {{"width", r->tiles.width},
                     {"height", r->tiles.height},
                     {"levels", r->tiles.levels},
                     {"stripes", r->tiles.stripes},
                     {"tiles_written", r->tiles.tiles_written},
                     {"tiles_skipped", r->tiles.tiles_skipped},
                     {"tiles_copied", r->tiles.tiles_copied},
                     {"tiles_reused", r->tiles.tiles_reused},
                     {"bytes", r->tiles.bytes_written}};
            for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
                sp_json_key(&j, t[i].k);
                sp_json_int(&j, t[i].v);
            }
        }
        sp_json_key(&j, "tiles_analysed");
        sp_json_int(&j, r->tiles_analysed);
        sp_json_key(&j, "tissue_tiles");
        sp_json_int(&j, r->tissue_tiles);
        sp_json_key(&j, "tissue_area_mm2");
        sp_json_number(&j, r->tissue_area_mm2);
        sp_json_key(&j, "megapixels");
        sp_json_number(&j, r->megapixels);
    }
    sp_json_key(&j, "seconds");
    sp_json_number(&j, r->seconds);
    sp_json_end_object(&j);
    return !out->oom;
}
