/* conv.cl — the layout kernels around CONV2D's GEMMs, MAX_POOL2D and its
 * gradient.
 *
 * Convolution is GEMM on "columns": for a chunk of nc images starting at
 * image n0, col [C*KH*KW, nc*S] (S = OH*OW) holds every patch, one image
 * after another along the columns. Then
 *   forward      tmp [O, nc*S]       = w [O, CKK] @ col
 *   grad input   col                 = w^T @ gyc,  gyc [O, nc*S] from gy
 *   grad weight  gw [O, CKK]        += gyc @ col^T
 * and these kernels move data between NCHW tensors and that layout. A conv
 * shape travels in two vector arguments: int8 (C, H, W, KH, KW, OH, OW, ph)
 * and int4 (sh, sw, pw, O); the host checks that every size fits an int.
 *
 * An indexed file (embed.sh), as broadcast.cl: idx_t (uint or ulong) for
 * element indices, sidx_t (int or long) for coordinates that padding makes
 * negative; the host takes the 32-bit build where every index and padded
 * extent fits an int. */

typedef struct K(conv_dims) {
    sidx_t C, H, W, KH, KW, OH, OW, ph, sh, sw, pw, O;
} K(conv_dims);

K(conv_dims) K(conv_of)(int8 a, int4 b)
{
    K(conv_dims) d = { a.s0, a.s1, a.s2, a.s3, a.s4, a.s5, a.s6, a.s7,
                       b.s0, b.s1, b.s2, b.s3 };
    return d;
}

/* col[q, n*S + s] = x[n0 + n, c, oh*sh - ph + kh, ow*sw - pw + kw], zero in
 * the padding, with q = (c*KH + kh)*KW + kw and s = oh*OW + ow. */
__kernel void K(kiln_im2col)(GF *col, ulong co, GCF *x, ulong xo, int8 da, int4 db,
                             idx_t n0, idx_t nc)
{
    K(conv_dims) d = K(conv_of)(da, db);
    idx_t S = (idx_t)(d.OH * d.OW), cols = nc * S;
    idx_t i = get_global_id(0);
    if (i >= (idx_t)(d.C * d.KH * d.KW) * cols)
        return;
    idx_t q = i / cols, rem = i % cols;
    idx_t n = rem / S, s = rem % S;
    sidx_t oh = s / d.OW, ow = s % d.OW;
    sidx_t c = q / (d.KH * d.KW), kh = (q / d.KW) % d.KH, kw = q % d.KW;
    sidx_t ih = oh * d.sh - d.ph + kh, iw = ow * d.sw - d.pw + kw;
    float v = 0.0f;
    if (ih >= 0 && ih < d.H && iw >= 0 && iw < d.W)
        v = x[xo + (((n0 + n) * d.C + c) * d.H + ih) * d.W + iw];
    col[co + i] = v;
}

/* out[n0 + n, o, s] = tmp[o, n*S + s] (+ bias[o]). */
__kernel void K(kiln_conv_out)(GF *out, ulong oo, GCF *tmp, ulong to, GCF *bias,
                               ulong bo, int has_bias, idx_t O, idx_t S, idx_t n0,
                               idx_t nc)
{
    idx_t i = get_global_id(0);
    if (i >= nc * O * S)
        return;
    idx_t n = i / (O * S), o = (i / S) % O, s = i % S;
    float v = tmp[to + o * nc * S + n * S + s];
    out[oo + n0 * O * S + i] = has_bias ? v + bias[bo + o] : v;
}

/* gyc[o, n*S + s] = gy[n0 + n, o, s]: the inverse of kiln_conv_out. */
__kernel void K(kiln_conv_cols)(GF *gyc, ulong gco, GCF *gy, ulong go, idx_t O,
                                idx_t S, idx_t n0, idx_t nc)
{
    idx_t i = get_global_id(0);
    if (i >= nc * O * S)
        return;
    idx_t n = i / (O * S), o = (i / S) % O, s = i % S;
    gyc[gco + o * nc * S + n * S + s] = gy[go + n0 * O * S + i];
}

/* gx[n0 + n, c, ih, iw] = the sum of the col entries that im2col read from
 * that pixel: a gather, so no two work-items write one element. */
__kernel void K(kiln_col2im)(GF *gx, ulong gxo, GCF *col, ulong co, int8 da, int4 db,
                             idx_t n0, idx_t nc)
{
    K(conv_dims) d = K(conv_of)(da, db);
    idx_t S = (idx_t)(d.OH * d.OW), cols = nc * S;
    idx_t i = get_global_id(0);
    if (i >= nc * (idx_t)(d.C * d.H * d.W))
        return;
    sidx_t iw = i % d.W, ih = (i / d.W) % d.H;
    idx_t c = (i / (d.W * d.H)) % d.C, n = i / (d.W * d.H * d.C);
    kiln_sum s = sum_zero();
    for (sidx_t kh = 0; kh < d.KH; kh++) {
        sidx_t th = ih + d.ph - kh;
        if (th < 0 || th % d.sh != 0 || th / d.sh >= d.OH)
            continue;
        for (sidx_t kw = 0; kw < d.KW; kw++) {
            sidx_t tw = iw + d.pw - kw;
            if (tw < 0 || tw % d.sw != 0 || tw / d.sw >= d.OW)
                continue;
            idx_t q = (c * d.KH + kh) * d.KW + kw;
            s = sum_add(s, col[co + q * cols + n * S + (th / d.sh) * d.OW + tw / d.sw]);
        }
    }
    gx[gxo + n0 * d.C * d.H * d.W + i] = (float)s.s;
}

/* pool: KH, KW, SH, SW; plane: H, W, OH, OW. */
__kernel void K(kiln_max_pool2d)(GF *out, ulong oo, GCF *x, ulong xo, int4 pool,
                                 int4 plane, idx_t n)
{
    idx_t i = get_global_id(0);
    if (i >= n)
        return;
    idx_t ow = i % plane.s3, oh = (i / plane.s3) % plane.s2;
    idx_t p = i / ((idx_t)plane.s3 * plane.s2);
    GCF *w = x + xo + (p * plane.s0 + oh * pool.s2) * plane.s1 + ow * pool.s3;
    float m = w[0];
    for (int a = 0; a < pool.s0; a++)
        for (int b = 0; b < pool.s1; b++)
            m = max_nan(m, w[a * plane.s1 + b]);
    out[oo + i] = m;
}

/* gx[p, ih, iw] = the sum of gy[p, oh, ow] over the windows whose first
 * maximum (a NaN counts as the maximum) is at (ih, iw). */
__kernel void K(kiln_max_pool2d_grad)(GF *gx, ulong gxo, GCF *gy, ulong go, GCF *x,
                                      ulong xo, int4 pool, int4 plane, idx_t n)
{
    idx_t i = get_global_id(0);
    if (i >= n)
        return;
    sidx_t H = plane.s0, W = plane.s1, OH = plane.s2, OW = plane.s3;
    sidx_t kh = pool.s0, kw = pool.s1, sh = pool.s2, sw = pool.s3;
    sidx_t iw = i % W, ih = (i / W) % H;
    idx_t p = i / (W * H);
    GCF *xp = x + xo + p * H * W;
    sidx_t oh0 = ih - kh + 1 > 0 ? (ih - kh + 1 + sh - 1) / sh : 0;
    sidx_t ow0 = iw - kw + 1 > 0 ? (iw - kw + 1 + sw - 1) / sw : 0;
    kiln_sum s = sum_zero();
    for (sidx_t oh = oh0; oh <= ih / sh && oh < OH; oh++) {
        for (sidx_t ow = ow0; ow <= iw / sw && ow < OW; ow++) {
            sidx_t top = oh * sh, left = ow * sw;
            float best = xp[top * W + left];
            sidx_t at = top * W + left;
            for (sidx_t a = 0; a < kh; a++)
                for (sidx_t b = 0; b < kw; b++) {
                    sidx_t k = (top + a) * W + left + b;
                    if (arg_better(xp[k], k, best, at)) {
                        best = xp[k];
                        at = k;
                    }
                }
            if (at == ih * W + iw)
                s = sum_add(s, gy[go + (p * OH + oh) * OW + ow]);
        }
    }
    gx[gxo + i] = (float)s.s;
}
