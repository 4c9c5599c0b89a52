/* core/graph/ops_reduce.c — sum, mean, max, argmax, softmax and log_softmax. */
#include "../kiln-impl.h"

#include <math.h>

static kiln_tensor *reduce_all(kiln_graph *g, kiln_op op, kiln_tensor *a)
{
    if (!kiln__check_sources(g, op, &a, 1))
        return g ? g->poison : NULL;
    kiln_tensor *t = kiln__node_new(g, op, KILN__FLOAT, 0, NULL, &a, 1);
    if (!(t->flags & KILN__POISON))
        t->node.iparam[0] = -1;
    return t;
}

static kiln_tensor *reduce_axis(kiln_graph *g, kiln_op op, kiln_tensor *a, int axis,
                                bool keepdim)
{
    const char *name = kiln__op_name(op);
    if (!kiln__check_sources(g, op, &a, 1))
        return g ? g->poison : NULL;
    int nd = a->node.ndim;
    if (axis < -nd || axis >= nd) {
        char s[KILN__SHAPE_STR];
        return kiln__graph_fail(g, KILN_ERR_SHAPE,
                                "%s: axis %d is out of range for %s: "
                                "expected %d to %d",
                                name, axis, kiln__shape_str(s, nd, a->node.dims), -nd,
                                nd - 1);
    }
    if (axis < 0)
        axis += nd;
    int64_t dims[KILN_MAX_DIMS];
    int     n = 0;
    for (int i = 0; i < nd; i++) {
        if (i != axis)
            dims[n++] = a->node.dims[i];
        else if (keepdim)
            dims[n++] = 1;
    }
    kiln_tensor *t = kiln__node_new(g, op, KILN__FLOAT, n, dims, &a, 1);
    if (!(t->flags & KILN__POISON))
        t->node.iparam[0] = axis;
    return t;
}

KILN_API kiln_tensor *kiln_sum(kiln_graph *g, kiln_tensor *a)
{
    return reduce_all(g, KILN_OP_SUM, a);
}

KILN_API kiln_tensor *kiln_mean(kiln_graph *g, kiln_tensor *a)
{
    return reduce_all(g, KILN_OP_MEAN, a);
}

KILN_API kiln_tensor *kiln_sum_axis(kiln_graph *g, kiln_tensor *a, int axis, bool keepdim)
{
    return reduce_axis(g, KILN_OP_SUM, a, axis, keepdim);
}

KILN_API kiln_tensor *kiln_mean_axis(kiln_graph *g, kiln_tensor *a, int axis,
                                     bool keepdim)
{
    return reduce_axis(g, KILN_OP_MEAN, a, axis, keepdim);
}

/* Ops along the last axis: it must exist and, for those that pick an element
 * of it, must not be empty. */
static bool check_last_axis(kiln_graph *g, kiln_op op, kiln_tensor *a, bool need_elements)
{
    const char *name = kiln__op_name(op);
    if (!kiln__check_sources(g, op, &a, 1))
        return false;
    char s[KILN__SHAPE_STR];
    int  nd = a->node.ndim;
    if (nd == 0) {
        kiln__graph_fail(g, KILN_ERR_SHAPE,
                         "%s: input %s is a scalar, expected at "
                         "least 1 dimension",
                         name, kiln__shape_str(s, 0, NULL));
        return false;
    }
    if (need_elements && a->node.dims[nd - 1] == 0) {
        kiln__graph_fail(g, KILN_ERR_SHAPE,
                         "%s: input %s has an empty last axis, "
                         "expected at least one element to pick",
                         name, kiln__shape_str(s, nd, a->node.dims));
        return false;
    }
    return true;
}

static kiln_tensor *pick_last(kiln_graph *g, kiln_op op, kiln_dtype dtype, kiln_tensor *a)
{
    if (!check_last_axis(g, op, a, true))
        return g ? g->poison : NULL;
    return kiln__node_new(g, op, dtype, a->node.ndim - 1, a->node.dims, &a, 1);
}

KILN_API kiln_tensor *kiln_max(kiln_graph *g, kiln_tensor *a)
{
    return pick_last(g, KILN_OP_MAX, KILN__FLOAT, a);
}

KILN_API kiln_tensor *kiln_argmax(kiln_graph *g, kiln_tensor *a)
{
    return pick_last(g, KILN_OP_ARGMAX, KILN_I32, a);
}

static kiln_tensor *normalise_last(kiln_graph *g, kiln_op op, kiln_tensor *a)
{
    if (!check_last_axis(g, op, a, false))
        return g ? g->poison : NULL;
    return kiln__node_new(g, op, KILN__FLOAT, a->node.ndim, a->node.dims, &a, 1);
}

KILN_API kiln_tensor *kiln_softmax(kiln_graph *g, kiln_tensor *a)
{
    return normalise_last(g, KILN_OP_SOFTMAX, a);
}

KILN_API kiln_tensor *kiln_log_softmax(kiln_graph *g, kiln_tensor *a)
{
    return normalise_last(g, KILN_OP_LOG_SOFTMAX, a);
}

/* x [..., T, T], or [..., Tq, Tk] with an offset i32 [1]. */
static kiln_tensor *causal_softmax(kiln_graph *g, kiln_tensor *x, float scale,
                                   kiln_tensor *offset)
{
    const kiln_op op    = KILN_OP_CAUSAL_SOFTMAX;
    kiln_tensor  *src[] = {x, offset};
    if (!kiln__check_sources(g, op, src, offset ? 2 : 1))
        return g ? g->poison : NULL;
    const kiln_node *n = &x->node;
    char             s[KILN__SHAPE_STR];
    kiln__shape_str(s, n->ndim, n->dims);
    if (!offset && (n->ndim < 2 || n->dims[n->ndim - 2] != n->dims[n->ndim - 1]))
        return kiln__graph_fail(g, KILN_ERR_SHAPE,
                                "%s: input %s: expected [..., T, T], at least 2-D with "
                                "the last two axes equal",
                                kiln__op_name(op), s);
    if (offset && n->ndim < 2)
        return kiln__graph_fail(g, KILN_ERR_SHAPE,
                                "%s: input %s: expected [..., Tq, Tk], at least 2-D",
                                kiln__op_name(op), s);
    if (offset && offset->node.numel != 1) {
        char o[KILN__SHAPE_STR];
        return kiln__graph_fail(g, KILN_ERR_SHAPE, "%s: offset %s: expected one element",
                                kiln__op_name(op),
                                kiln__shape_str(o, offset->node.ndim, offset->node.dims));
    }
    if (!isfinite(scale))
        return kiln__graph_fail(g, KILN_ERR_INVALID_ARG,
                                "%s: scale %g: expected a finite number",
                                kiln__op_name(op), (double)scale);
    kiln_tensor *t = kiln__node_new(g, op, KILN__FLOAT, n->ndim, n->dims, src,
                                    offset ? 2 : 1);
    if (!(t->flags & KILN__POISON))
        t->node.fparam[0] = scale;
    return t;
}

KILN_API kiln_tensor *kiln_causal_softmax(kiln_graph *g, kiln_tensor *x, float scale)
{
    return causal_softmax(g, x, scale, NULL);
}

KILN_API kiln_tensor *kiln_causal_softmax_offset(kiln_graph *g, kiln_tensor *x,
                                                 float scale, kiln_tensor *offset)
{
    if (g && !offset)
        return kiln__graph_fail(g, KILN_ERR_INVALID_ARG,
                                "%s: offset is NULL: expected an i32 [1] tensor (or call "
                                "kiln_causal_softmax)",
                                kiln__op_name(KILN_OP_CAUSAL_SOFTMAX));
    return causal_softmax(g, x, scale, offset);
}
