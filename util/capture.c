/* Messages of C libraries that would otherwise print (libtiff's error and
 * warning handlers): kept per thread, so a failing call can quote the
 * library's own cause in its sp_error. */
#include "util.h"

#include <stdio.h>
#include <string.h>

static _Thread_local struct {
    bool set;
    char msg[512];
} captured;

static void store(const char *module, const char *fmt, va_list ap) {
    if (captured.set)
        return; /* the first message since the last clear is the cause */
    size_t n = 0;
    if (module && *module) {
        int k = snprintf(captured.msg, sizeof captured.msg, "%s: ", module);
        n = k < 0 ? 0 : (size_t)k;
        if (n >= sizeof captured.msg)
            n = sizeof captured.msg - 1;
    }
    vsnprintf(captured.msg + n, sizeof captured.msg - n, fmt, ap);
    for (char *p = captured.msg; *p; p++)
        if (*p == '\n' || *p == '\r' || *p == '\t')
            *p = ' ';
    captured.set = true;
}

void sp_capture_message(const char *module, const char *fmt, va_list ap) {
    store(module, fmt, ap);
}

static void store_text(const char *module, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    store(module, fmt, ap);
    va_end(ap);
}

void sp_capture_text(const char *module, const char *text) {
    store_text(module, "%s", text ? text : "");
}

void sp_capture_discard(const char *module, const char *fmt, va_list ap) {
    (void)module;
    (void)fmt;
    (void)ap;
}

void sp_capture_clear(void) { captured.set = false; }

const char *sp_captured(void) { return captured.set ? captured.msg : NULL; }
