/* The browser assets (viewer.js, viewer.css, OpenSeadragon), read once at
 * startup from the asset folder and served from memory under a content
 * hash (their version and ETag). The folder: the caller's (asset_dir)
 * alone; else the installed one beside the running binary
 * (<bin>/../share/slidepipe/viewer); else the source tree's viewer/. */
#include "viewer_private.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef SP_VIEWER_DIR
#define SP_VIEWER_DIR "viewer"
#endif
#ifndef SP_VIEWER_INSTALL_REL
#define SP_VIEWER_INSTALL_REL "../share/slidepipe/viewer"
#endif

#define MAX_ASSET (16u << 20)
#define OSD_NPM "node_modules/openseadragon/build/openseadragon"

/* The installed asset folder: SP_VIEWER_INSTALL_REL from the folder of
 * the running binary, its leading "../" folded in. False when
 * /proc/self/exe cannot be read. */
static bool installed_dir(char *out, size_t n) {
    ssize_t len = readlink("/proc/self/exe", out, n - 1);
    if (len <= 0 || (size_t)len >= n - 1)
        return false;
    out[len] = '\0';
    char *slash = strrchr(out, '/');
    if (!slash)
        return false;
    *slash = '\0';
    const char *rel = SP_VIEWER_INSTALL_REL;
    while (strncmp(rel, "../", 3) == 0 && (slash = strrchr(out, '/')) &&
           slash != out) {
        *slash = '\0';
        rel += 3;
    }
    int w = snprintf(out + strlen(out), n - strlen(out), "/%s", rel);
    return w > 0 && (size_t)w < n - strlen(out);
}

/* Read every asset of sp__viewer_assets from `dir` (static/NAME; for
 * OpenSeadragon npm's layout when static/ lacks it). All or nothing:
 * false with err naming the first file that failed. */
static bool load_dir(sp_catalog *c, const char *dir, sp_error *err) {
    for (int i = 0; sp__viewer_assets[i]; i++) {
        const char *name = sp__viewer_assets[i];
        char path[4096];
        snprintf(path, sizeof path, "%s/static/%s", dir, name);
        if (strcmp(name, "openseadragon.min.js") == 0 && !sp_path_exists(path))
            snprintf(path, sizeof path, "%s/" OSD_NPM "/%s", dir, name);
        sp_vasset *a = &c->assets[c->nassets];
        a->data = sp_read_file(path, MAX_ASSET, &a->size, err);
        if (!a->data) {
            sp__assets_free(c);
            return false;
        }
        a->name = name;
        const char *dot = strrchr(name, '.');
        a->type = strcmp(dot, ".css") == 0 ? "text/css; charset=utf-8"
                                           : "text/javascript; charset=utf-8";
        uint64_t h = sp_fnv1a(SP_FNV_SEED, a->data, a->size);
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

bool sp__assets_load(sp_catalog *c, sp_error *err) {
    if (c->opts.asset_dir) {
        sp_error e = {0};
        if (load_dir(c, c->opts.asset_dir, &e))
            return true;
        return sp_error_set(err, e.code, NULL,
                            "browser assets not found: %s (the asset folder "
                            "must hold static/viewer.js, static/viewer.css "
                            "and static/openseadragon.min.js)",
                            e.msg);
    }
    char installed[4096];
    const char *dirs[2];
    int ndirs = 0;
    if (installed_dir(installed, sizeof installed))
        dirs[ndirs++] = installed;
    dirs[ndirs++] = SP_VIEWER_DIR;
    sp_buf tried;
    sp_buf_init(&tried);
    for (int i = 0; i < ndirs; i++) {
        sp_error e = {0};
        if (load_dir(c, dirs[i], &e)) {
            sp_buf_free(&tried);
            return true;
        }
        sp_buf_printf(&tried, "%s%s", i ? "; " : "", e.msg);
    }
    sp_error_set(err, SP_ERR_INPUT, NULL,
                 "browser assets not found: %s. Install slidepipe with its "
                 "share/slidepipe/viewer folder (cmake --install), or in the "
                 "source tree run scripts/install-deps.sh (npm ci in viewer/)",
                 tried.data ? tried.data : "");
    sp_buf_free(&tried);
    return false;
}

void sp__assets_free(sp_catalog *c) {
    for (size_t i = 0; i < c->nassets; i++)
        free(c->assets[i].data);
    c->nassets = 0;
}

const sp_vasset *sp__catalog_asset(const sp_catalog *c, const char *name) {
    for (size_t i = 0; i < c->nassets; i++)
        if (strcmp(c->assets[i].name, name) == 0)
            return &c->assets[i];
    return NULL;
}
