/* fuse.c — nodes the OpenCL device runs in one launch because the graph has
 * them back to back, as backends/cpu/fuse.c does, and for the same reason
 * here above all: on a GPU a small step's time goes to launches.
 *
 *  - ADD then the RELU of that sum (a dense layer's bias and activation):
 *    one pass writes both (the sum too: other nodes may read it). Which
 *    pairs may is the op table's rule, kiln__add_relu_fusable.
 *  - The optimiser's steps, which run last and back to back: up to
 *    OCL_STEP_SLOTS per launch, of one op, one sum of squares, and tensors
 *    in the same buffers (ops_optim.c).
 *
 * Every node but the first is checked here as graph_compute checks it; one
 * that fails ends the run of nodes, and graph_compute refuses it in turn.
 */
#include "ocl-impl.h"

kiln_status ocl_op_add_relu(ocl_device *dev, const kiln_node *add, const kiln_node *relu)
{
    const kiln_node *a = add->src[0], *b = add->src[1];
    ocl_launch       l = ocl_begin_indexed(dev, OCL_K_ADD_RELU, (uint64_t)add->numel);
    ocl_arg_node(&l, add);
    ocl_arg_node(&l, relu);
    ocl_arg_node(&l, a);
    ocl_arg_idx(&l, (uint64_t)a->numel);
    ocl_arg_node(&l, b);
    ocl_arg_idx(&l, (uint64_t)b->numel);
    ocl_arg_idx(&l, (uint64_t)add->numel);
    return ocl_run(&l, (uint64_t)add->numel);
}

static bool runnable(const ocl_device *dev, const kiln_node *node)
{
    return node && !ocl_check_node(dev, node, true);
}

/* Whether `next` may join the k steps of group[]. */
static bool steps_together(const ocl_device *dev, const kiln_node *const *group, size_t k,
                           const kiln_node *next)
{
    for (size_t j = 0; j < k; j++)
        if (!ocl_steps_together(dev, group[j], next))
            return false;
    return true;
}

size_t ocl_fuse(ocl_device *dev, const kiln_node *const *nodes, size_t i, size_t n,
                kiln_status *status)
{
    const kiln_node *node = nodes[i];
    if (node->op == KILN_OP_ADD && i + 1 < n && nodes[i + 1] &&
        kiln__add_relu_fusable(node, nodes[i + 1]) && runnable(dev, nodes[i + 1])) {
        *status = ocl_op_add_relu(dev, node, nodes[i + 1]);
        return 2;
    }
    if (node->op == KILN_OP_SGD_STEP || node->op == KILN_OP_ADAM_STEP) {
        size_t k = 1;
        while (k < OCL_STEP_SLOTS && i + k < n && nodes[i + k] &&
               steps_together(dev, nodes + i, k, nodes[i + k]) && runnable(dev, nodes[i + k]))
            k++;
        if (k > 1) {
            *status = ocl_op_steps(dev, nodes + i, k);
            return k;
        }
    }
    return 0;
}
