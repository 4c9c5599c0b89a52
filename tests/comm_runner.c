/* tests/comm_runner.c — what test_mpi.sh runs under mpirun -np N (and the
 * suite as one process on the loopback): the collectives against values
 * every rank can compute, and data-parallel training against one process
 * that trains on the whole batch.
 *
 * With the argument "device", each rank prints only the device
 * kiln_comm_context_new gave it.
 *
 * Each rank prints "ok" lines and exits 0, or names the first check that
 * failed and exits 1. The reference for the data-parallel steps is a second
 * graph on the same rank: the same model with the whole global batch, no
 * communicator; after three Adam steps (with clipping by the global norm)
 * its parameters must equal the data-parallel ones to float rounding,
 * whatever N is and however small the buckets are.
 */
#include <kiln/kiln.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define B      12 /* the global batch: a multiple of 1, 2, 3, 4 and 6 */
#define IN     5
#define HIDDEN 7
#define OUT    3
#define STEPS  3

static int rank;

static void fail(const char *what, const char *detail)
{
    fprintf(stderr, "comm_runner rank %d: %s: %s\n", rank, what, detail);
    exit(1);
}

static void ok(kiln_status st, const char *what)
{
    if (st != KILN_OK)
        fail(what, kiln_last_error());
}

/* The model on a batch of n rows, seeded with seed; with c, data-parallel. */
static kiln_graph *model(kiln_context *ctx, int n, uint64_t seed, kiln_comm *c,
                         size_t bucket, kiln_tensor **x, kiln_tensor **y)
{
    kiln_graph *g = kiln_graph_new(ctx);
    kiln_graph_seed(g, seed);
    *x             = kiln_input(g, "x", KILN_F32, KILN_SHAPE(n, IN));
    *y             = kiln_input(g, "y", KILN_I32, KILN_SHAPE(n));
    kiln_tensor *h = kiln_tanh(g, kiln_dense(g, *x, HIDDEN, "fc1"));
    kiln_tensor *l = kiln_cross_entropy(g, kiln_dense(g, h, OUT, "fc2"), *y);
    ok(kiln_backward(g, l), "kiln_backward");
    if (c)
        ok(kiln_graph_allreduce_grads(g, c, bucket), "kiln_graph_allreduce_grads");
    if (!kiln_clip_grad_norm(g, 0.5f))
        fail("kiln_clip_grad_norm", kiln_last_error());
    if (!kiln_adam(g, 0.05f, 0.9f, 0.999f, 1e-8f, 0.0f))
        fail("kiln_adam", kiln_last_error());
    ok(kiln_graph_compile(g), "kiln_graph_compile");
    return g;
}

/* Global batch s: rows of inputs and labels, the same on every rank. */
static void batch(int s, float *xs, int32_t *ys)
{
    for (int r = 0; r < B; r++) {
        for (int k = 0; k < IN; k++)
            xs[r * IN + k] = sinf(0.7f * (float)(r * IN + k) + 1.3f * (float)s);
        ys[r] = (r * 7 + s) % OUT;
    }
}

static void data_parallel(kiln_comm *c, kiln_context *ctx, size_t bucket)
{
    int          size = kiln_comm_size(c), n = B / size;
    kiln_tensor *x, *y, *rx, *ry;
    /* each rank's own initial weights; rank 0's win by broadcast */
    kiln_graph *g   = model(ctx, n, 100 + (uint64_t)rank, c, bucket, &x, &y);
    kiln_graph *ref = model(ctx, B, 100, NULL, 0, &rx, &ry);
    ok(kiln_comm_broadcast_params(c, g, 0, false), "kiln_comm_broadcast_params");
    float   xs[B * IN];
    int32_t ys[B];
    for (int s = 0; s < STEPS; s++) {
        batch(s, xs, ys);
        ok(kiln_tensor_write(x, xs + rank * n * IN, sizeof(float) * (size_t)(n * IN)),
           "x");
        ok(kiln_tensor_write(y, ys + rank * n, sizeof(int32_t) * (size_t)n), "y");
        ok(kiln_graph_run(g), "a data-parallel step");
        ok(kiln_tensor_write(rx, xs, sizeof xs), "x");
        ok(kiln_tensor_write(ry, ys, sizeof ys), "y");
        ok(kiln_graph_run(ref), "a whole-batch step");
    }
    double worst = 0;
    for (size_t i = 0; i < kiln_graph_param_count(g); i++) {
        kiln_tensor *p = kiln_graph_param(g, i), *q = kiln_graph_param(ref, i);
        size_t       m = (size_t)kiln_tensor_numel(p);
        float       *a = malloc(m * sizeof *a), *b = malloc(m * sizeof *b);
        if (!a || !b)
            fail("memory", "out of memory");
        ok(kiln_tensor_read(p, a, m * sizeof *a), "a parameter");
        ok(kiln_tensor_read(q, b, m * sizeof *b), "a parameter");
        for (size_t k = 0; k < m; k++)
            worst = fmax(worst, fabs((double)a[k] - b[k]));
        free(a);
        free(b);
    }
    char detail[160];
    snprintf(detail, sizeof detail, "max |data-parallel - whole batch| = %.3g after %d "
             "steps (bucket %zu bytes)", worst, STEPS, bucket);
    if (!(worst < 2e-5))
        fail("data-parallel training", detail);
    printf("rank %d ok: %s\n", rank, detail);
    kiln_graph_free(g);
    kiln_graph_free(ref);
}

static void collectives(kiln_comm *c)
{
    int    size = kiln_comm_size(c);
    double v[4];
    for (int i = 0; i < 4; i++)
        v[i] = rank + 10.0 * i;
    ok(kiln_comm_allreduce(c, v, 4, false), "kiln_comm_allreduce");
    for (int i = 0; i < 4; i++)
        if (v[i] != size * (size - 1) / 2.0 + 10.0 * i * size)
            fail("kiln_comm_allreduce", "a wrong sum");
    double m = rank;
    ok(kiln_comm_allreduce(c, &m, 1, true), "kiln_comm_allreduce");
    if (m != (size - 1) / 2.0)
        fail("kiln_comm_allreduce", "a wrong mean");
    int root = size - 1, word[3] = {rank, rank * 2, -rank};
    ok(kiln_comm_broadcast(c, word, sizeof word, root), "kiln_comm_broadcast");
    if (word[0] != root || word[1] != 2 * root || word[2] != -root)
        fail("kiln_comm_broadcast", "not the root's data");
    ok(kiln_comm_barrier(c), "kiln_comm_barrier");
    if (kiln_comm_broadcast(c, word, sizeof word, size) == KILN_OK)
        fail("kiln_comm_broadcast", "a root outside the job was taken");
    printf("rank %d ok: collectives of %d processes (%s)\n", rank, size,
           kiln_comm_name(c));
}

static void averaging(kiln_comm *c, kiln_context *ctx)
{
    kiln_graph  *g = kiln_graph_new(ctx);
    kiln_tensor *p = kiln_param(g, "p", KILN_SHAPE(3));
    float        v[3] = {(float)rank, 1.0f, -2.0f * (float)rank};
    ok(kiln_tensor_write(p, v, sizeof v), "p");
    ok(kiln_comm_average_params(c, g), "kiln_comm_average_params");
    ok(kiln_tensor_read(p, v, sizeof v), "p");
    float mean = (float)(kiln_comm_size(c) - 1) / 2.0f;
    if (fabsf(v[0] - mean) > 1e-6f || v[1] != 1.0f || fabsf(v[2] + 2 * mean) > 1e-6f)
        fail("kiln_comm_average_params", "not the mean");
    printf("rank %d ok: parameters averaged\n", rank);
    kiln_graph_free(g);
}

int main(int argc, char **argv)
{
    kiln_comm *c = kiln_comm_open(NULL);
    if (!c)
        fail("kiln_comm_open", kiln_last_error());
    rank = kiln_comm_rank(c);
    if (argc > 1 && strcmp(argv[1], "device") == 0) {
        /* only which device each process takes */
        kiln_context *ctx = kiln_comm_context_new(c);
        if (!ctx)
            fail("kiln_comm_context_new", kiln_last_error());
        printf("rank %d of %d, local %d: %s\n", rank, kiln_comm_size(c),
               kiln_comm_local_rank(c), kiln_context_device(ctx));
        kiln_context_free(ctx);
        kiln_comm_close(c);
        return 0;
    }
    if (kiln_comm_open(NULL))
        fail("kiln_comm_open", "a second communicator opened");
    if (B % kiln_comm_size(c) != 0)
        fail("the job", "run it with 1, 2, 3, 4 or 6 processes");
    kiln_context *ctx = kiln_comm_context_new(c);
    if (!ctx)
        fail("kiln_comm_context_new", kiln_last_error());
    collectives(c);
    averaging(c, ctx);
    data_parallel(c, ctx, 0);  /* one bucket */
    data_parallel(c, ctx, 64); /* a bucket per gradient, or nearly */
    printf("rank %d ok: %s\n", rank, kiln_context_device(ctx));
    kiln_context_free(ctx);
    kiln_comm_close(c);
    return 0;
}
