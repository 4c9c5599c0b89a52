/* ops_norm.c — LAYER_NORM and LAYER_NORM_GRAD, a row per work-group, and
 * LAYER_NORM_GRAD_WEIGHT: the rows' statistics into scratch, then a
 * work-item per column (kernels/norm.cl). */
#include "ocl-impl.h"

kiln_status ocl_op_layer_norm(ocl_device *dev, const kiln_node *node, size_t i)
{
    (void)i;
    const kiln_node *x = node->src[0], *bias = node->src[2];
    uint64_t         rows = (uint64_t)kiln__rows(x), cols = (uint64_t)kiln__last_dim(x);
    if (node->numel == 0)
        return KILN_OK;
    size_t     group = ocl_group_for(dev, cols);
    ocl_launch l     = ocl_begin(dev, OCL_K_LAYER_NORM);
    ocl_arg_node(&l, node);
    ocl_arg_node(&l, x);
    ocl_arg_node(&l, node->src[1]);
    ocl_arg_node(&l, bias ? bias : x); /* any buffer when there is no bias */
    ocl_arg_i32(&l, bias != NULL);
    ocl_arg_u64(&l, cols);
    ocl_arg_f32(&l, node->fparam[0]);
    ocl_arg_local(&l, OCL_ACC_BYTES, group);
    return ocl_run_groups(&l, rows, group);
}

/* src: g, x, weight. */
kiln_status ocl_op_layer_norm_grad(ocl_device *dev, const kiln_node *node, size_t i)
{
    (void)i;
    const kiln_node *x    = node->src[1];
    uint64_t         rows = (uint64_t)kiln__rows(x), cols = (uint64_t)kiln__last_dim(x);
    if (node->numel == 0)
        return KILN_OK;
    size_t     group = ocl_group_for(dev, cols);
    ocl_launch l     = ocl_begin(dev, OCL_K_LAYER_NORM_GRAD);
    ocl_arg_node(&l, node);
    ocl_arg_node(&l, node->src[0]);
    ocl_arg_node(&l, x);
    ocl_arg_node(&l, node->src[2]);
    ocl_arg_u64(&l, cols);
    ocl_arg_f32(&l, node->fparam[0]);
    ocl_arg_local(&l, OCL_ACC_BYTES, group);
    return ocl_run_groups(&l, rows, group);
}

/* src: g, x; out [C]. No rows: the sum of nothing, zeros. */
kiln_status ocl_op_layer_norm_grad_weight(ocl_device *dev, const kiln_node *node,
                                          size_t i)
{
    (void)i;
    const kiln_node *x    = node->src[1];
    uint64_t         rows = (uint64_t)kiln__rows(x), cols = (uint64_t)kiln__last_dim(x);
    if (rows == 0) {
        ocl_launch l = ocl_begin(dev, OCL_K_FILL);
        ocl_arg_node(&l, node);
        ocl_arg_u64(&l, cols);
        ocl_arg_f32(&l, 0.0f);
        return ocl_run(&l, cols);
    }
    if (rows > SIZE_MAX / (3 * OCL_ACC_BYTES))
        return dev->host->error(KILN_ERR_INVALID_ARG,
                                "opencl: %s of %llu rows: the statistics do not fit "
                                "a size_t",
                                kiln__op_name(node->op), (unsigned long long)rows);
    cl_mem      stats;
    kiln_status st = ocl_scratch(dev, (size_t)rows * 3 * OCL_ACC_BYTES, &stats);
    if (st != KILN_OK)
        return st;
    size_t     group = ocl_group_for(dev, cols);
    ocl_launch l     = ocl_begin(dev, OCL_K_LAYER_NORM_STATS);
    ocl_arg_mem(&l, stats);
    ocl_arg_node(&l, x);
    ocl_arg_u64(&l, cols);
    ocl_arg_f32(&l, node->fparam[0]);
    ocl_arg_local(&l, OCL_ACC_BYTES, group);
    st = ocl_run_groups(&l, rows, group);
    if (st != KILN_OK)
        return st;
    l = ocl_begin(dev, OCL_K_LAYER_NORM_GRAD_WEIGHT);
    ocl_arg_node(&l, node);
    ocl_arg_node(&l, node->src[0]);
    ocl_arg_node(&l, x);
    ocl_arg_mem(&l, stats);
    ocl_arg_u64(&l, rows);
    ocl_arg_u64(&l, cols);
    return ocl_run(&l, cols);
}
