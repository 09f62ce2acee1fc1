/* All or nothing: each output of the slide job is built under a hidden
 * name and they are renamed into place together. */
#include "pipeline_private.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Every output of a run is completed under a hidden name and renamed into
 * place with the others at the end (sp__staging_commit), so that a failure in
 * any of them leaves none at a final path. */

void sp__staging_free(sp__staging *g) {
    for (int i = 0; i < g->n; i++) {
        free(g->final[i]);
        free(g->stage[i]);
    }
    free(g->tiles_stem);
    free(g->tiles_stage_stem);
    free(g->tiles_stage_out);
    memset(g, 0, sizeof *g);
    g->main_tiles = -1;
}

/* Record final path `fin` (copied) staged at `stg` (taken). */
static bool stage_add(sp__staging *g, const char *fin, char *stg, bool is_dir) {
    char *f = fin ? strdup(fin) : NULL;
    if (!f || !stg || g->n == SP__MAX_STAGED) {
        free(f);
        free(stg);
        return false;
    }
    g->final[g->n] = f;
    g->stage[g->n] = stg;
    g->is_dir[g->n] = is_dir;
    g->n++;
    return true;
}

/* The names (tiler's sp_pyramid_names): the pyramid OUT (+ .dzi or
 * .tiff/.tif) is built as <dir>/.<OUT>.tmp-<pid> with the same extension,
 * so its .json and _files follow; the HDF5 file and the PNG are built at
 * their sp_temp_sibling names. False when out of memory. */
bool sp__staging_plan(const sp_run_opts *o, sp__staging *g) {
    memset(g, 0, sizeof *g);
    g->main_tiles = -1;
    if (o->what & SP_RUN_TILES) {
        const sp_container ct = o->tile.container;
        const char *given = sp_pyramid_ext(o->tiles_out, ct);
        sp_pyramid_names fin = {0}, stg = {0};
        bool ok = sp_pyramid_names_of(&fin, o->tiles_out, ct);
        g->tiles_stem = ok ? strdup(fin.stem) : NULL;
        g->tiles_stage_stem =
            g->tiles_stem ? sp_temp_sibling(g->tiles_stem) : NULL;
        ok = g->tiles_stage_stem &&
             sp_pyramid_names_init(&stg, g->tiles_stage_stem, ct, given);
        g->tiles_stage_out = ok ? strdup(given[0] ? stg.main : stg.stem) : NULL;
        ok = g->tiles_stage_out &&
             stage_add(g, fin.sidecar, strdup(stg.sidecar), false) &&
             (!fin.files || stage_add(g, fin.files, strdup(stg.files), true)) &&
             stage_add(g, fin.main, strdup(stg.main),
                       ct == SP_CONTAINER_DICOM); /* OUT.dicom/ */
        if (ok)
            g->main_tiles = g->n - 1;
        sp_pyramid_names_free(&fin);
        sp_pyramid_names_free(&stg);
        if (!ok)
            return false;
    }
    if (o->what & SP_RUN_FEATURES) {
        if (!stage_add(g, o->features_out, sp_temp_sibling(o->features_out),
                       false))
            return false;
        g->h5_stage = g->stage[g->n - 1];
        if (o->mask_png) {
            if (!stage_add(g, o->mask_png, sp_temp_sibling(o->mask_png), false))
                return false;
            g->png_stage = g->stage[g->n - 1];
        }
    }
    return true;
}

/* Remove every staged output (after a failure). */
void sp__staging_remove(const sp__staging *g) {
    for (int i = 0; i < g->n; i++)
        sp_remove_tree(g->stage[i], NULL);
}

/* Error messages name the final paths, never the staged ones: replace
 * every staged name in err->msg (longest first, so the pyramid's stem
 * comes after the names built on it). */
void sp__unstage_msg(const sp__staging *g, sp_error *err) {
    if (!err || !sp_error_is_set(err))
        return;
    const char *from[SP__MAX_STAGED + 1], *to[SP__MAX_STAGED + 1];
    int k = 0;
    for (int i = 0; i < g->n; i++) {
        from[k] = g->stage[i];
        to[k++] = g->final[i];
    }
    if (g->tiles_stage_stem) {
        from[k] = g->tiles_stage_stem;
        to[k++] = g->tiles_stem;
    }
    for (int i = 0; i < k; i++)
        for (int j = i + 1; j < k; j++)
            if (strlen(from[j]) > strlen(from[i])) {
                const char *t = from[i];
                from[i] = from[j];
                from[j] = t;
                t = to[i];
                to[i] = to[j];
                to[j] = t;
            }
    sp_buf b;
    sp_buf_init(&b);
    for (const char *p = err->msg; *p;) {
        int hit = -1;
        for (int i = 0; i < k && hit < 0; i++)
            if (strncmp(p, from[i], strlen(from[i])) == 0)
                hit = i;
        if (hit >= 0) {
            sp_buf_puts(&b, to[hit]);
            p += strlen(from[hit]);
        } else {
            sp_buf_append(&b, p++, 1);
        }
    }
    if (!b.oom && b.data)
        snprintf(err->msg, sizeof err->msg, "%s", b.data);
    sp_buf_free(&b);
}

/* Remove the leftovers of dead runs in `fin`'s folder: entries named
 * ".<base>.tmp-<pid>..." (more leading dots: the writers' own temporaries
 * of staged names) whose process is gone. */
static void clean_stale_of(const char *fin) {
    const char *base = sp_basename(fin);
    size_t dirlen = (size_t)(base - fin), n = strlen(base);
    char *dir = dirlen ? strndup(fin, dirlen) : strdup(".");
    DIR *d = dir ? opendir(dir) : NULL;
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL) {
        const char *nm = e->d_name;
        if (nm[0] != '.')
            continue;
        while (*nm == '.')
            nm++;
        if (strncmp(nm, base, n) != 0 || strncmp(nm + n, ".tmp-", 5) != 0)
            continue;
        char *end = NULL;
        long pid = strtol(nm + n + 5, &end, 10);
        if (pid <= 0 || end == nm + n + 5)
            continue;
        if (pid != (long)getpid() &&
            !(kill((pid_t)pid, 0) != 0 && errno == ESRCH))
            continue;
        char *path = sp_path_join(dir, e->d_name);
        if (path)
            sp_remove_tree(path, NULL);
        free(path);
    }
    if (d)
        closedir(d);
    free(dir);
}

void sp__staging_clean_stale(const sp_run_opts *o, const sp__staging *g) {
    if (g->tiles_stem)
        clean_stale_of(g->tiles_stem);
    if (o->what & SP_RUN_FEATURES) {
        clean_stale_of(o->features_out);
        if (o->mask_png)
            clean_stale_of(o->mask_png);
    }
}

/* Rename every staged output into place, the .dzi/.tiff last (an old one
 * is removed first: it stops looking complete before it is replaced).
 * When one fails, the ones already renamed are removed, and with `force`
 * the old outputs not yet replaced as well: none is left. */
bool sp__staging_commit(const sp__staging *g, bool force, sp_error *err) {
    bool done[SP__MAX_STAGED] = {false};
    int failed = -1, e = 0;
    const char *what = "cannot rename into place";
    if (g->main_tiles >= 0 && sp_path_exists(g->final[g->main_tiles]) &&
        remove(g->final[g->main_tiles]) != 0) {
        e = errno;
        failed = g->main_tiles;
        what = "cannot replace";
    }
    for (int pass = 0; pass < 2 && failed < 0; pass++)
        for (int i = 0; i < g->n && failed < 0; i++) {
            if ((i == g->main_tiles) != (pass == 1))
                continue;
            if (g->is_dir[i] && sp_path_exists(g->final[i]) &&
                !sp_remove_tree(g->final[i], err)) {
                failed = i;
                break;
            }
            if (rename(g->stage[i], g->final[i]) != 0) {
                e = errno; /* saved before any cleanup call */
                failed = i;
                break;
            }
            done[i] = true;
        }
    if (failed < 0)
        return true;
    for (int i = 0; i < g->n; i++)
        if (done[i] || force)
            sp_remove_tree(g->final[i], NULL);
    if (e)
        sp_error_errno(err, SP_ERR_OUTPUT, g->final[failed], e, what);
    return false;
}
