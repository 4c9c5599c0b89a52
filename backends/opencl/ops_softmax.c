/* ops_softmax.c — SOFTMAX, LOG_SOFTMAX, CAUSAL_SOFTMAX and their gradients,
 * a row per work-group (the rows of the output's last axis). */
#include "ocl-impl.h"

kiln_status ocl_op_softmax(ocl_device *dev, const kiln_node *node, size_t i)
{
    (void)i;
    ocl_row_launch rows = {.id      = OCL_K_SOFTMAX,
                           .nodes   = {node, node->src[0]},
                           .n_nodes = 2,
                           .rows    = (uint64_t)kiln__rows(node),
                           .cols    = (uint64_t)kiln__last_dim(node),
                           .flag    = node->op == KILN_OP_LOG_SOFTMAX,
                           .each    = OCL_ACC_BYTES};
    return node->numel ? ocl_run_rows(dev, &rows) : KILN_OK;
}

/* src: g, y (the op's output); SOFTMAX_GRAD or LOG_SOFTMAX_GRAD. */
kiln_status ocl_op_softmax_grad(ocl_device *dev, const kiln_node *node, size_t i)
{
    (void)i;
    ocl_row_launch rows = {.id      = OCL_K_SOFTMAX_GRAD,
                           .nodes   = {node, node->src[0], node->src[1]},
                           .n_nodes = 3,
                           .rows    = (uint64_t)kiln__rows(node),
                           .cols    = (uint64_t)kiln__last_dim(node),
                           .flag    = node->op == KILN_OP_LOG_SOFTMAX_GRAD,
                           .each    = OCL_ACC_BYTES};
    return node->numel ? ocl_run_rows(dev, &rows) : KILN_OK;
}

/* CAUSAL_SOFTMAX (src: x[, offset]) and CAUSAL_SOFTMAX_GRAD (src: g, y[,
 * offset]): a row of the [Tq, Tk] matrices per work-group, the scale from
 * fparam[0]. */
kiln_status ocl_op_causal_softmax(ocl_device *dev, const kiln_node *node, size_t i)
{
    (void)i;
    bool             grad   = node->op == KILN_OP_CAUSAL_SOFTMAX_GRAD;
    const kiln_node *offset = node->src[grad ? 2 : 1];
    uint64_t         tk     = (uint64_t)kiln__last_dim(node);
    if (node->numel == 0)
        return KILN_OK;
    size_t     group = ocl_group_for(dev, tk);
    ocl_launch l     = ocl_begin(dev,
                             grad ? OCL_K_CAUSAL_SOFTMAX_GRAD : OCL_K_CAUSAL_SOFTMAX);
    ocl_arg_node(&l, node);
    ocl_arg_node(&l, node->src[0]);
    if (grad)
        ocl_arg_node(&l, node->src[1]);
    ocl_arg_u64(&l, (uint64_t)node->dims[node->ndim - 2]);
    ocl_arg_u64(&l, tk);
    if (offset) {
        ocl_arg_node(&l, offset);
    } else {
        ocl_arg_mem(&l, dev->dummy);
        ocl_arg_u64(&l, 0);
    }
    ocl_arg_u32(&l, offset != NULL);
    ocl_arg_f32(&l, node->fparam[0]);
    ocl_arg_local(&l, OCL_ACC_BYTES, group);
    return ocl_run_groups(&l, (uint64_t)kiln__rows(node), group);
}
