/* tests/test_faults.c — every allocation on a user's path fails in turn.
 *
 * tests/fault_runner goes the whole way a program goes (load the plugins,
 * build an MLP with gradients and Adam, compile, run, save, load back). Run
 * under a preloaded shim, it fails exactly one call: malloc's N-th after
 * main starts (tests/malloc-fail.c), on the cpu backend; or clCreateBuffer's
 * N-th (tests/cl-fail.c), on the OpenCL device, with each status a device
 * that runs out returns. N goes from 0 until the program ends before the
 * N-th call, so every allocation on the path fails once. Each run must end
 * in success or in an error with a message after which the same path,
 * taken again with memory back, works (exit status 1): never a crash, a
 * hang, a wrong result, or a failure that outlives its cause.
 *
 * The shims replace the allocator, which AddressSanitizer's must be, so
 * sanitizer builds skip the sweep.
 */
#include "child.h"

#include <criterion/criterion.h>

#include <errno.h>
#include <stdbool.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

#ifndef __SANITIZE_ADDRESS__ /* the sweeps' machinery; sanitizer builds skip them */

#define RUN_SECONDS 120 /* a run that takes longer has hung */

typedef struct outcome {
    int  status;    /* exit status, or 128 + signal, or -1 when it hung */
    long refused;   /* what the shim refused; -1 when not said          */
    char err[1024]; /* the start of stderr                              */
} outcome;

/* Runs fault_runner with env added, its output in dir; kills it past
 * RUN_SECONDS. */
static outcome run_once(const char *dir, const char *const *env)
{
    char prog[4096], file[4200], out_path[4200], err_path[4200];
    snprintf(prog, sizeof prog, "%s/fault_runner", getenv("KILN_TEST_BUILDDIR"));
    snprintf(file, sizeof file, "%s/w.safetensors", dir);
    snprintf(out_path, sizeof out_path, "%s/out", dir);
    snprintf(err_path, sizeof err_path, "%s/err", dir);

    size_t n_env = 0, n_add = 0;
    while (environ[n_env])
        n_env++;
    while (env[n_add])
        n_add++;
    char **envp = calloc(n_env + n_add + 1, sizeof *envp);
    cr_assert_not_null(envp);
    size_t k = 0;
    for (size_t i = 0; i < n_add; i++)
        envp[k++] = (char *)env[i];
    /* this process's own, but for those env sets: one of each name, since
     * a shell (the libtool wrapper) keeps the last of two */
    for (size_t i = 0; i < n_env; i++) {
        bool set = false;
        for (size_t j = 0; j < n_add && !set; j++) {
            size_t len = strcspn(env[j], "=");
            set = strncmp(environ[i], env[j], len) == 0 && environ[i][len] == '=';
        }
        if (!set)
            envp[k++] = environ[i];
    }

    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, out_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_addopen(&fa, 2, err_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    char *argv[] = { prog, file, NULL };
    pid_t pid;
    int   rc = posix_spawn(&pid, prog, &fa, NULL, argv, envp);
    posix_spawn_file_actions_destroy(&fa);
    free(envp);
    cr_assert_eq(rc, 0, "cannot start %s: %s", prog, strerror(rc));

    outcome o = { .status = -1, .refused = -1 };
    int     wst;
    for (int waited = 0;; waited++) {
        pid_t r = waitpid(pid, &wst, WNOHANG);
        if (r == pid) {
            o.status = WIFEXITED(wst) ? WEXITSTATUS(wst) : 128 + WTERMSIG(wst);
            break;
        }
        if (waited >= RUN_SECONDS * 100) {
            kill(pid, SIGKILL);
            waitpid(pid, &wst, 0);
            break;
        }
        nanosleep(&(struct timespec){ .tv_nsec = 10000000 }, NULL);
    }
    char *out = child_read_file(out_path, NULL);
    char *err = child_read_file(err_path, NULL);
    sscanf(out, "refused %ld", &o.refused);
    snprintf(o.err, sizeof o.err, "%s", err);
    free(out);
    free(err);
    return o;
}

/* The sweep: failure point n = 0, 1, ... until a run ends before it. */
static long sweep(const char *what, const char *shim, const char *var, const char *backend,
                  const char *plugin_path, int cl_status)
{
    char dir[4096];
    child_temp_dir(dir, sizeof dir);
    char preload[4200], path[4200], arm[128], select[128];
    snprintf(preload, sizeof preload, "LD_PRELOAD=%s/.libs/%s",
             getenv("KILN_TEST_BUILDDIR"), shim);
    snprintf(path, sizeof path, "KILN_PLUGIN_PATH=%s", plugin_path);
    snprintf(select, sizeof select, "KILN_BACKEND=%s", backend);
    long n = 0, errors = 0;
    for (;; n++) {
        if (cl_status)
            snprintf(arm, sizeof arm, "%s=%ld:%d", var, n, cl_status);
        else
            snprintf(arm, sizeof arm, "%s=%ld", var, n);
        const char *env[] = { preload, path, select, arm, NULL };
        outcome     o     = run_once(dir, env);
        cr_assert(o.status == 0 || o.status == 1,
                  "%s: failing call %ld: %s (status %d):\n%s", what, n,
                  o.status < 0     ? "hung"
                  : o.status >= 128 ? "killed by a signal"
                  : o.status == 4   ? "still failing once memory was back"
                                    : "a wrong result or no shim",
                  o.status, o.err);
        cr_assert(o.status == 0 || strstr(o.err, "fault_runner: ") != NULL,
                  "%s: failing call %ld: exit 1 without a message", what, n);
        cr_assert_geq(o.refused, 0, "%s: failing call %ld: the runner did not finish", what,
                      n);
        errors += o.status == 1;
        if (o.refused == 0) {
            cr_assert_eq(o.status, 0, "%s: nothing was refused, yet the run failed:\n%s",
                         what, o.err);
            break;
        }
    }
    child_remove_dir(dir);
    fprintf(stderr, "%s: %ld calls on the path failed in turn: %ld runs ended in an error "
                    "with a message, %ld recovered\n",
            what, n, errors, n - errors);
    return n;
}

#endif /* __SANITIZE_ADDRESS__ */

Test(faults, every_allocation_on_the_cpu_path_fails_cleanly, .timeout = 1800)
{
#ifdef __SANITIZE_ADDRESS__
    cr_skip_test("the malloc shim cannot replace AddressSanitizer's allocator");
#else
    long n = sweep("malloc", "malloc-fail.so", "KILN_TEST_FAIL_MALLOC", "cpu",
                   getenv("KILN_CPU_PLUGIN"), 0);
    cr_expect_gt(n, 100, "only %ld allocations on the whole path: the shim is not in", n);
#endif
}

Test(faults, every_opencl_buffer_on_the_path_fails_cleanly, .timeout = 1800)
{
#ifdef __SANITIZE_ADDRESS__
    cr_skip_test("sanitizer builds skip the fault sweeps");
#else
    const char *path = getenv("KILN_PLUGIN_PATH");
    if (!strstr(path, "opencl"))
        cr_skip_test("the OpenCL backend is not built");
    /* CL_MEM_OBJECT_ALLOCATION_FAILURE, CL_OUT_OF_RESOURCES */
    long a = sweep("clCreateBuffer (CL_MEM_OBJECT_ALLOCATION_FAILURE)", "cl-fail.so",
                   "KILN_TEST_FAIL_CL", "opencl", path, -4);
    long b = sweep("clCreateBuffer (CL_OUT_OF_RESOURCES)", "cl-fail.so", "KILN_TEST_FAIL_CL",
                   "opencl", path, -5);
    cr_expect_gt(a, 2, "only %ld buffers on the whole path: the shim is not in", a);
    cr_expect_eq(a, b);
#endif
}
