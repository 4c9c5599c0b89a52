/* tests/test_graph.c — graph-level behaviour: errors, states, memory, leaves.
 *
 * These do not depend on the backend, so they run on the first usable device
 * only (test_first_spec). The expected values of the few computations here
 * are worked out in the test itself, in double.
 */
#include "backends.h"
#include "expect.h"
#include "reference.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static kiln_context *open_context(void)
{
    return test_context(test_first_spec());
}

static kiln_graph *new_graph(kiln_context *ctx)
{
    kiln_graph *g = kiln_graph_new(ctx);
    cr_assert_not_null(g, "kiln_graph_new failed: %s", kiln_last_error());
    return g;
}

static kiln_tensor *new_input(kiln_graph *g, const char *name, kiln_dtype dtype, int ndim,
                              const int64_t *dims)
{
    kiln_tensor *t = kiln_input(g, name, dtype, ndim, dims);
    cr_assert_not_null(t, "kiln_input(\"%s\") returned NULL: %s", name,
                       kiln_last_error());
    cr_assert_eq(kiln_graph_status(g), KILN_OK, "kiln_input(\"%s\"): %s", name,
                 kiln_graph_error(g));
    return t;
}

static void expect_status(kiln_status st, kiln_status want, const char *what)
{
    cr_assert_eq(st, want, "%s gave %s, expected %s (%s)", what, kiln_status_name(st),
                 kiln_status_name(want), kiln_last_error());
}

/* Values in [-2, 2] that differ from call to call through `salt`. */
static void fill(float *x, size_t n, unsigned salt)
{
    for (size_t i = 0; i < n; i++)
        x[i] = (float)sin(0.7 * (double)i + 1.3 * salt) * 2.0f;
}

/* ---- sticky construction errors ---------------------------------------------- */

Test(graph, matmul_shape_error_names_the_op_and_both_shapes)
{
    kiln_context *ctx = open_context();
    kiln_graph   *g   = new_graph(ctx);
    kiln_tensor  *a   = new_input(g, "a", KILN_F32, KILN_SHAPE(3, 4));
    kiln_tensor  *b   = new_input(g, "b", KILN_F32, KILN_SHAPE(5, 2));
    kiln_tensor  *y   = kiln_matmul(g, a, b);
    cr_assert_not_null(y, "a bad matmul must return a poisoned tensor, not NULL");
    cr_assert_eq(kiln_graph_status(g), KILN_ERR_SHAPE, "status %s",
                 kiln_status_name(kiln_graph_status(g)));
    expect_graph_error(g, "matmul", "[3, 4]", "[5, 2]");
    kiln_graph_free(g);
    kiln_context_free(ctx);
}

Test(graph, conv2d_channel_error_names_the_op_and_both_shapes)
{
    kiln_context *ctx = open_context();
    kiln_graph   *g   = new_graph(ctx);
    kiln_tensor  *x   = new_input(g, "x", KILN_F32, KILN_SHAPE(1, 3, 8, 8));
    kiln_tensor  *w   = kiln_param(g, "w", KILN_SHAPE(4, 2, 3, 3));
    cr_assert_not_null(w, "kiln_param: %s", kiln_last_error());
    kiln_tensor *y = kiln_conv2d(g, x, w, NULL, 1, 0);
    cr_assert_not_null(y, "a bad conv2d must return a poisoned tensor, not NULL");
    cr_assert_eq(kiln_graph_status(g), KILN_ERR_SHAPE, "status %s",
                 kiln_status_name(kiln_graph_status(g)));
    expect_graph_error(g, "conv2d", "[1, 3, 8, 8]", "[4, 2, 3, 3]");
    kiln_graph_free(g);
    kiln_context_free(ctx);
}

Test(graph, scalar_shapes_print_as_empty_brackets)
{
    kiln_context        *ctx        = open_context();
    kiln_graph          *g          = new_graph(ctx);
    static const int64_t no_dims[1] = {0};
    kiln_tensor         *s          = new_input(g, "s", KILN_F32, 0, no_dims);
    kiln_tensor         *m          = new_input(g, "m", KILN_F32, KILN_SHAPE(3, 4));
    cr_assert_not_null(kiln_matmul(g, s, m));
    cr_assert_eq(kiln_graph_status(g), KILN_ERR_SHAPE, "matmul of a scalar: status %s",
                 kiln_status_name(kiln_graph_status(g)));
    expect_graph_error(g, "matmul", "[]", "[3, 4]");
    kiln_graph_free(g);
    kiln_context_free(ctx);
}

Test(graph, ops_after_an_error_return_poisoned_tensors_and_keep_the_first_error)
{
    kiln_context *ctx = open_context();
    kiln_graph   *g   = new_graph(ctx);
    kiln_tensor  *a   = new_input(g, "a", KILN_F32, KILN_SHAPE(3, 4));
    kiln_tensor  *b   = new_input(g, "b", KILN_F32, KILN_SHAPE(5, 2));
    kiln_tensor  *bad = kiln_matmul(g, a, b);
    cr_assert_not_null(bad);
    cr_assert_not_null(kiln_graph_error(g), "no error after a bad matmul");
    char first[1024];
    snprintf(first, sizeof first, "%s", kiln_graph_error(g));

    /* ops on the poisoned tensor, and a second, different mistake */
    kiln_tensor *r = kiln_relu(g, bad);
    cr_assert_not_null(r, "relu of a poisoned tensor returned NULL");
    kiln_tensor *s = kiln_softmax(g, kiln_add(g, r, a));
    cr_assert_not_null(s, "ops on poisoned tensors returned NULL");
    kiln_tensor *c = kiln_input(g, "c", KILN_F32, KILN_SHAPE(7));
    cr_assert_not_null(c, "an input made after an error is NULL");
    kiln_tensor *d = kiln_sub(g, a, c); /* [7] does not broadcast on [3, 4] */
    cr_assert_not_null(d, "a second bad op returned NULL");

    cr_assert_str_eq(graph_error(g), first, "the first error was overwritten");
    cr_assert_eq(kiln_graph_status(g), KILN_ERR_SHAPE);
    kiln_graph_free(g);
    kiln_context_free(ctx);
}

Test(graph, compile_fails_with_the_recorded_shape_error_and_run_then_fails)
{
    kiln_context *ctx = open_context();
    kiln_graph   *g   = new_graph(ctx);
    kiln_tensor  *a   = new_input(g, "a", KILN_F32, KILN_SHAPE(3, 4));
    kiln_tensor  *b   = new_input(g, "b", KILN_F32, KILN_SHAPE(5, 2));
    kiln_tensor  *y   = kiln_relu(g, kiln_matmul(g, a, b));
    kiln_output(g, y);
    expect_status(kiln_graph_compile(g), KILN_ERR_SHAPE, "compile of a bad graph");
    expect_graph_error(g, "matmul", "[3, 4]", "[5, 2]");
    kiln_status st = kiln_graph_run(g);
    cr_assert_neq(st, KILN_OK, "run of a graph that failed to compile succeeded");
    kiln_graph_free(g);
    kiln_context_free(ctx);
}

Test(graph, f32_ops_reject_i32_tensors)
{
    kiln_context            *ctx   = open_context();
    static const char *const ops[] = {"relu", "add", "matmul", "exp"};
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
        kiln_graph  *g = new_graph(ctx);
        kiln_tensor *n = new_input(g, "n", KILN_I32, KILN_SHAPE(4, 4));
        kiln_tensor *f = new_input(g, "f", KILN_F32, KILN_SHAPE(4, 4));
        kiln_tensor *y = NULL;
        switch (i) {
        case 0: y = kiln_relu(g, n); break;
        case 1: y = kiln_add(g, f, n); break;
        case 2: y = kiln_matmul(g, n, f); break;
        case 3: y = kiln_exp(g, n); break;
        }
        cr_assert_not_null(y, "%s of an i32 tensor returned NULL", ops[i]);
        cr_assert_eq(kiln_graph_status(g), KILN_ERR_SHAPE,
                     "%s of an i32 tensor: status %s, expected KILN_ERR_SHAPE", ops[i],
                     kiln_status_name(kiln_graph_status(g)));
        expect_graph_error(g, ops[i], NULL, NULL);
        kiln_graph_free(g);
    }
    kiln_context_free(ctx);
}

Test(graph, cross_entropy_rejects_f32_labels)
{
    kiln_context *ctx    = open_context();
    kiln_graph   *g      = new_graph(ctx);
    kiln_tensor  *logits = new_input(g, "logits", KILN_F32, KILN_SHAPE(4, 10));
    kiln_tensor  *labels = new_input(g, "labels", KILN_F32, KILN_SHAPE(4));
    cr_assert_not_null(kiln_cross_entropy(g, logits, labels));
    cr_assert_eq(kiln_graph_status(g), KILN_ERR_SHAPE, "status %s",
                 kiln_status_name(kiln_graph_status(g)));
    expect_graph_error(g, "cross_entropy", NULL, NULL);
    kiln_graph_free(g);
    kiln_context_free(ctx);
}

/* ---- NULL and out-of-range arguments -------------------------------------------- */

Test(graph, null_graph_or_context_gives_null_and_a_message)
{
    cr_assert_null(kiln_graph_new(NULL), "kiln_graph_new(NULL) returned a graph");
    cr_assert_str_not_empty(kiln_last_error(), "kiln_graph_new(NULL) left no message");

    kiln_context *ctx = open_context();
    kiln_graph   *g   = new_graph(ctx);
    kiln_tensor  *x   = new_input(g, "x", KILN_F32, KILN_SHAPE(2, 2));
    cr_assert_null(kiln_input(NULL, "x", KILN_F32, KILN_SHAPE(2)));
    cr_assert_null(kiln_relu(NULL, x), "kiln_relu(NULL, x) returned a tensor");
    cr_assert_null(kiln_add(NULL, x, x), "kiln_add(NULL, x, x) returned a tensor");
    cr_assert_str_not_empty(kiln_last_error());
    cr_assert_eq(kiln_graph_status(g), KILN_OK,
                 "a call on another (NULL) graph changed this one: %s", graph_error(g));
    kiln_graph_free(g);
    kiln_context_free(ctx);

    kiln_graph_free(NULL);
    kiln_context_free(NULL);
}

/* Each of these on a fresh graph, since only the first error is kept. */
Test(graph, null_tensor_arguments_record_invalid_arg)
{
    kiln_context            *ctx     = open_context();
    static const char *const calls[] = {
        "kiln_relu(g, NULL)",
        "kiln_add(g, x, NULL)",
        "kiln_matmul(g, NULL, x)",
        "kiln_conv2d(g, NULL, x, NULL, 1, 0)",
        "kiln_input(g, \"t\", KILN_F32, 2, NULL)",
        "kiln_reshape(g, x, 2, NULL)",
    };
    for (size_t i = 0; i < sizeof calls / sizeof calls[0]; i++) {
        kiln_graph  *g = new_graph(ctx);
        kiln_tensor *x = new_input(g, "x", KILN_F32, KILN_SHAPE(2, 2));
        kiln_tensor *y = NULL;
        switch (i) {
        case 0: y = kiln_relu(g, NULL); break;
        case 1: y = kiln_add(g, x, NULL); break;
        case 2: y = kiln_matmul(g, NULL, x); break;
        case 3: y = kiln_conv2d(g, NULL, x, NULL, 1, 0); break;
        case 4: y = kiln_input(g, "t", KILN_F32, 2, NULL); break;
        case 5: y = kiln_reshape(g, x, 2, NULL); break;
        }
        cr_assert_not_null(y, "%s: expected a poisoned tensor, got NULL", calls[i]);
        cr_assert_eq(kiln_graph_status(g), KILN_ERR_INVALID_ARG,
                     "%s: graph status %s, expected KILN_ERR_INVALID_ARG (%s)", calls[i],
                     kiln_status_name(kiln_graph_status(g)), graph_error(g));
        kiln_output(g, y);
        expect_status(kiln_graph_compile(g), KILN_ERR_INVALID_ARG, calls[i]);
        kiln_graph_free(g);
    }
    kiln_context_free(ctx);
}

Test(graph, null_arguments_to_graph_and_tensor_calls_are_invalid_arg)
{
    kiln_context *ctx     = open_context();
    kiln_graph   *g       = new_graph(ctx);
    kiln_tensor  *x       = new_input(g, "x", KILN_F32, KILN_SHAPE(2, 2));
    kiln_tensor  *y       = kiln_relu(g, x);
    float         buf[4]  = {0};
    size_t        planned = 0, unshared = 0;

    expect_status(kiln_output(g, NULL), KILN_ERR_INVALID_ARG, "kiln_output(g, NULL)");
    expect_status(kiln_output(NULL, y), KILN_ERR_INVALID_ARG, "kiln_output(NULL, y)");
    expect_status(kiln_graph_compile(NULL), KILN_ERR_INVALID_ARG,
                  "kiln_graph_compile(NULL)");
    expect_status(kiln_graph_run(NULL), KILN_ERR_INVALID_ARG, "kiln_graph_run(NULL)");
    expect_status(kiln_graph_memory(NULL, &planned, &unshared), KILN_ERR_INVALID_ARG,
                  "kiln_graph_memory(NULL, ...)");
    expect_status(kiln_tensor_write(NULL, buf, sizeof buf), KILN_ERR_INVALID_ARG,
                  "kiln_tensor_write(NULL, ...)");
    expect_status(kiln_tensor_write(x, NULL, sizeof buf), KILN_ERR_INVALID_ARG,
                  "kiln_tensor_write(x, NULL, 16)");
    expect_status(kiln_tensor_read(NULL, buf, sizeof buf), KILN_ERR_INVALID_ARG,
                  "kiln_tensor_read(NULL, ...)");
    expect_status(kiln_tensor_read(x, NULL, sizeof buf), KILN_ERR_INVALID_ARG,
                  "kiln_tensor_read(x, NULL, 16)");
    kiln_graph_free(g);
    kiln_context_free(ctx);
}

Test(graph, out_of_range_shapes_and_op_parameters_are_errors)
{
    kiln_context            *ctx     = open_context();
    static const char *const calls[] = {
        "kiln_input with 5 dimensions",
        "kiln_input with ndim -1",
        "kiln_input with a negative dimension",
        "kiln_conv2d with stride 0",
        "kiln_conv2d with padding -1",
        "kiln_max_pool2d with kernel 0",
        "kiln_sum_axis with axis 2 of a 2-D tensor",
        "kiln_mean_axis with axis -3 of a 2-D tensor",
    };
    for (size_t i = 0; i < sizeof calls / sizeof calls[0]; i++) {
        kiln_graph  *g = new_graph(ctx);
        kiln_tensor *x = new_input(g, "x", KILN_F32, KILN_SHAPE(1, 1, 4, 4));
        kiln_tensor *m = new_input(g, "m", KILN_F32, KILN_SHAPE(4, 4));
        kiln_tensor *w = kiln_param(g, "w", KILN_SHAPE(1, 1, 3, 3));
        switch (i) {
        case 0: kiln_input(g, "t", KILN_F32, KILN_SHAPE(1, 2, 3, 4, 5)); break;
        case 1: kiln_input(g, "t", KILN_F32, -1, (const int64_t[]){1}); break;
        case 2: kiln_input(g, "t", KILN_F32, KILN_SHAPE(3, -2)); break;
        case 3: kiln_conv2d(g, x, w, NULL, 0, 0); break;
        case 4: kiln_conv2d(g, x, w, NULL, 1, -1); break;
        case 5: kiln_max_pool2d(g, x, 0, 1); break;
        case 6: kiln_sum_axis(g, m, 2, false); break;
        case 7: kiln_mean_axis(g, m, -3, true); break;
        }
        kiln_status st = kiln_graph_status(g);
        cr_assert(st == KILN_ERR_INVALID_ARG || st == KILN_ERR_SHAPE,
                  "%s: graph status %s, expected KILN_ERR_INVALID_ARG or KILN_ERR_SHAPE",
                  calls[i], kiln_status_name(st));
        kiln_graph_free(g);
    }
    kiln_context_free(ctx);
}

/* ---- tensor data ------------------------------------------------------------------- */

Test(tensor, write_or_read_of_the_wrong_size_fails_naming_both_sizes)
{
    kiln_context *ctx = open_context();
    kiln_graph   *g   = new_graph(ctx);
    kiln_tensor  *x   = new_input(g, "x", KILN_F32, KILN_SHAPE(3, 4)); /* 48 bytes */
    float         good[12], other[12], back[12];
    fill(good, 12, 1);
    fill(other, 12, 2);
    expect_ok(kiln_tensor_write(x, good, sizeof good), "write of 48 bytes");

    kiln_status st = kiln_tensor_write(x, other, 40);
    cr_assert(st == KILN_ERR_INVALID_ARG || st == KILN_ERR_SHAPE,
              "write of 40 bytes to a 48-byte tensor gave %s", kiln_status_name(st));
    cr_assert(strstr(kiln_last_error(), "48") && strstr(kiln_last_error(), "40"),
              "the message \"%s\" does not name both 48 and 40", kiln_last_error());
    st = kiln_tensor_write(x, other, 52);
    cr_assert_neq(st, KILN_OK, "write of 52 bytes to a 48-byte tensor succeeded");

    st = kiln_tensor_read(x, back, 44);
    cr_assert(st == KILN_ERR_INVALID_ARG || st == KILN_ERR_SHAPE,
              "read of 44 bytes from a 48-byte tensor gave %s", kiln_status_name(st));
    cr_assert(strstr(kiln_last_error(), "48") && strstr(kiln_last_error(), "44"),
              "the message \"%s\" does not name both 48 and 44", kiln_last_error());

    /* the failed writes changed nothing */
    expect_ok(kiln_tensor_read(x, back, sizeof back), "read of a leaf before compile");
    cr_assert_arr_eq(back, good, sizeof good, "a failed write changed the tensor");
    kiln_graph_free(g);
    kiln_context_free(ctx);
}

Test(tensor, writes_go_to_leaves_only)
{
    kiln_context *ctx     = open_context();
    kiln_graph   *g       = new_graph(ctx);
    kiln_tensor  *x       = new_input(g, "x", KILN_F32, KILN_SHAPE(4));
    kiln_tensor  *y       = kiln_exp(g, x);
    float         data[4] = {0};
    expect_ok(kiln_output(g, y), "kiln_output");
    expect_ok(kiln_graph_compile(g), "compile");
    cr_assert_neq(kiln_tensor_write(y, data, sizeof data), KILN_OK,
                  "a write to a computed tensor succeeded");
    kiln_graph_free(g);
    kiln_context_free(ctx);
}

Test(graph, run_before_compile_is_a_state_error)
{
    kiln_context *ctx = open_context();
    kiln_graph   *g   = new_graph(ctx);
    kiln_tensor  *x   = new_input(g, "x", KILN_F32, KILN_SHAPE(4));
    expect_ok(kiln_output(g, kiln_relu(g, x)), "kiln_output");
    expect_status(kiln_graph_run(g), KILN_ERR_STATE, "run before compile");
    size_t planned, unshared;
    expect_status(kiln_graph_memory(g, &planned, &unshared), KILN_ERR_STATE,
                  "kiln_graph_memory before compile");
    kiln_graph_free(g);
    kiln_context_free(ctx);
}

Test(graph, output_after_compile_is_a_state_error)
{
    kiln_context *ctx = open_context();
    kiln_graph   *g   = new_graph(ctx);
    kiln_tensor  *x   = new_input(g, "x", KILN_F32, KILN_SHAPE(4));
    kiln_tensor  *h   = kiln_exp(g, x);
    kiln_tensor  *y   = kiln_neg(g, h);
    expect_ok(kiln_output(g, y), "kiln_output");
    expect_ok(kiln_graph_compile(g), "compile");
    expect_status(kiln_output(g, h), KILN_ERR_STATE, "kiln_output after compile");
    kiln_graph_free(g);
    kiln_context_free(ctx);
}

Test(graph, only_leaves_and_outputs_are_readable_after_run)
{
    enum { N = 20 };
    kiln_context *ctx = open_context();
    kiln_graph   *g   = new_graph(ctx);
    kiln_tensor  *x   = new_input(g, "x", KILN_F32, KILN_SHAPE(4, 5));
    kiln_tensor  *h   = kiln_exp(g, x); /* not marked: may share storage */
    kiln_tensor  *y   = kiln_neg(g, h);
    expect_ok(kiln_output(g, y), "kiln_output");

    float  xs[N], got[N];
    double want[N];
    fill(xs, N, 3);
    expect_ok(kiln_tensor_write(x, xs, sizeof xs), "write");
    expect_status(kiln_tensor_read(y, got, sizeof got), KILN_ERR_STATE,
                  "read of an output before compile");
    expect_ok(kiln_graph_compile(g), "compile");
    expect_ok(kiln_graph_run(g), "run");

    expect_status(kiln_tensor_read(h, got, sizeof got), KILN_ERR_STATE,
                  "read of an unmarked intermediate");
    expect_ok(kiln_tensor_read(y, got, sizeof got), "read of the output");
    for (int i = 0; i < N; i++)
        want[i] = -exp((double)xs[i]);
    ref_expect_close_f64("neg(exp(x))", got, want, ref_shape_of(KILN_SHAPE(N)),
                         (ref_tol){1e-5, 1e-5});
    expect_ok(kiln_tensor_read(x, got, sizeof got), "read of the input leaf");
    cr_assert_arr_eq(got, xs, sizeof xs, "the input leaf changed in the run");
    kiln_graph_free(g);
    kiln_context_free(ctx);
}

/* ---- memory planning and views -------------------------------------------------------- */

Test(graph, intermediates_of_an_elementwise_chain_share_memory)
{
    enum { D = 256, N = D * D, OPS = 10 };
    const size_t  bytes = N * sizeof(float);
    kiln_context *ctx   = open_context();
    kiln_graph   *g     = new_graph(ctx);
    kiln_tensor  *x     = new_input(g, "x", KILN_F32, KILN_SHAPE(D, D));
    kiln_tensor  *t     = x;
    t                   = kiln_neg(g, t);
    t                   = kiln_relu(g, t);
    t                   = kiln_scale(g, t, 0.5f);
    t                   = kiln_sigmoid(g, t);
    t                   = kiln_tanh(g, t);
    t                   = kiln_neg(g, t);
    t                   = kiln_exp(g, t);
    t                   = kiln_sqrt(g, t);
    t                   = kiln_log(g, t);
    t                   = kiln_scale(g, t, 3.0f);
    expect_ok(kiln_output(g, t), "kiln_output");
    expect_ok(kiln_graph_compile(g), "compile");

    size_t planned = 0, unshared = 0;
    expect_ok(kiln_graph_memory(g, &planned, &unshared), "kiln_graph_memory");
    cr_assert_geq(unshared, OPS * bytes,
                  "unshared is %zu bytes, less than %d tensors of %zu bytes", unshared,
                  OPS, bytes);
    cr_assert_geq(planned, bytes, "planned %zu bytes, less than the output alone",
                  planned);
    cr_assert_lt(planned, unshared, "no sharing: planned %zu bytes, unshared %zu",
                 planned, unshared);

    /* sharing must not change the answer */
    float *xs = malloc(bytes), *got = malloc(bytes);
    cr_assert(xs && got);
    fill(xs, N, 4);
    expect_ok(kiln_tensor_write(x, xs, bytes), "write");
    expect_ok(kiln_graph_run(g), "run");
    expect_ok(kiln_tensor_read(t, got, bytes), "read");
    for (size_t i = 0; i < N; i++) {
        double v = -(double)xs[i];
        v        = v > 0 ? v : 0;
        v        = tanh(1.0 / (1.0 + exp(-0.5 * v)));
        v        = 3.0 * log(sqrt(exp(-v)));
        cr_assert(fabs((double)got[i] - v) <= 1e-5 * (1.0 + fabs(v)),
                  "chain element %zu is %.9g, expected %.9g", i, (double)got[i], v);
    }
    free(xs);
    free(got);
    kiln_graph_free(g);
    kiln_context_free(ctx);
}

Test(reshape, shares_storage_and_reads_correct_values)
{
    enum { D = 64, N = D * D };
    const size_t  bytes = N * sizeof(float);
    kiln_context *ctx   = open_context();
    kiln_graph   *g     = new_graph(ctx);
    kiln_tensor  *x     = new_input(g, "x", KILN_F32, KILN_SHAPE(D, D));
    kiln_tensor  *h     = kiln_exp(g, x); /* not marked */
    kiln_tensor  *r     = kiln_reshape(g, h, KILN_SHAPE(N));
    kiln_tensor  *v     = kiln_reshape(g, x, KILN_SHAPE(16, 256));
    expect_ok(kiln_output(g, r), "kiln_output(r)");
    expect_ok(kiln_output(g, v), "kiln_output(v)");
    expect_ok(kiln_graph_compile(g), "compile");

    size_t planned = 0, unshared = 0;
    expect_ok(kiln_graph_memory(g, &planned, &unshared), "kiln_graph_memory");
    cr_assert_lt(planned, 2 * bytes,
                 "exp and its reshape hold %zu bytes; one copy is %zu", planned, bytes);

    float *xs = malloc(bytes), *got = malloc(bytes);
    cr_assert(xs && got);
    for (unsigned run = 0; run < 2; run++) {
        fill(xs, N, 5 + run);
        expect_ok(kiln_tensor_write(x, xs, bytes), "write");
        expect_ok(kiln_graph_run(g), "run");
        cr_assert_eq(kiln_tensor_ndim(r), 1);
        cr_assert_eq(kiln_tensor_dim(r, 0), N);
        expect_ok(kiln_tensor_read(r, got, bytes), "read of reshape(exp(x))");
        for (size_t i = 0; i < N; i++) {
            double want = exp((double)xs[i]);
            cr_assert(fabs(got[i] - want) <= 1e-5 * want,
                      "run %u: reshape(exp(x))[%zu] is %.9g, expected %.9g", run, i,
                      (double)got[i], want);
        }
        expect_ok(kiln_tensor_read(v, got, bytes), "read of reshape(x)");
        cr_assert_arr_eq(got, xs, bytes, "run %u: reshape(x) differs from x", run);
    }
    free(xs);
    free(got);
    kiln_graph_free(g);
    kiln_context_free(ctx);
}

/* ---- leaves across runs ----------------------------------------------------------------- */

Test(param, values_persist_across_runs)
{
    enum { N = 7 };
    kiln_context *ctx = open_context();
    kiln_graph   *g   = new_graph(ctx);
    kiln_tensor  *x   = new_input(g, "x", KILN_F32, KILN_SHAPE(N));
    kiln_tensor  *p   = kiln_param(g, "p", KILN_SHAPE(N));
    cr_assert_not_null(p, "kiln_param: %s", kiln_last_error());
    kiln_tensor *y = kiln_mul(g, x, p);
    expect_ok(kiln_output(g, y), "kiln_output");
    expect_ok(kiln_graph_compile(g), "compile");

    float  ps[N], xs[N], got[N];
    double want[N];
    fill(ps, N, 6);
    expect_ok(kiln_tensor_write(p, ps, sizeof ps), "write of the param");
    for (unsigned run = 0; run < 3; run++) {
        fill(xs, N, 10 + run);
        expect_ok(kiln_tensor_write(x, xs, sizeof xs), "write of the input");
        expect_ok(kiln_graph_run(g), "run");
        expect_ok(kiln_tensor_read(y, got, sizeof got), "read");
        for (int i = 0; i < N; i++)
            want[i] = (double)xs[i] * (double)ps[i];
        ref_expect_close_f64("x * p", got, want, ref_shape_of(KILN_SHAPE(N)),
                             (ref_tol){1e-6, 1e-6});
    }
    expect_ok(kiln_tensor_read(p, got, sizeof got), "read of the param");
    cr_assert_arr_eq(got, ps, sizeof ps, "the param changed across runs");
    kiln_graph_free(g);
    kiln_context_free(ctx);
}

Test(tensor, writes_before_compile_are_kept)
{
    enum { N = 13 };
    kiln_context *ctx = open_context();
    kiln_graph   *g   = new_graph(ctx);
    kiln_tensor  *x   = new_input(g, "x", KILN_F32, KILN_SHAPE(N));
    kiln_tensor  *p   = kiln_param(g, "p", KILN_SHAPE(N));
    cr_assert_not_null(p, "kiln_param: %s", kiln_last_error());
    float  xs[N], ps[N], got[N];
    double want[N];
    fill(xs, N, 7);
    fill(ps, N, 8);
    expect_ok(kiln_tensor_write(x, xs, sizeof xs), "write of x before building");
    kiln_tensor *y = kiln_sub(g, x, p);
    expect_ok(kiln_tensor_write(p, ps, sizeof ps), "write of p before compile");
    expect_ok(kiln_output(g, y), "kiln_output");
    expect_ok(kiln_graph_compile(g), "compile");
    expect_ok(kiln_graph_run(g), "run");
    expect_ok(kiln_tensor_read(y, got, sizeof got), "read");
    for (int i = 0; i < N; i++)
        want[i] = (double)xs[i] - (double)ps[i];
    ref_expect_close_f64("x - p with both written before compile", got, want,
                         ref_shape_of(KILN_SHAPE(N)), (ref_tol){1e-6, 1e-6});
    kiln_graph_free(g);
    kiln_context_free(ctx);
}

/* ---- contexts, shapes, reshape -------------------------------------------------------------- */

Test(context, unknown_backend_fails_naming_it_and_listing_cpu)
{
    kiln_context *ctx = kiln_context_new_for("nonexistent");
    cr_assert_null(ctx, "kiln_context_new_for(\"nonexistent\") made a context");
    const char *e = kiln_last_error();
    cr_assert(strstr(e, "nonexistent") != NULL, "\"%s\" does not name \"nonexistent\"",
              e);
    cr_assert(strstr(e, "cpu") != NULL, "\"%s\" does not list \"cpu\"", e);
}

static int shape_ndim(int ndim, const int64_t *dims)
{
    (void)dims;
    return ndim;
}

static int64_t shape_dim(int ndim, const int64_t *dims, int axis)
{
    cr_assert(axis < ndim);
    return dims[axis];
}

Test(shape, kiln_shape_gives_ndim_and_dims)
{
    cr_assert_eq(shape_ndim(KILN_SHAPE(64, 784)), 2);
    cr_assert_eq(shape_dim(KILN_SHAPE(64, 784), 0), 64);
    cr_assert_eq(shape_dim(KILN_SHAPE(64, 784), 1), 784);
    cr_assert_eq(shape_ndim(KILN_SHAPE(7)), 1);
    cr_assert_eq(shape_ndim(KILN_SHAPE(2, 3, 4, 5)), 4);
    cr_assert_eq(shape_dim(KILN_SHAPE(2, 3, 4, 5), 3), 5);

    kiln_context *ctx = open_context();
    kiln_graph   *g   = new_graph(ctx);
    kiln_tensor  *x   = new_input(g, "x", KILN_F32, KILN_SHAPE(2, 3, 4, 5));
    cr_assert_eq(kiln_tensor_ndim(x), 4);
    for (int d = 0; d < 4; d++)
        cr_assert_eq(kiln_tensor_dim(x, d), d + 2);
    cr_assert_eq(kiln_tensor_numel(x), 2 * 3 * 4 * 5);
    cr_assert_eq(kiln_tensor_nbytes(x), 2 * 3 * 4 * 5 * sizeof(float));
    cr_assert_eq(kiln_tensor_dtype(x), KILN_F32);
    cr_assert_str_eq(kiln_tensor_name(x), "x");
    kiln_tensor *n = new_input(g, "labels", KILN_I32, KILN_SHAPE(9));
    cr_assert_eq(kiln_tensor_ndim(n), 1);
    cr_assert_eq(kiln_tensor_numel(n), 9);
    cr_assert_eq(kiln_tensor_nbytes(n), 9 * sizeof(int32_t));
    cr_assert_eq(kiln_tensor_dtype(n), KILN_I32);
    kiln_graph_free(g);
    kiln_context_free(ctx);
}

Test(reshape, infers_one_minus_1)
{
    kiln_context *ctx = open_context();
    kiln_graph   *g   = new_graph(ctx);
    kiln_tensor  *x   = new_input(g, "x", KILN_F32, KILN_SHAPE(6, 4));
    kiln_tensor  *a   = kiln_reshape(g, x, KILN_SHAPE(-1, 8));
    kiln_tensor  *b   = kiln_reshape(g, x, KILN_SHAPE(2, -1, 2));
    kiln_tensor  *c   = kiln_reshape(g, x, KILN_SHAPE(-1));
    cr_assert_eq(kiln_graph_status(g), KILN_OK, "%s", graph_error(g));
    cr_assert_eq(kiln_tensor_ndim(a), 2);
    cr_assert_eq(kiln_tensor_dim(a, 0), 3);
    cr_assert_eq(kiln_tensor_dim(a, 1), 8);
    cr_assert_eq(kiln_tensor_ndim(b), 3);
    cr_assert_eq(kiln_tensor_dim(b, 1), 6);
    cr_assert_eq(kiln_tensor_ndim(c), 1);
    cr_assert_eq(kiln_tensor_dim(c, 0), 24);
    kiln_graph_free(g);
    kiln_context_free(ctx);
}

Test(reshape, numel_mismatch_is_an_error_naming_both_shapes)
{
    kiln_context *ctx = open_context();
    kiln_graph   *g   = new_graph(ctx);
    kiln_tensor  *x   = new_input(g, "x", KILN_F32, KILN_SHAPE(6, 4));
    cr_assert_not_null(kiln_reshape(g, x, KILN_SHAPE(5, 5)));
    cr_assert_eq(kiln_graph_status(g), KILN_ERR_SHAPE, "status %s",
                 kiln_status_name(kiln_graph_status(g)));
    expect_graph_error(g, "reshape", "[6, 4]", "[5, 5]");
    expect_status(kiln_graph_compile(g), KILN_ERR_SHAPE, "compile after a bad reshape");
    kiln_graph_free(g);

    /* -1 that cannot be inferred: 24 is not a multiple of 5, or two of them */
    g = new_graph(ctx);
    x = new_input(g, "x", KILN_F32, KILN_SHAPE(6, 4));
    cr_assert_not_null(kiln_reshape(g, x, KILN_SHAPE(-1, 5)));
    cr_assert_neq(kiln_graph_status(g), KILN_OK, "reshape of [6, 4] to [-1, 5] passed");
    expect_graph_error(g, "reshape", "[6, 4]", NULL);
    kiln_graph_free(g);

    g = new_graph(ctx);
    x = new_input(g, "x", KILN_F32, KILN_SHAPE(6, 4));
    cr_assert_not_null(kiln_reshape(g, x, KILN_SHAPE(-1, -1)));
    cr_assert_neq(kiln_graph_status(g), KILN_OK, "reshape to [-1, -1] passed");
    kiln_graph_free(g);
    kiln_context_free(ctx);
}

Test(status, every_code_has_its_enum_name)
{
    static const struct {
        kiln_status status;
        const char *name;
    } codes[] = {
        {KILN_OK, "KILN_OK"},
        {KILN_ERR_INVALID_ARG, "KILN_ERR_INVALID_ARG"},
        {KILN_ERR_SHAPE, "KILN_ERR_SHAPE"},
        {KILN_ERR_STATE, "KILN_ERR_STATE"},
        {KILN_ERR_NO_MEMORY, "KILN_ERR_NO_MEMORY"},
        {KILN_ERR_BACKEND, "KILN_ERR_BACKEND"},
        {KILN_ERR_NOT_FOUND, "KILN_ERR_NOT_FOUND"},
        {KILN_ERR_IO, "KILN_ERR_IO"},
    };
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++)
        cr_assert_str_eq(kiln_status_name(codes[i].status), codes[i].name);
}

/* ---- independence of contexts ------------------------------------------------ */

/* Each thread builds and runs y = sum(x * k) with its own context and graph;
 * x is 1..n, so y is k * n(n+1)/2, which each thread checks itself. */
typedef struct thread_job {
    const char *spec;
    float       k;
    int         n, runs;
    char        failure[256];
} thread_job;

static void *run_job(void *arg)
{
    thread_job   *job = arg;
    kiln_context *ctx = kiln_context_new_for(job->spec);
    kiln_graph   *g   = ctx ? kiln_graph_new(ctx) : NULL;
    kiln_tensor  *x   = kiln_input(g, "x", KILN_F32, KILN_SHAPE(job->n));
    kiln_tensor  *y   = kiln_sum(g, kiln_scale(g, x, job->k));
    float        *xs  = malloc((size_t)job->n * sizeof *xs);
    if (!g || !xs || kiln_graph_compile(g) != KILN_OK) {
        snprintf(job->failure, sizeof job->failure, "setup: %s", kiln_last_error());
        goto out;
    }
    for (int i = 0; i < job->n; i++)
        xs[i] = (float)(i + 1);
    for (int r = 0; r < job->runs; r++) {
        float got;
        if (kiln_tensor_write(x, xs, (size_t)job->n * sizeof *xs) != KILN_OK ||
            kiln_graph_run(g) != KILN_OK ||
            kiln_tensor_read(y, &got, sizeof got) != KILN_OK) {
            snprintf(job->failure, sizeof job->failure, "run %d: %s", r,
                     kiln_last_error());
            break;
        }
        double want = job->k * job->n * (job->n + 1) / 2.0;
        if (fabs(got - want) > 1e-5 * fabs(want)) {
            snprintf(job->failure, sizeof job->failure, "run %d: got %g, want %g", r, got,
                     want);
            break;
        }
    }
out:
    free(xs);
    kiln_graph_free(g);
    kiln_context_free(ctx);
    return NULL;
}

Test(context, two_contexts_on_two_threads_run_independently)
{
    thread_job jobs[2] = {
        {.spec = test_first_spec(), .k = 2.0f, .n = 1000, .runs = 200},
        {.spec = test_first_spec(), .k = -3.0f, .n = 777, .runs = 200},
    };
    pthread_t threads[2];
    for (int i = 0; i < 2; i++)
        cr_assert_eq(pthread_create(&threads[i], NULL, run_job, &jobs[i]), 0);
    for (int i = 0; i < 2; i++)
        cr_assert_eq(pthread_join(threads[i], NULL), 0);
    for (int i = 0; i < 2; i++)
        cr_assert_eq(jobs[i].failure[0], '\0', "thread %d: %s", i, jobs[i].failure);
}

/* ---- the CPU fallback ---------------------------------------------------------- */

/* logits = conv -> pool -> flatten -> matmul; loss = cross_entropy. Built the
 * same way twice; inputs are a fixed pattern. */
static kiln_graph *small_cnn(kiln_context *ctx, kiln_tensor **logits, kiln_tensor **loss)
{
    kiln_graph  *g = new_graph(ctx);
    static float xs[72], ws[4 * 9], fs[4 * 4 * 5];
    for (int i = 0; i < 72; i++)
        xs[i] = (float)((i * 37) % 11) / 5.0f - 1.0f;
    for (int i = 0; i < 36; i++)
        ws[i] = (float)((i * 13) % 7) / 7.0f - 0.5f;
    for (int i = 0; i < 80; i++)
        fs[i] = (float)((i * 29) % 9) / 9.0f - 0.4f;
    int32_t      ys[2] = {3, 1};
    kiln_tensor *in    = kiln_const(g, KILN_F32, KILN_SHAPE(2, 1, 6, 6), xs);
    kiln_tensor *w     = kiln_const(g, KILN_F32, KILN_SHAPE(4, 1, 3, 3), ws);
    kiln_tensor *f     = kiln_const(g, KILN_F32, KILN_SHAPE(16, 5), fs);
    kiln_tensor *lab   = kiln_const(g, KILN_I32, KILN_SHAPE(2), ys);
    kiln_tensor *h     = kiln_relu(g, kiln_conv2d(g, in, w, NULL, 1, 1));
    kiln_tensor *p     = kiln_flatten(g, kiln_max_pool2d(g, h, 3, 3));
    *logits            = kiln_softmax(g, kiln_matmul(g, p, f));
    *loss              = kiln_cross_entropy(g, kiln_matmul(g, p, f), lab);
    expect_ok(kiln_output(g, *logits), "kiln_output");
    expect_ok(kiln_graph_compile(g), "compile");
    expect_ok(kiln_graph_run(g), "run");
    return g;
}

Test(fallback, refused_ops_run_on_the_cpu_backend_with_equal_results)
{
    kiln_context *ctx = open_context();
    kiln_tensor  *logits0, *loss0, *logits1, *loss1;
    kiln_graph   *g0 = small_cnn(ctx, &logits0, &loss0);
    cr_assert_eq(setenv("KILN_DEBUG_REFUSE", "matmul,conv2d,softmax,cross_entropy", 1),
                 0);
    kiln_graph *g1 = small_cnn(ctx, &logits1, &loss1);
    unsetenv("KILN_DEBUG_REFUSE");
    float a[10], b[10], la, lb;
    expect_ok(kiln_tensor_read(logits0, a, sizeof a), "read");
    expect_ok(kiln_tensor_read(logits1, b, sizeof b), "read");
    expect_ok(kiln_tensor_read(loss0, &la, sizeof la), "read");
    expect_ok(kiln_tensor_read(loss1, &lb, sizeof lb), "read");
    for (int i = 0; i < 10; i++)
        cr_assert_float_eq(a[i], b[i], 1e-6f, "logits[%d]: %g with fallback, %g without",
                           i, b[i], a[i]);
    cr_assert_float_eq(la, lb, 1e-6f, "loss %g with fallback, %g without", lb, la);
    cr_assert(isfinite(la) && la > 0.0f, "loss %g", la);
    kiln_graph_free(g0);
    kiln_graph_free(g1);
    kiln_context_free(ctx);
}

/* ---- profiling ------------------------------------------------------------------ */

/* x [4, 3] @ w [3, 5], relu: two ops, each run three times. */
static kiln_graph *profiled_graph(kiln_context *ctx, kiln_tensor **out)
{
    kiln_graph  *g = kiln_graph_new(ctx);
    kiln_tensor *x = kiln_input(g, "x", KILN_F32, KILN_SHAPE(4, 3));
    kiln_tensor *w = kiln_param(g, "w", KILN_SHAPE(3, 5));
    *out           = kiln_relu(g, kiln_matmul(g, x, w));
    cr_assert_eq(kiln_graph_compile(g), KILN_OK, "%s", kiln_graph_error(g));
    float v[15] = {0};
    cr_assert_eq(kiln_tensor_write(x, v, 12 * sizeof *v), KILN_OK);
    cr_assert_eq(kiln_tensor_write(w, v, 15 * sizeof *v), KILN_OK);
    return g;
}

Test(graph, a_profile_has_a_row_per_op_and_shape_with_its_calls)
{
    setenv("KILN_PROFILE", "1", 1);
    kiln_context *ctx = test_context(test_first_spec());
    kiln_tensor  *y;
    kiln_graph   *g = profiled_graph(ctx, &y);
    for (int r = 0; r < 3; r++)
        cr_assert_eq(kiln_graph_run(g), KILN_OK, "%s", kiln_last_error());
    char text[4096];
    cr_assert_eq(kiln_graph_profile(g, text, sizeof text), KILN_OK, "%s",
                 kiln_last_error());
    cr_assert(strstr(text, "3 runs on "), "%s", text);
    const char *rows[] = {"matmul [4, 5]", "relu [4, 5]"};
    for (int i = 0; i < 2; i++) {
        const char *row = strstr(text, rows[i]);
        cr_assert_not_null(row, "no row \"%s\" in:\n%s", rows[i], text);
        /* the calls are on the row's own line, before its name */
        const char *line = row;
        while (line > text && line[-1] != '\n')
            line--;
        cr_assert(strstr(line, "       3 calls  ") &&
                      strstr(line, "       3 calls  ") < row,
                  "%s", text);
    }
    /* a buffer too small for the table gets its start, still terminated */
    char small[16];
    cr_assert_eq(kiln_graph_profile(g, small, sizeof small), KILN_OK);
    cr_assert_eq(strlen(small), sizeof small - 1);
    kiln_graph_free(g);
    kiln_context_free(ctx);
}

Test(graph, a_profile_needs_kiln_profile_at_compile)
{
    unsetenv("KILN_PROFILE");
    kiln_context *ctx = test_context(test_first_spec());
    kiln_tensor  *y;
    kiln_graph   *g = profiled_graph(ctx, &y);
    cr_assert_eq(kiln_graph_run(g), KILN_OK, "%s", kiln_last_error());
    char text[256];
    cr_assert_eq(kiln_graph_profile(g, text, sizeof text), KILN_ERR_STATE);
    cr_assert(strstr(kiln_last_error(), "set KILN_PROFILE=1 before kiln_graph_compile"),
              "%s", kiln_last_error());
    cr_assert_eq(kiln_graph_profile(NULL, text, sizeof text), KILN_ERR_INVALID_ARG);
    kiln_graph_free(g);
    kiln_context_free(ctx);
}
