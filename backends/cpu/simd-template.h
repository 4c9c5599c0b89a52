/* simd-template.h — elementwise, reduction and softmax kernels, written once
 * over simd.h's vocabulary and compiled for each x86 ISA. The including file
 * defines CPU_SIMD_NAME(name) (e.g. cpu_##name##_avx2) and gets
 * CPU_SIMD_NAME(simd_kernels)(cpu_kernels *), which fills the table.
 *
 * exp and log are Cephes' single-precision polynomials (a few ulp, inside
 * the op suite's tolerances); tanh and sigmoid are built on exp. Special
 * values follow libm: exp(-inf) = 0, exp(+inf) = inf, log(0) = -inf, log of a
 * negative = NaN, and NaN in gives NaN out. A row's tail is a masked vector,
 * never a scalar loop. Outputs of more than CPU_STREAM_BYTES go around the
 * caches (non-temporal stores): they would only evict the inputs.
 */
#include <math.h>
#include <stdint.h>

#define CPU_STREAM_BYTES ((size_t)8 << 20)

#define CPU_SN(name) CPU_SIMD_NAME(name)
#define CPU_INLINE   static inline __attribute__((always_inline))

/* ---- math ------------------------------------------------------------------ */

/* p * 2^n for integer-valued n in [-150, 128], so that results in the
 * subnormal range and overflow to inf come out as a single multiplication
 * would give them: AVX-512's scalef does it in one instruction; elsewhere 2^n
 * is two factors that are each a normal float. */
CPU_INLINE cpu_vf CPU_SN(exp_scale)(cpu_vf p, cpu_vf n)
{
#if defined(CPU_VSCALEF)
    return CPU_VSCALEF(p, n);
#else
    cpu_vi ni = CPU_VCVT_I(n);
    cpu_vi n1 = CPU_VCVT_I(CPU_VMUL(n, CPU_VBCAST(0.5f))); /* [-75, 64] */
    cpu_vi n2 = CPU_VI_SUB(ni, n1);
    cpu_vf s1 = CPU_I_AS_V(CPU_VI_SHL(CPU_VI_ADD(n1, CPU_VI_BCAST(127)), 23));
    cpu_vf s2 = CPU_I_AS_V(CPU_VI_SHL(CPU_VI_ADD(n2, CPU_VI_BCAST(127)), 23));
    return CPU_VMUL(CPU_VMUL(p, s1), s2);
#endif
}

/* The clamp keeps a NaN (max and min give their second operand when either
 * is NaN), and scalef passes it on; the two-factor scale does not, so there a
 * NaN is put back at the end. */
CPU_INLINE cpu_vf CPU_SN(vexp)(cpu_vf x)
{
    cpu_vf t = CPU_VMIN(CPU_VBCAST(89.0f), CPU_VMAX(CPU_VBCAST(-104.0f), x));
    cpu_vf n = CPU_VROUND(CPU_VMUL(t, CPU_VBCAST(1.44269504088896341f)));
    cpu_vf r = CPU_VFNMA(n, CPU_VBCAST(0.693359375f), t);
    r        = CPU_VFNMA(n, CPU_VBCAST(-2.12194440e-4f), r);
    cpu_vf p = CPU_VBCAST(1.9875691500e-4f);
    p        = CPU_VFMA(p, r, CPU_VBCAST(1.3981999507e-3f));
    p        = CPU_VFMA(p, r, CPU_VBCAST(8.3334519073e-3f));
    p        = CPU_VFMA(p, r, CPU_VBCAST(4.1665795894e-2f));
    p        = CPU_VFMA(p, r, CPU_VBCAST(1.6666665459e-1f));
    p        = CPU_VFMA(p, r, CPU_VBCAST(5.0000001201e-1f));
    p        = CPU_VFMA(p, CPU_VMUL(r, r), CPU_VADD(r, CPU_VBCAST(1.0f)));
#if defined(CPU_VSCALEF)
    return CPU_SN(exp_scale)(p, n);
#else
    return CPU_VSELECT(CPU_VCMP_NAN(x), x, CPU_SN(exp_scale)(p, n));
#endif
}

CPU_INLINE cpu_vf CPU_SN(vlog)(cpu_vf x)
{
    const cpu_vf one = CPU_VBCAST(1.0f);
    /* subnormals: scale into the normal range first */
    cpu_vmask tiny = CPU_VCMP_LT(x, CPU_VBCAST(1.17549435e-38f));
    cpu_vf    xs   = CPU_VSELECT(tiny, CPU_VMUL(x, CPU_VBCAST(8388608.0f)), x);
    cpu_vi    bits = CPU_V_AS_I(xs);
    cpu_vf    e    = CPU_VI_TO_F(CPU_VI_SUB(CPU_VI_SRL(bits, 23), CPU_VI_BCAST(126)));
    e              = CPU_VSUB(e, CPU_VSELECT(tiny, CPU_VBCAST(23.0f), CPU_VZERO()));
    /* m in [0.5, 1) */
    cpu_vf m = CPU_I_AS_V(
        CPU_VI_OR(CPU_VI_AND(bits, CPU_VI_BCAST(0x007fffff)), CPU_VI_BCAST(0x3f000000)));
    cpu_vmask small = CPU_VCMP_LT(m, CPU_VBCAST(0.707106781186547524f));
    e               = CPU_VSUB(e, CPU_VSELECT(small, one, CPU_VZERO()));
    m               = CPU_VSUB(CPU_VADD(m, CPU_VSELECT(small, m, CPU_VZERO())), one);
    cpu_vf z        = CPU_VMUL(m, m);
    cpu_vf y        = CPU_VBCAST(7.0376836292e-2f);
    y               = CPU_VFMA(y, m, CPU_VBCAST(-1.1514610310e-1f));
    y               = CPU_VFMA(y, m, CPU_VBCAST(1.1676998740e-1f));
    y               = CPU_VFMA(y, m, CPU_VBCAST(-1.2420140846e-1f));
    y               = CPU_VFMA(y, m, CPU_VBCAST(1.4249322787e-1f));
    y               = CPU_VFMA(y, m, CPU_VBCAST(-1.6668057665e-1f));
    y               = CPU_VFMA(y, m, CPU_VBCAST(2.0000714765e-1f));
    y               = CPU_VFMA(y, m, CPU_VBCAST(-2.4999993993e-1f));
    y               = CPU_VFMA(y, m, CPU_VBCAST(3.3333331174e-1f));
    y               = CPU_VMUL(CPU_VMUL(y, m), z);
    y               = CPU_VFMA(e, CPU_VBCAST(-2.12194440e-4f), y);
    y               = CPU_VFNMA(z, CPU_VBCAST(0.5f), y);
    cpu_vf r        = CPU_VFMA(e, CPU_VBCAST(0.693359375f), CPU_VADD(m, y));
    /* x = 0: -inf; x < 0 or NaN: NaN; x = inf: inf */
    r             = CPU_VSELECT(CPU_VCMP_EQ(x, CPU_VZERO()), CPU_VBCAST(-INFINITY), r);
    r             = CPU_VSELECT(CPU_VCMP_EQ(x, CPU_VBCAST(INFINITY)), x, r);
    cpu_vmask bad = CPU_VMASK_OR(CPU_VCMP_LT(x, CPU_VZERO()), CPU_VCMP_NAN(x));
    return CPU_VSELECT(bad, CPU_VBCAST(NAN), r);
}

/* 1 / d for d in [1, 2^127]: the hardware estimate (12 or 14 bits) and one
 * Newton step, a few ulp; a division would cost several times more. */
CPU_INLINE cpu_vf CPU_SN(vrcp)(cpu_vf d)
{
    cpu_vf r = CPU_VRCP_APPROX(d);
    return CPU_VFMA(r, CPU_VFNMA(d, r, CPU_VBCAST(1.0f)), r);
}

/* sign(x) * (1 - 2 / (e^2|x| + 1)), with a polynomial near 0 where that
 * formula would cancel (Cephes tanhf). 2|x| is capped at 88, where tanh is 1
 * in f32, so that e stays finite (min keeps a NaN: it is the second operand). */
CPU_INLINE cpu_vf CPU_SN(vtanh)(cpu_vf x)
{
    const cpu_vf sign = CPU_VBCAST(-0.0f);
    cpu_vf       ax   = CPU_VXOR(x, CPU_VAND(x, sign));
    cpu_vf       z    = CPU_VMUL(x, x);
    cpu_vf       p    = CPU_VBCAST(-5.70498872745e-3f);
    p                 = CPU_VFMA(p, z, CPU_VBCAST(2.06390887954e-2f));
    p                 = CPU_VFMA(p, z, CPU_VBCAST(-5.37397155531e-2f));
    p                 = CPU_VFMA(p, z, CPU_VBCAST(1.33314422036e-1f));
    p                 = CPU_VFMA(p, z, CPU_VBCAST(-3.33332819422e-1f));
    cpu_vf small      = CPU_VFMA(CPU_VMUL(p, z), x, x);
    cpu_vf e          = CPU_SN(vexp)(CPU_VMIN(CPU_VBCAST(88.0f), CPU_VADD(ax, ax)));
    cpu_vf big = CPU_VFNMA(CPU_VBCAST(2.0f), CPU_SN(vrcp)(CPU_VADD(e, CPU_VBCAST(1.0f))),
                           CPU_VBCAST(1.0f));
    big        = CPU_VXOR(big, CPU_VAND(x, sign));
    return CPU_VSELECT(CPU_VCMP_LT(ax, CPU_VBCAST(0.625f)), small, big);
}

/* 1 / (1 + e^-x), with -x capped at 88 (sigmoid(-88) is 6e-39: 0 within
 * any tolerance) so that the reciprocal's argument stays finite. */
CPU_INLINE cpu_vf CPU_SN(vsigmoid)(cpu_vf x)
{
    cpu_vf e = CPU_SN(vexp)(CPU_VMIN(CPU_VBCAST(88.0f), CPU_VXOR(x, CPU_VBCAST(-0.0f))));
    return CPU_SN(vrcp)(CPU_VADD(CPU_VBCAST(1.0f), e));
}

/* GELU's parts, with the portable kernel's formulas (ops_elementwise.c):
 * 2u = 2 sqrt(2/pi) x (1 + 0.044715 x^2), e = exp(-|2u|) <= 1 (so 1 + e
 * is in the reciprocal's range), r = 1 / (1 + e), and s = sigmoid(2u), r
 * or e r. A NaN x makes every part NaN. */
CPU_INLINE cpu_vf CPU_SN(gelu_s)(cpu_vf x, cpu_vf *u2, cpu_vf *e, cpu_vf *r)
{
    const cpu_vf sign = CPU_VBCAST(-0.0f), one = CPU_VBCAST(1.0f);
    cpu_vf       x2 = CPU_VMUL(x, x);
    *u2             = CPU_VMUL(CPU_VMUL(x, CPU_VBCAST(2.0f * 0.7978845608028654f)),
                               CPU_VFMA(x2, CPU_VBCAST(0.044715f), one));
    cpu_vf ax       = CPU_VXOR(*u2, CPU_VAND(*u2, sign));
    *e              = CPU_SN(vexp)(CPU_VXOR(ax, sign));
    *r              = CPU_SN(vrcp)(CPU_VADD(one, *e));
    return CPU_VSELECT(CPU_VCMP_LT(*u2, CPU_VZERO()), CPU_VMUL(*e, *r), *r);
}

/* x s; 0 where 2u < -80, where x s is below 1e-33 anyway (vexp's clamp
 * would otherwise leave -inf * a tiny s = -inf for x = -inf). */
CPU_INLINE cpu_vf CPU_SN(vgelu)(cpu_vf x)
{
    cpu_vf u2, e, r, s = CPU_SN(gelu_s)(x, &u2, &e, &r);
    return CPU_VSELECT(CPU_VCMP_LT(u2, CPU_VBCAST(-80.0f)), CPU_VZERO(), CPU_VMUL(x, s));
}

/* ---- elementwise loops ---------------------------------------------------- */

typedef cpu_vf (*CPU_SN(vunary))(cpu_vf x, cpu_vf p);
typedef cpu_vf (*CPU_SN(vbinary))(cpu_vf a, cpu_vf b);

CPU_INLINE void CPU_SN(store)(float *p, cpu_vf v, bool stream)
{
    if (stream)
        CPU_VSTREAM(p, v);
    else
        CPU_VSTOREU(p, v);
}

/* Elements before out + head are stored normally, so that the streaming
 * stores after them are aligned; 0 when not streaming. */
static inline size_t CPU_SN(stream_head)(const float *out, size_t n)
{
    if (n * sizeof(float) < CPU_STREAM_BYTES)
        return SIZE_MAX;
    size_t mis = ((uintptr_t)out & 63) / sizeof(float);
    return mis ? 16 - mis : 0;
}

CPU_INLINE void CPU_SN(unary_loop)(float *out, const float *x, size_t n, float p,
                                   CPU_SN(vunary) f)
{
    cpu_vf vp = CPU_VBCAST(p);
    size_t i = 0, head = CPU_SN(stream_head)(out, n);
    bool   stream = head != SIZE_MAX;
    if (stream) {
        for (; i < head; i += CPU_VL) {
            size_t k = head - i < CPU_VL ? head - i : CPU_VL;
            cpu_vstore_part(out + i, f(cpu_vload_part(x + i, k), vp), k);
        }
        i = head;
    }
    for (; i + 2 * CPU_VL <= n; i += 2 * CPU_VL) {
        cpu_vf a = f(CPU_VLOADU(x + i), vp), b = f(CPU_VLOADU(x + i + CPU_VL), vp);
        CPU_SN(store)(out + i, a, stream);
        CPU_SN(store)(out + i + CPU_VL, b, stream);
    }
    for (; i < n; i += CPU_VL) {
        size_t k = n - i < CPU_VL ? n - i : CPU_VL;
        cpu_vstore_part(out + i, f(cpu_vload_part(x + i, k), vp), k);
    }
    if (stream)
        _mm_sfence();
}

/* a_step and b_step are 0 (one element, broadcast) or 1. */
CPU_INLINE void CPU_SN(binary_loop)(float *out, const float *a, size_t a_step,
                                    const float *b, size_t b_step, size_t n,
                                    CPU_SN(vbinary) f)
{
    cpu_vf va = a_step ? CPU_VZERO() : CPU_VBCAST(a[0]);
    cpu_vf vb = b_step ? CPU_VZERO() : CPU_VBCAST(b[0]);
    size_t i = 0, head = CPU_SN(stream_head)(out, n);
    bool   stream = head != SIZE_MAX;
    for (; stream && i < head; i += CPU_VL) {
        size_t k = head - i < CPU_VL ? head - i : CPU_VL;
        cpu_vf x = a_step ? cpu_vload_part(a + i, k) : va;
        cpu_vf y = b_step ? cpu_vload_part(b + i, k) : vb;
        cpu_vstore_part(out + i, f(x, y), k);
    }
    if (stream)
        i = head;
    for (; i + CPU_VL <= n; i += CPU_VL) {
        cpu_vf x = a_step ? CPU_VLOADU(a + i) : va;
        cpu_vf y = b_step ? CPU_VLOADU(b + i) : vb;
        CPU_SN(store)(out + i, f(x, y), stream);
    }
    if (i < n) {
        size_t k = n - i;
        cpu_vf x = a_step ? cpu_vload_part(a + i, k) : va;
        cpu_vf y = b_step ? cpu_vload_part(b + i, k) : vb;
        cpu_vstore_part(out + i, f(x, y), k);
    }
    if (stream)
        _mm_sfence();
}

CPU_INLINE cpu_vf CPU_SN(v_add)(cpu_vf a, cpu_vf b)
{
    return CPU_VADD(a, b);
}
CPU_INLINE cpu_vf CPU_SN(v_sub)(cpu_vf a, cpu_vf b)
{
    return CPU_VSUB(a, b);
}
CPU_INLINE cpu_vf CPU_SN(v_mul)(cpu_vf a, cpu_vf b)
{
    return CPU_VMUL(a, b);
}
CPU_INLINE cpu_vf CPU_SN(v_div)(cpu_vf a, cpu_vf b)
{
    return CPU_VDIV(a, b);
}

#define CPU_SIMD_BINARY(op)                                                           \
    static void CPU_SN(op)(float *out, const float *a, size_t a_step, const float *b, \
                           size_t b_step, size_t n)                                   \
    {                                                                                 \
        CPU_SN(binary_loop)(out, a, a_step, b, b_step, n, CPU_SN(v_##op));            \
    }

CPU_SIMD_BINARY(add)
CPU_SIMD_BINARY(sub)
CPU_SIMD_BINARY(mul)
CPU_SIMD_BINARY(div)

/* relu keeps NaN and -0.0 (as x < 0 ? 0 : x): maxps gives its second operand
 * when either is NaN, and 0 > -0 is false. */
CPU_INLINE cpu_vf CPU_SN(v_neg)(cpu_vf x, cpu_vf p)
{
    (void)p;
    return CPU_VXOR(x, CPU_VBCAST(-0.0f));
}
CPU_INLINE cpu_vf CPU_SN(v_exp)(cpu_vf x, cpu_vf p)
{
    (void)p;
    return CPU_SN(vexp)(x);
}
CPU_INLINE cpu_vf CPU_SN(v_log)(cpu_vf x, cpu_vf p)
{
    (void)p;
    return CPU_SN(vlog)(x);
}
CPU_INLINE cpu_vf CPU_SN(v_sqrt)(cpu_vf x, cpu_vf p)
{
    (void)p;
    return CPU_VSQRT(x);
}
CPU_INLINE cpu_vf CPU_SN(v_relu)(cpu_vf x, cpu_vf p)
{
    (void)p;
    return CPU_VMAX(CPU_VZERO(), x);
}
CPU_INLINE cpu_vf CPU_SN(v_sigmoid)(cpu_vf x, cpu_vf p)
{
    (void)p;
    return CPU_SN(vsigmoid)(x);
}
CPU_INLINE cpu_vf CPU_SN(v_tanh)(cpu_vf x, cpu_vf p)
{
    (void)p;
    return CPU_SN(vtanh)(x);
}
CPU_INLINE cpu_vf CPU_SN(v_gelu)(cpu_vf x, cpu_vf p)
{
    (void)p;
    return CPU_SN(vgelu)(x);
}
CPU_INLINE cpu_vf CPU_SN(v_scale)(cpu_vf x, cpu_vf p)
{
    return CPU_VMUL(x, p);
}

#define CPU_SIMD_UNARY(op)                                                \
    static void CPU_SN(op)(float *out, const float *x, size_t n, float p) \
    {                                                                     \
        CPU_SN(unary_loop)(out, x, n, p, CPU_SN(v_##op));                 \
    }

CPU_SIMD_UNARY(neg)
CPU_SIMD_UNARY(exp)
CPU_SIMD_UNARY(log)
CPU_SIMD_UNARY(sqrt)
CPU_SIMD_UNARY(relu)
CPU_SIMD_UNARY(sigmoid)
CPU_SIMD_UNARY(tanh)
CPU_SIMD_UNARY(scale)

static void CPU_SN(gelu)(float *out, const float *x, size_t n)
{
    CPU_SN(unary_loop)(out, x, n, 0.0f, CPU_SN(v_gelu));
}

static void CPU_SN(add_relu)(float *sum, float *relu, const float *a, size_t a_step,
                             const float *b, size_t b_step, size_t n)
{
    cpu_vf va = a_step ? CPU_VZERO() : CPU_VBCAST(a[0]);
    cpu_vf vb = b_step ? CPU_VZERO() : CPU_VBCAST(b[0]);
    for (size_t i = 0; i < n; i += CPU_VL) {
        size_t k = n - i < CPU_VL ? n - i : CPU_VL;
        cpu_vf x = a_step ? cpu_vload_part(a + i, k) : va;
        cpu_vf y = b_step ? cpu_vload_part(b + i, k) : vb;
        cpu_vf s = CPU_VADD(x, y);
        cpu_vstore_part(sum + i, s, k);
        cpu_vstore_part(relu + i, CPU_VMAX(CPU_VZERO(), s), k);
    }
}

/* ---- reductions ------------------------------------------------------------- */

static double CPU_SN(sum)(const float *x, size_t n, size_t stride)
{
    if (stride != 1) {
        double s = 0.0;
        for (size_t i = 0; i < n; i++)
            s += x[i * stride];
        return s;
    }
    cpu_vd s0 = CPU_VD_ZERO(), s1 = CPU_VD_ZERO(), s2 = CPU_VD_ZERO(), s3 = CPU_VD_ZERO();
    size_t i = 0;
    for (; i + 2 * CPU_VL <= n; i += 2 * CPU_VL) {
        cpu_vf a = CPU_VLOADU(x + i), b = CPU_VLOADU(x + i + CPU_VL);
        s0 = CPU_VD_ADD(s0, CPU_VD_LO(a));
        s1 = CPU_VD_ADD(s1, CPU_VD_HI(a));
        s2 = CPU_VD_ADD(s2, CPU_VD_LO(b));
        s3 = CPU_VD_ADD(s3, CPU_VD_HI(b));
    }
    for (; i < n; i += CPU_VL) {
        cpu_vf a = cpu_vload_part(x + i, n - i < CPU_VL ? n - i : CPU_VL);
        s0       = CPU_VD_ADD(s0, CPU_VD_LO(a));
        s1       = CPU_VD_ADD(s1, CPU_VD_HI(a));
    }
    return CPU_VD_HSUM(CPU_VD_ADD(CPU_VD_ADD(s0, s1), CPU_VD_ADD(s2, s3)));
}

static void CPU_SN(sum_rows)(double *acc, const float *x, size_t n)
{
    size_t i = 0;
    for (; i + CPU_VL <= n; i += CPU_VL) {
        cpu_vf a = CPU_VLOADU(x + i);
        CPU_VD_STOREU(acc + i, CPU_VD_ADD(CPU_VD_LOADU(acc + i), CPU_VD_LO(a)));
        CPU_VD_STOREU(acc + i + CPU_VL / 2,
                      CPU_VD_ADD(CPU_VD_LOADU(acc + i + CPU_VL / 2), CPU_VD_HI(a)));
    }
#if defined(CPU_SIMD_AVX2)
    /* the tail: four columns in one unmasked step, then scalars (AMD's
     * masked stores cost more than the scalar adds they replace) */
    if (n - i >= 4) {
        __m256d a = _mm256_cvtps_pd(_mm_loadu_ps(x + i));
        CPU_VD_STOREU(acc + i, CPU_VD_ADD(CPU_VD_LOADU(acc + i), a));
        i += 4;
    }
    for (; i < n; i++)
        acc[i] += x[i];
#else
    if (i < n) { /* the tail: masked halves, a partial one or none past the first */
        size_t k = n - i, k0 = k < CPU_VL / 2 ? k : CPU_VL / 2;
        cpu_vf a = cpu_vload_part(x + i, k);
        if (k0 == CPU_VL / 2)
            CPU_VD_STOREU(acc + i, CPU_VD_ADD(CPU_VD_LOADU(acc + i), CPU_VD_LO(a)));
        else
            cpu_vd_store_part(acc + i, CPU_VD_ADD(cpu_vd_load_part(acc + i, k0), CPU_VD_LO(a)),
                              k0);
        if (k > CPU_VL / 2)
            cpu_vd_store_part(acc + i + CPU_VL / 2,
                              CPU_VD_ADD(cpu_vd_load_part(acc + i + CPU_VL / 2,
                                                          k - CPU_VL / 2),
                                         CPU_VD_HI(a)),
                              k - CPU_VL / 2);
    }
#endif
}

/* ---- products of long rows ------------------------------------------------------- */

/* One block of dot_nt: rows i < mi of a against rows j < nj of b (mi <= 3,
 * nj <= 4, constants once inlined), each pair in a vector accumulator that
 * runs along K and is added up at the end: 12 accumulators, 7 loads per 12
 * FMAs. */
CPU_INLINE void CPU_SN(dot_nt_block)(float *c, size_t ldc, const float *a, size_t lda,
                                     const float *b, size_t ldb, size_t K, bool accumulate,
                                     int mi, int nj)
{
    cpu_vf acc[3][4];
#pragma GCC unroll 3
    for (int i = 0; i < mi; i++)
#pragma GCC unroll 4
        for (int j = 0; j < nj; j++)
            acc[i][j] = CPU_VZERO();
    size_t k = 0;
    for (; k < K; k += CPU_VL) {
        size_t len = K - k < CPU_VL ? K - k : CPU_VL;
        cpu_vf va[3], vb[4];
#pragma GCC unroll 3
        for (int i = 0; i < mi; i++)
            va[i] = len == CPU_VL ? CPU_VLOADU(a + (size_t)i * lda + k)
                                  : cpu_vload_part(a + (size_t)i * lda + k, len);
#pragma GCC unroll 4
        for (int j = 0; j < nj; j++)
            vb[j] = len == CPU_VL ? CPU_VLOADU(b + (size_t)j * ldb + k)
                                  : cpu_vload_part(b + (size_t)j * ldb + k, len);
#pragma GCC unroll 3
        for (int i = 0; i < mi; i++)
#pragma GCC unroll 4
            for (int j = 0; j < nj; j++)
                acc[i][j] = CPU_VFMA(va[i], vb[j], acc[i][j]);
    }
#pragma GCC unroll 3
    for (int i = 0; i < mi; i++)
#pragma GCC unroll 4
        for (int j = 0; j < nj; j++) {
            float *out = c + (size_t)i * ldc + j;
            *out       = (accumulate ? *out : 0.0f) + cpu_vhsum(acc[i][j]);
        }
}

/* c [M,N] (ldc) = (accumulate ? c : 0) + a [M,K] @ b [N,K]^T, both read along
 * their rows (lda, ldb): for a short output and a long K, where packing
 * would cost more than the arithmetic (a convolution's weight gradient when
 * C*KH*KW is small: K is the pixels of an image). */
static void CPU_SN(dot_nt)(float *c, size_t ldc, const float *a, size_t lda, const float *b,
                           size_t ldb, size_t M, size_t N, size_t K, bool accumulate)
{
    for (size_t i = 0; i < M; i += 3) {
        int mi = M - i < 3 ? (int)(M - i) : 3;
        for (size_t j = 0; j < N; j += 4) {
            int          nj = N - j < 4 ? (int)(N - j) : 4;
            float       *cb = c + i * ldc + j;
            const float *ab = a + i * lda, *bb = b + j * ldb;
            /* each case its own unrolled copy */
#define CPU_DOT_NT_CASE(MI, NJ)                                                        \
    case (MI) * 8 + (NJ):                                                              \
        CPU_SN(dot_nt_block)(cb, ldc, ab, lda, bb, ldb, K, accumulate, MI, NJ);        \
        break;
            switch (mi * 8 + nj) {
                CPU_DOT_NT_CASE(3, 4)
                CPU_DOT_NT_CASE(3, 3)
                CPU_DOT_NT_CASE(3, 2)
                CPU_DOT_NT_CASE(3, 1)
                CPU_DOT_NT_CASE(2, 4)
                CPU_DOT_NT_CASE(2, 3)
                CPU_DOT_NT_CASE(2, 2)
                CPU_DOT_NT_CASE(2, 1)
                CPU_DOT_NT_CASE(1, 4)
                CPU_DOT_NT_CASE(1, 3)
                CPU_DOT_NT_CASE(1, 2)
                CPU_DOT_NT_CASE(1, 1)
            }
#undef CPU_DOT_NT_CASE
        }
    }
}

/* The largest element; NaN (the scalar scan's) if any is NaN. Two
 * accumulators, so that the loop is not one chain of max latencies. */
static float CPU_SN(max)(const float *x, size_t n)
{
    cpu_vf    m0 = CPU_VBCAST(-INFINITY), m1 = m0;
    cpu_vmask nan = CPU_VMASK_NONE();
    size_t    i   = 0;
    for (; i + 2 * CPU_VL <= n; i += 2 * CPU_VL) {
        cpu_vf a = CPU_VLOADU(x + i), b = CPU_VLOADU(x + i + CPU_VL);
        nan = CPU_VMASK_OR(nan,
                           CPU_VCMP_NAN(
                               CPU_VADD(a, b))); /* inf - inf too: rare, still right */
        m0  = CPU_VMAX(m0, a);
        m1  = CPU_VMAX(m1, b);
    }
    for (; i < n; i += CPU_VL) {
        cpu_vf v = cpu_vload_fill(x + i, n - i < CPU_VL ? n - i : CPU_VL, -INFINITY);
        nan      = CPU_VMASK_OR(nan, CPU_VCMP_NAN(v));
        m0       = CPU_VMAX(m0, v);
    }
    if (CPU_VMASK_ANY(nan))
        return cpu_row_max(x, n);
    float lanes[CPU_VL], best = -INFINITY;
    CPU_VSTOREU(lanes, CPU_VMAX(m0, m1));
    for (int l = 0; l < CPU_VL; l++)
        best = lanes[l] > best ? lanes[l] : best;
    return best;
}

/* Per lane the largest value and the first index holding it; then the
 * smallest index among the lanes that hold the overall largest. */
static size_t CPU_SN(argmax)(const float *x, size_t n)
{
    cpu_vf    best = CPU_VBCAST(-INFINITY);
    cpu_vi    idx = CPU_VI_BCAST(0), cur = CPU_VI_BCAST(0), step = CPU_VI_BCAST(CPU_VL);
    cpu_vmask nan = CPU_VMASK_NONE();
    if (n > INT32_MAX - CPU_VL)
        return cpu_row_argmax(x, n);
    {
        int32_t lane[CPU_VL];
        for (int l = 0; l < CPU_VL; l++)
            lane[l] = l;
        cur = CPU_V_AS_I(CPU_VLOADU((const float *)lane));
    }
    for (size_t i = 0; i < n; i += CPU_VL) {
        cpu_vf v     = cpu_vload_fill(x + i, n - i < CPU_VL ? n - i : CPU_VL, -INFINITY);
        nan          = CPU_VMASK_OR(nan, CPU_VCMP_NAN(v));
        cpu_vmask gt = CPU_VCMP_GT(v, best);
        best         = CPU_VSELECT(gt, v, best);
        idx          = CPU_VI_SELECT(gt, cur, idx);
        cur          = CPU_VI_ADD(cur, step);
    }
    if (CPU_VMASK_ANY(nan))
        return cpu_row_argmax(x, n);
    float   bv[CPU_VL];
    int32_t bi[CPU_VL];
    CPU_VSTOREU(bv, best);
    CPU_VSTOREU((float *)bi, CPU_I_AS_V(idx));
    size_t arg = 0;
    float  top = -INFINITY;
    for (int l = 0; l < CPU_VL; l++) {
        if (bv[l] > top || (bv[l] == top && (size_t)bi[l] < arg)) {
            top = bv[l];
            arg = (size_t)bi[l];
        }
    }
    return top == -INFINITY ? cpu_row_argmax(x, n) : arg;
}

/* ---- pooling ------------------------------------------------------------------ */

/* x[l * sw] for the first k lanes: a load when sw is 1, two loads and a
 * permute when it is 2 (the usual pooling), else a gather of idx = l * sw. */
/* l * sw in lane l: the offsets of a stride-sw gather (sw * CPU_VL fits). */
CPU_INLINE cpu_vi CPU_SN(lane_offsets)(size_t sw)
{
    int32_t lane[CPU_VL];
    for (int l = 0; l < CPU_VL; l++)
        lane[l] = (int32_t)((size_t)l * sw);
    return CPU_V_AS_I(CPU_VLOADU((const float *)lane));
}

CPU_INLINE cpu_vf CPU_SN(strided_part)(const float *x, size_t sw, cpu_vi idx, size_t k)
{
    if (sw == 1)
        return cpu_vload_part(x, k);
    if (sw == 2)
        return cpu_vload_even_part(x, k);
    return cpu_vgather_part(x, idx, k);
}

/* NaN-sticky max: maxps gives its second operand when either is NaN, so a
 * NaN already in m stays, and a NaN in v is selected in. */
CPU_INLINE cpu_vf CPU_SN(max_nan)(cpu_vf m, cpu_vf v)
{
    return CPU_VSELECT(CPU_VCMP_NAN(v), v, CPU_VMAX(v, m));
}

/* pool_max_row for windows 2 columns wide at stride 2 (the usual pooling),
 * n >= CPU_VL: each window row is one load pair split into its even and odd
 * columns; the last vector overlaps the one before it rather than being
 * masked (the same outputs again, with the same values). */
static void CPU_SN(pool_max_row_w2)(float *out, const float *x, size_t W, size_t n,
                                    size_t kh)
{
    for (size_t j = 0;; j += CPU_VL) {
        if (j + CPU_VL > n)
            j = n - CPU_VL;
        cpu_vf m = CPU_VBCAST(-INFINITY);
        for (size_t r = 0; r < kh; r++) {
            cpu_vf e, o;
            cpu_vdeinterleave(x + r * W + 2 * j, &e, &o);
            m = CPU_SN(max_nan)(CPU_SN(max_nan)(m, e), o);
        }
        CPU_VSTOREU(out + j, m);
        if (j + CPU_VL >= n)
            break;
    }
}

/* MAX_POOL2D_GRAD for windows kh rows by 2 columns, stride 2 along the row,
 * n of them side by side (rows x .. x + (kh-1)*W, columns 0 .. 2n): out at
 * each window's first maximum (first NaN, if any) in row-major order is
 * gy[j], its other elements 0. Every element of the 2n columns of the kh
 * rows is written once, so that windows that tile the plane need no zeroing
 * and no scatter. Which element won is kept as its number r*2 + c, a float. */
CPU_INLINE void CPU_SN(pool_grad_w2_vec)(float *out, const float *gy, const float *x,
                                         size_t W, size_t kh, size_t k)
{
    cpu_vf m = CPU_VZERO(), win = CPU_VZERO(), e, o;
    for (size_t r = 0; r < kh; r++) {
        if (k == CPU_VL) {
            cpu_vdeinterleave(x + r * W, &e, &o);
        } else {
            e = cpu_vload_even_part(x + r * W, k);
            o = cpu_vload_even_part(x + r * W + 1, k);
        }
        for (int c = 0; c < 2; c++) {
            cpu_vf v = c ? o : e;
            if (r == 0 && c == 0) {
                m = v;
                continue;
            }
            cpu_vmask take = CPU_VMASK_OR(CPU_VCMP_GT(v, m),
                                          CPU_VMASK_ANDNOT(CPU_VCMP_NAN(v), CPU_VCMP_NAN(m)));
            m              = CPU_VSELECT(take, v, m);
            win            = CPU_VSELECT(take, CPU_VBCAST((float)(2 * r + (size_t)c)), win);
        }
    }
    cpu_vf g = k == CPU_VL ? CPU_VLOADU(gy) : cpu_vload_part(gy, k), zero = CPU_VZERO();
    for (size_t r = 0; r < kh; r++) {
        cpu_vf ge = CPU_VSELECT(CPU_VCMP_EQ(win, CPU_VBCAST((float)(2 * r))), g, zero);
        cpu_vf go = CPU_VSELECT(CPU_VCMP_EQ(win, CPU_VBCAST((float)(2 * r + 1))), g, zero);
        cpu_vf lo, hi;
        cpu_vinterleave(ge, go, &lo, &hi);
        if (k == CPU_VL) {
            CPU_VSTOREU(out + r * W, lo);
            CPU_VSTOREU(out + r * W + CPU_VL, hi);
        } else {
            cpu_vstore_part(out + r * W, lo, 2 * k < CPU_VL ? 2 * k : CPU_VL);
            if (2 * k > CPU_VL)
                cpu_vstore_part(out + r * W + CPU_VL, hi, 2 * k - CPU_VL);
        }
    }
}

static void CPU_SN(pool_grad_w2)(float *out, const float *gy, const float *x, size_t W,
                                 size_t n, size_t kh)
{
    if (n < CPU_VL) {
        if (n > 0)
            CPU_SN(pool_grad_w2_vec)(out, gy, x, W, kh, n);
        return;
    }
    for (size_t j = 0;; j += CPU_VL) {
        if (j + CPU_VL > n)
            j = n - CPU_VL; /* overlaps: the same values written again */
        CPU_SN(pool_grad_w2_vec)(out + 2 * j, gy + j, x + 2 * j, W, kh, CPU_VL);
        if (j + CPU_VL >= n)
            break;
    }
}

/* The window's columns for CPU_VL outputs at a time (strided_part), with the
 * max kept NaN-sticky: maxps gives its
 * second operand when either is NaN, so a NaN already in m stays, and a NaN
 * in v is selected in. */
static void CPU_SN(pool_max_row)(float *out, const float *x, size_t W, size_t n,
                                 size_t kh, size_t kw, size_t sw)
{
    if (sw * CPU_VL >= INT32_MAX / 4) { /* indices would not fit: no gathers */
        for (size_t j = 0; j < n; j++) {
            float m = x[j * sw];
            for (size_t r = 0; r < kh; r++)
                for (size_t c = 0; c < kw; c++)
                    m = cpu_max2(m, x[r * W + j * sw + c]);
            out[j] = m;
        }
        return;
    }
    if (kw == 2 && sw == 2 && n >= CPU_VL) {
        CPU_SN(pool_max_row_w2)(out, x, W, n, kh);
        return;
    }
    cpu_vi idx = CPU_SN(lane_offsets)(sw);
    for (size_t j = 0; j < n; j += CPU_VL) {
        size_t       k    = n - j < CPU_VL ? n - j : CPU_VL;
        const float *base = x + j * sw;
        cpu_vf       m    = CPU_VBCAST(-INFINITY);
        for (size_t r = 0; r < kh; r++)
            for (size_t c = 0; c < kw; c++) {
                const float *p = base + r * W + c;
                cpu_vf       v = CPU_SN(strided_part)(p, sw, idx, k);
                m              = CPU_VSELECT(CPU_VCMP_NAN(v), v, CPU_VMAX(v, m));
            }
        cpu_vstore_part(out + j, m, k);
    }
}

/* The window's elements in row-major order, CPU_VL outputs at a time: an
 * element wins if it is larger than the best so far, or is the first NaN
 * (once the best is NaN nothing replaces it). */
static void CPU_SN(pool_argmax_row)(int32_t *arg, const float *x, size_t W, size_t n,
                                    size_t kh, size_t kw, size_t sw)
{
    cpu_vi idx = CPU_SN(lane_offsets)(sw);
    for (size_t j = 0; j < n; j += CPU_VL) {
        size_t       k    = n - j < CPU_VL ? n - j : CPU_VL;
        const float *base = x + j * sw;
        cpu_vf       m    = CPU_SN(strided_part)(base, sw, idx, k);
        cpu_vi       best = CPU_VI_BCAST(0);
        for (size_t r = 0; r < kh; r++)
            for (size_t c = r == 0 ? 1 : 0; c < kw; c++) {
                const float *p    = base + r * W + c;
                cpu_vf       v    = CPU_SN(strided_part)(p, sw, idx, k);
                cpu_vmask    take = CPU_VMASK_OR(CPU_VCMP_GT(v, m),
                                                 CPU_VMASK_ANDNOT(CPU_VCMP_NAN(v),
                                                                  CPU_VCMP_NAN(m)));
                m                 = CPU_VSELECT(take, v, m);
                best = CPU_VI_SELECT(take, CPU_VI_BCAST((int32_t)(r * W + c)), best);
            }
        cpu_vstore_part((float *)(arg + j), CPU_I_AS_V(best), k);
    }
}

/* ---- softmax -------------------------------------------------------------------- */

/* e^(x - max) is at most 1, so eight vectors of it add up in float within
 * a few ulp; each such group is then added in double, so that long rows keep
 * the accuracy of a double sum at a quarter of the conversions. */
#define CPU_SOFTMAX_GROUP 8

/* sum(e^(x[i] - m)) over n, each term also stored to out unless out is NULL;
 * m is at least every x[i]. */
CPU_INLINE double CPU_SN(exp_sum)(float *out, const float *x, size_t n, cpu_vf m)
{
    cpu_vd s0 = CPU_VD_ZERO(), s1 = CPU_VD_ZERO();
    size_t i = 0;
    while (i + CPU_VL <= n) {
        cpu_vf g = CPU_VZERO();
        for (int v = 0; v < CPU_SOFTMAX_GROUP && i + CPU_VL <= n; v++, i += CPU_VL) {
            cpu_vf e = CPU_SN(vexp)(CPU_VSUB(CPU_VLOADU(x + i), m));
            if (out)
                CPU_VSTOREU(out + i, e);
            g = CPU_VADD(g, e);
        }
        s0 = CPU_VD_ADD(s0, CPU_VD_LO(g));
        s1 = CPU_VD_ADD(s1, CPU_VD_HI(g));
    }
    if (i < n) { /* lanes past the row must not count */
        size_t k = n - i;
        cpu_vf e = cpu_vkeep_first(CPU_SN(vexp)(CPU_VSUB(cpu_vload_part(x + i, k), m)),
                                   k);
        if (out)
            cpu_vstore_part(out + i, e, k);
        s0 = CPU_VD_ADD(s0, CPU_VD_LO(e));
        s1 = CPU_VD_ADD(s1, CPU_VD_HI(e));
    }
    return CPU_VD_HSUM(CPU_VD_ADD(s0, s1));
}

static void CPU_SN(softmax_row)(float *out, const float *x, size_t n, bool as_log)
{
    if (n == 0)
        return;
    cpu_vf m = CPU_VBCAST(CPU_SN(max)(x, n));
    double s = CPU_SN(exp_sum)(as_log ? NULL : out, x, n, m);
    size_t i;
    if (as_log) {
        cpu_vf ls = CPU_VBCAST((float)log(s));
        for (i = 0; i < n; i += CPU_VL) {
            size_t k = n - i < CPU_VL ? n - i : CPU_VL;
            cpu_vf v = cpu_vload_part(x + i, k);
            cpu_vstore_part(out + i, CPU_VSUB(CPU_VSUB(v, m), ls), k);
        }
        return;
    }
    cpu_vf inv = CPU_VBCAST((float)(1.0 / s));
    for (i = 0; i + CPU_VL <= n; i += CPU_VL)
        CPU_VSTOREU(out + i, CPU_VMUL(CPU_VLOADU(out + i), inv));
    if (i < n)
        cpu_vstore_part(out + i, CPU_VMUL(cpu_vload_part(out + i, n - i), inv), n - i);
}

/* ---- losses ---------------------------------------------------------------------- */

/* A max that is not finite (NaN, +inf, or all -inf) goes the plain way,
 * which gives NaN for each of them. */
static double CPU_SN(logsumexp)(const float *x, size_t n)
{
    float m = CPU_SN(max)(x, n);
    if (!isfinite(m)) {
        double s = 0.0;
        for (size_t i = 0; i < n; i++)
            s += exp((double)x[i] - (double)m);
        return (double)m + log(s);
    }
    return (double)m + log(CPU_SN(exp_sum)(NULL, x, n, CPU_VBCAST(m)));
}

/* The difference in float (exact when a and b are within a factor of 2,
 * else one rounding), squared and summed in double. */
static double CPU_SN(sum_sq_diff)(const float *a, const float *b, size_t n)
{
    cpu_vd s0 = CPU_VD_ZERO(), s1 = CPU_VD_ZERO();
    for (size_t i = 0; i < n; i += CPU_VL) {
        size_t k  = n - i < CPU_VL ? n - i : CPU_VL;
        cpu_vf d  = CPU_VSUB(cpu_vload_part(a + i, k), cpu_vload_part(b + i, k));
        cpu_vd lo = CPU_VD_LO(d), hi = CPU_VD_HI(d);
        s0 = CPU_VD_FMA(lo, lo, s0);
        s1 = CPU_VD_FMA(hi, hi, s1);
    }
    return CPU_VD_HSUM(CPU_VD_ADD(s0, s1));
}

/* ---- LAYER_NORM's rows: statistics and xhat in double (ops_norm.c) --------- */

/* A row's mean and 1 / sqrt(var + eps), var the biased variance, in two
 * passes in double. Full vectors, then the few elements past the last one
 * one at a time: a masked lane would add (0 - mean)^2. */
CPU_INLINE void CPU_SN(norm_stats)(const float *x, size_t n, float eps, double *mean,
                                   double *rstd)
{
    double m  = CPU_SN(sum)(x, n, 1) / (double)n;
    cpu_vd vm = CPU_VD_BCAST(m), s0 = CPU_VD_ZERO(), s1 = CPU_VD_ZERO();
    size_t i = 0;
    for (; i + CPU_VL <= n; i += CPU_VL) {
        cpu_vf a  = CPU_VLOADU(x + i);
        cpu_vd lo = CPU_VD_SUB(CPU_VD_LO(a), vm), hi = CPU_VD_SUB(CPU_VD_HI(a), vm);
        s0 = CPU_VD_FMA(lo, lo, s0);
        s1 = CPU_VD_FMA(hi, hi, s1);
    }
    double v = CPU_VD_HSUM(CPU_VD_ADD(s0, s1));
    for (; i < n; i++)
        v += ((double)x[i] - m) * ((double)x[i] - m);
    *mean = m;
    *rstd = 1.0 / sqrt(v / (double)n + (double)eps);
}

/* xhat of 8 or 16 elements, in double halves */
CPU_INLINE void CPU_SN(norm_xhat)(const float *x, cpu_vd vm, cpu_vd vr, cpu_vd *lo,
                                  cpu_vd *hi)
{
    cpu_vf a = CPU_VLOADU(x);
    *lo      = CPU_VD_MUL(CPU_VD_SUB(CPU_VD_LO(a), vm), vr);
    *hi      = CPU_VD_MUL(CPU_VD_SUB(CPU_VD_HI(a), vm), vr);
}

/* out = xhat * w + b: xhat rounded to float once, then one FMA. */
static void CPU_SN(layer_norm_row)(float *out, const float *x, const float *w,
                                   const float *b, size_t n, float eps)
{
    double m, r;
    CPU_SN(norm_stats)(x, n, eps, &m, &r);
    cpu_vd vm = CPU_VD_BCAST(m), vr = CPU_VD_BCAST(r);
    size_t i = 0;
    for (; i + CPU_VL <= n; i += CPU_VL) {
        cpu_vd lo, hi;
        CPU_SN(norm_xhat)(x + i, vm, vr, &lo, &hi);
        cpu_vf xh = CPU_VD_TO_F(lo, hi);
        CPU_VSTOREU(out + i,
                    CPU_VFMA(xh, CPU_VLOADU(w + i), b ? CPU_VLOADU(b + i) : CPU_VZERO()));
    }
    for (; i < n; i++)
        out[i] = (float)(((double)x[i] - m) * r) * w[i] + (b ? b[i] : 0.0f);
}

/* dx = rstd * (gw - mean(gw) - xhat * mean(gw * xhat)), gw = g * w, in
 * double throughout. */
static void CPU_SN(layer_norm_grad_row)(float *out, const float *g, const float *x,
                                        const float *w, size_t n, float eps)
{
    double m, r;
    CPU_SN(norm_stats)(x, n, eps, &m, &r);
    cpu_vd vm = CPU_VD_BCAST(m), vr = CPU_VD_BCAST(r);
    cpu_vd sg = CPU_VD_ZERO(), sgx = CPU_VD_ZERO();
    size_t i = 0;
    for (; i + CPU_VL <= n; i += CPU_VL) {
        cpu_vd lo, hi;
        CPU_SN(norm_xhat)(x + i, vm, vr, &lo, &hi);
        cpu_vf gw = CPU_VMUL(CPU_VLOADU(g + i), CPU_VLOADU(w + i));
        sg        = CPU_VD_ADD(sg, CPU_VD_ADD(CPU_VD_LO(gw), CPU_VD_HI(gw)));
        sgx       = CPU_VD_FMA(CPU_VD_LO(gw), lo, CPU_VD_FMA(CPU_VD_HI(gw), hi, sgx));
    }
    double sgs = CPU_VD_HSUM(sg), sgxs = CPU_VD_HSUM(sgx);
    for (size_t t = i; t < n; t++) {
        double gw = (double)(g[t] * w[t]);
        sgs += gw;
        sgxs += gw * (((double)x[t] - m) * r);
    }
    double a = sgs / (double)n, c = sgxs / (double)n;
    cpu_vd va = CPU_VD_BCAST(a), vc = CPU_VD_BCAST(c);
    for (i = 0; i + CPU_VL <= n; i += CPU_VL) {
        cpu_vd lo, hi;
        CPU_SN(norm_xhat)(x + i, vm, vr, &lo, &hi);
        cpu_vf gw = CPU_VMUL(CPU_VLOADU(g + i), CPU_VLOADU(w + i));
        lo        = CPU_VD_MUL(vr,
                               CPU_VD_SUB(CPU_VD_SUB(CPU_VD_LO(gw), va), CPU_VD_MUL(lo, vc)));
        hi        = CPU_VD_MUL(vr,
                               CPU_VD_SUB(CPU_VD_SUB(CPU_VD_HI(gw), va), CPU_VD_MUL(hi, vc)));
        CPU_VSTOREU(out + i, CPU_VD_TO_F(lo, hi));
    }
    for (; i < n; i++) {
        double xhat = ((double)x[i] - m) * r;
        out[i]      = (float)(r * ((double)(g[i] * w[i]) - a - xhat * c));
    }
}

/* acc[c] += g[c] * xhat[c] over one row (LAYER_NORM_GRAD_WEIGHT). */
static void CPU_SN(layer_norm_weight_row)(double *acc, const float *g, const float *x,
                                          size_t n, float eps)
{
    double m, r;
    CPU_SN(norm_stats)(x, n, eps, &m, &r);
    cpu_vd vm = CPU_VD_BCAST(m), vr = CPU_VD_BCAST(r);
    size_t i = 0;
    for (; i + CPU_VL <= n; i += CPU_VL) {
        cpu_vd lo, hi;
        CPU_SN(norm_xhat)(x + i, vm, vr, &lo, &hi);
        cpu_vf gv = CPU_VLOADU(g + i);
        CPU_VD_STOREU(acc + i, CPU_VD_FMA(CPU_VD_LO(gv), lo, CPU_VD_LOADU(acc + i)));
        CPU_VD_STOREU(acc + i + CPU_VL / 2,
                      CPU_VD_FMA(CPU_VD_HI(gv), hi, CPU_VD_LOADU(acc + i + CPU_VL / 2)));
    }
    for (; i < n; i++)
        acc[i] += (double)g[i] * (((double)x[i] - m) * r);
}

void CPU_SN(simd_kernels)(cpu_kernels *k)
{
    k->layer_norm_row        = CPU_SN(layer_norm_row);
    k->layer_norm_grad_row   = CPU_SN(layer_norm_grad_row);
    k->layer_norm_weight_row = CPU_SN(layer_norm_weight_row);
    k->binary[CPU_ADD]       = CPU_SN(add);
    k->binary[CPU_SUB]       = CPU_SN(sub);
    k->binary[CPU_MUL]       = CPU_SN(mul);
    k->binary[CPU_DIV]       = CPU_SN(div);
    k->unary[CPU_NEG]        = CPU_SN(neg);
    k->unary[CPU_EXP]        = CPU_SN(exp);
    k->unary[CPU_LOG]        = CPU_SN(log);
    k->unary[CPU_SQRT]       = CPU_SN(sqrt);
    k->unary[CPU_RELU]       = CPU_SN(relu);
    k->unary[CPU_SIGMOID]    = CPU_SN(sigmoid);
    k->unary[CPU_TANH]       = CPU_SN(tanh);
    k->unary[CPU_SCALE]      = CPU_SN(scale);
    k->gelu                  = CPU_SN(gelu);
    k->add_relu              = CPU_SN(add_relu);
    k->sum                   = CPU_SN(sum);
    k->sum_rows              = CPU_SN(sum_rows);
    k->max                   = CPU_SN(max);
    k->argmax                = CPU_SN(argmax);
    k->softmax_row           = CPU_SN(softmax_row);
    k->logsumexp             = CPU_SN(logsumexp);
    k->sum_sq_diff           = CPU_SN(sum_sq_diff);
    k->pool_max_row          = CPU_SN(pool_max_row);
    k->pool_argmax_row       = CPU_SN(pool_argmax_row);
    k->pool_grad_w2          = CPU_SN(pool_grad_w2);
    k->dot_nt                = CPU_SN(dot_nt);
}

#undef CPU_SIMD_BINARY
#undef CPU_SIMD_UNARY
#undef CPU_SN
#undef CPU_INLINE
