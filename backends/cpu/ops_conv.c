/* ops_conv.c — CONV2D (NCHW cross-correlation, zero padding) and MAX_POOL2D.
 *
 * Convolution is an implicit GEMM, one image at a time: out[n] = w [O, C*KH*KW]
 * @ col, where col [C*KH*KW, OH*OW] holds the patches of image n. col is never
 * stored: the GEMM packs its panels straight from the image (gemm.c,
 * cpu_im2col), and adds the bias as it writes each tile. A 1x1 convolution
 * with stride 1 and no padding is a plain GEMM on the image. Images go to
 * different threads when there are enough of them; otherwise each GEMM is
 * split across the threads. */
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


/* The GEMM of image n: out[n] [O, OH*OW] = w @ im2col(x[n]) + bias. */
static void cpu_conv_gemm_args(const cpu_conv *cv, const kiln_node *node, size_t n,
                               cpu_im2col *im, cpu_gemm_args *g)
{
    const float *x = cpu_cf32(node->src[0]) + n * cv->C * cv->H * cv->W;
    size_t spatial = cv->OH * cv->OW, ckk = cv->C * cv->KH * cv->KW;
    *im = (cpu_im2col){
        .x = x, .C = cv->C, .H = cv->H, .W = cv->W, .KH = cv->KH, .KW = cv->KW,
        .OH = cv->OH, .OW = cv->OW, .sh = cv->sh, .sw = cv->sw, .ph = cv->ph,
        .pw = cv->pw,
    };
    bool pointwise = cv->KH == 1 && cv->KW == 1 && cv->sh == 1 && cv->sw == 1 &&
                     cv->ph == 0 && cv->pw == 0;
    *g = (cpu_gemm_args){
        .M = cv->O, .N = spatial, .K = ckk,
        .a = cpu_cf32(node->src[1]), .lda = ckk,
        .b = x, .ldb = spatial, .im2col = pointwise ? NULL : im,
        .c = cpu_f32(node) + n * cv->O * spatial, .ldc = spatial,
        .row_bias = node->src[2] ? cpu_cf32(node->src[2]) : NULL,
    };
}

typedef struct cpu_conv_job {
    const cpu_device *dev;
    const kiln_node  *node;
    cpu_conv          cv;
} cpu_conv_job;

/* Images [lo, hi), each a GEMM on this thread alone. */
static void cpu_conv_images_task(void *arg, int tid, int nt)
{
    const cpu_conv_job *job = arg;
    size_t lo, hi;
    cpu_split(job->cv.N, 1, tid, nt, &lo, &hi);
    for (size_t n = lo; n < hi; n++) {
        cpu_im2col im;
        cpu_gemm_args g;
        cpu_conv_gemm_args(&job->cv, job->node, n, &im, &g);
        cpu_gemm_serial(job->dev, tid, &g);
    }
}

kiln_status cpu_op_conv2d(const cpu_device *dev, const kiln_node *node)
{
    cpu_conv_job job = { dev, node, cpu_conv_of(node) };
    if (node->numel == 0)
        return KILN_OK;
    int nt = cpu_pool_size(dev->pool);
    /* whole images per thread when that splits evenly enough */
    if (nt > 1 && (job.cv.N % (size_t)nt == 0 || job.cv.N >= 4 * (size_t)nt)) {
        cpu_pool_run(dev->pool, nt, cpu_conv_images_task, &job);
        return KILN_OK;
    }
    for (size_t n = 0; n < job.cv.N; n++) {
        cpu_im2col im;
        cpu_gemm_args g;
        cpu_conv_gemm_args(&job.cv, node, n, &im, &g);
        cpu_gemm(dev, &g);
    }
    return KILN_OK;
}

/* ---- MAX_POOL2D ----------------------------------------------------------- */


static void cpu_pool_max_row_scalar(float *out, const float *x, size_t W, size_t n,
                                    size_t kh, size_t kw, size_t sw)
{
    for (size_t j = 0; j < n; j++)
        out[j] = x[j * sw];
    for (size_t r = 0; r < kh; r++)
        for (size_t c = 0; c < kw; c++) {
            const float *row = x + r * W + c;
            for (size_t j = 0; j < n; j++)
                out[j] = cpu_max2(out[j], row[j * sw]);
        }
}

static void cpu_pool_argmax_row_scalar(int32_t *arg, const float *x, size_t W, size_t n,
                                       size_t kh, size_t kw, size_t sw)
{
    for (size_t j = 0; j < n; j++)
        arg[j] = (int32_t)cpu_window_argmax(x + j * sw, W, kh, kw);
}

void cpu_conv_kernels_scalar(cpu_kernels *k)
{
    k->pool_max_row = cpu_pool_max_row_scalar;
    k->pool_argmax_row = cpu_pool_argmax_row_scalar;
}

typedef struct cpu_pool_job {
    const cpu_device *dev;
    const kiln_node  *node;
    size_t H, W, OH, OW, kh, kw, sh, sw;
} cpu_pool_job;

/* Planes [lo, hi), an output row at a time. NaN propagates, as in PyTorch. */
static void cpu_max_pool_range(void *arg, size_t lo, size_t hi)
{
    const cpu_pool_job *j = arg;
    const float *x = cpu_cf32(j->node->src[0]);
    float *out = cpu_f32(j->node);
    for (size_t p = lo; p < hi; p++)
        for (size_t oh = 0; oh < j->OH; oh++)
            j->dev->k.pool_max_row(out + (p * j->OH + oh) * j->OW,
                                   x + p * j->H * j->W + oh * j->sh * j->W, j->W,
                                   j->OW, j->kh, j->kw, j->sw);
}

kiln_status cpu_op_max_pool2d(const cpu_device *dev, const kiln_node *node)
{
    const kiln_node *src = node->src[0];
    cpu_pool_job job = {
        .dev = dev, .node = node,
        .H = (size_t)src->dims[2], .W = (size_t)src->dims[3],
        .OH = (size_t)node->dims[2], .OW = (size_t)node->dims[3],
        .kh = (size_t)node->iparam[0], .kw = (size_t)node->iparam[1],
        .sh = (size_t)node->iparam[2], .sw = (size_t)node->iparam[3],
    };
    size_t planes = (size_t)(src->dims[0] * src->dims[1]);
    cpu_parallel_for(dev, planes, 1, cpu_row_grain(job.H * job.W), cpu_max_pool_range,
                     &job);
    return KILN_OK;
}
