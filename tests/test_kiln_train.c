/* tests/test_kiln_train.c — the kiln-train command line, run as a program.
 *
 * Training on the whole data set takes minutes, so it is not run here;
 * what is checked: arguments (getopt_long's forms; exit 2 with a message
 * naming the option or the value), --data, --eval and --save checked before
 * any training (on a tiny data set written here), an empty test set, and
 * --eval of weights saved by kiln_save when Fashion-MNIST is installed.
 * make check runs the tests from the build directory, where
 * tools/kiln-train is. Every run has a time limit, so that a tool blocked on
 * a FIFO fails the test instead of hanging it.
 */
#include "backends.h"
#include "expect.h"

#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define TOOL "./tools/kiln-train"

/* Runs kiln-train with `args` for at most `limit` seconds; its exit status,
 * and stdout and stderr in out. */
static int run_for(int limit, const char *args, char *out, size_t len)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "timeout %d " TOOL " %s 2>&1", limit, args);
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p, "popen %s", cmd);
    size_t n   = fread(out, 1, len - 1, p);
    out[n]     = '\0';
    int status = pclose(p);
    cr_assert(WIFEXITED(status), "%s did not exit normally: %s", cmd, out);
    cr_assert_neq(WEXITSTATUS(status), 124, "%s did not end in %d s: %s", cmd, limit, out);
    return WEXITSTATUS(status);
}

static int run(const char *args, char *out, size_t len)
{
    return run_for(120, args, out, len);
}

static void expect_usage_error(const char *args, const char *message)
{
    char out[4096];
    int  rc = run(args, out, sizeof out);
    cr_assert_eq(rc, 2, "kiln-train %s exited %d, expected 2: %s", args, rc, out);
    cr_assert(strstr(out, message), "kiln-train %s said \"%s\", expected \"%s\"", args,
              out, message);
}

Test(kiln_train, bad_arguments_exit_2_naming_the_value)
{
    expect_usage_error("--epochs abc", "--epochs 'abc': expected a whole number");
    expect_usage_error("--epochs 0", "--epochs '0'");
    expect_usage_error("--batch=-3", "--batch '-3'");
    expect_usage_error("--lr 0", "--lr '0': expected a number greater than 0");
    expect_usage_error("--model rnn", "--model 'rnn': expected mlp, cnn, linear or gpt");
    expect_usage_error("--optimizer rmsprop", "expected sgd or adam");
    expect_usage_error("extra", "kiln-train: unexpected argument 'extra'");
    expect_usage_error("--eval a --save b", "--eval and --save together");
    expect_usage_error("--precision f64", "--precision 'f64': expected f32, bf16 or f16");
    expect_usage_error("--save-dtype f8", "--save-dtype 'f8': expected f32, f16 or bf16");
    expect_usage_error("--save-dtype bf16", "--save-dtype needs --save FILE");
}

/* Past the command line, kiln-train looks for its data first: a run that
 * stops there with status 1 had its arguments accepted, and trains nothing. */
static void expect_accepted(const char *args)
{
    char out[4096], cmd[512];
    snprintf(cmd, sizeof cmd, "--data /nonexistent/kiln-data %s", args);
    int rc = run(cmd, out, sizeof out);
    cr_assert_eq(rc, 1, "kiln-train %s exited %d, expected 1 (no data): %s", cmd, rc,
                 out);
    cr_assert(strstr(out, "no data directory /nonexistent/kiln-data"),
              "kiln-train %s said \"%s\", expected it to miss the data", cmd, out);
}

Test(kiln_train, option_values_follow_a_space_or_an_equals_sign)
{
    expect_accepted("--epochs=1");
    expect_accepted("--epochs 1 --model=cnn --lr=0.01 --optimizer=sgd");
    expect_accepted("--ep=1 --sched constant"); /* unambiguous prefixes */
    expect_accepted("--");
    expect_usage_error("--epochs=abc", "--epochs 'abc': expected a whole number");
}

Test(kiln_train, an_unknown_option_exits_2_naming_it)
{
    expect_usage_error("--frobnicate", "kiln-train: unrecognized option '--frobnicate'");
    expect_usage_error("--frobnicate=3", "'--frobnicate=3'");
    expect_usage_error("-x", "kiln-train: invalid option -- 'x'");
    expect_usage_error("--s 1", "option '--s' is ambiguous");
    expect_usage_error("--help=yes", "option '--help' doesn't allow an argument");
    expect_usage_error("-- --epochs=1", "kiln-train: unexpected argument '--epochs=1'");
    expect_usage_error("--frobnicate", "Try 'kiln-train --help'");
}

Test(kiln_train, an_option_without_its_value_exits_2_naming_it)
{
    expect_usage_error("--seed", "kiln-train: option '--seed' requires an argument");
    expect_usage_error("--model=cnn --epochs", "option '--epochs' requires an argument");
}

Test(kiln_train, help_describes_every_option)
{
    char out[8192];
    cr_assert_eq(run("--help", out, sizeof out), 0, "%s", out);
    const char *options[] = {"--model", "--epochs", "--batch", "--lr",   "--optimizer",
                             "--seed",  "--data",   "--save",  "--eval", "--help"};
    for (size_t i = 0; i < sizeof options / sizeof options[0]; i++)
        cr_assert(strstr(out, options[i]), "--help does not mention %s", options[i]);
}

Test(kiln_train, a_missing_data_directory_names_it_and_the_package)
{
    char out[4096];
    int  rc = run("--data /nonexistent/kiln-data", out, sizeof out);
    cr_assert_eq(rc, 1, "exit %d: %s", rc, out);
    cr_assert(strstr(out, "/nonexistent/kiln-data") &&
                  strstr(out, "dataset-fashion-mnist"),
              "%s", out);
}

/* Weights of the mlp kiln-train builds, as a program of its own would save them. */
static void save_mlp(const char *path)
{
    kiln_context *ctx = test_context(test_first_spec());
    kiln_graph   *g   = kiln_graph_new(ctx);
    kiln_tensor  *x   = kiln_input(g, "x", KILN_F32, KILN_SHAPE(1, 784));
    kiln_tensor  *h   = kiln_relu(g, kiln_dense(g, x, 256, "fc1"));
    kiln_dense(g, kiln_relu(g, kiln_dense(g, h, 128, "fc2")), 10, "fc3");
    expect_ok(kiln_save(g, path), "kiln_save");
    kiln_graph_free(g);
    kiln_context_free(ctx);
}

Test(kiln_train, eval_reports_the_test_accuracy_of_saved_weights)
{
    if (access("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz", R_OK) != 0)
        cr_skip_test("Fashion-MNIST is not installed (dataset-fashion-mnist)");
    char path[] = "/tmp/kiln-train-XXXXXX";
    int  fd     = mkstemp(path);
    cr_assert_geq(fd, 0);
    close(fd);
    save_mlp(path);
    char out[4096], args[256];
    snprintf(args, sizeof args, "--eval %s --batch 1000", path);
    int rc = run(args, out, sizeof out);
    snprintf(args, sizeof args, "--eval %s --model cnn", path);
    char wrong[4096];
    int  rc_wrong = run(args, wrong, sizeof wrong);
    unlink(path);
    cr_assert_eq(rc, 0, "exit %d: %s", rc, out);
    cr_assert(strstr(out, "backend: ") && strstr(out, "of 10000)"), "%s", out);
    cr_assert_eq(rc_wrong, 1, "weights of another model: exit %d: %s", rc_wrong, wrong);
    cr_assert(strstr(wrong, "--model cnn"), "%s", wrong);
}

/* ---- paths, checked before training ------------------------------------------- */

static char data_dir[256];

/* An IDX file of u8 of `dims`, every element `value`. */
static void write_u8_idx(const char *name, int ndim, const uint32_t *dims, uint8_t value)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", data_dir, name);
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f, "fopen %s", path);
    size_t n = 1;
    fputc(0, f);
    fputc(0, f);
    fputc(0x08, f);
    fputc(ndim, f);
    for (int i = 0; i < ndim; i++) {
        for (int k = 3; k >= 0; k--)
            fputc((int)(dims[i] >> (8 * k)) & 0xFF, f);
        n *= dims[i];
    }
    for (size_t i = 0; i < n; i++)
        fputc(value, f);
    cr_assert_eq(fclose(f), 0);
}

/* A data folder of `train` and `test` images of 28x28 (labels 3). */
static void make_data(uint32_t train, uint32_t test)
{
    snprintf(data_dir, sizeof data_dir, "/tmp/kiln-train-data-XXXXXX");
    cr_assert_not_null(mkdtemp(data_dir));
    write_u8_idx("train-images-idx3-ubyte", 3, (const uint32_t[]){train, 28, 28}, 100);
    write_u8_idx("train-labels-idx1-ubyte", 1, (const uint32_t[]){train}, 3);
    write_u8_idx("t10k-images-idx3-ubyte", 3, (const uint32_t[]){test, 28, 28}, 100);
    write_u8_idx("t10k-labels-idx1-ubyte", 1, (const uint32_t[]){test}, 3);
}

static int remove_entry(const char *path, const struct stat *st, int flag,
                        struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void remove_data(void)
{
    if (data_dir[0])
        nftw(data_dir, remove_entry, 8, FTW_DEPTH | FTW_PHYS);
}

/* data_dir/name, in a buffer per call site's choosing. */
static const char *in_data(char *buf, size_t len, const char *name)
{
    snprintf(buf, len, "%s/%s", data_dir, name);
    return buf;
}

/* kiln-train on the tiny data set with `more` arguments: it exits 1 with a
 * message holding a and b, before any training (no epoch was reported). */
static void expect_refused_before_training(const char *more, const char *a, const char *b)
{
    char args[1024], out[8192];
    snprintf(args, sizeof args, "--data %s --model linear --epochs 1 --batch 1 %s",
             data_dir, more);
    int rc = run(args, out, sizeof out);
    cr_assert_eq(rc, 1, "kiln-train %s exited %d, expected 1: %s", args, rc, out);
    cr_assert(strstr(out, a) && (!b || strstr(out, b)),
              "kiln-train %s said \"%s\", expected \"%s\" and \"%s\"", args, out, a,
              b ? b : "");
    cr_assert_null(strstr(out, "epoch"), "kiln-train %s trained before refusing: %s",
                   args, out);
}

TestSuite(kiln_train_paths, .fini = remove_data);

Test(kiln_train_paths, a_bad_save_path_is_refused_before_training)
{
    char p[1024], fifo[512];
    make_data(2, 1);
    expect_refused_before_training("--save /nonexistent/kiln/w.safetensors",
                                   "--save /nonexistent/kiln/w.safetensors",
                                   "/nonexistent/kiln");
    cr_assert_eq(mkfifo(in_data(fifo, sizeof fifo, "fifo"), 0600), 0);
    snprintf(p, sizeof p, "--save %s", fifo);
    expect_refused_before_training(p, fifo, "is a FIFO");
    snprintf(p, sizeof p, "--save %s", data_dir);
    expect_refused_before_training(p, data_dir, "is a directory");
    in_data(fifo, sizeof fifo, "t10k-labels-idx1-ubyte/w.safetensors");
    snprintf(p, sizeof p, "--save %s", fifo);
    expect_refused_before_training(p, fifo, "Not a directory");
    /* a dangling link names the file to create: its folder must exist */
    cr_assert_eq(symlink("/nonexistent/kiln/w.safetensors",
                         in_data(fifo, sizeof fifo, "dangling")),
                 0);
    snprintf(p, sizeof p, "--save %s", fifo);
    expect_refused_before_training(p, fifo, "its folder /nonexistent/kiln");
}

Test(kiln_train_paths, a_bad_eval_file_is_refused_before_anything)
{
    char p[1024], fifo[512];
    make_data(2, 1);
    expect_refused_before_training("--eval /nonexistent/w.safetensors",
                                   "--eval /nonexistent/w.safetensors", "No such file");
    cr_assert_eq(mkfifo(in_data(fifo, sizeof fifo, "fifo"), 0600), 0);
    snprintf(p, sizeof p, "--eval %s", fifo);
    expect_refused_before_training(p, fifo, "is a FIFO");
    snprintf(p, sizeof p, "--eval %s", data_dir);
    expect_refused_before_training(p, data_dir, "is a directory");
}

/* The four files are looked for before anything else: one missing, or one
 * that is not a regular file (a FIFO would block the reader), is named. */
Test(kiln_train_paths, data_needs_its_four_files_before_anything)
{
    char p[512];
    make_data(2, 1);
    cr_assert_eq(unlink(in_data(p, sizeof p, "train-labels-idx1-ubyte")), 0);
    cr_assert_eq(mkfifo(p, 0600), 0);
    expect_refused_before_training("", p, "is a FIFO");
    cr_assert_eq(unlink(p), 0);
    expect_refused_before_training("", "neither train-labels-idx1-ubyte.gz nor",
                                   data_dir);
    char out[8192], args[512];
    snprintf(args, sizeof args, "--data %s", data_dir);
    run(args, out, sizeof out);
    cr_assert_null(strstr(out, "backend:"),
                   "a backend was opened before the data was found missing: %s", out);
}

/* What the checks let through: a new file to --save in a writable folder,
 * then those weights to --eval, on the tiny data set. */
Test(kiln_train_paths, save_then_eval_on_a_tiny_data_set)
{
    char w[512], args[1024], out[8192];
    make_data(2, 1);
    in_data(w, sizeof w, "w.safetensors");
    snprintf(args, sizeof args, "--data %s --model linear --epochs 1 --batch 1 --save %s",
             data_dir, w);
    int rc = run(args, out, sizeof out);
    cr_assert_eq(rc, 0, "kiln-train %s exited %d: %s", args, rc, out);
    cr_assert(strstr(out, "weights saved to") && strstr(out, " of 1)"), "%s", out);
    snprintf(args, sizeof args, "--data %s --model linear --eval %s", data_dir, w);
    rc = run(args, out, sizeof out);
    cr_assert_eq(rc, 0, "kiln-train %s exited %d: %s", args, rc, out);
    cr_assert(strstr(out, "test accuracy:"), "%s", out);
}

/* Mixed precision on the tiny data set: f16 reports its loss scale, the
 * weights are saved as BF16 and --eval reads them back. */
Test(kiln_train_paths, f16_training_saves_bf16_weights_that_eval_reads)
{
    char w[512], args[1024], out[8192];
    make_data(4, 2);
    in_data(w, sizeof w, "w.safetensors");
    snprintf(args, sizeof args,
             "--data %s --model mlp --epochs 2 --batch 2 --precision f16 --save %s "
             "--save-dtype bf16",
             data_dir, w);
    int rc = run(args, out, sizeof out);
    cr_assert_eq(rc, 0, "kiln-train %s exited %d: %s", args, rc, out);
    cr_assert(strstr(out, "precision f16") && strstr(out, "loss scale ") &&
                  strstr(out, "skipped") && strstr(out, "(bf16)"),
              "%s", out);
    FILE *f = fopen(w, "rb");
    cr_assert_not_null(f);
    char head[4096];
    size_t n  = fread(head, 1, sizeof head - 1, f);
    head[n]   = '\0';
    fclose(f);
    cr_assert(strstr(head + 8, "\"dtype\":\"BF16\""), "the file is not BF16");
    snprintf(args, sizeof args, "--data %s --model mlp --eval %s", data_dir, w);
    rc = run(args, out, sizeof out);
    cr_assert_eq(rc, 0, "kiln-train %s exited %d: %s", args, rc, out);
    cr_assert(strstr(out, "test accuracy:"), "%s", out);
}

/* A test set of no images has no accuracy: kiln-train says so and exits 1
 * before training, instead of reporting "-nan%". */
Test(kiln_train_paths, an_empty_test_set_is_refused_not_reported_as_nan)
{
    char p[512];
    make_data(2, 0);
    expect_refused_before_training("", "the test set is empty",
                                   in_data(p, sizeof p, "t10k-images-idx3-ubyte"));
    remove_data();
    make_data(0, 2);
    expect_refused_before_training("", "the training set is empty",
                                   in_data(p, sizeof p, "train-images-idx3-ubyte"));
}

/* ---- --model gpt ----------------------------------------------------------------- */

static char gpt_text[256];

/* A text of n bytes with structure a small model learns in a few steps:
 * "the cat sat on the mat. " and the like, from a fixed generator. */
static void make_text(size_t n)
{
    snprintf(gpt_text, sizeof gpt_text, "/tmp/kiln-gpt-text-XXXXXX");
    int fd = mkstemp(gpt_text);
    cr_assert(fd >= 0, "mkstemp");
    FILE *f = fdopen(fd, "wb");
    cr_assert_not_null(f);
    static const char *const words[] = {"the ", "cat ", "sat ", "on ", "mat. ", "a ",
                                        "dog ", "ran ", "to ", "it. "};
    uint64_t s = 7;
    for (size_t i = 0; i < n;) {
        s              = s * 6364136223846793005u + 1442695040888963407u;
        const char *w  = words[(s >> 33) % 10];
        size_t      wn = strlen(w);
        fwrite(w, 1, wn, f);
        i += wn;
    }
    cr_assert_eq(fclose(f), 0);
}

static void remove_text(void)
{
    if (gpt_text[0])
        remove(gpt_text);
}

TestSuite(kiln_train_gpt, .fini = remove_text);

/* The value after `key` in the last line of out that has it, or NAN. */
static double value_after(const char *out, const char *key)
{
    double      v = NAN;
    const char *p = out;
    while ((p = strstr(p, key))) {
        p += strlen(key);
        v = strtod(p, NULL);
    }
    return v;
}

#define GPT_TINY "--model gpt --layers 1 --heads 2 --embd 16 --ctx 16 --batch 4 --seed 3"

Test(kiln_train_gpt, learns_a_small_text_and_prints_its_lines)
{
    make_text(20000);
    char args[1024], out[16384];
    snprintf(args, sizeof args,
             GPT_TINY " --data %s --steps 60 --warmup 5 --lr 0.01 --eval-every 30",
             gpt_text);
    int rc = run(args, out, sizeof out);
    cr_assert_eq(rc, 0, "kiln-train %s exited %d: %s", args, rc, out);
    cr_assert(strstr(out, "step 30 train ") && strstr(out, "step 60 train "), "%s", out);
    cr_assert(strstr(out, " ms/step ") && strstr(out, " tok/s "), "%s", out);
    double val = value_after(out, "final val ");
    /* a uniform guess over 256 bytes is ln 256 = 5.55; ten words of 2 to 5
     * letters are far easier */
    cr_assert(val < 3.0, "validation loss %g after 60 steps: %s", val, out);
}

/* The matmuls stay on the cpu backend (KILN_DEBUG_REFUSE): OpenCL's batched
 * GEMM through CLBlast is checked by test_ops, and CLBlast compiling its
 * kernels for every product shape in a fresh process takes a minute on POCL.
 * Every other op of the model, forward and backward, runs on OpenCL. */
Test(kiln_train_gpt, cpu_and_opencl_agree_on_the_first_step)
{
    const kiln_device_report *d;
    size_t                    nd = kiln_devices(&d);
    bool                      cl = false;
    for (size_t i = 0; i < nd; i++)
        cl |= strcmp(d[i].backend, "opencl") == 0 && !d[i].unusable;
    if (!cl)
        cr_skip_test("no usable OpenCL device");
    make_text(5000);
    double first[2];
    for (int k = 0; k < 2; k++) {
        char args[1024], out[8192];
        snprintf(args, sizeof args, GPT_TINY " --data %s --steps 1 --eval-every 1",
                 gpt_text);
        setenv("KILN_BACKEND", k ? "opencl" : "cpu", 1);
        setenv("KILN_DEBUG_REFUSE", "matmul", 1);
        int rc = run_for(600, args, out, sizeof out); /* a cold program cache */
        unsetenv("KILN_BACKEND");
        unsetenv("KILN_DEBUG_REFUSE");
        cr_assert_eq(rc, 0, "kiln-train %s exited %d: %s", args, rc, out);
        first[k] = value_after(out, "step 1 train ");
        cr_assert(isfinite(first[k]), "no loss in: %s", out);
    }
    cr_assert(fabs(first[0] - first[1]) < 1e-3, "first-step loss: cpu %.6f, opencl %.6f",
              first[0], first[1]);
}

Test(kiln_train_gpt, its_options_are_checked)
{
    expect_usage_error("--model gpt", "--model gpt needs --data TEXTFILE");
    expect_usage_error("--model gpt --data x --epochs 2", "--epochs does not apply");
    expect_usage_error("--layers 2", "--layers applies to --model gpt only");
    expect_usage_error("--model gpt --data x --embd 10 --heads 4",
                       "--embd 10 is not a multiple of --heads 4");
    expect_usage_error("--model gpt --data x --ctx 0", "--ctx '0'");
    make_text(100);
    char args[512], out[4096];
    snprintf(args, sizeof args, "--model gpt --data %s --ctx 64", gpt_text);
    int rc = run(args, out, sizeof out);
    cr_assert_eq(rc, 1, "%s: exit %d: %s", args, rc, out);
    cr_assert(strstr(out, "must each hold 65 bytes"), "%s", out);
}
