/* comm/loopback/loopback.c — the communicator of a job of one process.
 *
 * Rank 0 of 1: a broadcast leaves the data as it is, a sum over one process
 * is the data itself, a barrier has no one to wait for. It lets a program
 * written for data-parallel training run as one process without MPI, and
 * lets kiln's tests run the communicator code paths where MPI is absent. It
 * is the choice when no other plugin's probe accepts the process.
 */
#include <kiln/comm.h>

#include <stdlib.h>

static const kiln_host *loop_host;

/* The one request a loopback job ever has: nothing is pending. */
static char done_request;

static int loop_probe(const kiln_host *host)
{
    (void)host;
    return 1; /* usable anywhere, preferred by nothing */
}

static kiln_status loop_open(const kiln_host *host, void **state, kiln_comm_info *info)
{
    loop_host = host;
    *state    = &done_request;
    *info     = (kiln_comm_info){.rank = 0, .size = 1, .local_rank = 0, .local_size = 1};
    return KILN_OK;
}

static void loop_close(void *state)
{
    (void)state;
}

static kiln_status loop_broadcast(void *state, void *data, size_t bytes, int root,
                                  double timeout)
{
    (void)state, (void)data, (void)bytes, (void)timeout;
    if (root != 0)
        return loop_host->error(KILN_ERR_INVALID_ARG,
                                "loopback: broadcast from rank %d, expected 0 (the job "
                                "has one process)",
                                root);
    return KILN_OK;
}

static kiln_status loop_allreduce_start(void *state, void *data, size_t count,
                                        kiln_comm_dtype dtype, void **request)
{
    (void)state, (void)data, (void)count;
    if (dtype != KILN_COMM_F32 && dtype != KILN_COMM_F64)
        return loop_host->error(KILN_ERR_INVALID_ARG,
                                "loopback: allreduce of element type %d, expected "
                                "KILN_COMM_F32 or KILN_COMM_F64",
                                (int)dtype);
    *request = &done_request;
    return KILN_OK;
}

static kiln_status loop_wait(void *state, void *request, double timeout)
{
    (void)state, (void)timeout;
    if (request != &done_request)
        return loop_host->error(KILN_ERR_INVALID_ARG,
                                "loopback: wait on a request it did not start");
    return KILN_OK;
}

static kiln_status loop_barrier(void *state, double timeout)
{
    (void)state, (void)timeout;
    return KILN_OK;
}

static void loop_abort(void *state, int code)
{
    (void)state, (void)code; /* nothing else to stop: the caller exits */
}

static const kiln_comm_plugin loopback = {
    .abi_version     = KILN_COMM_ABI_VERSION,
    .name            = "loopback",
    .description     = "one process, no communication",
    .probe           = loop_probe,
    .open            = loop_open,
    .close           = loop_close,
    .broadcast       = loop_broadcast,
    .allreduce_start = loop_allreduce_start,
    .progress        = NULL,
    .wait            = loop_wait,
    .barrier         = loop_barrier,
    .abort           = loop_abort,
};

KILN_COMM_ENTRY
{
    return &loopback;
}
