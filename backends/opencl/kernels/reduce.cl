/* reduce.cl — SUM and MEAN over an axis (also SUM_TO and the means of the
 * losses), MAX, ARGMAX and MAX_GRAD along the last axis.
 *
 * One work-group per output element or row; its work-items stride over the
 * reduced elements and combine in local memory. */

/* x seen as [outer, r, inner]; out[o * inner + j] = sum over k of
 * x[(o * r + k) * inner + j], divided by r when mean (NaN for r = 0). */
__kernel void kiln_sum_axis(GF *out, ulong oo, GCF *x, ulong xo, ulong r,
                            ulong inner, int mean, __local acc_t *scratch)
{
    ulong g = get_group_id(0);
    ulong o = g / inner, j = g % inner;
    GCF *base = x + xo + o * r * inner + j;
    kiln_sum s = sum_zero();
    for (ulong k = get_local_id(0); k < r; k += get_local_size(0))
        s = sum_add(s, base[k * inner]);
    acc_t total = group_sum(s.s, scratch);
    if (get_local_id(0) == 0) {
        if (mean)
            total = r > 0 ? total / (acc_t)r : (acc_t)NAN;
        out[oo + g] = (float)total;
    }
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

/* mean((pred - target)^2) over n elements, by one work-group. */
__kernel void kiln_mse_loss(GF *out, ulong oo, GCF *p, ulong po, GCF *t, ulong to,
                            ulong n, __local acc_t *scratch)
{
    kiln_sum s = sum_zero();
    for (ulong i = get_local_id(0); i < n; i += get_local_size(0)) {
        acc_t d = (acc_t)p[po + i] - (acc_t)t[to + i];
        s = sum_add(s, d * d);
    }
    acc_t total = group_sum(s.s, scratch);
    if (get_local_id(0) == 0)
        out[oo] = n > 0 ? (float)(total / (acc_t)n) : NAN;
}
