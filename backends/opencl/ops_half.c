/* ops_half.c — f16 and bf16 on the OpenCL device: CAST, and the widening
 * that runs every other op on 16-bit tensors with its f32 kernel. Each
 * 16-bit float source is converted into an f32 buffer of the device's, the
 * op's kernel runs on a copy of the node that points at those, and its
 * output is rounded back into the node's storage: the op computes in f32,
 * as kiln's 16-bit contract says, and the data never leaves the device.
 * The buffers are grown on demand and kept (one per source slot and one
 * for the output), like the scratch buffer. */
#include "ocl-impl.h"

/* dst (its dtype) = src (its dtype), n elements, both of which may be f32
 * views on widening buffers. */
static kiln_status convert(ocl_device *dev, const kiln_node *dst, const kiln_node *src,
                           uint64_t n)
{
    if (n == 0)
        return KILN_OK;
    ocl_launch l;
    if (dst->dtype == KILN_F32) {
        l = ocl_begin(dev, OCL_K_WIDEN);
        ocl_arg_node(&l, dst);
        ocl_arg_node(&l, src);
        ocl_arg_u64(&l, n);
        ocl_arg_i32(&l, src->dtype == KILN_BF16);
    } else if (src->dtype == KILN_F32) {
        l = ocl_begin(dev, OCL_K_NARROW);
        ocl_arg_node(&l, dst);
        ocl_arg_node(&l, src);
        ocl_arg_u64(&l, n);
        ocl_arg_i32(&l, dst->dtype == KILN_BF16);
    } else if (src->dtype == dst->dtype) { /* never built: kiln_cast returns a */
        ocl_buffer *d = dst->buffer, *s = src->buffer;
        cl_int      e = clEnqueueCopyBuffer(dev->queue, s->mem, d->mem, src->offset,
                                            dst->offset, n * 2, 0, NULL, NULL);
        return e == CL_SUCCESS ? KILN_OK
                               : ocl_cl_fail(dev->host, "clEnqueueCopyBuffer", e,
                                             "%llu bytes", (unsigned long long)n * 2);
    } else {
        l = ocl_begin(dev, OCL_K_RECAST16);
        ocl_arg_node(&l, dst);
        ocl_arg_node(&l, src);
        ocl_arg_u64(&l, n);
        ocl_arg_i32(&l, dst->dtype == KILN_BF16);
    }
    return ocl_run(&l, n);
}

kiln_status ocl_op_cast(ocl_device *dev, const kiln_node *node, size_t i)
{
    (void)i;
    return convert(dev, node, node->src[0], (uint64_t)node->numel);
}

/* An f32 twin of t in widening buffer `slot`; `fill` converts t's data in. */
static kiln_status twin(ocl_device *dev, int slot, const kiln_node *t, bool fill,
                        kiln_node *tw, ocl_buffer *buf)
{
    size_t      bytes = (size_t)t->numel * sizeof(cl_float);
    kiln_status st    = ocl_grow_buffer(dev, &dev->widen[slot], &dev->widen_size[slot],
                                        bytes ? bytes : 4, "a 16-bit tensor's f32 copy",
                                        &buf->mem);
    if (st != KILN_OK)
        return st;
    buf->size  = bytes;
    *tw        = *t;
    tw->dtype  = KILN_F32;
    tw->buffer = buf;
    tw->offset = 0;
    return fill ? convert(dev, tw, t, (uint64_t)t->numel) : KILN_OK;
}

kiln_status ocl_run_widened(ocl_device *dev, const kiln_node *node, size_t i,
                            ocl_op_fn run)
{
    kiln_node   src[KILN_MAX_SRC], out = *node;
    ocl_buffer  buf[KILN_MAX_SRC + 1];
    kiln_status st = KILN_OK;
    for (int s = 0; s < KILN_MAX_SRC && node->src[s] && st == KILN_OK; s++)
        if (kiln__is_half(node->src[s]->dtype) &&
            (st = twin(dev, s, node->src[s], true, &src[s], &buf[s])) == KILN_OK)
            out.src[s] = &src[s];
    if (st != KILN_OK || !kiln__is_half(node->dtype))
        return st == KILN_OK ? run(dev, &out, i) : st;
    if (node->src[0] && out.src[0] != node->src[0] && node->buffer == node->src[0]->buffer &&
        node->offset == node->src[0]->offset) {
        /* in place (STORE_SLICE): the output is src[0]'s twin */
        out.dtype  = KILN_F32;
        out.buffer = out.src[0]->buffer;
        out.offset = 0;
    } else {
        kiln_node tw; /* the output's twin; out keeps its twinned sources */
        if ((st = twin(dev, KILN_MAX_SRC, node, false, &tw, &buf[KILN_MAX_SRC])) != KILN_OK)
            return st;
        out.dtype  = KILN_F32;
        out.buffer = tw.buffer;
        out.offset = 0;
    }
    st = run(dev, &out, i);
    return st == KILN_OK ? convert(dev, node, &out, (uint64_t)node->numel) : st;
}
