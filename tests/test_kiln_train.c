/* tests/test_kiln_train.c — the kiln-train command line, run as a program.
 *
 * Training itself needs the whole data set and minutes, so it is not run here;
 * what is checked: arguments (getopt_long's forms; exit 2 with a message
 * naming the option or the value), a missing data directory, and --eval of
 * weights saved by kiln_save when Fashion-MNIST is installed. make check runs
 * the tests from the build directory, where tools/kiln-train is.
 */
#include "backends.h"
#include "expect.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define TOOL "./tools/kiln-train"

/* Runs kiln-train with `args`; its exit status, and stdout and stderr in out. */
static int run(const char *args, char *out, size_t len)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, TOOL " %s 2>&1", args);
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p, "popen %s", cmd);
    size_t n   = fread(out, 1, len - 1, p);
    out[n]     = '\0';
    int status = pclose(p);
    cr_assert(WIFEXITED(status), "%s did not exit normally: %s", cmd, out);
    return WEXITSTATUS(status);
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
    expect_usage_error("--model rnn", "--model 'rnn': expected mlp, cnn or linear");
    expect_usage_error("--optimizer rmsprop", "expected sgd or adam");
    expect_usage_error("extra", "kiln-train: unexpected argument 'extra'");
    expect_usage_error("--eval a --save b", "--eval and --save together");
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
