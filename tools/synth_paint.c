/*
 * The procedural H&E-like scene of slidepipe-synth.
 *
 * Colour follows Beer-Lambert: a pixel is the glass background attenuated
 * by a hematoxylin and an eosin optical density. Smooth fields (tissue
 * outline, holes, stroma density, cellular regions, wavy collagen fibres)
 * are value noise evaluated on a coarse grid every GRID pixels and
 * interpolated; nuclei are ellipses placed on two jittered grids and drawn
 * per pixel with an anti-aliased edge; a per-pixel hash adds grain.
 */
#include "synth.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define GRID 8 /* coarse field spacing in pixels; tiles are multiples */
#define NCH 4  /* values per coarse point: R, G, B, edge field */

/* Stain optical-density vectors (R, G, B). */
static const float stain_h[3] = {0.65f, 0.70f, 0.29f};
static const float stain_e[3] = {0.10f, 0.85f, 0.45f};
static const float bg[3] = {SYNTH_BG_R, SYNTH_BG_G, SYNTH_BG_B};

/* ---- hashing and value noise ------------------------------------------- */

static inline uint32_t fmix32(uint32_t h) {
    h ^= h >> 16;
    h *= 0x85ebca6bu;
    h ^= h >> 13;
    h *= 0xc2b2ae35u;
    h ^= h >> 16;
    return h;
}

static inline uint32_t hash2(uint32_t x, uint32_t y, uint32_t key) {
    return fmix32(x * 0x8da6b343u + y * 0xd8163841u + key);
}

static inline double u01(uint32_t h) { return h * (1.0 / 4294967296.0); }

static uint64_t splitmix64(uint64_t *state) {
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Value noise in [0, 1) at lattice coordinates (x, y) >= 0. */
static double vnoise(double x, double y, uint32_t key) {
    double fx = floor(x), fy = floor(y);
    uint32_t ix = (uint32_t)(int64_t)fx, iy = (uint32_t)(int64_t)fy;
    double tx = x - fx, ty = y - fy;
    tx = tx * tx * (3.0 - 2.0 * tx);
    ty = ty * ty * (3.0 - 2.0 * ty);
    double a = u01(hash2(ix, iy, key)), b = u01(hash2(ix + 1, iy, key));
    double c = u01(hash2(ix, iy + 1, key)), d = u01(hash2(ix + 1, iy + 1, key));
    double top = a + (b - a) * tx, bot = c + (d - c) * tx;
    return top + (bot - top) * ty;
}

/* Fractal sum of `oct` octaves, normalised to about [0, 1). */
static double fbm(double x, double y, int oct, uint32_t key) {
    double sum = 0, amp = 1, norm = 0;
    for (int i = 0; i < oct; i++) {
        sum += amp * vnoise(x + 17.31 * i, y + 5.77 * i,
                            key + 0x632be5abu * (uint32_t)i);
        norm += amp;
        amp *= 0.5;
        x *= 2.03;
        y *= 2.03;
    }
    return sum / norm;
}

static inline double smoothstep(double a, double b, double x) {
    if (x <= a)
        return 0;
    if (x >= b)
        return 1;
    double t = (x - a) / (b - a);
    return t * t * (3 - 2 * t);
}

/* ---- the scene's fields ------------------------------------------------ */

/* Tissue outline field, lowered towards the slide's border. */
static double outline(const synth_scene *s, double x, double y) {
    double t = fbm(x / s->outline_px, y / s->outline_px, 5, s->key[0]);
    /* fine detail makes the edges ragged and steep */
    t += 0.02 * (vnoise(x / s->detail_px, y / s->detail_px, s->key[9]) - 0.5);
    double d = fmin(fmin(x, (double)s->width - 1 - x),
                    fmin(y, (double)s->height - 1 - y)) /
               s->margin_px;
    if (d < 1) {
        double k = 1 - fmax(d, 0);
        t -= 2 * k * k;
    }
    return t;
}

/* Field whose level s->hole_level bounds the holes (vessels, fat) inside
 * tissue. */
static double hole_field(const synth_scene *s, double x, double y) {
    return fbm(x / s->lumen_px, y / s->lumen_px, 2, s->key[1]);
}

#define OUTLINE_RAMP 0.004 /* outline field change across a tissue edge */
#define HOLE_RAMP 0.01

/* Signed tissue edge field: coverage is clamp(edge + 0.5, 0, 1). Smooth,
 * so it interpolates well between coarse points; `t` receives the outline
 * field. */
static double edge_field(const synth_scene *s, double x, double y, double *t) {
    *t = outline(s, x, y);
    double e = (*t - s->threshold) / OUTLINE_RAMP;
    if (e > -0.5) {
        double h = (s->hole_level - hole_field(s, x, y)) / HOLE_RAMP;
        if (h < e)
            e = h;
    }
    return e;
}

static inline double coverage(double e) {
    return e <= -0.5 ? 0 : e >= 0.5 ? 1 : e + 0.5;
}

/* Tissue coverage in [0, 1] at (x, y). */
static double tissue_alpha(const synth_scene *s, double x, double y) {
    double t;
    return coverage(edge_field(s, x, y, &t));
}

/* Share of cellular (hematoxylin-rich) tissue at (x, y), 0..1. */
static double cellular(const synth_scene *s, double x, double y) {
    return smoothstep(0.48, 0.70,
                      fbm(x / s->region_px, y / s->region_px, 3, s->key[2]));
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

bool synth_scene_init(synth_scene *s, int64_t width, int64_t height, double mpp,
                      double tissue, uint64_t seed, sp_error *err) {
    if (width < 1 || height < 1 || !(mpp > 0) || !isfinite(mpp) ||
        !(tissue >= 0 && tissue <= 1))
        return sp_error_set(err, SP_ERR_USAGE, NULL,
                            "invalid synthetic scene parameters");
    memset(s, 0, sizeof *s);
    s->width = width;
    s->height = height;
    s->mpp = mpp;
    s->mpp_inv = 1.0 / mpp;
    s->tissue = tissue;
    s->seed = seed;
    uint64_t st = seed;
    for (size_t i = 0; i < sizeof s->key / sizeof s->key[0]; i++)
        s->key[i] = (uint32_t)(splitmix64(&st) >> 32);

    double big = (double)(width > height ? width : height);
    double small = (double)(width < height ? width : height);
    s->outline_px = big / 3.0;
    s->margin_px = fmax(1.0, 0.10 * small);
    /* Physical features, never finer than a few coarse-grid cells. */
    double minpx = 2.0 * GRID;
    s->detail_px = fmax(minpx, 40.0 / mpp);
    s->lumen_px = fmax(4 * minpx, 140.0 / mpp);
    s->stroma_px = fmax(2 * minpx, 70.0 / mpp);
    s->region_px = fmax(4 * minpx, 320.0 / mpp);
    s->fibre_len_px = fmax(2 * minpx, 45.0 / mpp);
    s->fibre_wid_px = fmax(minpx, 5.0 / mpp);
    s->warp_px = fmax(4 * minpx, 160.0 / mpp);
    double cell = floor(11.0 / mpp + 0.5);
    s->nucleus_cell = cell < 3 ? 3 : cell > 4096 ? 4096 : (int)cell;

    /* Pick the outline threshold so that about `tissue` of the area is
     * covered: the quantile of the outline field over a sample grid,
     * corrected for the holes punched into tissue. */
    /* holes shrink away as the requested share approaches 1 */
    s->hole_level = tissue <= 0.85 ? 0.72 : 0.72 + (tissue - 0.85) / 0.15 * 0.3;
    if (tissue <= 0) {
        s->threshold = 1e9;
        return true;
    }
    if (tissue >= 1) {
        s->threshold = -1e9;
        return true;
    }
    enum { N = 256 };
    double *v = malloc(sizeof(double) * N * N);
    if (!v)
        return sp_error_set(err, SP_ERR_NOMEM, NULL, "out of memory");
    int holes = 0;
    for (int j = 0; j < N; j++)
        for (int i = 0; i < N; i++) {
            double x = ((double)i + 0.5) * (double)width / N;
            double y = ((double)j + 0.5) * (double)height / N;
            v[j * N + i] = outline(s, x, y);
            holes += hole_field(s, x, y) > s->hole_level;
        }
    qsort(v, (size_t)N * N, sizeof *v, cmp_double);
    double keep = 1.0 - (double)holes / (N * N);
    double want = keep > 0.05 ? tissue / keep : tissue;
    if (want > 1)
        want = 1;
    long idx = lround((1.0 - want) * (N * N - 1));
    s->threshold = v[idx];
    free(v);
    return true;
}

/* ---- painting ---------------------------------------------------------- */

typedef struct {
    float cx, cy;     /* centre, tile-local pixels */
    float a, b, c, d; /* q = (a dx + b dy)^2 + (c dx + d dy)^2; edge at 1 */
    float ext;        /* half extent of the bounding square */
    float sharp;      /* edge ramp: coverage = (1 - q) * sharp */
    float absorb[3];  /* 1 - transmission per channel */
    int present;
} nucleus;

typedef struct {
    int64_t col0, row0; /* first cell column / row covering the tile */
    int ncols, nrows;
    int off; /* grid offset in pixels */
    uint32_t key;
    nucleus *cells; /* nrows x ncols */
    int *lut;       /* tile-local x -> cell column index */
} nucleus_grid;

struct synth_painter {
    const synth_scene *s;
    int tile;
    int gn;        /* coarse points per side: tile / GRID + 1 */
    float *coarse; /* gn x gn x NCH: tissue colour and edge field */
    float *row;    /* gn x NCH interpolated row */
    float *slope;  /* gn x NCH per-pixel slope */
    nucleus_grid grid[2];
};

synth_painter *synth_painter_create(const synth_scene *s, int tile) {
    if (tile < GRID || tile % GRID != 0)
        return NULL;
    synth_painter *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->s = s;
    p->tile = tile;
    p->gn = tile / GRID + 1;
    size_t gn = (size_t)p->gn;
    p->coarse = malloc(sizeof(float) * gn * gn * NCH);
    p->row = malloc(sizeof(float) * gn * NCH);
    p->slope = malloc(sizeof(float) * gn * NCH);
    bool ok = p->coarse && p->row && p->slope;
    int n = s->nucleus_cell;
    for (int g = 0; g < 2 && ok; g++) {
        nucleus_grid *ng = &p->grid[g];
        ng->off = g ? n / 2 : 0;
        ng->key = s->key[4 + g];
        /* a tile spans at most tile / n + 2 cells per side */
        size_t span = (size_t)(tile / n + 2);
        ng->cells = malloc(sizeof(nucleus) * span * span);
        ng->lut = malloc(sizeof(int) * (size_t)tile);
        ok = ng->cells && ng->lut;
    }
    if (!ok) {
        synth_painter_free(p);
        return NULL;
    }
    return p;
}

void synth_painter_free(synth_painter *p) {
    if (!p)
        return;
    for (int g = 0; g < 2; g++) {
        free(p->grid[g].cells);
        free(p->grid[g].lut);
    }
    free(p->coarse);
    free(p->row);
    free(p->slope);
    free(p);
}

/* One coarse point: the tissue colour at full coverage (R, G, B) and the
 * edge field, into out[0..3]. Far outside tissue the colour is skipped and
 * set to the background. */
static void coarse_point(const synth_scene *s, double x, double y,
                         float out[4]) {
    double t;
    double edge = edge_field(s, x, y, &t);
    out[3] = (float)edge;
    if (t < s->threshold - 0.05) {
        out[0] = bg[0];
        out[1] = bg[1];
        out[2] = bg[2];
        return;
    }
    double e = fbm(x / s->stroma_px, y / s->stroma_px, 3, s->key[3]);
    double cel = cellular(s, x, y);
    /* wavy fibres: stretched noise in a domain warped by smooth noise */
    double w = fbm(x / s->warp_px, y / s->warp_px, 2, s->key[6]) - 0.5;
    double fu = x / s->fibre_len_px + 1.3 * w * s->warp_px / s->fibre_len_px;
    double fv = (y + 2.5 * w * s->warp_px) / s->fibre_wid_px;
    double f = vnoise(fu, fv, s->key[7]);
    double ce = (0.30 + 0.50 * e + 0.40 * (f - 0.5)) * (1 - 0.4 * cel);
    double ch = 0.05 + 0.06 * e + 0.34 * cel;
    if (ce < 0)
        ce = 0;
    for (int c = 0; c < 3; c++)
        out[c] = bg[c] * (float)exp(-(ch * stain_h[c] + ce * stain_e[c]));
}

/* Fill one nucleus grid for the tile at (x0, y0). */
static void build_nuclei(const synth_scene *s, nucleus_grid *ng, int tile,
                         int64_t x0, int64_t y0) {
    const int64_t n = s->nucleus_cell;
    ng->col0 = (x0 + ng->off) / n;
    ng->row0 = (y0 + ng->off) / n;
    ng->ncols = (int)((x0 + tile - 1 + ng->off) / n - ng->col0 + 1);
    ng->nrows = (int)((y0 + tile - 1 + ng->off) / n - ng->row0 + 1);
    for (int lx = 0; lx < tile; lx++)
        ng->lut[lx] = (int)((x0 + lx + ng->off) / n - ng->col0);
    const double mpp_inv = s->mpp_inv;
    /* largest radius that keeps the ellipse inside its cell */
    const double rmax = 0.5 * (double)n - 0.5;
    for (int j = 0; j < ng->nrows; j++)
        for (int i = 0; i < ng->ncols; i++) {
            nucleus *nu = &ng->cells[j * ng->ncols + i];
            int64_t ci = ng->col0 + i, cj = ng->row0 + j;
            uint32_t h = hash2((uint32_t)ci, (uint32_t)cj, ng->key);
            /* cell origin in slide pixels */
            double ox = (double)(ci * n - ng->off),
                   oy = (double)(cj * n - ng->off);
            double mx = ox + 0.5 * (double)n, my = oy + 0.5 * (double)n;
            nu->present = 0;
            if (mx < 0 || my < 0 || mx >= (double)s->width ||
                my >= (double)s->height)
                continue;
            double a = tissue_alpha(s, mx, my);
            if (a <= 0.05)
                continue;
            double cel = cellular(s, mx, my);
            double p = a * (ng->off ? 0.10 + 0.55 * cel : 0.22 + 0.60 * cel);
            if (u01(h) >= p)
                continue;
            uint32_t h1 = fmix32(h + 0x68e31da4u), h2 = fmix32(h + 0xb5297a4du),
                     h3 = fmix32(h + 0x1b56c4e9u);
            bool round_nucleus = u01(h1) < cel; /* else a spindle */
            double r1, r2;
            if (round_nucleus) {
                r1 = (2.3 + 1.5 * u01(h2)) * mpp_inv;
                r2 = r1 * (0.72 + 0.25 * u01(h3));
            } else {
                r1 = (2.8 + 1.6 * u01(h2)) * mpp_inv;
                r2 = r1 * (0.32 + 0.20 * u01(h3));
            }
            if (r1 > rmax) {
                r2 *= rmax / r1;
                r1 = rmax;
            }
            if (r1 < 0.35) {
                r2 *= 0.35 / r1;
                r1 = 0.35;
            }
            double theta = 6.283185307179586 * u01(fmix32(h + 0x3c6ef372u));
            uint32_t h4 = fmix32(h + 0xa54ff53au), h5 = fmix32(h + 0x510e527fu);
            double span = (double)n - 2 * r1;
            if (span < 0)
                span = 0;
            double cx =
                ox + r1 + span * u01(h4) + 0.5 * ((double)n - 2 * r1 - span);
            double cy =
                oy + r1 + span * u01(h5) + 0.5 * ((double)n - 2 * r1 - span);
            double co = cos(theta), si = sin(theta);
            nu->cx = (float)(cx - (double)x0);
            nu->cy = (float)(cy - (double)y0);
            nu->a = (float)(co / r1);
            nu->b = (float)(si / r1);
            nu->c = (float)(-si / r2);
            nu->d = (float)(co / r2);
            nu->ext = (float)(r1 + 1);
            nu->sharp = (float)fmax(0.5, 0.5 * r2);
            double dh = 0.95 + 0.65 * u01(fmix32(h + 0x9b05688cu));
            for (int c = 0; c < 3; c++)
                nu->absorb[c] =
                    (float)(1 - exp(-(dh * stain_h[c] + 0.15 * stain_e[c])));
            nu->present = 1;
        }
}

/* Attenuate `mult` by the nucleus `nu` where it covers tile point (fx, fy). */
static inline void apply_nucleus(const nucleus *nu, float fx, float fy,
                                 float mult[3]) {
    if (!nu->present)
        return;
    float dx = fx - nu->cx, dy = fy - nu->cy;
    if (fabsf(dx) >= nu->ext || fabsf(dy) >= nu->ext)
        return;
    float u = nu->a * dx + nu->b * dy, v = nu->c * dx + nu->d * dy;
    float q = u * u + v * v;
    if (q >= 1)
        return;
    float m = (1 - q) * nu->sharp;
    if (m > 1)
        m = 1;
    for (int c = 0; c < 3; c++)
        mult[c] *= 1 - m * nu->absorb[c];
}

static inline uint8_t clamp_u8(float v) {
    if (v <= 0)
        return 0;
    if (v >= 255)
        return 255;
    return (uint8_t)(v + 0.5f);
}

void synth_paint_tile(synth_painter *p, int64_t x0, int64_t y0, uint8_t *dst,
                      size_t pitch) {
    const synth_scene *s = p->s;
    const int tile = p->tile, gn = p->gn;
    /* coarse fields */
    for (int j = 0; j < gn; j++)
        for (int i = 0; i < gn; i++)
            coarse_point(s, (double)(x0 + i * GRID), (double)(y0 + j * GRID),
                         &p->coarse[((size_t)j * gn + i) * NCH]);
    for (int g = 0; g < 2; g++)
        build_nuclei(s, &p->grid[g], tile, x0, y0);

    int vw = s->width - x0 < tile ? (int)(s->width - x0) : tile;
    int vh = s->height - y0 < tile ? (int)(s->height - y0) : tile;
    const uint32_t gkey = s->key[8];
    const int64_t n = s->nucleus_cell;
    for (int ly = 0; ly < tile; ly++) {
        uint8_t *out = dst + (size_t)ly * pitch;
        int start = ly < vh ? vw : 0;
        for (int lx = start; lx < tile; lx++) {
            out[3 * lx] = SYNTH_BG_R;
            out[3 * lx + 1] = SYNTH_BG_G;
            out[3 * lx + 2] = SYNTH_BG_B;
        }
        if (ly >= vh)
            continue;
        /* interpolate the coarse grid to this row */
        int j = ly / GRID;
        float fy = (float)(ly % GRID) / GRID;
        const float *g0 = &p->coarse[(size_t)j * gn * NCH];
        const float *g1 = g0 + (size_t)gn * NCH;
        for (int k = 0; k < gn * NCH; k++)
            p->row[k] = g0[k] + (g1[k] - g0[k]) * fy;
        for (int k = 0; k < (gn - 1) * NCH; k++)
            p->slope[k] = (p->row[k + NCH] - p->row[k]) / GRID;
        const int64_t y = y0 + ly;
        const nucleus *nrow[2];
        for (int g = 0; g < 2; g++) {
            const nucleus_grid *ng = &p->grid[g];
            int r = (int)((y + ng->off) / n - ng->row0);
            nrow[g] = &ng->cells[(size_t)r * ng->ncols];
        }
        const int *lut0 = p->grid[0].lut, *lut1 = p->grid[1].lut;
        const float fyl = (float)ly;
        for (int lx = 0; lx < vw; lx++) {
            int i = lx / GRID;
            float f = (float)(lx % GRID);
            const float *rv = &p->row[i * NCH], *sv = &p->slope[i * NCH];
            float mult[3] = {1, 1, 1};
            apply_nucleus(&nrow[0][lut0[lx]], (float)lx, fyl, mult);
            apply_nucleus(&nrow[1][lut1[lx]], (float)lx, fyl, mult);
            float a = rv[3] + sv[3] * f + 0.5f;
            a = a < 0 ? 0 : a > 1 ? 1 : a;
            float col[3];
            for (int c = 0; c < 3; c++)
                col[c] = (bg[c] + a * (rv[c] + sv[c] * f - bg[c])) * mult[c];
            /* grain: triangular noise, stronger on stained pixels */
            uint32_t h = hash2((uint32_t)(x0 + lx), (uint32_t)y, gkey);
            float gr = (float)((int)(h & 0xff) + (int)((h >> 8) & 0xff) - 255) *
                       (1.0f / 255.0f);
            float amp = 1.3f + (SYNTH_BG_G - col[1]) * 0.045f;
            float chroma =
                (float)((int)((h >> 16) & 0xff) - 128) * (1.0f / 128.0f);
            out[3 * lx] = clamp_u8(col[0] + gr * amp + chroma * amp * 0.3f);
            out[3 * lx + 1] = clamp_u8(col[1] + gr * amp);
            out[3 * lx + 2] = clamp_u8(col[2] + gr * amp - chroma * amp * 0.3f);
        }
    }
}
