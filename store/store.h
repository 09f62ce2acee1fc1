/*
 * store: the per-slide HDF5 file (schema in docs/SCHEMA.md), its reader,
 * the cohort index, the --where expression language, and the query engine
 * of `slidepipe query` (filter, order, count, statistics).
 *
 * The module knows only plain data: numbers, strings and arrays handed in
 * by the caller. It never prints.
 *
 * Thread rules: every function that touches HDF5 (writer, reader, index)
 * must be called from ONE thread at a time for the whole process, because
 * HDF5 (even its thread-safe build) serialises every call and the serial
 * build is not safe at all. The pipeline funnels worker results to the one
 * thread that owns the writer. Expressions (sp_expr) touch no HDF5: one
 * sp_expr per thread (evaluation uses scratch kept inside it).
 *
 * Errors: functions return false (or NULL) and fill an sp_error whose
 * message names the file and the cause; HDF5's own error printer is
 * silenced and its error stack folded into that message.
 */
#ifndef SP_STORE_H
#define SP_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Schema identity written at the root of every file (docs/SCHEMA.md). */
#define SP_STORE_SCHEMA "slidepipe.slide"
#define SP_STORE_COHORT_SCHEMA "slidepipe.cohort"
#define SP_STORE_SCHEMA_VERSION 1

/* ---- writing ------------------------------------------------------------ */

/* Everything known about a slide before its tiles are written. Strings are
 * copied by sp_store_create; the caller keeps ownership. Doubles that are
 * NAN mean "not known" and the attribute is then absent from the file
 * (never written as 0). */
typedef struct {
    /* slide */
    const char *source_file; /* file name of the slide, required */
    const char *vendor;      /* OpenSlide vendor, NULL = "unknown" */
    int64_t width, height;   /* level-0 size in pixels */
    double mpp_x, mpp_y;     /* microns per pixel, NAN when unknown */
    double objective_power;  /* NAN when unknown */
    const char *quickhash;   /* OpenSlide quickhash-1, NULL when unknown */
    /* provenance */
    const char *version;    /* slidepipe version, NULL = SP_VERSION */
    const char *parameters; /* the run's parameters as a JSON object
                               string, NULL = "{}" */
    double start_time;      /* Unix seconds (UTC); NAN = now */
    double end_time;        /* Unix seconds; NAN = time of commit */
    /* tile grid (CLAM-compatible attributes of /coords) */
    int64_t patch_size;                /* tile edge in pixels at patch_level */
    int patch_level;                   /* slide level the tiles were cut from */
    double downsample;                 /* downsample of patch_level (>= 1) */
    int64_t level_width, level_height; /* size of patch_level, pixels */
    /* per-tile feature columns, in order: n_columns >= 0 unique names
     * matching [A-Za-z_][A-Za-z0-9_.]*, none of them slide, x, y, and, or,
     * not (so every column can be used in a --where expression) */
    const char *const *columns;
    size_t n_columns;
} sp_store_meta;

typedef struct sp_store_writer sp_store_writer;

/* Start writing `path`. The data go to "<dir>/.<name>.tmp-<pid>" (see
 * sp_temp_sibling) until sp_store_commit renames it into place, so an
 * interrupted write never leaves a file at `path`. Validates `meta`
 * (SP_ERR_USAGE) and fails with SP_ERR_OUTPUT when the temporary file
 * cannot be created. On success *out owns open HDF5 handles: finish with
 * sp_store_commit or sp_store_abort. */
bool sp_store_create(const char *path, const sp_store_meta *meta,
                     sp_store_writer **out, sp_error *err);

/* Append `n` tiles: coords_xy holds n (x, y) pairs of level-0 top-left
 * pixels, features holds n rows of meta->n_columns float32 values, row by
 * row (NAN for "could not be computed"). Rows are buffered and written a
 * chunk at a time. Call from the one thread that owns the writer. */
bool sp_store_append_rows(sp_store_writer *w, const int64_t *coords_xy,
                          const float *features, size_t n, sp_error *err);

/* Store an 8-bit image: `name` is "mask" (channels 1) or "thumbnail"
 * (channels 1 or 3, RGB interleaved), rows top to bottom, no padding.
 * `downsample` is level-0 pixels per image pixel. Each name at most once. */
bool sp_store_put_image(sp_store_writer *w, const char *name,
                        const uint8_t *data, int64_t width, int64_t height,
                        int channels, double downsample, sp_error *err);

/* Per-slide summary and QC values, as float64 attributes of /summary.
 * May be called more than once; a later value for a name replaces it. */
bool sp_store_set_summary(sp_store_writer *w, const char *const *names,
                          const double *values, size_t n, sp_error *err);

/* Write buffered rows, close every handle, fsync, and rename the file to
 * its final path. The writer is freed whatever the outcome; on failure the
 * temporary file is removed and nothing appears at the final path. */
bool sp_store_commit(sp_store_writer *w, sp_error *err);

/* Close and delete the temporary file; nothing appears at the final path.
 * Accepts NULL. */
void sp_store_abort(sp_store_writer *w);

/* ---- reading ------------------------------------------------------------ */

typedef enum { SP_STORE_SLIDE = 1, SP_STORE_COHORT = 2 } sp_store_kind;

typedef struct sp_store_reader sp_store_reader;

/* Open and validate a slide file or a cohort index. Rejected, with
 * SP_ERR_INPUT and a message naming `path`: a missing, empty, non-HDF5,
 * truncated or damaged file; an HDF5 file that is not slidepipe's
 * ("not a slidepipe file"); a schema_version newer than this build reads
 * (the message names both versions). */
bool sp_store_open(const char *path, sp_store_reader **out, sp_error *err);
/* Accepts NULL. */
void sp_store_close(sp_store_reader *r);

sp_store_kind sp_store_reader_kind(const sp_store_reader *r);
const char *sp_store_reader_path(const sp_store_reader *r);
/* Cohort: the member slide files, resolved against the cohort's folder.
 * Owned by the reader. */
size_t sp_store_member_count(const sp_store_reader *r);
const char *sp_store_member_path(const sp_store_reader *r, size_t i);

/* Slide: metadata read back (strings and column names owned by the
 * reader; absent values are NAN / NULL). */
const sp_store_meta *sp_store_reader_meta(const sp_store_reader *r);
int sp_store_schema_version(const sp_store_reader *r);
int64_t sp_store_row_count(const sp_store_reader *r);
/* Index of a feature column, or -1. */
int sp_store_column_index(const sp_store_reader *r, const char *name);
/* Rows per storage chunk: read blocks of this many rows (aligned to a
 * multiple of it) for the fastest reads. */
size_t sp_store_block_rows(const sp_store_reader *r);
/* Read rows [start, start + n) of one feature column as float32. */
bool sp_store_read_column(sp_store_reader *r, int column, int64_t start,
                          size_t n, float *out, sp_error *err);
/* Read rows [start, start + n) of `ncols` feature columns, column
 * columns[k] into out[k]. When the block is one storage chunk (start a
 * multiple of sp_store_block_rows, n at most that) the compressed chunks
 * are fetched on the calling thread and inflated in parallel with OpenMP
 * (zlib only: HDF5 is still called from this thread alone). */
bool sp_store_read_columns(sp_store_reader *r, const int *columns, size_t ncols,
                           int64_t start, size_t n, float *const *out,
                           sp_error *err);
/* Read rows [start, start + n) of /coords as n (x, y) pairs. */
bool sp_store_read_coords(sp_store_reader *r, int64_t start, size_t n,
                          int64_t *xy, sp_error *err);
/* Summary values (names owned by the reader). */
size_t sp_store_summary_count(const sp_store_reader *r);
bool sp_store_summary_at(const sp_store_reader *r, size_t i, const char **name,
                         double *value);
/* An image: allocates *data (caller frees). SP_ERR_INPUT when absent. */
bool sp_store_read_image(sp_store_reader *r, const char *name, uint8_t **data,
                         int64_t *width, int64_t *height, int *channels,
                         sp_error *err);

/* ---- cohort index ------------------------------------------------------- */

/* Write `out_path` (atomically) linking the slide files `paths` (n >= 1,
 * all with the same feature columns): virtual datasets /features, /coords
 * and a /slide_id column over every row, a /slides table, and one external
 * link per slide under /slide. Member paths are stored relative to the
 * folder of `out_path`. A member that cannot be read fails the whole
 * index (SP_ERR_INPUT naming it). */
bool sp_store_index(const char *out_path, const char *const *paths, size_t n,
                    sp_error *err);

/* ---- --where expressions ------------------------------------------------ */
/*
 * Grammar (keywords case-insensitive):
 *   expr    := and ( 'or' and )*
 *   and     := unary ( 'and' unary )*
 *   unary   := 'not' unary | '(' expr ')' | compare
 *   compare := operand OP operand       OP: < <= > >= == = != <>
 *   operand := NUMBER | COLUMN          COLUMN: [A-Za-z_][A-Za-z0-9_.]*
 * Comparisons are made in double precision on the stored values; NaN
 * compares false with every operator except != (IEEE 754, as numpy).
 */
typedef struct sp_expr sp_expr;

/* Parse `text`. On a syntax error: SP_ERR_USAGE with the message
 * "position P: expected ... " (P is the 1-based character position); also
 * SP_ERR_USAGE for nesting over 200 deep or over 10000 comparisons and
 * operators. */
bool sp_expr_parse(const char *text, sp_expr **out, sp_error *err);
/* Accepts NULL. */
void sp_expr_free(sp_expr *e);
/* The distinct column names the expression uses, in first-use order. */
size_t sp_expr_column_count(const sp_expr *e);
const char *sp_expr_column(const sp_expr *e, size_t i);

/* One input column: exactly one of f32 / i64 is set. */
typedef struct {
    const float *f32;
    const int64_t *i64;
} sp_expr_input;

/* Evaluate over n rows: in[i] is the column sp_expr_column(e, i). Writes
 * out[r] = 1 when row r matches, else 0. False only when out of memory. */
bool sp_expr_eval(sp_expr *e, const sp_expr_input *in, size_t n, uint8_t *out);

/* ---- query: filter, order, count and summarise tile rows ---------------- */
/*
 * The engine of `slidepipe query`, streaming one block of rows at a time.
 * Columns: `slide` (the slide's file name), `x`, `y` (level-0 top-left of
 * the tile) and every feature column. Names are checked against the first
 * slide file read; a later file without a needed column is an input error.
 *
 * Results go to the callbacks of sp_query_opts: rows file by file in
 * stored order as they are read, except ordered rows, the total count and
 * the overall statistics, which sp_query_finish hands over. Memory does
 * not grow with the number of rows, except with order_by and no limit.
 *
 * Thread rules: an sp_query is used by one thread; it reads HDF5, so the
 * one-thread rule of this header holds for the whole process.
 */
typedef struct sp_query sp_query;

typedef enum {
    SP_QUERY_ROWS,  /* matching rows (opts.order_by, opts.limit) */
    SP_QUERY_COUNT, /* the number of matching rows per slide, then total */
    SP_QUERY_STATS  /* count, mean, min, max of each selected feature */
} sp_query_mode;

/* One value of a row: exactly the member named by `type` is set. */
typedef enum {
    SP_QV_TEXT, /* text (owned by the query, valid during the callback) */
    SP_QV_INT,  /* i */
    SP_QV_F32,  /* d, a float32 value widened (print it as a float) */
    SP_QV_F64,  /* d */
    SP_QV_NULL  /* no value */
} sp_query_vtype;

typedef struct {
    sp_query_vtype type;
    const char *text;
    int64_t i;
    double d;
} sp_query_value;

/* Statistics of one feature over the matching rows, NaN left out. */
typedef struct {
    const char *column;
    int64_t count;  /* non-NaN values */
    double mean;    /* in double precision; NAN when count is 0 */
    float min, max; /* NAN when count is 0 */
} sp_query_stat;

/* The callback of the mode (on_row, on_count or on_stats) is required,
 * the others may be NULL. Strings handed to callbacks are owned by the
 * query. Callbacks return false when they cannot take the result (out of
 * memory): the query then stops and fails with SP_ERR_NOMEM. */
typedef struct {
    sp_query_mode mode;
    const char *where;         /* filter (grammar below); NULL: every row */
    const char *const *select; /* n_select columns; NULL: slide, x, y and
                                  every feature column. STATS uses the
                                  features among them, each once */
    size_t n_select;
    const char *order_by; /* ROWS: order by this column (not slide), NaN
                             last, ties in input order; NULL: stored order */
    bool desc;            /* with order_by: descending */
    int64_t limit;        /* ROWS: at most this many rows; -1: no limit.
                             (0 without order_by still hands over the
                             first row, as `query -n 0` always did) */
    void *user;           /* passed to every callback */
    /* once, when the first slide file has fixed the columns */
    bool (*on_begin)(void *user, const sp_query *q);
    /* ROWS: one value per selected column (sp_query_column_*) */
    bool (*on_row)(void *user, const sp_query_value *values);
    /* COUNT: per slide file, then slide == NULL for the total */
    bool (*on_count)(void *user, const char *slide, int64_t count);
    /* STATS: per slide file, then slide == NULL over all of them */
    bool (*on_stats)(void *user, const char *slide, const sp_query_stat *s,
                     size_t n);
    /* a file or folder that could not be read (or a folder without
     * *.h5 files); the query goes on */
    void (*on_input_error)(void *user, const sp_error *err);
} sp_query_opts;

/* Which option a SP_ERR_USAGE error of sp_query_add is about, so that the
 * caller can name it as its user spelt it. */
typedef enum {
    SP_QUERY_FIELD_NONE,
    SP_QUERY_FIELD_WHERE,
    SP_QUERY_FIELD_SELECT,
    SP_QUERY_FIELD_ORDER_BY
} sp_query_field;

/* Parse the options (strings are copied; the callbacks are kept). Fails
 * with SP_ERR_USAGE only when `where` does not parse (the message of
 * sp_expr_parse), else SP_ERR_NOMEM. *out is freed with sp_query_free. */
bool sp_query_create(const sp_query_opts *opts, sp_query **out, sp_error *err);
/* Accepts NULL. */
void sp_query_free(sp_query *q);

/* Query `path`: a slide file; a cohort index (its member slide files); a
 * folder (its *.h5 files sorted by name, not recursive, hidden files and
 * cohort indexes skipped). Files that cannot be read go to
 * on_input_error. Returns false only when the whole query must stop:
 * SP_ERR_USAGE (a column that the first slide file lacks, or a text
 * column where a number is needed; see sp_query_error_field) or
 * SP_ERR_NOMEM. Once `limit` rows have been handed over (without
 * order_by), later files are not opened. */
bool sp_query_add(sp_query *q, const char *path, sp_error *err);

/* After the last sp_query_add: hands over the ordered rows, the total
 * count or the overall statistics. Does nothing when no slide file could
 * be opened. False only with SP_ERR_NOMEM. */
bool sp_query_finish(sp_query *q, sp_error *err);

/* The selected columns, known once on_begin has been called. */
size_t sp_query_column_count(const sp_query *q);
const char *sp_query_column_name(const sp_query *q, size_t i);
/* SP_QV_TEXT (slide), SP_QV_INT (x, y) or SP_QV_F32 (features). */
sp_query_vtype sp_query_column_type(const sp_query *q, size_t i);
/* The option of the last SP_ERR_USAGE error, else SP_QUERY_FIELD_NONE. */
sp_query_field sp_query_error_field(const sp_query *q);

/* ---- versions ----------------------------------------------------------- */
/* Add the versions of the loaded HDF5 and zlib. */
void sp_store_versions(sp_lib_versions *l);

#ifdef __cplusplus
}
#endif
#endif
