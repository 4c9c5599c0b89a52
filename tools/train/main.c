/* kiln-train — trains a small classifier on Fashion-MNIST (or MNIST) with kiln
 * and reports its accuracy on the test set.
 *
 * One graph does everything: the forward pass, kiln_backward and the
 * optimiser's update nodes, compiled once for a fixed batch. Each run takes
 * one step; kiln_graph_eval runs only the forward pass for evaluation. The
 * test set's last partial batch is padded with zeros and the padding's
 * predictions ignored; in training, the last partial batch of each epoch is
 * dropped (the order is reshuffled every epoch, so no sample is always left
 * out).
 *
 * Every path is checked before anything else (a context, the data, a
 * training run of minutes): --data must be a folder with the four IDX
 * files, each a regular file; --eval a readable regular file; --save a
 * regular file or a new name, in a folder this process may write. A data
 * set with no images is refused: there is nothing to train on, or no
 * accuracy to report.
 *
 * Exit status: 0 done, 1 a failure (data, kiln), 2 a bad command line.
 */
#include "../cli.h"
#include "train.h"

#include <kiln/kiln.h>

#include <errno.h>
#include <getopt.h>
#include <libgen.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_DATA "/usr/share/datasets/fashion-mnist"
#define PIXELS       784
#define CLASSES      10

typedef struct options {
    const char *model;     /* mlp, cnn, linear                          */
    const char *optimizer; /* sgd, adam                                 */
    int         epochs, batch;
    double      lr;     /* 0: the optimiser's default                */
    bool        cosine; /* lr annealed to 0 over the run (default)   */
    uint64_t    seed;
    const char *data, *save, *eval;
    bool        data_given;
    const char *checkpoint, *resume; /* or NULL                         */
    int         checkpoint_every;    /* steps; 0: at the end of epochs  */
    int         local_steps;         /* 0: average gradients every step */
    const char *shard;               /* "none", "iid", "by-label"       */
    double      bucket_mb;           /* gradient buckets; 0: kiln's     */
    kiln_dtype  precision;           /* the forward and backward passes' */
    kiln_dtype  save_dtype;          /* --save's weights                 */
    gpt_options gpt; /* --model gpt */
} options;

static const char usage[] =
    "Usage: kiln-train [OPTION]...\n"
    "       kiln-train --model gpt --data TEXTFILE [OPTION]...\n"
    "Trains a small classifier on Fashion-MNIST (or MNIST) with kiln and reports\n"
    "its accuracy on the test set, or a byte-level GPT on a text file and reports\n"
    "its validation loss. KILN_BACKEND chooses the backend (kiln-info).\n"
    "\n"
    "  --model mlp|cnn|linear|gpt\n"
    "                          mlp: 784-256-128-10 with relu (default)\n"
    "                          cnn: conv 3x3x32 (padding 1), relu, max-pool 2,\n"
    "                               dense 128 relu, dense 10\n"
    "                          linear: softmax regression 784-10\n"
    "                          gpt: a GPT-2 model over bytes (options below)\n"
    "  --epochs N              passes over the training set (default 5)\n"
    "  --batch N               samples per step (default 64); each epoch drops\n"
    "                          its last partial batch\n"
    "  --lr X                  learning rate (default 0.001 for adam, 0.02 for sgd)\n"
    "  --optimizer adam|sgd    adam with betas 0.9 and 0.999 (default), or sgd\n"
    "                          with momentum 0.9\n"
    "  --schedule cosine|constant\n"
    "                          the learning rate falls from --lr to 0 along a\n"
    "                          half cosine over all steps (default), or stays\n"
    "                          constant\n"
    "  --seed N                initial weights and shuffling (default 1)\n"
    "  --data DIR              the four IDX files, gzipped or not (default\n"
    "                          " DEFAULT_DATA ",\n"
    "                          from the Debian package dataset-fashion-mnist)\n"
    "  --save FILE             write the trained weights to FILE (safetensors)\n"
    "  --save-dtype f32|f16|bf16\n"
    "                          the type of --save's weights (default f32);\n"
    "                          --eval and --resume read any of them\n"
    "  --precision f32|bf16|f16\n"
    "                          mixed precision: the forward and backward\n"
    "                          passes in bf16 or f16, the weights and the\n"
    "                          optimiser's state in f32 (default f32); f16\n"
    "                          scales the loss dynamically and reports the\n"
    "                          steps an overflow skipped\n"
    "  --eval FILE             train nothing: load weights from FILE and report\n"
    "                          the test accuracy of the --model they fit\n"
    "  --checkpoint FILE       write FILE (atomically) at the end of every epoch:\n"
    "                          weights, optimiser state and the run's position\n"
    "  --checkpoint-every N    and every N steps within an epoch\n"
    "  --resume FILE           go on from a --checkpoint FILE, with the options\n"
    "                          of the run that wrote it and any number of\n"
    "                          processes\n"
    "\n"
    "Many processes: mpirun -np N kiln-train ... trains data-parallel (every\n"
    "--model): each process takes 1/N of every --batch (which N must divide)\n"
    "and the gradients are averaged; only rank 0 prints and writes files.\n"
    "  --local-steps K         federated averaging: each process takes K steps\n"
    "                          on its own data, then the weights are averaged\n"
    "                          (and at the end of every epoch)\n"
    "  --shard none|iid|by-label\n"
    "                          none: every process draws from the whole\n"
    "                          training set (default); iid: each keeps a random\n"
    "                          1/N of it; by-label: each keeps a 1/N sorted by\n"
    "                          label, so that processes see different classes\n"
    "  --bucket-mb X           gradients travel in buckets of about X MB, each\n"
    "                          sent as soon as backward has computed it\n"
    "                          (default 1)\n"
    "\n"
    "--model gpt: pre-LayerNorm blocks with causal attention and a 4x GELU MLP,\n"
    "learned positions, the output head tied to the byte embedding; AdamW\n"
    "(betas 0.9, 0.95, weight decay 0.1 on matrices), gradients clipped at norm\n"
    "1, linear warmup then cosine decay to 0. The first 90% of --data trains,\n"
    "the last 10% validates. --batch (default 32), --lr (default 0.001),\n"
    "--seed, --save, --checkpoint, --checkpoint-every and --resume apply;\n"
    "--epochs, --optimizer, --schedule, --eval, --local-steps and --shard do not.\n"
    "  --layers N              transformer blocks (default 4)\n"
    "  --heads N               attention heads (default 4)\n"
    "  --embd N                embedding width, a multiple of --heads (default 128)\n"
    "  --ctx N                 context length in bytes (default 128)\n"
    "  --steps N               training steps (default 1000)\n"
    "  --warmup N              steps of linear warmup (default 100)\n"
    "  --eval-every N          print the losses every N steps (default 250)\n"
    "\n"
    "  --version               print kiln's version and exit\n"
    "  --help                  print this and exit\n";

void die(int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (parallel_size() > 1)
        fprintf(stderr, "kiln-train (rank %d of %d): ", parallel_rank(), parallel_size());
    else
        fputs("kiln-train: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    parallel_fail(status); /* the other processes must not wait for this one */
    exit(status);
}

/* ---- the command line ----------------------------------------------------------- */

/* text if it is one of the choices (a NULL-terminated list), else exit 2
 * with "OPT 'TEXT': expected a, b or c". */
static const char *parse_choice(const char *opt, const char *text,
                                const char *const *choices)
{
    size_t n = 0;
    for (; choices[n]; n++)
        if (strcmp(text, choices[n]) == 0)
            return choices[n];
    char list[128] = "";
    for (size_t i = 0; i < n; i++)
        snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s",
                 i == 0       ? ""
                 : i + 1 == n ? " or "
                              : ", ",
                 choices[i]);
    die(2, "%s '%s': expected %s", opt, text, list);
}

enum {
    OPT_MODEL = 256,
    OPT_OPTIMIZER,
    OPT_SCHEDULE,
    OPT_EPOCHS,
    OPT_BATCH,
    OPT_SEED,
    OPT_LR,
    OPT_DATA,
    OPT_SAVE,
    OPT_EVAL,
    OPT_LAYERS, /* --model gpt's */
    OPT_HEADS,
    OPT_EMBD,
    OPT_CTX,
    OPT_STEPS,
    OPT_WARMUP,
    OPT_EVAL_EVERY,
    OPT_CHECKPOINT, /* both kinds of model */
    OPT_CHECKPOINT_EVERY,
    OPT_RESUME,
    OPT_LOCAL_STEPS, /* the classifiers' */
    OPT_SHARD,
    OPT_BUCKET_MB,
    OPT_PRECISION, /* both kinds of model */
    OPT_SAVE_DTYPE,
};

static const struct option long_options[] = {
    {"model", required_argument, NULL, OPT_MODEL},
    {"optimizer", required_argument, NULL, OPT_OPTIMIZER},
    {"schedule", required_argument, NULL, OPT_SCHEDULE},
    {"epochs", required_argument, NULL, OPT_EPOCHS},
    {"batch", required_argument, NULL, OPT_BATCH},
    {"seed", required_argument, NULL, OPT_SEED},
    {"lr", required_argument, NULL, OPT_LR},
    {"data", required_argument, NULL, OPT_DATA},
    {"save", required_argument, NULL, OPT_SAVE},
    {"eval", required_argument, NULL, OPT_EVAL},
    {"layers", required_argument, NULL, OPT_LAYERS},
    {"heads", required_argument, NULL, OPT_HEADS},
    {"embd", required_argument, NULL, OPT_EMBD},
    {"ctx", required_argument, NULL, OPT_CTX},
    {"steps", required_argument, NULL, OPT_STEPS},
    {"warmup", required_argument, NULL, OPT_WARMUP},
    {"eval-every", required_argument, NULL, OPT_EVAL_EVERY},
    {"checkpoint", required_argument, NULL, OPT_CHECKPOINT},
    {"checkpoint-every", required_argument, NULL, OPT_CHECKPOINT_EVERY},
    {"resume", required_argument, NULL, OPT_RESUME},
    {"local-steps", required_argument, NULL, OPT_LOCAL_STEPS},
    {"shard", required_argument, NULL, OPT_SHARD},
    {"bucket-mb", required_argument, NULL, OPT_BUCKET_MB},
    {"precision", required_argument, NULL, OPT_PRECISION},
    {"save-dtype", required_argument, NULL, OPT_SAVE_DTYPE},
    {"version", no_argument, NULL, 'V'},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

/* "f32", "f16", "bf16" as a kiln_dtype. */
static kiln_dtype dtype_of(const char *name)
{
    return strcmp(name, "f16") == 0 ? KILN_F16 : strcmp(name, "bf16") == 0 ? KILN_BF16 : KILN_F32;
}

static double parse_lr(const char *text)
{
    char *end;
    errno     = 0;
    double lr = strtod(text, &end);
    if (errno || end == text || *end || !(lr > 0) || !isfinite(lr))
        die(2, "--lr '%s': expected a number greater than 0, e.g. 0.01", text);
    return lr;
}

/* "--name value", "--name=value" or an unambiguous prefix of the name, as
 * getopt_long reads them; "--" ends the options. */
static options parse_args(int argc, char **argv)
{
    options o = {.model     = "mlp",
                 .optimizer = "adam",
                 .epochs    = 5,
                 .batch     = 64,
                 .seed      = 1,
                 .cosine    = true,
                 .data      = DEFAULT_DATA,
                 .shard     = "none"};
    cli_init(argv, "kiln-train");
    o.gpt = (gpt_options){.layers     = 4,
                          .heads      = 4,
                          .embd       = 128,
                          .ctx        = 128,
                          .batch      = 32,
                          .steps      = 1000,
                          .warmup     = 100,
                          .eval_every = 250,
                          .lr         = 1e-3,
                          .seed       = 1};
    /* which options were given, to refuse those of the other kind of model */
    const char *given[OPT_SAVE_DTYPE - OPT_MODEL + 1] = {0};
    int         c, at;
    while ((c = getopt_long(argc, argv, "hV", long_options, &at)) != -1) {
        if (c >= OPT_MODEL && c <= OPT_SAVE_DTYPE)
            given[c - OPT_MODEL] = long_options[at].name;
        switch (c) {
        case 'h': fputs(usage, stdout); exit(0);
        case 'V': printf("kiln-train %s\n", kiln_version()); exit(0);
        case OPT_MODEL:
            o.model = parse_choice("--model", optarg,
                                   (const char *const[]){"mlp", "cnn", "linear", "gpt",
                                                         NULL});
            break;
        case OPT_OPTIMIZER:
            o.optimizer = parse_choice("--optimizer", optarg,
                                       (const char *const[]){"sgd", "adam", NULL});
            break;
        case OPT_SCHEDULE:
            o.cosine = strcmp(parse_choice("--schedule", optarg,
                                           (const char *const[]){"cosine", "constant",
                                                                 NULL}),
                              "cosine") == 0;
            break;
        case OPT_EPOCHS:
            o.epochs = (int)cli_parse_int("--epochs", optarg, 1, 100000);
            break;
        case OPT_BATCH: o.batch = (int)cli_parse_int("--batch", optarg, 1, 60000); break;
        case OPT_SEED:
            o.seed = (uint64_t)cli_parse_int("--seed", optarg, 0, INT64_MAX);
            break;
        case OPT_LR: o.lr = parse_lr(optarg); break;
        case OPT_DATA: o.data = optarg; break;
        case OPT_SAVE: o.save = optarg; break;
        case OPT_EVAL: o.eval = optarg; break;
        case OPT_LAYERS:
            o.gpt.layers = (int)cli_parse_int("--layers", optarg, 1, 256);
            break;
        case OPT_HEADS:
            o.gpt.heads = (int)cli_parse_int("--heads", optarg, 1, 1024);
            break;
        case OPT_EMBD: o.gpt.embd = (int)cli_parse_int("--embd", optarg, 1, 65536); break;
        case OPT_CTX: o.gpt.ctx = (int)cli_parse_int("--ctx", optarg, 1, 65536); break;
        case OPT_STEPS:
            o.gpt.steps = (int)cli_parse_int("--steps", optarg, 1, 100000000);
            break;
        case OPT_WARMUP:
            o.gpt.warmup = (int)cli_parse_int("--warmup", optarg, 0, 100000000);
            break;
        case OPT_EVAL_EVERY:
            o.gpt.eval_every = (int)cli_parse_int("--eval-every", optarg, 1, 100000000);
            break;
        case OPT_CHECKPOINT: o.checkpoint = optarg; break;
        case OPT_CHECKPOINT_EVERY:
            o.checkpoint_every = (int)cli_parse_int("--checkpoint-every", optarg, 1,
                                                    100000000);
            break;
        case OPT_RESUME: o.resume = optarg; break;
        case OPT_LOCAL_STEPS:
            o.local_steps = (int)cli_parse_int("--local-steps", optarg, 1, 100000000);
            break;
        case OPT_SHARD:
            o.shard = parse_choice("--shard", optarg,
                                   (const char *const[]){"none", "iid", "by-label", NULL});
            break;
        case OPT_BUCKET_MB: {
            char *end;
            o.bucket_mb = strtod(optarg, &end);
            if (end == optarg || *end || !(o.bucket_mb > 0) || o.bucket_mb > 1e6)
                die(2, "--bucket-mb '%s': expected a number of megabytes above 0, e.g. 1",
                    optarg);
            break;
        }
        case OPT_PRECISION:
            o.precision = dtype_of(parse_choice("--precision", optarg,
                                                (const char *const[]){"f32", "bf16", "f16",
                                                                      NULL}));
            break;
        case OPT_SAVE_DTYPE:
            o.save_dtype = dtype_of(parse_choice("--save-dtype", optarg,
                                                 (const char *const[]){"f32", "f16", "bf16",
                                                                       NULL}));
            break;
        default: /* getopt said what was wrong */ cli_try_help();
        }
    }
    o.data_given = given[OPT_DATA - OPT_MODEL] != NULL;
    bool gpt     = strcmp(o.model, "gpt") == 0;
    /* options of the classifiers only, and of the GPT only */
    static const int classifier_only[] = {OPT_OPTIMIZER, OPT_SCHEDULE, OPT_EPOCHS,
                                          OPT_EVAL,      OPT_LOCAL_STEPS, OPT_SHARD};
    static const int gpt_only[]        = {OPT_LAYERS, OPT_HEADS,  OPT_EMBD,      OPT_CTX,
                                          OPT_STEPS,  OPT_WARMUP, OPT_EVAL_EVERY};
    for (size_t i = 0; gpt && i < sizeof classifier_only / sizeof *classifier_only; i++)
        if (given[classifier_only[i] - OPT_MODEL])
            die(2,
                "--%s does not apply to --model gpt (it trains with AdamW for --steps)",
                given[classifier_only[i] - OPT_MODEL]);
    for (size_t i = 0; !gpt && i < sizeof gpt_only / sizeof *gpt_only; i++)
        if (given[gpt_only[i] - OPT_MODEL])
            die(2, "--%s applies to --model gpt only", given[gpt_only[i] - OPT_MODEL]);
    if (gpt) {
        if (!o.data_given)
            die(2, "--model gpt needs --data TEXTFILE, the text to train on");
        if (o.gpt.embd % o.gpt.heads != 0)
            die(2, "--embd %d is not a multiple of --heads %d", o.gpt.embd, o.gpt.heads);
        o.gpt.data             = o.data;
        o.gpt.save             = o.save;
        o.gpt.checkpoint       = o.checkpoint;
        o.gpt.checkpoint_every = o.checkpoint_every;
        o.gpt.resume           = o.resume;
        o.gpt.bucket_mb        = o.bucket_mb;
        o.gpt.precision        = o.precision;
        o.gpt.save_dtype       = o.save_dtype;
        o.gpt.seed = o.seed;
        if (given[OPT_BATCH - OPT_MODEL])
            o.gpt.batch = o.batch;
        if (o.lr > 0)
            o.gpt.lr = o.lr;
    }
    if (optind < argc)
        cli_usage_error("unexpected argument '%s'", argv[optind]);
    if (o.eval && o.save)
        die(2, "--eval and --save together: --eval trains nothing, so there is nothing "
               "to save");
    if (o.eval && (o.checkpoint || o.resume))
        die(2, "--eval and --%s together: --eval trains nothing",
            o.checkpoint ? "checkpoint" : "resume");
    if (o.checkpoint_every && !o.checkpoint)
        die(2, "--checkpoint-every needs --checkpoint FILE, the file to write");
    if (given[OPT_SAVE_DTYPE - OPT_MODEL] && !o.save)
        die(2, "--save-dtype needs --save FILE, the weights to write");
    if (o.checkpoint_every && o.local_steps && o.checkpoint_every % o.local_steps != 0)
        die(2,
            "--checkpoint-every %d is not a multiple of --local-steps %d: checkpoints are "
            "written when the processes' weights have just been averaged",
            o.checkpoint_every, o.local_steps);
    if (o.lr == 0)
        o.lr = strcmp(o.optimizer, "adam") == 0 ? 0.001 : 0.02;
    return o;
}

/* ---- data --------------------------------------------------------------------- */

typedef struct dataset {
    kiln_idx images; /* u8 [n, 28, 28] */
    kiln_idx labels; /* u8 [n], 0 to 9 */
    int64_t  n;
} dataset;

/* "a FIFO", "a directory", ... for what is not a regular file. */
static const char *file_kind(mode_t mode)
{
    switch (mode & S_IFMT) {
    case S_IFREG: return "a regular file";
    case S_IFDIR: return "a directory";
    case S_IFIFO: return "a FIFO";
    case S_IFCHR: return "a character device";
    case S_IFBLK: return "a block device";
    case S_IFSOCK: return "a socket";
    default: return "not a regular file";
    }
}

/* dir/name.gz, else dir/name, into path; exits naming what is missing or
 * what is there instead of a regular file. */
static void find_idx(const char *dir, const char *name, char *path, size_t len)
{
    struct stat sb;
    snprintf(path, len, "%s/%s.gz", dir, name);
    if (stat(path, &sb) != 0)
        snprintf(path, len, "%s/%s", dir, name);
    if (stat(path, &sb) != 0)
        die(1,
            "%s has neither %s.gz nor %s: expected the four IDX files of "
            "Fashion-MNIST or MNIST there (the Debian package dataset-fashion-mnist "
            "installs them in " DEFAULT_DATA ")",
            dir, name, name);
    if (!S_ISREG(sb.st_mode))
        die(1, "--data: %s is %s, expected an IDX file (a regular file, gzipped or not)",
            path, file_kind(sb.st_mode));
    if (access(path, R_OK) != 0)
        die(1, "--data: cannot read %s: %s", path, strerror(errno));
}

static const char *const idx_names[2][2] = {
    {"train-images-idx3-ubyte", "train-labels-idx1-ubyte"},
    {"t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"},
};

static void read_idx(const char *dir, const char *name, kiln_idx *out, char *path,
                     size_t len)
{
    find_idx(dir, name, path, len);
    if (kiln_idx_read(path, out) != KILN_OK)
        die(1, "%s", kiln_last_error());
}

/* The training set (test false) or the test set of dir, which must hold
 * images. */
static dataset load_set(const char *dir, bool test)
{
    dataset d;
    char    images[4096], labels[4096];
    read_idx(dir, idx_names[test][0], &d.images, images, sizeof images);
    read_idx(dir, idx_names[test][1], &d.labels, labels, sizeof labels);
    const kiln_idx *im = &d.images, *lb = &d.labels;
    if (im->type != 0x08 || im->ndim != 3 || im->dims[1] != 28 || im->dims[2] != 28)
        die(1, "%s: expected u8 images [N, 28, 28]", images);
    if (lb->type != 0x08 || lb->ndim != 1 || lb->dims[0] != im->dims[0])
        die(1, "%s: expected %lld u8 labels, one per image of %s", labels,
            (long long)im->dims[0], images);
    const uint8_t *l = lb->data;
    for (int64_t i = 0; i < lb->count; i++)
        if (l[i] >= CLASSES)
            die(1, "%s: label %lld is %d, expected 0 to 9", labels, (long long)i, l[i]);
    d.n = im->dims[0];
    if (d.n == 0)
        die(1, "the %s set is empty: %s holds no images, so there is %s",
            test ? "test" : "training", images,
            test ? "no test accuracy to report" : "nothing to train on");
    return d;
}

static void check_data_dir(const char *dir)
{
    struct stat sb;
    int         found = stat(dir, &sb) == 0;
    if (!found || !S_ISDIR(sb.st_mode))
        die(1,
            "no data directory %s (%s): install the Debian package "
            "dataset-fashion-mnist (apt-get install dataset-fashion-mnist), which puts "
            "Fashion-MNIST in " DEFAULT_DATA ", or pass --data DIR with the IDX files of "
            "Fashion-MNIST or MNIST",
            dir, found ? "not a directory" : strerror(errno));
    char path[4096];
    for (int split = 0; split < 2; split++)
        for (int k = 0; k < 2; k++)
            find_idx(dir, idx_names[split][k], path, sizeof path);
}

/* --eval's weights or --resume's checkpoint: a regular file this process
 * can read. */
static void check_eval(const char *option, const char *path)
{
    struct stat sb;
    if (stat(path, &sb) != 0)
        die(1, "%s %s: %s", option, path, strerror(errno));
    if (!S_ISREG(sb.st_mode))
        die(1, "%s %s is %s, expected a weights file (safetensors, as --save writes)",
            option, path, file_kind(sb.st_mode));
    if (access(path, R_OK) != 0)
        die(1, "%s %s: cannot read it: %s", option, path, strerror(errno));
}

/* --save's file (opt, the option's value; path, the file it names after
 * `links` symbolic links): a regular file or a new name, in a folder this
 * process may write, checked now rather than after the training run. A
 * dangling link names the file to create, as for kiln_save, which refuses
 * the same things; this is earlier. */
void check_save(const char *option, const char *opt, const char *path, int links)
{
    struct stat sb;
    char        at[PATH_MAX];
    if (lstat(path, &sb) == 0 && S_ISLNK(sb.st_mode) && stat(path, &sb) != 0 &&
        errno == ENOENT) {
        ssize_t     n     = readlink(path, at, sizeof at - 1);
        const char *slash = strrchr(path, '/');
        if (n < 0 || links >= 40)
            die(1, "%s %s: following the symbolic link %s: %s", option, opt, path,
                n < 0 ? strerror(errno) : "more than 40 links");
        at[n] = '\0';
        char next[2 * PATH_MAX];
        snprintf(next, sizeof next, "%.*s%s",
                 at[0] == '/' || !slash ? 0 : (int)(slash - path + 1), path, at);
        check_save(option, opt, next, links + 1);
        return;
    }
    bool exists = stat(path, &sb) == 0;
    if (!exists && errno != ENOENT)
        die(1, "%s %s: %s", option, opt, strerror(errno));
    if (exists && !S_ISREG(sb.st_mode))
        die(1, "%s %s is %s, expected a regular file or the name of a new one", option, opt,
            file_kind(sb.st_mode));
    /* The folder the file goes in: the final target's, for a link to one. */
    char copy[PATH_MAX];
    snprintf(copy, sizeof copy, "%s", exists && realpath(path, at) ? at : path);
    const char *dir = dirname(copy);
    if (stat(dir, &sb) != 0)
        die(1, "%s %s: its folder %s: %s", option, opt, dir, strerror(errno));
    if (!S_ISDIR(sb.st_mode))
        die(1, "%s %s: %s is %s, not a directory", option, opt, dir, file_kind(sb.st_mode));
    if (access(dir, W_OK | X_OK) != 0)
        die(1, "%s %s: cannot write in its folder %s: %s", option, opt, dir, strerror(errno));
}

/* Fashion-MNIST's training-set pixel mean and standard deviation (of values
 * in [0, 1]); inputs are standardised with them, as torchvision's tutorials
 * do, which trains faster than raw [0, 1] values. */
#define PIXEL_MEAN 0.2860f
#define PIXEL_STD  0.3530f

/* Rows `idx[0..rows)` of d as standardised floats, and their labels; the rest
 * of the batch is zero. */
static void gather(const dataset *d, const int64_t *idx, int rows, int batch, float *x,
                   int32_t *y)
{
    const uint8_t *px = d->images.data, *lb = d->labels.data;
    for (int r = 0; r < rows; r++) {
        const uint8_t *src = px + idx[r] * PIXELS;
        for (int k = 0; k < PIXELS; k++)
            x[(size_t)r * PIXELS + (size_t)k] = ((float)src[k] * (1.0f / 255.0f) -
                                                 PIXEL_MEAN) /
                                                PIXEL_STD;
        y[r] = lb[idx[r]];
    }
    memset(x + (size_t)rows * PIXELS, 0, (size_t)(batch - rows) * PIXELS * sizeof *x);
    memset(y + rows, 0, (size_t)(batch - rows) * sizeof *y);
}

void print_profile(kiln_graph *g)
{
    static char text[1 << 16];
    if (kiln_graph_profile(g, text, sizeof text) == KILN_OK)
        fprintf(stderr, "kiln-train: profile (KILN_PROFILE): %s", text);
}

static void shuffle(int64_t *idx, int64_t n, uint64_t *state)
{
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = (int64_t)(next_random(state) % (uint64_t)(i + 1));
        int64_t t = idx[i];
        idx[i]    = idx[j];
        idx[j]    = t;
    }
}

/* ---- the model ----------------------------------------------------------------- */

typedef struct model {
    kiln_graph     *g;
    kiln_tensor    *x, *labels, *loss, *pred;
    kiln_optimizer *opt; /* NULL in an evaluation-only model */
    int             batch;
} model;

static kiln_tensor *logits_of(kiln_graph *g, const char *name, kiln_tensor *x)
{
    if (strcmp(name, "linear") == 0)
        return kiln_dense(g, x, CLASSES, "fc");
    if (strcmp(name, "mlp") == 0) {
        kiln_tensor *h = kiln_relu(g, kiln_dense(g, x, 256, "fc1"));
        h              = kiln_relu(g, kiln_dense(g, h, 128, "fc2"));
        return kiln_dense(g, h, CLASSES, "fc3");
    }
    kiln_tensor *h = kiln_relu(g, kiln_conv2d_layer(g, x, 32, 3, 1, 1, "conv1"));
    h              = kiln_flatten(g, kiln_max_pool2d(g, h, 2, 2));
    h              = kiln_relu(g, kiln_dense(g, h, 128, "fc1"));
    return kiln_dense(g, h, CLASSES, "fc2");
}

static void fail_kiln(const char *what, const kiln_graph *g)
{
    const char *e = g ? kiln_graph_error(g) : NULL;
    die(1, "%s: %s", what, e ? e : kiln_last_error());
}


/* The forward graph, plus the loss, its gradients and the optimiser's steps
 * when training. */
static model build(kiln_context *ctx, const options *o, bool train)
{
    /* each process computes its share of every batch */
    model m = {.g = kiln_graph_new(ctx), .batch = o->batch / parallel_size()};
    if (!m.g)
        fail_kiln("kiln_graph_new", NULL);
    kiln_graph *g = m.g;
    kiln_graph_seed(g, o->seed);
    m.x                 = strcmp(o->model, "cnn") == 0
                              ? kiln_input(g, "x", KILN_F32, KILN_SHAPE(m.batch, 1, 28, 28))
                              : kiln_input(g, "x", KILN_F32, KILN_SHAPE(m.batch, PIXELS));
    /* mixed precision: the layers run in their input's type with the f32
     * weights cast to it; the loss is computed in f32 */
    kiln_tensor *logits = kiln_cast(g, logits_of(g, o->model, kiln_cast(g, m.x, o->precision)),
                                    KILN_F32);
    m.pred              = kiln_argmax(g, logits);
    kiln_output(g, m.pred);
    if (train) {
        m.labels = kiln_input(g, "labels", KILN_I32, KILN_SHAPE(m.batch));
        m.loss   = kiln_cross_entropy(g, logits, m.labels);
        kiln_output(g, m.loss);
        if (kiln_graph_status(g) != KILN_OK)
            fail_kiln("building the model", g);
        /* f16's range needs the loss scaled (bf16 has f32's) */
        if (o->precision == KILN_F16 && kiln_loss_scale(g, 65536.0f, 2000) != KILN_OK)
            die(1, "%s", kiln_last_error());
        if (kiln_backward(g, m.loss) != KILN_OK)
            die(1, "%s", kiln_last_error());
        /* federated averaging averages weights instead, every K steps */
        if (!o->local_steps &&
            kiln_graph_allreduce_grads(g, parallel_comm(), (size_t)(o->bucket_mb * 1e6)) !=
                KILN_OK)
            die(1, "%s", kiln_last_error());
        m.opt = strcmp(o->optimizer, "adam") == 0
                    ? kiln_adam(g, (float)o->lr, 0.9f, 0.999f, 1e-8f, 0.0f)
                    : kiln_sgd(g, (float)o->lr, 0.9f, 0.0f);
        if (!m.opt)
            die(1, "%s", kiln_last_error());
    }
    if (kiln_graph_compile(g) != KILN_OK)
        fail_kiln("kiln_graph_compile", g);
    /* the same initial weights everywhere, whatever the backend drew */
    check(kiln_comm_broadcast_params(parallel_comm(), g, 0, false),
          "sending rank 0's weights");
    return m;
}

long long param_count(const kiln_graph *g)
{
    long long n = 0;
    for (size_t i = 0; i < kiln_graph_param_count(g); i++)
        n += kiln_tensor_numel(kiln_graph_param(g, i));
    return n;
}

/* ---- progress --------------------------------------------------------------- */

double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

typedef struct progress {
    bool    tty;
    int     epoch, epochs;
    int64_t total; /* samples in this epoch */
    double  start, last_draw;
    int     quarter; /* plain lines printed so far this epoch */
} progress;

/* A bar redrawn in place on a terminal; a line at each quarter otherwise. */
static void report(progress *p, int64_t done, double loss)
{
    double t = now(), rate = done / (t - p->start + 1e-9);
    if (!p->tty) {
        if (done * 4 < (int64_t)(p->quarter + 1) * p->total || p->quarter >= 3)
            return;
        p->quarter++;
        printf("epoch %d/%d  %3d%%  loss %.4f  %.0f samples/s\n", p->epoch, p->epochs,
               25 * p->quarter, loss, rate);
        fflush(stdout);
        return;
    }
    if (t - p->last_draw < 0.1 && done < p->total)
        return;
    p->last_draw = t;
    char bar[25];
    int  fill = (int)(24 * done / p->total);
    for (int i = 0; i < 24; i++)
        bar[i] = i < fill ? '#' : '.';
    bar[24]    = '\0';
    double eta = (p->total - done) / (rate + 1e-9);
    printf("\r\033[Kepoch %d/%d [%s] %3d%%  loss %.4f  %.0f samples/s  ETA %d:%02d",
           p->epoch, p->epochs, bar, (int)(100 * done / p->total), loss, rate,
           (int)eta / 60, (int)eta % 60);
    fflush(stdout);
}

/* ---- training and evaluation ---------------------------------------------------- */

/* Host buffers of one batch. */
typedef struct batch {
    float   *x;    /* [batch, 784] */
    int32_t *y;    /* labels        */
    int64_t *idx;  /* sample indices */
    int32_t *pred; /* predictions   */
} batch;

void check(kiln_status st, const char *what)
{
    if (st != KILN_OK)
        die(1, "%s: %s", what, kiln_last_error());
}

/* Correct predictions over the whole test set: each process takes every
 * N-th batch, and the counts are added up. */
static int64_t evaluate(const model *m, const dataset *test, batch *b)
{
    int64_t correct = 0, stride = (int64_t)m->batch * parallel_size();
    for (int64_t start = (int64_t)m->batch * parallel_rank(); start < test->n;
         start += stride) {
        int rows = test->n - start < m->batch ? (int)(test->n - start) : m->batch;
        for (int r = 0; r < rows; r++)
            b->idx[r] = start + r;
        gather(test, b->idx, rows, m->batch, b->x, b->y);
        check(kiln_tensor_write(m->x, b->x, (size_t)m->batch * PIXELS * sizeof *b->x),
              "x");
        check(kiln_graph_eval(m->g, m->pred), "kiln_graph_eval");
        check(kiln_tensor_read(m->pred, b->pred, (size_t)m->batch * sizeof *b->pred),
              "predictions");
        for (int r = 0; r < rows; r++) /* padding rows are not counted */
            correct += b->pred[r] == b->y[r];
    }
    return (int64_t)parallel_sum((double)correct);
}

/* The learning rate of step `step` of `steps`: lr, or with the cosine
 * schedule lr * (1 + cos(pi * step / steps)) / 2 (PyTorch's
 * CosineAnnealingLR with T_max = steps, stepped once per batch). */
static float lr_at(const options *o, int64_t step, int64_t steps)
{
    if (!o->cosine)
        return (float)o->lr;
    return (float)(o->lr * 0.5 * (1.0 + cos(M_PI * (double)step / (double)steps)));
}

/* ---- the data's order, and its split over the processes ------------------------- */

/* Which samples this process trains on, step by step. */
typedef struct split {
    const options *o;
    const dataset *set;
    int64_t       *shard;   /* a sharded run's samples of this process       */
    int64_t        n_shard; /* or 0: every process draws from the whole set  */
    int64_t       *order;   /* this epoch's order                            */
    int64_t        steps;   /* per epoch, the same on every process          */
    int            local;   /* rows per step of this process                 */
} split;

static void shuffle_with(int64_t *idx, int64_t n, uint64_t seed)
{
    uint64_t state = seed;
    shuffle(idx, n, &state);
}

/* Epoch e's order, from the seed and e alone, so that a resumed run and
 * every process draw the same one. */
static uint64_t epoch_seed(const options *o, int epoch)
{
    return o->seed + 0x632BE59BD9B4E019ull * (uint64_t)epoch;
}

/* The labels by_label sorts by (qsort passes no context). */
static const uint8_t *by_label_labels;

static int by_label(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    int     lx = by_label_labels[x], ly = by_label_labels[y];
    return lx != ly ? lx - ly : (x > y) - (x < y);
}

static split split_new(const options *o, const dataset *set, const model *m)
{
    int     size = parallel_size(), rank = parallel_rank();
    split   sp   = {.o = o, .set = set, .local = m->batch};
    int64_t n    = set->n;
    sp.order     = malloc((size_t)n * sizeof *sp.order);
    if (!sp.order)
        die(1, "out of memory for %lld indices", (long long)n);
    sp.steps = n / o->batch;
    if (strcmp(o->shard, "none") != 0) {
        /* the whole set in a fixed order, cut in N parts */
        for (int64_t i = 0; i < n; i++)
            sp.order[i] = i;
        if (strcmp(o->shard, "iid") == 0) {
            shuffle_with(sp.order, n, o->seed ^ 0x5A4D5EEDull);
        } else {
            by_label_labels = set->labels.data;
            qsort(sp.order, (size_t)n, sizeof *sp.order, by_label);
        }
        int64_t lo = n * rank / size, hi = n * (rank + 1) / size;
        sp.n_shard = hi - lo;
        sp.shard   = malloc((size_t)(hi - lo) * sizeof *sp.shard + 1);
        if (!sp.shard)
            die(1, "out of memory for %lld indices", (long long)(hi - lo));
        memcpy(sp.shard, sp.order + lo, (size_t)(hi - lo) * sizeof *sp.shard);
        sp.steps = (n / size) / sp.local; /* the smallest shard's */
    }
    if (sp.steps == 0)
        die(2, "--batch %d is larger than the %lld training images%s", o->batch,
            (long long)(sp.n_shard ? n / size * size : n),
            sp.n_shard ? " (each process's shard holds its batch's share)" : "");
    return sp;
}

/* Epoch e's order of this process's samples. */
static void split_epoch(split *sp, int epoch)
{
    uint64_t seed = epoch_seed(sp->o, epoch);
    if (sp->n_shard) {
        memcpy(sp->order, sp->shard, (size_t)sp->n_shard * sizeof *sp->order);
        shuffle_with(sp->order, sp->n_shard, seed + (uint64_t)parallel_rank());
        return;
    }
    for (int64_t i = 0; i < sp->set->n; i++)
        sp->order[i] = i;
    shuffle_with(sp->order, sp->set->n, seed);
}

/* The samples of this process in step s of the epoch. */
static const int64_t *split_rows(const split *sp, int64_t s)
{
    if (sp->n_shard)
        return sp->order + s * sp->local;
    return sp->order + s * sp->o->batch + (int64_t)parallel_rank() * sp->local;
}

static void split_free(split *sp)
{
    free(sp->order);
    free(sp->shard);
}

/* ---- checkpoints ------------------------------------------------------------------- */

enum { META_EPOCH, META_STEP, N_META = 11 };

/* What a checkpoint records: the position (epochs done, steps into the
 * next), then the options that must be the same to resume. */
static void run_meta_of(const options *o, run_meta meta[N_META], int epochs_done,
                        int64_t step)
{
    const run_meta all[N_META] = {
        {"kiln.train.epoch", NULL, ""},      {"kiln.train.step", NULL, ""},
        {"kiln.train.model", "--model", ""}, {"kiln.train.optimizer", "--optimizer", ""},
        {"kiln.train.batch", "--batch", ""}, {"kiln.train.lr", "--lr", ""},
        {"kiln.train.schedule", "--schedule", ""}, {"kiln.train.epochs", "--epochs", ""},
        {"kiln.train.seed", "--seed", ""},   {"kiln.train.local_steps", "--local-steps", ""},
        {"kiln.train.shard", "--shard", ""},
    };
    memcpy(meta, all, sizeof all);
    snprintf(meta[0].value, sizeof meta[0].value, "%d", epochs_done);
    snprintf(meta[1].value, sizeof meta[1].value, "%lld", (long long)step);
    snprintf(meta[2].value, sizeof meta[2].value, "%s", o->model);
    snprintf(meta[3].value, sizeof meta[3].value, "%s", o->optimizer);
    snprintf(meta[4].value, sizeof meta[4].value, "%d", o->batch);
    snprintf(meta[5].value, sizeof meta[5].value, "%.17g", o->lr);
    snprintf(meta[6].value, sizeof meta[6].value, "%s", o->cosine ? "cosine" : "constant");
    snprintf(meta[7].value, sizeof meta[7].value, "%d", o->epochs);
    snprintf(meta[8].value, sizeof meta[8].value, "%llu", (unsigned long long)o->seed);
    snprintf(meta[9].value, sizeof meta[9].value, "%d", o->local_steps);
    snprintf(meta[10].value, sizeof meta[10].value, "%s", o->shard);
}

static void save_checkpoint(const options *o, const model *m, int epochs_done,
                            int64_t step)
{
    run_meta meta[N_META];
    run_meta_of(o, meta, epochs_done, step);
    checkpoint_write(m->g, o->checkpoint, meta, N_META);
}

/* ---- training ----------------------------------------------------------------------- */

/* Federated averaging: the weights become their mean over the processes. */
static void average_weights(const model *m)
{
    check(kiln_comm_average_params(parallel_comm(), m->g), "averaging the weights");
}

/* One pass over the shuffled training set from step `first`; the mean loss
 * of its steps over every process. */
static double train_epoch(const options *o, const model *m, split *sp, progress *p,
                          batch *b, int64_t first)
{
    int64_t steps = sp->steps;
    double  sum   = 0;
    split_epoch(sp, p->epoch);
    p->total   = steps * o->batch;
    p->start   = now();
    p->quarter = 0;
    for (int64_t s = first; s < steps; s++) {
        gather(sp->set, split_rows(sp, s), m->batch, m->batch, b->x, b->y);
        check(kiln_tensor_write(m->x, b->x, (size_t)m->batch * PIXELS * sizeof *b->x),
              "x");
        check(kiln_tensor_write(m->labels, b->y, (size_t)m->batch * sizeof *b->y),
              "labels");
        check(kiln_optimizer_set_lr(m->opt, lr_at(o, (p->epoch - 1) * steps + s,
                                                  o->epochs * steps)),
              "learning rate");
        check(kiln_graph_run(m->g), "kiln_graph_run");
        float loss;
        check(kiln_tensor_read(m->loss, &loss, sizeof loss), "loss");
        if (!isfinite(loss)) {
            if (p->tty)
                putchar('\n');
            die(1,
                "the loss is %g at epoch %d, step %lld: training diverged; try a "
                "smaller --lr",
                (double)loss, p->epoch, (long long)s + 1);
        }
        sum += loss;
        if (o->local_steps && (s + 1) % o->local_steps == 0)
            average_weights(m);
        if (o->checkpoint_every && (s + 1) % o->checkpoint_every == 0 && s + 1 < steps)
            save_checkpoint(o, m, p->epoch - 1, s + 1);
        report(p, (s + 1) * o->batch, sum / (double)(s - first + 1));
    }
    if (o->local_steps && steps % o->local_steps != 0)
        average_weights(m);
    if (p->tty)
        printf("\r\033[K");
    return steps > first ? parallel_mean(sum / (double)(steps - first)) : NAN;
}

static void print_accuracy(const char *label, int64_t correct, int64_t n)
{
    printf("%s %.2f%% (%lld of %lld)\n", label, 100.0 * (double)correct / (double)n,
           (long long)correct, (long long)n);
}

static void dataset_free(dataset *d)
{
    kiln_idx_free(&d->images);
    kiln_idx_free(&d->labels);
}

/* Trains for o->epochs (from --resume's position), reporting each; the
 * correct test predictions of the last epoch. */
static int64_t train(const options *o, const model *m, const dataset *test, batch *b)
{
    dataset set         = load_set(o->data, false);
    split   sp          = split_new(o, &set, m); /* refuses a --batch above the set */
    int     first_epoch = 1;
    int64_t first_step  = 0;
    if (o->resume) {
        run_meta meta[N_META];
        run_meta_of(o, meta, 0, 0);
        checkpoint_resume(m->g, o->resume, meta, N_META);
        first_epoch = atoi(meta[META_EPOCH].value) + 1;
        first_step  = atoll(meta[META_STEP].value);
        printf("resumed from %s: epoch %d, step %lld\n", o->resume, first_epoch,
               (long long)first_step);
    }
    printf("model %s (%lld parameters), %s lr %g (%s), batch %d, %d epoch%s, seed %llu, "
           "precision %s\n",
           o->model, param_count(m->g), o->optimizer, o->lr,
           o->cosine ? "cosine schedule" : "constant", o->batch, o->epochs,
           o->epochs == 1 ? "" : "s", (unsigned long long)o->seed,
           kiln_dtype_name(o->precision));
    if (parallel_size() > 1 && !o->local_steps)
        printf("data-parallel: %d processes (%s), %d samples each per step, gradients "
               "averaged every step, shard %s\n",
               parallel_size(), kiln_comm_name(parallel_comm()), m->batch, o->shard);
    if (parallel_size() > 1 && o->local_steps)
        printf("federated averaging: %d processes (%s), %d samples each per step, "
               "weights averaged every %d step%s, shard %s\n",
               parallel_size(), kiln_comm_name(parallel_comm()), m->batch,
               o->local_steps, o->local_steps == 1 ? "" : "s", o->shard);
    printf("data: %s (%lld training, %lld test images)\n", o->data, (long long)set.n,
           (long long)test->n);
    fflush(stdout);

    /* under mpirun, stdout is a pseudo-terminal even when it goes to a file:
     * lines, not a bar redrawn in place */
    progress p       = {.tty = isatty(STDOUT_FILENO) && parallel_size() == 1,
                        .epochs = o->epochs};
    int64_t  correct = 0;
    for (p.epoch = first_epoch; p.epoch <= o->epochs; p.epoch++) {
        uint64_t sent = kiln_comm_bytes(parallel_comm());
        double   t0   = now();
        double   loss = train_epoch(o, m, &sp, &p, b, p.epoch == first_epoch ? first_step : 0);
        double   t1   = now();
        sent          = kiln_comm_bytes(parallel_comm()) - sent;
        correct       = evaluate(m, test, b);
        char comm[128] = "";
        if (parallel_size() > 1)
            snprintf(comm, sizeof comm, "  comm %.1f MB", (double)sent / 1e6);
        if (o->precision == KILN_F16) {
            float    scale;
            uint64_t skipped;
            check(kiln_loss_scale_state(m->g, &scale, &skipped), "the loss scale");
            snprintf(comm + strlen(comm), sizeof comm - strlen(comm),
                     "  loss scale %g, %llu step%s skipped", (double)scale,
                     (unsigned long long)skipped, skipped == 1 ? "" : "s");
        }
        printf("epoch %d/%d  loss %.4f  time %.2f s  %.0f samples/s  test accuracy "
               "%.2f%%  (eval %.2f s)%s\n",
               p.epoch, o->epochs, loss, t1 - t0, (double)p.total / (t1 - t0),
               100.0 * (double)correct / (double)test->n, now() - t1, comm);
        fflush(stdout);
        if (o->checkpoint)
            save_checkpoint(o, m, p.epoch, 0);
    }
    if (first_epoch > o->epochs)
        correct = evaluate(m, test, b);
    split_free(&sp);
    dataset_free(&set);
    return correct;
}

int main(int argc, char **argv)
{
    options o = parse_args(argc, argv);
    parallel_start();
    int size = parallel_size();
    if (o.batch % size != 0)
        die(2, "--batch %d does not split evenly over %d processes: give a multiple of %d",
            o.batch, size, size);
    /* rank 0 alone writes the files and reads the checkpoint: another
     * machine's processes may not see the folder */
    bool writer = parallel_rank() == 0;
    if (o.checkpoint && writer)
        check_save("--checkpoint", o.checkpoint, o.checkpoint, 0);
    if (o.resume && writer)
        check_eval("--resume", o.resume);
    if (strcmp(o.model, "gpt") == 0) {
        int status = gpt_train(&o.gpt);
        parallel_end();
        return status;
    }
    check_data_dir(o.data);
    if (o.eval)
        check_eval("--eval", o.eval);
    if (o.save && writer)
        check_save("--save", o.save, o.save, 0);
    dataset       test = load_set(o.data, true);
    kiln_context *ctx  = parallel_context();
    printf("backend: %s\n", kiln_context_device(ctx));
    model m = build(ctx, &o, !o.eval);
    batch b = {malloc((size_t)o.batch * PIXELS * sizeof *b.x),
               malloc((size_t)o.batch * sizeof *b.y),
               malloc((size_t)o.batch * sizeof *b.idx),
               malloc((size_t)o.batch * sizeof *b.pred)};
    if (!b.x || !b.y || !b.idx || !b.pred)
        die(1, "out of memory for a batch of %d", o.batch);

    if (o.eval) {
        kiln_status st = kiln_load(m.g, o.eval);
        if (st != KILN_OK)
            die(1, "--eval: %s%s%s%s", kiln_last_error(),
                st == KILN_ERR_IO ? ""
                                  : " (the weights must come from kiln-train --model ",
                st == KILN_ERR_IO ? "" : o.model, st == KILN_ERR_IO ? "" : ")");
        printf("model %s (%lld parameters) from %s\n", o.model, param_count(m.g), o.eval);
        print_accuracy("test accuracy:", evaluate(&m, &test, &b), test.n);
    } else {
        print_accuracy("final test accuracy:", train(&o, &m, &test, &b), test.n);
        if (o.save && parallel_rank() == 0) {
            check(kiln_save_as(m.g, o.save, o.save_dtype), "--save");
            printf("weights saved to %s (%s)\n", o.save, kiln_dtype_name(o.save_dtype));
        }
    }
    print_profile(m.g);
    kiln_graph_free(m.g);
    kiln_context_free(ctx);
    dataset_free(&test);
    free(b.x);
    free(b.y);
    free(b.idx);
    free(b.pred);
    parallel_end();
    return 0;
}
