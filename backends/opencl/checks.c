/* checks.c — which nodes the OpenCL device runs: the op table, and for each
 * op the shape rules of backend.h. supports_op asks these at compile time
 * and graph_compute again before every node, with the extents, so a bad
 * node is an error with a message, never a stray read on the device.
 *
 * Beyond backend.h's rules, sizes that kernels take as int (conv and pool
 * geometry, argmax indices) must fit one: such a node is refused here and
 * kiln's scheduler runs it on the cpu backend.
 */
#include <limits.h>

#include "ocl-impl.h"

/* ---- elementwise ------------------------------------------------------------- */

static const char *check_binary(const kiln_node *node)
{
    int64_t n = node->numel, na = node->src[0]->numel, nb = node->src[1]->numel;
    int64_t small = na < nb ? na : nb;
    if (na != n && nb != n)
        return "neither operand has the output's number of elements";
    /* an empty output may broadcast a non-empty operand ([0, 7] + [7]) */
    if (n > 0 && (na > n || nb > n))
        return "an operand has more elements than the output";
    if (n > 0 && (small == 0 || n % small != 0))
        return "the smaller operand's number of elements does not divide the output's";
    return NULL;
}

/* Every source has the output's number of elements (unary ops, RELU_GRAD,
 * SOFTMAX and their gradients). */
static const char *check_same_numel(const kiln_node *node)
{
    for (int s = 0; s < KILN_MAX_SRC && node->src[s]; s++)
        if (node->src[s]->numel != node->numel)
            return "a source and the output differ in number of elements";
    return NULL;
}

/* Rows along the last axis, as the output lays them out. */
static const char *check_rows(const kiln_node *node)
{
    const char *why = check_same_numel(node);
    for (int s = 0; !why && s < KILN_MAX_SRC && node->src[s]; s++)
        if (ocl_last_dim(node->src[s]) != ocl_last_dim(node))
            why = "a source's last axis differs from the output's";
    return why;
}

/* ---- reductions ------------------------------------------------------------- */

/* outer, r, inner of a reduction over axis of t (-1: everything). */
static void reduce_extent(const kiln_node *t, int axis, int64_t *outer, int64_t *r,
                          int64_t *inner)
{
    if (axis == -1) {
        *outer = 1;
        *r = t->numel;
        *inner = 1;
        return;
    }
    *outer = ocl_dims_product(t, 0, axis);
    *r = t->dims[axis];
    *inner = ocl_dims_product(t, axis + 1, t->ndim);
}

static const char *check_reduce_axis(const kiln_node *node)
{
    const kiln_node *src = node->src[0];
    int axis = node->iparam[0];
    int64_t outer, r, inner;
    if (axis != -1 && (axis < 0 || axis >= src->ndim))
        return "the axis (iparam[0]) is neither -1 nor an axis of the input";
    reduce_extent(src, axis, &outer, &r, &inner);
    if (node->numel != outer * inner)
        return "the output's number of elements is not the input's with the axis removed";
    return NULL;
}

/* EXPAND: the inverse of a reduction over an axis of the output. */
static const char *check_expand(const kiln_node *node)
{
    int axis = node->iparam[0];
    int64_t outer, r, inner;
    if (axis != -1 && (axis < 0 || axis >= node->ndim))
        return "the axis (iparam[0]) is neither -1 nor an axis of the output";
    reduce_extent(node, axis, &outer, &r, &inner);
    if (node->src[0]->numel != (axis == -1 ? 1 : outer * inner))
        return "the source is not the output's shape without the axis";
    return NULL;
}

/* SUM_TO: out[j] sums src[i] over i % numel(out) == j. */
static const char *check_sum_to(const kiln_node *node)
{
    int64_t n = node->src[0]->numel, m = node->numel;
    if (m == 0 ? n != 0 : n % m != 0)
        return "the output's number of elements does not divide the source's";
    return NULL;
}

static const char *check_last_axis(const kiln_node *x, int64_t rows_out)
{
    int64_t rows = ocl_rows(x), cols = ocl_last_dim(x);
    if (rows_out != rows)
        return "the output (or gradient) does not have one element per row";
    if (rows > 0 && cols == 0)
        return "the last axis is empty";
    if (cols > INT32_MAX)
        return "the last axis is too long for an i32 index";
    return NULL;
}

static const char *check_reduce_last(const kiln_node *node)
{
    return check_last_axis(node->src[0], node->numel);
}

/* MAX_GRAD: g [R], x [R, C]; the output has x's shape. */
static const char *check_max_grad(const kiln_node *node)
{
    const kiln_node *x = node->src[1];
    if (node->numel != x->numel || ocl_last_dim(node) != ocl_last_dim(x))
        return "the output does not have x's shape";
    return check_last_axis(x, node->src[0]->numel);
}

/* ---- linear algebra ----------------------------------------------------------- */

static const char *check_matmul(const kiln_node *node)
{
    const kiln_node *a = node->src[0], *b = node->src[1];
    if (a->ndim != 2 || b->ndim != 2 || node->ndim != 2)
        return "matmul takes and gives 2-D tensors";
    bool ta = node->iparam[0] != 0, tb = node->iparam[1] != 0;
    if (a->dims[ta ? 0 : 1] != b->dims[tb ? 1 : 0])
        return "the inner dimensions of a and b differ";
    if (node->dims[0] != a->dims[ta ? 1 : 0] || node->dims[1] != b->dims[tb ? 0 : 1])
        return "the output is not [M, N]";
    return NULL;
}

static const char *check_transpose(const kiln_node *node)
{
    const kiln_node *src = node->src[0];
    if (src->ndim != 2 || node->ndim != 2)
        return "transpose takes and gives 2-D tensors";
    if (node->dims[0] != src->dims[1] || node->dims[1] != src->dims[0])
        return "the output is not [cols, rows] of the input";
    return NULL;
}

/* ---- convolution and pooling ---------------------------------------------------- */

/* (in + 2 * pad - k) / stride + 1, or -1 when the window does not fit. */
static int64_t out_size(int64_t in, int64_t k, int64_t stride, int64_t pad)
{
    int64_t span = in + 2 * pad - k;
    return span < 0 ? -1 : span / stride + 1;
}

static bool fits_int(const kiln_node *t)
{
    for (int d = 0; d < t->ndim; d++)
        if (t->dims[d] > INT_MAX)
            return false;
    return t->numel <= INT_MAX;
}

/* x [N,C,H,W], w [O,C,KH,KW] and y [N,O,OH,OW] of one convolution, whichever
 * of them the node has as sources and which one it computes. */
static const char *check_conv_shapes(const kiln_node *x, const kiln_node *w,
                                     const kiln_node *y, const int32_t *p)
{
    if (x->ndim != 4 || w->ndim != 4 || y->ndim != 4)
        return "conv2d's x, w and output are [N,C,H,W], [O,C,KH,KW], [N,O,OH,OW]";
    if (p[0] < 1 || p[1] < 1 || p[2] < 0 || p[3] < 0)
        return "strides must be at least 1 and padding at least 0";
    if (w->dims[1] != x->dims[1])
        return "w's channels differ from x's";
    if (y->dims[0] != x->dims[0] || y->dims[1] != w->dims[0] ||
        y->dims[2] != out_size(x->dims[2], w->dims[2], p[0], p[2]) ||
        y->dims[3] != out_size(x->dims[3], w->dims[3], p[1], p[3]))
        return "the output is not [N, O, (H+2*pad_h-KH)/stride_h+1, "
               "(W+2*pad_w-KW)/stride_w+1]";
    if (!fits_int(x) || !fits_int(w) || !fits_int(y))
        return "a size is too large for the OpenCL kernels' int arithmetic";
    return NULL;
}

static const char *check_conv2d(const kiln_node *node)
{
    const kiln_node *bias = node->src[2];
    if (bias && (bias->ndim != 1 || bias->dims[0] != node->src[1]->dims[0]))
        return "bias is not [O]";
    return check_conv_shapes(node->src[0], node->src[1], node, node->iparam);
}

/* src: gy, w; the output is x's gradient, node->dims. */
static const char *check_conv2d_grad_input(const kiln_node *node)
{
    return check_conv_shapes(node, node->src[1], node->src[0], node->iparam);
}

/* src: gy, x; the output is w's gradient. */
static const char *check_conv2d_grad_weight(const kiln_node *node)
{
    return check_conv_shapes(node->src[1], node, node->src[0], node->iparam);
}

static const char *check_pool_shapes(const kiln_node *x, const kiln_node *y,
                                     const int32_t *p)
{
    if (x->ndim != 4 || y->ndim != 4)
        return "max_pool2d takes x [N,C,H,W] and gives [N,C,OH,OW]";
    if (p[0] < 1 || p[1] < 1 || p[2] < 1 || p[3] < 1)
        return "kernel sizes and strides must be at least 1";
    if (y->dims[0] != x->dims[0] || y->dims[1] != x->dims[1] ||
        y->dims[2] != out_size(x->dims[2], p[0], p[2], 0) ||
        y->dims[3] != out_size(x->dims[3], p[1], p[3], 0))
        return "the output is not [N, C, (H-kernel_h)/stride_h+1, "
               "(W-kernel_w)/stride_w+1]";
    if (!fits_int(x))
        return "a size is too large for the OpenCL kernels' int arithmetic";
    return NULL;
}

static const char *check_max_pool2d(const kiln_node *node)
{
    return check_pool_shapes(node->src[0], node, node->iparam);
}

/* src: gy, x; the output has x's shape. */
static const char *check_max_pool2d_grad(const kiln_node *node)
{
    const kiln_node *x = node->src[1];
    if (node->ndim != 4)
        return "the output does not have x's shape";
    for (int d = 0; d < 4; d++)
        if (node->dims[d] != x->dims[d])
            return "the output does not have x's shape";
    return check_pool_shapes(x, node->src[0], node->iparam);
}

/* ---- losses -------------------------------------------------------------------- */

static const char *check_mse_loss(const kiln_node *node)
{
    if (node->src[0]->numel != node->src[1]->numel)
        return "pred and target differ in number of elements";
    if (node->numel != 1)
        return "the output is not a scalar";
    return NULL;
}

static const char *check_logits_labels(const kiln_node *logits, const kiln_node *labels)
{
    if (logits->ndim != 2 || labels->ndim != 1)
        return "cross_entropy takes logits [N,C] and labels [N]";
    if (labels->dims[0] != logits->dims[0])
        return "logits and labels differ in N";
    if (logits->dims[1] > INT32_MAX)
        return "too many classes for i32 labels";
    return NULL;
}

static const char *check_cross_entropy(const kiln_node *node)
{
    if (node->numel != 1)
        return "the output is not a scalar";
    return check_logits_labels(node->src[0], node->src[1]);
}

/* src: g (one element), logits, labels; the output has logits' shape. */
static const char *check_cross_entropy_grad(const kiln_node *node)
{
    const kiln_node *logits = node->src[1];
    if (node->src[0]->numel != 1)
        return "the incoming gradient is not one element";
    if (node->ndim != 2 || node->dims[0] != logits->dims[0] ||
        node->dims[1] != logits->dims[1])
        return "the output does not have the logits' shape";
    return check_logits_labels(logits, node->src[2]);
}

/* ---- optimiser steps --------------------------------------------------------------- */

/* param, grad and state tensors of one shape, and hp of n_hp elements. */
static const char *check_step(const kiln_node *node, int n_state, int64_t n_hp)
{
    if (node->numel != node->src[0]->numel)
        return "the output is not the parameter";
    for (int s = 1; s <= n_state; s++)
        if (node->src[s]->numel != node->numel)
            return "the gradient or a state tensor differs from the parameter in size";
    if (node->src[n_state + 1]->numel != n_hp)
        return "the hyper-parameter tensor has the wrong number of elements";
    return NULL;
}

static const char *check_sgd_step(const kiln_node *node)
{
    return check_step(node, 2, 4);
}

static const char *check_adam_step(const kiln_node *node)
{
    return check_step(node, 3, 8);
}

/* ---- the table ------------------------------------------------------------------- */

#define OCL_BINARY(n) { n, 2, 0, KILN_F32, {0}, check_binary, ocl_op_binary, false }
#define OCL_UNARY(n)  { n, 1, 0, KILN_F32, {0}, check_same_numel, ocl_op_unary, false }

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
    [KILN_OP_MATMUL]      = { "matmul", 2, 0, KILN_F32, {0}, check_matmul,
                              ocl_op_matmul, true },
    [KILN_OP_SUM]         = { "sum", 1, 0, KILN_F32, {0}, check_reduce_axis,
                              ocl_op_sum_mean, false },
    [KILN_OP_MEAN]        = { "mean", 1, 0, KILN_F32, {0}, check_reduce_axis,
                              ocl_op_sum_mean, false },
    [KILN_OP_MAX]         = { "max", 1, 0, KILN_F32, {0}, check_reduce_last,
                              ocl_op_max, false },
    [KILN_OP_ARGMAX]      = { "argmax", 1, 0, KILN_I32, {0}, check_reduce_last,
                              ocl_op_argmax, false },
    [KILN_OP_SOFTMAX]     = { "softmax", 1, 0, KILN_F32, {0}, check_rows,
                              ocl_op_softmax, false },
    [KILN_OP_LOG_SOFTMAX] = { "log_softmax", 1, 0, KILN_F32, {0}, check_rows,
                              ocl_op_softmax, false },
    [KILN_OP_TRANSPOSE]   = { "transpose", 1, 0, KILN_F32, {0}, check_transpose,
                              ocl_op_transpose, false },
    [KILN_OP_CONV2D]      = { "conv2d", 2, 1, KILN_F32, {0}, check_conv2d,
                              ocl_op_conv2d, true },
    [KILN_OP_MAX_POOL2D]  = { "max_pool2d", 1, 0, KILN_F32, {0}, check_max_pool2d,
                              ocl_op_max_pool2d, false },
    [KILN_OP_MSE_LOSS]    = { "mse_loss", 2, 0, KILN_F32, {0}, check_mse_loss,
                              ocl_op_mse_loss, false },
    [KILN_OP_CROSS_ENTROPY] = { "cross_entropy", 2, 0, KILN_F32, { KILN_F32, KILN_I32 },
                                check_cross_entropy, ocl_op_cross_entropy, false },
    [KILN_OP_SUM_TO]      = { "sum_to", 1, 0, KILN_F32, {0}, check_sum_to,
                              ocl_op_sum_to, false },
    [KILN_OP_EXPAND]      = { "expand", 1, 0, KILN_F32, {0}, check_expand,
                              ocl_op_expand, false },
    [KILN_OP_RELU_GRAD]   = { "relu_grad", 2, 0, KILN_F32, {0}, check_same_numel,
                              ocl_op_relu_grad, false },
    [KILN_OP_MAX_GRAD]    = { "max_grad", 2, 0, KILN_F32, {0}, check_max_grad,
                              ocl_op_max_grad, false },
    [KILN_OP_SOFTMAX_GRAD] = { "softmax_grad", 2, 0, KILN_F32, {0}, check_rows,
                               ocl_op_softmax_grad, false },
    [KILN_OP_LOG_SOFTMAX_GRAD] = { "log_softmax_grad", 2, 0, KILN_F32, {0}, check_rows,
                                   ocl_op_softmax_grad, false },
    [KILN_OP_CONV2D_GRAD_INPUT] = { "conv2d_grad_input", 2, 0, KILN_F32, {0},
                                    check_conv2d_grad_input,
                                    ocl_op_conv2d_grad_input, true },
    [KILN_OP_CONV2D_GRAD_WEIGHT] = { "conv2d_grad_weight", 2, 0, KILN_F32, {0},
                                     check_conv2d_grad_weight,
                                     ocl_op_conv2d_grad_weight, true },
    [KILN_OP_MAX_POOL2D_GRAD] = { "max_pool2d_grad", 2, 0, KILN_F32, {0},
                                  check_max_pool2d_grad, ocl_op_max_pool2d_grad, false },
    [KILN_OP_CROSS_ENTROPY_GRAD] = { "cross_entropy_grad", 3, 0, KILN_F32,
                                     { KILN_F32, KILN_F32, KILN_I32 },
                                     check_cross_entropy_grad,
                                     ocl_op_cross_entropy_grad, false },
    [KILN_OP_SGD_STEP]    = { "sgd_step", 4, 0, KILN_F32, {0}, check_sgd_step,
                              ocl_op_sgd_step, false },
    [KILN_OP_ADAM_STEP]   = { "adam_step", 5, 0, KILN_F32, {0}, check_adam_step,
                              ocl_op_adam_step, false },
};

const ocl_op_desc *ocl_op_lookup(kiln_op op)
{
    if ((unsigned)op >= KILN_OP_COUNT || !ocl_ops[op].run)
        return NULL;
    return &ocl_ops[op];
}

/* ---- tensors ------------------------------------------------------------------- */

/* ndim in range, no negative dimension, numel their product. */
static bool shape_ok(const kiln_node *t)
{
    if (t->ndim < 0 || t->ndim > KILN_MAX_DIMS)
        return false;
    int64_t p = 1;
    for (int d = 0; d < t->ndim; d++)
        if (t->dims[d] < 0 || __builtin_mul_overflow(p, t->dims[d], &p))
            return false;
    return p == t->numel;
}

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
    if (!shape_ok(t))
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
