/* ops_norm.c — LAYER_NORM along the last axis, and its gradients
 * LAYER_NORM_GRAD (for x) and LAYER_NORM_GRAD_WEIGHT (for the weight).
 *
 * A row's statistics are taken in two passes in double: the mean, then the
 * mean square of x - mean. One pass (E[x^2] - E[x]^2) would cancel for rows
 * far from 0, and double costs little beside the memory traffic. The
 * gradients recompute the statistics from x rather than keep them from the
 * forward pass: a row is in cache by then, and no state crosses nodes. */
#include <math.h>
#include <stdlib.h>

#include "cpu-impl.h"

/* The mean of x[0..n) (n > 0) and 1 / sqrt(var + eps), var the biased
 * variance. */
static void cpu_norm_stats(const float *x, size_t n, float eps, double *mean,
                           double *rstd)
{
    double s = 0.0;
    for (size_t i = 0; i < n; i++)
        s += x[i];
    double m = s / (double)n, v = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)x[i] - m;
        v += d * d;
    }
    *mean = m;
    *rstd = 1.0 / sqrt(v / (double)n + (double)eps);
}

static void cpu_layer_norm_row_scalar(float *out, const float *x, const float *w,
                                      const float *b, size_t n, float eps)
{
    double m, r;
    cpu_norm_stats(x, n, eps, &m, &r);
    for (size_t i = 0; i < n; i++)
        out[i] = (float)(((double)x[i] - m) * r * (double)w[i] +
                         (b ? (double)b[i] : 0.0));
}

/* dx = rstd * (gw - mean(gw) - xhat * mean(gw * xhat)), gw = g * w. */
static void cpu_layer_norm_grad_row_scalar(float *out, const float *g, const float *x,
                                           const float *w, size_t n, float eps)
{
    double m, r, sg = 0.0, sgx = 0.0;
    cpu_norm_stats(x, n, eps, &m, &r);
    for (size_t i = 0; i < n; i++) {
        double gw = (double)g[i] * (double)w[i];
        sg += gw;
        sgx += gw * ((double)x[i] - m) * r;
    }
    double a = sg / (double)n, c = sgx / (double)n;
    for (size_t i = 0; i < n; i++) {
        double xhat = ((double)x[i] - m) * r;
        out[i]      = (float)(r * ((double)g[i] * (double)w[i] - a - xhat * c));
    }
}

static void cpu_layer_norm_weight_row_scalar(double *acc, const float *g, const float *x,
                                             size_t n, float eps)
{
    double m, r;
    cpu_norm_stats(x, n, eps, &m, &r);
    for (size_t c = 0; c < n; c++)
        acc[c] += (double)g[c] * (((double)x[c] - m) * r);
}

void cpu_norm_kernels_scalar(cpu_kernels *k)
{
    k->layer_norm_row        = cpu_layer_norm_row_scalar;
    k->layer_norm_grad_row   = cpu_layer_norm_grad_row_scalar;
    k->layer_norm_weight_row = cpu_layer_norm_weight_row_scalar;
}

/* ---- LAYER_NORM, LAYER_NORM_GRAD: a row at a time ------------------------------ */

typedef struct cpu_norm_job {
    const cpu_device *dev;
    const float      *g; /* NULL for LAYER_NORM */
    const float      *x, *w, *b;
    float            *out;
    size_t            cols;
    float             eps;
} cpu_norm_job;

static void cpu_norm_range(void *arg, size_t lo, size_t hi)
{
    const cpu_norm_job *j = arg;
    size_t              n = j->cols;
    for (size_t r = lo; r < hi; r++) {
        if (j->g)
            j->dev->k.layer_norm_grad_row(j->out + r * n, j->g + r * n, j->x + r * n,
                                          j->w, n, j->eps);
        else
            j->dev->k.layer_norm_row(j->out + r * n, j->x + r * n, j->w, j->b, n, j->eps);
    }
}

kiln_status cpu_op_layer_norm(const cpu_device *dev, const kiln_node *node)
{
    bool             grad = node->op == KILN_OP_LAYER_NORM_GRAD;
    const kiln_node *x    = node->src[grad ? 1 : 0];
    const kiln_node *b    = grad ? NULL : node->src[2];
    cpu_norm_job     job  = {
             .dev  = dev,
             .g    = grad ? cpu_cf32(node->src[0]) : NULL,
             .x    = cpu_cf32(x),
             .w    = cpu_cf32(node->src[grad ? 2 : 1]),
             .b    = b ? cpu_cf32(b) : NULL,
             .out  = cpu_f32(node),
             .cols = (size_t)kiln__last_dim(x),
             .eps  = node->fparam[0],
    };
    cpu_parallel_for(dev, (size_t)kiln__rows(x), 1, cpu_row_grain(job.cols),
                     cpu_norm_range, &job);
    return KILN_OK;
}

/* ---- LAYER_NORM_GRAD_WEIGHT: a sum over rows ---------------------------------------- */

/* Each thread adds g * xhat over its share of the rows into acc + tid * cols
 * (in double); the shares are added after. The rows are the long side in a
 * transformer (batch x time against the width), so they are what is cut. */
typedef struct cpu_norm_weight_job {
    const cpu_device *dev;
    const float      *g, *x;
    double           *acc;
    size_t            rows, cols;
    float             eps;
} cpu_norm_weight_job;

static void cpu_norm_weight_task(void *arg, int tid, int nt)
{
    const cpu_norm_weight_job *j   = arg;
    size_t                     n   = j->cols, lo, hi;
    double                    *acc = j->acc + (size_t)tid * n;
    cpu_split(j->rows, 1, tid, nt, &lo, &hi);
    for (size_t r = lo; r < hi; r++)
        j->dev->k.layer_norm_weight_row(acc, j->g + r * n, j->x + r * n, n, j->eps);
}

kiln_status cpu_op_layer_norm_grad_weight(const cpu_device *dev, const kiln_node *node)
{
    const kiln_node    *x   = node->src[1];
    cpu_norm_weight_job job = {
        .dev  = dev,
        .g    = cpu_cf32(node->src[0]),
        .x    = cpu_cf32(x),
        .rows = (size_t)kiln__rows(x),
        .cols = (size_t)kiln__last_dim(x),
        .eps  = node->fparam[0],
    };
    size_t grain = cpu_row_grain(job.cols), chunks = job.rows / (grain ? grain : 1);
    int    nt = cpu_pool_size(dev->pool);
    if ((size_t)nt > chunks)
        nt = chunks > 0 ? (int)chunks : 1;
    size_t bytes = (size_t)nt * job.cols * sizeof *job.acc;
    /* zeroed here: a pool already in a job runs the task on one thread */
    job.acc = calloc(bytes ? bytes : 1, 1);
    if (!job.acc)
        return dev->host->error(KILN_ERR_NO_MEMORY, "%s: cannot allocate %zu bytes",
                                kiln__op_name(node->op), bytes);
    cpu_pool_run(dev->pool, nt, cpu_norm_weight_task, &job);
    float *out = cpu_f32(node);
    for (size_t c = 0; c < job.cols; c++) {
        double s = 0.0;
        for (int t = 0; t < nt; t++)
            s += job.acc[(size_t)t * job.cols + c];
        out[c] = (float)s;
    }
    free(job.acc);
    return KILN_OK;
}
