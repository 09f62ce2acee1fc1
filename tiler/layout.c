/* The names of a pyramid's files (tiler.h, "a pyramid's files"): OUT.dzi
 * + OUT_files/<level>/<col>_<row>.<ext> + OUT.json, or OUT.tiff (or
 * OUT.ome.tiff) + OUT.json, or OUT.dicom/ + OUT.json. Every writer and reader
 * of a pyramid takes them from here. */
#include "tiler.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n > k && strcmp(s + n - k, suffix) == 0;
}

const char *sp_pyramid_ext(const char *name, sp_container c) {
    if (c == SP_CONTAINER_DICOM)
        return ends_with(name, ".dicom") ? ".dicom" : "";
    if (c == SP_CONTAINER_OME_TIFF)
        return ends_with(name, ".ome.tiff")  ? ".ome.tiff"
               : ends_with(name, ".ome.tif") ? ".ome.tif"
                                             : "";
    if (c == SP_CONTAINER_TIFF)
        return ends_with(name, ".tiff")  ? ".tiff"
               : ends_with(name, ".tif") ? ".tif"
                                         : "";
    return ends_with(name, ".dzi") ? ".dzi" : "";
}

static char *join(const char *a, size_t alen, const char *b) {
    size_t n = alen + strlen(b) + 1;
    char *s = malloc(n);
    if (s)
        snprintf(s, n, "%.*s%s", (int)alen, a, b);
    return s;
}

void sp_pyramid_names_free(sp_pyramid_names *n) {
    if (!n)
        return;
    free(n->stem);
    free(n->main);
    free(n->files);
    free(n->sidecar);
    memset(n, 0, sizeof *n);
}

/* The stem is the first `len` bytes of `stem`. */
static bool names_init(sp_pyramid_names *n, const char *stem, size_t len,
                       sp_container c, const char *ext) {
    /* TIFF, OME-TIFF and DICOM have no tile folder: OUT.tiff;
     * OUT.ome.tiff; OUT.dicom/ */
    const bool tiff = c != SP_CONTAINER_DZI;
    if (!ext || !*ext)
        ext = c == SP_CONTAINER_DICOM      ? ".dicom"
              : c == SP_CONTAINER_OME_TIFF ? ".ome.tiff"
              : tiff                       ? ".tiff"
                                           : ".dzi";
    memset(n, 0, sizeof *n);
    n->stem = join(stem, len, "");
    n->main = join(stem, len, ext);
    n->files = tiff ? NULL : join(stem, len, "_files");
    n->sidecar = join(stem, len, ".json");
    if (!n->stem || !n->main || (!tiff && !n->files) || !n->sidecar) {
        sp_pyramid_names_free(n);
        return false;
    }
    return true;
}

bool sp_pyramid_names_init(sp_pyramid_names *n, const char *stem,
                           sp_container c, const char *ext) {
    return names_init(n, stem, strlen(stem), c, ext);
}

bool sp_pyramid_names_of(sp_pyramid_names *n, const char *out, sp_container c) {
    const char *ext = sp_pyramid_ext(out, c);
    return names_init(n, out, strlen(out) - strlen(ext), c, ext);
}

int sp_pyramid_tile_name(char *buf, size_t size, int64_t col, int64_t row,
                         const char *ext) {
    return snprintf(buf, size, "%lld_%lld.%s", (long long)col, (long long)row,
                    ext);
}
