/* tests/backends.c — which devices the tests run on. */
#include "backends.h"

#include <kiln/backend.h>

#include <dlfcn.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Plugins that exist only to test the loader; they compute nothing real. */
static bool is_test_plugin(const char *name)
{
    return strcmp(name, "good") == 0 || strcmp(name, "example") == 0;
}

size_t test_cpu_isas(const char *isas[3])
{
    size_t n  = 0;
    isas[n++] = "scalar";
#if defined(__x86_64__)
    /* libgcc checks XCR0 too: a feature the OS does not enable is not listed */
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        isas[n++] = "avx2";
    if (__builtin_cpu_supports("avx512f"))
        isas[n++] = "avx512";
#endif
    return n;
}

static void add_backend(test_backend *out, size_t cap, size_t *count,
                        const kiln_device_report *d, const char *isa)
{
    if (*count < cap) {
        test_backend *b = &out[*count];
        snprintf(b->spec, sizeof b->spec, "%s:%d", d->backend, d->index);
        snprintf(b->isa, sizeof b->isa, "%s", isa ? isa : "");
        if (isa)
            snprintf(b->label, sizeof b->label, "%s (KILN_CPU_ISA=%s)", b->spec, isa);
        else
            snprintf(b->label, sizeof b->label, "%s", b->spec);
    }
    (*count)++;
}

/* KILN_TEST_BACKENDS=opencl[,...] limits the list to those backends (a run
 * that only changes one backend's behaviour, as test_no_fp64.sh does). */
static bool wanted(const char *backend)
{
    const char *only = getenv("KILN_TEST_BACKENDS");
    if (!only || !*only)
        return true;
    size_t n = strlen(backend);
    for (const char *p = only; *p;) {
        size_t len = strcspn(p, ",");
        if (len == n && strncmp(p, backend, n) == 0)
            return true;
        p += len + (p[len] == ',');
    }
    return false;
}

size_t test_backend_list(test_backend *out, size_t cap)
{
    const kiln_device_report *devices = NULL;
    size_t                    n       = kiln_devices(&devices);
    size_t                    count   = 0;
    const char               *isas[3];
    size_t                    n_isas = test_cpu_isas(isas);

    for (size_t i = 0; i < n; i++) {
        const kiln_device_report *d = &devices[i];
        if (d->unusable != NULL || d->backend == NULL || is_test_plugin(d->backend) ||
            !wanted(d->backend))
            continue;
        if (strcmp(d->backend, "cpu") != 0) {
            add_backend(out, cap, &count, d, NULL);
            continue;
        }
        for (size_t k = 0; k < n_isas; k++)
            add_backend(out, cap, &count, d, isas[k]);
    }
    return count;
}

static void free_backend_params(struct criterion_test_params *params)
{
    cr_free(params->params);
}

/* Runs in Criterion's runner, before any test, where asserting is not allowed:
 * problems are printed, and the tests themselves fail (see test_context). */
struct criterion_test_params test_backend_params(void)
{
    size_t        n      = test_backend_list(NULL, 0);
    size_t        len    = n ? n : 1;
    test_backend *params = cr_malloc(len * sizeof *params);
    if (params == NULL) {
        fprintf(stderr, "kiln tests: cr_malloc of %zu backend parameters failed\n", len);
        abort();
    }
    memset(params, 0, len * sizeof *params);
    test_backend_list(params, n);
    if (n == 0)
        fprintf(stderr,
                "kiln tests: no usable device (KILN_PLUGIN_PATH=%s); "
                "every backend test will fail\n",
                getenv("KILN_PLUGIN_PATH") ? getenv("KILN_PLUGIN_PATH") : "(unset)");
    return cr_make_param_array(test_backend, params, len, free_backend_params);
}

/* "path (name): reason; ..." for every plugin the loader tried. */
static const char *describe_plugins(void)
{
    static char               buf[2048];
    const kiln_plugin_report *reports = NULL;
    size_t                    n       = kiln_plugins(&reports);
    size_t used = (size_t)snprintf(buf, sizeof buf, "%zu plugin file(s) tried", n);

    for (size_t i = 0; i < n && used < sizeof buf; i++)
        used += (size_t)snprintf(buf + used, sizeof buf - used, "; %s (%s): %s",
                                 reports[i].path ? reports[i].path : "?",
                                 reports[i].name ? reports[i].name : "unnamed",
                                 reports[i].reason ? reports[i].reason : "usable");
    return buf;
}

kiln_context *test_context(const char *spec)
{
    cr_assert(spec != NULL && spec[0] != '\0',
              "no usable kiln device to test (KILN_PLUGIN_PATH=%s): %s",
              getenv("KILN_PLUGIN_PATH") ? getenv("KILN_PLUGIN_PATH") : "(unset)",
              describe_plugins());
    kiln_context *ctx = kiln_context_new_for(spec);
    cr_assert_not_null(ctx, "kiln_context_new_for(\"%s\") failed: %s", spec,
                       kiln_last_error());
    return ctx;
}

kiln_context *test_backend_context(const test_backend *b)
{
    if (b->isa[0] != '\0')
        cr_assert_eq(setenv("KILN_CPU_ISA", b->isa, 1), 0, "setenv KILN_CPU_ISA=%s",
                     b->isa);
    return test_context(b->spec);
}

const char *test_first_spec(void)
{
    static test_backend first;
    size_t              n = test_backend_list(&first, 1);
    cr_assert(n > 0, "no usable kiln device to test (KILN_PLUGIN_PATH=%s): %s",
              getenv("KILN_PLUGIN_PATH") ? getenv("KILN_PLUGIN_PATH") : "(unset)",
              describe_plugins());
    return first.spec;
}

const kiln_plugin *test_backend_plugin(const test_backend *b, int *index)
{
    const char *colon = strrchr(b->spec, ':');
    char       *end   = NULL;
    long        k     = colon ? strtol(colon + 1, &end, 10) : -1;
    cr_assert(colon && colon > b->spec && end != colon + 1 && *end == '\0' && k >= 0 &&
                  k <= INT_MAX,
              "test bug: \"%s\" is not a name:index spec", b->spec);
    *index = (int)k;

    const kiln_plugin_report *r   = NULL;
    size_t                    n   = kiln_plugins(&r);
    size_t                    len = (size_t)(colon - b->spec);
    for (size_t i = 0; i < n; i++) {
        if (r[i].reason || !r[i].name || strlen(r[i].name) != len ||
            strncmp(r[i].name, b->spec, len) != 0)
            continue;
        /* RTLD_NOLOAD: kiln's copy, never a second one */
        void *h = dlopen(r[i].path, RTLD_NOW | RTLD_LOCAL | RTLD_NOLOAD);
        cr_assert_not_null(h, "%s: kiln's plugin %s is not loaded: %s", b->label,
                           r[i].path, dlerror());
        void *sym = dlsym(h, KILN_BACKEND_ENTRY_SYMBOL);
        cr_assert_not_null(sym, "%s: %s has no " KILN_BACKEND_ENTRY_SYMBOL, b->label,
                           r[i].path);
        kiln_backend_entry_fn entry;
        memcpy(&entry, &sym, sizeof entry); /* object to function pointer */
        const kiln_plugin *p = entry();
        cr_assert(p && p->abi_version == KILN_BACKEND_ABI_VERSION,
                  "%s: %s returned no table of ABI version %u", b->label, r[i].path,
                  (unsigned)KILN_BACKEND_ABI_VERSION);
        dlclose(h); /* kiln's loader keeps it loaded */
        return p;
    }
    cr_assert_fail("%s: kiln has no usable plugin for it: %s", b->label,
                   describe_plugins());
    return NULL;
}

void test_need_opencl(void)
{
    const kiln_device_report *d;
    size_t                    nd = kiln_devices(&d);
    for (size_t i = 0; i < nd; i++)
        if (strcmp(d[i].backend, "opencl") == 0 && !d[i].unusable)
            return;
    cr_skip_test("no usable OpenCL device");
}
