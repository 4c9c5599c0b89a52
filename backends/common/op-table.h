/* op-table.h — kiln's op table: every kiln_op's name, its operands and
 * their dtypes, its shape rule, and how kiln treats it, written once.
 *
 * Core reads it to name ops (kiln_op_name), to check the operands of every
 * op it builds and every node before a backend sees it, and to know which
 * ops kiln_backward differentiates. The in-tree backends (cpu, opencl) read
 * it to decide which nodes they run, so both accept the same nodes and
 * refuse the others in the same words; each keeps only its kernels and,
 * where a kernel has a limit of its own, one extra check.
 *
 * Adding an op: a kiln_op in <kiln/backend.h>, a row here (op-table.c), its
 * constructor and gradient rule in core/graph/, and a kernel per backend
 * (HACKING.md walks through one).
 *
 * Compiled into libkiln and into each in-tree plugin; not installed: a
 * plugin outside the tree sees only <kiln/backend.h> and states its own rules
 * (plugins/README.md). Names here are private (kiln__).
 */
#ifndef KILN_BACKENDS_OP_TABLE_H
#define KILN_BACKENDS_OP_TABLE_H

#include <kiln/backend.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Why a node breaks a rule, or NULL when it keeps it. */
typedef const char *(*kiln__rule_fn)(const kiln_node *node);

/* How kiln treats an op. */
enum {
    /* reaches a backend's graph_compute (all but LEAF and RESHAPE)         */
    KILN__OP_DISPATCHED = 1u << 0,
    /* kiln_backward has a gradient rule for it (core/graph/autodiff.c)     */
    KILN__OP_DIFFERENTIABLE = 1u << 1,
    /* writes its src[0] where it lies: the output's buffer and offset are
     * src[0]'s (the optimiser steps, STORE_SLICE)                         */
    KILN__OP_IN_PLACE = 1u << 2,
    /* runs after every other node, so that every reader of what it
     * overwrites has read it first (the optimiser steps); an in-place op
     * without it runs in graph order and its readers read its output      */
    KILN__OP_RUNS_LAST = 1u << 3,
};

/* Markers in a row's dtypes besides KILN_F32 and KILN_I32: KILN__FLOAT is
 * the op's float type, one of f32, f16 and bf16, the same for the output
 * and every source marked so (the output's, or the first such source's when
 * the output is not marked); KILN__ANY_FLOAT is any of the three, unrelated
 * to the rest (CAST). KILN_F32 in a row means f32 only (the optimiser's
 * steps, whose parameters and state are f32). */
#define KILN__FLOAT     ((kiln_dtype)0x100)
#define KILN__ANY_FLOAT ((kiln_dtype)0x101)
/* An output of the sources' float type, or f32 (MATMUL: a 16-bit product
 * accumulates in f32, and may stay there rather than be rounded). */
#define KILN__FLOAT_OR_F32 ((kiln_dtype)0x102)

typedef struct kiln__op_def {
    const char *name;  /* "matmul": kiln_op_name      */
    int         n_src; /* sources that must be there  */
    int         n_opt; /* optional sources after them */
    kiln_dtype  out_dtype;
    kiln_dtype  src_dtype[KILN_MAX_SRC];
    /* what messages call each source: "a", "x", "labels", ...             */
    const char   *src_name[KILN_MAX_SRC];
    kiln__rule_fn rule;  /* backend.h's shape rule      */
    unsigned      flags; /* KILN__OP_*                  */
    /* sources it updates where they lie besides its output, bit s for
     * src[s] (an optimiser's state): a fallback copies them back          */
    unsigned writes;
} kiln__op_def;

/* The op's row, or NULL for a value outside kiln_op. */
const kiln__op_def *kiln__op_def_of(kiln_op op);
/* The op's name, or "unknown op". */
const char *kiln__op_name(kiln_op op);

/* f32, f16 or bf16. */
bool kiln__is_float(kiln_dtype dtype);

/* f16 or bf16. */
static inline bool kiln__is_half(kiln_dtype dtype)
{
    return dtype == KILN_F16 || dtype == KILN_BF16;
}

/* Bytes per element: 2 for f16 and bf16, 4 for f32 and i32. */
static inline size_t kiln__elem_size(kiln_dtype dtype)
{
    return kiln__is_half(dtype) ? 2 : 4;
}

/* Whether the node or one of its sources is f16 or bf16 (a backend whose
 * kernel for the op is f32's runs it on widened copies). */
bool kiln__node_has_half(const kiln_node *node);
/* The op's float type for an output of dtype *out (NULL: not known yet) and
 * sources of src[] (the row's order): what KILN__FLOAT stands for. */
kiln_dtype kiln__op_float(const kiln__op_def *d, const kiln_dtype *out,
                          const kiln_dtype *src);
/* Why a tensor of dtype `have` cannot stand where the row says `want` in an
 * op whose float type is flt, or NULL. */
const char *kiln__dtype_check(kiln_dtype have, kiln_dtype want, kiln_dtype flt);

/* Why the node breaks its op's row, or NULL: an op that reaches backends,
 * the output's and each source's dtype, required sources present, each
 * tensor's ndim, dims and numel consistent, then the shape rule. Storage is
 * not looked at: this holds before compile assigns it. */
const char *kiln__op_check(const kiln_node *node);

/* Whether t's bytes lie inside its buffer: the backend's own test, since
 * only it knows what a buffer handle is. */
typedef bool (*kiln__extent_fn)(const kiln_node *t);

/* Why the node's storage is wrong for it, or NULL: the output and every
 * source inside their buffers (extent_ok), and an in-place op's output at
 * its src[0]. For a node about to run, after kiln__op_check. */
const char *kiln__op_check_storage(const kiln_node *node, kiln__extent_fn extent_ok);

/* ---- fusion ------------------------------------------------------------------ */

/* Whether a and b share bytes of one buffer; whether they are the same
 * elements of it exactly. */
bool kiln__overlaps(const kiln_node *a, const kiln_node *b);
bool kiln__same_storage(const kiln_node *a, const kiln_node *b);

/* Whether a backend may compute ADD `add` and the RELU `relu` of it in one
 * pass that writes both outputs (a dense layer's bias and activation), f32
 * only: relu reads add alone, and its output either overlaps none of add's
 * operands or is one of them exactly (read, then written at the same index).
 * The memory planner may give the RELU the storage of an operand the ADD was
 * the last to read; any other overlap must run the two one after the other.
 * The caller still checks that relu itself may run. */
bool kiln__add_relu_fusable(const kiln_node *add, const kiln_node *relu);

/* ---- messages ------------------------------------------------------------- */

/* "[3, 4]" (at most KILN__SHAPE_STR bytes, cut short with "...]"). */
#define KILN__SHAPE_STR 96
const char *kiln__shape_str(char *buf, int ndim, const int64_t *dims);

/* "<backend>: node <i> (<op> '<name>') cannot run: <why> (output [..],
 * sources [..] [..])" into buf (512 bytes hold it), for a backend's error.
 * Returns the status to report: KILN_ERR_INVALID_ARG for an op that never
 * reaches a backend, else KILN_ERR_SHAPE. */
kiln_status kiln__refusal(char *buf, size_t len, const char *backend, size_t i,
                          const kiln_node *node, const char *why);

/* ---- extents ---------------------------------------------------------------- */

/* The product of dims[from, to). */
static inline int64_t kiln__dims_product(const kiln_node *t, int from, int to)
{
    int64_t p = 1;
    for (int d = from; d < to; d++)
        p *= t->dims[d];
    return p;
}

/* The last axis's size (1 for a scalar) and the number of rows along it. */
static inline int64_t kiln__last_dim(const kiln_node *t)
{
    return t->ndim > 0 ? t->dims[t->ndim - 1] : 1;
}

static inline int64_t kiln__rows(const kiln_node *t)
{
    return t->ndim > 0 ? kiln__dims_product(t, 0, t->ndim - 1) : 1;
}

/* t seen as [outer, r, inner] around axis (-1: [1, numel, 1]). */
static inline void kiln__axis_extent(const kiln_node *t, int axis, int64_t *outer,
                                     int64_t *r, int64_t *inner)
{
    if (axis == -1) {
        *outer = 1;
        *r     = t->numel;
        *inner = 1;
        return;
    }
    *outer = kiln__dims_product(t, 0, axis);
    *r     = t->dims[axis];
    *inner = kiln__dims_product(t, axis + 1, t->ndim);
}

/* Windows of k, stride apart, over n padded by pad on both sides:
 * (n + 2 * pad - k) / stride + 1, or -1 when not even one fits. */
static inline int64_t kiln__window_count(int64_t n, int64_t k, int64_t stride,
                                         int64_t pad)
{
    int64_t span = n + 2 * pad - k;
    return span < 0 ? -1 : span / stride + 1;
}

#endif /* KILN_BACKENDS_OP_TABLE_H */
