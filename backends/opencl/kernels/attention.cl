/* attention.cl — CAUSAL_ATTENTION and its gradient, one work-item per row
 * of a head (b, h, t), reading q, k and v where the fused projection put
 * them (qkv [B, T, 3C], row stride 3C). No [T, T] matrix is kept: the
 * forward pass runs an online softmax over the keys j <= t, the gradient
 * recomputes the probabilities from q and k. A head's D columns are held in
 * private arrays of ATTN_D_MAX (the host refuses wider heads). */

#define ATTN_D_MAX 128

/* The (b, t) row and the head h of work-item i of B * H * T. */
#define ATTN_ROW(i, T, H, b, h, t) \
    ulong t = (i) % (T), h = (i) / (T) % (H), b = (i) / (T) / (H)

static float attn_dot(GCF *a, GCF *b, ulong d)
{
    float s = 0.0f;
    for (ulong e = 0; e < d; e++)
        s = fma(a[e], b[e], s);
    return s;
}

__kernel void kiln_causal_attention(GF *out, ulong oo, GCF *qkv, ulong qo, ulong T,
                                    ulong C, ulong H, float scale, ulong n)
{
    ulong i = get_global_id(0);
    if (i >= n)
        return;
    ATTN_ROW(i, T, H, b, h, t);
    ulong D = C / H, ld = 3 * C;
    GCF *q = qkv + qo + (b * T + t) * ld + h * D;
    float acc[ATTN_D_MAX], m = -INFINITY, l = 0.0f;
    for (ulong e = 0; e < D; e++)
        acc[e] = 0.0f;
    for (ulong j = 0; j <= t; j++) {
        GCF *k = qkv + qo + (b * T + j) * ld + C + h * D, *v = k + C;
        float s = scale * attn_dot(q, k, D), mn = fmax(m, s);
        float c = exp(m - mn), p = exp(s - mn);
        l = l * c + p;
        for (ulong e = 0; e < D; e++)
            acc[e] = fma(p, v[e], acc[e] * c);
        m = mn;
    }
    GF *y = out + oo + (b * T + t) * C + h * D;
    for (ulong e = 0; e < D; e++)
        y[e] = acc[e] / l;
}

/* The gradient, first pass, per query row t: its log-sum-exp and
 * r = sum_j P_tj (dY_t . v_j) into stats[2 i], stats[2 i + 1], then
 * dQ_t = scale * sum_j P_tj (dY_t . v_j - r) k_j. */
__kernel void kiln_causal_attention_grad_q(GF *out, ulong oo, GCF *g, ulong go, GCF *qkv,
                                           ulong qo, __global float *stats, ulong T,
                                           ulong C, ulong H, float scale, ulong n)
{
    ulong i = get_global_id(0);
    if (i >= n)
        return;
    ATTN_ROW(i, T, H, b, h, t);
    ulong D = C / H, ld = 3 * C;
    GCF *q = qkv + qo + (b * T + t) * ld + h * D;
    GCF *dy = g + go + (b * T + t) * C + h * D;
    float m = -INFINITY, l = 0.0f;
    for (ulong j = 0; j <= t; j++) {
        float s = scale * attn_dot(q, qkv + qo + (b * T + j) * ld + C + h * D, D);
        float mn = fmax(m, s);
        l = l * exp(m - mn) + exp(s - mn);
        m = mn;
    }
    float lse = m + log(l), r = 0.0f;
    for (ulong j = 0; j <= t; j++) {
        GCF *k = qkv + qo + (b * T + j) * ld + C + h * D, *v = k + C;
        r = fma(exp(scale * attn_dot(q, k, D) - lse), attn_dot(dy, v, D), r);
    }
    stats[2 * i]     = lse;
    stats[2 * i + 1] = r;
    float acc[ATTN_D_MAX];
    for (ulong e = 0; e < D; e++)
        acc[e] = 0.0f;
    for (ulong j = 0; j <= t; j++) {
        GCF *k = qkv + qo + (b * T + j) * ld + C + h * D, *v = k + C;
        float ds = exp(scale * attn_dot(q, k, D) - lse) * (attn_dot(dy, v, D) - r);
        for (ulong e = 0; e < D; e++)
            acc[e] = fma(ds, k[e], acc[e]);
    }
    GF *dq = out + oo + (b * T + t) * ld + h * D;
    for (ulong e = 0; e < D; e++)
        dq[e] = scale * acc[e];
}

/* The second pass, per key row s: over the queries t >= s, with P_ts from
 * the first pass's log-sum-exp, dK_s = scale * sum_t P_ts (dY_t . v_s -
 * r_t) q_t and dV_s = sum_t P_ts dY_t. */
__kernel void kiln_causal_attention_grad_kv(GF *out, ulong oo, GCF *g, ulong go,
                                            GCF *qkv, ulong qo, __global const float *stats,
                                            ulong T, ulong C, ulong H, float scale,
                                            ulong n)
{
    ulong i = get_global_id(0);
    if (i >= n)
        return;
    ATTN_ROW(i, T, H, b, h, s);
    ulong D = C / H, ld = 3 * C;
    GCF *k = qkv + qo + (b * T + s) * ld + C + h * D, *v = k + C;
    float dk[ATTN_D_MAX], dv[ATTN_D_MAX];
    for (ulong e = 0; e < D; e++)
        dk[e] = dv[e] = 0.0f;
    for (ulong t = s; t < T; t++) {
        ulong row = i - s + t; /* work-item index of query row t of this head */
        GCF *q = qkv + qo + (b * T + t) * ld + h * D;
        GCF *dy = g + go + (b * T + t) * C + h * D;
        float p  = exp(scale * attn_dot(q, k, D) - stats[2 * row]);
        float ds = p * (attn_dot(dy, v, D) - stats[2 * row + 1]);
        for (ulong e = 0; e < D; e++) {
            dk[e] = fma(ds, q[e], dk[e]);
            dv[e] = fma(p, dy[e], dv[e]);
        }
    }
    GF *dko = out + oo + (b * T + s) * ld + C + h * D, *dvo = dko + C;
    for (ulong e = 0; e < D; e++) {
        dko[e] = scale * dk[e];
        dvo[e] = dv[e];
    }
}
