/* ops_conv.c — CONV2D (NCHW cross-correlation, zero padding) and MAX_POOL2D.
 *
 * Convolution is im2col + sgemm, one image at a time: the patches of image n
 * are laid out as col [C*KH*KW, OH*OW], so that out[n] = w [O, C*KH*KW] @ col.
 * All the arithmetic is then in the GEMM, which is where an ISA's fast kernel
 * goes. The col scratch is allocated per call; it may later come from memory
 * planned at compile time. */
#include <stdlib.h>

#include "cpu-impl.h"

/* The sizes of one convolution, as size_t once checked. */
typedef struct cpu_conv {
    size_t N, C, H, W;          /* x                                   */
    size_t O, KH, KW;           /* w                                   */
    size_t OH, OW;              /* output                              */
    size_t sh, sw, ph, pw;      /* stride, padding                     */
} cpu_conv;

static cpu_conv cpu_conv_of(const kiln_node *node)
{
    const kiln_node *x = node->src[0], *w = node->src[1];
    cpu_conv cv = {
        .N = (size_t)x->dims[0], .C = (size_t)x->dims[1],
        .H = (size_t)x->dims[2], .W = (size_t)x->dims[3],
        .O = (size_t)w->dims[0], .KH = (size_t)w->dims[2], .KW = (size_t)w->dims[3],
        .OH = (size_t)node->dims[2], .OW = (size_t)node->dims[3],
        .sh = (size_t)node->iparam[0], .sw = (size_t)node->iparam[1],
        .ph = (size_t)node->iparam[2], .pw = (size_t)node->iparam[3],
    };
    return cv;
}

/* (in + 2 * pad - k) / stride + 1, or -1 when the window does not fit. */
static int64_t cpu_out_size(int64_t in, int64_t k, int64_t stride, int64_t pad)
{
    int64_t span = in + 2 * pad - k;
    return span < 0 ? -1 : span / stride + 1;
}

const char *cpu_check_conv2d(const kiln_node *node)
{
    const kiln_node *x = node->src[0], *w = node->src[1], *bias = node->src[2];
    const int32_t *p = node->iparam;
    if (x->ndim != 4 || w->ndim != 4 || node->ndim != 4)
        return "conv2d takes x [N,C,H,W], w [O,C,KH,KW] and gives [N,O,OH,OW]";
    if (p[0] < 1 || p[1] < 1 || p[2] < 0 || p[3] < 0)
        return "strides must be at least 1 and padding at least 0";
    if (w->dims[1] != x->dims[1])
        return "w's channels differ from x's";
    if (bias && (bias->ndim != 1 || bias->dims[0] != w->dims[0]))
        return "bias is not [O]";
    if (node->dims[0] != x->dims[0] || node->dims[1] != w->dims[0] ||
        node->dims[2] != cpu_out_size(x->dims[2], w->dims[2], p[0], p[2]) ||
        node->dims[3] != cpu_out_size(x->dims[3], w->dims[3], p[1], p[3]))
        return "the output is not [N, O, (H+2*pad_h-KH)/stride_h+1, "
               "(W+2*pad_w-KW)/stride_w+1]";
    return NULL;
}

/* col[(c*KH + kh)*KW + kw, oh*OW + ow] = x[c, oh*sh - ph + kh, ow*sw - pw + kw],
 * zero outside x. x is one image, [C,H,W]. */
static void cpu_im2col(const cpu_conv *cv, const float *x, float *col)
{
    size_t spatial = cv->OH * cv->OW;
    for (size_t c = 0; c < cv->C; c++)
    for (size_t kh = 0; kh < cv->KH; kh++)
    for (size_t kw = 0; kw < cv->KW; kw++) {
        float *row = col + ((c * cv->KH + kh) * cv->KW + kw) * spatial;
        const float *xc = x + c * cv->H * cv->W;
        for (size_t oh = 0; oh < cv->OH; oh++) {
            /* ih, iw as unsigned: "negative" (in the padding) wraps above H */
            size_t ih = oh * cv->sh + kh - cv->ph;
            for (size_t ow = 0; ow < cv->OW; ow++) {
                size_t iw = ow * cv->sw + kw - cv->pw;
                row[oh * cv->OW + ow] = ih < cv->H && iw < cv->W
                                      ? xc[ih * cv->W + iw] : 0.0f;
            }
        }
    }
}

/* Bytes of the col scratch, or 0 on overflow (never 0 otherwise: the caller
 * has ruled out empty shapes). */
static size_t cpu_col_bytes(const cpu_conv *cv)
{
    size_t n = cv->C;
    if (__builtin_mul_overflow(n, cv->KH, &n) || __builtin_mul_overflow(n, cv->KW, &n) ||
        __builtin_mul_overflow(n, cv->OH, &n) || __builtin_mul_overflow(n, cv->OW, &n) ||
        __builtin_mul_overflow(n, sizeof(float), &n))
        return 0;
    return n;
}

/* out[o, :] += bias[o] for one image's [O, spatial] output. */
static void cpu_add_bias(const cpu_device *dev, float *out, const float *bias,
                         size_t O, size_t spatial)
{
    for (size_t o = 0; o < O; o++)
        dev->k.binary[CPU_ADD](out + o * spatial, out + o * spatial, 1,
                               bias + o, 0, spatial);
}

kiln_status cpu_op_conv2d(const cpu_device *dev, const kiln_node *node)
{
    cpu_conv cv = cpu_conv_of(node);
    const float *x = cpu_cf32(node->src[0]), *w = cpu_cf32(node->src[1]);
    const float *bias = node->src[2] ? cpu_cf32(node->src[2]) : NULL;
    float *out = cpu_f32(node);
    size_t spatial = cv.OH * cv.OW, ckk = cv.C * cv.KH * cv.KW;
    if (node->numel == 0)
        return KILN_OK;

    float *col = NULL;
    if (ckk > 0) {
        size_t bytes = cpu_col_bytes(&cv);
        col = bytes ? malloc(bytes) : NULL;
        if (!col)
            return dev->host->error(KILN_ERR_NO_MEMORY,
                                    "conv2d: cannot allocate %zu x %zu floats "
                                    "for the im2col scratch", ckk, spatial);
    }
    for (size_t n = 0; n < cv.N; n++) {
        float *y = out + n * cv.O * spatial;
        if (col)
            cpu_im2col(&cv, x + n * cv.C * cv.H * cv.W, col);
        /* ckk = 0 (no input channels): sgemm with K = 0 writes zeros */
        dev->k.sgemm(cv.O, spatial, ckk, w, ckk, false, col, spatial, false,
                     y, spatial);
        if (bias)
            cpu_add_bias(dev, y, bias, cv.O, spatial);
    }
    free(col);
    return KILN_OK;
}

/* ---- MAX_POOL2D ----------------------------------------------------------- */

const char *cpu_check_max_pool2d(const kiln_node *node)
{
    const kiln_node *x = node->src[0];
    const int32_t *p = node->iparam;
    if (x->ndim != 4 || node->ndim != 4)
        return "max_pool2d takes x [N,C,H,W] and gives [N,C,OH,OW]";
    if (p[0] < 1 || p[1] < 1 || p[2] < 1 || p[3] < 1)
        return "kernel sizes and strides must be at least 1";
    if (node->dims[0] != x->dims[0] || node->dims[1] != x->dims[1] ||
        node->dims[2] != cpu_out_size(x->dims[2], p[0], p[2], 0) ||
        node->dims[3] != cpu_out_size(x->dims[3], p[1], p[3], 0))
        return "the output is not [N, C, (H-kernel_h)/stride_h+1, "
               "(W-kernel_w)/stride_w+1]";
    return NULL;
}

/* The max of one kh x kw window at the top-left corner x of a [H,W] plane
 * with row stride W. NaN propagates, as in PyTorch. */
static float cpu_window_max(const float *x, size_t W, size_t kh, size_t kw)
{
    float m = x[0];
    for (size_t i = 0; i < kh; i++)
        for (size_t j = 0; j < kw; j++)
            m = cpu_max2(m, x[i * W + j]);
    return m;
}

kiln_status cpu_op_max_pool2d(const cpu_device *dev, const kiln_node *node)
{
    (void)dev;
    const kiln_node *src = node->src[0];
    size_t planes = (size_t)(src->dims[0] * src->dims[1]);
    size_t H = (size_t)src->dims[2], W = (size_t)src->dims[3];
    size_t OH = (size_t)node->dims[2], OW = (size_t)node->dims[3];
    size_t kh = (size_t)node->iparam[0], kw = (size_t)node->iparam[1];
    size_t sh = (size_t)node->iparam[2], sw = (size_t)node->iparam[3];
    const float *x = cpu_cf32(src);
    float *out = cpu_f32(node);
    for (size_t p = 0; p < planes; p++)
        for (size_t oh = 0; oh < OH; oh++)
            for (size_t ow = 0; ow < OW; ow++)
                out[(p * OH + oh) * OW + ow] =
                    cpu_window_max(x + p * H * W + oh * sh * W + ow * sw, W, kh, kw);
    return KILN_OK;
}
