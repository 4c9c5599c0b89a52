/* tools/bench/ops.c — kiln-bench ops: elementwise ops, reductions, softmax,
 * transpose, mse_loss and training ops (the gradient of sum, relu and max, an
 * Adam step) in GB/s, in and beyond the caches, next to memcpy's bandwidth. */
#include "bench.h"

#include <stdint.h>
#include <stdio.h>

typedef enum op_kind {
    OP_ADD,
    OP_ADD_BIAS,
    OP_RELU,
    OP_SCALE,
    OP_EXP,
    OP_TANH,
    OP_SIGMOID,
    OP_ADD_RELU,
    OP_SUM,
    OP_SUM_AXIS0,
    OP_MAX,
    OP_SOFTMAX,
    OP_TRANSPOSE,
    OP_MSE_LOSS,
    OP_COUNT
} op_kind;

typedef struct op_info {
    const char *name;
    int         streams; /* tensors of the full size read or written */
} op_info;

static const op_info op_infos[OP_COUNT] = {
    [OP_ADD]       = {"add", 3},
    [OP_ADD_BIAS]  = {"add bias [N]", 2},
    [OP_RELU]      = {"relu", 2},
    [OP_SCALE]     = {"scale", 2},
    [OP_EXP]       = {"exp", 2},
    [OP_TANH]      = {"tanh", 2},
    [OP_SIGMOID]   = {"sigmoid", 2},
    [OP_ADD_RELU]  = {"relu(add bias)", 3}, /* x read; sum and relu written */
    [OP_SUM]       = {"sum", 1},
    [OP_SUM_AXIS0] = {"sum axis 0", 1},
    [OP_MAX]       = {"max last axis", 1},
    [OP_SOFTMAX]   = {"softmax", 2},
    [OP_TRANSPOSE] = {"transpose", 2},
    [OP_MSE_LOSS]  = {"mse_loss", 2}, /* x and y read */
};

/* rows x cols of dt; a bias has cols elements. */
static kiln_tensor *build_op(kiln_graph *g, op_kind op, kiln_dtype dt, int64_t rows,
                             int64_t cols, kiln_tensor **extra)
{
    kiln_tensor *x = kiln_input(g, "x", dt, KILN_SHAPE(rows, cols));
    *extra         = NULL;
    switch (op) {
    case OP_ADD:
        *extra = kiln_input(g, "y", dt, KILN_SHAPE(rows, cols));
        return kiln_add(g, x, *extra);
    case OP_ADD_BIAS:
        *extra = kiln_input(g, "b", dt, KILN_SHAPE(cols));
        return kiln_add(g, x, *extra);
    case OP_ADD_RELU: {
        *extra         = kiln_input(g, "b", dt, KILN_SHAPE(cols));
        kiln_tensor *s = kiln_add(g, x, *extra);
        kiln_output(g, s); /* both written, as in a graph that reads the sum */
        return kiln_relu(g, s);
    }
    case OP_RELU: return kiln_relu(g, x);
    case OP_SCALE: return kiln_scale(g, x, 0.5f);
    case OP_EXP: return kiln_exp(g, x);
    case OP_TANH: return kiln_tanh(g, x);
    case OP_SIGMOID: return kiln_sigmoid(g, x);
    case OP_SUM: return kiln_sum(g, x);
    case OP_SUM_AXIS0: return kiln_sum_axis(g, x, 0, false);
    case OP_MAX: return kiln_max(g, x);
    case OP_SOFTMAX: return kiln_softmax(g, x);
    case OP_TRANSPOSE: return kiln_transpose(g, x);
    case OP_MSE_LOSS:
        *extra = kiln_input(g, "y", dt, KILN_SHAPE(rows, cols));
        return kiln_mse_loss(g, x, *extra);
    case OP_COUNT: break;
    }
    return NULL;
}

static bool bench_op(const bench_options *o, kiln_context *ctx, op_kind op, int64_t rows,
                     int64_t cols, bench_stats *st)
{
    double       secs[64];
    kiln_graph  *g = kiln_graph_new(ctx);
    kiln_tensor *extra, *y = build_op(g, op, o->dtype, rows, cols, &extra);
    bool ok = g && bench_compile(g, y) && bench_fill_leaf(kiln_graph_find(g, "x"), 1) &&
              (!extra || bench_fill_leaf(extra, 2)) &&
              bench_time(bench_run_graph, g, o->repeat, o->min_s, secs);
    if (ok)
        *st = bench_rate_stats(secs, o->repeat,
                               (double)kiln_dtype_size(o->dtype) * (double)rows *
                                   (double)cols * op_infos[op].streams);
    kiln_graph_free(g);
    return ok;
}

/* ---- gradient ops ----------------------------------------------------------------- */

/* kiln_backward and the optimisers add their nodes to a graph that computes a
 * loss, so a training op is never a one-op graph. Its figure is the time of a
 * graph with it less that of the same work without it, the two timed in turn
 * in each repeat, over the bytes the op alone reads and writes. */
typedef enum grad_kind { GRAD_SUM, GRAD_RELU, GRAD_MAX, GRAD_ADAM, GRAD_COUNT } grad_kind;

static const op_info grad_infos[GRAD_COUNT] = {
    /* sum(x) with its gradient, less the loss alone: the loss's gradient
     * expanded to x's size (written), which relu backward includes */
    [GRAD_SUM] = {"sum backward", 1},
    /* sum(relu(x)) with its gradient, less the loss alone: the loss's
     * gradient expanded to x's size (written), then relu_grad (that and x
     * read, x's gradient written) */
    [GRAD_RELU] = {"relu backward", 4},
    /* sum(max(x)) over the last axis with its gradient, less the loss
     * alone: max_grad (x read, x's gradient written; the row gradients are
     * 1/cols of it) */
    [GRAD_MAX] = {"max backward", 2},
    /* sum(p) with its gradient and an Adam step, less the same without the
     * step: p, g, m and v read, p, m and v written */
    [GRAD_ADAM] = {"adam step", 7},
};

typedef struct grad_graph {
    kiln_graph  *g;
    kiln_tensor *loss;
} grad_graph;

/* x [rows, cols], a parameter, and loss = sum(relu(x)) (GRAD_RELU) or sum(x),
 * with its gradient, and an Adam step if `step`. NULL after a message. */
static kiln_graph *build_grad(kiln_context *ctx, grad_kind kind, bool step, int64_t rows,
                              int64_t cols, kiln_tensor **loss)
{
    kiln_graph *g = kiln_graph_new(ctx);
    if (!g) {
        fprintf(stderr, "kiln-bench: kiln_graph_new: %s\n", kiln_last_error());
        return NULL;
    }
    kiln_tensor *x = kiln_param(g, "x", KILN_SHAPE(rows, cols));
    *loss          = kiln_sum(g, kind == GRAD_RELU  ? kiln_relu(g, x)
                                 : kind == GRAD_MAX ? kiln_max(g, x)
                                                    : x);
    bool ok = kiln_output(g, *loss) == KILN_OK && kiln_backward(g, *loss) == KILN_OK &&
              (!step || kiln_adam(g, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.01f)) &&
              kiln_graph_compile(g) == KILN_OK;
    if (!ok) {
        fprintf(stderr, "kiln-bench: building the %s graph failed: %s\n",
                grad_infos[kind].name,
                kiln_graph_error(g) ? kiln_graph_error(g) : kiln_last_error());
    } else if (bench_fill_leaf(x, 1)) {
        return g;
    }
    kiln_graph_free(g);
    return NULL;
}

static bool eval_loss(void *arg)
{
    grad_graph *r = arg;
    if (kiln_graph_eval(r->g, r->loss) != KILN_OK) {
        fprintf(stderr, "kiln-bench: kiln_graph_eval: %s\n", kiln_last_error());
        return false;
    }
    return true;
}

static bool bench_grad(const bench_options *o, kiln_context *ctx, grad_kind kind,
                       int64_t rows, int64_t cols, bench_stats *st)
{
    double     secs[64];
    grad_graph with = {NULL, NULL}, without = {NULL, NULL};
    with.g = build_grad(ctx, kind, kind == GRAD_ADAM, rows, cols, &with.loss);
    /* sum, relu: the loss alone is the same graph evaluated up to the loss */
    without = with;
    if (kind == GRAD_ADAM)
        without.g = build_grad(ctx, kind, false, rows, cols, &without.loss);
    bool ok = with.g && without.g;
    for (int r = 0; ok && r < o->repeat; r++) {
        double t_with, t_without;
        ok = bench_time(bench_run_graph, with.g, 1, o->min_s, &t_with) &&
             (kind == GRAD_ADAM
                  ? bench_time(bench_run_graph, without.g, 1, o->min_s, &t_without)
                  : bench_time(eval_loss, &without, 1, o->min_s, &t_without));
        secs[r] = t_with - t_without;
    }
    if (ok)
        *st = bench_rate_stats(secs, o->repeat,
                               4.0 * (double)rows * (double)cols *
                                   grad_infos[kind].streams);
    kiln_graph_free(with.g);
    if (without.g != with.g)
        kiln_graph_free(without.g);
    return ok;
}

/* One row of `ops`: GB/s, and the share of memcpy's for sizes beyond the
 * caches. False if the JSON row could not be made. */
static bool print_rate_row(json_t *results, const char *name, const char *shape,
                           const bench_stats *st, double copy)
{
    if (results) {
        json_t *row = json_pack("{s:s, s:s, s:o}", "op", name, "shape", shape, "gbs",
                                bench_json_stats(st));
        if (row && copy > 0 &&
            json_object_set_new(row, "of_memcpy",
                                bench_json_fixed(st->median / copy, 3))) {
            json_decref(row);
            row = NULL;
        }
        return bench_json_append(results, row);
    }
    printf("%-16s %-12s %8.1f %8.1f %8.1f", name, shape, st->min, st->median, st->max);
    if (copy > 0)
        printf(" %8.0f%%", 100.0 * st->median / copy);
    printf("\n");
    fflush(stdout);
    return true;
}

/* The --json row of memcpy's bandwidth, on one thread and on the backend's. */
static bool memcpy_row(json_t *results, size_t bytes, double copy1, int threads,
                       double copyn)
{
    char key[48];
    snprintf(key, sizeof key, "gbs_%d_threads", threads);
    return bench_json_append(results,
                             json_pack("{s:s, s:I, s:o, s:o}", "op", "memcpy", "bytes",
                                       (json_int_t)bytes, "gbs_1_thread",
                                       bench_json_fixed(copy1, 2), key,
                                       bench_json_fixed(copyn, 2)));
}

int bench_ops(const bench_options *o, kiln_context *ctx, const bench_machine *mach,
              json_t *results)
{
    /* elements: in L2, in L3, and 4x the L3 of this machine (32 MiB) */
    static const int64_t sizes[][2] = {{256, 1024}, {4096, 1024}, {32768, 1024}};
    int                  status     = 0;
    size_t               big        = (size_t)sizes[2][0] * sizes[2][1] * sizeof(float);
    double copy1 = bench_memcpy_gbs(big, 1), copyn = bench_memcpy_gbs(big, mach->threads);
    double copy = copy1 > copyn ? copy1 : copyn;
    if (results) {
        if (!memcpy_row(results, big, copy1, mach->threads, copyn))
            status = 1;
    } else {
        printf("memcpy of %zu MiB: %.1f GB/s on 1 thread, %.1f on %d (read + written)\n",
               big >> 20, copy1, copyn, mach->threads);
        if (o->dtype != KILN_F32)
            printf("%s tensors, computed in f32; the training ops are left out: "
                   "parameters and optimiser state are f32\n",
                   kiln_dtype_name(o->dtype));
        printf("%-16s %-12s %8s %8s %8s %9s   (GB/s read + written, %d repeats)\n", "op",
               "rows x cols", "worst", "median", "best", "/memcpy", o->repeat);
    }
    /* the one-op graphs, then (in f32) the training ops */
    int rows = o->dtype == KILN_F32 ? OP_COUNT + GRAD_COUNT : OP_COUNT;
    for (int row = 0; row < rows; row++) {
        bool        grad = row >= OP_COUNT;
        const char *name = grad ? grad_infos[row - OP_COUNT].name : op_infos[row].name;
        for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
            bench_stats st;
            char        shape[32];
            snprintf(shape, sizeof shape, "%lldx%lld", (long long)sizes[s][0],
                     (long long)sizes[s][1]);
            bool ok = grad
                          ? bench_grad(o, ctx, (grad_kind)(row - OP_COUNT), sizes[s][0],
                                       sizes[s][1], &st)
                          : bench_op(o, ctx, (op_kind)row, sizes[s][0], sizes[s][1], &st);
            if (!ok) {
                status = 1;
                continue;
            }
            /* memcpy's figure is for tensors beyond the caches only */
            if (!print_rate_row(results, name, shape, &st, s == 2 ? copy : 0))
                status = 1;
        }
    }
    return status;
}
