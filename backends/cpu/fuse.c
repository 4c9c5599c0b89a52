/* fuse.c — nodes the backend runs together because the graph has them back to
 * back.
 *
 * ADD then RELU of that sum (a dense layer's bias and activation): one pass
 * computes both and writes both. The sum is still written because the backend
 * cannot see who else reads it (core marks no node as "read once"), so what is
 * saved is the second pass's read of the sum, not its storage.
 *
 * Which pairs may run so is the op table's rule (kiln__add_relu_fusable,
 * shared with the OpenCL backend): f32, and storage in which one pass never
 * reads what it has already written.
 *
 * CONV2D then RELU [then MAX_POOL2D] (a CNN's block), when the convolution
 * goes image by image: each image's relu and pool run on its thread right
 * after its GEMM, from the caches. MAX_POOL2D_GRAD then RELU_GRAD of it:
 * plane by plane. Every output is written; a chain is fused only where
 * nothing it writes overlaps what a later image or plane still reads.
 */
#include "cpu-impl.h"

/* Whether out shares bytes with any of the n nodes. */
static bool cpu_overlaps_any(const kiln_node *out, const kiln_node *const *nodes, size_t n)
{
    for (size_t k = 0; k < n; k++)
        if (nodes[k] && kiln__overlaps(out, nodes[k]))
            return true;
    return false;
}

/* f32 nodes only: the fused paths are f32's kernels. */
static bool cpu_all_f32(const kiln_node *node)
{
    if (node->dtype != KILN_F32)
        return false;
    for (int s = 0; s < KILN_MAX_SRC && node->src[s]; s++)
        if (node->src[s]->dtype != KILN_F32)
            return false;
    return true;
}

/* CONV2D, RELU [, MAX_POOL2D]: how many of nodes[i..] run fused, 0 for none. */
static size_t cpu_conv_chain(const cpu_device *dev, const kiln_node *const *nodes, size_t i,
                             size_t n, cpu_node_ok_fn checked)
{
    const kiln_node *conv = nodes[i];
    if (i + 1 >= n || !nodes[i + 1] || conv->numel == 0 || !cpu_all_f32(conv) ||
        !cpu_conv2d_fusable(dev, conv))
        return 0;
    const kiln_node *relu = nodes[i + 1];
    /* an image's relu is written while other images' convolutions still
     * read x, w and b, and the pool while the other images' relu is read */
    const kiln_node *conv_src[] = {conv->src[0], conv->src[1], conv->src[2]};
    if (relu->op != KILN_OP_RELU || relu->src[0] != conv || !cpu_all_f32(relu) ||
        !checked(relu) || cpu_overlaps_any(relu, conv_src, 3))
        return 0;
    const kiln_node *pool = i + 2 < n ? nodes[i + 2] : NULL;
    const kiln_node *both[] = {conv, conv->src[0], conv->src[1], conv->src[2]};
    if (pool && pool->op == KILN_OP_MAX_POOL2D && pool->src[0] == relu && pool->numel > 0 &&
        cpu_all_f32(pool) && checked(pool) && !cpu_overlaps_any(pool, both, 4))
        return 3;
    return 2;
}

/* MAX_POOL2D_GRAD, then the RELU_GRAD of its output. The relu's gradient
 * of a plane is written while the pool's gradient of later planes still
 * reads gy and x: it may not overlap them, except for taking x's storage
 * exactly (the planner gives it the forward relu's output, dead by then),
 * since a plane of x is read only for the same plane. */
static bool cpu_pool_grad_relu_fusable(const kiln_node *pg, const kiln_node *rg,
                                       cpu_node_ok_fn checked)
{
    if (!rg || rg->op != KILN_OP_RELU_GRAD || rg->src[0] != pg || pg->numel == 0 ||
        rg->numel != pg->numel || !cpu_all_f32(pg) || !cpu_all_f32(rg) || !checked(rg))
        return false;
    const kiln_node *read[] = {pg->src[0], rg->src[1]};
    return !cpu_overlaps_any(rg, read, 2) &&
           (!kiln__overlaps(rg, pg->src[1]) || kiln__same_storage(rg, pg->src[1])) &&
           !kiln__overlaps(pg, rg->src[1]);
}

size_t cpu_fuse(const cpu_device *dev, const kiln_node *const *nodes, size_t i, size_t n,
                cpu_node_ok_fn checked, kiln_status *status)
{
    const kiln_node *node = nodes[i];
    if (node->op == KILN_OP_CONV2D) {
        size_t k = cpu_conv_chain(dev, nodes, i, n, checked);
        if (k > 0)
            *status = cpu_op_conv2d_relu_pool(dev, node, nodes[i + 1],
                                              k == 3 ? nodes[i + 2] : NULL);
        return k;
    }
    if (node->op == KILN_OP_MAX_POOL2D_GRAD && i + 1 < n &&
        cpu_pool_grad_relu_fusable(node, nodes[i + 1], checked)) {
        *status = cpu_op_max_pool2d_relu_grad(dev, node, nodes[i + 1]);
        return 2;
    }
    if (node->op == KILN_OP_ADD && i + 1 < n && nodes[i + 1] &&
        kiln__add_relu_fusable(node, nodes[i + 1]) && checked(nodes[i + 1])) {
        *status = cpu_op_add_relu(dev, node, nodes[i + 1]);
        return 2;
    }
    return 0;
}
