/* Output-file helpers shared by the writers: hidden temporary names, the
 * removal of temporaries left by dead runs, whole-file writes. */
#include "tiler_private.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

char *sp__tiler_temp_name(const char *final_path) {
    return sp_temp_sibling(final_path); /* "<dir>/.<base>.tmp-<pid>" */
}

void sp__tiler_clean_stale(const char *final_path) {
    const char *base = sp_basename(final_path);
    size_t dirlen = (size_t)(base - final_path);
    char *dir = dirlen ? strndup(final_path, dirlen) : strdup(".");
    size_t plen = strlen(base) + 6; /* ".<base>.tmp-" */
    char *prefix = malloc(plen + 1);
    if (!dir || !prefix)
        goto out;
    snprintf(prefix, plen + 1, ".%s.tmp-", base);
    DIR *dp = opendir(dir);
    if (!dp)
        goto out;
    struct dirent *e;
    while ((e = readdir(dp)) != NULL) {
        if (strncmp(e->d_name, prefix, plen) != 0)
            continue;
        char *end = NULL;
        long pid = strtol(e->d_name + plen, &end, 10);
        if (!end || *end != '\0' || pid <= 0)
            continue;
        /* only a dead process's leftovers (or our own pid's, from a run
         * whose pid was recycled) */
        if (pid != (long)getpid() &&
            !(kill((pid_t)pid, 0) != 0 && errno == ESRCH))
            continue;
        size_t n = strlen(dir) + strlen(e->d_name) + 2;
        char *path = malloc(n);
        if (path) {
            snprintf(path, n, "%s/%s", dir, e->d_name);
            sp_remove_tree(path, NULL);
            free(path);
        }
    }
    closedir(dp);
out:
    free(dir);
    free(prefix);
}

bool sp__write_file(const char *path, const uint8_t *data, size_t n,
                    sp_error *err) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
    if (fd < 0)
        return sp_error_errno(err, SP_ERR_OUTPUT, path, errno, "cannot create");
    while (n > 0) {
        ssize_t w = write(fd, data, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            int e = errno;
            close(fd);
            return sp_error_errno(err, SP_ERR_OUTPUT, path, e, "write failed");
        }
        data += w;
        n -= (size_t)w;
    }
    if (close(fd) != 0)
        return sp_error_errno(err, SP_ERR_OUTPUT, path, errno, "write failed");
    return true;
}

bool sp__spool_write(int fd, uint64_t off, const uint8_t *data, size_t n,
                     bool pad, const char *name, sp_error *err) {
    static const uint8_t zero = 0;
    const size_t total = n + (pad ? 1 : 0);
    size_t done = 0;
    while (done < total) {
        const uint8_t *src = done < n ? data + done : &zero;
        ssize_t k =
            pwrite(fd, src, done < n ? n - done : 1, (off_t)(off + done));
        if (k < 0) {
            if (errno == EINTR)
                continue;
            return sp_error_errno(err, SP_ERR_OUTPUT, name, errno,
                                  "write failed");
        }
        done += (size_t)k;
    }
    return true;
}
