/* core/graph/dtype.c — element types: their names and sizes, and the
 * conversion of f32, f16 and bf16 arrays (kiln_convert) with the rounding
 * that every backend's cast uses (backends/common/half.h). */
#include "../kiln-impl.h"

#include "../../backends/common/half.h"

const char *kiln__dtype_name(kiln_dtype dtype)
{
    switch (dtype) {
    case KILN_F32: return "f32";
    case KILN_I32: return "i32";
    case KILN_F16: return "f16";
    case KILN_BF16: return "bf16";
    }
    return "an unknown dtype";
}

KILN_API const char *kiln_dtype_name(kiln_dtype dtype)
{
    return (unsigned)dtype <= KILN_BF16 ? kiln__dtype_name(dtype) : "unknown";
}

KILN_API size_t kiln_dtype_size(kiln_dtype dtype)
{
    return (unsigned)dtype <= KILN_BF16 ? kiln__elem_size(dtype) : 0;
}

/* Element i of a float array as f32. */
static float load(const void *src, kiln_dtype dtype, size_t i)
{
    switch (dtype) {
    case KILN_F16: return kiln__f16_to_f32(((const uint16_t *)src)[i]);
    case KILN_BF16: return kiln__bf16_to_f32(((const uint16_t *)src)[i]);
    default: return ((const float *)src)[i];
    }
}

static void store(void *dst, kiln_dtype dtype, size_t i, float v)
{
    switch (dtype) {
    case KILN_F16: ((uint16_t *)dst)[i] = kiln__f32_to_f16(v); break;
    case KILN_BF16: ((uint16_t *)dst)[i] = kiln__f32_to_bf16(v); break;
    default: ((float *)dst)[i] = v; break;
    }
}

KILN_API kiln_status kiln_convert(void *dst, kiln_dtype dst_dtype, const void *src,
                                  kiln_dtype src_dtype, size_t n)
{
    if (!kiln__is_float(dst_dtype) || !kiln__is_float(src_dtype))
        return kiln__error(KILN_ERR_INVALID_ARG,
                           "kiln_convert: from %s (%d) to %s (%d): expected KILN_F32, "
                           "KILN_F16 or KILN_BF16 on both sides",
                           kiln_dtype_name(src_dtype), (int)src_dtype,
                           kiln_dtype_name(dst_dtype), (int)dst_dtype);
    if (n > 0 && (!dst || !src))
        return kiln__error(KILN_ERR_INVALID_ARG, "kiln_convert: %s is NULL for %zu elements",
                           dst ? "src" : "dst", n);
    /* a 16-bit type to its own kind passes f32 exactly: one loop serves all;
     * forward, so that narrowing in place (dst == src) reads each element
     * before anything overwrites it */
    for (size_t i = 0; i < n; i++)
        store(dst, dst_dtype, i, load(src, src_dtype, i));
    return KILN_OK;
}
