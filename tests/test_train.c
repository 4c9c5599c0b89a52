/* tests/test_train.c — small models learn on every usable device.
 *
 * End to end: forward, kiln_backward, an optimiser, compile, and many runs,
 * each of which takes one step. Initial values come from a fixed-seed
 * generator here (the library's initialisers are tested on their own), so a
 * failure repeats exactly.
 */
#include "backends.h"
#include "reference.h"

#include <math.h>
#include <string.h>

static void write_or_fail(kiln_tensor *t, const void *data, size_t nbytes)
{
    kiln_status st = kiln_tensor_write(t, data, nbytes);
    cr_assert_eq(st, KILN_OK, "writing '%s': %s", kiln_tensor_name(t), kiln_last_error());
}

static void read_or_fail(const kiln_tensor *t, void *data, size_t nbytes)
{
    kiln_status st = kiln_tensor_read(t, data, nbytes);
    cr_assert_eq(st, KILN_OK, "reading '%s': %s", kiln_tensor_name(t), kiln_last_error());
}

/* Differentiates, adds the optimiser, compiles; fails the test on any error. */
static void prepare(kiln_graph *g, kiln_tensor *loss,
                    kiln_optimizer *(*make)(kiln_graph *))
{
    cr_assert_eq(kiln_graph_status(g), KILN_OK, "building: %s", kiln_graph_error(g));
    cr_assert_eq(kiln_output(g, loss), KILN_OK, "%s", kiln_last_error());
    cr_assert_eq(kiln_backward(g, loss), KILN_OK, "kiln_backward: %s", kiln_last_error());
    cr_assert_not_null(make(g), "optimiser: %s", kiln_last_error());
    cr_assert_eq(kiln_graph_compile(g), KILN_OK, "compile: %s", kiln_last_error());
}

static void train(kiln_graph *g, int steps, const char *spec)
{
    for (int s = 0; s < steps; s++) {
        kiln_status st = kiln_graph_run(g);
        cr_assert_eq(st, KILN_OK, "on %s, step %d: %s", spec, s, kiln_last_error());
    }
}

/* ---- linear regression ------------------------------------------------------------------- */

enum { LR_N = 32, LR_D = 3 };

static kiln_optimizer *linear_sgd(kiln_graph *g)
{
    return kiln_sgd(g, 0.1f, 0.5f, 0.0f);
}

BACKEND_TEST(train, linear_regression_recovers_the_coefficients_with_sgd_and_mse)
{
    static const float w_true[LR_D] = {1.5f, -2.0f, 0.5f}, b_true = 0.3f;
    float              xs[LR_N * LR_D], ys[LR_N], w0[LR_D] = {0}, b0 = 0.0f;
    ref_fill_uniform(xs, LR_N * LR_D, 2024, -1.0f, 1.0f);
    for (int i = 0; i < LR_N; i++) {
        double y = b_true;
        for (int j = 0; j < LR_D; j++)
            y += (double)xs[i * LR_D + j] * w_true[j];
        ys[i] = (float)y;
    }

    kiln_context *ctx  = test_backend_context(backend);
    kiln_graph   *g    = kiln_graph_new(ctx);
    kiln_tensor  *x    = kiln_input(g, "x", KILN_F32, KILN_SHAPE(LR_N, LR_D));
    kiln_tensor  *y    = kiln_input(g, "y", KILN_F32, KILN_SHAPE(LR_N, 1));
    kiln_tensor  *w    = kiln_param(g, "w", KILN_SHAPE(LR_D, 1));
    kiln_tensor  *b    = kiln_param(g, "b", KILN_SHAPE(1));
    kiln_tensor  *loss = kiln_mse_loss(g, kiln_add(g, kiln_matmul(g, x, w), b), y);
    prepare(g, loss, linear_sgd);
    write_or_fail(x, xs, sizeof xs);
    write_or_fail(y, ys, sizeof ys);
    write_or_fail(w, w0, sizeof w0);
    write_or_fail(b, &b0, sizeof b0);

    float first, last;
    train(g, 1, backend->label);
    read_or_fail(loss, &first, sizeof first);
    train(g, 299, backend->label);
    read_or_fail(loss, &last, sizeof last);
    float w_got[LR_D], b_got;
    read_or_fail(w, w_got, sizeof w_got);
    read_or_fail(b, &b_got, sizeof b_got);
    for (int j = 0; j < LR_D; j++)
        cr_expect(fabsf(w_got[j] - w_true[j]) < 1e-3f,
                  "on %s: w[%d] = %g, expected %g "
                  "(loss %g after the first step, %g after the last)",
                  backend->label, j, (double)w_got[j], (double)w_true[j], (double)first,
                  (double)last);
    cr_expect(fabsf(b_got - b_true) < 1e-3f, "on %s: b = %g, expected %g", backend->label,
              (double)b_got, (double)b_true);
    cr_expect(last < 1e-6f, "on %s: the loss went from %g to %g only", backend->label,
              (double)first, (double)last);
    kiln_graph_free(g);
    kiln_context_free(ctx);
}

/* ---- XOR ------------------------------------------------------------------------------------- */

enum { XOR_HIDDEN = 8 };

static kiln_optimizer *xor_adam(kiln_graph *g)
{
    return kiln_adam(g, 0.05f, 0.9f, 0.999f, 1e-8f, 0.0f);
}

BACKEND_TEST(train, mlp_learns_xor_with_adam_and_cross_entropy)
{
    static const float   xs[4 * 2] = {0, 0, 0, 1, 1, 0, 1, 1};
    static const int32_t labels[4] = {0, 1, 1, 0};
    float w1[2 * XOR_HIDDEN], w2[XOR_HIDDEN * 2], b1[XOR_HIDDEN] = {0}, b2[2] = {0};
    ref_fill_uniform(w1, 2 * XOR_HIDDEN, 7, -1.0f, 1.0f);
    ref_fill_uniform(w2, XOR_HIDDEN * 2, 8, -1.0f, 1.0f);

    kiln_context *ctx    = test_backend_context(backend);
    kiln_graph   *g      = kiln_graph_new(ctx);
    kiln_tensor  *x      = kiln_input(g, "x", KILN_F32, KILN_SHAPE(4, 2));
    kiln_tensor  *y      = kiln_input(g, "y", KILN_I32, KILN_SHAPE(4));
    kiln_tensor  *pw1    = kiln_param(g, "w1", KILN_SHAPE(2, XOR_HIDDEN));
    kiln_tensor  *pb1    = kiln_param(g, "b1", KILN_SHAPE(XOR_HIDDEN));
    kiln_tensor  *pw2    = kiln_param(g, "w2", KILN_SHAPE(XOR_HIDDEN, 2));
    kiln_tensor  *pb2    = kiln_param(g, "b2", KILN_SHAPE(2));
    kiln_tensor  *h      = kiln_tanh(g, kiln_add(g, kiln_matmul(g, x, pw1), pb1));
    kiln_tensor  *logits = kiln_add(g, kiln_matmul(g, h, pw2), pb2);
    kiln_tensor  *pred   = kiln_argmax(g, logits);
    kiln_output(g, pred);
    kiln_tensor *loss = kiln_cross_entropy(g, logits, y);
    prepare(g, loss, xor_adam);
    write_or_fail(x, xs, sizeof xs);
    write_or_fail(y, labels, sizeof labels);
    write_or_fail(pw1, w1, sizeof w1);
    write_or_fail(pb1, b1, sizeof b1);
    write_or_fail(pw2, w2, sizeof w2);
    write_or_fail(pb2, b2, sizeof b2);

    float first, last;
    train(g, 1, backend->label);
    read_or_fail(loss, &first, sizeof first);
    train(g, 299, backend->label);
    /* the loss and predictions of the trained parameters, without a step */
    cr_assert_eq(kiln_graph_eval(g, loss), KILN_OK, "%s", kiln_last_error());
    cr_assert_eq(kiln_graph_eval(g, pred), KILN_OK, "%s", kiln_last_error());
    read_or_fail(loss, &last, sizeof last);
    int32_t got[4];
    read_or_fail(pred, got, sizeof got);
    cr_expect(last < 0.05f, "on %s: the loss went from %g to %g only", backend->label,
              (double)first, (double)last);
    for (int i = 0; i < 4; i++)
        cr_expect_eq(got[i], labels[i], "on %s: XOR(%g, %g) predicted %d (loss %g)",
                     backend->label, (double)xs[2 * i], (double)xs[2 * i + 1], got[i],
                     (double)last);
    kiln_graph_free(g);
    kiln_context_free(ctx);
}

/* ---- AdamW and clipping ------------------------------------------------------------------ */

enum { AW_N = 4, AW_D = 3, AW_O = 2 };

typedef struct aw_model {
    kiln_graph  *g;
    kiln_tensor *x, *y, *w, *b, *loss;
} aw_model;

static aw_model aw_build(kiln_context *ctx)
{
    aw_model m;
    m.g    = kiln_graph_new(ctx);
    m.x    = kiln_input(m.g, "x", KILN_F32, KILN_SHAPE(AW_N, AW_D));
    m.y    = kiln_input(m.g, "y", KILN_F32, KILN_SHAPE(AW_N, AW_O));
    m.w    = kiln_param(m.g, "w", KILN_SHAPE(AW_D, AW_O));
    m.b    = kiln_param(m.g, "b", KILN_SHAPE(AW_O));
    m.loss = kiln_mse_loss(m.g, kiln_add(m.g, kiln_matmul(m.g, m.x, m.w), m.b), m.y);
    cr_assert_eq(kiln_graph_status(m.g), KILN_OK, "building: %s", kiln_graph_error(m.g));
    cr_assert_eq(kiln_backward(m.g, m.loss), KILN_OK, "%s", kiln_last_error());
    return m;
}

static void aw_write(aw_model *m, const float *xs, const float *ys, const float *w,
                     const float *b)
{
    write_or_fail(m->x, xs, AW_N * AW_D * sizeof *xs);
    write_or_fail(m->y, ys, AW_N * AW_O * sizeof *ys);
    write_or_fail(m->w, w, AW_D * AW_O * sizeof *w);
    write_or_fail(m->b, b, AW_O * sizeof *b);
}

/* Two steps of kiln_clip_grad_norm + kiln_adamw against PyTorch's updates
 * computed here in double from the gradients kiln_backward gives on the same
 * device (checked against finite differences in test_autodiff): the norm
 * is the global one, the gradients are scaled when it exceeds max_norm, and
 * the weight decay shrinks the matrix w, not the bias b. */
BACKEND_TEST(train, adamw_with_clipping_takes_pytorchs_steps)
{
    const float lr = 0.1f, b1 = 0.9f, b2 = 0.95f, eps = 1e-8f, wd = 0.1f, max_norm = 0.05f;
    float       xs[AW_N * AW_D], ys[AW_N * AW_O], w[AW_D * AW_O], b[AW_O];
    ref_fill_uniform(xs, AW_N * AW_D, 11, -1.0f, 1.0f);
    ref_fill_uniform(ys, AW_N * AW_O, 12, -1.0f, 1.0f);
    ref_fill_uniform(w, AW_D * AW_O, 13, -0.5f, 0.5f);
    ref_fill_uniform(b, AW_O, 14, -0.5f, 0.5f);

    kiln_context *ctx = test_backend_context(backend);
    aw_model      ref = aw_build(ctx); /* gradients only */
    kiln_tensor  *gw = kiln_grad(ref.g, ref.w), *gb = kiln_grad(ref.g, ref.b);
    cr_assert(gw && gb, "%s", kiln_last_error());
    cr_assert_eq(kiln_graph_compile(ref.g), KILN_OK, "%s", kiln_last_error());

    aw_model     run  = aw_build(ctx);
    kiln_tensor *norm = kiln_clip_grad_norm(run.g, max_norm);
    cr_assert_not_null(norm, "kiln_clip_grad_norm: %s", kiln_last_error());
    cr_assert_not_null(kiln_adamw(run.g, lr, b1, b2, eps, wd), "%s", kiln_last_error());
    cr_assert_eq(kiln_graph_compile(run.g), KILN_OK, "%s", kiln_last_error());
    aw_write(&run, xs, ys, w, b);

    double pw[AW_D * AW_O], pb[AW_O], m[AW_D * AW_O + AW_O] = {0},
                                      v[AW_D * AW_O + AW_O] = {0};
    for (int i = 0; i < AW_D * AW_O; i++)
        pw[i] = w[i];
    for (int i = 0; i < AW_O; i++)
        pb[i] = b[i];
    for (int t = 1; t <= 2; t++) {
        float cur_w[AW_D * AW_O], cur_b[AW_O], grad[AW_D * AW_O + AW_O];
        for (int i = 0; i < AW_D * AW_O; i++)
            cur_w[i] = (float)pw[i];
        for (int i = 0; i < AW_O; i++)
            cur_b[i] = (float)pb[i];
        aw_write(&ref, xs, ys, cur_w, cur_b);
        cr_assert_eq(kiln_graph_run(ref.g), KILN_OK, "%s", kiln_last_error());
        read_or_fail(gw, grad, AW_D * AW_O * sizeof(float));
        read_or_fail(gb, grad + AW_D * AW_O, AW_O * sizeof(float));
        double sumsq = 0;
        for (int i = 0; i < AW_D * AW_O + AW_O; i++)
            sumsq += (double)grad[i] * grad[i];
        double total = sqrt(sumsq), clip = fmin(1.0, max_norm / (total + 1e-6));
        cr_assert(clip < 1.0, "the test means to clip: norm %g", total);
        for (int i = 0; i < AW_D * AW_O + AW_O; i++) {
            bool    matrix = i < AW_D * AW_O;
            double *p      = matrix ? &pw[i] : &pb[i - AW_D * AW_O];
            double  gi     = clip * grad[i];
            if (matrix)
                *p *= 1.0 - (double)lr * wd;
            m[i] = b1 * m[i] + (1 - (double)b1) * gi;
            v[i] = b2 * v[i] + (1 - (double)b2) * gi * gi;
            double mh = m[i] / (1 - pow(b1, t)), vh = v[i] / (1 - pow(b2, t));
            *p -= lr * mh / (sqrt(vh) + eps);
        }

        cr_assert_eq(kiln_graph_run(run.g), KILN_OK, "%s", kiln_last_error());
        float got_norm, got_w[AW_D * AW_O], got_b[AW_O];
        read_or_fail(norm, &got_norm, sizeof got_norm);
        read_or_fail(run.w, got_w, sizeof got_w);
        read_or_fail(run.b, got_b, sizeof got_b);
        cr_expect(fabs(got_norm - total) <= 1e-5 * total + 1e-7,
                  "on %s, step %d: norm %.9g, expected %.9g", backend->label, t,
                  (double)got_norm, total);
        for (int i = 0; i < AW_D * AW_O; i++)
            cr_expect(fabs(got_w[i] - pw[i]) <= 1e-5,
                      "on %s, step %d: w[%d] = %.9g, expected %.9g", backend->label, t, i,
                      (double)got_w[i], pw[i]);
        for (int i = 0; i < AW_O; i++)
            cr_expect(fabs(got_b[i] - pb[i]) <= 1e-5,
                      "on %s, step %d: b[%d] = %.9g, expected %.9g", backend->label, t, i,
                      (double)got_b[i], pb[i]);
    }
    kiln_graph_free(run.g);
    kiln_graph_free(ref.g);
    kiln_context_free(ctx);
}

Test(train, clipping_is_refused_where_it_cannot_apply)
{
    kiln_context *ctx = test_context("cpu");
    kiln_graph   *g   = kiln_graph_new(ctx);
    kiln_tensor  *w   = kiln_param(g, "w", KILN_SHAPE(3));
    kiln_tensor  *l   = kiln_sum(g, kiln_mul(g, w, w));
    cr_assert_null(kiln_clip_grad_norm(g, 1.0f));
    cr_assert(strstr(kiln_last_error(), "call kiln_backward first"), "%s",
              kiln_last_error());
    cr_assert_eq(kiln_backward(g, l), KILN_OK, "%s", kiln_last_error());
    cr_assert_null(kiln_clip_grad_norm(g, 0.0f));
    cr_assert(strstr(kiln_last_error(), "max_norm 0, expected a finite value > 0"), "%s",
              kiln_last_error());
    cr_assert_null(kiln_clip_grad_norm(g, NAN));
    cr_assert_not_null(kiln_clip_grad_norm(g, 1.0f), "%s", kiln_last_error());
    cr_assert_null(kiln_clip_grad_norm(g, 1.0f));
    cr_assert(strstr(kiln_last_error(), "already clipped"), "%s", kiln_last_error());
    cr_assert_not_null(kiln_adamw(g, 0.1f, 0.9f, 0.95f, 1e-8f, 0.1f), "%s",
                       kiln_last_error());
    kiln_graph_free(g);

    g = kiln_graph_new(ctx);
    w = kiln_param(g, "w", KILN_SHAPE(3));
    cr_assert_eq(kiln_backward(g, kiln_sum(g, kiln_mul(g, w, w))), KILN_OK);
    cr_assert_not_null(kiln_sgd(g, 0.1f, 0.0f, 0.0f));
    cr_assert_null(kiln_clip_grad_norm(g, 1.0f));
    cr_assert(strstr(kiln_last_error(), "already has an optimiser"), "%s",
              kiln_last_error());
    cr_assert_null(kiln_adamw(g, -1.0f, 0.9f, 0.95f, 1e-8f, 0.1f));
    kiln_graph_free(g);
    kiln_context_free(ctx);
}
