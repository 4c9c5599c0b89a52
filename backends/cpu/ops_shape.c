/* ops_shape.c — TRANSPOSE of a 2-D tensor, PERMUTE of up to 4 axes, SLICE
 * and its gradient.
 * (RESHAPE never reaches a backend: it is a view of its source's storage.)
 *
 * Tiles of CPU_TILE x CPU_TILE keep both the rows read and the rows written in
 * cache, where a plain double loop strides through one of them. A permute
 * that keeps the last axis last ([B,T,H,D] <-> [B,H,T,D]) copies whole rows
 * of it; one that moves it is a batch of 2-D tile transposes between the
 * output's last axis and the one that was the input's last. */
#include <string.h>

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

/* ---- PERMUTE ------------------------------------------------------------- */

/* The op seen as 4-D (leading axes of 1): output dims, and for each output
 * axis the input's stride along it. q is the output axis that is the
 * input's last (stride 1). */
typedef struct cpu_perm {
    const float *x;
    float       *out;
    int64_t      od[4], is[4];
    int          q;
    int64_t      q_tiles; /* tiles of CPU_TILE along axis q (q < 3) */
} cpu_perm;

static cpu_perm cpu_perm_of(const kiln_node *node)
{
    const kiln_node *src = node->src[0];
    int              nd = node->ndim, pad      = 4 - nd;
    int64_t          stride[KILN_MAX_DIMS], st = 1;
    for (int d = nd; d-- > 0;) {
        stride[d] = st;
        st *= src->dims[d];
    }
    cpu_perm p = {.x = cpu_cf32(src), .out = cpu_f32(node), .q = 3};
    for (int d = 0; d < 4; d++) {
        p.od[d] = d < pad ? 1 : node->dims[d - pad];
        p.is[d] = d < pad ? 0 : stride[node->iparam[d - pad]];
    }
    for (int d = pad; d < 4; d++)
        if (node->iparam[d - pad] == nd - 1)
            p.q = d;
    p.q_tiles = (p.od[p.q] + CPU_TILE - 1) / CPU_TILE;
    return p;
}

/* Output rows [lo, hi) of the last axis, when it is the input's last too. */
static void cpu_perm_rows(void *arg, size_t lo, size_t hi)
{
    const cpu_perm *p = arg;
    int64_t         n = p->od[3];
    for (size_t r = lo; r < hi; r++) {
        int64_t i2 = (int64_t)r % p->od[2], i1 = (int64_t)r / p->od[2] % p->od[1];
        int64_t i0 = (int64_t)r / p->od[2] / p->od[1];
        memcpy(p->out + (int64_t)r * n,
               p->x + i0 * p->is[0] + i1 * p->is[1] + i2 * p->is[2],
               (size_t)n * sizeof(float));
    }
}

/* Units [lo, hi): each a tile of CPU_TILE along axis q, across the whole
 * last axis in tiles, at one index of the two other axes. */
static void cpu_perm_tiles(void *arg, size_t lo, size_t hi)
{
    const cpu_perm *p = arg;
    int             u = -1, v = -1; /* the two axes besides q and 3 */
    for (int d = 0; d < 3; d++)
        if (d != p->q && u < 0)
            u = d;
        else if (d != p->q)
            v = d;
    int64_t os[4] = {p->od[1] * p->od[2] * p->od[3], p->od[2] * p->od[3], p->od[3], 1};
    for (size_t w = lo; w < hi; w++) {
        int64_t t = (int64_t)w % p->q_tiles, rest = (int64_t)w / p->q_tiles;
        int64_t iv = rest % p->od[v], iu = rest / p->od[v];
        int64_t q0       = t * CPU_TILE,
                q1       = q0 + CPU_TILE < p->od[p->q] ? q0 + CPU_TILE : p->od[p->q];
        const float *x   = p->x + iu * p->is[u] + iv * p->is[v];
        float       *out = p->out + iu * os[u] + iv * os[v];
        for (int64_t j0 = 0; j0 < p->od[3]; j0 += CPU_TILE) {
            int64_t j1 = j0 + CPU_TILE < p->od[3] ? j0 + CPU_TILE : p->od[3];
            for (int64_t j = j0; j < j1; j++)
                for (int64_t i = q0; i < q1; i++)
                    out[i * os[p->q] + j] = x[i + j * p->is[3]];
        }
    }
}

kiln_status cpu_op_permute(const cpu_device *dev, const kiln_node *node)
{
    if (node->numel == 0)
        return KILN_OK;
    cpu_perm p = cpu_perm_of(node);
    if (p.q == 3) {
        size_t rows = (size_t)(p.od[0] * p.od[1] * p.od[2]);
        cpu_parallel_for(dev, rows, 1, cpu_row_grain((size_t)p.od[3]), cpu_perm_rows, &p);
        return KILN_OK;
    }
    int64_t other = p.od[0] * p.od[1] * p.od[2] / p.od[p.q];
    size_t  units = (size_t)(other * p.q_tiles);
    size_t  each  = (size_t)(CPU_TILE * p.od[3]); /* elements per unit, at most */
    size_t  grain = CPU_ELEMENTWISE_GRAIN / each ? CPU_ELEMENTWISE_GRAIN / each : 1;
    cpu_parallel_for(dev, units, 1, grain, cpu_perm_tiles, &p);
    return KILN_OK;
}

/* ---- SLICE and SLICE_GRAD ---------------------------------------------------- */

/* Both seen as [outer, R, inner] (the whole axis R, in x) and [outer, L,
 * inner] (the window of L from start): each outer index is one contiguous
 * run of L * inner elements in the slice, at start * inner in x's run of
 * R * inner. */
typedef struct cpu_window {
    const float *src;
    float       *out;
    size_t       run, whole, skip; /* L * inner, R * inner, start * inner */
} cpu_window;

static cpu_window cpu_window_of(const kiln_node *node, const kiln_node *x)
{
    int64_t    outer, r, inner;
    int        axis = node->iparam[0];
    cpu_window w    = {.src = cpu_cf32(node->src[0]), .out = cpu_f32(node)};
    kiln__axis_extent(x, axis, &outer, &r, &inner);
    w.whole = (size_t)(r * inner);
    w.run   = (size_t)(kiln__dims_product(node->op == KILN_OP_SLICE ? node : node->src[0],
                                        axis, axis + 1) *
                     inner);
    w.skip  = (size_t)node->iparam[1] * (size_t)inner;
    return w;
}

static void cpu_slice_range(void *arg, size_t lo, size_t hi)
{
    const cpu_window *w = arg;
    for (size_t o = lo; o < hi; o++)
        memcpy(w->out + o * w->run, w->src + o * w->whole + w->skip,
               w->run * sizeof(float));
}

/* Each output run: zeros, the gradient's run, zeros. */
static void cpu_slice_grad_range(void *arg, size_t lo, size_t hi)
{
    const cpu_window *w = arg;
    for (size_t o = lo; o < hi; o++) {
        float *out = w->out + o * w->whole;
        memset(out, 0, w->skip * sizeof(float));
        if (w->run) /* an empty slice's gradient may have no data */
            memcpy(out + w->skip, w->src + o * w->run, w->run * sizeof(float));
        memset(out + w->skip + w->run, 0, (w->whole - w->skip - w->run) * sizeof(float));
    }
}

kiln_status cpu_op_slice(const cpu_device *dev, const kiln_node *node)
{
    const kiln_node *x     = node->op == KILN_OP_SLICE ? node->src[0] : node;
    bool             grad  = node->op == KILN_OP_SLICE_GRAD;
    cpu_window       w     = cpu_window_of(node, x);
    int64_t          outer = kiln__dims_product(x, 0, node->iparam[0]);
    if (node->numel == 0)
        return KILN_OK;
    cpu_parallel_for(dev, (size_t)outer, 1, cpu_row_grain(grad ? w.whole : w.run),
                     grad ? cpu_slice_grad_range : cpu_slice_range, &w);
    return KILN_OK;
}

/* ---- STORE_SLICE ------------------------------------------------------------------- */

/* src: dst [outer, R, inner] (the output: the same storage), value [outer,
 * L, inner], start [1]: each outer index copies one run of L * inner. */
static void cpu_store_range(void *arg, size_t lo, size_t hi)
{
    const cpu_window *w = arg;
    for (size_t o = lo; o < hi; o++)
        memcpy(w->out + o * w->whole + w->skip, w->src + o * w->run,
               w->run * sizeof(float));
}

kiln_status cpu_op_store_slice(const cpu_device *dev, const kiln_node *node)
{
    const kiln_node *value = node->src[1];
    int              axis  = node->iparam[0];
    int64_t          outer, r, inner, n = value->dims[axis];
    int32_t          start = cpu_ci32(node->src[2])[0];
    kiln__axis_extent(node, axis, &outer, &r, &inner);
    if (start < 0 || start > r - n)
        return dev->host->error(KILN_ERR_INVALID_ARG,
                                "%s: start %d is outside [0, %lld] (a value of %lld "
                                "along axis %d into %lld)",
                                kiln__op_name(node->op), (int)start, (long long)(r - n),
                                (long long)n, axis, (long long)r);
    cpu_window w = {.src   = cpu_cf32(value),
                    .out   = cpu_f32(node),
                    .run   = (size_t)(n * inner),
                    .whole = (size_t)(r * inner),
                    .skip  = (size_t)start * (size_t)inner};
    if (w.run == 0 || outer == 0)
        return KILN_OK;
    cpu_parallel_for(dev, (size_t)outer, 1, cpu_row_grain(w.run), cpu_store_range, &w);
    return KILN_OK;
}
