/* ops_elementwise.c — binary ops with broadcasting (32-bit or 64-bit
 * indices, broadcast.cl), unary ops, RELU_GRAD, GELU and GELU_GRAD: one
 * work-item per output element. */
#include "ocl-impl.h"

_Static_assert(OCL_K_SUB - OCL_K_ADD == KILN_OP_SUB - KILN_OP_ADD &&
                   OCL_K_MUL - OCL_K_ADD == KILN_OP_MUL - KILN_OP_ADD &&
                   OCL_K_DIV - OCL_K_ADD == KILN_OP_DIV - KILN_OP_ADD,
               "binary kernels must follow kiln_op's order");
_Static_assert(OCL_K_EXP - OCL_K_NEG == KILN_OP_EXP - KILN_OP_NEG &&
                   OCL_K_LOG - OCL_K_NEG == KILN_OP_LOG - KILN_OP_NEG &&
                   OCL_K_SQRT - OCL_K_NEG == KILN_OP_SQRT - KILN_OP_NEG &&
                   OCL_K_RELU - OCL_K_NEG == KILN_OP_RELU - KILN_OP_NEG &&
                   OCL_K_SIGMOID - OCL_K_NEG == KILN_OP_SIGMOID - KILN_OP_NEG &&
                   OCL_K_TANH - OCL_K_NEG == KILN_OP_TANH - KILN_OP_NEG &&
                   OCL_K_SCALE - OCL_K_NEG == KILN_OP_SCALE - KILN_OP_NEG,
               "unary kernels must follow kiln_op's order");

kiln_status ocl_op_binary(ocl_device *dev, const kiln_node *node, size_t i)
{
    (void)i;
    const kiln_node *a = node->src[0], *b = node->src[1];
    if (node->numel == 0)
        return KILN_OK;
    /* a and b broadcast as suffixes of the output: no index passes its size */
    ocl_launch l = ocl_begin_indexed(
        dev, (ocl_kernel_id)(OCL_K_ADD + (node->op - KILN_OP_ADD)), (uint64_t)node->numel);
    ocl_arg_node(&l, node);
    ocl_arg_node(&l, a);
    ocl_arg_idx(&l, (uint64_t)a->numel);
    ocl_arg_node(&l, b);
    ocl_arg_idx(&l, (uint64_t)b->numel);
    ocl_arg_idx(&l, (uint64_t)node->numel);
    return ocl_run(&l, (uint64_t)node->numel);
}

kiln_status ocl_op_unary(ocl_device *dev, const kiln_node *node, size_t i)
{
    (void)i;
    if (node->numel == 0)
        return KILN_OK;
    ocl_launch l = ocl_begin(dev, (ocl_kernel_id)(OCL_K_NEG + (node->op - KILN_OP_NEG)));
    ocl_arg_node(&l, node);
    ocl_arg_node(&l, node->src[0]);
    ocl_arg_u64(&l, (uint64_t)node->numel);
    ocl_arg_f32(&l, node->fparam[0]);
    return ocl_run(&l, (uint64_t)node->numel);
}

kiln_status ocl_op_relu_grad(ocl_device *dev, const kiln_node *node, size_t i)
{
    (void)i;
    if (node->numel == 0)
        return KILN_OK;
    ocl_launch l = ocl_begin(dev, OCL_K_RELU_GRAD);
    ocl_arg_node(&l, node);
    ocl_arg_node(&l, node->src[0]);
    ocl_arg_node(&l, node->src[1]);
    ocl_arg_u64(&l, (uint64_t)node->numel);
    return ocl_run(&l, (uint64_t)node->numel);
}

kiln_status ocl_op_gelu(ocl_device *dev, const kiln_node *node, size_t i)
{
    (void)i;
    if (node->numel == 0)
        return KILN_OK;
    ocl_launch l = ocl_begin(dev, OCL_K_GELU);
    ocl_arg_node(&l, node);
    ocl_arg_node(&l, node->src[0]);
    ocl_arg_u64(&l, (uint64_t)node->numel);
    return ocl_run(&l, (uint64_t)node->numel);
}

kiln_status ocl_op_gelu_grad(ocl_device *dev, const kiln_node *node, size_t i)
{
    (void)i;
    if (node->numel == 0)
        return KILN_OK;
    ocl_launch l = ocl_begin(dev, OCL_K_GELU_GRAD);
    ocl_arg_node(&l, node);
    ocl_arg_node(&l, node->src[0]);
    ocl_arg_node(&l, node->src[1]);
    ocl_arg_u64(&l, (uint64_t)node->numel);
    return ocl_run(&l, (uint64_t)node->numel);
}
