/* core/graph/ops_loss.c — mse_loss and softmax cross-entropy (over the last
 * axis of logits of any rank). */
#include "../kiln-impl.h"

KILN_API kiln_tensor *kiln_mse_loss(kiln_graph *g, kiln_tensor *pred, kiln_tensor *target)
{
    kiln_tensor *src[] = {pred, target};
    const char  *name  = kiln__op_name(KILN_OP_MSE_LOSS);
    if (!kiln__check_sources(g, KILN_OP_MSE_LOSS, src, 2))
        return g ? g->poison : NULL;
    const kiln_node *p = &pred->node, *t = &target->node;
    bool             same = p->ndim == t->ndim;
    for (int i = 0; same && i < p->ndim; i++)
        same = p->dims[i] == t->dims[i];
    if (!same) {
        char sp[KILN__SHAPE_STR], st[KILN__SHAPE_STR];
        return kiln__graph_fail(g, KILN_ERR_SHAPE,
                                "%s: pred %s and target %s: "
                                "expected equal shapes",
                                name, kiln__shape_str(sp, p->ndim, p->dims),
                                kiln__shape_str(st, t->ndim, t->dims));
    }
    return kiln__node_new(g, KILN_OP_MSE_LOSS, KILN__FLOAT, 0, NULL, src, 2);
}

KILN_API kiln_tensor *kiln_cross_entropy(kiln_graph *g, kiln_tensor *logits,
                                         kiln_tensor *labels)
{
    kiln_tensor *src[] = {logits, labels};
    const char  *name  = kiln__op_name(KILN_OP_CROSS_ENTROPY);
    if (!kiln__check_sources(g, KILN_OP_CROSS_ENTROPY, src, 2))
        return g ? g->poison : NULL;
    char             sl[KILN__SHAPE_STR], sy[KILN__SHAPE_STR];
    const kiln_node *l = &logits->node, *y = &labels->node;
    kiln__shape_str(sl, l->ndim, l->dims);
    kiln__shape_str(sy, y->ndim, y->dims);
    bool match = l->ndim >= 1 && y->ndim == l->ndim - 1;
    for (int d = 0; match && d < y->ndim; d++)
        match = y->dims[d] == l->dims[d];
    if (!match)
        return kiln__graph_fail(g, KILN_ERR_SHAPE,
                                "%s: logits %s and labels "
                                "%s: expected logits [..., C] and labels [...], the "
                                "logits' shape without the last axis",
                                name, sl, sy);
    if (l->dims[l->ndim - 1] == 0)
        return kiln__graph_fail(g, KILN_ERR_SHAPE,
                                "%s: logits %s have no "
                                "classes, expected C >= 1",
                                name, sl);
    if (l->dims[l->ndim - 1] > INT32_MAX)
        return kiln__graph_fail(g, KILN_ERR_SHAPE,
                                "%s: logits %s have more classes than an i32 label "
                                "can name",
                                name, sl);
    return kiln__node_new(g, KILN_OP_CROSS_ENTROPY, KILN__FLOAT, 0, NULL, src, 2);
}
