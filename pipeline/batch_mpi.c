/* batch_mpi: the transport of a batch over MPI ranks (batch_mpi.h). */
#include "batch_mpi.h"

#include <mpi.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define TAG 7117 /* slidepipe's batch messages */
#define NAP_NS (200 * 1000)

typedef struct {
    MPI_Request req;
    char *buf;
} pending;

typedef struct {
    sp_batch_transport t;
    char host[MPI_MAX_PROCESSOR_NAME + 1];
    pending *p;
    size_t np, cap;
} mpi_ctx;

static bool mpi_failed(sp_error *err, int rc, const char *what) {
    char s[MPI_MAX_ERROR_STRING] = "";
    int n = 0;
    MPI_Error_string(rc, s, &n);
    return sp_error_set(err, SP_ERR_INTERNAL, NULL, "MPI %s: %s", what, s);
}

/* Free the buffers of sends MPI is done with. */
static void reap_sends(mpi_ctx *c) {
    for (size_t i = 0; i < c->np;) {
        int done = 0;
        MPI_Test(&c->p[i].req, &done, MPI_STATUS_IGNORE);
        if (!done) {
            i++;
            continue;
        }
        free(c->p[i].buf);
        c->p[i] = c->p[--c->np];
    }
}

static bool mpi_send(void *ctx, int to, const void *msg, size_t len,
                     sp_error *err) {
    mpi_ctx *c = ctx;
    reap_sends(c);
    if (len > (size_t)1 << 30)
        return sp_error_set(err, SP_ERR_INTERNAL, NULL,
                            "a batch message of %zu bytes", len);
    if (c->np == c->cap) {
        size_t nc = c->cap ? 2 * c->cap : 16;
        pending *v = realloc(c->p, nc * sizeof *v);
        if (!v)
            return sp_error_set(err, SP_ERR_NOMEM, NULL, "out of memory");
        c->p = v;
        c->cap = nc;
    }
    char *buf = malloc(len ? len : 1);
    if (!buf)
        return sp_error_set(err, SP_ERR_NOMEM, NULL, "out of memory");
    memcpy(buf, msg, len);
    int rc = MPI_Isend(buf, (int)len, MPI_CHAR, to, TAG, MPI_COMM_WORLD,
                       &c->p[c->np].req);
    if (rc != MPI_SUCCESS) {
        free(buf);
        return mpi_failed(err, rc, "send");
    }
    c->p[c->np++].buf = buf;
    return true;
}

static int mpi_recv(void *ctx, int timeout_ms, int *from, char **msg,
                    size_t *len, sp_error *err) {
    mpi_ctx *c = ctx;
    const double until = sp_now() + timeout_ms / 1000.0;
    for (;;) {
        reap_sends(c);
        int flag = 0;
        MPI_Status st;
        int rc = MPI_Iprobe(MPI_ANY_SOURCE, TAG, MPI_COMM_WORLD, &flag, &st);
        if (rc != MPI_SUCCESS) {
            mpi_failed(err, rc, "probe");
            return -1;
        }
        if (flag) {
            int n = 0;
            MPI_Get_count(&st, MPI_CHAR, &n);
            char *buf = malloc((size_t)n + 1);
            if (!buf) {
                sp_error_set(err, SP_ERR_NOMEM, NULL, "out of memory");
                return -1;
            }
            rc = MPI_Recv(buf, n, MPI_CHAR, st.MPI_SOURCE, TAG, MPI_COMM_WORLD,
                          MPI_STATUS_IGNORE);
            if (rc != MPI_SUCCESS) {
                free(buf);
                mpi_failed(err, rc, "receive");
                return -1;
            }
            buf[n] = '\0';
            *from = st.MPI_SOURCE;
            *msg = buf;
            *len = (size_t)n;
            return 1;
        }
        if (sp_now() >= until)
            return 0;
        struct timespec ts = {0, NAP_NS};
        nanosleep(&ts, NULL);
    }
}

sp_batch_transport *sp_batch_mpi_open(int *argc, char ***argv, sp_error *err) {
    int provided = 0;
    int rc = MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided);
    if (rc != MPI_SUCCESS) {
        mpi_failed(err, rc, "init");
        return NULL;
    }
    mpi_ctx *c = calloc(1, sizeof *c);
    if (!c) {
        sp_error_set(err, SP_ERR_NOMEM, NULL, "out of memory");
        MPI_Finalize();
        return NULL;
    }
    /* errors come back as codes, to be reported as ours */
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_rank(MPI_COMM_WORLD, &c->t.rank);
    MPI_Comm_size(MPI_COMM_WORLD, &c->t.size);
    int n = 0;
    if (MPI_Get_processor_name(c->host, &n) != MPI_SUCCESS || n <= 0)
        gethostname(c->host, sizeof c->host - 1);
    c->t.ctx = c;
    c->t.host = c->host;
    c->t.send = mpi_send;
    c->t.recv = mpi_recv;
    return &c->t;
}

void sp_batch_mpi_close(sp_batch_transport *t) {
    if (!t)
        return;
    mpi_ctx *c = t->ctx;
    for (size_t i = 0; i < c->np; i++) {
        MPI_Wait(&c->p[i].req, MPI_STATUS_IGNORE);
        free(c->p[i].buf);
    }
    free(c->p);
    MPI_Finalize();
    free(c);
}

void sp_batch_mpi_abort(sp_batch_transport *t, int code) {
    (void)t;
    MPI_Abort(MPI_COMM_WORLD, code);
}

void sp_batch_mpi_versions(sp_lib_versions *l) {
    char v[MPI_MAX_LIBRARY_VERSION_STRING] = "";
    int n = 0;
    MPI_Get_library_version(v, &n);
    v[strcspn(v, ",\n")] = '\0';
    sp_lib_versions_add(l, "MPI", false, "%s", v);
}
