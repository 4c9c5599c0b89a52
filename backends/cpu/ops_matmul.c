/* ops_matmul.c — MATMUL, and the sgemm entry every GEMM-shaped op uses.
 *
 * cpu_kernels.sgemm is the packed GEMM of gemm.c on the device's threads,
 * found through the thread's state (cpu_tls), which graph_compute sets. Called
 * with no device there (never, in kiln), it falls back to plain loops that
 * keep the innermost loop on contiguous memory: with b stored [K,N] i-k-j
 * (row i of c accumulates row k of b scaled by a(i,k)); with b stored [N,K]
 * i-j-k (a dot product of a row of b with row or column i of a). */
#include "cpu-impl.h"

/* a(i,k) whether a is stored [M,K] or, transposed, [K,M]. */
static inline float cpu_a_at(const float *a, size_t lda, bool ta, size_t i, size_t k)
{
    return ta ? a[k * lda + i] : a[i * lda + k];
}

/* b stored [K,N]: c[i,:] = sum over k of a(i,k) * b[k,:] */
static void cpu_sgemm_ikj(size_t M, size_t N, size_t K,
                          const float *a, size_t lda, bool ta,
                          const float *b, size_t ldb, float *c, size_t ldc)
{
    for (size_t i = 0; i < M; i++) {
        float *ci = c + i * ldc;
        for (size_t j = 0; j < N; j++)
            ci[j] = 0.0f;
        for (size_t k = 0; k < K; k++) {
            float aik = cpu_a_at(a, lda, ta, i, k);
            const float *bk = b + k * ldb;
            for (size_t j = 0; j < N; j++)
                ci[j] += aik * bk[j];
        }
    }
}

/* b stored [N,K]: c[i,j] = a(i,:) . b[j,:] */
static void cpu_sgemm_dot(size_t M, size_t N, size_t K,
                          const float *a, size_t lda, bool ta,
                          const float *b, size_t ldb, float *c, size_t ldc)
{
    for (size_t i = 0; i < M; i++) {
        for (size_t j = 0; j < N; j++) {
            const float *bj = b + j * ldb;
            float acc = 0.0f;
            for (size_t k = 0; k < K; k++)
                acc += cpu_a_at(a, lda, ta, i, k) * bj[k];
            c[i * ldc + j] = acc;
        }
    }
}

static void cpu_sgemm_loops(size_t M, size_t N, size_t K,
                             const float *a, size_t lda, bool ta,
                             const float *b, size_t ldb, bool tb,
                             float *c, size_t ldc)
{
    if (K == 0) {   /* a and b may have no storage at all */
        for (size_t i = 0; i < M; i++)
            for (size_t j = 0; j < N; j++)
                c[i * ldc + j] = 0.0f;
    } else if (tb) {
        cpu_sgemm_dot(M, N, K, a, lda, ta, b, ldb, c, ldc);
    } else {
        cpu_sgemm_ikj(M, N, K, a, lda, ta, b, ldb, c, ldc);
    }
}

static void cpu_sgemm_entry(size_t M, size_t N, size_t K,
                            const float *a, size_t lda, bool ta,
                            const float *b, size_t ldb, bool tb,
                            float *c, size_t ldc)
{
    const cpu_device *dev = cpu_tls.dev;
    if (!dev) {
        cpu_sgemm_loops(M, N, K, a, lda, ta, b, ldb, tb, c, ldc);
        return;
    }
    cpu_gemm_args g = {
        .M = M, .N = N, .K = K, .a = a, .lda = lda, .ta = ta,
        .b = b, .ldb = ldb, .tb = tb, .c = c, .ldc = ldc,
    };
    cpu_gemm(dev, &g);
}

void cpu_matmul_kernels_scalar(cpu_kernels *k)
{
    k->sgemm = cpu_sgemm_entry;
    k->gemm  = &cpu_gemm_portable;
}

/* ---- MATMUL --------------------------------------------------------------- */

/* M, K of op(a) and K, N of op(b), from the stored shapes and the flags. */
typedef struct cpu_mm_shape {
    int64_t M, N, Ka, Kb;
    bool    ta, tb;
} cpu_mm_shape;

static cpu_mm_shape cpu_mm_shape_of(const kiln_node *node)
{
    const kiln_node *a = node->src[0], *b = node->src[1];
    cpu_mm_shape s;
    s.ta = node->iparam[0] != 0;
    s.tb = node->iparam[1] != 0;
    s.M  = a->dims[s.ta ? 1 : 0];
    s.Ka = a->dims[s.ta ? 0 : 1];
    s.Kb = b->dims[s.tb ? 1 : 0];
    s.N  = b->dims[s.tb ? 0 : 1];
    return s;
}


kiln_status cpu_op_matmul(const cpu_device *dev, const kiln_node *node)
{
    const kiln_node *a = node->src[0], *b = node->src[1];
    cpu_mm_shape s = cpu_mm_shape_of(node);
    if (s.M == 0 || s.N == 0)
        return KILN_OK;
    cpu_gemm_args g = {
        .M = (size_t)s.M, .N = (size_t)s.N, .K = (size_t)s.Ka,
        .a = cpu_cf32(a), .lda = (size_t)a->dims[1], .ta = s.ta,
        .b = cpu_cf32(b), .ldb = (size_t)b->dims[1], .tb = s.tb,
        .c = cpu_f32(node), .ldc = (size_t)s.N,
    };
    cpu_gemm(dev, &g);
    return KILN_OK;
}
