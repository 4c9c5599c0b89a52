/* tests/cl-count.c — counts what a process asks of its OpenCL device: the
 * kernels it launches, by name (kiln's own and CLBlast's), and the times
 * the host waits for the device.
 *
 * Preloaded (LD_PRELOAD=tests/.libs/cl-count.so), it takes the place of the
 * ICD loader's calls below for the whole process, as tests/cl-props.c does,
 * and forwards each. At exit it writes to the file KILN_TEST_CL_COUNT names
 * (nothing without it, or from a process that made none of these calls):
 *   launch NAME N      clEnqueueNDRangeKernel of kernel NAME, N times
 *   waits N            clFinish, clWaitForEvents, and blocking reads and
 *                      writes: each one a host wait
 * test_launches reads it; by hand it says what a training step costs:
 *   LD_PRELOAD=tests/.libs/cl-count.so KILN_TEST_CL_COUNT=/dev/stderr \
 *       KILN_BACKEND=opencl tools/.libs/kiln-train --epochs 1
 */
#define CL_TARGET_OPENCL_VERSION 120
#include <CL/cl.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cl-shim.h"

#define REAL(type, name)                                                       \
    static type real;                                                          \
    if (!real)                                                                 \
        *(void **)&real = cl_shim_real(#name);                                      \
    if (!real)                                                                 \
    return CL_INVALID_OPERATION

enum { MAX_NAMES = 256 };
static struct {
    char name[64];
    long n;
} launches[MAX_NAMES];
static int             n_names;
static long            waits;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static void count_launch(const char *name)
{
    pthread_mutex_lock(&lock);
    int k = 0;
    while (k < n_names && strcmp(launches[k].name, name) != 0)
        k++;
    if (k == n_names && n_names < MAX_NAMES)
        snprintf(launches[n_names++].name, sizeof launches[0].name, "%s", name);
    if (k < n_names)
        launches[k].n++;
    pthread_mutex_unlock(&lock);
}

static void count_wait(void)
{
    pthread_mutex_lock(&lock);
    waits++;
    pthread_mutex_unlock(&lock);
}

__attribute__((destructor)) static void report(void)
{
    /* a process that never used OpenCL (a shell of libtool's wrapper
     * script, say) leaves the file to the one that did */
    const char *path = getenv("KILN_TEST_CL_COUNT");
    FILE *f = path && *path && (n_names || waits) ? fopen(path, "w") : NULL;
    if (!f)
        return;
    for (int k = 0; k < n_names; k++)
        fprintf(f, "launch %s %ld\n", launches[k].name, launches[k].n);
    fprintf(f, "waits %ld\n", waits);
    fclose(f);
}

typedef cl_int (*launch_fn)(cl_command_queue, cl_kernel, cl_uint, const size_t *,
                            const size_t *, const size_t *, cl_uint, const cl_event *,
                            cl_event *);
typedef cl_int (*kernel_info_fn)(cl_kernel, cl_kernel_info, size_t, void *, size_t *);

SHIM_API cl_int clEnqueueNDRangeKernel(cl_command_queue q, cl_kernel k, cl_uint dims,
                                       const size_t *offset, const size_t *global,
                                       const size_t *local, cl_uint n_wait,
                                       const cl_event *wait, cl_event *event)
{
    static kernel_info_fn info;
    if (!info)
        *(void **)&info = cl_shim_real("clGetKernelInfo");
    char name[64] = "?";
    if (info && info(k, CL_KERNEL_FUNCTION_NAME, sizeof name, name, NULL) != CL_SUCCESS)
        snprintf(name, sizeof name, "?");
    count_launch(name);
    REAL(launch_fn, clEnqueueNDRangeKernel);
    return real(q, k, dims, offset, global, local, n_wait, wait, event);
}

typedef cl_int (*finish_fn)(cl_command_queue);
SHIM_API cl_int clFinish(cl_command_queue q)
{
    count_wait();
    REAL(finish_fn, clFinish);
    return real(q);
}

typedef cl_int (*wait_fn)(cl_uint, const cl_event *);
SHIM_API cl_int clWaitForEvents(cl_uint n, const cl_event *events)
{
    count_wait();
    REAL(wait_fn, clWaitForEvents);
    return real(n, events);
}

typedef cl_int (*read_fn)(cl_command_queue, cl_mem, cl_bool, size_t, size_t, void *,
                          cl_uint, const cl_event *, cl_event *);
SHIM_API cl_int clEnqueueReadBuffer(cl_command_queue q, cl_mem b, cl_bool blocking,
                                    size_t offset, size_t size, void *dst, cl_uint n_wait,
                                    const cl_event *wait, cl_event *event)
{
    if (blocking)
        count_wait();
    REAL(read_fn, clEnqueueReadBuffer);
    return real(q, b, blocking, offset, size, dst, n_wait, wait, event);
}

typedef cl_int (*write_fn)(cl_command_queue, cl_mem, cl_bool, size_t, size_t,
                           const void *, cl_uint, const cl_event *, cl_event *);
SHIM_API cl_int clEnqueueWriteBuffer(cl_command_queue q, cl_mem b, cl_bool blocking,
                                     size_t offset, size_t size, const void *src,
                                     cl_uint n_wait, const cl_event *wait, cl_event *event)
{
    if (blocking)
        count_wait();
    REAL(write_fn, clEnqueueWriteBuffer);
    return real(q, b, blocking, offset, size, src, n_wait, wait, event);
}
