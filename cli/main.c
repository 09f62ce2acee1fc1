/* slidepipe: dispatch to the subcommands. */
#include "cli.h"

#include <string.h>

#include "ingest.h"

static const sp_command commands[] = {
    {"info", "describe slides: levels, resolution, vendor, properties",
     sp_cmd_info},
    {"tile", "build a Deep Zoom or pyramidal TIFF tile pyramid", sp_cmd_tile},
    {"analyze", "tissue mask and per-tile features into an HDF5 file",
     sp_cmd_analyze},
    {"run", "pyramid and features from one decode of the slide", sp_cmd_run},
    {"query", "filter, count and summarise the tiles of HDF5 files",
     sp_cmd_query},
    {"index", "link a folder of HDF5 files into one cohort file", sp_cmd_index},
    {"serve", "serve slides, pyramids and features to a web browser",
     sp_cmd_serve},
    {"batch", "run many slides (folders, manifests), resumable", sp_cmd_batch},
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
               "  -V, --version  show the version\n"
               "\n"
               "Run 'slidepipe COMMAND --help' for a command's options.\n"
               "Exit status: 0 ok, 1 unreadable input, 2 usage error,\n"
               "3 output error, 4 internal error, 130 interrupted.\n");
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
        printf("slidepipe %s (OpenSlide %s)\n", SP_VERSION,
               sp_openslide_version());
        return SP_EXIT_OK;
    }
    for (size_t i = 0; i < N_COMMANDS; i++)
        if (strcmp(c, commands[i].name) == 0)
            return commands[i].run(argc - 1, argv + 1);
    sp_cli_error(NULL, "unknown command '%s' (see 'slidepipe --help')", c);
    return SP_EXIT_USAGE;
}
