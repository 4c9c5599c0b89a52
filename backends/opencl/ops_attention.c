/* ops_attention.c — CAUSAL_ATTENTION and its gradient (kernels/attention.cl):
 * a work-item per row of a head, an online softmax, no [T, T] matrix; the
 * gradient in two passes, queries then keys and values, with each query
 * row's log-sum-exp and sum kept between them in scratch memory. */
#include "ocl-impl.h"

/* as kernels/attention.cl */
#define OCL_ATTN_D_MAX 128

const char *ocl_attention_limits(const kiln_node *node)
{
    const kiln_node *qkv = node->src[node->op == KILN_OP_CAUSAL_ATTENTION_GRAD ? 1 : 0];
    if (qkv->dims[2] / 3 / node->iparam[0] > OCL_ATTN_D_MAX)
        return "a head is wider than the OpenCL kernels' 128 columns";
    return NULL;
}

/* The shape arguments every attention kernel takes after its tensors. */
static void attn_args(ocl_launch *l, const kiln_node *qkv, const kiln_node *node,
                      uint64_t rows)
{
    ocl_arg_u64(l, (uint64_t)qkv->dims[1]);
    ocl_arg_u64(l, (uint64_t)qkv->dims[2] / 3);
    ocl_arg_u64(l, (uint64_t)node->iparam[0]);
    ocl_arg_f32(l, node->fparam[0]);
    ocl_arg_u64(l, rows);
}

kiln_status ocl_op_causal_attention(ocl_device *dev, const kiln_node *node, size_t i)
{
    (void)i;
    bool             grad = node->op == KILN_OP_CAUSAL_ATTENTION_GRAD;
    const kiln_node *qkv  = node->src[grad ? 1 : 0];
    uint64_t         rows = (uint64_t)qkv->dims[0] * (uint64_t)qkv->dims[1] *
                    (uint64_t)node->iparam[0];
    if (node->numel == 0)
        return KILN_OK;
    if (!grad) {
        ocl_launch l = ocl_begin(dev, OCL_K_ATTENTION);
        ocl_arg_node(&l, node);
        ocl_arg_node(&l, qkv);
        attn_args(&l, qkv, node, rows);
        return ocl_run(&l, rows);
    }
    cl_mem      stats;
    kiln_status st = ocl_scratch(dev, (size_t)rows * 2 * sizeof(cl_float), &stats);
    if (st != KILN_OK)
        return st;
    for (int pass = 0; pass < 2 && st == KILN_OK; pass++) {
        ocl_launch l = ocl_begin(dev,
                                 pass ? OCL_K_ATTENTION_GRAD_KV : OCL_K_ATTENTION_GRAD_Q);
        ocl_arg_node(&l, node);
        ocl_arg_node(&l, node->src[0]);
        ocl_arg_node(&l, qkv);
        ocl_arg_mem(&l, stats);
        attn_args(&l, qkv, node, rows);
        st = ocl_run(&l, rows);
    }
    return st;
}
