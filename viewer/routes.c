/* The URL grammar of `slidepipe serve`, strict and allocation-free: the
 * raw request target is matched character by character; anything outside
 * the grammar is a 4xx, so no path from a URL ever reaches the disk. */
#include "viewer_private.h"

#include <string.h>

const char *const sp__viewer_assets[] = {"viewer.js", "viewer.css",
                                         "openseadragon.min.js", NULL};

static bool id_char(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c >= '0' && c <= '9') || c == '_' || c == '-';
}

/* Copy [s, s+n) into id when it is a valid id. */
static bool take_id(const char *s, size_t n, char *id) {
    if (n < 1 || n > SP_ROUTE_ID_MAX || s[0] == '-')
        return false;
    for (size_t i = 0; i < n; i++)
        if (!id_char(s[i]))
            return false;
    memcpy(id, s, n);
    id[n] = '\0';
    return true;
}

/* A decimal number without sign or leading zeros, <= max. */
static bool take_num(const char *s, size_t n, int64_t max, int64_t *out) {
    if (n < 1 || n > 15 || (n > 1 && s[0] == '0'))
        return false;
    int64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (s[i] - '0');
    }
    if (v > max)
        return false;
    *out = v;
    return true;
}

static bool seg_is(const char *s, size_t n, const char *lit) {
    return strlen(lit) == n && memcmp(s, lit, n) == 0;
}

static bool ends_with(const char *s, size_t n, const char *suf, size_t *pre) {
    size_t k = strlen(suf);
    if (n <= k || memcmp(s + n - k, suf, k) != 0)
        return false;
    *pre = n - k;
    return true;
}

static int parse_query(const char *q, size_t qn, sp_route *r) {
    unsigned seen = 0;
    size_t i = 0;
    while (i < qn) {
        size_t j = i;
        while (j < qn && q[j] != '&')
            j++;
        const char *kv = q + i;
        size_t n = j - i;
        const char *eq = memchr(kv, '=', n);
        if (!eq)
            return 400;
        size_t kn = (size_t)(eq - kv), vn = n - kn - 1;
        const char *v = eq + 1;
        static const char *const keys[] = {"v", "x", "y", "w", "h", "feature"};
        int key = -1;
        for (int k = 0; k < 6; k++)
            if (seg_is(kv, kn, keys[k]))
                key = k;
        if (key < 0 || (seen & (1u << key)))
            return 400;
        seen |= 1u << key;
        if (key > 0 && r->kind != SP_ROUTE_API_FEATURES)
            return 400;
        switch (key) {
        case 0:
            if (vn < 1 || vn > 32)
                return 400;
            for (size_t t = 0; t < vn; t++)
                if (!((v[t] >= '0' && v[t] <= '9') ||
                      (v[t] >= 'a' && v[t] <= 'f')))
                    return 400;
            memcpy(r->version, v, vn);
            r->version[vn] = '\0';
            break;
        case 1:
        case 2:
        case 3:
        case 4: {
            int64_t x;
            if (!take_num(v, vn, INT64_C(1) << 40, &x))
                return 400;
            if (key == 1)
                r->x = x;
            if (key == 2)
                r->y = x;
            if (key == 3)
                r->w = x;
            if (key == 4)
                r->h = x;
            break;
        }
        case 5:
            if (vn < 1 || vn >= sizeof r->feature ||
                !((v[0] >= 'a' && v[0] <= 'z') ||
                  (v[0] >= 'A' && v[0] <= 'Z') || v[0] == '_'))
                return 400;
            for (size_t t = 0; t < vn; t++)
                if (!id_char(v[t]) && v[t] != '.')
                    return 400;
            if (memchr(v, '-', vn))
                return 400;
            memcpy(r->feature, v, vn);
            r->feature[vn] = '\0';
            break;
        }
        i = j + 1;
        if (j + 1 == qn) /* a trailing '&' */
            return 400;
    }
    unsigned region = seen & 0x1e;
    if (region && region != 0x1e)
        return 400;
    if (region) {
        if (r->w < 1 || r->h < 1)
            return 400;
        r->has_region = true;
    }
    return 200;
}

int sp_route_parse(const char *method, const char *uri, sp_route *r) {
    memset(r, 0, sizeof *r);
    if (!method || !uri)
        return 400;
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
        return 405;
    size_t len = strnlen(uri, SP_ROUTE_MAX_URI + 1);
    if (len > SP_ROUTE_MAX_URI)
        return 414;
    if (len == 0 || uri[0] != '/')
        return 400;
    const char *qm = memchr(uri, '?', len);
    size_t pn = qm ? (size_t)(qm - uri) : len;
    /* path: [A-Za-z0-9._-/] only, segments non-empty and never all dots */
    const char *seg[8];
    size_t segn[8];
    int nseg = 0;
    if (pn > 1) {
        size_t i = 1;
        for (;;) {
            size_t j = i;
            while (j < pn && uri[j] != '/')
                j++;
            if (j == i || nseg == 8)
                return nseg == 8 ? 404 : 400;
            bool dots = true;
            for (size_t k = i; k < j; k++) {
                char c = uri[k];
                if (!id_char(c) && c != '.')
                    return 400;
                if (c != '.')
                    dots = false;
            }
            if (dots)
                return 400;
            seg[nseg] = uri + i;
            segn[nseg++] = j - i;
            if (j == pn)
                break;
            i = j + 1;
        }
    }
    if (qm)
        for (size_t k = pn + 1; k < len; k++) {
            char c = uri[k];
            if (!id_char(c) && c != '.' && c != '=' && c != '&')
                return 400;
        }

    size_t pre;
    if (nseg == 0) {
        r->kind = SP_ROUTE_INDEX;
    } else if (nseg == 2 && seg_is(seg[0], segn[0], "slide")) {
        r->kind = SP_ROUTE_SLIDE_PAGE;
        if (!take_id(seg[1], segn[1], r->id))
            return 404;
    } else if (nseg == 2 && seg_is(seg[0], segn[0], "api") &&
               seg_is(seg[1], segn[1], "slides")) {
        r->kind = SP_ROUTE_API_SLIDES;
    } else if ((nseg == 3 || nseg == 4) && seg_is(seg[0], segn[0], "api") &&
               seg_is(seg[1], segn[1], "slide")) {
        if (!take_id(seg[2], segn[2], r->id))
            return 404;
        r->kind = SP_ROUTE_API_SLIDE;
        if (nseg == 4) {
            if (!seg_is(seg[3], segn[3], "features"))
                return 404;
            r->kind = SP_ROUTE_API_FEATURES;
        }
    } else if (nseg == 2 && seg_is(seg[0], segn[0], "dzi")) {
        r->kind = SP_ROUTE_DZI;
        if (!ends_with(seg[1], segn[1], ".dzi", &pre) ||
            !take_id(seg[1], pre, r->id))
            return 404;
    } else if (nseg == 4 && seg_is(seg[0], segn[0], "dzi")) {
        r->kind = SP_ROUTE_TILE;
        if (!ends_with(seg[1], segn[1], "_files", &pre) ||
            !take_id(seg[1], pre, r->id))
            return 404;
        int64_t lv;
        if (!take_num(seg[2], segn[2], 62, &lv))
            return 404;
        r->level = (int)lv;
        /* <col>_<row>.<ext> */
        const char *s = seg[3], *us = memchr(s, '_', segn[3]),
                   *dot = memchr(s, '.', segn[3]);
        if (!us || !dot || dot < us)
            return 404;
        size_t en = segn[3] - (size_t)(dot + 1 - s);
        if (!take_num(s, (size_t)(us - s), INT64_C(1) << 31, &r->col) ||
            !take_num(us + 1, (size_t)(dot - us - 1), INT64_C(1) << 31,
                      &r->row) ||
            !(seg_is(dot + 1, en, "jpeg") || seg_is(dot + 1, en, "png") ||
              seg_is(dot + 1, en, "webp")))
            return 404;
        memcpy(r->ext, dot + 1, en);
        r->ext[en] = '\0';
    } else if (nseg == 2 && seg_is(seg[0], segn[0], "static")) {
        r->kind = SP_ROUTE_STATIC;
        int k = 0;
        while (sp__viewer_assets[k] &&
               !seg_is(seg[1], segn[1], sp__viewer_assets[k]))
            k++;
        if (!sp__viewer_assets[k])
            return 404;
        strcpy(r->name, sp__viewer_assets[k]);
    } else if (nseg == 3 && seg_is(seg[0], segn[0], "assoc")) {
        r->kind = SP_ROUTE_ASSOC;
        if (!take_id(seg[1], segn[1], r->id))
            return 404;
        static const char *const names[] = {"label", "macro", "thumbnail"};
        int k = 0;
        while (k < 3 && !(ends_with(seg[2], segn[2], ".png", &pre) &&
                          seg_is(seg[2], pre, names[k])))
            k++;
        if (k == 3)
            return 404;
        strcpy(r->name, names[k]);
    } else {
        return 404;
    }
    if (qm) {
        int st = parse_query(qm + 1, len - pn - 1, r);
        if (st != 200)
            return st;
    }
    return 200;
}
