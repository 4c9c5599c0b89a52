/* ops_reduce.c — SUM, MEAN and SUM_TO (a reduction of [outer, r, inner]
 * over r, in one pass or two: reduce.cl says how), and MAX, ARGMAX and
 * MAX_GRAD along the last axis, one work-group per output element or row;
 * EXPAND, one work-item per output element. */
#include "ocl-impl.h"

/* A reduction aims for this many work-groups per compute unit (rows), or
 * this many groups' worth of work-items (columns), cutting r into parts
 * when the outputs alone give fewer, but only parts of at least 4 elements
 * per work-item of a group (rows) or OCL_COLUMN_PART elements (columns):
 * below that a second launch costs more than it saves. kiln_sum_parts adds
 * up at most OCL_MAX_PARTS parts per output, one work-item each. */
#define OCL_REDUCE_WAVES 4
#define OCL_COLUMN_PART  256
#define OCL_MAX_PARTS    1024

uint64_t ocl_reduce_parts(uint64_t units, uint64_t want, uint64_t r, uint64_t least)
{
    if (units == 0 || units >= want || r / 2 < least)
        return 1;
    uint64_t p = want / units + (want % units != 0), most = r / least;
    p          = p < most ? p : most;
    return p < OCL_MAX_PARTS ? p : OCL_MAX_PARTS;
}

uint64_t ocl_reduce_want(const ocl_device *dev, bool items)
{
    uint64_t groups = (uint64_t)dev->info->compute_units * OCL_REDUCE_WAVES;
    return items ? groups * dev->group : groups;
}

kiln_status ocl_reduce_part_buffer(ocl_device *dev, uint64_t count, cl_mem *mem)
{
    return ocl_grow_buffer(dev, &dev->parts, &dev->parts_size,
                           (size_t)count * OCL_ACC_BYTES, "a reduction's partial sums",
                           mem);
}

/* The second pass: out [outer, inner] from parts [outer, parts, inner]. */
kiln_status ocl_sum_parts(ocl_device *dev, const kiln_node *out, cl_mem part,
                          uint64_t parts, uint64_t inner, uint64_t r, bool mean,
                          uint64_t n)
{
    ocl_launch l = ocl_begin(dev, OCL_K_SUM_PARTS);
    ocl_arg_node(&l, out);
    ocl_arg_mem(&l, part);
    ocl_arg_u64(&l, parts);
    ocl_arg_u64(&l, inner);
    ocl_arg_u64(&l, r);
    ocl_arg_i32(&l, mean);
    ocl_arg_u64(&l, n);
    return ocl_run(&l, n);
}

/* Runs of r adjacent elements (inner 1): a work-group per run or part. */
static kiln_status sum_rows(ocl_device *dev, const kiln_node *out, cl_mem x, uint64_t xo,
                            uint64_t outer, uint64_t r, bool mean)
{
    size_t   group = ocl_group_for(dev, r);
    uint64_t parts = ocl_reduce_parts(outer, ocl_reduce_want(dev, false), r, 4 * group);
    uint64_t chunk = r / parts + (r % parts != 0);
    cl_mem   part  = dev->dummy;
    kiln_status st = parts > 1 ? ocl_reduce_part_buffer(dev, outer * parts, &part)
                               : KILN_OK;
    if (st != KILN_OK)
        return st;
    ocl_launch l = ocl_begin(dev, OCL_K_SUM_ROWS);
    ocl_arg_node(&l, out);
    ocl_arg_mem(&l, part);
    ocl_arg_mem(&l, x);
    ocl_arg_u64(&l, xo);
    ocl_arg_u64(&l, r);
    ocl_arg_u64(&l, parts);
    ocl_arg_u64(&l, chunk);
    ocl_arg_i32(&l, mean);
    ocl_arg_local(&l, OCL_ACC_BYTES, group);
    st = ocl_run_groups(&l, outer * parts, group);
    if (st == KILN_OK && parts > 1)
        st = ocl_sum_parts(dev, out, part, parts, 1, r, mean, outer);
    return st;
}

/* Any other axis: a work-item per output element or part of one. */
static kiln_status sum_cols(ocl_device *dev, const kiln_node *out, cl_mem x, uint64_t xo,
                            uint64_t outer, uint64_t r, uint64_t inner, bool mean)
{
    uint64_t parts =
        ocl_reduce_parts(outer * inner, ocl_reduce_want(dev, true), r, OCL_COLUMN_PART);
    uint64_t chunk = r / parts + (r % parts != 0), n = outer * parts * inner;
    cl_mem   part  = dev->dummy;
    kiln_status st = parts > 1 ? ocl_reduce_part_buffer(dev, n, &part) : KILN_OK;
    if (st != KILN_OK)
        return st;
    ocl_launch l = ocl_begin(dev, OCL_K_SUM_COLS);
    ocl_arg_node(&l, out);
    ocl_arg_mem(&l, part);
    ocl_arg_mem(&l, x);
    ocl_arg_u64(&l, xo);
    ocl_arg_u64(&l, r);
    ocl_arg_u64(&l, inner);
    ocl_arg_u64(&l, parts);
    ocl_arg_u64(&l, chunk);
    ocl_arg_i32(&l, mean);
    ocl_arg_u64(&l, n);
    st = ocl_run(&l, n);
    if (st == KILN_OK && parts > 1)
        st = ocl_sum_parts(dev, out, part, parts, inner, r, mean, outer * inner);
    return st;
}

kiln_status ocl_sum_axis(ocl_device *dev, const kiln_node *out, cl_mem x, uint64_t xo,
                         uint64_t outer, uint64_t r, uint64_t inner, bool mean)
{
    if (outer * inner == 0)
        return KILN_OK;
    return inner == 1 ? sum_rows(dev, out, x, xo, outer, r, mean)
                      : sum_cols(dev, out, x, xo, outer, r, inner, mean);
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
    ocl_launch l     = ocl_begin_indexed(dev, OCL_K_EXPAND, (uint64_t)node->numel);
    ocl_arg_node(&l, node);
    ocl_arg_node(&l, node->src[0]);
    ocl_arg_idx(&l, r);
    ocl_arg_idx(&l, inner);
    ocl_arg_idx(&l, (uint64_t)node->numel);
    return ocl_run(&l, (uint64_t)node->numel);
}
