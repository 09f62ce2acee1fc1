/* libFuzzer target: images read through libvips (ingest/vips.c). Input:
 * one file's bytes, written to a private file without an extension and
 * opened as a slide (OpenSlide first, then libvips: TIFF, JPEG, PNG, WebP,
 * JPEG 2000); when it opens, a corner and the far corner of every level
 * are read. Non-tiled images over 2^22 pixels are opened but not read:
 * libvips would decode them whole into a temporary file, which is
 * correct but slow (the bound on absurd sizes is checked at open).
 * Checks: no crash, leak, undefined behaviour or oversized allocation. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "file_harness.h"
#include "ingest.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    f_setup("vips", "image");
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *file = f_write(data, size);
    sp_slide *s = NULL;
    sp_error err = {0};
    if (!sp_slide_open(file, false, &s, &err))
        return 0;
    const char *tiled = sp_slide_property(s, "vips.tiled");
    const sp_level *l0 = sp_slide_level(s, 0);
    bool read = !(tiled && strcmp(tiled, "false") == 0 &&
                  l0->width * l0->height > (INT64_C(1) << 22));
    sp_reader *r = read ? sp_reader_create(s, 0, NULL, &err) : NULL;
    static uint8_t rgb[64 * 64 * 3];
    for (int l = 0; r && l < sp_slide_level_count(s); l++) {
        const sp_level *lv = sp_slide_level(s, l);
        int64_t w = lv->width < 64 ? lv->width : 64;
        int64_t h = lv->height < 64 ? lv->height : 64;
        double ds = lv->downsample;
        sp_reader_read(r, l, 0, 0, w, h, rgb, &err);
        sp_reader_read(r, l, (int64_t)((double)(lv->width - w) * ds),
                       (int64_t)((double)(lv->height - h) * ds), w, h, rgb,
                       &err);
    }
    sp_reader_free(r);
    sp_slide_close(s);
    return 0;
}
