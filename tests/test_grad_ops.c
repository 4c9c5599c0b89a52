/* tests/test_grad_ops.c — the gradient and optimiser-step ops of backend.h
 * (ABI 2) against plain references, at the plugin ABI.
 *
 * Nodes are built by hand, so a backend's training ops are tested before
 * and apart from kiln_backward. Every device the other suites run on
 * (test_backend_list: what kiln's loader finds on KILN_PLUGIN_PATH), opened
 * through the plugin table kiln loaded, runs every case its supports_op
 * accepts; a case no device accepts is skipped, never passed. The cpu
 * device is opened once per kernel ISA this machine runs (KILN_CPU_ISA, read
 * at device open), each with two threads, so that every ISA's kernels and the
 * split of a large op between threads are tested wherever the suite runs. Each tensor gets a buffer of
 * its own with a 64-byte offset (or a few floats more, to misalign it), and
 * outputs start as NaN, so an element a kernel forgets to write, or an
 * offset it ignores, shows. Sizes are chosen to end in part of a vector.
 */
#include "backends.h"
#include "reference.h"

#include <criterion/criterion.h>
#include <kiln/backend.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define OFFSET 64 /* bytes before each tensor's data in its buffer */

/* ---- every device the other suites run on (tests/backends.c) ------------------- */

#define MAX_DEVICES 12

typedef struct device {
    char        label[160];
    kiln_device dev;
} device;

static device devices[MAX_DEVICES];
static int    n_devices;

/* setenv, or unsetenv for NULL. */
static void set_env(const char *name, const char *value)
{
    int rc = value ? setenv(name, value, 1) : unsetenv(name);
    cr_assert_eq(rc, 0, "cannot set %s", name);
}

static char *env_copy(const char *name)
{
    const char *v = getenv(name);
    return v ? strdup(v) : NULL;
}

/* Opens b's device through its plugin table. The cpu device is listed once
 * per ISA and opened with that ISA and two threads; its description says
 * which kernels it runs and must name the ISA asked for, so that a device
 * that quietly ran another ISA fails instead of passing for it. */
static void open_device(const test_backend *b)
{
    int                index;
    const kiln_plugin *p           = test_backend_plugin(b, &index);
    char              *old_isa     = env_copy("KILN_CPU_ISA");
    char              *old_threads = env_copy("KILN_NUM_THREADS");
    char               want[64]    = "";
    if (b->isa[0]) {
        snprintf(want, sizeof want, "%s kernels (", b->isa);
        set_env("KILN_CPU_ISA", b->isa);
        set_env("KILN_NUM_THREADS", "2");
    }
    kiln_device_desc desc;
    cr_assert_eq(p->device_desc(index, &desc), KILN_OK, "%s: device_desc: %s", b->label,
                 kiln_last_error());
    cr_assert(!desc.unusable[0], "%s: unusable: %s", b->label, desc.unusable);
    cr_assert(strncmp(desc.description, want, strlen(want)) == 0,
              "%s: expected a description beginning \"%s\", got \"%s\"", b->label, want,
              desc.description);
    device *d = &devices[n_devices];
    cr_assert_eq(p->device_open(index, &d->dev), KILN_OK, "%s: device_open: %s", b->label,
                 kiln_last_error());
    snprintf(d->label, sizeof d->label, "%s (%s)", b->label, desc.name);
    n_devices++;
    set_env("KILN_CPU_ISA", old_isa);
    set_env("KILN_NUM_THREADS", old_threads);
    free(old_isa);
    free(old_threads);
}

static void open_devices(void)
{
    test_backend list[MAX_DEVICES];
    test_first_spec(); /* asserts that there is a device, saying why not */
    size_t n = test_backend_list(list, MAX_DEVICES);
    cr_assert_leq(n, MAX_DEVICES, "%zu devices to test; MAX_DEVICES is %d", n,
                  MAX_DEVICES);
    for (size_t i = 0; i < n; i++)
        open_device(&list[i]);
}

static void close_devices(void)
{
    for (int i = 0; i < n_devices; i++)
        devices[i].dev.iface->free(devices[i].dev.context);
    n_devices = 0;
}

TestSuite(grad_ops, .init = open_devices, .fini = close_devices);

/* ---- tensors ------------------------------------------------------------------- */

typedef struct tensor {
    kiln_node node;
    float    *f;      /* host data (f32)                         */
    int32_t  *i;      /* host data (i32)                         */
    size_t    offset; /* bytes before the data in its buffer     */
} tensor;

static void tensor_init(tensor *t, kiln_dtype dtype, int ndim, const int64_t *dims)
{
    memset(t, 0, sizeof *t);
    t->node.op    = KILN_OP_LEAF;
    t->node.dtype = dtype;
    t->node.ndim  = ndim;
    t->node.numel = 1;
    t->offset     = OFFSET;
    for (int d = 0; d < ndim; d++) {
        t->node.dims[d] = dims[d];
        t->node.numel *= dims[d];
    }
    size_t n = (size_t)t->node.numel ? (size_t)t->node.numel : 1;
    if (dtype == KILN_I32)
        t->i = calloc(n, sizeof *t->i);
    else
        t->f = calloc(n, sizeof *t->f);
    cr_assert(t->i || t->f, "out of memory");
}

static tensor *tensor_new(kiln_dtype dtype, int ndim, const int64_t *dims)
{
    tensor *t = malloc(sizeof *t);
    cr_assert_not_null(t);
    tensor_init(t, dtype, ndim, dims);
    return t;
}

static void tensor_free(tensor *t)
{
    free(t->f);
    free(t->i);
    free(t);
}

static size_t nbytes(const tensor *t)
{
    return (size_t)t->node.numel * 4;
}

/* Allocates t's buffer on dev and writes its data after NaN padding (all
 * NaN when `as_output`). */
static void upload(const device *d, tensor *t, bool as_output)
{
    const kiln_device_iface *io   = d->dev.iface;
    size_t                   size = t->offset + nbytes(t);
    float                   *fill = malloc(size);
    cr_assert_not_null(fill);
    for (size_t k = 0; k < size / 4; k++)
        fill[k] = NAN;
    if (!as_output)
        memcpy((char *)fill + t->offset, t->f ? (void *)t->f : (void *)t->i, nbytes(t));
    cr_assert_eq(io->buffer_alloc(d->dev.context, size, &t->node.buffer), KILN_OK,
                 "%s: buffer_alloc: %s", d->label, kiln_last_error());
    cr_assert_eq(io->buffer_write(d->dev.context, t->node.buffer, 0, fill, size), KILN_OK,
                 "%s: buffer_write: %s", d->label, kiln_last_error());
    t->node.offset = t->offset;
    free(fill);
}

static void download(const device *d, const tensor *t, float *dst)
{
    cr_assert_eq(d->dev.iface->buffer_read(d->dev.context, t->node.buffer, t->offset, dst,
                                           nbytes(t)),
                 KILN_OK, "%s: buffer_read: %s", d->label, kiln_last_error());
}

static void release(const device *d, tensor *t)
{
    d->dev.iface->buffer_free(d->dev.context, t->node.buffer);
    t->node.buffer = NULL;
}

/* ---- one case ------------------------------------------------------------------- */

/* A node with its sources; out may be one of the sources (optimiser steps). */
typedef struct op_case {
    const char *label;
    tensor     *out;
    tensor     *src[KILN_MAX_SRC];
    int         n_src;
    bool        in_place; /* out is src[0] */
} op_case;

/* Runs the case on every device that supports it and compares `out` (and
 * each of extra[0..n_extra), state tensors updated in place) with want
 * and extra_want. Skips the test if no device supports it. */
static void run_case(op_case *c, const float *want, tensor **extra,
                     const float *const *extra_want, int n_extra, ref_tol tol)
{
    int ran = 0;
    for (int k = 0; k < n_devices; k++) {
        const device            *d  = &devices[k];
        const kiln_device_iface *io = d->dev.iface;
        if (!io->supports_op(d->dev.context, &c->out->node))
            continue;
        for (int s = 0; s < c->n_src; s++)
            upload(d, c->src[s], false);
        if (!c->in_place)
            upload(d, c->out, true);
        const kiln_node *list[1] = {&c->out->node};
        cr_assert_eq(io->graph_compute(d->dev.context, list, 1), KILN_OK,
                     "%s on %s: graph_compute: %s", c->label, d->label,
                     kiln_last_error());
        if (io->synchronize)
            cr_assert_eq(io->synchronize(d->dev.context), KILN_OK,
                         "%s on %s: synchronize: %s", c->label, d->label,
                         kiln_last_error());
        char      what[400];
        ref_shape shape = ref_shape_of(c->out->node.ndim, c->out->node.dims);
        float    *got   = malloc(nbytes(c->out) + 4);
        cr_assert_not_null(got);
        download(d, c->out, got);
        snprintf(what, sizeof what, "%.200s on %.150s", c->label, d->label);
        ref_expect_close(what, got, want, shape, tol);
        for (int e = 0; e < n_extra; e++) {
            download(d, extra[e], got);
            snprintf(what, sizeof what, "%.200s on %.150s, state %d", c->label, d->label,
                     e);
            ref_expect_close(what, got, extra_want[e],
                             ref_shape_of(extra[e]->node.ndim, extra[e]->node.dims), tol);
        }
        free(got);
        for (int s = 0; s < c->n_src; s++)
            release(d, c->src[s]);
        if (!c->in_place)
            release(d, c->out);
        ran++;
    }
    if (!ran)
        cr_skip_test("no device supports %s", c->label);
}

static tensor *out_node(kiln_op op, int ndim, const int64_t *dims, op_case *c,
                        const char *label)
{
    tensor *t  = tensor_new(KILN_F32, ndim, dims);
    t->node.op = op;
    for (int s = 0; s < c->n_src; s++)
        t->node.src[s] = &c->src[s]->node;
    c->out   = t;
    c->label = label;
    return t;
}

static void case_free(op_case *c)
{
    for (int s = 0; s < c->n_src; s++)
        if (c->src[s] != c->out)
            tensor_free(c->src[s]);
    tensor_free(c->out);
}

static tensor *input(op_case *c, int ndim, const int64_t *dims, uint64_t seed)
{
    tensor *t = tensor_new(KILN_F32, ndim, dims);
    ref_fill(t->f, (size_t)t->node.numel, seed);
    c->src[c->n_src++] = t;
    return t;
}

static const ref_tol TOL = {1e-6, 1e-5};

/* The sizes the kernels are tested at: one element, either side of a
 * vector of 16 (and so of 8 and 4), more than two vectors, many vectors
 * with a tail, and enough for the op to be split between two threads. */
static const int64_t SIZES[] = {1, 15, 17, 33, 1000, 70001};
#define N_SIZES (sizeof SIZES / sizeof SIZES[0])

/* t's data `floats` floats past OFFSET: off a 64-byte boundary when not 16. */
static void misalign(tensor *t, size_t floats)
{
    t->offset = OFFSET + floats * sizeof(float);
}

/* ---- SUM_TO, EXPAND, RELU_GRAD ---------------------------------------------------- */

static void check_sum_to(ref_shape s, ref_shape so)
{
    op_case c = {0};
    tensor *x = input(&c, s.ndim, s.dims, 1);
    out_node(KILN_OP_SUM_TO, so.ndim, so.dims, &c, "sum_to");
    size_t  n = ref_numel(s), m = ref_numel(so);
    double *acc  = calloc(m, sizeof *acc);
    float  *want = calloc(m, sizeof *want);
    for (size_t i = 0; i < n; i++)
        acc[i % m] += x->f[i];
    for (size_t j = 0; j < m; j++)
        want[j] = (float)acc[j];
    run_case(&c, want, NULL, NULL, 0, (ref_tol){1e-5, 1e-5});
    free(acc);
    free(want);
    case_free(&c);
}

Test(grad_ops, sum_to_adds_up_every_repeat_of_a_broadcast_operand)
{
    check_sum_to(ref_shape_of(KILN_SHAPE(3, 4, 5)), ref_shape_of(KILN_SHAPE(4, 5)));
    check_sum_to(ref_shape_of(KILN_SHAPE(3, 4, 5)), ref_shape_of(KILN_SHAPE(5)));
    check_sum_to(ref_shape_of(KILN_SHAPE(67, 129)), ref_shape_of(KILN_SHAPE(1, 129)));
    check_sum_to(ref_shape_of(KILN_SHAPE(2, 300)), ref_shape_of(0, NULL));
    check_sum_to(ref_shape_of(KILN_SHAPE(7)), ref_shape_of(KILN_SHAPE(7)));
    /* rows ending in part of a vector: 4, 5, 12, 13 and 27 columns (the
     * tails of 8 and 16 lanes), and rows the threads share */
    check_sum_to(ref_shape_of(KILN_SHAPE(9, 4)), ref_shape_of(KILN_SHAPE(4)));
    check_sum_to(ref_shape_of(KILN_SHAPE(40, 13)), ref_shape_of(KILN_SHAPE(13)));
    check_sum_to(ref_shape_of(KILN_SHAPE(33, 12)), ref_shape_of(KILN_SHAPE(12)));
    check_sum_to(ref_shape_of(KILN_SHAPE(9, 27)), ref_shape_of(KILN_SHAPE(27)));
    check_sum_to(ref_shape_of(KILN_SHAPE(4000, 23)), ref_shape_of(KILN_SHAPE(23)));
}

static void check_expand(ref_shape so, int axis, size_t shift)
{
    op_case   c = {0};
    ref_shape s = so;
    if (axis == -1) {
        s.ndim = 0;
    } else {
        for (int d = axis; d < so.ndim - 1; d++)
            s.dims[d] = so.dims[d + 1];
        s.ndim--;
    }
    tensor *x = input(&c, s.ndim, s.dims, 2);
    char    label[96], shp[64];
    snprintf(label, sizeof label, "expand to %s along %d, shifted %zu",
             ref_shape_str(so, shp, sizeof shp), axis, shift);
    tensor *out         = out_node(KILN_OP_EXPAND, so.ndim, so.dims, &c, label);
    out->node.iparam[0] = axis;
    misalign(x, shift);
    misalign(out, shift ? shift + 1 : 0);
    size_t n = ref_numel(so), inner = 1, r = n;
    if (axis >= 0) {
        r = (size_t)so.dims[axis];
        for (int d = axis + 1; d < so.ndim; d++)
            inner *= (size_t)so.dims[d];
    }
    float *want = malloc(n * sizeof *want);
    for (size_t i = 0; i < n; i++)
        want[i] = axis == -1 ? x->f[0] : x->f[i / (r * inner) * inner + i % inner];
    run_case(&c, want, NULL, NULL, 0, (ref_tol){0, 0});
    free(want);
    case_free(&c);
}

Test(grad_ops, expand_repeats_its_source_along_the_axis)
{
    check_expand(ref_shape_of(KILN_SHAPE(3, 4, 5)), 1, 0);
    check_expand(ref_shape_of(KILN_SHAPE(3, 4, 5)), 0, 0);
    check_expand(ref_shape_of(KILN_SHAPE(3, 4, 5)), 2, 0);
    check_expand(ref_shape_of(KILN_SHAPE(13, 31)), -1, 0);
}

/* A scalar broadcast at every size, repeats of one element (rows of 1),
 * repeats of whole rows, and a repeat count of 1, each large enough for two
 * threads to split somewhere inside a repeat. */
Test(grad_ops, expand_is_exact_at_every_size_and_alignment)
{
    for (size_t k = 0; k < N_SIZES; k++) {
        check_expand(ref_shape_of(KILN_SHAPE(SIZES[k])), -1, 0);
        check_expand(ref_shape_of(KILN_SHAPE(SIZES[k])), -1, 3);
    }
    check_expand(ref_shape_of(KILN_SHAPE(3, 70001)), 1, 3);
    check_expand(ref_shape_of(KILN_SHAPE(40, 50, 37)), 1, 3);
    check_expand(ref_shape_of(KILN_SHAPE(3, 17, 1)), 0, 1);
    check_expand(ref_shape_of(KILN_SHAPE(70001, 1, 3)), 1, 2);
}

/* Over 8 MiB a thread's share of a broadcast is stored around the caches. */
Test(grad_ops, expand_is_exact_when_the_output_is_streamed)
{
    check_expand(ref_shape_of(KILN_SHAPE(((int64_t)1 << 22) + 4099)), -1, 5);
}

/* g and x of n elements, misaligned by shift floats, with the special x
 * values at the start and a NaN in the last element (in a vector's tail). */
static void check_relu_grad(int64_t n, size_t shift)
{
    char label[64];
    snprintf(label, sizeof label, "relu_grad of %lld, shifted %zu", (long long)n, shift);
    op_case     c         = {0};
    tensor     *g         = input(&c, KILN_SHAPE(n), 3);
    tensor     *x         = input(&c, KILN_SHAPE(n), 4);
    const float special[] = {0.0f, NAN, -0.0f, INFINITY, -INFINITY, 1e-40f, -1e-40f};
    for (size_t k = 0; k < sizeof special / sizeof special[0] && k < (size_t)n; k++)
        x->f[k] = special[k];
    if (n > 3)
        g->f[3] = NAN; /* where x is +inf: the NaN passes */
    x->f[n - 1] = NAN;
    tensor *out = out_node(KILN_OP_RELU_GRAD, KILN_SHAPE(n), &c, label);
    misalign(g, shift);
    misalign(x, shift ? shift + 1 : 0);
    misalign(out, shift ? shift + 2 : 0);
    float *want = malloc((size_t)n * sizeof *want);
    cr_assert_not_null(want);
    for (int64_t i = 0; i < n; i++)
        want[i] = x->f[i] > 0.0f ? g->f[i] : 0.0f;
    run_case(&c, want, NULL, NULL, 0, (ref_tol){0, 0});
    free(want);
    case_free(&c);
}

Test(grad_ops, relu_grad_passes_the_gradient_where_x_is_positive)
{
    op_case c = {0};
    tensor *g = input(&c, KILN_SHAPE(7, 13), 3);
    tensor *x = input(&c, KILN_SHAPE(7, 13), 4);
    x->f[0]   = 0.0f;
    x->f[1]   = NAN;
    out_node(KILN_OP_RELU_GRAD, KILN_SHAPE(7, 13), &c, "relu_grad");
    float want[91];
    for (int i = 0; i < 91; i++)
        want[i] = x->f[i] > 0.0f ? g->f[i] : 0.0f;
    run_case(&c, want, NULL, NULL, 0, (ref_tol){0, 0});
    case_free(&c);
}

Test(grad_ops, relu_grad_is_exact_at_every_size_and_alignment)
{
    for (size_t k = 0; k < N_SIZES; k++) {
        check_relu_grad(SIZES[k], 0);
        check_relu_grad(SIZES[k], 3);
    }
}

/* Over 8 MiB a thread's share of the output is stored around the caches,
 * after a head that aligns it: shifted, that head is not empty. */
Test(grad_ops, relu_grad_is_exact_when_the_output_is_streamed)
{
    check_relu_grad(((int64_t)1 << 22) + 4099, 5);
}

/* ---- GELU_GRAD ------------------------------------------------------------------ */

/* g and x of n elements in [-2, 2], misaligned by shift floats, with special x
 * values at the start: signed zeros, infinities, NaN, a subnormal, and
 * magnitudes where x^3 (1e13) or x^2 (1e20) overflows f32. */
static void check_gelu_grad(int64_t n, size_t shift)
{
    char label[64];
    snprintf(label, sizeof label, "gelu_grad of %lld, shifted %zu", (long long)n, shift);
    op_case     c         = {0};
    tensor     *g         = input(&c, KILN_SHAPE(n), 13);
    tensor     *x         = input(&c, KILN_SHAPE(n), 14);
    const float special[] = {0.0f,  -0.0f, INFINITY, -INFINITY, NAN,    1e-40f, 5.0f,
                             -5.0f, 12.0f, -12.0f,   1e13f,     -1e13f, 1e20f,  -1e20f};
    for (size_t k = 0; k < sizeof special / sizeof special[0] && k < (size_t)n; k++)
        x->f[k] = special[k];
    if (n > 16)
        x->f[n - 1] = -30.0f; /* in a vector's tail */
    tensor *out = out_node(KILN_OP_GELU_GRAD, KILN_SHAPE(n), &c, label);
    misalign(g, shift);
    misalign(x, shift ? shift + 1 : 0);
    misalign(out, shift ? shift + 2 : 0);
    float *want = malloc((size_t)n * sizeof *want);
    cr_assert_not_null(want);
    for (int64_t i = 0; i < n; i++)
        want[i] = (float)((double)g->f[i] * ref_gelu_grad(x->f[i]));
    run_case(&c, want, NULL, NULL, 0, TOL);
    free(want);
    case_free(&c);
}

Test(grad_ops, gelu_grad_matches_the_reference_at_every_size_and_alignment)
{
    for (size_t k = 0; k < N_SIZES; k++) {
        check_gelu_grad(SIZES[k], 0);
        check_gelu_grad(SIZES[k], 3);
    }
}

/* ---- LAYER_NORM_GRAD, LAYER_NORM_GRAD_WEIGHT -------------------------------------- */

/* Row r's mean and 1 / sqrt(var + eps), in double. */
static void ln_stats(const float *x, int64_t cols, float eps, double *mean, double *rstd)
{
    double s = 0.0, v = 0.0;
    for (int64_t k = 0; k < cols; k++)
        s += x[k];
    *mean = s / (double)cols;
    for (int64_t k = 0; k < cols; k++)
        v += ((double)x[k] - *mean) * ((double)x[k] - *mean);
    *rstd = 1.0 / sqrt(v / (double)cols + eps);
}

/* g, x [rows, cols] and weight [cols]; x around `center`, misaligned by
 * shift floats. */
static void check_layer_norm_grad(int64_t rows, int64_t cols, float center, size_t shift)
{
    char label[96];
    snprintf(label, sizeof label, "layer_norm_grad [%lld, %lld] around %g, shifted %zu",
             (long long)rows, (long long)cols, (double)center, shift);
    const float eps = 1e-5f;
    op_case     c   = {0};
    size_t      n   = (size_t)(rows * cols);
    tensor     *g   = input(&c, KILN_SHAPE(rows, cols), 21);
    tensor     *x   = input(&c, KILN_SHAPE(rows, cols), 22);
    tensor     *w   = input(&c, KILN_SHAPE(cols), 23);
    for (size_t k = 0; k < n; k++)
        x->f[k] += center;
    tensor *out = out_node(KILN_OP_LAYER_NORM_GRAD, KILN_SHAPE(rows, cols), &c, label);
    out->node.fparam[0] = eps;
    misalign(g, shift);
    misalign(x, shift ? shift + 1 : 0);
    misalign(out, shift ? shift + 2 : 0);
    float *want = malloc((n ? n : 1) * sizeof *want);
    cr_assert_not_null(want);
    for (int64_t r = 0; r < rows; r++) {
        const float *gr = g->f + r * cols, *xr = x->f + r * cols;
        double       m, rs, sg = 0.0, sgx = 0.0;
        ln_stats(xr, cols, eps, &m, &rs);
        for (int64_t k = 0; k < cols; k++) {
            sg += (double)gr[k] * w->f[k];
            sgx += (double)gr[k] * w->f[k] * ((double)xr[k] - m) * rs;
        }
        for (int64_t k = 0; k < cols; k++) {
            double xhat        = ((double)xr[k] - m) * rs;
            want[r * cols + k] = (float)(rs / (double)cols *
                                         ((double)cols * gr[k] * w->f[k] - sg -
                                          xhat * sgx));
        }
    }
    run_case(&c, want, NULL, NULL, 0, (ref_tol){1e-5, 1e-5});
    free(want);
    case_free(&c);
}

static void check_layer_norm_grad_weight(int64_t rows, int64_t cols, float center,
                                         size_t shift)
{
    char label[96];
    snprintf(label, sizeof label,
             "layer_norm_grad_weight [%lld, %lld] around %g, shifted %zu",
             (long long)rows, (long long)cols, (double)center, shift);
    const float eps = 1e-5f;
    op_case     c   = {0};
    size_t      n   = (size_t)(rows * cols);
    tensor     *g   = input(&c, KILN_SHAPE(rows, cols), 24);
    tensor     *x   = input(&c, KILN_SHAPE(rows, cols), 25);
    for (size_t k = 0; k < n; k++)
        x->f[k] += center;
    tensor *out = out_node(KILN_OP_LAYER_NORM_GRAD_WEIGHT, KILN_SHAPE(cols), &c, label);
    out->node.fparam[0] = eps;
    misalign(g, shift);
    misalign(x, shift ? shift + 1 : 0);
    misalign(out, shift ? shift + 2 : 0);
    double *acc  = calloc((size_t)cols, sizeof *acc);
    float  *want = malloc((size_t)cols * sizeof *want);
    cr_assert(acc && want);
    for (int64_t r = 0; r < rows; r++) {
        double m, rs;
        ln_stats(x->f + r * cols, cols, eps, &m, &rs);
        for (int64_t k = 0; k < cols; k++)
            acc[k] += (double)g->f[r * cols + k] * ((double)x->f[r * cols + k] - m) * rs;
    }
    for (int64_t k = 0; k < cols; k++)
        want[k] = (float)acc[k];
    run_case(&c, want, NULL, NULL, 0, (ref_tol){1e-5, 1e-5});
    free(acc);
    free(want);
    case_free(&c);
}

/* Rows of 1, of part of a vector, of several vectors, many rows (which the
 * threads share), and rows around 1000. */
static const int64_t LN_SHAPES[][2] = {
    {1, 1}, {5, 1}, {3, 7}, {4, 15}, {4, 17}, {2, 33}, {3, 130}, {1, 1000}, {600, 129},
};

Test(grad_ops, layer_norm_grad_matches_the_reference_per_row)
{
    for (size_t k = 0; k < sizeof LN_SHAPES / sizeof LN_SHAPES[0]; k++) {
        check_layer_norm_grad(LN_SHAPES[k][0], LN_SHAPES[k][1], 0.0f, 0);
        check_layer_norm_grad(LN_SHAPES[k][0], LN_SHAPES[k][1], 0.0f, 3);
    }
    check_layer_norm_grad(4, 33, 1000.0f, 1);
}

Test(grad_ops, layer_norm_grad_weight_sums_over_rows)
{
    for (size_t k = 0; k < sizeof LN_SHAPES / sizeof LN_SHAPES[0]; k++) {
        check_layer_norm_grad_weight(LN_SHAPES[k][0], LN_SHAPES[k][1], 0.0f, 0);
        check_layer_norm_grad_weight(LN_SHAPES[k][0], LN_SHAPES[k][1], 0.0f, 3);
    }
    check_layer_norm_grad_weight(4, 33, -1000.0f, 1);
    check_layer_norm_grad_weight(0, 7, 0.0f, 0); /* no rows: zeros */
}

/* ---- MAX_GRAD, SOFTMAX_GRAD, LOG_SOFTMAX_GRAD ----------------------------------- */

/* The first index of the maximum of x[0..n) (of the first NaN, if any). */
static int first_max(const float *x, int n)
{
    int best = 0;
    for (int i = 0; i < n && !isnan(x[best]); i++)
        if (isnan(x[i]) || x[i] > x[best])
            best = i;
    return best;
}

static void check_max_grad(int64_t R, int64_t C)
{
    op_case c = {0};
    tensor *g = input(&c, KILN_SHAPE(R), 5);
    tensor *x = input(&c, KILN_SHAPE(R, C), 6);
    ref_fill_ties(x->f, (size_t)(R * C), 6);
    x->f[2 * C + 4] = NAN; /* a NaN wins its row */
    x->f[2 * C + 7] = NAN;
    out_node(KILN_OP_MAX_GRAD, KILN_SHAPE(R, C), &c, "max_grad");
    float *want = malloc((size_t)(R * C) * sizeof *want);
    cr_assert_not_null(want);
    for (int64_t r = 0; r < R; r++) {
        int at = first_max(x->f + r * C, (int)C);
        for (int64_t k = 0; k < C; k++)
            want[r * C + k] = k == at ? g->f[r] : 0.0f;
    }
    run_case(&c, want, NULL, NULL, 0, (ref_tol){0, 0});
    free(want);
    case_free(&c);
}

Test(grad_ops, max_grad_goes_to_the_first_maximum_of_each_row)
{
    check_max_grad(6, 9);
    check_max_grad(3000, 37); /* rows split between the threads */
}

static void check_softmax_grad(bool as_log, int64_t rows, int64_t cols)
{
    op_case c = {0};
    size_t  n = (size_t)(rows * cols);
    tensor *g = input(&c, KILN_SHAPE(rows, cols), 7);
    tensor *y = input(&c, KILN_SHAPE(rows, cols), 8);
    float  *x = malloc(n * sizeof *x), *want = malloc(n * sizeof *want);
    ref_fill(x, n, 9);
    if (as_log)
        ref_log_softmax_last(x, rows, cols, y->f);
    else
        ref_softmax_last(x, rows, cols, y->f);
    out_node(as_log ? KILN_OP_LOG_SOFTMAX_GRAD : KILN_OP_SOFTMAX_GRAD,
             KILN_SHAPE(rows, cols), &c, as_log ? "log_softmax_grad" : "softmax_grad");
    for (int64_t r = 0; r < rows; r++) {
        const float *gr = g->f + r * cols, *yr = y->f + r * cols;
        double       s = 0.0;
        for (int64_t k = 0; k < cols; k++)
            s += as_log ? (double)gr[k] : (double)gr[k] * yr[k];
        for (int64_t k = 0; k < cols; k++)
            want[r * cols + k] = as_log ? (float)(gr[k] - exp(yr[k]) * s)
                                        : (float)(yr[k] * (gr[k] - s));
    }
    run_case(&c, want, NULL, NULL, 0, TOL);
    free(x);
    free(want);
    case_free(&c);
}

Test(grad_ops, softmax_grads_match_the_reference_per_row)
{
    check_softmax_grad(false, 5, 11);
    check_softmax_grad(true, 5, 11);
    check_softmax_grad(false, 3, 300);
    check_softmax_grad(true, 1, 1);
}

/* Rows that end in part of a vector, and 600 rows, which two threads share. */
Test(grad_ops, softmax_grads_match_the_reference_for_odd_rows)
{
    static const int64_t shapes[][2] = {
        {3, 1}, {4, 15}, {4, 17}, {2, 33}, {3, 1000}, {600, 129},
    };
    for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++) {
        check_softmax_grad(false, shapes[k][0], shapes[k][1]);
        check_softmax_grad(true, shapes[k][0], shapes[k][1]);
    }
}

/* ---- convolution and pooling --------------------------------------------------- */

typedef struct conv_geom {
    int64_t n, c, h, w, o, kh, kw, sh, sw, ph, pw;
} conv_geom;

static int64_t conv_out(int64_t in, int64_t k, int64_t s, int64_t p)
{
    return (in + 2 * p - k) / s + 1;
}

/* For every (n, o, oh, ow) x (c, kh, kw) pair that touches the image, f is
 * called with the flat indices of x, w and y. */
#define CONV_FOREACH(g, oh_n, ow_n, body)                                                \
    for (int64_t n_ = 0; n_ < (g).n; n_++)                                               \
        for (int64_t o_ = 0; o_ < (g).o; o_++)                                           \
            for (int64_t y_ = 0; y_ < (oh_n); y_++)                                      \
                for (int64_t x_ = 0; x_ < (ow_n); x_++)                                  \
                    for (int64_t c_ = 0; c_ < (g).c; c_++)                               \
                        for (int64_t a_ = 0; a_ < (g).kh; a_++)                          \
                            for (int64_t b_ = 0; b_ < (g).kw; b_++) {                    \
                                int64_t ih_ = y_ * (g).sh - (g).ph + a_,                 \
                                        iw_ = x_ * (g).sw - (g).pw + b_;                 \
                                if (ih_ < 0 || ih_ >= (g).h || iw_ < 0 || iw_ >= (g).w)  \
                                    continue;                                            \
                                size_t xi = (size_t)(((n_ * (g).c + c_) * (g).h + ih_) * \
                                                         (g).w +                         \
                                                     iw_);                               \
                                size_t wi = (size_t)(((o_ * (g).c + c_) * (g).kh + a_) * \
                                                         (g).kw +                        \
                                                     b_);                                \
                                size_t yi = (size_t)(((n_ * (g).o + o_) * (oh_n) + y_) * \
                                                         (ow_n) +                        \
                                                     x_);                                \
                                body;                                                    \
                            }

static void check_conv_grads(conv_geom g)
{
    int64_t oh = conv_out(g.h, g.kh, g.sh, g.ph), ow = conv_out(g.w, g.kw, g.sw, g.pw);
    size_t  nx = (size_t)(g.n * g.c * g.h * g.w), nw = (size_t)(g.o * g.c * g.kh * g.kw);
    char    label[160];
    snprintf(label, sizeof label,
             "conv2d grads x [%lld,%lld,%lld,%lld] w [%lld,%lld,"
             "%lld,%lld] stride %lld,%lld pad %lld,%lld",
             (long long)g.n, (long long)g.c, (long long)g.h, (long long)g.w,
             (long long)g.o, (long long)g.c, (long long)g.kh, (long long)g.kw,
             (long long)g.sh, (long long)g.sw, (long long)g.ph, (long long)g.pw);
    ref_tol tol       = {2e-6 * (double)(g.o * g.kh * g.kw + g.n * oh * ow + 1), 1e-5};
    int32_t params[4] = {(int32_t)g.sh, (int32_t)g.sw, (int32_t)g.ph, (int32_t)g.pw};

    /* grad input: src gy, w */
    op_case ci = {0};
    tensor *gy = input(&ci, KILN_SHAPE(g.n, g.o, oh, ow), 31);
    tensor *w  = input(&ci, KILN_SHAPE(g.o, g.c, g.kh, g.kw), 32);
    tensor *gx = out_node(KILN_OP_CONV2D_GRAD_INPUT, KILN_SHAPE(g.n, g.c, g.h, g.w), &ci,
                          label);
    memcpy(gx->node.iparam, params, sizeof params);
    double *acc  = calloc(nx > nw ? nx : nw, sizeof *acc);
    float  *want = calloc(nx > nw ? nx : nw, sizeof *want);
    CONV_FOREACH(g, oh, ow, acc[xi] += (double)gy->f[yi] * w->f[wi])
    for (size_t k = 0; k < nx; k++)
        want[k] = (float)acc[k];
    run_case(&ci, want, NULL, NULL, 0, tol);

    /* grad weight: src gy, x */
    op_case cw         = {0};
    cw.src[cw.n_src++] = gy;
    tensor *x          = input(&cw, KILN_SHAPE(g.n, g.c, g.h, g.w), 33);
    tensor *gw = out_node(KILN_OP_CONV2D_GRAD_WEIGHT, KILN_SHAPE(g.o, g.c, g.kh, g.kw),
                          &cw, label);
    memcpy(gw->node.iparam, params, sizeof params);
    memset(acc, 0, (nx > nw ? nx : nw) * sizeof *acc);
    CONV_FOREACH(g, oh, ow, acc[wi] += (double)gy->f[yi] * x->f[xi])
    for (size_t k = 0; k < nw; k++)
        want[k] = (float)acc[k];
    run_case(&cw, want, NULL, NULL, 0, tol);
    free(acc);
    free(want);
    tensor_free(x);
    tensor_free(gw);
    case_free(&ci);
}

Test(grad_ops, conv2d_grads_match_the_reference)
{
    /* n, c, h, w, o, kh, kw, sh, sw, ph, pw */
    check_conv_grads((conv_geom){1, 1, 5, 5, 1, 3, 3, 1, 1, 0, 0});
    check_conv_grads((conv_geom){3, 2, 9, 7, 4, 3, 3, 2, 2, 1, 1});
    check_conv_grads((conv_geom){2, 3, 11, 13, 5, 5, 3, 3, 2, 2, 1});
    check_conv_grads((conv_geom){2, 4, 6, 6, 3, 1, 1, 2, 2, 0, 0});
    check_conv_grads((conv_geom){4, 8, 12, 12, 16, 3, 3, 1, 1, 1, 1});
}

/* MAX_POOL2D_GRAD's reference: want (zeroed, planes x h x w) gets each
 * window's gy at its first maximum, or first NaN. */
static void pool_grad_want(const float *x, const float *gy, int64_t planes, int64_t h,
                           int64_t w, int k, int s, float *want)
{
    int64_t oh = (h - k) / s + 1, ow = (w - k) / s + 1;
    for (int64_t p = 0; p < planes; p++)
        for (int64_t i = 0; i < oh; i++)
            for (int64_t j = 0; j < ow; j++) {
                const float *plane = x + p * h * w;
                int64_t      best  = (i * s) * w + j * s;
                for (int a = 0; a < k; a++)
                    for (int b = 0; b < k; b++) {
                        int64_t at = (i * s + a) * w + j * s + b;
                        if (isnan(plane[best]))
                            continue;
                        if (isnan(plane[at]) || plane[at] > plane[best])
                            best = at;
                    }
                want[p * h * w + best] += gy[(p * oh + i) * ow + j];
            }
}

static void check_pool_grad(int64_t n, int64_t ch, int64_t h, int64_t w, int k, int s)
{
    int64_t oh = (h - k) / s + 1, ow = (w - k) / s + 1;
    op_case c  = {0};
    tensor *gy = input(&c, KILN_SHAPE(n, ch, oh, ow), 41);
    tensor *x  = input(&c, KILN_SHAPE(n, ch, h, w), 42);
    ref_fill_ties(x->f, (size_t)(n * ch * h * w), 42); /* ties: first maximum */
    x->f[3] = NAN;
    if (h * w > 2 * w + 2) { /* two NaNs in one window, and a third below */
        x->f[w + 1]     = NAN;
        x->f[w + 2]     = NAN;
        x->f[2 * w + 1] = NAN;
    }
    tensor *out       = out_node(KILN_OP_MAX_POOL2D_GRAD, KILN_SHAPE(n, ch, h, w), &c,
                                 "max_pool2d_grad");
    int32_t params[4] = {k, k, s, s};
    memcpy(out->node.iparam, params, sizeof params);
    size_t nx   = (size_t)(n * ch * h * w);
    float *want = calloc(nx, sizeof *want);
    cr_assert_not_null(want);
    pool_grad_want(x->f, gy->f, n * ch, h, w, k, s, want);
    run_case(&c, want, NULL, NULL, 0, TOL);
    free(want);
    case_free(&c);
}

Test(grad_ops, max_pool2d_grad_goes_to_the_first_maximum_and_adds_up_overlaps)
{
    check_pool_grad(1, 1, 4, 4, 2, 2);
    check_pool_grad(2, 3, 9, 11, 3, 2);  /* overlapping windows */
    check_pool_grad(1, 2, 7, 7, 2, 3);   /* gaps between windows */
    check_pool_grad(2, 2, 5, 300, 2, 1); /* stride 1, rows of windows past 256 */
    check_pool_grad(1, 3, 6, 613, 2, 2); /* stride 2, 306 windows a row */
    check_pool_grad(2, 3, 9, 11, 2, 2);  /* 2x2 stride 2, a row and a column past */
    check_pool_grad(2, 3, 28, 28, 2, 2); /* 14 windows a row: the last vector overlaps */
    check_pool_grad(1, 2, 5, 17, 2, 2);  /* 8 windows and a column past */
    check_pool_grad(1, 2, 6, 70, 3, 3);  /* tiling windows 3 wide: the general path */
    check_pool_grad(1, 2, 3, 37, 1, 1);  /* 1x1 windows: the gradient itself */
}

/* ---- chains the cpu backend fuses ----------------------------------------------------- */

/* Runs nodes[0..n) as one graph_compute on every device that supports them
 * all, sources uploaded from src[0..n_src), and compares each node's output
 * with want[k]. Each tensor has a buffer of its own, so a backend may fuse
 * them (fuse.c: CONV2D, RELU, MAX_POOL2D; MAX_POOL2D_GRAD, RELU_GRAD). */
static void run_chain(const char *label, tensor **src, int n_src, tensor **nodes, int n,
                      const float *const *want, ref_tol tol, tensor *const *alias)
{
    int ran = 0;
    for (int k = 0; k < n_devices; k++) {
        const device            *d  = &devices[k];
        const kiln_device_iface *io = d->dev.iface;
        bool                     ok = true;
        for (int i = 0; i < n; i++)
            ok = ok && io->supports_op(d->dev.context, &nodes[i]->node);
        if (!ok)
            continue;
        const kiln_node *list[4];
        for (int s = 0; s < n_src; s++)
            upload(d, src[s], false);
        for (int i = 0; i < n; i++) {
            if (alias && alias[i]) { /* in a source's storage, as a planner may put it */
                nodes[i]->node.buffer = alias[i]->node.buffer;
                nodes[i]->node.offset = alias[i]->node.offset;
            } else {
                upload(d, nodes[i], true);
            }
            list[i] = &nodes[i]->node;
        }
        cr_assert_eq(io->graph_compute(d->dev.context, list, (size_t)n), KILN_OK,
                     "%s on %s: graph_compute: %s", label, d->label, kiln_last_error());
        if (io->synchronize)
            cr_assert_eq(io->synchronize(d->dev.context), KILN_OK, "%s on %s: %s", label,
                         d->label, kiln_last_error());
        for (int i = 0; i < n; i++) {
            char   what[400];
            float *got = malloc(nbytes(nodes[i]) + 4);
            cr_assert_not_null(got);
            download(d, nodes[i], got);
            snprintf(what, sizeof what, "%.200s on %.150s, node %d", label, d->label, i);
            ref_expect_close(what, got, want[i],
                             ref_shape_of(nodes[i]->node.ndim, nodes[i]->node.dims), tol);
            free(got);
        }
        for (int s = 0; s < n_src; s++)
            release(d, src[s]);
        for (int i = 0; i < n; i++) {
            if (alias && alias[i])
                nodes[i]->node.buffer = NULL;
            else
                release(d, nodes[i]);
        }
        ran++;
    }
    if (ran == 0)
        cr_skip_test("no device runs %s", label);
}

/* conv2d 3x3 (padding 1) -> relu [-> max_pool2d k, stride k]: every output
 * checked, with images that split between the two threads or not. */
static void check_conv_relu_pool(int64_t n, int64_t c, int64_t hw, int64_t o, int k)
{
    char label[160];
    snprintf(label, sizeof label, "conv2d [%lld,%lld,%lld,%lld] -> %lld, relu%s",
             (long long)n, (long long)c, (long long)hw, (long long)hw, (long long)o,
             k ? ", max_pool2d" : "");
    op_case c_     = {0};
    tensor *x      = input(&c_, KILN_SHAPE(n, c, hw, hw), 61);
    tensor *w      = input(&c_, KILN_SHAPE(o, c, 3, 3), 62);
    tensor *b      = input(&c_, KILN_SHAPE(o), 63);
    tensor *conv   = out_node(KILN_OP_CONV2D, KILN_SHAPE(n, o, hw, hw), &c_, label);
    int32_t cp[4]  = {1, 1, 1, 1};
    memcpy(conv->node.iparam, cp, sizeof cp);
    op_case r_     = {0};
    r_.src[r_.n_src++] = conv;
    tensor *relu   = out_node(KILN_OP_RELU, KILN_SHAPE(n, o, hw, hw), &r_, label);
    int64_t ohw    = k ? (hw - k) / k + 1 : 0;
    op_case p_     = {0};
    tensor *pool   = NULL;
    if (k) {
        p_.src[p_.n_src++] = relu;
        pool          = out_node(KILN_OP_MAX_POOL2D, KILN_SHAPE(n, o, ohw, ohw), &p_, label);
        int32_t pp[4] = {k, k, k, k};
        memcpy(pool->node.iparam, pp, sizeof pp);
    }
    size_t ny = (size_t)(n * o * hw * hw);
    float *want_conv = malloc(ny * sizeof(float)), *want_relu = malloc(ny * sizeof(float));
    float *want_pool = malloc((size_t)(n * o * (ohw ? ohw * ohw : 1)) * sizeof(float));
    cr_assert(want_conv && want_relu && want_pool);
    ref_conv2d(x->f, w->f, b->f, (ref_conv2d_shape){n, c, hw, hw, o, 3, 3, 1, 1},
               want_conv);
    ref_unary(REF_RELU, want_conv, ny, 0.0f, want_relu);
    if (k)
        ref_max_pool2d(want_relu, n, o, hw, hw, k, k, want_pool);
    tensor      *src[]   = {x, w, b};
    tensor      *nodes[] = {conv, relu, pool};
    const float *want[]  = {want_conv, want_relu, want_pool};
    run_chain(label, src, 3, nodes, k ? 3 : 2, want,
              (ref_tol){2e-6 * (double)(c * 9 + 1), 1e-5}, NULL);
    free(want_conv);
    free(want_relu);
    free(want_pool);
    tensor_free(conv);
    tensor_free(relu);
    if (pool)
        tensor_free(pool);
    tensor_free(x);
    tensor_free(w);
    tensor_free(b);
}

Test(grad_ops, conv2d_relu_max_pool2d_in_one_graph_give_every_output)
{
    check_conv_relu_pool(4, 1, 28, 32, 2); /* kiln-train's cnn: images per thread */
    check_conv_relu_pool(3, 2, 9, 5, 2);   /* 3 images: the GEMMs split instead */
    check_conv_relu_pool(8, 3, 7, 4, 3);
    check_conv_relu_pool(2, 2, 6, 3, 0); /* conv and relu alone */
}

/* max_pool2d_grad (k, stride k) -> relu_grad of its output against the conv
 * output the relu read; with in_x, relu_grad's output takes the storage of
 * the pool's x (the forward relu's output, dead by then in training). */
static void check_pool_grad_relu(int64_t n, int64_t ch, int64_t hw, int k, bool in_x)
{
    char label[160];
    snprintf(label, sizeof label, "max_pool2d_grad [%lld,%lld,%lld,%lld] k %d, relu_grad%s",
             (long long)n, (long long)ch, (long long)hw, (long long)hw, k,
             in_x ? " in x's storage" : "");
    int64_t ohw = (hw - k) / k + 1;
    op_case c   = {0};
    tensor *gy  = input(&c, KILN_SHAPE(n, ch, ohw, ohw), 71);
    tensor *x   = input(&c, KILN_SHAPE(n, ch, hw, hw), 72);
    ref_fill_ties(x->f, (size_t)(n * ch * hw * hw), 72);
    x->f[1] = NAN;
    tensor *pg    = out_node(KILN_OP_MAX_POOL2D_GRAD, KILN_SHAPE(n, ch, hw, hw), &c, label);
    int32_t pp[4] = {k, k, k, k};
    memcpy(pg->node.iparam, pp, sizeof pp);
    op_case r        = {0};
    r.src[r.n_src++] = pg;
    tensor *pre      = input(&r, KILN_SHAPE(n, ch, hw, hw), 73); /* the relu's input */
    tensor *rg = out_node(KILN_OP_RELU_GRAD, KILN_SHAPE(n, ch, hw, hw), &r, label);
    size_t  nx = (size_t)(n * ch * hw * hw);
    float  *want_pg = calloc(nx, sizeof(float)), *want_rg = malloc(nx * sizeof(float));
    cr_assert(want_pg && want_rg);
    pool_grad_want(x->f, gy->f, n * ch, hw, hw, k, k, want_pg);
    for (size_t i = 0; i < nx; i++)
        want_rg[i] = pre->f[i] > 0 ? want_pg[i] : 0.0f;
    tensor      *src[]   = {gy, x, pre};
    tensor      *nodes[] = {pg, rg};
    const float *want[]  = {want_pg, want_rg};
    tensor      *alias[] = {NULL, in_x ? x : NULL};
    run_chain(label, src, 3, nodes, 2, want, TOL, alias);
    free(want_pg);
    free(want_rg);
    tensor_free(pg);
    tensor_free(rg);
    tensor_free(gy);
    tensor_free(x);
    tensor_free(pre);
}

Test(grad_ops, max_pool2d_grad_then_relu_grad_give_both_outputs)
{
    for (int in_x = 0; in_x < 2; in_x++) {
        check_pool_grad_relu(4, 8, 28, 2, in_x); /* the 2-wide kernel, many planes */
        check_pool_grad_relu(1, 3, 9, 2, in_x);  /* a row and a column past the windows */
        check_pool_grad_relu(2, 3, 10, 3, in_x); /* the general path */
    }
}

/* ---- CROSS_ENTROPY_GRAD ------------------------------------------------------------- */

/* Labels at random, but row 0's is the first class and row 1's the last
 * (in a vector's tail when C is not a multiple of it). */
static void check_cross_entropy_grad(int64_t N, int64_t C)
{
    char label[64];
    snprintf(label, sizeof label, "cross_entropy_grad [%lld, %lld]", (long long)N,
             (long long)C);
    op_case c      = {0};
    size_t  n      = (size_t)(N * C);
    tensor *g      = input(&c, 0, NULL, 51);
    tensor *logits = input(&c, KILN_SHAPE(N, C), 52);
    tensor *labels = tensor_new(KILN_I32, KILN_SHAPE(N));
    ref_fill_labels(labels->i, (size_t)N, (int32_t)C, 53);
    labels->i[0] = 0;
    if (N > 1)
        labels->i[1] = (int32_t)(C - 1);
    c.src[c.n_src++] = labels;
    out_node(KILN_OP_CROSS_ENTROPY_GRAD, KILN_SHAPE(N, C), &c, label);
    float *p = malloc(n * sizeof *p), *want = malloc(n * sizeof *want);
    cr_assert(p && want);
    ref_softmax_last(logits->f, N, C, p);
    for (int64_t r = 0; r < N; r++)
        for (int64_t k = 0; k < C; k++)
            want[r * C + k] = (float)((double)g->f[0] *
                                      ((double)p[r * C + k] - (k == labels->i[r])) /
                                      (double)N);
    run_case(&c, want, NULL, NULL, 0, TOL);
    free(p);
    free(want);
    case_free(&c);
}

Test(grad_ops, cross_entropy_grad_is_softmax_minus_one_hot_over_n)
{
    check_cross_entropy_grad(6, 10);
}

/* Rows that end in part of a vector, and 2000 rows, which two threads share. */
Test(grad_ops, cross_entropy_grad_matches_the_reference_for_odd_rows)
{
    static const int64_t shapes[][2] = {
        {5, 1}, {3, 15}, {3, 17}, {4, 33}, {2, 1000}, {2000, 37},
    };
    for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++)
        check_cross_entropy_grad(shapes[k][0], shapes[k][1]);
}

/* logits [A, B, C] with labels [A, B]: A * B rows, the mean over all of them. */
static void check_cross_entropy_grad_3d(int64_t A, int64_t B, int64_t C)
{
    char label[80];
    snprintf(label, sizeof label, "cross_entropy_grad [%lld, %lld, %lld]", (long long)A,
             (long long)B, (long long)C);
    op_case c      = {0};
    int64_t N      = A * B;
    size_t  n      = (size_t)(N * C);
    tensor *g      = input(&c, 0, NULL, 54);
    tensor *logits = input(&c, KILN_SHAPE(A, B, C), 55);
    tensor *labels = tensor_new(KILN_I32, KILN_SHAPE(A, B));
    ref_fill_labels(labels->i, (size_t)N, (int32_t)C, 56);
    c.src[c.n_src++] = labels;
    out_node(KILN_OP_CROSS_ENTROPY_GRAD, KILN_SHAPE(A, B, C), &c, label);
    float *p = malloc(n * sizeof *p), *want = malloc(n * sizeof *want);
    cr_assert(p && want);
    ref_softmax_last(logits->f, N, C, p);
    for (int64_t r = 0; r < N; r++)
        for (int64_t k = 0; k < C; k++)
            want[r * C + k] = (float)((double)g->f[0] *
                                      ((double)p[r * C + k] - (k == labels->i[r])) /
                                      (double)N);
    run_case(&c, want, NULL, NULL, 0, TOL);
    free(p);
    free(want);
    case_free(&c);
}

Test(grad_ops, cross_entropy_grad_takes_every_leading_axis_as_rows)
{
    check_cross_entropy_grad_3d(1, 1, 7);
    check_cross_entropy_grad_3d(2, 3, 1);
    check_cross_entropy_grad_3d(2, 3, 33);
    check_cross_entropy_grad_3d(4, 300, 17); /* two threads share it */
}

/* Runs c's node on every device that takes it and expects KILN_ERR_INVALID_ARG
 * (and `message` in kiln_last_error(), when given); frees c. */
static void expect_refused_at_run(op_case *c, const char *op, const char *message)
{
    int ran = 0;
    for (int k = 0; k < n_devices; k++) {
        const device            *d  = &devices[k];
        const kiln_device_iface *io = d->dev.iface;
        if (!io->supports_op(d->dev.context, &c->out->node))
            continue;
        for (int s = 0; s < c->n_src; s++)
            upload(d, c->src[s], false);
        upload(d, c->out, true);
        const kiln_node *list[1] = {&c->out->node};
        kiln_status      st      = io->graph_compute(d->dev.context, list, 1);
        if (st == KILN_OK && io->synchronize)
            st = io->synchronize(d->dev.context);
        cr_expect_eq(st, KILN_ERR_INVALID_ARG, "%s on %s gave status %d: %s", op,
                     d->label, (int)st, kiln_last_error());
        if (message)
            cr_expect(strstr(kiln_last_error(), message), "%s: %s", d->label,
                      kiln_last_error());
        for (int s = 0; s < c->n_src; s++)
            release(d, c->src[s]);
        release(d, c->out);
        ran++;
    }
    case_free(c);
    if (!ran)
        cr_skip_test("no device supports %s", op);
}

/* A label outside [0, C) in a late row is an error, whatever came before. */
Test(grad_ops, cross_entropy_grad_rejects_a_label_outside_the_classes)
{
    enum { N = 40, C = 7 };
    op_case c = {0};
    input(&c, 0, NULL, 51);
    input(&c, KILN_SHAPE(N, C), 52);
    tensor *labels = tensor_new(KILN_I32, KILN_SHAPE(N));
    ref_fill_labels(labels->i, N, C, 53);
    labels->i[N - 1] = C;
    c.src[c.n_src++] = labels;
    out_node(KILN_OP_CROSS_ENTROPY_GRAD, KILN_SHAPE(N, C), &c, "cross_entropy_grad");
    expect_refused_at_run(&c, "cross_entropy_grad", NULL);
}

/* ---- EMBEDDING_GRAD ------------------------------------------------------------------- */

/* g [..., C] for ids of shape `si` drawn from [0, V), so with many positions
 * each id repeats; id 0 at the first position and V - 1 at the last. */
static void check_embedding_grad(int64_t V, int64_t C, int ndim, const int64_t *si)
{
    char label[96];
    snprintf(label, sizeof label, "embedding_grad V=%lld C=%lld ids %s", (long long)V,
             (long long)C, ref_shape_text(ref_shape_of(ndim, si)));
    op_case c = {0};
    int64_t gd[KILN_MAX_DIMS];
    memcpy(gd, si, (size_t)ndim * sizeof *si);
    gd[ndim]    = C;
    tensor *g   = input(&c, ndim + 1, gd, 61);
    tensor *ids = tensor_new(KILN_I32, ndim, si);
    int64_t P   = ids->node.numel;
    ref_fill_labels(ids->i, (size_t)P, (int32_t)V, 62);
    if (P > 1) {
        ids->i[0]     = 0;
        ids->i[P - 1] = (int32_t)(V - 1);
    }
    c.src[c.n_src++] = ids;
    out_node(KILN_OP_EMBEDDING_GRAD, KILN_SHAPE(V, C), &c, label);
    float *want = malloc((size_t)(V * C) * sizeof *want);
    cr_assert_not_null(want);
    ref_embedding_grad(g->f, ids->i, P, V, C, want);
    run_case(&c, want, NULL, NULL, 0, (ref_tol){2e-6 * (double)(P / V + 2), 1e-5});
    free(want);
    case_free(&c);
}

Test(grad_ops, embedding_grad_adds_up_the_rows_of_each_id)
{
    check_embedding_grad(7, 1, 1, (int64_t[]){5});
    check_embedding_grad(7, 33, 2, (int64_t[]){2, 3});
    check_embedding_grad(7, 33, 1, (int64_t[]){1});
    check_embedding_grad(7, 15, 3, (int64_t[]){2, 3, 4});
    check_embedding_grad(7, 33, 2, (int64_t[]){4, 275}); /* two threads share it */
    check_embedding_grad(256, 17, 2, (int64_t[]){4, 1024});
    check_embedding_grad(3, 4, 1, (int64_t[]){0}); /* no positions: zeros */
}

/* An id outside [0, V) at the last position is an error, whatever came
 * before, on every device. */
Test(grad_ops, embedding_grad_rejects_an_id_outside_the_vocabulary)
{
    enum { V = 7, C = 3, P = 40 };
    op_case c = {0};
    input(&c, KILN_SHAPE(P, C), 63);
    tensor *ids = tensor_new(KILN_I32, KILN_SHAPE(P));
    ref_fill_labels(ids->i, P, V, 64);
    ids->i[P - 1]    = V;
    c.src[c.n_src++] = ids;
    out_node(KILN_OP_EMBEDDING_GRAD, KILN_SHAPE(V, C), &c, "embedding_grad");
    expect_refused_at_run(&c, "embedding_grad", "id 7 at position 39 is outside [0, 7)");
}

/* ---- CAUSAL_SOFTMAX_GRAD ------------------------------------------------------------- */

/* g and y = causal_softmax(x) for `mats` T x T matrices; the masked part of g
 * is large, so an output that used it would show. */
static void check_causal_softmax_grad(int64_t mats, int64_t T, float scale)
{
    char label[96];
    snprintf(label, sizeof label, "causal_softmax_grad [%lld, %lld, %lld] scale %g",
             (long long)mats, (long long)T, (long long)T, (double)scale);
    op_case c = {0};
    size_t  n = (size_t)(mats * T * T);
    tensor *g = input(&c, KILN_SHAPE(mats, T, T), 71);
    tensor *y = input(&c, KILN_SHAPE(mats, T, T), 72);
    float  *x = malloc(n * sizeof *x), *want = malloc(n * sizeof *want);
    cr_assert(x && want);
    ref_fill(x, n, 73);
    ref_causal_softmax(x, mats, T, scale, y->f);
    for (int64_t r = 0; r < mats * T; r++)
        for (int64_t j = r % T + 1; j < T; j++)
            g->f[r * T + j] = 1e6f;
    tensor *out = out_node(KILN_OP_CAUSAL_SOFTMAX_GRAD, KILN_SHAPE(mats, T, T), &c,
                           label);
    out->node.fparam[0] = scale;
    for (int64_t r = 0; r < mats * T; r++) {
        const float *gr = g->f + r * T, *yr = y->f + r * T;
        int64_t      keep = r % T + 1;
        double       s    = 0.0;
        for (int64_t k = 0; k < keep; k++)
            s += (double)gr[k] * yr[k];
        for (int64_t k = 0; k < T; k++)
            want[r * T + k] = k < keep ? (float)(scale * yr[k] * (gr[k] - s)) : 0.0f;
    }
    run_case(&c, want, NULL, NULL, 0, TOL);
    free(x);
    free(want);
    case_free(&c);
}

Test(grad_ops, causal_softmax_grad_uses_the_kept_columns_and_zeroes_the_rest)
{
    check_causal_softmax_grad(1, 1, 1.0f);
    check_causal_softmax_grad(1, 5, 1.0f);
    check_causal_softmax_grad(6, 5, 0.25f);
    check_causal_softmax_grad(3, 17, 0.5f);
    check_causal_softmax_grad(2, 33, 1.0f);
    check_causal_softmax_grad(4, 150, 0.125f); /* two threads share it */
}

/* The same with queries [Tq] against keys [Tk] and an offset source. */
static void check_causal_softmax_grad_offset(int64_t mats, int64_t tq, int64_t tk,
                                             int32_t offset)
{
    char label[96];
    snprintf(label, sizeof label, "causal_softmax_grad [%lld, %lld, %lld] offset %d",
             (long long)mats, (long long)tq, (long long)tk, (int)offset);
    op_case c        = {0};
    size_t  n        = (size_t)(mats * tq * tk);
    tensor *g        = input(&c, KILN_SHAPE(mats, tq, tk), 74);
    tensor *y        = input(&c, KILN_SHAPE(mats, tq, tk), 75);
    tensor *o        = tensor_new(KILN_I32, KILN_SHAPE(1));
    o->i[0]          = offset;
    c.src[c.n_src++] = o;
    float *x = malloc(n * sizeof *x), *want = malloc(n * sizeof *want);
    cr_assert(x && want);
    ref_fill(x, n, 76);
    ref_causal_softmax_offset(x, mats, tq, tk, offset, 0.5f, y->f);
    tensor *out = out_node(KILN_OP_CAUSAL_SOFTMAX_GRAD, KILN_SHAPE(mats, tq, tk), &c,
                           label);
    out->node.fparam[0] = 0.5f;
    for (int64_t r = 0; r < mats * tq; r++) {
        const float *gr = g->f + r * tk, *yr = y->f + r * tk;
        int64_t      keep = r % tq + 1 + offset;
        keep              = keep < 0 ? 0 : keep > tk ? tk : keep;
        for (int64_t k = keep; k < tk; k++)
            g->f[r * tk + k] = 1e6f; /* never read */
        double s = 0.0;
        for (int64_t k = 0; k < keep; k++)
            s += (double)gr[k] * yr[k];
        for (int64_t k = 0; k < tk; k++)
            want[r * tk + k] = k < keep ? (float)(0.5f * yr[k] * (gr[k] - s)) : 0.0f;
    }
    run_case(&c, want, NULL, NULL, 0, TOL);
    free(x);
    free(want);
    case_free(&c);
}

Test(grad_ops, causal_softmax_grad_with_an_offset_uses_the_kept_columns)
{
    check_causal_softmax_grad_offset(3, 1, 17, 5);
    check_causal_softmax_grad_offset(2, 4, 9, 3);
    check_causal_softmax_grad_offset(2, 3, 6, -2);
    check_causal_softmax_grad_offset(1, 2, 150, 200);
}

/* ---- optimiser steps ------------------------------------------------------------------ */

/* The reference's state of one optimiser: param, velocity or m, and v. */
typedef struct step_ref {
    float *p, *m, *v;
} step_ref;

typedef enum step_kind { STEP_SGD, STEP_ADAM, STEP_ADAMW } step_kind;

static const char *const step_names[] = {"sgd_step", "adam_step", "adam_step (AdamW)"};

/* One step of the reference on n elements with gradient grad, written from
 * PyTorch's documented updates (torch.optim.SGD, Adam, AdamW) and
 * torch.nn.utils.clip_grad_norm_: the gradient is scaled by clip first
 * (1 when not clipping). h as in backend.h. */
static void ref_step(step_kind kind, step_ref *r, const float *grad, double clip,
                     const float *h, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        double gi = clip * grad[i];
        if (kind == STEP_SGD) {
            double lr = h[0], momentum = h[1], wd = h[2];
            double dd = gi + wd * r->p[i];
            r->m[i]   = (float)(momentum * r->m[i] + dd);
            r->p[i]   = (float)(r->p[i] - lr * r->m[i]);
            continue;
        }
        double lr = h[0], b1 = h[1], b2 = h[2], eps = h[3], wd = h[4];
        double p = r->p[i], dd = gi;
        if (kind == STEP_ADAMW)
            p *= 1.0 - lr * wd;
        else
            dd += wd * p;
        r->m[i] = (float)(b1 * r->m[i] + (1 - b1) * dd);
        r->v[i] = (float)(b2 * r->v[i] + (1 - b2) * dd * dd);
        r->p[i] = (float)(p - lr * (r->m[i] * (double)h[5]) /
                                  (sqrt(r->v[i] * (double)h[6]) + eps));
    }
}

static void expect_state(const device *d, const tensor *t, const float *want, size_t n,
                         const char *label, int step, const char *which)
{
    char   what[256];
    float *got = malloc(n * sizeof *got);
    cr_assert_not_null(got);
    snprintf(what, sizeof what, "%.60s on %.150s after step %d: %s", label, d->label,
             step, which);
    download(d, t, got);
    ref_expect_close(what, got, want, ref_shape_of(KILN_SHAPE((int64_t)n)), TOL);
    free(got);
}

/* Three steps of SGD, Adam or AdamW in place on P elements, the tensors
 * misaligned by shift floats, checked after each against a reference that
 * keeps its own copies. With `clip`, the node also gets the gradients' sum
 * of squares: in step 1 the norm is below max_norm (no scaling), in steps 2
 * and 3 above it. */
static void check_steps(step_kind kind, bool clip, int64_t P, size_t shift)
{
    const float lr = 0.1f, momentum = 0.9f, wd = 0.01f, b1 = 0.9f, b2 = 0.999f,
                eps = 1e-8f, max_norm = 1.5f;
    bool     adam = kind != STEP_SGD;
    size_t   n = (size_t)P, bytes = n * sizeof(float);
    float   *param = malloc(bytes), *grad = malloc(bytes);
    step_ref r = {malloc(bytes), calloc(n, sizeof(float)), calloc(n, sizeof(float))};
    cr_assert(param && grad && r.p && r.m && r.v);
    char label[96];
    snprintf(label, sizeof label, "%s%s of %lld, shifted %zu", step_names[kind],
             clip ? " clipped" : "", (long long)P, shift);
    int ran = 0;
    ref_fill(param, n, 61);
    for (int k = 0; k < n_devices; k++) {
        const device *d = &devices[k];
        op_case       c = {0};
        tensor       *p = input(&c, KILN_SHAPE(P), 0);
        tensor       *g = input(&c, KILN_SHAPE(P), 0);
        tensor       *m = input(&c, KILN_SHAPE(P), 0);
        tensor       *v = adam ? input(&c, KILN_SHAPE(P), 0) : NULL;
        tensor *hp    = adam ? input(&c, KILN_SHAPE(12), 0) : input(&c, KILN_SHAPE(8), 0);
        tensor *sumsq = clip ? input(&c, KILN_SHAPE(1), 0) : NULL;
        memcpy(p->f, param, bytes);
        memset(m->f, 0, bytes);
        if (v)
            memset(v->f, 0, bytes);
        for (int s = 0; s < c.n_src; s++)
            misalign(c.src[s], shift ? shift + (size_t)s : 0);
        c.out          = p;
        c.in_place     = true;
        c.label        = label;
        kiln_node step = p->node;
        step.op        = adam ? KILN_OP_ADAM_STEP : KILN_OP_SGD_STEP;
        for (int s = 0; s < c.n_src; s++)
            step.src[s] = &c.src[s]->node;
        if (!d->dev.iface->supports_op(d->dev.context, &step)) {
            for (int s = 0; s < c.n_src; s++)
                tensor_free(c.src[s]);
            continue;
        }
        memcpy(r.p, param, bytes);
        memset(r.m, 0, bytes);
        memset(r.v, 0, bytes);
        for (int s = 0; s < c.n_src; s++)
            upload(d, c.src[s], false);
        for (int t = 1; t <= 3; t++) {
            ref_fill(grad, n, 70 + (uint64_t)t);
            /* the sum of squares the node reads: a norm of max_norm / 2 in
             * step 1, then 4 max_norm (it need not be this grad's own) */
            double want_norm = (t == 1 ? 0.5 : 4.0) * max_norm;
            float  s_value   = clip ? (float)(want_norm * want_norm) : 0.0f;
            double scale     = clip ? fmin(1.0, max_norm / (sqrt((double)s_value) + 1e-6))
                                    : 1.0;
            float  h[12]     = {lr, momentum, wd, clip ? max_norm : 0.0f};
            if (adam) {
                float hh[12] = {lr,
                                b1,
                                b2,
                                eps,
                                wd,
                                1.0f / (1.0f - powf(b1, (float)t)),
                                1.0f / (1.0f - powf(b2, (float)t)),
                                kind == STEP_ADAMW ? 1.0f : 0.0f,
                                clip ? max_norm : 0.0f,
                                0,
                                0,
                                0};
                memcpy(h, hh, sizeof h);
            }
            d->dev.iface->buffer_write(d->dev.context, g->node.buffer, g->offset, grad,
                                       bytes);
            d->dev.iface->buffer_write(d->dev.context, hp->node.buffer, hp->offset, h,
                                       adam ? 48 : 32);
            if (sumsq)
                d->dev.iface->buffer_write(d->dev.context, sumsq->node.buffer,
                                           sumsq->offset, &s_value, sizeof s_value);
            step.buffer = p->node.buffer;
            step.offset = p->node.offset;
            for (int s = 0; s < c.n_src; s++)
                step.src[s] = &c.src[s]->node;
            const kiln_node *list[1] = {&step};
            cr_assert_eq(d->dev.iface->graph_compute(d->dev.context, list, 1), KILN_OK,
                         "%s step %d on %s: %s", c.label, t, d->label, kiln_last_error());
            if (d->dev.iface->synchronize)
                d->dev.iface->synchronize(d->dev.context);
            ref_step(kind, &r, grad, scale, h, n);
            expect_state(d, p, r.p, n, label, t, "param");
            expect_state(d, m, r.m, n, label, t, adam ? "m" : "velocity");
            if (v)
                expect_state(d, v, r.v, n, label, t, "v");
        }
        for (int s = 0; s < c.n_src; s++) {
            release(d, c.src[s]);
            tensor_free(c.src[s]);
        }
        ran++;
    }
    free(param);
    free(grad);
    free(r.p);
    free(r.m);
    free(r.v);
    if (!ran)
        cr_skip_test("no device supports %s", step_names[kind]);
}

Test(grad_ops, sgd_step_updates_param_and_velocity_in_place)
{
    check_steps(STEP_SGD, false, 37, 0);
}

Test(grad_ops, adam_step_updates_param_and_moments_in_place)
{
    check_steps(STEP_ADAM, false, 37, 0);
}

Test(grad_ops, adamw_step_shrinks_the_weights_instead_of_adding_decay_to_the_gradient)
{
    check_steps(STEP_ADAMW, false, 37, 0);
}

Test(grad_ops, steps_scale_the_gradient_by_the_clipping_factor)
{
    check_steps(STEP_SGD, true, 37, 0);
    check_steps(STEP_ADAM, true, 37, 0);
    check_steps(STEP_ADAMW, true, 37, 0);
}

Test(grad_ops, optimiser_steps_match_the_reference_at_every_size_and_alignment)
{
    for (size_t k = 0; k < N_SIZES; k++) {
        for (size_t shift = 0; shift <= 3; shift += 3) {
            check_steps(STEP_SGD, false, SIZES[k], shift);
            check_steps(STEP_ADAM, false, SIZES[k], shift);
            check_steps(STEP_ADAMW, true, SIZES[k], shift);
        }
    }
}

/* ---- SLICE_GRAD -------------------------------------------------------------------- */

static void check_slice_grad(ref_shape sx, int axis, int64_t start, int64_t length,
                             size_t shift)
{
    op_case   c   = {0};
    ref_shape sg  = sx;
    sg.dims[axis] = length;
    tensor *g     = input(&c, sg.ndim, sg.dims, 5);
    misalign(g, shift);
    char label[160];
    snprintf(label, sizeof label, "slice_grad into %s along %d from %lld for %lld",
             ref_shape_text(sx), axis, (long long)start, (long long)length);
    tensor *out         = out_node(KILN_OP_SLICE_GRAD, sx.ndim, sx.dims, &c, label);
    out->node.iparam[0] = axis;
    out->node.iparam[1] = (int32_t)start;
    misalign(out, shift);
    float *want = calloc(ref_numel(sx) + 1, sizeof *want);
    cr_assert_not_null(want);
    ref_slice_grad(g->f, sx, axis, start, length, want);
    run_case(&c, want, NULL, NULL, 0, (ref_tol){0.0, 0.0});
    free(want);
    case_free(&c);
}

Test(grad_ops, slice_grad_writes_the_gradient_in_its_window_and_zeros_elsewhere)
{
    ref_shape s = ref_shape_of(KILN_SHAPE(3, 5, 37));
    for (int axis = 0; axis < 3; axis++)
        for (size_t shift = 0; shift <= 3; shift += 3) {
            int64_t n = s.dims[axis];
            check_slice_grad(s, axis, 0, 1, shift);
            check_slice_grad(s, axis, 1, n - 2, shift);
            check_slice_grad(s, axis, n - 1, 1, shift);
            check_slice_grad(s, axis, 2, 0, shift);
            check_slice_grad(s, axis, 0, n, shift);
        }
    check_slice_grad(ref_shape_of(KILN_SHAPE(70001)), 0, 1000, 33333, 0);
    check_slice_grad(ref_shape_of(KILN_SHAPE(4, 300, 96)), 2, 32, 32, 3);
}

/* ---- shape rules ----------------------------------------------------------------- */

/* A node of op over sources whose shapes are given as dims lists (-1 ends
 * one; at most 4 dims, 5 sources), i32 for source `i32_src` (-1: none). */
typedef struct rule_case {
    const char *label;
    kiln_op     op;
    int32_t     iparam[4];
    int64_t     out[5];
    int64_t     src[5][5];
    int         i32_src;
} rule_case;

static int dims_of(const int64_t *list, int64_t *dims)
{
    int n = 0;
    while (n < 4 && list[n] >= 0) {
        dims[n] = list[n];
        n++;
    }
    return n;
}

/* Asks every device whether it takes the node; `want` is what each must say.
 * Nodes have no storage yet, as when kiln asks at compile time. */
static void expect_supported(const rule_case *rc, bool want)
{
    int64_t dims[4];
    tensor *src[5] = {0};
    int     n_src  = 0;
    for (; n_src < 5 && rc->src[n_src][0] >= 0; n_src++) {
        int nd     = dims_of(rc->src[n_src], dims);
        src[n_src] = tensor_new(n_src == rc->i32_src ? KILN_I32 : KILN_F32, nd, dims);
    }
    tensor *out  = tensor_new(KILN_F32, dims_of(rc->out, dims), dims);
    out->node.op = rc->op;
    memcpy(out->node.iparam, rc->iparam, sizeof rc->iparam);
    for (int s = 0; s < n_src; s++)
        out->node.src[s] = &src[s]->node;
    for (int k = 0; k < n_devices; k++) {
        const device *d   = &devices[k];
        bool          got = d->dev.iface->supports_op(d->dev.context, &out->node);
        cr_assert_eq(got, want, "%s on %s: supports_op says %s, expected %s", rc->label,
                     d->label, got ? "yes" : "no", want ? "yes" : "no");
    }
    for (int s = 0; s < n_src; s++)
        tensor_free(src[s]);
    tensor_free(out);
}

#define END -1
#define NONE \
    {        \
        END  \
    }

/* Each pair: a node backend.h allows, then the same node with one shape or
 * parameter broken. Every device of every plugin (the cpu one per ISA) must
 * take the first and refuse the second. */
Test(grad_ops, every_device_refuses_nodes_that_break_the_shape_rules)
{
    static const rule_case cases[][2] = {
        {{"add [6] + [3]", KILN_OP_ADD, {0}, {6, END}, {{6, END}, {3, END}, NONE}, -1},
         {"add [6] + [4]", KILN_OP_ADD, {0}, {6, END}, {{6, END}, {4, END}, NONE}, -1}},
        {{"matmul [2,3] @ [3,5]",
          KILN_OP_MATMUL,
          {0},
          {2, 5, END},
          {{2, 3, END}, {3, 5, END}, NONE},
          -1},
         {"matmul [2,3] @ [4,5]",
          KILN_OP_MATMUL,
          {0},
          {2, 5, END},
          {{2, 3, END}, {4, 5, END}, NONE},
          -1}},
        {{"matmul [2,2,3] @ [2,3,5]",
          KILN_OP_MATMUL,
          {0},
          {2, 2, 5, END},
          {{2, 2, 3, END}, {2, 3, 5, END}, NONE},
          -1},
         {"matmul [2,2,3] @ [3,3,5]",
          KILN_OP_MATMUL,
          {0},
          {2, 2, 5, END},
          {{2, 2, 3, END}, {3, 3, 5, END}, NONE},
          -1}},
        {{"transpose [2,3] -> [3,2]",
          KILN_OP_TRANSPOSE,
          {0},
          {3, 2, END},
          {{2, 3, END}, NONE},
          -1},
         {"transpose [2,3] -> [2,3]",
          KILN_OP_TRANSPOSE,
          {0},
          {2, 3, END},
          {{2, 3, END}, NONE},
          -1}},
        {{"permute {2,0,1} of [2,3,4]",
          KILN_OP_PERMUTE,
          {2, 0, 1},
          {4, 2, 3, END},
          {{2, 3, 4, END}, NONE},
          -1},
         {"permute {2,0,0} of [2,3,4]",
          KILN_OP_PERMUTE,
          {2, 0, 0},
          {4, 2, 2, END},
          {{2, 3, 4, END}, NONE},
          -1}},
        {{"slice [2,4,3] along 1 from 2 for 2",
          KILN_OP_SLICE,
          {1, 2},
          {2, 2, 3, END},
          {{2, 4, 3, END}, NONE},
          -1},
         {"slice [2,4,3] along 1 from 3 for 2",
          KILN_OP_SLICE,
          {1, 3},
          {2, 2, 3, END},
          {{2, 4, 3, END}, NONE},
          -1}},
        {{"slice_grad [2,2,3] into [2,4,3] from 2",
          KILN_OP_SLICE_GRAD,
          {1, 2},
          {2, 4, 3, END},
          {{2, 2, 3, END}, NONE},
          -1},
         {"slice_grad [2,2,3] into [2,4,4] from 2",
          KILN_OP_SLICE_GRAD,
          {1, 2},
          {2, 4, 4, END},
          {{2, 2, 3, END}, NONE},
          -1}},
        {{"sum axis 1 of [2,3]", KILN_OP_SUM, {1}, {2, END}, {{2, 3, END}, NONE}, -1},
         {"sum axis 2 of [2,3]", KILN_OP_SUM, {2}, {2, END}, {{2, 3, END}, NONE}, -1}},
        {{"sum_to [6] -> [3]", KILN_OP_SUM_TO, {0}, {3, END}, {{6, END}, NONE}, -1},
         {"sum_to [6] -> [4]", KILN_OP_SUM_TO, {0}, {4, END}, {{6, END}, NONE}, -1}},
        {{"conv2d 5x5 by 3x3 -> 3x3",
          KILN_OP_CONV2D,
          {1, 1, 0, 0},
          {1, 2, 3, 3, END},
          {{1, 1, 5, 5, END}, {2, 1, 3, 3, END}, NONE},
          -1},
         {"conv2d 5x5 by 3x3 -> 4x4",
          KILN_OP_CONV2D,
          {1, 1, 0, 0},
          {1, 2, 4, 4, END},
          {{1, 1, 5, 5, END}, {2, 1, 3, 3, END}, NONE},
          -1}},
        {{"max_pool2d 4x4, 2, 2 -> 2x2",
          KILN_OP_MAX_POOL2D,
          {2, 2, 2, 2},
          {1, 1, 2, 2, END},
          {{1, 1, 4, 4, END}, NONE},
          -1},
         {"max_pool2d 4x4, 2, 2 -> 3x3",
          KILN_OP_MAX_POOL2D,
          {2, 2, 2, 2},
          {1, 1, 3, 3, END},
          {{1, 1, 4, 4, END}, NONE},
          -1}},
        {{"max_pool2d_grad to x's shape",
          KILN_OP_MAX_POOL2D_GRAD,
          {2, 2, 2, 2},
          {1, 1, 4, 4, END},
          {{1, 1, 2, 2, END}, {1, 1, 4, 4, END}, NONE},
          -1},
         {"max_pool2d_grad to another shape",
          KILN_OP_MAX_POOL2D_GRAD,
          {2, 2, 2, 2},
          {1, 1, 2, 8, END},
          {{1, 1, 2, 2, END}, {1, 1, 4, 4, END}, NONE},
          -1}},
        {{"cross_entropy [3,4], labels [3]",
          KILN_OP_CROSS_ENTROPY,
          {0},
          {END},
          {{3, 4, END}, {3, END}, NONE},
          1},
         {"cross_entropy [3,4], labels [2]",
          KILN_OP_CROSS_ENTROPY,
          {0},
          {END},
          {{3, 4, END}, {2, END}, NONE},
          1}},
        {{"cross_entropy [2,3,4], labels [2,3]",
          KILN_OP_CROSS_ENTROPY,
          {0},
          {END},
          {{2, 3, 4, END}, {2, 3, END}, NONE},
          1},
         {"cross_entropy [2,3,4], labels [3,2]",
          KILN_OP_CROSS_ENTROPY,
          {0},
          {END},
          {{2, 3, 4, END}, {3, 2, END}, NONE},
          1}},
        {{"embedding [7,3] by ids [2,5] -> [2,5,3]",
          KILN_OP_EMBEDDING,
          {0},
          {2, 5, 3, END},
          {{7, 3, END}, {2, 5, END}, NONE},
          1},
         {"embedding [7,3] by ids [2,5] -> [2,5,4]",
          KILN_OP_EMBEDDING,
          {0},
          {2, 5, 4, END},
          {{7, 3, END}, {2, 5, END}, NONE},
          1}},
        {{"embedding_grad g [2,5,3], ids [2,5] -> [7,3]",
          KILN_OP_EMBEDDING_GRAD,
          {0},
          {7, 3, END},
          {{2, 5, 3, END}, {2, 5, END}, NONE},
          1},
         {"embedding_grad g [5,2,3], ids [2,5] -> [7,3]",
          KILN_OP_EMBEDDING_GRAD,
          {0},
          {7, 3, END},
          {{5, 2, 3, END}, {2, 5, END}, NONE},
          1}},
        {{"causal_softmax [2,3,3]",
          KILN_OP_CAUSAL_SOFTMAX,
          {0},
          {2, 3, 3, END},
          {{2, 3, 3, END}, NONE},
          -1},
         {"causal_softmax [2,3,4]",
          KILN_OP_CAUSAL_SOFTMAX,
          {0},
          {2, 3, 4, END},
          {{2, 3, 4, END}, NONE},
          -1}},
        {{"sgd_step, hp [8]",
          KILN_OP_SGD_STEP,
          {0},
          {5, END},
          {{5, END}, {5, END}, {5, END}, {8, END}, NONE},
          -1},
         {"sgd_step, hp [3]",
          KILN_OP_SGD_STEP,
          {0},
          {5, END},
          {{5, END}, {5, END}, {5, END}, {3, END}, NONE},
          -1}},
        {{"layer_norm [2,3,4], weight [4], bias [4]",
          KILN_OP_LAYER_NORM,
          {0},
          {2, 3, 4, END},
          {{2, 3, 4, END}, {4, END}, {4, END}, NONE},
          -1},
         {"layer_norm [2,3,4], weight [4], bias [3]",
          KILN_OP_LAYER_NORM,
          {0},
          {2, 3, 4, END},
          {{2, 3, 4, END}, {4, END}, {3, END}, NONE},
          -1}},
        {{"layer_norm_grad [3,4], weight [4]",
          KILN_OP_LAYER_NORM_GRAD,
          {0},
          {3, 4, END},
          {{3, 4, END}, {3, 4, END}, {4, END}, NONE},
          -1},
         {"layer_norm_grad of g [4,3]",
          KILN_OP_LAYER_NORM_GRAD,
          {0},
          {3, 4, END},
          {{4, 3, END}, {3, 4, END}, {4, END}, NONE},
          -1}},
        {{"layer_norm_grad_weight [3,4] -> [4]",
          KILN_OP_LAYER_NORM_GRAD_WEIGHT,
          {0},
          {4, END},
          {{3, 4, END}, {3, 4, END}, NONE},
          -1},
         {"layer_norm_grad_weight [3,4] -> [3]",
          KILN_OP_LAYER_NORM_GRAD_WEIGHT,
          {0},
          {3, END},
          {{3, 4, END}, {3, 4, END}, NONE},
          -1}},
        {{"gelu_grad [5] and [5]",
          KILN_OP_GELU_GRAD,
          {0},
          {5, END},
          {{5, END}, {5, END}, NONE},
          -1},
         {"gelu_grad [5] and [4]",
          KILN_OP_GELU_GRAD,
          {0},
          {5, END},
          {{5, END}, {4, END}, NONE},
          -1}},
    };
    cr_assert_gt(n_devices, 0, "no device to ask");
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        expect_supported(&cases[i][0], true);
        expect_supported(&cases[i][1], false);
    }
}

/* A node that breaks its op's rule, given to graph_compute with its storage
 * (as a buggy caller would), is refused by every device with the op table's
 * reason and shapes, in words that differ only in the backend's name. */
Test(grad_ops, every_device_refuses_a_bad_node_at_run_time_in_the_same_words)
{
    char        first[1024] = "";
    const char *first_label = NULL;
    cr_assert_gt(n_devices, 0, "no device to ask");
    for (int k = 0; k < n_devices; k++) {
        const device *d   = &devices[k];
        tensor       *a   = tensor_new(KILN_F32, KILN_SHAPE(6));
        tensor       *b   = tensor_new(KILN_F32, KILN_SHAPE(4));
        tensor       *out = tensor_new(KILN_F32, KILN_SHAPE(6));
        out->node.op      = KILN_OP_ADD;
        out->node.name    = "sum";
        out->node.src[0]  = &a->node;
        out->node.src[1]  = &b->node;
        upload(d, a, false);
        upload(d, b, false);
        upload(d, out, true);
        const kiln_node *list[1] = {&out->node};
        kiln_status      st      = d->dev.iface->graph_compute(d->dev.context, list, 1);
        cr_expect_eq(st, KILN_ERR_SHAPE, "%s: status %d", d->label, (int)st);
        const char *msg  = kiln_last_error();
        const char *rest = strchr(msg, ':');
        cr_assert_not_null(rest, "%s: \"%s\"", d->label, msg);
        cr_expect_str_eq(rest,
                         ": node 0 (add 'sum') cannot run: the smaller operand's "
                         "number of elements does not divide the output's (output "
                         "[6], sources [6] [4])",
                         "%s: \"%s\"", d->label, msg);
        if (!first_label) {
            snprintf(first, sizeof first, "%s", rest);
            first_label = d->label;
        }
        cr_expect_str_eq(rest, first, "%s and %s word the refusal differently",
                         first_label, d->label);
        release(d, a);
        release(d, b);
        release(d, out);
        tensor_free(a);
        tensor_free(b);
        tensor_free(out);
    }
}
