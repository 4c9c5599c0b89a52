/* core/runtime/run.c — running a compiled graph on its device. */
#include "../kiln-impl.h"

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
        return kiln__error(KILN_ERR_STATE,
                           "kiln_graph_run: %s '%s' %s has not been "
                           "written; call kiln_tensor_write first",
                           (t->flags & KILN__PARAM) ? "parameter" : "input",
                           t->name ? t->name : "",
                           kiln__shape_str(s, t->node.ndim, t->node.dims));
    }
    return KILN_OK;
}

/* Hands the device the n nodes queued in the plan's batch. */
static kiln_status flush(kiln_graph *g, size_t *n)
{
    const kiln_device *dev = &g->ctx->device;
    kiln_status        st  = KILN_OK;
    if (*n)
        st = dev->iface->graph_compute(dev->context, g->plan.batch, *n);
    *n = 0;
    return st;
}

/* Runs the plan's nodes for which run[i] is true (all when run is NULL):
 * consecutive nodes of the selected device go to it in one call, and each
 * fallback node runs between them with its copies. A whole run also
 * averages the gradients where kiln_graph_allreduce_grads asked for it
 * (comm/grads.c): the queued nodes are handed over first. */
static kiln_status run_plan(kiln_graph *g, const bool *run)
{
    const kiln__plan  *plan = &g->plan;
    const kiln_device *dev  = &g->ctx->device;
    kiln_status        st   = check_leaves_written(g);
    size_t             n    = 0;
    bool               dp   = !run && g->dp;
    kiln__profile_run(g);
    for (size_t i = 0; i <= plan->n_exec && st == KILN_OK; i++) {
        if (i < plan->n_exec && run && !run[i])
            continue;
        if (dp && kiln__dp_before(g, i) && (st = flush(g, &n)) == KILN_OK)
            st = kiln__dp_run_before(g, i);
        if (st != KILN_OK || i == plan->n_exec)
            break;
        if (plan->fallback[i]) {
            st        = flush(g, &n);
            double t0 = g->profile ? kiln__profile_now() : 0.0;
            if (st == KILN_OK)
                st = kiln__fallback_run(g, plan->fallback[i], plan->exec[i]);
            if (g->profile)
                kiln__profile_add(g, plan->exec[i], true, kiln__profile_now() - t0);
        } else if (g->profile) {
            /* profiled: this node alone, waited for */
            double t0 = kiln__profile_now();
            st        = dev->iface->graph_compute(dev->context, &plan->exec[i], 1);
            if (st == KILN_OK && dev->iface->synchronize)
                st = dev->iface->synchronize(dev->context);
            kiln__profile_add(g, plan->exec[i], false, kiln__profile_now() - t0);
        } else {
            plan->batch[n++] = plan->exec[i];
        }
        if (st == KILN_OK && dp && kiln__dp_after(g, i) &&
            (st = flush(g, &n)) == KILN_OK)
            st = kiln__dp_run_after(g, i);
    }
    if (st == KILN_OK)
        st = flush(g, &n);
    if (st == KILN_OK && dev->iface->synchronize)
        st = dev->iface->synchronize(dev->context);
    if (st != KILN_OK && dp)
        kiln__dp_run_failed(g);
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
                           "kiln_graph_run: %s",
                           g->status != KILN_OK ? kiln_graph_error(g)
                                                : "the graph is not compiled; call "
                                                  "kiln_graph_compile first");
    kiln_status st = kiln__optim_before_run(g); /* one optimiser step per run */
    if (st == KILN_OK)
        st = kiln__scale_before_run(g);
    if (st == KILN_OK)
        st = run_plan(g, NULL);
    return st == KILN_OK ? kiln__scale_after_run(g) : st;
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
    bool       *need = kiln__calloc(g->n_nodes, sizeof *need, "kiln_graph_eval");
    bool       *run  = kiln__calloc(g->plan.n_exec, sizeof *run, "kiln_graph_eval");
    kiln_status st   = KILN_ERR_NO_MEMORY;
    if (need && run) {
        need[t->id] = true;
        for (size_t i = t->id + 1; i-- > 0;) {
            if (!need[i])
                continue;
            for (int s = 0; s < KILN_MAX_SRC; s++)
                if (g->nodes[i]->node.src[s])
                    need[((const kiln_tensor *)g->nodes[i]->node.src[s])->id] = true;
        }
        for (size_t i = 0; i < g->plan.n_exec; i++)
            run[i] = need[((const kiln_tensor *)g->plan.exec[i])->id];
        st = run_plan(g, run);
    }
    free(need);
    free(run);
    return st;
}
