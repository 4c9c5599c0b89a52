/* tools/bench/compare_openblas.c — OpenBLAS's cblas_sgemm as a reference,
 * loaded with dlopen so that kiln-bench neither links nor needs it. Debian's
 * libopenblas0-pthread provides libopenblas.so.0. */
#include "compare.h"
#include "bench.h"

#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>

/* cblas.h's values, so that no header is needed */
enum { CBLAS_ROW_MAJOR = 101, CBLAS_NO_TRANS = 111, CBLAS_TRANS = 112 };

typedef void (*cblas_sgemm_fn)(int order, int ta, int tb, int m, int n, int k,
                               float alpha, const float *a, int lda, const float *b,
                               int ldb, float beta, float *c, int ldc);
typedef void (*cblas_sbgemm_fn)(int order, int ta, int tb, int m, int n, int k,
                                float alpha, const uint16_t *a, int lda, const uint16_t *b,
                                int ldb, float beta, float *c, int ldc);
typedef void (*set_threads_fn)(int n);

static void           *openblas_lib;
static cblas_sgemm_fn  openblas_sgemm;
static cblas_sbgemm_fn openblas_sbgemm; /* OpenBLAS 0.3.10 on, bf16 */

static bool openblas_open(const kiln_context *ctx, char *why, size_t len)
{
    (void)ctx; /* the host's threads, whatever kiln runs on */
    openblas_lib = dlopen("libopenblas.so.0", RTLD_NOW | RTLD_LOCAL);
    if (!openblas_lib) {
        snprintf(why, len,
                 "libopenblas.so.0 not found (%s); on Debian: "
                 "apt-get install libopenblas0-pthread",
                 dlerror());
        return false;
    }
    const char *sym = bench_reference_dtype == KILN_BF16 ? "cblas_sbgemm" : "cblas_sgemm";
    openblas_sgemm  = (cblas_sgemm_fn)dlsym(openblas_lib, "cblas_sgemm");
    openblas_sbgemm = (cblas_sbgemm_fn)dlsym(openblas_lib, "cblas_sbgemm");
    if (bench_reference_dtype == KILN_F16 ||
        !(bench_reference_dtype == KILN_BF16 ? (void *)openblas_sbgemm
                                             : (void *)openblas_sgemm)) {
        snprintf(why, len, "libopenblas.so.0 has no %s",
                 bench_reference_dtype == KILN_F16 ? "f16 GEMM" : sym);
        dlclose(openblas_lib);
        openblas_lib = NULL;
        return false;
    }
    set_threads_fn set_threads = (set_threads_fn)dlsym(openblas_lib,
                                                       "openblas_set_num_threads");
    if (set_threads && bench_reference_threads > 0)
        set_threads(bench_reference_threads);
    return true;
}

static double openblas_run(void *state)
{
    bench_host_state *s   = state;
    double            t0  = bench_now();
    int               lda = s->ta ? s->m : s->k, ldb = s->tb ? s->k : s->n;
    if (s->a16)
        openblas_sbgemm(CBLAS_ROW_MAJOR, s->ta ? CBLAS_TRANS : CBLAS_NO_TRANS,
                        s->tb ? CBLAS_TRANS : CBLAS_NO_TRANS, s->m, s->n, s->k, 1.0f,
                        s->a16, lda > 0 ? lda : 1, s->b16, ldb > 0 ? ldb : 1, 0.0f, s->c,
                        s->n > 0 ? s->n : 1);
    else
        openblas_sgemm(CBLAS_ROW_MAJOR, s->ta ? CBLAS_TRANS : CBLAS_NO_TRANS,
                       s->tb ? CBLAS_TRANS : CBLAS_NO_TRANS, s->m, s->n, s->k, 1.0f, s->a,
                       lda > 0 ? lda : 1, s->b, ldb > 0 ? ldb : 1, 0.0f, s->c,
                       s->n > 0 ? s->n : 1);
    return bench_now() - t0;
}

static void openblas_close(void)
{
    if (openblas_lib)
        dlclose(openblas_lib);
    openblas_lib    = NULL;
    openblas_sgemm  = NULL;
    openblas_sbgemm = NULL;
}

const bench_reference bench_openblas = {
    .name     = "openblas",
    .open     = openblas_open,
    .setup    = bench_host_setup,
    .run      = openblas_run,
    .result   = bench_host_result,
    .teardown = bench_host_teardown,
    .close    = openblas_close,
    .bf16     = true,
};
