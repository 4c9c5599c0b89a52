/* core/graph/ops_grad.c — constructors of the gradient ops kiln_backward appends
 * (backend.h: SUM_TO .. CROSS_ENTROPY_GRAD, the transformer ops' GELU_GRAD,
 * LAYER_NORM_GRAD and LAYER_NORM_GRAD_WEIGHT, SLICE_GRAD, and EMBEDDING_GRAD ..).
 *
 * Only autodiff.c calls these, with shapes it derived itself. They check
 * anyway, as every constructor does, so that a wrong backward rule is a graph
 * error naming the op and the shapes, not a backend reading past a buffer. */
#include "../kiln-impl.h"

static bool same_shape(const kiln_node *a, const kiln_node *b)
{
    if (a->ndim != b->ndim)
        return false;
    for (int i = 0; i < a->ndim; i++)
        if (a->dims[i] != b->dims[i])
            return false;
    return true;
}

/* Records "<op>: <what_a> [..] and <what_b> [..]: expected <expected>". */
static kiln_tensor *mismatch(kiln_graph *g, kiln_op op, const char *what_a,
                             const kiln_node *a, const char *what_b, const kiln_node *b,
                             const char *expected)
{
    char sa[KILN__SHAPE_STR], sb[KILN__SHAPE_STR];
    return kiln__graph_fail(g, KILN_ERR_SHAPE, "%s: %s %s and %s %s: expected %s",
                            kiln__op_name(op), what_a,
                            kiln__shape_str(sa, a->ndim, a->dims), what_b,
                            kiln__shape_str(sb, b->ndim, b->dims), expected);
}

kiln_tensor *kiln__sum_to(kiln_graph *g, kiln_tensor *a, int ndim, const int64_t *dims)
{
    if (!kiln__check_sources(g, KILN_OP_SUM_TO, &a, 1))
        return g ? g->poison : NULL;
    if (ndim < 0 || ndim > KILN_MAX_DIMS || (ndim > 0 && !dims))
        return kiln__graph_fail(g, KILN_ERR_SHAPE,
                                "%s: %d dimensions, expected 0 "
                                "to %d",
                                kiln__op_name(KILN_OP_SUM_TO), ndim, KILN_MAX_DIMS);
    int64_t n = kiln__numel(ndim, dims);
    if (n == 0 ? a->node.numel != 0 : a->node.numel % n != 0) {
        kiln_node target = {.ndim = ndim};
        for (int i = 0; i < ndim; i++)
            target.dims[i] = dims[i];
        return mismatch(g, KILN_OP_SUM_TO, "input", &a->node, "target", &target,
                        "a target whose element count divides the input's");
    }
    return kiln__node_new(g, KILN_OP_SUM_TO, KILN__FLOAT, ndim, dims, &a, 1);
}

kiln_tensor *kiln__expand(kiln_graph *g, kiln_tensor *a, int axis, int ndim,
                          const int64_t *dims)
{
    if (!kiln__check_sources(g, KILN_OP_EXPAND, &a, 1))
        return g ? g->poison : NULL;
    if (ndim < 0 || ndim > KILN_MAX_DIMS || (ndim > 0 && !dims) || axis < -1 ||
        axis >= ndim)
        return kiln__graph_fail(g, KILN_ERR_SHAPE,
                                "%s: axis %d of %d dimensions, "
                                "expected -1 or an axis of at most %d dimensions",
                                kiln__op_name(KILN_OP_EXPAND), axis, ndim, KILN_MAX_DIMS);
    kiln_node target = {.ndim = ndim};
    int64_t   rest   = 1; /* the target's element count without the axis */
    for (int i = 0; i < ndim; i++) {
        target.dims[i] = dims[i];
        rest *= i == axis ? 1 : dims[i];
    }
    if (a->node.numel != (axis < 0 ? 1 : rest))
        return mismatch(g, KILN_OP_EXPAND, "input", &a->node, "target", &target,
                        axis < 0 ? "one element"
                                 : "the target's shape without the "
                                   "axis, or with it of size 1");
    kiln_tensor *t = kiln__node_new(g, KILN_OP_EXPAND, KILN__FLOAT, ndim, dims, &a, 1);
    if (!(t->flags & KILN__POISON))
        t->node.iparam[0] = axis;
    return t;
}

kiln_tensor *kiln__relu_grad(kiln_graph *g, kiln_tensor *gy, kiln_tensor *x)
{
    kiln_tensor *src[] = {gy, x};
    if (!kiln__check_sources(g, KILN_OP_RELU_GRAD, src, 2))
        return g ? g->poison : NULL;
    if (!same_shape(&gy->node, &x->node))
        return mismatch(g, KILN_OP_RELU_GRAD, "gradient", &gy->node, "x", &x->node,
                        "equal shapes");
    return kiln__node_new(g, KILN_OP_RELU_GRAD, KILN__FLOAT, x->node.ndim, x->node.dims, src,
                          2);
}

kiln_tensor *kiln__gelu_grad(kiln_graph *g, kiln_tensor *gy, kiln_tensor *x)
{
    kiln_tensor *src[] = {gy, x};
    if (!kiln__check_sources(g, KILN_OP_GELU_GRAD, src, 2))
        return g ? g->poison : NULL;
    if (!same_shape(&gy->node, &x->node))
        return mismatch(g, KILN_OP_GELU_GRAD, "gradient", &gy->node, "x", &x->node,
                        "equal shapes");
    return kiln__node_new(g, KILN_OP_GELU_GRAD, KILN__FLOAT, x->node.ndim, x->node.dims, src,
                          2);
}

kiln_tensor *kiln__max_grad(kiln_graph *g, kiln_tensor *gy, kiln_tensor *x)
{
    kiln_tensor *src[] = {gy, x};
    if (!kiln__check_sources(g, KILN_OP_MAX_GRAD, src, 2))
        return g ? g->poison : NULL;
    const kiln_node *xn = &x->node;
    if (xn->ndim < 1 || gy->node.ndim != xn->ndim - 1 ||
        kiln__numel(xn->ndim - 1, xn->dims) != gy->node.numel ||
        (xn->numel == 0 && gy->node.numel != 0))
        return mismatch(g, KILN_OP_MAX_GRAD, "gradient", &gy->node, "x", xn,
                        "x of at least 1 dimension, with a non-empty last axis, and "
                        "a gradient of x's shape without its last axis");
    return kiln__node_new(g, KILN_OP_MAX_GRAD, KILN__FLOAT, xn->ndim, xn->dims, src, 2);
}

kiln_tensor *kiln__softmax_grad(kiln_graph *g, kiln_op op, kiln_tensor *gy,
                                kiln_tensor *y)
{
    kiln_tensor *src[] = {gy, y};
    if (op != KILN_OP_SOFTMAX_GRAD && op != KILN_OP_LOG_SOFTMAX_GRAD)
        return kiln__graph_fail(g, KILN_ERR_INVALID_ARG,
                                "kiln__softmax_grad: op %s, "
                                "expected %s or %s",
                                kiln__op_name(op), kiln__op_name(KILN_OP_SOFTMAX_GRAD),
                                kiln__op_name(KILN_OP_LOG_SOFTMAX_GRAD));
    if (!kiln__check_sources(g, op, src, 2))
        return g ? g->poison : NULL;
    if (y->node.ndim < 1 || !same_shape(&gy->node, &y->node))
        return mismatch(g, op, "gradient", &gy->node, "y", &y->node,
                        "equal shapes of at least 1 dimension");
    return kiln__node_new(g, op, KILN__FLOAT, y->node.ndim, y->node.dims, src, 2);
}

/* gy must be the gradient of fwd's output, and fwd a node of op `want`. */
static bool check_fwd(kiln_graph *g, kiln_op op, kiln_tensor *gy, kiln_tensor *fwd,
                      kiln_op want)
{
    kiln_tensor *src[] = {gy, fwd};
    if (!kiln__check_sources(g, op, src, 2))
        return false;
    if (fwd->node.op != want) {
        kiln__graph_fail(g, KILN_ERR_INVALID_ARG,
                         "%s: the forward node is %s, "
                         "expected %s",
                         kiln__op_name(op), kiln__op_name(fwd->node.op),
                         kiln__op_name(want));
        return false;
    }
    if (!same_shape(&gy->node, &fwd->node)) {
        mismatch(g, op, "gradient", &gy->node, "forward output", &fwd->node,
                 "equal shapes");
        return false;
    }
    return true;
}

/* A node of op with sources {gy, others...}, the shape of `like` and the
 * forward node's integer parameters. */
static kiln_tensor *grad_node(kiln_graph *g, kiln_op op, kiln_tensor *const *src, int n,
                              const kiln_tensor *like, const kiln_tensor *fwd)
{
    kiln_tensor *t = kiln__node_new(g, op, KILN__FLOAT, like->node.ndim, like->node.dims,
                                    src, n);
    if (!(t->flags & KILN__POISON))
        for (int i = 0; i < KILN_MAX_IPARAM; i++)
            t->node.iparam[i] = fwd->node.iparam[i];
    return t;
}

kiln_tensor *kiln__conv2d_grad(kiln_graph *g, kiln_op op, kiln_tensor *gy,
                               kiln_tensor *fwd)
{
    if (op != KILN_OP_CONV2D_GRAD_INPUT && op != KILN_OP_CONV2D_GRAD_WEIGHT)
        return kiln__graph_fail(g, KILN_ERR_INVALID_ARG,
                                "kiln__conv2d_grad: op %s, "
                                "expected %s or %s",
                                kiln__op_name(op),
                                kiln__op_name(KILN_OP_CONV2D_GRAD_INPUT),
                                kiln__op_name(KILN_OP_CONV2D_GRAD_WEIGHT));
    if (!check_fwd(g, op, gy, fwd, KILN_OP_CONV2D))
        return g ? g->poison : NULL;
    kiln_tensor *x     = (kiln_tensor *)fwd->node.src[0],
                *w     = (kiln_tensor *)fwd->node.src[1];
    bool         input = op == KILN_OP_CONV2D_GRAD_INPUT;
    kiln_tensor *src[] = {gy, input ? w : x};
    return grad_node(g, op, src, 2, input ? x : w, fwd);
}

kiln_tensor *kiln__max_pool2d_grad(kiln_graph *g, kiln_tensor *gy, kiln_tensor *fwd)
{
    if (!check_fwd(g, KILN_OP_MAX_POOL2D_GRAD, gy, fwd, KILN_OP_MAX_POOL2D))
        return g ? g->poison : NULL;
    kiln_tensor *x     = (kiln_tensor *)fwd->node.src[0];
    kiln_tensor *src[] = {gy, x};
    return grad_node(g, KILN_OP_MAX_POOL2D_GRAD, src, 2, x, fwd);
}

kiln_tensor *kiln__cross_entropy_grad(kiln_graph *g, kiln_tensor *gy, kiln_tensor *fwd)
{
    if (!check_fwd(g, KILN_OP_CROSS_ENTROPY_GRAD, gy, fwd, KILN_OP_CROSS_ENTROPY))
        return g ? g->poison : NULL;
    kiln_tensor *logits = (kiln_tensor *)fwd->node.src[0];
    kiln_tensor *src[]  = {gy, logits, (kiln_tensor *)fwd->node.src[1]};
    return grad_node(g, KILN_OP_CROSS_ENTROPY_GRAD, src, 3, logits, fwd);
}

kiln_tensor *kiln__embedding_grad(kiln_graph *g, kiln_tensor *gy, kiln_tensor *fwd)
{
    const kiln_op op = KILN_OP_EMBEDDING_GRAD;
    if (!fwd || fwd->node.op != KILN_OP_EMBEDDING)
        return kiln__graph_fail(g, KILN_ERR_INVALID_ARG,
                                "%s: the forward node is %s, expected %s",
                                kiln__op_name(op),
                                fwd ? kiln__op_name(fwd->node.op) : "NULL",
                                kiln__op_name(KILN_OP_EMBEDDING));
    kiln_tensor *table = (kiln_tensor *)fwd->node.src[0];
    kiln_tensor *src[] = {gy, (kiln_tensor *)fwd->node.src[1]};
    if (!kiln__check_sources(g, op, src, 2))
        return g ? g->poison : NULL;
    if (!same_shape(&gy->node, &fwd->node))
        return mismatch(g, op, "gradient", &gy->node, "forward output", &fwd->node,
                        "equal shapes");
    return grad_node(g, op, src, 2, table, fwd);
}

kiln_tensor *kiln__causal_softmax_grad(kiln_graph *g, kiln_tensor *gy, kiln_tensor *y)
{
    const kiln_op op = KILN_OP_CAUSAL_SOFTMAX_GRAD;
    if (!check_fwd(g, op, gy, y, KILN_OP_CAUSAL_SOFTMAX))
        return g ? g->poison : NULL;
    kiln_tensor *src[] = {gy, y, (kiln_tensor *)y->node.src[1]}; /* the offset, if any */
    kiln_tensor *t     = grad_node(g, op, src, src[2] ? 3 : 2, y, y);
    if (!(t->flags & KILN__POISON))
        t->node.fparam[0] = y->node.fparam[0];
    return t;
}

kiln_tensor *kiln__causal_attention_grad(kiln_graph *g, kiln_tensor *gy, kiln_tensor *fwd)
{
    const kiln_op op = KILN_OP_CAUSAL_ATTENTION_GRAD;
    if (!check_fwd(g, op, gy, fwd, KILN_OP_CAUSAL_ATTENTION))
        return g ? g->poison : NULL;
    kiln_tensor *qkv   = (kiln_tensor *)fwd->node.src[0];
    kiln_tensor *src[] = {gy, qkv};
    kiln_tensor *t     = grad_node(g, op, src, 2, qkv, fwd);
    if (!(t->flags & KILN__POISON))
        t->node.fparam[0] = fwd->node.fparam[0];
    return t;
}

kiln_tensor *kiln__layer_norm_grad(kiln_graph *g, kiln_op op, kiln_tensor *gy,
                                   kiln_tensor *fwd)
{
    if (op != KILN_OP_LAYER_NORM_GRAD && op != KILN_OP_LAYER_NORM_GRAD_WEIGHT)
        return kiln__graph_fail(g, KILN_ERR_INVALID_ARG,
                                "kiln__layer_norm_grad: op %s, expected %s or %s",
                                kiln__op_name(op), kiln__op_name(KILN_OP_LAYER_NORM_GRAD),
                                kiln__op_name(KILN_OP_LAYER_NORM_GRAD_WEIGHT));
    if (!check_fwd(g, op, gy, fwd, KILN_OP_LAYER_NORM))
        return g ? g->poison : NULL;
    kiln_tensor *x     = (kiln_tensor *)fwd->node.src[0],
                *w     = (kiln_tensor *)fwd->node.src[1];
    kiln_tensor *src[] = {gy, x, w};
    kiln_tensor *t     = op == KILN_OP_LAYER_NORM_GRAD
                             ? kiln__node_new(g, op, KILN__FLOAT, x->node.ndim, x->node.dims,
                                              src, 3)
                             : kiln__node_new(g, op, KILN__FLOAT, w->node.ndim, w->node.dims,
                                              src, 2);
    if (!(t->flags & KILN__POISON))
        t->node.fparam[0] = fwd->node.fparam[0];
    return t;
}

kiln_tensor *kiln__slice_grad(kiln_graph *g, kiln_tensor *gy, kiln_tensor *fwd)
{
    if (!kiln__check_sources(g, KILN_OP_SLICE_GRAD, &gy, 1))
        return g ? g->poison : NULL;
    if (!fwd || fwd->node.op != KILN_OP_SLICE)
        return kiln__graph_fail(g, KILN_ERR_INVALID_ARG,
                                "%s: the forward node is %s, expected %s",
                                kiln__op_name(KILN_OP_SLICE_GRAD),
                                fwd ? kiln__op_name(fwd->node.op) : "missing",
                                kiln__op_name(KILN_OP_SLICE));
    if (!same_shape(&gy->node, &fwd->node))
        return mismatch(g, KILN_OP_SLICE_GRAD, "gradient", &gy->node, "forward output",
                        &fwd->node, "equal shapes");
    kiln_tensor *x = (kiln_tensor *)fwd->node.src[0];
    return grad_node(g, KILN_OP_SLICE_GRAD, &gy, 1, x, fwd);
}
