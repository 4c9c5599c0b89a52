/* core/graph/autodiff.c — kiln_backward and kiln_grad: reverse mode, appended to
 * the graph as ordinary nodes, so gradients run on the backend like the rest.
 *
 * Creation order is topological, so walking from the loss down to the first
 * node visits every consumer of a tensor before the tensor itself: when a node
 * is reached its gradient is complete (the sum of what each consumer gave)
 * and can be pushed on to its sources. Only float tensors that depend on a
 * parameter get a gradient; inputs, constants, whatever is computed from them
 * alone, and i32 tensors (argmax, labels) are skipped, so no node is spent on
 * a gradient nobody reads.
 */
#include "../kiln-impl.h"

#include <stdlib.h>

typedef struct backward {
    kiln_graph  *g;
    bool        *wants; /* per node id: a float, computed from a parameter  */
    /* the constant 1 per float type, made when a rule first needs it       */
    kiln_tensor *one[KILN_BF16 + 1];
} backward;

static kiln_tensor *src_of(const kiln_tensor *t, int i)
{
    return (kiln_tensor *)t->node.src[i]; /* node is the first member */
}

static bool wants(const backward *bw, const kiln_tensor *t)
{
    return t && bw->wants[t->id];
}

/* A 1 in a float type, shaped [], [1], [1, 1] ... */
static kiln_tensor *const_one(kiln_graph *g, kiln_dtype dtype, int ndim,
                              const int64_t *dims)
{
    uint32_t    bits = 0; /* f32 or 16 bits, in the low bytes */
    const float v    = 1.0f;
    kiln_convert(&bits, dtype, &v, KILN_F32, 1);
    return kiln_const(g, dtype, ndim, dims, &bits);
}

/* 1 in t's type. */
static kiln_tensor *one(backward *bw, const kiln_tensor *t)
{
    kiln_dtype d = t->node.dtype;
    if (!bw->one[d])
        bw->one[d] = const_one(bw->g, d, 0, NULL);
    return bw->one[d];
}

/* Adds a consumer's contribution to src's gradient. */
static void accumulate(backward *bw, kiln_tensor *src, kiln_tensor *contribution)
{
    src->grad = src->grad ? kiln_add(bw->g, src->grad, contribution) : contribution;
}

/* gy, the gradient of a binary op's output, brought to the shape of an
 * operand that the op may have broadcast: summed over the repeats. */
static kiln_tensor *reduce_to(kiln_graph *g, kiln_tensor *gy, const kiln_tensor *like)
{
    const kiln_node *l    = &like->node;
    bool             same = gy->node.ndim == l->ndim;
    for (int i = 0; same && i < l->ndim; i++)
        same = gy->node.dims[i] == l->dims[i];
    if (same)
        return gy;
    if (gy->node.numel == l->numel) /* they differ by leading 1s only */
        return kiln_reshape(g, gy, l->ndim, l->dims);
    return kiln__sum_to(g, gy, l->ndim, l->dims);
}

static void backward_binary(backward *bw, kiln_tensor *t, kiln_tensor *gy)
{
    kiln_graph  *g = bw->g;
    kiln_tensor *a = src_of(t, 0), *b = src_of(t, 1);
    switch (t->node.op) {
    case KILN_OP_ADD:
    case KILN_OP_SUB:
        if (wants(bw, a))
            accumulate(bw, a, reduce_to(g, gy, a));
        if (wants(bw, b)) {
            kiln_tensor *gb = reduce_to(g, gy, b);
            accumulate(bw, b, t->node.op == KILN_OP_SUB ? kiln_neg(g, gb) : gb);
        }
        break;
    case KILN_OP_MUL:
        if (wants(bw, a))
            accumulate(bw, a, reduce_to(g, kiln_mul(g, gy, b), a));
        if (wants(bw, b))
            accumulate(bw, b, reduce_to(g, kiln_mul(g, gy, a), b));
        break;
    default: /* DIV: y = a / b, dy/db = -a / b^2 = -y / b */
        if (wants(bw, a))
            accumulate(bw, a, reduce_to(g, kiln_div(g, gy, b), a));
        if (wants(bw, b))
            accumulate(bw, b,
                       kiln_neg(g, reduce_to(g, kiln_mul(g, gy, kiln_div(g, t, b)), b)));
        break;
    }
}

/* The elementwise unary ops: gy times the derivative at x, from x or from
 * their output y. */
static void backward_unary(backward *bw, kiln_tensor *y, kiln_tensor *gy)
{
    kiln_graph  *g = bw->g;
    kiln_tensor *x = src_of(y, 0), *gx;
    if (!wants(bw, x))
        return;
    switch (y->node.op) {
    case KILN_OP_NEG: gx = kiln_neg(g, gy); break;
    case KILN_OP_EXP: gx = kiln_mul(g, gy, y); break;
    case KILN_OP_LOG: gx = kiln_div(g, gy, x); break;
    case KILN_OP_SQRT: gx = kiln_div(g, gy, kiln_scale(g, y, 2.0f)); break;
    case KILN_OP_RELU: gx = kiln__relu_grad(g, gy, x); break;
    case KILN_OP_GELU: gx = kiln__gelu_grad(g, gy, x); break;
    case KILN_OP_SIGMOID:
        gx = kiln_mul(g, gy, kiln_mul(g, y, kiln_sub(g, one(bw, y), y)));
        break;
    case KILN_OP_TANH:
        gx = kiln_mul(g, gy, kiln_sub(g, one(bw, y), kiln_mul(g, y, y)));
        break;
    case KILN_OP_CAST:
        /* an f32 weight used in 16 bits: its gradient, a product that only
         * this rule reads (made by the backward pass), keeps the f32 it
         * accumulated in instead of being rounded and widened again */
        if (x->node.dtype == KILN_F32 && gy->node.op == KILN_OP_MATMUL &&
            gy->id > bw->g->loss->id && gy->node.dtype != KILN_F32) {
            gy->node.dtype = KILN_F32;
            gx             = gy;
        } else {
            gx = kiln_cast(g, gy, x->node.dtype);
        }
        break;
    default: gx = kiln_scale(g, gy, y->node.fparam[0]); break; /* SCALE */
    }
    accumulate(bw, x, gx);
}

/* C = op(A) op(B): d op(A) = gy op(B)^T and d op(B) = op(A)^T gy, each
 * transposed back when the operand was read transposed; matmul_t's flags
 * express every case without a transpose node. Batched, the same holds per
 * batch entry, and gy has the batch axes of a and b. */
static void backward_matmul(backward *bw, kiln_tensor *t, kiln_tensor *gy)
{
    kiln_graph  *g = bw->g;
    kiln_tensor *a = src_of(t, 0), *b = src_of(t, 1);
    bool         ta = t->node.iparam[0] != 0, tb = t->node.iparam[1] != 0;
    if (wants(bw, a))
        accumulate(bw, a,
                   ta ? kiln_matmul_t(g, b, gy, tb, true)
                      : kiln_matmul_t(g, gy, b, false, !tb));
    if (wants(bw, b))
        accumulate(bw, b,
                   tb ? kiln_matmul_t(g, gy, a, true, ta)
                      : kiln_matmul_t(g, a, gy, !ta, false));
}

/* SUM and MEAN, over everything (axis -1) or one axis, keepdim or not: the
 * gradient is gy repeated along what was reduced (divided by its length for
 * the mean). */
static void backward_reduce(backward *bw, kiln_tensor *t, kiln_tensor *gy)
{
    kiln_tensor *a    = src_of(t, 0);
    int          axis = t->node.iparam[0];
    if (!wants(bw, a))
        return;
    if (t->node.op == KILN_OP_MEAN) {
        int64_t r = axis < 0 ? a->node.numel : a->node.dims[axis];
        /* the mean of nothing has no elements to send a gradient to */
        gy = kiln_scale(bw->g, gy, r > 0 ? (float)(1.0 / (double)r) : 0.0f);
    }
    accumulate(bw, a, kiln__expand(bw->g, gy, axis, a->node.ndim, a->node.dims));
}

/* The ops whose gradient goes to their first source alone (the ids of an
 * embedding and labels, being i32, get none), through one
 * gradient op (or view) of gy and the forward node t. */
static void backward_first(backward *bw, kiln_tensor *t, kiln_tensor *gy)
{
    kiln_graph  *g = bw->g;
    kiln_tensor *a = src_of(t, 0), *ga;
    if (!wants(bw, a))
        return;
    switch (t->node.op) {
    case KILN_OP_MAX: ga = kiln__max_grad(g, gy, a); break;
    case KILN_OP_SOFTMAX: ga = kiln__softmax_grad(g, KILN_OP_SOFTMAX_GRAD, gy, t); break;
    case KILN_OP_LOG_SOFTMAX:
        ga = kiln__softmax_grad(g, KILN_OP_LOG_SOFTMAX_GRAD, gy, t);
        break;
    case KILN_OP_RESHAPE: ga = kiln_reshape(g, gy, a->node.ndim, a->node.dims); break;
    case KILN_OP_TRANSPOSE: ga = kiln_transpose(g, gy); break;
    case KILN_OP_SLICE: ga = kiln__slice_grad(g, gy, t); break;
    case KILN_OP_PERMUTE: {
        int inverse[KILN_MAX_DIMS];
        for (int d = 0; d < t->node.ndim; d++)
            inverse[t->node.iparam[d]] = d;
        ga = kiln_permute(g, gy, inverse);
        break;
    }
    case KILN_OP_MAX_POOL2D: ga = kiln__max_pool2d_grad(g, gy, t); break;
    case KILN_OP_EMBEDDING: ga = kiln__embedding_grad(g, gy, t); break;
    case KILN_OP_CAUSAL_SOFTMAX: ga = kiln__causal_softmax_grad(g, gy, t); break;
    case KILN_OP_CAUSAL_ATTENTION: ga = kiln__causal_attention_grad(g, gy, t); break;
    default: ga = kiln__cross_entropy_grad(g, gy, t); break;
    }
    accumulate(bw, a, ga);
}

/* conv2d: x and w through their gradient ops; the bias gets gy summed over
 * N, OH and OW ([N, O, OH*OW] -> [N, O] -> [O]). */
static void backward_conv2d(backward *bw, kiln_tensor *t, kiln_tensor *gy)
{
    kiln_graph  *g = bw->g;
    kiln_tensor *x = src_of(t, 0), *w = src_of(t, 1), *bias = src_of(t, 2);
    if (wants(bw, x))
        accumulate(bw, x, kiln__conv2d_grad(g, KILN_OP_CONV2D_GRAD_INPUT, gy, t));
    if (wants(bw, w))
        accumulate(bw, w, kiln__conv2d_grad(g, KILN_OP_CONV2D_GRAD_WEIGHT, gy, t));
    if (wants(bw, bias)) {
        const int64_t *d    = t->node.dims;
        kiln_tensor   *rows = kiln_reshape(g, gy, KILN_SHAPE(d[0], d[1], d[2] * d[3]));
        kiln_tensor   *per_image = kiln_sum_axis(g, rows, 2, false);
        accumulate(bw, bias, kiln_sum_axis(g, per_image, 0, false));
    }
}

/* layer_norm: x and weight through their gradient ops (which recompute each
 * row's mean and 1 / std from x); the bias gets gy summed over the rows. */
static void backward_layer_norm(backward *bw, kiln_tensor *t, kiln_tensor *gy)
{
    kiln_graph  *g = bw->g;
    kiln_tensor *x = src_of(t, 0), *w = src_of(t, 1), *bias = src_of(t, 2);
    if (wants(bw, x))
        accumulate(bw, x, kiln__layer_norm_grad(g, KILN_OP_LAYER_NORM_GRAD, gy, t));
    if (wants(bw, w))
        accumulate(bw, w,
                   kiln__layer_norm_grad(g, KILN_OP_LAYER_NORM_GRAD_WEIGHT, gy, t));
    if (wants(bw, bias))
        accumulate(bw, bias, kiln__sum_to(g, gy, bias->node.ndim, bias->node.dims));
}

/* mean((p - q)^2): dp = 2 (p - q) gy / n, dq = -dp. */
static void backward_mse(backward *bw, kiln_tensor *t, kiln_tensor *gy)
{
    kiln_graph  *g = bw->g;
    kiln_tensor *p = src_of(t, 0), *q = src_of(t, 1);
    int64_t      n  = p->node.numel;
    kiln_tensor *dp = kiln_scale(g, kiln_mul(g, kiln_sub(g, p, q), gy),
                                 n > 0 ? (float)(2.0 / (double)n) : 0.0f);
    if (wants(bw, p))
        accumulate(bw, p, dp);
    if (wants(bw, q))
        accumulate(bw, q, kiln_neg(g, dp));
}

/* The gradient rule of each op the op table calls differentiable
 * (KILN__OP_DIFFERENTIABLE): it pushes t's gradient gy on to those of t's
 * sources that want one, as graph ops, so gradients run on the backend. */
typedef void (*grad_rule)(backward *bw, kiln_tensor *t, kiln_tensor *gy);

static const grad_rule grad_rules[KILN_OP_COUNT] = {
    [KILN_OP_ADD]              = backward_binary,
    [KILN_OP_SUB]              = backward_binary,
    [KILN_OP_MUL]              = backward_binary,
    [KILN_OP_DIV]              = backward_binary,
    [KILN_OP_NEG]              = backward_unary,
    [KILN_OP_EXP]              = backward_unary,
    [KILN_OP_LOG]              = backward_unary,
    [KILN_OP_SQRT]             = backward_unary,
    [KILN_OP_RELU]             = backward_unary,
    [KILN_OP_SIGMOID]          = backward_unary,
    [KILN_OP_TANH]             = backward_unary,
    [KILN_OP_SCALE]            = backward_unary,
    [KILN_OP_MATMUL]           = backward_matmul,
    [KILN_OP_SUM]              = backward_reduce,
    [KILN_OP_MEAN]             = backward_reduce,
    [KILN_OP_MAX]              = backward_first,
    [KILN_OP_SOFTMAX]          = backward_first,
    [KILN_OP_LOG_SOFTMAX]      = backward_first,
    [KILN_OP_RESHAPE]          = backward_first,
    [KILN_OP_TRANSPOSE]        = backward_first,
    [KILN_OP_CONV2D]           = backward_conv2d,
    [KILN_OP_MAX_POOL2D]       = backward_first,
    [KILN_OP_MSE_LOSS]         = backward_mse,
    [KILN_OP_CROSS_ENTROPY]    = backward_first,
    [KILN_OP_EMBEDDING]        = backward_first,
    [KILN_OP_CAUSAL_SOFTMAX]   = backward_first,
    [KILN_OP_GELU]             = backward_unary,
    [KILN_OP_LAYER_NORM]       = backward_layer_norm,
    [KILN_OP_PERMUTE]          = backward_first,
    [KILN_OP_SLICE]            = backward_first,
    [KILN_OP_CAUSAL_ATTENTION] = backward_first,
    [KILN_OP_CAST]             = backward_unary,
};

/* Pushes t's gradient on to those of its sources that want one. */
static void backward_node(backward *bw, kiln_tensor *t)
{
    const kiln__op_def *d = kiln__op_def_of(t->node.op);
    grad_rule rule = (unsigned)t->node.op < KILN_OP_COUNT ? grad_rules[t->node.op] : NULL;
    char      s[KILN__SHAPE_STR];
    kiln__shape_str(s, t->node.ndim, t->node.dims);
    if (!d || !(d->flags & KILN__OP_DIFFERENTIABLE))
        kiln__graph_fail(bw->g, KILN_ERR_INVALID_ARG, "backward: %s %s has no gradient",
                         kiln__op_name(t->node.op), s);
    else if (!rule)
        kiln__graph_fail(bw->g, KILN_ERR_INVALID_ARG,
                         "backward: %s %s is "
                         "differentiable in the op table but has no gradient rule "
                         "(a bug in kiln: please report it)",
                         kiln__op_name(t->node.op), s);
    else
        rule(bw, t, t->grad);
}

/* Marks the float nodes up to `last` that are computed from a parameter. */
static void mark_wanted(backward *bw, size_t last)
{
    for (size_t i = 0; i <= last; i++) {
        const kiln_tensor *t = bw->g->nodes[i];
        if (!kiln__is_float(t->node.dtype))
            continue;
        bool w = (t->flags & KILN__PARAM) != 0;
        for (int s = 0; !w && !(t->flags & KILN__LEAF) && s < KILN_MAX_SRC; s++)
            w = t->node.src[s] && bw->wants[src_of(t, s)->id];
        bw->wants[i] = w;
    }
}

/* Why kiln_backward cannot start, or KILN_OK. Nothing has been appended when
 * these fail, so they are not recorded on the graph: the caller may fix the
 * call and try again. */
static kiln_status check_backward(kiln_graph *g, const kiln_tensor *loss)
{
    if (!g || !loss)
        return kiln__error(KILN_ERR_INVALID_ARG, "kiln_backward: %s is NULL",
                           g ? "loss" : "graph");
    if (g->status != KILN_OK)
        return kiln__error(g->status, "kiln_backward: the graph has an error: %s",
                           kiln_graph_error(g));
    if (loss->graph != g)
        return kiln__error(KILN_ERR_INVALID_ARG, "kiln_backward: the loss belongs to "
                                                 "another graph");
    if (g->compiled)
        return kiln__error(KILN_ERR_STATE,
                           "kiln_backward: the graph is already "
                           "compiled; call kiln_backward before kiln_graph_compile");
    if (g->loss)
        return kiln__error(KILN_ERR_STATE, "kiln_backward: already called on this "
                                           "graph; it may be called once");
    char s[KILN__SHAPE_STR];
    kiln__shape_str(s, loss->node.ndim, loss->node.dims);
    if (loss->node.numel != 1 || !kiln__is_float(loss->node.dtype))
        return kiln__error(KILN_ERR_SHAPE,
                           "kiln_backward: the loss %s %s is not a "
                           "scalar: expected one float element (reduce it with kiln_sum "
                           "or kiln_mean)",
                           kiln__dtype_name(loss->node.dtype), s);
    return KILN_OK;
}

KILN_API kiln_status kiln_backward(kiln_graph *g, kiln_tensor *loss)
{
    kiln_status st = check_backward(g, loss);
    if (st != KILN_OK)
        return st;
    backward bw = {.g     = g,
                   .wants = kiln__calloc(g->n_nodes, sizeof(bool), "kiln_backward")};
    if (!bw.wants)
        return KILN_ERR_NO_MEMORY;
    mark_wanted(&bw, loss->id);
    if (!bw.wants[loss->id]) {
        free(bw.wants);
        char s[KILN__SHAPE_STR];
        return kiln__error(KILN_ERR_INVALID_ARG,
                           "kiln_backward: the loss %s depends "
                           "on no parameter (kiln_param), so there is nothing to "
                           "differentiate",
                           kiln__shape_str(s, loss->node.ndim, loss->node.dims));
    }
    g->loss    = loss;
    loss->grad = g->scale.on ? kiln__scale_seed(g, loss)
                             : const_one(g, loss->node.dtype, loss->node.ndim,
                                         loss->node.dims);
    /* New nodes are appended above the loss, so the walk never meets them;
     * g->nodes may move as it grows, so it is indexed afresh each time. */
    for (size_t i = loss->id + 1; i-- > 0 && g->status == KILN_OK;) {
        kiln_tensor *t = g->nodes[i];
        if (t->grad && !(t->flags & KILN__LEAF))
            backward_node(&bw, t);
    }
    for (size_t i = 0; i <= loss->id && g->status == KILN_OK; i++) {
        kiln_tensor *t = g->nodes[i];
        if ((t->flags & KILN__PARAM) && t->grad)
            kiln_output(g, t->grad);
    }
    free(bw.wants);
    if (g->status != KILN_OK)
        return kiln__error(g->status, "kiln_backward: %s", kiln_graph_error(g));
    return KILN_OK;
}

KILN_API kiln_tensor *kiln_grad(kiln_graph *g, kiln_tensor *t)
{
    if (!g || !t) {
        kiln__error(KILN_ERR_INVALID_ARG, "kiln_grad: %s is NULL",
                    g ? "tensor" : "graph");
        return NULL;
    }
    char s[KILN__SHAPE_STR];
    kiln__shape_str(s, t->node.ndim, t->node.dims);
    const char *name = t->name ? t->name : kiln__op_name(t->node.op);
    if (t->graph != g || !g->loss || !t->grad) {
        kiln__error(KILN_ERR_INVALID_ARG, "kiln_grad: '%s' %s has no gradient: %s", name,
                    s,
                    t->graph != g ? "it belongs to another graph"
                    : !g->loss    ? "call kiln_backward first"
                                  : "the loss does not depend on it through a "
                                    "parameter (inputs, constants, i32 tensors and "
                                    "what is computed from them alone get none)");
        return NULL;
    }
    if (!(t->grad->flags & (KILN__OUTPUT | KILN__LEAF))) {
        if (g->compiled) {
            kiln__error(KILN_ERR_STATE,
                        "kiln_grad: the gradient of '%s' %s is an "
                        "intermediate whose storage is reused; ask for it with "
                        "kiln_grad before kiln_graph_compile",
                        name, s);
            return NULL;
        }
        kiln_output(g, t->grad);
    }
    return t->grad;
}
