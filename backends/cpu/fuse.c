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
 */
#include "cpu-impl.h"

size_t cpu_fuse(const cpu_device *dev, const kiln_node *const *nodes, size_t i, size_t n,
                cpu_node_ok_fn checked, kiln_status *status)
{
    const kiln_node *node = nodes[i];
    if (node->op == KILN_OP_ADD && i + 1 < n && nodes[i + 1] &&
        kiln__add_relu_fusable(node, nodes[i + 1]) && checked(nodes[i + 1])) {
        *status = cpu_op_add_relu(dev, node, nodes[i + 1]);
        return 2;
    }
    return 0;
}
