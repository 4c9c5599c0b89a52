/* tools/bench/bench.h — what kiln-bench's files share: a clock, statistics
 * of repeated runs, the machine's measured limits (FMA peak, memcpy), the
 * one-op graphs every subcommand times, and the subcommands themselves
 * (main.c parses the command line and calls one). */
#ifndef KILN_BENCH_BENCH_H
#define KILN_BENCH_BENCH_H

#include <jansson.h>
#include <kiln/kiln.h>

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

/* ---- the command line and the machine (main.c) -------------------------- */

typedef struct bench_options {
    const char *what;    /* gemm, conv, ops */
    const char *compare; /* NULL or a reference's name */
    const char *sizes;   /* NULL or "1024,2048x64x784" */
    int         threads; /* 0: the backend's default */
    kiln_dtype  dtype;   /* gemm --dtype: the operands' and result's type */
    int         seconds; /* tune --seconds, 0: the default            */
    int         repeat;
    bool        json;
    double      min_s; /* time per repeat */
} bench_options;

/* What every figure is printed against. */
typedef struct bench_machine {
    int         threads;     /* the backend's threads                   */
    double      peak_gflops; /* FMA peak of the widest ISA, that many   */
    const char *peak_isa;
    /* how the cpu multiplies f16 and bf16 on this machine, for gemm --dtype */
    const char *half_path;
} bench_machine;

/* ---- graphs (graph.c) ------------------------------------------------------ */

/* kiln_graph_run of `graph` (a kiln_graph *), as a bench_fn; false after a
 * message. */
bool bench_run_graph(void *graph);

/* n floats in [-1, 1) from `seed`; NULL when out of memory. */
float *bench_random_floats(size_t n, unsigned seed);

/* Writes random data to a leaf (f32, f16 or bf16); false with a message on
 * failure. */
bool bench_fill_leaf(kiln_tensor *t, unsigned seed);

/* Marks `out` an output and compiles g; false with a message on failure. */
bool bench_compile(kiln_graph *g, kiln_tensor *out);

/* The rate (work / 1e9 per second) of each of n <= 64 repeats, as stats:
 * GFLOP/s for work in FLOP, GB/s for work in bytes. */
bench_stats bench_rate_stats(const double *seconds, int n, double work);

/* ---- --json (json.c) -------------------------------------------------------- */

/* v rounded to `decimals` places, as the table would print it; null when v
 * is not finite, NULL when out of memory. */
json_t *bench_json_fixed(double v, int decimals);

/* v rounded to `digits` digits after the first significant one (1.23e-07
 * for 2); null and NULL as above. */
json_t *bench_json_sci(double v, int digits);

/* {"min", "median", "max"}, each to 2 places; NULL when out of memory. */
json_t *bench_json_stats(const bench_stats *s);

/* Appends `row` (its reference taken; NULL when building it failed) to the
 * results array; false after a message. */
bool bench_json_append(json_t *results, json_t *row);

/* ---- subcommands (gemm.c, conv.c, ops.c) -------------------------------------- */

/* Each prints its table, or with --json appends its rows to `results`
 * (NULL without), and returns the exit status: 0, 1 when a figure failed,
 * 2 on a bad --sizes. */
int bench_gemm(const bench_options *o, kiln_context *ctx, const bench_machine *m,
               json_t *results);
int bench_conv(const bench_options *o, kiln_context *ctx, const bench_machine *m,
               json_t *results);
int bench_ops(const bench_options *o, kiln_context *ctx, const bench_machine *m,
              json_t *results);

#endif /* KILN_BENCH_BENCH_H */
