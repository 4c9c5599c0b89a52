/* tests/test_launches.c — what a training step costs the OpenCL device, as
 * tests/cl-count.c counts it: the kernels launched, by name, and the times
 * the host waits. On a GPU a small step's time goes to these, not to
 * arithmetic (issue 16), so they are behaviour to keep:
 *
 *  - a dense layer's bias and relu are one launch (kiln_add_relu);
 *  - the optimiser steps up to 8 parameters per launch;
 *  - a step whose inputs are written and run, with nothing read, waits once
 *    (writes are queued from a copy; synchronize is the label check's read).
 *
 * graph_runner trains an MLP for 1 and for 4 steps in fresh processes; the
 * difference over 3 is one step's count, without the set-up's. Fusing must
 * change no result: the same training with KILN_PROFILE (every node run and
 * waited for alone, so nothing is fused) gives the same bits, and the cpu
 * backend the same values within rounding.
 */
#include "backends.h"
#include "child.h"
#include "expect.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SHIM "tests/.libs/cl-count.so"

typedef struct counts {
    char names[64][64];
    long n[64];
    int  count;
    long waits;
} counts;

/* Launches of kernel `name`, with its 64-bit-index twin's (name_wide). */
static long launches_of(const counts *c, const char *name)
{
    long   n   = 0;
    size_t len = strlen(name);
    for (int k = 0; k < c->count; k++)
        if (strncmp(c->names[k], name, len) == 0 &&
            (!c->names[k][len] || strcmp(c->names[k] + len, "_wide") == 0))
            n += c->n[k];
    return n;
}

static long all_launches(const counts *c)
{
    long total = 0;
    for (int k = 0; k < c->count; k++)
        total += c->n[k];
    return total;
}

/* graph_runner train STEPS LAYERS OPT on the OpenCL device under the
 * counting shim; its counts into *c, its output into *out (the caller
 * frees it) when out is not NULL. */
static void count_training(const char *steps, const char *layers, const char *opt,
                           counts *c, child_result *out)
{
    char dir[4096], file[4200], preload[8192], count_env[4300];
    child_temp_dir(dir, sizeof dir);
    snprintf(file, sizeof file, "%s/counts", dir);
    snprintf(preload, sizeof preload, "LD_PRELOAD=%s %s", child_asan_runtime(), SHIM);
    snprintf(count_env, sizeof count_env, "KILN_TEST_CL_COUNT=%s", file);
    const char *const args[] = {"train", steps, layers, opt, NULL};
    const char *const env[]  = {"KILN_BACKEND=opencl", preload, count_env,
                                /* the shell of libtool's wrapper is not kiln's */
                                child_asan_runtime()[0] ? "ASAN_OPTIONS=detect_leaks=0"
                                                        : NULL,
                                NULL};
    child_result r           = child_run_args("graph_runner", args, env);
    cr_assert_eq(r.status, 0, "graph_runner train %s %s %s: %s", steps, layers, opt,
                 r.err);
    char *text = child_read_file(file, NULL);
    memset(c, 0, sizeof *c);
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        char name[64];
        long n;
        if (sscanf(line, "launch %63s %ld", name, &n) == 2 && c->count < 64) {
            snprintf(c->names[c->count], sizeof c->names[0], "%s", name);
            c->n[c->count++] = n;
        } else if (sscanf(line, "waits %ld", &n) == 1) {
            c->waits = n;
        }
    }
    free(text);
    child_remove_dir(dir);
    if (out)
        *out = r;
    else
        child_free(&r);
}

/* One step's launches of `name`: (4 steps' - 1 step's) / 3. */
static long per_step(const counts *one, const counts *four, const char *name)
{
    long d = launches_of(four, name) - launches_of(one, name);
    cr_assert_eq(d % 3, 0, "%s: %ld launches over 3 steps", name, d);
    return d / 3;
}

Test(launches, a_step_fuses_bias_relu_and_the_optimiser_and_waits_once)
{
    test_need_opencl();
    counts one, four;
    /* 2 hidden layers: 6 parameters; the first run fills the caches (the
     * program, CLBlast's check) that the counted ones then read alike */
    count_training("1", "2", "adam", &one, NULL);
    count_training("1", "2", "adam", &one, NULL);
    count_training("4", "2", "adam", &four, NULL);
    long total = (all_launches(&four) - all_launches(&one)) / 3;
    cr_log_info("one step: %ld launches, %ld host waits", total,
                (four.waits - one.waits) / 3);
    cr_expect_eq(per_step(&one, &four, "kiln_add_relu"), 2, "bias+relu fused per layer");
    cr_expect_eq(per_step(&one, &four, "kiln_relu"), 0, "a relu launched alone");
    cr_expect_eq(per_step(&one, &four, "kiln_add"), 1, "the output layer's bias");
    cr_expect_eq(per_step(&one, &four, "kiln_adam_step"), 1,
                 "6 parameters' Adam steps in one launch");
    cr_expect_eq(four.waits - one.waits, 3, "host waits over 3 steps: %ld",
                 four.waits - one.waits);
}

Test(launches, more_parameters_than_a_launch_holds_take_several)
{
    test_need_opencl();
    counts one, four;
    /* 9 hidden layers: 20 parameters, 8 + 8 + 4, all sharing clipping's
     * sum of squares */
    count_training("1", "9", "sgd-clip", &one, NULL);
    count_training("4", "9", "sgd-clip", &four, NULL);
    cr_expect_eq(per_step(&one, &four, "kiln_sgd_step"), 3);
}

/* The trained parameters: fused as above, unfused (KILN_PROFILE runs every
 * node alone), and on the cpu backend. The products run on the cpu backend
 * (KILN_DEBUG_REFUSE) in both OpenCL runs: CLBlast compiling its kernels
 * in every process is most of a run's time on POCL, and fusion does not
 * touch them. */
static void same_training(const char *layers, const char *opt)
{
    const char *const args[]    = {"train", "5", layers, opt, NULL};
    const char *const fused[]   = {"KILN_BACKEND=opencl", "KILN_DEBUG_REFUSE=matmul",
                                   "-KILN_PROFILE", NULL};
    const char *const unfused[] = {"KILN_BACKEND=opencl", "KILN_DEBUG_REFUSE=matmul",
                                   "KILN_PROFILE=1", NULL};
    const char *const cpu[]      = {"KILN_BACKEND=cpu", "-KILN_PROFILE", NULL};
    child_result      a          = child_run_args("graph_runner", args, fused);
    child_result      b          = child_run_args("graph_runner", args, unfused);
    child_result      c          = child_run_args("graph_runner", args, cpu);
    char              what[128];
    cr_assert_eq(a.status, 0, "%s", a.err);
    cr_assert_eq(b.status, 0, "%s", b.err);
    cr_assert_eq(c.status, 0, "%s", c.err);
    snprintf(what, sizeof what, "%s, %s layers: fused against unfused", opt, layers);
    runner_expect_same(what, &a, &b, 0.0);
    snprintf(what, sizeof what, "%s, %s layers: opencl against cpu", opt, layers);
    runner_expect_same(what, &a, &c, 1e-4);
    child_free(&a);
    child_free(&b);
    child_free(&c);
}

Test(launches, fusing_changes_no_result)
{
    test_need_opencl();
    same_training("2", "adam");
    same_training("9", "sgd-clip");
}
