/* ingest: metadata and pixels against OpenSlide's own answers, concurrency,
 * and every broken input of the test data. */
#include <omp.h>
#include <openslide/openslide.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ingest.h"
#include "testutil.h"

static const char *const readable[] = {"CMU-1-Small-Region.svs",
                                       "tcga-cr-7395-01a-01-ts1.svs",
                                       "boxes.tiff", "small.svs"};
#define N_READABLE (sizeof readable / sizeof readable[0])

static sp_slide *open_ok(const char *name) {
    char *p = sp_test_path(name);
    sp_error e = {0};
    sp_slide *s = NULL;
    bool ok = sp_slide_open(p, true, &s, &e);
    if (!ok)
        fprintf(stderr, "open %s: %s\n", p, e.msg);
    CU_ASSERT_TRUE_FATAL(ok);
    free(p);
    return s;
}

/* Every readable file: levels, sizes, downsamples, tiles, mpp, vendor,
 * properties and associated images equal what OpenSlide reports. */
static void test_metadata_matches_openslide(void) {
    for (size_t f = 0; f < N_READABLE; f++) {
        char *p = sp_test_path(readable[f]);
        openslide_t *osr = openslide_open(p);
        CU_ASSERT_PTR_NOT_NULL_FATAL(osr);
        sp_slide *s = open_ok(readable[f]);
        CU_ASSERT_STRING_EQUAL(
            sp_slide_vendor(s),
            openslide_get_property_value(osr, "openslide.vendor"));
        CU_ASSERT_EQUAL(sp_slide_level_count(s),
                        openslide_get_level_count(osr));
        for (int i = 0; i < sp_slide_level_count(s); i++) {
            int64_t w, h;
            openslide_get_level_dimensions(osr, i, &w, &h);
            const sp_level *l = sp_slide_level(s, i);
            CU_ASSERT_EQUAL(l->width, w);
            CU_ASSERT_EQUAL(l->height, h);
            CU_ASSERT_DOUBLE_EQUAL(
                l->downsample, openslide_get_level_downsample(osr, i), 1e-12);
            char key[64];
            snprintf(key, sizeof key, "openslide.level[%d].tile-width", i);
            const char *tw = openslide_get_property_value(osr, key);
            CU_ASSERT_EQUAL(l->tile_width, tw ? atoll(tw) : 0);
        }
        CU_ASSERT_PTR_NULL(sp_slide_level(s, sp_slide_level_count(s)));
        const char *mx = openslide_get_property_value(osr, "openslide.mpp-x");
        double x = -1, y = -1;
        CU_ASSERT_EQUAL(sp_slide_mpp(s, &x, &y), mx != NULL);
        if (mx)
            CU_ASSERT_DOUBLE_EQUAL(x, atof(mx), 1e-12);
        const char *op =
            openslide_get_property_value(osr, "openslide.objective-power");
        double pw = -1;
        CU_ASSERT_EQUAL(sp_slide_objective_power(s, &pw), op != NULL);
        if (!op)
            CU_ASSERT_EQUAL(pw, -1); /* absent stays absent, untouched */
        const char *qh =
            openslide_get_property_value(osr, "openslide.quickhash-1");
        CU_ASSERT_STRING_EQUAL(sp_slide_quickhash(s), qh);
        int np = 0;
        for (const char *const *n = openslide_get_property_names(osr); *n;
             n++, np++) {
            CU_ASSERT_STRING_EQUAL(sp_slide_property(s, *n),
                                   openslide_get_property_value(osr, *n));
        }
        CU_ASSERT_EQUAL(sp_slide_property_count(s), np);
        int na = 0;
        for (const char *const *n = openslide_get_associated_image_names(osr);
             *n; n++, na++) {
            int64_t w, h;
            openslide_get_associated_image_dimensions(osr, *n, &w, &h);
            const sp_associated *a = sp_slide_associated_at(s, na);
            CU_ASSERT_STRING_EQUAL(a->name, *n);
            CU_ASSERT_EQUAL(a->width, w);
            CU_ASSERT_EQUAL(a->height, h);
        }
        CU_ASSERT_EQUAL(sp_slide_associated_count(s), na);
        sp_slide_close(s);
        openslide_close(osr);
        free(p);
    }
}

/* The TCGA slide stores no mpp and no objective power: absent, not 0. */
static void test_absent_mpp(void) {
    sp_slide *s = open_ok("tcga-cr-7395-01a-01-ts1.svs");
    double x = -7, y = -7, p = -7;
    CU_ASSERT_FALSE(sp_slide_mpp(s, &x, &y));
    CU_ASSERT_FALSE(sp_slide_objective_power(s, &p));
    CU_ASSERT_EQUAL(x, -7);
    CU_ASSERT_EQUAL(p, -7);
    sp_slide_close(s);
}

/* Reference: OpenSlide's own premultiplied ARGB, un-premultiplied, over
 * the background. */
static void reference_rgb(openslide_t *osr, int level, int64_t x, int64_t y,
                          int64_t w, int64_t h, const uint8_t bg[3],
                          uint8_t *out) {
    uint32_t *buf = malloc((size_t)(w * h) * 4);
    openslide_read_region(osr, buf, x, y, level, w, h);
    CU_ASSERT_PTR_NULL(openslide_get_error(osr));
    for (int64_t i = 0; i < w * h; i++) {
        uint32_t px = buf[i];
        unsigned a = px >> 24;
        for (int c = 0; c < 3; c++) {
            unsigned v = (px >> (16 - 8 * c)) & 0xff;
            if (a == 0) {
                v = bg[c];
            } else if (a < 255) {
                /* straight colour, then alpha-blended over bg */
                double straight = v * 255.0 / a;
                double o = straight * a / 255.0 + bg[c] * (255.0 - a) / 255.0;
                v = (unsigned)(o + 0.5);
                if (v > 255)
                    v = 255;
            }
            out[3 * i + c] = (uint8_t)v;
        }
    }
    free(buf);
}

static void test_pixels_match_openslide(void) {
    static const uint8_t bgs[2][3] = {{255, 255, 255}, {10, 200, 30}};
    int compared = 0, unstable = 0;
    for (size_t f = 0; f < N_READABLE; f++) {
        if (strcmp(readable[f], "small.svs") == 0)
            continue; /* too small to hold several regions; covered below */
        char *p = sp_test_path(readable[f]);
        openslide_t *osr = openslide_open(p);
        sp_slide *s = open_ok(readable[f]);
        for (int b = 0; b < 2; b++) {
            sp_error e = {0};
            sp_reader *r = sp_reader_create(s, 0, bgs[b], &e);
            CU_ASSERT_PTR_NOT_NULL_FATAL(r);
            for (int lv = 0; lv < sp_slide_level_count(s); lv++) {
                /* OpenSlide 3.4.1 with Debian's libtiff 4.5 returns unstable
                 * pixels for boxes.tiff levels 2-3 (deflate tiles reaching
                 * past a small level): two fresh handles making the same
                 * reads get different bytes, so there is no reference. */
                if (strcmp(readable[f], "boxes.tiff") == 0 && lv >= 2) {
                    unstable++;
                    continue;
                }
                const sp_level *l = sp_slide_level(s, lv);
                int64_t W = (int64_t)(l->width * l->downsample);
                int64_t H = (int64_t)(l->height * l->downsample);
                /* interior, corner, crossing the right/bottom edges, wholly
                 * outside, crossing the top-left (negative origin) */
                const int64_t reg[][4] = {
                    {W / 3, H / 3, 97, 61},    {0, 0, 64, 64},
                    {W - 50, H - 30, 120, 90}, {W + 10, H + 10, 16, 16},
                    {-20, -13, 70, 50},
                };
                for (size_t k = 0; k < sizeof reg / sizeof reg[0]; k++) {
                    int64_t w = reg[k][2], h = reg[k][3];
                    uint8_t *got = malloc((size_t)(w * h * 3));
                    uint8_t *want = malloc((size_t)(w * h * 3));
                    CU_ASSERT_TRUE(sp_reader_read(r, lv, reg[k][0], reg[k][1],
                                                  w, h, got, &e));
                    reference_rgb(osr, lv, reg[k][0], reg[k][1], w, h, bgs[b],
                                  want);
                    compared++;
                    int bad = 0;
                    for (int64_t i = 0; i < w * h * 3; i++)
                        if (abs((int)got[i] - (int)want[i]) > 1)
                            bad++;
                    if (bad)
                        fprintf(stderr,
                                "%s level %d region %zu: %d bytes differ\n",
                                readable[f], lv, k, bad);
                    CU_ASSERT_EQUAL(bad, 0);
                    if (k == 3) /* wholly outside: background */
                        CU_ASSERT_TRUE(got[0] == bgs[b][0] &&
                                       got[1] == bgs[b][1] &&
                                       got[2] == bgs[b][2]);
                    free(got);
                    free(want);
                }
            }
            sp_reader_free(r);
        }
        sp_slide_close(s);
        openslide_close(osr);
        free(p);
    }
    /* the real slides are all stable; only the synthetic fixture is not */
    CU_ASSERT_TRUE(compared >= 40);
    CU_ASSERT_EQUAL(unstable, 4); /* 2 levels x 2 backgrounds */
}

static uint64_t fnv(const uint8_t *p, size_t n, uint64_t h) {
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

/* Checksum of every 256x256 tile of level 0, combined in tile order. */
static uint64_t checksum_tiles(sp_slide *s, int threads, unsigned flags,
                               int *failures) {
    const sp_level *l = sp_slide_level(s, 0);
    int tw = 256, nx = (int)((l->width + tw - 1) / tw),
        ny = (int)((l->height + tw - 1) / tw);
    int n = nx * ny;
    uint64_t *sums = calloc((size_t)n, sizeof *sums);
    int fails = 0;
#pragma omp parallel num_threads(threads) reduction(+ : fails)
    {
        sp_error e = {0};
        sp_reader *r = sp_reader_create(s, flags, NULL, &e);
        uint8_t *buf = malloc((size_t)tw * tw * 3);
#pragma omp for schedule(dynamic)
        for (int t = 0; t < n; t++) {
            int64_t x = (int64_t)(t % nx) * tw, y = (int64_t)(t / nx) * tw;
            if (r && sp_reader_read(r, 0, x, y, tw, tw, buf, &e))
                sums[t] =
                    fnv(buf, (size_t)tw * tw * 3, 14695981039346656037ull);
            else
                fails++;
        }
        free(buf);
        sp_reader_free(r);
    }
    uint64_t h = 14695981039346656037ull;
    for (int t = 0; t < n; t++)
        h = fnv((const uint8_t *)&sums[t], sizeof sums[t], h);
    free(sums);
    *failures = fails;
    return h;
}

static void test_concurrent_reads_agree(void) {
    const char *names[] = {"CMU-1-Small-Region.svs",
                           "tcga-cr-7395-01a-01-ts1.svs"};
    for (int f = 0; f < 2; f++) {
        sp_slide *s = open_ok(names[f]);
        int fails = 0;
        uint64_t one = checksum_tiles(s, 1, 0, &fails);
        CU_ASSERT_EQUAL(fails, 0);
        uint64_t many = checksum_tiles(s, 8, 0, &fails);
        CU_ASSERT_EQUAL(fails, 0);
        uint64_t priv = checksum_tiles(s, 4, SP_READER_PRIVATE_HANDLE, &fails);
        CU_ASSERT_EQUAL(fails, 0);
        CU_ASSERT_EQUAL(one, many);
        CU_ASSERT_EQUAL(one, priv);
        sp_slide_close(s);
    }
}

static void expect_open_fails(const char *path, bool verify,
                              const char *cause) {
    sp_error e = {0};
    sp_slide *s = (sp_slide *)1;
    CU_ASSERT_FALSE(sp_slide_open(path, verify, &s, &e));
    CU_ASSERT_PTR_NULL(s);
    CU_ASSERT_EQUAL(e.code, SP_ERR_INPUT);
    CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, path)); /* names the file */
    if (cause && !strstr(e.msg, cause)) {
        fprintf(stderr, "%s: message '%s' lacks '%s'\n", path, e.msg, cause);
        CU_FAIL("cause missing from the message");
    }
    CU_ASSERT_PTR_NULL(strchr(e.msg, '\n'));
}

static void test_broken_inputs(void) {
    const struct {
        const char *file;
        const char *cause;
    } cases[] = {
        {"unopenable.tiff", "Unsupported TIFF compression: 52479"},
        {"unreadable.svs", "Bogus marker length"},
        /* neither a slide nor an image (smalltif.tif is an image now:
         * test_vips_image) */
        {"MANIFEST.tsv", "not a slide format"},
        {"does-not-exist.svs", "No such file or directory"},
        /* a folder without a DICOM series (test_dicom_read.py reads the
         * folders that are slides) */
        {".", "is a directory"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *p = sp_test_path(cases[i].file);
        expect_open_fails(p, true, cases[i].cause);
        free(p);
    }
    /* unreadable.svs opens; only the pixel read fails */
    char *p = sp_test_path("unreadable.svs");
    sp_error e = {0};
    sp_slide *s = NULL;
    CU_ASSERT_TRUE_FATAL(sp_slide_open(p, false, &s, &e));
    sp_reader *r = sp_reader_create(s, 0, NULL, &e);
    uint8_t buf[16 * 16 * 3];
    CU_ASSERT_FALSE(sp_reader_read(r, 0, 0, 0, 16, 16, buf, &e));
    CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "Bogus marker length"));
    CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, p));
    sp_reader_free(r);
    sp_slide_close(s);
    free(p);
}

/* smalltif.tif (640x480 16-bit grey LZW, not tiled, and a 160x120 RGB
 * second page): no slide, an image libvips opens, the second page a
 * level (a quarter of the first); level 0's pixels are the grey's high
 * byte in R, G and B
 * (tests/test_vips_read.py compares every format with libvips' own). */
static void test_vips_image(void) {
    char *p = sp_test_path("smalltif.tif");
    sp_error e = {0};
    sp_slide *s = NULL;
    CU_ASSERT_TRUE_FATAL(sp_slide_open(p, true, &s, &e));
    CU_ASSERT_STRING_EQUAL(sp_slide_vendor(s), "vips:tiffload");
    CU_ASSERT_EQUAL(sp_slide_level_count(s), 2);
    CU_ASSERT_EQUAL(sp_slide_level(s, 1)->width, 160);
    CU_ASSERT_DOUBLE_EQUAL(sp_slide_level(s, 1)->downsample, 4, 1e-9);
    CU_ASSERT_EQUAL(sp_slide_level(s, 0)->width, 640);
    CU_ASSERT_EQUAL(sp_slide_level(s, 0)->height, 480);
    CU_ASSERT_STRING_EQUAL(sp_slide_property(s, "vips.loader"), "tiffload");
    CU_ASSERT_FALSE(sp_slide_not_a_slide(p));
    sp_reader *r = sp_reader_create(s, 0, NULL, &e);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    uint8_t buf[8 * 8 * 3];
    CU_ASSERT_TRUE(sp_reader_read(r, 0, 636, 476, 8, 8, buf, &e));
    for (int i = 0; i < 8 * 8; i++)
        CU_ASSERT(buf[3 * i] == buf[3 * i + 1] && buf[3 * i] == buf[3 * i + 2]);
    /* outside the image: white */
    CU_ASSERT_EQUAL(buf[3 * (8 * 7 + 7)], 255);
    sp_reader_free(r);
    sp_slide_close(s);
    free(p);
}

static void copy_prefix(const char *src, const char *dst, long n) {
    FILE *in = fopen(src, "rb"), *out = fopen(dst, "wb");
    CU_ASSERT_PTR_NOT_NULL_FATAL(in);
    CU_ASSERT_PTR_NOT_NULL_FATAL(out);
    char buf[65536];
    long left = n;
    while (left > 0) {
        size_t k = fread(
            buf, 1, left < (long)sizeof buf ? (size_t)left : sizeof buf, in);
        if (k == 0)
            break;
        fwrite(buf, 1, k, out);
        left -= (long)k;
    }
    fclose(in);
    fclose(out);
}

static void test_empty_and_truncated(void) {
    char path[512];
    snprintf(path, sizeof path, "%s/empty.svs", sp_test_tmpdir());
    copy_prefix("/dev/null", path, 0);
    expect_open_fails(path, true, "empty file");

    /* Truncated copies of a real slide, cut at several points: the open or
     * the pixel check must fail, never crash. */
    char *src = sp_test_path("CMU-1-Small-Region.svs");
    const long cuts[] = {100, 4096, 200000, 1000000};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        snprintf(path, sizeof path, "%s/trunc-%ld.svs", sp_test_tmpdir(),
                 cuts[i]);
        copy_prefix(src, path, cuts[i]);
        sp_error e = {0};
        sp_slide *s = NULL;
        bool ok = sp_slide_open(path, true, &s, &e);
        if (ok) {
            /* the header survived: reading every pixel must then fail */
            const sp_level *l = sp_slide_level(s, 0);
            sp_reader *r = sp_reader_create(s, 0, NULL, &e);
            uint8_t *buf = malloc((size_t)(l->width * l->height * 3));
            CU_ASSERT_FALSE(
                sp_reader_read(r, 0, 0, 0, l->width, l->height, buf, &e));
            free(buf);
            sp_reader_free(r);
            sp_slide_close(s);
        }
        CU_ASSERT_EQUAL(e.code, SP_ERR_INPUT);
        CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, path));
    }
    free(src);
}

static void test_reader_rejects_bad_arguments(void) {
    sp_slide *s = open_ok("boxes.tiff");
    sp_error e = {0};
    sp_reader *r = sp_reader_create(s, 0, NULL, &e);
    uint8_t buf[3];
    CU_ASSERT_FALSE(sp_reader_read(r, 7, 0, 0, 1, 1, buf, &e));
    CU_ASSERT_EQUAL(e.code, SP_ERR_USAGE);
    sp_error_clear(&e);
    CU_ASSERT_FALSE(sp_reader_read(r, 0, 0, 0, 0, 1, buf, &e));
    CU_ASSERT_EQUAL(e.code, SP_ERR_USAGE);
    CU_ASSERT_EQUAL(sp_slide_best_level(s, 1.0), 0);
    CU_ASSERT_EQUAL(sp_slide_best_level(s, 4.5), 2);
    CU_ASSERT_EQUAL(sp_slide_best_level(s, 1000), 3);
    sp_reader_free(r);
    sp_reader_free(NULL);
    sp_slide_close(s);
    sp_slide_close(NULL);
}

static void test_associated_image(void) {
    sp_slide *s = open_ok("CMU-1-Small-Region.svs");
    CU_ASSERT_TRUE_FATAL(sp_slide_associated_count(s) > 0);
    const sp_associated *a = sp_slide_associated_at(s, 0);
    uint8_t *rgb = malloc((size_t)(a->width * a->height * 3));
    uint8_t *want = malloc((size_t)(a->width * a->height * 3));
    uint32_t *argb = malloc((size_t)(a->width * a->height * 4));
    sp_error e = {0};
    CU_ASSERT_TRUE(sp_slide_read_associated(s, a->name, rgb, NULL, &e));
    char *p = sp_test_path("CMU-1-Small-Region.svs");
    openslide_t *osr = openslide_open(p);
    openslide_read_associated_image(osr, a->name, argb);
    for (int64_t i = 0; i < a->width * a->height; i++)
        for (int c = 0; c < 3; c++)
            want[3 * i + c] = (uint8_t)(argb[i] >> (16 - 8 * c));
    CU_ASSERT_EQUAL(memcmp(rgb, want, (size_t)(a->width * a->height * 3)), 0);
    CU_ASSERT_FALSE(
        sp_slide_read_associated(s, "no-such-image", rgb, NULL, &e));
    openslide_close(osr);
    free(p);
    free(rgb);
    free(want);
    free(argb);
    sp_slide_close(s);
}

/* Compare the direct path with OpenSlide's over a grid of regions of
 * every level: aligned tiles, unaligned windows, edge-crossing and outside
 * ones (level pixels, read at level-0 coordinates; where those are not a
 * whole level pixel both paths go through OpenSlide). */
static void compare_paths(sp_slide *s) {
    sp_error e = {0};
    static const uint8_t bg[3] = {3, 250, 7};
    sp_reader *fast = sp_reader_create(s, 0, bg, &e);
    sp_reader *slow = sp_reader_create(s, SP_READER_OPENSLIDE_ONLY, bg, &e);
    CU_ASSERT_PTR_NOT_NULL_FATAL(fast);
    CU_ASSERT_PTR_NOT_NULL_FATAL(slow);
    for (int L = 0; L < sp_slide_level_count(s); L++) {
        const sp_level *l = sp_slide_level(s, L);
        const int64_t W = l->width, H = l->height;
        const int64_t T = l->tile_width > 0 ? l->tile_width : 240;
        const int64_t reg[][4] = {
            {0, 0, W, H}, /* the whole level at once */
            {0, 0, T, T},         {T, 2 * T, 2 * T, T},
            {17, 33, 301, 199},   {W - 100, H - 77, 250, 300},
            {-31, -5, 300, 100},  {W + 5, 0, 10, 10},
            {W / 2, H / 2, 1, 1}, {W - 1, H - 1, 1, 1},
        };
        for (size_t k = 0; k < sizeof reg / sizeof reg[0]; k++) {
            size_t n = (size_t)(reg[k][2] * reg[k][3] * 3);
            int64_t x = llround((double)reg[k][0] * l->downsample);
            int64_t y = llround((double)reg[k][1] * l->downsample);
            uint8_t *a = malloc(n), *b = malloc(n);
            CU_ASSERT_TRUE(
                sp_reader_read(fast, L, x, y, reg[k][2], reg[k][3], a, &e));
            CU_ASSERT_TRUE(
                sp_reader_read(slow, L, x, y, reg[k][2], reg[k][3], b, &e));
            if (memcmp(a, b, n) != 0) {
                fprintf(stderr,
                        "%s: level %d region %zu differs between "
                        "paths\n",
                        sp_slide_path(s), L, k);
                CU_FAIL("direct path differs from OpenSlide");
            }
            free(a);
            free(b);
        }
    }
    const sp_level *l = sp_slide_level(s, 0);
    const int64_t W = l->width, H = l->height;
    /* small boxes anywhere: the direct path decodes only the part of each
     * tile they need (cropped columns, skipped rows, stopped early) */
    uint32_t seed = 7;
    int differ = 0;
    for (int k = 0; k < 300; k++) {
        int64_t v[4];
        for (int i = 0; i < 4; i++) {
            seed = seed * 1664525u + 1013904223u;
            v[i] = (int64_t)(seed >> 8);
        }
        int64_t w = 1 + v[2] % 300, h = 1 + v[3] % 300;
        int64_t x = v[0] % W, y = v[1] % H;
        size_t n = (size_t)(w * h * 3);
        uint8_t *a = malloc(n), *b = malloc(n);
        CU_ASSERT_TRUE(sp_reader_read(fast, 0, x, y, w, h, a, &e));
        CU_ASSERT_TRUE(sp_reader_read(slow, 0, x, y, w, h, b, &e));
        differ += memcmp(a, b, n) != 0;
        free(a);
        free(b);
    }
    if (differ)
        fprintf(stderr, "%s: %d small boxes differ between paths\n",
                sp_slide_path(s), differ);
    CU_ASSERT_EQUAL(differ, 0);
    sp_reader_free(fast);
    sp_reader_free(slow);
}

static void test_direct_path_equals_openslide(void) {
    sp_slide *s = open_ok("CMU-1-Small-Region.svs");
    CU_ASSERT_TRUE(sp_slide_has_direct_path(s)); /* Aperio, JPEG, RGB */
    compare_paths(s);
    sp_slide_close(s);
    /* JPEG 2000 and deflate tiles go through OpenSlide */
    s = open_ok("tcga-cr-7395-01a-01-ts1.svs");
    CU_ASSERT_FALSE(sp_slide_has_direct_path(s));
    sp_slide_close(s);
    s = open_ok("boxes.tiff");
    CU_ASSERT_FALSE(sp_slide_has_direct_path(s));
    sp_slide_close(s);

    /* YCbCr JPEG tiles from the project's generator: an odd size (lower
     * levels at fractional downsamples: mostly OpenSlide's path), and a
     * power-of-two one (every level read directly at whole pixels) */
    const char *synth = getenv("SLIDEPIPE_SYNTH");
    CU_ASSERT_PTR_NOT_NULL_FATAL(synth);
    static const int sizes[][3] = {{1531, 1107, 256}, {2048, 1536, 240}};
    for (int i = 0; i < 2; i++) {
        char path[512], cmd[1400];
        snprintf(path, sizeof path, "%s/synth%d.svs", sp_test_tmpdir(), i);
        snprintf(cmd, sizeof cmd,
                 "'%s' -o '%s' --width %d --height %d --tile %d --quiet", synth,
                 path, sizes[i][0], sizes[i][1], sizes[i][2]);
        CU_ASSERT_EQUAL_FATAL(system(cmd), 0);
        sp_error e = {0};
        CU_ASSERT_TRUE_FATAL(sp_slide_open(path, true, &s, &e));
        CU_ASSERT_TRUE(sp_slide_has_direct_path(s));
        compare_paths(s);
        sp_slide_close(s);
    }
}

int main(void) {
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 2;
    CU_pSuite s = CU_add_suite("ingest", NULL, NULL);
    CU_ADD_TEST(s, test_metadata_matches_openslide);
    CU_ADD_TEST(s, test_absent_mpp);
    CU_ADD_TEST(s, test_pixels_match_openslide);
    CU_ADD_TEST(s, test_concurrent_reads_agree);
    CU_ADD_TEST(s, test_broken_inputs);
    CU_ADD_TEST(s, test_vips_image);
    CU_ADD_TEST(s, test_empty_and_truncated);
    CU_ADD_TEST(s, test_reader_rejects_bad_arguments);
    CU_ADD_TEST(s, test_associated_image);
    CU_ADD_TEST(s, test_direct_path_equals_openslide);
    return sp_test_run();
}
