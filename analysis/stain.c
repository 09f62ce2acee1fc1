/* Stains: optical density tables, Ruifrok & Johnston deconvolution
 * constants, lattice sampling and Macenko stain vectors. */
#include "analysis.h"
#include "analysis_private.h"

#include <math.h>
#include <stddef.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* As scikit-image's rgb_from_hed (Ruifrok & Johnston 2001, rounded). */
const double sp__ruifrok_rgb_from_hed[3][3] = {
    {0.65, 0.70, 0.29},
    {0.07, 0.99, 0.11},
    {0.27, 0.57, 0.78},
};

static sp__stain_tables tables;
static pthread_once_t tables_once = PTHREAD_ONCE_INIT;

static void invert3(const double m[3][3], double inv[3][3]) {
    double c00 = m[1][1] * m[2][2] - m[1][2] * m[2][1];
    double c01 = m[1][2] * m[2][0] - m[1][0] * m[2][2];
    double c02 = m[1][0] * m[2][1] - m[1][1] * m[2][0];
    double det = m[0][0] * c00 + m[0][1] * c01 + m[0][2] * c02;
    inv[0][0] = c00 / det;
    inv[1][0] = c01 / det;
    inv[2][0] = c02 / det;
    inv[0][1] = (m[0][2] * m[2][1] - m[0][1] * m[2][2]) / det;
    inv[1][1] = (m[0][0] * m[2][2] - m[0][2] * m[2][0]) / det;
    inv[2][1] = (m[0][1] * m[2][0] - m[0][0] * m[2][1]) / det;
    inv[0][2] = (m[0][1] * m[1][2] - m[0][2] * m[1][1]) / det;
    inv[1][2] = (m[0][2] * m[1][0] - m[0][0] * m[1][2]) / det;
    inv[2][2] = (m[0][0] * m[1][1] - m[0][1] * m[1][0]) / det;
}

static void build_tables(void) {
    for (int v = 0; v < 256; v++)
        tables.od[v] = -log10((v < 1 ? 1 : v) / 255.0);
    invert3(sp__ruifrok_rgb_from_hed, tables.hed);
    for (int c = 0; c < 3; c++)
        for (int v = 0; v < 256; v++) {
            tables.h[c][v] = tables.od[v] * tables.hed[c][0];
            tables.e[c][v] = tables.od[v] * tables.hed[c][1];
            tables.he_fix[c][v][0] =
                (int32_t)lround(tables.h[c][v] * SP__OD_FIX_ONE);
            tables.he_fix[c][v][1] =
                (int32_t)lround(tables.e[c][v] * SP__OD_FIX_ONE);
        }
}

const sp__stain_tables *sp__stain_tables_get(void) {
    pthread_once(&tables_once, build_tables);
    return &tables;
}

void sp__stain_sample_rows(const uint8_t *rgb, int w, int h, size_t stride,
                           int y0, int rows, uint8_t *out) {
    const int n = SP_STAIN_SAMPLE_SIDE;
    for (int j = 0; j < n; j++) {
        int64_t y = ((int64_t)(2 * j + 1) * h) / (2 * n);
        if (y < y0 || y >= (int64_t)y0 + rows)
            continue;
        const uint8_t *row = rgb + (size_t)(y - y0) * stride;
        for (int i = 0; i < n; i++) {
            int64_t x = ((int64_t)(2 * i + 1) * w) / (2 * n);
            memcpy(out + 3 * (size_t)(j * n + i), row + 3 * x, 3);
        }
    }
}

void sp_stain_sample(const uint8_t *rgb, int w, int h, size_t stride,
                     uint8_t *out) {
    sp__stain_sample_rows(rgb, w, h, stride, 0, h, out);
}

void sp_macenko_opts_default(sp_macenko_opts *p) {
    p->beta = 0.15;
    p->alpha = 1.0;
    p->min_pixels = 100;
}

/* Jacobi eigen-decomposition of a symmetric 3x3 matrix: values ascending,
 * vectors as columns of v. */
static void eigen_sym3(const double a_in[3][3], double val[3], double v[3][3]) {
    double a[3][3];
    memcpy(a, a_in, sizeof a);
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++)
            v[i][j] = i == j;
    for (int sweep = 0; sweep < 64; sweep++) {
        double off = fabs(a[0][1]) + fabs(a[0][2]) + fabs(a[1][2]);
        if (off == 0.0)
            break;
        for (int p = 0; p < 2; p++)
            for (int q = p + 1; q < 3; q++) {
                if (a[p][q] == 0.0)
                    continue;
                double theta = (a[q][q] - a[p][p]) / (2.0 * a[p][q]);
                double t = (theta >= 0 ? 1.0 : -1.0) /
                           (fabs(theta) + sqrt(theta * theta + 1.0));
                double c = 1.0 / sqrt(t * t + 1.0), s = t * c;
                for (int k = 0; k < 3; k++) { /* A <- A J */
                    double akp = a[k][p], akq = a[k][q];
                    a[k][p] = c * akp - s * akq;
                    a[k][q] = s * akp + c * akq;
                }
                for (int k = 0; k < 3; k++) { /* A <- J^T A */
                    double apk = a[p][k], aqk = a[q][k];
                    a[p][k] = c * apk - s * aqk;
                    a[q][k] = s * apk + c * aqk;
                }
                for (int k = 0; k < 3; k++) {
                    double vkp = v[k][p], vkq = v[k][q];
                    v[k][p] = c * vkp - s * vkq;
                    v[k][q] = s * vkp + c * vkq;
                }
            }
    }
    int idx[3] = {0, 1, 2};
    for (int i = 0; i < 3; i++)
        for (int j = i + 1; j < 3; j++)
            if (a[idx[j]][idx[j]] < a[idx[i]][idx[i]]) {
                int t = idx[i];
                idx[i] = idx[j];
                idx[j] = t;
            }
    double vs[3][3];
    for (int j = 0; j < 3; j++) {
        val[j] = a[idx[j]][idx[j]];
        for (int k = 0; k < 3; k++)
            vs[k][j] = v[k][idx[j]];
    }
    memcpy(v, vs, sizeof vs);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* numpy.percentile(..., method="linear") of sorted values. */
/* Reorder a[0..n) so that a[k] is the value a sorted array would hold
 * there, with nothing larger before it and nothing smaller after it
 * (quickselect, median-of-three pivots; falls back to sorting the range
 * left after 64 rounds, so it is never quadratic). */
static void select_kth(double *a, size_t n, size_t k) {
    ptrdiff_t lo = 0, hi = (ptrdiff_t)n - 1, kk = (ptrdiff_t)k;
    for (int round = 0; lo < hi; round++) {
        if (round == 64) {
            qsort(a + lo, (size_t)(hi - lo + 1), sizeof *a, cmp_double);
            return;
        }
        ptrdiff_t mid = lo + (hi - lo) / 2;
        double x = a[lo], y = a[mid], z = a[hi];
        double pivot = x < y ? (y < z ? y : (x < z ? z : x))
                             : (x < z ? x : (y < z ? z : y));
        ptrdiff_t i = lo, j = hi;
        while (i <= j) { /* Hoare: the pivot's value stops both scans */
            while (a[i] < pivot)
                i++;
            while (a[j] > pivot)
                j--;
            if (i <= j) {
                double t = a[i];
                a[i++] = a[j];
                a[j--] = t;
            }
        }
        /* a[lo..j] <= pivot, a[i..hi] >= pivot, a[j+1..i-1] == pivot */
        if (kk <= j)
            hi = j;
        else if (kk >= i)
            lo = i;
        else
            return;
    }
}

/* The q-th percentile (linear interpolation, as numpy's default) of
 * a[0..n), n >= 1; reorders a. Equals indexing the sorted array. With
 * `slopes`, a[] holds -x / y of points with y > 0 and the percentile is
 * that of their angles atan2(1, x / y), which rise with -x / y. */
static double percentile_select(double *a, size_t n, double q, bool slopes) {
    double pos = q / 100.0 * (double)(n - 1);
    size_t lo = (size_t)floor(pos);
    double v0, v1;
    if (lo >= n - 1) {
        select_kth(a, n, n - 1);
        v0 = v1 = a[n - 1];
    } else {
        select_kth(a, n, lo);
        v0 = a[lo];
        v1 = a[lo + 1];
        for (size_t i = lo + 2; i < n; i++) /* the next order statistic */
            v1 = a[i] < v1 ? a[i] : v1;
    }
    if (slopes) {
        v0 = atan2(1.0, -v0);
        v1 = atan2(1.0, -v1);
    }
    double t = pos - (double)lo;
    return lo >= n - 1 ? v0 : v0 + (v1 - v0) * t;
}

bool sp_stain_macenko(const uint8_t *rgb, size_t n, const sp_macenko_opts *p,
                      double he[2][3], size_t *used, sp_error *err) {
    sp_macenko_opts def;
    if (!p) {
        sp_macenko_opts_default(&def);
        p = &def;
    }
    if (!(p->beta >= 0) || !(p->alpha >= 0 && p->alpha < 50) || (n > 0 && !rgb))
        return sp_error_set(err, SP_ERR_USAGE, NULL,
                            "Macenko: bad parameters (beta %g, alpha %g)",
                            p->beta, p->alpha);
    const sp__stain_tables *T = sp__stain_tables_get();
    bool ok = false;
    double *od = NULL, *phi = NULL;
    size_t m = 0;
    if (used)
        *used = 0;
    if (n > 0) {
        od = malloc(n * 3 * sizeof *od);
        phi = malloc(n * sizeof *phi);
        if (!od || !phi) {
            sp_error_set(err, SP_ERR_NOMEM, NULL, "Macenko: out of memory");
            goto out;
        }
    }
    /* keep pixels whose OD reaches beta in every channel */
    double mean[3] = {0, 0, 0};
    for (size_t i = 0; i < n; i++) {
        double o0 = T->od[rgb[3 * i]], o1 = T->od[rgb[3 * i + 1]],
               o2 = T->od[rgb[3 * i + 2]];
        if (o0 < p->beta || o1 < p->beta || o2 < p->beta)
            continue;
        od[3 * m] = o0;
        od[3 * m + 1] = o1;
        od[3 * m + 2] = o2;
        mean[0] += o0;
        mean[1] += o1;
        mean[2] += o2;
        m++;
    }
    if (used)
        *used = m;
    if (m < p->min_pixels || m < 2) {
        sp_error_set(err, SP_ERR_INPUT, NULL,
                     "Macenko: %zu stained pixels, fewer than %zu", m,
                     p->min_pixels);
        goto out;
    }
    for (int c = 0; c < 3; c++)
        mean[c] /= (double)m;
    double cov[3][3] = {{0}};
    for (size_t i = 0; i < m; i++) {
        double d[3] = {od[3 * i] - mean[0], od[3 * i + 1] - mean[1],
                       od[3 * i + 2] - mean[2]};
        for (int a = 0; a < 3; a++)
            for (int b = a; b < 3; b++)
                cov[a][b] += d[a] * d[b];
    }
    for (int a = 0; a < 3; a++)
        for (int b = a; b < 3; b++) {
            cov[a][b] /= (double)(m - 1);
            cov[b][a] = cov[a][b];
        }
    double val[3], vec[3][3];
    eigen_sym3(cov, val, vec);
    /* plane of the two largest: e1 = second, e2 = largest (positive sum) */
    double e1[3], e2[3];
    for (int k = 0; k < 3; k++) {
        e1[k] = vec[k][1];
        e2[k] = vec[k][2];
    }
    if (e2[0] + e2[1] + e2[2] < 0)
        for (int k = 0; k < 3; k++)
            e2[k] = -e2[k];
    /* The angles' percentiles. Where every point lies above the e1 axis
     * (y > 0: the usual case, e2 being the main direction of positive
     * densities) the angle atan2(y, x) = atan2(1, x / y) falls as x / y
     * rises, so the percentiles are those of -x / y, and only the two
     * order statistics each needs go through atan2; else every angle. */
    bool upper = true;
    for (size_t i = 0; i < m && upper; i++) {
        const double *o = od + 3 * i;
        double x = o[0] * e1[0] + o[1] * e1[1] + o[2] * e1[2];
        double y = o[0] * e2[0] + o[1] * e2[1] + o[2] * e2[2];
        upper = y > 0;
        phi[i] = -x / y;
    }
    if (!upper)
        for (size_t i = 0; i < m; i++) {
            const double *o = od + 3 * i;
            double x = o[0] * e1[0] + o[1] * e1[1] + o[2] * e1[2];
            double y = o[0] * e2[0] + o[1] * e2[1] + o[2] * e2[2];
            phi[i] = atan2(y, x);
        }
    double lo = percentile_select(phi, m, p->alpha, upper);
    double hi = percentile_select(phi, m, 100.0 - p->alpha, upper);
    double vmin[3], vmax[3];
    for (int k = 0; k < 3; k++) {
        vmin[k] = e1[k] * cos(lo) + e2[k] * sin(lo);
        vmax[k] = e1[k] * cos(hi) + e2[k] * sin(hi);
    }
    const double *hv = vmin[0] > vmax[0] ? vmin : vmax;
    const double *ev = hv == vmin ? vmax : vmin;
    for (int s = 0; s < 2; s++) {
        const double *v = s == 0 ? hv : ev;
        double norm = sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2]);
        double sign = v[0] + v[1] + v[2] < 0 ? -1.0 : 1.0;
        for (int k = 0; k < 3; k++)
            he[s][k] = sign * v[k] / norm;
    }
    ok = true;
out:
    free(od);
    free(phi);
    return ok;
}
