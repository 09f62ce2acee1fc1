/* libFuzzer target: the viewer's URL grammar, sp_route_parse.
 * Input: METHOD, a space, the raw request target (the first NUL or the
 * end ends it; no space: GET and the whole input). Checks the contract
 * of viewer.h: the status is one of 200/400/404/405/414, a 200 fills
 * only well-formed fields, and the URI is never read past its NUL (the
 * input is copied to a heap block of exactly its length + 1, so ASan
 * sees any overread). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "viewer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int id_ok(const char *id) {
    size_t n = strlen(id);
    if (n < 1 || n > SP_ROUTE_ID_MAX || id[0] == '-')
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = id[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9') || c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *buf = malloc(size + 1);
    if (!buf)
        return 0;
    memcpy(buf, data, size);
    buf[size] = '\0';
    const char *method = "GET", *uri = buf;
    char *sp = memchr(buf, ' ', size);
    if (sp && sp - buf < 16) {
        *sp = '\0';
        method = buf;
        uri = sp + 1;
    }
    /* the URI alone in a block of its own length */
    size_t un = strlen(uri);
    char *u = malloc(un + 1);
    if (!u) {
        free(buf);
        return 0;
    }
    memcpy(u, uri, un + 1);
    sp_route r;
    int st = sp_route_parse(method, u, &r);
    if (st != 200 && st != 400 && st != 404 && st != 405 && st != 414)
        abort();
    if (st == 200) {
        if (r.kind < SP_ROUTE_INDEX || r.kind > SP_ROUTE_ASSOC)
            abort();
        /* no "..", percent-escape or control byte in the path; the
         * query may hold ".." inside a feature name */
        size_t pn = strcspn(u, "?");
        if (un > SP_ROUTE_MAX_URI || u[0] != '/' || strchr(u, '%'))
            abort();
        for (size_t i = 0; i < pn; i++)
            if ((unsigned char)u[i] < 0x20 ||
                (u[i] == '.' && i + 1 < pn && u[i + 1] == '.'))
                abort();
        bool need_id = r.kind != SP_ROUTE_INDEX &&
                       r.kind != SP_ROUTE_API_SLIDES &&
                       r.kind != SP_ROUTE_STATIC;
        if (need_id && !id_ok(r.id))
            abort();
        if (r.kind == SP_ROUTE_TILE &&
            (r.level < 0 || r.level > 62 || r.col < 0 || r.row < 0 ||
             (strcmp(r.ext, "jpeg") && strcmp(r.ext, "png") &&
              strcmp(r.ext, "webp"))))
            abort();
        if (r.has_region && (r.w < 1 || r.h < 1 || r.x < 0 || r.y < 0))
            abort();
        if (memchr(r.version, '\0', sizeof r.version) == NULL ||
            memchr(r.feature, '\0', sizeof r.feature) == NULL ||
            memchr(r.name, '\0', sizeof r.name) == NULL)
            abort();
    }
    free(u);
    free(buf);
    return 0;
}
