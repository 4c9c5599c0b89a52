/* tools/train/parallel.c — kiln-train on many processes (mpirun -np N):
 * the communicator, who prints, and checkpoints that a run of any number
 * of processes can resume.
 *
 * Every process opens the communicator kiln chooses (mpi under mpirun, the
 * loopback alone). Only rank 0 prints on stdout and writes files; the
 * others' stdout goes to /dev/null, and their messages on stderr say their
 * rank. A process that fails ends the whole job (kiln_comm_abort) so that
 * none waits for it.
 *
 * A checkpoint is kiln_checkpoint_save's file with the run's options and
 * position in its metadata ("kiln.train.*"). Resuming, rank 0 reads it,
 * checks that the options that shape the run are the same, and broadcasts
 * the weights, the optimiser's state and the position to the others.
 */
#include "train.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static kiln_comm *comm;

kiln_comm *parallel_comm(void)
{
    return comm;
}

int parallel_rank(void)
{
    return kiln_comm_rank(comm);
}

int parallel_size(void)
{
    return kiln_comm_size(comm);
}

void parallel_start(void)
{
    comm = kiln_comm_open(NULL);
    if (!comm)
        die(1, "%s", kiln_last_error());
    if (parallel_rank() != 0 && !freopen("/dev/null", "w", stdout))
        die(1, "cannot silence the standard output of rank %d", parallel_rank());
}

void parallel_end(void)
{
    kiln_comm_close(comm);
    comm = NULL;
}

void parallel_fail(int status)
{
    if (comm && kiln_comm_size(comm) > 1) {
        fflush(stderr);
        kiln_comm_abort(comm, status);
    }
}

kiln_context *parallel_context(void)
{
    kiln_context *ctx = kiln_comm_context_new(comm);
    if (!ctx)
        die(1, "%s", kiln_last_error());
    return ctx;
}

double parallel_mean(double local)
{
    check(kiln_comm_allreduce(comm, &local, 1, true), "averaging over the processes");
    return local;
}

double parallel_sum(double local)
{
    check(kiln_comm_allreduce(comm, &local, 1, false), "summing over the processes");
    return local;
}

/* ---- checkpoints ---------------------------------------------------------------- */

void checkpoint_write(kiln_graph *g, const char *path, const run_meta *meta, size_t n)
{
    if (parallel_rank() != 0)
        return;
    for (size_t i = 0; i < n; i++)
        check(kiln_graph_set_meta(g, meta[i].key, meta[i].value), "--checkpoint");
    check(kiln_checkpoint_save(g, path), "--checkpoint");
    /* the position is the checkpoint's, not the weights' of --save */
    for (size_t i = 0; i < n; i++)
        check(kiln_graph_set_meta(g, meta[i].key, NULL), "--checkpoint");
}

void checkpoint_resume(kiln_graph *g, const char *path, run_meta *meta, size_t n)
{
    if (parallel_rank() == 0) {
        check(kiln_checkpoint_load(g, path), "--resume");
        for (size_t i = 0; i < n; i++) {
            char theirs[sizeof meta[i].value];
            if (kiln_file_meta(path, meta[i].key, theirs, sizeof theirs) != KILN_OK)
                die(1, "--resume %s: %s (not a checkpoint of kiln-train --checkpoint?)",
                    path, kiln_last_error());
            if (meta[i].option && strcmp(theirs, meta[i].value) != 0)
                die(2,
                    "--resume %s was written by a run with %s %s, and this one has %s "
                    "%s: resume with the options of the run that wrote it",
                    path, meta[i].option, theirs, meta[i].option, meta[i].value);
            memcpy(meta[i].value, theirs, sizeof theirs);
        }
    }
    check(kiln_comm_broadcast_params(comm, g, 0, true), "--resume");
    for (size_t i = 0; i < n; i++)
        check(kiln_comm_broadcast(comm, meta[i].value, sizeof meta[i].value, 0),
              "--resume");
}
