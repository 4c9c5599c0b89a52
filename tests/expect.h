/* tests/expect.h — assertions on a kiln status and kiln_last_error(), on a
 * graph's sticky error, and on the environment make check provides. */
#ifndef KILN_TESTS_EXPECT_H
#define KILN_TESTS_EXPECT_H

#include <criterion/criterion.h>
#include <kiln/kiln.h>
#include <stdlib.h>
#include <string.h>

/* st is KILN_OK; `what` names the call in the failure message. */
static inline void expect_ok(kiln_status st, const char *what)
{
    cr_assert_eq(st, KILN_OK, "%s: %s: %s", what, kiln_status_name(st),
                 kiln_last_error());
}

/* st is `want`, and the message mentions a (and b, unless NULL). */
static inline void expect_error(kiln_status st, kiln_status want, const char *a,
                                const char *b)
{
    const char *e = kiln_last_error();
    cr_assert_eq(st, want, "gave %s, expected %s (%s)", kiln_status_name(st),
                 kiln_status_name(want), e);
    cr_assert(strstr(e, a), "error \"%s\" does not mention \"%s\"", e, a);
    cr_assert(!b || strstr(e, b), "error \"%s\" does not mention \"%s\"", e, b);
}

/* kiln_graph_error(g) for messages: "(no graph error)" when there is none. */
static inline const char *graph_error(const kiln_graph *g)
{
    const char *e = kiln_graph_error(g);
    return e ? e : "(no graph error)";
}

/* The graph has an error, and it mentions a (and b and c, unless NULL). */
static inline void expect_graph_error(const kiln_graph *g, const char *a, const char *b,
                                      const char *c)
{
    const char *e = kiln_graph_error(g);
    cr_assert_not_null(e, "expected a graph error mentioning \"%s\", got none", a);
    const char *words[] = {a, b, c};
    for (int i = 0; i < 3; i++)
        cr_assert(words[i] == NULL || strstr(e, words[i]) != NULL,
                  "graph error \"%s\" does not mention \"%s\"", e, words[i]);
}

/* The value of a variable make check sets (Makefile.am, AM_TESTS_ENVIRONMENT);
 * asserts that it is set and not empty. */
static inline const char *expect_env(const char *name)
{
    const char *v = getenv(name);
    cr_assert(v && *v, "%s is not set: run the tests through make check", name);
    return v;
}

#endif /* KILN_TESTS_EXPECT_H */
