/* kiln — a cross-vendor compute library.
 *
 * A program builds a graph of tensor operations once, compiles it, and runs it
 * as often as it likes on the backend selected at run time (KILN_BACKEND).
 *
 *   kiln_context *ctx = kiln_context_new();
 *   kiln_graph   *g   = kiln_graph_new(ctx);
 *   kiln_tensor  *x   = kiln_input(g, "x", KILN_F32, KILN_SHAPE(4, 3));
 *   kiln_tensor  *w   = kiln_param(g, "w", KILN_SHAPE(3, 2));
 *   kiln_tensor  *y   = kiln_relu(g, kiln_matmul(g, x, w));
 *   kiln_output(g, y);
 *   if (kiln_graph_compile(g) != KILN_OK) puts(kiln_graph_error(g));
 *   kiln_tensor_write(x, xs, sizeof xs); kiln_tensor_write(w, ws, sizeof ws);
 *   kiln_graph_run(g);
 *   kiln_tensor_read(y, ys, sizeof ys);
 *
 * Errors: every fallible call returns kiln_status (or NULL) and leaves a message
 * in kiln_last_error() (per thread). Op constructors never fail loudly: a bad
 * call records a sticky error on the graph, naming the op, the shapes and what
 * was expected, and returns a poisoned tensor, so calls can be chained and the
 * graph checked once (kiln_graph_error, or the status of kiln_graph_compile).
 */
#ifndef KILN_KILN_H
#define KILN_KILN_H

/* The version of this header (MAJOR.MINOR.PATCH, semantic versioning). The
 * one place it is written: configure.ac reads it from these lines, and
 * kiln_version() returns the string the library was built with. */
#define KILN_VERSION_MAJOR  0
#define KILN_VERSION_MINOR  1
#define KILN_VERSION_PATCH  0
#define KILN_VERSION_STRING "0.1.0"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(KILN_BUILDING_LIBRARY) && defined(__GNUC__)
#define KILN_API __attribute__((visibility("default")))
#else
#define KILN_API
#endif

/* Tensors have at most this many dimensions; 0 dimensions is a scalar. */
#define KILN_MAX_DIMS 4

/* KILN_SHAPE(64, 784) expands to the (ndim, dims) pair the constructors take. */
#define KILN_SHAPE(...)                                                                \
    (int)(sizeof((const int64_t[]){__VA_ARGS__}) / sizeof(int64_t)), (const int64_t[]) \
    {                                                                                  \
        __VA_ARGS__                                                                    \
    }

/* ---- status and errors -------------------------------------------------- */

typedef enum kiln_status {
    KILN_OK = 0,
    KILN_ERR_INVALID_ARG, /* a value outside what the call accepts          */
    KILN_ERR_SHAPE,       /* shapes or dtypes that do not fit the op         */
    KILN_ERR_STATE,       /* call out of order (e.g. run before compile)     */
    KILN_ERR_NO_MEMORY,   /* host or device allocation failed                */
    KILN_ERR_BACKEND,     /* a backend or device reported a failure          */
    KILN_ERR_NOT_FOUND,   /* no plugin or device matches what was asked for  */
    KILN_ERR_IO,          /* a file could not be read or written             */
} kiln_status;

/* The version of the library loaded at run time, "MAJOR.MINOR.PATCH": the
 * KILN_VERSION_STRING it was built with, which a program can compare with
 * the one it was compiled against. */
KILN_API const char *kiln_version(void);

/* The directory searched for plugins after KILN_PLUGIN_PATH. */
KILN_API const char *kiln_plugin_dir(void);

/* The name of a status code, e.g. "KILN_ERR_SHAPE". */
KILN_API const char *kiln_status_name(kiln_status status);

/* The message of the last failed call on this thread ("" if none). */
KILN_API const char *kiln_last_error(void);

typedef enum kiln_log_level {
    KILN_LOG_ERROR = 0,
    KILN_LOG_WARN,
    KILN_LOG_INFO,
    KILN_LOG_DEBUG,
} kiln_log_level;

/* ---- plugins and devices ------------------------------------------------ */

typedef enum kiln_device_type {
    KILN_DEVICE_CPU = 0,
    KILN_DEVICE_GPU,
    KILN_DEVICE_ACCELERATOR,
} kiln_device_type;

/* One attempt of the loader to use a file it found. */
typedef struct kiln_plugin_report {
    const char *path;      /* the file                                       */
    const char *name;      /* backend name ("cpu"), NULL if never read       */
    const char *reason;    /* why it was refused; NULL if usable             */
    int         score;     /* probe score, 0 if refused                      */
    int         n_devices; /* devices it offers                              */
} kiln_plugin_report;

/* A device of a usable plugin. */
typedef struct kiln_device_report {
    const char      *backend;     /* plugin name                             */
    int              index;       /* index within that plugin                */
    const char      *name;        /* e.g. "AVX-512 CPU"                      */
    const char      *description; /* one line of details                     */
    kiln_device_type type;
    uint64_t         memory; /* bytes, 0 if unknown                     */
    int              compute_units;
    const char      *unusable; /* NULL if kiln can use it, else why not   */
    /* "key=value ..." words (<kiln/backend.h>, kiln_device_desc): what the
     * device can do, for programs; "" when the backend says nothing.      */
    const char *capabilities;
} kiln_device_report;

/* Loads the plugins (on first use) and lists every attempt, usable or
 * refused, in discovery order. The array lives until the process ends.
 * Loading that ran out of memory is tried again by the next call that needs
 * the plugins (this one, kiln_devices, kiln_select, kiln_context_new): when
 * kiln could not list the plugins at all, this returns 0 with the reason in
 * kiln_last_error(); a plugin refused for lack of memory says so in its
 * reason, and the next call may return a new array in which it loaded. */
KILN_API size_t kiln_plugins(const kiln_plugin_report **reports);

/* Lists the devices of every usable plugin. The array lives as above; a
 * later array lists the same devices first, at the same indices. */
KILN_API size_t kiln_devices(const kiln_device_report **devices);

/* Resolves a selection string in KILN_BACKEND syntax ("cpu", "opencl:1",
 * "opencl:nvidia", "opencl,cpu"); NULL or "" means the highest probe score.
 * On success *device is an index into kiln_devices(). On failure the message
 * lists what is available. */
KILN_API kiln_status kiln_select(const char *spec, size_t *device);

/* ---- context ------------------------------------------------------------ */

typedef struct kiln_context kiln_context;

/* A context on the device KILN_BACKEND selects (see kiln_select). */
KILN_API kiln_context *kiln_context_new(void);

/* A context on the device `spec` selects, ignoring KILN_BACKEND. */
KILN_API kiln_context *kiln_context_new_for(const char *spec);

KILN_API void kiln_context_free(kiln_context *ctx);

/* "cpu:0 (scalar CPU, 1 thread)" — which backend and device the context runs. */
KILN_API const char *kiln_context_device(const kiln_context *ctx);

/* The device the context runs, as an index into kiln_devices() (the same
 * index kiln_select gave for its selection), so a program can read the
 * device's report instead of selecting again. */
KILN_API kiln_status kiln_context_device_index(const kiln_context *ctx, size_t *device);

/* ---- tensors and graphs ------------------------------------------------- */

/* Element types. f16 is IEEE 754 binary16 and bf16 the upper half of an f32
 * (bfloat16), each stored as 2 bytes: kiln_tensor_write and kiln_tensor_read
 * take their bits (uint16_t), and kiln_convert turns them to and from f32.
 * Ops on f16 and bf16 tensors read and write that type and compute in f32
 * (a product accumulates in f32); an op's float operands must share one
 * type (kiln_cast changes it). Parameters and optimiser state are f32. */
typedef enum kiln_dtype {
    KILN_F32  = 0,
    KILN_I32  = 1,
    KILN_F16  = 2,
    KILN_BF16 = 3,
} kiln_dtype;

/* "f32", "i32", "f16", "bf16", or "unknown" for a value outside kiln_dtype. */
KILN_API const char *kiln_dtype_name(kiln_dtype dtype);
/* Bytes per element (4 or 2), or 0 for a value outside kiln_dtype. */
KILN_API size_t kiln_dtype_size(kiln_dtype dtype);
/* Converts n elements between f32, f16 and bf16 (or copies one type):
 * round to nearest, ties to even; NaN and Inf kept, values past f16's range
 * become Inf. dst may be src itself when dst's type is no wider (narrowing
 * in place); otherwise they must not overlap. KILN_ERR_INVALID_ARG for i32
 * or a value outside kiln_dtype, naming it. */
KILN_API kiln_status kiln_convert(void *dst, kiln_dtype dst_dtype, const void *src,
                                  kiln_dtype src_dtype, size_t n);

typedef struct kiln_graph  kiln_graph;
typedef struct kiln_tensor kiln_tensor;

KILN_API kiln_graph *kiln_graph_new(kiln_context *ctx);
KILN_API void        kiln_graph_free(kiln_graph *g);

/* The first error recorded while building or compiling, or NULL. */
KILN_API const char *kiln_graph_error(const kiln_graph *g);
KILN_API kiln_status kiln_graph_status(const kiln_graph *g);

/* Leaves. Shapes are given as (ndim, dims); KILN_SHAPE(...) writes both for
 * 1 to 4 dimensions, and a scalar is (0, NULL). Names may be NULL. */
KILN_API kiln_tensor *kiln_input(kiln_graph *g, const char *name, kiln_dtype dtype,
                                 int ndim, const int64_t *dims);
/* A trainable f32 parameter; its value persists across runs. Parameter names
 * must be unique within a graph: weight files identify tensors by name. */
KILN_API kiln_tensor *kiln_param(kiln_graph *g, const char *name, int ndim,
                                 const int64_t *dims);
/* A constant; `data` (numel elements of dtype) is copied. */
KILN_API kiln_tensor *kiln_const(kiln_graph *g, kiln_dtype dtype, int ndim,
                                 const int64_t *dims, const void *data);
KILN_API kiln_tensor *kiln_scalar(kiln_graph *g, float value);

/* Elementwise binary ops. Shapes must be equal, or one side must broadcast:
 * after dropping its leading 1s, its shape equals the trailing dimensions of
 * the other (a bias [N] on [M, N]; a scalar on anything). */
KILN_API kiln_tensor *kiln_add(kiln_graph *g, kiln_tensor *a, kiln_tensor *b);
KILN_API kiln_tensor *kiln_sub(kiln_graph *g, kiln_tensor *a, kiln_tensor *b);
KILN_API kiln_tensor *kiln_mul(kiln_graph *g, kiln_tensor *a, kiln_tensor *b);
KILN_API kiln_tensor *kiln_div(kiln_graph *g, kiln_tensor *a, kiln_tensor *b);

/* Elementwise unary ops (f32). */
KILN_API kiln_tensor *kiln_neg(kiln_graph *g, kiln_tensor *a);
KILN_API kiln_tensor *kiln_exp(kiln_graph *g, kiln_tensor *a);
KILN_API kiln_tensor *kiln_log(kiln_graph *g, kiln_tensor *a);
KILN_API kiln_tensor *kiln_sqrt(kiln_graph *g, kiln_tensor *a);
KILN_API kiln_tensor *kiln_relu(kiln_graph *g, kiln_tensor *a);
KILN_API kiln_tensor *kiln_sigmoid(kiln_graph *g, kiln_tensor *a);
KILN_API kiln_tensor *kiln_tanh(kiln_graph *g, kiln_tensor *a);
KILN_API kiln_tensor *kiln_scale(kiln_graph *g, kiln_tensor *a, float s);
/* GELU, tanh approximation (PyTorch's approximate="tanh", GPT-2's):
 * 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))). Saturates for large |x|
 * (x for large x, 0 for large negative x, -inf included); NaN stays NaN. */
KILN_API kiln_tensor *kiln_gelu(kiln_graph *g, kiln_tensor *a);

/* a converted to a float type (KILN_F32, KILN_F16 or KILN_BF16), rounding to
 * nearest even; a itself when it already has that type. Its gradient is
 * cast back to a's type. */
KILN_API kiln_tensor *kiln_cast(kiln_graph *g, kiln_tensor *a, kiln_dtype dtype);

/* Matrix product a @ b, [M, K] @ [K, N] -> [M, N]. Batched: a and b 3-D or
 * 4-D with the same leading (batch) axes, [..., M, K] @ [..., K, N] ->
 * [..., M, N], one product per batch entry (torch.matmul without
 * broadcasting: reshape a [B, T, C] to [B*T, C] to multiply it by [C, N]). */
KILN_API kiln_tensor *kiln_matmul(kiln_graph *g, kiln_tensor *a, kiln_tensor *b);
/* As kiln_matmul, with a and/or b read transposed (the last two axes of
 * each batch entry swapped: a stored [..., K, M], b stored [..., N, K]). */
KILN_API kiln_tensor *kiln_matmul_t(kiln_graph *g, kiln_tensor *a, kiln_tensor *b,
                                    bool transpose_a, bool transpose_b);

/* Reductions. Without an axis, over every element to a scalar (0-d tensor).
 * With one, over that axis (negative counts from the end); keepdim leaves it
 * in the shape with size 1. The mean of nothing is NaN, the sum 0. */
KILN_API kiln_tensor *kiln_sum(kiln_graph *g, kiln_tensor *a);
KILN_API kiln_tensor *kiln_mean(kiln_graph *g, kiln_tensor *a);
KILN_API kiln_tensor *kiln_sum_axis(kiln_graph *g, kiln_tensor *a, int axis,
                                    bool keepdim);
KILN_API kiln_tensor *kiln_mean_axis(kiln_graph *g, kiln_tensor *a, int axis,
                                     bool keepdim);
/* Along the last axis, which is dropped from the shape. argmax gives i32, the
 * first index of the maximum. The last axis must not be empty. */
KILN_API kiln_tensor *kiln_max(kiln_graph *g, kiln_tensor *a);
KILN_API kiln_tensor *kiln_argmax(kiln_graph *g, kiln_tensor *a);
/* Along the last axis, numerically stable (the row maximum is subtracted). */
KILN_API kiln_tensor *kiln_softmax(kiln_graph *g, kiln_tensor *a);
KILN_API kiln_tensor *kiln_log_softmax(kiln_graph *g, kiln_tensor *a);
/* Causal (masked) softmax for attention: x [..., T, T] (at least 2-D; the
 * leading axes are batch and heads), same shape. Row i of each T x T matrix
 * is softmax(scale * x[i, 0..i]) in columns j <= i and exactly 0 in columns
 * j > i, which are never read. scale is usually 1 / sqrt(head_dim); it must
 * be finite. */
KILN_API kiln_tensor *kiln_causal_softmax(kiln_graph *g, kiln_tensor *x, float scale);
/* The same for incremental decoding, where the queries are the last Tq of
 * the keys' positions: x [..., Tq, Tk] and offset an i32 [1] tensor whose
 * value, read at run time, shifts the mask: row i keeps columns
 * j <= i + offset (a row that keeps none is all 0). With a key/value cache
 * of Tk positions holding p + 1 valid ones and the query at position p,
 * Tq = 1 and offset = p. Differentiable in x. */
KILN_API kiln_tensor *kiln_causal_softmax_offset(kiln_graph *g, kiln_tensor *x,
                                                 float scale, kiln_tensor *offset);

/* Causal self-attention in one op, from GPT-2's fused projection: qkv
 * [B, T, 3C] holds q, k and v side by side, each of `heads` heads of
 * D = C / heads columns. Gives y [B, T, C] whose head h at position t is
 * sum over j <= t of softmax_j(scale * q_t . k_j) v_j (scale usually
 * 1 / sqrt(D)): what kiln_slice, kiln_permute, kiln_matmul_t,
 * kiln_causal_softmax and kiln_matmul compute, without the [T, T] matrix of
 * each head, the masked half of the products, or the copies. Differentiable
 * in qkv (the softmax is recomputed in the backward pass). */
KILN_API kiln_tensor *kiln_causal_attention(kiln_graph *g, kiln_tensor *qkv, int heads,
                                            float scale);

/* Embedding lookup: table [V, C] f32, ids [...] i32 (up to 3 axes) ->
 * [..., C], row ids[p] of the table at each position p. An id outside
 * [0, V) is never read: kiln_graph_run fails naming the id, its position
 * and V. Differentiable with respect to the table (repeated ids add up). */
KILN_API kiln_tensor *kiln_embedding(kiln_graph *g, kiln_tensor *table, kiln_tensor *ids);

/* Layer normalisation over the last axis (torch.nn.functional.layer_norm with
 * normalized_shape [C]): x [..., C] f32, any leading dimensions; weight [C];
 * bias [C] or NULL (none). Each row r of C elements becomes
 * (x - mean_r) / sqrt(var_r + eps) * weight + bias, var_r the biased
 * variance (divided by C); eps >= 0 and finite (GPT-2 uses 1e-5). The
 * statistics are taken in two passes, in double where the backend has it,
 * so that rows far from 0 keep their precision. The last axis must not be
 * empty. Differentiable in x, weight and bias. */
KILN_API kiln_tensor *kiln_layer_norm(kiln_graph *g, kiln_tensor *x, kiln_tensor *weight,
                                      kiln_tensor *bias, float eps);

/* Shape ops. reshape takes one -1 to be inferred; flatten keeps dimension 0
 * and merges the rest ([N, C, H, W] -> [N, C*H*W], as torch.nn.Flatten).
 * reshape and flatten share the storage of their input. transpose is 2-D. */
KILN_API kiln_tensor *kiln_reshape(kiln_graph *g, kiln_tensor *a, int ndim,
                                   const int64_t *dims);
KILN_API kiln_tensor *kiln_flatten(kiln_graph *g, kiln_tensor *a);
KILN_API kiln_tensor *kiln_transpose(kiln_graph *g, kiln_tensor *a);
/* x with its axes in a new order, copied to a contiguous tensor (up to 4-D):
 * the output's axis d is x's axis perm[d], perm an array of x's ndim
 * entries naming each axis once (torch.permute, numpy.transpose(x, perm)):
 * [B, T, H, D] with {0, 2, 1, 3} gives [B, H, T, D]. */
KILN_API kiln_tensor *kiln_permute(kiln_graph *g, kiln_tensor *x, const int *perm);
/* Elements [start, start + length) of x along axis (negative counts from
 * the end), copied to a contiguous tensor of x's shape with length on that
 * axis (x.narrow(axis, start, length) in PyTorch): a fused qkv [B, T, 3C]
 * gives q, k and v with axis -1 and starts 0, C and 2C. The window must lie
 * inside the axis; length may be 0. The gradient is g in a zero tensor of
 * x's shape, so each slice of one tensor costs a tensor of x's size in the
 * backward pass. */
KILN_API kiln_tensor *kiln_slice(kiln_graph *g, kiln_tensor *x, int axis, int64_t start,
                                 int64_t length);
/* The inverse of kiln_slice, in place, for key/value caches: writes value
 * into dst along axis (negative counts from the end) at [start, start + n),
 * n value's length on that axis, and returns dst as it is after the write
 * (use the result, not dst, so that readers run after the write). value has
 * dst's shape on every other axis. start is an i32 [1] tensor read at run
 * time; a start outside [0, dims[axis] - n] fails the run, naming it. dst
 * must be an input (kiln_input), or what kiln_store_slice returned for one:
 * its contents persist from run to run, and kiln writes it only here. Not
 * differentiable. */
KILN_API kiln_tensor *kiln_store_slice(kiln_graph *g, kiln_tensor *dst,
                                       kiln_tensor *value, int axis, kiln_tensor *start);

/* 2-D convolution (cross-correlation, as PyTorch), NCHW.
 * x [N, C, H, W], w [O, C, KH, KW], bias [O] or NULL -> [N, O, OH, OW] with
 * OH = (H + 2*padding - KH) / stride + 1; zero padding on every side. */
KILN_API kiln_tensor *kiln_conv2d(kiln_graph *g, kiln_tensor *x, kiln_tensor *w,
                                  kiln_tensor *bias, int stride, int padding);
/* Max pooling over kernel x kernel windows, no padding; windows that do not fit
 * are dropped: OH = (H - kernel) / stride + 1. */
KILN_API kiln_tensor *kiln_max_pool2d(kiln_graph *g, kiln_tensor *x, int kernel,
                                      int stride);

/* Losses, reduced by the mean to a scalar. */
KILN_API kiln_tensor *kiln_mse_loss(kiln_graph *g, kiln_tensor *pred,
                                    kiln_tensor *target);
/* logits [..., C] f32, labels [...] i32 in [0, C) (the logits' shape
 * without the last axis; [N, C] and [N] for a classifier, [B, T, V] and
 * [B, T] for a language model): the mean over every position of
 * -log_softmax(logits)[label]. A label outside [0, C) makes kiln_graph_run
 * fail, naming the label and its position. */
KILN_API kiln_tensor *kiln_cross_entropy(kiln_graph *g, kiln_tensor *logits,
                                         kiln_tensor *labels);

/* Marks a tensor whose value must be readable after a run. Leaves always are;
 * other tensors not marked may share storage with later ones. Before compile. */
KILN_API kiln_status kiln_output(kiln_graph *g, kiln_tensor *t);

/* Orders the nodes, plans memory by liveness and reserves it on the device.
 * Fails on any recorded construction error, or when memory runs out. */
KILN_API kiln_status kiln_graph_compile(kiln_graph *g);
KILN_API kiln_status kiln_graph_run(kiln_graph *g);

/* Bytes of device memory the compiled graph holds for non-leaf tensors, and
 * what it would hold if none shared storage. */
KILN_API kiln_status kiln_graph_memory(const kiln_graph *g, size_t *planned,
                                       size_t *unshared);

/* Runs only the nodes `t` depends on (no gradients, no optimiser steps): the
 * forward pass of a training graph, for evaluation. t must be readable after
 * it (a leaf or an output). */
KILN_API kiln_status kiln_graph_eval(kiln_graph *g, kiln_tensor *t);
/* Where the graph's runs spend their time, op by op: with KILN_PROFILE=1 in
 * the environment when the graph is compiled, each run goes node by node,
 * waiting for each, and kiln_graph_profile writes a table into text (size
 * bytes, NUL included; cut short when it does not fit): one row per op and
 * output shape, longest total first, with its milliseconds, share and
 * calls; rows of nodes the cpu backend ran for the device say so. Waiting
 * after each node makes profiled runs slower than others. KILN_ERR_STATE
 * when the graph was compiled without KILN_PROFILE. */
KILN_API kiln_status kiln_graph_profile(kiln_graph *g, char *text, size_t size);

/* The graph's parameters, in creation order, and one by name (NULL if none). */
KILN_API size_t       kiln_graph_param_count(const kiln_graph *g);
KILN_API kiln_tensor *kiln_graph_param(const kiln_graph *g, size_t index);
KILN_API kiln_tensor *kiln_graph_find(const kiln_graph *g, const char *name);

/* Tensor data. nbytes must equal the tensor's size. Writes go to leaves
 * (inputs, params) and may come before compile; reads need a compiled graph
 * (leaves may be read at any time) and a tensor that is a leaf or an output. */
KILN_API kiln_status kiln_tensor_write(kiln_tensor *t, const void *data, size_t nbytes);
KILN_API kiln_status kiln_tensor_read(const kiln_tensor *t, void *data, size_t nbytes);

KILN_API kiln_dtype  kiln_tensor_dtype(const kiln_tensor *t);
KILN_API int         kiln_tensor_ndim(const kiln_tensor *t);
KILN_API int64_t     kiln_tensor_dim(const kiln_tensor *t, int axis);
KILN_API int64_t     kiln_tensor_numel(const kiln_tensor *t);
KILN_API size_t      kiln_tensor_nbytes(const kiln_tensor *t);
KILN_API const char *kiln_tensor_name(const kiln_tensor *t);

/* ---- training ------------------------------------------------------------ */

/* Appends to g the nodes that compute the gradient of `loss` (a scalar) with
 * respect to every parameter it depends on, in reverse mode; the gradients
 * run on the backend like any node. A tensor that feeds several ops gets the
 * sum of their contributions. Once per graph, before compile. */
KILN_API kiln_status kiln_backward(kiln_graph *g, kiln_tensor *loss);

/* The gradient of the loss with respect to t after kiln_backward, an output
 * of the graph; NULL (with a message) if the loss does not depend on t. */
KILN_API kiln_tensor *kiln_grad(kiln_graph *g, kiln_tensor *t);

typedef struct kiln_optimizer kiln_optimizer;

/* Optimisers append in-place update nodes for every parameter that has a
 * gradient (call after kiln_backward, before compile); each kiln_graph_run
 * then takes one step. The graph owns the optimiser. Semantics follow
 * PyTorch's torch.optim.SGD (dampening 0, not Nesterov) and torch.optim.Adam
 * (weight decay added to the gradient). */
KILN_API kiln_optimizer *kiln_sgd(kiln_graph *g, float lr, float momentum,
                                  float weight_decay);
KILN_API kiln_optimizer *kiln_adam(kiln_graph *g, float lr, float beta1, float beta2,
                                   float eps, float weight_decay);
/* AdamW (torch.optim.AdamW): Adam whose weight decay shrinks the weights,
 * param *= 1 - lr * weight_decay before each step, instead of being added
 * to the gradient; applied only to parameters of two or more dimensions
 * (matrices, embeddings, conv kernels), not to biases or norm scales, as
 * GPT-2-style training does. */
KILN_API kiln_optimizer *kiln_adamw(kiln_graph *g, float lr, float beta1, float beta2,
                                    float eps, float weight_decay);
/* Clips the gradients by their global norm, as torch.nn.utils.clip_grad_norm_:
 * every optimiser step then scales each gradient by min(1, max_norm / (norm +
 * 1e-6)), norm the L2 norm of all the parameters' gradients together. Call
 * after kiln_backward and before adding the optimiser. Returns the norm
 * before clipping, a scalar output of the graph to read after a run, or NULL
 * with the reason in kiln_last_error(). Under kiln_loss_scale it is the norm
 * of the true gradients, the scale divided out. */
KILN_API kiln_tensor *kiln_clip_grad_norm(kiln_graph *g, float max_norm);
/* Takes effect from the next run. */
KILN_API kiln_status kiln_optimizer_set_lr(kiln_optimizer *opt, float lr);

/* Dynamic loss scaling, for training in f16 (as torch.amp.GradScaler):
 * kiln_backward seeds the gradients with the scale (from `init`; 65536 is
 * usual) so that small ones survive f16's range, the optimiser's steps
 * divide them by it, and a run whose gradients overflowed (Inf or NaN)
 * changes no parameter and no optimiser state, and halves the scale;
 * `interval` runs in a row without an overflow double it (2000 is usual).
 * Call before kiln_backward. kiln_graph_run then reads one number back
 * after each run. Checkpoints keep the scale (kiln_checkpoint_save). */
KILN_API kiln_status kiln_loss_scale(kiln_graph *g, float init, int interval);
/* The scale the next run uses, and how many runs skipped their step. */
KILN_API kiln_status kiln_loss_scale_state(const kiln_graph *g, float *scale,
                                           uint64_t *skipped);
/* Zeroes the momentum / moment estimates and the step count. */
KILN_API kiln_status kiln_optimizer_reset(kiln_optimizer *opt);

/* Parameter initialisers: values drawn on the host from a generator seeded
 * with `seed` (the same seed gives the same values on every backend) and
 * written to the parameter. fan_in / fan_out: [in, out] for a dense weight
 * (x @ w), [O, C, KH, KW] for a conv weight (C*KH*KW in, O*KH*KW out).
 * The generator is xoshiro256** seeded by splitmix64; uniform values lie in
 * [lo, hi), normal ones come from Box-Muller (core/init.c). They work before
 * and after compile. p must be a parameter (KILN_ERR_INVALID_ARG otherwise,
 * as for lo > hi, stddev < 0 or a bound that is not finite); xavier and he
 * need a 2-D or 4-D weight (KILN_ERR_SHAPE). */
KILN_API kiln_status kiln_init_constant(kiln_tensor *p, float value);
KILN_API kiln_status kiln_init_uniform(kiln_tensor *p, float lo, float hi, uint64_t seed);
KILN_API kiln_status kiln_init_normal(kiln_tensor *p, float mean, float stddev,
                                      uint64_t seed);
/* Glorot/Xavier uniform: U(-a, a), a = sqrt(6 / (fan_in + fan_out)). */
KILN_API kiln_status kiln_init_xavier(kiln_tensor *p, uint64_t seed);
/* He/Kaiming normal: N(0, 2 / fan_in). */
KILN_API kiln_status kiln_init_he(kiln_tensor *p, uint64_t seed);

/* ---- layers: a model in a few lines --------------------------------------- */

/* Layers create their parameters ("<name>.weight", "<name>.bias"),
 * initialised from the graph's seed (kiln_graph_seed; each layer draws from
 * the next value of that sequence): weights He-normal, biases zero.
 * The sequence is splitmix64 from the seed, 0 until kiln_graph_seed is
 * called. A NULL name becomes the kind and the layer's index in the graph,
 * counted over all layers: "dense0", "conv1", ... Errors are recorded on the
 * graph like an op's, and a poisoned tensor returned. */
KILN_API void kiln_graph_seed(kiln_graph *g, uint64_t seed);
/* x [N, in] -> x @ weight [in, out] + bias [out] */
KILN_API kiln_tensor *kiln_dense(kiln_graph *g, kiln_tensor *x, int64_t out,
                                 const char *name);
/* x [N, C, H, W] -> conv2d with weight [out, C, k, k] and bias [out] */
KILN_API kiln_tensor *kiln_conv2d_layer(kiln_graph *g, kiln_tensor *x,
                                        int64_t out_channels, int kernel, int stride,
                                        int padding, const char *name);

/* ---- weights on disk: safetensors ------------------------------------------ */

/* Saves every parameter of g under its name (F32, little-endian), to a
 * temporary file beside path that is then renamed over it. Every parameter
 * needs a name and a value. A symbolic link is written through (its final
 * target is replaced, the link stays); a replaced file keeps its
 * permissions, and its owner where the process may set it. A path that
 * names a FIFO, a device or a folder is refused (KILN_ERR_IO), as is a file
 * larger than RLIMIT_FSIZE allows; a failed save leaves no file behind. */
KILN_API kiln_status kiln_save(const kiln_graph *g, const char *path);
/* kiln_save with the parameters rounded to dtype (KILN_F32, KILN_F16 or
 * KILN_BF16; "F16"/"BF16" in the file, which PyTorch's safetensors loads
 * as torch.float16/bfloat16). kiln_load reads any of the three into the
 * f32 parameters. */
KILN_API kiln_status kiln_save_as(const kiln_graph *g, const char *path, kiln_dtype dtype);
/* Loads every parameter of g from a file; a parameter missing from the file,
 * a shape or dtype mismatch, or a malformed file is an error naming it.
 * Tensors in the file that g lacks are ignored. Works before and after
 * compile. Statuses: KILN_ERR_IO for a file that cannot be read or is not
 * valid safetensors, KILN_ERR_NOT_FOUND for a missing parameter,
 * KILN_ERR_SHAPE for a shape or dtype mismatch, KILN_ERR_NO_MEMORY when
 * memory runs out. A path that is not a regular file (a FIFO, a device, a
 * folder) is refused before any read, and a JSON header longer than 16 MiB
 * by its length. A failed load changes no parameter. */
KILN_API kiln_status kiln_load(kiln_graph *g, const char *path);
/* Metadata that kiln_save writes into the file's "__metadata__" (strings,
 * as safetensors allows; PyTorch's safe_open(...).metadata() reads them):
 * what a program needs to rebuild the graph, such as a model's shape.
 * Setting a key again replaces its value; a NULL value removes the key.
 * Both must be valid UTF-8, the key not empty. kiln writes "producer" ("kiln <version>") unless it is set. */
KILN_API kiln_status kiln_graph_set_meta(kiln_graph *g, const char *key,
                                         const char *value);
/* Reads the metadata `key` of a safetensors file into value (size bytes,
 * NUL included). The file is checked as kiln_load checks it.
 * KILN_ERR_NOT_FOUND when the file has no such key, KILN_ERR_INVALID_ARG
 * when value is too small (the message says how much it needs), KILN_ERR_IO
 * for a file that cannot be read or is not valid safetensors. */
KILN_API kiln_status kiln_file_meta(const char *path, const char *key, char *value,
                                    size_t size);

/* ---- checkpoints: everything a training run needs to go on ------------------ */

/* Saves what kiln_save saves plus every optimiser's state (SGD's velocity,
 * Adam's moments, as tensors "optim.<param>.momentum_buffer", ".exp_avg" and
 * ".exp_avg_sq", PyTorch's names) and its step count (metadata
 * "kiln.optim.step" and "kiln.optim.kind"), atomically as kiln_save does: a
 * crash while writing leaves the previous file whole. The program's own
 * position (epoch, step, random state) goes in with kiln_graph_set_meta. */
KILN_API kiln_status kiln_checkpoint_save(const kiln_graph *g, const char *path);
/* Loads a file of kiln_checkpoint_save into a graph built as the one that
 * saved it: the parameters, the optimiser's state and its step count. A
 * missing tensor or an optimiser of another kind is an error naming it, and
 * a failed load changes nothing. */
KILN_API kiln_status kiln_checkpoint_load(kiln_graph *g, const char *path);

/* ---- data-parallel training: communicators ------------------------------------ */

/* A communicator joins the processes of one job (mpirun -np N ...), so
 * that each trains on its share of every batch and the gradients are
 * averaged, as PyTorch DDP and Horovod do. The engine is a plugin
 * (<kiln/comm.h>) found in KILN_COMM_PATH, then in kiln_comm_dir(): "mpi"
 * (Open MPI, MPICH), or "loopback", a job of this one process. */
typedef struct kiln_comm kiln_comm;

/* Opens the communicator spec names ("mpi", "loopback"); NULL or "" means
 * KILN_COMM's, and when that is unset too the plugin whose probe scores
 * this process highest: mpi under mpirun, else loopback (kiln_comm_select;
 * the plugins are found and probed once per process). One per process
 * (MPI cannot start twice): a second open fails while one is open. NULL on
 * failure, the message listing the plugins found and why each was refused. */
KILN_API kiln_comm *kiln_comm_open(const char *spec);
/* Leaves the job; every process must call it. NULL is ignored. */
KILN_API void        kiln_comm_close(kiln_comm *c);
KILN_API const char *kiln_comm_name(const kiln_comm *c); /* "mpi"           */
KILN_API int         kiln_comm_rank(const kiln_comm *c);
KILN_API int         kiln_comm_size(const kiln_comm *c);
/* This process's rank among those of its machine, and their number. */
KILN_API int kiln_comm_local_rank(const kiln_comm *c);
KILN_API int kiln_comm_local_size(const kiln_comm *c);
/* The folder searched for communicator plugins after KILN_COMM_PATH. */
KILN_API const char *kiln_comm_dir(void);
/* Every communicator plugin file found, in search order, usable or refused
 * (with its reason), and its probe's score for this process (n_devices is
 * 0). Made on the first call; the array lives until the process ends. 0,
 * with the reason in kiln_last_error(), when memory ran out. */
KILN_API size_t kiln_comm_plugins(const kiln_plugin_report **reports);
/* The plugin kiln_comm_open(spec) would open, as an index into
 * kiln_comm_plugins(): the one spec names (NULL or "": KILN_COMM's), else
 * the highest probe above 0. KILN_ERR_NOT_FOUND, the message listing what
 * was found and refused, when there is none. */
KILN_API kiln_status kiln_comm_select(const char *spec, size_t *index);

/* Collectives over host memory; every process of the job makes the same
 * calls in the same order. Each waits at most KILN_COMM_TIMEOUT seconds
 * (default 60) for the others, then fails with KILN_ERR_BACKEND: a process
 * died or hangs, and the job should end (kiln_comm_abort). */
KILN_API kiln_status kiln_comm_barrier(kiln_comm *c);
KILN_API kiln_status kiln_comm_broadcast(kiln_comm *c, void *data, size_t nbytes,
                                         int root);
/* data[i] becomes the sum over the processes, or with average their mean. */
KILN_API kiln_status kiln_comm_allreduce(kiln_comm *c, double *data, size_t n,
                                         bool average);
/* Root's parameters to every process (the same initial weights everywhere),
 * and with optimizer_state its optimisers' state and step count too, and
 * its loss scale (after root alone loaded a checkpoint). The graphs must be
 * built alike. */
KILN_API kiln_status kiln_comm_broadcast_params(kiln_comm *c, kiln_graph *g, int root,
                                                bool optimizer_state);
/* Every parameter becomes its mean over the processes: federated averaging
 * (local SGD), after each process took steps on its own data. */
KILN_API kiln_status kiln_comm_average_params(kiln_comm *c, kiln_graph *g);
/* Payload bytes this process gave to collectives so far (an allreduce of n
 * floats counts 4n, whatever the engine sends on the wire). */
KILN_API uint64_t kiln_comm_bytes(const kiln_comm *c);
/* Ends every process of the job with exit status code (MPI_Abort), so that
 * none waits forever for one that failed. Returns only for the loopback,
 * whose caller then exits alone. */
KILN_API void kiln_comm_abort(kiln_comm *c, int code);

/* A context on the device KILN_BACKEND selects, where each process of a
 * machine takes its own: when KILN_BACKEND names a backend but no device
 * ("opencl", or unset and opencl chosen), the process of local rank r
 * takes that backend's usable device r modulo their number. A device the
 * user named ("opencl:1") is taken as it is. */
KILN_API kiln_context *kiln_comm_context_new(const kiln_comm *c);

/* Data-parallel training: every run of g averages its parameters'
 * gradients over the processes of c before the gradient clipping and the
 * optimiser's steps read them. Call after kiln_backward and before
 * kiln_clip_grad_norm, the optimiser and compile. The gradients travel in
 * buckets of about bucket_bytes (0: 1 MiB), in the order backward finishes
 * them; each bucket's allreduce starts as soon as its last gradient is
 * computed, while backward goes on with earlier layers. The loss must be a
 * mean over this process's share of the batch, so that the mean of the
 * processes' gradients is the gradient of the whole batch. With one process
 * it does nothing. c must outlive the graph's runs. */
KILN_API kiln_status kiln_graph_allreduce_grads(kiln_graph *g, kiln_comm *c,
                                                size_t bucket_bytes);

/* ---- data: IDX files (MNIST, Fashion-MNIST), gzipped or not ---------------- */

typedef struct kiln_idx {
    uint8_t type; /* 0x08 u8, 0x09 i8, 0x0B i16, 0x0C i32,
                                  * 0x0D f32, 0x0E f64                      */
    int     ndim;
    int64_t dims[KILN_MAX_DIMS];
    int64_t count; /* elements                                */
    void   *data;  /* count elements of type, host byte order */
} kiln_idx;

/* Reads an IDX file (".gz" or not, detected by content; a gzip file may hold
 * several members, read as one stream). A bad magic number, a truncated file
 * or more than KILN_MAX_DIMS dimensions is an error naming the file and what
 * was found (KILN_ERR_IO), as are an unknown type code, dimensions whose
 * product overflows, bytes after the data and bytes after the gzip stream.
 * A path that is not a regular file (a FIFO, a device, a folder) is refused
 * before any read. On failure *out is zeroed; kiln_idx_free releases the
 * data of a successful read. */
KILN_API kiln_status kiln_idx_read(const char *path, kiln_idx *out);
KILN_API void        kiln_idx_free(kiln_idx *idx);

#ifdef __cplusplus
}
#endif

#endif /* KILN_KILN_H */
