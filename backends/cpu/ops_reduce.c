/* ops_reduce.c — SUM and MEAN over one axis or everything; MAX and ARGMAX
 * along the last axis.
 *
 * A reduction over axis k of src[0] sees the data as [outer, r, inner], with
 * outer the product of the dims before k and inner of those after; the output
 * is [outer, inner] whatever shape (keepdim or not) the node gives it. Sums
 * accumulate in double: a float sum of 10^6 terms loses digits. */
#include <math.h>

#include "cpu-impl.h"

/* ---- scalar kernels ------------------------------------------------------- */

static double cpu_sum_scalar(const float *x, size_t n, size_t stride)
{
    double s = 0.0;
    for (size_t i = 0; i < n; i++)
        s += x[i * stride];
    return s;
}

static size_t cpu_argmax_scalar(const float *x, size_t n)
{
    size_t best = 0;
    for (size_t i = 0; i < n; i++) {
        if (isnan(x[i]))
            return i;
        if (x[i] > x[best])
            best = i;
    }
    return best;
}

void cpu_reduce_kernels_scalar(cpu_kernels *k)
{
    k->sum    = cpu_sum_scalar;
    k->max    = cpu_row_max;
    k->argmax = cpu_argmax_scalar;
}

/* ---- SUM, MEAN ------------------------------------------------------------ */

/* outer, r, inner of the reduction the node asks for (axis -1: everything). */
static void cpu_reduce_extent(const kiln_node *node, int64_t *outer,
                              int64_t *r, int64_t *inner)
{
    const kiln_node *src = node->src[0];
    int axis = node->iparam[0];
    if (axis == -1) {
        *outer = 1;
        *r = src->numel;
        *inner = 1;
        return;
    }
    *outer = cpu_dims_product(src, 0, axis);
    *r = src->dims[axis];
    *inner = cpu_dims_product(src, axis + 1, src->ndim);
}

const char *cpu_check_reduce_axis(const kiln_node *node)
{
    int axis = node->iparam[0];
    int64_t outer, r, inner;
    if (axis != -1 && (axis < 0 || axis >= node->src[0]->ndim))
        return "the axis (iparam[0]) is neither -1 nor an axis of the input";
    cpu_reduce_extent(node, &outer, &r, &inner);
    if (node->numel != outer * inner)
        return "the output's number of elements is not the input's with the axis removed";
    return NULL;
}

kiln_status cpu_op_sum_mean(const cpu_device *dev, const kiln_node *node)
{
    int64_t outer, r, inner;
    cpu_reduce_extent(node, &outer, &r, &inner);
    const float *x = cpu_cf32(node->src[0]);
    float *out = cpu_f32(node);
    bool mean = node->op == KILN_OP_MEAN;

    for (int64_t o = 0; o < outer; o++) {
        for (int64_t j = 0; j < inner; j++) {
            double s = r > 0 ? dev->k.sum(x + o * r * inner + j, (size_t)r,
                                          (size_t)inner)
                             : 0.0;
            /* the mean of nothing is NaN, the sum 0 (kiln.h) */
            if (mean)
                s = r > 0 ? s / (double)r : NAN;
            out[o * inner + j] = (float)s;
        }
    }
    return KILN_OK;
}

/* ---- MAX, ARGMAX ---------------------------------------------------------- */

const char *cpu_check_reduce_last(const kiln_node *node)
{
    const kiln_node *src = node->src[0];
    int64_t rows = cpu_rows(src), cols = cpu_last_dim(src);
    if (node->numel != rows)
        return "the output's number of elements is not the input's rows";
    if (rows > 0 && cols == 0)
        return "the last axis is empty";
    if (node->op == KILN_OP_ARGMAX && cols > INT32_MAX)
        return "the last axis is too long for an i32 index";
    return NULL;
}

kiln_status cpu_op_max(const cpu_device *dev, const kiln_node *node)
{
    const kiln_node *src = node->src[0];
    int64_t rows = cpu_rows(src), cols = cpu_last_dim(src);
    const float *x = cpu_cf32(src);
    float *out = cpu_f32(node);
    for (int64_t i = 0; i < rows; i++)
        out[i] = dev->k.max(x + i * cols, (size_t)cols);
    return KILN_OK;
}

kiln_status cpu_op_argmax(const cpu_device *dev, const kiln_node *node)
{
    const kiln_node *src = node->src[0];
    int64_t rows = cpu_rows(src), cols = cpu_last_dim(src);
    const float *x = cpu_cf32(src);
    int32_t *out = cpu_data(node);
    for (int64_t i = 0; i < rows; i++)
        out[i] = (int32_t)dev->k.argmax(x + i * cols, (size_t)cols);
    return KILN_OK;
}
