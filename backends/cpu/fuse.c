/* fuse.c — nodes the backend runs together because the graph has them back to
 * back.
 *
 * ADD then RELU of that sum (a dense layer's bias and activation): one pass
 * computes both and writes both. The sum is still written because the backend
 * cannot see who else reads it (core marks no node as "read once"), so what is
 * saved is the second pass's read of the sum, not its storage.
 *
 * Storage: the RELU's output never overlaps the sum (its source), but the
 * memory planner may give it the storage of one of the ADD's operands, which
 * is dead after the ADD. One pass is then safe only when the RELU's output is
 * that operand exactly (read then written at the same index); any other
 * overlap runs the two nodes one after the other, as without fusion.
 */
#include "cpu-impl.h"

/* Whether a and b share bytes of one buffer. */
static bool cpu_overlaps(const kiln_node *a, const kiln_node *b)
{
    if (!a->buffer || a->buffer != b->buffer || a->numel == 0 || b->numel == 0)
        return false;
    size_t a_end = a->offset + (size_t)a->numel * kiln__elem_size(a->dtype),
           b_end = b->offset + (size_t)b->numel * kiln__elem_size(b->dtype);
    return a->offset < b_end && b->offset < a_end;
}

static bool cpu_same_storage(const kiln_node *a, const kiln_node *b)
{
    return a->buffer == b->buffer && a->offset == b->offset && a->numel == b->numel;
}

static bool cpu_add_relu_fusable(const kiln_node *add, const kiln_node *relu,
                                 cpu_node_ok_fn checked)
{
    /* the fused kernel is f32's */
    if (relu->op != KILN_OP_RELU || relu->src[0] != add || relu->numel != add->numel ||
        add->numel == 0 || add->dtype != KILN_F32 || add->src[0]->dtype != KILN_F32 ||
        !checked(relu))
        return false;
    for (int s = 0; s < 2; s++) {
        const kiln_node *src = add->src[s];
        if (cpu_overlaps(relu, src) && !cpu_same_storage(relu, src))
            return false;
    }
    return true;
}

size_t cpu_fuse(const cpu_device *dev, const kiln_node *const *nodes, size_t i, size_t n,
                cpu_node_ok_fn checked, kiln_status *status)
{
    const kiln_node *node = nodes[i];
    if (node->op == KILN_OP_ADD && i + 1 < n && nodes[i + 1] &&
        cpu_add_relu_fusable(node, nodes[i + 1], checked)) {
        *status = cpu_op_add_relu(dev, node, nodes[i + 1]);
        return 2;
    }
    return 0;
}
