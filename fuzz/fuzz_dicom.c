/* libFuzzer target: the DICOM whole-slide reader (ingest/dicom.cpp,
 * DCMTK). Input: one DICOM file's bytes, written as the only file of a
 * private folder and opened as a slide; when it opens, a corner of every
 * level and every associated image (when small) is read. Checks: no
 * crash, leak, undefined behaviour or oversized allocation: sizes read
 * from the file are checked before anything is allocated from them. */
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
    f_setup("dicom", "slide.dcm");
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *file = f_write(data, size);
    sp_slide *s = NULL;
    sp_error err = {0};
    if (!sp_slide_open(file, false, &s, &err))
        return 0;
    sp_reader *r = sp_reader_create(s, 0, NULL, &err);
    static uint8_t rgb[128 * 128 * 3];
    for (int l = 0; r && l < sp_slide_level_count(s); l++) {
        const sp_level *lv = sp_slide_level(s, l);
        int64_t w = lv->width < 128 ? lv->width : 128;
        int64_t h = lv->height < 128 ? lv->height : 128;
        sp_reader_read(r, l, 0, 0, w, h, rgb, &err);
    }
    if (r && sp_slide_can_read_half(s)) { /* level 0 at half size */
        const sp_level *lv = sp_slide_level(s, 0);
        int64_t w = (lv->width + 1) / 2, h = (lv->height + 1) / 2;
        sp_reader_read_half(r, 0, 0, w < 128 ? w : 128, h < 128 ? h : 128, rgb,
                            128 * 3, &err);
        sp_reader_read_half(r, w - 70, h - 50, 90, 80, rgb, 128 * 3, &err);
    }
    sp_reader_free(r);
    for (int i = 0; i < sp_slide_associated_count(s); i++) {
        const sp_associated *a = sp_slide_associated_at(s, i);
        if (a->width > 0 && a->height > 0 && a->width * a->height <= 1 << 20) {
            uint8_t *buf = malloc((size_t)(a->width * a->height) * 3);
            if (buf)
                sp_slide_read_associated(s, a->name, buf, NULL, &err);
            free(buf);
        }
    }
    sp_slide_close(s);
    return 0;
}
