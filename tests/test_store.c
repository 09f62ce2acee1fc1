/* store: writer/reader round trip, atomic commit and abort, rejected files,
 * the --where parser (cases and error positions) and its evaluator. */
#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store.h"
#include "testutil.h"

static const char *const COLS[] = {"a", "b", "c.d"};

static sp_store_meta test_meta(void) {
    sp_store_meta m = {.source_file = "t.svs",
                       .vendor = "aperio",
                       .width = 1000,
                       .height = 800,
                       .mpp_x = 0.25,
                       .mpp_y = NAN,
                       .objective_power = NAN,
                       .quickhash = NULL,
                       .parameters = "{}",
                       .start_time = NAN,
                       .end_time = NAN,
                       .patch_size = 256,
                       .patch_level = 1,
                       .downsample = 4,
                       .level_width = 250,
                       .level_height = 200,
                       .columns = COLS,
                       .n_columns = 3};
    return m;
}

static char *tmp_path(const char *name) {
    static char buf[8][600];
    static int k;
    char *p = buf[k++ % 8];
    snprintf(p, 600, "%s/%s", sp_test_tmpdir(), name);
    return p;
}

/* Write `rows` rows: coords (i, 2i), features a=i, b=-i, c=NaN when i%7==0. */
static bool write_file(const char *path, int64_t rows, size_t batch) {
    sp_store_meta m = test_meta();
    sp_store_writer *w = NULL;
    sp_error err = {0};
    if (!sp_store_create(path, &m, &w, &err))
        return false;
    int64_t *xy = malloc(batch * 2 * sizeof *xy);
    float *f = malloc(batch * 3 * sizeof *f);
    for (int64_t i = 0; i < rows;) {
        size_t k = 0;
        for (; k < batch && i < rows; k++, i++) {
            xy[2 * k] = i;
            xy[2 * k + 1] = 2 * i;
            f[3 * k] = (float)i;
            f[3 * k + 1] = (float)-i;
            f[3 * k + 2] = i % 7 == 0 ? NAN : 0.5f;
        }
        CU_ASSERT_TRUE(sp_store_append_rows(w, xy, f, k, &err));
    }
    free(xy);
    free(f);
    const char *sn[] = {"area", "n"};
    double sv[] = {1.5, (double)rows};
    CU_ASSERT_TRUE(sp_store_set_summary(w, sn, sv, 2, &err));
    uint8_t img[6 * 4 * 3];
    for (size_t i = 0; i < sizeof img; i++)
        img[i] = (uint8_t)i;
    CU_ASSERT_TRUE(sp_store_put_image(w, "thumbnail", img, 6, 4, 3, 10, &err));
    CU_ASSERT_FALSE(sp_store_put_image(w, "thumbnail", img, 6, 4, 3, 10, &err));
    sp_error_clear(&err);
    CU_ASSERT_TRUE(sp_store_commit(w, &err));
    return !sp_error_is_set(&err);
}

static void test_round_trip(void) {
    const char *path = tmp_path("rt.h5");
    const int64_t rows = 300000; /* more than one chunk */
    CU_ASSERT_TRUE_FATAL(write_file(path, rows, 4099));
    char *tmp = sp_temp_sibling(path);
    CU_ASSERT_FALSE(sp_path_exists(tmp));
    free(tmp);
    sp_store_reader *r = NULL;
    sp_error err = {0};
    CU_ASSERT_TRUE_FATAL(sp_store_open(path, &r, &err));
    CU_ASSERT_EQUAL(sp_store_reader_kind(r), SP_STORE_SLIDE);
    CU_ASSERT_EQUAL(sp_store_row_count(r), rows);
    const sp_store_meta *m = sp_store_reader_meta(r);
    CU_ASSERT_STRING_EQUAL(m->source_file, "t.svs");
    CU_ASSERT_STRING_EQUAL(m->vendor, "aperio");
    CU_ASSERT_EQUAL(m->width, 1000);
    CU_ASSERT_DOUBLE_EQUAL(m->mpp_x, 0.25, 0);
    CU_ASSERT_TRUE(isnan(m->mpp_y));
    CU_ASSERT_TRUE(isnan(m->objective_power));
    CU_ASSERT_PTR_NULL(m->quickhash);
    CU_ASSERT_EQUAL(m->patch_size, 256);
    CU_ASSERT_EQUAL(m->patch_level, 1);
    CU_ASSERT_DOUBLE_EQUAL(m->downsample, 4, 0);
    CU_ASSERT_EQUAL(m->level_width, 250);
    CU_ASSERT_EQUAL(m->n_columns, 3);
    CU_ASSERT_EQUAL(sp_store_column_index(r, "c.d"), 2);
    CU_ASSERT_EQUAL(sp_store_column_index(r, "zz"), -1);
    size_t block = sp_store_block_rows(r);
    CU_ASSERT_EQUAL(block, 262144);
    /* every block, direct (parallel) and through HDF5, agree with the data */
    float *a = malloc(block * sizeof *a), *b = malloc(block * sizeof *b);
    float *c = malloc(block * sizeof *c), *h = malloc(block * sizeof *h);
    int64_t *xy = malloc(block * 2 * sizeof *xy);
    bool ok = true;
    for (int64_t start = 0; start < rows; start += (int64_t)block) {
        size_t n = (size_t)(rows - start < (int64_t)block ? rows - start
                                                          : (int64_t)block);
        int cols[3] = {0, 1, 2};
        float *outs[3] = {a, b, c};
        CU_ASSERT_TRUE(sp_store_read_columns(r, cols, 3, start, n, outs, &err));
        CU_ASSERT_TRUE(sp_store_read_column(r, 2, start, n, h, &err));
        CU_ASSERT_TRUE(sp_store_read_coords(r, start, n, xy, &err));
        for (size_t i = 0; i < n; i++) {
            int64_t row = start + (int64_t)i;
            ok &= a[i] == (float)row && b[i] == (float)-row;
            ok &= row % 7 == 0 ? isnan(c[i]) && isnan(h[i])
                               : c[i] == 0.5f && h[i] == 0.5f;
            ok &= xy[2 * i] == row && xy[2 * i + 1] == 2 * row;
        }
    }
    CU_ASSERT_TRUE(ok);
    /* an unaligned block goes through HDF5 */
    int col1 = 1;
    float *o1[1] = {a};
    CU_ASSERT_TRUE(sp_store_read_columns(r, &col1, 1, 5, 10, o1, &err));
    CU_ASSERT_EQUAL(a[0], -5.0f);
    CU_ASSERT_FALSE(sp_store_read_column(r, 0, rows - 1, 2, a, &err));
    sp_error_clear(&err);
    CU_ASSERT_EQUAL(sp_store_summary_count(r), 2);
    const char *name;
    double v;
    CU_ASSERT_TRUE(sp_store_summary_at(r, 0, &name, &v));
    CU_ASSERT_STRING_EQUAL(name, "area");
    CU_ASSERT_DOUBLE_EQUAL(v, 1.5, 0);
    uint8_t *img = NULL;
    int64_t w, hh;
    int ch;
    CU_ASSERT_TRUE(
        sp_store_read_image(r, "thumbnail", &img, &w, &hh, &ch, &err));
    CU_ASSERT(w == 6 && hh == 4 && ch == 3 && img && img[71] == 71);
    free(img);
    CU_ASSERT_FALSE(sp_store_read_image(r, "mask", &img, &w, &hh, &ch, &err));
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "no /mask"));
    free(a);
    free(b);
    free(c);
    free(h);
    free(xy);
    sp_store_close(r);
}

static void test_abort_and_validation(void) {
    const char *path = tmp_path("aborted.h5");
    sp_store_meta m = test_meta();
    sp_store_writer *w = NULL;
    sp_error err = {0};
    CU_ASSERT_TRUE_FATAL(sp_store_create(path, &m, &w, &err));
    char *tmp = sp_temp_sibling(path);
    CU_ASSERT_TRUE(sp_path_exists(tmp));
    CU_ASSERT_FALSE(sp_path_exists(path));
    int64_t xy[2] = {1, 2};
    float f[3] = {1, 2, 3};
    CU_ASSERT_TRUE(sp_store_append_rows(w, xy, f, 1, &err));
    sp_store_abort(w);
    CU_ASSERT_FALSE(sp_path_exists(tmp));
    CU_ASSERT_FALSE(sp_path_exists(path));
    free(tmp);
    sp_store_abort(NULL);
    /* bad metadata */
    const char *dup[] = {"a", "a"};
    m.columns = dup;
    m.n_columns = 2;
    CU_ASSERT_FALSE(sp_store_create(path, &m, &w, &err));
    CU_ASSERT_EQUAL(err.code, SP_ERR_USAGE);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "duplicate column name 'a'"));
    const char *bad[] = {"x"};
    m.columns = bad;
    m.n_columns = 1;
    sp_error_clear(&err);
    CU_ASSERT_FALSE(sp_store_create(path, &m, &w, &err));
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "invalid column name 'x'"));
    /* an unwritable place */
    m = test_meta();
    sp_error_clear(&err);
    CU_ASSERT_FALSE(sp_store_create("/nonexistent-dir/x.h5", &m, &w, &err));
    CU_ASSERT_EQUAL(err.code, SP_ERR_OUTPUT);
    CU_ASSERT_PTR_NOT_NULL(
        strstr(err.msg, "/nonexistent-dir/x.h5: cannot create"));
    /* zero rows, zero columns */
    m.n_columns = 0;
    m.columns = NULL;
    const char *p0 = tmp_path("zero.h5");
    sp_error_clear(&err);
    CU_ASSERT_TRUE_FATAL(sp_store_create(p0, &m, &w, &err));
    CU_ASSERT_TRUE(sp_store_commit(w, &err));
    sp_store_reader *r = NULL;
    CU_ASSERT_TRUE(sp_store_open(p0, &r, &err));
    CU_ASSERT_EQUAL(sp_store_row_count(r), 0);
    sp_store_close(r);
}

static void expect_reject(const char *path, const char *words) {
    sp_store_reader *r = NULL;
    sp_error err = {0};
    CU_ASSERT_FALSE(sp_store_open(path, &r, &err));
    CU_ASSERT_PTR_NULL(r);
    CU_ASSERT_EQUAL(err.code, SP_ERR_INPUT);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, path));
    if (!strstr(err.msg, words))
        fprintf(stderr, "\n  message '%s' lacks '%s'\n", err.msg, words);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, words));
}

/* Replace /thumbnail of `path` by a dataset of `rank` dims (chunked,
 * unlimited, nothing written when `empty`). */
static void replace_thumbnail(const char *path, int rank, const hsize_t *dims,
                              bool empty) {
    hid_t fid = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    CU_ASSERT_TRUE_FATAL(fid >= 0);
    CU_ASSERT_TRUE(H5Ldelete(fid, "thumbnail", H5P_DEFAULT) >= 0);
    hsize_t maxd[3] = {H5S_UNLIMITED, H5S_UNLIMITED, H5S_UNLIMITED};
    hsize_t chunk[3] = {1, 1, 1};
    hid_t s = H5Screate_simple(rank, dims, maxd);
    hid_t p = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(p, rank, chunk);
    hid_t d = H5Dcreate2(fid, "thumbnail", H5T_STD_U8LE, s, H5P_DEFAULT, p,
                         H5P_DEFAULT);
    CU_ASSERT_TRUE(d >= 0);
    if (!empty) {
        uint8_t px[64] = {0};
        CU_ASSERT_TRUE(H5Dwrite(d, H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL,
                                H5P_DEFAULT, px) >= 0);
    }
    H5Dclose(d);
    H5Pclose(p);
    H5Sclose(s);
    H5Fclose(fid);
}

/* An image whose shape is not the writer's, or whose size is claimed
 * without data, is refused before anything is allocated for it (found by
 * fuzz/fuzz_h5schema.c: a 2^40 x 2^40 image with no data, 0 channels). */
static void test_damaged_images(void) {
    const char *path = tmp_path("images.h5");
    static const struct {
        int rank;
        hsize_t dims[3];
        bool empty;
    } cases[] = {{2, {UINT64_C(1) << 40, UINT64_C(1) << 40, 1}, true},
                 {2, {40000, 40000, 1}, true},
                 {3, {1, 0, 0}, false},
                 {3, {2, 2, 2}, false},
                 {2, {0, 5, 1}, false}};
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        CU_ASSERT_TRUE_FATAL(write_file(path, 10, 10));
        replace_thumbnail(path, cases[k].rank, cases[k].dims, cases[k].empty);
        sp_store_reader *r = NULL;
        sp_error err = {0};
        CU_ASSERT_TRUE_FATAL(sp_store_open(path, &r, &err));
        uint8_t *img = NULL;
        int64_t w, h;
        int ch;
        CU_ASSERT_FALSE(
            sp_store_read_image(r, "thumbnail", &img, &w, &h, &ch, &err));
        CU_ASSERT_PTR_NULL(img);
        CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "wrong shape or no data"));
        sp_store_close(r);
    }
    /* a small thumbnail of the writer's shape, written: read */
    CU_ASSERT_TRUE_FATAL(write_file(path, 10, 10));
    hsize_t ok[3] = {4, 4, 3};
    replace_thumbnail(path, 3, ok, false);
    sp_store_reader *r = NULL;
    sp_error err = {0};
    CU_ASSERT_TRUE_FATAL(sp_store_open(path, &r, &err));
    uint8_t *img = NULL;
    int64_t w, h;
    int ch;
    CU_ASSERT_TRUE(
        sp_store_read_image(r, "thumbnail", &img, &w, &h, &ch, &err));
    CU_ASSERT(w == 4 && h == 4 && ch == 3);
    free(img);
    sp_store_close(r);
}

/* A cohort whose member list claims more paths than it stores is refused
 * without allocating for them (found by fuzz/fuzz_h5schema.c). */
static void test_damaged_cohort(void) {
    const char *slide = tmp_path("member.h5"), *cohort = tmp_path("co.h5");
    CU_ASSERT_TRUE_FATAL(write_file(slide, 10, 10));
    sp_error err = {0};
    CU_ASSERT_TRUE_FATAL(sp_store_index(cohort, &slide, 1, &err));
    hid_t fid = H5Fopen(cohort, H5F_ACC_RDWR, H5P_DEFAULT);
    CU_ASSERT_TRUE_FATAL(fid >= 0);
    CU_ASSERT_TRUE(H5Ldelete(fid, "slides/path", H5P_DEFAULT) >= 0);
    hsize_t dim = UINT64_C(1) << 40, maxd = H5S_UNLIMITED, chunk = 1024;
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, H5T_VARIABLE);
    hid_t s = H5Screate_simple(1, &dim, &maxd);
    hid_t p = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(p, 1, &chunk);
    hid_t d = H5Dcreate2(fid, "slides/path", t, s, H5P_DEFAULT, p, H5P_DEFAULT);
    CU_ASSERT_TRUE(d >= 0);
    H5Dclose(d);
    H5Pclose(p);
    H5Sclose(s);
    H5Tclose(t);
    H5Fclose(fid);
    sp_store_reader *r = NULL;
    CU_ASSERT_FALSE(sp_store_open(cohort, &r, &err));
    CU_ASSERT_PTR_NULL(r);
    CU_ASSERT_EQUAL(err.code, SP_ERR_INPUT);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "wrong shape or no data"));
}

/* /features in chunks far larger than the writer's: refused at open, as
 * a chunk is allocated whole when read (seen while writing
 * fuzz/fuzz_h5schema.c, which reaches it). */
static void test_huge_chunks(void) {
    const char *path = tmp_path("chunks.h5");
    CU_ASSERT_TRUE_FATAL(write_file(path, 10, 10));
    hid_t fid = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    CU_ASSERT_TRUE_FATAL(fid >= 0);
    hid_t f0 = H5Dopen2(fid, "features", H5P_DEFAULT);
    hid_t a0 = H5Aopen(f0, "columns", H5P_DEFAULT);
    hid_t at = H5Aget_type(a0), as = H5Aget_space(a0);
    char *names[3];
    CU_ASSERT_TRUE_FATAL(H5Aread(a0, at, names) >= 0);
    H5Aclose(a0);
    H5Dclose(f0);
    CU_ASSERT_TRUE(H5Ldelete(fid, "features", H5P_DEFAULT) >= 0);
    hsize_t dims[2] = {10, 3}, maxd[2] = {H5S_UNLIMITED, 3};
    hsize_t chunk[2] = {UINT64_C(1) << 28, 1};
    hid_t s = H5Screate_simple(2, dims, maxd);
    hid_t p = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(p, 2, chunk);
    hid_t d = H5Dcreate2(fid, "features", H5T_IEEE_F32LE, s, H5P_DEFAULT, p,
                         H5P_DEFAULT);
    CU_ASSERT_TRUE_FATAL(d >= 0);
    hid_t a = H5Acreate2(d, "columns", at, as, H5P_DEFAULT, H5P_DEFAULT);
    CU_ASSERT_TRUE(a >= 0 && H5Awrite(a, at, names) >= 0);
    H5Dvlen_reclaim(at, as, H5P_DEFAULT, names);
    H5Aclose(a);
    H5Dclose(d);
    H5Pclose(p);
    H5Sclose(s);
    H5Sclose(as);
    H5Tclose(at);
    H5Fclose(fid);
    sp_store_reader *r = NULL;
    sp_error err = {0};
    CU_ASSERT_FALSE(sp_store_open(path, &r, &err));
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "chunks of 268435456 x 1 values"));
}

/* Rows a file claims without storing them are refused at open: they
 * would be read as fill values (a 20 KB file made `index` write a
 * /slide_id of 2^40 rows; seen while writing fuzz/fuzz_h5schema.c). */
static void test_unstored_rows(void) {
    const char *path = tmp_path("unstored.h5");
    CU_ASSERT_TRUE_FATAL(write_file(path, 10, 10));
    hid_t fid = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    CU_ASSERT_TRUE_FATAL(fid >= 0);
    hid_t f = H5Dopen2(fid, "features", H5P_DEFAULT);
    hid_t c = H5Dopen2(fid, "coords", H5P_DEFAULT);
    hsize_t fd[2] = {UINT64_C(1) << 40, 3}, cd[2] = {UINT64_C(1) << 40, 2};
    CU_ASSERT_TRUE(H5Dset_extent(f, fd) >= 0);
    CU_ASSERT_TRUE(H5Dset_extent(c, cd) >= 0);
    H5Dclose(c);
    H5Dclose(f);
    H5Fclose(fid);
    sp_store_reader *r = NULL;
    sp_error err = {0};
    CU_ASSERT_FALSE(sp_store_open(path, &r, &err));
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "claims 1099511627776 rows"));
    /* the file as written opens */
    CU_ASSERT_TRUE_FATAL(write_file(path, 10, 10));
    sp_error_clear(&err);
    CU_ASSERT_TRUE(sp_store_open(path, &r, &err));
    sp_store_close(r);
}

static void test_rejected_files(void) {
    const char *empty = tmp_path("empty.h5");
    FILE *f = fopen(empty, "wb");
    fclose(f);
    expect_reject(empty, "empty file");
    const char *text = tmp_path("text.h5");
    f = fopen(text, "wb");
    fputs("just some text, not HDF5 at all\n", f);
    fclose(f);
    expect_reject(text, "not an HDF5 file");
    expect_reject(tmp_path("missing.h5"), "No such file");
    expect_reject(sp_test_tmpdir(), "is a directory");
    /* foreign: an HDF5 file without our schema */
    const char *foreign = tmp_path("foreign.h5");
    hid_t fid = H5Fcreate(foreign, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    CU_ASSERT_TRUE_FATAL(fid >= 0);
    H5Fclose(fid);
    expect_reject(foreign, "not a slidepipe file");
    /* newer schema */
    const char *newer = tmp_path("newer.h5");
    CU_ASSERT_TRUE_FATAL(write_file(newer, 10, 10));
    fid = H5Fopen(newer, H5F_ACC_RDWR, H5P_DEFAULT);
    hid_t a = H5Aopen(fid, "schema_version", H5P_DEFAULT);
    int64_t v = 7;
    CU_ASSERT_TRUE(H5Awrite(a, H5T_NATIVE_INT64, &v) >= 0);
    H5Aclose(a);
    H5Fclose(fid);
    expect_reject(newer,
                  "schema_version 7 is newer than this slidepipe reads (1)");
    /* truncated */
    const char *full = tmp_path("full.h5");
    const char *trunc = tmp_path("trunc.h5");
    CU_ASSERT_TRUE_FATAL(write_file(full, 5000, 1000));
    f = fopen(full, "rb");
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)size);
    CU_ASSERT_EQUAL(fread(buf, 1, (size_t)size, f), (size_t)size);
    fclose(f);
    f = fopen(trunc, "wb");
    fwrite(buf, 1, (size_t)size / 2, f);
    fclose(f);
    free(buf);
    expect_reject(trunc, "truncated or damaged");
}

/* ---- expressions ------------------------------------------------------- */

static void expect_parse_error(const char *text, const char *msg) {
    sp_expr *e = NULL;
    sp_error err = {0};
    CU_ASSERT_FALSE(sp_expr_parse(text, &e, &err));
    CU_ASSERT_PTR_NULL(e);
    CU_ASSERT_EQUAL(err.code, SP_ERR_USAGE);
    if (strcmp(err.msg, msg) != 0)
        fprintf(stderr, "\n  '%s': got '%s'\n  want '%s'\n", text, err.msg,
                msg);
    CU_ASSERT_STRING_EQUAL(err.msg, msg);
}

static void test_expr_errors(void) {
    expect_parse_error("tissue_fraction > and",
                       "position 19: expected a number or a column name "
                       "after '>', found 'and'");
    expect_parse_error("", "position 1: expected a comparison, 'not' or '(', "
                           "found the end of the expression");
    expect_parse_error("blur", "position 5: expected a comparison operator "
                               "(< <= > >= == !=) after 'blur', found the end "
                               "of the expression");
    expect_parse_error("(a > 1", "position 7: expected ')' or 'and'/'or', "
                                 "found the end of the expression");
    expect_parse_error("a > 1)", "position 6: expected 'and', 'or' or the end "
                                 "(unbalanced ')'), found ')'");
    expect_parse_error("a > 1 b < 2", "position 7: expected 'and', 'or' or the "
                                      "end, found 'b'");
    expect_parse_error("a ! 1", "position 3: expected a comparison operator "
                                "(< <= > >= == !=) after 'a', found '!'");
    expect_parse_error("a > 1 and # b", "position 11: unexpected '#'");
    expect_parse_error("a > 1e999", "position 5: expected a number or a column "
                                    "name after '>', found '1e999'");
    expect_parse_error("not", "position 4: expected a comparison, 'not' or "
                              "'(', found the end of the expression");
    char deep[1000];
    memset(deep, '(', 500);
    strcpy(deep + 500, "a > 1");
    sp_expr *e = NULL;
    sp_error err = {0};
    CU_ASSERT_FALSE(sp_expr_parse(deep, &e, &err));
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "nested too deeply"));
    /* a long and/or chain is a deep tree: bounded, not a stack overflow
     * (shown by fuzz/fuzz_where.c on such an input) */
    size_t terms = 100000, len = 0;
    char *chain = malloc(terms * 10);
    CU_ASSERT_FATAL(chain != NULL);
    for (size_t i = 0; i < terms; i++)
        len += (size_t)sprintf(chain + len, "%sa<%zu", i ? " or " : "", i % 7);
    sp_error_clear(&err);
    CU_ASSERT_FALSE(sp_expr_parse(chain, &e, &err));
    CU_ASSERT_PTR_NULL(e);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "expression too long"));
    /* 2000 terms still parse and evaluate */
    chain[0] = '\0';
    len = 0;
    for (size_t i = 0; i < 2000; i++)
        len += (size_t)sprintf(chain + len, "%sa>%zu", i ? " and " : "", i);
    sp_error_clear(&err);
    CU_ASSERT_TRUE(sp_expr_parse(chain, &e, &err));
    float av[2] = {5000, 10};
    uint8_t out[2];
    sp_expr_input in = {.f32 = av};
    CU_ASSERT_TRUE(e && sp_expr_eval(e, &in, 2, out));
    CU_ASSERT(out[0] == 1 && out[1] == 0);
    sp_expr_free(e);
    free(chain);
}

static size_t eval_count(const char *text, const float *a, const float *b,
                         const int64_t *x, size_t n) {
    sp_expr *e = NULL;
    sp_error err = {0};
    if (!sp_expr_parse(text, &e, &err)) {
        fprintf(stderr, "\n  parse '%s': %s\n", text, err.msg);
        return (size_t)-1;
    }
    sp_expr_input in[8];
    for (size_t i = 0; i < sp_expr_column_count(e); i++) {
        const char *c = sp_expr_column(e, i);
        in[i] = strcmp(c, "a") == 0   ? (sp_expr_input){.f32 = a}
                : strcmp(c, "b") == 0 ? (sp_expr_input){.f32 = b}
                                      : (sp_expr_input){.i64 = x};
    }
    uint8_t out[16];
    size_t k = 0;
    if (sp_expr_eval(e, in, n, out))
        for (size_t i = 0; i < n; i++)
            k += out[i];
    sp_expr_free(e);
    return k;
}

static void test_expr_eval(void) {
    const float a[6] = {0.1f, 0.5f, NAN, 2, -1, 0.5f};
    const float b[6] = {1, 0.5f, 3, NAN, -2, 0};
    const int64_t x[6] = {0, 256, 512, 768, 1024, 1280};
    CU_ASSERT_EQUAL(eval_count("a > 0.4", a, b, x, 6), 3);
    CU_ASSERT_EQUAL(eval_count("not a > 0.4", a, b, x, 6), 3); /* NaN kept */
    CU_ASSERT_EQUAL(eval_count("a != a", a, b, x, 6), 1);      /* the NaN */
    CU_ASSERT_EQUAL(eval_count("a == a", a, b, x, 6), 5);
    CU_ASSERT_EQUAL(eval_count("a == b", a, b, x, 6), 1);
    CU_ASSERT_EQUAL(eval_count("a = 0.5", a, b, x, 6), 2);
    CU_ASSERT_EQUAL(eval_count("a <> 0.5", a, b, x, 6), 4);
    /* compared in double: the float nearest 0.1 is above 0.1 */
    CU_ASSERT_EQUAL(eval_count("a > 0.1 and a < 0.2", a, b, x, 6), 1);
    CU_ASSERT_EQUAL(eval_count("0.4 < a", a, b, x, 6), 3);
    CU_ASSERT_EQUAL(eval_count("x >= 512 AND (a > 0 OR b < 0)", a, b, x, 6), 3);
    CU_ASSERT_EQUAL(eval_count("not (x < 512 or a < 0)", a, b, x, 6), 3);
    CU_ASSERT_EQUAL(eval_count("1 < 2", a, b, x, 6), 6);
    CU_ASSERT_EQUAL(eval_count("1 > 2 or a < -0.5", a, b, x, 6), 1);
    CU_ASSERT_EQUAL(eval_count("x > a", a, b, x, 6), 4);
    CU_ASSERT_EQUAL(eval_count("not not a > -5e0", a, b, x, 6), 5);
    CU_ASSERT_EQUAL(eval_count("a>=.5 and b<=+0.5", a, b, x, 6), 2);
    expect_parse_error("a >= 0.5and b < 1",
                       "position 6: expected a number or "
                       "a column name after '>=', found '0.5and'");
    sp_expr *e = NULL;
    sp_error err = {0};
    CU_ASSERT_TRUE(sp_expr_parse("b > 1 and a > b or x.y < 3", &e, &err));
    CU_ASSERT_EQUAL(sp_expr_column_count(e), 3);
    CU_ASSERT_STRING_EQUAL(sp_expr_column(e, 0), "b");
    CU_ASSERT_STRING_EQUAL(sp_expr_column(e, 2), "x.y");
    sp_expr_free(e);
    sp_expr_free(NULL);
}

static void test_index(void) {
    const char *p1 = tmp_path("m1.h5"), *p2 = tmp_path("m2.h5");
    CU_ASSERT_TRUE_FATAL(write_file(p1, 100, 33));
    CU_ASSERT_TRUE_FATAL(write_file(p2, 50, 50));
    const char *paths[] = {p1, p2};
    const char *cohort = tmp_path("cohort.h5");
    sp_error err = {0};
    CU_ASSERT_TRUE_FATAL(sp_store_index(cohort, paths, 2, &err));
    sp_store_reader *r = NULL;
    CU_ASSERT_TRUE_FATAL(sp_store_open(cohort, &r, &err));
    CU_ASSERT_EQUAL(sp_store_reader_kind(r), SP_STORE_COHORT);
    CU_ASSERT_EQUAL(sp_store_member_count(r), 2);
    CU_ASSERT_STRING_EQUAL(sp_store_member_path(r, 1), p2);
    sp_store_close(r);
    /* a member that is not a slide file fails the whole index */
    const char *bad[] = {p1, tmp_path("missing.h5")};
    const char *c2 = tmp_path("cohort2.h5");
    CU_ASSERT_FALSE(sp_store_index(c2, bad, 2, &err));
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "missing.h5"));
    CU_ASSERT_FALSE(sp_path_exists(c2));
}

int main(void) {
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 2;
    CU_pSuite s = CU_add_suite("store", NULL, NULL);
    CU_ADD_TEST(s, test_round_trip);
    CU_ADD_TEST(s, test_abort_and_validation);
    CU_ADD_TEST(s, test_rejected_files);
    CU_ADD_TEST(s, test_damaged_images);
    CU_ADD_TEST(s, test_damaged_cohort);
    CU_ADD_TEST(s, test_huge_chunks);
    CU_ADD_TEST(s, test_unstored_rows);
    CU_ADD_TEST(s, test_expr_errors);
    CU_ADD_TEST(s, test_expr_eval);
    CU_ADD_TEST(s, test_index);
    return sp_test_run();
}
