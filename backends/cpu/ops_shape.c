/* ops_shape.c — TRANSPOSE of a 2-D tensor. (RESHAPE never reaches a backend:
 * it is a view of its source's storage.)
 *
 * Tiles of CPU_TILE x CPU_TILE keep both the rows read and the rows written in
 * cache, where a plain double loop strides through one of them. */
#include "cpu-impl.h"

#define CPU_TILE 32


/* out[c, r] = x[r, c] for r in [r0, r1), c in [c0, c1). */
static void cpu_transpose_tile(float *out, const float *x, int64_t rows, int64_t cols,
                               int64_t r0, int64_t c0)
{
    int64_t r1 = r0 + CPU_TILE < rows ? r0 + CPU_TILE : rows;
    int64_t c1 = c0 + CPU_TILE < cols ? c0 + CPU_TILE : cols;
    for (int64_t r = r0; r < r1; r++)
        for (int64_t c = c0; c < c1; c++)
            out[c * rows + r] = x[r * cols + c];
}

kiln_status cpu_op_transpose(const cpu_device *dev, const kiln_node *node)
{
    (void)dev;
    const kiln_node *src  = node->src[0];
    int64_t          rows = src->dims[0], cols = src->dims[1];
    const float     *x   = cpu_cf32(src);
    float           *out = cpu_f32(node);
    for (int64_t r0 = 0; r0 < rows; r0 += CPU_TILE)
        for (int64_t c0 = 0; c0 < cols; c0 += CPU_TILE)
            cpu_transpose_tile(out, x, rows, cols, r0, c0);
    return KILN_OK;
}
