/* ocl-impl.h — internals of the kiln-opencl backend, shared by its files only.
 *
 * Rooms: discover.c finds platforms and devices and judges what each can do;
 * errors.c turns OpenCL and CLBlast statuses into messages; cache.c keeps
 * built programs on disk; program.c builds the embedded kernels and launches
 * them; gemm.c is CLBlast; ops.c says which nodes run here, with which
 * kernel (the op table, backends/common/op-table.h, and the kernels' own
 * limits); ops_<family>.c enqueue one node each, as their twins of the same
 * name in backends/cpu/ compute it; plugin.c is the plugin table, devices
 * and buffers.
 *
 * Everything a device does goes onto its one in-order command queue, so a
 * node's sources are complete before it runs without events; the host waits
 * only in buffer_read, buffer_write and synchronize.
 */
#ifndef KILN_OCL_IMPL_H
#define KILN_OCL_IMPL_H

#define CL_TARGET_OPENCL_VERSION 120
#include <CL/cl.h>

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <kiln/backend.h>

#include "../common/op-table.h"

/* ---- discovery (discover.c) ------------------------------------------------ */

/* One OpenCL device as kiln sees it. Filled at init, read-only afterwards,
 * except gemm_* (gemm.c, under its lock). */
typedef struct ocl_info {
    cl_platform_id platform;
    cl_device_id   id;
    cl_device_type type;
    unsigned       platform_index, device_index; /* as the driver lists them */
    char           name[128];
    char           platform_name[128];
    char           platform_version[128];
    char           version[128];  /* CL_DEVICE_VERSION          */
    char           driver[128];   /* CL_DRIVER_VERSION          */
    char           c_version[64]; /* CL_DEVICE_OPENCL_C_VERSION */
    int            c_major, c_minor;
    cl_ulong       memory, max_alloc, local_mem;
    cl_uint        base_align; /* CL_DEVICE_MEM_BASE_ADDR_ALIGN, in bytes */
    cl_uint        compute_units, clock_mhz; /* CL_DEVICE_MAX_CLOCK_FREQUENCY */
    bool           unified;   /* CL_DEVICE_HOST_UNIFIED_MEMORY: the host's RAM   */
    bool           denorms;   /* fp32 subnormals kept (CL_FP_DENORM)             */
    size_t         max_group; /* CL_DEVICE_MAX_WORK_GROUP_SIZE */
    bool           fp16, fp64;
    bool           exact_div_sqrt; /* correctly rounded / and sqrt */
    char           unusable[256];  /* empty if kiln can use it    */
    /* CLBlast's state for this device in this process (gemm.c): the
     * decision, the Xgemm set kiln put in force (or ""), the size from which
     * the indirect kernel runs (0: CLBlast's own) */
    int    gemm_state;
    char   gemm_note[160];
    char   gemm_set[32];
    size_t gemm_params[16]; /* the set's values, OCL_XGEMM_PARAMS of them  */
    size_t gemm_min_indirect;
} ocl_info;

/* Every device of every platform, in kiln's order (ocl_kind): GPUs with
 * memory of their own, GPUs that share the host's, accelerators, CPUs, then
 * devices that claim several of those types at once (a simulator such as
 * Oclgrind's); within a kind, more compute units x clock first, then more
 * memory, then platform and device order. *infos is malloc'd (NULL when
 * count is 0). Fails only when out of memory or when the OpenCL loader
 * itself fails; no platform at all is a count of 0. */
kiln_status ocl_discover(const kiln_host *host, ocl_info **infos, int *count);
/* The best usable device's score: 100 a GPU with its own memory, 95 one
 * sharing the host's, 90 an accelerator, 10 a CPU, 5 a device of several
 * types (below kiln's cpu backend, 50: never the default); 0 if none. */
int ocl_score(const ocl_info *infos, int count);
/* "discrete_gpu", "integrated_gpu", "accelerator", "cpu" or
 * "simulator_or_unknown" (kiln-info's capability "kind") */
const char *ocl_kind_name(const ocl_info *d);
const char *ocl_type_name(cl_device_type type);

/* ---- errors (errors.c) ------------------------------------------------------ */

/* "CL_OUT_OF_RESOURCES"; "an unknown status" for codes OpenCL 1.2 lacks. */
const char *ocl_cl_name(cl_int err);
/* CLBlast's statuses: its own names, or the OpenCL name they share. */
const char *ocl_clblast_name(int status);
/* Records "opencl: <call> failed: <NAME> (<code>): <what>" and returns
 * KILN_ERR_NO_MEMORY for allocation failures, else KILN_ERR_BACKEND. */
kiln_status ocl_cl_fail(const kiln_host *host, const char *call, cl_int err,
                        const char *fmt, ...) __attribute__((format(printf, 4, 5)));
kiln_status ocl_clblast_fail(const kiln_host *host, const char *call, int status,
                             const char *fmt, ...) __attribute__((format(printf, 4, 5)));
/* Whether an OpenCL status means memory ran out. */
bool ocl_is_alloc_failure(cl_int err);

/* ---- program cache (cache.c) ---------------------------------------------- */

/* 64-bit FNV-1a, continued from h (start with OCL_FNV_SEED). */
#define OCL_FNV_SEED 14695981039346656037ull
uint64_t ocl_fnv1a(uint64_t h, const void *data, size_t n);

/* The cache folder into dir: KILN_CACHE_DIR, else $XDG_CACHE_HOME/kiln, else
 * $HOME/.cache/kiln, each only as an absolute path. False when the cache is
 * off (KILN_CACHE_DIR=off, a relative KILN_CACHE_DIR or HOME) or no folder
 * can be named. why (empty when all is well) says what was refused or
 * ignored, for a warning. */
bool ocl_cache_dir(char *dir, size_t len, char *why, size_t why_len);

typedef enum ocl_cache_result {
    OCL_CACHE_MISS, /* no entry (why may say what is there instead)    */
    OCL_CACHE_HIT,  /* *data holds the stored binary (malloc'd)        */
    OCL_CACHE_BAD,  /* an entry that is corrupt or for another key: it
                       * has been deleted, and why says what was wrong   */
} ocl_cache_result;

ocl_cache_result ocl_cache_load(const char *path, const char *key, unsigned char **data,
                                size_t *len, char *why, size_t why_len);
/* Writes an entry by temp file + rename; false (with why) if it could not. */
bool ocl_cache_store(const char *dir, const char *path, const char *key,
                     const unsigned char *data, size_t len, char *why, size_t why_len);

/* ---- the device ---------------------------------------------------------- */

/* Every kernel of kernels/\*.cl: the enum name and the kernel's name. */
/* clang-format off */
#define OCL_KERNELS(X)                       \
    X(NEG, "kiln_neg")                       \
    X(EXP, "kiln_exp")                       \
    X(LOG, "kiln_log")                       \
    X(SQRT, "kiln_sqrt")                     \
    X(RELU, "kiln_relu")                     \
    X(SIGMOID, "kiln_sigmoid")               \
    X(TANH, "kiln_tanh")                     \
    X(SCALE, "kiln_scale")                   \
    X(FILL, "kiln_fill")                     \
    X(RELU_GRAD, "kiln_relu_grad")           \
    X(GELU, "kiln_gelu")                     \
    X(GELU_GRAD, "kiln_gelu_grad")           \
    X(LAYER_NORM, "kiln_layer_norm")         \
    X(LAYER_NORM_GRAD, "kiln_layer_norm_grad") \
    X(LAYER_NORM_STATS, "kiln_layer_norm_stats") \
    X(LAYER_NORM_GRAD_WEIGHT, "kiln_layer_norm_grad_weight") \
    X(SUM_ROWS, "kiln_sum_rows")             \
    X(SUM_COLS, "kiln_sum_cols")             \
    X(SUM_PARTS, "kiln_sum_parts")           \
    X(MAX_LAST, "kiln_max_last")             \
    X(ARGMAX_LAST, "kiln_argmax_last")       \
    X(MAX_GRAD, "kiln_max_grad")             \
    X(MSE_LOSS, "kiln_mse_loss")             \
    X(SOFTMAX, "kiln_softmax")               \
    X(SOFTMAX_GRAD, "kiln_softmax_grad")     \
    X(CE_ROWS, "kiln_cross_entropy_rows")    \
    X(CE_GRAD, "kiln_cross_entropy_grad")    \
    X(TRANSPOSE, "kiln_transpose")           \
    X(PERMUTE, "kiln_permute")               \
    X(PERMUTE_WIDE, "kiln_permute_wide")     \
    X(SLICE, "kiln_slice")                   \
    X(SLICE_GRAD, "kiln_slice_grad")         \
    X(SGD_STEP, "kiln_sgd_step")             \
    X(ADAM_STEP, "kiln_adam_step")           \
    X(EMBEDDING, "kiln_embedding")           \
    X(EMBEDDING_GRAD, "kiln_embedding_grad") \
    X(CAUSAL_SOFTMAX, "kiln_causal_softmax") \
    X(CAUSAL_SOFTMAX_GRAD, "kiln_causal_softmax_grad") \
    X(STORE_SLICE, "kiln_store_slice")       \
    X(ATTENTION, "kiln_causal_attention")    \
    X(ATTENTION_GRAD_Q, "kiln_causal_attention_grad_q") \
    X(ATTENTION_GRAD_KV, "kiln_causal_attention_grad_kv") \
    X(WIDEN, "kiln_widen")                   \
    X(NARROW, "kiln_narrow")                 \
    X(RECAST16, "kiln_recast16")
/* The kernels of the indexed files (embed.sh), each built twice: OCL_K_ADD
 * is kiln_add, with 32-bit indices, and OCL_K_ADD_WIDE kiln_add_wide. */
#define OCL_INDEXED_KERNELS(X)               \
    X(ADD, "kiln_add")                   \
    X(SUB, "kiln_sub")                   \
    X(MUL, "kiln_mul")                   \
    X(DIV, "kiln_div")                   \
    X(ADD_RELU, "kiln_add_relu")         \
    X(EXPAND, "kiln_expand")             \
    X(IM2COL, "kiln_im2col")             \
    X(CONV_OUT, "kiln_conv_out")         \
    X(CONV_COLS, "kiln_conv_cols")       \
    X(COL2IM, "kiln_col2im")             \
    X(MAX_POOL, "kiln_max_pool2d")       \
    X(MAX_POOL_GRAD, "kiln_max_pool2d_grad")
/* clang-format on */

typedef enum ocl_kernel_id {
#define OCL_KERNEL_ENUM(id, name)      OCL_K_##id,
#define OCL_KERNEL_ENUM_WIDE(id, name) OCL_K_##id##_WIDE,
    OCL_KERNELS(OCL_KERNEL_ENUM) OCL_INDEXED_KERNELS(OCL_KERNEL_ENUM)
        OCL_INDEXED_KERNELS(OCL_KERNEL_ENUM_WIDE)
#undef OCL_KERNEL_ENUM
#undef OCL_KERNEL_ENUM_WIDE
            OCL_K_COUNT
} ocl_kernel_id;

/* How far an indexed kernel's wide twin lies from it in ocl_kernel_id. */
#define OCL_KERNEL_ONE(id, name) +1
enum { OCL_K_WIDE_SHIFT = 0 OCL_INDEXED_KERNELS(OCL_KERNEL_ONE) };
#undef OCL_KERNEL_ONE

/* The handle buffer_alloc returns and kiln stores in kiln_node.buffer. */
typedef struct ocl_buffer {
    cl_mem mem;
    size_t size; /* bytes asked for */
} ocl_buffer;

/* Label checks a graph_compute enqueued (cross-entropy's labels, an
 * embedding's ids): each has a slot of the error buffer, where kernels leave
 * the lowest row (position) whose label (id) is out of range. */
#define OCL_MAX_CHECKS 8

typedef struct ocl_label_check {
    const char *op;   /* kiln's op name, for the message   */
    kiln_op     kind; /* the node's op                     */
    size_t      node; /* its index in graph_compute's list */
    cl_mem      labels;
    size_t      offset;  /* of the labels, in elements        */
    int64_t     classes; /* labels lie in [0, classes)        */
    /* STORE_SLICE: the axis, the value's length there, the destination's */
    int     axis;
    int64_t length, whole;
} ocl_label_check;

typedef struct ocl_device {
    const kiln_host *host;
    ocl_info        *info;
    int              index;
    cl_context       ctx;
    cl_command_queue queue;
    cl_program       program;
    cl_kernel        kernels[OCL_K_COUNT];
    size_t           kernel_group[OCL_K_COUNT]; /* CL_KERNEL_WORK_GROUP_SIZE */
    size_t           group;   /* reductions' work-group size, a power of 2 */
    cl_mem           scratch; /* grows on demand; see ocl_scratch  */
    size_t           scratch_size;
    cl_mem           gemm_temp; /* CLBlast's temporary buffer, grown the same way */
    size_t           gemm_temp_size;
    cl_mem           parts; /* reductions' partial sums, grown the same way */
    size_t           parts_size;
    /* f32 copies of a 16-bit node's sources and output (ops_half.c)       */
    cl_mem           widen[KILN_MAX_SRC + 1];
    size_t           widen_size[KILN_MAX_SRC + 1];
    cl_mem           dummy; /* bound where a tensor has no storage */
    cl_mem           err;   /* OCL_MAX_CHECKS ints               */
    ocl_label_check  checks[OCL_MAX_CHECKS];
    int              n_checks;
    bool             err_pending; /* label checks not yet read back    */
    bool             gemm_ok;     /* CLBlast verified on this device   */
    /* the elements past which a GEMM operand is given to CLBlast in a
     * sub-buffer (gemm.c): INT_MAX, or KILN_OPENCL_REBASE_ABOVE's value */
    size_t rebase_above;
    /* the largest extent an indexed kernel's 32-bit build takes */
    uint64_t narrow_max;
} ocl_device;

/* ---- programs and launches (program.c) -------------------------------------- */

extern const char   ocl_kernel_source[]; /* kernels.c, generated */
extern const size_t ocl_kernel_source_len;

/* Whether the kernels sum in double: the device has fp64 and
 * KILN_OPENCL_FP64 is not "off". */
bool ocl_use_fp64(const ocl_info *info);

/* Builds (or loads from the cache) the kernels and creates them. */
kiln_status ocl_program_open(ocl_device *dev);
void        ocl_program_close(ocl_device *dev);

/* A kernel launch being prepared: arguments are set in order, and the first
 * failure is kept and reported by ocl_run*. */
typedef struct ocl_launch {
    ocl_device   *dev;
    ocl_kernel_id id;
    cl_uint       next;
    cl_int        err;
    cl_uint       bad_arg;
    bool          wide; /* an indexed kernel's 64-bit twin */
} ocl_launch;

ocl_launch ocl_begin(ocl_device *dev, ocl_kernel_id id);
/* An indexed kernel (OCL_INDEXED_KERNELS) whose indices, sizes and padded
 * extents stay below `extent`: its 32-bit build when extent is at most
 * dev->narrow_max, else its _WIDE twin. Its sizes go in with ocl_arg_idx. */
ocl_launch ocl_begin_indexed(ocl_device *dev, ocl_kernel_id id, uint64_t extent);
/* A size as the launch's idx_t: a uint, or a ulong when wide. */
void ocl_arg_idx(ocl_launch *l, uint64_t v);
/* INT32_MAX, or KILN_OPENCL_WIDE_ABOVE's value (a test's: every launch
 * past that many elements takes the 64-bit kernels; 0, all of them). */
uint64_t ocl_narrow_max(void);
void       ocl_arg(ocl_launch *l, size_t size, const void *value);
void       ocl_arg_mem(ocl_launch *l, cl_mem mem);
/* The tensor's buffer and its offset in elements: two arguments (the
 * dummy buffer and 0 for NULL, an unused slot). */
void ocl_arg_node(ocl_launch *l, const kiln_node *t);
void ocl_arg_u64(ocl_launch *l, uint64_t v);
void ocl_arg_u32(ocl_launch *l, uint32_t v);
void ocl_arg_i32(ocl_launch *l, int32_t v);
void ocl_arg_f32(ocl_launch *l, float v);
/* __local scratch of `each` bytes per work-item of a group of `group`. */
void ocl_arg_local(ocl_launch *l, size_t each, size_t group);
/* One work-item per element (n > 0), in groups the device likes: of
 * ocl_run_group work-items for kernel id. */
kiln_status ocl_run(ocl_launch *l, uint64_t n);
size_t      ocl_run_group(const ocl_device *dev, ocl_kernel_id id);
/* `groups` work-groups of `group` work-items each (from ocl_group_for). */
kiln_status ocl_run_groups(ocl_launch *l, uint64_t groups, size_t group);
/* `groups` work-groups of lx x ly work-items, the groups along dimension 0
 * (so no dimension's count of groups other than the first grows). */
kiln_status ocl_run_groups_2d(ocl_launch *l, uint64_t groups, size_t lx, size_t ly);
/* TRANSPOSE's tile edge (KILN_TILE in shape.cl): its kernel needs work-groups
 * of at least that many work-items. */
#define OCL_TILE 32
/* The work-group size for a reduction over n elements. */
size_t ocl_group_for(const ocl_device *dev, uint64_t n);

/* A kernel that takes one row per work-group: its arguments are each of
 * `nodes` (buffer and offset), the row length, the flag when `flag` >= 0,
 * then __local scratch of `each` bytes per work-item, and a second one of
 * indices when `indices`. Runs `rows` work-groups. */
typedef struct ocl_row_launch {
    ocl_kernel_id    id;
    const kiln_node *nodes[3];
    int              n_nodes;
    uint64_t         rows, cols;
    int              flag;
    size_t           each;
    bool             indices;
} ocl_row_launch;

kiln_status ocl_run_rows(ocl_device *dev, const ocl_row_launch *r);

/* The node's buffer (dev->dummy when it has no storage) and its offset in
 * elements. */
cl_mem   ocl_mem(const ocl_device *dev, const kiln_node *t);
uint64_t ocl_elem_offset(const kiln_node *t);

/* A device buffer of at least `bytes` for the node being run, valid until
 * the next call (an in-order queue keeps earlier users safe). */
kiln_status ocl_scratch(ocl_device *dev, size_t bytes, cl_mem *mem);
/* The same for a buffer of its own: *buf of *size bytes, grown to at least
 * `bytes` (what: for messages). */
kiln_status ocl_grow_buffer(ocl_device *dev, cl_mem *buf, size_t *size, size_t bytes,
                            const char *what, cl_mem *mem);

/* ---- GEMM through CLBlast (gemm.c) --------------------------------------- */

/* c[m, n] = alpha * op(a) @ op(b) + beta * c, row-major; op(a) is [m, k]
 * (a stored [k, m] when ta), op(b) is [k, n]. Offsets and leading
 * dimensions in elements. k = 0 scales c by beta (writes zeros for 0). */
typedef struct ocl_gemm {
    bool   ta, tb;
    size_t m, n, k;
    float  alpha, beta;
    cl_mem a, b, c;
    size_t ao, bo, co;
    size_t lda, ldb, ldc;
} ocl_gemm;

/* Operands that lie past INT_MAX elements into their buffer, where
 * CLBlast's int indices cannot reach, go to it as sub-buffers. */
kiln_status ocl_sgemm(ocl_device *dev, const ocl_gemm *g);
/* INT_MAX, or the value of KILN_OPENCL_REBASE_ABOVE (a test's: it makes
 * every operand past that many elements take the sub-buffer path). */
size_t ocl_rebase_above(void);
/* Once per process and device: checks CLBlast's GEMM against a host
 * reference, choosing CPU-device parameters where they verify, and so
 * compiles CLBlast's kernels before the first graph runs. Sets gemm_ok. */
kiln_status ocl_gemm_prepare(ocl_device *dev);

/* The indirect kernel takes over from products of this size cubed on CPU
 * devices with a verified set: on POCL here the tuned indirect kernel beat
 * the direct one from 128 up (19 against 5 GFLOP/s at 128^3) and they were
 * even at 96. */
#define OCL_CPU_MIN_INDIRECT 128

/* CLBlast 1.5's Xgemm parameters, in the order of ocl_xgemm_names. */
enum { OCL_XGEMM_PARAMS = 16 };
_Static_assert(sizeof ((ocl_info *)0)->gemm_params == OCL_XGEMM_PARAMS * sizeof(size_t),
               "ocl_info.gemm_params holds one set");
enum {
    P_GEMMK,
    P_KREG,
    P_KWG,
    P_KWI,
    P_MDIMA,
    P_MDIMC,
    P_MWG,
    P_NDIMB,
    P_NDIMC,
    P_NWG,
    P_SA,
    P_SB,
    P_STRM,
    P_STRN,
    P_VWM,
    P_VWN
};
extern const char *const ocl_xgemm_names[OCL_XGEMM_PARAMS];
/* Why CLBlast's Xgemm kernel cannot run with set v on this device (its
 * tuner's constraints, the device's work-group and local memory), or NULL. */
const char *ocl_xgemm_unfit(const size_t *v, const ocl_info *info);
/* Puts set v (called `name` in notes) in force; a CLBlastStatusCode. */
int ocl_xgemm_apply(ocl_device *dev, const size_t *v, const char *name);
/* Products from `size` cubed up take the Xgemm (indirect) kernel. */
kiln_status ocl_gemm_set_min_indirect(ocl_device *dev, size_t size);
/* Checks products that take the indirect kernel (partial tiles, every
 * transpose) against the host: *ok, or why not. */
kiln_status ocl_gemm_check_indirect(ocl_device *dev, bool *ok, char *why, size_t len);
/* Checks an n^3 product on a sample of rows: *ok, or why not. */
kiln_status ocl_gemm_check_square(ocl_device *dev, size_t n, bool *ok, char *why,
                                  size_t len);

/* ---- searching Xgemm's parameters (tune.c) -------------------------------------- */

/* KILN_OPENCL_TUNE=search[:SECONDS]: the seconds to search for (> 0), or 0
 * when it does not ask for a search. */
double ocl_tune_budget(void);
/* Searches Xgemm parameter sets for `budget` seconds from `start` (a set
 * that verifies, or NULL for none), each one checked against the host
 * before it is timed at 1024^3 (smaller on a device with little memory),
 * and leaves the fastest in force, in `best`, with a note. */
kiln_status ocl_tune_search(ocl_device *dev, double budget, const size_t *start,
                            size_t best[OCL_XGEMM_PARAMS], char *note, size_t len);

/* ---- ops (ops.c, ops_*.c) ------------------------------------------------------ */

/* Why the node does not fit a kernel's own limits, or NULL. */
typedef const char *(*ocl_check_fn)(const kiln_node *node);
/* Enqueues one node; i is its index in graph_compute's list. */
typedef kiln_status (*ocl_op_fn)(ocl_device *dev, const kiln_node *node, size_t i);

/* ---- f16 and bf16 (ops_half.c) ------------------------------------------------ */

kiln_status ocl_op_cast(ocl_device *dev, const kiln_node *node, size_t i);
/* Runs a node with 16-bit float tensors through its f32 kernel `run`. */
kiln_status ocl_run_widened(ocl_device *dev, const kiln_node *node, size_t i,
                            ocl_op_fn run);

/* Why this device cannot run the node, or NULL: CLBlast where the op needs
 * it, the op table's checks, the storage with check_storage (a node about to
 * run; supports_op is asked before storage is assigned), and the kernel's
 * limits. */
const char *ocl_check_node(const ocl_device *dev, const kiln_node *node,
                           bool check_storage);
/* Enqueues a node that passed ocl_check_node with its kernel. */
kiln_status ocl_run_node(ocl_device *dev, const kiln_node *node, size_t i);
/* Records why node i of a graph_compute cannot run, and returns the status. */
kiln_status ocl_refuse(const ocl_device *dev, size_t i, const kiln_node *node,
                       const char *why);

/* Local memory per work-item of a reduction: an acc_t (a double where the
 * device has one; 8 bytes covers both). */
#define OCL_ACC_BYTES sizeof(cl_double)

kiln_status ocl_op_binary(ocl_device *dev, const kiln_node *node, size_t i);
kiln_status ocl_op_unary(ocl_device *dev, const kiln_node *node, size_t i);
kiln_status ocl_op_relu_grad(ocl_device *dev, const kiln_node *node, size_t i);
kiln_status ocl_op_gelu(ocl_device *dev, const kiln_node *node, size_t i);
kiln_status ocl_op_gelu_grad(ocl_device *dev, const kiln_node *node, size_t i);
kiln_status ocl_op_layer_norm(ocl_device *dev, const kiln_node *node, size_t i);
kiln_status ocl_op_layer_norm_grad(ocl_device *dev, const kiln_node *node, size_t i);
kiln_status ocl_op_layer_norm_grad_weight(ocl_device *dev, const kiln_node *node,
                                          size_t i);
kiln_status ocl_op_expand(ocl_device *dev, const kiln_node *node, size_t i);
kiln_status ocl_op_matmul(ocl_device *dev, const kiln_node *node, size_t i);
/* MATMUL's limit: CLBlast's int offsets (ops_matmul.c). */
const char *ocl_matmul_check(const kiln_node *node);
kiln_status ocl_op_transpose(ocl_device *dev, const kiln_node *node, size_t i);
kiln_status ocl_op_permute(ocl_device *dev, const kiln_node *node, size_t i);
/* SLICE and SLICE_GRAD */
kiln_status ocl_op_slice(ocl_device *dev, const kiln_node *node, size_t i);
/* CAUSAL_ATTENTION and its gradient; heads wider than ATTN_D_MAX refused */
kiln_status ocl_op_causal_attention(ocl_device *dev, const kiln_node *node, size_t i);
const char *ocl_attention_limits(const kiln_node *node);
/* STORE_SLICE, in place; its start checked as labels are */
kiln_status ocl_op_store_slice(ocl_device *dev, const kiln_node *node, size_t i);
kiln_status ocl_op_sum_mean(ocl_device *dev, const kiln_node *node, size_t i);
kiln_status ocl_op_sum_to(ocl_device *dev, const kiln_node *node, size_t i);
kiln_status ocl_op_max(ocl_device *dev, const kiln_node *node, size_t i);
kiln_status ocl_op_argmax(ocl_device *dev, const kiln_node *node, size_t i);
kiln_status ocl_op_max_grad(ocl_device *dev, const kiln_node *node, size_t i);
kiln_status ocl_op_softmax(ocl_device *dev, const kiln_node *node, size_t i);
kiln_status ocl_op_softmax_grad(ocl_device *dev, const kiln_node *node, size_t i);
/* CAUSAL_SOFTMAX and CAUSAL_SOFTMAX_GRAD */
kiln_status ocl_op_causal_softmax(ocl_device *dev, const kiln_node *node, size_t i);
kiln_status ocl_op_mse_loss(ocl_device *dev, const kiln_node *node, size_t i);
kiln_status ocl_op_cross_entropy(ocl_device *dev, const kiln_node *node, size_t i);
kiln_status ocl_op_cross_entropy_grad(ocl_device *dev, const kiln_node *node, size_t i);
kiln_status ocl_op_conv2d(ocl_device *dev, const kiln_node *node, size_t i);
kiln_status ocl_op_conv2d_grad_input(ocl_device *dev, const kiln_node *node, size_t i);
kiln_status ocl_op_conv2d_grad_weight(ocl_device *dev, const kiln_node *node, size_t i);
kiln_status ocl_op_max_pool2d(ocl_device *dev, const kiln_node *node, size_t i);
kiln_status ocl_op_max_pool2d_grad(ocl_device *dev, const kiln_node *node, size_t i);
/* SGD_STEP and ADAM_STEP: one node, or (ocl_op_steps) up to OCL_STEP_SLOTS
 * nodes, each checked, of which every two may go together, in one launch */
#define OCL_STEP_SLOTS 8
kiln_status ocl_op_step(ocl_device *dev, const kiln_node *node, size_t i);
kiln_status ocl_op_steps(ocl_device *dev, const kiln_node *const *nodes, size_t count);
/* Whether two step nodes may share a launch: one op, one sum of squares (or
 * none), each of their tensors in the same buffer as the other's, and
 * nothing that one writes (parameter, state) overlapping the other's. */
bool ocl_steps_together(const ocl_device *dev, const kiln_node *a, const kiln_node *b);
kiln_status ocl_op_embedding(ocl_device *dev, const kiln_node *node, size_t i);
kiln_status ocl_op_embedding_grad(ocl_device *dev, const kiln_node *node, size_t i);

/* out[o, j] = the sum (or mean) over k of x[o, k, j], x being [outer, r,
 * inner] at element offset xo of a buffer (ops_reduce.c). */
kiln_status ocl_sum_axis(ocl_device *dev, const kiln_node *out, cl_mem x, uint64_t xo,
                         uint64_t outer, uint64_t r, uint64_t inner, bool mean);
/* The parts to cut runs of r into when `units` outputs (work-groups or
 * work-items) run and `want` (ocl_reduce_want: groups, or work-items when
 * `items`) would fill the device, each part keeping `least` elements: 1 when
 * no cut is worth it. */
uint64_t ocl_reduce_parts(uint64_t units, uint64_t want, uint64_t r, uint64_t least);
uint64_t ocl_reduce_want(const ocl_device *dev, bool items);
/* A device buffer of `count` partial sums (acc_t), valid as ocl_scratch's
 * is, but another buffer, so a node may use both. */
kiln_status ocl_reduce_part_buffer(ocl_device *dev, uint64_t count, cl_mem *mem);
/* The second pass: out [outer, inner] (n elements) from the sums in part
 * [outer, parts, inner], divided by r when mean. */
kiln_status ocl_sum_parts(ocl_device *dev, const kiln_node *out, cl_mem part,
                          uint64_t parts, uint64_t inner, uint64_t r, bool mean,
                          uint64_t n);

/* ---- fusion (fuse.c) ------------------------------------------------------- */

/* ADD then the RELU of it (kiln__add_relu_fusable), in one pass. */
kiln_status ocl_op_add_relu(ocl_device *dev, const kiln_node *add, const kiln_node *relu);
/* How many nodes from nodes[i] (checked already) one launch runs, with
 * *status its result, or 0 when node i runs alone. */
size_t ocl_fuse(ocl_device *dev, const kiln_node *const *nodes, size_t i, size_t n,
                kiln_status *status);

/* Reserves an error slot for a node whose labels a kernel will check
 * (plugin.c); the slot is reported at the next synchronize. */
kiln_status ocl_label_slot(ocl_device *dev, const kiln_node *node, size_t i,
                           const kiln_node *labels, int64_t classes, cl_uint *slot);

#endif /* KILN_OCL_IMPL_H */
