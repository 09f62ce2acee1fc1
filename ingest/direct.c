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
 * It fails where OpenSlide 3.4.1 fails, and only there (tests/
 * test_corrupt.py checks it on damaged slides): any libjpeg warning is an
 * error, every tile touched is entropy-decoded to its last row, a tile's
 * bytes must lie inside the file, levels are OpenSlide's directories in
 * OpenSlide's order, and what OpenSlide paints from elsewhere (an Aperio
 * tile without bytes below level 0) is left to OpenSlide. Errors name the
 * level and the tile (column, row).
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
#include <sys/stat.h>
#include <tiffio.h>
#include <unistd.h>

#include <jerror.h>
#include <jpeglib.h>

/* Limits on what the file claims, checked before anything is allocated
 * from it. A JPEG cannot be wider or taller than 65500 pixels, so larger
 * tiles could never decode (OpenSlide fails on them too, after allocating
 * tile_w * tile_h * 4 bytes). The decoded-tile scratch of each reader is
 * capped at 2^26 pixels (192 MiB; slides use 240-1024 px tiles). A tile's
 * compressed bytes must lie inside the file and be at most 64 MiB, or
 * twice its decoded size when that is larger: a JPEG tile is a fraction
 * of its decoded size, and 64 MiB is 400 times a 240x240 tile's. The
 * JPEGTables of a directory (a few hundred bytes in practice) may take at
 * most 1 MiB. */
enum {
    DIRECT_MAX_SIDE = 65500,
};
#define DIRECT_MAX_TILE_PIXELS (INT64_C(1) << 26)
#define DIRECT_MIN_COUNT_CAP (UINT64_C(64) << 20)
#define DIRECT_MAX_TABLES (UINT32_C(1) << 20)

/* One level's TIFF directory. */
typedef struct {
    bool present; /* tiled JPEG: read directly */
    int level;
    int64_t width, height;
    int64_t tile_w, tile_h;
    int64_t across, down;       /* tiles */
    uint64_t *offsets, *counts; /* across * down */
    uint64_t max_count;         /* the cap on a tile's compressed bytes */
    bool zero_is_error;         /* a tile without bytes fails (generic TIFF) */
    int64_t zero_tiles;         /* tiles of 0 bytes (probe only) */
    const char *broken;         /* set: every read of the level fails so */
    uint8_t *tables;            /* JPEGTables, or NULL */
    size_t tables_len;
    J_COLOR_SPACE space; /* colour space of the JPEG data */
} dlevel;

struct sp__direct {
    int fd;
    uint64_t file_size; /* at probe time */
    int nlevels;
    dlevel *lv;             /* nlevels */
    int64_t max_tile_bytes; /* of the largest tile, decoded */
};

typedef struct {
    struct jpeg_error_mgr pub;
    jmp_buf jump;
    char msg[JMSG_LENGTH_MAX];
} jerr_mgr;

struct sp__direct_reader {
    struct jpeg_decompress_struct cinfo;
    jerr_mgr jerr;
    bool ready;
    uint8_t *data; /* compressed tile */
    size_t data_cap;
    uint8_t *tile;  /* a decoded tile (max_tile_bytes) */
    JSAMPROW *rows; /* a row pointer per row of the tallest tile */
    sp__memo *memo; /* tiles whose bytes repeat, decoded once */
};

static void jerr_exit(j_common_ptr c) {
    jerr_mgr *m = (jerr_mgr *)c->err;
    (*c->err->format_message)(c, m->msg);
    longjmp(m->jump, 1);
}

/* libjpeg's warnings ("Corrupt JPEG data: premature end of data segment",
 * "Premature end of JPEG file", ...) mean damaged data that libjpeg
 * patches over with grey or repeated pixels. OpenSlide 3.4.1 makes every
 * warning fatal; so do we. Trace messages (level >= 0) are dropped. */
static void jerr_emit(j_common_ptr c, int level) {
    if (level < 0)
        (*c->err->error_exit)(c);
}

static void jerr_output(j_common_ptr c) { (void)c; }

/* Directory `tif` (the current one), OpenSlide's level `want`, into *l:
 * false (and *l untouched) when it is not tiled JPEG as OpenSlide reads
 * directly (OpenSlide then decodes it through libtiff, and so do we). A
 * level whose directory claims what no read could satisfy is kept with
 * l->broken set, so that its reads fail with that cause. */
static bool probe_dir(TIFF *tif, const sp_level *want, uint64_t file_size,
                      dlevel *l) {
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
        planar != PLANARCONFIG_CONTIG || tw == 0 || th == 0 || w == 0 ||
        h == 0 || (photo != PHOTOMETRIC_RGB && photo != PHOTOMETRIC_YCBCR))
        return false;
    uint64_t *offs = NULL, *cnts = NULL;
    if (!TIFFGetField(tif, TIFFTAG_TILEOFFSETS, &offs) ||
        !TIFFGetField(tif, TIFFTAG_TILEBYTECOUNTS, &cnts) || !offs || !cnts)
        return false;
    /* both at most 2^32, so the product cannot overflow */
    int64_t across = ((int64_t)w + tw - 1) / tw;
    int64_t down = ((int64_t)h + th - 1) / th;
    if (across > INT64_MAX / down ||
        (int64_t)TIFFNumberOfTiles(tif) < across * down)
        return false;
    dlevel d = {.present = true,
                .width = w,
                .height = h,
                .tile_w = tw,
                .tile_h = th,
                .across = across,
                .down = down,
                .space = photo == PHOTOMETRIC_RGB ? JCS_RGB : JCS_YCbCr};
    if (tw > DIRECT_MAX_SIDE || th > DIRECT_MAX_SIDE) {
        d.broken = "its tile size is beyond JPEG's limit of 65500 pixels";
        d.tile_w = d.tile_h = 0; /* nothing is allocated for it */
        *l = d;
        return true;
    }
    if ((int64_t)tw * th > DIRECT_MAX_TILE_PIXELS) {
        d.broken = "its tiles exceed slidepipe's limit of 2^26 pixels";
        d.tile_w = d.tile_h = 0;
        *l = d;
        return true;
    }
    uint64_t decoded = (uint64_t)tw * th * 3;
    d.max_count =
        2 * decoded > DIRECT_MIN_COUNT_CAP ? 2 * decoded : DIRECT_MIN_COUNT_CAP;
    /* JPEGTables exactly as OpenSlide takes them: whenever libtiff has
     * some, whatever their length */
    uint32_t tlen = 0;
    void *tables = NULL;
    if (TIFFGetField(tif, TIFFTAG_JPEGTABLES, &tlen, &tables) && tables) {
        if (tlen > DIRECT_MAX_TABLES || tlen > file_size) {
            d.broken = "its JPEGTables are longer than 1 MiB";
            d.tile_w = d.tile_h = 0;
            *l = d;
            return true;
        }
        d.tables = malloc(tlen ? tlen : 1);
        if (!d.tables)
            return false;
        memcpy(d.tables, tables, tlen);
        d.tables_len = tlen;
    }
    size_t n = (size_t)(across * down);
    d.offsets = malloc(n * sizeof *d.offsets);
    d.counts = malloc(n * sizeof *d.counts);
    if (!d.offsets || !d.counts) {
        free(d.offsets);
        free(d.counts);
        free(d.tables);
        return false;
    }
    memcpy(d.offsets, offs, n * sizeof *d.offsets);
    memcpy(d.counts, cnts, n * sizeof *d.counts);
    for (size_t t = 0; t < n; t++)
        d.zero_tiles += d.counts[t] == 0;
    *l = d;
    return true;
}

static void free_level(dlevel *l) {
    free(l->offsets);
    free(l->counts);
    free(l->tables);
    l->offsets = l->counts = NULL;
    l->tables = NULL;
    l->present = false;
}

/* A candidate directory of OpenSlide's level list. */
typedef struct {
    tdir_t dir;
    uint32_t width;
} level_dir;

/* OpenSlide 3.4.1's level list: Aperio takes every tiled directory in
 * file order; generic TIFF takes the tiled ones that are the first
 * directory or marked reduced-resolution, stably sorted by width,
 * widest first. Returns how many (at most `max`), -1 when more. */
static int level_dirs(TIFF *tif, bool aperio, level_dir *out, int max) {
    int n = 0;
    do {
        if (!TIFFIsTiled(tif))
            continue;
        tdir_t dir = TIFFCurrentDirectory(tif);
        if (!aperio && dir != 0) {
            uint32_t sub = 0;
            if (!TIFFGetField(tif, TIFFTAG_SUBFILETYPE, &sub) ||
                !(sub & FILETYPE_REDUCEDIMAGE))
                continue;
        }
        if (n == max)
            return -1;
        uint32_t w = 0;
        TIFFGetField(tif, TIFFTAG_IMAGEWIDTH, &w);
        out[n++] = (level_dir){dir, w};
    } while (TIFFReadDirectory(tif));
    if (!aperio) /* insertion sort: stable, and n is small */
        for (int i = 1; i < n; i++)
            for (int j = i; j > 0 && out[j - 1].width < out[j].width; j--) {
                level_dir t = out[j];
                out[j] = out[j - 1];
                out[j - 1] = t;
            }
    return n;
}

/* Whether slide `s` can be read directly, and how. NULL when level 0 can
 * not (the OpenSlide path then serves every read). Never fails loudly:
 * a directory that is not what OpenSlide decodes directly is left to
 * OpenSlide. Level k is OpenSlide's k-th directory (level_dirs), checked
 * against OpenSlide's level size. */
sp__direct *sp__direct_probe(const sp_slide *s) {
    bool aperio = strcmp(s->vendor, "aperio") == 0;
    if (!aperio && strcmp(s->vendor, "generic-tiff") != 0)
        return NULL;
    sp__direct *d = NULL;
    level_dir *dirs = NULL;
    TIFF *tif = TIFFOpen(s->path, "rm");
    if (!tif)
        return NULL;
    d = calloc(1, sizeof *d);
    dirs = calloc((size_t)s->level_count, sizeof *dirs);
    if (!d || !dirs)
        goto fail;
    d->fd = -1;
    d->lv = calloc((size_t)s->level_count, sizeof *d->lv);
    if (!d->lv)
        goto fail;
    d->nlevels = s->level_count;
    if (level_dirs(tif, aperio, dirs, s->level_count) != s->level_count)
        goto fail;
    d->fd = open(s->path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (d->fd < 0 || fstat(d->fd, &st) != 0 || st.st_size <= 0)
        goto fail;
    d->file_size = (uint64_t)st.st_size;
    for (int k = 0; k < s->level_count; k++)
        if (TIFFSetDirectory(tif, dirs[k].dir) &&
            probe_dir(tif, &s->levels[k], d->file_size, &d->lv[k]))
            d->lv[k].level = k;
    /* Aperio: OpenSlide paints a tile without bytes from the level above
     * (transparent at level 0), and marks the tiles of every lower level
     * that cover it missing too; those levels are left to OpenSlide, as
     * are the levels below one whose tiles we do not know.
     * Generic TIFF: such a tile fails to read in OpenSlide, and here. */
    bool doubt_above = false;
    for (int k = 0; k < d->nlevels; k++) {
        dlevel *l = &d->lv[k];
        bool doubt = !l->present || l->broken || l->zero_tiles > 0;
        if (aperio && k > 0 && l->present && (doubt_above || l->zero_tiles))
            free_level(l);
        doubt_above = doubt_above || doubt;
        l->zero_is_error = !aperio;
    }
    TIFFClose(tif);
    tif = NULL;
    free(dirs);
    dirs = NULL;
    if (!d->lv[0].present)
        goto fail;
    for (int k = 0; k < d->nlevels; k++) {
        const dlevel *l = &d->lv[k];
        if (l->present && l->tile_w * l->tile_h * 3 > d->max_tile_bytes)
            d->max_tile_bytes = l->tile_w * l->tile_h * 3;
    }
    return d;
fail:
    if (tif)
        TIFFClose(tif);
    free(dirs);
    sp__direct_free(d);
    return NULL;
}

bool sp__direct_has_level(const sp__direct *d, int level) {
    return d && level >= 0 && level < d->nlevels && d->lv[level].present;
}

void sp__direct_free(sp__direct *d) {
    if (!d)
        return;
    if (d->fd >= 0)
        close(d->fd);
    for (int k = 0; k < d->nlevels; k++)
        free_level(&d->lv[k]);
    free(d->lv);
    free(d);
}

static bool create_decompress(sp__direct_reader *r) {
    r->cinfo.err = jpeg_std_error(&r->jerr.pub);
    r->jerr.pub.error_exit = jerr_exit;
    r->jerr.pub.emit_message = jerr_emit;
    r->jerr.pub.output_message = jerr_output;
    if (setjmp(r->jerr.jump))
        return false;
    jpeg_create_decompress(&r->cinfo);
    r->ready = true;
    return true;
}

sp__direct_reader *sp__direct_reader_create(const sp__direct *d) {
    sp__direct_reader *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    int64_t most_rows = 1;
    for (int k = 0; k < d->nlevels; k++)
        if (d->lv[k].present && d->lv[k].tile_h > most_rows)
            most_rows = d->lv[k].tile_h;
    r->tile = malloc(d->max_tile_bytes > 0 ? (size_t)d->max_tile_bytes : 1);
    r->rows = malloc((size_t)most_rows * sizeof *r->rows);
    r->memo = sp__memo_create();
    if (!r->tile || !r->rows || !r->memo) {
        sp__direct_reader_free(r);
        return NULL;
    }
    if (!create_decompress(r)) {
        sp__direct_reader_free(r);
        return NULL;
    }
    return r;
}

void sp__direct_reader_free(sp__direct_reader *r) {
    if (!r)
        return;
    if (r->ready)
        jpeg_destroy_decompress(&r->cinfo);
    free(r->data);
    free(r->tile);
    free(r->rows);
    sp__memo_free(r->memo);
    free(r);
}

int64_t sp__direct_reader_repeats(const sp__direct_reader *r) {
    return r ? sp__memo_hits(r->memo) : 0;
}

int sp__pread_all(int fd, uint8_t *buf, uint64_t n, uint64_t off) {
    uint64_t got = 0;
    while (got < n) {
        ssize_t k = pread(fd, buf + got, n - got, (off_t)(off + got));
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return k < 0 ? errno : -1;
        got += (uint64_t)k;
    }
    return 0;
}

/* The error of a failed pread_all of tile (tx, ty) of level `level`. */
static bool tile_read_error(int e, int level, int64_t tx, int64_t ty,
                            const char *path, sp_error *err) {
    return sp_error_set(
        err, SP_ERR_INPUT, path, "level %d tile (%lld, %lld): %s", level,
        (long long)tx, (long long)ty,
        e > 0 ? strerror(e) : "the file is shorter than it was");
}

/* The compressed bytes of tile `t` (column tx, row ty) into r->data: they
 * must lie inside the file (as sized at probe time; two comparisons, no
 * system call) and within the level's cap, as TIFFReadRawTile would fail
 * for OpenSlide on bytes beyond the end of the file. */
static bool read_tile_data(sp__direct_reader *r, const sp__direct *dd,
                           const dlevel *d, size_t t, int64_t tx, int64_t ty,
                           const char *path, sp_error *err) {
    uint64_t n = d->counts[t], off = d->offsets[t];
    if (n > d->max_count || off > dd->file_size || n > dd->file_size - off)
        return sp_error_set(
            err, SP_ERR_INPUT, path,
            "level %d tile (%lld, %lld): %llu bytes at offset %llu %s (the "
            "file has %llu bytes)",
            d->level, (long long)tx, (long long)ty, (unsigned long long)n,
            (unsigned long long)off,
            n > d->max_count ? "exceed the cap on a tile's size"
                             : "reach past the end of the file",
            (unsigned long long)dd->file_size);
    if (n > r->data_cap) {
        uint8_t *p = realloc(r->data, n);
        if (!p)
            return sp_error_set(err, SP_ERR_NOMEM, path,
                                "out of memory reading a tile");
        r->data = p;
        r->data_cap = n;
    }
    int e = sp__pread_all(dd->fd, r->data, n, off);
    return e == 0 || tile_read_error(e, d->level, tx, ty, path, err);
}

/* Decode rows [r0, r1) and at least columns [c0, c1) of tile `t` (column
 * tx, row ty) into `rows` (tile_h row pointers; row k gets tile row k, its
 * column x at byte 3 * (x - *xoff)). The whole tile when the box is the
 * tile; else libjpeg-turbo crops (jpeg_crop_scanline, widened by an iMCU
 * each side: fancy upsampling reads the next chroma sample, which the
 * crop's own edge lacks, and with that margin the pixels equal a full
 * decode's, as the ingest tests check against OpenSlide) and skips the
 * rows above (jpeg_skip_scanlines). Only rows [r0, r1) of `rows` are
 * written.
 *
 * A whole tile (every row and column) whose bytes repeat a tile's that
 * decoded before is copied from the reader's memo (memo.c) instead; the
 * rows are then `stride` bytes apart.
 *
 * Strictness is OpenSlide's: it decodes every row of every tile it
 * touches, and any libjpeg warning fails the tile. Skipped rows are still
 * entropy-decoded by libjpeg-turbo, and crops decode every column's
 * Huffman data, so damage anywhere in the tile's rows is seen; rows below
 * r1 are skipped down to the last one, which is decoded into scratch
 * (skipping to the very end would stop without reading). Like OpenSlide,
 * the data after the last row (up to EOI) is not examined:
 * jpeg_finish_decompress is never called. */
static bool decode_tile(sp__direct_reader *r, const sp__direct *dd,
                        const dlevel *d, int denom, size_t t, int64_t tx,
                        int64_t ty, int64_t c0, int64_t c1, int64_t r0,
                        int64_t r1, JSAMPROW *rows, size_t stride,
                        int64_t *xoff, const char *path, sp_error *err) {
    if (!read_tile_data(r, dd, d, t, tx, ty, path, err))
        return false;
    /* the tile's size in output pixels (tile sizes are even at denom 2) */
    const int64_t tw = d->tile_w / denom, th = d->tile_h / denom;
    const bool whole = c0 == 0 && c1 >= tw && r0 == 0 && r1 >= th;
    const uint32_t kind = (uint32_t)d->level << 2 | (uint32_t)denom;
    *xoff = 0;
    if (whole && sp__memo_get(r->memo, kind, r->data, d->counts[t], tw, th,
                              rows[0], stride))
        return true;
    struct jpeg_decompress_struct *c = &r->cinfo;
    if (setjmp(r->jerr.jump)) {
        jpeg_abort_decompress(c);
        return sp_error_set(err, SP_ERR_INPUT, path,
                            "level %d tile (%lld, %lld): %s", d->level,
                            (long long)tx, (long long)ty, r->jerr.msg);
    }
    if (d->tables) {
        jpeg_mem_src(c, d->tables, (unsigned long)d->tables_len);
        if (jpeg_read_header(c, FALSE) != JPEG_HEADER_TABLES_ONLY) {
            jpeg_abort_decompress(c);
            return sp_error_set(err, SP_ERR_INPUT, path,
                                "level %d: cannot load its JPEGTables",
                                d->level);
        }
    }
    jpeg_mem_src(c, r->data, (unsigned long)d->counts[t]);
    if (jpeg_read_header(c, TRUE) != JPEG_HEADER_OK)
        ERREXIT(c, JERR_NO_IMAGE);
    c->jpeg_color_space = d->space;
    c->out_color_space = JCS_RGB;
    c->scale_num = 1;
    c->scale_denom = (unsigned)denom;
    jpeg_start_decompress(c);
    if ((int64_t)c->output_width != tw || (int64_t)c->output_height != th ||
        c->output_components != 3) {
        jpeg_abort_decompress(c);
        return sp_error_set(err, SP_ERR_INPUT, path,
                            "level %d tile (%lld, %lld) is a %ux%u JPEG, the "
                            "TIFF directory says %lldx%lld",
                            d->level, (long long)tx, (long long)ty,
                            c->output_width * denom, c->output_height * denom,
                            (long long)d->tile_w, (long long)d->tile_h);
    }
    const int64_t m = (int64_t)c->max_h_samp_factor * DCTSIZE;
    int64_t a = c0 - m < 0 ? 0 : c0 - m;
    int64_t b = c1 + m > tw ? tw : c1 + m;
    if (a > 0 || b < tw) {
        JDIMENSION xo = (JDIMENSION)a, w = (JDIMENSION)(b - a);
        jpeg_crop_scanline(c, &xo, &w);
        *xoff = (int64_t)xo;
    }
    if (r0 > 0)
        jpeg_skip_scanlines(c, (JDIMENSION)r0);
    while ((int64_t)c->output_scanline < r1)
        jpeg_read_scanlines(c, rows + c->output_scanline,
                            (JDIMENSION)(r1 - c->output_scanline));
    if (r1 < th) {
        /* the rest of the tile's data, as OpenSlide reads it */
        JSAMPROW last = r->tile + (th - 1) * tw * 3;
        if (r1 < th - 1)
            jpeg_skip_scanlines(c, (JDIMENSION)(th - 1 - r1));
        while (c->output_scanline < c->output_height)
            jpeg_read_scanlines(c, &last, 1);
    }
    jpeg_abort_decompress(c);
    if (whole)
        sp__memo_put(r->memo, kind, r->data, d->counts[t], tw, th, rows[0],
                     stride);
    return true;
}

bool sp__odd_edge(int64_t size, int64_t t, int64_t tile) {
    int64_t left = size - t * tile;
    return left < tile && left % 2 == 1;
}

/* A tile that the image's edge cuts after an odd row or column, at half
 * size: decoded whole and averaged in 2x2 boxes, the image's last row or
 * column paired with itself, as the pyramid's box does (DCT scaling would
 * mix in the padding past the edge). Half-size tile columns [c0, c1) and
 * rows [r0, r1) into `out` (its pixel (c0, r0)), rows `stride` apart. */
static bool half_edge_tile(sp__direct_reader *r, const sp__direct *dd,
                           const dlevel *d, size_t t, int64_t tx, int64_t ty,
                           int64_t c0, int64_t c1, int64_t r0, int64_t r1,
                           uint8_t *out, int64_t stride, const char *path,
                           sp_error *err) {
    const int64_t tw = d->tile_w, th = d->tile_h;
    for (int64_t k = 0; k < th; k++)
        r->rows[k] = r->tile + k * tw * 3;
    int64_t xoff;
    if (!decode_tile(r, dd, d, 1, t, tx, ty, 0, tw, 0, th, r->rows,
                     (size_t)tw * 3, &xoff, path, err))
        return false;
    /* the last image row and column inside the tile */
    const int64_t ylast =
        d->height - ty * th - 1 < th - 1 ? d->height - ty * th - 1 : th - 1;
    const int64_t xlast =
        d->width - tx * tw - 1 < tw - 1 ? d->width - tx * tw - 1 : tw - 1;
    sp__box_half(r->tile, tw, xlast, ylast, c0, c1, r0, r1, out,
                 (size_t)stride);
    return true;
}

void sp__box_half(const uint8_t *tile, int64_t tw, int64_t xlast, int64_t ylast,
                  int64_t c0, int64_t c1, int64_t r0, int64_t r1, uint8_t *out,
                  size_t stride) {
    for (int64_t i = r0; i < r1; i++) {
        const uint8_t *a = tile + 2 * i * tw * 3;
        const uint8_t *b =
            tile + (2 * i + 1 > ylast ? 2 * i : 2 * i + 1) * tw * 3;
        uint8_t *o = out + (size_t)(i - r0) * stride;
        for (int64_t j = c0; j < c1; j++) {
            const int64_t u = 6 * j, v = 2 * j + 1 > xlast ? u : u + 3;
            for (int ch = 0; ch < 3; ch++)
                o[3 * (j - c0) + ch] = (uint8_t)((a[u + ch] + a[v + ch] +
                                                  b[u + ch] + b[v + ch] + 2) >>
                                                 2);
        }
    }
}

/* Region (x, y, w, h) of level `level` decoded at 1/denom of its size
 * (1 or 2): in pixels of that size, whose tiles are tile_w/denom by
 * tile_h/denom and whose image is width/denom by height/denom, rounded
 * up. */
static bool direct_read(sp__direct_reader *r, const sp__direct *dd, int level,
                        int denom, int64_t x, int64_t y, int64_t w, int64_t h,
                        const uint8_t bg[3], uint8_t *rgb, size_t row_stride,
                        const char *path, sp_error *err) {
    const dlevel *d = &dd->lv[level];
    const int64_t stride = (int64_t)row_stride;
    const int64_t width = (d->width + denom - 1) / denom,
                  height = (d->height + denom - 1) / denom;
    /* background where the region leaves the image */
    int64_t ix0 = x < 0 ? 0 : x, iy0 = y < 0 ? 0 : y;
    int64_t ix1 = x + w > width ? width : x + w;
    int64_t iy1 = y + h > height ? height : y + h;
    if (ix0 >= ix1 || iy0 >= iy1 || ix0 > x || iy0 > y || ix1 < x + w ||
        iy1 < y + h)
        sp__fill_bg(rgb, row_stride, w, h, bg);
    if (ix0 >= ix1 || iy0 >= iy1)
        return true;
    if (d->broken)
        return sp_error_set(err, SP_ERR_INPUT, path, "level %d: %s", level,
                            d->broken);
    const int64_t tw = d->tile_w / denom, th = d->tile_h / denom;
    for (int64_t ty = iy0 / th; ty * th < iy1; ty++) {
        for (int64_t tx = ix0 / tw; tx * tw < ix1; tx++) {
            size_t t = (size_t)(ty * d->across + tx);
            int64_t x0 = tx * tw, y0 = ty * th;
            /* the part of this tile inside both the image and the region */
            int64_t cx0 = x0 > ix0 ? x0 : ix0, cy0 = y0 > iy0 ? y0 : iy0;
            int64_t cx1 = x0 + tw < ix1 ? x0 + tw : ix1;
            int64_t cy1 = y0 + th < iy1 ? y0 + th : iy1;
            if (d->counts[t] == 0) { /* sparse tile: nothing scanned */
                if (d->zero_is_error)
                    return sp_error_set(err, SP_ERR_INPUT, path,
                                        "level %d tile (%lld, %lld) has no "
                                        "data (byte count 0)",
                                        level, (long long)tx, (long long)ty);
                sp__fill_bg(rgb + (cy0 - y) * stride + (cx0 - x) * 3,
                            row_stride, cx1 - cx0, cy1 - cy0, bg);
                continue;
            }
            int64_t xoff;
            if (denom == 2 && (sp__odd_edge(d->width, tx, d->tile_w) ||
                               sp__odd_edge(d->height, ty, d->tile_h))) {
                if (!half_edge_tile(r, dd, d, t, tx, ty, cx0 - x0, cx1 - x0,
                                    cy0 - y0, cy1 - y0,
                                    rgb + (cy0 - y) * stride + (cx0 - x) * 3,
                                    stride, path, err))
                    return false;
                continue;
            }
            if (cx0 == x0 && cx1 == x0 + tw) {
                /* every column: decode straight into the output (only the
                 * rows of the box are written) */
                for (int64_t k = cy0 - y0; k < cy1 - y0; k++)
                    r->rows[k] = rgb + (y0 - y + k) * stride + (x0 - x) * 3;
                if (!decode_tile(r, dd, d, denom, t, tx, ty, 0, tw, cy0 - y0,
                                 cy1 - y0, r->rows, row_stride, &xoff, path,
                                 err))
                    return false;
                continue;
            }
            /* part of the tile: decode only that box (cropped, rows
             * skipped and cut short) into scratch, then copy */
            for (int64_t k = 0; k < th; k++)
                r->rows[k] = r->tile + k * tw * 3;
            if (!decode_tile(r, dd, d, denom, t, tx, ty, cx0 - x0, cx1 - x0,
                             cy0 - y0, cy1 - y0, r->rows, (size_t)tw * 3, &xoff,
                             path, err))
                return false;
            for (int64_t yy = cy0; yy < cy1; yy++)
                memcpy(rgb + (yy - y) * stride + (cx0 - x) * 3,
                       r->tile + ((yy - y0) * tw + (cx0 - x0 - xoff)) * 3,
                       (size_t)(cx1 - cx0) * 3);
        }
    }
    return true;
}

bool sp__direct_read(sp__direct_reader *r, const sp__direct *dd, int level,
                     int64_t x, int64_t y, int64_t w, int64_t h,
                     const uint8_t bg[3], uint8_t *rgb, size_t row_stride,
                     const char *path, sp_error *err) {
    return direct_read(r, dd, level, 1, x, y, w, h, bg, rgb, row_stride, path,
                       err);
}

/* ---- level 0 at half size ---------------------------------------------- */

bool sp__direct_can_half(const sp__direct *d) {
    const dlevel *l = d && d->nlevels > 0 ? &d->lv[0] : NULL;
    return l && l->present && !l->broken && l->tile_w % 2 == 0 &&
           l->tile_h % 2 == 0;
}

/* libjpeg's DCT scaling (scale 1/2): each 8x8 block's inverse DCT is
 * computed from its 4x4 lowest frequencies, straight into 4x4 pixels,
 * chroma likewise before upsampling. The entropy decode is the full
 * one, so damage is seen as in a full-size read. */
bool sp__direct_read_half(sp__direct_reader *r, const sp__direct *dd, int64_t x,
                          int64_t y, int64_t w, int64_t h, const uint8_t bg[3],
                          uint8_t *rgb, size_t row_stride, const char *path,
                          sp_error *err) {
    if (!sp__direct_can_half(dd))
        return sp_error_set(err, SP_ERR_USAGE, path,
                            "level 0 cannot be read at half size");
    return direct_read(r, dd, 0, 2, x, y, w, h, bg, rgb, row_stride, path, err);
}

/* ---- stored tiles ------------------------------------------------------ */

/* The compressed bytes of tile `t` of level `d` appended to `out`, checked
 * to lie inside the file as read_tile_data does. */
static bool append_tile_bytes(const sp__direct *dd, const dlevel *d, size_t t,
                              int64_t tx, int64_t ty, sp_buf *out,
                              const char *path, sp_error *err) {
    uint64_t n = d->counts[t], off = d->offsets[t];
    if (n > d->max_count || off > dd->file_size || n > dd->file_size - off)
        return sp_error_set(err, SP_ERR_INPUT, path,
                            "level %d tile (%lld, %lld): %llu bytes at offset "
                            "%llu lie outside the file",
                            d->level, (long long)tx, (long long)ty,
                            (unsigned long long)n, (unsigned long long)off);
    uint8_t *at = sp_buf_extend(out, (size_t)n);
    if (!at)
        return sp_error_set(err, SP_ERR_NOMEM, path,
                            "out of memory reading a tile");
    int e = sp__pread_all(dd->fd, at, n, off);
    return e == 0 || tile_read_error(e, d->level, tx, ty, path, err);
}

/* A tile as a self-contained JPEG: SOI, the tables' markers (between
 * their own SOI and EOI), then the tile's markers after its SOI. */
static bool whole_tile(const sp__direct *dd, const dlevel *d, int64_t tx,
                       int64_t ty, sp_buf *out, const char *path,
                       sp_error *err) {
    sp_buf_reset(out);
    const uint8_t *tb = d->tables;
    size_t tn = d->tables_len;
    if (tb && (tn < 4 || tb[0] != 0xFF || tb[1] != 0xD8 || tb[tn - 2] != 0xFF ||
               tb[tn - 1] != 0xD9))
        return sp_error_set(err, SP_ERR_INPUT, path,
                            "level %d: its JPEGTables are not a JPEG tables "
                            "stream",
                            d->level);
    if (tb)
        sp_buf_append(out, tb, tn - 2); /* SOI and the tables */
    size_t at = out->len;
    size_t t = (size_t)(ty * d->across + tx);
    if (!append_tile_bytes(dd, d, t, tx, ty, out, path, err))
        return false;
    const uint8_t *b = (const uint8_t *)out->data + at;
    if (out->len - at < 4 || b[0] != 0xFF || b[1] != 0xD8)
        return sp_error_set(err, SP_ERR_INPUT, path,
                            "level %d tile (%lld, %lld) is not a JPEG stream",
                            d->level, (long long)tx, (long long)ty);
    if (tb) /* drop the tile's own SOI */
        memmove(out->data + at, out->data + at + 2, out->len - at - 2),
            out->len -= 2;
    return true;
}

bool sp__jpeg_stored_info(const uint8_t *jpeg, size_t n, int64_t tw, int64_t th,
                          bool rgb, sp_stored_tiles *out, const char **why) {
    struct jpeg_decompress_struct c;
    jerr_mgr jerr;
    c.err = jpeg_std_error(&jerr.pub);
    jerr.pub.error_exit = jerr_exit;
    jerr.pub.emit_message = jerr_emit;
    jerr.pub.output_message = jerr_output;
    bool ok = false;
    if (setjmp(jerr.jump)) {
        jpeg_destroy_decompress(&c);
        *why = "its first tile is not a JPEG libjpeg reads";
        return false;
    }
    jpeg_create_decompress(&c);
    jpeg_mem_src(&c, jpeg, (unsigned long)n);
    *why = "its first tile is not a JPEG libjpeg reads";
    if (jpeg_read_header(&c, TRUE) == JPEG_HEADER_OK) {
        const jpeg_component_info *ci = c.comp_info;
        if (c.progressive_mode || c.arith_code || c.data_precision != 8 ||
            c.num_components != 3)
            *why = "its tiles are not baseline 8-bit 3-component JPEG";
        else if ((int64_t)c.image_width != tw || (int64_t)c.image_height != th)
            *why = "its tiles' JPEG size differs from the tile size";
        else if (ci[1].h_samp_factor != 1 || ci[1].v_samp_factor != 1 ||
                 ci[2].h_samp_factor != 1 || ci[2].v_samp_factor != 1)
            *why = "its chroma sampling is unusual";
        else {
            *out = (sp_stored_tiles){.tile_width = tw,
                                     .tile_height = th,
                                     .rgb = rgb,
                                     .h_samp = ci[0].h_samp_factor,
                                     .v_samp = ci[0].v_samp_factor};
            ok = true;
        }
    }
    jpeg_destroy_decompress(&c);
    return ok;
}

bool sp__direct_stored(const sp__direct *d, int level, sp_stored_tiles *out,
                       const char **why) {
    if (!sp__direct_has_level(d, level)) {
        *why = "its tiles are not JPEG in TIFF tiles slidepipe reads directly";
        return false;
    }
    const dlevel *l = &d->lv[level];
    if (l->broken) {
        *why = l->broken;
        return false;
    }
    if (l->zero_tiles > 0) {
        *why = "some of its tiles hold no data";
        return false;
    }
    sp_buf b;
    sp_buf_init(&b);
    sp_error err;
    sp_error_clear(&err);
    *why = "its first tile cannot be read";
    if (!whole_tile(d, l, 0, 0, &b, "", &err)) {
        sp_buf_free(&b);
        return false;
    }
    bool ok = sp__jpeg_stored_info((const uint8_t *)b.data, b.len, l->tile_w,
                                   l->tile_h, l->space == JCS_RGB, out, why);
    sp_buf_free(&b);
    return ok;
}

bool sp__direct_stored_tile(const sp__direct *d, int level, int64_t col,
                            int64_t row, sp_buf *out, const char *path,
                            sp_error *err) {
    if (!sp__direct_has_level(d, level) || d->lv[level].broken)
        return sp_error_set(err, SP_ERR_USAGE, path,
                            "level %d's tiles cannot be copied", level);
    const dlevel *l = &d->lv[level];
    if (col < 0 || row < 0 || col >= l->across || row >= l->down)
        return sp_error_set(err, SP_ERR_USAGE, path,
                            "level %d has no tile (%lld, %lld)", level,
                            (long long)col, (long long)row);
    return whole_tile(d, l, col, row, out, path, err);
}
