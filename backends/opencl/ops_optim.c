/* ops_optim.c — SGD_STEP and ADAM_STEP, in place: the node's output is its
 * parameter (src[0]), and the state tensors are updated where they lie.
 *
 * One launch steps up to OCL_STEP_SLOTS parameters: the optimiser's nodes
 * run last and back to back, so fuse.c hands a run of them here together
 * (ocl_steps_together says which), and a model's step is one launch, or a
 * few, rather than one per tensor. A work-item steps OCL_STEP_RUNS
 * elements, and each tensor starts at a multiple of what a group steps, so
 * that a group steps one (kernels/optim.cl says why). */
#include "ocl-impl.h"

_Static_assert(OCL_STEP_SLOTS == 8, "kernels/optim.cl's ulong8 slots");
/* elements per work-item (the kernels' `runs`) */
#define OCL_STEP_RUNS 8

/* src: param, grad, [m,] v, hp[, sum of squares]: how many tensors before
 * the sum of squares. */
static int step_tensors(const kiln_node *node)
{
    return node->op == KILN_OP_ADAM_STEP ? 5 : 4;
}

static const kiln_node *step_sumsq(const kiln_node *node)
{
    int at = step_tensors(node);
    return at < KILN_MAX_SRC ? node->src[at] : NULL;
}

/* The node's k-th tensor (0: the output, the parameter). */
static const kiln_node *step_tensor(const kiln_node *node, int k)
{
    return k == 0 ? node : node->src[k];
}

bool ocl_steps_together(const ocl_device *dev, const kiln_node *a, const kiln_node *b)
{
    if (a->op != b->op || step_sumsq(a) != step_sumsq(b))
        return false;
    for (int k = 0; k < step_tensors(a); k++)
        if (ocl_mem(dev, step_tensor(a, k)) != ocl_mem(dev, step_tensor(b, k)))
            return false;
    /* what one writes (the parameter, its state) the other must not touch:
     * in one launch neither would see the other's update */
    for (int k = 0; k < step_tensors(a) - 1; k++)
        for (int t = 0; t < step_tensors(b); t++)
            if (k != 1 && (kiln__overlaps(step_tensor(a, k), step_tensor(b, t)) ||
                           kiln__overlaps(step_tensor(b, k), step_tensor(a, t))))
                return false;
    return true;
}

kiln_status ocl_op_steps(ocl_device *dev, const kiln_node *const *nodes, size_t count)
{
    const kiln_node *first = nodes[0];
    int              nt    = step_tensors(first);
    ocl_kernel_id    id    = first->op == KILN_OP_ADAM_STEP ? OCL_K_ADAM_STEP : OCL_K_SGD_STEP;
    size_t           group = ocl_run_group(dev, id);
    uint64_t         span  = (uint64_t)group * OCL_STEP_RUNS; /* one group's */
    const kiln_node *s     = step_sumsq(first);
    /* per slot: at, n, then each tensor's offset */
    cl_ulong slots[2 + 5][OCL_STEP_SLOTS] = {{0}};
    uint64_t at                           = 0;
    for (size_t k = 0; k < count; k++) {
        uint64_t n = (uint64_t)nodes[k]->numel;
        if (n > UINT64_MAX - at - span)
            return dev->host->error(KILN_ERR_INVALID_ARG,
                                    "opencl: %zu optimiser steps of %llu elements and "
                                    "more do not fit one launch",
                                    count, (unsigned long long)n);
        slots[0][k] = at;
        slots[1][k] = n;
        for (int t = 0; t < nt; t++)
            slots[2 + t][k] = ocl_elem_offset(step_tensor(nodes[k], t));
        at = (at + n + span - 1) / span * span;
    }
    if (at == 0)
        return KILN_OK;
    ocl_launch l = ocl_begin(dev, id);
    for (int t = 0; t < nt; t++)
        ocl_arg_mem(&l, ocl_mem(dev, step_tensor(first, t)));
    /* without a sum of squares the kernel gets a tensor in its place */
    ocl_arg_node(&l, s ? s : first);
    ocl_arg_i32(&l, s != NULL);
    ocl_arg_u32(&l, OCL_STEP_RUNS);
    for (int v = 0; v < 2 + nt; v++)
        ocl_arg(&l, sizeof slots[v], slots[v]);
    return ocl_run(&l, at / OCL_STEP_RUNS);
}

/* One node alone (a profiled run, or one that no other step follows). */
kiln_status ocl_op_step(ocl_device *dev, const kiln_node *node, size_t i)
{
    (void)i;
    return ocl_op_steps(dev, &node, 1);
}
