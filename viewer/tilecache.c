/* A byte-bounded LRU of encoded tiles shared by the server's threads.
 * One mutex guards the table, the list and the renders in flight; entries
 * are reference-counted so a response keeps its bytes alive after
 * eviction. A miss either claims the tile (the caller renders it and
 * publishes the result) or, when another thread already claimed it,
 * waits for that thread's result: a tile is rendered once however many
 * ask for it at the same time. */
#include "viewer_private.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

struct sp_cached_tile {
    const void *slide;
    int level;
    int64_t col, row;
    uint64_t hash;
    struct sp_cached_tile *next_hash, *prev_lru, *next_lru;
    _Atomic int refs;
    bool in_cache;
    size_t size;
    unsigned char data[];
};

/* A render in flight: its key, and its result once published. */
typedef struct flight {
    const void *slide;
    int level;
    int64_t col, row;
    bool done;
    int waiters;
    sp_cached_tile *result; /* one reference, until the last waiter */
    struct flight *next;
} flight;

struct sp_tile_cache {
    pthread_mutex_t mu;
    pthread_cond_t cv; /* a flight landed */
    flight *flights;
    size_t max_bytes, bytes, entries;
    sp_cached_tile **table;
    size_t nbuckets;
    sp_cached_tile *head, *tail; /* most recent at head */
    uint64_t hits, misses, waits;
};

static uint64_t key_hash(const void *slide, int level, int64_t col,
                         int64_t row) {
    uint64_t h = SP_FNV_SEED;
    h = sp_fnv1a(h, &slide, sizeof slide);
    h = sp_fnv1a(h, &level, sizeof level);
    h = sp_fnv1a(h, &col, sizeof col);
    return sp_fnv1a(h, &row, sizeof row);
}

sp_tile_cache *sp__tile_cache_new(size_t max_bytes) {
    sp_tile_cache *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->max_bytes = max_bytes;
    c->nbuckets = 4096;
    c->table = calloc(c->nbuckets, sizeof *c->table);
    if (!c->table) {
        free(c);
        return NULL;
    }
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cv, NULL);
    return c;
}

void sp__cached_tile_unref(sp_cached_tile *t) {
    if (t && atomic_fetch_sub(&t->refs, 1) == 1)
        free(t);
}

void sp__tile_cache_free(sp_tile_cache *c) {
    if (!c)
        return;
    for (sp_cached_tile *t = c->head, *nx; t; t = nx) {
        nx = t->next_lru;
        sp__cached_tile_unref(t);
    }
    pthread_mutex_destroy(&c->mu);
    pthread_cond_destroy(&c->cv);
    free(c->table);
    free(c);
}

static void lru_unlink(sp_tile_cache *c, sp_cached_tile *t) {
    if (t->prev_lru)
        t->prev_lru->next_lru = t->next_lru;
    else
        c->head = t->next_lru;
    if (t->next_lru)
        t->next_lru->prev_lru = t->prev_lru;
    else
        c->tail = t->prev_lru;
    t->prev_lru = t->next_lru = NULL;
}

static void lru_push_front(sp_tile_cache *c, sp_cached_tile *t) {
    t->next_lru = c->head;
    t->prev_lru = NULL;
    if (c->head)
        c->head->prev_lru = t;
    c->head = t;
    if (!c->tail)
        c->tail = t;
}

static void table_remove(sp_tile_cache *c, sp_cached_tile *t) {
    sp_cached_tile **pp = &c->table[t->hash % c->nbuckets];
    while (*pp && *pp != t)
        pp = &(*pp)->next_hash;
    if (*pp)
        *pp = t->next_hash;
}

/* The entry for a key, referenced, counted as a hit or a miss; under mu. */
static sp_cached_tile *lookup(sp_tile_cache *c, const void *slide, int level,
                              int64_t col, int64_t row) {
    uint64_t h = key_hash(slide, level, col, row);
    sp_cached_tile *t = c->table[h % c->nbuckets];
    while (t && !(t->hash == h && t->slide == slide && t->level == level &&
                  t->col == col && t->row == row))
        t = t->next_hash;
    if (t) {
        lru_unlink(c, t);
        lru_push_front(c, t);
        atomic_fetch_add(&t->refs, 1);
        c->hits++;
    } else {
        c->misses++;
    }
    return t;
}

sp_cached_tile *sp__tile_cache_get(sp_tile_cache *c, const void *slide,
                                   int level, int64_t col, int64_t row) {
    pthread_mutex_lock(&c->mu);
    sp_cached_tile *t = lookup(c, slide, level, col, row);
    pthread_mutex_unlock(&c->mu);
    return t;
}

static flight **find_flight(sp_tile_cache *c, const void *slide, int level,
                            int64_t col, int64_t row) {
    flight **pp = &c->flights;
    while (*pp && !((*pp)->slide == slide && (*pp)->level == level &&
                    (*pp)->col == col && (*pp)->row == row))
        pp = &(*pp)->next;
    return pp;
}

sp_cached_tile *sp__tile_cache_claim(sp_tile_cache *c, const void *slide,
                                     int level, int64_t col, int64_t row,
                                     bool *claimed) {
    *claimed = false;
    pthread_mutex_lock(&c->mu);
    sp_cached_tile *t = lookup(c, slide, level, col, row);
    if (t) {
        pthread_mutex_unlock(&c->mu);
        return t;
    }
    flight *f = *find_flight(c, slide, level, col, row);
    if (!f) {
        f = calloc(1, sizeof *f);
        if (f) { /* without memory for a flight: render unshared */
            f->slide = slide;
            f->level = level;
            f->col = col;
            f->row = row;
            f->next = c->flights;
            c->flights = f;
        }
        *claimed = true;
        pthread_mutex_unlock(&c->mu);
        return NULL;
    }
    /* someone renders it: wait for the result (NULL when that failed) */
    f->waiters++;
    c->waits++;
    while (!f->done)
        pthread_cond_wait(&c->cv, &c->mu);
    t = f->result;
    if (t)
        atomic_fetch_add(&t->refs, 1);
    if (--f->waiters == 0) {
        sp__cached_tile_unref(f->result);
        free(f);
    }
    pthread_mutex_unlock(&c->mu);
    return t;
}

void sp__tile_cache_land(sp_tile_cache *c, const void *slide, int level,
                         int64_t col, int64_t row, sp_cached_tile *t) {
    pthread_mutex_lock(&c->mu);
    flight **pp = find_flight(c, slide, level, col, row), *f = *pp;
    if (f) {
        *pp = f->next;
        f->done = true;
        if (f->waiters == 0) {
            free(f);
        } else {
            if (t)
                atomic_fetch_add(&t->refs, 1); /* the waiters' */
            f->result = t;
            pthread_cond_broadcast(&c->cv);
        }
    }
    pthread_mutex_unlock(&c->mu);
}

sp_cached_tile *sp__tile_cache_put(sp_tile_cache *c, const void *slide,
                                   int level, int64_t col, int64_t row,
                                   const void *data, size_t n) {
    sp_cached_tile *t = malloc(sizeof *t + n);
    if (!t)
        return NULL;
    memset(t, 0, sizeof *t);
    t->slide = slide;
    t->level = level;
    t->col = col;
    t->row = row;
    t->hash = key_hash(slide, level, col, row);
    t->size = n;
    memcpy(t->data, data, n);
    atomic_init(&t->refs, 1); /* the caller's */
    size_t cost = sizeof *t + n;
    if (cost > c->max_bytes / 4)
        return t; /* too big to keep: served once, not cached */
    pthread_mutex_lock(&c->mu);
    /* another thread may have rendered it meanwhile: replace */
    sp_cached_tile *old = c->table[t->hash % c->nbuckets];
    while (old && !(old->hash == t->hash && old->slide == slide &&
                    old->level == level && old->col == col && old->row == row))
        old = old->next_hash;
    if (old) {
        table_remove(c, old);
        lru_unlink(c, old);
        c->bytes -= sizeof *old + old->size;
        c->entries--;
        sp__cached_tile_unref(old);
    }
    while (c->tail && c->bytes + cost > c->max_bytes) {
        sp_cached_tile *v = c->tail;
        table_remove(c, v);
        lru_unlink(c, v);
        c->bytes -= sizeof *v + v->size;
        c->entries--;
        sp__cached_tile_unref(v);
    }
    atomic_fetch_add(&t->refs, 1); /* the cache's */
    t->next_hash = c->table[t->hash % c->nbuckets];
    c->table[t->hash % c->nbuckets] = t;
    lru_push_front(c, t);
    c->bytes += cost;
    c->entries++;
    pthread_mutex_unlock(&c->mu);
    return t;
}

const void *sp__cached_tile_data(const sp_cached_tile *t) { return t->data; }
size_t sp__cached_tile_size(const sp_cached_tile *t) { return t->size; }

void sp__tile_cache_stats(sp_tile_cache *c, size_t *bytes, size_t *entries,
                          uint64_t *hits, uint64_t *misses, uint64_t *waits) {
    pthread_mutex_lock(&c->mu);
    if (waits)
        *waits = c->waits;
    *bytes = c->bytes;
    *entries = c->entries;
    *hits = c->hits;
    *misses = c->misses;
    pthread_mutex_unlock(&c->mu);
}
