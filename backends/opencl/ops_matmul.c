/* ops_matmul.c — MATMUL: one CLBlast SGEMM (gemm.c) on the device's queue,
 * the transposes passed through. */
#include "ocl-impl.h"

kiln_status ocl_op_matmul(ocl_device *dev, const kiln_node *node, size_t i)
{
    (void)i;
    const kiln_node *a = node->src[0], *b = node->src[1];
    bool             ta = node->iparam[0] != 0, tb = node->iparam[1] != 0;
    ocl_gemm         g = {
                .ta    = ta,
                .tb    = tb,
                .m     = (size_t)node->dims[0],
                .n     = (size_t)node->dims[1],
                .k     = (size_t)a->dims[ta ? 0 : 1],
                .alpha = 1.0f,
                .beta  = 0.0f,
                .a     = ocl_mem(dev, a),
                .b     = ocl_mem(dev, b),
                .c     = ocl_mem(dev, node),
                .ao    = ocl_elem_offset(a),
                .bo    = ocl_elem_offset(b),
                .co    = ocl_elem_offset(node),
                .lda   = (size_t)a->dims[1],
                .ldb   = (size_t)b->dims[1],
                .ldc   = (size_t)node->dims[1],
    };
    return ocl_sgemm(dev, &g);
}
