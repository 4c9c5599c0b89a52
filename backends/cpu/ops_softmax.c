/* ops_softmax.c — SOFTMAX and LOG_SOFTMAX along the last axis, and their
 * gradients SOFTMAX_GRAD and LOG_SOFTMAX_GRAD (sums in double); the causal
 * (masked) softmax of attention and its gradient.
 *
 * Each row subtracts its maximum before exp, so exp never overflows and the
 * largest term is 1, which keeps the sum at least 1 (its log finite). A NaN in
 * a row makes the maximum NaN, and so the whole row NaN. */
#include <math.h>
#include <string.h>

#include "cpu-impl.h"

void cpu_softmax_row_scalar(float *out, const float *x, size_t n, bool as_log)
{
    if (n == 0)
        return;
    float  m = cpu_row_max(x, n);
    double s = 0.0;
    if (as_log) {
        for (size_t i = 0; i < n; i++)
            s += expf(x[i] - m);
        float log_s = (float)log(s);
        for (size_t i = 0; i < n; i++)
            out[i] = (x[i] - m) - log_s;
        return;
    }
    for (size_t i = 0; i < n; i++) {
        float e = expf(x[i] - m); /* read x[i] before out[i]: out may be x */
        out[i]  = e;
        s += e;
    }
    float inv = (float)(1.0 / s);
    for (size_t i = 0; i < n; i++)
        out[i] *= inv;
}

static void cpu_softmax_grad_row_scalar(float *out, const float *g, const float *y,
                                        size_t n, bool as_log)
{
    double s = 0.0;
    if (as_log) {
        for (size_t i = 0; i < n; i++)
            s += g[i];
        for (size_t i = 0; i < n; i++)
            out[i] = g[i] - expf(y[i]) * (float)s;
        return;
    }
    for (size_t i = 0; i < n; i++)
        s += (double)g[i] * (double)y[i];
    for (size_t i = 0; i < n; i++)
        out[i] = y[i] * (g[i] - (float)s);
}

void cpu_softmax_kernels_scalar(cpu_kernels *k)
{
    k->softmax_row      = cpu_softmax_row_scalar;
    k->softmax_grad_row = cpu_softmax_grad_row_scalar;
}


typedef struct cpu_softmax_job {
    const cpu_device *dev;
    const float      *x;
    float            *out;
    size_t            cols;
    bool              as_log;
} cpu_softmax_job;

static void cpu_softmax_range(void *arg, size_t lo, size_t hi)
{
    const cpu_softmax_job *j = arg;
    for (size_t i = lo; i < hi; i++)
        j->dev->k.softmax_row(j->out + i * j->cols, j->x + i * j->cols, j->cols,
                              j->as_log);
}

kiln_status cpu_op_softmax(const cpu_device *dev, const kiln_node *node)
{
    const kiln_node *src = node->src[0];
    cpu_softmax_job  job = {
         dev,
         cpu_cf32(src),
         cpu_f32(node),
         (size_t)kiln__last_dim(src),
         node->op == KILN_OP_LOG_SOFTMAX,
    };
    if (job.cols == 0)
        return KILN_OK; /* no elements at all */
    cpu_parallel_for(dev, (size_t)kiln__rows(src), 1, cpu_row_grain(job.cols),
                     cpu_softmax_range, &job);
    return KILN_OK;
}

/* ---- SOFTMAX_GRAD, LOG_SOFTMAX_GRAD ----------------------------------------- */

/* Rows of SOFTMAX_GRAD or LOG_SOFTMAX_GRAD. */
typedef struct cpu_softmax_grad_job {
    const cpu_device *dev;
    const float      *g;
    const float      *x; /* the softmax's output y          */
    float            *out;
    size_t            cols;
    bool              as_log;
} cpu_softmax_grad_job;

static void cpu_softmax_grad_range(void *arg, size_t lo, size_t hi)
{
    const cpu_softmax_grad_job *j = arg;
    for (size_t r = lo; r < hi; r++)
        j->dev->k.softmax_grad_row(j->out + r * j->cols, j->g + r * j->cols,
                                   j->x + r * j->cols, j->cols, j->as_log);
}

kiln_status cpu_op_softmax_grad(const cpu_device *dev, const kiln_node *node)
{
    const kiln_node     *ynode = node->src[1];
    cpu_softmax_grad_job job   = {
          .dev    = dev,
          .g      = cpu_cf32(node->src[0]),
          .x      = cpu_cf32(ynode),
          .out    = cpu_f32(node),
          .cols   = (size_t)kiln__last_dim(ynode),
          .as_log = node->op == KILN_OP_LOG_SOFTMAX_GRAD,
    };
    if (job.cols == 0)
        return KILN_OK; /* no elements at all */
    cpu_parallel_for(dev, (size_t)kiln__rows(ynode), 1, cpu_row_grain(job.cols),
                     cpu_softmax_grad_range, &job);
    return KILN_OK;
}

/* ---- CAUSAL_SOFTMAX, CAUSAL_SOFTMAX_GRAD --------------------------------------- */

/* Rows of [Tq, Tk] matrices (Tq = Tk without an offset); row r is row
 * r % Tq of its matrix and keeps its first min(Tk, r % Tq + 1 + offset)
 * columns (none when that is negative). The kept part goes through the
 * ISA's softmax (or softmax-gradient) row kernel and SCALE; the rest is
 * written 0, never read. */
typedef struct cpu_causal_job {
    const cpu_device *dev;
    const float      *g; /* the gradient (CAUSAL_SOFTMAX_GRAD only)       */
    const float      *x; /* the input, or y for the gradient              */
    float            *out;
    size_t            tq, tk;
    int64_t           offset;
    float             scale;
} cpu_causal_job;

static size_t cpu_causal_keep(const cpu_causal_job *j, size_t r)
{
    int64_t keep = (int64_t)(r % j->tq) + 1 + j->offset;
    return keep < 0 ? 0 : (size_t)keep > j->tk ? j->tk : (size_t)keep;
}

static void cpu_causal_softmax_range(void *arg, size_t lo, size_t hi)
{
    const cpu_causal_job *j = arg;
    for (size_t r = lo; r < hi; r++) {
        size_t       keep = cpu_causal_keep(j, r);
        float       *out  = j->out + r * j->tk;
        const float *x    = j->x + r * j->tk;
        if (keep) {
            j->dev->k.unary[CPU_SCALE](out, x, keep, j->scale);
            j->dev->k.softmax_row(out, out, keep, false);
        }
        memset(out + keep, 0, (j->tk - keep) * sizeof *out);
    }
}

static void cpu_causal_softmax_grad_range(void *arg, size_t lo, size_t hi)
{
    const cpu_causal_job *j = arg;
    for (size_t r = lo; r < hi; r++) {
        size_t keep = cpu_causal_keep(j, r);
        float *out  = j->out + r * j->tk;
        if (keep) {
            j->dev->k.softmax_grad_row(out, j->g + r * j->tk, j->x + r * j->tk, keep,
                                       false);
            j->dev->k.unary[CPU_SCALE](out, out, keep, j->scale);
        }
        memset(out + keep, 0, (j->tk - keep) * sizeof *out);
    }
}

kiln_status cpu_op_causal_softmax(const cpu_device *dev, const kiln_node *node)
{
    bool             grad   = node->op == KILN_OP_CAUSAL_SOFTMAX_GRAD;
    const kiln_node *offset = node->src[grad ? 2 : 1];
    cpu_causal_job   job    = {
             .dev    = dev,
             .g      = grad ? cpu_cf32(node->src[0]) : NULL,
             .x      = cpu_cf32(node->src[grad ? 1 : 0]),
             .out    = cpu_f32(node),
             .tq     = (size_t)node->dims[node->ndim - 2],
             .tk     = (size_t)kiln__last_dim(node),
             .offset = offset ? cpu_ci32(offset)[0] : 0,
             .scale  = node->fparam[0],
    };
    if (node->numel == 0)
        return KILN_OK;
    cpu_parallel_for(dev, (size_t)kiln__rows(node), 1, cpu_row_grain(job.tk),
                     grad ? cpu_causal_softmax_grad_range : cpu_causal_softmax_range,
                     &job);
    return KILN_OK;
}
