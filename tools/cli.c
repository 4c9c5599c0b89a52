/* tools/cli.c — the command-line helpers of cli.h. */
#include "cli.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

/* Set once, before any other call, by the program's main thread. */
static const char *cli_program = "kiln";

void cli_init(char **argv, const char *program)
{
    cli_program = program;
    argv[0]     = (char *)program;
}

void cli_try_help(void)
{
    fprintf(stderr, "Try '%s --help' for more information.\n", cli_program);
    exit(2);
}

void cli_usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s: ", cli_program);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    cli_try_help();
}

long long cli_parse_int(const char *opt, const char *text, long long min, long long max)
{
    char *end;
    errno       = 0;
    long long v = strtoll(text, &end, 10);
    if (errno || end == text || *end || v < min || v > max) {
        fprintf(stderr, "%s: %s '%s': expected a whole number from %lld to %lld\n",
                cli_program, opt, text, min, max);
        exit(2);
    }
    return v;
}
