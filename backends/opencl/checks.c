/* checks.c — which nodes the OpenCL device runs: the op table, each op's
 * shape rules (backends/common/node-rules.h, shared with the cpu backend),
 * and the tensors' dtypes, shapes and extents. supports_op asks these at
 * compile time and graph_compute again before every node, with the extents,
 * so a bad node is an error with a message, never a stray read on the device.
 *
 * Beyond backend.h's rules, sizes that kernels take as int (conv and pool
 * geometry, argmax indices) must fit one: such a node is refused here and
 * kiln's scheduler runs it on the cpu backend.
 */
#include <limits.h>

#include "ocl-impl.h"

/* The shape rules are node-rules.h's, shared with the cpu backend; these add
 * the OpenCL kernels' own limits. */

/* Kernels index rows with int32 (MAX, ARGMAX, MAX_GRAD). */
static const char *check_reduce_last(const kiln_node *node)
{
    return kiln_rule_last_axis(node->src[0], node->numel, true);
}

static const char *check_max_grad(const kiln_node *node)
{
    return kiln_rule_max_grad(node, true);
}

/* Conv and pool kernels compute sizes and offsets in int. */
static bool fits_int(const kiln_node *t)
{
    for (int d = 0; d < t->ndim; d++)
        if (t->dims[d] > INT_MAX)
            return false;
    return t->numel <= INT_MAX;
}

static const char *ints_fit(const char *why, const kiln_node *a, const kiln_node *b,
                            const kiln_node *c)
{
    if (!why && (!fits_int(a) || !fits_int(b) || !fits_int(c)))
        why = "a size is too large for the OpenCL kernels' int arithmetic";
    return why;
}

static const char *check_conv2d(const kiln_node *node)
{
    return ints_fit(kiln_rule_conv2d(node), node->src[0], node->src[1], node);
}

static const char *check_conv2d_grad(const kiln_node *node)
{
    const char *why = node->op == KILN_OP_CONV2D_GRAD_INPUT
                          ? kiln_rule_conv2d_grad_input(node)
                          : kiln_rule_conv2d_grad_weight(node);
    return ints_fit(why, node, node->src[0], node->src[1]);
}

static const char *check_max_pool2d(const kiln_node *node)
{
    return ints_fit(kiln_rule_max_pool2d(node), node->src[0], node, node);
}

static const char *check_max_pool2d_grad(const kiln_node *node)
{
    return ints_fit(kiln_rule_max_pool2d_grad(node), node->src[1], node->src[0], node);
}

/* ---- the table ------------------------------------------------------------------- */

#define OCL_BINARY(n) { n, 2, 0, KILN_F32, {0}, kiln_rule_binary, ocl_op_binary, false }
#define OCL_UNARY(n)  { n, 1, 0, KILN_F32, {0}, kiln_rule_same_numel, ocl_op_unary, false }

static const ocl_op_desc ocl_ops[KILN_OP_COUNT] = {
    [KILN_OP_ADD]         = OCL_BINARY("add"),
    [KILN_OP_SUB]         = OCL_BINARY("sub"),
    [KILN_OP_MUL]         = OCL_BINARY("mul"),
    [KILN_OP_DIV]         = OCL_BINARY("div"),
    [KILN_OP_NEG]         = OCL_UNARY("neg"),
    [KILN_OP_EXP]         = OCL_UNARY("exp"),
    [KILN_OP_LOG]         = OCL_UNARY("log"),
    [KILN_OP_SQRT]        = OCL_UNARY("sqrt"),
    [KILN_OP_RELU]        = OCL_UNARY("relu"),
    [KILN_OP_SIGMOID]     = OCL_UNARY("sigmoid"),
    [KILN_OP_TANH]        = OCL_UNARY("tanh"),
    [KILN_OP_SCALE]       = OCL_UNARY("scale"),
    [KILN_OP_MATMUL]      = { "matmul", 2, 0, KILN_F32, {0}, kiln_rule_matmul,
                              ocl_op_matmul, true },
    [KILN_OP_SUM]         = { "sum", 1, 0, KILN_F32, {0}, kiln_rule_reduce_axis,
                              ocl_op_sum_mean, false },
    [KILN_OP_MEAN]        = { "mean", 1, 0, KILN_F32, {0}, kiln_rule_reduce_axis,
                              ocl_op_sum_mean, false },
    [KILN_OP_MAX]         = { "max", 1, 0, KILN_F32, {0}, check_reduce_last,
                              ocl_op_max, false },
    [KILN_OP_ARGMAX]      = { "argmax", 1, 0, KILN_I32, {0}, check_reduce_last,
                              ocl_op_argmax, false },
    [KILN_OP_SOFTMAX]     = { "softmax", 1, 0, KILN_F32, {0}, kiln_rule_rows_alike,
                              ocl_op_softmax, false },
    [KILN_OP_LOG_SOFTMAX] = { "log_softmax", 1, 0, KILN_F32, {0}, kiln_rule_rows_alike,
                              ocl_op_softmax, false },
    [KILN_OP_TRANSPOSE]   = { "transpose", 1, 0, KILN_F32, {0}, kiln_rule_transpose,
                              ocl_op_transpose, false },
    [KILN_OP_CONV2D]      = { "conv2d", 2, 1, KILN_F32, {0}, check_conv2d,
                              ocl_op_conv2d, true },
    [KILN_OP_MAX_POOL2D]  = { "max_pool2d", 1, 0, KILN_F32, {0}, check_max_pool2d,
                              ocl_op_max_pool2d, false },
    [KILN_OP_MSE_LOSS]    = { "mse_loss", 2, 0, KILN_F32, {0}, kiln_rule_mse_loss,
                              ocl_op_mse_loss, false },
    [KILN_OP_CROSS_ENTROPY] = { "cross_entropy", 2, 0, KILN_F32, { KILN_F32, KILN_I32 },
                                kiln_rule_cross_entropy, ocl_op_cross_entropy, false },
    [KILN_OP_SUM_TO]      = { "sum_to", 1, 0, KILN_F32, {0}, kiln_rule_sum_to,
                              ocl_op_sum_to, false },
    [KILN_OP_EXPAND]      = { "expand", 1, 0, KILN_F32, {0}, kiln_rule_expand,
                              ocl_op_expand, false },
    [KILN_OP_RELU_GRAD]   = { "relu_grad", 2, 0, KILN_F32, {0}, kiln_rule_same_numel,
                              ocl_op_relu_grad, false },
    [KILN_OP_MAX_GRAD]    = { "max_grad", 2, 0, KILN_F32, {0}, check_max_grad,
                              ocl_op_max_grad, false },
    [KILN_OP_SOFTMAX_GRAD] = { "softmax_grad", 2, 0, KILN_F32, {0}, kiln_rule_rows_alike,
                               ocl_op_softmax_grad, false },
    [KILN_OP_LOG_SOFTMAX_GRAD] = { "log_softmax_grad", 2, 0, KILN_F32, {0}, kiln_rule_rows_alike,
                                   ocl_op_softmax_grad, false },
    [KILN_OP_CONV2D_GRAD_INPUT] = { "conv2d_grad_input", 2, 0, KILN_F32, {0},
                                    check_conv2d_grad,
                                    ocl_op_conv2d_grad_input, true },
    [KILN_OP_CONV2D_GRAD_WEIGHT] = { "conv2d_grad_weight", 2, 0, KILN_F32, {0},
                                     check_conv2d_grad,
                                     ocl_op_conv2d_grad_weight, true },
    [KILN_OP_MAX_POOL2D_GRAD] = { "max_pool2d_grad", 2, 0, KILN_F32, {0},
                                  check_max_pool2d_grad, ocl_op_max_pool2d_grad, false },
    [KILN_OP_CROSS_ENTROPY_GRAD] = { "cross_entropy_grad", 3, 0, KILN_F32,
                                     { KILN_F32, KILN_F32, KILN_I32 },
                                     kiln_rule_cross_entropy_grad,
                                     ocl_op_cross_entropy_grad, false },
    [KILN_OP_SGD_STEP]    = { "sgd_step", 4, 0, KILN_F32, {0}, kiln_rule_step,
                              ocl_op_sgd_step, false },
    [KILN_OP_ADAM_STEP]   = { "adam_step", 5, 0, KILN_F32, {0}, kiln_rule_step,
                              ocl_op_adam_step, false },
};

const ocl_op_desc *ocl_op_lookup(kiln_op op)
{
    if ((unsigned)op >= KILN_OP_COUNT || !ocl_ops[op].run)
        return NULL;
    return &ocl_ops[op];
}

/* ---- tensors ------------------------------------------------------------------- */

/* numel * 4 bytes at offset lie inside the buffer, and the offset is a
 * whole number of elements (kernels take offsets in elements). */
static bool extent_ok(const kiln_node *t)
{
    const ocl_buffer *b = t->buffer;
    if (!b)
        return t->numel == 0;
    if (t->offset > b->size || t->offset % 4 != 0)
        return false;
    return (uint64_t)t->numel <= (b->size - t->offset) / 4;
}

static const char *check_tensor(const kiln_node *t, kiln_dtype dtype, bool check_extent)
{
    if (t->dtype != dtype)
        return dtype == KILN_F32 ? "a tensor is not f32" : "a tensor is not i32";
    if (!kiln_rule_shape_ok(t))
        return "a tensor's ndim, dims and numel disagree";
    if (check_extent && !extent_ok(t))
        return "a tensor's data lies outside its buffer (or is not 4-byte aligned)";
    return NULL;
}

const char *ocl_check_node(const ocl_op_desc *d, const kiln_node *node,
                           bool check_extent)
{
    const char *why = check_tensor(node, d->out_dtype, check_extent);
    for (int s = 0; !why && s < d->n_src + d->n_opt; s++) {
        const kiln_node *src = node->src[s];
        if (!src && s < d->n_src)
            why = "a source is missing";
        else if (src)
            why = check_tensor(src, d->src_dtype[s], check_extent);
    }
    if (!why && check_extent && (node->op == KILN_OP_SGD_STEP ||
                                 node->op == KILN_OP_ADAM_STEP) &&
        (node->buffer != node->src[0]->buffer || node->offset != node->src[0]->offset))
        why = "an optimiser step's output is not its parameter's storage";
    return why ? why : d->check(node);
}
