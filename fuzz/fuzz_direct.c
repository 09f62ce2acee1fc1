/* libFuzzer target: ingest's direct TIFF/JPEG reader (ingest/direct.c).
 * The input is a slide file: it is written to a memfd and opened by path
 * (/proc/self/fd/N) with sp_slide_open, which asks OpenSlide to open it
 * and probes the direct path; every level that the direct path reads is
 * then read at a few boxes through a default (direct) reader: a corner,
 * the centre, and a box across the bottom-right edge, so that whole,
 * cropped and cut-short tiles are decoded. Levels left to OpenSlide are
 * not read, nor levels whose downsample is fractional (OpenSlide's own
 * decoders are not what this target is for; openslide_open still parses
 * every input). Nothing may print, leak or
 * allocate from a size the file claims without bounds. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "ingest.h"
#include "ingest_private.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int mfd = -1;
static char path[64];
static uint8_t *px; /* the largest box's pixels */

enum { BOX = 256 };

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    mfd = memfd_create("fuzz_direct.svs", MFD_CLOEXEC);
    if (mfd < 0) {
        perror("fuzz_direct: memfd_create");
        abort();
    }
    snprintf(path, sizeof path, "/proc/self/fd/%d", mfd);
    px = malloc((size_t)BOX * BOX * 3);
    if (!px)
        abort();
    return 0;
}

static void read_box(sp_reader *r, const sp_level *l, int level, int64_t x,
                     int64_t y, int64_t w, int64_t h) {
    if (w <= 0 || h <= 0)
        return;
    if (w > BOX)
        w = BOX;
    if (h > BOX)
        h = BOX;
    sp_error err = {0};
    /* level-0 origin of a whole pixel of the level, as the pipeline's
     * reads (the direct path takes those) */
    sp_reader_read(r, level, (int64_t)((double)x * l->downsample),
                   (int64_t)((double)y * l->downsample), w, h, px, &err);
}

/* Level 0 at half size (DCT scaling, the odd-edge boxes): the whole
 * image's top-left box and a box over its bottom-right edge. */
static void half_reads(sp_slide *s) {
    if (!sp_slide_can_read_half(s))
        return;
    sp_error err = {0};
    sp_reader *r = sp_reader_create(s, 0, NULL, &err);
    if (!r)
        return;
    const sp_level *l = sp_slide_level(s, 0);
    int64_t w = (l->width + 1) / 2, h = (l->height + 1) / 2;
    sp_reader_read_half(r, 0, 0, w < BOX ? w : BOX, h < BOX ? h : BOX, px,
                        (size_t)BOX * 3, &err);
    sp_error_clear(&err);
    sp_reader_read_half(r, w - 70, h - 50, 90, 80, px, (size_t)BOX * 3, &err);
    sp_reader_free(r);
}

static uint64_t get(const uint8_t *p, int n, bool le) {
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v |= (uint64_t)p[le ? i : n - 1 - i] << (8 * i);
    return v;
}

/* Whether the input would stop the run inside OpenSlide 3.4.1 rather
 * than in our code; such inputs are skipped (both reported in issue 12):
 * - some IFD entry claims more value bytes than the whole input holds:
 *   OpenSlide's own TIFF parser (tifflike) calls g_try_malloc(count *
 *   size) for every entry before reading it, harmless outside the fuzzer
 *   (NULL, then an error) but over libFuzzer's malloc limit;
 * - a tiled directory has more than twice the tiles across or down of the
 *   tiled directory before it: Aperio's open divides by round(tiles of
 *   one level / tiles of the next) when a tile has no bytes, and dies of
 *   SIGFPE (openslide-python does too). libtiff may zero a byte count
 *   itself, so the rule does not look at the counts. */
static bool openslide_would_stop(const uint8_t *d, size_t n) {
    static const uint8_t tsize[19] = {0, 1, 1, 2, 4, 8, 1, 1, 2, 4,
                                      8, 4, 8, 0, 0, 0, 8, 8, 8};
    if (n < 16 || (memcmp(d, "II", 2) != 0 && memcmp(d, "MM", 2) != 0))
        return false;
    bool le = d[0] == 'I', big = get(d + 2, 2, le) == 43;
    uint64_t off = big ? get(d + 8, 8, le) : get(d + 4, 4, le);
    uint64_t prev_across = 0, prev_down = 0;
    for (int dirs = 0; off && dirs < 256; dirs++) {
        int cw = big ? 8 : 2, ew = big ? 20 : 12;
        if (off > n || n - off < (uint64_t)cw)
            return false;
        uint64_t cnt = get(d + off, cw, le);
        uint64_t v[4] = {0, 0, 0, 0}; /* width, height, tile w, tile h */
        for (uint64_t i = 0; i < cnt; i++) {
            uint64_t e = off + (uint64_t)cw + i * (uint64_t)ew;
            if (e > n || n - e < (uint64_t)ew)
                return false;
            uint64_t tag = get(d + e, 2, le);
            uint64_t type = get(d + e + 2, 2, le);
            uint64_t count = get(d + e + 4, big ? 8 : 4, le);
            uint64_t sz = type < 19 && tsize[type] ? tsize[type] : 1;
            if (count > n / sz)
                return true;
            int k = tag == 256   ? 0
                    : tag == 257 ? 1
                    : tag == 322 ? 2
                    : tag == 323 ? 3
                                 : -1;
            if (k >= 0 && count == 1 && (type == 3 || type == 4 || type == 16))
                v[k] = get(d + e + (big ? 12 : 8), (int)tsize[type], le);
        }
        if (v[2] && v[3]) {
            uint64_t across = (v[0] + v[2] - 1) / v[2];
            uint64_t down = (v[1] + v[3] - 1) / v[3];
            if (prev_across &&
                (across > 2 * prev_across || down > 2 * prev_down))
                return true;
            prev_across = across ? across : 1;
            prev_down = down ? down : 1;
        }
        uint64_t next = off + (uint64_t)cw + cnt * (uint64_t)ew;
        if (next > n || n - next < (uint64_t)(big ? 8 : 4))
            return false;
        off = get(d + next, big ? 8 : 4, le);
    }
    return false;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (openslide_would_stop(data, size))
        return 0;
    if (ftruncate(mfd, 0) != 0 ||
        (size && pwrite(mfd, data, size, 0) != (ssize_t)size))
        abort();
    sp_error err = {0};
    sp_slide *s = NULL;
    if (!sp_slide_open(path, false, &s, &err))
        return 0;
    for (int level = 0; level < sp_slide_level_count(s); level++) {
        const sp_level *l = sp_slide_level(s, level);
        /* direct levels only, and of those above 0 only those whose
         * downsample is whole (any other read origin is OpenSlide's) */
        if (!sp__direct_has_level(s->direct, level) ||
            (level > 0 && l->downsample != floor(l->downsample)))
            continue;
        sp_reader *r = sp_reader_create(s, 0, NULL, &err);
        if (!r)
            break;
        read_box(r, l, level, 0, 0, l->width, l->height);
        read_box(r, l, level, l->width / 2 - 50, l->height / 2 - 37, 100, 75);
        read_box(r, l, level, l->width - 70, l->height - 50, 90, 80);
        sp_reader_free(r);
    }
    half_reads(s);
    sp_slide_close(s);
    return 0;
}
