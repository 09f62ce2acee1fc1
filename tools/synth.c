/*
 * slidepipe-synth: write a synthetic, deterministic H&E-like whole-slide
 * image as an Aperio-style pyramidal TIFF that OpenSlide and vips read.
 *
 * Layout: IFD 0 is level 0; IFD k is level k, each half the size of the one
 * above (rounded up). Every IFD is tiled, COMPRESSION_JPEG with
 * PHOTOMETRIC_YCBCR 4:2:0, and every tile is a complete JPEG stream
 * (no JPEGTables). IFD 0's ImageDescription carries the Aperio fields
 * AppMag and MPP; every IFD carries X/YResolution in pixels per cm.
 *
 * Pipeline: one OpenMP team paints and encodes a row of level-0 tiles in
 * parallel; one thread at a time writes that row with TIFFWriteRawTile;
 * then the row is box-filtered 2x2 into a one-tile-high band of level 1,
 * and so on down the pyramid. Lower levels keep only their compressed
 * tiles in memory and are written after level 0's directory. Memory is
 * about width * tile * 6 bytes of bands plus the lower levels' JPEGs.
 *
 * Output is atomic: the file is written under a temporary sibling name and
 * renamed at the end; it is removed on failure or SIGINT/SIGTERM/SIGHUP.
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <omp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <tiffio.h>
#include <turbojpeg.h>
#include <unistd.h>

#include "synth.h"
#include "util.h"

#define PROG "slidepipe-synth"

#define APERIO_HEADER "Aperio Image Library v12.0.15 (" PROG ")"

enum { EXIT_WRITE = 3, EXIT_USAGE = 2 }; /* as slidepipe (README) */

enum {
    MAX_DIM = 1 << 20,
    MIN_TILE = 16,
    MAX_TILE = 2048,
    MAX_LEVELS = 32,
    MAX_THREADS = 1024
};

/* ---- options ----------------------------------------------------------- */

typedef struct {
    const char *out;
    int64_t width, height, tile, quality, levels, threads, seed;
    int64_t magnification; /* 0: derive from mpp */
    double mpp, tissue;
    bool bigtiff, quiet;
} options;

static void usage(FILE *f) {
    fprintf(
        f,
        "usage: " PROG " -o OUT.svs [OPTIONS]\n"
        "\n"
        "Write a synthetic H&E-like whole-slide image: an Aperio-style\n"
        "pyramidal TIFF (tiled, JPEG-compressed YCbCr 4:2:0) that OpenSlide\n"
        "and vips read. The content (pink stroma, purple cellular regions and\n"
        "nuclei on near-white glass) is a pure function of the seed and the\n"
        "options, so equal arguments give byte-identical files whatever the\n"
        "thread count.\n"
        "\n"
        "Options:\n"
        "  -o, --output PATH   output file (required); written under a\n"
        "                      temporary name in its folder, then renamed\n"
        "  --width W           level-0 width, 1..%d pixels (default 8192)\n"
        "  --height H          level-0 height, 1..%d pixels (default 6144)\n"
        "  --tile N            tile edge, a multiple of 16 from %d to %d\n"
        "                      (default 256)\n"
        "  --quality Q         JPEG quality 1..100 (default 80)\n"
        "  --mpp M             microns per pixel at level 0 (default 0.25)\n"
        "  --magnification X   objective power (AppMag), a whole number as\n"
        "                      OpenSlide 3.4 requires (default: 10/mpp\n"
        "                      rounded, i.e. 40 at 0.25 mpp)\n"
        "  --seed N            content seed, 0..2^63-1 (default 1)\n"
        "  --tissue F          approximate share of the area covered by\n"
        "                      tissue, 0..1 (default 0.4)\n"
        "  --levels N          pyramid levels, each half the size of the one\n"
        "                      above, rounded up (default: halve until the\n"
        "                      smallest level fits in one tile)\n"
        "  --bigtiff           always write BigTIFF (default: only when the\n"
        "                      file could exceed 4 GiB)\n"
        "  --threads N         worker threads (default: all online cores)\n"
        "  --quiet             no progress on stderr (progress is drawn only\n"
        "                      when stderr is a terminal)\n"
        "  -h, --help          show this help\n"
        "  -V, --version       show the version\n"
        "\n"
        "Options take their value as the next argument or after '='.\n"
        "Memory: about width x tile x 6 bytes, plus the lower levels' JPEGs.\n"
        "Exit status: 0 success, 3 the output could not be written,\n"
        "2 usage error.\n",
        MAX_DIM, MAX_DIM, MIN_TILE, MAX_TILE);
}

static int usage_error(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));
static int usage_error(const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    for (char *p = msg; *p; p++)
        if (*p == '\n' || *p == '\r')
            *p = ' ';
    fprintf(stderr, PROG ": %s\n", msg);
    return EXIT_USAGE;
}

typedef enum { OPT_INT, OPT_DOUBLE, OPT_STRING, OPT_FLAG } opt_kind;

typedef struct {
    const char *name; /* long name without dashes */
    char short_name;  /* or 0 */
    opt_kind kind;
    size_t offset; /* into options */
    int64_t imin, imax;
    double dmin, dmax;
} opt_def;

#define OFF(f) offsetof(options, f)
#define OPT_I(n, f, lo, hi)                                                    \
    { .name = n, .kind = OPT_INT, .offset = OFF(f), .imin = lo, .imax = hi }
#define OPT_D(n, f, lo, hi)                                                    \
    { .name = n, .kind = OPT_DOUBLE, .offset = OFF(f), .dmin = lo, .dmax = hi }
#define OPT_F(n, s, f)                                                         \
    { .name = n, .short_name = s, .kind = OPT_FLAG, .offset = OFF(f) }
static const opt_def opt_defs[] = {
    {.name = "output",
     .short_name = 'o',
     .kind = OPT_STRING,
     .offset = OFF(out)},
    OPT_I("width", width, 1, MAX_DIM),
    OPT_I("height", height, 1, MAX_DIM),
    OPT_I("tile", tile, MIN_TILE, MAX_TILE),
    OPT_I("quality", quality, 1, 100),
    OPT_D("mpp", mpp, 1e-4, 1e4),
    OPT_I("magnification", magnification, 1, 10000),
    OPT_I("seed", seed, 0, INT64_MAX),
    OPT_D("tissue", tissue, 0, 1),
    OPT_I("levels", levels, 1, MAX_LEVELS),
    OPT_I("threads", threads, 1, MAX_THREADS),
    OPT_F("bigtiff", 0, bigtiff),
    OPT_F("quiet", 'q', quiet),
};
#define N_OPTS (sizeof opt_defs / sizeof opt_defs[0])

/* Parse argv into `o`. Returns -1 to go on, else an exit status. */
static int parse_args(int argc, char **argv, options *o) {
    *o = (options){.width = 8192,
                   .height = 6144,
                   .tile = 256,
                   .quality = 80,
                   .mpp = 0.25,
                   .magnification = 0,
                   .seed = 1,
                   .tissue = 0.4,
                   .levels = 0,
                   .threads = 0};
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0) {
            usage(stdout);
            return 0;
        }
        if (strcmp(arg, "-V") == 0 || strcmp(arg, "--version") == 0) {
            printf(PROG " %s\n", SP_VERSION);
            return 0;
        }
        const opt_def *def = NULL;
        const char *value = NULL;
        char shown[64];
        if (arg[0] == '-' && arg[1] == '-' && arg[2]) {
            const char *name = arg + 2;
            const char *eq = strchr(name, '=');
            size_t len = eq ? (size_t)(eq - name) : strlen(name);
            for (size_t k = 0; k < N_OPTS; k++)
                if (strlen(opt_defs[k].name) == len &&
                    strncmp(opt_defs[k].name, name, len) == 0)
                    def = &opt_defs[k];
            if (!def)
                return usage_error("unknown option '%.*s' (see '" PROG
                                   " --help')",
                                   (int)(len + 2), arg);
            if (eq) {
                if (def->kind == OPT_FLAG)
                    return usage_error("--%s takes no value", def->name);
                value = eq + 1;
            }
            snprintf(shown, sizeof shown, "--%s", def->name);
        } else if (arg[0] == '-' && arg[1] && !arg[2]) {
            for (size_t k = 0; k < N_OPTS; k++)
                if (opt_defs[k].short_name == arg[1])
                    def = &opt_defs[k];
            if (!def)
                return usage_error(
                    "unknown option '%s' (see '" PROG " --help')", arg);
            snprintf(shown, sizeof shown, "-%c", arg[1]);
        } else {
            return usage_error(
                "unexpected argument '%s' (see '" PROG " --help')", arg);
        }
        if (def->kind == OPT_FLAG) {
            *(bool *)((char *)o + def->offset) = true;
            continue;
        }
        if (!value) {
            if (i + 1 >= argc)
                return usage_error("%s needs a value", shown);
            value = argv[++i];
        }
        switch (def->kind) {
        case OPT_STRING:
            if (!value[0])
                return usage_error("%s: empty value", shown);
            *(const char **)((char *)o + def->offset) = value;
            break;
        case OPT_INT: {
            int64_t v;
            if (!sp_parse_int64(value, &v) || v < def->imin || v > def->imax)
                return usage_error(
                    "%s: expected a whole number from %lld to %lld, got '%s'",
                    shown, (long long)def->imin, (long long)def->imax, value);
            *(int64_t *)((char *)o + def->offset) = v;
            break;
        }
        case OPT_DOUBLE: {
            double v;
            if (!sp_parse_double(value, &v) || v < def->dmin || v > def->dmax)
                return usage_error(
                    "%s: expected a number from %g to %g, got '%s'", shown,
                    def->dmin, def->dmax, value);
            *(double *)((char *)o + def->offset) = v;
            break;
        }
        case OPT_FLAG: break;
        }
    }
    if (!o->out)
        return usage_error("no output given (-o OUT.svs; see '" PROG
                           " --help')");
    if (o->tile % 16 != 0)
        return usage_error("--tile: must be a multiple of 16, got %lld",
                           (long long)o->tile);
    if (o->magnification <= 0) {
        double m = floor(10.0 / o->mpp + 0.5);
        o->magnification = m < 1 ? 1 : m > 10000 ? 10000 : (int64_t)m;
    }
    if (o->threads <= 0)
        o->threads = sp_default_threads();
    if (o->threads > MAX_THREADS)
        o->threads = MAX_THREADS;
    return -1;
}

/* ---- the pyramid ------------------------------------------------------- */

typedef struct {
    int64_t w, h;     /* level size */
    int64_t ntx, nty; /* tiles across and down */
    uint8_t *band;    /* one row of tiles, ntx * tile wide, tile high, RGB */
    size_t pitch;
    unsigned char **jpg; /* compressed tiles: level 0 one row, else all */
    unsigned long *len;
    size_t njpg;
} level;

typedef struct {
    options o;
    int tile;
    int nlevels;
    level lv[MAX_LEVELS];
    synth_scene scene;
    TIFF *tif;
    const char *tmp;
    sp_error err;
    int failed; /* set by any thread (atomic); read at row ends */
    int stop;   /* written only inside `single`, read after its barrier */
    bool progress;
    double t0;
    int last_pct;
} job;

/* Per-thread state, created inside the parallel region. */
typedef struct {
    tjhandle tj;
    unsigned char *jbuf;
    unsigned long jcap;
    synth_painter *painter;
} worker;

static void fail(job *jb, sp_errcode code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void fail(job *jb, sp_errcode code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
#pragma omp critical(synth_error)
    sp_error_setv(&jb->err, code, jb->o.out, fmt, ap);
    va_end(ap);
#pragma omp atomic write
    jb->failed = 1;
}

static bool has_failed(job *jb) {
    int f;
#pragma omp atomic read
    f = jb->failed;
    return f != 0;
}

static int level_count(int64_t w, int64_t h, int64_t tile, bool to_one) {
    int n = 1;
    while (to_one ? (w > 1 || h > 1) : (w > tile || h > tile)) {
        w = (w + 1) / 2;
        h = (h + 1) / 2;
        n++;
    }
    return n;
}

static bool plan_levels(job *jb) {
    const int64_t t = jb->tile;
    int64_t w = jb->o.width, h = jb->o.height;
    for (int l = 0; l < jb->nlevels; l++) {
        level *lv = &jb->lv[l];
        lv->w = w;
        lv->h = h;
        lv->ntx = (w + t - 1) / t;
        lv->nty = (h + t - 1) / t;
        lv->pitch = (size_t)(lv->ntx * t) * 3;
        lv->njpg = (size_t)(l == 0 ? lv->ntx : lv->ntx * lv->nty);
        /* level 0's band is painted in full; the others are zeroed so that
         * nothing uninitialised can reach the encoder */
        lv->band = l == 0 ? malloc(lv->pitch * (size_t)t)
                          : calloc((size_t)t, lv->pitch);
        lv->jpg = calloc(lv->njpg, sizeof *lv->jpg);
        lv->len = calloc(lv->njpg, sizeof *lv->len);
        if (!lv->band || !lv->jpg || !lv->len) {
            sp_error_set(&jb->err, SP_ERR_NOMEM, jb->o.out,
                         "out of memory for a %lld-pixel-wide band",
                         (long long)w);
            return false;
        }
        w = (w + 1) / 2;
        h = (h + 1) / 2;
    }
    return true;
}

static void free_levels(job *jb) {
    for (int l = 0; l < jb->nlevels; l++) {
        level *lv = &jb->lv[l];
        free(lv->band);
        if (lv->jpg)
            for (size_t k = 0; k < lv->njpg; k++)
                free(lv->jpg[k]);
        free(lv->jpg);
        free(lv->len);
    }
}

/* Compress tile column `tx` of `lv`'s band into slot `slot`. */
static void encode_tile(job *jb, worker *w, level *lv, int64_t tx,
                        size_t slot) {
    const int t = jb->tile;
    unsigned char *buf = w->jbuf;
    unsigned long len = w->jcap;
    if (tjCompress2(w->tj, lv->band + (size_t)tx * (size_t)t * 3, t,
                    (int)lv->pitch, t, TJPF_RGB, &buf, &len, TJSAMP_420,
                    (int)jb->o.quality, TJFLAG_NOREALLOC) != 0) {
        fail(jb, SP_ERR_INTERNAL, "JPEG encoding failed: %s",
             tjGetErrorStr2(w->tj));
        return;
    }
    unsigned char *copy = malloc(len);
    if (!copy) {
        fail(jb, SP_ERR_NOMEM, "out of memory");
        return;
    }
    memcpy(copy, buf, len);
    lv->jpg[slot] = copy;
    lv->len[slot] = len;
}

/* Fill the parts of tile column `tx` outside the level (right of its width,
 * below row `valid_rows`) with the flat background. */
static void pad_tile(const job *jb, level *lv, int64_t tx, int valid_rows) {
    const int64_t t = jb->tile;
    int64_t x0 = tx * t, x1 = x0 + t;
    int64_t xs = lv->w > x0 ? lv->w : x0;
    for (int y = 0; y < (int)t; y++) {
        uint8_t *row = lv->band + (size_t)y * lv->pitch;
        for (int64_t x = y < valid_rows ? xs : x0; x < x1; x++) {
            row[3 * x] = SYNTH_BG_R;
            row[3 * x + 1] = SYNTH_BG_G;
            row[3 * x + 2] = SYNTH_BG_B;
        }
    }
}

/* Average 2x2 blocks of `src` band rows (2 oy, 2 oy + 1) into `dst` band
 * row `drow`; a missing last row or column repeats the one before. */
static void downsample_row(const level *src, level *dst, int oy, int src_rows,
                           int drow) {
    const uint8_t *r0 = src->band + (size_t)(2 * oy) * src->pitch;
    const uint8_t *r1 = 2 * oy + 1 < src_rows ? r0 + src->pitch : r0;
    uint8_t *o = dst->band + (size_t)drow * dst->pitch;
    int64_t pairs = src->w / 2;
    for (int64_t x = 0; x < pairs; x++) {
        const uint8_t *a = r0 + 6 * x, *b = r1 + 6 * x;
        for (int c = 0; c < 3; c++)
            o[3 * x + c] =
                (uint8_t)((a[c] + a[c + 3] + b[c] + b[c + 3] + 2) >> 2);
    }
    if (src->w & 1) {
        const uint8_t *a = r0 + 6 * pairs, *b = r1 + 6 * pairs;
        for (int c = 0; c < 3; c++)
            o[3 * pairs + c] = (uint8_t)((a[c] + b[c] + 1) >> 1);
    }
}

/* Level `l`'s band holds its finished tile row `r`: fold it into level
 * l + 1 and, when that band is complete, encode it and recurse. Called by
 * every thread of the team (it contains worksharing loops). */
static void cascade(job *jb, worker *w, int l, int64_t r) {
    if (l + 1 >= jb->nlevels)
        return;
    const int t = jb->tile;
    level *src = &jb->lv[l], *dst = &jb->lv[l + 1];
    int src_rows = (int)(src->h - r * t < t ? src->h - r * t : t);
    int half = (int)(r & 1);
    int nout = (src_rows + 1) / 2;
#pragma omp for schedule(static)
    for (int oy = 0; oy < nout; oy++)
        downsample_row(src, dst, oy, src_rows, half * (t / 2) + oy);
    if (!half && r != src->nty - 1)
        return;
    int64_t r1 = r / 2;
    int rows1 = (int)(dst->h - r1 * t < t ? dst->h - r1 * t : t);
#pragma omp for schedule(dynamic, 1)
    for (int64_t tx = 0; tx < dst->ntx; tx++) {
        if (has_failed(jb) || !w->painter)
            continue;
        pad_tile(jb, dst, tx, rows1);
        encode_tile(jb, w, dst, tx, (size_t)(r1 * dst->ntx + tx));
    }
    cascade(jb, w, l + 1, r1);
}

/* ---- TIFF output ------------------------------------------------------- */

static int tiff_error(TIFF *tif, void *user, const char *module,
                      const char *fmt, va_list ap) {
    (void)tif;
    job *jb = user;
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    fail(jb, SP_ERR_OUTPUT, "libtiff: %s%s%s", module ? module : "",
         module ? ": " : "", msg);
    return 1;
}

static int tiff_warning(TIFF *tif, void *user, const char *module,
                        const char *fmt, va_list ap) {
    (void)tif, (void)user, (void)module, (void)fmt, (void)ap;
    return 1; /* silence */
}

static bool set_level_fields(job *jb, int l) {
    const options *o = &jb->o;
    const level *lv = &jb->lv[l];
    char desc[512];
    if (l == 0)
        snprintf(desc, sizeof desc,
                 APERIO_HEADER
                 "\r\n%lldx%lld [0,0 %lldx%lld] (%dx%d) JPEG/RGB Q=%d"
                 "|AppMag = %lld|MPP = %.10g|Generator = " PROG " %s"
                 "|Seed = %lld|Tissue = %g",
                 (long long)o->width, (long long)o->height, (long long)o->width,
                 (long long)o->height, jb->tile, jb->tile, (int)o->quality,
                 (long long)o->magnification, o->mpp, SP_VERSION,
                 (long long)o->seed, o->tissue);
    else
        snprintf(desc, sizeof desc,
                 APERIO_HEADER
                 "\r\n%lldx%lld [0,0 %lldx%lld] (%dx%d) -> %lldx%lld"
                 " JPEG/RGB Q=%d",
                 (long long)o->width, (long long)o->height, (long long)o->width,
                 (long long)o->height, jb->tile, jb->tile, (long long)lv->w,
                 (long long)lv->h, (int)o->quality);
    /* pixels per centimetre at this level */
    double xres = 1e4 / (o->mpp * (double)o->width / (double)lv->w);
    double yres = 1e4 / (o->mpp * (double)o->height / (double)lv->h);
    TIFF *tif = jb->tif;
    return TIFFSetField(tif, TIFFTAG_SUBFILETYPE,
                        (uint32_t)(l ? FILETYPE_REDUCEDIMAGE : 0)) &&
           TIFFSetField(tif, TIFFTAG_IMAGEWIDTH, (uint32_t)lv->w) &&
           TIFFSetField(tif, TIFFTAG_IMAGELENGTH, (uint32_t)lv->h) &&
           TIFFSetField(tif, TIFFTAG_TILEWIDTH, (uint32_t)jb->tile) &&
           TIFFSetField(tif, TIFFTAG_TILELENGTH, (uint32_t)jb->tile) &&
           TIFFSetField(tif, TIFFTAG_BITSPERSAMPLE, 8) &&
           TIFFSetField(tif, TIFFTAG_SAMPLESPERPIXEL, 3) &&
           TIFFSetField(tif, TIFFTAG_PLANARCONFIG, PLANARCONFIG_CONTIG) &&
           TIFFSetField(tif, TIFFTAG_COMPRESSION, COMPRESSION_JPEG) &&
           TIFFSetField(tif, TIFFTAG_PHOTOMETRIC, PHOTOMETRIC_YCBCR) &&
           TIFFSetField(tif, TIFFTAG_YCBCRSUBSAMPLING, 2, 2) &&
           TIFFSetField(tif, TIFFTAG_IMAGEDESCRIPTION, desc) &&
           TIFFSetField(tif, TIFFTAG_SOFTWARE, PROG " " SP_VERSION) &&
           TIFFSetField(tif, TIFFTAG_XRESOLUTION, xres) &&
           TIFFSetField(tif, TIFFTAG_YRESOLUTION, yres) &&
           TIFFSetField(tif, TIFFTAG_RESOLUTIONUNIT, RESUNIT_CENTIMETER);
}

static bool write_tile(job *jb, level *lv, int64_t tx, int64_t ty,
                       size_t slot) {
    uint32_t index = TIFFComputeTile(jb->tif, (uint32_t)(tx * jb->tile),
                                     (uint32_t)(ty * jb->tile), 0, 0);
    if (TIFFWriteRawTile(jb->tif, index, lv->jpg[slot],
                         (tmsize_t)lv->len[slot]) != (tmsize_t)lv->len[slot]) {
        fail(jb, SP_ERR_OUTPUT, "cannot write tile %lld,%lld", (long long)tx,
             (long long)ty);
        return false;
    }
    free(lv->jpg[slot]);
    lv->jpg[slot] = NULL;
    return true;
}

static void show_progress(job *jb, int64_t done, int64_t total) {
    if (!jb->progress)
        return;
    int pct = (int)(100 * done / total);
    if (pct == jb->last_pct)
        return;
    jb->last_pct = pct;
    fprintf(stderr, "\r" PROG ": %s %3d%%  %.1f s", sp_basename(jb->o.out), pct,
            sp_now() - jb->t0);
    fflush(stderr);
}

/* Paint, encode and write level 0 row by row, building the lower levels. */
static void run_team(job *jb) {
    level *l0 = &jb->lv[0];
    const int t = jb->tile;
#pragma omp parallel num_threads((int)jb->o.threads)
    {
        worker w = {0};
        w.tj = tjInitCompress();
        w.jcap = tjBufSize(t, t, TJSAMP_420);
        w.jbuf = malloc(w.jcap);
        w.painter = synth_painter_create(&jb->scene, t);
        if (!w.tj || !w.jbuf || !w.painter) {
            fail(jb, SP_ERR_NOMEM, "out of memory");
            synth_painter_free(w.painter);
            w.painter = NULL;
        }
        for (int64_t r = 0; r < l0->nty; r++) {
#pragma omp for schedule(dynamic, 1)
            for (int64_t tx = 0; tx < l0->ntx; tx++) {
                if (has_failed(jb) || !w.painter)
                    continue;
                synth_paint_tile(w.painter, tx * t, r * t,
                                 l0->band + (size_t)tx * (size_t)t * 3,
                                 l0->pitch);
                encode_tile(jb, &w, l0, tx, (size_t)tx);
            }
#pragma omp single
            {
                for (int64_t tx = 0; tx < l0->ntx && !has_failed(jb); tx++)
                    write_tile(jb, l0, tx, r, (size_t)tx);
                jb->stop = has_failed(jb);
                show_progress(jb, r + 1, l0->nty);
            }
            if (jb->stop)
                break;
            cascade(jb, &w, 0, r);
        }
        synth_painter_free(w.painter);
        free(w.jbuf);
        if (w.tj)
            tjDestroy(w.tj);
    }
}

/* ---- main -------------------------------------------------------------- */

static const char *volatile cleanup_path;

static void on_signal(int sig) {
    const char *p = cleanup_path;
    if (p)
        unlink(p);
    signal(sig, SIG_DFL);
    raise(sig);
}

static bool write_slide(job *jb) {
    const options *o = &jb->o;
    bool ok = false;
    TIFFOpenOptions *topts = NULL;
    int fd = -1;

    if (!synth_scene_init(&jb->scene, o->width, o->height, o->mpp, o->tissue,
                          (uint64_t)o->seed, &jb->err))
        goto out;
    if (!plan_levels(jb))
        goto out;

    /* BigTIFF only when the worst-case JPEG sizes could pass 4 GiB. */
    bool big = o->bigtiff;
    double bound = 1 << 20;
    for (int l = 0; l < jb->nlevels; l++)
        bound += (double)(jb->lv[l].ntx * jb->lv[l].nty) *
                 ((double)tjBufSize(jb->tile, jb->tile, TJSAMP_420) + 16);
    if (bound > 4e9)
        big = true;

    fd = open(jb->tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
    if (fd < 0) {
        sp_error_errno(&jb->err, SP_ERR_OUTPUT, o->out, errno, "cannot create");
        goto out;
    }
    cleanup_path = jb->tmp;
    topts = TIFFOpenOptionsAlloc();
    if (!topts) {
        sp_error_set(&jb->err, SP_ERR_NOMEM, o->out, "out of memory");
        goto out;
    }
    TIFFOpenOptionsSetErrorHandlerExtR(topts, tiff_error, jb);
    TIFFOpenOptionsSetWarningHandlerExtR(topts, tiff_warning, jb);
    jb->tif = TIFFFdOpenExt(fd, jb->tmp, big ? "w8" : "w", topts);
    if (!jb->tif) {
        fail(jb, SP_ERR_OUTPUT, "cannot open for writing");
        goto out;
    }
    fd = -1; /* owned by the TIFF handle now */
    if (!set_level_fields(jb, 0)) {
        fail(jb, SP_ERR_OUTPUT, "cannot set TIFF fields");
        goto out;
    }

    run_team(jb);
    if (has_failed(jb))
        goto out;
    if (!TIFFWriteDirectory(jb->tif)) {
        fail(jb, SP_ERR_OUTPUT, "cannot write directory 0");
        goto out;
    }
    for (int l = 1; l < jb->nlevels; l++) {
        level *lv = &jb->lv[l];
        if (!set_level_fields(jb, l)) {
            fail(jb, SP_ERR_OUTPUT, "cannot set TIFF fields");
            goto out;
        }
        for (int64_t ty = 0; ty < lv->nty; ty++)
            for (int64_t tx = 0; tx < lv->ntx; tx++)
                if (!write_tile(jb, lv, tx, ty, (size_t)(ty * lv->ntx + tx)))
                    goto out;
        if (!TIFFWriteDirectory(jb->tif)) {
            fail(jb, SP_ERR_OUTPUT, "cannot write directory %d", l);
            goto out;
        }
    }
    /* TIFFClose flushes; it reports failures through the error handler */
    TIFF *tif = jb->tif;
    jb->tif = NULL;
    TIFFClose(tif);
    if (has_failed(jb))
        goto out;
    if (rename(jb->tmp, o->out) != 0) {
        sp_error_errno(&jb->err, SP_ERR_OUTPUT, o->out, errno, "cannot rename");
        goto out;
    }
    ok = true;
out:
    if (jb->tif)
        TIFFClose(jb->tif);
    jb->tif = NULL;
    if (fd >= 0)
        close(fd);
    if (!ok && cleanup_path)
        unlink(jb->tmp);
    cleanup_path = NULL;
    TIFFOpenOptionsFree(topts);
    free_levels(jb);
    return ok;
}

int main(int argc, char **argv) {
    job jb = {0};
    int rc = parse_args(argc, argv, &jb.o);
    if (rc >= 0)
        return rc;
    sp_openmp_sleep_when_idle(argv); /* util.h */
    const options *o = &jb.o;
    jb.tile = (int)o->tile;
    int most = level_count(o->width, o->height, o->tile, true);
    if (o->levels > most)
        return usage_error("--levels: a %lldx%lld slide has at most %d levels",
                           (long long)o->width, (long long)o->height, most);
    jb.nlevels = o->levels ? (int)o->levels
                           : level_count(o->width, o->height, o->tile, false);
    if (jb.nlevels > MAX_LEVELS)
        jb.nlevels = MAX_LEVELS;
    jb.progress = !o->quiet && isatty(STDERR_FILENO);
    jb.last_pct = -1;
    jb.t0 = sp_now();

    char *tmp = sp_temp_sibling(o->out);
    if (!tmp) {
        fprintf(stderr, PROG ": out of memory\n");
        return EXIT_WRITE;
    }
    jb.tmp = tmp;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);

    bool ok = write_slide(&jb);
    free(tmp);
    if (jb.progress)
        fputc('\n', stderr);
    if (!ok) {
        fprintf(stderr, PROG ": %s\n",
                jb.err.msg[0] ? jb.err.msg : "unknown error");
        return jb.err.code == SP_ERR_USAGE ? EXIT_USAGE : EXIT_WRITE;
    }
    if (jb.progress) {
        struct stat st;
        double mb = stat(o->out, &st) == 0 ? (double)st.st_size / 1048576.0 : 0;
        fprintf(stderr,
                PROG ": wrote %s: %lldx%lld, %d levels, %.1f MiB in %.2f s\n",
                o->out, (long long)o->width, (long long)o->height, jb.nlevels,
                mb, sp_now() - jb.t0);
    }
    return 0;
}
