/* core/graph/ops_loss.c — mse_loss and softmax cross-entropy. */
#include "../kiln-impl.h"

KILN_API kiln_tensor *kiln_mse_loss(kiln_graph *g, kiln_tensor *pred, kiln_tensor *target)
{
    kiln_tensor *src[] = { pred, target };
    if (!kiln__check_operands(g, "mse_loss", src, 2))
        return g ? g->poison : NULL;
    if (!kiln__check_f32(g, "mse_loss", "pred", pred) ||
        !kiln__check_f32(g, "mse_loss", "target", target))
        return g->poison;
    const kiln_node *p = &pred->node, *t = &target->node;
    bool same = p->ndim == t->ndim;
    for (int i = 0; same && i < p->ndim; i++)
        same = p->dims[i] == t->dims[i];
    if (!same) {
        char sp[KILN__SHAPE_STR], st[KILN__SHAPE_STR];
        return kiln__graph_fail(g, KILN_ERR_SHAPE, "mse_loss: pred %s and target %s: "
                                "expected equal shapes", kiln__shape_str(sp, p->ndim,
                                p->dims), kiln__shape_str(st, t->ndim, t->dims));
    }
    return kiln__node_new(g, KILN_OP_MSE_LOSS, KILN_F32, 0, NULL, src, 2);
}

KILN_API kiln_tensor *kiln_cross_entropy(kiln_graph *g, kiln_tensor *logits,
                                         kiln_tensor *labels)
{
    kiln_tensor *src[] = { logits, labels };
    if (!kiln__check_operands(g, "cross_entropy", src, 2))
        return g ? g->poison : NULL;
    if (!kiln__check_f32(g, "cross_entropy", "logits", logits))
        return g->poison;
    char sl[KILN__SHAPE_STR], sy[KILN__SHAPE_STR];
    const kiln_node *l = &logits->node, *y = &labels->node;
    kiln__shape_str(sl, l->ndim, l->dims);
    kiln__shape_str(sy, y->ndim, y->dims);
    if (y->dtype != KILN_I32)
        return kiln__graph_fail(g, KILN_ERR_SHAPE, "cross_entropy: labels %s are f32, "
                                "expected i32 class indices", sy);
    if (l->ndim != 2 || y->ndim != 1 || y->dims[0] != l->dims[0])
        return kiln__graph_fail(g, KILN_ERR_SHAPE, "cross_entropy: logits %s and labels "
                                "%s: expected logits [N, C] and labels [N]", sl, sy);
    if (l->dims[1] == 0)
        return kiln__graph_fail(g, KILN_ERR_SHAPE, "cross_entropy: logits %s have no "
                                "classes, expected C >= 1", sl);
    return kiln__node_new(g, KILN_OP_CROSS_ENTROPY, KILN_F32, 0, NULL, src, 2);
}
