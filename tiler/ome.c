/* The OME-XML of the OME-TIFF container (tiff.c writes it as the first
 * directory's ImageDescription): the 2016-06 schema's OME element with
 * one Image whose Pixels are the pyramid's level 0, interleaved RGB
 * (SizeC 3 in one Channel of 3 samples), XYCZT, uint8, stored from IFD 0
 * (the reduced levels are that directory's SubIFDs, which OME-TIFF readers
 * take as the Image's resolutions). Every string from outside (the source
 * and file names) is escaped for XML: markup characters as entities,
 * characters XML 1.0 forbids and invalid UTF-8 as U+FFFD. */
#include "tiler_private.h"

#include <stdio.h>
#include <string.h>
#include <sys/random.h>

#define OME_NS "http://www.openmicroscopy.org/Schemas/OME/2016-06"

/* Length of the valid UTF-8 sequence at s (1..4), 0 when invalid. */
static int utf8_len(const unsigned char *s) {
    unsigned c = s[0];
    if (c < 0x80)
        return 1;
    int n = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC2 ? 2 : 0;
    if (n == 0 || c > 0xF4)
        return 0;
    unsigned cp = c & (0x3Fu >> (n - 1));
    for (int i = 1; i < n; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        cp = cp << 6 | (s[i] & 0x3Fu);
    }
    static const unsigned min[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < min[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF) ||
        cp == 0xFFFE || cp == 0xFFFF)
        return 0;
    return n;
}

/* `s` as XML character data or attribute value (double quotes). */
static void xml_escape(sp_buf *b, const char *s) {
    const unsigned char *u = (const unsigned char *)s;
    while (*u) {
        switch (*u) {
        case '&':
            sp_buf_puts(b, "&amp;");
            u++;
            continue;
        case '<':
            sp_buf_puts(b, "&lt;");
            u++;
            continue;
        case '>':
            sp_buf_puts(b, "&gt;");
            u++;
            continue;
        case '"':
            sp_buf_puts(b, "&quot;");
            u++;
            continue;
        case '\'':
            sp_buf_puts(b, "&apos;");
            u++;
            continue;
        case '\t':
        case '\n':
        case '\r': /* kept in values as character references */
            sp_buf_printf(b, "&#%u;", (unsigned)*u);
            u++;
            continue;
        default: break;
        }
        int n = *u < 0x20 ? 0 : utf8_len(u);
        if (n == 0) {
            sp_buf_puts(b, "\xEF\xBF\xBD"); /* U+FFFD */
            u++;
        } else {
            sp_buf_append(b, u, (size_t)n);
            u += n;
        }
    }
}

static const char *base_name(const char *path) {
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

bool sp__ome_uuid(char out[46]) {
    unsigned char r[16];
    if (getrandom(r, sizeof r, 0) != (ssize_t)sizeof r)
        return false;
    r[6] = (unsigned char)((r[6] & 0x0F) | 0x40); /* version 4 */
    r[8] = (unsigned char)((r[8] & 0x3F) | 0x80); /* RFC 4122 variant */
    int k = snprintf(out, 46, "urn:uuid:");
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            out[k++] = '-';
        k += snprintf(out + k, (size_t)(46 - k), "%02x", r[i]);
    }
    return true;
}

bool sp__ome_xml(const sp_pyramid *p, const char *file_name, const char *uuid,
                 sp_buf *out) {
    const sp_source_info *src = &p->prm.source;
    const bool mag = src->objective_power > 0;
    sp_buf_reset(out);
    sp_buf_puts(out, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
                     "<OME xmlns=\"" OME_NS "\" "
                     "xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" "
                     "xsi:schemaLocation=\"" OME_NS " " OME_NS "/ome.xsd\" "
                     "UUID=\"");
    xml_escape(out, uuid);
    sp_buf_puts(out, "\" Creator=\"slidepipe " SP_VERSION "\">\n");
    if (mag) /* QuPath and OMERO read the magnification from here */
        sp_buf_printf(out,
                      "  <Instrument ID=\"Instrument:0\">\n"
                      "    <Objective ID=\"Objective:0:0\" "
                      "NominalMagnification=\"%.15g\"/>\n"
                      "  </Instrument>\n",
                      src->objective_power);
    sp_buf_puts(out, "  <Image ID=\"Image:0\"");
    if (src->path && *src->path) {
        sp_buf_puts(out, " Name=\"");
        xml_escape(out, base_name(src->path));
        sp_buf_puts(out, "\"");
    }
    sp_buf_puts(out, ">\n");
    if (mag)
        sp_buf_puts(out, "    <InstrumentRef ID=\"Instrument:0\"/>\n"
                         "    <ObjectiveSettings ID=\"Objective:0:0\"/>\n");
    sp_buf_printf(out,
                  "    <Pixels ID=\"Pixels:0\" DimensionOrder=\"XYCZT\" "
                  "Type=\"uint8\" SizeX=\"%lld\" SizeY=\"%lld\" SizeC=\"3\" "
                  "SizeZ=\"1\" SizeT=\"1\" Interleaved=\"true\" "
                  "SignificantBits=\"8\"",
                  (long long)p->lv[0].w, (long long)p->lv[0].h);
    /* both or neither: a pixel known in one direction only is unknown */
    if (src->mpp_x > 0 && src->mpp_y > 0)
        sp_buf_printf(
            out,
            " PhysicalSizeX=\"%.15g\" PhysicalSizeXUnit=\"\xC2\xB5m\""
            " PhysicalSizeY=\"%.15g\" PhysicalSizeYUnit=\"\xC2\xB5m\"",
            src->mpp_x, src->mpp_y);
    sp_buf_puts(out,
                ">\n"
                "      <Channel ID=\"Channel:0:0\" SamplesPerPixel=\"3\"/>\n"
                "      <TiffData IFD=\"0\" PlaneCount=\"1\">\n"
                "        <UUID FileName=\"");
    xml_escape(out, base_name(file_name));
    sp_buf_puts(out, "\">");
    xml_escape(out, uuid);
    sp_buf_puts(out, "</UUID>\n"
                     "      </TiffData>\n"
                     "    </Pixels>\n"
                     "  </Image>\n"
                     "</OME>\n");
    return !out->oom;
}
