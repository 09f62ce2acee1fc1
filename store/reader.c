/* The reader: open and validate slide files and cohort indexes, read
 * column blocks. One thread at a time (see store.h). */
#include "store_private.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

struct sp_store_reader {
    char *path;
    sp_store_kind kind;
    int version;
    hid_t file, coords, features;
    hid_t fspace; /* dataspace of /features, reused by every read */
    hid_t cspace; /* dataspace of /coords */
    int64_t nrows;
    size_t block_rows;
    sp_store_meta meta;
    char **columns;
    size_t ncol;
    char *source_file, *vendor, *quickhash, *swversion, *parameters;
    char **sum_names;
    double *sum_values;
    size_t nsum;
    char **members;
    size_t nmembers;
    /* direct chunk reads: /features is float32 LE, chunks of (rows, 1),
     * shuffle then deflate; we inflate chunks ourselves, in parallel */
    bool direct;
    hsize_t chunk_rows;
    size_t nslots;
    unsigned char **raw; /* compressed chunk per column slot */
    size_t *rawcap;
    size_t *rawlen;
    unsigned char **plain; /* inflated (still shuffled) chunk per slot */
};

static const unsigned char HDF5_SIGNATURE[8] = {0x89, 'H',  'D',  'F',
                                                '\r', '\n', 0x1a, '\n'};

/* Checks before HDF5 sees the file: exists, regular, not empty, and
 * whether it starts with the HDF5 signature. */
static bool precheck(const char *path, bool *has_sig, sp_error *err) {
    struct stat st;
    if (stat(path, &st) != 0)
        return sp_error_errno(err, SP_ERR_INPUT, path, errno, "cannot open");
    if (S_ISDIR(st.st_mode))
        return sp_error_set(err, SP_ERR_INPUT, path, "is a directory");
    if (!S_ISREG(st.st_mode))
        return sp_error_set(err, SP_ERR_INPUT, path, "not a regular file");
    if (st.st_size == 0)
        return sp_error_set(err, SP_ERR_INPUT, path,
                            "empty file (not a slidepipe HDF5 file)");
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return sp_error_errno(err, SP_ERR_INPUT, path, errno, "cannot open");
    unsigned char head[8] = {0};
    ssize_t got = read(fd, head, sizeof head);
    close(fd);
    *has_sig = got == 8 && memcmp(head, HDF5_SIGNATURE, 8) == 0;
    return true;
}

/* True when all of d's data is stored: every chunk written, or the
 * whole contiguous or compact block (dims already bounded). */
static bool fully_stored(hid_t d, int rank, const hsize_t *dims) {
    hid_t p = H5Dget_create_plist(d), t = H5Dget_type(d);
    bool ok = false;
    hsize_t need = 1;
    if (p >= 0 && t >= 0 && H5Pget_layout(p) == H5D_CHUNKED) {
        hsize_t c[3] = {1, 1, 1}, have = 0;
        if (H5Pget_chunk(p, rank, c) == rank) {
            bool fits = true;
            for (int i = 0; i < rank; i++) {
                hsize_t k = c[i] ? dims[i] / c[i] + (dims[i] % c[i] != 0) : 0;
                fits = fits && (k == 0 || need <= UINT64_MAX / k);
                need *= k;
            }
            hid_t s = H5Dget_space(d);
            ok = fits && s >= 0 && H5Dget_num_chunks(d, s, &have) >= 0 &&
                 have == need;
            sp__close_any(s);
        }
    } else if (p >= 0 && t >= 0) {
        size_t es = H5Tget_size(t);
        ok = es > 0;
        for (int i = 0; ok && i < rank; i++) {
            ok = dims[i] == 0 || need <= UINT64_MAX / es / dims[i];
            need *= dims[i];
        }
        ok = ok && H5Dget_storage_size(d) >= need * es;
    }
    sp__close_any(t);
    sp__close_any(p);
    return ok;
}

/* Read a 1-D variable-length string dataset. */
static bool read_str_dataset(hid_t loc, const char *name, char ***out,
                             size_t *n, const char *file, sp_error *err) {
    bool ok = false;
    hid_t d = H5I_INVALID_HID, s = H5I_INVALID_HID, t = H5I_INVALID_HID;
    hid_t ft = H5I_INVALID_HID;
    char **vl = NULL, **v = NULL;
    hssize_t np = 0;
    d = H5Dopen2(loc, name, H5P_DEFAULT);
    if (d < 0) {
        sp__h5_error(err, SP_ERR_INPUT, file, "cannot open dataset");
        goto out;
    }
    s = H5Dget_space(d);
    t = H5Tcopy(H5T_C_S1);
    ft = H5Dget_type(d);
    if (s < 0 || t < 0 || ft < 0 || H5Tset_size(t, H5T_VARIABLE) < 0 ||
        H5Tset_cset(t, H5Tget_cset(ft)) < 0 ||
        (np = H5Sget_simple_extent_npoints(s)) < 0) {
        sp__h5_error(err, SP_ERR_INPUT, file, "cannot read dataset");
        goto out;
    }
    /* one string per member, all stored: a count the file merely claims
     * is never allocated (found by fuzz/fuzz_h5schema.c) */
    hsize_t dim = 0;
    if (H5Sget_simple_extent_ndims(s) != 1 ||
        H5Sget_simple_extent_dims(s, &dim, NULL) != 1 ||
        H5Tget_class(ft) != H5T_STRING || !fully_stored(d, 1, &dim)) {
        H5Eclear2(H5E_DEFAULT);
        np = 0;
        sp_error_set(err, SP_ERR_INPUT, file,
                     "damaged slidepipe file: dataset '%s' has the wrong "
                     "shape or no data",
                     name);
        goto out;
    }
    vl = calloc(np ? (size_t)np : 1, sizeof *vl);
    v = calloc(np ? (size_t)np : 1, sizeof *v);
    if (!vl || !v) {
        sp_error_set(err, SP_ERR_NOMEM, file, "out of memory");
        goto out;
    }
    if (H5Dread(d, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, vl) < 0) {
        sp__h5_error(err, SP_ERR_INPUT, file, "cannot read dataset");
        goto out;
    }
    ok = true;
    for (hssize_t i = 0; i < np; i++)
        if (!(v[i] = strdup(vl[i] ? vl[i] : "")))
            ok = false;
    H5Dvlen_reclaim(t, s, H5P_DEFAULT, vl);
    if (!ok) {
        sp_error_set(err, SP_ERR_NOMEM, file, "out of memory");
        goto out;
    }
    *out = v;
    *n = (size_t)np;
    v = NULL;
out:
    sp__free_strs(v, np > 0 ? (size_t)np : 0);
    free(vl);
    sp__close_any(ft);
    sp__close_any(t);
    sp__close_any(s);
    sp__close_any(d);
    return ok;
}

/* Shape of a 2-D dataset; false unless rank 2 with `cols` columns (any
 * number when cols < 0) and of type class `cls`. */
static bool check_2d(hid_t d, H5T_class_t cls, long long cols, hsize_t dims[2],
                     const char *file, const char *name, sp_error *err) {
    hid_t s = H5Dget_space(d), t = H5Dget_type(d);
    int rank = s >= 0 ? H5Sget_simple_extent_ndims(s) : -1;
    bool ok = rank == 2 && H5Sget_simple_extent_dims(s, dims, NULL) == 2 &&
              t >= 0 && H5Tget_class(t) == cls &&
              (cols < 0 || dims[1] == (hsize_t)cols);
    sp__close_any(t);
    sp__close_any(s);
    if (!ok)
        return sp_error_set(err, SP_ERR_INPUT, file,
                            "damaged slidepipe file: /%s has the wrong shape "
                            "or type",
                            name);
    return true;
}

static herr_t collect_attr_name(hid_t loc, const char *name,
                                const H5A_info_t *info, void *data) {
    (void)loc;
    (void)info;
    sp_store_reader *r = data;
    char **names = realloc(r->sum_names, (r->nsum + 1) * sizeof *names);
    if (!names)
        return -1;
    r->sum_names = names;
    if (!(names[r->nsum] = strdup(name)))
        return -1;
    r->nsum++;
    return 0;
}

static bool read_summary(sp_store_reader *r, sp_error *err) {
    hid_t g = H5Gopen2(r->file, SPS_SUMMARY, H5P_DEFAULT);
    if (g < 0)
        return sp__h5_error(err, SP_ERR_INPUT, r->path,
                            "damaged slidepipe file: no /summary");
    bool ok = false;
    hsize_t idx = 0;
    if (H5Aiterate2(g, H5_INDEX_NAME, H5_ITER_INC, &idx, collect_attr_name, r) <
        0) {
        sp__h5_error(err, SP_ERR_INPUT, r->path, "cannot read /summary");
        goto out;
    }
    r->sum_values = calloc(r->nsum ? r->nsum : 1, sizeof(double));
    if (!r->sum_values) {
        sp_error_set(err, SP_ERR_NOMEM, r->path, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < r->nsum; i++)
        if (!sp__attr_get_f64(g, r->sum_names[i], &r->sum_values[i], 1, r->path,
                              err))
            goto out;
    ok = true;
out:
    H5Gclose(g);
    return ok;
}

/* Optional float attribute: NAN when absent. */
static bool opt_f64(hid_t obj, const char *name, double *out, const char *file,
                    sp_error *err) {
    *out = NAN;
    if (!sp__attr_exists(obj, name))
        return true;
    return sp__attr_get_f64(obj, name, out, 1, file, err);
}

static bool open_slide(sp_store_reader *r, sp_error *err) {
    const char *f = r->path;
    sp_store_meta *m = &r->meta;
    hsize_t cd[2], fd[2];
    r->coords = H5Dopen2(r->file, SPS_COORDS, H5P_DEFAULT);
    if (r->coords < 0)
        return sp__h5_error(err, SP_ERR_INPUT, f,
                            "damaged slidepipe file: no /coords");
    /* no chunk cache: column blocks are read whole, once */
    hid_t dapl = H5Pcreate(H5P_DATASET_ACCESS);
    if (dapl >= 0)
        H5Pset_chunk_cache(dapl, 0, 0, 1.0);
    r->features = H5Dopen2(r->file, SPS_FEATURES, dapl);
    sp__close_any(dapl);
    if (r->features < 0)
        return sp__h5_error(err, SP_ERR_INPUT, f,
                            "damaged slidepipe file: no /features");
    if (!check_2d(r->coords, H5T_INTEGER, 2, cd, f, SPS_COORDS, err) ||
        !check_2d(r->features, H5T_FLOAT, -1, fd, f, SPS_FEATURES, err))
        return false;
    /* /coords is read through HDF5, which allocates a chunk whole: one
     * far larger than the writer's (1 MiB) is refused */
    hid_t ccpl = H5Dget_create_plist(r->coords);
    hsize_t cc[2] = {0, 0};
    bool big = ccpl >= 0 && H5Pget_layout(ccpl) == H5D_CHUNKED &&
               H5Pget_chunk(ccpl, 2, cc) == 2 &&
               cc[0] * cc[1] > 2 * SPS_MAX_CHUNK_ROWS;
    sp__close_any(ccpl);
    if (big)
        return sp_error_set(err, SP_ERR_INPUT, f,
                            "damaged slidepipe file: /coords has chunks of "
                            "%llu x %llu values (at most %d)",
                            (unsigned long long)cc[0],
                            (unsigned long long)cc[1], 2 * SPS_MAX_CHUNK_ROWS);
    if (cd[0] != fd[0])
        return sp_error_set(err, SP_ERR_INPUT, f,
                            "damaged slidepipe file: /coords has %llu rows, "
                            "/features %llu",
                            (unsigned long long)cd[0],
                            (unsigned long long)fd[0]);
    r->nrows = (int64_t)fd[0];
    if (!sp__attr_get_strs(r->features, SPS_COLUMNS, &r->columns, &r->ncol, f,
                           err))
        return false;
    if (r->ncol != fd[1])
        return sp_error_set(err, SP_ERR_INPUT, f,
                            "damaged slidepipe file: /features has %llu "
                            "columns but %zu names",
                            (unsigned long long)fd[1], r->ncol);
    r->block_rows = SPS_CHUNK_ROWS;
    hid_t dcpl = H5Dget_create_plist(r->features);
    if (dcpl >= 0 && H5Pget_layout(dcpl) == H5D_CHUNKED) {
        hsize_t chunk[2] = {0, 0};
        if (H5Pget_chunk(dcpl, 2, chunk) == 2 && chunk[0] > 0)
            r->block_rows = (size_t)chunk[0];
        /* a chunk is read (and, direct, inflated) whole: one far larger
         * than the writer's 1 MiB would be allocated whole, so refuse it
         * (seen while writing fuzz/fuzz_h5schema.c) */
        if (chunk[0] * chunk[1] > SPS_MAX_CHUNK_ROWS) {
            sp__close_any(dcpl);
            return sp_error_set(err, SP_ERR_INPUT, f,
                                "damaged slidepipe file: /features has "
                                "chunks of %llu x %llu values (at most %d)",
                                (unsigned long long)chunk[0],
                                (unsigned long long)chunk[1],
                                SPS_MAX_CHUNK_ROWS);
        }
    }
    r->direct = false;
    if (dcpl >= 0 && H5Pget_layout(dcpl) == H5D_CHUNKED) {
        hsize_t chunk[2] = {0, 0};
        unsigned flags = 0, cd[8];
        size_t ncd = 8;
        hid_t t = H5Dget_type(r->features);
        bool le32 = t >= 0 && H5Tequal(t, H5T_IEEE_F32LE) > 0 &&
                    H5Tequal(H5T_NATIVE_FLOAT, H5T_IEEE_F32LE) > 0;
        sp__close_any(t);
        if (le32 && H5Pget_chunk(dcpl, 2, chunk) == 2 && chunk[1] == 1 &&
            H5Pget_nfilters(dcpl) == 2 &&
            H5Pget_filter2(dcpl, 0, &flags, &ncd, cd, 0, NULL, NULL) ==
                H5Z_FILTER_SHUFFLE) {
            ncd = 8;
            if (H5Pget_filter2(dcpl, 1, &flags, &ncd, cd, 0, NULL, NULL) ==
                H5Z_FILTER_DEFLATE) {
                r->direct = true;
                r->chunk_rows = chunk[0];
            }
        }
        H5Eclear2(H5E_DEFAULT);
    }
    sp__close_any(dcpl);
    /* rows the file claims but does not store would be "read" as fill
     * values: a 20 KB file could make `index` write a /slide_id of 2^40
     * rows (seen while writing fuzz/fuzz_h5schema.c) */
    if (!fully_stored(r->features, 2, fd) || !fully_stored(r->coords, 2, cd)) {
        H5Eclear2(H5E_DEFAULT);
        return sp_error_set(err, SP_ERR_INPUT, f,
                            "damaged slidepipe file: /features or /coords "
                            "claims %llu rows but does not store them",
                            (unsigned long long)fd[0]);
    }
    r->fspace = H5Dget_space(r->features);
    r->cspace = H5Dget_space(r->coords);
    if (r->fspace < 0 || r->cspace < 0)
        return sp__h5_error(err, SP_ERR_INPUT, f, "cannot read");

    hid_t root = r->file;
    int64_t ps = 0, pl = 0, dim[2] = {0, 0};
    double ds[2] = {1, 1};
    if (!sp__attr_get_str(root, "source_file", &r->source_file, f, err) ||
        !sp__attr_get_str(root, "vendor", &r->vendor, f, err) ||
        !sp__attr_get_str(root, "slidepipe_version", &r->swversion, f, err) ||
        !sp__attr_get_str(root, "parameters", &r->parameters, f, err) ||
        !sp__attr_get_i64(root, "width", &m->width, 1, f, err) ||
        !sp__attr_get_i64(root, "height", &m->height, 1, f, err) ||
        !opt_f64(root, "mpp_x", &m->mpp_x, f, err) ||
        !opt_f64(root, "mpp_y", &m->mpp_y, f, err) ||
        !opt_f64(root, "objective_power", &m->objective_power, f, err) ||
        (sp__attr_exists(root, "quickhash") &&
         !sp__attr_get_str(root, "quickhash", &r->quickhash, f, err)) ||
        !sp__attr_get_i64(r->coords, "patch_size", &ps, 1, f, err) ||
        !sp__attr_get_i64(r->coords, "patch_level", &pl, 1, f, err) ||
        !sp__attr_get_f64(r->coords, "downsample", ds, 1, f, err) ||
        !sp__attr_get_i64(r->coords, "level_dim", dim, 2, f, err))
        return false;
    m->source_file = r->source_file;
    m->vendor = r->vendor;
    m->quickhash = r->quickhash;
    m->version = r->swversion;
    m->parameters = r->parameters;
    m->start_time = m->end_time = NAN;
    m->patch_size = ps;
    m->patch_level = (int)pl;
    m->downsample = ds[0];
    m->level_width = dim[0];
    m->level_height = dim[1];
    m->columns = (const char *const *)r->columns;
    m->n_columns = r->ncol;
    return read_summary(r, err);
}

/* Resolve a member path against the folder of the cohort file. */
static char *resolve_member(const char *cohort, const char *member) {
    if (member[0] == '/')
        return strdup(member);
    const char *base = sp_basename(cohort);
    size_t dirlen = (size_t)(base - cohort);
    size_t n = dirlen + strlen(member) + 1;
    char *s = malloc(n);
    if (s)
        snprintf(s, n, "%.*s%s", (int)dirlen, cohort, member);
    return s;
}

static bool open_cohort(sp_store_reader *r, sp_error *err) {
    hid_t g = H5Gopen2(r->file, SPS_SLIDES, H5P_DEFAULT);
    if (g < 0)
        return sp__h5_error(err, SP_ERR_INPUT, r->path,
                            "damaged slidepipe cohort: no /slides");
    char **rel = NULL;
    size_t n = 0;
    bool ok = read_str_dataset(g, "path", &rel, &n, r->path, err);
    H5Gclose(g);
    if (!ok)
        return false;
    r->members = calloc(n ? n : 1, sizeof *r->members);
    if (!r->members) {
        sp__free_strs(rel, n);
        return sp_error_set(err, SP_ERR_NOMEM, r->path, "out of memory");
    }
    r->nmembers = n;
    for (size_t i = 0; i < n; i++)
        if (!(r->members[i] = resolve_member(r->path, rel[i])))
            ok = false;
    sp__free_strs(rel, n);
    if (!ok)
        return sp_error_set(err, SP_ERR_NOMEM, r->path, "out of memory");
    return true;
}

bool sp_store_open(const char *path, sp_store_reader **out, sp_error *err) {
    sp__h5_quiet();
    *out = NULL;
    bool has_sig = false;
    if (!precheck(path, &has_sig, err))
        return false;
    if (!has_sig && H5Fis_hdf5(path) <= 0) {
        H5Eclear2(H5E_DEFAULT);
        return sp_error_set(err, SP_ERR_INPUT, path,
                            "not an HDF5 file (not a slidepipe file)");
    }
    sp_store_reader *r = calloc(1, sizeof *r);
    if (!r)
        return sp_error_set(err, SP_ERR_NOMEM, path, "out of memory");
    r->file = r->coords = r->features = H5I_INVALID_HID;
    r->fspace = r->cspace = H5I_INVALID_HID;
    char *schema = NULL;
    int64_t version = 0;
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    if (!(r->path = strdup(path))) {
        sp_error_set(err, SP_ERR_NOMEM, path, "out of memory");
        goto fail;
    }
    if (fapl < 0 || H5Pset_fclose_degree(fapl, H5F_CLOSE_STRONG) < 0) {
        sp__h5_error(err, SP_ERR_INTERNAL, path, "cannot set up HDF5");
        goto fail;
    }
    r->file = H5Fopen(path, H5F_ACC_RDONLY, fapl);
    if (r->file < 0) {
        sp__h5_error(err, SP_ERR_INPUT, path, "truncated or damaged HDF5 file");
        goto fail;
    }
    if (!sp__attr_exists(r->file, SPS_ATTR_SCHEMA)) {
        H5Eclear2(H5E_DEFAULT);
        sp_error_set(err, SP_ERR_INPUT, path,
                     "not a slidepipe file (an HDF5 file without the root "
                     "attribute 'schema')");
        goto fail;
    }
    sp_error e2 = {0};
    if (!sp__attr_get_str(r->file, SPS_ATTR_SCHEMA, &schema, path, &e2)) {
        sp_error_set(err, SP_ERR_INPUT, path,
                     "not a slidepipe file (unreadable 'schema' attribute: %s)",
                     e2.msg);
        goto fail;
    }
    if (strcmp(schema, SP_STORE_SCHEMA) == 0)
        r->kind = SP_STORE_SLIDE;
    else if (strcmp(schema, SP_STORE_COHORT_SCHEMA) == 0)
        r->kind = SP_STORE_COHORT;
    else {
        sp_error_set(err, SP_ERR_INPUT, path,
                     "not a slidepipe file (schema '%.100s', expected '%s')",
                     schema, SP_STORE_SCHEMA);
        goto fail;
    }
    if (!sp__attr_get_i64(r->file, SPS_ATTR_VERSION, &version, 1, path, &e2)) {
        sp_error_set(err, SP_ERR_INPUT, path,
                     "damaged slidepipe file: no readable 'schema_version'");
        goto fail;
    }
    if (version > SP_STORE_SCHEMA_VERSION) {
        sp_error_set(err, SP_ERR_INPUT, path,
                     "schema_version %lld is newer than this slidepipe "
                     "reads (%d); upgrade slidepipe",
                     (long long)version, SP_STORE_SCHEMA_VERSION);
        goto fail;
    }
    if (version < 1) {
        sp_error_set(err, SP_ERR_INPUT, path,
                     "damaged slidepipe file: invalid schema_version %lld",
                     (long long)version);
        goto fail;
    }
    r->version = (int)version;
    if (!(r->kind == SP_STORE_SLIDE ? open_slide(r, err) : open_cohort(r, err)))
        goto fail;
    free(schema);
    H5Pclose(fapl);
    *out = r;
    return true;
fail:
    free(schema);
    sp__close_any(fapl);
    sp_store_close(r);
    return false;
}

void sp_store_close(sp_store_reader *r) {
    if (!r)
        return;
    sp__h5_quiet();
    sp__close_any(r->cspace);
    sp__close_any(r->fspace);
    sp__close_any(r->features);
    sp__close_any(r->coords);
    sp__close_any(r->file);
    sp__free_strs(r->columns, r->ncol);
    sp__free_strs(r->sum_names, r->nsum);
    sp__free_strs(r->members, r->nmembers);
    for (size_t i = 0; i < r->nslots; i++) {
        free(r->raw[i]);
        free(r->plain[i]);
    }
    free(r->raw);
    free(r->rawcap);
    free(r->rawlen);
    free(r->plain);
    free(r->sum_values);
    free(r->source_file);
    free(r->vendor);
    free(r->quickhash);
    free(r->swversion);
    free(r->parameters);
    free(r->path);
    free(r);
}

sp_store_kind sp_store_reader_kind(const sp_store_reader *r) { return r->kind; }
const char *sp_store_reader_path(const sp_store_reader *r) { return r->path; }
size_t sp_store_member_count(const sp_store_reader *r) { return r->nmembers; }
const char *sp_store_member_path(const sp_store_reader *r, size_t i) {
    return i < r->nmembers ? r->members[i] : NULL;
}
const sp_store_meta *sp_store_reader_meta(const sp_store_reader *r) {
    return &r->meta;
}
int sp_store_schema_version(const sp_store_reader *r) { return r->version; }
int64_t sp_store_row_count(const sp_store_reader *r) { return r->nrows; }
size_t sp_store_block_rows(const sp_store_reader *r) { return r->block_rows; }

int sp_store_column_index(const sp_store_reader *r, const char *name) {
    for (size_t i = 0; i < r->ncol; i++)
        if (strcmp(r->columns[i], name) == 0)
            return (int)i;
    return -1;
}

size_t sp_store_summary_count(const sp_store_reader *r) { return r->nsum; }

bool sp_store_summary_at(const sp_store_reader *r, size_t i, const char **name,
                         double *value) {
    if (i >= r->nsum)
        return false;
    *name = r->sum_names[i];
    *value = r->sum_values[i];
    return true;
}

static bool read_rows(hid_t d, hid_t space, hid_t mtype, int64_t start,
                      size_t n, hsize_t col, hsize_t ncols, void *out) {
    hsize_t off[2] = {(hsize_t)start, col}, cnt[2] = {n, ncols};
    /* same shape as the file selection, so HDF5 copies whole runs
     * instead of iterating element by element */
    hid_t ms = H5Screate_simple(2, cnt, NULL);
    bool ok =
        ms >= 0 &&
        H5Sselect_hyperslab(space, H5S_SELECT_SET, off, NULL, cnt, NULL) >= 0 &&
        H5Dread(d, mtype, ms, space, H5P_DEFAULT, out) >= 0;
    sp__close_any(ms);
    return ok;
}

bool sp_store_read_column(sp_store_reader *r, int column, int64_t start,
                          size_t n, float *out, sp_error *err) {
    sp__h5_quiet();
    if (r->kind != SP_STORE_SLIDE || column < 0 || (size_t)column >= r->ncol ||
        start < 0 || (uint64_t)start + n > (uint64_t)r->nrows)
        return sp_error_set(err, SP_ERR_INTERNAL, r->path,
                            "store: read outside /features");
    if (n == 0)
        return true;
    if (!read_rows(r->features, r->fspace, H5T_NATIVE_FLOAT, start, n,
                   (hsize_t)column, 1, out))
        return sp__h5_error(err, SP_ERR_INPUT, r->path,
                            "cannot read /features");
    return true;
}

static bool ensure_slots(sp_store_reader *r, size_t k) {
    if (k <= r->nslots)
        return true;
    unsigned char **raw = realloc(r->raw, k * sizeof *raw);
    if (raw)
        r->raw = raw;
    unsigned char **plain = realloc(r->plain, k * sizeof *plain);
    if (plain)
        r->plain = plain;
    size_t *cap = realloc(r->rawcap, k * sizeof *cap);
    if (cap)
        r->rawcap = cap;
    size_t *len = realloc(r->rawlen, k * sizeof *len);
    if (len)
        r->rawlen = len;
    if (!raw || !plain || !cap || !len)
        return false;
    for (size_t i = r->nslots; i < k; i++) {
        r->raw[i] = NULL;
        r->rawcap[i] = r->rawlen[i] = 0;
        r->plain[i] = malloc(r->chunk_rows * sizeof(float));
        if (!r->plain[i])
            return false;
        r->nslots = i + 1;
    }
    return true;
}

/* Inflate one chunk and undo the byte shuffle into `out` (n values).
 * No HDF5 call: safe on any thread. */
static bool decode_chunk(const unsigned char *raw, size_t rawlen,
                         unsigned char *plain, size_t chunk_rows, size_t n,
                         float *out) {
    z_stream z;
    memset(&z, 0, sizeof z);
    if (inflateInit(&z) != Z_OK)
        return false;
    size_t want = chunk_rows * sizeof(float);
    z.next_in = (unsigned char *)raw;
    z.avail_in = (uInt)rawlen;
    z.next_out = plain;
    z.avail_out = (uInt)want;
    int zr = inflate(&z, Z_FINISH);
    bool ok = zr == Z_STREAM_END && z.total_out == want;
    inflateEnd(&z);
    if (!ok)
        return false;
    unsigned char *dst = (unsigned char *)out;
    const unsigned char *b0 = plain, *b1 = plain + chunk_rows,
                        *b2 = plain + 2 * chunk_rows,
                        *b3 = plain + 3 * chunk_rows;
    for (size_t i = 0; i < n; i++) {
        dst[4 * i] = b0[i];
        dst[4 * i + 1] = b1[i];
        dst[4 * i + 2] = b2[i];
        dst[4 * i + 3] = b3[i];
    }
    return true;
}

bool sp_store_read_columns(sp_store_reader *r, const int *columns, size_t ncols,
                           int64_t start, size_t n, float *const *out,
                           sp_error *err) {
    sp__h5_quiet();
    for (size_t k = 0; k < ncols; k++)
        if (r->kind != SP_STORE_SLIDE || columns[k] < 0 ||
            (size_t)columns[k] >= r->ncol || start < 0 ||
            (uint64_t)start + n > (uint64_t)r->nrows)
            return sp_error_set(err, SP_ERR_INTERNAL, r->path,
                                "store: read outside /features");
    if (n == 0 || ncols == 0)
        return true;
    bool direct = r->direct && r->chunk_rows > 0 &&
                  (hsize_t)start % r->chunk_rows == 0 && n <= r->chunk_rows &&
                  r->chunk_rows <= (hsize_t)UINT32_MAX / sizeof(float);
    if (direct && !ensure_slots(r, ncols))
        return sp_error_set(err, SP_ERR_NOMEM, r->path, "out of memory");
    /* fetch the compressed chunks on this thread (HDF5) */
    for (size_t k = 0; direct && k < ncols; k++) {
        hsize_t off[2] = {(hsize_t)start, (hsize_t)columns[k]};
        hsize_t nbytes = 0;
        uint32_t mask = 0;
        if (H5Dget_chunk_storage_size(r->features, off, &nbytes) < 0 ||
            nbytes == 0 || nbytes > UINT32_MAX) {
            H5Eclear2(H5E_DEFAULT);
            direct = false;
            break;
        }
        if (nbytes > r->rawcap[k]) {
            unsigned char *b = realloc(r->raw[k], nbytes);
            if (!b)
                return sp_error_set(err, SP_ERR_NOMEM, r->path,
                                    "out of memory");
            r->raw[k] = b;
            r->rawcap[k] = nbytes;
        }
        if (H5Dread_chunk(r->features, H5P_DEFAULT, off, &mask, r->raw[k]) <
                0 ||
            mask != 0) {
            /* a filter skipped for this chunk, or an odd layout */
            H5Eclear2(H5E_DEFAULT);
            direct = false;
            break;
        }
        r->rawlen[k] = nbytes;
    }
    if (direct) {
        /* inflate the columns in parallel: zlib only, no HDF5 */
        int bad = 0;
        size_t rows = r->chunk_rows;
#pragma omp parallel for schedule(dynamic, 1) reduction(| : bad)
        for (size_t k = 0; k < ncols; k++)
            if (!decode_chunk(r->raw[k], r->rawlen[k], r->plain[k], rows, n,
                              out[k]))
                bad |= 1;
        if (!bad)
            return true;
        /* a chunk we could not decode ourselves: let HDF5 say why */
    }
    for (size_t k = 0; k < ncols; k++)
        if (!sp_store_read_column(r, columns[k], start, n, out[k], err))
            return false;
    return true;
}

bool sp_store_read_coords(sp_store_reader *r, int64_t start, size_t n,
                          int64_t *xy, sp_error *err) {
    sp__h5_quiet();
    if (r->kind != SP_STORE_SLIDE || start < 0 ||
        (uint64_t)start + n > (uint64_t)r->nrows)
        return sp_error_set(err, SP_ERR_INTERNAL, r->path,
                            "store: read outside /coords");
    if (n == 0)
        return true;
    if (!read_rows(r->coords, r->cspace, H5T_NATIVE_INT64, start, n, 0, 2, xy))
        return sp__h5_error(err, SP_ERR_INPUT, r->path, "cannot read /coords");
    return true;
}

bool sp_store_read_image(sp_store_reader *r, const char *name, uint8_t **data,
                         int64_t *width, int64_t *height, int *channels,
                         sp_error *err) {
    sp__h5_quiet();
    *data = NULL;
    if (r->kind != SP_STORE_SLIDE ||
        (strcmp(name, "mask") != 0 && strcmp(name, "thumbnail") != 0))
        return sp_error_set(err, SP_ERR_USAGE, r->path,
                            "store: unknown image '%s'", name);
    if (H5Lexists(r->file, name, H5P_DEFAULT) <= 0) {
        H5Eclear2(H5E_DEFAULT);
        return sp_error_set(err, SP_ERR_INPUT, r->path, "no /%s image", name);
    }
    bool ok = false;
    uint8_t *buf = NULL;
    hid_t d = H5Dopen2(r->file, name, H5P_DEFAULT);
    hid_t s = d >= 0 ? H5Dget_space(d) : H5I_INVALID_HID;
    hsize_t dims[3] = {0, 0, 1};
    int rank = s >= 0 ? H5Sget_simple_extent_ndims(s) : -1;
    if (rank < 2 || rank > 3 || H5Sget_simple_extent_dims(s, dims, NULL) < 0) {
        sp__h5_error(err, SP_ERR_INPUT, r->path, "cannot read image");
        goto out;
    }
    /* the shapes the writer makes (mask H x W, thumbnail H x W [x 1|3]),
     * at most the mask's own limit of pixels, and data for all of it:
     * never allocate what a damaged file merely claims */
    hsize_t ch = rank == 3 ? dims[2] : 1;
    if (dims[0] < 1 || dims[1] < 1 || (ch != 1 && ch != 3) ||
        (ch != 1 && strcmp(name, "mask") == 0) ||
        dims[0] > INT32_MAX / 2 / dims[1] || !fully_stored(d, rank, dims)) {
        H5Eclear2(H5E_DEFAULT);
        sp_error_set(err, SP_ERR_INPUT, r->path,
                     "damaged slidepipe file: /%s has the wrong shape or no "
                     "data",
                     name);
        goto out;
    }
    size_t total = (size_t)(dims[0] * dims[1] * ch);
    buf = malloc(total ? total : 1);
    if (!buf) {
        sp_error_set(err, SP_ERR_NOMEM, r->path, "out of memory");
        goto out;
    }
    if (H5Dread(d, H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0) {
        sp__h5_error(err, SP_ERR_INPUT, r->path, "cannot read image");
        goto out;
    }
    *data = buf;
    buf = NULL;
    *height = (int64_t)dims[0];
    *width = (int64_t)dims[1];
    *channels = rank == 3 ? (int)dims[2] : 1;
    ok = true;
out:
    free(buf);
    sp__close_any(s);
    sp__close_any(d);
    return ok;
}
