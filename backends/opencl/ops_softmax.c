/* ops_softmax.c — SOFTMAX, LOG_SOFTMAX and their gradients, a row per
 * work-group (the rows of the output's last axis). */
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
