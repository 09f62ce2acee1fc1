/* The rows held for an ordered query (`query --order-by`): every matching
 * row, or with a limit only the best N in a max-heap on "comes later".
 * Touches no HDF5. */
#include "store_private.h"

#include <math.h>
#include <stdlib.h>

typedef struct {
    double dkey; /* the order column's value */
    uint64_t seq;
    uint32_t slide;
    int64_t x, y;
} entry_hdr; /* followed by nvals floats */

struct sp__order {
    bool desc;
    int64_t limit; /* -1: keep every row */
    size_t nvals;
    unsigned char *pool; /* entries: hdr + nvals floats */
    size_t esize, npool, cappool;
    size_t *heap;
    size_t nheap;
    uint64_t seq;
};

sp__order *sp__order_new(bool desc, int64_t limit, size_t nvals) {
    sp__order *o = calloc(1, sizeof *o);
    if (!o)
        return NULL;
    o->desc = desc;
    o->limit = limit;
    o->nvals = nvals;
    o->esize = sizeof(entry_hdr) + nvals * sizeof(float);
    o->esize = (o->esize + 7) & ~(size_t)7;
    return o;
}

void sp__order_free(sp__order *o) {
    if (!o)
        return;
    free(o->pool);
    free(o->heap);
    free(o);
}

static entry_hdr *entry_at(const sp__order *o, size_t i) {
    return (entry_hdr *)(o->pool + i * o->esize);
}

/* true when a comes before b in the output */
static bool before(const sp__order *o, const entry_hdr *a, const entry_hdr *b) {
    bool an = isnan(a->dkey), bn = isnan(b->dkey);
    if (an != bn)
        return bn; /* NaN last */
    if (!an && a->dkey != b->dkey)
        return o->desc ? a->dkey > b->dkey : a->dkey < b->dkey;
    return a->seq < b->seq;
}

static void heap_sift_down(sp__order *o, size_t i) {
    /* max-heap on "comes later" */
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < o->nheap &&
            before(o, entry_at(o, o->heap[m]), entry_at(o, o->heap[l])))
            m = l;
        if (r < o->nheap &&
            before(o, entry_at(o, o->heap[m]), entry_at(o, o->heap[r])))
            m = r;
        if (m == i)
            return;
        size_t t = o->heap[i];
        o->heap[i] = o->heap[m];
        o->heap[m] = t;
        i = m;
    }
}

static void heap_sift_up(sp__order *o, size_t i) {
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!before(o, entry_at(o, o->heap[p]), entry_at(o, o->heap[i])))
            return;
        size_t t = o->heap[i];
        o->heap[i] = o->heap[p];
        o->heap[p] = t;
        i = p;
    }
}

static float *fill_entry(sp__order *o, entry_hdr *e, double key, uint32_t slide,
                         int64_t x, int64_t y) {
    e->dkey = key;
    e->seq = o->seq;
    e->slide = slide;
    e->x = x;
    e->y = y;
    return (float *)(e + 1);
}

float *sp__order_offer(sp__order *o, double key, uint32_t slide, int64_t x,
                       int64_t y, bool *oom) {
    *oom = false;
    o->seq++;
    if (o->limit >= 0) {
        if (o->limit == 0)
            return NULL;
        if (!o->pool) {
            o->cappool = (size_t)o->limit;
            o->pool = malloc(o->cappool * o->esize);
            o->heap = malloc(o->cappool * sizeof *o->heap);
            if (!o->pool || !o->heap) {
                *oom = true;
                return NULL;
            }
        }
        if (o->nheap < o->cappool) {
            size_t slot = o->npool++;
            float *v = fill_entry(o, entry_at(o, slot), key, slide, x, y);
            o->heap[o->nheap++] = slot;
            heap_sift_up(o, o->nheap - 1);
            return v;
        }
        entry_hdr probe = {.dkey = key, .seq = o->seq};
        if (!before(o, &probe, entry_at(o, o->heap[0])))
            return NULL;
        float *v = fill_entry(o, entry_at(o, o->heap[0]), key, slide, x, y);
        heap_sift_down(o, 0);
        return v;
    }
    if (o->npool == o->cappool) {
        size_t cap = o->cappool ? o->cappool * 2 : 1024;
        unsigned char *p = realloc(o->pool, cap * o->esize);
        if (!p) {
            *oom = true;
            return NULL;
        }
        o->pool = p;
        o->cappool = cap;
    }
    return fill_entry(o, entry_at(o, o->npool++), key, slide, x, y);
}

/* qsort has no context argument in C11: the order being sorted, per
 * thread */
static _Thread_local const sp__order *sort_o;

static int cmp_entries(const void *a, const void *b) {
    const entry_hdr *x = entry_at(sort_o, *(const size_t *)a);
    const entry_hdr *y = entry_at(sort_o, *(const size_t *)b);
    if (before(sort_o, x, y))
        return -1;
    if (before(sort_o, y, x))
        return 1;
    return 0;
}

bool sp__order_emit(sp__order *o, sp__order_fn fn, void *ctx) {
    size_t n = o->npool;
    size_t *idx = malloc((n ? n : 1) * sizeof *idx);
    if (!idx)
        return false;
    for (size_t i = 0; i < n; i++)
        idx[i] = i;
    sort_o = o;
    qsort(idx, n, sizeof *idx, cmp_entries);
    sort_o = NULL;
    bool ok = true;
    for (size_t k = 0; k < n && ok; k++) {
        const entry_hdr *e = entry_at(o, idx[k]);
        ok = fn(ctx, e->slide, e->x, e->y, (const float *)(e + 1));
    }
    free(idx);
    return ok;
}
