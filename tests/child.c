/* tests/child.c — see child.h. */
#include "child.h"
#include "expect.h"
#include "reference.h"

#include <criterion/criterion.h>
#include <kiln/kiln.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *builddir(void)
{
    return expect_env("KILN_TEST_BUILDDIR");
}

/* The whole of an open file, from its start, NUL-terminated; its size in
 * *len unless len is NULL. */
static char *slurp(int fd, size_t *len)
{
    struct stat st;
    cr_assert_eq(fstat(fd, &st), 0, "fstat: %s", strerror(errno));
    char *buf = malloc((size_t)st.st_size + 1);
    cr_assert_not_null(buf, "out of memory");
    ssize_t n = pread(fd, buf, (size_t)st.st_size, 0);
    cr_assert_eq(n, st.st_size, "pread: %s", strerror(errno));
    buf[n] = '\0';
    if (len)
        *len = (size_t)n;
    return buf;
}

static int temp_file(void)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/cache/child-XXXXXX", builddir());
    int fd = mkstemp(path);
    cr_assert(fd >= 0, "mkstemp %s: %s", path, strerror(errno));
    unlink(path);
    return fd;
}

static void make_cache_dir(void)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/cache", builddir());
    cr_assert(mkdir(path, 0755) == 0 || errno == EEXIST, "mkdir %s: %s", path,
              strerror(errno));
}

child_result child_run(const char *program, const char *const *env)
{
    return child_run_args(program, NULL, env);
}

child_result child_run_args(const char *program, const char *const *args,
                            const char *const *env)
{
    const char *argv[16] = {NULL};
    size_t      argc     = 1;
    for (; args && args[argc - 1]; argc++)
        cr_assert(argc < sizeof argv / sizeof argv[0] - 1, "too many arguments");
    for (size_t k = 1; k < argc; k++)
        argv[k] = args[k - 1];
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", builddir(), program);
    make_cache_dir();
    int out = temp_file(), err = temp_file();
    fflush(NULL);
    pid_t pid = fork();
    cr_assert(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        for (const char *const *e = env; e && *e; e++) {
            const char *eq = strchr(*e, '=');
            if ((*e)[0] == '-') {
                unsetenv(*e + 1);
            } else if (eq) {
                char name[256];
                snprintf(name, sizeof name, "%.*s", (int)(eq - *e), *e);
                setenv(name, eq + 1, 1);
            }
        }
        dup2(out, STDOUT_FILENO);
        dup2(err, STDERR_FILENO);
        argv[0] = path;
        execv(path, (char *const *)argv);
        fprintf(stderr, "exec %s: %s\n", path, strerror(errno));
        _exit(127);
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0)
        cr_assert_eq(errno, EINTR, "waitpid: %s", strerror(errno));
    child_result r = {
        .status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status),
        .out    = slurp(out, NULL),
        .err    = slurp(err, NULL),
    };
    close(out);
    close(err);
    return r;
}

void child_free(child_result *r)
{
    free(r->out);
    free(r->err);
    r->out = r->err = NULL;
}

void child_temp_dir(char *buf, size_t len)
{
    make_cache_dir();
    int n = snprintf(buf, len, "%s/cache/tmp-XXXXXX", builddir());
    cr_assert(n > 0 && (size_t)n < len, "path too long");
    cr_assert_not_null(mkdtemp(buf), "mkdtemp %s: %s", buf, strerror(errno));
}

static int remove_entry(const char *path, const struct stat *st, int flag,
                        struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

void child_remove_dir(const char *dir)
{
    cr_assert_eq(nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS), 0, "removing %s: %s",
                 dir, strerror(errno));
}

size_t child_dir_entries(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) {
        cr_assert_eq(errno, ENOENT, "opendir %s: %s", dir, strerror(errno));
        return 0;
    }
    size_t         n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        n += strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
    closedir(d);
    return n;
}

char *child_read_file(const char *path, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    cr_assert(fd >= 0, "open %s: %s", path, strerror(errno));
    char *text = slurp(fd, len);
    close(fd);
    return text;
}

size_t runner_outputs(const char *out, runner_output *outputs, size_t cap)
{
    size_t count = 0;
    for (const char *p = strstr(out, "output "); p && count < cap;
         p             = strstr(p, "\noutput ")) {
        if (*p == '\n')
            p++;
        runner_output *o    = &outputs[count];
        int            used = 0;
        cr_assert_eq(sscanf(p, "output %31s %zu%n", o->name, &o->n, &used), 2,
                     "graph_runner printed a bad line: %.40s", p);
        o->v = calloc(o->n ? o->n : 1, sizeof *o->v);
        cr_assert_not_null(o->v, "out of memory");
        p += used;
        for (size_t i = 0; i < o->n; i++) {
            char *end;
            o->v[i] = strtof(p, &end);
            cr_assert(end != p, "graph_runner's output %s has %zu values, not %zu",
                      o->name, i, o->n);
            p = end;
        }
        count++;
    }
    return count;
}

void runner_outputs_free(runner_output *outputs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(outputs[i].v);
}

void runner_expect_same(const char *what, const child_result *got,
                        const child_result *want, double tol)
{
    enum { CAP = 32 };
    runner_output g[CAP], w[CAP];
    size_t ng = runner_outputs(got->out, g, CAP), nw = runner_outputs(want->out, w, CAP);
    cr_assert(nw > 0, "%s: the reference run printed no output:\n%s", what, want->err);
    cr_assert_eq(ng, nw, "%s: %zu outputs, the reference has %zu", what, ng, nw);
    for (size_t k = 0; k < nw; k++) {
        cr_assert_str_eq(g[k].name, w[k].name, "%s: output %zu", what, k);
        cr_assert_eq(g[k].n, w[k].n, "%s: output %s has %zu values, not %zu", what,
                     w[k].name, g[k].n, w[k].n);
        char      label[256];
        ref_shape shape = ref_shape_of(KILN_SHAPE((int64_t)w[k].n));
        snprintf(label, sizeof label, "%.180s: the reference's output %.31s", what,
                 w[k].name);
        ref_expect_finite(label, w[k].v, shape);
        snprintf(label, sizeof label, "%.180s: output %.31s", what, w[k].name);
        ref_expect_close(label, g[k].v, w[k].v, shape, (ref_tol){tol, tol});
    }
    runner_outputs_free(g, ng);
    runner_outputs_free(w, nw);
}

const char *child_asan_runtime(void)
{
    static char path[4096];
#ifdef __SANITIZE_ADDRESS__
    FILE *maps = fopen("/proc/self/maps", "r");
    char  line[4608];
    while (maps && !path[0] && fgets(line, sizeof line, maps)) {
        char *p = strchr(line, '/');
        if (p && strstr(p, "libasan.so")) {
            p[strcspn(p, "\n")] = '\0';
            snprintf(path, sizeof path, "%s", p);
        }
    }
    if (maps)
        fclose(maps);
#endif
    return path;
}
