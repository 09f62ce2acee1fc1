/* The pool of slide readers behind on-the-fly tiles: idle readers kept
 * per slide, all of them counted against one bound for the catalogue
 * (a reader holds a private OpenSlide handle and its caches). */
#include "viewer_private.h"

sp_reader *sp__slide_reader_get(sp_catalog *c, sp_vslide *s, sp_error *err) {
    pthread_mutex_lock(&c->rd_mu);
    for (;;) {
        if (s->nidle > 0) {
            sp_reader *r = s->idle[--s->nidle];
            pthread_mutex_unlock(&c->rd_mu);
            return r;
        }
        if (c->rd_open < c->rd_max)
            break;
        /* all open: close an idle reader of another slide, else wait */
        sp_vslide *v = NULL;
        for (size_t i = 0; i < c->n && !v; i++)
            if (c->slides[i]->nidle > 0)
                v = c->slides[i];
        if (!v) {
            pthread_cond_wait(&c->rd_cv, &c->rd_mu);
            continue;
        }
        sp_reader *r = v->idle[--v->nidle];
        v->nmade--;
        c->rd_open--;
        pthread_mutex_unlock(&c->rd_mu);
        sp_reader_free(r);
        pthread_mutex_lock(&c->rd_mu);
    }
    c->rd_open++;
    s->nmade++;
    pthread_mutex_unlock(&c->rd_mu);
    /* opened outside the lock: a private OpenSlide handle per reader */
    sp_reader *r = sp_reader_create(s->slide, SP_READER_PRIVATE_HANDLE,
                                    s->topts.background, err);
    if (!r) {
        pthread_mutex_lock(&c->rd_mu);
        s->nmade--;
        c->rd_open--;
        pthread_cond_broadcast(&c->rd_cv);
        pthread_mutex_unlock(&c->rd_mu);
    }
    return r;
}

void sp__slide_reader_put(sp_catalog *c, sp_vslide *s, sp_reader *r,
                          bool spent) {
    pthread_mutex_lock(&c->rd_mu);
    if (spent || s->nidle >= SP_VIEWER_MAX_READERS) {
        s->nmade--;
        c->rd_open--;
        pthread_cond_broadcast(&c->rd_cv);
        pthread_mutex_unlock(&c->rd_mu);
        sp_reader_free(r);
        return;
    }
    s->idle[s->nidle++] = r;
    pthread_cond_broadcast(&c->rd_cv);
    pthread_mutex_unlock(&c->rd_mu);
}

void sp__slide_readers_free(sp_vslide *s) {
    for (int i = 0; i < s->nidle; i++)
        sp_reader_free(s->idle[i]);
    s->nidle = 0;
}
