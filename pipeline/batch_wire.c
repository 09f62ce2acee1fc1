/* batch: the messages between rank 0 and the workers of a batch over
 * several processes, as JSON objects (one per message, "msg" naming the
 * kind). Written with util's JSON writer, read with json-c; a message
 * that is not one of ours is refused whole. */
#include "batch_private.h"

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

static const char *const kinds[] = {[SP__MSG_HELLO] = "hello",
                                    [SP__MSG_RUN] = "run",
                                    [SP__MSG_RESULT] = "result",
                                    [SP__MSG_STOP] = "stop",
                                    [SP__MSG_CANCEL] = "cancel"};
#define NKINDS (sizeof kinds / sizeof kinds[0])

static void begin(sp_json *w, sp_buf *out, sp__msg_kind kind) {
    sp_json_init(w, out, false);
    sp_json_begin_object(w);
    sp_json_key(w, "msg");
    sp_json_string(w, kinds[kind]);
}

static bool end(sp_json *w, sp_buf *out) {
    sp_json_end_object(w);
    return !out->oom;
}

static void kv_str(sp_json *w, const char *k, const char *v) {
    sp_json_key(w, k);
    sp_json_string(w, v);
}

static void kv_int(sp_json *w, const char *k, int64_t v) {
    sp_json_key(w, k);
    sp_json_int(w, v);
}

static void kv_num(sp_json *w, const char *k, double v) {
    sp_json_key(w, k);
    sp_json_number(w, v);
}

bool sp__wire_simple(sp_buf *out, sp__msg_kind kind) {
    sp_json w;
    begin(&w, out, kind);
    return end(&w, out);
}

bool sp__wire_hello(sp_buf *out, int threads, const char *host) {
    sp_json w;
    begin(&w, out, SP__MSG_HELLO);
    kv_int(&w, "threads", threads);
    kv_str(&w, "host", host);
    return end(&w, out);
}

bool sp__wire_run(sp_buf *out, const sp__bslide *s) {
    sp_json w;
    begin(&w, out, SP__MSG_RUN);
    kv_int(&w, "wire", (int64_t)s->wire);
    kv_str(&w, "path", s->path);
    kv_str(&w, "id", s->id);
    kv_str(&w, "rel", s->rel);
    kv_str(&w, "root", s->root);
    kv_str(&w, "options", s->options);
    kv_str(&w, "params", s->params);
    kv_str(&w, "fingerprint", s->fingerprint);
    kv_str(&w, "quickhash", s->quickhash);
    kv_str(&w, "vendor", s->vendor);
    kv_int(&w, "threads", s->pub.threads);
    kv_int(&w, "width", s->pub.width);
    kv_int(&w, "height", s->pub.height);
    return end(&w, out);
}

bool sp__wire_result(sp_buf *out, const sp__bslide *s) {
    sp_json w;
    begin(&w, out, SP__MSG_RESULT);
    kv_int(&w, "wire", (int64_t)s->wire);
    kv_int(&w, "status", s->pub.status);
    kv_int(&w, "code", s->pub.error_code);
    kv_str(&w, "stage", s->stage);
    kv_str(&w, "error", s->error);
    kv_num(&w, "seconds", s->pub.seconds);
    kv_int(&w, "tiles", s->pub.tiles);
    kv_num(&w, "tissue_area_mm2", s->pub.tissue_area_mm2);
    kv_str(&w, "note", s->note);
    return end(&w, out);
}

/* ---- reading ------------------------------------------------------------ */

static json_object *member(json_object *o, const char *k) {
    json_object *v = NULL;
    return json_object_object_get_ex(o, k, &v) ? v : NULL;
}

/* A string member (NULL when null); false when absent or of another
 * type. */
static bool get_str(json_object *o, const char *k, char **out) {
    json_object *v = NULL;
    if (!json_object_object_get_ex(o, k, &v))
        return false;
    if (!v) {
        *out = NULL;
        return true;
    }
    if (!json_object_is_type(v, json_type_string))
        return false;
    *out = strdup(json_object_get_string(v));
    return *out != NULL;
}

static bool get_int(json_object *o, const char *k, int64_t lo, int64_t hi,
                    int64_t *out) {
    json_object *v = member(o, k);
    if (!v || !json_object_is_type(v, json_type_int))
        return false;
    int64_t x = json_object_get_int64(v);
    if (x < lo || x > hi)
        return false;
    *out = x;
    return true;
}

/* A number, NAN for null. */
static bool get_num(json_object *o, const char *k, double *out) {
    json_object *v = NULL;
    if (!json_object_object_get_ex(o, k, &v))
        return false;
    if (!v) {
        *out = NAN;
        return true;
    }
    if (!json_object_is_type(v, json_type_double) &&
        !json_object_is_type(v, json_type_int))
        return false;
    *out = json_object_get_double(v);
    return true;
}

static bool parse_run(json_object *o, sp__bslide *s) {
    int64_t wire, threads, w, h;
    if (!get_int(o, "wire", 0, INT64_MAX, &wire) ||
        !get_int(o, "threads", 1, 1 << 20, &threads) ||
        !get_int(o, "width", 0, INT64_MAX, &w) ||
        !get_int(o, "height", 0, INT64_MAX, &h) ||
        !get_str(o, "path", &s->path) || !get_str(o, "id", &s->id) ||
        !get_str(o, "rel", &s->rel) || !get_str(o, "root", &s->root) ||
        !get_str(o, "options", &s->options) ||
        !get_str(o, "params", &s->params) ||
        !get_str(o, "fingerprint", &s->fingerprint) ||
        !get_str(o, "quickhash", &s->quickhash) ||
        !get_str(o, "vendor", &s->vendor))
        return false;
    /* what the job needs, and a folder name that stays in OUTDIR */
    if (!s->path || !s->id || !s->params || !s->quickhash || !s->fingerprint ||
        !s->id[0] || strchr(s->id, '/') || s->id[0] == '.' ||
        strncmp(s->params, SP__BATCH_FINGERPRINT_TAG,
                strlen(SP__BATCH_FINGERPRINT_TAG)) != 0)
        return false;
    s->wire = (size_t)wire;
    s->pub.threads = (int)threads;
    s->want = (int)threads;
    s->pub.width = w;
    s->pub.height = h;
    s->pub.megapixels = (double)w * (double)h / 1e6;
    return true;
}

static bool parse_result(json_object *o, sp__bslide *s) {
    int64_t wire, st, code, tiles;
    if (!get_int(o, "wire", 0, INT64_MAX, &wire) ||
        !get_int(o, "status", SP_BATCH_DONE, SP_BATCH_INTERRUPTED, &st) ||
        st == SP_BATCH_ALREADY_DONE ||
        !get_int(o, "code", SP_OK, SP_ERR_CANCELLED, &code) ||
        !get_int(o, "tiles", -1, INT64_MAX, &tiles) ||
        !get_num(o, "seconds", &s->pub.seconds) ||
        !get_num(o, "tissue_area_mm2", &s->pub.tissue_area_mm2) ||
        !get_str(o, "stage", &s->stage) || !get_str(o, "error", &s->error))
        return false;
    json_object *note = NULL; /* optional */
    if (json_object_object_get_ex(o, "note", &note) &&
        !get_str(o, "note", &s->note))
        return false;
    s->wire = (size_t)wire;
    s->pub.status = (sp_batch_status)st;
    s->pub.error_code = (sp_errcode)code;
    s->pub.tiles = tiles;
    return true;
}

bool sp__wire_parse(const char *text, size_t len, sp__msg *m, sp_error *err) {
    *m = (sp__msg){0};
    json_object *o = NULL;
    bool ok = false;
    if (len <= INT_MAX) {
        json_tokener *tok = json_tokener_new();
        if (tok) {
            o = json_tokener_parse_ex(tok, text, (int)len);
            if (json_tokener_get_error(tok) != json_tokener_success ||
                json_tokener_get_parse_end(tok) != len) {
                json_object_put(o);
                o = NULL;
            }
            json_tokener_free(tok);
        }
    }
    char *kind = NULL;
    if (!o || !json_object_is_type(o, json_type_object) ||
        !get_str(o, "msg", &kind) || !kind)
        goto out;
    for (size_t k = 1; k < NKINDS; k++)
        if (strcmp(kind, kinds[k]) == 0)
            m->kind = (sp__msg_kind)k;
    int64_t threads;
    switch (m->kind) {
    case SP__MSG_HELLO:
        ok = get_int(o, "threads", 1, 1 << 20, &threads) &&
             get_str(o, "host", &m->host);
        m->threads = ok ? (int)threads : 0;
        break;
    case SP__MSG_RUN:
    case SP__MSG_RESULT:
        m->slide = calloc(1, sizeof *m->slide);
        if (!m->slide)
            break;
        m->slide->pid = -1;
        m->slide->fd_rec = m->slide->fd_err = -1;
        sp_buf_init(&m->slide->rec);
        sp_buf_init(&m->slide->err);
        m->slide->pub.tiles = -1;
        m->slide->pub.seconds = m->slide->pub.tissue_area_mm2 = NAN;
        ok = m->kind == SP__MSG_RUN ? parse_run(o, m->slide)
                                    : parse_result(o, m->slide);
        if (ok)
            sp__bslide_sync(m->slide);
        break;
    case SP__MSG_STOP:
    case SP__MSG_CANCEL: ok = true; break;
    }
out:
    free(kind);
    json_object_put(o);
    if (!ok) {
        sp__msg_clear(m);
        sp_error_set(err, SP_ERR_INTERNAL, NULL,
                     "a batch message that is not one of ours (%zu bytes)",
                     len);
    }
    return ok;
}

void sp__msg_clear(sp__msg *m) {
    free(m->host);
    sp__bslide_free(m->slide);
    *m = (sp__msg){0};
}

void sp__wire_apply_result(sp__bslide *s, const sp__bslide *r) {
    s->pub.status = r->pub.status;
    s->pub.error_code = r->pub.error_code;
    s->pub.seconds = r->pub.seconds;
    s->pub.tiles = r->pub.tiles;
    s->pub.tissue_area_mm2 = r->pub.tissue_area_mm2;
    sp__set_str(&s->stage, r->stage);
    sp__set_str(&s->error, r->error);
    sp__set_str(&s->note, r->note);
    sp__bslide_sync(s);
}
