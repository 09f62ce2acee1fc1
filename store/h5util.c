/* HDF5 helpers: quiet errors folded into sp_error, attributes, time, the
 * library versions. */
#include <pthread.h>
#include "store_private.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

/* HDF5 1.10 crashes in its exit handler (H5F__close_cb) when a file whose
 * close failed (disk full, file too large) is still in its ID table, so
 * the library is told not to shut down at exit: the process is ending and
 * the failed file is a temporary we unlink. H5dont_atexit must precede
 * every other HDF5 call, hence the once. */
static pthread_once_t h5_once = PTHREAD_ONCE_INIT;
static void h5_init(void) { H5dont_atexit(); }

void sp__h5_quiet(void) {
    pthread_once(&h5_once, h5_init);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
}

typedef struct {
    char desc[512];
    char minor[160];
    bool have;
} walk_state;

static herr_t walk_cb(unsigned n, const H5E_error2_t *e, void *data) {
    walk_state *s = data;
    if (n == 0 && !s->have) { /* innermost: where the failure was found */
        s->have = true;
        snprintf(s->desc, sizeof s->desc, "%s", e->desc ? e->desc : "");
        /* the POSIX driver's report is a long dump ("time = ..., errno =
         * 27, error message = 'File too large', ..."): keep the cause */
        const char *m = strstr(s->desc, "error message = '");
        if (m) {
            m += strlen("error message = '");
            const char *q = strchr(m, '\'');
            int n = q ? (int)(q - m) : (int)strlen(m);
            char cause[256];
            snprintf(cause, sizeof cause, "%.*s", n, m);
            snprintf(s->desc, sizeof s->desc, "%s", cause);
        }
        if (H5Eget_msg(e->min_num, NULL, s->minor, sizeof s->minor) < 0)
            s->minor[0] = '\0';
    }
    return 0;
}

bool sp__h5_error(sp_error *err, sp_errcode code, const char *file,
                  const char *what) {
    walk_state s = {.have = false};
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, walk_cb, &s);
    H5Eclear2(H5E_DEFAULT);
    if (!s.have)
        return sp_error_set(err, code, file, "%s", what);
    if (s.desc[0] && s.minor[0])
        return sp_error_set(err, code, file, "%s: %s (HDF5: %s)", what, s.desc,
                            s.minor);
    return sp_error_set(err, code, file, "%s: %s", what,
                        s.desc[0] ? s.desc : s.minor);
}

void sp__close_any(hid_t id) {
    if (id < 0)
        return;
    switch (H5Iget_type(id)) {
    case H5I_FILE: H5Fclose(id); break;
    case H5I_GROUP: H5Gclose(id); break;
    case H5I_DATASET: H5Dclose(id); break;
    case H5I_DATASPACE: H5Sclose(id); break;
    case H5I_DATATYPE: H5Tclose(id); break;
    case H5I_ATTR: H5Aclose(id); break;
    case H5I_GENPROP_LST: H5Pclose(id); break;
    default: break;
    }
}

/* ---- writing attributes ----------------------------------------------- */

static hid_t utf8_vlen_type(void) {
    hid_t t = H5Tcopy(H5T_C_S1);
    if (t < 0)
        return t;
    if (H5Tset_size(t, H5T_VARIABLE) < 0 || H5Tset_cset(t, H5T_CSET_UTF8) < 0) {
        H5Tclose(t);
        return H5I_INVALID_HID;
    }
    return t;
}

static bool put_attr(hid_t obj, const char *name, hid_t type, hid_t space,
                     const void *buf, const char *file, sp_error *err) {
    bool ok = false;
    hid_t a = H5I_INVALID_HID;
    if (H5Aexists(obj, name) > 0 && H5Adelete(obj, name) < 0) {
        sp__h5_error(err, SP_ERR_OUTPUT, file, "cannot replace attribute");
        goto out;
    }
    a = H5Acreate2(obj, name, type, space, H5P_DEFAULT, H5P_DEFAULT);
    if (a < 0 || H5Awrite(a, type, buf) < 0) {
        sp__h5_error(err, SP_ERR_OUTPUT, file, "cannot write attribute");
        goto out;
    }
    ok = true;
out:
    if (a >= 0)
        H5Aclose(a);
    return ok;
}

bool sp__attr_put_str(hid_t obj, const char *name, const char *value,
                      const char *file, sp_error *err) {
    bool ok = false;
    hid_t t = utf8_vlen_type(), s = H5Screate(H5S_SCALAR);
    if (t < 0 || s < 0) {
        sp__h5_error(err, SP_ERR_OUTPUT, file, "cannot write attribute");
        goto out;
    }
    ok = put_attr(obj, name, t, s, &value, file, err);
out:
    sp__close_any(s);
    sp__close_any(t);
    return ok;
}

bool sp__attr_put_strs(hid_t obj, const char *name, const char *const *v,
                       size_t n, const char *file, sp_error *err) {
    bool ok = false;
    hsize_t dim = n;
    hid_t t = utf8_vlen_type(), s = H5Screate_simple(1, &dim, NULL);
    if (t < 0 || s < 0) {
        sp__h5_error(err, SP_ERR_OUTPUT, file, "cannot write attribute");
        goto out;
    }
    ok = put_attr(obj, name, t, s, v, file, err);
out:
    sp__close_any(s);
    sp__close_any(t);
    return ok;
}

static bool put_num(hid_t obj, const char *name, hid_t type, const void *v,
                    size_t n, const char *file, sp_error *err) {
    hsize_t dim = n;
    hid_t s = n == 1 ? H5Screate(H5S_SCALAR) : H5Screate_simple(1, &dim, NULL);
    if (s < 0)
        return sp__h5_error(err, SP_ERR_OUTPUT, file, "cannot write attribute");
    bool ok = put_attr(obj, name, type, s, v, file, err);
    H5Sclose(s);
    return ok;
}

bool sp__attr_put_i64(hid_t obj, const char *name, const int64_t *v, size_t n,
                      const char *file, sp_error *err) {
    return put_num(obj, name, H5T_NATIVE_INT64, v, n, file, err);
}

bool sp__attr_put_f64(hid_t obj, const char *name, const double *v, size_t n,
                      const char *file, sp_error *err) {
    return put_num(obj, name, H5T_NATIVE_DOUBLE, v, n, file, err);
}

/* ---- reading attributes ----------------------------------------------- */

bool sp__attr_exists(hid_t obj, const char *name) {
    return H5Aexists(obj, name) > 0;
}

void sp__free_strs(char **v, size_t n) {
    if (!v)
        return;
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

/* Read the string elements of attribute `a` (n of them) as malloc'd
 * strings. */
static bool read_strs(hid_t a, hid_t ftype, size_t n, char **out,
                      const char *file, const char *name, sp_error *err) {
    bool ok = false;
    hid_t mt = H5I_INVALID_HID, space = H5I_INVALID_HID;
    char **vl = NULL;
    char *fixed = NULL;
    htri_t var = H5Tis_variable_str(ftype);
    if (var < 0)
        goto h5fail;
    mt = H5Tcopy(H5T_C_S1);
    /* the memory type must carry the file's character set */
    if (mt < 0 || H5Tset_cset(mt, H5Tget_cset(ftype)) < 0)
        goto h5fail;
    if (var) {
        if (H5Tset_size(mt, H5T_VARIABLE) < 0)
            goto h5fail;
        vl = calloc(n ? n : 1, sizeof *vl);
        if (!vl) {
            sp_error_set(err, SP_ERR_NOMEM, file, "out of memory");
            goto out;
        }
        if (H5Aread(a, mt, vl) < 0)
            goto h5fail;
        for (size_t i = 0; i < n; i++) {
            out[i] = strdup(vl[i] ? vl[i] : "");
            if (!out[i]) {
                sp_error_set(err, SP_ERR_NOMEM, file, "out of memory");
                break;
            }
        }
        space = H5Aget_space(a);
        if (space >= 0)
            H5Dvlen_reclaim(mt, space, H5P_DEFAULT, vl);
        if (sp_error_is_set(err))
            goto out;
    } else {
        size_t sz = H5Tget_size(ftype);
        if (sz == 0 || H5Tset_size(mt, sz + 1) < 0)
            goto h5fail;
        fixed = calloc(n ? n : 1, sz + 1);
        if (!fixed) {
            sp_error_set(err, SP_ERR_NOMEM, file, "out of memory");
            goto out;
        }
        if (H5Aread(a, mt, fixed) < 0)
            goto h5fail;
        for (size_t i = 0; i < n; i++) {
            out[i] = strndup(fixed + i * (sz + 1), sz);
            if (!out[i]) {
                sp_error_set(err, SP_ERR_NOMEM, file, "out of memory");
                goto out;
            }
        }
    }
    ok = true;
    goto out;
h5fail:
    sp__h5_error(err, SP_ERR_INPUT, file, "cannot read attribute");
    (void)name;
out:
    free(vl);
    free(fixed);
    sp__close_any(space);
    sp__close_any(mt);
    return ok;
}

static hid_t open_attr(hid_t obj, const char *name, H5T_class_t want,
                       hssize_t *npoints, const char *file, sp_error *err) {
    hid_t a = H5I_INVALID_HID, t = H5I_INVALID_HID, s = H5I_INVALID_HID;
    if (H5Aexists(obj, name) <= 0) {
        H5Eclear2(H5E_DEFAULT);
        sp_error_set(err, SP_ERR_INPUT, file, "attribute '%s' is missing",
                     name);
        return H5I_INVALID_HID;
    }
    a = H5Aopen(obj, name, H5P_DEFAULT);
    if (a < 0) {
        sp__h5_error(err, SP_ERR_INPUT, file, "cannot open attribute");
        return H5I_INVALID_HID;
    }
    t = H5Aget_type(a);
    s = H5Aget_space(a);
    H5T_class_t cls = t >= 0 ? H5Tget_class(t) : H5T_NO_CLASS;
    hssize_t np = s >= 0 ? H5Sget_simple_extent_npoints(s) : -1;
    bool good = cls == want || (want == H5T_FLOAT && cls == H5T_INTEGER) ||
                (want == H5T_INTEGER && cls == H5T_FLOAT);
    sp__close_any(t);
    sp__close_any(s);
    if (!good || np < 0) {
        H5Aclose(a);
        sp_error_set(err, SP_ERR_INPUT, file,
                     "attribute '%s' has the wrong type", name);
        return H5I_INVALID_HID;
    }
    *npoints = np;
    return a;
}

bool sp__attr_get_str(hid_t obj, const char *name, char **out, const char *file,
                      sp_error *err) {
    hssize_t np = 0;
    hid_t a = open_attr(obj, name, H5T_STRING, &np, file, err);
    if (a < 0)
        return false;
    bool ok = false;
    hid_t t = H5Aget_type(a);
    if (np != 1) {
        sp_error_set(err, SP_ERR_INPUT, file,
                     "attribute '%s' should hold one string", name);
    } else if (t >= 0) {
        ok = read_strs(a, t, 1, out, file, name, err);
    } else {
        sp__h5_error(err, SP_ERR_INPUT, file, "cannot read attribute");
    }
    sp__close_any(t);
    H5Aclose(a);
    return ok;
}

bool sp__attr_get_strs(hid_t obj, const char *name, char ***out, size_t *n,
                       const char *file, sp_error *err) {
    hssize_t np = 0;
    hid_t a = open_attr(obj, name, H5T_STRING, &np, file, err);
    if (a < 0)
        return false;
    bool ok = false;
    char **v = calloc(np ? (size_t)np : 1, sizeof *v);
    hid_t t = H5Aget_type(a);
    if (!v) {
        sp_error_set(err, SP_ERR_NOMEM, file, "out of memory");
    } else if (t < 0) {
        sp__h5_error(err, SP_ERR_INPUT, file, "cannot read attribute");
    } else {
        ok = read_strs(a, t, (size_t)np, v, file, name, err);
    }
    sp__close_any(t);
    H5Aclose(a);
    if (!ok) {
        sp__free_strs(v, (size_t)np);
        return false;
    }
    *out = v;
    *n = (size_t)np;
    return true;
}

static bool get_num(hid_t obj, const char *name, hid_t mtype, H5T_class_t cls,
                    void *out, size_t elsize, size_t n, const char *file,
                    sp_error *err) {
    hssize_t np = 0;
    hid_t a = open_attr(obj, name, cls, &np, file, err);
    if (a < 0)
        return false;
    bool ok = false;
    void *tmp = NULL;
    if ((size_t)np < n) {
        sp_error_set(err, SP_ERR_INPUT, file,
                     "attribute '%s' has %lld values, expected %zu", name,
                     (long long)np, n);
        goto out;
    }
    tmp = malloc((size_t)np * elsize);
    if (!tmp) {
        sp_error_set(err, SP_ERR_NOMEM, file, "out of memory");
        goto out;
    }
    if (H5Aread(a, mtype, tmp) < 0) {
        sp__h5_error(err, SP_ERR_INPUT, file, "cannot read attribute");
        goto out;
    }
    memcpy(out, tmp, n * elsize);
    ok = true;
out:
    free(tmp);
    H5Aclose(a);
    return ok;
}

bool sp__attr_get_i64(hid_t obj, const char *name, int64_t *out, size_t n,
                      const char *file, sp_error *err) {
    return get_num(obj, name, H5T_NATIVE_INT64, H5T_INTEGER, out, sizeof *out,
                   n, file, err);
}

bool sp__attr_get_f64(hid_t obj, const char *name, double *out, size_t n,
                      const char *file, sp_error *err) {
    return get_num(obj, name, H5T_NATIVE_DOUBLE, H5T_FLOAT, out, sizeof *out, n,
                   file, err);
}

/* ---- time and files ---------------------------------------------------- */

double sp__wall_time(void) {
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (double)tv.tv_sec + (double)tv.tv_usec * 1e-6;
}

void sp__format_time(double t, char out[32]) { sp_format_utc(t, out); }

bool sp__fsync_path(const char *path) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    int r = fsync(fd);
    int e = errno;
    close(fd);
    errno = e;
    return r == 0 || e == EINVAL; /* some filesystems refuse dir fsync */
}

void sp_store_versions(sp_lib_versions *l) {
    unsigned maj = 0, min = 0, rel = 0;
    H5get_libversion(&maj, &min, &rel);
    sp_lib_versions_add(l, "HDF5", false, "%u.%u.%u", maj, min, rel);
    sp_lib_versions_add(l, "zlib", false, "%s", zlibVersion());
}
