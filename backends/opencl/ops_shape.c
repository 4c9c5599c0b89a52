/* ops_shape.c — TRANSPOSE of a 2-D tensor and PERMUTE of up to 4 axes, one
 * work-item per output element. (RESHAPE never reaches a backend: it is a
 * view of its source's storage.) */
#include <limits.h>

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

/* The output's dims as 4-D, and the input's stride along each of its axes:
 * d[0..4), s[0..4). */
static void ocl_perm_geometry(const kiln_node *node, uint64_t *d, uint64_t *s)
{
    const kiln_node *src = node->src[0];
    int              nd = node->ndim, pad = 4 - nd;
    uint64_t         stride[KILN_MAX_DIMS], st = 1;
    for (int k = nd; k-- > 0;) {
        stride[k] = st;
        st *= (uint64_t)src->dims[k];
    }
    for (int k = 0; k < 4; k++) {
        d[k] = k < pad ? 1 : (uint64_t)node->dims[k - pad];
        s[k] = k < pad ? 0 : stride[node->iparam[k - pad]];
    }
}

kiln_status ocl_op_permute(ocl_device *dev, const kiln_node *node, size_t i)
{
    (void)i;
    if (node->numel == 0)
        return KILN_OK;
    uint64_t d[4], s[4];
    ocl_perm_geometry(node, d, s);
    /* every index, element offset and size below 2^32: uint arithmetic */
    bool       narrow = (uint64_t)node->numel <= UINT_MAX;
    ocl_launch l      = ocl_begin(dev, narrow ? OCL_K_PERMUTE : OCL_K_PERMUTE_WIDE);
    ocl_arg_node(&l, node);
    ocl_arg_node(&l, node->src[0]);
    for (int k = 1; k < 4; k++)
        narrow ? ocl_arg_u32(&l, (uint32_t)d[k]) : ocl_arg_u64(&l, d[k]);
    for (int k = 0; k < 4; k++)
        narrow ? ocl_arg_u32(&l, (uint32_t)s[k]) : ocl_arg_u64(&l, s[k]);
    narrow ? ocl_arg_u32(&l, (uint32_t)node->numel) : ocl_arg_u64(&l, (uint64_t)node->numel);
    return ocl_run(&l, (uint64_t)node->numel);
}
