/* batch inputs: directory walks (multi-file formats counted once), TSV
 * manifests, and the forked probe of each candidate. */
#include "batch_private.h"

#include <ctype.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ingest.h"

/* ---- directory walk ----------------------------------------------------- */

static bool has_ext(const char *name, const char *ext) {
    size_t n = strlen(name), e = strlen(ext);
    return n > e && strcasecmp(name + n - e, ext) == 0;
}

/* Mark the files of a DICOM series after its first (in name order):
 * any one of them opens the whole series. */
static void mark_series(const char *dir, char **names, size_t n, bool *skip) {
    char **keys = calloc(n ? n : 1, sizeof *keys);
    if (!keys)
        return;
    for (size_t i = 0; i < n; i++) {
        char *p = skip[i] ? NULL : sp_path_join(dir, names[i]);
        keys[i] = p ? sp_slide_series_key(p) : NULL;
        free(p);
        for (size_t j = 0; keys[i] && j < i; j++)
            if (keys[j] && strcmp(keys[i], keys[j]) == 0) {
                skip[i] = true;
                break;
            }
    }
    for (size_t i = 0; i < n; i++)
        free(keys[i]);
    free(keys);
}

/* Mark (NULL out in `skip`) the entries a multi-file slide owns: the data
 * folder of X.mrxs (X), the files a .vms/.vmu index names, and the files
 * of a DICOM series after its first. */
static void mark_owned(const char *dir, char **names, size_t n, bool *skip) {
    mark_series(dir, names, n, skip);
    for (size_t i = 0; i < n; i++) {
        const char *nm = names[i];
        if (has_ext(nm, ".mrxs")) {
            size_t stem = strlen(nm) - 5;
            for (size_t j = 0; j < n; j++)
                if (j != i && strlen(names[j]) == stem &&
                    strncmp(names[j], nm, stem) == 0)
                    skip[j] = true;
        } else if (has_ext(nm, ".vms") || has_ext(nm, ".vmu")) {
            char *p = sp_path_join(dir, nm);
            FILE *f = p ? fopen(p, "r") : NULL;
            free(p);
            if (!f)
                continue;
            char line[4096];
            while (fgets(line, sizeof line, f)) {
                char *eq = strchr(line, '=');
                if (!eq)
                    continue;
                char *v = eq + 1;
                while (*v == ' ' || *v == '\t')
                    v++;
                size_t len = strlen(v);
                while (len && (v[len - 1] == '\n' || v[len - 1] == '\r' ||
                               v[len - 1] == ' ' || v[len - 1] == '\t'))
                    v[--len] = '\0';
                if (!len)
                    continue;
                for (size_t j = 0; j < n; j++)
                    if (j != i && strcmp(names[j], v) == 0 &&
                        !has_ext(names[j], ".vms") &&
                        !has_ext(names[j], ".vmu") &&
                        !has_ext(names[j], ".ndpi"))
                        skip[j] = true;
            }
            fclose(f);
        }
    }
}

typedef struct {
    dev_t dev;
    ino_t ino;
} dir_id;

/* `p` below folder `root` (p starts with root: sp_path_join built it). */
static const char *below(const char *root, const char *p) {
    size_t n = strlen(root);
    if (strncmp(p, root, n) != 0)
        return sp_basename(p);
    p += n;
    while (*p == '/')
        p++;
    return *p ? p : sp_basename(root);
}

static bool walk(sp_batch *b, const char *root, const char *dir, dir_id *stack,
                 int depth, sp_error *err) {
    if (depth >= 64)
        return true; /* deeper than any real slide tree: a loop or a joke */
    size_t n = 0;
    char **names = sp_dir_names(dir, &n); /* hidden ones, ours, left out */
    if (!names)
        return errno == ENOMEM
                   ? sp_error_set(err, SP_ERR_NOMEM, dir, "out of memory")
                   : sp_error_errno(err, SP_ERR_INPUT, dir, errno,
                                    "cannot list directory");
    bool ok = true;
    bool *skip = calloc(n ? n : 1, sizeof *skip);
    if (!skip) {
        ok = sp_error_set(err, SP_ERR_NOMEM, dir, "out of memory");
        goto out;
    }
    mark_owned(dir, names, n, skip);
    for (size_t i = 0; i < n && ok; i++) {
        if (skip[i])
            continue;
        char *p = sp_path_join(dir, names[i]);
        if (!p) {
            ok = sp_error_set(err, SP_ERR_NOMEM, dir, "out of memory");
            break;
        }
        struct stat st;
        if (stat(p, &st) != 0) {
            /* a dangling link or a file that vanished: let the probe say */
            ok = sp__batch_push(b, p, below(root, p), root, NULL, NULL, false,
                                err);
        } else if (S_ISDIR(st.st_mode)) {
            bool loop = b->outdir_exists && st.st_dev == b->out_dev &&
                        st.st_ino == b->out_ino;
            for (int k = 0; k < depth && !loop; k++)
                loop = stack[k].dev == st.st_dev && stack[k].ino == st.st_ino;
            if (!loop) {
                stack[depth].dev = st.st_dev;
                stack[depth].ino = st.st_ino;
                ok = walk(b, root, p, stack, depth + 1, err);
            }
        } else if (S_ISREG(st.st_mode)) {
            ok = sp__batch_push(b, p, below(root, p), root, NULL, NULL, false,
                                err);
        }
        free(p);
    }
out:
    sp_dir_names_free(names, n);
    free(skip);
    return ok;
}

bool sp_batch_add_path(sp_batch *b, const char *path, sp_error *err) {
    struct stat st;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
        dir_id stack[65];
        stack[0].dev = st.st_dev;
        stack[0].ino = st.st_ino;
        if (b->outdir_exists && st.st_dev == b->out_dev &&
            st.st_ino == b->out_ino)
            return sp_error_set(err, SP_ERR_USAGE, path,
                                "is the output directory");
        return walk(b, path, path, stack, 1, err);
    }
    /* a file, or something missing: the probe reports it as a failure */
    return sp__batch_push(b, path, NULL, NULL, NULL, NULL, true, err);
}

/* ---- manifest ----------------------------------------------------------- */

static bool id_ok(const char *id) {
    if (!id[0] || id[0] == '.' || strlen(id) > 200)
        return false;
    for (const char *p = id; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '.' && *p != '_' && *p != '-')
            return false;
    return true;
}

static char *trim(char *s) {
    while (*s == ' ' || *s == '\t')
        s++;
    size_t n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r' ||
                 s[n - 1] == '\n'))
        s[--n] = '\0';
    return s;
}

bool sp_batch_add_manifest(sp_batch *b, const char *tsv, sp_error *err) {
    FILE *f = fopen(tsv, "r");
    if (!f)
        return sp_error_errno(err, SP_ERR_INPUT, tsv, errno, "cannot open");
    /* the folder relative paths are taken from */
    const char *base = sp_basename(tsv);
    size_t dirlen = (size_t)(base - tsv);
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    int lineno = 0;
    bool ok = true, first = true;
    size_t before = b->n;
    while (ok && (len = getline(&line, &cap, f)) != -1) {
        lineno++;
        if ((size_t)len != strlen(line)) {
            ok = sp_error_set(err, SP_ERR_USAGE, tsv, "line %d: NUL byte",
                              lineno);
            break;
        }
        char *fields[3] = {NULL, NULL, NULL};
        char *save = line;
        for (int k = 0; k < 3 && save; k++) {
            fields[k] = save;
            char *tab = k < 2 ? strchr(save, '\t') : NULL;
            if (tab) {
                *tab = '\0';
                save = tab + 1;
            } else {
                save = NULL;
            }
        }
        char *path = trim(fields[0]);
        if (!path[0] || path[0] == '#')
            continue;
        if (first && strcasecmp(path, "path") == 0) {
            first = false;
            continue;
        }
        first = false;
        char *id = fields[1] ? trim(fields[1]) : NULL;
        char *opt = fields[2] ? trim(fields[2]) : NULL;
        if (id && !id[0])
            id = NULL;
        if (id && !id_ok(id)) {
            ok = sp_error_set(err, SP_ERR_USAGE, tsv,
                              "line %d: slide id '%s' must be 1-200 characters "
                              "from A-Z a-z 0-9 . _ - and not start with '.'",
                              lineno, id);
            break;
        }
        char *canon = NULL;
        if (opt && opt[0]) {
            sp_error e2 = {0};
            if (!sp_batch_parse_options(opt, &canon, &e2)) {
                ok = sp_error_set(err, e2.code, tsv, "line %d: %s", lineno,
                                  e2.msg);
                break;
            }
        }
        char *full = NULL;
        if (path[0] != '/' && dirlen > 0) {
            size_t n = dirlen + strlen(path) + 1;
            full = malloc(n);
            if (full)
                snprintf(full, n, "%.*s%s", (int)dirlen, tsv, path);
        } else {
            full = strdup(path);
        }
        if (!full) {
            free(canon);
            ok = sp_error_set(err, SP_ERR_NOMEM, tsv, "out of memory");
            break;
        }
        /* shared outputs name it as the manifest does when that is a path
         * below the manifest's folder, else by its file name */
        while (path[0] == '.' && path[1] == '/')
            path += 2;
        bool below_manifest =
            path[0] != '/' && strcmp(path, "..") != 0 &&
            strncmp(path, "../", 3) != 0 && !strstr(path, "/../") &&
            !(strlen(path) >= 3 && strcmp(path + strlen(path) - 3, "/..") == 0);
        char *root = below_manifest && dirlen
                         ? strndup(tsv, dirlen > 1 ? dirlen - 1 : dirlen)
                         : NULL;
        ok = sp__batch_push(b, full, below_manifest ? path : NULL, root, id,
                            canon, true, err);
        free(root);
        free(full);
        free(canon);
    }
    if (ok && ferror(f))
        ok = sp_error_errno(err, SP_ERR_INPUT, tsv, errno, "read failed");
    free(line);
    fclose(f);
    if (!ok)
        sp__batch_truncate(b, before); /* a bad manifest adds nothing */
    return ok;
}

/* ---- slide size rule ---------------------------------------------------- */

void sp__batch_size_rule_msg(const char *path, int64_t width, int64_t height,
                             char *msg, size_t n) {
    snprintf(msg, n,
             "%s: image %lldx%lld is below the slide size rule (found in a "
             "folder, read by libvips: an OME-TIFF or SubIFD pyramid, or "
             "a longer side of at least %d px)",
             path, (long long)width, (long long)height, SP_IMAGE_MIN_SIDE);
}

/* ---- probe -------------------------------------------------------------- */

/* What a probe child sends back per file, as bytes over a pipe. */
typedef struct {
    uint64_t index; /* of the candidate */
    sp_errcode code;
    char msg[SP_ERROR_MAX];
    char vendor[64];
    char quickhash[80]; /* "" when the slide has none */
    int64_t width, height;
    bool below_rule;
} probe_record;

/* Open `path` and describe it into `r`. */
static void probe_one(const char *path, probe_record *r) {
    sp_slide *s = NULL;
    sp_error err = {0};
    if (sp_slide_open(path, false, &s, &err)) {
        const sp_level *l0 = sp_slide_level(s, 0);
        const char *qh = sp_slide_quickhash(s);
        const char *vendor = sp_slide_vendor(s);
        snprintf(r->vendor, sizeof r->vendor, "%s",
                 vendor ? vendor : "unknown");
        snprintf(r->quickhash, sizeof r->quickhash, "%s", qh ? qh : "");
        r->width = l0->width;
        r->height = l0->height;
        r->below_rule = !sp_slide_size_rule_ok(s);
        sp_slide_close(s);
    } else {
        r->code = err.code == SP_ERR_INPUT && sp_slide_not_a_slide(path)
                      ? SP_ERR_NOT_SLIDE
                      : err.code;
        snprintf(r->msg, sizeof r->msg, "%s", err.msg);
    }
}

/* A forked probe child: every `step`th candidate from `first`, a record
 * each on `fd`; exits without running atexit handlers (the parent owns
 * them). */
static void probe_child(const sp_batch *b, size_t first, size_t step, int fd) {
    static probe_record r;
    for (size_t i = first; i < b->n; i += step) {
        memset(&r, 0, sizeof r);
        r.index = i;
        probe_one(b->v[i]->path, &r);
        if (!sp_write_all(fd, &r, sizeof r))
            _exit(1);
    }
    _exit(0);
}

static const char *signame(int sig) {
    const char *d = strsignal(sig);
    return d ? d : "signal";
}

typedef struct {
    pid_t pid;
    int fd;
    size_t next; /* the first candidate it has not answered for */
    size_t have; /* bytes of a record read so far */
    probe_record r;
} prober;

static bool start_prober(sp_batch *b, prober *p, size_t step, sp_error *err) {
    int fds[2];
    p->pid = -1;
    p->fd = -1;
    p->have = 0;
    if (p->next >= b->n)
        return true;
    if (pipe(fds) != 0)
        return sp_error_errno(err, SP_ERR_INTERNAL, NULL, errno, "pipe");
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        int e = errno;
        close(fds[0]);
        close(fds[1]);
        return sp_error_errno(err, SP_ERR_INTERNAL, NULL, e, "fork");
    }
    if (pid == 0) {
        close(fds[0]);
        probe_child(b, p->next, step, fds[1]);
    }
    close(fds[1]);
    p->pid = pid;
    p->fd = fds[0];
    return true;
}

/* Fill `res` from a record: false only when out of memory. */
static bool take_record(const probe_record *r, sp__probe *res) {
    if (r->code != SP_OK) {
        res->code = r->code;
        snprintf(res->msg, sizeof res->msg, "%.*s", (int)sizeof r->msg - 1,
                 r->msg);
        return true;
    }
    res->code = SP_OK;
    res->width = r->width;
    res->height = r->height;
    res->below_rule = r->below_rule;
    res->vendor = strndup(r->vendor, sizeof r->vendor - 1);
    res->quickhash =
        r->quickhash[0] ? strndup(r->quickhash, sizeof r->quickhash - 1) : NULL;
    return res->vendor && (res->quickhash || !r->quickhash[0]);
}

bool sp__batch_probe_all(sp_batch *b, int procs, sp__probe *res,
                         sp_error *err) {
    if (b->n == 0)
        return true;
    size_t np = procs < 1 ? 1 : (size_t)procs;
    if (np > b->n)
        np = b->n;
    prober *pr = calloc(np, sizeof *pr);
    struct pollfd *pfd = calloc(np, sizeof *pfd);
    bool ok = pr && pfd;
    if (!ok)
        sp_error_set(err, SP_ERR_NOMEM, NULL, "out of memory");
    for (size_t k = 0; ok && k < np; k++) {
        pr[k].next = k;
        ok = start_prober(b, &pr[k], np, err);
    }
    for (;;) {
        if (!ok || (b->o.cancel && *b->o.cancel))
            break;
        nfds_t n = 0;
        for (size_t k = 0; k < np; k++)
            if (pr[k].fd >= 0)
                pfd[n++] = (struct pollfd){.fd = pr[k].fd, .events = POLLIN};
        if (n == 0)
            break;
        if (poll(pfd, n, 250) < 0 && errno != EINTR) {
            ok = sp_error_errno(err, SP_ERR_INTERNAL, NULL, errno, "poll");
            break;
        }
        for (size_t k = 0; k < np; k++) {
            prober *p = &pr[k];
            nfds_t j = 0;
            while (j < n && pfd[j].fd != p->fd)
                j++;
            if (p->fd < 0 || j == n || !pfd[j].revents)
                continue;
            ssize_t got =
                read(p->fd, (char *)&p->r + p->have, sizeof p->r - p->have);
            if (got < 0 && errno == EINTR)
                continue;
            if (got > 0) {
                p->have += (size_t)got;
                if (p->have < sizeof p->r)
                    continue;
                p->have = 0;
                /* a child answers for its own candidates, in order */
                if (p->r.index != p->next) {
                    ok = sp_error_set(err, SP_ERR_INTERNAL, NULL,
                                      "a probe answered out of turn");
                    break;
                }
                if (!take_record(&p->r, &res[p->next])) {
                    ok = sp_error_set(err, SP_ERR_NOMEM, NULL, "out of memory");
                    break;
                }
                p->next += np;
                continue;
            }
            /* the child is done, or died on the file it was probing */
            close(p->fd);
            p->fd = -1;
            int st = 0;
            while (waitpid(p->pid, &st, 0) < 0 && errno == EINTR)
                ;
            p->pid = -1;
            if (p->next < b->n) {
                sp__probe *r = &res[p->next];
                r->code = SP_ERR_INTERNAL;
                if (WIFSIGNALED(st))
                    snprintf(r->msg, sizeof r->msg,
                             "%s: OpenSlide crashed opening the file (%s)",
                             b->v[p->next]->path, signame(WTERMSIG(st)));
                else
                    snprintf(r->msg, sizeof r->msg,
                             "%s: the probe process gave no answer (exit %d)",
                             b->v[p->next]->path,
                             WIFEXITED(st) ? WEXITSTATUS(st) : -1);
                /* a new child goes on after the file that killed this one */
                p->next += np;
                ok = start_prober(b, p, np, err);
            }
        }
    }
    for (size_t k = 0; pr && k < np; k++) {
        if (pr[k].fd >= 0)
            close(pr[k].fd);
        if (pr[k].pid > 0) {
            kill(pr[k].pid, SIGKILL);
            waitpid(pr[k].pid, NULL, 0);
        }
    }
    free(pr);
    free(pfd);
    return ok;
}
