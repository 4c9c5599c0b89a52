/* tests/test_comm.c — communicators as one process sees them, checkpoints,
 * and data-parallel training's rules.
 *
 * The loopback plugin is the job of one process that the suite always has;
 * test_mpi.sh runs the same collectives and data-parallel training on
 * Open MPI with several processes (comm_runner). Here, comm_runner runs
 * once on the loopback, and the checkpoints are checked against a run that
 * was never interrupted: resumed from a checkpoint, training must reach the
 * same parameters bit for bit, on every backend.
 */
#include "backends.h"
#include "child.h"
#include "expect.h"

#include <kiln/comm.h>

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- opening --------------------------------------------------------------------- */

Test(comm, the_loopback_is_a_job_of_one_process)
{
    kiln_comm *c = kiln_comm_open("loopback");
    cr_assert_not_null(c, "%s", kiln_last_error());
    cr_assert_str_eq(kiln_comm_name(c), "loopback");
    cr_assert_eq(kiln_comm_rank(c), 0);
    cr_assert_eq(kiln_comm_size(c), 1);
    cr_assert_eq(kiln_comm_local_rank(c), 0);
    cr_assert_eq(kiln_comm_local_size(c), 1);
    double v[2] = {1.5, -2};
    expect_ok(kiln_comm_allreduce(c, v, 2, true), "kiln_comm_allreduce");
    cr_assert(v[0] == 1.5 && v[1] == -2);
    expect_ok(kiln_comm_barrier(c), "kiln_comm_barrier");
    cr_assert_eq(kiln_comm_bytes(c), 16u);
    cr_assert_eq(kiln_comm_broadcast(c, v, sizeof v, 1), KILN_ERR_INVALID_ARG);
    cr_assert(strstr(kiln_last_error(), "root 1, expected a rank in [0, 1)"), "%s",
              kiln_last_error());
    /* MPI starts once per process: one communicator at a time */
    cr_assert_null(kiln_comm_open("loopback"));
    cr_assert(strstr(kiln_last_error(), "open already"), "%s", kiln_last_error());
    kiln_comm_close(c);
    c = kiln_comm_open(NULL); /* no mpirun here: the loopback wins */
    cr_assert_not_null(c, "%s", kiln_last_error());
    cr_assert_str_eq(kiln_comm_name(c), "loopback");
    kiln_comm_close(c);
}

Test(comm, a_name_that_matches_no_plugin_lists_what_was_found)
{
    cr_assert_null(kiln_comm_open("nccl"));
    const char *e = kiln_last_error();
    cr_assert(strstr(e, "no communicator plugin is named \"nccl\""), "%s", e);
    cr_assert(strstr(e, "Found: ") && strstr(e, "loopback"), "%s", e);
}

Test(comm, the_plugins_found_are_listed_with_their_probes)
{
    const kiln_plugin_report *r;
    size_t                    n = kiln_comm_plugins(&r);
    bool                      loopback = false;
    for (size_t i = 0; i < n; i++) {
        cr_assert(r[i].reason || r[i].name, "%s: neither a name nor a reason", r[i].path);
        loopback |= r[i].name && strcmp(r[i].name, "loopback") == 0 && r[i].score == 1;
        /* not started by mpirun: the mpi plugin is usable but scores 0 */
        if (r[i].name && strcmp(r[i].name, "mpi") == 0)
            cr_assert_eq(r[i].score, 0);
    }
    cr_assert(loopback, "the loopback is not among the %zu communicators", n);
    const kiln_plugin_report *again;
    cr_assert_eq(kiln_comm_plugins(&again), n);
    cr_assert_eq(again, r, "a second call made a new list");
    /* the choice kiln_comm_open makes: no mpirun here, so the loopback */
    size_t k;
    expect_ok(kiln_comm_select(NULL, &k), "kiln_comm_select");
    cr_assert(k < n && strcmp(r[k].name, "loopback") == 0, "chose %s",
              k < n ? r[k].path : "nothing");
    expect_ok(kiln_comm_select("LOOPBACK", &k), "kiln_comm_select by name");
    cr_assert_str_eq(r[k].name, "loopback");
    cr_assert_eq(kiln_comm_select("nccl", &k), KILN_ERR_NOT_FOUND);
    cr_assert(strstr(kiln_last_error(), "no communicator plugin is named \"nccl\""), "%s",
              kiln_last_error());
    cr_assert_eq(kiln_comm_select(NULL, NULL), KILN_ERR_INVALID_ARG);
}

Test(comm, a_bad_timeout_is_refused_by_its_value)
{
    setenv("KILN_COMM_TIMEOUT", "soon", 1);
    cr_assert_null(kiln_comm_open("loopback"));
    cr_assert(strstr(kiln_last_error(), "KILN_COMM_TIMEOUT=\"soon\": expected a number of "
                                        "seconds"),
              "%s", kiln_last_error());
    setenv("KILN_COMM_TIMEOUT", "0", 1);
    cr_assert_null(kiln_comm_open("loopback"));
    unsetenv("KILN_COMM_TIMEOUT");
}

Test(comm, a_plugin_of_another_abi_or_a_file_that_is_none_is_refused)
{
    /* a compute backend is no communicator, and a non-ELF file is checked
     * before dlopen */
    char path[8192];
    snprintf(path, sizeof path, "%s:%s/plugins/garbage", getenv("KILN_CPU_PLUGIN"),
             getenv("KILN_TEST_SRCDIR"));
    setenv("KILN_COMM_PATH", path, 1);
    cr_assert_null(kiln_comm_open(NULL));
    const char *e = kiln_last_error();
    cr_assert(strstr(e, "no communicator plugin accepts this process"), "%s", e);
    cr_assert(strstr(e, "kiln-cpu.so (no symbol kiln_comm_entry"), "%s", e);
    cr_assert(strstr(e, "kiln-garbage.so ("), "%s", e);
}

Test(comm, runner_on_the_loopback)
{
    child_result r = child_run("comm_runner", (const char *const[]){NULL});
    cr_assert_eq(r.status, 0, "comm_runner exited %d:\n%s%s", r.status, r.out, r.err);
    cr_assert(strstr(r.out, "max |data-parallel - whole batch| = 0 after 3 steps"), "%s",
              r.out);
    child_free(&r);
}

/* ---- data-parallel graphs ---------------------------------------------------------- */

Test(comm, allreduce_grads_comes_after_backward_and_before_the_optimiser)
{
    kiln_context *ctx = test_context(test_first_spec());
    kiln_comm    *c   = kiln_comm_open("loopback");
    cr_assert_not_null(c, "%s", kiln_last_error());
    kiln_graph  *g = kiln_graph_new(ctx);
    kiln_tensor *x = kiln_input(g, "x", KILN_F32, KILN_SHAPE(2, 3));
    kiln_tensor *l = kiln_mean(g, kiln_dense(g, x, 2, "fc"));
    cr_assert_eq(kiln_graph_allreduce_grads(g, c, 0), KILN_ERR_STATE);
    cr_assert(strstr(kiln_last_error(), "call kiln_backward first"), "%s",
              kiln_last_error());
    expect_ok(kiln_backward(g, l), "kiln_backward");
    cr_assert_eq(kiln_graph_allreduce_grads(NULL, c, 0), KILN_ERR_INVALID_ARG);
    cr_assert_eq(kiln_graph_allreduce_grads(g, NULL, 0), KILN_ERR_INVALID_ARG);
    expect_ok(kiln_graph_allreduce_grads(g, c, 0), "kiln_graph_allreduce_grads");
    cr_assert_eq(kiln_graph_allreduce_grads(g, c, 0), KILN_ERR_STATE);
    cr_assert(strstr(kiln_last_error(), "called already"), "%s", kiln_last_error());
    cr_assert_not_null(kiln_sgd(g, 0.1f, 0, 0));
    expect_ok(kiln_graph_compile(g), "compile");
    kiln_graph_free(g);

    g = kiln_graph_new(ctx);
    x = kiln_input(g, "x", KILN_F32, KILN_SHAPE(2, 3));
    l = kiln_mean(g, kiln_dense(g, x, 2, "fc"));
    expect_ok(kiln_backward(g, l), "kiln_backward");
    cr_assert_not_null(kiln_sgd(g, 0.1f, 0, 0));
    cr_assert_eq(kiln_graph_allreduce_grads(g, c, 0), KILN_ERR_STATE);
    cr_assert(strstr(kiln_last_error(), "the optimiser is added already"), "%s",
              kiln_last_error());
    kiln_graph_free(g);
    kiln_comm_close(c);
    kiln_context_free(ctx);
}

/* ---- checkpoints ------------------------------------------------------------------- */

#define ROWS 8

typedef struct net {
    kiln_graph  *g;
    kiln_tensor *x, *y;
} net;

/* A small classifier with an optimiser of `kind`, initialised from seed. */
static net net_new(kiln_context *ctx, const char *kind, uint64_t seed)
{
    net n = {.g = kiln_graph_new(ctx)};
    kiln_graph_seed(n.g, seed);
    n.x            = kiln_input(n.g, "x", KILN_F32, KILN_SHAPE(ROWS, 4));
    n.y            = kiln_input(n.g, "y", KILN_I32, KILN_SHAPE(ROWS));
    kiln_tensor *h = kiln_relu(n.g, kiln_dense(n.g, n.x, 6, "fc1"));
    kiln_tensor *l = kiln_cross_entropy(n.g, kiln_dense(n.g, h, 3, "fc2"), n.y);
    expect_ok(kiln_backward(n.g, l), "kiln_backward");
    kiln_optimizer *o = strcmp(kind, "sgd") == 0
                            ? kiln_sgd(n.g, 0.1f, 0.9f, 0.0f)
                            : strcmp(kind, "adamw") == 0
                                  ? kiln_adamw(n.g, 0.01f, 0.9f, 0.99f, 1e-8f, 0.1f)
                                  : kiln_adam(n.g, 0.01f, 0.9f, 0.99f, 1e-8f, 0.0f);
    cr_assert_not_null(o, "%s", kiln_last_error());
    expect_ok(kiln_graph_compile(n.g), "compile");
    return n;
}

static void steps(net *n, int from, int to)
{
    for (int s = from; s < to; s++) {
        float   xs[ROWS * 4];
        int32_t ys[ROWS];
        for (int i = 0; i < ROWS * 4; i++)
            xs[i] = sinf(0.3f * (float)i + (float)s);
        for (int i = 0; i < ROWS; i++)
            ys[i] = (i + s) % 3;
        expect_ok(kiln_tensor_write(n->x, xs, sizeof xs), "x");
        expect_ok(kiln_tensor_write(n->y, ys, sizeof ys), "y");
        expect_ok(kiln_graph_run(n->g), "a step");
    }
}

/* Every parameter of a and b, bit for bit. */
static void expect_same_params(const net *a, const net *b, const char *what)
{
    for (size_t i = 0; i < kiln_graph_param_count(a->g); i++) {
        kiln_tensor *p = kiln_graph_param(a->g, i), *q = kiln_graph_param(b->g, i);
        float        u[64], v[64];
        size_t       bytes = kiln_tensor_nbytes(p);
        cr_assert(bytes <= sizeof u);
        expect_ok(kiln_tensor_read(p, u, bytes), "read");
        expect_ok(kiln_tensor_read(q, v, bytes), "read");
        cr_assert(memcmp(u, v, bytes) == 0, "%s: %s differs (%g against %g first)", what,
                  kiln_tensor_name(p), (double)u[0], (double)v[0]);
    }
}

BACKEND_TEST(checkpoint, resuming_reaches_what_an_uninterrupted_run_reaches)
{
    kiln_context *ctx = test_backend_context(backend);
    char          dir[4096], path[4200];
    child_temp_dir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/ck.safetensors", dir);
    static const char *const kinds[] = {"adam", "adamw", "sgd"};
    for (size_t k = 0; k < 3; k++) {
        net whole = net_new(ctx, kinds[k], 7), first = net_new(ctx, kinds[k], 7);
        steps(&whole, 0, 6);
        steps(&first, 0, 3);
        expect_ok(kiln_checkpoint_save(first.g, path), "kiln_checkpoint_save");
        /* other initial weights: all of them come from the file */
        net rest = net_new(ctx, kinds[k], 99);
        expect_ok(kiln_checkpoint_load(rest.g, path), "kiln_checkpoint_load");
        steps(&rest, 3, 6);
        expect_same_params(&rest, &whole, kinds[k]);
        /* a plain load leaves the optimiser's state out: the run differs */
        net cold = net_new(ctx, kinds[k], 99);
        expect_ok(kiln_load(cold.g, path), "kiln_load");
        steps(&cold, 3, 6);
        char value[32];
        expect_ok(kiln_file_meta(path, "kiln.optim.kind", value, sizeof value), "meta");
        cr_assert_str_eq(value, kinds[k]);
        expect_ok(kiln_file_meta(path, "kiln.optim.step", value, sizeof value), "meta");
        cr_assert_str_eq(value, "3");
        float a[24], b[24];
        expect_ok(kiln_tensor_read(kiln_graph_param(cold.g, 0), a, sizeof a), "read");
        expect_ok(kiln_tensor_read(kiln_graph_param(whole.g, 0), b, sizeof b), "read");
        cr_assert(memcmp(a, b, sizeof a) != 0, "%s: no state, same result", kinds[k]);
        kiln_graph_free(whole.g);
        kiln_graph_free(first.g);
        kiln_graph_free(rest.g);
        kiln_graph_free(cold.g);
    }
    child_remove_dir(dir);
    kiln_context_free(ctx);
}

Test(checkpoint, holds_the_state_under_pytorchs_names_and_refuses_what_does_not_fit)
{
    kiln_context *ctx = test_context(test_first_spec());
    char          dir[4096], path[4200], plain[4200];
    child_temp_dir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/ck.safetensors", dir);
    snprintf(plain, sizeof plain, "%s/w.safetensors", dir);
    net a = net_new(ctx, "adam", 1);
    steps(&a, 0, 2);
    expect_ok(kiln_checkpoint_save(a.g, path), "kiln_checkpoint_save");
    expect_ok(kiln_save(a.g, plain), "kiln_save");
    size_t len;
    char  *f = child_read_file(path, &len);
    cr_assert(strstr(f + 8, "\"optim.fc1.weight.exp_avg\":{\"dtype\":\"F32\",\"shape\":[4,6]"),
              "%.400s", f + 8);
    cr_assert(strstr(f + 8, "\"optim.fc2.bias.exp_avg_sq\""), "%.400s", f + 8);
    free(f);

    net s = net_new(ctx, "sgd", 1);
    float before[24], after[24];
    expect_ok(kiln_tensor_read(kiln_graph_param(s.g, 0), before, sizeof before), "read");
    cr_assert_eq(kiln_checkpoint_load(s.g, path), KILN_ERR_SHAPE);
    cr_assert(strstr(kiln_last_error(), "holds the state of optimiser \"adam\", and the "
                                        "graph has \"sgd\""),
              "%s", kiln_last_error());
    cr_assert_eq(kiln_checkpoint_load(s.g, plain), KILN_ERR_NOT_FOUND);
    cr_assert(strstr(kiln_last_error(), "is not a checkpoint"), "%s", kiln_last_error());
    expect_ok(kiln_tensor_read(kiln_graph_param(s.g, 0), after, sizeof after), "read");
    cr_assert(memcmp(before, after, sizeof before) == 0, "a failed load changed weights");
    /* the weights of a checkpoint load on their own, for evaluation */
    net e = net_new(ctx, "sgd", 5);
    expect_ok(kiln_load(e.g, path), "kiln_load of a checkpoint");
    kiln_graph_free(a.g);
    kiln_graph_free(s.g);
    kiln_graph_free(e.g);
    child_remove_dir(dir);
    kiln_context_free(ctx);
}
