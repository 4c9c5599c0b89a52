/* tests/malloc-fail.c — an allocator that fails on request, for the
 * out-of-memory tests (tests/oom_runner.c, run by test_loader).
 *
 * Preloaded (LD_PRELOAD=tests/.libs/malloc-fail.so), it takes the place of
 * malloc, calloc, realloc and the aligned allocators for the whole process:
 * libkiln, the plugins, and the dynamic loader itself (dlopen's link maps,
 * the dynamic TLS of a dlopen'd module), which calls the program's malloc
 * once the process has started. Each call goes to glibc's own allocator
 * (__libc_malloc and the rest, which glibc exports) unless the test armed
 * a failure: kiln_test_malloc_arm(allow, persistent) lets `allow` more
 * allocations succeed, then refuses the next one (persistent = 0) or every
 * one after it (persistent = 1), as a process that runs out of memory would
 * see; kiln_test_malloc_disarm() ends it and says how many were refused.
 * The program finds both with dlsym, so it runs without the shim too.
 *
 * Unarmed it changes nothing, so that the shell of a libtool wrapper, which
 * inherits LD_PRELOAD, runs as usual. It cannot be used with
 * AddressSanitizer, whose allocator must come first: the tests skip there.
 */
#include <errno.h>
#include <stdatomic.h>
#include <stddef.h>

#define SHIM_API __attribute__((visibility("default")))

void *__libc_malloc(size_t size);
void *__libc_calloc(size_t n, size_t size);
void *__libc_realloc(void *p, size_t size);
void *__libc_memalign(size_t alignment, size_t size);

/* Allocations left before the refusals start; -1: unarmed. */
static atomic_long allowed = -1;
static atomic_int  keep_refusing;
static atomic_long refused;

/* Whether this allocation fails. */
static int refuse(void)
{
    long left = atomic_load(&allowed);
    for (;;) {
        if (left < 0)
            return 0;
        if (left == 0) {
            if (!atomic_load(&keep_refusing))
                atomic_store(&allowed, -1);
            atomic_fetch_add(&refused, 1);
            errno = ENOMEM;
            return 1;
        }
        if (atomic_compare_exchange_weak(&allowed, &left, left - 1))
            return 0;
    }
}

SHIM_API void kiln_test_malloc_arm(long allow, int persistent)
{
    atomic_store(&refused, 0);
    atomic_store(&keep_refusing, persistent != 0);
    atomic_store(&allowed, allow < 0 ? 0 : allow);
}

SHIM_API long kiln_test_malloc_disarm(void)
{
    atomic_store(&allowed, -1);
    return atomic_load(&refused);
}

SHIM_API void *malloc(size_t size)
{
    return refuse() ? NULL : __libc_malloc(size);
}

SHIM_API void *calloc(size_t n, size_t size)
{
    return refuse() ? NULL : __libc_calloc(n, size);
}

SHIM_API void *realloc(void *p, size_t size)
{
    /* realloc(p, 0) frees p: no allocation to refuse */
    return p && size == 0 ? __libc_realloc(p, 0)
           : refuse()     ? NULL
                          : __libc_realloc(p, size);
}

SHIM_API void *memalign(size_t alignment, size_t size)
{
    return refuse() ? NULL : __libc_memalign(alignment, size);
}

SHIM_API void *aligned_alloc(size_t alignment, size_t size)
{
    return memalign(alignment, size);
}

SHIM_API int posix_memalign(void **out, size_t alignment, size_t size)
{
    if (alignment % sizeof(void *) != 0 || (alignment & (alignment - 1)) != 0)
        return EINVAL;
    int   saved = errno; /* posix_memalign reports, it does not set errno */
    void *p     = memalign(alignment, size);
    errno       = saved;
    if (!p)
        return ENOMEM;
    *out = p;
    return 0;
}
