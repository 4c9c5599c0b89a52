/* core/graph/graph.c — graphs, nodes, leaves and the sticky construction error. */
#include "../kiln-impl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void tensor_free(kiln_tensor *t)
{
    if (!t)
        return;
    free(t->staged);
    free(t->name);
    free(t);
}

KILN_API kiln_graph *kiln_graph_new(kiln_context *ctx)
{
    if (!ctx) {
        kiln__error(KILN_ERR_INVALID_ARG, "kiln_graph_new: ctx is NULL");
        return NULL;
    }
    kiln_graph *g = kiln__calloc(1, sizeof *g, "a graph");
    if (!g)
        return NULL;
    g->ctx    = ctx;
    g->poison = kiln__calloc(1, sizeof *g->poison, "a graph");
    if (!g->poison) {
        free(g);
        return NULL;
    }
    g->poison->graph = g;
    g->poison->flags = KILN__POISON;
    return g;
}

KILN_API void kiln_graph_free(kiln_graph *g)
{
    if (!g)
        return;
    while (g->n_release > 0)
        g->release[--g->n_release](g);
    for (size_t i = 0; i < g->n_nodes; i++)
        tensor_free(g->nodes[i]);
    free(g->nodes);
    tensor_free(g->poison);
    free(g->error);
    free(g);
}

void kiln__graph_on_free(kiln_graph *g, void (*release)(kiln_graph *g))
{
    for (int i = 0; i < g->n_release; i++)
        if (g->release[i] == release)
            return;
    /* a fixed few modules attach state: running out is a bug in kiln */
    if (g->n_release < KILN__GRAPH_RELEASE_MAX)
        g->release[g->n_release++] = release;
}

KILN_API const char *kiln_graph_error(const kiln_graph *g)
{
    if (!g)
        return "graph is NULL";
    return g->status == KILN_OK ? NULL : (g->error ? g->error : "out of memory");
}

KILN_API kiln_status kiln_graph_status(const kiln_graph *g)
{
    return g ? g->status : KILN_ERR_INVALID_ARG;
}

kiln_tensor *kiln__graph_fail(kiln_graph *g, kiln_status status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    kiln__verror(status, fmt, ap);
    va_end(ap);
    if (g->status == KILN_OK) {
        g->status = status;
        g->error  = kiln__strdup(kiln_last_error(), "a graph error");
    }
    return g->poison;
}

KILN_API const char *kiln_op_name(kiln_op op)
{
    return kiln__op_name(op);
}

int64_t kiln__numel(int ndim, const int64_t *dims)
{
    int64_t n = 1;
    for (int i = 0; i < ndim; i++)
        n *= dims[i];
    return n;
}

size_t kiln__tensor_bytes(const kiln_tensor *t)
{
    return (size_t)t->node.numel * kiln__elem_size(t->node.dtype);
}

kiln_tensor *kiln__storage(kiln_tensor *t)
{
    while (t->view_src || t->inplace)
        t = t->view_src ? t->view_src : t->inplace;
    return t;
}

bool kiln__check_operands(kiln_graph *g, const char *op, kiln_tensor *const *t, int n)
{
    if (!g) {
        kiln__error(KILN_ERR_INVALID_ARG, "kiln_%s: graph is NULL", op);
        return false;
    }
    for (int i = 0; i < n; i++) {
        if (!t[i]) {
            kiln__graph_fail(g, KILN_ERR_INVALID_ARG, "%s: operand %d is NULL", op,
                             i + 1);
            return false;
        }
        if (t[i]->graph != g) {
            kiln__graph_fail(g, KILN_ERR_INVALID_ARG,
                             "%s: operand %d belongs to "
                             "another graph",
                             op, i + 1);
            return false;
        }
        if (t[i]->flags & KILN__POISON)
            return false; /* the first error is already recorded */
    }
    if (g->compiled) {
        kiln__graph_fail(g, KILN_ERR_STATE,
                         "%s: the graph is already compiled; "
                         "build every op before kiln_graph_compile",
                         op);
        return false;
    }
    return true;
}

bool kiln__check_float(kiln_graph *g, const char *op, const char *which,
                       const kiln_tensor *t)
{
    if (kiln__is_float(t->node.dtype))
        return true;
    char s[KILN__SHAPE_STR];
    kiln__graph_fail(g, KILN_ERR_SHAPE, "%s: %s %s is %s, expected f32, f16 or bf16", op,
                     which, kiln__shape_str(s, t->node.ndim, t->node.dims),
                     kiln__dtype_name(t->node.dtype));
    return false;
}

/* What the row wants in words: "f32", "i32", "f16" (the op's float type). */
static const char *wanted(kiln_dtype want, kiln_dtype flt)
{
    if (want == KILN__ANY_FLOAT)
        return "f32, f16 or bf16";
    return kiln__dtype_name(want == KILN__FLOAT ? flt : want);
}

bool kiln__check_sources(kiln_graph *g, kiln_op op, kiln_tensor *const *t, int n)
{
    const kiln__op_def *d = kiln__op_def_of(op);
    if (!kiln__check_operands(g, d->name, t, n))
        return false;
    kiln_dtype src[KILN_MAX_SRC];
    for (int i = 0; i < KILN_MAX_SRC; i++)
        src[i] = i < n && t[i] ? t[i]->node.dtype : (kiln_dtype)-1;
    kiln_dtype flt = kiln__op_float(d, NULL, src);
    if (!kiln__is_float(flt))
        flt = KILN_F32; /* a first float source of the wrong type: say f32 */
    for (int i = 0; i < n; i++) {
        kiln_dtype want = d->src_dtype[i];
        if (!t[i] || !kiln__dtype_check(t[i]->node.dtype, want, flt))
            continue;
        char s[KILN__SHAPE_STR];
        const char *hint = kiln__is_float(t[i]->node.dtype) && kiln__is_float(flt)
                               ? " (cast it with kiln_cast)"
                               : "";
        if (want == KILN_F32 && kiln__is_float(t[i]->node.dtype))
            hint = " (this op runs in f32 only)";
        kiln__graph_fail(g, KILN_ERR_SHAPE, "%s: %s %s is %s, expected %s%s", d->name,
                         d->src_name[i],
                         kiln__shape_str(s, t[i]->node.ndim, t[i]->node.dims),
                         kiln__dtype_name(t[i]->node.dtype), wanted(want, flt), hint);
        return false;
    }
    return true;
}

static bool check_dims(kiln_graph *g, const char *op, int ndim, const int64_t *dims)
{
    if (ndim < 0 || ndim > KILN_MAX_DIMS) {
        kiln__graph_fail(g, KILN_ERR_SHAPE, "%s: %d dimensions, expected 0 to %d", op,
                         ndim, KILN_MAX_DIMS);
        return false;
    }
    if (ndim > 0 && !dims) {
        kiln__graph_fail(g, KILN_ERR_INVALID_ARG, "%s: dims is NULL for %d dimensions",
                         op, ndim);
        return false;
    }
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) {
        char s[KILN__SHAPE_STR];
        if (dims[i] < 0) {
            kiln__graph_fail(g, KILN_ERR_SHAPE, "%s: shape %s has a negative dimension",
                             op, kiln__shape_str(s, ndim, dims));
            return false;
        }
        if (dims[i] && n > ((int64_t)1 << 40) / dims[i]) {
            kiln__graph_fail(g, KILN_ERR_SHAPE,
                             "%s: shape %s has more than 2^40 "
                             "elements",
                             op, kiln__shape_str(s, ndim, dims));
            return false;
        }
        n *= dims[i];
    }
    return true;
}

static bool graph_push(kiln_graph *g, kiln_tensor *t)
{
    if (g->n_nodes == g->cap_nodes) {
        size_t        cap   = g->cap_nodes ? 2 * g->cap_nodes : 64;
        kiln_tensor **grown = realloc(g->nodes, cap * sizeof *grown);
        if (!grown)
            return false;
        g->nodes     = grown;
        g->cap_nodes = cap;
    }
    t->id                  = g->n_nodes;
    g->nodes[g->n_nodes++] = t;
    return true;
}

kiln_tensor *kiln__node_new(kiln_graph *g, kiln_op op, kiln_dtype dtype, int ndim,
                            const int64_t *dims, kiln_tensor *const *src, int n_src)
{
    const char *name = kiln__op_name(op);
    if (!check_dims(g, name, ndim, dims))
        return g->poison;
    kiln_tensor *t = calloc(1, sizeof *t);
    if (!t || !graph_push(g, t)) {
        free(t);
        return kiln__graph_fail(g, KILN_ERR_NO_MEMORY, "%s: out of memory for a node",
                                name);
    }
    t->graph      = g;
    t->node.op    = op;
    t->node.dtype = dtype == KILN__FLOAT ? src[0]->node.dtype : dtype;
    t->node.ndim  = ndim;
    for (int i = 0; i < ndim; i++)
        t->node.dims[i] = dims[i];
    t->node.numel = kiln__numel(ndim, dims);
    for (int i = 0; i < n_src && i < KILN_MAX_SRC; i++)
        t->node.src[i] = src[i] ? &src[i]->node : NULL;
    return t;
}

/* ---- leaves ---------------------------------------------------------------- */

static kiln_tensor *leaf_new(kiln_graph *g, const char *what, unsigned flags,
                             const char *name, kiln_dtype dtype, int ndim,
                             const int64_t *dims)
{
    if (!kiln__check_operands(g, what, NULL, 0))
        return g ? g->poison : NULL;
    if ((unsigned)dtype > KILN_BF16)
        return kiln__graph_fail(g, KILN_ERR_INVALID_ARG,
                                "%s: dtype %d, expected "
                                "KILN_F32, KILN_I32, KILN_F16 or KILN_BF16",
                                what, (int)dtype);
    if (!check_dims(g, what, ndim, dims))
        return g->poison;
    kiln_tensor *t = kiln__node_new(g, KILN_OP_LEAF, dtype, ndim, dims, NULL, 0);
    if (t == g->poison)
        return t;
    t->flags = flags;
    if (name) {
        t->name = kiln__strdup(name, "a tensor name");
        if (!t->name)
            return kiln__graph_fail(g, KILN_ERR_NO_MEMORY, "%s: out of memory", what);
        t->node.name = t->name;
    }
    return t;
}

KILN_API kiln_tensor *kiln_input(kiln_graph *g, const char *name, kiln_dtype dtype,
                                 int ndim, const int64_t *dims)
{
    return leaf_new(g, "input", KILN__INPUT, name, dtype, ndim, dims);
}

/* Weight files identify parameters by name, so two of one name would make a
 * saved file ambiguous. */
static const kiln_tensor *find_param(const kiln_graph *g, const char *name)
{
    for (size_t i = 0; name && i < g->n_nodes; i++)
        if ((g->nodes[i]->flags & KILN__PARAM) && g->nodes[i]->name &&
            strcmp(g->nodes[i]->name, name) == 0)
            return g->nodes[i];
    return NULL;
}

KILN_API kiln_tensor *kiln_param(kiln_graph *g, const char *name, int ndim,
                                 const int64_t *dims)
{
    const kiln_tensor *p = g ? find_param(g, name) : NULL;
    if (p) {
        char s[KILN__SHAPE_STR];
        return kiln__graph_fail(g, KILN_ERR_INVALID_ARG,
                                "param: the graph already has "
                                "a parameter named \"%s\" (%s); parameter names must "
                                "be unique, since weight files identify tensors by name",
                                name, kiln__shape_str(s, p->node.ndim, p->node.dims));
    }
    return leaf_new(g, "param", KILN__PARAM, name, KILN_F32, ndim, dims);
}

KILN_API kiln_tensor *kiln_const(kiln_graph *g, kiln_dtype dtype, int ndim,
                                 const int64_t *dims, const void *data)
{
    if (g && !data)
        return kiln__graph_fail(g, KILN_ERR_INVALID_ARG, "const: data is NULL");
    kiln_tensor *t = leaf_new(g, "const", KILN__CONST, NULL, dtype, ndim, dims);
    if (!t || (t->flags & KILN__POISON))
        return t;
    t->staged = kiln__malloc(kiln__tensor_bytes(t), "a constant");
    if (!t->staged)
        return kiln__graph_fail(g, KILN_ERR_NO_MEMORY,
                                "const: out of memory for "
                                "%zu bytes",
                                kiln__tensor_bytes(t));
    memcpy(t->staged, data, kiln__tensor_bytes(t));
    t->written = true;
    return t;
}

KILN_API kiln_tensor *kiln_scalar(kiln_graph *g, float value)
{
    return kiln_const(g, KILN_F32, 0, NULL, &value);
}

KILN_API kiln_status kiln_output(kiln_graph *g, kiln_tensor *t)
{
    if (!g)
        return kiln__error(KILN_ERR_INVALID_ARG, "kiln_output: graph is NULL");
    if (!kiln__check_operands(g, "output", &t, 1))
        return g->status != KILN_OK ? g->status : KILN_ERR_INVALID_ARG;
    t->flags |= KILN__OUTPUT;
    return KILN_OK;
}

KILN_API size_t kiln_graph_param_count(const kiln_graph *g)
{
    size_t n = 0;
    for (size_t i = 0; g && i < g->n_nodes; i++)
        n += (g->nodes[i]->flags & KILN__PARAM) != 0;
    return n;
}

KILN_API kiln_tensor *kiln_graph_param(const kiln_graph *g, size_t index)
{
    size_t seen = 0;
    for (size_t i = 0; g && i < g->n_nodes; i++)
        if ((g->nodes[i]->flags & KILN__PARAM) && seen++ == index)
            return g->nodes[i];
    kiln__error(KILN_ERR_INVALID_ARG,
                "kiln_graph_param: index %zu is past the last "
                "parameter (%zu)",
                index, kiln_graph_param_count(g));
    return NULL;
}

KILN_API kiln_tensor *kiln_graph_find(const kiln_graph *g, const char *name)
{
    for (size_t i = 0; g && name && i < g->n_nodes; i++)
        if (g->nodes[i]->name && strcmp(g->nodes[i]->name, name) == 0)
            return g->nodes[i];
    kiln__error(KILN_ERR_NOT_FOUND, "kiln_graph_find: no tensor is named \"%s\"",
                name ? name : "(NULL)");
    return NULL;
}
