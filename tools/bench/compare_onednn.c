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

static void         *onednn_lib;
static dnnl_sgemm_fn onednn_sgemm;

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
    if (!onednn_sgemm) {
        snprintf(why, len, "libdnnl has no dnnl_sgemm: %s", dlerror());
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
    int    st = onednn_sgemm(s->ta ? 'T' : 'N', s->tb ? 'T' : 'N', s->m, s->n, s->k, 1.0f,
                          s->a, lda > 0 ? lda : 1, s->b, ldb > 0 ? ldb : 1, 0.0f, s->c,
                          s->n > 0 ? s->n : 1);
    double t  = bench_now() - t0;
    return st == 0 ? t : -1.0;
}

static void onednn_close(void)
{
    if (onednn_lib)
        dlclose(onednn_lib);
    onednn_lib   = NULL;
    onednn_sgemm = NULL;
}

const bench_reference bench_onednn = {
    .name     = "onednn",
    .open     = onednn_open,
    .setup    = bench_host_setup,
    .run      = onednn_run,
    .result   = bench_host_result,
    .teardown = bench_host_teardown,
    .close    = onednn_close,
};
