/* libFuzzer target: the viewer's reader of Deep Zoom descriptors (.dzi,
 * written by tiler/dzi.c), through sp_catalog_open (see
 * catalog_harness.h). Input: the .dzi bytes; a valid sidecar is beside
 * it when the first byte is odd, none otherwise. */
#include "catalog_harness.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char SIDECAR[] =
    "{\"slidepipe_version\":\"0.1.0\",\"source\":{\"path\":\"x.svs\","
    "\"vendor\":\"aperio\",\"width\":300,\"height\":250,\"mpp_x\":0.5,"
    "\"mpp_y\":0.5,\"objective_power\":20,\"quickhash\":\"ab\"},"
    "\"parameters\":{\"container\":\"dzi\",\"format\":\"jpeg\",\"tile_size\":"
    "254,\"overlap\":1,\"quality\":75,\"skip_background\":true,"
    "\"background\":[255,255,255]},\"levels\":[{\"level\":0,\"cols\":1,"
    "\"rows\":1,\"tiles\":[\"1\"]},{\"level\":9,\"cols\":2,\"rows\":1,"
    "\"tiles\":[\"10\"]}]}";

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    h_setup("dzi");
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    bool side = size > 0 && (data[0] & 1);
    h_run(data, size, side ? SIDECAR : NULL, side ? sizeof SIDECAR - 1 : 0);
    return 0;
}
