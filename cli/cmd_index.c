/* slidepipe index: one HDF5 file that links a cohort's slide files. */
#include "cli.h"

#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "store.h"

#define CMD "index"

static void help(FILE *f) {
    fprintf(
        f, "usage: slidepipe index [OPTIONS] DIR_OR_FILE... -o COHORT.h5\n"
           "\n"
           "Write one HDF5 file that links every slide file of the folders\n"
           "(their *.h5 files, not recursive) and files given: virtual\n"
           "datasets /features and /coords span every row, /slide_id gives\n"
           "each row's slide, /slides lists the slides and /slide/NAME links\n"
           "to each file. h5py sees the cohort as one table, and\n"
           "'slidepipe query COHORT.h5' reads it. Paths are stored relative\n"
           "to the folder of COHORT.h5: move them together. Re-run after\n"
           "adding or rewriting slide files. Other cohort files found in\n"
           "the folders are skipped.\n"
           "\n"
           "Options:\n"
           "  -o, --output FILE  the cohort file to write (atomically)\n"
           "  -h, --help         show this help\n"
           "\n"
           "Exit status: 0 ok, 1 when a slide file cannot be read (nothing is\n"
           "written), 2 on a usage error, 3 when the output cannot be\n"
           "written.\n");
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

typedef struct {
    char **v;
    size_t n, cap;
} pathlist;

static bool push(pathlist *l, char *p) {
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 64;
        char **v = realloc(l->v, cap * sizeof *v);
        if (!v)
            return false;
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n++] = p;
    return true;
}

static void pathlist_free(pathlist *l) {
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i]);
    free(l->v);
}

/* Append the *.h5 files of `dir` (sorted, hidden files skipped). */
static bool add_dir(const char *dir, pathlist *l, sp_error *err) {
    DIR *d = opendir(dir);
    if (!d)
        return sp_error_errno(err, SP_ERR_INPUT, dir, errno, "cannot open");
    size_t first = l->n;
    struct dirent *e;
    bool ok = true;
    size_t dl = strlen(dir);
    while (ok && (e = readdir(d)) != NULL) {
        size_t len = strlen(e->d_name);
        if (e->d_name[0] == '.' || len < 4 ||
            strcmp(e->d_name + len - 3, ".h5") != 0)
            continue;
        size_t n = dl + len + 2;
        char *p = malloc(n);
        if (!p) {
            ok = false;
            break;
        }
        snprintf(p, n, "%s%s%s", dir, dl && dir[dl - 1] == '/' ? "" : "/",
                 e->d_name);
        if (!push(l, p)) {
            free(p);
            ok = false;
        }
    }
    closedir(d);
    if (!ok)
        return sp_error_set(err, SP_ERR_NOMEM, dir, "out of memory");
    qsort(l->v + first, l->n - first, sizeof *l->v, cmp_str);
    return true;
}

int sp_cmd_index(int argc, char **argv) {
    static const struct option opts[] = {
        {"output", required_argument, NULL, 'o'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    const char *out = NULL;
    int c;
    opterr = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, ":o:h", opts, NULL)) != -1) {
        switch (c) {
        case 'o': out = optarg; break;
        case 'h': help(stdout); return SP_EXIT_OK;
        case ':':
            sp_cli_error(CMD, "option '%s' needs a value", argv[optind - 1]);
            return SP_EXIT_USAGE;
        default:
            sp_cli_error(CMD,
                         "unknown option '%s' (see 'slidepipe index "
                         "--help')",
                         argv[optind - 1]);
            return SP_EXIT_USAGE;
        }
    }
    if (!out || optind >= argc) {
        sp_cli_error(CMD, "usage: slidepipe index DIR_OR_FILE... -o COHORT.h5");
        return SP_EXIT_USAGE;
    }
    int rc = SP_EXIT_OK;
    pathlist all = {0}, slides = {0};
    sp_error err = {0};
    char *out_abs = NULL;
    for (int i = optind; i < argc; i++) {
        struct stat st;
        if (stat(argv[i], &st) == 0 && S_ISDIR(st.st_mode)) {
            if (!add_dir(argv[i], &all, &err))
                goto fail;
        } else {
            char *p = strdup(argv[i]);
            if (!p || !push(&all, p)) {
                free(p);
                sp_error_set(&err, SP_ERR_NOMEM, argv[i], "out of memory");
                goto fail;
            }
        }
    }
    out_abs = realpath(out, NULL); /* NULL when it does not exist yet */
    for (size_t i = 0; i < all.n; i++) {
        char *abs = realpath(all.v[i], NULL);
        bool self = abs && out_abs && strcmp(abs, out_abs) == 0;
        free(abs);
        if (self)
            continue;
        sp_store_reader *r = NULL;
        if (!sp_store_open(all.v[i], &r, &err))
            goto fail;
        bool is_slide = sp_store_reader_kind(r) == SP_STORE_SLIDE;
        sp_store_close(r);
        if (!is_slide)
            continue;
        if (!push(&slides, all.v[i])) {
            sp_error_set(&err, SP_ERR_NOMEM, all.v[i], "out of memory");
            goto fail;
        }
        all.v[i] = NULL;
    }
    if (slides.n == 0) {
        sp_cli_error(CMD, "no slide files found");
        rc = SP_EXIT_INPUT;
        goto done;
    }
    if (!sp_store_index(out, (const char *const *)slides.v, slides.n, &err))
        goto fail;
    goto done;
fail:
    rc = sp_cli_report(CMD, &err);
done:
    free(out_abs);
    pathlist_free(&slides);
    pathlist_free(&all);
    return rc;
}
