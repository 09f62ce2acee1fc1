/* slidepipe tile | analyze | run: one driver over pipeline's fused pass,
 * with the part each command asks for switched on. */
#include "cli.h"

#include <getopt.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "pipeline.h"

static volatile sig_atomic_t interrupted;

static void on_signal(int sig) {
    (void)sig;
    interrupted = 1;
}

static const char tile_opts_help[] =
    "Pyramid options:\n"
    "  --container dzi|tiff|dicom|ome-tiff\n"
    "                         dzi (default): OUT.dzi + "
    "OUT_files/<level>/<col>_<row>.<ext>,\n"
    "                         the geometry of 'vips dzsave'; tiff: OUT.tiff, "
    "tiled JPEG\n"
    "                         pyramidal TIFF (BigTIFF when needed) that "
    "OpenSlide reads;\n"
    "                         dicom: OUT.dicom/level-<d>.dcm, a DICOM whole-"
    "slide series\n"
    "                         (VL WSM, TILED_FULL, JPEG; patient and study "
    "empty);\n"
    "                         ome-tiff: OUT.ome.tiff, the tiff container's "
    "tiles as a\n"
    "                         pyramidal OME-TIFF (levels as SubIFDs, "
    "OME-XML) for\n"
    "                         QuPath, OMERO and Bio-Formats\n"
    "  --dicom-attributes F   dicom: patient/study attributes from a JSON "
    "object of\n"
    "                         DICOM keywords to strings "
    "({\"PatientID\": \"123\"})\n"
    "  --passthrough          tiff/ome-tiff/dicom: copy level 0's JPEG tiles "
    "from the\n"
    "                         slide as stored (lossless, less CPU); needs "
    "JPEG tiles of\n"
    "                         the output's tile size (e.g. --tile-size 240 "
    "for many .svs)\n"
    "  %-22s pyramid tile edge (dzi 254; tiff, ome-tiff, dicom 256, a "
    "multiple\n"
    "                         of 16)\n"
    "  --overlap N            dzi overlap on interior edges (1)\n"
    "  --format jpeg|png|webp tile format (jpeg; tiff, ome-tiff, dicom: jpeg "
    "only)\n"
    "  --quality N            jpeg/webp quality 1-100 (75)\n"
    "  --skip-background      do not write tiles without tissue (listed in "
    "the\n"
    "                         manifest of OUT.json; tiff, ome-tiff, dicom "
    "store a\n"
    "                         background tile)\n"
    "  --background-rule R    mask (default): the tissue mask of analysis "
    "decides,\n"
    "                         grown by one mask cell; colour: a tile is "
    "tissue when any\n"
    "                         pixel has max-min(R,G,B) >= 24 or min < 180\n"
    "  --background R,G,B     colour outside the scanned area (255,255,255)\n"
    "  --stripe-width N       build slides wider than 1.5 stripes in column\n"
    "                         stripes of about N level-0 px (12288, rounded "
    "up to\n"
    "                         tile size x 2^k), so memory does not grow with "
    "width;\n"
    "                         0: the whole width at once. Same tiles either "
    "way.\n";

static const char analysis_opts_help[] =
    "Analysis options (docs/FEATURES.md defines every feature):\n"
    "  %-22s analysis tile edge in analysis pixels (256)\n"
    "  --mpp X                analyse at X um/px (default: level 0)\n"
    "  --magnification X      or at this objective power\n"
    "  --all-tiles            features of every tile, not only tissue tiles\n"
    "  --min-coverage F       a tile is tissue when its mask share is above "
    "F (0)\n"
    "  --blur-threshold X     tissue tile counted blurry when blur < X (50)\n"
    "  --pen-threshold F      counted pen-marked when pen_fraction > F (0.10)\n"
    "  --cellularity-od X     hematoxylin OD over X counts as nuclear (0.4)\n"
    "  --mask-threshold N|otsu  saturation threshold of the mask (otsu)\n"
    "  --mask-downsample X    mask resolution, level-0 px per mask px (32)\n"
    "  --min-object-um2 X     drop tissue objects smaller than this (10000)\n"
    "  --max-hole-um2 X       fill holes smaller than this (10000)\n"
    "  --mask-png FILE        also write the tissue mask as a PNG\n";

static const char common_help[] =
    "Common options:\n"
    "  -o, --output OUT       output (required)\n"
    "  --threads N            worker threads (all cores)\n"
    "  --force                replace existing outputs\n"
    "  --quiet                no progress line\n"
    "  --json                 one-line JSON summary on stdout (also on "
    "failure,\n"
    "                         with \"ok\": false, \"stage\" and \"error\")\n"
    "  --full-paths           record the slide's absolute path in OUT.json\n"
    "                         (default: its file name only; folders often "
    "name\n"
    "                         patients, and outputs are shared; the HDF5 "
    "file\n"
    "                         always holds the file name; docs/OUTPUTS.md)\n"
    "  --source-name NAME     record NAME as the slide's path in OUT.json "
    "instead\n"
    "                         (batch passes the path below its input "
    "folder)\n"
    "  -h, --help             show this help\n"
    "\n"
    "Outputs are built under hidden temporary names and renamed together\n"
    "once all are complete: a failed or interrupted run leaves none.\n"
    "Exit status: 0 ok, 1 unreadable slide, 2 usage error, 3 output error\n"
    "(e.g. it exists without --force), 4 internal, 130 interrupted.\n";

static void help(unsigned what, FILE *f) {
    if (what == SP_RUN_TILES)
        fprintf(f, "usage: slidepipe tile [OPTIONS] SLIDE -o OUT\n\n"
                   "Build the tile pyramid of SLIDE from one read of level 0,\n"
                   "downsampling 2x2 in memory for every lower level. Also "
                   "writes\nOUT.json: source metadata (vendor, mpp, "
                   "magnification, size,\nquickhash), parameters and the "
                   "manifest of tiles written.\n\n");
    else if (what == SP_RUN_FEATURES)
        fprintf(f, "usage: slidepipe analyze [OPTIONS] SLIDE -o OUT.h5\n\n"
                   "Tissue mask and per-tile features of SLIDE, written to "
                   "an HDF5\nfile (docs/SCHEMA.md): /coords (CLAM), "
                   "/features with column names,\n/summary, /mask, "
                   "/thumbnail.\n\n");
    else
        fprintf(f, "usage: slidepipe run [OPTIONS] SLIDE -o OUT\n\n"
                   "The fused pass: level 0 is decoded once, band by band, "
                   "and each\nband feeds both the tile pyramid (OUT.dzi, "
                   "OUT_files/, OUT.json)\nand the per-tile features "
                   "(OUT.h5). Features at another resolution\n(--mpp, "
                   "--magnification) are read separately.\n\n");
    if (what & SP_RUN_TILES) {
        fprintf(f, tile_opts_help, "--tile-size N");
        fputc('\n', f);
    }
    if (what & SP_RUN_FEATURES) {
        fprintf(f, analysis_opts_help,
                what == SP_RUN_FEATURES ? "--tile-size N"
                                        : "--analysis-tile-size N");
        fputc('\n', f);
    }
    fputs(common_help, f);
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

typedef struct {
    const char *cmd;
    bool draw;
    const char *phase;
    sp_progress *bar;
} progress_ctx;

static void on_progress(void *user, const char *phase, int64_t done,
                        int64_t total) {
    progress_ctx *c = user;
    if (!c->draw || strcmp(phase, "pixels") != 0)
        return;
    if (!c->bar)
        c->bar = sp_progress_new(c->cmd, "rows", total, true);
    sp_progress_update(c->bar, done);
}

static void print_json(const char *slide, const sp_run_result *r) {
    sp_buf b;
    sp_buf_init(&b);
    if (sp_run_result_json(r, slide, NULL, &b))
        printf("%s\n", b.data);
    fflush(stdout);
    sp_buf_free(&b);
}

static int drive(const char *cmd, unsigned what, int argc, char **argv) {
    enum {
        OPT_CONTAINER = 1000,
        OPT_TILE,
        OPT_ATILE,
        OPT_OVERLAP,
        OPT_FORMAT,
        OPT_QUALITY,
        OPT_THREADS,
        OPT_SKIP,
        OPT_BGRULE,
        OPT_BG,
        OPT_FORCE,
        OPT_QUIET,
        OPT_JSON,
        OPT_MPP,
        OPT_MAG,
        OPT_ALL,
        OPT_MINCOV,
        OPT_BLUR,
        OPT_PEN,
        OPT_CELL,
        OPT_MTHR,
        OPT_MDS,
        OPT_MINOBJ,
        OPT_MAXHOLE,
        OPT_MASKPNG,
        OPT_STRIPE,
        OPT_FULLPATHS,
        OPT_SOURCENAME,
        OPT_DCMATTR,
        OPT_PASSTHROUGH
    };
    const bool tiles = what & SP_RUN_TILES, feats = what & SP_RUN_FEATURES;
    /* --tile-size is the pyramid's for tile/run, the analysis's for analyze */
    static const struct option opts[] = {
        {"output", required_argument, NULL, 'o'},
        {"container", required_argument, NULL, OPT_CONTAINER},
        {"tile-size", required_argument, NULL, OPT_TILE},
        {"analysis-tile-size", required_argument, NULL, OPT_ATILE},
        {"overlap", required_argument, NULL, OPT_OVERLAP},
        {"format", required_argument, NULL, OPT_FORMAT},
        {"quality", required_argument, NULL, OPT_QUALITY},
        {"threads", required_argument, NULL, OPT_THREADS},
        {"skip-background", no_argument, NULL, OPT_SKIP},
        {"background-rule", required_argument, NULL, OPT_BGRULE},
        {"background", required_argument, NULL, OPT_BG},
        {"force", no_argument, NULL, OPT_FORCE},
        {"quiet", no_argument, NULL, OPT_QUIET},
        {"json", no_argument, NULL, OPT_JSON},
        {"mpp", required_argument, NULL, OPT_MPP},
        {"magnification", required_argument, NULL, OPT_MAG},
        {"all-tiles", no_argument, NULL, OPT_ALL},
        {"min-coverage", required_argument, NULL, OPT_MINCOV},
        {"blur-threshold", required_argument, NULL, OPT_BLUR},
        {"pen-threshold", required_argument, NULL, OPT_PEN},
        {"cellularity-od", required_argument, NULL, OPT_CELL},
        {"mask-threshold", required_argument, NULL, OPT_MTHR},
        {"mask-downsample", required_argument, NULL, OPT_MDS},
        {"min-object-um2", required_argument, NULL, OPT_MINOBJ},
        {"max-hole-um2", required_argument, NULL, OPT_MAXHOLE},
        {"mask-png", required_argument, NULL, OPT_MASKPNG},
        {"stripe-width", required_argument, NULL, OPT_STRIPE},
        {"full-paths", no_argument, NULL, OPT_FULLPATHS},
        {"source-name", required_argument, NULL, OPT_SOURCENAME},
        {"dicom-attributes", required_argument, NULL, OPT_DCMATTR},
        {"passthrough", no_argument, NULL, OPT_PASSTHROUGH},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    sp_run_opts o;
    sp_run_opts_default(&o);
    o.what = what;
    sp_analysis_opts *ap = &o.analysis;
    const char *out = NULL;
    bool quiet = false, json = false, overlap_given = false, full = false;
    const char *source_name = NULL, *dcm_attr = NULL;
    int64_t v;
    int c;
    opterr = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, ":ho:", opts, NULL)) != -1) {
        const char *name = optind > 0 ? argv[optind - 1] : "";
        bool tile_opt = c == OPT_CONTAINER || c == OPT_OVERLAP ||
                        c == OPT_FORMAT || c == OPT_QUALITY || c == OPT_SKIP ||
                        c == OPT_BGRULE || c == OPT_BG || c == OPT_STRIPE ||
                        c == OPT_DCMATTR || c == OPT_PASSTHROUGH;
        bool feat_opt = (c >= OPT_MPP && c <= OPT_MASKPNG) || c == OPT_ATILE;
        if ((tile_opt && !tiles) || (feat_opt && !feats) ||
            (c == OPT_ATILE && what != (SP_RUN_TILES | SP_RUN_FEATURES))) {
            sp_cli_error(cmd, "unknown option '%s' (see 'slidepipe %s --help')",
                         name, cmd);
            return SP_EXIT_USAGE;
        }
        switch (c) {
        case 'o': out = optarg; break;
        case OPT_DCMATTR: dcm_attr = optarg; break;
        case OPT_PASSTHROUGH: o.tile.passthrough = true; break;
        case OPT_CONTAINER:
            if (!sp_container_parse(optarg, &o.tile.container)) {
                sp_cli_error(cmd,
                             "--container: expected dzi, tiff, dicom or "
                             "ome-tiff, got '%s'",
                             optarg);
                return SP_EXIT_USAGE;
            }
            break;
        case OPT_TILE:
            if (!sp_cli_parse_int(cmd, "--tile-size", optarg, 1, 8192, &v))
                return SP_EXIT_USAGE;
            if (tiles)
                o.tile.tile_size = (int)v;
            else
                ap->tile_size = (int)v;
            break;
        case OPT_ATILE:
            if (!sp_cli_parse_int(cmd, "--analysis-tile-size", optarg, 8, 8192,
                                  &v))
                return SP_EXIT_USAGE;
            ap->tile_size = (int)v;
            break;
        case OPT_OVERLAP:
            if (!sp_cli_parse_int(cmd, "--overlap", optarg, 0, 4096, &v))
                return SP_EXIT_USAGE;
            o.tile.overlap = (int)v;
            overlap_given = true;
            break;
        case OPT_FORMAT:
            if (!sp_tile_format_parse(optarg, &o.tile.format)) {
                sp_cli_error(cmd,
                             "--format: expected jpeg, png or webp, got '%s'",
                             optarg);
                return SP_EXIT_USAGE;
            }
            break;
        case OPT_QUALITY:
            if (!sp_cli_parse_int(cmd, "--quality", optarg, 1, 100, &v))
                return SP_EXIT_USAGE;
            o.tile.quality = (int)v;
            break;
        case OPT_THREADS:
            if (!sp_cli_parse_int(cmd, "--threads", optarg, 1, 1024, &v))
                return SP_EXIT_USAGE;
            o.threads = (int)v;
            break;
        case OPT_SKIP: o.tile.skip_background = true; break;
        case OPT_STRIPE:
            if (!sp_cli_parse_int(cmd, "--stripe-width", optarg, 0,
                                  INT64_C(1) << 31, &v))
                return SP_EXIT_USAGE;
            o.tile.stripe_width = v > 0 ? v : -1;
            break;
        case OPT_BGRULE:
            if (strcmp(optarg, "mask") == 0)
                o.mask_for_background = true;
            else if (strcmp(optarg, "colour") == 0 ||
                     strcmp(optarg, "color") == 0)
                o.mask_for_background = false;
            else {
                sp_cli_error(cmd,
                             "--background-rule: expected mask or colour, "
                             "got '%s'",
                             optarg);
                return SP_EXIT_USAGE;
            }
            break;
        case OPT_BG:
            if (!parse_rgb(optarg, o.tile.background)) {
                sp_cli_error(cmd,
                             "--background: expected R,G,B (0-255), got '%s'",
                             optarg);
                return SP_EXIT_USAGE;
            }
            break;
        case OPT_FORCE: o.force = true; break;
        case OPT_QUIET: quiet = true; break;
        case OPT_JSON: json = true; break;
        case OPT_MPP:
            if (!sp_cli_parse_double(cmd, "--mpp", optarg, 1e-3, 1e3, &ap->mpp))
                return SP_EXIT_USAGE;
            break;
        case OPT_MAG:
            if (!sp_cli_parse_double(cmd, "--magnification", optarg, 1e-2, 1e3,
                                     &ap->magnification))
                return SP_EXIT_USAGE;
            break;
        case OPT_ALL: ap->all_tiles = true; break;
        case OPT_MINCOV:
            if (!sp_cli_parse_double(cmd, "--min-coverage", optarg, 0, 0.999,
                                     &ap->min_coverage))
                return SP_EXIT_USAGE;
            break;
        case OPT_BLUR:
            if (!sp_cli_parse_double(cmd, "--blur-threshold", optarg, 0, 1e9,
                                     &ap->blur_threshold))
                return SP_EXIT_USAGE;
            break;
        case OPT_PEN:
            if (!sp_cli_parse_double(cmd, "--pen-threshold", optarg, 0, 1,
                                     &ap->pen_threshold))
                return SP_EXIT_USAGE;
            break;
        case OPT_CELL:
            if (!sp_cli_parse_double(cmd, "--cellularity-od", optarg, 0, 10,
                                     &ap->features.cellularity_od))
                return SP_EXIT_USAGE;
            break;
        case OPT_MTHR:
            if (strcmp(optarg, "otsu") == 0)
                ap->mask.threshold = -1;
            else if (sp_cli_parse_int(cmd, "--mask-threshold", optarg, 0, 254,
                                      &v))
                ap->mask.threshold = (int)v;
            else
                return SP_EXIT_USAGE;
            break;
        case OPT_MDS:
            if (!sp_cli_parse_double(cmd, "--mask-downsample", optarg, 1, 1024,
                                     &ap->mask.downsample))
                return SP_EXIT_USAGE;
            break;
        case OPT_MINOBJ:
            if (!sp_cli_parse_double(cmd, "--min-object-um2", optarg, 0, 1e12,
                                     &ap->mask.min_object_um2))
                return SP_EXIT_USAGE;
            break;
        case OPT_MAXHOLE:
            if (!sp_cli_parse_double(cmd, "--max-hole-um2", optarg, 0, 1e12,
                                     &ap->mask.max_hole_um2))
                return SP_EXIT_USAGE;
            break;
        case OPT_MASKPNG: o.mask_png = optarg; break;
        case OPT_FULLPATHS: full = true; break;
        case OPT_SOURCENAME:
            if (!optarg[0]) {
                sp_cli_error(cmd, "--source-name: empty name");
                return SP_EXIT_USAGE;
            }
            source_name = optarg;
            break;
        case 'h': help(what, stdout); return SP_EXIT_OK;
        case ':':
            sp_cli_error(cmd, "option '%s' needs a value", name);
            return SP_EXIT_USAGE;
        default:
            sp_cli_error(cmd, "unknown option '%s' (see 'slidepipe %s --help')",
                         name, cmd);
            return SP_EXIT_USAGE;
        }
    }
    if (optind >= argc) {
        sp_cli_error(cmd, "no slide given (see 'slidepipe %s --help')", cmd);
        return SP_EXIT_USAGE;
    }
    if (argc - optind > 1) {
        sp_cli_error(cmd, "one slide at a time (got %d; see 'slidepipe batch')",
                     argc - optind);
        return SP_EXIT_USAGE;
    }
    if (!out) {
        sp_cli_error(cmd, "no output given (-o OUT)");
        return SP_EXIT_USAGE;
    }
    if (tiles && o.tile.container != SP_CONTAINER_DZI) {
        const char *cn = o.tile.container == SP_CONTAINER_DICOM ? "DICOM"
                         : o.tile.container == SP_CONTAINER_OME_TIFF
                             ? "OME-TIFF"
                             : "TIFF";
        if (overlap_given && o.tile.overlap != 0) {
            sp_cli_error(cmd, "--overlap: %s tiles never overlap", cn);
            return SP_EXIT_USAGE;
        }
        if (o.tile.format != SP_TILE_JPEG) {
            sp_cli_error(cmd, "--format: the %s container holds jpeg only", cn);
            return SP_EXIT_USAGE;
        }
        if (o.tile.tile_size && o.tile.tile_size % 16) {
            sp_cli_error(cmd, "--tile-size: %s needs a multiple of 16, got %d",
                         cn, o.tile.tile_size);
            return SP_EXIT_USAGE;
        }
        o.tile.overlap = 0;
    }
    if (o.tile.passthrough && o.tile.container == SP_CONTAINER_DZI) {
        sp_cli_error(
            cmd, "--passthrough goes with --container tiff, ome-tiff or dicom "
                 "(Deep Zoom tiles overlap)");
        return SP_EXIT_USAGE;
    }
    if (dcm_attr && o.tile.container != SP_CONTAINER_DICOM) {
        sp_cli_error(cmd, "--dicom-attributes goes with --container dicom");
        return SP_EXIT_USAGE;
    }
    char *dcm_json = NULL;
    if (dcm_attr) {
        size_t n = 0;
        sp_error e = {0};
        dcm_json = sp_read_file(dcm_attr, 1u << 20, &n, &e);
        if (!dcm_json) {
            sp_cli_error(cmd, "--dicom-attributes: %s", e.msg);
            return SP_EXIT_USAGE;
        }
        o.tile.dicom_attributes = dcm_json;
    }
    if (full && source_name) {
        sp_cli_error(cmd, "--full-paths and --source-name exclude each other");
        return SP_EXIT_USAGE;
    }
    const char *path = argv[optind];
    char *stem = NULL, *h5 = NULL, *abs = NULL;
    if (full) {
        /* the absolute path, resolved; as given when it cannot be (the
         * slide then fails to open and says why) */
        abs = realpath(path, NULL);
        o.source_name = abs ? abs : path;
    } else {
        o.source_name = source_name; /* NULL: the file name */
    }
    if (what == (SP_RUN_TILES | SP_RUN_FEATURES)) {
        /* OUT or OUT.dzi/OUT.tiff/OUT.ome.tiff names the pyramid; OUT.h5
         * goes beside */
        const char *ext = sp_pyramid_ext(out, o.tile.container);
        size_t keep = strlen(out) - strlen(ext);
        stem = strndup(out, keep ? keep : strlen(out));
        size_t n = stem ? strlen(stem) + 4 : 0;
        h5 = stem ? malloc(n) : NULL;
        if (!h5) {
            free(stem);
            free(abs);
            sp_cli_error(cmd, "out of memory");
            return SP_EXIT_INTERNAL;
        }
        snprintf(h5, n, "%s.h5", stem);
        o.tiles_out = out;
        o.features_out = h5;
    } else if (tiles) {
        o.tiles_out = out;
    } else {
        o.features_out = out;
    }

    sp_cli_signals sigs;
    sp_cli_signals_catch(&sigs, on_signal);
    interrupted = 0;
    o.cancel = &interrupted;
    progress_ctx pc = {.cmd = cmd, .draw = !quiet && sp_progress_default()};
    o.progress = on_progress;
    o.progress_user = &pc;

    sp_error err = {0};
    sp_run_result r;
    bool ok = sp_run_slide(path, &o, &r, &err);
    sp_progress_done(pc.bar);
    sp_cli_signals_restore(&sigs);
    free(dcm_json);
    free(stem);
    free(h5);
    free(abs);
    int status = SP_EXIT_OK;
    if (!ok)
        status = sp_cli_report(cmd, &err); /* cancelled: 130 */
    if (json)
        print_json(path, &r);
    return status;
}

int sp_cmd_tile(int argc, char **argv) {
    return drive("tile", SP_RUN_TILES, argc, argv);
}

int sp_cmd_analyze(int argc, char **argv) {
    return drive("analyze", SP_RUN_FEATURES, argc, argv);
}

int sp_cmd_run(int argc, char **argv) {
    return drive("run", SP_RUN_TILES | SP_RUN_FEATURES, argc, argv);
}
