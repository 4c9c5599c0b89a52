/* tests/backends.h — the devices every op test runs on.
 *
 * Every device kiln_devices() lists as usable, except those of the test
 * plugins ("good", "example"), as a "name:index" spec. Op tests are
 * ParameterizedTests over test_backend_params(), so a backend that loads joins
 * the suite without a change here.
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
    char spec[64]; /* "cpu:0" */
} test_backend;

/* Writes up to cap specs to out (out may be NULL when cap is 0) and returns
 * how many usable devices there are. */
size_t test_backend_list(test_backend *out, size_t cap);

/* The parameter array for ParameterizedTestParameters: one entry per device,
 * or a single entry with an empty spec when there is none. cr_malloc'd. */
struct criterion_test_params test_backend_params(void);

/* A context on `spec`; asserts that it could be made, with kiln_last_error(). */
kiln_context *test_context(const char *spec);

/* The first spec of the list (for tests that need only one device); asserts
 * that there is one. Returns a static buffer. */
const char *test_first_spec(void);

#endif /* KILN_TESTS_BACKENDS_H */
