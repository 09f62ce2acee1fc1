/* libFuzzer target: the batch's reader of OUTDIR/<id>/done.json (json-c,
 * in pipeline/batch_resume.c, reached through sp__batch_already_done). Input:
 * the done.json bytes. A private OUTDIR holds s1/ with the four outputs (empty
 * stand-ins), so a done.json that records the candidate's quickhash and
 * fingerprint is taken as done and its run figures are read. Checks: the
 * verdict is the same twice. */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "batch_private.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define QUICKHASH "8f3c0e6a1d2b4c5e"
#define FINGERPRINT "0123456789abcdef"

static char dir[64];
static sp_batch *batch;

static void path_of(char *p, size_t n, const char *name) {
    snprintf(p, n, "%s/s1/%s", dir, name);
}

static void cleanup(void) {
    char p[160];
    sp_batch_free(batch);
    static const char *const files[] = {"done.json", "slide.dzi", "slide.json",
                                        "slide.h5", NULL};
    for (int i = 0; files[i]; i++) {
        path_of(p, sizeof p, files[i]);
        unlink(p);
    }
    path_of(p, sizeof p, "slide_files");
    rmdir(p);
    snprintf(p, sizeof p, "%s/s1", dir);
    rmdir(p);
    rmdir(dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    snprintf(dir, sizeof dir, "/tmp/sp-fuzz-done-XXXXXX");
    if (!mkdtemp(dir))
        abort();
    char p[160];
    snprintf(p, sizeof p, "%s/s1", dir);
    if (mkdir(p, 0700) != 0)
        abort();
    path_of(p, sizeof p, "slide_files");
    if (mkdir(p, 0700) != 0)
        abort();
    static const char *const files[] = {"slide.dzi", "slide.json", "slide.h5",
                                        NULL};
    for (int i = 0; files[i]; i++) {
        path_of(p, sizeof p, files[i]);
        int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (fd < 0)
            abort();
        close(fd);
    }
    sp_batch_opts o = {.outdir = dir, .threads = 1};
    sp_error err = {0};
    batch = sp_batch_new(&o, &err);
    if (!batch || !sp__batch_push(batch, "/nonexistent/x.svs", NULL, NULL, "s1",
                                  NULL, true, &err))
        abort();
    sp__bslide *s = batch->v[0];
    s->quickhash = strdup(QUICKHASH);
    s->fingerprint = strdup(FINGERPRINT);
    if (!s->quickhash || !s->fingerprint)
        abort();
    atexit(cleanup);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char p[160];
    path_of(p, sizeof p, "done.json");
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0 || (size && write(fd, data, size) != (ssize_t)size))
        abort();
    close(fd);
    sp__bslide *s = batch->v[0];
    bool a = sp__batch_already_done(batch, s);
    sp_batch_slide first = s->pub;
    bool b = sp__batch_already_done(batch, s);
    if (a != b || (a && memcmp(&first, &s->pub, sizeof first) != 0))
        abort();
    return 0;
}
