/* batch: plan, run slides in child processes, resume, summaries, cohort.
 * The rules are in batch.h. */
#include "batch_private.h"

#include <ctype.h>
#include <dirent.h>
#include <stddef.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "store.h"

/* The subcommand each child runs and the files it must leave. */
#define CHILD_CMD "run"
#define OUT_BASE "slide"
static const char *const OUTPUTS[] = {"slide.dzi", "slide_files", "slide.json",
                                      "slide.h5"};
#define N_OUTPUTS (sizeof OUTPUTS / sizeof OUTPUTS[0])
#define DONE_FILE "done.json"
#define DONE_SCHEMA "slidepipe.batch-done"
#define LOCK_FILE ".batch.lock"
#define MP_PER_THREAD 64.0 /* level-0 megapixels per thread a slide asks */
#define FINGERPRINT_TAG "slidepipe-batch/1 " CHILD_CMD

/* ---- small helpers ------------------------------------------------------ */

const char *sp_batch_status_name(sp_batch_status s) {
    switch (s) {
    case SP_BATCH_PENDING: return "pending";
    case SP_BATCH_RUNNING: return "running";
    case SP_BATCH_DONE: return "done";
    case SP_BATCH_ALREADY_DONE: return "already-done";
    case SP_BATCH_FAILED: return "failed";
    case SP_BATCH_INTERRUPTED: return "interrupted";
    case SP_BATCH_NOT_SLIDE: return "not-a-slide";
    }
    return "?";
}

static char *xstrdup(const char *s) { return s ? strdup(s) : NULL; }

static void iso_now(char *out, size_t n) {
    char t[32];
    sp_format_utc(sp_wall_clock(), t);
    snprintf(out, n, "%s", t);
}

/* Replace the string *dst with a copy of `s` (NULL allowed). */
static void set_str(char **dst, const char *s) {
    free(*dst);
    *dst = xstrdup(s);
}

static void sync_pub(sp__bslide *s) {
    s->pub.path = s->path;
    s->pub.id = s->id;
    s->pub.options = s->options;
    s->pub.vendor = s->vendor;
    s->pub.quickhash = s->quickhash;
    s->pub.fingerprint = s->fingerprint;
    s->pub.stage = s->stage;
    s->pub.error = s->error;
}

static void slide_fail(sp__bslide *s, const char *stage, sp_errcode code,
                       const char *msg) {
    s->pub.status = SP_BATCH_FAILED;
    s->pub.error_code = code;
    set_str(&s->stage, stage);
    set_str(&s->error, msg);
    if (s->error)
        for (char *p = s->error; *p; p++)
            if (*p == '\n' || *p == '\r' || *p == '\t')
                *p = ' ';
    sync_pub(s);
}

/* FNV-1a, 64 bits: stable across builds and machines. */
static void fingerprint(const char *s, char out[17]) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        h ^= *p;
        h *= 0x100000001b3ull;
    }
    snprintf(out, 17, "%016llx", (unsigned long long)h);
}

/* ---- a minimal JSON reader (our own children's lines, our done.json) --- */

static const char *ws(const char *p) {
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
        p++;
    return p;
}

/* End of the JSON value at p, or NULL when malformed. */
static const char *skip_value(const char *p, int depth) {
    p = ws(p);
    if (depth > 64)
        return NULL;
    if (*p == '"') {
        for (p++; *p && *p != '"'; p++)
            if (*p == '\\' && !*++p)
                return NULL;
        return *p == '"' ? p + 1 : NULL;
    }
    if (*p == '{' || *p == '[') {
        char close = *p == '{' ? '}' : ']';
        p = ws(p + 1);
        if (*p == close)
            return p + 1;
        for (;;) {
            if (close == '}') {
                p = skip_value(p, depth + 1); /* key */
                if (!p || *(p = ws(p)) != ':')
                    return NULL;
                p++;
            }
            p = skip_value(p, depth + 1);
            if (!p)
                return NULL;
            p = ws(p);
            if (*p == ',') {
                p = ws(p + 1);
                continue;
            }
            return *p == close ? p + 1 : NULL;
        }
    }
    const char *s = p;
    while (*p &&
           (isalnum((unsigned char)*p) || *p == '-' || *p == '+' || *p == '.'))
        p++;
    return p > s ? p : NULL;
}

/* Decode the JSON string at p (malloc'd), or NULL (also for p NULL: a
 * member json_get did not find). */
static char *json_str(const char *p) {
    if (!p)
        return NULL;
    p = ws(p);
    if (*p != '"')
        return NULL;
    const char *end = skip_value(p, 0);
    if (!end)
        return NULL;
    sp_buf b;
    sp_buf_init(&b);
    sp_buf_puts(&b, "");
    for (p++; p < end - 1; p++) {
        if (*p != '\\') {
            sp_buf_append(&b, p, 1);
            continue;
        }
        char c = *++p, o = c;
        switch (c) {
        case 'n': o = '\n'; break;
        case 't': o = '\t'; break;
        case 'r': o = '\r'; break;
        case 'b': o = '\b'; break;
        case 'f': o = '\f'; break;
        case 'u': {
            unsigned v = 0;
            for (int i = 1; i <= 4 && isxdigit((unsigned char)p[i]); i++)
                v = v * 16 +
                    (unsigned)(isdigit((unsigned char)p[i])
                                   ? p[i] - '0'
                                   : (tolower((unsigned char)p[i]) - 'a' + 10));
            p += 4;
            char u[4];
            size_t n;
            if (v < 0x80) {
                u[0] = (char)v;
                n = 1;
            } else if (v < 0x800) {
                u[0] = (char)(0xc0 | (v >> 6));
                u[1] = (char)(0x80 | (v & 0x3f));
                n = 2;
            } else { /* surrogates are kept as they come: text only */
                u[0] = (char)(0xe0 | (v >> 12));
                u[1] = (char)(0x80 | ((v >> 6) & 0x3f));
                u[2] = (char)(0x80 | (v & 0x3f));
                n = 3;
            }
            sp_buf_append(&b, u, n);
            continue;
        }
        default: break;
        }
        sp_buf_append(&b, &o, 1);
    }
    if (b.oom) {
        sp_buf_free(&b);
        return NULL;
    }
    return b.data;
}

/* The value of top-level `key` in the object at p, or NULL. */
static const char *json_get(const char *p, const char *key) {
    p = ws(p);
    if (*p != '{')
        return NULL;
    p = ws(p + 1);
    size_t kl = strlen(key);
    while (*p == '"') {
        const char *kend = skip_value(p, 0);
        if (!kend)
            return NULL;
        bool match =
            (size_t)(kend - p) == kl + 2 && strncmp(p + 1, key, kl) == 0;
        p = ws(kend);
        if (*p != ':')
            return NULL;
        p = ws(p + 1);
        if (match)
            return p;
        p = skip_value(p, 0);
        if (!p)
            return NULL;
        p = ws(p);
        if (*p != ',')
            return NULL;
        p = ws(p + 1);
    }
    return NULL;
}

static double json_num(const char *v) {
    double d;
    if (!v)
        return NAN;
    char tmp[64];
    const char *end = skip_value(v, 0);
    size_t n = end ? (size_t)(end - v) : 0;
    if (n == 0 || n >= sizeof tmp)
        return NAN;
    memcpy(tmp, v, n);
    tmp[n] = '\0';
    return sp_parse_double(tmp, &d) ? d : NAN;
}

static bool json_true(const char *v) { return v && strncmp(v, "true", 4) == 0; }

static bool json_valid_object(const char *p) {
    p = ws(p);
    if (*p != '{')
        return false;
    const char *end = skip_value(p, 0);
    return end && *ws(end) == '\0';
}

/* The object at p with the top-level members named in keys[] given the
 * string values vals[] (JSON strings; NULL writes null), every other
 * member copied as it is. malloc'd; NULL when malformed or out of memory. */
static char *json_with(const char *p, const char *const *keys,
                       const char *const *vals, size_t n) {
    p = ws(p);
    if (*p != '{')
        return NULL;
    sp_buf o;
    sp_buf_init(&o);
    sp_buf_puts(&o, "{");
    p = ws(p + 1);
    bool first = true;
    while (*p == '"') {
        const char *kend = skip_value(p, 0);
        const char *v = kend ? ws(kend) : NULL;
        if (!v || *v != ':')
            goto bad;
        v = ws(v + 1);
        const char *vend = skip_value(v, 0);
        if (!vend)
            goto bad;
        if (!first)
            sp_buf_puts(&o, ",");
        first = false;
        sp_buf_append(&o, p, (size_t)(kend - p));
        sp_buf_puts(&o, ":");
        size_t k = 0;
        while (k < n && !((size_t)(kend - p) == strlen(keys[k]) + 2 &&
                          strncmp(p + 1, keys[k], strlen(keys[k])) == 0))
            k++;
        if (k < n && vals[k])
            sp_json_escape(&o, vals[k]);
        else if (k < n)
            sp_buf_puts(&o, "null");
        else
            sp_buf_append(&o, v, (size_t)(vend - v));
        p = ws(vend);
        if (*p == ',')
            p = ws(p + 1);
        else if (*p != '}')
            goto bad;
    }
    if (*p != '}')
        goto bad;
    sp_buf_puts(&o, "}");
    if (o.oom)
        goto bad;
    return o.data;
bad:
    sp_buf_free(&o);
    return NULL;
}

/* ---- paths in shared outputs -------------------------------------------- */

/* `text` with every `from` replaced by `to` (malloc'd; NULL on OOM). */
static char *replace_all(const char *text, const char *from, const char *to) {
    sp_buf o;
    sp_buf_init(&o);
    sp_buf_puts(&o, "");
    size_t n = strlen(from);
    for (const char *p = text; *p;) {
        if (n && strncmp(p, from, n) == 0) {
            sp_buf_puts(&o, to);
            p += n;
        } else {
            sp_buf_append(&o, p++, 1);
        }
    }
    if (o.oom) {
        sp_buf_free(&o);
        return NULL;
    }
    return o.data;
}

/* In place: *text with `from` replaced by `to`; unchanged on OOM. */
static void replace_in(char **text, const char *from, const char *to) {
    if (!*text || !from || !from[0])
        return;
    char *r = replace_all(*text, from, to);
    if (r) {
        free(*text);
        *text = r;
    }
}

/* An absolute path for `p` (realpath, or the working folder joined when
 * the file is gone); malloc'd. */
static char *abs_path(const char *p) {
    char *r = realpath(p, NULL);
    if (r || p[0] == '/')
        return r ? r : strdup(p);
    char cwd[PATH_MAX];
    return getcwd(cwd, sizeof cwd) ? sp_path_join(cwd, p) : strdup(p);
}

/* The slide as shared outputs (done.json, summaries) name it: its path
 * below its input folder, or with full_paths its absolute path. */
static char *recorded_path(const sp_batch *b, const sp__bslide *s) {
    return b->o.full_paths ? abs_path(s->path) : xstrdup(s->rel);
}

/* A message as shared outputs carry it: without full_paths, the slide's
 * path as given becomes its recorded one, and the input folder and OUTDIR
 * prefixes go, so no folder above them is named. malloc'd. */
static char *shared_text(const sp_batch *b, const sp__bslide *s,
                         const char *text) {
    char *t = xstrdup(text);
    if (!t || b->o.full_paths)
        return t;
    if (s) {
        replace_in(&t, s->path, s->rel);
        /* "." and ".." name no folder: scrubbing "./" would mangle "../" */
        if (s->root && s->root[0] && strcmp(s->root, ".") != 0 &&
            strcmp(s->root, "./") != 0 && strcmp(s->root, "..") != 0) {
            sp_buf r;
            sp_buf_init(&r);
            sp_buf_printf(&r, "%s%s", s->root,
                          s->root[strlen(s->root) - 1] == '/' ? "" : "/");
            if (!r.oom && strcmp(r.data, "/") != 0)
                replace_in(&t, r.data, "");
            sp_buf_free(&r);
        }
    }
    char *od = sp_path_join(b->outdir, "");
    if (od && strcmp(od, "/") != 0)
        replace_in(&t, od, "");
    free(od);
    return t;
}

/* ---- the batch object --------------------------------------------------- */

sp_batch *sp_batch_new(const sp_batch_opts *o, sp_error *err) {
    if (!o->outdir || !o->outdir[0]) {
        sp_error_set(err, SP_ERR_USAGE, NULL, "no output directory");
        return NULL;
    }
    sp_batch *b = calloc(1, sizeof *b);
    if (!b) {
        sp_error_set(err, SP_ERR_NOMEM, NULL, "out of memory");
        return NULL;
    }
    b->o = *o;
    b->lock_fd = -1;
    b->outdir = strdup(o->outdir);
    b->exe = xstrdup(o->exe ? o->exe : "/proc/self/exe");
    if (!b->outdir || !b->exe)
        goto oom;
    size_t ol = strlen(b->outdir);
    while (ol > 1 && b->outdir[ol - 1] == '/')
        b->outdir[--ol] = '\0';
    if (!sp_batch_parse_options(o->options, &b->common, err))
        goto fail;
    b->o.outdir = b->outdir;
    b->o.exe = b->exe;
    b->o.options = b->common;
    if (b->o.threads <= 0)
        b->o.threads = sp_default_threads();
    struct stat st;
    if (stat(b->outdir, &st) == 0 && S_ISDIR(st.st_mode)) {
        b->outdir_exists = true;
        b->out_dev = st.st_dev;
        b->out_ino = st.st_ino;
    }
    b->counts.threads_total = b->o.threads;
    b->counts.eta = -1;
    return b;
oom:
    sp_error_set(err, SP_ERR_NOMEM, NULL, "out of memory");
fail:
    sp_batch_free(b);
    return NULL;
}

static void slide_free(sp__bslide *s) {
    if (!s)
        return;
    free(s->path);
    free(s->rel);
    free(s->root);
    free(s->id);
    free(s->options);
    free(s->vendor);
    free(s->quickhash);
    free(s->fingerprint);
    free(s->params);
    free(s->stage);
    free(s->error);
    free(s->run_json);
    free(s->tmpdir);
    sp_buf_free(&s->out);
    sp_buf_free(&s->err);
    free(s);
}

void sp_batch_free(sp_batch *b) {
    if (!b)
        return;
    for (size_t i = 0; i < b->n; i++)
        slide_free(b->v[i]);
    free(b->v);
    if (b->lock_fd >= 0)
        close(b->lock_fd);
    free(b->outdir);
    free(b->exe);
    free(b->common);
    free(b->cohort_error);
    free(b->cohort_path);
    free(b->summary_error);
    free(b);
}

size_t sp_batch_count(const sp_batch *b) { return b->n; }
const sp_batch_slide *sp_batch_slide_at(const sp_batch *b, size_t i) {
    return i < b->n ? &b->v[i]->pub : NULL;
}
const sp_batch_counts *sp_batch_get_counts(const sp_batch *b) {
    return &b->counts;
}
const char *sp_batch_cohort_error(const sp_batch *b) { return b->cohort_error; }
const char *sp_batch_summary_error(const sp_batch *b) {
    return b->summary_error;
}
const char *sp_batch_cohort_path(const sp_batch *b) {
    return b->cohort_written ? b->cohort_path : NULL;
}

sp_errcode sp_batch_exit_category(const sp_batch *b) {
    int rank = 0; /* 0 ok, 1 input, 2 output, 3 internal */
    for (size_t i = 0; i < b->n; i++) {
        const sp_batch_slide *s = &b->v[i]->pub;
        if (s->status != SP_BATCH_FAILED)
            continue;
        int r = s->error_code == SP_ERR_INPUT    ? 1
                : s->error_code == SP_ERR_OUTPUT ? 2
                                                 : 3;
        if (r > rank)
            rank = r;
    }
    if ((b->cohort_error || b->summary_error) && rank < 2)
        rank = 2;
    static const sp_errcode codes[] = {SP_OK, SP_ERR_INPUT, SP_ERR_OUTPUT,
                                       SP_ERR_INTERNAL};
    return codes[rank];
}

bool sp__batch_push(sp_batch *b, const char *path, const char *rel,
                    const char *root, const char *id, const char *options,
                    bool is_explicit, sp_error *err) {
    struct stat st;
    bool is_file = stat(path, &st) == 0 && S_ISREG(st.st_mode);
    if (is_file)
        for (size_t i = 0; i < b->n; i++)
            if (b->v[i]->has_ino && b->v[i]->dev == st.st_dev &&
                b->v[i]->ino == st.st_ino)
                return true; /* listed already */
    if (b->n == b->cap) {
        size_t nc = b->cap ? 2 * b->cap : 64;
        sp__bslide **nv = realloc(b->v, nc * sizeof *nv);
        if (!nv)
            return sp_error_set(err, SP_ERR_NOMEM, path, "out of memory");
        b->v = nv;
        b->cap = nc;
    }
    sp__bslide *s = calloc(1, sizeof *s);
    if (!s)
        return sp_error_set(err, SP_ERR_NOMEM, path, "out of memory");
    s->path = strdup(path);
    s->rel = strdup(rel ? rel : sp_basename(path));
    if (root) {
        s->root = strdup(root);
    } else { /* the file's own folder */
        size_t dl = (size_t)(sp_basename(path) - path);
        while (dl > 1 && path[dl - 1] == '/')
            dl--;
        s->root = strndup(path, dl);
    }
    s->id = xstrdup(id);
    s->options = xstrdup(options);
    s->has_id = id != NULL;
    if (is_file) {
        s->has_ino = true;
        s->dev = st.st_dev;
        s->ino = st.st_ino;
    }
    s->pid = -1;
    s->fd_out = s->fd_err = -1;
    s->pub.is_explicit = is_explicit;
    s->pub.tiles = -1;
    s->pub.tissue_area_mm2 = NAN;
    s->pub.seconds = NAN;
    sp_buf_init(&s->out);
    sp_buf_init(&s->err);
    if (!s->path || !s->rel || !s->root || (id && !s->id) ||
        (options && !s->options)) {
        slide_free(s);
        return sp_error_set(err, SP_ERR_NOMEM, path, "out of memory");
    }
    sync_pub(s);
    b->v[b->n++] = s;
    return true;
}

/* ---- events and counts -------------------------------------------------- */

static void recount(sp_batch *b) {
    sp_batch_counts *c = &b->counts;
    size_t total = 0, done = 0, already = 0, failed = 0, intr = 0, ns = 0,
           running = 0;
    int busy = 0;
    double mp_left = 0;
    for (size_t i = 0; i < b->n; i++) {
        const sp_batch_slide *s = &b->v[i]->pub;
        switch (s->status) {
        case SP_BATCH_NOT_SLIDE: ns++; continue;
        case SP_BATCH_DONE: done++; break;
        case SP_BATCH_ALREADY_DONE: already++; break;
        case SP_BATCH_FAILED: failed++; break;
        case SP_BATCH_INTERRUPTED: intr++; break;
        case SP_BATCH_RUNNING:
            running++;
            busy += s->threads;
            mp_left += 0.5 * s->megapixels;
            break;
        case SP_BATCH_PENDING: mp_left += s->megapixels; break;
        }
        total++;
    }
    c->total = total;
    c->done = done;
    c->already_done = already;
    c->failed = failed;
    c->interrupted = intr;
    c->not_slides = ns;
    c->running = running;
    c->finished = done + already + failed + intr;
    c->threads_busy = busy;
    c->elapsed = b->t0 > 0 ? sp_now() - b->t0 : 0;
    double rate = c->elapsed > 0 ? b->mp_done / c->elapsed : 0;
    c->eta = running == 0 && mp_left == 0 ? 0 : rate > 0 ? mp_left / rate : -1;
}

static void emit(sp_batch *b, sp_batch_event_kind kind, const sp__bslide *s,
                 const char *error) {
    recount(b);
    if (!b->o.on_event)
        return;
    sp_batch_event ev = {.kind = kind,
                         .slide = s ? &s->pub : NULL,
                         .counts = &b->counts,
                         .error = error};
    b->o.on_event(b->o.user, &ev);
}

/* ---- summary files ------------------------------------------------------ */

static void tsv_field(sp_buf *o, const char *s) {
    for (const char *p = s ? s : ""; *p; p++)
        sp_buf_append(o, *p == '\t' || *p == '\n' || *p == '\r' ? " " : p, 1);
}

static bool write_summaries(sp_batch *b, sp_error *err) {
    sp_buf t, j;
    sp_buf_init(&t);
    sp_buf_init(&j);
    recount(b);
    sp_buf_puts(&t, "slide\tpath\tstatus\tseconds\ttiles\ttissue_area_mm2\t"
                    "stage\terror\n");
    sp_json w;
    sp_json_init(&w, &j, true);
    char now[32];
    iso_now(now, sizeof now);
    sp_json_begin_object(&w);
    sp_json_key(&w, "slidepipe_version");
    sp_json_string(&w, SP_VERSION);
    /* the folder's name; its full path only with full_paths */
    char *outdir_abs = b->o.full_paths ? abs_path(b->outdir) : NULL;
    sp_json_key(&w, "outdir");
    sp_json_string(&w, outdir_abs ? outdir_abs : sp_basename(b->outdir));
    free(outdir_abs);
    sp_json_key(&w, "paths");
    sp_json_string(&w, b->o.full_paths ? "full" : "relative");
    sp_json_key(&w, "started");
    sp_json_string(&w, b->started_iso);
    sp_json_key(&w, "updated");
    sp_json_string(&w, now);
    sp_json_key(&w, "finished");
    sp_json_bool(&w, b->finished);
    sp_json_key(&w, "interrupted");
    sp_json_bool(&w, b->cancelling);
    sp_json_key(&w, "threads");
    sp_json_int(&w, b->o.threads);
    sp_json_key(&w, "options");
    sp_json_string(&w, b->common);
    sp_json_key(&w, "counts");
    sp_json_begin_object(&w);
    const sp_batch_counts *c = &b->counts;
    const struct {
        const char *k;
        size_t v;
    } cs[] = {{"slides", c->total},
              {"done", c->done},
              {"already_done", c->already_done},
              {"failed", c->failed},
              {"interrupted", c->interrupted},
              {"running", c->running},
              {"not_slides", c->not_slides}};
    for (size_t i = 0; i < sizeof cs / sizeof cs[0]; i++) {
        sp_json_key(&w, cs[i].k);
        sp_json_int(&w, (int64_t)cs[i].v);
    }
    sp_json_end_object(&w);
    sp_json_key(&w, "cohort");
    sp_json_string(&w, b->cohort_written ? "cohort.h5" : NULL);
    char *cerr = shared_text(b, NULL, b->cohort_error);
    sp_json_key(&w, "cohort_error");
    sp_json_string(&w, cerr);
    free(cerr);
    sp_json_key(&w, "slides");
    sp_json_begin_array(&w);
    for (size_t i = 0; i < b->n; i++) {
        const sp_batch_slide *s = &b->v[i]->pub;
        const char *st = sp_batch_status_name(s->status);
        char *path = recorded_path(b, b->v[i]);
        char *error = shared_text(b, b->v[i], s->error);
        if (!path || (s->error && !error))
            t.oom = true;
        tsv_field(&t, s->id);
        sp_buf_puts(&t, "\t");
        tsv_field(&t, path);
        sp_buf_printf(&t, "\t%s\t", st);
        if (isfinite(s->seconds))
            sp_buf_printf(&t, "%.2f", s->seconds);
        sp_buf_puts(&t, "\t");
        if (s->tiles >= 0)
            sp_buf_printf(&t, "%lld", (long long)s->tiles);
        sp_buf_puts(&t, "\t");
        if (isfinite(s->tissue_area_mm2))
            sp_buf_printf(&t, "%.4f", s->tissue_area_mm2);
        sp_buf_puts(&t, "\t");
        tsv_field(&t, s->stage);
        sp_buf_puts(&t, "\t");
        tsv_field(&t, error);
        sp_buf_puts(&t, "\n");

        sp_json_begin_object(&w);
        sp_json_key(&w, "slide");
        sp_json_string(&w, s->id);
        sp_json_key(&w, "path");
        sp_json_string(&w, path);
        sp_json_key(&w, "status");
        sp_json_string(&w, st);
        sp_json_key(&w, "seconds");
        sp_json_number(&w, s->seconds);
        sp_json_key(&w, "tiles");
        if (s->tiles >= 0)
            sp_json_int(&w, s->tiles);
        else
            sp_json_null(&w);
        sp_json_key(&w, "tissue_area_mm2");
        sp_json_number(&w, s->tissue_area_mm2);
        sp_json_key(&w, "stage");
        sp_json_string(&w, s->stage);
        sp_json_key(&w, "error");
        sp_json_string(&w, error);
        free(path);
        free(error);
        sp_json_key(&w, "vendor");
        sp_json_string(&w, s->vendor);
        sp_json_key(&w, "width");
        if (s->vendor)
            sp_json_int(&w, s->width);
        else
            sp_json_null(&w);
        sp_json_key(&w, "height");
        if (s->vendor)
            sp_json_int(&w, s->height);
        else
            sp_json_null(&w);
        sp_json_key(&w, "quickhash");
        sp_json_string(&w, s->quickhash);
        sp_json_key(&w, "threads");
        if (s->threads > 0)
            sp_json_int(&w, s->threads);
        else
            sp_json_null(&w);
        sp_json_key(&w, "options");
        sp_json_string(&w, s->options);
        sp_json_end_object(&w);
    }
    sp_json_end_array(&w);
    sp_json_end_object(&w);
    sp_buf_puts(&j, "\n");
    bool ok = false;
    char *pt = sp_path_join(b->outdir, "batch-summary.tsv");
    char *pj = sp_path_join(b->outdir, "batch-summary.json");
    if (t.oom || j.oom || !pt || !pj)
        sp_error_set(err, SP_ERR_NOMEM, NULL, "out of memory");
    else
        ok = sp_write_file_atomic(pt, t.data, t.len, err) &&
             sp_write_file_atomic(pj, j.data, j.len, err);
    free(pt);
    free(pj);
    sp_buf_free(&t);
    sp_buf_free(&j);
    b->last_summary = sp_now();
    return ok;
}

/* ---- planning ----------------------------------------------------------- */

/* Extensions only whole-slide formats use: such a file that OpenSlide does
 * not recognise (or that is empty) is a damaged slide, not an unrelated
 * file. Generic ones (.tif, .tiff) may be any image. */
static const char *const SLIDE_EXTS[] = {
    ".svs", ".ndpi", ".vms", ".vmu", ".scn", ".mrxs", ".svslide", ".bif", NULL};

static bool slide_ext(const char *path) {
    size_t n = strlen(path);
    for (const char *const *e = SLIDE_EXTS; *e; e++) {
        size_t k = strlen(*e);
        if (n > k && strcasecmp(path + n - k, *e) == 0)
            return true;
    }
    return false;
}

/* Names that cannot be slide ids: they are the batch's own files. */
static bool reserved_id(const char *id) {
    return strcmp(id, "cohort.h5") == 0 ||
           strcmp(id, "batch-summary.tsv") == 0 ||
           strcmp(id, "batch-summary.json") == 0;
}

/* The file name without its extension, sanitised to [A-Za-z0-9._-]. */
static char *derive_id(const char *path) {
    const char *base = sp_basename(path);
    size_t n = strlen(base);
    while (n && base[n - 1] == '/')
        n--;
    const char *dot = NULL;
    for (size_t i = 1; i < n; i++)
        if (base[i] == '.')
            dot = base + i;
    if (dot)
        n = (size_t)(dot - base);
    if (n > 200)
        n = 200;
    char *id = malloc(n + 16);
    if (!id)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        char c = base[i];
        id[i] = isalnum((unsigned char)c) || c == '.' || c == '_' || c == '-'
                    ? c
                    : '_';
    }
    id[n] = '\0';
    if (!n)
        strcpy(id, "slide");
    if (id[0] == '.')
        id[0] = '_';
    return id;
}

static bool id_taken(sp_batch *b, size_t upto, const char *id) {
    if (reserved_id(id))
        return true;
    for (size_t i = 0; i < upto; i++)
        if (b->v[i]->id && strcmp(b->v[i]->id, id) == 0)
            return true;
    return false;
}

/* Ids: manifest ids first (duplicates are a usage error), then derived
 * ones in input order with -2, -3... on collisions. */
static bool assign_ids(sp_batch *b, sp_error *err) {
    for (size_t i = 0; i < b->n; i++) {
        sp__bslide *s = b->v[i];
        if (!s->has_id)
            continue;
        for (size_t k = 0; k < i; k++)
            if (b->v[k]->has_id && strcmp(b->v[k]->id, s->id) == 0)
                return sp_error_set(err, SP_ERR_USAGE, s->path,
                                    "slide id '%s' is also given to %s", s->id,
                                    b->v[k]->path);
        if (reserved_id(s->id))
            return sp_error_set(err, SP_ERR_USAGE, s->path,
                                "slide id '%s' is reserved", s->id);
    }
    for (size_t i = 0; i < b->n; i++) {
        sp__bslide *s = b->v[i];
        if (s->has_id || s->pub.status == SP_BATCH_NOT_SLIDE)
            continue;
        char *id = derive_id(s->path);
        if (!id)
            return sp_error_set(err, SP_ERR_NOMEM, NULL, "out of memory");
        /* check against every manifest id and earlier derived ones */
        size_t len = strlen(id);
        for (int k = 2;; k++) {
            bool clash = id_taken(b, i, id);
            for (size_t m = i + 1; m < b->n && !clash; m++)
                clash = b->v[m]->has_id && strcmp(b->v[m]->id, id) == 0;
            if (!clash)
                break;
            snprintf(id + len, 16, "-%d", k);
        }
        s->id = id;
        sync_pub(s);
    }
    return true;
}

static int want_threads(const sp_batch *b, const sp__bslide *s) {
    double k = ceil(s->pub.megapixels / MP_PER_THREAD);
    if (!(k >= 1))
        k = 1;
    return k > b->o.threads ? b->o.threads : (int)k;
}

/* Parameters: the canonical merge of the common and per-slide options. */
static bool plan_params(sp_batch *b, sp__bslide *s, sp_error *err) {
    char *cv[SP__BATCH_NKEYS], *sv[SP__BATCH_NKEYS];
    if (!sp__batch_option_values(b->common, cv, err))
        return false;
    if (!sp__batch_option_values(s->options, sv, err)) {
        sp__batch_values_free(cv);
        return false;
    }
    for (int k = 0; k < SP__BATCH_NKEYS; k++)
        if (sv[k]) {
            free(cv[k]);
            cv[k] = sv[k];
            sv[k] = NULL;
        }
    char *text = sp__batch_values_text(cv);
    sp__batch_values_free(cv);
    sp__batch_values_free(sv);
    if (!text)
        return sp_error_set(err, SP_ERR_NOMEM, NULL, "out of memory");
    sp_buf p;
    sp_buf_init(&p);
    sp_buf_printf(&p, "%s%s%s", FINGERPRINT_TAG, text[0] ? " " : "", text);
    free(text);
    if (p.oom) {
        sp_buf_free(&p);
        return sp_error_set(err, SP_ERR_NOMEM, NULL, "out of memory");
    }
    char fp[17];
    fingerprint(p.data, fp);
    free(s->params);
    s->params = p.data;
    set_str(&s->fingerprint, fp);
    sync_pub(s);
    return s->fingerprint != NULL ||
           sp_error_set(err, SP_ERR_NOMEM, NULL, "out of memory");
}

/* True when OUTDIR/<id> holds a complete result for this content and
 * these parameters; fills what the summary shows. */
bool sp__batch_already_done(sp_batch *b, sp__bslide *s) {
    char *dir = sp_path_join(b->outdir, s->id);
    char *done = dir ? sp_path_join(dir, DONE_FILE) : NULL;
    bool ok = false;
    char *text = NULL;
    if (!done)
        goto out;
    FILE *f = fopen(done, "r");
    if (!f)
        goto out;
    sp_buf buf;
    sp_buf_init(&buf);
    char chunk[8192];
    size_t r;
    while ((r = fread(chunk, 1, sizeof chunk, f)) > 0 && buf.len < (64u << 20))
        sp_buf_append(&buf, chunk, r);
    fclose(f);
    text = buf.data;
    if (buf.oom || !text || !json_valid_object(text))
        goto out;
    char *schema = json_str(json_get(text, "schema"));
    char *qh = json_str(json_get(text, "quickhash"));
    char *fp = json_str(json_get(text, "fingerprint"));
    /* markers without "paths" predate path privacy: their outputs hold
     * absolute paths, so they are redone, as is a change of --full-paths */
    char *paths = json_str(json_get(text, "paths"));
    ok = schema && qh && fp && paths && strcmp(schema, DONE_SCHEMA) == 0 &&
         strcmp(qh, s->quickhash) == 0 && strcmp(fp, s->fingerprint) == 0 &&
         strcmp(paths, b->o.full_paths ? "full" : "relative") == 0;
    free(schema);
    free(qh);
    free(fp);
    free(paths);
    for (size_t i = 0; ok && i < N_OUTPUTS; i++) {
        char *p = sp_path_join(dir, OUTPUTS[i]);
        ok = p && sp_path_exists(p);
        free(p);
    }
    if (ok) {
        const char *run = json_get(text, "run");
        double t = json_num(json_get(run ? run : "", "tiles_written"));
        /* a number out of range is unknown, never converted (UB) */
        s->pub.tiles = t >= 0 && t < 0x1p63 ? (int64_t)t : -1;
        s->pub.tissue_area_mm2 =
            json_num(json_get(run ? run : "", "tissue_area_mm2"));
        s->pub.seconds = json_num(json_get(text, "seconds"));
        double th = json_num(json_get(text, "threads"));
        s->pub.threads = th >= 1 && th <= INT_MAX ? (int)th : 0;
    }
out:
    free(text);
    free(done);
    free(dir);
    return ok;
}

/* Probe every candidate, give ids, fingerprints, resume decisions. */
static bool plan(sp_batch *b, sp_error *err) {
    for (size_t i = 0; i < b->n; i++) {
        if (b->o.cancel && *b->o.cancel)
            return true;
        sp__bslide *s = b->v[i];
        sp_error pe = {0};
        bool not_slide = false;
        char *vendor = NULL, *qh = NULL;
        int64_t w = 0, h = 0;
        if (sp__batch_probe(s->path, &vendor, &qh, &w, &h, &not_slide, &pe)) {
            s->vendor = vendor;
            s->pub.width = w;
            s->pub.height = h;
            s->pub.megapixels = (double)w * (double)h / 1e6;
            if (!qh) {
                /* no quickhash: the file's size and time stand for it */
                struct stat st;
                char tmp[96];
                if (stat(s->path, &st) == 0)
                    snprintf(tmp, sizeof tmp, "size:%lld:mtime:%lld.%09ld",
                             (long long)st.st_size,
                             (long long)st.st_mtim.tv_sec,
                             (long)st.st_mtim.tv_nsec);
                else
                    snprintf(tmp, sizeof tmp, "unknown");
                qh = strdup(tmp);
            }
            s->quickhash = qh;
            if (!s->vendor || !s->quickhash)
                return sp_error_set(err, SP_ERR_NOMEM, NULL, "out of memory");
            s->probed = true;
            s->pub.status = SP_BATCH_PENDING;
        } else if (!s->pub.is_explicit && !slide_ext(s->path) &&
                   (not_slide || strstr(pe.msg, "empty file"))) {
            s->pub.status = SP_BATCH_NOT_SLIDE;
            set_str(&s->error, pe.msg);
        } else {
            slide_fail(s, "open", pe.code, pe.msg);
        }
        sync_pub(s);
    }
    if (!assign_ids(b, err))
        return false;
    for (size_t i = 0; i < b->n; i++) {
        sp__bslide *s = b->v[i];
        if (!s->probed)
            continue;
        if (!plan_params(b, s, err))
            return false;
        s->pub.threads = want_threads(b, s);
        if (!b->o.force && sp__batch_already_done(b, s))
            s->pub.status = SP_BATCH_ALREADY_DONE;
        else
            b->mp_total += s->pub.megapixels;
    }
    return true;
}

/* ---- output folder ------------------------------------------------------ */

/* Remove what dead batches left at the top of OUTDIR: hidden temporaries
 * ".NAME.tmp-PID" (our slide folders, summaries, the cohort). Safe: we
 * hold the lock, so nobody else is writing there. */
static void remove_stale_temps(sp_batch *b) {
    DIR *d = opendir(b->outdir);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] != '.' || !strstr(e->d_name, ".tmp-"))
            continue;
        char *p = sp_path_join(b->outdir, e->d_name);
        if (p)
            sp_remove_tree(p, NULL);
        free(p);
    }
    closedir(d);
}

static bool open_outdir(sp_batch *b, sp_error *err) {
    if (!sp_mkdir_p(b->outdir, err))
        return false;
    char *lp = sp_path_join(b->outdir, LOCK_FILE);
    if (!lp)
        return sp_error_set(err, SP_ERR_NOMEM, NULL, "out of memory");
    /* not O_CLOEXEC: the children hold the lock too, so a new batch waits
     * until every child of a killed one is gone */
    b->lock_fd = open(lp, O_RDWR | O_CREAT, 0666);
    free(lp);
    if (b->lock_fd < 0)
        return sp_error_errno(err, SP_ERR_OUTPUT, b->outdir, errno,
                              "output directory is not writable");
    /* children of a killed batch die with it, but not instantly */
    for (int tries = 0;; tries++) {
        if (flock(b->lock_fd, LOCK_EX | LOCK_NB) == 0)
            break;
        if (errno != EWOULDBLOCK && errno != EINTR)
            return sp_error_errno(err, SP_ERR_OUTPUT, b->outdir, errno,
                                  "cannot lock the output directory");
        if (tries >= 100)
            return sp_error_set(err, SP_ERR_OUTPUT, b->outdir,
                                "another slidepipe batch is writing to this "
                                "output directory");
        struct timespec ts = {0, 100 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    /* a probe write: a full or read-only file system fails here, once */
    char *probe = sp_path_join(b->outdir, ".batch-write-test");
    if (!probe)
        return sp_error_set(err, SP_ERR_NOMEM, NULL, "out of memory");
    sp_error pe = {0};
    bool ok = sp_write_file_atomic(probe, "ok\n", 3, &pe);
    unlink(probe);
    if (!ok) {
        /* the cause is in pe (errno belongs to the cleanup by now): keep
         * it, naming OUTDIR rather than the probe file */
        size_t k = strlen(probe);
        const char *cause = strncmp(pe.msg, probe, k) == 0 && pe.msg[k] == ':'
                                ? pe.msg + k + 2
                                : pe.msg;
        sp_error_set(err,
                     pe.code == SP_ERR_NOMEM ? SP_ERR_NOMEM : SP_ERR_OUTPUT,
                     b->outdir, "output directory is not writable: %s", cause);
        free(probe);
        return false;
    }
    free(probe);
    remove_stale_temps(b);
    return true;
}

/* ---- children ----------------------------------------------------------- */

typedef struct {
    char **v;
    size_t n;
} argv_t;

static bool argv_add(argv_t *a, const char *s) {
    char **nv = realloc(a->v, (a->n + 2) * sizeof *nv);
    if (!nv)
        return false;
    a->v = nv;
    if (!(a->v[a->n] = strdup(s)))
        return false;
    a->v[++a->n] = NULL;
    return true;
}

static void argv_free(argv_t *a) {
    for (size_t i = 0; i < a->n; i++)
        free(a->v[i]);
    free(a->v);
}

static bool build_argv(sp_batch *b, sp__bslide *s, const char *out, argv_t *a) {
    char threads[16];
    snprintf(threads, sizeof threads, "%d", s->pub.threads);
    if (!argv_add(a, "slidepipe") || !argv_add(a, CHILD_CMD) ||
        !argv_add(a, s->path) || !argv_add(a, "-o") || !argv_add(a, out) ||
        !argv_add(a, "--json") || !argv_add(a, "--quiet") ||
        !argv_add(a, "--threads") || !argv_add(a, threads))
        return false;
    /* what the sidecar records: the path below the input folder, or the
     * absolute path */
    if (b->o.full_paths ? !argv_add(a, "--full-paths")
                        : !argv_add(a, "--source-name") || !argv_add(a, s->rel))
        return false;
    /* the options as fingerprinted, after the tag */
    const char *p = s->params + strlen(FINGERPRINT_TAG);
    char *vals[SP__BATCH_NKEYS];
    sp_error e = {0};
    if (!sp__batch_option_values(*p ? p + 1 : NULL, vals, &e))
        return false;
    bool ok = true;
    for (int k = 0; k < SP__BATCH_NKEYS && ok; k++) {
        if (!vals[k])
            continue;
        char flag[64];
        snprintf(flag, sizeof flag, "--%s", sp__batch_key_name(k));
        if (sp__batch_key_is_flag(k))
            ok = strcmp(vals[k], "yes") != 0 || argv_add(a, flag);
        else
            ok = argv_add(a, flag) && argv_add(a, vals[k]);
    }
    sp__batch_values_free(vals);
    return ok;
}

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

/* Start the child of slide `s` into OUTDIR/.<id>.tmp-<pid>. On failure
 * the slide is marked failed (returns false only when out of memory). */
static bool spawn(sp_batch *b, sp__bslide *s) {
    char tmpname[300];
    snprintf(tmpname, sizeof tmpname, ".%s.tmp-%ld", s->id, (long)getpid());
    char *final = sp_path_join(b->outdir, s->id);
    free(s->tmpdir);
    s->tmpdir = sp_path_join(b->outdir, tmpname);
    char *out = s->tmpdir ? sp_path_join(s->tmpdir, OUT_BASE) : NULL;
    argv_t a = {0};
    bool ok = false;
    sp_error e = {0};
    int po[2] = {-1, -1}, pe[2] = {-1, -1};
    if (!final || !out || !build_argv(b, s, out, &a)) {
        argv_free(&a);
        free(out);
        free(final);
        return false;
    }
    /* the stale result goes first, so its space is free for the new one */
    if (!sp_remove_tree(final, &e) || !sp_remove_tree(s->tmpdir, &e) ||
        !sp_mkdir_p(s->tmpdir, &e)) {
        slide_fail(s, "output", SP_ERR_OUTPUT, e.msg);
        ok = true;
        goto out;
    }
    if (!pipe_cloexec(po) || !pipe_cloexec(pe)) {
        sp_error_errno(&e, SP_ERR_INTERNAL, NULL, errno, "pipe");
        slide_fail(s, "start", SP_ERR_INTERNAL, e.msg);
        ok = true;
        goto out;
    }
    pid_t parent = getpid();
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        sp_error_errno(&e, SP_ERR_INTERNAL, NULL, errno, "fork");
        slide_fail(s, "start", SP_ERR_INTERNAL, e.msg);
        ok = true;
        goto out;
    }
    if (pid == 0) {
        /* die with the batch, even when it is killed outright */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(127);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        int devnull = open("/dev/null", O_RDONLY);
        if (devnull >= 0) {
            dup2(devnull, STDIN_FILENO);
            close(devnull);
        }
        dup2(po[1], STDOUT_FILENO);
        dup2(pe[1], STDERR_FILENO);
        execv(b->exe, a.v);
        const char *m = "slidepipe batch: cannot run ";
        if (write(STDERR_FILENO, m, strlen(m)) < 0 ||
            write(STDERR_FILENO, b->exe, strlen(b->exe)) < 0 ||
            write(STDERR_FILENO, "\n", 1) < 0)
            _exit(127);
        _exit(127);
    }
    close(po[1]);
    close(pe[1]);
    po[1] = pe[1] = -1;
    s->pid = pid;
    s->fd_out = po[0];
    s->fd_err = pe[0];
    po[0] = pe[0] = -1;
    set_nonblock(s->fd_out);
    set_nonblock(s->fd_err);
    sp_buf_reset(&s->out);
    sp_buf_reset(&s->err);
    s->t0 = sp_now();
    s->pub.status = SP_BATCH_RUNNING;
    ok = true;
out:
    for (int i = 0; i < 2; i++) {
        if (po[i] >= 0)
            close(po[i]);
        if (pe[i] >= 0)
            close(pe[i]);
    }
    if (s->pub.status == SP_BATCH_FAILED && s->tmpdir)
        sp_remove_tree(s->tmpdir, NULL);
    argv_free(&a);
    free(out);
    free(final);
    return ok;
}

/* Read what is there; keep at most 1 MiB of stdout and the last 16 KiB of
 * stderr. Returns false at end of file. */
static bool drain(int fd, sp_buf *b, bool keep_tail) {
    char chunk[8192];
    for (;;) {
        ssize_t r = read(fd, chunk, sizeof chunk);
        if (r > 0) {
            sp_buf_append(b, chunk, (size_t)r);
            if (keep_tail && b->len > 32768) {
                memmove(b->data, b->data + b->len - 16384, 16384);
                b->len = 16384;
                b->data[b->len] = '\0';
            } else if (!keep_tail && b->len > (1u << 20)) {
                b->len = 1u << 20;
                b->data[b->len] = '\0';
            }
            continue;
        }
        if (r < 0 && errno == EINTR)
            continue;
        return r < 0; /* EAGAIN: more later; 0: end */
    }
}

/* The last non-empty line of `s` (malloc'd), without a "slidepipe CMD: "
 * prefix. */
static char *last_line(const char *s) {
    if (!s)
        return NULL;
    const char *end = s + strlen(s);
    while (end > s && (end[-1] == '\n' || end[-1] == '\r' || end[-1] == ' '))
        end--;
    const char *start = end;
    while (start > s && start[-1] != '\n')
        start--;
    if (end == start)
        return NULL;
    static const char prefix[] = "slidepipe " CHILD_CMD ": ";
    if ((size_t)(end - start) > sizeof prefix - 1 &&
        strncmp(start, prefix, sizeof prefix - 1) == 0)
        start += sizeof prefix - 1;
    char *r = malloc((size_t)(end - start) + 1);
    if (r) {
        memcpy(r, start, (size_t)(end - start));
        r[end - start] = '\0';
    }
    return r;
}

/* The last stdout line that is a JSON object (malloc'd), or NULL. */
static char *json_line(const char *s) {
    if (!s)
        return NULL;
    char *best = NULL;
    const char *p = s;
    while (*p) {
        const char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p) : strlen(p);
        if (n && p[0] == '{') {
            char *l = malloc(n + 1);
            if (l) {
                memcpy(l, p, n);
                l[n] = '\0';
                if (json_valid_object(l)) {
                    free(best);
                    best = l;
                } else {
                    free(l);
                }
            }
        }
        p += n + (nl ? 1 : 0);
    }
    return best;
}

static bool write_done(sp_batch *b, sp__bslide *s, const char *dir,
                       double seconds, sp_error *err) {
    sp_buf buf;
    sp_buf_init(&buf);
    sp_json w;
    sp_json_init(&w, &buf, true);
    char now[32];
    iso_now(now, sizeof now);
    sp_json_begin_object(&w);
    sp_json_key(&w, "schema");
    sp_json_string(&w, DONE_SCHEMA);
    sp_json_key(&w, "slidepipe_version");
    sp_json_string(&w, SP_VERSION);
    char *path = recorded_path(b, s);
    /* OUTDIR exists (OUTDIR/<id> not yet): resolve that */
    char *od = b->o.full_paths ? abs_path(b->outdir) : NULL;
    char *final = b->o.full_paths ? (od ? sp_path_join(od, s->id) : NULL)
                                  : xstrdup(s->id); /* below OUTDIR */
    char *output = final ? sp_path_join(final, OUT_BASE ".dzi") : NULL;
    /* the run's own line names the slide as given and the temporary
     * folder: both as the outputs record them instead */
    const char *keys[] = {"slide", "output"};
    const char *vals[] = {path, output};
    char *run = path && output ? json_with(s->run_json, keys, vals, 2) : NULL;
    free(od);
    free(final);
    free(output);
    sp_json_key(&w, "slide");
    sp_json_string(&w, path);
    free(path);
    sp_json_key(&w, "paths");
    sp_json_string(&w, b->o.full_paths ? "full" : "relative");
    sp_json_key(&w, "id");
    sp_json_string(&w, s->id);
    sp_json_key(&w, "quickhash");
    sp_json_string(&w, s->quickhash);
    sp_json_key(&w, "fingerprint");
    sp_json_string(&w, s->fingerprint);
    sp_json_key(&w, "parameters");
    sp_json_string(&w, s->params);
    sp_json_key(&w, "threads");
    sp_json_int(&w, s->pub.threads);
    sp_json_key(&w, "seconds");
    sp_json_number(&w, seconds);
    sp_json_key(&w, "completed");
    sp_json_string(&w, now);
    sp_json_end_object(&w);
    /* the run's own line (already valid JSON) goes in as the last member */
    while (buf.len &&
           (buf.data[buf.len - 1] == '}' || buf.data[buf.len - 1] == '\n' ||
            buf.data[buf.len - 1] == ' '))
        buf.len--;
    sp_buf_printf(&buf, ",\n  \"run\": %s\n}\n", run ? run : "null");
    char *done = sp_path_join(dir, DONE_FILE);
    bool ok = false;
    if (buf.oom || !done || !run)
        sp_error_set(err, SP_ERR_NOMEM, NULL, "out of memory");
    else
        ok = sp_write_file_atomic(done, buf.data, buf.len, err);
    free(done);
    free(run);
    sp_buf_free(&buf);
    return ok;
}

static const char *stage_word(const char *s) {
    static const char *const ok[] = {"open",     "mask",  "tiles",
                                     "features", "write", NULL};
    for (const char *const *p = ok; *p; p++)
        if (s && strcmp(s, *p) == 0)
            return *p;
    return NULL;
}

/* The child of `s` has exited with wait status `st`. */
static void finish(sp_batch *b, sp__bslide *s, int st) {
    double seconds = sp_now() - s->t0;
    s->pub.seconds = seconds;
    s->pid = -1;
    char *line = json_line(s->out.data);
    char *msg = last_line(s->err.data);
    char *final = sp_path_join(b->outdir, s->id);
    /* a Ctrl-C reaches the children too, maybe before the loop saw it */
    bool cancelled = b->cancelling || (b->o.cancel && *b->o.cancel);
    const char *san = NULL;
    char buf[SP_ERROR_MAX];
    if (WIFEXITED(st) && WEXITSTATUS(st) == 0 && line &&
        json_true(json_get(line, "ok"))) {
        double t = json_num(json_get(line, "tiles_written"));
        /* a number out of range is unknown, never converted (UB) */
        s->pub.tiles = t >= 0 && t < 0x1p63 ? (int64_t)t : -1;
        s->pub.tissue_area_mm2 = json_num(json_get(line, "tissue_area_mm2"));
        set_str(&s->run_json, line);
        sp_error e = {0};
        const char *missing = NULL;
        for (size_t i = 0; i < N_OUTPUTS && !missing; i++) {
            char *p = sp_path_join(s->tmpdir, OUTPUTS[i]);
            if (!p || !sp_path_exists(p))
                missing = OUTPUTS[i];
            free(p);
        }
        if (missing) {
            snprintf(buf, sizeof buf, "%s: %s reported success but left no %s",
                     s->path, CHILD_CMD, missing);
            slide_fail(s, "output", SP_ERR_INTERNAL, buf);
        } else if (!final) {
            slide_fail(s, "output", SP_ERR_NOMEM, "out of memory");
        } else if (!write_done(b, s, s->tmpdir, seconds, &e)) {
            slide_fail(s, "output", e.code, e.msg);
        } else if (rename(s->tmpdir, final) != 0) {
            sp_error_errno(&e, SP_ERR_OUTPUT, final, errno, "cannot rename");
            slide_fail(s, "output", SP_ERR_OUTPUT, e.msg);
        } else {
            s->pub.status = SP_BATCH_DONE;
            b->mp_done += s->pub.megapixels;
            b->counts.tiles += s->pub.tiles > 0 ? s->pub.tiles : 0;
        }
    } else if (cancelled && ((WIFEXITED(st) && WEXITSTATUS(st) == 130) ||
                             (WIFSIGNALED(st) && (WTERMSIG(st) == SIGTERM ||
                                                  WTERMSIG(st) == SIGINT ||
                                                  WTERMSIG(st) == SIGKILL)))) {
        s->pub.status = SP_BATCH_INTERRUPTED;
        set_str(&s->error, "interrupted");
    } else if (WIFEXITED(st) && WEXITSTATUS(st) != 0 && s->err.data &&
               (san = strstr(s->err.data, "SUMMARY: AddressSanitizer")) !=
                   NULL) {
        /* a sanitizer build reports a crash with an exit code */
        const char *eol = strchr(san, '\n');
        char *jerr = line ? json_str(json_get(line, "error")) : NULL;
        snprintf(buf, sizeof buf, "%s: %s crashed (%.*s)%s%s", s->path,
                 CHILD_CMD, (int)(eol ? eol - san : (ptrdiff_t)strlen(san)) - 9,
                 san + 9, jerr ? " after: " : "", jerr ? jerr : "");
        free(jerr);
        slide_fail(s, "crash", SP_ERR_INTERNAL, buf);
    } else if (WIFSIGNALED(st)) {
        const char *d = strsignal(WTERMSIG(st));
        snprintf(buf, sizeof buf, "%s: %s crashed (signal %d, %s)%s%s", s->path,
                 CHILD_CMD, WTERMSIG(st), d ? d : "?",
                 msg ? "; last message: " : "", msg ? msg : "");
        slide_fail(s, "crash", SP_ERR_INTERNAL, buf);
    } else {
        int code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
        const char *stage = NULL;
        char *jerr = NULL, *jstage = NULL;
        if (line && !json_true(json_get(line, "ok"))) {
            jerr = json_str(json_get(line, "error"));
            jstage = json_str(json_get(line, "stage"));
            stage = stage_word(jstage);
        }
        sp_errcode ec = code == 1   ? SP_ERR_INPUT
                        : code == 3 ? SP_ERR_OUTPUT
                                    : SP_ERR_INTERNAL;
        const char *why = jerr ? jerr : msg;
        if (code == 130)
            snprintf(buf, sizeof buf, "%s: interrupted by a signal", s->path);
        else if (code == 127 && !line)
            snprintf(buf, sizeof buf, "%s", msg ? msg : "cannot run slidepipe");
        else if (why)
            snprintf(buf, sizeof buf, "%s", why);
        else
            snprintf(buf, sizeof buf, "%s: %s exited with status %d", s->path,
                     CHILD_CMD, code);
        if (!stage)
            stage = ec == SP_ERR_INPUT    ? "open"
                    : ec == SP_ERR_OUTPUT ? "write"
                                          : "run";
        slide_fail(s, stage, ec, buf);
        free(jerr);
        free(jstage);
    }
    if (s->pub.status != SP_BATCH_DONE && s->tmpdir)
        sp_remove_tree(s->tmpdir, NULL);
    /* messages name the folder the slide's outputs would have had, not
     * the temporary one, which is gone */
    if (final && s->tmpdir)
        replace_in(&s->error, s->tmpdir, final);
    free(s->tmpdir);
    s->tmpdir = NULL;
    sp_buf_free(&s->out);
    sp_buf_free(&s->err);
    sp_buf_init(&s->out);
    sp_buf_init(&s->err);
    free(line);
    free(msg);
    free(final);
    sync_pub(s);
}

/* ---- the loop ----------------------------------------------------------- */

static int cmp_size(const void *x, const void *y) {
    const sp__bslide *a = *(sp__bslide *const *)x, *b = *(sp__bslide *const *)y;
    if (a->pub.megapixels != b->pub.megapixels)
        return a->pub.megapixels > b->pub.megapixels ? -1 : 1;
    return strcmp(a->id, b->id);
}

static void maybe_summary(sp_batch *b) {
    /* every change for small batches; at most once a second for large */
    if (b->n <= 500 || sp_now() - b->last_summary >= 1.0)
        write_summaries(b, NULL);
}

static bool run_all(sp_batch *b, sp_error *err) {
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
            if (!spawn(b, s)) {
                sp_error_set(err, SP_ERR_NOMEM, NULL, "out of memory");
                goto out;
            }
            if (s->pub.status == SP_BATCH_RUNNING) {
                run[nrun++] = s;
                free_threads -= s->pub.threads;
                emit(b, SP_BATCH_EV_START, s, NULL);
            } else {
                emit(b, SP_BATCH_EV_FINISH, s, NULL);
            }
            maybe_summary(b);
        }
        if (nrun == 0 && (head >= nq || b->cancelling))
            break;
        nfds_t np = 0;
        for (size_t i = 0; i < nrun; i++) {
            if (run[i]->fd_out >= 0) {
                pfd[np] =
                    (struct pollfd){.fd = run[i]->fd_out, .events = POLLIN};
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
            bool is_out = pfd[k].fd == s->fd_out;
            if (!drain(pfd[k].fd, is_out ? &s->out : &s->err, !is_out)) {
                close(pfd[k].fd);
                if (is_out)
                    s->fd_out = -1;
                else
                    s->fd_err = -1;
            }
        }
        /* reap the children whose pipes are closed */
        for (size_t i = 0; i < nrun;) {
            sp__bslide *s = run[i];
            int st = 0;
            pid_t r = 0;
            if (s->fd_out < 0 && s->fd_err < 0) {
                while ((r = waitpid(s->pid, &st, 0)) < 0 && errno == EINTR)
                    ;
            } else {
                r = waitpid(s->pid, &st, WNOHANG);
                if (r == s->pid) {
                    /* exited: whatever is left in the pipes comes now */
                    if (s->fd_out >= 0) {
                        drain(s->fd_out, &s->out, false);
                        close(s->fd_out);
                        s->fd_out = -1;
                    }
                    if (s->fd_err >= 0) {
                        drain(s->fd_err, &s->err, true);
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
            finish(b, s, st);
            emit(b, SP_BATCH_EV_FINISH, s, NULL);
            maybe_summary(b);
        }
        double now = sp_now();
        if (now - last_tick >= 0.25) {
            last_tick = now;
            emit(b, SP_BATCH_EV_TICK, NULL, NULL);
        }
    }
    /* slides never started because of the interruption */
    for (size_t k = head; k < nq; k++)
        if (queue[k]->pub.status == SP_BATCH_PENDING) {
            queue[k]->pub.status = SP_BATCH_INTERRUPTED;
            set_str(&queue[k]->error, "not started: batch interrupted");
            sync_pub(queue[k]);
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

static void write_cohort(sp_batch *b) {
    size_t n = 0;
    char **paths = calloc(b->n ? b->n : 1, sizeof *paths);
    b->cohort_path = sp_path_join(b->outdir, "cohort.h5");
    if (!paths || !b->cohort_path) {
        set_str(&b->cohort_error, "out of memory");
        free(paths);
        return;
    }
    bool oom = false;
    for (size_t i = 0; i < b->n; i++) {
        sp__bslide *s = b->v[i];
        if (s->pub.status != SP_BATCH_DONE &&
            s->pub.status != SP_BATCH_ALREADY_DONE)
            continue;
        char *dir = sp_path_join(b->outdir, s->id);
        paths[n] = dir ? sp_path_join(dir, "slide.h5") : NULL;
        free(dir);
        if (!paths[n])
            oom = true;
        else
            n++;
    }
    if (oom) {
        set_str(&b->cohort_error, "out of memory");
    } else if (n > 0) {
        sp_error e = {0};
        if (sp_store_index(b->cohort_path, (const char *const *)paths, n, &e))
            b->cohort_written = true;
        else
            set_str(&b->cohort_error, e.msg);
    }
    for (size_t i = 0; i < n; i++)
        free(paths[i]);
    free(paths);
    if (b->cohort_written || b->cohort_error)
        emit(b, SP_BATCH_EV_COHORT, NULL, b->cohort_error);
}

bool sp_batch_run(sp_batch *b, sp_error *err) {
    b->t0 = sp_now();
    iso_now(b->started_iso, sizeof b->started_iso);
    if (!b->o.dry_run && !open_outdir(b, err))
        return false;
    if (!plan(b, err))
        return false;
    if (b->o.cancel && *b->o.cancel)
        b->cancelling = true;
    emit(b, SP_BATCH_EV_PLANNED, NULL, NULL);
    for (size_t i = 0; i < b->n; i++) {
        const sp_batch_status st = b->v[i]->pub.status;
        if (st == SP_BATCH_ALREADY_DONE || st == SP_BATCH_NOT_SLIDE)
            emit(b, SP_BATCH_EV_SKIP, b->v[i], NULL);
        else if (st == SP_BATCH_FAILED)
            emit(b, SP_BATCH_EV_FINISH, b->v[i], NULL);
    }
    if (b->o.dry_run)
        return true;
    /* the first write: a full or read-only file system stops the batch
     * here with one message instead of failing every slide */
    if (!write_summaries(b, err))
        return false;
    /* a file-size limit makes writes fail with EFBIG (children inherit the
     * ignored disposition) instead of killing the process */
    struct sigaction ign, old_xfsz;
    memset(&ign, 0, sizeof ign);
    ign.sa_handler = SIG_IGN;
    sigemptyset(&ign.sa_mask);
    sigaction(SIGXFSZ, &ign, &old_xfsz);
    bool ok = !b->cancelling ? run_all(b, err) : true;
    if (ok && b->cancelling)
        for (size_t i = 0; i < b->n; i++)
            if (b->v[i]->pub.status == SP_BATCH_PENDING) {
                b->v[i]->pub.status = SP_BATCH_INTERRUPTED;
                set_str(&b->v[i]->error, "not started: batch interrupted");
                sync_pub(b->v[i]);
            }
    if (ok && !b->cancelling)
        write_cohort(b);
    b->finished = ok;
    sp_error se = {0};
    if (!write_summaries(b, &se))
        set_str(&b->summary_error, se.msg);
    sigaction(SIGXFSZ, &old_xfsz, NULL);
    recount(b);
    return ok;
}
