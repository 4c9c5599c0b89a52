/* tests/cl-props.c — an OpenCL device that says it is something else, so
 * that the paths kiln takes for GPUs run on POCL in CI.
 *
 * Preloaded (LD_PRELOAD=tests/.libs/cl-props.so), it takes the place of the
 * ICD loader's clGetDeviceInfo and clCreateBuffer for the whole process:
 * kiln's OpenCL plugin and CLBlast both reach them. clGetDeviceInfo asks
 * the real driver, then replaces what KILN_TEST_CL_PROPS names, a
 * comma-separated list of:
 *   type=gpu|cpu|accelerator|gpu+cpu+accelerator   CL_DEVICE_TYPE
 *   unified=0|1          CL_DEVICE_HOST_UNIFIED_MEMORY
 *   max_alloc=BYTES      CL_DEVICE_MAX_MEM_ALLOC_SIZE; clCreateBuffer then
 *                        refuses larger buffers (CL_INVALID_BUFFER_SIZE), as
 *                        drivers do
 *   denorm=0             CL_FP_DENORM cleared in CL_DEVICE_SINGLE_FP_CONFIG
 *   clock=MHZ            CL_DEVICE_MAX_CLOCK_FREQUENCY
 *   units=N              CL_DEVICE_MAX_COMPUTE_UNITS
 * Without the variable it changes nothing.
 */
#define CL_TARGET_OPENCL_VERSION 120
#define CL_USE_DEPRECATED_OPENCL_1_2_APIS
#include <CL/cl.h>

#include <stdlib.h>
#include <string.h>

#include "cl-shim.h"

typedef cl_int (*info_fn)(cl_device_id, cl_device_info, size_t, void *, size_t *);
typedef cl_mem (*create_buffer_fn)(cl_context, cl_mem_flags, size_t, void *, cl_int *);

/* The value of `key` in KILN_TEST_CL_PROPS ("" if absent), into buf. */
static const char *prop(const char *key, char *buf, size_t len)
{
    const char *all = getenv("KILN_TEST_CL_PROPS");
    size_t      n   = strlen(key);
    buf[0]          = '\0';
    for (const char *p = all; p && *p;) {
        const char *end = strchr(p, ',');
        size_t      l   = end ? (size_t)(end - p) : strlen(p);
        if (l > n && strncmp(p, key, n) == 0 && p[n] == '=') {
            size_t v = l - n - 1 < len - 1 ? l - n - 1 : len - 1;
            memcpy(buf, p + n + 1, v);
            buf[v] = '\0';
            return buf;
        }
        p = end ? end + 1 : NULL;
    }
    return buf;
}

static cl_device_type fake_type(const char *v)
{
    cl_device_type t = 0;
    if (strstr(v, "gpu"))
        t |= CL_DEVICE_TYPE_GPU;
    if (strstr(v, "cpu"))
        t |= CL_DEVICE_TYPE_CPU;
    if (strstr(v, "accelerator"))
        t |= CL_DEVICE_TYPE_ACCELERATOR;
    return t;
}

/* Writes v (size bytes) as the answer when the caller's buffer holds it. */
static void answer(void *value, size_t value_size, size_t *size_ret, const void *v,
                   size_t size)
{
    if (value && value_size >= size)
        memcpy(value, v, size);
    if (size_ret)
        *size_ret = size;
}

SHIM_API cl_int clGetDeviceInfo(cl_device_id device, cl_device_info param,
                                size_t value_size, void *value, size_t *size_ret)
{
    static info_fn real;
    if (!real)
        *(void **)&real = cl_shim_real("clGetDeviceInfo");
    if (!real)
        return CL_INVALID_OPERATION;
    cl_int err = real(device, param, value_size, value, size_ret);
    if (err != CL_SUCCESS)
        return err;
    char v[64];
    switch (param) {
    case CL_DEVICE_TYPE:
        if (*prop("type", v, sizeof v)) {
            cl_device_type t = fake_type(v);
            answer(value, value_size, size_ret, &t, sizeof t);
        }
        break;
    case CL_DEVICE_HOST_UNIFIED_MEMORY:
        if (*prop("unified", v, sizeof v)) {
            cl_bool b = atoi(v) ? CL_TRUE : CL_FALSE;
            answer(value, value_size, size_ret, &b, sizeof b);
        }
        break;
    case CL_DEVICE_MAX_MEM_ALLOC_SIZE:
        if (*prop("max_alloc", v, sizeof v)) {
            cl_ulong m = strtoull(v, NULL, 10);
            answer(value, value_size, size_ret, &m, sizeof m);
        }
        break;
    case CL_DEVICE_SINGLE_FP_CONFIG:
        if (*prop("denorm", v, sizeof v) && !atoi(v) && value &&
            value_size >= sizeof(cl_device_fp_config))
            *(cl_device_fp_config *)value &= ~(cl_device_fp_config)CL_FP_DENORM;
        break;
    case CL_DEVICE_MAX_CLOCK_FREQUENCY:
    case CL_DEVICE_MAX_COMPUTE_UNITS:
        if (*prop(param == CL_DEVICE_MAX_CLOCK_FREQUENCY ? "clock" : "units", v,
                  sizeof v)) {
            cl_uint u = (cl_uint)strtoul(v, NULL, 10);
            answer(value, value_size, size_ret, &u, sizeof u);
        }
        break;
    default: break;
    }
    return CL_SUCCESS;
}

SHIM_API cl_mem clCreateBuffer(cl_context context, cl_mem_flags flags, size_t size,
                               void *host_ptr, cl_int *errcode_ret)
{
    static create_buffer_fn real;
    char                    v[64];
    if (!real)
        *(void **)&real = cl_shim_real("clCreateBuffer");
    if (*prop("max_alloc", v, sizeof v) && size > strtoull(v, NULL, 10)) {
        if (errcode_ret)
            *errcode_ret = CL_INVALID_BUFFER_SIZE;
        return NULL;
    }
    if (!real) {
        if (errcode_ret)
            *errcode_ret = CL_OUT_OF_HOST_MEMORY;
        return NULL;
    }
    return real(context, flags, size, host_ptr, errcode_ret);
}
