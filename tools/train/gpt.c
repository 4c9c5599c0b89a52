/* tools/train/gpt.c — kiln-train --model gpt: a byte-level GPT-2 trained on
 * a text file.
 *
 * The model is tools/gpt/model.c's. One graph holds the forward pass, its gradient,
 * clipping by the global norm and AdamW; each step is one run of it, and
 * kiln_graph_eval runs its forward pass alone for the validation loss.
 *
 * Data: the first 90% of the file trains, the last 10% validates; a batch is
 * --batch windows of ctx+1 bytes at random offsets (the inputs and, one byte
 * on, the targets). The validation loss is the mean over 20 batches whose
 * offsets come from a fixed seed, so runs with different --seed compare on
 * the same text.
 *
 * --save writes the weights with the model's shape in the file's metadata,
 * which kiln-generate reads.
 *
 * On N processes (mpirun), every process draws the same --batch windows
 * and trains on its 1/N of them, the gradients averaged before clipping;
 * the validation batches are split the same way. --checkpoint writes the
 * weights, AdamW's state, the step and the sampler's state every
 * --checkpoint-every steps and at the end; --resume goes on from there.
 */
#include "../gpt/model.h"
#include "train.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define VAL_BATCHES 20
#define VAL_SEED    0x5EEDull

/* ---- data --------------------------------------------------------------------- */

typedef struct text {
    unsigned char *bytes;
    size_t         n, n_train; /* [0, n_train) trains, [n_train, n) validates */
} text;

static text read_text(const char *path, int ctx)
{
    struct stat sb;
    if (stat(path, &sb) != 0)
        die(1, "--data %s: %s", path, strerror(errno));
    if (!S_ISREG(sb.st_mode))
        die(1, "--data %s is not a regular file: --model gpt trains on a text file",
            path);
    FILE *f = fopen(path, "rb");
    if (!f)
        die(1, "--data %s: %s", path, strerror(errno));
    text t = {malloc((size_t)sb.st_size + 1), 0, 0};
    if (!t.bytes)
        die(1, "--data %s: out of memory for %lld bytes", path, (long long)sb.st_size);
    t.n = fread(t.bytes, 1, (size_t)sb.st_size, f);
    if (ferror(f))
        die(1, "--data %s: %s", path, strerror(errno));
    fclose(f);
    t.n_train = t.n * 9 / 10;
    /* each part must hold at least one window of ctx + 1 bytes */
    size_t need = (size_t)ctx + 1;
    if (t.n_train < need || t.n - t.n_train < need)
        die(1,
            "--data %s has %zu bytes: with --ctx %d, its first 90%% and its last 10%% "
            "must each hold %zu bytes (at least %zu in all)",
            path, t.n, ctx, need, need * 10);
    return t;
}

/* ---- the model ------------------------------------------------------------------- */

typedef struct gpt {
    const gpt_options *o;
    kiln_graph        *g;
    kiln_tensor       *ids, *targets, *pos, *loss, *norm;
    kiln_optimizer    *opt;
    uint64_t           init_state; /* splitmix64: each parameter's seed */
} gpt;

static gpt build(kiln_context *ctx, const gpt_options *o)
{
    gpt m = {.o = o, .g = kiln_graph_new(ctx), .init_state = o->seed};
    if (!m.g)
        die(1, "%s", kiln_last_error());
    kiln_graph  *g = m.g;
    int64_t      B = o->batch / parallel_size(), T = o->ctx; /* this process's rows */
    gpt_shape    s      = {o->layers, o->heads, o->embd, o->ctx};
    kiln_tensor *logits =
        gpt_build(g, &s, B, T, &m.init_state, NULL, o->precision, &m.ids, &m.pos);
    if (!logits)
        die(1, "building the model: %s", gpt_error(g));
    m.targets = kiln_input(g, "targets", KILN_I32, KILN_SHAPE(B * T));
    m.loss    = kiln_cross_entropy(g, logits, m.targets);
    if (kiln_graph_status(g) != KILN_OK)
        die(1, "building the model: %s", kiln_graph_error(g));
    check(gpt_shape_save(g, &s), "recording the model's shape");
    check(kiln_output(g, m.loss), "the loss");
    if (o->precision == KILN_F16) /* f16's range needs the loss scaled */
        check(kiln_loss_scale(g, 65536.0f, 2000), "kiln_loss_scale");
    check(kiln_backward(g, m.loss), "kiln_backward");
    check(kiln_graph_allreduce_grads(g, parallel_comm(), (size_t)(o->bucket_mb * 1e6)),
          "averaging the gradients");
    m.norm = kiln_clip_grad_norm(g, 1.0f);
    if (!m.norm)
        die(1, "kiln_clip_grad_norm: %s", kiln_last_error());
    m.opt = kiln_adamw(g, (float)o->lr, 0.9f, 0.95f, 1e-8f, 0.1f);
    if (!m.opt)
        die(1, "kiln_adamw: %s", kiln_last_error());
    check(kiln_graph_compile(g), "compiling the model");
    check(kiln_comm_broadcast_params(parallel_comm(), g, 0, false),
          "sending rank 0's weights");
    int32_t *pos = malloc((size_t)T * sizeof *pos);
    if (!pos)
        die(1, "out of memory");
    for (int64_t t = 0; t < T; t++)
        pos[t] = (int32_t)t;
    check(kiln_tensor_write(m.pos, pos, (size_t)T * sizeof *pos), "positions");
    free(pos);
    return m;
}

/* ---- training ------------------------------------------------------------------ */

/* Linear warmup to lr over `warmup` steps, then a half cosine to 0 at the
 * last step. */
static double lr_at(const gpt_options *o, int step)
{
    if (step < o->warmup)
        return o->lr * (step + 1) / o->warmup;
    int    decay = o->steps - o->warmup;
    double done  = decay > 1 ? (double)(step - o->warmup) / (decay - 1) : 1.0;
    return o->lr * 0.5 * (1.0 + cos(M_PI * done));
}

/* Host buffers of one batch. */
typedef struct batch {
    int32_t *ids, *targets;
} batch;

/* --batch windows at random offsets of [lo, hi), of which this process's
 * share goes into b and onto the device. */
static void fill(const gpt *m, const text *t, size_t lo, size_t hi, uint64_t *state,
                 batch *b)
{
    const gpt_options *o    = m->o;
    size_t             span = hi - lo - (size_t)o->ctx; /* offsets: [lo, lo + span) */
    int                rows = o->batch / parallel_size(), first = parallel_rank() * rows;
    for (int w = 0; w < o->batch; w++) {
        size_t at = lo + (size_t)(next_random(state) % span);
        int    r  = w - first;
        if (r < 0 || r >= rows)
            continue; /* another process's window */
        const unsigned char *src = t->bytes + at;
        for (int i = 0; i < o->ctx; i++) {
            b->ids[(size_t)r * (size_t)o->ctx + (size_t)i]     = src[i];
            b->targets[(size_t)r * (size_t)o->ctx + (size_t)i] = src[i + 1];
        }
    }
    size_t bytes = (size_t)rows * (size_t)o->ctx * sizeof(int32_t);
    check(kiln_tensor_write(m->ids, b->ids, bytes), "a batch");
    check(kiln_tensor_write(m->targets, b->targets, bytes), "a batch");
}

static double val_loss(const gpt *m, const text *t, batch *b)
{
    uint64_t state = VAL_SEED;
    double   sum   = 0;
    for (int i = 0; i < VAL_BATCHES; i++) {
        fill(m, t, t->n_train, t->n, &state, b);
        check(kiln_graph_eval(m->g, m->loss), "evaluating");
        float loss;
        check(kiln_tensor_read(m->loss, &loss, sizeof loss), "the loss");
        sum += loss;
    }
    return parallel_mean(sum / VAL_BATCHES);
}

/* A bar redrawn in place on a terminal between the loss lines. */
static void draw(int step, int steps, double loss, double tok_s)
{
    char bar[25];
    int  fill_n = (int)(24LL * step / steps);
    for (int i = 0; i < 24; i++)
        bar[i] = i < fill_n ? '#' : '.';
    bar[24] = '\0';
    printf("\r\033[Kstep %d/%d [%s] %3d%%  loss %.4f  %.0f tok/s", step, steps, bar,
           (int)(100LL * step / steps), loss, tok_s);
    fflush(stdout);
}

/* ---- checkpoints ------------------------------------------------------------------ */

enum { META_STEP, META_SAMPLER, N_META = 11 };

/* The position (steps done, the sampler's state), then the options that
 * must be the same to resume. */
static void run_meta_of(const gpt_options *o, run_meta meta[N_META], int step,
                        uint64_t sampler)
{
    const run_meta all[N_META] = {
        {"kiln.train.step", NULL, ""},         {"kiln.train.sampler", NULL, ""},
        {"kiln.train.model", "--model", "gpt"}, {"kiln.train.layers", "--layers", ""},
        {"kiln.train.heads", "--heads", ""},   {"kiln.train.embd", "--embd", ""},
        {"kiln.train.ctx", "--ctx", ""},       {"kiln.train.batch", "--batch", ""},
        {"kiln.train.steps", "--steps", ""},   {"kiln.train.lr", "--lr", ""},
        {"kiln.train.seed", "--seed", ""},
    };
    memcpy(meta, all, sizeof all);
    snprintf(meta[0].value, sizeof meta[0].value, "%d", step);
    snprintf(meta[1].value, sizeof meta[1].value, "%llu", (unsigned long long)sampler);
    snprintf(meta[3].value, sizeof meta[3].value, "%d", o->layers);
    snprintf(meta[4].value, sizeof meta[4].value, "%d", o->heads);
    snprintf(meta[5].value, sizeof meta[5].value, "%d", o->embd);
    snprintf(meta[6].value, sizeof meta[6].value, "%d", o->ctx);
    snprintf(meta[7].value, sizeof meta[7].value, "%d", o->batch);
    snprintf(meta[8].value, sizeof meta[8].value, "%d", o->steps);
    snprintf(meta[9].value, sizeof meta[9].value, "%.17g", o->lr);
    snprintf(meta[10].value, sizeof meta[10].value, "%llu", (unsigned long long)o->seed);
}

int gpt_train(const gpt_options *o)
{
    if (o->save && parallel_rank() == 0) /* rank 0 writes it */
        check_save("--save", o->save, o->save, 0);
    text          t   = read_text(o->data, o->ctx);
    kiln_context *ctx = parallel_context();
    printf("backend: %s\n", kiln_context_device(ctx));
    gpt m = build(ctx, o);
    printf("model gpt: %d layers, %d heads, embd %d, ctx %d (%lld parameters); %zu bytes "
           "train, %zu validate\n",
           o->layers, o->heads, o->embd, o->ctx, param_count(m.g), t.n_train,
           t.n - t.n_train);
    size_t n = (size_t)o->batch * (size_t)o->ctx; /* tokens a step, all processes */
    batch  b = {malloc(n * sizeof *b.ids), malloc(n * sizeof *b.targets)};
    if (!b.ids || !b.targets)
        die(1, "out of memory for a batch of %d x %d", o->batch, o->ctx);

    bool     tty       = isatty(STDOUT_FILENO) && parallel_size() == 1; /* see main.c */
    uint64_t state     = o->seed;
    double   train_sum = 0, step_time = 0, all_time = 0, last_val = 0;
    int      since = 0, first = 0;
    run_meta meta[N_META];
    if (o->resume) {
        run_meta_of(o, meta, 0, 0);
        checkpoint_resume(m.g, o->resume, meta, N_META);
        first = atoi(meta[META_STEP].value);
        state = strtoull(meta[META_SAMPLER].value, NULL, 10);
        printf("resumed from %s at step %d\n", o->resume, first);
    }
    if (parallel_size() > 1)
        printf("data-parallel: %d processes (%s), %d sequences each per step\n",
               parallel_size(), kiln_comm_name(parallel_comm()),
               o->batch / parallel_size());
    for (int step = first; step < o->steps; step++) {
        check(kiln_optimizer_set_lr(m.opt, (float)lr_at(o, step)), "the learning rate");
        fill(&m, &t, 0, t.n_train, &state, &b);
        double start = now();
        check(kiln_graph_run(m.g), "a training step");
        float loss;
        check(kiln_tensor_read(m.loss, &loss, sizeof loss), "the loss");
        double took = now() - start;
        step_time += took;
        all_time += took;
        train_sum += loss;
        since++;
        if (tty)
            draw(step + 1, o->steps, loss, (double)n / (took + 1e-12));
        if (o->checkpoint && ((o->checkpoint_every && (step + 1) % o->checkpoint_every == 0) ||
                              step + 1 == o->steps)) {
            run_meta_of(o, meta, step + 1, state);
            checkpoint_write(m.g, o->checkpoint, meta, N_META);
        }
        if ((step + 1) % o->eval_every != 0 && step + 1 != o->steps)
            continue;
        last_val     = val_loss(&m, &t, &b);
        double ms    = 1e3 * step_time / since;
        double train = parallel_mean(train_sum / since);
        printf("%sstep %d train %.4f val %.4f ms/step %.1f tok/s %.0f\n",
               tty ? "\r\033[K" : "", step + 1, train, last_val, ms,
               (double)n / (ms / 1e3));
        fflush(stdout);
        train_sum = step_time = 0;
        since                 = 0;
    }
    if (first >= o->steps)
        last_val = val_loss(&m, &t, &b);
    printf("final val %.4f ms/step %.1f\n", last_val,
           1e3 * all_time / (o->steps > first ? o->steps - first : 1));
    if (o->precision == KILN_F16) {
        float    scale;
        uint64_t skipped;
        check(kiln_loss_scale_state(m.g, &scale, &skipped), "the loss scale");
        printf("loss scale %g, %llu step%s skipped\n", (double)scale,
               (unsigned long long)skipped, skipped == 1 ? "" : "s");
    }
    if (o->save && parallel_rank() == 0) {
        check(kiln_save_as(m.g, o->save, o->save_dtype), "--save");
        printf("weights saved to %s (%s)\n", o->save, kiln_dtype_name(o->save_dtype));
    }
    print_profile(m.g);
    kiln_graph_free(m.g);
    kiln_context_free(ctx);
    free(b.ids);
    free(b.targets);
    free(t.bytes);
    return 0;
}
