/* core/kiln-impl.h — libkiln internals shared by the folders of core/:
 * base/ (errors, logging, allocation), graph/ (tensors, graphs, op
 * constructors, autodiff), runtime/ (plugins, selection, contexts, compile,
 * schedule, run), train/ (initialisers, layers, optimisers) and formats/
 * (safetensors, IDX). The op table it includes is shared with the in-tree
 * backends (backends/common/op-table.h). Users never see this header, and
 * backends never include it. */
#ifndef KILN_IMPL_H
#define KILN_IMPL_H

#include <kiln/backend.h>
#include <kiln/comm.h>
#include <kiln/kiln.h>

#include "backends/common/op-table.h"

#include <stdarg.h>

#define KILN__ALIGN 64

/* n rounded up to a whole number of KILN__ALIGN: the storage planned for a
 * tensor of n bytes, so that every tensor starts on a cache line. */
static inline size_t kiln__align_up(size_t n)
{
    return (n + KILN__ALIGN - 1) / KILN__ALIGN * KILN__ALIGN;
}

/* ---- errors, logging, allocation (base/) ----------------------------------- */

/* Sets kiln_last_error() for this thread and returns status. */
kiln_status kiln__error(kiln_status status, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
kiln_status kiln__verror(kiln_status status, const char *fmt, va_list ap);

void kiln__log(kiln_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void kiln__vlog(kiln_log_level level, const char *fmt, va_list ap);
bool kiln__log_enabled(kiln_log_level level);

/* Opens path to read what (for messages: "weights file") and gives its size:
 * anything but a regular file (a FIFO, a device, a folder) is refused, with
 * KILN_ERR_IO and a message naming it, before any read, and the open never
 * blocks (file.c). *fd is -1 on failure. */
kiln_status kiln__open_regular(const char *path, const char *what, int *fd,
                               uint64_t *size);
/* "a FIFO", "a directory", ... for an st_mode. */
const char *kiln__file_kind(unsigned mode);

/* Allocation that records KILN_ERR_NO_MEMORY with `what` on failure. */
void *kiln__malloc(size_t size, const char *what);
void *kiln__calloc(size_t n, size_t size, const char *what);
char *kiln__strdup(const char *s, const char *what);

/* ---- plugin registry (runtime/registry.c, runtime/select.c) --------------- */

typedef struct kiln__plugin {
    char              *path;
    void              *handle; /* dlopen handle, NULL if refused before it  */
    const kiln_plugin *table;  /* NULL if refused                           */
    char              *name;
    char              *reason; /* NULL if usable                            */
    int                score;
    int                n_devices;
    bool               transient; /* refused for lack of memory: tried again */
    unsigned           attempt;   /* the registry's attempt that loaded it   */
} kiln__plugin;

/* One snapshot of the registry: never changed once published (registry.c). */
typedef struct kiln__registry {
    kiln__plugin          *plugins;
    size_t                 n_plugins;
    kiln_plugin_report    *reports;
    kiln_device_report    *devices;
    size_t                 n_devices;
    size_t                *device_plugin; /* plugin index of each device      */
    kiln_device_desc      *descs;
    bool                   transient; /* some plugin is to be tried again   */
    unsigned               attempt;
    struct kiln__registry *older; /* the snapshot it replaced             */
} kiln__registry;

/* The registry, loaded on first use (thread-safe); NULL if loading failed,
 * with the reason in kiln_last_error(). A later call tries again what failed
 * for lack of memory; the snapshot it returns never changes, and an index
 * into its devices names the same device in every later one. */
const kiln__registry *kiln__registry_get(void);

/* Calls visit(arg, path) for every plugin file of a search (search.c): each
 * absolute entry of the colon-separated list the variable var holds (a .so
 * file, or a folder whose .so files go in name order), then the folder dir.
 * Stops and returns false when visit does, or when kiln runs out of memory
 * (the error set). */
typedef bool (*kiln__plugin_visit)(void *arg, const char *path);
bool kiln__plugin_search(const char *var, const char *dir, kiln__plugin_visit visit,
                         void *arg);

/* Whether path may be given to dlopen: a regular file holding an ELF shared
 * object for this machine, whole (elf.c). KILN_OK, or an error whose message
 * says what is wrong with it. Allocates nothing. */
kiln_status kiln__plugin_file_check(const char *path);

/* The host table given to plugins. */
extern const kiln_host kiln__host;

/* ---- context (runtime/context.c) ------------------------------------------ */

struct kiln_context {
    const kiln_plugin *plugin;
    int                index; /* device index within the plugin           */
    kiln_device        device;
    uint64_t           max_alloc; /* the largest buffer it allocates, 0: any */
    char               label[320];
    /* The cpu backend's device, opened on first need, that runs the nodes
     * the selected device does not support (see runtime/schedule.c). */
    kiln_device fallback;
    char        fallback_label[320];
};

/* ---- tensors and graphs (graph/), and a graph's compiled plan (runtime/) - */

enum {
    KILN__INPUT  = 1u << 0,
    KILN__PARAM  = 1u << 1,
    KILN__CONST  = 1u << 2,
    KILN__OUTPUT = 1u << 3,
    KILN__POISON = 1u << 4,
};

#define KILN__LEAF (KILN__INPUT | KILN__PARAM | KILN__CONST)

struct kiln_tensor {
    kiln_node    node; /* first member: what backends see            */
    kiln_graph  *graph;
    size_t       id; /* position in graph->nodes: creation order   */
    unsigned     flags;
    bool         written;  /* a leaf that holds a value                  */
    kiln_tensor *view_src; /* storage owner for views (reshape), or NULL */
    /* For a node that writes into another tensor's storage instead of its
     * own (optimiser steps, store_slice): that tensor, else NULL. */
    kiln_tensor *inplace;
    /* The gradient of the loss with respect to this tensor, once
     * kiln_backward has appended it; gradients of several consumers add up. */
    kiln_tensor *grad;
    void        *staged; /* host copy of a leaf written before compile */
    char        *name;
};

/* A node the selected device cannot run, as the fallback device runs it:
 * its sources are copied into `buffer` before, its result copied back after. */
typedef struct kiln__fallback {
    kiln_node node;              /* the node, its storage in `buffer`      */
    kiln_node src[KILN_MAX_SRC]; /* copies of its sources, in `buffer`     */
    void     *buffer;            /* on ctx->fallback                       */
} kiln__fallback;

/* A compiled graph: what runs, on which device, and where everything lives. */
/* The device buffers of one part of a plan, one per segment. */
typedef struct kiln__buffers {
    void **buf;
    size_t n;
} kiln__buffers;

typedef struct kiln__plan {
    const kiln_node **exec; /* nodes dispatched, in order              */
    size_t            n_exec;
    kiln__fallback  **fallback; /* per exec entry: NULL on the selected
                                  * device, else how the fallback runs it   */
    const kiln_node **batch;    /* scratch: consecutive nodes of one device */
    void             *staging;  /* host memory for the fallback's copies   */
    size_t            staging_size;
    kiln__buffers     leaves; /* device buffers for leaves (persistent)  */
    size_t            leaves_size;
    kiln__buffers     arena; /* device buffers shared by intermediates  */
    size_t            arena_size;
    /* the bytes of each buffer but the last, no tensor straddling two
     * (the device's largest allocation), or SIZE_MAX for one buffer        */
    size_t segment;
    size_t unshared; /* what the arena would be without sharing */
} kiln__plan;

#define KILN__GRAPH_RELEASE_MAX 8

struct kiln_graph {
    kiln_context   *ctx;
    kiln_tensor   **nodes;
    size_t          n_nodes, cap_nodes;
    kiln_status     status; /* first construction error, sticky        */
    char           *error;
    kiln_tensor    *poison;
    bool            compiled;
    bool            ran;
    kiln__plan      plan;
    kiln_tensor    *loss;       /* set by kiln_backward, once              */
    kiln_optimizer *optimizers; /* owned, released by optim.c              */
    /* kiln_clip_grad_norm: the gradients' sum of squares, f32 [1], which
     * every optimiser step then reads, and the norm to clip to; or NULL */
    kiln_tensor *clip_sumsq;
    float        clip_max_norm;
    /* kiln_loss_scale's state (train/scale.c)                              */
    struct {
        bool         on;
        float        value;    /* the scale of the next run              */
        int          interval; /* good runs before it doubles            */
        int          good;     /* good runs since the last change        */
        uint64_t     skipped;  /* runs whose steps an overflow skipped   */
        kiln_tensor *seed;     /* the backward pass's seed, a kiln leaf  */
    } scale;
    /* kiln_graph_set_meta's pairs, a Jansson object owned and released by
     * formats/safetensors.c, or NULL */
    void *meta;
    /* per-op times under KILN_PROFILE (runtime/profile.c), or NULL */
    struct kiln__profile *profile;
    /* kiln_graph_allreduce_grads's buckets (comm/grads.c), or NULL */
    struct kiln__dp *dp;
    uint64_t              seed;     /* layer seed sequence (kiln_graph_seed)   */
    unsigned              n_layers; /* layers made, for default layer names    */
    /* What other modules attached (the plan, the optimisers): each registers
     * its own release with kiln__graph_on_free, and kiln_graph_free calls
     * them, last registered first, so graph.c needs none of them. */
    void (*release[KILN__GRAPH_RELEASE_MAX])(kiln_graph *g);
    int n_release;
};

/* ---- communicators (comm/) ----------------------------------------------- */

struct kiln_comm {
    const kiln_comm_plugin *plugin;
    void                   *state;
    kiln_comm_info          info;
    double                  timeout; /* seconds, KILN_COMM_TIMEOUT        */
    uint64_t                bytes;   /* payload given to collectives      */
    float                  *scratch; /* params.c's buffer, kept for reuse */
    size_t                  n_scratch;
};

/* Sums (or averages, see comm.c) n elements of data over the job, waiting
 * for the result; errors are prefixed with call. */
kiln_status kiln__comm_allreduce(kiln_comm *c, void *data, size_t n, kiln_comm_dtype dt,
                                 const char *call);

typedef struct kiln__dp kiln__dp;
/* At compile, after the exec list is built: where each bucket of gradients
 * is complete and where the run must wait for them all (comm/grads.c). */
kiln_status kiln__dp_plan(kiln_graph *g);
/* During a run: after exec[i] ran (i = SIZE_MAX: before the first node),
 * starts the buckets complete there and lets started ones progress; before
 * exec[i] runs, waits for them all when i is the first node that reads
 * the averaged gradients. Each returns whether anything is to be done at
 * i, so that run.c hands the device the nodes queued so far first. */
bool        kiln__dp_after(const kiln_graph *g, size_t i);
bool        kiln__dp_before(const kiln_graph *g, size_t i);
kiln_status kiln__dp_run_after(kiln_graph *g, size_t i);
kiln_status kiln__dp_run_before(kiln_graph *g, size_t i);
/* A run failed: with an allreduce left under way, later runs refuse. */
void kiln__dp_run_failed(kiln_graph *g);

/* ---- profiling (runtime/profile.c) ---------------------------------------- */

typedef struct kiln__profile kiln__profile;
/* Starts g's profile when KILN_PROFILE asks for one (at compile). */
kiln_status kiln__profile_start(kiln_graph *g);
double      kiln__profile_now(void); /* seconds, monotonic */
void        kiln__profile_run(kiln_graph *g);
/* Adds one node's time (and a call) to its op and shape's row. */
void kiln__profile_add(kiln_graph *g, const kiln_node *node, bool fallback,
                       double seconds);

/* Registers release to run when g is freed; registering it again does
 * nothing. */
void kiln__graph_on_free(kiln_graph *g, void (*release)(kiln_graph *g));

/* Records the graph's first error (later ones are dropped) and returns the
 * poison tensor; also sets kiln_last_error(). */
kiln_tensor *kiln__graph_fail(kiln_graph *g, kiln_status status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* A new node of op with its shape; sources NULL-terminated in src (up to
 * KILN_MAX_SRC). dtype KILN__FLOAT: src[0]'s (the op's float type). Returns
 * the poison tensor on failure. */
kiln_tensor *kiln__node_new(kiln_graph *g, kiln_op op, kiln_dtype dtype, int ndim,
                            const int64_t *dims, kiln_tensor *const *src, int n_src);

/* Checks that an op's operands are usable: non-NULL, of graph g, not poisoned.
 * Returns false (after recording the error, unless a poisoned operand carries
 * an earlier one) when the op must return the poison tensor. */
bool kiln__check_operands(kiln_graph *g, const char *op, kiln_tensor *const *t, int n);

/* Float (f32, f16 or bf16) operand check with a message naming the op. */
bool kiln__check_float(kiln_graph *g, const char *op, const char *which,
                       const kiln_tensor *t);

/* The n operands of op usable (kiln__check_operands) and of the dtypes the
 * op table gives its sources, its float sources of one type (the first
 * one's); else records "add: b [2] is f16, expected f32 (cast it with
 * kiln_cast)" and returns false. An op's float output has that type: the
 * constructors give it their first source's dtype. */
bool kiln__check_sources(kiln_graph *g, kiln_op op, kiln_tensor *const *t, int n);

int64_t     kiln__numel(int ndim, const int64_t *dims);
const char *kiln__dtype_name(kiln_dtype dtype); /* "f32", "i32", "f16", "bf16" */
size_t      kiln__tensor_bytes(const kiln_tensor *t);

/* "tensor 'x' [64, 784]", or "matmul [64, 10]" for an unnamed node, into buf,
 * for messages. */
const char *kiln__describe(char *buf, size_t len, const kiln_tensor *t);

/* The tensor whose storage t uses (itself unless t is a view or writes in
 * place). */
kiln_tensor *kiln__storage(kiln_tensor *t);

/* ---- initialisers and layers (train/init.c, train/layers.c) --------------- */

/* One step of splitmix64: advances *state and returns the next value. Seeds
 * the initialisers' generator and gives each layer its seed. */
uint64_t kiln__splitmix64(uint64_t *state);

/* ---- the schedule (runtime/schedule.c) ------------------------------------ */

/* Decides which device runs each node of plan.exec and prepares the
 * fallback's buffers and copies; runs one fallback node. */
kiln_status kiln__schedule(kiln_graph *g);
void        kiln__schedule_free(kiln_graph *g);
kiln_status kiln__fallback_run(kiln_graph *g, kiln__fallback *fb, const kiln_node *node);
void        kiln__context_close_fallback(kiln_context *ctx);

/* ---- gradients (graph/ops_grad.c, graph/autodiff.c), optimisers (train/) - */

/* Constructors of the gradient ops (backend.h) that kiln_backward appends.
 * Shape-checked like the public ones: a mismatch is a sticky graph error. */
kiln_tensor *kiln__sum_to(kiln_graph *g, kiln_tensor *a, int ndim, const int64_t *dims);
/* a repeated along `axis` of dims (-1: a is one element, repeated everywhere) */
kiln_tensor *kiln__expand(kiln_graph *g, kiln_tensor *a, int axis, int ndim,
                          const int64_t *dims);
kiln_tensor *kiln__relu_grad(kiln_graph *g, kiln_tensor *gy, kiln_tensor *x);
kiln_tensor *kiln__max_grad(kiln_graph *g, kiln_tensor *gy, kiln_tensor *x);
kiln_tensor *kiln__gelu_grad(kiln_graph *g, kiln_tensor *gy, kiln_tensor *x);
/* op: KILN_OP_SOFTMAX_GRAD or KILN_OP_LOG_SOFTMAX_GRAD; y is the forward output */
kiln_tensor *kiln__softmax_grad(kiln_graph *g, kiln_op op, kiln_tensor *gy,
                                kiln_tensor *y);
/* The gradients of a conv2d, max_pool2d or cross_entropy node `fwd`, given
 * gy, the gradient of its output; op picks CONV2D_GRAD_INPUT or _WEIGHT. */
kiln_tensor *kiln__conv2d_grad(kiln_graph *g, kiln_op op, kiln_tensor *gy,
                               kiln_tensor *fwd);
kiln_tensor *kiln__max_pool2d_grad(kiln_graph *g, kiln_tensor *gy, kiln_tensor *fwd);
kiln_tensor *kiln__cross_entropy_grad(kiln_graph *g, kiln_tensor *gy, kiln_tensor *fwd);
/* The table's gradient of an embedding node `fwd`: gy's rows added up per id. */
kiln_tensor *kiln__embedding_grad(kiln_graph *g, kiln_tensor *gy, kiln_tensor *fwd);
/* The input's gradient of a causal_softmax node y, from y and its scale. */
kiln_tensor *kiln__causal_softmax_grad(kiln_graph *g, kiln_tensor *gy, kiln_tensor *y);
/* The qkv gradient of a causal_attention node fwd, from gy [B, T, C]. */
kiln_tensor *kiln__causal_attention_grad(kiln_graph *g, kiln_tensor *gy,
                                         kiln_tensor *fwd);
/* op: KILN_OP_LAYER_NORM_GRAD (for x) or KILN_OP_LAYER_NORM_GRAD_WEIGHT (for
 * the weight) of the layer_norm node fwd; eps is fwd's */
kiln_tensor *kiln__layer_norm_grad(kiln_graph *g, kiln_op op, kiln_tensor *gy,
                                   kiln_tensor *fwd);
/* gy, the gradient of a SLICE node fwd, in zeros of fwd's input's shape */
kiln_tensor *kiln__slice_grad(kiln_graph *g, kiln_tensor *gy, kiln_tensor *fwd);

/* A tensor kiln saves beside the parameters, under a name of its own. */
typedef struct kiln__named {
    kiln_tensor *t;
    char        *name; /* from malloc */
} kiln__named;

/* Every optimiser state tensor of g with its checkpoint name
 * ("optim.<param>.exp_avg", ...), in a list from malloc (kiln__named_free);
 * with the optimisers' kind ("adam", "adamw", "sgd", or "" for none) and
 * step count. */
kiln_status kiln__optim_state(const kiln_graph *g, kiln__named **list, size_t *n,
                              const char **kind, uint64_t *step);
void        kiln__optim_set_step(kiln_graph *g, uint64_t step);
/* g's parameters in creation order under their names, and with optimiser
 * the optimiser's state after them (kiln__optim_state): what a weights
 * file or a checkpoint holds, and what a broadcast sends. */
kiln_status kiln__state_list(const kiln_graph *g, bool optimiser, kiln__named **list,
                             size_t *n, const char **kind, uint64_t *step);
void        kiln__named_free(kiln__named *list, size_t n);

/* Writes a leaf's value, parameter, input or kiln's own (optimiser state),
 * staged before compile and on the device after; kiln_tensor_write is this
 * for inputs and parameters. */
kiln_status kiln__leaf_write(kiln_tensor *t, const void *data, size_t nbytes);

/* Refreshes every optimiser's hyper-parameters on the device and counts the
 * step; kiln_graph_run calls it before each run (kiln_graph_eval does not). */
kiln_status kiln__optim_before_run(kiln_graph *g);
/* Takes back each optimiser's step count of a run whose steps were
 * skipped (loss scaling found an overflow). */
void kiln__optim_unstep(kiln_graph *g);
/* The gradients' sum of squares, f32 [1], an output of g (clip.c): for
 * clipping and for loss scaling's overflow check. NULL after an error. */
kiln_tensor *kiln__grad_sumsq(kiln_graph *g, const char *call);

/* ---- loss scaling (train/scale.c) ------------------------------------------- */

/* The backward pass's seed under loss scaling: a leaf of the loss's shape
 * and dtype holding the scale. */
kiln_tensor *kiln__scale_seed(kiln_graph *g, kiln_tensor *loss);
/* Writes the scale into the seed before a run. */
kiln_status kiln__scale_before_run(kiln_graph *g);
/* Reads whether the run's gradients overflowed and updates the scale. */
kiln_status kiln__scale_after_run(kiln_graph *g);

#endif /* KILN_IMPL_H */
