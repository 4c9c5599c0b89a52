/* core/train/scale.c — dynamic loss scaling, for training in f16 (mixed
 * precision), as PyTorch's torch.amp.GradScaler does it.
 *
 * f16's range stops at 65504 and its precision at 2^-24: small gradients
 * vanish unless the loss is multiplied by a large scale first. kiln_backward
 * then seeds the backward pass with the scale instead of 1 (a leaf of kiln's,
 * rewritten before each run), so every gradient comes out scaled. The
 * optimiser's steps divide by the scale as they read each gradient
 * (backend.h's `unscale`), and they read the gradients' sum of squares,
 * which an overflow makes Inf or NaN: then no step changes anything
 * (`skip`). After each run kiln reads that one number back: an overflow
 * halves the scale and takes back the optimiser's step count (Adam's bias
 * corrections count the steps taken); `interval` runs in a row without one
 * double it.
 */
#include "../kiln-impl.h"

#include <math.h>
#include <stdio.h>

/* The scale stays within [2^-24, 2^24], as far as f16's range makes sense. */
#define SCALE_MIN 0x1p-24f
#define SCALE_MAX 0x1p24f

KILN_API kiln_status kiln_loss_scale(kiln_graph *g, float init, int interval)
{
    static const char call[] = "kiln_loss_scale";
    if (!g)
        return kiln__error(KILN_ERR_INVALID_ARG, "%s: graph is NULL", call);
    if (g->status != KILN_OK)
        return kiln__error(g->status, "%s: the graph has an error: %s", call,
                           kiln_graph_error(g));
    if (!(init >= SCALE_MIN && init <= SCALE_MAX))
        return kiln__error(KILN_ERR_INVALID_ARG,
                           "%s: init %g, expected a scale in [2^-24, 2^24] (65536 is "
                           "usual)",
                           call, (double)init);
    if (interval < 1)
        return kiln__error(KILN_ERR_INVALID_ARG,
                           "%s: interval %d, expected at least 1 (runs without an "
                           "overflow before the scale doubles; 2000 is usual)",
                           call, interval);
    if (g->loss || g->compiled)
        return kiln__error(KILN_ERR_STATE,
                           "%s: call it before kiln_backward, which seeds the "
                           "gradients with the scale",
                           call);
    g->scale.on       = true;
    g->scale.value    = init;
    g->scale.interval = interval;
    return KILN_OK;
}

KILN_API kiln_status kiln_loss_scale_state(const kiln_graph *g, float *scale,
                                           uint64_t *skipped)
{
    if (!g || !g->scale.on)
        return kiln__error(g ? KILN_ERR_STATE : KILN_ERR_INVALID_ARG,
                           "kiln_loss_scale_state: %s",
                           g ? "the graph has no loss scaling (kiln_loss_scale)"
                             : "graph is NULL");
    if (scale)
        *scale = g->scale.value;
    if (skipped)
        *skipped = g->scale.skipped;
    return KILN_OK;
}

kiln_tensor *kiln__scale_seed(kiln_graph *g, kiln_tensor *loss)
{
    kiln_tensor *t = kiln__node_new(g, KILN_OP_LEAF, loss->node.dtype, loss->node.ndim,
                                    loss->node.dims, NULL, 0);
    if (t->flags & KILN__POISON)
        return t;
    t->flags  = KILN__CONST; /* kiln's own, rewritten before each run */
    t->staged = kiln__calloc(1, kiln__tensor_bytes(t), "the loss scale");
    if (!t->staged)
        return kiln__graph_fail(g, KILN_ERR_NO_MEMORY,
                                "kiln_backward: out of memory for the loss scale");
    kiln_convert(t->staged, t->node.dtype, &g->scale.value, KILN_F32, 1);
    t->written   = true;
    g->scale.seed = t;
    return t;
}

kiln_status kiln__scale_before_run(kiln_graph *g)
{
    if (!g->scale.on || !g->scale.seed)
        return KILN_OK;
    kiln_tensor       *t   = g->scale.seed;
    const kiln_device *dev = &g->ctx->device;
    uint32_t           bits = 0;
    kiln_convert(&bits, t->node.dtype, &g->scale.value, KILN_F32, 1);
    kiln_status st = dev->iface->buffer_write(dev->context, t->node.buffer, t->node.offset,
                                              &bits, kiln__tensor_bytes(t));
    if (st != KILN_OK)
        return kiln__error(st, "kiln_graph_run: writing the loss scale to %s: %s",
                           kiln_context_device(g->ctx), kiln_last_error());
    return KILN_OK;
}

kiln_status kiln__scale_after_run(kiln_graph *g)
{
    if (!g->scale.on || !g->optimizers || !g->clip_sumsq)
        return KILN_OK;
    float       s;
    kiln_status st = kiln_tensor_read(g->clip_sumsq, &s, sizeof s);
    if (st != KILN_OK)
        return kiln__error(st, "kiln_graph_run: reading the gradients' sum of squares "
                               "for the loss scale: %s",
                           kiln_last_error());
    if (!isfinite(s)) {
        /* the steps changed nothing: neither does this run count as one */
        kiln__optim_unstep(g);
        g->scale.skipped++;
        g->scale.good  = 0;
        g->scale.value = fmaxf(g->scale.value * 0.5f, SCALE_MIN);
    } else if (++g->scale.good >= g->scale.interval) {
        g->scale.good  = 0;
        g->scale.value = fminf(g->scale.value * 2.0f, SCALE_MAX);
    }
    return KILN_OK;
}
