/* tests/test_ops.c — every op against the reference, on every usable device.
 *
 * Each test is a ParameterizedTest over test_backend_params(), so a backend
 * that loads is tested by this suite without a change here, and the cpu
 * backend is tested once per kernel ISA the machine runs. A test builds
 * small one-op graphs through the op_case helpers below, on odd and edge
 * shapes, and runs each graph twice: the second run rewrites only the first
 * leaf, so it proves both that runs repeat and that the other leaves keep
 * their values between runs.
 */
#include "backends.h"
#include "expect.h"
#include "reference.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* How many times each graph runs, with new data in the first leaf each time. */
#define RUNS 2

static const ref_tol TOL_EXACT     = {0.0, 0.0};
static const ref_tol TOL_ROUNDING  = {1e-7, 1e-6}; /* one rounding, or a reciprocal */
static const ref_tol TOL_TRANSCEND = {1e-6, 1e-5}; /* exp, log, tanh ... in f32   */

/* A sum of `terms` products of values in [-2, 2], accumulated in f32. */
static ref_tol tol_for_sum(int64_t terms)
{
    ref_tol t = {2e-6 * (double)(terms + 1), 1e-5};
    return t;
}

static ref_shape scalar_shape(void)
{
    ref_shape s;
    memset(&s, 0, sizeof s);
    return s;
}

static ref_shape shape2(int64_t d0, int64_t d1)
{
    return ref_shape_of(KILN_SHAPE(d0, d1));
}

/* ---- one-op graphs --------------------------------------------------------- */

typedef enum fill_kind {
    FILL_ANY,      /* [-2, 2]                       */
    FILL_POSITIVE, /* [0.1, 2]: log, sqrt           */
    FILL_NONZERO,  /* |x| in [0.5, 2]: divisors     */
    FILL_TIES,     /* integers in [-2, 2]: max ties */
    FILL_NEAR_PLUS_1000,
    FILL_NEAR_MINUS_1000,
    FILL_PLUS_MINUS_1000,
    FILL_LABELS, /* i32 in [0, classes)           */
} fill_kind;

static const char *const fill_names[] = {
    "in [-2, 2]", "positive",   "nonzero",     "with ties",
    "near +1000", "near -1000", "near +-1000", "labels",
};

/* Inputs near +-1000 carry an absolute rounding error of about 3e-5 into any
 * result computed through a logsumexp of that size. */
static bool fill_is_huge(fill_kind fill)
{
    return fill == FILL_NEAR_PLUS_1000 || fill == FILL_NEAR_MINUS_1000 ||
           fill == FILL_PLUS_MINUS_1000;
}

typedef struct leaf {
    kiln_tensor *t;
    ref_shape    shape;
    size_t       n;
    fill_kind    fill;
    int32_t      classes;
    float       *f; /* f32 data; NULL for labels */
    int32_t     *i; /* i32 data; labels only     */
} leaf;

#define MAX_LEAVES  6
#define MAX_SCRATCH 16

typedef struct op_case {
    const char *spec;
    kiln_graph *g;
    char        label[256];
    uint64_t    seed;
    int         round;
    int         n_leaves;
    leaf        leaves[MAX_LEAVES];
    int         n_scratch;
    void       *scratch[MAX_SCRATCH];
} op_case;

/* Starts a graph on ctx. The label names the case in every failure and seeds
 * its data, so each case gets its own numbers. */
__attribute__((format(printf, 4, 5))) static void
case_begin(op_case *c, kiln_context *ctx, const char *spec, const char *fmt, ...)
{
    memset(c, 0, sizeof *c);
    c->spec = spec;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->label, sizeof c->label, fmt, ap);
    va_end(ap);
    c->seed = ref_hash_str(c->label);
    c->g    = kiln_graph_new(ctx);
    cr_assert_not_null(c->g, "%s on %s: kiln_graph_new failed: %s", c->label, spec,
                       kiln_last_error());
}

static void *case_scratch(op_case *c, size_t n, size_t size)
{
    cr_assert(c->n_scratch < MAX_SCRATCH, "test bug: too many scratch buffers");
    return c->scratch[c->n_scratch++] = ref_calloc(n, size);
}

static leaf *case_leaf(op_case *c, kiln_tensor *t, ref_shape s, fill_kind fill)
{
    cr_assert(c->n_leaves < MAX_LEAVES, "test bug: too many leaves");
    cr_assert_not_null(t, "%s on %s: making a %s leaf returned NULL: %s", c->label,
                       c->spec, ref_shape_text(s), kiln_last_error());
    cr_assert_eq(kiln_graph_status(c->g), KILN_OK, "%s on %s: leaf %s: %s", c->label,
                 c->spec, ref_shape_text(s), graph_error(c->g));
    leaf *l  = &c->leaves[c->n_leaves++];
    l->t     = t;
    l->shape = s;
    l->n     = ref_numel(s);
    l->fill  = fill;
    if (fill == FILL_LABELS)
        l->i = case_scratch(c, l->n, sizeof *l->i);
    else
        l->f = case_scratch(c, l->n, sizeof *l->f);
    return l;
}

static leaf *case_input(op_case *c, const char *name, ref_shape s, fill_kind fill)
{
    return case_leaf(c, kiln_input(c->g, name, KILN_F32, s.ndim, s.dims), s, fill);
}

static leaf *case_param(op_case *c, const char *name, ref_shape s, fill_kind fill)
{
    return case_leaf(c, kiln_param(c->g, name, s.ndim, s.dims), s, fill);
}

static leaf *case_labels(op_case *c, const char *name, int64_t rows, int32_t classes)
{
    ref_shape s = ref_shape_of(KILN_SHAPE(rows));
    leaf     *l = case_leaf(c, kiln_input(c->g, name, KILN_I32, s.ndim, s.dims), s,
                            FILL_LABELS);
    l->classes  = classes;
    return l;
}

/* i32 in [0, classes) of any shape: labels of N-D logits, embedding ids. */
static leaf *case_ids(op_case *c, const char *name, ref_shape s, int32_t classes)
{
    leaf *l    = case_leaf(c, kiln_input(c->g, name, KILN_I32, s.ndim, s.dims), s,
                           FILL_LABELS);
    l->classes = classes;
    return l;
}

/* Marks an output, checking first that building the graph went well. */
static void case_output(op_case *c, kiln_tensor *t)
{
    cr_assert_eq(kiln_graph_status(c->g), KILN_OK, "%s on %s: building failed: %s",
                 c->label, c->spec, graph_error(c->g));
    cr_assert_not_null(t, "%s on %s: the op returned NULL: %s", c->label, c->spec,
                       kiln_last_error());
    kiln_status st = kiln_output(c->g, t);
    cr_assert_eq(st, KILN_OK, "%s on %s: kiln_output: %s: %s", c->label, c->spec,
                 kiln_status_name(st), kiln_last_error());
}

static void case_compile(op_case *c, kiln_tensor *out)
{
    case_output(c, out);
    kiln_status st = kiln_graph_compile(c->g);
    cr_assert_eq(st, KILN_OK, "%s on %s: kiln_graph_compile: %s: %s", c->label, c->spec,
                 kiln_status_name(st), graph_error(c->g));
}

static void fill_plus_minus_1000(float *x, size_t n, uint64_t seed)
{
    ref_rng rng;
    ref_rng_seed(&rng, seed);
    for (size_t i = 0; i < n; i++) {
        float center = (ref_rng_next(&rng) >> 63) ? -1000.0f : 1000.0f;
        x[i]         = center + ref_rng_uniform(&rng, -2.0f, 2.0f);
    }
}

static void fill_leaf(leaf *l, uint64_t seed)
{
    switch (l->fill) {
    case FILL_ANY: ref_fill(l->f, l->n, seed); break;
    case FILL_POSITIVE: ref_fill_positive(l->f, l->n, seed); break;
    case FILL_NONZERO: ref_fill_nonzero(l->f, l->n, seed); break;
    case FILL_TIES: ref_fill_ties(l->f, l->n, seed); break;
    case FILL_NEAR_PLUS_1000: ref_fill_around(l->f, l->n, seed, 1000.0f); break;
    case FILL_NEAR_MINUS_1000: ref_fill_around(l->f, l->n, seed, -1000.0f); break;
    case FILL_PLUS_MINUS_1000: fill_plus_minus_1000(l->f, l->n, seed); break;
    case FILL_LABELS: ref_fill_labels(l->i, l->n, l->classes, seed); break;
    }
}

/* The first run writes every leaf; later runs write new data to the first
 * leaf only, so the others must have kept their values. */
static void case_run(op_case *c)
{
    int count = c->round == 0 ? c->n_leaves : 1;
    for (int k = 0; k < count; k++) {
        leaf *l = &c->leaves[k];
        fill_leaf(l, c->seed + 7919u * (uint64_t)k + 104729u * (uint64_t)c->round);
        const void *data = l->f ? (const void *)l->f : (const void *)l->i;
        kiln_status st   = kiln_tensor_write(l->t, data, l->n * 4);
        cr_assert_eq(st, KILN_OK, "%s on %s: writing leaf %d (%s, %zu bytes): %s: %s",
                     c->label, c->spec, k, ref_shape_text(l->shape), l->n * 4,
                     kiln_status_name(st), kiln_last_error());
    }
    kiln_status st = kiln_graph_run(c->g);
    cr_assert_eq(st, KILN_OK, "%s on %s: kiln_graph_run (run %d): %s: %s", c->label,
                 c->spec, c->round + 1, kiln_status_name(st), kiln_last_error());
    c->round++;
}

static ref_shape shape_of_tensor(const op_case *c, const kiln_tensor *t)
{
    int ndim = kiln_tensor_ndim(t);
    cr_assert(ndim >= 0 && ndim <= REF_MAX_DIMS, "%s on %s: output has ndim %d", c->label,
              c->spec, ndim);
    ref_shape s = scalar_shape();
    s.ndim      = ndim;
    for (int d = 0; d < ndim; d++)
        s.dims[d] = kiln_tensor_dim(t, d);
    return s;
}

static void expect_meta(const op_case *c, const kiln_tensor *t, ref_shape want,
                        kiln_dtype dtype)
{
    ref_shape got = shape_of_tensor(c, t);
    cr_assert(ref_shape_eq(got, want), "%s on %s: output shape %s, expected %s", c->label,
              c->spec, ref_shape_text(got), ref_shape_text(want));
    cr_assert_eq(kiln_tensor_dtype(t), dtype, "%s on %s: output dtype %d, expected %d",
                 c->label, c->spec, (int)kiln_tensor_dtype(t), (int)dtype);
}

static void read_output(const op_case *c, const kiln_tensor *t, void *buf, size_t n)
{
    kiln_status st = kiln_tensor_read(t, buf, n * 4);
    cr_assert_eq(st, KILN_OK, "%s on %s: kiln_tensor_read of %zu bytes: %s: %s", c->label,
                 c->spec, n * 4, kiln_status_name(st), kiln_last_error());
}

/* Checks the shape and dtype of t, reads it and compares with want. */
static void case_expect(op_case *c, const kiln_tensor *t, const float *want,
                        ref_shape shape, ref_tol tol)
{
    expect_meta(c, t, shape, KILN_F32);
    size_t n   = ref_numel(shape);
    float *got = ref_calloc(n, sizeof *got);
    read_output(c, t, got, n);
    char what[400];
    snprintf(what, sizeof what, "%s on %s, run %d", c->label, c->spec, c->round);
    ref_expect_close(what, got, want, shape, tol);
    free(got);
}

static void case_expect_i32(op_case *c, const kiln_tensor *t, const int32_t *want,
                            ref_shape shape)
{
    expect_meta(c, t, shape, KILN_I32);
    size_t   n   = ref_numel(shape);
    int32_t *got = ref_calloc(n, sizeof *got);
    read_output(c, t, got, n);
    char what[400];
    snprintf(what, sizeof what, "%s on %s, run %d", c->label, c->spec, c->round);
    ref_expect_equal_i32(what, got, want, shape);
    free(got);
}

static void case_end(op_case *c)
{
    kiln_graph_free(c->g);
    for (int k = 0; k < c->n_scratch; k++)
        free(c->scratch[k]);
    memset(c, 0, sizeof *c);
}

/* ---- elementwise ------------------------------------------------------------ */

/* Odd and edge shapes for elementwise ops: a scalar, size 1, primes,
 * non-square, one big enough for vector loops with tails, and empty ones. */
static const ref_shape elementwise_shapes[] = {
    {0, {0}},          {1, {1}},       {1, {7}},    {2, {13, 31}}, {3, {3, 5, 7}},
    {4, {2, 3, 5, 7}}, {2, {67, 129}}, {2, {0, 7}}, {1, {0}},
};
#define N_ELEMENTWISE_SHAPES (sizeof elementwise_shapes / sizeof elementwise_shapes[0])

typedef struct unary_op {
    const char *name;
    kiln_tensor *(*build)(kiln_graph *, kiln_tensor *); /* NULL: kiln_scale */
    ref_unop  ref;
    float     factor;
    fill_kind fill;
    ref_tol   tol;
} unary_op;

static const unary_op unary_ops[] = {
    {"neg", kiln_neg, REF_NEG, 0.0f, FILL_ANY, {0.0, 0.0}},
    {"exp", kiln_exp, REF_EXP, 0.0f, FILL_ANY, {1e-6, 1e-5}},
    {"log", kiln_log, REF_LOG, 0.0f, FILL_POSITIVE, {1e-6, 1e-5}},
    {"sqrt", kiln_sqrt, REF_SQRT, 0.0f, FILL_POSITIVE, {1e-6, 1e-5}},
    {"relu", kiln_relu, REF_RELU, 0.0f, FILL_ANY, {0.0, 0.0}},
    {"sigmoid", kiln_sigmoid, REF_SIGMOID, 0.0f, FILL_ANY, {1e-6, 1e-5}},
    {"tanh", kiln_tanh, REF_TANH, 0.0f, FILL_ANY, {1e-6, 1e-5}},
    {"gelu", kiln_gelu, REF_GELU, 0.0f, FILL_ANY, {1e-6, 1e-5}},
    {"scale -0.5", NULL, REF_SCALE, -0.5f, FILL_ANY, {1e-7, 1e-6}},
    {"scale 3", NULL, REF_SCALE, 3.0f, FILL_ANY, {1e-7, 1e-6}},
    {"scale 0", NULL, REF_SCALE, 0.0f, FILL_ANY, {0.0, 0.0}},
};

static void check_unary(kiln_context *ctx, const char *spec, const unary_op *op,
                        ref_shape s)
{
    op_case c;
    case_begin(&c, ctx, spec, "%s of %s", op->name, ref_shape_text(s));
    leaf        *x = case_input(&c, "x", s, op->fill);
    kiln_tensor *y = op->build ? op->build(c.g, x->t) : kiln_scale(c.g, x->t, op->factor);
    case_compile(&c, y);
    float *want = case_scratch(&c, x->n, sizeof *want);
    for (int r = 0; r < RUNS; r++) {
        case_run(&c);
        ref_unary(op->ref, x->f, x->n, op->factor, want);
        case_expect(&c, y, want, s, op->tol);
    }
    case_end(&c);
}

BACKEND_TEST(unary, matches_reference_on_odd_and_empty_shapes)
{
    kiln_context *ctx = test_backend_context(backend);
    for (size_t o = 0; o < sizeof unary_ops / sizeof unary_ops[0]; o++)
        for (size_t s = 0; s < N_ELEMENTWISE_SHAPES; s++)
            check_unary(ctx, backend->label, &unary_ops[o], elementwise_shapes[s]);
    kiln_context_free(ctx);
}

/* NaN, infinities, signed zeros, subnormals, and the edges where exp
 * overflows or its result goes subnormal, placed so that they fall both in
 * whole vectors and in a row's tail: the special values follow libm. */
BACKEND_TEST(unary, special_values_match_libm)
{
    static const float specials[] = {
        NAN,     -NAN,  INFINITY, -INFINITY, 0.0f,   -0.0f,   1e-40f,  -1e-40f, 1e-30f,
        -1e-30f, 88.7f, 89.0f,    100.0f,    -87.5f, -100.0f, -104.0f, -110.0f, 0.625f,
        -0.625f, 20.0f, -20.0f,   9.0f,      -9.0f,  44.0f,   -44.0f,  3.4e38f, -3.4e38f,
    };
    enum { N_SPECIAL = sizeof specials / sizeof specials[0], N = 37 };
    static const ref_unop    ops[] = {REF_EXP, REF_LOG, REF_TANH, REF_SIGMOID, REF_GELU};
    static const char *const names[] = {"exp", "log", "tanh", "sigmoid", "gelu"};
    kiln_tensor *(*const build[])(kiln_graph *, kiln_tensor *) = {kiln_exp, kiln_log,
                                                                  kiln_tanh, kiln_sigmoid,
                                                                  kiln_gelu};
    kiln_context *ctx = test_backend_context(backend);
    ref_shape     s   = ref_shape_of(KILN_SHAPE(2, N));
    for (size_t o = 0; o < sizeof ops / sizeof ops[0]; o++) {
        op_case c;
        case_begin(&c, ctx, backend->label, "%s of special values", names[o]);
        kiln_tensor *x = kiln_input(c.g, "x", KILN_F32, s.ndim, s.dims);
        kiln_tensor *y = build[o](c.g, x);
        case_compile(&c, y);
        float in[2 * N], want[2 * N];
        for (size_t i = 0; i < 2 * N; i++) /* row 1 is row 0 rotated by 11 */
            in[i] = specials[(i % N + (i >= N ? 11 : 0)) % N_SPECIAL];
        kiln_status st = kiln_tensor_write(x, in, sizeof in);
        cr_assert_eq(st, KILN_OK, "%s on %s: kiln_tensor_write: %s", c.label, c.spec,
                     kiln_last_error());
        st = kiln_graph_run(c.g);
        cr_assert_eq(st, KILN_OK, "%s on %s: kiln_graph_run: %s", c.label, c.spec,
                     kiln_last_error());
        ref_unary(ops[o], in, 2 * N, 0.0f, want);
        case_expect(&c, y, want, s, TOL_TRANSCEND);
        case_end(&c);
    }
    kiln_context_free(ctx);
}

/* 4.2 M elements (17 MB): split across threads, each part large enough for
 * the stores that bypass the caches; the 3-element node computed first makes
 * an output offset that is not a multiple of 64 bytes likely. */
BACKEND_TEST(unary, matches_reference_on_tensors_larger_than_the_caches)
{
    kiln_context *ctx = test_backend_context(backend);
    ref_shape     s   = shape2(4100, 1025);
    op_case       c;
    case_begin(&c, ctx, backend->label, "relu, add, tanh of %s", ref_shape_text(s));
    leaf        *x = case_input(&c, "x", s, FILL_ANY);
    kiln_tensor *odd =
        kiln_neg(c.g, case_input(&c, "pad", ref_shape_of(KILN_SHAPE(3)), FILL_ANY)->t);
    kiln_tensor *r = kiln_relu(c.g, x->t);
    kiln_tensor *y = kiln_tanh(c.g, kiln_add(c.g, r, x->t));
    case_output(&c, odd);
    case_output(&c, r);
    case_compile(&c, y);
    float *want = case_scratch(&c, x->n, sizeof *want);
    float *tmp  = case_scratch(&c, x->n, sizeof *tmp);
    case_run(&c);
    ref_unary(REF_RELU, x->f, x->n, 0.0f, tmp);
    case_expect(&c, r, tmp, s, TOL_EXACT);
    ref_binary(REF_ADD, tmp, s, x->f, s, want, s);
    ref_unary(REF_TANH, want, x->n, 0.0f, want);
    case_expect(&c, y, want, s, TOL_TRANSCEND);
    case_end(&c);
    kiln_context_free(ctx);
}

/* GELU's inner cubic overflows f32 from |x| = 2e12 (x^2 from 2e19) and
 * 1 + tanh cancels for negative x: every magnitude from 1e-3 to 1e38, both
 * signs, gives a finite result that matches the reference (x, or 0). */
BACKEND_TEST(gelu, saturates_without_nan_for_large_inputs)
{
    enum { N = 2 * 42 + 3 };
    kiln_context *ctx = test_backend_context(backend);
    ref_shape     s   = ref_shape_of(KILN_SHAPE(N));
    op_case       c;
    case_begin(&c, ctx, backend->label, "gelu of 1e-3 .. 1e38, both signs");
    kiln_tensor *x = kiln_input(c.g, "x", KILN_F32, s.ndim, s.dims);
    kiln_tensor *y = kiln_gelu(c.g, x);
    case_compile(&c, y);
    float in[N], want[N], got[N];
    for (int k = 0; k < 42; k++) {
        in[2 * k]     = (float)pow(10.0, k - 3) * 1.5f;
        in[2 * k + 1] = -in[2 * k];
    }
    in[N - 3] = 7.0f;
    in[N - 2] = -7.0f;
    in[N - 1] = -3.4e38f;
    cr_assert_eq(kiln_tensor_write(x, in, sizeof in), KILN_OK, "%s", kiln_last_error());
    cr_assert_eq(kiln_graph_run(c.g), KILN_OK, "%s on %s: %s", c.label, c.spec,
                 kiln_last_error());
    ref_unary(REF_GELU, in, N, 0.0f, want);
    case_expect(&c, y, want, s, TOL_TRANSCEND);
    read_output(&c, y, got, N);
    ref_expect_finite(c.label, got, s);
    case_end(&c);
    kiln_context_free(ctx);
}

typedef struct binary_op {
    const char *name;
    kiln_tensor *(*build)(kiln_graph *, kiln_tensor *, kiln_tensor *);
    ref_binop ref;
} binary_op;

static const binary_op binary_ops[] = {
    {"add", kiln_add, REF_ADD},
    {"sub", kiln_sub, REF_SUB},
    {"mul", kiln_mul, REF_MUL},
    {"div", kiln_div, REF_DIV},
};
#define N_BINARY_OPS (sizeof binary_ops / sizeof binary_ops[0])

/* The divisor is kept away from 0 so that f32 and double agree closely. */
static fill_kind second_operand_fill(const binary_op *op)
{
    return op->ref == REF_DIV ? FILL_NONZERO : FILL_ANY;
}

static void check_binary(kiln_context *ctx, const char *spec, const binary_op *op,
                         ref_shape sa, ref_shape sb)
{
    ref_shape so;
    cr_assert(ref_broadcast_shape(sa, sb, &so), "test bug: %s and %s do not broadcast",
              ref_shape_text(sa), ref_shape_text(sb));
    op_case c;
    case_begin(&c, ctx, spec, "%s of %s and %s", op->name, ref_shape_text(sa),
               ref_shape_text(sb));
    leaf        *a = case_input(&c, "a", sa, FILL_ANY);
    leaf        *b = case_input(&c, "b", sb, second_operand_fill(op));
    kiln_tensor *y = op->build(c.g, a->t, b->t);
    case_compile(&c, y);
    float *want = case_scratch(&c, ref_numel(so), sizeof *want);
    for (int r = 0; r < RUNS; r++) {
        case_run(&c);
        ref_binary(op->ref, a->f, sa, b->f, sb, want, so);
        case_expect(&c, y, want, so, TOL_ROUNDING);
    }
    case_end(&c);
}

BACKEND_TEST(binary, matches_reference_on_equal_shapes)
{
    kiln_context *ctx = test_backend_context(backend);
    for (size_t o = 0; o < N_BINARY_OPS; o++)
        for (size_t s = 0; s < N_ELEMENTWISE_SHAPES; s++)
            check_binary(ctx, backend->label, &binary_ops[o], elementwise_shapes[s],
                         elementwise_shapes[s]);
    kiln_context_free(ctx);
}

/* Pairs that broadcast by the suffix rule, in both orders. */
static const ref_shape broadcast_pairs[][2] = {
    {{2, {13, 31}}, {1, {31}}},       /* a bias [N] on [M, N]          */
    {{2, {1, 7}}, {1, {7}}},          /* M = 1                         */
    {{2, {13, 31}}, {2, {1, 31}}},    /* [1, N] on [M, N]              */
    {{2, {67, 129}}, {1, {129}}},     /* long rows with vector tails   */
    {{4, {2, 3, 5, 7}}, {2, {5, 7}}}, /* a trailing block of a 4-D     */
    {{4, {2, 3, 5, 7}}, {3, {3, 5, 7}}},
    {{4, {2, 3, 5, 7}}, {4, {1, 1, 5, 7}}},
    {{3, {3, 5, 1}}, {2, {5, 1}}}, /* trailing 1s are not dropped   */
    {{3, {3, 5, 7}}, {2, {1, 1}}}, /* only 1s: broadcasts as a scalar */
    {{2, {13, 31}}, {1, {1}}},
    {{2, {0, 7}}, {1, {7}}},       /* empty                         */
    {{2, {600, 129}}, {1, {129}}}, /* split across threads mid-row  */
};

BACKEND_TEST(binary, broadcasts_a_trailing_suffix_in_either_order)
{
    kiln_context *ctx = test_backend_context(backend);
    for (size_t o = 0; o < N_BINARY_OPS; o++) {
        for (size_t p = 0; p < sizeof broadcast_pairs / sizeof broadcast_pairs[0]; p++) {
            check_binary(ctx, backend->label, &binary_ops[o], broadcast_pairs[p][0],
                         broadcast_pairs[p][1]);
            check_binary(ctx, backend->label, &binary_ops[o], broadcast_pairs[p][1],
                         broadcast_pairs[p][0]);
        }
    }
    kiln_context_free(ctx);
}

/* x op s and s op x, with s a 0-d input or a kiln_scalar constant. */
static void check_binary_scalar(kiln_context *ctx, const char *spec, const binary_op *op,
                                ref_shape sx, bool scalar_first, bool constant)
{
    op_case c;
    case_begin(&c, ctx, spec, "%s of %s%s%s", op->name,
               scalar_first ? (constant ? "kiln_scalar and " : "0-d input and ") : "",
               ref_shape_text(sx),
               scalar_first ? "" : (constant ? " and kiln_scalar" : " and 0-d input"));
    /* x first: it is the leaf the second run rewrites */
    leaf *x = case_input(&c, "x", sx, scalar_first ? second_operand_fill(op) : FILL_ANY);
    fill_kind    sfill = scalar_first ? FILL_ANY : second_operand_fill(op);
    float        value = 0.0f;
    kiln_tensor *s;
    const float *sdata = &value;
    if (constant) {
        ref_fill(&value, 1, c.seed);
        if (sfill == FILL_NONZERO)
            ref_fill_nonzero(&value, 1, c.seed);
        s = kiln_scalar(c.g, value);
    } else {
        leaf *ls = case_input(&c, "s", scalar_shape(), sfill);
        s        = ls->t;
        sdata    = ls->f;
    }
    kiln_tensor *y = scalar_first ? op->build(c.g, s, x->t) : op->build(c.g, x->t, s);
    case_compile(&c, y);
    float *want = case_scratch(&c, x->n, sizeof *want);
    for (int r = 0; r < RUNS; r++) {
        case_run(&c);
        if (scalar_first)
            ref_binary(op->ref, sdata, scalar_shape(), x->f, sx, want, sx);
        else
            ref_binary(op->ref, x->f, sx, sdata, scalar_shape(), want, sx);
        case_expect(&c, y, want, sx, TOL_ROUNDING);
    }
    case_end(&c);
}

BACKEND_TEST(binary, broadcasts_a_scalar_on_either_side)
{
    static const ref_shape shapes[] = {
        {0, {0}}, {1, {1}}, {1, {7}}, {2, {13, 31}}, {4, {2, 3, 5, 7}}, {2, {0, 7}},
    };
    kiln_context *ctx = test_backend_context(backend);
    for (size_t o = 0; o < N_BINARY_OPS; o++)
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
            for (int order = 0; order < 2; order++)
                for (int constant = 0; constant < 2; constant++)
                    check_binary_scalar(ctx, backend->label, &binary_ops[o], shapes[s],
                                        order == 1, constant == 1);
    kiln_context_free(ctx);
}

BACKEND_TEST(binary, reads_a_constant_operand)
{
    kiln_context *ctx = test_backend_context(backend);
    op_case       c;
    case_begin(&c, ctx, backend->label, "add of [13, 31] and a kiln_const [31]");
    ref_shape sx = shape2(13, 31), sb = ref_shape_of(KILN_SHAPE(31));
    float     bias[31], scribbled[31];
    ref_fill(bias, 31, c.seed);
    memcpy(scribbled, bias, sizeof bias);
    leaf        *x = case_input(&c, "x", sx, FILL_ANY);
    kiln_tensor *b = kiln_const(c.g, KILN_F32, sb.ndim, sb.dims, scribbled);
    /* kiln_const copies: changing the caller's array afterwards changes nothing */
    for (int i = 0; i < 31; i++)
        scribbled[i] += 100.0f;
    kiln_tensor *y = kiln_add(c.g, x->t, b);
    case_compile(&c, y);
    float *want = case_scratch(&c, x->n, sizeof *want);
    for (int r = 0; r < RUNS; r++) {
        case_run(&c);
        ref_binary(REF_ADD, x->f, sx, bias, sb, want, sx);
        case_expect(&c, y, want, sx, TOL_ROUNDING);
    }
    case_end(&c);
    kiln_context_free(ctx);
}

/* Pairs that only numpy would broadcast, or not even numpy. */
static const ref_shape rejected_pairs[][2] = {
    {{2, {13, 31}}, {2, {13, 1}}}, /* [M, 1] on [M, N]: broadcast from the left */
    {{2, {13, 31}}, {1, {13}}},    /* [M] on [M, N]                             */
    {{2, {13, 31}}, {1, {32}}},       {{3, {3, 5, 7}}, {2, {3, 7}}},
    {{3, {3, 5, 7}}, {3, {3, 1, 7}}}, {{2, {4, 5}}, {2, {5, 4}}},
};

BACKEND_TEST(binary, rejects_shapes_that_do_not_broadcast_as_a_suffix)
{
    kiln_context *ctx = test_backend_context(backend);
    for (size_t o = 0; o < N_BINARY_OPS; o++) {
        for (size_t p = 0; p < sizeof rejected_pairs / sizeof rejected_pairs[0]; p++) {
            for (int order = 0; order < 2; order++) {
                ref_shape sa  = rejected_pairs[p][order],
                          sb  = rejected_pairs[p][1 - order];
                kiln_graph *g = kiln_graph_new(ctx);
                cr_assert_not_null(g, "kiln_graph_new: %s", kiln_last_error());
                kiln_tensor *a = kiln_input(g, "a", KILN_F32, sa.ndim, sa.dims);
                kiln_tensor *b = kiln_input(g, "b", KILN_F32, sb.ndim, sb.dims);
                kiln_tensor *y = binary_ops[o].build(g, a, b);
                cr_assert_not_null(
                    y, "%s of %s and %s: expected a poisoned tensor, got NULL",
                    binary_ops[o].name, ref_shape_text(sa), ref_shape_text(sb));
                cr_assert_eq(kiln_graph_status(g), KILN_ERR_SHAPE,
                             "%s of %s and %s on %s: graph status %s, expected "
                             "KILN_ERR_SHAPE",
                             binary_ops[o].name, ref_shape_text(sa), ref_shape_text(sb),
                             backend->label, kiln_status_name(kiln_graph_status(g)));
                kiln_output(g, y);
                kiln_status st = kiln_graph_compile(g);
                cr_assert_eq(st, KILN_ERR_SHAPE, "%s of %s and %s: compile gave %s",
                             binary_ops[o].name, ref_shape_text(sa), ref_shape_text(sb),
                             kiln_status_name(st));
                kiln_graph_free(g);
            }
        }
    }
    kiln_context_free(ctx);
}

/* ---- matmul ------------------------------------------------------------------- */

static void check_matmul(kiln_context *ctx, const char *spec, int64_t m, int64_t k,
                         int64_t n, bool ta, bool tb, bool via_matmul_t)
{
    op_case c;
    case_begin(&c, ctx, spec, "%s M=%lld K=%lld N=%lld%s%s",
               via_matmul_t ? "matmul_t" : "matmul", (long long)m, (long long)k,
               (long long)n, ta ? " a^T" : "", tb ? " b^T" : "");
    ref_shape    sa = ta ? shape2(k, m) : shape2(m, k);
    ref_shape    sb = tb ? shape2(n, k) : shape2(k, n);
    ref_shape    so = shape2(m, n);
    leaf        *a  = case_input(&c, "a", sa, FILL_ANY);
    leaf        *b  = case_param(&c, "b", sb, FILL_ANY);
    kiln_tensor *y  = via_matmul_t ? kiln_matmul_t(c.g, a->t, b->t, ta, tb)
                                   : kiln_matmul(c.g, a->t, b->t);
    case_compile(&c, y);
    float *want = case_scratch(&c, ref_numel(so), sizeof *want);
    for (int r = 0; r < RUNS; r++) {
        case_run(&c);
        ref_matmul(a->f, b->f, m, k, n, ta, tb, want);
        case_expect(&c, y, want, so, tol_for_sum(k));
    }
    case_end(&c);
}

typedef struct mnk {
    int64_t m, k, n;
} mnk;

static const mnk odd_matmul_shapes[] = {
    {1, 1, 1},  {1, 7, 1}, {7, 1, 13},   {7, 13, 31},  {31, 13, 7}, {13, 31, 1},
    {1, 31, 7}, {2, 3, 4}, {16, 16, 16}, {17, 17, 17}, {33, 5, 65},
};

static const mnk large_matmul_shapes[] = {
    {67, 129, 33},
    {128, 64, 200},
    {200, 128, 64},
    {65, 257, 97},
};

BACKEND_TEST(matmul, matches_reference_for_odd_shapes)
{
    kiln_context *ctx = test_backend_context(backend);
    for (size_t i = 0; i < sizeof odd_matmul_shapes / sizeof odd_matmul_shapes[0]; i++) {
        const mnk *s = &odd_matmul_shapes[i];
        check_matmul(ctx, backend->label, s->m, s->k, s->n, false, false, false);
    }
    kiln_context_free(ctx);
}

BACKEND_TEST(matmul, matches_reference_for_every_transpose_combination)
{
    kiln_context *ctx = test_backend_context(backend);
    for (size_t i = 0; i < sizeof odd_matmul_shapes / sizeof odd_matmul_shapes[0]; i++)
        for (int t = 0; t < 4; t++) {
            const mnk *s = &odd_matmul_shapes[i];
            check_matmul(ctx, backend->label, s->m, s->k, s->n, t & 1, t & 2, true);
        }
    kiln_context_free(ctx);
}

BACKEND_TEST(matmul, matches_reference_for_large_shapes_with_partial_tiles)
{
    kiln_context *ctx = test_backend_context(backend);
    for (size_t i = 0; i < sizeof large_matmul_shapes / sizeof large_matmul_shapes[0];
         i++)
        for (int t = 0; t < 4; t++) {
            const mnk *s = &large_matmul_shapes[i];
            check_matmul(ctx, backend->label, s->m, s->k, s->n, t & 1, t & 2, t != 0);
        }
    kiln_context_free(ctx);
}

BACKEND_TEST(matmul, gives_zeros_for_k_0_and_empty_results_for_m_or_n_0)
{
    static const mnk shapes[] = {
        {7, 0, 13}, {64, 0, 65}, {0, 5, 7}, {7, 5, 0}, {0, 0, 0}, {0, 13, 1},
    };
    kiln_context *ctx = test_backend_context(backend);
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        for (int t = 0; t < 4; t++) {
            const mnk *s = &shapes[i];
            check_matmul(ctx, backend->label, s->m, s->k, s->n, t & 1, t & 2, t != 0);
        }
    kiln_context_free(ctx);
}

/* A batched product: a and b with the batch axes `batch` (ndim_b of them,
 * 1 or 2) before their matrices, for every transpose combination. */
/* Narrow products (a classifier's 10 outputs) take an unpacked path on the
 * cpu for N under two vectors: N around one and two vectors of AVX2 and
 * AVX-512, rows around its blocks of 4 and 8, every transpose. */
BACKEND_TEST(matmul, narrow_products_match_reference_for_every_transpose)
{
    static const int64_t mkn[][3] = {{64, 128, 10}, {13, 7, 9},    {5, 33, 15},
                                     {9, 3, 17},    {300, 50, 13}, {1, 64, 31},
                                     {7, 1, 11},    {130, 64, 10}};
    kiln_context        *ctx      = test_backend_context(backend);
    for (size_t i = 0; i < sizeof mkn / sizeof mkn[0]; i++)
        for (int t = 0; t < 4; t++)
            check_matmul(ctx, backend->label, mkn[i][0], mkn[i][1], mkn[i][2], t & 1,
                         t & 2, true);
    kiln_context_free(ctx);
}

/* Products of one row (a transformer decoding one position) take their own
 * unpacked path on the cpu: every transpose, N around its blocks of four
 * vectors, K around a vector, and wide enough to be split between threads. */
BACKEND_TEST(matmul, one_row_products_match_reference_for_every_transpose)
{
    static const int64_t kn[][2] = {{128, 512}, {37, 13}, {5, 70},     {1, 1},
                                    {9, 33},    {64, 3},  {3000, 1100}};
    kiln_context        *ctx     = test_backend_context(backend);
    for (size_t i = 0; i < sizeof kn / sizeof kn[0]; i++)
        for (int t = 0; t < 4; t++)
            check_matmul(ctx, backend->label, 1, kn[i][0], kn[i][1], t & 1, t & 2, true);
    kiln_context_free(ctx);
}

static void check_matmul_batched(kiln_context *ctx, const char *spec, int ndim_b,
                                 const int64_t *batch, int64_t m, int64_t k, int64_t n)
{
    int64_t entries = 1;
    for (int d = 0; d < ndim_b; d++)
        entries *= batch[d];
    for (int t = 0; t < 4; t++) {
        bool    ta = t & 1, tb = t & 2;
        op_case c;
        case_begin(&c, ctx, spec,
                   "batched matmul_t [%lld%s%lld] M=%lld K=%lld N=%lld%s%s",
                   (long long)batch[0], ndim_b > 1 ? ", " : "",
                   ndim_b > 1 ? (long long)batch[1] : 0LL, (long long)m, (long long)k,
                   (long long)n, ta ? " a^T" : "", tb ? " b^T" : "");
        ref_shape sa = scalar_shape(), sb = scalar_shape(), so = scalar_shape();
        sa.ndim = sb.ndim = so.ndim = ndim_b + 2;
        for (int d = 0; d < ndim_b; d++)
            sa.dims[d] = sb.dims[d] = so.dims[d] = batch[d];
        sa.dims[ndim_b]     = ta ? k : m;
        sa.dims[ndim_b + 1] = ta ? m : k;
        sb.dims[ndim_b]     = tb ? n : k;
        sb.dims[ndim_b + 1] = tb ? k : n;
        so.dims[ndim_b]     = m;
        so.dims[ndim_b + 1] = n;
        leaf        *a      = case_input(&c, "a", sa, FILL_ANY);
        leaf        *b      = case_param(&c, "b", sb, FILL_ANY);
        kiln_tensor *y      = kiln_matmul_t(c.g, a->t, b->t, ta, tb);
        case_compile(&c, y);
        float *want = case_scratch(&c, ref_numel(so) + 1, sizeof *want);
        for (int r = 0; r < RUNS; r++) {
            case_run(&c);
            ref_matmul_batched(a->f, b->f, entries, m, k, n, ta, tb, want);
            case_expect(&c, y, want, so, tol_for_sum(k));
        }
        case_end(&c);
    }
}

BACKEND_TEST(matmul, batched_matches_reference_per_entry_for_every_transpose)
{
    static const int64_t b1[] = {1}, b3[] = {3}, b32[] = {3, 2}, b5[] = {5};
    kiln_context        *ctx = test_backend_context(backend);
    for (size_t i = 0; i < sizeof odd_matmul_shapes / sizeof odd_matmul_shapes[0]; i++) {
        const mnk *s = &odd_matmul_shapes[i];
        check_matmul_batched(ctx, backend->label, 1, b1, s->m, s->k, s->n);
        check_matmul_batched(ctx, backend->label, 2, b32, s->m, s->k, s->n);
    }
    /* attention's shapes: many small products, and a few large ones */
    check_matmul_batched(ctx, backend->label, 2, (const int64_t[]){2, 4}, 33, 32, 33);
    check_matmul_batched(ctx, backend->label, 1, b3, 200, 65, 97);
    check_matmul_batched(ctx, backend->label, 1, b5, 7, 0, 13);
    check_matmul_batched(ctx, backend->label, 1, b3, 0, 5, 7);
    check_matmul_batched(ctx, backend->label, 2, (const int64_t[]){0, 2}, 3, 5, 7);
    kiln_context_free(ctx);
}

BACKEND_TEST(matmul, refuses_batches_that_differ_or_ndims_that_differ)
{
    static const struct {
        int     na, nb;
        int64_t a[4], b[4];
    } bad[] = {
        {3, 3, {2, 3, 4}, {3, 4, 5}},                         /* batch 2 vs 3          */
        {3, 2, {2, 3, 4}, {4, 5}},                            /* no broadcasting       */
        {4, 4, {2, 2, 3, 4}, {2, 3, 4, 5}}, {1, 1, {4}, {4}}, /* vectors               */
        {3, 3, {2, 3, 4}, {2, 5, 4}},                         /* inner dims            */
    };
    kiln_context *ctx = test_backend_context(backend);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        kiln_graph  *g = kiln_graph_new(ctx);
        kiln_tensor *a = kiln_input(g, "a", KILN_F32, bad[i].na, bad[i].a);
        kiln_tensor *b = kiln_input(g, "b", KILN_F32, bad[i].nb, bad[i].b);
        kiln_matmul(g, a, b);
        cr_expect_eq(kiln_graph_status(g), KILN_ERR_SHAPE, "case %zu on %s: %s", i,
                     backend->label, kiln_status_name(kiln_graph_status(g)));
        cr_expect(strstr(kiln_graph_error(g), "matmul") != NULL, "case %zu: \"%s\"", i,
                  kiln_graph_error(g));
        kiln_graph_free(g);
    }
    kiln_context_free(ctx);
}

/* Sizes on each side of every register tile and cache block of the cpu
 * backend's packed GEMM, for each of its ISAs: tiles of MR x NR = 4 x 8
 * (portable), 6 x 16 (AVX2), 14 x 32 (AVX-512), with a kernel for each row
 * count of an edge panel and one-vector kernels for narrow edges; MC = 128,
 * 144, 168; KC = 256 (K is cut into equal blocks, so 257 and 513 give uneven
 * ones); NC = 2048 and 4096. Each is run with every transpose. */
static const mnk gemm_edge_shapes[] = {
    /* M around MR, N around NR and the vector width */
    {3, 9, 7},
    {4, 9, 8},
    {5, 9, 9},
    {5, 17, 15},
    {6, 17, 16},
    {7, 17, 17},
    {13, 5, 31},
    {14, 5, 32},
    {15, 5, 33},
    {27, 3, 63},
    {28, 3, 64},
    {29, 3, 65},
    {64, 40, 10},
    {100, 13, 3},
    {97, 70, 16},
    {70, 33, 1},
    /* narrow N on each side of the cpu backend's unpacked path (M <= 512) */
    {512, 6, 10},
    {513, 6, 10},
    /* ... and big enough for it to be split across threads by rows */
    {100, 131, 10},
    {61, 257, 13},
    {509, 64, 16},
    /* K around KC */
    {9, 255, 17},
    {9, 256, 17},
    {9, 257, 17},
    {15, 511, 33},
    {15, 513, 33},
    /* M around MC */
    {127, 19, 9},
    {128, 19, 9},
    {129, 19, 9},
    {143, 7, 17},
    {144, 7, 17},
    {145, 7, 17},
    {167, 11, 33},
    {168, 11, 33},
    {169, 11, 33},
    /* N around NC */
    {3, 5, 2047},
    {3, 5, 2049},
    {2, 3, 4097},
    /* big enough to be split across threads, with edges on every side */
    {171, 259, 97},
};

BACKEND_TEST(matmul, matches_reference_around_every_tile_and_block_edge)
{
    kiln_context *ctx = test_backend_context(backend);
    for (size_t i = 0; i < sizeof gemm_edge_shapes / sizeof gemm_edge_shapes[0]; i++)
        for (int t = 0; t < 4; t++) {
            const mnk *s = &gemm_edge_shapes[i];
            check_matmul(ctx, backend->label, s->m, s->k, s->n, t & 1, t & 2, true);
        }
    kiln_context_free(ctx);
}

/* relu(a + b): the backend may run both nodes in one pass; both results must
 * be right whether the sum is read afterwards (an output) or its storage is
 * free for the relu (not an output), and whether b is a bias or full-size. */
static void check_add_relu(kiln_context *ctx, const char *spec, ref_shape sa,
                           ref_shape sb, bool sum_is_output)
{
    op_case c;
    case_begin(&c, ctx, spec, "relu(add) of %s and %s, sum %s", ref_shape_text(sa),
               ref_shape_text(sb), sum_is_output ? "read" : "not kept");
    leaf *a = case_input(&c, "a", sa, FILL_ANY);
    leaf *b = case_input(&c, "b", sb, FILL_ANY);
    /* scale(a) first, so that the sum's operand is itself computed storage */
    kiln_tensor *sum = kiln_add(c.g, kiln_scale(c.g, a->t, 2.0f), b->t);
    kiln_tensor *y   = kiln_relu(c.g, sum);
    if (sum_is_output)
        case_output(&c, sum);
    case_compile(&c, y);
    float *want_sum = case_scratch(&c, a->n, sizeof *want_sum);
    float *want     = case_scratch(&c, a->n, sizeof *want);
    for (int r = 0; r < RUNS; r++) {
        case_run(&c);
        ref_unary(REF_SCALE, a->f, a->n, 2.0f, want);
        ref_binary(REF_ADD, want, sa, b->f, sb, want_sum, sa);
        ref_unary(REF_RELU, want_sum, a->n, 0.0f, want);
        case_expect(&c, y, want, sa, TOL_ROUNDING);
        if (sum_is_output)
            case_expect(&c, sum, want_sum, sa, TOL_ROUNDING);
    }
    case_end(&c);
}

BACKEND_TEST(fusion, add_then_relu_gives_both_results)
{
    static const ref_shape pairs[][2] = {
        {{2, {13, 31}}, {1, {31}}},
        {{2, {13, 31}}, {2, {13, 31}}},
        {{2, {600, 129}}, {1, {129}}}, /* split across threads */
        {{2, {7, 5}}, {0, {0}}},
    };
    kiln_context *ctx = test_backend_context(backend);
    for (size_t p = 0; p < sizeof pairs / sizeof pairs[0]; p++)
        for (int keep = 0; keep < 2; keep++)
            check_add_relu(ctx, backend->label, pairs[p][0], pairs[p][1], keep == 1);
    kiln_context_free(ctx);
}

/* ---- reductions --------------------------------------------------------------- */

static void check_reduce_all(kiln_context *ctx, const char *spec, bool mean, ref_shape s)
{
    op_case c;
    case_begin(&c, ctx, spec, "%s of all of %s", mean ? "mean" : "sum",
               ref_shape_text(s));
    leaf        *x = case_input(&c, "x", s, FILL_ANY);
    kiln_tensor *y = mean ? kiln_mean(c.g, x->t) : kiln_sum(c.g, x->t);
    case_compile(&c, y);
    for (int r = 0; r < RUNS; r++) {
        case_run(&c);
        float want = mean ? ref_mean_all(x->f, x->n) : ref_sum_all(x->f, x->n);
        case_expect(&c, y, &want, scalar_shape(), tol_for_sum((int64_t)x->n));
    }
    case_end(&c);
}

/* Includes empty tensors: their sum is 0 and their mean NaN (kiln.h); and
 * ones long enough that a device cuts them into parts summed by many
 * work-groups, one with a last part shorter than the others. */
static const ref_shape reduce_all_shapes[] = {
    {0, {0}},          {1, {1}},        {1, {7}},    {2, {13, 31}}, {3, {31, 1, 13}},
    {4, {2, 3, 5, 7}}, {2, {257, 129}}, {2, {0, 5}}, {1, {0}},      {1, {100003}},
};

BACKEND_TEST(sum, matches_reference_over_all_elements_and_is_0_when_empty)
{
    kiln_context *ctx = test_backend_context(backend);
    for (size_t s = 0; s < sizeof reduce_all_shapes / sizeof reduce_all_shapes[0]; s++)
        check_reduce_all(ctx, backend->label, false, reduce_all_shapes[s]);
    kiln_context_free(ctx);
}

BACKEND_TEST(mean, matches_reference_over_all_elements_and_is_nan_when_empty)
{
    kiln_context *ctx = test_backend_context(backend);
    for (size_t s = 0; s < sizeof reduce_all_shapes / sizeof reduce_all_shapes[0]; s++)
        check_reduce_all(ctx, backend->label, true, reduce_all_shapes[s]);
    kiln_context_free(ctx);
}

/* A sum over `axis` (-1: over everything) of 10^6 values in [0.1, 2]: added
 * in order in float they drift by about 1e-4 of the total; in parts over
 * many work-groups, within a few roundings of the exact sum. A second run
 * on the same data gives the same bits: the partition does not depend on
 * timing. */
static void check_long_sum(kiln_context *ctx, const char *spec, ref_shape s, int axis)
{
    op_case c;
    case_begin(&c, ctx, spec, "sum of %s over axis %d", ref_shape_text(s), axis);
    leaf        *x = case_input(&c, "x", s, FILL_POSITIVE);
    kiln_tensor *y = axis < 0 ? kiln_sum(c.g, x->t) : kiln_sum_axis(c.g, x->t, axis, false);
    case_compile(&c, y);
    ref_shape so   = axis < 0 ? scalar_shape() : ref_reduce_shape(s, axis, false);
    size_t    n    = ref_numel(so);
    float    *want = case_scratch(&c, n, sizeof *want);
    float    *once = case_scratch(&c, n, sizeof *once);
    float    *again = case_scratch(&c, n, sizeof *again);
    case_run(&c);
    if (axis < 0)
        want[0] = ref_sum_all(x->f, x->n);
    else
        ref_sum_axis(x->f, s, axis, want);
    case_expect(&c, y, want, so, (ref_tol){0.0, 2e-6});
    read_output(&c, y, once, n);
    cr_assert_eq(kiln_graph_run(c.g), KILN_OK, "%s on %s: %s", c.label, spec,
                 kiln_last_error());
    read_output(&c, y, again, n);
    cr_assert(memcmp(once, again, n * sizeof *once) == 0,
              "%s on %s: a second run on the same data gave other bits", c.label, spec);
    case_end(&c);
}

BACKEND_TEST(sum, keeps_precision_over_a_million_terms_and_repeats_bit_for_bit)
{
    kiln_context *ctx = test_backend_context(backend);
    check_long_sum(ctx, backend->label, ref_shape_of(KILN_SHAPE(1000003)), -1);
    /* a few long runs; few columns, many rows; many columns */
    check_long_sum(ctx, backend->label, ref_shape_of(KILN_SHAPE(3, 333337)), 1);
    check_long_sum(ctx, backend->label, ref_shape_of(KILN_SHAPE(250007, 4)), 0);
    check_long_sum(ctx, backend->label, ref_shape_of(KILN_SHAPE(1009, 997)), 0);
    kiln_context_free(ctx);
}

static void check_reduce_axis(kiln_context *ctx, const char *spec, bool mean, ref_shape s,
                              int axis, bool keepdim)
{
    op_case c;
    case_begin(&c, ctx, spec, "%s of %s over axis %d%s", mean ? "mean" : "sum",
               ref_shape_text(s), axis, keepdim ? " keepdim" : "");
    ref_shape    so = ref_reduce_shape(s, axis, keepdim);
    leaf        *x  = case_input(&c, "x", s, FILL_ANY);
    kiln_tensor *y  = mean ? kiln_mean_axis(c.g, x->t, axis, keepdim)
                           : kiln_sum_axis(c.g, x->t, axis, keepdim);
    case_compile(&c, y);
    float *want = case_scratch(&c, ref_numel(so), sizeof *want);
    int    ax   = axis < 0 ? axis + s.ndim : axis;
    for (int r = 0; r < RUNS; r++) {
        case_run(&c);
        if (mean)
            ref_mean_axis(x->f, s, axis, want);
        else
            ref_sum_axis(x->f, s, axis, want);
        case_expect(&c, y, want, so, tol_for_sum(s.dims[ax]));
    }
    case_end(&c);
}

static void check_every_axis(kiln_context *ctx, const char *spec, bool mean)
{
    static const ref_shape shapes[] = {
        {1, {7}},       {1, {1}},          {2, {13, 31}},  {2, {1, 31}},
        {3, {3, 5, 7}}, {4, {2, 3, 5, 7}}, {2, {129, 67}}, {2, {3, 0}},
        {3, {0, 4, 5}}, {2, {600, 129}}, /* enough rows to be split across threads */
        {3, {5, 1000, 3}}, /* r cut into parts */
    };
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int axis = -shapes[s].ndim; axis < shapes[s].ndim; axis++)
            for (int keep = 0; keep < 2; keep++)
                check_reduce_axis(ctx, spec, mean, shapes[s], axis, keep == 1);
}

BACKEND_TEST(sum_axis, matches_reference_for_every_axis_with_and_without_keepdim)
{
    kiln_context *ctx = test_backend_context(backend);
    check_every_axis(ctx, backend->label, false);
    kiln_context_free(ctx);
}

BACKEND_TEST(mean_axis, matches_reference_for_every_axis_with_and_without_keepdim)
{
    kiln_context *ctx = test_backend_context(backend);
    check_every_axis(ctx, backend->label, true);
    kiln_context_free(ctx);
}

/* ---- along the last axis -------------------------------------------------------- */

typedef enum last_axis_op {
    LAST_MAX,
    LAST_ARGMAX,
    LAST_SOFTMAX,
    LAST_LOG_SOFTMAX
} last_axis_op;

static const char *const last_axis_names[] = {"max", "argmax", "softmax", "log_softmax"};

static void check_last_axis(kiln_context *ctx, const char *spec, last_axis_op op,
                            ref_shape s, fill_kind fill)
{
    op_case c;
    case_begin(&c, ctx, spec, "%s of %s %s", last_axis_names[op], ref_shape_text(s),
               fill_names[fill]);
    int64_t   cols = s.dims[s.ndim - 1];
    int64_t   rows = (int64_t)ref_numel(s) / cols;
    ref_shape so   = s;
    if (op == LAST_MAX || op == LAST_ARGMAX)
        so.ndim--; /* the last axis is dropped */
    leaf        *x = case_input(&c, "x", s, fill);
    kiln_tensor *y = NULL;
    switch (op) {
    case LAST_MAX: y = kiln_max(c.g, x->t); break;
    case LAST_ARGMAX: y = kiln_argmax(c.g, x->t); break;
    case LAST_SOFTMAX: y = kiln_softmax(c.g, x->t); break;
    case LAST_LOG_SOFTMAX: y = kiln_log_softmax(c.g, x->t); break;
    }
    case_compile(&c, y);
    float   *want   = case_scratch(&c, ref_numel(so), sizeof *want);
    int32_t *want_i = case_scratch(&c, ref_numel(so), sizeof *want_i);
    float   *got    = case_scratch(&c, ref_numel(so), sizeof *got);
    ref_tol  tol    = {1e-6, 1e-5};
    if (fill_is_huge(fill))
        tol = (ref_tol){2e-4, 2e-4};
    for (int r = 0; r < RUNS; r++) {
        case_run(&c);
        switch (op) {
        case LAST_MAX:
            ref_max_last(x->f, rows, cols, want);
            case_expect(&c, y, want, so, TOL_EXACT);
            break;
        case LAST_ARGMAX:
            ref_argmax_last(x->f, rows, cols, want_i);
            case_expect_i32(&c, y, want_i, so);
            break;
        case LAST_SOFTMAX:
            ref_softmax_last(x->f, rows, cols, want);
            case_expect(&c, y, want, so, tol);
            break;
        case LAST_LOG_SOFTMAX:
            ref_log_softmax_last(x->f, rows, cols, want);
            case_expect(&c, y, want, so, tol);
            break;
        }
        if (op == LAST_SOFTMAX || op == LAST_LOG_SOFTMAX) {
            read_output(&c, y, got, ref_numel(so));
            ref_expect_finite(c.label, got, so);
        }
    }
    case_end(&c);
}

static const ref_shape last_axis_shapes[] = {
    {1, {1}},       {1, {7}},          {2, {1, 1}},   {2, {31, 1}}, {2, {13, 31}},
    {3, {3, 5, 7}}, {4, {2, 3, 5, 7}}, {2, {3, 129}}, {2, {0, 7}},
};
#define N_LAST_AXIS_SHAPES (sizeof last_axis_shapes / sizeof last_axis_shapes[0])

BACKEND_TEST(max, matches_reference_along_the_last_axis)
{
    kiln_context *ctx = test_backend_context(backend);
    for (size_t s = 0; s < N_LAST_AXIS_SHAPES; s++) {
        check_last_axis(ctx, backend->label, LAST_MAX, last_axis_shapes[s], FILL_ANY);
        check_last_axis(ctx, backend->label, LAST_MAX, last_axis_shapes[s], FILL_TIES);
    }
    kiln_context_free(ctx);
}

BACKEND_TEST(argmax, returns_the_first_index_of_the_maximum_as_i32)
{
    kiln_context *ctx = test_backend_context(backend);
    for (size_t s = 0; s < N_LAST_AXIS_SHAPES; s++) {
        check_last_axis(ctx, backend->label, LAST_ARGMAX, last_axis_shapes[s], FILL_ANY);
        check_last_axis(ctx, backend->label, LAST_ARGMAX, last_axis_shapes[s], FILL_TIES);
    }
    kiln_context_free(ctx);
}

BACKEND_TEST(softmax, matches_reference_along_the_last_axis)
{
    kiln_context *ctx = test_backend_context(backend);
    for (size_t s = 0; s < N_LAST_AXIS_SHAPES; s++)
        check_last_axis(ctx, backend->label, LAST_SOFTMAX, last_axis_shapes[s], FILL_ANY);
    kiln_context_free(ctx);
}

BACKEND_TEST(log_softmax, matches_reference_along_the_last_axis)
{
    kiln_context *ctx = test_backend_context(backend);
    for (size_t s = 0; s < N_LAST_AXIS_SHAPES; s++)
        check_last_axis(ctx, backend->label, LAST_LOG_SOFTMAX, last_axis_shapes[s],
                        FILL_ANY);
    kiln_context_free(ctx);
}

BACKEND_TEST(softmax, stays_finite_for_inputs_around_plus_and_minus_1000)
{
    static const ref_shape shapes[] = {{2, {4, 13}}, {1, {1}}, {2, {3, 129}}};
    static const fill_kind fills[]  = {
         FILL_NEAR_PLUS_1000,
         FILL_NEAR_MINUS_1000,
         FILL_PLUS_MINUS_1000,
    };
    kiln_context *ctx = test_backend_context(backend);
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (size_t f = 0; f < sizeof fills / sizeof fills[0]; f++) {
            check_last_axis(ctx, backend->label, LAST_SOFTMAX, shapes[s], fills[f]);
            check_last_axis(ctx, backend->label, LAST_LOG_SOFTMAX, shapes[s], fills[f]);
        }
    kiln_context_free(ctx);
}

/* ---- layer_norm ------------------------------------------------------------------------ */

/* x [..., C] (leaves x, weight and, unless without_bias, bias). */
static void check_layer_norm(kiln_context *ctx, const char *spec, ref_shape s,
                             bool with_bias, float eps, fill_kind fill)
{
    op_case c;
    case_begin(&c, ctx, spec, "layer_norm of %s %s%s, eps %g", ref_shape_text(s),
               fill_names[fill], with_bias ? "" : ", no bias", (double)eps);
    int64_t      cols = s.dims[s.ndim - 1];
    int64_t      rows = (int64_t)ref_numel(s) / cols;
    ref_shape    sc   = ref_shape_of(KILN_SHAPE(cols));
    leaf        *x    = case_input(&c, "x", s, fill);
    leaf        *w    = case_param(&c, "weight", sc, FILL_ANY);
    leaf        *b    = with_bias ? case_param(&c, "bias", sc, FILL_ANY) : NULL;
    kiln_tensor *y    = kiln_layer_norm(c.g, x->t, w->t, b ? b->t : NULL, eps);
    case_compile(&c, y);
    float  *want = case_scratch(&c, x->n, sizeof *want);
    float  *got  = case_scratch(&c, x->n, sizeof *got);
    ref_tol tol  = {2e-6, 1e-5};
    for (int r = 0; r < RUNS; r++) {
        case_run(&c);
        ref_layer_norm_last(x->f, w->f, b ? b->f : NULL, rows, cols, eps, want);
        case_expect(&c, y, want, s, tol);
        read_output(&c, y, got, x->n);
        ref_expect_finite(c.label, got, s);
    }
    case_end(&c);
}

/* C = 1 (var 0: y is the bias), short rows, rows that end in part of a
 * vector, and rows of several vectors; leading dimensions 1x1, 3x5, 2x3x4. */
static const int64_t layer_norm_cols[] = {1, 7, 33, 130};

static ref_shape layer_norm_shape(int lead, int64_t cols)
{
    static const ref_shape leads[] = {{2, {1, 1}}, {2, {3, 5}}, {3, {2, 3, 4}}};
    ref_shape              s       = leads[lead];
    s.dims[s.ndim++]               = cols;
    return s;
}

BACKEND_TEST(layer_norm, matches_reference_for_odd_rows_and_leading_dimensions)
{
    kiln_context *ctx = test_backend_context(backend);
    for (int lead = 0; lead < 3; lead++)
        for (size_t k = 0; k < sizeof layer_norm_cols / sizeof layer_norm_cols[0]; k++)
            check_layer_norm(ctx, backend->label,
                             layer_norm_shape(lead, layer_norm_cols[k]), true, 1e-5f,
                             FILL_ANY);
    check_layer_norm(ctx, backend->label, ref_shape_of(KILN_SHAPE(33)), true, 1e-5f,
                     FILL_ANY);
    kiln_context_free(ctx);
}

BACKEND_TEST(layer_norm, matches_reference_without_bias_and_with_other_eps)
{
    kiln_context *ctx = test_backend_context(backend);
    check_layer_norm(ctx, backend->label, layer_norm_shape(1, 7), false, 1e-5f, FILL_ANY);
    check_layer_norm(ctx, backend->label, layer_norm_shape(2, 130), false, 0.0f,
                     FILL_ANY);
    check_layer_norm(ctx, backend->label, layer_norm_shape(1, 33), true, 0.5f, FILL_ANY);
    kiln_context_free(ctx);
}

/* Rows around 1000 with a spread of 2: a one-pass variance in f32 would lose
 * every digit to E[x^2] - E[x]^2; the two passes keep them. */
BACKEND_TEST(layer_norm, keeps_precision_for_rows_far_from_zero)
{
    kiln_context *ctx = test_backend_context(backend);
    for (size_t k = 1; k < sizeof layer_norm_cols / sizeof layer_norm_cols[0]; k++) {
        check_layer_norm(ctx, backend->label, layer_norm_shape(1, layer_norm_cols[k]),
                         true, 1e-5f, FILL_NEAR_PLUS_1000);
        check_layer_norm(ctx, backend->label, layer_norm_shape(0, layer_norm_cols[k]),
                         true, 1e-5f, FILL_NEAR_MINUS_1000);
    }
    kiln_context_free(ctx);
}

Test(layer_norm, refuses_bad_shapes_and_eps_naming_the_op)
{
    kiln_context *ctx = test_context(test_first_spec());
    struct {
        ref_shape   x, w, b;
        float       eps;
        const char *want;
    } bad[] = {
        {{2, {3, 4}}, {1, {5}}, {1, {4}}, 1e-5f, "weight [5]"},
        {{2, {3, 4}}, {1, {4}}, {2, {1, 4}}, 1e-5f, "bias [1, 4]"},
        {{2, {3, 4}}, {1, {4}}, {1, {4}}, -1.0f, "eps"},
        {{2, {3, 4}}, {1, {4}}, {1, {4}}, NAN, "eps"},
        {{2, {3, 0}}, {1, {0}}, {1, {0}}, 1e-5f, "[3, 0]"},
        {{0, {0}}, {1, {1}}, {1, {1}}, 1e-5f, "x []"},
    };
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        kiln_graph  *g = kiln_graph_new(ctx);
        kiln_tensor *x = kiln_input(g, "x", KILN_F32, bad[k].x.ndim, bad[k].x.dims);
        kiln_tensor *w = kiln_param(g, "w", bad[k].w.ndim, bad[k].w.dims);
        kiln_tensor *b = kiln_param(g, "b", bad[k].b.ndim, bad[k].b.dims);
        cr_assert_eq(kiln_graph_status(g), KILN_OK, "case %zu: %s", k, graph_error(g));
        kiln_tensor *y = kiln_layer_norm(g, x, w, b, bad[k].eps);
        cr_assert_not_null(y, "case %zu: a bad layer_norm returns a poisoned tensor", k);
        cr_assert_neq(kiln_graph_status(g), KILN_OK, "case %zu: no error", k);
        const char *e = kiln_graph_error(g);
        cr_assert(e && strstr(e, "layer_norm") && strstr(e, bad[k].want),
                  "case %zu: error \"%s\" does not name layer_norm and \"%s\"", k,
                  e ? e : "(none)", bad[k].want);
        kiln_graph_free(g);
    }
    kiln_context_free(ctx);
}

/* ---- shape ops ---------------------------------------------------------------------- */

/* reshape(x, target) as an output, and reshape(exp(x), target) feeding neg:
 * a view of a leaf and a view of a computed tensor. */
static void check_reshape(kiln_context *ctx, const char *spec, ref_shape s,
                          ref_shape target, ref_shape want_shape)
{
    op_case c;
    case_begin(&c, ctx, spec, "reshape of %s to %s", ref_shape_text(s),
               ref_shape_text(target));
    leaf        *x       = case_input(&c, "x", s, FILL_ANY);
    kiln_tensor *view    = kiln_reshape(c.g, x->t, target.ndim, target.dims);
    kiln_tensor *chained = kiln_neg(c.g, kiln_reshape(c.g, kiln_exp(c.g, x->t),
                                                      target.ndim, target.dims));
    case_output(&c, view);
    case_compile(&c, chained);
    float *want = case_scratch(&c, x->n, sizeof *want);
    float *tmp  = case_scratch(&c, x->n, sizeof *tmp);
    for (int r = 0; r < RUNS; r++) {
        case_run(&c);
        ref_reshape(x->f, x->n, want);
        case_expect(&c, view, want, want_shape, TOL_EXACT);
        ref_unary(REF_EXP, x->f, x->n, 0.0f, tmp);
        ref_reshape(tmp, x->n, want);
        ref_unary(REF_NEG, want, x->n, 0.0f, want);
        case_expect(&c, chained, want, want_shape, TOL_TRANSCEND);
    }
    case_end(&c);
}

BACKEND_TEST(reshape, keeps_row_major_order_and_infers_minus_1)
{
    static const struct {
        ref_shape from, to, want;
    } cases[] = {
        {{2, {6, 35}}, {3, {5, -1, 7}}, {3, {5, 6, 7}}},
        {{4, {2, 3, 5, 7}}, {1, {210}}, {1, {210}}},
        {{4, {2, 3, 5, 7}}, {1, {-1}}, {1, {210}}},
        {{1, {13}}, {2, {13, 1}}, {2, {13, 1}}},
        {{2, {13, 31}}, {2, {31, -1}}, {2, {31, 13}}},
        {{1, {1}}, {0, {0}}, {0, {0}}},
        {{0, {0}}, {3, {1, 1, -1}}, {3, {1, 1, 1}}},
        {{2, {0, 7}}, {3, {7, 0, 1}}, {3, {7, 0, 1}}},
    };
    kiln_context *ctx = test_backend_context(backend);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        check_reshape(ctx, backend->label, cases[i].from, cases[i].to, cases[i].want);
    kiln_context_free(ctx);
}

static void check_flatten(kiln_context *ctx, const char *spec, ref_shape s)
{
    op_case c;
    case_begin(&c, ctx, spec, "flatten of %s", ref_shape_text(s));
    ref_shape    so      = ref_flatten_shape(s);
    leaf        *x       = case_input(&c, "x", s, FILL_ANY);
    kiln_tensor *view    = kiln_flatten(c.g, x->t);
    kiln_tensor *chained = kiln_scale(c.g, kiln_flatten(c.g, kiln_relu(c.g, x->t)), 2.0f);
    case_output(&c, view);
    case_compile(&c, chained);
    float *want = case_scratch(&c, x->n, sizeof *want);
    for (int r = 0; r < RUNS; r++) {
        case_run(&c);
        ref_reshape(x->f, x->n, want);
        case_expect(&c, view, want, so, TOL_EXACT);
        ref_unary(REF_RELU, x->f, x->n, 0.0f, want);
        ref_unary(REF_SCALE, want, x->n, 2.0f, want);
        case_expect(&c, chained, want, so, TOL_EXACT);
    }
    case_end(&c);
}

BACKEND_TEST(flatten, merges_every_dimension_after_the_first)
{
    static const ref_shape shapes[] = {
        {4, {3, 2, 5, 7}}, {4, {1, 3, 4, 4}}, {2, {4, 13}},
        {3, {5, 1, 1}},    {3, {7, 1, 13}},   {4, {0, 3, 2, 2}},
    };
    kiln_context *ctx = test_backend_context(backend);
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        check_flatten(ctx, backend->label, shapes[s]);
    kiln_context_free(ctx);
}

static void check_transpose(kiln_context *ctx, const char *spec, int64_t rows,
                            int64_t cols)
{
    op_case   c;
    ref_shape s = shape2(rows, cols), so = shape2(cols, rows);
    case_begin(&c, ctx, spec, "transpose of %s", ref_shape_text(s));
    leaf        *x = case_input(&c, "x", s, FILL_ANY);
    kiln_tensor *y = kiln_transpose(c.g, x->t);
    case_compile(&c, y);
    float *want = case_scratch(&c, x->n, sizeof *want);
    for (int r = 0; r < RUNS; r++) {
        case_run(&c);
        ref_transpose(x->f, rows, cols, want);
        case_expect(&c, y, want, so, TOL_EXACT);
    }
    case_end(&c);
}

BACKEND_TEST(transpose, matches_reference_for_odd_shapes)
{
    static const int64_t shapes[][2] = {
        {1, 1},  {1, 7},   {7, 1},  {13, 31}, {31, 13},   {16, 16},   {67, 129},
        {0, 5},  {5, 0},   {32, 32}, {64, 96}, {33, 65}, {1, 1000}, {1000, 1},
        {257, 3}, {3, 257}, /* whole tiles, partial tiles in either direction */
    };
    kiln_context *ctx = test_backend_context(backend);
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        check_transpose(ctx, backend->label, shapes[s][0], shapes[s][1]);
    kiln_context_free(ctx);
}

static void check_permute(kiln_context *ctx, const char *spec, ref_shape s,
                          const int *perm)
{
    op_case   c;
    ref_shape so        = s;
    char      ptext[32] = "";
    for (int d = 0; d < s.ndim; d++) {
        so.dims[d] = s.dims[perm[d]];
        snprintf(ptext + strlen(ptext), sizeof ptext - strlen(ptext), "%s%d",
                 d ? "," : "", perm[d]);
    }
    case_begin(&c, ctx, spec, "permute {%s} of %s", ptext, ref_shape_text(s));
    leaf        *x = case_input(&c, "x", s, FILL_ANY);
    kiln_tensor *y = kiln_permute(c.g, x->t, perm);
    case_compile(&c, y);
    float *want = case_scratch(&c, x->n + 1, sizeof *want);
    for (int r = 0; r < RUNS; r++) {
        case_run(&c);
        ref_permute(x->f, s, perm, want);
        case_expect(&c, y, want, so, TOL_EXACT);
    }
    case_end(&c);
}

BACKEND_TEST(permute, matches_reference_for_every_3d_order)
{
    static const int perms[6][3] = {{0, 1, 2}, {0, 2, 1}, {1, 0, 2},
                                    {1, 2, 0}, {2, 0, 1}, {2, 1, 0}};
    kiln_context    *ctx         = test_backend_context(backend);
    for (int p = 0; p < 6; p++) {
        check_permute(ctx, backend->label, ref_shape_of(KILN_SHAPE(5, 37, 33)), perms[p]);
        check_permute(ctx, backend->label, ref_shape_of(KILN_SHAPE(1, 7, 1)), perms[p]);
        check_permute(ctx, backend->label, ref_shape_of(KILN_SHAPE(3, 0, 2)), perms[p]);
    }
    kiln_context_free(ctx);
}

BACKEND_TEST(permute, matches_reference_for_4d_orders_and_low_ranks)
{
    static const int perms[][4] = {
        {0, 2, 1, 3}, /* [B,T,H,D] <-> [B,H,T,D] */
        {0, 2, 3, 1}, {0, 3, 1, 2}, {3, 1, 0, 2},
        {1, 0, 3, 2}, {3, 2, 1, 0}, {0, 1, 2, 3},
    };
    kiln_context *ctx = test_backend_context(backend);
    for (size_t p = 0; p < sizeof perms / sizeof perms[0]; p++) {
        check_permute(ctx, backend->label, ref_shape_of(KILN_SHAPE(2, 33, 3, 17)),
                      perms[p]);
        check_permute(ctx, backend->label, ref_shape_of(KILN_SHAPE(3, 65, 4, 40)),
                      perms[p]);
    }
    check_permute(ctx, backend->label, shape2(13, 31), (const int[]){1, 0});
    check_permute(ctx, backend->label, shape2(67, 129), (const int[]){1, 0});
    check_permute(ctx, backend->label, ref_shape_of(KILN_SHAPE(7)), (const int[]){0});
    check_permute(ctx, backend->label, scalar_shape(), NULL);
    kiln_context_free(ctx);
}

BACKEND_TEST(permute, refuses_a_perm_that_is_not_a_permutation)
{
    static const int bad[][3] = {{0, 1, 1}, {0, 1, 3}, {-1, 0, 1}};
    kiln_context    *ctx      = test_backend_context(backend);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        kiln_graph  *g = kiln_graph_new(ctx);
        kiln_tensor *x = kiln_input(g, "x", KILN_F32, KILN_SHAPE(2, 3, 4));
        kiln_permute(g, x, bad[i]);
        cr_expect_eq(kiln_graph_status(g), KILN_ERR_INVALID_ARG, "case %zu on %s: %s", i,
                     backend->label, kiln_status_name(kiln_graph_status(g)));
        cr_expect(strstr(kiln_graph_error(g), "permute") != NULL, "case %zu: \"%s\"", i,
                  kiln_graph_error(g));
        kiln_graph_free(g);
    }
    kiln_context_free(ctx);
}

static void check_slice(kiln_context *ctx, const char *spec, ref_shape s, int axis,
                        int64_t start, int64_t length)
{
    op_case   c;
    int       a  = axis < 0 ? axis + s.ndim : axis;
    ref_shape so = s;
    so.dims[a]   = length;
    case_begin(&c, ctx, spec, "slice of %s along %d from %lld for %lld",
               ref_shape_text(s), axis, (long long)start, (long long)length);
    leaf        *x = case_input(&c, "x", s, FILL_ANY);
    kiln_tensor *y = kiln_slice(c.g, x->t, axis, start, length);
    case_compile(&c, y);
    float *want = case_scratch(&c, ref_numel(so) + 1, sizeof *want);
    for (int r = 0; r < RUNS; r++) {
        case_run(&c);
        ref_slice(x->f, s, a, start, length, want);
        case_expect(&c, y, want, so, TOL_EXACT);
    }
    case_end(&c);
}

/* Windows at the start, in the middle and at the end of every axis, one
 * element, the whole axis and none. */
static void check_slices_of(kiln_context *ctx, const char *spec, ref_shape s)
{
    for (int a = 0; a < s.ndim; a++) {
        int64_t n = s.dims[a];
        check_slice(ctx, spec, s, a, 0, n / 2 ? n / 2 : 1);
        check_slice(ctx, spec, s, a, n / 3, n - 2 * (n / 3) ? n - 2 * (n / 3) : 1);
        check_slice(ctx, spec, s, a, n - 1, 1);
        check_slice(ctx, spec, s, a, 0, n);
        check_slice(ctx, spec, s, a, n / 2, 0);
    }
}

BACKEND_TEST(slice, matches_reference_at_the_start_middle_and_end_of_each_axis)
{
    kiln_context *ctx = test_backend_context(backend);
    check_slices_of(ctx, backend->label, ref_shape_of(KILN_SHAPE(5, 7, 33)));
    check_slices_of(ctx, backend->label, ref_shape_of(KILN_SHAPE(2, 3, 4, 17)));
    check_slices_of(ctx, backend->label, ref_shape_of(KILN_SHAPE(37)));
    /* a fused qkv [B, T, 3C] cut along the last axis */
    for (int k = 0; k < 3; k++)
        check_slice(ctx, backend->label, ref_shape_of(KILN_SHAPE(2, 5, 3 * 24)), -1,
                    k * 24, 24);
    kiln_context_free(ctx);
}

BACKEND_TEST(slice, refuses_a_window_outside_the_axis)
{
    static const struct {
        int     axis;
        int64_t start, length;
        bool    shape; /* KILN_ERR_SHAPE, else KILN_ERR_INVALID_ARG (axis) */
    } bad[] = {
        {1, 3, 2, true}, {1, -1, 2, true}, {1, 0, -1, true},
        {0, 3, 0, true}, {3, 0, 1, false}, {-4, 0, 1, false},
    };
    kiln_context *ctx = test_backend_context(backend);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        kiln_graph  *g = kiln_graph_new(ctx);
        kiln_tensor *x = kiln_input(g, "x", KILN_F32, KILN_SHAPE(2, 4, 3));
        kiln_slice(g, x, bad[i].axis, bad[i].start, bad[i].length);
        kiln_status want = bad[i].shape ? KILN_ERR_SHAPE : KILN_ERR_INVALID_ARG;
        cr_expect_eq(kiln_graph_status(g), want, "case %zu on %s: %s", i, backend->label,
                     kiln_status_name(kiln_graph_status(g)));
        cr_expect(strstr(kiln_graph_error(g), "slice") != NULL, "case %zu: \"%s\"", i,
                  kiln_graph_error(g));
        kiln_graph_free(g);
    }
    kiln_context_free(ctx);
}

/* ---- convolution and pooling ------------------------------------------------------------ */

typedef struct conv_case {
    ref_conv2d_shape cs;
    bool             bias;
} conv_case;

static void check_conv2d(kiln_context *ctx, const char *spec, const conv_case *cc)
{
    const ref_conv2d_shape *cs = &cc->cs;
    int64_t   oh = ref_conv_out_size(cs->h, cs->kh, cs->stride, cs->padding);
    int64_t   ow = ref_conv_out_size(cs->w, cs->kw, cs->stride, cs->padding);
    ref_shape sx = ref_shape_of(KILN_SHAPE(cs->n, cs->c, cs->h, cs->w));
    ref_shape sw = ref_shape_of(KILN_SHAPE(cs->o, cs->c, cs->kh, cs->kw));
    ref_shape sb = ref_shape_of(KILN_SHAPE(cs->o));
    ref_shape so = ref_shape_of(KILN_SHAPE(cs->n, cs->o, oh, ow));

    op_case c;
    case_begin(&c, ctx, spec, "conv2d of x %s, w %s, stride %d, padding %d, %s",
               ref_shape_text(sx), ref_shape_text(sw), cs->stride, cs->padding,
               cc->bias ? "bias" : "no bias");
    leaf        *x = case_input(&c, "x", sx, FILL_ANY);
    leaf        *w = case_param(&c, "w", sw, FILL_ANY);
    leaf        *b = cc->bias ? case_param(&c, "b", sb, FILL_ANY) : NULL;
    kiln_tensor *y = kiln_conv2d(c.g, x->t, w->t, b ? b->t : NULL, cs->stride,
                                 cs->padding);
    case_compile(&c, y);
    float *want = case_scratch(&c, ref_numel(so), sizeof *want);
    for (int r = 0; r < RUNS; r++) {
        case_run(&c);
        ref_conv2d(x->f, w->f, b ? b->f : NULL, *cs, want);
        case_expect(&c, y, want, so, tol_for_sum(cs->c * cs->kh * cs->kw + 1));
    }
    case_end(&c);
}

/* {n, c, h, w, o, kh, kw, stride, padding}, bias */
static const conv_case conv_cases[] = {
    {{1, 1, 5, 5, 1, 1, 1, 1, 0}, false}, /* 1x1, the smallest             */
    {{1, 1, 7, 7, 1, 3, 3, 1, 0}, true},
    {{1, 3, 7, 9, 5, 3, 3, 1, 1}, true},   /* non-square image, "same"      */
    {{3, 3, 13, 11, 5, 5, 5, 2, 2}, true}, /* batch 3, 5x5, stride 2        */
    {{1, 3, 8, 7, 5, 3, 2, 1, 0}, false},  /* non-square kernel             */
    {{3, 1, 11, 13, 1, 3, 2, 3, 1}, true}, /* stride 3                      */
    {{1, 3, 5, 5, 5, 5, 5, 1, 0}, true},   /* kernel covers the image       */
    {{3, 3, 31, 17, 5, 3, 3, 2, 1}, false},
    {{1, 3, 6, 6, 5, 1, 1, 2, 0}, true},  /* 1x1 with stride: skips pixels */
    {{3, 1, 4, 4, 5, 3, 3, 3, 2}, false}, /* stride 3 with padding 2       */
    {{1, 1, 7, 7, 1, 5, 5, 3, 2}, true},
    {{1, 3, 5, 4, 5, 1, 1, 1, 2}, true}, /* windows of padding only       */
    {{1, 3, 9, 10, 5, 3, 2, 2, 1}, true},
    {{3, 3, 7, 9, 1, 5, 5, 1, 2}, false},
};

BACKEND_TEST(conv2d, matches_reference_for_kernels_strides_padding_and_bias)
{
    kiln_context *ctx = test_backend_context(backend);
    for (size_t i = 0; i < sizeof conv_cases / sizeof conv_cases[0]; i++)
        check_conv2d(ctx, backend->label, &conv_cases[i]);
    kiln_context_free(ctx);
}

static void check_max_pool2d(kiln_context *ctx, const char *spec, ref_shape sx,
                             int kernel, int stride)
{
    int64_t   oh = (sx.dims[2] - kernel) / stride + 1;
    int64_t   ow = (sx.dims[3] - kernel) / stride + 1;
    ref_shape so = ref_shape_of(KILN_SHAPE(sx.dims[0], sx.dims[1], oh, ow));
    op_case   c;
    case_begin(&c, ctx, spec, "max_pool2d of %s, kernel %d, stride %d",
               ref_shape_text(sx), kernel, stride);
    leaf        *x = case_input(&c, "x", sx, FILL_ANY);
    kiln_tensor *y = kiln_max_pool2d(c.g, x->t, kernel, stride);
    case_compile(&c, y);
    float *want = case_scratch(&c, ref_numel(so), sizeof *want);
    for (int r = 0; r < RUNS; r++) {
        case_run(&c);
        ref_max_pool2d(x->f, sx.dims[0], sx.dims[1], sx.dims[2], sx.dims[3], kernel,
                       stride, want);
        case_expect(&c, y, want, so, TOL_EXACT);
    }
    case_end(&c);
}

BACKEND_TEST(max_pool2d, matches_reference_and_drops_windows_that_do_not_fit)
{
    static const struct {
        ref_shape x;
        int       kernel, stride;
    } cases[] = {
        {{4, {1, 1, 2, 2}}, 2, 2},
        {{4, {1, 1, 8, 6}}, 2, 2},
        {{4, {3, 3, 7, 7}}, 2, 2},
        {{4, {1, 5, 13, 9}}, 2, 2},
        {{4, {1, 1, 7, 9}}, 3, 2},
        {{4, {2, 3, 13, 13}}, 3, 2},
        {{4, {3, 2, 8, 11}}, 3, 2},
        {{4, {1, 1, 5, 5}}, 2, 1},
        {{4, {1, 2, 6, 7}}, 3, 3},
        {{4, {1, 1, 3, 3}}, 3, 2},
        /* rows of windows that fill whole vectors and end in part of one */
        {{4, {1, 2, 4, 70}}, 2, 2},
        {{4, {1, 1, 3, 67}}, 3, 2},
        {{4, {1, 1, 4, 40}}, 2, 1},
        {{4, {1, 1, 4, 103}}, 2, 3},
    };
    kiln_context *ctx = test_backend_context(backend);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        check_max_pool2d(ctx, backend->label, cases[i].x, cases[i].kernel,
                         cases[i].stride);
    kiln_context_free(ctx);
}

/* ---- losses -------------------------------------------------------------------------------- */

static void check_mse_loss(kiln_context *ctx, const char *spec, ref_shape s)
{
    op_case c;
    case_begin(&c, ctx, spec, "mse_loss of %s", ref_shape_text(s));
    leaf        *pred   = case_input(&c, "pred", s, FILL_ANY);
    leaf        *target = case_input(&c, "target", s, FILL_ANY);
    kiln_tensor *y      = kiln_mse_loss(c.g, pred->t, target->t);
    case_compile(&c, y);
    ref_tol tol = {1e-6, 1e-4};
    for (int r = 0; r < RUNS; r++) {
        case_run(&c);
        float want = ref_mse_loss(pred->f, target->f, pred->n);
        case_expect(&c, y, &want, scalar_shape(), tol);
    }
    case_end(&c);
}

BACKEND_TEST(mse_loss, matches_reference_mean_of_squared_errors)
{
    static const ref_shape shapes[] = {
        {0, {0}}, {1, {1}}, {1, {7}}, {2, {13, 31}}, {3, {3, 5, 7}}, {2, {128, 200}},
        {1, {100003}}, {2, {300, 1001}}, /* in parts over many work-groups */
    };
    kiln_context *ctx = test_backend_context(backend);
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        check_mse_loss(ctx, backend->label, shapes[s]);
    kiln_context_free(ctx);
}

static void check_cross_entropy(kiln_context *ctx, const char *spec, int64_t rows,
                                int32_t classes, fill_kind fill)
{
    op_case c;
    case_begin(&c, ctx, spec, "cross_entropy of N=%lld C=%d, logits %s", (long long)rows,
               (int)classes, fill_names[fill]);
    leaf        *logits = case_input(&c, "logits", shape2(rows, classes), fill);
    leaf        *labels = case_labels(&c, "labels", rows, classes);
    kiln_tensor *y      = kiln_cross_entropy(c.g, logits->t, labels->t);
    case_compile(&c, y);
    ref_tol tol = {fill_is_huge(fill) ? 2e-4 : 1e-5, 1e-5};
    for (int r = 0; r < RUNS; r++) {
        case_run(&c);
        float want = ref_cross_entropy(logits->f, labels->i, rows, classes);
        case_expect(&c, y, &want, scalar_shape(), tol);
    }
    case_end(&c);
}

BACKEND_TEST(cross_entropy, matches_reference_for_one_and_many_rows)
{
    kiln_context *ctx = test_backend_context(backend);
    check_cross_entropy(ctx, backend->label, 1, 10, FILL_ANY);
    check_cross_entropy(ctx, backend->label, 17, 10, FILL_ANY);
    check_cross_entropy(ctx, backend->label, 13, 1, FILL_ANY); /* always 0 */
    check_cross_entropy(ctx, backend->label, 64, 31, FILL_ANY);
    check_cross_entropy(ctx, backend->label, 3, 129, FILL_ANY);
    check_cross_entropy(ctx, backend->label, 5003, 3, FILL_ANY); /* a mean in parts */
    check_cross_entropy(ctx, backend->label, 5, 7, FILL_NEAR_PLUS_1000);
    check_cross_entropy(ctx, backend->label, 5, 7, FILL_PLUS_MINUS_1000);
    kiln_context_free(ctx);
}

/* logits [..., C] with labels [...]: every leading axis is a row. */
static void check_cross_entropy_nd(kiln_context *ctx, const char *spec, ref_shape sl)
{
    op_case c;
    case_begin(&c, ctx, spec, "cross_entropy of logits %s", ref_shape_text(sl));
    int32_t   classes = (int32_t)sl.dims[sl.ndim - 1];
    ref_shape sy      = sl;
    sy.ndim--;
    leaf        *logits = case_input(&c, "logits", sl, FILL_ANY);
    leaf        *labels = case_ids(&c, "labels", sy, classes);
    kiln_tensor *y      = kiln_cross_entropy(c.g, logits->t, labels->t);
    case_compile(&c, y);
    for (int r = 0; r < RUNS; r++) {
        case_run(&c);
        float want = ref_cross_entropy(logits->f, labels->i, (int64_t)labels->n, classes);
        case_expect(&c, y, &want, scalar_shape(), (ref_tol){1e-5, 1e-5});
    }
    case_end(&c);
}

BACKEND_TEST(cross_entropy, takes_the_mean_over_every_leading_axis_of_the_logits)
{
    static const ref_shape shapes[] = {
        {1, {7}},        {3, {1, 1, 7}},     {3, {2, 3, 7}},    {3, {2, 3, 1}},
        {3, {1, 5, 33}}, {4, {2, 3, 5, 17}}, {3, {4, 17, 256}},
    };
    kiln_context *ctx = test_backend_context(backend);
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        check_cross_entropy_nd(ctx, backend->label, shapes[s]);
    kiln_context_free(ctx);
}

/* ---- transformers ------------------------------------------------------------------------------ */

static void check_embedding(kiln_context *ctx, const char *spec, int64_t vocab,
                            int64_t cols, ref_shape si)
{
    op_case c;
    case_begin(&c, ctx, spec, "embedding of a [%lld, %lld] table by ids %s",
               (long long)vocab, (long long)cols, ref_shape_text(si));
    /* the ids first: every run looks up new ones */
    leaf        *ids   = case_ids(&c, "ids", si, (int32_t)vocab);
    leaf        *table = case_input(&c, "table", shape2(vocab, cols), FILL_ANY);
    kiln_tensor *y     = kiln_embedding(c.g, table->t, ids->t);
    case_compile(&c, y);
    ref_shape so       = si;
    so.dims[so.ndim++] = cols;
    float *want        = case_scratch(&c, ref_numel(so), sizeof *want);
    for (int r = 0; r < RUNS; r++) {
        case_run(&c);
        ref_embedding(table->f, vocab, cols, ids->i, (int64_t)ids->n, want);
        case_expect(&c, y, want, so, TOL_EXACT);
    }
    case_end(&c);
}

BACKEND_TEST(embedding, copies_the_row_of_each_id_for_ids_of_any_shape)
{
    static const ref_shape ids[] = {
        {0, {0}}, {1, {1}}, {1, {5}}, {2, {2, 3}}, {3, {2, 3, 4}}, {2, {0, 3}},
    };
    kiln_context *ctx = test_backend_context(backend);
    for (size_t s = 0; s < sizeof ids / sizeof ids[0]; s++) {
        check_embedding(ctx, backend->label, 7, 1, ids[s]);
        check_embedding(ctx, backend->label, 7, 33, ids[s]);
    }
    check_embedding(ctx, backend->label, 1, 5, ref_shape_of(KILN_SHAPE(3)));
    check_embedding(ctx, backend->label, 256, 64, ref_shape_of(KILN_SHAPE(4, 129)));
    kiln_context_free(ctx);
}

/* An id outside [0, V) is never read: the run fails naming the id, its
 * position and V, and a later run with good ids works. */
BACKEND_TEST(embedding, refuses_an_id_outside_the_table_at_run_time)
{
    enum { V = 7, C = 3, P = 6 };
    kiln_context *ctx   = test_backend_context(backend);
    kiln_graph   *g     = kiln_graph_new(ctx);
    kiln_tensor  *table = kiln_input(g, "table", KILN_F32, KILN_SHAPE(V, C));
    kiln_tensor  *ids   = kiln_input(g, "ids", KILN_I32, KILN_SHAPE(2, 3));
    kiln_tensor  *y     = kiln_embedding(g, table, ids);
    cr_assert_eq(kiln_output(g, y), KILN_OK, "%s", kiln_last_error());
    cr_assert_eq(kiln_graph_compile(g), KILN_OK, "%s", graph_error(g));
    float t[V * C];
    ref_fill(t, V * C, 3);
    cr_assert_eq(kiln_tensor_write(table, t, sizeof t), KILN_OK, "%s", kiln_last_error());
    static const struct {
        int32_t     ids[P];
        const char *msg;
    } bad[] = {
        {{1, 3, 6, 0, 7, 2}, "id 7 at position 4 is outside [0, 7)"},
        {{1, -1, 6, 0, 9, 2}, "id -1 at position 1 is outside [0, 7)"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cr_assert_eq(kiln_tensor_write(ids, bad[i].ids, sizeof bad[i].ids), KILN_OK);
        kiln_status st = kiln_graph_run(g);
        cr_assert_eq(st, KILN_ERR_INVALID_ARG, "%s: ids %zu: %s: %s", backend->label, i,
                     kiln_status_name(st), kiln_last_error());
        cr_assert(strstr(kiln_last_error(), bad[i].msg), "%s: expected \"%s\" in: %s",
                  backend->label, bad[i].msg, kiln_last_error());
    }
    int32_t good[P] = {1, 3, 6, 0, 6, 2};
    float   got[P * C], want[P * C];
    cr_assert_eq(kiln_tensor_write(ids, good, sizeof good), KILN_OK);
    cr_assert_eq(kiln_graph_run(g), KILN_OK, "%s: %s", backend->label, kiln_last_error());
    cr_assert_eq(kiln_tensor_read(y, got, sizeof got), KILN_OK, "%s", kiln_last_error());
    ref_embedding(t, V, C, good, P, want);
    ref_expect_close(backend->label, got, want, ref_shape_of(KILN_SHAPE(P * C)),
                     TOL_EXACT);
    kiln_graph_free(g);
    kiln_context_free(ctx);
}

Test(embedding, refuses_a_table_that_is_not_2d_and_f32_ids)
{
    kiln_context *ctx = test_context(test_first_spec());
    kiln_graph   *g   = kiln_graph_new(ctx);
    kiln_tensor  *t3  = kiln_input(g, "t3", KILN_F32, KILN_SHAPE(2, 3, 4));
    kiln_tensor  *ids = kiln_input(g, "ids", KILN_I32, KILN_SHAPE(5));
    kiln_embedding(g, t3, ids);
    cr_assert_eq(kiln_graph_status(g), KILN_ERR_SHAPE);
    cr_assert(strstr(graph_error(g), "embedding: table [2, 3, 4]: expected [V, C]"), "%s",
              graph_error(g));
    kiln_graph_free(g);
    g                  = kiln_graph_new(ctx);
    kiln_tensor *table = kiln_input(g, "table", KILN_F32, KILN_SHAPE(7, 3));
    kiln_tensor *fids  = kiln_input(g, "ids", KILN_F32, KILN_SHAPE(5));
    kiln_embedding(g, table, fids);
    cr_assert_neq(kiln_graph_status(g), KILN_OK);
    cr_assert(strstr(graph_error(g), "embedding: ids"), "%s", graph_error(g));
    kiln_graph_free(g);
    kiln_context_free(ctx);
}

/* Masked entries (column j > row i of each T x T matrix) are exactly 0. */
static void expect_masked_zero(const char *what, const float *got, int64_t rows,
                               int64_t t)
{
    for (int64_t r = 0; r < rows; r++)
        for (int64_t j = r % t + 1; j < t; j++)
            cr_assert(got[r * t + j] == 0.0f,
                      "%s: row %lld column %lld is masked but holds %g", what,
                      (long long)r, (long long)j, (double)got[r * t + j]);
}

static void check_causal_softmax(kiln_context *ctx, const char *spec, ref_shape s,
                                 float scale, fill_kind fill)
{
    op_case c;
    case_begin(&c, ctx, spec, "causal_softmax of %s %s, scale %g", ref_shape_text(s),
               fill_names[fill], (double)scale);
    int64_t      t    = s.dims[s.ndim - 1];
    size_t       n    = ref_numel(s);
    int64_t      rows = t ? (int64_t)n / t : 0;
    leaf        *x    = case_input(&c, "x", s, fill);
    kiln_tensor *y    = kiln_causal_softmax(c.g, x->t, scale);
    case_compile(&c, y);
    float  *want = case_scratch(&c, n, sizeof *want);
    float  *got  = case_scratch(&c, n, sizeof *got);
    ref_tol tol  = fill_is_huge(fill) ? (ref_tol){2e-4, 2e-4} : (ref_tol){1e-6, 1e-5};
    for (int r = 0; r < RUNS; r++) {
        case_run(&c);
        ref_causal_softmax(x->f, t ? rows / t : 0, t, scale, want);
        case_expect(&c, y, want, s, tol);
        read_output(&c, y, got, n);
        expect_masked_zero(c.label, got, rows, t);
        ref_expect_finite(c.label, got, s);
    }
    case_end(&c);
}

BACKEND_TEST(causal_softmax, matches_reference_with_and_without_a_scale)
{
    static const ref_shape shapes[] = {
        {2, {1, 1}},      {2, {5, 5}},       {2, {17, 17}},
        {3, {1, 17, 17}}, {4, {2, 3, 5, 5}}, {4, {2, 3, 1, 1}},
        {3, {3, 33, 33}}, {3, {0, 5, 5}},    {3, {2, 130, 130}},
    };
    kiln_context *ctx = test_backend_context(backend);
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        check_causal_softmax(ctx, backend->label, shapes[s], 1.0f, FILL_ANY);
        check_causal_softmax(ctx, backend->label, shapes[s], 0.125f, FILL_ANY);
    }
    check_causal_softmax(ctx, backend->label, ref_shape_of(KILN_SHAPE(2, 17, 17)), 1.0f,
                         FILL_PLUS_MINUS_1000);
    check_causal_softmax(ctx, backend->label, ref_shape_of(KILN_SHAPE(4, 4)), -0.5f,
                         FILL_ANY);
    kiln_context_free(ctx);
}

/* NaN and infinities above the diagonal are never read. */
BACKEND_TEST(causal_softmax, never_reads_the_masked_entries)
{
    enum { M = 2, T = 5, N = M * T * T };
    kiln_context *ctx = test_backend_context(backend);
    kiln_graph   *g   = kiln_graph_new(ctx);
    kiln_tensor  *x   = kiln_input(g, "x", KILN_F32, KILN_SHAPE(M, T, T));
    kiln_tensor  *y   = kiln_causal_softmax(g, x, 0.5f);
    cr_assert_eq(kiln_output(g, y), KILN_OK, "%s", kiln_last_error());
    cr_assert_eq(kiln_graph_compile(g), KILN_OK, "%s", graph_error(g));
    float xs[N], got[N], want[N];
    ref_fill(xs, N, 11);
    for (int r = 0; r < M * T; r++)
        for (int j = r % T + 1; j < T; j++)
            xs[r * T + j] = (j % 3 == 0) ? NAN : (j % 3 == 1) ? INFINITY : -INFINITY;
    cr_assert_eq(kiln_tensor_write(x, xs, sizeof xs), KILN_OK, "%s", kiln_last_error());
    cr_assert_eq(kiln_graph_run(g), KILN_OK, "%s: %s", backend->label, kiln_last_error());
    cr_assert_eq(kiln_tensor_read(y, got, sizeof got), KILN_OK, "%s", kiln_last_error());
    ref_causal_softmax(xs, M, T, 0.5f, want);
    ref_expect_close(backend->label, got, want, ref_shape_of(KILN_SHAPE(M, T, T)),
                     (ref_tol){1e-6, 1e-5});
    expect_masked_zero(backend->label, got, M * T, T);
    kiln_graph_free(g);
    kiln_context_free(ctx);
}

Test(causal_softmax, refuses_a_non_square_or_1d_input_and_a_non_finite_scale)
{
    kiln_context *ctx = test_context(test_first_spec());
    static const struct {
        int         ndim;
        int64_t     dims[3];
        float       scale;
        const char *msg;
    } bad[] = {
        {1, {5}, 1.0f, "causal_softmax: input [5]: expected [..., T, T]"},
        {3, {2, 4, 5}, 1.0f, "causal_softmax: input [2, 4, 5]: expected [..., T, T]"},
        {2, {4, 4}, INFINITY, "causal_softmax: scale inf: expected a finite number"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        kiln_graph  *g = kiln_graph_new(ctx);
        kiln_tensor *x = kiln_input(g, "x", KILN_F32, bad[i].ndim, bad[i].dims);
        kiln_causal_softmax(g, x, bad[i].scale);
        cr_assert_neq(kiln_graph_status(g), KILN_OK, "case %zu", i);
        cr_assert(strstr(graph_error(g), bad[i].msg), "expected \"%s\" in: %s",
                  bad[i].msg, graph_error(g));
        kiln_graph_free(g);
    }
    kiln_context_free(ctx);
}

/* With an offset, [H, Tq, Tk] scores keep columns j <= i + offset, the
 * offset read at run time: one compiled graph, every offset. */
BACKEND_TEST(causal_softmax, with_an_offset_matches_reference_for_every_offset)
{
    static const ref_shape shapes[] = {
        {3, {3, 1, 17}}, {3, {2, 4, 9}}, {3, {2, 5, 5}}, {3, {1, 3, 130}}, {2, {1, 1}},
    };
    static const int32_t offsets[] = {-4, -1, 0, 2, 16, 200};
    kiln_context        *ctx       = test_backend_context(backend);
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        ref_shape    s  = shapes[i];
        int64_t      tq = s.dims[s.ndim - 2], tk = s.dims[s.ndim - 1];
        size_t       n = ref_numel(s);
        kiln_graph  *g = kiln_graph_new(ctx);
        kiln_tensor *x = kiln_input(g, "x", KILN_F32, s.ndim, s.dims);
        kiln_tensor *o = kiln_input(g, "offset", KILN_I32, KILN_SHAPE(1));
        kiln_tensor *y = kiln_causal_softmax_offset(g, x, 0.25f, o);
        cr_assert_eq(kiln_output(g, y), KILN_OK, "%s", graph_error(g));
        cr_assert_eq(kiln_graph_compile(g), KILN_OK, "%s", graph_error(g));
        float *xs = ref_calloc(n, sizeof *xs), *got = ref_calloc(n, sizeof *got),
              *want = ref_calloc(n, sizeof *want);
        ref_fill(xs, n, 40 + i);
        cr_assert_eq(kiln_tensor_write(x, xs, n * sizeof *xs), KILN_OK);
        for (size_t k = 0; k < sizeof offsets / sizeof offsets[0]; k++) {
            cr_assert_eq(kiln_tensor_write(o, &offsets[k], sizeof offsets[k]), KILN_OK);
            cr_assert_eq(kiln_graph_run(g), KILN_OK, "%s: %s", backend->label,
                         kiln_last_error());
            cr_assert_eq(kiln_tensor_read(y, got, n * sizeof *got), KILN_OK);
            ref_causal_softmax_offset(xs, (int64_t)n / (tq * tk), tq, tk, offsets[k],
                                      0.25f, want);
            char what[160];
            snprintf(what, sizeof what, "%s: causal_softmax %s offset %d", backend->label,
                     ref_shape_text(s), (int)offsets[k]);
            ref_expect_close(what, got, want, s, (ref_tol){1e-6, 1e-5});
            for (size_t e = 0; e < n; e++)
                cr_assert(want[e] != 0.0f || got[e] == 0.0f,
                          "%s: element %zu is masked but holds %g", what, e,
                          (double)got[e]);
        }
        free(xs);
        free(got);
        free(want);
        kiln_graph_free(g);
    }
    kiln_context_free(ctx);
}

Test(causal_softmax, refuses_an_offset_that_is_not_one_i32)
{
    kiln_context *ctx = test_context(test_first_spec());
    kiln_graph   *g   = kiln_graph_new(ctx);
    kiln_tensor  *x   = kiln_input(g, "x", KILN_F32, KILN_SHAPE(2, 1, 5));
    kiln_causal_softmax_offset(g, x, 1.0f, kiln_input(g, "o", KILN_I32, KILN_SHAPE(2)));
    cr_assert(strstr(graph_error(g), "causal_softmax: offset [2]: expected one element"),
              "%s", graph_error(g));
    kiln_graph_free(g);
    g = kiln_graph_new(ctx);
    x = kiln_input(g, "x", KILN_F32, KILN_SHAPE(2, 1, 5));
    kiln_causal_softmax_offset(g, x, 1.0f, kiln_input(g, "o", KILN_F32, KILN_SHAPE(1)));
    cr_assert(strstr(graph_error(g), "causal_softmax: offset [1] is f32, expected i32"),
              "%s", graph_error(g));
    kiln_graph_free(g);
    g = kiln_graph_new(ctx);
    x = kiln_input(g, "x", KILN_F32, KILN_SHAPE(2, 1, 5));
    kiln_causal_softmax_offset(g, x, 1.0f, NULL);
    cr_assert(strstr(graph_error(g), "causal_softmax: offset is NULL"), "%s",
              graph_error(g));
    kiln_graph_free(g);
    kiln_context_free(ctx);
}

/* ---- causal_attention ---------------------------------------------------------------- */

static void check_attention(kiln_context *ctx, const char *spec, int64_t B, int64_t T,
                            int64_t C, int H, float scale, fill_kind fill)
{
    op_case c;
    case_begin(&c, ctx, spec, "causal_attention B=%lld T=%lld C=%lld H=%d %s",
               (long long)B, (long long)T, (long long)C, H, fill_names[fill]);
    ref_shape    s   = ref_shape_of(KILN_SHAPE(B, T, 3 * C));
    leaf        *qkv = case_input(&c, "qkv", s, fill);
    kiln_tensor *y   = kiln_causal_attention(c.g, qkv->t, H, scale);
    case_compile(&c, y);
    ref_shape out  = ref_shape_of(KILN_SHAPE(B, T, C));
    float    *want = case_scratch(&c, ref_numel(out), sizeof *want);
    for (int r = 0; r < RUNS; r++) {
        case_run(&c);
        ref_causal_attention(qkv->f, B, T, C, H, scale, want);
        case_expect(&c, y, want, out, (ref_tol){2e-5, 2e-5});
    }
    case_end(&c);
}

/* Rows of queries in blocks of 32 on the cpu: T around and past the blocks,
 * one head and several, D from 1 to 64. */
BACKEND_TEST(causal_attention, matches_reference)
{
    kiln_context *ctx = test_backend_context(backend);
    check_attention(ctx, backend->label, 1, 1, 4, 1, 0.5f, FILL_ANY);
    check_attention(ctx, backend->label, 2, 5, 6, 3, 0.7f, FILL_ANY);
    check_attention(ctx, backend->label, 2, 31, 8, 2, 0.5f, FILL_ANY);
    check_attention(ctx, backend->label, 1, 33, 16, 4, 0.5f, FILL_ANY);
    check_attention(ctx, backend->label, 3, 70, 64, 1, 0.125f, FILL_ANY);
    check_attention(ctx, backend->label, 2, 128, 32, 4, 0.35f, FILL_ANY);
    check_attention(ctx, backend->label, 1, 9, 4, 4, 1.0f, FILL_ANY); /* D = 1 */
    check_attention(ctx, backend->label, 1, 40, 8, 2, 0.3f, FILL_PLUS_MINUS_1000);
    check_attention(ctx, backend->label, 0, 5, 8, 2, 0.3f, FILL_ANY); /* no batch */
    kiln_context_free(ctx);
}

Test(causal_attention, refuses_a_qkv_that_is_not_three_wide_and_heads_that_do_not_divide)
{
    kiln_context *ctx = test_context(test_first_spec());
    static const struct {
        int         ndim;
        int64_t     dims[3];
        int         heads;
        float       scale;
        const char *msg;
    } bad[] = {
        {3, {2, 4, 10}, 1, 1.0f, "causal_attention: qkv [2, 4, 10]: expected [B, T, 3C]"},
        {2, {4, 12}, 1, 1.0f, "causal_attention: qkv [4, 12]: expected [B, T, 3C]"},
        {3,
         {2, 4, 12},
         3,
         1.0f,
         "3 heads: expected a number of heads that divides C = 4"},
        {3, {2, 4, 12}, 0, 1.0f, "0 heads"},
        {3, {2, 4, 12}, 2, NAN, "causal_attention: scale nan: expected a finite number"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        kiln_graph  *g = kiln_graph_new(ctx);
        kiln_tensor *x = kiln_input(g, "qkv", KILN_F32, bad[i].ndim, bad[i].dims);
        kiln_causal_attention(g, x, bad[i].heads, bad[i].scale);
        cr_assert(strstr(graph_error(g), bad[i].msg), "case %zu: expected \"%s\" in: %s",
                  i, bad[i].msg, graph_error(g));
        kiln_graph_free(g);
    }
    kiln_context_free(ctx);
}

/* ---- store_slice ------------------------------------------------------------------------ */

/* The reference: value [outer, n, inner] into dst [outer, r, inner] at start. */
static void ref_store(float *dst, const float *value, int64_t outer, int64_t r, int64_t n,
                      int64_t inner, int64_t start)
{
    for (int64_t o = 0; o < outer; o++)
        memcpy(dst + (o * r + start) * inner, value + o * n * inner,
               (size_t)(n * inner) * sizeof *dst);
}

/* Successive runs write windows into one input, which keeps the rest from
 * run to run; the result and the input itself read the same. */
static void check_store_slice(const char *spec, kiln_context *ctx, ref_shape ds, int axis,
                              int64_t n, const int32_t *starts, int n_starts)
{
    int       ax  = axis < 0 ? axis + ds.ndim : axis;
    ref_shape vs  = ds;
    vs.dims[ax]   = n;
    int64_t outer = 1, inner = 1, r = ds.dims[ax];
    for (int d = 0; d < ax; d++)
        outer *= ds.dims[d];
    for (int d = ax + 1; d < ds.ndim; d++)
        inner *= ds.dims[d];
    size_t       nd = ref_numel(ds), nv = ref_numel(vs);
    kiln_graph  *g     = kiln_graph_new(ctx);
    kiln_tensor *dst   = kiln_input(g, "cache", KILN_F32, ds.ndim, ds.dims);
    kiln_tensor *value = kiln_input(g, "value", KILN_F32, vs.ndim, vs.dims);
    kiln_tensor *start = kiln_input(g, "start", KILN_I32, KILN_SHAPE(1));
    kiln_tensor *y     = kiln_store_slice(g, dst, value, axis, start);
    cr_assert_eq(kiln_output(g, y), KILN_OK, "%s", graph_error(g));
    cr_assert_eq(kiln_graph_compile(g), KILN_OK, "%s", graph_error(g));
    float *want = ref_calloc(nd, sizeof *want), *got = ref_calloc(nd, sizeof *got),
          *v = ref_calloc(nv, sizeof *v);
    ref_fill(want, nd, 90);
    cr_assert_eq(kiln_tensor_write(dst, want, nd * sizeof *want), KILN_OK);
    for (int k = 0; k < n_starts; k++) {
        char what[160];
        snprintf(what, sizeof what, "%s: store_slice %s into %s axis %d start %d", spec,
                 ref_shape_text(vs), ref_shape_text(ds), axis, (int)starts[k]);
        ref_fill(v, nv, 91 + (uint64_t)k);
        cr_assert_eq(kiln_tensor_write(value, v, nv * sizeof *v), KILN_OK);
        cr_assert_eq(kiln_tensor_write(start, &starts[k], sizeof starts[k]), KILN_OK);
        cr_assert_eq(kiln_graph_run(g), KILN_OK, "%s: %s", what, kiln_last_error());
        ref_store(want, v, outer, r, n, inner, starts[k]);
        cr_assert_eq(kiln_tensor_read(y, got, nd * sizeof *got), KILN_OK);
        ref_expect_close(what, got, want, ds, TOL_EXACT);
        cr_assert_eq(kiln_tensor_read(dst, got, nd * sizeof *got), KILN_OK);
        ref_expect_close(what, got, want, ds, TOL_EXACT);
    }
    free(want);
    free(got);
    free(v);
    kiln_graph_free(g);
}

BACKEND_TEST(store_slice, writes_its_window_and_keeps_the_rest_across_runs)
{
    kiln_context *ctx = test_backend_context(backend);
    check_store_slice(backend->label, ctx, ref_shape_of(KILN_SHAPE(2, 6, 3)), 1, 2,
                      (const int32_t[]){0, 4, 1, 2}, 4);
    check_store_slice(backend->label, ctx, ref_shape_of(KILN_SHAPE(3, 5)), -1, 1,
                      (const int32_t[]){4, 0, 2}, 3);
    check_store_slice(backend->label, ctx, ref_shape_of(KILN_SHAPE(4, 3)), 0, 1,
                      (const int32_t[]){3, 0}, 2);
    check_store_slice(backend->label, ctx, ref_shape_of(KILN_SHAPE(2, 3, 130, 16)), 2, 1,
                      (const int32_t[]){129, 0, 64}, 3);
    check_store_slice(backend->label, ctx, ref_shape_of(KILN_SHAPE(2, 4, 2)), 1, 4,
                      (const int32_t[]){0}, 1);
    kiln_context_free(ctx);
}

/* A start past the end is an error naming it, and writes nothing; the next
 * good run works. */
BACKEND_TEST(store_slice, refuses_a_start_outside_the_destination_at_run_time)
{
    kiln_context *ctx   = test_backend_context(backend);
    kiln_graph   *g     = kiln_graph_new(ctx);
    kiln_tensor  *dst   = kiln_input(g, "cache", KILN_F32, KILN_SHAPE(2, 6, 3));
    kiln_tensor  *value = kiln_input(g, "value", KILN_F32, KILN_SHAPE(2, 2, 3));
    kiln_tensor  *start = kiln_input(g, "start", KILN_I32, KILN_SHAPE(1));
    kiln_tensor  *y     = kiln_store_slice(g, dst, value, 1, start);
    cr_assert_eq(kiln_output(g, y), KILN_OK, "%s", graph_error(g));
    cr_assert_eq(kiln_graph_compile(g), KILN_OK, "%s", graph_error(g));
    float d[36], v[12], got[36];
    ref_fill(d, 36, 5);
    ref_fill(v, 12, 6);
    cr_assert_eq(kiln_tensor_write(dst, d, sizeof d), KILN_OK);
    cr_assert_eq(kiln_tensor_write(value, v, sizeof v), KILN_OK);
    static const struct {
        int32_t     start;
        const char *msg;
    } bad[] = {{5, "start 5 is outside [0, 4]"}, {-1, "start -1 is outside [0, 4]"}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cr_assert_eq(kiln_tensor_write(start, &bad[i].start, 4), KILN_OK);
        kiln_status st = kiln_graph_run(g);
        if (st == KILN_OK) /* a device reports it when the run is read */
            st = kiln_tensor_read(y, got, sizeof got);
        cr_assert_eq(st, KILN_ERR_INVALID_ARG, "%s: start %d: %s", backend->label,
                     (int)bad[i].start, kiln_last_error());
        cr_assert(strstr(kiln_last_error(), bad[i].msg), "%s: expected \"%s\" in: %s",
                  backend->label, bad[i].msg, kiln_last_error());
        cr_assert_eq(kiln_tensor_read(dst, got, sizeof got), KILN_OK, "%s",
                     kiln_last_error());
        ref_expect_close(backend->label, got, d, ref_shape_of(KILN_SHAPE(36)), TOL_EXACT);
    }
    int32_t good = 4;
    cr_assert_eq(kiln_tensor_write(start, &good, 4), KILN_OK);
    cr_assert_eq(kiln_graph_run(g), KILN_OK, "%s: %s", backend->label, kiln_last_error());
    ref_store(d, v, 2, 6, 2, 3, 4);
    cr_assert_eq(kiln_tensor_read(y, got, sizeof got), KILN_OK, "%s", kiln_last_error());
    ref_expect_close(backend->label, got, d, ref_shape_of(KILN_SHAPE(36)), TOL_EXACT);
    kiln_graph_free(g);
    kiln_context_free(ctx);
}

Test(store_slice,
     refuses_a_destination_that_is_not_an_input_and_a_value_that_does_not_fit)
{
    kiln_context *ctx = test_context(test_first_spec());
    kiln_graph   *g   = kiln_graph_new(ctx);
    kiln_tensor  *p   = kiln_param(g, "w", KILN_SHAPE(2, 6, 3));
    kiln_tensor  *v   = kiln_input(g, "v", KILN_F32, KILN_SHAPE(2, 1, 3));
    kiln_tensor  *s   = kiln_input(g, "s", KILN_I32, KILN_SHAPE(1));
    kiln_store_slice(g, p, v, 1, s);
    cr_assert(strstr(graph_error(g),
                     "store_slice: destination [2, 6, 3] w is not an input"),
              "%s", graph_error(g));
    kiln_graph_free(g);
    static const struct {
        int         ndim;
        int64_t     dims[3];
        int         axis;
        const char *msg;
    } bad[] = {
        {3,
         {2, 1, 4},
         1,
         "store_slice: value [2, 1, 4] into destination [2, 6, 3] along "
         "axis 1: expected the destination's shape"},
        {3, {2, 7, 3}, 1, "store_slice: value [2, 7, 3] into destination [2, 6, 3]"},
        {2, {2, 3}, 1, "store_slice: value [2, 3] into destination [2, 6, 3]"},
        {3, {2, 1, 3}, 3, "store_slice: destination [2, 6, 3]: axis 3, expected -3 to 2"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        g              = kiln_graph_new(ctx);
        kiln_tensor *d = kiln_input(g, "cache", KILN_F32, KILN_SHAPE(2, 6, 3));
        v              = kiln_input(g, "v", KILN_F32, bad[i].ndim, bad[i].dims);
        s              = kiln_input(g, "s", KILN_I32, KILN_SHAPE(1));
        kiln_store_slice(g, d, v, bad[i].axis, s);
        cr_assert(strstr(graph_error(g), bad[i].msg), "case %zu: expected \"%s\" in: %s",
                  i, bad[i].msg, graph_error(g));
        kiln_graph_free(g);
    }
    g              = kiln_graph_new(ctx);
    kiln_tensor *d = kiln_input(g, "cache", KILN_F32, KILN_SHAPE(2, 6, 3));
    v              = kiln_input(g, "v", KILN_F32, KILN_SHAPE(2, 1, 3));
    kiln_store_slice(g, d, v, 1, kiln_input(g, "s", KILN_I32, KILN_SHAPE(2)));
    cr_assert(strstr(graph_error(g), "store_slice: start [2]: expected one element"),
              "%s", graph_error(g));
    kiln_graph_free(g);
    kiln_context_free(ctx);
}

/* Attention decoded one position at a time, keys and values appended to a
 * cache with store_slice and the mask shifted by the position, gives at each
 * position the row that causal attention over the whole sequence gives. */
BACKEND_TEST(chain, cached_attention_matches_causal_attention_position_by_position)
{
    enum { H = 2, T = 7, D = 5 };
    const float   scale = 0.4f;
    kiln_context *ctx   = test_backend_context(backend);
    /* the whole sequence */
    kiln_graph  *ga = kiln_graph_new(ctx);
    kiln_tensor *q  = kiln_input(ga, "q", KILN_F32, KILN_SHAPE(H, T, D));
    kiln_tensor *k  = kiln_input(ga, "k", KILN_F32, KILN_SHAPE(H, T, D));
    kiln_tensor *v  = kiln_input(ga, "v", KILN_F32, KILN_SHAPE(H, T, D));
    kiln_tensor *ya = kiln_matmul(
        ga, kiln_causal_softmax(ga, kiln_matmul_t(ga, q, k, false, true), scale), v);
    cr_assert_eq(kiln_output(ga, ya), KILN_OK, "%s", graph_error(ga));
    cr_assert_eq(kiln_graph_compile(ga), KILN_OK, "%s", graph_error(ga));
    float qs[H * T * D], ks[H * T * D], vs[H * T * D], full[H * T * D];
    ref_fill(qs, H * T * D, 21);
    ref_fill(ks, H * T * D, 22);
    ref_fill(vs, H * T * D, 23);
    cr_assert_eq(kiln_tensor_write(q, qs, sizeof qs), KILN_OK);
    cr_assert_eq(kiln_tensor_write(k, ks, sizeof ks), KILN_OK);
    cr_assert_eq(kiln_tensor_write(v, vs, sizeof vs), KILN_OK);
    cr_assert_eq(kiln_graph_run(ga), KILN_OK, "%s", kiln_last_error());
    cr_assert_eq(kiln_tensor_read(ya, full, sizeof full), KILN_OK, "%s",
                 kiln_last_error());

    /* one position per run */
    kiln_graph  *gb  = kiln_graph_new(ctx);
    kiln_tensor *q1  = kiln_input(gb, "q1", KILN_F32, KILN_SHAPE(H, 1, D));
    kiln_tensor *k1  = kiln_input(gb, "k1", KILN_F32, KILN_SHAPE(H, 1, D));
    kiln_tensor *v1  = kiln_input(gb, "v1", KILN_F32, KILN_SHAPE(H, 1, D));
    kiln_tensor *kc  = kiln_input(gb, "k_cache", KILN_F32, KILN_SHAPE(H, T, D));
    kiln_tensor *vc  = kiln_input(gb, "v_cache", KILN_F32, KILN_SHAPE(H, T, D));
    kiln_tensor *pos = kiln_input(gb, "pos", KILN_I32, KILN_SHAPE(1));
    kiln_tensor *kn  = kiln_store_slice(gb, kc, k1, 1, pos);
    kiln_tensor *vn  = kiln_store_slice(gb, vc, v1, 1, pos);
    kiln_tensor *att = kiln_causal_softmax_offset(gb,
                                                  kiln_matmul_t(gb, q1, kn, false, true),
                                                  scale, pos);
    kiln_tensor *yb  = kiln_matmul(gb, att, vn);
    cr_assert_eq(kiln_output(gb, yb), KILN_OK, "%s", graph_error(gb));
    cr_assert_eq(kiln_graph_compile(gb), KILN_OK, "%s", graph_error(gb));
    /* the cache's unused rows hold NaN: a masked row that was read would show */
    float nan[H * T * D];
    for (int i = 0; i < H * T * D; i++)
        nan[i] = NAN;
    cr_assert_eq(kiln_tensor_write(kc, nan, sizeof nan), KILN_OK);
    for (int i = 0; i < H * T * D; i++)
        nan[i] = 0.0f; /* 0 * NaN is NaN: the values' unused rows must be finite */
    cr_assert_eq(kiln_tensor_write(vc, nan, sizeof nan), KILN_OK);
    for (int32_t p = 0; p < T; p++) {
        float one[3][H * D], got[H * D], want[H * D];
        for (int h = 0; h < H; h++)
            for (int d = 0; d < D; d++) {
                one[0][h * D + d] = qs[(h * T + p) * D + d];
                one[1][h * D + d] = ks[(h * T + p) * D + d];
                one[2][h * D + d] = vs[(h * T + p) * D + d];
                want[h * D + d]   = full[(h * T + p) * D + d];
            }
        cr_assert_eq(kiln_tensor_write(q1, one[0], sizeof one[0]), KILN_OK);
        cr_assert_eq(kiln_tensor_write(k1, one[1], sizeof one[1]), KILN_OK);
        cr_assert_eq(kiln_tensor_write(v1, one[2], sizeof one[2]), KILN_OK);
        cr_assert_eq(kiln_tensor_write(pos, &p, sizeof p), KILN_OK);
        cr_assert_eq(kiln_graph_run(gb), KILN_OK, "%s: %s", backend->label,
                     kiln_last_error());
        cr_assert_eq(kiln_tensor_read(yb, got, sizeof got), KILN_OK, "%s",
                     kiln_last_error());
        char what[320];
        snprintf(what, sizeof what, "%s: cached attention at position %d", backend->label,
                 (int)p);
        ref_expect_close(what, got, want, ref_shape_of(KILN_SHAPE(H * D)),
                         (ref_tol){1e-5, 1e-5});
    }
    kiln_graph_free(ga);
    kiln_graph_free(gb);
    kiln_context_free(ctx);
}

/* ---- chains ------------------------------------------------------------------------------------ */

BACKEND_TEST(chain, mlp_forward_matches_reference)
{
    enum { N = 17, D = 13, H = 31, C = 10 };
    kiln_context *ctx = test_backend_context(backend);
    op_case       c;
    case_begin(&c, ctx, backend->label, "mlp log_softmax(relu(x @ w1 + b1) @ w2)");
    leaf        *x  = case_input(&c, "x", shape2(N, D), FILL_ANY);
    leaf        *w1 = case_param(&c, "w1", shape2(D, H), FILL_ANY);
    leaf        *b1 = case_param(&c, "b1", ref_shape_of(KILN_SHAPE(H)), FILL_ANY);
    leaf        *w2 = case_param(&c, "w2", shape2(H, C), FILL_ANY);
    kiln_tensor *h  = kiln_relu(c.g, kiln_add(c.g, kiln_matmul(c.g, x->t, w1->t), b1->t));
    kiln_tensor *y  = kiln_log_softmax(c.g, kiln_matmul(c.g, h, w2->t));
    case_compile(&c, y);

    float *xw     = case_scratch(&c, N * H, sizeof(float));
    float *hw     = case_scratch(&c, N * H, sizeof(float));
    float *logits = case_scratch(&c, N * C, sizeof(float));
    float *want   = case_scratch(&c, N * C, sizeof(float));
    for (int r = 0; r < RUNS; r++) {
        case_run(&c);
        ref_matmul(x->f, w1->f, N, D, H, false, false, xw);
        ref_binary(REF_ADD, xw, shape2(N, H), b1->f, b1->shape, hw, shape2(N, H));
        ref_unary(REF_RELU, hw, N * H, 0.0f, hw);
        ref_matmul(hw, w2->f, N, H, C, false, false, logits);
        ref_log_softmax_last(logits, N, C, want);
        case_expect(&c, y, want, shape2(N, C), tol_for_sum(H * D));
    }
    case_end(&c);
    kiln_context_free(ctx);
}

BACKEND_TEST(chain, cnn_forward_and_loss_match_reference)
{
    enum { N = 3, C = 2, HW = 9, O = 5, P = 4, CLASSES = 10 };
    const ref_conv2d_shape cs  = {N, C, HW, HW, O, 3, 3, 1, 1};
    kiln_context          *ctx = test_backend_context(backend);
    op_case                c;
    case_begin(&c, ctx, backend->label,
               "cnn cross_entropy(flatten(max_pool(relu(conv2d(x)))) @ w, labels)");
    leaf *x      = case_input(&c, "x", ref_shape_of(KILN_SHAPE(N, C, HW, HW)), FILL_ANY);
    leaf *k      = case_param(&c, "k", ref_shape_of(KILN_SHAPE(O, C, 3, 3)), FILL_ANY);
    leaf *kb     = case_param(&c, "kb", ref_shape_of(KILN_SHAPE(O)), FILL_ANY);
    leaf *w      = case_param(&c, "w", shape2(O * P * P, CLASSES), FILL_ANY);
    leaf *labels = case_labels(&c, "labels", N, CLASSES);
    kiln_tensor *conv   = kiln_relu(c.g, kiln_conv2d(c.g, x->t, k->t, kb->t, 1, 1));
    kiln_tensor *feat   = kiln_flatten(c.g, kiln_max_pool2d(c.g, conv, 2, 2));
    kiln_tensor *logits = kiln_scale(c.g, kiln_matmul(c.g, feat, w->t), 0.1f);
    kiln_tensor *loss   = kiln_cross_entropy(c.g, logits, labels->t);
    case_output(&c, logits);
    case_compile(&c, loss);

    float *conv_ref   = case_scratch(&c, N * O * HW * HW, sizeof(float));
    float *pool_ref   = case_scratch(&c, N * O * P * P, sizeof(float));
    float *logits_ref = case_scratch(&c, N * CLASSES, sizeof(float));
    for (int r = 0; r < RUNS; r++) {
        case_run(&c);
        ref_conv2d(x->f, k->f, kb->f, cs, conv_ref);
        ref_unary(REF_RELU, conv_ref, N * O * HW * HW, 0.0f, conv_ref);
        ref_max_pool2d(conv_ref, N, O, HW, HW, 2, 2, pool_ref);
        ref_matmul(pool_ref, w->f, N, O * P * P, CLASSES, false, false, logits_ref);
        ref_unary(REF_SCALE, logits_ref, N * CLASSES, 0.1f, logits_ref);
        float want_loss = ref_cross_entropy(logits_ref, labels->i, N, CLASSES);
        case_expect(&c, logits, logits_ref, shape2(N, CLASSES),
                    tol_for_sum(C * 9 * O * P * P));
        case_expect(&c, loss, &want_loss, scalar_shape(), tol_for_sum(C * 9 * O));
    }
    case_end(&c);
    kiln_context_free(ctx);
}
