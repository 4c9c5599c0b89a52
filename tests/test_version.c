/* tests/test_version.c — one version everywhere: kiln.h's three numbers and
 * its string, the library's kiln_version(), and configure's PACKAGE_VERSION
 * (which kiln.pc and the tarball carry), read from kiln.h by autoconf.
 */
#include "config.h"

#include <criterion/criterion.h>
#include <kiln/kiln.h>

#include <stdio.h>

Test(version, the_library_reports_the_version_of_its_header)
{
    cr_assert_str_eq(kiln_version(), KILN_VERSION_STRING,
                     "kiln_version() is \"%s\", kiln.h says \"%s\"", kiln_version(),
                     KILN_VERSION_STRING);
}

Test(version, the_string_is_the_three_numbers)
{
    char want[64];
    snprintf(want, sizeof want, "%d.%d.%d", KILN_VERSION_MAJOR, KILN_VERSION_MINOR,
             KILN_VERSION_PATCH);
    cr_assert_str_eq(KILN_VERSION_STRING, want,
                     "KILN_VERSION_STRING is \"%s\", the three numbers say \"%s\"",
                     KILN_VERSION_STRING, want);
}

Test(version, configure_read_it_from_the_header)
{
    cr_assert_str_eq(PACKAGE_VERSION, KILN_VERSION_STRING,
                     "configure's version is \"%s\", kiln.h's \"%s\": run autoreconf -fi",
                     PACKAGE_VERSION, KILN_VERSION_STRING);
}
