/* tests/oom_runner.c — kiln when allocations fail, for test_loader.
 *
 * Run under LD_PRELOAD=tests/.libs/malloc-fail.so (tests/malloc-fail.c),
 * with KILN_PLUGIN_PATH naming the cpu plugin. For k = 0, 1, 2, ... a forked
 * child lets k allocations succeed and then refuses the next one (then, in a
 * second pass, every one after it), and checks what kiln did:
 *
 *   KILN_OOM_MODE=load  the refusals start at the process's first kiln call,
 *       kiln_context_new_for("cpu"): it may fail, with a message, but once
 *       memory is back the next call must load the plugins and open the
 *       device (a failed load is tried again), and a graph must run right.
 *   KILN_OOM_MODE=run   a context and a compiled graph first; the refusals
 *       start at kiln_graph_run: it may fail, with a message, but the next
 *       run must be right. Nothing may end the process (glibc ends it with
 *       status 127 when it cannot allocate a dlopen'd module's thread-local
 *       storage).
 *
 * The loop ends at the first k that refuses nothing. The program prints
 * each failed call as "k=K: MODE: CALL failed: MESSAGE" and each broken
 * promise as "k=K: BROKEN: ...", and exits 0 when nothing broke, 1 when
 * something did, 2 when it cannot run (no shim).
 */
#include <kiln/kiln.h>

#include <dlfcn.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* The cap on k: the loops end far below it. */
#define MAX_ALLOCATIONS 20000

/* A child's exit status when it refused nothing: the loop is done. */
#define DONE 3

static void (*arm)(long allow, int persistent);
static long (*disarm)(void);

static const char *mode;
static long        k_now;
static int         persistent_now;

static void note(const char *what, const char *call, const char *msg)
{
    printf("k=%ld%s: %s: %s failed: %s\n", k_now, persistent_now ? "+" : "", what, call,
           msg && *msg ? msg : "(no message)");
}

static void broken(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void broken(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    printf("k=%ld%s: BROKEN: ", k_now, persistent_now ? "+" : "");
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
}

/* ---- the graph: relu(x @ w + b) and a convolution ------------------------ */

enum { M = 6, K = 40, N = 24, IN = 4, C = 2, H = 7, O = 3 };

typedef struct model {
    kiln_graph  *g;
    kiln_tensor *x, *w, *b, *y, *img, *filt, *conv;
} model;

static float value(unsigned i)
{
    return (float)((i * 2654435761u) % 1000u) / 500.0f - 1.0f;
}

static bool fill(kiln_tensor *t, unsigned seed)
{
    float  v[IN * C * H * H + K * N];
    size_t n = (size_t)kiln_tensor_numel(t);
    for (size_t i = 0; i < n; i++)
        v[i] = value(seed + (unsigned)i);
    return kiln_tensor_write(t, v, n * sizeof *v) == KILN_OK;
}

static bool model_new(kiln_context *ctx, model *m)
{
    memset(m, 0, sizeof *m);
    m->g = kiln_graph_new(ctx);
    if (!m->g)
        return false;
    m->x    = kiln_input(m->g, "x", KILN_F32, KILN_SHAPE(M, K));
    m->w    = kiln_input(m->g, "w", KILN_F32, KILN_SHAPE(K, N));
    m->b    = kiln_input(m->g, "b", KILN_F32, KILN_SHAPE(N));
    m->y    = kiln_relu(m->g, kiln_add(m->g, kiln_matmul(m->g, m->x, m->w), m->b));
    m->img  = kiln_input(m->g, "img", KILN_F32, KILN_SHAPE(IN, C, H, H));
    m->filt = kiln_input(m->g, "filt", KILN_F32, KILN_SHAPE(O, C, 3, 3));
    m->conv = kiln_conv2d(m->g, m->img, m->filt, NULL, 1, 1);
    return kiln_graph_compile(m->g) == KILN_OK && fill(m->x, 1) && fill(m->w, 2) &&
           fill(m->b, 3) && fill(m->img, 4) && fill(m->filt, 5);
}

static bool close_to(float got, double want)
{
    return fabs(got - want) <= 1e-4 * (1.0 + fabs(want));
}

/* y[i][j] and conv[n][o][r][c] from the formulas, in double. */
static double y_want(int i, int j)
{
    double s = value(3 + (unsigned)j);
    for (int p = 0; p < K; p++)
        s += (double)value(1 + (unsigned)(i * K + p)) * value(2 + (unsigned)(p * N + j));
    return s > 0 ? s : 0;
}

static double conv_want(int n, int o, int r, int c)
{
    double s = 0;
    for (int ch = 0; ch < C; ch++)
        for (int dr = 0; dr < 3; dr++)
            for (int dc = 0; dc < 3; dc++) {
                int rr = r + dr - 1, cc = c + dc - 1;
                if (rr < 0 || rr >= H || cc < 0 || cc >= H)
                    continue;
                unsigned xi = (unsigned)(((n * C + ch) * H + rr) * H + cc);
                unsigned wi = (unsigned)(((o * C + ch) * 3 + dr) * 3 + dc);
                s += (double)value(4 + xi) * value(5 + wi);
            }
    return s;
}

/* Whether the outputs are those of the formulas. */
static bool model_right(const model *m)
{
    float y[M * N], conv[IN * O * H * H];
    if (kiln_tensor_read(m->y, y, sizeof y) != KILN_OK ||
        kiln_tensor_read(m->conv, conv, sizeof conv) != KILN_OK)
        return false;
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++)
            if (!close_to(y[i * N + j], y_want(i, j)))
                return false;
    for (int n = 0; n < IN; n++)
        for (int o = 0; o < O; o++)
            for (int r = 0; r < H; r++)
                for (int c = 0; c < H; c++)
                    if (!close_to(conv[((n * O + o) * H + r) * H + c],
                                  conv_want(n, o, r, c)))
                        return false;
    return true;
}

/* ---- one child ----------------------------------------------------------- */

/* Memory is back: the cpu device opens, and the model runs right. */
static int recovers(kiln_context *ctx)
{
    if (!ctx)
        ctx = kiln_context_new_for("cpu");
    if (!ctx) {
        broken("with memory back, kiln_context_new_for(\"cpu\") still fails: %s",
               kiln_last_error());
        return 1;
    }
    model m;
    if (!model_new(ctx, &m)) {
        broken("with memory back, the graph does not build: %s", kiln_last_error());
        return 1;
    }
    if (kiln_graph_run(m.g) != KILN_OK) {
        broken("with memory back, kiln_graph_run fails: %s", kiln_last_error());
        return 1;
    }
    if (!model_right(&m)) {
        broken("with memory back, the graph's outputs are wrong");
        return 1;
    }
    kiln_graph_free(m.g);
    kiln_context_free(ctx);
    return 0;
}

static int child_load(long k, int persistent)
{
    arm(k, persistent);
    kiln_context *ctx     = kiln_context_new_for("cpu");
    long          refused = disarm();
    if (!ctx)
        note("load", "kiln_context_new_for(\"cpu\")", kiln_last_error());
    int st = recovers(ctx);
    return st ? st : refused ? 0 : DONE;
}

static int child_run(long k, int persistent)
{
    kiln_context *ctx = kiln_context_new_for("cpu");
    model         m;
    if (!ctx || !model_new(ctx, &m)) {
        broken("cannot set up: %s", kiln_last_error());
        return 1;
    }
    arm(k, persistent);
    kiln_status st      = kiln_graph_run(m.g);
    long        refused = disarm();
    if (st != KILN_OK)
        note("run", "kiln_graph_run", kiln_last_error());
    else if (!model_right(&m)) {
        broken("kiln_graph_run succeeded with wrong outputs");
        return 1;
    }
    if (kiln_graph_run(m.g) != KILN_OK || !model_right(&m)) {
        broken("with memory back, the graph does not run right: %s", kiln_last_error());
        return 1;
    }
    kiln_graph_free(m.g);
    kiln_context_free(ctx);
    return refused ? 0 : DONE;
}

/* ---- the loop ------------------------------------------------------------- */

/* Runs one child; returns its status, or -1 once k refused nothing. */
static int one(long k, int persistent, bool *bad)
{
    k_now          = k;
    persistent_now = persistent;
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        perror("oom_runner: fork");
        exit(2);
    }
    if (pid == 0) {
        int st = strcmp(mode, "load") == 0 ? child_load(k, persistent)
                                           : child_run(k, persistent);
        fflush(NULL);
        _exit(st);
    }
    int status;
    while (waitpid(pid, &status, 0) < 0)
        ;
    if (WIFEXITED(status) && WEXITSTATUS(status) == DONE)
        return -1;
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
        return 0;
    *bad = true;
    if (WIFSIGNALED(status))
        printf("k=%ld%s: BROKEN: killed by signal %d (%s)\n", k, persistent ? "+" : "",
               WTERMSIG(status), strsignal(WTERMSIG(status)));
    else if (WEXITSTATUS(status) != 1)
        printf("k=%ld%s: BROKEN: exited with status %d\n", k, persistent ? "+" : "",
               WEXITSTATUS(status));
    return 0;
}

int main(void)
{
    mode = getenv("KILN_OOM_MODE");
    if (!mode || (strcmp(mode, "load") != 0 && strcmp(mode, "run") != 0)) {
        fprintf(stderr, "oom_runner: set KILN_OOM_MODE to load or run\n");
        return 2;
    }
    void *a = dlsym(RTLD_DEFAULT, "kiln_test_malloc_arm");
    void *d = dlsym(RTLD_DEFAULT, "kiln_test_malloc_disarm");
    if (!a || !d) {
        fprintf(stderr, "oom_runner: run me with LD_PRELOAD=.../malloc-fail.so\n");
        return 2;
    }
    memcpy(&arm, &a, sizeof a);
    memcpy(&disarm, &d, sizeof d);
    /* stdout's buffer, before any allocation can fail */
    printf("oom_runner: mode %s\n", mode);

    bool bad   = false;
    long tried = 0;
    for (int persistent = 0; persistent <= 1; persistent++) {
        long k = 0;
        while (k < MAX_ALLOCATIONS && one(k, persistent, &bad) == 0)
            k++;
        if (k == MAX_ALLOCATIONS) {
            printf("BROKEN: allocations still refused at k=%ld\n", k);
            bad = true;
        }
        tried += k;
    }
    printf("oom_runner: %ld children, %s\n", tried, bad ? "something broke" : "all fine");
    return bad ? 1 : 0;
}
