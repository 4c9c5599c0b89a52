/* tests/test_kiln_generate.c — kiln-generate, run as a program on a small
 * GPT that kiln-train trains here in a second.
 *
 * The reference for decoding with the key/value cache is decoding without
 * it (--no-cache runs the whole context through the training graph's
 * forward pass for every byte): at temperature 0 both must print the same
 * text, across the context's slides. The rest: the same seed gives the same
 * text, the prompt comes first and stdout holds nothing else, cpu and
 * OpenCL agree, and bad arguments and files are refused by name.
 */
#include "backends.h"
#include "expect.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define TRAIN    "./tools/kiln-train"
#define GENERATE "./tools/kiln-generate"

static char text_path[64], weights[64], err_path[64];

/* Runs `cmd` for at most `limit` seconds: its exit status, its stdout in
 * out and its stderr in err (each NUL-terminated). */
static int run_tool(int limit, const char *cmd, char *out, size_t len, char *err,
                    size_t err_len)
{
    char full[2048];
    snprintf(full, sizeof full, "timeout %d %s 2>%s", limit, cmd, err_path);
    FILE *p = popen(full, "r");
    cr_assert_not_null(p, "popen %s", full);
    size_t n     = fread(out, 1, len - 1, p);
    out[n]       = '\0';
    int   status = pclose(p);
    FILE *e      = fopen(err_path, "rb");
    cr_assert_not_null(e);
    n      = fread(err, 1, err_len - 1, e);
    err[n] = '\0';
    fclose(e);
    cr_assert(WIFEXITED(status), "%s did not exit normally: %s", full, err);
    cr_assert_neq(WEXITSTATUS(status), 124, "%s did not end in %d s: %s", full, limit,
                  err);
    return WEXITSTATUS(status);
}

static void cleanup(void)
{
    const char *paths[] = {text_path, weights, err_path};
    for (int i = 0; i < 3; i++)
        if (paths[i][0])
            remove(paths[i]);
}

/* A text of words and a one-layer GPT with a context of 16 trained on it for
 * 60 steps: enough to prefer some bytes clearly over others. */
static void setup(void)
{
    snprintf(text_path, sizeof text_path, "/tmp/kiln-gen-text-XXXXXX");
    snprintf(weights, sizeof weights, "/tmp/kiln-gen-weights-XXXXXX");
    snprintf(err_path, sizeof err_path, "/tmp/kiln-gen-err-XXXXXX");
    int fds[3] = {mkstemp(text_path), mkstemp(weights), mkstemp(err_path)};
    cr_assert(fds[0] >= 0 && fds[1] >= 0 && fds[2] >= 0, "mkstemp");
    close(fds[1]);
    close(fds[2]);
    FILE *f = fdopen(fds[0], "wb");
    cr_assert_not_null(f);
    static const char *const words[] = {"the ", "cat ", "sat ", "on ", "mat. ",
                                        "a ",   "dog ", "ran ", "to ", "it. "};
    uint64_t                 s       = 11;
    for (int i = 0; i < 4000; i++) {
        s = s * 6364136223846793005u + 1442695040888963407u;
        fputs(words[(s >> 33) % 10], f);
    }
    cr_assert_eq(fclose(f), 0);
    char cmd[512], out[8192], err[4096];
    snprintf(cmd, sizeof cmd,
             "env KILN_BACKEND=cpu " TRAIN " --model gpt --layers 1 --heads 2 --embd 16 "
             "--ctx 16 --batch 8 --steps 60 --warmup 5 --lr 0.01 --eval-every 60 "
             "--data %s --save %s",
             text_path, weights);
    int rc = run_tool(120, cmd, out, sizeof out, err, sizeof err);
    cr_assert_eq(rc, 0, "%s: exit %d: %s%s", cmd, rc, out, err);
}

TestSuite(kiln_generate, .init = setup, .fini = cleanup);

/* kiln-generate with `args` on the backend `spec` (NULL: the default). */
static int generate(const char *spec, const char *args, char *out, size_t len, char *err,
                    size_t err_len)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "env %s%s " GENERATE " --weights %s %s",
             spec ? "KILN_BACKEND=" : "", spec ? spec : "", weights, args);
    return run_tool(600, cmd, out, len, err, err_len);
}

static void expect_generated(const char *spec, const char *args, char *out, size_t len)
{
    char err[4096];
    int  rc = generate(spec, args, out, len, err, sizeof err);
    cr_assert_eq(rc, 0, "kiln-generate %s on %s: exit %d: %s", args,
                 spec ? spec : "default", rc, err);
    cr_assert(strstr(err, " tokens/s "), "no speed on stderr: %s", err);
}

/* 100 bytes after a context of 16 slide it many times. */
Test(kiln_generate, the_cache_and_the_whole_context_give_the_same_greedy_text)
{
    char a[4096], b[4096];
    expect_generated("cpu", "--prompt 'the cat ' --tokens 100 --temperature 0", a,
                     sizeof a);
    expect_generated("cpu", "--prompt 'the cat ' --tokens 100 --temperature 0 --no-cache",
                     b, sizeof b);
    cr_assert_eq(strlen(a), 8 + 100, "%zu bytes: \"%s\"", strlen(a), a);
    cr_assert(strncmp(a, "the cat ", 8) == 0, "the prompt does not come first: \"%s\"",
              a);
    cr_assert_str_eq(a, b, "with the cache:\n%s\nwithout:\n%s", a, b);
}

/* The sampled text depends on the seed and only on it; --top-k 1 is greedy. */
Test(kiln_generate, the_same_seed_gives_the_same_text)
{
    char a[4096], b[4096], c[4096], d[4096];
    expect_generated("cpu", "--prompt 'a dog ' --tokens 120 --seed 5", a, sizeof a);
    expect_generated("cpu", "--prompt 'a dog ' --tokens 120 --seed 5", b, sizeof b);
    expect_generated("cpu", "--prompt 'a dog ' --tokens 120 --seed 6", c, sizeof c);
    cr_assert_str_eq(a, b);
    cr_assert_str_neq(a, c, "seeds 5 and 6 gave the same 120 bytes: %s", a);
    expect_generated("cpu", "--prompt 'a dog ' --tokens 50 --top-k 1 --seed 9", c,
                     sizeof c);
    expect_generated("cpu", "--prompt 'a dog ' --tokens 50 --temperature 0", d, sizeof d);
    cr_assert_str_eq(c, d);
    /* the model learnt its words: greedy text is made of them */
    cr_assert(strstr(d, "the ") || strstr(d, "to ") || strstr(d, "a "), "%s", d);
}

/* Without a prompt, decoding starts from a newline that is not printed. */
Test(kiln_generate, an_empty_prompt_prints_only_the_sampled_bytes)
{
    char a[4096];
    expect_generated("cpu", "--tokens 40 --temperature 0.5", a, sizeof a);
    cr_assert_eq(strlen(a), 40, "%zu bytes: \"%s\"", strlen(a), a);
}

/* The matmuls stay on the cpu backend, as in test_kiln_train: CLBlast
 * compiling a kernel per product shape takes minutes on POCL; store_slice,
 * causal_softmax with its offset and the rest run on OpenCL. */
Test(kiln_generate, cpu_and_opencl_give_the_same_greedy_text)
{
    const kiln_device_report *dev;
    size_t                    nd = kiln_devices(&dev);
    bool                      cl = false;
    for (size_t i = 0; i < nd; i++)
        cl |= strcmp(dev[i].backend, "opencl") == 0 && !dev[i].unusable;
    if (!cl)
        cr_skip_test("no usable OpenCL device");
    char a[4096], b[4096];
    expect_generated("cpu", "--prompt 'on the ' --tokens 40 --temperature 0", a,
                     sizeof a);
    setenv("KILN_DEBUG_REFUSE", "matmul", 1);
    expect_generated("opencl", "--prompt 'on the ' --tokens 40 --temperature 0", b,
                     sizeof b);
    unsetenv("KILN_DEBUG_REFUSE");
    cr_assert_str_eq(a, b, "cpu:\n%s\nopencl:\n%s", a, b);
}

static void expect_refused(const char *args, int status, const char *message)
{
    char out[4096], err[4096];
    int  rc = generate(NULL, args, out, sizeof out, err, sizeof err);
    cr_assert_eq(rc, status, "kiln-generate %s: exit %d, expected %d: %s", args, rc,
                 status, err);
    cr_assert(strstr(err, message), "kiln-generate %s said \"%s\", expected \"%s\"", args,
              err, message);
    cr_assert_str_eq(out, "", "stdout holds text after a refusal");
}

Test(kiln_generate, bad_arguments_and_files_are_refused_by_name)
{
    expect_refused("--temperature -1", 2, "--temperature '-1': expected a number from 0");
    expect_refused("--top-k 300", 2, "--top-k '300'");
    expect_refused("--tokens x", 2, "--tokens 'x'");
    expect_refused("--bogus", 2, "bogus");
    expect_refused("extra", 2, "unexpected argument 'extra'");
    char out[4096], err[4096];
    int  rc = run_tool(60, GENERATE " --tokens 3", out, sizeof out, err, sizeof err);
    cr_assert_eq(rc, 2, "no --weights: exit %d: %s", rc, err);
    cr_assert(strstr(err, "--weights FILE is needed"), "%s", err);
    rc = run_tool(60, GENERATE " --weights /nonexistent/w.safetensors", out, sizeof out,
                  err, sizeof err);
    cr_assert_eq(rc, 1, "a missing file: exit %d: %s", rc, err);
    cr_assert(strstr(err, "/nonexistent/w.safetensors"), "%s", err);
    /* weights without a recorded model (an independent writer's file) */
    const char *src = getenv("KILN_TEST_SRCDIR");
    char        cmd[1024];
    snprintf(cmd, sizeof cmd, GENERATE " --weights %s/data/reference.safetensors",
             src ? src : "tests");
    rc = run_tool(60, cmd, out, sizeof out, err, sizeof err);
    cr_assert_eq(rc, 1, "exit %d: %s", rc, err);
    cr_assert(strstr(err, "records no model (no metadata \"kiln.model\")"), "%s", err);
}

Test(kiln_generate, help_and_version)
{
    char out[8192], err[4096];
    int  rc = run_tool(60, GENERATE " --help", out, sizeof out, err, sizeof err);
    cr_assert_eq(rc, 0);
    cr_assert(strstr(out, "--no-cache") && strstr(out, "--top-k K"), "%s", out);
    rc = run_tool(60, GENERATE " --version", out, sizeof out, err, sizeof err);
    cr_assert_eq(rc, 0);
    cr_assert(strncmp(out, "kiln-generate ", 14) == 0, "%s", out);
}
