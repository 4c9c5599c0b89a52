/* kiln/backend.h — the plugin ABI: what a backend implements.
 *
 * A backend is a shared object that exports exactly one symbol,
 * KILN_BACKEND_ENTRY_SYMBOL, a function returning a const kiln_plugin table.
 * The table starts with abi_version; the loader refuses any other number.
 *
 * Object model (after ggml-backend): plugin -> device -> buffer. A device is a
 * table of function pointers plus an opaque context; a buffer is an opaque
 * handle the device allocated. An entry marked (optional) may be NULL, and
 * NULL means "not supported". A backend sees this header and kiln.h, nothing
 * of kiln's core.
 *
 * Threading: kiln calls a device from one thread at a time.
 */
#ifndef KILN_BACKEND_H
#define KILN_BACKEND_H

#include <kiln/kiln.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Bumped on any change to the structs or enums below. */
#define KILN_BACKEND_ABI_VERSION 6

#define KILN_BACKEND_ENTRY_SYMBOL "kiln_backend_entry"

#define KILN_MAX_SRC    6
#define KILN_MAX_IPARAM 8
#define KILN_MAX_FPARAM 4

/* What a node computes. Parameters live in kiln_node.iparam / fparam. */
typedef enum kiln_op {
    KILN_OP_LEAF = 0, /* input, param or constant: never dispatched       */
    KILN_OP_RESHAPE,  /* a view of src[0]'s storage: never dispatched     */

    /* binary, f32: out[i] = a[i % numel(a)] OP b[i % numel(b)]; the output has
     * the shape of the larger operand and the smaller one's numel divides it */
    KILN_OP_ADD,
    KILN_OP_SUB,
    KILN_OP_MUL,
    KILN_OP_DIV,

    /* unary, f32, same shape */
    KILN_OP_NEG,
    KILN_OP_EXP,
    KILN_OP_LOG,
    KILN_OP_SQRT,
    KILN_OP_RELU,
    KILN_OP_SIGMOID,
    KILN_OP_TANH,
    KILN_OP_SCALE, /* fparam[0]: the factor                            */

    /* op(a) [..., M, K] @ op(b) [..., K, N]; iparam[0]: transpose a (stored
     * [..., K, M]), iparam[1]: transpose b (stored [..., N, K]). a, b and the
     * output have one ndim, 2 to 4; with 3 or 4 the leading (batch) axes are
     * the same in all three and each batch entry is one product            */
    KILN_OP_MATMUL,

    /* iparam[0]: an axis in [0, ndim) of src[0], or -1 for every element;
     * the output shape says whether the axis is kept with size 1            */
    KILN_OP_SUM,
    KILN_OP_MEAN,

    /* along the last axis of src[0]; a NaN in a row wins (max and argmax
     * give the first NaN, as NumPy and PyTorch do)                           */
    KILN_OP_MAX,
    KILN_OP_ARGMAX, /* output i32                                       */
    KILN_OP_SOFTMAX,
    KILN_OP_LOG_SOFTMAX,

    KILN_OP_TRANSPOSE, /* 2-D                                              */

    /* src: x [N,C,H,W], w [O,C,KH,KW], bias [O] or NULL;
     * iparam: stride_h, stride_w, pad_h, pad_w                                */
    KILN_OP_CONV2D,
    /* iparam: kernel_h, kernel_w, stride_h, stride_w                          */
    KILN_OP_MAX_POOL2D,

    KILN_OP_MSE_LOSS, /* mean((pred - target)^2), equal shapes; a scalar  */
    /* src: logits [..., C] f32, labels [...] i32 (the logits' shape without
     * the last axis); the mean over every row of logsumexp - the labelled
     * logit, a scalar. A label outside [0, C) is an error at run time. */
    KILN_OP_CROSS_ENTROPY,

    /* ---- gradients (appended by kiln_backward) ---------------------------- */

    /* out[j] = sum of src[0][i] over every i with i % numel(out) == j: the
     * gradient of an operand that a binary op broadcast                     */
    KILN_OP_SUM_TO,
    /* the inverse of a reduction: iparam[0] is an axis of the output, or -1;
     * src[0] has the output's shape without that axis (or with it of size 1)
     * and is repeated along it; with -1 src[0] is one element, repeated     */
    KILN_OP_EXPAND,
    KILN_OP_RELU_GRAD, /* src: g, x: g where x > 0, else 0                 */
    /* src: g [R], x [R, C] (R = numel / C rows of the last axis): out has x's
     * shape, g[r] at the first maximum of row r (a NaN counts as the
     * maximum, as in MAX), 0 elsewhere                                      */
    KILN_OP_MAX_GRAD,
    KILN_OP_SOFTMAX_GRAD,     /* src: g, y = softmax(x): y * (g - sum(g * y))     */
    KILN_OP_LOG_SOFTMAX_GRAD, /* src: g, y = log_softmax(x): g - exp(y) * sum(g)
                            * (sums along the last axis, per row)            */
    /* src: gy [N,O,OH,OW], w [O,C,KH,KW]; out: the gradient for x, whose
     * dims are node->dims; iparam as CONV2D                                 */
    KILN_OP_CONV2D_GRAD_INPUT,
    /* src: gy [N,O,OH,OW], x [N,C,H,W]; out: the gradient for w, dims
     * node->dims; iparam as CONV2D                                          */
    KILN_OP_CONV2D_GRAD_WEIGHT,
    /* src: gy [N,C,OH,OW], x [N,C,H,W]; out has x's shape: each gy goes to
     * the first maximum of its window; overlapping windows add up; iparam
     * as MAX_POOL2D                                                         */
    KILN_OP_MAX_POOL2D_GRAD,
    /* src: g (one element), logits [..., C], labels [...] i32; out has the
     * logits' shape: g * (softmax(logits) - one_hot(labels)) / N, N the
     * number of rows; labels checked as in CROSS_ENTROPY                    */
    KILN_OP_CROSS_ENTROPY_GRAD,

    /* ---- transformer ops ---------------------------------------------------- */

    /* unary, f32, same shape: GELU, tanh approximation,
     *   0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)));
     * +inf gives +inf, -inf gives 0 (the limits), NaN gives NaN            */
    KILN_OP_GELU,
    /* src: g, x (equal numel): g * gelu'(x); 0 where gelu' is 0 (x = -inf),
     * g where it is 1 (x = +inf)                                            */
    KILN_OP_GELU_GRAD,
    /* src: x [..., C], weight [C], bias [C] or NULL; fparam[0]: eps >= 0.
     * Along the last axis, each row r: (x - mean) / sqrt(var + eps) * weight
     * + bias, var the biased variance (PyTorch's LayerNorm); x's shape      */
    KILN_OP_LAYER_NORM,
    /* src: g, x [..., C], weight [C]; fparam[0]: eps. The gradient for x:
     * rstd * (g w - mean(g w) - xhat * mean(g w xhat)) per row, with
     * xhat = (x - mean) * rstd, rstd = 1 / sqrt(var + eps); x's shape       */
    KILN_OP_LAYER_NORM_GRAD,
    /* src: g, x [..., C]; fparam[0]: eps. Out [C]: the gradient for weight,
     * sum over rows of g * xhat (the bias's is SUM_TO of g)                 */
    KILN_OP_LAYER_NORM_GRAD_WEIGHT,

    /* ---- attention's shape ops (before the steps, whose values the
     * in-tree backends' tables only name) ------------------------------- */

    /* out = src[0] with its axes permuted, contiguous: out's axis d is the
     * source's axis iparam[d], d < ndim (up to 4); the gradient is the
     * inverse permutation                                                   */
    KILN_OP_PERMUTE,
    /* out = src[0] along axis iparam[0] from iparam[1] (start, >= 0) for the
     * output's dims[axis] (the length), contiguous; the other axes as src  */
    KILN_OP_SLICE,
    /* SLICE's gradient: src g has the slice's shape; out (x's shape) is 0
     * but for g at [start, start + length) along the axis; iparam as SLICE */
    KILN_OP_SLICE_GRAD,

    /* ---- optimiser steps: in place, the output IS src[0] (same buffer and
     * offset); they may also update the state tensors named below -------- */

    /* Both steps may have one more source, last: s, f32 [1], the sum of the
     * squares of every gradient the optimiser steps with, for clipping by
     * the global norm (kiln_clip_grad_norm). With s and max_norm > 0, the
     * gradient is first scaled by min(1, max_norm / (sqrt(s) + 1e-6)), as
     * torch.nn.utils.clip_grad_norm_ does; without s, or with max_norm 0,
     * it is used as it is.
     * ABI 6, loss scaling (kiln_loss_scale): a non-zero `unscale` multiplies
     * every gradient first (s then being the scaled gradients' sum, the norm
     * is sqrt(s) * unscale); with `skip` non-zero and s not finite (a
     * gradient overflowed), the step changes nothing: neither the parameter
     * nor its state.                                                        */

    /* src: param, grad, velocity (param's shape), hp f32 [8] =
     * {lr, momentum, weight_decay, max_norm, unscale, skip, 0, 0}[, s]:
     *   d = grad + weight_decay * param;  velocity = momentum * velocity + d;
     *   param -= lr * velocity                   (PyTorch SGD, dampening 0) */
    KILN_OP_SGD_STEP,
    /* src: param, grad, m, v (param's shape), hp f32 [12] =
     * {lr, beta1, beta2, eps, weight_decay, 1/(1-beta1^t), 1/(1-beta2^t),
     *  decoupled, max_norm, unscale, skip, 0}[, s]:
     *   decoupled 0 (PyTorch Adam): d = grad + weight_decay * param;
     *   decoupled 1 (PyTorch AdamW): d = grad, and first
     *     param *= 1 - lr * weight_decay;
     *   m = beta1 * m + (1 - beta1) * d;  v = beta2 * v + (1 - beta2) * d^2;
     *   param -= lr * (m * hp[5]) / (sqrt(v * hp[6]) + eps)                */
    KILN_OP_ADAM_STEP,

    /* ---- transformers (ABI 4) ---------------------------------------------- */

    /* src: table [V, C] f32, ids [...] i32; out [..., C]: out[p] = table[ids[p]]
     * for each position p of ids. An id outside [0, V) is an error at run
     * time naming the id, its position and V, as labels are in
     * CROSS_ENTROPY (the OpenCL device reports it at synchronize, after
     * writing NaN to that position's row).                                   */
    KILN_OP_EMBEDDING,
    /* src: g [..., C], ids [...] i32; out [V, C] (node->dims): out[v] = the sum
     * of g[p] over every position p with ids[p] == v, 0 where there is none
     * (the gradient of EMBEDDING's table); ids checked as in EMBEDDING      */
    KILN_OP_EMBEDDING_GRAD,
    /* x [..., T, T] f32, same shape; fparam[0]: scale. Along the last axis,
     * row i of each T x T matrix is softmax(scale * x[i, 0..i]) in columns
     * j <= i and exactly 0 in columns j > i (as if those were -inf).
     * ABI 5: an optional src[1], offset i32 [1] (a key/value cache's
     * position), shifts the mask: x is [..., Tq, Tk], row i keeps columns
     * j <= i + offset[0] (none when that is negative: the row is all 0). */
    KILN_OP_CAUSAL_SOFTMAX,
    /* src: g, y = causal_softmax(x)[, offset as above, src[2]]; fparam[0]:
     * scale. Per row, over its kept columns j: scale * y * (g - sum_j(g *
     * y)); 0 in the others.                                                  */
    KILN_OP_CAUSAL_SOFTMAX_GRAD,

    /* ---- key/value caches (ABI 5) ----------------------------------------- */

    /* In place, the output IS src[0]: src: dst [...] f32, value (dst's shape
     * but for axis iparam[0], of any length n), start i32 [1]. Writes value
     * into dst along the axis at [start[0], start[0] + n); the rest of dst
     * is kept. A start outside [0, dims[axis] - n] is an error at run time
     * naming it (the OpenCL device reports it at synchronize, writing
     * nothing).                                                              */
    KILN_OP_STORE_SLICE,

    /* ---- fused causal attention (ABI 5) ----------------------------------- */

    /* src: qkv [B, T, 3C] f32 (GPT-2's fused projection: q, k, v side by
     * side, each C = H * D wide, head h at columns h*D of each); iparam[0]:
     * H (> 0, dividing C); fparam[0]: scale (finite). out [B, T, C]: for
     * each b, h and t, out[b, t, hD..hD+D) = sum over j <= t of
     * softmax_j(scale * q_t . k_j) v_j. No [T, T] matrix is kept.           */
    KILN_OP_CAUSAL_ATTENTION,
    /* src: g [B, T, C], qkv [B, T, 3C]; iparam and fparam as above. out
     * [B, T, 3C]: the gradient of CAUSAL_ATTENTION for qkv (the softmax is
     * recomputed from qkv).                                                  */
    KILN_OP_CAUSAL_ATTENTION_GRAD,

    /* ---- 16-bit floats (ABI 6) -------------------------------------------- */

    /* src[0] of one float type converted to the output's (f32, f16, bf16),
     * same shape: round to nearest, ties to even; NaN and Inf kept.         */
    KILN_OP_CAST,

    KILN_OP_COUNT
} kiln_op;

/* The op's name as kiln spells it in messages and KILN_DEBUG_REFUSE
 * ("matmul", "conv2d_grad_input"), or "unknown op". From libkiln: a program
 * that links it may call this; a plugin, which is loaded by libkiln but does
 * not link it, names ops itself. */
KILN_API const char *kiln_op_name(kiln_op op);

/* One tensor of a compiled graph, as a backend sees it. Data lives at `offset`
 * bytes into `buffer`, a handle the device's buffer_alloc returned; the extent
 * is contiguous, row-major, numel elements of 4 bytes (f32, i32) or, from
 * ABI 6, 2 bytes (f16, bf16: the ops that take a float type take these as
 * well, computing in f32, unless the op table says f32). Every
 * element of the output must be written: buffers are not zeroed, and storage
 * is reused between nodes. A node's output never overlaps its sources,
 * except that an in-place op's output (an optimiser step's, STORE_SLICE's)
 * is its src[0]. */
typedef struct kiln_node {
    kiln_op                 op;
    kiln_dtype              dtype;
    int32_t                 ndim;
    int64_t                 dims[KILN_MAX_DIMS];
    int64_t                 numel;
    const struct kiln_node *src[KILN_MAX_SRC]; /* unused ones are NULL */
    int32_t                 iparam[KILN_MAX_IPARAM];
    float                   fparam[KILN_MAX_FPARAM];
    void                   *buffer;
    size_t                  offset;
    const char             *name; /* may be NULL          */
} kiln_node;

/* What kiln offers a plugin; valid from init to shutdown. */
typedef struct kiln_host {
    uint32_t abi_version;
    /* a message at a level; nothing is printed above the KILN_LOG level */
    void (*log)(kiln_log_level level, const char *fmt, ...)
        __attribute__((format(printf, 2, 3)));
    /* sets kiln_last_error() for the call that is failing; returns the status
     * so a backend can write `return host->error(KILN_ERR_BACKEND, ...)` */
    kiln_status (*error)(kiln_status status, const char *fmt, ...)
        __attribute__((format(printf, 2, 3)));
} kiln_host;

/* A device: what runs a graph. Every entry gets the device's context. */
typedef struct kiln_device_iface {
    /* allocate size bytes (size may be 0); the handle is stored in nodes     */
    kiln_status (*buffer_alloc)(void *dev, size_t size, void **buffer);
    void (*buffer_free)(void *dev, void *buffer);
    /* copy between host memory and [offset, offset + size) of a buffer,
     * ordered after the work already queued and before what is queued next.
     * buffer_read's copy is complete on return; buffer_write's source may be
     * reused on return, but the device may still be writing its copy (the
     * OpenCL backend queues small writes from a copy of its own, so that the
     * host does not wait for them).                                          */
    kiln_status (*buffer_write)(void *dev, void *buffer, size_t offset, const void *src,
                                size_t size);
    kiln_status (*buffer_read)(void *dev, void *buffer, size_t offset, void *dst,
                               size_t size);
    /* whether the device runs this node with these shapes and dtypes        */
    bool (*supports_op)(void *dev, const kiln_node *node);
    /* run the nodes in order; each one's sources are complete before it     */
    kiln_status (*graph_compute)(void *dev, const kiln_node *const *nodes,
                                 size_t n_nodes);
    /* (optional) wait until everything queued has finished                 */
    kiln_status (*synchronize)(void *dev);
    void (*free)(void *dev);
} kiln_device_iface;

typedef struct kiln_device {
    const kiln_device_iface *iface;
    void                    *context;
} kiln_device;

/* What a device is, for listings and selection. */
typedef struct kiln_device_desc {
    char             name[128];        /* "AVX-512 CPU"                      */
    char             description[256]; /* platform, version, threads ...     */
    kiln_device_type type;
    uint64_t         memory; /* bytes, 0 if unknown                */
    /* (ABI 5) the largest buffer buffer_alloc takes, or 0 for no limit below
     * memory: kiln plans a graph's storage in buffers of at most this size  */
    uint64_t max_alloc;
    int      compute_units;
    /* empty if kiln can use the device, else why not                        */
    char unusable[256];
    /* what the device can do, as space-separated key=value words for
     * programs to read (kiln-info --json): "isa=avx2 isas=[avx2,scalar]".
     * A value is yes or no, a decimal integer, [a,b,...] (a list), or a
     * word; keys are lower case with underscores. May be empty.           */
    char capabilities[512];
} kiln_device_desc;

typedef struct kiln_plugin {
    uint32_t    abi_version; /* KILN_BACKEND_ABI_VERSION                    */
    const char *name;        /* "cpu": what KILN_BACKEND names              */
    const char *description;
    /* 0: cannot run on this machine; otherwise higher is preferred (a GPU
     * above kiln's CPU backend above an OpenCL CPU device). Cheap, no state. */
    int (*probe)(const kiln_host *host);
    /* called once after a non-zero probe, before anything below             */
    kiln_status (*init)(const kiln_host *host);
    /* (optional) release what init acquired                                 */
    void (*shutdown)(void);
    int (*device_count)(void);
    kiln_status (*device_desc)(int index, kiln_device_desc *desc);
    kiln_status (*device_open)(int index, kiln_device *device);
} kiln_plugin;

typedef const kiln_plugin *(*kiln_backend_entry_fn)(void);

/* The one symbol a plugin exports; define it with KILN_BACKEND_ENTRY. */
const kiln_plugin *kiln_backend_entry(void);

/* A plugin defines its entry with this, so the one exported symbol is right:
 *   KILN_BACKEND_ENTRY { return &my_plugin; }                                 */
#ifdef __GNUC__
#define KILN_BACKEND_ENTRY \
    __attribute__((visibility("default"))) const kiln_plugin *kiln_backend_entry(void)
#else
#define KILN_BACKEND_ENTRY const kiln_plugin *kiln_backend_entry(void)
#endif

#ifdef __cplusplus
}
#endif

#endif /* KILN_BACKEND_H */
