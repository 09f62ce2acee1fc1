/* batch: this process's children. Each slide runs in a forked child
 * (batch_child.c); the children are watched through their pipes, reaped,
 * and signalled on a cancel. Used by the coordinator's loop
 * (batch_sched.c) and by a worker of a batch over several processes
 * (batch_work.c) alike. */
#include "batch_private.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

bool sp__local_init(sp__local *l, int threads) {
    *l = (sp__local){0};
    l->threads = l->free = threads;
    /* every running slide holds at least one thread */
    l->cap = threads > 0 ? (size_t)threads : 1;
    l->run = calloc(l->cap, sizeof *l->run);
    l->done = calloc(l->cap, sizeof *l->done);
    l->pfd = calloc(2 * l->cap, sizeof *l->pfd);
    l->pown = calloc(2 * l->cap, sizeof *l->pown);
    return l->run && l->done && l->pfd && l->pown;
}

void sp__local_free(sp__local *l) {
    free(l->run);
    free(l->done);
    free(l->pfd);
    free(l->pown);
    *l = (sp__local){0};
}

bool sp__local_start(sp_batch *b, sp__local *l, sp__bslide *s) {
    if (l->nrun >= l->cap)
        return false;
    if (!sp__batch_spawn(b, s))
        return false;
    if (s->pub.status == SP_BATCH_RUNNING) {
        l->run[l->nrun++] = s;
        l->free -= s->pub.threads;
    }
    return true;
}

/* Close the pipe `fd` of `s` once it has said all it will. */
static void close_pipe(sp__bslide *s, int fd) {
    close(fd);
    if (fd == s->fd_rec)
        s->fd_rec = -1;
    else
        s->fd_err = -1;
}

bool sp__local_wait(sp_batch *b, sp__local *l, int timeout_ms, sp_error *err) {
    l->ndone = 0;
    nfds_t np = 0;
    for (size_t i = 0; i < l->nrun; i++) {
        if (l->run[i]->fd_rec >= 0) {
            l->pfd[np] =
                (struct pollfd){.fd = l->run[i]->fd_rec, .events = POLLIN};
            l->pown[np++] = l->run[i];
        }
        if (l->run[i]->fd_err >= 0) {
            l->pfd[np] =
                (struct pollfd){.fd = l->run[i]->fd_err, .events = POLLIN};
            l->pown[np++] = l->run[i];
        }
    }
    int pr = poll(l->pfd, np, timeout_ms);
    if (pr < 0 && errno != EINTR)
        return sp_error_errno(err, SP_ERR_INTERNAL, NULL, errno, "poll");
    for (nfds_t k = 0; pr > 0 && k < np; k++)
        if (l->pfd[k].revents && !sp__batch_drain(l->pown[k], l->pfd[k].fd))
            close_pipe(l->pown[k], l->pfd[k].fd);
    /* reap the children whose pipes are closed, or that exited */
    for (size_t i = 0; i < l->nrun;) {
        sp__bslide *s = l->run[i];
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
                    close_pipe(s, s->fd_rec);
                }
                if (s->fd_err >= 0) {
                    sp__batch_drain(s, s->fd_err);
                    close_pipe(s, s->fd_err);
                }
            }
        }
        if (r != s->pid) {
            i++;
            continue;
        }
        l->free += s->pub.threads;
        l->run[i] = l->run[--l->nrun];
        sp__batch_finish(b, s, st);
        l->done[l->ndone++] = s;
    }
    return true;
}

void sp__local_signal(sp__local *l, int sig) {
    for (size_t i = 0; i < l->nrun; i++)
        kill(l->run[i]->pid, sig);
}

void sp__local_abort(sp__local *l) {
    for (size_t i = 0; i < l->nrun; i++) {
        sp__bslide *s = l->run[i];
        kill(s->pid, SIGKILL);
        waitpid(s->pid, NULL, 0);
        s->pid = -1;
        if (s->fd_rec >= 0)
            close_pipe(s, s->fd_rec);
        if (s->fd_err >= 0)
            close_pipe(s, s->fd_err);
        if (s->tmpdir)
            sp_remove_tree(s->tmpdir, NULL);
        s->pub.status = SP_BATCH_INTERRUPTED;
        sp__set_str(&s->error, "interrupted");
        sp__bslide_sync(s);
    }
    l->nrun = 0;
}
