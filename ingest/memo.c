/* Tiles whose compressed bytes repeat, decoded once per reader.
 *
 * A scanner writes the glass it did not scan, and blank background, as
 * the same JPEG tile over and over: 29 of the 252 level-0 tiles of the
 * TCGA slide in the test data are byte-for-byte copies of another, and
 * a slide's unscanned margins can be a third of it. libjpeg's decode of
 * the same bytes with the same tables and scale is the same pixels, so a
 * reader keeps the pixels of the last few tiles that came twice and
 * copies them for a third. A tile is matched by its whole bytes (a
 * fingerprint of a few sampled words only picks the candidate), its
 * `kind` (the caller's level and scale: whatever else changes the
 * decode) and its size; a copy is made only of a tile that decoded
 * without error, so strictness is unchanged: damaged bytes differ from
 * any good tile's and are decoded, and fail, as before. */
#include "ingest_private.h"

#include <stdlib.h>
#include <string.h>

enum {
    MEMO_KEEP = 4,    /* decoded tiles kept */
    MEMO_SEEN = 1024, /* fingerprints of tiles seen once (a power of 2) */
};

typedef struct {
    uint64_t fp;
    uint32_t kind;
    int64_t w, h;
    uint8_t *data; /* the compressed bytes */
    size_t n, data_cap;
    uint8_t *px; /* w * h * 3 */
    size_t px_cap;
} memo_entry;

struct sp__memo {
    uint64_t seen[MEMO_SEEN];
    memo_entry e[MEMO_KEEP]; /* most recently used first */
    int used;
    int64_t hits;
};

sp__memo *sp__memo_create(void) { return calloc(1, sizeof(sp__memo)); }

void sp__memo_free(sp__memo *m) {
    if (!m)
        return;
    for (int k = 0; k < MEMO_KEEP; k++) {
        free(m->e[k].data);
        free(m->e[k].px);
    }
    free(m);
}

int64_t sp__memo_hits(const sp__memo *m) { return m ? m->hits : 0; }

/* Sixteen 8-byte words spread over the bytes, their length and kind,
 * mixed; never 0 (an empty slot of `seen`). */
static uint64_t fingerprint(uint32_t kind, const uint8_t *d, size_t n) {
    uint64_t h = UINT64_C(0x9E3779B97F4A7C15) ^ n ^ (uint64_t)kind << 40;
    if (n >= 8) {
        for (size_t i = 0; i < 16; i++) {
            uint64_t v;
            memcpy(&v, d + (n - 8) * i / 15, 8);
            h = (h ^ v) * UINT64_C(0x100000001B3);
            h ^= h >> 29;
        }
    } else {
        for (size_t i = 0; i < n; i++)
            h = (h ^ d[i]) * UINT64_C(0x100000001B3);
    }
    return h | 1;
}

static bool same(const memo_entry *e, uint64_t fp, uint32_t kind,
                 const uint8_t *data, size_t n, int64_t w, int64_t h) {
    return e->fp == fp && e->kind == kind && e->n == n && e->w == w &&
           e->h == h && memcmp(e->data, data, n) == 0;
}

bool sp__memo_get(sp__memo *m, uint32_t kind, const uint8_t *data, size_t n,
                  int64_t w, int64_t h, uint8_t *dst, size_t stride) {
    if (!m || m->used == 0)
        return false;
    const uint64_t fp = fingerprint(kind, data, n);
    for (int k = 0; k < m->used; k++) {
        if (!same(&m->e[k], fp, kind, data, n, w, h))
            continue;
        memo_entry hit = m->e[k];
        const size_t row = (size_t)w * 3;
        for (int64_t y = 0; y < h; y++)
            memcpy(dst + (size_t)y * stride, hit.px + (size_t)y * row, row);
        memmove(&m->e[1], &m->e[0], (size_t)k * sizeof hit);
        m->e[0] = hit;
        m->hits++;
        return true;
    }
    return false;
}

/* Grow *p to hold `need` bytes; false (and *p as it was) when out of
 * memory. */
static bool reserve(uint8_t **p, size_t *cap, size_t need) {
    if (need <= *cap)
        return true;
    uint8_t *q = realloc(*p, need);
    if (!q)
        return false;
    *p = q;
    *cap = need;
    return true;
}

void sp__memo_put(sp__memo *m, uint32_t kind, const uint8_t *data, size_t n,
                  int64_t w, int64_t h, const uint8_t *src, size_t stride) {
    if (!m)
        return;
    const uint64_t fp = fingerprint(kind, data, n);
    uint64_t *slot = &m->seen[fp & (MEMO_SEEN - 1)];
    if (*slot != fp) { /* the first time: only noted */
        *slot = fp;
        return;
    }
    for (int k = 0; k < m->used; k++)
        if (same(&m->e[k], fp, kind, data, n, w, h))
            return; /* kept already (the caller decoded it anyway) */
    /* the least recently used slot, its buffers reused */
    memo_entry e = m->e[MEMO_KEEP - 1];
    const size_t row = (size_t)w * 3;
    if (!reserve(&e.data, &e.data_cap, n) ||
        !reserve(&e.px, &e.px_cap, row * (size_t)h)) {
        e.fp = 0; /* never matches (fingerprints are odd) */
        m->e[MEMO_KEEP - 1] = e;
        return;
    }
    memcpy(e.data, data, n);
    for (int64_t y = 0; y < h; y++)
        memcpy(e.px + (size_t)y * row, src + (size_t)y * stride, row);
    e.fp = fp;
    e.kind = kind;
    e.n = n;
    e.w = w;
    e.h = h;
    const int moved = m->used < MEMO_KEEP ? m->used : MEMO_KEEP - 1;
    memmove(&m->e[1], &m->e[0], (size_t)moved * sizeof e);
    m->e[0] = e;
    if (m->used < MEMO_KEEP)
        m->used++;
}
