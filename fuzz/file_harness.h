/* Shared by the fuzz targets whose input is one file's bytes opened as a
 * slide (fuzz_dicom.c, fuzz_vips.c): a private folder made once, holding
 * one file of a fixed name, rewritten for every input and removed at
 * exit. */
#ifndef SP_FUZZ_FILE_HARNESS_H
#define SP_FUZZ_FILE_HARNESS_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static char f_dir[64], f_file[96];

static void f_cleanup(void) {
    unlink(f_file);
    rmdir(f_dir);
}

/* Make /tmp/sp-fuzz-TAG-XXXXXX/NAME's folder (once, from
 * LLVMFuzzerInitialize); aborts on failure. */
static void f_setup(const char *tag, const char *name) {
    snprintf(f_dir, sizeof f_dir, "/tmp/sp-fuzz-%s-XXXXXX", tag);
    if (!mkdtemp(f_dir))
        abort();
    snprintf(f_file, sizeof f_file, "%s/%s", f_dir, name);
    atexit(f_cleanup);
}

/* The input as the file's whole content; returns its path. */
static const char *f_write(const uint8_t *data, size_t size) {
    FILE *f = fopen(f_file, "wb");
    if (!f)
        abort();
    if (size && fwrite(data, 1, size, f) != size)
        abort();
    fclose(f);
    return f_file;
}

#endif
