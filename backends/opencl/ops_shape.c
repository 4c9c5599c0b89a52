/* ops_shape.c — TRANSPOSE of a 2-D tensor, by tiles; PERMUTE of up to 4
 * axes, SLICE and SLICE_GRAD, one work-item per output element. (RESHAPE never reaches a backend: it is a
 * view of its source's storage.) */
#include <limits.h>

#include "ocl-impl.h"

/* A tile of OCL_TILE x OCL_TILE per work-group (shape.cl). */
kiln_status ocl_op_transpose(ocl_device *dev, const kiln_node *node, size_t i)
{
    (void)i;
    const kiln_node *src = node->src[0];
    if (node->numel == 0)
        return KILN_OK;
    uint64_t rows = (uint64_t)src->dims[0], cols = (uint64_t)src->dims[1];
    uint64_t tiles_x = (cols + OCL_TILE - 1) / OCL_TILE;
    uint64_t tiles   = tiles_x * ((rows + OCL_TILE - 1) / OCL_TILE);
    /* OCL_TILE x b work-items, b a power of 2 up to 8 that the kernel allows */
    size_t b = 8;
    while (b > 1 && OCL_TILE * b > dev->kernel_group[OCL_K_TRANSPOSE])
        b /= 2;
    ocl_launch l = ocl_begin(dev, OCL_K_TRANSPOSE);
    ocl_arg_node(&l, node);
    ocl_arg_node(&l, src);
    ocl_arg_u64(&l, rows);
    ocl_arg_u64(&l, cols);
    ocl_arg_u64(&l, tiles_x);
    return ocl_run_groups_2d(&l, tiles, OCL_TILE, b);
}

/* The output's dims as 4-D, and the input's stride along each of its axes:
 * d[0..4), s[0..4). */
static void ocl_perm_geometry(const kiln_node *node, uint64_t *d, uint64_t *s)
{
    const kiln_node *src = node->src[0];
    int              nd = node->ndim, pad      = 4 - nd;
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
    /* d1, d2, d3, s0 .. s3, n: d0 is implied by n */
    uint64_t v[8] = {d[1], d[2], d[3], s[0], s[1], s[2], s[3], (uint64_t)node->numel};
    for (int k = 0; k < 8; k++) {
        if (narrow)
            ocl_arg_u32(&l, (uint32_t)v[k]);
        else
            ocl_arg_u64(&l, v[k]);
    }
    return ocl_run(&l, (uint64_t)node->numel);
}

/* The whole output 0: the gradient of an empty slice. */
static kiln_status ocl_zeros(ocl_device *dev, const kiln_node *node)
{
    ocl_launch l = ocl_begin(dev, OCL_K_FILL);
    ocl_arg_node(&l, node);
    ocl_arg_u64(&l, (uint64_t)node->numel);
    ocl_arg_f32(&l, 0.0f);
    return ocl_run(&l, (uint64_t)node->numel);
}

kiln_status ocl_op_slice(ocl_device *dev, const kiln_node *node, size_t i)
{
    (void)i;
    bool             grad = node->op == KILN_OP_SLICE_GRAD;
    const kiln_node *x = grad ? node : node->src[0], *y = grad ? node->src[0] : node;
    int              axis = node->iparam[0];
    int64_t          outer, r, inner;
    kiln__axis_extent(x, axis, &outer, &r, &inner);
    uint64_t run = (uint64_t)(y->dims[axis] * inner);
    if (node->numel == 0)
        return KILN_OK;
    if (run == 0) /* an empty slice: nothing to read, and the kernel divides by run */
        return grad ? ocl_zeros(dev, node) : KILN_OK;
    ocl_launch l = ocl_begin(dev, grad ? OCL_K_SLICE_GRAD : OCL_K_SLICE);
    ocl_arg_node(&l, node);
    ocl_arg_node(&l, node->src[0]);
    ocl_arg_u64(&l, run);
    ocl_arg_u64(&l, (uint64_t)(r * inner));
    ocl_arg_u64(&l, (uint64_t)node->iparam[1] * (uint64_t)inner);
    ocl_arg_u64(&l, (uint64_t)node->numel);
    return ocl_run(&l, (uint64_t)node->numel);
}

/* src: dst (the output's storage), value, start [1]; a bad start is reported
 * through an error slot at the next synchronize, and nothing is written. */
kiln_status ocl_op_store_slice(ocl_device *dev, const kiln_node *node, size_t i)
{
    const kiln_node *value = node->src[1], *start = node->src[2];
    int              axis = node->iparam[0];
    int64_t          outer, r, inner, n = value->dims[axis];
    kiln__axis_extent(node, axis, &outer, &r, &inner);
    if (value->numel == 0)
        return KILN_OK;
    cl_uint     slot;
    kiln_status st = ocl_label_slot(dev, node, i, start, r - n + 1, &slot);
    if (st != KILN_OK)
        return st;
    ocl_launch l = ocl_begin(dev, OCL_K_STORE_SLICE);
    ocl_arg_node(&l, node);
    ocl_arg_node(&l, value);
    ocl_arg_node(&l, start);
    ocl_arg_u64(&l, (uint64_t)(n * inner));
    ocl_arg_u64(&l, (uint64_t)(r * inner));
    ocl_arg_u64(&l, (uint64_t)inner);
    cl_long limit = r - n;
    ocl_arg(&l, sizeof limit, &limit);
    ocl_arg_u64(&l, (uint64_t)value->numel);
    ocl_arg_mem(&l, dev->err);
    ocl_arg(&l, sizeof slot, &slot);
    return ocl_run(&l, (uint64_t)value->numel);
}
