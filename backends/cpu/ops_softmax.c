/* ops_softmax.c — SOFTMAX and LOG_SOFTMAX along the last axis.
 *
 * Each row subtracts its maximum before exp, so exp never overflows and the
 * largest term is 1, which keeps the sum at least 1 (its log finite). A NaN in
 * a row makes the maximum NaN, and so the whole row NaN. */
#include <math.h>

#include "cpu-impl.h"

static void cpu_softmax_row_scalar(float *out, const float *x, size_t n, bool as_log)
{
    if (n == 0)
        return;
    float m = cpu_row_max(x, n);
    double s = 0.0;
    if (as_log) {
        for (size_t i = 0; i < n; i++)
            s += expf(x[i] - m);
        float log_s = (float)log(s);
        for (size_t i = 0; i < n; i++)
            out[i] = (x[i] - m) - log_s;
        return;
    }
    for (size_t i = 0; i < n; i++) {
        float e = expf(x[i] - m);   /* read x[i] before out[i]: out may be x */
        out[i] = e;
        s += e;
    }
    float inv = (float)(1.0 / s);
    for (size_t i = 0; i < n; i++)
        out[i] *= inv;
}

void cpu_softmax_kernels_scalar(cpu_kernels *k)
{
    k->softmax_row = cpu_softmax_row_scalar;
}

const char *cpu_check_softmax(const kiln_node *node)
{
    if (node->numel != node->src[0]->numel)
        return "the output and the input differ in number of elements";
    return NULL;
}

kiln_status cpu_op_softmax(const cpu_device *dev, const kiln_node *node)
{
    const kiln_node *src = node->src[0];
    int64_t rows = cpu_rows(src), cols = cpu_last_dim(src);
    bool as_log = node->op == KILN_OP_LOG_SOFTMAX;
    const float *x = cpu_cf32(src);
    float *out = cpu_f32(node);
    if (cols == 0)
        return KILN_OK;   /* no elements at all */
    for (int64_t i = 0; i < rows; i++)
        dev->k.softmax_row(out + i * cols, x + i * cols, (size_t)cols, as_log);
    return KILN_OK;
}
