/* half.h — one element of f16 (IEEE 754 binary16) or bf16 (bfloat16) to and
 * from f32, in portable C, for core (kiln_convert, constants, weight files)
 * and for the backends' scalar paths. The CPU backend's vector paths (F16C,
 * AVX-512) give the same bits: round to nearest, ties to even; NaN stays NaN
 * (quiet, its sign kept); Inf stays Inf; f16's subnormals are kept, and an
 * f32 past f16's range becomes Inf, as IEEE 754 rounds it.
 *
 * Compiled into libkiln and each in-tree plugin; not installed. */
#ifndef KILN_BACKENDS_HALF_H
#define KILN_BACKENDS_HALF_H

#include <stdint.h>
#include <string.h>

static inline uint32_t kiln__f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static inline float kiln__bits_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* bf16 is f32's upper half: widening is a shift. */
static inline float kiln__bf16_to_f32(uint16_t h)
{
    return kiln__bits_f32((uint32_t)h << 16);
}

static inline uint16_t kiln__f32_to_bf16(float f)
{
    uint32_t u = kiln__f32_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) /* NaN: quiet it, keep sign */
        return (uint16_t)((u >> 16) | 0x0040u);
    u += 0x7fffu + ((u >> 16) & 1u); /* ties to even; may carry into Inf */
    return (uint16_t)(u >> 16);
}

static inline float kiln__f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp  = (h >> 10) & 0x1fu, man = h & 0x3ffu;
    if (exp == 0x1f) /* Inf or NaN */
        return kiln__bits_f32(sign | 0x7f800000u | (man << 13) | (man ? 0x400000u : 0));
    if (exp == 0) {
        /* zero or subnormal: man * 2^-24, exact in f32 */
        float v = (float)man * 0x1p-24f;
        return sign ? -v : v;
    }
    return kiln__bits_f32(sign | ((exp + 112u) << 23) | (man << 13));
}

static inline uint16_t kiln__f32_to_f16(float f)
{
    uint32_t u    = kiln__f32_bits(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t a    = u & 0x7fffffffu;
    if (a > 0x7f800000u) /* NaN: quiet, with the top bits of its payload */
        return (uint16_t)(sign | 0x7e00u | ((a >> 13) & 0x3ffu));
    if (a >= 0x477ff000u) /* rounds past 65504: Inf */
        return (uint16_t)(sign | 0x7c00u);
    if (a < 0x38800000u) {
        /* below f16's smallest normal (2^-14): a subnormal or zero, rounded
         * to a multiple of 2^-24 (ties to even, as the FPU's addition does) */
        float v = kiln__bits_f32(a) + 0.5f; /* 0.5 = 2^-1: aligns 2^-24 at bit 0 */
        return (uint16_t)(sign | (uint16_t)(kiln__f32_bits(v) - 0x3f000000u));
    }
    uint32_t odd = (a >> 13) & 1u;
    a += 0xc8000fffu + odd; /* rebias the exponent (-112 << 23) and round */
    return (uint16_t)(sign | (uint16_t)(a >> 13));
}

#endif /* KILN_BACKENDS_HALF_H */
