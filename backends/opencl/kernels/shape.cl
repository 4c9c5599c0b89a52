/* shape.cl — TRANSPOSE through local memory; PERMUTE of up to 4 axes,
 * SLICE and SLICE_GRAD, one work-item per output element.
 *
 * The op is seen as 4-D (leading axes of 1): d0..d3 are the output's dims
 * and s0..s3 the input's stride along each output axis. Dividing by the
 * dims is most of the work, so where every index fits 32 bits
 * (kiln_permute) it is done in uint, which GPUs divide far faster than
 * ulong; kiln_permute_wide takes the rest. */

/* out [cols, rows] = x [rows, cols]^T, a KILN_TILE x KILN_TILE tile per
 * work-group of KILN_TILE x b work-items (b divides KILN_TILE), the tiles
 * taken along dimension 0 (tiles_x of them across x's columns). A group
 * reads its tile's rows into local memory and writes the tile's columns as
 * the output's rows, so that both its reads and its writes are runs of
 * adjacent addresses; the padding column keeps a column read off a single
 * bank. */
#define KILN_TILE 32

__kernel void kiln_transpose(GF *out, ulong oo, GCF *x, ulong xo, ulong rows,
                             ulong cols, ulong tiles_x)
{
    __local float tile[KILN_TILE][KILN_TILE + 1];
    size_t lx = get_local_id(0), b = get_local_size(1);
    ulong  t = get_group_id(0);
    ulong  r0 = t / tiles_x * KILN_TILE, c0 = t % tiles_x * KILN_TILE;
    for (size_t k = get_local_id(1); k < KILN_TILE; k += b) {
        ulong r = r0 + k, c = c0 + lx;
        if (r < rows && c < cols)
            tile[k][lx] = x[xo + r * cols + c];
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    for (size_t k = get_local_id(1); k < KILN_TILE; k += b) {
        ulong c = c0 + k, r = r0 + lx;
        if (c < cols && r < rows)
            out[oo + c * rows + r] = tile[lx][k];
    }
}

__kernel void kiln_permute(GF *out, ulong oo, GCF *x, ulong xo, uint d1, uint d2,
                           uint d3, uint s0, uint s1, uint s2, uint s3, uint n)
{
    uint i = get_global_id(0);
    if (i >= n)
        return;
    uint r = i, i3 = r % d3;
    r /= d3;
    uint i2 = r % d2;
    r /= d2;
    uint i1 = r % d1, i0 = r / d1;
    out[oo + i] = x[xo + i0 * s0 + i1 * s1 + i2 * s2 + i3 * s3];
}

__kernel void kiln_permute_wide(GF *out, ulong oo, GCF *x, ulong xo, ulong d1, ulong d2,
                                ulong d3, ulong s0, ulong s1, ulong s2, ulong s3, ulong n)
{
    ulong i = get_global_id(0);
    if (i >= n)
        return;
    ulong r = i, i3 = r % d3;
    r /= d3;
    ulong i2 = r % d2;
    r /= d2;
    ulong i1 = r % d1, i0 = r / d1;
    out[oo + i] = x[xo + i0 * s0 + i1 * s1 + i2 * s2 + i3 * s3];
}

/* SLICE and SLICE_GRAD see the tensors as [outer, R, inner] (x) and
 * [outer, L, inner] (the slice): run = L * inner, whole = R * inner,
 * skip = start * inner. */
__kernel void kiln_slice(GF *out, ulong oo, GCF *x, ulong xo, ulong run, ulong whole,
                         ulong skip, ulong n)
{
    ulong i = get_global_id(0);
    if (i >= n)
        return;
    out[oo + i] = x[xo + i / run * whole + skip + i % run];
}

__kernel void kiln_slice_grad(GF *out, ulong oo, GCF *g, ulong go, ulong run, ulong whole,
                              ulong skip, ulong n)
{
    ulong i = get_global_id(0);
    if (i >= n)
        return;
    ulong o = i / whole, at = i % whole;
    out[oo + i] = at >= skip && at - skip < run ? g[go + o * run + at - skip] : 0.0f;
}

/* STORE_SLICE, in place: one work-item per element of value [outer, L,
 * inner] (run = L * inner), into dst [outer, R, inner] (whole = R * inner)
 * at start[0] * inner. A start outside [0, limit] writes nothing: work-item
 * 0 reports it in err[slot] (the host names it at synchronize). */
__kernel void kiln_store_slice(GF *out, ulong oo, GCF *value, ulong vo, GCI *start,
                               ulong so, ulong run, ulong whole, ulong inner, long limit,
                               ulong n, __global int *err, uint slot)
{
    ulong i = get_global_id(0);
    if (i >= n)
        return;
    /* compared as the int it is: Mesa 22.3's rusticl (llvmpipe) takes a
     * widened int compared with a constant as unsigned, so a long start of
     * -1 passed "at < 0" and wrote before the destination */
    int at = start[so];
    if (at < 0 || (long)at > limit) {
        if (i == 0)
            atomic_min(err + slot, 0);
        return;
    }
    out[oo + i / run * whole + (ulong)at * inner + i % run] = value[vo + i];
}
