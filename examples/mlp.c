/* mlp — a multi-layer perceptron from the layer helpers, trained with Adam.
 *
 * Points of the square [-1, 1]^2 belong to one of three rings around the
 * origin (radius below 0.4, below 0.75, or beyond): a problem no linear model
 * solves. Two hidden layers of 32 relu units learn it from 512 points in a
 * few hundred full-batch steps, and are scored on 512 points they never saw.
 *
 *   examples/mlp [WEIGHTS.safetensors]
 *
 * With a file name, the trained weights are saved there, loaded into a new
 * inference-only graph, and scored again: the same accuracy comes back.
 * Exit status 0 when the test accuracy is at least 90%.
 */
#include <kiln/kiln.h>

#include <math.h>
#include <stdio.h>
#include <string.h>

#define N       512
#define CLASSES 3
#define STEPS   600

static int fail(const char *what)
{
    fprintf(stderr, "mlp: %s: %s\n", what, kiln_last_error());
    return 1;
}

/* Points and their rings, from a small deterministic generator. */
static void make_points(unsigned seed, float *xy, int32_t *ring)
{
    for (int i = 0; i < N; i++) {
        for (int k = 0; k < 2; k++) {
            seed          = seed * 1664525u + 1013904223u;
            xy[2 * i + k] = (float)(seed >> 8) / (float)(1u << 24) * 2.0f - 1.0f;
        }
        float r = hypotf(xy[2 * i], xy[2 * i + 1]);
        ring[i] = r < 0.4f ? 0 : r < 0.75f ? 1 : 2;
    }
}

/* The model; both graphs build it the same way, so its parameters have the
 * same names ("hidden1.weight", ...) and a weight file fits either. */
static kiln_tensor *classifier(kiln_graph *g, kiln_tensor *x)
{
    kiln_tensor *h = kiln_relu(g, kiln_dense(g, x, 32, "hidden1"));
    h              = kiln_relu(g, kiln_dense(g, h, 32, "hidden2"));
    return kiln_dense(g, h, CLASSES, "out");
}

/* Percentage of the points whose predicted ring is right. */
static int score(kiln_graph *g, kiln_tensor *x, kiln_tensor *pred, const float *xy,
                 const int32_t *ring, double *accuracy)
{
    int32_t p[N];
    if (kiln_tensor_write(x, xy, N * 2 * sizeof *xy) || kiln_graph_eval(g, pred) ||
        kiln_tensor_read(pred, p, sizeof p))
        return -1;
    int correct = 0;
    for (int i = 0; i < N; i++)
        correct += p[i] == ring[i];
    *accuracy = 100.0 * correct / N;
    return 0;
}

/* A new graph with only the forward pass, its weights read from `path`. */
static int reload_and_score(kiln_context *ctx, const char *path, const float *xy,
                            const int32_t *ring, double *accuracy)
{
    kiln_graph  *g    = kiln_graph_new(ctx);
    kiln_tensor *x    = kiln_input(g, "x", KILN_F32, KILN_SHAPE(N, 2));
    kiln_tensor *pred = kiln_argmax(g, classifier(g, x));
    int          rc   = kiln_graph_compile(g) || kiln_load(g, path) ||
                     score(g, x, pred, xy, ring, accuracy)
                            ? -1
                            : 0;
    kiln_graph_free(g);
    return rc;
}

int main(int argc, char **argv)
{
    static float   train_xy[N * 2], test_xy[N * 2];
    static int32_t train_ring[N], test_ring[N];
    make_points(1, train_xy, train_ring);
    make_points(2, test_xy, test_ring);

    kiln_context *ctx = kiln_context_new();
    if (!ctx)
        return fail("kiln_context_new");
    kiln_graph *g = kiln_graph_new(ctx);
    kiln_graph_seed(g, 7);
    kiln_tensor *x      = kiln_input(g, "x", KILN_F32, KILN_SHAPE(N, 2));
    kiln_tensor *labels = kiln_input(g, "labels", KILN_I32, KILN_SHAPE(N));
    kiln_tensor *logits = classifier(g, x);
    kiln_tensor *loss   = kiln_cross_entropy(g, logits, labels);
    kiln_tensor *pred   = kiln_argmax(g, logits);
    kiln_output(g, pred);
    if (kiln_graph_status(g) != KILN_OK) {
        fprintf(stderr, "mlp: %s\n", kiln_graph_error(g));
        return 1;
    }
    if (kiln_backward(g, loss) != KILN_OK)
        return fail("kiln_backward");
    if (!kiln_adam(g, 0.01f, 0.9f, 0.999f, 1e-8f, 0.0f))
        return fail("kiln_adam");
    if (kiln_graph_compile(g) != KILN_OK)
        return fail("kiln_graph_compile");
    if (kiln_tensor_write(x, train_xy, sizeof train_xy) ||
        kiln_tensor_write(labels, train_ring, sizeof train_ring))
        return fail("writing the data");

    printf("on %s: 2-32-32-3 relu MLP, Adam, %d points\n", kiln_context_device(ctx), N);
    for (int step = 1; step <= STEPS; step++) {
        float l;
        if (kiln_graph_run(g) != KILN_OK || kiln_tensor_read(loss, &l, sizeof l))
            return fail("step");
        if (step == 1 || step % 150 == 0)
            printf("step %3d  loss %.4f\n", step, (double)l);
    }
    double train_acc, test_acc;
    if (score(g, x, pred, train_xy, train_ring, &train_acc) ||
        score(g, x, pred, test_xy, test_ring, &test_acc))
        return fail("scoring");
    printf("accuracy: %.1f%% on the training points, %.1f%% on new points\n", train_acc,
           test_acc);

    if (argc > 1) {
        double reloaded;
        if (kiln_save(g, argv[1]) != KILN_OK)
            return fail("kiln_save");
        if (reload_and_score(ctx, argv[1], test_xy, test_ring, &reloaded))
            return fail("reloading");
        printf("saved to %s; reloaded into a new graph: %.1f%% on new points\n", argv[1],
               reloaded);
        if (reloaded != test_acc)
            return fprintf(stderr, "mlp: the reloaded model scores differently\n"), 1;
    }
    kiln_graph_free(g);
    kiln_context_free(ctx);
    return test_acc >= 90.0 ? 0 : 1;
}
