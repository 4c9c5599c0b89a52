/* elementwise.cl — unary ops, fill, RELU_GRAD, GELU and GELU_GRAD (the
 * binary ops, which divide indices, are in broadcast.cl). One work-item per
 * output element; the global size is rounded up to the work-group size, so
 * every kernel checks its bound. */

/* 1 / (1 + e^-x) without overflow: e^-|x| is at most 1. */
float sigmoid1(float x)
{
    if (x >= 0.0f)
        return 1.0f / (1.0f + exp(-x));
    float e = exp(x);
    return e / (1.0f + e);
}

/* out[i] = f(x[i]); p is SCALE's factor. */
#define KILN_UNARY(name, expr)                                                 \
__kernel void name(GF *out, ulong oo, GCF *in, ulong io, ulong n, float p)     \
{                                                                              \
    ulong i = get_global_id(0);                                                \
    if (i >= n)                                                                \
        return;                                                                \
    float x = in[io + i];                                                      \
    out[oo + i] = (expr);                                                      \
}

KILN_UNARY(kiln_neg, -x)
KILN_UNARY(kiln_exp, exp(x))
KILN_UNARY(kiln_log, log(x))
KILN_UNARY(kiln_sqrt, sqrt(x))
KILN_UNARY(kiln_relu, x < 0.0f ? 0.0f : x)   /* keeps NaN, as PyTorch */
KILN_UNARY(kiln_sigmoid, sigmoid1(x))
KILN_UNARY(kiln_tanh, tanh(x))
KILN_UNARY(kiln_scale, x * p)

__kernel void kiln_fill(GF *out, ulong oo, ulong n, float value)
{
    ulong i = get_global_id(0);
    if (i < n)
        out[oo + i] = value;
}

/* g where x > 0, else 0 (a NaN x gives 0). */
__kernel void kiln_relu_grad(GF *out, ulong oo, GCF *g, ulong go, GCF *x, ulong xo,
                             ulong n)
{
    ulong i = get_global_id(0);
    if (i < n)
        out[oo + i] = x[xo + i] > 0.0f ? g[go + i] : 0.0f;
}

/* GELU's tanh form as x * s, s = 0.5 (1 + tanh(u)) = sigmoid(2u), u =
 * sqrt(2/pi) (x + 0.044715 x^3), as the cpu backend computes it: with
 * e = exp(-|2u|) <= 1, s = 1 / (1 + e) or e / (1 + e) and s (1 - s) =
 * e / (1 + e)^2 (in *q), so nothing cancels and nothing overflows. */
float gelu_s(float x, float *q)
{
    float u2 = 2.0f * 0.7978845608028654f * x * (1.0f + 0.044715f * x * x);
    float e = exp(-fabs(u2));
    float r = 1.0f / (1.0f + e);
    *q = e * r * r;
    return u2 >= 0.0f ? r : e * r;
}

/* s is 0 only where x * s would be -inf * 0, or 0 anyway. */
__kernel void kiln_gelu(GF *out, ulong oo, GCF *x, ulong xo, ulong n)
{
    ulong i = get_global_id(0);
    if (i >= n)
        return;
    float q, v = x[xo + i], s = gelu_s(v, &q);
    out[oo + i] = s == 0.0f ? 0.0f : v * s;
}

/* g * (s + x * 2 sqrt(2/pi) (1 + 3 0.044715 x^2) s (1 - s)); the second term
 * is 0 where s (1 - s) is (x^3 may be infinite there). */
__kernel void kiln_gelu_grad(GF *out, ulong oo, GCF *g, ulong go, GCF *x, ulong xo,
                             ulong n)
{
    ulong i = get_global_id(0);
    if (i >= n)
        return;
    float q, v = x[xo + i], s = gelu_s(v, &q);
    float d = q == 0.0f ? s
                        : s + v * (2.0f * 0.7978845608028654f) *
                                  (1.0f + 3.0f * 0.044715f * v * v) * q;
    out[oo + i] = g[go + i] * d;
}
