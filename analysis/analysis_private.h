/* analysis private header: lookup tables shared by the feature files. */
#ifndef SP_ANALYSIS_PRIVATE_H
#define SP_ANALYSIS_PRIVATE_H

#include "analysis.h"

typedef struct {
    double od[256];   /* -log10(max(v, 1) / 255) */
    double hed[3][3]; /* inverse of sp_ruifrok_rgb_from_hed: OD row x hed
                         gives (H, E, DAB) */
    double h[3][256]; /* od[v] * hed[c][0], per channel c */
    double e[3][256]; /* od[v] * hed[c][1] */
} sp__stain_tables;

/* The tables, built once (thread-safe) on first use. Never NULL. */
const sp__stain_tables *sp__stain_tables_get(void);

/* 8-bit saturation: floor(255 * (max - min) / max), 0 for black. */
static inline unsigned sp__sat8(unsigned r, unsigned g, unsigned b) {
    unsigned mx = r > g ? r : g, mn = r < g ? r : g;
    mx = mx > b ? mx : b;
    mn = mn < b ? mn : b;
    return mx ? (mx - mn) * 255u / mx : 0u;
}

/* Pen-ink rule of FEATURES.md (branch-free: it runs on every pixel). */
static inline bool sp__is_pen(int r, int g, int b) {
    int mx = r > g ? r : g, mn = r < g ? r : g;
    mx = mx > b ? mx : b;
    mn = mn < b ? mn : b;
    /* blue, green, cyan, yellow inks: green passes more than red or blue */
    int chroma = (mn <= 200) & ((g - r >= 30) | (g - b >= 30));
    int blue = (b - r >= 60) & (b - g >= 60) & (g + 5 >= r); /* pure blue */
    int black = (mx < 40) & (mx - mn < 25);
    return (chroma | blue | black) != 0;
}

#endif
