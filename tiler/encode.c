/* Tile codecs as const ops tables: JPEG (TurboJPEG), PNG (libpng),
 * WebP (libwebp). One state per thread; no codec is hand-written. */
#include "tiler_private.h"

#include <json-c/json_c_version.h>
#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <turbojpeg.h>
#include <webp/decode.h>
#include <webp/encode.h>

struct sp__codec_state {
    int quality;
    bool chroma420; /* 4:2:0 whatever the quality (DICOM's YBR_FULL_422) */
    tjhandle tj;
    uint8_t *buf; /* output */
    size_t cap, len;
    uint8_t *webp; /* libwebp's own output of the last call */
};

static sp__codec_state *state_new(int quality) {
    sp__codec_state *st = calloc(1, sizeof *st);
    if (st)
        st->quality = quality;
    return st;
}

static void state_free(sp__codec_state *st) {
    if (!st)
        return;
    if (st->tj)
        tjDestroy(st->tj);
    if (st->webp)
        WebPFree(st->webp);
    free(st->buf);
    free(st);
}

static bool grow(sp__codec_state *st, size_t need) {
    if (need <= st->cap)
        return true;
    size_t cap = st->cap ? st->cap : 65536;
    while (cap < need)
        cap *= 2;
    uint8_t *b = realloc(st->buf, cap);
    if (!b)
        return false;
    st->buf = b;
    st->cap = cap;
    return true;
}

/* ---- JPEG -------------------------------------------------------------- */

static sp__codec_state *jpeg_create(int quality) {
    sp__codec_state *st = state_new(quality);
    if (!st)
        return NULL;
    st->tj = tjInitCompress();
    if (!st->tj) {
        state_free(st);
        return NULL;
    }
    return st;
}

static bool jpeg_encode(sp__codec_state *st, const uint8_t *rgb, int w, int h,
                        size_t stride, const uint8_t **out, size_t *n,
                        char *why, size_t why_n) {
    /* as libvips' "auto": no chroma subsampling from Q90 up */
    int samp = st->quality >= 90 && !st->chroma420 ? TJSAMP_444 : TJSAMP_420;
    unsigned long size = tjBufSize(w, h, samp);
    if (size == (unsigned long)-1 || !grow(st, size)) {
        snprintf(why, why_n, "out of memory encoding a %dx%d tile", w, h);
        return false;
    }
    unsigned char *dst = st->buf;
    unsigned long len = (unsigned long)st->cap;
    if (tjCompress2(st->tj, rgb, w, (int)stride, h, TJPF_RGB, &dst, &len, samp,
                    st->quality, TJFLAG_NOREALLOC) != 0) {
        snprintf(why, why_n, "JPEG encoder: %s", tjGetErrorStr2(st->tj));
        return false;
    }
    *out = st->buf;
    *n = len;
    return true;
}

static const sp__codec_ops jpeg_ops = {
    .name = "jpeg",
    .create = jpeg_create,
    .encode = jpeg_encode,
    .destroy = state_free,
};

/* ---- PNG --------------------------------------------------------------- */

typedef struct {
    sp__codec_state *st;
    bool oom;
    char msg[200];
} png_ctx;

static void png_write_cb(png_structp png, png_bytep data, png_size_t len) {
    png_ctx *c = png_get_io_ptr(png);
    if (!grow(c->st, c->st->len + len)) {
        c->oom = true;
        png_error(png, "out of memory");
    }
    memcpy(c->st->buf + c->st->len, data, len);
    c->st->len += len;
}

static void png_flush_cb(png_structp png) { (void)png; }

static void png_error_cb(png_structp png, png_const_charp msg) {
    png_ctx *c = png_get_error_ptr(png);
    snprintf(c->msg, sizeof c->msg, "%s", msg);
    png_longjmp(png, 1);
}

static void png_warn_cb(png_structp png, png_const_charp msg) {
    (void)png;
    (void)msg;
}

static sp__codec_state *png_create(int quality) { return state_new(quality); }

static bool png_encode(sp__codec_state *st, const uint8_t *rgb, int w, int h,
                       size_t stride, const uint8_t **out, size_t *n, char *why,
                       size_t why_n) {
    png_ctx c = {.st = st};
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &c,
                                              png_error_cb, png_warn_cb);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!png || !info) {
        png_destroy_write_struct(&png, NULL);
        snprintf(why, why_n, "out of memory starting the PNG encoder");
        return false;
    }
    st->len = 0;
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, &info);
        snprintf(why, why_n, "PNG encoder: %s", c.msg);
        return false;
    }
    png_set_write_fn(png, &c, png_write_cb, png_flush_cb);
    png_set_compression_level(png, 6);
    png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, 8,
                 PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    for (int y = 0; y < h; y++)
        png_write_row(png, rgb + (size_t)y * stride);
    png_write_end(png, info);
    png_destroy_write_struct(&png, &info);
    *out = st->buf;
    *n = st->len;
    return true;
}

static const sp__codec_ops png_ops = {
    .name = "png",
    .create = png_create,
    .encode = png_encode,
    .destroy = state_free,
};

/* ---- WebP -------------------------------------------------------------- */

static sp__codec_state *webp_create(int quality) { return state_new(quality); }

static bool webp_encode(sp__codec_state *st, const uint8_t *rgb, int w, int h,
                        size_t stride, const uint8_t **out, size_t *n,
                        char *why, size_t why_n) {
    if (st->webp) {
        WebPFree(st->webp);
        st->webp = NULL;
    }
    size_t len =
        WebPEncodeRGB(rgb, w, h, (int)stride, (float)st->quality, &st->webp);
    if (len == 0) {
        snprintf(why, why_n, "WebP encoder failed on a %dx%d tile", w, h);
        return false;
    }
    *out = st->webp;
    *n = len;
    return true;
}

static const sp__codec_ops webp_ops = {
    .name = "webp",
    .create = webp_create,
    .encode = webp_encode,
    .destroy = state_free,
};

/* JPEG for DICOM: its whole-slide images know YBR_FULL_422 (and RGB),
 * not YBR_FULL, so chroma is subsampled at every quality. */
static sp__codec_state *jpeg420_create(int quality) {
    sp__codec_state *st = jpeg_create(quality);
    if (st)
        st->chroma420 = true;
    return st;
}

const sp__codec_ops sp__jpeg420_codec = {
    .name = "jpeg",
    .create = jpeg420_create,
    .encode = jpeg_encode,
    .destroy = state_free,
};

/* ---- table ------------------------------------------------------------- */

static const sp__codec_ops *const codecs[] = {
    [SP_TILE_JPEG] = &jpeg_ops,
    [SP_TILE_PNG] = &png_ops,
    [SP_TILE_WEBP] = &webp_ops,
};

const sp__codec_ops *sp__codec(sp_tile_format f) {
    if ((unsigned)f >= sizeof codecs / sizeof codecs[0])
        return NULL;
    return codecs[f];
}

const char *sp_tile_format_ext(sp_tile_format f) {
    const sp__codec_ops *c = sp__codec(f);
    return c ? c->name : "?";
}

bool sp_tile_format_parse(const char *s, sp_tile_format *out) {
    for (size_t i = 0; i < sizeof codecs / sizeof codecs[0]; i++)
        if (strcmp(s, codecs[i]->name) == 0) {
            *out = (sp_tile_format)i;
            return true;
        }
    if (strcmp(s, "jpg") == 0) {
        *out = SP_TILE_JPEG;
        return true;
    }
    return false;
}

void sp_tiler_versions(sp_lib_versions *l) {
    sp_lib_versions_add(l, "libpng", false, "%s", png_get_libpng_ver(NULL));
    int w = WebPGetEncoderVersion(); /* 0xMMmmrr */
    sp_lib_versions_add(l, "libwebp", false, "%d.%d.%d", w >> 16 & 0xff,
                        w >> 8 & 0xff, w & 0xff);
    sp_lib_versions_add(l, "json-c", false, "%s", json_c_version());
}
