/* ops_attention.c — CAUSAL_ATTENTION and its gradient, fused.
 *
 * Each (batch, head) pair is one unit of work, on one thread. Its queries go
 * in blocks of CPU_ATTN_ROWS rows; a block of rows [i0, i1) needs the keys
 * and values of positions [0, i1) only, so the products skip the masked
 * part of the [T, T] matrix but for the block's own diagonal square. The
 * block's scores live in a per-thread scratch of CPU_ATTN_ROWS x T floats,
 * never in memory the size of T x T per head. q, k and v are read where the
 * fused projection put them (row stride 3C) and the output is written in
 * [B, T, C]: no copies into head-major order and back.
 *
 * The products are cpu_gemm's (inside a job, on the calling thread); the
 * softmax and its gradient are the ISA's row kernels. The gradient
 * recomputes a block's softmax from q and k, then
 *   dP = dY V^T,  dS = scale * P * (dP - rowsum(P * dP)),
 *   dQ = dS K,    dK += dS^T Q,    dV += P^T dY
 * over the keys [0, i1); dK and dV of a head gather every block's share,
 * which is why a head stays on one thread. */
#include <stdlib.h>
#include <string.h>

#include "cpu-impl.h"

#define CPU_ATTN_ROWS 32

typedef struct cpu_attn_job {
    const cpu_device *dev;
    const float      *qkv, *g; /* g: the gradient of the output (backward) */
    float            *out;
    size_t            B, T, C, H, D;
    float             scale;
    float            *scratch; /* per thread: 2 x CPU_ATTN_ROWS x T      */
} cpu_attn_job;

static float *cpu_attn_scratch(const cpu_attn_job *j)
{
    int tid = cpu_pool_tid(j->dev->pool);
    return j->scratch + (size_t)(tid < 0 ? 0 : tid) * 2 * CPU_ATTN_ROWS * j->T;
}

/* The block's causal softmax in p (ld T): rows [i0, i0 + rows) against keys
 * [0, n); row i keeps keys j <= i, the others are 0. */
static void cpu_attn_probs(const cpu_attn_job *j, const float *q, const float *k,
                           size_t i0, size_t rows, float *p)
{
    size_t        ld = 3 * j->C, n = i0 + rows;
    cpu_gemm_args s = {.M   = rows,
                       .N   = n,
                       .K   = j->D,
                       .a   = q + i0 * ld,
                       .lda = ld,
                       .b   = k,
                       .ldb = ld,
                       .tb  = true,
                       .c   = p,
                       .ldc = j->T};
    cpu_gemm(j->dev, &s);
    for (size_t r = 0; r < rows; r++) {
        float *row  = p + r * j->T;
        size_t keep = i0 + r + 1;
        j->dev->k.unary[CPU_SCALE](row, row, keep, j->scale);
        j->dev->k.softmax_row(row, row, keep, false);
        memset(row + keep, 0, (n - keep) * sizeof *row);
    }
}

/* Units [lo, hi) of (batch, head) of the forward pass. */
static void cpu_attn_range(void *arg, size_t lo, size_t hi)
{
    const cpu_attn_job *j  = arg;
    float              *p  = cpu_attn_scratch(j);
    size_t              ld = 3 * j->C;
    for (size_t u = lo; u < hi; u++) {
        size_t       b = u / j->H, h = u % j->H;
        const float *q = j->qkv + b * j->T * ld + h * j->D, *k = q + j->C,
                    *v = q + 2 * j->C;
        float *y       = j->out + b * j->T * j->C + h * j->D;
        for (size_t i0 = 0; i0 < j->T; i0 += CPU_ATTN_ROWS) {
            size_t rows = j->T - i0 < CPU_ATTN_ROWS ? j->T - i0 : CPU_ATTN_ROWS;
            cpu_attn_probs(j, q, k, i0, rows, p);
            cpu_gemm_args o = {.M   = rows,
                               .N   = j->D,
                               .K   = i0 + rows,
                               .a   = p,
                               .lda = j->T,
                               .b   = v,
                               .ldb = ld,
                               .c   = y + i0 * j->C,
                               .ldc = j->C};
            cpu_gemm(j->dev, &o);
        }
    }
}

/* Units [lo, hi) of (batch, head) of the gradient. */
static void cpu_attn_grad_range(void *arg, size_t lo, size_t hi)
{
    const cpu_attn_job *j = arg;
    float              *p = cpu_attn_scratch(j), *dp = p + CPU_ATTN_ROWS * j->T;
    size_t              ld = 3 * j->C;
    for (size_t u = lo; u < hi; u++) {
        size_t       b = u / j->H, h = u % j->H;
        const float *q = j->qkv + b * j->T * ld + h * j->D, *k = q + j->C,
                    *v  = q + 2 * j->C;
        const float *gy = j->g + b * j->T * j->C + h * j->D;
        float       *dq = j->out + b * j->T * ld + h * j->D, *dk = dq + j->C,
              *dv = dq + 2 * j->C;
        for (size_t t = 0; t < j->T; t++) { /* dK and dV gather from every block */
            memset(dk + t * ld, 0, j->D * sizeof *dk);
            memset(dv + t * ld, 0, j->D * sizeof *dv);
        }
        for (size_t i0 = 0; i0 < j->T; i0 += CPU_ATTN_ROWS) {
            size_t rows = j->T - i0 < CPU_ATTN_ROWS ? j->T - i0 : CPU_ATTN_ROWS;
            size_t n    = i0 + rows;
            cpu_attn_probs(j, q, k, i0, rows, p);
            cpu_gemm_args a = {.M   = rows,
                               .N   = n,
                               .K   = j->D,
                               .a   = gy + i0 * j->C,
                               .lda = j->C,
                               .b   = v,
                               .ldb = ld,
                               .tb  = true,
                               .c   = dp,
                               .ldc = j->T};
            cpu_gemm(j->dev, &a); /* dP = dY V^T */
            for (size_t r = 0; r < rows; r++) {
                float *row  = dp + r * j->T;
                size_t keep = i0 + r + 1;
                j->dev->k.softmax_grad_row(row, row, p + r * j->T, keep, false);
                j->dev->k.unary[CPU_SCALE](row, row, keep, j->scale);
                memset(row + keep, 0, (n - keep) * sizeof *row);
            }
            cpu_gemm_args gq = {.M   = rows,
                                .N   = j->D,
                                .K   = n,
                                .a   = dp,
                                .lda = j->T,
                                .b   = k,
                                .ldb = ld,
                                .c   = dq + i0 * ld,
                                .ldc = ld};
            cpu_gemm(j->dev, &gq); /* dQ = dS K */
            cpu_gemm_args gk = {.M          = n,
                                .N          = j->D,
                                .K          = rows,
                                .a          = dp,
                                .lda        = j->T,
                                .ta         = true,
                                .b          = q + i0 * ld,
                                .ldb        = ld,
                                .c          = dk,
                                .ldc        = ld,
                                .accumulate = true};
            cpu_gemm(j->dev, &gk); /* dK += dS^T Q */
            cpu_gemm_args gv = {.M          = n,
                                .N          = j->D,
                                .K          = rows,
                                .a          = p,
                                .lda        = j->T,
                                .ta         = true,
                                .b          = gy + i0 * j->C,
                                .ldb        = j->C,
                                .c          = dv,
                                .ldc        = ld,
                                .accumulate = true};
            cpu_gemm(j->dev, &gv); /* dV += P^T dY */
        }
    }
}

kiln_status cpu_op_causal_attention(const cpu_device *dev, const kiln_node *node)
{
    bool             grad = node->op == KILN_OP_CAUSAL_ATTENTION_GRAD;
    const kiln_node *qkv  = node->src[grad ? 1 : 0];
    cpu_attn_job     job  = {
             .dev   = dev,
             .qkv   = cpu_cf32(qkv),
             .g     = grad ? cpu_cf32(node->src[0]) : NULL,
             .out   = cpu_f32(node),
             .B     = (size_t)qkv->dims[0],
             .T     = (size_t)qkv->dims[1],
             .C     = (size_t)qkv->dims[2] / 3,
             .H     = (size_t)node->iparam[0],
             .scale = node->fparam[0],
    };
    job.D = job.C / job.H;
    if (node->numel == 0)
        return KILN_OK;
    size_t nt    = (size_t)cpu_pool_size(dev->pool);
    size_t bytes = nt * 2 * CPU_ATTN_ROWS * job.T * sizeof *job.scratch;
    job.scratch  = malloc(bytes);
    if (!job.scratch)
        return dev->host->error(KILN_ERR_NO_MEMORY, "%s: cannot allocate %zu bytes",
                                kiln__op_name(node->op), bytes);
    cpu_parallel_for(dev, job.B * job.H, 1, 1,
                     grad ? cpu_attn_grad_range : cpu_attn_range, &job);
    free(job.scratch);
    return KILN_OK;
}
