/* core/graph/ops_norm.c — layer_norm over the last axis. */
#include "../kiln-impl.h"

/* weight or bias: [C], C the last axis of x. */
static bool per_column(kiln_graph *g, const char *name, const kiln_tensor *x,
                       const char *what, const kiln_tensor *p)
{
    int64_t C = x->node.dims[x->node.ndim - 1];
    if (p->node.ndim == 1 && p->node.dims[0] == C)
        return true;
    char sx[KILN__SHAPE_STR], sp[KILN__SHAPE_STR];
    kiln__graph_fail(g, KILN_ERR_SHAPE, "%s: x %s and %s %s: expected %s [%lld]", name,
                     kiln__shape_str(sx, x->node.ndim, x->node.dims), what,
                     kiln__shape_str(sp, p->node.ndim, p->node.dims), what, (long long)C);
    return false;
}

KILN_API kiln_tensor *kiln_layer_norm(kiln_graph *g, kiln_tensor *x, kiln_tensor *weight,
                                      kiln_tensor *bias, float eps)
{
    kiln_tensor *src[] = {x, weight, bias};
    const char  *name  = kiln__op_name(KILN_OP_LAYER_NORM);
    if (!kiln__check_sources(g, KILN_OP_LAYER_NORM, src, bias ? 3 : 2))
        return g ? g->poison : NULL;
    char sx[KILN__SHAPE_STR];
    kiln__shape_str(sx, x->node.ndim, x->node.dims);
    if (x->node.ndim < 1 || x->node.dims[x->node.ndim - 1] == 0)
        return kiln__graph_fail(g, KILN_ERR_SHAPE,
                                "%s: x %s: expected at least one axis, the last one "
                                "not empty",
                                name, sx);
    if (!per_column(g, name, x, "weight", weight) ||
        (bias && !per_column(g, name, x, "bias", bias)))
        return g->poison;
    if (!(eps >= 0.0f && eps <= 3.4e38f))
        return kiln__graph_fail(g, KILN_ERR_INVALID_ARG,
                                "%s: eps %g: expected a finite eps >= 0 (1e-5 is usual)",
                                name, (double)eps);
    kiln_tensor *t = kiln__node_new(g, KILN_OP_LAYER_NORM, KILN__FLOAT, x->node.ndim,
                                    x->node.dims, src, 3);
    if (!(t->flags & KILN__POISON))
        t->node.fparam[0] = eps;
    return t;
}
