/* tools/bench/main.c — kiln-bench: how fast kiln runs GEMM, convolution and
 * elementwise graphs on the backend KILN_BACKEND selects, through the public
 * API only. This file reads the command line, measures the machine and runs
 * one subcommand (gemm.c, conv.c, ops.c).
 *
 *   kiln-bench gemm [--compare openblas|onednn|clblast] [--threads N] [--repeat N] [--json]
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
#include "../cli.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct subcommand {
    const char *name;
    int (*run)(const bench_options *o, kiln_context *ctx, const bench_machine *m,
               json_t *results);
} subcommand;

/* kiln-bench tune: the device opened with KILN_OPENCL_TUNE=search (main
 * sets it), which searched; then the GEMM figures that result. */
static int bench_tune(const bench_options *o, kiln_context *ctx, const bench_machine *m,
                      json_t *results)
{
    bench_options g = *o;
    if (!g.sizes)
        g.sizes = "1024";
    return bench_gemm(&g, ctx, m, results);
}

static const subcommand subcommands[] = {
    {"gemm", bench_gemm},
    {"conv", bench_conv},
    {"ops", bench_ops},
    {"tune", bench_tune},
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
    "usage: kiln-bench gemm|conv|ops|tune [options]\n"
    "Times kiln graphs on the backend KILN_BACKEND selects (min/median/max of\n"
    "repeated runs after a warm-up).\n"
    "  gemm   matmul: square 128..2048 and the shapes of a batch-64 MLP, in\n"
    "         GFLOP/s and % of the FMA peak measured on this machine\n"
    "  conv   conv2d (implicit GEMM), max_pool2d, and a training step of\n"
    "         kiln-train's cnn first block (conv, relu, pool) in ms\n"
    "  ops    elementwise, reductions, softmax, transpose, mse_loss and\n"
    "         training ops (the gradient of sum, relu and max, an Adam step)\n"
    "         in GB/s, next to memcpy\n"
    "  tune   searches CLBlast's GEMM parameters for the OpenCL device\n"
    "         (KILN_BACKEND=opencl...) for --seconds, keeps the fastest that\n"
    "         verifies for every later process, then times gemm (--sizes,\n"
    "         default 1024)\n"
    "options:\n"
    "  --compare openblas   also run cblas_sgemm (libopenblas.so.0) on the same\n"
    "                       shapes, with as many threads, and print kiln/it\n"
    "  --compare onednn     the same with oneDNN's dnnl_sgemm (libdnnl.so.2)\n"
    "  --compare clblast    also run CLBlastSgemm directly on the OpenCL device\n"
    "                       kiln uses (KILN_BACKEND=opencl...), data resident,\n"
    "                       and print kiln/it: kiln's overhead\n"
    "  --threads N          sets KILN_NUM_THREADS (and the reference's threads)\n"
    "  --dtype f32|f16|bf16 gemm's operands and result (f32 accumulation), with\n"
    "                       kiln's f32 on the same shapes beside it; bf16\n"
    "                       compares with openblas's cblas_sbgemm or onednn's\n"
    "                       dnnl_gemm_bf16bf16f32; ops' tensors (GB/s of them)\n"
    "  --sizes LIST         gemm shapes: N (square) or MxKxN, comma-separated;\n"
    "                       :tn, :nt or :tt after one reads A, B or both\n"
    "                       transposed (64x128x256:nt is g @ w^T)\n"
    "  --repeat N           repeats per figure (default 7, at most 64)\n"
    "  --seconds N          tune: how long to search (default 60)\n"
    "  --json               one JSON object on stdout instead of the table\n"
    "  --version            print kiln's version and exit\n"
    "  --help               print this and exit\n";

enum {
    OPT_COMPARE = 256,
    OPT_SIZES,
    OPT_THREADS,
    OPT_REPEAT,
    OPT_JSON,
    OPT_DTYPE,
    OPT_SECONDS
};

static const struct option long_options[] = {
    {"compare", required_argument, NULL, OPT_COMPARE},
    {"sizes", required_argument, NULL, OPT_SIZES},
    {"threads", required_argument, NULL, OPT_THREADS},
    {"repeat", required_argument, NULL, OPT_REPEAT},
    {"json", no_argument, NULL, OPT_JSON},
    {"dtype", required_argument, NULL, OPT_DTYPE},
    {"seconds", required_argument, NULL, OPT_SECONDS},
    {"version", no_argument, NULL, 'V'},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

/* "kiln-bench SUBCOMMAND [options]"; the options may also come first, as
 * they could before. Returns only when there is something to run. */
static void parse_args(int argc, char **argv, bench_options *o)
{
    memset(o, 0, sizeof *o);
    o->repeat = 7;
    o->min_s  = 0.05;
    /* the subcommand first: getopt then reads what follows it, even when
     * POSIXLY_CORRECT stops it at the first operand */
    if (argc > 1 && find_subcommand(argv[1])) {
        o->what = argv[1];
        argv++;
        argc--;
    }
    cli_init(argv, "kiln-bench");
    int c;
    while ((c = getopt_long(argc, argv, "hV", long_options, NULL)) != -1) {
        switch (c) {
        case 'h': fputs(usage, stdout); exit(0);
        case 'V': printf("kiln-bench %s\n", kiln_version()); exit(0);
        case OPT_JSON: o->json = true; break;
        case OPT_COMPARE: o->compare = optarg; break;
        case OPT_SIZES: o->sizes = optarg; break;
        case OPT_DTYPE:
            if (strcmp(optarg, "f32") == 0)
                o->dtype = KILN_F32;
            else if (strcmp(optarg, "f16") == 0)
                o->dtype = KILN_F16;
            else if (strcmp(optarg, "bf16") == 0)
                o->dtype = KILN_BF16;
            else
                cli_usage_error("--dtype '%s': expected f32, f16 or bf16", optarg);
            break;
        case OPT_THREADS:
            o->threads = (int)cli_parse_int("--threads", optarg, 1, 4096);
            break;
        case OPT_REPEAT: o->repeat = (int)cli_parse_int("--repeat", optarg, 1, 64); break;
        case OPT_SECONDS:
            o->seconds = (int)cli_parse_int("--seconds", optarg, 1, 86400);
            break;
        default: /* getopt said what was wrong */ cli_try_help();
        }
    }
    if (!o->what && optind < argc) {
        o->what = argv[optind++];
        if (!find_subcommand(o->what))
            cli_usage_error("unknown subcommand '%s': expected gemm, conv, ops or tune",
                            o->what);
    }
    if (optind < argc)
        cli_usage_error("unexpected argument '%s'", argv[optind]);
    if (o->dtype != KILN_F32 && o->what && (strcmp(o->what, "conv") == 0 ||
                                            strcmp(o->what, "tune") == 0))
        cli_usage_error("--dtype applies to gemm and ops");
    if (o->seconds && o->what && strcmp(o->what, "tune") != 0)
        cli_usage_error("--seconds applies to tune only");
    if (!o->what) {
        fputs(usage, stderr);
        exit(2);
    }
    if (o->compare && !bench_find_reference(o->compare)) {
        fprintf(stderr, "kiln-bench: --compare '%s': expected", o->compare);
        for (size_t i = 0; bench_references[i]; i++)
            fprintf(stderr, "%s %s", i ? (bench_references[i + 1] ? "," : " or") : "",
                    bench_references[i]->name);
        fprintf(stderr, "\n");
        exit(2);
    }
}

/* The --json document: what ran where, against what peak, and an empty
 * "results" array the subcommand fills. NULL after a message. */
static json_t *json_document(const bench_options *o, const kiln_context *ctx,
                             const bench_machine *m)
{
    json_t *doc = json_pack("{s:s, s:s, s:i, s:o, s:s, s:[]}", "bench", o->what, "device",
                            kiln_context_device(ctx), "threads", m->threads,
                            "peak_gflops", bench_json_fixed(m->peak_gflops, 1),
                            "peak_isa", m->peak_isa, "results");
    if (!doc)
        fprintf(stderr, "kiln-bench: out of memory for the JSON output\n");
    return doc;
}

/* Writes the document to stdout; false after a message. */
static bool json_write(const json_t *doc)
{
    if (json_dumpf(doc, stdout, JSON_INDENT(2) | JSON_REAL_PRECISION(15)) != 0 ||
        putchar('\n') == EOF || fflush(stdout) != 0) {
        fprintf(stderr, "kiln-bench: cannot write the JSON output\n");
        return false;
    }
    return true;
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
    /* no 16-bit arithmetic of its own yet on either backend: each widens */
    m->half_path = strncmp(kiln_context_device(ctx), "cpu", 3) == 0
                       ? "widened to f32 as the GEMM packs it (F16C for f16, a shift for "
                         "bf16), then the f32 FMA kernel, so the f32 peak bounds it"
                       : "widened to f32 on the device, then CLBlast's SGEMM";
    m->threads     = o->threads ? o->threads : device_threads(ctx);
    m->peak_isa    = "avx512";
    m->peak_gflops = bench_fma_peak("avx512", m->threads);
    if (m->peak_gflops == 0) {
        m->peak_isa    = "avx2";
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
    parse_args(argc, argv, &o);
    if (o.threads) {
        char buf[16];
        snprintf(buf, sizeof buf, "%d", o.threads);
        setenv("KILN_NUM_THREADS", buf, 1);
    }
    bool tune = strcmp(o.what, "tune") == 0;
    if (tune) { /* the device searches as it opens; info shows the progress */
        char buf[32];
        snprintf(buf, sizeof buf, "search:%d", o.seconds ? o.seconds : 60);
        setenv("KILN_OPENCL_TUNE", buf, 1);
        setenv("KILN_LOG", "info", 0);
        fprintf(stderr, "kiln-bench: searching CLBlast's GEMM parameters for %s s...\n",
                buf + 7);
    }
    kiln_context *ctx = kiln_context_new();
    if (!ctx) {
        fprintf(stderr, "kiln-bench: no context: %s\n", kiln_last_error());
        return 1;
    }
    if (tune && strncmp(kiln_context_device(ctx), "opencl", 6) != 0) {
        fprintf(stderr,
                "kiln-bench: tune searches the GEMM parameters of an OpenCL device, and "
                "this context is on %s: run it with KILN_BACKEND=opencl (or opencl:N)\n",
                kiln_context_device(ctx));
        kiln_context_free(ctx);
        return 2;
    }
    bench_machine mach;
    measure_machine(ctx, &o, &mach);
    json_t *doc = NULL, *results = NULL;
    if (o.json) {
        doc     = json_document(&o, ctx, &mach);
        results = json_object_get(doc, "results");
        if (!doc) {
            kiln_context_free(ctx);
            return 1;
        }
    } else {
        const kiln_device_report *d;
        size_t                    k, n = kiln_devices(&d);
        printf("kiln-bench %s on %s\n", o.what, kiln_context_device(ctx));
        if (kiln_context_device_index(ctx, &k) == KILN_OK && k < n && d[k].description)
            printf("  %s\n", d[k].description);
    }
    int st = find_subcommand(o.what)->run(&o, ctx, &mach, results);
    if (doc && !json_write(doc))
        st = 1;
    json_decref(doc);
    kiln_context_free(ctx);
    return st;
}
