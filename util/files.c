/* File helpers: mkdir -p, rm -rf, atomic writes, whole-file reads. */
#include "util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

const char *sp_basename(const char *path) {
    const char *slash = strrchr(path, '/');
    if (slash && slash[1] == '\0') {
        /* trailing slash: find the component before it */
        const char *p = slash;
        while (p > path && *(p - 1) != '/')
            p--;
        return p;
    }
    return slash ? slash + 1 : path;
}

char *sp_path_join(const char *dir, const char *name) {
    size_t dl = strlen(dir);
    size_t n = dl + strlen(name) + 2;
    char *p = malloc(n);
    if (p)
        snprintf(p, n, "%s%s%s", dir, dl && dir[dl - 1] == '/' ? "" : "/",
                 name);
    return p;
}

static int cmp_name(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

void sp_dir_names_free(char **names, size_t n) {
    if (!names)
        return;
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

bool sp_strvec_push(sp_strvec *s, const char *x) {
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 16;
        char **v = realloc(s->v, cap * sizeof *v);
        if (!v)
            return false;
        s->v = v;
        s->cap = cap;
    }
    if (!(s->v[s->n] = strdup(x)))
        return false;
    s->n++;
    return true;
}

void sp_strvec_free(sp_strvec *s) {
    if (!s)
        return;
    for (size_t i = 0; i < s->n; i++)
        free(s->v[i]);
    free(s->v);
    s->v = NULL;
    s->n = s->cap = 0;
}

char **sp_dir_names(const char *dir, size_t *n) {
    *n = 0;
    DIR *d = opendir(dir);
    if (!d)
        return NULL;
    size_t cap = 64, k = 0;
    char **names = malloc(cap * sizeof *names);
    struct dirent *e;
    while (names && (e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        if (k == cap) {
            char **nv = realloc(names, 2 * cap * sizeof *nv);
            if (!nv) {
                sp_dir_names_free(names, k);
                names = NULL;
                break;
            }
            names = nv;
            cap *= 2;
        }
        if (!(names[k] = strdup(e->d_name))) {
            sp_dir_names_free(names, k);
            names = NULL;
            break;
        }
        k++;
    }
    closedir(d);
    if (!names) {
        errno = ENOMEM;
        return NULL;
    }
    qsort(names, k, sizeof *names, cmp_name);
    *n = k;
    return names;
}

bool sp_path_exists(const char *path) {
    struct stat st;
    return lstat(path, &st) == 0;
}

bool sp_mkdir_p(const char *path, sp_error *err) {
    size_t n = strlen(path);
    char *tmp = malloc(n + 1);
    if (!tmp)
        return sp_error_set(err, SP_ERR_NOMEM, path, "out of memory");
    memcpy(tmp, path, n + 1);
    for (char *p = tmp + 1;; p++) {
        if (*p == '/' || *p == '\0') {
            char saved = *p;
            *p = '\0';
            if (mkdir(tmp, 0777) != 0 && errno != EEXIST) {
                int e = errno;
                sp_error_errno(err, SP_ERR_OUTPUT, tmp, e,
                               "cannot create directory");
                free(tmp);
                return false;
            }
            *p = saved;
            if (saved == '\0')
                break;
        }
    }
    free(tmp);
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode))
        return sp_error_set(err, SP_ERR_OUTPUT, path, "not a directory");
    return true;
}

static int rm_one(const char *fpath, const struct stat *sb, int typeflag,
                  struct FTW *ftwbuf) {
    (void)sb;
    (void)ftwbuf;
    int r = (typeflag == FTW_DP) ? rmdir(fpath) : unlink(fpath);
    return r != 0 && errno != ENOENT ? -1 : 0;
}

bool sp_remove_tree(const char *path, sp_error *err) {
    struct stat st;
    if (lstat(path, &st) != 0)
        return errno == ENOENT ? true
                               : sp_error_errno(err, SP_ERR_OUTPUT, path, errno,
                                                "cannot remove");
    if (!S_ISDIR(st.st_mode)) {
        if (unlink(path) != 0)
            return sp_error_errno(err, SP_ERR_OUTPUT, path, errno,
                                  "cannot remove");
        return true;
    }
    if (nftw(path, rm_one, 32, FTW_DEPTH | FTW_PHYS) != 0)
        return sp_error_errno(err, SP_ERR_OUTPUT, path, errno, "cannot remove");
    return true;
}

char *sp_temp_sibling(const char *final_path) {
    const char *base = sp_basename(final_path);
    size_t dirlen = (size_t)(base - final_path);
    size_t n = strlen(final_path) + 48;
    char *s = malloc(n);
    if (!s)
        return NULL;
    snprintf(s, n, "%.*s.%s.tmp-%ld", (int)dirlen, final_path, base,
             (long)getpid());
    /* drop a trailing slash carried over from final_path */
    return s;
}

bool sp_write_file_atomic(const char *path, const void *data, size_t n,
                          sp_error *err) {
    char *tmp = sp_temp_sibling(path);
    if (!tmp)
        return sp_error_set(err, SP_ERR_NOMEM, path, "out of memory");
    bool ok = false;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
    if (fd < 0) {
        sp_error_errno(err, SP_ERR_OUTPUT, path, errno, "cannot create");
        goto out;
    }
    const char *p = data;
    size_t left = n;
    while (left > 0) {
        ssize_t w = write(fd, p, left);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            sp_error_errno(err, SP_ERR_OUTPUT, path, errno, "write failed");
            close(fd);
            unlink(tmp);
            goto out;
        }
        p += w;
        left -= (size_t)w;
    }
    int synced = fsync(fd), closed = close(fd);
    if (synced != 0 || closed != 0) {
        sp_error_errno(err, SP_ERR_OUTPUT, path, errno, "write failed");
        unlink(tmp);
        goto out;
    }
    if (rename(tmp, path) != 0) {
        sp_error_errno(err, SP_ERR_OUTPUT, path, errno, "cannot rename");
        unlink(tmp);
        goto out;
    }
    ok = true;
out:
    free(tmp);
    return ok;
}

bool sp_write_all(int fd, const void *data, size_t n) {
    const char *p = data;
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return false;
        }
        p += w;
        n -= (size_t)w;
    }
    return true;
}

ssize_t sp_read_all(int fd, void *data, size_t n) {
    char *p = data;
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, p + got, n - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -1;
        if (r == 0)
            break;
        got += (size_t)r;
    }
    return (ssize_t)got;
}

char *sp_read_file(const char *path, size_t max, size_t *n, sp_error *err) {
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        sp_error_errno(err, SP_ERR_INPUT, path, errno, "cannot open");
        return NULL;
    }
    struct stat st;
    char *buf = NULL;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) ||
        (size_t)st.st_size > max) {
        sp_error_set(err, SP_ERR_INPUT, path,
                     "not a regular file of at most %zu bytes", max);
        goto out;
    }
    buf = malloc((size_t)st.st_size + 1);
    if (!buf) {
        sp_error_set(err, SP_ERR_NOMEM, path, "out of memory");
        goto out;
    }
    size_t got = 0;
    while (got < (size_t)st.st_size) {
        ssize_t k = read(fd, buf + got, (size_t)st.st_size - got);
        if (k <= 0) {
            sp_error_errno(err, SP_ERR_INPUT, path, k < 0 ? errno : EIO,
                           "cannot read");
            free(buf);
            buf = NULL;
            goto out;
        }
        got += (size_t)k;
    }
    buf[got] = '\0';
    *n = got;
out:
    close(fd);
    return buf;
}
