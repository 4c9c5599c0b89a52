/* tools/bench/conv.c — kiln-bench conv: conv2d (implicit GEMM) in GFLOP/s on
 * the layers of small CNNs and a ResNet, max_pool2d in GB/s, and the first
 * block of kiln-train's cnn (conv, relu, max-pool) forward and backward, in
 * milliseconds a step. */
#include "bench.h"

#include <stdio.h>

typedef struct conv_shape {
    const char *what;
    int         n, c, h, w, o, k, stride, pad;
} conv_shape;

static const conv_shape conv_shapes[] = {
    {"mnist conv1", 64, 1, 28, 28, 32, 3, 1, 1},
    {"mnist conv2", 64, 32, 14, 14, 64, 3, 1, 1},
    {"cifar conv", 32, 64, 16, 16, 64, 3, 1, 1},
    {"resnet 3x3", 1, 64, 56, 56, 64, 3, 1, 1},
    {"resnet 1x1", 1, 256, 56, 56, 64, 1, 1, 0},
    {"resnet stem", 1, 3, 224, 224, 64, 7, 2, 3},
    {"5x5 stride 2", 8, 16, 64, 64, 32, 5, 2, 2},
};

static bool bench_conv_shape(const bench_options *o, kiln_context *ctx,
                             const conv_shape *s, bench_stats *st, double *work)
{
    double       secs[64];
    int          oh = (s->h + 2 * s->pad - s->k) / s->stride + 1;
    int          ow = (s->w + 2 * s->pad - s->k) / s->stride + 1;
    kiln_graph  *g  = kiln_graph_new(ctx);
    kiln_tensor *x  = kiln_input(g, "x", KILN_F32, KILN_SHAPE(s->n, s->c, s->h, s->w));
    kiln_tensor *w  = kiln_input(g, "w", KILN_F32, KILN_SHAPE(s->o, s->c, s->k, s->k));
    kiln_tensor *b  = kiln_input(g, "b", KILN_F32, KILN_SHAPE(s->o));
    kiln_tensor *y  = kiln_conv2d(g, x, w, b, s->stride, s->pad);
    bool         ok = g && bench_compile(g, y) && bench_fill_leaf(x, 1) &&
              bench_fill_leaf(w, 2) && bench_fill_leaf(b, 3) &&
              bench_time(bench_run_graph, g, o->repeat, o->min_s, secs);
    *work = 2.0 * s->n * s->o * (double)oh * ow * s->c * s->k * s->k;
    if (ok)
        *st = bench_rate_stats(secs, o->repeat, *work);
    kiln_graph_free(g);
    return ok;
}

static bool bench_pool_shape(const bench_options *o, kiln_context *ctx, bench_stats *st)
{
    double       secs[64];
    kiln_graph  *g  = kiln_graph_new(ctx);
    kiln_tensor *x  = kiln_input(g, "x", KILN_F32, KILN_SHAPE(64, 32, 28, 28));
    kiln_tensor *y  = kiln_max_pool2d(g, x, 2, 2);
    bool         ok = g && bench_compile(g, y) && bench_fill_leaf(x, 1) &&
              bench_time(bench_run_graph, g, o->repeat, o->min_s, secs);
    if (ok) /* bytes read and written */
        *st = bench_rate_stats(secs, o->repeat, 4.0 * 64 * 32 * (28 * 28 + 14 * 14));
    kiln_graph_free(g);
    return ok;
}

/* Training steps, in ms: kiln-train --model cnn's first block on a batch of
 * 64, loss = sum(max_pool2d(relu(conv2d(x, w, b))), 2) and the gradients of
 * w and b (x is data: no gradient of its own); and a second convolution
 * alone, loss = sum(conv2d(x, w, b)), whose x has a gradient as well
 * (CONV2D_GRAD_INPUT). */
typedef struct block_shape {
    const char *what, *label;
    int         n, c, hw, o;
    bool        first; /* relu and pool after it, x data */
} block_shape;

static const block_shape block_shapes[] = {
    {"cnn block", "conv1, relu, pool; fwd+bwd", 64, 1, 28, 32, true},
    {"conv2 fwd+bwd", "64x32x14x14 -> 64, dx dw db", 64, 32, 14, 64, false},
};

static bool bench_block(const bench_options *o, kiln_context *ctx, const block_shape *s,
                        bench_stats *st)
{
    double       secs[64];
    kiln_graph  *g = kiln_graph_new(ctx);
    kiln_tensor *x = s->first ? kiln_input(g, "x", KILN_F32, KILN_SHAPE(s->n, s->c, s->hw, s->hw))
                              : kiln_param(g, "x", KILN_SHAPE(s->n, s->c, s->hw, s->hw));
    kiln_tensor *w = kiln_param(g, "w", KILN_SHAPE(s->o, s->c, 3, 3));
    kiln_tensor *b = kiln_param(g, "b", KILN_SHAPE(s->o));
    kiln_tensor *y = kiln_conv2d(g, x, w, b, 1, 1);
    if (s->first)
        y = kiln_max_pool2d(g, kiln_relu(g, y), 2, 2);
    kiln_tensor *loss = kiln_sum(g, y);
    bool ok = g && loss && kiln_output(g, loss) == KILN_OK &&
              kiln_backward(g, loss) == KILN_OK && kiln_graph_compile(g) == KILN_OK;
    if (!ok)
        fprintf(stderr, "kiln-bench: building the %s graph failed: %s\n", s->what,
                g && kiln_graph_error(g) ? kiln_graph_error(g) : kiln_last_error());
    ok = ok && bench_fill_leaf(x, 1) && bench_fill_leaf(w, 2) && bench_fill_leaf(b, 3) &&
         bench_time(bench_run_graph, g, o->repeat, o->min_s, secs);
    if (ok) {
        for (int r = 0; r < o->repeat; r++)
            secs[r] *= 1e3;
        *st = bench_stats_of(secs, o->repeat);
    }
    kiln_graph_free(g);
    return ok;
}

int bench_conv(const bench_options *o, kiln_context *ctx, const bench_machine *mach,
               json_t *results)
{
    int status = 0;
    if (!results)
        printf("%-14s %-30s %8s %8s %8s %7s   (GFLOP/s, %d repeats)\n", "conv2d",
               "NxCxHxW -> O, k, stride, pad", "worst", "median", "best", "%peak",
               o->repeat);
    for (size_t i = 0; i < sizeof conv_shapes / sizeof conv_shapes[0]; i++) {
        const conv_shape *s = &conv_shapes[i];
        bench_stats       st;
        double            work;
        char              label[64];
        snprintf(label, sizeof label, "%dx%dx%dx%d -> %d, %dx%d, %d, %d", s->n, s->c,
                 s->h, s->w, s->o, s->k, s->k, s->stride, s->pad);
        if (!bench_conv_shape(o, ctx, s, &st, &work)) {
            status = 1;
            continue;
        }
        double pct = mach->peak_gflops > 0 ? 100.0 * st.median / mach->peak_gflops : 0;
        if (results) {
            json_t *row = json_pack("{s:s, s:s, s:s, s:o, s:o}", "op", "conv2d", "name",
                                    s->what, "shape", label, "gflops",
                                    bench_json_stats(&st), "percent_of_peak",
                                    bench_json_fixed(pct, 1));
            if (!bench_json_append(results, row))
                status = 1;
        } else {
            printf("%-14s %-30s %8.1f %8.1f %8.1f %6.1f%%\n", s->what, label, st.min,
                   st.median, st.max, pct);
        }
        fflush(stdout);
    }
    bench_stats st;
    if (!bench_pool_shape(o, ctx, &st))
        return 1;
    if (results) {
        json_t *row = json_pack("{s:s, s:s, s:o}", "op", "max_pool2d", "shape",
                                "64x32x28x28, 2x2, stride 2", "gbs",
                                bench_json_stats(&st));
        if (!bench_json_append(results, row))
            status = 1;
    } else {
        printf("%-14s %-30s %8.1f %8.1f %8.1f  GB/s\n", "max_pool2d",
               "64x32x28x28, 2x2, stride 2", st.min, st.median, st.max);
    }
    fflush(stdout);
    for (size_t i = 0; i < sizeof block_shapes / sizeof block_shapes[0]; i++) {
        const block_shape *s = &block_shapes[i];
        if (!bench_block(o, ctx, s, &st)) {
            status = 1;
            continue;
        }
        if (results) {
            json_t *row = json_pack("{s:s, s:s, s:o}", "op", s->what, "shape", s->label,
                                    "ms", bench_json_stats(&st));
            if (!bench_json_append(results, row))
                status = 1;
        } else {
            /* the best is the least time: worst and best swap */
            printf("%-14s %-30s %8.2f %8.2f %8.2f  ms a step\n", s->what, s->label,
                   st.max, st.median, st.min);
        }
        fflush(stdout);
    }
    return status;
}
