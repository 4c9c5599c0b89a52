/* gemm-template.h — the register micro-kernel and the packing of the packed
 * GEMM, written once and compiled for each ISA.
 *
 * The file that includes this defines, for its ISA:
 *   CPU_V            the vector type, CPU_VL floats
 *   CPU_VZERO()      a vector of zeros
 *   CPU_VLOADU(p)    CPU_VSTOREU(p, v)   unaligned load and store
 *   CPU_VBCAST(x)    x in every lane
 *   CPU_VFMA(a,b,c)  a * b + c
 *   CPU_VADD(a,b)
 *   CPU_MR, CPU_NRV  the register tile: CPU_MR rows of CPU_NRV vectors
 *   CPU_MC, CPU_KC, CPU_NC   the cache blocks
 *   CPU_GEMM_NAME    the name of the cpu_gemm_ukernel it defines
 * and gets cpu_gemm_ukernel CPU_GEMM_NAME. The tile is CPU_MR x CPU_NRV
 * accumulators held in registers for the whole k loop; each step loads one
 * row of the B panel (CPU_NRV vectors) and broadcasts CPU_MR values of A.
 */
#define CPU_NR (CPU_NRV * CPU_VL)

#define CPU_GT_CAT2(a, b) a##b
#define CPU_GT_CAT(a, b)  CPU_GT_CAT2(a, b)
#define CPU_GT(name)      CPU_GT_CAT(CPU_GEMM_NAME, _##name)

/* The first `rows` rows and `nrv` vectors of columns of the tile; both are
 * constants wherever this is inlined, so each edge shape gets its own fully
 * unrolled kernel. The B panel is CPU_NR wide whatever nrv is. */
static inline __attribute__((always_inline)) void
CPU_GT(kernel_rows)(const int rows, const int nrv, size_t kc, const float *restrict a,
                    const float *restrict b, float *restrict c, size_t ldc,
                    bool accumulate, const float *restrict bias)
{
    CPU_V acc[CPU_MR][CPU_NRV];
#pragma GCC unroll 16
    for (int i = 0; i < rows; i++)
#pragma GCC unroll 4
        for (int j = 0; j < nrv; j++)
            acc[i][j] = CPU_VZERO();

    for (size_t k = 0; k < kc; k++) {
        /* C's rows are often 4 KB apart (a power-of-two N), all in one L1
         * set: fetch them while the last steps compute, not after */
        if (k + 8 == kc || (kc < 8 && k == 0)) {
#pragma GCC unroll 16
            for (int i = 0; i < rows; i++) {
                __builtin_prefetch(c + (size_t)i * ldc, 1, 3);
                __builtin_prefetch(c + (size_t)i * ldc + nrv * CPU_VL - 1, 1, 3);
            }
        }
        CPU_V bv[CPU_NRV];
#pragma GCC unroll 4
        for (int j = 0; j < nrv; j++)
            bv[j] = CPU_VLOADU(b + j * CPU_VL);
#pragma GCC unroll 16
        for (int i = 0; i < rows; i++) {
            CPU_V av = CPU_VBCAST(a[i]);
#pragma GCC unroll 4
            for (int j = 0; j < nrv; j++)
                acc[i][j] = CPU_VFMA(av, bv[j], acc[i][j]);
        }
        a += CPU_MR;
        b += CPU_NR;
    }

#pragma GCC unroll 16
    for (int i = 0; i < rows; i++) {
        float *ci = c + (size_t)i * ldc;
#pragma GCC unroll 4
        for (int j = 0; j < nrv; j++) {
            CPU_V v = acc[i][j];
            if (accumulate)
                v = CPU_VADD(v, CPU_VLOADU(ci + j * CPU_VL));
            if (bias)
                v = CPU_VADD(v, CPU_VBCAST(bias[i]));
            CPU_VSTOREU(ci + j * CPU_VL, v);
        }
    }
}

static void CPU_GT(kernel)(size_t kc, const float *restrict a, const float *restrict b,
                           float *restrict c, size_t ldc, bool accumulate,
                           const float *restrict bias)
{
    CPU_GT(kernel_rows)(CPU_MR, CPU_NRV, kc, a, b, c, ldc, accumulate, bias);
}

/* An edge tile: `rows` <= CPU_MR rows (the A panel is still CPU_MR wide,
 * zero-padded), and `cols` columns, of which whole vectors are computed and
 * written: one vector when cols fits in it (N under a vector, as a layer of
 * 10 classes), else all CPU_NRV. */
static void CPU_GT(kernel_part)(size_t rows, size_t cols, size_t kc,
                                const float *restrict a, const float *restrict b,
                                float *restrict c, size_t ldc, bool accumulate,
                                const float *restrict bias)
{
#if CPU_MR > 14
#error "kernel_part has cases for CPU_MR up to 14"
#endif
    bool narrow = cols <= CPU_VL;
#define CPU_GT_CASE(n)                                                           \
    case n:                                                                      \
        if (narrow)                                                              \
            CPU_GT(kernel_rows)(n, 1, kc, a, b, c, ldc, accumulate, bias);       \
        else                                                                     \
            CPU_GT(kernel_rows)(n, CPU_NRV, kc, a, b, c, ldc, accumulate, bias); \
        return;
    switch (rows) {
        CPU_GT_CASE(1)
        CPU_GT_CASE(2)
        CPU_GT_CASE(3)
#if CPU_MR > 4
        CPU_GT_CASE(4)
        CPU_GT_CASE(5)
#endif
#if CPU_MR > 6
        CPU_GT_CASE(6)
        CPU_GT_CASE(7) CPU_GT_CASE(8) CPU_GT_CASE(9) CPU_GT_CASE(10) CPU_GT_CASE(11)
            CPU_GT_CASE(12) CPU_GT_CASE(13)
#endif
                default : CPU_GT_CASE(CPU_MR)
    }
#undef CPU_GT_CASE
}

#if defined(CPU_SIMD_AVX512) || defined(CPU_SIMD_AVX2)
/* dst[k * ld + j] = src[j * lds + k] for j, k < 8: eight rows of eight read,
 * transposed in registers (unpack, shuffle, swap halves), eight rows written.
 * AVX alone, so it serves both ISAs. */
static inline __attribute__((always_inline)) void
CPU_GT(transpose8)(float *restrict dst, size_t ld, const float *restrict src, size_t lds)
{
    __m256 r0 = _mm256_loadu_ps(src), r1 = _mm256_loadu_ps(src + lds);
    __m256 r2 = _mm256_loadu_ps(src + 2 * lds), r3 = _mm256_loadu_ps(src + 3 * lds);
    __m256 r4 = _mm256_loadu_ps(src + 4 * lds), r5 = _mm256_loadu_ps(src + 5 * lds);
    __m256 r6 = _mm256_loadu_ps(src + 6 * lds), r7 = _mm256_loadu_ps(src + 7 * lds);
    __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
    __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
    __m256 t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5);
    __m256 t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
    __m256 s0 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0));
    __m256 s1 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2));
    __m256 s2 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0));
    __m256 s3 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2));
    __m256 s4 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(1, 0, 1, 0));
    __m256 s5 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(3, 2, 3, 2));
    __m256 s6 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(1, 0, 1, 0));
    __m256 s7 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(3, 2, 3, 2));
    _mm256_storeu_ps(dst, _mm256_permute2f128_ps(s0, s4, 0x20));
    _mm256_storeu_ps(dst + ld, _mm256_permute2f128_ps(s1, s5, 0x20));
    _mm256_storeu_ps(dst + 2 * ld, _mm256_permute2f128_ps(s2, s6, 0x20));
    _mm256_storeu_ps(dst + 3 * ld, _mm256_permute2f128_ps(s3, s7, 0x20));
    _mm256_storeu_ps(dst + 4 * ld, _mm256_permute2f128_ps(s0, s4, 0x31));
    _mm256_storeu_ps(dst + 5 * ld, _mm256_permute2f128_ps(s1, s5, 0x31));
    _mm256_storeu_ps(dst + 6 * ld, _mm256_permute2f128_ps(s2, s6, 0x31));
    _mm256_storeu_ps(dst + 7 * ld, _mm256_permute2f128_ps(s3, s7, 0x31));
}
#define CPU_GT_TRANSPOSE8 1
#endif

/* Panels of CPU_MR rows of op(a): dst[p][k][i] = op(a)(i0 + p*MR + i, k0 + k),
 * zero for rows past m. */
static void CPU_GT(pack_a)(float *restrict dst, const float *restrict a, size_t lda,
                           bool ta, size_t i0, size_t k0, size_t m, size_t kc)
{
    for (size_t p = 0; p < m; p += CPU_MR, dst += kc * CPU_MR) {
        size_t rows = m - p < CPU_MR ? m - p : CPU_MR;
        if (ta) { /* stored [K,M]: each k is a contiguous run of rows */
            const float *src = a + k0 * lda + i0 + p;
            for (size_t k = 0; k < kc; k++, src += lda) {
                float *d = dst + k * CPU_MR;
                if (rows == CPU_MR) {
#pragma GCC unroll 16
                    for (int i = 0; i < CPU_MR; i++)
                        d[i] = src[i];
                } else {
                    for (size_t i = 0; i < CPU_MR; i++)
                        d[i] = i < rows ? src[i] : 0.0f;
                }
            }
        } else if (rows == CPU_MR) { /* stored [M,K]: gather MR rows */
            const float *src = a + (i0 + p) * lda + k0;
            for (size_t k = 0; k < kc; k++) {
                float *d = dst + k * CPU_MR;
#pragma GCC unroll 16
                for (int i = 0; i < CPU_MR; i++)
                    d[i] = src[(size_t)i * lda + k];
            }
        } else {
            const float *src = a + (i0 + p) * lda + k0;
            for (size_t k = 0; k < kc; k++) {
                float *d = dst + k * CPU_MR;
                for (size_t i = 0; i < CPU_MR; i++)
                    d[i] = i < rows ? src[i * lda + k] : 0.0f;
            }
        }
    }
}

/* Panels of CPU_NR columns of op(b): dst[p][k][j] = op(b)(k0 + k, j0 + p*NR + j),
 * zero for columns past n. */
static void CPU_GT(pack_b)(float *restrict dst, const float *restrict b, size_t ldb,
                           bool tb, size_t k0, size_t j0, size_t kc, size_t n)
{
    for (size_t p = 0; p < n; p += CPU_NR, dst += kc * CPU_NR) {
        size_t cols = n - p < CPU_NR ? n - p : CPU_NR;
        if (!tb && cols == CPU_NR) { /* stored [K,N]: copy rows of NR */
            const float *src = b + k0 * ldb + j0 + p;
            for (size_t k = 0; k < kc; k++, src += ldb)
#pragma GCC unroll 4
                for (int j = 0; j < CPU_NRV; j++)
                    CPU_VSTOREU(dst + k * CPU_NR + j * CPU_VL,
                                CPU_VLOADU(src + j * CPU_VL));
        } else if (!tb) {
            const float *src = b + k0 * ldb + j0 + p;
            for (size_t k = 0; k < kc; k++, src += ldb)
                for (size_t j = 0; j < CPU_NR; j++)
                    dst[k * CPU_NR + j] = j < cols ? src[j] : 0.0f;
        } else { /* stored [N,K]: column j of op(b) is row j of b */
            const float *src = b + (j0 + p) * ldb + k0;
            size_t       kb  = 0;
#if defined(CPU_GT_TRANSPOSE8)
            /* whole panels: blocks of 8 columns x 8 k transposed in registers */
            if (cols == CPU_NR)
                for (; kb + 8 <= kc; kb += 8)
                    for (size_t j = 0; j < CPU_NR; j += 8)
                        CPU_GT(transpose8)
            (dst + kb * CPU_NR + j, CPU_NR, src + j * ldb + kb, ldb);
#endif
            /* the rest in blocks of 16 k, so that the rows of dst written stay in L1 */
            for (; kb < kc; kb += 16) {
                size_t ke = kc - kb < 16 ? kc : kb + 16;
                for (size_t j = 0; j < cols; j++) {
                    const float *sj = src + j * ldb;
                    for (size_t k = kb; k < ke; k++)
                        dst[k * CPU_NR + j] = sj[k];
                }
                for (size_t j = cols; j < CPU_NR; j++)
                    for (size_t k = kb; k < ke; k++)
                        dst[k * CPU_NR + j] = 0.0f;
            }
        }
    }
}

#if defined(CPU_SIMD_AVX512) || defined(CPU_SIMD_AVX2)
/* Rows of C in blocks of 8: eight independent FMA chains cover the latency;
 * each k broadcasts one value of each A row against one (partial) vector of
 * the B row, read straight from B. A may be stored transposed (ta: [K,M]),
 * as in a weight's gradient x^T @ g: then the eight values of a k are
 * neighbours. Inlined once for each, so the indexing is fixed. */
static inline __attribute__((always_inline)) void
CPU_GT(small_n_rows)(size_t M, size_t N, size_t K, const float *restrict a, size_t lda,
                     const bool ta, const float *restrict b, size_t ldb,
                     float *restrict c, size_t ldc)
{
#define CPU_GT_A(i, k) (ta ? a[(k)*lda + (i)] : a[(i)*lda + (k)])
    size_t i = 0;
    for (; i + 8 <= M; i += 8) {
        CPU_V acc[8];
#pragma GCC unroll 8
        for (int r = 0; r < 8; r++)
            acc[r] = CPU_VZERO();
        for (size_t k = 0; k < K; k++) {
            CPU_V bv = cpu_vload_part(b + k * ldb, N);
#pragma GCC unroll 8
            for (int r = 0; r < 8; r++)
                acc[r] = CPU_VFMA(CPU_VBCAST(CPU_GT_A(i + r, k)), bv, acc[r]);
        }
#pragma GCC unroll 8
        for (int r = 0; r < 8; r++)
            cpu_vstore_part(c + (i + r) * ldc, acc[r], N);
    }
    for (; i < M; i++) {
        CPU_V acc = CPU_VZERO();
        for (size_t k = 0; k < K; k++)
            acc = CPU_VFMA(CPU_VBCAST(CPU_GT_A(i, k)), cpu_vload_part(b + k * ldb, N),
                           acc);
        cpu_vstore_part(c + i * ldc, acc, N);
    }
#undef CPU_GT_A
}

/* The same for N of one to two vectors (CPU_VL < N < 2 CPU_VL): rows in
 * blocks of 4, two accumulators each (the second a partial vector), so
 * that a classifier's 10 columns on AVX2 are not padded to a 16-wide tile. */
static inline __attribute__((always_inline)) void
CPU_GT(small_n_rows2)(size_t M, size_t N, size_t K, const float *restrict a, size_t lda,
                      const bool ta, const float *restrict b, size_t ldb,
                      float *restrict c, size_t ldc)
{
#define CPU_GT_A(i, k) (ta ? a[(k)*lda + (i)] : a[(i)*lda + (k)])
    size_t n1 = N - CPU_VL, i = 0;
    for (; i + 4 <= M; i += 4) {
        CPU_V lo[4], hi[4];
#pragma GCC unroll 4
        for (int r = 0; r < 4; r++)
            lo[r] = hi[r] = CPU_VZERO();
        for (size_t k = 0; k < K; k++) {
            CPU_V b0 = CPU_VLOADU(b + k * ldb),
                  b1 = cpu_vload_part(b + k * ldb + CPU_VL, n1);
#pragma GCC unroll 4
            for (int r = 0; r < 4; r++) {
                CPU_V av = CPU_VBCAST(CPU_GT_A(i + r, k));
                lo[r]    = CPU_VFMA(av, b0, lo[r]);
                hi[r]    = CPU_VFMA(av, b1, hi[r]);
            }
        }
#pragma GCC unroll 4
        for (int r = 0; r < 4; r++) {
            CPU_VSTOREU(c + (i + r) * ldc, lo[r]);
            cpu_vstore_part(c + (i + r) * ldc + CPU_VL, hi[r], n1);
        }
    }
    for (; i < M; i++) {
        CPU_V lo = CPU_VZERO(), hi = CPU_VZERO();
        for (size_t k = 0; k < K; k++) {
            CPU_V av = CPU_VBCAST(CPU_GT_A(i, k));
            lo       = CPU_VFMA(av, CPU_VLOADU(b + k * ldb), lo);
            hi       = CPU_VFMA(av, cpu_vload_part(b + k * ldb + CPU_VL, n1), hi);
        }
        CPU_VSTOREU(c + i * ldc, lo);
        cpu_vstore_part(c + i * ldc + CPU_VL, hi, n1);
    }
#undef CPU_GT_A
}

/* With A stored [K,M] the CPU_VL rows of a k are one vector: n accumulators,
 * one per column of C, each FMA a whole vector of rows against one element
 * of B broadcast, every lane used; the block is stored through a transposed
 * tile. n is a constant wherever this is inlined. */
static inline __attribute__((always_inline)) void
CPU_GT(small_n_ta_cols)(const int n, size_t M, size_t K, const float *restrict a,
                        size_t lda, const float *restrict b, size_t ldb,
                        float *restrict c, size_t ldc)
{
    float tile[CPU_VL][CPU_VL];
    for (size_t i = 0; i < M; i += CPU_VL) {
        size_t rows = M - i < CPU_VL ? M - i : CPU_VL;
        CPU_V  acc[CPU_VL];
#pragma GCC unroll 16
        for (int j = 0; j < n; j++)
            acc[j] = CPU_VZERO();
        for (size_t k = 0; k < K; k++) {
            const float *ak = a + k * lda + i, *bk = b + k * ldb;
            /* the next block's rows of this k: lda apart, too far for the
             * hardware to see the pattern when A is large */
            __builtin_prefetch(ak + CPU_VL, 0, 3);
            CPU_V av = rows == CPU_VL ? CPU_VLOADU(ak) : cpu_vload_part(ak, rows);
#pragma GCC unroll 16
            for (int j = 0; j < n; j++)
                acc[j] = CPU_VFMA(av, CPU_VBCAST(bk[j]), acc[j]);
        }
#pragma GCC unroll 16
        for (int j = 0; j < n; j++)
            CPU_VSTOREU(tile[j], acc[j]);
        for (size_t r = 0; r < rows; r++)
#pragma GCC unroll 16
            for (int j = 0; j < n; j++)
                c[(i + r) * ldc + j] = tile[j][r];
    }
}

static void CPU_GT(small_n)(size_t M, size_t N, size_t K, const float *restrict a,
                            size_t lda, bool ta, const float *restrict b, size_t ldb,
                            float *restrict c, size_t ldc)
{
    if (N > CPU_VL) { /* two vectors */
        if (ta)
            CPU_GT(small_n_rows2)(M, N, K, a, lda, true, b, ldb, c, ldc);
        else
            CPU_GT(small_n_rows2)(M, N, K, a, lda, false, b, ldb, c, ldc);
        return;
    }
    if (!ta) {
        CPU_GT(small_n_rows)(M, N, K, a, lda, false, b, ldb, c, ldc);
        return;
    }
#define CPU_GT_TA_CASE(n) \
    case n: CPU_GT(small_n_ta_cols)(n, M, K, a, lda, b, ldb, c, ldc); return;
    switch (N) {
        CPU_GT_TA_CASE(1)
        CPU_GT_TA_CASE(2)
        CPU_GT_TA_CASE(3)
        CPU_GT_TA_CASE(4)
        CPU_GT_TA_CASE(5) CPU_GT_TA_CASE(6) CPU_GT_TA_CASE(7) CPU_GT_TA_CASE(8)
#if CPU_VL > 8
            CPU_GT_TA_CASE(9) CPU_GT_TA_CASE(10) CPU_GT_TA_CASE(11) CPU_GT_TA_CASE(12)
                CPU_GT_TA_CASE(13) CPU_GT_TA_CASE(14) CPU_GT_TA_CASE(15)
                    CPU_GT_TA_CASE(16)
#endif
                        default
            : /* N is at most one vector: not reached */
              CPU_GT(small_n_rows)(M, N, K, a, lda, true, b, ldb, c, ldc);
    }
#undef CPU_GT_TA_CASE
}
#define CPU_GT_SMALL_N     CPU_GT(small_n)
#define CPU_GT_SMALL_N_MAX (2 * CPU_VL - 1)

/* One row of C, columns [n0, n1): c = a @ op(b) without packing (packing B
 * would copy the whole matrix for one use: a transformer decoding one
 * position). Without tb, four vectors of columns at a time against a
 * broadcast element of a per k; with tb (b stored [N,K]) a dot product of
 * a with each row of b, four rows at a time. a's elements are inca apart
 * (a stored [K,1] when the caller's A is transposed); with tb inca is 1. */
static void CPU_GT(gemv)(size_t n0, size_t n1, size_t K, const float *restrict a,
                         size_t inca, const float *restrict b, size_t ldb, bool tb,
                         float *restrict c)
{
    size_t n = n0;
    if (!tb) {
        for (; n + 4 * CPU_VL <= n1; n += 4 * CPU_VL) {
            CPU_V acc0 = CPU_VZERO(), acc1 = acc0, acc2 = acc0, acc3 = acc0;
            for (size_t k = 0; k < K; k++) {
                CPU_V        av = CPU_VBCAST(a[k * inca]);
                const float *bk = b + k * ldb + n;
                acc0            = CPU_VFMA(av, CPU_VLOADU(bk), acc0);
                acc1            = CPU_VFMA(av, CPU_VLOADU(bk + CPU_VL), acc1);
                acc2            = CPU_VFMA(av, CPU_VLOADU(bk + 2 * CPU_VL), acc2);
                acc3            = CPU_VFMA(av, CPU_VLOADU(bk + 3 * CPU_VL), acc3);
            }
            CPU_VSTOREU(c + n, acc0);
            CPU_VSTOREU(c + n + CPU_VL, acc1);
            CPU_VSTOREU(c + n + 2 * CPU_VL, acc2);
            CPU_VSTOREU(c + n + 3 * CPU_VL, acc3);
        }
        for (; n < n1; n += CPU_VL) {
            size_t w   = n1 - n < CPU_VL ? n1 - n : CPU_VL;
            CPU_V  acc = CPU_VZERO();
            for (size_t k = 0; k < K; k++)
                acc = CPU_VFMA(CPU_VBCAST(a[k * inca]),
                               cpu_vload_part(b + k * ldb + n, w), acc);
            cpu_vstore_part(c + n, acc, w);
        }
        return;
    }
    for (; n < n1; n += 4) {
        size_t rows   = n1 - n < 4 ? n1 - n : 4;
        CPU_V  acc[4] = {CPU_VZERO(), CPU_VZERO(), CPU_VZERO(), CPU_VZERO()};
        for (size_t k = 0; k < K; k += CPU_VL) {
            size_t w  = K - k < CPU_VL ? K - k : CPU_VL;
            CPU_V  av = cpu_vload_part(a + k, w);
            for (size_t r = 0; r < rows; r++)
                acc[r] = CPU_VFMA(av, cpu_vload_part(b + (n + r) * ldb + k, w), acc[r]);
        }
        for (size_t r = 0; r < rows; r++)
            c[n + r] = cpu_vhsum(acc[r]);
    }
}
#define CPU_GT_GEMV CPU_GT(gemv)
#else
#define CPU_GT_SMALL_N     NULL
#define CPU_GT_SMALL_N_MAX 0
#define CPU_GT_GEMV        NULL
#endif

const cpu_gemm_ukernel CPU_GEMM_NAME = {
    .mr          = CPU_MR,
    .nr          = CPU_NR,
    .mc          = CPU_MC,
    .kc          = CPU_KC,
    .nc          = CPU_NC,
    .kernel      = CPU_GT(kernel),
    .kernel_part = CPU_GT(kernel_part),
    .pack_a      = CPU_GT(pack_a),
    .pack_b      = CPU_GT(pack_b),
    .small_n     = CPU_GT_SMALL_N,
    .small_n_max = CPU_GT_SMALL_N_MAX,
    .gemv        = CPU_GT_GEMV,
};

#undef CPU_GT_SMALL_N
#undef CPU_GT_SMALL_N_MAX

#undef CPU_GT
#undef CPU_GT_CAT
#undef CPU_GT_CAT2
#undef CPU_NR
