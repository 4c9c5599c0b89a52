/* core/training-pending.c — placeholders for the training API until the
 * training branch (kiln_backward, kiln_grad, the optimisers) is merged.
 *
 * They are weak, so the real definitions replace them at link time without a
 * change here; delete this file once they are in. Until then, each fails with
 * a message that says so, and the programs that train (kiln-train, the
 * examples) build and report it instead of failing to link.
 */
#include "kiln-impl.h"

#include <stddef.h>

#define PENDING "is not in this build of kiln yet (the training API is being merged)"

__attribute__((weak)) KILN_API kiln_status kiln_backward(kiln_graph *g, kiln_tensor *loss)
{
    (void)g, (void)loss;
    return kiln__error(KILN_ERR_STATE, "kiln_backward " PENDING);
}

__attribute__((weak)) KILN_API kiln_tensor *kiln_grad(kiln_graph *g, kiln_tensor *t)
{
    (void)g, (void)t;
    kiln__error(KILN_ERR_STATE, "kiln_grad " PENDING);
    return NULL;
}

__attribute__((weak)) KILN_API kiln_optimizer *kiln_sgd(kiln_graph *g, float lr,
                                                       float momentum, float weight_decay)
{
    (void)g, (void)lr, (void)momentum, (void)weight_decay;
    kiln__error(KILN_ERR_STATE, "kiln_sgd " PENDING);
    return NULL;
}

__attribute__((weak)) KILN_API kiln_optimizer *kiln_adam(kiln_graph *g, float lr,
                                                        float beta1, float beta2,
                                                        float eps, float weight_decay)
{
    (void)g, (void)lr, (void)beta1, (void)beta2, (void)eps, (void)weight_decay;
    kiln__error(KILN_ERR_STATE, "kiln_adam " PENDING);
    return NULL;
}

__attribute__((weak)) KILN_API kiln_status kiln_optimizer_set_lr(kiln_optimizer *opt,
                                                                 float lr)
{
    (void)opt, (void)lr;
    return kiln__error(KILN_ERR_STATE, "kiln_optimizer_set_lr " PENDING);
}

__attribute__((weak)) KILN_API kiln_status kiln_optimizer_reset(kiln_optimizer *opt)
{
    (void)opt;
    return kiln__error(KILN_ERR_STATE, "kiln_optimizer_reset " PENDING);
}
