/* A slide's associated images (label, macro, thumbnail) as PNG, for
 * `serve --show-associated`. */
#include "viewer_private.h"

#include <stdlib.h>
#include <string.h>

bool sp__slide_associated_png(sp_vslide *s, const char *name, sp_buf *out,
                              sp_error *err) {
    if (!s->slide)
        return sp_error_set(err, SP_ERR_INPUT, s->name, "no %s image", name);
    for (int i = 0; i < sp_slide_associated_count(s->slide); i++) {
        const sp_associated *a = sp_slide_associated_at(s->slide, i);
        if (strcmp(a->name, name) != 0)
            continue;
        if (a->width < 1 || a->height < 1 || a->width > 16384 ||
            a->height > 16384)
            return sp_error_set(err, SP_ERR_INPUT, s->name,
                                "%s image too large", name);
        uint8_t *rgb = malloc((size_t)(a->width * a->height * 3));
        if (!rgb)
            return sp_error_set(err, SP_ERR_NOMEM, s->name, "out of memory");
        static const uint8_t white[3] = {255, 255, 255};
        bool ok = sp_slide_read_associated(s->slide, name, rgb, white, err) &&
                  sp_tile_encode(SP_TILE_PNG, 75, rgb, (int)a->width,
                                 (int)a->height, a->width * 3, out, err);
        free(rgb);
        return ok;
    }
    return sp_error_set(err, SP_ERR_INPUT, s->name, "no %s image", name);
}
