/* linear_regression — recover the coefficients of a line from noisy samples.
 *
 * 256 samples of y = x @ [2, -3.5, 0.5] + 1.25 plus a little noise; w [3, 1]
 * and b [1] start at zero and plain SGD on the mean squared error brings them
 * back. Exit status 0 when every coefficient is within 0.05 of the truth.
 */
#include <kiln/kiln.h>

#include <math.h>
#include <stdio.h>

#define N        256
#define FEATURES 3
#define STEPS    300

static const float true_w[FEATURES] = {2.0f, -3.5f, 0.5f};
static const float true_b           = 1.25f;

static int fail(const char *what)
{
    fprintf(stderr, "linear_regression: %s: %s\n", what, kiln_last_error());
    return 1;
}

int main(void)
{
    /* Synthetic data: features in [-1, 1], noise of at most 0.01. */
    static float xs[N * FEATURES], ts[N];
    for (int i = 0; i < N; i++) {
        ts[i] = true_b + 0.01f * (float)sin(12.9898 * i);
        for (int k = 0; k < FEATURES; k++) {
            xs[i * FEATURES + k] = (float)sin(0.37 * i + 1.7 * k + 0.3 * i * k);
            ts[i] += true_w[k] * xs[i * FEATURES + k];
        }
    }

    kiln_context *ctx = kiln_context_new();
    if (!ctx)
        return fail("kiln_context_new");
    kiln_graph  *g    = kiln_graph_new(ctx);
    kiln_tensor *x    = kiln_input(g, "x", KILN_F32, KILN_SHAPE(N, FEATURES));
    kiln_tensor *t    = kiln_input(g, "t", KILN_F32, KILN_SHAPE(N, 1));
    kiln_tensor *w    = kiln_param(g, "w", KILN_SHAPE(FEATURES, 1));
    kiln_tensor *b    = kiln_param(g, "b", KILN_SHAPE(1));
    kiln_tensor *loss = kiln_mse_loss(g, kiln_add(g, kiln_matmul(g, x, w), b), t);
    if (kiln_graph_status(g) != KILN_OK) {
        fprintf(stderr, "linear_regression: %s\n", kiln_graph_error(g));
        return 1;
    }
    if (kiln_backward(g, loss) != KILN_OK)
        return fail("kiln_backward");
    if (!kiln_sgd(g, 0.5f, 0.0f, 0.0f))
        return fail("kiln_sgd");
    if (kiln_graph_compile(g) != KILN_OK)
        return fail("kiln_graph_compile");
    if (kiln_init_constant(w, 0.0f) || kiln_init_constant(b, 0.0f) ||
        kiln_tensor_write(x, xs, sizeof xs) || kiln_tensor_write(t, ts, sizeof ts))
        return fail("writing the data");

    printf("on %s: fitting %d samples with SGD\n", kiln_context_device(ctx), N);
    for (int step = 1; step <= STEPS; step++) {
        float l;
        if (kiln_graph_run(g) != KILN_OK || kiln_tensor_read(loss, &l, sizeof l))
            return fail("step");
        if (step == 1 || step % 100 == 0)
            printf("step %3d  loss %.6f\n", step, (double)l);
    }

    float ws[FEATURES], bs;
    if (kiln_tensor_read(w, ws, sizeof ws) || kiln_tensor_read(b, &bs, sizeof bs))
        return fail("reading the coefficients");
    int ok = fabsf(bs - true_b) < 0.05f;
    printf("coefficient   true   fitted\n");
    for (int k = 0; k < FEATURES; k++) {
        printf("w[%d]       %7.3f  %7.3f\n", k, (double)true_w[k], (double)ws[k]);
        ok &= fabsf(ws[k] - true_w[k]) < 0.05f;
    }
    printf("b          %7.3f  %7.3f\n", (double)true_b, (double)bs);
    printf("%s\n", ok ? "recovered" : "NOT recovered");
    kiln_graph_free(g);
    kiln_context_free(ctx);
    return ok ? 0 : 1;
}
