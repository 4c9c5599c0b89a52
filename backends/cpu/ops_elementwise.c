/* ops_elementwise.c — binary ops with broadcasting, unary ops, RELU_GRAD, and
 * GELU with its gradient GELU_GRAD.
 *
 * Broadcasting (backend.h): out[i] = a[i % na] OP b[i % nb], where one operand
 * has the output's numel n and the other's divides it. The op cuts that into
 * kernel calls on contiguous runs: one call with a step of 0 when the smaller
 * side is a single element, else one call per repeat of the smaller side.
 * Large tensors are split across the device's threads, at multiples of 16
 * elements (64 bytes) so that no two threads write one cache line. */
#include <math.h>

#include "cpu-impl.h"

/* ops index the kernels by op - KILN_OP_ADD and op - KILN_OP_NEG */
_Static_assert(KILN_OP_SUB - KILN_OP_ADD == CPU_SUB &&
                   KILN_OP_MUL - KILN_OP_ADD == CPU_MUL &&
                   KILN_OP_DIV - KILN_OP_ADD == CPU_DIV,
               "cpu_binary_op must follow kiln_op's order");
_Static_assert(KILN_OP_SCALE - KILN_OP_NEG == CPU_SCALE &&
                   KILN_OP_TANH - KILN_OP_NEG == CPU_TANH &&
                   KILN_OP_SIGMOID - KILN_OP_NEG == CPU_SIGMOID &&
                   KILN_OP_RELU - KILN_OP_NEG == CPU_RELU &&
                   KILN_OP_SQRT - KILN_OP_NEG == CPU_SQRT &&
                   KILN_OP_LOG - KILN_OP_NEG == CPU_LOG &&
                   KILN_OP_EXP - KILN_OP_NEG == CPU_EXP,
               "cpu_unary_op must follow kiln_op's order");

/* ---- scalar kernels ------------------------------------------------------- */

#define CPU_BINARY_KERNEL(fname, expr)                                           \
    static void fname(float *out, const float *a, size_t a_step, const float *b, \
                      size_t b_step, size_t n)                                   \
    {                                                                            \
        for (size_t i = 0; i < n; i++) {                                         \
            float x = a[i * a_step], y = b[i * b_step];                          \
            out[i] = (expr);                                                     \
        }                                                                        \
    }

CPU_BINARY_KERNEL(cpu_add_scalar, x + y)
CPU_BINARY_KERNEL(cpu_sub_scalar, x - y)
CPU_BINARY_KERNEL(cpu_mul_scalar, x *y)
CPU_BINARY_KERNEL(cpu_div_scalar, x / y)

/* 1 / (1 + e^-x) without overflow: e^-|x| is at most 1. */
static inline float cpu_sigmoid1(float x)
{
    if (x >= 0.0f)
        return 1.0f / (1.0f + expf(-x));
    float e = expf(x);
    return e / (1.0f + e);
}

/* Keeps NaN (x < 0 is false for it) as PyTorch's relu does. */
static inline float cpu_relu1(float x)
{
    return x < 0.0f ? 0.0f : x;
}

#define CPU_UNARY_KERNEL(fname, expr)                                 \
    static void fname(float *out, const float *in, size_t n, float p) \
    {                                                                 \
        (void)p;                                                      \
        for (size_t i = 0; i < n; i++) {                              \
            float x = in[i];                                          \
            out[i]  = (expr);                                         \
        }                                                             \
    }

CPU_UNARY_KERNEL(cpu_neg_scalar, -x)
CPU_UNARY_KERNEL(cpu_exp_scalar, expf(x))
CPU_UNARY_KERNEL(cpu_log_scalar, logf(x))
CPU_UNARY_KERNEL(cpu_sqrt_scalar, sqrtf(x))
CPU_UNARY_KERNEL(cpu_relu_scalar, cpu_relu1(x))
CPU_UNARY_KERNEL(cpu_sigmoid_scalar, cpu_sigmoid1(x))
CPU_UNARY_KERNEL(cpu_tanh_scalar, tanhf(x))
CPU_UNARY_KERNEL(cpu_scale_scalar, x *p)

static void cpu_add_relu_scalar(float *sum, float *relu, const float *a, size_t a_step,
                                const float *b, size_t b_step, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        float s = a[i * a_step] + b[i * b_step];
        sum[i]  = s;
        relu[i] = cpu_relu1(s);
    }
}

/* NaN > 0 is false: a NaN x passes no gradient. */
static void cpu_relu_grad_scalar(float *out, const float *g, const float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        out[i] = x[i] > 0.0f ? g[i] : 0.0f;
}

/* GELU's tanh form as x * s with s = 0.5 (1 + tanh(u)) = sigmoid(2u),
 * u = sqrt(2/pi) (x + 0.044715 x^3): with e = exp(-|2u|) <= 1, s is 1 / (1 + e)
 * or e / (1 + e) and s (1 - s) = e / (1 + e)^2, so nothing cancels (1 + tanh
 * would, for negative x) and nothing overflows: a huge |x| makes 2u infinite
 * and e 0. s is NaN when x is. */
#define CPU_GELU_K0 0.7978845608028654f /* sqrt(2 / pi) */
#define CPU_GELU_K1 0.044715f

static inline float cpu_gelu_s(float x, float *q)
{
    float u2 = 2.0f * CPU_GELU_K0 * x * (1.0f + CPU_GELU_K1 * x * x);
    float e  = expf(-fabsf(u2));
    float r  = 1.0f / (1.0f + e);
    *q       = e * r * r;
    return u2 >= 0.0f ? r : e * r;
}

/* s = 0 only where x * s would be -inf * 0 or a product that is 0 anyway. */
static inline float cpu_gelu1(float x)
{
    float q, s = cpu_gelu_s(x, &q);
    return s == 0.0f ? 0.0f : x * s;
}

/* gelu'(x) = s + x * ds/dx, ds/dx = 2 sqrt(2/pi) (1 + 3 0.044715 x^2) s (1 - s);
 * where s (1 - s) is 0 the second term is 0 (x^3 may be infinite there). */
static inline float cpu_gelu_grad1(float x)
{
    float q, s = cpu_gelu_s(x, &q);
    if (q == 0.0f)
        return s;
    return s + x * (2.0f * CPU_GELU_K0) * (1.0f + 3.0f * CPU_GELU_K1 * x * x) * q;
}

static void cpu_gelu_scalar(float *out, const float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        out[i] = cpu_gelu1(x[i]);
}

static void cpu_gelu_grad_scalar(float *out, const float *g, const float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        out[i] = g[i] * cpu_gelu_grad1(x[i]);
}

void cpu_elementwise_kernels_scalar(cpu_kernels *k)
{
    k->gelu               = cpu_gelu_scalar;
    k->gelu_grad          = cpu_gelu_grad_scalar;
    k->add_relu           = cpu_add_relu_scalar;
    k->binary[CPU_ADD]    = cpu_add_scalar;
    k->binary[CPU_SUB]    = cpu_sub_scalar;
    k->binary[CPU_MUL]    = cpu_mul_scalar;
    k->binary[CPU_DIV]    = cpu_div_scalar;
    k->unary[CPU_NEG]     = cpu_neg_scalar;
    k->unary[CPU_EXP]     = cpu_exp_scalar;
    k->unary[CPU_LOG]     = cpu_log_scalar;
    k->unary[CPU_SQRT]    = cpu_sqrt_scalar;
    k->unary[CPU_RELU]    = cpu_relu_scalar;
    k->unary[CPU_SIGMOID] = cpu_sigmoid_scalar;
    k->unary[CPU_TANH]    = cpu_tanh_scalar;
    k->unary[CPU_SCALE]   = cpu_scale_scalar;
    k->relu_grad          = cpu_relu_grad_scalar;
}

/* ---- ops ------------------------------------------------------------------ */


/* One thread's part [lo, hi) of a binary op: whole kernel calls on runs that
 * do not cross a repeat of the smaller operand. */
typedef struct cpu_binary_job {
    cpu_binary_fn   fn;
    cpu_add_relu_fn add_relu; /* with relu: out = a + b, relu = max(out, 0) */
    float          *out, *relu;
    const float    *a, *b;
    size_t          block;  /* numel of the smaller operand */
    bool            a_full; /* a has the output's numel     */
} cpu_binary_job;

static void cpu_binary_run(const cpu_binary_job *j, size_t off, size_t ia, size_t a_step,
                           size_t ib, size_t b_step, size_t len)
{
    if (j->relu)
        j->add_relu(j->out + off, j->relu + off, j->a + ia, a_step, j->b + ib, b_step,
                    len);
    else
        j->fn(j->out + off, j->a + ia, a_step, j->b + ib, b_step, len);
}

static void cpu_binary_range(void *arg, size_t lo, size_t hi)
{
    const cpu_binary_job *j = arg;
    if (j->block == 1) {
        cpu_binary_run(j, lo, j->a_full ? lo : 0, j->a_full ? 1 : 0, j->a_full ? 0 : lo,
                       j->a_full ? 0 : 1, hi - lo);
        return;
    }
    for (size_t off = lo; off < hi;) {
        size_t within = off % j->block;
        size_t len    = j->block - within < hi - off ? j->block - within : hi - off;
        cpu_binary_run(j, off, j->a_full ? off : within, 1, j->a_full ? within : off, 1,
                       len);
        off += len;
    }
}

/* node, and relu (a RELU of node, or NULL) in the same pass. */
static kiln_status cpu_binary_with(const cpu_device *dev, const kiln_node *node,
                                   const kiln_node *relu)
{
    const kiln_node *a = node->src[0], *b = node->src[1];
    size_t           n = (size_t)node->numel;
    if (n == 0)
        return KILN_OK;
    bool           a_full = (size_t)a->numel == n;
    cpu_binary_job job    = {
           .fn       = dev->k.binary[node->op - KILN_OP_ADD],
           .add_relu = dev->k.add_relu,
           .out      = cpu_f32(node),
           .relu     = relu ? cpu_f32(relu) : NULL,
           .a        = cpu_cf32(a),
           .b        = cpu_cf32(b),
           .block    = (size_t)(a_full ? b->numel : a->numel),
           .a_full   = a_full,
    };
    cpu_parallel_for(dev, n, 16, CPU_ELEMENTWISE_GRAIN, cpu_binary_range, &job);
    return KILN_OK;
}

kiln_status cpu_op_binary(const cpu_device *dev, const kiln_node *node)
{
    return cpu_binary_with(dev, node, NULL);
}

kiln_status cpu_op_add_relu(const cpu_device *dev, const kiln_node *add,
                            const kiln_node *relu)
{
    return cpu_binary_with(dev, add, relu);
}


typedef struct cpu_unary_job {
    cpu_unary_fn fn;
    float       *out;
    const float *x;
    float        p;
} cpu_unary_job;

static void cpu_unary_range(void *arg, size_t lo, size_t hi)
{
    const cpu_unary_job *j = arg;
    j->fn(j->out + lo, j->x + lo, hi - lo, j->p);
}

kiln_status cpu_op_unary(const cpu_device *dev, const kiln_node *node)
{
    cpu_unary_job job = {
        dev->k.unary[node->op - KILN_OP_NEG],
        cpu_f32(node),
        cpu_cf32(node->src[0]),
        node->fparam[0],
    };
    cpu_parallel_for(dev, (size_t)node->numel, 16, CPU_ELEMENTWISE_GRAIN, cpu_unary_range,
                     &job);
    return KILN_OK;
}

/* ---- RELU_GRAD ------------------------------------------------------------- */

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
    cpu_relu_grad_job job = {dev, cpu_cf32(node->src[0]), cpu_cf32(node->src[1]),
                             cpu_f32(node)};
    cpu_parallel_for(dev, (size_t)node->numel, 16, CPU_ELEMENTWISE_GRAIN,
                     cpu_relu_grad_range, &job);
    return KILN_OK;
}

/* ---- GELU, GELU_GRAD ------------------------------------------------------- */

typedef struct cpu_gelu_job {
    const cpu_device *dev;
    const float      *g, *x; /* g: NULL for GELU itself */
    float            *out;
} cpu_gelu_job;

static void cpu_gelu_range(void *arg, size_t lo, size_t hi)
{
    const cpu_gelu_job *j = arg;
    if (j->g)
        j->dev->k.gelu_grad(j->out + lo, j->g + lo, j->x + lo, hi - lo);
    else
        j->dev->k.gelu(j->out + lo, j->x + lo, hi - lo);
}

kiln_status cpu_op_gelu(const cpu_device *dev, const kiln_node *node)
{
    cpu_gelu_job job = {dev, NULL, cpu_cf32(node->src[0]), cpu_f32(node)};
    cpu_parallel_for(dev, (size_t)node->numel, 16, CPU_ELEMENTWISE_GRAIN, cpu_gelu_range,
                     &job);
    return KILN_OK;
}

kiln_status cpu_op_gelu_grad(const cpu_device *dev, const kiln_node *node)
{
    cpu_gelu_job job = {dev, cpu_cf32(node->src[0]), cpu_cf32(node->src[1]),
                        cpu_f32(node)};
    cpu_parallel_for(dev, (size_t)node->numel, 16, CPU_ELEMENTWISE_GRAIN, cpu_gelu_range,
                     &job);
    return KILN_OK;
}
