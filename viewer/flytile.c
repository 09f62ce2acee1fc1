/* On-the-fly tiles: which read serves a Deep Zoom level, and the slides'
 * overviews.
 *
 * A level whose full tiles read at most SP_RENDER_EXACT_MAX_PIXELS of
 * level 0 (or of a native level) is rendered per request with a pooled
 * reader. The levels below that would read more of level 0 (slides
 * without suitable native levels) are cut from the slide's overview: one
 * Deep Zoom level kept whole in memory -- the largest of those levels
 * that fits the per-slide budget -- built once by streaming level 0 in
 * bands (single-flight: whoever asks while it is built waits for it). At
 * most `overviews` of them are in memory or being built at once; the
 * least recently used idle one is dropped to make room. Levels between
 * the exact ones and the overview (huge slides only) read level 0 in
 * bands per request: bounded memory, more time. */
#include "viewer_private.h"

#include <stdio.h>
#include <string.h>

void sp__fly_plan(sp_catalog *c, sp_vslide *s) {
    int wide = -1; /* the largest Deep Zoom level read in bands */
    for (int lv = 0; lv < s->dz_levels && lv < SP_VIEWER_MAX_LEVELS; lv++) {
        s->path[lv] = sp_tile_render_path(s->slide, &s->topts, lv);
        if (s->path[lv] == SP_RENDER_WIDE)
            wide = lv;
    }
    s->ov_level = -1;
    if (wide < 0)
        return;
    int fit = sp_tile_overview_level(s->width, s->height, c->ov_pixels);
    s->ov_level = fit < wide ? fit : wide;
}

/* The overview of s, referenced (release with ov_put); NULL when it cannot
 * be built (why in s->ov_error, and err). */
static sp_tile_overview *ov_get(sp_catalog *c, sp_vslide *s, sp_error *err) {
    pthread_mutex_lock(&c->ov_mu);
    for (;;) {
        if (s->ov) {
            s->ov_users++;
            s->ov_used = ++c->ov_tick;
            sp_tile_overview *v = s->ov;
            pthread_mutex_unlock(&c->ov_mu);
            return v;
        }
        if (s->ov_failed) {
            sp_error_set(err, SP_ERR_INPUT, s->slide_path, "%s", s->ov_error);
            pthread_mutex_unlock(&c->ov_mu);
            return NULL;
        }
        if (s->ov_building) { /* single flight: wait for the builder */
            pthread_cond_wait(&c->ov_cv, &c->ov_mu);
            continue;
        }
        if (c->ov_resident < c->ov_max)
            break;
        /* make room: drop the least recently used idle overview */
        sp_vslide *victim = NULL;
        for (size_t i = 0; i < c->n; i++) {
            sp_vslide *v = c->slides[i];
            if (v->ov && v->ov_users == 0 &&
                (!victim || v->ov_used < victim->ov_used))
                victim = v;
        }
        if (!victim) {
            pthread_cond_wait(&c->ov_cv, &c->ov_mu);
            continue;
        }
        sp_tile_overview_free(victim->ov);
        victim->ov = NULL;
        c->ov_resident--;
    }
    c->ov_resident++;
    s->ov_building = true;
    pthread_mutex_unlock(&c->ov_mu);

    sp_tile_overview *v = NULL;
    bool ok = sp_tile_overview_build(s->slide, &s->topts, s->ov_level,
                                     c->ov_threads, &v, err);

    pthread_mutex_lock(&c->ov_mu);
    s->ov_building = false;
    c->ov_builds++;
    if (ok) {
        s->ov = v;
        s->ov_users = 1;
        s->ov_used = ++c->ov_tick;
    } else {
        c->ov_resident--;
        if (err->code != SP_ERR_NOMEM) { /* a bad slide stays bad */
            s->ov_failed = true;
            snprintf(s->ov_error, sizeof s->ov_error, "%.255s", err->msg);
        }
    }
    pthread_cond_broadcast(&c->ov_cv);
    pthread_mutex_unlock(&c->ov_mu);
    return v;
}

static void ov_put(sp_catalog *c, sp_vslide *s) {
    pthread_mutex_lock(&c->ov_mu);
    if (--s->ov_users == 0)
        pthread_cond_broadcast(&c->ov_cv);
    pthread_mutex_unlock(&c->ov_mu);
}

bool sp__fly_render(sp_catalog *c, sp_vslide *s, int level, int64_t col,
                    int64_t row, sp_buf *out, sp_error *err) {
    if (s->ov_level >= 0 && level <= s->ov_level &&
        level < SP_VIEWER_MAX_LEVELS && s->path[level] == SP_RENDER_WIDE) {
        sp_tile_overview *v = ov_get(c, s, err);
        if (!v)
            return false;
        bool ok =
            sp_tile_overview_render(v, &s->topts, level, col, row, out, err);
        ov_put(c, s);
        return ok;
    }
    sp_reader *rd = sp__slide_reader_get(c, s, err);
    if (!rd)
        return false;
    bool ok =
        sp_tile_render(rd, s->slide, &s->topts, level, col, row, out, err);
    sp__slide_reader_put(c, s, rd, !ok);
    return ok;
}
