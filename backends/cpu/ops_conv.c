/* ops_conv.c — CONV2D (NCHW cross-correlation, zero padding) and MAX_POOL2D,
 * and their gradients CONV2D_GRAD_INPUT, CONV2D_GRAD_WEIGHT, MAX_POOL2D_GRAD.
 *
 * Convolution is an implicit GEMM, one image at a time: out[n] = w [O, C*KH*KW]
 * @ col, where col [C*KH*KW, OH*OW] holds the patches of image n. col is never
 * stored: the GEMM packs its panels straight from the image (gemm.c,
 * cpu_im2col), and adds the bias as it writes each tile. A 1x1 convolution
 * with stride 1 and no padding is a plain GEMM on the image. Images go to
 * different threads when there are enough of them; otherwise each GEMM is
 * split across the threads.
 *
 * The gradients go through patch matrices (im2col and col2im, both in runs
 * of an image row) and the GEMM, or, for the weights' gradient of a small
 * C*KH*KW, dot products of the rows (dot_nt); a pooling window's gradient
 * goes to the first maximum of the window, a NaN counting as one, where the
 * forward op took its value from. A RELU and MAX_POOL2D after a convolution
 * can run inside it image by image, and a RELU_GRAD after MAX_POOL2D_GRAD
 * plane by plane (fuse.c picks the chains). */
#include <stdlib.h>
#include <string.h>

#include "cpu-impl.h"

/* The sizes of one convolution: the node's x, w and output, and iparam. */
static cpu_conv2d_geom cpu_conv_of(const kiln_node *node)
{
    return cpu_conv2d_geom_of(node->src[0]->dims, node->src[1]->dims, node->dims,
                              node->iparam);
}

/* The GEMM of image n: out[n] [O, OH*OW] = w @ im2col(x[n]) + bias. */
static void cpu_conv_gemm_args(const cpu_conv2d_geom *cv, const kiln_node *node, size_t n,
                               cpu_im2col *im, cpu_gemm_args *g)
{
    const float *x       = cpu_cf32(node->src[0]) + n * cv->C * cv->H * cv->W;
    size_t       spatial = cv->OH * cv->OW, ckk = cv->C * cv->KH * cv->KW;
    *im = (cpu_im2col){
        .x  = x,
        .C  = cv->C,
        .H  = cv->H,
        .W  = cv->W,
        .KH = cv->KH,
        .KW = cv->KW,
        .OH = cv->OH,
        .OW = cv->OW,
        .sh = cv->sh,
        .sw = cv->sw,
        .ph = cv->ph,
        .pw = cv->pw,
    };
    bool pointwise = cv->KH == 1 && cv->KW == 1 && cv->sh == 1 && cv->sw == 1 &&
                     cv->ph == 0 && cv->pw == 0;
    *g = (cpu_gemm_args){
        .M        = cv->O,
        .N        = spatial,
        .K        = ckk,
        .a        = cpu_cf32(node->src[1]),
        .lda      = ckk,
        .b        = x,
        .ldb      = spatial,
        .im2col   = pointwise ? NULL : im,
        .c        = cpu_f32(node) + n * cv->O * spatial,
        .ldc      = spatial,
        .row_bias = node->src[2] ? cpu_cf32(node->src[2]) : NULL,
    };
}

typedef struct cpu_conv_job {
    const cpu_device *dev;
    const kiln_node  *node;
    cpu_conv2d_geom   cv;
    float            *cols; /* per thread: C*KH*KW x OH*OW, or NULL */
    /* fused followers (fuse.c), each run on an image as soon as it is out:
     * RELU of the output and MAX_POOL2D of that, or NULL */
    const kiln_node *relu, *pool;
} cpu_conv_job;

static void cpu_patches_t(const cpu_conv2d_geom *cv, const float *x, float *cols);
static void cpu_conv_followers(const cpu_conv_job *job, size_t n);

/* Images [lo, hi), each a GEMM on this thread alone. */
static void cpu_conv_images_task(void *arg, int tid, int nt)
{
    const cpu_conv_job *job = arg;
    size_t              lo, hi;
    cpu_split(job->cv.N, 1, tid, nt, &lo, &hi);
    for (size_t n = lo; n < hi; n++) {
        cpu_im2col    im;
        cpu_gemm_args g;
        cpu_conv_gemm_args(&job->cv, job->node, n, &im, &g);
        if (g.im2col && job->cols) {
            /* patches by row copies, then a plain GEMM */
            float *cols = job->cols + (size_t)tid * g.K * g.N;
            cpu_patches_t(&job->cv, g.b, cols);
            g.im2col = NULL;
            g.b      = cols;
            g.ldb    = g.N;
        }
        cpu_gemm_serial(job->dev, tid, &g);
        cpu_conv_followers(job, n);
    }
}

/* Whether images go to threads whole: when they split evenly enough. */
static bool cpu_conv_by_images(int nt, size_t N)
{
    return nt > 1 && (N % (size_t)nt == 0 || N >= 4 * (size_t)nt);
}

bool cpu_conv2d_fusable(const cpu_device *dev, const kiln_node *conv)
{
    int nt = cpu_pool_size(dev->pool);
    return nt == 1 || cpu_conv_by_images(nt, (size_t)conv->dims[0]);
}

static kiln_status cpu_conv2d_run(cpu_conv_job *job)
{
    const cpu_device *dev  = job->dev;
    const kiln_node  *node = job->node;
    if (node->numel == 0)
        return KILN_OK;
    int nt = cpu_pool_size(dev->pool);
    /* whole images per thread when that splits evenly enough */
    if (cpu_conv_by_images(nt, job->cv.N)) {
        /* without memory for them the patches are packed from the image */
        size_t ckk = job->cv.C * job->cv.KH * job->cv.KW, spatial = job->cv.OH * job->cv.OW;
        job->cols = ckk * spatial <= ((size_t)1 << 22)
                        ? malloc((size_t)nt * ckk * spatial * sizeof *job->cols)
                        : NULL;
        cpu_pool_run(dev->pool, nt, cpu_conv_images_task, job);
        free(job->cols);
        return KILN_OK;
    }
    for (size_t n = 0; n < job->cv.N; n++) {
        cpu_im2col    im;
        cpu_gemm_args g;
        cpu_conv_gemm_args(&job->cv, node, n, &im, &g);
        cpu_gemm(dev, &g);
        cpu_conv_followers(job, n);
    }
    return KILN_OK;
}

kiln_status cpu_op_conv2d(const cpu_device *dev, const kiln_node *node)
{
    cpu_conv_job job = {dev, node, cpu_conv_of(node), NULL, NULL, NULL};
    return cpu_conv2d_run(&job);
}

kiln_status cpu_op_conv2d_relu_pool(const cpu_device *dev, const kiln_node *conv,
                                    const kiln_node *relu, const kiln_node *pool)
{
    cpu_conv_job job = {dev, conv, cpu_conv_of(conv), NULL, relu, pool};
    return cpu_conv2d_run(&job);
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

static void cpu_pool_grad_w2_scalar(float *out, const float *gy, const float *x, size_t W,
                                    size_t n, size_t kh)
{
    for (size_t j = 0; j < n; j++) {
        size_t at = cpu_window_argmax(x + 2 * j, W, kh, 2);
        for (size_t r = 0; r < kh; r++)
            out[r * W + 2 * j] = out[r * W + 2 * j + 1] = 0.0f;
        out[2 * j + at] = gy[j];
    }
}

static void cpu_dot_nt_scalar(float *c, size_t ldc, const float *a, size_t lda,
                              const float *b, size_t ldb, size_t M, size_t N, size_t K,
                              bool accumulate)
{
    for (size_t i = 0; i < M; i++)
        for (size_t j = 0; j < N; j++) {
            float s = 0.0f;
            for (size_t k = 0; k < K; k++)
                s += a[i * lda + k] * b[j * ldb + k];
            c[i * ldc + j] = (accumulate ? c[i * ldc + j] : 0.0f) + s;
        }
}

void cpu_conv_kernels_scalar(cpu_kernels *k)
{
    k->dot_nt          = cpu_dot_nt_scalar;
    k->pool_max_row    = cpu_pool_max_row_scalar;
    k->pool_argmax_row = cpu_pool_argmax_row_scalar;
    k->pool_grad_w2    = cpu_pool_grad_w2_scalar;
}

typedef struct cpu_pool_job {
    const cpu_device *dev;
    const kiln_node  *node;
    size_t            H, W, OH, OW, kh, kw, sh, sw;
} cpu_pool_job;

/* Planes [lo, hi), an output row at a time. NaN propagates, as in PyTorch. */
static void cpu_max_pool_range(void *arg, size_t lo, size_t hi)
{
    const cpu_pool_job *j   = arg;
    const float        *x   = cpu_cf32(j->node->src[0]);
    float              *out = cpu_f32(j->node);
    for (size_t p = lo; p < hi; p++)
        for (size_t oh = 0; oh < j->OH; oh++)
            j->dev->k.pool_max_row(out + (p * j->OH + oh) * j->OW,
                                   x + p * j->H * j->W + oh * j->sh * j->W, j->W, j->OW,
                                   j->kh, j->kw, j->sw);
}

static cpu_pool_job cpu_pool_job_of(const cpu_device *dev, const kiln_node *node)
{
    const kiln_node *src = node->src[0];
    return (cpu_pool_job){
        .dev  = dev,
        .node = node,
        .H    = (size_t)src->dims[2],
        .W    = (size_t)src->dims[3],
        .OH   = (size_t)node->dims[2],
        .OW   = (size_t)node->dims[3],
        .kh   = (size_t)node->iparam[0],
        .kw   = (size_t)node->iparam[1],
        .sh   = (size_t)node->iparam[2],
        .sw   = (size_t)node->iparam[3],
    };
}

/* The fused RELU and MAX_POOL2D of image n of a convolution's output, on
 * this thread, while the image is still in its caches. */
static void cpu_conv_followers(const cpu_conv_job *job, size_t n)
{
    if (!job->relu)
        return;
    size_t image = job->cv.O * job->cv.OH * job->cv.OW;
    job->dev->k.unary[CPU_RELU](cpu_f32(job->relu) + n * image,
                                cpu_cf32(job->node) + n * image, image, 0.0f);
    if (job->pool) {
        cpu_pool_job pj = cpu_pool_job_of(job->dev, job->pool);
        cpu_max_pool_range(&pj, n * job->cv.O, (n + 1) * job->cv.O);
    }
}

kiln_status cpu_op_max_pool2d(const cpu_device *dev, const kiln_node *node)
{
    const kiln_node *src    = node->src[0];
    cpu_pool_job     job    = cpu_pool_job_of(dev, node);
    size_t           planes = (size_t)(src->dims[0] * src->dims[1]);
    cpu_parallel_for(dev, planes, 1, cpu_row_grain(job.H * job.W), cpu_max_pool_range,
                     &job);
    return KILN_OK;
}

/* ---- CONV2D_GRAD_INPUT, CONV2D_GRAD_WEIGHT ------------------------------------- */

/* x's and w's dims: one of them is the node's own, the other its src[1]. */
static void cpu_conv_grad_dims(const kiln_node *node, const int64_t **x,
                               const int64_t **w)
{
    bool input = node->op == KILN_OP_CONV2D_GRAD_INPUT;
    *x         = input ? node->dims : node->src[1]->dims;
    *w         = input ? node->src[1]->dims : node->dims;
}


/* The patches of one image transposed, cols [C*KH*KW, OH*OW]: row
 * (c, kh, kw) holds x[c, oh*sh + kh - ph, ow*sw + kw - pw] over the output
 * pixels, 0 in the padding. Each row is runs of one image row (copies when
 * the stride is 1), its padded edges found once per row rather than tested
 * per element. */
/* The output columns [lo, hi) whose iw = ow*sw + kw - pw lies in [0, W). */
static void cpu_patch_cols(const cpu_conv2d_geom *cv, size_t kw, size_t *lo, size_t *hi)
{
    size_t l = kw >= cv->pw ? 0 : (cv->pw - kw + cv->sw - 1) / cv->sw;
    size_t h = cv->W + cv->pw > kw ? (cv->W + cv->pw - kw + cv->sw - 1) / cv->sw : 0;
    h        = h < cv->OW ? h : cv->OW;
    *lo      = l < h ? l : h;
    *hi      = h;
}

static void cpu_patches_t(const cpu_conv2d_geom *cv, const float *x, float *cols)
{
    for (size_t c = 0; c < cv->C; c++)
        for (size_t kh = 0; kh < cv->KH; kh++)
            for (size_t kw = 0; kw < cv->KW; kw++) {
                size_t lo, hi;
                cpu_patch_cols(cv, kw, &lo, &hi);
                for (size_t oh = 0; oh < cv->OH; oh++, cols += cv->OW) {
                    size_t ih = oh * cv->sh + kh -
                                cv->ph; /* wraps above H in the padding */
                    if (ih >= cv->H) {
                        memset(cols, 0, cv->OW * sizeof *cols);
                        continue;
                    }
                    /* iw = ow * sw + kw - pw, at least 0 from ow = lo on:
                     * the row's pointer is never formed before x */
                    const float *row = x + (c * cv->H + ih) * cv->W;
                    memset(cols, 0, lo * sizeof *cols);
                    if (cv->sw == 1 && lo < hi)
                        memcpy(cols + lo, row + (lo + kw - cv->pw), (hi - lo) * sizeof *cols);
                    else
                        for (size_t ow = lo; ow < hi; ow++)
                            cols[ow] = row[ow * cv->sw + kw - cv->pw];
                    memset(cols + hi, 0, (cv->OW - hi) * sizeof *cols);
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
        dev->host->error(KILN_ERR_NO_MEMORY,
                         "%s: cannot allocate %zu x %zu floats "
                         "of scratch",
                         op, a, b);
    return p;
}

/* The inverse of cpu_patches_t (col2im): every entry of cols [C*KH*KW,
 * OH*OW] added to the pixel of x [C,H,W] it came from, so that overlapping
 * windows add up; a run of one image row at a time, a vector add when the
 * stride is 1. */
static void cpu_col2im_t(const cpu_device *dev, const cpu_conv2d_geom *cv, const float *cols,
                         float *x)
{
    for (size_t c = 0; c < cv->C; c++)
        for (size_t kh = 0; kh < cv->KH; kh++)
            for (size_t kw = 0; kw < cv->KW; kw++) {
                size_t lo, hi;
                cpu_patch_cols(cv, kw, &lo, &hi);
                for (size_t oh = 0; oh < cv->OH; oh++, cols += cv->OW) {
                    size_t ih = oh * cv->sh + kh - cv->ph; /* wraps above H */
                    if (ih >= cv->H || lo == hi)
                        continue;
                    float *row = x + (c * cv->H + ih) * cv->W; /* as in patches */
                    if (cv->sw == 1) {
                        float *at = row + (lo + kw - cv->pw);
                        dev->k.binary[CPU_ADD](at, at, 1, cols + lo, 1, hi - lo);
                    } else {
                        for (size_t ow = lo; ow < hi; ow++)
                            row[ow * cv->sw + kw - cv->pw] += cols[ow];
                    }
                }
            }
}

/* dx[n] = col2im(w^T @ gy[n]): each output pixel's gradient spread over its
 * window through the weights. The product is the patches transposed,
 * [C*KH*KW, OH*OW], so that col2im adds whole runs of a row. */
static void cpu_conv_grad_input(const cpu_device *dev, const cpu_conv2d_geom *cv,
                                const float *gy, const float *w, float *dx, float *cols)
{
    size_t spatial = cv->OH * cv->OW, ckk = cv->C * cv->KH * cv->KW;
    size_t image = cv->C * cv->H * cv->W;
    for (size_t n = 0; n < cv->N; n++) {
        /* O = 0 (K = 0): the GEMM writes zeros */
        cpu_gemm_args g = {
            .M   = ckk,
            .N   = spatial,
            .K   = cv->O,
            .a   = w,
            .lda = ckk,
            .ta  = true,
            .b   = gy + n * cv->O * spatial,
            .ldb = spatial,
            .c   = cols,
            .ldc = spatial,
        };
        cpu_gemm(dev, &g);
        memset(dx + n * image, 0, image * sizeof *dx);
        cpu_col2im_t(dev, cv, cols, dx + n * image);
    }
}

/* dw = sum over n of gy[n] @ patches(x[n]). The images are split between
 * the threads: each builds its images' patches (transposed, row copies) in
 * its own rows and adds
 * their products into its own partial dw (the GEMM accumulating, on that
 * thread alone); the partials are added at the end. A small kernel's
 * product has a long K (the pixels) and a short N (C*KH*KW), which one
 * thread runs well: it is the images that give the threads work. */
typedef struct cpu_grad_weight_job {
    const cpu_device      *dev;
    const cpu_conv2d_geom *cv;
    const float           *gy, *x;
    float                 *rows;    /* per thread: ckk x spatial       */
    float                 *partial; /* per thread: O x ckk             */
} cpu_grad_weight_job;

/* Up to this C*KH*KW the product of an image is dot products of its rows
 * (kernel dot_nt): the packed GEMM would pad N = C*KH*KW to its tile and
 * pack gy's rows again for every image. */
#define CPU_DOT_NT_MAX 32

static void cpu_grad_weight_task(void *arg, int tid, int nt)
{
    const cpu_grad_weight_job *j       = arg;
    const cpu_conv2d_geom     *cv      = j->cv;
    size_t                     spatial = cv->OH * cv->OW, ckk = cv->C * cv->KH * cv->KW;
    size_t                     image = cv->C * cv->H * cv->W, lo, hi;
    float                     *rows  = j->rows + (size_t)tid * spatial * ckk;
    float                     *dw    = j->partial + (size_t)tid * cv->O * ckk;
    cpu_split(cv->N, 1, tid, nt, &lo, &hi);
    if (lo == hi)
        memset(dw, 0, cv->O * ckk * sizeof *dw);
    for (size_t n = lo; n < hi; n++) {
        cpu_patches_t(cv, j->x + n * image, rows);
        if (ckk <= CPU_DOT_NT_MAX) {
            j->dev->k.dot_nt(dw, ckk, j->gy + n * cv->O * spatial, spatial, rows, spatial,
                             cv->O, ckk, spatial, n > lo);
            continue;
        }
        cpu_gemm_args g = {
            .M          = cv->O,
            .N          = ckk,
            .K          = spatial,
            .a          = j->gy + n * cv->O * spatial,
            .lda        = spatial,
            .b          = rows,
            .ldb        = spatial,
            .tb         = true,
            .c          = dw,
            .ldc        = ckk,
            .accumulate = n > lo,
        };
        cpu_gemm_serial(j->dev, tid, &g);
    }
}

static kiln_status cpu_conv_grad_weight(const cpu_device *dev, const cpu_conv2d_geom *cv,
                                        const float *gy, const float *x, float *dw)
{
    size_t spatial = cv->OH * cv->OW, ckk = cv->C * cv->KH * cv->KW;
    size_t nt = (size_t)cpu_pool_size(dev->pool);
    if (nt > cv->N)
        nt = cv->N > 0 ? cv->N : 1;
    const char *name = kiln__op_name(KILN_OP_CONV2D_GRAD_WEIGHT);
    float      *rows = cpu_scratch(dev, name, nt * spatial, ckk);
    float      *part = cpu_scratch(dev, name, nt * cv->O, ckk);
    if (!rows || !part) {
        free(rows);
        free(part);
        return KILN_ERR_NO_MEMORY;
    }
    cpu_grad_weight_job job = {dev, cv, gy, x, rows, part};
    cpu_pool_run(dev->pool, (int)nt, cpu_grad_weight_task, &job);
    memcpy(dw, part, cv->O * ckk * sizeof *dw);
    for (size_t t = 1; t < nt; t++)
        dev->k.binary[CPU_ADD](dw, dw, 1, part + t * cv->O * ckk, 1, cv->O * ckk);
    free(rows);
    free(part);
    return KILN_OK;
}

kiln_status cpu_op_conv2d_grad(const cpu_device *dev, const kiln_node *node)
{
    bool        input = node->op == KILN_OP_CONV2D_GRAD_INPUT;
    const char *name  = kiln__op_name(node->op);
    if (node->numel == 0)
        return KILN_OK;
    /* Not empty, so C, KH, KW >= 1 and the checked gy has OH, OW >= 1. */
    const int64_t *x, *w;
    cpu_conv_grad_dims(node, &x, &w);
    cpu_conv2d_geom cv  = cpu_conv2d_geom_of(x, w, node->src[0]->dims, node->iparam);
    size_t          ckk = cv.C * cv.KH * cv.KW;
    const float    *gy = cpu_cf32(node->src[0]), *other = cpu_cf32(node->src[1]);
    if (!input)
        return cpu_conv_grad_weight(dev, &cv, gy, other, cpu_f32(node));
    float *rows = cpu_scratch(dev, name, cv.OH * cv.OW, ckk);
    if (!rows)
        return KILN_ERR_NO_MEMORY;
    cpu_conv_grad_input(dev, &cv, gy, other, cpu_f32(node), rows);
    free(rows);
    return KILN_OK;
}

/* ---- MAX_POOL2D_GRAD ----------------------------------------------------------- */

typedef struct cpu_pool_grad_job {
    const cpu_device *dev;
    size_t            H, W, OH, OW, kh, kw, sh, sw;
    const float      *gy, *x;
    float            *out;
    /* a fused RELU_GRAD of out (fuse.c), run on each plane as soon as it is
     * out: relu_out = relu_x > 0 ? out : 0; or NULL */
    const float *relu_x;
    float       *relu_out;
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
    const cpu_pool_grad_job *j     = arg;
    size_t                   plane = j->H * j->W;
    bool    table = plane <= INT32_MAX / 4 && j->sw * 64 <= INT32_MAX / 4;
    int32_t win[CPU_POOL_GRAD_CHUNK];
    memset(j->out + lo * plane, 0, (hi - lo) * plane * sizeof *j->out);
    for (size_t p = lo; p < hi; p++) {
        for (size_t oh = 0; oh < j->OH; oh++) {
            size_t       row = p * plane + oh * j->sh * j->W;
            const float *gy  = j->gy + (p * j->OH + oh) * j->OW;
            for (size_t o0 = 0; o0 < j->OW; o0 += CPU_POOL_GRAD_CHUNK) {
                size_t n      = j->OW - o0 < CPU_POOL_GRAD_CHUNK ? j->OW - o0
                                                                 : CPU_POOL_GRAD_CHUNK;
                size_t corner = row + o0 * j->sw;
                if (table)
                    j->dev->k.pool_argmax_row(win, j->x + corner, j->W, n, j->kh, j->kw,
                                              j->sw);
                for (size_t ow = 0; ow < n; ow++) {
                    size_t c  = corner + ow * j->sw;
                    size_t at = table ? (size_t)win[ow]
                                      : cpu_window_argmax(j->x + c, j->W, j->kh, j->kw);
                    j->out[c + at] += gy[o0 + ow];
                }
            }
        }
        if (j->relu_out)
            j->dev->k.relu_grad(j->relu_out + p * plane, j->out + p * plane,
                                j->relu_x + p * plane, plane);
    }
}

/* Planes [lo, hi) when the windows tile the rows without overlapping, 2
 * columns wide at stride 2 and as high as their vertical stride: each band
 * of kh rows is written once by the kernel, the rows and columns no window
 * covers (the ragged bottom and right edges) set to 0. */
static void cpu_pool_grad_w2_range(void *arg, size_t lo, size_t hi)
{
    const cpu_pool_grad_job *j     = arg;
    size_t                   plane = j->H * j->W, used = 2 * j->OW;
    for (size_t p = lo; p < hi; p++) {
        float       *out = j->out + p * plane;
        const float *x   = j->x + p * plane;
        for (size_t oh = 0; oh < j->OH; oh++) {
            size_t row = oh * j->sh * j->W;
            j->dev->k.pool_grad_w2(out + row, j->gy + (p * j->OH + oh) * j->OW, x + row,
                                   j->W, j->OW, j->kh);
            if (used < j->W)
                for (size_t r = 0; r < j->kh; r++)
                    memset(out + row + r * j->W + used, 0,
                           (j->W - used) * sizeof *out);
        }
        size_t covered = j->OH * j->sh * j->W;
        memset(out + covered, 0, (plane - covered) * sizeof *out);
        if (j->relu_out)
            j->dev->k.relu_grad(j->relu_out + p * plane, out, j->relu_x + p * plane, plane);
    }
}

static kiln_status cpu_pool_grad_run(const cpu_device *dev, const kiln_node *node,
                                     const kiln_node *relu_grad)
{
    const kiln_node  *src    = node->src[1];
    size_t            planes = (size_t)(src->dims[0] * src->dims[1]);
    cpu_pool_grad_job job    = {
           .dev = dev,
           .H   = (size_t)src->dims[2],
           .W   = (size_t)src->dims[3],
           .OH  = (size_t)node->src[0]->dims[2],
           .OW  = (size_t)node->src[0]->dims[3],
           .kh  = (size_t)node->iparam[0],
           .kw  = (size_t)node->iparam[1],
           .sh  = (size_t)node->iparam[2],
           .sw  = (size_t)node->iparam[3],
           .gy  = cpu_cf32(node->src[0]),
           .x   = cpu_cf32(src),
           .out = cpu_f32(node),
    };
    if (node->numel == 0)
        return KILN_OK;
    if (relu_grad) {
        job.relu_x   = cpu_cf32(relu_grad->src[1]);
        job.relu_out = cpu_f32(relu_grad);
    }
    bool tiled = job.kw == 2 && job.sw == 2 && job.kh == job.sh;
    cpu_parallel_for(dev, planes, 1, cpu_row_grain(job.H * job.W),
                     tiled ? cpu_pool_grad_w2_range : cpu_pool_grad_range, &job);
    return KILN_OK;
}

kiln_status cpu_op_max_pool2d_grad(const cpu_device *dev, const kiln_node *node)
{
    return cpu_pool_grad_run(dev, node, NULL);
}

kiln_status cpu_op_max_pool2d_relu_grad(const cpu_device *dev, const kiln_node *pool_grad,
                                        const kiln_node *relu_grad)
{
    return cpu_pool_grad_run(dev, pool_grad, relu_grad);
}
