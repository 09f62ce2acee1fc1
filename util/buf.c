/* sp_buf: a growable, NUL-terminated byte buffer. */
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void sp_buf_init(sp_buf *b) { memset(b, 0, sizeof *b); }

void sp_buf_free(sp_buf *b) {
    if (!b)
        return;
    free(b->data);
    sp_buf_init(b);
}

void sp_buf_reset(sp_buf *b) {
    b->len = 0;
    if (b->data)
        b->data[0] = '\0';
}

static bool reserve(sp_buf *b, size_t extra) {
    if (b->oom)
        return false;
    if (b->len + extra + 1 <= b->cap)
        return true;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra + 1)
        cap *= 2;
    char *p = realloc(b->data, cap);
    if (!p) {
        b->oom = true;
        return false;
    }
    b->data = p;
    b->cap = cap;
    return true;
}

void sp_buf_append(sp_buf *b, const void *data, size_t n) {
    if (!reserve(b, n))
        return;
    memcpy(b->data + b->len, data, n);
    b->len += n;
    b->data[b->len] = '\0';
}

void *sp_buf_extend(sp_buf *b, size_t n) {
    if (!reserve(b, n))
        return NULL;
    char *p = b->data + b->len;
    b->len += n;
    b->data[b->len] = '\0';
    return p;
}

void sp_buf_puts(sp_buf *b, const char *s) { sp_buf_append(b, s, strlen(s)); }

void sp_buf_printf(sp_buf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || !reserve(b, (size_t)n))
        return;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}
