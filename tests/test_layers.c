/* tests/test_layers.c — initialisers, the layer helpers, parameter names.
 *
 * Initial values are host-side and do not depend on the backend, so these run
 * on the first usable device. The pinned values of the generator were worked
 * out by an independent implementation of splitmix64 seeding xoshiro256**,
 * written from the published algorithms in Python:
 *
 *   state = seed; each of s[0..3] = splitmix64(state)
 *   uniform: lo + (hi - lo) * (next() >> 11) * 2^-53, rounded to float
 *   normal:  Box-Muller on u1 = 1 - unit(), u2 = unit(); cos then sin
 */
#include "backends.h"
#include "expect.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static kiln_context *ctx;
static kiln_graph   *g;

static void setup(void)
{
    ctx = test_context(test_first_spec());
    g   = kiln_graph_new(ctx);
    cr_assert_not_null(g, "kiln_graph_new: %s", kiln_last_error());
}

static void teardown(void)
{
    kiln_graph_free(g);
    kiln_context_free(ctx);
}

TestSuite(init, .init = setup, .fini = teardown);
TestSuite(layers, .init = setup, .fini = teardown);

static kiln_tensor *param(const char *name, int ndim, const int64_t *dims)
{
    kiln_tensor *p = kiln_param(g, name, ndim, dims);
    cr_assert_eq(kiln_graph_status(g), KILN_OK, "kiln_param(%s): %s", name,
                 kiln_graph_error(g));
    return p;
}

/* The tensor's values, read back (malloc'd). */
static float *values(const kiln_tensor *t)
{
    size_t n = kiln_tensor_nbytes(t);
    float *v = malloc(n ? n : 1);
    cr_assert_not_null(v);
    expect_ok(kiln_tensor_read(t, v, n), "kiln_tensor_read");
    return v;
}

static void moments(const float *v, int64_t n, double *mean, double *stddev)
{
    double s = 0, ss = 0;
    for (int64_t i = 0; i < n; i++)
        s += v[i];
    *mean = s / (double)n;
    for (int64_t i = 0; i < n; i++)
        ss += (v[i] - *mean) * (v[i] - *mean);
    *stddev = sqrt(ss / (double)n);
}

/* ---- initialisers ------------------------------------------------------------- */

Test(init, constant_fills_every_element)
{
    kiln_tensor *p = param("p", KILN_SHAPE(3, 5));
    expect_ok(kiln_init_constant(p, -1.25f), "kiln_init_constant");
    float *v = values(p);
    for (int i = 0; i < 15; i++)
        cr_assert_eq(v[i], -1.25f, "element %d is %g", i, (double)v[i]);
    free(v);
}

Test(init, uniform_matches_the_reference_generator)
{
    kiln_tensor *p = param("p", KILN_SHAPE(4));
    expect_ok(kiln_init_uniform(p, -1.0f, 3.0f, 42), "kiln_init_uniform");
    const float want[] = {-0.6645480990409851f, 0.5159209966659546f, 1.7201735973358154f,
                          2.6987717151641846f};
    float      *v      = values(p);
    for (int i = 0; i < 4; i++)
        cr_assert_eq(v[i], want[i], "element %d is %.9g, expected %.9g", i, (double)v[i],
                     (double)want[i]);
    free(v);
}

Test(init, normal_matches_the_reference_generator)
{
    kiln_tensor *p = param("p", KILN_SHAPE(4));
    expect_ok(kiln_init_normal(p, 0.5f, 2.0f, 7), "kiln_init_normal");
    const float want[] = {-0.058047983795404434f, 3.5554463863372803f, 4.299537181854248f,
                          0.04660850763320923f};
    float      *v      = values(p);
    for (int i = 0; i < 4; i++) /* libm may differ in the last bit: see init.c */
        cr_assert_float_eq(v[i], want[i], 1e-6f * (1 + fabsf(want[i])),
                           "element %d is %.9g, expected %.9g", i, (double)v[i],
                           (double)want[i]);
    free(v);
}

Test(init, uniform_stays_in_range_with_the_right_moments)
{
    kiln_tensor *p = param("p", KILN_SHAPE(100, 100));
    expect_ok(kiln_init_uniform(p, 2.0f, 5.0f, 1), "kiln_init_uniform");
    float *v = values(p);
    for (int i = 0; i < 10000; i++)
        cr_assert(v[i] >= 2.0f && v[i] < 5.0f, "element %d is %g", i, (double)v[i]);
    double mean, sd;
    moments(v, 10000, &mean, &sd);
    cr_assert(fabs(mean - 3.5) < 0.05, "mean %g, expected 3.5", mean);
    cr_assert(fabs(sd - 3.0 / sqrt(12.0)) < 0.03, "stddev %g, expected %g", sd,
              3.0 / sqrt(12.0));
    free(v);
}

Test(init, normal_has_the_right_moments_and_an_odd_count_works)
{
    kiln_tensor *p = param("p", KILN_SHAPE(20001));
    expect_ok(kiln_init_normal(p, -3.0f, 0.5f, 99), "kiln_init_normal");
    float *v = values(p);
    double mean, sd;
    moments(v, 20001, &mean, &sd);
    cr_assert(fabs(mean + 3.0) < 0.02, "mean %g, expected -3", mean);
    cr_assert(fabs(sd - 0.5) < 0.02, "stddev %g, expected 0.5", sd);
    cr_assert(isfinite(v[20000]), "the last, unpaired element is %g", (double)v[20000]);
    free(v);
}

Test(init, the_same_seed_gives_the_same_values_and_another_seed_others)
{
    kiln_tensor *a = param("a", KILN_SHAPE(64)), *b = param("b", KILN_SHAPE(64)),
                *c = param("c", KILN_SHAPE(64));
    expect_ok(kiln_init_normal(a, 0, 1, 5), "a");
    expect_ok(kiln_init_normal(b, 0, 1, 5), "b");
    expect_ok(kiln_init_normal(c, 0, 1, 6), "c");
    float *va = values(a), *vb = values(b), *vc = values(c);
    cr_assert(memcmp(va, vb, 64 * sizeof *va) == 0, "seed 5 twice gave different values");
    cr_assert(memcmp(va, vc, 64 * sizeof *va) != 0, "seeds 5 and 6 gave the same values");
    free(va);
    free(vb);
    free(vc);
}

Test(init, xavier_bounds_follow_the_fans_of_dense_and_conv_weights)
{
    kiln_tensor *dense = param("dense", KILN_SHAPE(300, 100));
    kiln_tensor *conv  = param("conv", KILN_SHAPE(16, 8, 3, 3));
    expect_ok(kiln_init_xavier(dense, 3), "xavier dense");
    expect_ok(kiln_init_xavier(conv, 3), "xavier conv");
    const struct {
        kiln_tensor *p;
        double       bound;
    } cases[] = {{dense, sqrt(6.0 / 400)}, {conv, sqrt(6.0 / (72 + 144))}};
    for (int c = 0; c < 2; c++) {
        float  *v   = values(cases[c].p);
        int64_t n   = kiln_tensor_numel(cases[c].p);
        double  max = 0;
        for (int64_t i = 0; i < n; i++)
            max = fabs(v[i]) > max ? fabs(v[i]) : max;
        cr_assert(max <= cases[c].bound && max > 0.95 * cases[c].bound,
                  "case %d: largest |value| %g, bound %g", c, max, cases[c].bound);
        free(v);
    }
}

Test(init, he_stddev_is_sqrt_2_over_fan_in)
{
    kiln_tensor *dense = param("dense", KILN_SHAPE(400, 50));
    kiln_tensor *conv  = param("conv", KILN_SHAPE(64, 8, 3, 3));
    expect_ok(kiln_init_he(dense, 11), "he dense");
    expect_ok(kiln_init_he(conv, 11), "he conv");
    const struct {
        kiln_tensor *p;
        double       sd;
    } cases[] = {{dense, sqrt(2.0 / 400)}, {conv, sqrt(2.0 / 72)}};
    for (int c = 0; c < 2; c++) {
        float *v = values(cases[c].p);
        double mean, sd;
        moments(v, kiln_tensor_numel(cases[c].p), &mean, &sd);
        cr_assert(fabs(mean) < 0.1 * cases[c].sd, "case %d: mean %g", c, mean);
        cr_assert(fabs(sd / cases[c].sd - 1) < 0.05, "case %d: stddev %g, expected %g", c,
                  sd, cases[c].sd);
        free(v);
    }
}

Test(init, works_after_compile_as_before)
{
    kiln_tensor *before = param("before", KILN_SHAPE(8, 4));
    kiln_tensor *after  = param("after", KILN_SHAPE(8, 4));
    expect_ok(kiln_init_he(before, 77), "he before compile");
    expect_ok(kiln_output(g, kiln_add(g, before, after)), "kiln_output");
    expect_ok(kiln_graph_compile(g), "kiln_graph_compile");
    expect_ok(kiln_init_he(after, 77), "he after compile");
    float *a = values(before), *b = values(after);
    cr_assert(memcmp(a, b, 32 * sizeof *a) == 0, "the same seed gave other values after "
                                                 "compile");
    free(a);
    free(b);
}

Test(init, empty_parameters_are_fine)
{
    kiln_tensor *p = param("p", KILN_SHAPE(0, 4));
    expect_ok(kiln_init_he(p, 1), "he of [0, 4]");
    expect_ok(kiln_init_xavier(p, 1), "xavier of [0, 4]");
}

Test(init, bad_arguments_name_the_values)
{
    kiln_tensor *p = param("p", KILN_SHAPE(2, 2));
    expect_error(kiln_init_uniform(p, 2.0f, 1.0f, 0), KILN_ERR_INVALID_ARG,
                 "lo 2 is greater than hi 1", NULL);
    expect_error(kiln_init_uniform(p, NAN, 1.0f, 0), KILN_ERR_INVALID_ARG, "lo is nan",
                 "finite");
    expect_error(kiln_init_normal(p, 0.0f, -1.0f, 0), KILN_ERR_INVALID_ARG,
                 "stddev -1 is negative", NULL);
    expect_error(kiln_init_normal(p, INFINITY, 1.0f, 0), KILN_ERR_INVALID_ARG,
                 "mean is inf", NULL);
    expect_error(kiln_init_constant(NULL, 0), KILN_ERR_INVALID_ARG, "NULL", NULL);
}

Test(init, only_parameters_can_be_initialised)
{
    kiln_tensor *x = kiln_input(g, "x", KILN_F32, KILN_SHAPE(2, 2));
    expect_error(kiln_init_he(x, 0), KILN_ERR_INVALID_ARG, "'x' [2, 2]",
                 "not a parameter");
    kiln_tensor *labels = kiln_input(g, "labels", KILN_I32, KILN_SHAPE(2));
    expect_error(kiln_init_constant(labels, 0), KILN_ERR_INVALID_ARG, "'labels'",
                 "not a parameter");
}

Test(init, fans_need_a_dense_or_conv_shape)
{
    kiln_tensor *bias = param("bias", KILN_SHAPE(10));
    expect_error(kiln_init_he(bias, 0), KILN_ERR_SHAPE, "'bias' [10] has 1 dimension",
                 "fan_in");
    kiln_tensor *p3 = param("p3", KILN_SHAPE(2, 3, 4));
    expect_error(kiln_init_xavier(p3, 0), KILN_ERR_SHAPE, "3 dimensions", NULL);
}

Test(init, a_poisoned_tensor_is_refused)
{
    kiln_tensor *bad = kiln_param(g, "bad", KILN_SHAPE(-1));
    expect_error(kiln_init_constant(bad, 0), KILN_ERR_STATE, "poisoned", NULL);
}

/* ---- parameter names ------------------------------------------------------------- */

Test(layers, duplicate_parameter_names_are_an_error)
{
    param("w", KILN_SHAPE(3));
    kiln_param(g, "w", KILN_SHAPE(4));
    cr_assert_eq(kiln_graph_status(g), KILN_ERR_INVALID_ARG);
    expect_graph_error(g, "\"w\"", "unique", NULL);
}

Test(layers, inputs_may_share_a_name_with_nothing_else_checked)
{
    /* Only parameters go to weight files; unnamed parameters are many. */
    param(NULL, KILN_SHAPE(3));
    param(NULL, KILN_SHAPE(3));
    kiln_input(g, "x", KILN_F32, KILN_SHAPE(3));
    cr_assert_eq(kiln_graph_status(g), KILN_OK, "%s", kiln_graph_error(g));
}

Test(layers, two_layers_of_one_name_are_an_error)
{
    kiln_tensor *x = kiln_input(g, "x", KILN_F32, KILN_SHAPE(2, 3));
    kiln_tensor *h = kiln_dense(g, x, 3, "fc");
    kiln_dense(g, h, 3, "fc");
    expect_graph_error(g, "\"fc.weight\"", "unique", NULL);
}

/* ---- layers ------------------------------------------------------------------- */

static uint64_t splitmix64(uint64_t *state) /* the published algorithm */
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15u);
    z          = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9u;
    z          = (z ^ (z >> 27)) * 0x94D049BB133111EBu;
    return z ^ (z >> 31);
}

Test(layers, dense_computes_x_at_weight_plus_bias)
{
    kiln_tensor *x = kiln_input(g, "x", KILN_F32, KILN_SHAPE(2, 3));
    kiln_tensor *y = kiln_dense(g, x, 4, "fc");
    cr_assert_eq(kiln_graph_status(g), KILN_OK, "%s", kiln_graph_error(g));
    cr_assert_eq(kiln_tensor_ndim(y), 2);
    cr_assert(kiln_tensor_dim(y, 0) == 2 && kiln_tensor_dim(y, 1) == 4);
    kiln_tensor *w = kiln_graph_find(g, "fc.weight"), *b = kiln_graph_find(g, "fc.bias");
    cr_assert(w && b, "fc.weight and fc.bias not found");
    cr_assert(kiln_tensor_dim(w, 0) == 3 && kiln_tensor_dim(w, 1) == 4, "weight shape");
    cr_assert(kiln_tensor_ndim(b) == 1 && kiln_tensor_dim(b, 0) == 4, "bias shape");
    const float xs[] = {1, -2, 0.5f, 3, 0, -1}, bs[] = {0.25f, -0.5f, 1, 2};
    expect_ok(kiln_tensor_write(b, bs, sizeof bs), "write bias");
    expect_ok(kiln_graph_compile(g), "compile");
    expect_ok(kiln_tensor_write(x, xs, sizeof xs), "write x");
    expect_ok(kiln_graph_run(g), "run");
    float *ws = values(w), *ys = values(y);
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 4; j++) {
            double want = bs[j];
            for (int k = 0; k < 3; k++)
                want += (double)xs[3 * i + k] * ws[4 * k + j];
            cr_assert(fabs(ys[4 * i + j] - want) < 1e-5, "y[%d][%d] = %g, expected %g", i,
                      j, (double)ys[4 * i + j], want);
        }
    free(ws);
    free(ys);
}

Test(layers, weights_are_he_normal_from_the_graph_seed_and_biases_zero)
{
    kiln_graph_seed(g, 123);
    kiln_tensor *x = kiln_input(g, "x", KILN_F32, KILN_SHAPE(1, 6));
    kiln_dense(g, kiln_dense(g, x, 6, NULL), 5, NULL);
    cr_assert_eq(kiln_graph_status(g), KILN_OK, "%s", kiln_graph_error(g));
    /* each layer takes the next value of splitmix64 from the seed */
    uint64_t     state = 123;
    kiln_tensor *ref0  = param("ref0", KILN_SHAPE(6, 6)),
                *ref1  = param("ref1", KILN_SHAPE(6, 5));
    expect_ok(kiln_init_he(ref0, splitmix64(&state)), "he ref0");
    expect_ok(kiln_init_he(ref1, splitmix64(&state)), "he ref1");
    const char  *names[] = {"dense0.weight", "dense1.weight"};
    kiln_tensor *refs[]  = {ref0, ref1};
    for (int l = 0; l < 2; l++) {
        kiln_tensor *w = kiln_graph_find(g, names[l]);
        cr_assert_not_null(w, "%s not found", names[l]);
        float *a = values(w), *b = values(refs[l]);
        cr_assert(memcmp(a, b, kiln_tensor_nbytes(w)) == 0,
                  "%s is not He-normal from "
                  "value %d of the seed sequence",
                  names[l], l + 1);
        free(a);
        free(b);
    }
    float *bias = values(kiln_graph_find(g, "dense1.bias"));
    for (int i = 0; i < 5; i++)
        cr_assert_eq(bias[i], 0.0f, "dense1.bias[%d] = %g", i, (double)bias[i]);
    free(bias);
}

Test(layers, an_unseeded_graph_uses_seed_0)
{
    kiln_tensor *x = kiln_input(g, "x", KILN_F32, KILN_SHAPE(1, 4));
    kiln_dense(g, x, 4, NULL);
    kiln_graph *h = kiln_graph_new(ctx);
    kiln_graph_seed(h, 0);
    kiln_dense(h, kiln_input(h, "x", KILN_F32, KILN_SHAPE(1, 4)), 4, NULL);
    float *a = values(kiln_graph_find(g, "dense0.weight"));
    float *b = values(kiln_graph_find(h, "dense0.weight"));
    cr_assert(memcmp(a, b, 16 * sizeof *a) == 0, "an unseeded graph differs from seed 0");
    free(a);
    free(b);
    kiln_graph_free(h);
}

Test(layers, conv2d_layer_makes_its_parameters_and_output_shape)
{
    kiln_tensor *x = kiln_input(g, "x", KILN_F32, KILN_SHAPE(2, 3, 8, 8));
    kiln_tensor *y = kiln_conv2d_layer(g, x, 5, 3, 1, 1, NULL);
    kiln_tensor *z = kiln_dense(g, kiln_flatten(g, y), 10, NULL);
    cr_assert_eq(kiln_graph_status(g), KILN_OK, "%s", kiln_graph_error(g));
    cr_assert(kiln_tensor_dim(y, 0) == 2 && kiln_tensor_dim(y, 1) == 5 &&
                  kiln_tensor_dim(y, 2) == 8 && kiln_tensor_dim(y, 3) == 8,
              "conv output shape");
    cr_assert_eq(kiln_tensor_dim(z, 1), 10);
    /* layers count together: the second layer is dense1 */
    const char *names[] = {"conv0.weight", "conv0.bias", "dense1.weight", "dense1.bias"};
    for (size_t i = 0; i < 4; i++)
        cr_assert_str_eq(kiln_tensor_name(kiln_graph_param(g, i)), names[i]);
    kiln_tensor *w = kiln_graph_param(g, 0);
    cr_assert(kiln_tensor_dim(w, 0) == 5 && kiln_tensor_dim(w, 1) == 3 &&
                  kiln_tensor_dim(w, 2) == 3 && kiln_tensor_dim(w, 3) == 3,
              "conv weight shape");
}

Test(layers, the_same_seed_builds_the_same_model)
{
    kiln_graph *h[2];
    float      *w[2];
    for (int i = 0; i < 2; i++) {
        h[i] = kiln_graph_new(ctx);
        kiln_graph_seed(h[i], 2024);
        kiln_tensor *x = kiln_input(h[i], "x", KILN_F32, KILN_SHAPE(1, 1, 6, 6));
        kiln_conv2d_layer(h[i], x, 4, 3, 1, 0, "c");
        w[i] = values(kiln_graph_find(h[i], "c.weight"));
    }
    cr_assert(memcmp(w[0], w[1], 4 * 9 * sizeof(float)) == 0, "same seed, other weights");
    for (int i = 0; i < 2; i++) {
        free(w[i]);
        kiln_graph_free(h[i]);
    }
}

Test(layers, bad_inputs_are_graph_errors_naming_the_layer)
{
    kiln_tensor *x4 = kiln_input(g, "x4", KILN_F32, KILN_SHAPE(2, 1, 4, 4));
    cr_assert_not_null(kiln_dense(g, x4, 3, NULL), "must return a poisoned tensor");
    expect_graph_error(g, "dense: x [2, 1, 4, 4] has 4 dimensions", "expected 2", NULL);
}

Test(layers, conv2d_layer_needs_nchw)
{
    kiln_tensor *x2 = kiln_input(g, "x2", KILN_F32, KILN_SHAPE(2, 16));
    kiln_conv2d_layer(g, x2, 3, 3, 1, 0, NULL);
    expect_graph_error(g, "conv2d_layer: x [2, 16] has 2 dimensions", "[N, C, H, W]",
                       NULL);
}

Test(layers, sizes_below_one_are_refused)
{
    kiln_tensor *x = kiln_input(g, "x", KILN_F32, KILN_SHAPE(2, 16));
    kiln_dense(g, x, 0, NULL);
    expect_graph_error(g, "dense: out 0", "at least 1", NULL);
    kiln_graph *h = kiln_graph_new(ctx);
    kiln_conv2d_layer(h, kiln_input(h, "x", KILN_F32, KILN_SHAPE(1, 1, 4, 4)), 2, 0, 1, 0,
                      NULL);
    cr_assert(strstr(kiln_graph_error(h), "kernel 0"), "%s", kiln_graph_error(h));
    kiln_graph_free(h);
}

Test(layers, a_null_graph_gives_null)
{
    cr_assert_null(kiln_dense(NULL, NULL, 3, NULL));
    cr_assert_null(kiln_conv2d_layer(NULL, NULL, 3, 3, 1, 0, NULL));
    kiln_graph_seed(NULL, 1);
}
