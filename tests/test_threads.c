/* tests/test_threads.c — contexts on two threads at once.
 *
 * kiln promises that contexts are independent and that two of them on two
 * threads work (STYLE.md): the registry is loaded once under a lock, errors
 * are per thread, and each device is called from one thread at a time. Here
 * a cpu context and an OpenCL one (two cpu contexts where OpenCL has no
 * device) each train a small MLP on a thread of their own, at the same time,
 * and must end with the very weights the same training gives on one thread,
 * one context after the other. Built with --enable-tsan, the same test is
 * ThreadSanitizer's view of kiln's locking.
 *
 * A plain program, not a Criterion suite: Criterion cannot start under
 * ThreadSanitizer ("Could not initialize inheritable arena", Criterion issue
 * 274), and this is the test that must run there. Exit status 0, or 1 after
 * saying on stderr what differed.
 */
#include <kiln/kiln.h>

#include <pthread.h>
#include <stdio.h>
#include <string.h>

static int failures;

#define CHECK(cond, ...)                                            \
    do {                                                            \
        if (!(cond)) {                                              \
            fprintf(stderr, "test_threads: %s:%d: ", __FILE__, __LINE__); \
            fprintf(stderr, __VA_ARGS__);                           \
            fputc('\n', stderr);                                    \
            failures++;                                             \
        }                                                           \
    } while (0)

enum { BATCH = 16, IN = 12, HIDDEN = 24, OUT = 5, STEPS = 20, MAX_W = IN * HIDDEN };

typedef struct training {
    char        spec[64];
    float       w[MAX_W]; /* fc1.weight after training */
    char        error[512];
    kiln_status status;
} training;

/* The same data for every run: a fixed generator. */
static float value(unsigned *s)
{
    *s = *s * 1103515245u + 12345u;
    return (float)((*s >> 8) & 0xffff) / 32768.0f - 1.0f;
}

static kiln_status fail(training *t, const char *what)
{
    snprintf(t->error, sizeof t->error, "%s on %s: %s", what, t->spec, kiln_last_error());
    return t->status = KILN_ERR_BACKEND;
}

/* A 12-24-5 MLP trained with SGD for STEPS steps on t->spec. */
static kiln_status train(training *t)
{
    kiln_context *ctx = kiln_context_new_for(t->spec);
    if (!ctx)
        return fail(t, "kiln_context_new_for");
    kiln_graph *g = kiln_graph_new(ctx);
    kiln_graph_seed(g, 7);
    kiln_tensor *x      = kiln_input(g, "x", KILN_F32, KILN_SHAPE(BATCH, IN));
    kiln_tensor *y      = kiln_input(g, "y", KILN_I32, KILN_SHAPE(BATCH));
    kiln_tensor *h      = kiln_relu(g, kiln_dense(g, x, HIDDEN, "fc1"));
    kiln_tensor *logits = kiln_dense(g, h, OUT, "fc2");
    kiln_tensor *loss   = kiln_cross_entropy(g, logits, y);
    kiln_status  st     = kiln_backward(g, loss);
    if (st == KILN_OK && !kiln_sgd(g, 0.05f, 0.9f, 0.0f))
        st = KILN_ERR_BACKEND;
    if (st == KILN_OK)
        st = kiln_graph_compile(g);
    unsigned s = 1;
    float    xs[BATCH * IN];
    int32_t  ys[BATCH];
    for (int step = 0; st == KILN_OK && step < STEPS; step++) {
        for (int i = 0; i < BATCH * IN; i++)
            xs[i] = value(&s);
        for (int i = 0; i < BATCH; i++)
            ys[i] = (int32_t)((s >> 4) % OUT + (unsigned)i) % OUT;
        st = kiln_tensor_write(x, xs, sizeof xs);
        if (st == KILN_OK)
            st = kiln_tensor_write(y, ys, sizeof ys);
        if (st == KILN_OK)
            st = kiln_graph_run(g);
    }
    if (st == KILN_OK)
        st = kiln_tensor_read(kiln_graph_find(g, "fc1.weight"), t->w, sizeof t->w);
    if (st != KILN_OK)
        fail(t, "training");
    kiln_graph_free(g);
    kiln_context_free(ctx);
    return t->status = st;
}

static void *train_thread(void *arg)
{
    train(arg);
    return NULL;
}

/* "cpu:0" and the first usable OpenCL device, or a second "cpu:0" without
 * one. */
static void pick_specs(training t[2])
{
    const kiln_device_report *devices;
    size_t                    n = kiln_devices(&devices);
    snprintf(t[0].spec, sizeof t[0].spec, "cpu:0");
    snprintf(t[1].spec, sizeof t[1].spec, "cpu:0");
    for (size_t i = 0; i < n; i++)
        if (strcmp(devices[i].backend, "opencl") == 0 && !devices[i].unusable) {
            snprintf(t[1].spec, sizeof t[1].spec, "opencl:%d", devices[i].index);
            break;
        }
}

static void two_contexts_on_two_threads_train_as_they_do_alone(void)
{
    training together[2] = { 0 }, alone[2] = { 0 };
    pick_specs(together);
    pick_specs(alone);
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        if (pthread_create(&th[i], NULL, train_thread, &together[i]) != 0) {
            CHECK(0, "pthread_create failed");
            return;
        }
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < 2; i++) {
        CHECK(together[i].status == KILN_OK, "%s", together[i].error);
        CHECK(train(&alone[i]) == KILN_OK, "%s", alone[i].error);
        CHECK(memcmp(together[i].w, alone[i].w, sizeof together[i].w) == 0,
              "%s trained on a thread beside another context differs from the same "
              "training alone", together[i].spec);
    }
    printf("trained on %s and %s at once, as alone\n", together[0].spec,
           together[1].spec);
}

/* Errors are per thread: a failure on one thread leaves another thread's
 * kiln_last_error alone. */
static void *fail_thread(void *arg)
{
    char         *msg = arg; /* 256 bytes: the thread's own error outlives it here */
    kiln_context *ctx = kiln_context_new_for("no-such-backend");
    snprintf(msg, 256, "%s", ctx ? "(no error)" : kiln_last_error());
    kiln_context_free(ctx);
    return NULL;
}

static void last_error_belongs_to_the_thread_that_failed(void)
{
    kiln_status st = kiln_select("also-no-such-backend", &(size_t){ 0 });
    CHECK(st != KILN_OK, "kiln_select of a backend that does not exist succeeded");
    char mine[256];
    snprintf(mine, sizeof mine, "%s", kiln_last_error());
    pthread_t th;
    char      theirs[256] = "";
    if (pthread_create(&th, NULL, fail_thread, theirs) != 0) {
        CHECK(0, "pthread_create failed");
        return;
    }
    pthread_join(th, NULL);
    CHECK(strstr(theirs, "no-such-backend") != NULL, "the thread's error: %s", theirs);
    CHECK(strcmp(kiln_last_error(), mine) == 0, "this thread's error became \"%s\"",
          kiln_last_error());
    CHECK(strstr(mine, "also-no-such-backend") != NULL, "this thread's error: %s", mine);
}

int main(void)
{
    two_contexts_on_two_threads_train_as_they_do_alone();
    last_error_belongs_to_the_thread_that_failed();
    return failures ? 1 : 0;
}
