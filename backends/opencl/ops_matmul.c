/* ops_matmul.c — MATMUL: one CLBlast SGEMM (gemm.c) per batch entry on the
 * device's queue, the transposes passed through.
 *
 * A loop of CLBlastSgemm rather than CLBlastSgemmStridedBatched: the batched
 * routine runs kernels of its own, which gemm.c's check against a host
 * reference (and the parameters it chose for CPU devices) does not cover;
 * each entry here takes the path that was verified. The cost is one
 * enqueue per entry. */
#include <limits.h>

#include "ocl-impl.h"

/* CLBlast's kernels take offsets and sizes as int. An operand far into its
 * buffer is given to CLBlast as a sub-buffer that starts near it (gemm.c),
 * so only its own size counts: it must be addressable by an int from an
 * aligned origin (up to 4096 bytes before it). */
const char *ocl_matmul_check(const kiln_node *node)
{
    for (int s = 0; s < 3; s++) {
        const kiln_node *t = s < 2 ? node->src[s] : node;
        if ((uint64_t)t->numel > INT_MAX - 1024)
            return "a tensor is too large for CLBlast's int indices";
    }
    return NULL;
}

kiln_status ocl_op_matmul(ocl_device *dev, const kiln_node *node, size_t i)
{
    (void)i;
    const kiln_node *a = node->src[0], *b = node->src[1];
    int              r  = node->ndim - 2;
    bool             ta = node->iparam[0] != 0, tb = node->iparam[1] != 0;
    ocl_gemm         g = {
                .ta    = ta,
                .tb    = tb,
                .m     = (size_t)node->dims[r],
                .n     = (size_t)node->dims[r + 1],
                .k     = (size_t)a->dims[r + (ta ? 0 : 1)],
                .alpha = 1.0f,
                .beta  = 0.0f,
                .a     = ocl_mem(dev, a),
                .b     = ocl_mem(dev, b),
                .c     = ocl_mem(dev, node),
                .ao    = ocl_elem_offset(a),
                .bo    = ocl_elem_offset(b),
                .co    = ocl_elem_offset(node),
                .lda   = (size_t)a->dims[r + 1],
                .ldb   = (size_t)b->dims[r + 1],
                .ldc   = (size_t)node->dims[r + 1],
    };
    size_t      batch = (size_t)kiln__dims_product(node, 0, r);
    kiln_status st    = KILN_OK;
    for (size_t e = 0; e < batch && st == KILN_OK; e++) {
        st = ocl_sgemm(dev, &g);
        g.ao += g.m * g.k;
        g.bo += g.k * g.n;
        g.co += g.m * g.n;
    }
    return st;
}
