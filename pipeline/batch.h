/*
 * batch: `slidepipe batch`, the fused pass over many slides.
 *
 *   inputs     slide files, directories (walked recursively) and TSV
 *              manifests become a list of candidates (sp_batch_add_*).
 *   discovery  each candidate is opened once, in a forked probe process
 *              (a file that crashes OpenSlide cannot take the batch down),
 *              for its vendor, level-0 size and quickhash. Files found
 *              while walking a directory that OpenSlide does not recognise
 *              are listed as "not a slide" (not failures), unless their
 *              extension only names slide formats (.svs .ndpi .vms .vmu
 *              .scn .mrxs .svslide .bif: a damaged slide, a failure);
 *              files named explicitly that cannot be opened are
 *              failures. A MIRAX
 *              `.mrxs` is the slide and its data folder (same name, no
 *              extension) is not walked; a Hamamatsu `.vms`/`.vmu` is the
 *              slide and the files its index names are not candidates.
 *   layout     OUTDIR/<id>/slide.dzi, slide_files/, slide.json, slide.h5
 *              (the slide job with OUTDIR/<id>/slide as its output), then
 *              OUTDIR/<id>/done.json, written last and atomically: the
 *              quickhash, the parameter fingerprint, the version, the
 *              path choice ("paths": relative|full) and the job's result
 *              record as `slidepipe run --json` prints it (the slide as
 *              shared outputs name it, the final OUTDIR/<id>/slide.dzi,
 *              not the temporary folder). OUTDIR/batch-summary.tsv and
 *              .json are rewritten atomically as slides finish;
 * OUTDIR/cohort.h5 (sp_store_index over every completed slide) at the end.
 *   resume     a slide is skipped when OUTDIR/<id>/done.json holds the
 *              same quickhash (file size + mtime for a slide without one),
 *              the same parameter fingerprint and the same path choice,
 *              and its outputs exist (a marker without "paths" predates
 *              path privacy: redone).
 *              Anything else under OUTDIR/<id>/ is stale: removed, redone.
 *              `force` redoes every slide.
 *   scheduling one forked child process per slide, which calls the slide
 *              job (sp_run_slide, pipeline.h) with K threads and sends
 *              its result record back over a pipe (a crash in a library
 *              fails that slide only); a slide of P level-0 megapixels
 *              asks for K = clamp(ceil(P / 64), 1, N) of the N threads.
 *              Slides start largest first; when the next one does not
 *              fit in the free threads, the largest queued slide that fits
 *              starts *              instead. The threads of running children
 * never add up to more than N. signals    `cancel` set (SIGINT/SIGTERM):
 * running children get SIGTERM (they remove their temporaries), their folders
 * are removed, they are reported "interrupted". Children die with the batch
 * (PR_SET_PDEATHSIG) if it is killed; OUTDIR is locked (flock on
 * OUTDIR/.batch.lock) by one batch at a time.
 *
 * Thread rules: an sp_batch belongs to one thread; it forks, so call it
 * from a process that runs no other threads. It never touches HDF5 except
 * through sp_store_index at the end. Nothing here prints: events go to
 * the callback.
 */
#ifndef SP_BATCH_H
#define SP_BATCH_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    SP_BATCH_PENDING = 0, /* waiting to run */
    SP_BATCH_RUNNING,
    SP_BATCH_DONE,         /* completed by this batch */
    SP_BATCH_ALREADY_DONE, /* skipped: completed before, same content and
                              parameters */
    SP_BATCH_FAILED,
    SP_BATCH_INTERRUPTED, /* abandoned when the batch was interrupted */
    SP_BATCH_NOT_SLIDE    /* skipped: found in a directory, not a slide */
} sp_batch_status;

/* Status word used in logs and summaries: "pending", "running", "done",
 * "already-done", "failed", "interrupted", "not-a-slide". */
const char *sp_batch_status_name(sp_batch_status s);

/* One candidate. Strings are owned by the batch; NULL when unknown. The
 * strings may name full paths (for the console); the shared outputs carry
 * them as full_paths says. */
typedef struct {
    const char *path;    /* as given or found */
    const char *id;      /* output folder name; NULL for not-a-slide */
    const char *options; /* per-slide manifest options, canonical */
    bool is_explicit;    /* named on the command line or in a manifest */
    /* probe */
    const char *vendor;
    const char *quickhash; /* content key: quickhash-1, or size+mtime */
    int64_t width, height;
    /* plan and result */
    sp_batch_status status;
    int threads;             /* threads it ran (or would run) with */
    const char *fingerprint; /* hex hash of the canonical parameters */
    const char *stage;       /* failure stage: open|mask|tiles|features|
                                write|crash|output, or NULL */
    const char *error;       /* one line, or NULL */
    sp_errcode error_code;   /* category of the failure */
    double seconds;          /* run time (already-done: the recorded one) */
    int64_t tiles;           /* tiles written, -1 unknown */
    double tissue_area_mm2;  /* NAN unknown */
    double megapixels;
    /* where it ran, in a batch over several processes (sp_batch_transport):
     * the rank and its host; 0 and NULL in a local batch */
    int rank;
    const char *host;
    /* the last batch over this OUTDIR left it running (it was stopped or
     * killed): "in flight on rank R (HOST) when the previous batch
     * stopped", or NULL */
    const char *previous;
    /* what the slide job chose to do otherwise ("level 0 encoded, not
     * copied: ..."), or NULL */
    const char *note;
} sp_batch_slide;

typedef enum {
    SP_BATCH_EV_PLANNED = 1, /* discovery finished: counts are known */
    SP_BATCH_EV_START,       /* a slide's child started */
    SP_BATCH_EV_FINISH,      /* a slide finished: see its status */
    SP_BATCH_EV_SKIP,        /* already done or not a slide */
    SP_BATCH_EV_TICK,        /* periodic (about 4 per second) */
    SP_BATCH_EV_COHORT       /* cohort.h5 written (or failed: `error`) */
} sp_batch_event_kind;

/* Counters handed with every event. */
typedef struct {
    size_t total;    /* slides (not counting not-a-slide files) */
    size_t finished; /* done + already done + failed + interrupted */
    size_t done, already_done, failed, interrupted, not_slides;
    size_t running;
    int threads_busy, threads_total;
    int64_t tiles;  /* tiles written by this batch so far */
    double elapsed; /* seconds since sp_batch_run started */
    double eta;     /* seconds, < 0 when unknown */
} sp_batch_counts;

typedef struct {
    sp_batch_event_kind kind;
    const sp_batch_slide *slide; /* START/FINISH/SKIP; NULL otherwise */
    const sp_batch_counts *counts;
    const char *error; /* COHORT failure, else NULL */
} sp_batch_event;

typedef void (*sp_batch_event_fn)(void *user, const sp_batch_event *ev);

typedef struct {
    const char *outdir;  /* required */
    int threads;         /* total budget; <= 0: all cores */
    bool force;          /* redo completed slides */
    bool dry_run;        /* probe and plan only; write nothing */
    const char *options; /* common run options, manifest syntax
                            ("tile-size=512 quality=90"), or NULL */
    /* Shared outputs (each slide's slide.json and done.json, the
     * summaries) name a slide by its path below the input folder it was
     * found in (a manifest's own relative path, else the file name) and
     * name no folder above it or OUTDIR; true records absolute paths
     * instead. The HDF5 files and cohort.h5 hold file names and paths
     * relative to OUTDIR either way (docs/OUTPUTS.md). */
    bool full_paths;
    sp_batch_event_fn on_event;
    void *user;
    volatile sig_atomic_t *cancel; /* set non-zero to stop */
    /* Beyond one machine (docs/CLUSTER.md); all off by default.
     * transport  a batch over several processes (MPI ranks): rank 0 runs
     *            sp_batch_run and hands slides out, the others call
     *            sp_batch_work. NULL: a local batch.
     * shard_count, shard_index  a job-array share: of the slides every
     *            shard discovers alike, run only the `shard_index`th of
     *            `shard_count` size-balanced shares (0 <= index < count;
     *            count 0: no sharding); summaries go to
     *            batch-summary.shard-K-of-N.{tsv,json}, no cohort.h5.
     * merge      run nothing: take every slide's done.json as the shards
     *            left them, write the summaries and cohort.h5; a slide
     *            without one fails with the reason its shard recorded. */
    struct sp_batch_transport *transport;
    int shard_index, shard_count;
    bool merge;
} sp_batch_opts;

typedef struct sp_batch sp_batch;

/* Options (manifest syntax): space-separated `key=value` words, keys from
 * tile-size, overlap, quality, format, skip-background (a bare key means
 * =yes). Validates and writes the canonical form (keys in that order,
 * values normalised) to `out` (malloc'd). SP_ERR_USAGE naming the word. */
bool sp_batch_parse_options(const char *text, char **out, sp_error *err);

/* A new batch; copies what it keeps from `o`. NULL with `err` on a bad
 * option (SP_ERR_USAGE) or out of memory. */
sp_batch *sp_batch_new(const sp_batch_opts *o, sp_error *err);
/* Free. Accepts NULL. */
void sp_batch_free(sp_batch *b);

/* Add a slide file (explicit) or a directory (walked recursively, hidden
 * entries and OUTDIR skipped). SP_ERR_INPUT when the path does not exist
 * or a directory cannot be listed; a file is only checked when probed. */
bool sp_batch_add_path(sp_batch *b, const char *path, sp_error *err);
/* Add every row of a TSV manifest: `path [TAB id [TAB options]]`; blank
 * lines, lines starting with '#' and a first line whose first field is
 * "path" are skipped; relative paths are taken from the manifest's
 * folder. SP_ERR_USAGE naming the line on a bad row (nothing added),
 * SP_ERR_INPUT when the manifest cannot be read. */
bool sp_batch_add_manifest(sp_batch *b, const char *tsv, sp_error *err);

/* Probe, plan, run every slide, write the summaries and the cohort.
 * Returns false only when the batch as a whole could not run (OUTDIR
 * not writable, locked by another batch, out of memory, a duplicate
 * manifest id): `err` says why. Per-slide failures are in the slides;
 * sp_batch_exit_category sums them up. */
bool sp_batch_run(sp_batch *b, sp_error *err);

size_t sp_batch_count(const sp_batch *b);
const sp_batch_slide *sp_batch_slide_at(const sp_batch *b, size_t i);
const sp_batch_counts *sp_batch_get_counts(const sp_batch *b);
/* The cohort error after sp_batch_run, or NULL (none, or not attempted). */
const char *sp_batch_cohort_error(const sp_batch *b);
/* Why the final summary files could not be written, or NULL. */
const char *sp_batch_summary_error(const sp_batch *b);
/* Path of the cohort file when it was written by this run, else NULL. */
const char *sp_batch_cohort_path(const sp_batch *b);
/* ---- several processes ------------------------------------------------- */

/* How the processes of a batch reach each other: messages (bytes, at most
 * a few KiB) between ranks 0..size-1, delivered whole and in order between
 * any two ranks. Rank 0 coordinates (and runs slides with its own
 * threads); the others are workers. An MPI binding is in batch_mpi.h. */
typedef struct sp_batch_transport {
    void *ctx;
    int rank, size;
    const char *host; /* this process's host name */
    /* Send `len` bytes to rank `to`. False with `err` on failure. */
    bool (*send)(void *ctx, int to, const void *msg, size_t len, sp_error *err);
    /* Wait up to `timeout_ms` (0: just look) for a message from any rank:
     * 1 with *msg (malloc'd, NUL-terminated), *len and *from; 0 when none
     * came; -1 with `err` on failure. */
    int (*recv)(void *ctx, int timeout_ms, int *from, char **msg, size_t *len,
                sp_error *err);
    bool stopped; /* set by sp_batch_stop_workers */
} sp_batch_transport;

/* Rank 0: tell every worker there is nothing more (once; later calls do
 * nothing). sp_batch_run does it when its slides are done; a rank 0 that
 * ends any other way (a usage error, the output folder locked, a dry run)
 * must call it, or the workers wait for ever. */
bool sp_batch_stop_workers(sp_batch_transport *t, sp_error *err);

/* A worker (rank > 0 of o->transport): ask rank 0 for slides, run each in
 * a forked child with o->threads threads in all (<= 0: all cores), write
 * its OUTDIR/<id> and done.json as a local batch does, send the result
 * back, until rank 0 says stop. Events (START, FINISH) go to o->on_event
 * for this worker's log. False with `err` when the transport fails or
 * memory runs out. */
bool sp_batch_work(const sp_batch_opts *o, sp_error *err);

/* Worst outcome: SP_OK when every slide is done or already done; else
 * the most severe category among the failures (INTERNAL > OUTPUT >
 * INPUT), counting a cohort or final summary failure as OUTPUT.
 * Interruption is the caller's to report. */
sp_errcode sp_batch_exit_category(const sp_batch *b);

#ifdef __cplusplus
}
#endif
#endif
