/* batch: a worker of a batch over several processes. It says hello to
 * rank 0 (its threads, its host), then runs each slide it is sent in a
 * forked child exactly as a local batch does (batch_child.c: the folder
 * renamed into place, done.json written), and sends the outcome back.
 * Rank 0 only sends what fits the worker's free threads, so a slide
 * starts as soon as it comes. A cancel from rank 0 (or this process's own
 * SIGINT/SIGTERM) interrupts the running slides, a second one kills
 * them; "stop" ends the worker once its slides are done. */
#include "batch_private.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>

#define WAIT_MS 2 /* between looks at the children and the transport */
#define IDLE_MS 100

typedef struct {
    sp_batch *b;
    const sp_batch_transport *t;
    sp__local local;
    sp_buf msg;
    bool stopping;
    /* cancels: rank 0's messages and our own signals (mpirun forwards a
     * Ctrl-C to every rank, and rank 0 says so too: one is one cancel) */
    int cancels, from_rank0;
} worker;

static bool send_result(worker *W, sp__bslide *s, sp_error *err) {
    sp_buf_reset(&W->msg);
    if (!sp__wire_result(&W->msg, s))
        return sp_error_set(err, SP_ERR_NOMEM, NULL, "out of memory");
    return W->t->send(W->t->ctx, 0, W->msg.data, W->msg.len, err);
}

/* Keep `s` (the batch owns it from here) and start it. */
static bool start(worker *W, sp__bslide *s, sp_error *err) {
    sp_batch *b = W->b;
    if (b->n == b->cap) {
        size_t cap = b->cap ? 2 * b->cap : 64;
        sp__bslide **v = realloc(b->v, cap * sizeof *v);
        if (!v) {
            sp__bslide_free(s);
            return sp_error_set(err, SP_ERR_NOMEM, NULL, "out of memory");
        }
        b->v = v;
        b->cap = cap;
    }
    b->v[b->n++] = s;
    s->pub.rank = W->t->rank;
    s->pub.host = W->t->host;
    if (s->pub.threads > W->local.free || W->cancels) {
        /* rank 0 keeps count, so this is not ours to run now */
        sp__bslide_fail(s, "start", SP_ERR_INTERNAL,
                        W->cancels ? "not started: batch interrupted"
                                   : "sent more than this worker's threads");
        if (W->cancels)
            s->pub.status = SP_BATCH_INTERRUPTED;
        return send_result(W, s, err);
    }
    if (!sp__local_start(b, &W->local, s))
        return sp_error_set(err, SP_ERR_NOMEM, NULL, "out of memory");
    sp__batch_emit(b,
                   s->pub.status == SP_BATCH_RUNNING ? SP_BATCH_EV_START
                                                     : SP_BATCH_EV_FINISH,
                   s, NULL);
    return s->pub.status == SP_BATCH_RUNNING || send_result(W, s, err);
}

/* Raise the cancel level to `level` (1: interrupt, 2: kill). */
static void cancel(worker *W, int level) {
    if (level <= W->cancels)
        return;
    W->cancels = level;
    W->b->cancelling = true;
    W->b->cancel_time = sp_now();
    sp__local_signal(&W->local, level > 1 ? SIGKILL : SIGTERM);
}

/* Handle what rank 0 sent; wait up to `timeout_ms` for the first. */
static bool receive(worker *W, int timeout_ms, sp_error *err) {
    for (;;) {
        int from = -1;
        char *text = NULL;
        size_t len = 0;
        int got = W->t->recv(W->t->ctx, timeout_ms, &from, &text, &len, err);
        if (got <= 0)
            return got == 0;
        timeout_ms = 0;
        sp__msg m = {0};
        bool ok = from == 0 && sp__wire_parse(text, len, &m, err);
        free(text);
        if (!ok)
            return from == 0 ||
                   sp_error_set(err, SP_ERR_INTERNAL, NULL,
                                "a message from rank %d, not rank 0", from);
        switch (m.kind) {
        case SP__MSG_RUN:
            ok = start(W, m.slide, err);
            m.slide = NULL;
            break;
        case SP__MSG_STOP: W->stopping = true; break;
        case SP__MSG_CANCEL: cancel(W, ++W->from_rank0); break;
        default:
            ok = sp_error_set(err, SP_ERR_INTERNAL, NULL,
                              "rank 0 sent an unexpected message");
        }
        sp__msg_clear(&m);
        if (!ok)
            return false;
    }
}

bool sp_batch_work(const sp_batch_opts *o, sp_error *err) {
    const sp_batch_transport *t = o->transport;
    if (!t || t->rank <= 0)
        return sp_error_set(err, SP_ERR_USAGE, NULL,
                            "sp_batch_work is for a worker (rank > 0)");
    worker W = {.t = t};
    sp_buf_init(&W.msg);
    bool ok = false;
    W.b = sp_batch_new(o, err);
    if (!W.b)
        return false;
    sp_batch *b = W.b;
    b->t0 = sp_now();
    if (!sp__local_init(&W.local, b->o.threads)) {
        sp_error_set(err, SP_ERR_NOMEM, NULL, "out of memory");
        goto out;
    }
    if (!sp__wire_hello(&W.msg, b->o.threads, t->host)) {
        sp_error_set(err, SP_ERR_NOMEM, NULL, "out of memory");
        goto out;
    }
    if (!t->send(t->ctx, 0, W.msg.data, W.msg.len, err))
        goto out;
    for (;;) {
        if (o->cancel && *o->cancel)
            cancel(&W, *o->cancel);
        if (W.stopping && W.local.nrun == 0)
            break;
        if (!sp__local_wait(b, &W.local, W.local.nrun ? WAIT_MS : 0, err))
            goto out;
        for (size_t i = 0; i < W.local.ndone; i++) {
            sp__bslide *s = W.local.done[i];
            sp__batch_emit(b, SP_BATCH_EV_FINISH, s, NULL);
            if (!send_result(&W, s, err))
                goto out;
        }
        if (!receive(&W, W.local.nrun ? 0 : IDLE_MS, err))
            goto out;
    }
    ok = true;
out:
    if (!ok)
        sp__local_abort(&W.local);
    sp__local_free(&W.local);
    sp_buf_free(&W.msg);
    sp_batch_free(b);
    return ok;
}
