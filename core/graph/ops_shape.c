/* core/graph/ops_shape.c — the shape ops that copy: permute (any order of up
 * to 4 axes) and, with slice, the pieces attention cuts a fused tensor into.
 * Each writes a contiguous output; reshape and flatten, which share their
 * input's storage, are views and live in ops_linalg.c with transpose.
 * store_slice, slice's inverse, writes in place into an input (a key/value
 * cache). */
#include "../kiln-impl.h"

#include <stdint.h>

KILN_API kiln_tensor *kiln_permute(kiln_graph *g, kiln_tensor *x, const int *perm)
{
    const char *name = kiln__op_name(KILN_OP_PERMUTE);
    if (!kiln__check_sources(g, KILN_OP_PERMUTE, &x, 1))
        return g ? g->poison : NULL;
    int  nd = x->node.ndim;
    char s[KILN__SHAPE_STR];
    kiln__shape_str(s, nd, x->node.dims);
    if (nd > 0 && !perm)
        return kiln__graph_fail(g, KILN_ERR_INVALID_ARG, "%s: input %s: perm is NULL",
                                name, s);
    int64_t  dims[KILN_MAX_DIMS];
    unsigned seen = 0;
    for (int d = 0; d < nd; d++) {
        if (perm[d] < 0 || perm[d] >= nd || (seen & (1u << perm[d])))
            return kiln__graph_fail(g, KILN_ERR_INVALID_ARG,
                                    "%s: input %s: perm[%d] = %d: expected each "
                                    "of 0 to %d once",
                                    name, s, d, perm[d], nd - 1);
        seen |= 1u << perm[d];
        dims[d] = x->node.dims[perm[d]];
    }
    kiln_tensor *t = kiln__node_new(g, KILN_OP_PERMUTE, KILN__FLOAT, nd, dims, &x, 1);
    if (!(t->flags & KILN__POISON))
        for (int d = 0; d < nd; d++)
            t->node.iparam[d] = perm[d];
    return t;
}

KILN_API kiln_tensor *kiln_slice(kiln_graph *g, kiln_tensor *x, int axis, int64_t start,
                                 int64_t length)
{
    const char *name = kiln__op_name(KILN_OP_SLICE);
    if (!kiln__check_sources(g, KILN_OP_SLICE, &x, 1))
        return g ? g->poison : NULL;
    int  nd = x->node.ndim;
    char s[KILN__SHAPE_STR];
    kiln__shape_str(s, nd, x->node.dims);
    if (axis < -nd || axis >= nd)
        return kiln__graph_fail(g, KILN_ERR_INVALID_ARG,
                                "%s: input %s: axis %d, expected -%d to %d", name, s,
                                axis, nd, nd - 1);
    if (axis < 0)
        axis += nd;
    int64_t size = x->node.dims[axis];
    if (start < 0 || length < 0 || start > size || length > size - start)
        return kiln__graph_fail(g, KILN_ERR_SHAPE,
                                "%s: input %s: start %lld and length %lld along axis "
                                "%d: the window must lie inside [0, %lld)",
                                name, s, (long long)start, (long long)length, axis,
                                (long long)size);
    if (start > INT32_MAX)
        return kiln__graph_fail(g, KILN_ERR_SHAPE,
                                "%s: input %s: start %lld is past the op's int32 "
                                "start",
                                name, s, (long long)start);
    int64_t dims[KILN_MAX_DIMS];
    for (int d = 0; d < nd; d++)
        dims[d] = d == axis ? length : x->node.dims[d];
    kiln_tensor *t = kiln__node_new(g, KILN_OP_SLICE, KILN__FLOAT, nd, dims, &x, 1);
    if (!(t->flags & KILN__POISON)) {
        t->node.iparam[0] = axis;
        t->node.iparam[1] = (int32_t)start;
    }
    return t;
}

KILN_API kiln_tensor *kiln_store_slice(kiln_graph *g, kiln_tensor *dst,
                                       kiln_tensor *value, int axis, kiln_tensor *start)
{
    const kiln_op op    = KILN_OP_STORE_SLICE;
    const char   *name  = kiln__op_name(op);
    kiln_tensor  *src[] = {dst, value, start};
    if (!kiln__check_sources(g, op, src, 3))
        return g ? g->poison : NULL;
    int  nd = dst->node.ndim;
    char s[KILN__SHAPE_STR], v[KILN__SHAPE_STR];
    kiln__shape_str(s, nd, dst->node.dims);
    kiln__shape_str(v, value->node.ndim, value->node.dims);
    if (!(kiln__storage(dst)->flags & KILN__INPUT))
        return kiln__graph_fail(g, KILN_ERR_INVALID_ARG,
                                "%s: destination %s%s%s is not an input: expected a "
                                "tensor from kiln_input (or kiln_store_slice), whose "
                                "contents persist from run to run",
                                name, s, dst->name ? " " : "",
                                dst->name ? dst->name : "");
    if (axis < -nd || axis >= nd)
        return kiln__graph_fail(g, KILN_ERR_INVALID_ARG,
                                "%s: destination %s: axis %d, expected -%d to %d", name,
                                s, axis, nd, nd - 1);
    if (axis < 0)
        axis += nd;
    bool fits = value->node.ndim == nd && value->node.dims[axis] <= dst->node.dims[axis];
    for (int d = 0; fits && d < nd; d++)
        fits = d == axis || value->node.dims[d] == dst->node.dims[d];
    if (!fits)
        return kiln__graph_fail(g, KILN_ERR_SHAPE,
                                "%s: value %s into destination %s along axis %d: "
                                "expected the destination's shape on every other axis "
                                "and at most its length on this one",
                                name, v, s, axis);
    if (start->node.numel != 1) {
        char o[KILN__SHAPE_STR];
        return kiln__graph_fail(g, KILN_ERR_SHAPE, "%s: start %s: expected one element",
                                name,
                                kiln__shape_str(o, start->node.ndim, start->node.dims));
    }
    kiln_tensor *t = kiln__node_new(g, op, KILN__FLOAT, nd, dst->node.dims, src, 3);
    if (!(t->flags & KILN__POISON)) {
        t->node.iparam[0] = axis;
        t->inplace        = dst;
    }
    return t;
}
