/* core/run.c — running a compiled graph on its device. */
#include "kiln-impl.h"

/* Every input and parameter a node reads must hold a value, or the run would
 * compute on whatever the device memory held. */
static kiln_status check_leaves_written(const kiln_graph *g)
{
    for (size_t i = 0; i < g->n_nodes; i++) {
        const kiln_tensor *t = g->nodes[i];
        if (!(t->flags & KILN__LEAF) || t->written)
            continue;
        char s[KILN__SHAPE_STR];
        return kiln__error(KILN_ERR_STATE, "kiln_graph_run: %s '%s' %s has not been "
                           "written; call kiln_tensor_write first",
                           (t->flags & KILN__PARAM) ? "parameter" : "input",
                           t->name ? t->name : "",
                           kiln__shape_str(s, t->node.ndim, t->node.dims));
    }
    return KILN_OK;
}

KILN_API kiln_status kiln_graph_run(kiln_graph *g)
{
    if (!g)
        return kiln__error(KILN_ERR_INVALID_ARG, "kiln_graph_run: graph is NULL");
    if (!g->compiled)
        return kiln__error(g->status != KILN_OK ? g->status : KILN_ERR_STATE,
                           "kiln_graph_run: %s", g->status != KILN_OK ? kiln_graph_error(g)
                           : "the graph is not compiled; call kiln_graph_compile first");
    kiln_status st = check_leaves_written(g);
    if (st != KILN_OK)
        return st;
    const kiln_device *dev = &g->ctx->device;
    st = dev->iface->graph_compute(dev->context, g->plan.exec, g->plan.n_exec);
    if (st == KILN_OK && dev->iface->synchronize)
        st = dev->iface->synchronize(dev->context);
    if (st != KILN_OK)
        return kiln__error(st, "kiln_graph_run on %s: %s", kiln_context_device(g->ctx),
                           kiln_last_error());
    g->ran = true;
    return KILN_OK;
}
