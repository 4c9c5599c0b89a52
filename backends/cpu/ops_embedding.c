/* ops_embedding.c — EMBEDDING (a row of the table per id) and its gradient
 * EMBEDDING_GRAD (the rows of g added up per id).
 *
 * Every id is checked before anything is written, so a bad one is an error
 * naming it (as CROSS_ENTROPY's labels are) and the loops after the check
 * never index outside the table. The gradient is split between threads by
 * vocabulary rows: each thread owns rows [lo, hi) of the output, zeroes them
 * and adds the positions whose id falls there, so no two threads write one
 * element and each element sums its positions in order, whatever the number
 * of threads. */
#include <string.h>

#include "cpu-impl.h"

/* Every id in [0, vocab), else an error naming the first position that is
 * not. */
static kiln_status cpu_check_ids(const cpu_device *dev, const kiln_node *node,
                                 const int32_t *ids, int64_t n, int64_t vocab)
{
    for (int64_t p = 0; p < n; p++)
        if (ids[p] < 0 || ids[p] >= vocab)
            return dev->host->error(KILN_ERR_INVALID_ARG,
                                    "%s: id %d at position %lld is outside [0, %lld)",
                                    kiln__op_name(node->op), (int)ids[p], (long long)p,
                                    (long long)vocab);
    return KILN_OK;
}

/* ---- EMBEDDING ------------------------------------------------------------- */

typedef struct cpu_embedding_job {
    const float   *table;
    const int32_t *ids; /* checked */
    float         *out;
    size_t         cols;
} cpu_embedding_job;

static void cpu_embedding_range(void *arg, size_t lo, size_t hi)
{
    const cpu_embedding_job *j = arg;
    for (size_t p = lo; p < hi; p++)
        memcpy(j->out + p * j->cols, j->table + (size_t)j->ids[p] * j->cols,
               j->cols * sizeof *j->out);
}

kiln_status cpu_op_embedding(const cpu_device *dev, const kiln_node *node)
{
    const kiln_node *table = node->src[0], *ids = node->src[1];
    kiln_status st = cpu_check_ids(dev, node, cpu_data(ids), ids->numel, table->dims[0]);
    if (st != KILN_OK || node->numel == 0)
        return st;
    cpu_embedding_job job = {
        .table = cpu_cf32(table),
        .ids   = cpu_data(ids),
        .out   = cpu_f32(node),
        .cols  = (size_t)table->dims[1],
    };
    cpu_parallel_for(dev, (size_t)ids->numel, 1, cpu_row_grain(job.cols),
                     cpu_embedding_range, &job);
    return KILN_OK;
}

/* ---- EMBEDDING_GRAD ---------------------------------------------------------- */

typedef struct cpu_embedding_grad_job {
    const float   *g;
    const int32_t *ids; /* checked */
    float         *out;
    size_t         positions, cols;
} cpu_embedding_grad_job;

/* Vocabulary rows [lo, hi) of the output. */
static void cpu_embedding_grad_range(void *arg, size_t lo, size_t hi)
{
    const cpu_embedding_grad_job *j = arg;
    memset(j->out + lo * j->cols, 0, (hi - lo) * j->cols * sizeof *j->out);
    for (size_t p = 0; p < j->positions; p++) {
        size_t v = (size_t)j->ids[p];
        if (v < lo || v >= hi)
            continue;
        float       *o = j->out + v * j->cols;
        const float *g = j->g + p * j->cols;
        for (size_t c = 0; c < j->cols; c++)
            o[c] += g[c];
    }
}

kiln_status cpu_op_embedding_grad(const cpu_device *dev, const kiln_node *node)
{
    const kiln_node *ids   = node->src[1];
    int64_t          vocab = node->dims[0];
    kiln_status      st    = cpu_check_ids(dev, node, cpu_data(ids), ids->numel, vocab);
    if (st != KILN_OK || node->numel == 0)
        return st;
    cpu_embedding_grad_job job = {
        .g         = cpu_cf32(node->src[0]),
        .ids       = cpu_data(ids),
        .out       = cpu_f32(node),
        .positions = (size_t)ids->numel,
        .cols      = (size_t)node->dims[1],
    };
    /* each thread reads every id and adds its share of g: split only when
     * g is large enough to pay for waking a worker */
    size_t work  = job.positions * job.cols;
    size_t grain = work < CPU_ELEMENTWISE_GRAIN ? (size_t)vocab : 1;
    cpu_parallel_for(dev, (size_t)vocab, 1, grain, cpu_embedding_grad_range, &job);
    return KILN_OK;
}
