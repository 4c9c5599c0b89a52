/* fuse.cl — nodes run together (fuse.c): ADD then the RELU of the sum, a
 * dense layer's bias and activation, in one pass that writes both. out may
 * be a exactly (each work-item reads a[i] before it writes out[i]). */
__kernel void kiln_add_relu(GF *sum, ulong so, GF *out, ulong oo, GCF *a, ulong ao,
                            ulong na, GCF *b, ulong bo, ulong nb, ulong n)
{
    ulong i = get_global_id(0);
    if (i >= n)
        return;
    float x = a[ao + (na == n ? i : i % na)] + b[bo + (nb == n ? i : i % nb)];
    sum[so + i] = x;
    out[oo + i] = x < 0.0f ? 0.0f : x; /* keeps NaN, as kiln_relu */
}
