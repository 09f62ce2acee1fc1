/* slidepipe batch: `slidepipe run` over many slides, resumable. */
#include "cli.h"

#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include "batch.h"

#define CMD "batch"

static volatile sig_atomic_t interrupted;

static void on_signal(int sig) {
    (void)sig;
    if (interrupted < 2)
        interrupted++;
}

static void help(FILE *f) {
    fprintf(
        f,
        "usage: slidepipe batch [OPTIONS] INPUT... -o OUTDIR\n"
        "       slidepipe batch [OPTIONS] --manifest FILE -o OUTDIR\n"
        "\n"
        "Run 'slidepipe run' (pyramid + features + HDF5) on every slide,\n"
        "then link the HDF5 files into OUTDIR/cohort.h5. A bad slide never\n"
        "stops the batch; rerunning the same command resumes it.\n"
        "\n"
        "Inputs: slide files, and directories searched recursively (hidden\n"
        "entries and OUTDIR skipped). A MIRAX .mrxs counts once (its data\n"
        "folder is not searched); a Hamamatsu .vms/.vmu counts once (the\n"
        "files it names are not slides of their own); a DICOM series (its\n"
        "files in one folder, or several series in one) counts once per\n"
        "series. Files neither\n"
        "OpenSlide nor libvips recognises found in a directory are listed\n"
        "as 'not-a-slide', and so are images read by libvips (plain TIFF,\n"
        "JPEG, PNG, WebP, ...) that are no OME-TIFF or SubIFD pyramid and\n"
        "whose longer side is under 10000 px (the slide size rule: a\n"
        "folder of thumbnails is not converted); named\n"
        "on the command line or in a manifest, an image of any size is a\n"
        "slide. Files named on the command line or in a manifest that\n"
        "cannot be opened are failures, and so are unrecognised or empty files "
        "with a\n"
        "slide-only extension (.svs .ndpi .vms .vmu .scn .mrxs .svslide\n"
        ".bif) found in a directory: they are damaged slides.\n"
        "\n"
        "Manifest (TSV, one slide per line; '#' comments, blank lines and a\n"
        "header line starting with 'path' are skipped):\n"
        "  PATH [TAB ID [TAB OPTIONS]]\n"
        "  PATH     the slide file; relative to the manifest's folder\n"
        "  ID       output folder name, [A-Za-z0-9._-] (default: the file\n"
        "           name without extension, -2, -3... on collisions)\n"
        "  OPTIONS  space-separated key=value, overriding the command\n"
        "           line for this slide: tile-size=N overlap=N quality=N\n"
        "           format=jpeg|png|webp skip-background[=yes|no]\n"
        "           container=dzi|tiff|ome-tiff|dicom passthrough[=yes|no]\n"
        "\n"
        "Output, per slide OUTDIR/ID/:\n"
        "  slide.dzi, slide_files/  Deep Zoom pyramid (--container tiff:\n"
        "                           slide.tiff; ome-tiff: slide.ome.tiff;\n"
        "                           dicom: slide.dicom/)\n"
        "  slide.json               pyramid sidecar (source, parameters)\n"
        "  slide.h5                 per-tile features (docs/SCHEMA.md)\n"
        "  done.json                written last: quickhash, parameter\n"
        "                           fingerprint, version, run summary\n"
        "A slide is built in OUTDIR/.ID.tmp-PID and renamed into place when\n"
        "complete, so OUTDIR/ID only ever holds a finished result.\n"
        "OUTDIR/batch-summary.tsv and .json (slide, path, status, seconds,\n"
        "tiles, tissue_area_mm2, stage, error) are rewritten as slides\n"
        "finish; OUTDIR/cohort.h5 links every completed slide at the end.\n"
        "\n"
        "Resume: a slide whose OUTDIR/ID/done.json has the same slide\n"
        "content (OpenSlide quickhash), the same options and the same\n"
        "--full-paths choice is skipped ('already-done'); anything else\n"
        "(also a done.json of a version before path privacy) is redone.\n"
        "--force redoes all.\n"
        "\n"
        "Threads: a slide of P level-0 megapixels runs with\n"
        "min(N, ceil(P/64)) threads; slides start largest first, smaller\n"
        "ones fill the free threads; running slides never use more than N\n"
        "in total. Small slides run several at once, a big one alone.\n"
        "\n"
        "Options:\n"
        "  -o, --output OUTDIR  output directory (required)\n"
        "  --manifest FILE      read slides from a TSV manifest (repeatable)\n"
        "  --threads N          total threads (all cores)\n"
        "  --force              redo slides already done\n"
        "  --dry-run            list what would run or be skipped; write\n"
        "                       nothing\n"
        "  --quiet              no progress or per-slide lines (failures\n"
        "                       are still reported)\n"
        "  --log-json           one JSON object per event on stderr instead\n"
        "                       of text lines\n"
        "  --tile-size N, --overlap N, --quality N, --format F,\n"
        "  --skip-background    passed to 'slidepipe run' (see its --help)\n"
        "  --container dzi|tiff|ome-tiff|dicom\n"
        "                       the pyramid's container (dzi)\n"
        "  --passthrough        tiff/ome-tiff/dicom: copy level 0's JPEG tiles "
        "as\n"
        "                       stored where the slide allows it (JPEG tiles\n"
        "                       of the tile size); other slides are encoded,\n"
        "                       and their log line says why\n"
        "  --full-paths         record absolute slide paths in the shared\n"
        "                       outputs (default: the path below the input\n"
        "                       folder, or the file name; no folder above\n"
        "                       it, nor OUTDIR's path; see docs/OUTPUTS.md)\n"
        "  --shard K/N          run only share K (0..N-1) of N: of the slides\n"
        "                       every shard finds alike, a deterministic,\n"
        "                       size-balanced split (default in a Slurm job\n"
        "                       array: the task's index and count; 'none'\n"
        "                       turns that off); summaries go to\n"
        "                       batch-summary.shard-K-of-N.tsv/.json and no\n"
        "                       cohort.h5 is written: run --merge after all\n"
        "  --merge              run no slide: with the same inputs, take the\n"
        "                       results the shards left, write the summaries\n"
        "                       and cohort.h5; a slide no shard finished\n"
        "                       fails with the reason its shard recorded\n"
        "  -h, --help           show this help\n"
        "\n"
        "On a cluster (docs/CLUSTER.md): 'mpirun slidepipe-mpi' takes the\n"
        "same arguments; rank 0 finds the slides and hands them out, largest\n"
        "first, to every rank (itself too) as their threads free up; each\n"
        "rank's --threads is its node's budget (default: the CPUs Slurm gave\n"
        "the task, else all cores). A job array runs 'slidepipe batch' with\n"
        "--shard in each task, then --merge.\n"
        "\n"
        "Logs (stderr): a progress line on a terminal (slides done/total,\n"
        "running slides, tiles/s, ETA); otherwise one timestamped line per\n"
        "event ('2026-11-23T01:02:03Z slide ID: done in 12.3 s (1234\n"
        "tiles)'). A summary table goes to stdout at the end.\n"
        "Ctrl-C (or SIGTERM) stops the running slides, removes their\n"
        "partial output and writes the summary; a second Ctrl-C kills them\n"
        "at once.\n"
        "\n"
        "Exit status: 0 every slide done, 1 a slide could not be read,\n"
        "2 usage error, 3 an output could not be written (for a slide, the\n"
        "cohort, or OUTDIR as a whole), 4 a slide crashed or an internal\n"
        "error, 130 interrupted. The highest applies.\n");
}

/* ---- logging ------------------------------------------------------------ */

typedef enum { LOG_PLAIN, LOG_TTY, LOG_JSON } log_mode;

typedef struct {
    log_mode mode;
    bool quiet;
    bool line_drawn;
    double last_draw;
    const sp_batch *batch; /* for the names of the running slides */
    /* who logs, on a cluster: the rank (MPI) or shard (job array) and
     * host; host NULL on one machine */
    const char *host;
    int rank, shard;
} logger;

static void stamp(char *out, size_t n) {
    char t[32];
    sp_format_utc(sp_wall_clock(), t);
    snprintf(out, n, "%s", t);
}

static void clear_line(logger *lg) {
    if (lg->line_drawn) {
        fputs("\r\033[K", stderr);
        lg->line_drawn = false;
    }
}

static int term_width(void) {
    struct winsize ws;
    if (ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 20)
        return ws.ws_col;
    return 100;
}

/* "slides 3/20 (1 failed) | running: a, b | 123 tiles/s | 1:02 | ETA 3:04" */
static void draw(logger *lg, const sp_batch *b, const sp_batch_counts *c) {
    sp_buf l;
    sp_buf_init(&l);
    sp_buf_printf(&l, "slides %zu/%zu", c->finished, c->total);
    if (c->failed)
        sp_buf_printf(&l, " (%zu failed)", c->failed);
    if (c->running) {
        sp_buf_puts(&l, " | running:");
        size_t shown = 0;
        for (size_t i = 0; i < sp_batch_count(b); i++) {
            const sp_batch_slide *s = sp_batch_slide_at(b, i);
            if (s->status != SP_BATCH_RUNNING)
                continue;
            if (shown == 3) {
                sp_buf_printf(&l, " +%zu", c->running - shown);
                break;
            }
            sp_buf_printf(&l, "%s %s", shown ? "," : "", s->id);
            shown++;
        }
    }
    char el[32], eta[32];
    sp_format_duration(c->elapsed, el, sizeof el);
    sp_format_duration(c->eta, eta, sizeof eta);
    sp_buf_printf(&l, " | %.0f tiles/s | %s | ETA %s",
                  c->elapsed > 0 ? (double)c->tiles / c->elapsed : 0.0, el,
                  eta);
    int w = term_width() - 1;
    if (!l.oom && l.data) {
        if ((int)l.len > w)
            l.data[w] = '\0';
        fprintf(stderr, "\r%s\033[K", l.data);
        fflush(stderr);
        lg->line_drawn = true;
    }
    sp_buf_free(&l);
    lg->last_draw = sp_now();
}

static void json_event(const logger *lg, const char *event,
                       const sp_batch_slide *s, const sp_batch_counts *c,
                       const char *error) {
    sp_buf b;
    sp_buf_init(&b);
    sp_json j;
    sp_json_init(&j, &b, false);
    char ts[32];
    stamp(ts, sizeof ts);
    sp_json_begin_object(&j);
    sp_json_key(&j, "time");
    sp_json_string(&j, ts);
    sp_json_key(&j, "event");
    sp_json_string(&j, event);
    if (lg->host) {
        sp_json_key(&j, lg->shard >= 0 ? "shard" : "rank");
        sp_json_int(&j, lg->shard >= 0 ? lg->shard : lg->rank);
        sp_json_key(&j, "host");
        sp_json_string(&j, lg->host);
    }
    if (s) {
        if (s->host) {
            /* where the slide runs, when another rank runs it */
            sp_json_key(&j, "slide_rank");
            sp_json_int(&j, s->rank);
            sp_json_key(&j, "slide_host");
            sp_json_string(&j, s->host);
        }
        if (s->previous) {
            sp_json_key(&j, "previous");
            sp_json_string(&j, s->previous);
        }
        if (s->note) {
            sp_json_key(&j, "note");
            sp_json_string(&j, s->note);
        }
        sp_json_key(&j, "slide");
        sp_json_string(&j, s->id);
        sp_json_key(&j, "path");
        sp_json_string(&j, s->path);
        sp_json_key(&j, "status");
        sp_json_string(&j, sp_batch_status_name(s->status));
        if (s->threads > 0) {
            sp_json_key(&j, "threads");
            sp_json_int(&j, s->threads);
        }
        if (isfinite(s->seconds)) {
            sp_json_key(&j, "seconds");
            sp_json_number(&j, s->seconds);
        }
        if (s->tiles >= 0) {
            sp_json_key(&j, "tiles");
            sp_json_int(&j, s->tiles);
        }
        if (isfinite(s->tissue_area_mm2)) {
            sp_json_key(&j, "tissue_area_mm2");
            sp_json_number(&j, s->tissue_area_mm2);
        }
        if (s->stage) {
            sp_json_key(&j, "stage");
            sp_json_string(&j, s->stage);
        }
        if (s->error) {
            sp_json_key(&j, "error");
            sp_json_string(&j, s->error);
        }
    }
    if (error) {
        sp_json_key(&j, "error");
        sp_json_string(&j, error);
    }
    sp_json_key(&j, "finished");
    sp_json_int(&j, (int64_t)c->finished);
    sp_json_key(&j, "total");
    sp_json_int(&j, (int64_t)c->total);
    sp_json_key(&j, "running");
    sp_json_int(&j, (int64_t)c->running);
    sp_json_key(&j, "failed");
    sp_json_int(&j, (int64_t)c->failed);
    sp_json_key(&j, "elapsed");
    sp_json_number(&j, c->elapsed);
    sp_json_key(&j, "eta");
    if (c->eta >= 0)
        sp_json_number(&j, c->eta);
    else
        sp_json_null(&j);
    sp_json_end_object(&j);
    if (!b.oom)
        fprintf(stderr, "%s\n", b.data);
    fflush(stderr);
    sp_buf_free(&b);
}

/* One text line for an event, or "" when there is none to print. */
static void text_event(char *out, size_t n, const sp_batch_event *ev) {
    const sp_batch_slide *s = ev->slide;
    const sp_batch_counts *c = ev->counts;
    out[0] = '\0';
    switch (ev->kind) {
    case SP_BATCH_EV_PLANNED:
        snprintf(out, n,
                 "batch: %zu slides (%zu already done, %zu failed to open), "
                 "%zu files not slides, %d threads",
                 c->total, c->already_done, c->failed, c->not_slides,
                 c->threads_total);
        break;
    case SP_BATCH_EV_START: {
        char where[300] = "", prev[400] = "";
        if (s->host)
            snprintf(where, sizeof where, " on rank %d (%s)", s->rank, s->host);
        if (s->previous)
            snprintf(prev, sizeof prev, "; redone: %s", s->previous);
        snprintf(out, n, "slide %s: started with %d thread%s%s (%s)%s", s->id,
                 s->threads, s->threads == 1 ? "" : "s", where, s->path, prev);
        break;
    }
    case SP_BATCH_EV_SKIP:
        if (s->status == SP_BATCH_NOT_SLIDE && s->width > 0)
            /* opened, by libvips, but below the slide size rule */
            snprintf(out, n,
                     "skipped %s: image %lldx%lld is below the slide size "
                     "rule",
                     s->path, (long long)s->width, (long long)s->height);
        else if (s->status == SP_BATCH_NOT_SLIDE)
            snprintf(out, n, "skipped %s: not a slide", s->path);
        else
            snprintf(out, n, "slide %s: already done, skipped", s->id);
        break;
    case SP_BATCH_EV_FINISH:
        if (s->status == SP_BATCH_DONE) {
            char tiles[48] = "";
            if (s->tiles >= 0)
                snprintf(tiles, sizeof tiles, " (%lld tiles)",
                         (long long)s->tiles);
            snprintf(out, n, "slide %s: done in %.1f s%s [%zu/%zu]%s%s", s->id,
                     s->seconds, tiles, c->finished, c->total,
                     s->note ? "; " : "", s->note ? s->note : "");
        } else if (s->status == SP_BATCH_INTERRUPTED) {
            snprintf(out, n, "slide %s: interrupted", s->id);
        } else {
            snprintf(out, n, "slide %s: FAILED (%s): %s [%zu/%zu]",
                     s->id ? s->id : s->path, s->stage ? s->stage : "?",
                     s->error ? s->error : "unknown error", c->finished,
                     c->total);
        }
        break;
    case SP_BATCH_EV_COHORT:
        if (ev->error)
            snprintf(out, n, "cohort: FAILED: %s", ev->error);
        else
            snprintf(out, n, "cohort: cohort.h5 written (%zu slides)",
                     c->done + c->already_done);
        break;
    case SP_BATCH_EV_TICK: break;
    }
}

static bool is_problem(const sp_batch_event *ev) {
    return (ev->kind == SP_BATCH_EV_FINISH && ev->slide &&
            ev->slide->status == SP_BATCH_FAILED) ||
           (ev->kind == SP_BATCH_EV_COHORT && ev->error);
}

static void on_event(void *user, const sp_batch_event *ev) {
    logger *lg = user;
    if (lg->mode == LOG_JSON) {
        static const char *const names[] = {
            [SP_BATCH_EV_PLANNED] = "planned", [SP_BATCH_EV_START] = "start",
            [SP_BATCH_EV_FINISH] = "finish",   [SP_BATCH_EV_SKIP] = "skip",
            [SP_BATCH_EV_TICK] = "progress",   [SP_BATCH_EV_COHORT] = "cohort"};
        if (ev->kind == SP_BATCH_EV_TICK &&
            (lg->quiet || sp_now() - lg->last_draw < 10))
            return; /* a heartbeat every 10 s is plenty in a log */
        if (lg->quiet && !is_problem(ev))
            return;
        if (ev->kind == SP_BATCH_EV_TICK)
            lg->last_draw = sp_now();
        json_event(lg, names[ev->kind], ev->slide, ev->counts, ev->error);
        return;
    }
    char line[3 * SP_ERROR_MAX];
    text_event(line, sizeof line, ev);
    bool print = line[0] && (!lg->quiet || is_problem(ev));
    /* on a terminal the progress line names the running slides */
    if (lg->mode == LOG_TTY && ev->kind == SP_BATCH_EV_START)
        print = false;
    if (lg->mode == LOG_TTY && !lg->quiet) {
        if (print) {
            clear_line(lg);
            fprintf(stderr, "%s\n", line);
        }
        if (ev->kind != SP_BATCH_EV_PLANNED && ev->kind != SP_BATCH_EV_SKIP)
            draw(lg, lg->batch, ev->counts);
        return;
    }
    if (print) {
        char ts[32], who[300] = "";
        stamp(ts, sizeof ts);
        if (lg->host)
            snprintf(who, sizeof who, "[%s %d %s] ",
                     lg->shard >= 0 ? "shard" : "rank",
                     lg->shard >= 0 ? lg->shard : lg->rank, lg->host);
        fprintf(stderr, "%s %s%s\n", ts, who, line);
        fflush(stderr);
    }
}

/* A worker's log: its own slides starting and ending (rank 0 logs the
 * batch's progress and summary). */
static void on_worker_event(void *user, const sp_batch_event *ev) {
    if (ev->kind != SP_BATCH_EV_START && ev->kind != SP_BATCH_EV_FINISH)
        return;
    on_event(user, ev);
}

/* ---- summary table ------------------------------------------------------ */

/* On a cluster: what each rank ran ("rank 1 (node07): 12 slides, 1 failed,
 * 3456.7 s of slide time"). */
static void print_ranks(const sp_batch *b) {
    int top = -1;
    for (size_t i = 0; i < sp_batch_count(b); i++) {
        const sp_batch_slide *s = sp_batch_slide_at(b, i);
        if (s->host && s->rank > top)
            top = s->rank;
    }
    for (int r = 0; r <= top; r++) {
        size_t n = 0, failed = 0;
        double secs = 0;
        const char *host = NULL;
        for (size_t i = 0; i < sp_batch_count(b); i++) {
            const sp_batch_slide *s = sp_batch_slide_at(b, i);
            if (!s->host || s->rank != r)
                continue;
            host = s->host;
            n++;
            failed += s->status == SP_BATCH_FAILED;
            if (isfinite(s->seconds))
                secs += s->seconds;
        }
        if (n)
            printf("rank %d (%s): %zu slide%s, %zu failed, %.1f s of slide "
                   "time\n",
                   r, host, n, n == 1 ? "" : "s", failed, secs);
    }
}

static void print_table(const sp_batch *b, bool dry_run) {
    size_t n = sp_batch_count(b);
    int wid = 5, wst = 6;
    for (size_t i = 0; i < n; i++) {
        const sp_batch_slide *s = sp_batch_slide_at(b, i);
        const char *id = s->id ? s->id : "-";
        if ((int)strlen(id) > wid)
            wid = (int)strlen(id) > 40 ? 40 : (int)strlen(id);
        if ((int)strlen(sp_batch_status_name(s->status)) > wst)
            wst = (int)strlen(sp_batch_status_name(s->status));
    }
    if (dry_run) {
        printf("%-*s  %-*s  %7s  %7s  %s\n", wid, "slide", wst, "plan", "MP",
               "threads", "path / reason");
    } else {
        printf("%-*s  %-*s  %8s  %7s  %11s  %s\n", wid, "slide", wst, "status",
               "seconds", "tiles", "tissue_mm2", "error");
    }
    for (size_t i = 0; i < n; i++) {
        const sp_batch_slide *s = sp_batch_slide_at(b, i);
        const char *id = s->id ? s->id : "-";
        const char *st = sp_batch_status_name(s->status);
        if (dry_run) {
            const char *plan = s->status == SP_BATCH_PENDING ? "run" : st;
            char mp[32] = "", th[16] = "";
            if (s->vendor)
                snprintf(mp, sizeof mp, "%.1f", s->megapixels);
            if (s->status == SP_BATCH_PENDING)
                snprintf(th, sizeof th, "%d", s->threads);
            /* an error line already names the file */
            printf("%-*s  %-*s  %7s  %7s  %s\n", wid, id, wst, plan, mp, th,
                   s->error ? s->error : s->path);
            continue;
        }
        char secs[32] = "", tiles[32] = "", area[32] = "";
        if (isfinite(s->seconds))
            snprintf(secs, sizeof secs, "%.1f", s->seconds);
        if (s->tiles >= 0)
            snprintf(tiles, sizeof tiles, "%lld", (long long)s->tiles);
        if (isfinite(s->tissue_area_mm2))
            snprintf(area, sizeof area, "%.3f", s->tissue_area_mm2);
        const char *err = s->error ? s->error : "";
        if (s->status == SP_BATCH_NOT_SLIDE)
            err = s->path;
        printf("%-*s  %-*s  %8s  %7s  %11s  %s%s%s\n", wid, id, wst, st, secs,
               tiles, area,
               s->stage && s->status == SP_BATCH_FAILED ? s->stage : "",
               s->stage && s->status == SP_BATCH_FAILED ? ": " : "", err);
    }
    print_ranks(b);
    const sp_batch_counts *c = sp_batch_get_counts(b);
    if (dry_run) {
        printf("%zu slides: %zu to run, %zu already done, %zu failed to open; "
               "%zu files not slides\n",
               c->total, c->total - c->already_done - c->failed,
               c->already_done, c->failed, c->not_slides);
    } else {
        printf("%zu slides: %zu done, %zu already done, %zu failed, %zu "
               "interrupted; %zu files not slides; %.1f s\n",
               c->total, c->done, c->already_done, c->failed, c->interrupted,
               c->not_slides, c->elapsed);
    }
}

/* ---- main --------------------------------------------------------------- */

static bool add_opt(sp_buf *o, const char *key, const char *val) {
    sp_buf_printf(o, "%s%s%s%s", o->len ? " " : "", key, val ? "=" : "",
                  val ? val : "");
    return !o->oom;
}

static const char *host_name(void) {
    static char h[256];
    if (!h[0] && gethostname(h, sizeof h - 1) != 0)
        snprintf(h, sizeof h, "?");
    return h;
}

/* A worker rank: run what rank 0 sends; log as this rank. */
static int work(sp_batch_opts *bo, bool quiet, bool log_json) {
    const sp_batch_transport *t = bo->transport;
    logger lg = {.quiet = quiet,
                 .mode = log_json ? LOG_JSON : LOG_PLAIN,
                 .rank = t->rank,
                 .host = t->host,
                 .shard = -1};
    bo->on_event = on_worker_event;
    bo->user = &lg;
    bo->cancel = &interrupted;
    sp_cli_signals sigs;
    sp_cli_signals_catch(&sigs, on_signal);
    sp_error err = {0};
    bool ok = sp_batch_work(bo, &err);
    sp_cli_signals_restore(&sigs);
    if (!ok)
        return sp_cli_report(CMD, &err);
    return interrupted ? SP_EXIT_INTERRUPTED : SP_EXIT_OK;
}

/* --shard K/N, or the Slurm job array's task when there is no --shard:
 * SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN of SLURM_ARRAY_TASK_COUNT
 * (a step other than 1 is refused). False after a usage error. */
static bool parse_shard(const char *arg, int *index, int *count) {
    int64_t k, n;
    *index = *count = 0;
    if (arg && strcmp(arg, "none") == 0)
        return true;
    if (!arg) {
        const char *id = getenv("SLURM_ARRAY_TASK_ID");
        const char *cnt = getenv("SLURM_ARRAY_TASK_COUNT");
        const char *min = getenv("SLURM_ARRAY_TASK_MIN");
        const char *step = getenv("SLURM_ARRAY_TASK_STEP");
        int64_t lo = 0, st = 1;
        if (!id || !*id)
            return true;
        if (!cnt || !sp_parse_int64(id, &k) || !sp_parse_int64(cnt, &n) ||
            (min && *min && !sp_parse_int64(min, &lo)) ||
            (step && *step && !sp_parse_int64(step, &st)) || st != 1 || n < 1 ||
            k - lo < 0 || k - lo >= n) {
            sp_cli_error(CMD,
                         "a Slurm job array task (SLURM_ARRAY_TASK_ID=%s) "
                         "whose index and count make no shard: give "
                         "--shard K/N (or --shard none)",
                         id);
            return false;
        }
        *index = (int)(k - lo);
        *count = (int)n;
        return true;
    }
    const char *slash = strchr(arg, '/');
    char kbuf[32];
    if (!slash || (size_t)(slash - arg) >= sizeof kbuf) {
        sp_cli_error(CMD, "--shard '%s': expected K/N (e.g. 0/4)", arg);
        return false;
    }
    memcpy(kbuf, arg, (size_t)(slash - arg));
    kbuf[slash - arg] = '\0';
    if (!sp_parse_int64(kbuf, &k) || !sp_parse_int64(slash + 1, &n) || n < 1 ||
        n > 1000000 || k < 0 || k >= n) {
        sp_cli_error(CMD, "--shard '%s': expected K/N with 0 <= K < N", arg);
        return false;
    }
    *index = (int)k;
    *count = (int)n;
    return true;
}

/* A rank's thread budget by default: the CPUs Slurm gave the task, else
 * every core. */
static int default_threads(void) {
    int64_t n;
    const char *v = getenv("SLURM_CPUS_PER_TASK");
    if (v && sp_parse_int64(v, &n) && n >= 1 && n <= 4096)
        return (int)n;
    return 0;
}

static int batch_main(int argc, char **argv, sp_batch_transport *t) {
    enum {
        OPT_MANIFEST = 1000,
        OPT_THREADS,
        OPT_FORCE,
        OPT_DRY,
        OPT_QUIET,
        OPT_LOGJSON,
        OPT_TILE,
        OPT_OVERLAP,
        OPT_QUALITY,
        OPT_FORMAT,
        OPT_SKIP,
        OPT_FULLPATHS,
        OPT_SHARD,
        OPT_MERGE,
        OPT_CONTAINER,
        OPT_PASSTHROUGH
    };
    static const struct option opts[] = {
        {"output", required_argument, NULL, 'o'},
        {"manifest", required_argument, NULL, OPT_MANIFEST},
        {"threads", required_argument, NULL, OPT_THREADS},
        {"force", no_argument, NULL, OPT_FORCE},
        {"dry-run", no_argument, NULL, OPT_DRY},
        {"quiet", no_argument, NULL, OPT_QUIET},
        {"log-json", no_argument, NULL, OPT_LOGJSON},
        {"tile-size", required_argument, NULL, OPT_TILE},
        {"overlap", required_argument, NULL, OPT_OVERLAP},
        {"quality", required_argument, NULL, OPT_QUALITY},
        {"format", required_argument, NULL, OPT_FORMAT},
        {"skip-background", no_argument, NULL, OPT_SKIP},
        {"full-paths", no_argument, NULL, OPT_FULLPATHS},
        {"shard", required_argument, NULL, OPT_SHARD},
        {"merge", no_argument, NULL, OPT_MERGE},
        {"container", required_argument, NULL, OPT_CONTAINER},
        {"passthrough", no_argument, NULL, OPT_PASSTHROUGH},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    sp_batch_opts bo = {0};
    const char **manifests = calloc((size_t)argc + 1, sizeof *manifests);
    size_t n_manifests = 0;
    sp_buf common;
    sp_buf_init(&common);
    bool quiet = false, log_json = false;
    const char *shard = NULL;
    int rc = SP_EXIT_OK;
    sp_batch *b = NULL;
    sp_error err = {0};
    int64_t v;
    int c;
    if (!manifests) {
        sp_cli_error(CMD, "out of memory");
        return SP_EXIT_INTERNAL;
    }
    opterr = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, ":ho:", opts, NULL)) != -1) {
        switch (c) {
        case 'o': bo.outdir = optarg; break;
        case OPT_MANIFEST: manifests[n_manifests++] = optarg; break;
        case OPT_THREADS:
            if (!sp_cli_parse_int(CMD, "--threads", optarg, 1, 4096, &v)) {
                rc = SP_EXIT_USAGE;
                goto out;
            }
            bo.threads = (int)v;
            break;
        case OPT_FORCE: bo.force = true; break;
        case OPT_DRY: bo.dry_run = true; break;
        case OPT_QUIET: quiet = true; break;
        case OPT_LOGJSON: log_json = true; break;
        case OPT_TILE: add_opt(&common, "tile-size", optarg); break;
        case OPT_OVERLAP: add_opt(&common, "overlap", optarg); break;
        case OPT_QUALITY: add_opt(&common, "quality", optarg); break;
        case OPT_FORMAT: add_opt(&common, "format", optarg); break;
        case OPT_SKIP: add_opt(&common, "skip-background", NULL); break;
        case OPT_CONTAINER: add_opt(&common, "container", optarg); break;
        case OPT_PASSTHROUGH: add_opt(&common, "passthrough", NULL); break;
        case OPT_FULLPATHS: bo.full_paths = true; break;
        case OPT_SHARD: shard = optarg; break;
        case OPT_MERGE: bo.merge = true; break;
        case 'h': help(stdout); goto out;
        case ':':
            sp_cli_error(CMD, "option '%s' needs a value", argv[optind - 1]);
            rc = SP_EXIT_USAGE;
            goto out;
        default:
            sp_cli_error(CMD,
                         "unknown option '%s' (see 'slidepipe batch --help')",
                         argv[optind - 1]);
            rc = SP_EXIT_USAGE;
            goto out;
        }
    }
    if (!bo.outdir) {
        sp_cli_error(CMD, "no output directory given (-o OUTDIR)");
        rc = SP_EXIT_USAGE;
        goto out;
    }
    if (!t && !bo.merge &&
        !parse_shard(shard, &bo.shard_index, &bo.shard_count)) {
        rc = SP_EXIT_USAGE;
        goto out;
    }
    if (t && shard) {
        sp_cli_error(CMD, "--shard is for job arrays, not for a batch over "
                          "MPI ranks");
        rc = SP_EXIT_USAGE;
        goto out;
    }
    if (bo.merge && (shard || t)) {
        sp_cli_error(CMD, "--merge runs alone: no --shard, no MPI");
        rc = SP_EXIT_USAGE;
        goto out;
    }
    if (bo.threads <= 0 && (t || bo.shard_count > 0))
        bo.threads = default_threads();
    bo.transport = t;
    if (t && t->rank > 0) {
        /* a worker: its slides come from rank 0 */
        rc = work(&bo, quiet, log_json);
        goto out;
    }
    if (optind >= argc && n_manifests == 0) {
        sp_cli_error(CMD, "no input given (slides, directories or --manifest; "
                          "see 'slidepipe batch --help')");
        rc = SP_EXIT_USAGE;
        goto out;
    }
    if (common.oom) {
        sp_cli_error(CMD, "out of memory");
        rc = SP_EXIT_INTERNAL;
        goto out;
    }

    logger lg = {.quiet = quiet, .shard = -1};
    lg.mode = log_json                            ? LOG_JSON
              : (!quiet && sp_progress_default()) ? LOG_TTY
                                                  : LOG_PLAIN;
    if (t) {
        lg.rank = t->rank;
        lg.host = t->host;
    } else if (bo.shard_count > 0) {
        lg.shard = bo.shard_index;
        lg.host = host_name();
    }
    bo.options = common.len ? common.data : NULL;
    bo.on_event = on_event;
    bo.user = &lg;
    bo.cancel = &interrupted;
    b = sp_batch_new(&bo, &err);
    if (!b) {
        rc = sp_cli_report(CMD, &err);
        goto out;
    }
    lg.batch = b;
    for (int i = optind; i < argc; i++)
        if (!sp_batch_add_path(b, argv[i], &err)) {
            rc = sp_cli_report(CMD, &err);
            goto out;
        }
    for (size_t i = 0; i < n_manifests; i++)
        if (!sp_batch_add_manifest(b, manifests[i], &err)) {
            rc = sp_cli_report(CMD, &err);
            goto out;
        }

    sp_cli_signals sigs;
    sp_cli_signals_catch(&sigs, on_signal); /* wakes the poll loop */
    bool ok = sp_batch_run(b, &err);
    sp_cli_signals_restore(&sigs);
    clear_line(&lg);
    if (!ok) {
        rc = sp_cli_report(CMD, &err);
        goto out;
    }
    print_table(b, bo.dry_run);
    fflush(stdout);
    if (interrupted) {
        sp_cli_error(CMD, "interrupted; rerun the same command to resume");
        rc = SP_EXIT_INTERRUPTED;
        goto out;
    }
    rc = sp_cli_exit_code(sp_batch_exit_category(b));
    if (rc != SP_EXIT_OK && !bo.dry_run) {
        const sp_batch_counts *k = sp_batch_get_counts(b);
        if (sp_batch_cohort_error(b))
            sp_cli_error(CMD, "cohort: %s", sp_batch_cohort_error(b));
        if (sp_batch_summary_error(b))
            sp_cli_error(CMD, "summary: %s", sp_batch_summary_error(b));
        sp_cli_error(CMD, "%zu of %zu slides failed (see %s/batch-summary.tsv)",
                     k->failed, k->total, bo.outdir);
    }
out:
    sp_batch_free(b);
    sp_buf_free(&common);
    free(manifests);
    return rc;
}

int sp_cmd_batch(int argc, char **argv) { return batch_main(argc, argv, NULL); }

int sp_cmd_batch_over(int argc, char **argv, sp_batch_transport *t) {
    return batch_main(argc, argv, t);
}
