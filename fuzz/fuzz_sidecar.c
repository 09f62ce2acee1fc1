/* libFuzzer target: the reader of the sidecar OUT.json (written by
 * tiler/pyramid.c: source metadata, parameters, the per-level tile
 * manifest; read back by tiler/pyramid_read.c), alone and through
 * sp_catalog_open (see catalog_harness.h). Input: the JSON bytes, beside
 * a fixed valid 1000x700 .dzi (tile 254, overlap 1: 11 levels, level 10
 * has 4x3 tiles). */
#include "catalog_harness.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char DZI[] =
    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
    "<Image xmlns=\"http://schemas.microsoft.com/deepzoom/2008\"\n"
    "  Format=\"jpeg\"\n  Overlap=\"1\"\n  TileSize=\"254\"\n  >\n"
    "  <Size \n    Height=\"700\"\n    Width=\"1000\"\n  />\n</Image>\n";

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    h_setup("sidecar");
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    h_run(DZI, sizeof DZI - 1, data, size);
    return 0;
}
