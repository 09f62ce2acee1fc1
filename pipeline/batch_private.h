/*
 * batch internals, shared by the batch's files, one job each:
 *
 *   batch.c          the public object and sp_batch_run, which calls:
 *   batch_slide.c    the candidate list (push, fail, free)
 *   discover.c       inputs: directory walks, manifests, the probe
 *   batch_options.c  per-slide run options: parsing, canonical text, and
 *                    the sp_run_opts they make
 *   batch_plan.c     ids, parameter fingerprints, the plan of every slide
 *   batch_resume.c   OUTDIR/<id>/done.json: read (resume) and write
 *   batch_outdir.c   the output folder: lock, write check, stale temps
 *   batch_work.c     a worker process of a batch over several (MPI)
 *   batch_sched.c    the loop: start what fits (here or on a worker),
 *                    reap, cancel
 *   batch_local.c    this process's children: start, watch, reap, signal
 *   batch_wire.c     the messages between coordinator and workers
 *   batch_child.c    one slide's job in a forked child, its record back
 *   batch_report.c   counts and events, summaries, the cohort
 *   batch_paths.c    how shared outputs name slides and folders
 *
 * Calls point down this list (a file calls only files below it, and
 * batch_slide.c, batch_paths.c); not for use outside pipeline/.
 */
#ifndef SP_BATCH_PRIVATE_H
#define SP_BATCH_PRIVATE_H

#include <string.h>
#include <poll.h>
#include <sys/types.h>

#include "batch.h"
#include "pipeline.h"

/* The per-slide run options a manifest or the command line may set, in
 * canonical order. */
#define SP__BATCH_NKEYS 7

/* Each slide's job writes OUTDIR/<id>/slide: the pyramid's files
 * (tiler.h's sp_pyramid_names) and slide.h5. */
#define SP__BATCH_OUT_BASE "slide"
#define SP__BATCH_DONE_FILE "done.json"
/* The tag the parameter fingerprint starts with: a change of what a
 * slide's job does (not of its options) changes every fingerprint. */
#define SP__BATCH_FINGERPRINT_TAG "slidepipe-batch/1 run"

/* One candidate: the public view plus the strings it points to and the
 * state of its child process. */
typedef struct {
    sp_batch_slide pub;
    char *path, *id, *options, *vendor, *quickhash, *fingerprint, *params;
    /* what shared outputs call the slide (unless full_paths): its path
     * below the input folder it was found in, the manifest-relative path
     * written in a manifest, else its file name; and the folder prefix
     * scrubbed from shared error texts ("" when none) */
    char *rel, *root;
    char *stage, *error;
    char *host;     /* the worker's, in a batch over several processes */
    char *previous; /* what the last batch's summary says, or NULL */
    char *note;     /* the job's note (sp_run_result.note), or NULL */
    int want;       /* threads by size, before the budget's cap */
    size_t wire;    /* its index on rank 0 (sent to and back from a worker) */
    bool has_id;    /* id given in a manifest */
    bool has_ino;   /* dev/ino known (a regular file at push time) */
    dev_t dev;
    ino_t ino;
    bool probed;
    /* child */
    pid_t pid;
    int fd_rec, fd_err; /* its result record, its stderr */
    sp_buf rec, err;
    double t0;
    char *tmpdir; /* OUTDIR/.<id>.tmp-<pid> while running */
} sp__bslide;

struct sp_batch {
    sp_batch_opts o; /* strings below are our copies */
    char *outdir, *common;
    bool outdir_exists;
    dev_t out_dev;
    ino_t out_ino;
    sp__bslide **v;
    size_t n, cap;
    sp_batch_counts counts;
    int lock_fd, shard_lock_fd;
    double t0, last_summary;
    char started_iso[32];
    bool cancelling, finished, cohort_written;
    double cancel_time;
    char *cohort_error, *cohort_path, *summary_error;
    double mp_done, mp_total;
    /* OUTDIR/batch-summary[.shard-K-of-N].tsv and .json */
    char *summary_tsv, *summary_json;
};

/* ---- batch_slide.c: the candidate list ---------------------------------- */

/* Append a candidate (copies the strings). Files already listed (same
 * device and inode) are dropped. `rel` is the name shared outputs record
 * (NULL: the file name), `root` the input folder it is relative to (NULL:
 * the file's own folder). */
bool sp__batch_push(sp_batch *b, const char *path, const char *rel,
                    const char *root, const char *id, const char *options,
                    bool is_explicit, sp_error *err);
/* Remove the candidates after the first `n` (a manifest that failed). */
void sp__batch_truncate(sp_batch *b, size_t n);
void sp__bslide_free(sp__bslide *s);
/* Point the public view at the current strings (after any change). */
void sp__bslide_sync(sp__bslide *s);
/* Mark failed at `stage` with a one-line message. */
void sp__bslide_fail(sp__bslide *s, const char *stage, sp_errcode code,
                     const char *msg);
/* A copy of `s`, NULL for NULL (and when out of memory). */
static inline char *sp__strdup0(const char *s) { return s ? strdup(s) : NULL; }
/* Replace *dst with a copy of `s` (NULL allowed). */
void sp__set_str(char **dst, const char *s);

/* ---- discover.c: the probe ---------------------------------------------- */

/* What the probe found of one candidate: code SP_OK with the vendor,
 * quickhash (NULL when the slide has none; both malloc'd) and size, or
 * the failure (SP_ERR_NOT_SLIDE when OpenSlide does not recognise the
 * file at all) and its message, which names the file. */
typedef struct {
    sp_errcode code;
    char msg[SP_ERROR_MAX];
    char *vendor, *quickhash;
    int64_t width, height;
    bool below_rule; /* fails the slide size rule (sp_slide_size_rule_ok) */
} sp__probe;

/* The reason a candidate found in a folder falls below the slide size
 * rule (ingest.h's sp_slide_size_rule_ok), naming the file, in `msg`. */
void sp__batch_size_rule_msg(const char *path, int64_t width, int64_t height,
                             char *msg, size_t n);

/* Open every candidate in forked children, `procs` at a time, each child
 * going through its share one file after another (OpenSlide's start-up
 * paid once per child, not per file); a crash inside OpenSlide fails the
 * file it was opening and a new child goes on with the next. Fills
 * res[0..b->n). False only when the probe itself cannot run (fork, out
 * of memory); stops early on a cancel. */
bool sp__batch_probe_all(sp_batch *b, int procs, sp__probe *res, sp_error *err);

/* ---- batch_options.c ---------------------------------------------------- */

/* Parse options text into values per key (malloc'd strings, NULL when
 * absent); canonical values. */
bool sp__batch_option_values(const char *text, char *vals[SP__BATCH_NKEYS],
                             sp_error *err);
void sp__batch_values_free(char *vals[SP__BATCH_NKEYS]);
/* Canonical text of values: "key=value ..." in key order (malloc'd). */
char *sp__batch_values_text(char *const vals[SP__BATCH_NKEYS]);
/* Set in `o` what canonical options text (as in a fingerprint's
 * parameters, after the tag) asks for. */
bool sp__batch_apply_options(const char *text, sp_run_opts *o, sp_error *err);

/* ---- batch_plan.c ------------------------------------------------------- */

/* Probe every candidate, give ids, fingerprints, resume decisions. False
 * only when the batch cannot go on (out of memory, duplicate ids). */
bool sp__batch_plan(sp_batch *b, sp_error *err);

/* ---- batch_shard.c: shares of a job array, the merge --------------------- */

/* Keep only this shard's slides (sp_batch_opts.shard_*): of the slides,
 * largest first (then by id), each goes to the shard with the least
 * megapixels so far (the lowest index on a tie); files that are not
 * slides stay with shard 0 only. The same inputs give every shard the
 * same split. */
void sp__batch_keep_shard(sp_batch *b);
/* A merge: every slide still pending has no finished result; it fails
 * with the reason a shard's summary recorded, else "not done". */
void sp__batch_merge_missing(sp_batch *b);
/* What the last batch's summary on disk says of the slides: those it
 * lists as running were in flight when it stopped (pub.previous). */
void sp__batch_read_previous(sp_batch *b);

/* ---- batch_resume.c ----------------------------------------------------- */

/* True when OUTDIR/<id>/done.json records s's quickhash, fingerprint and
 * path choice and the outputs exist; fills what the summary shows. Not
 * static also for fuzz/fuzz_done.c. */
bool sp__batch_already_done(sp_batch *b, sp__bslide *s);
/* "DIR/slide", the stem the job is told, and "DIR/slide.h5" (malloc'd).
 * False when out of memory. */
bool sp__batch_out_names(const char *dir, char **stem, char **h5);
/* The first of the job's outputs missing from `dir` (its file name,
 * malloc'd), or NULL when all are there. *oom when memory ran out. */
char *sp__batch_missing_output(const char *dir, sp_container c, bool *oom);
/* The container a slide's options text (its params after the tag) asks
 * for: dzi unless container=... */
sp_container sp__batch_container_of(const char *options);
/* The container slide `s`'s parameters (its params) ask for. */
sp_container sp__batch_slide_container(const sp__bslide *s);
/* Write `dir`/done.json for `s`, whose job gave `r`, atomically. */
bool sp__batch_write_done(sp_batch *b, const sp__bslide *s, const char *dir,
                          const sp_run_result *r, double seconds,
                          sp_error *err);

/* ---- batch_outdir.c ----------------------------------------------------- */

/* Create and lock OUTDIR, check it is writable, remove what dead batches
 * left there (a shard: later, sp__batch_sweep_temps). */
bool sp__batch_open_outdir(sp_batch *b, sp_error *err);
/* Remove what dead batches left at the top of OUTDIR: hidden temporaries
 * ".NAME.tmp-PID" (slide folders, summaries, the cohort); a shard only
 * its own slides'. Safe: the lock says nobody else writes them. */
void sp__batch_sweep_temps(sp_batch *b);

/* ---- batch_sched.c ------------------------------------------------------ */

/* Run every pending slide, largest first, within the thread budget: here,
 * and on the workers when there is a transport. */
bool sp__batch_run_all(sp_batch *b, sp_error *err);
/* The first slide of queue[head..nq) that fits in `free` threads of a
 * process with `threads` in all (its share then min(want, threads)), or
 * nq. */
size_t sp__batch_pick(sp__bslide *const *queue, size_t head, size_t nq,
                      int threads, int free);

/* ---- batch_local.c: this process's children ----------------------------- */

typedef struct {
    sp__bslide **run; /* running here */
    size_t nrun, cap;
    struct pollfd *pfd;
    sp__bslide **pown;
    int threads, free; /* budget, not in use */
    sp__bslide **done; /* finished in the last sp__local_wait */
    size_t ndone;
} sp__local;

bool sp__local_init(sp__local *l, int threads);
void sp__local_free(sp__local *l);
/* Start `s` (its pub.threads set) in a child; s's status says whether it
 * runs or failed at once. False only when out of memory. */
bool sp__local_start(sp_batch *b, sp__local *l, sp__bslide *s);
/* Wait up to `timeout_ms` for the children's pipes; reap those that
 * ended (sp__batch_finish) into l->done. False with `err` when poll
 * fails. */
bool sp__local_wait(sp_batch *b, sp__local *l, int timeout_ms, sp_error *err);
/* Send `sig` to every running child. */
void sp__local_signal(sp__local *l, int sig);
/* Kill and reap every child, remove their temporaries, mark them
 * interrupted (out of memory, a transport failure). */
void sp__local_abort(sp__local *l);

/* ---- batch_wire.c: coordinator <-> worker messages ---------------------- */

typedef enum {
    SP__MSG_HELLO = 1, /* worker -> 0: ready, its threads and host */
    SP__MSG_RUN,       /* 0 -> worker: run this slide */
    SP__MSG_RESULT,    /* worker -> 0: how a slide ended */
    SP__MSG_STOP,      /* 0 -> worker: no more slides; exit when idle */
    SP__MSG_CANCEL,    /* 0 -> worker: interrupt the running slides
                          (a second one: kill them) */
} sp__msg_kind;

typedef struct {
    sp__msg_kind kind;
    int threads; /* HELLO */
    char *host;  /* HELLO */
    /* RUN: a slide as a worker needs it; RESULT: index and outcome */
    sp__bslide *slide;
} sp__msg;

/* Encode (malloc'd text in `out`); false when out of memory. */
bool sp__wire_hello(sp_buf *out, int threads, const char *host);
bool sp__wire_run(sp_buf *out, const sp__bslide *s);
bool sp__wire_result(sp_buf *out, const sp__bslide *s);
bool sp__wire_simple(sp_buf *out, sp__msg_kind kind);
/* Decode `text`; a RUN makes a new slide (the caller frees it), a RESULT
 * one holding only the index and outcome. False (with `err`) on a
 * message that is not one of ours. */
bool sp__wire_parse(const char *text, size_t len, sp__msg *m, sp_error *err);
void sp__msg_clear(sp__msg *m);
/* Copy a RESULT's outcome into the slide `s` it names. */
void sp__wire_apply_result(sp__bslide *s, const sp__bslide *r);

/* ---- batch_child.c ------------------------------------------------------ */

/* Start the job of slide `s` in a forked child, into
 * OUTDIR/.<id>.tmp-<pid>. On failure the slide is marked failed (returns
 * false only when out of memory). */
bool sp__batch_spawn(sp_batch *b, sp__bslide *s);
/* Read what the child's pipe `fd` has into `buf` (its record, or the
 * tail of its stderr). False at end of file. */
bool sp__batch_drain(sp__bslide *s, int fd);
/* The child of `s` has exited with wait status `st`: take its record,
 * move its folder into place and mark the slide. */
void sp__batch_finish(sp_batch *b, sp__bslide *s, int st);

/* ---- batch_report.c ----------------------------------------------------- */

void sp__batch_recount(sp_batch *b);
void sp__batch_emit(sp_batch *b, sp_batch_event_kind kind, const sp__bslide *s,
                    const char *error);
/* OUTDIR/batch-summary.tsv and .json, atomically. */
bool sp__batch_write_summaries(sp_batch *b, sp_error *err);
/* The same at most once a second for large batches. */
void sp__batch_maybe_summary(sp_batch *b);
/* OUTDIR/cohort.h5 over every completed slide. */
void sp__batch_write_cohort(sp_batch *b);

/* ---- batch_paths.c ------------------------------------------------------ */

/* An absolute path for `p` (realpath, or the working folder joined when
 * the file is gone); malloc'd. */
char *sp__batch_abs_path(const char *p);
/* The slide as shared outputs name it (malloc'd). */
char *sp__batch_recorded_path(const sp_batch *b, const sp__bslide *s);
/* A message as shared outputs carry it (malloc'd). */
char *sp__batch_shared_text(const sp_batch *b, const sp__bslide *s,
                            const char *text);
/* Replace every `from` in *text by `to` (unchanged when out of memory). */
void sp__batch_replace_in(char **text, const char *from, const char *to);
/* Now as "YYYY-MM-DDTHH:MM:SSZ". */
void sp__batch_iso_now(char *out, size_t n);

#endif
