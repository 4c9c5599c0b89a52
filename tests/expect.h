/* tests/expect.h — assertions on a kiln status and kiln_last_error(). */
#ifndef KILN_TESTS_EXPECT_H
#define KILN_TESTS_EXPECT_H

#include <criterion/criterion.h>
#include <kiln/kiln.h>
#include <string.h>

/* st is KILN_OK; `what` names the call in the failure message. */
static inline void expect_ok(kiln_status st, const char *what)
{
    cr_assert_eq(st, KILN_OK, "%s: %s: %s", what, kiln_status_name(st), kiln_last_error());
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

#endif /* KILN_TESTS_EXPECT_H */
