/* gemm.c — the packed GEMM driver, after Goto and BLIS, and its threads.
 *
 * Loops, outermost first, for one thread's block of C:
 *   jc  over N in steps of nc   B panel [kc x nc] packed, lives in L3
 *   pc  over K in steps of kc
 *   ic  over M in steps of mc   A block [mc x kc] packed, lives in L2
 *   jr  over the B panel by nr  one B micro-panel [kc x nr], kept in L1
 *   ir  over the A block by mr  the register kernel: an mr x nr tile of C
 * The packing pads with zeros to whole tiles, so every tile runs a register
 * kernel: one unrolled for each row count of an edge panel, so that rows past
 * M cost nothing, and with one vector of columns when N's edge fits in one;
 * a tile that sticks out of C on the right is computed into a local tile and
 * its valid part copied.
 *
 * Threads split C into a grid of blocks, each thread packing what it reads:
 * no barrier between them, at the price of packing the shared operand once
 * per thread, which is small next to the arithmetic (1/N_t or 1/M_t of it).
 * Small products stay on one thread: waking another costs more than it saves.
 */
#include <stdlib.h>
#include <string.h>

#include "cpu-impl.h"

/* Below this many flops per thread a GEMM uses fewer threads. */
#define CPU_GEMM_FLOPS_PER_THREAD 1500000.0

/* Up to this many rows, a product whose N fits one vector and whose B is not
 * transposed skips packing (small_n); past it the packed kernels and threads
 * win. With A transposed small_n uses every lane, and takes any M. */
#define CPU_GEMM_SMALL_N_ROWS 512

/* A narrow product (small_n) is split over threads by rows when each gets at
 * least this many flops: it has no packing to repeat, so it pays sooner than
 * the packed path does (CPU_GEMM_FLOPS_PER_THREAD). */
#define CPU_GEMM_SMALL_N_FLOPS_PER_THREAD 60000.0

/* The largest register tile of any ISA (for the local edge tile). */
#define CPU_GEMM_MAX_TILE (16 * 64)

#define CPU_MIN(a, b) ((a) < (b) ? (a) : (b))

/* ---- implicit im2col ---------------------------------------------------------- */

/* Row k of the im2col matrix, columns [j0, j0 + n): out[j] for j < n. */
static void cpu_im2col_row(const cpu_im2col *cv, size_t k, size_t j0, size_t n,
                           float *out, size_t out_step)
{
    size_t       kw = k % cv->KW, kh = (k / cv->KW) % cv->KH, c = k / (cv->KW * cv->KH);
    const float *xc = cv->x + c * cv->H * cv->W;
    size_t       oh = j0 / cv->OW, ow = j0 % cv->OW;
    for (size_t j = 0; j < n;) {
        /* one output row oh: ow .. OW-1, or fewer if n runs out */
        size_t run = CPU_MIN(cv->OW - ow, n - j);
        size_t ih  = oh * cv->sh + kh - cv->ph; /* wraps above H when negative */
        if (ih >= cv->H) {
            for (size_t r = 0; r < run; r++)
                out[(j + r) * out_step] = 0.0f;
        } else {
            const float *xr = xc + ih * cv->W;
            for (size_t r = 0; r < run; r++) {
                size_t iw               = (ow + r) * cv->sw + kw - cv->pw;
                out[(j + r) * out_step] = iw < cv->W ? xr[iw] : 0.0f;
            }
        }
        j += run;
        ow = 0;
        oh++;
    }
}

/* As a cpu_gemm_ukernel's pack_b, from the image through the im2col map. */
static void cpu_pack_b_im2col(float *dst, const cpu_im2col *cv, size_t nr, size_t k0,
                              size_t j0, size_t kc, size_t n)
{
    for (size_t p = 0; p < n; p += nr, dst += kc * nr) {
        size_t cols = CPU_MIN(nr, n - p);
        for (size_t k = 0; k < kc; k++) {
            float *d = dst + k * nr;
            cpu_im2col_row(cv, k0 + k, j0 + p, cols, d, 1);
            for (size_t j = cols; j < nr; j++)
                d[j] = 0.0f;
        }
    }
}

/* ---- 16-bit operands ------------------------------------------------------------ */

/* Rows [r0, r0 + rows) x columns [c0, c0 + cols) of a 16-bit row-major
 * matrix (ld) widened into stage, row-major with ld cols. */
static void cpu_widen_block(const cpu_kernels *k, float *stage, const uint16_t *x,
                            size_t ld, kiln_dtype dtype, size_t r0, size_t rows, size_t c0,
                            size_t cols)
{
    if (cols == ld) { /* whole rows (a short K): one run, not one per row */
        k->widen(stage, x + r0 * ld, rows * cols, dtype);
        return;
    }
    for (size_t r = 0; r < rows; r++)
        k->widen(stage + r * cols, x + (r0 + r) * ld + c0, cols, dtype);
}

/* A packing function of the micro-kernel's (pack_a, pack_b): op(X) rows
 * [p0, p0 + pn) x columns [q0, q0 + qn) of X, stored transposed when t. */
typedef void (*cpu_pack_fn)(float *dst, const float *x, size_t ld, bool t, size_t p0,
                            size_t q0, size_t pn, size_t qn);

/* pack of that block of a 16-bit X (ld), widened into the stage first: the
 * stored rows are op's rows, or its columns when X is transposed. */
static void cpu_pack_half(cpu_pack_fn pack, const cpu_kernels *k, float *dst, float *stage,
                          const uint16_t *x, size_t ld, kiln_dtype dtype, bool t,
                          size_t p0, size_t q0, size_t pn, size_t qn)
{
    if (t) {
        cpu_widen_block(k, stage, x, ld, dtype, q0, qn, p0, pn);
        pack(dst, stage, pn, true, 0, 0, pn, qn);
    } else {
        cpu_widen_block(k, stage, x, ld, dtype, p0, pn, q0, qn);
        pack(dst, stage, qn, false, 0, 0, pn, qn);
    }
}

/* ---- one thread's block --------------------------------------------------------- */

/* c[0..m, 0..n) (ldc) = tile (ld nr), or += when accumulate. */
static void cpu_tile_store(float *c, size_t ldc, const float *tile, size_t nr, size_t m,
                           size_t n, bool accumulate)
{
    for (size_t i = 0; i < m; i++) {
        float       *ci = c + i * ldc;
        const float *ti = tile + i * nr;
        if (accumulate)
            for (size_t j = 0; j < n; j++)
                ci[j] += ti[j];
        else
            memcpy(ci, ti, n * sizeof *ci);
    }
}

/* C rows [m0, m1) x columns [n0, n1) with K = 0: zeros, plus the bias. */
static void cpu_gemm_fill(const cpu_gemm_args *g, size_t m0, size_t m1, size_t n0,
                          size_t n1)
{
    for (size_t i = m0; i < m1; i++) {
        float v = g->row_bias ? g->row_bias[i] : 0.0f;
        for (size_t j = n0; j < n1; j++)
            g->c[i * g->ldc + j] = v;
    }
}

/* The jr and ir loops over one packed A block and B panel. */
static void cpu_gemm_macro(const cpu_gemm_ukernel *uk, const cpu_pack *ws,
                           const cpu_gemm_args *g, size_t ic, size_t mcur, size_t jc,
                           size_t ncur, size_t kcur, bool accumulate, bool last)
{
    float  tile[CPU_GEMM_MAX_TILE] __attribute__((aligned(64)));
    size_t mr = uk->mr, nr = uk->nr;
    for (size_t jr = 0; jr < ncur; jr += nr) {
        const float *bp = ws->b + jr * kcur;
        size_t       nn = CPU_MIN(nr, ncur - jr);
        for (size_t ir = 0; ir < mcur; ir += mr) {
            const float *ap = ws->a + ir * kcur;
            size_t       mm = CPU_MIN(mr, mcur - ir);
            float       *c  = g->c + (ic + ir) * g->ldc + jc + jr;
            /* the bias goes in as the last k block is stored */
            const float *bias = last && g->row_bias ? g->row_bias + ic + ir : NULL;
            if (mm == mr && nn == nr) {
                uk->kernel(kcur, ap, bp, c, g->ldc, accumulate, bias);
            } else if (nn == nr) { /* rows past mm are neither computed nor written */
                uk->kernel_part(mm, nn, kcur, ap, bp, c, g->ldc, accumulate, bias);
            } else {
                uk->kernel_part(mm, nn, kcur, ap, bp, tile, nr, false, bias);
                cpu_tile_store(c, g->ldc, tile, nr, mm, nn, accumulate);
            }
        }
    }
}

static void cpu_gemm_block(const cpu_kernels *k, const cpu_pack *ws,
                           const cpu_gemm_args *g, size_t m0, size_t m1, size_t n0,
                           size_t n1)
{
    const cpu_gemm_ukernel *uk = k->gemm;
    if (m0 >= m1 || n0 >= n1)
        return;
    if (g->K == 0) {
        if (!g->accumulate)
            cpu_gemm_fill(g, m0, m1, n0, n1);
        return;
    }
    /* K in equal blocks of at most kc: no short last block */
    size_t kc = (g->K + (g->K + uk->kc - 1) / uk->kc - 1) /
                ((g->K + uk->kc - 1) / uk->kc);
    for (size_t jc = n0; jc < n1; jc += uk->nc) {
        size_t ncur = CPU_MIN(uk->nc, n1 - jc);
        for (size_t pc = 0; pc < g->K; pc += kc) {
            size_t kcur = CPU_MIN(kc, g->K - pc);
            if (g->im2col)
                cpu_pack_b_im2col(ws->b, g->im2col, uk->nr, pc, jc, kcur, ncur);
            else if (g->bh)
                cpu_pack_half(uk->pack_b, k, ws->b, ws->stage, g->bh, g->ldb, g->b_type,
                              g->tb, pc, jc, kcur, ncur);
            else
                uk->pack_b(ws->b, g->b, g->ldb, g->tb, pc, jc, kcur, ncur);
            for (size_t ic = m0; ic < m1; ic += uk->mc) {
                size_t mcur = CPU_MIN(uk->mc, m1 - ic);
                if (g->ah)
                    cpu_pack_half(uk->pack_a, k, ws->a, ws->stage, g->ah, g->lda,
                                  g->a_type, g->ta, ic, pc, mcur, kcur);
                else
                    uk->pack_a(ws->a, g->a, g->lda, g->ta, ic, pc, mcur, kcur);
                cpu_gemm_macro(uk, ws, g, ic, mcur, jc, ncur, kcur,
                               pc > 0 || g->accumulate, pc + kcur >= g->K);
            }
        }
    }
}

void cpu_gemm_serial(const cpu_device *dev, int tid, const cpu_gemm_args *g)
{
    cpu_gemm_block(&dev->k, &dev->pack[tid], g, 0, g->M, 0, g->N);
}

/* ---- threads -------------------------------------------------------------------- */

typedef struct cpu_gemm_job {
    const cpu_device    *dev;
    const cpu_gemm_args *g;
    int                  tm, tn; /* the grid of blocks: tm x tn threads */
} cpu_gemm_job;

static void cpu_gemm_task(void *arg, int tid, int nt)
{
    const cpu_gemm_job     *job = arg;
    const cpu_gemm_ukernel *uk  = job->dev->k.gemm;
    size_t                  m0, m1, n0, n1;
    (void)nt;
    cpu_split(job->g->M, uk->mr, tid / job->tn, job->tm, &m0, &m1);
    cpu_split(job->g->N, uk->nr, tid % job->tn, job->tn, &n0, &n1);
    cpu_gemm_block(&job->dev->k, &job->dev->pack[tid], job->g, m0, m1, n0, n1);
}

/* The tm x tn grid of nt threads whose largest block is smallest, counting
 * the packing of the shared operands as well as the arithmetic. */
static void cpu_gemm_grid(const cpu_gemm_ukernel *uk, const cpu_gemm_args *g, int nt,
                          int *tm, int *tn)
{
    double best    = -1.0;
    size_t tiles_m = (g->M + uk->mr - 1) / uk->mr, tiles_n = (g->N + uk->nr - 1) / uk->nr;
    for (int a = 1; a <= nt; a++) {
        if (nt % a)
            continue;
        int    b    = nt / a;
        double rows = (double)((tiles_m + (size_t)a - 1) / (size_t)a * uk->mr);
        double cols = (double)((tiles_n + (size_t)b - 1) / (size_t)b * uk->nr);
        double cost = rows * cols + 4.0 * (rows + cols); /* per unit of K */
        if (best < 0 || cost < best) {
            best = cost;
            *tm  = a;
            *tn  = b;
        }
    }
}

/* A product split by rows (small_n) or columns (gemv) between threads. */
typedef struct cpu_split_job {
    const cpu_gemm_ukernel *uk;
    const cpu_gemm_args    *g;
} cpu_split_job;

/* Rows [lo, hi) of a narrow product. */
static void cpu_gemm_small_n_range(void *arg, size_t lo, size_t hi)
{
    const cpu_split_job *j = arg;
    const cpu_gemm_args *g = j->g;
    j->uk->small_n(hi - lo, g->N, g->K, g->ta ? g->a + lo : g->a + lo * g->lda, g->lda,
                   g->ta, g->b, g->ldb, g->c + lo * g->ldc, g->ldc);
}

/* Columns [lo, hi) of a one-row product. */
static void cpu_gemv_range(void *arg, size_t lo, size_t hi)
{
    const cpu_split_job *j = arg;
    const cpu_gemm_args *g = j->g;
    j->uk->gemv(lo, hi, g->K, g->a, g->ta ? g->lda : 1, g->b, g->ldb, g->tb, g->c);
}

void cpu_gemm(const cpu_device *dev, const cpu_gemm_args *g)
{
    if (g->M == 0 || g->N == 0)
        return;
    const cpu_gemm_ukernel *uk = dev->k.gemm;
    bool half = g->ah || g->bh; /* widened in the packing: the packed path */
    if (uk->gemv && !half && g->M == 1 && g->K > 0 && !g->im2col && !g->row_bias &&
        !g->accumulate && !(g->tb && g->ta)) {
        /* one row (decoding a position): B streams once, unpacked; threads
         * take columns when there is enough of them */
        cpu_split_job job   = {uk, g};
        double        flops = 2.0 * (double)g->N * (double)g->K;
        size_t        grain = (size_t)(CPU_GEMM_FLOPS_PER_THREAD / (2.0 * (double)g->K));
        if (flops < 2.0 * CPU_GEMM_FLOPS_PER_THREAD || cpu_pool_tid(dev->pool) >= 0)
            cpu_gemv_range(&job, 0, g->N);
        else
            cpu_parallel_for(dev, g->N, 64, grain > 64 ? grain : 64, cpu_gemv_range,
                             &job);
        return;
    }
    if (uk->small_n && !half && g->N <= uk->small_n_max && g->N < uk->nr && !g->tb &&
        !g->im2col &&
        !g->row_bias && !g->accumulate && (g->ta || g->M <= CPU_GEMM_SMALL_N_ROWS)) {
        double flops = 2.0 * (double)g->M * (double)g->N * (double)g->K;
        if (flops < 2.0 * CPU_GEMM_SMALL_N_FLOPS_PER_THREAD ||
            cpu_pool_tid(dev->pool) >= 0) {
            uk->small_n(g->M, g->N, g->K, g->a, g->lda, g->ta, g->b, g->ldb, g->c,
                        g->ldc);
            return;
        }
        /* flops >= 120000 implies K >= 1 */
        size_t        grain = (size_t)(CPU_GEMM_SMALL_N_FLOPS_PER_THREAD /
                                (2.0 * (double)g->N * (double)g->K));
        cpu_split_job job   = {uk, g};
        cpu_parallel_for(dev, g->M, 8, grain > 8 ? grain : 8, cpu_gemm_small_n_range,
                         &job);
        return;
    }
    int    nt    = cpu_pool_size(dev->pool);
    double flops = 2.0 * (double)g->M * (double)g->N * (double)(g->K ? g->K : 1);
    if (flops / CPU_GEMM_FLOPS_PER_THREAD < nt)
        nt = flops < CPU_GEMM_FLOPS_PER_THREAD ? 1
                                               : (int)(flops / CPU_GEMM_FLOPS_PER_THREAD);
    int self = cpu_pool_tid(dev->pool); /* inside a job: this thread alone */
    if (nt <= 1 || self >= 0) {
        cpu_gemm_serial(dev, self >= 0 ? self : 0, g);
        return;
    }
    cpu_gemm_job job = {dev, g, 1, nt};
    cpu_gemm_grid(dev->k.gemm, g, nt, &job.tm, &job.tn);
    cpu_pool_run(dev->pool, nt, cpu_gemm_task, &job);
}

/* ---- buffers -------------------------------------------------------------------- */

static float *cpu_pack_alloc(size_t floats)
{
    void *p = NULL;
    if (posix_memalign(&p, 64, floats * sizeof(float)) != 0)
        return NULL;
    return p;
}

kiln_status cpu_gemm_buffers_alloc(cpu_device *dev)
{
    const cpu_gemm_ukernel *uk = dev->k.gemm;
    int                     n  = cpu_pool_size(dev->pool);
    dev->pack                  = calloc((size_t)n, sizeof *dev->pack);
    if (!dev->pack)
        return KILN_ERR_NO_MEMORY;
    for (int t = 0; t < n; t++) {
        dev->pack[t].a = cpu_pack_alloc(uk->mc * uk->kc);
        dev->pack[t].b = cpu_pack_alloc(uk->kc * uk->nc);
        /* the larger block; its pages are touched only by 16-bit products */
        dev->pack[t].stage = cpu_pack_alloc((uk->mc > uk->nc ? uk->mc : uk->nc) * uk->kc);
        if (!dev->pack[t].a || !dev->pack[t].b || !dev->pack[t].stage)
            return KILN_ERR_NO_MEMORY; /* the caller frees what was made */
    }
    return KILN_OK;
}

void cpu_gemm_buffers_free(cpu_device *dev)
{
    if (!dev->pack)
        return;
    for (int t = 0; t < cpu_pool_size(dev->pool); t++) {
        free(dev->pack[t].a);
        free(dev->pack[t].b);
        free(dev->pack[t].stage);
    }
    free(dev->pack);
    dev->pack = NULL;
}
