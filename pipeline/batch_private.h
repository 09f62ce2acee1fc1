/*
 * batch internals shared by pipeline/batch.c (plan, run, resume, summary)
 * and pipeline/discover.c (inputs, manifest, options, probe). Not for
 * use outside pipeline/.
 */
#ifndef SP_BATCH_PRIVATE_H
#define SP_BATCH_PRIVATE_H

#include <sys/types.h>

#include "batch.h"

/* The per-slide run options a manifest or the command line may set, in
 * canonical order. */
#define SP__BATCH_NKEYS 5

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
    char *stage, *error, *run_json;
    bool has_id;  /* id given in a manifest */
    bool has_ino; /* dev/ino known (a regular file at push time) */
    dev_t dev;
    ino_t ino;
    bool probed;
    /* child */
    pid_t pid;
    int fd_out, fd_err;
    sp_buf out, err;
    double t0;
    char *tmpdir; /* OUTDIR/.<id>.tmp-<pid> while running */
} sp__bslide;

struct sp_batch {
    sp_batch_opts o; /* strings below are our copies */
    char *outdir, *exe, *common;
    bool outdir_exists;
    dev_t out_dev;
    ino_t out_ino;
    sp__bslide **v;
    size_t n, cap;
    sp_batch_counts counts;
    int lock_fd;
    double t0, last_summary;
    char started_iso[32];
    bool cancelling, finished, cohort_written;
    double cancel_time;
    char *cohort_error, *cohort_path, *summary_error;
    double mp_done, mp_total;
};

/* Append a candidate (copies the strings). Files already listed (same
 * device and inode) are dropped. `rel` is the name shared outputs record
 * (NULL: the file name), `root` the input folder it is relative to (NULL:
 * the file's own folder). */
bool sp__batch_push(sp_batch *b, const char *path, const char *rel,
                    const char *root, const char *id, const char *options,
                    bool is_explicit, sp_error *err);

/* Parse options text into values per key (malloc'd strings, NULL when
 * absent); canonical values. */
bool sp__batch_option_values(const char *text, char *vals[SP__BATCH_NKEYS],
                             sp_error *err);
void sp__batch_values_free(char *vals[SP__BATCH_NKEYS]);
/* Canonical text of values: "key=value ..." in key order (malloc'd). */
char *sp__batch_values_text(char *const vals[SP__BATCH_NKEYS]);
/* Key i (0 <= i < SP__BATCH_NKEYS): its name ("tile-size") and whether
 * it is a flag (value "yes"/"no", given to run as a bare --key). */
const char *sp__batch_key_name(int i);
bool sp__batch_key_is_flag(int i);

/* True when OUTDIR/<id>/done.json (batch.c's own small JSON reader)
 * records s's quickhash and fingerprint and the outputs exist; fills what
 * the summary shows. Not static only for fuzz/fuzz_done.c. */
bool sp__batch_already_done(sp_batch *b, sp__bslide *s);

/* Open `path` in a forked child (so a crash inside OpenSlide only fails
 * this file). On success fills vendor/quickhash (malloc'd; quickhash is
 * NULL when the slide has none) and the size. On failure fills `err`;
 * *not_slide says OpenSlide did not recognise the file at all. */
bool sp__batch_probe(const char *path, char **vendor, char **quickhash,
                     int64_t *width, int64_t *height, bool *not_slide,
                     sp_error *err);

#endif
