/* ops_shape.c — TRANSPOSE of a 2-D tensor, one work-item per output
 * element. (RESHAPE never reaches a backend: it is a view of its source's
 * storage.) */
#include "ocl-impl.h"

kiln_status ocl_op_transpose(ocl_device *dev, const kiln_node *node, size_t i)
{
    (void)i;
    const kiln_node *src = node->src[0];
    if (node->numel == 0)
        return KILN_OK;
    ocl_launch l = ocl_begin(dev, OCL_K_TRANSPOSE);
    ocl_arg_node(&l, node);
    ocl_arg_node(&l, src);
    ocl_arg_u64(&l, (uint64_t)src->dims[0]);
    ocl_arg_u64(&l, (uint64_t)src->dims[1]);
    return ocl_run(&l, (uint64_t)node->numel);
}
