/* core/graph/ops_conv.c — conv2d and max_pool2d (NCHW). */
#include "../kiln-impl.h"

KILN_API kiln_tensor *kiln_conv2d(kiln_graph *g, kiln_tensor *x, kiln_tensor *w,
                                  kiln_tensor *bias, int stride, int padding)
{
    kiln_tensor *src[] = {x, w, bias};
    const char  *name  = kiln__op_name(KILN_OP_CONV2D);
    if (!kiln__check_sources(g, KILN_OP_CONV2D, src, bias ? 3 : 2))
        return g ? g->poison : NULL;
    char           sx[KILN__SHAPE_STR], sw[KILN__SHAPE_STR], sb[KILN__SHAPE_STR];
    const int64_t *xd = x->node.dims, *wd = w->node.dims;
    kiln__shape_str(sx, x->node.ndim, xd);
    kiln__shape_str(sw, w->node.ndim, wd);
    if (x->node.ndim != 4 || w->node.ndim != 4)
        return kiln__graph_fail(g, KILN_ERR_SHAPE,
                                "%s: x %s and w %s: expected x "
                                "[N, C, H, W] and w [O, C, KH, KW]",
                                name, sx, sw);
    if (xd[1] != wd[1])
        return kiln__graph_fail(g, KILN_ERR_SHAPE,
                                "%s: x %s and w %s: x has %lld "
                                "channels but w expects %lld",
                                name, sx, sw, (long long)xd[1], (long long)wd[1]);
    if (stride < 1 || padding < 0)
        return kiln__graph_fail(g, KILN_ERR_INVALID_ARG,
                                "%s: stride %d and padding "
                                "%d: expected stride >= 1 and padding >= 0",
                                name, stride, padding);
    if (bias && (bias->node.ndim != 1 || bias->node.dims[0] != wd[0]))
        return kiln__graph_fail(g, KILN_ERR_SHAPE,
                                "%s: bias %s for w %s: expected "
                                "[%lld]",
                                name,
                                kiln__shape_str(sb, bias->node.ndim, bias->node.dims), sw,
                                (long long)wd[0]);
    int64_t hp = xd[2] + 2 * (int64_t)padding, wp = xd[3] + 2 * (int64_t)padding;
    if (wd[2] < 1 || wd[3] < 1 || hp < wd[2] || wp < wd[3])
        return kiln__graph_fail(g, KILN_ERR_SHAPE,
                                "%s: x %s with padding %d is "
                                "smaller than the kernel of w %s",
                                name, sx, padding, sw);
    int64_t      oh = (hp - wd[2]) / stride + 1, ow = (wp - wd[3]) / stride + 1;
    kiln_tensor *t = kiln__node_new(g, KILN_OP_CONV2D, KILN__FLOAT, 4,
                                    (int64_t[]){xd[0], wd[0], oh, ow}, src, 3);
    if (!(t->flags & KILN__POISON)) {
        t->node.iparam[0] = t->node.iparam[1] = stride;
        t->node.iparam[2] = t->node.iparam[3] = padding;
    }
    return t;
}

KILN_API kiln_tensor *kiln_max_pool2d(kiln_graph *g, kiln_tensor *x, int kernel,
                                      int stride)
{
    const char *name = kiln__op_name(KILN_OP_MAX_POOL2D);
    if (!kiln__check_sources(g, KILN_OP_MAX_POOL2D, &x, 1))
        return g ? g->poison : NULL;
    char           sx[KILN__SHAPE_STR];
    const int64_t *xd = x->node.dims;
    kiln__shape_str(sx, x->node.ndim, xd);
    if (x->node.ndim != 4)
        return kiln__graph_fail(g, KILN_ERR_SHAPE,
                                "%s: x %s: expected "
                                "[N, C, H, W]",
                                name, sx);
    if (kernel < 1 || stride < 1)
        return kiln__graph_fail(g, KILN_ERR_INVALID_ARG,
                                "%s: kernel %d and "
                                "stride %d: expected both >= 1",
                                name, kernel, stride);
    if (xd[2] < kernel || xd[3] < kernel)
        return kiln__graph_fail(g, KILN_ERR_SHAPE,
                                "%s: x %s is smaller than "
                                "the %dx%d window",
                                name, sx, kernel, kernel);
    int64_t      oh = (xd[2] - kernel) / stride + 1, ow = (xd[3] - kernel) / stride + 1;
    kiln_tensor *t = kiln__node_new(g, KILN_OP_MAX_POOL2D, KILN__FLOAT, 4,
                                    (int64_t[]){xd[0], xd[1], oh, ow}, &x, 1);
    if (!(t->flags & KILN__POISON)) {
        t->node.iparam[0] = t->node.iparam[1] = kernel;
        t->node.iparam[2] = t->node.iparam[3] = stride;
    }
    return t;
}
