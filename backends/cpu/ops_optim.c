/* ops_optim.c — the optimiser steps SGD_STEP and ADAM_STEP, in place.
 *
 * The output is the parameter (src[0]) itself: kiln gives the node the
 * parameter's storage. The state tensors (velocity; m and v) are updated in
 * their own storage, and the hyper-parameters come from a small f32 tensor,
 * so a step reads a new learning rate or bias correction without a change to
 * the node. The formulas are PyTorch's (backend.h). The loops over a range of
 * elements are the device's kernels (cpu_kernels; the portable ones are
 * here), which an ISA may replace. */
#include <math.h>

#include "cpu-impl.h"


/* d = gs * g + wd * p;  v = momentum * v + d;  p -= lr * v */
static void cpu_sgd_step_scalar(float *p, float *v, const float *g, const float *hp,
                                size_t n)
{
    float lr = hp[0], momentum = hp[1], wd = hp[2], gs = hp[3];
    for (size_t i = 0; i < n; i++) {
        float d = gs * g[i] + wd * p[i];
        v[i]    = momentum * v[i] + d;
        p[i] -= lr * v[i];
    }
}

/* p *= shrink;  d = gs * g + wd * p;  m = b1 m + (1 - b1) d;
 * v = b2 v + (1 - b2) d^2;  p -= lr * (m * c1) / (sqrt(v * c2) + eps), c1
 * and c2 the bias corrections.
 * v * c2 is never negative, so __builtin_sqrtf needs no errno path and the
 * loop vectorises. */
static void cpu_adam_step_scalar(float *p, float *m, float *v, const float *g,
                                 const float *hp, size_t n)
{
    float lr = hp[0], b1 = hp[1], b2 = hp[2], eps = hp[3], wd = hp[4];
    float c1 = hp[5], c2 = hp[6], shrink = hp[7], gs = hp[8];
    for (size_t i = 0; i < n; i++) {
        float pi = shrink * p[i];
        float d  = gs * g[i] + wd * pi;
        m[i]     = b1 * m[i] + (1.0f - b1) * d;
        v[i]     = b2 * v[i] + (1.0f - b2) * d * d;
        float vc = v[i] * c2;
        p[i] = pi - lr * (m[i] * c1) / ((vc >= 0.0f ? __builtin_sqrtf(vc) : 0.0f) + eps);
    }
}

void cpu_optim_kernels_scalar(cpu_kernels *k)
{
    k->sgd_step  = cpu_sgd_step_scalar;
    k->adam_step = cpu_adam_step_scalar;
}

/* The tensors and hyper-parameters of one step; hp as the kernels take it
 * (cpu-impl.h): backend.h's, resolved below. */
typedef struct cpu_step_job {
    const cpu_device *dev;
    float            *p, *s1, *s2; /* param; velocity, or Adam's m and v */
    const float      *g, *hp;
} cpu_step_job;

/* The factor every gradient is scaled by: `unscale` (0: 1), then min(1,
 * max_norm / (norm + 1e-6)) with norm = sqrt(s) * unscale when the node has
 * the sum of squares s (its source `at`) and max_norm > 0, as
 * torch.nn.utils.clip_grad_norm_. *skip: `skip` is set and s is not finite
 * (loss scaling found an overflow): the step must change nothing. */
static float cpu_grad_scale(const kiln_node *node, int at, float max_norm, float unscale,
                            float skip, bool *skipped)
{
    const float *s = at < KILN_MAX_SRC && node->src[at] ? cpu_cf32(node->src[at]) : NULL;
    float        u = unscale != 0.0f ? unscale : 1.0f;
    *skipped       = s && skip != 0.0f && !isfinite(s[0]);
    if (!s || !(max_norm > 0.0f))
        return u;
    float scale = max_norm / (sqrtf(s[0]) * u + 1e-6f);
    return u * (scale < 1.0f ? scale : 1.0f); /* a NaN norm gives NaN, as PyTorch */
}

static void cpu_sgd_range(void *arg, size_t lo, size_t hi)
{
    const cpu_step_job *j = arg;
    j->dev->k.sgd_step(j->p + lo, j->s1 + lo, j->g + lo, j->hp, hi - lo);
}

kiln_status cpu_op_sgd_step(const cpu_device *dev, const kiln_node *node)
{
    const float *hp = cpu_cf32(node->src[3]);
    bool         skip;
    const float  eff[4] = {hp[0], hp[1], hp[2],
                           cpu_grad_scale(node, 4, hp[3], hp[4], hp[5], &skip)};
    if (skip)
        return KILN_OK;
    cpu_step_job job    = {dev,  cpu_f32(node),          cpu_f32(node->src[2]),
                           NULL, cpu_cf32(node->src[1]), eff};
    cpu_parallel_for(dev, (size_t)node->numel, 16, CPU_ELEMENTWISE_GRAIN, cpu_sgd_range,
                     &job);
    return KILN_OK;
}

static void cpu_adam_range(void *arg, size_t lo, size_t hi)
{
    const cpu_step_job *j = arg;
    j->dev->k.adam_step(j->p + lo, j->s1 + lo, j->s2 + lo, j->g + lo, j->hp, hi - lo);
}

kiln_status cpu_op_adam_step(const cpu_device *dev, const kiln_node *node)
{
    /* AdamW (hp[7] = 1) shrinks the weights and adds no decay to d */
    const float *hp        = cpu_cf32(node->src[4]);
    bool         decoupled = hp[7] != 0.0f, skip;
    const float  gs        = cpu_grad_scale(node, 5, hp[8], hp[9], hp[10], &skip);
    if (skip)
        return KILN_OK;
    const float eff[9] = {hp[0],
                              hp[1],
                              hp[2],
                              hp[3],
                              decoupled ? 0.0f : hp[4],
                              hp[5],
                              hp[6],
                              decoupled ? 1.0f - hp[0] * hp[4] : 1.0f,
                              gs};
    cpu_step_job job       = {dev,
                              cpu_f32(node),
                              cpu_f32(node->src[2]),
                              cpu_f32(node->src[3]),
                              cpu_cf32(node->src[1]),
                              eff};
    cpu_parallel_for(dev, (size_t)node->numel, 16, CPU_ELEMENTWISE_GRAIN, cpu_adam_range,
                     &job);
    return KILN_OK;
}
