/* ops_elementwise.c — binary ops with broadcasting, and unary ops.
 *
 * Broadcasting (backend.h): out[i] = a[i % na] OP b[i % nb], where one operand
 * has the output's numel n and the other's divides it. The op cuts that into
 * kernel calls on contiguous runs: one call with a step of 0 when the smaller
 * side is a single element, else one call per repeat of the smaller side. */
#include <math.h>

#include "cpu-impl.h"

/* ---- scalar kernels ------------------------------------------------------- */

#define CPU_BINARY_KERNEL(fname, expr)                                         \
    static void fname(float *out, const float *a, size_t a_step,               \
                      const float *b, size_t b_step, size_t n)                 \
    {                                                                          \
        for (size_t i = 0; i < n; i++) {                                       \
            float x = a[i * a_step], y = b[i * b_step];                        \
            out[i] = (expr);                                                   \
        }                                                                      \
    }

CPU_BINARY_KERNEL(cpu_add_scalar, x + y)
CPU_BINARY_KERNEL(cpu_sub_scalar, x - y)
CPU_BINARY_KERNEL(cpu_mul_scalar, x * y)
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

#define CPU_UNARY_KERNEL(fname, expr)                                          \
    static void fname(float *out, const float *in, size_t n, float p)          \
    {                                                                          \
        (void)p;                                                               \
        for (size_t i = 0; i < n; i++) {                                       \
            float x = in[i];                                                   \
            out[i] = (expr);                                                   \
        }                                                                      \
    }

CPU_UNARY_KERNEL(cpu_neg_scalar, -x)
CPU_UNARY_KERNEL(cpu_exp_scalar, expf(x))
CPU_UNARY_KERNEL(cpu_log_scalar, logf(x))
CPU_UNARY_KERNEL(cpu_sqrt_scalar, sqrtf(x))
CPU_UNARY_KERNEL(cpu_relu_scalar, cpu_relu1(x))
CPU_UNARY_KERNEL(cpu_sigmoid_scalar, cpu_sigmoid1(x))
CPU_UNARY_KERNEL(cpu_tanh_scalar, tanhf(x))
CPU_UNARY_KERNEL(cpu_scale_scalar, x * p)

void cpu_elementwise_kernels_scalar(cpu_kernels *k)
{
    k->binary[CPU_ADD]     = cpu_add_scalar;
    k->binary[CPU_SUB]     = cpu_sub_scalar;
    k->binary[CPU_MUL]     = cpu_mul_scalar;
    k->binary[CPU_DIV]     = cpu_div_scalar;
    k->unary[CPU_NEG]      = cpu_neg_scalar;
    k->unary[CPU_EXP]      = cpu_exp_scalar;
    k->unary[CPU_LOG]      = cpu_log_scalar;
    k->unary[CPU_SQRT]     = cpu_sqrt_scalar;
    k->unary[CPU_RELU]     = cpu_relu_scalar;
    k->unary[CPU_SIGMOID]  = cpu_sigmoid_scalar;
    k->unary[CPU_TANH]     = cpu_tanh_scalar;
    k->unary[CPU_SCALE]    = cpu_scale_scalar;
}

/* ---- ops ------------------------------------------------------------------ */

const char *cpu_check_binary(const kiln_node *node)
{
    int64_t n = node->numel, na = node->src[0]->numel, nb = node->src[1]->numel;
    int64_t small = na < nb ? na : nb;
    if (na != n && nb != n)
        return "neither operand has the output's number of elements";
    /* An empty output may broadcast a non-empty operand ([0, 7] + [7]). */
    if (n > 0 && (na > n || nb > n))
        return "an operand has more elements than the output";
    if (n > 0 && (small == 0 || n % small != 0))
        return "the smaller operand's number of elements does not divide the output's";
    return NULL;
}

kiln_status cpu_op_binary(const cpu_device *dev, const kiln_node *node)
{
    cpu_binary_fn fn = dev->k.binary[node->op - KILN_OP_ADD];
    const kiln_node *a = node->src[0], *b = node->src[1];
    size_t n = (size_t)node->numel;
    const float *pa = cpu_cf32(a), *pb = cpu_cf32(b);
    float *out = cpu_f32(node);
    if (n == 0)
        return KILN_OK;

    bool a_full = (size_t)a->numel == n;
    size_t block = (size_t)(a_full ? b->numel : a->numel);
    if (block == 1) {
        fn(out, pa, a_full ? 1 : 0, pb, a_full ? 0 : 1, n);
        return KILN_OK;
    }
    for (size_t off = 0; off < n; off += block) {
        if (a_full)
            fn(out + off, pa + off, 1, pb, 1, block);
        else
            fn(out + off, pa, 1, pb + off, 1, block);
    }
    return KILN_OK;
}

const char *cpu_check_unary(const kiln_node *node)
{
    if (node->numel != node->src[0]->numel)
        return "the output and the input differ in number of elements";
    return NULL;
}

kiln_status cpu_op_unary(const cpu_device *dev, const kiln_node *node)
{
    cpu_unary_fn fn = dev->k.unary[node->op - KILN_OP_NEG];
    if (node->numel > 0)
        fn(cpu_f32(node), cpu_cf32(node->src[0]), (size_t)node->numel,
           node->fparam[0]);
    return KILN_OK;
}
