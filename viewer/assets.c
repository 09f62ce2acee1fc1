/* The browser assets (viewer.js, viewer.css, OpenSeadragon), read once at
 * startup from the asset folder and served from memory under a content
 * hash (their version and ETag). */
#include "viewer_private.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef SP_VIEWER_DIR
#define SP_VIEWER_DIR "viewer"
#endif

#define MAX_ASSET (16u << 20)

bool sp__assets_load(sp_catalog *c, sp_error *err) {
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
        a->data = sp_read_file(path, MAX_ASSET, &a->size, &e);
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
