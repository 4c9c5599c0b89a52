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
/* The file of --save or --checkpoint (option) given as opt: a regular file or
 * a new name in a writable folder, or die. */
void check_save(const char *option, const char *opt, const char *path, int links);
long long param_count(const kiln_graph *g);
/* The graph's profile on stderr when KILN_PROFILE made one (kiln(7)). */
void   print_profile(kiln_graph *g);
double now(void); /* seconds, monotonic */

/* ---- many processes (parallel.c) ------------------------------------------ */

/* Opens the communicator (mpi under mpirun, else one process); on ranks
 * other than 0 stdout goes to /dev/null. Dies on failure. */
void       parallel_start(void);
void       parallel_end(void);
kiln_comm *parallel_comm(void);
int        parallel_rank(void);
int        parallel_size(void);
/* Ends the whole job with status when there are other processes (die calls
 * it); returns when this is the only one. */
void parallel_fail(int status);
/* A context on this process's device (kiln_comm_context_new), or die. */
kiln_context *parallel_context(void);
/* The mean or sum of a value over the processes. */
double parallel_mean(double local);
double parallel_sum(double local);

/* One entry of a checkpoint's metadata: "kiln.train.<what>". option names
 * the command-line option that must be the same to resume ("--batch"), or
 * is NULL for the run's position, which resuming reads. */
typedef struct run_meta {
    const char *key;
    const char *option;
    char        value[96];
} run_meta;

/* kiln_checkpoint_save of g with meta, by rank 0. */
void checkpoint_write(kiln_graph *g, const char *path, const run_meta *meta, size_t n);
/* Rank 0 loads path into g and checks meta's options against it; every
 * process then has its weights, optimiser state and position (the values
 * of the entries without an option). Dies on a mismatch. */
void checkpoint_resume(kiln_graph *g, const char *path, run_meta *meta, size_t n);

/* --model gpt's options (kiln-train(1)). */
typedef struct gpt_options {
    const char *data; /* the text file                                  */
    const char *save; /* or NULL                                        */
    const char *checkpoint, *resume; /* or NULL                         */
    int         checkpoint_every;    /* steps, or 0: at the end only    */
    double      bucket_mb;           /* gradient buckets; 0: kiln's     */
    kiln_dtype  precision;           /* --precision                      */
    kiln_dtype  save_dtype;          /* --save-dtype                     */
    int         layers, heads, embd, ctx, batch, steps, warmup, eval_every;
    double      lr;
    uint64_t    seed;
} gpt_options;

/* Trains the GPT, printing progress and losses; the exit status. */
int gpt_train(const gpt_options *o);

#endif /* KILN_TOOLS_TRAIN_H */
