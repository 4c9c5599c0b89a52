/* simd.h — one vocabulary of vector operations over the x86 ISAs, so that the
 * kernels (gemm-template.h, simd-template.h) are written once. The file that
 * includes this defines CPU_SIMD_AVX512 or CPU_SIMD_AVX2 first and is built
 * with the matching -m flags (Makefile.am).
 */
#ifndef KILN_CPU_SIMD_H
#define KILN_CPU_SIMD_H

#include <immintrin.h>

#if defined(CPU_SIMD_AVX512)

#define CPU_VL 16
typedef __m512    cpu_vf;
typedef __m512i   cpu_vi;
typedef __mmask16 cpu_vmask; /* a lane mask */
#define CPU_V              cpu_vf
#define CPU_VZERO()        _mm512_setzero_ps()
#define CPU_VLOADU(p)      _mm512_loadu_ps(p)
#define CPU_VSTOREU(p, v)  _mm512_storeu_ps(p, v)
#define CPU_VSTREAM(p, v)  _mm512_stream_ps(p, v)
#define CPU_VBCAST(x)      _mm512_set1_ps(x)
#define CPU_VFMA(a, b, c)  _mm512_fmadd_ps(a, b, c)
#define CPU_VFNMA(a, b, c) _mm512_fnmadd_ps(a, b, c)
#define CPU_VADD(a, b)     _mm512_add_ps(a, b)
#define CPU_VSUB(a, b)     _mm512_sub_ps(a, b)
#define CPU_VMUL(a, b)     _mm512_mul_ps(a, b)
#define CPU_VDIV(a, b)     _mm512_div_ps(a, b)
#define CPU_VSQRT(a)       _mm512_sqrt_ps(a)
#define CPU_VRCP_APPROX(a) _mm512_rcp14_ps(a)
/* max/min: the second operand when either is NaN (as maxps does)          */
#define CPU_VMAX(a, b) _mm512_max_ps(a, b)
#define CPU_VMIN(a, b) _mm512_min_ps(a, b)
#define CPU_VROUND(a) \
    _mm512_roundscale_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)
/* a * 2^n for integer-valued n, in one instruction: subnormal results,
 * overflow to inf and NaN come out as IEEE says (AVX-512 only)            */
#define CPU_VSCALEF(a, n) _mm512_scalef_ps(a, n)
#define CPU_VXOR(a, b) \
    _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(a), _mm512_castps_si512(b)))
#define CPU_VAND(a, b) \
    _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(a), _mm512_castps_si512(b)))
#define CPU_VCMP_LT(a, b)      _mm512_cmp_ps_mask(a, b, _CMP_LT_OQ)
#define CPU_VCMP_GT(a, b)      _mm512_cmp_ps_mask(a, b, _CMP_GT_OQ)
#define CPU_VCMP_EQ(a, b)      _mm512_cmp_ps_mask(a, b, _CMP_EQ_OQ)
#define CPU_VCMP_NAN(a)        _mm512_cmp_ps_mask(a, a, _CMP_UNORD_Q)
#define CPU_VSELECT(m, a, b)   _mm512_mask_blend_ps(m, b, a) /* m ? a : b */
#define CPU_VMASK_ANY(m)       ((m) != 0)
#define CPU_VMASK_OR(a, b)     ((cpu_vmask)((a) | (b)))
#define CPU_VMASK_ANDNOT(a, b) ((cpu_vmask)((a) & ~(b))) /* a and not b */
#define CPU_VMASK_NONE()       ((cpu_vmask)0)
#define CPU_VMASK_BITS(m)      ((unsigned)(m))
/* float <-> int32 and 2^n from an integer-valued float n in [-126, 127]    */
#define CPU_VCVT_I(a)    _mm512_cvtps_epi32(a)
#define CPU_VI_BCAST(x)  _mm512_set1_epi32(x)
#define CPU_VI_ADD(a, b) _mm512_add_epi32(a, b)
#define CPU_VI_SUB(a, b) _mm512_sub_epi32(a, b)
#define CPU_VI_SHL(a, n) _mm512_slli_epi32(a, n)
#define CPU_VI_SRL(a, n) _mm512_srli_epi32(a, n)
#define CPU_VI_AND(a, b) _mm512_and_si512(a, b)
#define CPU_VI_OR(a, b)  _mm512_or_si512(a, b)
#define CPU_VI_TO_F(a)   _mm512_cvtepi32_ps(a)
#define CPU_V_AS_I(a)    _mm512_castps_si512(a)
#define CPU_I_AS_V(a)    _mm512_castsi512_ps(a)

/* The first n < CPU_VL lanes; the others read as 0 and are not written. */
static inline cpu_vmask cpu_vmask_first(size_t n)
{
    return (cpu_vmask)((1u << n) - 1u);
}
static inline cpu_vf cpu_vload_part(const float *p, size_t n)
{
    return _mm512_maskz_loadu_ps(cpu_vmask_first(n), p);
}
static inline void cpu_vstore_part(float *p, cpu_vf v, size_t n)
{
    _mm512_mask_storeu_ps(p, cpu_vmask_first(n), v);
}
/* the first n lanes from p, the others `fill` */
static inline cpu_vf cpu_vload_fill(const float *p, size_t n, float fill)
{
    return _mm512_mask_loadu_ps(_mm512_set1_ps(fill), cpu_vmask_first(n), p);
}
#define CPU_VI_SELECT(m, a, b) _mm512_mask_blend_epi32(m, b, a)
/* x[idx[l]] for the first n lanes, 0 in the others (not read) */
static inline cpu_vf cpu_vgather_part(const float *x, cpu_vi idx, size_t n)
{
    return _mm512_mask_i32gather_ps(_mm512_setzero_ps(), cpu_vmask_first(n), idx, x, 4);
}
/* v with the lanes from n on set to 0 */
static inline cpu_vf cpu_vkeep_first(cpu_vf v, size_t n)
{
    return _mm512_maskz_mov_ps(cpu_vmask_first(n), v);
}
/* p[2l] for the first n (1..16) lanes: p[0 .. 2n-2] is read, nothing past
 * it; the other lanes 0. A stride-2 gather in two loads and a permute. */
static inline cpu_vf cpu_vload_even_part(const float *p, size_t n)
{
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24,
                                           26, 28, 30);
    size_t        m    = 2 * n - 1;
    __m512        a    = _mm512_maskz_loadu_ps(cpu_vmask_first(m < 16 ? m : 16), p);
    __m512        b = _mm512_maskz_loadu_ps(cpu_vmask_first(m > 16 ? m - 16 : 0), p + 16);
    return _mm512_maskz_mov_ps(cpu_vmask_first(n), _mm512_permutex2var_ps(a, even, b));
}
/* p[0 .. 2*CPU_VL) split into its even lanes (p[0], p[2], ...) and its odd */
static inline void cpu_vdeinterleave(const float *p, cpu_vf *even, cpu_vf *odd)
{
    const __m512i e = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26,
                                        28, 30);
    const __m512i o = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27,
                                        29, 31);
    __m512        a = _mm512_loadu_ps(p), b = _mm512_loadu_ps(p + 16);
    *even           = _mm512_permutex2var_ps(a, e, b);
    *odd            = _mm512_permutex2var_ps(a, o, b);
}
/* e0 o0 e1 o1 ...: the first CPU_VL of them in lo, the rest in hi */
static inline void cpu_vinterleave(cpu_vf e, cpu_vf o, cpu_vf *lo, cpu_vf *hi)
{
    const __m512i l = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7,
                                        23);
    const __m512i h = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14,
                                        30, 15, 31);
    *lo             = _mm512_permutex2var_ps(e, l, o);
    *hi             = _mm512_permutex2var_ps(e, h, o);
}
static inline float cpu_vhsum(cpu_vf v)
{
    return _mm512_reduce_add_ps(v);
}
/* the four lanes' double sum of a vector of floats, added into acc */
typedef __m512d cpu_vd;
#define CPU_VD_ZERO()       _mm512_setzero_pd()
#define CPU_VD_ADD(a, b)    _mm512_add_pd(a, b)
#define CPU_VD_FMA(a, b, c) _mm512_fmadd_pd(a, b, c)
#define CPU_VD_LOADU(p)     _mm512_loadu_pd(p)
#define CPU_VD_STOREU(p, v) _mm512_storeu_pd(p, v)
#define CPU_VD_LO(v)        _mm512_cvtps_pd(_mm512_castps512_ps256(v))
#define CPU_VD_HI(v) \
    _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)))
/* the first n < 8 lanes of doubles; the others read as 0 and not written */
static inline cpu_vd cpu_vd_load_part(const double *p, size_t n)
{
    return _mm512_maskz_loadu_pd((__mmask8)((1u << n) - 1u), p);
}
static inline void cpu_vd_store_part(double *p, cpu_vd v, size_t n)
{
    _mm512_mask_storeu_pd(p, (__mmask8)((1u << n) - 1u), v);
}
#define CPU_VD_HSUM(v)   _mm512_reduce_add_pd(v)
#define CPU_VD_SUB(a, b) _mm512_sub_pd(a, b)
#define CPU_VD_MUL(a, b) _mm512_mul_pd(a, b)
#define CPU_VD_BCAST(x)  _mm512_set1_pd(x)
/* two vectors of doubles (lanes 0-7, 8-15) rounded to one of floats */
#define CPU_VD_TO_F(lo, hi)                                                      \
    _mm512_castpd_ps(_mm512_insertf64x4(_mm512_castps_pd(_mm512_castps256_ps512( \
                                            _mm512_cvtpd_ps(lo))),               \
                                        _mm256_castps_pd(_mm512_cvtpd_ps(hi)), 1))

#elif defined(CPU_SIMD_AVX2)

#define CPU_VL                 8
typedef __m256  cpu_vf;
typedef __m256i cpu_vi;
typedef __m256  cpu_vmask; /* all-ones lanes */
#define CPU_V                  cpu_vf
#define CPU_VZERO()            _mm256_setzero_ps()
#define CPU_VLOADU(p)          _mm256_loadu_ps(p)
#define CPU_VSTOREU(p, v)      _mm256_storeu_ps(p, v)
#define CPU_VSTREAM(p, v)      _mm256_stream_ps(p, v)
#define CPU_VBCAST(x)          _mm256_set1_ps(x)
#define CPU_VFMA(a, b, c)      _mm256_fmadd_ps(a, b, c)
#define CPU_VFNMA(a, b, c)     _mm256_fnmadd_ps(a, b, c)
#define CPU_VADD(a, b)         _mm256_add_ps(a, b)
#define CPU_VSUB(a, b)         _mm256_sub_ps(a, b)
#define CPU_VMUL(a, b)         _mm256_mul_ps(a, b)
#define CPU_VDIV(a, b)         _mm256_div_ps(a, b)
#define CPU_VSQRT(a)           _mm256_sqrt_ps(a)
#define CPU_VRCP_APPROX(a)     _mm256_rcp_ps(a)
#define CPU_VMAX(a, b)         _mm256_max_ps(a, b)
#define CPU_VMIN(a, b)         _mm256_min_ps(a, b)
#define CPU_VROUND(a)          _mm256_round_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)
#define CPU_VXOR(a, b)         _mm256_xor_ps(a, b)
#define CPU_VAND(a, b)         _mm256_and_ps(a, b)
#define CPU_VCMP_LT(a, b)      _mm256_cmp_ps(a, b, _CMP_LT_OQ)
#define CPU_VCMP_GT(a, b)      _mm256_cmp_ps(a, b, _CMP_GT_OQ)
#define CPU_VCMP_EQ(a, b)      _mm256_cmp_ps(a, b, _CMP_EQ_OQ)
#define CPU_VCMP_NAN(a)        _mm256_cmp_ps(a, a, _CMP_UNORD_Q)
#define CPU_VSELECT(m, a, b)   _mm256_blendv_ps(b, a, m)
#define CPU_VMASK_ANY(m)       (_mm256_movemask_ps(m) != 0)
#define CPU_VMASK_OR(a, b)     _mm256_or_ps(a, b)
#define CPU_VMASK_ANDNOT(a, b) _mm256_andnot_ps(b, a)
#define CPU_VMASK_NONE()       _mm256_setzero_ps()
#define CPU_VMASK_BITS(m)      ((unsigned)_mm256_movemask_ps(m))
#define CPU_VCVT_I(a)          _mm256_cvtps_epi32(a)
#define CPU_VI_BCAST(x)        _mm256_set1_epi32(x)
#define CPU_VI_ADD(a, b)       _mm256_add_epi32(a, b)
#define CPU_VI_SUB(a, b)       _mm256_sub_epi32(a, b)
#define CPU_VI_SHL(a, n)       _mm256_slli_epi32(a, n)
#define CPU_VI_SRL(a, n)       _mm256_srli_epi32(a, n)
#define CPU_VI_AND(a, b)       _mm256_and_si256(a, b)
#define CPU_VI_OR(a, b)        _mm256_or_si256(a, b)
#define CPU_VI_TO_F(a)         _mm256_cvtepi32_ps(a)
#define CPU_V_AS_I(a)          _mm256_castps_si256(a)
#define CPU_I_AS_V(a)          _mm256_castsi256_ps(a)

static inline __m256i cpu_vmask_first(size_t n)
{
    const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n), lanes);
}
static inline cpu_vf cpu_vload_part(const float *p, size_t n)
{
    return _mm256_maskload_ps(p, cpu_vmask_first(n));
}
static inline void cpu_vstore_part(float *p, cpu_vf v, size_t n)
{
    _mm256_maskstore_ps(p, cpu_vmask_first(n), v);
}
static inline cpu_vf cpu_vload_fill(const float *p, size_t n, float fill)
{
    __m256i m = cpu_vmask_first(n);
    return _mm256_blendv_ps(_mm256_set1_ps(fill), _mm256_maskload_ps(p, m),
                            _mm256_castsi256_ps(m));
}
static inline cpu_vf cpu_vkeep_first(cpu_vf v, size_t n)
{
    return _mm256_and_ps(v, _mm256_castsi256_ps(cpu_vmask_first(n)));
}
static inline cpu_vf cpu_vgather_part(const float *x, cpu_vi idx, size_t n)
{
    return _mm256_mask_i32gather_ps(_mm256_setzero_ps(), x, idx,
                                    _mm256_castsi256_ps(cpu_vmask_first(n)), 4);
}
static inline cpu_vf cpu_vload_even_part(const float *p, size_t n)
{
    size_t m = 2 * n - 1;
    __m256 a = _mm256_maskload_ps(p, cpu_vmask_first(m < 8 ? m : 8));
    __m256 b = _mm256_maskload_ps(p + 8, cpu_vmask_first(m > 8 ? m - 8 : 0));
    __m256 s = _mm256_shuffle_ps(a, b,
                                 _MM_SHUFFLE(2, 0, 2, 0)); /* a0 a2 b0 b2 a4 a6 b4 b6 */
    s        = _mm256_castpd_ps(
               _mm256_permute4x64_pd(_mm256_castps_pd(s), _MM_SHUFFLE(3, 1, 2, 0)));
    return cpu_vkeep_first(s, n);
}
/* p[0 .. 2*CPU_VL) split into its even lanes (p[0], p[2], ...) and its odd */
static inline void cpu_vdeinterleave(const float *p, cpu_vf *even, cpu_vf *odd)
{
    __m256 a = _mm256_loadu_ps(p), b = _mm256_loadu_ps(p + 8);
    __m256 e = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0)); /* a0 a2 b0 b2 a4 a6 b4 b6 */
    __m256 o = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 3, 1)); /* a1 a3 b1 b3 a5 a7 b5 b7 */
    *even    = _mm256_castpd_ps(
        _mm256_permute4x64_pd(_mm256_castps_pd(e), _MM_SHUFFLE(3, 1, 2, 0)));
    *odd = _mm256_castpd_ps(
        _mm256_permute4x64_pd(_mm256_castps_pd(o), _MM_SHUFFLE(3, 1, 2, 0)));
}
/* e0 o0 e1 o1 ...: the first CPU_VL of them in lo, the rest in hi */
static inline void cpu_vinterleave(cpu_vf e, cpu_vf o, cpu_vf *lo, cpu_vf *hi)
{
    __m256 l = _mm256_unpacklo_ps(e, o); /* e0 o0 e1 o1 e4 o4 e5 o5 */
    __m256 h = _mm256_unpackhi_ps(e, o); /* e2 o2 e3 o3 e6 o6 e7 o7 */
    *lo      = _mm256_permute2f128_ps(l, h, 0x20);
    *hi      = _mm256_permute2f128_ps(l, h, 0x31);
}
#define CPU_VI_SELECT(m, a, b) \
    _mm256_castps_si256(       \
        _mm256_blendv_ps(_mm256_castsi256_ps(b), _mm256_castsi256_ps(a), m))
static inline float cpu_vhsum(cpu_vf v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s        = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s        = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
typedef __m256d      cpu_vd;
#define CPU_VD_ZERO()       _mm256_setzero_pd()
#define CPU_VD_ADD(a, b)    _mm256_add_pd(a, b)
#define CPU_VD_FMA(a, b, c) _mm256_fmadd_pd(a, b, c)
#define CPU_VD_LOADU(p)     _mm256_loadu_pd(p)
#define CPU_VD_STOREU(p, v) _mm256_storeu_pd(p, v)
#define CPU_VD_LO(v)        _mm256_cvtps_pd(_mm256_castps256_ps128(v))
#define CPU_VD_HI(v)        _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1))
/* the first n < 4 lanes of doubles; the others read as 0 and not written */
static inline __m256i cpu_vd_mask_first(size_t n)
{
    return _mm256_cmpgt_epi64(_mm256_set1_epi64x((long long)n), _mm256_setr_epi64x(0, 1, 2, 3));
}
static inline cpu_vd cpu_vd_load_part(const double *p, size_t n)
{
    return _mm256_maskload_pd(p, cpu_vd_mask_first(n));
}
static inline void cpu_vd_store_part(double *p, cpu_vd v, size_t n)
{
    _mm256_maskstore_pd(p, cpu_vd_mask_first(n), v);
}
static inline double cpu_vd_hsum(cpu_vd v)
{
    __m128d s = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
    return _mm_cvtsd_f64(_mm_add_sd(s, _mm_unpackhi_pd(s, s)));
}
#define CPU_VD_HSUM(v)      cpu_vd_hsum(v)
#define CPU_VD_SUB(a, b)    _mm256_sub_pd(a, b)
#define CPU_VD_MUL(a, b)    _mm256_mul_pd(a, b)
#define CPU_VD_BCAST(x)     _mm256_set1_pd(x)
/* two vectors of doubles (lanes 0-3, 4-7) rounded to one of floats */
#define CPU_VD_TO_F(lo, hi) _mm256_set_m128(_mm256_cvtpd_ps(hi), _mm256_cvtpd_ps(lo))

#else
#error "define CPU_SIMD_AVX512 or CPU_SIMD_AVX2 before including simd.h"
#endif

#endif /* KILN_CPU_SIMD_H */
