/* discover.c — every OpenCL platform and device, in a stable order, and what
 * each one can do.
 *
 * kiln chooses kernels and judges devices by capability (OpenCL C version,
 * extensions, work-group size, local memory), never by vendor name. A device
 * that lacks what kiln needs is still listed, with `unusable` saying why, so
 * kiln-info shows it and KILN_BACKEND=opencl:N explains the refusal. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ocl-impl.h"

/* The reductions use one acc_t (up to 8 bytes) and one index (8 bytes) of
 * local memory per work-item, in groups of up to 256: 4 KiB. With less they
 * would have to shrink below 16 work-items, where they stop making sense. */
#define OCL_MIN_LOCAL_MEM 4096
#define OCL_MIN_GROUP     16

const char *ocl_type_name(cl_device_type type)
{
    if (type & CL_DEVICE_TYPE_GPU)
        return "GPU";
    if (type & CL_DEVICE_TYPE_ACCELERATOR)
        return "accelerator";
    if (type & CL_DEVICE_TYPE_CPU)
        return "CPU";
    return "device";
}

/* The kinds of device in the order kiln prefers them. A device with more
 * than one of the GPU, accelerator and CPU type bits (Oclgrind's simulator
 * has all three) comes last: it lacks a real device's properties. */
enum { KIND_DISCRETE_GPU, KIND_INTEGRATED_GPU, KIND_ACCELERATOR, KIND_CPU, KIND_OTHER };

static int ocl_kind(const ocl_info *d)
{
    cl_device_type t = d->type & (CL_DEVICE_TYPE_GPU | CL_DEVICE_TYPE_ACCELERATOR |
                                  CL_DEVICE_TYPE_CPU);
    if (t == CL_DEVICE_TYPE_GPU)
        return d->unified ? KIND_INTEGRATED_GPU : KIND_DISCRETE_GPU;
    if (t == CL_DEVICE_TYPE_ACCELERATOR)
        return KIND_ACCELERATOR;
    if (t == CL_DEVICE_TYPE_CPU)
        return KIND_CPU;
    return KIND_OTHER;
}

const char *ocl_kind_name(const ocl_info *d)
{
    static const char *const names[] = {"discrete_gpu", "integrated_gpu", "accelerator",
                                        "cpu", "simulator_or_unknown"};
    return names[ocl_kind(d)];
}

static int cmp_info(const void *pa, const void *pb)
{
    const ocl_info *a = pa, *b = pb;
    if (ocl_kind(a) != ocl_kind(b))
        return ocl_kind(a) - ocl_kind(b);
    /* throughput, roughly: a card of more units at a higher clock first */
    uint64_t pa_ = (uint64_t)a->compute_units * a->clock_mhz,
             pb_ = (uint64_t)b->compute_units * b->clock_mhz;
    if (pa_ != pb_)
        return pa_ > pb_ ? -1 : 1;
    if (a->memory != b->memory)
        return a->memory > b->memory ? -1 : 1;
    if (a->platform_index != b->platform_index)
        return a->platform_index < b->platform_index ? -1 : 1;
    return a->device_index < b->device_index ? -1 : a->device_index > b->device_index;
}

/* A string property, truncated to fit buf; "" if the driver fails. */
static void info_string(cl_device_id id, cl_device_info param, char *buf, size_t len)
{
    size_t need = 0;
    buf[0]      = '\0';
    if (clGetDeviceInfo(id, param, 0, NULL, &need) != CL_SUCCESS || need == 0)
        return;
    char *tmp = malloc(need);
    if (tmp && clGetDeviceInfo(id, param, need, tmp, NULL) == CL_SUCCESS)
        snprintf(buf, len, "%.*s", (int)(need - 1), tmp);
    free(tmp);
}

static void platform_string(cl_platform_id p, cl_platform_info param, char *buf,
                            size_t len)
{
    size_t need = 0;
    buf[0]      = '\0';
    if (clGetPlatformInfo(p, param, 0, NULL, &need) != CL_SUCCESS || need == 0)
        return;
    char *tmp = malloc(need);
    if (tmp && clGetPlatformInfo(p, param, need, tmp, NULL) == CL_SUCCESS)
        snprintf(buf, len, "%.*s", (int)(need - 1), tmp);
    free(tmp);
}

/* Whether the space-separated extension list names ext. */
static bool has_extension(cl_device_id id, const char *ext)
{
    size_t need = 0;
    if (clGetDeviceInfo(id, CL_DEVICE_EXTENSIONS, 0, NULL, &need) != CL_SUCCESS)
        return false;
    char *list  = malloc(need + 1);
    bool  found = false;
    if (list &&
        clGetDeviceInfo(id, CL_DEVICE_EXTENSIONS, need, list, NULL) == CL_SUCCESS) {
        list[need] = '\0';
        size_t n   = strlen(ext);
        for (const char *p = strstr(list, ext); p && !found; p = strstr(p + 1, ext))
            found = (p == list || p[-1] == ' ') && (p[n] == ' ' || p[n] == '\0');
    }
    free(list);
    return found;
}

#define OCL_SCALAR_INFO(id, param, var) \
    (clGetDeviceInfo(id, param, sizeof(var), &(var), NULL) == CL_SUCCESS)

/* What the device is and why kiln could not use it, into d. */
static void describe(ocl_info *d)
{
    cl_device_id        id        = d->id;
    cl_bool             available = CL_FALSE, compiler = CL_FALSE;
    cl_device_fp_config fp32 = 0, fp64 = 0;
    bool                ok = OCL_SCALAR_INFO(id, CL_DEVICE_TYPE, d->type) &&
              OCL_SCALAR_INFO(id, CL_DEVICE_GLOBAL_MEM_SIZE, d->memory) &&
              OCL_SCALAR_INFO(id, CL_DEVICE_MAX_MEM_ALLOC_SIZE, d->max_alloc) &&
              OCL_SCALAR_INFO(id, CL_DEVICE_LOCAL_MEM_SIZE, d->local_mem) &&
              OCL_SCALAR_INFO(id, CL_DEVICE_MAX_COMPUTE_UNITS, d->compute_units) &&
              OCL_SCALAR_INFO(id, CL_DEVICE_MAX_WORK_GROUP_SIZE, d->max_group) &&
              OCL_SCALAR_INFO(id, CL_DEVICE_AVAILABLE, available) &&
              OCL_SCALAR_INFO(id, CL_DEVICE_COMPILER_AVAILABLE, compiler) &&
              OCL_SCALAR_INFO(id, CL_DEVICE_SINGLE_FP_CONFIG, fp32) &&
              OCL_SCALAR_INFO(id, CL_DEVICE_MEM_BASE_ADDR_ALIGN, d->base_align);
    d->base_align = d->base_align >= 8 ? d->base_align / 8 : 1; /* bits to bytes */
    cl_bool unified = CL_FALSE;
    d->unified      = OCL_SCALAR_INFO(id, CL_DEVICE_HOST_UNIFIED_MEMORY, unified) &&
                 unified == CL_TRUE;
    if (!OCL_SCALAR_INFO(id, CL_DEVICE_MAX_CLOCK_FREQUENCY, d->clock_mhz))
        d->clock_mhz = 0;
    /* 0 (or an error) on a device without double precision */
    if (!OCL_SCALAR_INFO(id, CL_DEVICE_DOUBLE_FP_CONFIG, fp64))
        fp64 = 0;
    info_string(id, CL_DEVICE_NAME, d->name, sizeof d->name);
    info_string(id, CL_DEVICE_VERSION, d->version, sizeof d->version);
    info_string(id, CL_DRIVER_VERSION, d->driver, sizeof d->driver);
    info_string(id, CL_DEVICE_OPENCL_C_VERSION, d->c_version, sizeof d->c_version);
    platform_string(d->platform, CL_PLATFORM_NAME, d->platform_name,
                    sizeof d->platform_name);
    platform_string(d->platform, CL_PLATFORM_VERSION, d->platform_version,
                    sizeof d->platform_version);
    if (!d->name[0])
        snprintf(d->name, sizeof d->name, "OpenCL device %u of platform %u",
                 d->device_index, d->platform_index);
    if (sscanf(d->c_version, "OpenCL C %d.%d", &d->c_major, &d->c_minor) != 2)
        d->c_major = d->c_minor = 0;
    d->fp16           = has_extension(id, "cl_khr_fp16");
    d->fp64           = fp64 != 0 && has_extension(id, "cl_khr_fp64");
    d->exact_div_sqrt = (fp32 & CL_FP_CORRECTLY_ROUNDED_DIVIDE_SQRT) != 0;
    d->denorms        = (fp32 & CL_FP_DENORM) != 0;

    char  *why = d->unusable;
    size_t len = sizeof d->unusable;
    if (!ok)
        snprintf(why, len, "the driver did not answer clGetDeviceInfo");
    else if (!available)
        snprintf(why, len, "the driver reports it unavailable");
    else if (!compiler)
        snprintf(why, len, "it has no OpenCL C compiler");
    else if (d->c_major * 10 + d->c_minor < 12)
        snprintf(why, len, "it supports %s; kiln needs OpenCL C 1.2",
                 d->c_version[0] ? d->c_version : "no known OpenCL C version");
    else if (d->local_mem < OCL_MIN_LOCAL_MEM)
        snprintf(why, len, "%llu bytes of local memory; kiln needs %d",
                 (unsigned long long)d->local_mem, OCL_MIN_LOCAL_MEM);
    else if (d->max_group < OCL_MIN_GROUP)
        snprintf(why, len, "work-groups of at most %zu work-items; kiln needs %d",
                 d->max_group, OCL_MIN_GROUP);
}

/* Appends the devices of platform p (index pi) to *infos. */
static kiln_status add_platform(const kiln_host *host, cl_platform_id p, unsigned pi,
                                ocl_info **infos, int *count)
{
    cl_uint n   = 0;
    cl_int  err = clGetDeviceIDs(p, CL_DEVICE_TYPE_ALL, 0, NULL, &n);
    if (err == CL_DEVICE_NOT_FOUND || (err == CL_SUCCESS && n == 0))
        return KILN_OK;
    if (err != CL_SUCCESS) {
        host->log(KILN_LOG_DEBUG, "opencl: platform %u: clGetDeviceIDs failed: %s (%d)",
                  pi, ocl_cl_name(err), err);
        return KILN_OK;
    }
    cl_device_id *ids   = calloc(n, sizeof *ids);
    ocl_info     *grown = realloc(*infos, ((size_t)*count + n) * sizeof *grown);
    if (grown)
        *infos = grown;
    if (!ids || !grown) {
        free(ids);
        return host->error(KILN_ERR_NO_MEMORY,
                           "opencl: out of memory listing %u "
                           "devices of platform %u",
                           (unsigned)n, pi);
    }
    err = clGetDeviceIDs(p, CL_DEVICE_TYPE_ALL, n, ids, NULL);
    for (cl_uint k = 0; err == CL_SUCCESS && k < n; k++) {
        ocl_info *d = &(*infos)[(*count)++];
        memset(d, 0, sizeof *d);
        d->platform       = p;
        d->id             = ids[k];
        d->platform_index = pi;
        d->device_index   = k;
        describe(d);
    }
    free(ids);
    return KILN_OK;
}

kiln_status ocl_discover(const kiln_host *host, ocl_info **infos, int *count)
{
    *infos      = NULL;
    *count      = 0;
    cl_uint n   = 0;
    cl_int  err = clGetPlatformIDs(0, NULL, &n);
    if (err != CL_SUCCESS || n == 0) {
        /* -1001 (CL_PLATFORM_NOT_FOUND_KHR): the loader found no driver */
        host->log(KILN_LOG_DEBUG,
                  "opencl: no platform: clGetPlatformIDs gave %s (%d) "
                  "and %u platforms",
                  ocl_cl_name(err), err, (unsigned)n);
        return KILN_OK;
    }
    cl_platform_id *ids = calloc(n, sizeof *ids);
    if (!ids)
        return host->error(KILN_ERR_NO_MEMORY,
                           "opencl: out of memory listing %u "
                           "platforms",
                           (unsigned)n);
    err            = clGetPlatformIDs(n, ids, NULL);
    kiln_status st = KILN_OK;
    for (cl_uint p = 0; err == CL_SUCCESS && st == KILN_OK && p < n; p++)
        st = add_platform(host, ids[p], p, infos, count);
    free(ids);
    if (st != KILN_OK) {
        free(*infos);
        *infos = NULL;
        *count = 0;
        return st;
    }
    if (*count > 1)
        qsort(*infos, (size_t)*count, sizeof **infos, cmp_info);
    return KILN_OK;
}

int ocl_score(const ocl_info *infos, int count)
{
    static const int scores[] = {100, 95, 90, 10, 5};
    int              best     = 0;
    for (int i = 0; i < count; i++)
        if (!infos[i].unusable[0] && scores[ocl_kind(&infos[i])] > best)
            best = scores[ocl_kind(&infos[i])];
    return best;
}
