/* core/base/error.c — status names, the per-thread last error, checked allocation. */
#include "../kiln-impl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static _Thread_local char last_error[1024];

KILN_API const char *kiln_status_name(kiln_status status)
{
    switch (status) {
    case KILN_OK: return "KILN_OK";
    case KILN_ERR_INVALID_ARG: return "KILN_ERR_INVALID_ARG";
    case KILN_ERR_SHAPE: return "KILN_ERR_SHAPE";
    case KILN_ERR_STATE: return "KILN_ERR_STATE";
    case KILN_ERR_NO_MEMORY: return "KILN_ERR_NO_MEMORY";
    case KILN_ERR_BACKEND: return "KILN_ERR_BACKEND";
    case KILN_ERR_NOT_FOUND: return "KILN_ERR_NOT_FOUND";
    case KILN_ERR_IO: return "KILN_ERR_IO";
    }
    return "KILN_ERR_UNKNOWN";
}

KILN_API const char *kiln_last_error(void)
{
    return last_error;
}

kiln_status kiln__verror(kiln_status status, const char *fmt, va_list ap)
{
    /* Formatting into a scratch buffer first lets a message quote the previous
     * one ("... : %s", kiln_last_error()) without overlapping copies. */
    char msg[sizeof last_error];
    vsnprintf(msg, sizeof msg, fmt, ap);
    memcpy(last_error, msg, sizeof last_error);
    kiln__log(KILN_LOG_DEBUG, "error %s: %s", kiln_status_name(status), msg);
    return status;
}

kiln_status kiln__error(kiln_status status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    kiln__verror(status, fmt, ap);
    va_end(ap);
    return status;
}

void *kiln__malloc(size_t size, const char *what)
{
    void *p = malloc(size ? size : 1);
    if (!p)
        kiln__error(KILN_ERR_NO_MEMORY, "out of memory: %zu bytes for %s", size, what);
    return p;
}

void *kiln__calloc(size_t n, size_t size, const char *what)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p)
        kiln__error(KILN_ERR_NO_MEMORY, "out of memory: %zu x %zu bytes for %s", n, size,
                    what);
    return p;
}

char *kiln__strdup(const char *s, const char *what)
{
    size_t n = strlen(s) + 1;
    char  *p = kiln__malloc(n, what);
    if (p)
        memcpy(p, s, n);
    return p;
}
