/* tools/bench/compare_onednn.c — oneDNN's dnnl_sgemm as a reference, loaded
 * with dlopen so that kiln-bench neither links nor needs it. Debian's
 * libdnnl2 (libdnnl-dev) provides libdnnl.so.2, built on OpenMP: its
 * threads are OMP_NUM_THREADS, set before the library loads unless the user
 * set it. dnnl_sgemm runs the same JIT kernels as oneDNN's f32 matmul
 * without a primitive to create, row-major as kiln. */
#include "bench.h"
#include "compare.h"

#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

/* oneapi/dnnl/dnnl.h's, so that no header is needed: status 0 is success */
typedef int (*dnnl_sgemm_fn)(char ta, char tb, int64_t m, int64_t n, int64_t k,
                             float alpha, const float *a, int64_t lda, const float *b,
                             int64_t ldb, float beta, float *c, int64_t ldc);

/* dnnl_gemm_bf16bf16f32: bf16 operands (as uint16_t), f32 C */
typedef int (*dnnl_gemm_bf16_fn)(char ta, char tb, int64_t m, int64_t n, int64_t k,
                                 float alpha, const uint16_t *a, int64_t lda,
                                 const uint16_t *b, int64_t ldb, float beta, float *c,
                                 int64_t ldc);

static void             *onednn_lib;
static dnnl_sgemm_fn     onednn_sgemm;
static dnnl_gemm_bf16_fn onednn_bf16;

static bool onednn_open(const kiln_context *ctx, char *why, size_t len)
{
    (void)ctx; /* the host's threads, whatever kiln runs on */
    if (bench_reference_threads > 0 && !getenv("OMP_NUM_THREADS")) {
        char n[16];
        snprintf(n, sizeof n, "%d", bench_reference_threads);
        setenv("OMP_NUM_THREADS", n, 0);
    }
    onednn_lib = dlopen("libdnnl.so.2", RTLD_NOW | RTLD_LOCAL);
    if (!onednn_lib)
        onednn_lib = dlopen("libdnnl.so.3", RTLD_NOW | RTLD_LOCAL);
    if (!onednn_lib) {
        snprintf(why, len,
                 "libdnnl.so.2 (or .3) not found (%s); on Debian: apt-get install "
                 "libdnnl-dev",
                 dlerror());
        return false;
    }
    onednn_sgemm = (dnnl_sgemm_fn)dlsym(onednn_lib, "dnnl_sgemm");
    onednn_bf16  = (dnnl_gemm_bf16_fn)dlsym(onednn_lib, "dnnl_gemm_bf16bf16f32");
    if (bench_reference_dtype == KILN_F16 || !onednn_sgemm ||
        (bench_reference_dtype == KILN_BF16 && !onednn_bf16)) {
        snprintf(why, len, "libdnnl has no %s",
                 bench_reference_dtype == KILN_F16    ? "f16 GEMM function"
                 : bench_reference_dtype == KILN_BF16 ? "dnnl_gemm_bf16bf16f32"
                                                      : "dnnl_sgemm");
        dlclose(onednn_lib);
        onednn_lib = NULL;
        return false;
    }
    return true;
}

static double onednn_run(void *state)
{
    bench_host_state *s   = state;
    double            t0  = bench_now();
    int64_t           lda = s->ta ? s->m : s->k, ldb = s->tb ? s->k : s->n;
    int    st = s->a16 ? onednn_bf16(s->ta ? 'T' : 'N', s->tb ? 'T' : 'N', s->m, s->n, s->k,
                                     1.0f, s->a16, lda > 0 ? lda : 1, s->b16,
                                     ldb > 0 ? ldb : 1, 0.0f, s->c, s->n > 0 ? s->n : 1)
                       : onednn_sgemm(s->ta ? 'T' : 'N', s->tb ? 'T' : 'N', s->m, s->n,
                                      s->k, 1.0f, s->a, lda > 0 ? lda : 1, s->b,
                                      ldb > 0 ? ldb : 1, 0.0f, s->c, s->n > 0 ? s->n : 1);
    double t  = bench_now() - t0;
    if (st != 0) /* 3 is dnnl_unimplemented: no kernel for this type on this CPU */
        fprintf(stderr, "kiln-bench: onednn: %s returned status %d%s\n",
                s->a16 ? "dnnl_gemm_bf16bf16f32" : "dnnl_sgemm", st,
                st == 3 ? " (unimplemented on this CPU)" : "");
    return st == 0 ? t : -1.0;
}

static void onednn_close(void)
{
    if (onednn_lib)
        dlclose(onednn_lib);
    onednn_lib   = NULL;
    onednn_sgemm = NULL;
    onednn_bf16  = NULL;
}

const bench_reference bench_onednn = {
    .name     = "onednn",
    .open     = onednn_open,
    .setup    = bench_host_setup,
    .run      = onednn_run,
    .result   = bench_host_result,
    .teardown = bench_host_teardown,
    .close    = onednn_close,
    .bf16     = true,
};
