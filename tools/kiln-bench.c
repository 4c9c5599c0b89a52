/* kiln-bench — how fast kiln runs GEMM, convolution and elementwise graphs on
 * the backend KILN_BACKEND selects, through the public API only.
 *
 *   kiln-bench gemm [--compare openblas|clblast] [--threads N] [--repeat N] [--json]
 *   kiln-bench conv [--threads N] [--repeat N] [--json]
 *   kiln-bench ops  [--threads N] [--repeat N] [--json]
 *
 * Each figure is one graph run (kiln_graph_run of a one-op graph), warmed up,
 * then repeated: min / median / max of the repeats; a training op's figure is
 * the time of its graph less that of the graph without it (bench_grad). GEMM is printed next to
 * the FMA peak measured on this machine, elementwise ops next to memcpy's
 * bandwidth; a --compare reference runs the same shapes in the same run,
 * interleaved with kiln's, and its result is checked against kiln's.
 */
#include <kiln/kiln.h>

#include "bench/bench.h"
#include "bench/compare.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int bench_reference_threads;

/* Every reference kiln-bench knows, by --compare name. */
static const bench_reference *const references[] = {
    &bench_openblas,
#ifdef KILN_BENCH_CLBLAST
    &bench_clblast,
#endif
};

typedef struct options {
    const char *what;       /* gemm, conv, ops */
    const char *compare;    /* NULL or a reference's name */
    const char *sizes;      /* NULL or "1024,2048x64x784" */
    int         threads;    /* 0: the backend's default */
    int         repeat;
    bool        json;
    double      min_s;      /* time per repeat */
} options;

/* What every figure is printed against. */
typedef struct machine {
    int    threads;          /* the backend's threads                   */
    double peak_gflops;      /* FMA peak of the widest ISA, that many   */
    const char *peak_isa;
} machine;

static bool first_json_row = true;

static void json_begin(const options *o, const kiln_context *ctx, const machine *m)
{
    printf("{\"bench\":\"%s\",\"device\":\"%s\",\"threads\":%d,\"peak_gflops\":%.1f,"
           "\"peak_isa\":\"%s\",\"results\":[", o->what, kiln_context_device(ctx),
           m->threads, m->peak_gflops, m->peak_isa);
}

static void json_row_start(void)
{
    printf("%s\n  {", first_json_row ? "" : ",");
    first_json_row = false;
}

/* ---- graphs ------------------------------------------------------------------ */

typedef struct graph_run {
    kiln_graph *g;
} graph_run;

static bool run_graph(void *arg)
{
    graph_run *r = arg;
    if (kiln_graph_run(r->g) != KILN_OK) {
        fprintf(stderr, "kiln-bench: kiln_graph_run: %s\n", kiln_last_error());
        return false;
    }
    return true;
}

static float *random_floats(size_t n, unsigned seed)
{
    float *x = malloc((n ? n : 1) * sizeof *x);
    if (!x)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        x[i] = (float)((seed >> 8) & 0xffff) / 32768.0f - 1.0f;
    }
    return x;
}

/* Writes random data to a leaf; false with a message on failure. */
static bool fill_leaf(kiln_tensor *t, unsigned seed)
{
    size_t n = (size_t)kiln_tensor_numel(t);
    float *x = random_floats(n, seed);
    bool ok = x && kiln_tensor_write(t, x, n * sizeof *x) == KILN_OK;
    if (!ok)
        fprintf(stderr, "kiln-bench: cannot fill an input: %s\n",
                x ? kiln_last_error() : "out of memory");
    free(x);
    return ok;
}

static bool compile_graph(kiln_graph *g, kiln_tensor *out)
{
    if (kiln_output(g, out) != KILN_OK || kiln_graph_compile(g) != KILN_OK) {
        fprintf(stderr, "kiln-bench: building the graph failed: %s\n",
                kiln_graph_error(g) ? kiln_graph_error(g) : kiln_last_error());
        return false;
    }
    return true;
}

/* ---- gemm ----------------------------------------------------------------------- */

/* C [M,N] = op(A) [M,K] @ op(B) [K,N]; ta: A is stored [K,M] (read
 * transposed), tb: B is stored [N,K]. */
typedef struct gemm_shape {
    int  m, k, n;
    bool ta, tb;
} gemm_shape;

/* Square sizes, and the products of a batch-64 MLP 784-256-128-10 as
 * training runs them: forward x @ w, then for each layer the weight's
 * gradient x^T @ g and the input's g @ w^T (none for the first layer, whose
 * input needs no gradient); then the CNN's dense layer 6272-128. */
static const gemm_shape default_gemm_shapes[] = {
    {128, 128, 128, false, false},   {256, 256, 256, false, false},
    {512, 512, 512, false, false},   {1024, 1024, 1024, false, false},
    {2048, 2048, 2048, false, false},
    {64, 784, 256, false, false},    {64, 256, 128, false, false},
    {64, 128, 10, false, false},
    {784, 64, 256, true, false},     {256, 64, 128, true, false},
    {128, 64, 10, true, false},
    {64, 128, 256, false, true},     {64, 10, 128, false, true},
    {64, 6272, 128, false, false},   {6272, 64, 128, true, false},
    {64, 128, 6272, false, true},
};

typedef struct ref_run {
    const bench_reference *ref;
    void                  *state;
} ref_run;

static bool run_reference(void *arg)
{
    ref_run *r = arg;
    return r->ref->run(r->state) >= 0.0;
}

/* max |x - y| / max |y|: the error of x relative to y's scale. */
static double max_rel_error(const float *x, const float *y, size_t n)
{
    double err = 0.0, scale = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)x[i] - (double)y[i]);
        err = d > err ? d : err;
        scale = fabs((double)y[i]) > scale ? fabs((double)y[i]) : scale;
    }
    return scale > 0 ? err / scale : err;
}

typedef struct gemm_result {
    bench_stats kiln;          /* GFLOP/s of each repeat: worst, median, best */
    bench_stats ref;
    double      rel_error;
    bool        have_ref;
} gemm_result;

/* GFLOP/s of each repeat from its seconds, as stats. */
static bench_stats rate_stats(const double *seconds, int n, double work)
{
    double rate[64];
    for (int i = 0; i < n; i++)
        rate[i] = work / seconds[i] / 1e9;
    return bench_stats_of(rate, n);
}

static bool gemm_reference(const options *o, const bench_reference *ref,
                           const gemm_shape *s, const float *a, const float *b,
                           const float *c_kiln, gemm_result *res, double *secs)
{
    void *state = ref->setup(s->m, s->n, s->k, s->ta, s->tb, a, b);
    if (!state) {
        fprintf(stderr, "kiln-bench: %s: setup failed for %dx%dx%d\n", ref->name, s->m,
                s->k, s->n);
        return false;
    }
    ref_run rr = { ref, state };
    size_t nc = (size_t)s->m * (size_t)s->n;
    float *c = malloc((nc ? nc : 1) * sizeof *c);
    bool ok = c && bench_time(run_reference, &rr, o->repeat, o->min_s, secs) &&
              ref->result(state, c);
    if (ok) {
        res->ref = rate_stats(secs, o->repeat, 2.0 * s->m * s->n * (double)s->k);
        res->rel_error = max_rel_error(c_kiln, c, nc);
        res->have_ref = true;
    }
    free(c);
    ref->teardown(state);
    return ok;
}

static bool bench_gemm_shape(const options *o, kiln_context *ctx,
                             const bench_reference *ref, const gemm_shape *s,
                             gemm_result *res)
{
    bool ok = false;
    double secs[64];
    size_t na = (size_t)s->m * s->k, nb = (size_t)s->k * s->n, nc = (size_t)s->m * s->n;
    float *a = random_floats(na, 1), *b = random_floats(nb, 2);
    float *c = malloc((nc ? nc : 1) * sizeof *c);
    kiln_graph *g = kiln_graph_new(ctx);
    kiln_tensor *ta = s->ta ? kiln_input(g, "a", KILN_F32, KILN_SHAPE(s->k, s->m))
                            : kiln_input(g, "a", KILN_F32, KILN_SHAPE(s->m, s->k));
    kiln_tensor *tb = s->tb ? kiln_input(g, "b", KILN_F32, KILN_SHAPE(s->n, s->k))
                            : kiln_input(g, "b", KILN_F32, KILN_SHAPE(s->k, s->n));
    kiln_tensor *tc = kiln_matmul_t(g, ta, tb, s->ta, s->tb);
    memset(res, 0, sizeof *res);
    if (!a || !b || !c || !g || !compile_graph(g, tc) ||
        kiln_tensor_write(ta, a, na * 4) != KILN_OK ||
        kiln_tensor_write(tb, b, nb * 4) != KILN_OK)
        goto out;
    graph_run run = { g };
    double work = 2.0 * s->m * s->n * (double)s->k;
    if (!bench_time(run_graph, &run, o->repeat, o->min_s, secs) ||
        kiln_tensor_read(tc, c, nc * 4) != KILN_OK)
        goto out;
    res->kiln = rate_stats(secs, o->repeat, work);
    ok = !ref || gemm_reference(o, ref, s, a, b, c, res, secs);
    /* the second kiln measurement, after the reference's: the best of both */
    if (ok && ref && bench_time(run_graph, &run, o->repeat, o->min_s, secs)) {
        bench_stats again = rate_stats(secs, o->repeat, work);
        if (again.median > res->kiln.median)
            res->kiln = again;
    }
out:
    if (!ok && g && kiln_graph_error(g))
        fprintf(stderr, "kiln-bench: %s\n", kiln_graph_error(g));
    kiln_graph_free(g);
    free(a);
    free(b);
    free(c);
    return ok;
}

/* "1024" is square; "64x784x256" is M x K x N; a suffix ":tn", ":nt" or
 * ":tt" reads A and/or B transposed (":nn" is the default). */
static int parse_gemm_sizes(const char *list, gemm_shape *out, int cap)
{
    int n = 0;
    char *copy = strdup(list), *save = NULL;
    for (char *tok = strtok_r(copy, ",", &save); tok && n < cap;
         tok = strtok_r(NULL, ",", &save)) {
        int m, k, nn, used = 0;
        char *trans = strchr(tok, ':');
        bool ta = false, tb = false, good = true;
        if (trans) {
            *trans++ = '\0';
            good = strlen(trans) == 2 && strchr("nt", trans[0]) && strchr("nt", trans[1]);
            ta = trans[0] == 't';
            tb = trans[1] == 't';
        }
        if (good && sscanf(tok, "%dx%dx%d%n", &m, &k, &nn, &used) == 3 &&
            tok[used] == '\0' && m > 0 && k > 0 && nn > 0)
            out[n++] = (gemm_shape){ m, k, nn, ta, tb };
        else if (good && sscanf(tok, "%d%n", &m, &used) == 1 && tok[used] == '\0' && m > 0)
            out[n++] = (gemm_shape){ m, m, m, ta, tb };
        else {
            fprintf(stderr, "kiln-bench: bad size '%s%s%s' (want N or MxKxN, optionally "
                    "followed by :nn, :tn, :nt or :tt)\n", tok, trans ? ":" : "",
                    trans ? trans : "");
            n = -1;
            break;
        }
    }
    free(copy);
    return n;
}

/* The reference --compare names, or NULL for none or an unknown one. */
static const bench_reference *find_reference(const char *name)
{
    for (size_t i = 0; name && i < sizeof references / sizeof references[0]; i++)
        if (strcmp(references[i]->name, name) == 0)
            return references[i];
    return NULL;
}

static int bench_gemm(const options *o, kiln_context *ctx, const machine *mach)
{
    gemm_shape shapes[64];
    int n = sizeof default_gemm_shapes / sizeof default_gemm_shapes[0];
    memcpy(shapes, default_gemm_shapes, sizeof default_gemm_shapes);
    if (o->sizes && (n = parse_gemm_sizes(o->sizes, shapes, 64)) < 0)
        return 2;

    const bench_reference *ref = find_reference(o->compare);
    char why[256] = "";
    if (ref) {
        bench_reference_threads = mach->threads;
        if (!ref->open(why, sizeof why)) {
            fprintf(o->json ? stderr : stdout, "%s: not found, no comparison: %s\n",
                    ref->name, why);
            ref = NULL;
        }
    }
    if (!o->json) {
        printf("%-16s %8s %8s %8s %7s", "MxKxN", "worst", "median", "best", "%peak");
        if (ref)
            printf(" %10s %9s %9s", ref->name, "ratio", "rel.err");
        printf("   (GFLOP/s, %d repeats)\n", o->repeat);
    }
    int status = 0;
    for (int i = 0; i < n; i++) {
        gemm_result r;
        char label[48];
        snprintf(label, sizeof label, "%dx%dx%d%s", shapes[i].m, shapes[i].k, shapes[i].n,
                 shapes[i].ta ? (shapes[i].tb ? ":tt" : ":tn")
                              : (shapes[i].tb ? ":nt" : ""));
        if (!bench_gemm_shape(o, ctx, ref, &shapes[i], &r)) {
            status = 1;
            continue;
        }
        double pct = mach->peak_gflops > 0 ? 100.0 * r.kiln.median / mach->peak_gflops : 0;
        if (o->json) {
            json_row_start();
            printf("\"shape\":\"%s\",\"m\":%d,\"k\":%d,\"n\":%d,\"ta\":%s,\"tb\":%s,"
                   "\"gflops\":{\"min\":%.2f,\"median\":%.2f,\"max\":%.2f},"
                   "\"percent_of_peak\":%.1f", label, shapes[i].m, shapes[i].k, shapes[i].n,
                   shapes[i].ta ? "true" : "false", shapes[i].tb ? "true" : "false",
                   r.kiln.min, r.kiln.median, r.kiln.max, pct);
            if (r.have_ref)
                printf(",\"reference\":{\"name\":\"%s\",\"gflops\":{\"min\":%.2f,"
                       "\"median\":%.2f,\"max\":%.2f},\"ratio\":%.3f,\"max_rel_error\":%.2e}",
                       ref->name, r.ref.min, r.ref.median, r.ref.max,
                       r.kiln.median / r.ref.median, r.rel_error);
            printf("}");
        } else {
            printf("%-16s %8.1f %8.1f %8.1f %6.1f%%", label, r.kiln.min, r.kiln.median,
                   r.kiln.max, pct);
            if (r.have_ref)
                printf(" %10.1f %8.2fx %9.1e", r.ref.median, r.kiln.median / r.ref.median,
                       r.rel_error);
            printf("\n");
        }
        fflush(stdout);
    }
    if (ref)
        ref->close();
    return status;
}

/* ---- conv ------------------------------------------------------------------------ */

typedef struct conv_shape {
    const char *what;
    int n, c, h, w, o, k, stride, pad;
} conv_shape;

static const conv_shape conv_shapes[] = {
    {"mnist conv1",   64,  1, 28, 28, 32, 3, 1, 1},
    {"mnist conv2",   64, 32, 14, 14, 64, 3, 1, 1},
    {"cifar conv",    32, 64, 16, 16, 64, 3, 1, 1},
    {"resnet 3x3",     1, 64, 56, 56, 64, 3, 1, 1},
    {"resnet 1x1",     1, 256, 56, 56, 64, 1, 1, 0},
    {"resnet stem",    1,  3, 224, 224, 64, 7, 2, 3},
    {"5x5 stride 2",   8, 16, 64, 64, 32, 5, 2, 2},
};

static bool bench_conv_shape(const options *o, kiln_context *ctx, const conv_shape *s,
                             bench_stats *st, double *work)
{
    double secs[64];
    int oh = (s->h + 2 * s->pad - s->k) / s->stride + 1;
    int ow = (s->w + 2 * s->pad - s->k) / s->stride + 1;
    kiln_graph *g = kiln_graph_new(ctx);
    kiln_tensor *x = kiln_input(g, "x", KILN_F32, KILN_SHAPE(s->n, s->c, s->h, s->w));
    kiln_tensor *w = kiln_input(g, "w", KILN_F32, KILN_SHAPE(s->o, s->c, s->k, s->k));
    kiln_tensor *b = kiln_input(g, "b", KILN_F32, KILN_SHAPE(s->o));
    kiln_tensor *y = kiln_conv2d(g, x, w, b, s->stride, s->pad);
    graph_run run = { g };
    bool ok = g && compile_graph(g, y) && fill_leaf(x, 1) && fill_leaf(w, 2) &&
              fill_leaf(b, 3) && bench_time(run_graph, &run, o->repeat, o->min_s, secs);
    *work = 2.0 * s->n * s->o * (double)oh * ow * s->c * s->k * s->k;
    if (ok)
        *st = rate_stats(secs, o->repeat, *work);
    kiln_graph_free(g);
    return ok;
}

static bool bench_pool_shape(const options *o, kiln_context *ctx, bench_stats *st)
{
    double secs[64];
    kiln_graph *g = kiln_graph_new(ctx);
    kiln_tensor *x = kiln_input(g, "x", KILN_F32, KILN_SHAPE(64, 32, 28, 28));
    kiln_tensor *y = kiln_max_pool2d(g, x, 2, 2);
    graph_run run = { g };
    bool ok = g && compile_graph(g, y) && fill_leaf(x, 1) &&
              bench_time(run_graph, &run, o->repeat, o->min_s, secs);
    if (ok)   /* bytes read and written */
        *st = rate_stats(secs, o->repeat, 4.0 * 64 * 32 * (28 * 28 + 14 * 14));
    kiln_graph_free(g);
    return ok;
}

static int bench_conv(const options *o, kiln_context *ctx, const machine *mach)
{
    int status = 0;
    if (!o->json)
        printf("%-14s %-30s %8s %8s %8s %7s   (GFLOP/s, %d repeats)\n", "conv2d",
               "NxCxHxW -> O, k, stride, pad", "worst", "median", "best", "%peak",
               o->repeat);
    for (size_t i = 0; i < sizeof conv_shapes / sizeof conv_shapes[0]; i++) {
        const conv_shape *s = &conv_shapes[i];
        bench_stats st;
        double work;
        char label[64];
        snprintf(label, sizeof label, "%dx%dx%dx%d -> %d, %dx%d, %d, %d", s->n, s->c,
                 s->h, s->w, s->o, s->k, s->k, s->stride, s->pad);
        if (!bench_conv_shape(o, ctx, s, &st, &work)) {
            status = 1;
            continue;
        }
        double pct = mach->peak_gflops > 0 ? 100.0 * st.median / mach->peak_gflops : 0;
        if (o->json) {
            json_row_start();
            printf("\"op\":\"conv2d\",\"name\":\"%s\",\"shape\":\"%s\",\"gflops\":"
                   "{\"min\":%.2f,\"median\":%.2f,\"max\":%.2f},\"percent_of_peak\":%.1f}",
                   s->what, label, st.min, st.median, st.max, pct);
        } else {
            printf("%-14s %-30s %8.1f %8.1f %8.1f %6.1f%%\n", s->what, label, st.min,
                   st.median, st.max, pct);
        }
        fflush(stdout);
    }
    bench_stats st;
    if (!bench_pool_shape(o, ctx, &st))
        return 1;
    if (o->json) {
        json_row_start();
        printf("\"op\":\"max_pool2d\",\"shape\":\"64x32x28x28, 2x2, stride 2\","
               "\"gbs\":{\"min\":%.2f,\"median\":%.2f,\"max\":%.2f}}", st.min, st.median,
               st.max);
    } else {
        printf("%-14s %-30s %8.1f %8.1f %8.1f  GB/s\n", "max_pool2d",
               "64x32x28x28, 2x2, stride 2", st.min, st.median, st.max);
    }
    return status;
}

/* ---- ops ---------------------------------------------------------------------------- */

typedef enum op_kind {
    OP_ADD, OP_ADD_BIAS, OP_RELU, OP_SCALE, OP_EXP, OP_TANH, OP_SIGMOID,
    OP_ADD_RELU, OP_SUM, OP_SUM_AXIS0, OP_MAX, OP_SOFTMAX, OP_COUNT
} op_kind;

typedef struct op_info {
    const char *name;
    int         streams;   /* tensors of the full size read or written */
} op_info;

static const op_info op_infos[OP_COUNT] = {
    [OP_ADD]       = {"add", 3},
    [OP_ADD_BIAS]  = {"add bias [N]", 2},
    [OP_RELU]      = {"relu", 2},
    [OP_SCALE]     = {"scale", 2},
    [OP_EXP]       = {"exp", 2},
    [OP_TANH]      = {"tanh", 2},
    [OP_SIGMOID]   = {"sigmoid", 2},
    [OP_ADD_RELU]  = {"relu(add bias)", 3},   /* x read; sum and relu written */
    [OP_SUM]       = {"sum", 1},
    [OP_SUM_AXIS0] = {"sum axis 0", 1},
    [OP_MAX]       = {"max last axis", 1},
    [OP_SOFTMAX]   = {"softmax", 2},
};

/* rows x cols of f32; a bias has cols elements. */
static kiln_tensor *build_op(kiln_graph *g, op_kind op, int64_t rows, int64_t cols,
                             kiln_tensor **extra)
{
    kiln_tensor *x = kiln_input(g, "x", KILN_F32, KILN_SHAPE(rows, cols));
    *extra = NULL;
    switch (op) {
    case OP_ADD:
        *extra = kiln_input(g, "y", KILN_F32, KILN_SHAPE(rows, cols));
        return kiln_add(g, x, *extra);
    case OP_ADD_BIAS:
        *extra = kiln_input(g, "b", KILN_F32, KILN_SHAPE(cols));
        return kiln_add(g, x, *extra);
    case OP_ADD_RELU: {
        *extra = kiln_input(g, "b", KILN_F32, KILN_SHAPE(cols));
        kiln_tensor *s = kiln_add(g, x, *extra);
        kiln_output(g, s);   /* both written, as in a graph that reads the sum */
        return kiln_relu(g, s);
    }
    case OP_RELU:      return kiln_relu(g, x);
    case OP_SCALE:     return kiln_scale(g, x, 0.5f);
    case OP_EXP:       return kiln_exp(g, x);
    case OP_TANH:      return kiln_tanh(g, x);
    case OP_SIGMOID:   return kiln_sigmoid(g, x);
    case OP_SUM:       return kiln_sum(g, x);
    case OP_SUM_AXIS0: return kiln_sum_axis(g, x, 0, false);
    case OP_MAX:       return kiln_max(g, x);
    case OP_SOFTMAX:   return kiln_softmax(g, x);
    case OP_COUNT:     break;
    }
    return NULL;
}

static bool bench_op(const options *o, kiln_context *ctx, op_kind op, int64_t rows,
                     int64_t cols, bench_stats *st)
{
    double secs[64];
    kiln_graph *g = kiln_graph_new(ctx);
    kiln_tensor *extra, *y = build_op(g, op, rows, cols, &extra);
    graph_run run = { g };
    bool ok = g && compile_graph(g, y) && fill_leaf(kiln_graph_find(g, "x"), 1) &&
              (!extra || fill_leaf(extra, 2)) &&
              bench_time(run_graph, &run, o->repeat, o->min_s, secs);
    if (ok)
        *st = rate_stats(secs, o->repeat,
                         4.0 * (double)rows * (double)cols * op_infos[op].streams);
    kiln_graph_free(g);
    return ok;
}

/* ---- gradient ops ----------------------------------------------------------------- */

/* kiln_backward and the optimisers add their nodes to a graph that computes a
 * loss, so a training op is never a one-op graph. Its figure is the time of a
 * graph with it less that of the same work without it, the two timed in turn
 * in each repeat, over the bytes the op alone reads and writes. */
typedef enum grad_kind { GRAD_SUM, GRAD_RELU, GRAD_ADAM, GRAD_COUNT } grad_kind;

static const op_info grad_infos[GRAD_COUNT] = {
    /* sum(x) with its gradient, less the loss alone: the loss's gradient
     * expanded to x's size (written), which relu backward includes */
    [GRAD_SUM]  = {"sum backward", 1},
    /* sum(relu(x)) with its gradient, less the loss alone: the loss's
     * gradient expanded to x's size (written), then relu_grad (that and x
     * read, x's gradient written) */
    [GRAD_RELU] = {"relu backward", 4},
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
static kiln_graph *build_grad(kiln_context *ctx, grad_kind kind, bool step,
                              int64_t rows, int64_t cols, kiln_tensor **loss)
{
    kiln_graph *g = kiln_graph_new(ctx);
    if (!g) {
        fprintf(stderr, "kiln-bench: kiln_graph_new: %s\n", kiln_last_error());
        return NULL;
    }
    kiln_tensor *x = kiln_param(g, "x", KILN_SHAPE(rows, cols));
    *loss = kiln_sum(g, kind == GRAD_RELU ? kiln_relu(g, x) : x);
    bool ok = kiln_output(g, *loss) == KILN_OK && kiln_backward(g, *loss) == KILN_OK &&
              (!step || kiln_adam(g, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.01f)) &&
              kiln_graph_compile(g) == KILN_OK;
    if (!ok) {
        fprintf(stderr, "kiln-bench: building the %s graph failed: %s\n",
                grad_infos[kind].name,
                kiln_graph_error(g) ? kiln_graph_error(g) : kiln_last_error());
    } else if (fill_leaf(x, 1)) {
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

static bool bench_grad(const options *o, kiln_context *ctx, grad_kind kind, int64_t rows,
                       int64_t cols, bench_stats *st)
{
    double secs[64];
    grad_graph with = { NULL, NULL }, without = { NULL, NULL };
    with.g = build_grad(ctx, kind, kind == GRAD_ADAM, rows, cols, &with.loss);
    /* sum, relu: the loss alone is the same graph evaluated up to the loss */
    without = with;
    if (kind == GRAD_ADAM)
        without.g = build_grad(ctx, kind, false, rows, cols, &without.loss);
    bool ok = with.g && without.g;
    for (int r = 0; ok && r < o->repeat; r++) {
        double t_with, t_without;
        graph_run run = { with.g }, base = { without.g };
        ok = bench_time(run_graph, &run, 1, o->min_s, &t_with) &&
             (kind == GRAD_ADAM ? bench_time(run_graph, &base, 1, o->min_s, &t_without)
                                : bench_time(eval_loss, &without, 1, o->min_s, &t_without));
        secs[r] = t_with - t_without;
    }
    if (ok)
        *st = rate_stats(secs, o->repeat,
                         4.0 * (double)rows * (double)cols * grad_infos[kind].streams);
    kiln_graph_free(with.g);
    if (without.g != with.g)
        kiln_graph_free(without.g);
    return ok;
}

/* One row of `ops`: GB/s, and the share of memcpy's for sizes beyond the caches. */
static void print_rate_row(const options *o, const char *name, const char *shape,
                           const bench_stats *st, double copy)
{
    if (o->json) {
        json_row_start();
        printf("\"op\":\"%s\",\"shape\":\"%s\",\"gbs\":{\"min\":%.2f,"
               "\"median\":%.2f,\"max\":%.2f}", name, shape, st->min, st->median,
               st->max);
        if (copy > 0)
            printf(",\"of_memcpy\":%.3f", st->median / copy);
        printf("}");
    } else {
        printf("%-16s %-12s %8.1f %8.1f %8.1f", name, shape, st->min, st->median, st->max);
        if (copy > 0)
            printf(" %8.0f%%", 100.0 * st->median / copy);
        printf("\n");
    }
    fflush(stdout);
}

static int bench_ops(const options *o, kiln_context *ctx, const machine *mach)
{
    /* elements: in L2, in L3, and 4x the L3 of this machine (32 MiB) */
    static const int64_t sizes[][2] = { {256, 1024}, {4096, 1024}, {32768, 1024} };
    int status = 0;
    size_t big = (size_t)sizes[2][0] * sizes[2][1] * sizeof(float);
    double copy1 = bench_memcpy_gbs(big, 1), copyn = bench_memcpy_gbs(big, mach->threads);
    double copy = copy1 > copyn ? copy1 : copyn;
    if (o->json) {
        json_row_start();
        printf("\"op\":\"memcpy\",\"bytes\":%zu,\"gbs_1_thread\":%.2f,\"gbs_%d_threads\":%.2f}",
               big, copy1, mach->threads, copyn);
    } else {
        printf("memcpy of %zu MiB: %.1f GB/s on 1 thread, %.1f on %d (read + written)\n",
               big >> 20, copy1, copyn, mach->threads);
        printf("%-16s %-12s %8s %8s %8s %9s   (GB/s read + written, %d repeats)\n", "op",
               "rows x cols", "worst", "median", "best", "/memcpy", o->repeat);
    }
    /* the one-op graphs, then the training ops */
    for (int row = 0; row < OP_COUNT + GRAD_COUNT; row++) {
        bool grad = row >= OP_COUNT;
        const char *name = grad ? grad_infos[row - OP_COUNT].name : op_infos[row].name;
        for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
            bench_stats st;
            char shape[32];
            snprintf(shape, sizeof shape, "%lldx%lld", (long long)sizes[s][0],
                     (long long)sizes[s][1]);
            bool ok = grad ? bench_grad(o, ctx, (grad_kind)(row - OP_COUNT), sizes[s][0],
                                        sizes[s][1], &st)
                           : bench_op(o, ctx, (op_kind)row, sizes[s][0], sizes[s][1], &st);
            if (!ok) {
                status = 1;
                continue;
            }
            /* memcpy's figure is for tensors beyond the caches only */
            print_rate_row(o, name, shape, &st, s == 2 ? copy : 0);
        }
    }
    return status;
}

/* ---- main ------------------------------------------------------------------------------ */

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

static int parse_args(int argc, char **argv, options *o)
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
        } else if (!o->what && (strcmp(a, "gemm") == 0 || strcmp(a, "conv") == 0 ||
                                strcmp(a, "ops") == 0)) {
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
    if (o->compare && !find_reference(o->compare)) {
        fprintf(stderr, "kiln-bench: unknown --compare '%s' (known:", o->compare);
        for (size_t i = 0; i < sizeof references / sizeof references[0]; i++)
            fprintf(stderr, " %s", references[i]->name);
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

static void measure_machine(kiln_context *ctx, const options *o, machine *m)
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
    options o;
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
    machine mach;
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
    if (strcmp(o.what, "gemm") == 0)
        st = bench_gemm(&o, ctx, &mach);
    else if (strcmp(o.what, "conv") == 0)
        st = bench_conv(&o, ctx, &mach);
    else
        st = bench_ops(&o, ctx, &mach);
    if (o.json)
        printf("\n]}\n");
    kiln_context_free(ctx);
    return st;
}
