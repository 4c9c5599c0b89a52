/* simd-grad-template.h — the gradient kernels (relu_grad, gelu_grad, fill,
 * softmax_grad_row, cross_entropy_grad_row, whose portable twins live with
 * their forward ops) and the optimiser steps of ops_optim.c, written once
 * over simd.h's vocabulary and compiled for each x86 ISA. The including
 * file includes simd-template.h first (this uses its exp, sum, softmax_row
 * and streaming stores), keeps
 * CPU_SIMD_NAME defined, and gets CPU_SIMD_NAME(simd_grad_kernels)
 * (cpu_kernels *), which fills this part of the table.
 *
 * The formulas are the portable kernels'; results may differ from theirs in
 * the last bits (an FMA where C rounds a product and a sum apart, Cephes's
 * exp for libm's), never in special values. A row's tail is a masked vector,
 * never a scalar loop.
 */
#define CPU_SN(name) CPU_SIMD_NAME(name)
#define CPU_INLINE   static inline __attribute__((always_inline))

/* k elements at p, k <= CPU_VL: a whole vector when k is CPU_VL, so that a
 * loop over whole vectors, where k is that constant, compiles to plain loads
 * and stores. */
CPU_INLINE cpu_vf CPU_SN(gload)(const float *p, size_t k)
{
    return k == CPU_VL ? CPU_VLOADU(p) : cpu_vload_part(p, k);
}

CPU_INLINE void CPU_SN(gstore)(float *p, cpu_vf v, size_t k)
{
    if (k == CPU_VL)
        CPU_VSTOREU(p, v);
    else
        cpu_vstore_part(p, v, k);
}

/* ---- RELU_GRAD -------------------------------------------------------------------- */

/* x > 0 is an ordered compare, false for NaN: a NaN x passes 0, as in C. */
CPU_INLINE cpu_vf CPU_SN(v_relu_grad)(cpu_vf g, cpu_vf x)
{
    return CPU_VSELECT(CPU_VCMP_GT(x, CPU_VZERO()), g, CPU_VZERO());
}

/* simd-template.h's binary loop: large outputs go around the caches. */
static void CPU_SN(relu_grad)(float *out, const float *g, const float *x, size_t n)
{
    CPU_SN(binary_loop)(out, g, 1, x, 1, n, CPU_SN(v_relu_grad));
}

/* ---- GELU_GRAD ------------------------------------------------------------------- */

/* g (s + x 2 sqrt(2/pi) (1 + 3 0.044715 x^2) s (1 - s)), s (1 - s) = e r^2;
 * where |2u| > 80 the second term is below 1e-33 and is dropped (x^3 may be
 * infinite there), and gelu' is 1 or 0. */
CPU_INLINE cpu_vf CPU_SN(v_gelu_grad)(cpu_vf g, cpu_vf x)
{
    cpu_vf u2, e, r, s = CPU_SN(gelu_s)(x, &u2, &e, &r);
    cpu_vf q   = CPU_VMUL(e, CPU_VMUL(r, r));
    cpu_vf dx  = CPU_VMUL(CPU_VMUL(x, CPU_VBCAST(2.0f * 0.7978845608028654f)),
                          CPU_VFMA(CPU_VMUL(x, x), CPU_VBCAST(3.0f * 0.044715f),
                                   CPU_VBCAST(1.0f)));
    cpu_vf d   = CPU_VFMA(dx, q, s);
    cpu_vf ax  = CPU_VXOR(u2, CPU_VAND(u2, CPU_VBCAST(-0.0f)));
    cpu_vf sat = CPU_VSELECT(CPU_VCMP_LT(u2, CPU_VZERO()), CPU_VZERO(), CPU_VBCAST(1.0f));
    return CPU_VMUL(g, CPU_VSELECT(CPU_VCMP_GT(ax, CPU_VBCAST(80.0f)), sat, d));
}

static void CPU_SN(gelu_grad)(float *out, const float *g, const float *x, size_t n)
{
    CPU_SN(binary_loop)(out, g, 1, x, 1, n, CPU_SN(v_gelu_grad));
}

/* ---- EXPAND ----------------------------------------------------------------------- */

CPU_INLINE cpu_vf CPU_SN(v_first)(cpu_vf a, cpu_vf b)
{
    (void)b;
    return a;
}

/* The binary loop with both operands v broadcast (steps 0, which the inlined
 * loop folds away): only stores, streamed when large. */
static void CPU_SN(fill)(float *out, float v, size_t n)
{
    CPU_SN(binary_loop)(out, &v, 0, &v, 0, n, CPU_SN(v_first));
}

/* ---- SOFTMAX_GRAD, LOG_SOFTMAX_GRAD ------------------------------------------------- */

/* sum(g * y) over n, each product exact in double (as the portable loop's
 * (double)g * (double)y); lanes past n load as 0 and add nothing. */
static double CPU_SN(dot_double)(const float *g, const float *y, size_t n)
{
    cpu_vd s0 = CPU_VD_ZERO(), s1 = CPU_VD_ZERO(), s2 = CPU_VD_ZERO(), s3 = CPU_VD_ZERO();
    size_t i = 0;
    for (; i + 2 * CPU_VL <= n; i += 2 * CPU_VL) {
        cpu_vf a = CPU_VLOADU(g + i), b = CPU_VLOADU(y + i);
        cpu_vf c = CPU_VLOADU(g + i + CPU_VL), d = CPU_VLOADU(y + i + CPU_VL);
        s0 = CPU_VD_FMA(CPU_VD_LO(a), CPU_VD_LO(b), s0);
        s1 = CPU_VD_FMA(CPU_VD_HI(a), CPU_VD_HI(b), s1);
        s2 = CPU_VD_FMA(CPU_VD_LO(c), CPU_VD_LO(d), s2);
        s3 = CPU_VD_FMA(CPU_VD_HI(c), CPU_VD_HI(d), s3);
    }
    for (; i < n; i += CPU_VL) {
        size_t k = n - i < CPU_VL ? n - i : CPU_VL;
        cpu_vf a = cpu_vload_part(g + i, k), b = cpu_vload_part(y + i, k);
        s0 = CPU_VD_FMA(CPU_VD_LO(a), CPU_VD_LO(b), s0);
        s1 = CPU_VD_FMA(CPU_VD_HI(a), CPU_VD_HI(b), s1);
    }
    return CPU_VD_HSUM(CPU_VD_ADD(CPU_VD_ADD(s0, s1), CPU_VD_ADD(s2, s3)));
}

CPU_INLINE void CPU_SN(softmax_grad_at)(float *out, const float *g, const float *y,
                                        size_t k, cpu_vf s)
{
    cpu_vf vy = CPU_SN(gload)(y, k);
    CPU_SN(gstore)(out, CPU_VMUL(vy, CPU_VSUB(CPU_SN(gload)(g, k), s)), k);
}

CPU_INLINE void CPU_SN(log_softmax_grad_at)(float *out, const float *g, const float *y,
                                            size_t k, cpu_vf s)
{
    cpu_vf e = CPU_SN(vexp)(CPU_SN(gload)(y, k));
    CPU_SN(gstore)(out, CPU_VFNMA(e, s, CPU_SN(gload)(g, k)), k);
}

/* softmax: y * (g - sum(g * y)); log_softmax: g - exp(y) * sum(g). Both
 * sums are taken before anything is written, so out may be g or y. */
static void CPU_SN(softmax_grad_row)(float *out, const float *g, const float *y, size_t n,
                                     bool as_log)
{
    size_t i = 0;
    if (as_log) {
        cpu_vf s = CPU_VBCAST((float)CPU_SN(sum)(g, n, 1));
        for (; i + CPU_VL <= n; i += CPU_VL)
            CPU_SN(log_softmax_grad_at)(out + i, g + i, y + i, CPU_VL, s);
        if (i < n)
            CPU_SN(log_softmax_grad_at)(out + i, g + i, y + i, n - i, s);
        return;
    }
    cpu_vf s = CPU_VBCAST((float)CPU_SN(dot_double)(g, y, n));
    for (; i + CPU_VL <= n; i += CPU_VL)
        CPU_SN(softmax_grad_at)(out + i, g + i, y + i, CPU_VL, s);
    if (i < n)
        CPU_SN(softmax_grad_at)(out + i, g + i, y + i, n - i, s);
}

/* ---- CROSS_ENTROPY_GRAD ------------------------------------------------------------- */

/* The row's softmax, then (p - one_hot) * scale in one more pass: the label's
 * element is put right after it, from its probability kept aside, so that
 * each element is rounded as the portable kernel rounds it. */
static void CPU_SN(cross_entropy_grad_row)(float *out, const float *x, size_t n,
                                           size_t label, float scale)
{
    CPU_SN(softmax_row)(out, x, n, false);
    float  p  = out[label];
    cpu_vf vs = CPU_VBCAST(scale);
    size_t i  = 0;
    for (; i + CPU_VL <= n; i += CPU_VL)
        CPU_VSTOREU(out + i, CPU_VMUL(CPU_VLOADU(out + i), vs));
    if (i < n)
        cpu_vstore_part(out + i, CPU_VMUL(cpu_vload_part(out + i, n - i), vs), n - i);
    out[label] = (p - 1.0f) * scale;
}

/* ---- SGD_STEP, ADAM_STEP -------------------------------------------------------------- */

/* hp as cpu_op_*_step resolves it (cpu-impl.h): SGD lr, momentum, weight
 * decay, gradient scale; Adam lr, beta1, beta2, eps, weight decay, the two
 * bias corrections, the weights' decay factor, gradient scale. */
typedef struct CPU_SN(step_hp) {
    cpu_vf lr, momentum, b1, b2, eps, wd, c1, c2, one_b1, one_b2, shrink, gs;
} CPU_SN(step_hp);

/* d = gs * g + wd * p;  v = momentum * v + d;  p -= lr * v */
CPU_INLINE void CPU_SN(sgd_at)(float *p, float *v, const float *g, size_t k,
                               const CPU_SN(step_hp) * h)
{
    cpu_vf vp = CPU_SN(gload)(p, k);
    cpu_vf d  = CPU_VFMA(h->wd, vp, CPU_VMUL(h->gs, CPU_SN(gload)(g, k)));
    cpu_vf vv = CPU_VFMA(h->momentum, CPU_SN(gload)(v, k), d);
    CPU_SN(gstore)(v, vv, k);
    CPU_SN(gstore)(p, CPU_VFNMA(h->lr, vv, vp), k);
}

static void CPU_SN(sgd_step)(float *p, float *v, const float *g, const float *hp,
                             size_t n)
{
    CPU_SN(step_hp)
    h = {.lr       = CPU_VBCAST(hp[0]),
         .momentum = CPU_VBCAST(hp[1]),
         .wd       = CPU_VBCAST(hp[2]),
         .gs       = CPU_VBCAST(hp[3])};
    size_t i = 0;
    for (; i + CPU_VL <= n; i += CPU_VL)
        CPU_SN(sgd_at)(p + i, v + i, g + i, CPU_VL, &h);
    if (i < n)
        CPU_SN(sgd_at)(p + i, v + i, g + i, n - i, &h);
}

/* p *= shrink;  d = gs * g + wd * p;  m = b1 m + (1 - b1) d;
 * v = b2 v + (1 - b2) d^2;  p -= lr * (m * c1) / (sqrt(v * c2) + eps).
 * The square root is of
 * max(v * c2, 0): maxps gives its second operand for a NaN, so a negative or
 * NaN v * c2 counts as 0, as the portable kernel's vc >= 0 test has it. */
CPU_INLINE void CPU_SN(adam_at)(float *p, float *m, float *v, const float *g, size_t k,
                                const CPU_SN(step_hp) * h)
{
    cpu_vf vp = CPU_VMUL(h->shrink, CPU_SN(gload)(p, k));
    cpu_vf d  = CPU_VFMA(h->wd, vp, CPU_VMUL(h->gs, CPU_SN(gload)(g, k)));
    cpu_vf vm = CPU_VFMA(h->b1, CPU_SN(gload)(m, k), CPU_VMUL(h->one_b1, d));
    cpu_vf vv = CPU_VFMA(h->b2, CPU_SN(gload)(v, k), CPU_VMUL(CPU_VMUL(h->one_b2, d), d));
    CPU_SN(gstore)(m, vm, k);
    CPU_SN(gstore)(v, vv, k);
    cpu_vf den  = CPU_VADD(CPU_VSQRT(CPU_VMAX(CPU_VMUL(vv, h->c2), CPU_VZERO())), h->eps);
    cpu_vf step = CPU_VMUL(h->lr, CPU_VMUL(vm, h->c1));
    CPU_SN(gstore)(p, CPU_VSUB(vp, CPU_VDIV(step, den)), k);
}

static void CPU_SN(adam_step)(float *p, float *m, float *v, const float *g,
                              const float *hp, size_t n)
{
    CPU_SN(step_hp)
    h = {
        .lr     = CPU_VBCAST(hp[0]),
        .b1     = CPU_VBCAST(hp[1]),
        .b2     = CPU_VBCAST(hp[2]),
        .eps    = CPU_VBCAST(hp[3]),
        .wd     = CPU_VBCAST(hp[4]),
        .c1     = CPU_VBCAST(hp[5]),
        .c2     = CPU_VBCAST(hp[6]),
        .one_b1 = CPU_VBCAST(1.0f - hp[1]),
        .one_b2 = CPU_VBCAST(1.0f - hp[2]),
        .shrink = CPU_VBCAST(hp[7]),
        .gs     = CPU_VBCAST(hp[8]),
    };
    size_t i = 0;
    for (; i + CPU_VL <= n; i += CPU_VL)
        CPU_SN(adam_at)(p + i, m + i, v + i, g + i, CPU_VL, &h);
    if (i < n)
        CPU_SN(adam_at)(p + i, m + i, v + i, g + i, n - i, &h);
}

void CPU_SN(simd_grad_kernels)(cpu_kernels *k)
{
    k->relu_grad              = CPU_SN(relu_grad);
    k->fill                   = CPU_SN(fill);
    k->softmax_grad_row       = CPU_SN(softmax_grad_row);
    k->cross_entropy_grad_row = CPU_SN(cross_entropy_grad_row);
    k->sgd_step               = CPU_SN(sgd_step);
    k->adam_step              = CPU_SN(adam_step);
    k->gelu_grad              = CPU_SN(gelu_grad);
}

#undef CPU_SN
#undef CPU_INLINE
