/* tune.c — a search of CLBlast's Xgemm parameters for one device, run when
 * KILN_OPENCL_TUNE=search[:SECONDS] (kiln-bench tune sets it), its winner
 * kept in kiln's cache folder for every later process (gemm.c).
 *
 * CLBlast picks Xgemm's 16 parameters from a database by device name, and a
 * device it does not know (POCL, a new GPU) gets defaults far from its best:
 * on one POCL machine 17.7 GFLOP/s at 1024^3, where the best of ~960 sets
 * CLBlast's own tuner drew at random reached 84. The search here is a
 * stochastic hill climb over the space CLBlast's tuner explores for GEMMK=0,
 * which learns from its samples where a random draw does not: from the
 * fastest set so far, it changes one to three parameters to other values
 * of their range, skips sets that break CLBlast's constraints or were tried,
 * and keeps a change that is faster. Every candidate is first checked
 * against the host on products with partial tiles and both transposes (a
 * set that breaks CLBlast's constraints can compute garbage at a flattering
 * speed), then timed; the winner is checked once more on a large product
 * before it stays in force.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ocl-impl.h"

#define TUNE_DEFAULT_SECONDS 60.0
#define TUNE_N               1024
/* A product smaller than this is not worth a search's figure. */
#define TUNE_MIN_N 256
/* The candidates remembered, so that none is timed twice. */
#define TUNE_SEEN 4096

/* The values each parameter takes in the search: CLBlast's tuner's ranges
 * for GEMMK=0 (its "xgemm" kernel family). */
static const struct {
    int    n;
    size_t v[4];
} tune_range[OCL_XGEMM_PARAMS] = {
    [P_GEMMK] = {1, {0}},          [P_KREG] = {1, {1}},
    [P_KWG] = {2, {16, 32}},       [P_KWI] = {2, {2, 8}},
    [P_MDIMA] = {3, {8, 16, 32}},  [P_MDIMC] = {3, {8, 16, 32}},
    [P_MWG] = {4, {16, 32, 64, 128}},
    [P_NDIMB] = {3, {8, 16, 32}},  [P_NDIMC] = {3, {8, 16, 32}},
    [P_NWG] = {4, {16, 32, 64, 128}},
    [P_SA] = {2, {0, 1}},          [P_SB] = {2, {0, 1}},
    [P_STRM] = {2, {0, 1}},        [P_STRN] = {2, {0, 1}},
    [P_VWM] = {4, {1, 2, 4, 8}},   [P_VWN] = {4, {1, 2, 4, 8}},
};

/* Where a search starts when no set verified: CLBlast's tuner's defaults
 * for GEMMK=0 (local memory for both operands, vectors of 2). */
static const size_t tune_default[OCL_XGEMM_PARAMS] = {0, 1, 32, 2,  16, 16, 64, 16,
                                                      16, 64, 1, 1, 1,  0,  2,  2};

double ocl_tune_budget(void)
{
    const char *env = getenv("KILN_OPENCL_TUNE");
    if (!env || strncmp(env, "search", 6) != 0 || (env[6] && env[6] != ':'))
        return 0;
    if (!env[6])
        return TUNE_DEFAULT_SECONDS;
    char  *end;
    double s = strtod(env + 7, &end);
    return end != env + 7 && !*end && s > 0 && s <= 86400 ? s : TUNE_DEFAULT_SECONDS;
}

static double tune_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

typedef struct tune {
    ocl_device *dev;
    cl_mem      a, b, c;
    size_t      n;
    uint64_t    rng;
    uint64_t    seen[TUNE_SEEN];
    size_t      n_seen;
    int         tried, wrong;
} tune;

static uint64_t tune_random(tune *t)
{
    t->rng += 0x9e3779b97f4a7c15ull; /* splitmix64 */
    uint64_t z = t->rng;
    z          = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z          = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Whether v was tried before; remembers it. */
static bool tune_seen(tune *t, const size_t *v)
{
    uint64_t h = ocl_fnv1a(OCL_FNV_SEED, v, OCL_XGEMM_PARAMS * sizeof *v);
    for (size_t i = 0; i < t->n_seen; i++)
        if (t->seen[i] == h)
            return true;
    if (t->n_seen < TUNE_SEEN)
        t->seen[t->n_seen++] = h;
    return false;
}

/* The product's rate with set v in force, or 0 when CLBlast refuses the set
 * or it fails its check; an error status only when memory runs out. */
static kiln_status tune_rate(tune *t, const size_t *v, double *gflops)
{
    ocl_device *dev      = t->dev;
    char        why[256] = "";
    bool        ok       = false;
    *gflops              = 0;
    t->tried++;
    if (ocl_xgemm_apply(dev, v, "search") != 0)
        return KILN_OK;
    kiln_status st = ocl_gemm_check_indirect(dev, &ok, why, sizeof why);
    if (st != KILN_OK || !ok) {
        t->wrong += st == KILN_OK;
        return st;
    }
    ocl_gemm g = {.m     = t->n,
                  .n     = t->n,
                  .k     = t->n,
                  .alpha = 1.0f,
                  .beta  = 0.0f,
                  .a     = t->a,
                  .b     = t->b,
                  .c     = t->c,
                  .lda   = t->n,
                  .ldb   = t->n,
                  .ldc   = t->n};
    double best = INFINITY;
    for (int r = 0; r < 3 && st == KILN_OK; r++) { /* the first compiled it */
        double t0 = tune_now();
        st        = ocl_sgemm(dev, &g);
        cl_int e  = st == KILN_OK ? clFinish(dev->queue) : CL_SUCCESS;
        if (e != CL_SUCCESS)
            st = ocl_cl_fail(dev->host, "clFinish", e, "timing an Xgemm set");
        if (r > 0 && tune_now() - t0 < best)
            best = tune_now() - t0;
    }
    if (st == KILN_OK && best > 0 && isfinite(best))
        *gflops = 2.0 * (double)t->n * (double)t->n * (double)t->n / best / 1e9;
    return st;
}

/* best with one to three parameters moved to other values of their ranges. */
static void tune_neighbour(tune *t, const size_t *best, size_t *v)
{
    memcpy(v, best, OCL_XGEMM_PARAMS * sizeof *v);
    uint64_t r       = tune_random(t);
    int      changes = r % 10 < 6 ? 1 : r % 10 < 9 ? 2 : 3;
    for (int c = 0; c < changes; c++) {
        int p;
        do /* a parameter with a choice */
            p = (int)(tune_random(t) % OCL_XGEMM_PARAMS);
        while (tune_range[p].n < 2);
        size_t was = v[p];
        while (v[p] == was)
            v[p] = tune_range[p].v[tune_random(t) % (uint64_t)tune_range[p].n];
    }
}

static kiln_status tune_buffers(tune *t)
{
    ocl_device *dev = t->dev;
    cl_int      err = CL_SUCCESS;
    size_t      n   = TUNE_N;
    /* three matrices in at most an eighth of the device's memory */
    while (n > TUNE_MIN_N && 3 * n * n * sizeof(float) > dev->info->memory / 8)
        n /= 2;
    t->n         = n;
    float *x     = malloc(n * n * sizeof *x);
    if (!x)
        return dev->host->error(KILN_ERR_NO_MEMORY, "opencl: out of memory for the "
                                                    "Xgemm search");
    for (size_t i = 0; i < n * n; i++)
        x[i] = (float)((i * 7919u) % 1000u) / 1000.0f - 0.5f;
    cl_mem *mems[3] = {&t->a, &t->b, &t->c};
    for (int i = 0; i < 3 && err == CL_SUCCESS; i++)
        *mems[i] = clCreateBuffer(dev->ctx, CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR,
                                  n * n * sizeof *x, x, &err);
    free(x);
    return err == CL_SUCCESS ? KILN_OK
                             : ocl_cl_fail(dev->host, "clCreateBuffer", err,
                                           "%zu bytes for the Xgemm search",
                                           n * n * sizeof(float));
}

kiln_status ocl_tune_search(ocl_device *dev, double budget, const size_t *start,
                            size_t best[OCL_XGEMM_PARAMS], char *note, size_t len)
{
    tune   *t   = calloc(1, sizeof *t);
    double  end = tune_now() + budget, first = 0, rate = 0, best_rate = 0;
    size_t  v[OCL_XGEMM_PARAMS];
    bool    ok = false;
    char    why[256] = "";
    if (!t)
        return dev->host->error(KILN_ERR_NO_MEMORY, "opencl: out of memory for the "
                                                    "Xgemm search");
    t->dev         = dev;
    t->rng         = (uint64_t)time(NULL);
    size_t was     = dev->info->gemm_min_indirect;
    char   start_name[32];
    snprintf(start_name, sizeof start_name, "%s", dev->info->gemm_set);
    kiln_status st = tune_buffers(t);
    if (st == KILN_OK) /* the checks' small products take the Xgemm kernel */
        st = ocl_gemm_set_min_indirect(dev, 64);
    memcpy(best, start ? start : tune_default, OCL_XGEMM_PARAMS * sizeof *best);
    if (st == KILN_OK && !ocl_xgemm_unfit(best, dev->info)) {
        tune_seen(t, best);
        st = tune_rate(t, best, &best_rate);
        /* a slow device times smaller products, so that the budget sees
         * more candidates: about a quarter of a second each at most */
        size_t n = t->n;
        while (st == KILN_OK && best_rate > 0 && t->n > TUNE_MIN_N &&
               2.0 * (double)t->n * (double)t->n * (double)t->n / best_rate / 1e9 > 0.25)
            t->n /= 2;
        if (st == KILN_OK && t->n != n)
            st = tune_rate(t, best, &best_rate);
        first = best_rate;
    }
    /* a start that does not run: the first candidate that does replaces it */
    for (int misses = 0; st == KILN_OK && tune_now() < end && misses < 1000;) {
        tune_neighbour(t, best, v);
        if (ocl_xgemm_unfit(v, dev->info) || tune_seen(t, v)) {
            misses++;
            continue;
        }
        misses = 0;
        st     = tune_rate(t, v, &rate);
        if (st == KILN_OK && rate > best_rate) {
            dev->host->log(KILN_LOG_INFO,
                           "opencl: Xgemm search on %s: %.1f GFLOP/s at %zu^3 (candidate "
                           "%d)",
                           dev->info->name, rate, t->n, t->tried);
            memcpy(best, v, sizeof v);
            best_rate = rate;
        }
    }
    /* the winner, checked again on a large product, stays in force */
    if (st == KILN_OK && best_rate > 0 && ocl_xgemm_apply(dev, best, "search") == 0)
        st = ocl_gemm_check_square(dev, t->n, &ok, why, sizeof why);
    /* a CPU device's indirect kernel from OCL_CPU_MIN_INDIRECT^3, as for a
     * set of kiln's; a GPU's from 512^3 (CLBlast's own threshold, which an
     * override cannot bring back, lies between 384 and 1024 for most) */
    if (st == KILN_OK && ok)
        st = ocl_gemm_set_min_indirect(
            dev, (dev->info->type & CL_DEVICE_TYPE_CPU) ? OCL_CPU_MIN_INDIRECT : 512);
    else if (st == KILN_OK && start)
        st = ocl_gemm_set_min_indirect(dev, was ? was : 512);
    if (st == KILN_OK && ok)
        snprintf(note, len,
                 "Xgemm searched for %.0f s: %d sets, %d wrong; %.1f GFLOP/s at %zu^3 "
                 "(start %.1f)",
                 budget, t->tried, t->wrong, best_rate, t->n, first);
    else if (st == KILN_OK)
        /* nothing better verified: the start stays if it ran, else the
         * direct kernels only, as when no set verifies */
        st = start ? (ocl_xgemm_apply(dev, start, start_name) == 0
                          ? KILN_OK
                          : dev->host->error(KILN_ERR_BACKEND,
                                             "opencl: CLBlast refused the Xgemm set it "
                                             "took before the search"))
                   : ocl_gemm_set_min_indirect(dev, 1u << 20);
    if (st == KILN_OK && !ok)
        snprintf(note + strlen(note), len - strlen(note),
                 "; an Xgemm search for %.0f s found nothing better that verified (%s)",
                 budget, why[0] ? why : "no set ran");
    cl_mem mems[3] = {t->a, t->b, t->c};
    for (int i = 0; i < 3; i++)
        if (mems[i])
            clReleaseMemObject(mems[i]);
    free(t);
    return st;
}
