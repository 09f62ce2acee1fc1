/* batch: the per-slide run options a manifest or the command line sets
 * (tile-size overlap quality format skip-background): parsed, made
 * canonical, and turned into the slide job's sp_run_opts. */
#include "batch_private.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

typedef enum { K_INT, K_ENUM, K_FLAG } key_kind;

static const struct {
    const char *name;
    key_kind kind;
    int64_t min, max;
    const char *const *choices;
} KEYS[SP__BATCH_NKEYS] = {
    {"tile-size", K_INT, 1, 8192, NULL},
    {"overlap", K_INT, 0, 4096, NULL},
    {"quality", K_INT, 1, 100, NULL},
    {"format", K_ENUM, 0, 0,
     (const char *const[]){"jpeg", "png", "webp", NULL}},
    {"skip-background", K_FLAG, 0, 0, NULL},
    {"container", K_ENUM, 0, 0,
     (const char *const[]){"dzi", "tiff", "ome-tiff", "dicom", NULL}},
    {"passthrough", K_FLAG, 0, 0, NULL},
};

enum {
    K_TILE = 0,
    K_OVERLAP,
    K_QUALITY,
    K_FORMAT,
    K_SKIP,
    K_CONTAINER,
    K_PASS
};

/* The TIFF and DICOM containers hold JPEG tiles whose size is a multiple
 * of 16, never overlapping (the overlap defaults to 0 for them);
 * passthrough needs one of them. */
static bool check_combination(char *const vals[SP__BATCH_NKEYS],
                              sp_error *err) {
    const char *c = vals[K_CONTAINER];
    bool grid = c && strcmp(c, "dzi") != 0;
    int64_t v;
    if (vals[K_PASS] && strcmp(vals[K_PASS], "yes") == 0 && !grid)
        return sp_error_set(
            err, SP_ERR_USAGE, NULL,
            "passthrough goes with container=tiff, ome-tiff or dicom");
    if (!grid)
        return true;
    if (vals[K_FORMAT] && strcmp(vals[K_FORMAT], "jpeg") != 0)
        return sp_error_set(err, SP_ERR_USAGE, NULL,
                            "container=%s holds jpeg tiles only", c);
    if (vals[K_OVERLAP] && strcmp(vals[K_OVERLAP], "0") != 0)
        return sp_error_set(err, SP_ERR_USAGE, NULL,
                            "container=%s: tiles never overlap", c);
    if (vals[K_TILE] && sp_parse_int64(vals[K_TILE], &v) && v % 16 != 0)
        return sp_error_set(err, SP_ERR_USAGE, NULL,
                            "container=%s: tile-size must be a multiple of 16",
                            c);
    return true;
}

void sp__batch_values_free(char *vals[SP__BATCH_NKEYS]) {
    for (int i = 0; i < SP__BATCH_NKEYS; i++) {
        free(vals[i]);
        vals[i] = NULL;
    }
}

/* Canonical value of `v` for key k, or NULL (malloc'd). */
static char *canon_value(int k, const char *v) {
    char buf[64];
    switch (KEYS[k].kind) {
    case K_INT: {
        int64_t x;
        if (!v || !sp_parse_int64(v, &x) || x < KEYS[k].min || x > KEYS[k].max)
            return NULL;
        snprintf(buf, sizeof buf, "%lld", (long long)x);
        return strdup(buf);
    }
    case K_ENUM:
        if (!v)
            return NULL;
        for (const char *const *c = KEYS[k].choices; *c; c++)
            if (strcasecmp(v, *c) == 0)
                return strdup(*c);
        return NULL;
    case K_FLAG:
        if (!v || strcasecmp(v, "yes") == 0 || strcasecmp(v, "true") == 0 ||
            strcmp(v, "1") == 0 || strcasecmp(v, "on") == 0)
            return strdup("yes");
        if (strcasecmp(v, "no") == 0 || strcasecmp(v, "false") == 0 ||
            strcmp(v, "0") == 0 || strcasecmp(v, "off") == 0)
            return strdup("no");
        return NULL;
    }
    return NULL;
}

static void expected(int k, char *out, size_t n) {
    switch (KEYS[k].kind) {
    case K_INT:
        snprintf(out, n, "a whole number from %lld to %lld",
                 (long long)KEYS[k].min, (long long)KEYS[k].max);
        break;
    case K_ENUM: {
        size_t len = 0;
        out[0] = '\0';
        for (const char *const *c = KEYS[k].choices; *c; c++)
            len += (size_t)snprintf(out + len, len < n ? n - len : 0, "%s%s",
                                    c == KEYS[k].choices ? ""
                                    : c[1]               ? ", "
                                                         : " or ",
                                    *c);
        break;
    }
    case K_FLAG: snprintf(out, n, "yes or no"); break;
    }
}

bool sp__batch_option_values(const char *text, char *vals[SP__BATCH_NKEYS],
                             sp_error *err) {
    for (int i = 0; i < SP__BATCH_NKEYS; i++)
        vals[i] = NULL;
    if (!text)
        return true;
    char *copy = strdup(text);
    if (!copy)
        return sp_error_set(err, SP_ERR_NOMEM, NULL, "out of memory");
    bool ok = true;
    char *save = NULL;
    for (char *w = strtok_r(copy, " \t,", &save); w && ok;
         w = strtok_r(NULL, " \t,", &save)) {
        char *eq = strchr(w, '=');
        if (eq)
            *eq = '\0';
        const char *key = w[0] == '-' && w[1] == '-' ? w + 2 : w;
        int k = -1;
        for (int i = 0; i < SP__BATCH_NKEYS; i++)
            if (strcmp(key, KEYS[i].name) == 0)
                k = i;
        if (k < 0) {
            ok = sp_error_set(err, SP_ERR_USAGE, NULL,
                              "unknown option '%s' (allowed: tile-size, "
                              "overlap, quality, format, skip-background, "
                              "container, passthrough)",
                              key);
            break;
        }
        if (vals[k]) {
            ok = sp_error_set(err, SP_ERR_USAGE, NULL,
                              "option '%s' given twice", key);
            break;
        }
        if (!eq && KEYS[k].kind != K_FLAG) {
            ok = sp_error_set(err, SP_ERR_USAGE, NULL,
                              "option '%s' needs a value (%s=VALUE)", key, key);
            break;
        }
        vals[k] = canon_value(k, eq ? eq + 1 : NULL);
        if (!vals[k]) {
            char want[128];
            expected(k, want, sizeof want);
            ok = sp_error_set(err, SP_ERR_USAGE, NULL,
                              "option '%s': expected %s, got '%s'", key, want,
                              eq ? eq + 1 : "");
        }
    }
    free(copy);
    if (ok)
        ok = check_combination(vals, err);
    if (!ok)
        sp__batch_values_free(vals);
    return ok;
}

sp_container sp__batch_container_of(const char *options) {
    char *vals[SP__BATCH_NKEYS];
    sp_error e = {0};
    sp_container c = SP_CONTAINER_DZI;
    if (!sp__batch_option_values(options, vals, &e))
        return c;
    if (vals[K_CONTAINER])
        sp_container_parse(vals[K_CONTAINER], &c);
    sp__batch_values_free(vals);
    return c;
}

char *sp__batch_values_text(char *const vals[SP__BATCH_NKEYS]) {
    sp_buf b;
    sp_buf_init(&b);
    sp_buf_puts(&b, "");
    for (int i = 0; i < SP__BATCH_NKEYS; i++)
        if (vals[i])
            sp_buf_printf(&b, "%s%s=%s", b.len ? " " : "", KEYS[i].name,
                          vals[i]);
    if (b.oom) {
        sp_buf_free(&b);
        return NULL;
    }
    return b.data;
}

bool sp_batch_parse_options(const char *text, char **out, sp_error *err) {
    char *vals[SP__BATCH_NKEYS];
    *out = NULL;
    if (!sp__batch_option_values(text, vals, err))
        return false;
    *out = sp__batch_values_text(vals);
    sp__batch_values_free(vals);
    return *out ? true : sp_error_set(err, SP_ERR_NOMEM, NULL, "out of memory");
}

bool sp__batch_apply_options(const char *text, sp_run_opts *o, sp_error *err) {
    char *vals[SP__BATCH_NKEYS];
    if (!sp__batch_option_values(text, vals, err))
        return false;
    int64_t v;
    bool ok = true;
    for (int k = 0; k < SP__BATCH_NKEYS && ok; k++) {
        if (!vals[k])
            continue;
        const char *name = KEYS[k].name;
        if (strcmp(name, "tile-size") == 0 && sp_parse_int64(vals[k], &v))
            o->tile.tile_size = (int)v;
        else if (strcmp(name, "overlap") == 0 && sp_parse_int64(vals[k], &v))
            o->tile.overlap = (int)v;
        else if (strcmp(name, "quality") == 0 && sp_parse_int64(vals[k], &v))
            o->tile.quality = (int)v;
        else if (strcmp(name, "format") == 0)
            ok = sp_tile_format_parse(vals[k], &o->tile.format);
        else if (strcmp(name, "skip-background") == 0)
            o->tile.skip_background = strcmp(vals[k], "yes") == 0;
        else if (strcmp(name, "container") == 0) {
            ok = sp_container_parse(vals[k], &o->tile.container);
            if (o->tile.container != SP_CONTAINER_DZI)
                o->tile.overlap = 0;
        } else if (strcmp(name, "passthrough") == 0)
            o->tile.passthrough = strcmp(vals[k], "yes") == 0;
        else
            ok = false;
        if (!ok)
            sp_error_set(err, SP_ERR_INTERNAL, NULL, "option '%s=%s'", name,
                         vals[k]);
    }
    sp__batch_values_free(vals);
    return ok;
}
