/* Stripped TIFF levels read strip by strip through libtiff, for vips.c:
 * libvips 8.14 reads only tiled TIFF in parts and would decode a stripped
 * one whole into a temporary file before the first read.
 *
 * What is read so
 *   A directory (a page, or a SubIFD of one) that is not tiled, with
 *   8-bit unsigned samples, chunky (or one sample), and either 1 sample
 *   MinIsBlack (grey, replicated), 3 samples RGB, 4 samples RGB with
 *   unassociated alpha (composited over the reader's background as vips.c
 *   composites libvips' RGBA), or 3 samples YCbCr in JPEG strips (libtiff
 *   converts them to RGB, JPEGCOLORMODE_RGB, as libvips does); any
 *   compression libtiff has a codec for but old-style JPEG. A decoded
 *   strip must hold at most SP_STRIPS_MAX_BYTES. Anything else (one strip
 *   holding a whole large image, 16 bits, palette, CMYK, ...) stays with
 *   libvips: the pixels are then the same as before, and so they are here
 *   (tests/test_vips_read.py compares both with `vips crop`).
 *
 * Readers
 *   A reader (one per thread) opens its own TIFF handle on the first read
 *   (libtiff handles are not thread-safe; "rm": read(2), no mapping of the
 *   whole file into the process), decodes only the strips that cover the
 *   rows asked for with TIFFReadEncodedStrip and keeps the last one:
 *   reads across the width of a strip (the level's native tile, see
 *   sp__strips_rows) decode each strip once. libtiff's errors, and its
 *   warnings while a strip is decoded (a truncated JPEG strip is only a
 *   warning: it would come back grey), go to the handle's own handlers
 *   and fail the read with libtiff's words. */
#include "ingest_private.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <tiffio.h>

/* The most bytes one decoded strip may take. */
#define SP_STRIPS_MAX_BYTES (INT64_C(64) << 20)

typedef enum { C_GREY, C_RGB, C_RGBA, C_YCBCR_JPEG } strip_colour;

struct sp__strips {
    char *path;
    int page;     /* directory of the top-level chain */
    uint64_t sub; /* SubIFD offset in that page, or 0 */
    strip_colour colour;
    int spp;                    /* samples per decoded pixel: 1, 3 or 4 */
    int64_t width, height, rps; /* rps: rows per strip */
    int64_t nstrips;
    int64_t strip_bytes; /* a full strip, decoded */
};

struct sp__strips_reader {
    const sp__strips *s;
    TIFF *t;
    uint8_t *buf;   /* the last strip decoded */
    int64_t cached; /* its index, or -1 */
    bool decoding;  /* warnings count as errors */
    bool caught;
    char cause[256]; /* libtiff's first message since `caught` was reset */
};

/* ---- libtiff's messages, per handle ------------------------------------- */

static void catch_msg(sp__strips_reader *r, const char *module, const char *fmt,
                      va_list ap) {
    if (!r || r->caught)
        return;
    r->caught = true;
    int k = module && *module
                ? snprintf(r->cause, sizeof r->cause, "%s: ", module)
                : 0;
    if (k < 0 || (size_t)k >= sizeof r->cause)
        k = 0;
    vsnprintf(r->cause + k, sizeof r->cause - (size_t)k, fmt, ap);
    r->cause[strcspn(r->cause, "\n")] = '\0';
}

static int on_error(TIFF *t, void *user, const char *module, const char *fmt,
                    va_list ap) {
    (void)t;
    catch_msg(user, module, fmt, ap);
    return 1; /* handled: not the process's handlers */
}

static int on_warning(TIFF *t, void *user, const char *module, const char *fmt,
                      va_list ap) {
    (void)t;
    sp__strips_reader *r = user;
    if (r && r->decoding)
        catch_msg(r, module, fmt, ap);
    return 1;
}

/* `path` at directory page/sub with our handlers (r: where messages go;
 * NULL: dropped); NULL when it cannot be opened or found. */
static TIFF *open_dir(const char *path, int page, uint64_t sub,
                      sp__strips_reader *r) {
    TIFFOpenOptions *o = TIFFOpenOptionsAlloc();
    if (!o)
        return NULL;
    TIFFOpenOptionsSetErrorHandlerExtR(o, on_error, r);
    TIFFOpenOptionsSetWarningHandlerExtR(o, on_warning, r);
    TIFFOpenOptionsSetMaxSingleMemAlloc(o, (tmsize_t)SP_STRIPS_MAX_BYTES * 2);
    TIFF *t = TIFFOpenExt(path, "rm", o);
    TIFFOpenOptionsFree(o);
    if (!t)
        return NULL;
    if ((page > 0 && !TIFFSetDirectory(t, (tdir_t)page)) ||
        (sub && !TIFFSetSubDirectory(t, sub))) {
        TIFFClose(t);
        return NULL;
    }
    return t;
}

/* ---- which directories ----------------------------------------------------
 */

sp__strips *sp__strips_probe(const char *path, int page, int subifd,
                             int64_t width, int64_t height) {
    sp__strips *s = NULL;
    uint64_t sub = 0;
    TIFF *t = open_dir(path, page, 0, NULL);
    if (!t)
        return NULL;
    if (subifd >= 0) {
        uint16_t n = 0;
        uint64_t *offs = NULL;
        if (!TIFFGetField(t, TIFFTAG_SUBIFD, &n, &offs) || subifd >= n)
            goto out;
        sub = offs[subifd]; /* offs is freed with the directory */
        if (!sub || !TIFFSetSubDirectory(t, sub))
            goto out;
    }
    uint32_t w = 0, h = 0, rps = 0;
    uint16_t bps = 0, spp = 0, fmt = 0, planar = 0, photo = 0, comp = 0;
    if (TIFFIsTiled(t) || !TIFFGetField(t, TIFFTAG_IMAGEWIDTH, &w) ||
        !TIFFGetField(t, TIFFTAG_IMAGELENGTH, &h) ||
        !TIFFGetField(t, TIFFTAG_PHOTOMETRIC, &photo) ||
        !TIFFGetFieldDefaulted(t, TIFFTAG_BITSPERSAMPLE, &bps) ||
        !TIFFGetFieldDefaulted(t, TIFFTAG_SAMPLESPERPIXEL, &spp) ||
        !TIFFGetFieldDefaulted(t, TIFFTAG_SAMPLEFORMAT, &fmt) ||
        !TIFFGetFieldDefaulted(t, TIFFTAG_PLANARCONFIG, &planar) ||
        !TIFFGetFieldDefaulted(t, TIFFTAG_COMPRESSION, &comp) ||
        !TIFFGetFieldDefaulted(t, TIFFTAG_ROWSPERSTRIP, &rps))
        goto out;
    if (w < 1 || h < 1 || w != width || h != height || bps != 8 ||
        fmt != SAMPLEFORMAT_UINT || rps < 1 ||
        (planar != PLANARCONFIG_CONTIG && spp != 1) ||
        comp == COMPRESSION_OJPEG || !TIFFIsCODECConfigured(comp))
        goto out;
    strip_colour c;
    uint16_t nextra = 0;
    uint16_t *extra = NULL;
    TIFFGetField(t, TIFFTAG_EXTRASAMPLES, &nextra, &extra);
    if (spp == 1 && photo == PHOTOMETRIC_MINISBLACK)
        c = C_GREY;
    else if (spp == 3 && photo == PHOTOMETRIC_RGB)
        c = C_RGB;
    else if (spp == 4 && photo == PHOTOMETRIC_RGB && nextra == 1 && extra &&
             extra[0] == EXTRASAMPLE_UNASSALPHA)
        c = C_RGBA;
    else if (spp == 3 && photo == PHOTOMETRIC_YCBCR &&
             comp == COMPRESSION_JPEG &&
             TIFFSetField(t, TIFFTAG_JPEGCOLORMODE, JPEGCOLORMODE_RGB))
        c = C_YCBCR_JPEG;
    else
        goto out;
    int64_t rows = rps < h ? rps : h;
    int64_t need = rows * (int64_t)w * spp;
    int64_t nstrips = ((int64_t)h + rows - 1) / rows;
    /* the sizes libtiff will decode agree with ours (YCbCr: after the
     * colour mode, as RGB) and are bounded */
    if (need > SP_STRIPS_MAX_BYTES ||
        TIFFVStripSize64(t, (uint32_t)rows) != (uint64_t)need ||
        (int64_t)TIFFNumberOfStrips(t) != nstrips)
        goto out;
    s = calloc(1, sizeof *s);
    if (!s || !(s->path = strdup(path))) {
        free(s);
        s = NULL;
        goto out;
    }
    s->page = page;
    s->sub = sub;
    s->colour = c;
    s->spp = spp;
    s->width = w;
    s->height = h;
    s->rps = rows;
    s->nstrips = nstrips;
    s->strip_bytes = need;
out:
    TIFFClose(t);
    return s;
}

void sp__strips_free(sp__strips *s) {
    if (!s)
        return;
    free(s->path);
    free(s);
}

int64_t sp__strips_rows(const sp__strips *s) { return s->rps; }

/* ---- readers ---------------------------------------------------------------
 */

sp__strips_reader *sp__strips_reader_create(const sp__strips *s) {
    sp__strips_reader *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->s = s;
    r->cached = -1;
    return r;
}

void sp__strips_reader_free(sp__strips_reader *r) {
    if (!r)
        return;
    if (r->t)
        TIFFClose(r->t);
    free(r->buf);
    free(r);
}

void sp__rgba_over(const uint8_t *rgba, int64_t n, const uint8_t bg[3],
                   uint8_t *rgb) {
    unsigned br = bg[0], bgg = bg[1], bb = bg[2];
    for (int64_t i = 0; i < n; i++, rgba += 4, rgb += 3) {
        unsigned a = rgba[3], t = 255 - a;
        rgb[0] = (uint8_t)((rgba[0] * a + br * t + 127) / 255);
        rgb[1] = (uint8_t)((rgba[1] * a + bgg * t + 127) / 255);
        rgb[2] = (uint8_t)((rgba[2] * a + bb * t + 127) / 255);
    }
}

/* Strip `k` into r->buf; false with r->cause set. */
static bool decode(sp__strips_reader *r, int64_t k) {
    const sp__strips *s = r->s;
    if (r->cached == k)
        return true;
    r->cached = -1;
    r->caught = false;
    if (!r->t) {
        r->t = open_dir(s->path, s->page, s->sub, r);
        if (!r->t) {
            if (!r->caught)
                snprintf(r->cause, sizeof r->cause, "cannot open it again");
            return false;
        }
        if (s->colour == C_YCBCR_JPEG &&
            !TIFFSetField(r->t, TIFFTAG_JPEGCOLORMODE, JPEGCOLORMODE_RGB)) {
            snprintf(r->cause, sizeof r->cause, "no JPEG colour mode");
            r->caught = false;
            return false;
        }
    }
    if (!r->buf && !(r->buf = malloc((size_t)s->strip_bytes))) {
        snprintf(r->cause, sizeof r->cause, "out of memory");
        r->caught = false;
        return false;
    }
    int64_t rows =
        s->height - k * s->rps < s->rps ? s->height - k * s->rps : s->rps;
    tmsize_t want = (tmsize_t)(rows * s->width * s->spp);
    r->decoding = true;
    tmsize_t got =
        TIFFReadEncodedStrip(r->t, (uint32_t)k, r->buf, (tmsize_t)want);
    r->decoding = false;
    if (got != want || r->caught) {
        if (!r->caught)
            snprintf(r->cause, sizeof r->cause,
                     "%lld bytes decoded, %lld expected", (long long)got,
                     (long long)want);
        return false;
    }
    r->cached = k;
    return true;
}

bool sp__strips_read(sp__strips_reader *r, int64_t x, int64_t y, int64_t w,
                     int64_t h, const uint8_t bg[3], uint8_t *rgb,
                     size_t stride, char *cause, size_t ncause) {
    const sp__strips *s = r->s;
    const size_t spp = (size_t)s->spp;
    for (int64_t k = y / s->rps; k * s->rps < y + h; k++) {
        if (!decode(r, k)) {
            snprintf(cause, ncause,
                     r->caught ? "strip %lld of %lld (libtiff: %s)"
                               : "strip %lld of %lld: %s",
                     (long long)k, (long long)s->nstrips, r->cause);
            return false;
        }
        int64_t r0 = k * s->rps > y ? k * s->rps : y;
        int64_t r1 = (k + 1) * s->rps < y + h ? (k + 1) * s->rps : y + h;
        for (int64_t yy = r0; yy < r1; yy++) {
            const uint8_t *src =
                r->buf +
                ((size_t)(yy - k * s->rps) * (size_t)s->width + (size_t)x) *
                    spp;
            uint8_t *dst = rgb + (size_t)(yy - y) * stride;
            switch (s->colour) {
            case C_GREY:
                for (int64_t i = 0; i < w; i++, dst += 3)
                    dst[0] = dst[1] = dst[2] = src[i];
                break;
            case C_RGB:
            case C_YCBCR_JPEG: memcpy(dst, src, (size_t)w * 3); break;
            case C_RGBA: sp__rgba_over(src, w, bg, dst); break;
            }
        }
    }
    return true;
}
