/* tests/test_fallback.c — an op the selected device does not support runs
 * on the cpu backend, with the copies inserted, and the results are those
 * of an all-cpu run.
 *
 * The core knob KILN_DEBUG_REFUSE=op,op makes the selected device report
 * those ops unsupported; KILN_LOG=debug then says for each node where it
 * runs: "node 3 (matmul [2, 2]) runs on cpu:0 (fallback: <why> on <device>)". Knobs are read by
 * a fresh process, so each run is tests/graph_runner (an MLP and a CNN,
 * forward) in a child process:
 *
 *  - on every non-cpu device kiln lists (the OpenCL devices), refusing
 *    matmul, softmax and conv2d;
 *  - on the plugin SDK's example device, refusing the ops it does run (add,
 *    relu): with no other backend built this still moves nodes between two
 *    plugins.
 */
#include "backends.h"
#include "child.h"
#include "expect.h"

#include <criterion/criterion.h>
#include <criterion/parameterized.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The runs of the current test, freed by the suite's fini even when an
 * assertion ends the test early. */
static child_result want, got;

static void free_runs(void)
{
    child_free(&want);
    child_free(&got);
}

TestSuite(fallback, .fini = free_runs);

/* A device to refuse ops on, and which. */
typedef struct fallback_case {
    char spec[64];
    char refuse[64];
} fallback_case;

static void free_cases(struct criterion_test_params *params)
{
    cr_free(params->params);
}

/* Every usable device that is not kiln's cpu (nor a loader test plugin),
 * then the example device. Runs in the runner: no asserts. */
ParameterizedTestParameters(fallback, runs_refused_ops_on_the_cpu_like_an_all_cpu_run)
{
    size_t         n     = test_backend_list(NULL, 0);
    test_backend  *all   = calloc(n ? n : 1, sizeof *all);
    fallback_case *cases = cr_malloc((n + 1) * sizeof *cases);
    if (!all || !cases) {
        fprintf(stderr, "test_fallback: out of memory\n");
        abort();
    }
    memset(cases, 0, (n + 1) * sizeof *cases);
    test_backend_list(all, n);
    size_t count = 0;
    for (size_t i = 0; i < n; i++) {
        if (strncmp(all[i].spec, "cpu:", 4) == 0)
            continue;
        snprintf(cases[count].spec, sizeof cases[count].spec, "%s", all[i].spec);
        snprintf(cases[count].refuse, sizeof cases[count].refuse,
                 "matmul,softmax,conv2d");
        count++;
    }
    snprintf(cases[count].spec, sizeof cases[count].spec, "example");
    snprintf(cases[count].refuse, sizeof cases[count].refuse, "add,relu");
    count++;
    free(all);
    return cr_make_param_array(fallback_case, cases, count, free_cases);
}

/* KILN_PLUGIN_PATH with the example plugin's folder added. */
static void plugin_path(char *buf, size_t len)
{
    const char *path    = expect_env("KILN_PLUGIN_PATH");
    const char *example = expect_env("KILN_EXAMPLE_PLUGIN");
    int         n       = snprintf(buf, len, "KILN_PLUGIN_PATH=%s:%s", path, example);
    cr_assert(n > 0 && (size_t)n < len, "KILN_PLUGIN_PATH is too long");
}

/* Whether the log has a line for an op node that runs on `where`. */
static bool node_runs_on(const char *log, const char *op, const char *where)
{
    char opening[64];
    snprintf(opening, sizeof opening, "(%s [", op);
    for (const char *line = log; line && *line; line = strchr(line, '\n')) {
        line += *line == '\n';
        const char *end = strchr(line, '\n');
        size_t      len = end ? (size_t)(end - line) : strlen(line);
        const char *at = strstr(line, opening), *on = strstr(line, where);
        if (at && on && (size_t)(at - line) < len && (size_t)(on - line) < len)
            return true;
    }
    return false;
}

ParameterizedTest(fallback_case *fc, fallback,
                  runs_refused_ops_on_the_cpu_like_an_all_cpu_run)
{
    char path[8192], backend[96], refuse[96];
    plugin_path(path, sizeof path);
    snprintf(backend, sizeof backend, "KILN_BACKEND=%s", fc->spec);
    snprintf(refuse, sizeof refuse, "KILN_DEBUG_REFUSE=%s", fc->refuse);

    const char *cpu_env[] = {path, "KILN_BACKEND=cpu", "-KILN_DEBUG_REFUSE", NULL};
    want                  = child_run("graph_runner", cpu_env);
    cr_assert_eq(want.status, 0, "the all-cpu run failed (%d):\n%s", want.status,
                 want.err);

    const char *env[] = {path, backend, refuse, "KILN_LOG=debug", NULL};
    got               = child_run("graph_runner", env);
    cr_assert_eq(got.status, 0, "the run on %s refusing %s failed (%d):\n%s", fc->spec,
                 fc->refuse, got.status, got.err);
    char what[200];
    snprintf(what, sizeof what, "%s refusing %s", fc->spec, fc->refuse);
    runner_expect_same(what, &got, &want, 1e-5);

    /* every refused op that the graph has ran on the cpu, and none on the
     * selected device */
    char ops[64];
    snprintf(ops, sizeof ops, "%s", fc->refuse);
    for (char *save = NULL, *op = strtok_r(ops, ",", &save); op;
         op = strtok_r(NULL, ",", &save)) {
        cr_assert(node_runs_on(got.err, op, "runs on cpu:0 (fallback"),
                  "%s: no \"%s\" node ran on cpu:0 (fallback); the log:\n%s", what, op,
                  got.err);
        char device[80];
        snprintf(device, sizeof device, "runs on %s", fc->spec);
        cr_assert(!node_runs_on(got.err, op, device), "%s: a \"%s\" node ran on %s", what,
                  op, fc->spec);
    }
}
