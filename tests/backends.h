/* tests/backends.h — the devices every op test runs on.
 *
 * Every device kiln_devices() lists as usable, except those of the test
 * plugins ("good", "example"), as a "name:index" spec. Op tests are
 * ParameterizedTests over test_backend_params(), so a backend that loads joins
 * the suite without a change here. The cpu backend appears once per kernel
 * ISA this machine runs (KILN_CPU_ISA=scalar, avx2, avx512), found here with
 * the compiler's own cpuid check, independently of the backend's.
 */
#ifndef KILN_TESTS_BACKENDS_H
#define KILN_TESTS_BACKENDS_H

#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <kiln/kiln.h>
#include <stddef.h>

/* A Criterion parameter: plain data, no pointers, so it survives the copy
 * into each test's process. An empty spec means "no usable device was found";
 * test_context() fails on it, so an empty list is never a silent pass. */
typedef struct test_backend {
    char spec[64];  /* "cpu:0"                                         */
    char isa[16];   /* KILN_CPU_ISA for the context, "" for the default */
    char label[96]; /* for messages: "cpu:0 (KILN_CPU_ISA=avx2)"      */
} test_backend;

/* Writes up to cap specs to out (out may be NULL when cap is 0) and returns
 * how many usable devices there are. */
size_t test_backend_list(test_backend *out, size_t cap);

/* Skips the running test (cr_skip_test) unless an OpenCL device is usable. */
void test_need_opencl(void);

/* The parameter array for ParameterizedTestParameters: one entry per device,
 * or a single entry with an empty spec when there is none. cr_malloc'd. */
struct criterion_test_params test_backend_params(void);

/* A test run once per device of test_backend_params(); its body sees the
 * device as `test_backend *backend`:
 *
 *   BACKEND_TEST(matmul, matches_reference_for_odd_shapes)
 *   {
 *       kiln_context *ctx = test_backend_context(backend);
 *       ...
 *   }
 */
#define BACKEND_TEST(suite, name)            \
    ParameterizedTestParameters(suite, name) \
    {                                        \
        return test_backend_params();        \
    }                                        \
    ParameterizedTest(test_backend *backend, suite, name)

/* A context on `spec`; asserts that it could be made, with kiln_last_error(). */
kiln_context *test_context(const char *spec);

/* A context on b->spec, with KILN_CPU_ISA set to b->isa first (it is read
 * when the device opens; each test runs in a process of its own). */
kiln_context *test_backend_context(const test_backend *b);

/* The cpu kernel ISAs this machine runs, best last: "scalar", then "avx2"
 * and "avx512" where the CPU and the OS support them. Returns how many. */
size_t test_cpu_isas(const char *isas[3]);

/* The first spec of the list (for tests that need only one device); asserts
 * that there is one. Returns a static buffer. */
const char *test_first_spec(void);

/* For tests at the plugin ABI (<kiln/backend.h>): the plugin table of the
 * backend b->spec names, and in *index that device's index in it. It is the
 * plugin kiln's loader found, vetted and initialised, the same loaded copy,
 * so the plugin reports its errors through kiln: in kiln_last_error().
 * Asserts that the backend is loaded. */
struct kiln_plugin;
const struct kiln_plugin *test_backend_plugin(const test_backend *b, int *index);

#endif /* KILN_TESTS_BACKENDS_H */
