/* libFuzzer target: the schema check and reads of slidepipe's HDF5 files
 * (store/reader.c: sp_store_open and the reads `query`, `index` and the
 * viewer make), structure-aware. Fuzzing HDF5's own binary parser would
 * find HDF5 bugs, not ours, so the input is a program of edits made with
 * the HDF5 API to a valid file that our writer made (a slide file, or
 * the cohort index over it): objects deleted or replaced by others of
 * another type, rank, shape, chunking or filters (huge dimensions with
 * no data written), attributes deleted or rewritten with other types,
 * shapes, string kinds and lengths, NaNs and extremes, links made soft,
 * dangling, external or pointing elsewhere.
 *
 * Each input: copy the base file, apply the edits, then sp_store_open
 * (and, when the first byte says so, sp_store_index over it).
 * It must either fail with a message or succeed; after success every read
 * the callers make must succeed or fail cleanly. No crash, leak, UB, and
 * no allocation sized by the file beyond what the data need (the smoke
 * run's -malloc_limit_mb catches one). */
#include <fcntl.h>
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "store_private.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const COLS[] = {"tissue_fraction", "mean_r", "blur"};
enum { NCOL = 3, ROWS = 300 };

static char dir[64], slide_path[128], cohort_path[128], work_path[128];
static uint8_t *base[2];
static size_t base_n[2];

/* ---- the input as a stream of choices ------------------------------- */

typedef struct {
    const uint8_t *p;
    size_t n;
} in_t;

static uint8_t u8(in_t *in) {
    if (!in->n)
        return 0;
    in->n--;
    return *in->p++;
}
static uint32_t u32(in_t *in) {
    uint32_t v = 0;
    for (int i = 0; i < 4; i++)
        v = v << 8 | u8(in);
    return v;
}
static uint64_t u64(in_t *in) { return (uint64_t)u32(in) << 32 | u32(in); }

static hsize_t pick_dim(in_t *in) {
    static const hsize_t dims[] = {0,       1,        2,          3,
                                   16,      ROWS,     ROWS + 1,   65536,
                                   1 << 20, 1u << 31, 1ull << 40, 1ull << 62};
    uint8_t c = u8(in);
    if (c < 240)
        return dims[c % (sizeof dims / sizeof dims[0])];
    return u64(in) >> (u8(in) % 64);
}

static double pick_f64(in_t *in) {
    static const double v[] = {0.0,   -0.0,   1.0,    -1.0,  0.5,    256.0,
                               1e308, -1e308, 1e19,   -1e19, 9.3e18, 2.5e9,
                               NAN,   -NAN,   1e-320, 4096,  65536};
    uint8_t c = u8(in);
    if (c < 200)
        return c % 17 == 16   ? INFINITY
               : c % 34 == 33 ? -INFINITY
                              : v[c % (sizeof v / sizeof v[0])];
    uint64_t bits = u64(in);
    double d;
    memcpy(&d, &bits, sizeof d);
    return d;
}

static int64_t pick_i64(in_t *in) {
    static const int64_t v[] = {0,
                                1,
                                -1,
                                2,
                                3,
                                256,
                                -256,
                                255,
                                1024,
                                INT32_MAX,
                                INT64_MAX,
                                INT64_MIN,
                                (int64_t)1 << 40,
                                62,
                                63,
                                64};
    uint8_t c = u8(in);
    if (c < 200)
        return v[c % (sizeof v / sizeof v[0])];
    return (int64_t)u64(in);
}

/* ---- the objects and attributes edited ------------------------------ */

static const char *const OBJS[] = {"/",        "/coords",      "/features",
                                   "/summary", "/mask",        "/thumbnail",
                                   "/slides",  "/slides/path", "/slide_id",
                                   "/slide",   "/slides/name"};
enum { NOBJ = sizeof OBJS / sizeof OBJS[0] };

static const char *const ATTRS[] = {
    "schema",      "schema_version",  "source_file",       "vendor",
    "width",       "height",          "slidepipe_version", "parameters",
    "mpp_x",       "mpp_y",           "objective_power",   "quickhash",
    "patch_size",  "patch_level",     "downsample",        "level_dim",
    "columns",     "tissue_area_mm2", "tiles_total",       "CLASS",
    "slide_count", "row_count",       "start_time",        "x"};
enum { NATTR = sizeof ATTRS / sizeof ATTRS[0] };

/* a datatype; *size is its element size in the buffer */
static hid_t pick_type(in_t *in, size_t *size, int *kind) {
    uint8_t c = u8(in) % 12;
    *kind = c;
    hid_t t = H5I_INVALID_HID;
    switch (c) {
    case 0: t = H5Tcopy(H5T_NATIVE_INT64); break;
    case 1: t = H5Tcopy(H5T_NATIVE_INT8); break;
    case 2: t = H5Tcopy(H5T_NATIVE_UINT64); break;
    case 3: t = H5Tcopy(H5T_NATIVE_DOUBLE); break;
    case 4: t = H5Tcopy(H5T_NATIVE_FLOAT); break;
    case 5: t = H5Tcopy(H5T_IEEE_F32BE); break;
    case 6: /* variable-length string */
    case 7:
        t = H5Tcopy(H5T_C_S1);
        H5Tset_size(t, H5T_VARIABLE);
        if (c == 7)
            H5Tset_cset(t, H5T_CSET_UTF8);
        break;
    case 8: { /* fixed-length string of any length */
        size_t len = 1 + (u8(in) % 4 == 0 ? u32(in) % 70000 : u8(in));
        t = H5Tcopy(H5T_C_S1);
        H5Tset_size(t, len);
        H5Tset_strpad(t, u8(in) & 1 ? H5T_STR_NULLPAD : H5T_STR_NULLTERM);
        break;
    }
    case 9: t = H5Tcreate(H5T_OPAQUE, 4); break;
    case 10:
        t = H5Tcreate(H5T_COMPOUND, 16);
        H5Tinsert(t, "a", 0, H5T_NATIVE_INT64);
        H5Tinsert(t, "b", 8, H5T_NATIVE_DOUBLE);
        break;
    default: t = H5Tcopy(H5T_NATIVE_UINT8); break;
    }
    *size = t >= 0 ? H5Tget_size(t) : 0;
    return t;
}

/* a buffer of n elements of `kind` (strings point into the input) */
static void *fill(in_t *in, int kind, size_t size, size_t n, char *strs) {
    if (n > (1u << 16) || (size && n > (64u << 20) / size))
        return NULL;
    uint8_t *b = calloc(n ? n : 1, size ? size : 1);
    if (!b)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        uint8_t *e = b + i * size;
        switch (kind) {
        case 0:
        case 2: {
            int64_t v = pick_i64(in);
            memcpy(e, &v, 8);
            break;
        }
        case 3: {
            double v = pick_f64(in);
            memcpy(e, &v, 8);
            break;
        }
        case 4:
        case 5: {
            float v = (float)pick_f64(in);
            memcpy(e, &v, 4);
            break;
        }
        case 6:
        case 7: { /* a string from the input, or NULL */
            uint8_t c = u8(in);
            char *s = c == 255 ? NULL
                      : c & 1  ? (char *)"slidepipe.slide"
                      : c & 2  ? (char *)"tissue_fraction"
                               : strs;
            memcpy(e, &s, sizeof s);
            break;
        }
        default:
            for (size_t k = 0; k < size && k < 64; k++)
                e[k] = u8(in);
        }
    }
    return b;
}

static hid_t pick_space(in_t *in, size_t *n, int max_rank) {
    uint8_t c = u8(in) % 8;
    if (c == 0) {
        *n = 0;
        return H5Screate(H5S_NULL);
    }
    if (c <= 2 || max_rank == 0) {
        *n = 1;
        return H5Screate(H5S_SCALAR);
    }
    int rank = 1 + u8(in) % (max_rank > 3 ? 3 : max_rank);
    hsize_t d[3];
    *n = 1;
    for (int i = 0; i < rank; i++) {
        d[i] = c == 3 ? (hsize_t)(u8(in) % 5) : pick_dim(in) % 5000;
        *n *= d[i];
    }
    return H5Screate_simple(rank, d, NULL);
}

static void set_attr(hid_t f, in_t *in, char *strs) {
    const char *obj = OBJS[u8(in) % NOBJ], *name = ATTRS[u8(in) % NATTR];
    if (H5Aexists_by_name(f, obj, name, H5P_DEFAULT) > 0)
        H5Adelete_by_name(f, obj, name, H5P_DEFAULT);
    size_t size = 0, n = 0;
    int kind;
    hid_t t = pick_type(in, &size, &kind);
    hid_t s = pick_space(in, &n, 2);
    hid_t a = t >= 0 && s >= 0
                  ? H5Acreate_by_name(f, obj, name, t, s, H5P_DEFAULT,
                                      H5P_DEFAULT, H5P_DEFAULT)
                  : H5I_INVALID_HID;
    void *buf = a >= 0 && n ? fill(in, kind, size, n, strs) : NULL;
    if (buf)
        H5Awrite(a, t, buf);
    free(buf);
    sp__close_any(a);
    sp__close_any(s);
    sp__close_any(t);
}

/* Replace a dataset by one of another type/shape/layout; its schema
 * attributes are put back unless the input says not to. */
static void new_dataset(hid_t f, in_t *in, char *strs) {
    static const char *const D[] = {"/coords",    "/features", "/mask",
                                    "/thumbnail", "/slide_id", "/slides/path"};
    const char *name = D[u8(in) % 6];
    H5Ldelete(f, name, H5P_DEFAULT);
    size_t size = 0;
    int kind;
    hid_t t = pick_type(in, &size, &kind);
    int rank = u8(in) % 4;
    hsize_t d[3] = {1, 1, 1}, maxd[3], chunk[3] = {1, 1, 1};
    uint64_t total = 1;
    bool huge = false;
    for (int i = 0; i < rank; i++) {
        d[i] = pick_dim(in);
        if (d[i] > (1ull << 40))
            d[i] = 1ull << 40;
        maxd[i] = H5S_UNLIMITED;
        total = d[i] && total > UINT64_MAX / d[i] ? UINT64_MAX : total * d[i];
    }
    huge = total * (size ? size : 1) > (1u << 20) || total > (1u << 20);
    hid_t s = rank ? H5Screate_simple(rank, d, huge ? maxd : NULL)
                   : H5Screate(H5S_SCALAR);
    hid_t p = H5Pcreate(H5P_DATASET_CREATE);
    uint8_t lay = u8(in);
    if (rank && (huge || lay & 1)) {
        for (int i = 0; i < rank; i++) {
            hsize_t c = pick_dim(in);
            chunk[i] = c < 1 ? 1 : c > (1u << 30) ? (1u << 30) : c;
            if (!huge && chunk[i] > d[i])
                chunk[i] = d[i] ? d[i] : 1;
        }
        H5Pset_chunk(p, rank, chunk);
        if (lay & 2)
            H5Pset_shuffle(p);
        if (lay & 4)
            H5Pset_deflate(p, 1);
    }
    hid_t ds = t >= 0 && s >= 0 && p >= 0
                   ? H5Dcreate2(f, name, t, s, H5P_DEFAULT, p, H5P_DEFAULT)
                   : H5I_INVALID_HID;
    if (ds >= 0 && !huge && total && (lay & 8) && kind != 8) {
        void *buf = fill(in, kind, size, (size_t)total, strs);
        if (buf)
            H5Dwrite(ds, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf);
        free(buf);
    }
    if (ds >= 0 && !(lay & 16)) {
        sp_error e = {0};
        int64_t ps = 256, pl = 0, dim[2] = {2000, 1500};
        double dsm[2] = {1, 1};
        if (strcmp(name, "/coords") == 0) {
            sp__attr_put_i64(ds, "patch_size", &ps, 1, "f", &e);
            sp__attr_put_i64(ds, "patch_level", &pl, 1, "f", &e);
            sp__attr_put_f64(ds, "downsample", dsm, 2, "f", &e);
            sp__attr_put_i64(ds, "level_dim", dim, 2, "f", &e);
        } else if (strcmp(name, "/features") == 0) {
            size_t nc = rank == 2 && d[1] < 4000 ? (size_t)d[1] : u8(in);
            const char **names = calloc(nc ? nc : 1, sizeof *names);
            for (size_t i = 0; names && i < nc; i++)
                names[i] = i < NCOL ? COLS[i] : "c";
            if (names)
                sp__attr_put_strs(ds, SPS_COLUMNS, names, nc, "f", &e);
            free(names);
        }
        H5Eclear2(H5E_DEFAULT);
    }
    sp__close_any(ds);
    sp__close_any(p);
    sp__close_any(s);
    sp__close_any(t);
}

static void edit(hid_t f, in_t *in, char *strs) {
    const char *obj = OBJS[1 + u8(in) % (NOBJ - 1)];
    switch (u8(in) % 8) {
    case 0: H5Ldelete(f, obj, H5P_DEFAULT); break;
    case 1:
        H5Adelete_by_name(f, OBJS[u8(in) % NOBJ], ATTRS[u8(in) % NATTR],
                          H5P_DEFAULT);
        break;
    case 2:
    case 3: set_attr(f, in, strs); break;
    case 4: new_dataset(f, in, strs); break;
    case 5: { /* a link in place of the object */
        const char *to = OBJS[u8(in) % NOBJ];
        H5Ldelete(f, obj, H5P_DEFAULT);
        switch (u8(in) % 4) {
        case 0: H5Lcreate_soft(to, f, obj, H5P_DEFAULT, H5P_DEFAULT); break;
        case 1:
            H5Lcreate_soft("/nowhere", f, obj, H5P_DEFAULT, H5P_DEFAULT);
            break;
        case 2: H5Lcreate_hard(f, to, f, obj, H5P_DEFAULT, H5P_DEFAULT); break;
        default:
            H5Lcreate_external("missing.h5", "/x", f, obj, H5P_DEFAULT,
                               H5P_DEFAULT);
        }
        break;
    }
    case 6: { /* a group in place of the object */
        H5Ldelete(f, obj, H5P_DEFAULT);
        hid_t g = H5Gcreate2(f, obj, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        sp__close_any(g);
        break;
    }
    default: { /* many summary values */
        hid_t g = H5Gopen2(f, "/summary", H5P_DEFAULT);
        unsigned k = u8(in);
        for (unsigned i = 0; g >= 0 && i < k; i++) {
            char nm[32];
            snprintf(nm, sizeof nm, "v%u", i);
            double v = pick_f64(in);
            sp_error e = {0};
            sp__attr_put_f64(g, nm, &v, 1, "f", &e);
        }
        sp__close_any(g);
    }
    }
    H5Eclear2(H5E_DEFAULT);
}

/* ---- the reads callers make ----------------------------------------- */

static void read_slide(sp_store_reader *r) {
    const sp_store_meta *m = sp_store_reader_meta(r);
    if (!m || !m->source_file || !m->vendor || (m->n_columns && !m->columns))
        abort();
    for (size_t i = 0; i < m->n_columns; i++)
        if (!m->columns[i] || sp_store_column_index(r, m->columns[i]) < 0)
            abort();
    int64_t rows = sp_store_row_count(r);
    if (rows < 0)
        abort();
    size_t block = sp_store_block_rows(r);
    if (block < 1)
        abort();
    if (block > 1048576) /* as `query` does */
        block = 1048576;
    /* the reads below are of the first and last blocks; 64k rows of them
     * take the same paths (direct or not) at a fraction of the time */
    size_t want = block < 65536 ? block : 65536;
    size_t n = (size_t)(rows < (int64_t)want ? rows : (int64_t)want);
    sp_error e = {0};
    int cols[4];
    size_t nc = 0;
    for (size_t i = 0; i < m->n_columns && nc < 4; i++)
        if (i < 2 || i + 2 >= m->n_columns)
            cols[nc++] = (int)i;
    float *out[4] = {NULL, NULL, NULL, NULL};
    int64_t *xy = malloc((n ? n : 1) * 2 * sizeof *xy);
    bool ok = xy != NULL;
    for (size_t i = 0; i < nc; i++)
        ok = ok && (out[i] = malloc((n ? n : 1) * sizeof(float)));
    if (ok) {
        /* the first and the last block, as `query` and `index` read */
        int64_t starts[2] = {
            0, rows ? ((rows - 1) / (int64_t)block) * (int64_t)block : 0};
        for (int k = 0; k < 2; k++) {
            int64_t st = starts[k];
            size_t cnt =
                (size_t)(rows - st < (int64_t)n ? rows - st : (int64_t)n);
            sp_error_clear(&e);
            sp_store_read_columns(r, cols, nc, st, cnt, out, &e);
            sp_error_clear(&e);
            if (nc)
                sp_store_read_column(r, cols[0], st, cnt, out[0], &e);
            sp_error_clear(&e);
            sp_store_read_coords(r, st, cnt, xy, &e);
        }
        /* reads outside must fail */
        sp_error_clear(&e);
        if (sp_store_read_coords(r, rows, 1, xy, &e))
            abort();
    }
    for (size_t i = 0; i < nc; i++)
        free(out[i]);
    free(xy);
    for (size_t i = 0; i < sp_store_summary_count(r); i++) {
        const char *name;
        double v;
        if (!sp_store_summary_at(r, i, &name, &v) || !name)
            abort();
    }
    static const char *const imgs[] = {"mask", "thumbnail"};
    for (int i = 0; i < 2; i++) {
        uint8_t *px = NULL;
        int64_t w = 0, h = 0;
        int ch = 0;
        sp_error_clear(&e);
        if (sp_store_read_image(r, imgs[i], &px, &w, &h, &ch, &e)) {
            if (!px || w < 0 || h < 0 || ch < 1)
                abort();
        } else if (px || !sp_error_is_set(&e)) {
            abort();
        }
        free(px);
    }
}

static char index_path[128];

/* `slidepipe index` over the file (store/index.c reads every member),
 * then the cohort it wrote must open. */
static void index_it(const char *path) {
    sp_error err = {0};
    const char *paths[] = {path};
    if (!sp_store_index(index_path, paths, 1, &err)) {
        if (!sp_error_is_set(&err))
            abort();
        return;
    }
    sp_store_reader *r = NULL;
    if (!sp_store_open(index_path, &r, &err) ||
        sp_store_reader_kind(r) != SP_STORE_COHORT ||
        sp_store_member_count(r) != 1)
        abort();
    sp_store_close(r);
    unlink(index_path);
}

static void check(const char *path, bool index) {
    sp_store_reader *r = NULL;
    sp_error err = {0};
    if (!sp_store_open(path, &r, &err)) {
        if (r || !sp_error_is_set(&err))
            abort();
        return;
    }
    if (sp_store_reader_kind(r) == SP_STORE_SLIDE) {
        read_slide(r);
        if (index) {
            sp_store_close(r);
            index_it(path);
            return;
        }
    } else {
        for (size_t i = 0; i < sp_store_member_count(r); i++)
            if (!sp_store_member_path(r, i))
                abort();
    }
    sp_store_close(r);
}

/* ---- setup ----------------------------------------------------------- */

static uint8_t *slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f)
        abort();
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc((size_t)len);
    if (!b || fread(b, 1, (size_t)len, f) != (size_t)len)
        abort();
    fclose(f);
    *n = (size_t)len;
    return b;
}

static void write_base(void) {
    sp_store_meta m = {.source_file = "x.svs",
                       .vendor = "aperio",
                       .width = 2000,
                       .height = 1500,
                       .mpp_x = 0.5,
                       .mpp_y = 0.5,
                       .objective_power = 20,
                       .quickhash = "8f3c0e",
                       .parameters = "{}",
                       .start_time = 1714564800.0,
                       .end_time = 1714564860.5,
                       .patch_size = 256,
                       .patch_level = 0,
                       .downsample = 1.0,
                       .level_width = 2000,
                       .level_height = 1500,
                       .columns = COLS,
                       .n_columns = NCOL};
    sp_store_writer *w = NULL;
    sp_error err = {0};
    static int64_t xy[ROWS * 2];
    static float ft[ROWS * NCOL];
    static uint8_t img[32 * 24 * 3];
    for (int i = 0; i < ROWS; i++) {
        xy[2 * i] = (i % 20) * 256;
        xy[2 * i + 1] = (i / 20) * 256;
        for (int c = 0; c < NCOL; c++)
            ft[i * NCOL + c] = i % 17 == 0 ? NAN : (float)(i * (c + 1));
    }
    for (size_t i = 0; i < sizeof img; i++)
        img[i] = (uint8_t)(i * 31);
    const char *sn[] = {"tissue_area_mm2", "tiles_total"};
    double sv[] = {12.5, ROWS};
    if (!sp_store_create(slide_path, &m, &w, &err) ||
        !sp_store_append_rows(w, xy, ft, ROWS, &err) ||
        !sp_store_put_image(w, "mask", img, 32, 24, 1, 62.5, &err) ||
        !sp_store_put_image(w, "thumbnail", img, 32, 24, 3, 62.5, &err) ||
        !sp_store_set_summary(w, sn, sv, 2, &err) ||
        !sp_store_commit(w, &err)) {
        fprintf(stderr, "fuzz_h5schema: %s\n", err.msg);
        abort();
    }
    const char *paths[] = {slide_path};
    if (!sp_store_index(cohort_path, paths, 1, &err)) {
        fprintf(stderr, "fuzz_h5schema: %s\n", err.msg);
        abort();
    }
}

static void cleanup(void) {
    unlink(slide_path);
    unlink(cohort_path);
    unlink(work_path);
    unlink(index_path);
    rmdir(dir);
    free(base[0]);
    free(base[1]);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    snprintf(dir, sizeof dir, "/tmp/sp-fuzz-h5schema-XXXXXX");
    if (!mkdtemp(dir))
        abort();
    snprintf(slide_path, sizeof slide_path, "%s/slide.h5", dir);
    snprintf(cohort_path, sizeof cohort_path, "%s/cohort.h5", dir);
    snprintf(work_path, sizeof work_path, "%s/work.h5", dir);
    snprintf(index_path, sizeof index_path, "%s/index.h5", dir);
    /* one thread: the parallel inflate is the same code, and idle OpenMP
     * workers spinning between inputs would cost most of the time */
    omp_set_num_threads(1);
    sp__h5_quiet();
    /* HDF5 keeps freed blocks on free lists for reuse; bound them so the
     * resident size says what our code holds */
    H5set_free_list_limits(1 << 20, 1 << 18, 1 << 20, 1 << 18, 1 << 20,
                           1 << 18);
    write_base();
    base[0] = slurp(slide_path, &base_n[0]);
    base[1] = slurp(cohort_path, &base_n[1]);
    atexit(cleanup);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    in_t in = {data, size};
    uint8_t first = u8(&in);
    int which = first & 1;  /* the slide file or the cohort */
    bool index = first & 2; /* and index the edited slide file */
    /* strings the edits may write: the input's last 64 bytes */
    char strs[65];
    size_t sl = size < 64 ? size : 64;
    memcpy(strs, data + size - sl, sl);
    strs[sl] = '\0';
    int fd = open(work_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0 ||
        write(fd, base[which], base_n[which]) != (ssize_t)base_n[which])
        abort();
    close(fd);
    hid_t f = H5Fopen(work_path, H5F_ACC_RDWR, H5P_DEFAULT);
    if (f < 0)
        abort();
    for (int k = 0; k < 6 && in.n; k++)
        edit(f, &in, strs);
    if (H5Fclose(f) < 0)
        abort();
    H5Eclear2(H5E_DEFAULT);
    /* to look at the edited file of one input (docs/FUZZING.md) */
    const char *keep = getenv("SP_FUZZ_H5_KEEP");
    if (keep) {
        size_t n = 0;
        uint8_t *b = slurp(work_path, &n);
        FILE *o = fopen(keep, "wb");
        if (o) {
            fwrite(b, 1, n, o);
            fclose(o);
        }
        free(b);
    }
    check(work_path, index);
    return 0;
}
