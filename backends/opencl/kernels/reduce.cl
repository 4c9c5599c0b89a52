/* reduce.cl — SUM and MEAN over an axis (also SUM_TO and the means of the
 * losses), MAX, ARGMAX and MAX_GRAD along the last axis.
 *
 * A sum sees x as [outer, r, inner] and reduces r. Where inner is 1 (runs
 * of r adjacent elements) a work-group takes a run, its work-items striding
 * over it and combining in local memory; elsewhere a work-item takes one
 * output element, adjacent work-items reading adjacent addresses. When that
 * leaves too few groups or work-items to fill the device, r is cut into
 * `parts` parts of `chunk` elements (the host's choice, from the sizes and
 * the device only, so a result repeats bit for bit): each part leaves an
 * acc_t in part[] as [outer, parts, inner], and kiln_sum_parts adds them up.
 * No float atomics, no order that depends on timing.
 *
 * MAX, ARGMAX and MAX_GRAD take one work-group per row. */

/* [k0, k1): part p of r elements cut in parts of chunk. */
void part_range(ulong r, ulong chunk, ulong p, ulong *k0, ulong *k1)
{
    ulong a = p * chunk;
    *k0 = a < r ? a : r;
    *k1 = r - *k0 > chunk ? *k0 + chunk : r;
}

/* x as [outer, r] in groups of (outer * parts): group g sums part g % parts
 * of run g / parts; with one part, out[o] is its sum or mean. */
__kernel void kiln_sum_rows(GF *out, ulong oo, __global acc_t *part, GCF *x, ulong xo,
                            ulong r, ulong parts, ulong chunk, int mean,
                            __local acc_t *scratch)
{
    ulong g = get_group_id(0), o = g / parts, k0, k1;
    part_range(r, chunk, g % parts, &k0, &k1);
    GCF *run = x + xo + o * r;
    kiln_sum s = sum_zero();
    for (ulong k = k0 + get_local_id(0); k < k1; k += get_local_size(0))
        s = sum_add(s, run[k]);
    acc_t total = group_sum(sum_value(s), scratch);
    if (get_local_id(0) != 0)
        return;
    if (parts > 1)
        part[g] = total;
    else
        out[oo + o] = sum_or_mean(total, r, mean);
}

/* x as [outer, r, inner], one work-item per (o, p, j) of n = outer * parts
 * * inner, j fastest: the sum of x[o, k, j] over part p of r; with one
 * part, out[o, j] is its sum or mean. */
__kernel void kiln_sum_cols(GF *out, ulong oo, __global acc_t *part, GCF *x, ulong xo,
                            ulong r, ulong inner, ulong parts, ulong chunk, int mean,
                            ulong n)
{
    ulong i = get_global_id(0);
    if (i >= n)
        return;
    ulong q = i / inner, j = i % inner, o = q / parts, k0, k1;
    part_range(r, chunk, q % parts, &k0, &k1);
    GCF *col = x + xo + o * r * inner + j;
    kiln_sum s = sum_zero();
    for (ulong k = k0; k < k1; k++)
        s = sum_add(s, col[k * inner]);
    if (parts > 1)
        part[i] = sum_value(s);
    else
        out[oo + o * inner + j] = sum_or_mean(sum_value(s), r, mean);
}

/* out[o, j] = the sum over p of part[o, p, j], or that over r (the length
 * that was cut into parts) when mean; n = outer * inner. */
__kernel void kiln_sum_parts(GF *out, ulong oo, __global const acc_t *part, ulong parts,
                             ulong inner, ulong r, int mean, ulong n)
{
    ulong i = get_global_id(0);
    if (i >= n)
        return;
    __global const acc_t *p = part + i / inner * parts * inner + i % inner;
    kiln_sum s = sum_zero();
    for (ulong k = 0; k < parts; k++)
        s = sum_add(s, p[k * inner]);
    out[oo + i] = sum_or_mean(sum_value(s), r, mean);
}

/* One row of cols per work-group (cols > 0). */
__kernel void kiln_max_last(GF *out, ulong oo, GCF *x, ulong xo, ulong cols,
                            __local float *scratch)
{
    ulong row = get_group_id(0);
    GCF *xr = x + xo + row * cols;
    float m = xr[0];
    for (ulong c = get_local_id(0); c < cols; c += get_local_size(0))
        m = max_nan(m, xr[c]);
    m = group_max(m, scratch);
    if (get_local_id(0) == 0)
        out[oo + row] = m;
}

__kernel void kiln_argmax_last(__global int *out, ulong oo, GCF *x, ulong xo,
                               ulong cols, __local float *sv, __local ulong *si)
{
    ulong row = get_group_id(0);
    ulong at = group_argmax(x + xo + row * cols, cols, sv, si);
    if (get_local_id(0) == 0)
        out[oo + row] = (int)at;
}

/* out [rows, cols]: g[row] at the first maximum of x's row, 0 elsewhere. */
__kernel void kiln_max_grad(GF *out, ulong oo, GCF *g, ulong go, GCF *x, ulong xo,
                            ulong cols, __local float *sv, __local ulong *si)
{
    ulong row = get_group_id(0);
    ulong at = group_argmax(x + xo + row * cols, cols, sv, si);
    float gr = g[go + row];
    GF *outr = out + oo + row * cols;
    for (ulong c = get_local_id(0); c < cols; c += get_local_size(0))
        outr[c] = c == at ? gr : 0.0f;
}

/* mean((pred - target)^2) over n elements (n > 0), part g of them by
 * group g, as kiln_sum_rows with one run. */
__kernel void kiln_mse_loss(GF *out, ulong oo, __global acc_t *part, GCF *p, ulong po,
                            GCF *t, ulong to, ulong n, ulong parts, ulong chunk,
                            __local acc_t *scratch)
{
    ulong g = get_group_id(0), k0, k1;
    part_range(n, chunk, g, &k0, &k1);
    kiln_sum s = sum_zero();
    for (ulong i = k0 + get_local_id(0); i < k1; i += get_local_size(0)) {
        acc_t d = (acc_t)p[po + i] - (acc_t)t[to + i];
        s = sum_add(s, d * d);
    }
    acc_t total = group_sum(sum_value(s), scratch);
    if (get_local_id(0) != 0)
        return;
    if (parts > 1)
        part[g] = total;
    else
        out[oo] = sum_or_mean(total, n, 1);
}
