/*
 * store private header: schema names (docs/SCHEMA.md is the contract) and
 * the small HDF5 helpers shared by writer.c, reader.c and index.c.
 * HDF5 from one thread only (see store.h).
 */
#ifndef SP_STORE_PRIVATE_H
#define SP_STORE_PRIVATE_H

#include <hdf5.h>

#include "store.h"

/* Root attributes naming the schema. */
#define SPS_ATTR_SCHEMA "schema"
#define SPS_ATTR_VERSION "schema_version"
/* Datasets and groups. */
#define SPS_COORDS "coords"
#define SPS_FEATURES "features"
#define SPS_COLUMNS "columns" /* attribute of /features */
#define SPS_SUMMARY "summary"
#define SPS_SLIDE_ID "slide_id" /* cohort */
#define SPS_SLIDES "slides"     /* cohort group */
#define SPS_SLIDE_LINKS "slide" /* cohort group of external links */

/* Rows per chunk of /features (one column per chunk: 1 MiB of float32)
 * and of /coords (2 columns of int64: 1 MiB). */
#define SPS_CHUNK_ROWS 262144
#define SPS_COORD_CHUNK_ROWS 65536
/* The reader refuses /features chunks of more rows (4 MiB of float32):
 * a chunk is allocated whole when read. */
#define SPS_MAX_CHUNK_ROWS (4 * SPS_CHUNK_ROWS)
#define SPS_DEFLATE_LEVEL 4
/* images (mask, thumbnail): written once, read whole; level 1 is several
 * times faster than 4 for a few percent more bytes */
#define SPS_IMAGE_DEFLATE_LEVEL 1

/* Silence HDF5's printer for this thread's default stack (idempotent). */
void sp__h5_quiet(void);
/* Record an error: "<file>: <what>: <HDF5's innermost cause>" from the
 * current error stack, which is then cleared. Returns false. */
bool sp__h5_error(sp_error *err, sp_errcode code, const char *file,
                  const char *what);

/* Close helpers that accept H5I_INVALID_HID / negative ids. */
void sp__close_any(hid_t id);

/* Attributes. Writers return false with an HDF5-derived error. */
bool sp__attr_put_str(hid_t obj, const char *name, const char *value,
                      const char *file, sp_error *err);
bool sp__attr_put_strs(hid_t obj, const char *name, const char *const *v,
                       size_t n, const char *file, sp_error *err);
bool sp__attr_put_i64(hid_t obj, const char *name, const int64_t *v, size_t n,
                      const char *file, sp_error *err);
bool sp__attr_put_f64(hid_t obj, const char *name, const double *v, size_t n,
                      const char *file, sp_error *err);
/* Readers: false with SP_ERR_INPUT when absent or of the wrong kind.
 * Strings accept fixed or variable length; the result is malloc'd. */
bool sp__attr_exists(hid_t obj, const char *name);
bool sp__attr_get_str(hid_t obj, const char *name, char **out, const char *file,
                      sp_error *err);
/* A 1-D string array attribute; *out is a malloc'd array of malloc'd
 * strings (free with sp__free_strs). */
bool sp__attr_get_strs(hid_t obj, const char *name, char ***out, size_t *n,
                       const char *file, sp_error *err);
void sp__free_strs(char **v, size_t n);
/* Scalar or the first `n` elements, converted to int64 / double. */
bool sp__attr_get_i64(hid_t obj, const char *name, int64_t *out, size_t n,
                      const char *file, sp_error *err);
bool sp__attr_get_f64(hid_t obj, const char *name, double *out, size_t n,
                      const char *file, sp_error *err);

/* fsync a path (file or directory); false with errno set. */
bool sp__fsync_path(const char *path);

/* ---- query (query.c) helpers --------------------------------------------- */

/* query_order.c: the rows held for an ordered query, each a key, where it
 * came from and `nvals` float32 values. With limit >= 0 only the best
 * `limit` rows are kept (a heap), else every row. NaN keys sort last;
 * equal keys keep the order in which they were offered. */
typedef struct sp__order sp__order;
sp__order *sp__order_new(bool desc, int64_t limit, size_t nvals);
void sp__order_free(sp__order *o);
/* Offer a row: returns where to write its nvals values, or NULL when it
 * does not make the cut (or, with *oom set, when memory ran out). */
float *sp__order_offer(sp__order *o, double key, uint32_t slide, int64_t x,
                       int64_t y, bool *oom);
/* Hand the rows over in order; false when `fn` or memory fails. */
typedef bool (*sp__order_fn)(void *ctx, uint32_t slide, int64_t x, int64_t y,
                             const float *vals);
bool sp__order_emit(sp__order *o, sp__order_fn fn, void *ctx);

/* query_stats.c: count, sum, min and max of float32 values, NaN left out. */
typedef struct {
    int64_t count;
    double sum;
    float min, max;
} sp__acc;
void sp__acc_add(sp__acc *a, const float *v, const uint8_t *mask, size_t n);
void sp__acc_merge(sp__acc *into, const sp__acc *a);

#endif
