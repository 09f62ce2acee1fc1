/* slidepipe tile: build a Deep Zoom or pyramidal TIFF pyramid. */
#include "cli.h"

#include <getopt.h>
#include <signal.h>
#include <string.h>

#include "ingest.h"
#include "tiler.h"

static volatile sig_atomic_t interrupted;

static void on_signal(int sig) {
    (void)sig;
    interrupted = 1;
}

static void help(FILE *f) {
    fprintf(f,
            "usage: slidepipe tile [OPTIONS] SLIDE -o OUT\n"
            "\n"
            "Build the tile pyramid of SLIDE from one read of level 0.\n"
            "  dzi  (default) OUT.dzi + OUT_files/<level>/<col>_<row>.<ext>,\n"
            "       the geometry of 'vips dzsave' (levels down to 1x1)\n"
            "  tiff OUT.tiff: tiled JPEG pyramidal TIFF (BigTIFF when needed),\n"
            "       one directory per level, mpp and magnification recorded\n"
            "Both also write OUT.json: source metadata (vendor, mpp,\n"
            "magnification, size, quickhash), parameters, and the manifest of\n"
            "tiles written per level.\n"
            "\n"
            "Options:\n"
            "  -o, --output OUT     output name (required); a .dzi / .tif(f)\n"
            "                       suffix is accepted\n"
            "  --container dzi|tiff (dzi)\n"
            "  --tile-size N        tile edge in pixels (dzi 254, tiff 256;\n"
            "                       tiff needs a multiple of 16)\n"
            "  --overlap N          dzi overlap on interior edges (1)\n"
            "  --format jpeg|png|webp  tile format (jpeg; tiff: jpeg only)\n"
            "  --quality N          jpeg/webp quality 1-100 (75)\n"
            "  --threads N          worker threads (all cores)\n"
            "  --skip-background    do not write tiles without tissue: a pixel\n"
            "                       is tissue when max-min of R,G,B >= 24 or\n"
            "                       min < 180; a tile with none is skipped\n"
            "                       (tiff stores a background tile instead)\n"
            "  --background R,G,B   colour outside the scanned area (255,255,255)\n"
            "  --force              replace an existing output\n"
            "  --quiet              no progress line\n"
            "  --json               print a one-line JSON summary on stdout\n"
            "  -h, --help           show this help\n"
            "\n"
            "The output is built under hidden temporary names and renamed at\n"
            "the end (OUT.dzi last): an interrupted run leaves nothing that\n"
            "looks complete, and a rerun starts afresh.\n"
            "Exit status: 0 ok, 1 unreadable slide, 2 usage error, 3 output\n"
            "error (e.g. it exists without --force), 4 internal, 130\n"
            "interrupted.\n");
}

typedef struct {
    bool draw;
    sp_progress *bar; /* made on the first report, when the total is known */
} progress_ctx;

static bool on_progress(void *user, int64_t done, int64_t total) {
    progress_ctx *c = user;
    if (c->draw && !c->bar)
        c->bar = sp_progress_new("tile", "tiles", total, true);
    sp_progress_update(c->bar, done);
    return !interrupted;
}

static bool parse_rgb(const char *s, uint8_t out[3]) {
    int v[3];
    char tail;
    if (sscanf(s, "%d,%d,%d%c", &v[0], &v[1], &v[2], &tail) != 3)
        return false;
    for (int i = 0; i < 3; i++) {
        if (v[i] < 0 || v[i] > 255)
            return false;
        out[i] = (uint8_t)v[i];
    }
    return true;
}

static void print_json(const sp_tile_stats *st, const char *slide) {
    sp_buf b;
    sp_buf_init(&b);
    sp_json j;
    sp_json_init(&j, &b, false);
    sp_json_begin_object(&j);
    sp_json_key(&j, "file");
    sp_json_string(&j, slide);
    sp_json_key(&j, "ok");
    sp_json_bool(&j, true);
    sp_json_key(&j, "output");
    sp_json_string(&j, st->output);
    sp_json_key(&j, "width");
    sp_json_int(&j, st->width);
    sp_json_key(&j, "height");
    sp_json_int(&j, st->height);
    sp_json_key(&j, "levels");
    sp_json_int(&j, st->levels);
    sp_json_key(&j, "tiles_written");
    sp_json_int(&j, st->tiles_written);
    sp_json_key(&j, "tiles_skipped");
    sp_json_int(&j, st->tiles_skipped);
    sp_json_key(&j, "bytes");
    sp_json_int(&j, st->bytes_written);
    sp_json_key(&j, "seconds");
    sp_json_number(&j, st->seconds);
    sp_json_end_object(&j);
    if (!b.oom)
        printf("%s\n", b.data);
    sp_buf_free(&b);
}

int sp_cmd_tile(int argc, char **argv) {
    enum {
        OPT_CONTAINER = 1000, OPT_TILE, OPT_OVERLAP, OPT_FORMAT, OPT_QUALITY,
        OPT_THREADS, OPT_SKIP, OPT_BG, OPT_FORCE, OPT_QUIET, OPT_JSON
    };
    static const struct option opts[] = {
        {"output", required_argument, NULL, 'o'},
        {"container", required_argument, NULL, OPT_CONTAINER},
        {"tile-size", required_argument, NULL, OPT_TILE},
        {"overlap", required_argument, NULL, OPT_OVERLAP},
        {"format", required_argument, NULL, OPT_FORMAT},
        {"quality", required_argument, NULL, OPT_QUALITY},
        {"threads", required_argument, NULL, OPT_THREADS},
        {"skip-background", no_argument, NULL, OPT_SKIP},
        {"background", required_argument, NULL, OPT_BG},
        {"force", no_argument, NULL, OPT_FORCE},
        {"quiet", no_argument, NULL, OPT_QUIET},
        {"json", no_argument, NULL, OPT_JSON},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    sp_tile_opts to;
    sp_tile_opts_default(&to);
    const char *out = NULL;
    bool quiet = false, json = false, overlap_given = false;
    int64_t v;
    int c;
    opterr = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, ":ho:", opts, NULL)) != -1) {
        switch (c) {
        case 'o': out = optarg; break;
        case OPT_CONTAINER:
            if (!sp_container_parse(optarg, &to.container)) {
                sp_cli_error("tile", "--container: expected dzi or tiff, got '%s'",
                             optarg);
                return SP_EXIT_USAGE;
            }
            break;
        case OPT_TILE:
            if (!sp_cli_parse_int("tile", "--tile-size", optarg, 1, 8192, &v))
                return SP_EXIT_USAGE;
            to.tile_size = (int)v;
            break;
        case OPT_OVERLAP:
            if (!sp_cli_parse_int("tile", "--overlap", optarg, 0, 4096, &v))
                return SP_EXIT_USAGE;
            to.overlap = (int)v;
            overlap_given = true;
            break;
        case OPT_FORMAT:
            if (!sp_tile_format_parse(optarg, &to.format)) {
                sp_cli_error("tile", "--format: expected jpeg, png or webp, got '%s'",
                             optarg);
                return SP_EXIT_USAGE;
            }
            break;
        case OPT_QUALITY:
            if (!sp_cli_parse_int("tile", "--quality", optarg, 1, 100, &v))
                return SP_EXIT_USAGE;
            to.quality = (int)v;
            break;
        case OPT_THREADS:
            if (!sp_cli_parse_int("tile", "--threads", optarg, 1, 1024, &v))
                return SP_EXIT_USAGE;
            to.threads = (int)v;
            break;
        case OPT_SKIP: to.skip_background = true; break;
        case OPT_BG:
            if (!parse_rgb(optarg, to.background)) {
                sp_cli_error("tile", "--background: expected R,G,B (0-255), got '%s'",
                             optarg);
                return SP_EXIT_USAGE;
            }
            break;
        case OPT_FORCE: to.force = true; break;
        case OPT_QUIET: quiet = true; break;
        case OPT_JSON: json = true; break;
        case 'h': help(stdout); return SP_EXIT_OK;
        case ':':
            sp_cli_error("tile", "option '%s' needs a value", argv[optind - 1]);
            return SP_EXIT_USAGE;
        default:
            sp_cli_error("tile", "unknown option '%s' (see 'slidepipe tile --help')",
                         argv[optind - 1]);
            return SP_EXIT_USAGE;
        }
    }
    if (optind >= argc) {
        sp_cli_error("tile", "no slide given (see 'slidepipe tile --help')");
        return SP_EXIT_USAGE;
    }
    if (argc - optind > 1) {
        sp_cli_error("tile", "one slide at a time (got %d)", argc - optind);
        return SP_EXIT_USAGE;
    }
    if (!out) {
        sp_cli_error("tile", "no output given (-o OUT)");
        return SP_EXIT_USAGE;
    }
    if (to.container == SP_CONTAINER_TIFF) {
        if (overlap_given && to.overlap != 0) {
            sp_cli_error("tile", "--overlap: TIFF tiles never overlap");
            return SP_EXIT_USAGE;
        }
        if (to.format != SP_TILE_JPEG) {
            sp_cli_error("tile", "--format: the TIFF container holds jpeg only");
            return SP_EXIT_USAGE;
        }
        if (to.tile_size && to.tile_size % 16) {
            sp_cli_error("tile", "--tile-size: TIFF needs a multiple of 16, got %d",
                         to.tile_size);
            return SP_EXIT_USAGE;
        }
        to.overlap = 0;
    }
    const char *path = argv[optind];

    sp_error err = {0};
    sp_slide *s = NULL;
    if (!sp_slide_open(path, false, &s, &err))
        return sp_cli_report("tile", &err);

    struct sigaction sa, old_int, old_term;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);

    progress_ctx pc = {.draw = !quiet && sp_progress_default()};
    to.progress = on_progress;
    to.progress_user = &pc;
    sp_tile_stats st;
    memset(&st, 0, sizeof st);
    bool ok = sp_tile_slide(s, out, &to, &st, &err);
    sp_progress_done(pc.bar);
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    sp_slide_close(s);
    if (!ok) {
        if (interrupted) {
            sp_cli_error("tile", "%s: interrupted", path);
            return SP_EXIT_INTERRUPTED;
        }
        return sp_cli_report("tile", &err);
    }
    if (json)
        print_json(&st, path);
    return SP_EXIT_OK;
}
