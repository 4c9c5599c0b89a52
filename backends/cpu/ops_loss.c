/* ops_loss.c — MSE_LOSS and CROSS_ENTROPY (over the rows of the logits' last
 * axis), each reduced by the mean to a scalar, and CROSS_ENTROPY_GRAD. Both accumulate in double; the mean over no
 * elements (or no rows) is NaN, as torch's is. */
#include <math.h>

#include "cpu-impl.h"

/* ---- the portable kernels ------------------------------------------------------ */

static double cpu_logsumexp_scalar(const float *x, size_t n)
{
    double m = cpu_row_max(x, n), s = 0.0;
    for (size_t i = 0; i < n; i++)
        s += exp((double)x[i] - m);
    return m + log(s);
}

static double cpu_sum_sq_diff_scalar(const float *a, const float *b, size_t n)
{
    double s = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)a[i] - (double)b[i];
        s += d * d;
    }
    return s;
}

static void cpu_cross_entropy_grad_row_scalar(float *out, const float *x, size_t n,
                                              size_t label, float scale)
{
    cpu_softmax_row_scalar(out, x, n, false);
    out[label] -= 1.0f;
    for (size_t j = 0; j < n; j++)
        out[j] *= scale;
}

void cpu_loss_kernels_scalar(cpu_kernels *k)
{
    k->logsumexp              = cpu_logsumexp_scalar;
    k->sum_sq_diff            = cpu_sum_sq_diff_scalar;
    k->cross_entropy_grad_row = cpu_cross_entropy_grad_row_scalar;
}

/* ---- the ops ----------------------------------------------------------------------- */


/* Every label in [0, C), else an error naming the first row that is not. */
static kiln_status cpu_check_labels(const cpu_device *dev, const kiln_node *node,
                                    const int32_t *labels, int64_t N, int64_t C)
{
    for (int64_t i = 0; i < N; i++)
        if (labels[i] < 0 || labels[i] >= C)
            return dev->host->error(KILN_ERR_INVALID_ARG,
                                    "%s: label %d at row %lld is outside [0, %lld)",
                                    kiln__op_name(node->op), (int)labels[i], (long long)i,
                                    (long long)C);
    return KILN_OK;
}

kiln_status cpu_op_mse_loss(const cpu_device *dev, const kiln_node *node)
{
    int64_t      n    = node->src[0]->numel;
    const float *pred = cpu_cf32(node->src[0]), *target = cpu_cf32(node->src[1]);
    double       s = n > 0 ? dev->k.sum_sq_diff(pred, target, (size_t)n) : 0.0;
    *cpu_f32(node) = n > 0 ? (float)(s / (double)n) : NAN;
    return KILN_OK;
}


kiln_status cpu_op_cross_entropy(const cpu_device *dev, const kiln_node *node)
{
    const kiln_node *logits = node->src[0];
    int64_t          N = kiln__rows(logits), C = kiln__last_dim(logits);
    const float     *x      = cpu_cf32(logits);
    const int32_t   *labels = cpu_data(node->src[1]);
    double           s      = 0.0;
    kiln_status      st     = cpu_check_labels(dev, node, labels, N, C);
    if (st != KILN_OK)
        return st;
    for (int64_t i = 0; i < N; i++) {
        const float *row = x + i * C;
        s += dev->k.logsumexp(row, (size_t)C) - (double)row[labels[i]];
    }
    *cpu_f32(node) = N > 0 ? (float)(s / (double)N) : NAN;
    return KILN_OK;
}

/* ---- CROSS_ENTROPY_GRAD ------------------------------------------------------ */

/* Rows of CROSS_ENTROPY_GRAD. */
typedef struct cpu_ce_grad_job {
    const cpu_device *dev;
    const float      *x;      /* the logits                      */
    const int32_t    *labels; /* checked                         */
    float            *out;
    size_t            cols;
    float             scale;
} cpu_ce_grad_job;

static void cpu_cross_entropy_grad_range(void *arg, size_t lo, size_t hi)
{
    const cpu_ce_grad_job *j = arg;
    for (size_t r = lo; r < hi; r++)
        j->dev->k.cross_entropy_grad_row(j->out + r * j->cols, j->x + r * j->cols,
                                         j->cols, (size_t)j->labels[r], j->scale);
}

/* g * (softmax(logits) - one_hot(labels)) / N, N the rows of logits [..., C]
 * (every axis but the last). Every label is checked before
 * any row is written, so the rows can then go to threads. */
kiln_status cpu_op_cross_entropy_grad(const cpu_device *dev, const kiln_node *node)
{
    const kiln_node *logits = node->src[1];
    int64_t          N = kiln__rows(logits), C = kiln__last_dim(logits);
    const int32_t   *labels = cpu_data(node->src[2]);
    kiln_status      st     = cpu_check_labels(dev, node, labels, N, C);
    if (st != KILN_OK)
        return st;
    cpu_ce_grad_job job = {
        .dev    = dev,
        .x      = cpu_cf32(logits),
        .labels = labels,
        .out    = cpu_f32(node),
        .cols   = (size_t)C,
        .scale  = N > 0 ? (float)((double)*cpu_cf32(node->src[0]) / (double)N) : 0.0f,
    };
    cpu_parallel_for(dev, (size_t)N, 1, cpu_row_grain(job.cols),
                     cpu_cross_entropy_grad_range, &job);
    return KILN_OK;
}
