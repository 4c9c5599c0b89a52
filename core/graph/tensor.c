/* core/graph/tensor.c — tensor queries, and data in and out of the device. */
#include "../kiln-impl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

KILN_API kiln_dtype kiln_tensor_dtype(const kiln_tensor *t)
{
    return t ? t->node.dtype : KILN_F32;
}

KILN_API int kiln_tensor_ndim(const kiln_tensor *t)
{
    return t ? t->node.ndim : 0;
}

KILN_API int64_t kiln_tensor_dim(const kiln_tensor *t, int axis)
{
    if (!t)
        return 0;
    if (axis < 0)
        axis += t->node.ndim;
    return axis >= 0 && axis < t->node.ndim ? t->node.dims[axis] : 0;
}

KILN_API int64_t kiln_tensor_numel(const kiln_tensor *t)
{
    return t ? t->node.numel : 0;
}

KILN_API size_t kiln_tensor_nbytes(const kiln_tensor *t)
{
    return t ? kiln__tensor_bytes(t) : 0;
}

KILN_API const char *kiln_tensor_name(const kiln_tensor *t)
{
    return t && t->name ? t->name : "";
}

/* "tensor 'x' [64, 784]" or "matmul [64, 10]" for messages. */
const char *kiln__describe(char *buf, size_t len, const kiln_tensor *t)
{
    char s[KILN__SHAPE_STR];
    kiln__shape_str(s, t->node.ndim, t->node.dims);
    if (t->name)
        snprintf(buf, len, "tensor '%s' %s", t->name, s);
    else
        snprintf(buf, len, "%s %s", kiln__op_name(t->node.op), s);
    return buf;
}

static kiln_status check_io(const kiln_tensor *t, const void *data, size_t nbytes,
                            const char *call)
{
    if (!t)
        return kiln__error(KILN_ERR_INVALID_ARG, "%s: tensor is NULL", call);
    if (t->flags & KILN__POISON)
        return kiln__error(KILN_ERR_STATE,
                           "%s: the tensor is poisoned by an earlier "
                           "error: %s",
                           call, kiln_graph_error(t->graph));
    char d[160];
    if (nbytes != kiln__tensor_bytes(t))
        return kiln__error(KILN_ERR_INVALID_ARG,
                           "%s: %zu bytes given for %s, which "
                           "holds %zu",
                           call, nbytes, kiln__describe(d, sizeof d, t),
                           kiln__tensor_bytes(t));
    if (!data && nbytes)
        return kiln__error(KILN_ERR_INVALID_ARG, "%s: data is NULL", call);
    return KILN_OK;
}

KILN_API kiln_status kiln_tensor_write(kiln_tensor *t, const void *data, size_t nbytes)
{
    kiln_status st = check_io(t, data, nbytes, "kiln_tensor_write");
    if (st != KILN_OK)
        return st;
    char d[160];
    if (!(t->flags & (KILN__INPUT | KILN__PARAM)))
        return kiln__error(KILN_ERR_INVALID_ARG,
                           "kiln_tensor_write: %s is not an input "
                           "or a parameter",
                           kiln__describe(d, sizeof d, t));
    return kiln__leaf_write(t, data, nbytes);
}

kiln_status kiln__leaf_write(kiln_tensor *t, const void *data, size_t nbytes)
{
    kiln_status st;
    char        d[160];
    t->written = true;
    if (nbytes == 0)
        return KILN_OK;
    kiln_graph *g = t->graph;
    if (g->compiled) {
        const kiln_device *dev = &g->ctx->device;
        st = dev->iface->buffer_write(dev->context, t->node.buffer, t->node.offset, data,
                                      nbytes);
        if (st != KILN_OK)
            return kiln__error(st, "kiln_tensor_write: %s: %s",
                               kiln__describe(d, sizeof d, t), kiln_last_error());
        return KILN_OK;
    }
    if (!t->staged) {
        t->staged = kiln__malloc(nbytes, "a staged tensor");
        if (!t->staged)
            return KILN_ERR_NO_MEMORY;
    }
    memcpy(t->staged, data, nbytes);
    return KILN_OK;
}

KILN_API kiln_status kiln_tensor_read(const kiln_tensor *t, void *data, size_t nbytes)
{
    kiln_status st = check_io(t, data, nbytes, "kiln_tensor_read");
    if (st != KILN_OK)
        return st;
    const kiln_graph *g = t->graph;
    char              d[160];
    bool              leaf = (t->flags & KILN__LEAF) != 0;
    if (!g->compiled) {
        if (!leaf)
            return kiln__error(KILN_ERR_STATE,
                               "kiln_tensor_read: %s has no value: "
                               "compile and run the graph first",
                               kiln__describe(d, sizeof d, t));
        if (!t->written)
            return kiln__error(KILN_ERR_STATE,
                               "kiln_tensor_read: %s has not been "
                               "written yet",
                               kiln__describe(d, sizeof d, t));
        if (nbytes)
            memcpy(data, t->staged, nbytes);
        return KILN_OK;
    }
    if (!leaf && !(t->flags & KILN__OUTPUT))
        return kiln__error(KILN_ERR_STATE,
                           "kiln_tensor_read: %s is an intermediate "
                           "whose storage is reused; mark it with kiln_output before "
                           "kiln_graph_compile",
                           kiln__describe(d, sizeof d, t));
    if (!leaf && !g->ran)
        return kiln__error(KILN_ERR_STATE,
                           "kiln_tensor_read: %s has no value until "
                           "kiln_graph_run",
                           kiln__describe(d, sizeof d, t));
    if (leaf && !t->written)
        return kiln__error(KILN_ERR_STATE,
                           "kiln_tensor_read: %s has not been "
                           "written yet",
                           kiln__describe(d, sizeof d, t));
    if (nbytes == 0)
        return KILN_OK;
    const kiln_device *dev = &g->ctx->device;
    st = dev->iface->buffer_read(dev->context, t->node.buffer, t->node.offset, data,
                                 nbytes);
    if (st != KILN_OK)
        return kiln__error(st, "kiln_tensor_read: %s: %s", kiln__describe(d, sizeof d, t),
                           kiln_last_error());
    return KILN_OK;
}
