/* kiln/comm.h — the communicator plugin ABI: what an engine of collective
 * communication (MPI, NCCL, Gloo, ...) implements for data-parallel training.
 *
 * A communicator plugin is a shared object that exports exactly one symbol,
 * KILN_COMM_ENTRY_SYMBOL, a function returning a const kiln_comm_plugin
 * table. The table starts with abi_version; the loader refuses any other
 * number. kiln looks for these plugins in KILN_COMM_PATH and then in its
 * installed comm folder (kiln_comm_dir()), never beside the compute backends.
 *
 * A plugin sees this header, kiln.h and backend.h (for kiln_host), nothing
 * of kiln's core. What kiln asks of it is small: who the processes are, and
 * four collectives over host memory. kiln fuses gradients into buckets
 * itself and divides sums into means itself, so a plugin only sums.
 *
 * Threading: kiln calls a communicator from one thread at a time.
 * Every wait takes a timeout in seconds: a plugin returns KILN_ERR_BACKEND
 * with a message when it passes (a peer that died or stopped answering), and
 * the caller then ends the job with abort, since a collective that never
 * completed cannot be taken back.
 */
#ifndef KILN_COMM_H
#define KILN_COMM_H

#include <kiln/backend.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Bumped on any change to the structs or enums below. */
#define KILN_COMM_ABI_VERSION 1

#define KILN_COMM_ENTRY_SYMBOL "kiln_comm_entry"

/* The element types of an allreduce. */
typedef enum kiln_comm_dtype {
    KILN_COMM_F32 = 0,
    KILN_COMM_F64,
} kiln_comm_dtype;

/* Who this process is in its job. */
typedef struct kiln_comm_info {
    int rank, size;             /* 0 <= rank < size                      */
    int local_rank, local_size; /* among the processes of this machine   */
} kiln_comm_info;

typedef struct kiln_comm_plugin {
    uint32_t    abi_version; /* KILN_COMM_ABI_VERSION                       */
    const char *name;        /* "mpi": what KILN_COMM names                 */
    const char *description;
    /* 0: this process cannot use it (e.g. it was not started by mpirun);
     * otherwise higher is preferred. Cheap, no state, nothing initialised. */
    int (*probe)(const kiln_host *host);
    /* Joins the job (MPI_Init) and fills *info; *state is the plugin's. A
     * plugin whose engine cannot be opened twice in a process says so. */
    kiln_status (*open)(const kiln_host *host, void **state, kiln_comm_info *info);
    /* Leaves the job (MPI_Finalize) after every process called it. */
    void (*close)(void *state);
    /* bytes from root's data to every other process's data */
    kiln_status (*broadcast)(void *state, void *data, size_t bytes, int root,
                             double timeout);
    /* Starts summing count elements of data over all processes, in place,
     * and returns at once; *request is the plugin's. data must stay put
     * until wait returns. */
    kiln_status (*allreduce_start)(void *state, void *data, size_t count,
                                   kiln_comm_dtype dtype, void **request);
    /* (optional) lets a started request move on without waiting (an
     * MPI_Test) and says in *done whether it has finished (wait must still
     * be called): kiln calls it between the nodes it computes while a
     * request is under way, so that engines without a progress thread of
     * their own overlap communication with computation. */
    kiln_status (*progress)(void *state, void *request, bool *done);
    /* Waits until the request is done and releases it, whatever the result. */
    kiln_status (*wait)(void *state, void *request, double timeout);
    kiln_status (*barrier)(void *state, double timeout);
    /* Ends every process of the job with exit status code (MPI_Abort). It
     * returns only where the engine cannot. */
    void (*abort)(void *state, int code);
} kiln_comm_plugin;

typedef const kiln_comm_plugin *(*kiln_comm_entry_fn)(void);

/* The one symbol a communicator plugin exports; define it with
 * KILN_COMM_ENTRY. */
const kiln_comm_plugin *kiln_comm_entry(void);

#if defined(__GNUC__)
#define KILN_COMM_ENTRY \
    __attribute__((visibility("default"))) const kiln_comm_plugin *kiln_comm_entry(void)
#else
#define KILN_COMM_ENTRY const kiln_comm_plugin *kiln_comm_entry(void)
#endif

#ifdef __cplusplus
}
#endif

#endif /* KILN_COMM_H */
