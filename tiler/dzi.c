/* Deep Zoom writer: OUT.dzi + OUT_files/<level>/<col>_<row>.<ext>, plus
 * OUT.json (names from layout.c). Built as hidden temporaries, renamed at
 * the end, OUT.dzi last (so a pyramid without its .dzi is never a
 * finished one). pyramid_read.c reads the descriptor back. */
#include "tiler_private.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

struct sp__writer {
    sp_pyramid *p;
    sp_pyramid_names fin; /* final names: main (.dzi), files, sidecar */
    char *tmp_dzi, *tmp_files, *tmp_json;
    const char *ext;
    int nlevels;
};

static void dzi_free(sp__writer *w) {
    sp_pyramid_names_free(&w->fin);
    free(w->tmp_dzi);
    free(w->tmp_files);
    free(w->tmp_json);
    free(w);
}

static void dzi_abort(sp__writer *w) {
    if (!w)
        return;
    if (w->tmp_files)
        sp_remove_tree(w->tmp_files, NULL);
    if (w->tmp_dzi)
        remove(w->tmp_dzi);
    if (w->tmp_json)
        remove(w->tmp_json);
    dzi_free(w);
}

static sp__writer *dzi_open(sp_pyramid *p, sp_error *err) {
    const char *out = sp__pyramid_output(p);
    sp__writer *w = calloc(1, sizeof *w);
    if (!w) {
        sp_error_set(err, SP_ERR_NOMEM, out, "out of memory");
        return NULL;
    }
    w->p = p;
    w->ext = p->codec->name;
    w->nlevels = p->nlevels;
    if (!sp_pyramid_names_of(&w->fin, out, SP_CONTAINER_DZI))
        goto oom;
    if (!p->prm.opts.force && sp_path_exists(w->fin.main)) {
        sp_error_set(err, SP_ERR_OUTPUT, w->fin.main,
                     "already exists (use --force to replace it)");
        goto fail;
    }
    sp__tiler_clean_stale(w->fin.files);
    sp__tiler_clean_stale(w->fin.main);
    sp__tiler_clean_stale(w->fin.sidecar);
    w->tmp_dzi = sp__tiler_temp_name(w->fin.main);
    w->tmp_files = sp__tiler_temp_name(w->fin.files);
    w->tmp_json = sp__tiler_temp_name(w->fin.sidecar);
    p->final_main = strdup(w->fin.main);
    if (!w->tmp_dzi || !w->tmp_files || !w->tmp_json || !p->final_main)
        goto oom;
    if (mkdir(w->tmp_files, 0777) != 0) {
        sp_error_errno(err, SP_ERR_OUTPUT, w->fin.files, errno,
                       "cannot create");
        free(w->tmp_files);
        w->tmp_files = NULL; /* not ours: do not remove it */
        goto fail;
    }
    for (int k = 0; k < w->nlevels; k++) {
        char dir[64];
        size_t n = strlen(w->tmp_files) + sizeof dir;
        char *path = malloc(n);
        if (!path)
            goto oom;
        snprintf(dir, sizeof dir, "/%d", k);
        snprintf(path, n, "%s%s", w->tmp_files, dir);
        int rc = mkdir(path, 0777);
        int e = errno;
        free(path);
        if (rc != 0) {
            sp_error_errno(err, SP_ERR_OUTPUT, w->fin.files, e,
                           "cannot create level directory");
            goto fail;
        }
    }
    return w;
oom:
    sp_error_set(err, SP_ERR_NOMEM, out, "out of memory");
fail:
    dzi_abort(w);
    return NULL;
}

/* Write `tmp`, an error naming `final` (the file the user will look for;
 * the temporary is gone by the time the message is read). */
static bool write_as(const char *tmp, const char *final, const uint8_t *data,
                     size_t n, sp_error *err) {
    sp_error e = {0};
    if (sp__write_file(tmp, data, n, &e))
        return true;
    size_t k = strlen(tmp);
    const char *cause =
        strncmp(e.msg, tmp, k) == 0 && e.msg[k] == ':' ? e.msg + k + 2 : e.msg;
    return sp_error_set(err, e.code, final, "%s", cause);
}

static bool dzi_put(sp__writer *w, int t, int d, int64_t col, int64_t row,
                    const uint8_t *data, size_t n, sp_error *err) {
    (void)t; /* a file per tile: no shared spool */
    char name[64], path[4096];
    sp_pyramid_tile_name(name, sizeof name, col, row, w->ext);
    int k = snprintf(path, sizeof path, "%s/%d/%s", w->tmp_files,
                     w->nlevels - 1 - d, name);
    if (k < 0 || (size_t)k >= sizeof path)
        return sp_error_set(err, SP_ERR_OUTPUT, w->fin.files, "path too long");
    char fin[4096]; /* the name errors give */
    snprintf(fin, sizeof fin, "%s/%d/%s", w->fin.files, w->nlevels - 1 - d,
             name);
    return write_as(path, fin, data, n, err);
}

static bool dzi_finish(sp__writer *w, const char *sidecar, size_t sidecar_n,
                       sp_error *err) {
    const sp_pyramid *p = w->p;
    char xml[1024];
    int n = snprintf(
        xml, sizeof xml,
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
        "<Image xmlns=\"http://schemas.microsoft.com/deepzoom/2008\"\n"
        "  Format=\"%s\"\n"
        "  Overlap=\"%d\"\n"
        "  TileSize=\"%d\"\n"
        "  >\n"
        "  <Size \n"
        "    Height=\"%lld\"\n"
        "    Width=\"%lld\"\n"
        "  />\n"
        "</Image>\n",
        w->ext, p->O, p->T, (long long)p->prm.height, (long long)p->prm.width);
    if (!write_as(w->tmp_dzi, w->fin.main, (const uint8_t *)xml, (size_t)n,
                  err) ||
        !write_as(w->tmp_json, w->fin.sidecar, (const uint8_t *)sidecar,
                  sidecar_n, err))
        goto fail;
    /* an old pyramid stops looking complete before it is replaced */
    if (sp_path_exists(w->fin.main) && remove(w->fin.main) != 0) {
        sp_error_errno(err, SP_ERR_OUTPUT, w->fin.main, errno,
                       "cannot replace");
        goto fail;
    }
    if (sp_path_exists(w->fin.files) && !sp_remove_tree(w->fin.files, err))
        goto fail;
    if (rename(w->tmp_files, w->fin.files) != 0) {
        sp_error_errno(err, SP_ERR_OUTPUT, w->fin.files, errno,
                       "cannot rename");
        goto fail;
    }
    free(w->tmp_files);
    w->tmp_files = NULL;
    if (rename(w->tmp_json, w->fin.sidecar) != 0) {
        sp_error_errno(err, SP_ERR_OUTPUT, w->fin.sidecar, errno,
                       "cannot rename");
        sp_remove_tree(w->fin.files, NULL);
        goto fail;
    }
    free(w->tmp_json);
    w->tmp_json = NULL;
    if (rename(w->tmp_dzi, w->fin.main) != 0) {
        sp_error_errno(err, SP_ERR_OUTPUT, w->fin.main, errno, "cannot rename");
        sp_remove_tree(w->fin.files, NULL);
        remove(w->fin.sidecar);
        goto fail;
    }
    free(w->tmp_dzi);
    w->tmp_dzi = NULL;
    dzi_free(w);
    return true;
fail:
    dzi_abort(w);
    return false;
}

const sp__writer_ops sp__dzi_writer = {
    .name = "dzi",
    .open = dzi_open,
    .put = dzi_put,
    .finish = dzi_finish,
    .abort = dzi_abort,
};
