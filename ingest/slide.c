/* Opening a slide and describing it: levels, resolution, properties,
 * associated images. */
#include "ingest.h"
#include "ingest_private.h"

#include <errno.h>
#include <jconfig.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <tiffio.h>

#include <glib.h>

void sp_ingest_versions(sp_lib_versions *l) {
    sp_lib_versions_add(l, "OpenSlide", false, "%s", openslide_get_version());
    /* "LIBTIFF, Version 4.5.0\nCopyright ..." */
    const char *t = strstr(TIFFGetVersion(), "Version ");
    sp_lib_versions_add(l, "libtiff", false, "%.*s",
                        t ? (int)strcspn(t + 8, " \n") : 1, t ? t + 8 : "?");
    sp_lib_versions_add(l, "libjpeg-turbo", true, "%d.%d.%d",
                        LIBJPEG_TURBO_VERSION_NUMBER / 1000000,
                        LIBJPEG_TURBO_VERSION_NUMBER / 1000 % 1000,
                        LIBJPEG_TURBO_VERSION_NUMBER % 1000);
    sp_lib_versions_add(l, "GLib", false, "%u.%u.%u", glib_major_version,
                        glib_minor_version, glib_micro_version);
    sp_lib_versions_add(l, "DCMTK", true, "%s", sp__dicom_version());
    sp_lib_versions_add(l, "libvips", false, "%s", sp__vips_version());
}

/* OpenSlide reads TIFF-based formats through the process's libtiff, whose
 * default handlers print on stderr ("Raster width ... adapted",
 * "TIFFReadRawTile: Read error at row ..."). Library code must not print:
 * warnings are dropped, errors kept per thread (util's capture) so that
 * our message can quote libtiff's cause beside OpenSlide's. */
static pthread_once_t quiet_once = PTHREAD_ONCE_INIT;

/* OpenSlide 3.4.1 also trips GLib's checks on some malformed files
 * ("GLib-CRITICAL **: g_strchomp: assertion 'string != NULL' failed" from
 * an Aperio description field without '=') and GLib prints those on
 * stderr: they are captured too. GLib still aborts after a
 * G_LOG_LEVEL_ERROR, as before. */
static void glib_capture(const gchar *domain, GLogLevelFlags level,
                         const gchar *message, gpointer user) {
    (void)user;
    /* GLib's default handler does not print these either (libvips notes
     * its module loading so) */
    if (level & (G_LOG_LEVEL_INFO | G_LOG_LEVEL_DEBUG))
        return;
    sp_capture_text(domain, message);
}

void sp__quiet_handlers(void) {
    TIFFSetWarningHandler(NULL);
    TIFFSetErrorHandler(sp_capture_message);
    g_log_set_default_handler(glib_capture, NULL);
}

void sp_libtiff_quiet(void) { pthread_once(&quiet_once, sp__quiet_handlers); }

const char *sp__libtiff_cause(const char *path, char *buf, size_t n) {
    const char *m = sp_captured();
    if (!m)
        return "";
    size_t k = strlen(path);
    if (strncmp(m, path, k) == 0 && strncmp(m + k, ": ", 2) == 0)
        m += k + 2; /* libtiff names the file by its path: ours does */
    snprintf(buf, n, " (libtiff: %s)", m);
    return buf;
}

/* Check the path itself before OpenSlide sees it, so that the common
 * mistakes get a precise cause instead of "not recognised". */
static bool check_path(const char *path, sp_error *err) {
    struct stat st;
    if (stat(path, &st) != 0)
        return sp_error_errno(err, SP_ERR_INPUT, path, errno, "cannot open");
    if (S_ISDIR(st.st_mode))
        return sp_error_set(err, SP_ERR_INPUT, path,
                            "is a directory, not a slide file");
    if (!S_ISREG(st.st_mode))
        return sp_error_set(err, SP_ERR_INPUT, path, "not a regular file");
    if (st.st_size == 0)
        return sp_error_set(err, SP_ERR_INPUT, path, "empty file");
    FILE *f = fopen(path, "rb");
    if (!f)
        return sp_error_errno(err, SP_ERR_INPUT, path, errno, "cannot open");
    fclose(f);
    return true;
}

static bool parse_positive(const char *s, double *out) {
    double v;
    if (!sp_parse_double(s, &v) || !(v > 0))
        return false;
    *out = v;
    return true;
}

static bool load_levels(sp_slide *s, sp_error *err) {
    int32_t n = openslide_get_level_count(s->osr);
    if (n <= 0)
        return sp_error_set(err, SP_ERR_INPUT, s->path, "slide has no levels");
    s->levels = calloc((size_t)n, sizeof *s->levels);
    if (!s->levels)
        return sp_error_set(err, SP_ERR_NOMEM, s->path, "out of memory");
    s->level_count = n;
    for (int32_t i = 0; i < n; i++) {
        sp_level *l = &s->levels[i];
        openslide_get_level_dimensions(s->osr, i, &l->width, &l->height);
        l->downsample = openslide_get_level_downsample(s->osr, i);
        char key[64];
        int64_t v;
        snprintf(key, sizeof key, "openslide.level[%d].tile-width", (int)i);
        if (sp_parse_int64(openslide_get_property_value(s->osr, key), &v) &&
            v > 0)
            l->tile_width = v;
        snprintf(key, sizeof key, "openslide.level[%d].tile-height", (int)i);
        if (sp_parse_int64(openslide_get_property_value(s->osr, key), &v) &&
            v > 0)
            l->tile_height = v;
        if (l->width <= 0 || l->height <= 0 || !(l->downsample > 0))
            return sp_error_set(err, SP_ERR_INPUT, s->path,
                                "level %d has invalid dimensions", (int)i);
    }
    return true;
}

static bool load_properties(sp_slide *s, sp_error *err) {
    const char *const *names = openslide_get_property_names(s->osr);
    int n = 0;
    while (names && names[n])
        n++;
    s->props = calloc((size_t)n + 1, sizeof *s->props);
    if (!s->props)
        return sp_error_set(err, SP_ERR_NOMEM, s->path, "out of memory");
    for (int i = 0; i < n; i++) {
        s->props[i].name = names[i];
        const char *v = openslide_get_property_value(s->osr, names[i]);
        s->props[i].value = v ? v : "";
    }
    s->prop_count = n;

    s->has_mpp =
        parse_positive(sp_slide_property(s, "openslide.mpp-x"), &s->mpp_x) &&
        parse_positive(sp_slide_property(s, "openslide.mpp-y"), &s->mpp_y);
    s->has_objective = parse_positive(
        sp_slide_property(s, "openslide.objective-power"), &s->objective);
    s->quickhash = sp_slide_property(s, "openslide.quickhash-1");
    const char *vendor = sp_slide_property(s, "openslide.vendor");
    s->vendor = vendor ? vendor : "unknown";
    return true;
}

static bool load_associated(sp_slide *s, sp_error *err) {
    const char *const *names = openslide_get_associated_image_names(s->osr);
    int n = 0;
    while (names && names[n])
        n++;
    s->assoc = calloc((size_t)n + 1, sizeof *s->assoc);
    if (!s->assoc)
        return sp_error_set(err, SP_ERR_NOMEM, s->path, "out of memory");
    for (int i = 0; i < n; i++) {
        s->assoc[i].name = names[i];
        openslide_get_associated_image_dimensions(
            s->osr, names[i], &s->assoc[i].width, &s->assoc[i].height);
    }
    s->assoc_count = n;
    return true;
}

/* A small read of the lowest-resolution level: OpenSlide opens some damaged
 * files happily and fails only when pixels are decoded. */
static bool verify_readable(sp_slide *s, sp_error *err) {
    const sp_level *l = &s->levels[s->level_count - 1];
    int64_t w = l->width < 1024 ? l->width : 1024;
    int64_t h = l->height < 1024 ? l->height : 1024;
    int64_t x = (l->width - w) / 2, y = (l->height - h) / 2;
    uint32_t *buf = malloc((size_t)(w * h) * sizeof *buf);
    if (!buf)
        return sp_error_set(err, SP_ERR_NOMEM, s->path, "out of memory");
    sp_capture_clear();
    openslide_read_region(s->osr, buf, (int64_t)(x * l->downsample),
                          (int64_t)(y * l->downsample), s->level_count - 1, w,
                          h);
    free(buf);
    const char *e = openslide_get_error(s->osr);
    char cause[600];
    if (e)
        return sp_error_set(err, SP_ERR_INPUT, s->path,
                            "cannot read pixels: %s%s", e,
                            sp__libtiff_cause(s->path, cause, sizeof cause));
    return true;
}

/* A DICOM or libvips slide's check: a small read of its smallest level,
 * as verify_readable does through OpenSlide. */
static bool verify_reader(sp_slide *s, sp_error *err) {
    const sp_level *l = &s->levels[s->level_count - 1];
    int64_t w = l->width < 1024 ? l->width : 1024;
    int64_t h = l->height < 1024 ? l->height : 1024;
    int64_t x = (l->width - w) / 2, y = (l->height - h) / 2;
    uint8_t *buf = malloc((size_t)(w * h) * 3);
    sp_reader *r = buf ? sp_reader_create(s, 0, NULL, err) : NULL;
    bool ok =
        r && sp_reader_read(r, s->level_count - 1, (int64_t)(x * l->downsample),
                            (int64_t)(y * l->downsample), w, h, buf, err);
    if (!buf)
        sp_error_set(err, SP_ERR_NOMEM, s->path, "out of memory");
    sp_reader_free(r);
    free(buf);
    return ok;
}

bool sp_slide_open(const char *path, bool verify, sp_slide **out,
                   sp_error *err) {
    *out = NULL;
    sp_libtiff_quiet();
    /* a folder may be a DICOM series */
    struct stat dst;
    bool dicom_dir = stat(path, &dst) == 0 && S_ISDIR(dst.st_mode) &&
                     sp__dicom_candidate(path);
    if (!dicom_dir && !check_path(path, err))
        return false;
    sp_slide *s = calloc(1, sizeof *s);
    if (!s)
        return sp_error_set(err, SP_ERR_NOMEM, path, "out of memory");
    s->path = strdup(path);
    if (!s->path) {
        sp_error_set(err, SP_ERR_NOMEM, path, "out of memory");
        goto fail;
    }
    char cause[600];
    sp_capture_clear();
    /* OME-TIFF and SubIFD pyramids: libvips, though OpenSlide's
     * generic-tiff would open them (with neither levels nor mpp) */
    const char *os_vendor = dicom_dir ? NULL : openslide_detect_vendor(path);
    bool prefer_vips = os_vendor && strcmp(os_vendor, "generic-tiff") == 0 &&
                       sp__vips_prefer(path);
    sp_capture_clear();
    s->osr = dicom_dir || prefer_vips ? NULL : openslide_open(path);
    if (!s->osr && (dicom_dir || sp__dicom_candidate(path))) {
        /* OpenSlide 3.4.1 reads no DICOM: DCMTK does */
        if (!sp__dicom_open(s, path, err))
            goto fail;
        if (verify && !verify_reader(s, err))
            goto fail;
        *out = s;
        return true;
    }
    if (!s->osr && (prefer_vips || (sp_slide_ext_kind(path) != SP_EXT_SLIDE &&
                                    sp__vips_candidate(path)))) {
        /* not a slide: an image libvips reads (a .svs, .ndpi, ... that
         * OpenSlide does not open is a damaged slide, not an image) */
        if (!sp__vips_open(s, path, err))
            goto fail;
        if (verify && !verify_reader(s, err))
            goto fail;
        *out = s;
        return true;
    }
    if (!s->osr) {
        sp_error_set(err, SP_ERR_INPUT, path,
                     "not a slide format OpenSlide %s or an image format "
                     "libvips %s recognises%s",
                     openslide_get_version(), sp__vips_version(),
                     sp__libtiff_cause(path, cause, sizeof cause));
        goto fail;
    }
    const char *e = openslide_get_error(s->osr);
    if (e) {
        sp_error_set(err, SP_ERR_INPUT, path, "%s%s", e,
                     sp__libtiff_cause(path, cause, sizeof cause));
        goto fail;
    }
    if (!load_properties(s, err) || !load_levels(s, err) ||
        !load_associated(s, err))
        goto fail;
    if (verify && !verify_readable(s, err))
        goto fail;
    s->direct = sp__direct_probe(s);
    *out = s;
    return true;
fail:
    sp_slide_close(s);
    return false;
}

void sp_slide_close(sp_slide *s) {
    if (!s)
        return;
    sp__direct_free(s->direct);
    if (s->osr)
        openslide_close(s->osr);
    free(s->levels);
    if (!s->vips)
        free(s->props); /* a libvips image's are its own */
    free(s->assoc);
    sp__dicom_free(s->dicom); /* after: it owns the strings they point to */
    sp__vips_free(s->vips);
    free(s->path);
    free(s);
}

const char *sp_slide_path(const sp_slide *s) { return s->path; }
const char *sp_slide_vendor(const sp_slide *s) { return s->vendor; }
int sp_slide_level_count(const sp_slide *s) { return s->level_count; }

const sp_level *sp_slide_level(const sp_slide *s, int i) {
    return i >= 0 && i < s->level_count ? &s->levels[i] : NULL;
}

int sp_slide_best_level(const sp_slide *s, double downsample) {
    int best = 0;
    for (int i = 0; i < s->level_count; i++)
        if (s->levels[i].downsample <= downsample + 1e-6)
            best = i;
    return best;
}

bool sp_slide_mpp(const sp_slide *s, double *mpp_x, double *mpp_y) {
    if (!s->has_mpp)
        return false;
    if (mpp_x)
        *mpp_x = s->mpp_x;
    if (mpp_y)
        *mpp_y = s->mpp_y;
    return true;
}

bool sp_slide_objective_power(const sp_slide *s, double *power) {
    if (!s->has_objective)
        return false;
    if (power)
        *power = s->objective;
    return true;
}

const char *sp_slide_quickhash(const sp_slide *s) { return s->quickhash; }

bool sp_slide_has_direct_path(const sp_slide *s) { return s->direct != NULL; }

bool sp_slide_bounds(const sp_slide *s, int64_t *x, int64_t *y, int64_t *w,
                     int64_t *h) {
    int64_t v[4];
    static const char *const keys[4] = {
        "openslide.bounds-x", "openslide.bounds-y", "openslide.bounds-width",
        "openslide.bounds-height"};
    bool have = true;
    for (int i = 0; i < 4; i++)
        have = have && sp_parse_int64(sp_slide_property(s, keys[i]), &v[i]);
    if (!have || v[2] <= 0 || v[3] <= 0) {
        v[0] = v[1] = 0;
        v[2] = s->levels[0].width;
        v[3] = s->levels[0].height;
        have = false;
    }
    *x = v[0];
    *y = v[1];
    *w = v[2];
    *h = v[3];
    return have;
}

int sp_slide_property_count(const sp_slide *s) { return s->prop_count; }

const sp_property *sp_slide_property_at(const sp_slide *s, int i) {
    return i >= 0 && i < s->prop_count ? &s->props[i] : NULL;
}

const char *sp_slide_property(const sp_slide *s, const char *name) {
    for (int i = 0; i < s->prop_count; i++)
        if (strcmp(s->props[i].name, name) == 0)
            return s->props[i].value;
    return NULL;
}

int sp_slide_associated_count(const sp_slide *s) { return s->assoc_count; }

const sp_associated *sp_slide_associated_at(const sp_slide *s, int i) {
    return i >= 0 && i < s->assoc_count ? &s->assoc[i] : NULL;
}

bool sp_slide_read_associated(sp_slide *s, const char *name, uint8_t *rgb,
                              const uint8_t bg[3], sp_error *err) {
    const sp_associated *a = NULL;
    int index = -1;
    for (int i = 0; i < s->assoc_count; i++)
        if (strcmp(s->assoc[i].name, name) == 0) {
            a = &s->assoc[i];
            index = i;
        }
    if (!a)
        return sp_error_set(err, SP_ERR_USAGE, s->path,
                            "no associated image named '%s'", name);
    /* the sizes are the file's word: no more than 2^28 pixels (1 GiB of
     * ARGB; labels and macros are a few megapixels) */
    if (a->width < 1 || a->height < 1 || a->width > INT32_MAX ||
        a->height > INT32_MAX || a->width * a->height > SP_MAX_ASSOCIATED_PX)
        return sp_error_set(err, SP_ERR_INPUT, s->path,
                            "associated image '%s' claims %lldx%lld pixels "
                            "(at most 2^28 are read)",
                            name, (long long)a->width, (long long)a->height);
    size_t n = (size_t)(a->width * a->height);
    static const uint8_t white_bg[3] = {255, 255, 255};
    if (s->dicom)
        return sp__dicom_read_associated(s->dicom, index, bg ? bg : white_bg,
                                         rgb, s->path, err);
    uint32_t *argb = malloc(n * sizeof *argb);
    if (!argb)
        return sp_error_set(err, SP_ERR_NOMEM, s->path, "out of memory");
    sp_capture_clear();
    openslide_read_associated_image(s->osr, name, argb);
    const char *e = openslide_get_error(s->osr);
    if (e) {
        free(argb);
        char cause[600];
        return sp_error_set(err, SP_ERR_INPUT, s->path,
                            "cannot read associated image '%s': %s%s", name, e,
                            sp__libtiff_cause(s->path, cause, sizeof cause));
    }
    static const uint8_t white[3] = {255, 255, 255};
    sp__argb_to_rgb(argb, n, bg ? bg : white, rgb);
    free(argb);
    return true;
}

sp_ext_kind sp_slide_ext_kind(const char *name) {
    static const struct {
        const char *ext;
        sp_ext_kind kind;
    } exts[] = {{".svs", SP_EXT_SLIDE},     {".ndpi", SP_EXT_SLIDE},
                {".vms", SP_EXT_SLIDE},     {".vmu", SP_EXT_SLIDE},
                {".scn", SP_EXT_SLIDE},     {".mrxs", SP_EXT_SLIDE},
                {".svslide", SP_EXT_SLIDE}, {".bif", SP_EXT_SLIDE},
                {".tif", SP_EXT_IMAGE},     {".tiff", SP_EXT_IMAGE},
                {".jpg", SP_EXT_IMAGE},     {".jpeg", SP_EXT_IMAGE},
                {".png", SP_EXT_IMAGE},     {".webp", SP_EXT_IMAGE},
                {".jp2", SP_EXT_IMAGE}};
    const char *dot = strrchr(sp_basename(name), '.');
    if (!dot)
        return SP_EXT_OTHER;
    for (size_t i = 0; i < sizeof exts / sizeof exts[0]; i++)
        if (strcasecmp(dot, exts[i].ext) == 0)
            return exts[i].kind;
    return SP_EXT_OTHER;
}

bool sp_slide_not_a_slide(const char *path) {
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISREG(st.st_mode))
        return false;
    FILE *f = fopen(path, "rb");
    if (!f)
        return false;
    fclose(f);
    sp_libtiff_quiet();
    sp_capture_clear();
    return openslide_detect_vendor(path) == NULL &&
           !sp__dicom_candidate(path) && !sp__vips_candidate(path);
}

char *sp_slide_series_key(const char *path) {
    return sp__dicom_series_of(path);
}

bool sp_slide_is_series_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode) &&
           sp__dicom_candidate(path);
}

bool sp_slide_stored_tiles(const sp_slide *s, int level, sp_stored_tiles *out,
                           const char **why) {
    if (level < 0 || level >= s->level_count) {
        *why = "no such level";
        return false;
    }
    if (s->dicom)
        return sp__dicom_stored(s->dicom, level, out, why);
    if (!s->direct) {
        *why = "its tiles are not JPEG tiles of a TIFF-based slide or JPEG "
               "frames of a DICOM series";
        return false;
    }
    return sp__direct_stored(s->direct, level, out, why);
}

bool sp_slide_read_stored_tile(const sp_slide *s, int level, int64_t col,
                               int64_t row, sp_buf *out, sp_error *err) {
    if (level < 0 || level >= s->level_count)
        return sp_error_set(err, SP_ERR_USAGE, s->path, "no level %d", level);
    if (s->dicom)
        return sp__dicom_stored_tile(s->dicom, level, col, row, out, s->path,
                                     err);
    if (!s->direct)
        return sp_error_set(err, SP_ERR_USAGE, s->path,
                            "level %d's tiles cannot be copied", level);
    return sp__direct_stored_tile(s->direct, level, col, row, out, s->path,
                                  err);
}

bool sp_slide_size_rule_ok(const sp_slide *s) {
    if (strncmp(s->vendor, "vips:", 5) != 0)
        return true; /* OpenSlide's and DICOM slides are slides */
    const char *ome = sp_slide_property(s, "vips.ome-xml");
    const char *sub = sp_slide_property(s, "vips.n-subifds");
    bool pyramid =
        ((ome && strcmp(ome, "true") == 0) || (sub && strcmp(sub, "0") != 0)) &&
        s->level_count > 1;
    const sp_level *l0 = &s->levels[0];
    return pyramid || (l0->width > l0->height ? l0->width : l0->height) >=
                          SP_IMAGE_MIN_SIDE;
}
