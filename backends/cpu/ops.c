/* ops.c — which ops the cpu backend runs, with which kernel: the check of
 * every node against the op table (backends/common/op-table.h) and its
 * storage, and the refusal of the nodes that fail it. The kernels live in
 * ops_<family>.c, as their OpenCL twins do in backends/opencl/. */
#include <stdio.h>

#include "cpu-impl.h"

/* ---- the ops ---------------------------------------------------------------- */

/* The cpu's kernel for each op. Which nodes an op takes is the op table's
 * (backends/common/op-table.h): the cpu adds no limit of its own. */
static const cpu_op_fn cpu_ops[KILN_OP_COUNT] = {
    [KILN_OP_ADD]                    = cpu_op_binary,
    [KILN_OP_SUB]                    = cpu_op_binary,
    [KILN_OP_MUL]                    = cpu_op_binary,
    [KILN_OP_DIV]                    = cpu_op_binary,
    [KILN_OP_NEG]                    = cpu_op_unary,
    [KILN_OP_EXP]                    = cpu_op_unary,
    [KILN_OP_LOG]                    = cpu_op_unary,
    [KILN_OP_SQRT]                   = cpu_op_unary,
    [KILN_OP_RELU]                   = cpu_op_unary,
    [KILN_OP_SIGMOID]                = cpu_op_unary,
    [KILN_OP_TANH]                   = cpu_op_unary,
    [KILN_OP_SCALE]                  = cpu_op_unary,
    [KILN_OP_RELU_GRAD]              = cpu_op_relu_grad,
    [KILN_OP_MATMUL]                 = cpu_op_matmul,
    [KILN_OP_TRANSPOSE]              = cpu_op_transpose,
    [KILN_OP_SUM]                    = cpu_op_sum_mean,
    [KILN_OP_MEAN]                   = cpu_op_sum_mean,
    [KILN_OP_MAX]                    = cpu_op_max,
    [KILN_OP_ARGMAX]                 = cpu_op_argmax,
    [KILN_OP_SUM_TO]                 = cpu_op_sum_to,
    [KILN_OP_EXPAND]                 = cpu_op_expand,
    [KILN_OP_MAX_GRAD]               = cpu_op_max_grad,
    [KILN_OP_SOFTMAX]                = cpu_op_softmax,
    [KILN_OP_LOG_SOFTMAX]            = cpu_op_softmax,
    [KILN_OP_SOFTMAX_GRAD]           = cpu_op_softmax_grad,
    [KILN_OP_LOG_SOFTMAX_GRAD]       = cpu_op_softmax_grad,
    [KILN_OP_CONV2D]                 = cpu_op_conv2d,
    [KILN_OP_CONV2D_GRAD_INPUT]      = cpu_op_conv2d_grad,
    [KILN_OP_CONV2D_GRAD_WEIGHT]     = cpu_op_conv2d_grad,
    [KILN_OP_MAX_POOL2D]             = cpu_op_max_pool2d,
    [KILN_OP_MAX_POOL2D_GRAD]        = cpu_op_max_pool2d_grad,
    [KILN_OP_MSE_LOSS]               = cpu_op_mse_loss,
    [KILN_OP_CROSS_ENTROPY]          = cpu_op_cross_entropy,
    [KILN_OP_CROSS_ENTROPY_GRAD]     = cpu_op_cross_entropy_grad,
    [KILN_OP_GELU]                   = cpu_op_gelu,
    [KILN_OP_GELU_GRAD]              = cpu_op_gelu_grad,
    [KILN_OP_LAYER_NORM]             = cpu_op_layer_norm,
    [KILN_OP_LAYER_NORM_GRAD]        = cpu_op_layer_norm,
    [KILN_OP_LAYER_NORM_GRAD_WEIGHT] = cpu_op_layer_norm_grad_weight,
    [KILN_OP_PERMUTE]                = cpu_op_permute,
    [KILN_OP_SLICE]                  = cpu_op_slice,
    [KILN_OP_SLICE_GRAD]             = cpu_op_slice,
    [KILN_OP_SGD_STEP]               = cpu_op_sgd_step,
    [KILN_OP_ADAM_STEP]              = cpu_op_adam_step,
    [KILN_OP_EMBEDDING]              = cpu_op_embedding,
    [KILN_OP_EMBEDDING_GRAD]         = cpu_op_embedding_grad,
    [KILN_OP_CAUSAL_SOFTMAX]         = cpu_op_causal_softmax,
    [KILN_OP_CAUSAL_SOFTMAX_GRAD]    = cpu_op_causal_softmax,
    [KILN_OP_STORE_SLICE]            = cpu_op_store_slice,
    [KILN_OP_CAUSAL_ATTENTION]       = cpu_op_causal_attention,
    [KILN_OP_CAUSAL_ATTENTION_GRAD]  = cpu_op_causal_attention,
    [KILN_OP_CAST]                   = cpu_op_cast,
};

/* The ops whose kernels read and write f16 and bf16 themselves; the others
 * run a 16-bit node through cpu_run_widened. */
static const bool cpu_half_native[KILN_OP_COUNT] = {
    [KILN_OP_CAST]   = true,
    [KILN_OP_MATMUL] = true,
};

static cpu_op_fn cpu_op_lookup(kiln_op op)
{
    return (unsigned)op < KILN_OP_COUNT ? cpu_ops[op] : NULL;
}

/* ---- node checks ---------------------------------------------------------- */

/* numel elements at offset lie inside the buffer (or there are none). */
static bool cpu_extent_ok(const kiln_node *t)
{
    const cpu_buffer *b = t->buffer;
    if (!b)
        return t->numel == 0;
    if (t->offset > b->size)
        return false;
    return (uint64_t)t->numel <= (b->size - t->offset) / kiln__elem_size(t->dtype);
}

/* Why this device cannot run the node, or NULL if it can. Storage is
 * checked only when the node is about to run: supports_op is asked at
 * compile, before storage is assigned. */
const char *cpu_check_node(const kiln_node *node, bool check_storage)
{
    if (!cpu_op_lookup(node->op))
        return "the op is never dispatched to a backend";
    const char *why = kiln__op_check(node);
    if (!why && check_storage)
        why = kiln__op_check_storage(node, cpu_extent_ok);
    return why;
}

kiln_status cpu_refuse(const cpu_device *dev, size_t i, const kiln_node *node,
                       const char *why)
{
    char        msg[512];
    kiln_status st = kiln__refusal(msg, sizeof msg, "cpu", i, node, why);
    return dev->host->error(st, "%s", msg);
}

kiln_status cpu_run_node(const cpu_device *dev, const kiln_node *node)
{
    cpu_op_fn kernel = cpu_op_lookup(node->op);
    if (!cpu_half_native[node->op] && kiln__node_has_half(node))
        return cpu_chunkable(node) ? cpu_run_chunked(dev, node, kernel)
                                   : cpu_run_widened(dev, node, kernel);
    return kernel(dev, node);
}
