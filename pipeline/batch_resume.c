/* batch: resume. OUTDIR/<id>/done.json is written last, atomically, when
 * a slide's outputs are complete; a later batch skips the slide when the
 * marker records the same content, parameters and path choice. */
#include "batch_private.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#define SP__BATCH_DONE_SCHEMA "slidepipe.batch-done"

bool sp__batch_out_names(const char *dir, char **stem, char **h5) {
    *stem = sp_path_join(dir, SP__BATCH_OUT_BASE);
    *h5 = *stem ? malloc(strlen(*stem) + 4) : NULL;
    if (*h5)
        sprintf(*h5, "%s.h5", *stem);
    return *h5 != NULL;
}

char *sp__batch_missing_output(const char *dir, sp_container c, bool *oom) {
    char *stem = NULL, *h5 = NULL;
    sp_pyramid_names n = {0};
    *oom = !sp__batch_out_names(dir, &stem, &h5) ||
           !sp_pyramid_names_init(&n, stem, c, NULL);
    const char *const all[] = {n.main, n.sidecar, h5, n.files};
    char *missing = NULL;
    for (size_t i = 0; !*oom && !missing && i < 4; i++)
        if (all[i] && !sp_path_exists(all[i]) &&
            !(missing = strdup(sp_basename(all[i]))))
            *oom = true;
    sp_pyramid_names_free(&n);
    free(h5);
    free(stem);
    return missing;
}

sp_container sp__batch_slide_container(const sp__bslide *s) {
    const char *p =
        s->params ? s->params + strlen(SP__BATCH_FINGERPRINT_TAG) : "";
    return sp__batch_container_of(*p ? p + 1 : NULL);
}

/* done.json of a real run is a few KiB: more is not ours */
#define DONE_MAX (1u << 20)

/* One whole JSON object (trailing white space allowed), or NULL. */
static json_object *parse_object(const char *text, size_t n) {
    if (n > INT_MAX)
        return NULL;
    json_tokener *tok = json_tokener_new();
    if (!tok)
        return NULL;
    json_object *o = json_tokener_parse_ex(tok, text, (int)n);
    bool whole = o && json_tokener_get_error(tok) == json_tokener_success;
    if (whole)
        for (size_t i = json_tokener_get_parse_end(tok); i < n; i++)
            if (!text[i] || !strchr(" \t\r\n", text[i]))
                whole = false;
    json_tokener_free(tok);
    if (!whole || !json_object_is_type(o, json_type_object)) {
        json_object_put(o);
        return NULL;
    }
    return o;
}

static const char *str_of(json_object *o, const char *key) {
    json_object *v;
    return json_object_object_get_ex(o, key, &v) &&
                   json_object_is_type(v, json_type_string)
               ? json_object_get_string(v)
               : NULL;
}

/* A number member, NAN when absent or not a number. */
static double num_of(json_object *o, const char *key) {
    json_object *v;
    if (!o || !json_object_object_get_ex(o, key, &v))
        return NAN;
    if (json_object_is_type(v, json_type_int) ||
        json_object_is_type(v, json_type_double))
        return json_object_get_double(v);
    return NAN;
}

static bool same(const char *a, const char *b) {
    return a && b && strcmp(a, b) == 0;
}

bool sp__batch_already_done(sp_batch *b, sp__bslide *s) {
    char *dir = sp_path_join(b->outdir, s->id);
    char *done = dir ? sp_path_join(dir, SP__BATCH_DONE_FILE) : NULL;
    size_t len = 0;
    char *text = done ? sp_read_file(done, DONE_MAX, &len, NULL) : NULL;
    json_object *o = text ? parse_object(text, len) : NULL;
    /* markers without "paths" predate path privacy: their outputs hold
     * absolute paths, so they are redone, as is a change of --full-paths */
    bool ok = o && same(str_of(o, "schema"), SP__BATCH_DONE_SCHEMA) &&
              same(str_of(o, "quickhash"), s->quickhash) &&
              same(str_of(o, "fingerprint"), s->fingerprint) &&
              same(str_of(o, "paths"), b->o.full_paths ? "full" : "relative");
    if (ok) {
        bool oom;
        char *missing =
            sp__batch_missing_output(dir, sp__batch_slide_container(s), &oom);
        ok = !missing && !oom;
        free(missing);
    }
    if (ok) {
        json_object *run = NULL;
        json_object_object_get_ex(o, "run", &run);
        if (run && !json_object_is_type(run, json_type_object))
            run = NULL;
        double t = num_of(run, "tiles_written");
        /* a number out of range is unknown, never converted (UB) */
        s->pub.tiles = t >= 0 && t < 0x1p63 ? (int64_t)t : -1;
        s->pub.tissue_area_mm2 = num_of(run, "tissue_area_mm2");
        s->pub.seconds = num_of(o, "seconds");
        double th = num_of(o, "threads");
        s->pub.threads = th >= 1 && th <= INT_MAX ? (int)th : 0;
    }
    json_object_put(o);
    free(text);
    free(done);
    free(dir);
    return ok;
}

bool sp__batch_write_done(sp_batch *b, const sp__bslide *s, const char *dir,
                          const sp_run_result *r, double seconds,
                          sp_error *err) {
    sp_buf buf;
    sp_buf_init(&buf);
    sp_json w;
    sp_json_init(&w, &buf, true);
    char now[32];
    sp__batch_iso_now(now, sizeof now);
    sp_json_begin_object(&w);
    sp_json_key(&w, "schema");
    sp_json_string(&w, SP__BATCH_DONE_SCHEMA);
    sp_json_key(&w, "slidepipe_version");
    sp_json_string(&w, SP_VERSION);
    char *path = sp__batch_recorded_path(b, s);
    /* OUTDIR exists (OUTDIR/<id> not yet): resolve that */
    char *od = b->o.full_paths ? sp__batch_abs_path(b->outdir) : NULL;
    char *final = b->o.full_paths ? (od ? sp_path_join(od, s->id) : NULL)
                                  : sp__strdup0(s->id); /* below OUTDIR */
    char *stem = final ? sp_path_join(final, SP__BATCH_OUT_BASE) : NULL;
    sp_pyramid_names names = {0};
    bool named = stem && sp_pyramid_names_init(
                             &names, stem, sp__batch_slide_container(s), NULL);
    free(stem);
    const char *output = named ? names.main : NULL;
    /* the job's record as the outputs name things: the slide as recorded,
     * the final folder rather than the temporary one */
    sp_buf run;
    sp_buf_init(&run);
    bool run_ok = path && output && sp_run_result_json(r, path, output, &run);
    free(od);
    free(final);
    sp_json_key(&w, "slide");
    sp_json_string(&w, path);
    free(path);
    sp_json_key(&w, "paths");
    sp_json_string(&w, b->o.full_paths ? "full" : "relative");
    sp_json_key(&w, "id");
    sp_json_string(&w, s->id);
    sp_json_key(&w, "quickhash");
    sp_json_string(&w, s->quickhash);
    sp_json_key(&w, "fingerprint");
    sp_json_string(&w, s->fingerprint);
    sp_json_key(&w, "parameters");
    sp_json_string(&w, s->params);
    sp_json_key(&w, "threads");
    sp_json_int(&w, s->pub.threads);
    sp_json_key(&w, "seconds");
    sp_json_number(&w, seconds);
    sp_json_key(&w, "completed");
    sp_json_string(&w, now);
    sp_json_end_object(&w);
    /* the run's own line (already valid JSON) goes in as the last member */
    while (buf.len &&
           (buf.data[buf.len - 1] == '}' || buf.data[buf.len - 1] == '\n' ||
            buf.data[buf.len - 1] == ' '))
        buf.len--;
    sp_buf_printf(&buf, ",\n  \"run\": %s\n}\n", run_ok ? run.data : "null");
    char *done = sp_path_join(dir, SP__BATCH_DONE_FILE);
    bool ok = false;
    if (buf.oom || !done || !run_ok)
        sp_error_set(err, SP_ERR_NOMEM, NULL, "out of memory");
    else
        ok = sp_write_file_atomic(done, buf.data, buf.len, err);
    free(done);
    sp_buf_free(&run);
    sp_buf_free(&buf);
    sp_pyramid_names_free(&names);
    return ok;
}
