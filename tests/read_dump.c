/* Test-only driver of ingest's readers for tests/test_corrupt.py: reads
 * every level of a slide through sp_reader with the default flags (the
 * direct JPEG path wherever the slide allows it), the way the pipeline
 * does, and dumps the pixels for a byte-for-byte comparison with
 * OpenSlide.
 *
 *   read_dump SLIDE OUTDIR [--max-side N] [--piece W H] [--half]
 *
 * For each level L, the slide is opened afresh (without the verify read,
 * so that a failure belongs to the level that caused it) and the box
 * (0, 0, min(width, N), min(height, N)) of the level is read, white
 * background, in one read or in W x H pieces. One line per level on
 * stdout:
 *     level L ok W H          pixels in OUTDIR/level-L.rgb (rows packed)
 *     level L error MESSAGE   (the sp_error text, one line)
 * With --half, level 0 is read at half size instead (sp_reader_read_half;
 * the box is of that image), one line:
 *     half ok W H             pixels in OUTDIR/half.rgb
 *     half error MESSAGE
 * After each ok line, the tiles the reader copied rather than decoded
 * (sp_reader_repeats):
 *     repeats N
 * Exit status 0 when every line was written (read errors included); a
 * crash or sanitizer report is what the test looks for. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ingest.h"

static void read_level(const char *path, const char *outdir, int level,
                       bool half, int64_t max_side, int64_t pw, int64_t ph) {
    sp_error err = {0};
    sp_slide *s = NULL;
    sp_reader *r = NULL;
    uint8_t *rgb = NULL;
    if (!sp_slide_open(path, false, &s, &err))
        goto out;
    const sp_level *l = sp_slide_level(s, level);
    if (!l) {
        sp_error_set(&err, SP_ERR_INPUT, path, "level %d is gone", level);
        goto out;
    }
    const int64_t lw = half ? (l->width + 1) / 2 : l->width;
    const int64_t lh = half ? (l->height + 1) / 2 : l->height;
    int64_t w = lw < max_side ? lw : max_side;
    int64_t h = lh < max_side ? lh : max_side;
    r = sp_reader_create(s, 0, NULL, &err);
    rgb = malloc((size_t)(w * h * 3));
    if (!r || !rgb) {
        sp_error_set(&err, SP_ERR_NOMEM, path, "out of memory");
        goto out;
    }
    if (pw <= 0 || ph <= 0) {
        pw = w;
        ph = h;
    }
    double ds = l->downsample;
    for (int64_t y = 0; y < h && !sp_error_is_set(&err); y += ph)
        for (int64_t x = 0; x < w && !sp_error_is_set(&err); x += pw) {
            int64_t bw = x + pw > w ? w - x : pw, bh = y + ph > h ? h - y : ph;
            /* level-0 origin of a whole pixel of the level, as the
             * pipeline's power-of-two reads (exact only for integral
             * downsamples; other levels go through OpenSlide) */
            if (half)
                sp_reader_read_half(r, x, y, bw, bh, rgb + (y * w + x) * 3,
                                    (size_t)w * 3, &err);
            else
                sp_reader_read_stride(r, level, (int64_t)((double)x * ds),
                                      (int64_t)((double)y * ds), bw, bh,
                                      rgb + (y * w + x) * 3, (size_t)w * 3,
                                      &err);
        }
    if (sp_error_is_set(&err))
        goto out;
    char name[4096];
    if (half)
        snprintf(name, sizeof name, "%s/half.rgb", outdir);
    else
        snprintf(name, sizeof name, "%s/level-%d.rgb", outdir, level);
    FILE *f = fopen(name, "wb");
    if (!f || fwrite(rgb, 1, (size_t)(w * h * 3), f) != (size_t)(w * h * 3)) {
        fprintf(stderr, "read_dump: cannot write %s\n", name);
        exit(2);
    }
    fclose(f);
    if (half)
        printf("half ok %lld %lld\n", (long long)w, (long long)h);
    else
        printf("level %d ok %lld %lld\n", level, (long long)w, (long long)h);
    printf("repeats %lld\n", (long long)sp_reader_repeats(r));
out:
    if (sp_error_is_set(&err) && half)
        printf("half error %s\n", err.msg);
    else if (sp_error_is_set(&err))
        printf("level %d error %s\n", level, err.msg);
    free(rgb);
    sp_reader_free(r);
    sp_slide_close(s);
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: read_dump SLIDE OUTDIR [--max-side N] "
                        "[--piece W H] [--half]\n");
        return 2;
    }
    int64_t max_side = 8192, pw = 0, ph = 0;
    bool half = false;
    for (int i = 3; i < argc; i++) {
        if (strcmp(argv[i], "--max-side") == 0 && i + 1 < argc)
            max_side = atoll(argv[++i]);
        else if (strcmp(argv[i], "--piece") == 0 && i + 2 < argc) {
            pw = atoll(argv[++i]);
            ph = atoll(argv[++i]);
        } else if (strcmp(argv[i], "--half") == 0) {
            half = true;
        } else {
            fprintf(stderr, "read_dump: unknown option %s\n", argv[i]);
            return 2;
        }
    }
    sp_error err = {0};
    sp_slide *s = NULL;
    if (!sp_slide_open(argv[1], false, &s, &err)) {
        printf("open error %s\n", err.msg);
        return 0;
    }
    int n = sp_slide_level_count(s);
    printf("levels %d direct %d\n", n, sp_slide_has_direct_path(s) ? 1 : 0);
    sp_slide_close(s);
    if (half)
        read_level(argv[1], argv[2], 0, true, max_side, pw, ph);
    for (int level = 0; level < n && !half; level++)
        read_level(argv[1], argv[2], level, false, max_side, pw, ph);
    return 0;
}
