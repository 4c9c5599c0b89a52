/* core/base/version.c — the library's version, as kiln.h says it. */
#include "../kiln-impl.h"

KILN_API const char *kiln_version(void)
{
    return KILN_VERSION_STRING;
}
