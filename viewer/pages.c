/* HTML pages (slide list, viewer) and the slide metadata JSON. Every
 * string that comes from a file or a slide is escaped; pages carry no
 * inline script (the Content-Security-Policy forbids it): the viewer
 * reads its settings from data- attributes. */
#include "viewer_private.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

void sp__html_escape(sp_buf *b, const char *s) {
    if (!s)
        return;
    for (; *s; s++) {
        switch (*s) {
        case '&': sp_buf_puts(b, "&amp;"); break;
        case '<': sp_buf_puts(b, "&lt;"); break;
        case '>': sp_buf_puts(b, "&gt;"); break;
        case '"': sp_buf_puts(b, "&quot;"); break;
        case '\'': sp_buf_puts(b, "&#39;"); break;
        default:
            if ((unsigned char)*s < 0x20 && *s != '\t' && *s != '\n')
                sp_buf_puts(b, "&#xFFFD;");
            else
                sp_buf_append(b, s, 1);
        }
    }
}

static void head(const sp_catalog *c, sp_buf *b, const char *title) {
    const sp_vasset *css = sp__catalog_asset(c, "viewer.css");
    sp_buf_puts(b, "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n"
                   "<meta charset=\"utf-8\">\n"
                   "<meta name=\"viewport\" content=\"width=device-width, "
                   "initial-scale=1\">\n<title>");
    sp__html_escape(b, title);
    sp_buf_puts(b,
                " - slidepipe</title>\n<link rel=\"icon\" href=\"data:,\">\n");
    sp_buf_printf(
        b, "<link rel=\"stylesheet\" href=\"/static/viewer.css?v=%s\">\n",
        css ? css->version : "0");
    sp_buf_puts(b, "</head>\n");
}

static void fmt_size(char *out, size_t n, const sp_vslide *s) {
    snprintf(out, n, "%lld \xc3\x97 %lld px", (long long)s->width,
             (long long)s->height);
}

/* The Deep Zoom level whose whole image fits one tile of <= 128 px. */
static int thumb_level(const sp_vslide *s) {
    int top = s->dz_levels - 1;
    int64_t m = s->width > s->height ? s->width : s->height;
    int l = top;
    while (l > 0 && m > 128) {
        m = (m + 1) / 2;
        l--;
    }
    return l;
}

void sp__page_index(const sp_catalog *c, sp_buf *b) {
    head(c, b, "Slides");
    sp_buf_puts(b,
                "<body>\n<a class=\"skip\" href=\"#main\">Skip to the slide "
                "list</a>\n<header><h1>Slides</h1></header>\n"
                "<main id=\"main\">\n<table class=\"slides\">\n"
                "<caption>Slides served by slidepipe</caption>\n<thead><tr>"
                "<th scope=\"col\">Thumbnail</th><th scope=\"col\">Name</th>"
                "<th scope=\"col\">Vendor</th><th scope=\"col\">Size</th>"
                "<th scope=\"col\">Resolution</th>"
                "<th scope=\"col\">Tissue area</th></tr></thead>\n<tbody>\n");
    for (size_t i = 0; i < c->n; i++) {
        const sp_vslide *s = c->slides[i];
        char size[64];
        fmt_size(size, sizeof size, s);
        sp_buf_printf(b,
                      "<tr><td><a href=\"/slide/%s\" tabindex=\"-1\">"
                      "<img src=\"/dzi/%s_files/%d/0_0.%s?v=%s\" alt=\"\" "
                      "loading=\"lazy\" width=\"128\"></a></td>",
                      s->id, s->id, thumb_level(s), s->ext, s->version);
        sp_buf_printf(b, "<td><a href=\"/slide/%s\">", s->id);
        sp__html_escape(b, s->name);
        sp_buf_puts(b, "</a></td><td>");
        sp__html_escape(b, s->vendor ? s->vendor : "unknown");
        sp_buf_printf(b, "</td><td>%s</td><td>", size);
        if (!isnan(s->mpp_x))
            sp_buf_printf(b, "%.4g \xc2\xb5m/px", s->mpp_x);
        else
            sp_buf_puts(b, "unknown");
        sp_buf_puts(b, "</td><td>");
        if (!isnan(s->tissue_area_mm2))
            sp_buf_printf(b, "%.2f mm\xc2\xb2", s->tissue_area_mm2);
        else
            sp_buf_puts(b, s->h5_path ? "unknown" : "not analysed");
        sp_buf_puts(b, "</td></tr>\n");
    }
    sp_buf_puts(b, "</tbody>\n</table>\n</main>\n</body>\n</html>\n");
}

void sp__page_slide(const sp_catalog *c, const sp_vslide *s, sp_buf *b) {
    const sp_vasset *osd = sp__catalog_asset(c, "openseadragon.min.js");
    const sp_vasset *js = sp__catalog_asset(c, "viewer.js");
    head(c, b, s->name);
    sp_buf_puts(b, "<body class=\"viewer-page\">\n<a class=\"skip\" "
                   "href=\"#osd\">Skip to the slide</a>\n<header>"
                   "<nav aria-label=\"Breadcrumb\"><a href=\"/\">All slides"
                   "</a></nav>\n<h1>");
    sp__html_escape(b, s->name);
    sp_buf_puts(b, "</h1></header>\n");
    sp_buf_printf(b,
                  "<main id=\"main\" data-id=\"%s\" data-version=\"%s\" "
                  "data-width=\"%lld\" data-height=\"%lld\"",
                  s->id, s->version, (long long)s->width, (long long)s->height);
    if (!isnan(s->mpp_x))
        sp_buf_printf(b, " data-mpp=\"%.9g\"", s->mpp_x);
    sp_buf_puts(b, ">\n<div class=\"toolbar\" role=\"toolbar\" "
                   "aria-label=\"Viewer controls\" aria-controls=\"osd\">\n"
                   "<button type=\"button\" id=\"zoom-in\" "
                   "aria-keyshortcuts=\"+\">Zoom in</button>\n"
                   "<button type=\"button\" id=\"zoom-out\" "
                   "aria-keyshortcuts=\"-\">Zoom out</button>\n"
                   "<button type=\"button\" id=\"home\" "
                   "aria-keyshortcuts=\"0\">Whole slide</button>\n");
    if (s->ncols > 0) {
        sp_buf_puts(b,
                    "<span class=\"group\"><input type=\"checkbox\" "
                    "id=\"heatmap-toggle\" aria-keyshortcuts=\"h\" "
                    "aria-describedby=\"legend\"><label for=\"heatmap-toggle\">"
                    "Heatmap overlay (H)</label></span>\n"
                    "<span class=\"group\"><label for=\"feature\">Feature"
                    "</label> <select id=\"feature\">");
        for (int i = 0; i < s->ncols; i++) {
            sp_buf_puts(b, "<option>");
            sp__html_escape(b, s->columns[i]);
            sp_buf_puts(b, "</option>");
        }
        sp_buf_puts(b, "</select></span>\n<span class=\"group\"><label "
                       "for=\"opacity\">Opacity</label> <input type=\"range\" "
                       "id=\"opacity\" min=\"10\" max=\"100\" step=\"10\" "
                       "value=\"50\"></span>\n");
    } else {
        sp_buf_puts(b, "<span class=\"note\">No features: the slide has not "
                       "been analysed.</span>\n");
    }
    sp_buf_puts(b, "</div>\n<div class=\"stage\">\n<div id=\"osd\" "
                   "class=\"osd\" role=\"application\" "
                   "aria-roledescription=\"slide viewer\" aria-label=\"");
    sp__html_escape(b, s->name);
    sp_buf_puts(b,
                ". Arrow keys or W A S D pan, plus and minus zoom, 0 shows "
                "the whole slide, H toggles the heatmap.\"></div>\n"
                "<div id=\"scalebar\" class=\"scalebar\" aria-hidden=\"true\">"
                "<div class=\"bar\"></div><span class=\"label\"></span></div>\n"
                "<div id=\"legend\" class=\"legend\" hidden><span "
                "class=\"title\"></span><div class=\"ramp\"></div>"
                "<span class=\"min\"></span><span class=\"max\"></span>"
                "</div>\n</div>\n<p id=\"status\" role=\"status\" "
                "aria-live=\"polite\"></p>\n<section class=\"meta\" "
                "aria-labelledby=\"meta-h\"><h2 id=\"meta-h\">Slide</h2>\n"
                "<dl>\n<dt>Vendor</dt><dd>");
    sp__html_escape(b, s->vendor ? s->vendor : "unknown");
    char size[64];
    fmt_size(size, sizeof size, s);
    sp_buf_printf(b, "</dd>\n<dt>Size</dt><dd>%s</dd>\n<dt>Resolution</dt><dd>",
                  size);
    if (!isnan(s->mpp_x))
        sp_buf_printf(b, "%.4g \xc3\x97 %.4g \xc2\xb5m/px", s->mpp_x,
                      isnan(s->mpp_y) ? s->mpp_x : s->mpp_y);
    else
        sp_buf_puts(b, "unknown (no scale bar)");
    sp_buf_puts(b, "</dd>\n");
    if (!isnan(s->objective_power))
        sp_buf_printf(b, "<dt>Objective</dt><dd>%gx</dd>\n",
                      s->objective_power);
    if (!isnan(s->tissue_area_mm2))
        sp_buf_printf(b, "<dt>Tissue area</dt><dd>%.2f mm\xc2\xb2</dd>\n",
                      s->tissue_area_mm2);
    sp_buf_printf(b, "<dt>Tiles</dt><dd>%s</dd>\n</dl>\n</section>\n",
                  s->dzi_path ? "pre-built pyramid" : "rendered on the fly");
    if (c->opts.show_associated && s->slide) {
        bool any = false;
        for (int i = 0; i < sp_slide_associated_count(s->slide); i++) {
            const char *n = sp_slide_associated_at(s->slide, i)->name;
            if (strcmp(n, "label") && strcmp(n, "macro") &&
                strcmp(n, "thumbnail"))
                continue;
            if (!any)
                sp_buf_puts(b, "<section class=\"assoc\" aria-labelledby="
                               "\"assoc-h\"><h2 id=\"assoc-h\">Associated "
                               "images</h2>\n");
            any = true;
            sp_buf_printf(b,
                          "<figure><img src=\"/assoc/%s/%s.png?v=%s\" "
                          "alt=\"%s image of the slide\"><figcaption>%s"
                          "</figcaption></figure>\n",
                          s->id, n, s->version, n, n);
        }
        if (any)
            sp_buf_puts(b, "</section>\n");
    }
    sp_buf_printf(b,
                  "</main>\n<script src=\"/static/openseadragon.min.js?v=%s\">"
                  "</script>\n<script src=\"/static/viewer.js?v=%s\">"
                  "</script>\n</body>\n</html>\n",
                  osd ? osd->version : "0", js ? js->version : "0");
}

static void num_or_null(sp_json *j, double v) {
    if (isnan(v))
        sp_json_null(j);
    else
        sp_json_number(j, v);
}

void sp__json_slide(const sp_catalog *c, const sp_vslide *s, sp_json *j) {
    char url[160];
    sp_json_begin_object(j);
    sp_json_key(j, "id");
    sp_json_string(j, s->id);
    sp_json_key(j, "name");
    sp_json_string(j, s->name);
    sp_json_key(j, "vendor");
    sp_json_string(j, s->vendor);
    sp_json_key(j, "width");
    sp_json_int(j, s->width);
    sp_json_key(j, "height");
    sp_json_int(j, s->height);
    sp_json_key(j, "mpp_x");
    num_or_null(j, s->mpp_x);
    sp_json_key(j, "mpp_y");
    num_or_null(j, s->mpp_y);
    sp_json_key(j, "objective_power");
    num_or_null(j, s->objective_power);
    sp_json_key(j, "quickhash");
    sp_json_string(j, s->quickhash);
    sp_json_key(j, "tissue_area_mm2");
    num_or_null(j, s->tissue_area_mm2);
    sp_json_key(j, "tiles");
    sp_json_string(j, s->dzi_path ? "pre-built" : "on-the-fly");
    sp_json_key(j, "dz_levels");
    sp_json_int(j, s->dz_levels);
    sp_json_key(j, "tile_size");
    sp_json_int(j, s->topts.tile_size);
    sp_json_key(j, "overlap");
    sp_json_int(j, s->topts.overlap);
    sp_json_key(j, "format");
    sp_json_string(j, s->ext);
    sp_json_key(j, "version");
    sp_json_string(j, s->version);
    snprintf(url, sizeof url, "/dzi/%s.dzi?v=%s", s->id, s->version);
    sp_json_key(j, "dzi");
    sp_json_string(j, url);
    snprintf(url, sizeof url, "/slide/%s", s->id);
    sp_json_key(j, "viewer");
    sp_json_string(j, url);
    sp_json_key(j, "features");
    sp_json_begin_array(j);
    for (int i = 0; i < s->ncols; i++)
        sp_json_string(j, s->columns[i]);
    sp_json_end_array(j);
    sp_json_key(j, "associated");
    sp_json_begin_array(j);
    if (c->opts.show_associated && s->slide)
        for (int i = 0; i < sp_slide_associated_count(s->slide); i++) {
            const char *n = sp_slide_associated_at(s->slide, i)->name;
            if (!strcmp(n, "label") || !strcmp(n, "macro") ||
                !strcmp(n, "thumbnail")) {
                snprintf(url, sizeof url, "/assoc/%s/%s.png", s->id, n);
                sp_json_string(j, url);
            }
        }
    sp_json_end_array(j);
    sp_json_end_object(j);
}
