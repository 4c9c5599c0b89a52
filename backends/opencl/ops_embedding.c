/* ops_embedding.c — EMBEDDING and EMBEDDING_GRAD, one work-item per output
 * element (kernels/embedding.cl). The ids are checked on the device through
 * an error slot, as cross-entropy's labels are (ops_loss.c): a bad one is
 * reported at the next synchronize, naming the id and its position. */
#include "ocl-impl.h"

/* The id check's arguments (error buffer, slot) for a kernel. */
static kiln_status arg_id_check(ocl_launch *l, const kiln_node *node, size_t i,
                                const kiln_node *ids, int64_t vocab)
{
    cl_uint     slot;
    kiln_status st = ocl_label_slot(l->dev, node, i, ids, vocab, &slot);
    if (st == KILN_OK) {
        ocl_arg_mem(l, l->dev->err);
        ocl_arg(l, sizeof slot, &slot);
    }
    return st;
}

/* src: table [V, C], ids [...]; out [..., C]. */
kiln_status ocl_op_embedding(ocl_device *dev, const kiln_node *node, size_t i)
{
    const kiln_node *table = node->src[0], *ids = node->src[1];
    if (node->numel == 0)
        return KILN_OK;
    ocl_launch l = ocl_begin(dev, OCL_K_EMBEDDING);
    ocl_arg_node(&l, node);
    ocl_arg_node(&l, table);
    ocl_arg_node(&l, ids);
    ocl_arg_u64(&l, (uint64_t)table->dims[0]);
    ocl_arg_u64(&l, (uint64_t)table->dims[1]);
    ocl_arg_u64(&l, (uint64_t)node->numel);
    kiln_status st = arg_id_check(&l, node, i, ids, table->dims[0]);
    return st == KILN_OK ? ocl_run(&l, (uint64_t)node->numel) : st;
}

/* src: g [..., C], ids [...]; out [V, C]. */
kiln_status ocl_op_embedding_grad(ocl_device *dev, const kiln_node *node, size_t i)
{
    const kiln_node *ids = node->src[1];
    if (node->numel == 0)
        return KILN_OK;
    ocl_launch l = ocl_begin(dev, OCL_K_EMBEDDING_GRAD);
    ocl_arg_node(&l, node);
    ocl_arg_node(&l, node->src[0]);
    ocl_arg_node(&l, ids);
    ocl_arg_u64(&l, (uint64_t)ids->numel);
    ocl_arg_u64(&l, (uint64_t)node->dims[1]);
    ocl_arg_u64(&l, (uint64_t)node->numel);
    kiln_status st = arg_id_check(&l, node, i, ids, node->dims[0]);
    return st == KILN_OK ? ocl_run(&l, (uint64_t)node->numel) : st;
}
