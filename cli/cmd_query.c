/* slidepipe query: the options and the output formats (table, CSV, TSV,
 * JSON Lines). The engine (planning, block reads, ordering, statistics,
 * folders and cohorts) is sp_query in store/. */
#include "cli.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
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

/* ---- cells and output --------------------------------------------------- */

enum { FMT_TABLE, FMT_CSV, FMT_TSV, FMT_JSON };
typedef sp_query_value cell;

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
    switch (c->type) {
    case SP_QV_TEXT: snprintf(buf, n, "%s", c->text); break;
    case SP_QV_INT: snprintf(buf, n, "%lld", (long long)c->i); break;
    case SP_QV_F32: fmt_f32((float)c->d, buf, n); break;
    case SP_QV_F64: fmt_f64(c->d, buf, n); break;
    case SP_QV_NULL: snprintf(buf, n, "NaN"); break;
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
            if (c->type == SP_QV_TEXT)
                sp_json_escape(b, c->text);
            else if (c->type == SP_QV_NULL ||
                     ((c->type == SP_QV_F32 || c->type == SP_QV_F64) &&
                      !isfinite(c->d)))
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

/* ---- results from the engine -------------------------------------------- */

typedef struct {
    int format;
    sp_query_mode mode;
    sink out;
    bool out_ready;
    int status; /* worst exit code of the inputs that could not be read */
} qcli;

/* The columns are known: set up the output. */
static bool on_begin(void *ctx, const sp_query *q) {
    qcli *c = ctx;
    bool ok;
    if (c->mode == SP_QUERY_COUNT) {
        static const char *const cn[] = {"slide", "count"};
        static const bool cr[] = {false, true};
        ok = sink_init(&c->out, c->format, cn, cr, 2);
    } else if (c->mode == SP_QUERY_STATS) {
        static const char *const sn[] = {"slide", "column", "count",
                                         "mean",  "min",    "max"};
        static const bool sr[] = {false, false, true, true, true, true};
        ok = sink_init(&c->out, c->format, sn, sr, 6);
    } else {
        size_t n = sp_query_column_count(q);
        const char **names = calloc(n ? n : 1, sizeof *names);
        bool *right = calloc(n ? n : 1, sizeof *right);
        ok = names && right;
        for (size_t i = 0; ok && i < n; i++) {
            names[i] = sp_query_column_name(q, i);
            right[i] = sp_query_column_type(q, i) != SP_QV_TEXT;
        }
        ok = ok && sink_init(&c->out, c->format, names, right, n);
        free(names);
        free(right);
    }
    if (!ok) {
        sink_free(&c->out);
        return false;
    }
    c->out_ready = true;
    return true;
}

static bool on_row(void *ctx, const sp_query_value *values) {
    qcli *c = ctx;
    return sink_row(&c->out, values);
}

/* slide NULL: the total ("(total)"; null in JSON) */
static bool on_count(void *ctx, const char *slide, int64_t count) {
    qcli *c = ctx;
    cell v[2] = {{.type = SP_QV_TEXT, .text = slide},
                 {.type = SP_QV_INT, .i = count}};
    if (!slide)
        v[0] = (cell){.type = c->format == FMT_JSON ? SP_QV_NULL : SP_QV_TEXT,
                      .text = "(total)"};
    return sink_row(&c->out, v);
}

/* slide NULL: over every slide ("(all)"; null in JSON) */
static bool on_stats(void *ctx, const char *slide, const sp_query_stat *s,
                     size_t n) {
    qcli *c = ctx;
    for (size_t k = 0; k < n; k++) {
        const sp_query_stat *a = &s[k];
        cell v[6] = {slide ? (cell){.type = SP_QV_TEXT, .text = slide}
                           : (cell){.type = c->format == FMT_JSON ? SP_QV_NULL
                                                                  : SP_QV_TEXT,
                                    .text = "(all)"},
                     {.type = SP_QV_TEXT, .text = a->column},
                     {.type = SP_QV_INT, .i = a->count},
                     a->count ? (cell){.type = SP_QV_F64, .d = a->mean}
                              : (cell){.type = SP_QV_NULL},
                     a->count ? (cell){.type = SP_QV_F32, .d = a->min}
                              : (cell){.type = SP_QV_NULL},
                     a->count ? (cell){.type = SP_QV_F32, .d = a->max}
                              : (cell){.type = SP_QV_NULL}};
        if (!sink_row(&c->out, v))
            return false;
    }
    return true;
}

/* An input that could not be read: reported, the others go on. */
static void on_input_error(void *ctx, const sp_error *err) {
    qcli *c = ctx;
    int code = sp_cli_report(CMD, err);
    if (code > c->status)
        c->status = code == SP_EXIT_USAGE ? SP_EXIT_INPUT : code;
}

/* A failure that stops the query; returns the exit code. */
static int report_stop(const sp_query *q, const sp_error *err) {
    static const char *const opt[] = {[SP_QUERY_FIELD_WHERE] = "--where",
                                      [SP_QUERY_FIELD_SELECT] = "--select",
                                      [SP_QUERY_FIELD_ORDER_BY] = "--order-by"};
    sp_query_field f = sp_query_error_field(q);
    if (err->code == SP_ERR_USAGE && f != SP_QUERY_FIELD_NONE) {
        sp_cli_error(CMD, "%s: %s", opt[f], err->msg);
        return SP_EXIT_USAGE;
    }
    return sp_cli_report(CMD, err);
}

/* ---- options ------------------------------------------------------------ */

static bool is_desc_word(const char *s, size_t n) {
    return n == 4 && strncasecmp(s, "desc", 4) == 0;
}

/* "a, b,c" into names; false (message printed) on an empty name */
static bool parse_select(const char *arg, sp_strvec *v) {
    const char *p = arg;
    while (true) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        while (len && (*p == ' ' || *p == '\t'))
            p++, len--;
        while (len && (p[len - 1] == ' ' || p[len - 1] == '\t'))
            len--;
        if (len == 0) {
            sp_strvec_free(v);
            sp_cli_error(CMD, "--select: empty column name in '%s'", arg);
            return false;
        }
        char *name = strndup(p, len);
        if (!name || !sp_strvec_push(v, name)) {
            free(name);
            sp_strvec_free(v);
            sp_cli_error(CMD, "out of memory");
            return false;
        }
        free(name);
        if (!comma)
            break;
        p = comma + 1;
    }
    return true;
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
    qcli cli = {.format = -1};
    sp_query_opts qo = {.limit = -1, .user = &cli};
    sp_query *q = NULL;
    int rc = SP_EXIT_OK;
    char *order_name = NULL;
    sp_strvec select = {0};
    bool sel_given = false, count = false, stats = false;
    int c;
    opterr = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, ":w:s:f:n:o:ch", opts, NULL)) != -1) {
        switch (c) {
        case 'w': qo.where = optarg; break;
        case 's':
            if (sel_given) {
                sp_cli_error(CMD, "--select given twice");
                rc = SP_EXIT_USAGE;
                goto out;
            }
            sel_given = true;
            if (!parse_select(optarg, &select)) {
                rc = SP_EXIT_USAGE;
                goto out;
            }
            break;
        case 'f':
            if (strcmp(optarg, "table") == 0)
                cli.format = FMT_TABLE;
            else if (strcmp(optarg, "csv") == 0)
                cli.format = FMT_CSV;
            else if (strcmp(optarg, "tsv") == 0)
                cli.format = FMT_TSV;
            else if (strcmp(optarg, "json") == 0)
                cli.format = FMT_JSON;
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
                                  &qo.limit)) {
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
            if (rl)
                qo.desc = is_desc_word(rest, rl);
            break;
        }
        case OPT_DESC: qo.desc = true; break;
        case 'c': count = true; break;
        case OPT_STATS: stats = true; break;
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
    bool ordered = order_name != NULL;
    if (count + stats + (ordered || qo.limit >= 0) > 1) {
        sp_cli_error(CMD, "--count, --stats and --order-by/--limit cannot be "
                          "combined");
        rc = SP_EXIT_USAGE;
        goto out;
    }
    if (qo.desc && !ordered) {
        sp_cli_error(CMD, "--desc needs --order-by");
        rc = SP_EXIT_USAGE;
        goto out;
    }
    cli.mode = count ? SP_QUERY_COUNT : stats ? SP_QUERY_STATS : SP_QUERY_ROWS;
    qo.mode = cli.mode;
    qo.select = sel_given ? (const char *const *)select.v : NULL;
    qo.n_select = select.n;
    qo.order_by = order_name;
    qo.on_begin = on_begin;
    qo.on_row = on_row;
    qo.on_count = on_count;
    qo.on_stats = on_stats;
    qo.on_input_error = on_input_error;
    sp_error err = {0};
    if (!sp_query_create(&qo, &q, &err)) {
        if (err.code == SP_ERR_USAGE)
            sp_cli_error(CMD, "--where: %s", err.msg);
        else
            sp_cli_report(CMD, &err);
        rc = sp_cli_exit_code(err.code);
        goto out;
    }
    if (cli.format < 0)
        cli.format = isatty(STDOUT_FILENO) ? FMT_TABLE : FMT_TSV;
    static char outbuf[1 << 16];
    setvbuf(stdout, outbuf, _IOFBF, sizeof outbuf);

    for (int i = optind; i < argc && rc == 0; i++)
        if (!sp_query_add(q, argv[i], &err))
            rc = report_stop(q, &err);
    if (rc == 0) {
        bool ok = sp_query_finish(q, &err);
        if (cli.out_ready)
            sink_end(&cli.out);
        if (!ok)
            rc = report_stop(q, &err);
    }
    if (fflush(stdout) != 0 && rc == 0) {
        sp_cli_error(CMD, "cannot write the output: %s", strerror(errno));
        rc = SP_EXIT_OUTPUT;
    }
    if (rc == 0)
        rc = cli.status;
out:
    sp_query_free(q);
    if (cli.out_ready)
        sink_free(&cli.out);
    sp_strvec_free(&select);
    free(order_name);
    return rc;
}
