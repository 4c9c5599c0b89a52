/* ops_reduce.c — SUM and MEAN over one axis or everything; MAX and ARGMAX
 * along the last axis; the gradients of reductions: SUM_TO (the sum over
 * what a binary op broadcast), EXPAND (SUM's and MEAN's) and MAX_GRAD.
 *
 * A reduction over axis k of src[0] sees the data as [outer, r, inner], with
 * outer the product of the dims before k and inner of those after; the output
 * is [outer, inner] whatever shape (keepdim or not) the node gives it. Sums
 * accumulate in double: a float sum of 10^6 terms loses digits. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cpu-impl.h"

/* ---- scalar kernels ------------------------------------------------------- */

static double cpu_sum_scalar(const float *x, size_t n, size_t stride)
{
    double s = 0.0;
    for (size_t i = 0; i < n; i++)
        s += x[i * stride];
    return s;
}

/* acc[j] += x[j] */
static void cpu_sum_rows_scalar(double *acc, const float *x, size_t n)
{
    for (size_t j = 0; j < n; j++)
        acc[j] += x[j];
}

static void cpu_fill_scalar(float *out, float v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        out[i] = v;
}

void cpu_reduce_kernels_scalar(cpu_kernels *k)
{
    k->sum      = cpu_sum_scalar;
    k->sum_rows = cpu_sum_rows_scalar;
    k->max      = cpu_row_max;
    k->argmax   = cpu_row_argmax;
    k->fill     = cpu_fill_scalar;
}

/* ---- SUM, MEAN ------------------------------------------------------------ */


/* Columns of a reduction over a leading axis summed at a time, in doubles
 * on the stack. */
#define CPU_SUM_COLS 512

typedef struct cpu_reduce_job {
    const cpu_device *dev;
    const float      *x;
    float            *out;
    size_t            outer, r, inner, chunks; /* chunks of columns per outer */
    bool              mean;
    double           *cols;                     /* nt x inner, see below        */
    double            partial[CPU_MAX_THREADS]; /* one reduction over everything */
} cpu_reduce_job;

static float cpu_reduce_result(const cpu_reduce_job *j, double s)
{
    /* the mean of nothing is NaN, the sum 0 (kiln.h) */
    if (j->mean)
        s = j->r > 0 ? s / (double)j->r : NAN;
    return (float)s;
}

/* Units [lo, hi) of (outer, column chunk): with inner = 1 a unit is a row
 * summed contiguously; otherwise CPU_SUM_COLS columns accumulated row by row,
 * which reads x in order where a strided sum per column would not. */
static void cpu_reduce_range(void *arg, size_t lo, size_t hi)
{
    const cpu_reduce_job *j = arg;
    double                acc[CPU_SUM_COLS];
    for (size_t u = lo; u < hi; u++) {
        size_t       o = u / j->chunks, j0 = (u % j->chunks) * CPU_SUM_COLS;
        const float *x = j->x + o * j->r * j->inner;
        if (j->inner == 1) {
            j->out[o] = cpu_reduce_result(j, j->r ? j->dev->k.sum(x, j->r, 1) : 0.0);
            continue;
        }
        size_t len = j->inner - j0 < CPU_SUM_COLS ? j->inner - j0 : CPU_SUM_COLS;
        for (size_t c = 0; c < len; c++)
            acc[c] = 0.0;
        for (size_t i = 0; i < j->r; i++)
            j->dev->k.sum_rows(acc, x + i * j->inner + j0, len);
        for (size_t c = 0; c < len; c++)
            j->out[o * j->inner + j0 + c] = cpu_reduce_result(j, acc[c]);
    }
}

/* A sum over everything: each thread sums its part into partial[tid]. */
static void cpu_reduce_all_task(void *arg, int tid, int nt)
{
    cpu_reduce_job *j = arg;
    size_t          lo, hi;
    cpu_split(j->r, 16, tid, nt, &lo, &hi);
    j->partial[tid] = lo < hi ? j->dev->k.sum(j->x + lo, hi - lo, 1) : 0.0;
}

/* One output row over a long axis (outer = 1, as a sum over axis 0 of
 * [R, C]): each thread sums its share of the R rows into cols + tid * inner,
 * whole rows at a time, and the shares are added after. Cutting the columns
 * instead would leave one or two pieces for all the threads. */
static void cpu_reduce_cols_task(void *arg, int tid, int nt)
{
    cpu_reduce_job *j = arg;
    size_t          lo, hi;
    double         *acc = j->cols + (size_t)tid * j->inner;
    cpu_split(j->r, 1, tid, nt, &lo, &hi);
    for (size_t c = 0; c < j->inner; c++)
        acc[c] = 0.0;
    for (size_t i = lo; i < hi; i++)
        j->dev->k.sum_rows(acc, j->x + i * j->inner, j->inner);
}

static bool cpu_reduce_by_rows(const cpu_device *dev, cpu_reduce_job *j)
{
    int nt = cpu_pool_size(dev->pool);
    if (nt < 2 || j->outer != 1 || j->inner < 2 || j->inner > ((size_t)1 << 16) ||
        j->r < (size_t)nt || j->r * j->inner < 2 * CPU_ELEMENTWISE_GRAIN)
        return false;
    j->cols = malloc((size_t)nt * j->inner * sizeof *j->cols);
    if (!j->cols)
        return false; /* the column-chunk way needs no memory */
    cpu_pool_run(dev->pool, nt, cpu_reduce_cols_task, j);
    for (size_t c = 0; c < j->inner; c++) {
        double s = 0.0;
        for (int t = 0; t < nt; t++)
            s += j->cols[(size_t)t * j->inner + c];
        j->out[c] = cpu_reduce_result(j, s);
    }
    free(j->cols);
    return true;
}

/* x seen as [outer, r, inner] summed (or averaged) over r into out [outer,
 * inner]: one thread per share of a long single reduction, per share of
 * rows for one output row, else per chunk of columns. */
static kiln_status cpu_reduce(const cpu_device *dev, const kiln_node *node,
                              const float *x, float *out, int64_t outer, int64_t r,
                              int64_t inner, bool mean)
{
    cpu_reduce_job *job = malloc(sizeof *job);
    if (!job)
        return dev->host->error(KILN_ERR_NO_MEMORY, "%s: cannot allocate %zu bytes",
                                kiln__op_name(node->op), sizeof *job);
    job->dev    = dev;
    job->x      = x;
    job->out    = out;
    job->outer  = (size_t)outer;
    job->r      = (size_t)r;
    job->inner  = (size_t)inner;
    job->chunks = (job->inner + CPU_SUM_COLS - 1) / CPU_SUM_COLS;
    job->mean   = mean;

    if (outer == 1 && inner == 1) {
        int nt = (int)(job->r / CPU_ELEMENTWISE_GRAIN);
        nt = nt < 1 ? 1 : nt > cpu_pool_size(dev->pool) ? cpu_pool_size(dev->pool) : nt;
        for (int t = 0; t < nt; t++)
            job->partial[t] = 0.0;
        cpu_pool_run(dev->pool, nt, cpu_reduce_all_task, job);
        double s = 0.0;
        for (int t = 0; t < nt; t++)
            s += job->partial[t];
        job->out[0] = cpu_reduce_result(job, s);
    } else if (outer > 0 && inner > 0 && !cpu_reduce_by_rows(dev, job)) {
        size_t per_unit = job->r *
                          (job->inner < CPU_SUM_COLS ? job->inner : CPU_SUM_COLS);
        size_t grain = per_unit >= CPU_ELEMENTWISE_GRAIN
                           ? 1
                           : CPU_ELEMENTWISE_GRAIN / (per_unit ? per_unit : 1);
        cpu_parallel_for(dev, job->outer * job->chunks, 1, grain, cpu_reduce_range, job);
    }
    free(job);
    return KILN_OK;
}

kiln_status cpu_op_sum_mean(const cpu_device *dev, const kiln_node *node)
{
    int64_t outer, r, inner;
    kiln__axis_extent(node->src[0], node->iparam[0], &outer, &r, &inner);
    return cpu_reduce(dev, node, cpu_cf32(node->src[0]), cpu_f32(node), outer, r, inner,
                      node->op == KILN_OP_MEAN);
}

/* ---- MAX, ARGMAX ---------------------------------------------------------- */


/* Rows [lo, hi) of MAX or ARGMAX. */
typedef struct cpu_rows_job {
    const cpu_device *dev;
    const kiln_node  *node;
    size_t            cols;
} cpu_rows_job;

static void cpu_max_range(void *arg, size_t lo, size_t hi)
{
    const cpu_rows_job *j = arg;
    const float        *x = cpu_cf32(j->node->src[0]);
    if (j->node->op == KILN_OP_ARGMAX) {
        int32_t *out = cpu_data(j->node);
        for (size_t i = lo; i < hi; i++)
            out[i] = (int32_t)j->dev->k.argmax(x + i * j->cols, j->cols);
    } else {
        float *out = cpu_f32(j->node);
        for (size_t i = lo; i < hi; i++)
            out[i] = j->dev->k.max(x + i * j->cols, j->cols);
    }
}

/* Rows per thread so that each has CPU_ELEMENTWISE_GRAIN elements or more. */
size_t cpu_row_grain(size_t cols)
{
    return cols >= CPU_ELEMENTWISE_GRAIN ? 1 : CPU_ELEMENTWISE_GRAIN / (cols ? cols : 1);
}

kiln_status cpu_op_max(const cpu_device *dev, const kiln_node *node)
{
    const kiln_node *src = node->src[0];
    cpu_rows_job     job = {dev, node, (size_t)kiln__last_dim(src)};
    if (job.cols > 0)
        cpu_parallel_for(dev, (size_t)kiln__rows(src), 1, cpu_row_grain(job.cols),
                         cpu_max_range, &job);
    return KILN_OK;
}

kiln_status cpu_op_argmax(const cpu_device *dev, const kiln_node *node)
{
    return cpu_op_max(dev, node);
}

/* ---- SUM_TO, EXPAND, MAX_GRAD: the gradients of reductions ------------------ */

/* out[j] sums x[i] over i % n == j: x as [repeats, n] summed over its rows
 * (a bias's gradient), by the threads and the vector kernels of SUM. */
kiln_status cpu_op_sum_to(const cpu_device *dev, const kiln_node *node)
{
    int64_t n = node->numel, repeats = n ? node->src[0]->numel / n : 0;
    return cpu_reduce(dev, node, cpu_cf32(node->src[0]), cpu_f32(node), 1, repeats, n,
                      false);
}


typedef struct cpu_expand_job {
    const cpu_device *dev;
    const float      *x;
    float            *out;
    size_t            r, inner;
} cpu_expand_job;

/* Elements [lo, hi) of the output [outer, r, inner], in runs: with r = 1 the
 * output is x; with inner = 1 each x[o] fills r elements; else each row of
 * inner elements is a copy of one of x's. */
static void cpu_expand_range(void *arg, size_t lo, size_t hi)
{
    const cpu_expand_job *j = arg;
    if (j->r == 1) {
        memcpy(j->out + lo, j->x + lo, (hi - lo) * sizeof *j->out);
        return;
    }
    for (size_t i = lo; i < hi;) {
        size_t row = i / j->inner, at = i % j->inner;
        size_t len = j->inner == 1 ? j->r - row % j->r : j->inner - at;
        len        = len < hi - i ? len : hi - i;
        if (j->inner == 1)
            j->dev->k.fill(j->out + i, j->x[row / j->r], len);
        else
            memcpy(j->out + i, j->x + row / j->r * j->inner + at, len * sizeof *j->out);
        i += len;
    }
}

kiln_status cpu_op_expand(const cpu_device *dev, const kiln_node *node)
{
    int64_t outer, r, inner;
    kiln__axis_extent(node, node->iparam[0], &outer, &r, &inner);
    cpu_expand_job job = {dev, cpu_cf32(node->src[0]), cpu_f32(node), (size_t)r,
                          (size_t)inner};
    cpu_parallel_for(dev, (size_t)node->numel, 16, CPU_ELEMENTWISE_GRAIN,
                     cpu_expand_range, &job);
    return KILN_OK;
}

typedef struct cpu_max_grad_job {
    const cpu_device *dev;
    const float      *g, *x;
    float            *out;
    size_t            cols;
} cpu_max_grad_job;

/* Rows [lo, hi): each row's gradient at its (first) maximum, 0 elsewhere. */
static void cpu_max_grad_range(void *arg, size_t lo, size_t hi)
{
    const cpu_max_grad_job *j = arg;
    for (size_t r = lo; r < hi; r++) {
        float *row = j->out + r * j->cols;
        size_t at  = j->dev->k.argmax(j->x + r * j->cols, j->cols);
        float  g   = j->g[r];
        memset(row, 0, j->cols * sizeof *row);
        row[at] = g;
    }
}

/* Rows split between the threads like MAX's (argmax reads x, the row of out
 * is written after). */
kiln_status cpu_op_max_grad(const cpu_device *dev, const kiln_node *node)
{
    const kiln_node *src  = node->src[1];
    size_t           rows = (size_t)kiln__rows(src), cols = (size_t)kiln__last_dim(src);
    cpu_max_grad_job job  = {dev, cpu_cf32(node->src[0]), cpu_cf32(src), cpu_f32(node),
                             cols};
    if (cols > 0)
        cpu_parallel_for(dev, rows, 1, cpu_row_grain(cols), cpu_max_grad_range, &job);
    return KILN_OK;
}
