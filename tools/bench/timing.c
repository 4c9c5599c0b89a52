/* tools/bench/timing.c — the clock, repeated runs and their statistics, and
 * memcpy's bandwidth (what elementwise ops are measured against). */
#include "bench.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

double bench_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int bench_cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

bench_stats bench_stats_of(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, bench_cmp);
    bench_stats s = {v[0], n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]), v[n - 1]};
    return s;
}

bool bench_time(bench_fn fn, void *arg, int repeat, double min_s, double *out)
{
    /* warm-up: caches, page faults, threads started, lazy set-up */
    double t0 = bench_now();
    if (!fn(arg))
        return false;
    double once = bench_now() - t0;
    if (!fn(arg))
        return false;
    int calls = once > 0 && once < min_s ? (int)(min_s / once) + 1 : 1;
    for (int r = 0; r < repeat; r++) {
        t0 = bench_now();
        for (int c = 0; c < calls; c++)
            if (!fn(arg))
                return false;
        out[r] = (bench_now() - t0) / calls;
    }
    return true;
}

/* ---- memcpy ------------------------------------------------------------------ */

typedef struct bench_copy {
    char       *dst;
    const char *src;
    size_t      bytes;
} bench_copy;

static void *bench_copy_thread(void *arg)
{
    bench_copy *c = arg;
    memcpy(c->dst, c->src, c->bytes);
    return NULL;
}

/* One copy of bytes, split over threads; seconds, or -1. */
static double bench_copy_once(char *dst, const char *src, size_t bytes, int threads)
{
    bench_copy parts[64];
    pthread_t  tids[64];
    size_t     per = (bytes / (size_t)threads) & ~(size_t)63;
    double     t0  = bench_now();
    for (int t = 0; t < threads; t++) {
        size_t off = per * (size_t)t;
        parts[t]   = (bench_copy){dst + off, src + off,
                                t == threads - 1 ? bytes - off : per};
        if (t > 0 && pthread_create(&tids[t], NULL, bench_copy_thread, &parts[t]) != 0)
            return -1.0;
    }
    bench_copy_thread(&parts[0]);
    for (int t = 1; t < threads; t++)
        pthread_join(tids[t], NULL);
    return bench_now() - t0;
}

double bench_memcpy_gbs(size_t bytes, int threads)
{
    if (threads < 1)
        threads = 1;
    if (threads > 64)
        threads = 64;
    char  *src = malloc(bytes), *dst = malloc(bytes);
    double best = 0.0;
    if (src && dst) {
        memset(src, 1, bytes);
        memset(dst, 2, bytes);
        for (int r = 0; r < 7; r++) {
            double s = bench_copy_once(dst, src, bytes, threads);
            if (s > 0 && 2.0 * (double)bytes / s / 1e9 > best)
                best = 2.0 * (double)bytes / s / 1e9;
        }
    }
    free(src);
    free(dst);
    return best;
}
