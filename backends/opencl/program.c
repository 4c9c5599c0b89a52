/* program.c — the embedded kernels: building them (through the on-disk
 * cache), creating them, and launching them with checked arguments.
 *
 * The build options depend on what the device can do, never on its vendor:
 * -DKILN_FP64 where it has cl_khr_fp64 and is not a GPU (sums in double;
 * elsewhere compensated float), and -cl-fp32-correctly-rounded-divide-sqrt
 * where it supports that. KILN_OPENCL_FP64=off builds as for a device
 * without double precision, so that the tests cover that path on devices
 * that all have it; =on asks for double on GPUs too.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ocl-impl.h"

/* Bumped when the cache key or what a cached program must contain changes. */
#define OCL_PROGRAM_FORMAT 2

/* Elementwise kernels run in groups of this size (or the kernel's limit). */
#define OCL_ELEMENTWISE_GROUP 64
/* Reductions run in groups of up to this size. */
#define OCL_REDUCE_GROUP 256

static const char *const ocl_kernel_names[OCL_K_COUNT] = {
#define OCL_KERNEL_NAME(id, name)      name,
#define OCL_KERNEL_NAME_WIDE(id, name) name "_wide",
    OCL_KERNELS(OCL_KERNEL_NAME) OCL_INDEXED_KERNELS(OCL_KERNEL_NAME)
        OCL_INDEXED_KERNELS(OCL_KERNEL_NAME_WIDE)
#undef OCL_KERNEL_NAME
#undef OCL_KERNEL_NAME_WIDE
};

static size_t floor_pow2(size_t n)
{
    size_t p = 1;
    while (p * 2 <= n)
        p *= 2;
    return p;
}

/* Sums in double where the device has it, but on GPUs, whose double
 * precision often runs at 1/32 or 1/64 of single: there compensated single
 * precision (Kahan-Babuska) keeps the same digits at single's rate.
 * KILN_OPENCL_FP64=on asks for double wherever it exists, off for it
 * nowhere. */
bool ocl_use_fp64(const ocl_info *info)
{
    const char *env = getenv("KILN_OPENCL_FP64");
    if (!info->fp64 || (env && strcmp(env, "off") == 0))
        return false;
    return (env && strcmp(env, "on") == 0) || !(info->type & CL_DEVICE_TYPE_GPU);
}

static void build_options(const ocl_info *info, char *buf, size_t len)
{
    snprintf(buf, len, "-cl-std=CL1.2%s%s", ocl_use_fp64(info) ? " -DKILN_FP64" : "",
             info->exact_div_sqrt ? " -cl-fp32-correctly-rounded-divide-sqrt" : "");
}

/* Everything a built program depends on. */
static void cache_key(const ocl_info *info, const char *options, char *key, size_t len)
{
    uint64_t h = ocl_fnv1a(OCL_FNV_SEED, ocl_kernel_source, ocl_kernel_source_len);
    snprintf(key, len,
             "kiln-opencl program, format %d\n"
             "source: %zu bytes, fnv1a %016llx\n"
             "options: %s\n"
             "device: %s | %s\n"
             "driver: %s\n"
             "platform: %s | %s\n",
             OCL_PROGRAM_FORMAT, ocl_kernel_source_len, (unsigned long long)h, options,
             info->name, info->version, info->driver, info->platform_name,
             info->platform_version);
}

/* The first part of the build log, for an error message. */
static void build_log(ocl_device *dev, cl_program program, char *buf, size_t len)
{
    size_t need = 0;
    buf[0]      = '\0';
    if (clGetProgramBuildInfo(program, dev->info->id, CL_PROGRAM_BUILD_LOG, 0, NULL,
                              &need) != CL_SUCCESS ||
        need == 0)
        return;
    char *log = malloc(need);
    if (log && clGetProgramBuildInfo(program, dev->info->id, CL_PROGRAM_BUILD_LOG, need,
                                     log, NULL) == CL_SUCCESS)
        snprintf(buf, len, "%.*s", (int)(need - 1), log);
    free(log);
}

static kiln_status build_from_source(ocl_device *dev, const char *options)
{
    const char *src = ocl_kernel_source;
    size_t      len = ocl_kernel_source_len;
    cl_int      err;
    dev->program = clCreateProgramWithSource(dev->ctx, 1, &src, &len, &err);
    if (err != CL_SUCCESS)
        return ocl_cl_fail(dev->host, "clCreateProgramWithSource", err,
                           "%zu bytes of kernel source", len);
    err = clBuildProgram(dev->program, 1, &dev->info->id, options, NULL, NULL);
    if (err != CL_SUCCESS) {
        char log[768];
        build_log(dev, dev->program, log, sizeof log);
        return ocl_cl_fail(dev->host, "clBuildProgram", err,
                           "options \"%s\" on %s; "
                           "build log: %s",
                           options, dev->info->name, log[0] ? log : "(empty)");
    }
    return KILN_OK;
}

/* Builds from a cached binary; false (program released) if the driver
 * refuses it. */
static bool build_from_binary(ocl_device *dev, const char *options,
                              const unsigned char *bin, size_t len, char *why,
                              size_t why_len)
{
    cl_int err, status = CL_SUCCESS;
    dev->program = clCreateProgramWithBinary(dev->ctx, 1, &dev->info->id, &len, &bin,
                                             &status, &err);
    if (err == CL_SUCCESS && status == CL_SUCCESS)
        err = clBuildProgram(dev->program, 1, &dev->info->id, options, NULL, NULL);
    if (err == CL_SUCCESS && status == CL_SUCCESS)
        return true;
    snprintf(why, why_len, "the driver refused the binary: %s (%d)",
             ocl_cl_name(err != CL_SUCCESS ? err : status),
             err != CL_SUCCESS ? err : status);
    if (dev->program)
        clReleaseProgram(dev->program);
    dev->program = NULL;
    return false;
}

/* The built program's binary, malloc'd; NULL if the driver gives none. */
static unsigned char *program_binary(ocl_device *dev, size_t *len)
{
    size_t size = 0;
    if (clGetProgramInfo(dev->program, CL_PROGRAM_BINARY_SIZES, sizeof size, &size,
                         NULL) != CL_SUCCESS ||
        size == 0)
        return NULL;
    unsigned char *bin = malloc(size);
    if (bin && clGetProgramInfo(dev->program, CL_PROGRAM_BINARIES, sizeof bin, &bin,
                                NULL) != CL_SUCCESS) {
        free(bin);
        bin = NULL;
    }
    *len = size;
    return bin;
}

static void cache_store(ocl_device *dev, const char *dir, const char *path,
                        const char *key)
{
    size_t         len = 0;
    char           why[512];
    unsigned char *bin = program_binary(dev, &len);
    if (!bin)
        dev->host->log(KILN_LOG_INFO, "opencl: program cache: the driver gives no "
                                      "binary to store");
    else if (ocl_cache_store(dir, path, key, bin, len, why, sizeof why))
        dev->host->log(KILN_LOG_INFO, "opencl: program cache stored %s (%zu bytes)", path,
                       len);
    else
        dev->host->log(KILN_LOG_WARN, "opencl: program cache: %s", why);
    free(bin);
}

/* Builds dev->program, from the cache when it holds a good entry. */
static kiln_status build_program(ocl_device *dev)
{
    char options[256], key[2048], dir[3072], path[4096], why[512] = "";
    build_options(dev->info, options, sizeof options);
    bool cached = ocl_cache_dir(dir, sizeof dir, why, sizeof why);
    if (why[0])
        dev->host->log(KILN_LOG_WARN, "opencl: program cache: %s", why);
    if (!cached) {
        dev->host->log(KILN_LOG_INFO, "opencl: program cache off (KILN_CACHE_DIR=off, "
                                      "no HOME, or a relative folder); building from "
                                      "source");
        return build_from_source(dev, options);
    }
    why[0] = '\0';
    cache_key(dev->info, options, key, sizeof key);
    snprintf(path, sizeof path, "%s/opencl-%016llx.bin", dir,
             (unsigned long long)ocl_fnv1a(OCL_FNV_SEED, key, strlen(key)));

    unsigned char   *bin = NULL;
    size_t           len = 0;
    ocl_cache_result r   = ocl_cache_load(path, key, &bin, &len, why, sizeof why);
    if (r == OCL_CACHE_HIT) {
        bool ok = build_from_binary(dev, options, bin, len, why, sizeof why);
        free(bin);
        if (ok) {
            dev->host->log(KILN_LOG_INFO, "opencl: program cache hit: %s", path);
            return KILN_OK;
        }
        remove(path);
        r = OCL_CACHE_BAD;
    }
    if (r == OCL_CACHE_BAD)
        dev->host->log(KILN_LOG_INFO,
                       "opencl: program cache entry %s was unusable "
                       "(%s): deleted, rebuilding",
                       path, why);
    else
        dev->host->log(KILN_LOG_INFO,
                       "opencl: program cache miss: %s%s%s; building "
                       "from source",
                       path, why[0] ? ": " : "", why);
    kiln_status st = build_from_source(dev, options);
    if (st == KILN_OK)
        cache_store(dev, dir, path, key);
    return st;
}

static kiln_status create_kernels(ocl_device *dev)
{
    size_t group = OCL_REDUCE_GROUP < dev->info->max_group ? OCL_REDUCE_GROUP
                                                           : dev->info->max_group;
    for (int k = 0; k < OCL_K_COUNT; k++) {
        cl_int err;
        dev->kernels[k] = clCreateKernel(dev->program, ocl_kernel_names[k], &err);
        if (err != CL_SUCCESS)
            return ocl_cl_fail(dev->host, "clCreateKernel", err, "kernel %s",
                               ocl_kernel_names[k]);
        size_t kg = 0;
        err       = clGetKernelWorkGroupInfo(dev->kernels[k], dev->info->id,
                                             CL_KERNEL_WORK_GROUP_SIZE, sizeof kg, &kg, NULL);
        if (err != CL_SUCCESS)
            return ocl_cl_fail(dev->host, "clGetKernelWorkGroupInfo", err,
                               "CL_KERNEL_WORK_GROUP_SIZE of %s", ocl_kernel_names[k]);
        dev->kernel_group[k] = kg ? kg : 1;
        if (kg && kg < group)
            group = kg;
    }
    /* an acc_t and an index of local memory per work-item */
    while (group > 1 && group * 16 > dev->info->local_mem)
        group /= 2;
    dev->group = floor_pow2(group);
    return KILN_OK;
}

uint64_t ocl_narrow_max(void)
{
    const char *env = getenv("KILN_OPENCL_WIDE_ABOVE");
    char       *end;
    if (!env || !*env)
        return INT32_MAX;
    unsigned long long v = strtoull(env, &end, 10);
    return *end || v > INT32_MAX ? INT32_MAX : (uint64_t)v;
}

kiln_status ocl_program_open(ocl_device *dev)
{
    dev->narrow_max = ocl_narrow_max();
    kiln_status st = build_program(dev);
    return st == KILN_OK ? create_kernels(dev) : st;
}

void ocl_program_close(ocl_device *dev)
{
    for (int k = 0; k < OCL_K_COUNT; k++)
        if (dev->kernels[k])
            clReleaseKernel(dev->kernels[k]);
    if (dev->program)
        clReleaseProgram(dev->program);
    memset(dev->kernels, 0, sizeof dev->kernels);
    dev->program = NULL;
}

/* ---- launches ------------------------------------------------------------ */

ocl_launch ocl_begin(ocl_device *dev, ocl_kernel_id id)
{
    ocl_launch l = {.dev = dev, .id = id, .next = 0, .err = CL_SUCCESS};
    return l;
}

/* Every index below INT32_MAX (and the global size, rounded up to a
 * group, below UINT32_MAX): idx_t uint and sidx_t int hold them all. */
ocl_launch ocl_begin_indexed(ocl_device *dev, ocl_kernel_id id, uint64_t extent)
{
    bool       wide = extent > dev->narrow_max;
    ocl_launch l    = ocl_begin(dev, wide ? (ocl_kernel_id)(id + OCL_K_WIDE_SHIFT) : id);
    l.wide          = wide;
    return l;
}

void ocl_arg_idx(ocl_launch *l, uint64_t v)
{
    if (l->wide)
        ocl_arg_u64(l, v);
    else
        ocl_arg_u32(l, (uint32_t)v);
}

void ocl_arg(ocl_launch *l, size_t size, const void *value)
{
    cl_int err = clSetKernelArg(l->dev->kernels[l->id], l->next, size, value);
    if (err != CL_SUCCESS && l->err == CL_SUCCESS) {
        l->err     = err;
        l->bad_arg = l->next;
    }
    l->next++;
}

void ocl_arg_mem(ocl_launch *l, cl_mem mem)
{
    ocl_arg(l, sizeof mem, &mem);
}

cl_mem ocl_mem(const ocl_device *dev, const kiln_node *t)
{
    const ocl_buffer *b = t->buffer;
    return b ? b->mem : dev->dummy;
}

uint64_t ocl_elem_offset(const kiln_node *t)
{
    return t->offset / kiln__elem_size(t->dtype);
}

void ocl_arg_node(ocl_launch *l, const kiln_node *t)
{
    ocl_arg_mem(l, t ? ocl_mem(l->dev, t) : l->dev->dummy);
    ocl_arg_u64(l, t ? ocl_elem_offset(t) : 0);
}

void ocl_arg_u64(ocl_launch *l, uint64_t v)
{
    cl_ulong u = v;
    ocl_arg(l, sizeof u, &u);
}

void ocl_arg_u32(ocl_launch *l, uint32_t v)
{
    cl_uint u = v;
    ocl_arg(l, sizeof u, &u);
}

void ocl_arg_i32(ocl_launch *l, int32_t v)
{
    cl_int i = v;
    ocl_arg(l, sizeof i, &i);
}

void ocl_arg_f32(ocl_launch *l, float v)
{
    cl_float f = v;
    ocl_arg(l, sizeof f, &f);
}

void ocl_arg_local(ocl_launch *l, size_t each, size_t group)
{
    ocl_arg(l, each * group, NULL);
}

size_t ocl_group_for(const ocl_device *dev, uint64_t n)
{
    size_t g = dev->group;
    while (g > 1 && g / 2 >= n)
        g /= 2;
    return g;
}

kiln_status ocl_run_rows(ocl_device *dev, const ocl_row_launch *r)
{
    size_t     group = ocl_group_for(dev, r->cols);
    ocl_launch l     = ocl_begin(dev, r->id);
    for (int k = 0; k < r->n_nodes; k++)
        ocl_arg_node(&l, r->nodes[k]);
    ocl_arg_u64(&l, r->cols);
    if (r->flag >= 0)
        ocl_arg_i32(&l, r->flag);
    ocl_arg_local(&l, r->each, group);
    if (r->indices)
        ocl_arg_local(&l, sizeof(cl_ulong), group);
    return r->rows ? ocl_run_groups(&l, r->rows, group) : KILN_OK;
}

/* global[d] work-items in groups of local[d], over dims dimensions. */
static kiln_status enqueue_nd(ocl_launch *l, cl_uint dims, const size_t *global,
                              const size_t *local)
{
    const char *name = ocl_kernel_names[l->id];
    if (l->err != CL_SUCCESS)
        return ocl_cl_fail(l->dev->host, "clSetKernelArg", l->err,
                           "kernel %s, argument %u", name, (unsigned)l->bad_arg);
    cl_int err = clEnqueueNDRangeKernel(l->dev->queue, l->dev->kernels[l->id], dims, NULL,
                                        global, local, 0, NULL, NULL);
    if (err != CL_SUCCESS)
        return ocl_cl_fail(l->dev->host, "clEnqueueNDRangeKernel", err,
                           "kernel %s, %zu x %zu work-items in groups of %zu x %zu",
                           name, global[0], dims > 1 ? global[1] : 1, local[0],
                           dims > 1 ? local[1] : 1);
    return KILN_OK;
}

static kiln_status enqueue(ocl_launch *l, size_t global, size_t local)
{
    return enqueue_nd(l, 1, &global, &local);
}

size_t ocl_run_group(const ocl_device *dev, ocl_kernel_id id)
{
    size_t kg = dev->kernel_group[id];
    return floor_pow2(kg < OCL_ELEMENTWISE_GROUP ? kg : OCL_ELEMENTWISE_GROUP);
}

kiln_status ocl_run(ocl_launch *l, uint64_t n)
{
    size_t local = ocl_run_group(l->dev, l->id);
    if (n > SIZE_MAX - local)
        return l->dev->host->error(KILN_ERR_INVALID_ARG,
                                   "opencl: %llu work-items do "
                                   "not fit a size_t",
                                   (unsigned long long)n);
    size_t global = ((size_t)n + local - 1) / local * local;
    return enqueue(l, global, local);
}

kiln_status ocl_run_groups(ocl_launch *l, uint64_t groups, size_t group)
{
    if (groups > SIZE_MAX / group)
        return l->dev->host->error(KILN_ERR_INVALID_ARG,
                                   "opencl: %llu work-groups of "
                                   "%zu do not fit a size_t",
                                   (unsigned long long)groups, group);
    return enqueue(l, (size_t)groups * group, group);
}

kiln_status ocl_run_groups_2d(ocl_launch *l, uint64_t groups, size_t lx, size_t ly)
{
    if (groups > SIZE_MAX / lx)
        return l->dev->host->error(KILN_ERR_INVALID_ARG,
                                   "opencl: %llu work-groups of "
                                   "%zu x %zu do not fit a size_t",
                                   (unsigned long long)groups, lx, ly);
    size_t global[2] = {(size_t)groups * lx, ly}, local[2] = {lx, ly};
    return enqueue_nd(l, 2, global, local);
}

/* ---- scratch ---------------------------------------------------------------- */

kiln_status ocl_grow_buffer(ocl_device *dev, cl_mem *buf, size_t *size, size_t bytes,
                            const char *what, cl_mem *mem)
{
    if (bytes <= *size && *buf) {
        *mem = *buf;
        return KILN_OK;
    }
    /* Releasing is safe while queued kernels still use it: OpenCL frees
     * the memory only once they are done. */
    if (*buf)
        clReleaseMemObject(*buf);
    *buf      = NULL;
    *size     = 0;
    size_t at = bytes < ((size_t)1 << 20) ? (size_t)1 << 20 : bytes;
    if (at > dev->info->max_alloc)
        at = bytes;
    cl_int err;
    *buf = clCreateBuffer(dev->ctx, CL_MEM_READ_WRITE, at, NULL, &err);
    if (err != CL_SUCCESS) {
        *buf = NULL;
        if (err == CL_INVALID_BUFFER_SIZE)
            return dev->host->error(KILN_ERR_NO_MEMORY,
                                    "opencl: clCreateBuffer failed: "
                                    "CL_INVALID_BUFFER_SIZE (%d): %zu bytes of %s "
                                    "exceed the device's largest allocation (%llu)",
                                    err, at, what,
                                    (unsigned long long)dev->info->max_alloc);
        return ocl_cl_fail(dev->host, "clCreateBuffer", err, "%zu bytes of %s", at, what);
    }
    *size = at;
    *mem  = *buf;
    return KILN_OK;
}

kiln_status ocl_scratch(ocl_device *dev, size_t bytes, cl_mem *mem)
{
    return ocl_grow_buffer(dev, &dev->scratch, &dev->scratch_size, bytes, "scratch", mem);
}
