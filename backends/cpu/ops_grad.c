/* ops_grad.c — the gradient ops kiln_backward appends: SUM_TO, EXPAND,
 * RELU_GRAD, MAX_GRAD, SOFTMAX_GRAD and LOG_SOFTMAX_GRAD, CONV2D_GRAD_INPUT
 * and CONV2D_GRAD_WEIGHT, MAX_POOL2D_GRAD, CROSS_ENTROPY_GRAD.
 *
 * Their semantics are backend.h's. Ties and NaN pick the same element the
 * forward op picked (the first maximum, a NaN counting as one), so a gradient
 * goes where the value came from. Sums accumulate in double, as in the
 * forward reductions. The elementwise and per-row loops of EXPAND (its
 * broadcast of one element), RELU_GRAD, the softmax gradients and
 * CROSS_ENTROPY_GRAD are the device's kernels (cpu_kernels; the portable
 * ones are here), which an ISA may replace. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cpu-impl.h"

/* ---- portable kernels ---------------------------------------------------------- */

static void cpu_fill_scalar(float *out, float v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        out[i] = v;
}

/* NaN > 0 is false: a NaN x passes no gradient. */
static void cpu_relu_grad_scalar(float *out, const float *g, const float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        out[i] = x[i] > 0.0f ? g[i] : 0.0f;
}

static void cpu_softmax_grad_row_scalar(float *out, const float *g, const float *y,
                                        size_t n, bool as_log)
{
    double s = 0.0;
    if (as_log) {
        for (size_t i = 0; i < n; i++)
            s += g[i];
        for (size_t i = 0; i < n; i++)
            out[i] = g[i] - expf(y[i]) * (float)s;
        return;
    }
    for (size_t i = 0; i < n; i++)
        s += (double)g[i] * (double)y[i];
    for (size_t i = 0; i < n; i++)
        out[i] = y[i] * (g[i] - (float)s);
}

static void cpu_cross_entropy_grad_row_scalar(float *out, const float *x, size_t n,
                                              size_t label, float scale)
{
    cpu_softmax_row_scalar(out, x, n, false);
    out[label] -= 1.0f;
    for (size_t j = 0; j < n; j++)
        out[j] *= scale;
}

void cpu_grad_kernels_scalar(cpu_kernels *k)
{
    k->fill                   = cpu_fill_scalar;
    k->relu_grad              = cpu_relu_grad_scalar;
    k->softmax_grad_row       = cpu_softmax_grad_row_scalar;
    k->cross_entropy_grad_row = cpu_cross_entropy_grad_row_scalar;
}

/* ---- SUM_TO, EXPAND --------------------------------------------------------- */


kiln_status cpu_op_sum_to(const cpu_device *dev, const kiln_node *node)
{
    size_t n = (size_t)node->numel, repeats = n ? (size_t)node->src[0]->numel / n : 0;
    const float *x = cpu_cf32(node->src[0]);
    float *out = cpu_f32(node);
    for (size_t j = 0; j < n; j++)
        out[j] = repeats ? (float)dev->k.sum(x + j, repeats, n) : 0.0f;
    return KILN_OK;
}


typedef struct cpu_expand_job {
    const cpu_device *dev;
    const float      *x;
    float            *out;
    size_t            r, inner;
} cpu_expand_job;

/* Elements [lo, hi) of the output [outer, r, inner], in runs: with r = 1 the
 * output is x; with inner = 1 each x[o] fills r elements; else each row of
 * inner elements is a copy of one of x's. */
static void cpu_expand_range(void *arg, size_t lo, size_t hi)
{
    const cpu_expand_job *j = arg;
    if (j->r == 1) {
        memcpy(j->out + lo, j->x + lo, (hi - lo) * sizeof *j->out);
        return;
    }
    for (size_t i = lo; i < hi;) {
        size_t row = i / j->inner, at = i % j->inner;
        size_t len = j->inner == 1 ? j->r - row % j->r : j->inner - at;
        len = len < hi - i ? len : hi - i;
        if (j->inner == 1)
            j->dev->k.fill(j->out + i, j->x[row / j->r], len);
        else
            memcpy(j->out + i, j->x + row / j->r * j->inner + at, len * sizeof *j->out);
        i += len;
    }
}

kiln_status cpu_op_expand(const cpu_device *dev, const kiln_node *node)
{
    int64_t outer, r, inner;
    kiln_rule_axis_extent(node, node->iparam[0], &outer, &r, &inner);
    cpu_expand_job job = { dev, cpu_cf32(node->src[0]), cpu_f32(node), (size_t)r,
                           (size_t)inner };
    cpu_parallel_for(dev, (size_t)node->numel, 16, CPU_ELEMENTWISE_GRAIN,
                     cpu_expand_range, &job);
    return KILN_OK;
}

/* ---- RELU_GRAD, MAX_GRAD ------------------------------------------------------ */


typedef struct cpu_relu_grad_job {
    const cpu_device *dev;
    const float      *g, *x;
    float            *out;
} cpu_relu_grad_job;

static void cpu_relu_grad_range(void *arg, size_t lo, size_t hi)
{
    const cpu_relu_grad_job *j = arg;
    j->dev->k.relu_grad(j->out + lo, j->g + lo, j->x + lo, hi - lo);
}

kiln_status cpu_op_relu_grad(const cpu_device *dev, const kiln_node *node)
{
    cpu_relu_grad_job job = { dev, cpu_cf32(node->src[0]), cpu_cf32(node->src[1]),
                              cpu_f32(node) };
    cpu_parallel_for(dev, (size_t)node->numel, 16, CPU_ELEMENTWISE_GRAIN,
                     cpu_relu_grad_range, &job);
    return KILN_OK;
}


kiln_status cpu_op_max_grad(const cpu_device *dev, const kiln_node *node)
{
    const kiln_node *src = node->src[1];
    size_t rows = (size_t)kiln_rule_rows(src), cols = (size_t)kiln_rule_last_dim(src);
    const float *g = cpu_cf32(node->src[0]), *x = cpu_cf32(src);
    float *out = cpu_f32(node);
    for (size_t r = 0; r < rows; r++) {
        float *row = out + r * cols;
        memset(row, 0, cols * sizeof *row);
        row[dev->k.argmax(x + r * cols, cols)] = g[r];
    }
    return KILN_OK;
}

/* ---- SOFTMAX_GRAD, LOG_SOFTMAX_GRAD ---------------------------------------------- */


/* Rows of SOFTMAX_GRAD or LOG_SOFTMAX_GRAD, or of CROSS_ENTROPY_GRAD. */
typedef struct cpu_grad_rows_job {
    const cpu_device *dev;
    const float      *g;          /* NULL for cross_entropy_grad     */
    const float      *x;          /* the softmax's y, or the logits  */
    const int32_t    *labels;     /* cross_entropy_grad: checked     */
    float            *out;
    size_t            cols;
    float             scale;      /* cross_entropy_grad              */
    bool              as_log;
} cpu_grad_rows_job;

static void cpu_softmax_grad_range(void *arg, size_t lo, size_t hi)
{
    const cpu_grad_rows_job *j = arg;
    for (size_t r = lo; r < hi; r++)
        j->dev->k.softmax_grad_row(j->out + r * j->cols, j->g + r * j->cols,
                                   j->x + r * j->cols, j->cols, j->as_log);
}

kiln_status cpu_op_softmax_grad(const cpu_device *dev, const kiln_node *node)
{
    const kiln_node *ynode = node->src[1];
    cpu_grad_rows_job job = {
        .dev = dev, .g = cpu_cf32(node->src[0]), .x = cpu_cf32(ynode),
        .out = cpu_f32(node), .cols = (size_t)kiln_rule_last_dim(ynode),
        .as_log = node->op == KILN_OP_LOG_SOFTMAX_GRAD,
    };
    if (job.cols == 0)
        return KILN_OK;   /* no elements at all */
    cpu_parallel_for(dev, (size_t)kiln_rule_rows(ynode), 1, cpu_row_grain(job.cols),
                     cpu_softmax_grad_range, &job);
    return KILN_OK;
}

/* ---- CONV2D_GRAD_INPUT, CONV2D_GRAD_WEIGHT ------------------------------------- */

/* x's and w's dims: one of them is the node's own, the other its src[1]. */
static void cpu_conv_grad_dims(const kiln_node *node, const int64_t **x, const int64_t **w)
{
    bool input = node->op == KILN_OP_CONV2D_GRAD_INPUT;
    *x = input ? node->dims : node->src[1]->dims;
    *w = input ? node->src[1]->dims : node->dims;
}


/* The patch matrix of one image x [C,H,W] is rows [OH*OW, C*KH*KW]: row p is
 * the window under output pixel p, zero where it covers padding. With x_in
 * it is gathered from x_in (im2col, transposed); with x_in NULL every entry
 * of rows is added to the pixel of x_out it came from, so that overlapping
 * windows add up (col2im). */
static void cpu_patches(const cpu_conv2d_geom *cv, const float *x_in, float *x_out,
                        float *rows)
{
    float *at_row = rows;
    for (size_t oh = 0; oh < cv->OH; oh++)
    for (size_t ow = 0; ow < cv->OW; ow++)
    for (size_t c = 0; c < cv->C; c++)
    for (size_t kh = 0; kh < cv->KH; kh++) {
        /* ih, iw as unsigned: "negative" (in the padding) wraps above H */
        size_t ih = oh * cv->sh + kh - cv->ph;
        for (size_t kw = 0; kw < cv->KW; kw++, at_row++) {
            size_t iw = ow * cv->sw + kw - cv->pw;
            bool inside = ih < cv->H && iw < cv->W;
            size_t at = (c * cv->H + ih) * cv->W + iw;
            if (x_in)
                *at_row = inside ? x_in[at] : 0.0f;
            else if (inside)
                x_out[at] += *at_row;
        }
    }
}

/* n floats, or NULL (with the error set) when they cannot be had. */
static float *cpu_scratch(const cpu_device *dev, const char *op, size_t a, size_t b)
{
    size_t n;
    float *p = NULL;
    if (!__builtin_mul_overflow(a, b, &n) && n <= SIZE_MAX / sizeof(float))
        p = malloc(n ? n * sizeof(float) : 1);
    if (!p)
        dev->host->error(KILN_ERR_NO_MEMORY, "%s: cannot allocate %zu x %zu floats "
                         "of scratch", op, a, b);
    return p;
}

/* dx[n] = col2im(gy[n]^T @ w): each output pixel's gradient spread over its
 * window through the weights. */
static void cpu_conv_grad_input(const cpu_device *dev, const cpu_conv2d_geom *cv,
                                const float *gy, const float *w, float *dx, float *rows)
{
    size_t spatial = cv->OH * cv->OW, ckk = cv->C * cv->KH * cv->KW;
    size_t image = cv->C * cv->H * cv->W;
    for (size_t n = 0; n < cv->N; n++) {
        /* O = 0 (K = 0): sgemm writes zeros */
        dev->k.sgemm(spatial, ckk, cv->O, gy + n * cv->O * spatial, spatial, true,
                     w, ckk, false, rows, ckk);
        memset(dx + n * image, 0, image * sizeof *dx);
        cpu_patches(cv, NULL, dx + n * image, rows);
    }
}

/* dw = sum over n of gy[n] @ patches(x[n]); tmp holds one image's term. */
static void cpu_conv_grad_weight(const cpu_device *dev, const cpu_conv2d_geom *cv,
                                 const float *gy, const float *x, float *dw,
                                 float *rows, float *tmp)
{
    size_t spatial = cv->OH * cv->OW, ckk = cv->C * cv->KH * cv->KW;
    size_t image = cv->C * cv->H * cv->W;
    if (cv->N == 0)
        memset(dw, 0, cv->O * ckk * sizeof *dw);
    for (size_t n = 0; n < cv->N; n++) {
        cpu_patches(cv, x + n * image, NULL, rows);
        dev->k.sgemm(cv->O, ckk, spatial, gy + n * cv->O * spatial, spatial, false,
                     rows, ckk, false, n == 0 ? dw : tmp, ckk);
        if (n > 0)
            dev->k.binary[CPU_ADD](dw, dw, 1, tmp, 1, cv->O * ckk);
    }
}

kiln_status cpu_op_conv2d_grad(const cpu_device *dev, const kiln_node *node)
{
    bool input = node->op == KILN_OP_CONV2D_GRAD_INPUT;
    const char *name = input ? "conv2d_grad_input" : "conv2d_grad_weight";
    if (node->numel == 0)
        return KILN_OK;
    /* Not empty, so C, KH, KW >= 1 and the checked gy has OH, OW >= 1. */
    const int64_t *x, *w;
    cpu_conv_grad_dims(node, &x, &w);
    cpu_conv2d_geom cv = cpu_conv2d_geom_of(x, w, node->src[0]->dims, node->iparam);
    size_t ckk = cv.C * cv.KH * cv.KW;
    float *rows = cpu_scratch(dev, name, cv.OH * cv.OW, ckk);
    float *tmp = !input && cv.N > 1 ? cpu_scratch(dev, name, cv.O, ckk) : NULL;
    if (!rows || (!input && cv.N > 1 && !tmp)) {
        free(rows);
        free(tmp);
        return KILN_ERR_NO_MEMORY;
    }
    const float *gy = cpu_cf32(node->src[0]), *other = cpu_cf32(node->src[1]);
    if (input)
        cpu_conv_grad_input(dev, &cv, gy, other, cpu_f32(node), rows);
    else
        cpu_conv_grad_weight(dev, &cv, gy, other, cpu_f32(node), rows, tmp);
    free(rows);
    free(tmp);
    return KILN_OK;
}

/* ---- MAX_POOL2D_GRAD ----------------------------------------------------------- */


typedef struct cpu_pool_grad_job {
    const cpu_device *dev;
    size_t            H, W, OH, OW, kh, kw, sh, sw;
    const float      *gy, *x;
    float            *out;
} cpu_pool_grad_job;

/* Outputs per call of the kernel that finds where each window's max was. */
#define CPU_POOL_GRAD_CHUNK 256

/* Planes [lo, hi): each plane's windows add only into that plane, so planes
 * split across threads without contention. The kernel table finds the
 * winners a row of windows at a time (as int32 offsets, so planes too large
 * for those go element by element); the adds stay in order, for windows
 * that overlap. */
static void cpu_pool_grad_range(void *arg, size_t lo, size_t hi)
{
    const cpu_pool_grad_job *j = arg;
    size_t plane = j->H * j->W;
    bool table = plane <= INT32_MAX / 4 && j->sw * 64 <= INT32_MAX / 4;
    int32_t win[CPU_POOL_GRAD_CHUNK];
    memset(j->out + lo * plane, 0, (hi - lo) * plane * sizeof *j->out);
    for (size_t p = lo; p < hi; p++) {
        for (size_t oh = 0; oh < j->OH; oh++) {
            size_t row = p * plane + oh * j->sh * j->W;
            const float *gy = j->gy + (p * j->OH + oh) * j->OW;
            for (size_t o0 = 0; o0 < j->OW; o0 += CPU_POOL_GRAD_CHUNK) {
                size_t n = j->OW - o0 < CPU_POOL_GRAD_CHUNK ? j->OW - o0 : CPU_POOL_GRAD_CHUNK;
                size_t corner = row + o0 * j->sw;
                if (table)
                    j->dev->k.pool_argmax_row(win, j->x + corner, j->W, n, j->kh, j->kw,
                                              j->sw);
                for (size_t ow = 0; ow < n; ow++) {
                    size_t c = corner + ow * j->sw;
                    size_t at = table ? (size_t)win[ow]
                                      : cpu_window_argmax(j->x + c, j->W, j->kh, j->kw);
                    j->out[c + at] += gy[o0 + ow];
                }
            }
        }
    }
}

kiln_status cpu_op_max_pool2d_grad(const cpu_device *dev, const kiln_node *node)
{
    const kiln_node *src = node->src[1];
    size_t planes = (size_t)(src->dims[0] * src->dims[1]);
    cpu_pool_grad_job job = {
        .dev = dev, .H = (size_t)src->dims[2], .W = (size_t)src->dims[3],
        .OH = (size_t)node->src[0]->dims[2], .OW = (size_t)node->src[0]->dims[3],
        .kh = (size_t)node->iparam[0], .kw = (size_t)node->iparam[1],
        .sh = (size_t)node->iparam[2], .sw = (size_t)node->iparam[3],
        .gy = cpu_cf32(node->src[0]), .x = cpu_cf32(src), .out = cpu_f32(node),
    };
    if (node->numel == 0)
        return KILN_OK;
    cpu_parallel_for(dev, planes, 1, cpu_row_grain(job.H * job.W), cpu_pool_grad_range,
                     &job);
    return KILN_OK;
}

/* ---- CROSS_ENTROPY_GRAD --------------------------------------------------------- */


static void cpu_cross_entropy_grad_range(void *arg, size_t lo, size_t hi)
{
    const cpu_grad_rows_job *j = arg;
    for (size_t r = lo; r < hi; r++)
        j->dev->k.cross_entropy_grad_row(j->out + r * j->cols, j->x + r * j->cols,
                                         j->cols, (size_t)j->labels[r], j->scale);
}

/* g * (softmax(logits) - one_hot(labels)) / N. Every label is checked before
 * any row is written, so the rows can then go to threads. */
kiln_status cpu_op_cross_entropy_grad(const cpu_device *dev, const kiln_node *node)
{
    const kiln_node *logits = node->src[1];
    int64_t N = logits->dims[0], C = logits->dims[1];
    const int32_t *labels = cpu_data(node->src[2]);
    for (int64_t i = 0; i < N; i++)
        if (labels[i] < 0 || labels[i] >= C)
            return dev->host->error(KILN_ERR_INVALID_ARG,
                                    "cross_entropy_grad: label %d at row %lld is "
                                    "outside [0, %lld)", (int)labels[i], (long long)i,
                                    (long long)C);
    cpu_grad_rows_job job = {
        .dev = dev, .x = cpu_cf32(logits), .labels = labels, .out = cpu_f32(node),
        .cols = (size_t)C,
        .scale = N > 0 ? (float)((double)*cpu_cf32(node->src[0]) / (double)N) : 0.0f,
    };
    cpu_parallel_for(dev, (size_t)N, 1, cpu_row_grain(job.cols),
                     cpu_cross_entropy_grad_range, &job);
    return KILN_OK;
}
