/*
 * batch_mpi: an sp_batch_transport (batch.h) over MPI, for
 * `mpirun -np N slidepipe-mpi ...` (docs/CLUSTER.md). Built only when
 * CMake finds MPI (library sp_batch_mpi); the rest of slidepipe never
 * links MPI.
 *
 * Messages go as MPI_CHAR on MPI_COMM_WORLD with one tag; sends are
 * non-blocking (the buffer is kept until MPI is done with it), so two
 * ranks sending to each other at once never wait on one another. A
 * receive with a timeout looks with MPI_Iprobe and sleeps a fraction of
 * a millisecond between looks: an idle rank does not spin a core.
 *
 * Thread rules: one thread per process calls MPI (MPI_THREAD_FUNNELED);
 * the slide jobs run in forked children, which never call MPI.
 */
#ifndef SP_BATCH_MPI_H
#define SP_BATCH_MPI_H

#include "batch.h"

#ifdef __cplusplus
extern "C" {
#endif

/* MPI_Init and a transport for this rank; NULL with `err` on failure. */
sp_batch_transport *sp_batch_mpi_open(int *argc, char ***argv, sp_error *err);
/* Finish pending sends, MPI_Finalize, free. Accepts NULL. */
void sp_batch_mpi_close(sp_batch_transport *t);
/* End every rank of the job now (MPI_Abort) with `code`. */
void sp_batch_mpi_abort(sp_batch_transport *t, int code);
/* "Open MPI v4.1.4, ..." (MPI_Get_library_version, first line). */
void sp_batch_mpi_versions(sp_lib_versions *l);

#ifdef __cplusplus
}
#endif
#endif
