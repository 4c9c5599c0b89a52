/* tests/test_opencl.c — what the OpenCL backend promises beyond the op
 * suite (which runs on every OpenCL device through tests/backends.c):
 *
 *  - its program cache: a second process reuses what the first built, shown
 *    by the backend's log lines (never by time); a truncated, corrupt or
 *    foreign entry is deleted and rebuilt, never trusted; "off" writes
 *    nothing; the default folder is $XDG_CACHE_HOME/kiln;
 *  - selection: opencl, opencl:N and opencl:<name> forms, the listing error
 *    for forms that name nothing, kiln's cpu backend ahead of an OpenCL CPU
 *    device by default;
 *  - errors: memory that cannot be had and labels out of range are errors
 *    that say what and where, never a crash;
 *  - GEMM past CLBlast's direct-kernel range (where kiln's verified
 *    parameters for CPU devices act) against the reference;
 *  - kernels with 32-bit and with 64-bit indices on either side of the
 *    limit between them (KILN_OPENCL_WIDE_ABOVE).
 *
 * Each test needs a usable OpenCL device and is skipped without one.
 */
#include "child.h"
#include "reference.h"

#include <criterion/criterion.h>
#include <kiln/kiln.h>

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

/* The first usable OpenCL device as "opencl:N"; skips the test if none. */
static const char *opencl_spec(void)
{
    static char               spec[32];
    const kiln_device_report *d;
    size_t                    n = kiln_devices(&d);
    for (size_t k = 0; k < n; k++) {
        if (strcmp(d[k].backend, "opencl") == 0 && !d[k].unusable) {
            snprintf(spec, sizeof spec, "opencl:%d", d[k].index);
            return spec;
        }
    }
    cr_skip_test("no usable OpenCL device (is POCL installed? OCL_ICD_VENDORS=%s)",
                 getenv("OCL_ICD_VENDORS") ? getenv("OCL_ICD_VENDORS") : "(unset)");
    return NULL;
}

/* ---- the program cache ---------------------------------------------------------- */

/* graph_runner on the OpenCL device, its cache in dir, its log at info. */
static child_result run_cached(const char *dir)
{
    char backend[64], cache[4200];
    snprintf(backend, sizeof backend, "KILN_BACKEND=%s", opencl_spec());
    snprintf(cache, sizeof cache, "KILN_CACHE_DIR=%s", dir);
    const char  *env[] = {backend, cache, "KILN_LOG=info", NULL};
    child_result r     = child_run("graph_runner", env);
    cr_assert_eq(r.status, 0, "graph_runner with %s failed (%d):\n%s", cache, r.status,
                 r.err);
    return r;
}

/* The one program entry in dir (asserts there is exactly one, and no temp
 * file left behind); the GEMM decision kept beside it is not counted. */
static void only_entry(const char *dir, char *path, size_t len)
{
    DIR *d = opendir(dir);
    cr_assert_not_null(d, "opendir %s: %s", dir, strerror(errno));
    int            entries = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        cr_assert_null(strstr(e->d_name, ".tmp"), "a temp file was left: %s", e->d_name);
        if (e->d_name[0] == '.' || strncmp(e->d_name, "opencl-gemm-", 12) == 0)
            continue;
        snprintf(path, len, "%s/%s", dir, e->d_name);
        entries++;
    }
    closedir(d);
    cr_assert_eq(entries, 1, "%s holds %d entries, expected 1", dir, entries);
}

static off_t file_size(const char *path)
{
    struct stat st;
    cr_assert_eq(stat(path, &st), 0, "stat %s: %s", path, strerror(errno));
    return st.st_size;
}

static void expect_log(const child_result *r, const char *line, bool present)
{
    bool found = strstr(r->err, line) != NULL;
    cr_assert_eq(found, present, "the log %s \"%s\":\n%s",
                 present ? "lacks" : "should not have", line, r->err);
}

Test(opencl_cache, a_second_process_reuses_the_program)
{
    char dir[4096], entry[4400];
    opencl_spec();
    child_temp_dir(dir, sizeof dir);
    child_result first = run_cached(dir);
    expect_log(&first, "program cache miss", true);
    expect_log(&first, "program cache stored", true);
    only_entry(dir, entry, sizeof entry);

    child_result second = run_cached(dir);
    expect_log(&second, "program cache hit", true);
    expect_log(&second, "program cache miss", false);
    expect_log(&second, "program cache stored", false);
    runner_expect_same("the second process", &second, &first, 0.0);
    child_free(&first);
    child_free(&second);
    child_remove_dir(dir);
}

/* Damages the one entry in dir with `damage`, runs again, and expects the
 * entry to be found unusable for `why`, deleted, rebuilt to its old size
 * and then reused. */
static void check_damaged_entry(void (*damage)(const char *path, off_t size),
                                const char *why)
{
    char dir[4096], entry[4400];
    opencl_spec();
    child_temp_dir(dir, sizeof dir);
    child_result first = run_cached(dir);
    only_entry(dir, entry, sizeof entry);
    off_t size = file_size(entry);
    damage(entry, size);

    child_result again = run_cached(dir);
    expect_log(&again, "was unusable", true);
    expect_log(&again, why, true);
    expect_log(&again, "program cache stored", true);
    expect_log(&again, "program cache hit", false);
    runner_expect_same("after rebuilding the damaged entry", &again, &first, 0.0);
    only_entry(dir, entry, sizeof entry);

    /* the rebuilt entry is whole: the next process uses it */
    child_result third = run_cached(dir);
    expect_log(&third, "program cache hit", true);
    child_free(&first);
    child_free(&again);
    child_free(&third);
    child_remove_dir(dir);
}

static void truncate_half(const char *path, off_t size)
{
    cr_assert_eq(truncate(path, size / 2), 0, "truncate %s: %s", path, strerror(errno));
}

static void flip_last_byte(const char *path, off_t size)
{
    FILE *f = fopen(path, "r+b");
    cr_assert_not_null(f, "fopen %s: %s", path, strerror(errno));
    cr_assert_eq(fseeko(f, size - 1, SEEK_SET), 0);
    int c = fgetc(f);
    cr_assert_eq(fseeko(f, size - 1, SEEK_SET), 0);
    fputc(c ^ 0x5a, f);
    cr_assert_eq(fclose(f), 0);
}

static void overwrite_with_text(const char *path, off_t size)
{
    (void)size;
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f, "fopen %s: %s", path, strerror(errno));
    fputs("not a program\n", f);
    cr_assert_eq(fclose(f), 0);
}

Test(opencl_cache, a_truncated_entry_is_rebuilt_not_trusted)
{
    check_damaged_entry(truncate_half, "truncated");
}

Test(opencl_cache, a_corrupt_entry_is_rebuilt_not_trusted)
{
    check_damaged_entry(flip_last_byte, "checksum");
}

Test(opencl_cache, a_foreign_file_is_rebuilt_not_trusted)
{
    check_damaged_entry(overwrite_with_text, "not a kiln program cache file");
}

/* An entry claiming a 3 GiB binary (a sparse file of that size) is refused
 * by its header, before anything is read or allocated for the binary. */
static void claim_3_gib(const char *path, off_t size)
{
    (void)size;
    FILE *f = fopen(path, "r+b");
    cr_assert_not_null(f, "fopen %s: %s", path, strerror(errno));
    unsigned char head[16];
    cr_assert_eq(fread(head, 1, 16, f), 16);
    uint32_t key_len = (uint32_t)head[12] | (uint32_t)head[13] << 8 |
                       (uint32_t)head[14] << 16 | (uint32_t)head[15] << 24;
    uint64_t binary = (uint64_t)3 << 30;
    off_t    at     = 16 + (off_t)key_len;
    cr_assert_eq(fseeko(f, at, SEEK_SET), 0);
    for (int i = 0; i < 8; i++)
        fputc((int)(binary >> (8 * i)) & 0xFF, f);
    cr_assert_eq(fclose(f), 0);
    cr_assert_eq(truncate(path, at + 16 + (off_t)binary), 0, "truncate %s: %s", path,
                 strerror(errno));
}

Test(opencl_cache, an_entry_past_the_size_limit_is_refused_by_its_header)
{
    check_damaged_entry(claim_3_gib, "3221225472 bytes, more than the 67108864");
}

/* A FIFO in the entry's place would block the reader forever: it is found
 * to be no regular file without opening it for a blocking read, deleted, and
 * the entry rebuilt. */
static void replace_with_fifo(const char *path, off_t size)
{
    (void)size;
    cr_assert_eq(unlink(path), 0, "unlink %s: %s", path, strerror(errno));
    cr_assert_eq(mkfifo(path, 0644), 0, "mkfifo %s: %s", path, strerror(errno));
}

Test(opencl_cache, a_fifo_entry_is_deleted_and_rebuilt_without_blocking, .timeout = 300)
{
    check_damaged_entry(replace_with_fifo, "a FIFO, not a regular file");
}

/* graph_runner with env (and the OpenCL device, KILN_LOG=info), from the
 * test's working directory, after which `relative` must not exist there:
 * kiln takes no cache folder from the working directory. */
static child_result run_relative(const char *const *env, const char *relative)
{
    char backend[64];
    snprintf(backend, sizeof backend, "KILN_BACKEND=%s", opencl_spec());
    const char *all[8] = {backend, "KILN_LOG=info"};
    for (size_t i = 0; env[i]; i++)
        all[2 + i] = env[i];
    child_result r       = child_run("graph_runner", all);
    bool         created = access(relative, F_OK) == 0;
    if (created)
        child_remove_dir(relative);
    cr_assert_eq(r.status, 0, "graph_runner failed (%d):\n%s", r.status, r.err);
    cr_assert(!created, "a cache folder %s was made in the working directory:\n%s",
              relative, r.err);
    return r;
}

Test(opencl_cache, a_relative_cache_folder_is_refused_and_the_cache_is_off)
{
    opencl_spec();
    const char  *by_kiln[] = {"KILN_CACHE_DIR=kiln-test-relative-cache", NULL};
    child_result r         = run_relative(by_kiln, "kiln-test-relative-cache");
    expect_log(&r, "KILN_CACHE_DIR=kiln-test-relative-cache is not an absolute path",
               true);
    expect_log(&r, "program cache off", true);
    child_free(&r);

    const char *by_home[] = {"-KILN_CACHE_DIR", "-XDG_CACHE_HOME",
                             "HOME=kiln-test-relative-home", NULL};
    r                     = run_relative(by_home, "kiln-test-relative-home");
    expect_log(&r, "HOME=kiln-test-relative-home is not an absolute path", true);
    expect_log(&r, "program cache off", true);
    child_free(&r);
}

/* The XDG base directory specification has a relative XDG_CACHE_HOME
 * ignored: kiln says so and uses $HOME/.cache/kiln. */
Test(opencl_cache, a_relative_xdg_cache_home_is_ignored_for_home)
{
    char dir[4096], home[4200], kiln_dir[4200], entry[4400];
    opencl_spec();
    child_temp_dir(dir, sizeof dir);
    snprintf(home, sizeof home, "HOME=%s", dir);
    const char *env[] = {"-KILN_CACHE_DIR", "XDG_CACHE_HOME=kiln-test-relative-xdg", home,
                         NULL};
    child_result r    = run_relative(env, "kiln-test-relative-xdg");
    expect_log(&r, "XDG_CACHE_HOME=kiln-test-relative-xdg is not an absolute path", true);
    expect_log(&r, "program cache stored", true);
    snprintf(kiln_dir, sizeof kiln_dir, "%s/.cache/kiln", dir);
    only_entry(kiln_dir, entry, sizeof entry);
    child_free(&r);
    child_remove_dir(dir);
}

Test(opencl_cache, off_builds_from_source_and_writes_nothing)
{
    char dir[4096], home[4200], backend[64];
    snprintf(backend, sizeof backend, "KILN_BACKEND=%s", opencl_spec());
    child_temp_dir(dir, sizeof dir);
    snprintf(home, sizeof home, "HOME=%s", dir);
    const char  *env[] = {backend,         home, "-XDG_CACHE_HOME", "KILN_CACHE_DIR=off",
                          "KILN_LOG=info", NULL};
    child_result r     = child_run("graph_runner", env);
    cr_assert_eq(r.status, 0, "graph_runner failed (%d):\n%s", r.status, r.err);
    expect_log(&r, "program cache off", true);
    size_t n = child_dir_entries(dir);
    cr_assert_eq(n, 0, "KILN_CACHE_DIR=off wrote %zu entries into %s", n, dir);
    child_free(&r);
    child_remove_dir(dir);
}

Test(opencl_cache, defaults_to_a_kiln_folder_in_xdg_cache_home)
{
    char dir[4096], xdg[4200], backend[64], kiln_dir[4200], entry[4400];
    snprintf(backend, sizeof backend, "KILN_BACKEND=%s", opencl_spec());
    child_temp_dir(dir, sizeof dir);
    snprintf(xdg, sizeof xdg, "XDG_CACHE_HOME=%s", dir);
    const char  *env[] = {backend, xdg, "-KILN_CACHE_DIR", "KILN_LOG=info", NULL};
    child_result r     = child_run("graph_runner", env);
    cr_assert_eq(r.status, 0, "graph_runner failed (%d):\n%s", r.status, r.err);
    snprintf(kiln_dir, sizeof kiln_dir, "%s/kiln", dir);
    only_entry(kiln_dir, entry, sizeof entry);
    child_free(&r);
    child_remove_dir(dir);
}

/* ---- selection ---------------------------------------------------------------- */

static void expect_listing(const char *spec, kiln_status want)
{
    size_t      k;
    kiln_status st = kiln_select(spec, &k);
    cr_assert_eq(st, want, "kiln_select(\"%s\") gave %s, expected %s: %s", spec,
                 kiln_status_name(st), kiln_status_name(want), kiln_last_error());
    const char *msg = kiln_last_error();
    cr_assert(strstr(msg, "Available:") && strstr(msg, opencl_spec()),
              "kiln_select(\"%s\"): the message does not list the devices: %s", spec,
              msg);
    cr_assert_null(kiln_context_new_for(spec), "a context on \"%s\"", spec);
    cr_assert(strstr(kiln_last_error(), "Available:"),
              "kiln_context_new_for(\"%s\") does not list the devices: %s", spec,
              kiln_last_error());
}

Test(opencl_select, bad_device_forms_give_the_listing)
{
    opencl_spec();
    expect_listing("opencl:99", KILN_ERR_NOT_FOUND);
    expect_listing("opencl:no-such-device", KILN_ERR_NOT_FOUND);
    expect_listing("opencl:", KILN_ERR_INVALID_ARG);
    expect_listing("opencl:99,opencl:nomatch", KILN_ERR_NOT_FOUND);
}

static const kiln_device_report *selected(const char *spec)
{
    size_t      k;
    kiln_status st = kiln_select(spec, &k);
    cr_assert_eq(st, KILN_OK, "kiln_select(\"%s\"): %s", spec, kiln_last_error());
    const kiln_device_report *d;
    kiln_devices(&d);
    return &d[k];
}

Test(opencl_select, names_a_device_by_index_or_by_device_or_platform_name)
{
    const kiln_device_report *d;
    size_t                    n = kiln_devices(&d);
    opencl_spec();
    for (size_t k = 0; k < n; k++) {
        if (strcmp(d[k].backend, "opencl") != 0 || d[k].unusable)
            continue;
        char spec[300], word[200];
        snprintf(spec, sizeof spec, "opencl:%d", d[k].index);
        cr_assert_eq(selected(spec)->index, d[k].index, "%s", spec);
        /* a piece of the device name, in another case */
        snprintf(word, sizeof word, "%.6s", d[k].name);
        for (char *c = word; *c; c++)
            *c = (char)(*c >= 'a' && *c <= 'z' ? *c - 32 : *c);
        snprintf(spec, sizeof spec, "opencl:%s", word);
        cr_assert(strcasestr(selected(spec)->name, word) != NULL, "%s", spec);
        /* the platform name starts the description */
        snprintf(word, sizeof word, "%.*s", (int)strcspn(d[k].description, ";"),
                 d[k].description);
        snprintf(spec, sizeof spec, "opencl:%s", word);
        const kiln_device_report *s = selected(spec);
        cr_assert(strcmp(s->backend, "opencl") == 0 && strstr(s->description, word),
                  "%s named %s:%d", spec, s->backend, s->index);
    }
    cr_assert_str_eq(selected("opencl")->backend, "opencl");
}

Test(opencl_select, scores_by_device_type_and_kiln_cpu_wins_over_an_opencl_cpu)
{
    const kiln_device_report *d;
    const kiln_plugin_report *p;
    size_t                    n = kiln_devices(&d), np = kiln_plugins(&p);
    int                       best = 0, score = -1;
    opencl_spec();
    for (size_t k = 0; k < n; k++) {
        if (strcmp(d[k].backend, "opencl") != 0 || d[k].unusable)
            continue;
        /* by kind (man kiln): a device of several types, as Oclgrind's
         * simulator is, scores below a CPU */
        static const struct {
            const char *kind;
            int         score;
        } kinds[] = {{"kind=discrete_gpu ", 100}, {"kind=integrated_gpu ", 95},
                     {"kind=accelerator ", 90},   {"kind=cpu ", 10},
                     {"kind=simulator_or_unknown ", 5}};
        int s = -1;
        for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
            if (strncmp(d[k].capabilities, kinds[i].kind, strlen(kinds[i].kind)) == 0)
                s = kinds[i].score;
        cr_assert_geq(s, 0, "no kind in the capabilities: %s", d[k].capabilities);
        best = s > best ? s : best;
        cr_assert(strstr(d[k].description, "fp64 ") &&
                      strstr(d[k].description, "fp16 ") &&
                      strstr(d[k].description, "OpenCL C"),
                  "the description lacks fp16/fp64/OpenCL C: %s", d[k].description);
    }
    for (size_t i = 0; i < np; i++)
        if (p[i].name && strcmp(p[i].name, "opencl") == 0 && !p[i].reason)
            score = p[i].score;
    cr_assert_eq(score, best, "the opencl plugin scores %d, its best device %d", score,
                 best);
    if (best <= 10)
        cr_assert_str_eq(selected(NULL)->backend, "cpu",
                         "an OpenCL CPU device won over kiln's cpu backend");
}

/* ---- errors ----------------------------------------------------------------------- */

Test(opencl_errors, memory_that_cannot_be_had_is_an_error_not_a_crash)
{
    kiln_context *ctx = kiln_context_new_for(opencl_spec());
    cr_assert_not_null(ctx, "%s", kiln_last_error());
    kiln_graph  *g = kiln_graph_new(ctx);
    kiln_tensor *x = kiln_input(g, "x", KILN_F32, KILN_SHAPE(1 << 20, 1 << 20));
    kiln_output(g, kiln_relu(g, x));
    kiln_status st = kiln_graph_compile(g);
    cr_assert_eq(st, KILN_ERR_NO_MEMORY, "compiling 8 TiB of tensors gave %s: %s",
                 kiln_status_name(st), kiln_last_error());
    cr_assert(strstr(kiln_last_error(), "opencl:"), "the message does not say where: %s",
              kiln_last_error());
    kiln_graph_free(g);
    kiln_context_free(ctx);
}

Test(opencl_errors, a_label_out_of_range_names_the_row_and_the_label)
{
    kiln_context *ctx = kiln_context_new_for(opencl_spec());
    cr_assert_not_null(ctx, "%s", kiln_last_error());
    kiln_graph  *g    = kiln_graph_new(ctx);
    kiln_tensor *x    = kiln_input(g, "x", KILN_F32, KILN_SHAPE(4, 10));
    kiln_tensor *y    = kiln_input(g, "y", KILN_I32, KILN_SHAPE(4));
    kiln_tensor *loss = kiln_cross_entropy(g, x, y);
    kiln_output(g, loss);
    cr_assert_eq(kiln_graph_compile(g), KILN_OK, "%s", kiln_graph_error(g));
    float logits[40];
    ref_fill(logits, 40, 7);
    kiln_tensor_write(x, logits, sizeof logits);

    static const struct {
        int32_t     labels[4];
        const char *msg;
    } bad[] = {
        {{1, 3, 12, 0}, "label 12 at row 2 is outside [0, 10)"},
        {{1, -1, 10, 0}, "label -1 at row 1 is outside [0, 10)"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        kiln_tensor_write(y, bad[i].labels, sizeof bad[i].labels);
        kiln_status st = kiln_graph_run(g);
        cr_assert_eq(st, KILN_ERR_INVALID_ARG, "labels %zu: %s: %s", i,
                     kiln_status_name(st), kiln_last_error());
        cr_assert(strstr(kiln_last_error(), bad[i].msg), "expected \"%s\" in: %s",
                  bad[i].msg, kiln_last_error());
    }
    /* good labels after bad ones: the check starts afresh */
    int32_t labels[4] = {1, 3, 9, 0};
    kiln_tensor_write(y, labels, sizeof labels);
    cr_assert_eq(kiln_graph_run(g), KILN_OK, "%s", kiln_last_error());
    float got;
    kiln_tensor_read(loss, &got, sizeof got);
    float want = ref_cross_entropy(logits, labels, 4, 10);
    cr_assert_float_eq(got, want, 1e-5f, "loss %g, expected %g", got, want);
    kiln_graph_free(g);
    kiln_context_free(ctx);
}

/* ---- GEMM past the direct kernels ----------------------------------------------- */

static void check_matmul(kiln_context *ctx, int64_t m, int64_t k, int64_t n, bool ta,
                         bool tb)
{
    kiln_graph  *g = kiln_graph_new(ctx);
    kiln_tensor *a = ta ? kiln_input(g, "a", KILN_F32, KILN_SHAPE(k, m))
                        : kiln_input(g, "a", KILN_F32, KILN_SHAPE(m, k));
    kiln_tensor *b = tb ? kiln_input(g, "b", KILN_F32, KILN_SHAPE(n, k))
                        : kiln_input(g, "b", KILN_F32, KILN_SHAPE(k, n));
    kiln_tensor *c = kiln_matmul_t(g, a, b, ta, tb);
    kiln_output(g, c);
    cr_assert_eq(kiln_graph_compile(g), KILN_OK, "%s", kiln_graph_error(g));
    float *av = malloc((size_t)(m * k) * 4), *bv = malloc((size_t)(k * n) * 4);
    float *got = malloc((size_t)(m * n) * 4), *want = malloc((size_t)(m * n) * 4);
    cr_assert(av && bv && got && want, "out of memory");
    ref_fill(av, (size_t)(m * k), 11);
    ref_fill(bv, (size_t)(k * n), 12);
    kiln_tensor_write(a, av, (size_t)(m * k) * 4);
    kiln_tensor_write(b, bv, (size_t)(k * n) * 4);
    cr_assert_eq(kiln_graph_run(g), KILN_OK, "%s", kiln_last_error());
    kiln_tensor_read(c, got, (size_t)(m * n) * 4);
    ref_matmul(av, bv, m, k, n, ta, tb, want);
    char what[128];
    snprintf(what, sizeof what, "matmul M=%lld K=%lld N=%lld%s%s", (long long)m,
             (long long)k, (long long)n, ta ? " a^T" : "", tb ? " b^T" : "");
    ref_expect_close(what, got, want, ref_shape_of(KILN_SHAPE(m, n)),
                     (ref_tol){2e-6 * (double)(k + 1), 1e-5});
    free(av);
    free(bv);
    free(got);
    free(want);
    kiln_graph_free(g);
}

Test(opencl_gemm, products_past_the_direct_kernels_match_the_reference)
{
    kiln_context *ctx = kiln_context_new_for(opencl_spec());
    cr_assert_not_null(ctx, "%s", kiln_last_error());
    for (int t = 0; t < 4; t++)
        check_matmul(ctx, 300, 261, 283, t & 1, t & 2);
    kiln_context_free(ctx);
}

Test(opencl_gemm, a_batched_conv2d_with_a_large_gemm_matches_the_reference)
{
    const ref_conv2d_shape cs = {6, 8, 20, 21, 16, 3, 3, 1, 1};
    int64_t                oh = ref_conv_out_size(cs.h, cs.kh, cs.stride, cs.padding);
    int64_t                ow = ref_conv_out_size(cs.w, cs.kw, cs.stride, cs.padding);
    size_t nx = (size_t)(cs.n * cs.c * cs.h * cs.w), nw = (size_t)(cs.o * cs.c * 9);
    size_t ny         = (size_t)(cs.n * cs.o * oh * ow);
    kiln_context *ctx = kiln_context_new_for(opencl_spec());
    cr_assert_not_null(ctx, "%s", kiln_last_error());
    kiln_graph  *g = kiln_graph_new(ctx);
    kiln_tensor *x = kiln_input(g, "x", KILN_F32, KILN_SHAPE(cs.n, cs.c, cs.h, cs.w));
    kiln_tensor *w = kiln_param(g, "w", KILN_SHAPE(cs.o, cs.c, 3, 3));
    kiln_tensor *b = kiln_param(g, "b", KILN_SHAPE(cs.o));
    kiln_tensor *y = kiln_conv2d(g, x, w, b, cs.stride, cs.padding);
    kiln_output(g, y);
    cr_assert_eq(kiln_graph_compile(g), KILN_OK, "%s", kiln_graph_error(g));
    float *xv = malloc(nx * 4), *wv = malloc(nw * 4), bv[16];
    float *got = malloc(ny * 4), *want = malloc(ny * 4);
    cr_assert(xv && wv && got && want, "out of memory");
    ref_fill(xv, nx, 21);
    ref_fill(wv, nw, 22);
    ref_fill(bv, 16, 23);
    kiln_tensor_write(x, xv, nx * 4);
    kiln_tensor_write(w, wv, nw * 4);
    kiln_tensor_write(b, bv, sizeof bv);
    cr_assert_eq(kiln_graph_run(g), KILN_OK, "%s", kiln_last_error());
    kiln_tensor_read(y, got, ny * 4);
    ref_conv2d(xv, wv, bv, cs, want);
    ref_expect_close("conv2d x [6, 8, 20, 21], w [16, 8, 3, 3]", got, want,
                     ref_shape_of(KILN_SHAPE(cs.n, cs.o, oh, ow)),
                     (ref_tol){2e-6 * 73, 1e-5});
    free(xv);
    free(wv);
    free(got);
    free(want);
    kiln_graph_free(g);
    kiln_context_free(ctx);
}

/* ---- 32-bit and 64-bit indices ----------------------------------------------------- */

/* y = x + b, x [rows, cols] and b [cols], exactly as the reference. */
static void check_broadcast_add(kiln_context *ctx, int64_t rows, int64_t cols)
{
    kiln_graph  *g = kiln_graph_new(ctx);
    kiln_tensor *x = kiln_input(g, "x", KILN_F32, KILN_SHAPE(rows, cols));
    kiln_tensor *b = kiln_input(g, "b", KILN_F32, KILN_SHAPE(cols));
    kiln_tensor *y = kiln_add(g, x, b);
    kiln_output(g, y);
    cr_assert_eq(kiln_graph_compile(g), KILN_OK, "%s", kiln_graph_error(g));
    size_t n  = (size_t)(rows * cols);
    float *xv = malloc(n * 4), *bv = malloc((size_t)cols * 4);
    float *got = malloc(n * 4), *want = malloc(n * 4);
    cr_assert(xv && bv && got && want, "out of memory");
    ref_fill(xv, n, 31);
    ref_fill(bv, (size_t)cols, 32);
    kiln_tensor_write(x, xv, n * 4);
    kiln_tensor_write(b, bv, (size_t)cols * 4);
    cr_assert_eq(kiln_graph_run(g), KILN_OK, "%s", kiln_last_error());
    kiln_tensor_read(y, got, n * 4);
    ref_shape sx = ref_shape_of(KILN_SHAPE(rows, cols)), sb = ref_shape_of(KILN_SHAPE(cols));
    ref_binary(REF_ADD, xv, sx, bv, sb, want, sx);
    char what[96];
    snprintf(what, sizeof what, "add of [%lld, %lld] and [%lld]", (long long)rows,
             (long long)cols, (long long)cols);
    ref_expect_close(what, got, want, sx, (ref_tol){0.0, 0.0});
    free(xv);
    free(bv);
    free(got);
    free(want);
    kiln_graph_free(g);
}

/* Kernels that divide indices take 32-bit ones up to KILN_OPENCL_WIDE_ABOVE
 * elements and 64-bit ones past it: at 1000, an add of 1000 elements takes
 * the first and one of 1001 the second, each with its arguments' widths, and
 * both match the reference. */
Test(opencl_index, both_sides_of_the_32_bit_limit_match_the_reference)
{
    cr_assert_eq(setenv("KILN_OPENCL_WIDE_ABOVE", "1000", 1), 0);
    kiln_context *ctx = kiln_context_new_for(opencl_spec());
    cr_assert_not_null(ctx, "%s", kiln_last_error());
    check_broadcast_add(ctx, 8, 125);
    check_broadcast_add(ctx, 7, 143);
    check_broadcast_add(ctx, 1, 1000);
    check_broadcast_add(ctx, 1, 1001);
    kiln_context_free(ctx);
}

/* Under an address-space limit (ulimit -v) too tight for the driver's
 * compiler, which crashes when it runs out, opening the device fails with a
 * message instead: from a limit that stops kiln before it loads to one that
 * lets the graph run, every run exits 0 or 1 with a message, never on a
 * signal. ASan maps terabytes of shadow memory and cannot run under such a
 * limit, so sanitizer builds skip this. */
Test(opencl, a_tight_address_space_limit_is_an_error_not_a_crash)
{
#ifdef __SANITIZE_ADDRESS__
    cr_skip_test("AddressSanitizer cannot run under an address-space limit");
#else
    /* Mesa 22.3's rusticl dies (SIGSEGV) inside clGetDeviceIDs when its own
     * start-up (llvmpipe's threads, LLVM) runs out of address space: under
     * 300 and 500 MiB, before kiln has a device to check */
    const kiln_device_report *d;
    size_t                    nd = kiln_devices(&d);
    for (size_t k = 0; k < nd; k++)
        if (strcmp(d[k].backend, "opencl") == 0 && !d[k].unusable &&
            strncmp(d[k].description, "rusticl;", 8) == 0)
            cr_skip_test("rusticl crashes in its own start-up under a tight limit");
    int ran = 0, refused = 0;
    for (int mb = 300; mb <= 1400; mb += 100) {
        char limit[64];
        snprintf(limit, sizeof limit, "KILN_TEST_ADDRESS_LIMIT_MB=%d", mb);
        const char  *env[] = {"KILN_BACKEND=opencl", limit, NULL};
        child_result r     = child_run("graph_runner", env);
        cr_expect(r.status == 0 || r.status == 1,
                  "graph_runner under %d MiB ended with status %d:\n%s", mb, r.status,
                  r.err);
        if (r.status == 1) {
            cr_expect(strstr(r.err, "graph_runner: ") != NULL,
                      "under %d MiB: no message:\n%s", mb, r.err);
            refused += strstr(r.err, "address-space limit") != NULL;
        }
        ran += r.status == 0;
        child_free(&r);
    }
    cr_expect_gt(refused, 0, "no limit was refused by the address-space check");
    cr_expect_gt(ran, 0, "no limit up to 1400 MiB let the graph run");
#endif
}
