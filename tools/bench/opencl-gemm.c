/* tools/bench/opencl-gemm.c — SGEMM through kiln's OpenCL backend against a
 * direct CLBlast call on the same device, in the same process, with the same
 * CLBlast parameters: the figure is kiln's overhead.
 *
 *   opencl-gemm [-r RUNS] [N ...]   square sizes, 512 and 1024 by default;
 *                                   RUNS timed runs of each side (default 40);
 *                                   --runs=RUNS too
 *
 * The device is the one KILN_BACKEND selects ("opencl" if unset); the
 * CLBlast side runs on the device of kiln's context, as compare_clblast.c
 * says. kiln's side is a compiled graph c = a @ b with a and b written once,
 * timed per kiln_graph_run (enqueue, then wait); CLBlast's per CLBlastSgemm +
 * clFinish. The two are timed in alternation, so load from elsewhere falls
 * on both; the medians and the minima are printed.
 */
#include "compare.h"
#include "../cli.h"

#include <kiln/kiln.h>

#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

extern const bench_reference bench_clblast;

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

typedef struct kiln_side {
    kiln_graph  *g;
    kiln_tensor *c;
} kiln_side;

static bool kiln_setup(kiln_context *ctx, int n, const float *a, const float *b,
                       kiln_side *s)
{
    s->g            = kiln_graph_new(ctx);
    kiln_tensor *ta = kiln_input(s->g, "a", KILN_F32, KILN_SHAPE(n, n));
    kiln_tensor *tb = kiln_input(s->g, "b", KILN_F32, KILN_SHAPE(n, n));
    s->c            = kiln_matmul(s->g, ta, tb);
    size_t bytes    = (size_t)n * (size_t)n * sizeof(float);
    return kiln_output(s->g, s->c) == KILN_OK && kiln_graph_compile(s->g) == KILN_OK &&
           kiln_tensor_write(ta, a, bytes) == KILN_OK &&
           kiln_tensor_write(tb, b, bytes) == KILN_OK &&
           kiln_graph_run(s->g) == KILN_OK; /* warm-up */
}

enum { MAX_RUNS = 1000 };

static int compare_size(kiln_context *ctx, int n, int runs)
{
    size_t nn = (size_t)n * (size_t)n;
    float *a = malloc(nn * sizeof *a), *b = malloc(nn * sizeof *b);
    float *ck = malloc(nn * sizeof *ck), *cc = malloc(nn * sizeof *cc);
    if (!a || !b || !ck || !cc)
        return fprintf(stderr, "opencl-gemm: out of memory\n"), 1;
    for (size_t i = 0; i < nn; i++) {
        a[i] = (float)((i * 7) % 13) / 13.0f - 0.5f;
        b[i] = (float)((i * 5) % 11) / 11.0f - 0.5f;
    }
    kiln_side ks;
    if (!kiln_setup(ctx, n, a, b, &ks))
        return fprintf(stderr, "opencl-gemm: kiln: %s\n", kiln_last_error()), 1;
    void *cs = bench_clblast.setup(n, n, n, false, false, a, b);
    if (!cs)
        return fprintf(stderr, "opencl-gemm: CLBlast setup failed at %d\n", n), 1;

    static double tk[MAX_RUNS], tc[MAX_RUNS];
    double        flop = 2.0 * (double)n * (double)n * (double)n;
    for (int r = 0; r < runs; r++) {
        double t0 = now();
        if (kiln_graph_run(ks.g) != KILN_OK)
            return fprintf(stderr, "opencl-gemm: kiln: %s\n", kiln_last_error()), 1;
        tk[r] = now() - t0;
        tc[r] = bench_clblast.run(cs);
        if (tc[r] < 0)
            return fprintf(stderr, "opencl-gemm: CLBlast run failed\n"), 1;
    }
    double max_diff = 0.0;
    if (kiln_tensor_read(ks.c, ck, nn * sizeof *ck) == KILN_OK &&
        bench_clblast.result(cs, cc))
        for (size_t i = 0; i < nn; i++)
            max_diff = fmax(max_diff, fabs((double)ck[i] - (double)cc[i]));
    else
        max_diff = NAN;
    double mk = median(tk, runs), mc = median(tc, runs);
    printf("%5d  kiln %8.3f ms %6.1f GFLOP/s (min %8.3f)  clblast %8.3f ms %6.1f "
           "GFLOP/s (min %8.3f)  overhead %+5.1f%% (min %+5.1f%%)  max |diff| %g  "
           "runs %d\n",
           n, 1e3 * mk, flop / mk / 1e9, 1e3 * tk[0], 1e3 * mc, flop / mc / 1e9,
           1e3 * tc[0], 100.0 * (mk / mc - 1.0), 100.0 * (tk[0] / tc[0] - 1.0), max_diff,
           runs);
    bench_clblast.teardown(cs);
    kiln_graph_free(ks.g);
    free(a);
    free(b);
    free(ck);
    free(cc);
    return 0;
}

static const char usage[] =
    "usage: opencl-gemm [-r RUNS] [N ...]\n"
    "SGEMM of square N x N matrices (512 and 1024 by default) through kiln's\n"
    "OpenCL backend and through CLBlast called directly on the same device.\n"
    "  -r, --runs RUNS   timed runs of each side (default 40, at most 1000)\n"
    "  -h, --help        print this and exit\n";

enum { MAX_SIZE = 16384 };

static const struct option long_options[] = {
    {"runs", required_argument, NULL, 'r'},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

/* The runs per side; argv[optind..argc) are the sizes, checked. */
static int parse_args(int argc, char **argv)
{
    cli_init(argv, "opencl-gemm");
    int c, runs = 40;
    while ((c = getopt_long(argc, argv, "r:h", long_options, NULL)) != -1) {
        switch (c) {
        case 'r': runs = (int)cli_parse_int("RUNS", optarg, 1, MAX_RUNS); break;
        case 'h': fputs(usage, stdout); exit(0);
        default: /* getopt said what was wrong */ cli_try_help();
        }
    }
    for (int i = optind; i < argc; i++)
        cli_parse_int("size", argv[i], 1, MAX_SIZE);
    return runs;
}

int main(int argc, char **argv)
{
    int         runs = parse_args(argc, argv);
    const char *spec = getenv("KILN_BACKEND");
    /* kiln first: opening the device applies kiln's CLBlast parameters,
     * which the direct calls then share */
    kiln_context *ctx = kiln_context_new_for(spec && *spec ? spec : "opencl");
    if (!ctx)
        return fprintf(stderr, "opencl-gemm: %s\n", kiln_last_error()), 1;
    char why[256];
    if (!bench_clblast.open(ctx, why, sizeof why))
        return fprintf(stderr, "opencl-gemm: clblast: %s\n", why), 1;
    printf("kiln on %s; CLBlast called directly on the same device\n",
           kiln_context_device(ctx));
    int rc = 0;
    if (optind == argc) {
        rc |= compare_size(ctx, 512, runs);
        rc |= compare_size(ctx, 1024, runs);
    }
    for (int i = optind; i < argc; i++)
        rc |= compare_size(ctx, atoi(argv[i]), runs);
    bench_clblast.close();
    kiln_context_free(ctx);
    return rc;
}
