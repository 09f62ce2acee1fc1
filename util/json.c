/* A streaming JSON writer that always emits valid JSON. */
#include "util.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

void sp_json_init(sp_json *j, sp_buf *out, bool pretty) {
    memset(j, 0, sizeof *j);
    j->out = out;
    j->pretty = pretty;
    j->first[0] = true;
}

static void newline(sp_json *j) {
    if (!j->pretty)
        return;
    sp_buf_puts(j->out, "\n");
    for (int i = 0; i < j->depth; i++)
        sp_buf_puts(j->out, "  ");
}

/* Separator before a value or key at the current depth. */
static void before_item(sp_json *j) {
    if (j->after_key) {
        j->after_key = false;
        return;
    }
    if (!j->first[j->depth])
        sp_buf_puts(j->out, ",");
    j->first[j->depth] = false;
    if (j->depth > 0)
        newline(j);
}

static void open(sp_json *j, const char *c) {
    before_item(j);
    sp_buf_puts(j->out, c);
    if (j->depth < 32)
        j->depth++;
    j->first[j->depth] = true;
}

static void close(sp_json *j, const char *c) {
    bool empty = j->first[j->depth];
    if (j->depth > 0)
        j->depth--;
    if (!empty)
        newline(j);
    sp_buf_puts(j->out, c);
}

void sp_json_begin_object(sp_json *j) { open(j, "{"); }
void sp_json_end_object(sp_json *j) { close(j, "}"); }
void sp_json_begin_array(sp_json *j) { open(j, "["); }
void sp_json_end_array(sp_json *j) { close(j, "]"); }

void sp_json_key(sp_json *j, const char *key) {
    before_item(j);
    sp_json_escape(j->out, key ? key : "");
    sp_buf_puts(j->out, j->pretty ? ": " : ":");
    j->after_key = true;
}

void sp_json_string(sp_json *j, const char *s) {
    before_item(j);
    if (s)
        sp_json_escape(j->out, s);
    else
        sp_buf_puts(j->out, "null");
}

void sp_json_number(sp_json *j, double v) {
    before_item(j);
    if (!isfinite(v)) {
        sp_buf_puts(j->out, "null");
        return;
    }
    char tmp[64];
    if (v == floor(v) && fabs(v) < 1e15) { /* integral: no exponent */
        sp_buf_printf(j->out, "%.0f", v);
        return;
    }
    snprintf(tmp, sizeof tmp, "%.17g", v);
    /* shortest representation that round-trips */
    for (int prec = 1; prec <= 17; prec++) {
        char t[64];
        snprintf(t, sizeof t, "%.*g", prec, v);
        double back = 0;
        if (sp_parse_double(t, &back) && back == v) {
            memcpy(tmp, t, sizeof t);
            break;
        }
    }
    sp_buf_puts(j->out, tmp);
}

void sp_json_int(sp_json *j, int64_t v) {
    before_item(j);
    sp_buf_printf(j->out, "%lld", (long long)v);
}

void sp_json_bool(sp_json *j, bool v) {
    before_item(j);
    sp_buf_puts(j->out, v ? "true" : "false");
}

void sp_json_null(sp_json *j) {
    before_item(j);
    sp_buf_puts(j->out, "null");
}

/* Length of the valid UTF-8 sequence at p (1..4), or 0 if invalid. */
static int utf8_len(const unsigned char *p) {
    unsigned c = p[0];
    int n;
    unsigned min;
    if (c < 0x80)
        return 1;
    if ((c & 0xE0) == 0xC0) {
        n = 2;
        min = 0x80;
        c &= 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
        n = 3;
        min = 0x800;
        c &= 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
        n = 4;
        min = 0x10000;
        c &= 0x07;
    } else {
        return 0;
    }
    for (int i = 1; i < n; i++) {
        if ((p[i] & 0xC0) != 0x80)
            return 0;
        c = (c << 6) | (p[i] & 0x3F);
    }
    if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF))
        return 0;
    return n;
}

void sp_json_escape(sp_buf *b, const char *s) {
    const unsigned char *p = (const unsigned char *)s;
    sp_buf_puts(b, "\"");
    while (*p) {
        unsigned char c = *p;
        if (c == '"' || c == '\\') {
            char e[3] = {'\\', (char)c, 0};
            sp_buf_puts(b, e);
            p++;
        } else if (c < 0x20 || c == 0x7F) {
            switch (c) {
            case '\n': sp_buf_puts(b, "\\n"); break;
            case '\r': sp_buf_puts(b, "\\r"); break;
            case '\t': sp_buf_puts(b, "\\t"); break;
            case '\b': sp_buf_puts(b, "\\b"); break;
            case '\f': sp_buf_puts(b, "\\f"); break;
            default: sp_buf_printf(b, "\\u%04x", c); break;
            }
            p++;
        } else {
            int n = utf8_len(p);
            if (n == 0) {
                sp_buf_puts(b, "\\ufffd");
                p++;
            } else {
                sp_buf_append(b, p, (size_t)n);
                p += n;
            }
        }
    }
    sp_buf_puts(b, "\"");
}
