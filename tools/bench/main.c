/* tools/bench/main.c — kiln-bench: how fast kiln runs GEMM, convolution and
 * elementwise graphs on the backend KILN_BACKEND selects, through the public
 * API only. This file reads the command line, measures the machine and runs
 * one subcommand (gemm.c, conv.c, ops.c).
 *
 *   kiln-bench gemm [--compare openblas|clblast] [--threads N] [--repeat N] [--json]
 *   kiln-bench conv [--threads N] [--repeat N] [--json]
 *   kiln-bench ops  [--threads N] [--repeat N] [--json]
 *
 * Each figure is one graph run (kiln_graph_run of a one-op graph), warmed up,
 * then repeated: min / median / max of the repeats; a training op's figure is
 * the time of its graph less that of the graph without it (ops.c). GEMM is
 * printed next to the FMA peak measured on this machine, elementwise ops next
 * to memcpy's bandwidth; a --compare reference runs the same shapes in the
 * same run, interleaved with kiln's, and its result is checked against kiln's.
 */
#include "bench.h"
#include "compare.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool first_json_row = true;

static void json_begin(const bench_options *o, const kiln_context *ctx,
                       const bench_machine *m)
{
    printf("{\"bench\":\"%s\",\"device\":\"%s\",\"threads\":%d,\"peak_gflops\":%.1f,"
           "\"peak_isa\":\"%s\",\"results\":[", o->what, kiln_context_device(ctx),
           m->threads, m->peak_gflops, m->peak_isa);
}

void bench_json_row_start(void)
{
    printf("%s\n  {", first_json_row ? "" : ",");
    first_json_row = false;
}

typedef struct subcommand {
    const char *name;
    int       (*run)(const bench_options *o, kiln_context *ctx, const bench_machine *m);
} subcommand;

static const subcommand subcommands[] = {
    { "gemm", bench_gemm },
    { "conv", bench_conv },
    { "ops",  bench_ops  },
};

/* The subcommand called `name`, or NULL. */
static const subcommand *find_subcommand(const char *name)
{
    for (size_t i = 0; i < sizeof subcommands / sizeof subcommands[0]; i++)
        if (strcmp(subcommands[i].name, name) == 0)
            return &subcommands[i];
    return NULL;
}

static const char usage[] =
    "usage: kiln-bench gemm|conv|ops [options]\n"
    "Times kiln graphs on the backend KILN_BACKEND selects (min/median/max of\n"
    "repeated runs after a warm-up).\n"
    "  gemm   matmul: square 128..2048 and the shapes of a batch-64 MLP, in\n"
    "         GFLOP/s and % of the FMA peak measured on this machine\n"
    "  conv   conv2d (implicit GEMM) and max_pool2d\n"
    "  ops    elementwise, reductions, softmax and training ops (the gradient\n"
    "         of sum and relu, an Adam step) in GB/s, next to memcpy\n"
    "options:\n"
    "  --compare openblas   also run cblas_sgemm (libopenblas.so.0) on the same\n"
    "                       shapes, with as many threads, and print kiln/it\n"
    "  --compare clblast    also run CLBlastSgemm directly on the OpenCL device\n"
    "                       kiln uses (KILN_BACKEND=opencl...), data resident,\n"
    "                       and print kiln/it: kiln's overhead\n"
    "  --threads N          sets KILN_NUM_THREADS (and the reference's threads)\n"
    "  --sizes LIST         gemm shapes: N (square) or MxKxN, comma-separated;\n"
    "                       :tn, :nt or :tt after one reads A, B or both\n"
    "                       transposed (64x128x256:nt is g @ w^T)\n"
    "  --repeat N           repeats per figure (default 7, at most 64)\n"
    "  --json               one JSON object on stdout instead of the table\n";

static int parse_args(int argc, char **argv, bench_options *o)
{
    memset(o, 0, sizeof *o);
    o->repeat = 7;
    o->min_s = 0.05;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            fputs(usage, stdout);
            exit(0);
        } else if (strcmp(a, "--json") == 0) {
            o->json = true;
        } else if (strcmp(a, "--compare") == 0 && v) {
            o->compare = v;
            i++;
        } else if (strcmp(a, "--sizes") == 0 && v) {
            o->sizes = v;
            i++;
        } else if (strcmp(a, "--threads") == 0 && v && atoi(v) > 0) {
            o->threads = atoi(v);
            i++;
        } else if (strcmp(a, "--repeat") == 0 && v && atoi(v) > 0 && atoi(v) <= 64) {
            o->repeat = atoi(v);
            i++;
        } else if (!o->what && find_subcommand(a)) {
            o->what = a;
        } else {
            fprintf(stderr, "kiln-bench: unexpected argument '%s'\n%s", a, usage);
            return 2;
        }
    }
    if (!o->what) {
        fputs(usage, stderr);
        return 2;
    }
    if (o->compare && !bench_find_reference(o->compare)) {
        fprintf(stderr, "kiln-bench: unknown --compare '%s' (known:", o->compare);
        for (size_t i = 0; bench_references[i]; i++)
            fprintf(stderr, " %s", bench_references[i]->name);
        fprintf(stderr, ")\n");
        return 2;
    }
    return 0;
}

/* The thread count in a device name such as "AVX-512 CPU, 2 threads". */
static int device_threads(const kiln_context *ctx)
{
    const char *label = kiln_context_device(ctx), *p = strstr(label, " thread");
    while (p && p > label && p[-1] >= '0' && p[-1] <= '9')
        p--;
    return p && atoi(p) > 0 ? atoi(p) : 1;
}

static void measure_machine(kiln_context *ctx, const bench_options *o, bench_machine *m)
{
    m->threads = o->threads ? o->threads : device_threads(ctx);
    m->peak_isa = "avx512";
    m->peak_gflops = bench_fma_peak("avx512", m->threads);
    if (m->peak_gflops == 0) {
        m->peak_isa = "avx2";
        m->peak_gflops = bench_fma_peak("avx2", m->threads);
    }
    if (o->json || !o->what || strcmp(o->what, "ops") == 0)
        return;
    printf("peak fp32 FMA measured here: ");
    if (m->peak_gflops == 0) {
        printf("unknown on this CPU\n");
        return;
    }
    printf("%s %.1f GFLOP/s on %d thread%s", m->peak_isa, m->peak_gflops, m->threads,
           m->threads == 1 ? "" : "s");
    if (strcmp(m->peak_isa, "avx512") == 0)
        printf(" (avx2 %.1f)", bench_fma_peak("avx2", m->threads));
    printf("\n");
}

int main(int argc, char **argv)
{
    bench_options o;
    int st = parse_args(argc, argv, &o);
    if (st)
        return st;
    if (o.threads) {
        char buf[16];
        snprintf(buf, sizeof buf, "%d", o.threads);
        setenv("KILN_NUM_THREADS", buf, 1);
    }
    kiln_context *ctx = kiln_context_new();
    if (!ctx) {
        fprintf(stderr, "kiln-bench: no context: %s\n", kiln_last_error());
        return 1;
    }
    bench_machine mach;
    measure_machine(ctx, &o, &mach);
    if (o.json) {
        json_begin(&o, ctx, &mach);
    } else {
        const kiln_device_report *d;
        size_t k, n = kiln_devices(&d);
        printf("kiln-bench %s on %s\n", o.what, kiln_context_device(ctx));
        if (kiln_select(getenv("KILN_BACKEND"), &k) == KILN_OK && k < n &&
            d[k].description)
            printf("  %s\n", d[k].description);
    }
    st = find_subcommand(o.what)->run(&o, ctx, &mach);
    if (o.json)
        printf("\n]}\n");
    kiln_context_free(ctx);
    return st;
}
