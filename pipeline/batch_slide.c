/* batch: the candidate list, each slide's strings and public view. */
#include "batch_private.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

void sp__set_str(char **dst, const char *s) {
    free(*dst);
    *dst = sp__strdup0(s);
}

void sp__bslide_sync(sp__bslide *s) {
    s->pub.path = s->path;
    s->pub.id = s->id;
    s->pub.options = s->options;
    s->pub.vendor = s->vendor;
    s->pub.quickhash = s->quickhash;
    s->pub.fingerprint = s->fingerprint;
    s->pub.stage = s->stage;
    s->pub.error = s->error;
    if (s->host)
        s->pub.host = s->host;
    s->pub.previous = s->previous;
    s->pub.note = s->note;
}

void sp__bslide_fail(sp__bslide *s, const char *stage, sp_errcode code,
                     const char *msg) {
    s->pub.status = SP_BATCH_FAILED;
    s->pub.error_code = code;
    sp__set_str(&s->stage, stage);
    sp__set_str(&s->error, msg);
    if (s->error)
        for (char *p = s->error; *p; p++)
            if (*p == '\n' || *p == '\r' || *p == '\t')
                *p = ' ';
    sp__bslide_sync(s);
}

void sp__bslide_free(sp__bslide *s) {
    if (!s)
        return;
    free(s->path);
    free(s->rel);
    free(s->root);
    free(s->id);
    free(s->options);
    free(s->vendor);
    free(s->quickhash);
    free(s->fingerprint);
    free(s->params);
    free(s->stage);
    free(s->error);
    free(s->host);
    free(s->previous);
    free(s->note);
    free(s->tmpdir);
    sp_buf_free(&s->rec);
    sp_buf_free(&s->err);
    free(s);
}

bool sp__batch_push(sp_batch *b, const char *path, const char *rel,
                    const char *root, const char *id, const char *options,
                    bool is_explicit, sp_error *err) {
    struct stat st;
    bool is_file = stat(path, &st) == 0 && S_ISREG(st.st_mode);
    if (is_file)
        for (size_t i = 0; i < b->n; i++)
            if (b->v[i]->has_ino && b->v[i]->dev == st.st_dev &&
                b->v[i]->ino == st.st_ino)
                return true; /* listed already */
    if (b->n == b->cap) {
        size_t nc = b->cap ? 2 * b->cap : 64;
        sp__bslide **nv = realloc(b->v, nc * sizeof *nv);
        if (!nv)
            return sp_error_set(err, SP_ERR_NOMEM, path, "out of memory");
        b->v = nv;
        b->cap = nc;
    }
    sp__bslide *s = calloc(1, sizeof *s);
    if (!s)
        return sp_error_set(err, SP_ERR_NOMEM, path, "out of memory");
    s->path = strdup(path);
    s->rel = strdup(rel ? rel : sp_basename(path));
    if (root) {
        s->root = strdup(root);
    } else { /* the file's own folder */
        size_t dl = (size_t)(sp_basename(path) - path);
        while (dl > 1 && path[dl - 1] == '/')
            dl--;
        s->root = strndup(path, dl);
    }
    s->id = sp__strdup0(id);
    s->options = sp__strdup0(options);
    s->has_id = id != NULL;
    if (is_file) {
        s->has_ino = true;
        s->dev = st.st_dev;
        s->ino = st.st_ino;
    }
    s->pid = -1;
    s->fd_rec = s->fd_err = -1;
    s->pub.is_explicit = is_explicit;
    s->pub.tiles = -1;
    s->pub.tissue_area_mm2 = NAN;
    s->pub.seconds = NAN;
    sp_buf_init(&s->rec);
    sp_buf_init(&s->err);
    if (!s->path || !s->rel || !s->root || (id && !s->id) ||
        (options && !s->options)) {
        sp__bslide_free(s);
        return sp_error_set(err, SP_ERR_NOMEM, path, "out of memory");
    }
    sp__bslide_sync(s);
    b->v[b->n++] = s;
    return true;
}

void sp__batch_truncate(sp_batch *b, size_t n) {
    while (b->n > n)
        sp__bslide_free(b->v[--b->n]);
}
