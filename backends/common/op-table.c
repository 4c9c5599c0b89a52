/* op-table.c — the op table (op-table.h): one row per kiln_op, and the shape
 * rules of <kiln/backend.h> that the rows name. Each rule returns why a node
 * breaks it, or NULL; it may assume what kiln__op_check looked at first
 * (sources present, dtypes, consistent extents). */
#include "op-table.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

/* ---- elementwise ---------------------------------------------------------- */

/* ADD, SUB, MUL, DIV: one operand the output's size, the other dividing it. */
static const char *rule_binary(const kiln_node *node)
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
static const char *rule_same_numel(const kiln_node *node)
{
    for (int s = 0; s < KILN_MAX_SRC && node->src[s]; s++)
        if (node->src[s]->numel != node->numel)
            return "a source and the output differ in number of elements";
    return NULL;
}

/* a and b have one shape. */
static bool same_dims(const kiln_node *a, const kiln_node *b)
{
    if (a->ndim != b->ndim)
        return false;
    for (int d = 0; d < a->ndim; d++)
        if (a->dims[d] != b->dims[d])
            return false;
    return true;
}

/* Rows along the last axis, as the output lays them out (SOFTMAX,
 * LOG_SOFTMAX and their gradients). */
static const char *rule_rows_alike(const kiln_node *node)
{
    const char *why = rule_same_numel(node);
    for (int s = 0; !why && s < KILN_MAX_SRC && node->src[s]; s++)
        if (kiln__last_dim(node->src[s]) != kiln__last_dim(node))
            why = "a source's last axis differs from the output's";
    return why;
}

/* ---- reductions and their gradients ------------------------------------------ */

/* SUM, MEAN over iparam[0] (-1: everything). */
static const char *rule_reduce_axis(const kiln_node *node)
{
    const kiln_node *src  = node->src[0];
    int              axis = node->iparam[0];
    int64_t          outer, r, inner;
    if (axis != -1 && (axis < 0 || axis >= src->ndim))
        return "the axis (iparam[0]) is neither -1 nor an axis of the input";
    kiln__axis_extent(src, axis, &outer, &r, &inner);
    if (node->numel != outer * inner)
        return "the output's number of elements is not the input's with the axis removed";
    return NULL;
}

/* EXPAND: the inverse of a reduction over an axis of the output. */
static const char *rule_expand(const kiln_node *node)
{
    int     axis = node->iparam[0];
    int64_t outer, r, inner;
    if (axis != -1 && (axis < 0 || axis >= node->ndim))
        return "the axis (iparam[0]) is neither -1 nor an axis of the output";
    kiln__axis_extent(node, axis, &outer, &r, &inner);
    if (node->src[0]->numel != (axis == -1 ? 1 : outer * inner))
        return "the source is not the output's shape without the axis";
    return NULL;
}

/* SUM_TO: out[j] sums src[i] over i % numel(out) == j. */
static const char *rule_sum_to(const kiln_node *node)
{
    int64_t n = node->src[0]->numel, m = node->numel;
    if (m == 0 ? n != 0 : n % m != 0)
        return "the output's number of elements does not divide the source's";
    return NULL;
}

/* x's rows along its last axis, one element of the output (or gradient) per
 * row; i32_index: an index into a row must fit an int32. */
static const char *rule_last_axis(const kiln_node *x, int64_t rows_out, bool i32_index)
{
    int64_t rows = kiln__rows(x), cols = kiln__last_dim(x);
    if (rows_out != rows)
        return "the output (or gradient) does not have one element per row";
    if (rows > 0 && cols == 0)
        return "the last axis is empty";
    if (i32_index && cols > INT32_MAX)
        return "the last axis is too long for an i32 index";
    return NULL;
}

/* MAX and ARGMAX, whose i32 output must hold a column index. */
static const char *rule_pick_last(const kiln_node *node)
{
    return rule_last_axis(node->src[0], node->numel, node->op == KILN_OP_ARGMAX);
}

/* MAX_GRAD: g [R], x [R, C]; the output has x's shape. */
static const char *rule_max_grad(const kiln_node *node)
{
    const kiln_node *x = node->src[1];
    if (node->numel != x->numel || kiln__last_dim(node) != kiln__last_dim(x))
        return "the output does not have x's shape";
    return rule_last_axis(x, node->src[0]->numel, false);
}

/* ---- linear algebra ------------------------------------------------------------ */

/* MATMUL: op(a) [..., M,K] @ op(b) [..., K,N], iparam[0] and [1] the
 * transposes; 2-D, or 3-D and 4-D with the same batch axes in a, b and the
 * output. */
static const char *rule_matmul(const kiln_node *node)
{
    const kiln_node *a = node->src[0], *b = node->src[1];
    int              nd = node->ndim, r = nd - 2;
    if (nd < 2 || a->ndim != nd || b->ndim != nd)
        return "matmul takes and gives tensors of one ndim, 2-D to 4-D";
    for (int d = 0; d < r; d++)
        if (a->dims[d] != node->dims[d] || b->dims[d] != node->dims[d])
            return "a, b and the output differ in a batch axis";
    bool ta = node->iparam[0] != 0, tb = node->iparam[1] != 0;
    if (a->dims[r + (ta ? 0 : 1)] != b->dims[r + (tb ? 1 : 0)])
        return "the inner dimensions of a and b differ";
    if (node->dims[r] != a->dims[r + (ta ? 1 : 0)] ||
        node->dims[r + 1] != b->dims[r + (tb ? 0 : 1)])
        return "the output is not [..., M, N]";
    return NULL;
}

static const char *rule_transpose(const kiln_node *node)
{
    const kiln_node *src = node->src[0];
    if (src->ndim != 2 || node->ndim != 2)
        return "transpose takes and gives 2-D tensors";
    if (node->dims[0] != src->dims[1] || node->dims[1] != src->dims[0])
        return "the output is not [cols, rows] of the input";
    return NULL;
}

/* PERMUTE: out's axis d is the input's axis iparam[d]. */
static const char *rule_permute(const kiln_node *node)
{
    const kiln_node *src  = node->src[0];
    unsigned         seen = 0;
    if (node->ndim != src->ndim)
        return "the output's ndim differs from the input's";
    for (int d = 0; d < node->ndim; d++) {
        int32_t p = node->iparam[d];
        if (p < 0 || p >= node->ndim || (seen & (1u << p)))
            return "iparam[0, ndim) is not a permutation of the input's axes";
        seen |= 1u << p;
        if (node->dims[d] != src->dims[p])
            return "the output's axis d is not the input's axis iparam[d]";
    }
    return NULL;
}

/* big and small alike but along axis p[0], where small is big's window
 * [p[1], p[1] + length): SLICE (big the input) and SLICE_GRAD (big the
 * output). */
static const char *rule_window(const kiln_node *big, const kiln_node *small,
                               const int32_t *p)
{
    int axis = p[0];
    if (big->ndim != small->ndim)
        return "the input and the output differ in ndim";
    if (axis < 0 || axis >= big->ndim)
        return "the axis (iparam[0]) is not an axis of the input";
    for (int d = 0; d < big->ndim; d++)
        if (d != axis && big->dims[d] != small->dims[d])
            return "the input and the output differ in an axis besides the sliced one";
    if (p[1] < 0 || (int64_t)p[1] + small->dims[axis] > big->dims[axis])
        return "the window [start, start + length) does not lie inside the axis";
    return NULL;
}

static const char *rule_slice(const kiln_node *node)
{
    return rule_window(node->src[0], node, node->iparam);
}

static const char *rule_slice_grad(const kiln_node *node)
{
    return rule_window(node, node->src[0], node->iparam);
}

/* ---- convolution and pooling --------------------------------------------------- */

/* x [N,C,H,W], w [O,C,KH,KW] and y [N,O,OH,OW] of one convolution, whichever
 * of them the node has as sources and which one it computes; p the strides
 * and padding (iparam). */
static const char *rule_conv(const kiln_node *x, const kiln_node *w, const kiln_node *y,
                             const int32_t *p)
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
        y->dims[2] != kiln__window_count(x->dims[2], w->dims[2], p[0], p[2]) ||
        y->dims[3] != kiln__window_count(x->dims[3], w->dims[3], p[1], p[3]))
        return "the output is not [N, O, (H+2*pad_h-KH)/stride_h+1, "
               "(W+2*pad_w-KW)/stride_w+1]";
    return NULL;
}

/* CONV2D: x, w and an optional bias [O]. */
static const char *rule_conv2d(const kiln_node *node)
{
    const kiln_node *bias = node->src[2];
    const char      *why  = rule_conv(node->src[0], node->src[1], node, node->iparam);
    if (!why && bias && (bias->ndim != 1 || bias->dims[0] != node->src[1]->dims[0]))
        why = "bias is not [O]";
    return why;
}

/* CONV2D_GRAD_INPUT: src gy, w; the output is x's gradient. */
static const char *rule_conv2d_grad_input(const kiln_node *node)
{
    return rule_conv(node, node->src[1], node->src[0], node->iparam);
}

/* CONV2D_GRAD_WEIGHT: src gy, x; the output is w's gradient. */
static const char *rule_conv2d_grad_weight(const kiln_node *node)
{
    return rule_conv(node->src[1], node, node->src[0], node->iparam);
}

/* x [N,C,H,W] pooled into y [N,C,OH,OW]; p the window and strides (iparam). */
static const char *rule_pool(const kiln_node *x, const kiln_node *y, const int32_t *p)
{
    if (x->ndim != 4 || y->ndim != 4)
        return "max_pool2d takes x [N,C,H,W] and gives [N,C,OH,OW]";
    if (p[0] < 1 || p[1] < 1 || p[2] < 1 || p[3] < 1)
        return "kernel sizes and strides must be at least 1";
    if (y->dims[0] != x->dims[0] || y->dims[1] != x->dims[1] ||
        y->dims[2] != kiln__window_count(x->dims[2], p[0], p[2], 0) ||
        y->dims[3] != kiln__window_count(x->dims[3], p[1], p[3], 0))
        return "the output is not [N, C, (H-kernel_h)/stride_h+1, "
               "(W-kernel_w)/stride_w+1]";
    return NULL;
}

static const char *rule_max_pool2d(const kiln_node *node)
{
    return rule_pool(node->src[0], node, node->iparam);
}

/* MAX_POOL2D_GRAD: src gy, x; the output has x's shape. */
static const char *rule_max_pool2d_grad(const kiln_node *node)
{
    const kiln_node *x = node->src[1];
    if (node->ndim != x->ndim || memcmp(node->dims, x->dims, sizeof node->dims) != 0)
        return "the output does not have x's shape";
    return rule_pool(x, node->src[0], node->iparam);
}

/* ---- losses ------------------------------------------------------------------------ */

static const char *rule_mse_loss(const kiln_node *node)
{
    if (node->src[0]->numel != node->src[1]->numel)
        return "pred and target differ in number of elements";
    if (node->numel != 1)
        return "the output is not a scalar";
    return NULL;
}

/* logits [..., C] and labels [...]: every axis of the logits but the last
 * is one of the labels', so that each row of the last axis has its label. */
static const char *rule_logits_labels(const kiln_node *logits, const kiln_node *labels)
{
    if (logits->ndim < 1 || labels->ndim != logits->ndim - 1)
        return "cross_entropy takes logits [..., C] and labels [...]";
    for (int d = 0; d < labels->ndim; d++)
        if (labels->dims[d] != logits->dims[d])
            return "the labels' shape is not the logits' without the last axis";
    if (kiln__last_dim(logits) > INT32_MAX)
        return "too many classes for i32 labels";
    return NULL;
}

static const char *rule_cross_entropy(const kiln_node *node)
{
    if (node->numel != 1)
        return "the output is not a scalar";
    return rule_logits_labels(node->src[0], node->src[1]);
}

/* CROSS_ENTROPY_GRAD: src g (one element), logits, labels; the output has
 * the logits' shape. */
static const char *rule_cross_entropy_grad(const kiln_node *node)
{
    const kiln_node *logits = node->src[1];
    if (node->src[0]->numel != 1)
        return "the incoming gradient is not one element";
    if (!same_dims(node, logits))
        return "the output does not have the logits' shape";
    return rule_logits_labels(logits, node->src[2]);
}

/* ---- normalisation --------------------------------------------------------------------- */

/* x [..., C] and a per-column tensor p [C] (weight, bias, or the weight's
 * gradient). */
static const char *rule_per_column(const kiln_node *x, const kiln_node *p)
{
    if (p->ndim != 1 || p->dims[0] != kiln__last_dim(x))
        return "a weight, bias or its gradient is not [C], C the last axis of x";
    return NULL;
}

/* a has the output's rows: its number of elements and last axis. */
static const char *rule_rows_of(const kiln_node *node, const kiln_node *a)
{
    if (a->numel != node->numel || kiln__last_dim(a) != kiln__last_dim(node))
        return "x (or the gradient) and the output differ in shape";
    return NULL;
}

/* x's rows along its last axis: at least one axis, not empty, eps >= 0. */
static const char *rule_norm_rows(const kiln_node *node, const kiln_node *x)
{
    float eps = node->fparam[0];
    if (x->ndim < 1)
        return "x has no last axis to normalise";
    if (kiln__last_dim(x) == 0)
        return "the last axis is empty";
    if (!(eps >= 0.0f && eps <= 3.4e38f))
        return "eps (fparam[0]) is negative, infinite or NaN";
    return NULL;
}

/* LAYER_NORM: x, weight, optional bias; the output has x's shape. */
static const char *rule_layer_norm(const kiln_node *node)
{
    const kiln_node *x   = node->src[0];
    const char      *why = rule_rows_of(node, x);
    if (!why)
        why = rule_norm_rows(node, x);
    if (!why)
        why = rule_per_column(x, node->src[1]);
    if (!why && node->src[2])
        why = rule_per_column(x, node->src[2]);
    return why;
}

/* LAYER_NORM_GRAD: g, x, weight; the output has x's shape. */
static const char *rule_layer_norm_grad(const kiln_node *node)
{
    const kiln_node *x   = node->src[1];
    const char      *why = rule_rows_of(node, x);
    if (!why)
        why = rule_rows_of(node, node->src[0]);
    if (!why)
        why = rule_norm_rows(node, x);
    if (!why)
        why = rule_per_column(x, node->src[2]);
    return why;
}

/* LAYER_NORM_GRAD_WEIGHT: g, x; the output is [C]. */
static const char *rule_layer_norm_grad_weight(const kiln_node *node)
{
    const kiln_node *g = node->src[0], *x = node->src[1];
    if (g->numel != x->numel || kiln__last_dim(g) != kiln__last_dim(x))
        return "the gradient and x differ in shape";
    const char *why = rule_norm_rows(node, x);
    return why ? why : rule_per_column(x, node);
}

/* ---- optimiser steps ------------------------------------------------------------------ */

/* SGD_STEP (param, grad, velocity, hp [4]) and ADAM_STEP (param, grad, m,
 * v, hp [12]), each with an optional sum of squares [1] for clipping: the
 * tensors of one size, the output the parameter's. */
static const char *rule_step(const kiln_node *node)
{
    int     n_state = node->op == KILN_OP_SGD_STEP ? 1 : 2;
    int64_t n_hp    = n_state == 1 ? 8 : 12;
    for (int s = 0; s < 2 + n_state; s++)
        if (node->src[s]->numel != node->numel)
            return "the parameter, its gradient and its state differ in number "
                   "of elements";
    if (node->src[2 + n_state]->numel != n_hp)
        return "the hyper-parameters are not f32 [8] (SGD) or [12] (Adam)";
    if (3 + n_state < KILN_MAX_SRC && node->src[3 + n_state] &&
        node->src[3 + n_state]->numel != 1)
        return "the gradients' sum of squares is not one element";
    return NULL;
}

/* ---- transformers ---------------------------------------------------------------------- */

/* rows [..., C] has one row of C per position of ids [...]. */
static bool rows_per_id(const kiln_node *rows, const kiln_node *ids, int64_t cols)
{
    if (rows->ndim != ids->ndim + 1 || kiln__last_dim(rows) != cols)
        return false;
    for (int d = 0; d < ids->ndim; d++)
        if (rows->dims[d] != ids->dims[d])
            return false;
    return true;
}

/* EMBEDDING: table [V, C], ids [...]; the output [..., C]. */
static const char *rule_embedding(const kiln_node *node)
{
    const kiln_node *table = node->src[0];
    if (table->ndim != 2)
        return "the table is not [V, C]";
    if (!rows_per_id(node, node->src[1], table->dims[1]))
        return "the output is not [..., C], the ids' shape and the table's C";
    return NULL;
}

/* EMBEDDING_GRAD: g [..., C], ids [...]; the output [V, C]. */
static const char *rule_embedding_grad(const kiln_node *node)
{
    if (node->ndim != 2)
        return "the output is not [V, C]";
    if (!rows_per_id(node->src[0], node->src[1], node->dims[1]))
        return "the gradient is not [..., C], the ids' shape and the output's C";
    return NULL;
}

/* CAUSAL_SOFTMAX (x[, offset]) and its gradient (g, y[, offset]): T x T
 * matrices along the last two axes, or [Tq, Tk] with an offset of one
 * element; the output's shape, a finite scale. */
static const char *rule_causal(const kiln_node *node)
{
    int              n_data = node->op == KILN_OP_CAUSAL_SOFTMAX ? 1 : 2;
    const kiln_node *offset = node->src[n_data];
    const char      *why    = NULL;
    for (int s = 0; !why && s < n_data; s++)
        if (node->src[s]->numel != node->numel ||
            kiln__last_dim(node->src[s]) != kiln__last_dim(node))
            why = "a source differs from the output in shape";
    if (!why && node->ndim < 2)
        why = "the input is not at least 2-D";
    if (!why && !offset && node->dims[node->ndim - 2] != node->dims[node->ndim - 1])
        why = "the last two axes are not [T, T] (an offset allows [Tq, Tk])";
    if (!why && offset && offset->numel != 1)
        why = "the offset is not one element";
    if (!why && !isfinite(node->fparam[0]))
        why = "the scale (fparam[0]) is not finite";
    return why;
}

/* ---- caches ------------------------------------------------------------------------ */

/* STORE_SLICE: dst, value (dst's shape but for the axis), start [1]; the
 * output is dst's shape. */
static const char *rule_store_slice(const kiln_node *node)
{
    const kiln_node *dst = node->src[0], *value = node->src[1];
    int              axis = node->iparam[0];
    if (!same_dims(node, dst))
        return "the output is not the destination's shape";
    if (axis < 0 || axis >= dst->ndim)
        return "the axis (iparam[0]) is not an axis of the destination";
    if (value->ndim != dst->ndim)
        return "the value and the destination differ in ndim";
    for (int d = 0; d < dst->ndim; d++)
        if (d != axis && value->dims[d] != dst->dims[d])
            return "the value and the destination differ in an axis other than the "
                   "one written";
    if (value->dims[axis] > dst->dims[axis])
        return "the value is longer than the destination along the axis";
    if (node->src[2]->numel != 1)
        return "the start is not one element";
    return NULL;
}

/* CAUSAL_ATTENTION (qkv) and its gradient (g, qkv): qkv [B, T, 3C], H
 * heads dividing C, a finite scale; the output [B, T, C], or qkv's shape
 * for the gradient, whose g is [B, T, C]. */
static const char *rule_attention(const kiln_node *node)
{
    bool             grad = node->op == KILN_OP_CAUSAL_ATTENTION_GRAD;
    const kiln_node *qkv  = node->src[grad ? 1 : 0];
    const kiln_node *y    = grad ? node->src[0] : node;
    int              h    = node->iparam[0];
    if (qkv->ndim != 3 || qkv->dims[2] % 3 != 0)
        return "qkv is not [B, T, 3C]";
    int64_t c = qkv->dims[2] / 3;
    if (y->ndim != 3 || y->dims[0] != qkv->dims[0] || y->dims[1] != qkv->dims[1] ||
        y->dims[2] != c)
        return "the output (or the gradient) is not [B, T, C] for qkv [B, T, 3C]";
    if (grad &&
        (node->ndim != 3 || node->numel != qkv->numel || node->dims[2] != qkv->dims[2]))
        return "the gradient's output is not qkv's shape";
    if (h < 1 || c % h != 0)
        return "the heads (iparam[0]) do not divide C";
    if (!isfinite(node->fparam[0]))
        return "the scale (fparam[0]) is not finite";
    return NULL;
}

/* ---- the table ------------------------------------------------------------------------ */

/* One row per op, its fields in columns. */
/* clang-format off */
#define F32 KILN_F32
#define I32 KILN_I32
#define RUNS KILN__OP_DISPATCHED
#define GRAD KILN__OP_DIFFERENTIABLE
#define LAST KILN__OP_RUNS_LAST

#define FLT  KILN__FLOAT
#define ANYF KILN__ANY_FLOAT
#define FLT_OR_F32 KILN__FLOAT_OR_F32
#define BINARY(n) { n, 2, 0, FLT, { FLT, FLT }, { "a", "b" }, rule_binary, RUNS | GRAD }
#define UNARY(n)  { n, 1, 0, FLT, { FLT }, { "input" }, rule_same_numel, RUNS | GRAD }

static const kiln__op_def kiln__ops[KILN_OP_COUNT] = {
    [KILN_OP_LEAF]    = { "leaf", 0, 0, F32, { F32 }, { NULL }, NULL, 0 },
    /* a view: any dtype, never dispatched; core checks its element count */
    [KILN_OP_RESHAPE] = { "reshape", 1, 0, F32, { F32 }, { "input" }, NULL, GRAD },

    [KILN_OP_ADD]     = BINARY("add"),
    [KILN_OP_SUB]     = BINARY("sub"),
    [KILN_OP_MUL]     = BINARY("mul"),
    [KILN_OP_DIV]     = BINARY("div"),
    [KILN_OP_NEG]     = UNARY("neg"),
    [KILN_OP_EXP]     = UNARY("exp"),
    [KILN_OP_LOG]     = UNARY("log"),
    [KILN_OP_SQRT]    = UNARY("sqrt"),
    [KILN_OP_RELU]    = UNARY("relu"),
    [KILN_OP_SIGMOID] = UNARY("sigmoid"),
    [KILN_OP_TANH]    = UNARY("tanh"),
    [KILN_OP_SCALE]   = UNARY("scale"),

    [KILN_OP_MATMUL]  = { "matmul", 2, 0, FLT_OR_F32, { FLT, FLT }, { "a", "b" },
                          rule_matmul, RUNS | GRAD },
    [KILN_OP_SUM]     = { "sum", 1, 0, FLT, { FLT }, { "input" },
                          rule_reduce_axis, RUNS | GRAD },
    [KILN_OP_MEAN]    = { "mean", 1, 0, FLT, { FLT }, { "input" },
                          rule_reduce_axis, RUNS | GRAD },
    [KILN_OP_MAX]     = { "max", 1, 0, FLT, { FLT }, { "input" },
                          rule_pick_last, RUNS | GRAD },
    [KILN_OP_ARGMAX]  = { "argmax", 1, 0, I32, { FLT }, { "input" },
                          rule_pick_last, RUNS },
    [KILN_OP_SOFTMAX] = { "softmax", 1, 0, FLT, { FLT }, { "input" },
                          rule_rows_alike, RUNS | GRAD },
    [KILN_OP_LOG_SOFTMAX] = { "log_softmax", 1, 0, FLT, { FLT }, { "input" },
                              rule_rows_alike, RUNS | GRAD },
    [KILN_OP_TRANSPOSE] = { "transpose", 1, 0, FLT, { FLT }, { "input" },
                            rule_transpose, RUNS | GRAD },
    [KILN_OP_CONV2D]  = { "conv2d", 2, 1, FLT, { FLT, FLT, FLT }, { "x", "w", "bias" },
                          rule_conv2d, RUNS | GRAD },
    [KILN_OP_MAX_POOL2D] = { "max_pool2d", 1, 0, FLT, { FLT }, { "x" },
                             rule_max_pool2d, RUNS | GRAD },
    [KILN_OP_MSE_LOSS] = { "mse_loss", 2, 0, FLT, { FLT, FLT }, { "pred", "target" },
                           rule_mse_loss, RUNS | GRAD },
    [KILN_OP_CROSS_ENTROPY] = { "cross_entropy", 2, 0, FLT, { FLT, I32 },
                                { "logits", "labels" }, rule_cross_entropy,
                                RUNS | GRAD },

    /* gradients: src[0] is the incoming gradient */
    [KILN_OP_SUM_TO]  = { "sum_to", 1, 0, FLT, { FLT }, { "gradient" },
                          rule_sum_to, RUNS },
    [KILN_OP_EXPAND]  = { "expand", 1, 0, FLT, { FLT }, { "gradient" },
                          rule_expand, RUNS },
    [KILN_OP_RELU_GRAD] = { "relu_grad", 2, 0, FLT, { FLT, FLT }, { "gradient", "x" },
                            rule_same_numel, RUNS },
    [KILN_OP_MAX_GRAD] = { "max_grad", 2, 0, FLT, { FLT, FLT }, { "gradient", "x" },
                           rule_max_grad, RUNS },
    [KILN_OP_SOFTMAX_GRAD] = { "softmax_grad", 2, 0, FLT, { FLT, FLT },
                               { "gradient", "y" }, rule_rows_alike, RUNS },
    [KILN_OP_LOG_SOFTMAX_GRAD] = { "log_softmax_grad", 2, 0, FLT, { FLT, FLT },
                                   { "gradient", "y" }, rule_rows_alike, RUNS },
    [KILN_OP_CONV2D_GRAD_INPUT] = { "conv2d_grad_input", 2, 0, FLT, { FLT, FLT },
                                    { "gradient", "w" }, rule_conv2d_grad_input, RUNS },
    [KILN_OP_CONV2D_GRAD_WEIGHT] = { "conv2d_grad_weight", 2, 0, FLT, { FLT, FLT },
                                     { "gradient", "x" }, rule_conv2d_grad_weight,
                                     RUNS },
    [KILN_OP_MAX_POOL2D_GRAD] = { "max_pool2d_grad", 2, 0, FLT, { FLT, FLT },
                                  { "gradient", "x" }, rule_max_pool2d_grad, RUNS },
    [KILN_OP_CROSS_ENTROPY_GRAD] = { "cross_entropy_grad", 3, 0, FLT, { FLT, FLT, I32 },
                                     { "gradient", "logits", "labels" },
                                     rule_cross_entropy_grad, RUNS },

    /* transformer ops */
    [KILN_OP_GELU]    = UNARY("gelu"),
    [KILN_OP_GELU_GRAD] = { "gelu_grad", 2, 0, FLT, { FLT, FLT }, { "gradient", "x" },
                            rule_same_numel, RUNS },
    [KILN_OP_LAYER_NORM] = { "layer_norm", 2, 1, FLT, { FLT, FLT, FLT },
                             { "x", "weight", "bias" }, rule_layer_norm, RUNS | GRAD },
    [KILN_OP_LAYER_NORM_GRAD] = { "layer_norm_grad", 3, 0, FLT, { FLT, FLT, FLT },
                                  { "gradient", "x", "weight" }, rule_layer_norm_grad,
                                  RUNS },
    [KILN_OP_LAYER_NORM_GRAD_WEIGHT] = { "layer_norm_grad_weight", 2, 0, FLT,
                                         { FLT, FLT }, { "gradient", "x" },
                                         rule_layer_norm_grad_weight, RUNS },
    [KILN_OP_PERMUTE] = { "permute", 1, 0, FLT, { FLT }, { "input" },
                          rule_permute, RUNS | GRAD },
    [KILN_OP_SLICE]   = { "slice", 1, 0, FLT, { FLT }, { "input" },
                          rule_slice, RUNS | GRAD },
    [KILN_OP_SLICE_GRAD] = { "slice_grad", 1, 0, FLT, { FLT }, { "gradient" },
                             rule_slice_grad, RUNS },

    [KILN_OP_SGD_STEP] = { "sgd_step", 4, 1, F32, { F32, F32, F32, F32, F32 },
                           { "param", "grad", "velocity", "hyper-parameters",
                             "sum of squares" },
                           rule_step, RUNS | KILN__OP_IN_PLACE | LAST, 1u << 2 },
    [KILN_OP_ADAM_STEP] = { "adam_step", 5, 1, F32, { F32, F32, F32, F32, F32, F32 },
                            { "param", "grad", "m", "v", "hyper-parameters",
                              "sum of squares" },
                            rule_step, RUNS | KILN__OP_IN_PLACE | LAST,
                            1u << 2 | 1u << 3 },

    [KILN_OP_EMBEDDING] = { "embedding", 2, 0, FLT, { FLT, I32 }, { "table", "ids" },
                            rule_embedding, RUNS | GRAD },
    [KILN_OP_EMBEDDING_GRAD] = { "embedding_grad", 2, 0, FLT, { FLT, I32 },
                                 { "gradient", "ids" }, rule_embedding_grad, RUNS },
    [KILN_OP_CAUSAL_SOFTMAX] = { "causal_softmax", 1, 1, FLT, { FLT, I32 },
                                 { "input", "offset" }, rule_causal, RUNS | GRAD },
    [KILN_OP_CAUSAL_SOFTMAX_GRAD] = { "causal_softmax_grad", 2, 1, FLT,
                                      { FLT, FLT, I32 }, { "gradient", "y", "offset" },
                                      rule_causal, RUNS },
    [KILN_OP_CAUSAL_ATTENTION] = { "causal_attention", 1, 0, FLT, { FLT }, { "qkv" },
                                   rule_attention, RUNS | GRAD },
    [KILN_OP_CAUSAL_ATTENTION_GRAD] = { "causal_attention_grad", 2, 0, FLT, { FLT, FLT },
                                        { "gradient", "qkv" }, rule_attention, RUNS },
    [KILN_OP_STORE_SLICE] = { "store_slice", 3, 0, FLT, { FLT, FLT, I32 },
                              { "destination", "value", "start" }, rule_store_slice,
                              RUNS | KILN__OP_IN_PLACE },

    [KILN_OP_CAST]    = { "cast", 1, 0, ANYF, { ANYF }, { "input" },
                          rule_same_numel, RUNS | GRAD },
};
/* clang-format on */

const kiln__op_def *kiln__op_def_of(kiln_op op)
{
    return (unsigned)op < KILN_OP_COUNT && kiln__ops[op].name ? &kiln__ops[op] : NULL;
}

const char *kiln__op_name(kiln_op op)
{
    const kiln__op_def *d = kiln__op_def_of(op);
    return d ? d->name : "unknown op";
}

/* ---- checks ---------------------------------------------------------------------------- */

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

bool kiln__is_float(kiln_dtype dtype)
{
    return dtype == KILN_F32 || dtype == KILN_F16 || dtype == KILN_BF16;
}

bool kiln__node_has_half(const kiln_node *node)
{
    bool half = kiln__is_half(node->dtype);
    for (int s = 0; !half && s < KILN_MAX_SRC && node->src[s]; s++)
        half = kiln__is_half(node->src[s]->dtype);
    return half;
}

kiln_dtype kiln__op_float(const kiln__op_def *d, const kiln_dtype *out,
                          const kiln_dtype *src)
{
    if (out && d->out_dtype == KILN__FLOAT)
        return *out;
    for (int s = 0; s < d->n_src + d->n_opt; s++)
        if (d->src_dtype[s] == KILN__FLOAT)
            return src[s];
    return KILN_F32;
}

const char *kiln__dtype_check(kiln_dtype have, kiln_dtype want, kiln_dtype flt)
{
    switch ((int)want) {
    case KILN__FLOAT_OR_F32:
        if (have == KILN_F32 && kiln__is_float(flt))
            return NULL;
        /* fall through */
    case KILN__FLOAT:
        if (!kiln__is_float(have))
            return "a tensor is not f32, f16 or bf16";
        return have == flt ? NULL
                           : "the float tensors differ in dtype (the op takes one "
                             "float type: cast one of them with kiln_cast)";
    case KILN__ANY_FLOAT:
        return kiln__is_float(have) ? NULL : "a tensor is not f32, f16 or bf16";
    default:
        if (have == want)
            return NULL;
        return want == KILN_F32 ? "a tensor is not f32 (the op runs in f32 only)"
                                : "a tensor is not i32";
    }
}

static const char *check_tensor(const kiln_node *t, kiln_dtype dtype, kiln_dtype flt)
{
    const char *why = kiln__dtype_check(t->dtype, dtype, flt);
    if (why)
        return why;
    if (!shape_ok(t))
        return "a tensor's ndim, dims and numel disagree";
    return NULL;
}

const char *kiln__op_check(const kiln_node *node)
{
    const kiln__op_def *d = kiln__op_def_of(node->op);
    if (!d || !(d->flags & KILN__OP_DISPATCHED))
        return "the op is never dispatched to a backend";
    kiln_dtype src_dtype[KILN_MAX_SRC] = {0};
    for (int s = 0; s < KILN_MAX_SRC; s++)
        src_dtype[s] = node->src[s] ? node->src[s]->dtype : (kiln_dtype)-1;
    kiln_dtype  flt = kiln__op_float(d, &node->dtype, src_dtype);
    const char *why = check_tensor(node, d->out_dtype, flt);
    for (int s = 0; !why && s < d->n_src + d->n_opt; s++) {
        const kiln_node *src = node->src[s];
        if (!src && s < d->n_src)
            why = "a source is missing";
        else if (src)
            why = check_tensor(src, d->src_dtype[s], flt);
    }
    return why ? why : d->rule(node);
}

const char *kiln__op_check_storage(const kiln_node *node, kiln__extent_fn extent_ok)
{
    const kiln__op_def *d = kiln__op_def_of(node->op);
    if (!extent_ok(node))
        return "a tensor's data lies outside its buffer";
    for (int s = 0; s < KILN_MAX_SRC; s++)
        if (node->src[s] && !extent_ok(node->src[s]))
            return "a tensor's data lies outside its buffer";
    if (d && (d->flags & KILN__OP_IN_PLACE) &&
        (node->buffer != node->src[0]->buffer || node->offset != node->src[0]->offset))
        return "the output is not the storage of src[0]: the op updates it in place";
    return NULL;
}

/* ---- messages ---------------------------------------------------------------------------- */

const char *kiln__shape_str(char *buf, int ndim, const int64_t *dims)
{
    size_t len = 0;
    buf[len++] = '[';
    for (int i = 0; i < ndim && i < KILN_MAX_DIMS; i++) {
        if (len >= KILN__SHAPE_STR - 24) {
            snprintf(buf + len, KILN__SHAPE_STR - len, ", ...");
            len += strlen(buf + len);
            break;
        }
        len += (size_t)snprintf(buf + len, KILN__SHAPE_STR - len, "%s%" PRId64,
                                i ? ", " : "", dims[i]);
    }
    snprintf(buf + len, KILN__SHAPE_STR - len, "]");
    return buf;
}

kiln_status kiln__refusal(char *buf, size_t len, const char *backend, size_t i,
                          const kiln_node *node, const char *why)
{
    char out[KILN__SHAPE_STR], a[KILN__SHAPE_STR] = "-", b[KILN__SHAPE_STR] = "-";
    kiln__shape_str(out, node->ndim, node->dims);
    if (node->src[0])
        kiln__shape_str(a, node->src[0]->ndim, node->src[0]->dims);
    if (node->src[1])
        kiln__shape_str(b, node->src[1]->ndim, node->src[1]->dims);
    snprintf(buf, len,
             "%s: node %zu (%s '%s') cannot run: %s (output %s, sources "
             "%s %s)",
             backend, i, kiln__op_name(node->op), node->name ? node->name : "", why, out,
             a, b);
    const kiln__op_def *d = kiln__op_def_of(node->op);
    return d && (d->flags & KILN__OP_DISPATCHED) ? KILN_ERR_SHAPE : KILN_ERR_INVALID_ARG;
}

/* ---- fusion ------------------------------------------------------------------ */

bool kiln__overlaps(const kiln_node *a, const kiln_node *b)
{
    if (!a->buffer || a->buffer != b->buffer || a->numel == 0 || b->numel == 0)
        return false;
    size_t a_end = a->offset + (size_t)a->numel * kiln__elem_size(a->dtype),
           b_end = b->offset + (size_t)b->numel * kiln__elem_size(b->dtype);
    return a->offset < b_end && b->offset < a_end;
}

bool kiln__same_storage(const kiln_node *a, const kiln_node *b)
{
    return a->buffer == b->buffer && a->offset == b->offset && a->numel == b->numel;
}

bool kiln__add_relu_fusable(const kiln_node *add, const kiln_node *relu)
{
    if (add->op != KILN_OP_ADD || relu->op != KILN_OP_RELU || relu->src[0] != add ||
        relu->numel != add->numel || add->numel == 0 || add->dtype != KILN_F32 ||
        relu->dtype != KILN_F32 || add->src[0]->dtype != KILN_F32 ||
        add->src[1]->dtype != KILN_F32)
        return false;
    for (int s = 0; s < 2; s++)
        if (kiln__overlaps(relu, add->src[s]) && !kiln__same_storage(relu, add->src[s]))
            return false;
    return true;
}
