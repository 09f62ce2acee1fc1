/* slidepipe info: describe slides. */
#include "cli.h"

#include <getopt.h>
#include <string.h>

#include "ingest.h"

static void help(FILE *f) {
    fprintf(
        f,
        "usage: slidepipe info [OPTIONS] SLIDE...\n"
        "\n"
        "Describe each slide: vendor, levels (size, downsample, tile size),\n"
        "microns per pixel, objective power, quickhash, associated images\n"
        "and OpenSlide's properties. Each slide is also checked for\n"
        "readability with a small pixel read.\n"
        "\n"
        "Options:\n"
        "  --json          one JSON object per slide, one per line (JSON "
        "Lines);\n"
        "                  a slide that fails gives {\"file\":..., "
        "\"ok\":false,\n"
        "                  \"error\":...}\n"
        "  --properties    also list every property (human output)\n"
        "  --no-verify     skip the pixel read check\n"
        "  -h, --help      show this help\n"
        "\n"
        "Absent values (mpp, objective power) are printed as 'unknown' and\n"
        "written as null in JSON. Exit status: 0 when every slide was read,\n"
        "1 when any could not be, 2 on a usage error.\n");
}

static void print_human(const sp_slide *s, bool all_props) {
    const sp_level *l0 = sp_slide_level(s, 0);
    printf("%s\n", sp_slide_path(s));
    printf("  vendor        %s\n", sp_slide_vendor(s));
    printf("  dimensions    %lld x %lld px\n", (long long)l0->width,
           (long long)l0->height);
    double mx, my, pw;
    if (sp_slide_mpp(s, &mx, &my))
        printf("  mpp           %g x %g um/px\n", mx, my);
    else
        printf("  mpp           unknown\n");
    if (sp_slide_objective_power(s, &pw))
        printf("  objective     %gx\n", pw);
    else
        printf("  objective     unknown\n");
    const char *qh = sp_slide_quickhash(s);
    printf("  quickhash     %s\n", qh ? qh : "unknown");
    int64_t bx, by, bw, bh;
    if (sp_slide_bounds(s, &bx, &by, &bw, &bh))
        printf("  bounds        %lld,%lld %lld x %lld\n", (long long)bx,
               (long long)by, (long long)bw, (long long)bh);
    printf("  levels        %d\n", sp_slide_level_count(s));
    for (int i = 0; i < sp_slide_level_count(s); i++) {
        const sp_level *l = sp_slide_level(s, i);
        printf("    %-3d %8lld x %-8lld downsample %-10.4f", i,
               (long long)l->width, (long long)l->height, l->downsample);
        if (l->tile_width > 0)
            printf(" tiles %lldx%lld", (long long)l->tile_width,
                   (long long)l->tile_height);
        printf("\n");
    }
    int na = sp_slide_associated_count(s);
    printf("  associated    %s", na ? "" : "none");
    for (int i = 0; i < na; i++) {
        const sp_associated *a = sp_slide_associated_at(s, i);
        printf("%s%s (%lldx%lld)", i ? ", " : "", a->name, (long long)a->width,
               (long long)a->height);
    }
    printf("\n");
    printf("  properties    %d%s\n", sp_slide_property_count(s),
           all_props ? "" : " (--properties lists them)");
    if (all_props)
        for (int i = 0; i < sp_slide_property_count(s); i++) {
            const sp_property *p = sp_slide_property_at(s, i);
            printf("    %s = %s\n", p->name, p->value);
        }
}

static void write_json(sp_buf *b, const sp_slide *s) {
    sp_json j;
    sp_json_init(&j, b, false);
    const sp_level *l0 = sp_slide_level(s, 0);
    sp_json_begin_object(&j);
    sp_json_key(&j, "file");
    sp_json_string(&j, sp_slide_path(s));
    sp_json_key(&j, "ok");
    sp_json_bool(&j, true);
    sp_json_key(&j, "vendor");
    sp_json_string(&j, sp_slide_vendor(s));
    sp_json_key(&j, "width");
    sp_json_int(&j, l0->width);
    sp_json_key(&j, "height");
    sp_json_int(&j, l0->height);
    double mx, my, pw;
    bool has_mpp = sp_slide_mpp(s, &mx, &my);
    sp_json_key(&j, "mpp_x");
    has_mpp ? sp_json_number(&j, mx) : sp_json_null(&j);
    sp_json_key(&j, "mpp_y");
    has_mpp ? sp_json_number(&j, my) : sp_json_null(&j);
    sp_json_key(&j, "objective_power");
    sp_slide_objective_power(s, &pw) ? sp_json_number(&j, pw)
                                     : sp_json_null(&j);
    sp_json_key(&j, "quickhash");
    sp_json_string(&j, sp_slide_quickhash(s));
    int64_t bx, by, bw, bh;
    sp_json_key(&j, "bounds");
    if (sp_slide_bounds(s, &bx, &by, &bw, &bh)) {
        sp_json_begin_object(&j);
        sp_json_key(&j, "x");
        sp_json_int(&j, bx);
        sp_json_key(&j, "y");
        sp_json_int(&j, by);
        sp_json_key(&j, "width");
        sp_json_int(&j, bw);
        sp_json_key(&j, "height");
        sp_json_int(&j, bh);
        sp_json_end_object(&j);
    } else {
        sp_json_null(&j);
    }
    sp_json_key(&j, "level_count");
    sp_json_int(&j, sp_slide_level_count(s));
    sp_json_key(&j, "levels");
    sp_json_begin_array(&j);
    for (int i = 0; i < sp_slide_level_count(s); i++) {
        const sp_level *l = sp_slide_level(s, i);
        sp_json_begin_object(&j);
        sp_json_key(&j, "width");
        sp_json_int(&j, l->width);
        sp_json_key(&j, "height");
        sp_json_int(&j, l->height);
        sp_json_key(&j, "downsample");
        sp_json_number(&j, l->downsample);
        sp_json_key(&j, "tile_width");
        l->tile_width ? sp_json_int(&j, l->tile_width) : sp_json_null(&j);
        sp_json_key(&j, "tile_height");
        l->tile_height ? sp_json_int(&j, l->tile_height) : sp_json_null(&j);
        sp_json_end_object(&j);
    }
    sp_json_end_array(&j);
    sp_json_key(&j, "associated_images");
    sp_json_begin_array(&j);
    for (int i = 0; i < sp_slide_associated_count(s); i++) {
        const sp_associated *a = sp_slide_associated_at(s, i);
        sp_json_begin_object(&j);
        sp_json_key(&j, "name");
        sp_json_string(&j, a->name);
        sp_json_key(&j, "width");
        sp_json_int(&j, a->width);
        sp_json_key(&j, "height");
        sp_json_int(&j, a->height);
        sp_json_end_object(&j);
    }
    sp_json_end_array(&j);
    sp_json_key(&j, "properties");
    sp_json_begin_object(&j);
    for (int i = 0; i < sp_slide_property_count(s); i++) {
        const sp_property *p = sp_slide_property_at(s, i);
        sp_json_key(&j, p->name);
        sp_json_string(&j, p->value);
    }
    sp_json_end_object(&j);
    sp_json_end_object(&j);
}

static void write_json_error(sp_buf *b, const char *path, const sp_error *e) {
    sp_json j;
    sp_json_init(&j, b, false);
    sp_json_begin_object(&j);
    sp_json_key(&j, "file");
    sp_json_string(&j, path);
    sp_json_key(&j, "ok");
    sp_json_bool(&j, false);
    sp_json_key(&j, "error");
    sp_json_string(&j, e->msg);
    sp_json_end_object(&j);
}

int sp_cmd_info(int argc, char **argv) {
    enum { OPT_JSON = 1000, OPT_PROPS, OPT_NOVERIFY };
    static const struct option opts[] = {
        {"json", no_argument, NULL, OPT_JSON},
        {"properties", no_argument, NULL, OPT_PROPS},
        {"no-verify", no_argument, NULL, OPT_NOVERIFY},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    bool json = false, props = false, verify = true;
    int c;
    opterr = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        switch (c) {
        case OPT_JSON: json = true; break;
        case OPT_PROPS: props = true; break;
        case OPT_NOVERIFY: verify = false; break;
        case 'h': help(stdout); return SP_EXIT_OK;
        default:
            sp_cli_error("info",
                         "unknown option '%s' (see 'slidepipe info --help')",
                         argv[optind - 1]);
            return SP_EXIT_USAGE;
        }
    }
    if (optind >= argc) {
        sp_cli_error("info", "no slide given (see 'slidepipe info --help')");
        return SP_EXIT_USAGE;
    }
    int status = SP_EXIT_OK;
    sp_buf b;
    sp_buf_init(&b);
    for (int i = optind; i < argc; i++) {
        sp_error err = {0};
        sp_slide *s = NULL;
        sp_buf_reset(&b);
        if (!sp_slide_open(argv[i], verify, &s, &err)) {
            int code = sp_cli_report("info", &err);
            if (status == SP_EXIT_OK)
                status = code;
            if (json) {
                write_json_error(&b, argv[i], &err);
                printf("%s\n", b.data);
            }
            continue;
        }
        if (json) {
            write_json(&b, s);
            if (b.oom) {
                sp_cli_error("info", "%s: out of memory", argv[i]);
                status = SP_EXIT_INTERNAL;
            } else {
                printf("%s\n", b.data);
            }
        } else {
            if (i > optind)
                printf("\n");
            print_human(s, props);
        }
        fflush(stdout);
        sp_slide_close(s);
    }
    sp_buf_free(&b);
    return status;
}
