/* Images that are not slides, through libvips: plain, tiled and
 * multi-page TIFF, BigTIFF, OME-TIFF, JPEG, PNG, WebP, JPEG 2000.
 *
 * What is read
 *   The loader is chosen by libvips from the file's first bytes (never
 *   from its name: libvips would take "name[opts]" for load options) and
 *   must be one of `loaders` below: libvips' other loaders (CSV, matrix,
 *   ImageMagick, PDF, ...) are not images a lab scans.
 *   Level 0 is the largest page of a multi-page TIFF (the first of equal
 *   ones: page 0 of most files, the scan rather than a thumbnail or label
 *   written before it). Further levels are that page's SubIFDs when it has
 *   some (OME-TIFF from Bio-Formats and `vips tiffsave --subifd`), else
 *   the later pages; a SubIFD or page is a level only when both its sides
 *   are the previous level's halved k >= 1 times (+-1 pixel), as a pyramid
 *   is written; others (labels, thumbnails, other images) are ignored.
 *   mpp: OME-XML's PhysicalSizeX/Y (the first Pixels element) in the first
 *   ImageDescription, else the level-0 directory's XResolution/YResolution
 *   when ResolutionUnit is inch or cm; absent otherwise (JPEG, PNG, WebP).
 *
 * Pixels
 *   Each level is one libvips pipeline (load with random access and
 *   fail_on=warning, so a truncated JPEG fails instead of coming back
 *   grey; then colourspace to sRGB, 16 bits scaled to 8), built once at
 *   open; nothing is decoded until a read. Readers hold one VipsRegion per
 *   level (a region is per thread, the image is shared) and prepare only
 *   the requested rectangle, in the caller's thread: libvips' own
 *   concurrency is set to 1 (slidepipe's OpenMP threads do the work).
 *   Alpha is kept through the pipeline and composited over the reader's
 *   background here.
 *   A stripped TIFF level of a common kind (8-bit grey, RGB, RGBA, YCbCr
 *   JPEG; see strips.c) is read strip by strip through libtiff instead:
 *   its pipeline is still built (the same metadata) but never asked for
 *   pixels. Its native tile is one strip across the full width.
 *
 * Memory
 *   Tiled TIFF (and JPEG 2000) are read tile by tile, stripped TIFF levels
 *   that strips.c takes strip by strip: neither needs a temporary file.
 *   What libvips cannot read in parts otherwise (other stripped TIFFs,
 *   such as one strip holding a large image; JPEG, PNG, WebP) is decoded
 *   whole on the first read, by libvips, into memory when small (under
 *   100 MB) or else into an uncompressed temporary file in $TMPDIR that
 *   is then mapped window by window: memory stays bounded, the disk does
 *   not. Such an image is refused at open when the levels so decoded
 *   would exceed SP_VIPS_MAX_DECODE bytes or the free space of $TMPDIR: a
 *   PNG header claiming 10^6 x 10^6 pixels fails cleanly before anything
 *   is allocated. */
#include "ingest.h"
#include "ingest_private.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <tiffio.h>

#include <vips/vips.h>

/* Decoded bytes a non-tiled image may need in libvips' temporary file. */
#define SP_VIPS_MAX_DECODE (INT64_C(64) << 30)
/* Pages of a multi-page TIFF looked at for level 0 and the pyramid. */
#define SP_VIPS_MAX_PAGES 64
#define SP_VIPS_MAX_PROPS 16

typedef struct {
    VipsImage *img;     /* 8-bit sRGB, 3 bands or 4 (straight alpha) */
    sp__strips *strips; /* read strip by strip instead (strips.c), or NULL */
} vlevel;

struct sp__vips {
    int n;
    vlevel *lv;
    char vendor[48];
    int nprops;
    char names[SP_VIPS_MAX_PROPS][32];
    char values[SP_VIPS_MAX_PROPS][64];
    sp_property props[SP_VIPS_MAX_PROPS + 1];
};

struct sp__vips_reader {
    const sp__vips *v;
    VipsRegion **reg;        /* per level, made on first use */
    sp__strips_reader **str; /* per level read by strips, likewise */
    bool failed;
};

/* ---- libvips, once per process ----------------------------------------- */

static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static bool init_ok;

static void *touch_class(void *cls, void *a, void *b) {
    (void)cls;
    (void)a;
    (void)b;
    return NULL;
}

static void init_vips(void) {
    if (vips_init("slidepipe") != 0) {
        vips_error_clear();
        return;
    }
    vips_concurrency_set(1);
    vips_cache_set_max(0); /* no operation cache holding files open */
    vips_block_untrusted_set(TRUE);
    /* libvips installs its own libtiff handlers when its loader classes
     * are made: make them all now, then put slidepipe's back, so that
     * library code still never prints */
    vips_foreign_map("VipsForeignLoad", touch_class, NULL, NULL);
    sp__quiet_handlers();
    vips_error_clear();
    sp_capture_clear(); /* GLib's notes of the module loading */
    init_ok = true;
}

static bool vips_ready(void) {
    pthread_once(&init_once, init_vips);
    return init_ok;
}

const char *sp__vips_version(void) { return vips_version_string(); }

/* libvips' error buffer is process-wide: take its first line at once. */
static const char *vips_cause(char *buf, size_t n) {
    char *m = vips_error_buffer_copy();
    size_t k = m ? strcspn(m, "\n") : 0;
    if (m && k)
        snprintf(buf, n, "%.*s", (int)k, m);
    else
        snprintf(buf, n, "libvips gave no cause");
    g_free(m);
    return buf;
}

/* ---- which loader ------------------------------------------------------ */

typedef enum { L_NONE, L_TIFF, L_JPEG, L_PNG, L_WEBP, L_JP2K } loader_kind;

static const struct {
    const char *nick; /* libvips' source loader's nickname */
    loader_kind kind;
} loaders[] = {
    {"tiffload_source", L_TIFF}, {"jpegload_source", L_JPEG},
    {"pngload_source", L_PNG},   {"webpload_source", L_WEBP},
    {"jp2kload_source", L_JP2K},
};

/* The loader for `path` from its bytes; *nick: "tiffload", ... (a source
 * rather than a file name: libvips would parse "name[opts]" for options;
 * rather than a buffer of its head: a TIFF's directory may be at its end) */
static loader_kind find_loader(const char *path, char *nick, size_t n) {
    if (!vips_ready())
        return L_NONE;
    VipsSource *src = vips_source_new_from_file(path);
    const char *name = src ? vips_foreign_find_load_source(src) : NULL;
    vips_error_clear(); /* "not a known format" */
    GType t = name ? g_type_from_name(name) : 0;
    const char *nk = t ? vips_nickname_find(t) : NULL;
    loader_kind k = L_NONE;
    for (size_t i = 0; nk && i < sizeof loaders / sizeof loaders[0]; i++)
        if (strcmp(nk, loaders[i].nick) == 0) {
            snprintf(nick, n, "%.*s", (int)(strlen(nk) - 7), nk);
            k = loaders[i].kind;
        }
    if (src)
        g_object_unref(src);
    sp_capture_clear();
    return k;
}

bool sp__vips_candidate(const char *path) {
    char nick[32];
    return find_loader(path, nick, sizeof nick) != L_NONE;
}

/* ---- TIFF metadata, through libtiff ------------------------------------ */

typedef struct {
    bool have;
    double x, y; /* um per pixel */
} mpp_t;

static double unit_um(const char *u) {
    if (!u || !*u || strcmp(u, "\xc2\xb5m") == 0 || strcmp(u, "um") == 0 ||
        strcmp(u, "\xce\xbcm") == 0)
        return 1;
    if (strcmp(u, "nm") == 0)
        return 1e-3;
    if (strcmp(u, "mm") == 0)
        return 1e3;
    if (strcmp(u, "cm") == 0)
        return 1e4;
    if (strcmp(u, "m") == 0)
        return 1e6;
    return 0; /* a unit we do not know: no mpp */
}

typedef struct {
    bool done;
    mpp_t mpp;
} ome_state;

static void ome_start(GMarkupParseContext *ctx, const gchar *element,
                      const gchar **names, const gchar **values, gpointer user,
                      GError **error) {
    (void)ctx;
    (void)error;
    ome_state *st = user;
    const char *colon = strrchr(element, ':');
    if (st->done || strcmp(colon ? colon + 1 : element, "Pixels") != 0)
        return;
    st->done = true; /* the first image's */
    const char *sx = NULL, *sy = NULL, *ux = NULL, *uy = NULL;
    for (int i = 0; names[i]; i++) {
        if (strcmp(names[i], "PhysicalSizeX") == 0)
            sx = values[i];
        else if (strcmp(names[i], "PhysicalSizeY") == 0)
            sy = values[i];
        else if (strcmp(names[i], "PhysicalSizeXUnit") == 0)
            ux = values[i];
        else if (strcmp(names[i], "PhysicalSizeYUnit") == 0)
            uy = values[i];
    }
    double x, y;
    if (sx && sy && sp_parse_double(sx, &x) && sp_parse_double(sy, &y)) {
        x *= unit_um(ux);
        y *= unit_um(uy);
        if (x > 0 && y > 0 && isfinite(x) && isfinite(y))
            st->mpp = (mpp_t){true, x, y};
    }
}

/* OME-XML's PhysicalSizeX/Y through GLib's markup parser. */
static mpp_t ome_mpp(const char *xml) {
    ome_state st = {0};
    GMarkupParser p = {.start_element = ome_start};
    GMarkupParseContext *c = g_markup_parse_context_new(&p, 0, &st, NULL);
    g_markup_parse_context_parse(c, xml, -1, NULL); /* errors: no mpp */
    g_markup_parse_context_free(c);
    return st.mpp;
}

/* mpp of directory `dir` of a TIFF; *ome: the first description is
 * OME-XML. */
static mpp_t tiff_mpp(const char *path, int dir, bool *ome) {
    mpp_t m = {0};
    *ome = false;
    sp_capture_clear();
    TIFF *t = TIFFOpen(path, "r");
    if (!t)
        return m;
    char *desc = NULL;
    if (TIFFGetField(t, TIFFTAG_IMAGEDESCRIPTION, &desc) && desc &&
        strstr(desc, "<OME")) {
        *ome = true;
        m = ome_mpp(desc);
    }
    float xr = 0, yr = 0;
    uint16_t unit = RESUNIT_NONE;
    if (!m.have && TIFFSetDirectory(t, (tdir_t)dir) &&
        TIFFGetField(t, TIFFTAG_XRESOLUTION, &xr) &&
        TIFFGetField(t, TIFFTAG_YRESOLUTION, &yr) &&
        TIFFGetField(t, TIFFTAG_RESOLUTIONUNIT, &unit) && xr > 0 && yr > 0 &&
        isfinite(xr) && isfinite(yr) &&
        (unit == RESUNIT_INCH || unit == RESUNIT_CENTIMETER)) {
        double um = unit == RESUNIT_INCH ? 25400 : 10000;
        m = (mpp_t){true, um / xr, um / yr};
    }
    TIFFClose(t);
    sp_capture_clear();
    return m;
}

bool sp__vips_prefer(const char *path) {
    /* OpenSlide's generic-tiff takes a tiled OME-TIFF but neither its
     * SubIFD levels nor its mpp */
    bool ome = false;
    sp_capture_clear();
    TIFF *t = TIFFOpen(path, "r");
    if (!t)
        return false;
    char *desc = NULL;
    uint16_t nsub = 0;
    void *subs = NULL;
    ome = (TIFFGetField(t, TIFFTAG_IMAGEDESCRIPTION, &desc) && desc &&
           strstr(desc, "<OME")) ||
          (TIFFGetField(t, TIFFTAG_SUBIFD, &nsub, &subs) && nsub > 0);
    TIFFClose(t);
    sp_capture_clear();
    return ome;
}

/* ---- pipelines --------------------------------------------------------- */

static VipsImage *load(const char *path, loader_kind k, int page, int subifd) {
    VipsImage *out = NULL;
    int rc = -1;
    switch (k) {
    case L_TIFF:
        rc = vips_tiffload(path, &out, "access", VIPS_ACCESS_RANDOM, "fail_on",
                           VIPS_FAIL_ON_WARNING, "page", page, "subifd", subifd,
                           NULL);
        break;
    case L_JPEG:
        rc = vips_jpegload(path, &out, "access", VIPS_ACCESS_RANDOM, "fail_on",
                           VIPS_FAIL_ON_WARNING, NULL);
        break;
    case L_PNG:
        rc = vips_pngload(path, &out, "access", VIPS_ACCESS_RANDOM, "fail_on",
                          VIPS_FAIL_ON_WARNING, NULL);
        break;
    case L_WEBP:
        rc = vips_webpload(path, &out, "access", VIPS_ACCESS_RANDOM, "fail_on",
                           VIPS_FAIL_ON_WARNING, NULL);
        break;
    case L_JP2K:
        rc = vips_jp2kload(path, &out, "access", VIPS_ACCESS_RANDOM, "fail_on",
                           VIPS_FAIL_ON_WARNING, NULL);
        break;
    case L_NONE: break;
    }
    return rc == 0 ? out : NULL;
}

/* `in` as 8-bit sRGB with 3 bands, or 4 with alpha; steals `in`. */
static VipsImage *to_rgb8(VipsImage *in) {
    VipsImage *cur = in, *t = NULL;
#define STEP(call)                                                             \
    do {                                                                       \
        t = NULL;                                                              \
        int rc_ = (call);                                                      \
        g_object_unref(cur);                                                   \
        if (rc_)                                                               \
            return NULL;                                                       \
        cur = t;                                                               \
    } while (0)
    bool alpha = vips_image_hasalpha(cur);
    if (vips_colourspace_issupported(cur)) {
        STEP(vips_colourspace(cur, &t, VIPS_INTERPRETATION_sRGB, NULL));
    } else {
        /* bands that say nothing of colour: grey from the first, RGB from
         * the first three */
        int colour = vips_image_get_bands(cur) >= 3 ? 3 : 1;
        int keep = colour + (alpha ? 1 : 0);
        if (keep > vips_image_get_bands(cur))
            keep = colour;
        alpha = keep > colour;
        if (vips_image_get_bands(cur) > keep)
            STEP(vips_extract_band(cur, &t, 0, "n", keep, NULL));
        if (colour == 1) {
            VipsImage *b[3] = {cur, cur, cur};
            t = NULL;
            int rc = vips_bandjoin(b, &t, 3, NULL);
            if (rc == 0 && alpha) {
                VipsImage *a = NULL, *rgb = t;
                rc = vips_extract_band(cur, &a, 1, NULL);
                t = NULL;
                if (rc == 0)
                    rc = vips_bandjoin2(rgb, a, &t, NULL);
                if (a)
                    g_object_unref(a);
                g_object_unref(rgb);
            }
            g_object_unref(cur);
            if (rc)
                return NULL;
            cur = t;
        }
    }
    int bands = vips_image_get_bands(cur);
    int want = alpha && bands >= 4 ? 4 : 3;
    if (bands > want) /* sRGB plus extra bands */
        STEP(vips_extract_band(cur, &t, 0, "n", want, NULL));
    if (vips_image_get_format(cur) == VIPS_FORMAT_USHORT)
        STEP(vips_rshift_const1(cur, &t, 8, NULL));
    if (vips_image_get_format(cur) != VIPS_FORMAT_UCHAR)
        STEP(vips_cast_uchar(cur, &t, NULL));
#undef STEP
    return cur;
}

/* Both sides of `w` x `h` are those of `pw` x `ph` halved k >= 1 times. */
static bool halving(int64_t pw, int64_t ph, int64_t w, int64_t h) {
    for (int k = 1; k < 40 && (pw >> k) > 0; k++) {
        double d = (double)(INT64_C(1) << k);
        if (fabs((double)pw / d - (double)w) <= 1 &&
            fabs((double)ph / d - (double)h) <= 1)
            return true;
    }
    return false;
}

static void add_prop(sp__vips *v, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void add_prop(sp__vips *v, const char *name, const char *fmt, ...) {
    if (v->nprops >= SP_VIPS_MAX_PROPS)
        return;
    int i = v->nprops++;
    snprintf(v->names[i], sizeof v->names[i], "%s", name);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(v->values[i], sizeof v->values[i], fmt, ap);
    va_end(ap);
}

/* Free space of the folder libvips writes its temporary files to. */
static int64_t tmp_free(void) {
    struct statvfs f;
    const char *d = g_get_tmp_dir();
    if (statvfs(d, &f) != 0)
        return INT64_MAX; /* libvips will say if it cannot write */
    return (int64_t)f.f_bavail * (int64_t)f.f_frsize;
}

bool sp__vips_open(sp_slide *s, const char *path, sp_error *err) {
    char nick[32], cause[512], tcause[600];
    loader_kind k = find_loader(path, nick, sizeof nick);
    if (k == L_NONE)
        return sp_error_set(err, SP_ERR_INPUT, path,
                            "not an image format libvips reads");
    sp__vips *v = calloc(1, sizeof *v);
    VipsImage *pages[SP_VIPS_MAX_PAGES] = {0};
    VipsImage *raw[SP_VIPS_MAX_PAGES] = {0};
    sp__strips *strips[SP_VIPS_MAX_PAGES] = {0};
    int rpage[SP_VIPS_MAX_PAGES], rsub[SP_VIPS_MAX_PAGES]; /* raw's source */
    int npages = 1, nraw = 0, nsub = 0, base = 0;
    bool ok = false;
    if (!v) {
        sp_error_set(err, SP_ERR_NOMEM, path, "out of memory");
        goto out;
    }
    s->vips = v;
    snprintf(v->vendor, sizeof v->vendor, "vips:%s", nick);
    vips_error_clear();
    sp_capture_clear();
    pages[0] = load(path, k, 0, -1);
    if (!pages[0]) {
        sp_error_set(err, SP_ERR_INPUT, path, "cannot open as %s: %s%s", nick,
                     vips_cause(cause, sizeof cause),
                     sp__libtiff_cause(path, tcause, sizeof tcause));
        goto out;
    }
    if (k == L_TIFF) {
        npages = vips_image_get_n_pages(pages[0]);
        if (npages > SP_VIPS_MAX_PAGES)
            npages = SP_VIPS_MAX_PAGES;
        for (int p = 1; p < npages; p++) {
            pages[p] = load(path, k, p, -1);
            if (!pages[p]) {
                sp_error_set(err, SP_ERR_INPUT, path, "cannot open page %d: %s",
                             p, vips_cause(cause, sizeof cause));
                goto out;
            }
            if ((int64_t)pages[p]->Xsize * pages[p]->Ysize >
                (int64_t)pages[base]->Xsize * pages[base]->Ysize)
                base = p;
        }
        int n = 0;
        if (vips_image_get_typeof(pages[base], VIPS_META_N_SUBIFDS) &&
            vips_image_get_int(pages[base], VIPS_META_N_SUBIFDS, &n) == 0)
            nsub = n > SP_VIPS_MAX_PAGES - 1 ? SP_VIPS_MAX_PAGES - 1 : n;
    }
    /* the levels, unconverted: level 0, then SubIFDs or later pages */
    rpage[nraw] = base;
    rsub[nraw] = -1;
    raw[nraw++] = pages[base];
    g_object_ref(pages[base]);
    for (int i = 0; i < (nsub ? nsub : npages - base - 1); i++) {
        VipsImage *c;
        if (nsub) {
            c = load(path, k, base, i);
            if (!c) {
                sp_error_set(err, SP_ERR_INPUT, path,
                             "cannot open SubIFD %d: %s", i,
                             vips_cause(cause, sizeof cause));
                goto out;
            }
        } else {
            c = pages[base + 1 + i];
            g_object_ref(c);
        }
        const VipsImage *prev = raw[nraw - 1];
        if (halving(prev->Xsize, prev->Ysize, c->Xsize, c->Ysize)) {
            rpage[nraw] = nsub ? base : base + 1 + i;
            rsub[nraw] = nsub ? i : -1;
            raw[nraw++] = c;
        } else
            g_object_unref(c);
    }
    VipsImage *l0 = raw[0];
    int64_t w0 = l0->Xsize, h0 = l0->Ysize;
    if (w0 < 1 || h0 < 1 || w0 > INT32_MAX || h0 > INT32_MAX) {
        sp_error_set(err, SP_ERR_INPUT, path, "image claims %lldx%lld pixels",
                     (long long)w0, (long long)h0);
        goto out;
    }
    /* stripped TIFF levels are read strip by strip (strips.c) where they
     * can be; formats libvips cannot read in parts are decoded whole on
     * the first read (see the top of this file): refuse what could not
     * fit */
    bool partial = (vips_foreign_flags(nick, path) & VIPS_FOREIGN_PARTIAL) != 0;
    vips_error_clear();
    int64_t bytes = 0;
    for (int i = 0; i < nraw; i++) {
        if (k == L_TIFF)
            strips[i] = sp__strips_probe(path, rpage[i], rsub[i], raw[i]->Xsize,
                                         raw[i]->Ysize);
        if (!strips[i])
            bytes += (int64_t)raw[i]->Xsize * raw[i]->Ysize * raw[i]->Bands *
                     (int64_t)vips_format_sizeof(vips_image_get_format(raw[i]));
    }
    sp_capture_clear();
    if (!partial && bytes > 0) {
        int64_t room = tmp_free();
        if (bytes > SP_VIPS_MAX_DECODE || bytes > room) {
            sp_error_set(
                err, SP_ERR_INPUT, path,
                "image %lldx%lld is not tiled: libvips would decode it whole "
                "(%.1f GiB), over the %.0f GiB bound or the %.1f GiB free in "
                "%s",
                (long long)w0, (long long)h0, (double)bytes / (1 << 30),
                (double)SP_VIPS_MAX_DECODE / (1 << 30),
                (double)room / (1 << 30), g_get_tmp_dir());
            goto out;
        }
    }
    /* levels, converted */
    v->lv = calloc((size_t)nraw, sizeof *v->lv);
    s->levels = calloc((size_t)nraw, sizeof *s->levels);
    if (!v->lv || !s->levels) {
        sp_error_set(err, SP_ERR_NOMEM, path, "out of memory");
        goto out;
    }
    for (int i = 0; i < nraw; i++) {
        sp_level *l = &s->levels[i];
        l->width = raw[i]->Xsize;
        l->height = raw[i]->Ysize;
        l->downsample = i == 0 ? 1
                               : ((double)w0 / (double)l->width +
                                  (double)h0 / (double)l->height) /
                                     2;
        int tw = 0, th = 0;
        if (strips[i]) {
            l->tile_width = l->width; /* a strip */
            l->tile_height = sp__strips_rows(strips[i]);
        } else if (partial && vips_image_get_typeof(raw[i], "tile-width") &&
                   vips_image_get_int(raw[i], "tile-width", &tw) == 0 &&
                   vips_image_get_int(raw[i], "tile-height", &th) == 0 &&
                   tw > 0 && th > 0) {
            l->tile_width = tw;
            l->tile_height = th;
        }
        VipsImage *in = raw[i];
        raw[i] = NULL;
        v->lv[i].strips = strips[i];
        strips[i] = NULL;
        v->lv[i].img = to_rgb8(in);
        if (!v->lv[i].img) {
            sp_error_set(err, SP_ERR_INPUT, path,
                         "cannot convert level %d to RGB: %s", i,
                         vips_cause(cause, sizeof cause));
            goto out;
        }
        v->n = s->level_count = i + 1;
    }
    vips_error_clear();
    /* resolution */
    bool ome = false;
    mpp_t m = k == L_TIFF ? tiff_mpp(path, base, &ome) : (mpp_t){0};
    if (m.have) {
        s->has_mpp = true;
        s->mpp_x = m.x;
        s->mpp_y = m.y;
    }
    /* properties, owned by v */
    add_prop(v, "vips.loader", "%s", nick);
    add_prop(v, "vips.width", "%lld", (long long)w0);
    add_prop(v, "vips.height", "%lld", (long long)h0);
    add_prop(v, "vips.bands", "%d", l0->Bands);
    add_prop(v, "vips.format", "%s",
             vips_enum_nick(VIPS_TYPE_BAND_FORMAT, l0->BandFmt));
    add_prop(v, "vips.interpretation", "%s",
             vips_enum_nick(VIPS_TYPE_INTERPRETATION,
                            vips_image_get_interpretation(l0)));
    add_prop(v, "vips.tiled", "%s", partial ? "true" : "false");
    add_prop(v, "vips.strips", "%s", v->lv[0].strips ? "true" : "false");
    if (k == L_TIFF) {
        add_prop(v, "vips.n-pages", "%d", vips_image_get_n_pages(pages[0]));
        add_prop(v, "vips.page", "%d", base);
        add_prop(v, "vips.n-subifds", "%d", nsub);
        add_prop(v, "vips.ome-xml", "%s", ome ? "true" : "false");
    }
    if (m.have) {
        add_prop(v, "vips.mpp-x", "%.9g", m.x);
        add_prop(v, "vips.mpp-y", "%.9g", m.y);
    }
    for (int i = 0; i < v->nprops; i++)
        v->props[i] = (sp_property){v->names[i], v->values[i]};
    s->props = v->props;
    s->prop_count = v->nprops;
    s->vendor = v->vendor;
    ok = true;
out:
    for (int i = 0; i < SP_VIPS_MAX_PAGES; i++) {
        if (pages[i])
            g_object_unref(pages[i]);
        if (raw[i])
            g_object_unref(raw[i]);
        sp__strips_free(strips[i]);
    }
    vips_error_clear();
    return ok;
}

void sp__vips_free(sp__vips *v) {
    if (!v)
        return;
    for (int i = 0; i < v->n; i++) {
        if (v->lv[i].img)
            g_object_unref(v->lv[i].img);
        sp__strips_free(v->lv[i].strips);
    }
    free(v->lv);
    free(v);
}

/* ---- readers ------------------------------------------------------------ */

sp__vips_reader *sp__vips_reader_create(const sp__vips *v) {
    sp__vips_reader *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->v = v;
    r->reg = calloc((size_t)v->n, sizeof *r->reg);
    r->str = calloc((size_t)v->n, sizeof *r->str);
    if (!r->reg || !r->str) {
        free(r->reg);
        free(r->str);
        free(r);
        return NULL;
    }
    return r;
}

void sp__vips_reader_free(sp__vips_reader *r) {
    if (!r)
        return;
    for (int i = 0; i < r->v->n; i++) {
        if (r->reg[i])
            g_object_unref(r->reg[i]);
        sp__strips_reader_free(r->str[i]);
    }
    free(r->reg);
    free(r->str);
    free(r);
}

bool sp__vips_read(sp__vips_reader *r, int level, int64_t x, int64_t y,
                   int64_t w, int64_t h, const uint8_t bg[3], uint8_t *rgb,
                   size_t stride, const char *path, sp_error *err) {
    char cause[512], tcause[600];
    if (r->failed)
        return sp_error_set(err, SP_ERR_INPUT, path,
                            "an earlier read of this image failed");
    VipsImage *img = r->v->lv[level].img;
    /* the part inside the level; the rest is background */
    int64_t x0 = x > 0 ? x : 0, y0 = y > 0 ? y : 0;
    int64_t x1 = x + w < img->Xsize ? x + w : img->Xsize;
    int64_t y1 = y + h < img->Ysize ? y + h : img->Ysize;
    if (x0 >= x1 || y0 >= y1) {
        sp__fill_bg(rgb, stride, w, h, bg);
        return true;
    }
    if (x0 > x || y0 > y || x1 < x + w || y1 < y + h)
        sp__fill_bg(rgb, stride, w, h, bg);
    const sp__strips *st = r->v->lv[level].strips;
    if (st) {
        if (!r->str[level] && !(r->str[level] = sp__strips_reader_create(st))) {
            r->failed = true;
            return sp_error_set(err, SP_ERR_NOMEM, path, "out of memory");
        }
        uint8_t *dst = rgb + (size_t)(y0 - y) * stride + (size_t)(x0 - x) * 3;
        if (sp__strips_read(r->str[level], x0, y0, x1 - x0, y1 - y0, bg, dst,
                            stride, cause, sizeof cause))
            return true;
        r->failed = true;
        return sp_error_set(err, SP_ERR_INPUT, path,
                            "read failed at level %d (%lld,%lld %lldx%lld): %s",
                            level, (long long)x, (long long)y, (long long)w,
                            (long long)h, cause);
    }
    if (!r->reg[level] && !(r->reg[level] = vips_region_new(img))) {
        r->failed = true;
        return sp_error_set(err, SP_ERR_NOMEM, path, "out of memory");
    }
    VipsRegion *reg = r->reg[level];
    VipsRect rect = {(int)x0, (int)y0, (int)(x1 - x0), (int)(y1 - y0)};
    sp_capture_clear();
    if (vips_region_prepare(reg, &rect) != 0) {
        r->failed = true;
        return sp_error_set(
            err, SP_ERR_INPUT, path,
            "read failed at level %d (%lld,%lld %lldx%lld): %s%s", level,
            (long long)x, (long long)y, (long long)w, (long long)h,
            vips_cause(cause, sizeof cause),
            sp__libtiff_cause(path, tcause, sizeof tcause));
    }
    int bands = img->Bands;
    for (int64_t yy = y0; yy < y1; yy++) {
        const uint8_t *src =
            (const uint8_t *)VIPS_REGION_ADDR(reg, (int)x0, (int)yy);
        uint8_t *dst = rgb + (size_t)(yy - y) * stride + (size_t)(x0 - x) * 3;
        int64_t n = x1 - x0;
        if (bands == 3) {
            memcpy(dst, src, (size_t)n * 3);
            continue;
        }
        sp__rgba_over(src, n, bg, dst);
    }
    return true;
}
