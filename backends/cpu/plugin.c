/* plugin.c — the kiln-cpu plugin: its table, its one device, buffers, and the
 * dispatch of graph nodes to ops.
 *
 * At device open the device picks its kernels once (isa.c: the best ISA the
 * CPU and the OS support, capped by KILN_CPU_ISA), starts its threads
 * (KILN_NUM_THREADS, else one per core) and allocates each thread's GEMM
 * packing buffers; the description says what it chose and why.
 *
 * Every node is checked before it runs (dtypes, shapes, data inside its
 * buffer), by the same code supports_op uses, so the ops can trust the node
 * and a bad graph is an error with a message, never a stray read. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cpu-impl.h"

#define CPU_ALIGN 64

/* What init was given; valid until shutdown. */
static const kiln_host *cpu_host;


/* ---- buffers -------------------------------------------------------------- */

static kiln_status cpu_buffer_alloc(void *ctx, size_t size, void **buffer)
{
    cpu_device *dev   = ctx;
    cpu_buffer *b     = malloc(sizeof *b);
    size_t      bytes = size < CPU_ALIGN ? CPU_ALIGN : size;
    void       *data  = NULL;
    if (bytes <= SIZE_MAX - (CPU_ALIGN - 1))
        data = aligned_alloc(CPU_ALIGN,
                             (bytes + CPU_ALIGN - 1) & ~(size_t)(CPU_ALIGN - 1));
    if (!b || !data) {
        free(b);
        free(data);
        return dev->host->error(KILN_ERR_NO_MEMORY,
                                "cpu: cannot allocate %zu bytes for a buffer", size);
    }
    b->data = data;
    b->size = size;
    *buffer = b;
    return KILN_OK;
}

static void cpu_buffer_free(void *ctx, void *buffer)
{
    cpu_buffer *b = buffer;
    (void)ctx;
    if (b)
        free(b->data);
    free(b);
}

/* Whether [offset, offset + size) lies in b, without overflow. */
static kiln_status cpu_buffer_range(const cpu_device *dev, const char *what,
                                    const cpu_buffer *b, size_t offset, size_t size)
{
    if (!b)
        return dev->host->error(KILN_ERR_INVALID_ARG, "cpu: %s on a NULL buffer", what);
    if (offset > b->size || size > b->size - offset)
        return dev->host->error(KILN_ERR_INVALID_ARG,
                                "cpu: %s of %zu bytes at offset %zu is outside "
                                "a buffer of %zu bytes",
                                what, size, offset, b->size);
    return KILN_OK;
}

static kiln_status cpu_buffer_write(void *ctx, void *buffer, size_t offset,
                                    const void *src, size_t size)
{
    cpu_buffer *b  = buffer;
    kiln_status st = cpu_buffer_range(ctx, "buffer_write", b, offset, size);
    if (st == KILN_OK && size > 0)
        memcpy((char *)b->data + offset, src, size);
    return st;
}

static kiln_status cpu_buffer_read(void *ctx, void *buffer, size_t offset, void *dst,
                                   size_t size)
{
    const cpu_buffer *b  = buffer;
    kiln_status       st = cpu_buffer_range(ctx, "buffer_read", b, offset, size);
    if (st == KILN_OK && size > 0)
        memcpy(dst, (const char *)b->data + offset, size);
    return st;
}

/* ---- running graphs ------------------------------------------------------- */

static bool cpu_supports_op(void *ctx, const kiln_node *node)
{
    (void)ctx;
    return node && !cpu_check_node(node, false);
}

/* Whether a node would pass graph_compute's checks (for fusion). */
static bool cpu_node_runnable(const kiln_node *node)
{
    return !cpu_check_node(node, true);
}

static kiln_status cpu_graph_compute(void *ctx, const kiln_node *const *nodes,
                                     size_t n_nodes)
{
    const cpu_device *dev = ctx;
    for (size_t i = 0; i < n_nodes; i++) {
        const kiln_node *node = nodes[i];
        if (!node)
            return dev->host->error(KILN_ERR_INVALID_ARG, "cpu: node %zu is NULL", i);
        const char *why = cpu_check_node(node, true);
        if (why)
            return cpu_refuse(dev, i, node, why);
        kiln_status st    = KILN_OK;
        size_t      fused = cpu_fuse(dev, nodes, i, n_nodes, cpu_node_runnable, &st);
        if (fused > 0)
            i += fused - 1;
        else
            st = cpu_run_node(dev, node);
        if (st != KILN_OK)
            return st;
    }
    return KILN_OK;
}

/* Everything ran in graph_compute: nothing is ever queued. */
static kiln_status cpu_synchronize(void *ctx)
{
    (void)ctx;
    return KILN_OK;
}

static void cpu_device_free(void *ctx)
{
    cpu_device *dev = ctx;
    if (!dev)
        return;
    cpu_gemm_buffers_free(dev);
    cpu_pool_free(dev->pool);
    free(dev);
}

static const kiln_device_iface cpu_device_iface = {
    .buffer_alloc  = cpu_buffer_alloc,
    .buffer_free   = cpu_buffer_free,
    .buffer_write  = cpu_buffer_write,
    .buffer_read   = cpu_buffer_read,
    .supports_op   = cpu_supports_op,
    .graph_compute = cpu_graph_compute,
    .synchronize   = cpu_synchronize,
    .free          = cpu_device_free,
};

/* ---- the plugin ----------------------------------------------------------- */

/* The portable kernels, then those of the chosen ISA over them. */
static void cpu_kernels_select(cpu_kernels *k, cpu_isa isa)
{
    k->isa = "scalar";
    cpu_elementwise_kernels_scalar(k);
    cpu_reduce_kernels_scalar(k);
    cpu_softmax_kernels_scalar(k);
    cpu_loss_kernels_scalar(k);
    cpu_matmul_kernels_scalar(k);
    cpu_conv_kernels_scalar(k);
    cpu_norm_kernels_scalar(k);
    cpu_optim_kernels_scalar(k);
    cpu_half_kernels(k, isa != CPU_ISA_SCALAR);
#if defined(__x86_64__)
    if (isa == CPU_ISA_AVX2)
        cpu_kernels_avx2(k);
    else if (isa == CPU_ISA_AVX512)
        cpu_kernels_avx512(k);
#else
    (void)isa;
#endif
}

/* "AVX-512 CPU, 2 threads" and why, into desc's name and description. */
static void cpu_describe(const cpu_isa_choice *isa, const cpu_threads_choice *th,
                         kiln_device_desc *desc)
{
    char   has[64] = "";
    size_t used    = 0;
    for (int i = CPU_ISA_COUNT - 1; i >= 0 && used < sizeof has; i--)
        if (cpu_isa_supported((cpu_isa)i))
            used += (size_t)snprintf(has + used, sizeof has - used, "%s%s",
                                     used ? " " : "", cpu_isa_name((cpu_isa)i));
    snprintf(desc->name, sizeof desc->name, "%s CPU, %d thread%s",
             cpu_isa_label(isa->isa), th->n, th->n == 1 ? "" : "s");
    /* the parts are bounded so that the whole fits (cpu-impl.h's sizes) */
    snprintf(desc->description, sizeof desc->description,
             "%s kernels (%.110s); %d thread%s (%.72s); ISAs here: %.24s",
             cpu_isa_name(isa->isa), isa->why, th->n, th->n == 1 ? "" : "s", th->why,
             has);
    /* the same, for programs: "isa=avx2 isas=[avx2,scalar] threads=2" */
    for (char *c = has; *c; c++)
        if (*c == ' ')
            *c = ',';
    snprintf(desc->capabilities, sizeof desc->capabilities,
             "isa=%s best_isa=%s isas=[%s] threads=%d", cpu_isa_name(isa->isa),
             cpu_isa_name(isa->best), has, th->n);
}

static int cpu_probe(const kiln_host *host)
{
    (void)host;
    return 50; /* always runnable; a GPU backend scores 100 */
}

static kiln_status cpu_init(const kiln_host *host)
{
    cpu_host = host;
    return KILN_OK;
}

static void cpu_shutdown(void)
{
    cpu_host = NULL;
}

static int cpu_device_count(void)
{
    return 1;
}

static kiln_status cpu_bad_index(int index)
{
    if (!cpu_host)
        return KILN_ERR_STATE;
    return cpu_host->error(KILN_ERR_NOT_FOUND,
                           "cpu: no device %d (the cpu backend has device 0 only)",
                           index);
}

static kiln_status cpu_device_desc(int index, kiln_device_desc *desc)
{
    if (index != 0)
        return cpu_bad_index(index);
    cpu_isa_choice     isa;
    cpu_threads_choice threads;
    cpu_isa_choose(&isa);
    cpu_threads_choose(&threads);
    long pages     = sysconf(_SC_PHYS_PAGES);
    long page_size = sysconf(_SC_PAGESIZE);
    long cores     = sysconf(_SC_NPROCESSORS_ONLN);

    memset(desc, 0, sizeof *desc);
    cpu_describe(&isa, &threads, desc);
    desc->type   = KILN_DEVICE_CPU;
    desc->memory = pages > 0 && page_size > 0 ? (uint64_t)pages * (uint64_t)page_size : 0;
    desc->compute_units = cores > 0 && cores <= INT32_MAX ? (int)cores : 1;
    desc->unusable[0]   = '\0';
    return KILN_OK;
}

static kiln_status cpu_device_open(int index, kiln_device *device)
{
    if (!cpu_host)
        return KILN_ERR_STATE; /* init never ran: no one to tell */
    if (index != 0)
        return cpu_bad_index(index);
    cpu_device *dev = calloc(1, sizeof *dev);
    if (!dev)
        return cpu_host->error(KILN_ERR_NO_MEMORY,
                               "cpu: cannot allocate %zu bytes for a device",
                               sizeof *dev);
    dev->host = cpu_host;
    cpu_isa_choose(&dev->isa);
    cpu_threads_choose(&dev->threads);
    if (dev->isa.bad_env)
        cpu_host->log(KILN_LOG_WARN, "cpu: %s", dev->isa.why);
    if (dev->threads.bad_env)
        cpu_host->log(KILN_LOG_WARN, "cpu: %s", dev->threads.why);
    cpu_kernels_select(&dev->k, dev->isa.isa);
    int threads = dev->threads.n, err = 0;
    if (threads > 1 && !(dev->pool = cpu_pool_new(threads, &err))) {
        free(dev);
        /* pthread_create says EAGAIN when it cannot allocate a thread */
        return cpu_host->error(err == ENOMEM || err == EAGAIN ? KILN_ERR_NO_MEMORY
                                                              : KILN_ERR_BACKEND,
                               "cpu: cannot start %d threads: %s%s", threads,
                               strerror(err),
                               err == EAGAIN ? " (out of memory, or of threads)" : "");
    }
    if (cpu_gemm_buffers_alloc(dev) != KILN_OK) {
        cpu_device_free(dev);
        return cpu_host->error(KILN_ERR_NO_MEMORY,
                               "cpu: cannot allocate the GEMM "
                               "packing buffers of %d threads",
                               threads);
    }
    cpu_host->log(KILN_LOG_DEBUG, "cpu: device 0 open, %s kernels (%s), %d threads (%s)",
                  dev->k.isa, dev->isa.why, dev->threads.n, dev->threads.why);
    device->iface   = &cpu_device_iface;
    device->context = dev;
    return KILN_OK;
}

static const kiln_plugin cpu_plugin = {
    .abi_version  = KILN_BACKEND_ABI_VERSION,
    .name         = "cpu",
    .description  = "kiln's CPU backend (AVX-512, AVX2+FMA or portable kernels, "
                    "threaded)",
    .probe        = cpu_probe,
    .init         = cpu_init,
    .shutdown     = cpu_shutdown,
    .device_count = cpu_device_count,
    .device_desc  = cpu_device_desc,
    .device_open  = cpu_device_open,
};

KILN_BACKEND_ENTRY
{
    return &cpu_plugin;
}
