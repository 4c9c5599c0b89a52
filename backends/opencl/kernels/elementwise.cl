/* elementwise.cl — binary ops with kiln's broadcasting, unary ops, fill,
 * RELU_GRAD and EXPAND. One work-item per output element; the global size is
 * rounded up to the work-group size, so every kernel checks its bound. */

/* out[i] = a[i % na] OP b[i % nb] (backend.h): the operand with n elements
 * is read directly, the smaller one repeats. */
#define KILN_BINARY(name, expr)                                                \
__kernel void name(GF *out, ulong oo, GCF *a, ulong ao, ulong na,              \
                   GCF *b, ulong bo, ulong nb, ulong n)                        \
{                                                                              \
    ulong i = get_global_id(0);                                                \
    if (i >= n)                                                                \
        return;                                                                \
    float x = a[ao + (na == n ? i : i % na)];                                  \
    float y = b[bo + (nb == n ? i : i % nb)];                                  \
    out[oo + i] = (expr);                                                      \
}

KILN_BINARY(kiln_add, x + y)
KILN_BINARY(kiln_sub, x - y)
KILN_BINARY(kiln_mul, x * y)
KILN_BINARY(kiln_div, x / y)

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

/* The output seen as [outer, r, inner] takes src [outer, inner], repeated
 * along r (EXPAND over one axis; over everything, r = n and inner = 1). */
__kernel void kiln_expand(GF *out, ulong oo, GCF *src, ulong so, ulong r,
                          ulong inner, ulong n)
{
    ulong i = get_global_id(0);
    if (i >= n)
        return;
    ulong o = i / (r * inner), j = i % inner;
    out[oo + i] = src[so + o * inner + j];
}
