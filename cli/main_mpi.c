/* slidepipe-mpi: `slidepipe batch` over MPI ranks (docs/CLUSTER.md).
 *   mpirun -np N slidepipe-mpi [batch options] INPUT... -o OUTDIR
 * Every rank parses the same arguments; rank 0 finds the slides and hands
 * them out, the others run what they are sent. */
#include "cli.h"

#include <stdio.h>
#include <string.h>

#include "batch_mpi.h"

int main(int argc, char **argv) {
    /* --help and --version need no MPI job */
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            printf("usage: mpirun [-np N] slidepipe-mpi [OPTIONS] INPUT... "
                   "-o OUTDIR\n"
                   "\n"
                   "'slidepipe batch' over MPI ranks: rank 0 finds the "
                   "slides and hands\n"
                   "them out, largest first, to every rank (itself too) as "
                   "their threads\n"
                   "free up. Each slide still runs in a child process of "
                   "its rank; the\n"
                   "outputs, done.json markers, summaries and cohort.h5 "
                   "are those of a\n"
                   "local batch, on the output folder all ranks share. "
                   "Run one rank per\n"
                   "node; its --threads is that node's budget. As root, "
                   "OpenMPI needs\n"
                   "OMPI_ALLOW_RUN_AS_ROOT=1 and "
                   "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1.\n"
                   "\n"
                   "The options are those of 'slidepipe batch' (below), "
                   "less --shard and\n"
                   "--merge. See docs/CLUSTER.md for sbatch scripts.\n\n");
            char *h[] = {"batch", "--help", NULL};
            return sp_cmd_batch(2, h);
        }
        if (strcmp(argv[i], "-V") == 0 || strcmp(argv[i], "--version") == 0) {
            printf("slidepipe-mpi %s\n", SP_VERSION);
            return SP_EXIT_OK;
        }
    }
    /* before MPI starts: the same process again, its environment amended */
    sp_openmp_sleep_when_idle(argv);
    sp_error err = {0};
    sp_batch_transport *t = sp_batch_mpi_open(&argc, &argv, &err);
    if (!t)
        return sp_cli_report("batch", &err);
    /* argv[0] stands for the subcommand's name, as in `slidepipe batch` */
    int rc = sp_cmd_batch_over(argc, argv, t);
    /* rank 0 ended before handing out slides (a usage error, a locked
     * OUTDIR, a dry run): the workers are told, or they would wait */
    sp_error se = {0};
    if (!sp_batch_stop_workers(t, &se))
        sp_batch_mpi_abort(t, rc ? rc : SP_EXIT_INTERNAL);
    sp_batch_mpi_close(t);
    return rc;
}
