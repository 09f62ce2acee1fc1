/* Direct decoding of the JPEG tiles of TIFF-based slides (Aperio and
 * generic tiled TIFF), bypassing OpenSlide's ARGB tile cache and cairo
 * painting, which cost more than the JPEG decode itself. Every level whose
 * TIFF directory is tiled JPEG is read so; level 0 is the one that
 * matters most, the others serve the tissue mask and thumbnails.
 *
 * The pixels are OpenSlide's own: both decode with libjpeg-turbo's default
 * integer DCT and fancy upsampling, with the JPEG colour space taken from
 * the TIFF photometric tag as OpenSlide does, and abbreviated tile streams
 * completed by the directory's JPEGTables. tests/test_ingest.c checks the
 * two paths give identical bytes.
 *
 * The slide keeps the tile offsets and one file descriptor; readers pread()
 * tiles and decode with their own libjpeg state, so no lock is taken. */
#include "ingest.h"
#include "ingest_private.h"

#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <tiffio.h>
#include <unistd.h>

#include <jerror.h>
#include <jpeglib.h>

/* One level's TIFF directory. */
typedef struct {
    bool present; /* tiled JPEG: read directly */
    int level;
    int64_t width, height;
    int64_t tile_w, tile_h;
    int64_t across, down;       /* tiles */
    uint64_t *offsets, *counts; /* across * down */
    uint8_t *tables;            /* JPEGTables, or NULL */
    size_t tables_len;
    J_COLOR_SPACE space; /* colour space of the JPEG data */
} dlevel;

struct sp_direct {
    int fd;
    int nlevels;
    dlevel *lv;             /* nlevels */
    int64_t max_tile_bytes; /* of the largest tile, decoded */
};

typedef struct {
    struct jpeg_error_mgr pub;
    jmp_buf jump;
    char msg[JMSG_LENGTH_MAX];
} jerr_mgr;

struct sp_direct_reader {
    struct jpeg_decompress_struct cinfo;
    jerr_mgr jerr;
    bool ready;
    uint8_t *data; /* compressed tile */
    size_t data_cap;
    uint8_t *tile;  /* a decoded tile (max_tile_bytes) */
    JSAMPROW *rows; /* a row pointer per row of the tallest tile */
};

static void jerr_exit(j_common_ptr c) {
    jerr_mgr *m = (jerr_mgr *)c->err;
    (*c->err->format_message)(c, m->msg);
    longjmp(m->jump, 1);
}

static void jerr_quiet(j_common_ptr c, int level) {
    (void)c;
    (void)level; /* warnings: libjpeg goes on, as OpenSlide's decoder does */
}

static void jerr_output(j_common_ptr c) { (void)c; }

/* Directory `tif` (the current one) as level `l`, when it is tiled JPEG
 * of l's size; false (and *l untouched) when not. */
static bool probe_dir(TIFF *tif, const sp_level *want, dlevel *l) {
    uint32_t w = 0, h = 0, tw = 0, th = 0;
    uint16_t comp = 0, spp = 0, bps = 0, planar = 0, photo = 0;
    if (!TIFFIsTiled(tif) || !TIFFGetField(tif, TIFFTAG_IMAGEWIDTH, &w) ||
        !TIFFGetField(tif, TIFFTAG_IMAGELENGTH, &h) ||
        (int64_t)w != want->width || (int64_t)h != want->height)
        return false;
    if (!TIFFGetField(tif, TIFFTAG_TILEWIDTH, &tw) ||
        !TIFFGetField(tif, TIFFTAG_TILELENGTH, &th) ||
        !TIFFGetField(tif, TIFFTAG_COMPRESSION, &comp) ||
        !TIFFGetFieldDefaulted(tif, TIFFTAG_SAMPLESPERPIXEL, &spp) ||
        !TIFFGetFieldDefaulted(tif, TIFFTAG_BITSPERSAMPLE, &bps) ||
        !TIFFGetFieldDefaulted(tif, TIFFTAG_PLANARCONFIG, &planar) ||
        !TIFFGetField(tif, TIFFTAG_PHOTOMETRIC, &photo))
        return false;
    if (comp != COMPRESSION_JPEG || spp != 3 || bps != 8 ||
        planar != PLANARCONFIG_CONTIG || tw == 0 || th == 0 ||
        (photo != PHOTOMETRIC_RGB && photo != PHOTOMETRIC_YCBCR))
        return false;
    uint64_t *offs = NULL, *cnts = NULL;
    if (!TIFFGetField(tif, TIFFTAG_TILEOFFSETS, &offs) ||
        !TIFFGetField(tif, TIFFTAG_TILEBYTECOUNTS, &cnts) || !offs || !cnts)
        return false;
    int64_t across = ((int64_t)w + tw - 1) / tw;
    int64_t down = ((int64_t)h + th - 1) / th;
    if ((int64_t)TIFFNumberOfTiles(tif) < across * down)
        return false;
    dlevel d = {.present = true,
                .width = w,
                .height = h,
                .tile_w = tw,
                .tile_h = th,
                .across = across,
                .down = down,
                .space = photo == PHOTOMETRIC_RGB ? JCS_RGB : JCS_YCbCr};
    size_t n = (size_t)(across * down);
    d.offsets = malloc(n * sizeof *d.offsets);
    d.counts = malloc(n * sizeof *d.counts);
    uint32_t tlen = 0;
    void *tables = NULL;
    if (TIFFGetField(tif, TIFFTAG_JPEGTABLES, &tlen, &tables) && tables &&
        tlen > 4) {
        d.tables = malloc(tlen);
        if (d.tables) {
            memcpy(d.tables, tables, tlen);
            d.tables_len = tlen;
        }
    }
    if (!d.offsets || !d.counts || (tables && tlen > 4 && !d.tables)) {
        free(d.offsets);
        free(d.counts);
        free(d.tables);
        return false;
    }
    memcpy(d.offsets, offs, n * sizeof *d.offsets);
    memcpy(d.counts, cnts, n * sizeof *d.counts);
    *l = d;
    return true;
}

/* Whether slide `s` can be read directly, and how. NULL when level 0 can
 * not (the OpenSlide path then serves every read). Never fails loudly: any
 * doubt means "not eligible". A directory serves the first level of its
 * size. */
sp_direct *sp__direct_probe(const sp_slide *s) {
    if (strcmp(s->vendor, "aperio") != 0 &&
        strcmp(s->vendor, "generic-tiff") != 0)
        return NULL;
    TIFF *tif = TIFFOpen(s->path, "rm");
    if (!tif)
        return NULL;
    sp_direct *d = calloc(1, sizeof *d);
    if (d)
        d->lv = calloc((size_t)s->level_count, sizeof *d->lv);
    if (!d || !d->lv) {
        free(d);
        TIFFClose(tif);
        return NULL;
    }
    d->fd = -1;
    d->nlevels = s->level_count;
    do {
        for (int k = 0; k < s->level_count; k++)
            if (!d->lv[k].present && probe_dir(tif, &s->levels[k], &d->lv[k])) {
                d->lv[k].level = k;
                break;
            }
    } while (TIFFReadDirectory(tif));
    TIFFClose(tif);
    if (d->lv[0].present)
        d->fd = open(s->path, O_RDONLY | O_CLOEXEC);
    if (d->fd < 0) {
        sp__direct_free(d);
        return NULL;
    }
    for (int k = 0; k < d->nlevels; k++) {
        const dlevel *l = &d->lv[k];
        if (l->present && l->tile_w * l->tile_h * 3 > d->max_tile_bytes)
            d->max_tile_bytes = l->tile_w * l->tile_h * 3;
    }
    return d;
}

bool sp__direct_has_level(const sp_direct *d, int level) {
    return d && level >= 0 && level < d->nlevels && d->lv[level].present;
}

void sp__direct_free(sp_direct *d) {
    if (!d)
        return;
    if (d->fd >= 0)
        close(d->fd);
    for (int k = 0; k < d->nlevels; k++) {
        free(d->lv[k].offsets);
        free(d->lv[k].counts);
        free(d->lv[k].tables);
    }
    free(d->lv);
    free(d);
}

static bool create_decompress(sp_direct_reader *r) {
    r->cinfo.err = jpeg_std_error(&r->jerr.pub);
    r->jerr.pub.error_exit = jerr_exit;
    r->jerr.pub.emit_message = jerr_quiet;
    r->jerr.pub.output_message = jerr_output;
    if (setjmp(r->jerr.jump))
        return false;
    jpeg_create_decompress(&r->cinfo);
    r->ready = true;
    return true;
}

sp_direct_reader *sp__direct_reader_new(const sp_direct *d) {
    sp_direct_reader *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    int64_t most_rows = 0;
    for (int k = 0; k < d->nlevels; k++)
        if (d->lv[k].present && d->lv[k].tile_h > most_rows)
            most_rows = d->lv[k].tile_h;
    r->tile = malloc((size_t)d->max_tile_bytes);
    r->rows = malloc((size_t)most_rows * sizeof *r->rows);
    if (!r->tile || !r->rows) {
        sp__direct_reader_free(r);
        return NULL;
    }
    if (!create_decompress(r)) {
        sp__direct_reader_free(r);
        return NULL;
    }
    return r;
}

void sp__direct_reader_free(sp_direct_reader *r) {
    if (!r)
        return;
    if (r->ready)
        jpeg_destroy_decompress(&r->cinfo);
    free(r->data);
    free(r->tile);
    free(r->rows);
    free(r);
}

static bool read_tile_data(sp_direct_reader *r, int fd, const dlevel *d,
                           size_t t, const char *path, sp_error *err) {
    uint64_t n = d->counts[t];
    if (n > r->data_cap) {
        uint8_t *p = realloc(r->data, n);
        if (!p)
            return sp_error_set(err, SP_ERR_NOMEM, path,
                                "out of memory reading a tile");
        r->data = p;
        r->data_cap = n;
    }
    size_t got = 0;
    while (got < n) {
        ssize_t k =
            pread(fd, r->data + got, n - got, (off_t)(d->offsets[t] + got));
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return sp_error_set(err, SP_ERR_INPUT, path,
                                "cannot read tile %zu: %s", t,
                                k < 0 ? strerror(errno)
                                      : "file is shorter than its tile table");
        got += (size_t)k;
    }
    return true;
}

/* Decode rows [r0, r1) and at least columns [c0, c1) of tile `t` into
 * `rows` (tile_h row pointers; row k gets tile row k, its column x at
 * byte 3 * (x - *xoff)). The whole tile when the box is the tile; else
 * libjpeg-turbo crops (jpeg_crop_scanline, widened by an iMCU each side:
 * fancy upsampling reads the next chroma sample, which the crop's own edge
 * lacks, and with that margin the pixels equal a full decode's, as the
 * ingest tests check against OpenSlide), skips the rows above
 * (jpeg_skip_scanlines) and stops after r1. Only rows [r0, r1) of `rows`
 * are written. */
static bool decode_tile(sp_direct_reader *r, int fd, const dlevel *d, size_t t,
                        int64_t c0, int64_t c1, int64_t r0, int64_t r1,
                        JSAMPROW *rows, int64_t *xoff, const char *path,
                        sp_error *err) {
    if (!read_tile_data(r, fd, d, t, path, err))
        return false;
    struct jpeg_decompress_struct *c = &r->cinfo;
    if (setjmp(r->jerr.jump)) {
        jpeg_abort_decompress(c);
        return sp_error_set(err, SP_ERR_INPUT, path,
                            "read failed at level %d (tile %zu): %s", d->level,
                            t, r->jerr.msg);
    }
    if (d->tables) {
        jpeg_mem_src(c, d->tables, (unsigned long)d->tables_len);
        if (jpeg_read_header(c, FALSE) != JPEG_HEADER_TABLES_ONLY)
            ERREXIT(c, JERR_BAD_STATE);
    }
    jpeg_mem_src(c, r->data, (unsigned long)d->counts[t]);
    if (jpeg_read_header(c, TRUE) != JPEG_HEADER_OK)
        ERREXIT(c, JERR_NO_IMAGE);
    c->jpeg_color_space = d->space;
    c->out_color_space = JCS_RGB;
    jpeg_start_decompress(c);
    if ((int64_t)c->output_width != d->tile_w ||
        (int64_t)c->output_height != d->tile_h || c->output_components != 3) {
        jpeg_abort_decompress(c);
        return sp_error_set(err, SP_ERR_INPUT, path,
                            "tile %zu is %ux%u, the directory says "
                            "%lldx%lld",
                            t, c->output_width, c->output_height,
                            (long long)d->tile_w, (long long)d->tile_h);
    }
    *xoff = 0;
    const int64_t m = (int64_t)c->max_h_samp_factor * DCTSIZE;
    int64_t a = c0 - m < 0 ? 0 : c0 - m;
    int64_t b = c1 + m > d->tile_w ? d->tile_w : c1 + m;
    if (a > 0 || b < d->tile_w) {
        JDIMENSION xo = (JDIMENSION)a, w = (JDIMENSION)(b - a);
        jpeg_crop_scanline(c, &xo, &w);
        *xoff = (int64_t)xo;
    }
    if (r0 > 0)
        jpeg_skip_scanlines(c, (JDIMENSION)r0);
    while ((int64_t)c->output_scanline < r1)
        jpeg_read_scanlines(c, rows + c->output_scanline,
                            (JDIMENSION)(r1 - c->output_scanline));
    if (r1 == d->tile_h)
        jpeg_finish_decompress(c);
    else
        jpeg_abort_decompress(c); /* the rest is not needed */
    return true;
}

static void fill_bg(uint8_t *p, int64_t n, const uint8_t bg[3]) {
    for (int64_t i = 0; i < n; i++) {
        p[3 * i] = bg[0];
        p[3 * i + 1] = bg[1];
        p[3 * i + 2] = bg[2];
    }
}

bool sp__direct_read(sp_direct_reader *r, const sp_direct *dd, int level,
                     int64_t x, int64_t y, int64_t w, int64_t h,
                     const uint8_t bg[3], uint8_t *rgb, size_t row_stride,
                     const char *path, sp_error *err) {
    const dlevel *d = &dd->lv[level];
    const int64_t stride = (int64_t)row_stride;
    /* background where the region leaves the image */
    int64_t ix0 = x < 0 ? 0 : x, iy0 = y < 0 ? 0 : y;
    int64_t ix1 = x + w > d->width ? d->width : x + w;
    int64_t iy1 = y + h > d->height ? d->height : y + h;
    if (ix0 >= ix1 || iy0 >= iy1 || ix0 > x || iy0 > y || ix1 < x + w ||
        iy1 < y + h)
        for (int64_t k = 0; k < h; k++)
            fill_bg(rgb + k * stride, w, bg);
    if (ix0 >= ix1 || iy0 >= iy1)
        return true;
    const int64_t tw = d->tile_w, th = d->tile_h;
    for (int64_t ty = iy0 / th; ty * th < iy1; ty++) {
        for (int64_t tx = ix0 / tw; tx * tw < ix1; tx++) {
            size_t t = (size_t)(ty * d->across + tx);
            int64_t x0 = tx * tw, y0 = ty * th;
            /* the part of this tile inside both the image and the region */
            int64_t cx0 = x0 > ix0 ? x0 : ix0, cy0 = y0 > iy0 ? y0 : iy0;
            int64_t cx1 = x0 + tw < ix1 ? x0 + tw : ix1;
            int64_t cy1 = y0 + th < iy1 ? y0 + th : iy1;
            if (d->counts[t] == 0) { /* sparse tile: nothing scanned */
                for (int64_t yy = cy0; yy < cy1; yy++)
                    fill_bg(rgb + (yy - y) * stride + (cx0 - x) * 3, cx1 - cx0,
                            bg);
                continue;
            }
            int64_t xoff;
            if (cx0 == x0 && cx1 == x0 + tw) {
                /* every column: decode straight into the output (only the
                 * rows of the box are written) */
                for (int64_t k = cy0 - y0; k < cy1 - y0; k++)
                    r->rows[k] = rgb + (y0 - y + k) * stride + (x0 - x) * 3;
                if (!decode_tile(r, dd->fd, d, t, 0, tw, cy0 - y0, cy1 - y0,
                                 r->rows, &xoff, path, err))
                    return false;
                continue;
            }
            /* part of the tile: decode only that box (cropped, rows
             * skipped and cut short) into scratch, then copy */
            for (int64_t k = 0; k < th; k++)
                r->rows[k] = r->tile + k * tw * 3;
            if (!decode_tile(r, dd->fd, d, t, cx0 - x0, cx1 - x0, cy0 - y0,
                             cy1 - y0, r->rows, &xoff, path, err))
                return false;
            for (int64_t yy = cy0; yy < cy1; yy++)
                memcpy(rgb + (yy - y) * stride + (cx0 - x) * 3,
                       r->tile + ((yy - y0) * tw + (cx0 - x0 - xoff)) * 3,
                       (size_t)(cx1 - cx0) * 3);
        }
    }
    return true;
}
