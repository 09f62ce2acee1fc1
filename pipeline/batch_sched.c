/* batch: the loop. Slides start largest first; when the next one does
 * not fit in the free threads, the largest queued one that fits starts
 * instead. With a transport (a batch over several processes) rank 0 is
 * one more worker among them: each worker says how many threads it has,
 * gets the largest queued slide that fits its free threads, and sends
 * the outcome back; its free threads are known here, so a worker is only
 * sent what it can start at once. A cancel interrupts the running slides
 * (here with SIGTERM, on the workers by a message), then kills them after
 * 30 s or a second cancel. */
#include "batch_private.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* how long the loop sleeps at most: short when workers may be waiting
 * for their next slide (their round trip), longer when all is local */
#define WAIT_LOCAL_MS 250
#define WAIT_REMOTE_MS 2
/* seconds a worker has to answer the kill that follows a cancel */
#define ABANDON_S 5

static int cmp_size(const void *x, const void *y) {
    const sp__bslide *a = *(sp__bslide *const *)x, *b = *(sp__bslide *const *)y;
    if (a->pub.megapixels != b->pub.megapixels)
        return a->pub.megapixels > b->pub.megapixels ? -1 : 1;
    return strcmp(a->id, b->id);
}

size_t sp__batch_pick(sp__bslide *const *queue, size_t head, size_t nq,
                      int threads, int free) {
    for (size_t k = head; k < nq; k++) {
        int want = queue[k]->want > threads ? threads : queue[k]->want;
        if (want < 1)
            want = 1;
        if (want <= free)
            return k;
    }
    return nq;
}

typedef struct {
    bool ready;
    int threads, free;
    size_t running;
    char *host;
} worker;

typedef struct {
    sp_batch *b;
    sp_batch_transport *t;
    worker *w; /* [1..size) */
    sp__local local;
    sp__bslide **queue;
    size_t nq, head;
    sp_buf msg;
} loop;

static void finished(loop *L, sp__bslide *s) {
    sp__batch_emit(L->b, SP_BATCH_EV_FINISH, s, NULL);
    sp__batch_maybe_summary(L->b);
}

static bool send_simple(loop *L, int to, sp__msg_kind kind, sp_error *err) {
    sp_buf_reset(&L->msg);
    if (!sp__wire_simple(&L->msg, kind))
        return sp_error_set(err, SP_ERR_NOMEM, NULL, "out of memory");
    return L->t->send(L->t->ctx, to, L->msg.data, L->msg.len, err);
}

/* Take the slide at `pick` off the queue. */
static sp__bslide *take(loop *L, size_t pick) {
    sp__bslide *s = L->queue[pick];
    memmove(L->queue + L->head + 1, L->queue + L->head,
            (pick - L->head) * sizeof *L->queue);
    L->queue[L->head++] = s;
    return s;
}

/* Start what fits: here, then on each worker with free threads. */
static bool dispatch(loop *L, sp_error *err) {
    sp_batch *b = L->b;
    for (;;) {
        size_t pick = sp__batch_pick(L->queue, L->head, L->nq, L->local.threads,
                                     L->local.free);
        if (pick == L->nq || L->local.threads <= 0)
            break;
        sp__bslide *s = take(L, pick);
        s->pub.threads =
            s->want > L->local.threads ? L->local.threads : s->want;
        if (L->t) {
            /* rank 0 runs slides too */
            sp__set_str(&s->host, L->t->host);
            s->pub.host = s->host;
        }
        if (!sp__local_start(b, &L->local, s))
            return sp_error_set(err, SP_ERR_NOMEM, NULL, "out of memory");
        if (s->pub.status == SP_BATCH_RUNNING)
            sp__batch_emit(b, SP_BATCH_EV_START, s, NULL);
        else
            finished(L, s);
    }
    for (int r = 1; L->t && r < L->t->size; r++) {
        worker *w = &L->w[r];
        while (w->ready && L->head < L->nq) {
            size_t pick =
                sp__batch_pick(L->queue, L->head, L->nq, w->threads, w->free);
            if (pick == L->nq)
                break;
            sp__bslide *s = take(L, pick);
            s->pub.threads = s->want > w->threads ? w->threads : s->want;
            s->pub.rank = r;
            sp__set_str(&s->host, w->host);
            s->pub.host = s->host;
            s->pub.status = SP_BATCH_RUNNING;
            s->t0 = sp_now();
            sp_buf_reset(&L->msg);
            if (!sp__wire_run(&L->msg, s))
                return sp_error_set(err, SP_ERR_NOMEM, NULL, "out of memory");
            if (!L->t->send(L->t->ctx, r, L->msg.data, L->msg.len, err))
                return false;
            w->free -= s->pub.threads;
            w->running++;
            sp__batch_emit(b, SP_BATCH_EV_START, s, NULL);
            /* the summary on disk names the slides in flight, and where */
            sp__batch_maybe_summary(b);
        }
    }
    return true;
}

/* Handle what the workers sent; wait up to `timeout_ms` for the first. */
static bool receive(loop *L, int timeout_ms, sp_error *err) {
    for (;;) {
        int from = -1;
        char *text = NULL;
        size_t len = 0;
        int got = L->t->recv(L->t->ctx, timeout_ms, &from, &text, &len, err);
        if (got < 0)
            return false;
        if (got == 0)
            return true;
        timeout_ms = 0;
        sp__msg m = {0};
        bool ok =
            from > 0 && from < L->t->size && sp__wire_parse(text, len, &m, err);
        free(text);
        if (!ok) {
            if (from <= 0 || from >= L->t->size)
                sp_error_set(err, SP_ERR_INTERNAL, NULL,
                             "a message from an unknown rank %d", from);
            return false;
        }
        worker *w = &L->w[from];
        if (m.kind == SP__MSG_HELLO && !w->ready) {
            w->ready = true;
            w->threads = w->free = m.threads > 0 ? m.threads : 1;
            w->host = m.host;
            m.host = NULL;
        } else if (m.kind == SP__MSG_RESULT && m.slide &&
                   (m.slide->wire >= L->b->n ||
                    L->b->v[m.slide->wire]->pub.status != SP_BATCH_RUNNING ||
                    L->b->v[m.slide->wire]->pub.rank != from)) {
            /* late: a slide given up after a cancel; nothing to do */
        } else if (m.kind == SP__MSG_RESULT && m.slide) {
            sp__bslide *s = L->b->v[m.slide->wire];
            sp__wire_apply_result(s, m.slide);
            w->free += s->pub.threads;
            w->running--;
            if (s->pub.status == SP_BATCH_DONE) {
                L->b->mp_done += s->pub.megapixels;
                L->b->counts.tiles += s->pub.tiles > 0 ? s->pub.tiles : 0;
            }
            finished(L, s);
        } else {
            sp__msg_clear(&m);
            return sp_error_set(err, SP_ERR_INTERNAL, NULL,
                                "rank %d sent an unexpected message", from);
        }
        sp__msg_clear(&m);
    }
}

/* The slides still out on workers after a cancel and a kill: interrupted,
 * saying where they were. */
static void abandon(loop *L) {
    sp_batch *b = L->b;
    for (size_t i = 0; i < b->n; i++) {
        sp__bslide *s = b->v[i];
        if (s->pub.status != SP_BATCH_RUNNING || s->pub.rank <= 0)
            continue;
        char msg[400];
        snprintf(msg, sizeof msg,
                 "interrupted: in flight on rank %d (%s), which did not "
                 "answer the cancel",
                 s->pub.rank, s->host ? s->host : "?");
        s->pub.status = SP_BATCH_INTERRUPTED;
        sp__set_str(&s->error, msg);
        sp__bslide_sync(s);
        finished(L, s);
    }
    for (int r = 1; r < L->t->size; r++)
        L->w[r].running = 0;
}

static size_t remote_running(const loop *L) {
    size_t n = 0;
    for (int r = 1; L->t && r < L->t->size; r++)
        n += L->w[r].running;
    return n;
}

bool sp__batch_run_all(sp_batch *b, sp_error *err) {
    loop L = {.b = b, .t = b->o.transport};
    sp_buf_init(&L.msg);
    bool ok = false;
    L.queue = calloc(b->n ? b->n : 1, sizeof *L.queue);
    if (L.t)
        L.w = calloc((size_t)L.t->size, sizeof *L.w);
    if (!L.queue || (L.t && !L.w) || !sp__local_init(&L.local, b->o.threads)) {
        sp_error_set(err, SP_ERR_NOMEM, NULL, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < b->n; i++)
        if (b->v[i]->pub.status == SP_BATCH_PENDING)
            L.queue[L.nq++] = b->v[i];
    qsort(L.queue, L.nq, sizeof *L.queue, cmp_size);
    double last_tick = 0, kill_time = 0;
    int cancels_sent = 0;
    for (;;) {
        if (b->o.cancel && *b->o.cancel && !b->cancelling) {
            b->cancelling = true;
            b->cancel_time = sp_now();
        }
        /* a cancel: SIGTERM, then SIGKILL after 30 s or a second one */
        int level = !b->cancelling ? 0
                    : (b->o.cancel && *b->o.cancel > 1) ||
                            sp_now() - b->cancel_time > 30
                        ? 2
                        : 1;
        if (level > cancels_sent) {
            sp__local_signal(&L.local, level > 1 ? SIGKILL : SIGTERM);
            for (int r = 1; L.t && r < L.t->size; r++)
                if (L.w[r].running && !send_simple(&L, r, SP__MSG_CANCEL, err))
                    goto out;
            if (cancels_sent == 0 && L.t)
                /* at once: the summary on disk names the slides in flight
                 * and where, should this process not live to write more
                 * (mpirun ends every rank soon after one dies) */
                sp__batch_write_summaries(b, NULL);
            cancels_sent = level;
            kill_time = sp_now();
        }
        /* a worker that does not answer a cancel: its slides are given up */
        if (cancels_sent > 1 && remote_running(&L) &&
            sp_now() - kill_time > ABANDON_S)
            abandon(&L);
        if (!b->cancelling && !dispatch(&L, err))
            goto out;
        if (L.local.nrun == 0 && remote_running(&L) == 0 &&
            (L.head >= L.nq || b->cancelling))
            break;
        int wait = L.t ? WAIT_REMOTE_MS : WAIT_LOCAL_MS;
        if (!sp__local_wait(b, &L.local, L.local.nrun ? wait : 0, err))
            goto out;
        for (size_t i = 0; i < L.local.ndone; i++)
            finished(&L, L.local.done[i]);
        if (L.t && !receive(&L, L.local.nrun ? 0 : wait, err))
            goto out;
        if (!L.t && L.local.nrun == 0 && L.head < L.nq && !b->cancelling)
            continue;
        double now = sp_now();
        if (now - last_tick >= 0.25) {
            last_tick = now;
            sp__batch_emit(b, SP_BATCH_EV_TICK, NULL, NULL);
        }
    }
    /* slides never started because of the interruption */
    for (size_t k = L.head; k < L.nq; k++)
        if (L.queue[k]->pub.status == SP_BATCH_PENDING) {
            L.queue[k]->pub.status = SP_BATCH_INTERRUPTED;
            sp__set_str(&L.queue[k]->error, "not started: batch interrupted");
            sp__bslide_sync(L.queue[k]);
        }
    ok = true;
out:
    if (!ok)
        sp__local_abort(&L.local);
    /* every worker stops, also one that never said hello */
    if (L.t) {
        sp_error se = {0};
        sp_batch_stop_workers(L.t, &se);
    }
    for (int r = 1; L.t && L.w && r < L.t->size; r++)
        free(L.w[r].host);
    free(L.w);
    sp__local_free(&L.local);
    free(L.queue);
    sp_buf_free(&L.msg);
    return ok;
}

bool sp_batch_stop_workers(sp_batch_transport *t, sp_error *err) {
    if (!t || t->rank != 0 || t->stopped)
        return true;
    t->stopped = true;
    sp_buf m;
    sp_buf_init(&m);
    bool ok = sp__wire_simple(&m, SP__MSG_STOP) ||
              sp_error_set(err, SP_ERR_NOMEM, NULL, "out of memory");
    for (int r = 1; ok && r < t->size; r++)
        ok = t->send(t->ctx, r, m.data, m.len, err);
    sp_buf_free(&m);
    return ok;
}
