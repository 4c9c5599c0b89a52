/* core/train/clip.c — clipping the gradients by their global norm.
 *
 * kiln_clip_grad_norm adds to the graph the sum of the squares of every
 * parameter's gradient, one scalar; the optimiser's step nodes take it as
 * their last source and scale the gradient by min(1, max_norm / (norm +
 * 1e-6)) themselves (backend.h), so clipping costs no extra pass over the
 * gradients. The norm is an output of the graph, for logging.
 */
#include "../kiln-impl.h"

#include <math.h>

static kiln_status check(const kiln_graph *g, float max_norm)
{
    static const char call[] = "kiln_clip_grad_norm";
    if (!g)
        return kiln__error(KILN_ERR_INVALID_ARG, "%s: graph is NULL", call);
    if (g->status != KILN_OK)
        return kiln__error(g->status, "%s: the graph has an error: %s", call,
                           kiln_graph_error(g));
    if (!(max_norm > 0.0f) || !isfinite(max_norm))
        return kiln__error(KILN_ERR_INVALID_ARG,
                           "%s: max_norm %g, expected a finite value > 0", call,
                           (double)max_norm);
    if (g->compiled)
        return kiln__error(KILN_ERR_STATE,
                           "%s: the graph is already compiled; clip before "
                           "kiln_graph_compile",
                           call);
    if (!g->loss)
        return kiln__error(KILN_ERR_STATE,
                           "%s: call kiln_backward first: there are no gradients "
                           "to clip",
                           call);
    if (g->optimizers)
        return kiln__error(KILN_ERR_STATE,
                           "%s: the graph already has an optimiser, whose steps "
                           "would not be clipped; clip before adding it",
                           call);
    if (g->clip_sumsq)
        return kiln__error(KILN_ERR_STATE,
                           "%s: the gradients are already clipped (to %g)", call,
                           (double)g->clip_max_norm);
    return KILN_OK;
}

kiln_tensor *kiln__grad_sumsq(kiln_graph *g, const char *call)
{
    kiln_tensor *sumsq = NULL;
    size_t       last  = g->loss->id; /* parameters come before the loss */
    for (size_t i = 0; i <= last && g->status == KILN_OK; i++) {
        kiln_tensor *p = g->nodes[i];
        if (!(p->flags & KILN__PARAM) || !p->grad)
            continue;
        kiln_tensor *s = kiln_sum(g, kiln_mul(g, p->grad, p->grad));
        sumsq          = sumsq ? kiln_add(g, sumsq, s) : s;
    }
    if (g->status != KILN_OK) {
        kiln__error(g->status, "%s: %s", call, kiln_graph_error(g));
        return NULL;
    }
    if (!sumsq) {
        kiln__error(KILN_ERR_STATE,
                    "%s: no parameter has a gradient: the loss depends on none", call);
        return NULL;
    }
    if (kiln_output(g, sumsq) != KILN_OK) {
        kiln__error(g->status, "%s: %s", call, kiln_graph_error(g));
        return NULL;
    }
    g->clip_sumsq    = sumsq;
    g->clip_max_norm = 0.0f; /* no clipping unless kiln_clip_grad_norm says */
    return sumsq;
}

KILN_API kiln_tensor *kiln_clip_grad_norm(kiln_graph *g, float max_norm)
{
    if (check(g, max_norm) != KILN_OK)
        return NULL;
    kiln_tensor *sumsq = kiln__grad_sumsq(g, "kiln_clip_grad_norm");
    if (!sumsq)
        return NULL;
    kiln_tensor *norm = kiln_sqrt(g, sumsq);
    /* under loss scaling the gradients are scaled: the norm reported is of
     * the true ones (the steps unscale before they clip) */
    if (g->scale.on && g->scale.seed)
        norm = kiln_div(g, norm,
                        kiln_reshape(g, kiln_cast(g, g->scale.seed, KILN_F32), 0, NULL));
    if (kiln_output(g, norm) != KILN_OK) {
        kiln__error(g->status, "kiln_clip_grad_norm: %s", kiln_graph_error(g));
        return NULL;
    }
    g->clip_max_norm = max_norm;
    return norm;
}
