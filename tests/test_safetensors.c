/* tests/test_safetensors.c — kiln_save and kiln_load.
 *
 * Interoperability is checked both ways against code that is not kiln's:
 * tests/data/reference.safetensors was written by tests/data/make_safetensors.py
 * (Python's struct and json only), and kiln's own files are decoded here with
 * plain byte arithmetic, and, when python3 is installed, by that script too.
 * Every malformed file kiln_load must refuse is written byte by byte here.
 */
#include "backends.h"
#include "child.h"
#include "expect.h"

#include <dlfcn.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

static kiln_context *ctx;
static kiln_graph   *g;
static char          dir[4096];

static void setup(void)
{
    ctx = test_context(test_first_spec());
    g   = kiln_graph_new(ctx);
    cr_assert_not_null(g, "kiln_graph_new: %s", kiln_last_error());
    child_temp_dir(dir, sizeof dir);
}

static void teardown(void)
{
    kiln_graph_free(g);
    kiln_context_free(ctx);
    child_remove_dir(dir);
}

TestSuite(safetensors, .init = setup, .fini = teardown);

static const char *in_dir(const char *name)
{
    static char buf[4][4200];
    static int  next;
    char       *p = buf[next++ % 4];
    snprintf(p, sizeof buf[0], "%s/%s", dir, name);
    return p;
}

static const char *reference_file(void)
{
    static char p[512];
    const char *src = getenv("KILN_TEST_SRCDIR");
    snprintf(p, sizeof p, "%s/data/reference.safetensors", src ? src : "tests");
    return p;
}

static kiln_tensor *param(kiln_graph *in, const char *name, int ndim, const int64_t *dims,
                          const float *value)
{
    kiln_tensor *p = kiln_param(in, name, ndim, dims);
    cr_assert_eq(kiln_graph_status(in), KILN_OK, "%s", kiln_graph_error(in));
    if (value)
        expect_ok(kiln_tensor_write(p, value, kiln_tensor_nbytes(p)), name);
    return p;
}

static void expect_values(const kiln_tensor *t, const float *want, size_t n)
{
    float got[16];
    cr_assert(n <= 16);
    expect_ok(kiln_tensor_read(t, got, n * sizeof *got), kiln_tensor_name(t));
    for (size_t i = 0; i < n; i++)
        cr_assert(memcmp(&got[i], &want[i], sizeof *got) == 0,
                  "%s[%zu] is %.9g, expected "
                  "%.9g",
                  kiln_tensor_name(t), i, (double)got[i], (double)want[i]);
}

static const float W[] = {0.5f, -1.25f, 3.0f, 1e-3f, -0.0f, 65504.0f};
static const float B[] = {1.0f, 2.0f, 3.5f};

/* ---- files from an independent writer ------------------------------------------ */

Test(safetensors, loads_the_file_of_an_independent_writer)
{
    kiln_tensor *w = param(g, "dense.weight", KILN_SHAPE(2, 3), NULL);
    kiln_tensor *b = param(g, "dense.bias", KILN_SHAPE(3), NULL);
    kiln_tensor *s = param(g, "scalar", 0, NULL, NULL);
    kiln_tensor *u = param(g, "unicod\xc3\xa9.w", KILN_SHAPE(1), NULL);
    expect_ok(kiln_load(g, reference_file()), "kiln_load");
    expect_values(w, W, 6);
    expect_values(b, B, 3);
    expect_values(s, (const float[]){42.0f}, 1);
    expect_values(u, (const float[]){2.5f}, 1);
}

Test(safetensors, loads_into_a_compiled_graph_and_the_values_reach_the_device)
{
    kiln_tensor *x = kiln_input(g, "x", KILN_F32, KILN_SHAPE(1, 2));
    kiln_tensor *w = param(g, "dense.weight", KILN_SHAPE(2, 3), NULL);
    kiln_tensor *b = param(g, "dense.bias", KILN_SHAPE(3), NULL);
    kiln_tensor *y = kiln_add(g, kiln_matmul(g, x, w), b);
    expect_ok(kiln_graph_compile(g), "compile");
    expect_ok(kiln_load(g, reference_file()), "kiln_load after compile");
    expect_ok(kiln_tensor_write(x, (const float[]){1, 2}, 8), "write x");
    expect_ok(kiln_graph_run(g), "run");
    float want[3];
    for (int j = 0; j < 3; j++)
        want[j] = W[j] + 2 * W[3 + j] + B[j];
    float got[3];
    expect_ok(kiln_tensor_read(y, got, sizeof got), "read y");
    for (int j = 0; j < 3; j++)
        cr_assert_float_eq(got[j], want[j], 1e-3f, "y[%d] %g, expected %g", j,
                           (double)got[j], (double)want[j]);
}

/* ---- kiln's files, read without kiln --------------------------------------------- */

static float le_float(const unsigned char *b)
{
    uint32_t u = (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 |
                 (uint32_t)b[3] << 24;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

Test(safetensors, saves_the_format_an_independent_reader_expects)
{
    param(g, "dense.weight", KILN_SHAPE(2, 3), W);
    param(g, "dense.bias", KILN_SHAPE(3), B);
    kiln_input(g, "x", KILN_F32, KILN_SHAPE(1, 2)); /* inputs are not saved */
    const char *path = in_dir("model.safetensors");
    expect_ok(kiln_save(g, path), "kiln_save");

    size_t         len;
    unsigned char *f = (unsigned char *)child_read_file(path, &len);
    uint64_t       n = 0;
    for (int i = 0; i < 8; i++)
        n |= (uint64_t)f[i] << (8 * i);
    cr_assert_eq(n % 8, 0, "header length %llu is not a multiple of 8",
                 (unsigned long long)n);
    cr_assert_eq(len, 8 + n + 36, "file of %zu bytes, header %llu", len,
                 (unsigned long long)n);
    char header[512];
    cr_assert_lt(n, sizeof header);
    memcpy(header, f + 8, n);
    header[n] = '\0';
    char want[512];
    snprintf(want, sizeof want,
             "{\"__metadata__\":{\"producer\":\"kiln %s\"},"
             "\"dense.weight\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]"
             "},"
             "\"dense.bias\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[24,36]}}",
             kiln_version());
    cr_assert(strncmp(header, want, strlen(want)) == 0, "header\n%s\nexpected\n%s",
              header, want);
    for (size_t i = strlen(want); i < n; i++)
        cr_assert_eq(header[i], ' ', "header byte %zu is 0x%02x, expected space padding",
                     i, (unsigned char)header[i]);
    for (int i = 0; i < 6; i++)
        cr_assert_eq(le_float(f + 8 + n + 4 * i), W[i], "weight %d", i);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(le_float(f + 8 + n + 24 + 4 * i), B[i], "bias %d", i);
    free(f);
}

Test(safetensors, the_independent_python_reader_reads_kilns_file)
{
    if (system("command -v python3 >/dev/null 2>&1") != 0)
        cr_skip_test("python3 is not installed");
    param(g, "dense.weight", KILN_SHAPE(2, 3), W);
    param(g, "dense.bias", KILN_SHAPE(3), B);
    param(g, "odd \"name\"\\", KILN_SHAPE(1), (const float[]){-7.5f});
    const char *path = in_dir("for-python.safetensors");
    expect_ok(kiln_save(g, path), "kiln_save");
    char        cmd[1024];
    const char *src = getenv("KILN_TEST_SRCDIR");
    snprintf(cmd, sizeof cmd, "python3 '%s/data/make_safetensors.py' --dump '%s'",
             src ? src : "tests", path);
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p, "popen %s", cmd);
    char   out[1024] = "";
    size_t got       = fread(out, 1, sizeof out - 1, p);
    out[got]         = '\0';
    int status       = pclose(p);
    cr_assert_eq(status, 0, "%s failed (%d): %s", cmd, status, out);
    cr_assert_str_eq(out, "dense.bias F32 [3] 1 2 3.5\n"
                          "dense.weight F32 [2, 3] 0.5 -1.25 3 0.00100000005 -0 65504\n"
                          "odd \"name\"\\ F32 [1] -7.5\n");
}

/* ---- round trips ---------------------------------------------------------------- */

Test(safetensors, save_then_load_gives_the_same_values_before_and_after_compile)
{
    kiln_graph_seed(g, 9);
    kiln_tensor *x = kiln_input(g, "x", KILN_F32, KILN_SHAPE(2, 1, 6, 6));
    kiln_dense(g, kiln_flatten(g, kiln_conv2d_layer(g, x, 3, 3, 1, 1, NULL)), 4, NULL);
    const char *path = in_dir("round.safetensors");
    expect_ok(kiln_save(g, path), "kiln_save");
    for (int compiled = 0; compiled < 2; compiled++) {
        kiln_graph  *h  = kiln_graph_new(ctx);
        kiln_tensor *hx = kiln_input(h, "x", KILN_F32, KILN_SHAPE(2, 1, 6, 6));
        kiln_graph_seed(h, 10); /* other initial values, replaced by the load */
        kiln_dense(h, kiln_flatten(h, kiln_conv2d_layer(h, hx, 3, 3, 1, 1, NULL)), 4,
                   NULL);
        if (compiled)
            expect_ok(kiln_graph_compile(h), "compile");
        expect_ok(kiln_load(h, path), "kiln_load");
        cr_assert_eq(kiln_graph_param_count(h), 4);
        for (size_t i = 0; i < 4; i++) {
            kiln_tensor *a = kiln_graph_param(g, i), *b = kiln_graph_param(h, i);
            size_t       n = kiln_tensor_nbytes(a);
            float        va[512], vb[512];
            cr_assert_leq(n, sizeof va);
            expect_ok(kiln_tensor_read(a, va, n), "read saved");
            expect_ok(kiln_tensor_read(b, vb, n), "read loaded");
            cr_assert(memcmp(va, vb, n) == 0,
                      "%s differs after the round trip (compiled "
                      "%d)",
                      kiln_tensor_name(a), compiled);
        }
        kiln_graph_free(h);
    }
}

Test(safetensors, save_replaces_a_file_and_leaves_no_temporary_behind)
{
    param(g, "p", KILN_SHAPE(2), (const float[]){1, 2});
    const char *path = in_dir("w.safetensors");
    FILE       *f    = fopen(path, "w");
    cr_assert_not_null(f);
    fputs("old contents", f);
    fclose(f);
    expect_ok(kiln_save(g, path), "kiln_save over a file");
    kiln_graph  *h = kiln_graph_new(ctx);
    kiln_tensor *p = param(h, "p", KILN_SHAPE(2), NULL);
    expect_ok(kiln_load(h, path), "kiln_load");
    expect_values(p, (const float[]){1, 2}, 2);
    kiln_graph_free(h);
    size_t n = child_dir_entries(dir);
    cr_assert_eq(n, 1, "the directory holds %zu entries, not just the saved file", n);
}

/* ---- saving over what is there ----------------------------------------------------- */

/* p of g holds {1, 2}, as the file at path says. */
static void expect_saved(const char *path)
{
    kiln_graph  *h = kiln_graph_new(ctx);
    kiln_tensor *p = param(h, "p", KILN_SHAPE(2), NULL);
    expect_ok(kiln_load(h, path), path);
    expect_values(p, (const float[]){1, 2}, 2);
    kiln_graph_free(h);
}

static void write_text(const char *path, const char *text, mode_t mode)
{
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f, "fopen %s", path);
    fputs(text, f);
    cr_assert_eq(fclose(f), 0);
    cr_assert_eq(chmod(path, mode), 0, "chmod %s", path);
}

static mode_t mode_of(const char *path)
{
    struct stat st;
    cr_assert_eq(stat(path, &st), 0, "stat %s", path);
    return st.st_mode & 07777;
}

Test(safetensors, save_keeps_the_mode_of_the_file_it_replaces)
{
    param(g, "p", KILN_SHAPE(2), (const float[]){1, 2});
    const mode_t modes[] = {0600, 0640, 0444};
    for (size_t i = 0; i < 3; i++) {
        const char *path = in_dir("w.safetensors");
        write_text(path, "old", modes[i]);
        expect_ok(kiln_save(g, path), "kiln_save");
        cr_assert_eq(mode_of(path), modes[i], "mode %o after saving over a file of %o",
                     (unsigned)mode_of(path), (unsigned)modes[i]);
        expect_saved(path);
        cr_assert_eq(unlink(path), 0);
    }
}

/* As root, the owner and group are kept too (others cannot give a file away). */
Test(safetensors, save_keeps_the_owner_of_the_file_it_replaces)
{
    if (geteuid() != 0)
        cr_skip_test("only root can make a file another user's");
    param(g, "p", KILN_SHAPE(2), (const float[]){1, 2});
    const char *path = in_dir("w.safetensors");
    write_text(path, "old", 0640);
    cr_assert_eq(chown(path, 4321, 4322), 0, "chown %s", path);
    expect_ok(kiln_save(g, path), "kiln_save");
    struct stat st;
    cr_assert_eq(stat(path, &st), 0);
    cr_assert(st.st_uid == 4321 && st.st_gid == 4322, "owner %d:%d, expected 4321:4322",
              (int)st.st_uid, (int)st.st_gid);
    cr_assert_eq(st.st_mode & 07777, 0640);
}

/* A symbolic link is written through: the link stays, its target gets the
 * weights (and keeps its mode); a dangling link's target is created. */
Test(safetensors, save_writes_through_a_symbolic_link)
{
    param(g, "p", KILN_SHAPE(2), (const float[]){1, 2});
    char sub[4200];
    snprintf(sub, sizeof sub, "%s", in_dir("sub"));
    cr_assert_eq(mkdir(sub, 0755), 0);
    write_text(in_dir("sub/real.safetensors"), "old", 0600);
    cr_assert_eq(symlink("sub/real.safetensors", in_dir("link")), 0);
    cr_assert_eq(symlink("link", in_dir("link-to-link")), 0);
    expect_ok(kiln_save(g, in_dir("link-to-link")), "kiln_save through two links");
    struct stat st;
    cr_assert_eq(lstat(in_dir("link-to-link"), &st), 0);
    cr_assert(S_ISLNK(st.st_mode), "the link was replaced");
    cr_assert_eq(lstat(in_dir("link"), &st), 0);
    cr_assert(S_ISLNK(st.st_mode), "the link's link was replaced");
    expect_saved(in_dir("sub/real.safetensors"));
    cr_assert_eq(mode_of(in_dir("sub/real.safetensors")), 0600);

    cr_assert_eq(symlink("sub/new.safetensors", in_dir("dangling")), 0);
    expect_ok(kiln_save(g, in_dir("dangling")), "kiln_save through a dangling link");
    cr_assert_eq(lstat(in_dir("dangling"), &st), 0);
    cr_assert(S_ISLNK(st.st_mode), "the dangling link was replaced");
    expect_saved(in_dir("sub/new.safetensors"));
    size_t n = child_dir_entries(dir), m = child_dir_entries(sub);
    cr_assert(n == 4 && m == 2,
              "%zu entries and %zu in sub/, expected 4 and 2: a "
              "temporary file was left",
              n, m);
}

Test(safetensors, save_refuses_a_loop_of_symbolic_links)
{
    param(g, "p", KILN_SHAPE(2), (const float[]){1, 2});
    cr_assert_eq(symlink("b", in_dir("a")), 0);
    cr_assert_eq(symlink("a", in_dir("b")), 0);
    expect_error(kiln_save(g, in_dir("a")), KILN_ERR_IO, "symbolic links", NULL);
    cr_assert_eq(child_dir_entries(dir), 2);
}

/* A FIFO, a folder or a device is refused, not replaced; so is a link to one. */
Test(safetensors, save_refuses_what_is_not_a_regular_file, .timeout = 20)
{
    param(g, "p", KILN_SHAPE(2), (const float[]){1, 2});
    char fifo[4200], sub[4200];
    snprintf(fifo, sizeof fifo, "%s", in_dir("fifo"));
    snprintf(sub, sizeof sub, "%s", in_dir("folder"));
    struct stat st;
    cr_assert_eq(mkfifo(fifo, 0600), 0);
    cr_assert_eq(mkdir(sub, 0755), 0);
    cr_assert_eq(symlink("fifo", in_dir("link-to-fifo")), 0);
    expect_error(kiln_save(g, fifo), KILN_ERR_IO, "is a FIFO",
                 "expected a regular file or the name of a new one");
    expect_error(kiln_save(g, in_dir("link-to-fifo")), KILN_ERR_IO, "is a FIFO",
                 "the target of the symbolic link");
    expect_error(kiln_save(g, sub), KILN_ERR_IO, "is a directory", NULL);
    cr_assert(stat(fifo, &st) == 0 && S_ISFIFO(st.st_mode), "the FIFO was replaced");
    cr_assert(stat(sub, &st) == 0 && S_ISDIR(st.st_mode), "the folder was replaced");
    const char *dev = in_dir("null");
    bool has_dev    = mknod(dev, S_IFCHR | 0666, makedev(1, 3)) == 0; /* /dev/null's */
    if (has_dev) {
        expect_error(kiln_save(g, dev), KILN_ERR_IO, "is a character device", NULL);
        cr_assert(stat(dev, &st) == 0 && S_ISCHR(st.st_mode), "the device was replaced");
    } else {
        cr_log_warn("mknod: %s: the device case needs root", strerror(errno));
    }
    size_t n = child_dir_entries(dir);
    cr_assert_eq(n, has_dev ? 4 : 3, "%zu entries: a temporary file was left", n);
}

/* A file larger than RLIMIT_FSIZE ends the process with SIGXFSZ half
 * written, leaving the temporary file: kiln refuses it before writing. A
 * child process, with the signal's default action, tries; this one checks
 * how it ended and what it left. */
Test(safetensors, save_past_the_file_size_limit_is_refused_before_writing)
{
    static float big[1000];
    param(g, "p", KILN_SHAPE(1000), big);
    fflush(NULL);
    pid_t pid = fork();
    cr_assert_geq(pid, 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        struct rlimit low;
        signal(SIGXFSZ, SIG_DFL);
        getrlimit(RLIMIT_FSIZE, &low);
        low.rlim_cur = 2000;
        if (setrlimit(RLIMIT_FSIZE, &low) != 0)
            _exit(3);
        kiln_status st = kiln_save(g, in_dir("big.safetensors"));
        const char *e  = kiln_last_error();
        bool        ok = st == KILN_ERR_IO && strstr(e, "big.safetensors would be 4") &&
                  strstr(e, "RLIMIT_FSIZE") && strstr(e, "2000 bytes");
        fprintf(stderr, "kiln_save: %s: %s\n", kiln_status_name(st), e);
        _exit(ok ? 0 : 1);
    }
    int status;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert(!WIFSIGNALED(status), "the saving process died of signal %d%s",
              WTERMSIG(status), WTERMSIG(status) == SIGXFSZ ? " (SIGXFSZ)" : "");
    cr_assert_eq(WEXITSTATUS(status), 0,
                 "kiln_save did not refuse the file as too large for RLIMIT_FSIZE "
                 "(its message is in the log)");
    size_t n = child_dir_entries(dir);
    cr_assert_eq(n, 0, "a refused save left %zu entries", n);
}

/* ---- errors: the graph against the file ----------------------------------------- */

Test(safetensors, a_parameter_missing_from_the_file_is_named)
{
    param(g, "dense.weight", KILN_SHAPE(2, 3), NULL);
    param(g, "head.bias", KILN_SHAPE(10), NULL);
    expect_error(kiln_load(g, reference_file()), KILN_ERR_NOT_FOUND, "\"head.bias\"",
                 "reference.safetensors");
}

Test(safetensors, a_shape_mismatch_names_the_tensor_and_both_shapes)
{
    param(g, "dense.weight", KILN_SHAPE(3, 2), NULL);
    expect_error(kiln_load(g, reference_file()), KILN_ERR_SHAPE,
                 "\"dense.weight\" is "
                 "[2, 3] in the file",
                 "[3, 2] in the graph");
}

Test(safetensors, a_dtype_other_than_f32_is_named)
{
    param(g, "note", KILN_SHAPE(2), NULL);
    expect_error(kiln_load(g, reference_file()), KILN_ERR_SHAPE, "\"note\" is I32",
                 "F32");
}

Test(safetensors, a_failed_load_changes_no_parameter)
{
    kiln_tensor *w = param(g, "dense.weight", KILN_SHAPE(2, 3), (const float[6]){0});
    param(g, "missing", KILN_SHAPE(1), NULL);
    cr_assert_neq(kiln_load(g, reference_file()), KILN_OK);
    expect_values(w, (const float[6]){0}, 6);
}

Test(safetensors, a_missing_file_is_an_io_error_naming_it)
{
    param(g, "p", KILN_SHAPE(1), NULL);
    expect_error(kiln_load(g, in_dir("nothing-here")), KILN_ERR_IO, "nothing-here",
                 "No such file");
}

Test(safetensors, save_needs_names_and_values)
{
    kiln_param(g, NULL, KILN_SHAPE(3));
    expect_error(kiln_save(g, in_dir("a")), KILN_ERR_INVALID_ARG,
                 "parameter 0 [3] has no "
                 "name",
                 NULL);
    kiln_graph *h = kiln_graph_new(ctx);
    kiln_param(h, "unset", KILN_SHAPE(2));
    expect_error(kiln_save(h, in_dir("b")), KILN_ERR_STATE, "'unset'",
                 "not been written");
    kiln_graph_free(h);
    size_t n = child_dir_entries(dir);
    cr_assert_eq(n, 0, "a failed save left %zu entries behind", n);
}

/* A name that the header cannot hold is refused before any file is written:
 * "__metadata__" is the format's own member, and JSON text is UTF-8. */
Test(safetensors, save_refuses_names_a_header_cannot_hold)
{
    param(g, "__metadata__", KILN_SHAPE(1), (const float[]){1});
    expect_error(kiln_save(g, in_dir("a")), KILN_ERR_INVALID_ARG,
                 "parameter 0 [1] is named "
                 "__metadata__",
                 NULL);
    kiln_graph *h = kiln_graph_new(ctx);
    param(h, "ok", KILN_SHAPE(1), (const float[]){1});
    param(h, "latin1 \xe9", KILN_SHAPE(2), (const float[]){1, 2});
    expect_error(kiln_save(h, in_dir("b")), KILN_ERR_INVALID_ARG,
                 "parameter 1 [2] is not "
                 "UTF-8",
                 NULL);
    kiln_graph_free(h);
    size_t n = child_dir_entries(dir);
    cr_assert_eq(n, 0, "a failed save left %zu entries behind", n);
}

Test(safetensors, save_to_a_missing_directory_is_an_io_error)
{
    param(g, "p", KILN_SHAPE(1), (const float[]){1});
    expect_error(kiln_save(g, in_dir("no/such/dir/w.safetensors")), KILN_ERR_IO,
                 "no/such/dir", "No such file");
}

/* ---- errors: malformed files ---------------------------------------------------- */

/* A file of the 8-byte length of `header`, the header, then data_len bytes. */
static const char *write_raw(const char *header, size_t data_len)
{
    const char *path = in_dir("bad.safetensors");
    FILE       *f    = fopen(path, "wb");
    cr_assert_not_null(f);
    size_t n = strlen(header);
    for (int i = 0; i < 8; i++)
        fputc((int)((uint64_t)n >> (8 * i)) & 0xFF, f);
    fwrite(header, 1, n, f);
    for (size_t i = 0; i < data_len; i++)
        fputc(0, f);
    fclose(f);
    return path;
}

static void expect_malformed(const char *header, size_t data_len, const char *a,
                             const char *b)
{
    kiln_graph *h = kiln_graph_new(ctx);
    kiln_param(h, "t", KILN_SHAPE(2));
    const char *path = write_raw(header, data_len);
    kiln_status st   = kiln_load(h, path);
    kiln_graph_free(h);
    cr_assert_eq(st, KILN_ERR_IO, "header %s: gave %s, expected KILN_ERR_IO (%s)", header,
                 kiln_status_name(st), kiln_last_error());
    const char *e = kiln_last_error();
    cr_assert(strstr(e, "bad.safetensors"), "error \"%s\" does not name the file", e);
    cr_assert(strstr(e, a), "header %s: error \"%s\" does not mention \"%s\"", header, e,
              a);
    cr_assert(!b || strstr(e, b), "header %s: error \"%s\" does not mention \"%s\"",
              header, e, b);
}

#define T(s) "{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}" s

Test(safetensors, a_well_formed_header_loads)
{
    kiln_tensor *t    = param(g, "t", KILN_SHAPE(2), NULL);
    const char  *path = write_raw(
         " \t\n" T(",\"__metadata__\":{\"k\":\"v\\u00e9\\ud83d\\ude00\"}}  "), 8);
    expect_ok(kiln_load(g, path), "kiln_load");
    expect_values(t, (const float[]){0, 0}, 2);
}

/* Jansson parses the header; kiln says where, as the byte at which the text
 * Jansson quotes after "near" begins. */
Test(safetensors, json_syntax_errors_name_the_offset)
{
    expect_malformed(T(",}"), 8, "at byte 54", "string or '}' expected near '}'");
    expect_malformed("{\"t\" {}}", 8, "at byte 5", "':' expected near '{'");
    expect_malformed(T(""), 8, "at byte 53", "'}' expected near end of file");
    expect_malformed("{\"t\":[1,2,]}", 8, "at byte 10", "unexpected token near ']'");
    expect_malformed("{\"t\\q\":1}", 8, "at byte 1", "invalid escape near '\"t\\q'");
    expect_malformed("{\"t\":\"a\x01\"}", 8, "at byte 5", "control character 0x1");
    expect_malformed("{\"t\":\"abc", 8, "at byte 5",
                     "premature end of input near '\"abc'");
    expect_malformed("{\"t\":012}", 8, "at byte 5", "leading zero");
    expect_malformed("{\"t\":99999999999999999999}", 8, "at byte 5", "64-bit range");
    expect_malformed("{\"t\":\"\\u12\"}", 8, "at byte 5",
                     "invalid escape near '\"\\u12\"'");
    expect_malformed("{\"t\":\"\\ud800x\"}", 8, "at byte 5", "invalid Unicode '\\uD800'");
    expect_malformed("{\"t\":\"\\u0000\"}", 8, "at byte 5", "\\u0000 is not allowed");
    expect_malformed("{\"t\":\"a\xff\"}", 8, "at byte 5", "unable to decode byte 0xff");
    expect_malformed(T("} x"), 8, "at byte 55", "end of file expected near 'x'");
    expect_malformed("{\"a\":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]"
                     "]]]]]]]]]]]]}",
                     8, "at byte 36", "nesting deeper than 32 levels");
}

/* N is the offset in bytes, not characters, of the token Jansson names. */
Test(safetensors, a_parse_error_names_the_byte_where_the_bad_token_starts)
{
    const char *header = "{\n  \"unicod\xc3\xa9\": {\"dtype\": \"F32\", \"shape\": [2],"
                         "\n    \"data_offsets\": [0, 8]}\n  \"t\": 1\n}";
    char        at[32];
    snprintf(at, sizeof at, "at byte %zu:", (size_t)(strstr(header, "\"t\"") - header));
    cr_assert_str_eq(at, "at byte 77:");
    expect_malformed(header, 8, at, "'}' expected near '\"t\"'");
    /* A token longer than the 20 bytes Jansson quotes: kiln quotes it. */
    expect_malformed("{\"t\":1 \"a key longer than twenty bytes\":2}", 8, "at byte 7:",
                     "'}' expected near '\"a key longer than twenty bytes\"'");
    expect_malformed("{\"t\":-99999999999999999999}", 8, "at byte 5:",
                     "too big negative integer near '-99999999999999999999'");
}

/* Jansson refuses a key that an object already has, at every level. */
Test(safetensors, a_duplicate_key_is_refused)
{
    expect_malformed(T(",\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}"
                       "}"),
                     8, "at byte 54:", "duplicate object key near '\"t\"'");
    expect_malformed("{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8],"
                     "\"dtype\":\"F32\"}}",
                     8, "at byte 53:", "duplicate object key near '\"dtype\"'");
    expect_malformed(T(",\"__metadata__\":{\"k\":\"a\",\"k\":\"b\"}}"), 8,
                     "at byte 78:", "duplicate object key near '\"k\"'");
    /* Two spellings of one key are one key. */
    expect_malformed(T(",\"\\u0074\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":["
                       "0,8]}}"),
                     8, "at byte 54:", "duplicate object key near '\"\\u0074\"'");
    expect_malformed("{\"model.layers.10.self_attn.q_proj.weight\":1,"
                     "\"model.layers.10.self_attn.q_proj.weight\":2}",
                     8, "at byte 45:",
                     "duplicate object key near "
                     "'\"model.layers.10.self_attn.q_proj.weight\"'");
}

/* kiln refuses nesting deeper than 32 levels before Jansson parses the header
 * (Jansson's own limit is 2048), naming the limit and the byte of the first
 * bracket past it; brackets inside strings are text. */
static char *nested(const char *before, size_t levels, const char *after)
{
    size_t n = strlen(before) + 2 * levels + strlen(after);
    char  *h = malloc(n + 1);
    cr_assert_not_null(h);
    char *p = h + strlen(before);
    memcpy(h, before, strlen(before));
    memset(p, '[', levels);
    memset(p + levels, ']', levels);
    strcpy(p + 2 * levels, after);
    return h;
}

Test(safetensors, a_header_nested_deeper_than_the_limit_is_refused)
{
    char *h = nested("{\"a\":", 31, "}"); /* 32 levels: not refused for its depth */
    expect_malformed(h, 8, "tensor \"a\" is an array", "expected an object");
    free(h);
    h = nested("{\"a\":", 32, "}");
    expect_malformed(h, 8, "at byte 36:", "nesting deeper than 32 levels");
    free(h);
    h = nested("", 1000000, ""); /* no recursion, neither kiln's nor Jansson's */
    expect_malformed(h, 8, "at byte 32:", "nesting deeper than 32 levels");
    free(h);
    h = nested("{\"\\\"", 40, "\":1}"); /* in a key, after an escaped quote */
    expect_malformed(h, 8, "is an integer", "expected an object");
    free(h);
}

Test(safetensors, header_structure_errors_name_the_tensor)
{
    expect_malformed("[1, 2]", 8, "the header is an array", "expected an object");
    expect_malformed("{\"t\":[]}", 8, "tensor \"t\"", "is an array, expected an object");
    expect_malformed("{\"t\":{\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "no \"dtype\"",
                     NULL);
    expect_malformed("{\"t\":{\"dtype\":\"F32\",\"shape\":2,\"data_offsets\":[0,8]}}", 8,
                     "\"shape\"", "is an integer, expected an array");
    expect_malformed("{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8],"
                     "\"extra\":1}}",
                     8, "unknown member \"extra\"", NULL);
    expect_malformed("{\"t\":{\"dtype\":\"Q7\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8,
                     "unknown dtype \"Q7\"", NULL);
    expect_malformed("{\"t\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}",
                     8, "shape element 0", "not an integer >= 0");
    expect_malformed("{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0]}}", 8,
                     "not [begin, end]", NULL);
    expect_malformed(T(",\"__metadata__\":{\"k\":1}}"), 8, "__metadata__ \"k\"",
                     "expected a string");
    expect_malformed(T(",\"__metadata__\":[]}"), 8, "__metadata__", "expected an object");
    /* Numbers are integers: no fraction, no exponent, and no true, false or null. */
    expect_malformed("{\"t\":1.5}", 8, "tensor \"t\" is a number that is not an integer",
                     "expected an object");
    expect_malformed("{\"t\":true}", 8, "tensor \"t\" is true", "expected an object");
    expect_malformed("{\"t\":{\"dtype\":\"F32\",\"shape\":[2.0],\"data_offsets\":[0,8]}}",
                     8, "shape element 0 is not an integer >= 0", "not an integer)");
    expect_malformed("{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8e0]}}",
                     8, "data_offsets is not [begin, end]", "two integers");
    expect_malformed("{\"t\":{\"dtype\":null,\"shape\":[2],\"data_offsets\":[0,8]}}", 8,
                     "\"dtype\" is null", "expected a string");
    expect_malformed(T(",\"__metadata__\":{\"k\":false}}"), 8,
                     "__metadata__ \"k\" is false", "expected a string");
}

Test(safetensors, offsets_must_be_in_range_and_match_the_shape)
{
    expect_malformed(T("}"), 4, "data_offsets [0, 8] outside the 4 bytes", NULL);
    expect_malformed("{\"t\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}",
                     8, "hold 8 bytes", "F32 [3] takes 12");
    expect_malformed("{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,4]}}",
                     8, "data_offsets [8, 4]", NULL);
    expect_malformed("{\"t\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],"
                     "\"data_offsets\":[0,8]}}",
                     8, "more elements than the file has bytes", NULL);
}

Test(safetensors, tensors_must_be_packed_without_holes_or_overlaps)
{
    expect_malformed("{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
                     12, "starts at data byte 4", "end at 0");
    expect_malformed(T("}"), 12, "the tensors end at data byte 8", "12 bytes of data");
    expect_malformed(T(",\"u\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}"
                       "}"),
                     12, "tensor \"u\" starts at data byte 4", NULL);
    expect_malformed(T(",\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}"
                       "}"),
                     16, "at byte 54", "duplicate object key near '\"t\"'");
}

Test(safetensors, length_prefix_errors)
{
    const char *path = in_dir("short.safetensors");
    FILE       *f    = fopen(path, "wb");
    fwrite("\x05\0\0", 1, 3, f);
    fclose(f);
    param(g, "t", KILN_SHAPE(2), NULL);
    expect_error(kiln_load(g, path), KILN_ERR_IO, "it has 3 bytes",
                 "8-byte header length");
    f = fopen(path, "wb");
    fwrite("\xff\xff\0\0\0\0\0\0{}", 1, 10, f);
    fclose(f);
    expect_error(kiln_load(g, path), KILN_ERR_IO, "header length is 65535",
                 "file has 2 bytes after");
    expect_malformed("", 0, "header length is 0", NULL);
}

/* A file whose length prefix says header_len, as long as that says (sparse:
 * the header reads as zeros) and data_len bytes more. */
static const char *write_sparse(uint64_t header_len, uint64_t data_len)
{
    const char   *path = in_dir("sparse.safetensors");
    unsigned char len[8];
    for (int i = 0; i < 8; i++)
        len[i] = (unsigned char)(header_len >> (8 * i));
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f);
    cr_assert_eq(fwrite(len, 1, 8, f), 8);
    cr_assert_eq(fclose(f), 0);
    cr_assert_eq(truncate(path, (off_t)(8 + header_len + data_len)), 0, "truncate %s",
                 path);
    return path;
}

/* kiln reads headers of up to 16 MiB (the reference reader: 100 MB). Jansson
 * takes up to about 80 times a header's size in memory, so a longer one is
 * refused by its length, before it is read. */
Test(safetensors, a_header_longer_than_the_limit_is_refused_by_its_length)
{
    param(g, "t", KILN_SHAPE(2), NULL);
    const uint64_t lengths[] = {16777224, 99999992};
    for (size_t i = 0; i < 2; i++) {
        char length[64];
        snprintf(length, sizeof length, "header length is %llu bytes",
                 (unsigned long long)lengths[i]);
        const char *path = write_sparse(lengths[i], 8);
        expect_error(kiln_load(g, path), KILN_ERR_IO, length,
                     "more than kiln reads (16777216 bytes, 16 MiB)");
        cr_assert(strstr(kiln_last_error(), path), "%s does not name the file",
                  kiln_last_error());
    }
    /* the limit itself is read, and found to be no JSON */
    expect_error(kiln_load(g, write_sparse(16777216, 8)), KILN_ERR_IO,
                 "not a valid safetensors file", "invalid token");
}

/* Jansson's allocator, replaced for one test: it fails every allocation of
 * fail_size bytes. Jansson is libkiln's, found in the process by name, so
 * that this test links nothing more. */
static size_t fail_size;

static void *failing_malloc(size_t n)
{
    return n == fail_size ? NULL : malloc(n);
}

static void set_jansson_malloc(json_malloc_t m)
{
    void (*set)(json_malloc_t, json_free_t) = (void (*)(json_malloc_t, json_free_t))
        dlsym(RTLD_DEFAULT, "json_set_alloc_funcs");
    cr_assert_not_null(set, "json_set_alloc_funcs: %s", dlerror());
    set(m, free);
}

/* When Jansson cannot allocate a string it reports "invalid token" (or, for
 * a key, "string or '}' expected"); kiln says what it is: out of memory. */
Test(safetensors, out_of_memory_parsing_the_header_is_no_memory_not_an_invalid_file)
{
    char value[1001], headers[2][1200];
    memset(value, 'x', 1000);
    value[1000] = '\0';
    fail_size   = 1000 + 3; /* the string's text with its quotes, and a NUL */
    snprintf(headers[0], sizeof headers[0], "{\"__metadata__\":{\"k\":\"%s\"}}", value);
    snprintf(headers[1], sizeof headers[1], "{\"__metadata__\":{\"%s\":\"v\"}}", value);
    for (size_t i = 0; i < 2; i++) {
        const char *path = write_raw(headers[i], 0);
        set_jansson_malloc(failing_malloc);
        kiln_status st = kiln_load(g, path);
        set_jansson_malloc(malloc);
        expect_error(st, KILN_ERR_NO_MEMORY, "out of memory parsing the header of",
                     "the string ending at byte");
        cr_assert(strstr(kiln_last_error(), path), "%s does not name the file",
                  kiln_last_error());
    }
}

/* A FIFO would block kiln_load forever: it is refused before it is read. */
Test(safetensors, loading_what_is_not_a_regular_file_is_refused, .timeout = 20)
{
    param(g, "t", KILN_SHAPE(2), NULL);
    const char *fifo = in_dir("fifo.safetensors");
    cr_assert_eq(mkfifo(fifo, 0600), 0, "mkfifo %s", fifo);
    expect_error(kiln_load(g, fifo), KILN_ERR_IO, "is a FIFO", "expected a regular file");
    expect_error(kiln_load(g, dir), KILN_ERR_IO, "is a directory",
                 "expected a regular file");
}

Test(safetensors, null_arguments_are_refused)
{
    expect_error(kiln_save(NULL, "x"), KILN_ERR_INVALID_ARG, "graph is NULL", NULL);
    expect_error(kiln_save(g, NULL), KILN_ERR_INVALID_ARG, "path is NULL", NULL);
    expect_error(kiln_load(NULL, "x"), KILN_ERR_INVALID_ARG, "graph is NULL", NULL);
    expect_error(kiln_load(g, NULL), KILN_ERR_INVALID_ARG, "path is NULL", NULL);
}

/* ---- metadata -------------------------------------------------------------------- */

Test(safetensors, metadata_set_on_the_graph_is_saved_and_read_back)
{
    param(g, "dense.weight", KILN_SHAPE(2, 3), W);
    expect_ok(kiln_graph_set_meta(g, "kiln.model", "gpt"), "set");
    expect_ok(kiln_graph_set_meta(g, "kiln.heads", "3"), "set");
    expect_ok(kiln_graph_set_meta(g, "kiln.heads", "4"), "set again"); /* replaces */
    expect_ok(kiln_graph_set_meta(g, "unicod\xc3\xa9", "\xc3\xa7"), "set");
    expect_ok(kiln_graph_set_meta(g, "gone", "x"), "set");
    expect_ok(kiln_graph_set_meta(g, "gone", NULL), "remove"); /* not in the file */
    expect_ok(kiln_graph_set_meta(g, "never.set", NULL), "remove what is not there");
    const char *path = in_dir("meta.safetensors");
    expect_ok(kiln_save(g, path), "kiln_save");

    /* the header as an independent reader sees it: JSON text */
    size_t len;
    char  *f = child_read_file(path, &len);
    char   want[256];
    snprintf(want, sizeof want,
             "{\"__metadata__\":{\"producer\":\"kiln %s\",\"kiln.model\":\"gpt\","
             "\"kiln.heads\":\"4\",\"unicod\xc3\xa9\":\"\xc3\xa7\"},",
             kiln_version());
    cr_assert(len > 8 + strlen(want) && memcmp(f + 8, want, strlen(want)) == 0,
              "header starts\n%.*s\nexpected\n%s", (int)strlen(want), f + 8, want);
    free(f);

    char value[16];
    expect_ok(kiln_file_meta(path, "kiln.model", value, sizeof value), "kiln_file_meta");
    cr_assert_str_eq(value, "gpt");
    expect_ok(kiln_file_meta(path, "kiln.heads", value, sizeof value), "kiln_file_meta");
    cr_assert_str_eq(value, "4");
    expect_ok(kiln_file_meta(path, "unicod\xc3\xa9", value, sizeof value),
              "kiln_file_meta");
    cr_assert_str_eq(value, "\xc3\xa7");

    cr_assert_eq(kiln_file_meta(path, "kiln.layers", value, sizeof value),
                 KILN_ERR_NOT_FOUND);
    cr_assert(strstr(kiln_last_error(), "has no metadata \"kiln.layers\""), "%s",
              kiln_last_error());
    cr_assert_eq(kiln_file_meta(path, "kiln.model", value, 3), KILN_ERR_INVALID_ARG);
    cr_assert(strstr(kiln_last_error(), "\"kiln.model\" takes 4 bytes with its NUL, more "
                                        "than the 3 given"),
              "%s", kiln_last_error());
    /* the loader still reads the weights of a file with metadata */
    kiln_graph  *h = kiln_graph_new(ctx);
    kiln_tensor *w = kiln_param(h, "dense.weight", KILN_SHAPE(2, 3));
    expect_ok(kiln_load(h, path), "kiln_load");
    expect_values(w, W, 6);
    kiln_graph_free(h);
}

Test(safetensors, metadata_refuses_an_empty_key_and_text_that_is_not_utf8)
{
    cr_assert_eq(kiln_graph_set_meta(g, "", "x"), KILN_ERR_INVALID_ARG);
    cr_assert(strstr(kiln_last_error(), "the key is empty"), "%s", kiln_last_error());
    cr_assert_eq(kiln_graph_set_meta(g, "k", "caf\xe9"), KILN_ERR_INVALID_ARG);
    cr_assert(strstr(kiln_last_error(), "the value \"caf\xe9\" is not valid UTF-8"), "%s",
              kiln_last_error());
    cr_assert_eq(kiln_graph_set_meta(g, "\xff", "x"), KILN_ERR_INVALID_ARG);
    cr_assert_eq(kiln_graph_set_meta(NULL, "k", "v"), KILN_ERR_INVALID_ARG);
    char v[8];
    cr_assert_eq(kiln_file_meta(NULL, "k", v, sizeof v), KILN_ERR_INVALID_ARG);
    /* a file without metadata (the independent writer's) and a missing one */
    cr_assert_eq(kiln_file_meta(reference_file(), "k", v, sizeof v), KILN_ERR_NOT_FOUND);
    cr_assert_eq(kiln_file_meta(in_dir("absent.safetensors"), "k", v, sizeof v),
                 KILN_ERR_IO);
    cr_assert(strstr(kiln_last_error(), "kiln_file_meta:"), "%s", kiln_last_error());
}
