/* core/base/log.c — KILN_LOG: messages to stderr at or below the chosen level. */
#include "../kiln-impl.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static kiln_log_level log_level = KILN_LOG_WARN;
static pthread_once_t log_once  = PTHREAD_ONCE_INIT;

static const char *const level_names[] = {"error", "warn", "info", "debug"};

static void log_init(void)
{
    const char *v = getenv("KILN_LOG");
    if (!v || !*v)
        return;
    for (int i = 0; i <= KILN_LOG_DEBUG; i++) {
        if (strcasecmp(v, level_names[i]) == 0) {
            log_level = (kiln_log_level)i;
            return;
        }
    }
    fprintf(stderr,
            "kiln: warn: KILN_LOG=\"%s\" is not one of error, warn, info, "
            "debug; using warn\n",
            v);
}

bool kiln__log_enabled(kiln_log_level level)
{
    pthread_once(&log_once, log_init);
    return level <= log_level;
}

void kiln__vlog(kiln_log_level level, const char *fmt, va_list ap)
{
    if (!kiln__log_enabled(level))
        return;
    /* One fprintf per line, so lines from two threads do not interleave. */
    char msg[1024];
    vsnprintf(msg, sizeof msg, fmt, ap);
    fprintf(stderr, "kiln: %s: %s\n", level_names[level], msg);
}

void kiln__log(kiln_log_level level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    kiln__vlog(level, fmt, ap);
    va_end(ap);
}
