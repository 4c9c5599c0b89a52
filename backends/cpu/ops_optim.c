/* ops_optim.c — the optimiser steps SGD_STEP and ADAM_STEP, in place.
 *
 * The output is the parameter (src[0]) itself: kiln gives the node the
 * parameter's storage. The state tensors (velocity; m and v) are updated in
 * their own storage, and the hyper-parameters come from a small f32 tensor,
 * so a step reads a new learning rate or bias correction without a change to
 * the node. The formulas are PyTorch's (backend.h). */
#include <math.h>

#include "cpu-impl.h"

const char *cpu_check_step(const kiln_node *node)
{
    int n_state = node->op == KILN_OP_SGD_STEP ? 1 : 2;
    for (int s = 0; s < 2 + n_state; s++)
        if (node->src[s]->numel != node->numel)
            return "the parameter, its gradient and its state differ in number "
                   "of elements";
    if (node->src[2 + n_state]->numel != (n_state == 1 ? 4 : 8))
        return "the hyper-parameters are not f32 [4] (SGD) or [8] (Adam)";
    if (node->buffer != node->src[0]->buffer || node->offset != node->src[0]->offset)
        return "the output is not the parameter (src[0]): a step updates it in place";
    return NULL;
}

/* d = g + wd * p;  v = momentum * v + d;  p -= lr * v */
kiln_status cpu_op_sgd_step(const cpu_device *dev, const kiln_node *node)
{
    (void)dev;
    float *p = cpu_f32(node), *v = cpu_f32(node->src[2]);
    const float *g = cpu_cf32(node->src[1]), *hp = cpu_cf32(node->src[3]);
    float lr = hp[0], momentum = hp[1], wd = hp[2];
    for (int64_t i = 0; i < node->numel; i++) {
        float d = g[i] + wd * p[i];
        v[i] = momentum * v[i] + d;
        p[i] -= lr * v[i];
    }
    return KILN_OK;
}

/* d = g + wd * p;  m = b1 m + (1 - b1) d;  v = b2 v + (1 - b2) d^2;
 * p -= lr * (m * c1) / (sqrt(v * c2) + eps), c1 and c2 the bias corrections */
kiln_status cpu_op_adam_step(const cpu_device *dev, const kiln_node *node)
{
    (void)dev;
    float *p = cpu_f32(node), *m = cpu_f32(node->src[2]), *v = cpu_f32(node->src[3]);
    const float *g = cpu_cf32(node->src[1]), *hp = cpu_cf32(node->src[4]);
    float lr = hp[0], b1 = hp[1], b2 = hp[2], eps = hp[3], wd = hp[4];
    float c1 = hp[5], c2 = hp[6];
    for (int64_t i = 0; i < node->numel; i++) {
        float d = g[i] + wd * p[i];
        m[i] = b1 * m[i] + (1.0f - b1) * d;
        v[i] = b2 * v[i] + (1.0f - b2) * d * d;
        p[i] -= lr * (m[i] * c1) / (sqrtf(v[i] * c2) + eps);
    }
    return KILN_OK;
}
