/* tools/bench/peak.c — the machine's fp32 FMA peak, measured: a loop of
 * independent FMAs on registers only (no memory), per ISA and thread count,
 * so that GEMM figures can be printed as a fraction of what this CPU does
 * here and now, rather than of a datasheet number. */
#include "bench.h"

#include <pthread.h>
#include <string.h>

#define PEAK_ITERS 2000000L /* of 12 FMAs each: about 4 ms at full speed */
#define PEAK_TRIES 25       /* the best try is the one no other process disturbed */

#if defined(__x86_64__)
#include <immintrin.h>

/* 12 independent chains: enough to cover FMA latency on two pipes. */
#define PEAK_BODY(V, FMA, SET1)                                                        \
    V a0 = SET1(1.0f), a1 = SET1(1.1f), a2 = SET1(1.2f), a3 = SET1(1.3f);              \
    V a4 = SET1(1.4f), a5 = SET1(1.5f), a6 = SET1(1.6f), a7 = SET1(1.7f);              \
    V a8 = SET1(1.8f), a9 = SET1(1.9f), a10 = SET1(2.0f), a11 = SET1(2.1f);            \
    V m = SET1(0.9999999f), c = SET1(1e-7f);                                           \
    for (long i = 0; i < PEAK_ITERS; i++) {                                            \
        a0  = FMA(a0, m, c);                                                           \
        a1  = FMA(a1, m, c);                                                           \
        a2  = FMA(a2, m, c);                                                           \
        a3  = FMA(a3, m, c);                                                           \
        a4  = FMA(a4, m, c);                                                           \
        a5  = FMA(a5, m, c);                                                           \
        a6  = FMA(a6, m, c);                                                           \
        a7  = FMA(a7, m, c);                                                           \
        a8  = FMA(a8, m, c);                                                           \
        a9  = FMA(a9, m, c);                                                           \
        a10 = FMA(a10, m, c);                                                          \
        a11 = FMA(a11, m, c);                                                          \
        __asm__ volatile(""                                                            \
                         : "+v"(a0), "+v"(a1), "+v"(a2), "+v"(a3), "+v"(a4), "+v"(a5), \
                           "+v"(a6), "+v"(a7), "+v"(a8), "+v"(a9), "+v"(a10),          \
                           "+v"(a11));                                                 \
    }                                                                                  \
    V     s = a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7 + a8 + a9 + a10 + a11;             \
    float out[sizeof(V) / sizeof(float)];                                              \
    memcpy(out, &s, sizeof out);                                                       \
    return out[0];

__attribute__((target("avx512f,fma"))) static float peak_avx512(void)
{
    PEAK_BODY(__m512, _mm512_fmadd_ps, _mm512_set1_ps)
}

__attribute__((target("avx2,fma"))) static float peak_avx2(void)
{
    PEAK_BODY(__m256, _mm256_fmadd_ps, _mm256_set1_ps)
}

typedef struct peak_job {
    float (*fn)(void);
    float sink;
} peak_job;

static void *peak_thread(void *arg)
{
    peak_job *j = arg;
    j->sink     = j->fn();
    return NULL;
}

double bench_fma_peak(const char *isa, int threads)
{
    float (*fn)(void);
    int lanes;
    __builtin_cpu_init();
    if (strcmp(isa, "avx512") == 0 && __builtin_cpu_supports("avx512f")) {
        fn    = peak_avx512;
        lanes = 16;
    } else if (strcmp(isa, "avx2") == 0 && __builtin_cpu_supports("avx2") &&
               __builtin_cpu_supports("fma")) {
        fn    = peak_avx2;
        lanes = 8;
    } else {
        return 0.0;
    }
    if (threads < 1 || threads > 64)
        threads = 1;
    double best = 0.0;
    for (int r = 0; r < PEAK_TRIES; r++) {
        peak_job  jobs[64];
        pthread_t tids[64];
        double    t0      = bench_now();
        int       started = 1;
        for (int t = 1; t < threads; t++) {
            jobs[t].fn = fn;
            if (pthread_create(&tids[t], NULL, peak_thread, &jobs[t]) != 0)
                break;
            started++;
        }
        jobs[0].fn = fn;
        peak_thread(&jobs[0]);
        for (int t = 1; t < started; t++)
            pthread_join(tids[t], NULL);
        double s      = bench_now() - t0;
        double gflops = 2.0 * 12.0 * lanes * (double)PEAK_ITERS * started / s / 1e9;
        if (gflops > best)
            best = gflops;
    }
    return best;
}
#else
double bench_fma_peak(const char *isa, int threads)
{
    (void)isa;
    (void)threads;
    return 0.0;
}
#endif
