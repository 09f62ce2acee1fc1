/* Region readers: one per thread, straight RGB out. */
#include "ingest.h"
#include "ingest_private.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct sp_reader {
    sp_slide *slide;
    openslide_t *osr; /* the slide's, or a private one */
    bool private_handle;
    sp__direct_reader *direct; /* level-0 fast path, or NULL */
    sp__dicom_reader *dicom;   /* a DICOM series' frames, or NULL */
    sp__vips_reader *vips;     /* an image's libvips regions, or NULL */
    uint8_t bg[3];
    uint32_t *argb; /* scratch for OpenSlide's output */
    size_t cap;     /* pixels */
};

void sp__fill_bg(uint8_t *rgb, size_t stride, int64_t w, int64_t h,
                 const uint8_t bg[3]) {
    if (w <= 0 || h <= 0)
        return;
    for (int64_t i = 0; i < w; i++)
        memcpy(rgb + (size_t)i * 3, bg, 3);
    for (int64_t k = 1; k < h; k++)
        memcpy(rgb + (size_t)k * stride, rgb, (size_t)w * 3);
}

void sp__argb_to_rgb(const uint32_t *argb, size_t n, const uint8_t bg[3],
                     uint8_t *rgb) {
    const unsigned br = bg[0], bgc = bg[1], bb = bg[2];
    for (size_t i = 0; i < n; i++) {
        uint32_t p = argb[i];
        unsigned a = p >> 24;
        unsigned r = (p >> 16) & 0xff, g = (p >> 8) & 0xff, b = p & 0xff;
        if (a != 255) {
            /* premultiplied colour plus the background behind it */
            unsigned t = 255 - a;
            r += (br * t + 127) / 255;
            g += (bgc * t + 127) / 255;
            b += (bb * t + 127) / 255;
            r = r > 255 ? 255 : r;
            g = g > 255 ? 255 : g;
            b = b > 255 ? 255 : b;
        }
        rgb[3 * i] = (uint8_t)r;
        rgb[3 * i + 1] = (uint8_t)g;
        rgb[3 * i + 2] = (uint8_t)b;
    }
}

sp_reader *sp_reader_create(sp_slide *s, unsigned flags, const uint8_t bg[3],
                            sp_error *err) {
    sp_reader *r = calloc(1, sizeof *r);
    if (!r) {
        sp_error_set(err, SP_ERR_NOMEM, s->path, "out of memory");
        return NULL;
    }
    r->slide = s;
    if (bg)
        memcpy(r->bg, bg, 3);
    else
        memset(r->bg, 255, 3);
    if (s->dicom) {
        r->dicom = sp__dicom_reader_create(s->dicom);
        if (!r->dicom) {
            sp_error_set(err, SP_ERR_NOMEM, s->path, "out of memory");
            sp_reader_free(r);
            return NULL;
        }
        return r;
    }
    if (s->vips) {
        r->vips = sp__vips_reader_create(s->vips);
        if (!r->vips) {
            sp_error_set(err, SP_ERR_NOMEM, s->path, "out of memory");
            sp_reader_free(r);
            return NULL;
        }
        return r;
    }
    if (flags & SP_READER_PRIVATE_HANDLE) {
        r->osr = openslide_open(s->path);
        const char *e = r->osr ? openslide_get_error(r->osr) : NULL;
        if (!r->osr || e) {
            sp_error_set(err, SP_ERR_INPUT, s->path, "cannot reopen: %s",
                         e ? e : "not recognised any more");
            sp_reader_free(r);
            return NULL;
        }
        r->private_handle = true;
    } else {
        r->osr = s->osr;
    }
    if (s->direct && !(flags & SP_READER_OPENSLIDE_ONLY)) {
        r->direct = sp__direct_reader_create(s->direct);
        if (!r->direct) {
            sp_error_set(err, SP_ERR_NOMEM, s->path, "out of memory");
            sp_reader_free(r);
            return NULL;
        }
    }
    return r;
}

void sp_reader_free(sp_reader *r) {
    if (!r)
        return;
    sp__direct_reader_free(r->direct);
    sp__dicom_reader_free(r->dicom);
    sp__vips_reader_free(r->vips);
    if (r->private_handle && r->osr)
        openslide_close(r->osr);
    free(r->argb);
    free(r);
}

int64_t sp_reader_repeats(const sp_reader *r) {
    return r ? sp__direct_reader_repeats(r->direct) +
                   sp__dicom_reader_repeats(r->dicom)
             : 0;
}

bool sp_reader_read(sp_reader *r, int level, int64_t x, int64_t y, int64_t w,
                    int64_t h, uint8_t *rgb, sp_error *err) {
    return sp_reader_read_stride(r, level, x, y, w, h, rgb,
                                 w > 0 ? (size_t)w * 3 : 0, err);
}

bool sp_reader_read_stride(sp_reader *r, int level, int64_t x, int64_t y,
                           int64_t w, int64_t h, uint8_t *rgb, size_t stride,
                           sp_error *err) {
    const char *path = r->slide->path;
    if (level < 0 || level >= r->slide->level_count)
        return sp_error_set(err, SP_ERR_USAGE, path,
                            "level %d out of range (slide has %d)", level,
                            r->slide->level_count);
    if (w <= 0 || h <= 0 || w > INT32_MAX || h > INT32_MAX ||
        (uint64_t)w * (uint64_t)h > SIZE_MAX / 4 || stride < (size_t)w * 3)
        return sp_error_set(err, SP_ERR_USAGE, path,
                            "invalid region size %lldx%lld", (long long)w,
                            (long long)h);
    if (r->dicom || r->vips) {
        /* level-0 coordinates to the level's nearest own pixel: callers
         * that scale a level pixel by the downsample (rounded either way)
         * get that pixel back; OpenSlide would paint the fraction */
        double ds = r->slide->levels[level].downsample;
        double lx = round((double)x / ds), ly = round((double)y / ds);
        if (!(fabs(lx) < 1e15 && fabs(ly) < 1e15))
            return sp_error_set(err, SP_ERR_USAGE, path,
                                "region origin out of range");
        if (r->vips)
            return sp__vips_read(r->vips, level, (int64_t)lx, (int64_t)ly, w, h,
                                 r->bg, rgb, stride, path, err);
        return sp__dicom_read(r->dicom, level, (int64_t)lx, (int64_t)ly, w, h,
                              r->bg, rgb, stride, path, err);
    }
    if (r->direct && sp__direct_has_level(r->slide->direct, level)) {
        /* OpenSlide reads level L at (x, y) / downsample: the same pixels
         * when that is a whole pixel (no sub-pixel painting) */
        double ds = r->slide->levels[level].downsample;
        double lx = (double)x / ds, ly = (double)y / ds;
        if (level == 0 || (lx == floor(lx) && ly == floor(ly) &&
                           fabs(lx) < 1e15 && fabs(ly) < 1e15))
            return sp__direct_read(r->direct, r->slide->direct, level,
                                   (int64_t)lx, (int64_t)ly, w, h, r->bg, rgb,
                                   stride, path, err);
    }
    size_t n = (size_t)w * (size_t)h;
    if (n > r->cap) {
        uint32_t *p = realloc(r->argb, n * sizeof *p);
        if (!p)
            return sp_error_set(err, SP_ERR_NOMEM, path,
                                "out of memory reading %lldx%lld region",
                                (long long)w, (long long)h);
        r->argb = p;
        r->cap = n;
    }
    sp_capture_clear();
    openslide_read_region(r->osr, r->argb, x, y, level, w, h);
    const char *e = openslide_get_error(r->osr);
    char cause[600];
    if (e)
        return sp_error_set(err, SP_ERR_INPUT, path,
                            "read failed at level %d (%lld,%lld %lldx%lld): "
                            "%s%s",
                            level, (long long)x, (long long)y, (long long)w,
                            (long long)h, e,
                            sp__libtiff_cause(path, cause, sizeof cause));
    for (int64_t k = 0; k < h; k++)
        sp__argb_to_rgb(r->argb + k * w, (size_t)w, r->bg, rgb + k * stride);
    return true;
}

bool sp_slide_can_read_half(const sp_slide *s) {
    return s->dicom ? sp__dicom_can_half(s->dicom)
                    : sp__direct_can_half(s->direct);
}

bool sp_reader_read_half(sp_reader *r, int64_t x, int64_t y, int64_t w,
                         int64_t h, uint8_t *rgb, size_t stride,
                         sp_error *err) {
    const char *path = r->slide->path;
    if (w <= 0 || h <= 0 || w > INT32_MAX || h > INT32_MAX ||
        stride < (size_t)w * 3)
        return sp_error_set(err, SP_ERR_USAGE, path,
                            "invalid region size %lldx%lld", (long long)w,
                            (long long)h);
    if (r->dicom)
        return sp__dicom_read_half(r->dicom, x, y, w, h, r->bg, rgb, stride,
                                   path, err);
    if (!r->direct)
        return sp_error_set(err, SP_ERR_USAGE, path,
                            "level 0 cannot be read at half size");
    return sp__direct_read_half(r->direct, r->slide->direct, x, y, w, h, r->bg,
                                rgb, stride, path, err);
}
