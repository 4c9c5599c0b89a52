/* tests/child.h — run a test helper program in a fresh process, with extra
 * environment, and capture what it prints. For behaviour that only a new
 * process shows: a cache filled by an earlier one, knobs read once. And the
 * files and folders the tests write: a folder of its own for each test, a
 * file read whole, what a folder holds.
 */
#ifndef KILN_TESTS_CHILD_H
#define KILN_TESTS_CHILD_H

#include <stddef.h>

typedef struct child_result {
    int   status; /* exit status, or 128 + signal           */
    char *out;    /* stdout, NUL-terminated (never NULL)     */
    char *err;    /* stderr, NUL-terminated (never NULL)     */
} child_result;

/* Runs $KILN_TEST_BUILDDIR/<program> with the environment of this process
 * changed by env: "NAME=value" sets, "-NAME" unsets; NULL-terminated.
 * Asserts (Criterion) that the program could be started. */
child_result child_run(const char *program, const char *const *env);
/* The same with arguments: args NULL-terminated (at most 14). */
child_result child_run_args(const char *program, const char *const *args,
                            const char *const *env);
void         child_free(child_result *r);

/* Under AddressSanitizer its runtime must come first among a child's
 * preloaded libraries (LD_PRELOAD="runtime shim"): the path of the one this
 * process loaded, or "". */
const char *child_asan_runtime(void);

/* An empty folder under $KILN_TEST_BUILDDIR/cache for this test; asserts.
 * child_remove_dir removes it and everything in it. */
void child_temp_dir(char *buf, size_t len);
void child_remove_dir(const char *dir);

/* How many entries dir holds, hidden ones included ("." and ".." not); 0
 * when it does not exist. Asserts that it could be read. */
size_t child_dir_entries(const char *dir);

/* The whole of the file at path, NUL-terminated (free it); *len, unless
 * NULL, is its size. Asserts that it could be read. */
char *child_read_file(const char *path, size_t *len);

/* One output of graph_runner: "output NAME COUNT" and COUNT values. */
typedef struct runner_output {
    char   name[32];
    size_t n;
    float *v;
} runner_output;

/* Parses graph_runner's stdout into at most cap outputs; returns how many. */
size_t runner_outputs(const char *out, runner_output *outputs, size_t cap);
void   runner_outputs_free(runner_output *outputs, size_t n);

/* Asserts that two runs printed the same outputs within a relative and
 * absolute tolerance; `what` names the comparison in failures. */
void runner_expect_same(const char *what, const child_result *got,
                        const child_result *want, double tol);

#endif /* KILN_TESTS_CHILD_H */
