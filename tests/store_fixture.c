/*
 * store_fixture: writes realistic slidepipe HDF5 files through the store
 * API, for the Python reference tests and the query benchmark, until the
 * real pipeline writes them. Features are random but seeded (with NaNs),
 * coords lie on a tile grid over an elliptic tissue region.
 *
 *   store_fixture OUT.h5 [--rows N] [--seed S] [--name SLIDE] [--no-optional]
 *                 [--batch B] [--die-after ROWS]
 *   store_fixture --cohort DIR --files K [--rows N] [--seed S]
 */
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store.h"

static const char *const COLUMNS[] = {"tissue_fraction",
                                      "mean_r",
                                      "mean_g",
                                      "mean_b",
                                      "std_r",
                                      "std_g",
                                      "std_b",
                                      "saturation",
                                      "brightness",
                                      "contrast",
                                      "od_h",
                                      "od_e",
                                      "blur",
                                      "pen_fraction",
                                      "cellularity",
                                      "entropy"};
enum { NCOL = sizeof COLUMNS / sizeof COLUMNS[0] };

static uint64_t rng_state;
static uint64_t next_u64(void) {
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}
static double uni(void) { return (double)(next_u64() >> 11) * 0x1.0p-53; }
static double normal(double mu, double sd) {
    double u = uni(), v = uni();
    return mu + sd * sqrt(-2 * log(u + 1e-300)) * cos(2 * M_PI * v);
}
static float clampf(double v, double lo, double hi) {
    return (float)(v < lo ? lo : v > hi ? hi : v);
}

static void make_row(float *f) {
    double tf = uni() < 0.1 ? 1.0 : uni() < 0.05 ? 0.0 : uni();
    f[0] = (float)tf;
    for (int c = 0; c < 3; c++) {
        f[1 + c] = clampf(normal(200 - 40 * tf, 15), 0, 255);
        f[4 + c] = clampf(normal(20 + 15 * tf, 6), 0, 128);
    }
    f[7] = clampf(normal(0.1 + 0.4 * tf, 0.08), 0, 1);
    f[8] = clampf(normal(0.8 - 0.2 * tf, 0.07), 0, 1);
    f[9] = clampf(normal(0.12, 0.04), 0, 1);
    f[10] = uni() < 0.02 ? NAN : clampf(normal(0.3 * tf + 0.05, 0.08), 0, 3);
    f[11] = clampf(normal(0.2 * tf + 0.05, 0.06), 0, 3);
    f[12] = uni() < 0.03 ? NAN : (float)(-100 * log(uni() + 1e-12));
    f[13] = uni() < 0.9 ? 0.0f : (float)(uni() * 0.2);
    f[14] = clampf(normal(0.3 * tf, 0.1), 0, 1);
    f[15] = uni() < 0.01 ? NAN : clampf(normal(5 + 2 * tf, 0.7), 0, 8);
}

static int write_one(const char *out, int64_t rows, uint64_t seed,
                     const char *name, bool optional, size_t batch,
                     int64_t die_after) {
    rng_state = seed * 7919 + 1;
    sp_error err = {0};
    const int64_t tile = 256;
    /* grid wide enough for the rows with ~30% of tiles outside tissue */
    int64_t cols = (int64_t)ceil(sqrt((double)rows * 1.6)) + 1;
    int64_t width = cols * tile + 123, height = width * 3 / 4 + 77;
    sp_store_meta m = {
        .source_file = name,
        .vendor = "aperio",
        .width = width,
        .height = height,
        .mpp_x = optional ? 0.499 : NAN,
        .mpp_y = optional ? 0.4991 : NAN,
        .objective_power = optional ? 20 : NAN,
        .quickhash = optional ? "8f3c0e6a1d2b4c5e6f708192a3b4c5d6e7f8091a2b3c"
                                "4d5e6f708192a3b4c5d6"
                              : NULL,
        .parameters = "{\"tile_size\":256,\"tissue_threshold\":20}",
        .start_time = 1714564800.0,
        .end_time = 1714564860.5,
        .patch_size = tile,
        .patch_level = 0,
        .downsample = 1.0,
        .level_width = width,
        .level_height = height,
        .columns = COLUMNS,
        .n_columns = NCOL};
    sp_store_writer *w = NULL;
    int64_t *xy = malloc(batch * 2 * sizeof *xy);
    float *f = malloc(batch * NCOL * sizeof *f);
    uint8_t *img = NULL;
    if (!xy || !f || !sp_store_create(out, &m, &w, &err))
        goto fail;
    int64_t done = 0, cell = 0;
    int64_t grid_rows = (height + tile - 1) / tile;
    while (done < rows) {
        size_t k = 0;
        while (k < batch && done + (int64_t)k < rows) {
            int64_t gx = cell % cols, gy = cell / cols;
            cell++;
            double dx = (gx + 0.5) / cols - 0.5,
                   dy = (gy + 0.5) / (double)grid_rows - 0.5;
            /* inside an ellipse, or anywhere once the grid is used up */
            if (cell < cols * grid_rows && dx * dx + dy * dy > 0.25)
                continue;
            xy[2 * k] = gx * tile;
            xy[2 * k + 1] = gy * tile;
            make_row(f + k * NCOL);
            k++;
        }
        if (!sp_store_append_rows(w, xy, f, k, &err))
            goto fail;
        done += (int64_t)k;
        if (die_after >= 0 && done >= die_after)
            raise(SIGKILL); /* an interrupted run: no commit, no cleanup */
    }
    if (optional) {
        int64_t tw = 64, th = 48;
        img = malloc((size_t)(tw * th * 3));
        if (!img)
            goto fail;
        for (int64_t i = 0; i < tw * th; i++)
            img[i] = (uint8_t)((i * 7) & 1 ? 255 : 0);
        if (!sp_store_put_image(w, "mask", img, tw, th, 1,
                                (double)width / (double)tw, &err))
            goto fail;
        for (int64_t i = 0; i < tw * th * 3; i++)
            img[i] = (uint8_t)(i * 31 + 7);
        if (!sp_store_put_image(w, "thumbnail", img, tw, th, 3,
                                (double)width / (double)tw, &err))
            goto fail;
    }
    const char *sn[] = {"tissue_area_mm2", "tiles_total", "tiles_tissue",
                        "blurry_fraction", "pen_fraction"};
    double sv[] = {optional ? 12.5 : NAN, (double)(cols * grid_rows),
                   (double)rows, 0.125, 0.01};
    if (!sp_store_set_summary(w, sn, sv, 5, &err))
        goto fail;
    bool ok = sp_store_commit(w, &err);
    w = NULL;
    if (!ok)
        goto fail;
    free(img);
    free(xy);
    free(f);
    return 0;
fail:
    sp_store_abort(w);
    free(img);
    free(xy);
    free(f);
    fprintf(stderr, "store_fixture: %s\n", err.msg[0] ? err.msg : "failed");
    return 1;
}

int main(int argc, char **argv) {
    const char *out = NULL, *cohort = NULL, *name = NULL;
    int64_t rows = 5000, files = 0, die_after = -1, batch = 997;
    uint64_t seed = 1;
    bool optional = true;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--rows") == 0 && v)
            rows = atoll(argv[++i]);
        else if (strcmp(a, "--seed") == 0 && v)
            seed = strtoull(argv[++i], NULL, 10);
        else if (strcmp(a, "--name") == 0 && v)
            name = argv[++i];
        else if (strcmp(a, "--no-optional") == 0)
            optional = false;
        else if (strcmp(a, "--batch") == 0 && v)
            batch = atoll(argv[++i]);
        else if (strcmp(a, "--die-after") == 0 && v)
            die_after = atoll(argv[++i]);
        else if (strcmp(a, "--cohort") == 0 && v)
            cohort = argv[++i];
        else if (strcmp(a, "--files") == 0 && v)
            files = atoll(argv[++i]);
        else if (a[0] != '-' && !out)
            out = a;
        else {
            fprintf(stderr, "store_fixture: bad argument '%s'\n", a);
            return 2;
        }
    }
    if (rows < 0 || batch < 1 || (!out && !cohort)) {
        fprintf(stderr, "usage: store_fixture OUT.h5 [--rows N] [--seed S] "
                        "[--name SLIDE] [--no-optional] [--batch B] "
                        "[--die-after ROWS]\n"
                        "       store_fixture --cohort DIR --files K "
                        "[--rows N] [--seed S]\n");
        return 2;
    }
    if (cohort) {
        sp_error err = {0};
        if (!sp_mkdir_p(cohort, &err)) {
            fprintf(stderr, "store_fixture: %s\n", err.msg);
            return 1;
        }
        for (int64_t i = 0; i < files; i++) {
            char path[4096], sname[64];
            snprintf(path, sizeof path, "%s/slide_%04lld.h5", cohort,
                     (long long)i);
            snprintf(sname, sizeof sname, "slide_%04lld.svs", (long long)i);
            if (write_one(path, rows, seed + (uint64_t)i, sname, true,
                          (size_t)batch, -1) != 0)
                return 1;
        }
        return 0;
    }
    return write_one(out, rows, seed, name ? name : "fixture.svs", optional,
                     (size_t)batch, die_after);
}
