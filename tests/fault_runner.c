/* tests/fault_runner.c — a small program on the whole path a user takes
 * (load the plugins, build an MLP with its gradients and an optimiser,
 * compile, write inputs, run two steps, save the weights, load them into a
 * second graph and compare), for the fault sweep of tests/test_faults.c.
 *
 *   fault_runner FILE         FILE: where the weights are saved
 *
 * KILN_TEST_FAIL_MALLOC=N arms the preloaded malloc shim (tests/malloc-fail.c)
 * at the start of main: N allocations succeed, the next one fails.
 * KILN_TEST_FAIL_CL=N:STATUS arms the preloaded clCreateBuffer shim
 * (tests/cl-fail.c) the same way, the failing call returning STATUS. At the
 * end it prints "refused R" on stdout: how many calls the shim failed (0:
 * the path ended before the failure point). When a call fails, the whole
 * path is taken again, the failure past: it must then work, as it does once
 * memory is back. Exit status 0 when everything worked the first time, 1
 * when a call failed with kiln's message on stderr and the second attempt
 * worked, 4 when the second attempt failed too, 3 on a wrong result, 2 when
 * the shim it was asked to arm is not loaded.
 */
#include <kiln/kiln.h>

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { BATCH = 8, IN = 6, HIDDEN = 10, OUT = 3 };

typedef void (*arm_fn)(long allow, int arg);
typedef long (*disarm_fn)(void);

static disarm_fn disarm;

/* Arms the shim named by env (its arm and disarm symbols); 0, or 2 when the
 * variable is set but the shim is missing. */
static int arm(const char *env, const char *arm_name, const char *disarm_name,
               int default_arg)
{
    const char *v = getenv(env);
    if (!v)
        return 0;
    arm_fn a;
    *(void **)&a      = dlsym(RTLD_DEFAULT, arm_name);
    *(void **)&disarm = dlsym(RTLD_DEFAULT, disarm_name);
    if (!a || !disarm) {
        fprintf(stderr, "fault_runner: %s is set but %s is not preloaded\n", env, arm_name);
        return 2;
    }
    char *end;
    long  n   = strtol(v, &end, 10);
    int   arg = *end == ':' ? atoi(end + 1) : default_arg;
    a(n, arg);
    return 0;
}

static int fail(const char *what)
{
    const char *msg = kiln_last_error();
    fprintf(stderr, "fault_runner: %s: %s\n", what, msg && *msg ? msg : "(no message)");
    return 1;
}

/* x -> dense -> relu -> dense -> cross_entropy, with Adam. */
static kiln_graph *build(kiln_context *ctx, kiln_tensor **x, kiln_tensor **y, bool train)
{
    kiln_graph *g = kiln_graph_new(ctx);
    if (!g)
        return NULL;
    kiln_graph_seed(g, 3);
    *x                  = kiln_input(g, "x", KILN_F32, KILN_SHAPE(BATCH, IN));
    *y                  = kiln_input(g, "y", KILN_I32, KILN_SHAPE(BATCH));
    kiln_tensor *h      = kiln_relu(g, kiln_dense(g, *x, HIDDEN, "fc1"));
    kiln_tensor *logits = kiln_dense(g, h, OUT, "fc2");
    kiln_tensor *loss   = kiln_cross_entropy(g, logits, *y);
    if (train && (kiln_backward(g, loss) != KILN_OK || !kiln_adam(g, 0.01f, 0.9f, 0.999f, 1e-8f, 0.0f)))
        return g; /* the sticky error surfaces at compile */
    return g;
}

static int run(const char *file)
{
    kiln_context *ctx = kiln_context_new();
    if (!ctx)
        return fail("kiln_context_new");
    int          rc = 1;
    kiln_tensor *x, *y, *x2, *y2;
    kiln_graph  *g = build(ctx, &x, &y, true), *h = NULL;
    float        xs[BATCH * IN], w[IN * HIDDEN], w2[IN * HIDDEN];
    int32_t      ys[BATCH];
    for (int i = 0; i < BATCH * IN; i++)
        xs[i] = (float)((i * 7) % 11) / 11.0f - 0.5f;
    for (int i = 0; i < BATCH; i++)
        ys[i] = i % OUT;
    if (!g)
        rc = fail("kiln_graph_new");
    else if (kiln_graph_compile(g) != KILN_OK)
        rc = fail("kiln_graph_compile");
    else if (kiln_tensor_write(x, xs, sizeof xs) != KILN_OK ||
             kiln_tensor_write(y, ys, sizeof ys) != KILN_OK)
        rc = fail("kiln_tensor_write");
    else if (kiln_graph_run(g) != KILN_OK || kiln_graph_run(g) != KILN_OK)
        rc = fail("kiln_graph_run");
    else if (kiln_save(g, file) != KILN_OK)
        rc = fail("kiln_save");
    else if (!(h = build(ctx, &x2, &y2, false)))
        rc = fail("kiln_graph_new");
    else if (kiln_graph_compile(h) != KILN_OK)
        rc = fail("kiln_graph_compile (second graph)");
    else if (kiln_load(h, file) != KILN_OK)
        rc = fail("kiln_load");
    else if (kiln_tensor_read(kiln_graph_find(g, "fc1.weight"), w, sizeof w) != KILN_OK ||
             kiln_tensor_read(kiln_graph_find(h, "fc1.weight"), w2, sizeof w2) != KILN_OK)
        rc = fail("kiln_tensor_read");
    else if (memcmp(w, w2, sizeof w) != 0) {
        fprintf(stderr, "fault_runner: the weights loaded differ from those saved\n");
        rc = 3; /* a wrong result: never an acceptable outcome */
    } else
        rc = 0;
    kiln_graph_free(h);
    kiln_graph_free(g);
    kiln_context_free(ctx);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: fault_runner FILE\n");
        return 2;
    }
    int st = arm("KILN_TEST_FAIL_MALLOC", "kiln_test_malloc_arm",
                 "kiln_test_malloc_disarm", 0);
    if (st == 0)
        st = arm("KILN_TEST_FAIL_CL", "kiln_test_cl_arm", "kiln_test_cl_disarm",
                 -4 /* CL_MEM_OBJECT_ALLOCATION_FAILURE */);
    if (st != 0)
        return st;
    int  rc      = run(argv[1]);
    long refused = disarm ? disarm() : 0;
    printf("refused %ld\n", refused);
    if (rc == 1) {
        int again = run(argv[1]);
        if (again != 0)
            fprintf(stderr, "fault_runner: the second attempt, with memory back, "
                            "failed too\n");
        rc = again == 0 ? 1 : again == 1 ? 4 : again;
    }
    return rc;
}
