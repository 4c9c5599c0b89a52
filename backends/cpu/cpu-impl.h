/* cpu-impl.h — internals of the kiln-cpu backend, shared by its files only.
 *
 * Two layers. An op (ops_*.c) reads a kiln_node, works out the loop bounds and
 * calls inner loops through the device's cpu_kernels table; the kernels see
 * only pointers, counts and strides, never a node. A faster ISA replaces
 * kernels in the table at device open and leaves the ops alone.
 *
 * Every node reaching an op has passed plugin.c's checks (dtypes, shapes that
 * fit the op, data inside its buffer), so ops do not check again.
 */
#ifndef KILN_CPU_IMPL_H
#define KILN_CPU_IMPL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <kiln/backend.h>

/* ---- buffers -------------------------------------------------------------- */

/* The handle buffer_alloc returns and kiln stores in kiln_node.buffer. */
typedef struct cpu_buffer {
    void  *data;   /* 64-byte aligned */
    size_t size;   /* bytes asked for */
} cpu_buffer;

/* ---- kernels -------------------------------------------------------------- */

/* Binary ops in kiln_op order (KILN_OP_ADD ..); plugin.c asserts the order. */
typedef enum cpu_binary_op {
    CPU_ADD, CPU_SUB, CPU_MUL, CPU_DIV, CPU_BINARY_COUNT
} cpu_binary_op;

/* Unary ops in kiln_op order (KILN_OP_NEG ..). */
typedef enum cpu_unary_op {
    CPU_NEG, CPU_EXP, CPU_LOG, CPU_SQRT, CPU_RELU, CPU_SIGMOID, CPU_TANH,
    CPU_SCALE, CPU_UNARY_COUNT
} cpu_unary_op;

/* out[i] = a[i * a_step] OP b[i * b_step], i < n; a step is 0 (a scalar
 * broadcast) or 1. out may be a or b. */
typedef void (*cpu_binary_fn)(float *out, const float *a, size_t a_step,
                              const float *b, size_t b_step, size_t n);
/* out[i] = f(x[i]), i < n; p is SCALE's factor, ignored by the others.
 * out may be x. */
typedef void (*cpu_unary_fn)(float *out, const float *x, size_t n, float p);

/* The inner loops an ISA may replace. One table per device, filled once. */
typedef struct cpu_kernels {
    /* "scalar", "avx2", ...: what kiln-info and the device description say */
    const char   *isa;
    cpu_binary_fn binary[CPU_BINARY_COUNT];
    cpu_unary_fn  unary[CPU_UNARY_COUNT];
    /* c[M,N] = op(a)[M,K] @ op(b)[K,N], c overwritten (K = 0 writes zeros).
     * a is stored [M,K] (row stride lda), or [K,M] when ta; b is stored
     * [K,N] (ldb), or [N,K] when tb. c must not overlap a or b.            */
    void        (*sgemm)(size_t M, size_t N, size_t K,
                         const float *a, size_t lda, bool ta,
                         const float *b, size_t ldb, bool tb,
                         float *c, size_t ldc);
    /* x[0] + x[stride] + ... (n terms), accumulated in double               */
    double      (*sum)(const float *x, size_t n, size_t stride);
    /* the largest of x[0..n), n > 0; NaN if any element is NaN              */
    float       (*max)(const float *x, size_t n);
    /* the first index of max(x, n), n > 0 (of the first NaN, if any)       */
    size_t      (*argmax)(const float *x, size_t n);
    /* softmax (or log_softmax when as_log) of one row of n; out may be x    */
    void        (*softmax_row)(float *out, const float *x, size_t n, bool as_log);
} cpu_kernels;

/* Each family fills its part of the table with portable C. */
void cpu_elementwise_kernels_scalar(cpu_kernels *k);
void cpu_reduce_kernels_scalar(cpu_kernels *k);
void cpu_softmax_kernels_scalar(cpu_kernels *k);
void cpu_matmul_kernels_scalar(cpu_kernels *k);

/* ---- device --------------------------------------------------------------- */

typedef struct cpu_device {
    const kiln_host *host;   /* for errors and logging */
    cpu_kernels      k;
} cpu_device;

/* ---- ops ------------------------------------------------------------------ */

/* Why the node's shapes do not fit the op, or NULL if they do. Dtypes, source
 * presence and buffer extents are checked before this, in plugin.c. */
typedef const char *(*cpu_check_fn)(const kiln_node *node);
/* Computes one node, writing every element of its output. */
typedef kiln_status (*cpu_op_fn)(const cpu_device *dev, const kiln_node *node);

const char *cpu_check_binary(const kiln_node *node);
const char *cpu_check_unary(const kiln_node *node);
const char *cpu_check_matmul(const kiln_node *node);
const char *cpu_check_reduce_axis(const kiln_node *node);
const char *cpu_check_reduce_last(const kiln_node *node);
const char *cpu_check_softmax(const kiln_node *node);
const char *cpu_check_transpose(const kiln_node *node);
const char *cpu_check_conv2d(const kiln_node *node);
const char *cpu_check_max_pool2d(const kiln_node *node);
const char *cpu_check_mse_loss(const kiln_node *node);
const char *cpu_check_cross_entropy(const kiln_node *node);

kiln_status cpu_op_binary(const cpu_device *dev, const kiln_node *node);
kiln_status cpu_op_unary(const cpu_device *dev, const kiln_node *node);
kiln_status cpu_op_matmul(const cpu_device *dev, const kiln_node *node);
kiln_status cpu_op_sum_mean(const cpu_device *dev, const kiln_node *node);
kiln_status cpu_op_max(const cpu_device *dev, const kiln_node *node);
kiln_status cpu_op_argmax(const cpu_device *dev, const kiln_node *node);
kiln_status cpu_op_softmax(const cpu_device *dev, const kiln_node *node);
kiln_status cpu_op_transpose(const cpu_device *dev, const kiln_node *node);
kiln_status cpu_op_conv2d(const cpu_device *dev, const kiln_node *node);
kiln_status cpu_op_max_pool2d(const cpu_device *dev, const kiln_node *node);
kiln_status cpu_op_mse_loss(const cpu_device *dev, const kiln_node *node);
kiln_status cpu_op_cross_entropy(const cpu_device *dev, const kiln_node *node);

/* gradients (ops_grad.c) and optimiser steps (ops_optim.c) */
const char *cpu_check_sum_to(const kiln_node *node);
const char *cpu_check_expand(const kiln_node *node);
const char *cpu_check_relu_grad(const kiln_node *node);
const char *cpu_check_max_grad(const kiln_node *node);
const char *cpu_check_softmax_grad(const kiln_node *node);
const char *cpu_check_conv2d_grad(const kiln_node *node);
const char *cpu_check_max_pool2d_grad(const kiln_node *node);
const char *cpu_check_cross_entropy_grad(const kiln_node *node);
const char *cpu_check_step(const kiln_node *node);

kiln_status cpu_op_sum_to(const cpu_device *dev, const kiln_node *node);
kiln_status cpu_op_expand(const cpu_device *dev, const kiln_node *node);
kiln_status cpu_op_relu_grad(const cpu_device *dev, const kiln_node *node);
kiln_status cpu_op_max_grad(const cpu_device *dev, const kiln_node *node);
kiln_status cpu_op_softmax_grad(const cpu_device *dev, const kiln_node *node);
kiln_status cpu_op_conv2d_grad(const cpu_device *dev, const kiln_node *node);
kiln_status cpu_op_max_pool2d_grad(const cpu_device *dev, const kiln_node *node);
kiln_status cpu_op_cross_entropy_grad(const cpu_device *dev, const kiln_node *node);
kiln_status cpu_op_sgd_step(const cpu_device *dev, const kiln_node *node);
kiln_status cpu_op_adam_step(const cpu_device *dev, const kiln_node *node);

/* ---- convolution geometry -------------------------------------------------- */

/* The sizes of one 2-D convolution, as size_t once checked. */
typedef struct cpu_conv2d_geom {
    size_t N, C, H, W;          /* x [N,C,H,W]                         */
    size_t O, KH, KW;           /* w [O,C,KH,KW]                       */
    size_t OH, OW;              /* y [N,O,OH,OW]                       */
    size_t sh, sw, ph, pw;      /* stride, padding (CONV2D's iparam)   */
} cpu_conv2d_geom;

static inline cpu_conv2d_geom cpu_conv2d_geom_of(const int64_t *x, const int64_t *w,
                                                 const int64_t *y, const int32_t *iparam)
{
    cpu_conv2d_geom g = {
        .N = (size_t)x[0], .C = (size_t)x[1], .H = (size_t)x[2], .W = (size_t)x[3],
        .O = (size_t)w[0], .KH = (size_t)w[2], .KW = (size_t)w[3],
        .OH = (size_t)y[2], .OW = (size_t)y[3],
        .sh = (size_t)iparam[0], .sw = (size_t)iparam[1],
        .ph = (size_t)iparam[2], .pw = (size_t)iparam[3],
    };
    return g;
}

/* Windows of k, stride apart, over n padded by pad on both sides:
 * (n + 2 * pad - k) / stride + 1, or -1 when not even one fits. */
static inline int64_t cpu_window_count(int64_t n, int64_t k, int64_t stride, int64_t pad)
{
    int64_t span = n + 2 * pad - k;
    return span < 0 ? -1 : span / stride + 1;
}

/* ---- node helpers --------------------------------------------------------- */

/* The node's data. A node of no elements may have no buffer: NULL then. */
static inline void *cpu_data(const kiln_node *node)
{
    const cpu_buffer *b = node->buffer;
    return b ? (char *)b->data + node->offset : NULL;
}

static inline float *cpu_f32(const kiln_node *node)
{
    return cpu_data(node);
}

static inline const float *cpu_cf32(const kiln_node *node)
{
    return cpu_data(node);
}

/* The product of dims[from, to). */
static inline int64_t cpu_dims_product(const kiln_node *node, int from, int to)
{
    int64_t p = 1;
    for (int i = from; i < to; i++)
        p *= node->dims[i];
    return p;
}

/* The last axis's size (1 for a scalar) and the number of rows along it. */
static inline int64_t cpu_last_dim(const kiln_node *node)
{
    return node->ndim > 0 ? node->dims[node->ndim - 1] : 1;
}

static inline int64_t cpu_rows(const kiln_node *node)
{
    return node->ndim > 0 ? cpu_dims_product(node, 0, node->ndim - 1) : 1;
}

/* The larger of m and x, NaN if either is: once NaN, a running max stays NaN
 * (fmaxf would drop it). */
static inline float cpu_max2(float m, float x)
{
    return x > m || x != x ? x : m;
}

/* The largest of x[0..n), n > 0, NaN if any element is. */
static inline float cpu_row_max(const float *x, size_t n)
{
    float m = x[0];
    for (size_t i = 1; i < n; i++)
        m = cpu_max2(m, x[i]);
    return m;
}

#endif /* KILN_CPU_IMPL_H */
