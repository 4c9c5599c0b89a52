/* core/run.c — running a compiled graph on its device. */
#include "kiln-impl.h"

#include <stdlib.h>

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

static kiln_status run_nodes(kiln_graph *g, const kiln_node *const *exec, size_t n)
{
    kiln_status st = check_leaves_written(g);
    if (st != KILN_OK)
        return st;
    const kiln_device *dev = &g->ctx->device;
    st = dev->iface->graph_compute(dev->context, exec, n);
    if (st == KILN_OK && dev->iface->synchronize)
        st = dev->iface->synchronize(dev->context);
    if (st != KILN_OK)
        return kiln__error(st, "kiln_graph_run on %s: %s", kiln_context_device(g->ctx),
                           kiln_last_error());
    g->ran = true;
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
    kiln_status st = kiln__optim_before_run(g); /* one optimiser step per run */
    if (st != KILN_OK)
        return st;
    return run_nodes(g, g->plan.exec, g->plan.n_exec);
}

KILN_API kiln_status kiln_graph_eval(kiln_graph *g, kiln_tensor *t)
{
    if (!g || !t)
        return kiln__error(KILN_ERR_INVALID_ARG, "kiln_graph_eval: %s is NULL",
                           g ? "tensor" : "graph");
    if (!g->compiled)
        return kiln__error(KILN_ERR_STATE, "kiln_graph_eval: the graph is not compiled; "
                           "call kiln_graph_compile first");
    if (t->graph != g)
        return kiln__error(KILN_ERR_INVALID_ARG, "kiln_graph_eval: the tensor belongs "
                           "to another graph");
    /* Mark t's ancestors, then run the marked nodes in the compiled order: a
     * subset of a valid schedule keeps every lifetime the plan assumed. */
    bool *need = kiln__calloc(g->n_nodes, sizeof *need, "kiln_graph_eval");
    const kiln_node **exec = kiln__calloc(g->plan.n_exec, sizeof *exec, "kiln_graph_eval");
    kiln_status st = KILN_ERR_NO_MEMORY;
    if (need && exec) {
        need[t->id] = true;
        for (size_t i = t->id + 1; i-- > 0;) {
            if (!need[i])
                continue;
            for (int s = 0; s < KILN_MAX_SRC; s++)
                if (g->nodes[i]->node.src[s])
                    need[((const kiln_tensor *)g->nodes[i]->node.src[s])->id] = true;
        }
        size_t n = 0;
        for (size_t i = 0; i < g->plan.n_exec; i++)
            if (need[((const kiln_tensor *)g->plan.exec[i])->id])
                exec[n++] = g->plan.exec[i];
        st = run_nodes(g, exec, n);
    }
    free(need);
    free(exec);
    return st;
}
