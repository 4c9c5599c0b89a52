/* pool.c — the device's worker threads.
 *
 * A pool of n threads is n - 1 workers plus the thread that calls
 * cpu_pool_run, which takes part as thread 0; so a device never runs more
 * threads than it was given. Idle workers sleep on a condition variable and
 * cost nothing. The caller, once its own share is done, spins for a few
 * microseconds before it sleeps too: the others usually finish within that
 * time, and a futex round trip would cost more than the wait.
 *
 * One job at a time: kiln calls a device from one thread at a time (backend.h),
 * and a job never starts another on the same pool (workers run nested GEMMs
 * serially, see gemm.c).
 *
 * No thread-local state: glibc allocates a dlopen'd module's thread-local
 * storage on each thread's first use and ends the process when it cannot.
 * Whether a job runs is the pool's own flag, set by the caller around the
 * job; which thread of the job a thread is, pthread_self against the ids the
 * pool keeps (cpu_pool_tid), asked only inside a job.
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

#include "cpu-impl.h"

#if defined(__x86_64__) || defined(__i386__)
#define cpu_relax() __builtin_ia32_pause()
#else
#define cpu_relax() ((void)0)
#endif

/* How long the caller spins for the workers before it sleeps (pause loops). */
#define CPU_POOL_SPIN 4000
/* How long a worker watches for the next job before it sleeps. */
#define CPU_POOL_LINGER_NS 100000L

struct cpu_pool {
    int             n;       /* threads, the caller included           */
    pthread_t      *threads; /* n - 1 workers                          */
    int             started; /* workers created                        */
    pthread_mutex_t mu;
    pthread_cond_t  wake; /* workers wait here for a job            */
    pthread_cond_t  done; /* the caller waits here for the workers  */
    atomic_ulong    gen;  /* bumped for each job (under mu)         */
    bool            stop;
    cpu_task_fn     fn;
    void           *arg;
    int             want;      /* threads in the current job             */
    atomic_int      remaining; /* workers of the job not finished yet    */
    atomic_bool     running;   /* a job runs: set by its caller          */
    pthread_t       caller;    /* the thread that runs it as tid 0       */
};

typedef struct cpu_worker_arg {
    cpu_pool *pool;
    int       tid;
} cpu_worker_arg;

static void cpu_worker_finish(cpu_pool *p)
{
    if (atomic_fetch_sub_explicit(&p->remaining, 1, memory_order_acq_rel) == 1) {
        pthread_mutex_lock(&p->mu);
        pthread_cond_signal(&p->done);
        pthread_mutex_unlock(&p->mu);
    }
}

static long cpu_elapsed_ns(const struct timespec *t0)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (t.tv_sec - t0->tv_sec) * 1000000000L + (t.tv_nsec - t0->tv_nsec);
}

/* Spins until the pool's generation moves past seen, for at most
 * CPU_POOL_LINGER_NS; the worker then takes the lock either way. It yields
 * now and then: when the machine is busier than the pool is wide, the thread
 * it waits for may be queued on this very CPU. */
static void cpu_worker_linger(cpu_pool *p, unsigned long seen)
{
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 1;; i++) {
        if (atomic_load_explicit(&p->gen, memory_order_acquire) != seen)
            return;
        cpu_relax();
        if (i % 64 == 0) {
            if (cpu_elapsed_ns(&t0) > CPU_POOL_LINGER_NS)
                return;
            sched_yield();
        }
    }
}

static void *cpu_worker(void *varg)
{
    cpu_worker_arg *wa   = varg;
    cpu_pool       *p    = wa->pool;
    int             tid  = wa->tid;
    unsigned long   seen = 0;
    free(wa);

    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->stop && atomic_load(&p->gen) == seen)
            pthread_cond_wait(&p->wake, &p->mu);
        if (p->stop)
            break;
        seen = atomic_load(&p->gen);
        if (tid >= p->want)
            continue; /* not needed this time: back to sleep */
        cpu_task_fn fn   = p->fn;
        void       *arg  = p->arg;
        int         want = p->want;
        pthread_mutex_unlock(&p->mu);
        fn(arg, tid, want);
        cpu_worker_finish(p);
        cpu_worker_linger(p, seen);
        pthread_mutex_lock(&p->mu);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

static void cpu_pool_stop(cpu_pool *p)
{
    pthread_mutex_lock(&p->mu);
    p->stop = true;
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->started; i++)
        pthread_join(p->threads[i], NULL);
}

cpu_pool *cpu_pool_new(int n, int *error)
{
    *error      = ENOMEM;
    cpu_pool *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->n = n;
    atomic_init(&p->remaining, 0);
    atomic_init(&p->gen, 0);
    atomic_init(&p->running, false);
    p->threads = calloc((size_t)(n > 1 ? n - 1 : 1), sizeof *p->threads);
    if (!p->threads || pthread_mutex_init(&p->mu, NULL) != 0) {
        free(p->threads);
        free(p);
        return NULL;
    }
    if ((*error = pthread_cond_init(&p->wake, NULL)) != 0 ||
        (*error = pthread_cond_init(&p->done, NULL)) != 0) {
        pthread_mutex_destroy(&p->mu);
        free(p->threads);
        free(p);
        return NULL;
    }
    for (int t = 1; t < n; t++) {
        cpu_worker_arg *wa = malloc(sizeof *wa);
        if (wa) {
            wa->pool = p;
            wa->tid  = t;
        }
        *error = wa ? pthread_create(&p->threads[t - 1], NULL, cpu_worker, wa) : ENOMEM;
        if (*error != 0) {
            free(wa);
            cpu_pool_free(p);
            return NULL;
        }
        p->started++;
    }
    *error = 0;
    return p;
}

void cpu_pool_free(cpu_pool *p)
{
    if (!p)
        return;
    cpu_pool_stop(p);
    pthread_cond_destroy(&p->wake);
    pthread_cond_destroy(&p->done);
    pthread_mutex_destroy(&p->mu);
    free(p->threads);
    free(p);
}

int cpu_pool_size(const cpu_pool *p)
{
    return p ? p->n : 1;
}

/* Only the threads of a running job see running set: its caller set it
 * before it published the job, and clears it after every worker finished.
 * Any other thread calling here would break the one-caller rule above. */
int cpu_pool_tid(const cpu_pool *p)
{
    if (!p || !atomic_load_explicit(&p->running, memory_order_relaxed))
        return -1;
    pthread_t self = pthread_self();
    if (pthread_equal(self, p->caller))
        return 0;
    for (int i = 0; i < p->started; i++)
        if (pthread_equal(self, p->threads[i]))
            return i + 1;
    return -1;
}

/* Waits until every worker of the job has finished. */
static void cpu_pool_wait(cpu_pool *p)
{
    for (int i = 1; i <= CPU_POOL_SPIN; i++) {
        if (atomic_load_explicit(&p->remaining, memory_order_acquire) == 0)
            return;
        cpu_relax();
        if (i % 64 == 0)
            sched_yield(); /* a worker may be waiting for this CPU */
    }
    pthread_mutex_lock(&p->mu);
    while (atomic_load_explicit(&p->remaining, memory_order_acquire) > 0)
        pthread_cond_wait(&p->done, &p->mu);
    pthread_mutex_unlock(&p->mu);
}

void cpu_pool_run(cpu_pool *p, int n, cpu_task_fn fn, void *arg)
{
    if (!p || n > p->n)
        n = p ? p->n : 1;
    /* a job inside a job (or on one thread) runs on the calling thread */
    if (n <= 1 || atomic_load_explicit(&p->running, memory_order_relaxed)) {
        fn(arg, 0, 1);
        return;
    }
    pthread_mutex_lock(&p->mu);
    p->fn     = fn;
    p->arg    = arg;
    p->want   = n;
    p->caller = pthread_self();
    atomic_store_explicit(&p->running, true, memory_order_relaxed);
    atomic_store_explicit(&p->remaining, n - 1, memory_order_relaxed);
    atomic_fetch_add(&p->gen, 1); /* publishes the job and the flag */
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);

    fn(arg, 0, n);
    cpu_pool_wait(p);
    atomic_store_explicit(&p->running, false, memory_order_relaxed);
}

/* ---- parallel loops --------------------------------------------------------- */

typedef struct cpu_range_job {
    cpu_range_fn fn;
    void        *arg;
    size_t       n, align;
} cpu_range_job;

static void cpu_range_task(void *varg, int tid, int nt)
{
    const cpu_range_job *job = varg;
    size_t               lo, hi;
    cpu_split(job->n, job->align, tid, nt, &lo, &hi);
    if (lo < hi)
        job->fn(job->arg, lo, hi);
}

void cpu_split(size_t n, size_t align, int tid, int nt, size_t *lo, size_t *hi)
{
    size_t units = (n + align - 1) / align;
    size_t per = units / (size_t)nt, extra = units % (size_t)nt;
    size_t u0 = (size_t)tid * per + ((size_t)tid < extra ? (size_t)tid : extra);
    size_t u1 = u0 + per + ((size_t)tid < extra ? 1 : 0);
    *lo       = u0 * align < n ? u0 * align : n;
    *hi       = u1 * align < n ? u1 * align : n;
}

void cpu_parallel_for(const cpu_device *dev, size_t n, size_t align, size_t grain,
                      cpu_range_fn fn, void *arg)
{
    size_t chunks = grain ? n / grain : n;
    int    nt     = cpu_pool_size(dev->pool);
    if ((size_t)nt > chunks)
        nt = chunks > 0 ? (int)chunks : 1;
    if (nt <= 1) {
        if (n > 0)
            fn(arg, 0, n);
        return;
    }
    cpu_range_job job = {fn, arg, n, align ? align : 1};
    cpu_pool_run(dev->pool, nt, cpu_range_task, &job);
}
