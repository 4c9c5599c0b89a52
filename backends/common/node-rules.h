/* node-rules.h — backend.h's shape rules for each op, written once for the
 * in-tree backends (cpu, opencl), so that both accept the same nodes and
 * refuse the others in the same words. Each backend puts its own limits on
 * top (OpenCL kernels' int sizes, the cpu step's in-place storage).
 *
 * Header-only and not installed: a plugin outside the tree sees only
 * <kiln/backend.h> and states its own rules (plugins/README.md). Each
 * function returns why the node breaks a rule, or NULL.
 */
#ifndef KILN_BACKENDS_NODE_RULES_H
#define KILN_BACKENDS_NODE_RULES_H

#include <kiln/backend.h>

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

/* ---- extents ----------------------------------------------------------------- */

/* ndim in range, no negative dimension, numel their product. */
static inline bool kiln_rule_shape_ok(const kiln_node *t)
{
    if (t->ndim < 0 || t->ndim > KILN_MAX_DIMS)
        return false;
    int64_t p = 1;
    for (int d = 0; d < t->ndim; d++)
        if (t->dims[d] < 0 || __builtin_mul_overflow(p, t->dims[d], &p))
            return false;
    return p == t->numel;
}

/* The product of dims[from, to). */
static inline int64_t kiln_rule_dims_product(const kiln_node *t, int from, int to)
{
    int64_t p = 1;
    for (int d = from; d < to; d++)
        p *= t->dims[d];
    return p;
}

/* The last axis's size (1 for a scalar) and the number of rows along it. */
static inline int64_t kiln_rule_last_dim(const kiln_node *t)
{
    return t->ndim > 0 ? t->dims[t->ndim - 1] : 1;
}

static inline int64_t kiln_rule_rows(const kiln_node *t)
{
    return t->ndim > 0 ? kiln_rule_dims_product(t, 0, t->ndim - 1) : 1;
}

/* t seen as [outer, r, inner] around axis (-1: [1, numel, 1]). */
static inline void kiln_rule_axis_extent(const kiln_node *t, int axis, int64_t *outer,
                                         int64_t *r, int64_t *inner)
{
    if (axis == -1) {
        *outer = 1;
        *r = t->numel;
        *inner = 1;
        return;
    }
    *outer = kiln_rule_dims_product(t, 0, axis);
    *r = t->dims[axis];
    *inner = kiln_rule_dims_product(t, axis + 1, t->ndim);
}

/* Windows of k, stride apart, over n padded by pad on both sides:
 * (n + 2 * pad - k) / stride + 1, or -1 when not even one fits. */
static inline int64_t kiln_rule_window_count(int64_t n, int64_t k, int64_t stride,
                                             int64_t pad)
{
    int64_t span = n + 2 * pad - k;
    return span < 0 ? -1 : span / stride + 1;
}

/* ---- elementwise ----------------------------------------------------------------- */

/* ADD, SUB, MUL, DIV: one operand the output's size, the other dividing it. */
static inline const char *kiln_rule_binary(const kiln_node *node)
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

/* Every source has the output's number of elements (unary ops, RELU_GRAD). */
static inline const char *kiln_rule_same_numel(const kiln_node *node)
{
    for (int s = 0; s < KILN_MAX_SRC && node->src[s]; s++)
        if (node->src[s]->numel != node->numel)
            return "a source and the output differ in number of elements";
    return NULL;
}

/* Rows along the last axis, as the output lays them out (SOFTMAX,
 * LOG_SOFTMAX and their gradients). */
static inline const char *kiln_rule_rows_alike(const kiln_node *node)
{
    const char *why = kiln_rule_same_numel(node);
    for (int s = 0; !why && s < KILN_MAX_SRC && node->src[s]; s++)
        if (kiln_rule_last_dim(node->src[s]) != kiln_rule_last_dim(node))
            why = "a source's last axis differs from the output's";
    return why;
}

/* ---- reductions and their gradients ------------------------------------------------ */

/* SUM, MEAN over iparam[0] (-1: everything). */
static inline const char *kiln_rule_reduce_axis(const kiln_node *node)
{
    const kiln_node *src = node->src[0];
    int axis = node->iparam[0];
    int64_t outer, r, inner;
    if (axis != -1 && (axis < 0 || axis >= src->ndim))
        return "the axis (iparam[0]) is neither -1 nor an axis of the input";
    kiln_rule_axis_extent(src, axis, &outer, &r, &inner);
    if (node->numel != outer * inner)
        return "the output's number of elements is not the input's with the axis removed";
    return NULL;
}

/* EXPAND: the inverse of a reduction over an axis of the output. */
static inline const char *kiln_rule_expand(const kiln_node *node)
{
    int axis = node->iparam[0];
    int64_t outer, r, inner;
    if (axis != -1 && (axis < 0 || axis >= node->ndim))
        return "the axis (iparam[0]) is neither -1 nor an axis of the output";
    kiln_rule_axis_extent(node, axis, &outer, &r, &inner);
    if (node->src[0]->numel != (axis == -1 ? 1 : outer * inner))
        return "the source is not the output's shape without the axis";
    return NULL;
}

/* SUM_TO: out[j] sums src[i] over i % numel(out) == j. */
static inline const char *kiln_rule_sum_to(const kiln_node *node)
{
    int64_t n = node->src[0]->numel, m = node->numel;
    if (m == 0 ? n != 0 : n % m != 0)
        return "the output's number of elements does not divide the source's";
    return NULL;
}

/* x's rows along its last axis, one element of the output (or gradient) per
 * row; i32_index: an index into a row must fit an int32. */
static inline const char *kiln_rule_last_axis(const kiln_node *x, int64_t rows_out,
                                              bool i32_index)
{
    int64_t rows = kiln_rule_rows(x), cols = kiln_rule_last_dim(x);
    if (rows_out != rows)
        return "the output (or gradient) does not have one element per row";
    if (rows > 0 && cols == 0)
        return "the last axis is empty";
    if (i32_index && cols > INT32_MAX)
        return "the last axis is too long for an i32 index";
    return NULL;
}

/* MAX_GRAD: g [R], x [R, C]; the output has x's shape. */
static inline const char *kiln_rule_max_grad(const kiln_node *node, bool i32_index)
{
    const kiln_node *x = node->src[1];
    if (node->numel != x->numel || kiln_rule_last_dim(node) != kiln_rule_last_dim(x))
        return "the output does not have x's shape";
    return kiln_rule_last_axis(x, node->src[0]->numel, i32_index);
}

/* ---- linear algebra ----------------------------------------------------------------- */

/* MATMUL: op(a) [M,K] @ op(b) [K,N], iparam[0] and [1] the transposes. */
static inline const char *kiln_rule_matmul(const kiln_node *node)
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

static inline const char *kiln_rule_transpose(const kiln_node *node)
{
    const kiln_node *src = node->src[0];
    if (src->ndim != 2 || node->ndim != 2)
        return "transpose takes and gives 2-D tensors";
    if (node->dims[0] != src->dims[1] || node->dims[1] != src->dims[0])
        return "the output is not [cols, rows] of the input";
    return NULL;
}

/* ---- convolution and pooling ----------------------------------------------------------- */

/* x [N,C,H,W], w [O,C,KH,KW] and y [N,O,OH,OW] of one convolution, whichever
 * of them the node has as sources and which one it computes; p the strides
 * and padding (iparam). */
static inline const char *kiln_rule_conv(const kiln_node *x, const kiln_node *w,
                                         const kiln_node *y, const int32_t *p)
{
    if (x->ndim != 4 || w->ndim != 4 || y->ndim != 4)
        return "conv2d's x, w and output are [N,C,H,W], [O,C,KH,KW], [N,O,OH,OW]";
    if (p[0] < 1 || p[1] < 1 || p[2] < 0 || p[3] < 0)
        return "strides must be at least 1 and padding at least 0";
    if (w->dims[1] != x->dims[1])
        return "w's channels differ from x's";
    if (w->dims[2] < 1 || w->dims[3] < 1)
        return "the kernel is empty";
    if (y->dims[0] != x->dims[0] || y->dims[1] != w->dims[0] ||
        y->dims[2] != kiln_rule_window_count(x->dims[2], w->dims[2], p[0], p[2]) ||
        y->dims[3] != kiln_rule_window_count(x->dims[3], w->dims[3], p[1], p[3]))
        return "the output is not [N, O, (H+2*pad_h-KH)/stride_h+1, "
               "(W+2*pad_w-KW)/stride_w+1]";
    return NULL;
}

/* CONV2D: x, w and an optional bias [O]. */
static inline const char *kiln_rule_conv2d(const kiln_node *node)
{
    const kiln_node *bias = node->src[2];
    const char *why = kiln_rule_conv(node->src[0], node->src[1], node, node->iparam);
    if (!why && bias && (bias->ndim != 1 || bias->dims[0] != node->src[1]->dims[0]))
        why = "bias is not [O]";
    return why;
}

/* CONV2D_GRAD_INPUT: src gy, w; the output is x's gradient. */
static inline const char *kiln_rule_conv2d_grad_input(const kiln_node *node)
{
    return kiln_rule_conv(node, node->src[1], node->src[0], node->iparam);
}

/* CONV2D_GRAD_WEIGHT: src gy, x; the output is w's gradient. */
static inline const char *kiln_rule_conv2d_grad_weight(const kiln_node *node)
{
    return kiln_rule_conv(node->src[1], node, node->src[0], node->iparam);
}

/* x [N,C,H,W] pooled into y [N,C,OH,OW]; p the window and strides (iparam). */
static inline const char *kiln_rule_pool(const kiln_node *x, const kiln_node *y,
                                         const int32_t *p)
{
    if (x->ndim != 4 || y->ndim != 4)
        return "max_pool2d takes x [N,C,H,W] and gives [N,C,OH,OW]";
    if (p[0] < 1 || p[1] < 1 || p[2] < 1 || p[3] < 1)
        return "kernel sizes and strides must be at least 1";
    if (y->dims[0] != x->dims[0] || y->dims[1] != x->dims[1] ||
        y->dims[2] != kiln_rule_window_count(x->dims[2], p[0], p[2], 0) ||
        y->dims[3] != kiln_rule_window_count(x->dims[3], p[1], p[3], 0))
        return "the output is not [N, C, (H-kernel_h)/stride_h+1, "
               "(W-kernel_w)/stride_w+1]";
    return NULL;
}

static inline const char *kiln_rule_max_pool2d(const kiln_node *node)
{
    return kiln_rule_pool(node->src[0], node, node->iparam);
}

/* MAX_POOL2D_GRAD: src gy, x; the output has x's shape. */
static inline const char *kiln_rule_max_pool2d_grad(const kiln_node *node)
{
    const kiln_node *x = node->src[1];
    if (node->ndim != x->ndim || memcmp(node->dims, x->dims, sizeof node->dims) != 0)
        return "the output does not have x's shape";
    return kiln_rule_pool(x, node->src[0], node->iparam);
}

/* ---- losses ------------------------------------------------------------------------------ */

static inline const char *kiln_rule_mse_loss(const kiln_node *node)
{
    if (node->src[0]->numel != node->src[1]->numel)
        return "pred and target differ in number of elements";
    if (node->numel != 1)
        return "the output is not a scalar";
    return NULL;
}

static inline const char *kiln_rule_logits_labels(const kiln_node *logits,
                                                  const kiln_node *labels)
{
    if (logits->ndim != 2 || labels->ndim != 1)
        return "cross_entropy takes logits [N,C] and labels [N]";
    if (labels->dims[0] != logits->dims[0])
        return "logits and labels differ in N";
    if (logits->dims[1] > INT32_MAX)
        return "too many classes for i32 labels";
    return NULL;
}

static inline const char *kiln_rule_cross_entropy(const kiln_node *node)
{
    if (node->numel != 1)
        return "the output is not a scalar";
    return kiln_rule_logits_labels(node->src[0], node->src[1]);
}

/* CROSS_ENTROPY_GRAD: src g (one element), logits, labels; the output has
 * the logits' shape. */
static inline const char *kiln_rule_cross_entropy_grad(const kiln_node *node)
{
    const kiln_node *logits = node->src[1];
    if (node->src[0]->numel != 1)
        return "the incoming gradient is not one element";
    if (node->ndim != 2 || node->dims[0] != logits->dims[0] ||
        node->dims[1] != logits->dims[1])
        return "the output does not have the logits' shape";
    return kiln_rule_logits_labels(logits, node->src[2]);
}

/* ---- optimiser steps ----------------------------------------------------------------------- */

/* SGD_STEP (param, grad, velocity, hp [4]) and ADAM_STEP (param, grad, m,
 * v, hp [8]): the tensors of one size, the output the parameter's. */
static inline const char *kiln_rule_step(const kiln_node *node)
{
    int n_state = node->op == KILN_OP_SGD_STEP ? 1 : 2;
    int64_t n_hp = n_state == 1 ? 4 : 8;
    for (int s = 0; s < 2 + n_state; s++)
        if (node->src[s]->numel != node->numel)
            return "the parameter, its gradient and its state differ in number "
                   "of elements";
    if (node->src[2 + n_state]->numel != n_hp)
        return "the hyper-parameters are not f32 [4] (SGD) or [8] (Adam)";
    return NULL;
}

#endif /* KILN_BACKENDS_NODE_RULES_H */
