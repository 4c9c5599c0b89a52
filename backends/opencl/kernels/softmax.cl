/* softmax.cl — SOFTMAX, LOG_SOFTMAX, CAUSAL_SOFTMAX, their gradients, and
 * CROSS_ENTROPY with its gradient: everything that works on rows through a
 * logsumexp.
 *
 * One row per work-group. The row maximum is subtracted before exp, so exp
 * never overflows and the sum is at least 1; a NaN in a row makes the
 * maximum NaN, and so the whole row NaN. */

/* The maximum of a row and the sum of exp(x - max) over it. */
typedef struct row_lse {
    float  m;
    acc_t  s;
} row_lse;

row_lse row_logsumexp(GCF *x, ulong cols, __local acc_t *scratch)
{
    row_lse r;
    float m = x[0];
    for (ulong c = get_local_id(0); c < cols; c += get_local_size(0))
        m = max_nan(m, x[c]);
    r.m = group_max(m, (__local float *)scratch);
    kiln_sum s = sum_zero();
    for (ulong c = get_local_id(0); c < cols; c += get_local_size(0))
        s = sum_add(s, exp(x[c] - r.m));
    r.s = group_sum(s.s, scratch);
    return r;
}

__kernel void kiln_softmax(GF *out, ulong oo, GCF *x, ulong xo, ulong cols,
                           int as_log, __local acc_t *scratch)
{
    ulong row = get_group_id(0);
    GCF *xr = x + xo + row * cols;
    GF *outr = out + oo + row * cols;
    row_lse l = row_logsumexp(xr, cols, scratch);
    if (as_log) {
        float log_s = (float)log(l.s);
        for (ulong c = get_local_id(0); c < cols; c += get_local_size(0))
            outr[c] = (xr[c] - l.m) - log_s;
    } else {
        float inv = (float)(1 / l.s);
        for (ulong c = get_local_id(0); c < cols; c += get_local_size(0))
            outr[c] = exp(xr[c] - l.m) * inv;
    }
}

/* SOFTMAX_GRAD: y * (g - sum(g * y)); LOG_SOFTMAX_GRAD: g - exp(y) * sum(g). */
__kernel void kiln_softmax_grad(GF *out, ulong oo, GCF *g, ulong go, GCF *y,
                                ulong yo, ulong cols, int as_log,
                                __local acc_t *scratch)
{
    ulong row = get_group_id(0);
    GCF *gr = g + go + row * cols, *yr = y + yo + row * cols;
    GF *outr = out + oo + row * cols;
    kiln_sum s = sum_zero();
    for (ulong c = get_local_id(0); c < cols; c += get_local_size(0))
        s = sum_add(s, as_log ? (acc_t)gr[c] : (acc_t)gr[c] * (acc_t)yr[c]);
    float total = (float)group_sum(s.s, scratch);
    for (ulong c = get_local_id(0); c < cols; c += get_local_size(0))
        outr[c] = as_log ? gr[c] - exp(yr[c]) * total : yr[c] * (gr[c] - total);
}

/* A label outside [0, classes) is reported through err[slot], which keeps
 * the lowest bad row (the host reads it back when it synchronizes). */
bool label_ok(int label, ulong classes, ulong row, __global int *err, uint slot)
{
    if (label >= 0 && (ulong)label < classes)
        return true;
    if (get_local_id(0) == 0)
        atomic_min(err + slot, (int)min(row, (ulong)0x7ffffffe));
    return false;
}

/* loss[row] = logsumexp(x[row]) - x[row][label]; NaN for a bad label. */
__kernel void kiln_cross_entropy_rows(GF *loss, ulong lso, GCF *x, ulong xo,
                                      GCI *labels, ulong lo, ulong classes,
                                      __global int *err, uint slot,
                                      __local acc_t *scratch)
{
    ulong row = get_group_id(0);
    GCF *xr = x + xo + row * classes;
    int label = labels[lo + row];
    bool ok = label_ok(label, classes, row, err, slot);
    row_lse l = row_logsumexp(xr, classes, scratch);
    if (get_local_id(0) == 0)
        loss[lso + row] = ok ? (float)((acc_t)l.m + log(l.s) - (acc_t)xr[label]) : NAN;
}

/* g * (softmax(x) - one_hot(label)) / rows, g one element. */
__kernel void kiln_cross_entropy_grad(GF *out, ulong oo, GCF *g, ulong go, GCF *x,
                                      ulong xo, GCI *labels, ulong lo, ulong rows,
                                      ulong classes, __global int *err, uint slot,
                                      __local acc_t *scratch)
{
    ulong row = get_group_id(0);
    GCF *xr = x + xo + row * classes;
    GF *outr = out + oo + row * classes;
    int label = labels[lo + row];
    bool ok = label_ok(label, classes, row, err, slot);
    row_lse l = row_logsumexp(xr, classes, scratch);
    float scale = g[go] / (float)rows, inv = (float)(1 / l.s);
    for (ulong c = get_local_id(0); c < classes; c += get_local_size(0)) {
        float p = exp(xr[c] - l.m) * inv;
        outr[c] = ok ? scale * (p - (c == (ulong)label ? 1.0f : 0.0f)) : NAN;
    }
}

/* The columns row `row` of the [rows, tk] view keeps: it is row row % tq
 * of its [tq, tk] matrix, shifted by the offset when there is one
 * (has_offset; else tq = tk and off is not read), none when negative. */
static ulong causal_keep(ulong row, ulong tq, ulong tk, GCI *off, ulong offo,
                         uint has_offset)
{
    long keep = (long)(row % tq) + 1 + (has_offset ? (long)off[offo] : 0);
    return keep < 0 ? 0 : min((ulong)keep, tk);
}

/* CAUSAL_SOFTMAX: each row keeps causal_keep columns, of scale * x; the
 * others are written 0. Maximum and sum as in row_logsumexp. */
__kernel void kiln_causal_softmax(GF *out, ulong oo, GCF *x, ulong xo, ulong tq,
                                  ulong tk, GCI *off, ulong offo, uint has_offset,
                                  float scale, __local acc_t *scratch)
{
    ulong row = get_group_id(0), keep = causal_keep(row, tq, tk, off, offo, has_offset);
    GCF *xr = x + xo + row * tk;
    GF *outr = out + oo + row * tk;
    float m = scale * xr[0];
    for (ulong c = get_local_id(0); c < keep; c += get_local_size(0))
        m = max_nan(m, scale * xr[c]);
    m = group_max(m, (__local float *)scratch);
    kiln_sum s = sum_zero();
    for (ulong c = get_local_id(0); c < keep; c += get_local_size(0))
        s = sum_add(s, exp(scale * xr[c] - m));
    float inv = (float)(1 / group_sum(s.s, scratch));
    for (ulong c = get_local_id(0); c < tk; c += get_local_size(0))
        outr[c] = c < keep ? exp(scale * xr[c] - m) * inv : 0.0f;
}

/* CAUSAL_SOFTMAX_GRAD: scale * y * (g - sum(g * y)) over the kept columns,
 * 0 in the others. */
__kernel void kiln_causal_softmax_grad(GF *out, ulong oo, GCF *g, ulong go, GCF *y,
                                       ulong yo, ulong tq, ulong tk, GCI *off,
                                       ulong offo, uint has_offset, float scale,
                                       __local acc_t *scratch)
{
    ulong row = get_group_id(0), keep = causal_keep(row, tq, tk, off, offo, has_offset);
    GCF *gr = g + go + row * tk, *yr = y + yo + row * tk;
    GF *outr = out + oo + row * tk;
    kiln_sum s = sum_zero();
    for (ulong c = get_local_id(0); c < keep; c += get_local_size(0))
        s = sum_add(s, (acc_t)gr[c] * (acc_t)yr[c]);
    float total = (float)group_sum(s.s, scratch);
    for (ulong c = get_local_id(0); c < tk; c += get_local_size(0))
        outr[c] = c < keep ? scale * (yr[c] * (gr[c] - total)) : 0.0f;
}
