/* ingest's private header: the slide's layout, shared by its files. */
#ifndef SP_INGEST_PRIVATE_H
#define SP_INGEST_PRIVATE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <openslide/openslide.h>

#include "ingest.h"

struct sp_slide {
    char *path;
    openslide_t *osr;   /* shared handle; OpenSlide reads are thread-safe */
    const char *vendor; /* points into OpenSlide's properties */
    int level_count;
    sp_level *levels;
    int prop_count;
    sp_property *props; /* strings owned by osr */
    int assoc_count;
    sp_associated *assoc;
    bool has_mpp, has_objective;
    double mpp_x, mpp_y, objective;
    const char *quickhash;
};

/* Premultiplied ARGB (OpenSlide's layout) to straight RGB composited over
 * `bg`: opaque pixels are copied, transparent ones become `bg`. */
void sp__argb_to_rgb(const uint32_t *argb, size_t n, const uint8_t bg[3],
                     uint8_t *rgb);

#endif
