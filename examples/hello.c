/* hello — build a small graph, run it on the selected backend, print it.
 * y = relu(x @ w + b) for a 2x3 input, 3x2 weights and a bias of 2. */
#include <kiln/kiln.h>

#include <stdio.h>

int main(void)
{
    kiln_context *ctx = kiln_context_new(); /* the device KILN_BACKEND selects */
    if (!ctx) {
        fprintf(stderr, "hello: %s\n", kiln_last_error());
        return 1;
    }
    kiln_graph  *g = kiln_graph_new(ctx);
    kiln_tensor *x = kiln_input(g, "x", KILN_F32, KILN_SHAPE(2, 3));
    kiln_tensor *w = kiln_param(g, "w", KILN_SHAPE(3, 2));
    kiln_tensor *b = kiln_param(g, "b", KILN_SHAPE(2));
    kiln_tensor *y = kiln_relu(g, kiln_add(g, kiln_matmul(g, x, w), b));

    const float xs[] = {1, 2, 3, 4, 5, 6};
    const float ws[] = {1, -1, 0, 1, -1, 0.5f};
    const float bs[] = {3, -1};
    float       ys[4];
    if (kiln_graph_compile(g) != KILN_OK || kiln_tensor_write(x, xs, sizeof xs) ||
        kiln_tensor_write(w, ws, sizeof ws) || kiln_tensor_write(b, bs, sizeof bs) ||
        kiln_graph_run(g) != KILN_OK || kiln_tensor_read(y, ys, sizeof ys)) {
        fprintf(stderr, "hello: %s\n", kiln_last_error());
        return 1;
    }
    printf("ran on %s\n", kiln_context_device(ctx));
    printf("relu(x @ w + b) = [[%g, %g], [%g, %g]]\n", ys[0], ys[1], ys[2], ys[3]);
    kiln_graph_free(g);
    kiln_context_free(ctx);
    return 0;
}
