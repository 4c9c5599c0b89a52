/* ops_optim.c — SGD_STEP and ADAM_STEP, in place: the node's output is its
 * parameter (src[0]), and the state tensors are updated where they lie. */
#include "ocl-impl.h"

/* The optional sum of squares (kiln_clip_grad_norm) at src[at]; without
 * it the kernel gets the hyper-parameters in its place and has_s 0. */
static void arg_sumsq(ocl_launch *l, const kiln_node *node, int at, const kiln_node *hp)
{
    const kiln_node *s = at < KILN_MAX_SRC ? node->src[at] : NULL;
    ocl_arg_node(l, s ? s : hp);
    ocl_arg_i32(l, s != NULL);
}

/* src: param, grad, velocity, hp [8][, sum of squares] */
kiln_status ocl_op_sgd_step(ocl_device *dev, const kiln_node *node, size_t i)
{
    (void)i;
    if (node->numel == 0)
        return KILN_OK;
    ocl_launch l = ocl_begin(dev, OCL_K_SGD_STEP);
    ocl_arg_node(&l, node);
    ocl_arg_node(&l, node->src[1]);
    ocl_arg_node(&l, node->src[2]);
    ocl_arg_node(&l, node->src[3]);
    arg_sumsq(&l, node, 4, node->src[3]);
    ocl_arg_u64(&l, (uint64_t)node->numel);
    return ocl_run(&l, (uint64_t)node->numel);
}

/* src: param, grad, m, v, hp [12][, sum of squares] */
kiln_status ocl_op_adam_step(ocl_device *dev, const kiln_node *node, size_t i)
{
    (void)i;
    if (node->numel == 0)
        return KILN_OK;
    ocl_launch l = ocl_begin(dev, OCL_K_ADAM_STEP);
    ocl_arg_node(&l, node);
    ocl_arg_node(&l, node->src[1]);
    ocl_arg_node(&l, node->src[2]);
    ocl_arg_node(&l, node->src[3]);
    ocl_arg_node(&l, node->src[4]);
    arg_sumsq(&l, node, 5, node->src[4]);
    ocl_arg_u64(&l, (uint64_t)node->numel);
    return ocl_run(&l, (uint64_t)node->numel);
}
