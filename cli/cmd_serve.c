/* slidepipe serve: an HTTP viewer for slides, pyramids and features. */
#include "cli.h"

#include <getopt.h>
#include <signal.h>
#include <string.h>

#include "viewer.h"

static void help(FILE *f) {
    fprintf(
        f,
        "usage: slidepipe serve [OPTIONS] DIR_OR_SLIDE...\n"
        "\n"
        "Serve slides to a browser: a slide list, an OpenSeadragon viewer\n"
        "per slide (scale bar, heatmap overlay of any per-tile feature),\n"
        "Deep Zoom tiles and a JSON API. Inputs may be slide files (tiles\n"
        "rendered on the fly; a sibling STEM.dzi / STEM.h5 is used when\n"
        "present), pyramids (X.dzi with X_files/, X.json, X.h5), or\n"
        "folders scanned one level deep for batch outputs (<id>/slide.dzi),\n"
        "*.dzi, slide files, DICOM series folders and images libvips reads\n"
        "(.tif .jpg .png .webp .jp2) that are OME-TIFF or SubIFD pyramids\n"
        "or whose longer side is at least 10000 px (the slide size rule,\n"
        "as in batch). Slides are addressed by ids\n"
        "assigned at startup; URLs never carry paths.\n"
        "\n"
        "Options:\n"
        "  --port N            TCP port (8080; 0 picks a free one)\n"
        "  --listen ADDR       numeric address to bind (127.0.0.1)\n"
        "  --show-associated   also show label and macro images (off:\n"
        "                      labels carry patient identifiers)\n"
        "  --cache-mb N        on-the-fly tile cache, MiB (256)\n"
        "  --threads N         worker threads of the event loop (cores);\n"
        "                      a tile being rendered holds one\n"
        "  --max-connections N open connections in all (256)\n"
        "  --per-ip N          open connections per client address (32)\n"
        "  --header-timeout S  a request head must be complete within S\n"
        "                      seconds of connecting or of the previous\n"
        "                      response, else the connection is cut (10)\n"
        "  --timeout S         idle connection timeout, seconds (30)\n"
        "  --readers N         slide readers open at once, all slides\n"
        "                      together (cores + 1, at most 32)\n"
        "  --overview-mp N     per slide, the most megapixels (Mi) of the\n"
        "                      overview that low levels of slides without\n"
        "                      native levels are cut from (16)\n"
        "  --overviews N       overviews in memory at once (2)\n"
        "  --assets DIR        the browser assets' folder, the only one\n"
        "                      tried (below)\n"
        "  --quiet             print nothing but errors\n"
        "  -h, --help          show this help\n"
        "\n"
        "Memory is bounded by the settings, in MiB:\n"
        "  cache-mb + overviews * overview-mp * 3   (tiles; overviews)\n"
        "  + threads * 16      (a request: a band or region of at most\n"
        "                      4 Mi pixels, the tile, the encoder)\n"
        "  + (readers + overviews * cores) * 50   (an open reader:\n"
        "                      OpenSlide 3.4's 32 MiB tile cache per\n"
        "                      handle, a 16 MiB region buffer, JPEG\n"
        "                      buffers; an overview is built by cores\n"
        "                      readers)\n"
        "  + overviews * 12    (an overview build's band)\n"
        "  + max-connections * 0.03   (request heads)\n"
        "  + the responses being sent (a cached tile is shared; pages\n"
        "    and feature JSON are copied), the slides' metadata and\n"
        "    loaded features, and about 64 for code and libraries.\n"
        "\n"
        "Browser assets (viewer.js, viewer.css, OpenSeadragon) are read at\n"
        "startup from the first folder that holds them all: --assets DIR;\n"
        "else BIN/../share/slidepipe/viewer, BIN being the folder of this\n"
        "slidepipe binary (where 'cmake --install' and the Debian package\n"
        "put them); else the viewer/ folder of the source tree it was built\n"
        "from (OpenSeadragon in viewer/node_modules/, installed there by\n"
        "scripts/install-deps.sh). A folder holds static/viewer.js,\n"
        "static/viewer.css and static/openseadragon.min.js (or OpenSeadragon\n"
        "as npm lays it out, "
        "node_modules/openseadragon/build/openseadragon/).\n"
        "\n"
        "Prints 'serving N slides on http://ADDR:PORT/' once listening and\n"
        "runs until interrupted (SIGINT or SIGTERM; exit status 0).\n"
        "Exit status: 1 an input could not be used, 2 usage error, 3 the\n"
        "port could not be bound, 4 internal error.\n");
}

int sp_cmd_serve(int argc, char **argv) {
    enum {
        OPT_PORT = 1000,
        OPT_LISTEN,
        OPT_ASSOC,
        OPT_CACHE,
        OPT_MAXC,
        OPT_TIMEOUT,
        OPT_READERS,
        OPT_THREADS,
        OPT_PER_IP,
        OPT_HEAD,
        OPT_OV_MP,
        OPT_OVS,
        OPT_ASSETS,
        OPT_QUIET
    };
    static const struct option opts[] = {
        {"port", required_argument, NULL, OPT_PORT},
        {"listen", required_argument, NULL, OPT_LISTEN},
        {"show-associated", no_argument, NULL, OPT_ASSOC},
        {"cache-mb", required_argument, NULL, OPT_CACHE},
        {"max-connections", required_argument, NULL, OPT_MAXC},
        {"timeout", required_argument, NULL, OPT_TIMEOUT},
        {"readers", required_argument, NULL, OPT_READERS},
        {"threads", required_argument, NULL, OPT_THREADS},
        {"per-ip", required_argument, NULL, OPT_PER_IP},
        {"header-timeout", required_argument, NULL, OPT_HEAD},
        {"overview-mp", required_argument, NULL, OPT_OV_MP},
        {"overviews", required_argument, NULL, OPT_OVS},
        {"assets", required_argument, NULL, OPT_ASSETS},
        {"quiet", no_argument, NULL, OPT_QUIET},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    sp_catalog_opts co = {0};
    sp_server_opts so = {.port = 8080};
    bool quiet = false;
    int64_t v;
    int c;
    opterr = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        switch (c) {
        case OPT_PORT:
            if (!sp_cli_parse_int("serve", "--port", optarg, 0, 65535, &v))
                return SP_EXIT_USAGE;
            so.port = (int)v;
            break;
        case OPT_LISTEN: so.listen = optarg; break;
        case OPT_ASSOC: co.show_associated = true; break;
        case OPT_CACHE:
            if (!sp_cli_parse_int("serve", "--cache-mb", optarg, 1, 1 << 20,
                                  &v))
                return SP_EXIT_USAGE;
            co.cache_bytes = (size_t)v << 20;
            break;
        case OPT_MAXC:
            if (!sp_cli_parse_int("serve", "--max-connections", optarg, 1, 4096,
                                  &v))
                return SP_EXIT_USAGE;
            so.max_connections = (unsigned)v;
            break;
        case OPT_TIMEOUT:
            if (!sp_cli_parse_int("serve", "--timeout", optarg, 1, 3600, &v))
                return SP_EXIT_USAGE;
            so.timeout_s = (unsigned)v;
            break;
        case OPT_READERS:
            if (!sp_cli_parse_int("serve", "--readers", optarg, 1, 32, &v))
                return SP_EXIT_USAGE;
            co.readers = (int)v;
            break;
        case OPT_THREADS:
            if (!sp_cli_parse_int("serve", "--threads", optarg, 1, 256, &v))
                return SP_EXIT_USAGE;
            so.threads = (unsigned)v;
            break;
        case OPT_PER_IP:
            if (!sp_cli_parse_int("serve", "--per-ip", optarg, 1, 4096, &v))
                return SP_EXIT_USAGE;
            so.per_ip_connections = (unsigned)v;
            break;
        case OPT_HEAD:
            if (!sp_cli_parse_int("serve", "--header-timeout", optarg, 1, 3600,
                                  &v))
                return SP_EXIT_USAGE;
            so.head_timeout_s = (unsigned)v;
            break;
        case OPT_OV_MP:
            if (!sp_cli_parse_int("serve", "--overview-mp", optarg, 1, 4096,
                                  &v))
                return SP_EXIT_USAGE;
            co.overview_pixels = v << 20;
            break;
        case OPT_OVS:
            if (!sp_cli_parse_int("serve", "--overviews", optarg, 1, 64, &v))
                return SP_EXIT_USAGE;
            co.overviews = (int)v;
            break;
        case OPT_ASSETS: co.asset_dir = optarg; break;
        case OPT_QUIET: quiet = true; break;
        case 'h': help(stdout); return SP_EXIT_OK;
        case ':':
            sp_cli_error("serve", "option '%s' needs a value",
                         argv[optind - 1]);
            return SP_EXIT_USAGE;
        default:
            sp_cli_error("serve",
                         "unknown option '%s' (see 'slidepipe serve "
                         "--help')",
                         argv[optind - 1]);
            return SP_EXIT_USAGE;
        }
    }
    if (optind >= argc) {
        sp_cli_error("serve", "no slides given (see 'slidepipe serve --help')");
        return SP_EXIT_USAGE;
    }
    sp_error err = {0};
    sp_catalog *cat = NULL;
    if (!sp_catalog_open((const char *const *)argv + optind,
                         (size_t)(argc - optind), &co, &cat, &err))
        return sp_cli_report("serve", &err);
    for (size_t i = 0; i < sp_catalog_warning_count(cat); i++)
        sp_cli_error("serve", "skipped %s", sp_catalog_warning(cat, i));

    /* the connection threads inherit a mask without SIGINT/SIGTERM, so the
     * main thread alone waits for them */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    sp_server *srv = sp_server_start(cat, &so, &err);
    if (!srv) {
        sp_catalog_close(cat);
        return sp_cli_report("serve", &err);
    }
    if (!quiet) {
        const char *a = so.listen ? so.listen : "127.0.0.1";
        bool v6 = strchr(a, ':') != NULL;
        printf("serving %zu slide%s on http://%s%s%s:%d/\n",
               sp_catalog_count(cat), sp_catalog_count(cat) == 1 ? "" : "s",
               v6 ? "[" : "", a, v6 ? "]" : "", sp_server_port(srv));
        for (size_t i = 0; i < sp_catalog_count(cat); i++)
            printf("  /slide/%s  %s\n", sp_catalog_id(cat, i),
                   sp_catalog_name(cat, i));
        fflush(stdout);
    }
    int sig = 0;
    sigwait(&set, &sig);
    sp_server_stop(srv);
    sp_catalog_close(cat);
    return SP_EXIT_OK;
}
