/* sp_error: one-line error records; the first error set sticks. */
#include "util.h"

#include <stdio.h>
#include <string.h>

bool sp_error_setv(sp_error *err, sp_errcode code, const char *file,
                   const char *fmt, va_list ap) {
    if (!err || err->code != SP_OK)
        return false;
    err->code = code == SP_OK ? SP_ERR_INTERNAL : code;
    size_t n = 0;
    if (file) {
        int k = snprintf(err->msg, sizeof err->msg, "%s: ", file);
        n = k < 0 ? 0 : (size_t)k;
        if (n >= sizeof err->msg)
            n = sizeof err->msg - 1;
    }
    vsnprintf(err->msg + n, sizeof err->msg - n, fmt, ap);
    for (char *p = err->msg; *p; p++)
        if (*p == '\n' || *p == '\r' || *p == '\t')
            *p = ' ';
    /* trim trailing spaces left by folded newlines */
    size_t len = strlen(err->msg);
    while (len > 0 && err->msg[len - 1] == ' ')
        err->msg[--len] = '\0';
    return false;
}

bool sp_error_set(sp_error *err, sp_errcode code, const char *file,
                  const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    sp_error_setv(err, code, file, fmt, ap);
    va_end(ap);
    return false;
}

bool sp_error_errno(sp_error *err, sp_errcode code, const char *file,
                    int errnum, const char *what) {
    return sp_error_set(err, code, file, "%s: %s", what, strerror(errnum));
}

void sp_error_clear(sp_error *err) {
    if (err) {
        err->code = SP_OK;
        err->msg[0] = '\0';
    }
}

const char *sp_errcode_name(sp_errcode code) {
    switch (code) {
    case SP_OK: return "ok";
    case SP_ERR_INPUT: return "unreadable";
    case SP_ERR_OUTPUT: return "output";
    case SP_ERR_USAGE: return "usage";
    case SP_ERR_NOMEM: return "out-of-memory";
    case SP_ERR_INTERNAL: return "internal";
    case SP_ERR_NOT_SLIDE: return "not-a-slide";
    case SP_ERR_CANCELLED: return "cancelled";
    }
    return "internal";
}
