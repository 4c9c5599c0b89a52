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

#include "../common/op-table.h"

/* ---- buffers -------------------------------------------------------------- */

/* The handle buffer_alloc returns and kiln stores in kiln_node.buffer. */
typedef struct cpu_buffer {
    void  *data; /* 64-byte aligned */
    size_t size; /* bytes asked for */
} cpu_buffer;

/* ---- kernels -------------------------------------------------------------- */

/* Binary ops in kiln_op order (KILN_OP_ADD ..); plugin.c asserts the order. */
typedef enum cpu_binary_op {
    CPU_ADD,
    CPU_SUB,
    CPU_MUL,
    CPU_DIV,
    CPU_BINARY_COUNT
} cpu_binary_op;

/* Unary ops in kiln_op order (KILN_OP_NEG ..). */
typedef enum cpu_unary_op {
    CPU_NEG,
    CPU_EXP,
    CPU_LOG,
    CPU_SQRT,
    CPU_RELU,
    CPU_SIGMOID,
    CPU_TANH,
    CPU_SCALE,
    CPU_UNARY_COUNT
} cpu_unary_op;

/* out[i] = a[i * a_step] OP b[i * b_step], i < n; a step is 0 (a scalar
 * broadcast) or 1. out may be a or b. */
typedef void (*cpu_binary_fn)(float *out, const float *a, size_t a_step, const float *b,
                              size_t b_step, size_t n);
/* out[i] = f(x[i]), i < n; p is SCALE's factor, ignored by the others.
 * out may be x. */
typedef void (*cpu_unary_fn)(float *out, const float *x, size_t n, float p);

/* ---- GEMM ----------------------------------------------------------------- */

/* A register micro-kernel and the packing it reads, after Goto and BLIS.
 * op(A) is packed in panels of mr rows, each kc columns deep, stored k-major
 * (a[k * mr + i]); op(B) in panels of nr columns, b[k * nr + j]. Panels are
 * zero-padded to whole tiles, so the kernel always computes a full mr x nr
 * tile; the driver (gemm.c) copies out the valid part of an edge tile. */
typedef struct cpu_gemm_ukernel {
    size_t mr, nr;     /* register tile                                   */
    size_t mc, kc, nc; /* cache blocks: A block in L2, B panel in L3      */
    /* c[mr x nr] (row stride ldc) = (accumulate ? c : 0) + A panel @ B panel */
    void (*kernel)(size_t kc, const float *a, const float *b, float *c, size_t ldc,
                   bool accumulate, const float *bias);
    /* the same for an edge tile of rows <= mr rows and cols <= nr columns:
     * those rows, and whole vectors of columns covering cols, are written   */
    void (*kernel_part)(size_t rows, size_t cols, size_t kc, const float *a,
                        const float *b, float *c, size_t ldc, bool accumulate,
                        const float *bias);
    /* packs rows [i0, i0+m) and columns [k0, k0+k) of op(a), where a is
     * stored [M,K] (lda), or [K,M] when ta; m <= mc, k <= kc               */
    void (*pack_a)(float *dst, const float *a, size_t lda, bool ta, size_t i0, size_t k0,
                   size_t m, size_t k);
    /* packs rows [k0, k0+k) and columns [j0, j0+n) of op(b), where b is
     * stored [K,N] (ldb), or [N,K] when tb; k <= kc, n <= nc               */
    void (*pack_b)(float *dst, const float *b, size_t ldb, bool tb, size_t k0, size_t j0,
                   size_t k, size_t n);
    /* (optional) c [M,N] = op(a) [M,K] @ b [K,N], a stored [M,K], or [K,M]
     * when ta; N under two vectors, without packing: for the narrow
     * products of a classifier's last layer (forward, and the weight's
     * gradient x^T @ g) packing costs more than the arithmetic              */
    void (*small_n)(size_t M, size_t N, size_t K, const float *a, size_t lda, bool ta,
                    const float *b, size_t ldb, float *c, size_t ldc);
    size_t small_n_max; /* the widest N small_n takes                      */
    /* (optional) columns [n0, n1) of c [1,N] = a [1,K] @ op(b), b stored
     * [K,N] (ldb) or [N,K] when tb, a's elements inca apart (1 with tb);
     * without packing, for products of one row                            */
    void (*gemv)(size_t n0, size_t n1, size_t K, const float *a, size_t inca,
                 const float *b, size_t ldb, bool tb, float *c);
} cpu_gemm_ukernel;

/* The kernels of one ISA for the packed GEMM. */
extern const cpu_gemm_ukernel cpu_gemm_portable;
#if defined(__x86_64__)
extern const cpu_gemm_ukernel cpu_gemm_avx2;
extern const cpu_gemm_ukernel cpu_gemm_avx512;
#endif

/* ---- kernels -------------------------------------------------------------- */

/* sum[i] = a[i * a_step] + b[i * b_step] and relu[i] = max(sum[i], 0) in one
 * pass (an ADD that a RELU reads next, see fuse.c); sum and relu do not
 * overlap, and each is either a or b exactly or does not overlap it. */
typedef void (*cpu_add_relu_fn)(float *sum, float *relu, const float *a, size_t a_step,
                                const float *b, size_t b_step, size_t n);

/* The inner loops an ISA may replace. One table per device, filled once. */
typedef struct cpu_kernels {
    /* "scalar", "avx2", ...: what kiln-info and the device description say */
    const char     *isa;
    /* n f16 or bf16 (dtype) to f32 and back, rounding to nearest even     */
    void (*widen)(float *out, const uint16_t *x, size_t n, kiln_dtype dtype);
    void (*narrow)(uint16_t *out, const float *x, size_t n, kiln_dtype dtype);
    cpu_binary_fn   binary[CPU_BINARY_COUNT];
    cpu_unary_fn    unary[CPU_UNARY_COUNT];
    cpu_add_relu_fn add_relu;
    /* the register kernels and packing of the packed GEMM                  */
    const cpu_gemm_ukernel *gemm;
    /* x[0] + x[stride] + ... (n terms), accumulated in double               */
    double (*sum)(const float *x, size_t n, size_t stride);
    /* acc[j] += x[j], j < n: one row of a reduction over a leading axis     */
    void (*sum_rows)(double *acc, const float *x, size_t n);
    /* c [M,N] (ldc) = (accumulate ? c : 0) + a [M,K] @ b [N,K]^T without
     * packing, each element a dot product along K: for a small output and
     * a long K (conv's weight gradient with a small C*KH*KW)              */
    void (*dot_nt)(float *c, size_t ldc, const float *a, size_t lda, const float *b,
                   size_t ldb, size_t M, size_t N, size_t K, bool accumulate);
    /* the largest of x[0..n), n > 0; NaN if any element is NaN              */
    float (*max)(const float *x, size_t n);
    /* the first index of max(x, n), n > 0 (of the first NaN, if any)       */
    size_t (*argmax)(const float *x, size_t n);
    /* one output row of a max pool: out[j] = the max of x[r*W + j*sw + c]
     * over r < kh, c < kw, j < n; NaN if any of them is                     */
    void (*pool_max_row)(float *out, const float *x, size_t W, size_t n, size_t kh,
                         size_t kw, size_t sw);
    /* where each of those windows' max came from: arg[j] = r*W + c of the
     * first maximum, or of the first NaN (MAX_POOL2D_GRAD); the caller sees
     * that the plane and sw * 64 fit an int32 (gather offsets)            */
    void (*pool_argmax_row)(int32_t *arg, const float *x, size_t W, size_t n, size_t kh,
                            size_t kw, size_t sw);
    /* MAX_POOL2D_GRAD of n windows kh rows by 2 columns at stride 2 along
     * the row (the usual pooling; windows that do not overlap): of the kh
     * rows out, out + W, .. (row stride W), columns [0, 2n), the element
     * at the first maximum of x's window (x[r*W + 2j + c], r < kh, c < 2;
     * the first NaN, if any) gets gy[j] and the others 0: each written once */
    void (*pool_grad_w2)(float *out, const float *gy, const float *x, size_t W, size_t n,
                         size_t kh);
    /* softmax (or log_softmax when as_log) of one row of n; out may be x    */
    void (*softmax_row)(float *out, const float *x, size_t n, bool as_log);
    /* log(sum(exp(x))) of n > 0 values, their max taken out first; NaN if
     * any is NaN or +inf, or all are -inf (as the plain formula gives)      */
    double (*logsumexp)(const float *x, size_t n);
    /* sum of (a[i] - b[i])^2 over n, accumulated in double                  */
    double (*sum_sq_diff)(const float *a, const float *b, size_t n);

    /* -- gradients (in their forward op's file) and optimiser steps
     *    (ops_optim.c); out may
     *    be any of the inputs, element for element                          */
    /* out[i] = gelu(x[i]) (tanh approximation), i < n                      */
    void (*gelu)(float *out, const float *x, size_t n);
    /* out[i] = g[i] * gelu'(x[i]), i < n                                    */
    void (*gelu_grad)(float *out, const float *g, const float *x, size_t n);
    /* one row of n > 0 of LAYER_NORM: (x - mean) / sqrt(var + eps) * w + b,
     * b NULL for none; statistics in double                                 */
    void (*layer_norm_row)(float *out, const float *x, const float *w, const float *b,
                           size_t n, float eps);
    /* one row of n > 0 of LAYER_NORM_GRAD (backend.h)                       */
    void (*layer_norm_grad_row)(float *out, const float *g, const float *x,
                                const float *w, size_t n, float eps);
    /* acc[i] += g[i] * xhat[i], i < n, for one row of n > 0 (the weight's
     * gradient in LAYER_NORM_GRAD_WEIGHT)                                  */
    void (*layer_norm_weight_row)(double *acc, const float *g, const float *x, size_t n,
                                  float eps);
    /* out[i] = v, i < n: EXPAND's broadcast of one element                 */
    void (*fill)(float *out, float v, size_t n);
    /* out[i] = x[i] > 0 ? g[i] : 0, i < n: 0 where x is NaN                 */
    void (*relu_grad)(float *out, const float *g, const float *x, size_t n);
    /* one row of n of SOFTMAX_GRAD, out = y * (g - sum(g * y)), or with
     * as_log of LOG_SOFTMAX_GRAD, out = g - exp(y) * sum(g); sums in double */
    void (*softmax_grad_row)(float *out, const float *g, const float *y, size_t n,
                             bool as_log);
    /* one row of n > 0 of CROSS_ENTROPY_GRAD: out = scale * (softmax(x) -
     * one_hot(label)), label < n                                            */
    void (*cross_entropy_grad_row)(float *out, const float *x, size_t n, size_t label,
                                   float scale);
    /* n elements of an SGD step on p, velocity v; hp = {lr, momentum,
     * weight decay, gradient scale}: d = scale * g + decay * p, ...        */
    void (*sgd_step)(float *p, float *v, const float *g, const float *hp, size_t n);
    /* n elements of an Adam step on p, moments m and v; hp = {lr, beta1,
     * beta2, eps, weight decay added to d, the two bias corrections,
     * shrink, gradient scale}: p *= shrink (AdamW's decay), then Adam with
     * d = scale * g + decay * p (ops_optim.c resolves backend.h's hp)      */
    void (*adam_step)(float *p, float *m, float *v, const float *g, const float *hp,
                      size_t n);
} cpu_kernels;

/* Each family fills its part of the table with portable C. */
void cpu_elementwise_kernels_scalar(cpu_kernels *k);
void cpu_reduce_kernels_scalar(cpu_kernels *k);
void cpu_softmax_kernels_scalar(cpu_kernels *k);
void cpu_loss_kernels_scalar(cpu_kernels *k);
void cpu_matmul_kernels_scalar(cpu_kernels *k);
void cpu_conv_kernels_scalar(cpu_kernels *k);
void cpu_norm_kernels_scalar(cpu_kernels *k);
/* The portable softmax_row, which the portable cross_entropy_grad_row uses. */
void cpu_softmax_row_scalar(float *out, const float *x, size_t n, bool as_log);
void cpu_optim_kernels_scalar(cpu_kernels *k);
#if defined(__x86_64__)
/* An ISA's file overwrites the entries it vectorises. */
void cpu_kernels_avx2(cpu_kernels *k);
void cpu_kernels_avx512(cpu_kernels *k);
#endif

/* ---- ISA and threads (isa.c) ---------------------------------------------- */

typedef enum cpu_isa {
    CPU_ISA_SCALAR = 0,
    CPU_ISA_AVX2,
    CPU_ISA_AVX512,
    CPU_ISA_COUNT
} cpu_isa;

#define CPU_MAX_THREADS 256

typedef struct cpu_isa_choice {
    cpu_isa isa;      /* what runs                                        */
    cpu_isa best;     /* the best the CPU and the OS support              */
    bool    bad_env;  /* KILN_CPU_ISA was set to something unknown        */
    char    why[160]; /* why isa: "capped by KILN_CPU_ISA=avx2; ..."      */
} cpu_isa_choice;

typedef struct cpu_threads_choice {
    int  n;
    bool bad_env; /* KILN_NUM_THREADS was not a count                 */
    char why[96];
} cpu_threads_choice;

const char *cpu_isa_name(cpu_isa isa);  /* "avx2": KILN_CPU_ISA's spelling */
const char *cpu_isa_label(cpu_isa isa); /* "AVX2+FMA": for people          */
bool        cpu_isa_supported(cpu_isa isa);
void        cpu_isa_choose(cpu_isa_choice *choice);
void        cpu_threads_choose(cpu_threads_choice *choice);

/* ---- thread pool (pool.c) ------------------------------------------------- */

typedef struct cpu_pool   cpu_pool;
typedef struct cpu_device cpu_device;

/* One thread's share of a job: tid in [0, nthreads). */
typedef void (*cpu_task_fn)(void *arg, int tid, int nthreads);
/* [lo, hi) of a parallel loop. */
typedef void (*cpu_range_fn)(void *arg, size_t lo, size_t hi);

/* n threads in all: n - 1 workers and the caller. NULL if out of resources,
 * with *error an errno value (ENOMEM, or what pthread_create returned). */
cpu_pool *cpu_pool_new(int n, int *error);
void      cpu_pool_free(cpu_pool *pool);
int       cpu_pool_size(const cpu_pool *pool); /* 1 for NULL */
/* Runs fn on min(n, size) threads, the caller as tid 0, and waits for all.
 * Inside a job it runs fn on the calling thread alone (tid 0 of 1). */
void cpu_pool_run(cpu_pool *pool, int n, cpu_task_fn fn, void *arg);
/* Inside a job of pool, the calling thread's tid in it; -1 outside any job
 * (and for a NULL pool). A GEMM called inside a job runs on its thread
 * alone, with that thread's packing buffers. The plugin keeps no
 * thread-local state: see pool.c. */
int cpu_pool_tid(const cpu_pool *pool);
/* Thread tid's part of [0, n) split in nt, in whole units of align. */
void cpu_split(size_t n, size_t align, int tid, int nt, size_t *lo, size_t *hi);
/* fn over [0, n) on up to one thread per `grain` elements, cut at multiples
 * of align. */
void cpu_parallel_for(const cpu_device *dev, size_t n, size_t align, size_t grain,
                      cpu_range_fn fn, void *arg);

/* ---- device --------------------------------------------------------------- */

/* One thread's packing buffers, allocated at device open and reused. */
typedef struct cpu_pack {
    float *a;     /* mc x kc of op(A)  */
    float *b;     /* kc x nc of op(B)  */
    float *stage; /* a block of a 16-bit A or B in f32, before its packing */
} cpu_pack;

struct cpu_device {
    const kiln_host   *host; /* for errors and logging */
    cpu_kernels        k;
    cpu_isa_choice     isa;
    cpu_threads_choice threads;
    cpu_pool          *pool; /* NULL with one thread   */
    cpu_pack          *pack; /* one per thread         */
};

/* ---- GEMM driver (gemm.c) ------------------------------------------------- */

/* The geometry of a convolution, for packing op(B) straight from an image:
 * B[(c*KH + kh)*KW + kw, oh*OW + ow] = x[c, oh*sh - ph + kh, ow*sw - pw + kw],
 * zero outside x (implicit im2col). */
typedef struct cpu_im2col {
    const float *x; /* one image [C,H,W] */
    size_t       C, H, W, KH, KW, OH, OW, sh, sw, ph, pw;
} cpu_im2col;

typedef struct cpu_gemm_args {
    size_t            M, N, K;
    const float      *a;
    size_t            lda;
    bool              ta;
    const float      *b;
    size_t            ldb;
    bool              tb; /* ignored when im2col is set */
    const cpu_im2col *im2col;
    float            *c;
    size_t            ldc;
    const float      *row_bias;   /* NULL, or c[i,:] += bias[i] */
    bool              accumulate; /* c += a b instead of c = a b (no row_bias) */
    /* A or B in f16 or bf16 (a_type, b_type), read through ah, bh instead of
     * a, b: each block is widened to f32 as it is packed (never im2col)    */
    kiln_dtype      a_type, b_type;
    const uint16_t *ah, *bh;
} cpu_gemm_args;

/* The packed GEMM on the device's threads (on the calling thread alone
 * inside a job, with that thread's buffers). */
void cpu_gemm(const cpu_device *dev, const cpu_gemm_args *g);
/* The packed GEMM on the calling thread, with the buffers of thread tid. */
void cpu_gemm_serial(const cpu_device *dev, int tid, const cpu_gemm_args *g);
/* Allocates dev->pack for the pool's threads and dev->k.gemm's blocks. */
kiln_status cpu_gemm_buffers_alloc(cpu_device *dev);
void        cpu_gemm_buffers_free(cpu_device *dev);

/* Fusion of back-to-back nodes (fuse.c): runs nodes[i] together with the
 * nodes after it that it can fuse, and returns how many it ran, or 0 when
 * there is nothing to fuse (the caller runs nodes[i] alone). nodes[i] has
 * been checked; `checked` says whether a later node passes the same checks. */
typedef bool (*cpu_node_ok_fn)(const kiln_node *node);
size_t cpu_fuse(const cpu_device *dev, const kiln_node *const *nodes, size_t i, size_t n,
                cpu_node_ok_fn checked, kiln_status *status);

/* ---- ops ------------------------------------------------------------------ */

/* Computes one node, writing every element of its output. */
typedef kiln_status (*cpu_op_fn)(const cpu_device *dev, const kiln_node *node);

/* ---- f16 and bf16 (ops_half.c) ---------------------------------------------- */

/* The conversion kernels: F16C's where `vector` and the CPU has it. */
void cpu_half_kernels(cpu_kernels *k, bool vector);
/* n elements between float types, on the device's threads when many. */
void cpu_convert(const cpu_device *dev, void *dst, kiln_dtype dst_dtype, const void *src,
                 kiln_dtype src_dtype, size_t n);
kiln_status cpu_op_cast(const cpu_device *dev, const kiln_node *node);
/* Runs a node with 16-bit float tensors through its f32 kernel: sources
 * widened into scratch, the output rounded back. */
kiln_status cpu_run_widened(const cpu_device *dev, const kiln_node *node,
                            cpu_op_fn kernel);
/* Whether a 16-bit node is elementwise, for cpu_run_chunked: a unary or
 * binary op, RELU_GRAD, GELU or GELU_GRAD, a broadcast source small. */
bool cpu_chunkable(const kiln_node *node);
/* Runs it chunk by chunk through its f32 kernel, converting on the way. */
kiln_status cpu_run_chunked(const cpu_device *dev, const kiln_node *node, cpu_op_fn kernel);

/* Which ops run here (ops.c). Why the device cannot run the node, or NULL:
 * the op table's checks, and with check_storage (a node about to run, not
 * one asked about at compile) its data inside its buffers. */
const char *cpu_check_node(const kiln_node *node, bool check_storage);
/* Runs a node that passed cpu_check_node with its kernel. */
kiln_status cpu_run_node(const cpu_device *dev, const kiln_node *node);
/* Records why node i of a graph_compute cannot run, and returns the status. */
kiln_status cpu_refuse(const cpu_device *dev, size_t i, const kiln_node *node,
                       const char *why);

kiln_status cpu_op_binary(const cpu_device *dev, const kiln_node *node);
kiln_status cpu_op_unary(const cpu_device *dev, const kiln_node *node);
/* An ADD and the RELU of its result, both written, in one pass (fuse.c). */
kiln_status cpu_op_add_relu(const cpu_device *dev, const kiln_node *add,
                            const kiln_node *relu);
kiln_status cpu_op_matmul(const cpu_device *dev, const kiln_node *node);
kiln_status cpu_op_sum_mean(const cpu_device *dev, const kiln_node *node);
kiln_status cpu_op_max(const cpu_device *dev, const kiln_node *node);
kiln_status cpu_op_argmax(const cpu_device *dev, const kiln_node *node);
kiln_status cpu_op_softmax(const cpu_device *dev, const kiln_node *node);
/* CAUSAL_SOFTMAX and CAUSAL_SOFTMAX_GRAD */
kiln_status cpu_op_causal_softmax(const cpu_device *dev, const kiln_node *node);
kiln_status cpu_op_transpose(const cpu_device *dev, const kiln_node *node);
kiln_status cpu_op_permute(const cpu_device *dev, const kiln_node *node);
/* SLICE and SLICE_GRAD */
kiln_status cpu_op_slice(const cpu_device *dev, const kiln_node *node);
/* CAUSAL_ATTENTION and CAUSAL_ATTENTION_GRAD */
kiln_status cpu_op_causal_attention(const cpu_device *dev, const kiln_node *node);
/* STORE_SLICE, in place */
kiln_status cpu_op_store_slice(const cpu_device *dev, const kiln_node *node);
kiln_status cpu_op_conv2d(const cpu_device *dev, const kiln_node *node);
kiln_status cpu_op_max_pool2d(const cpu_device *dev, const kiln_node *node);
/* Whether a CONV2D goes image by image on threads (or on one), so that a
 * RELU and MAX_POOL2D after it can run on each image as it comes out. */
bool cpu_conv2d_fusable(const cpu_device *dev, const kiln_node *conv);
/* A CONV2D, the RELU of its output and (pool not NULL) the MAX_POOL2D of
 * that, image by image, each output written (fuse.c). */
kiln_status cpu_op_conv2d_relu_pool(const cpu_device *dev, const kiln_node *conv,
                                    const kiln_node *relu, const kiln_node *pool);
kiln_status cpu_op_mse_loss(const cpu_device *dev, const kiln_node *node);
kiln_status cpu_op_cross_entropy(const cpu_device *dev, const kiln_node *node);
kiln_status cpu_op_embedding(const cpu_device *dev, const kiln_node *node);

/* gradients (each in its forward op's file) and optimiser steps (ops_optim.c) */
kiln_status cpu_op_sum_to(const cpu_device *dev, const kiln_node *node);
kiln_status cpu_op_expand(const cpu_device *dev, const kiln_node *node);
kiln_status cpu_op_relu_grad(const cpu_device *dev, const kiln_node *node);
kiln_status cpu_op_gelu(const cpu_device *dev, const kiln_node *node);
kiln_status cpu_op_gelu_grad(const cpu_device *dev, const kiln_node *node);
/* LAYER_NORM and LAYER_NORM_GRAD (ops_norm.c) */
kiln_status cpu_op_layer_norm(const cpu_device *dev, const kiln_node *node);
kiln_status cpu_op_layer_norm_grad_weight(const cpu_device *dev, const kiln_node *node);
kiln_status cpu_op_max_grad(const cpu_device *dev, const kiln_node *node);
kiln_status cpu_op_softmax_grad(const cpu_device *dev, const kiln_node *node);
kiln_status cpu_op_conv2d_grad(const cpu_device *dev, const kiln_node *node);
kiln_status cpu_op_max_pool2d_grad(const cpu_device *dev, const kiln_node *node);
/* A MAX_POOL2D_GRAD and the RELU_GRAD of its output, plane by plane, both
 * written (fuse.c). */
kiln_status cpu_op_max_pool2d_relu_grad(const cpu_device *dev, const kiln_node *pool_grad,
                                        const kiln_node *relu_grad);
kiln_status cpu_op_cross_entropy_grad(const cpu_device *dev, const kiln_node *node);
kiln_status cpu_op_embedding_grad(const cpu_device *dev, const kiln_node *node);
kiln_status cpu_op_sgd_step(const cpu_device *dev, const kiln_node *node);
kiln_status cpu_op_adam_step(const cpu_device *dev, const kiln_node *node);

/* ---- convolution geometry -------------------------------------------------- */

/* The sizes of one 2-D convolution, as size_t once checked. */
typedef struct cpu_conv2d_geom {
    size_t N, C, H, W;     /* x [N,C,H,W]                         */
    size_t O, KH, KW;      /* w [O,C,KH,KW]                       */
    size_t OH, OW;         /* y [N,O,OH,OW]                       */
    size_t sh, sw, ph, pw; /* stride, padding (CONV2D's iparam)   */
} cpu_conv2d_geom;

static inline cpu_conv2d_geom cpu_conv2d_geom_of(const int64_t *x, const int64_t *w,
                                                 const int64_t *y, const int32_t *iparam)
{
    cpu_conv2d_geom g = {
        .N  = (size_t)x[0],
        .C  = (size_t)x[1],
        .H  = (size_t)x[2],
        .W  = (size_t)x[3],
        .O  = (size_t)w[0],
        .KH = (size_t)w[2],
        .KW = (size_t)w[3],
        .OH = (size_t)y[2],
        .OW = (size_t)y[3],
        .sh = (size_t)iparam[0],
        .sw = (size_t)iparam[1],
        .ph = (size_t)iparam[2],
        .pw = (size_t)iparam[3],
    };
    return g;
}

/* Elements per thread below which an elementwise op stays on fewer threads:
 * waking a worker costs about what 32 K elements of arithmetic do. */
#define CPU_ELEMENTWISE_GRAIN ((size_t)32768)

/* Rows of `cols` elements per thread, for ops that work row by row. */
size_t cpu_row_grain(size_t cols);

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

static inline const int32_t *cpu_ci32(const kiln_node *node)
{
    return cpu_data(node);
}

/* The larger of m and x, NaN if either is: once NaN, a running max stays NaN
 * (fmaxf would drop it). Written to compile without branches, which random
 * data would mispredict half the time. */
static inline float cpu_max2(float m, float x)
{
    float r = x > m ? x : m;
    return x != x ? x : r;
}

/* The largest of x[0..n), n > 0, NaN if any element is. */
static inline float cpu_row_max(const float *x, size_t n)
{
    float m = x[0];
    for (size_t i = 1; i < n; i++)
        m = cpu_max2(m, x[i]);
    return m;
}

/* Where in a kh x kw window (row stride W) the max came from: r * W + c of
 * the first maximum, or of the first NaN. */
static inline size_t cpu_window_argmax(const float *x, size_t W, size_t kh, size_t kw)
{
    size_t best = 0;
    for (size_t r = 0; r < kh; r++)
        for (size_t c = 0; c < kw; c++) {
            float v = x[r * W + c], m = x[best];
            if (v > m || (v != v && m == m))
                best = r * W + c;
        }
    return best;
}

/* The first index of the largest of x[0..n), n > 0; of the first NaN if any. */
static inline size_t cpu_row_argmax(const float *x, size_t n)
{
    size_t best = 0;
    for (size_t i = 0; i < n; i++) {
        if (x[i] != x[i])
            return i;
        if (x[i] > x[best])
            best = i;
    }
    return best;
}

#endif /* KILN_CPU_IMPL_H */
