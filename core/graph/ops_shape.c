/* core/graph/ops_shape.c — the shape ops that copy: permute (any order of up
 * to 4 axes) and, with slice, the pieces attention cuts a fused tensor into.
 * Each writes a contiguous output; reshape and flatten, which share their
 * input's storage, are views and live in ops_linalg.c with transpose. */
#include "../kiln-impl.h"

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
    kiln_tensor *t = kiln__node_new(g, KILN_OP_PERMUTE, KILN_F32, nd, dims, &x, 1);
    if (!(t->flags & KILN__POISON))
        for (int d = 0; d < nd; d++)
            t->node.iparam[d] = perm[d];
    return t;
}
