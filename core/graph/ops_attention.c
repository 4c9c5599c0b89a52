/* core/graph/ops_attention.c — causal self-attention fused into one op, as
 * GPT-2 computes it from its fused qkv projection: each head's softmax of
 * scaled dot products over the positions up to its own, times the values.
 * The backends never keep a [T, T] matrix per head (backend.h), so memory
 * does not grow with the square of the context, and the gradient recomputes
 * the softmax from qkv. */
#include "../kiln-impl.h"

#include <math.h>

KILN_API kiln_tensor *kiln_causal_attention(kiln_graph *g, kiln_tensor *qkv, int heads,
                                            float scale)
{
    const kiln_op op   = KILN_OP_CAUSAL_ATTENTION;
    const char   *name = kiln__op_name(op);
    if (!kiln__check_sources(g, op, &qkv, 1))
        return g ? g->poison : NULL;
    const kiln_node *n = &qkv->node;
    char             s[KILN__SHAPE_STR];
    kiln__shape_str(s, n->ndim, n->dims);
    if (n->ndim != 3 || n->dims[2] % 3 != 0)
        return kiln__graph_fail(g, KILN_ERR_SHAPE,
                                "%s: qkv %s: expected [B, T, 3C], q, k and v side by "
                                "side",
                                name, s);
    int64_t c = n->dims[2] / 3;
    if (heads < 1 || c % heads != 0)
        return kiln__graph_fail(g, KILN_ERR_INVALID_ARG,
                                "%s: qkv %s: %d heads: expected a number of heads that "
                                "divides C = %lld",
                                name, s, heads, (long long)c);
    if (!isfinite(scale))
        return kiln__graph_fail(g, KILN_ERR_INVALID_ARG,
                                "%s: scale %g: expected a finite number", name,
                                (double)scale);
    kiln_tensor *t = kiln__node_new(g, op, KILN__FLOAT,
                                    KILN_SHAPE(n->dims[0], n->dims[1], c), &qkv, 1);
    if (!(t->flags & KILN__POISON)) {
        t->node.iparam[0] = heads;
        t->node.fparam[0] = scale;
    }
    return t;
}
