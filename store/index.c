/* The cohort index: one small HDF5 file whose virtual datasets span every
 * slide file's rows, plus a table of the slides and external links. */
#include "store_private.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    char *rel;  /* path relative to the cohort's folder */
    char *name; /* slide source file name */
    char *link; /* link name under /slide */
    int64_t rows, offset;
} member;

/* Relative path from folder `from` to file `to`, both absolute and
 * canonical (realpath). */
static char *relative_path(const char *from, const char *to) {
    /* length of the common leading components */
    size_t common = 0, i = 0;
    for (;; i++) {
        char a = from[i], b = to[i];
        if ((a == '/' || a == '\0') && (b == '/' || b == '\0'))
            common = i;
        if (a != b || a == '\0')
            break;
    }
    size_t ups = 0;
    for (const char *p = from + common; *p; p++)
        if (*p == '/' && p[1] != '\0')
            ups++;
    const char *rest = to + common;
    while (*rest == '/')
        rest++;
    size_t n = ups * 3 + strlen(rest) + 1;
    char *s = malloc(n);
    if (!s)
        return NULL;
    s[0] = '\0';
    for (size_t k = 0; k < ups; k++)
        strcat(s, "../");
    strcat(s, rest);
    return s;
}

/* Absolute canonical folder of `out_path` (which need not exist). */
static char *out_folder(const char *out_path) {
    const char *base = sp_basename(out_path);
    size_t dirlen = (size_t)(base - out_path);
    char *dir = dirlen ? strndup(out_path, dirlen) : strdup(".");
    if (!dir)
        return NULL;
    char *abs = realpath(dir, NULL);
    free(dir);
    return abs;
}

static void free_members(member *m, size_t n) {
    if (!m)
        return;
    for (size_t i = 0; i < n; i++) {
        free(m[i].rel);
        free(m[i].name);
        free(m[i].link);
    }
    free(m);
}

/* A link name: the file name without ".h5", or, when another member has
 * the same file name (batch output: OUTDIR/<id>/slide.h5), the name of its
 * folder; made unique among the links so far. */
static char *link_name(const member *m, size_t n, const char *const *paths,
                       size_t total, size_t idx) {
    char buf[300];
    const char *path = paths[idx], *base = sp_basename(path);
    bool clash = false;
    for (size_t i = 0; i < total && !clash; i++)
        clash = i != idx && strcmp(sp_basename(paths[i]), base) == 0;
    if (clash && base > path) {     /* the parent folder's name */
        const char *end = base - 1; /* the '/' before base */
        const char *start = end;
        while (start > path && start[-1] != '/')
            start--;
        snprintf(buf, sizeof buf, "%.*s", (int)(end - start), start);
        if (!buf[0] || strcmp(buf, ".") == 0 || strcmp(buf, "..") == 0)
            snprintf(buf, sizeof buf, "%s", base);
    } else {
        snprintf(buf, sizeof buf, "%s", base);
        size_t len = strlen(buf);
        if (len > 3 && strcmp(buf + len - 3, ".h5") == 0)
            buf[len - 3] = '\0';
    }
    for (char *p = buf; *p; p++)
        if (*p == '/')
            *p = '_';
    for (size_t i = 0; i < n; i++)
        if (m[i].link && strcmp(m[i].link, buf) == 0) {
            size_t l = strlen(buf);
            snprintf(buf + l, sizeof buf - l, "_%zu", idx);
            break;
        }
    return strdup(buf);
}

/* Read every member's size and columns; all must share the columns. */
static bool scan_members(const char *out_path, const char *const *paths,
                         size_t n, member *m, char ***columns, size_t *ncol,
                         sp_error *err) {
    bool ok = false;
    char *folder = out_folder(out_path);
    if (!folder)
        return sp_error_errno(err, SP_ERR_OUTPUT, out_path, errno,
                              "cannot resolve the output folder");
    int64_t offset = 0;
    for (size_t i = 0; i < n; i++) {
        sp_store_reader *r = NULL;
        if (!sp_store_open(paths[i], &r, err))
            goto out;
        if (sp_store_reader_kind(r) != SP_STORE_SLIDE) {
            sp_error_set(err, SP_ERR_INPUT, paths[i],
                         "is a cohort index, not a slide file");
            sp_store_close(r);
            goto out;
        }
        const sp_store_meta *meta = sp_store_reader_meta(r);
        if (i == 0) {
            *columns =
                calloc(meta->n_columns ? meta->n_columns : 1, sizeof **columns);
            if (!*columns) {
                sp_store_close(r);
                sp_error_set(err, SP_ERR_NOMEM, paths[i], "out of memory");
                goto out;
            }
            *ncol = meta->n_columns;
            for (size_t c = 0; c < meta->n_columns; c++)
                if (!((*columns)[c] = strdup(meta->columns[c])))
                    sp_error_set(err, SP_ERR_NOMEM, paths[i], "out of memory");
        } else {
            bool same = meta->n_columns == *ncol;
            for (size_t c = 0; same && c < *ncol; c++)
                same = strcmp(meta->columns[c], (*columns)[c]) == 0;
            if (!same)
                sp_error_set(err, SP_ERR_INPUT, paths[i],
                             "its feature columns differ from those of %s",
                             paths[0]);
        }
        m[i].rows = sp_store_row_count(r);
        m[i].offset = offset;
        offset += m[i].rows;
        m[i].name = strdup(meta->source_file);
        sp_store_close(r);
        if (sp_error_is_set(err))
            goto out;
        char *abs = realpath(paths[i], NULL);
        if (!abs) {
            sp_error_errno(err, SP_ERR_INPUT, paths[i], errno,
                           "cannot resolve");
            goto out;
        }
        m[i].rel = relative_path(folder, abs);
        free(abs);
        m[i].link = link_name(m, i, paths, n, i);
        if (!m[i].rel || !m[i].name || !m[i].link) {
            sp_error_set(err, SP_ERR_NOMEM, paths[i], "out of memory");
            goto out;
        }
    }
    ok = true;
out:
    free(folder);
    return ok;
}

/* A virtual dataset `name` of `cols` columns mapping every member's
 * dataset of the same name. */
static bool make_vds(hid_t file, const char *name, hid_t type, hsize_t cols,
                     const member *m, size_t n, int64_t total,
                     const char *out_path, sp_error *err) {
    bool ok = false;
    hsize_t vdims[2] = {(hsize_t)total, cols};
    hid_t vspace = H5Screate_simple(2, vdims, NULL);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    hid_t src = H5I_INVALID_HID, d = H5I_INVALID_HID;
    if (vspace < 0 || dcpl < 0)
        goto h5fail;
    for (size_t i = 0; i < n; i++) {
        if (m[i].rows == 0)
            continue;
        hsize_t sdims[2] = {(hsize_t)m[i].rows, cols};
        hsize_t off[2] = {(hsize_t)m[i].offset, 0};
        src = H5Screate_simple(2, sdims, NULL);
        if (src < 0 ||
            H5Sselect_hyperslab(vspace, H5S_SELECT_SET, off, NULL, sdims,
                                NULL) < 0 ||
            H5Pset_virtual(dcpl, vspace, m[i].rel, name, src) < 0)
            goto h5fail;
        H5Sclose(src);
        src = H5I_INVALID_HID;
    }
    if (H5Sselect_all(vspace) < 0)
        goto h5fail;
    d = H5Dcreate2(file, name, type, vspace, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    if (d < 0)
        goto h5fail;
    ok = true;
    goto out;
h5fail:
    sp__h5_error(err, SP_ERR_OUTPUT, out_path,
                 "cannot create the virtual "
                 "dataset");
out:
    sp__close_any(d);
    sp__close_any(src);
    sp__close_any(dcpl);
    sp__close_any(vspace);
    return ok;
}

/* /slide_id: the member index of every row (int32, chunked, deflated). */
static bool write_slide_id(hid_t file, const member *m, size_t n, int64_t total,
                           const char *out_path, sp_error *err) {
    bool ok = false;
    enum { BLOCK = 262144 };
    hsize_t dim = (hsize_t)total;
    hsize_t chunk = dim < BLOCK ? (dim ? dim : 1) : BLOCK;
    int32_t *buf = malloc(BLOCK * sizeof *buf);
    hid_t s = H5Screate_simple(1, &dim, NULL);
    hid_t p = H5Pcreate(H5P_DATASET_CREATE);
    hid_t d = H5I_INVALID_HID, ms = H5I_INVALID_HID;
    if (!buf) {
        sp_error_set(err, SP_ERR_NOMEM, out_path, "out of memory");
        goto out;
    }
    if (s < 0 || p < 0 ||
        (total > 0 && (H5Pset_chunk(p, 1, &chunk) < 0 ||
                       H5Pset_shuffle(p) < 0 || H5Pset_deflate(p, 4) < 0)))
        goto h5fail;
    d = H5Dcreate2(file, SPS_SLIDE_ID, H5T_STD_I32LE, s, H5P_DEFAULT, p,
                   H5P_DEFAULT);
    if (d < 0)
        goto h5fail;
    size_t slide = 0;
    int64_t left_in_slide = n ? m[0].rows : 0;
    for (int64_t at = 0; at < total;) {
        hsize_t k = (hsize_t)(total - at < BLOCK ? total - at : BLOCK);
        for (hsize_t i = 0; i < k; i++) {
            while (left_in_slide == 0 && slide + 1 < n)
                left_in_slide = m[++slide].rows;
            buf[i] = (int32_t)slide;
            left_in_slide--;
        }
        hsize_t off = (hsize_t)at;
        ms = H5Screate_simple(1, &k, NULL);
        if (ms < 0 ||
            H5Sselect_hyperslab(s, H5S_SELECT_SET, &off, NULL, &k, NULL) < 0 ||
            H5Dwrite(d, H5T_NATIVE_INT32, ms, s, H5P_DEFAULT, buf) < 0)
            goto h5fail;
        H5Sclose(ms);
        ms = H5I_INVALID_HID;
        at += (int64_t)k;
    }
    ok = true;
    goto out;
h5fail:
    sp__h5_error(err, SP_ERR_OUTPUT, out_path, "cannot write /slide_id");
out:
    sp__close_any(ms);
    sp__close_any(d);
    sp__close_any(p);
    sp__close_any(s);
    free(buf);
    return ok;
}

static bool write_strs_dataset(hid_t loc, const char *name,
                               const char *const *v, size_t n,
                               const char *out_path, sp_error *err) {
    hsize_t dim = n;
    hid_t t = H5Tcopy(H5T_C_S1);
    hid_t s = H5Screate_simple(1, &dim, NULL);
    hid_t d = H5I_INVALID_HID;
    bool ok = t >= 0 && s >= 0 && H5Tset_size(t, H5T_VARIABLE) >= 0 &&
              H5Tset_cset(t, H5T_CSET_UTF8) >= 0 &&
              (d = H5Dcreate2(loc, name, t, s, H5P_DEFAULT, H5P_DEFAULT,
                              H5P_DEFAULT)) >= 0 &&
              H5Dwrite(d, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, v) >= 0;
    if (!ok)
        sp__h5_error(err, SP_ERR_OUTPUT, out_path, "cannot write /slides");
    sp__close_any(d);
    sp__close_any(s);
    sp__close_any(t);
    return ok;
}

static bool write_i64_dataset(hid_t loc, const char *name, const int64_t *v,
                              size_t n, const char *out_path, sp_error *err) {
    hsize_t dim = n;
    hid_t s = H5Screate_simple(1, &dim, NULL);
    hid_t d = H5I_INVALID_HID;
    bool ok =
        s >= 0 &&
        (d = H5Dcreate2(loc, name, H5T_STD_I64LE, s, H5P_DEFAULT, H5P_DEFAULT,
                        H5P_DEFAULT)) >= 0 &&
        H5Dwrite(d, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, v) >= 0;
    if (!ok)
        sp__h5_error(err, SP_ERR_OUTPUT, out_path, "cannot write /slides");
    sp__close_any(d);
    sp__close_any(s);
    return ok;
}

static bool write_slides(hid_t file, const member *m, size_t n,
                         const char *out_path, sp_error *err) {
    bool ok = false;
    hid_t g = H5I_INVALID_HID, links = H5I_INVALID_HID;
    const char **names = calloc(n, sizeof *names);
    const char **rels = calloc(n, sizeof *rels);
    int64_t *off = calloc(n, sizeof *off), *rows = calloc(n, sizeof *rows);
    if (!names || !rels || !off || !rows) {
        sp_error_set(err, SP_ERR_NOMEM, out_path, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        names[i] = m[i].name;
        rels[i] = m[i].rel;
        off[i] = m[i].offset;
        rows[i] = m[i].rows;
    }
    g = H5Gcreate2(file, SPS_SLIDES, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    links = H5Gcreate2(file, SPS_SLIDE_LINKS, H5P_DEFAULT, H5P_DEFAULT,
                       H5P_DEFAULT);
    if (g < 0 || links < 0) {
        sp__h5_error(err, SP_ERR_OUTPUT, out_path, "cannot create groups");
        goto out;
    }
    if (!write_strs_dataset(g, "name", names, n, out_path, err) ||
        !write_strs_dataset(g, "path", rels, n, out_path, err) ||
        !write_i64_dataset(g, "offset", off, n, out_path, err) ||
        !write_i64_dataset(g, "rows", rows, n, out_path, err))
        goto out;
    for (size_t i = 0; i < n; i++)
        if (H5Lcreate_external(m[i].rel, "/", links, m[i].link, H5P_DEFAULT,
                               H5P_DEFAULT) < 0) {
            sp__h5_error(err, SP_ERR_OUTPUT, out_path,
                         "cannot create an external link");
            goto out;
        }
    ok = true;
out:
    sp__close_any(links);
    sp__close_any(g);
    free(names);
    free(rels);
    free(off);
    free(rows);
    return ok;
}

bool sp_store_index(const char *out_path, const char *const *paths, size_t n,
                    sp_error *err) {
    sp__h5_quiet();
    if (n == 0)
        return sp_error_set(err, SP_ERR_USAGE, out_path,
                            "no slide files to index");
    bool ok = false;
    char **columns = NULL;
    size_t ncol = 0;
    hid_t file = H5I_INVALID_HID, feat = H5I_INVALID_HID;
    char *tmp = sp_temp_sibling(out_path);
    member *m = calloc(n, sizeof *m);
    if (!m || !tmp) {
        sp_error_set(err, SP_ERR_NOMEM, out_path, "out of memory");
        goto out;
    }
    if (!scan_members(out_path, paths, n, m, &columns, &ncol, err))
        goto out;
    int64_t total = n ? m[n - 1].offset + m[n - 1].rows : 0;
    file = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (file < 0) {
        sp__h5_error(err, SP_ERR_OUTPUT, out_path, "cannot create");
        goto out;
    }
    int64_t ver = SP_STORE_SCHEMA_VERSION, nslides = (int64_t)n;
    char now[32];
    sp_format_utc(sp_wall_clock(), now);
    if (!sp__attr_put_str(file, SPS_ATTR_SCHEMA, SP_STORE_COHORT_SCHEMA,
                          out_path, err) ||
        !sp__attr_put_i64(file, SPS_ATTR_VERSION, &ver, 1, out_path, err) ||
        !sp__attr_put_str(file, "slidepipe_version", SP_VERSION, out_path,
                          err) ||
        !sp__attr_put_str(file, "created", now, out_path, err) ||
        !sp__attr_put_i64(file, "slide_count", &nslides, 1, out_path, err) ||
        !sp__attr_put_i64(file, "row_count", &total, 1, out_path, err))
        goto out;
    if (!make_vds(file, SPS_FEATURES, H5T_IEEE_F32LE, ncol, m, n, total,
                  out_path, err) ||
        !make_vds(file, SPS_COORDS, H5T_STD_I64LE, 2, m, n, total, out_path,
                  err) ||
        !write_slide_id(file, m, n, total, out_path, err) ||
        !write_slides(file, m, n, out_path, err))
        goto out;
    feat = H5Dopen2(file, SPS_FEATURES, H5P_DEFAULT);
    if (feat < 0) {
        sp__h5_error(err, SP_ERR_OUTPUT, out_path, "cannot open /features");
        goto out;
    }
    if (!sp__attr_put_strs(feat, SPS_COLUMNS, (const char *const *)columns,
                           ncol, out_path, err))
        goto out;
    H5Dclose(feat);
    feat = H5I_INVALID_HID;
    herr_t rc = H5Fclose(file);
    file = H5I_INVALID_HID;
    if (rc < 0) {
        sp__h5_error(err, SP_ERR_OUTPUT, out_path, "cannot close");
        goto out;
    }
    if (!sp__fsync_path(tmp)) {
        sp_error_errno(err, SP_ERR_OUTPUT, out_path, errno, "fsync failed");
        goto out;
    }
    if (rename(tmp, out_path) != 0) {
        sp_error_errno(err, SP_ERR_OUTPUT, out_path, errno,
                       "cannot rename into place");
        goto out;
    }
    ok = true;
out:
    sp__close_any(feat);
    sp__close_any(file);
    if (!ok && tmp)
        unlink(tmp);
    free(tmp);
    sp__free_strs(columns, ncol);
    free_members(m, n);
    return ok;
}
