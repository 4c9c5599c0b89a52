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

/* Each launch steps up to KILN_STEP_SLOTS parameters (the optimiser's nodes
 * that a graph runs back to back), so a model's step is one launch rather
 * than one per tensor. Slot k takes the work-items [at_k, at_k + n_k); the
 * host starts every slot on a work-group boundary, so a group steps one
 * tensor, and gives unused slots n = 0. s (the gradients' sum of squares)
 * is shared by the slots; each has its own hyper-parameters (a bias may not
 * decay). */
#define KILN_STEP_SLOTS 8

/* d = gs * grad + wd * p;  v = momentum * v + d;  p -= lr * v
 * (hp: lr, momentum, wd, max_norm, unscale, skip) */
void kiln_sgd_one(GF *p, GCF *g, GF *v, GCF *hp, GCF *s, ulong so, int has_s)
{
    if (kiln_step_skipped(s, so, has_s, hp[5]))
        return;
    float lr = hp[0], momentum = hp[1], wd = hp[2];
    float gs = kiln_grad_scale(s, so, has_s, hp[3], hp[4]);
    float pi = *p;
    float d = gs * *g + wd * pi;
    float vi = momentum * *v + d;
    *v = vi;
    *p = pi - lr * vi;
}

#define KILN_SGD_SLOT(k)                                                       \
    GF *p##k, ulong po##k, GCF *g##k, ulong go##k, GF *v##k, ulong vo##k,      \
        GCF *hp##k, ulong ho##k, ulong at##k, ulong n##k
#define KILN_SGD_RUN(k)                                                        \
    if (i - at##k < n##k) {                                                    \
        ulong j = i - at##k;                                                   \
        kiln_sgd_one(p##k + po##k + j, g##k + go##k + j, v##k + vo##k + j,      \
                     hp##k + ho##k, s, so, has_s);                             \
        return;                                                                \
    }

__kernel void kiln_sgd_step(GCF *s, ulong so, int has_s, KILN_SGD_SLOT(0),
                            KILN_SGD_SLOT(1), KILN_SGD_SLOT(2), KILN_SGD_SLOT(3),
                            KILN_SGD_SLOT(4), KILN_SGD_SLOT(5), KILN_SGD_SLOT(6),
                            KILN_SGD_SLOT(7))
{
    ulong i = get_global_id(0);
    /* i - at wraps past n where i < at: one compare per slot */
    KILN_SGD_RUN(0) KILN_SGD_RUN(1) KILN_SGD_RUN(2) KILN_SGD_RUN(3)
    KILN_SGD_RUN(4) KILN_SGD_RUN(5) KILN_SGD_RUN(6) KILN_SGD_RUN(7)
}

/* hp: lr, beta1, beta2, eps, wd, 1/(1-beta1^t), 1/(1-beta2^t), decoupled,
 * max_norm, unscale, skip. Decoupled (AdamW): p *= 1 - lr * wd, and d has no decay. */
void kiln_adam_one(GF *p, GCF *g, GF *m, GF *v, GCF *hp, GCF *s, ulong so, int has_s)
{
    if (kiln_step_skipped(s, so, has_s, hp[10]))
        return;
    float lr = hp[0], b1 = hp[1], b2 = hp[2], eps = hp[3];
    float wd = hp[4], c1 = hp[5], c2 = hp[6];
    int decoupled = hp[7] != 0.0f;
    float gs = kiln_grad_scale(s, so, has_s, hp[8], hp[9]);
    float pi = decoupled ? (1.0f - lr * wd) * *p : *p;
    float d = gs * *g + (decoupled ? 0.0f : wd) * pi;
    float mi = b1 * *m + (1.0f - b1) * d;
    float vi = b2 * *v + (1.0f - b2) * d * d;
    *m = mi;
    *v = vi;
    *p = pi - lr * (mi * c1) / (sqrt(vi * c2) + eps);
}

#define KILN_ADAM_SLOT(k)                                                      \
    GF *p##k, ulong po##k, GCF *g##k, ulong go##k, GF *m##k, ulong mo##k,      \
        GF *v##k, ulong vo##k, GCF *hp##k, ulong ho##k, ulong at##k, ulong n##k
#define KILN_ADAM_RUN(k)                                                       \
    if (i - at##k < n##k) {                                                    \
        ulong j = i - at##k;                                                   \
        kiln_adam_one(p##k + po##k + j, g##k + go##k + j, m##k + mo##k + j,     \
                      v##k + vo##k + j, hp##k + ho##k, s, so, has_s);          \
        return;                                                                \
    }

__kernel void kiln_adam_step(GCF *s, ulong so, int has_s, KILN_ADAM_SLOT(0),
                             KILN_ADAM_SLOT(1), KILN_ADAM_SLOT(2), KILN_ADAM_SLOT(3),
                             KILN_ADAM_SLOT(4), KILN_ADAM_SLOT(5), KILN_ADAM_SLOT(6),
                             KILN_ADAM_SLOT(7))
{
    ulong i = get_global_id(0);
    KILN_ADAM_RUN(0) KILN_ADAM_RUN(1) KILN_ADAM_RUN(2) KILN_ADAM_RUN(3)
    KILN_ADAM_RUN(4) KILN_ADAM_RUN(5) KILN_ADAM_RUN(6) KILN_ADAM_RUN(7)
}
