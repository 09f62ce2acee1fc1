/* batch: the loop. Slides start largest first; when the next one does
 * not fit in the free threads, the largest queued one that fits starts
 * instead. Children are watched through their pipes and reaped; a cancel
 * sends them SIGTERM, then SIGKILL after 30 s or a second cancel. */
#include "batch_private.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static int cmp_size(const void *x, const void *y) {
    const sp__bslide *a = *(sp__bslide *const *)x, *b = *(sp__bslide *const *)y;
    if (a->pub.megapixels != b->pub.megapixels)
        return a->pub.megapixels > b->pub.megapixels ? -1 : 1;
    return strcmp(a->id, b->id);
}

bool sp__batch_run_all(sp_batch *b, sp_error *err) {
    size_t nq = 0;
    sp__bslide **queue = calloc(b->n ? b->n : 1, sizeof *queue);
    sp__bslide **run = calloc(b->n ? b->n : 1, sizeof *run);
    struct pollfd *pfd = calloc(2 * (b->n ? b->n : 1), sizeof *pfd);
    sp__bslide **pown = calloc(2 * (b->n ? b->n : 1), sizeof *pown);
    bool ok = false;
    if (!queue || !run || !pfd || !pown) {
        sp_error_set(err, SP_ERR_NOMEM, NULL, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < b->n; i++)
        if (b->v[i]->pub.status == SP_BATCH_PENDING)
            queue[nq++] = b->v[i];
    qsort(queue, nq, sizeof *queue, cmp_size);
    size_t nrun = 0, head = 0;
    int free_threads = b->o.threads;
    double last_tick = 0;
    for (;;) {
        if (b->o.cancel && *b->o.cancel && !b->cancelling) {
            b->cancelling = true;
            b->cancel_time = sp_now();
            for (size_t i = 0; i < nrun; i++)
                kill(run[i]->pid, SIGTERM);
        }
        if (b->cancelling && nrun &&
            ((b->o.cancel && *b->o.cancel > 1) ||
             sp_now() - b->cancel_time > 30)) {
            for (size_t i = 0; i < nrun; i++)
                kill(run[i]->pid, SIGKILL);
        }
        /* start what fits: the largest first, else the largest that fits */
        while (!b->cancelling && head < nq) {
            size_t pick = nq;
            for (size_t k = head; k < nq; k++)
                if (queue[k] && queue[k]->pub.threads <= free_threads) {
                    pick = k;
                    break;
                }
            if (pick == nq)
                break;
            sp__bslide *s = queue[pick];
            memmove(queue + head + 1, queue + head,
                    (pick - head) * sizeof *queue);
            queue[head++] = s;
            if (!sp__batch_spawn(b, s)) {
                sp_error_set(err, SP_ERR_NOMEM, NULL, "out of memory");
                goto out;
            }
            if (s->pub.status == SP_BATCH_RUNNING) {
                run[nrun++] = s;
                free_threads -= s->pub.threads;
                sp__batch_emit(b, SP_BATCH_EV_START, s, NULL);
            } else {
                sp__batch_emit(b, SP_BATCH_EV_FINISH, s, NULL);
            }
            sp__batch_maybe_summary(b);
        }
        if (nrun == 0 && (head >= nq || b->cancelling))
            break;
        nfds_t np = 0;
        for (size_t i = 0; i < nrun; i++) {
            if (run[i]->fd_rec >= 0) {
                pfd[np] =
                    (struct pollfd){.fd = run[i]->fd_rec, .events = POLLIN};
                pown[np++] = run[i];
            }
            if (run[i]->fd_err >= 0) {
                pfd[np] =
                    (struct pollfd){.fd = run[i]->fd_err, .events = POLLIN};
                pown[np++] = run[i];
            }
        }
        int pr = poll(pfd, np, 250);
        if (pr < 0 && errno != EINTR) {
            sp_error_errno(err, SP_ERR_INTERNAL, NULL, errno, "poll");
            goto out;
        }
        for (nfds_t k = 0; pr > 0 && k < np; k++) {
            if (!pfd[k].revents)
                continue;
            sp__bslide *s = pown[k];
            if (!sp__batch_drain(s, pfd[k].fd)) {
                close(pfd[k].fd);
                if (pfd[k].fd == s->fd_rec)
                    s->fd_rec = -1;
                else
                    s->fd_err = -1;
            }
        }
        /* reap the children whose pipes are closed */
        for (size_t i = 0; i < nrun;) {
            sp__bslide *s = run[i];
            int st = 0;
            pid_t r = 0;
            if (s->fd_rec < 0 && s->fd_err < 0) {
                while ((r = waitpid(s->pid, &st, 0)) < 0 && errno == EINTR)
                    ;
            } else {
                r = waitpid(s->pid, &st, WNOHANG);
                if (r == s->pid) {
                    /* exited: whatever is left in the pipes comes now */
                    if (s->fd_rec >= 0) {
                        sp__batch_drain(s, s->fd_rec);
                        close(s->fd_rec);
                        s->fd_rec = -1;
                    }
                    if (s->fd_err >= 0) {
                        sp__batch_drain(s, s->fd_err);
                        close(s->fd_err);
                        s->fd_err = -1;
                    }
                }
            }
            if (r != s->pid) {
                i++;
                continue;
            }
            free_threads += s->pub.threads;
            run[i] = run[--nrun];
            sp__batch_finish(b, s, st);
            sp__batch_emit(b, SP_BATCH_EV_FINISH, s, NULL);
            sp__batch_maybe_summary(b);
        }
        double now = sp_now();
        if (now - last_tick >= 0.25) {
            last_tick = now;
            sp__batch_emit(b, SP_BATCH_EV_TICK, NULL, NULL);
        }
    }
    /* slides never started because of the interruption */
    for (size_t k = head; k < nq; k++)
        if (queue[k]->pub.status == SP_BATCH_PENDING) {
            queue[k]->pub.status = SP_BATCH_INTERRUPTED;
            sp__set_str(&queue[k]->error, "not started: batch interrupted");
            sp__bslide_sync(queue[k]);
        }
    ok = true;
out:
    if (!ok) {
        /* only on out of memory or a poll failure: stop the children */
        for (size_t i = 0; run && i < b->n; i++) {
            sp__bslide *s = b->v[i];
            if (s->pid > 0) {
                kill(s->pid, SIGKILL);
                waitpid(s->pid, NULL, 0);
                s->pid = -1;
                if (s->tmpdir)
                    sp_remove_tree(s->tmpdir, NULL);
                s->pub.status = SP_BATCH_INTERRUPTED;
            }
        }
    }
    free(queue);
    free(run);
    free(pfd);
    free(pown);
    return ok;
}
