/* tiler: the streaming pyramid fed through its public API, checked against
 * a whole-image reference shrink written here, band-size independence,
 * masks, TIFF directories, cancellation and failure cleanup; a pyramid's
 * names, and its descriptor and sidecar read back. */
#include <dirent.h>
#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <tiffio.h>

#include "ingest.h"
#include "testutil.h"
#include "tiler.h"

#define IW 1000
#define IH 701

/* A deterministic textured image. */
static uint8_t *make_image(void) {
    uint8_t *img = malloc((size_t)IW * IH * 3);
    uint32_t s = 12345;
    for (int y = 0; y < IH; y++)
        for (int x = 0; x < IW; x++) {
            s = s * 1664525u + 1013904223u;
            uint8_t *p = img + ((size_t)y * IW + x) * 3;
            p[0] = (uint8_t)(x * 255 / IW);
            p[1] = (uint8_t)(y * 255 / IH);
            p[2] = (uint8_t)(s >> 24);
        }
    return img;
}

/* Reference: the whole previous level shrunk 2x2, odd edges repeated. */
static uint8_t *ref_shrink(const uint8_t *a, int w, int h, int *ow, int *oh) {
    int nw = (w + 1) / 2, nh = (h + 1) / 2;
    uint8_t *o = malloc((size_t)nw * nh * 3);
    for (int y = 0; y < nh; y++)
        for (int x = 0; x < nw; x++)
            for (int c = 0; c < 3; c++) {
                int x0 = 2 * x, x1 = 2 * x + 1 < w ? 2 * x + 1 : w - 1;
                int y0 = 2 * y, y1 = 2 * y + 1 < h ? 2 * y + 1 : h - 1;
                int sum = a[((size_t)y0 * w + x0) * 3 + c] +
                          a[((size_t)y0 * w + x1) * 3 + c] +
                          a[((size_t)y1 * w + x0) * 3 + c] +
                          a[((size_t)y1 * w + x1) * 3 + c];
                o[((size_t)y * nw + x) * 3 + c] = (uint8_t)((sum + 2) / 4);
            }
    *ow = nw;
    *oh = nh;
    return o;
}

static uint8_t *read_png(const char *path, int *w, int *h) {
    png_image im;
    memset(&im, 0, sizeof im);
    im.version = PNG_IMAGE_VERSION;
    if (!png_image_begin_read_from_file(&im, path))
        return NULL;
    im.format = PNG_FORMAT_RGB;
    uint8_t *buf = malloc(PNG_IMAGE_SIZE(im));
    if (!png_image_finish_read(&im, NULL, buf, 0, NULL)) {
        free(buf);
        return NULL;
    }
    *w = (int)im.width;
    *h = (int)im.height;
    return buf;
}

static int count_files(const char *dir) {
    DIR *d = opendir(dir);
    if (!d)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.' || strlen(e->d_name) > 2)
            n += strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
    closedir(d);
    return n;
}

static sp_pyramid_opts png_params(const char *out, int T, int O) {
    sp_pyramid_opts p;
    memset(&p, 0, sizeof p);
    p.output = out;
    p.width = IW;
    p.height = IH;
    sp_tile_opts_default(&p.opts);
    p.opts.format = SP_TILE_PNG;
    p.opts.tile_size = T;
    p.opts.overlap = O;
    p.opts.threads = 3;
    p.band_rows = 100;
    return p;
}

/* Push the image `chunk` rows at a time, stripe by stripe; check that
 * the stripes' cores partition the width and their windows hold them. */
static bool build_in(const sp_pyramid_opts *prm, const uint8_t *img, int chunk,
                     bool in_place, sp_tile_stats *st, sp_error *e) {
    sp_pyramid *p = sp_pyramid_create(prm, e);
    if (!p)
        return false;
    int64_t next = 0;
    for (int i = 0; i < sp_pyramid_stripes(p); i++) {
        sp_stripe sp;
        sp_pyramid_stripe(p, i, &sp);
        CU_ASSERT_EQUAL(sp.core0, next);
        CU_ASSERT_TRUE(sp.x0 <= sp.core0 && sp.core0 < sp.core1 &&
                       sp.core1 <= sp.x1 && sp.x1 <= IW);
        next = sp.core1;
        for (int y = 0; y < IH; y += chunk) {
            int n = IH - y < chunk ? IH - y : chunk;
            const uint8_t *src = img + ((size_t)y * IW + sp.x0) * 3;
            size_t stride = IW * 3;
            int64_t w = sp.x1 - sp.x0;
            uint8_t *in = in_place ? sp_pyramid_input(p, n, w, &stride) : NULL;
            if (in_place)
                CU_ASSERT_PTR_NOT_NULL(in);
            if (in) { /* write the rows where the pyramid keeps them */
                for (int r = 0; r < n; r++)
                    memcpy(in + r * stride, src + (size_t)r * IW * 3,
                           (size_t)w * 3);
                src = in;
            } else {
                stride = IW * 3;
            }
            if (!sp_pyramid_push_rows(p, src, stride, y, n, e)) {
                sp_pyramid_abort(p);
                return false;
            }
        }
    }
    CU_ASSERT_EQUAL(next, IW);
    return sp_pyramid_finish(p, st, e);
}

static bool build(const sp_pyramid_opts *prm, const uint8_t *img, int chunk,
                  sp_tile_stats *st, sp_error *e) {
    return build_in(prm, img, chunk, false, st, e);
}

/* Every tile of every level equals the reference crop exactly, built in
 * one piece or in column stripes. */
static void check_reference(int T, int O, int64_t stripe_width,
                            int want_stripes, bool in_place) {
    uint8_t *img = make_image();
    char out[512];
    snprintf(out, sizeof out, "%s/ref%d_%d_%lld", sp_test_tmpdir(), T, O,
             (long long)stripe_width);
    sp_pyramid_opts prm = png_params(out, T, O);
    prm.opts.stripe_width = stripe_width;
    sp_tile_stats st;
    sp_error e = {0};
    CU_ASSERT_TRUE_FATAL(build_in(&prm, img, 37, in_place, &st, &e));
    CU_ASSERT_EQUAL(st.levels, 11); /* ceil(log2(1000)) + 1 */
    CU_ASSERT_EQUAL(st.stripes, want_stripes);
    CU_ASSERT_EQUAL(st.tiles_written, st.tiles_total);
    uint8_t *lv = img;
    int w = IW, h = IH, bad = 0, tiles = 0;
    for (int k = st.levels - 1; k >= 0; k--) {
        int cols = (w + T - 1) / T, rows = (h + T - 1) / T;
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < cols; c++) {
                char path[600];
                snprintf(path, sizeof path, "%s_files/%d/%d_%d.png", out, k, c,
                         r);
                int tw, th;
                uint8_t *got = read_png(path, &tw, &th);
                CU_ASSERT_PTR_NOT_NULL(got);
                if (!got)
                    continue;
                int x0 = c * T - (c ? O : 0), y0 = r * T - (r ? O : 0);
                int x1 = (c + 1) * T + O, y1 = (r + 1) * T + O;
                x1 = x1 > w ? w : x1;
                y1 = y1 > h ? h : y1;
                CU_ASSERT_EQUAL(tw, x1 - x0);
                CU_ASSERT_EQUAL(th, y1 - y0);
                if (tw == x1 - x0 && th == y1 - y0)
                    for (int y = 0; y < th; y++)
                        if (memcmp(got + (size_t)y * tw * 3,
                                   lv + ((size_t)(y0 + y) * w + x0) * 3,
                                   (size_t)tw * 3))
                            bad++;
                tiles++;
                free(got);
            }
        if (k > 0) {
            int nw, nh;
            uint8_t *n = ref_shrink(lv, w, h, &nw, &nh);
            if (lv != img)
                free(lv);
            lv = n;
            w = nw;
            h = nh;
        }
    }
    CU_ASSERT_EQUAL(bad, 0);
    CU_ASSERT_EQUAL(tiles, st.tiles_total);
    CU_ASSERT_EQUAL(w, 1);
    CU_ASSERT_EQUAL(h, 1);
    if (lv != img)
        free(lv);
    free(img);
}

static void test_levels_match_reference(void) {
    /* T, O, stripe width, stripes expected, rows read in place */
    check_reference(128, 2, -1, 1, false);  /* the whole width at once */
    check_reference(128, 2, 0, 1, true);    /* auto: too narrow to stripe */
    check_reference(128, 2, 256, 4, false); /* k = 1, last stripe 232 px */
    check_reference(128, 2, 384, 2, true);  /* k = 2: 512 + 488 */
    check_reference(120, 1, 240, 4, true);  /* last 40 px join stripe 4 */
    check_reference(150, 3, 600, 2, false); /* overlap 3: margins of 12 */
    check_reference(100, 0, 200, 5, true);  /* no overlap, 5 stripes */
}

static uint64_t tree_hash(const char *files, int levels) {
    uint64_t h = 1469598103934665603ull;
    for (int k = 0; k < levels; k++) {
        char dir[700];
        snprintf(dir, sizeof dir, "%s/%d", files, k);
        DIR *d = opendir(dir);
        if (!d)
            return 0;
        struct dirent *e;
        while ((e = readdir(d))) {
            if (e->d_name[0] == '.')
                continue;
            char p[1300];
            snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
            FILE *f = fopen(p, "rb");
            uint64_t fh = 1469598103934665603ull;
            int ch;
            while ((ch = fgetc(f)) != EOF)
                fh = (fh ^ (uint64_t)ch) * 1099511628211ull;
            fclose(f);
            for (const char *s = e->d_name; *s; s++)
                fh = (fh ^ (uint8_t)*s) * 1099511628211ull;
            h += fh; /* order-independent */
        }
        closedir(d);
    }
    return h;
}

/* Band height, push size and thread count do not change the output. */
static void test_band_independence(void) {
    uint8_t *img = make_image();
    const int chunks[] = {1, 64, IH};
    const int bands[] = {7, 256, 1024};
    const int threads[] = {1, 2, 4};
    uint64_t first = 0;
    for (int i = 0; i < 3; i++) {
        char out[512];
        snprintf(out, sizeof out, "%s/band%d", sp_test_tmpdir(), i);
        sp_pyramid_opts prm = png_params(out, 254, 1);
        prm.band_rows = bands[i];
        prm.opts.threads = threads[i];
        sp_error e = {0};
        sp_tile_stats st;
        CU_ASSERT_TRUE_FATAL(build(&prm, img, chunks[i], &st, &e));
        char files[600];
        snprintf(files, sizeof files, "%s_files", out);
        uint64_t h = tree_hash(files, st.levels);
        CU_ASSERT_NOT_EQUAL(h, 0);
        if (i == 0)
            first = h;
        CU_ASSERT_EQUAL(h, first);
    }
    free(img);
}

static void test_misuse_and_abort(void) {
    uint8_t *img = make_image();
    char dir[512], out[600];
    snprintf(dir, sizeof dir, "%s/misuse", sp_test_tmpdir());
    sp_error e = {0};
    CU_ASSERT_TRUE_FATAL(sp_mkdir_p(dir, &e));
    snprintf(out, sizeof out, "%s/x", dir);
    sp_pyramid_opts prm = png_params(out, 254, 1);
    sp_pyramid *p = sp_pyramid_create(&prm, &e);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    CU_ASSERT_TRUE(sp_pyramid_push_rows(p, img, IW * 3, 0, 300, &e));
    /* a gap in the rows */
    CU_ASSERT_FALSE(sp_pyramid_push_rows(p, img, IW * 3, 301, 10, &e));
    CU_ASSERT_EQUAL(e.code, SP_ERR_USAGE);
    CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, out));
    sp_pyramid_abort(p);
    CU_ASSERT_EQUAL(count_files(dir), 0); /* nothing left behind */

    /* finishing early fails and leaves nothing */
    sp_error_clear(&e);
    p = sp_pyramid_create(&prm, &e);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    CU_ASSERT_TRUE(sp_pyramid_push_rows(p, img, IW * 3, 0, 300, &e));
    CU_ASSERT_FALSE(sp_pyramid_finish(p, NULL, &e));
    CU_ASSERT_EQUAL(count_files(dir), 0);

    /* bad parameters */
    const int bad[][2] = {{0, 1}, {100, 60}, {9000, 0}};
    for (int i = 0; i < 3; i++) {
        sp_error_clear(&e);
        sp_pyramid_opts b = png_params(out, bad[i][0], bad[i][1]);
        if (bad[i][0] == 0)
            b.width = 0;
        CU_ASSERT_PTR_NULL(sp_pyramid_create(&b, &e));
        CU_ASSERT_EQUAL(e.code, SP_ERR_USAGE);
    }
    sp_error_clear(&e);
    sp_pyramid_opts t = png_params(out, 250, 0);
    t.opts.container = SP_CONTAINER_TIFF; /* png and 250: both refused */
    CU_ASSERT_PTR_NULL(sp_pyramid_create(&t, &e));
    CU_ASSERT_EQUAL(e.code, SP_ERR_USAGE);

    /* an existing output is refused unless forced */
    sp_error_clear(&e);
    CU_ASSERT_TRUE_FATAL(build(&prm, img, 500, NULL, &e));
    CU_ASSERT_PTR_NULL(sp_pyramid_create(&prm, &e));
    CU_ASSERT_EQUAL(e.code, SP_ERR_OUTPUT);
    CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "already exists"));
    sp_error_clear(&e);
    prm.opts.force = true;
    CU_ASSERT_TRUE(build(&prm, img, 500, NULL, &e));
    CU_ASSERT_EQUAL(count_files(dir), 3); /* x.dzi x.json x_files */
    sp_pyramid_abort(NULL);
    free(img);
}

/* A mask with one tissue cell: only the tiles under it are written. */
/* The PNG pyramid (T 254, O 1) of make_image() at `out`, background
 * skipped under a mask whose one tissue cell covers level-0 pixels
 * [400,500) x [300,400). */
static bool build_one_cell(const char *out, sp_pyramid_opts *prm,
                           sp_tile_stats *st, sp_error *e) {
    uint8_t *img = make_image();
    uint8_t cells[10 * 8];
    memset(cells, 0, sizeof cells);
    cells[3 * 10 + 4] = 1;
    sp_tissue_mask m = {.cells = cells, .width = 10, .height = 8, .scale = 100};
    *prm = png_params(out, 254, 1);
    prm->opts.skip_background = true;
    prm->opts.mask = &m;
    bool ok = build(prm, img, 200, st, e);
    prm->opts.mask = NULL; /* gone with this frame */
    free(img);
    return ok;
}

static void test_mask_skips(void) {
    char out[512];
    snprintf(out, sizeof out, "%s/mask", sp_test_tmpdir());
    sp_pyramid_opts prm;
    sp_error e = {0};
    sp_tile_stats st;
    CU_ASSERT_TRUE_FATAL(build_one_cell(out, &prm, &st, &e));
    char top[600];
    snprintf(top, sizeof top, "%s_files/%d", out, st.levels - 1);
    /* top level: x 400..500 is column 1 only; y 300..400 is row 1 only */
    CU_ASSERT_EQUAL(count_files(top), 1);
    snprintf(top, sizeof top, "%s_files/%d/1_1.png", out, st.levels - 1);
    CU_ASSERT_TRUE(sp_path_exists(top));
    CU_ASSERT_EQUAL(st.tiles_written + st.tiles_skipped, st.tiles_total);
    CU_ASSERT_EQUAL(st.tiles_written, st.levels); /* one tile per level */
}

static volatile sig_atomic_t cancel_flag;

static void cancel_cb(void *user, const char *phase, int64_t done,
                      int64_t total) {
    (void)total;
    (void)user;
    CU_ASSERT_STRING_EQUAL(phase, "tiles");
    if (done > 0)
        cancel_flag = 1; /* cancel once tiles start coming */
}

static void test_cancel(void) {
    uint8_t *img = make_image();
    char dir[512], out[600];
    snprintf(dir, sizeof dir, "%s/cancel", sp_test_tmpdir());
    sp_error e = {0};
    CU_ASSERT_TRUE_FATAL(sp_mkdir_p(dir, &e));
    snprintf(out, sizeof out, "%s/x", dir);
    sp_pyramid_opts prm = png_params(out, 64, 1);
    cancel_flag = 0;
    prm.opts.progress = cancel_cb;
    prm.opts.cancel = &cancel_flag;
    CU_ASSERT_FALSE(build(&prm, img, 200, NULL, &e));
    CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "interrupted"));
    CU_ASSERT_EQUAL(count_files(dir), 0);
    free(img);
}

/* TIFF: one directory per level, T x T tiles, sizes halving. */
static void test_tiff_directories(void) {
    uint8_t *img = make_image();
    char out[512];
    snprintf(out, sizeof out, "%s/pyr.tif", sp_test_tmpdir());
    sp_pyramid_opts prm = png_params(out, 128, 0);
    prm.opts.container = SP_CONTAINER_TIFF;
    prm.opts.format = SP_TILE_JPEG;
    prm.source.mpp_x = prm.source.mpp_y = 0.25;
    prm.source.objective_power = 40;
    sp_error e = {0};
    sp_tile_stats st;
    CU_ASSERT_TRUE_FATAL(build(&prm, img, 100, &st, &e));
    CU_ASSERT_EQUAL(st.levels, 4); /* 1000, 500, 250, 125 */
    TIFF *t = TIFFOpen(out, "r");
    CU_ASSERT_PTR_NOT_NULL_FATAL(t);
    int dirs = 0;
    uint32_t w = IW, h = IH;
    do {
        uint32_t tw = 0, th = 0, iw = 0, ih = 0;
        TIFFGetField(t, TIFFTAG_IMAGEWIDTH, &iw);
        TIFFGetField(t, TIFFTAG_IMAGELENGTH, &ih);
        TIFFGetField(t, TIFFTAG_TILEWIDTH, &tw);
        TIFFGetField(t, TIFFTAG_TILELENGTH, &th);
        CU_ASSERT_EQUAL(iw, w);
        CU_ASSERT_EQUAL(ih, h);
        CU_ASSERT_EQUAL(tw, 128);
        CU_ASSERT_EQUAL(th, 128);
        /* decode one tile through libtiff's own JPEG path */
        TIFFSetField(t, TIFFTAG_JPEGCOLORMODE, JPEGCOLORMODE_RGB);
        uint8_t *buf = malloc((size_t)TIFFTileSize(t));
        CU_ASSERT_TRUE(TIFFReadEncodedTile(t, 0, buf, TIFFTileSize(t)) > 0);
        if (dirs == 0) {
            /* the smooth red and green ramps survive (blue is noise) */
            double sum = 0;
            for (int y = 0; y < 128; y++)
                for (int x = 0; x < 128; x++)
                    for (int c = 0; c < 2; c++)
                        sum += abs((int)buf[(y * 128 + x) * 3 + c] -
                                   (int)img[((size_t)y * IW + x) * 3 + c]);
            double mae = sum / (128.0 * 128 * 2);
            if (mae >= 8)
                fprintf(stderr, "tiff tile 0: mean abs error %.1f\n", mae);
            CU_ASSERT_TRUE(mae < 8);
        }
        free(buf);
        w = (w + 1) / 2;
        h = (h + 1) / 2;
        dirs++;
    } while (TIFFReadDirectory(t));
    TIFFClose(t);
    CU_ASSERT_EQUAL(dirs, 4);
    free(img);
}

/* OME-TIFF: level 0 alone at the top, the reduced levels as its SubIFDs
 * (NewSubfileType reduced, sizes halving), the OME-XML as its
 * ImageDescription with the mpp and the names escaped; a pyramid of one
 * tile has no SubIFD tag. */
static void test_ome_tiff_directories(void) {
    uint8_t *img = make_image();
    char out[512];
    snprintf(out, sizeof out, "%s/pyr.ome.tiff", sp_test_tmpdir());
    sp_pyramid_opts prm = png_params(out, 128, 0);
    prm.opts.container = SP_CONTAINER_OME_TIFF;
    prm.opts.format = SP_TILE_JPEG;
    prm.source.mpp_x = prm.source.mpp_y = 0.25;
    prm.source.path = "scans/a&b<c>.svs";
    sp_error e = {0};
    sp_tile_stats st;
    CU_ASSERT_TRUE_FATAL(build(&prm, img, 100, &st, &e));
    CU_ASSERT_EQUAL(st.levels, 4);
    CU_ASSERT_STRING_EQUAL(st.output, out);
    TIFF *t = TIFFOpen(out, "r");
    CU_ASSERT_PTR_NOT_NULL_FATAL(t);
    uint32_t iw = 0, ih = 0, ft = 9;
    TIFFGetField(t, TIFFTAG_IMAGEWIDTH, &iw);
    TIFFGetField(t, TIFFTAG_IMAGELENGTH, &ih);
    CU_ASSERT_EQUAL(iw, IW);
    CU_ASSERT_EQUAL(ih, IH);
    const char *desc = NULL;
    CU_ASSERT_TRUE(TIFFGetField(t, TIFFTAG_IMAGEDESCRIPTION, &desc));
    CU_ASSERT_TRUE(desc && strncmp(desc, "<?xml", 5) == 0);
    CU_ASSERT_PTR_NOT_NULL(desc ? strstr(desc, "PhysicalSizeX=\"0.25\"") : 0);
    CU_ASSERT_PTR_NOT_NULL(desc ? strstr(desc, "SizeX=\"1000\"") : 0);
    CU_ASSERT_PTR_NOT_NULL(desc ? strstr(desc, "Name=\"a&amp;b&lt;c&gt;.svs\"")
                                : 0);
    CU_ASSERT_PTR_NOT_NULL(
        desc ? strstr(desc, "<UUID FileName=\"pyr.ome.tiff\">urn:uuid:") : 0);
    uint16_t nsub = 0;
    uint64_t *offs = NULL;
    CU_ASSERT_TRUE(TIFFGetField(t, TIFFTAG_SUBIFD, &nsub, &offs));
    CU_ASSERT_EQUAL_FATAL(nsub, 3);
    uint64_t sub[3];
    memcpy(sub, offs, sizeof sub);
    uint32_t w = IW, h = IH;
    for (int k = 0; k < 3; k++) {
        w = (w + 1) / 2;
        h = (h + 1) / 2;
        CU_ASSERT_TRUE_FATAL(TIFFSetSubDirectory(t, sub[k]));
        TIFFGetField(t, TIFFTAG_IMAGEWIDTH, &iw);
        TIFFGetField(t, TIFFTAG_IMAGELENGTH, &ih);
        TIFFGetField(t, TIFFTAG_SUBFILETYPE, &ft);
        CU_ASSERT_EQUAL(iw, w);
        CU_ASSERT_EQUAL(ih, h);
        CU_ASSERT_EQUAL(ft, FILETYPE_REDUCEDIMAGE);
        TIFFSetField(t, TIFFTAG_JPEGCOLORMODE, JPEGCOLORMODE_RGB);
        uint8_t *buf = malloc((size_t)TIFFTileSize(t));
        CU_ASSERT_TRUE(TIFFReadEncodedTile(t, 0, buf, TIFFTileSize(t)) > 0);
        free(buf);
    }
    TIFFClose(t);
    /* one top-level directory: readers that ignore SubIFDs see level 0 */
    t = TIFFOpen(out, "r");
    CU_ASSERT_PTR_NOT_NULL_FATAL(t);
    CU_ASSERT_EQUAL(TIFFNumberOfDirectories(t), 1);
    TIFFClose(t);
    /* one tile, one level: no SubIFDs, no mpp */
    snprintf(out, sizeof out, "%s/one", sp_test_tmpdir());
    prm = png_params(out, 1024, 0);
    prm.opts.container = SP_CONTAINER_OME_TIFF;
    prm.opts.format = SP_TILE_JPEG;
    CU_ASSERT_TRUE_FATAL(build(&prm, img, 100, &st, &e));
    CU_ASSERT_EQUAL(st.levels, 1);
    snprintf(out, sizeof out, "%s/one.ome.tiff", sp_test_tmpdir());
    t = TIFFOpen(out, "r");
    CU_ASSERT_PTR_NOT_NULL_FATAL(t);
    CU_ASSERT_FALSE(TIFFGetField(t, TIFFTAG_SUBIFD, &nsub, &offs));
    CU_ASSERT_TRUE(TIFFGetField(t, TIFFTAG_IMAGEDESCRIPTION, &desc));
    CU_ASSERT_PTR_NULL(desc ? strstr(desc, "PhysicalSize") : "x");
    TIFFClose(t);
    free(img);
}

/* A slide whose pixels cannot be read: an input error naming the slide,
 * and no output or temporary left. */
static void test_unreadable_slide(void) {
    char *src = sp_test_path("unreadable.svs");
    sp_slide *s = NULL;
    sp_error e = {0};
    CU_ASSERT_TRUE_FATAL(sp_slide_open(src, false, &s, &e));
    char dir[512], out[600];
    snprintf(dir, sizeof dir, "%s/unreadable", sp_test_tmpdir());
    CU_ASSERT_TRUE_FATAL(sp_mkdir_p(dir, &e));
    snprintf(out, sizeof out, "%s/x", dir);
    sp_tile_opts o;
    sp_tile_opts_default(&o);
    o.threads = 2;
    CU_ASSERT_FALSE(sp_tile_slide(s, out, &o, NULL, &e));
    CU_ASSERT_EQUAL(e.code, SP_ERR_INPUT);
    CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, src));
    CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "Bogus marker length"));
    CU_ASSERT_EQUAL(count_files(dir), 0);
    sp_slide_close(s);
    free(src);
}

/* The names every writer and reader takes from layout.c. */
static void test_pyramid_names(void) {
    static const struct {
        const char *out;
        sp_container c;
        const char *stem, *main, *files, *sidecar;
    } cases[] = {
        {"d/x", SP_CONTAINER_DZI, "d/x", "d/x.dzi", "d/x_files", "d/x.json"},
        {"d/x.dzi", SP_CONTAINER_DZI, "d/x", "d/x.dzi", "d/x_files",
         "d/x.json"},
        /* another container's extension is part of the stem */
        {"d/x.tiff", SP_CONTAINER_DZI, "d/x.tiff", "d/x.tiff.dzi",
         "d/x.tiff_files", "d/x.tiff.json"},
        {"d/x", SP_CONTAINER_TIFF, "d/x", "d/x.tiff", NULL, "d/x.json"},
        {"d/x.tif", SP_CONTAINER_TIFF, "d/x", "d/x.tif", NULL, "d/x.json"},
        {"d/x.tiff", SP_CONTAINER_TIFF, "d/x", "d/x.tiff", NULL, "d/x.json"},
        {"d/x", SP_CONTAINER_OME_TIFF, "d/x", "d/x.ome.tiff", NULL, "d/x.json"},
        {"d/x.ome.tiff", SP_CONTAINER_OME_TIFF, "d/x", "d/x.ome.tiff", NULL,
         "d/x.json"},
        {"d/x.ome.tif", SP_CONTAINER_OME_TIFF, "d/x", "d/x.ome.tif", NULL,
         "d/x.json"},
        /* a plain .tiff is the stem's */
        {"d/x.tiff", SP_CONTAINER_OME_TIFF, "d/x.tiff", "d/x.tiff.ome.tiff",
         NULL, "d/x.tiff.json"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        sp_pyramid_names n;
        CU_ASSERT_TRUE_FATAL(sp_pyramid_names_of(&n, cases[i].out, cases[i].c));
        CU_ASSERT_STRING_EQUAL(n.stem, cases[i].stem);
        CU_ASSERT_STRING_EQUAL(n.main, cases[i].main);
        if (cases[i].files) {
            CU_ASSERT_STRING_EQUAL(n.files, cases[i].files);
        } else {
            CU_ASSERT_PTR_NULL(n.files);
        }
        CU_ASSERT_STRING_EQUAL(n.sidecar, cases[i].sidecar);
        sp_pyramid_names_free(&n);
        CU_ASSERT_PTR_NULL(n.main);
    }
    sp_pyramid_names n;
    CU_ASSERT_TRUE_FATAL(
        sp_pyramid_names_init(&n, "d/x.dzi", SP_CONTAINER_TIFF, ".tif"));
    CU_ASSERT_STRING_EQUAL(n.main, "d/x.dzi.tif");
    sp_pyramid_names_free(&n);
    CU_ASSERT_STRING_EQUAL(sp_pyramid_ext("a.tif", SP_CONTAINER_TIFF), ".tif");
    CU_ASSERT_STRING_EQUAL(sp_pyramid_ext("a.tif", SP_CONTAINER_DZI), "");
    CU_ASSERT_STRING_EQUAL(sp_pyramid_ext(".dzi", SP_CONTAINER_DZI), "");
    CU_ASSERT_STRING_EQUAL(sp_pyramid_ext("a.ome.tif", SP_CONTAINER_OME_TIFF),
                           ".ome.tif");
    /* every container's name parses back to it */
    const sp_container all[] = {SP_CONTAINER_DZI, SP_CONTAINER_TIFF,
                                SP_CONTAINER_DICOM, SP_CONTAINER_OME_TIFF};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        sp_container c = SP_CONTAINER_DZI;
        CU_ASSERT_TRUE(sp_container_parse(sp_container_name(all[i]), &c));
        CU_ASSERT_EQUAL(c, all[i]);
    }
    CU_ASSERT_STRING_EQUAL(sp_container_name(SP_CONTAINER_OME_TIFF),
                           "ome-tiff");
    sp_container c = SP_CONTAINER_DZI;
    CU_ASSERT_FALSE(sp_container_parse("ome", &c));
    char name[32];
    sp_pyramid_tile_name(name, sizeof name, 3, 14, "jpeg");
    CU_ASSERT_STRING_EQUAL(name, "3_14.jpeg");
}

/* A pyramid read back: the descriptor's geometry is what was asked for,
 * and the sidecar's manifest says '1' exactly for the tile files on disk. */
static void test_pyramid_read_back(void) {
    char out[512];
    snprintf(out, sizeof out, "%s/readback.dzi", sp_test_tmpdir());
    sp_pyramid_opts prm;
    sp_error e = {0};
    sp_tile_stats st;
    CU_ASSERT_TRUE_FATAL(build_one_cell(out, &prm, &st, &e));
    sp_pyramid_names n;
    CU_ASSERT_TRUE_FATAL(sp_pyramid_names_of(&n, out, SP_CONTAINER_DZI));
    CU_ASSERT_STRING_EQUAL(st.output, n.main);
    sp_dzi_info d;
    CU_ASSERT_TRUE_FATAL(sp_dzi_read(n.main, &d, &e));
    CU_ASSERT_EQUAL(d.width, IW);
    CU_ASSERT_EQUAL(d.height, IH);
    CU_ASSERT_EQUAL(d.tile_size, 254);
    CU_ASSERT_EQUAL(d.overlap, 1);
    CU_ASSERT_EQUAL(d.format, SP_TILE_PNG);
    CU_ASSERT_EQUAL(d.levels, st.levels);
    sp_sidecar sc;
    CU_ASSERT_TRUE_FATAL(sp_sidecar_read(n.sidecar, &d, &sc, &e));
    CU_ASSERT_EQUAL(sc.levels, d.levels);
    CU_ASSERT_EQUAL(sc.quality, prm.opts.quality);
    CU_ASSERT_TRUE(sc.has_background);
    CU_ASSERT_EQUAL(sc.background[0], 255);
    int64_t ones = 0;
    for (int l = 0; l < sc.levels; l++) {
        const sp_manifest_level *ml = &sc.manifest[l];
        CU_ASSERT_PTR_NOT_NULL_FATAL(ml->tiles);
        sp_tile_rect t;
        CU_ASSERT_TRUE(sp_tile_dz_geometry(d.width, d.height, d.tile_size,
                                           d.overlap, l, 0, 0, &t));
        CU_ASSERT_EQUAL(ml->cols, t.cols);
        CU_ASSERT_EQUAL(ml->rows, t.rows);
        for (int64_t r = 0; r < ml->rows; r++)
            for (int64_t c = 0; c < ml->cols; c++) {
                char tile[32], path[700];
                sp_pyramid_tile_name(tile, sizeof tile, c, r, "png");
                snprintf(path, sizeof path, "%s/%d/%s", n.files, l, tile);
                CU_ASSERT_EQUAL(ml->tiles[r * ml->cols + c],
                                sp_path_exists(path));
                ones += ml->tiles[r * ml->cols + c];
            }
    }
    CU_ASSERT_EQUAL(ones, st.tiles_written);
    sp_sidecar_free(&sc);
    /* what is not a descriptor slidepipe can serve */
    CU_ASSERT_FALSE(sp_dzi_parse("<Image TileSize=\"254\" Overlap=\"200\" "
                                 "Format=\"png\"><Size Width=\"9\" "
                                 "Height=\"9\"/></Image>",
                                 "o.dzi", &d, &e));
    CU_ASSERT_EQUAL(e.code, SP_ERR_INPUT);
    CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "o.dzi"));
    e = (sp_error){0}; /* the first error sticks */
    CU_ASSERT_FALSE(sp_dzi_parse("<Image TileSize=\"254\" Overlap=\"1\" "
                                 "Format=\"gif\"><Size Width=\"9\" "
                                 "Height=\"9\"/></Image>",
                                 "f.dzi", &d, &e));
    CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "unsupported tile format 'gif'"));
    e = (sp_error){0};
    CU_ASSERT_FALSE(sp_sidecar_parse("[1]", 3, "s.json", &d, &sc, &e));
    CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "malformed JSON"));
    sp_pyramid_names_free(&n);
}

int main(void) {
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 2;
    CU_pSuite s = CU_add_suite("tiler", NULL, NULL);
    CU_ADD_TEST(s, test_levels_match_reference);
    CU_ADD_TEST(s, test_band_independence);
    CU_ADD_TEST(s, test_misuse_and_abort);
    CU_ADD_TEST(s, test_mask_skips);
    CU_ADD_TEST(s, test_cancel);
    CU_ADD_TEST(s, test_tiff_directories);
    CU_ADD_TEST(s, test_ome_tiff_directories);
    CU_ADD_TEST(s, test_unreadable_slide);
    CU_ADD_TEST(s, test_pyramid_names);
    CU_ADD_TEST(s, test_pyramid_read_back);
    return sp_test_run();
}
