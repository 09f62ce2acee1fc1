/* batch: how shared outputs (done.json, summaries) name slides and
 * folders: below their input folder unless full paths are asked for. */
#include "batch_private.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char *replace_all(const char *text, const char *from, const char *to) {
    sp_buf o;
    sp_buf_init(&o);
    sp_buf_puts(&o, "");
    size_t n = strlen(from);
    for (const char *p = text; *p;) {
        if (n && strncmp(p, from, n) == 0) {
            sp_buf_puts(&o, to);
            p += n;
        } else {
            sp_buf_append(&o, p++, 1);
        }
    }
    if (o.oom) {
        sp_buf_free(&o);
        return NULL;
    }
    return o.data;
}

/* In place: *text with `from` replaced by `to`; unchanged on OOM. */
void sp__batch_replace_in(char **text, const char *from, const char *to) {
    if (!*text || !from || !from[0])
        return;
    char *r = replace_all(*text, from, to);
    if (r) {
        free(*text);
        *text = r;
    }
}

/* An absolute path for `p` (realpath, or the working folder joined when
 * the file is gone); malloc'd. */
char *sp__batch_abs_path(const char *p) {
    char *r = realpath(p, NULL);
    if (r || p[0] == '/')
        return r ? r : strdup(p);
    char cwd[PATH_MAX];
    return getcwd(cwd, sizeof cwd) ? sp_path_join(cwd, p) : strdup(p);
}

/* The slide as shared outputs (done.json, summaries) name it: its path
 * below its input folder, or with full_paths its absolute path. */
char *sp__batch_recorded_path(const sp_batch *b, const sp__bslide *s) {
    return b->o.full_paths ? sp__batch_abs_path(s->path) : sp__strdup0(s->rel);
}

/* A message as shared outputs carry it: without full_paths, the slide's
 * path as given becomes its recorded one, and the input folder and OUTDIR
 * prefixes go, so no folder above them is named. malloc'd. */
char *sp__batch_shared_text(const sp_batch *b, const sp__bslide *s,
                            const char *text) {
    char *t = sp__strdup0(text);
    if (!t || b->o.full_paths)
        return t;
    if (s) {
        sp__batch_replace_in(&t, s->path, s->rel);
        /* "." and ".." name no folder: scrubbing "./" would mangle "../" */
        if (s->root && s->root[0] && strcmp(s->root, ".") != 0 &&
            strcmp(s->root, "./") != 0 && strcmp(s->root, "..") != 0) {
            sp_buf r;
            sp_buf_init(&r);
            sp_buf_printf(&r, "%s%s", s->root,
                          s->root[strlen(s->root) - 1] == '/' ? "" : "/");
            if (!r.oom && strcmp(r.data, "/") != 0)
                sp__batch_replace_in(&t, r.data, "");
            sp_buf_free(&r);
        }
    }
    char *od = sp_path_join(b->outdir, "");
    if (od && strcmp(od, "/") != 0)
        sp__batch_replace_in(&t, od, "");
    free(od);
    return t;
}

void sp__batch_iso_now(char *out, size_t n) {
    char t[32];
    sp_format_utc(sp_wall_clock(), t);
    snprintf(out, n, "%s", t);
}
