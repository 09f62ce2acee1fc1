/* Reading a pyramid back: its Deep Zoom descriptor (OUT.dzi, as dzi.c or
 * vips writes it) and its sidecar (OUT.json, as pyramid.c writes it), for
 * a tile server. Every value is checked before it is used: these files
 * come from disk, maybe from someone else (fuzz/fuzz_dzi.c and
 * fuzz/fuzz_sidecar.c feed them arbitrary bytes). */
#include "tiler.h"

#include <json-c/json.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DZI (1u << 20)
#define MAX_SIDECAR (64u << 20)

/* ---- the descriptor ---------------------------------------------------- */

/* The value of attribute `name` (after a space or a newline). */
static bool xml_attr(const char *xml, const char *name, char *out,
                     size_t outn) {
    char pat[64];
    snprintf(pat, sizeof pat, " %s=\"", name);
    const char *p = strstr(xml, pat);
    if (!p) {
        snprintf(pat, sizeof pat, "\n%s=\"", name);
        p = strstr(xml, pat);
    }
    if (!p)
        return false;
    p += strlen(pat);
    const char *q = strchr(p, '"');
    if (!q || (size_t)(q - p) >= outn)
        return false;
    memcpy(out, p, (size_t)(q - p));
    out[q - p] = '\0';
    return true;
}

static bool xml_int(const char *xml, const char *name, int64_t *v) {
    char buf[32];
    return xml_attr(xml, name, buf, sizeof buf) && sp_parse_int64(buf, v);
}

bool sp_dzi_parse(const char *xml, const char *path, sp_dzi_info *out,
                  sp_error *err) {
    int64_t ts, ov, w, h;
    char fmt[16];
    bool ok = xml_int(xml, "TileSize", &ts) && xml_int(xml, "Overlap", &ov) &&
              xml_int(xml, "Width", &w) && xml_int(xml, "Height", &h) &&
              xml_attr(xml, "Format", fmt, sizeof fmt);
    if (!ok || ts < 1 || ts > 8192 || ov < 0 || ov > ts / 2 || w < 1 || h < 1 ||
        w > (INT64_C(1) << 31) || h > (INT64_C(1) << 31))
        return sp_error_set(err, SP_ERR_INPUT, path,
                            "not a Deep Zoom descriptor slidepipe can serve");
    sp_tile_format f;
    if (!sp_tile_format_parse(fmt, &f) ||
        strcmp(sp_tile_format_ext(f), fmt) != 0)
        return sp_error_set(err, SP_ERR_INPUT, path,
                            "unsupported tile format '%s'", fmt);
    out->width = w;
    out->height = h;
    out->tile_size = (int)ts;
    out->overlap = (int)ov;
    out->format = f;
    out->levels = sp_tile_dz_level_count(w, h);
    return true;
}

bool sp_dzi_read(const char *path, sp_dzi_info *out, sp_error *err) {
    size_t n;
    char *xml = sp_read_file(path, MAX_DZI, &n, err);
    if (!xml)
        return false;
    bool ok = sp_dzi_parse(xml, path, out, err);
    free(xml);
    return ok;
}

/* ---- the sidecar ------------------------------------------------------- */

/* json-c accessors that accept NULL and wrong types (absent = default) */
static struct json_object *jget(struct json_object *o, const char *key) {
    struct json_object *v = NULL;
    if (!json_object_is_type(o, json_type_object) ||
        !json_object_object_get_ex(o, key, &v))
        return NULL;
    return v;
}

static const char *jstr(struct json_object *v) {
    return json_object_is_type(v, json_type_string) ? json_object_get_string(v)
                                                    : NULL;
}

static double jnum(struct json_object *v, double dflt) {
    return json_object_is_type(v, json_type_double) ||
                   json_object_is_type(v, json_type_int)
               ? json_object_get_double(v)
               : dflt;
}

static double positive(struct json_object *v) {
    double d = jnum(v, NAN);
    return d > 0 ? d : NAN;
}

static char *dup_str(struct json_object *v) {
    const char *s = jstr(v);
    return s ? strdup(s) : NULL;
}

/* The manifests of "levels": [{"level": L, "tiles": ["101", ...]}, ...]. */
static void read_manifest(struct json_object *lv, const sp_dzi_info *dzi,
                          sp_sidecar *s) {
    size_t nlv = json_object_is_type(lv, json_type_array)
                     ? json_object_array_length(lv)
                     : 0;
    for (size_t i = 0; i < nlv; i++) {
        struct json_object *L = json_object_array_get_idx(lv, i);
        double li = jnum(jget(L, "level"), -1);
        struct json_object *tiles = jget(L, "tiles");
        sp_tile_rect t;
        if (!(li >= 0 && li < s->levels) ||
            !json_object_is_type(tiles, json_type_array) ||
            !sp_tile_dz_geometry(dzi->width, dzi->height, dzi->tile_size,
                                 dzi->overlap, (int)li, 0, 0, &t) ||
            (int64_t)json_object_array_length(tiles) != t.rows)
            continue;
        /* the rows must spell every tile before memory is given to them:
         * a short sidecar must not make it allocate cols x rows bytes
         * (a seed of fuzz/fuzz_dzi.c) */
        bool good = true;
        for (int64_t r = 0; r < t.rows && good; r++) {
            const char *row = jstr(json_object_array_get_idx(tiles, (size_t)r));
            good = row && (int64_t)strlen(row) == t.cols;
        }
        if (!good)
            continue;
        uint8_t *m = calloc((size_t)(t.cols * t.rows), 1);
        if (!m)
            break;
        for (int64_t r = 0; r < t.rows; r++) {
            const char *row = jstr(json_object_array_get_idx(tiles, (size_t)r));
            for (int64_t cc = 0; cc < t.cols; cc++)
                m[r * t.cols + cc] = row[cc] == '1';
        }
        sp_manifest_level *ml = &s->manifest[(int)li];
        free(ml->tiles);
        ml->tiles = m;
        ml->cols = t.cols;
        ml->rows = t.rows;
    }
}

bool sp_sidecar_parse(const char *text, size_t n, const char *path,
                      const sp_dzi_info *dzi, sp_sidecar *out, sp_error *err) {
    memset(out, 0, sizeof *out);
    out->mpp_x = out->mpp_y = out->objective_power = NAN;
    struct json_tokener *tok = json_tokener_new();
    struct json_object *root =
        tok ? json_tokener_parse_ex(tok, text, (int)n) : NULL;
    bool parsed = tok && json_tokener_get_error(tok) == json_tokener_success;
    if (tok)
        json_tokener_free(tok);
    if (!parsed || !json_object_is_type(root, json_type_object)) {
        json_object_put(root);
        return sp_error_set(err, SP_ERR_INPUT, path, "malformed JSON");
    }
    out->levels = dzi->levels;
    out->manifest = calloc((size_t)(dzi->levels > 0 ? dzi->levels : 1),
                           sizeof *out->manifest);
    if (!out->manifest) {
        json_object_put(root);
        return sp_error_set(err, SP_ERR_NOMEM, path, "out of memory");
    }
    struct json_object *src = jget(root, "source");
    out->vendor = dup_str(jget(src, "vendor"));
    out->quickhash = dup_str(jget(src, "quickhash"));
    out->mpp_x = positive(jget(src, "mpp_x"));
    out->mpp_y = positive(jget(src, "mpp_y"));
    out->objective_power = positive(jget(src, "objective_power"));
    struct json_object *prm = jget(root, "parameters");
    double q = jnum(jget(prm, "quality"), 75);
    out->quality = q >= 1 && q <= 100 ? (int)q : 0;
    struct json_object *bg = jget(prm, "background");
    if (json_object_is_type(bg, json_type_array) &&
        json_object_array_length(bg) == 3) {
        out->has_background = true;
        for (int k = 0; k < 3; k++) {
            double c = jnum(json_object_array_get_idx(bg, (size_t)k), 255);
            out->background[k] = (uint8_t)(c >= 0 && c <= 255 ? c : 255);
        }
    }
    read_manifest(jget(root, "levels"), dzi, out);
    json_object_put(root);
    return true;
}

bool sp_sidecar_read(const char *path, const sp_dzi_info *dzi, sp_sidecar *out,
                     sp_error *err) {
    size_t n;
    char *text = sp_read_file(path, MAX_SIDECAR, &n, err);
    if (!text)
        return false;
    bool ok = sp_sidecar_parse(text, n, path, dzi, out, err);
    free(text);
    return ok;
}

void sp_sidecar_free(sp_sidecar *s) {
    if (!s)
        return;
    for (int l = 0; s->manifest && l < s->levels; l++)
        free(s->manifest[l].tiles);
    free(s->manifest);
    free(s->vendor);
    free(s->quickhash);
    memset(s, 0, sizeof *s);
}
