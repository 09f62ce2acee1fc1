/* ingest's private header: the slide's layout, shared by its files. */
#ifndef SP_INGEST_PRIVATE_H
#define SP_INGEST_PRIVATE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <openslide/openslide.h>

#include "ingest.h"

typedef struct sp__direct sp__direct;
typedef struct sp__direct_reader sp__direct_reader;

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
    sp__direct *direct; /* level-0 JPEG tiles read directly, or NULL */
};

/* Premultiplied ARGB (OpenSlide's layout) to straight RGB composited over
 * `bg`: opaque pixels are copied, transparent ones become `bg`. */
void sp__argb_to_rgb(const uint32_t *argb, size_t n, const uint8_t bg[3],
                     uint8_t *rgb);

/* " (libtiff: CAUSE)" when libtiff reported an error on this thread since
 * the last sp_capture_clear(), with `path` dropped from its front; ""
 * when none. Written into buf (n bytes). */
const char *sp__libtiff_cause(const char *path, char *buf, size_t n);

/* direct.c: JPEG tiles of TIFF-based slides without OpenSlide's cache and
 * painting (same pixels). sp__direct_probe is NULL unless level 0 can be
 * read so; other levels may or may not (sp__direct_has_level).
 * sp__direct_read takes the level's own pixel coordinates. */
sp__direct *sp__direct_probe(const sp_slide *s);
void sp__direct_free(sp__direct *d);
bool sp__direct_has_level(const sp__direct *d, int level);
sp__direct_reader *sp__direct_reader_create(const sp__direct *d);
void sp__direct_reader_free(sp__direct_reader *r);
bool sp__direct_read(sp__direct_reader *r, const sp__direct *d, int level,
                     int64_t x, int64_t y, int64_t w, int64_t h,
                     const uint8_t bg[3], uint8_t *rgb, size_t stride,
                     const char *path, sp_error *err);

#endif
