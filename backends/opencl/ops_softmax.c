/* ops_softmax.c — SOFTMAX, LOG_SOFTMAX and their gradients, a row per
 * work-group (the rows of the output's last axis). */
#include "ocl-impl.h"

#define ACC_BYTES sizeof(cl_double)

kiln_status ocl_op_softmax(ocl_device *dev, const kiln_node *node, size_t i)
{
    (void)i;
    uint64_t cols = (uint64_t)ocl_last_dim(node);
    if (node->numel == 0)
        return KILN_OK;
    size_t group = ocl_group_for(dev, cols);
    ocl_launch l = ocl_begin(dev, OCL_K_SOFTMAX);
    ocl_arg_node(&l, node);
    ocl_arg_node(&l, node->src[0]);
    ocl_arg_u64(&l, cols);
    ocl_arg_i32(&l, node->op == KILN_OP_LOG_SOFTMAX);
    ocl_arg_local(&l, ACC_BYTES, group);
    return ocl_run_groups(&l, (uint64_t)ocl_rows(node), group);
}

/* src: g, y (the op's output); SOFTMAX_GRAD or LOG_SOFTMAX_GRAD. */
kiln_status ocl_op_softmax_grad(ocl_device *dev, const kiln_node *node, size_t i)
{
    (void)i;
    uint64_t cols = (uint64_t)ocl_last_dim(node);
    if (node->numel == 0)
        return KILN_OK;
    size_t group = ocl_group_for(dev, cols);
    ocl_launch l = ocl_begin(dev, OCL_K_SOFTMAX_GRAD);
    ocl_arg_node(&l, node);
    ocl_arg_node(&l, node->src[0]);
    ocl_arg_node(&l, node->src[1]);
    ocl_arg_u64(&l, cols);
    ocl_arg_i32(&l, node->op == KILN_OP_LOG_SOFTMAX_GRAD);
    ocl_arg_local(&l, ACC_BYTES, group);
    return ocl_run_groups(&l, (uint64_t)ocl_rows(node), group);
}
