/* Clocks, core counts, strict number parsing, the library version list. */
#include "util.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

void sp_lib_versions_add(sp_lib_versions *l, const char *name,
                         bool compile_time, const char *fmt, ...) {
    if (l->n >= SP_LIBS_MAX)
        return;
    sp_lib_version *v = &l->lib[l->n++];
    v->name = name;
    v->compile_time = compile_time;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(v->version, sizeof v->version, fmt, ap);
    va_end(ap);
}

void sp_openmp_sleep_when_idle(char **argv) {
    /* a preloaded library means a tool holds this process (valgrind's
     * core, a profiler's shim), and it may not follow an exec: valgrind
     * refuses to run its own copy of the program directly */
    const char *pre = getenv("LD_PRELOAD");
    if (getenv("OMP_WAIT_POLICY") || (pre && *pre) ||
        setenv("OMP_WAIT_POLICY", "PASSIVE", 1))
        return;
    execv("/proc/self/exe", argv);
    /* no exec (no /proc): carry on as started, libgomp spinning; the
     * variable stays for the children, which fork from this process */
}

double sp_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

double sp_wall_clock(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void sp_format_utc(double t, char out[32]) {
    time_t s = (time_t)floor(t);
    struct tm tm;
    if (!isfinite(t) || !gmtime_r(&s, &tm)) {
        snprintf(out, 32, "unknown");
        return;
    }
    strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

void sp_format_duration(double s, char *out, size_t n) {
    if (!(s >= 0) || s > 359999)
        snprintf(out, n, "--:--");
    else if (s >= 3600)
        snprintf(out, n, "%d:%02d:%02d", (int)s / 3600, ((int)s / 60) % 60,
                 (int)s % 60);
    else
        snprintf(out, n, "%d:%02d", (int)s / 60, (int)s % 60);
}

int sp_default_threads(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

bool sp_parse_double(const char *s, double *out) {
    if (!s || !*s)
        return false;
    char *end = NULL;
    errno = 0;
    double v = strtod(s, &end);
    while (end && (*end == ' ' || *end == '\t'))
        end++;
    if (errno != 0 || end == s || *end != '\0' || !isfinite(v))
        return false;
    *out = v;
    return true;
}

bool sp_parse_int64(const char *s, int64_t *out) {
    if (!s || !*s)
        return false;
    char *end = NULL;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0')
        return false;
    *out = (int64_t)v;
    return true;
}

void *sp_big_alloc(size_t n) {
    const size_t huge = (size_t)2 << 20;
    if (n < 2 * huge)
        return malloc(n ? n : 1);
    size_t r = (n + huge - 1) / huge * huge;
    void *p = aligned_alloc(huge, r);
#ifdef MADV_HUGEPAGE
    if (p)
        madvise(p, r, MADV_HUGEPAGE); /* a hint: failure is harmless */
#endif
    return p;
}

uint64_t sp_fnv1a(uint64_t h, const void *data, size_t n) {
    const unsigned char *p = data;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= UINT64_C(0x100000001b3);
    }
    return h;
}

char *sp_slide_id(const char *path) {
    const char *base = sp_basename(path);
    size_t n = strlen(base);
    while (n && base[n - 1] == '/')
        n--;
    const char *dot = NULL;
    for (size_t i = 1; i < n; i++)
        if (base[i] == '.')
            dot = base + i;
    if (dot)
        n = (size_t)(dot - base);
    if (n > 200)
        n = 200;
    char *id = malloc(n + 16);
    if (!id)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        char c = base[i];
        id[i] = isalnum((unsigned char)c) || c == '.' || c == '_' || c == '-'
                    ? c
                    : '_';
    }
    id[n] = '\0';
    if (!n)
        strcpy(id, "slide");
    if (id[0] == '.')
        id[0] = '_';
    return id;
}
