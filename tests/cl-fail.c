/* tests/cl-fail.c — clCreateBuffer that fails on request, for the fault
 * sweep (tests/test_faults.c, tests/fault_runner.c).
 *
 * Preloaded (LD_PRELOAD=tests/.libs/cl-fail.so), it takes the place of the
 * ICD loader's clCreateBuffer for the whole process: kiln's OpenCL plugin
 * and CLBlast both reach it. Each call goes on to the real one (the ICD
 * loader's) unless the program armed a failure:
 * kiln_test_cl_arm(allow, status) lets `allow` more buffers be created, then
 * makes the next one fail with `status` (CL_MEM_OBJECT_ALLOCATION_FAILURE or
 * CL_OUT_OF_RESOURCES, as a device that runs out would), once;
 * kiln_test_cl_disarm() ends it and says how many calls it failed. The
 * program finds both with dlsym, so it runs without the shim too.
 */
#define CL_TARGET_OPENCL_VERSION 120
#include <CL/cl.h>

#include <stdatomic.h>
#include <stddef.h>

#include "cl-shim.h"

typedef cl_mem (*create_buffer_fn)(cl_context, cl_mem_flags, size_t, void *, cl_int *);

static atomic_long allowed = -1; /* buffers left before the failure; -1: unarmed */
static atomic_int  fail_status;
static atomic_long failed;

SHIM_API void kiln_test_cl_arm(long allow, int status)
{
    atomic_store(&failed, 0);
    atomic_store(&fail_status, status);
    atomic_store(&allowed, allow < 0 ? 0 : allow);
}

SHIM_API long kiln_test_cl_disarm(void)
{
    atomic_store(&allowed, -1);
    return atomic_load(&failed);
}

/* Whether this call fails; at most one does per arming. */
static int refuse(void)
{
    long left = atomic_load(&allowed);
    for (;;) {
        if (left < 0)
            return 0;
        long next = left == 0 ? -1 : left - 1;
        if (atomic_compare_exchange_weak(&allowed, &left, next)) {
            if (left > 0)
                return 0;
            atomic_fetch_add(&failed, 1);
            return 1;
        }
    }
}

SHIM_API cl_mem clCreateBuffer(cl_context context, cl_mem_flags flags, size_t size,
                               void *host_ptr, cl_int *errcode_ret)
{
    if (refuse()) {
        if (errcode_ret)
            *errcode_ret = atomic_load(&fail_status);
        return NULL;
    }
    static create_buffer_fn real;
    if (!real)
        *(void **)&real = cl_shim_real("clCreateBuffer");
    if (!real) {
        if (errcode_ret)
            *errcode_ret = CL_OUT_OF_HOST_MEMORY;
        return NULL;
    }
    return real(context, flags, size, host_ptr, errcode_ret);
}
