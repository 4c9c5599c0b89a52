/* ops_optim.c — SGD_STEP and ADAM_STEP, in place: the node's output is its
 * parameter (src[0]), and the state tensors are updated where they lie.
 *
 * One launch steps up to OCL_STEP_SLOTS parameters: the optimiser's nodes
 * run last and back to back, so fuse.c hands a run of them here together,
 * and a model's step is one launch (or a few) rather than one per tensor.
 * Each tensor starts on a work-group boundary, so that a group steps one. */
#include "ocl-impl.h"

_Static_assert(OCL_STEP_SLOTS == 8, "kernels/optim.cl's KILN_STEP_SLOTS");

/* src: param, grad, [m,] v, hp[, sum of squares]: the sum of squares'
 * index (hp's is one less). */
static int sumsq_at(const kiln_node *node)
{
    return node->op == KILN_OP_ADAM_STEP ? 5 : 4;
}

const kiln_node *ocl_step_sumsq(const kiln_node *node)
{
    int at = sumsq_at(node);
    return at < KILN_MAX_SRC ? node->src[at] : NULL;
}

kiln_status ocl_op_steps(ocl_device *dev, const kiln_node *const *nodes, size_t count)
{
    const kiln_node *first = nodes[0];
    bool             adam  = first->op == KILN_OP_ADAM_STEP;
    ocl_kernel_id    id    = adam ? OCL_K_ADAM_STEP : OCL_K_SGD_STEP;
    size_t           group = ocl_run_group(dev, id);
    const kiln_node *s     = ocl_step_sumsq(first);
    int              hp_at = sumsq_at(first) - 1;
    ocl_launch       l     = ocl_begin(dev, id);
    /* without a sum of squares the kernel gets a tensor in its place */
    ocl_arg_node(&l, s ? s : first->src[hp_at]);
    ocl_arg_i32(&l, s != NULL);
    uint64_t at = 0;
    for (size_t k = 0; k < OCL_STEP_SLOTS; k++) {
        const kiln_node *node = k < count ? nodes[k] : NULL;
        uint64_t         n    = node ? (uint64_t)node->numel : 0;
        for (int src = 0; src < hp_at + 1; src++) /* output, grad, state, hp */
            ocl_arg_node(&l, !node ? NULL : src == 0 ? node : node->src[src]);
        ocl_arg_u64(&l, at);
        ocl_arg_u64(&l, n);
        if (n > UINT64_MAX - at - group)
            return dev->host->error(KILN_ERR_INVALID_ARG,
                                    "opencl: %zu optimiser steps of %llu elements and "
                                    "more do not fit one launch",
                                    count, (unsigned long long)n);
        at = (at + n + group - 1) / group * group;
    }
    return at ? ocl_run(&l, at) : KILN_OK;
}

/* One node alone (a profiled run, or one that no other step follows). */
kiln_status ocl_op_step(ocl_device *dev, const kiln_node *node, size_t i)
{
    (void)i;
    return ocl_op_steps(dev, &node, 1);
}
