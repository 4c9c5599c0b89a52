/* tools/train/train.h — what kiln-train's models share (main.c has the
 * classifiers and the command line, gpt.c the byte-level GPT). */
#ifndef KILN_TOOLS_TRAIN_H
#define KILN_TOOLS_TRAIN_H

#include "../random.h"

#include <kiln/kiln.h>

#include <stdbool.h>
#include <stdint.h>

/* "kiln-train: " and the message on stderr, then exit(status). */
void die(int status, const char *fmt, ...)
    __attribute__((format(printf, 2, 3), noreturn));
/* die(1) with kiln_last_error() unless st is KILN_OK. */
void check(kiln_status st, const char *what);
/* --save's file: a regular file or a new name in a writable folder, or die. */
void      check_save(const char *opt, const char *path, int links);
long long param_count(const kiln_graph *g);
/* The graph's profile on stderr when KILN_PROFILE made one (kiln(7)). */
void   print_profile(kiln_graph *g);
double now(void); /* seconds, monotonic */

/* --model gpt's options (kiln-train(1)). */
typedef struct gpt_options {
    const char *data; /* the text file                                  */
    const char *save; /* or NULL                                        */
    int         layers, heads, embd, ctx, batch, steps, warmup, eval_every;
    double      lr;
    uint64_t    seed;
} gpt_options;

/* Trains the GPT, printing progress and losses; the exit status. */
int gpt_train(const gpt_options *o);

#endif /* KILN_TOOLS_TRAIN_H */
