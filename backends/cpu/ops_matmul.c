/* ops_matmul.c — MATMUL: the packed GEMM of gemm.c on the device's threads,
 * once per batch entry for a 3-D or 4-D product. The other GEMM-shaped ops
 * (conv2d and its gradients) call cpu_gemm too.
 *
 * A batch of small products (attention: [B*H] of [T, D] @ [D, T]) is split
 * between threads by whole entries, each product on one thread: a product
 * too small for cpu_gemm to thread would otherwise run on one thread while
 * the others wait. A batch of large products leaves the threading to
 * cpu_gemm, which splits each product. */
#include <stdlib.h>

#include "cpu-impl.h"

void cpu_matmul_kernels_scalar(cpu_kernels *k)
{
    k->gemm = &cpu_gemm_portable;
}

/* ---- MATMUL --------------------------------------------------------------- */

/* Below this many flops a product gains nothing from a second thread inside
 * it (cpu_gemm keeps it on one), so a batch of them is split by entries. */
#define CPU_MATMUL_ENTRY_FLOPS 3000000.0

/* 16-bit operands of a narrow product (one row, or fewer columns than the
 * register tile) of at most this many elements together are widened whole
 * before it, so that it takes the f32 paths for such shapes (gemv,
 * small_n), which read unpacked operands; the others are widened block by
 * block as they are packed, which costs less than a pass over both. */
#define CPU_MATMUL_WIDEN_WHOLE ((size_t)1 << 18)

/* One batch entry's GEMM, with the entry's strides in elements. */
typedef struct cpu_bmm {
    const cpu_device *dev;
    cpu_gemm_args     g; /* entry 0 */
    size_t            batch, sa, sb, sc;
} cpu_bmm;

static void cpu_bmm_entry(const cpu_bmm *job, size_t e)
{
    cpu_gemm_args g = job->g;
    if (job->sa) /* a and b may have no data, when K = 0 */
        g.a += e * job->sa;
    if (job->sb)
        g.b += e * job->sb;
    if (g.ah)
        g.ah += e * job->sa;
    if (g.bh)
        g.bh += e * job->sb;
    g.c += e * job->sc;
    cpu_gemm(job->dev, &g); /* inside a job: on this thread alone */
}

/* Entries [lo, hi). */
static void cpu_bmm_range(void *arg, size_t lo, size_t hi)
{
    for (size_t e = lo; e < hi; e++)
        cpu_bmm_entry(arg, e);
}

kiln_status cpu_op_matmul(const cpu_device *dev, const kiln_node *node)
{
    const kiln_node *a = node->src[0], *b = node->src[1];
    int              r  = node->ndim - 2;
    bool             ta = node->iparam[0] != 0, tb = node->iparam[1] != 0;
    size_t           M = (size_t)node->dims[r], N = (size_t)node->dims[r + 1];
    size_t           K = (size_t)a->dims[r + (ta ? 0 : 1)];
    if (node->numel == 0)
        return KILN_OK;
    /* 16-bit operands are widened block by block as they are packed; a
     * 16-bit product is computed in f32 and rounded once at the end */
    bool   ha = kiln__is_half(a->dtype), hb = kiln__is_half(b->dtype);
    bool   hc = kiln__is_half(node->dtype);
    float *c  = hc ? malloc((size_t)node->numel * sizeof(float)) : cpu_f32(node);
    float *wa = NULL, *wb = NULL; /* small 16-bit operands, widened whole */
    bool narrow = M == 1 || N < dev->k.gemm->nr;
    if ((ha || hb) && narrow && (size_t)(a->numel + b->numel) <= CPU_MATMUL_WIDEN_WHOLE) {
        wa = ha ? malloc((size_t)a->numel * sizeof(float) + 4) : NULL;
        wb = hb ? malloc((size_t)b->numel * sizeof(float) + 4) : NULL;
        if ((ha && !wa) || (hb && !wb)) {
            free(wa);
            free(wb);
            wa = wb = NULL; /* block by block, then */
        } else {
            if (wa)
                cpu_convert(dev, wa, KILN_F32, cpu_data(a), a->dtype, (size_t)a->numel);
            if (wb)
                cpu_convert(dev, wb, KILN_F32, cpu_data(b), b->dtype, (size_t)b->numel);
            ha = hb = false;
        }
    }
    if (!c) {
        free(wa);
        free(wb);
        return dev->host->error(KILN_ERR_NO_MEMORY,
                                "cpu: out of memory for a %s product's f32 result "
                                "(%zu bytes)",
                                kiln_dtype_name(node->dtype),
                                (size_t)node->numel * sizeof(float));
    }
    cpu_bmm job = {
        .dev   = dev,
        .g     = {.M   = M,
                  .N   = N,
                  .K   = K,
                  .a      = wa ? wa : ha ? NULL : cpu_cf32(a),
                  .lda    = (size_t)a->dims[r + 1],
                  .ta     = ta,
                  .b      = wb ? wb : hb ? NULL : cpu_cf32(b),
                  .ldb    = (size_t)b->dims[r + 1],
                  .tb     = tb,
                  .c      = c,
                  .ldc    = N,
                  .a_type = a->dtype,
                  .b_type = b->dtype,
                  .ah     = ha ? cpu_data(a) : NULL,
                  .bh     = hb ? cpu_data(b) : NULL},
        .batch = (size_t)kiln__dims_product(node, 0, r),
        .sa    = M * K,
        .sb    = K * N,
        .sc    = M * N,
    };
    double flops = 2.0 * (double)M * (double)N * (double)(K ? K : 1);
    if (job.batch > 1 && flops < CPU_MATMUL_ENTRY_FLOPS)
        cpu_parallel_for(dev, job.batch, 1, 1, cpu_bmm_range, &job);
    else
        for (size_t e = 0; e < job.batch; e++)
            cpu_bmm_entry(&job, e);
    if (hc) {
        cpu_convert(dev, cpu_data(node), node->dtype, c, KILN_F32, (size_t)node->numel);
        free(c);
    }
    free(wa);
    free(wb);
    return KILN_OK;
}
