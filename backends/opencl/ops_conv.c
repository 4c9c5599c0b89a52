/* ops_conv.c — CONV2D and its gradients, GEMMs through CLBlast, and
 * MAX_POOL2D with its gradient.
 *
 * Convolution is im2col + CLBlast, in chunks of images whose columns sit
 * side by side (conv.cl explains the layout), so a batch is one GEMM per
 * chunk, not one per image:
 *   forward      tmp = w @ col, then tmp -> out (+ bias)
 *   grad input   gyc <- gy, col = w^T @ gyc, then col2im -> gx
 *   grad weight  gyc <- gy, col <- x, gw (+)= gyc @ col^T
 * A chunk is as many images as fit OCL_CONV_SCRATCH bytes of scratch (at
 * least one).
 */
#include <limits.h>

#include "ocl-impl.h"

#define OCL_CONV_SCRATCH ((size_t)64 << 20)

/* ---- convolution ------------------------------------------------------------- */

typedef struct conv {
    size_t  N, C, H, W, O, KH, KW, OH, OW;
    size_t  S, CKK; /* OH*OW, C*KH*KW */
    /* above every index, size and padded extent the kernels compute (the
     * launches' extent for ocl_begin_indexed) */
    uint64_t extent;
    cl_int8 da;     /* C, H, W, KH, KW, OH, OW, pad_h */
    cl_int4 db;     /* stride_h, stride_w, pad_w, O    */
} conv;

/* ops.c made sure every size fits an int. */
static conv conv_of(const kiln_node *x, const kiln_node *w, const kiln_node *y,
                    const int32_t *p)
{
    conv c = {
        .N  = (size_t)x->dims[0],
        .C  = (size_t)x->dims[1],
        .H  = (size_t)x->dims[2],
        .W  = (size_t)x->dims[3],
        .O  = (size_t)w->dims[0],
        .KH = (size_t)w->dims[2],
        .KW = (size_t)w->dims[3],
        .OH = (size_t)y->dims[2],
        .OW = (size_t)y->dims[3],
    };
    c.S          = c.OH * c.OW;
    c.CKK        = c.C * c.KH * c.KW;
    cl_int da[8] = {(cl_int)c.C,  (cl_int)c.H,  (cl_int)c.W,  (cl_int)c.KH,
                    (cl_int)c.KW, (cl_int)c.OH, (cl_int)c.OW, p[2]};
    cl_int db[4] = {p[0], p[1], p[3], (cl_int)c.O};
    c.extent     = (uint64_t)c.N * c.C * c.H * c.W + (uint64_t)c.N * c.S * (c.CKK + c.O) +
               (uint64_t)c.H + c.W + 2 * ((uint64_t)p[2] + (uint64_t)p[3]) + (uint64_t)p[0] +
               (uint64_t)p[1];
    for (int k = 0; k < 8; k++)
        c.da.s[k] = da[k];
    for (int k = 0; k < 4; k++)
        c.db.s[k] = db[k];
    return c;
}

/* Images per chunk when each needs `per_image` floats of scratch, and the
 * scratch itself. */
static kiln_status conv_scratch(ocl_device *dev, const conv *c, size_t per_image,
                                size_t *chunk, cl_mem *mem)
{
    size_t fit = per_image ? OCL_CONV_SCRATCH / (per_image * sizeof(cl_float)) : c->N;
    *chunk     = fit < 1 ? 1 : fit > c->N ? c->N : fit;
    if (*chunk > 0 && per_image > SIZE_MAX / sizeof(cl_float) / *chunk)
        return dev->host->error(KILN_ERR_NO_MEMORY,
                                "opencl: conv2d scratch of %zu x "
                                "%zu floats does not fit a size_t",
                                *chunk, per_image);
    return ocl_scratch(dev, *chunk * per_image * sizeof(cl_float), mem);
}

static kiln_status im2col(ocl_device *dev, const conv *c, cl_mem col, size_t co,
                          const kiln_node *x, size_t n0, size_t nc)
{
    if (c->CKK * nc * c->S == 0)
        return KILN_OK;
    ocl_launch l = ocl_begin_indexed(dev, OCL_K_IM2COL, c->extent);
    ocl_arg_mem(&l, col);
    ocl_arg_u64(&l, co);
    ocl_arg_node(&l, x);
    ocl_arg(&l, sizeof c->da, &c->da);
    ocl_arg(&l, sizeof c->db, &c->db);
    ocl_arg_idx(&l, n0);
    ocl_arg_idx(&l, nc);
    return ocl_run(&l, c->CKK * nc * c->S);
}

/* gyc [O, nc*S] from images n0.. of gy [N, O, S]. */
static kiln_status conv_cols(ocl_device *dev, const conv *c, cl_mem gyc, size_t go,
                             const kiln_node *gy, size_t n0, size_t nc)
{
    if (nc * c->O * c->S == 0)
        return KILN_OK;
    ocl_launch l = ocl_begin_indexed(dev, OCL_K_CONV_COLS, c->extent);
    ocl_arg_mem(&l, gyc);
    ocl_arg_u64(&l, go);
    ocl_arg_node(&l, gy);
    ocl_arg_idx(&l, c->O);
    ocl_arg_idx(&l, c->S);
    ocl_arg_idx(&l, n0);
    ocl_arg_idx(&l, nc);
    return ocl_run(&l, nc * c->O * c->S);
}

/* Images n0.. of out [N, O, S] from tmp [O, nc*S], plus bias (or none). */
static kiln_status conv_out(ocl_device *dev, const conv *c, const kiln_node *out,
                            cl_mem tmp, size_t to, const kiln_node *bias, size_t n0,
                            size_t nc)
{
    ocl_launch l = ocl_begin_indexed(dev, OCL_K_CONV_OUT, c->extent);
    ocl_arg_node(&l, out);
    ocl_arg_mem(&l, tmp);
    ocl_arg_u64(&l, to);
    ocl_arg_node(&l, bias ? bias : out); /* any buffer when no bias */
    ocl_arg_i32(&l, bias != NULL);
    ocl_arg_idx(&l, c->O);
    ocl_arg_idx(&l, c->S);
    ocl_arg_idx(&l, n0);
    ocl_arg_idx(&l, nc);
    return ocl_run(&l, nc * c->O * c->S);
}

/* Images n0.. of gx [N, C, H, W], summed from col [CKK, nc*S]. */
static kiln_status col2im(ocl_device *dev, const conv *c, const kiln_node *gx, cl_mem col,
                          size_t co, size_t n0, size_t nc)
{
    ocl_launch l = ocl_begin_indexed(dev, OCL_K_COL2IM, c->extent);
    ocl_arg_node(&l, gx);
    ocl_arg_mem(&l, col);
    ocl_arg_u64(&l, co);
    ocl_arg(&l, sizeof c->da, &c->da);
    ocl_arg(&l, sizeof c->db, &c->db);
    ocl_arg_idx(&l, n0);
    ocl_arg_idx(&l, nc);
    return ocl_run(&l, nc * c->C * c->H * c->W);
}

/* The images of the chunk starting at n0. */
static size_t chunk_at(const conv *c, size_t n0, size_t chunk)
{
    return c->N - n0 < chunk ? c->N - n0 : chunk;
}

/* A GEMM whose a is a node and b and c parts of the scratch s. */
static ocl_gemm node_by_scratch(ocl_device *dev, const kiln_node *a, bool ta, size_t m,
                                size_t n, size_t k, cl_mem s, size_t co)
{
    ocl_gemm g = {
        .ta    = ta,
        .m     = m,
        .n     = n,
        .k     = k,
        .alpha = 1.0f,
        .beta  = 0.0f,
        .a     = ocl_mem(dev, a),
        .ao    = ocl_elem_offset(a),
        .lda   = ta ? m : k,
        .b     = s,
        .bo    = 0,
        .ldb   = n,
        .c     = s,
        .co    = co,
        .ldc   = n,
    };
    return g;
}

kiln_status ocl_op_conv2d(ocl_device *dev, const kiln_node *node, size_t i)
{
    (void)i;
    const kiln_node *x = node->src[0], *w = node->src[1], *bias = node->src[2];
    conv             c = conv_of(x, w, node, node->iparam);
    size_t           chunk;
    cl_mem           s;
    if (node->numel == 0)
        return KILN_OK;
    /* scratch: col [CKK, chunk*S], then tmp [O, chunk*S] */
    kiln_status st  = conv_scratch(dev, &c, (c.CKK + c.O) * c.S, &chunk, &s);
    size_t      tmp = chunk * c.CKK * c.S;
    for (size_t n0 = 0; st == KILN_OK && n0 < c.N; n0 += chunk) {
        size_t   nc = chunk_at(&c, n0, chunk);
        ocl_gemm g  = node_by_scratch(dev, w, false, c.O, nc * c.S, c.CKK, s, tmp);
        st          = im2col(dev, &c, s, 0, x, n0, nc);
        if (st == KILN_OK)
            st = ocl_sgemm(dev, &g);
        if (st == KILN_OK)
            st = conv_out(dev, &c, node, s, tmp, bias, n0, nc);
    }
    return st;
}

/* src: gy [N,O,OH,OW], w [O,C,KH,KW]; out: gx [N,C,H,W]. */
kiln_status ocl_op_conv2d_grad_input(ocl_device *dev, const kiln_node *node, size_t i)
{
    (void)i;
    const kiln_node *gy = node->src[0], *w = node->src[1];
    conv             c = conv_of(node, w, gy, node->iparam);
    size_t           chunk;
    cl_mem           s;
    if (node->numel == 0)
        return KILN_OK;
    /* scratch: gyc [O, chunk*S], then col [CKK, chunk*S] */
    kiln_status st  = conv_scratch(dev, &c, (c.O + c.CKK) * c.S, &chunk, &s);
    size_t      col = chunk * c.O * c.S;
    for (size_t n0 = 0; st == KILN_OK && n0 < c.N; n0 += chunk) {
        size_t   nc = chunk_at(&c, n0, chunk);
        ocl_gemm g  = node_by_scratch(dev, w, true, c.CKK, nc * c.S, c.O, s, col);
        st          = conv_cols(dev, &c, s, 0, gy, n0, nc);
        if (st == KILN_OK)
            st = ocl_sgemm(dev, &g);
        if (st == KILN_OK)
            st = col2im(dev, &c, node, s, col, n0, nc);
    }
    return st;
}

/* src: gy [N,O,OH,OW], x [N,C,H,W]; out: gw [O,C,KH,KW], the sum over the
 * chunks (beta 1 after the first). */
kiln_status ocl_op_conv2d_grad_weight(ocl_device *dev, const kiln_node *node, size_t i)
{
    (void)i;
    const kiln_node *gy = node->src[0], *x = node->src[1];
    conv             c = conv_of(x, node, gy, node->iparam);
    size_t           chunk;
    cl_mem           s;
    if (node->numel == 0)
        return KILN_OK;
    ocl_gemm g = {
        .tb    = true,
        .m     = c.O,
        .n     = c.CKK,
        .alpha = 1.0f,
        .beta  = 0.0f,
        .c     = ocl_mem(dev, node),
        .co    = ocl_elem_offset(node),
        .ldc   = c.CKK,
    };
    if (c.N * c.S == 0) /* no products at all: K = 0 writes zeros */
        return ocl_sgemm(dev, &g);
    /* scratch: gyc [O, chunk*S], then col [CKK, chunk*S] */
    kiln_status st  = conv_scratch(dev, &c, (c.O + c.CKK) * c.S, &chunk, &s);
    size_t      col = chunk * c.O * c.S;
    for (size_t n0 = 0; st == KILN_OK && n0 < c.N; n0 += chunk) {
        size_t nc = chunk_at(&c, n0, chunk);
        g.k       = nc * c.S;
        g.a = s, g.ao = 0, g.lda = g.k;
        g.b = s, g.bo = col, g.ldb = g.k;
        g.beta = n0 == 0 ? 0.0f : 1.0f;
        st     = conv_cols(dev, &c, s, 0, gy, n0, nc);
        if (st == KILN_OK)
            st = im2col(dev, &c, s, col, x, n0, nc);
        if (st == KILN_OK)
            st = ocl_sgemm(dev, &g);
    }
    return st;
}

/* ---- pooling -------------------------------------------------------------------- */

static void arg_pool(ocl_launch *l, const kiln_node *x, const kiln_node *y,
                     const int32_t *p)
{
    cl_int4 pool  = {{p[0], p[1], p[2], p[3]}};
    cl_int4 plane = {
        {(cl_int)x->dims[2], (cl_int)x->dims[3], (cl_int)y->dims[2], (cl_int)y->dims[3]}};
    ocl_arg(l, sizeof pool, &pool);
    ocl_arg(l, sizeof plane, &plane);
}

/* Above every index and window edge the pool kernels compute. */
static uint64_t pool_extent(const kiln_node *x, const kiln_node *y, const int32_t *p)
{
    return (uint64_t)x->numel + (uint64_t)y->numel + (uint64_t)p[0] + (uint64_t)p[1] +
           (uint64_t)p[2] + (uint64_t)p[3];
}

kiln_status ocl_op_max_pool2d(ocl_device *dev, const kiln_node *node, size_t i)
{
    (void)i;
    if (node->numel == 0)
        return KILN_OK;
    ocl_launch l =
        ocl_begin_indexed(dev, OCL_K_MAX_POOL, pool_extent(node->src[0], node, node->iparam));
    ocl_arg_node(&l, node);
    ocl_arg_node(&l, node->src[0]);
    arg_pool(&l, node->src[0], node, node->iparam);
    ocl_arg_idx(&l, (uint64_t)node->numel);
    return ocl_run(&l, (uint64_t)node->numel);
}

/* src: gy [N,C,OH,OW], x [N,C,H,W]; out has x's shape. */
kiln_status ocl_op_max_pool2d_grad(ocl_device *dev, const kiln_node *node, size_t i)
{
    (void)i;
    const kiln_node *gy = node->src[0], *x = node->src[1];
    if (node->numel == 0)
        return KILN_OK;
    ocl_launch l =
        ocl_begin_indexed(dev, OCL_K_MAX_POOL_GRAD, pool_extent(x, gy, node->iparam));
    ocl_arg_node(&l, node);
    ocl_arg_node(&l, gy);
    ocl_arg_node(&l, x);
    arg_pool(&l, x, gy, node->iparam);
    ocl_arg_idx(&l, (uint64_t)node->numel);
    return ocl_run(&l, (uint64_t)node->numel);
}
