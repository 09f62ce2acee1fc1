/* The catalogue: the slides `slidepipe serve` was given, under ids
 * assigned at startup, with their pyramids, sidecars, feature files,
 * reader pools and the browser assets, all found and validated once. */
#include "viewer_private.h"

#include <json-c/json.h>

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "store.h"

#ifndef SP_VIEWER_DIR
#define SP_VIEWER_DIR "viewer"
#endif

#define MAX_SIDECAR (64u << 20)
#define MAX_ASSET (16u << 20)
#define MAX_FEATURE_VALUES (INT64_C(64) << 20)

/* ---- small file helpers ------------------------------------------------ */

static bool is_regular(const char *path) {
    struct stat st;
    return lstat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* Read a whole regular file (no symlink as the last component). */
static char *slurp(const char *path, size_t max, size_t *n, sp_error *err) {
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        sp_error_errno(err, SP_ERR_INPUT, path, errno, "cannot open");
        return NULL;
    }
    struct stat st;
    char *buf = NULL;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) ||
        (size_t)st.st_size > max) {
        sp_error_set(err, SP_ERR_INPUT, path,
                     "not a regular file of at most "
                     "%zu bytes",
                     max);
        goto out;
    }
    buf = malloc((size_t)st.st_size + 1);
    if (!buf) {
        sp_error_set(err, SP_ERR_NOMEM, path, "out of memory");
        goto out;
    }
    size_t got = 0;
    while (got < (size_t)st.st_size) {
        ssize_t k = read(fd, buf + got, (size_t)st.st_size - got);
        if (k <= 0) {
            sp_error_errno(err, SP_ERR_INPUT, path, k < 0 ? errno : EIO,
                           "cannot read");
            free(buf);
            buf = NULL;
            goto out;
        }
        got += (size_t)k;
    }
    buf[got] = '\0';
    *n = got;
out:
    close(fd);
    return buf;
}

static char *cat(const char *a, const char *b) {
    size_t n = strlen(a) + strlen(b) + 1;
    char *s = malloc(n);
    if (s)
        snprintf(s, n, "%s%s", a, b);
    return s;
}

static char *strip_ext(const char *path) {
    const char *base = sp_basename(path), *dot = strrchr(base, '.');
    size_t n = dot && dot != base ? (size_t)(dot - path) : strlen(path);
    char *s = malloc(n + 1);
    if (s) {
        memcpy(s, path, n);
        s[n] = '\0';
    }
    return s;
}

static bool has_slide_ext(const char *name) {
    static const char *const exts[] = {".svs",     ".tif", ".tiff", ".ndpi",
                                       ".vms",     ".vmu", ".scn",  ".mrxs",
                                       ".svslide", ".bif", NULL};
    const char *dot = strrchr(name, '.');
    if (!dot)
        return false;
    for (int i = 0; exts[i]; i++)
        if (strcasecmp(dot, exts[i]) == 0)
            return true;
    return false;
}

static void stat_hash(uint64_t *h, const char *path) {
    struct stat st;
    if (path) {
        *h = sp__fnv1a(*h, path, strlen(path));
        if (stat(path, &st) == 0) {
            int64_t v[3] = {(int64_t)st.st_size, (int64_t)st.st_mtime,
                            (int64_t)st.st_mtim.tv_nsec};
            *h = sp__fnv1a(*h, v, sizeof v);
        }
    }
}

/* ---- assets ------------------------------------------------------------ */

static bool load_assets(sp_catalog *c, sp_error *err) {
    const char *dir = c->opts.asset_dir ? c->opts.asset_dir : SP_VIEWER_DIR;
    for (int i = 0; sp__viewer_assets[i]; i++) {
        const char *name = sp__viewer_assets[i];
        char path[4096];
        if (strcmp(name, "openseadragon.min.js") == 0)
            snprintf(path, sizeof path,
                     "%s/node_modules/openseadragon/build/openseadragon/%s",
                     dir, name);
        else
            snprintf(path, sizeof path, "%s/static/%s", dir, name);
        sp_vasset *a = &c->assets[c->nassets];
        sp_error e = {0};
        a->data = slurp(path, MAX_ASSET, &a->size, &e);
        if (!a->data) {
            if (strcmp(name, "openseadragon.min.js") == 0)
                return sp_error_set(err, SP_ERR_INPUT, path,
                                    "OpenSeadragon is not installed (run "
                                    "scripts/install-deps.sh, or npm ci in "
                                    "viewer/): %s",
                                    e.msg);
            *err = e;
            return false;
        }
        a->name = name;
        const char *dot = strrchr(name, '.');
        a->type = strcmp(dot, ".css") == 0 ? "text/css; charset=utf-8"
                                           : "text/javascript; charset=utf-8";
        uint64_t h = sp__fnv1a(SP_FNV_SEED, a->data, a->size);
        snprintf(a->version, sizeof a->version, "%016llx",
                 (unsigned long long)h);
        a->etag[0] = '"';
        memcpy(a->etag + 1, a->version, 16);
        a->etag[17] = '"';
        a->etag[18] = '\0';
        c->nassets++;
    }
    return true;
}

const sp_vasset *sp__catalog_asset(const sp_catalog *c, const char *name) {
    for (size_t i = 0; i < c->nassets; i++)
        if (strcmp(c->assets[i].name, name) == 0)
            return &c->assets[i];
    return NULL;
}

/* ---- slides ------------------------------------------------------------ */

static void slide_free(sp_vslide *s) {
    if (!s)
        return;
    for (int i = 0; i < s->nidle; i++)
        sp_reader_free(s->idle[i]);
    sp_tile_overview_free(s->ov);
    sp_slide_close(s->slide);
    for (int i = 0; i < SP_VIEWER_MAX_LEVELS; i++) {
        if (s->level_fd[i] >= 0)
            close(s->level_fd[i]);
        free(s->manifest[i]);
    }
    for (int i = 0; i < s->ncols; i++)
        free(s->columns[i]);
    free(s->columns);
    if (s->feat) {
        for (int i = 0; i < s->feat->ncols; i++)
            free(s->feat->columns[i]);
        free(s->feat->columns);
        free(s->feat->xy);
        free(s->feat->vals);
        free(s->feat->vmin);
        free(s->feat->vmax);
        free(s->feat);
    }
    free(s->name);
    free(s->slide_path);
    free(s->dzi_path);
    free(s->h5_path);
    free(s->vendor);
    free(s->quickhash);
    free(s);
}

static bool xml_attr(const char *xml, const char *name, char *out,
                     size_t outn) {
    char pat[64];
    snprintf(pat, sizeof pat, " %s=\"", name);
    const char *p = strstr(xml, pat);
    if (!p) {
        snprintf(pat, sizeof pat, "\n%s=\"", name);
        p = strstr(xml, pat);
    }
    if (!p)
        return false;
    p += strlen(pat);
    const char *q = strchr(p, '"');
    if (!q || (size_t)(q - p) >= outn)
        return false;
    memcpy(out, p, (size_t)(q - p));
    out[q - p] = '\0';
    return true;
}

static bool xml_int(const char *xml, const char *name, int64_t *v) {
    char buf[32];
    return xml_attr(xml, name, buf, sizeof buf) && sp_parse_int64(buf, v);
}

/* The pyramid X.dzi: geometry from the .dzi, level folders opened (no
 * symbolic links), the sidecar's parameters, metadata and manifest. */
/* json-c accessors that accept NULL and wrong types (absent = default) */
static struct json_object *jget(struct json_object *o, const char *key) {
    struct json_object *v = NULL;
    if (!json_object_is_type(o, json_type_object) ||
        !json_object_object_get_ex(o, key, &v))
        return NULL;
    return v;
}

static const char *jstr(struct json_object *v) {
    return json_object_is_type(v, json_type_string) ? json_object_get_string(v)
                                                    : NULL;
}

static double jnum(struct json_object *v, double dflt) {
    return json_object_is_type(v, json_type_double) ||
                   json_object_is_type(v, json_type_int)
               ? json_object_get_double(v)
               : dflt;
}

static bool load_pyramid(sp_vslide *s, const char *dzi, const char *json,
                         sp_error *err) {
    size_t n;
    char *xml = slurp(dzi, 1 << 20, &n, err);
    if (!xml)
        return false;
    int64_t ts, ov, w, h;
    char fmt[16];
    bool ok = xml_int(xml, "TileSize", &ts) && xml_int(xml, "Overlap", &ov) &&
              xml_int(xml, "Width", &w) && xml_int(xml, "Height", &h) &&
              xml_attr(xml, "Format", fmt, sizeof fmt);
    free(xml);
    if (!ok || ts < 1 || ts > 8192 || ov < 0 || ov > ts / 2 || w < 1 || h < 1 ||
        w > (INT64_C(1) << 31) || h > (INT64_C(1) << 31))
        return sp_error_set(err, SP_ERR_INPUT, dzi,
                            "not a Deep Zoom descriptor slidepipe can serve");
    sp_tile_format f;
    if (!sp_tile_format_parse(fmt, &f) ||
        strcmp(sp_tile_format_ext(f), fmt) != 0)
        return sp_error_set(err, SP_ERR_INPUT, dzi,
                            "unsupported tile format '%s'", fmt);
    s->dzi_path = strdup(dzi);
    s->width = w;
    s->height = h;
    s->topts.tile_size = (int)ts;
    s->topts.overlap = (int)ov;
    s->topts.format = f;
    s->dz_levels = sp_tile_dz_level_count(w, h);
    if (s->dz_levels > SP_VIEWER_MAX_LEVELS)
        return sp_error_set(err, SP_ERR_INPUT, dzi, "too many levels");
    size_t dn = strlen(dzi) - 4;
    char files[4096];
    snprintf(files, sizeof files, "%.*s_files", (int)dn, dzi);
    int dfd = open(files, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (dfd < 0)
        return sp_error_errno(err, SP_ERR_INPUT, files, errno,
                              "cannot open the tile folder");
    for (int l = 0; l < s->dz_levels; l++) {
        char name[16];
        snprintf(name, sizeof name, "%d", l);
        s->level_fd[l] =
            openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    }
    close(dfd);

    /* the sidecar is optional (a vips pyramid has none) */
    if (!json || !is_regular(json))
        return true;
    char *text = slurp(json, MAX_SIDECAR, &n, err);
    if (!text)
        return false;
    struct json_tokener *tok = json_tokener_new();
    struct json_object *root =
        tok ? json_tokener_parse_ex(tok, text, (int)n) : NULL;
    bool parsed = tok && json_tokener_get_error(tok) == json_tokener_success;
    if (tok)
        json_tokener_free(tok);
    free(text);
    if (!parsed || !json_object_is_type(root, json_type_object)) {
        json_object_put(root);
        return sp_error_set(err, SP_ERR_INPUT, json, "malformed JSON");
    }
    struct json_object *src = jget(root, "source");
    const char *v = jstr(jget(src, "vendor"));
    if (v && !s->vendor)
        s->vendor = strdup(v);
    v = jstr(jget(src, "quickhash"));
    if (v && !s->quickhash)
        s->quickhash = strdup(v);
    double d = jnum(jget(src, "mpp_x"), NAN);
    if (isnan(s->mpp_x) && d > 0)
        s->mpp_x = d;
    d = jnum(jget(src, "mpp_y"), NAN);
    if (isnan(s->mpp_y) && d > 0)
        s->mpp_y = d;
    d = jnum(jget(src, "objective_power"), NAN);
    if (isnan(s->objective_power) && d > 0)
        s->objective_power = d;
    struct json_object *prm = jget(root, "parameters");
    d = jnum(jget(prm, "quality"), 75);
    if (d >= 1 && d <= 100)
        s->topts.quality = (int)d;
    struct json_object *bg = jget(prm, "background");
    if (json_object_is_type(bg, json_type_array) &&
        json_object_array_length(bg) == 3)
        for (int k = 0; k < 3; k++) {
            double c = jnum(json_object_array_get_idx(bg, (size_t)k), 255);
            s->topts.background[k] = (uint8_t)(c >= 0 && c <= 255 ? c : 255);
        }
    struct json_object *lv = jget(root, "levels");
    size_t nlv = json_object_is_type(lv, json_type_array)
                     ? json_object_array_length(lv)
                     : 0;
    for (size_t i = 0; i < nlv; i++) {
        struct json_object *L = json_object_array_get_idx(lv, i);
        double li = jnum(jget(L, "level"), -1);
        struct json_object *tiles = jget(L, "tiles");
        sp_tile_rect t;
        if (!(li >= 0 && li < s->dz_levels) ||
            !json_object_is_type(tiles, json_type_array) ||
            !sp_tile_dz_geometry(w, h, (int)ts, (int)ov, (int)li, 0, 0, &t) ||
            (int64_t)json_object_array_length(tiles) != t.rows)
            continue;
        /* the rows must spell every tile before memory is given to them:
         * a short sidecar must not make it allocate cols x rows bytes
         * (a seed of fuzz/fuzz_dzi.c) */
        bool good = true;
        for (int64_t r = 0; r < t.rows && good; r++) {
            const char *row = jstr(json_object_array_get_idx(tiles, (size_t)r));
            good = row && (int64_t)strlen(row) == t.cols;
        }
        if (!good)
            continue;
        int l = (int)li;
        uint8_t *m = calloc((size_t)(t.cols * t.rows), 1);
        if (!m)
            break;
        for (int64_t r = 0; r < t.rows && good; r++) {
            const char *row = jstr(json_object_array_get_idx(tiles, (size_t)r));
            if (!row || (int64_t)strlen(row) != t.cols)
                good = false;
            for (int64_t cc = 0; good && cc < t.cols; cc++)
                m[r * t.cols + cc] = row[cc] == '1';
        }
        if (good) {
            free(s->manifest[l]);
            s->manifest[l] = m;
            s->mcols[l] = t.cols;
            s->mrows[l] = t.rows;
        } else {
            free(m);
        }
    }
    json_object_put(root);
    return true;
}

/* Column names and the tissue area from the HDF5 file (one thread). */
static bool load_h5_meta(sp_catalog *c, sp_vslide *s, sp_error *err) {
    sp_store_reader *r = NULL;
    pthread_mutex_lock(&c->h5_lock);
    bool ok = sp_store_open(s->h5_path, &r, err);
    if (ok && sp_store_reader_kind(r) != SP_STORE_SLIDE)
        ok = sp_error_set(err, SP_ERR_INPUT, s->h5_path,
                          "a cohort file, not a slide file");
    if (ok) {
        const sp_store_meta *m = sp_store_reader_meta(r);
        s->columns = calloc(m->n_columns + 1, sizeof *s->columns);
        for (size_t i = 0; s->columns && i < m->n_columns; i++)
            if ((s->columns[i] = strdup(m->columns[i])))
                s->ncols++;
        for (size_t i = 0; i < sp_store_summary_count(r); i++) {
            const char *name;
            double v;
            if (sp_store_summary_at(r, i, &name, &v) &&
                strcmp(name, "tissue_area_mm2") == 0)
                s->tissue_area_mm2 = v;
        }
        if (!s->vendor && m->vendor)
            s->vendor = strdup(m->vendor);
        if (isnan(s->mpp_x) && m->mpp_x > 0)
            s->mpp_x = m->mpp_x;
        if (isnan(s->mpp_y) && m->mpp_y > 0)
            s->mpp_y = m->mpp_y;
        if (!s->width) {
            s->width = m->width;
            s->height = m->height;
        }
    }
    sp_store_close(r);
    pthread_mutex_unlock(&c->h5_lock);
    return ok;
}

static void make_id(sp_catalog *c, const char *want, char *id) {
    char base[SP_ROUTE_ID_MAX + 1];
    size_t n = 0;
    for (const char *p = want; *p && n < 56; p++) {
        char ch = *p;
        bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                  (ch >= '0' && ch <= '9') || ch == '_' || ch == '-';
        base[n++] = ok ? ch : '_';
    }
    base[n] = '\0';
    if (n == 0)
        strcpy(base, "slide");
    if (base[0] == '-')
        base[0] = '_';
    snprintf(id, SP_ROUTE_ID_MAX + 1, "%s", base);
    for (int k = 2; sp__catalog_find(c, id); k++)
        snprintf(id, SP_ROUTE_ID_MAX + 1, "%.52s-%d", base, k);
}

/* Add one slide: a slide file and/or a pyramid, optional features. */
static bool add_slide(sp_catalog *c, const char *id_hint, const char *name,
                      const char *slide_path, const char *dzi, const char *json,
                      const char *h5, sp_error *err) {
    sp_vslide *s = calloc(1, sizeof *s);
    if (!s)
        return sp_error_set(err, SP_ERR_NOMEM, name, "out of memory");
    for (int i = 0; i < SP_VIEWER_MAX_LEVELS; i++)
        s->level_fd[i] = -1;
    s->mpp_x = s->mpp_y = s->objective_power = s->tissue_area_mm2 = NAN;
    sp_tile_opts_default(&s->topts);
    s->topts.tile_size = 254;
    s->name = strdup(name);
    bool ok = false;
    if (slide_path) {
        if (!sp_slide_open(slide_path, true, &s->slide, err))
            goto out;
        s->slide_path = strdup(slide_path);
        const sp_level *l0 = sp_slide_level(s->slide, 0);
        s->width = l0->width;
        s->height = l0->height;
        s->dz_levels = sp_tile_dz_level_count(s->width, s->height);
        s->vendor = strdup(sp_slide_vendor(s->slide));
        const char *qh = sp_slide_quickhash(s->slide);
        s->quickhash = qh ? strdup(qh) : NULL;
        double mx, my, pw;
        if (sp_slide_mpp(s->slide, &mx, &my)) {
            s->mpp_x = mx;
            s->mpp_y = my;
        }
        if (sp_slide_objective_power(s->slide, &pw))
            s->objective_power = pw;
    }
    if (dzi && !load_pyramid(s, dzi, json, err))
        goto out;
    if (slide_path && dzi) {
        const sp_level *l0 = sp_slide_level(s->slide, 0);
        if (l0->width != s->width || l0->height != s->height) {
            sp_error_set(err, SP_ERR_INPUT, dzi,
                         "pyramid size %lldx%lld differs from the slide's "
                         "%lldx%lld",
                         (long long)s->width, (long long)s->height,
                         (long long)l0->width, (long long)l0->height);
            goto out;
        }
    }
    if (h5) {
        s->h5_path = strdup(h5);
        if (!load_h5_meta(c, s, err))
            goto out;
    }
    if (!s->width || !s->dz_levels) {
        sp_error_set(err, SP_ERR_INPUT, name, "nothing to show");
        goto out;
    }
    s->ext = sp_tile_format_ext(s->topts.format);
    s->ov_level = -1;
    if (s->slide)
        sp__fly_plan(c, s);
    make_id(c, id_hint, s->id);
    uint64_t h = sp__fnv1a(SP_FNV_SEED, s->id, strlen(s->id));
    stat_hash(&h, s->slide_path);
    stat_hash(&h, s->dzi_path);
    stat_hash(&h, json);
    stat_hash(&h, s->h5_path);
    int par[4] = {s->topts.tile_size, s->topts.overlap, s->topts.quality,
                  (int)s->topts.format};
    h = sp__fnv1a(h, par, sizeof par);
    h = sp__fnv1a(h, s->topts.background, 3);
    snprintf(s->version, sizeof s->version, "%016llx", (unsigned long long)h);
    if (!s->name || (s->slide_path == NULL) != (slide_path == NULL) ||
        (s->h5_path == NULL) != (h5 == NULL)) {
        sp_error_set(err, SP_ERR_NOMEM, name, "out of memory");
        goto out;
    }
    if (c->n == c->cap) {
        size_t cap = c->cap ? 2 * c->cap : 16;
        sp_vslide **p = realloc(c->slides, cap * sizeof *p);
        if (!p) {
            sp_error_set(err, SP_ERR_NOMEM, name, "out of memory");
            goto out;
        }
        c->slides = p;
        c->cap = cap;
    }
    c->slides[c->n++] = s;
    ok = true;
out:
    if (!ok)
        slide_free(s);
    return ok;
}

static char *sibling(const char *stem, const char *suffix) {
    char *p = cat(stem, suffix);
    if (p && !is_regular(p)) {
        free(p);
        p = NULL;
    }
    return p;
}

static bool add_slide_file(sp_catalog *c, const char *path, sp_error *err) {
    char *stem = strip_ext(path);
    if (!stem)
        return sp_error_set(err, SP_ERR_NOMEM, path, "out of memory");
    char *dzi = sibling(stem, ".dzi"), *json = NULL;
    if (dzi)
        json = sibling(stem, ".json");
    char *h5 = sibling(stem, ".h5");
    const char *base = sp_basename(stem);
    bool ok = add_slide(c, base, sp_basename(path), path, dzi, json, h5, err);
    free(stem);
    free(dzi);
    free(json);
    free(h5);
    return ok;
}

static bool add_dzi_file(sp_catalog *c, const char *path, sp_error *err) {
    char *stem = strip_ext(path);
    if (!stem)
        return sp_error_set(err, SP_ERR_NOMEM, path, "out of memory");
    char *json = sibling(stem, ".json"), *h5 = sibling(stem, ".h5");
    bool ok = add_slide(c, sp_basename(stem), sp_basename(path), NULL, path,
                        json, h5, err);
    free(stem);
    free(json);
    free(h5);
    return ok;
}

static bool add_batch_dir(sp_catalog *c, const char *dir, const char *id,
                          sp_error *err) {
    char *dzi = cat(dir, "/slide.dzi"), *json = cat(dir, "/slide.json"),
         *h5 = cat(dir, "/slide.h5");
    bool ok = dzi && json && h5;
    if (!ok)
        sp_error_set(err, SP_ERR_NOMEM, dir, "out of memory");
    else
        ok = add_slide(c, id, id, NULL, dzi, is_regular(json) ? json : NULL,
                       is_regular(h5) ? h5 : NULL, err);
    free(dzi);
    free(json);
    free(h5);
    return ok;
}

static void warn(sp_catalog *c, const sp_error *e) {
    char **w = realloc(c->warnings, (c->nwarn + 1) * sizeof *w);
    if (!w)
        return;
    c->warnings = w;
    if ((c->warnings[c->nwarn] = strdup(e->msg)))
        c->nwarn++;
}

static bool scan_dir(sp_catalog *c, const char *dir, sp_error *err) {
    size_t n = 0;
    char **names = sp_dir_names(dir, &n);
    if (!names)
        return errno == ENOMEM
                   ? sp_error_set(err, SP_ERR_NOMEM, dir, "out of memory")
                   : sp_error_errno(err, SP_ERR_INPUT, dir, errno,
                                    "cannot read the folder");
    bool ok = true;
    /* pass 0: batch folders and slide files; pass 1: pyramids not already
     * served as a slide's sibling */
    for (int pass = 0; pass < 2 && ok; pass++)
        for (size_t i = 0; i < n && ok; i++) {
            char *p = sp_path_join(dir, names[i]);
            if (!p) {
                ok = sp_error_set(err, SP_ERR_NOMEM, dir, "out of memory");
                break;
            }
            struct stat st;
            sp_error e2 = {0};
            bool added = true;
            if (lstat(p, &st) != 0 || S_ISLNK(st.st_mode)) {
                /* symbolic links are never followed out of a folder */
            } else if (pass == 0 && S_ISDIR(st.st_mode)) {
                char *sd = cat(p, "/slide.dzi");
                if (sd && is_regular(sd))
                    added = add_batch_dir(c, p, names[i], &e2);
                free(sd);
            } else if (pass == 0 && S_ISREG(st.st_mode) &&
                       has_slide_ext(names[i])) {
                added = add_slide_file(c, p, &e2);
            } else if (pass == 1 && S_ISREG(st.st_mode) &&
                       strlen(names[i]) > 4 &&
                       strcmp(names[i] + strlen(names[i]) - 4, ".dzi") == 0) {
                bool claimed = false;
                for (size_t k = 0; k < c->n && !claimed; k++)
                    claimed = c->slides[k]->dzi_path &&
                              strcmp(c->slides[k]->dzi_path, p) == 0;
                if (!claimed)
                    added = add_dzi_file(c, p, &e2);
            }
            if (!added) {
                if (e2.code == SP_ERR_NOMEM) {
                    *err = e2;
                    ok = false;
                } else {
                    warn(c, &e2);
                }
            }
            free(p);
        }
    sp_free_names(names, n);
    return ok;
}

bool sp_catalog_open(const char *const *inputs, size_t n,
                     const sp_catalog_opts *opts, sp_catalog **out,
                     sp_error *err) {
    *out = NULL;
    sp_catalog *c = calloc(1, sizeof *c);
    if (!c)
        return sp_error_set(err, SP_ERR_NOMEM, NULL, "out of memory");
    if (opts)
        c->opts = *opts;
    pthread_mutex_init(&c->h5_lock, NULL);
    pthread_mutex_init(&c->rd_mu, NULL);
    pthread_cond_init(&c->rd_cv, NULL);
    pthread_mutex_init(&c->ov_mu, NULL);
    pthread_cond_init(&c->ov_cv, NULL);
    int cores = sp_default_threads();
    c->rd_max = c->opts.readers > 0 ? c->opts.readers : cores + 1;
    if (c->rd_max > SP_VIEWER_MAX_READERS)
        c->rd_max = SP_VIEWER_MAX_READERS;
    c->ov_max = c->opts.overviews > 0 ? c->opts.overviews : 2;
    c->ov_pixels = c->opts.overview_pixels > 0 ? c->opts.overview_pixels
                                               : INT64_C(16) << 20;
    c->ov_threads =
        c->opts.overview_threads > 0 ? c->opts.overview_threads : cores;
    size_t cb = c->opts.cache_bytes ? c->opts.cache_bytes : (size_t)256 << 20;
    c->cache = sp__tile_cache_new(cb);
    if (!c->cache) {
        sp_error_set(err, SP_ERR_NOMEM, NULL, "out of memory");
        goto fail;
    }
    if (!load_assets(c, err))
        goto fail;
    for (size_t i = 0; i < n; i++) {
        const char *in = inputs[i];
        size_t len = strlen(in);
        struct stat st;
        if (stat(in, &st) != 0) {
            sp_error_errno(err, SP_ERR_INPUT, in, errno, "cannot open");
            goto fail;
        }
        bool ok;
        if (S_ISDIR(st.st_mode)) {
            char *sd = cat(in, "/slide.dzi");
            if (sd && is_regular(sd)) {
                char *stem = strdup(in);
                while (stem && strlen(stem) > 1 &&
                       stem[strlen(stem) - 1] == '/')
                    stem[strlen(stem) - 1] = '\0';
                ok = stem && add_batch_dir(c, in, sp_basename(stem), err);
                free(stem);
            } else {
                ok = scan_dir(c, in, err);
            }
            free(sd);
        } else if (len > 4 && strcmp(in + len - 4, ".dzi") == 0) {
            ok = add_dzi_file(c, in, err);
        } else {
            ok = add_slide_file(c, in, err);
        }
        if (!ok)
            goto fail;
    }
    if (c->n == 0) {
        sp_error_set(err, SP_ERR_INPUT, n ? inputs[0] : NULL,
                     "no slides or pyramids to serve");
        goto fail;
    }
    *out = c;
    return true;
fail:
    sp_catalog_close(c);
    return false;
}

void sp_catalog_close(sp_catalog *c) {
    if (!c)
        return;
    for (size_t i = 0; i < c->n; i++)
        slide_free(c->slides[i]);
    free(c->slides);
    for (size_t i = 0; i < c->nwarn; i++)
        free(c->warnings[i]);
    free(c->warnings);
    for (size_t i = 0; i < c->nassets; i++)
        free(c->assets[i].data);
    sp__tile_cache_free(c->cache);
    pthread_mutex_destroy(&c->h5_lock);
    pthread_mutex_destroy(&c->rd_mu);
    pthread_cond_destroy(&c->rd_cv);
    pthread_mutex_destroy(&c->ov_mu);
    pthread_cond_destroy(&c->ov_cv);
    free(c);
}

size_t sp_catalog_count(const sp_catalog *c) { return c->n; }
const char *sp_catalog_id(const sp_catalog *c, size_t i) {
    return i < c->n ? c->slides[i]->id : NULL;
}
const char *sp_catalog_name(const sp_catalog *c, size_t i) {
    return i < c->n ? c->slides[i]->name : NULL;
}
size_t sp_catalog_warning_count(const sp_catalog *c) { return c->nwarn; }
const char *sp_catalog_warning(const sp_catalog *c, size_t i) {
    return i < c->nwarn ? c->warnings[i] : NULL;
}

sp_vslide *sp__catalog_find(const sp_catalog *c, const char *id) {
    for (size_t i = 0; i < c->n; i++)
        if (strcmp(c->slides[i]->id, id) == 0)
            return c->slides[i];
    return NULL;
}

/* ---- readers ----------------------------------------------------------- */

sp_reader *sp__slide_reader_get(sp_catalog *c, sp_vslide *s, sp_error *err) {
    pthread_mutex_lock(&c->rd_mu);
    for (;;) {
        if (s->nidle > 0) {
            sp_reader *r = s->idle[--s->nidle];
            pthread_mutex_unlock(&c->rd_mu);
            return r;
        }
        if (c->rd_open < c->rd_max)
            break;
        /* all open: close an idle reader of another slide, else wait */
        sp_vslide *v = NULL;
        for (size_t i = 0; i < c->n && !v; i++)
            if (c->slides[i]->nidle > 0)
                v = c->slides[i];
        if (!v) {
            pthread_cond_wait(&c->rd_cv, &c->rd_mu);
            continue;
        }
        sp_reader *r = v->idle[--v->nidle];
        v->nmade--;
        c->rd_open--;
        pthread_mutex_unlock(&c->rd_mu);
        sp_reader_free(r);
        pthread_mutex_lock(&c->rd_mu);
    }
    c->rd_open++;
    s->nmade++;
    pthread_mutex_unlock(&c->rd_mu);
    /* opened outside the lock: a private OpenSlide handle per reader */
    sp_reader *r = sp_reader_create(s->slide, SP_READER_PRIVATE_HANDLE,
                                    s->topts.background, err);
    if (!r) {
        pthread_mutex_lock(&c->rd_mu);
        s->nmade--;
        c->rd_open--;
        pthread_cond_broadcast(&c->rd_cv);
        pthread_mutex_unlock(&c->rd_mu);
    }
    return r;
}

void sp__slide_reader_put(sp_catalog *c, sp_vslide *s, sp_reader *r,
                          bool spent) {
    pthread_mutex_lock(&c->rd_mu);
    if (spent || s->nidle >= SP_VIEWER_MAX_READERS) {
        s->nmade--;
        c->rd_open--;
        pthread_cond_broadcast(&c->rd_cv);
        pthread_mutex_unlock(&c->rd_mu);
        sp_reader_free(r);
        return;
    }
    s->idle[s->nidle++] = r;
    pthread_cond_broadcast(&c->rd_cv);
    pthread_mutex_unlock(&c->rd_mu);
}

/* ---- features ---------------------------------------------------------- */

static sp_vfeatures *read_features(sp_store_reader *r, char *why, size_t whyn) {
    sp_error e = {0};
    const sp_store_meta *m = sp_store_reader_meta(r);
    int64_t n = sp_store_row_count(r);
    int nc = (int)m->n_columns;
    if (n < 0 || (n > 0 && (int64_t)nc * n > MAX_FEATURE_VALUES) ||
        n > MAX_FEATURE_VALUES) {
        snprintf(why, whyn, "too many tiles to serve (%lld)", (long long)n);
        return NULL;
    }
    sp_vfeatures *f = calloc(1, sizeof *f);
    if (!f)
        goto oom;
    f->n = n;
    f->extent =
        (double)m->patch_size * (m->downsample >= 1 ? m->downsample : 1.0);
    f->columns = calloc((size_t)nc + 1, sizeof *f->columns);
    f->xy = malloc((size_t)(n ? n : 1) * 2 * sizeof *f->xy);
    f->vals =
        malloc((size_t)(n ? n : 1) * (size_t)(nc ? nc : 1) * sizeof *f->vals);
    f->vmin = malloc((size_t)(nc ? nc : 1) * sizeof *f->vmin);
    f->vmax = malloc((size_t)(nc ? nc : 1) * sizeof *f->vmax);
    if (!f->columns || !f->xy || !f->vals || !f->vmin || !f->vmax)
        goto oom;
    for (int i = 0; i < nc; i++) {
        if (!(f->columns[i] = strdup(m->columns[i])))
            goto oom;
        f->ncols++;
    }
    if (n > 0 && !sp_store_read_coords(r, 0, (size_t)n, f->xy, &e))
        goto fail;
    for (int i = 0; i < nc; i++) {
        float *col = f->vals + (size_t)i * (size_t)n;
        if (n > 0 && !sp_store_read_column(r, i, 0, (size_t)n, col, &e))
            goto fail;
        float lo = NAN, hi = NAN;
        for (int64_t k = 0; k < n; k++)
            if (isfinite(col[k])) {
                if (!(col[k] >= lo))
                    lo = col[k];
                if (!(col[k] <= hi))
                    hi = col[k];
            }
        f->vmin[i] = lo;
        f->vmax[i] = hi;
    }
    return f;
oom:
    snprintf(why, whyn, "out of memory");
    goto out;
fail:
    snprintf(why, whyn, "%.200s", e.msg);
out:
    if (f) {
        for (int i = 0; i < f->ncols; i++)
            free(f->columns[i]);
        free(f->columns);
        free(f->xy);
        free(f->vals);
        free(f->vmin);
        free(f->vmax);
        free(f);
    }
    return NULL;
}

const sp_vfeatures *sp__slide_features(sp_catalog *c, sp_vslide *s) {
    if (!s->h5_path)
        return NULL;
    pthread_mutex_lock(&c->h5_lock);
    if (!s->feat_tried) {
        s->feat_tried = true;
        sp_store_reader *r = NULL;
        sp_error e = {0};
        if (sp_store_open(s->h5_path, &r, &e))
            s->feat = read_features(r, s->feat_error, sizeof s->feat_error);
        else
            snprintf(s->feat_error, sizeof s->feat_error, "%.200s", e.msg);
        sp_store_close(r);
    }
    sp_vfeatures *f = s->feat;
    pthread_mutex_unlock(&c->h5_lock);
    return f;
}

/* ---- associated images ------------------------------------------------- */

bool sp__slide_associated_png(sp_vslide *s, const char *name, sp_buf *out,
                              sp_error *err) {
    if (!s->slide)
        return sp_error_set(err, SP_ERR_INPUT, s->name, "no %s image", name);
    for (int i = 0; i < sp_slide_associated_count(s->slide); i++) {
        const sp_associated *a = sp_slide_associated_at(s->slide, i);
        if (strcmp(a->name, name) != 0)
            continue;
        if (a->width < 1 || a->height < 1 || a->width > 16384 ||
            a->height > 16384)
            return sp_error_set(err, SP_ERR_INPUT, s->name,
                                "%s image too large", name);
        uint8_t *rgb = malloc((size_t)(a->width * a->height * 3));
        if (!rgb)
            return sp_error_set(err, SP_ERR_NOMEM, s->name, "out of memory");
        static const uint8_t white[3] = {255, 255, 255};
        bool ok = sp_slide_read_associated(s->slide, name, rgb, white, err) &&
                  sp_tile_encode(SP_TILE_PNG, 75, rgb, (int)a->width,
                                 (int)a->height, a->width * 3, out, err);
        free(rgb);
        return ok;
    }
    return sp_error_set(err, SP_ERR_INPUT, s->name, "no %s image", name);
}
