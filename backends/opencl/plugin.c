/* plugin.c — the kiln-opencl plugin: its table, its devices, their buffers,
 * and the dispatch of graph nodes to ops.
 *
 * A device owns an OpenCL context and one in-order command queue; every
 * kernel and every CLBlast call goes onto that queue, so nodes run in order
 * without events and tensors stay resident on the device between runs. The
 * host waits only where it must: buffer_read, buffer_write (their host
 * memory is the caller's) and synchronize.
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "ocl-impl.h"

#include <clblast_c.h>

/* What init found; valid until shutdown. */
static const kiln_host *ocl_host;
static ocl_info        *ocl_infos;
static int              ocl_count;

/* ---- buffers -------------------------------------------------------------- */

static kiln_status ocl_buffer_alloc(void *ctx, size_t size, void **buffer)
{
    ocl_device *dev   = ctx;
    size_t      bytes = size < 64 ? 64 : size; /* a zero-size cl_mem is invalid */
    if (bytes > dev->info->max_alloc)
        return dev->host->error(KILN_ERR_NO_MEMORY,
                                "opencl: cannot allocate %zu bytes "
                                "on %s: its largest allocation "
                                "(CL_DEVICE_MAX_MEM_ALLOC_SIZE) is %llu bytes",
                                size, dev->info->name,
                                (unsigned long long)dev->info->max_alloc);
    ocl_buffer *b = malloc(sizeof *b);
    if (!b)
        return dev->host->error(KILN_ERR_NO_MEMORY, "opencl: out of host memory for a "
                                                    "buffer handle");
    cl_int err;
    b->mem  = clCreateBuffer(dev->ctx, CL_MEM_READ_WRITE, bytes, NULL, &err);
    b->size = size;
    if (err != CL_SUCCESS) {
        free(b);
        kiln_status st = ocl_cl_fail(dev->host, "clCreateBuffer", err, "%zu bytes on %s",
                                     size, dev->info->name);
        return err == CL_INVALID_BUFFER_SIZE ? KILN_ERR_NO_MEMORY : st;
    }
    /* Drivers may allocate on first use; touching the last element now makes
     * running out of memory show at compile, not in the middle of a run. */
    cl_float zero = 0.0f;
    err           = clEnqueueWriteBuffer(dev->queue, b->mem, CL_TRUE, bytes - sizeof zero,
                                         sizeof zero, &zero, 0, NULL, NULL);
    if (err != CL_SUCCESS) {
        clReleaseMemObject(b->mem);
        free(b);
        return ocl_cl_fail(dev->host, "clEnqueueWriteBuffer", err,
                           "first touch of "
                           "%zu bytes on %s",
                           size, dev->info->name);
    }
    *buffer = b;
    return KILN_OK;
}

static void ocl_buffer_free(void *ctx, void *buffer)
{
    ocl_buffer *b = buffer;
    (void)ctx;
    if (b)
        clReleaseMemObject(b->mem);
    free(b);
}

static kiln_status ocl_buffer_range(const ocl_device *dev, const char *what,
                                    const ocl_buffer *b, size_t offset, size_t size)
{
    if (!b)
        return dev->host->error(KILN_ERR_INVALID_ARG, "opencl: %s on a NULL buffer",
                                what);
    if (offset > b->size || size > b->size - offset)
        return dev->host->error(KILN_ERR_INVALID_ARG,
                                "opencl: %s of %zu bytes at offset %zu is outside "
                                "a buffer of %zu bytes",
                                what, size, offset, b->size);
    return KILN_OK;
}

static kiln_status ocl_check_labels(ocl_device *dev);

/* A write up to OCL_STAGE_ONE does not wait: the driver copies the source
 * into a buffer of its own as it creates it (CL_MEM_COPY_HOST_PTR), and a
 * copy queued after the work already queued takes it to its place; the
 * buffer goes once the copy has run (clReleaseMemObject defers it). A
 * training step's inputs, labels and hyper-parameters so cost no wait. A
 * larger write, or one whose buffer cannot be had, waits as before. (A
 * non-blocking clEnqueueWriteBuffer from a copy kept until the next wait
 * did the same on POCL, but Mesa 22.3's rusticl read zeros from it.) */
#define OCL_STAGE_ONE ((size_t)4 << 20)

static kiln_status ocl_buffer_write(void *ctx, void *buffer, size_t offset,
                                    const void *src, size_t size)
{
    ocl_device *dev = ctx;
    ocl_buffer *b   = buffer;
    kiln_status st  = ocl_buffer_range(dev, "buffer_write", b, offset, size);
    if (st != KILN_OK || size == 0)
        return st;
    cl_int err   = CL_SUCCESS;
    cl_mem stage = size <= OCL_STAGE_ONE
                       ? clCreateBuffer(dev->ctx, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR,
                                        size, (void *)src, &err)
                       : NULL;
    if (stage) {
        err = clEnqueueCopyBuffer(dev->queue, stage, b->mem, 0, offset, size, 0, NULL,
                                  NULL);
        clReleaseMemObject(stage);
        if (err != CL_SUCCESS)
            return ocl_cl_fail(dev->host, "clEnqueueCopyBuffer", err,
                               "%zu bytes to offset %zu", size, offset);
        return KILN_OK;
    }
    err = clEnqueueWriteBuffer(dev->queue, b->mem, CL_TRUE, offset, size, src, 0, NULL,
                               NULL);
    if (err != CL_SUCCESS)
        return ocl_cl_fail(dev->host, "clEnqueueWriteBuffer", err,
                           "%zu bytes at offset %zu", size, offset);
    return KILN_OK;
}

/* The read waits for every node queued before it; a label error found by
 * one of them is reported here too, so a bad result is never read silently. */
static kiln_status ocl_buffer_read(void *ctx, void *buffer, size_t offset, void *dst,
                                   size_t size)
{
    ocl_device       *dev = ctx;
    const ocl_buffer *b   = buffer;
    kiln_status       st  = ocl_buffer_range(dev, "buffer_read", b, offset, size);
    if (st != KILN_OK || size == 0)
        return st;
    cl_int err = clEnqueueReadBuffer(dev->queue, b->mem, CL_TRUE, offset, size, dst, 0,
                                     NULL, NULL);
    if (err != CL_SUCCESS)
        return ocl_cl_fail(dev->host, "clEnqueueReadBuffer", err,
                           "%zu bytes at offset %zu", size, offset);
    return ocl_check_labels(dev);
}

/* ---- label checks ------------------------------------------------------------- */

/* One int per slot; INT_MAX means "no bad row". Static: a non-blocking
 * write reads it after the call returns. */
static const cl_int ocl_no_bad_rows[OCL_MAX_CHECKS] = {
    INT_MAX, INT_MAX, INT_MAX, INT_MAX, INT_MAX, INT_MAX, INT_MAX, INT_MAX,
};

kiln_status ocl_label_slot(ocl_device *dev, const kiln_node *node, size_t i,
                           const kiln_node *labels, int64_t classes, cl_uint *slot)
{
    if (dev->n_checks == 0) {
        cl_int err = clEnqueueWriteBuffer(dev->queue, dev->err, CL_FALSE, 0,
                                          sizeof ocl_no_bad_rows, ocl_no_bad_rows, 0,
                                          NULL, NULL);
        if (err != CL_SUCCESS)
            return ocl_cl_fail(dev->host, "clEnqueueWriteBuffer", err,
                               "resetting the label-check buffer");
    }
    /* past the last slot, nodes share it: the row is still reported, with
     * the name of the first node that used the slot */
    bool fresh = dev->n_checks < OCL_MAX_CHECKS;
    int  k     = fresh ? dev->n_checks++ : OCL_MAX_CHECKS - 1;
    if (fresh)
        dev->checks[k] = (ocl_label_check){
            .op      = kiln__op_name(node->op),
            .kind    = node->op,
            .node    = i,
            .labels  = ocl_mem(dev, labels),
            .offset  = ocl_elem_offset(labels),
            .classes = classes,
        };
    if (fresh && node->op == KILN_OP_STORE_SLICE) {
        dev->checks[k].axis   = node->iparam[0];
        dev->checks[k].length = node->src[1]->dims[node->iparam[0]];
        dev->checks[k].whole  = node->dims[node->iparam[0]];
    }
    dev->err_pending = true;
    *slot            = (cl_uint)k;
    return KILN_OK;
}

/* Reads the label checks queued since the last read (blocking) and reports
 * the first bad row with its label (position with its id), as the cpu
 * backend words it. */
static kiln_status ocl_check_labels(ocl_device *dev)
{
    if (!dev->err_pending)
        return KILN_OK;
    cl_int rows[OCL_MAX_CHECKS];
    int    n         = dev->n_checks;
    dev->err_pending = false;
    dev->n_checks    = 0;
    cl_int err       = clEnqueueReadBuffer(dev->queue, dev->err, CL_TRUE, 0,
                                           (size_t)n * sizeof *rows, rows, 0, NULL, NULL);
    if (err != CL_SUCCESS)
        return ocl_cl_fail(dev->host, "clEnqueueReadBuffer", err, "the label checks");
    for (int k = 0; k < n; k++) {
        if (rows[k] == INT_MAX)
            continue;
        const ocl_label_check *c     = &dev->checks[k];
        cl_int                 label = 0;
        err                          = clEnqueueReadBuffer(dev->queue, c->labels, CL_TRUE,
                                                           (c->offset + (size_t)rows[k]) * sizeof label,
                                                           sizeof label, &label, 0, NULL, NULL);
        if (err != CL_SUCCESS)
            return ocl_cl_fail(dev->host, "clEnqueueReadBuffer", err, "a bad label");
        if (c->kind == KILN_OP_STORE_SLICE)
            return dev->host->error(KILN_ERR_INVALID_ARG,
                                    "%s (node %zu): start %d is outside [0, %lld] (a "
                                    "value of %lld along axis %d into %lld)",
                                    c->op, c->node, (int)label,
                                    (long long)(c->classes - 1), (long long)c->length,
                                    c->axis, (long long)c->whole);
        bool ids = c->kind == KILN_OP_EMBEDDING || c->kind == KILN_OP_EMBEDDING_GRAD;
        return dev->host->error(KILN_ERR_INVALID_ARG,
                                "%s (node %zu): %s %d at %s "
                                "%d is outside [0, %lld)",
                                c->op, c->node, ids ? "id" : "label", (int)label,
                                ids ? "position" : "row", (int)rows[k],
                                (long long)c->classes);
    }
    return KILN_OK;
}

/* ---- running graphs -------------------------------------------------------------- */

static bool ocl_supports_op(void *ctx, const kiln_node *node)
{
    return node && !ocl_check_node(ctx, node, false);
}

static kiln_status ocl_graph_compute(void *ctx, const kiln_node *const *nodes,
                                     size_t n_nodes)
{
    ocl_device *dev = ctx;
    kiln_status st  = KILN_OK;
    for (size_t i = 0; i < n_nodes && st == KILN_OK; i++) {
        const kiln_node *node = nodes[i];
        const char      *why  = node ? ocl_check_node(dev, node, true) : NULL;
        if (!node)
            st = dev->host->error(KILN_ERR_INVALID_ARG, "opencl: node %zu is NULL", i);
        else if (why)
            st = ocl_refuse(dev, i, node, why);
        else {
            size_t fused = ocl_fuse(dev, nodes, i, n_nodes, &st);
            if (fused > 0)
                i += fused - 1;
            else
                st = ocl_run_node(dev, node, i);
        }
    }
    if (st != KILN_OK) {
        /* the run is failing: its label checks must not outlive it */
        dev->n_checks    = 0;
        dev->err_pending = false;
        return st;
    }
    /* Start the queued work now; synchronize waits for it. */
    cl_int err = clFlush(dev->queue);
    return err == CL_SUCCESS ? KILN_OK : ocl_cl_fail(dev->host, "clFlush", err, NULL);
}

/* One wait: the label checks' blocking read where some are pending (it
 * completes after everything queued before it), else clFinish. */
static kiln_status ocl_synchronize(void *ctx)
{
    ocl_device *dev = ctx;
    if (dev->err_pending)
        return ocl_check_labels(dev);
    cl_int err = clFinish(dev->queue);
    if (err != CL_SUCCESS)
        return ocl_cl_fail(dev->host, "clFinish", err, "on %s", dev->info->name);
    return KILN_OK;
}

static void ocl_device_free(void *ctx)
{
    ocl_device *dev = ctx;
    if (!dev)
        return;
    if (dev->queue)
        clFinish(dev->queue);
    ocl_program_close(dev);
    cl_mem mems[] = {dev->scratch, dev->gemm_temp, dev->parts, dev->dummy, dev->err};
    for (size_t k = 0; k < sizeof mems / sizeof mems[0]; k++)
        if (mems[k])
            clReleaseMemObject(mems[k]);
    for (size_t k = 0; k < sizeof dev->widen / sizeof dev->widen[0]; k++)
        if (dev->widen[k])
            clReleaseMemObject(dev->widen[k]);
    if (dev->queue)
        clReleaseCommandQueue(dev->queue);
    if (dev->ctx)
        clReleaseContext(dev->ctx);
    free(dev);
}

static const kiln_device_iface ocl_device_iface = {
    .buffer_alloc  = ocl_buffer_alloc,
    .buffer_free   = ocl_buffer_free,
    .buffer_write  = ocl_buffer_write,
    .buffer_read   = ocl_buffer_read,
    .supports_op   = ocl_supports_op,
    .graph_compute = ocl_graph_compute,
    .synchronize   = ocl_synchronize,
    .free          = ocl_device_free,
};

/* ---- opening a device ----------------------------------------------------------- */

static kiln_status ocl_small_buffer(ocl_device *dev, size_t size, cl_mem *mem)
{
    cl_int err;
    *mem = clCreateBuffer(dev->ctx, CL_MEM_READ_WRITE, size, NULL, &err);
    return err == CL_SUCCESS
               ? KILN_OK
               : ocl_cl_fail(dev->host, "clCreateBuffer", err, "%zu bytes", size);
}

static kiln_status ocl_device_setup(ocl_device *dev)
{
    cl_context_properties props[] = {
        CL_CONTEXT_PLATFORM,
        (cl_context_properties)dev->info->platform,
        0,
    };
    cl_int err;
    dev->ctx = clCreateContext(props, 1, &dev->info->id, NULL, NULL, &err);
    if (err != CL_SUCCESS)
        return ocl_cl_fail(dev->host, "clCreateContext", err, "for %s", dev->info->name);
    dev->queue = clCreateCommandQueue(dev->ctx, dev->info->id, 0, &err);
    if (err != CL_SUCCESS)
        return ocl_cl_fail(dev->host, "clCreateCommandQueue", err, "for %s",
                           dev->info->name);
    kiln_status st = ocl_small_buffer(dev, 64, &dev->dummy);
    if (st == KILN_OK)
        st = ocl_small_buffer(dev, sizeof ocl_no_bad_rows, &dev->err);
    if (st == KILN_OK)
        st = ocl_program_open(dev);
    if (st == KILN_OK)
        st = ocl_gemm_prepare(dev);
    return st;
}

static kiln_status ocl_bad_index(int index)
{
    if (!ocl_host)
        return KILN_ERR_STATE;
    return ocl_host->error(KILN_ERR_NOT_FOUND, "opencl: no device %d (there %s %d)",
                           index, ocl_count == 1 ? "is" : "are", ocl_count);
}

/* Address space the first compiles of a device need beyond what the process
 * already maps. Measured with POCL 3.1 on 2 cores: 386 MiB mapped when the
 * device opens; building kiln's kernels and CLBlast's GEMM died inside the
 * driver (SIGSEGV, or an uncaught std::bad_alloc) under limits leaving up to
 * about 395 MiB, and ran with 415 MiB or more. A quarter more, for other
 * drivers and kernels. */
#define OCL_COMPILE_HEADROOM ((uint64_t)512 << 20)

/* Under an address-space limit (ulimit -v, RLIMIT_AS) too tight for the
 * driver's compiler, which does not survive running out, the device is
 * refused with a message instead of the process dying inside the driver. */
static kiln_status ocl_check_address_space(int index, const ocl_info *info)
{
    struct rlimit lim;
    if (getrlimit(RLIMIT_AS, &lim) != 0 || lim.rlim_cur == RLIM_INFINITY)
        return KILN_OK;
    unsigned long long pages = 0;
    FILE              *f     = fopen("/proc/self/statm", "r");
    bool               known = f && fscanf(f, "%llu", &pages) == 1;
    if (f)
        fclose(f);
    long page = sysconf(_SC_PAGESIZE);
    if (!known || page <= 0)
        return KILN_OK; /* nothing to measure against: try */
    uint64_t mapped = (uint64_t)pages * (uint64_t)page;
    uint64_t left   = lim.rlim_cur > mapped ? lim.rlim_cur - mapped : 0;
    if (left >= OCL_COMPILE_HEADROOM)
        return KILN_OK;
    return ocl_host->error(KILN_ERR_NO_MEMORY,
                           "opencl: device %d (%s) not opened: the address-space limit "
                           "(ulimit -v, %llu MiB) leaves %llu MiB beyond the %llu MiB "
                           "mapped, and compiling OpenCL kernels needs about %llu MiB: "
                           "raise the limit, or use the cpu backend (KILN_BACKEND=cpu)",
                           index, info->name, (unsigned long long)(lim.rlim_cur >> 20),
                           (unsigned long long)(left >> 20),
                           (unsigned long long)(mapped >> 20),
                           (unsigned long long)(OCL_COMPILE_HEADROOM >> 20));
}

static kiln_status ocl_device_open(int index, kiln_device *device)
{
    if (!ocl_host)
        return KILN_ERR_STATE; /* init never ran: no one to tell */
    if (index < 0 || index >= ocl_count)
        return ocl_bad_index(index);
    ocl_info *info = &ocl_infos[index];
    if (info->unusable[0])
        return ocl_host->error(KILN_ERR_NOT_FOUND,
                               "opencl: device %d (%s) is not "
                               "usable: %s",
                               index, info->name, info->unusable);
    kiln_status st = ocl_check_address_space(index, info);
    if (st != KILN_OK)
        return st;
    ocl_device *dev = calloc(1, sizeof *dev);
    if (!dev)
        return ocl_host->error(KILN_ERR_NO_MEMORY,
                               "opencl: cannot allocate %zu bytes "
                               "for a device",
                               sizeof *dev);
    dev->host         = ocl_host;
    dev->info         = info;
    dev->index        = index;
    dev->rebase_above = ocl_rebase_above();
    st                = ocl_device_setup(dev);
    if (st != KILN_OK) {
        ocl_device_free(dev);
        return st;
    }
    ocl_host->log(KILN_LOG_DEBUG,
                  "opencl: device %d open: %s, reductions in groups "
                  "of %zu, sums in %s",
                  index, info->name, dev->group,
                  ocl_use_fp64(info) ? "double" : "compensated float");
    device->iface   = &ocl_device_iface;
    device->context = dev;
    return KILN_OK;
}

/* ---- the plugin ---------------------------------------------------------------- */

static int ocl_probe(const kiln_host *host)
{
    ocl_info *infos = NULL;
    int       count = 0;
    if (ocl_discover(host, &infos, &count) != KILN_OK)
        return 0;
    int score = ocl_score(infos, count);
    free(infos);
    return score;
}

static kiln_status ocl_init(const kiln_host *host)
{
    kiln_status st = ocl_discover(host, &ocl_infos, &ocl_count);
    if (st == KILN_OK)
        ocl_host = host;
    return st;
}

static void ocl_shutdown(void)
{
    /* CLBlast keeps programs of every context it has seen */
    CLBlastClearCache();
    free(ocl_infos);
    ocl_infos = NULL;
    ocl_count = 0;
    ocl_host  = NULL;
}

static int ocl_device_count(void)
{
    return ocl_count;
}

static kiln_status ocl_device_desc(int index, kiln_device_desc *desc)
{
    if (index < 0 || index >= ocl_count)
        return ocl_bad_index(index);
    const ocl_info *d = &ocl_infos[index];
    memset(desc, 0, sizeof *desc);
    snprintf(desc->name, sizeof desc->name, "%s", d->name);
    /* long driver strings are cut, not an error */
    int n = snprintf(desc->description, sizeof desc->description,
                     "%s; %s; driver %s; %s; fp16 %s, fp64 %s; %zu work-items a group",
                     d->platform_name, d->version, d->driver,
                     d->c_version[0] ? d->c_version : "no OpenCL C version",
                     d->fp16 ? "yes" : "no", d->fp64 ? "yes" : "no", d->max_group);
    if (n >= (int)sizeof desc->description)
        ocl_host->log(KILN_LOG_DEBUG, "opencl: device %d's description was cut", index);
    snprintf(desc->capabilities, sizeof desc->capabilities,
             "kind=%s opencl_c=%d.%d fp16=%s fp64=%s max_work_group=%zu "
             "max_alloc_bytes=%llu local_memory_bytes=%llu unified_memory=%s "
             "clock_mhz=%u denormals=%s correctly_rounded_divide_sqrt=%s",
             ocl_kind_name(d), d->c_major, d->c_minor, d->fp16 ? "yes" : "no",
             d->fp64 ? "yes" : "no", d->max_group, (unsigned long long)d->max_alloc,
             (unsigned long long)d->local_mem, d->unified ? "yes" : "no", d->clock_mhz,
             d->denorms ? "yes" : "no", d->exact_div_sqrt ? "yes" : "no");
    desc->type          = d->type & CL_DEVICE_TYPE_GPU           ? KILN_DEVICE_GPU
                          : d->type & CL_DEVICE_TYPE_ACCELERATOR ? KILN_DEVICE_ACCELERATOR
                                                                 : KILN_DEVICE_CPU;
    desc->memory        = d->memory;
    desc->max_alloc     = d->max_alloc;
    desc->compute_units = d->compute_units <= INT_MAX ? (int)d->compute_units : INT_MAX;
    snprintf(desc->unusable, sizeof desc->unusable, "%s", d->unusable);
    return KILN_OK;
}

static const kiln_plugin ocl_plugin = {
    .abi_version  = KILN_BACKEND_ABI_VERSION,
    .name         = "opencl",
    .description  = "kiln's OpenCL backend (CLBlast GEMM, embedded kernels)",
    .probe        = ocl_probe,
    .init         = ocl_init,
    .shutdown     = ocl_shutdown,
    .device_count = ocl_device_count,
    .device_desc  = ocl_device_desc,
    .device_open  = ocl_device_open,
};

KILN_BACKEND_ENTRY
{
    return &ocl_plugin;
}
