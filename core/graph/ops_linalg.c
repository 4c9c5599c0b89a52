/* core/graph/ops_linalg.c — matmul, transpose, and the views reshape and flatten. */
#include "../kiln-impl.h"

#include <stdio.h>

KILN_API kiln_tensor *kiln_matmul_t(kiln_graph *g, kiln_tensor *a, kiln_tensor *b,
                                    bool transpose_a, bool transpose_b)
{
    kiln_tensor *ab[] = {a, b};
    const char  *name = kiln__op_name(KILN_OP_MATMUL);
    if (!kiln__check_sources(g, KILN_OP_MATMUL, ab, 2))
        return g ? g->poison : NULL;
    char sa[KILN__SHAPE_STR], sb[KILN__SHAPE_STR];
    kiln__shape_str(sa, a->node.ndim, a->node.dims);
    kiln__shape_str(sb, b->node.ndim, b->node.dims);
    int nd = a->node.ndim, r = nd - 2;
    if (nd < 2 || b->node.ndim != nd)
        return kiln__graph_fail(g, KILN_ERR_SHAPE,
                                "%s: a %s and b %s: both must be 2-D, or both 3-D "
                                "or 4-D with the same batch axes",
                                name, sa, sb);
    int64_t dims[KILN_MAX_DIMS];
    for (int d = 0; d < r; d++) {
        if (a->node.dims[d] != b->node.dims[d])
            return kiln__graph_fail(g, KILN_ERR_SHAPE,
                                    "%s: a %s and b %s: batch axis %d differs "
                                    "(%lld vs %lld); matmul does not broadcast",
                                    name, sa, sb, d, (long long)a->node.dims[d],
                                    (long long)b->node.dims[d]);
        dims[d] = a->node.dims[d];
    }
    int64_t m  = a->node.dims[r + (transpose_a ? 1 : 0)];
    int64_t ka = a->node.dims[r + (transpose_a ? 0 : 1)];
    int64_t kb = b->node.dims[r + (transpose_b ? 1 : 0)];
    int64_t n  = b->node.dims[r + (transpose_b ? 0 : 1)];
    if (ka != kb)
        return kiln__graph_fail(g, KILN_ERR_SHAPE,
                                "%s: a %s%s and b %s%s: the "
                                "inner dimensions differ (%lld vs %lld)",
                                name, sa, transpose_a ? " (transposed)" : "", sb,
                                transpose_b ? " (transposed)" : "", (long long)ka,
                                (long long)kb);
    dims[r]        = m;
    dims[r + 1]    = n;
    kiln_tensor *t = kiln__node_new(g, KILN_OP_MATMUL, KILN__FLOAT, nd, dims, ab, 2);
    if (!(t->flags & KILN__POISON)) {
        t->node.iparam[0] = transpose_a;
        t->node.iparam[1] = transpose_b;
    }
    return t;
}

KILN_API kiln_tensor *kiln_matmul(kiln_graph *g, kiln_tensor *a, kiln_tensor *b)
{
    return kiln_matmul_t(g, a, b, false, false);
}

KILN_API kiln_tensor *kiln_transpose(kiln_graph *g, kiln_tensor *a)
{
    if (!kiln__check_sources(g, KILN_OP_TRANSPOSE, &a, 1))
        return g ? g->poison : NULL;
    char s[KILN__SHAPE_STR];
    if (a->node.ndim != 2)
        return kiln__graph_fail(g, KILN_ERR_SHAPE, "%s: input %s must be 2-D",
                                kiln__op_name(KILN_OP_TRANSPOSE),
                                kiln__shape_str(s, a->node.ndim, a->node.dims));
    return kiln__node_new(g, KILN_OP_TRANSPOSE, KILN__FLOAT, 2,
                          (int64_t[]){a->node.dims[1], a->node.dims[0]}, &a, 1);
}

KILN_API kiln_tensor *kiln_reshape(kiln_graph *g, kiln_tensor *a, int ndim,
                                   const int64_t *dims)
{
    const char *name = kiln__op_name(KILN_OP_RESHAPE);
    if (!kiln__check_operands(g, name, &a, 1))
        return g ? g->poison : NULL;
    char sa[KILN__SHAPE_STR], sb[KILN__SHAPE_STR];
    if (ndim > 0 && !dims)
        return kiln__graph_fail(g, KILN_ERR_INVALID_ARG,
                                "%s: dims is NULL for %d "
                                "dimensions",
                                name, ndim);
    if (ndim < 0 || ndim > KILN_MAX_DIMS)
        return kiln__graph_fail(g, KILN_ERR_SHAPE,
                                "%s: %d dimensions, expected "
                                "0 to %d",
                                name, ndim, KILN_MAX_DIMS);
    int64_t out[KILN_MAX_DIMS];
    int64_t known = 1;
    int     infer = -1;
    for (int i = 0; i < ndim; i++) {
        out[i] = dims[i];
        if (dims[i] == -1 && infer < 0)
            infer = i;
        else if (dims[i] < 0)
            return kiln__graph_fail(g, KILN_ERR_SHAPE,
                                    "%s: %s to %s: expected "
                                    "sizes >= 0 and at most one -1",
                                    name, kiln__shape_str(sa, a->node.ndim, a->node.dims),
                                    kiln__shape_str(sb, ndim, dims));
        else
            known *= dims[i];
    }
    if (infer >= 0 && known > 0 && a->node.numel % known == 0)
        out[infer] = a->node.numel / known;
    if ((infer >= 0 && (known == 0 || a->node.numel % known != 0)) ||
        kiln__numel(ndim, out) != a->node.numel)
        return kiln__graph_fail(g, KILN_ERR_SHAPE,
                                "%s: %s (%lld elements) cannot "
                                "become %s: the element count must stay the same",
                                name, kiln__shape_str(sa, a->node.ndim, a->node.dims),
                                (long long)a->node.numel,
                                kiln__shape_str(sb, ndim, dims));
    kiln_tensor *t = kiln__node_new(g, KILN_OP_RESHAPE, a->node.dtype, ndim, out, &a, 1);
    if (!(t->flags & KILN__POISON))
        t->view_src = a;
    return t;
}

KILN_API kiln_tensor *kiln_flatten(kiln_graph *g, kiln_tensor *a)
{
    if (!kiln__check_operands(g, "flatten", &a, 1))
        return g ? g->poison : NULL;
    char s[KILN__SHAPE_STR];
    if (a->node.ndim < 1)
        return kiln__graph_fail(g, KILN_ERR_SHAPE,
                                "flatten: input %s is a scalar, "
                                "expected at least 1 dimension",
                                kiln__shape_str(s, 0, NULL));
    int64_t rest = kiln__numel(a->node.ndim - 1, a->node.dims + 1);
    return kiln_reshape(g, a, 2, (int64_t[]){a->node.dims[0], rest});
}
