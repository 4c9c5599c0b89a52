/* optim.cl — the optimiser steps, in place: the output is src[0], the
 * parameter. hp holds the hyper-parameters as backend.h lays them out; s is
 * the gradients' sum of squares (kiln_clip_grad_norm), read when has_s. */

/* The gradient's scale: unscale (0: 1), then min(1, max_norm / (norm +
 * 1e-6)) with norm = sqrt(s) * unscale, as backend.h says. */
float kiln_grad_scale(GCF *s, ulong so, int has_s, float max_norm, float unscale)
{
    float u = unscale != 0.0f ? unscale : 1.0f;
    if (!has_s || !(max_norm > 0.0f))
        return u;
    float scale = max_norm / (sqrt(s[so]) * u + 1e-6f);
    return u * (scale < 1.0f ? scale : 1.0f);
}

/* Loss scaling found an overflow: the step changes nothing. */
int kiln_step_skipped(GCF *s, ulong so, int has_s, float skip)
{
    return has_s && skip != 0.0f && !isfinite(s[so]);
}

/* d = gs * grad + wd * p;  v = momentum * v + d;  p -= lr * v
 * (hp: lr, momentum, wd, max_norm, unscale, skip) */
__kernel void kiln_sgd_step(GF *p, ulong po, GCF *g, ulong go, GF *v, ulong vo,
                            GCF *hp, ulong ho, GCF *s, ulong so, int has_s, ulong n)
{
    ulong i = get_global_id(0);
    if (i >= n)
        return;
    if (kiln_step_skipped(s, so, has_s, hp[ho + 5]))
        return;
    float lr = hp[ho], momentum = hp[ho + 1], wd = hp[ho + 2];
    float gs = kiln_grad_scale(s, so, has_s, hp[ho + 3], hp[ho + 4]);
    float pi = p[po + i];
    float d = gs * g[go + i] + wd * pi;
    float vi = momentum * v[vo + i] + d;
    v[vo + i] = vi;
    p[po + i] = pi - lr * vi;
}

/* hp: lr, beta1, beta2, eps, wd, 1/(1-beta1^t), 1/(1-beta2^t), decoupled,
 * max_norm, unscale, skip. Decoupled (AdamW): p *= 1 - lr * wd, and d has no decay. */
__kernel void kiln_adam_step(GF *p, ulong po, GCF *g, ulong go, GF *m, ulong mo,
                             GF *v, ulong vo, GCF *hp, ulong ho, GCF *s, ulong so,
                             int has_s, ulong n)
{
    ulong i = get_global_id(0);
    if (i >= n)
        return;
    if (kiln_step_skipped(s, so, has_s, hp[ho + 10]))
        return;
    float lr = hp[ho], b1 = hp[ho + 1], b2 = hp[ho + 2], eps = hp[ho + 3];
    float wd = hp[ho + 4], c1 = hp[ho + 5], c2 = hp[ho + 6];
    int decoupled = hp[ho + 7] != 0.0f;
    float gs = kiln_grad_scale(s, so, has_s, hp[ho + 8], hp[ho + 9]);
    float pi = decoupled ? (1.0f - lr * wd) * p[po + i] : p[po + i];
    float d = gs * g[go + i] + (decoupled ? 0.0f : wd) * pi;
    float mi = b1 * m[mo + i] + (1.0f - b1) * d;
    float vi = b2 * v[vo + i] + (1.0f - b2) * d * d;
    m[mo + i] = mi;
    v[vo + i] = vi;
    p[po + i] = pi - lr * (mi * c1) / (sqrt(vi * c2) + eps);
}
