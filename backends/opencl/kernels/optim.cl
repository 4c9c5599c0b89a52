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

/* Each launch steps up to 8 parameters (the optimiser's nodes that a graph
 * runs back to back), so a model's step is one launch rather than one per
 * tensor. The parameters, their gradients, their state and their
 * hyper-parameters each lie in one buffer (p, g, m, v, hp; the host groups
 * only such nodes), at offsets given per slot: slot k takes the work-items
 * elements [at.sk, at.sk + n.sk) and unused slots n = 0. A work-group of G
 * work-items steps runs * G elements of one slot (runs: the host's
 * OCL_STEP_RUNS, 8), work-item l
 * those at l, l + G, ...: neighbours read neighbouring addresses, and the
 * choice of slot, the same for the whole group, is made once for `runs`
 * elements (POCL, which runs a group as a loop, made it per element at 1.3x
 * the time of the one-tensor kernel). The host starts every slot at a
 * multiple of runs * G. s (the gradients' sum of
 * squares) is shared; each slot has its own hyper-parameters (a bias may
 * not decay). */

/* The group's slot, the one whose range holds `first`: where it begins
 * (at0), its length, and the offsets of its tensors. */
#define KILN_SGD_PICK(k)                                                       \
    if (first - at.s##k < n.s##k) {                                            \
        at0 = at.s##k;                                                         \
        len = n.s##k;                                                          \
        op = po.s##k;                                                          \
        og = go.s##k;                                                          \
        ov = vo.s##k;                                                          \
        oh = ho.s##k;                                                          \
    }
#define KILN_ADAM_PICK(k)                                                      \
    KILN_SGD_PICK(k)                                                           \
    if (first - at.s##k < n.s##k)                                              \
        om = mo.s##k;

/* d = gs * grad + wd * p;  v = momentum * v + d;  p -= lr * v
 * (hp: lr, momentum, wd, max_norm, unscale, skip) */
__kernel void kiln_sgd_step(GF *p, GCF *g, GF *v, GCF *hp, GCF *s, ulong so, int has_s,
                            uint runs, ulong8 at, ulong8 n, ulong8 po, ulong8 go,
                            ulong8 vo, ulong8 ho)
{
    ulong G = get_local_size(0), first = get_group_id(0) * G * runs;
    ulong at0 = 0, len = 0, op = 0, og = 0, ov = 0, oh = 0;
    KILN_SGD_PICK(0) KILN_SGD_PICK(1) KILN_SGD_PICK(2) KILN_SGD_PICK(3)
    KILN_SGD_PICK(4) KILN_SGD_PICK(5) KILN_SGD_PICK(6) KILN_SGD_PICK(7)
    GCF *h = hp + oh;
    if (len == 0 || kiln_step_skipped(s, so, has_s, h[5]))
        return;
    float lr = h[0], momentum = h[1], wd = h[2];
    float gs = kiln_grad_scale(s, so, has_s, h[3], h[4]);
    ulong j = first - at0 + get_local_id(0);
    for (uint r = 0; r < runs && j < len; r++, j += G) {
        float pi = p[op + j];
        float d = gs * g[og + j] + wd * pi;
        float vi = momentum * v[ov + j] + d;
        v[ov + j] = vi;
        p[op + j] = pi - lr * vi;
    }
}

/* hp: lr, beta1, beta2, eps, wd, 1/(1-beta1^t), 1/(1-beta2^t), decoupled,
 * max_norm, unscale, skip. Decoupled (AdamW): p *= 1 - lr * wd, and d has no decay. */
__kernel void kiln_adam_step(GF *p, GCF *g, GF *m, GF *v, GCF *hp, GCF *s, ulong so,
                             int has_s, uint runs, ulong8 at, ulong8 n, ulong8 po,
                             ulong8 go, ulong8 mo, ulong8 vo, ulong8 ho)
{
    ulong G = get_local_size(0), first = get_group_id(0) * G * runs;
    ulong at0 = 0, len = 0, op = 0, og = 0, om = 0, ov = 0, oh = 0;
    KILN_ADAM_PICK(0) KILN_ADAM_PICK(1) KILN_ADAM_PICK(2) KILN_ADAM_PICK(3)
    KILN_ADAM_PICK(4) KILN_ADAM_PICK(5) KILN_ADAM_PICK(6) KILN_ADAM_PICK(7)
    GCF *h = hp + oh;
    if (len == 0 || kiln_step_skipped(s, so, has_s, h[10]))
        return;
    float lr = h[0], b1 = h[1], b2 = h[2], eps = h[3];
    float wd = h[4], c1 = h[5], c2 = h[6];
    int decoupled = h[7] != 0.0f;
    float gs = kiln_grad_scale(s, so, has_s, h[8], h[9]);
    float shrink = decoupled ? 1.0f - lr * wd : 1.0f, wd_grad = decoupled ? 0.0f : wd;
    ulong j = first - at0 + get_local_id(0);
    for (uint r = 0; r < runs && j < len; r++, j += G) {
        float pi = decoupled ? shrink * p[op + j] : p[op + j];
        float d = gs * g[og + j] + wd_grad * pi;
        float mi = b1 * m[om + j] + (1.0f - b1) * d;
        float vi = b2 * v[ov + j] + (1.0f - b2) * d * d;
        m[om + j] = mi;
        v[ov + j] = vi;
        p[op + j] = pi - lr * (mi * c1) / (sqrt(vi * c2) + eps);
    }
}
