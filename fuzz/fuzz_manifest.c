/* libFuzzer target: the batch manifest (sp_batch_add_manifest, which
 * reads a TSV file) and the per-slide options (sp_batch_parse_options).
 * Input: the manifest's bytes, written to a file in a private folder
 * (relative paths in it resolve there, where nothing else lives); the
 * same bytes up to the first NUL are also parsed as options text.
 * Checks: a failed manifest adds nothing and says why; every row added
 * has a path, an id of the documented shape, and canonical options
 * (parsing them again gives them back). */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "batch.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char dir[64], tsv[96];

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    snprintf(dir, sizeof dir, "/tmp/sp-fuzz-manifest-XXXXXX");
    if (!mkdtemp(dir))
        abort();
    snprintf(tsv, sizeof tsv, "%s/manifest.tsv", dir);
    return 0;
}

static void check_canonical(const char *opt) {
    char *again = NULL;
    sp_error err = {0};
    if (!sp_batch_parse_options(opt, &again, &err) || strcmp(again, opt) != 0)
        abort();
    free(again);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    /* options text */
    char *text = malloc(size + 1);
    if (!text)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    char *canon = NULL;
    sp_error err = {0};
    if (sp_batch_parse_options(text, &canon, &err)) {
        check_canonical(canon);
        free(canon);
    } else if (!sp_error_is_set(&err) || canon) {
        abort();
    }
    free(text);

    /* the manifest */
    int fd = open(tsv, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        abort();
    if (size && write(fd, data, size) != (ssize_t)size)
        abort();
    close(fd);
    sp_batch_opts o = {.outdir = dir, .threads = 1};
    sp_error e2 = {0};
    sp_batch *b = sp_batch_new(&o, &e2);
    if (!b)
        abort();
    sp_error e3 = {0};
    if (!sp_batch_add_manifest(b, tsv, &e3)) {
        if (!sp_error_is_set(&e3) || sp_batch_count(b) != 0)
            abort();
    } else {
        for (size_t i = 0; i < sp_batch_count(b); i++) {
            const sp_batch_slide *s = sp_batch_slide_at(b, i);
            if (!s->path || !s->path[0] || !s->is_explicit)
                abort();
            if (s->id && (!s->id[0] || s->id[0] == '.' || strlen(s->id) > 200 ||
                          strchr(s->id, '/')))
                abort();
            if (s->options)
                check_canonical(s->options);
        }
    }
    sp_batch_free(b);
    return 0;
}
