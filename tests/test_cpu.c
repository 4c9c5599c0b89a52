/* tests/test_cpu.c — the cpu backend's choices: which kernels it runs
 * (KILN_CPU_ISA, cpuid and XCR0), how many threads (KILN_NUM_THREADS), and
 * that what it computes does not depend on either.
 *
 * The backend reads both variables when the device is described (once per
 * process, when kiln first loads its plugins) and when it is opened. Each
 * Criterion test runs in a process of its own, and nothing here touches kiln
 * in the runner, so a test sets the variables and then sees them honoured.
 * Which ISAs the machine has is found independently, with the compiler's
 * cpuid check (tests/backends.c), and compared with what the backend says.
 */
#include "backends.h"
#include "reference.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The cpu device's report; asserts there is one. */
static const kiln_device_report *cpu_device(void)
{
    const kiln_device_report *d;
    size_t                    n = kiln_devices(&d);
    for (size_t i = 0; i < n; i++)
        if (d[i].backend && strcmp(d[i].backend, "cpu") == 0)
            return &d[i];
    cr_assert_fail("no cpu device (KILN_PLUGIN_PATH=%s)", getenv("KILN_PLUGIN_PATH"));
    return NULL;
}

static const char *best_isa(void)
{
    const char *isas[3];
    return isas[test_cpu_isas(isas) - 1];
}

static void expect_contains(const char *text, const char *part)
{
    cr_assert(strstr(text, part) != NULL, "expected \"%s\" in \"%s\"", part, text);
}

/* A 37x29 @ 29x45 matmul on a fresh context, checked against the reference. */
static void expect_matmul_works(void)
{
    enum { M = 37, K = 29, N = 45 };
    static float a[M * K], b[K * N], got[M * N], want[M * N];
    ref_fill(a, M * K, 1);
    ref_fill(b, K * N, 2);
    kiln_context *ctx = test_context("cpu");
    kiln_graph   *g   = kiln_graph_new(ctx);
    kiln_tensor  *ta  = kiln_input(g, "a", KILN_F32, KILN_SHAPE(M, K));
    kiln_tensor  *tb  = kiln_input(g, "b", KILN_F32, KILN_SHAPE(K, N));
    kiln_tensor  *y   = kiln_matmul(g, ta, tb);
    cr_assert_eq(kiln_output(g, y), KILN_OK);
    cr_assert_eq(kiln_graph_compile(g), KILN_OK, "%s", kiln_graph_error(g));
    cr_assert_eq(kiln_tensor_write(ta, a, sizeof a), KILN_OK);
    cr_assert_eq(kiln_tensor_write(tb, b, sizeof b), KILN_OK);
    cr_assert_eq(kiln_graph_run(g), KILN_OK, "%s", kiln_last_error());
    cr_assert_eq(kiln_tensor_read(y, got, sizeof got), KILN_OK);
    ref_matmul(a, b, M, K, N, false, false, want);
    ref_expect_close("matmul on the cpu device", got, want,
                     ref_shape_of(KILN_SHAPE(M, N)), (ref_tol){1e-4, 1e-5});
    kiln_graph_free(g);
    kiln_context_free(ctx);
}

/* ---- ISA ----------------------------------------------------------------------- */

Test(cpu_isa, runs_the_best_isa_of_the_machine_by_default)
{
    unsetenv("KILN_CPU_ISA");
    const kiln_device_report *d = cpu_device();
    char                      want[64];
    snprintf(want, sizeof want, "%s kernels (the best this machine supports", best_isa());
    cr_assert(strncmp(d->description, want, strlen(want)) == 0,
              "description \"%s\" does not start with \"%s\"", d->description, want);
    expect_matmul_works();
}

Test(cpu_isa, lists_the_isas_the_machine_has_as_the_compiler_finds_them)
{
    const char *isas[3];
    size_t      n        = test_cpu_isas(isas);
    char        want[64] = "ISAs here:";
    for (size_t i = n; i-- > 0;)
        snprintf(want + strlen(want), sizeof want - strlen(want), " %s", isas[i]);
    expect_contains(cpu_device()->description, want);
}

typedef struct isa_param {
    char isa[16];
} isa_param;

static void free_isa_params(struct criterion_test_params *p)
{
    cr_free(p->params);
}

ParameterizedTestParameters(cpu_isa, each_available_isa_can_be_chosen)
{
    const char *isas[3];
    size_t      n = test_cpu_isas(isas);
    isa_param  *p = cr_malloc(n * sizeof *p);
    if (!p)
        abort();
    for (size_t i = 0; i < n; i++)
        snprintf(p[i].isa, sizeof p[i].isa, "%s", isas[i]);
    return cr_make_param_array(isa_param, p, n, free_isa_params);
}

ParameterizedTest(isa_param *p, cpu_isa, each_available_isa_can_be_chosen)
{
    setenv("KILN_CPU_ISA", p->isa, 1);
    const kiln_device_report *d = cpu_device();
    char                      want[64];
    snprintf(want, sizeof want, "%s kernels (", p->isa);
    cr_assert(strncmp(d->description, want, strlen(want)) == 0,
              "KILN_CPU_ISA=%s: description \"%s\"", p->isa, d->description);
    if (strcmp(p->isa, best_isa()) != 0) {
        snprintf(want, sizeof want, "capped by KILN_CPU_ISA=%s", p->isa);
        expect_contains(d->description, want);
    }
    expect_matmul_works();
}

Test(cpu_isa, asking_for_more_than_the_machine_has_runs_the_best_and_says_so)
{
    const char *best = best_isa();
    setenv("KILN_CPU_ISA", "avx512", 1);
    const kiln_device_report *d = cpu_device();
    char                      want[64];
    snprintf(want, sizeof want, "%s kernels (", best);
    cr_assert(strncmp(d->description, want, strlen(want)) == 0, "%s", d->description);
    if (strcmp(best, "avx512") != 0)
        expect_contains(d->description, "asks for more than this machine has");
    expect_matmul_works();
}

Test(cpu_isa, an_unknown_value_is_ignored_and_said_so)
{
    setenv("KILN_CPU_ISA", "sse9", 1);
    const kiln_device_report *d = cpu_device();
    cr_assert_null(d->unusable, "the device must stay usable");
    expect_contains(d->description,
                    "KILN_CPU_ISA='sse9' is not scalar, avx2 or avx512: ignored");
    expect_matmul_works();
}

/* ---- threads ----------------------------------------------------------------- */

Test(cpu_threads, come_from_KILN_NUM_THREADS)
{
    setenv("KILN_NUM_THREADS", "3", 1);
    const kiln_device_report *d = cpu_device();
    expect_contains(d->name, "3 threads");
    expect_contains(d->description, "KILN_NUM_THREADS=3");
    expect_matmul_works();
}

Test(cpu_threads, an_invalid_count_is_ignored_and_said_so)
{
    setenv("KILN_NUM_THREADS", "0", 1);
    const kiln_device_report *d = cpu_device();
    expect_contains(d->description, "KILN_NUM_THREADS='0' is not in [1, 256]: ignored");
    expect_matmul_works();
}

/* Products and convolutions split across threads in different ways give the
 * reference's results with 1, 2, 3 and 5 threads. */
Test(cpu_threads, results_do_not_depend_on_the_thread_count)
{
    enum { M = 131, K = 257, N = 97 };
    static const ref_conv2d_shape cs = {5, 3, 17, 19, 7, 3, 3, 1, 1};
    static float                  a[M * K], b[K * N], mm[M * N], want_mm[M * N];
    static float                  x[5 * 3 * 17 * 19], w[7 * 3 * 9], bias[7];
    static float                  conv[5 * 7 * 17 * 19], want_conv[5 * 7 * 17 * 19];
    ref_fill(a, M * K, 1);
    ref_fill(b, K * N, 2);
    ref_fill(x, sizeof x / sizeof x[0], 3);
    ref_fill(w, sizeof w / sizeof w[0], 4);
    ref_fill(bias, 7, 5);
    ref_matmul(a, b, M, K, N, false, true, want_mm);
    ref_conv2d(x, w, bias, cs, want_conv);
    static const char *const counts[] = {"1", "2", "3", "5"};
    for (size_t t = 0; t < sizeof counts / sizeof counts[0]; t++) {
        setenv("KILN_NUM_THREADS", counts[t], 1);
        kiln_context *ctx   = test_context("cpu");
        kiln_graph   *g     = kiln_graph_new(ctx);
        kiln_tensor  *ta    = kiln_input(g, "a", KILN_F32, KILN_SHAPE(M, K));
        kiln_tensor  *tb    = kiln_input(g, "b", KILN_F32, KILN_SHAPE(N, K));
        kiln_tensor  *tx    = kiln_input(g, "x", KILN_F32, KILN_SHAPE(5, 3, 17, 19));
        kiln_tensor  *tw    = kiln_input(g, "w", KILN_F32, KILN_SHAPE(7, 3, 3, 3));
        kiln_tensor  *tbias = kiln_input(g, "bias", KILN_F32, KILN_SHAPE(7));
        kiln_tensor  *y     = kiln_matmul_t(g, ta, tb, false, true);
        kiln_tensor  *c     = kiln_conv2d(g, tx, tw, tbias, 1, 1);
        cr_assert_eq(kiln_output(g, y), KILN_OK);
        cr_assert_eq(kiln_output(g, c), KILN_OK);
        cr_assert_eq(kiln_graph_compile(g), KILN_OK, "%s", kiln_graph_error(g));
        kiln_tensor_write(ta, a, sizeof a);
        kiln_tensor_write(tb, b, sizeof b);
        kiln_tensor_write(tx, x, sizeof x);
        kiln_tensor_write(tw, w, sizeof w);
        kiln_tensor_write(tbias, bias, sizeof bias);
        cr_assert_eq(kiln_graph_run(g), KILN_OK, "%s", kiln_last_error());
        kiln_tensor_read(y, mm, sizeof mm);
        kiln_tensor_read(c, conv, sizeof conv);
        char what[64];
        snprintf(what, sizeof what, "matmul with %s threads", counts[t]);
        ref_expect_close(what, mm, want_mm, ref_shape_of(KILN_SHAPE(M, N)),
                         (ref_tol){1e-3, 1e-5});
        snprintf(what, sizeof what, "conv2d with %s threads", counts[t]);
        ref_expect_close(what, conv, want_conv, ref_shape_of(KILN_SHAPE(5, 7, 17, 19)),
                         (ref_tol){1e-4, 1e-5});
        kiln_graph_free(g);
        kiln_context_free(ctx);
    }
}
