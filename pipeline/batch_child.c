/* batch: one slide's job in a forked child. The child calls the slide
 * job (sp_run_slide) into OUTDIR/.<id>.tmp-<pid>/ and sends its result
 * record back as bytes over a pipe; a crash inside a library only fails
 * that slide. The parent reads the record, checks the outputs, writes
 * done.json and renames the folder into place. */
#include "batch_private.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- the child ---------------------------------------------------------- */

static volatile sig_atomic_t child_cancel;

static void on_child_signal(int sig) {
    (void)sig;
    child_cancel = 1;
}

/* In the forked child: run the slide's job, send the record on `fd`, exit
 * without the parent's atexit handlers. */
static void child_main(const sp_batch *b, const sp__bslide *s, const char *stem,
                       const char *h5, int fd) {
    static sp_run_result r;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_child_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);

    sp_run_opts o;
    sp_run_opts_default(&o);
    o.what = SP_RUN_TILES | SP_RUN_FEATURES;
    o.tiles_out = stem;
    o.features_out = h5;
    o.threads = s->pub.threads;
    o.cancel = &child_cancel;
    o.passthrough_if_possible = true; /* a slide that cannot be copied is
                                         encoded, not failed */
    /* what the sidecar records: the path below the input folder, or the
     * absolute path */
    char *abs = b->o.full_paths ? realpath(s->path, NULL) : NULL;
    o.source_name = b->o.full_paths ? (abs ? abs : s->path) : s->rel;
    /* the options as fingerprinted, after the tag */
    const char *p = s->params + strlen(SP__BATCH_FINGERPRINT_TAG);
    sp_error e = {0};
    if (!sp__batch_apply_options(*p ? p + 1 : NULL, &o, &e)) {
        sp_error named = {0};
        sp_error_set(&named, e.code, s->path, "%s", e.msg);
        r.code = named.code;
        memcpy(r.error, named.msg, sizeof r.error);
        snprintf(r.stage, sizeof r.stage, "open");
    } else {
        sp_run_slide(s->path, &o, &r, NULL);
    }
    _exit(sp_write_all(fd, &r, sizeof r) ? 0 : 1);
}

/* ---- the parent --------------------------------------------------------- */

static bool pipe_cloexec(int fds[2]) {
    if (pipe(fds) != 0)
        return false;
    fcntl(fds[0], F_SETFD, FD_CLOEXEC);
    fcntl(fds[1], F_SETFD, FD_CLOEXEC);
    return true;
}

static void set_nonblock(int fd) {
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0)
        fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

bool sp__batch_spawn(sp_batch *b, sp__bslide *s) {
    char tmpname[300];
    snprintf(tmpname, sizeof tmpname, ".%s.tmp-%ld", s->id, (long)getpid());
    char *final = sp_path_join(b->outdir, s->id);
    free(s->tmpdir);
    s->tmpdir = sp_path_join(b->outdir, tmpname);
    char *stem = NULL, *h5 = NULL;
    bool ok = false;
    sp_error e = {0};
    int pr[2] = {-1, -1}, pe[2] = {-1, -1};
    if (!final || !s->tmpdir || !sp__batch_out_names(s->tmpdir, &stem, &h5))
        goto out;
    ok = true;
    /* the stale result goes first, so its space is free for the new one */
    if (!sp_remove_tree(final, &e) || !sp_remove_tree(s->tmpdir, &e) ||
        !sp_mkdir_p(s->tmpdir, &e)) {
        sp__bslide_fail(s, "output", SP_ERR_OUTPUT, e.msg);
        goto out;
    }
    if (!pipe_cloexec(pr) || !pipe_cloexec(pe)) {
        sp_error_errno(&e, SP_ERR_INTERNAL, NULL, errno, "pipe");
        sp__bslide_fail(s, "start", SP_ERR_INTERNAL, e.msg);
        goto out;
    }
    pid_t parent = getpid();
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        sp_error_errno(&e, SP_ERR_INTERNAL, NULL, errno, "fork");
        sp__bslide_fail(s, "start", SP_ERR_INTERNAL, e.msg);
        goto out;
    }
    if (pid == 0) {
        /* die with the batch, even when it is killed outright */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(127);
        /* the other children's pipes are not this one's business */
        for (size_t i = 0; i < b->n; i++) {
            if (b->v[i]->fd_rec >= 0)
                close(b->v[i]->fd_rec);
            if (b->v[i]->fd_err >= 0)
                close(b->v[i]->fd_err);
        }
        int devnull = open("/dev/null", O_RDWR);
        if (devnull >= 0) {
            dup2(devnull, STDIN_FILENO);
            dup2(devnull, STDOUT_FILENO);
            close(devnull);
        }
        /* libraries' own messages: kept for a crash report */
        dup2(pe[1], STDERR_FILENO);
        child_main(b, s, stem, h5, pr[1]);
    }
    s->pid = pid;
    s->fd_rec = pr[0];
    s->fd_err = pe[0];
    pr[0] = pe[0] = -1;
    set_nonblock(s->fd_rec);
    set_nonblock(s->fd_err);
    sp_buf_reset(&s->rec);
    sp_buf_reset(&s->err);
    s->t0 = sp_now();
    s->pub.status = SP_BATCH_RUNNING;
out:
    for (int i = 0; i < 2; i++) {
        if (pr[i] >= 0)
            close(pr[i]);
        if (pe[i] >= 0)
            close(pe[i]);
    }
    if (s->pub.status == SP_BATCH_FAILED && s->tmpdir)
        sp_remove_tree(s->tmpdir, NULL);
    free(stem);
    free(h5);
    free(final);
    return ok;
}

bool sp__batch_drain(sp__bslide *s, int fd) {
    const bool is_rec = fd == s->fd_rec;
    sp_buf *b = is_rec ? &s->rec : &s->err;
    char chunk[8192];
    for (;;) {
        ssize_t r = read(fd, chunk, sizeof chunk);
        if (r > 0) {
            /* the record is of one size: more is not a record */
            if (!is_rec || b->len <= sizeof(sp_run_result))
                sp_buf_append(b, chunk, (size_t)r);
            /* of stderr, the last 16 KiB */
            if (!is_rec && b->len > 32768) {
                memmove(b->data, b->data + b->len - 16384, 16384);
                b->len = 16384;
                b->data[b->len] = '\0';
            }
            continue;
        }
        if (r < 0 && errno == EINTR)
            continue;
        return r < 0; /* EAGAIN: more later; 0: end */
    }
}

/* The last non-empty line of `s` (malloc'd), or NULL. */
static char *last_line(const char *s) {
    if (!s)
        return NULL;
    const char *end = s + strlen(s);
    while (end > s && (end[-1] == '\n' || end[-1] == '\r' || end[-1] == ' '))
        end--;
    const char *start = end;
    while (start > s && start[-1] != '\n')
        start--;
    return end > start ? strndup(start, (size_t)(end - start)) : NULL;
}

static const char *stage_word(const char *s) {
    static const char *const ok[] = {"open",     "mask",  "tiles",
                                     "features", "write", NULL};
    for (const char *const *p = ok; *p; p++)
        if (strcmp(s, *p) == 0)
            return *p;
    return NULL;
}

/* The record sent, whole, or NULL. */
static const sp_run_result *record_of(sp__bslide *s, int st) {
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0 ||
        s->rec.len != sizeof(sp_run_result))
        return NULL;
    sp_run_result *r = (sp_run_result *)(void *)s->rec.data;
    r->error[sizeof r->error - 1] = '\0';
    r->stage[sizeof r->stage - 1] = '\0';
    r->quickhash[sizeof r->quickhash - 1] = '\0';
    r->tiles.output[sizeof r->tiles.output - 1] = '\0';
    return r;
}

/* A successful job: its outputs checked, done.json, the folder renamed. */
static void commit(sp_batch *b, sp__bslide *s, const sp_run_result *r,
                   const char *final, double seconds) {
    char buf[SP_ERROR_MAX];
    sp_error e = {0};
    /* a number out of range is unknown, never converted */
    s->pub.tiles = r->tiles.tiles_written >= 0 ? r->tiles.tiles_written : -1;
    s->pub.tissue_area_mm2 = r->tissue_area_mm2;
    sp__set_str(&s->note, r->note[0] ? r->note : NULL);
    sp__bslide_sync(s);
    bool oom = false;
    char *missing =
        sp__batch_missing_output(s->tmpdir, sp__batch_slide_container(s), &oom);
    if (missing) {
        snprintf(buf, sizeof buf,
                 "%s: the slide job reported success but left no %s", s->path,
                 missing);
        sp__bslide_fail(s, "output", SP_ERR_INTERNAL, buf);
    } else if (!final || oom) {
        sp__bslide_fail(s, "output", SP_ERR_NOMEM, "out of memory");
    } else if (!sp__batch_write_done(b, s, s->tmpdir, r, seconds, &e)) {
        sp__bslide_fail(s, "output", e.code, e.msg);
    } else if (rename(s->tmpdir, final) != 0) {
        sp_error_errno(&e, SP_ERR_OUTPUT, final, errno, "cannot rename");
        sp__bslide_fail(s, "output", SP_ERR_OUTPUT, e.msg);
    } else {
        s->pub.status = SP_BATCH_DONE;
        b->mp_done += s->pub.megapixels;
        b->counts.tiles += s->pub.tiles > 0 ? s->pub.tiles : 0;
    }
    free(missing);
}

void sp__batch_finish(sp_batch *b, sp__bslide *s, int st) {
    double seconds = sp_now() - s->t0;
    s->pub.seconds = seconds;
    s->pid = -1;
    const sp_run_result *r = record_of(s, st);
    char *final = sp_path_join(b->outdir, s->id);
    /* a Ctrl-C reaches the children too, maybe before the loop saw it */
    bool cancelled = b->cancelling || (b->o.cancel && *b->o.cancel);
    char buf[SP_ERROR_MAX];
    if (r && r->code == SP_OK) {
        commit(b, s, r, final, seconds);
    } else if (cancelled && ((r && r->code == SP_ERR_CANCELLED) ||
                             (WIFSIGNALED(st) && (WTERMSIG(st) == SIGTERM ||
                                                  WTERMSIG(st) == SIGINT ||
                                                  WTERMSIG(st) == SIGKILL)))) {
        s->pub.status = SP_BATCH_INTERRUPTED;
        sp__set_str(&s->error, "interrupted");
    } else if (r) {
        /* the job failed and said why */
        const char *stage = stage_word(r->stage);
        sp_errcode ec = r->code;
        if (ec == SP_ERR_CANCELLED) { /* a signal, not the batch's */
            snprintf(buf, sizeof buf, "%s: interrupted by a signal", s->path);
            ec = SP_ERR_INTERNAL;
        } else {
            snprintf(buf, sizeof buf, "%s", r->error);
        }
        if (!stage)
            stage = ec == SP_ERR_INPUT || ec == SP_ERR_NOT_SLIDE ? "open"
                    : ec == SP_ERR_OUTPUT                        ? "write"
                                                                 : "run";
        sp__bslide_fail(s, stage, ec, buf);
    } else {
        /* no record: the child crashed (a signal, or a sanitizer's exit) */
        char *msg = last_line(s->err.data);
        if (WIFSIGNALED(st)) {
            const char *d = strsignal(WTERMSIG(st));
            snprintf(buf, sizeof buf,
                     "%s: the slide job crashed (signal %d, %s)%s%s", s->path,
                     WTERMSIG(st), d ? d : "?", msg ? "; last message: " : "",
                     msg ? msg : "");
        } else {
            snprintf(buf, sizeof buf,
                     "%s: the slide job ended without a result (exit status "
                     "%d)%s%s",
                     s->path, WIFEXITED(st) ? WEXITSTATUS(st) : -1,
                     msg ? "; last message: " : "", msg ? msg : "");
        }
        free(msg);
        sp__bslide_fail(s, "crash", SP_ERR_INTERNAL, buf);
    }
    if (s->pub.status != SP_BATCH_DONE && s->tmpdir)
        sp_remove_tree(s->tmpdir, NULL);
    /* messages name the folder the slide's outputs would have had, not
     * the temporary one, which is gone */
    if (final && s->tmpdir)
        sp__batch_replace_in(&s->error, s->tmpdir, final);
    free(s->tmpdir);
    s->tmpdir = NULL;
    sp_buf_free(&s->rec);
    sp_buf_free(&s->err);
    sp_buf_init(&s->rec);
    sp_buf_init(&s->err);
    free(final);
    sp__bslide_sync(s);
}
