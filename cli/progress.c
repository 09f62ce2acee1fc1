/* A terminal progress line, redrawn in place on stderr. */
#include "cli.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct sp_progress {
    char label[64];
    char unit[16];
    int64_t total, done;
    double start, last_draw;
    bool enabled, drawn;
};

bool sp_progress_default(void) { return isatty(STDERR_FILENO) == 1; }

sp_progress *sp_progress_new(const char *label, const char *unit, int64_t total,
                             bool enabled) {
    sp_progress *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    snprintf(p->label, sizeof p->label, "%s", label);
    snprintf(p->unit, sizeof p->unit, "%s", unit);
    p->total = total;
    p->enabled = enabled;
    p->start = sp_now();
    return p;
}

static void draw(sp_progress *p, double now) {
    double el = now - p->start;
    double rate = el > 0 ? (double)p->done / el : 0;
    double eta = rate > 0 ? (double)(p->total - p->done) / rate : -1;
    char eta_s[32], el_s[32];
    sp_format_duration(eta, eta_s, sizeof eta_s);
    sp_format_duration(el, el_s, sizeof el_s);
    int pct = p->total > 0 ? (int)(100 * p->done / p->total) : 0;
    int width = 24, fill = p->total > 0 ? (int)(width * p->done / p->total) : 0;
    char bar[32];
    for (int i = 0; i < width; i++)
        bar[i] = i < fill ? '#' : '.';
    bar[width] = '\0';
    fprintf(stderr, "\r%s [%s] %3d%% %lld/%lld %s  %.0f %s/s  %s  ETA %s\033[K",
            p->label, bar, pct, (long long)p->done, (long long)p->total,
            p->unit, rate, p->unit, el_s, eta_s);
    fflush(stderr);
    p->drawn = true;
    p->last_draw = now;
}

void sp_progress_update(sp_progress *p, int64_t done) {
    if (!p || !p->enabled)
        return;
    p->done = done;
    double now = sp_now();
    if (now - p->last_draw >= 0.1 || done >= p->total)
        draw(p, now);
}

void sp_progress_done(sp_progress *p) {
    if (!p)
        return;
    if (p->enabled && p->drawn) {
        draw(p, sp_now());
        fputc('\n', stderr);
    }
    free(p);
}
