/*
 * util: the small shared services every slidepipe module stands on.
 *
 *   sp_error   an error record carrying one line that names the file and
 *              the cause; the first error set on it sticks.
 *   sp_buf     a growable byte buffer, with a JSON writer on top of it.
 *   files      atomic output (write under a temporary name, then rename),
 *              mkdir -p, recursive removal.
 *   progress   the one progress callback and cancel flag of every long
 *              call (sp_tile_slide, sp_analyze_slide, sp_run_slide).
 *
 * Nothing here prints or exits. Every function is safe to call from any
 * thread on distinct objects; no object is internally locked.
 */
#ifndef SP_UTIL_H
#define SP_UTIL_H

#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- errors ------------------------------------------------------------ */

/* Error categories; the CLI maps them to exit codes. */
typedef enum {
    SP_OK = 0,
    SP_ERR_INPUT,     /* the input could not be opened or read */
    SP_ERR_OUTPUT,    /* an output could not be written */
    SP_ERR_USAGE,     /* bad arguments or parameters */
    SP_ERR_NOMEM,     /* out of memory */
    SP_ERR_INTERNAL,  /* a bug or an unexpected library failure */
    SP_ERR_NOT_SLIDE, /* an input no reader recognises as a slide (an
                         SP_ERR_INPUT kind; set by the slide job) */
    SP_ERR_CANCELLED  /* stopped on request (a signal, a scheduler) */
} sp_errcode;

/* The code's word in records and logs: "ok", "unreadable", "output",
 * "usage", "out-of-memory", "internal", "not-a-slide", "cancelled". */
const char *sp_errcode_name(sp_errcode code);

#define SP_ERROR_MAX 1024

/* Zero-initialise (`sp_error err = {0};`) before use. */
typedef struct {
    sp_errcode code;
    char msg[SP_ERROR_MAX]; /* "FILE: cause", one line, no trailing newline */
} sp_error;

/* Record an error unless one is already recorded (the first one sticks).
 * `file` may be NULL; newlines in the message are folded to spaces.
 * Always returns false, so `return sp_error_set(...)` reads naturally.
 * `err` may be NULL, in which case nothing is recorded. */
bool sp_error_set(sp_error *err, sp_errcode code, const char *file,
                  const char *fmt, ...) __attribute__((format(printf, 4, 5)));
bool sp_error_setv(sp_error *err, sp_errcode code, const char *file,
                   const char *fmt, va_list ap);
/* Record an error from errno (strerror of `errnum`) with a prefix. */
bool sp_error_errno(sp_error *err, sp_errcode code, const char *file,
                    int errnum, const char *what);
static inline bool sp_error_is_set(const sp_error *err) {
    return err && err->code != SP_OK;
}
void sp_error_clear(sp_error *err);

/* ---- library messages -------------------------------------------------- */
/* Handlers with libtiff's TIFFErrorHandler signature, for libraries that
 * print by default: sp_capture_message keeps the first message a thread
 * gets after sp_capture_clear ("module: text", one line, truncated at 511
 * bytes); sp_captured returns it, or NULL when none came. Per thread, no
 * lock. sp_capture_discard drops the message (warnings). */
void sp_capture_message(const char *module, const char *fmt, va_list ap);
/* The same for a message already formatted (GLib's log handlers). */
void sp_capture_text(const char *module, const char *text);
void sp_capture_discard(const char *module, const char *fmt, va_list ap);
void sp_capture_clear(void);
const char *sp_captured(void);

/* ---- progress and cancellation ---------------------------------------- */
/* Every long call takes the same pair in its options:
 *   progress, progress_user  told `done` of `total` units of `phase` (each
 *       header names its phases); called from one thread at a time, never
 *       from a signal handler; may be NULL;
 *   cancel  a flag the caller (or its signal handler) sets non-zero to stop:
 *       when non-NULL and set, the call stops at its next check and fails
 *       with "interrupted", leaving no output; may be NULL. */
typedef void (*sp_progress_fn)(void *user, const char *phase, int64_t done,
                               int64_t total);
/* True when `cancel` is non-NULL and set. */
static inline bool sp_cancelled(const volatile sig_atomic_t *cancel) {
    return cancel && *cancel;
}

/* ---- growable buffer --------------------------------------------------- */

typedef struct {
    char *data; /* NUL-terminated while len < cap */
    size_t len;
    size_t cap;
    bool oom; /* an allocation failed; contents are truncated */
} sp_buf;

void sp_buf_init(sp_buf *b);
void sp_buf_free(sp_buf *b); /* accepts NULL */
void sp_buf_reset(sp_buf *b);
void sp_buf_append(sp_buf *b, const void *data, size_t n);
/* Grow by `n` bytes and return where they start, for the caller to fill
 * (e.g. with a read); NULL (and oom set) when out of memory. */
void *sp_buf_extend(sp_buf *b, size_t n);
void sp_buf_puts(sp_buf *b, const char *s);
void sp_buf_printf(sp_buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* ---- JSON writer ------------------------------------------------------- */
/* A streaming writer that inserts commas itself. Nest at most 32 levels.
 * Strings are escaped completely (control characters as \u00XX, invalid
 * UTF-8 bytes replaced by U+FFFD) so the output is always valid JSON.
 * Non-finite numbers are written as null. */

typedef struct {
    sp_buf *out;
    int depth;
    bool first[33];
    bool after_key;
    bool pretty;
} sp_json;

void sp_json_init(sp_json *j, sp_buf *out, bool pretty);
void sp_json_begin_object(sp_json *j);
void sp_json_end_object(sp_json *j);
void sp_json_begin_array(sp_json *j);
void sp_json_end_array(sp_json *j);
void sp_json_key(sp_json *j, const char *key);
void sp_json_string(sp_json *j, const char *s); /* NULL writes null */
void sp_json_number(sp_json *j, double v);
void sp_json_int(sp_json *j, int64_t v);
void sp_json_bool(sp_json *j, bool v);
void sp_json_null(sp_json *j);
/* Append `s` as a quoted, escaped JSON string to `b`. */
void sp_json_escape(sp_buf *b, const char *s);

/* ---- files ------------------------------------------------------------- */

/* mkdir -p. */
bool sp_mkdir_p(const char *path, sp_error *err);
/* rm -rf (no-op when absent). Does not follow symbolic links. */
bool sp_remove_tree(const char *path, sp_error *err);
/* True when `path` exists (any type, without following a final symlink). */
bool sp_path_exists(const char *path);
/* Temporary sibling name for atomic output: "<dir>/.<base>.tmp-<pid>".
 * Returns a malloc'd string (NULL on OOM). */
char *sp_temp_sibling(const char *final_path);
/* Write a whole buffer to `path` atomically (temp file, fsync, rename). */
bool sp_write_file_atomic(const char *path, const void *data, size_t n,
                          sp_error *err);
/* Write all `n` bytes to `fd` (retrying short writes and EINTR). */
bool sp_write_all(int fd, const void *data, size_t n);
/* Read up to `n` bytes from `fd`, until end of file (retrying EINTR):
 * the count read, or -1 on a read error. */
ssize_t sp_read_all(int fd, void *data, size_t n);
/* Read the whole regular file `path` (a symbolic link as its last
 * component is refused) of at most `max` bytes: malloc'd, NUL-terminated,
 * its length in *n. NULL with `err` set (SP_ERR_INPUT naming `path`, or
 * SP_ERR_NOMEM). */
char *sp_read_file(const char *path, size_t max, size_t *n, sp_error *err);
/* The last path component (points into `path`). */
const char *sp_basename(const char *path);
/* "dir/name" (no doubled slash when dir ends in one), malloc'd; NULL on
 * OOM. */
char *sp_path_join(const char *dir, const char *name);
/* The names in folder `dir`, sorted (strcmp), without those starting with
 * '.' (".", "..", hidden files, our temporaries): malloc'd, *n of them,
 * freed with sp_dir_names_free. NULL with errno set when the folder cannot be
 * listed or memory runs out. */
char **sp_dir_names(const char *dir, size_t *n);
void sp_dir_names_free(char **names, size_t n);

/* A growable list of malloc'd strings; zero-initialise, free with
 * sp_strvec_free (which leaves it empty and reusable; accepts NULL). */
typedef struct {
    char **v;
    size_t n, cap;
} sp_strvec;
/* Append a copy of `x`; false when memory runs out (the list is intact). */
bool sp_strvec_push(sp_strvec *s, const char *x);
void sp_strvec_free(sp_strvec *s);

/* ---- names and hashes -------------------------------------------------- */

/* FNV-1a, 64 bits, the one hash for cache keys and fingerprints: stable
 * across builds and machines. Start with SP_FNV_SEED; chain calls. */
#define SP_FNV_SEED UINT64_C(0xcbf29ce484222325)
uint64_t sp_fnv1a(uint64_t h, const void *data, size_t n);

/* The id of the slide at `path`, the one rule for batch output folders
 * and viewer URLs: its file name without the last extension, every
 * character outside [A-Za-z0-9._-] replaced by '_', at most 200 bytes, a
 * leading '.' made '_', "slide" when nothing is left. malloc'd; NULL on
 * OOM. */
char *sp_slide_id(const char *path);

/* ---- OpenMP's idle threads --------------------------------------------- */
/* Make OMP_WAIT_POLICY=PASSIVE the default of a long-running command (a
 * value in the environment wins): called first thing in main() with its
 * argv, before any OpenMP region. libgomp's waiting threads otherwise
 * spin for 300,000 rounds at every wait, and on a machine with other work
 * (a batch beside the viewer, two jobs on a node, ctest -j) they hold the
 * cores the working threads need: the same `tile` run under load took
 * 5.4-8.2 s spinning, 2.1-2.3 s sleeping, and alone it spends ~5% of its
 * CPU spinning. libgomp reads the variable once, in its constructor,
 * before main; no earlier hook can set it (the executable's preinit array
 * runs before libc's own initialiser, which resets the environment), so
 * when it is unset this sets it and executes the program again
 * (/proc/self/exe, the same arguments: ~20 ms). Returns only when it did
 * not: the variable was given, LD_PRELOAD is set (a tool such as valgrind
 * runs the process and may not follow an exec), or exec failed; then
 * libgomp spins. */
void sp_openmp_sleep_when_idle(char **argv);

/* ---- library versions -------------------------------------------------- */
/* The libraries a binary runs with, for `slidepipe --version`: each module
 * adds its own (sp_ingest_versions, sp_tiler_versions, sp_store_versions,
 * sp_viewer_versions), each library once; the CLI prints the list. */

#define SP_LIBS_MAX 16

typedef struct {
    const char *name;  /* "OpenSlide" (static string) */
    char version[32];  /* "3.4.1" */
    bool compile_time; /* the headers' version at build time: the library
                          has no call that says which one was loaded */
} sp_lib_version;

typedef struct {
    sp_lib_version lib[SP_LIBS_MAX];
    size_t n;
} sp_lib_versions;

/* Append one entry, its version formatted from fmt; ignored when the list
 * is full. */
void sp_lib_versions_add(sp_lib_versions *l, const char *name,
                         bool compile_time, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* ---- misc -------------------------------------------------------------- */

/* Monotonic seconds. */
double sp_now(void);
/* malloc for large buffers walked with a large stride (bands, pyramid
 * levels): 2 MB aligned and marked for transparent huge pages, so the
 * TLB covers them; freed with free(). */
void *sp_big_alloc(size_t n);
/* Seconds since the Unix epoch (wall clock). */
double sp_wall_clock(void);
/* `t` (Unix seconds) as ISO 8601 UTC, "2026-11-23T01:02:03Z". */
void sp_format_utc(double t, char out[32]);
/* A duration as "m:ss" or "h:mm:ss"; "--:--" when negative, unknown or
 * over 99 hours. */
void sp_format_duration(double seconds, char *out, size_t n);
/* Number of threads to use when the user gave none (all online cores). */
int sp_default_threads(void);
/* Parse a decimal double in the C locale; false unless the whole string is
 * a finite number. */
bool sp_parse_double(const char *s, double *out);
bool sp_parse_int64(const char *s, int64_t *out);

#ifdef __cplusplus
}
#endif
#endif
