/* core/graph/ops_embedding.c — embedding lookup: a row of a table per id.
 *
 * The ids are data, not shape: whether each lies in [0, V) is known only
 * when the graph runs, so the backends check them there (backend.h). */
#include "../kiln-impl.h"

KILN_API kiln_tensor *kiln_embedding(kiln_graph *g, kiln_tensor *table, kiln_tensor *ids)
{
    kiln_tensor *src[] = {table, ids};
    const char  *name  = kiln__op_name(KILN_OP_EMBEDDING);
    if (!kiln__check_sources(g, KILN_OP_EMBEDDING, src, 2))
        return g ? g->poison : NULL;
    const kiln_node *t = &table->node, *i = &ids->node;
    char             st[KILN__SHAPE_STR], si[KILN__SHAPE_STR];
    kiln__shape_str(st, t->ndim, t->dims);
    kiln__shape_str(si, i->ndim, i->dims);
    if (t->ndim != 2)
        return kiln__graph_fail(g, KILN_ERR_SHAPE, "%s: table %s: expected [V, C]", name,
                                st);
    if (i->ndim > KILN_MAX_DIMS - 1)
        return kiln__graph_fail(g, KILN_ERR_SHAPE,
                                "%s: ids %s: expected at most %d axes, so that the "
                                "output [..., C] has at most %d",
                                name, si, KILN_MAX_DIMS - 1, KILN_MAX_DIMS);
    int64_t dims[KILN_MAX_DIMS];
    for (int d = 0; d < i->ndim; d++)
        dims[d] = i->dims[d];
    dims[i->ndim] = t->dims[1];
    return kiln__node_new(g, KILN_OP_EMBEDDING, KILN__FLOAT, i->ndim + 1, dims, src, 2);
}
