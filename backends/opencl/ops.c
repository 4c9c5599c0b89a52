/* ops.c — which ops the OpenCL device runs, with which kernel: the check of
 * every node against the op table (backends/common/op-table.h, shared with
 * the cpu backend) and its storage, the kernels' own limits on top, and the
 * refusal of the nodes that fail. supports_op asks these at compile time and
 * graph_compute again before every node, with the storage, so a bad node is
 * an error with a message, never a stray read on the device.
 *
 * Beyond the op table's rules, sizes that kernels take as int (conv and pool
 * geometry, row indices) must fit one: such a node is refused here and
 * kiln's scheduler runs it on the cpu backend. The kernels live in
 * ops_<family>.c, as their cpu twins do in backends/cpu/.
 */
#include <limits.h>
#include <stdio.h>

#include "ocl-impl.h"

/* ---- the kernels' limits ------------------------------------------------------- */

/* Kernels index a row's columns with int32 (MAX, ARGMAX, MAX_GRAD). */
static const char *int_columns(const kiln_node *node)
{
    const kiln_node *x = node->op == KILN_OP_MAX_GRAD ? node->src[1] : node->src[0];
    return kiln__last_dim(x) > INT32_MAX ? "a row is too long for the OpenCL kernels' "
                                           "int32 column index"
                                         : NULL;
}

/* Conv and pool kernels compute sizes and offsets in int. */
static bool fits_int(const kiln_node *t)
{
    for (int d = 0; d < t->ndim; d++)
        if (t->dims[d] > INT_MAX)
            return false;
    return t->numel <= INT_MAX;
}

static const char *int_sizes(const kiln_node *node)
{
    if (!fits_int(node))
        return "a size is too large for the OpenCL kernels' int arithmetic";
    for (int s = 0; s < 2 && node->src[s]; s++)
        if (!fits_int(node->src[s]))
            return "a size is too large for the OpenCL kernels' int arithmetic";
    return NULL;
}

/* ---- the table ------------------------------------------------------------------- */

typedef struct ocl_op {
    ocl_op_fn    run;
    ocl_check_fn check; /* (optional) the kernel's own limits      */
    bool         gemm;  /* needs CLBlast                           */
} ocl_op;

static const ocl_op ocl_ops[KILN_OP_COUNT] = {
    [KILN_OP_ADD]                    = {ocl_op_binary, NULL, false},
    [KILN_OP_SUB]                    = {ocl_op_binary, NULL, false},
    [KILN_OP_MUL]                    = {ocl_op_binary, NULL, false},
    [KILN_OP_DIV]                    = {ocl_op_binary, NULL, false},
    [KILN_OP_NEG]                    = {ocl_op_unary, NULL, false},
    [KILN_OP_EXP]                    = {ocl_op_unary, NULL, false},
    [KILN_OP_LOG]                    = {ocl_op_unary, NULL, false},
    [KILN_OP_SQRT]                   = {ocl_op_unary, NULL, false},
    [KILN_OP_RELU]                   = {ocl_op_unary, NULL, false},
    [KILN_OP_SIGMOID]                = {ocl_op_unary, NULL, false},
    [KILN_OP_TANH]                   = {ocl_op_unary, NULL, false},
    [KILN_OP_SCALE]                  = {ocl_op_unary, NULL, false},
    [KILN_OP_RELU_GRAD]              = {ocl_op_relu_grad, NULL, false},
    [KILN_OP_MATMUL]                 = {ocl_op_matmul, NULL, true},
    [KILN_OP_TRANSPOSE]              = {ocl_op_transpose, NULL, false},
    [KILN_OP_SUM]                    = {ocl_op_sum_mean, NULL, false},
    [KILN_OP_MEAN]                   = {ocl_op_sum_mean, NULL, false},
    [KILN_OP_MAX]                    = {ocl_op_max, int_columns, false},
    [KILN_OP_ARGMAX]                 = {ocl_op_argmax, int_columns, false},
    [KILN_OP_SUM_TO]                 = {ocl_op_sum_to, NULL, false},
    [KILN_OP_EXPAND]                 = {ocl_op_expand, NULL, false},
    [KILN_OP_MAX_GRAD]               = {ocl_op_max_grad, int_columns, false},
    [KILN_OP_SOFTMAX]                = {ocl_op_softmax, NULL, false},
    [KILN_OP_LOG_SOFTMAX]            = {ocl_op_softmax, NULL, false},
    [KILN_OP_SOFTMAX_GRAD]           = {ocl_op_softmax_grad, NULL, false},
    [KILN_OP_LOG_SOFTMAX_GRAD]       = {ocl_op_softmax_grad, NULL, false},
    [KILN_OP_CONV2D]                 = {ocl_op_conv2d, int_sizes, true},
    [KILN_OP_CONV2D_GRAD_INPUT]      = {ocl_op_conv2d_grad_input, int_sizes, true},
    [KILN_OP_CONV2D_GRAD_WEIGHT]     = {ocl_op_conv2d_grad_weight, int_sizes, true},
    [KILN_OP_MAX_POOL2D]             = {ocl_op_max_pool2d, int_sizes, false},
    [KILN_OP_MAX_POOL2D_GRAD]        = {ocl_op_max_pool2d_grad, int_sizes, false},
    [KILN_OP_MSE_LOSS]               = {ocl_op_mse_loss, NULL, false},
    [KILN_OP_CROSS_ENTROPY]          = {ocl_op_cross_entropy, NULL, false},
    [KILN_OP_CROSS_ENTROPY_GRAD]     = {ocl_op_cross_entropy_grad, NULL, false},
    [KILN_OP_GELU]                   = {ocl_op_gelu, NULL, false},
    [KILN_OP_GELU_GRAD]              = {ocl_op_gelu_grad, NULL, false},
    [KILN_OP_LAYER_NORM]             = {ocl_op_layer_norm, NULL, false},
    [KILN_OP_LAYER_NORM_GRAD]        = {ocl_op_layer_norm_grad, NULL, false},
    [KILN_OP_LAYER_NORM_GRAD_WEIGHT] = {ocl_op_layer_norm_grad_weight, NULL, false},
    [KILN_OP_PERMUTE]                = {ocl_op_permute, NULL, false},
    [KILN_OP_SLICE]                  = {ocl_op_slice, NULL, false},
    [KILN_OP_SLICE_GRAD]             = {ocl_op_slice, NULL, false},
    [KILN_OP_SGD_STEP]               = {ocl_op_step, NULL, false},
    [KILN_OP_ADAM_STEP]              = {ocl_op_step, NULL, false},
    [KILN_OP_EMBEDDING]              = {ocl_op_embedding, NULL, false},
    [KILN_OP_EMBEDDING_GRAD]         = {ocl_op_embedding_grad, NULL, false},
    [KILN_OP_CAUSAL_SOFTMAX]         = {ocl_op_causal_softmax, NULL, false},
    [KILN_OP_CAUSAL_SOFTMAX_GRAD]    = {ocl_op_causal_softmax, NULL, false},
    [KILN_OP_STORE_SLICE]            = {ocl_op_store_slice, NULL, false},
    [KILN_OP_CAUSAL_ATTENTION] = {ocl_op_causal_attention, ocl_attention_limits, false},
    [KILN_OP_CAUSAL_ATTENTION_GRAD] = {ocl_op_causal_attention, ocl_attention_limits,
                                       false},
    [KILN_OP_CAST]                  = {ocl_op_cast, NULL, false},
};

static const ocl_op *ocl_op_lookup(kiln_op op)
{
    return (unsigned)op < KILN_OP_COUNT && ocl_ops[op].run ? &ocl_ops[op] : NULL;
}

/* ---- checks --------------------------------------------------------------------- */

/* numel elements at offset lie inside the buffer, and the offset is a
 * whole number of elements (kernels take offsets in elements). */
static bool extent_ok(const kiln_node *t)
{
    const ocl_buffer *b    = t->buffer;
    size_t            size = kiln__elem_size(t->dtype);
    if (!b)
        return t->numel == 0;
    if (t->offset > b->size || t->offset % size != 0)
        return false;
    return (uint64_t)t->numel <= (b->size - t->offset) / size;
}

const char *ocl_check_node(const ocl_device *dev, const kiln_node *node,
                           bool check_storage)
{
    const ocl_op *o = ocl_op_lookup(node->op);
    if (!o)
        return "the op is never dispatched to a backend";
    if (o->gemm && !dev->gemm_ok)
        return "CLBlast's GEMM did not pass its check on this device";
    /* log(1e-40) is -92.1, but -inf where subnormals are flushed to 0;
     * sqrt(1e-40) 1e-20, but 0: those run where subnormals are kept */
    if ((node->op == KILN_OP_LOG || node->op == KILN_OP_SQRT) && !dev->info->denorms)
        return "the device flushes subnormal floats to zero (no CL_FP_DENORM), which "
               "would make the results of tiny inputs -inf or 0";
    if (node->op == KILN_OP_TRANSPOSE && dev->kernel_group[OCL_K_TRANSPOSE] < OCL_TILE)
        return "the transpose kernel's work-groups cannot hold a row of its tile "
               "(CL_KERNEL_WORK_GROUP_SIZE below 32)";
    const char *why = kiln__op_check(node);
    if (!why && check_storage)
        why = kiln__op_check_storage(node, extent_ok);
    if (!why && o->check)
        why = o->check(node);
    return why;
}

kiln_status ocl_run_node(ocl_device *dev, const kiln_node *node, size_t i)
{
    ocl_op_fn run = ocl_op_lookup(node->op)->run;
    if (node->op != KILN_OP_CAST && kiln__node_has_half(node))
        return ocl_run_widened(dev, node, i, run);
    return run(dev, node, i);
}

kiln_status ocl_refuse(const ocl_device *dev, size_t i, const kiln_node *node,
                       const char *why)
{
    char        msg[512];
    kiln_status st = kiln__refusal(msg, sizeof msg, "opencl", i, node, why);
    return dev->host->error(st, "%s", msg);
}
