/* tests/test_autodiff.c — gradients and optimiser steps on every usable device.
 *
 * Gradients are checked against finite differences of kiln's own forward
 * pass: each case makes its operands parameters, reduces the op's output to
 * a loss sum(y * r) with a random r (so that the gradient arriving at the op
 * is not uniform), runs the graph once for the analytic gradients, and then
 * evaluates the loss (kiln_graph_eval, which neither runs the gradient nodes
 * nor steps) with one parameter element moved at a time. The difference
 * quotient is the fourth-order central one, (8 (L(+h) - L(-h)) - (L(+2h) -
 * L(-2h))) / 12h, with h a power of two so that x +- h is exact in f32. At
 * h = 1/32 its truncation error (h^4 / 30 times the fifth derivative) and the
 * f32 rounding of L (about 10 ulp(L) / h) stay near 2e-4 on the CPU backend,
 * ten times below the tolerance, while a wrong rule is off by far more. Data
 * stays clear of kinks (relu at 0, ties of max and max_pool) by more than 2h.
 *
 * Optimiser steps are checked against PyTorch's update formulas, written out
 * here in double in torch.optim's own order of operations.
 */
#include "backends.h"
#include "reference.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FD_STEP (1.0 / 32.0)

/* |analytic - numeric| <= FD_ABS + FD_REL * |numeric| */
#define FD_ABS 2e-3
#define FD_REL 1e-2

static ref_shape shape_of(int ndim, const int64_t *dims)
{
    return ref_shape_of(ndim, dims);
}

/* ---- a gradient check ------------------------------------------------------ */

typedef enum fill_kind {
    FILL_ANY,      /* [-2, 2]                                               */
    FILL_POSITIVE, /* [0.5, 2]: log, sqrt                                   */
    FILL_NONZERO,  /* |x| in [0.5, 2]: divisors, relu away from its kink    */
    FILL_DISTINCT, /* all different, 0.1 apart: max and max_pool, no ties   */
} fill_kind;

typedef struct leaf {
    const char  *name;
    kiln_tensor *t;
    size_t       n;
    float       *f;
    int32_t     *labels; /* i32 inputs only */
} leaf;

#define MAX_LEAVES 6

typedef struct gcheck {
    const char  *spec;
    kiln_graph  *g;
    char         label[256];
    uint64_t     seed;
    int          n_params, n_inputs;
    leaf         params[MAX_LEAVES];
    leaf         inputs[MAX_LEAVES];
    kiln_tensor *loss;
} gcheck;

__attribute__((format(printf, 4, 5))) static void
gc_begin(gcheck *gc, kiln_context *ctx, const char *spec, const char *fmt, ...)
{
    memset(gc, 0, sizeof *gc);
    gc->spec = spec;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(gc->label, sizeof gc->label, fmt, ap);
    va_end(ap);
    gc->seed = ref_hash_str(gc->label);
    gc->g    = kiln_graph_new(ctx);
    cr_assert_not_null(gc->g, "%s: kiln_graph_new: %s", gc->label, kiln_last_error());
}

static void fill(float *x, size_t n, fill_kind kind, uint64_t seed)
{
    switch (kind) {
    case FILL_ANY: ref_fill(x, n, seed); break;
    case FILL_POSITIVE: ref_fill_uniform(x, n, seed, 0.5f, 2.0f); break;
    case FILL_NONZERO: ref_fill_nonzero(x, n, seed); break;
    case FILL_DISTINCT:
        /* i -> i * 7919 mod n is a permutation (7919 is a prime above n) */
        for (size_t i = 0; i < n; i++)
            x[i] = 0.1f * (float)((i * 7919u + seed % 7) % n) - 0.05f * (float)n;
        break;
    }
}

static leaf *gc_leaf(gcheck *gc, leaf *l, const char *name, kiln_tensor *t, ref_shape s)
{
    cr_assert_eq(kiln_graph_status(gc->g), KILN_OK, "%s: leaf %s %s: %s", gc->label, name,
                 ref_shape_text(s), kiln_graph_error(gc->g));
    l->name = name;
    l->t    = t;
    l->n    = ref_numel(s);
    l->f    = ref_calloc(l->n, sizeof *l->f);
    return l;
}

static kiln_tensor *gc_param(gcheck *gc, const char *name, ref_shape s, fill_kind kind)
{
    cr_assert(gc->n_params < MAX_LEAVES);
    leaf *l = gc_leaf(gc, &gc->params[gc->n_params++], name,
                      kiln_param(gc->g, name, s.ndim, s.dims), s);
    fill(l->f, l->n, kind, gc->seed + 31u * (uint64_t)gc->n_params);
    return l->t;
}

static kiln_tensor *gc_input(gcheck *gc, const char *name, ref_shape s, fill_kind kind)
{
    cr_assert(gc->n_inputs < MAX_LEAVES);
    leaf *l = gc_leaf(gc, &gc->inputs[gc->n_inputs++], name,
                      kiln_input(gc->g, name, KILN_F32, s.ndim, s.dims), s);
    fill(l->f, l->n, kind, gc->seed + 37u * (uint64_t)gc->n_inputs);
    return l->t;
}

static kiln_tensor *gc_labels(gcheck *gc, int64_t rows, int32_t classes)
{
    cr_assert(gc->n_inputs < MAX_LEAVES);
    ref_shape s = ref_shape_of(KILN_SHAPE(rows));
    leaf     *l = gc_leaf(gc, &gc->inputs[gc->n_inputs++], "labels",
                          kiln_input(gc->g, "labels", KILN_I32, 1, s.dims), s);
    l->labels   = ref_calloc(l->n, sizeof *l->labels);
    ref_fill_labels(l->labels, l->n, classes, gc->seed);
    return l->t;
}

/* An i32 input of any shape: `data` if given, else at random in
 * [0, classes). */
static kiln_tensor *gc_ids(gcheck *gc, const char *name, ref_shape s, int32_t classes,
                           const int32_t *data)
{
    cr_assert(gc->n_inputs < MAX_LEAVES);
    leaf *l   = gc_leaf(gc, &gc->inputs[gc->n_inputs++], name,
                        kiln_input(gc->g, name, KILN_I32, s.ndim, s.dims), s);
    l->labels = ref_calloc(l->n, sizeof *l->labels);
    if (data)
        memcpy(l->labels, data, l->n * sizeof *l->labels);
    else
        ref_fill_labels(l->labels, l->n, classes, gc->seed);
    return l->t;
}

static void write_leaf(const gcheck *gc, const leaf *l)
{
    const void *data = l->labels ? (const void *)l->labels : (const void *)l->f;
    kiln_status st   = kiln_tensor_write(l->t, data, l->n * 4);
    cr_assert_eq(st, KILN_OK, "%s on %s: writing %s: %s", gc->label, gc->spec, l->name,
                 kiln_last_error());
}

static float eval_loss(const gcheck *gc)
{
    kiln_status st = kiln_graph_eval(gc->g, gc->loss);
    cr_assert_eq(st, KILN_OK, "%s on %s: kiln_graph_eval: %s", gc->label, gc->spec,
                 kiln_last_error());
    float v;
    st = kiln_tensor_read(gc->loss, &v, sizeof v);
    cr_assert_eq(st, KILN_OK, "%s: reading the loss: %s", gc->label, kiln_last_error());
    return v;
}

/* The loss with element i of parameter p set to value. */
static double loss_with(const gcheck *gc, leaf *p, size_t i, double value)
{
    float saved = p->f[i];
    p->f[i]     = (float)value;
    write_leaf(gc, p);
    double loss = eval_loss(gc);
    p->f[i]     = saved;
    return loss;
}

static double numeric_grad(const gcheck *gc, leaf *p, size_t i)
{
    double x = p->f[i], h = FD_STEP;
    double d1 = loss_with(gc, p, i, x + h) - loss_with(gc, p, i, x - h);
    double d2 = loss_with(gc, p, i, x + 2 * h) - loss_with(gc, p, i, x - 2 * h);
    write_leaf(gc, p);
    return (8.0 * d1 - d2) / (12.0 * h);
}

static void check_param(const gcheck *gc, leaf *p)
{
    kiln_tensor *grad = kiln_grad(gc->g, p->t);
    cr_assert_not_null(grad, "%s on %s: kiln_grad(%s): %s", gc->label, gc->spec, p->name,
                       kiln_last_error());
    float      *analytic = ref_calloc(p->n, sizeof *analytic);
    kiln_status st       = kiln_tensor_read(grad, analytic, p->n * 4);
    cr_assert_eq(st, KILN_OK, "%s on %s: reading the gradient of %s: %s", gc->label,
                 gc->spec, p->name, kiln_last_error());
    for (size_t i = 0; i < p->n; i++) {
        double numeric = numeric_grad(gc, p, i);
        double err     = fabs((double)analytic[i] - numeric);
        cr_expect(err <= FD_ABS + FD_REL * fabs(numeric),
                  "%s on %s: d loss / d %s[%zu] is %.7g, finite differences give "
                  "%.7g (error %.3g)",
                  gc->label, gc->spec, p->name, i, (double)analytic[i], numeric, err);
    }
    free(analytic);
}

/* Reduces y to sum(y * r), differentiates, runs, and compares the gradient of
 * every parameter with finite differences. Frees everything. */
static void gc_check(gcheck *gc, kiln_tensor *y)
{
    kiln_graph *g = gc->g;
    cr_assert_eq(kiln_graph_status(g), KILN_OK, "%s: building failed: %s", gc->label,
                 kiln_graph_error(g));
    ref_shape sy = shape_of(0, NULL);
    sy.ndim      = kiln_tensor_ndim(y);
    for (int d = 0; d < sy.ndim; d++)
        sy.dims[d] = kiln_tensor_dim(y, d);
    float *r = ref_calloc(ref_numel(sy), sizeof *r);
    ref_fill(r, ref_numel(sy), gc->seed ^ 0x5eed);
    gc->loss = kiln_sum(g, kiln_mul(g, y, kiln_const(g, KILN_F32, sy.ndim, sy.dims, r)));
    free(r);
    cr_assert_eq(kiln_output(g, gc->loss), KILN_OK, "%s: %s", gc->label,
                 kiln_last_error());
    kiln_status st = kiln_backward(g, gc->loss);
    cr_assert_eq(st, KILN_OK, "%s on %s: kiln_backward: %s", gc->label, gc->spec,
                 kiln_last_error());
    st = kiln_graph_compile(g);
    cr_assert_eq(st, KILN_OK, "%s on %s: compile: %s", gc->label, gc->spec,
                 kiln_last_error());
    for (int k = 0; k < gc->n_inputs; k++)
        write_leaf(gc, &gc->inputs[k]);
    for (int k = 0; k < gc->n_params; k++)
        write_leaf(gc, &gc->params[k]);
    st = kiln_graph_run(g);
    cr_assert_eq(st, KILN_OK, "%s on %s: run: %s", gc->label, gc->spec,
                 kiln_last_error());
    for (int k = 0; k < gc->n_params; k++)
        check_param(gc, &gc->params[k]);
    kiln_graph_free(g);
    for (int k = 0; k < gc->n_params; k++)
        free(gc->params[k].f);
    for (int k = 0; k < gc->n_inputs; k++) {
        free(gc->inputs[k].f);
        free(gc->inputs[k].labels);
    }
}

/* ---- elementwise -------------------------------------------------------------- */

typedef kiln_tensor *(*binary_fn)(kiln_graph *, kiln_tensor *, kiln_tensor *);

static const struct {
    const char *name;
    binary_fn   fn;
} binary_ops[] = {
    {"add", kiln_add},
    {"sub", kiln_sub},
    {"mul", kiln_mul},
    {"div", kiln_div},
};

static void check_binary(kiln_context *ctx, const char *spec, int op, ref_shape sa,
                         ref_shape sb)
{
    gcheck gc;
    gc_begin(&gc, ctx, spec, "%s of a %s and b %s", binary_ops[op].name,
             ref_shape_text(sa), ref_shape_text(sb));
    kiln_tensor *a = gc_param(&gc, "a", sa, FILL_ANY);
    kiln_tensor *b = gc_param(&gc, "b", sb,
                              binary_ops[op].fn == kiln_div ? FILL_NONZERO : FILL_ANY);
    gc_check(&gc, binary_ops[op].fn(gc.g, a, b));
}

BACKEND_TEST(grad_binary, matches_finite_differences_with_equal_shapes)
{
    kiln_context *ctx = test_backend_context(backend);
    for (int op = 0; op < 4; op++)
        check_binary(ctx, backend->label, op, ref_shape_of(KILN_SHAPE(3, 4)),
                     ref_shape_of(KILN_SHAPE(3, 4)));
    kiln_context_free(ctx);
}

BACKEND_TEST(grad_binary, sums_the_gradient_of_a_broadcast_operand)
{
    static const ref_shape pairs[][2] = {
        {{2, {3, 4}}, {1, {4}}},       /* a bias                       */
        {{3, {2, 3, 4}}, {2, {1, 4}}}, /* [1, N] on a 3-D tensor       */
        {{3, {2, 3, 4}}, {2, {3, 4}}},
        {{3, {3, 5, 1}}, {2, {5, 1}}}, /* trailing 1s stay             */
        {{2, {3, 4}}, {0, {0}}},       /* a 0-d scalar                 */
        {{2, {3, 4}}, {2, {1, 1}}},    /* only 1s: a scalar too        */
        {{2, {1, 4}}, {1, {4}}},       /* each fits the other          */
    };
    kiln_context *ctx = test_backend_context(backend);
    for (int op = 0; op < 4; op++) {
        for (size_t p = 0; p < sizeof pairs / sizeof pairs[0]; p++) {
            check_binary(ctx, backend->label, op, pairs[p][0], pairs[p][1]);
            check_binary(ctx, backend->label, op, pairs[p][1], pairs[p][0]);
        }
    }
    kiln_context_free(ctx);
}

BACKEND_TEST(grad_unary, matches_finite_differences_for_every_op)
{
    static const struct {
        const char *name;
        kiln_tensor *(*fn)(kiln_graph *, kiln_tensor *);
        fill_kind fill;
    } ops[] = {
        {"neg", kiln_neg, FILL_ANY},       {"exp", kiln_exp, FILL_ANY},
        {"log", kiln_log, FILL_POSITIVE},  {"sqrt", kiln_sqrt, FILL_POSITIVE},
        {"relu", kiln_relu, FILL_NONZERO}, {"sigmoid", kiln_sigmoid, FILL_ANY},
        {"tanh", kiln_tanh, FILL_ANY},     {"scale -1.5", NULL, FILL_ANY},
        {"gelu", kiln_gelu, FILL_ANY},
    };
    kiln_context *ctx = test_backend_context(backend);
    for (size_t o = 0; o < sizeof ops / sizeof ops[0]; o++) {
        gcheck gc;
        gc_begin(&gc, ctx, backend->label, "%s of [3, 5]", ops[o].name);
        kiln_tensor *x = gc_param(&gc, "x", ref_shape_of(KILN_SHAPE(3, 5)), ops[o].fill);
        gc_check(&gc, ops[o].fn ? ops[o].fn(gc.g, x) : kiln_scale(gc.g, x, -1.5f));
    }
    kiln_context_free(ctx);
}

/* ---- matmul ------------------------------------------------------------------ */

BACKEND_TEST(grad_matmul, matches_finite_differences_for_every_transpose)
{
    enum { M = 3, K = 5, N = 4 };
    kiln_context *ctx = test_backend_context(backend);
    for (int ta = 0; ta <= 1; ta++) {
        for (int tb = 0; tb <= 1; tb++) {
            gcheck gc;
            gc_begin(&gc, ctx, backend->label, "matmul_t(a, b, %d, %d)", ta, tb);
            kiln_tensor *a = gc_param(&gc, "a",
                                      ta ? ref_shape_of(KILN_SHAPE(K, M))
                                         : ref_shape_of(KILN_SHAPE(M, K)),
                                      FILL_ANY);
            kiln_tensor *b = gc_param(&gc, "b",
                                      tb ? ref_shape_of(KILN_SHAPE(N, K))
                                         : ref_shape_of(KILN_SHAPE(K, N)),
                                      FILL_ANY);
            gc_check(&gc, kiln_matmul_t(gc.g, a, b, ta, tb));
        }
    }
    kiln_context_free(ctx);
}

BACKEND_TEST(grad_matmul, batched_matches_finite_differences_for_every_transpose)
{
    enum { M = 3, K = 4, N = 2 };
    kiln_context *ctx = test_backend_context(backend);
    for (int nb = 1; nb <= 2; nb++) {
        for (int t = 0; t < 4; t++) {
            bool      ta = t & 1, tb = t & 2;
            ref_shape sa = ref_shape_of(KILN_SHAPE(2, 2, ta ? K : M, ta ? M : K));
            ref_shape sb = ref_shape_of(KILN_SHAPE(2, 2, tb ? N : K, tb ? K : N));
            if (nb == 1) { /* [2, ...]: drop the first batch axis */
                sa = ref_shape_of(3, sa.dims + 1);
                sb = ref_shape_of(3, sb.dims + 1);
            }
            gcheck gc;
            gc_begin(&gc, ctx, backend->label, "batched (%d) matmul_t(a, b, %d, %d)", nb,
                     ta, tb);
            kiln_tensor *a = gc_param(&gc, "a", sa, FILL_ANY);
            kiln_tensor *b = gc_param(&gc, "b", sb, FILL_ANY);
            gc_check(&gc, kiln_matmul_t(gc.g, a, b, ta, tb));
        }
    }
    kiln_context_free(ctx);
}

/* ---- reductions ----------------------------------------------------------------- */

BACKEND_TEST(grad_reduce, sum_and_mean_over_everything)
{
    kiln_context *ctx = test_backend_context(backend);
    for (int mean = 0; mean <= 1; mean++) {
        gcheck gc;
        gc_begin(&gc, ctx, backend->label, "%s of [3, 4]", mean ? "mean" : "sum");
        kiln_tensor *x = gc_param(&gc, "x", ref_shape_of(KILN_SHAPE(3, 4)), FILL_ANY);
        gc_check(&gc, mean ? kiln_mean(gc.g, x) : kiln_sum(gc.g, x));
    }
    kiln_context_free(ctx);
}

BACKEND_TEST(grad_reduce, sum_and_mean_over_each_axis_with_and_without_keepdim)
{
    kiln_context *ctx = test_backend_context(backend);
    for (int mean = 0; mean <= 1; mean++) {
        for (int axis = -1; axis < 3; axis++) {
            for (int keep = 0; keep <= 1; keep++) {
                gcheck gc;
                gc_begin(&gc, ctx, backend->label, "%s_axis(%d, keepdim %d) of [2, 3, 4]",
                         mean ? "mean" : "sum", axis, keep);
                kiln_tensor *x = gc_param(&gc, "x", ref_shape_of(KILN_SHAPE(2, 3, 4)),
                                          FILL_ANY);
                gc_check(&gc, mean ? kiln_mean_axis(gc.g, x, axis, keep)
                                   : kiln_sum_axis(gc.g, x, axis, keep));
            }
        }
    }
    kiln_context_free(ctx);
}

BACKEND_TEST(grad_reduce, max_softmax_and_log_softmax_along_the_last_axis)
{
    kiln_context          *ctx      = test_backend_context(backend);
    static const ref_shape shapes[] = {{2, {3, 5}}, {1, {6}}, {3, {2, 2, 3}}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        gcheck gc;
        gc_begin(&gc, ctx, backend->label, "max of %s", ref_shape_text(shapes[s]));
        gc_check(&gc, kiln_max(gc.g, gc_param(&gc, "x", shapes[s], FILL_DISTINCT)));
        gc_begin(&gc, ctx, backend->label, "softmax of %s", ref_shape_text(shapes[s]));
        gc_check(&gc, kiln_softmax(gc.g, gc_param(&gc, "x", shapes[s], FILL_ANY)));
        gc_begin(&gc, ctx, backend->label, "log_softmax of %s",
                 ref_shape_text(shapes[s]));
        gc_check(&gc, kiln_log_softmax(gc.g, gc_param(&gc, "x", shapes[s], FILL_ANY)));
    }
    kiln_context_free(ctx);
}

/* x, weight and bias all parameters; x far from 0 once, where the
 * statistics must not lose precision; and without a bias. */
BACKEND_TEST(grad_layer_norm, x_weight_and_bias_match_finite_differences)
{
    static const ref_shape shapes[] = {{2, {3, 5}},
                                       {1, {7}},
                                       {3, {2, 3, 4}},
                                       {2, {2, 1}}};
    kiln_context          *ctx      = test_backend_context(backend);
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        ref_shape sc = ref_shape_of(KILN_SHAPE(shapes[s].dims[shapes[s].ndim - 1]));
        gcheck    gc;
        gc_begin(&gc, ctx, backend->label, "layer_norm of %s", ref_shape_text(shapes[s]));
        kiln_tensor *x = gc_param(&gc, "x", shapes[s], FILL_ANY);
        kiln_tensor *w = gc_param(&gc, "weight", sc, FILL_ANY);
        kiln_tensor *b = gc_param(&gc, "bias", sc, FILL_ANY);
        gc_check(&gc, kiln_layer_norm(gc.g, x, w, b, 1e-5f));
        gc_begin(&gc, ctx, backend->label, "layer_norm of %s, no bias",
                 ref_shape_text(shapes[s]));
        x = gc_param(&gc, "x", shapes[s], FILL_POSITIVE);
        w = gc_param(&gc, "weight", sc, FILL_ANY);
        gc_check(&gc, kiln_layer_norm(gc.g, x, w, NULL, 0.25f));
    }
    kiln_context_free(ctx);
}

/* layer_norm feeding gelu feeding a matmul, as a transformer's MLP block. */
BACKEND_TEST(grad_layer_norm, chained_with_gelu_and_matmul)
{
    kiln_context *ctx = test_backend_context(backend);
    gcheck        gc;
    gc_begin(&gc, ctx, backend->label, "gelu(layer_norm(x) @ w)");
    kiln_tensor *x  = gc_param(&gc, "x", ref_shape_of(KILN_SHAPE(4, 6)), FILL_ANY);
    kiln_tensor *lw = gc_param(&gc, "ln.weight", ref_shape_of(KILN_SHAPE(6)), FILL_ANY);
    kiln_tensor *lb = gc_param(&gc, "ln.bias", ref_shape_of(KILN_SHAPE(6)), FILL_ANY);
    kiln_tensor *w  = gc_param(&gc, "w", ref_shape_of(KILN_SHAPE(6, 5)), FILL_ANY);
    kiln_tensor *h  = kiln_layer_norm(gc.g, x, lw, lb, 1e-5f);
    gc_check(&gc, kiln_gelu(gc.g, kiln_matmul(gc.g, h, w)));
    kiln_context_free(ctx);
}

/* loss = sum(op(x) * c); returns d loss / dx (n elements) read after a run. */
static void tie_grad(const test_backend *backend,
                     kiln_tensor *(*op)(kiln_graph *, kiln_tensor *), ref_shape sx,
                     const float *xs, ref_shape sc, const float *cs, float *got)
{
    kiln_context *ctx  = test_backend_context(backend);
    kiln_graph   *g    = kiln_graph_new(ctx);
    kiln_tensor  *x    = kiln_param(g, "x", sx.ndim, sx.dims);
    kiln_tensor  *c    = kiln_const(g, KILN_F32, sc.ndim, sc.dims, cs);
    kiln_tensor  *loss = kiln_sum(g, kiln_mul(g, op(g, x), c));
    cr_assert_eq(kiln_backward(g, loss), KILN_OK, "%s", kiln_last_error());
    kiln_tensor *dx = kiln_grad(g, x);
    cr_assert_eq(kiln_graph_compile(g), KILN_OK, "%s", kiln_last_error());
    cr_assert_eq(kiln_tensor_write(x, xs, ref_numel(sx) * 4), KILN_OK);
    cr_assert_eq(kiln_graph_run(g), KILN_OK, "%s", kiln_last_error());
    cr_assert_eq(kiln_tensor_read(dx, got, ref_numel(sx) * 4), KILN_OK);
    kiln_graph_free(g);
    kiln_context_free(ctx);
}

static kiln_tensor *pool_2x2_stride_1(kiln_graph *g, kiln_tensor *x)
{
    return kiln_max_pool2d(g, x, 2, 1);
}

static void expect_exact(const char *what, const char *spec, const float *got,
                         const float *want, size_t n)
{
    char label[256];
    snprintf(label, sizeof label, "%s on %s: d/dx", what, spec);
    ref_expect_close(label, got, want, ref_shape_of(KILN_SHAPE((int64_t)n)),
                     (ref_tol){0.0, 0.0});
}

BACKEND_TEST(grad_reduce, max_and_max_pool2d_send_the_gradient_to_the_first_maximum)
{
    /* rows: a tie of two, all equal, NaNs (the first NaN is the maximum) */
    const float xs[12]   = {1, 3, 3, 2, 5, 5, 5, 5, 1, NAN, 3, NAN};
    const float cs[3]    = {2, -1, 4};
    const float want[12] = {0, 2, 0, 0, -1, 0, 0, 0, 0, 4, 0, 0};
    float       got[12];
    tie_grad(backend, kiln_max, ref_shape_of(KILN_SHAPE(3, 4)), xs,
             ref_shape_of(KILN_SHAPE(3)), cs, got);
    expect_exact("max with ties", backend->label, got, want, 12);

    /* 2x2 windows, stride 1, over a 3x3 image of 2s: every window ties; the
     * first maximum of windows (0,0) and (0,1) is the same pixel, whose
     * gradient is then the sum of both */
    const float img[9]   = {1, 2, 2, 2, 2, 1, 0, 2, 2};
    const float pc[4]    = {1, 10, 100, 1000};
    const float pwant[9] = {0, 11, 0, 100, 1000, 0, 0, 0, 0};
    float       pgot[9];
    tie_grad(backend, pool_2x2_stride_1, ref_shape_of(KILN_SHAPE(1, 1, 3, 3)), img,
             ref_shape_of(KILN_SHAPE(1, 1, 2, 2)), pc, pgot);
    expect_exact("max_pool2d with ties", backend->label, pgot, pwant, 9);
}

/* ---- shapes ------------------------------------------------------------------- */

BACKEND_TEST(grad_shape, reshape_flatten_and_transpose)
{
    kiln_context *ctx = test_backend_context(backend);
    gcheck        gc;
    gc_begin(&gc, ctx, backend->label, "reshape [3, 4] to [2, 6], then exp");
    kiln_tensor *x = gc_param(&gc, "x", ref_shape_of(KILN_SHAPE(3, 4)), FILL_ANY);
    gc_check(&gc, kiln_exp(gc.g, kiln_reshape(gc.g, x, KILN_SHAPE(2, -1))));

    gc_begin(&gc, ctx, backend->label, "flatten [2, 3, 2, 2], then matmul");
    x              = gc_param(&gc, "x", ref_shape_of(KILN_SHAPE(2, 3, 2, 2)), FILL_ANY);
    kiln_tensor *w = gc_param(&gc, "w", ref_shape_of(KILN_SHAPE(12, 3)), FILL_ANY);
    gc_check(&gc, kiln_matmul(gc.g, kiln_flatten(gc.g, x), w));

    gc_begin(&gc, ctx, backend->label, "transpose [3, 5], then times a [5, 3] input");
    x              = gc_param(&gc, "x", ref_shape_of(KILN_SHAPE(3, 5)), FILL_ANY);
    kiln_tensor *c = gc_input(&gc, "c", ref_shape_of(KILN_SHAPE(5, 3)), FILL_ANY);
    gc_check(&gc, kiln_mul(gc.g, kiln_transpose(gc.g, x), c));
    kiln_context_free(ctx);
}

BACKEND_TEST(grad_shape, permute_sends_the_gradient_back_through_the_inverse_order)
{
    static const int perms[][4] = {{0, 2, 1, 3}, {3, 1, 0, 2}, {1, 2, 3, 0}};
    kiln_context    *ctx        = test_backend_context(backend);
    for (size_t p = 0; p < sizeof perms / sizeof perms[0]; p++) {
        gcheck gc;
        gc_begin(&gc, ctx, backend->label, "permute {%d,%d,%d,%d} of [2, 3, 2, 4]",
                 perms[p][0], perms[p][1], perms[p][2], perms[p][3]);
        kiln_tensor *x = gc_param(&gc, "x", ref_shape_of(KILN_SHAPE(2, 3, 2, 4)),
                                  FILL_ANY);
        gc_check(&gc, kiln_tanh(gc.g, kiln_permute(gc.g, x, perms[p])));
    }
    gcheck gc;
    gc_begin(&gc, ctx, backend->label, "permute {2,0,1} of [3, 2, 5], then matmul");
    kiln_tensor *x = gc_param(&gc, "x", ref_shape_of(KILN_SHAPE(3, 2, 5)), FILL_ANY);
    kiln_tensor *w = gc_param(&gc, "w", ref_shape_of(KILN_SHAPE(5, 2, 4)), FILL_ANY);
    gc_check(&gc, kiln_matmul(gc.g, kiln_permute(gc.g, x, (const int[]){2, 0, 1}), w));
    kiln_context_free(ctx);
}

BACKEND_TEST(grad_shape, slice_puts_the_gradient_in_its_window_and_zeros_elsewhere)
{
    kiln_context *ctx = test_backend_context(backend);
    for (int axis = 0; axis < 3; axis++) {
        gcheck gc;
        gc_begin(&gc, ctx, backend->label, "slice of [3, 4, 5] along %d from 1 for 2",
                 axis);
        kiln_tensor *x = gc_param(&gc, "x", ref_shape_of(KILN_SHAPE(3, 4, 5)), FILL_ANY);
        gc_check(&gc, kiln_tanh(gc.g, kiln_slice(gc.g, x, axis, 1, 2)));
    }
    /* attention's split: q, k and v from one [B, T, 3C], each used */
    gcheck gc;
    gc_begin(&gc, ctx, backend->label, "q * k + v of a fused [2, 3, 3 * 4]");
    kiln_tensor *qkv = gc_param(&gc, "qkv", ref_shape_of(KILN_SHAPE(2, 3, 12)), FILL_ANY);
    kiln_tensor *q   = kiln_slice(gc.g, qkv, -1, 0, 4);
    kiln_tensor *k   = kiln_slice(gc.g, qkv, -1, 4, 4);
    kiln_tensor *v   = kiln_slice(gc.g, qkv, -1, 8, 4);
    gc_check(&gc, kiln_add(gc.g, kiln_mul(gc.g, q, k), v));
    kiln_context_free(ctx);
}

/* ---- convolution and pooling ---------------------------------------------------- */

BACKEND_TEST(grad_conv2d, data_weights_and_bias_match_finite_differences)
{
    static const struct {
        int64_t n, c, h, w, o, kh, kw;
        int     stride, padding;
        bool    bias;
    } cases[] = {
        {2, 3, 6, 5, 4, 3, 3, 2, 1, true}, /* stride 2, padding 1, bias     */
        {1, 2, 5, 5, 3, 3, 3, 1, 0, false},
        {2, 1, 4, 6, 2, 2, 3, 1, 2, true}, /* non-square, windows of padding */
        {1, 2, 7, 7, 2, 3, 3, 3, 1, true}, /* stride 3: pixels no window sees */
    };
    kiln_context *ctx = test_backend_context(backend);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        gcheck gc;
        gc_begin(&gc, ctx, backend->label,
                 "conv2d x [%lld, %lld, %lld, %lld], w [%lld, "
                 "%lld, %lld, %lld], stride %d, padding %d%s",
                 (long long)cases[i].n, (long long)cases[i].c, (long long)cases[i].h,
                 (long long)cases[i].w, (long long)cases[i].o, (long long)cases[i].c,
                 (long long)cases[i].kh, (long long)cases[i].kw, cases[i].stride,
                 cases[i].padding, cases[i].bias ? ", bias" : "");
        kiln_tensor *x = gc_param(&gc, "x",
                                  ref_shape_of(KILN_SHAPE(cases[i].n, cases[i].c,
                                                          cases[i].h, cases[i].w)),
                                  FILL_ANY);
        kiln_tensor *w = gc_param(&gc, "w",
                                  ref_shape_of(KILN_SHAPE(cases[i].o, cases[i].c,
                                                          cases[i].kh, cases[i].kw)),
                                  FILL_ANY);
        kiln_tensor *b = cases[i].bias
                             ? gc_param(&gc, "bias", ref_shape_of(KILN_SHAPE(cases[i].o)),
                                        FILL_ANY)
                             : NULL;
        gc_check(&gc, kiln_conv2d(gc.g, x, w, b, cases[i].stride, cases[i].padding));
    }
    kiln_context_free(ctx);
}

BACKEND_TEST(grad_max_pool2d, routes_to_the_maximum_and_adds_up_where_windows_overlap)
{
    static const struct {
        ref_shape x;
        int       kernel, stride;
    } cases[] = {
        {{4, {2, 2, 6, 6}}, 2, 2},
        {{4, {1, 2, 5, 7}}, 2, 2}, /* a row and columns no window covers */
        {{4, {1, 2, 5, 5}}, 3, 1}, /* overlapping windows               */
        {{4, {1, 1, 6, 6}}, 2, 1},
    };
    kiln_context *ctx = test_backend_context(backend);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        gcheck gc;
        gc_begin(&gc, ctx, backend->label, "max_pool2d of %s, kernel %d, stride %d",
                 ref_shape_text(cases[i].x), cases[i].kernel, cases[i].stride);
        kiln_tensor *x = gc_param(&gc, "x", cases[i].x, FILL_DISTINCT);
        gc_check(&gc, kiln_max_pool2d(gc.g, x, cases[i].kernel, cases[i].stride));
    }
    kiln_context_free(ctx);
}

/* ---- losses ------------------------------------------------------------------------- */

BACKEND_TEST(grad_loss, mse_loss_for_prediction_and_target)
{
    kiln_context *ctx = test_backend_context(backend);
    gcheck        gc;
    gc_begin(&gc, ctx, backend->label, "mse_loss of [4, 3]");
    kiln_tensor *p = gc_param(&gc, "pred", ref_shape_of(KILN_SHAPE(4, 3)), FILL_ANY);
    kiln_tensor *t = gc_param(&gc, "target", ref_shape_of(KILN_SHAPE(4, 3)), FILL_ANY);
    gc_check(&gc, kiln_mse_loss(gc.g, p, t));
    kiln_context_free(ctx);
}

BACKEND_TEST(grad_loss, cross_entropy_for_the_logits)
{
    kiln_context        *ctx        = test_backend_context(backend);
    static const int64_t sizes[][2] = {{5, 4}, {1, 3}, {6, 1}};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        gcheck gc;
        gc_begin(&gc, ctx, backend->label, "cross_entropy of N=%lld C=%lld",
                 (long long)sizes[i][0], (long long)sizes[i][1]);
        kiln_tensor *logits = gc_param(&gc, "logits",
                                       ref_shape_of(KILN_SHAPE(sizes[i][0], sizes[i][1])),
                                       FILL_ANY);
        kiln_tensor *labels = gc_labels(&gc, sizes[i][0], (int32_t)sizes[i][1]);
        gc_check(&gc, kiln_cross_entropy(gc.g, logits, labels));
    }
    kiln_context_free(ctx);
}

BACKEND_TEST(grad_loss, cross_entropy_over_the_last_axis_of_3d_logits)
{
    kiln_context          *ctx      = test_backend_context(backend);
    static const ref_shape shapes[] = {{3, {2, 3, 4}}, {3, {1, 5, 3}}, {3, {2, 1, 1}}};
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        gcheck    gc;
        ref_shape sy = shapes[i];
        sy.ndim--;
        gc_begin(&gc, ctx, backend->label, "cross_entropy of logits %s",
                 ref_shape_text(shapes[i]));
        kiln_tensor *logits = gc_param(&gc, "logits", shapes[i], FILL_ANY);
        kiln_tensor *labels = gc_ids(&gc, "labels", sy, (int32_t)shapes[i].dims[2], NULL);
        gc_check(&gc, kiln_cross_entropy(gc.g, logits, labels));
    }
    kiln_context_free(ctx);
}

/* ---- transformers ---------------------------------------------------------------------- */

/* Ids repeat, so the table's gradient adds rows up, and id 2 is absent, so
 * its row's gradient is 0. */
BACKEND_TEST(grad_embedding, adds_up_the_gradient_of_every_position_of_an_id)
{
    static const int32_t ids[] = {1, 3, 1, 1, 0, 3, 1, 4};
    kiln_context        *ctx   = test_backend_context(backend);
    gcheck               gc;
    gc_begin(&gc, ctx, backend->label, "embedding of a [5, 3] table by ids [2, 4]");
    kiln_tensor *table = gc_param(&gc, "table", ref_shape_of(KILN_SHAPE(5, 3)), FILL_ANY);
    kiln_tensor *id    = gc_ids(&gc, "ids", ref_shape_of(KILN_SHAPE(2, 4)), 5, ids);
    gc_check(&gc, kiln_embedding(gc.g, table, id));
    gc_begin(&gc, ctx, backend->label, "embedding of a [4, 1] table by ids [8]");
    table = gc_param(&gc, "table", ref_shape_of(KILN_SHAPE(4, 1)), FILL_ANY);
    id    = gc_ids(&gc, "ids", ref_shape_of(KILN_SHAPE(8)), 4,
                   (const int32_t[]){3, 3, 3, 0, 1, 3, 0, 3});
    gc_check(&gc, kiln_embedding(gc.g, table, id));
    kiln_context_free(ctx);
}

BACKEND_TEST(grad_causal_softmax, matches_finite_differences_with_a_scale)
{
    static const struct {
        ref_shape s;
        float     scale;
    } cases[] = {
        {{2, {3, 3}}, 1.0f},
        {{3, {2, 4, 4}}, 0.5f},
        {{4, {1, 2, 3, 3}}, 2.0f},
        {{2, {1, 1}}, 1.0f},
    };
    kiln_context *ctx = test_backend_context(backend);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        gcheck gc;
        gc_begin(&gc, ctx, backend->label, "causal_softmax of %s, scale %g",
                 ref_shape_text(cases[i].s), (double)cases[i].scale);
        kiln_tensor *x = gc_param(&gc, "x", cases[i].s, FILL_ANY);
        gc_check(&gc, kiln_causal_softmax(gc.g, x, cases[i].scale));
    }
    kiln_context_free(ctx);
}

BACKEND_TEST(grad_causal_softmax, with_an_offset_matches_finite_differences)
{
    static const struct {
        ref_shape s;
        int32_t   offset;
    } cases[] = {
        {{3, {2, 3, 5}}, 1},
        {{3, {1, 1, 4}}, 2},
        {{3, {2, 2, 3}}, -1}, /* the first row keeps nothing */
        {{3, {1, 2, 3}}, 9},  /* every column kept */
    };
    kiln_context *ctx = test_backend_context(backend);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        gcheck gc;
        gc_begin(&gc, ctx, backend->label, "causal_softmax of %s, offset %d",
                 ref_shape_text(cases[i].s), (int)cases[i].offset);
        kiln_tensor *x = gc_param(&gc, "x", cases[i].s, FILL_ANY);
        kiln_tensor *o = kiln_const(gc.g, KILN_I32, KILN_SHAPE(1), &cases[i].offset);
        gc_check(&gc, kiln_causal_softmax_offset(gc.g, x, 0.5f, o));
    }
    kiln_context_free(ctx);
}

BACKEND_TEST(grad_causal_attention, matches_finite_differences)
{
    static const struct {
        int64_t B, T, C;
        int     H;
    } cases[]         = {{1, 3, 2, 1}, {2, 4, 4, 2}, {1, 35, 2, 1}, {1, 2, 6, 3}};
    kiln_context *ctx = test_backend_context(backend);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        gcheck    gc;
        ref_shape s = ref_shape_of(KILN_SHAPE(cases[i].B, cases[i].T, 3 * cases[i].C));
        gc_begin(&gc, ctx, backend->label, "causal_attention of %s, %d heads",
                 ref_shape_text(s), cases[i].H);
        kiln_tensor *qkv = gc_param(&gc, "qkv", s, FILL_ANY);
        gc_check(&gc, kiln_causal_attention(gc.g, qkv, cases[i].H, 0.6f));
    }
    kiln_context_free(ctx);
}

/* ---- accumulation and chains --------------------------------------------------------- */

BACKEND_TEST(grad_graph, a_tensor_used_twice_gets_the_sum_of_both_gradients)
{
    kiln_context *ctx = test_backend_context(backend);
    gcheck        gc;
    gc_begin(&gc, ctx, backend->label, "x * x");
    kiln_tensor *x = gc_param(&gc, "x", ref_shape_of(KILN_SHAPE(2, 3)), FILL_ANY);
    gc_check(&gc, kiln_mul(gc.g, x, x));

    /* a diamond: x feeds tanh and exp, whose results meet again, and x itself
     * is added at the end: three paths */
    gc_begin(&gc, ctx, backend->label, "tanh(x) * exp(x) + x");
    x = gc_param(&gc, "x", ref_shape_of(KILN_SHAPE(2, 3)), FILL_ANY);
    gc_check(&gc,
             kiln_add(gc.g, kiln_mul(gc.g, kiln_tanh(gc.g, x), kiln_exp(gc.g, x)), x));
    kiln_context_free(ctx);
}

BACKEND_TEST(grad_graph, sum_of_x_squared_gives_exactly_2x)
{
    kiln_context *ctx  = test_backend_context(backend);
    kiln_graph   *g    = kiln_graph_new(ctx);
    kiln_tensor  *x    = kiln_param(g, "x", KILN_SHAPE(5));
    kiln_tensor  *loss = kiln_sum(g, kiln_mul(g, x, x));
    cr_assert_eq(kiln_backward(g, loss), KILN_OK, "%s", kiln_last_error());
    kiln_tensor *dx = kiln_grad(g, x);
    cr_assert_not_null(dx, "%s", kiln_last_error());
    cr_assert_eq(kiln_graph_compile(g), KILN_OK, "%s", kiln_last_error());
    const float xs[5] = {-1.5f, 0.0f, 0.25f, 3.0f, -7.0f};
    float       got[5];
    cr_assert_eq(kiln_tensor_write(x, xs, sizeof xs), KILN_OK);
    cr_assert_eq(kiln_graph_run(g), KILN_OK, "%s", kiln_last_error());
    cr_assert_eq(kiln_tensor_read(dx, got, sizeof got), KILN_OK, "%s", kiln_last_error());
    for (int i = 0; i < 5; i++)
        cr_expect_eq(got[i], 2.0f * xs[i], "on %s: d/dx[%d] = %g, expected %g",
                     backend->label, i, (double)got[i], 2.0 * xs[i]);
    kiln_graph_free(g);
    kiln_context_free(ctx);
}

BACKEND_TEST(grad_graph, mlp_with_bias_sigmoid_softmax_and_mse)
{
    kiln_context *ctx = test_backend_context(backend);
    gcheck        gc;
    gc_begin(&gc, ctx, backend->label, "mse(softmax(sigmoid(x @ w1 + b1) @ w2 + b2), t)");
    kiln_graph  *g  = gc.g;
    kiln_tensor *x  = gc_input(&gc, "x", ref_shape_of(KILN_SHAPE(4, 3)), FILL_ANY);
    kiln_tensor *t  = gc_input(&gc, "t", ref_shape_of(KILN_SHAPE(4, 2)), FILL_ANY);
    kiln_tensor *w1 = gc_param(&gc, "w1", ref_shape_of(KILN_SHAPE(3, 5)), FILL_ANY);
    kiln_tensor *b1 = gc_param(&gc, "b1", ref_shape_of(KILN_SHAPE(5)), FILL_ANY);
    kiln_tensor *w2 = gc_param(&gc, "w2", ref_shape_of(KILN_SHAPE(5, 2)), FILL_ANY);
    kiln_tensor *b2 = gc_param(&gc, "b2", ref_shape_of(KILN_SHAPE(2)), FILL_ANY);
    kiln_tensor *h  = kiln_sigmoid(g, kiln_add(g, kiln_matmul(g, x, w1), b1));
    kiln_tensor *y  = kiln_softmax(g, kiln_add(g, kiln_matmul(g, h, w2), b2));
    gc_check(&gc, kiln_mse_loss(g, y, t));
    kiln_context_free(ctx);
}

BACKEND_TEST(grad_graph, cnn_with_conv_tanh_flatten_and_cross_entropy)
{
    kiln_context *ctx = test_backend_context(backend);
    gcheck        gc;
    gc_begin(&gc, ctx, backend->label,
             "cross_entropy(flatten(tanh(conv2d(x, k, kb, 2, 1))) @ w, labels)");
    kiln_graph  *g = gc.g;
    kiln_tensor *x = gc_input(&gc, "x", ref_shape_of(KILN_SHAPE(2, 2, 5, 5)), FILL_ANY);
    kiln_tensor *labels = gc_labels(&gc, 2, 3);
    kiln_tensor *k  = gc_param(&gc, "k", ref_shape_of(KILN_SHAPE(3, 2, 3, 3)), FILL_ANY);
    kiln_tensor *kb = gc_param(&gc, "kb", ref_shape_of(KILN_SHAPE(3)), FILL_ANY);
    kiln_tensor *w  = gc_param(&gc, "w", ref_shape_of(KILN_SHAPE(27, 3)), FILL_ANY);
    kiln_tensor *conv = kiln_tanh(g, kiln_conv2d(g, x, k, kb, 2, 1));
    gc_check(&gc,
             kiln_cross_entropy(g, kiln_matmul(g, kiln_flatten(g, conv), w), labels));
    kiln_context_free(ctx);
}

/* ---- what gets a gradient, and errors ------------------------------------------------- */

Test(backward, inputs_constants_and_unused_params_get_no_gradient)
{
    kiln_context *ctx    = test_context(test_first_spec());
    kiln_graph   *g      = kiln_graph_new(ctx);
    kiln_tensor  *x      = kiln_input(g, "x", KILN_F32, KILN_SHAPE(2, 3));
    kiln_tensor  *w      = kiln_param(g, "w", KILN_SHAPE(3, 2));
    kiln_tensor  *unused = kiln_param(g, "unused", KILN_SHAPE(2));
    kiln_tensor  *logits = kiln_matmul(g, kiln_exp(g, x), w);
    kiln_tensor  *pred   = kiln_argmax(g, logits); /* i32: no gradient, no error */
    kiln_output(g, pred);
    kiln_tensor *loss = kiln_mean(g, logits);
    cr_assert_eq(kiln_backward(g, loss), KILN_OK, "%s", kiln_last_error());
    cr_assert_not_null(kiln_grad(g, w), "%s", kiln_last_error());
    cr_assert_not_null(kiln_grad(g, logits), "%s", kiln_last_error());
    cr_assert_null(kiln_grad(g, x));
    cr_assert(strstr(kiln_last_error(), "'x' [2, 3] has no gradient"), "message: %s",
              kiln_last_error());
    cr_assert_null(kiln_grad(g, unused));
    cr_assert_null(kiln_grad(g, pred));
    cr_assert_eq(kiln_graph_compile(g), KILN_OK, "%s", kiln_last_error());
    kiln_graph_free(g);
    kiln_context_free(ctx);
}

Test(backward, a_loss_that_is_not_a_scalar_is_an_error_naming_its_shape)
{
    kiln_context *ctx = test_context(test_first_spec());
    kiln_graph   *g   = kiln_graph_new(ctx);
    kiln_tensor  *w   = kiln_param(g, "w", KILN_SHAPE(3, 4));
    kiln_tensor  *y   = kiln_exp(g, w);
    cr_assert_eq(kiln_backward(g, y), KILN_ERR_SHAPE);
    cr_assert(strstr(kiln_last_error(), "[3, 4]") && strstr(kiln_last_error(), "scalar"),
              "message: %s", kiln_last_error());
    /* nothing was appended: the graph is fine, and a scalar loss works */
    cr_assert_eq(kiln_graph_status(g), KILN_OK);
    cr_assert_eq(kiln_backward(g, kiln_sum(g, y)), KILN_OK, "%s", kiln_last_error());
    kiln_graph_free(g);

    /* [1, 1] holds one element: it is a scalar loss */
    g = kiln_graph_new(ctx);
    w = kiln_param(g, "w", KILN_SHAPE(1, 1));
    cr_assert_eq(kiln_backward(g, kiln_exp(g, w)), KILN_OK, "%s", kiln_last_error());
    kiln_graph_free(g);
    kiln_context_free(ctx);
}

Test(backward, is_once_per_graph_before_compile_and_needs_a_parameter)
{
    kiln_context *ctx = test_context(test_first_spec());
    kiln_graph   *g   = kiln_graph_new(ctx);
    kiln_tensor  *x   = kiln_input(g, "x", KILN_F32, KILN_SHAPE(3));
    cr_assert_eq(kiln_backward(g, kiln_sum(g, x)), KILN_ERR_INVALID_ARG);
    cr_assert(strstr(kiln_last_error(), "no parameter"), "message: %s",
              kiln_last_error());
    cr_assert_null(kiln_grad(g, x));
    cr_assert(strstr(kiln_last_error(), "kiln_backward first"), "message: %s",
              kiln_last_error());
    kiln_tensor *w    = kiln_param(g, "w", KILN_SHAPE(3));
    kiln_tensor *loss = kiln_sum(g, kiln_mul(g, x, w));
    cr_assert_eq(kiln_backward(g, NULL), KILN_ERR_INVALID_ARG);
    cr_assert_eq(kiln_backward(g, loss), KILN_OK, "%s", kiln_last_error());
    cr_assert_eq(kiln_backward(g, loss), KILN_ERR_STATE);
    cr_assert(strstr(kiln_last_error(), "once"), "message: %s", kiln_last_error());
    kiln_graph_free(g);

    g    = kiln_graph_new(ctx);
    w    = kiln_param(g, "w", KILN_SHAPE(3));
    loss = kiln_sum(g, w);
    cr_assert_eq(kiln_graph_compile(g), KILN_OK, "%s", kiln_last_error());
    cr_assert_eq(kiln_backward(g, loss), KILN_ERR_STATE);
    cr_assert(strstr(kiln_last_error(), "compile"), "message: %s", kiln_last_error());
    kiln_graph_free(g);
    kiln_context_free(ctx);
}

Test(backward, an_intermediate_gradient_is_readable_when_asked_for_before_compile)
{
    kiln_context *ctx  = test_context(test_first_spec());
    kiln_graph   *g    = kiln_graph_new(ctx);
    kiln_tensor  *w    = kiln_param(g, "w", KILN_SHAPE(4));
    kiln_tensor  *h    = kiln_scale(g, w, 3.0f);
    kiln_tensor  *e    = kiln_exp(g, w);
    kiln_tensor  *loss = kiln_sum(g, kiln_add(g, kiln_mul(g, h, h), e));
    cr_assert_eq(kiln_backward(g, loss), KILN_OK, "%s", kiln_last_error());
    kiln_tensor *dh = kiln_grad(g, h);
    cr_assert_not_null(dh, "%s", kiln_last_error());
    cr_assert_eq(kiln_graph_compile(g), KILN_OK, "%s", kiln_last_error());
    cr_assert_null(kiln_grad(g, e), "the gradient of e was not asked for before compile");
    cr_assert(strstr(kiln_last_error(), "before kiln_graph_compile"), "message: %s",
              kiln_last_error());
    const float ws[4] = {1.0f, -2.0f, 0.5f, 0.0f};
    float       got[4];
    cr_assert_eq(kiln_tensor_write(w, ws, sizeof ws), KILN_OK);
    cr_assert_eq(kiln_graph_run(g), KILN_OK, "%s", kiln_last_error());
    cr_assert_eq(kiln_tensor_read(dh, got, sizeof got), KILN_OK, "%s", kiln_last_error());
    for (int i = 0; i < 4; i++)
        cr_expect_float_eq(got[i], 6.0f * ws[i], 1e-6, "d/dh[%d] = %g", i,
                           (double)got[i]);
    kiln_graph_free(g);
    kiln_context_free(ctx);
}

/* ---- optimisers -------------------------------------------------------------------- */

enum { OPT_N = 6 };

/* loss = sum(x * p * p): the gradient 2 x p depends on p, so a step that ran
 * before the gradient was computed would show. */
typedef struct opt_graph {
    kiln_graph     *g;
    kiln_tensor    *x, *p, *loss, *pre;
    kiln_optimizer *opt;
    double          ref_p[OPT_N], ref_s1[OPT_N], ref_s2[OPT_N]; /* state: v; m, v */
    int             t;
} opt_graph;

static const float P0[OPT_N] = {0.5f, -1.25f, 2.0f, -0.75f, 1.5f, 0.125f};

static void opt_build(opt_graph *o, kiln_context *ctx)
{
    memset(o, 0, sizeof *o);
    o->g    = kiln_graph_new(ctx);
    o->x    = kiln_input(o->g, "x", KILN_F32, KILN_SHAPE(2, 3));
    o->p    = kiln_param(o->g, "p", KILN_SHAPE(2, 3));
    o->loss = kiln_sum(o->g, kiln_mul(o->g, o->x, kiln_mul(o->g, o->p, o->p)));
    kiln_output(o->g, o->loss);
    cr_assert_eq(kiln_backward(o->g, o->loss), KILN_OK, "%s", kiln_last_error());
    for (int i = 0; i < OPT_N; i++)
        o->ref_p[i] = P0[i];
}

/* After the optimiser: a reader of p created after the step nodes. */
static void opt_compile(opt_graph *o)
{
    o->pre = kiln_scale(o->g, o->p, 1.0f);
    kiln_output(o->g, o->pre);
    cr_assert_eq(kiln_graph_compile(o->g), KILN_OK, "%s", kiln_last_error());
    cr_assert_eq(kiln_tensor_write(o->p, P0, sizeof P0), KILN_OK);
}

static void opt_x(int step, float x[OPT_N])
{
    ref_fill(x, OPT_N, 1000u + (uint64_t)step);
}

static void expect_params(const opt_graph *o, const char *spec, const char *what)
{
    float got[OPT_N];
    cr_assert_eq(kiln_tensor_read(o->p, got, sizeof got), KILN_OK, "%s",
                 kiln_last_error());
    char label[256];
    snprintf(label, sizeof label, "%s on %s, step %d: p against PyTorch's formula", what,
             spec, o->t);
    ref_expect_close_f64(label, got, o->ref_p, ref_shape_of(KILN_SHAPE(OPT_N)),
                         (ref_tol){2e-6, 2e-5});
}

/* One run with new x; checks that the reader created after the optimiser saw
 * p from before the step. Returns the gradient the reference uses. */
static void opt_run(opt_graph *o, double grad[OPT_N])
{
    float x[OPT_N], pre[OPT_N];
    opt_x(o->t, x);
    cr_assert_eq(kiln_tensor_write(o->x, x, sizeof x), KILN_OK);
    cr_assert_eq(kiln_graph_run(o->g), KILN_OK, "%s", kiln_last_error());
    o->t++;
    cr_assert_eq(kiln_tensor_read(o->pre, pre, sizeof pre), KILN_OK, "%s",
                 kiln_last_error());
    for (int i = 0; i < OPT_N; i++) {
        grad[i] = 2.0 * x[i] * o->ref_p[i];
        cr_expect(fabs(pre[i] - o->ref_p[i]) <= 2e-6 + 2e-5 * fabs(o->ref_p[i]),
                  "step %d: a reader of p created after the optimiser saw %g, not "
                  "the value before the step %g",
                  o->t, (double)pre[i], o->ref_p[i]);
    }
}

/* torch.optim.SGD, dampening 0, not Nesterov (the buffer starts as d, which
 * is momentum * 0 + d) */
static void sgd_reference(opt_graph *o, const double grad[OPT_N], double lr,
                          double momentum, double wd)
{
    for (int i = 0; i < OPT_N; i++) {
        double d     = grad[i] + wd * o->ref_p[i];
        o->ref_s1[i] = o->t == 1 ? d : momentum * o->ref_s1[i] + d;
        o->ref_p[i] += -lr * (momentum != 0.0 ? o->ref_s1[i] : d);
    }
}

/* torch.optim.Adam (not AMSGrad, not AdamW): its single-tensor code path */
static void adam_reference(opt_graph *o, const double grad[OPT_N], double lr, double b1,
                           double b2, double eps, double wd)
{
    double bc1 = 1.0 - pow(b1, o->t), bc2 = 1.0 - pow(b2, o->t);
    double step_size = lr / bc1, bc2_sqrt = sqrt(bc2);
    for (int i = 0; i < OPT_N; i++) {
        double d = grad[i] + wd * o->ref_p[i];
        o->ref_s1[i] += (d - o->ref_s1[i]) * (1.0 - b1);       /* lerp_     */
        o->ref_s2[i] = o->ref_s2[i] * b2 + (1.0 - b2) * d * d; /* addcmul_  */
        double denom = sqrt(o->ref_s2[i]) / bc2_sqrt + eps;
        o->ref_p[i] += -step_size * o->ref_s1[i] / denom; /* addcdiv_  */
    }
}

/* Forgets the reference's state, as kiln_optimizer_reset does kiln's. */
static void reference_reset(opt_graph *o)
{
    o->t = 0;
    memset(o->ref_s1, 0, sizeof o->ref_s1);
    memset(o->ref_s2, 0, sizeof o->ref_s2);
}

static void check_sgd(const test_backend *backend, float lr, float momentum, float wd)
{
    kiln_context *ctx = test_backend_context(backend);
    opt_graph     o;
    opt_build(&o, ctx);
    o.opt = kiln_sgd(o.g, lr, momentum, wd);
    cr_assert_not_null(o.opt, "%s", kiln_last_error());
    opt_compile(&o);
    char what[96];
    snprintf(what, sizeof what, "sgd lr %g momentum %g weight decay %g", (double)lr,
             (double)momentum, (double)wd);
    double grad[OPT_N], cur_lr = lr;
    for (int k = 0; k < 9; k++) {
        if (k == 4) { /* a new learning rate from the next run on */
            cur_lr = 0.02;
            cr_assert_eq(kiln_optimizer_set_lr(o.opt, 0.02f), KILN_OK);
        }
        if (k == 6) { /* the velocity starts again from zero */
            cr_assert_eq(kiln_optimizer_reset(o.opt), KILN_OK, "%s", kiln_last_error());
            reference_reset(&o);
        }
        opt_run(&o, grad);
        sgd_reference(&o, grad, cur_lr, momentum, wd);
        expect_params(&o, backend->label, what);
    }
    kiln_graph_free(o.g);
    kiln_context_free(ctx);
}

BACKEND_TEST(sgd, matches_pytorch_with_momentum_weight_decay_set_lr_and_reset)
{
    check_sgd(backend, 0.05f, 0.9f, 0.01f);
    check_sgd(backend, 0.1f, 0.0f, 0.0f);
    check_sgd(backend, 0.03f, 0.5f, 0.0f);
}

static void check_adam(const test_backend *backend, float lr, float b1, float b2,
                       float eps, float wd)
{
    kiln_context *ctx = test_backend_context(backend);
    opt_graph     o;
    opt_build(&o, ctx);
    o.opt = kiln_adam(o.g, lr, b1, b2, eps, wd);
    cr_assert_not_null(o.opt, "%s", kiln_last_error());
    opt_compile(&o);
    char what[128];
    snprintf(what, sizeof what, "adam lr %g betas %g %g eps %g weight decay %g",
             (double)lr, (double)b1, (double)b2, (double)eps, (double)wd);
    double grad[OPT_N], cur_lr = lr;
    for (int k = 0; k < 9; k++) {
        if (k == 3) {
            cur_lr = 0.004;
            cr_assert_eq(kiln_optimizer_set_lr(o.opt, 0.004f), KILN_OK);
        }
        if (k == 6) { /* moments and bias corrections start again */
            cr_assert_eq(kiln_optimizer_reset(o.opt), KILN_OK, "%s", kiln_last_error());
            reference_reset(&o);
        }
        opt_run(&o, grad);
        adam_reference(&o, grad, cur_lr, b1, b2, eps, wd);
        expect_params(&o, backend->label, what);
    }
    kiln_graph_free(o.g);
    kiln_context_free(ctx);
}

BACKEND_TEST(adam, matches_pytorch_with_bias_correction_weight_decay_set_lr_and_reset)
{
    check_adam(backend, 0.01f, 0.9f, 0.999f, 1e-8f, 0.0f);
    check_adam(backend, 0.05f, 0.8f, 0.99f, 1e-6f, 0.1f);
    check_adam(backend, 0.02f, 0.0f, 0.5f, 1e-3f, 0.0f);
}

BACKEND_TEST(optimizer, eval_neither_steps_nor_counts_a_step)
{
    kiln_context *ctx = test_backend_context(backend);
    opt_graph     o;
    opt_build(&o, ctx);
    const float lr = 0.01f, b1 = 0.9f, b2 = 0.999f, eps = 1e-8f;
    o.opt = kiln_adam(o.g, lr, b1, b2, eps, 0.0f);
    cr_assert_not_null(o.opt, "%s", kiln_last_error());
    opt_compile(&o);
    double grad[OPT_N];
    opt_run(&o, grad);
    adam_reference(&o, grad, lr, b1, b2, eps, 0.0);
    for (int k = 0; k < 3; k++) {
        cr_assert_eq(kiln_graph_eval(o.g, o.loss), KILN_OK, "%s", kiln_last_error());
        expect_params(&o, backend->label, "after kiln_graph_eval");
    }
    /* the next run is step 2: its bias correction shows whether evals counted */
    opt_run(&o, grad);
    adam_reference(&o, grad, lr, b1, b2, eps, 0.0);
    expect_params(&o, backend->label, "adam after evals");
    kiln_graph_free(o.g);
    kiln_context_free(ctx);
}

BACKEND_TEST(optimizer, gradients_stay_readable_next_to_the_steps)
{
    kiln_context *ctx = test_backend_context(backend);
    opt_graph     o;
    opt_build(&o, ctx);
    kiln_tensor *dp = kiln_grad(o.g, o.p);
    cr_assert_not_null(kiln_sgd(o.g, 0.1f, 0.0f, 0.0f), "%s", kiln_last_error());
    opt_compile(&o);
    double grad[OPT_N];
    float  got[OPT_N];
    opt_run(&o, grad);
    cr_assert_eq(kiln_tensor_read(dp, got, sizeof got), KILN_OK, "%s", kiln_last_error());
    for (int i = 0; i < OPT_N; i++)
        cr_expect(fabs(got[i] - grad[i]) <= 1e-6 + 1e-6 * fabs(grad[i]),
                  "on %s: d/dp[%d] = %g, expected %g (from p before the step)",
                  backend->label, i, (double)got[i], grad[i]);
    kiln_graph_free(o.g);
    kiln_context_free(ctx);
}

/* Eval reruns a few forward nodes alone; storage that a gradient shares with
 * nothing earlier keeps the last run's values. */
BACKEND_TEST(eval, leaves_gradients_as_the_last_run_left_them)
{
    enum { N = 8 };
    kiln_context *ctx = test_backend_context(backend);
    kiln_graph   *g   = kiln_graph_new(ctx);
    kiln_tensor  *x   = kiln_input(g, "x", KILN_F32, KILN_SHAPE(N));
    kiln_tensor  *w   = kiln_param(g, "w", KILN_SHAPE(N));
    /* dw = -x lands where the forward product was, unless the planner
     * keeps storage read after the run apart */
    kiln_tensor *loss = kiln_sum(g, kiln_mul(g, kiln_sub(g, x, w), x));
    kiln_output(g, loss);
    cr_assert_eq(kiln_backward(g, loss), KILN_OK, "%s", kiln_last_error());
    kiln_tensor *dw = kiln_grad(g, w);
    cr_assert_eq(kiln_graph_compile(g), KILN_OK, "%s", kiln_last_error());
    float xs[N], ws[N], before[N], after[N];
    ref_fill(xs, N, 1);
    ref_fill(ws, N, 2);
    cr_assert_eq(kiln_tensor_write(x, xs, sizeof xs), KILN_OK);
    cr_assert_eq(kiln_tensor_write(w, ws, sizeof ws), KILN_OK);
    cr_assert_eq(kiln_graph_run(g), KILN_OK, "%s", kiln_last_error());
    cr_assert_eq(kiln_tensor_read(dw, before, sizeof before), KILN_OK);
    ref_fill(xs, N, 3);
    cr_assert_eq(kiln_tensor_write(x, xs, sizeof xs), KILN_OK);
    cr_assert_eq(kiln_graph_eval(g, loss), KILN_OK, "%s", kiln_last_error());
    cr_assert_eq(kiln_tensor_read(dw, after, sizeof after), KILN_OK);
    for (int i = 0; i < N; i++)
        cr_expect_eq(after[i], before[i],
                     "on %s: d/dw[%d] was %g after the run and %g "
                     "after an eval",
                     backend->label, i, (double)before[i], (double)after[i]);
    kiln_graph_free(g);
    kiln_context_free(ctx);
}

Test(optimizer, bad_arguments_and_calls_out_of_order_return_null_with_a_message)
{
    kiln_context *ctx  = test_context(test_first_spec());
    kiln_graph   *g    = kiln_graph_new(ctx);
    kiln_tensor  *p    = kiln_param(g, "p", KILN_SHAPE(3));
    kiln_tensor  *loss = kiln_sum(g, kiln_exp(g, p));
    cr_assert_null(kiln_sgd(g, 0.1f, 0.0f, 0.0f));
    cr_assert(strstr(kiln_last_error(), "kiln_backward first"), "message: %s",
              kiln_last_error());
    cr_assert_eq(kiln_backward(g, loss), KILN_OK, "%s", kiln_last_error());
    cr_assert_null(kiln_sgd(g, -0.1f, 0.0f, 0.0f));
    cr_assert(strstr(kiln_last_error(), "learning rate -0.1"), "message: %s",
              kiln_last_error());
    cr_assert_null(kiln_sgd(g, NAN, 0.0f, 0.0f));
    cr_assert_null(kiln_sgd(g, 0.1f, -1.0f, 0.0f));
    cr_assert_null(kiln_adam(g, 0.1f, 1.0f, 0.999f, 1e-8f, 0.0f));
    cr_assert(strstr(kiln_last_error(), "beta1 1"), "message: %s", kiln_last_error());
    cr_assert_null(kiln_adam(g, 0.1f, 0.9f, 0.999f, -1.0f, 0.0f));
    cr_assert_eq(kiln_graph_status(g), KILN_OK, "argument errors are not sticky");
    kiln_optimizer *opt = kiln_adam(g, 0.1f, 0.9f, 0.999f, 1e-8f, 0.0f);
    cr_assert_not_null(opt, "%s", kiln_last_error());
    cr_assert_null(kiln_sgd(g, 0.1f, 0.0f, 0.0f));
    cr_assert(strstr(kiln_last_error(), "already has an optimiser"), "message: %s",
              kiln_last_error());
    cr_assert_eq(kiln_optimizer_set_lr(opt, -1.0f), KILN_ERR_INVALID_ARG);
    cr_assert_eq(kiln_optimizer_set_lr(NULL, 1.0f), KILN_ERR_INVALID_ARG);
    cr_assert_eq(kiln_optimizer_reset(NULL), KILN_ERR_INVALID_ARG);
    cr_assert_eq(kiln_optimizer_reset(opt), KILN_OK, "reset before compile is fine");
    cr_assert_eq(kiln_graph_compile(g), KILN_OK, "%s", kiln_last_error());
    cr_assert_null(kiln_adam(g, 0.1f, 0.9f, 0.999f, 1e-8f, 0.0f));
    cr_assert(strstr(kiln_last_error(), "compile"), "message: %s", kiln_last_error());
    kiln_graph_free(g);
    kiln_context_free(ctx);
}
