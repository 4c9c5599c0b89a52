/* cnn — a small convolutional network from the layer helpers, trained with SGD.
 *
 * 12x12 images hold one line over noise: a vertical or a horizontal one at a
 * random place, or the diagonal; the network tells which. Conv 3x3x8 (padding 1), relu,
 * 2x2 max-pool, then a dense layer to the 3 classes: the same shape as
 * kiln-train's cnn on Fashion-MNIST, small enough to train in seconds on any
 * backend. Every step draws a new batch of 32; the score is on 256 images
 * never trained on. Exit status 0 when the test accuracy is at least 90%.
 */
#include <kiln/kiln.h>

#include <stdio.h>
#include <string.h>

#define SIDE    12
#define BATCH   32
#define TEST    256
#define CLASSES 3
#define STEPS   300

static int fail(const char *what)
{
    fprintf(stderr, "cnn: %s: %s\n", what, kiln_last_error());
    return 1;
}

static unsigned next(unsigned *seed)
{
    *seed = *seed * 1664525u + 1013904223u;
    return *seed >> 8;
}

/* n images [n, 1, SIDE, SIDE] and their classes. */
static void make_images(unsigned *seed, int n, float *img, int32_t *cls)
{
    for (int i = 0; i < n; i++) {
        float *p = img + (size_t)i * SIDE * SIDE;
        for (int k = 0; k < SIDE * SIDE; k++)
            p[k] = 0.3f * (float)(next(seed) % 1000) / 1000.0f;
        int c = (int)(next(seed) % CLASSES), at = 2 + (int)(next(seed) % (SIDE - 4));
        for (int k = 1; k < SIDE - 1; k++) {
            int r = c == 0 ? k : c == 1 ? at : k, col = c == 0 ? at : k;
            p[r * SIDE + col] = 1.0f;
        }
        cls[i] = c;
    }
}

static kiln_tensor *classifier(kiln_graph *g, kiln_tensor *x)
{
    kiln_tensor *h = kiln_relu(g, kiln_conv2d_layer(g, x, 8, 3, 1, 1, "conv"));
    h              = kiln_flatten(g, kiln_max_pool2d(g, h, 2, 2));
    return kiln_dense(g, h, CLASSES, "out");
}

int main(void)
{
    static float   xs[BATCH * SIDE * SIDE], test_x[TEST * SIDE * SIDE];
    static int32_t ys[BATCH], test_y[TEST];
    unsigned       seed = 12345;

    kiln_context *ctx = kiln_context_new();
    if (!ctx)
        return fail("kiln_context_new");
    kiln_graph *g = kiln_graph_new(ctx);
    kiln_graph_seed(g, 3);
    kiln_tensor *x      = kiln_input(g, "x", KILN_F32, KILN_SHAPE(BATCH, 1, SIDE, SIDE));
    kiln_tensor *labels = kiln_input(g, "labels", KILN_I32, KILN_SHAPE(BATCH));
    kiln_tensor *logits = classifier(g, x);
    kiln_tensor *loss   = kiln_cross_entropy(g, logits, labels);
    kiln_tensor *pred   = kiln_argmax(g, logits);
    kiln_output(g, pred);
    if (kiln_graph_status(g) != KILN_OK) {
        fprintf(stderr, "cnn: %s\n", kiln_graph_error(g));
        return 1;
    }
    if (kiln_backward(g, loss) != KILN_OK)
        return fail("kiln_backward");
    if (!kiln_sgd(g, 0.05f, 0.9f, 0.0f))
        return fail("kiln_sgd");
    if (kiln_graph_compile(g) != KILN_OK)
        return fail("kiln_graph_compile");

    printf("on %s: conv 3x3x8, relu, max-pool, dense; SGD, batches of %d\n",
           kiln_context_device(ctx), BATCH);
    for (int step = 1; step <= STEPS; step++) {
        float l;
        make_images(&seed, BATCH, xs, ys);
        if (kiln_tensor_write(x, xs, sizeof xs) ||
            kiln_tensor_write(labels, ys, sizeof ys) || kiln_graph_run(g) != KILN_OK ||
            kiln_tensor_read(loss, &l, sizeof l))
            return fail("step");
        if (step == 1 || step % 100 == 0)
            printf("step %3d  loss %.4f\n", step, (double)l);
    }

    /* The test set in batches of the graph's size, through the forward pass. */
    make_images(&seed, TEST, test_x, test_y);
    int correct = 0;
    for (int b = 0; b < TEST / BATCH; b++) {
        int32_t p[BATCH];
        if (kiln_tensor_write(x, test_x + (size_t)b * BATCH * SIDE * SIDE, sizeof xs) ||
            kiln_graph_eval(g, pred) || kiln_tensor_read(pred, p, sizeof p))
            return fail("scoring");
        for (int i = 0; i < BATCH; i++)
            correct += p[i] == test_y[b * BATCH + i];
    }
    double accuracy = 100.0 * correct / TEST;
    printf("accuracy on %d new images: %.1f%%\n", TEST, accuracy);
    kiln_graph_free(g);
    kiln_context_free(ctx);
    return accuracy >= 90.0 ? 0 : 1;
}
