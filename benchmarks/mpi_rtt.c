/* The scheduler's cost per slide in a batch over MPI ranks: the round
 * trip a worker waits between sending a slide's result and holding its
 * next slide, through the same transport (batch_mpi.c), messages
 * (batch_wire.c) and choice of the next slide (sp__batch_pick over a
 * queue of 10,000) that slidepipe-mpi uses. Run by bench_cluster.sh:
 *   mpirun -np 2 bench_mpi_rtt [ROUNDS] [BUSY_MS]
 * BUSY_MS: rank 0 looks at its own children's pipes this long between
 * looks at the transport, as the batch loop does while rank 0 runs
 * slides itself (0: rank 0 only coordinates). Prints one JSON line. */
#include <math.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "batch_mpi.h"
#include "batch_private.h"

#define QUEUE 10000

static sp__bslide *fake_slide(size_t i) {
    sp__bslide *s = calloc(1, sizeof *s);
    char path[128], id[32];
    snprintf(id, sizeof id, "TCGA-%04zu-01Z-00-DX1", i);
    snprintf(path, sizeof path, "/cohort/tcga/brca/%s.svs", id);
    s->path = strdup(path);
    s->id = strdup(id);
    s->rel = strdup(path + 8);
    s->root = strdup("/cohort");
    s->params = strdup(SP__BATCH_FINGERPRINT_TAG
                       " tile-size=254 overlap=1 quality=75 format=jpeg");
    s->fingerprint = strdup("0123456789abcdef");
    s->quickhash = strdup("4f6b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f"
                          "3a4b5c6d7e8f9a0b");
    s->vendor = strdup("aperio");
    s->pub.width = 80000 + (int64_t)(i % 977) * 37;
    s->pub.height = 60000;
    s->pub.megapixels = (double)s->pub.width * 60000 / 1e6;
    s->want = 32;
    s->pub.threads = 32;
    s->pub.tiles = 71234;
    s->pub.seconds = 301.5;
    s->pub.tissue_area_mm2 = 123.4;
    s->pub.status = SP_BATCH_DONE;
    s->wire = i;
    s->fd_rec = s->fd_err = -1;
    sp__bslide_sync(s);
    return s;
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    sp_error err = {0};
    sp_batch_transport *t = sp_batch_mpi_open(&argc, &argv, &err);
    if (!t || t->size != 2) {
        fprintf(stderr, "bench_mpi_rtt: run with mpirun -np 2 (%s)\n", err.msg);
        return 1;
    }
    int rounds = argc > 1 ? atoi(argv[1]) : 5000;
    int busy_ms = argc > 2 ? atoi(argv[2]) : 0;
    if (rounds < 1 || rounds > QUEUE)
        rounds = QUEUE;
    sp_buf m;
    sp_buf_init(&m);
    int rc = 0;
    if (t->rank == 0) {
        sp__bslide **queue = calloc(QUEUE, sizeof *queue);
        for (size_t i = 0; i < QUEUE; i++)
            queue[i] = fake_slide(i);
        size_t head = 0;
        for (int r = 0; r < rounds; r++) {
            int from;
            char *text = NULL;
            size_t len;
            int got = 0;
            while (got == 0) {
                /* the batch loop: the local children's pipes, then MPI */
                if (busy_ms)
                    poll(NULL, 0, busy_ms);
                got =
                    t->recv(t->ctx, busy_ms ? 0 : 2, &from, &text, &len, &err);
            }
            sp__msg msg;
            if (got < 0 || !sp__wire_parse(text, len, &msg, &err)) {
                rc = 1;
                break;
            }
            free(text);
            if (msg.slide)
                sp__wire_apply_result(queue[msg.slide->wire % QUEUE],
                                      msg.slide);
            sp__msg_clear(&msg);
            size_t pick = sp__batch_pick(queue, head, QUEUE, 32, 32);
            sp__bslide *s = queue[pick];
            queue[pick] = queue[head];
            queue[head++] = s;
            sp_buf_reset(&m);
            sp__wire_run(&m, s);
            t->send(t->ctx, 1, m.data, m.len, &err);
        }
        for (size_t i = 0; i < QUEUE; i++)
            sp__bslide_free(queue[i]);
        free(queue);
    } else {
        double *rtt = calloc((size_t)rounds, sizeof *rtt);
        sp__bslide *done = fake_slide(7);
        size_t run_bytes = 0, result_bytes = 0;
        for (int r = 0; r < rounds; r++) {
            sp_buf_reset(&m);
            sp__wire_result(&m, done);
            result_bytes = m.len;
            double t0 = sp_now();
            t->send(t->ctx, 0, m.data, m.len, &err);
            int from;
            char *text = NULL;
            size_t len;
            int got = 0;
            while (got == 0)
                got = t->recv(t->ctx, 100, &from, &text, &len, &err);
            sp__msg msg;
            if (got < 0 || !sp__wire_parse(text, len, &msg, &err)) {
                rc = 1;
                break;
            }
            rtt[r] = sp_now() - t0;
            run_bytes = len;
            free(text);
            sp__msg_clear(&msg);
        }
        qsort(rtt, (size_t)rounds, sizeof *rtt, cmp_d);
        double sum = 0;
        for (int r = 0; r < rounds; r++)
            sum += rtt[r];
        printf("{\"rounds\": %d, \"rank0_busy_ms\": %d, \"queue\": %d, "
               "\"median_ms\": %.4f, \"mean_ms\": %.4f, \"p99_ms\": %.4f, "
               "\"max_ms\": %.4f, \"run_bytes\": %zu, \"result_bytes\": "
               "%zu}\n",
               rounds, busy_ms, QUEUE, 1e3 * rtt[rounds / 2],
               1e3 * sum / rounds, 1e3 * rtt[(int)(rounds * 0.99)],
               1e3 * rtt[rounds - 1], run_bytes, result_bytes);
        sp__bslide_free(done);
        free(rtt);
    }
    sp_buf_free(&m);
    sp_batch_mpi_close(t);
    return rc;
}
