/* tests/test_gpu_paths.c — the paths kiln takes for real GPUs, run on POCL
 * through tests/cl-props.c, a preloaded shim that makes the device report
 * other properties (and refuse buffers above a smaller largest allocation,
 * as drivers do).
 *
 * Each case runs a program in a child process with the shim preloaded:
 * kiln-info --json for the choice of device, tests/graph_runner for a graph
 * whose storage must be split across buffers, tests/test_ops for sums that
 * a GPU with many compute units cuts into many parts. Skipped without a usable
 * OpenCL device.
 */
#include "backends.h"
#include "child.h"
#include "expect.h"

#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <unistd.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#define SHIM "tests/.libs/cl-props.so"

/* Whether the first usable OpenCL device has double precision (POCL's has,
 * Mesa's rusticl's has not). */
static bool opencl_has_fp64(void)
{
    const kiln_device_report *d;
    size_t                    nd = kiln_devices(&d);
    for (size_t i = 0; i < nd; i++)
        if (strcmp(d[i].backend, "opencl") == 0 && !d[i].unusable)
            return strstr(d[i].capabilities, "fp64=yes") != NULL;
    return false;
}

/* Runs `cmd` with the shim and `props`; its exit status and output. */
static int run_with(const char *props, const char *cmd, char *out, size_t len)
{
    char full[8192];
    snprintf(full, sizeof full,
             "env LD_PRELOAD='%s %s' %s KILN_TEST_CL_PROPS='%s' timeout 600 %s 2>&1",
             child_asan_runtime(), SHIM,
             /* the preloaded runtime reaches the shell tools of libtool's
              * wrappers too, whose leaks are not kiln's: memory errors are
              * still caught, and the suite's own processes check leaks */
             child_asan_runtime()[0] ? "ASAN_OPTIONS=detect_leaks=0" : "", props, cmd);
    FILE *p = popen(full, "r");
    cr_assert_not_null(p, "popen %s", full);
    size_t n = 0, got;
    char   drain[4096];
    /* read to the end, so that the program never blocks on a full pipe */
    while ((got = fread(n < len - 1 ? out + n : drain, 1,
                        n < len - 1 ? len - 1 - n : sizeof drain, p)) > 0)
        n += n < len - 1 ? got : 0;
    out[n]     = '\0';
    int status = pclose(p);
    cr_assert(WIFEXITED(status), "%s did not exit normally: %s", full, out);
    return WEXITSTATUS(status);
}

/* kiln-info --json under the shim: the selected device and the OpenCL
 * device's capabilities. */
static void selection(const char *props, char *device, size_t len, char *kind,
                      size_t kind_len)
{
    static char out[1 << 16];
    int         rc = run_with(props, "./tools/kiln-info --json", out, sizeof out);
    cr_assert(rc == 0 || rc == 1, "kiln-info exited %d: %s", rc, out);
    json_error_t err;
    json_t      *root = json_loads(out, 0, &err);
    cr_assert_not_null(root, "kiln-info --json with %s: %s: %s", props, err.text, out);
    const char *sel = json_string_value(
        json_object_get(json_object_get(root, "selection"), "device"));
    snprintf(device, len, "%s", sel ? sel : "");
    kind[0]         = '\0';
    json_t *devices = json_object_get(root, "devices");
    for (size_t i = 0; i < json_array_size(devices); i++) {
        json_t *d = json_array_get(devices, i);
        if (strcmp(json_string_value(json_object_get(d, "backend")), "opencl") == 0) {
            const char *k = json_string_value(
                json_object_get(json_object_get(d, "capabilities"), "kind"));
            snprintf(kind, kind_len, "%s", k ? k : "(none)");
        }
    }
    json_decref(root);
}

Test(gpu_paths, a_device_of_several_types_is_never_the_default)
{
    test_need_opencl();
    char device[64], kind[64];
    /* Oclgrind's simulator says it is a GPU, an accelerator and a CPU */
    selection("type=gpu+cpu+accelerator", device, sizeof device, kind, sizeof kind);
    cr_assert_str_eq(kind, "simulator_or_unknown");
    cr_assert_str_eq(device, "cpu:0", "a simulator was chosen: %s", device);
    /* a GPU of its own memory is */
    selection("type=gpu,unified=0", device, sizeof device, kind, sizeof kind);
    cr_assert_str_eq(kind, "discrete_gpu");
    cr_assert_str_eq(device, "opencl:0");
    selection("type=gpu,unified=1", device, sizeof device, kind, sizeof kind);
    cr_assert_str_eq(kind, "integrated_gpu");
    cr_assert_str_eq(device, "opencl:0");
    /* POCL as it is: a CPU device, below kiln's cpu backend */
    selection("", device, sizeof device, kind, sizeof kind);
    cr_assert_str_eq(kind, "cpu");
    cr_assert_str_eq(device, "cpu:0");
}

/* A text of words to train on, written once per test. */
static char text_path[64];

static void write_text(void)
{
    snprintf(text_path, sizeof text_path, "/tmp/kiln-gpu-text-XXXXXX");
    int fd = mkstemp(text_path);
    cr_assert(fd >= 0, "mkstemp");
    FILE *f = fdopen(fd, "wb");
    cr_assert_not_null(f);
    static const char *const words[] = {"the ", "cat ", "sat ", "on ", "mat. "};
    uint64_t                 s       = 5;
    for (int i = 0; i < 3000; i++) {
        s = s * 6364136223846793005u + 1442695040888963407u;
        fputs(words[(s >> 33) % 5], f);
    }
    cr_assert_eq(fclose(f), 0);
}

static void remove_text(void)
{
    if (text_path[0])
        remove(text_path);
}

static double final_val(const char *out)
{
    const char *p = strstr(out, "final val ");
    return p ? strtod(p + 10, NULL) : NAN;
}

/* A GPT's training step whose tensors add up to megabytes, each at most 512
 * KiB, on a device whose largest buffer is 1 MiB: the storage goes in
 * several buffers and the losses are the cpu backend's. A batch whose
 * logits take 2 MiB is refused, naming the tensor and the limit. The
 * matmuls run on the cpu backend (KILN_DEBUG_REFUSE), as in
 * test_kiln_train: CLBlast compiling for every shape takes minutes on POCL. */
Test(gpu_paths, storage_is_split_at_the_largest_allocation, .fini = remove_text)
{
    test_need_opencl();
    write_text();
    static char out[1 << 22], ref[1 << 14];
    char        cmd[512];
    const char *gpt = "./tools/kiln-train --model gpt --layers 2 --heads 2 --embd 32 "
                      "--ctx 32 --steps 3 --eval-every 3";
    snprintf(cmd, sizeof cmd, "env KILN_BACKEND=cpu %s --batch 16 --data %s", gpt,
             text_path);
    int rc = run_with("", cmd, ref, sizeof ref);
    cr_assert_eq(rc, 0, "%s: %s", cmd, ref);
    snprintf(cmd, sizeof cmd,
             "env KILN_BACKEND=opencl KILN_DEBUG_REFUSE=matmul KILN_LOG=debug %s --batch "
             "16 "
             "--data %s",
             gpt, text_path);
    rc = run_with("max_alloc=1048576", cmd, out, sizeof out);
    cr_assert_eq(rc, 0, "%s with 1 MiB buffers: %s", cmd, out);
    cr_assert(strstr(out, "in 1024 KiB buffers"), "the plan was not split: %s", out);
    double a = final_val(ref), b = final_val(out);
    cr_assert(fabs(a - b) < 1e-3, "final val: cpu %.6f, opencl in small buffers %.6f", a,
              b);

    snprintf(cmd, sizeof cmd,
             "env KILN_BACKEND=opencl KILN_DEBUG_REFUSE=matmul %s --batch 64 --data %s",
             gpt, text_path);
    rc = run_with("max_alloc=1048576", cmd, out, sizeof out);
    cr_assert_eq(rc, 1, "a tensor above the largest buffer: exit %d: %s", rc, out);
    cr_assert(strstr(out, "matmul [2048, 256] takes 2097152 bytes, more than opencl:0") &&
                  strstr(out, "allocates in one buffer (1048576 bytes)"),
              "%s", out);
}

/* On a device that flushes subnormal floats, log and sqrt run on the cpu
 * backend, so that log(1e-40) is -92.1 and sqrt(1e-40) is 1e-20, not -inf
 * and 0; kiln-info says so. */
Test(gpu_paths, log_and_sqrt_keep_subnormals_on_a_device_that_flushes_them)
{
    test_need_opencl();
    char out[1 << 14];
    int  rc = run_with("denorm=0",
                       "env KILN_BACKEND=opencl KILN_LOG=debug ./tests/graph_runner tiny",
                       out, sizeof out);
    cr_assert_eq(rc, 0, "%s", out);
    cr_assert(strstr(out, "(log [2]) runs on cpu:0 (fallback: not supported there"), "%s",
              out);
    double      l, q;
    const char *p = strstr(out, "\nlog -");
    cr_assert(p && sscanf(p + 1, "log %lf sqrt %lf", &l, &q) == 2, "%s", out);
    cr_assert(fabs(l - log(1e-40)) < 1e-3 && fabs(q / 1e-20 - 1) < 1e-3,
              "log %g sqrt %g of 1e-40: %s", l, q, out);
    static char info[1 << 16];
    rc = run_with("denorm=0", "./tools/kiln-info --json", info, sizeof info);
    cr_assert(strstr(info, "\"denormals\": false"), "%s", info);
}

/* The outcome of the GEMM check is kept per device and driver: a second
 * process reads it instead of checking again (on a GPU, a 2048^3 product
 * every start) and computes the same numbers; a damaged entry is checked
 * again and replaced, and KILN_OPENCL_TUNE=off is a decision of its own. */
Test(gpu_paths, the_gemm_check_is_kept_per_device_and_driver)
{
    test_need_opencl();
    char dir[] = "/tmp/kiln-gemm-cache-XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    static char first[1 << 16], again[1 << 16], broken[1 << 16], off[1 << 16];
    char        cmd[512];
    snprintf(cmd, sizeof cmd,
             "env KILN_CACHE_DIR=%s KILN_BACKEND=opencl KILN_LOG=debug "
             "./tests/graph_runner",
             dir);
    cr_assert_eq(run_with("", cmd, first, sizeof first), 0, "%s", first);
    cr_assert(!strstr(first, "GEMM decision read"), "%s", first);
    cr_assert_eq(run_with("", cmd, again, sizeof again), 0, "%s", again);
    cr_assert(strstr(again, "GEMM decision read from"), "not kept: %s", again);
    /* the outputs: everything after the device line */
    const char *a = strstr(first, "\noutput "), *b = strstr(again, "\noutput ");
    cr_assert(a && b && strcmp(a, b) == 0, "the outputs differ:\n%s\n%s", first, again);

    char damage[1024];
    snprintf(damage, sizeof damage,
             "for f in %s/opencl-gemm-*.txt; do printf 'state=ok\\nset=nonsense\\n' >> "
             "\"$f\"; "
             "done",
             dir);
    cr_assert_eq(system(damage), 0);
    cr_assert_eq(run_with("", cmd, broken, sizeof broken), 0, "%s", broken);
    cr_assert(!strstr(broken, "GEMM decision read from"), "a damaged entry was used: %s",
              broken);
    b = strstr(broken, "\noutput ");
    cr_assert(b && strcmp(a, b) == 0, "the outputs differ after a damaged entry");

    snprintf(cmd, sizeof cmd,
             "env KILN_CACHE_DIR=%s KILN_BACKEND=opencl KILN_LOG=debug "
             "KILN_OPENCL_TUNE=off "
             "./tests/graph_runner",
             dir);
    cr_assert_eq(run_with("", cmd, off, sizeof off), 0, "%s", off);
    cr_assert(!strstr(off, "GEMM decision read from"), "tuning off read tuning on's: %s",
              off);
    snprintf(damage, sizeof damage, "rm -rf %s", dir);
    cr_assert_eq(system(damage), 0);
}

/* KILN_OPENCL_TUNE=search:SECONDS searches CLBlast's Xgemm parameters as
 * the device opens (every candidate checked against the host) and keeps the
 * winner, which a later process without it reads and uses, computing the
 * same numbers; kiln-bench tune refuses a device that is not OpenCL. */
Test(gpu_paths, a_searched_gemm_set_is_kept_and_used_by_later_processes)
{
    test_need_opencl();
    char dir[] = "/tmp/kiln-gemm-search-XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    static char searched[1 << 16], later[1 << 16], ref[1 << 16], tune[1 << 14];
    char        cmd[512];
    snprintf(cmd, sizeof cmd,
             "env KILN_CACHE_DIR=%s KILN_BACKEND=opencl KILN_LOG=debug "
             "KILN_OPENCL_TUNE=search:2 ./tests/graph_runner",
             dir);
    cr_assert_eq(run_with("", cmd, searched, sizeof searched), 0, "%s", searched);
    cr_assert(strstr(searched, "Xgemm search"), "no search: %s", searched);
    cr_assert(!strstr(searched, "GEMM decision read"), "%s", searched);
    snprintf(cmd, sizeof cmd,
             "env KILN_CACHE_DIR=%s KILN_BACKEND=opencl KILN_LOG=debug ./tests/graph_runner",
             dir);
    cr_assert_eq(run_with("", cmd, later, sizeof later), 0, "%s", later);
    cr_assert(strstr(later, "GEMM decision read from") && strstr(later, "Xgemm search"),
              "the search was not kept: %s", later);
    cr_assert_eq(run_with("", "env KILN_BACKEND=cpu ./tests/graph_runner", ref, sizeof ref),
                 0, "%s", ref);
    const char *a = strstr(searched, "\noutput "), *b = strstr(later, "\noutput "),
               *c = strstr(ref, "\noutput ");
    cr_assert(a && b && strcmp(a, b) == 0, "the outputs differ:\n%s\n%s", searched, later);
    cr_assert(c, "%s", ref);
    int rc = run_with("", "env KILN_BACKEND=cpu ./tools/kiln-bench tune --seconds 1", tune,
                      sizeof tune);
    cr_assert(rc == 2 && strstr(tune, "KILN_BACKEND=opencl"), "exit %d: %s", rc, tune);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    cr_assert_eq(system(cmd), 0);
}

/* Sums take compensated float on a GPU (double precision runs at 1/32 of
 * single on many) unless KILN_OPENCL_FP64=on, and double on a CPU device;
 * a device without double precision sums in compensated float whatever is
 * asked. The results agree with the cpu backend's either way. */
Test(gpu_paths, a_gpu_sums_in_compensated_float_unless_asked_for_double)
{
    test_need_opencl();
    static char gpu[1 << 16], on[1 << 16], cpu[1 << 16], ref[1 << 16];
    const char *run  = "env KILN_BACKEND=opencl KILN_LOG=debug ./tests/graph_runner";
    const char *wide = opencl_has_fp64() ? "sums in double" : "sums in compensated float";
    cr_assert_eq(run_with("type=gpu", run, gpu, sizeof gpu), 0, "%s", gpu);
    cr_assert(strstr(gpu, "sums in compensated float"), "%s", gpu);
    cr_assert_eq(run_with("type=gpu",
                          "env KILN_OPENCL_FP64=on KILN_BACKEND=opencl "
                          "KILN_LOG=debug ./tests/graph_runner",
                          on, sizeof on),
                 0, "%s", on);
    cr_assert(strstr(on, wide), "%s", on);
    cr_assert_eq(run_with("", run, cpu, sizeof cpu), 0, "%s", cpu);
    cr_assert(strstr(cpu, wide), "%s", cpu);
    cr_assert_eq(run_with("", "env KILN_BACKEND=cpu ./tests/graph_runner", ref,
                          sizeof ref),
                 0, "%s", ref);
    /* every output element within float rounding of the cpu backend's */
    const char *lines[] = {strstr(gpu, "\noutput "), strstr(on, "\noutput "),
                           strstr(ref, "\noutput ")};
    cr_assert(lines[0] && lines[1] && lines[2], "no outputs");
    for (int k = 0; k < 2; k++) {
        const char *p = lines[k], *q = lines[2];
        int         n = 0;
        while ((p = strchr(p + 1, '\n')) && (q = strchr(q + 1, '\n')) && p[1] && q[1]) {
            if (strncmp(p + 1, "output", 6) == 0 || strncmp(p + 1, "kiln", 4) == 0)
                continue;
            double x = strtod(p + 1, NULL), y = strtod(q + 1, NULL);
            cr_assert(fabs(x - y) <= 1e-5 * (1 + fabs(y)), "element %d: %g against %g", n,
                      x, y);
            n++;
        }
        cr_assert(n > 10, "only %d elements compared", n);
    }
}

/* On a GPU with many compute units, sums are cut into many more parts than
 * on POCL's two, each summed in compensated float: the op suite's sums,
 * sums over an axis, mse_loss and cross-entropy still match their
 * references, and repeat bit for bit. */
Test(gpu_paths, sums_in_many_parts_on_a_gpu_with_many_units_match_the_reference,
     .timeout = 600)
{
    test_need_opencl();
    static char out[1 << 16];
    /* without BXFI_MAP, which would make the inner suite take itself for a
     * test's sandbox (this process is one) and abort */
    int rc = run_with("type=gpu,units=64",
                      "env -u BXFI_MAP KILN_TEST_BACKENDS=opencl "
                      "CRITERION_TEST_PATTERN='@(sum|sum_axis|mse_loss|"
                      "cross_entropy)/*' ./tests/test_ops",
                      out, sizeof out);
    cr_assert_eq(rc, 0, "%s", out);
    cr_assert(strstr(out, "Failing: 0") && !strstr(out, "Tested: 0 "), "%s", out);
}
