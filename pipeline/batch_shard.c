/* batch: a job array's shares (--shard K/N), the merge that follows them,
 * and what the last batch's summary says of slides it left running. */
#include "batch_private.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

/* a summary is a few hundred bytes a slide: more is not ours */
#define SUMMARY_MAX (256u << 20)

static int cmp_size_id(const void *x, const void *y) {
    const sp__bslide *a = *(sp__bslide *const *)x, *b = *(sp__bslide *const *)y;
    if (a->pub.megapixels != b->pub.megapixels)
        return a->pub.megapixels > b->pub.megapixels ? -1 : 1;
    return strcmp(a->id ? a->id : a->path, b->id ? b->id : b->path);
}

void sp__batch_keep_shard(sp_batch *b) {
    const int n = b->o.shard_count, k = b->o.shard_index;
    sp__bslide **order = calloc(b->n ? b->n : 1, sizeof *order);
    double *load = calloc((size_t)n, sizeof *load);
    size_t m = 0;
    if (!order || !load) {
        /* out of memory: keep nothing rather than another shard's slides */
        for (size_t i = 0; i < b->n; i++)
            sp__bslide_free(b->v[i]);
        b->n = 0;
        goto out;
    }
    for (size_t i = 0; i < b->n; i++)
        if (b->v[i]->pub.status != SP_BATCH_NOT_SLIDE)
            order[m++] = b->v[i];
    qsort(order, m, sizeof *order, cmp_size_id);
    /* greedy: each slide to the least loaded shard so far */
    for (size_t i = 0; i < m; i++) {
        int best = 0;
        for (int s = 1; s < n; s++)
            if (load[s] < load[best])
                best = s;
        /* a slide that could not be opened weighs as a small one */
        load[best] +=
            order[i]->pub.megapixels > 1 ? order[i]->pub.megapixels : 1;
        order[i]->wire = (size_t)best; /* borrowed until the plan sets it */
    }
    size_t keep = 0;
    for (size_t i = 0; i < b->n; i++) {
        sp__bslide *s = b->v[i];
        bool mine =
            s->pub.status == SP_BATCH_NOT_SLIDE ? k == 0 : (int)s->wire == k;
        if (mine)
            b->v[keep++] = s;
        else
            sp__bslide_free(s);
    }
    b->n = keep;
out:
    free(order);
    free(load);
}

/* OUTDIR/NAME parsed as a JSON object, or NULL. */
static json_object *read_json(const sp_batch *b, const char *name) {
    char *p = sp_path_join(b->outdir, name);
    size_t len = 0;
    sp_error e = {0};
    char *text = p ? sp_read_file(p, SUMMARY_MAX, &len, &e) : NULL;
    json_object *o = text ? json_tokener_parse(text) : NULL;
    free(text);
    free(p);
    if (o && !json_object_is_type(o, json_type_object)) {
        json_object_put(o);
        o = NULL;
    }
    return o;
}

static const char *str_of(json_object *o, const char *k) {
    json_object *v = NULL;
    return json_object_object_get_ex(o, k, &v) &&
                   json_object_is_type(v, json_type_string)
               ? json_object_get_string(v)
               : NULL;
}

static sp__bslide *find_id(sp_batch *b, const char *id) {
    for (size_t i = 0; id && i < b->n; i++)
        if (b->v[i]->id && strcmp(b->v[i]->id, id) == 0)
            return b->v[i];
    return NULL;
}

/* "in flight on rank R (HOST)" and the like, from a summary's entry. */
static void where_of(json_object *e, char *out, size_t n) {
    json_object *r = NULL;
    const char *host = str_of(e, "host");
    if (json_object_object_get_ex(e, "rank", &r) &&
        json_object_is_type(r, json_type_int) && host)
        snprintf(out, n, " on rank %d (%s)", json_object_get_int(r), host);
    else if (host)
        snprintf(out, n, " on %s", host);
    else
        out[0] = '\0';
}

void sp__batch_read_previous(sp_batch *b) {
    if (b->o.merge)
        return;
    json_object *o = read_json(b, sp_basename(b->summary_json));
    json_object *slides = NULL;
    if (!o || !json_object_object_get_ex(o, "slides", &slides) ||
        !json_object_is_type(slides, json_type_array)) {
        json_object_put(o);
        return;
    }
    for (size_t i = 0; i < json_object_array_length(slides); i++) {
        json_object *e = json_object_array_get_idx(slides, i);
        const char *st = str_of(e, "status");
        sp__bslide *s = find_id(b, str_of(e, "slide"));
        if (!s || !st || strcmp(st, "running") != 0)
            continue;
        char where[300], msg[400];
        where_of(e, where, sizeof where);
        snprintf(msg, sizeof msg, "in flight%s when the previous batch stopped",
                 where);
        sp__set_str(&s->previous, msg);
        sp__bslide_sync(s);
    }
    json_object_put(o);
}

static sp_errcode code_named(const char *name) {
    for (int c = SP_OK; c <= SP_ERR_CANCELLED; c++)
        if (name && strcmp(sp_errcode_name((sp_errcode)c), name) == 0)
            return (sp_errcode)c;
    return SP_ERR_INTERNAL;
}

/* The entry for `id` in any shard's summary (the caller puts the
 * objects), or NULL. */
static json_object *shard_entry(json_object **sums, size_t n, const char *id) {
    for (size_t k = 0; k < n; k++) {
        json_object *slides = NULL;
        if (!json_object_object_get_ex(sums[k], "slides", &slides) ||
            !json_object_is_type(slides, json_type_array))
            continue;
        for (size_t i = 0; i < json_object_array_length(slides); i++) {
            json_object *e = json_object_array_get_idx(slides, i);
            const char *sid = str_of(e, "slide");
            if (sid && strcmp(sid, id) == 0)
                return e;
        }
    }
    return NULL;
}

void sp__batch_merge_missing(sp_batch *b) {
    json_object **sums = NULL;
    size_t ns = 0, cap = 0;
    DIR *d = opendir(b->outdir);
    struct dirent *de;
    while (d && (de = readdir(d)) != NULL) {
        const char *nm = de->d_name;
        size_t l = strlen(nm);
        if (strncmp(nm, "batch-summary.shard-", 20) != 0 || l < 5 ||
            strcmp(nm + l - 5, ".json") != 0)
            continue;
        json_object *o = read_json(b, nm);
        if (!o)
            continue;
        if (ns == cap) {
            size_t nc = cap ? 2 * cap : 16;
            json_object **v = realloc(sums, nc * sizeof *v);
            if (!v) {
                json_object_put(o);
                break;
            }
            sums = v;
            cap = nc;
        }
        sums[ns++] = o;
    }
    if (d)
        closedir(d);
    for (size_t i = 0; i < b->n; i++) {
        sp__bslide *s = b->v[i];
        if (s->pub.status != SP_BATCH_PENDING)
            continue;
        json_object *e = shard_entry(sums, ns, s->id);
        const char *st = e ? str_of(e, "status") : NULL;
        char msg[SP_ERROR_MAX], where[300];
        if (st && strcmp(st, "failed") == 0 && str_of(e, "error")) {
            sp__bslide_fail(s, str_of(e, "stage") ? str_of(e, "stage") : "run",
                            code_named(str_of(e, "error_code")),
                            str_of(e, "error"));
            continue;
        }
        if (st && strcmp(st, "running") == 0) {
            where_of(e, where, sizeof where);
            snprintf(msg, sizeof msg,
                     "%s: not done: in flight%s when its shard stopped "
                     "(rerun that shard)",
                     s->path, where);
        } else if (st) {
            snprintf(msg, sizeof msg,
                     "%s: not done: its shard's summary says '%s' (rerun "
                     "that shard)",
                     s->path, st);
        } else {
            snprintf(msg, sizeof msg,
                     "%s: not done: no shard's summary lists it (did every "
                     "shard run with the same inputs?)",
                     s->path);
        }
        sp__bslide_fail(s, "merge", SP_ERR_INPUT, msg);
    }
    for (size_t k = 0; k < ns; k++)
        json_object_put(sums[k]);
    free(sums);
}
