/* tools/cli.h — what kiln's command-line tools share to read their
 * arguments with getopt_long and to report a bad one the same way: the
 * program's name, the option and the value, and exit status 2. */
#ifndef KILN_TOOLS_CLI_H
#define KILN_TOOLS_CLI_H

/* Names the program in every message, getopt_long's included: getopt names
 * it by argv[0], which in the build tree is libtool's .libs/lt-NAME, so
 * argv[0] becomes `program` (a string that outlives the parse). */
void cli_init(char **argv, const char *program);

/* "Try 'PROGRAM --help' for more information." and exit 2: after
 * getopt_long's own message, or cli_usage_error's. */
void cli_try_help(void) __attribute__((noreturn));

/* "PROGRAM: " and the message on stderr, then cli_try_help. */
void cli_usage_error(const char *fmt, ...)
    __attribute__((format(printf, 1, 2), noreturn));

/* text as a whole number from min to max, or exit 2 after "PROGRAM: OPT
 * 'TEXT': expected a whole number from MIN to MAX". */
long long cli_parse_int(const char *opt, const char *text, long long min, long long max);

#endif /* KILN_TOOLS_CLI_H */
