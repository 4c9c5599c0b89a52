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
 * and int4 (sh, sw, pw, O); the host checks that every size fits an int. */

typedef struct conv_dims {
    long C, H, W, KH, KW, OH, OW, ph, sh, sw, pw, O;
} conv_dims;

conv_dims conv_of(int8 a, int4 b)
{
    conv_dims d = { a.s0, a.s1, a.s2, a.s3, a.s4, a.s5, a.s6, a.s7,
                    b.s0, b.s1, b.s2, b.s3 };
    return d;
}

/* col[q, n*S + s] = x[n0 + n, c, oh*sh - ph + kh, ow*sw - pw + kw], zero in
 * the padding, with q = (c*KH + kh)*KW + kw and s = oh*OW + ow. */
__kernel void kiln_im2col(GF *col, ulong co, GCF *x, ulong xo, int8 da, int4 db,
                          ulong n0, ulong nc)
{
    conv_dims d = conv_of(da, db);
    ulong S = d.OH * d.OW, cols = nc * S;
    ulong i = get_global_id(0);
    if (i >= (ulong)(d.C * d.KH * d.KW) * cols)
        return;
    ulong q = i / cols, rem = i % cols;
    ulong n = rem / S, s = rem % S;
    long oh = s / d.OW, ow = s % d.OW;
    long c = q / (d.KH * d.KW), kh = (q / d.KW) % d.KH, kw = q % d.KW;
    long ih = oh * d.sh - d.ph + kh, iw = ow * d.sw - d.pw + kw;
    float v = 0.0f;
    if (ih >= 0 && ih < d.H && iw >= 0 && iw < d.W)
        v = x[xo + (((n0 + n) * d.C + c) * d.H + ih) * d.W + iw];
    col[co + i] = v;
}

/* out[n0 + n, o, s] = tmp[o, n*S + s] (+ bias[o]). */
__kernel void kiln_conv_out(GF *out, ulong oo, GCF *tmp, ulong to, GCF *bias,
                            ulong bo, int has_bias, ulong O, ulong S, ulong n0,
                            ulong nc)
{
    ulong i = get_global_id(0);
    if (i >= nc * O * S)
        return;
    ulong n = i / (O * S), o = (i / S) % O, s = i % S;
    float v = tmp[to + o * nc * S + n * S + s];
    out[oo + n0 * O * S + i] = has_bias ? v + bias[bo + o] : v;
}

/* gyc[o, n*S + s] = gy[n0 + n, o, s]: the inverse of kiln_conv_out. */
__kernel void kiln_conv_cols(GF *gyc, ulong gco, GCF *gy, ulong go, ulong O,
                             ulong S, ulong n0, ulong nc)
{
    ulong i = get_global_id(0);
    if (i >= nc * O * S)
        return;
    ulong n = i / (O * S), o = (i / S) % O, s = i % S;
    gyc[gco + o * nc * S + n * S + s] = gy[go + n0 * O * S + i];
}

/* gx[n0 + n, c, ih, iw] = the sum of the col entries that im2col read from
 * that pixel: a gather, so no two work-items write one element. */
__kernel void kiln_col2im(GF *gx, ulong gxo, GCF *col, ulong co, int8 da, int4 db,
                          ulong n0, ulong nc)
{
    conv_dims d = conv_of(da, db);
    ulong S = d.OH * d.OW, cols = nc * S;
    ulong i = get_global_id(0);
    if (i >= nc * (ulong)(d.C * d.H * d.W))
        return;
    long iw = i % d.W, ih = (i / d.W) % d.H;
    ulong c = (i / (d.W * d.H)) % d.C, n = i / (d.W * d.H * d.C);
    kiln_sum s = sum_zero();
    for (long kh = 0; kh < d.KH; kh++) {
        long th = ih + d.ph - kh;
        if (th < 0 || th % d.sh != 0 || th / d.sh >= d.OH)
            continue;
        for (long kw = 0; kw < d.KW; kw++) {
            long tw = iw + d.pw - kw;
            if (tw < 0 || tw % d.sw != 0 || tw / d.sw >= d.OW)
                continue;
            ulong q = (c * d.KH + kh) * d.KW + kw;
            s = sum_add(s, col[co + q * cols + n * S + (th / d.sh) * d.OW + tw / d.sw]);
        }
    }
    gx[gxo + n0 * d.C * d.H * d.W + i] = (float)s.s;
}

/* pool: KH, KW, SH, SW; plane: H, W, OH, OW. */
__kernel void kiln_max_pool2d(GF *out, ulong oo, GCF *x, ulong xo, int4 pool,
                              int4 plane, ulong n)
{
    ulong i = get_global_id(0);
    if (i >= n)
        return;
    ulong ow = i % plane.s3, oh = (i / plane.s3) % plane.s2;
    ulong p = i / ((ulong)plane.s3 * plane.s2);
    GCF *w = x + xo + (p * plane.s0 + oh * pool.s2) * plane.s1 + ow * pool.s3;
    float m = w[0];
    for (int a = 0; a < pool.s0; a++)
        for (int b = 0; b < pool.s1; b++)
            m = max_nan(m, w[a * plane.s1 + b]);
    out[oo + i] = m;
}

/* gx[p, ih, iw] = the sum of gy[p, oh, ow] over the windows whose first
 * maximum (a NaN counts as the maximum) is at (ih, iw). */
__kernel void kiln_max_pool2d_grad(GF *gx, ulong gxo, GCF *gy, ulong go, GCF *x,
                                   ulong xo, int4 pool, int4 plane, ulong n)
{
    ulong i = get_global_id(0);
    if (i >= n)
        return;
    long H = plane.s0, W = plane.s1, OH = plane.s2, OW = plane.s3;
    long kh = pool.s0, kw = pool.s1, sh = pool.s2, sw = pool.s3;
    long iw = i % W, ih = (i / W) % H;
    ulong p = i / (W * H);
    GCF *xp = x + xo + p * H * W;
    long oh0 = ih - kh + 1 > 0 ? (ih - kh + 1 + sh - 1) / sh : 0;
    long ow0 = iw - kw + 1 > 0 ? (iw - kw + 1 + sw - 1) / sw : 0;
    kiln_sum s = sum_zero();
    for (long oh = oh0; oh <= ih / sh && oh < OH; oh++) {
        for (long ow = ow0; ow <= iw / sw && ow < OW; ow++) {
            long top = oh * sh, left = ow * sw;
            float best = xp[top * W + left];
            long at = top * W + left;
            for (long a = 0; a < kh; a++)
                for (long b = 0; b < kw; b++) {
                    long k = (top + a) * W + left + b;
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
