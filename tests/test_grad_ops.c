/* tests/test_grad_ops.c — the gradient and optimiser-step ops of backend.h
 * (ABI 2) against plain references, at the plugin ABI.
 *
 * Nodes are built by hand, so a backend's training ops are tested before
 * and apart from kiln_backward. Every device of every plugin found on
 * KILN_PLUGIN_PATH runs every case its supports_op accepts; a case no device
 * accepts is skipped, never passed. Each tensor gets a buffer of its own with
 * a 64-byte offset, and outputs start as NaN, so an element a kernel forgets
 * to write, or an offset it ignores, shows.
 */
#include "reference.h"

#include <criterion/criterion.h>
#include <kiln/backend.h>

#include <dirent.h>
#include <dlfcn.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define OFFSET 64   /* bytes before each tensor's data in its buffer */

/* ---- the host side of the ABI ------------------------------------------------ */

static char last_error[2048];

__attribute__((format(printf, 2, 3)))
static void host_log(kiln_log_level level, const char *fmt, ...)
{
    (void)level;
    (void)fmt;
}

__attribute__((format(printf, 2, 3)))
static kiln_status host_error(kiln_status status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    return status;
}

static const kiln_host host = { KILN_BACKEND_ABI_VERSION, host_log, host_error };

/* ---- every device of every plugin ----------------------------------------------- */

#define MAX_DEVICES 8

typedef struct device {
    char        label[160];
    kiln_device dev;
} device;

static device devices[MAX_DEVICES];
static int    n_devices;

static void open_plugin(const char *path)
{
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    void *sym = h ? dlsym(h, KILN_BACKEND_ENTRY_SYMBOL) : NULL;
    if (!sym)
        return;   /* not a plugin: the loader's tests cover that */
    kiln_backend_entry_fn entry;
    memcpy(&entry, &sym, sizeof entry);
    const kiln_plugin *p = entry();
    if (!p || p->abi_version != KILN_BACKEND_ABI_VERSION || p->probe(&host) <= 0 ||
        p->init(&host) != KILN_OK)
        return;
    for (int i = 0; i < p->device_count() && n_devices < MAX_DEVICES; i++) {
        kiln_device_desc desc;
        if (p->device_desc(i, &desc) != KILN_OK || desc.unusable[0])
            continue;
        device *d = &devices[n_devices];
        cr_assert_eq(p->device_open(i, &d->dev), KILN_OK, "%s: device_open(%d): %s",
                     p->name, i, last_error);
        snprintf(d->label, sizeof d->label, "%s:%d (%s)", p->name, i, desc.name);
        n_devices++;
    }
}

static void open_devices(void)
{
    const char *list = getenv("KILN_PLUGIN_PATH");
    cr_assert(list && *list, "KILN_PLUGIN_PATH is not set: run through make check");
    char *copy = strdup(list), *save = NULL;
    cr_assert_not_null(copy);
    for (char *dir = strtok_r(copy, ":", &save); dir; dir = strtok_r(NULL, ":", &save)) {
        DIR *d = opendir(dir);
        struct dirent *e;
        while (d && (e = readdir(d)) != NULL) {
            size_t n = strlen(e->d_name);
            if (n > 3 && strcmp(e->d_name + n - 3, ".so") == 0) {
                char path[4096];
                snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
                open_plugin(path);
            }
        }
        if (d)
            closedir(d);
    }
    free(copy);
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
    float    *f;     /* host data (f32) */
    int32_t  *i;     /* host data (i32) */
} tensor;

static void tensor_init(tensor *t, kiln_dtype dtype, int ndim, const int64_t *dims)
{
    memset(t, 0, sizeof *t);
    t->node.op = KILN_OP_LEAF;
    t->node.dtype = dtype;
    t->node.ndim = ndim;
    t->node.numel = 1;
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
    const kiln_device_iface *io = d->dev.iface;
    size_t size = OFFSET + nbytes(t);
    float *fill = malloc(size);
    cr_assert_not_null(fill);
    for (size_t k = 0; k < size / 4; k++)
        fill[k] = NAN;
    if (!as_output)
        memcpy((char *)fill + OFFSET, t->f ? (void *)t->f : (void *)t->i, nbytes(t));
    cr_assert_eq(io->buffer_alloc(d->dev.context, size, &t->node.buffer), KILN_OK,
                 "%s: buffer_alloc: %s", d->label, last_error);
    cr_assert_eq(io->buffer_write(d->dev.context, t->node.buffer, 0, fill, size), KILN_OK,
                 "%s: buffer_write: %s", d->label, last_error);
    t->node.offset = OFFSET;
    free(fill);
}

static void download(const device *d, const tensor *t, float *dst)
{
    cr_assert_eq(d->dev.iface->buffer_read(d->dev.context, t->node.buffer, OFFSET, dst,
                                           nbytes(t)),
                 KILN_OK, "%s: buffer_read: %s", d->label, last_error);
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
    bool        in_place;   /* out is src[0] */
} op_case;

/* Runs the case on every device that supports it and compares `out` (and
 * each of extra[0..n_extra), state tensors updated in place) with want
 * and extra_want. Skips the test if no device supports it. */
static void run_case(op_case *c, const float *want, tensor **extra,
                     const float *const *extra_want, int n_extra, ref_tol tol)
{
    int ran = 0;
    for (int k = 0; k < n_devices; k++) {
        const device *d = &devices[k];
        const kiln_device_iface *io = d->dev.iface;
        if (!io->supports_op(d->dev.context, &c->out->node))
            continue;
        for (int s = 0; s < c->n_src; s++)
            upload(d, c->src[s], false);
        if (!c->in_place)
            upload(d, c->out, true);
        const kiln_node *list[1] = { &c->out->node };
        cr_assert_eq(io->graph_compute(d->dev.context, list, 1), KILN_OK,
                     "%s on %s: graph_compute: %s", c->label, d->label, last_error);
        if (io->synchronize)
            cr_assert_eq(io->synchronize(d->dev.context), KILN_OK,
                         "%s on %s: synchronize: %s", c->label, d->label, last_error);
        char what[400];
        ref_shape shape = ref_shape_of(c->out->node.ndim, c->out->node.dims);
        float *got = malloc(nbytes(c->out) + 4);
        cr_assert_not_null(got);
        download(d, c->out, got);
        snprintf(what, sizeof what, "%.200s on %.150s", c->label, d->label);
        ref_expect_close(what, got, want, shape, tol);
        for (int e = 0; e < n_extra; e++) {
            download(d, extra[e], got);
            snprintf(what, sizeof what, "%.200s on %.150s, state %d", c->label, d->label, e);
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
    tensor *t = tensor_new(KILN_F32, ndim, dims);
    t->node.op = op;
    for (int s = 0; s < c->n_src; s++)
        t->node.src[s] = &c->src[s]->node;
    c->out = t;
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

static const ref_tol TOL = { 1e-6, 1e-5 };

/* ---- SUM_TO, EXPAND, RELU_GRAD ---------------------------------------------------- */

static void check_sum_to(ref_shape s, ref_shape so)
{
    op_case c = {0};
    tensor *x = input(&c, s.ndim, s.dims, 1);
    out_node(KILN_OP_SUM_TO, so.ndim, so.dims, &c, "sum_to");
    size_t n = ref_numel(s), m = ref_numel(so);
    double *acc = calloc(m, sizeof *acc);
    float *want = calloc(m, sizeof *want);
    for (size_t i = 0; i < n; i++)
        acc[i % m] += x->f[i];
    for (size_t j = 0; j < m; j++)
        want[j] = (float)acc[j];
    run_case(&c, want, NULL, NULL, 0, (ref_tol){ 1e-5, 1e-5 });
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
}

static void check_expand(ref_shape so, int axis)
{
    op_case c = {0};
    ref_shape s = so;
    if (axis == -1) {
        s.ndim = 0;
    } else {
        for (int d = axis; d < so.ndim - 1; d++)
            s.dims[d] = so.dims[d + 1];
        s.ndim--;
    }
    tensor *x = input(&c, s.ndim, s.dims, 2);
    tensor *out = out_node(KILN_OP_EXPAND, so.ndim, so.dims, &c, "expand");
    out->node.iparam[0] = axis;
    size_t n = ref_numel(so), inner = 1, r = n;
    if (axis >= 0) {
        r = (size_t)so.dims[axis];
        for (int d = axis + 1; d < so.ndim; d++)
            inner *= (size_t)so.dims[d];
    }
    float *want = malloc(n * sizeof *want);
    for (size_t i = 0; i < n; i++)
        want[i] = axis == -1 ? x->f[0] : x->f[i / (r * inner) * inner + i % inner];
    run_case(&c, want, NULL, NULL, 0, (ref_tol){ 0, 0 });
    free(want);
    case_free(&c);
}

Test(grad_ops, expand_repeats_its_source_along_the_axis)
{
    check_expand(ref_shape_of(KILN_SHAPE(3, 4, 5)), 1);
    check_expand(ref_shape_of(KILN_SHAPE(3, 4, 5)), 0);
    check_expand(ref_shape_of(KILN_SHAPE(3, 4, 5)), 2);
    check_expand(ref_shape_of(KILN_SHAPE(13, 31)), -1);
}

Test(grad_ops, relu_grad_passes_the_gradient_where_x_is_positive)
{
    op_case c = {0};
    tensor *g = input(&c, KILN_SHAPE(7, 13), 3);
    tensor *x = input(&c, KILN_SHAPE(7, 13), 4);
    x->f[0] = 0.0f;
    x->f[1] = NAN;
    out_node(KILN_OP_RELU_GRAD, KILN_SHAPE(7, 13), &c, "relu_grad");
    float want[91];
    for (int i = 0; i < 91; i++)
        want[i] = x->f[i] > 0.0f ? g->f[i] : 0.0f;
    run_case(&c, want, NULL, NULL, 0, (ref_tol){ 0, 0 });
    case_free(&c);
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

Test(grad_ops, max_grad_goes_to_the_first_maximum_of_each_row)
{
    enum { R = 6, C = 9 };
    op_case c = {0};
    tensor *g = input(&c, KILN_SHAPE(R), 5);
    tensor *x = input(&c, KILN_SHAPE(R, C), 6);
    ref_fill_ties(x->f, R * C, 6);
    x->f[2 * C + 4] = NAN;   /* a NaN wins its row */
    x->f[2 * C + 7] = NAN;
    out_node(KILN_OP_MAX_GRAD, KILN_SHAPE(R, C), &c, "max_grad");
    float want[R * C];
    for (int r = 0; r < R; r++) {
        int at = first_max(x->f + r * C, C);
        for (int k = 0; k < C; k++)
            want[r * C + k] = k == at ? g->f[r] : 0.0f;
    }
    run_case(&c, want, NULL, NULL, 0, (ref_tol){ 0, 0 });
    case_free(&c);
}

static void check_softmax_grad(bool as_log, int64_t rows, int64_t cols)
{
    op_case c = {0};
    size_t n = (size_t)(rows * cols);
    tensor *g = input(&c, KILN_SHAPE(rows, cols), 7);
    tensor *y = input(&c, KILN_SHAPE(rows, cols), 8);
    float *x = malloc(n * sizeof *x), *want = malloc(n * sizeof *want);
    ref_fill(x, n, 9);
    if (as_log)
        ref_log_softmax_last(x, rows, cols, y->f);
    else
        ref_softmax_last(x, rows, cols, y->f);
    out_node(as_log ? KILN_OP_LOG_SOFTMAX_GRAD : KILN_OP_SOFTMAX_GRAD,
             KILN_SHAPE(rows, cols), &c, as_log ? "log_softmax_grad" : "softmax_grad");
    for (int64_t r = 0; r < rows; r++) {
        const float *gr = g->f + r * cols, *yr = y->f + r * cols;
        double s = 0.0;
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
#define CONV_FOREACH(g, oh_n, ow_n, body)                                       \
    for (int64_t n_ = 0; n_ < (g).n; n_++)                                       \
    for (int64_t o_ = 0; o_ < (g).o; o_++)                                       \
    for (int64_t y_ = 0; y_ < (oh_n); y_++)                                      \
    for (int64_t x_ = 0; x_ < (ow_n); x_++)                                      \
    for (int64_t c_ = 0; c_ < (g).c; c_++)                                       \
    for (int64_t a_ = 0; a_ < (g).kh; a_++)                                      \
    for (int64_t b_ = 0; b_ < (g).kw; b_++) {                                    \
        int64_t ih_ = y_ * (g).sh - (g).ph + a_, iw_ = x_ * (g).sw - (g).pw + b_;    \
        if (ih_ < 0 || ih_ >= (g).h || iw_ < 0 || iw_ >= (g).w)                   \
            continue;                                                            \
        size_t xi = (size_t)(((n_ * (g).c + c_) * (g).h + ih_) * (g).w + iw_);       \
        size_t wi = (size_t)(((o_ * (g).c + c_) * (g).kh + a_) * (g).kw + b_);       \
        size_t yi = (size_t)(((n_ * (g).o + o_) * (oh_n) + y_) * (ow_n) + x_);       \
        body;                                                                    \
    }

static void check_conv_grads(conv_geom g)
{
    int64_t oh = conv_out(g.h, g.kh, g.sh, g.ph), ow = conv_out(g.w, g.kw, g.sw, g.pw);
    size_t nx = (size_t)(g.n * g.c * g.h * g.w), nw = (size_t)(g.o * g.c * g.kh * g.kw);
    char label[160];
    snprintf(label, sizeof label, "conv2d grads x [%lld,%lld,%lld,%lld] w [%lld,%lld,"
             "%lld,%lld] stride %lld,%lld pad %lld,%lld", (long long)g.n,
             (long long)g.c, (long long)g.h, (long long)g.w, (long long)g.o,
             (long long)g.c, (long long)g.kh, (long long)g.kw, (long long)g.sh,
             (long long)g.sw, (long long)g.ph, (long long)g.pw);
    ref_tol tol = { 2e-6 * (double)(g.o * g.kh * g.kw + g.n * oh * ow + 1), 1e-5 };
    int32_t params[4] = { (int32_t)g.sh, (int32_t)g.sw, (int32_t)g.ph, (int32_t)g.pw };

    /* grad input: src gy, w */
    op_case ci = {0};
    tensor *gy = input(&ci, KILN_SHAPE(g.n, g.o, oh, ow), 31);
    tensor *w = input(&ci, KILN_SHAPE(g.o, g.c, g.kh, g.kw), 32);
    tensor *gx = out_node(KILN_OP_CONV2D_GRAD_INPUT, KILN_SHAPE(g.n, g.c, g.h, g.w), &ci,
                          label);
    memcpy(gx->node.iparam, params, sizeof params);
    double *acc = calloc(nx > nw ? nx : nw, sizeof *acc);
    float *want = calloc(nx > nw ? nx : nw, sizeof *want);
    CONV_FOREACH(g, oh, ow, acc[xi] += (double)gy->f[yi] * w->f[wi])
    for (size_t k = 0; k < nx; k++)
        want[k] = (float)acc[k];
    run_case(&ci, want, NULL, NULL, 0, tol);

    /* grad weight: src gy, x */
    op_case cw = {0};
    cw.src[cw.n_src++] = gy;
    tensor *x = input(&cw, KILN_SHAPE(g.n, g.c, g.h, g.w), 33);
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
    check_conv_grads((conv_geom){ 1, 1, 5, 5, 1, 3, 3, 1, 1, 0, 0 });
    check_conv_grads((conv_geom){ 3, 2, 9, 7, 4, 3, 3, 2, 2, 1, 1 });
    check_conv_grads((conv_geom){ 2, 3, 11, 13, 5, 5, 3, 3, 2, 2, 1 });
    check_conv_grads((conv_geom){ 2, 4, 6, 6, 3, 1, 1, 2, 2, 0, 0 });
    check_conv_grads((conv_geom){ 4, 8, 12, 12, 16, 3, 3, 1, 1, 1, 1 });
}

static void check_pool_grad(int64_t n, int64_t ch, int64_t h, int64_t w, int k, int s)
{
    int64_t oh = (h - k) / s + 1, ow = (w - k) / s + 1;
    op_case c = {0};
    tensor *gy = input(&c, KILN_SHAPE(n, ch, oh, ow), 41);
    tensor *x = input(&c, KILN_SHAPE(n, ch, h, w), 42);
    ref_fill_ties(x->f, (size_t)(n * ch * h * w), 42);   /* ties: first maximum */
    x->f[3] = NAN;
    if (h * w > 2 * w + 2) {   /* two NaNs in one window, and a third below */
        x->f[w + 1] = NAN;
        x->f[w + 2] = NAN;
        x->f[2 * w + 1] = NAN;
    }
    tensor *out = out_node(KILN_OP_MAX_POOL2D_GRAD, KILN_SHAPE(n, ch, h, w), &c,
                           "max_pool2d_grad");
    int32_t params[4] = { k, k, s, s };
    memcpy(out->node.iparam, params, sizeof params);
    size_t nx = (size_t)(n * ch * h * w);
    float *want = calloc(nx, sizeof *want);
    for (int64_t p = 0; p < n * ch; p++)
        for (int64_t i = 0; i < oh; i++)
            for (int64_t j = 0; j < ow; j++) {
                const float *plane = x->f + p * h * w;
                int64_t best = (i * s) * w + j * s;
                for (int a = 0; a < k; a++)
                    for (int b = 0; b < k; b++) {
                        int64_t at = (i * s + a) * w + j * s + b;
                        if (isnan(plane[best]))
                            continue;
                        if (isnan(plane[at]) || plane[at] > plane[best])
                            best = at;
                    }
                want[p * h * w + best] += gy->f[(p * oh + i) * ow + j];
            }
    run_case(&c, want, NULL, NULL, 0, TOL);
    free(want);
    case_free(&c);
}

Test(grad_ops, max_pool2d_grad_goes_to_the_first_maximum_and_adds_up_overlaps)
{
    check_pool_grad(1, 1, 4, 4, 2, 2);
    check_pool_grad(2, 3, 9, 11, 3, 2);   /* overlapping windows */
    check_pool_grad(1, 2, 7, 7, 2, 3);    /* gaps between windows */
    check_pool_grad(2, 2, 5, 300, 2, 1);  /* stride 1, rows of windows past 256 */
    check_pool_grad(1, 3, 6, 613, 2, 2);  /* stride 2, 306 windows a row */
    check_pool_grad(1, 2, 3, 37, 1, 1);   /* 1x1 windows: the gradient itself */
}

/* ---- CROSS_ENTROPY_GRAD ------------------------------------------------------------- */

Test(grad_ops, cross_entropy_grad_is_softmax_minus_one_hot_over_n)
{
    enum { N = 6, C = 10 };
    op_case c = {0};
    tensor *g = input(&c, 0, NULL, 51);
    tensor *logits = input(&c, KILN_SHAPE(N, C), 52);
    tensor *labels = tensor_new(KILN_I32, KILN_SHAPE(N));
    ref_fill_labels(labels->i, N, C, 53);
    c.src[c.n_src++] = labels;
    out_node(KILN_OP_CROSS_ENTROPY_GRAD, KILN_SHAPE(N, C), &c, "cross_entropy_grad");
    float p[N * C], want[N * C];
    ref_softmax_last(logits->f, N, C, p);
    for (int r = 0; r < N; r++)
        for (int k = 0; k < C; k++)
            want[r * C + k] = g->f[0] * (p[r * C + k] - (k == labels->i[r])) / N;
    run_case(&c, want, NULL, NULL, 0, TOL);
    case_free(&c);
}

/* ---- optimiser steps ------------------------------------------------------------------ */

/* Three steps of SGD (or Adam) in place, checked after each against a
 * reference that keeps its own copies. */
static void check_steps(bool adam)
{
    enum { P = 37 };
    const float lr = 0.1f, momentum = 0.9f, wd = 0.01f, b1 = 0.9f, b2 = 0.999f,
                eps = 1e-8f;
    float param[P], grad[P];
    int ran = 0;
    ref_fill(param, P, 61);
    for (int k = 0; k < n_devices; k++) {
        const device *d = &devices[k];
        op_case c = {0};
        tensor *p = input(&c, KILN_SHAPE(P), 0);
        tensor *g = input(&c, KILN_SHAPE(P), 0);
        tensor *m = input(&c, KILN_SHAPE(P), 0);
        tensor *v = adam ? input(&c, KILN_SHAPE(P), 0) : NULL;
        tensor *hp = adam ? input(&c, KILN_SHAPE(8), 0) : input(&c, KILN_SHAPE(4), 0);
        memcpy(p->f, param, sizeof param);
        memset(m->f, 0, sizeof param);
        if (v)
            memset(v->f, 0, sizeof param);
        c.out = p;
        c.in_place = true;
        c.label = adam ? "adam_step" : "sgd_step";
        kiln_node step = p->node;
        step.op = adam ? KILN_OP_ADAM_STEP : KILN_OP_SGD_STEP;
        for (int s = 0; s < c.n_src; s++)
            step.src[s] = &c.src[s]->node;
        if (!d->dev.iface->supports_op(d->dev.context, &step)) {
            case_free(&c);
            continue;
        }
        float want_p[P], want_m[P], want_v[P];
        memcpy(want_p, param, sizeof param);
        memset(want_m, 0, sizeof want_m);
        memset(want_v, 0, sizeof want_v);
        for (int s = 0; s < c.n_src; s++)
            upload(d, c.src[s], false);
        for (int t = 1; t <= 3; t++) {
            ref_fill(grad, P, 70 + (uint64_t)t);
            float h[8] = { lr, momentum, wd, 0 };
            if (adam) {
                float hh[8] = { lr, b1, b2, eps, wd, 1.0f / (1.0f - powf(b1, (float)t)),
                                1.0f / (1.0f - powf(b2, (float)t)), 0 };
                memcpy(h, hh, sizeof h);
            }
            d->dev.iface->buffer_write(d->dev.context, g->node.buffer, OFFSET, grad,
                                       sizeof grad);
            d->dev.iface->buffer_write(d->dev.context, hp->node.buffer, OFFSET, h,
                                       adam ? 32 : 16);
            step.buffer = p->node.buffer;
            step.offset = p->node.offset;
            for (int s = 0; s < c.n_src; s++)
                step.src[s] = &c.src[s]->node;
            const kiln_node *list[1] = { &step };
            cr_assert_eq(d->dev.iface->graph_compute(d->dev.context, list, 1), KILN_OK,
                         "%s step %d on %s: %s", c.label, t, d->label, last_error);
            d->dev.iface->synchronize(d->dev.context);
            for (int i = 0; i < P; i++) {
                float dd = grad[i] + wd * want_p[i];
                if (adam) {
                    want_m[i] = b1 * want_m[i] + (1 - b1) * dd;
                    want_v[i] = b2 * want_v[i] + (1 - b2) * dd * dd;
                    want_p[i] -= lr * (want_m[i] * h[5]) / (sqrtf(want_v[i] * h[6]) + eps);
                } else {
                    want_m[i] = momentum * want_m[i] + dd;
                    want_p[i] -= lr * want_m[i];
                }
            }
            float got[P];
            char what[256];
            snprintf(what, sizeof what, "%.40s on %.150s after step %d: param", c.label,
                     d->label, t);
            download(d, p, got);
            ref_expect_close(what, got, want_p, ref_shape_of(KILN_SHAPE(P)), TOL);
            snprintf(what, sizeof what, "%.40s on %.150s after step %d: first state", c.label,
                     d->label, t);
            download(d, m, got);
            ref_expect_close(what, got, want_m, ref_shape_of(KILN_SHAPE(P)), TOL);
            if (v) {
                download(d, v, got);
                ref_expect_close(what, got, want_v, ref_shape_of(KILN_SHAPE(P)), TOL);
            }
        }
        for (int s = 0; s < c.n_src; s++) {
            release(d, c.src[s]);
            tensor_free(c.src[s]);
        }
        ran++;
    }
    if (!ran)
        cr_skip_test("no device supports %s", adam ? "adam_step" : "sgd_step");
}

Test(grad_ops, sgd_step_updates_param_and_velocity_in_place)
{
    check_steps(false);
}

Test(grad_ops, adam_step_updates_param_and_moments_in_place)
{
    check_steps(true);
}
