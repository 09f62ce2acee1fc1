/* slidepipe: dispatch to the subcommands. */
#include "cli.h"

#include <string.h>

#include "ingest.h"
#include "store.h"
#include "tiler.h"
#include "viewer.h"

static const sp_command commands[] = {
    {"info", "describe slides: levels, resolution, vendor, properties",
     sp_cmd_info, false},
    {"tile", "build a Deep Zoom or pyramidal TIFF tile pyramid", sp_cmd_tile,
     true},
    {"analyze", "tissue mask and per-tile features into an HDF5 file",
     sp_cmd_analyze, true},
    {"run", "pyramid and features from one decode of the slide", sp_cmd_run,
     true},
    {"query", "filter, count and summarise the tiles of HDF5 files",
     sp_cmd_query, false},
    {"index", "link a folder of HDF5 files into one cohort file", sp_cmd_index,
     false},
    {"serve", "serve slides, pyramids and features to a web browser",
     sp_cmd_serve, true},
    {"batch", "run many slides (folders, manifests), resumable", sp_cmd_batch,
     true},
};
#define N_COMMANDS (sizeof commands / sizeof commands[0])

static void usage(FILE *f) {
    fprintf(f, "usage: slidepipe COMMAND [OPTIONS] ...\n"
               "\n"
               "Whole-slide image pipeline: pyramids, tissue features, HDF5.\n"
               "\n"
               "Commands:\n");
    for (size_t i = 0; i < N_COMMANDS; i++)
        fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(f, "\n"
               "Options:\n"
               "  -h, --help     show this help\n"
               "  -V, --version  show the version and those of the libraries\n"
               "                 it runs with, one a line (--json: as JSON)\n"
               "\n"
               "Run 'slidepipe COMMAND --help' for a command's options.\n"
               "Exit status: 0 ok, 1 unreadable input, 2 usage error,\n"
               "3 output error, 4 internal error, 130 interrupted.\n");
}

/* slidepipe --version [--json]: each module names its own libraries. */
static int version(int argc, char **argv) {
    bool json = argc == 3 && strcmp(argv[2], "--json") == 0;
    if (argc > 2 && !json) {
        sp_cli_error(NULL, "--version takes only --json");
        return SP_EXIT_USAGE;
    }
    sp_lib_versions l = {0};
    sp_ingest_versions(&l);
    sp_tiler_versions(&l);
    sp_store_versions(&l);
    sp_viewer_versions(&l);
    if (!json) {
        printf("slidepipe %s\n", SP_VERSION);
        for (size_t i = 0; i < l.n; i++)
            printf("%-14s %s%s\n", l.lib[i].name, l.lib[i].version,
                   l.lib[i].compile_time ? " (its headers at build time)" : "");
        return SP_EXIT_OK;
    }
    sp_buf b;
    sp_buf_init(&b);
    sp_json j;
    sp_json_init(&j, &b, false);
    sp_json_begin_object(&j);
    sp_json_key(&j, "slidepipe");
    sp_json_string(&j, SP_VERSION);
    sp_json_key(&j, "libraries");
    sp_json_begin_array(&j);
    for (size_t i = 0; i < l.n; i++) {
        sp_json_begin_object(&j);
        sp_json_key(&j, "name");
        sp_json_string(&j, l.lib[i].name);
        sp_json_key(&j, "version");
        sp_json_string(&j, l.lib[i].version);
        sp_json_key(&j, "read");
        sp_json_string(&j, l.lib[i].compile_time ? "compile time" : "run time");
        sp_json_end_object(&j);
    }
    sp_json_end_array(&j);
    sp_json_end_object(&j);
    bool ok = !b.oom;
    if (ok)
        printf("%s\n", b.data);
    sp_buf_free(&b);
    return ok ? SP_EXIT_OK : SP_EXIT_INTERNAL;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return SP_EXIT_USAGE;
    }
    const char *c = argv[1];
    if (strcmp(c, "-h") == 0 || strcmp(c, "--help") == 0 ||
        strcmp(c, "help") == 0) {
        usage(stdout);
        return SP_EXIT_OK;
    }
    if (strcmp(c, "-V") == 0 || strcmp(c, "--version") == 0) {
        return version(argc, argv);
    }
    for (size_t i = 0; i < N_COMMANDS; i++)
        if (strcmp(c, commands[i].name) == 0) {
            if (commands[i].parallel)
                sp_openmp_sleep_when_idle(argv);
            return commands[i].run(argc - 1, argv + 1);
        }
    sp_cli_error(NULL, "unknown command '%s' (see 'slidepipe --help')", c);
    return SP_EXIT_USAGE;
}
