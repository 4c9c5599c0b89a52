/* tests/test_half.c — f16 and bf16: the conversions against a reference built
 * here from the formats' definitions (every f16 and bf16 value decoded with
 * ldexp, rounding by nearest neighbour with ties to the even encoding), CAST
 * on every device, every op that takes a float type run in f16 and bf16
 * against the same op in f32 on the same rounded inputs, gradients through a
 * mixed-precision MLP, and the refusals.
 *
 * The f32 ops are checked against tests/reference.c by test_ops; an op in a
 * 16-bit type reads the same rounded inputs and computes in f32, so it must
 * equal the f32 op's result within the rounding of its output: one unit in
 * the last place of the format (2^-10 for f16, 2^-7 for bf16) relative, plus
 * a little of the result's scale for sums that cancel.
 */
#include "backends.h"
#include "expect.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- the reference conversions ---------------------------------------------- */

/* The value of an f16 or bf16 encoding, from the format's definition. */
static double ref_decode(uint16_t h, kiln_dtype dtype)
{
    int      man_bits = dtype == KILN_F16 ? 10 : 7;
    int      exp_bits = 15 - man_bits, bias = (1 << (exp_bits - 1)) - 1;
    int      e = (h >> man_bits) & ((1 << exp_bits) - 1);
    unsigned m = h & ((1u << man_bits) - 1);
    double   s = (h & 0x8000) ? -1.0 : 1.0;
    if (e == (1 << exp_bits) - 1)
        return m ? NAN : s * INFINITY;
    if (e == 0)
        return s * ldexp((double)m, 1 - bias - man_bits);
    return s * ldexp((double)((1u << man_bits) | m), e - bias - man_bits);
}

/* x rounded to the format: the nearer of the two encodings around |x| (the
 * largest finite one's upper neighbour is the next power of two, which
 * rounds to Inf), ties to the even encoding. */
static uint16_t ref_encode(float x, kiln_dtype dtype)
{
    uint16_t inf = dtype == KILN_F16 ? 0x7c00 : 0x7f80;
    if (isnan(x))
        return 0x7fff;               /* compared as "a NaN" */
    uint16_t sign = signbit(x) ? 0x8000 : 0;
    double   a    = fabs((double)x);
    unsigned lo = 0, hi = inf; /* decode(lo) <= a < decode(hi) */
    if (a >= ref_decode((uint16_t)(inf - 1), dtype)) {
        lo = inf - 1u;
    } else {
        while (hi - lo > 1) {
            unsigned mid = (lo + hi) / 2;
            if (ref_decode((uint16_t)mid, dtype) <= a)
                lo = mid;
            else
                hi = mid;
        }
    }
    if (isinf(x))
        return (uint16_t)(sign | inf);
    double vlo = ref_decode((uint16_t)lo, dtype);
    hi         = lo + 1;
    /* past the largest finite value: one more step of its spacing */
    double vhi = hi == inf ? 2.0 * ref_decode((uint16_t)(inf - 1), dtype) -
                                 ref_decode((uint16_t)(inf - 2), dtype)
                           : ref_decode((uint16_t)hi, dtype);
    if (a == vlo)
        return (uint16_t)(sign | lo);
    unsigned pick = a - vlo < vhi - a ? lo : a - vlo > vhi - a ? hi : (lo & 1 ? hi : lo);
    return (uint16_t)(sign | pick);
}

/* Values that probe the rounding: every encoding, the midpoints between
 * neighbours (ties) and a step either side, powers of two, specials. */
static size_t probe_values(float *out, size_t cap, kiln_dtype dtype)
{
    size_t   n   = 0;
    uint16_t inf = dtype == KILN_F16 ? 0x7c00 : 0x7f80;
    for (unsigned h = 0; h < inf && n + 8 < cap; h += dtype == KILN_F16 ? 7 : 3) {
        double v = ref_decode((uint16_t)h, dtype), w = ref_decode((uint16_t)(h + 1), dtype);
        float  mid = (float)((v + w) / 2);
        if (h + 1 == inf)
            mid = (float)(v + (v - ref_decode((uint16_t)(h - 1), dtype)) / 2);
        out[n++] = (float)v;
        out[n++] = -(float)v;
        out[n++] = mid;
        out[n++] = -mid;
        out[n++] = nextafterf(mid, 0.0f);
        out[n++] = nextafterf(mid, INFINITY);
    }
    const float special[] = {0.0f,     -0.0f,     INFINITY, -INFINITY, NAN,
                             -NAN,     1e-45f,    -1e-45f,  3e38f,     -3e38f,
                             65504.0f, 65519.99f, 65520.0f, 1e5f,      5.96e-8f,
                             2.98e-8f, 2.99e-8f,  1.0f / 3, 6.1e-5f};
    for (size_t i = 0; i < sizeof special / sizeof special[0] && n < cap; i++)
        out[n++] = special[i];
    return n;
}

static bool same_bits(uint16_t got, uint16_t want, kiln_dtype dtype)
{
    if (want == 0x7fff) /* any NaN */
        return isnan(ref_decode(got, dtype));
    return got == want;
}

Test(convert, every_f16_and_bf16_value_widens_exactly)
{
    kiln_dtype types[] = {KILN_F16, KILN_BF16};
    for (int t = 0; t < 2; t++) {
        static uint16_t h[65536];
        static float    f[65536];
        for (unsigned i = 0; i < 65536; i++)
            h[i] = (uint16_t)i;
        expect_ok(kiln_convert(f, KILN_F32, h, types[t], 65536), "widen");
        for (unsigned i = 0; i < 65536; i++) {
            double want = ref_decode((uint16_t)i, types[t]);
            cr_assert(isnan(want) ? isnan(f[i]) : (double)f[i] == want &&
                                                      !signbit(f[i]) == !signbit(want),
                      "%s 0x%04x widened to %a, expected %a", kiln_dtype_name(types[t]),
                      i, (double)f[i], want);
        }
    }
}

Test(convert, f32_rounds_to_nearest_even_with_specials_kept)
{
    kiln_dtype types[] = {KILN_F16, KILN_BF16};
    for (int t = 0; t < 2; t++) {
        size_t    cap = 120000;
        float    *x   = malloc(cap * sizeof *x);
        uint16_t *h   = malloc(cap * sizeof *h);
        cr_assert(x && h);
        size_t n = probe_values(x, cap, types[t]);
        expect_ok(kiln_convert(h, types[t], x, KILN_F32, n), "narrow");
        for (size_t i = 0; i < n; i++) {
            uint16_t want = ref_encode(x[i], types[t]);
            cr_assert(same_bits(h[i], want, types[t]),
                      "%s(%a) = 0x%04x, expected 0x%04x", kiln_dtype_name(types[t]),
                      (double)x[i], h[i], want);
        }
        /* narrowing in place, as the API allows, gives the same bits */
        expect_ok(kiln_convert(x, types[t], x, KILN_F32, n), "narrow in place");
        cr_assert_eq(memcmp(x, h, n * 2), 0, "%s in place differs",
                     kiln_dtype_name(types[t]));
        free(x);
        free(h);
    }
}

Test(convert, refuses_i32_and_unknown_types_naming_them)
{
    float    x = 1.0f;
    uint16_t h;
    expect_error(kiln_convert(&h, KILN_F16, &x, KILN_I32, 1), KILN_ERR_INVALID_ARG, "i32",
                 "KILN_F16");
    expect_error(kiln_convert(&h, (kiln_dtype)9, &x, KILN_F32, 1), KILN_ERR_INVALID_ARG,
                 "(9)", NULL);
    cr_assert_eq(kiln_dtype_size(KILN_BF16), 2);
    cr_assert_eq(kiln_dtype_size(KILN_F32), 4);
    cr_assert_str_eq(kiln_dtype_name(KILN_F16), "f16");
}

/* ---- CAST on every device ------------------------------------------------------ */

/* Runs cast(x) from `from` to `to` on the device and checks every element
 * against the reference. x holds f32 values, representable in `from`. */
static void check_cast(kiln_context *ctx, const char *label, const float *x, size_t n,
                       kiln_dtype from, kiln_dtype to)
{
    kiln_graph  *g  = kiln_graph_new(ctx);
    kiln_tensor *in = kiln_input(g, "x", from, KILN_SHAPE((int64_t)n));
    kiln_tensor *y  = kiln_cast(g, in, to);
    kiln_output(g, y);
    expect_ok(kiln_graph_compile(g), "compile");
    void *src = malloc(n * 4), *dst = malloc(n * 4);
    cr_assert(src && dst);
    expect_ok(kiln_convert(src, from, x, KILN_F32, n), "convert");
    expect_ok(kiln_tensor_write(in, src, n * kiln_dtype_size(from)), "write");
    expect_ok(kiln_graph_run(g), "run");
    expect_ok(kiln_tensor_read(y, dst, n * kiln_dtype_size(to)), "read");
    for (size_t i = 0; i < n; i++) {
        if (to == KILN_F32) {
            float got = ((float *)dst)[i];
            cr_assert(isnan(x[i]) ? isnan(got) : got == x[i] && !signbit(got) == !signbit(x[i]),
                      "%s: cast %s->f32 of %a gave %a", label, kiln_dtype_name(from),
                      (double)x[i], (double)got);
        } else {
            uint16_t got = ((uint16_t *)dst)[i], want = ref_encode(x[i], to);
            cr_assert(same_bits(got, want, to), "%s: cast %s->%s of %a gave 0x%04x, "
                      "expected 0x%04x", label, kiln_dtype_name(from), kiln_dtype_name(to),
                      (double)x[i], got, want);
        }
    }
    free(src);
    free(dst);
    kiln_graph_free(g);
}

BACKEND_TEST(cast, rounds_to_nearest_even_on_the_device)
{
    kiln_context *ctx = test_backend_context(backend);
    size_t        cap = 40000;
    float        *x   = malloc(cap * sizeof *x);
    float        *r   = malloc(cap * sizeof *r);
    cr_assert(x && r);
    kiln_dtype half[] = {KILN_F16, KILN_BF16};
    for (int t = 0; t < 2; t++) {
        size_t n = probe_values(x, cap, half[t]);
        check_cast(ctx, backend->label, x, n, KILN_F32, half[t]);
        /* widening, and to the other 16-bit type: from values of this one */
        expect_ok(kiln_convert(r, half[t], x, KILN_F32, n), "round");
        uint16_t *bits = (uint16_t *)r;
        float    *v    = malloc(n * sizeof *v);
        cr_assert(v);
        for (size_t i = 0; i < n; i++)
            v[i] = (float)ref_decode(bits[i], half[t]);
        check_cast(ctx, backend->label, v, n, half[t], KILN_F32);
        check_cast(ctx, backend->label, v, n, half[t], half[1 - t]);
        free(v);
    }
    free(x);
    free(r);
    kiln_context_free(ctx);
}

/* ---- every float op in f16 and bf16 ------------------------------------------------ */

#define MAX_IN 3

typedef enum fill { ANY, POSITIVE, NONZERO, LABELS } fill;

typedef struct op_case {
    const char *name;
    int         n_in;
    int         ndim[MAX_IN];
    int64_t     dims[MAX_IN][4];
    fill        fill[MAX_IN];
    int32_t     classes; /* LABELS: in [0, classes) */
    kiln_tensor *(*build)(kiln_graph *g, kiln_tensor **in);
} op_case;

static kiln_tensor *b_add(kiln_graph *g, kiln_tensor **in) { return kiln_add(g, in[0], in[1]); }
static kiln_tensor *b_sub(kiln_graph *g, kiln_tensor **in) { return kiln_sub(g, in[0], in[1]); }
static kiln_tensor *b_mul(kiln_graph *g, kiln_tensor **in) { return kiln_mul(g, in[0], in[1]); }
static kiln_tensor *b_div(kiln_graph *g, kiln_tensor **in) { return kiln_div(g, in[0], in[1]); }
static kiln_tensor *b_neg(kiln_graph *g, kiln_tensor **in) { return kiln_neg(g, in[0]); }
static kiln_tensor *b_exp(kiln_graph *g, kiln_tensor **in) { return kiln_exp(g, in[0]); }
static kiln_tensor *b_log(kiln_graph *g, kiln_tensor **in) { return kiln_log(g, in[0]); }
static kiln_tensor *b_sqrt(kiln_graph *g, kiln_tensor **in) { return kiln_sqrt(g, in[0]); }
static kiln_tensor *b_relu(kiln_graph *g, kiln_tensor **in) { return kiln_relu(g, in[0]); }
static kiln_tensor *b_sigmoid(kiln_graph *g, kiln_tensor **in) { return kiln_sigmoid(g, in[0]); }
static kiln_tensor *b_tanh(kiln_graph *g, kiln_tensor **in) { return kiln_tanh(g, in[0]); }
static kiln_tensor *b_gelu(kiln_graph *g, kiln_tensor **in) { return kiln_gelu(g, in[0]); }
static kiln_tensor *b_scale(kiln_graph *g, kiln_tensor **in) { return kiln_scale(g, in[0], -1.5f); }
static kiln_tensor *b_matmul(kiln_graph *g, kiln_tensor **in) { return kiln_matmul(g, in[0], in[1]); }
static kiln_tensor *b_matmul_tt(kiln_graph *g, kiln_tensor **in)
{
    return kiln_matmul_t(g, in[0], in[1], true, true);
}
static kiln_tensor *b_sum(kiln_graph *g, kiln_tensor **in) { return kiln_sum(g, in[0]); }
static kiln_tensor *b_mean_axis(kiln_graph *g, kiln_tensor **in)
{
    return kiln_mean_axis(g, in[0], 0, false);
}
static kiln_tensor *b_max(kiln_graph *g, kiln_tensor **in) { return kiln_max(g, in[0]); }
static kiln_tensor *b_softmax(kiln_graph *g, kiln_tensor **in) { return kiln_softmax(g, in[0]); }
static kiln_tensor *b_log_softmax(kiln_graph *g, kiln_tensor **in)
{
    return kiln_log_softmax(g, in[0]);
}
static kiln_tensor *b_transpose(kiln_graph *g, kiln_tensor **in) { return kiln_transpose(g, in[0]); }
static kiln_tensor *b_permute(kiln_graph *g, kiln_tensor **in)
{
    const int perm[] = {2, 0, 1};
    return kiln_permute(g, in[0], perm);
}
static kiln_tensor *b_slice(kiln_graph *g, kiln_tensor **in) { return kiln_slice(g, in[0], 1, 2, 3); }
static kiln_tensor *b_conv(kiln_graph *g, kiln_tensor **in)
{
    return kiln_conv2d(g, in[0], in[1], in[2], 1, 1);
}
static kiln_tensor *b_pool(kiln_graph *g, kiln_tensor **in) { return kiln_max_pool2d(g, in[0], 2, 2); }
static kiln_tensor *b_mse(kiln_graph *g, kiln_tensor **in) { return kiln_mse_loss(g, in[0], in[1]); }
static kiln_tensor *b_ce(kiln_graph *g, kiln_tensor **in) { return kiln_cross_entropy(g, in[0], in[1]); }
static kiln_tensor *b_layer_norm(kiln_graph *g, kiln_tensor **in)
{
    return kiln_layer_norm(g, in[0], in[1], in[2], 1e-5f);
}
static kiln_tensor *b_embedding(kiln_graph *g, kiln_tensor **in) { return kiln_embedding(g, in[0], in[1]); }
static kiln_tensor *b_causal_softmax(kiln_graph *g, kiln_tensor **in)
{
    return kiln_causal_softmax(g, in[0], 0.5f);
}
static kiln_tensor *b_attention(kiln_graph *g, kiln_tensor **in)
{
    return kiln_causal_attention(g, in[0], 2, 0.35f);
}

/* clang-format off */
static const op_case cases[] = {
    {"add",     2, {2, 1}, {{5, 33}, {33}},   {ANY, ANY},      0, b_add},
    {"sub",     2, {2, 2}, {{5, 33}, {5, 33}}, {ANY, ANY},     0, b_sub},
    {"mul",     2, {2, 0}, {{5, 33}, {0}},    {ANY, ANY},      0, b_mul},
    {"div",     2, {2, 2}, {{5, 33}, {5, 33}}, {ANY, NONZERO}, 0, b_div},
    /* many chunks of the cpu's elementwise path (on both threads), a bias
     * repeating in each */
    {"add, chunks", 2, {2, 1}, {{2100, 33}, {33}}, {ANY, ANY}, 0, b_add},
    {"relu, chunks", 1, {2}, {{300, 33}}, {ANY}, 0, b_relu},
    /* a bias wider than half a chunk, and wider than a chunk: cut where it
     * repeats */
    {"add, wide bias", 2, {2, 1}, {{5, 1500}, {1500}}, {ANY, ANY}, 0, b_add},
    {"mul, wider bias", 2, {1, 2}, {{5000}, {3, 5000}}, {ANY, ANY}, 0, b_mul},
    {"neg",     1, {2}, {{7, 9}}, {ANY}, 0, b_neg},
    {"exp",     1, {2}, {{7, 9}}, {ANY}, 0, b_exp},
    {"log",     1, {2}, {{7, 9}}, {POSITIVE}, 0, b_log},
    {"sqrt",    1, {2}, {{7, 9}}, {POSITIVE}, 0, b_sqrt},
    {"relu",    1, {2}, {{7, 9}}, {ANY}, 0, b_relu},
    {"sigmoid", 1, {2}, {{7, 9}}, {ANY}, 0, b_sigmoid},
    {"tanh",    1, {2}, {{7, 9}}, {ANY}, 0, b_tanh},
    {"gelu",    1, {2}, {{7, 9}}, {ANY}, 0, b_gelu},
    {"scale",   1, {2}, {{7, 9}}, {ANY}, 0, b_scale},
    {"matmul",  2, {2, 2}, {{37, 70}, {70, 19}}, {ANY, ANY}, 0, b_matmul},
    {"matmul batched", 2, {3, 3}, {{3, 9, 40}, {3, 40, 17}}, {ANY, ANY}, 0, b_matmul},
    {"matmul tt", 2, {2, 2}, {{70, 37}, {19, 70}}, {ANY, ANY}, 0, b_matmul_tt},
    {"matmul large", 2, {2, 2}, {{130, 300}, {300, 140}}, {ANY, ANY}, 0, b_matmul},
    /* narrow products: the cpu widens them whole for its gemv and small_n */
    {"matmul N=10", 2, {2, 2}, {{37, 70}, {70, 10}}, {ANY, ANY}, 0, b_matmul},
    {"matmul M=1", 2, {2, 2}, {{1, 70}, {70, 40}}, {ANY, ANY}, 0, b_matmul},
    {"sum",     1, {2}, {{31, 17}}, {POSITIVE}, 0, b_sum},
    {"mean axis", 1, {2}, {{31, 17}}, {ANY}, 0, b_mean_axis},
    {"max",     1, {2}, {{31, 17}}, {ANY}, 0, b_max},
    {"softmax", 1, {2}, {{6, 21}}, {ANY}, 0, b_softmax},
    {"log_softmax", 1, {2}, {{6, 21}}, {ANY}, 0, b_log_softmax},
    {"transpose", 1, {2}, {{6, 21}}, {ANY}, 0, b_transpose},
    {"permute", 1, {3}, {{3, 4, 5}}, {ANY}, 0, b_permute},
    {"slice",   1, {3}, {{3, 6, 5}}, {ANY}, 0, b_slice},
    {"conv2d",  3, {4, 4, 1}, {{2, 3, 8, 7}, {4, 3, 3, 3}, {4}}, {ANY, ANY, ANY}, 0, b_conv},
    {"max_pool2d", 1, {4}, {{2, 3, 8, 6}}, {ANY}, 0, b_pool},
    {"mse_loss", 2, {2, 2}, {{9, 5}, {9, 5}}, {ANY, ANY}, 0, b_mse},
    {"cross_entropy", 2, {2, 1}, {{9, 10}, {9}}, {ANY, LABELS}, 10, b_ce},
    {"layer_norm", 3, {2, 1, 1}, {{5, 24}, {24}, {24}}, {ANY, ANY, ANY}, 0, b_layer_norm},
    {"embedding", 2, {2, 2}, {{11, 6}, {3, 4}}, {ANY, LABELS}, 11, b_embedding},
    {"causal_softmax", 1, {3}, {{2, 7, 7}}, {ANY}, 0, b_causal_softmax},
    {"causal_attention", 1, {3}, {{2, 5, 24}}, {ANY}, 0, b_attention},
};
/* clang-format on */

static float fill_value(fill f, uint64_t *state, int32_t classes)
{
    *state    = *state * 6364136223846793005ull + 1442695040888963407ull;
    double u  = (double)(*state >> 11) / 9007199254740992.0; /* [0, 1) */
    switch (f) {
    case POSITIVE: return (float)(0.1 + 1.9 * u);
    case NONZERO: return (float)((u < 0.5 ? -1 : 1) * (0.5 + 3.0 * fabs(u - 0.5)));
    case LABELS: return (float)(int32_t)(u * classes);
    default: return (float)(4.0 * u - 2.0);
    }
}

/* Builds c in `dtype` (its float inputs of that type, its labels i32), runs
 * it on x (values exact in every type), and returns the output as f32. */
static float *run_case(kiln_context *ctx, const op_case *c, kiln_dtype dtype,
                       float *const *x, const size_t *n, size_t *n_out)
{
    kiln_graph  *g = kiln_graph_new(ctx);
    kiln_tensor *in[MAX_IN];
    for (int i = 0; i < c->n_in; i++)
        in[i] = kiln_input(g, NULL, c->fill[i] == LABELS ? KILN_I32 : dtype, c->ndim[i],
                           c->dims[i]);
    kiln_tensor *y = c->build(g, in);
    kiln_output(g, y);
    cr_assert_eq(kiln_graph_compile(g), KILN_OK, "%s in %s: %s", c->name,
                 kiln_dtype_name(dtype), graph_error(g));
    for (int i = 0; i < c->n_in; i++) {
        void *buf = malloc(n[i] * 4 + 4);
        cr_assert(buf);
        if (c->fill[i] == LABELS)
            for (size_t j = 0; j < n[i]; j++)
                ((int32_t *)buf)[j] = (int32_t)x[i][j];
        else
            expect_ok(kiln_convert(buf, dtype, x[i], KILN_F32, n[i]), "convert");
        size_t size = n[i] * (c->fill[i] == LABELS ? 4 : kiln_dtype_size(dtype));
        expect_ok(kiln_tensor_write(in[i], buf, size), "write");
        free(buf);
    }
    expect_ok(kiln_graph_run(g), c->name);
    kiln_dtype out_type = kiln_tensor_dtype(y);
    *n_out              = (size_t)kiln_tensor_numel(y);
    void  *raw          = malloc(*n_out * 4 + 4);
    float *out          = malloc(*n_out * 4 + 4);
    cr_assert(raw && out);
    expect_ok(kiln_tensor_read(y, raw, kiln_tensor_nbytes(y)), "read");
    cr_assert_eq(out_type, dtype, "%s in %s: the output is %s", c->name,
                 kiln_dtype_name(dtype), kiln_dtype_name(out_type));
    expect_ok(kiln_convert(out, KILN_F32, raw, out_type, *n_out), "widen");
    free(raw);
    kiln_graph_free(g);
    return out;
}

BACKEND_TEST(half_ops, every_float_op_in_f16_and_bf16_matches_f32)
{
    kiln_context *ctx = test_backend_context(backend);
    kiln_dtype    half[] = {KILN_F16, KILN_BF16};
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        const op_case *c = &cases[k];
        for (int t = 0; t < 2; t++) {
            /* inputs exact in the 16-bit type, so f32 reads the same values */
            float   *x[MAX_IN];
            size_t   n[MAX_IN];
            uint64_t state = 0x9e3779b97f4a7c15ull + k;
            for (int i = 0; i < c->n_in; i++) {
                n[i] = 1;
                for (int d = 0; d < c->ndim[i]; d++)
                    n[i] *= (size_t)c->dims[i][d];
                x[i] = malloc(n[i] * sizeof(float) + 4);
                uint16_t *h = malloc(n[i] * 2 + 2);
                cr_assert(x[i] && h);
                for (size_t j = 0; j < n[i]; j++)
                    x[i][j] = fill_value(c->fill[i], &state, c->classes);
                if (c->fill[i] != LABELS) {
                    expect_ok(kiln_convert(h, half[t], x[i], KILN_F32, n[i]), "round");
                    expect_ok(kiln_convert(x[i], KILN_F32, h, half[t], n[i]), "widen");
                }
                free(h);
            }
            size_t n_ref, n_got;
            float *ref = run_case(ctx, c, KILN_F32, x, n, &n_ref);
            float *got = run_case(ctx, c, half[t], x, n, &n_got);
            cr_assert_eq(n_ref, n_got);
            double scale = 0;
            for (size_t j = 0; j < n_ref; j++)
                scale = fmax(scale, fabs(ref[j]));
            double ulp = half[t] == KILN_F16 ? 0x1p-10 : 0x1p-7;
            for (size_t j = 0; j < n_ref; j++) {
                double tol = ulp * fabs(ref[j]) + 1e-5 * scale + 1e-6;
                cr_assert(fabs((double)got[j] - ref[j]) <= tol,
                          "%s: %s in %s, element %zu: %.8g, f32 gives %.8g (tolerance "
                          "%.3g)",
                          backend->label, c->name, kiln_dtype_name(half[t]), j,
                          (double)got[j], (double)ref[j], tol);
            }
            free(ref);
            free(got);
            for (int i = 0; i < c->n_in; i++)
                free(x[i]);
        }
    }
    kiln_context_free(ctx);
}

/* ---- gradients: a mixed-precision MLP ------------------------------------------------ */

/* Loss and gradients of a 2-layer MLP whose dense layers run in `dtype`
 * (f32 parameters cast in, kiln_dense does it) and whose loss is f32. */
static void mlp_grads(kiln_context *ctx, kiln_dtype dtype, const float *x,
                      const int32_t *labels, float *grads, size_t cap, float *loss_out)
{
    kiln_graph *g = kiln_graph_new(ctx);
    kiln_graph_seed(g, 7);
    kiln_tensor *in  = kiln_input(g, "x", KILN_F32, KILN_SHAPE(16, 20));
    kiln_tensor *lab = kiln_input(g, "y", KILN_I32, KILN_SHAPE(16));
    kiln_tensor *h   = kiln_relu(g, kiln_dense(g, kiln_cast(g, in, dtype), 32, "fc1"));
    kiln_tensor *out = kiln_dense(g, h, 10, "fc2");
    kiln_tensor *loss = kiln_cross_entropy(g, kiln_cast(g, out, KILN_F32), lab);
    expect_ok(kiln_backward(g, loss), "backward");
    kiln_output(g, loss);
    cr_assert_eq(kiln_graph_compile(g), KILN_OK, "%s", graph_error(g));
    expect_ok(kiln_tensor_write(in, x, 16 * 20 * 4), "x");
    expect_ok(kiln_tensor_write(lab, labels, 16 * 4), "labels");
    expect_ok(kiln_graph_run(g), "run");
    expect_ok(kiln_tensor_read(loss, loss_out, 4), "loss");
    size_t at = 0;
    for (size_t p = 0; p < kiln_graph_param_count(g); p++) {
        kiln_tensor *gp = kiln_grad(g, kiln_graph_param(g, p));
        cr_assert_eq(kiln_tensor_dtype(gp), KILN_F32, "a parameter's gradient is f32");
        size_t m = (size_t)kiln_tensor_numel(gp);
        cr_assert(at + m <= cap);
        expect_ok(kiln_tensor_read(gp, grads + at, m * 4), "grad");
        at += m;
    }
    kiln_graph_free(g);
}

BACKEND_TEST(half_grads, a_mixed_precision_mlp_matches_f32_gradients)
{
    kiln_context *ctx = test_backend_context(backend);
    float         x[16 * 20];
    int32_t       labels[16];
    uint64_t      state = 12345;
    for (size_t i = 0; i < 16 * 20; i++)
        x[i] = fill_value(ANY, &state, 0);
    for (size_t i = 0; i < 16; i++)
        labels[i] = (int32_t)fill_value(LABELS, &state, 10);
    size_t cap = 20 * 32 + 32 + 32 * 10 + 10;
    float *ref = malloc(cap * 4), *got = malloc(cap * 4), loss_ref, loss_got;
    cr_assert(ref && got);
    mlp_grads(ctx, KILN_F32, x, labels, ref, cap, &loss_ref);
    kiln_dtype half[] = {KILN_F16, KILN_BF16};
    for (int t = 0; t < 2; t++) {
        mlp_grads(ctx, half[t], x, labels, got, cap, &loss_got);
        double eps = half[t] == KILN_F16 ? 0x1p-11 : 0x1p-8;
        double num = 0, den = 0;
        for (size_t i = 0; i < cap; i++) {
            num += ((double)got[i] - ref[i]) * ((double)got[i] - ref[i]);
            den += (double)ref[i] * ref[i];
        }
        /* a few roundings per layer, each at most eps relative */
        cr_assert(sqrt(num / den) < 16 * eps,
                  "%s: %s gradients differ from f32's by %.3g (relative norm), more "
                  "than 16 eps = %.3g",
                  backend->label, kiln_dtype_name(half[t]), sqrt(num / den), 16 * eps);
        cr_assert(fabs(loss_got - loss_ref) < 16 * eps * fabs(loss_ref), "%s: loss %g vs %g",
                  kiln_dtype_name(half[t]), (double)loss_got, (double)loss_ref);
    }
    free(ref);
    free(got);
    kiln_context_free(ctx);
}

/* ---- refusals ------------------------------------------------------------------------ */

Test(half_refusals, mixed_float_types_and_half_optimiser_state_are_named)
{
    kiln_context *ctx = test_context(test_first_spec());
    kiln_graph   *g   = kiln_graph_new(ctx);
    kiln_tensor  *a   = kiln_input(g, "a", KILN_F16, KILN_SHAPE(2, 3));
    kiln_tensor  *b   = kiln_input(g, "b", KILN_F32, KILN_SHAPE(2, 3));
    kiln_add(g, a, b);
    expect_graph_error(g, "add", "f32, expected f16", "kiln_cast");
    kiln_graph_free(g);

    g = kiln_graph_new(ctx);
    a = kiln_input(g, "a", KILN_BF16, KILN_SHAPE(2, 3));
    kiln_cast(g, a, KILN_I32);
    expect_graph_error(g, "cast", "i32", "KILN_BF16");
    kiln_graph_free(g);

    g = kiln_graph_new(ctx);
    kiln_input(g, "a", (kiln_dtype)7, KILN_SHAPE(2));
    expect_graph_error(g, "dtype 7", "KILN_BF16", NULL);
    kiln_graph_free(g);
    kiln_context_free(ctx);
}

/* ---- loss scaling --------------------------------------------------------------------- */

/* loss = sum(cast(cast(w, f16) * x, f32)) * k over f16 x: dloss/dw = x * k,
 * computed in f16 through the cast's gradient. */
typedef struct scaled {
    kiln_graph  *g;
    kiln_tensor *w, *x;
} scaled;

static scaled scaled_model(kiln_context *ctx, float k, float init, int interval, float lr)
{
    scaled s = {kiln_graph_new(ctx), NULL, NULL};
    s.w      = kiln_param(s.g, "w", KILN_SHAPE(4));
    s.x      = kiln_input(s.g, "x", KILN_F16, KILN_SHAPE(4));
    kiln_tensor *y    = kiln_mul(s.g, kiln_cast(s.g, s.w, KILN_F16), s.x);
    kiln_tensor *loss = kiln_scale(s.g, kiln_sum(s.g, kiln_cast(s.g, y, KILN_F32)), k);
    if (init > 0)
        expect_ok(kiln_loss_scale(s.g, init, interval), "kiln_loss_scale");
    expect_ok(kiln_backward(s.g, loss), "backward");
    cr_assert_not_null(kiln_sgd(s.g, lr, 0.0f, 0.0f), "%s", kiln_last_error());
    cr_assert_eq(kiln_graph_compile(s.g), KILN_OK, "%s", graph_error(s.g));
    const float w[4] = {1, 2, 3, 4}, x[4] = {0.5f, -0.25f, 1.0f, 2.0f};
    uint16_t    xh[4];
    expect_ok(kiln_convert(xh, KILN_F16, x, KILN_F32, 4), "x");
    expect_ok(kiln_tensor_write(s.w, w, sizeof w), "w");
    expect_ok(kiln_tensor_write(s.x, xh, sizeof xh), "x");
    return s;
}

BACKEND_TEST(loss_scale, keeps_f16_gradients_that_would_vanish)
{
    kiln_context *ctx = test_backend_context(backend);
    /* dloss/dw = x * 1e-8: 0 in f16 (below 2^-24) unless scaled */
    const float k = 1e-8f, lr = 1e6f, x[4] = {0.5f, -0.25f, 1.0f, 2.0f};
    for (int scaled_run = 0; scaled_run < 2; scaled_run++) {
        scaled s = scaled_model(ctx, k, scaled_run ? 8192.0f : 0.0f, 2000, lr);
        expect_ok(kiln_graph_run(s.g), "run");
        float w[4];
        expect_ok(kiln_tensor_read(s.w, w, sizeof w), "w");
        for (int i = 0; i < 4; i++) {
            double want = scaled_run ? (i + 1) - (double)lr * k * x[i] : i + 1;
            /* the f16 gradient x * k * 8192 carries f16's rounding */
            cr_assert(fabs(w[i] - want) <= 1e-3 * fabs(want - (i + 1)) + 1e-6,
                      "%s: %s: w[%d] = %.7g, expected %.7g", backend->label,
                      scaled_run ? "scaled" : "unscaled", i, (double)w[i], want);
        }
        kiln_graph_free(s.g);
    }
    kiln_context_free(ctx);
}

BACKEND_TEST(loss_scale, an_overflow_skips_the_step_and_halves_the_scale)
{
    kiln_context *ctx = test_backend_context(backend);
    /* dloss/dw = x * scale in f16, x up to 2: every scale from 2^15 up
     * overflows (2 * 2^15 is past 65504), 2^14 does not. interval 2: after
     * two good runs the scale doubles, and overflows again */
    scaled s = scaled_model(ctx, 1.0f, 0x1p17f, 2, 0.5f);
    float  scale, w[4];
    uint64_t skipped;
    const float    expect_scale[]   = {0x1p16f, 0x1p15f, 0x1p14f, 0x1p14f, 0x1p15f, 0x1p14f};
    const uint64_t expect_skipped[] = {1, 2, 3, 3, 3, 4};
    int            good             = 0;
    for (int r = 0; r < 6; r++) {
        expect_ok(kiln_graph_run(s.g), "run");
        expect_ok(kiln_loss_scale_state(s.g, &scale, &skipped), "state");
        cr_assert_eq(scale, expect_scale[r], "%s: run %d: scale %g, expected %g",
                     backend->label, r, (double)scale, (double)expect_scale[r]);
        cr_assert_eq(skipped, expect_skipped[r], "%s: run %d: %llu skipped, expected %llu",
                     backend->label, r, (unsigned long long)skipped,
                     (unsigned long long)expect_skipped[r]);
        good += r == 3 || r == 4; /* the runs at 2^14, which did not overflow */
        expect_ok(kiln_tensor_read(s.w, w, sizeof w), "w");
        const float x[4] = {0.5f, -0.25f, 1.0f, 2.0f};
        for (int i = 0; i < 4; i++)
            cr_assert_float_eq(w[i], (i + 1) - good * 0.5f * x[i], 1e-5,
                               "%s: run %d: w[%d] = %g after %d good steps",
                               backend->label, r, i, (double)w[i], good);
    }
    kiln_graph_free(s.g);
    kiln_context_free(ctx);
}

Test(loss_scale, refuses_bad_arguments_and_a_late_call)
{
    kiln_context *ctx = test_context(test_first_spec());
    kiln_graph   *g   = kiln_graph_new(ctx);
    expect_error(kiln_loss_scale(g, 0.0f, 10), KILN_ERR_INVALID_ARG, "init 0", "2^24");
    expect_error(kiln_loss_scale(g, 1024.0f, 0), KILN_ERR_INVALID_ARG, "interval 0", NULL);
    expect_error(kiln_loss_scale_state(g, NULL, NULL), KILN_ERR_STATE, "no loss scaling",
                 NULL);
    kiln_tensor *w = kiln_param(g, "w", KILN_SHAPE(2));
    expect_ok(kiln_backward(g, kiln_sum(g, w)), "backward");
    expect_error(kiln_loss_scale(g, 1024.0f, 10), KILN_ERR_STATE, "before kiln_backward",
                 NULL);
    kiln_graph_free(g);
    kiln_context_free(ctx);
}

/* ---- weights saved in 16 bits ------------------------------------------------------- */

Test(save_as, f16_and_bf16_files_hold_the_rounded_weights_and_load_back)
{
    kiln_context *ctx = test_context(test_first_spec());
    kiln_dtype    half[] = {KILN_F16, KILN_BF16};
    const char   *names[] = {"F16", "BF16"};
    float         w[37];
    uint64_t      state = 99;
    for (int i = 0; i < 37; i++)
        w[i] = fill_value(ANY, &state, 0) * 1000.0f;
    for (int t = 0; t < 2; t++) {
        char path[] = "/tmp/kiln-half-XXXXXX";
        int  fd     = mkstemp(path);
        cr_assert(fd >= 0);
        close(fd);
        kiln_graph  *g = kiln_graph_new(ctx);
        kiln_tensor *p = kiln_param(g, "layer.weight", KILN_SHAPE(37));
        kiln_output(g, p);
        expect_ok(kiln_graph_compile(g), "compile");
        expect_ok(kiln_tensor_write(p, w, sizeof w), "write");
        expect_ok(kiln_save_as(g, path, half[t]), "kiln_save_as");
        /* the header says the type, and the data is 2 bytes per value */
        FILE *f = fopen(path, "rb");
        cr_assert(f);
        unsigned char len[8];
        cr_assert_eq(fread(len, 1, 8, f), 8);
        uint64_t hl = 0;
        for (int i = 7; i >= 0; i--)
            hl = hl << 8 | len[i];
        char *h = calloc(1, hl + 1);
        cr_assert(h && fread(h, 1, hl, f) == hl);
        char want[64];
        snprintf(want, sizeof want, "\"dtype\":\"%s\"", names[t]);
        cr_assert(strstr(h, want), "header %s lacks %s", h, want);
        cr_assert(strstr(h, "\"data_offsets\":[0,74]"), "header %s", h);
        uint16_t bits[37];
        cr_assert_eq(fread(bits, 2, 37, f), 37); /* little-endian, as this host */
        fclose(f);
        free(h);
        for (int i = 0; i < 37; i++)
            cr_assert(same_bits(bits[i], ref_encode(w[i], half[t]), half[t]),
                      "%s: value %d", names[t], i);
        /* loading widens into the f32 parameter */
        kiln_graph  *g2 = kiln_graph_new(ctx);
        kiln_tensor *p2 = kiln_param(g2, "layer.weight", KILN_SHAPE(37));
        kiln_output(g2, p2);
        expect_ok(kiln_graph_compile(g2), "compile");
        expect_ok(kiln_load(g2, path), "kiln_load");
        float back[37];
        expect_ok(kiln_tensor_read(p2, back, sizeof back), "read");
        for (int i = 0; i < 37; i++)
            cr_assert_eq(back[i], (float)ref_decode(bits[i], half[t]), "%s: value %d",
                         names[t], i);
        expect_error(kiln_save_as(g, path, KILN_I32), KILN_ERR_INVALID_ARG, "i32",
                     "KILN_BF16");
        kiln_graph_free(g);
        kiln_graph_free(g2);
        unlink(path);
    }
    kiln_context_free(ctx);
}

Test(loss_scale, a_checkpoint_keeps_the_scale)
{
    kiln_context *ctx = test_context(test_first_spec());
    scaled        s   = scaled_model(ctx, 1.0f, 0x1p17f, 2, 0.5f);
    for (int r = 0; r < 4; r++) /* three overflows, then one good run */
        expect_ok(kiln_graph_run(s.g), "run");
    char path[] = "/tmp/kiln-scale-XXXXXX";
    int  fd     = mkstemp(path);
    cr_assert(fd >= 0);
    close(fd);
    expect_ok(kiln_checkpoint_save(s.g, path), "kiln_checkpoint_save");
    scaled   t = scaled_model(ctx, 1.0f, 65536.0f, 2, 0.5f);
    float    scale;
    uint64_t skipped;
    expect_ok(kiln_checkpoint_load(t.g, path), "kiln_checkpoint_load");
    expect_ok(kiln_loss_scale_state(t.g, &scale, &skipped), "state");
    cr_assert_eq(scale, 0x1p14f, "scale %g after loading", (double)scale);
    cr_assert_eq(skipped, 3);
    /* one good run recorded: the next doubles it, as in the saved run */
    expect_ok(kiln_graph_run(t.g), "run");
    expect_ok(kiln_loss_scale_state(t.g, &scale, &skipped), "state");
    cr_assert_eq(scale, 0x1p15f, "scale %g after a good run", (double)scale);
    unlink(path);
    kiln_graph_free(s.g);
    kiln_graph_free(t.g);
    kiln_context_free(ctx);
}

BACKEND_TEST(loss_scale, the_clipped_norm_is_of_the_true_gradients)
{
    kiln_context *ctx = test_backend_context(backend);
    kiln_graph   *g   = kiln_graph_new(ctx);
    kiln_tensor  *w   = kiln_param(g, "w", KILN_SHAPE(4));
    kiln_tensor  *x   = kiln_input(g, "x", KILN_F16, KILN_SHAPE(4));
    kiln_tensor  *y   = kiln_mul(g, kiln_cast(g, w, KILN_F16), x);
    expect_ok(kiln_loss_scale(g, 1024.0f, 2000), "kiln_loss_scale");
    expect_ok(kiln_backward(g, kiln_sum(g, kiln_cast(g, y, KILN_F32))), "backward");
    kiln_tensor *norm = kiln_clip_grad_norm(g, 1.0f);
    cr_assert_not_null(norm, "%s", kiln_last_error());
    cr_assert_not_null(kiln_sgd(g, 0.1f, 0.0f, 0.0f), "%s", kiln_last_error());
    expect_ok(kiln_graph_compile(g), "compile");
    const float wv[4] = {1, 2, 3, 4}, xv[4] = {0.5f, -0.25f, 1.0f, 2.0f};
    uint16_t    xh[4];
    kiln_convert(xh, KILN_F16, xv, KILN_F32, 4);
    expect_ok(kiln_tensor_write(w, wv, sizeof wv), "w");
    expect_ok(kiln_tensor_write(x, xh, sizeof xh), "x");
    expect_ok(kiln_graph_run(g), "run");
    float n, got[4];
    expect_ok(kiln_tensor_read(norm, &n, sizeof n), "norm");
    double want = sqrt(0.25 + 0.0625 + 1.0 + 4.0); /* |dloss/dw| = |x| */
    cr_assert(fabs(n - want) < 1e-5, "%s: norm %g, expected %g", backend->label,
              (double)n, want);
    /* clipped to norm 1: w -= 0.1 * x / |x| */
    expect_ok(kiln_tensor_read(w, got, sizeof got), "w");
    for (int i = 0; i < 4; i++)
        cr_assert(fabs(got[i] - (wv[i] - 0.1 * xv[i] / want)) < 1e-5,
                  "%s: w[%d] = %g", backend->label, i, (double)got[i]);
    kiln_graph_free(g);
    kiln_context_free(ctx);
}
