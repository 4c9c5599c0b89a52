/* ops_loss.c — MSE_LOSS, CROSS_ENTROPY and CROSS_ENTROPY_GRAD.
 *
 * Cross-entropy sees logits [..., C] as rows of C (every axis but the last
 * flattened). It writes one loss per row into scratch, then takes their mean
 * with the reduction kernel. A label outside [0, C) cannot stop a kernel: the
 * row gets NaN, the lowest such row goes to the device's error buffer, and
 * synchronize turns it into an error naming the row and the label. */
#include <math.h>

#include "ocl-impl.h"

/* As a sum of one run (ops_reduce.c): in parts when it would fill more
 * work-groups than one. */
kiln_status ocl_op_mse_loss(ocl_device *dev, const kiln_node *node, size_t i)
{
    (void)i;
    uint64_t    n     = (uint64_t)node->src[0]->numel;
    size_t      group = ocl_group_for(dev, n);
    uint64_t    parts = ocl_reduce_parts(1, ocl_reduce_want(dev, false), n, 4 * group);
    uint64_t    chunk = n / parts + (n % parts != 0);
    cl_mem      part  = dev->dummy;
    kiln_status st    = parts > 1 ? ocl_reduce_part_buffer(dev, parts, &part) : KILN_OK;
    if (st != KILN_OK)
        return st;
    ocl_launch l = ocl_begin(dev, OCL_K_MSE_LOSS);
    ocl_arg_node(&l, node);
    ocl_arg_mem(&l, part);
    ocl_arg_node(&l, node->src[0]);
    ocl_arg_node(&l, node->src[1]);
    ocl_arg_u64(&l, n);
    ocl_arg_u64(&l, parts);
    ocl_arg_u64(&l, chunk);
    ocl_arg_local(&l, OCL_ACC_BYTES, group);
    st = ocl_run_groups(&l, parts, group);
    if (st == KILN_OK && parts > 1)
        st = ocl_sum_parts(dev, node, part, parts, 1, n, true, 1);
    return st;
}

static kiln_status fill(ocl_device *dev, const kiln_node *node, float value)
{
    ocl_launch l = ocl_begin(dev, OCL_K_FILL);
    ocl_arg_node(&l, node);
    ocl_arg_u64(&l, (uint64_t)node->numel);
    ocl_arg_f32(&l, value);
    return ocl_run(&l, (uint64_t)node->numel);
}

/* Sets the label-check arguments (error buffer, slot) for a kernel. */
static kiln_status arg_label_check(ocl_launch *l, const kiln_node *node, size_t i,
                                   const kiln_node *labels, int64_t classes)
{
    cl_uint     slot;
    kiln_status st = ocl_label_slot(l->dev, node, i, labels, classes, &slot);
    if (st == KILN_OK) {
        ocl_arg_mem(l, l->dev->err);
        ocl_arg(l, sizeof slot, &slot);
    }
    return st;
}

kiln_status ocl_op_cross_entropy(ocl_device *dev, const kiln_node *node, size_t i)
{
    const kiln_node *logits = node->src[0], *labels = node->src[1];
    uint64_t         rows = (uint64_t)kiln__rows(logits),
             classes      = (uint64_t)kiln__last_dim(logits);
    if (rows == 0)
        return fill(dev, node, NAN); /* the mean of nothing */
    cl_mem      loss;
    kiln_status st = ocl_scratch(dev, rows * sizeof(cl_float), &loss);
    if (st != KILN_OK)
        return st;
    size_t     group = ocl_group_for(dev, classes);
    ocl_launch l     = ocl_begin(dev, OCL_K_CE_ROWS);
    ocl_arg_mem(&l, loss);
    ocl_arg_u64(&l, 0);
    ocl_arg_node(&l, logits);
    ocl_arg_node(&l, labels);
    ocl_arg_u64(&l, classes);
    st = arg_label_check(&l, node, i, labels, (int64_t)classes);
    ocl_arg_local(&l, OCL_ACC_BYTES, group);
    if (st == KILN_OK)
        st = ocl_run_groups(&l, rows, group);
    if (st != KILN_OK)
        return st;

    /* the mean of the rows' losses */
    return ocl_sum_axis(dev, node, loss, 0, 1, rows, 1, true);
}

/* src: g (one element), logits [..., C], labels [...]: N rows. */
kiln_status ocl_op_cross_entropy_grad(ocl_device *dev, const kiln_node *node, size_t i)
{
    const kiln_node *g = node->src[0], *logits = node->src[1], *labels = node->src[2];
    uint64_t         rows = (uint64_t)kiln__rows(logits),
             classes      = (uint64_t)kiln__last_dim(logits);
    if (node->numel == 0)
        return KILN_OK;
    size_t     group = ocl_group_for(dev, classes);
    ocl_launch l     = ocl_begin(dev, OCL_K_CE_GRAD);
    ocl_arg_node(&l, node);
    ocl_arg_node(&l, g);
    ocl_arg_node(&l, logits);
    ocl_arg_node(&l, labels);
    ocl_arg_u64(&l, rows);
    ocl_arg_u64(&l, classes);
    kiln_status st = arg_label_check(&l, node, i, labels, (int64_t)classes);
    ocl_arg_local(&l, OCL_ACC_BYTES, group);
    return st == KILN_OK ? ocl_run_groups(&l, rows, group) : st;
}
