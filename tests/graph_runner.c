/* tests/graph_runner.c — runs one fixed graph on the device KILN_BACKEND
 * selects and prints its outputs, for tests that need a fresh process
 * (a second process reusing a cache; environment knobs read once).
 *
 *   graph_runner           an MLP and a small CNN, forward: every output
 *                          element as a C99 hex float, one per line, after a
 *                          line "output NAME COUNT"
 *   graph_runner tiny      log and sqrt of a subnormal float, 1e-40:
 *                          "log L sqrt S"
 *   graph_runner train STEPS LAYERS adam|sgd|sgd-clip
 *                          an MLP of LAYERS hidden dense+relu layers (two
 *                          parameters each, and the output layer's two)
 *                          trained STEPS steps on fresh inputs and labels,
 *                          each step written and run without a read; then
 *                          every parameter, as the first form prints them
 *
 * The data is fixed (a seeded generator), so two runs on two devices print
 * comparable numbers. Exit status 0, or 1 with kiln's message on stderr.
 *
 * KILN_TEST_ADDRESS_LIMIT_MB=N runs it under an address-space limit of N MiB
 * (ulimit -v), set before kiln loads anything.
 */
#include <kiln/kiln.h>

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

enum { N = 5, D = 13, H = 17, C = 7, IMG = 8, CH = 2, O = 3 };

static float next_value(uint64_t *s)
{
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return (float)(*s >> 40) / (float)(1u << 24) * 2.0f - 1.0f;
}

static int fail(const char *what, const char *why)
{
    fprintf(stderr, "graph_runner: %s: %s\n", what, why ? why : "(no message)");
    return 1;
}

static int write_leaf(kiln_tensor *t, uint64_t *seed)
{
    size_t n = (size_t)kiln_tensor_numel(t);
    float *v = malloc(n * sizeof *v);
    if (!v)
        return fail("malloc", "out of memory");
    for (size_t i = 0; i < n; i++)
        v[i] = next_value(seed);
    kiln_status st = kiln_tensor_write(t, v, n * sizeof *v);
    free(v);
    return st == KILN_OK ? 0 : fail("kiln_tensor_write", kiln_last_error());
}

static int print_output(const char *name, const kiln_tensor *t)
{
    size_t n = (size_t)kiln_tensor_numel(t);
    float *v = malloc(n * sizeof *v);
    if (!v)
        return fail("malloc", "out of memory");
    if (kiln_tensor_read(t, v, n * sizeof *v) != KILN_OK) {
        free(v);
        return fail("kiln_tensor_read", kiln_last_error());
    }
    printf("output %s %zu\n", name, n);
    for (size_t i = 0; i < n; i++)
        printf("%a\n", (double)v[i]);
    free(v);
    return 0;
}

static int limit_address_space(void)
{
    const char *mb = getenv("KILN_TEST_ADDRESS_LIMIT_MB");
    if (!mb)
        return 0;
    struct rlimit lim = {.rlim_cur = (rlim_t)strtoull(mb, NULL, 10) << 20};
    lim.rlim_max      = lim.rlim_cur;
    return setrlimit(RLIMIT_AS, &lim) == 0 ? 0 : fail("setrlimit", "RLIMIT_AS");
}

/* log and sqrt of [1e-40, 4]: -92.1 and 1e-20 where subnormals are kept. */
static int tiny(kiln_context *ctx)
{
    kiln_graph  *g = kiln_graph_new(ctx);
    kiln_tensor *x = g ? kiln_input(g, "x", KILN_F32, KILN_SHAPE(2)) : NULL;
    kiln_tensor *l = kiln_log(g, x), *q = kiln_sqrt(g, x);
    if (!g || kiln_output(g, l) != KILN_OK || kiln_output(g, q) != KILN_OK ||
        kiln_graph_compile(g) != KILN_OK)
        return fail("building", g ? kiln_graph_error(g) : kiln_last_error());
    const float in[2] = {1e-40f, 4.0f};
    float       lv[2], qv[2];
    if (kiln_tensor_write(x, in, sizeof in) != KILN_OK || kiln_graph_run(g) != KILN_OK ||
        kiln_tensor_read(l, lv, sizeof lv) != KILN_OK ||
        kiln_tensor_read(q, qv, sizeof qv) != KILN_OK)
        return fail("running", kiln_last_error());
    printf("log %.9g sqrt %.9g\n", (double)lv[0], (double)qv[0]);
    kiln_graph_free(g);
    kiln_context_free(ctx);
    return 0;
}

/* STEPS steps of an MLP with `layers` hidden layers, then its parameters. */
static int train(kiln_context *ctx, int steps, int layers, const char *opt)
{
    enum { B = 6, IN = 9, W = 11, K = 4 };
    kiln_graph *g = kiln_graph_new(ctx);
    if (!g)
        return fail("kiln_graph_new", kiln_last_error());
    kiln_graph_seed(g, 7);
    kiln_tensor *x = kiln_input(g, "x", KILN_F32, KILN_SHAPE(B, IN));
    kiln_tensor *y = kiln_input(g, "y", KILN_I32, KILN_SHAPE(B));
    kiln_tensor *h = x;
    for (int l = 0; l < layers; l++)
        h = kiln_relu(g, kiln_dense(g, h, W, NULL));
    kiln_tensor *loss = kiln_cross_entropy(g, kiln_dense(g, h, K, NULL), y);
    bool         sgd  = strncmp(opt, "sgd", 3) == 0;
    if (kiln_backward(g, loss) != KILN_OK ||
        (strcmp(opt, "sgd-clip") == 0 && !kiln_clip_grad_norm(g, 0.5f)) ||
        !(sgd ? kiln_sgd(g, 0.05f, 0.9f, 0.01f) : kiln_adam(g, 0.01f, 0.9f, 0.999f, 1e-8f, 0.0f)) ||
        kiln_graph_compile(g) != KILN_OK)
        return fail("building", kiln_graph_error(g));
    uint64_t seed = 3;
    for (int s = 0; s < steps; s++) {
        int32_t labels[B];
        for (int i = 0; i < B; i++)
            labels[i] = (int32_t)((next_value(&seed) + 1.0f) * 0.5f * K) % K;
        if (write_leaf(x, &seed) != 0)
            return 1;
        if (kiln_tensor_write(y, labels, sizeof labels) != KILN_OK ||
            kiln_graph_run(g) != KILN_OK)
            return fail("running", kiln_last_error());
    }
    printf("device %s\n", kiln_context_device(ctx));
    for (size_t p = 0; p < kiln_graph_param_count(g); p++) {
        const kiln_tensor *t = kiln_graph_param(g, p);
        if (print_output(kiln_tensor_name(t), t) != 0)
            return 1;
    }
    kiln_graph_free(g);
    kiln_context_free(ctx);
    return 0;
}

int main(int argc, char **argv)
{
    if (limit_address_space() != 0)
        return 1;
    kiln_context *ctx = kiln_context_new();
    if (!ctx)
        return fail("kiln_context_new", kiln_last_error());
    if (argc > 1 && strcmp(argv[1], "tiny") == 0)
        return tiny(ctx);
    if (argc == 5 && strcmp(argv[1], "train") == 0)
        return train(ctx, atoi(argv[2]), atoi(argv[3]), argv[4]);
    kiln_graph *g = kiln_graph_new(ctx);
    if (!g)
        return fail("kiln_graph_new", kiln_last_error());

    /* MLP: softmax(relu(x @ w1 + b1) @ w2) */
    kiln_tensor *leaves[8];
    kiln_tensor *x = leaves[0] = kiln_input(g, "x", KILN_F32, KILN_SHAPE(N, D));
    kiln_tensor *w1 = leaves[1] = kiln_param(g, "w1", KILN_SHAPE(D, H));
    kiln_tensor *b1 = leaves[2] = kiln_param(g, "b1", KILN_SHAPE(H));
    kiln_tensor *w2 = leaves[3] = kiln_param(g, "w2", KILN_SHAPE(H, C));
    kiln_tensor *hidden         = kiln_relu(g, kiln_add(g, kiln_matmul(g, x, w1), b1));
    kiln_tensor *probs          = kiln_softmax(g, kiln_matmul(g, hidden, w2));

    /* CNN: log_softmax(flatten(max_pool(relu(conv2d(img)))) @ wf) */
    kiln_tensor *img = leaves[4] = kiln_input(g, "img", KILN_F32,
                                              KILN_SHAPE(N, CH, IMG, IMG));
    kiln_tensor *k = leaves[5] = kiln_param(g, "k", KILN_SHAPE(O, CH, 3, 3));
    kiln_tensor *kb = leaves[6] = kiln_param(g, "kb", KILN_SHAPE(O));
    kiln_tensor *wf = leaves[7] = kiln_param(g, "wf",
                                             KILN_SHAPE(O * (IMG / 2) * (IMG / 2), C));
    kiln_tensor *feat           = kiln_flatten(
                  g, kiln_max_pool2d(g, kiln_relu(g, kiln_conv2d(g, img, k, kb, 1, 1)), 2, 2));
    kiln_tensor *logp = kiln_log_softmax(g, kiln_matmul(g, feat, wf));

    kiln_output(g, probs);
    kiln_output(g, logp);
    if (kiln_graph_compile(g) != KILN_OK)
        return fail("kiln_graph_compile", kiln_graph_error(g));
    uint64_t seed = 42;
    for (int i = 0; i < 8; i++)
        if (write_leaf(leaves[i], &seed))
            return 1;
    if (kiln_graph_run(g) != KILN_OK)
        return fail("kiln_graph_run", kiln_last_error());
    printf("device %s\n", kiln_context_device(ctx));
    int rc = print_output("mlp", probs) || print_output("cnn", logp);
    kiln_graph_free(g);
    kiln_context_free(ctx);
    return rc;
}
