/* broadcast.cl — binary ops with kiln's broadcasting, and EXPAND: one
 * work-item per output element, whose index is split with / and %.
 *
 * An indexed file (embed.sh): built once with idx_t uint, as kiln_add ...,
 * and once with idx_t ulong, as kiln_add_wide ...; the host launches the
 * first wherever every index fits (GPUs divide 32-bit integers several
 * times faster than 64-bit ones), the second past that. Buffer offsets stay
 * ulong in both. */

/* out[i] = a[i % na] OP b[i % nb] (backend.h): the operand with n elements
 * is read directly, the smaller one repeats. */
#define KILN_BINARY(name, expr)                                                \
__kernel void K(name)(GF *out, ulong oo, GCF *a, ulong ao, idx_t na,           \
                      GCF *b, ulong bo, idx_t nb, idx_t n)                     \
{                                                                              \
    idx_t i = get_global_id(0);                                                \
    if (i >= n)                                                                \
        return;                                                                \
    float x = a[ao + (na == n ? i : i % na)];                                  \
    float y = b[bo + (nb == n ? i : i % nb)];                                  \
    out[oo + i] = (expr);                                                      \
}

KILN_BINARY(kiln_add, x + y)
KILN_BINARY(kiln_sub, x - y)
KILN_BINARY(kiln_mul, x * y)
KILN_BINARY(kiln_div, x / y)

/* ADD then the RELU of the sum, a dense layer's bias and activation (fuse.c),
 * in one pass that writes both. out may be a exactly (each work-item reads
 * a[i] before it writes out[i]). */
__kernel void K(kiln_add_relu)(GF *sum, ulong so, GF *out, ulong oo, GCF *a, ulong ao,
                               idx_t na, GCF *b, ulong bo, idx_t nb, idx_t n)
{
    idx_t i = get_global_id(0);
    if (i >= n)
        return;
    float x = a[ao + (na == n ? i : i % na)] + b[bo + (nb == n ? i : i % nb)];
    sum[so + i] = x;
    out[oo + i] = x < 0.0f ? 0.0f : x; /* keeps NaN, as kiln_relu */
}

/* The output seen as [outer, r, inner] takes src [outer, inner], repeated
 * along r (EXPAND over one axis; over everything, r = n and inner = 1). */
__kernel void K(kiln_expand)(GF *out, ulong oo, GCF *src, ulong so, idx_t r,
                             idx_t inner, idx_t n)
{
    idx_t i = get_global_id(0);
    if (i >= n)
        return;
    idx_t o = i / (r * inner), j = i % inner;
    out[oo + i] = src[so + o * inner + j];
}
