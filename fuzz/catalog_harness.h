/* Shared by fuzz_dzi.c and fuzz_sidecar.c: feed a Deep Zoom descriptor
 * (X.dzi) and its sidecar (X.json) to tiler's readers of them
 * (tiler/pyramid_read.c: sp_dzi_parse, sp_sidecar_parse) in memory, then
 * to the viewer's catalogue through its public entry point,
 * sp_catalog_open, exactly as `slidepipe serve X.dzi` does (which reads
 * them with sp_dzi_read and sp_sidecar_read), and render the slide's page
 * and JSON (which show what the sidecar said). A private folder holds
 * X_files/ with a few level folders and stand-in browser assets. */
#ifndef SP_FUZZ_CATALOG_HARNESS_H
#define SP_FUZZ_CATALOG_HARNESS_H

#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "viewer_private.h"

static char h_dir[64], h_dzi[128], h_json[128], h_assets[128];

static void h_write(const char *path, const void *data, size_t n) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0 || (n && write(fd, data, n) != (ssize_t)n))
        abort();
    close(fd);
}

static void h_mkdir(const char *a, const char *b) {
    char p[256];
    snprintf(p, sizeof p, "%s/%s", a, b);
    if (mkdir(p, 0700) != 0)
        abort();
}

static void h_cleanup(void) {
    /* the folder is small and fixed: remove what h_setup made */
    char p[256];
    static const char *const files[] = {
        "p.dzi",
        "p.json",
        "assets/static/viewer.js",
        "assets/static/viewer.css",
        "assets/node_modules/openseadragon/build/openseadragon/"
        "openseadragon.min.js",
        NULL};
    for (int i = 0; files[i]; i++) {
        snprintf(p, sizeof p, "%s/%s", h_dir, files[i]);
        unlink(p);
    }
    static const char *const dirs[] = {
        "p_files/0",
        "p_files/1",
        "p_files/2",
        "p_files/3",
        "p_files",
        "assets/node_modules/openseadragon/build/openseadragon",
        "assets/node_modules/openseadragon/build",
        "assets/node_modules/openseadragon",
        "assets/node_modules",
        "assets/static",
        "assets",
        NULL};
    for (int i = 0; dirs[i]; i++) {
        snprintf(p, sizeof p, "%s/%s", h_dir, dirs[i]);
        rmdir(p);
    }
    rmdir(h_dir);
}

static void h_setup(const char *name) {
    snprintf(h_dir, sizeof h_dir, "/tmp/sp-fuzz-%s-XXXXXX", name);
    if (!mkdtemp(h_dir))
        abort();
    snprintf(h_dzi, sizeof h_dzi, "%s/p.dzi", h_dir);
    snprintf(h_json, sizeof h_json, "%s/p.json", h_dir);
    snprintf(h_assets, sizeof h_assets, "%s/assets", h_dir);
    h_mkdir(h_dir, "p_files");
    h_mkdir(h_dir, "p_files/0");
    h_mkdir(h_dir, "p_files/1");
    h_mkdir(h_dir, "p_files/2");
    h_mkdir(h_dir, "p_files/3");
    h_mkdir(h_dir, "assets");
    h_mkdir(h_dir, "assets/static");
    h_mkdir(h_dir, "assets/node_modules");
    h_mkdir(h_dir, "assets/node_modules/openseadragon");
    h_mkdir(h_dir, "assets/node_modules/openseadragon/build");
    h_mkdir(h_dir, "assets/node_modules/openseadragon/build/openseadragon");
    char p[256];
    snprintf(p, sizeof p, "%s/static/viewer.js", h_assets);
    h_write(p, "/* js */", 8);
    snprintf(p, sizeof p, "%s/static/viewer.css", h_assets);
    h_write(p, "/* css */", 9);
    snprintf(p, sizeof p,
             "%s/node_modules/openseadragon/build/openseadragon/"
             "openseadragon.min.js",
             h_assets);
    h_write(p, "/* osd */", 9);
    atexit(h_cleanup);
}

/* The parsers alone: what they accept must hold their promises. */
static void h_parse(const void *dzi, size_t dzin, const void *json,
                    size_t jsonn) {
    char *xml = malloc(dzin + 1);
    if (!xml)
        abort();
    memcpy(xml, dzi, dzin);
    xml[dzin] = '\0';
    sp_dzi_info d;
    sp_error err = {0};
    bool ok = sp_dzi_parse(xml, "p.dzi", &d, &err);
    free(xml);
    if (!ok) {
        if (!sp_error_is_set(&err))
            abort();
        return;
    }
    if (d.width < 1 || d.height < 1 || d.tile_size < 1 || d.overlap < 0 ||
        d.levels != sp_tile_dz_level_count(d.width, d.height))
        abort();
    if (!json)
        return;
    sp_sidecar sc;
    if (!sp_sidecar_parse(json, jsonn, "p.json", &d, &sc, &err)) {
        if (!sp_error_is_set(&err))
            abort();
        return;
    }
    if (sc.levels != d.levels || sc.quality < 0 || sc.quality > 100)
        abort();
    for (int l = 0; l < sc.levels; l++)
        if (sc.manifest[l].tiles &&
            (sc.manifest[l].cols < 1 || sc.manifest[l].rows < 1))
            abort();
    sp_sidecar_free(&sc);
}

/* One input: parse it in memory, then write the two files (json NULL: no
 * sidecar), open, render. */
static void h_run(const void *dzi, size_t dzin, const void *json,
                  size_t jsonn) {
    h_parse(dzi, dzin, json, jsonn);
    h_write(h_dzi, dzi, dzin);
    if (json)
        h_write(h_json, json, jsonn);
    else
        unlink(h_json);
    sp_catalog_opts o = {
        .cache_bytes = 1 << 20, .readers = 1, .asset_dir = h_assets};
    const char *in[] = {h_dzi};
    sp_catalog *c = NULL;
    sp_error err = {0};
    if (!sp_catalog_open(in, 1, &o, &c, &err)) {
        if (!sp_error_is_set(&err) || c)
            abort();
        return;
    }
    if (sp_catalog_count(c) != 1)
        abort();
    const sp_vslide *s = sp__catalog_find(c, sp_catalog_id(c, 0));
    if (!s || s->width < 1 || s->height < 1 || s->dz_levels < 1 ||
        s->dz_levels > SP_VIEWER_MAX_LEVELS || s->topts.tile_size < 1)
        abort();
    for (int l = 0; l < SP_VIEWER_MAX_LEVELS; l++)
        if (s->manifest[l] && (s->mcols[l] < 1 || s->mrows[l] < 1))
            abort();
    sp_buf b;
    sp_buf_init(&b);
    sp__page_slide(c, s, &b);
    sp_buf_free(&b);
    sp_buf_init(&b);
    sp_json j;
    sp_json_init(&j, &b, false);
    sp__json_slide(c, s, &j);
    sp_buf_free(&b);
    sp_buf_init(&b);
    sp__page_index(c, &b);
    sp_buf_free(&b);
    sp_catalog_close(c);
}

#endif
