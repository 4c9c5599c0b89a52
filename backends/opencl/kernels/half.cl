/* half.cl — f16 and bf16 to and from f32 (CAST, and the widening that runs
 * other ops on 16-bit tensors). f16 goes through vload_half and
 * vstore_half_rte, core OpenCL that needs no cl_khr_fp16; bf16 is f32's
 * upper half, kept as ushort: widening is a shift, narrowing rounds to
 * nearest even and quiets a NaN, as backends/common/half.h does. */

float kiln_bf16_f32(ushort h)
{
    return as_float((uint)h << 16);
}

ushort kiln_f32_bf16(float f)
{
    uint u = as_uint(f);
    if (isnan(f))
        return (ushort)((u >> 16) | 0x40u);
    return (ushort)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

/* out (f32) = in (f16, or bf16 when bf16 != 0) */
__kernel void kiln_widen(GF *out, ulong oo, __global const ushort *in, ulong io,
                         ulong n, int bf16)
{
    ulong i = get_global_id(0);
    if (i >= n)
        return;
    out[oo + i] = bf16 ? kiln_bf16_f32(in[io + i]) : vload_half(io + i, (__global const half *)in);
}

/* out (f16, or bf16) = in (f32), rounded to nearest even */
__kernel void kiln_narrow(__global ushort *out, ulong oo, GCF *in, ulong io, ulong n,
                          int bf16)
{
    ulong i = get_global_id(0);
    if (i >= n)
        return;
    float x = in[io + i];
    if (bf16)
        out[oo + i] = kiln_f32_bf16(x);
    else
        vstore_half_rte(x, oo + i, (__global half *)out);
}

/* out = in between f16 and bf16 (to_bf16: which way) */
__kernel void kiln_recast16(__global ushort *out, ulong oo, __global const ushort *in,
                            ulong io, ulong n, int to_bf16)
{
    ulong i = get_global_id(0);
    if (i >= n)
        return;
    if (to_bf16)
        out[oo + i] = kiln_f32_bf16(vload_half(io + i, (__global const half *)in));
    else
        vstore_half_rte(kiln_bf16_f32(in[io + i]), oo + i, (__global half *)out);
}
