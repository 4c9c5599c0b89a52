/* norm.cl — LAYER_NORM along the last axis and its gradients.
 *
 * LAYER_NORM and LAYER_NORM_GRAD take one row per work-group, as softmax.cl
 * does. A row's statistics take two passes (one pass, E[x^2] - E[x]^2,
 * would cancel for rows far from 0), summed in acc_t: double where the
 * device has it, else a compensated float. The first gives the mean m; the
 * second sums d = x - m and d^2. In float, m itself is rounded (by 3e-5 for
 * a row around 1000, a lot beside a spread of 1), but x - m is exact for x
 * near m, so the mean of d is that rounding: it is kept apart (corr) and
 * taken off d, as a two-pass refinement does. LAYER_NORM_GRAD_WEIGHT sums
 * over rows: the rows'
 * statistics go to a buffer first (kiln_layer_norm_stats), then one
 * work-item per column adds up its column. */

/* A row's mean, as mean + corr, and 1 / sqrt(var + eps), var the biased
 * variance. */
typedef struct norm_stats {
    acc_t mean, corr, rstd;
} norm_stats;

/* (x - mean) * rstd. */
acc_t norm_xhat(float x, norm_stats st)
{
    return (((acc_t)x - st.mean) - st.corr) * st.rstd;
}

norm_stats row_norm_stats(GCF *x, ulong cols, float eps, __local acc_t *scratch)
{
    norm_stats r;
    kiln_sum s = sum_zero();
    for (ulong c = get_local_id(0); c < cols; c += get_local_size(0))
        s = sum_add(s, (acc_t)x[c]);
    r.mean = group_sum(s.s, scratch) / (acc_t)cols;
    kiln_sum s1 = sum_zero(), s2 = sum_zero();
    for (ulong c = get_local_id(0); c < cols; c += get_local_size(0)) {
        acc_t d = (acc_t)x[c] - r.mean;
        s1 = sum_add(s1, d);
        s2 = sum_add(s2, d * d);
    }
    r.corr = group_sum(s1.s, scratch) / (acc_t)cols;
    /* mean(d^2) - corr^2: corr is tiny beside the spread, nothing cancels */
    acc_t var = group_sum(s2.s, scratch) / (acc_t)cols - r.corr * r.corr;
    r.rstd = 1 / sqrt(max(var, (acc_t)0) + (acc_t)eps);
    return r;
}

/* (x - mean) * rstd * w + b, b only when has_bias. */
__kernel void kiln_layer_norm(GF *out, ulong oo, GCF *x, ulong xo, GCF *w, ulong wo,
                              GCF *b, ulong bo, int has_bias, ulong cols, float eps,
                              __local acc_t *scratch)
{
    ulong row = get_group_id(0);
    GCF *xr = x + xo + row * cols;
    GF *outr = out + oo + row * cols;
    norm_stats st = row_norm_stats(xr, cols, eps, scratch);
    for (ulong c = get_local_id(0); c < cols; c += get_local_size(0)) {
        acc_t y = norm_xhat(xr[c], st) * (acc_t)w[wo + c];
        outr[c] = (float)(has_bias ? y + (acc_t)b[bo + c] : y);
    }
}

/* rstd * (g w - mean(g w) - xhat * mean(g w xhat)), xhat = (x - mean) * rstd. */
__kernel void kiln_layer_norm_grad(GF *out, ulong oo, GCF *g, ulong go, GCF *x,
                                   ulong xo, GCF *w, ulong wo, ulong cols, float eps,
                                   __local acc_t *scratch)
{
    ulong row = get_group_id(0);
    GCF *gr = g + go + row * cols, *xr = x + xo + row * cols;
    GF *outr = out + oo + row * cols;
    norm_stats st = row_norm_stats(xr, cols, eps, scratch);
    kiln_sum sg = sum_zero(), sgx = sum_zero();
    for (ulong c = get_local_id(0); c < cols; c += get_local_size(0)) {
        acc_t gw = (acc_t)gr[c] * (acc_t)w[wo + c];
        sg = sum_add(sg, gw);
        sgx = sum_add(sgx, gw * norm_xhat(xr[c], st));
    }
    acc_t a = group_sum(sg.s, scratch) / (acc_t)cols;
    acc_t m = group_sum(sgx.s, scratch) / (acc_t)cols;
    for (ulong c = get_local_id(0); c < cols; c += get_local_size(0)) {
        acc_t xhat = norm_xhat(xr[c], st);
        acc_t gw = (acc_t)gr[c] * (acc_t)w[wo + c];
        outr[c] = (float)(st.rstd * (gw - a - xhat * m));
    }
}

/* stats[3 row ..] = mean, corr, rstd of each row of x. */
__kernel void kiln_layer_norm_stats(__global acc_t *stats, GCF *x, ulong xo, ulong cols,
                                    float eps, __local acc_t *scratch)
{
    ulong row = get_group_id(0);
    norm_stats st = row_norm_stats(x + xo + row * cols, cols, eps, scratch);
    if (get_local_id(0) == 0) {
        stats[3 * row] = st.mean;
        stats[3 * row + 1] = st.corr;
        stats[3 * row + 2] = st.rstd;
    }
}

/* out[c] = sum over rows of g * (x - mean) * rstd, one work-item a column. */
__kernel void kiln_layer_norm_grad_weight(GF *out, ulong oo, GCF *g, ulong go, GCF *x,
                                          ulong xo, __global const acc_t *stats,
                                          ulong rows, ulong cols)
{
    ulong c = get_global_id(0);
    if (c >= cols)
        return;
    kiln_sum s = sum_zero();
    for (ulong r = 0; r < rows; r++) {
        norm_stats st = { stats[3 * r], stats[3 * r + 1], stats[3 * r + 2] };
        s = sum_add(s, (acc_t)g[go + r * cols + c] * norm_xhat(x[xo + r * cols + c], st));
    }
    out[oo + c] = (float)s.s;
}
