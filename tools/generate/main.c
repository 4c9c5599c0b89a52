/* kiln-generate — samples text from a byte-level GPT that kiln-train --model
 * gpt saved.
 *
 * The model's shape comes from the weights file's metadata. Decoding is
 * incremental: one graph runs one position, appending that position's keys
 * and values to a cache on the device (kiln_store_slice) and attending over
 * the cache, so each new byte costs one position's work. --no-cache instead
 * runs the whole context for every byte, as a model without a cache must:
 * the same text (up to float rounding), for comparing speed.
 *
 * The context is the model's ctx positions. When it is full, it slides: the
 * last ctx/2 bytes are read again at positions 0..ctx/2-1 and decoding goes
 * on after them (both modes do the same, so they agree).
 *
 * The prompt and the sampled bytes go to stdout, nothing else; the
 * timings go to stderr. Exit status: 0 done, 1 a failure, 2 a bad command
 * line.
 */
#include "../cli.h"
#include "../gpt/model.h"
#include "../random.h"

#include <kiln/kiln.h>

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct options {
    const char *weights, *prompt;
    long long   tokens;
    double      temperature;
    int         top_k;
    uint64_t    seed;
    bool        cache;
} options;

static const char usage[] =
    "Usage: kiln-generate --weights FILE [OPTION]...\n"
    "Samples bytes from a GPT that kiln-train --model gpt --save wrote, after a\n"
    "prompt, and prints the prompt and the sampled bytes. KILN_BACKEND chooses\n"
    "the backend (kiln-info).\n"
    "\n"
    "  --weights FILE          the safetensors file; the model's shape is read\n"
    "                          from its metadata\n"
    "  --prompt TEXT           the text to continue (default: none, which starts\n"
    "                          from a newline that is not printed)\n"
    "  --tokens N              bytes to sample (default 256)\n"
    "  --temperature T         divides the logits before sampling (default 1);\n"
    "                          0 takes the most likely byte every time\n"
    "  --top-k K               sample among the K most likely bytes only\n"
    "                          (default 0: all 256)\n"
    "  --seed N                the sampling's random sequence (default 1): the\n"
    "                          same seed gives the same text on one backend\n"
    "  --no-cache              run the whole context for every byte instead of\n"
    "                          keeping keys and values (slower; the same text)\n"
    "  --version               print kiln's version and exit\n"
    "  --help                  print this and exit\n"
    "\n"
    "The speed goes to stderr: the prompt's bytes, then the sampled ones, in\n"
    "tokens/s.\n";

enum {
    OPT_WEIGHTS = 256,
    OPT_PROMPT,
    OPT_TOKENS,
    OPT_TEMPERATURE,
    OPT_TOP_K,
    OPT_SEED,
    OPT_NO_CACHE
};

static const struct option long_options[] = {
    {"weights", required_argument, NULL, OPT_WEIGHTS},
    {"prompt", required_argument, NULL, OPT_PROMPT},
    {"tokens", required_argument, NULL, OPT_TOKENS},
    {"temperature", required_argument, NULL, OPT_TEMPERATURE},
    {"top-k", required_argument, NULL, OPT_TOP_K},
    {"seed", required_argument, NULL, OPT_SEED},
    {"no-cache", no_argument, NULL, OPT_NO_CACHE},
    {"version", no_argument, NULL, 'V'},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
    va_list ap;
    fflush(stdout);
    fputs("kiln-generate: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(1);
}

static void check(kiln_status st, const char *what)
{
    if (st != KILN_OK)
        die("%s: %s", what, kiln_last_error());
}

static double parse_temperature(const char *text)
{
    char *end;
    errno    = 0;
    double t = strtod(text, &end);
    if (errno || end == text || *end || !(t >= 0) || !isfinite(t))
        cli_usage_error("--temperature '%s': expected a number from 0 (greedy) up, e.g. "
                        "0.8",
                        text);
    return t;
}

static options parse_args(int argc, char **argv)
{
    options o = {
        .prompt = "", .tokens = 256, .temperature = 1.0, .seed = 1, .cache = true};
    cli_init(argv, "kiln-generate");
    int c;
    while ((c = getopt_long(argc, argv, "hV", long_options, NULL)) != -1) {
        switch (c) {
        case 'h': fputs(usage, stdout); exit(0);
        case 'V': printf("kiln-generate %s\n", kiln_version()); exit(0);
        case OPT_WEIGHTS: o.weights = optarg; break;
        case OPT_PROMPT: o.prompt = optarg; break;
        case OPT_TOKENS:
            o.tokens = cli_parse_int("--tokens", optarg, 0, 1000000000);
            break;
        case OPT_TEMPERATURE: o.temperature = parse_temperature(optarg); break;
        case OPT_TOP_K:
            o.top_k = (int)cli_parse_int("--top-k", optarg, 0, GPT_VOCAB);
            break;
        case OPT_SEED:
            o.seed = (uint64_t)cli_parse_int("--seed", optarg, 0, INT64_MAX);
            break;
        case OPT_NO_CACHE: o.cache = false; break;
        default: cli_try_help();
        }
    }
    if (optind < argc)
        cli_usage_error("unexpected argument '%s'", argv[optind]);
    if (!o.weights)
        cli_usage_error("--weights FILE is needed: the weights kiln-train --model gpt "
                        "--save wrote");
    return o;
}

/* ---- sampling ------------------------------------------------------------------------ */

/* The next byte from logits [256]: the most likely (the lowest on a tie)
 * at temperature 0, else a draw from softmax(logits / T) over the top k. */
static int sample(const float *logits, const options *o, uint64_t *rng)
{
    int best = 0;
    for (int i = 1; i < GPT_VOCAB; i++)
        if (logits[i] > logits[best])
            best = i;
    if (o->temperature == 0 || o->top_k == 1)
        return best;
    /* the k-th largest logit: kept are those at least as large */
    float cut = -INFINITY;
    if (o->top_k > 0) {
        float sorted[GPT_VOCAB];
        memcpy(sorted, logits, sizeof sorted);
        for (int i = 0; i < o->top_k; i++) { /* partial selection: k is small */
            int m = i;
            for (int j = i + 1; j < GPT_VOCAB; j++)
                if (sorted[j] > sorted[m])
                    m = j;
            float t   = sorted[i];
            sorted[i] = sorted[m];
            sorted[m] = t;
        }
        cut = sorted[o->top_k - 1];
    }
    double p[GPT_VOCAB], total = 0;
    for (int i = 0; i < GPT_VOCAB; i++) {
        p[i] = logits[i] >= cut ? exp(((double)logits[i] - logits[best]) / o->temperature)
                                : 0.0;
        total += p[i];
    }
    double u = (double)(next_random(rng) >> 11) / 9007199254740992.0 * total;
    for (int i = 0; i < GPT_VOCAB; i++) {
        if (u < p[i])
            return i;
        u -= p[i];
    }
    return best; /* u rounded past the end */
}

/* ---- the model --------------------------------------------------------------------------- */

typedef struct decoder {
    const options *o;
    gpt_shape      s;
    kiln_graph    *g;
    kiln_tensor   *ids, *pos, *logits;
    gpt_cache      cache;
    int32_t       *window; /* the bytes in the context, n of them (< ctx)  */
    int            n;
    float         *out; /* the logits read back                      */
    long long      runs;
} decoder;

static void open_model(decoder *d, kiln_context *ctx)
{
    const options *o = d->o;
    if (gpt_shape_load(o->weights, &d->s) != KILN_OK)
        die("--weights %s", gpt_load_error());
    d->g = kiln_graph_new(ctx);
    if (!d->g)
        die("%s", kiln_last_error());
    int64_t t = o->cache ? 1 : d->s.ctx;
    d->logits = gpt_build(d->g, &d->s, 1, t, NULL, o->cache ? &d->cache : NULL, KILN_F32, &d->ids,
                          &d->pos);
    if (!d->logits)
        die("building the model: %s", gpt_error(d->g));
    check(kiln_output(d->g, d->logits), "the logits");
    check(kiln_graph_compile(d->g), "compiling the model");
    check(kiln_load(d->g, o->weights), "--weights");
    d->window = calloc((size_t)d->s.ctx, sizeof *d->window);
    d->out    = malloc((size_t)t * GPT_VOCAB * sizeof *d->out);
    if (!d->window || !d->out)
        die("out of memory for a context of %d", d->s.ctx);
    if (!o->cache) {
        for (int i = 0; i < d->s.ctx; i++)
            d->window[i] = i; /* positions 0..ctx-1, written once */
        check(kiln_tensor_write(d->pos, d->window, (size_t)d->s.ctx * sizeof(int32_t)),
              "positions");
        memset(d->window, 0, (size_t)d->s.ctx * sizeof *d->window);
        return;
    }
    /* the values' unused rows are multiplied by 0: they must be finite */
    size_t per   = (size_t)d->s.ctx * (size_t)d->s.embd;
    float *zeros = calloc(per, sizeof *zeros);
    if (!zeros)
        die("out of memory for the cache");
    for (int l = 0; l < d->s.layers; l++) {
        check(kiln_tensor_write(d->cache.k[l], zeros, per * sizeof *zeros), "the cache");
        check(kiln_tensor_write(d->cache.v[l], zeros, per * sizeof *zeros), "the cache");
    }
    free(zeros);
}

/* Runs position p holding byte b through the cache. */
static void step(decoder *d, int32_t b, int32_t p)
{
    check(kiln_tensor_write(d->ids, &b, sizeof b), "a byte");
    check(kiln_tensor_write(d->pos, &p, sizeof p), "a position");
    check(kiln_tensor_write(d->cache.at, &p, sizeof p), "a position");
    check(kiln_graph_run(d->g), "decoding");
    d->runs++;
}

/* Appends byte b to the context, sliding it when full; with a cache, b's
 * position runs now (the logits after it are then ready). */
static void push(decoder *d, int32_t b)
{
    if (d->n == d->s.ctx) {
        int keep = d->s.ctx / 2;
        memmove(d->window, d->window + d->n - keep, (size_t)keep * sizeof *d->window);
        d->n = keep;
        for (int i = 0; d->o->cache && i < keep; i++)
            step(d, d->window[i], i);
    }
    d->window[d->n] = b;
    if (d->o->cache)
        step(d, b, d->n);
    d->n++;
}

/* The logits after the last byte in the context. */
static const float *next_logits(decoder *d)
{
    if (d->o->cache) {
        check(kiln_tensor_read(d->logits, d->out, GPT_VOCAB * sizeof *d->out),
              "the logits");
        return d->out;
    }
    /* the whole context; what follows the last byte cannot reach it */
    check(kiln_tensor_write(d->ids, d->window, (size_t)d->s.ctx * sizeof *d->window),
          "the context");
    check(kiln_graph_run(d->g), "decoding");
    d->runs++;
    check(kiln_tensor_read(d->logits, d->out,
                           (size_t)d->s.ctx * GPT_VOCAB * sizeof *d->out),
          "the logits");
    return d->out + (size_t)(d->n - 1) * GPT_VOCAB;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int main(int argc, char **argv)
{
    options       o   = parse_args(argc, argv);
    kiln_context *ctx = kiln_context_new();
    if (!ctx)
        die("%s", kiln_last_error());
    decoder d = {.o = &o};
    open_model(&d, ctx);

    size_t prompt_len = strlen(o.prompt);
    fwrite(o.prompt, 1, prompt_len, stdout);
    fflush(stdout);
    double start = now();
    if (prompt_len == 0)
        push(&d, '\n');
    for (size_t i = 0; i < prompt_len; i++)
        push(&d, (unsigned char)o.prompt[i]);
    const float *logits      = next_logits(&d);
    double       prompt_time = now() - start;

    uint64_t rng = o.seed;
    start        = now();
    for (long long i = 0; i < o.tokens; i++) {
        int b = sample(logits, &o, &rng);
        putchar(b);
        if (b == '\n')
            fflush(stdout);
        if (i + 1 < o.tokens) {
            push(&d, b);
            logits = next_logits(&d);
        }
    }
    double took = now() - start;
    if (fflush(stdout) != 0 || ferror(stdout))
        die("writing the text: %s", strerror(errno));
    fprintf(stderr,
            "\nkiln-generate: %s, %s: prompt %zu bytes in %.3f s; %lld tokens in %.3f s: "
            "%.1f tokens/s (%lld graph runs)\n",
            kiln_context_device(ctx), o.cache ? "key/value cache" : "no cache",
            prompt_len, prompt_time, o.tokens, took,
            took > 0 ? (double)o.tokens / took : 0.0, d.runs);
    kiln_graph_free(d.g);
    kiln_context_free(ctx);
    free(d.window);
    free(d.out);
    return 0;
}
