/* optim.cl — the optimiser steps, in place: the output is src[0], the
 * parameter. hp holds the hyper-parameters as backend.h lays them out. */

/* d = grad + wd * p;  v = momentum * v + d;  p -= lr * v   (hp: lr, momentum, wd) */
__kernel void kiln_sgd_step(GF *p, ulong po, GCF *g, ulong go, GF *v, ulong vo,
                            GCF *hp, ulong ho, ulong n)
{
    ulong i = get_global_id(0);
    if (i >= n)
        return;
    float lr = hp[ho], momentum = hp[ho + 1], wd = hp[ho + 2];
    float pi = p[po + i];
    float d = g[go + i] + wd * pi;
    float vi = momentum * v[vo + i] + d;
    v[vo + i] = vi;
    p[po + i] = pi - lr * vi;
}

/* hp: lr, beta1, beta2, eps, wd, 1/(1-beta1^t), 1/(1-beta2^t) */
__kernel void kiln_adam_step(GF *p, ulong po, GCF *g, ulong go, GF *m, ulong mo,
                             GF *v, ulong vo, GCF *hp, ulong ho, ulong n)
{
    ulong i = get_global_id(0);
    if (i >= n)
        return;
    float lr = hp[ho], b1 = hp[ho + 1], b2 = hp[ho + 2], eps = hp[ho + 3];
    float wd = hp[ho + 4], c1 = hp[ho + 5], c2 = hp[ho + 6];
    float pi = p[po + i];
    float d = g[go + i] + wd * pi;
    float mi = b1 * m[mo + i] + (1.0f - b1) * d;
    float vi = b2 * v[vo + i] + (1.0f - b2) * d * d;
    m[mo + i] = mi;
    v[vo + i] = vi;
    p[po + i] = pi - lr * (mi * c1) / (sqrt(vi * c2) + eps);
}
