/* tools/bench/bench.h — what kiln-bench's files share: a clock, statistics
 * of repeated runs, and the machine's measured limits (FMA peak, memcpy). */
#ifndef KILN_BENCH_BENCH_H
#define KILN_BENCH_BENCH_H

#include <stdbool.h>
#include <stddef.h>

/* Seconds on a monotonic clock. */
double bench_now(void);

/* min, median and max of n values (n >= 1); sorts v. */
typedef struct bench_stats {
    double min, median, max;
} bench_stats;
bench_stats bench_stats_of(double *v, int n);

/* Times fn(arg) (one complete operation; returns false on failure) `repeat`
 * times after a warm-up, each time as many calls as take about min_s; fills
 * seconds per call of each repeat into out[repeat]. False on failure. */
typedef bool (*bench_fn)(void *arg);
bool bench_time(bench_fn fn, void *arg, int repeat, double min_s, double *out);

/* The fp32 FMA peak in GFLOP/s of a register-only loop on `threads` threads
 * with the widest vectors of `isa` ("avx512", "avx2"); 0 if the CPU lacks it. */
double bench_fma_peak(const char *isa, int threads);

/* memcpy bandwidth in GB/s (bytes read + written) for `bytes`-sized copies on
 * `threads` threads, the best of a few tries; 0 on allocation failure. */
double bench_memcpy_gbs(size_t bytes, int threads);

#endif /* KILN_BENCH_BENCH_H */
