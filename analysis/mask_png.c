/* The tissue mask as an 8-bit greyscale PNG, through libpng's simplified
 * API, written under a temporary name and renamed into place. */
#include "analysis.h"

#include <errno.h>
#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

bool sp_mask_write_png(const sp_mask *m, const char *path, sp_error *err) {
    if (!m || !m->data || m->width <= 0 || m->height <= 0 || !path)
        return sp_error_set(err, SP_ERR_USAGE, path, "PNG: no mask to write");
    char *tmp = sp_temp_sibling(path);
    if (!tmp)
        return sp_error_set(err, SP_ERR_NOMEM, path, "out of memory");
    png_image img;
    memset(&img, 0, sizeof img);
    img.version = PNG_IMAGE_VERSION;
    img.width = (png_uint_32)m->width;
    img.height = (png_uint_32)m->height;
    img.format = PNG_FORMAT_GRAY;
    bool ok = png_image_write_to_file(&img, tmp, 0, m->data, m->width, NULL);
    if (!ok) {
        sp_error_set(err, SP_ERR_OUTPUT, path, "cannot write PNG: %s",
                     img.message[0] ? img.message : "libpng failed");
        remove(tmp);
    } else if (rename(tmp, path) != 0) {
        sp_error_errno(err, SP_ERR_OUTPUT, path, errno, "cannot rename");
        remove(tmp);
        ok = false;
    }
    png_image_free(&img);
    free(tmp);
    return ok;
}
