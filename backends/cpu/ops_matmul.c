/* ops_matmul.c — MATMUL: the packed GEMM of gemm.c on the device's threads.
 * The other GEMM-shaped ops (conv2d and its gradients) call cpu_gemm too. */
#include "cpu-impl.h"

void cpu_matmul_kernels_scalar(cpu_kernels *k)
{
    k->gemm = &cpu_gemm_portable;
}

/* ---- MATMUL --------------------------------------------------------------- */

/* M, K of op(a) and K, N of op(b), from the stored shapes and the flags. */
typedef struct cpu_mm_shape {
    int64_t M, N, Ka, Kb;
    bool    ta, tb;
} cpu_mm_shape;

static cpu_mm_shape cpu_mm_shape_of(const kiln_node *node)
{
    const kiln_node *a = node->src[0], *b = node->src[1];
    cpu_mm_shape     s;
    s.ta = node->iparam[0] != 0;
    s.tb = node->iparam[1] != 0;
    s.M  = a->dims[s.ta ? 1 : 0];
    s.Ka = a->dims[s.ta ? 0 : 1];
    s.Kb = b->dims[s.tb ? 1 : 0];
    s.N  = b->dims[s.tb ? 0 : 1];
    return s;
}


kiln_status cpu_op_matmul(const cpu_device *dev, const kiln_node *node)
{
    const kiln_node *a = node->src[0], *b = node->src[1];
    cpu_mm_shape     s = cpu_mm_shape_of(node);
    if (s.M == 0 || s.N == 0)
        return KILN_OK;
    cpu_gemm_args g = {
        .M   = (size_t)s.M,
        .N   = (size_t)s.N,
        .K   = (size_t)s.Ka,
        .a   = cpu_cf32(a),
        .lda = (size_t)a->dims[1],
        .ta  = s.ta,
        .b   = cpu_cf32(b),
        .ldb = (size_t)b->dims[1],
        .tb  = s.tb,
        .c   = cpu_f32(node),
        .ldc = (size_t)s.N,
    };
    cpu_gemm(dev, &g);
    return KILN_OK;
}
