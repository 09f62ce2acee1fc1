/* Per-tile features of a plain RGB buffer, in one pass over the pixels
 * (the Laplacian trails one row behind the colour statistics). */
#include "analysis.h"
#include "analysis_private.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const sp_feature_info feature_table[SP_N_FEATURES] = {
    [SP_F_TISSUE_FRACTION] = {"tissue_fraction", "fraction",
                              "share of pixels whose 8-bit saturation is above "
                              "the tissue threshold"},
    [SP_F_MEAN_R] = {"mean_r", "0-255", "mean red"},
    [SP_F_MEAN_G] = {"mean_g", "0-255", "mean green"},
    [SP_F_MEAN_B] = {"mean_b", "0-255", "mean blue"},
    [SP_F_STD_R] = {"std_r", "0-255", "standard deviation of red"},
    [SP_F_STD_G] = {"std_g", "0-255", "standard deviation of green"},
    [SP_F_STD_B] = {"std_b", "0-255", "standard deviation of blue"},
    [SP_F_SATURATION] = {"saturation", "0-1",
                         "mean HSV saturation (max-min)/max"},
    [SP_F_BRIGHTNESS] = {"brightness", "0-1", "mean ITU-R 601 luma / 255"},
    [SP_F_CONTRAST] = {"contrast", "0-1",
                       "RMS contrast: standard deviation of luma / 255"},
    [SP_F_OD_H] = {"od_h", "OD",
                   "mean hematoxylin optical density (Ruifrok-Johnston)"},
    [SP_F_OD_E] = {"od_e", "OD",
                   "mean eosin optical density (Ruifrok-Johnston)"},
    [SP_F_BLUR] = {"blur", "0-255 squared",
                   "variance of the 4-neighbour Laplacian of luma "
                   "(low means blurry)"},
    [SP_F_PEN_FRACTION] = {"pen_fraction", "fraction",
                           "share of pixels with pen-ink colours"},
    [SP_F_CELLULARITY] = {"cellularity", "fraction",
                          "share of pixels whose hematoxylin OD is above the "
                          "cellularity threshold"},
    [SP_F_ENTROPY] = {"entropy", "bits",
                      "Shannon entropy of the 256-bin luma histogram"},
};

const sp_feature_info *sp_feature_table(void) { return feature_table; }

void sp_feature_params_default(sp_feature_params *p) {
    p->tissue_threshold = SP_DEFAULT_TISSUE_THRESHOLD;
    p->cellularity_od = SP_DEFAULT_CELLULARITY_OD;
}

/* ITU-R 601-2 luma exactly as Pillow's convert("L"). */
static inline unsigned luma(unsigned r, unsigned g, unsigned b) {
    return (r * 19595u + g * 38470u + b * 7471u + 0x8000u) >> 16;
}

typedef struct {
    uint64_t sum[3], sq[3]; /* R, G, B: sums and sums of squares */
    uint32_t hist[4][256];  /* luma in hist[3] (0-2 unused) */
    uint64_t satd[256];     /* sum of (max - min) per max */
    double sum_h, sum_e;
    uint64_t tissue, pen, cell;
    int64_t lap_sum;
    uint64_t lap_sq;
} acc;

/* Colour statistics of one row; writes the row's luma into `grey`. */
static void colour_row(const uint8_t *px, int w, const sp__stain_tables *T,
                       unsigned thr1, double cell_od, acc *a, uint8_t *grey) {
    double sh = 0, se = 0;
    unsigned tissue = 0, pen = 0, cell = 0;
    uint64_t s0 = 0, s1 = 0, s2 = 0;
    uint64_t q0 = 0, q1 = 0, q2 = 0;
    for (int x = 0; x < w; x++, px += 3) {
        unsigned r = px[0], g = px[1], b = px[2];
        s0 += r;
        s1 += g;
        s2 += b;
        q0 += r * r;
        q1 += g * g;
        q2 += b * b;
        unsigned y = luma(r, g, b);
        grey[x] = (uint8_t)y;
        a->hist[3][y]++;
        unsigned mx = r > g ? r : g, mn = r < g ? r : g;
        mx = mx > b ? mx : b;
        mn = mn < b ? mn : b;
        unsigned d = mx - mn;
        a->satd[mx] += d;
        /* floor(255 d / mx) > thr  <=>  255 d >= (thr + 1) mx, d > 0 */
        tissue += (unsigned)(d * 255u >= thr1 * mx) & (unsigned)(d > 0);
        double hv = T->h[0][r] + T->h[1][g] + T->h[2][b];
        double ev = T->e[0][r] + T->e[1][g] + T->e[2][b];
        hv = hv > 0.0 ? hv : 0.0; /* maxsd, no branch */
        ev = ev > 0.0 ? ev : 0.0;
        sh += hv;
        se += ev;
        cell += hv > cell_od;
        pen += sp__is_pen((int)r, (int)g, (int)b);
    }
    a->sum[0] += s0;
    a->sum[1] += s1;
    a->sum[2] += s2;
    a->sq[0] += q0;
    a->sq[1] += q1;
    a->sq[2] += q2;
    a->sum_h += sh;
    a->sum_e += se;
    a->tissue += tissue;
    a->pen += pen;
    a->cell += cell;
}

/* Laplacian of row `c` given its neighbours (scipy "reflect": the edge
 * pixel stands in for the missing neighbour). */
static void laplace_row(const uint8_t *u, const uint8_t *c, const uint8_t *d,
                        int w, acc *a) {
    int64_t s = 0;
    uint64_t q = 0;
    if (w == 1) {
        int l = 2 * c[0] - u[0] - d[0];
        a->lap_sum += l;
        a->lap_sq += (uint64_t)(l * l);
        return;
    }
    {
        int l = 3 * c[0] - c[1] - u[0] - d[0];
        s += l;
        q += (uint64_t)(l * l);
    }
    for (int x = 1; x < w - 1; x++) {
        int l = 4 * c[x] - c[x - 1] - c[x + 1] - u[x] - d[x];
        s += l;
        q += (uint64_t)(l * l);
    }
    {
        int l = 3 * c[w - 1] - c[w - 2] - u[w - 1] - d[w - 1];
        s += l;
        q += (uint64_t)(l * l);
    }
    a->lap_sum += s;
    a->lap_sq += q;
}

static void mean_std(const uint32_t *hist, double n, double *mean, double *sd) {
    double s = 0;
    for (int v = 0; v < 256; v++)
        s += (double)v * hist[v];
    double m = s / n, q = 0;
    for (int v = 0; v < 256; v++)
        if (hist[v])
            q += hist[v] * (v - m) * (v - m);
    *mean = m;
    *sd = sqrt(q / n);
}

#define STACK_W 4096

bool sp_features_compute(const uint8_t *rgb, int w, int h, size_t stride,
                         const sp_feature_params *p, float *out,
                         sp_error *err) {
    sp_feature_params def;
    if (!p) {
        sp_feature_params_default(&def);
        p = &def;
    }
    if (!rgb || !out || w <= 0 || h <= 0 || stride < (size_t)w * 3 ||
        (int64_t)w * h > UINT32_MAX)
        return sp_error_set(err, SP_ERR_USAGE, NULL,
                            "features: bad buffer (%d x %d, stride %zu)", w, h,
                            stride);
    if (p->tissue_threshold < 0 || p->tissue_threshold > 254 ||
        !isfinite(p->cellularity_od))
        return sp_error_set(err, SP_ERR_USAGE, NULL,
                            "features: bad parameters (tissue threshold %d, "
                            "cellularity OD %g)",
                            p->tissue_threshold, p->cellularity_od);
    const sp__stain_tables *T = sp__stain_tables_get();
    uint8_t stack_rows[3][STACK_W];
    uint8_t *heap = NULL, *rows[3];
    if (w > STACK_W) {
        heap = malloc((size_t)w * 3);
        if (!heap)
            return sp_error_set(err, SP_ERR_NOMEM, NULL,
                                "features: out of memory");
        for (int i = 0; i < 3; i++)
            rows[i] = heap + (size_t)i * w;
    } else {
        for (int i = 0; i < 3; i++)
            rows[i] = stack_rows[i];
    }
    acc accum, *a = &accum;
    memset(a, 0, sizeof *a);
    const unsigned thr1 = (unsigned)p->tissue_threshold + 1;
    /* rows[k % 3] holds the luma of row k */
    colour_row(rgb, w, T, thr1, p->cellularity_od, a, rows[0]);
    for (int y = 1; y < h; y++) {
        colour_row(rgb + (size_t)y * stride, w, T, thr1, p->cellularity_od, a,
                   rows[y % 3]);
        const uint8_t *c = rows[(y - 1) % 3];
        const uint8_t *u = y >= 2 ? rows[(y - 2) % 3] : c;
        laplace_row(u, c, rows[y % 3], w, a);
    }
    {
        const uint8_t *c = rows[(h - 1) % 3];
        const uint8_t *u = h >= 2 ? rows[(h - 2) % 3] : c;
        laplace_row(u, c, c, w, a);
    }

    const double n = (double)w * h;
    double mean[4], sd[4];
    for (int c = 0; c < 3; c++) { /* exact integer moments */
        mean[c] = (double)a->sum[c] / n;
        double var = (double)a->sq[c] / n - mean[c] * mean[c];
        sd[c] = sqrt(var > 0 ? var : 0);
    }
    mean_std(a->hist[3], n, &mean[3], &sd[3]);
    double sat = 0;
    for (int m = 1; m < 256; m++)
        if (a->satd[m])
            sat += (double)a->satd[m] / m;
    double ent = 0;
    for (int v = 0; v < 256; v++)
        if (a->hist[3][v]) {
            double q = a->hist[3][v] / n;
            ent -= q * log2(q);
        }
    double lm = (double)a->lap_sum / n;
    double lv = (double)a->lap_sq / n - lm * lm;

    out[SP_F_TISSUE_FRACTION] = (float)(a->tissue / n);
    for (int c = 0; c < 3; c++) {
        out[SP_F_MEAN_R + c] = (float)mean[c];
        out[SP_F_STD_R + c] = (float)sd[c];
    }
    out[SP_F_SATURATION] = (float)(sat / n);
    out[SP_F_BRIGHTNESS] = (float)(mean[3] / 255.0);
    out[SP_F_CONTRAST] = (float)(sd[3] / 255.0);
    out[SP_F_OD_H] = (float)(a->sum_h / n);
    out[SP_F_OD_E] = (float)(a->sum_e / n);
    out[SP_F_BLUR] = (float)(lv > 0 ? lv : 0);
    out[SP_F_PEN_FRACTION] = (float)(a->pen / n);
    out[SP_F_CELLULARITY] = (float)(a->cell / n);
    out[SP_F_ENTROPY] = (float)(ent > 0 ? ent : 0);
    free(heap);
    return true;
}

int64_t sp_tissue_pixels(const uint8_t *rgb, int w, int h, size_t stride,
                         int threshold, int64_t stop_at) {
    int64_t n = 0;
    for (int y = 0; y < h; y++) {
        const uint8_t *p = rgb + (size_t)y * stride;
        for (int x = 0; x < w; x++, p += 3)
            n += sp__sat8(p[0], p[1], p[2]) > (unsigned)threshold;
        if (stop_at > 0 && n >= stop_at)
            break;
    }
    return n;
}
