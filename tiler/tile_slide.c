/* sp_tile_slide: a slide's level 0, read once in bands, into a pyramid. */
#include "tiler_private.h"

#include <stdlib.h>
#include <string.h>

static bool push_band(void *user, int stripe, const uint8_t *rgb, size_t stride,
                      int64_t y0, int64_t rows, sp_error *err) {
    (void)stripe; /* the band loop reads exactly the pyramid's stripes */
    return sp_pyramid_push_rows(user, rgb, stride, y0, rows, err);
}

/* Bands are read straight into the pyramid's level-0 rows. */
static uint8_t *pyramid_dest(void *user, int stripe, int64_t y0, int64_t rows,
                             int64_t width, size_t *stride) {
    (void)stripe;
    (void)y0;
    return sp_pyramid_input(user, rows, width, stride);
}

bool sp_tile_slide(sp_slide *s, const char *out, const sp_tile_opts *opts,
                   sp_tile_stats *stats, sp_error *err) {
    const sp_level *l0 = sp_slide_level(s, 0);
    sp_pyramid_opts prm;
    memset(&prm, 0, sizeof prm);
    prm.output = out;
    prm.width = l0->width;
    prm.height = l0->height;
    prm.opts = *opts;
    if (prm.opts.threads <= 0)
        prm.opts.threads = sp_default_threads();
    prm.source.path = sp_slide_path(s);
    prm.source.vendor = sp_slide_vendor(s);
    prm.source.quickhash = sp_slide_quickhash(s);
    double mx, my, pw;
    if (sp_slide_mpp(s, &mx, &my)) {
        prm.source.mpp_x = mx;
        prm.source.mpp_y = my;
    }
    if (sp_slide_objective_power(s, &pw))
        prm.source.objective_power = pw;
    prm.band_rows = sp_band_rows_for(s, 0);
    prm.slide = s;
    prm.half_input = sp_tile_half_input(s, opts);

    sp_pyramid *p = sp_pyramid_create(&prm, err);
    if (!p)
        return false;
    int n = sp_pyramid_stripes(p);
    sp_col_span *cols = malloc((size_t)n * sizeof *cols);
    if (!cols) {
        sp_pyramid_abort(p);
        return sp_error_set(err, SP_ERR_NOMEM, out, "out of memory");
    }
    for (int i = 0; i < n; i++) {
        sp_stripe st;
        sp_pyramid_stripe(p, i, &st);
        cols[i] = (sp_col_span){st.x0, st.x1};
    }
    sp_band_hooks hooks = {.fn = push_band,
                           .dest = pyramid_dest,
                           .user = p,
                           .half = prm.half_input};
    bool ok = sp_band_loop(s, prm.opts.threads, opts->background, prm.band_rows,
                           cols, n, &hooks, err);
    free(cols);
    if (!ok) {
        sp_pyramid_abort(p);
        return false;
    }
    return sp_pyramid_finish(p, stats, err);
}
