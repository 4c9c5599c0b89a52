/* ops_reduce.c — SUM, MEAN and SUM_TO (one kernel: a reduction of [outer,
 * r, inner] over r), and MAX, ARGMAX and MAX_GRAD along the last axis, one
 * work-group per output element or row; EXPAND, one work-item per output
 * element. */
#include "ocl-impl.h"

kiln_status ocl_sum_axis(ocl_device *dev, const kiln_node *out, cl_mem x, uint64_t xo,
                         uint64_t outer, uint64_t r, uint64_t inner, bool mean)
{
    if (outer * inner == 0)
        return KILN_OK;
    size_t     group = ocl_group_for(dev, r);
    ocl_launch l     = ocl_begin(dev, OCL_K_SUM_AXIS);
    ocl_arg_node(&l, out);
    ocl_arg_mem(&l, x);
    ocl_arg_u64(&l, xo);
    ocl_arg_u64(&l, r);
    ocl_arg_u64(&l, inner);
    ocl_arg_i32(&l, mean);
    ocl_arg_local(&l, OCL_ACC_BYTES, group);
    return ocl_run_groups(&l, outer * inner, group);
}

static kiln_status sum_axis(ocl_device *dev, const kiln_node *out, const kiln_node *x,
                            uint64_t outer, uint64_t r, uint64_t inner, bool mean)
{
    return ocl_sum_axis(dev, out, ocl_mem(dev, x), ocl_elem_offset(x), outer, r, inner,
                        mean);
}

kiln_status ocl_op_sum_mean(ocl_device *dev, const kiln_node *node, size_t i)
{
    (void)i;
    const kiln_node *src  = node->src[0];
    int              axis = node->iparam[0];
    bool             mean = node->op == KILN_OP_MEAN;
    if (axis == -1)
        return sum_axis(dev, node, src, 1, (uint64_t)src->numel, 1, mean);
    return sum_axis(dev, node, src, (uint64_t)kiln__dims_product(src, 0, axis),
                    (uint64_t)src->dims[axis],
                    (uint64_t)kiln__dims_product(src, axis + 1, src->ndim), mean);
}

/* out[j] = the sum of src[i] over i % m == j: src as [1, n / m, m]. */
kiln_status ocl_op_sum_to(ocl_device *dev, const kiln_node *node, size_t i)
{
    (void)i;
    uint64_t m = (uint64_t)node->numel, n = (uint64_t)node->src[0]->numel;
    return m == 0 ? KILN_OK : sum_axis(dev, node, node->src[0], 1, n / m, m, false);
}

kiln_status ocl_op_max(ocl_device *dev, const kiln_node *node, size_t i)
{
    (void)i;
    const kiln_node *x    = node->src[0];
    ocl_row_launch   rows = {.id      = OCL_K_MAX_LAST,
                             .nodes   = {node, x},
                             .n_nodes = 2,
                             .rows    = (uint64_t)node->numel,
                             .cols    = (uint64_t)kiln__last_dim(x),
                             .flag    = -1,
                             .each    = sizeof(cl_float)};
    return ocl_run_rows(dev, &rows);
}

kiln_status ocl_op_argmax(ocl_device *dev, const kiln_node *node, size_t i)
{
    (void)i;
    const kiln_node *x    = node->src[0];
    ocl_row_launch   rows = {.id      = OCL_K_ARGMAX_LAST,
                             .nodes   = {node, x},
                             .n_nodes = 2,
                             .rows    = (uint64_t)node->numel,
                             .cols    = (uint64_t)kiln__last_dim(x),
                             .flag    = -1,
                             .each    = sizeof(cl_float),
                             .indices = true};
    return ocl_run_rows(dev, &rows);
}

/* src: g [R], x [R, C]. */
kiln_status ocl_op_max_grad(ocl_device *dev, const kiln_node *node, size_t i)
{
    (void)i;
    const kiln_node *g = node->src[0], *x = node->src[1];
    ocl_row_launch   rows = {.id      = OCL_K_MAX_GRAD,
                             .nodes   = {node, g, x},
                             .n_nodes = 3,
                             .rows    = (uint64_t)g->numel,
                             .cols    = (uint64_t)kiln__last_dim(x),
                             .flag    = -1,
                             .each    = sizeof(cl_float),
                             .indices = true};
    return ocl_run_rows(dev, &rows);
}

kiln_status ocl_op_expand(ocl_device *dev, const kiln_node *node, size_t i)
{
    (void)i;
    int axis = node->iparam[0];
    if (node->numel == 0)
        return KILN_OK;
    /* the output as [outer, r, inner]; everything (-1) is r = n, inner = 1 */
    uint64_t   r     = axis == -1 ? (uint64_t)node->numel : (uint64_t)node->dims[axis];
    uint64_t   inner = axis == -1
                           ? 1
                           : (uint64_t)kiln__dims_product(node, axis + 1, node->ndim);
    ocl_launch l     = ocl_begin(dev, OCL_K_EXPAND);
    ocl_arg_node(&l, node);
    ocl_arg_node(&l, node->src[0]);
    ocl_arg_u64(&l, r);
    ocl_arg_u64(&l, inner);
    ocl_arg_u64(&l, (uint64_t)node->numel);
    return ocl_run(&l, (uint64_t)node->numel);
}
