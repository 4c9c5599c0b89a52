/* tools/bench/compare_openblas.c — OpenBLAS's cblas_sgemm as a reference,
 * loaded with dlopen so that kiln-bench neither links nor needs it. Debian's
 * libopenblas0-pthread provides libopenblas.so.0. */
#include "compare.h"
#include "bench.h"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* cblas.h's values, so that no header is needed */
enum { CBLAS_ROW_MAJOR = 101, CBLAS_NO_TRANS = 111, CBLAS_TRANS = 112 };

typedef void (*cblas_sgemm_fn)(int order, int ta, int tb, int m, int n, int k,
                               float alpha, const float *a, int lda, const float *b,
                               int ldb, float beta, float *c, int ldc);
typedef void (*set_threads_fn)(int n);

static void          *openblas_lib;
static cblas_sgemm_fn openblas_sgemm;

typedef struct openblas_state {
    int          m, n, k;
    bool         ta, tb;
    const float *a, *b;
    float       *c;
} openblas_state;

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
    openblas_sgemm = (cblas_sgemm_fn)dlsym(openblas_lib, "cblas_sgemm");
    if (!openblas_sgemm) {
        snprintf(why, len, "libopenblas.so.0 has no cblas_sgemm: %s", dlerror());
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

static void *openblas_setup(int m, int n, int k, bool ta, bool tb, const float *a,
                            const float *b)
{
    openblas_state *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->m  = m;
    s->n  = n;
    s->k  = k;
    s->ta = ta;
    s->tb = tb;
    s->a  = a;
    s->b  = b;
    s->c  = malloc((size_t)m * (size_t)n * sizeof *s->c + 1);
    if (!s->c) {
        free(s);
        return NULL;
    }
    return s;
}

static double openblas_run(void *state)
{
    openblas_state *s   = state;
    double          t0  = bench_now();
    int             lda = s->ta ? s->m : s->k, ldb = s->tb ? s->k : s->n;
    openblas_sgemm(CBLAS_ROW_MAJOR, s->ta ? CBLAS_TRANS : CBLAS_NO_TRANS,
                   s->tb ? CBLAS_TRANS : CBLAS_NO_TRANS, s->m, s->n, s->k, 1.0f, s->a,
                   lda > 0 ? lda : 1, s->b, ldb > 0 ? ldb : 1, 0.0f, s->c,
                   s->n > 0 ? s->n : 1);
    return bench_now() - t0;
}

static bool openblas_result(void *state, float *c)
{
    openblas_state *s = state;
    memcpy(c, s->c, (size_t)s->m * (size_t)s->n * sizeof *c);
    return true;
}

static void openblas_teardown(void *state)
{
    openblas_state *s = state;
    if (s)
        free(s->c);
    free(s);
}

static void openblas_close(void)
{
    if (openblas_lib)
        dlclose(openblas_lib);
    openblas_lib   = NULL;
    openblas_sgemm = NULL;
}

const bench_reference bench_openblas = {
    .name     = "openblas",
    .open     = openblas_open,
    .setup    = openblas_setup,
    .run      = openblas_run,
    .result   = openblas_result,
    .teardown = openblas_teardown,
    .close    = openblas_close,
};
