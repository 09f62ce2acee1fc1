/* The per-slide HDF5 writer: temporary file, buffered chunk writes, commit
 * by rename. One thread owns a writer (see store.h). */
#include "store_private.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <omp.h>
#include <zlib.h>

struct sp_store_writer {
    char *path; /* final path */
    char *tmp;  /* temporary sibling written until commit */
    hid_t file, coords, features, summary;
    size_t ncol;
    float *colbuf;      /* ncol columns of SPS_CHUNK_ROWS values */
    int64_t *xybuf;     /* SPS_CHUNK_ROWS (x, y) pairs */
    size_t nbuf;        /* rows buffered */
    int64_t nrows;      /* rows already written to the file */
    double end_time;    /* NAN = time of commit */
    sp_store_meta grid; /* grid fields, for /coords created at first flush */
    char *source_name;
    char **columns;
    bool have_mask, have_thumbnail;
    bool failed; /* a write failed: only abort is useful now */
};

static bool valid_column_name(const char *s) {
    if (!s || !*s)
        return false;
    if (!(s[0] == '_' || (s[0] >= 'A' && s[0] <= 'Z') ||
          (s[0] >= 'a' && s[0] <= 'z')))
        return false;
    for (const char *p = s; *p; p++)
        if (!(*p == '_' || *p == '.' || (*p >= 'A' && *p <= 'Z') ||
              (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9')))
            return false;
    static const char *const reserved[] = {"slide", "x",  "y",
                                           "and",   "or", "not"};
    for (size_t i = 0; i < sizeof reserved / sizeof reserved[0]; i++)
        if (strcasecmp(s, reserved[i]) == 0)
            return false;
    return true;
}

static bool validate(const char *path, const sp_store_meta *m, sp_error *err) {
    if (!m->source_file || !*m->source_file)
        return sp_error_set(err, SP_ERR_USAGE, path,
                            "store: the source file name is required");
    if (m->width < 1 || m->height < 1)
        return sp_error_set(err, SP_ERR_USAGE, path,
                            "store: slide size must be positive");
    if (m->patch_size < 1 || m->patch_level < 0 || !isfinite(m->downsample) ||
        m->downsample < 1 || m->level_width < 0 || m->level_height < 0)
        return sp_error_set(err, SP_ERR_USAGE, path,
                            "store: invalid tile grid (patch size %lld, "
                            "level %d, downsample %g)",
                            (long long)m->patch_size, m->patch_level,
                            m->downsample);
    if (m->n_columns > 0 && !m->columns)
        return sp_error_set(err, SP_ERR_USAGE, path, "store: no column names");
    for (size_t i = 0; i < m->n_columns; i++) {
        if (!valid_column_name(m->columns[i]))
            return sp_error_set(
                err, SP_ERR_USAGE, path,
                "store: invalid column name '%s' (letters, "
                "digits, '_' and '.'; not slide, x, y, and, or, not)",
                m->columns[i] ? m->columns[i] : "(null)");
        for (size_t j = 0; j < i; j++)
            if (strcmp(m->columns[i], m->columns[j]) == 0)
                return sp_error_set(err, SP_ERR_USAGE, path,
                                    "store: duplicate column name '%s'",
                                    m->columns[i]);
    }
    return true;
}

/* Dataset creation property list: chunked, shuffle + deflate. */
static hid_t chunked_dcpl(int rank, const hsize_t *chunk, int level) {
    hid_t p = H5Pcreate(H5P_DATASET_CREATE);
    if (p < 0)
        return p;
    if (H5Pset_chunk(p, rank, chunk) < 0 || H5Pset_shuffle(p) < 0 ||
        H5Pset_deflate(p, (unsigned)level) < 0) {
        H5Pclose(p);
        return H5I_INVALID_HID;
    }
    return p;
}

/* A dataset access list with no chunk cache: every chunk is written whole,
 * once, so caching would only copy it. */
static hid_t nocache_dapl(void) {
    hid_t p = H5Pcreate(H5P_DATASET_ACCESS);
    if (p >= 0 && H5Pset_chunk_cache(p, 0, 0, 1.0) < 0) {
        H5Pclose(p);
        return H5I_INVALID_HID;
    }
    return p;
}

static hid_t create_extendible(hid_t file, const char *name, hid_t type,
                               hsize_t ncols, hsize_t chunk_rows,
                               hsize_t chunk_cols) {
    hsize_t dims[2] = {0, ncols};
    hsize_t maxd[2] = {H5S_UNLIMITED, ncols ? ncols : H5S_UNLIMITED};
    hsize_t chunk[2] = {chunk_rows, chunk_cols};
    hid_t d = H5I_INVALID_HID;
    hid_t s = H5Screate_simple(2, dims, maxd);
    hid_t p = chunked_dcpl(2, chunk, SPS_DEFLATE_LEVEL);
    hid_t a = nocache_dapl();
    if (s >= 0 && p >= 0 && a >= 0)
        d = H5Dcreate2(file, name, type, s, H5P_DEFAULT, p, a);
    sp__close_any(a);
    sp__close_any(p);
    sp__close_any(s);
    return d;
}

static bool write_root_attrs(sp_store_writer *w, const sp_store_meta *m,
                             sp_error *err) {
    const char *f = w->path;
    hid_t r = w->file;
    int64_t ver = SP_STORE_SCHEMA_VERSION;
    int64_t wh[2] = {m->width, m->height};
    char start[32];
    sp_format_utc(isnan(m->start_time) ? sp_wall_clock() : m->start_time,
                  start);
    if (!sp__attr_put_str(r, SPS_ATTR_SCHEMA, SP_STORE_SCHEMA, f, err) ||
        !sp__attr_put_i64(r, SPS_ATTR_VERSION, &ver, 1, f, err) ||
        !sp__attr_put_str(r, "source_file", m->source_file, f, err) ||
        !sp__attr_put_str(r, "vendor", m->vendor ? m->vendor : "unknown", f,
                          err) ||
        !sp__attr_put_i64(r, "width", &wh[0], 1, f, err) ||
        !sp__attr_put_i64(r, "height", &wh[1], 1, f, err) ||
        !sp__attr_put_str(r, "slidepipe_version",
                          m->version ? m->version : SP_VERSION, f, err) ||
        !sp__attr_put_str(r, "parameters", m->parameters ? m->parameters : "{}",
                          f, err) ||
        !sp__attr_put_str(r, "start_time", start, f, err))
        return false;
    if (!isnan(m->mpp_x) && !sp__attr_put_f64(r, "mpp_x", &m->mpp_x, 1, f, err))
        return false;
    if (!isnan(m->mpp_y) && !sp__attr_put_f64(r, "mpp_y", &m->mpp_y, 1, f, err))
        return false;
    if (!isnan(m->objective_power) &&
        !sp__attr_put_f64(r, "objective_power", &m->objective_power, 1, f, err))
        return false;
    if (m->quickhash && !sp__attr_put_str(r, "quickhash", m->quickhash, f, err))
        return false;
    return true;
}

/* CLAM-style attributes of /coords. */
static bool write_coords_attrs(sp_store_writer *w, const sp_store_meta *m,
                               sp_error *err) {
    const char *f = w->path;
    int64_t ps = m->patch_size, pl = m->patch_level;
    int64_t dim[2] = {m->level_width, m->level_height};
    double ds[2] = {m->downsample, m->downsample};
    /* CLAM's `name`: the slide file name without its extension */
    char name[512];
    snprintf(name, sizeof name, "%s", sp_basename(m->source_file));
    char *dot = strrchr(name, '.');
    if (dot && dot != name)
        *dot = '\0';
    return sp__attr_put_i64(w->coords, "patch_size", &ps, 1, f, err) &&
           sp__attr_put_i64(w->coords, "patch_level", &pl, 1, f, err) &&
           sp__attr_put_f64(w->coords, "downsample", ds, 2, f, err) &&
           sp__attr_put_i64(w->coords, "level_dim", dim, 2, f, err) &&
           sp__attr_put_i64(w->coords, "downsampled_level_dim", dim, 2, f,
                            err) &&
           sp__attr_put_str(w->coords, "name", name, f, err);
}

static void close_handles(sp_store_writer *w) {
    sp__close_any(w->summary);
    sp__close_any(w->features);
    sp__close_any(w->coords);
    sp__close_any(w->file);
    w->summary = w->features = w->coords = w->file = H5I_INVALID_HID;
}

static void writer_free(sp_store_writer *w) {
    if (!w)
        return;
    close_handles(w);
    if (w->columns)
        for (size_t i = 0; i < w->ncol; i++)
            free(w->columns[i]);
    free(w->columns);
    free(w->source_name);
    free(w->colbuf);
    free(w->xybuf);
    free(w->tmp);
    free(w->path);
    free(w);
}

bool sp_store_create(const char *path, const sp_store_meta *meta,
                     sp_store_writer **out, sp_error *err) {
    sp__h5_quiet();
    *out = NULL;
    if (!validate(path, meta, err))
        return false;
    hid_t fapl = H5I_INVALID_HID;
    sp_store_writer *w = calloc(1, sizeof *w);
    if (!w)
        return sp_error_set(err, SP_ERR_NOMEM, path, "out of memory");
    w->file = w->coords = w->features = w->summary = H5I_INVALID_HID;
    w->ncol = meta->n_columns;
    w->end_time = meta->end_time;
    w->path = strdup(path);
    w->tmp = sp_temp_sibling(path);
    w->colbuf =
        malloc((w->ncol ? w->ncol : 1) * SPS_CHUNK_ROWS * sizeof(float));
    w->xybuf = malloc(2 * SPS_CHUNK_ROWS * sizeof(int64_t));
    if (!w->path || !w->tmp || !w->colbuf || !w->xybuf) {
        sp_error_set(err, SP_ERR_NOMEM, path, "out of memory");
        goto fail;
    }
    fapl = H5Pcreate(H5P_FILE_ACCESS);
    if (fapl < 0 || H5Pset_fclose_degree(fapl, H5F_CLOSE_STRONG) < 0) {
        sp__h5_error(err, SP_ERR_INTERNAL, path, "cannot set up HDF5");
        goto fail;
    }
    w->file = H5Fcreate(w->tmp, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    if (w->file < 0) {
        sp__h5_error(err, SP_ERR_OUTPUT, path, "cannot create");
        goto fail;
    }
    w->summary =
        H5Gcreate2(w->file, SPS_SUMMARY, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (w->summary < 0) {
        sp__h5_error(err, SP_ERR_OUTPUT, path, "cannot create /summary");
        goto fail;
    }
    if (!write_root_attrs(w, meta, err))
        goto fail;
    /* /coords and /features are created at the first flush, when the
     * chunk size is known: a slide with fewer rows than a chunk gets one
     * chunk of exactly its rows */
    w->grid = *meta;
    w->grid.columns = NULL;
    w->source_name = strdup(meta->source_file);
    w->grid.source_file = w->source_name;
    w->columns = calloc(w->ncol ? w->ncol : 1, sizeof *w->columns);
    if (!w->source_name || !w->columns) {
        sp_error_set(err, SP_ERR_NOMEM, path, "out of memory");
        goto fail;
    }
    for (size_t i = 0; i < w->ncol; i++)
        if (!(w->columns[i] = strdup(meta->columns[i]))) {
            sp_error_set(err, SP_ERR_NOMEM, path, "out of memory");
            goto fail;
        }
    H5Pclose(fapl);
    *out = w;
    return true;
fail:
    sp__close_any(fapl);
    close_handles(w);
    if (w->tmp)
        unlink(w->tmp);
    writer_free(w);
    return false;
}

/* Extend a 2-D dataset to `rows` and write `n` rows starting at `start`
 * from `buf` for columns [col, col + ncols). */
static bool write_block(hid_t d, hsize_t rows, hsize_t total_cols,
                        hsize_t start, hsize_t n, hsize_t col, hsize_t ncols,
                        hid_t mtype, const void *buf) {
    hsize_t dims[2] = {rows, total_cols};
    hsize_t off[2] = {start, col}, cnt[2] = {n, ncols};
    bool ok = false;
    hid_t fs = H5I_INVALID_HID, ms = H5I_INVALID_HID;
    if (H5Dset_extent(d, dims) < 0)
        goto out;
    fs = H5Dget_space(d);
    ms = H5Screate_simple(2, cnt, NULL);
    if (fs < 0 || ms < 0 ||
        H5Sselect_hyperslab(fs, H5S_SELECT_SET, off, NULL, cnt, NULL) < 0 ||
        H5Dwrite(d, mtype, ms, fs, H5P_DEFAULT, buf) < 0)
        goto out;
    ok = true;
out:
    sp__close_any(ms);
    sp__close_any(fs);
    return ok;
}

static bool create_datasets(sp_store_writer *w, hsize_t chunk_rows,
                            sp_error *err) {
    hsize_t crows =
        chunk_rows < SPS_COORD_CHUNK_ROWS ? chunk_rows : SPS_COORD_CHUNK_ROWS;
    w->coords =
        create_extendible(w->file, SPS_COORDS, H5T_STD_I64LE, 2, crows, 2);
    if (w->coords < 0)
        return sp__h5_error(err, SP_ERR_OUTPUT, w->path,
                            "cannot create /coords");
    w->features = create_extendible(w->file, SPS_FEATURES, H5T_IEEE_F32LE,
                                    w->ncol, chunk_rows, 1);
    if (w->features < 0)
        return sp__h5_error(err, SP_ERR_OUTPUT, w->path,
                            "cannot create /features");
    return write_coords_attrs(w, &w->grid, err) &&
           sp__attr_put_strs(w->features, SPS_COLUMNS,
                             (const char *const *)w->columns, w->ncol, w->path,
                             err);
}

/* Write the buffered rows. `final`: no more rows will come. */
static bool flush_rows(sp_store_writer *w, bool final, sp_error *err) {
    if (w->features < 0) {
        hsize_t rows =
            final && w->nbuf < SPS_CHUNK_ROWS ? w->nbuf : SPS_CHUNK_ROWS;
        if (!create_datasets(w, rows ? rows : 1, err)) {
            w->failed = true;
            return false;
        }
    }
    if (w->nbuf == 0)
        return true;
    hsize_t start = (hsize_t)w->nrows, n = w->nbuf;
    hsize_t rows = start + n;
    if (!write_block(w->coords, rows, 2, start, n, 0, 2, H5T_NATIVE_INT64,
                     w->xybuf)) {
        w->failed = true;
        return sp__h5_error(err, SP_ERR_OUTPUT, w->path,
                            "cannot write /coords");
    }
    if (w->ncol == 0) {
        hsize_t dims[2] = {rows, 0};
        if (H5Dset_extent(w->features, dims) < 0) {
            w->failed = true;
            return sp__h5_error(err, SP_ERR_OUTPUT, w->path,
                                "cannot write /features");
        }
    }
    for (size_t c = 0; c < w->ncol; c++) {
        if (!write_block(w->features, rows, w->ncol, start, n, c, 1,
                         H5T_NATIVE_FLOAT, w->colbuf + c * SPS_CHUNK_ROWS)) {
            w->failed = true;
            return sp__h5_error(err, SP_ERR_OUTPUT, w->path,
                                "cannot write /features");
        }
    }
    w->nrows += (int64_t)n;
    w->nbuf = 0;
    return true;
}

bool sp_store_append_rows(sp_store_writer *w, const int64_t *coords_xy,
                          const float *features, size_t n, sp_error *err) {
    sp__h5_quiet();
    if (w->failed)
        return sp_error_set(err, SP_ERR_OUTPUT, w->path,
                            "store: an earlier write failed");
    size_t done = 0;
    while (done < n) {
        size_t k = SPS_CHUNK_ROWS - w->nbuf;
        if (k > n - done)
            k = n - done;
        memcpy(w->xybuf + 2 * w->nbuf, coords_xy + 2 * done,
               k * 2 * sizeof(int64_t));
        for (size_t c = 0; c < w->ncol; c++) {
            float *dst = w->colbuf + c * SPS_CHUNK_ROWS + w->nbuf;
            const float *src = features + done * w->ncol + c;
            for (size_t r = 0; r < k; r++)
                dst[r] = src[r * w->ncol];
        }
        w->nbuf += k;
        done += k;
        if (w->nbuf == SPS_CHUNK_ROWS && !flush_rows(w, false, err))
            return false;
    }
    return true;
}

/* Image chunks of about this many bytes: small enough that several deflate
 * at once. */
#define IMAGE_CHUNK_BYTES (1u << 18)

/* Deflates chunk i (rows from i * crow) of an image of `height` rows of
 * `row` bytes into out (bound bytes), its length into *len; the last chunk
 * padded with zeros, as HDF5 pads it. */
static bool deflate_chunk(const uint8_t *data, hsize_t height, hsize_t row,
                          hsize_t crow, int level, size_t i, uint8_t *out,
                          size_t bound, size_t *len) {
    const size_t raw = (size_t)(crow * row);
    hsize_t r0 = (hsize_t)i * crow;
    hsize_t rows = height - r0 < crow ? height - r0 : crow;
    const uint8_t *src = data + r0 * row;
    uint8_t *padded = NULL;
    if (rows < crow) {
        padded = calloc(raw, 1);
        if (!padded)
            return false;
        memcpy(padded, src, (size_t)(rows * row));
        src = padded;
    }
    uLongf n = (uLongf)bound;
    bool ok = compress2(out, &n, src, (uLong)raw, level) == Z_OK;
    *len = n;
    free(padded);
    return ok;
}

/* Writes the `height` rows of `row` bytes at `data` into dataset `d`, whose
 * chunks are `crow` whole rows, filtered by shuffle (nothing to do on
 * bytes) then deflate at `level`: the chunks are deflated here, several at
 * once, by the zlib that HDF5's deflate filter calls, and go in with
 * H5Dwrite_chunk. Called inside a parallel region (beside other work), the
 * chunks are tasks that the team's idle threads take; outside one, a
 * parallel loop of OpenMP's default team. */
static bool write_image_chunks(hid_t d, const uint8_t *data, hsize_t height,
                               hsize_t row, hsize_t crow, int level) {
    const size_t nchunks = (size_t)((height + crow - 1) / crow);
    const size_t bound = compressBound((uLong)(crow * row));
    uint8_t *out = malloc(nchunks * bound);
    size_t *len = malloc(nchunks * sizeof *len);
    bool ok = out && len;
    int bad = !ok;
    if (ok && omp_get_level() > 0) { /* a team of one runs them itself */
#pragma omp taskloop grainsize(1) shared(bad)
        for (size_t i = 0; i < nchunks; i++)
            if (!deflate_chunk(data, height, row, crow, level, i,
                               out + i * bound, bound, &len[i])) {
#pragma omp atomic write
                bad = 1;
            }
    } else if (ok) {
#pragma omp parallel for schedule(dynamic, 1) reduction(| : bad)
        for (size_t i = 0; i < nchunks; i++)
            bad |= !deflate_chunk(data, height, row, crow, level, i,
                                  out + i * bound, bound, &len[i]);
    }
    ok = !bad;
    for (size_t i = 0; ok && i < nchunks; i++) {
        hsize_t off[3] = {(hsize_t)i * crow, 0, 0};
        ok = H5Dwrite_chunk(d, H5P_DEFAULT, 0, off, len[i], out + i * bound) >=
             0;
    }
    free(out);
    free(len);
    return ok;
}

bool sp_store_put_image(sp_store_writer *w, const char *name,
                        const uint8_t *data, int64_t width, int64_t height,
                        int channels, double downsample, sp_error *err) {
    sp__h5_quiet();
    bool is_mask = strcmp(name, "mask") == 0;
    bool is_thumb = strcmp(name, "thumbnail") == 0;
    if (!is_mask && !is_thumb)
        return sp_error_set(err, SP_ERR_USAGE, w->path,
                            "store: unknown image '%s'", name);
    if ((is_mask && channels != 1) ||
        (is_thumb && channels != 1 && channels != 3) || width < 1 ||
        height < 1 || !isfinite(downsample) || downsample <= 0)
        return sp_error_set(err, SP_ERR_USAGE, w->path,
                            "store: invalid %s image (%lldx%lld, %d channels)",
                            name, (long long)width, (long long)height,
                            channels);
    if ((is_mask && w->have_mask) || (is_thumb && w->have_thumbnail))
        return sp_error_set(err, SP_ERR_USAGE, w->path,
                            "store: image '%s' written twice", name);
    bool ok = false;
    hid_t s = H5I_INVALID_HID, p = H5I_INVALID_HID, d = H5I_INVALID_HID;
    int rank = channels == 3 ? 3 : 2;
    hsize_t dims[3] = {(hsize_t)height, (hsize_t)width, (hsize_t)channels};
    hsize_t row = (hsize_t)width * (hsize_t)channels;
    hsize_t crow = IMAGE_CHUNK_BYTES / row;
    if (crow < 1)
        crow = 1;
    if (crow > dims[0])
        crow = dims[0];
    hsize_t chunk[3] = {crow, dims[1], dims[2]};
    s = H5Screate_simple(rank, dims, NULL);
    p = chunked_dcpl(rank, chunk, SPS_IMAGE_DEFLATE_LEVEL);
    if (s < 0 || p < 0)
        goto h5fail;
    d = H5Dcreate2(w->file, name, H5T_STD_U8LE, s, H5P_DEFAULT, p, H5P_DEFAULT);
    if (d < 0 || !write_image_chunks(d, data, dims[0], row, crow,
                                     SPS_IMAGE_DEFLATE_LEVEL))
        goto h5fail;
    /* HDF5 Image and Palette Specification 1.2, so viewers show it */
    if (!sp__attr_put_str(d, "CLASS", "IMAGE", w->path, err) ||
        !sp__attr_put_str(d, "IMAGE_VERSION", "1.2", w->path, err) ||
        !sp__attr_put_str(d, "IMAGE_SUBCLASS",
                          channels == 3 ? "IMAGE_TRUECOLOR" : "IMAGE_GRAYSCALE",
                          w->path, err) ||
        (channels == 3 && !sp__attr_put_str(d, "INTERLACE_MODE",
                                            "INTERLACE_PIXEL", w->path, err)) ||
        !sp__attr_put_f64(d, "downsample", &downsample, 1, w->path, err))
        goto out;
    if (is_mask)
        w->have_mask = true;
    else
        w->have_thumbnail = true;
    ok = true;
    goto out;
h5fail:
    sp__h5_error(err, SP_ERR_OUTPUT, w->path, "cannot write image");
out:
    sp__close_any(d);
    sp__close_any(p);
    sp__close_any(s);
    if (!ok)
        w->failed = true;
    return ok;
}

bool sp_store_set_summary(sp_store_writer *w, const char *const *names,
                          const double *values, size_t n, sp_error *err) {
    sp__h5_quiet();
    for (size_t i = 0; i < n; i++) {
        if (!names[i] || !*names[i] || strchr(names[i], '/'))
            return sp_error_set(err, SP_ERR_USAGE, w->path,
                                "store: invalid summary name");
        if (!sp__attr_put_f64(w->summary, names[i], &values[i], 1, w->path,
                              err)) {
            w->failed = true;
            return false;
        }
    }
    return true;
}

bool sp_store_commit(sp_store_writer *w, sp_error *err) {
    sp__h5_quiet();
    bool ok = false;
    char end[32];
    if (w->failed) {
        sp_error_set(err, SP_ERR_OUTPUT, w->path,
                     "store: an earlier write failed");
        goto out;
    }
    if (!flush_rows(w, true, err))
        goto out;
    sp_format_utc(isnan(w->end_time) ? sp_wall_clock() : w->end_time, end);
    if (!sp__attr_put_str(w->file, "end_time", end, w->path, err))
        goto out;
    sp__close_any(w->summary);
    sp__close_any(w->features);
    sp__close_any(w->coords);
    w->summary = w->features = w->coords = H5I_INVALID_HID;
    herr_t rc = H5Fclose(w->file);
    w->file = H5I_INVALID_HID;
    if (rc < 0) {
        sp__h5_error(err, SP_ERR_OUTPUT, w->path, "cannot close");
        goto out;
    }
    if (!sp__fsync_path(w->tmp)) {
        sp_error_errno(err, SP_ERR_OUTPUT, w->path, errno, "fsync failed");
        goto out;
    }
    if (rename(w->tmp, w->path) != 0) {
        sp_error_errno(err, SP_ERR_OUTPUT, w->path, errno,
                       "cannot rename into place");
        goto out;
    }
    {
        /* make the rename durable: fsync the folder */
        char *dir = strdup(w->path);
        if (dir) {
            char *slash = strrchr(dir, '/');
            if (slash)
                *(slash == dir ? slash + 1 : slash) = '\0';
            sp__fsync_path(slash ? dir : ".");
            free(dir);
        }
    }
    ok = true;
out:
    close_handles(w);
    if (!ok)
        unlink(w->tmp);
    writer_free(w);
    return ok;
}

void sp_store_abort(sp_store_writer *w) {
    if (!w)
        return;
    sp__h5_quiet();
    close_handles(w);
    unlink(w->tmp);
    writer_free(w);
}
