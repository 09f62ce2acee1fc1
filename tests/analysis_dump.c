/* Test-only driver of the analysis library: prints what the Python
 * reference (tests/test_features_ref.py) and the benchmark compare.
 *
 *   analysis_dump features SLIDE LEVEL TISSUE_THR CELL_OD X Y W H [X Y W H]...
 *       features of each region (read at LEVEL, origin in level-0 px) and
 *       Macenko of their lattice samples, as JSON on stdout
 *   analysis_dump mask SLIDE RAW_OUT [PNG_OUT]
 *       the tissue mask (defaults): metadata as JSON, bytes to RAW_OUT
 *   analysis_dump analyze SLIDE [--threads N] [--tile-size T] [--mpp M]
 *                 [--magnification X] [--all] [--out FILE] [--repeat K]
 *       the whole analysis: summary and timing as JSON; with --out, the
 *       tiles as binary rows (int64 x, int64 y, int32 w, int32 h, float32
 *       coverage, float32 features[SP_N_FEATURES])
 *   analysis_dump bench SLIDE [--threads N] [--max-tiles K]
 *       features-only throughput on level-0 256 px tiles held in memory
 */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "analysis.h"

static int fail(const char *what, const sp_error *e) {
    fprintf(stderr, "analysis_dump: %s: %s\n", what, e ? e->msg : "");
    return 1;
}

static void print_buf(sp_buf *b) {
    fwrite(b->data, 1, b->len, stdout);
    fputc('\n', stdout);
    sp_buf_free(b);
}

static void json_names(sp_json *j) {
    sp_json_key(j, "names");
    sp_json_begin_array(j);
    for (int f = 0; f < SP_N_FEATURES; f++)
        sp_json_string(j, sp_feature_table()[f].name);
    sp_json_end_array(j);
}

static void json_he(sp_json *j, const double he[2][3]) {
    sp_json_begin_array(j);
    for (int a = 0; a < 2; a++) {
        sp_json_begin_array(j);
        for (int c = 0; c < 3; c++)
            sp_json_number(j, he[a][c]);
        sp_json_end_array(j);
    }
    sp_json_end_array(j);
}

static int cmd_features(int argc, char **argv) {
    if (argc < 9 || (argc - 5) % 4)
        return fail("usage: features SLIDE LEVEL THR CELL X Y W H...", NULL);
    sp_error e = {0};
    sp_slide *s = NULL;
    if (!sp_slide_open(argv[1], false, &s, &e))
        return fail("open", &e);
    int level = atoi(argv[2]);
    sp_feature_opts fp;
    sp_feature_opts_default(&fp);
    fp.tissue_threshold = atoi(argv[3]);
    fp.cellularity_od = atof(argv[4]);
    int nreg = (argc - 5) / 4;
    sp_reader *r = sp_reader_create(s, 0, NULL, &e);
    uint8_t *samples = malloc((size_t)nreg * 3 * SP_STAIN_SAMPLE_N);
    sp_buf b;
    sp_buf_init(&b);
    sp_json j;
    sp_json_init(&j, &b, false);
    sp_json_begin_object(&j);
    json_names(&j);
    sp_json_key(&j, "features");
    sp_json_begin_array(&j);
    int rc = 0;
    for (int k = 0; k < nreg && rc == 0; k++) {
        long long x = atoll(argv[5 + 4 * k]), y = atoll(argv[6 + 4 * k]);
        int w = atoi(argv[7 + 4 * k]), h = atoi(argv[8 + 4 * k]);
        uint8_t *px = malloc((size_t)w * h * 3);
        float f[SP_N_FEATURES];
        if (!px || !sp_reader_read(r, level, x, y, w, h, px, &e) ||
            !sp_features_compute(px, w, h, (size_t)w * 3, &fp, f, &e)) {
            rc = fail("region", &e);
        } else {
            sp_stain_sample(px, w, h, (size_t)w * 3,
                            samples + (size_t)k * 3 * SP_STAIN_SAMPLE_N);
            sp_json_begin_array(&j);
            for (int c = 0; c < SP_N_FEATURES; c++)
                sp_json_number(&j, f[c]);
            sp_json_end_array(&j);
        }
        free(px);
    }
    sp_json_end_array(&j);
    if (rc == 0) {
        double he[2][3];
        size_t used = 0;
        sp_error se = {0};
        bool ok = sp_stain_macenko(samples, (size_t)nreg * SP_STAIN_SAMPLE_N,
                                   NULL, he, &used, &se);
        sp_json_key(&j, "macenko_used");
        sp_json_int(&j, (int64_t)used);
        sp_json_key(&j, "macenko");
        if (ok)
            json_he(&j, he);
        else
            sp_json_null(&j);
    }
    sp_json_end_object(&j);
    if (rc == 0)
        print_buf(&b);
    else
        sp_buf_free(&b);
    free(samples);
    sp_reader_free(r);
    sp_slide_close(s);
    return rc;
}

static int cmd_mask(int argc, char **argv) {
    if (argc < 3)
        return fail("usage: mask SLIDE RAW_OUT [PNG_OUT]", NULL);
    sp_error e = {0};
    sp_slide *s = NULL;
    if (!sp_slide_open(argv[1], false, &s, &e))
        return fail("open", &e);
    sp_mask m;
    if (!sp_mask_compute(s, NULL, 0, &m, &e)) {
        sp_slide_close(s);
        return fail("mask", &e);
    }
    int rc = 0;
    if (!sp_write_file_atomic(argv[2], m.data, (size_t)m.width * m.height, &e))
        rc = fail("write", &e);
    if (rc == 0 && argc > 3 && !sp_mask_write_png(&m, argv[3], &e))
        rc = fail("png", &e);
    sp_mask_opts mp;
    sp_mask_opts_default(&mp);
    sp_buf b;
    sp_buf_init(&b);
    sp_json j;
    sp_json_init(&j, &b, false);
    sp_json_begin_object(&j);
    sp_json_key(&j, "width");
    sp_json_int(&j, m.width);
    sp_json_key(&j, "height");
    sp_json_int(&j, m.height);
    sp_json_key(&j, "level");
    sp_json_int(&j, m.level);
    sp_json_key(&j, "factor");
    sp_json_int(&j, m.factor);
    sp_json_key(&j, "downsample");
    sp_json_number(&j, m.downsample);
    sp_json_key(&j, "otsu");
    sp_json_int(&j, m.otsu);
    sp_json_key(&j, "threshold");
    sp_json_int(&j, m.threshold);
    sp_json_key(&j, "mask_um2_per_px");
    sp_json_number(&j, m.mask_um2_per_px);
    sp_json_key(&j, "params");
    sp_json_begin_object(&j);
    sp_json_key(&j, "min_threshold");
    sp_json_int(&j, mp.min_threshold);
    sp_json_key(&j, "close_radius");
    sp_json_int(&j, mp.close_radius);
    sp_json_key(&j, "max_hole_um2");
    sp_json_number(&j, mp.max_hole_um2);
    sp_json_key(&j, "min_object_um2");
    sp_json_number(&j, mp.min_object_um2);
    sp_json_key(&j, "max_hole_px");
    sp_json_int(&j, mp.max_hole_px);
    sp_json_key(&j, "min_object_px");
    sp_json_int(&j, mp.min_object_px);
    sp_json_end_object(&j);
    sp_json_end_object(&j);
    if (rc == 0)
        print_buf(&b);
    else
        sp_buf_free(&b);
    sp_mask_free(&m);
    sp_slide_close(s);
    return rc;
}

static bool write_tiles(const char *path, const sp_analysis_result *r,
                        sp_error *e) {
    sp_buf b;
    sp_buf_init(&b);
    for (size_t k = 0; k < r->n; k++) {
        sp_buf_append(&b, &r->coords[2 * k], 2 * sizeof(int64_t));
        sp_buf_append(&b, &r->size[2 * k], 2 * sizeof(int32_t));
        sp_buf_append(&b, &r->coverage[k], sizeof(float));
        sp_buf_append(&b, r->features + k * SP_N_FEATURES,
                      SP_N_FEATURES * sizeof(float));
    }
    bool ok =
        !b.oom && sp_write_file_atomic(path, b.data ? b.data : "", b.len, e);
    sp_buf_free(&b);
    return ok;
}

static int cmd_analyze(int argc, char **argv) {
    if (argc < 2)
        return fail("usage: analyze SLIDE [options]", NULL);
    sp_analysis_opts p;
    sp_analysis_opts_default(&p);
    const char *outp = NULL;
    int repeat = 1;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--all")) {
            p.all_tiles = true;
            continue;
        }
        if (!v)
            return fail("missing option value", NULL);
        i++;
        if (!strcmp(a, "--threads"))
            p.threads = atoi(v);
        else if (!strcmp(a, "--tile-size"))
            p.tile_size = atoi(v);
        else if (!strcmp(a, "--mpp"))
            p.mpp = atof(v);
        else if (!strcmp(a, "--magnification"))
            p.magnification = atof(v);
        else if (!strcmp(a, "--out"))
            outp = v;
        else if (!strcmp(a, "--repeat"))
            repeat = atoi(v);
        else
            return fail("unknown option", NULL);
    }
    sp_error e = {0};
    sp_slide *s = NULL;
    if (!sp_slide_open(argv[1], false, &s, &e))
        return fail("open", &e);
    sp_analysis_result r;
    double best = 1e300;
    for (int k = 0; k < (repeat > 0 ? repeat : 1); k++) {
        if (k)
            sp_analysis_result_free(&r);
        if (!sp_analyze_slide(s, &p, &r, &e)) {
            sp_slide_close(s);
            return fail("analyze", &e);
        }
        if (r.seconds < best)
            best = r.seconds;
    }
    int rc = 0;
    if (outp && !write_tiles(outp, &r, &e))
        rc = fail("write", &e);
    const sp_slide_summary *sm = &r.summary;
    double px = 0; /* level-0 pixels covered by analysed tiles */
    for (size_t k = 0; k < r.n; k++)
        px += (double)r.size[2 * k] * r.size[2 * k + 1] * r.downsample *
              r.downsample;
    const sp_level *l0 = sp_slide_level(s, 0);
    sp_buf b;
    sp_buf_init(&b);
    sp_json j;
    sp_json_init(&j, &b, false);
    sp_json_begin_object(&j);
    json_names(&j);
    sp_json_key(&j, "threads");
    sp_json_int(&j, p.threads > 0 ? p.threads : sp_default_threads());
    sp_json_key(&j, "tile_size");
    sp_json_int(&j, r.tile_size);
    sp_json_key(&j, "downsample");
    sp_json_number(&j, r.downsample);
    sp_json_key(&j, "read_level");
    sp_json_int(&j, r.read_level);
    sp_json_key(&j, "cols");
    sp_json_int(&j, r.cols);
    sp_json_key(&j, "rows");
    sp_json_int(&j, r.rows);
    sp_json_key(&j, "mask_threshold");
    sp_json_int(&j, r.mask.threshold);
    sp_json_key(&j, "mask_downsample");
    sp_json_number(&j, r.mask.downsample);
    sp_json_key(&j, "tissue_area_px");
    sp_json_number(&j, sm->tissue_area_px);
    sp_json_key(&j, "tissue_area_mm2");
    sp_json_number(&j, sm->tissue_area_mm2);
    sp_json_key(&j, "tiles_total");
    sp_json_int(&j, (int64_t)sm->tiles_total);
    sp_json_key(&j, "tiles_tissue");
    sp_json_int(&j, (int64_t)sm->tiles_tissue);
    sp_json_key(&j, "tiles_analysed");
    sp_json_int(&j, (int64_t)sm->tiles_analysed);
    sp_json_key(&j, "blurry_fraction");
    sp_json_number(&j, sm->blurry_fraction);
    sp_json_key(&j, "pen_fraction");
    sp_json_number(&j, sm->pen_fraction);
    sp_json_key(&j, "stain_ok");
    sp_json_bool(&j, sm->stain_ok);
    sp_json_key(&j, "stain_he");
    json_he(&j, sm->stain_he);
    sp_json_key(&j, "stain_pixels");
    sp_json_int(&j, (int64_t)sm->stain_pixels);
    sp_json_key(&j, "seconds");
    sp_json_number(&j, best);
    sp_json_key(&j, "analysed_mpix");
    sp_json_number(&j, px / 1e6);
    sp_json_key(&j, "slide_mpix");
    sp_json_number(&j, (double)l0->width * l0->height / 1e6);
    sp_json_key(&j, "mp_per_s");
    sp_json_number(&j, px / 1e6 / best);
    sp_json_end_object(&j);
    if (rc == 0)
        print_buf(&b);
    else
        sp_buf_free(&b);
    sp_analysis_result_free(&r);
    sp_slide_close(s);
    return rc;
}

static int cmd_bench(int argc, char **argv) {
    if (argc < 2)
        return fail("usage: bench SLIDE [--threads N] [--max-tiles K]", NULL);
    int threads = sp_default_threads(), max_tiles = 2000;
    for (int i = 2; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--threads"))
            threads = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--max-tiles"))
            max_tiles = atoi(argv[i + 1]);
    }
    sp_error e = {0};
    sp_slide *s = NULL;
    if (!sp_slide_open(argv[1], false, &s, &e))
        return fail("open", &e);
    const sp_level *l = sp_slide_level(s, 0);
    const int T = 256;
    int nx = (int)(l->width / T), ny = (int)(l->height / T);
    int n = nx * ny < max_tiles ? nx * ny : max_tiles;
    uint8_t *tiles = malloc((size_t)n * T * T * 3);
    sp_reader *r = sp_reader_create(s, 0, NULL, &e);
    for (int k = 0; k < n; k++)
        if (!sp_reader_read(r, 0, (int64_t)(k % nx) * T, (int64_t)(k / nx) * T,
                            T, T, tiles + (size_t)k * T * T * 3, &e))
            return fail("read", &e);
    sp_reader_free(r);
    float *f = malloc((size_t)n * SP_N_FEATURES * sizeof *f);
    double best = 1e300;
    for (int rep = 0; rep < 15; rep++) {
        double t0 = sp_now();
#pragma omp parallel for num_threads(threads) schedule(dynamic, 4)
        for (int k = 0; k < n; k++)
            sp_features_compute(tiles + (size_t)k * T * T * 3, T, T, T * 3,
                                NULL, f + (size_t)k * SP_N_FEATURES, NULL);
        double t = sp_now() - t0;
        if (t < best)
            best = t;
    }
    printf("{\"threads\": %d, \"tiles\": %d, \"seconds\": %.6f, "
           "\"features_mp_per_s\": %.1f}\n",
           threads, n, best, (double)n * T * T / 1e6 / best);
    free(f);
    free(tiles);
    sp_slide_close(s);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr,
                "usage: analysis_dump features|mask|analyze|bench ...\n");
        return 2;
    }
    if (!strcmp(argv[1], "features"))
        return cmd_features(argc - 1, argv + 1);
    if (!strcmp(argv[1], "mask"))
        return cmd_mask(argc - 1, argv + 1);
    if (!strcmp(argv[1], "analyze"))
        return cmd_analyze(argc - 1, argv + 1);
    if (!strcmp(argv[1], "bench"))
        return cmd_bench(argc - 1, argv + 1);
    fprintf(stderr, "analysis_dump: unknown command %s\n", argv[1]);
    return 2;
}
