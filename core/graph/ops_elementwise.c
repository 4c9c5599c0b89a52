/* core/graph/ops_elementwise.c — add, sub, mul, div with broadcasting; unary ops. */
#include "../kiln-impl.h"

/* The broadcast rule: equal shapes, or the smaller operand, with its leading
 * 1s dropped, equals the trailing dimensions of the larger. Backends then
 * compute out[i] = a[i % numel(a)] OP b[i % numel(b)]. */
static bool suffix_of(const kiln_node *small, const kiln_node *big)
{
    int skip = 0;
    while (skip < small->ndim && small->dims[skip] == 1)
        skip++;
    int n = small->ndim - skip;
    if (n > big->ndim)
        return false;
    for (int i = 0; i < n; i++)
        if (small->dims[skip + i] != big->dims[big->ndim - n + i])
            return false;
    return true;
}

static kiln_tensor *binary(kiln_graph *g, kiln_op op, kiln_tensor *a, kiln_tensor *b)
{
    const char  *name = kiln__op_name(op);
    kiln_tensor *ab[] = {a, b};
    if (!kiln__check_sources(g, op, ab, 2))
        return g ? g->poison : NULL;
    /* The output takes the shape of the operand the other one broadcasts to;
     * when each fits the other (they differ only by leading 1s) the one with
     * more dimensions. */
    const kiln_node *big;
    bool b_fits = suffix_of(&b->node, &a->node), a_fits = suffix_of(&a->node, &b->node);
    if (b_fits && (!a_fits || a->node.ndim >= b->node.ndim))
        big = &a->node;
    else if (a_fits)
        big = &b->node;
    else {
        char sa[KILN__SHAPE_STR], sb[KILN__SHAPE_STR];
        return kiln__graph_fail(g, KILN_ERR_SHAPE,
                                "%s: a %s and b %s do not broadcast: "
                                "expected equal shapes, or one whose shape (leading 1s "
                                "dropped) equals the trailing dimensions of the other",
                                name, kiln__shape_str(sa, a->node.ndim, a->node.dims),
                                kiln__shape_str(sb, b->node.ndim, b->node.dims));
    }
    return kiln__node_new(g, op, KILN__FLOAT, big->ndim, big->dims, ab, 2);
}

KILN_API kiln_tensor *kiln_add(kiln_graph *g, kiln_tensor *a, kiln_tensor *b)
{
    return binary(g, KILN_OP_ADD, a, b);
}

KILN_API kiln_tensor *kiln_sub(kiln_graph *g, kiln_tensor *a, kiln_tensor *b)
{
    return binary(g, KILN_OP_SUB, a, b);
}

KILN_API kiln_tensor *kiln_mul(kiln_graph *g, kiln_tensor *a, kiln_tensor *b)
{
    return binary(g, KILN_OP_MUL, a, b);
}

KILN_API kiln_tensor *kiln_div(kiln_graph *g, kiln_tensor *a, kiln_tensor *b)
{
    return binary(g, KILN_OP_DIV, a, b);
}

static kiln_tensor *unary(kiln_graph *g, kiln_op op, kiln_tensor *a)
{
    if (!kiln__check_sources(g, op, &a, 1))
        return g ? g->poison : NULL;
    return kiln__node_new(g, op, KILN__FLOAT, a->node.ndim, a->node.dims, &a, 1);
}

KILN_API kiln_tensor *kiln_neg(kiln_graph *g, kiln_tensor *a)
{
    return unary(g, KILN_OP_NEG, a);
}
KILN_API kiln_tensor *kiln_exp(kiln_graph *g, kiln_tensor *a)
{
    return unary(g, KILN_OP_EXP, a);
}
KILN_API kiln_tensor *kiln_log(kiln_graph *g, kiln_tensor *a)
{
    return unary(g, KILN_OP_LOG, a);
}
KILN_API kiln_tensor *kiln_sqrt(kiln_graph *g, kiln_tensor *a)
{
    return unary(g, KILN_OP_SQRT, a);
}
KILN_API kiln_tensor *kiln_relu(kiln_graph *g, kiln_tensor *a)
{
    return unary(g, KILN_OP_RELU, a);
}
KILN_API kiln_tensor *kiln_sigmoid(kiln_graph *g, kiln_tensor *a)
{
    return unary(g, KILN_OP_SIGMOID, a);
}
KILN_API kiln_tensor *kiln_tanh(kiln_graph *g, kiln_tensor *a)
{
    return unary(g, KILN_OP_TANH, a);
}

KILN_API kiln_tensor *kiln_gelu(kiln_graph *g, kiln_tensor *a)
{
    return unary(g, KILN_OP_GELU, a);
}

KILN_API kiln_tensor *kiln_scale(kiln_graph *g, kiln_tensor *a, float s)
{
    kiln_tensor *t = unary(g, KILN_OP_SCALE, a);
    if (t && !(t->flags & KILN__POISON))
        t->node.fparam[0] = s;
    return t;
}

KILN_API kiln_tensor *kiln_cast(kiln_graph *g, kiln_tensor *a, kiln_dtype dtype)
{
    if (!kiln__check_sources(g, KILN_OP_CAST, &a, 1))
        return g ? g->poison : NULL;
    if (!kiln__is_float(dtype))
        return kiln__graph_fail(g, KILN_ERR_INVALID_ARG,
                                "cast: dtype %s (%d), expected KILN_F32, KILN_F16 or "
                                "KILN_BF16",
                                kiln__dtype_name(dtype), (int)dtype);
    if (a->node.dtype == dtype)
        return a;
    return kiln__node_new(g, KILN_OP_CAST, dtype, a->node.ndim, a->node.dims, &a, 1);
}
