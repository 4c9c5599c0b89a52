/* tests/test_fashion.c — the MLP of kiln-train learns a slice of
 * Fashion-MNIST on every device, and the devices agree.
 *
 * 784-256-128-10 with relu, cross_entropy and Adam (lr 1e-3), batch 32, over
 * the first STEPS batches of the training set, on each usable device (the cpu
 * backend with its default kernels, each OpenCL device). The layers draw
 * their weights from the graph's seed on the host, so every device starts
 * from the same weights: the first loss must agree closely, the loss must
 * fall below a bound, and the mean loss of the last steps must agree across
 * devices within a tolerance that allows for rounding in different orders.
 * Needs Debian's dataset-fashion-mnist; skipped without it.
 */
#include "backends.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define FASHION "/usr/share/datasets/fashion-mnist"
#define STEPS   240
#define BATCH   32
#define PIXELS  784
#define TAIL    40 /* the steps whose mean loss is compared */

typedef struct slice {
    float   *x; /* STEPS * BATCH images, standardised */
    int32_t *y;
} slice;

static void load_slice(slice *s)
{
    kiln_idx img, lab;
    cr_assert_eq(kiln_idx_read(FASHION "/train-images-idx3-ubyte.gz", &img), KILN_OK,
                 "%s", kiln_last_error());
    cr_assert_eq(kiln_idx_read(FASHION "/train-labels-idx1-ubyte.gz", &lab), KILN_OK,
                 "%s", kiln_last_error());
    size_t n = (size_t)STEPS * BATCH;
    cr_assert(img.type == 0x08 && lab.type == 0x08 && img.count >= (int64_t)n * PIXELS &&
                  lab.count >= (int64_t)n,
              "unexpected Fashion-MNIST files");
    s->x = malloc(n * PIXELS * sizeof *s->x);
    s->y = malloc(n * sizeof *s->y);
    cr_assert(s->x && s->y);
    const uint8_t *px = img.data, *lb = lab.data;
    for (size_t i = 0; i < n * PIXELS; i++)
        s->x[i] = ((float)px[i] / 255.0f - 0.2860f) / 0.3530f;
    for (size_t i = 0; i < n; i++)
        s->y[i] = lb[i];
    kiln_idx_free(&img);
    kiln_idx_free(&lab);
}

/* Trains on `spec`; losses[s] is the loss of step s. */
static void train_on(const char *spec, const slice *s, float *losses)
{
    kiln_context *ctx = test_context(spec);
    kiln_graph   *g   = kiln_graph_new(ctx);
    kiln_graph_seed(g, 7);
    kiln_tensor *x    = kiln_input(g, "x", KILN_F32, KILN_SHAPE(BATCH, PIXELS));
    kiln_tensor *y    = kiln_input(g, "y", KILN_I32, KILN_SHAPE(BATCH));
    kiln_tensor *h    = kiln_relu(g, kiln_dense(g, x, 256, "fc1"));
    h                 = kiln_relu(g, kiln_dense(g, h, 128, "fc2"));
    kiln_tensor *loss = kiln_cross_entropy(g, kiln_dense(g, h, 10, "fc3"), y);
    cr_assert_eq(kiln_graph_status(g), KILN_OK, "%s: %s", spec, kiln_graph_error(g));
    cr_assert_eq(kiln_output(g, loss), KILN_OK, "%s", kiln_last_error());
    cr_assert_eq(kiln_backward(g, loss), KILN_OK, "%s", kiln_last_error());
    cr_assert_not_null(kiln_adam(g, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.0f), "%s",
                       kiln_last_error());
    cr_assert_eq(kiln_graph_compile(g), KILN_OK, "%s: %s", spec, kiln_last_error());
    for (int step = 0; step < STEPS; step++) {
        const float   *xs = s->x + (size_t)step * BATCH * PIXELS;
        const int32_t *ys = s->y + (size_t)step * BATCH;
        cr_assert_eq(kiln_tensor_write(x, xs, (size_t)BATCH * PIXELS * sizeof *xs),
                     KILN_OK, "%s", kiln_last_error());
        cr_assert_eq(kiln_tensor_write(y, ys, (size_t)BATCH * sizeof *ys), KILN_OK, "%s",
                     kiln_last_error());
        cr_assert_eq(kiln_graph_run(g), KILN_OK, "%s, step %d: %s", spec, step,
                     kiln_last_error());
        cr_assert_eq(kiln_tensor_read(loss, &losses[step], sizeof *losses), KILN_OK, "%s",
                     kiln_last_error());
    }
    kiln_graph_free(g);
    kiln_context_free(ctx);
}

static double mean(const float *v, int n)
{
    double sum = 0;
    for (int i = 0; i < n; i++)
        sum += v[i];
    return sum / n;
}

Test(fashion, mlp_learns_a_slice_alike_on_every_device)
{
    if (access(FASHION "/train-images-idx3-ubyte.gz", R_OK) != 0)
        cr_skip_test("%s is not installed (Debian: dataset-fashion-mnist)", FASHION);
    slice s;
    load_slice(&s);
    test_backend devs[16];
    size_t       n = test_backend_list(devs, 16);
    cr_assert_gt(n, 0, "no usable device");
    float  losses[16][STEPS];
    char   specs[16][64];
    size_t ran = 0;
    for (size_t i = 0; i < n && i < 16; i++) {
        bool seen = false; /* the cpu is listed once per ISA: train once */
        for (size_t j = 0; j < ran; j++)
            seen |= strcmp(specs[j], devs[i].spec) == 0;
        if (seen)
            continue;
        strcpy(specs[ran], devs[i].spec);
        train_on(devs[i].spec, &s, losses[ran]);
        ran++;
    }
    for (size_t d = 0; d < ran; d++) {
        double first = mean(losses[d], 5), last = mean(losses[d] + STEPS - TAIL, TAIL);
        cr_log_info("%s: mean loss %.4f over the first 5 steps, %.4f over the last %d",
                    specs[d], first, last, TAIL);
        cr_assert(first > 1.5 && last < 0.75,
                  "%s did not learn: loss %.4f at the start, "
                  "%.4f at the end (bound 0.75)",
                  specs[d], first, last);
        cr_assert(fabsf(losses[d][0] - losses[0][0]) < 1e-4f,
                  "first loss %.6f on %s, "
                  "%.6f on %s: the devices do not start from the same weights",
                  losses[d][0], specs[d], losses[0][0], specs[0]);
        double last0 = mean(losses[0] + STEPS - TAIL, TAIL);
        cr_assert(fabs(last - last0) < 0.02,
                  "mean loss of the last %d steps: %.4f on %s, "
                  "%.4f on %s",
                  TAIL, last, specs[d], last0, specs[0]);
    }
    free(s.x);
    free(s.y);
}
