/* slidepipe query: filter, select, order, count and summarise the tile
 * tables of slidepipe HDF5 files, streaming one block of rows at a time. */
#include "cli.h"

#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "store.h"

#define CMD "query"
#define TABLE_PREVIEW 1000 /* rows buffered to size table columns */

static void help(FILE *f) {
    fprintf(
        f,
        "usage: slidepipe query [OPTIONS] FILE_OR_DIR...\n"
        "\n"
        "Filter and summarise the per-tile tables of slidepipe HDF5 files: "
        "one\n"
        "file, many, a folder of them (its *.h5 files, not recursive; cohort\n"
        "indexes inside are skipped) or a cohort index (slidepipe index).\n"
        "Columns: slide (the slide's file name), x, y (level-0 top-left of "
        "the\n"
        "tile) and every feature column of the files.\n"
        "\n"
        "Options:\n"
        "  -w, --where EXPR     keep rows where EXPR holds, e.g.\n"
        "                       'tissue_fraction > 0.5 and not (blur < 80 or\n"
        "                       pen_fraction > 0.01)': comparisons < <= > >=\n"
        "                       == != between columns and numbers, and, or,\n"
        "                       not, parentheses. NaN compares false (except\n"
        "                       with !=), so 'not blur > 80' keeps NaN blur.\n"
        "  -s, --select COLS    comma-separated columns to print (default:\n"
        "                       slide, x, y and every feature)\n"
        "  -f, --format FMT     table (aligned), csv (RFC 4180 quoting), tsv,\n"
        "                       json (JSON Lines: one object per line, NaN as\n"
        "                       null). Default: table on a terminal, else "
        "tsv.\n"
        "                       Text formats write NaN as 'NaN'.\n"
        "  -n, --limit N        stop after N rows\n"
        "  -o, --order-by 'COL [asc|desc]'\n"
        "                       sort rows by a column (NaN last); with "
        "--limit\n"
        "                       only the best N rows are held in memory,\n"
        "                       without it every matching row is\n"
        "      --desc           same as 'COL desc'\n"
        "  -c, --count          print the number of matching rows per slide\n"
        "                       and the total (slide '(total)'; in JSON slide\n"
        "                       null)\n"
        "      --stats          per slide and overall ('(all)'; in JSON "
        "null):\n"
        "                       count of non-NaN values, mean, min, max of\n"
        "                       each selected feature over matching rows\n"
        "  -h, --help           show this help\n"
        "\n"
        "Rows come out file by file, each in stored order. Memory does not\n"
        "grow with the number of rows except with --order-by and no --limit.\n"
        "Exit status: 0 ok, 1 when any file could not be read (the others\n"
        "are still processed), 2 on a usage error (bad expression, unknown\n"
        "column).\n");
}

/* ---- small vectors ------------------------------------------------------ */

typedef struct {
    char **v;
    size_t n, cap;
} strvec;

static bool strvec_push(strvec *s, const char *x) {
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 16;
        char **v = realloc(s->v, cap * sizeof *v);
        if (!v)
            return false;
        s->v = v;
        s->cap = cap;
    }
    if (!(s->v[s->n] = strdup(x)))
        return false;
    s->n++;
    return true;
}

static void strvec_free(strvec *s) {
    for (size_t i = 0; i < s->n; i++)
        free(s->v[i]);
    free(s->v);
    s->v = NULL;
    s->n = s->cap = 0;
}

/* ---- cells and output --------------------------------------------------- */

enum { FMT_TABLE, FMT_CSV, FMT_TSV, FMT_JSON };
typedef enum { V_STR, V_I64, V_F32, V_F64, V_NULL } vtype;

typedef struct {
    vtype t;
    const char *s;
    int64_t i;
    double d;
} cell;

static void fmt_f32(float v, char *buf, size_t n) {
    if (isnan(v)) {
        snprintf(buf, n, "NaN");
        return;
    }
    for (int prec = 6; prec <= 9; prec++) {
        snprintf(buf, n, "%.*g", prec, (double)v);
        if (strtof(buf, NULL) == v)
            return;
    }
}

static void fmt_f64(double v, char *buf, size_t n) {
    if (isnan(v)) {
        snprintf(buf, n, "NaN");
        return;
    }
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(buf, n, "%.*g", prec, v);
        if (strtod(buf, NULL) == v)
            return;
    }
}

static void cell_text(const cell *c, char *buf, size_t n) {
    switch (c->t) {
    case V_STR: snprintf(buf, n, "%s", c->s); break;
    case V_I64: snprintf(buf, n, "%lld", (long long)c->i); break;
    case V_F32: fmt_f32((float)c->d, buf, n); break;
    case V_F64: fmt_f64(c->d, buf, n); break;
    case V_NULL: snprintf(buf, n, "NaN"); break;
    }
}

typedef struct {
    int format;
    FILE *out;
    size_t ncol;
    char **names;
    bool *right; /* right-align in tables (numbers) */
    bool begun;
    /* table: preview rows, then fixed widths */
    char **preview; /* rows x ncol strings */
    size_t npreview;
    size_t *width;
    bool widths_fixed;
    sp_buf line;
} sink;

static bool sink_init(sink *s, int format, const char *const *names,
                      const bool *right, size_t ncol) {
    memset(s, 0, sizeof *s);
    s->format = format;
    s->out = stdout;
    s->ncol = ncol;
    sp_buf_init(&s->line);
    s->names = calloc(ncol, sizeof *s->names);
    s->right = calloc(ncol, sizeof *s->right);
    s->width = calloc(ncol, sizeof *s->width);
    if (!s->names || !s->right || !s->width)
        return false;
    for (size_t i = 0; i < ncol; i++) {
        if (!(s->names[i] = strdup(names[i])))
            return false;
        s->right[i] = right[i];
        s->width[i] = strlen(names[i]);
    }
    return true;
}

static void put_csv_field(sp_buf *b, const char *s) {
    if (strpbrk(s, ",\"\r\n") == NULL) {
        sp_buf_puts(b, s);
        return;
    }
    sp_buf_puts(b, "\"");
    for (const char *p = s; *p; p++) {
        if (*p == '"')
            sp_buf_puts(b, "\"\"");
        else
            sp_buf_append(b, p, 1);
    }
    sp_buf_puts(b, "\"");
}

static void put_tsv_field(sp_buf *b, const char *s) {
    for (const char *p = s; *p; p++) {
        char c = (*p == '\t' || *p == '\n' || *p == '\r') ? ' ' : *p;
        sp_buf_append(b, &c, 1);
    }
}

static void table_line(sink *s, char *const *cells) {
    sp_buf_reset(&s->line);
    for (size_t i = 0; i < s->ncol; i++) {
        size_t len = strlen(cells[i]);
        size_t pad = s->width[i] > len ? s->width[i] - len : 0;
        if (i)
            sp_buf_puts(&s->line, "  ");
        if (s->right[i])
            for (size_t k = 0; k < pad; k++)
                sp_buf_puts(&s->line, " ");
        sp_buf_puts(&s->line, cells[i]);
        if (!s->right[i] && i + 1 < s->ncol)
            for (size_t k = 0; k < pad; k++)
                sp_buf_puts(&s->line, " ");
    }
    sp_buf_puts(&s->line, "\n");
    fwrite(s->line.data, 1, s->line.len, s->out);
}

static void table_flush_preview(sink *s) {
    if (s->widths_fixed)
        return;
    s->widths_fixed = true;
    table_line(s, s->names);
    for (size_t r = 0; r < s->npreview; r++) {
        table_line(s, s->preview + r * s->ncol);
        for (size_t i = 0; i < s->ncol; i++)
            free(s->preview[r * s->ncol + i]);
    }
    free(s->preview);
    s->preview = NULL;
    s->npreview = 0;
}

static void sink_begin(sink *s) {
    if (s->begun)
        return;
    s->begun = true;
    if (s->format == FMT_CSV || s->format == FMT_TSV) {
        sp_buf_reset(&s->line);
        for (size_t i = 0; i < s->ncol; i++) {
            if (i)
                sp_buf_puts(&s->line, s->format == FMT_CSV ? "," : "\t");
            if (s->format == FMT_CSV)
                put_csv_field(&s->line, s->names[i]);
            else
                put_tsv_field(&s->line, s->names[i]);
        }
        sp_buf_puts(&s->line, "\n");
        fwrite(s->line.data, 1, s->line.len, s->out);
    }
}

/* false when out of memory */
static bool sink_row(sink *s, const cell *cells) {
    sink_begin(s);
    char text[512];
    sp_buf *b = &s->line;
    if (s->format == FMT_TABLE) {
        if (s->widths_fixed) {
            char *row[256];
            char **cellsv =
                s->ncol <= 256 ? row : calloc(s->ncol, sizeof(char *));
            if (!cellsv)
                return false;
            bool ok = true;
            for (size_t i = 0; i < s->ncol; i++) {
                cell_text(&cells[i], text, sizeof text);
                if (!(cellsv[i] = strdup(text)))
                    ok = false;
            }
            if (ok)
                table_line(s, cellsv);
            for (size_t i = 0; i < s->ncol; i++)
                free(cellsv[i]);
            if (cellsv != row)
                free(cellsv);
            return ok;
        }
        char **p = realloc(s->preview, (s->npreview + 1) * s->ncol * sizeof *p);
        if (!p)
            return false;
        s->preview = p;
        char **row = p + s->npreview * s->ncol;
        for (size_t i = 0; i < s->ncol; i++) {
            cell_text(&cells[i], text, sizeof text);
            if (!(row[i] = strdup(text))) {
                for (size_t k = 0; k < i; k++)
                    free(row[k]);
                return false;
            }
            size_t len = strlen(text);
            if (len > s->width[i])
                s->width[i] = len;
        }
        s->npreview++;
        if (s->npreview >= TABLE_PREVIEW)
            table_flush_preview(s);
        return true;
    }
    sp_buf_reset(b);
    if (s->format == FMT_JSON) {
        sp_buf_puts(b, "{");
        for (size_t i = 0; i < s->ncol; i++) {
            if (i)
                sp_buf_puts(b, ",");
            sp_json_escape(b, s->names[i]);
            sp_buf_puts(b, ":");
            const cell *c = &cells[i];
            if (c->t == V_STR)
                sp_json_escape(b, c->s);
            else if (c->t == V_NULL ||
                     ((c->t == V_F32 || c->t == V_F64) && !isfinite(c->d)))
                sp_buf_puts(b, "null");
            else {
                cell_text(c, text, sizeof text);
                sp_buf_puts(b, text);
            }
        }
        sp_buf_puts(b, "}\n");
    } else {
        for (size_t i = 0; i < s->ncol; i++) {
            if (i)
                sp_buf_puts(b, s->format == FMT_CSV ? "," : "\t");
            cell_text(&cells[i], text, sizeof text);
            if (s->format == FMT_CSV)
                put_csv_field(b, text);
            else
                put_tsv_field(b, text);
        }
        sp_buf_puts(b, "\n");
    }
    if (b->oom)
        return false;
    fwrite(b->data, 1, b->len, s->out);
    return true;
}

static void sink_end(sink *s) {
    sink_begin(s);
    if (s->format == FMT_TABLE)
        table_flush_preview(s);
    fflush(s->out);
}

static void sink_free(sink *s) {
    if (s->preview) {
        for (size_t i = 0; i < s->npreview * s->ncol; i++)
            free(s->preview[i]);
        free(s->preview);
    }
    if (s->names)
        for (size_t i = 0; i < s->ncol; i++)
            free(s->names[i]);
    free(s->names);
    free(s->right);
    free(s->width);
    sp_buf_free(&s->line);
}

/* ---- the query ---------------------------------------------------------- */

typedef enum { C_SLIDE, C_X, C_Y, C_FEAT } col_kind;

typedef struct {
    col_kind kind;
    int need; /* index into q->need for C_FEAT */
} colref;

typedef struct {
    double dkey; /* the order column's value */
    uint64_t seq;
    uint32_t slide;
    int64_t x, y;
} entry_hdr;

typedef struct {
    int64_t count;
    double sum;
    float min, max;
} acc;

typedef struct {
    /* options */
    sp_expr *where;
    colref *sel;
    char **sel_names;
    size_t nsel;
    int format;
    int64_t limit; /* -1: none */
    bool ordered, desc;
    colref order;
    bool count, stats;
    /* distinct feature columns needed, by name */
    strvec need;
    int *where_need; /* need indices the filter reads */
    size_t nwhere_need;
    int *out_need; /* need indices the output reads */
    size_t nout_need;
    colref *where_cols; /* per expression column */
    bool coords_in_where, coords_needed;
    bool validated;
    /* per file */
    int *fidx; /* file column of need[i] */
    float **buf;
    bool *have; /* buf[i] holds the current block */
    size_t bufrows;
    int64_t *xy, *xs, *ys;
    uint8_t *mask;
    bool have_coords;
    sp_expr_input *in;
    /* results */
    int status;
    int64_t emitted, total;
    bool stop;
    strvec slides; /* slide names by slide index */
    sink out;
    bool out_ready;
    /* stats: per selected feature (stat_need[k] indexes need) */
    int *stat_need;
    const char **stat_names;
    size_t nstat;
    acc *slide_acc, *all_acc;
    /* ordering */
    unsigned char *pool; /* entries: hdr + nsel floats */
    size_t esize, npool, cappool;
    size_t *heap;
    size_t nheap;
    uint64_t seq;
} query;

static bool is_desc_word(const char *s, size_t n) {
    return n == 4 && strncasecmp(s, "desc", 4) == 0;
}

static bool add_need(query *q, const char *name, int *idx) {
    for (size_t i = 0; i < q->need.n; i++)
        if (strcmp(q->need.v[i], name) == 0) {
            *idx = (int)i;
            return true;
        }
    if (!strvec_push(&q->need, name))
        return false;
    *idx = (int)q->need.n - 1;
    return true;
}

static colref ref_of(const char *name) {
    if (strcmp(name, "slide") == 0)
        return (colref){C_SLIDE, -1};
    if (strcmp(name, "x") == 0)
        return (colref){C_X, -1};
    if (strcmp(name, "y") == 0)
        return (colref){C_Y, -1};
    return (colref){C_FEAT, -1};
}

/* "slide, x, y, a, b, ..." for messages */
static void list_columns(const sp_store_meta *m, char *buf, size_t n) {
    size_t at = (size_t)snprintf(buf, n, "slide, x, y");
    for (size_t i = 0; i < m->n_columns && at < n; i++)
        at += (size_t)snprintf(buf + at, n - at, ", %s", m->columns[i]);
}

/* Check every column name against the first slide file and set up the
 * output. Returns an exit code (0 = fine). */
static int validate(query *q, const sp_store_reader *r) {
    const sp_store_meta *m = sp_store_reader_meta(r);
    char cols[4096];
    list_columns(m, cols, sizeof cols);
    /* default selection: every column */
    if (!q->sel) {
        q->nsel = 3 + m->n_columns;
        q->sel = calloc(q->nsel, sizeof *q->sel);
        q->sel_names = calloc(q->nsel, sizeof *q->sel_names);
        if (!q->sel || !q->sel_names)
            goto oom;
        const char *fixed[3] = {"slide", "x", "y"};
        for (size_t i = 0; i < q->nsel; i++)
            if (!(q->sel_names[i] =
                      strdup(i < 3 ? fixed[i] : m->columns[i - 3])))
                goto oom;
    }
    for (size_t i = 0; i < q->nsel; i++) {
        q->sel[i] = ref_of(q->sel_names[i]);
        if (q->sel[i].kind != C_FEAT)
            continue;
        if (sp_store_column_index(r, q->sel_names[i]) < 0) {
            sp_cli_error(CMD, "--select: unknown column '%s' (columns: %s)",
                         q->sel_names[i], cols);
            return SP_EXIT_USAGE;
        }
        if (!add_need(q, q->sel_names[i], &q->sel[i].need))
            goto oom;
    }
    if (q->where) {
        size_t n = sp_expr_column_count(q->where);
        q->where_cols = calloc(n ? n : 1, sizeof *q->where_cols);
        if (!q->where_cols)
            goto oom;
        for (size_t i = 0; i < n; i++) {
            const char *c = sp_expr_column(q->where, i);
            colref ref = ref_of(c);
            if (ref.kind == C_SLIDE) {
                sp_cli_error(CMD, "--where: column 'slide' holds text; only "
                                  "numeric columns can be compared");
                return SP_EXIT_USAGE;
            }
            if (ref.kind == C_FEAT) {
                if (sp_store_column_index(r, c) < 0) {
                    sp_cli_error(CMD,
                                 "--where: unknown column '%s' (columns: %s)",
                                 c, cols);
                    return SP_EXIT_USAGE;
                }
                if (!add_need(q, c, &ref.need))
                    goto oom;
            } else {
                q->coords_in_where = true;
            }
            q->where_cols[i] = ref;
        }
    }
    return 0;
oom:
    sp_cli_error(CMD, "out of memory");
    return SP_EXIT_INTERNAL;
}

static int validate_order(query *q, const sp_store_reader *r,
                          const char *order_name) {
    if (!order_name)
        return 0;
    const sp_store_meta *m = sp_store_reader_meta(r);
    char cols[4096];
    list_columns(m, cols, sizeof cols);
    q->order = ref_of(order_name);
    if (q->order.kind == C_SLIDE) {
        sp_cli_error(CMD, "--order-by: cannot order by 'slide' (rows already "
                          "come slide by slide)");
        return SP_EXIT_USAGE;
    }
    if (q->order.kind == C_FEAT) {
        if (sp_store_column_index(r, order_name) < 0) {
            sp_cli_error(CMD, "--order-by: unknown column '%s' (columns: %s)",
                         order_name, cols);
            return SP_EXIT_USAGE;
        }
        if (!add_need(q, order_name, &q->order.need)) {
            sp_cli_error(CMD, "out of memory");
            return SP_EXIT_INTERNAL;
        }
    }
    return 0;
}

static int setup_output(query *q) {
    size_t n = q->nsel;
    const char **names = NULL;
    bool *right = NULL;
    int rc = 0;
    size_t nn = q->need.n ? q->need.n : 1;
    q->where_need = calloc(nn, sizeof *q->where_need);
    q->out_need = calloc(nn + 1, sizeof *q->out_need);
    if (!q->where_need || !q->out_need) {
        sp_cli_error(CMD, "out of memory");
        return SP_EXIT_INTERNAL;
    }
    size_t ne = q->where ? sp_expr_column_count(q->where) : 0;
    for (size_t i = 0; i < ne; i++)
        if (q->where_cols[i].kind == C_FEAT)
            q->where_need[q->nwhere_need++] = q->where_cols[i].need;
    for (size_t i = 0; i < n; i++)
        if (q->sel[i].kind == C_FEAT)
            q->out_need[q->nout_need++] = q->sel[i].need;
    if (q->ordered && q->order.kind == C_FEAT)
        q->out_need[q->nout_need++] = q->order.need;
    if (q->count) {
        static const char *const cn[] = {"slide", "count"};
        static const bool cr[] = {false, true};
        if (!sink_init(&q->out, q->format, cn, cr, 2))
            rc = SP_EXIT_INTERNAL;
        goto done;
    }
    if (q->stats) {
        static const char *const sn[] = {"slide", "column", "count",
                                         "mean",  "min",    "max"};
        static const bool sr[] = {false, false, true, true, true, true};
        if (!sink_init(&q->out, q->format, sn, sr, 6))
            rc = SP_EXIT_INTERNAL;
        /* stats over the selected features */
        q->stat_need = calloc(n ? n : 1, sizeof *q->stat_need);
        q->stat_names = calloc(n ? n : 1, sizeof *q->stat_names);
        if (!q->stat_need || !q->stat_names) {
            rc = SP_EXIT_INTERNAL;
            goto done;
        }
        for (size_t i = 0; i < n; i++)
            if (q->sel[i].kind == C_FEAT) {
                bool dup = false;
                for (size_t k = 0; k < q->nstat; k++)
                    dup |= q->stat_need[k] == q->sel[i].need;
                if (dup)
                    continue;
                q->stat_need[q->nstat] = q->sel[i].need;
                q->stat_names[q->nstat++] = q->sel_names[i];
            }
        q->slide_acc = calloc(q->nstat ? q->nstat : 1, sizeof(acc));
        q->all_acc = calloc(q->nstat ? q->nstat : 1, sizeof(acc));
        if (!q->slide_acc || !q->all_acc)
            rc = SP_EXIT_INTERNAL;
        goto done;
    }
    names = calloc(n ? n : 1, sizeof *names);
    right = calloc(n ? n : 1, sizeof *right);
    if (!names || !right) {
        rc = SP_EXIT_INTERNAL;
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        names[i] = q->sel_names[i];
        right[i] = q->sel[i].kind != C_SLIDE;
    }
    if (!sink_init(&q->out, q->format, names, right, n))
        rc = SP_EXIT_INTERNAL;
    if (q->ordered) {
        q->esize = sizeof(entry_hdr) + n * sizeof(float);
        q->esize = (q->esize + 7) & ~(size_t)7;
    }
done:
    free(names);
    free(right);
    q->out_ready = rc == 0;
    if (rc)
        sp_cli_error(CMD, "out of memory");
    return rc;
}

/* ---- per-file buffers -------------------------------------------------- */

static bool ensure_buffers(query *q, size_t rows) {
    size_t k = q->need.n;
    if (!q->buf) {
        q->buf = calloc(k ? k : 1, sizeof *q->buf);
        q->have = calloc(k ? k : 1, sizeof *q->have);
        q->fidx = calloc(k ? k : 1, sizeof *q->fidx);
        size_t ne = q->where ? sp_expr_column_count(q->where) : 0;
        q->in = calloc(ne ? ne : 1, sizeof *q->in);
        if (!q->buf || !q->have || !q->fidx || !q->in)
            return false;
    }
    if (rows <= q->bufrows)
        return true;
    for (size_t i = 0; i < k; i++) {
        float *b = realloc(q->buf[i], rows * sizeof(float));
        if (!b)
            return false;
        q->buf[i] = b;
    }
    int64_t *xy = realloc(q->xy, rows * 2 * sizeof *xy);
    if (xy)
        q->xy = xy;
    int64_t *xs = realloc(q->xs, rows * sizeof *xs);
    if (xs)
        q->xs = xs;
    int64_t *ys = realloc(q->ys, rows * sizeof *ys);
    if (ys)
        q->ys = ys;
    uint8_t *mk = realloc(q->mask, rows);
    if (mk)
        q->mask = mk;
    if (!xy || !xs || !ys || !mk)
        return false;
    q->bufrows = rows;
    return true;
}

static bool load_column(query *q, sp_store_reader *r, int need, int64_t start,
                        size_t n, sp_error *err) {
    if (q->have[need])
        return true;
    if (!sp_store_read_column(r, q->fidx[need], start, n, q->buf[need], err))
        return false;
    q->have[need] = true;
    return true;
}

/* Load several needed columns at once (inflated in parallel). */
static bool load_columns(query *q, sp_store_reader *r, const int *need,
                         size_t k, int64_t start, size_t n, sp_error *err) {
    int cols[64];
    float *outs[64];
    size_t m = 0;
    for (size_t i = 0; i < k; i++) {
        if (q->have[need[i]])
            continue;
        bool dup = false;
        for (size_t j = 0; j < m; j++)
            dup |= outs[j] == q->buf[need[i]];
        if (dup)
            continue;
        cols[m] = q->fidx[need[i]];
        outs[m++] = q->buf[need[i]];
        if (m == 64 || i + 1 == k) {
            if (!sp_store_read_columns(r, cols, m, start, n, outs, err))
                return false;
            m = 0;
        }
    }
    if (m && !sp_store_read_columns(r, cols, m, start, n, outs, err))
        return false;
    for (size_t i = 0; i < k; i++)
        q->have[need[i]] = true;
    return true;
}

static bool load_coords(query *q, sp_store_reader *r, int64_t start, size_t n,
                        sp_error *err) {
    if (q->have_coords)
        return true;
    if (!sp_store_read_coords(r, start, n, q->xy, err))
        return false;
    for (size_t i = 0; i < n; i++) {
        q->xs[i] = q->xy[2 * i];
        q->ys[i] = q->xy[2 * i + 1];
    }
    q->have_coords = true;
    return true;
}

static cell value_of(const query *q, colref c, size_t row, uint32_t slide) {
    switch (c.kind) {
    case C_SLIDE: return (cell){.t = V_STR, .s = q->slides.v[slide]};
    case C_X: return (cell){.t = V_I64, .i = q->xs[row]};
    case C_Y: return (cell){.t = V_I64, .i = q->ys[row]};
    case C_FEAT:
    default: return (cell){.t = V_F32, .d = q->buf[c.need][row]};
    }
}

/* ---- ordering ------------------------------------------------------------ */

static query *sort_q; /* qsort context (the CLI is single-threaded) */

static entry_hdr *entry_at(const query *q, size_t i) {
    return (entry_hdr *)(q->pool + i * q->esize);
}

/* true when a comes before b in the output */
static bool before(const query *q, const entry_hdr *a, const entry_hdr *b) {
    bool an = isnan(a->dkey), bn = isnan(b->dkey);
    if (an != bn)
        return bn; /* NaN last */
    if (!an && a->dkey != b->dkey)
        return q->desc ? a->dkey > b->dkey : a->dkey < b->dkey;
    return a->seq < b->seq;
}

static void heap_sift_down(query *q, size_t i) {
    /* max-heap on "comes later" */
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < q->nheap &&
            before(q, entry_at(q, q->heap[m]), entry_at(q, q->heap[l])))
            m = l;
        if (r < q->nheap &&
            before(q, entry_at(q, q->heap[m]), entry_at(q, q->heap[r])))
            m = r;
        if (m == i)
            return;
        size_t t = q->heap[i];
        q->heap[i] = q->heap[m];
        q->heap[m] = t;
        i = m;
    }
}

static void heap_sift_up(query *q, size_t i) {
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!before(q, entry_at(q, q->heap[p]), entry_at(q, q->heap[i])))
            return;
        size_t t = q->heap[i];
        q->heap[i] = q->heap[p];
        q->heap[p] = t;
        i = p;
    }
}

static void fill_entry(query *q, entry_hdr *e, size_t row, uint32_t slide,
                       double key) {
    e->dkey = key;
    e->seq = q->seq;
    e->slide = slide;
    e->x = q->xs[row];
    e->y = q->ys[row];
    float *v = (float *)(e + 1);
    for (size_t i = 0; i < q->nsel; i++)
        v[i] = q->sel[i].kind == C_FEAT ? q->buf[q->sel[i].need][row] : 0.0f;
}

static bool order_add(query *q, size_t row, uint32_t slide) {
    double key = q->order.kind == C_X   ? (double)q->xs[row]
                 : q->order.kind == C_Y ? (double)q->ys[row]
                                        : (double)q->buf[q->order.need][row];
    q->seq++;
    if (q->limit >= 0) {
        if (q->limit == 0)
            return true;
        if (!q->pool) {
            q->cappool = (size_t)q->limit;
            q->pool = malloc(q->cappool * q->esize);
            q->heap = malloc(q->cappool * sizeof *q->heap);
            if (!q->pool || !q->heap)
                return false;
        }
        if (q->nheap < q->cappool) {
            size_t slot = q->npool++;
            fill_entry(q, entry_at(q, slot), row, slide, key);
            q->heap[q->nheap++] = slot;
            heap_sift_up(q, q->nheap - 1);
            return true;
        }
        entry_hdr probe = {.dkey = key, .seq = q->seq};
        if (!before(q, &probe, entry_at(q, q->heap[0])))
            return true;
        fill_entry(q, entry_at(q, q->heap[0]), row, slide, key);
        heap_sift_down(q, 0);
        return true;
    }
    if (q->npool == q->cappool) {
        size_t cap = q->cappool ? q->cappool * 2 : 1024;
        unsigned char *p = realloc(q->pool, cap * q->esize);
        if (!p)
            return false;
        q->pool = p;
        q->cappool = cap;
    }
    fill_entry(q, entry_at(q, q->npool++), row, slide, key);
    return true;
}

static int cmp_entries(const void *a, const void *b) {
    const entry_hdr *x = entry_at(sort_q, *(const size_t *)a);
    const entry_hdr *y = entry_at(sort_q, *(const size_t *)b);
    if (before(sort_q, x, y))
        return -1;
    if (before(sort_q, y, x))
        return 1;
    return 0;
}

static bool order_emit(query *q) {
    size_t n = q->npool;
    size_t *idx = malloc((n ? n : 1) * sizeof *idx);
    cell *cells = calloc(q->nsel ? q->nsel : 1, sizeof *cells);
    if (!idx || !cells) {
        free(idx);
        free(cells);
        return false;
    }
    for (size_t i = 0; i < n; i++)
        idx[i] = i;
    sort_q = q;
    qsort(idx, n, sizeof *idx, cmp_entries);
    bool ok = true;
    for (size_t k = 0; k < n && ok; k++) {
        const entry_hdr *e = entry_at(q, idx[k]);
        const float *v = (const float *)(e + 1);
        for (size_t i = 0; i < q->nsel; i++) {
            switch (q->sel[i].kind) {
            case C_SLIDE:
                cells[i] = (cell){.t = V_STR, .s = q->slides.v[e->slide]};
                break;
            case C_X: cells[i] = (cell){.t = V_I64, .i = e->x}; break;
            case C_Y: cells[i] = (cell){.t = V_I64, .i = e->y}; break;
            case C_FEAT: cells[i] = (cell){.t = V_F32, .d = v[i]}; break;
            }
        }
        ok = sink_row(&q->out, cells);
    }
    free(idx);
    free(cells);
    return ok;
}

/* ---- stats --------------------------------------------------------------- */

static void acc_add(acc *a, float v) {
    if (isnan(v))
        return;
    if (a->count == 0 || v < a->min)
        a->min = v;
    if (a->count == 0 || v > a->max)
        a->max = v;
    a->count++;
    a->sum += (double)v;
}

static void acc_merge(acc *into, const acc *a) {
    if (a->count == 0)
        return;
    if (into->count == 0 || a->min < into->min)
        into->min = a->min;
    if (into->count == 0 || a->max > into->max)
        into->max = a->max;
    into->count += a->count;
    into->sum += a->sum;
}

static bool stats_emit(query *q, const char *slide, const acc *accs) {
    for (size_t k = 0; k < q->nstat; k++) {
        const acc *a = &accs[k];
        cell c[6] = {
            slide ? (cell){.t = V_STR, .s = slide}
                  : (cell){.t = q->format == FMT_JSON ? V_NULL : V_STR,
                           .s = "(all)"},
            {.t = V_STR, .s = q->stat_names[k]},
            {.t = V_I64, .i = a->count},
            a->count ? (cell){.t = V_F64, .d = a->sum / (double)a->count}
                     : (cell){.t = V_NULL},
            a->count ? (cell){.t = V_F32, .d = a->min} : (cell){.t = V_NULL},
            a->count ? (cell){.t = V_F32, .d = a->max} : (cell){.t = V_NULL}};
        if (!sink_row(&q->out, c))
            return false;
    }
    return true;
}

/* ---- one slide file -------------------------------------------------- */

/* Returns false on a read error in `r` (reported by the caller) or out of
 * memory (err->code SP_ERR_NOMEM). */
static bool run_slide(query *q, sp_store_reader *r, uint32_t slide,
                      sp_error *err) {
    const char *path = sp_store_reader_path(r);
    int64_t rows = sp_store_row_count(r);
    size_t block = sp_store_block_rows(r);
    if (block > 1048576)
        block = 1048576;
    if (!ensure_buffers(q, block))
        return sp_error_set(err, SP_ERR_NOMEM, path, "out of memory");
    for (size_t i = 0; i < q->need.n; i++) {
        q->fidx[i] = sp_store_column_index(r, q->need.v[i]);
        if (q->fidx[i] < 0)
            return sp_error_set(err, SP_ERR_INPUT, path,
                                "no column '%s' in this file", q->need.v[i]);
    }
    bool need_coords_out = false;
    if (!q->count && !q->stats) {
        for (size_t i = 0; i < q->nsel; i++)
            need_coords_out |= q->sel[i].kind == C_X || q->sel[i].kind == C_Y;
        need_coords_out |= q->ordered; /* entries carry x, y */
    }
    int64_t slide_count = 0;
    if (q->stats)
        memset(q->slide_acc, 0, q->nstat * sizeof(acc));
    size_t nwhere = q->where ? sp_expr_column_count(q->where) : 0;
    for (int64_t start = 0; start < rows && !q->stop; start += (int64_t)block) {
        size_t n = (size_t)(rows - start < (int64_t)block ? rows - start
                                                          : (int64_t)block);
        memset(q->have, 0, q->need.n * sizeof *q->have);
        q->have_coords = false;
        size_t matches = n;
        if (q->where) {
            if (q->coords_in_where && !load_coords(q, r, start, n, err))
                return false;
            if (!load_columns(q, r, q->where_need, q->nwhere_need, start, n,
                              err))
                return false;
            for (size_t i = 0; i < nwhere; i++) {
                colref c = q->where_cols[i];
                if (c.kind == C_FEAT) {
                    if (!load_column(q, r, c.need, start, n, err))
                        return false;
                    q->in[i] = (sp_expr_input){.f32 = q->buf[c.need]};
                } else {
                    q->in[i] =
                        (sp_expr_input){.i64 = c.kind == C_X ? q->xs : q->ys};
                }
            }
            if (!sp_expr_eval(q->where, q->in, n, q->mask))
                return sp_error_set(err, SP_ERR_NOMEM, path, "out of memory");
            matches = 0;
            for (size_t i = 0; i < n; i++)
                matches += q->mask[i];
        } else {
            memset(q->mask, 1, n);
        }
        if (matches == 0)
            continue;
        if (q->count) {
            slide_count += (int64_t)matches;
            continue;
        }
        if (q->stats) {
            if (!load_columns(q, r, q->stat_need, q->nstat, start, n, err))
                return false;
            for (size_t k = 0; k < q->nstat; k++) {
                int nd = q->stat_need[k];
                if (!load_column(q, r, nd, start, n, err))
                    return false;
                const float *v = q->buf[nd];
                acc *a = &q->slide_acc[k];
                for (size_t i = 0; i < n; i++)
                    if (q->mask[i])
                        acc_add(a, v[i]);
            }
            continue;
        }
        if (!load_columns(q, r, q->out_need, q->nout_need, start, n, err))
            return false;
        if (q->ordered && q->order.kind == C_FEAT &&
            !load_column(q, r, q->order.need, start, n, err))
            return false;
        if (need_coords_out && !load_coords(q, r, start, n, err))
            return false;
        cell cells[64];
        cell *cv = q->nsel <= 64 ? cells : malloc(q->nsel * sizeof *cv);
        if (!cv)
            return sp_error_set(err, SP_ERR_NOMEM, path, "out of memory");
        bool ok = true;
        for (size_t i = 0; i < n && ok; i++) {
            if (!q->mask[i])
                continue;
            if (q->ordered) {
                ok = order_add(q, i, slide);
                continue;
            }
            for (size_t c = 0; c < q->nsel; c++)
                cv[c] = value_of(q, q->sel[c], i, slide);
            ok = sink_row(&q->out, cv);
            if (ok && q->limit >= 0 && ++q->emitted >= q->limit) {
                q->stop = true;
                break;
            }
        }
        if (cv != cells)
            free(cv);
        if (!ok)
            return sp_error_set(err, SP_ERR_NOMEM, path, "out of memory");
    }
    if (q->count) {
        cell c[2] = {{.t = V_STR, .s = q->slides.v[slide]},
                     {.t = V_I64, .i = slide_count}};
        q->total += slide_count;
        if (!sink_row(&q->out, c))
            return sp_error_set(err, SP_ERR_NOMEM, path, "out of memory");
    }
    if (q->stats) {
        for (size_t k = 0; k < q->nstat; k++)
            acc_merge(&q->all_acc[k], &q->slide_acc[k]);
        if (!stats_emit(q, q->slides.v[slide], q->slide_acc))
            return sp_error_set(err, SP_ERR_NOMEM, path, "out of memory");
    }
    return true;
}

static void note_error(query *q, const sp_error *err) {
    int code = sp_cli_report(CMD, err);
    if (code > q->status)
        q->status = code == SP_EXIT_USAGE ? SP_EXIT_INPUT : code;
}

/* Open `path` and run it (a cohort runs each member). Returns an exit code
 * that ends the whole command (usage errors, out of memory), else 0. */
static int run_path(query *q, const char *path, bool from_dir,
                    const char *order_name) {
    sp_error err = {0};
    sp_store_reader *r = NULL;
    if (q->stop)
        return 0;
    if (!sp_store_open(path, &r, &err)) {
        note_error(q, &err);
        return 0;
    }
    if (sp_store_reader_kind(r) == SP_STORE_COHORT) {
        int rc = 0;
        if (!from_dir) {
            for (size_t i = 0; i < sp_store_member_count(r) && rc == 0; i++) {
                const char *mp = sp_store_member_path(r, i);
                sp_store_reader *mr = NULL;
                sp_error e2 = {0};
                /* a cohort inside a cohort is not followed */
                if (!sp_store_open(mp, &mr, &e2)) {
                    note_error(q, &e2);
                    continue;
                }
                bool slide = sp_store_reader_kind(mr) == SP_STORE_SLIDE;
                sp_store_close(mr);
                if (slide)
                    rc = run_path(q, mp, true, order_name);
            }
        }
        sp_store_close(r);
        return rc;
    }
    if (!q->validated) {
        int rc = validate(q, r);
        if (rc == 0)
            rc = validate_order(q, r, order_name);
        if (rc == 0)
            rc = setup_output(q);
        if (rc != 0) {
            sp_store_close(r);
            return rc;
        }
        q->validated = true;
    }
    const char *name = sp_store_reader_meta(r)->source_file;
    if (!strvec_push(&q->slides, name)) {
        sp_store_close(r);
        sp_cli_error(CMD, "out of memory");
        return SP_EXIT_INTERNAL;
    }
    bool ok = run_slide(q, r, (uint32_t)(q->slides.n - 1), &err);
    sp_store_close(r);
    if (!ok) {
        if (err.code == SP_ERR_NOMEM) {
            sp_cli_report(CMD, &err);
            return SP_EXIT_INTERNAL;
        }
        note_error(q, &err);
    }
    return 0;
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The *.h5 files of a folder, sorted; hidden files (temporaries) skipped. */
static bool list_dir(const char *dir, strvec *out, sp_error *err) {
    DIR *d = opendir(dir);
    if (!d)
        return sp_error_errno(err, SP_ERR_INPUT, dir, errno, "cannot open");
    strvec names = {0};
    struct dirent *e;
    bool ok = true;
    while ((e = readdir(d)) != NULL) {
        size_t len = strlen(e->d_name);
        if (e->d_name[0] == '.' || len < 4 ||
            strcmp(e->d_name + len - 3, ".h5") != 0)
            continue;
        if (!strvec_push(&names, e->d_name)) {
            ok = false;
            break;
        }
    }
    closedir(d);
    if (!ok) {
        strvec_free(&names);
        return sp_error_set(err, SP_ERR_NOMEM, dir, "out of memory");
    }
    qsort(names.v, names.n, sizeof *names.v, cmp_str);
    size_t dl = strlen(dir);
    bool slash = dl > 0 && dir[dl - 1] == '/';
    for (size_t i = 0; i < names.n && ok; i++) {
        size_t n = dl + strlen(names.v[i]) + 2;
        char *p = malloc(n);
        if (!p) {
            ok = false;
            break;
        }
        snprintf(p, n, "%s%s%s", dir, slash ? "" : "/", names.v[i]);
        ok = strvec_push(out, p);
        free(p);
    }
    strvec_free(&names);
    if (!ok)
        return sp_error_set(err, SP_ERR_NOMEM, dir, "out of memory");
    return true;
}

static bool parse_select(query *q, const char *arg) {
    strvec v = {0};
    const char *p = arg;
    while (true) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        while (len && (*p == ' ' || *p == '\t'))
            p++, len--;
        while (len && (p[len - 1] == ' ' || p[len - 1] == '\t'))
            len--;
        if (len == 0) {
            strvec_free(&v);
            sp_cli_error(CMD, "--select: empty column name in '%s'", arg);
            return false;
        }
        char *name = strndup(p, len);
        if (!name || !strvec_push(&v, name)) {
            free(name);
            strvec_free(&v);
            sp_cli_error(CMD, "out of memory");
            return false;
        }
        free(name);
        if (!comma)
            break;
        p = comma + 1;
    }
    q->sel_names = v.v;
    q->nsel = v.n;
    q->sel = calloc(v.n, sizeof *q->sel);
    return q->sel != NULL;
}

static void query_free(query *q) {
    sp_expr_free(q->where);
    free(q->sel);
    if (q->sel_names)
        for (size_t i = 0; i < q->nsel; i++)
            free(q->sel_names[i]);
    free(q->sel_names);
    strvec_free(&q->need);
    free(q->where_cols);
    free(q->where_need);
    free(q->out_need);
    free(q->fidx);
    free(q->have);
    free(q->in);
    free(q->xy);
    free(q->xs);
    free(q->ys);
    free(q->mask);
    strvec_free(&q->slides);
    if (q->out_ready)
        sink_free(&q->out);
    free(q->stat_need);
    free(q->stat_names);
    free(q->slide_acc);
    free(q->all_acc);
    free(q->pool);
    free(q->heap);
}

int sp_cmd_query(int argc, char **argv) {
    enum { OPT_STATS = 1000, OPT_DESC };
    static const struct option opts[] = {
        {"where", required_argument, NULL, 'w'},
        {"select", required_argument, NULL, 's'},
        {"format", required_argument, NULL, 'f'},
        {"limit", required_argument, NULL, 'n'},
        {"order-by", required_argument, NULL, 'o'},
        {"desc", no_argument, NULL, OPT_DESC},
        {"count", no_argument, NULL, 'c'},
        {"stats", no_argument, NULL, OPT_STATS},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    query q = {.limit = -1, .format = -1};
    int rc = SP_EXIT_OK;
    char *order_name = NULL;
    const char *where_text = NULL;
    strvec inputs = {0};
    size_t nbuf_cols = 0;
    int c;
    opterr = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, ":w:s:f:n:o:ch", opts, NULL)) != -1) {
        switch (c) {
        case 'w': where_text = optarg; break;
        case 's':
            if (q.sel) {
                sp_cli_error(CMD, "--select given twice");
                rc = SP_EXIT_USAGE;
                goto out;
            }
            if (!parse_select(&q, optarg)) {
                rc = SP_EXIT_USAGE;
                goto out;
            }
            break;
        case 'f':
            if (strcmp(optarg, "table") == 0)
                q.format = FMT_TABLE;
            else if (strcmp(optarg, "csv") == 0)
                q.format = FMT_CSV;
            else if (strcmp(optarg, "tsv") == 0)
                q.format = FMT_TSV;
            else if (strcmp(optarg, "json") == 0)
                q.format = FMT_JSON;
            else {
                sp_cli_error(CMD,
                             "--format: expected table, csv, tsv or json, "
                             "got '%s'",
                             optarg);
                rc = SP_EXIT_USAGE;
                goto out;
            }
            break;
        case 'n':
            if (!sp_cli_parse_int(CMD, "--limit", optarg, 0, INT32_MAX,
                                  &q.limit)) {
                rc = SP_EXIT_USAGE;
                goto out;
            }
            break;
        case 'o': {
            const char *s = optarg;
            while (*s == ' ')
                s++;
            size_t len = strcspn(s, " \t");
            const char *rest = s + len;
            while (*rest == ' ' || *rest == '\t')
                rest++;
            size_t rl = strcspn(rest, " \t");
            const char *tail = rest + rl;
            while (*tail == ' ' || *tail == '\t')
                tail++;
            if (len == 0 || *tail ||
                (rl && !is_desc_word(rest, rl) &&
                 !(rl == 3 && strncasecmp(rest, "asc", 3) == 0))) {
                sp_cli_error(CMD,
                             "--order-by: expected 'COLUMN', 'COLUMN asc' "
                             "or 'COLUMN desc', got '%s'",
                             optarg);
                rc = SP_EXIT_USAGE;
                goto out;
            }
            free(order_name);
            order_name = strndup(s, len);
            q.ordered = true;
            if (rl)
                q.desc = is_desc_word(rest, rl);
            break;
        }
        case OPT_DESC: q.desc = true; break;
        case 'c': q.count = true; break;
        case OPT_STATS: q.stats = true; break;
        case 'h': help(stdout); goto out;
        case ':':
            sp_cli_error(CMD,
                         "option '%s' needs a value (see 'slidepipe "
                         "query --help')",
                         argv[optind - 1]);
            rc = SP_EXIT_USAGE;
            goto out;
        default:
            sp_cli_error(CMD,
                         "unknown option '%s' (see 'slidepipe query "
                         "--help')",
                         argv[optind - 1]);
            rc = SP_EXIT_USAGE;
            goto out;
        }
    }
    if (optind >= argc) {
        sp_cli_error(CMD, "no file or folder given (see 'slidepipe query "
                          "--help')");
        rc = SP_EXIT_USAGE;
        goto out;
    }
    if (q.count + q.stats + (q.ordered || q.limit >= 0) > 1) {
        sp_cli_error(CMD, "--count, --stats and --order-by/--limit cannot be "
                          "combined");
        rc = SP_EXIT_USAGE;
        goto out;
    }
    if (q.desc && !q.ordered) {
        sp_cli_error(CMD, "--desc needs --order-by");
        rc = SP_EXIT_USAGE;
        goto out;
    }
    if (where_text) {
        sp_error err = {0};
        if (!sp_expr_parse(where_text, &q.where, &err)) {
            sp_cli_error(CMD, "--where: %s", err.msg);
            rc = sp_cli_exit_code(err.code);
            goto out;
        }
    }
    if (q.format < 0)
        q.format = isatty(STDOUT_FILENO) ? FMT_TABLE : FMT_TSV;
    static char outbuf[1 << 16];
    setvbuf(stdout, outbuf, _IOFBF, sizeof outbuf);

    for (int i = optind; i < argc && rc == 0; i++) {
        struct stat st;
        if (stat(argv[i], &st) == 0 && S_ISDIR(st.st_mode)) {
            strvec files = {0};
            sp_error err = {0};
            if (!list_dir(argv[i], &files, &err)) {
                note_error(&q, &err);
                continue;
            }
            if (files.n == 0) {
                sp_error_set(&err, SP_ERR_INPUT, argv[i], "no .h5 files here");
                note_error(&q, &err);
            }
            for (size_t k = 0; k < files.n && rc == 0; k++)
                rc = run_path(&q, files.v[k], true, order_name);
            strvec_free(&files);
        } else {
            rc = run_path(&q, argv[i], false, order_name);
        }
    }
    if (rc == 0 && q.out_ready) {
        bool ok = true;
        if (q.ordered)
            ok = order_emit(&q);
        else if (q.count) {
            cell c[2] = {
                {.t = q.format == FMT_JSON ? V_NULL : V_STR, .s = "(total)"},
                {.t = V_I64, .i = q.total}};
            ok = sink_row(&q.out, c);
        } else if (q.stats)
            ok = stats_emit(&q, NULL, q.all_acc);
        sink_end(&q.out);
        if (!ok) {
            sp_cli_error(CMD, "out of memory");
            rc = SP_EXIT_INTERNAL;
        }
    }
    if (fflush(stdout) != 0 && rc == 0) {
        sp_cli_error(CMD, "cannot write the output: %s", strerror(errno));
        rc = SP_EXIT_OUTPUT;
    }
    if (rc == 0)
        rc = q.status;
out:
    nbuf_cols = q.need.n;
    if (q.buf) {
        for (size_t i = 0; i < nbuf_cols; i++)
            free(q.buf[i]);
        free(q.buf);
        q.buf = NULL;
    }
    query_free(&q);
    strvec_free(&inputs);
    free(order_name);
    return rc;
}
