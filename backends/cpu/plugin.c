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
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cpu-impl.h"

#define CPU_ALIGN 64

/* What init was given; valid until shutdown. */
static const kiln_host *cpu_host;

_Static_assert(KILN_OP_SUB - KILN_OP_ADD == CPU_SUB &&
               KILN_OP_MUL - KILN_OP_ADD == CPU_MUL &&
               KILN_OP_DIV - KILN_OP_ADD == CPU_DIV,
               "cpu_binary_op must follow kiln_op's order");
_Static_assert(KILN_OP_SCALE - KILN_OP_NEG == CPU_SCALE &&
               KILN_OP_TANH - KILN_OP_NEG == CPU_TANH &&
               KILN_OP_SIGMOID - KILN_OP_NEG == CPU_SIGMOID &&
               KILN_OP_RELU - KILN_OP_NEG == CPU_RELU &&
               KILN_OP_SQRT - KILN_OP_NEG == CPU_SQRT &&
               KILN_OP_LOG - KILN_OP_NEG == CPU_LOG &&
               KILN_OP_EXP - KILN_OP_NEG == CPU_EXP,
               "cpu_unary_op must follow kiln_op's order");

/* ---- the op table --------------------------------------------------------- */

/* ---- the cpu's own limits on top of node-rules.h ------------------------------- */

/* ARGMAX's i32 result must hold a column index; MAX and MAX_GRAD keep size_t. */
static const char *cpu_check_reduce_last(const kiln_node *node)
{
    return kiln_rule_last_axis(node->src[0], node->numel, node->op == KILN_OP_ARGMAX);
}

static const char *cpu_check_max_grad(const kiln_node *node)
{
    return kiln_rule_max_grad(node, false);
}

/* A step updates the parameter where it lies: the output is src[0]'s storage. */
static const char *cpu_check_step(const kiln_node *node)
{
    const char *why = kiln_rule_step(node);
    if (!why && (node->buffer != node->src[0]->buffer || node->offset != node->src[0]->offset))
        why = "the output is not the parameter (src[0]): a step updates it in place";
    return why;
}

/* How to check and run one kiln_op. Dtypes left out are KILN_F32 (0). */
typedef struct cpu_op_desc {
    const char  *name;
    int          n_src;                  /* sources that must be present     */
    int          n_opt;                  /* optional sources after them      */
    kiln_dtype   out_dtype;
    kiln_dtype   src_dtype[KILN_MAX_SRC];
    cpu_check_fn check;
    cpu_op_fn    run;                    /* NULL: never dispatched           */
} cpu_op_desc;

#define CPU_BINARY(n) { n, 2, 0, KILN_F32, {0}, kiln_rule_binary, cpu_op_binary }
#define CPU_UNARY(n)  { n, 1, 0, KILN_F32, {0}, kiln_rule_same_numel, cpu_op_unary }

static const cpu_op_desc cpu_ops[KILN_OP_COUNT] = {
    [KILN_OP_LEAF]        = { "leaf", 0, 0, KILN_F32, {0}, NULL, NULL },
    [KILN_OP_RESHAPE]     = { "reshape", 0, 0, KILN_F32, {0}, NULL, NULL },
    [KILN_OP_ADD]         = CPU_BINARY("add"),
    [KILN_OP_SUB]         = CPU_BINARY("sub"),
    [KILN_OP_MUL]         = CPU_BINARY("mul"),
    [KILN_OP_DIV]         = CPU_BINARY("div"),
    [KILN_OP_NEG]         = CPU_UNARY("neg"),
    [KILN_OP_EXP]         = CPU_UNARY("exp"),
    [KILN_OP_LOG]         = CPU_UNARY("log"),
    [KILN_OP_SQRT]        = CPU_UNARY("sqrt"),
    [KILN_OP_RELU]        = CPU_UNARY("relu"),
    [KILN_OP_SIGMOID]     = CPU_UNARY("sigmoid"),
    [KILN_OP_TANH]        = CPU_UNARY("tanh"),
    [KILN_OP_SCALE]       = CPU_UNARY("scale"),
    [KILN_OP_MATMUL]      = { "matmul", 2, 0, KILN_F32, {0},
                              kiln_rule_matmul, cpu_op_matmul },
    [KILN_OP_SUM]         = { "sum", 1, 0, KILN_F32, {0},
                              kiln_rule_reduce_axis, cpu_op_sum_mean },
    [KILN_OP_MEAN]        = { "mean", 1, 0, KILN_F32, {0},
                              kiln_rule_reduce_axis, cpu_op_sum_mean },
    [KILN_OP_MAX]         = { "max", 1, 0, KILN_F32, {0},
                              cpu_check_reduce_last, cpu_op_max },
    [KILN_OP_ARGMAX]      = { "argmax", 1, 0, KILN_I32, {0},
                              cpu_check_reduce_last, cpu_op_argmax },
    [KILN_OP_SOFTMAX]     = { "softmax", 1, 0, KILN_F32, {0},
                              kiln_rule_rows_alike, cpu_op_softmax },
    [KILN_OP_LOG_SOFTMAX] = { "log_softmax", 1, 0, KILN_F32, {0},
                              kiln_rule_rows_alike, cpu_op_softmax },
    [KILN_OP_TRANSPOSE]   = { "transpose", 1, 0, KILN_F32, {0},
                              kiln_rule_transpose, cpu_op_transpose },
    [KILN_OP_CONV2D]      = { "conv2d", 2, 1, KILN_F32, {0},
                              kiln_rule_conv2d, cpu_op_conv2d },
    [KILN_OP_MAX_POOL2D]  = { "max_pool2d", 1, 0, KILN_F32, {0},
                              kiln_rule_max_pool2d, cpu_op_max_pool2d },
    [KILN_OP_MSE_LOSS]    = { "mse_loss", 2, 0, KILN_F32, {0},
                              kiln_rule_mse_loss, cpu_op_mse_loss },
    [KILN_OP_CROSS_ENTROPY] = { "cross_entropy", 2, 0, KILN_F32,
                                { KILN_F32, KILN_I32 },
                                kiln_rule_cross_entropy, cpu_op_cross_entropy },
    [KILN_OP_SUM_TO]      = { "sum_to", 1, 0, KILN_F32, {0},
                              kiln_rule_sum_to, cpu_op_sum_to },
    [KILN_OP_EXPAND]      = { "expand", 1, 0, KILN_F32, {0},
                              kiln_rule_expand, cpu_op_expand },
    [KILN_OP_RELU_GRAD]   = { "relu_grad", 2, 0, KILN_F32, {0},
                              kiln_rule_same_numel, cpu_op_relu_grad },
    [KILN_OP_MAX_GRAD]    = { "max_grad", 2, 0, KILN_F32, {0},
                              cpu_check_max_grad, cpu_op_max_grad },
    [KILN_OP_SOFTMAX_GRAD] = { "softmax_grad", 2, 0, KILN_F32, {0},
                               kiln_rule_rows_alike, cpu_op_softmax_grad },
    [KILN_OP_LOG_SOFTMAX_GRAD] = { "log_softmax_grad", 2, 0, KILN_F32, {0},
                                   kiln_rule_rows_alike, cpu_op_softmax_grad },
    [KILN_OP_CONV2D_GRAD_INPUT] = { "conv2d_grad_input", 2, 0, KILN_F32, {0},
                                    kiln_rule_conv2d_grad_input, cpu_op_conv2d_grad },
    [KILN_OP_CONV2D_GRAD_WEIGHT] = { "conv2d_grad_weight", 2, 0, KILN_F32, {0},
                                     kiln_rule_conv2d_grad_weight, cpu_op_conv2d_grad },
    [KILN_OP_MAX_POOL2D_GRAD] = { "max_pool2d_grad", 2, 0, KILN_F32, {0},
                                  kiln_rule_max_pool2d_grad, cpu_op_max_pool2d_grad },
    [KILN_OP_CROSS_ENTROPY_GRAD] = { "cross_entropy_grad", 3, 0, KILN_F32,
                                     { KILN_F32, KILN_F32, KILN_I32 },
                                     kiln_rule_cross_entropy_grad,
                                     cpu_op_cross_entropy_grad },
    [KILN_OP_SGD_STEP]    = { "sgd_step", 4, 0, KILN_F32, {0},
                              cpu_check_step, cpu_op_sgd_step },
    [KILN_OP_ADAM_STEP]   = { "adam_step", 5, 0, KILN_F32, {0},
                              cpu_check_step, cpu_op_adam_step },
};

static const cpu_op_desc *cpu_op_lookup(kiln_op op)
{
    if ((unsigned)op >= KILN_OP_COUNT || !cpu_ops[op].run)
        return NULL;
    return &cpu_ops[op];
}

/* ---- node checks ---------------------------------------------------------- */

/* numel * 4 bytes at offset lie inside the buffer (or there are none). */
static bool cpu_extent_ok(const kiln_node *t)
{
    const cpu_buffer *b = t->buffer;
    if (!b)
        return t->numel == 0;
    if (t->offset > b->size)
        return false;
    return (uint64_t)t->numel <= (b->size - t->offset) / 4;
}

/* The extent is checked only when the node is about to run: supports_op is
 * asked at compile, before storage is assigned. */
static const char *cpu_check_tensor(const kiln_node *t, kiln_dtype dtype,
                                    bool check_extent)
{
    if (t->dtype != dtype)
        return dtype == KILN_F32 ? "a tensor is not f32" : "a tensor is not i32";
    if (!kiln_rule_shape_ok(t))
        return "a tensor's ndim, dims and numel disagree";
    if (check_extent && !cpu_extent_ok(t))
        return "a tensor's data lies outside its buffer";
    return NULL;
}

/* Why this device cannot run the node, or NULL if it can. */
static const char *cpu_check_node(const cpu_op_desc *d, const kiln_node *node,
                                  bool check_extent)
{
    const char *why = cpu_check_tensor(node, d->out_dtype, check_extent);
    for (int s = 0; !why && s < d->n_src + d->n_opt; s++) {
        const kiln_node *src = node->src[s];
        if (!src && s < d->n_src)
            why = "a source is missing";
        else if (src)
            why = cpu_check_tensor(src, d->src_dtype[s], check_extent);
    }
    return why ? why : d->check(node);
}

/* "[2,3]" into buf. */
static void cpu_format_dims(char *buf, size_t len, const kiln_node *t)
{
    size_t used = (size_t)snprintf(buf, len, "[");
    for (int i = 0; i < t->ndim && i < KILN_MAX_DIMS && used < len; i++)
        used += (size_t)snprintf(buf + used, len - used, "%s%" PRId64,
                                 i ? "," : "", t->dims[i]);
    if (used < len)
        snprintf(buf + used, len - used, "]");
}

static kiln_status cpu_refuse(const cpu_device *dev, size_t i,
                              const cpu_op_desc *d, const kiln_node *node,
                              const char *why)
{
    char out[64], a[64] = "-", b[64] = "-";
    cpu_format_dims(out, sizeof out, node);
    if (node->src[0])
        cpu_format_dims(a, sizeof a, node->src[0]);
    if (node->src[1])
        cpu_format_dims(b, sizeof b, node->src[1]);
    return dev->host->error(KILN_ERR_SHAPE,
                            "cpu: node %zu (%s '%s') cannot run: %s "
                            "(output %s, sources %s %s)", i, d->name,
                            node->name ? node->name : "", why, out, a, b);
}

/* A node whose op never reaches a backend (leaf, reshape) or is unknown. */
static kiln_status cpu_refuse_op(const cpu_device *dev, size_t i, const kiln_node *node)
{
    bool known = (unsigned)node->op < KILN_OP_COUNT;
    return dev->host->error(KILN_ERR_INVALID_ARG,
                            "cpu: node %zu ('%s') has op %d (%s), which is never "
                            "dispatched to a backend", i, node->name ? node->name : "",
                            (int)node->op, known ? cpu_ops[node->op].name : "unknown");
}

/* ---- buffers -------------------------------------------------------------- */

static kiln_status cpu_buffer_alloc(void *ctx, size_t size, void **buffer)
{
    cpu_device *dev = ctx;
    cpu_buffer *b = malloc(sizeof *b);
    size_t bytes = size < CPU_ALIGN ? CPU_ALIGN : size;
    void *data = NULL;
    if (bytes <= SIZE_MAX - (CPU_ALIGN - 1))
        data = aligned_alloc(CPU_ALIGN, (bytes + CPU_ALIGN - 1) & ~(size_t)(CPU_ALIGN - 1));
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
                                "a buffer of %zu bytes", what, size, offset, b->size);
    return KILN_OK;
}

static kiln_status cpu_buffer_write(void *ctx, void *buffer, size_t offset,
                                    const void *src, size_t size)
{
    cpu_buffer *b = buffer;
    kiln_status st = cpu_buffer_range(ctx, "buffer_write", b, offset, size);
    if (st == KILN_OK && size > 0)
        memcpy((char *)b->data + offset, src, size);
    return st;
}

static kiln_status cpu_buffer_read(void *ctx, void *buffer, size_t offset,
                                   void *dst, size_t size)
{
    const cpu_buffer *b = buffer;
    kiln_status st = cpu_buffer_range(ctx, "buffer_read", b, offset, size);
    if (st == KILN_OK && size > 0)
        memcpy(dst, (const char *)b->data + offset, size);
    return st;
}

/* ---- running graphs ------------------------------------------------------- */

static bool cpu_supports_op(void *ctx, const kiln_node *node)
{
    (void)ctx;
    const cpu_op_desc *d = node ? cpu_op_lookup(node->op) : NULL;
    return d && !cpu_check_node(d, node, false);
}

/* Whether a node would pass graph_compute's checks (for fusion). */
static bool cpu_node_runnable(const kiln_node *node)
{
    const cpu_op_desc *d = cpu_op_lookup(node->op);
    return d && !cpu_check_node(d, node, true);
}

static kiln_status cpu_graph_run(const cpu_device *dev, const kiln_node *const *nodes,
                                 size_t n_nodes)
{
    for (size_t i = 0; i < n_nodes; i++) {
        const kiln_node *node = nodes[i];
        if (!node)
            return dev->host->error(KILN_ERR_INVALID_ARG, "cpu: node %zu is NULL", i);
        const cpu_op_desc *d = cpu_op_lookup(node->op);
        if (!d)
            return cpu_refuse_op(dev, i, node);
        const char *why = cpu_check_node(d, node, true);
        if (why)
            return cpu_refuse(dev, i, d, node, why);
        kiln_status st = KILN_OK;
        size_t fused = cpu_fuse(dev, nodes, i, n_nodes, cpu_node_runnable, &st);
        if (fused > 0)
            i += fused - 1;
        else
            st = d->run(dev, node);
        if (st != KILN_OK)
            return st;
    }
    return KILN_OK;
}

/* The ops find the device's threads and buffers through cpu_tls while the
 * graph runs (the sgemm entry of the kernel table has no device argument). */
static kiln_status cpu_graph_compute(void *ctx, const kiln_node *const *nodes,
                                     size_t n_nodes)
{
    const cpu_device *dev = ctx;
    cpu_thread_state saved = cpu_tls;
    cpu_tls = (cpu_thread_state){ .dev = dev, .tid = 0, .in_job = false };
    kiln_status st = cpu_graph_run(dev, nodes, n_nodes);
    cpu_tls = saved;
    return st;
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
    cpu_grad_kernels_scalar(k);
    cpu_optim_kernels_scalar(k);
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
    char has[64] = "";
    size_t used = 0;
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
}

static int cpu_probe(const kiln_host *host)
{
    (void)host;
    return 50;   /* always runnable; a GPU backend scores 100 */
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
    cpu_isa_choice isa;
    cpu_threads_choice threads;
    cpu_isa_choose(&isa);
    cpu_threads_choose(&threads);
    long pages = sysconf(_SC_PHYS_PAGES);
    long page_size = sysconf(_SC_PAGESIZE);
    long cores = sysconf(_SC_NPROCESSORS_ONLN);

    memset(desc, 0, sizeof *desc);
    cpu_describe(&isa, &threads, desc);
    desc->type = KILN_DEVICE_CPU;
    desc->memory = pages > 0 && page_size > 0
                 ? (uint64_t)pages * (uint64_t)page_size : 0;
    desc->compute_units = cores > 0 && cores <= INT32_MAX ? (int)cores : 1;
    desc->unusable[0] = '\0';
    return KILN_OK;
}

static kiln_status cpu_device_open(int index, kiln_device *device)
{
    if (!cpu_host)
        return KILN_ERR_STATE;   /* init never ran: no one to tell */
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
    int threads = dev->threads.n;
    if (threads > 1 && !(dev->pool = cpu_pool_new(dev, threads))) {
        free(dev);
        return cpu_host->error(KILN_ERR_BACKEND, "cpu: cannot start %d threads", threads);
    }
    if (cpu_gemm_buffers_alloc(dev) != KILN_OK) {
        cpu_device_free(dev);
        return cpu_host->error(KILN_ERR_NO_MEMORY, "cpu: cannot allocate the GEMM "
                               "packing buffers of %d threads", threads);
    }
    cpu_host->log(KILN_LOG_DEBUG, "cpu: device 0 open, %s kernels (%s), %d threads (%s)",
                  dev->k.isa, dev->isa.why, dev->threads.n, dev->threads.why);
    device->iface = &cpu_device_iface;
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
