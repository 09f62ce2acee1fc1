/* libFuzzer target: the reader of Deep Zoom descriptors (.dzi, written
 * by tiler/dzi.c, read back by tiler/pyramid_read.c) together with its
 * sidecar, alone and through sp_catalog_open (see catalog_harness.h). Input:
 * the .dzi bytes, then, after a NUL byte, the sidecar's (no NUL: no sidecar).
 * fuzz_sidecar varies the sidecar alone beside a fixed descriptor. */
#include "catalog_harness.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    h_setup("dzi");
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const uint8_t *nul = memchr(data, 0, size);
    size_t dn = nul ? (size_t)(nul - data) : size;
    h_run(data, dn, nul ? nul + 1 : NULL, nul ? size - dn - 1 : 0);
    return 0;
}
