/* The query engine (`slidepipe query`): column planning against the first
 * slide file, input expansion (folders, cohorts), the block-by-block scan
 * of one slide file (filter, then count, statistics or rows), and the
 * results handed to the caller's callbacks. One thread (see store.h). */
#include "store_private.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define MAX_BLOCK_ROWS 1048576

/* ---- the query ---------------------------------------------------------- */

typedef enum { C_SLIDE, C_X, C_Y, C_FEAT } col_kind;

typedef struct {
    col_kind kind;
    int need; /* index into q->need for C_FEAT */
} colref;

struct sp_query {
    sp_query_opts o; /* strings below are our copies */
    sp_expr *where;
    colref *sel;
    char **sel_names;
    size_t nsel;
    char *order_name;
    colref order;
    /* distinct feature columns needed, by name */
    sp_strvec need;
    int *where_need; /* need indices the filter reads */
    size_t nwhere_need;
    int *out_need; /* need indices the output reads */
    size_t nout_need;
    colref *where_cols; /* per expression column */
    bool coords_in_where;
    bool validated;
    sp_query_field bad_field;
    /* per file */
    int *fidx; /* file column of need[i] */
    float **buf;
    bool *have; /* buf[i] holds the current block */
    size_t bufrows;
    int64_t *xy, *xs, *ys;
    uint8_t *mask;
    bool have_coords;
    sp_expr_input *in;
    sp_query_value *cells; /* one row handed to on_row */
    /* results */
    int64_t emitted, total;
    bool stop;
    sp_strvec slides; /* slide names by slide index */
    /* stats: per selected feature (stat_need[k] indexes need) */
    int *stat_need;
    sp_query_stat *stat_out;
    size_t nstat;
    sp__acc *slide_acc, *all_acc;
    /* ordering */
    sp__order *ord;
};

/* ---- options ------------------------------------------------------------ */

bool sp_query_create(const sp_query_opts *opts, sp_query **out, sp_error *err) {
    *out = NULL;
    sp_query *q = calloc(1, sizeof *q);
    if (!q)
        return sp_error_set(err, SP_ERR_NOMEM, NULL, "out of memory");
    q->o = *opts;
    q->o.where = NULL;
    q->o.select = NULL;
    q->o.order_by = NULL;
    if (opts->where && !sp_expr_parse(opts->where, &q->where, err)) {
        sp_query_free(q);
        return false;
    }
    if (opts->select) {
        q->nsel = opts->n_select;
        q->sel = calloc(q->nsel ? q->nsel : 1, sizeof *q->sel);
        q->sel_names = calloc(q->nsel ? q->nsel : 1, sizeof *q->sel_names);
        if (!q->sel || !q->sel_names)
            goto oom;
        for (size_t i = 0; i < q->nsel; i++)
            if (!(q->sel_names[i] = strdup(opts->select[i])))
                goto oom;
    }
    if (opts->order_by && !(q->order_name = strdup(opts->order_by)))
        goto oom;
    *out = q;
    return true;
oom:
    sp_query_free(q);
    return sp_error_set(err, SP_ERR_NOMEM, NULL, "out of memory");
}

void sp_query_free(sp_query *q) {
    if (!q)
        return;
    sp_expr_free(q->where);
    free(q->sel);
    if (q->sel_names)
        for (size_t i = 0; i < q->nsel; i++)
            free(q->sel_names[i]);
    free(q->sel_names);
    free(q->order_name);
    if (q->buf)
        for (size_t i = 0; i < q->need.n; i++)
            free(q->buf[i]);
    free(q->buf);
    sp_strvec_free(&q->need);
    free(q->where_cols);
    free(q->where_need);
    free(q->out_need);
    free(q->fidx);
    free(q->have);
    free(q->in);
    free(q->cells);
    free(q->xy);
    free(q->xs);
    free(q->ys);
    free(q->mask);
    sp_strvec_free(&q->slides);
    free(q->stat_need);
    free(q->stat_out);
    free(q->slide_acc);
    free(q->all_acc);
    sp__order_free(q->ord);
    free(q);
}

size_t sp_query_column_count(const sp_query *q) { return q->nsel; }

const char *sp_query_column_name(const sp_query *q, size_t i) {
    return q->sel_names[i];
}

sp_query_vtype sp_query_column_type(const sp_query *q, size_t i) {
    switch (q->sel[i].kind) {
    case C_SLIDE: return SP_QV_TEXT;
    case C_X:
    case C_Y: return SP_QV_INT;
    case C_FEAT:
    default: return SP_QV_F32;
    }
}

sp_query_field sp_query_error_field(const sp_query *q) { return q->bad_field; }

/* ---- column planning ---------------------------------------------------- */

static bool add_need(sp_query *q, const char *name, int *idx) {
    for (size_t i = 0; i < q->need.n; i++)
        if (strcmp(q->need.v[i], name) == 0) {
            *idx = (int)i;
            return true;
        }
    if (!sp_strvec_push(&q->need, name))
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

/* A usage error about option `field`; returns false. */
static bool usage(sp_query *q, sp_query_field field, sp_error *err,
                  const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static bool usage(sp_query *q, sp_query_field field, sp_error *err,
                  const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    q->bad_field = field;
    sp_error_setv(err, SP_ERR_USAGE, NULL, fmt, ap);
    va_end(ap);
    return false;
}

static bool oom(sp_error *err) {
    return sp_error_set(err, SP_ERR_NOMEM, NULL, "out of memory");
}

/* Check the selected and filtered column names against the first slide
 * file. */
static bool plan_columns(sp_query *q, const sp_store_reader *r, sp_error *err) {
    const sp_store_meta *m = sp_store_reader_meta(r);
    char cols[4096];
    list_columns(m, cols, sizeof cols);
    /* default selection: every column */
    if (!q->sel) {
        q->nsel = 3 + m->n_columns;
        q->sel = calloc(q->nsel, sizeof *q->sel);
        q->sel_names = calloc(q->nsel, sizeof *q->sel_names);
        if (!q->sel || !q->sel_names)
            return oom(err);
        const char *fixed[3] = {"slide", "x", "y"};
        for (size_t i = 0; i < q->nsel; i++)
            if (!(q->sel_names[i] =
                      strdup(i < 3 ? fixed[i] : m->columns[i - 3])))
                return oom(err);
    }
    for (size_t i = 0; i < q->nsel; i++) {
        q->sel[i] = ref_of(q->sel_names[i]);
        if (q->sel[i].kind != C_FEAT)
            continue;
        if (sp_store_column_index(r, q->sel_names[i]) < 0)
            return usage(q, SP_QUERY_FIELD_SELECT, err,
                         "unknown column '%s' (columns: %s)", q->sel_names[i],
                         cols);
        if (!add_need(q, q->sel_names[i], &q->sel[i].need))
            return oom(err);
    }
    if (q->where) {
        size_t n = sp_expr_column_count(q->where);
        q->where_cols = calloc(n ? n : 1, sizeof *q->where_cols);
        if (!q->where_cols)
            return oom(err);
        for (size_t i = 0; i < n; i++) {
            const char *c = sp_expr_column(q->where, i);
            colref ref = ref_of(c);
            if (ref.kind == C_SLIDE)
                return usage(q, SP_QUERY_FIELD_WHERE, err,
                             "column 'slide' holds text; only numeric "
                             "columns can be compared");
            if (ref.kind == C_FEAT) {
                if (sp_store_column_index(r, c) < 0)
                    return usage(q, SP_QUERY_FIELD_WHERE, err,
                                 "unknown column '%s' (columns: %s)", c, cols);
                if (!add_need(q, c, &ref.need))
                    return oom(err);
            } else {
                q->coords_in_where = true;
            }
            q->where_cols[i] = ref;
        }
    }
    return true;
}

static bool plan_order(sp_query *q, const sp_store_reader *r, sp_error *err) {
    if (!q->order_name)
        return true;
    const sp_store_meta *m = sp_store_reader_meta(r);
    char cols[4096];
    list_columns(m, cols, sizeof cols);
    q->order = ref_of(q->order_name);
    if (q->order.kind == C_SLIDE)
        return usage(q, SP_QUERY_FIELD_ORDER_BY, err,
                     "cannot order by 'slide' (rows already come slide by "
                     "slide)");
    if (q->order.kind == C_FEAT) {
        if (sp_store_column_index(r, q->order_name) < 0)
            return usage(q, SP_QUERY_FIELD_ORDER_BY, err,
                         "unknown column '%s' (columns: %s)", q->order_name,
                         cols);
        if (!add_need(q, q->order_name, &q->order.need))
            return oom(err);
    }
    return true;
}

/* Which columns each stage reads, and the per-mode results. */
static bool plan_stages(sp_query *q, sp_error *err) {
    size_t n = q->nsel;
    size_t nn = q->need.n ? q->need.n : 1;
    q->where_need = calloc(nn, sizeof *q->where_need);
    q->out_need = calloc(nn + 1, sizeof *q->out_need);
    if (!q->where_need || !q->out_need)
        return oom(err);
    size_t ne = q->where ? sp_expr_column_count(q->where) : 0;
    for (size_t i = 0; i < ne; i++)
        if (q->where_cols[i].kind == C_FEAT)
            q->where_need[q->nwhere_need++] = q->where_cols[i].need;
    for (size_t i = 0; i < n; i++)
        if (q->sel[i].kind == C_FEAT)
            q->out_need[q->nout_need++] = q->sel[i].need;
    if (q->order_name && q->order.kind == C_FEAT)
        q->out_need[q->nout_need++] = q->order.need;
    if (q->o.mode == SP_QUERY_STATS) {
        /* stats over the selected features, each once */
        q->stat_need = calloc(n ? n : 1, sizeof *q->stat_need);
        q->stat_out = calloc(n ? n : 1, sizeof *q->stat_out);
        if (!q->stat_need || !q->stat_out)
            return oom(err);
        for (size_t i = 0; i < n; i++)
            if (q->sel[i].kind == C_FEAT) {
                bool dup = false;
                for (size_t k = 0; k < q->nstat; k++)
                    dup |= q->stat_need[k] == q->sel[i].need;
                if (dup)
                    continue;
                q->stat_need[q->nstat] = q->sel[i].need;
                q->stat_out[q->nstat++].column = q->sel_names[i];
            }
        q->slide_acc = calloc(q->nstat ? q->nstat : 1, sizeof(sp__acc));
        q->all_acc = calloc(q->nstat ? q->nstat : 1, sizeof(sp__acc));
        if (!q->slide_acc || !q->all_acc)
            return oom(err);
    } else if (q->o.mode == SP_QUERY_ROWS) {
        q->cells = calloc(n ? n : 1, sizeof *q->cells);
        if (!q->cells)
            return oom(err);
        if (q->order_name &&
            !(q->ord = sp__order_new(q->o.desc, q->o.limit, n)))
            return oom(err);
    }
    if (q->o.on_begin && !q->o.on_begin(q->o.user, q))
        return oom(err);
    return true;
}

/* ---- block buffers ------------------------------------------------------ */

static bool ensure_buffers(sp_query *q, size_t rows) {
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

static bool load_column(sp_query *q, sp_store_reader *r, int need,
                        int64_t start, size_t n, sp_error *err) {
    if (q->have[need])
        return true;
    if (!sp_store_read_column(r, q->fidx[need], start, n, q->buf[need], err))
        return false;
    q->have[need] = true;
    return true;
}

/* Load several needed columns at once (inflated in parallel). */
static bool load_columns(sp_query *q, sp_store_reader *r, const int *need,
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

static bool load_coords(sp_query *q, sp_store_reader *r, int64_t start,
                        size_t n, sp_error *err) {
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

static sp_query_value value_of(const sp_query *q, colref c, size_t row,
                               uint32_t slide) {
    switch (c.kind) {
    case C_SLIDE:
        return (sp_query_value){.type = SP_QV_TEXT, .text = q->slides.v[slide]};
    case C_X: return (sp_query_value){.type = SP_QV_INT, .i = q->xs[row]};
    case C_Y: return (sp_query_value){.type = SP_QV_INT, .i = q->ys[row]};
    case C_FEAT:
    default:
        return (sp_query_value){.type = SP_QV_F32, .d = q->buf[c.need][row]};
    }
}

/* ---- results ------------------------------------------------------------ */

/* Offer matching row `row` of the block to the ordered rows. */
static bool order_add(sp_query *q, size_t row, uint32_t slide) {
    double key = q->order.kind == C_X   ? (double)q->xs[row]
                 : q->order.kind == C_Y ? (double)q->ys[row]
                                        : (double)q->buf[q->order.need][row];
    bool oom_ = false;
    float *v =
        sp__order_offer(q->ord, key, slide, q->xs[row], q->ys[row], &oom_);
    if (v)
        for (size_t i = 0; i < q->nsel; i++)
            v[i] =
                q->sel[i].kind == C_FEAT ? q->buf[q->sel[i].need][row] : 0.0f;
    return !oom_;
}

static bool order_row(void *ctx, uint32_t slide, int64_t x, int64_t y,
                      const float *v) {
    sp_query *q = ctx;
    for (size_t i = 0; i < q->nsel; i++) {
        sp_query_value *c = &q->cells[i];
        switch (q->sel[i].kind) {
        case C_SLIDE:
            *c = (sp_query_value){.type = SP_QV_TEXT,
                                  .text = q->slides.v[slide]};
            break;
        case C_X: *c = (sp_query_value){.type = SP_QV_INT, .i = x}; break;
        case C_Y: *c = (sp_query_value){.type = SP_QV_INT, .i = y}; break;
        case C_FEAT: *c = (sp_query_value){.type = SP_QV_F32, .d = v[i]}; break;
        }
    }
    return q->o.on_row(q->o.user, q->cells);
}

static bool stats_emit(sp_query *q, const char *slide, const sp__acc *accs) {
    for (size_t k = 0; k < q->nstat; k++) {
        const sp__acc *a = &accs[k];
        sp_query_stat *s = &q->stat_out[k];
        s->count = a->count;
        s->mean = a->count ? a->sum / (double)a->count : NAN;
        s->min = a->count ? a->min : NAN;
        s->max = a->count ? a->max : NAN;
    }
    return q->o.on_stats(q->o.user, slide, q->stat_out, q->nstat);
}

/* ---- one slide file ----------------------------------------------------- */

/* Hand the matching rows of a block (q->mask) over, or hold them for
 * ordering. False when a callback or memory fails. */
static bool block_rows(sp_query *q, size_t n, uint32_t slide) {
    for (size_t i = 0; i < n; i++) {
        if (!q->mask[i])
            continue;
        if (q->ord) {
            if (!order_add(q, i, slide))
                return false;
            continue;
        }
        for (size_t c = 0; c < q->nsel; c++)
            q->cells[c] = value_of(q, q->sel[c], i, slide);
        if (!q->o.on_row(q->o.user, q->cells))
            return false;
        if (q->o.limit >= 0 && ++q->emitted >= q->o.limit) {
            q->stop = true;
            break;
        }
    }
    return true;
}

/* Returns false on a read error in `r` or out of memory (err->code
 * SP_ERR_NOMEM). */
static bool scan_slide(sp_query *q, sp_store_reader *r, uint32_t slide,
                       sp_error *err) {
    const char *path = sp_store_reader_path(r);
    int64_t rows = sp_store_row_count(r);
    size_t block = sp_store_block_rows(r);
    bool counting = q->o.mode == SP_QUERY_COUNT;
    bool stats = q->o.mode == SP_QUERY_STATS;
    if (block > MAX_BLOCK_ROWS)
        block = MAX_BLOCK_ROWS;
    if (!ensure_buffers(q, block))
        return sp_error_set(err, SP_ERR_NOMEM, path, "out of memory");
    for (size_t i = 0; i < q->need.n; i++) {
        q->fidx[i] = sp_store_column_index(r, q->need.v[i]);
        if (q->fidx[i] < 0)
            return sp_error_set(err, SP_ERR_INPUT, path,
                                "no column '%s' in this file", q->need.v[i]);
    }
    bool need_coords_out = false;
    if (!counting && !stats) {
        for (size_t i = 0; i < q->nsel; i++)
            need_coords_out |= q->sel[i].kind == C_X || q->sel[i].kind == C_Y;
        need_coords_out |= q->ord != NULL; /* ordered rows carry x, y */
    }
    int64_t slide_count = 0;
    if (stats)
        memset(q->slide_acc, 0, q->nstat * sizeof(sp__acc));
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
        if (counting) {
            slide_count += (int64_t)matches;
            continue;
        }
        if (stats) {
            if (!load_columns(q, r, q->stat_need, q->nstat, start, n, err))
                return false;
            for (size_t k = 0; k < q->nstat; k++) {
                int nd = q->stat_need[k];
                if (!load_column(q, r, nd, start, n, err))
                    return false;
                sp__acc_add(&q->slide_acc[k], q->buf[nd], q->mask, n);
            }
            continue;
        }
        if (!load_columns(q, r, q->out_need, q->nout_need, start, n, err))
            return false;
        if (q->ord && q->order.kind == C_FEAT &&
            !load_column(q, r, q->order.need, start, n, err))
            return false;
        if (need_coords_out && !load_coords(q, r, start, n, err))
            return false;
        if (!block_rows(q, n, slide))
            return sp_error_set(err, SP_ERR_NOMEM, path, "out of memory");
    }
    if (counting) {
        q->total += slide_count;
        if (!q->o.on_count(q->o.user, q->slides.v[slide], slide_count))
            return sp_error_set(err, SP_ERR_NOMEM, path, "out of memory");
    }
    if (stats) {
        for (size_t k = 0; k < q->nstat; k++)
            sp__acc_merge(&q->all_acc[k], &q->slide_acc[k]);
        if (!stats_emit(q, q->slides.v[slide], q->slide_acc))
            return sp_error_set(err, SP_ERR_NOMEM, path, "out of memory");
    }
    return true;
}

/* ---- inputs ------------------------------------------------------------- */

static void input_error(sp_query *q, const sp_error *e) {
    if (q->o.on_input_error)
        q->o.on_input_error(q->o.user, e);
}

/* Open `path` and scan it (a cohort scans each member unless it came from
 * a folder or a cohort). False only when the whole query stops. */
static bool add_file(sp_query *q, const char *path, bool nested,
                     sp_error *err) {
    sp_error e = {0};
    sp_store_reader *r = NULL;
    if (q->stop)
        return true;
    if (!sp_store_open(path, &r, &e)) {
        input_error(q, &e);
        return true;
    }
    if (sp_store_reader_kind(r) == SP_STORE_COHORT) {
        bool ok = true;
        if (!nested) {
            for (size_t i = 0; i < sp_store_member_count(r) && ok; i++) {
                const char *mp = sp_store_member_path(r, i);
                sp_store_reader *mr = NULL;
                sp_error e2 = {0};
                /* a cohort inside a cohort is not followed */
                if (!sp_store_open(mp, &mr, &e2)) {
                    input_error(q, &e2);
                    continue;
                }
                bool slide = sp_store_reader_kind(mr) == SP_STORE_SLIDE;
                sp_store_close(mr);
                if (slide)
                    ok = add_file(q, mp, true, err);
            }
        }
        sp_store_close(r);
        return ok;
    }
    if (!q->validated) {
        if (!plan_columns(q, r, err) || !plan_order(q, r, err) ||
            !plan_stages(q, err)) {
            sp_store_close(r);
            return false;
        }
        q->validated = true;
    }
    const char *name = sp_store_reader_meta(r)->source_file;
    if (!sp_strvec_push(&q->slides, name)) {
        sp_store_close(r);
        return oom(err);
    }
    bool ok = scan_slide(q, r, (uint32_t)(q->slides.n - 1), &e);
    sp_store_close(r);
    if (!ok) {
        if (e.code == SP_ERR_NOMEM) {
            *err = e;
            return false;
        }
        input_error(q, &e);
    }
    return true;
}

static bool is_h5_name(const char *name) {
    size_t len = strlen(name);
    return len >= 4 && strcmp(name + len - 3, ".h5") == 0;
}

/* The *.h5 files of a folder in name order (hidden files, such as our
 * temporaries, are never listed). */
static bool add_folder(sp_query *q, const char *dir, sp_error *err) {
    sp_error e = {0};
    size_t n = 0;
    char **names = sp_dir_names(dir, &n);
    if (!names) {
        if (errno == ENOMEM)
            sp_error_set(&e, SP_ERR_NOMEM, dir, "out of memory");
        else
            sp_error_errno(&e, SP_ERR_INPUT, dir, errno, "cannot open");
        input_error(q, &e);
        return true;
    }
    size_t found = 0;
    bool ok = true;
    for (size_t i = 0; i < n && ok; i++) {
        if (!is_h5_name(names[i]))
            continue;
        found++;
        char *p = sp_path_join(dir, names[i]);
        if (!p) {
            sp_error_set(&e, SP_ERR_NOMEM, dir, "out of memory");
            input_error(q, &e);
            break;
        }
        ok = add_file(q, p, true, err);
        free(p);
    }
    if (found == 0) {
        sp_error_set(&e, SP_ERR_INPUT, dir, "no .h5 files here");
        input_error(q, &e);
    }
    sp_dir_names_free(names, n);
    return ok;
}

bool sp_query_add(sp_query *q, const char *path, sp_error *err) {
    struct stat st;
    q->bad_field = SP_QUERY_FIELD_NONE;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
        return add_folder(q, path, err);
    return add_file(q, path, false, err);
}

bool sp_query_finish(sp_query *q, sp_error *err) {
    bool ok = true;
    if (!q->validated)
        return true;
    if (q->ord)
        ok = sp__order_emit(q->ord, order_row, q);
    else if (q->o.mode == SP_QUERY_COUNT)
        ok = q->o.on_count(q->o.user, NULL, q->total);
    else if (q->o.mode == SP_QUERY_STATS)
        ok = stats_emit(q, NULL, q->all_acc);
    return ok || oom(err);
}
