/* The catalogue: the slides `slidepipe serve` was given, each under an id
 * assigned at startup, mapped to its sources (a slide file, a pre-built
 * pyramid with its sidecar, a feature file), all found and validated
 * once. Reading those sources is other files' job: tiler/ reads the
 * pyramid's descriptor and sidecar, features.c the HDF5 file, assets.c
 * the browser assets; readers.c pools the slide readers. */
#include "viewer_private.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static bool is_regular(const char *path) {
    struct stat st;
    return lstat(path, &st) == 0 && S_ISREG(st.st_mode);
}

static char *cat(const char *a, const char *b) {
    size_t n = strlen(a) + strlen(b) + 1;
    char *s = malloc(n);
    if (s)
        snprintf(s, n, "%s%s", a, b);
    return s;
}

/* The path without the last extension of its file name; an OME-TIFF
 * pyramid X.ome.tiff (`run --container ome-tiff`) without both, so that
 * the features X.h5 beside it are found. */
static char *strip_ext(const char *path) {
    const char *base = sp_basename(path), *dot = strrchr(base, '.');
    const char *ome = sp_pyramid_ext(base, SP_CONTAINER_OME_TIFF);
    size_t n = *ome                 ? strlen(path) - strlen(ome)
               : dot && dot != base ? (size_t)(dot - path)
                                    : strlen(path);
    char *s = malloc(n + 1);
    if (s) {
        memcpy(s, path, n);
        s[n] = '\0';
    }
    return s;
}

static void stat_hash(uint64_t *h, const char *path) {
    struct stat st;
    if (path) {
        *h = sp_fnv1a(*h, path, strlen(path));
        if (stat(path, &st) == 0) {
            int64_t v[3] = {(int64_t)st.st_size, (int64_t)st.st_mtime,
                            (int64_t)st.st_mtim.tv_nsec};
            *h = sp_fnv1a(*h, v, sizeof v);
        }
    }
}

/* ---- slides ------------------------------------------------------------ */

static void slide_free(sp_vslide *s) {
    if (!s)
        return;
    sp__slide_readers_free(s);
    sp_tile_overview_free(s->ov);
    sp_slide_close(s->slide);
    for (int i = 0; i < SP_VIEWER_MAX_LEVELS; i++) {
        if (s->level_fd[i] >= 0)
            close(s->level_fd[i]);
        free(s->manifest[i]);
    }
    sp__slide_features_free(s);
    free(s->name);
    free(s->slide_path);
    free(s->dzi_path);
    free(s->h5_path);
    free(s->vendor);
    free(s->quickhash);
    free(s);
}

/* What the sidecar says, where the slide itself said nothing. */
static void take_sidecar(sp_vslide *s, sp_sidecar *sc) {
    if (!s->vendor) {
        s->vendor = sc->vendor;
        sc->vendor = NULL;
    }
    if (!s->quickhash) {
        s->quickhash = sc->quickhash;
        sc->quickhash = NULL;
    }
    if (isnan(s->mpp_x))
        s->mpp_x = sc->mpp_x;
    if (isnan(s->mpp_y))
        s->mpp_y = sc->mpp_y;
    if (isnan(s->objective_power))
        s->objective_power = sc->objective_power;
    if (sc->quality)
        s->topts.quality = sc->quality;
    if (sc->has_background)
        memcpy(s->topts.background, sc->background, 3);
    for (int l = 0; l < sc->levels && l < SP_VIEWER_MAX_LEVELS; l++) {
        sp_manifest_level *m = &sc->manifest[l];
        if (!m->tiles)
            continue;
        free(s->manifest[l]);
        s->manifest[l] = m->tiles;
        s->mcols[l] = m->cols;
        s->mrows[l] = m->rows;
        m->tiles = NULL;
    }
}

/* The pyramid X.dzi: geometry from the descriptor, the level folders of
 * X_files opened (no symbolic links), then what the sidecar `json`
 * (optional: a vips pyramid has none) says. */
static bool load_pyramid(sp_vslide *s, const char *dzi, const char *json,
                         sp_error *err) {
    sp_dzi_info d;
    if (!sp_dzi_read(dzi, &d, err))
        return false;
    s->dzi_path = strdup(dzi);
    s->width = d.width;
    s->height = d.height;
    s->topts.tile_size = d.tile_size;
    s->topts.overlap = d.overlap;
    s->topts.format = d.format;
    s->dz_levels = d.levels;
    if (s->dz_levels > SP_VIEWER_MAX_LEVELS)
        return sp_error_set(err, SP_ERR_INPUT, dzi, "too many levels");
    sp_pyramid_names pn;
    if (!sp_pyramid_names_of(&pn, dzi, SP_CONTAINER_DZI))
        return sp_error_set(err, SP_ERR_NOMEM, dzi, "out of memory");
    int dfd = open(pn.files, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (dfd < 0) {
        sp_error_errno(err, SP_ERR_INPUT, pn.files, errno,
                       "cannot open the tile folder");
        sp_pyramid_names_free(&pn);
        return false;
    }
    sp_pyramid_names_free(&pn);
    for (int l = 0; l < s->dz_levels; l++) {
        char name[16];
        snprintf(name, sizeof name, "%d", l);
        s->level_fd[l] =
            openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    }
    close(dfd);

    if (!json || !is_regular(json))
        return true;
    sp_sidecar sc;
    if (!sp_sidecar_read(json, &d, &sc, err))
        return false;
    take_sidecar(s, &sc);
    sp_sidecar_free(&sc);
    return true;
}

/* The id of a slide, from `want` (sp_slide_id of its file, or the name of
 * a batch output folder), narrowed to the URL grammar's ids (routes.c:
 * [A-Za-z0-9_-], no leading '-'; at most 56 bytes, so "-<k>" fits after
 * it), then "-2", "-3"... after it while taken. */
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
/* `found`: the slide file was found by a folder scan, where the slide
 * size rule holds (ingest.h); a file named by the user is shown at any
 * size. */
static bool add_slide(sp_catalog *c, const char *id_hint, const char *name,
                      const char *slide_path, bool found, const char *dzi,
                      const char *json, const char *h5, sp_error *err) {
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
        if (found && !sp_slide_size_rule_ok(s->slide)) {
            /* a small image found in a folder: not a slide (ingest.h) */
            slide_free(s);
            return true;
        }
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
        if (!sp__slide_features_meta(c, s, err))
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
    uint64_t h = sp_fnv1a(SP_FNV_SEED, s->id, strlen(s->id));
    stat_hash(&h, s->slide_path);
    stat_hash(&h, s->dzi_path);
    stat_hash(&h, json);
    stat_hash(&h, s->h5_path);
    int par[4] = {s->topts.tile_size, s->topts.overlap, s->topts.quality,
                  (int)s->topts.format};
    h = sp_fnv1a(h, par, sizeof par);
    h = sp_fnv1a(h, s->topts.background, 3);
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

/* stem + suffix when that is a regular file, else NULL. */
static char *sibling(const char *stem, const char *suffix) {
    char *p = cat(stem, suffix);
    if (p && !is_regular(p)) {
        free(p);
        p = NULL;
    }
    return p;
}

/* A slide file X.svs, with the pyramid X.dzi (and X.json) and the
 * features X.h5 beside it when they exist. */
static bool add_slide_file(sp_catalog *c, const char *path, bool found,
                           sp_error *err) {
    char *stem = strip_ext(path), *id = sp_slide_id(path);
    sp_pyramid_names pn = {0};
    if (!stem || !id ||
        !sp_pyramid_names_init(&pn, stem, SP_CONTAINER_DZI, NULL)) {
        free(stem);
        free(id);
        return sp_error_set(err, SP_ERR_NOMEM, path, "out of memory");
    }
    const char *dzi = is_regular(pn.main) ? pn.main : NULL;
    const char *json = dzi && is_regular(pn.sidecar) ? pn.sidecar : NULL;
    char *h5 = sibling(stem, ".h5");
    bool ok =
        add_slide(c, id, sp_basename(path), path, found, dzi, json, h5, err);
    sp_pyramid_names_free(&pn);
    free(stem);
    free(id);
    free(h5);
    return ok;
}

/* A pyramid X.dzi alone, with X.json and X.h5 when they exist. */
static bool add_dzi_file(sp_catalog *c, const char *path, sp_error *err) {
    char *id = sp_slide_id(path);
    sp_pyramid_names pn = {0};
    if (!id || !sp_pyramid_names_of(&pn, path, SP_CONTAINER_DZI)) {
        free(id);
        return sp_error_set(err, SP_ERR_NOMEM, path, "out of memory");
    }
    const char *json = is_regular(pn.sidecar) ? pn.sidecar : NULL;
    char *h5 = sibling(pn.stem, ".h5");
    bool ok =
        add_slide(c, id, sp_basename(path), NULL, false, path, json, h5, err);
    sp_pyramid_names_free(&pn);
    free(id);
    free(h5);
    return ok;
}

/* The pyramid of a batch output folder (pipeline/batch.c): DIR/slide.dzi
 * with DIR/slide.json, and the features DIR/slide.h5. */
static bool batch_names(const char *dir, sp_pyramid_names *pn) {
    char *stem = cat(dir, "/slide");
    bool ok = stem && sp_pyramid_names_init(pn, stem, SP_CONTAINER_DZI, NULL);
    free(stem);
    return ok;
}

static bool is_batch_dir(const char *dir) {
    sp_pyramid_names pn;
    if (!batch_names(dir, &pn))
        return false;
    bool is = is_regular(pn.main);
    sp_pyramid_names_free(&pn);
    return is;
}

static bool add_batch_dir(sp_catalog *c, const char *dir, const char *id,
                          sp_error *err) {
    sp_pyramid_names pn = {0};
    char *h5 = NULL;
    bool ok = batch_names(dir, &pn) && (h5 = cat(pn.stem, ".h5"));
    if (!ok)
        sp_error_set(err, SP_ERR_NOMEM, dir, "out of memory");
    else
        ok = add_slide(c, id, id, NULL, false, pn.main,
                       is_regular(pn.sidecar) ? pn.sidecar : NULL,
                       is_regular(h5) ? h5 : NULL, err);
    sp_pyramid_names_free(&pn);
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
                if (is_batch_dir(p))
                    added = add_batch_dir(c, p, names[i], &e2);
                else if (sp_slide_is_series_dir(p)) /* a DICOM series */
                    added = add_slide_file(c, p, true, &e2);
            } else if (pass == 0 && S_ISREG(st.st_mode) &&
                       sp_slide_ext_kind(names[i]) != SP_EXT_OTHER) {
                added = add_slide_file(c, p, true, &e2);
            } else if (pass == 1 && S_ISREG(st.st_mode) &&
                       *sp_pyramid_ext(names[i], SP_CONTAINER_DZI)) {
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
    sp_dir_names_free(names, n);
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
    if (!sp__assets_load(c, err))
        goto fail;
    for (size_t i = 0; i < n; i++) {
        const char *in = inputs[i];
        struct stat st;
        if (stat(in, &st) != 0) {
            sp_error_errno(err, SP_ERR_INPUT, in, errno, "cannot open");
            goto fail;
        }
        bool ok;
        if (S_ISDIR(st.st_mode)) {
            if (is_batch_dir(in)) {
                char *stem = strdup(in);
                while (stem && strlen(stem) > 1 &&
                       stem[strlen(stem) - 1] == '/')
                    stem[strlen(stem) - 1] = '\0';
                ok = stem && add_batch_dir(c, in, sp_basename(stem), err);
                free(stem);
            } else if (sp_slide_is_series_dir(in)) {
                ok = add_slide_file(c, in, false, err); /* a DICOM series */
            } else {
                ok = scan_dir(c, in, err);
            }
        } else if (*sp_pyramid_ext(in, SP_CONTAINER_DZI)) {
            ok = add_dzi_file(c, in, err);
        } else {
            ok = add_slide_file(c, in, false, err);
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
    sp__assets_free(c);
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
