/* tools/bench/compare_clblast.c — CLBlast's CLBlastSgemm, called directly,
 * as the reference for kiln's OpenCL backend (kiln-bench --compare clblast).
 *
 * Which device: the device kiln's context runs on, when that is an OpenCL
 * device (kiln_context_device_index); else the first usable OpenCL device
 * kiln lists. KILN_BENCH_CL_DEVICE=TEXT picks another, as
 * KILN_BACKEND=opencl:TEXT would (an index, or part of the device's name or
 * description, which begins with its platform's name). So
 * `KILN_BACKEND=opencl:1 kiln-bench --compare clblast` compares kiln and
 * CLBlast on one device.
 *
 * kiln's report names the device; the loader's device is the one of that
 * name, the n-th of that name for the n-th kiln lists: kiln orders OpenCL
 * devices by type and memory, then as the loader does, so devices that
 * share a name (and their memory) are in the same order in both.
 *
 * Same parameters: CLBlast keeps its kernel parameters per device for the
 * whole process, and kiln's OpenCL backend sets them (a verified Xgemm set
 * on CPU devices) when it opens the device. Run kiln's side first, or open
 * a kiln context on the device before timing this one, and both use the
 * same kernels; then the difference is kiln's own overhead.
 *
 * run() times one complete CLBlastSgemm and clFinish on this file's own
 * context and queue, with A and B already on the device.
 *
 * The OpenCL ICD loader (libOpenCL.so.1, Debian's ocl-icd-libopencl1) and
 * CLBlast (libclblast.so.1, libclblast1) are loaded with dlopen when the
 * reference is opened, so that kiln-bench neither links them nor, as a
 * package, depends on them for a reference. The headers give the types
 * only. Where kiln's OpenCL backend has loaded them already, dlopen returns
 * the same copies, so CLBlast's parameters are shared as above.
 */
#define CL_TARGET_OPENCL_VERSION 120
#include "compare.h"

#include <clblast_c.h>
#include <kiln/kiln.h>

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Every entry point this file calls, by the library that has it. */
#define OPENCL_CALLS(X)      \
    X(clGetPlatformIDs)      \
    X(clGetDeviceIDs)        \
    X(clGetDeviceInfo)       \
    X(clCreateContext)       \
    X(clCreateCommandQueue)  \
    X(clCreateBuffer)        \
    X(clEnqueueReadBuffer)   \
    X(clFinish)              \
    X(clReleaseCommandQueue) \
    X(clReleaseContext)      \
    X(clReleaseMemObject)
#define CLBLAST_CALLS(X) X(CLBlastSgemm)

/* dl.clFinish and so on: found with dlsym by load_libraries(), typed by the
 * headers' prototypes. */
#define DECLARE_CALL(f) __typeof__(&f) f;
static struct {
    OPENCL_CALLS(DECLARE_CALL)
    CLBLAST_CALLS(DECLARE_CALL)
} dl;

typedef struct library {
    const char *soname;
    const char *package; /* Debian's */
    void       *handle;
} library;

static library opencl_lib  = {"libOpenCL.so.1", "ocl-icd-libopencl1", NULL};
static library clblast_lib = {"libclblast.so.1", "libclblast1", NULL};

static cl_device_id     clblast_device;
static cl_context       clblast_ctx;
static cl_command_queue clblast_queue;

typedef struct clblast_state {
    size_t m, n, k;
    bool   ta, tb;
    cl_mem a, b, c;
} clblast_state;

static bool open_library(library *l, char *why, size_t len)
{
    l->handle = dlopen(l->soname, RTLD_NOW | RTLD_LOCAL);
    if (!l->handle)
        snprintf(why, len, "%s not found (%s); on Debian: apt-get install %s", l->soname,
                 dlerror(), l->package);
    return l->handle != NULL;
}

static void *find_symbol(library *l, const char *name, char *why, size_t len)
{
    void *p = dlsym(l->handle, name);
    if (!p)
        snprintf(why, len, "%s has no %s (%s); on Debian: apt-get install %s", l->soname,
                 name, dlerror(), l->package);
    return p;
}

/* CLBlast before the loader it calls. */
static void close_libraries(void)
{
    library *libs[] = {&clblast_lib, &opencl_lib};
    for (int i = 0; i < 2; i++)
        if (libs[i]->handle)
            dlclose(libs[i]->handle);
    clblast_lib.handle = opencl_lib.handle = NULL;
    memset(&dl, 0, sizeof dl);
}

/* The loader first, so that a missing loader is named as such and not as
 * CLBlast's missing dependency. */
static bool load_libraries(char *why, size_t len)
{
    void *p;
    if (!open_library(&opencl_lib, why, len) || !open_library(&clblast_lib, why, len))
        goto fail;
#define FIND_IN(lib, f)                         \
    if (!(p = find_symbol(&lib, #f, why, len))) \
        goto fail;                              \
    dl.f = (__typeof__(dl.f))p;
#define FIND_OPENCL(f)  FIND_IN(opencl_lib, f)
#define FIND_CLBLAST(f) FIND_IN(clblast_lib, f)
    OPENCL_CALLS(FIND_OPENCL)
    CLBLAST_CALLS(FIND_CLBLAST)
#undef FIND_CLBLAST
#undef FIND_OPENCL
#undef FIND_IN
    return true;
fail:
    close_libraries();
    return false;
}

static bool is_opencl(const kiln_device_report *d)
{
    return strcmp(d->backend, "opencl") == 0;
}

/* kiln's report of the device to use, as the header comment says; NULL
 * after writing why. */
static const kiln_device_report *wanted_device(const kiln_context *ctx, char *why,
                                               size_t len)
{
    const kiln_device_report *d;
    size_t                    n   = kiln_devices(&d), k;
    const char               *env = getenv("KILN_BENCH_CL_DEVICE");
    if (env && *env) {
        char spec[256];
        snprintf(spec, sizeof spec, "opencl:%s", env);
        if (kiln_select(spec, &k) != KILN_OK || !is_opencl(&d[k])) {
            snprintf(why, len, "KILN_BENCH_CL_DEVICE: %s", kiln_last_error());
            return NULL;
        }
        return &d[k];
    }
    if (kiln_context_device_index(ctx, &k) == KILN_OK && is_opencl(&d[k]))
        return &d[k];
    for (k = 0; k < n; k++)
        if (is_opencl(&d[k]) && !d[k].unusable)
            return &d[k];
    snprintf(why, len, "kiln lists no usable OpenCL device (kiln-info says why)");
    return NULL;
}

/* How many OpenCL devices named like `want` kiln lists before it. */
static int rank_by_name(const kiln_device_report *want)
{
    const kiln_device_report *d;
    size_t                    n    = kiln_devices(&d);
    int                       rank = 0;
    for (size_t k = 0; k < n && &d[k] != want; k++)
        rank += is_opencl(&d[k]) && strcmp(d[k].name, want->name) == 0;
    return rank;
}

/* The loader's device named `name` (as kiln cuts it, to 127 bytes) that
 * comes after `rank` others of that name. */
static bool find_device(const char *name, int rank)
{
    cl_platform_id platforms[16];
    cl_uint        np = 0;
    if (dl.clGetPlatformIDs(16, platforms, &np) != CL_SUCCESS)
        return false;
    for (cl_uint p = 0; p < np && p < 16; p++) {
        cl_device_id devs[16];
        cl_uint      nd = 0;
        if (dl.clGetDeviceIDs(platforms[p], CL_DEVICE_TYPE_ALL, 16, devs, &nd) !=
            CL_SUCCESS)
            continue;
        for (cl_uint d = 0; d < nd && d < 16; d++) {
            char full[1024] = "", cut[128];
            dl.clGetDeviceInfo(devs[d], CL_DEVICE_NAME, sizeof full - 1, full, NULL);
            snprintf(cut, sizeof cut, "%s", full);
            if (strcmp(cut, name) == 0 && rank-- == 0) {
                clblast_device = devs[d];
                return true;
            }
        }
    }
    return false;
}

static bool clblast_open(const kiln_context *ctx, char *why, size_t len)
{
    cl_int                    err;
    const kiln_device_report *want = wanted_device(ctx, why, len);
    if (!want || !load_libraries(why, len))
        return false;
    if (!find_device(want->name, rank_by_name(want))) {
        snprintf(why, len,
                 "the OpenCL loader lists no device named \"%s\" (kiln's "
                 "opencl:%d)",
                 want->name, want->index);
        close_libraries();
        return false;
    }
    clblast_ctx = dl.clCreateContext(NULL, 1, &clblast_device, NULL, NULL, &err);
    if (err == CL_SUCCESS)
        clblast_queue = dl.clCreateCommandQueue(clblast_ctx, clblast_device, 0, &err);
    if (err != CL_SUCCESS) {
        snprintf(why, len, "clCreateContext/clCreateCommandQueue failed: %d", err);
        if (clblast_ctx)
            dl.clReleaseContext(clblast_ctx);
        clblast_ctx = NULL;
        close_libraries();
        return false;
    }
    return true;
}

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static cl_mem buffer(size_t n, const float *data)
{
    cl_int err;
    cl_mem m = dl.clCreateBuffer(clblast_ctx,
                                 CL_MEM_READ_WRITE | (data ? CL_MEM_COPY_HOST_PTR : 0),
                                 n * sizeof(float), (void *)data, &err);
    return err == CL_SUCCESS ? m : NULL;
}

static void clblast_teardown(void *state)
{
    clblast_state *s = state;
    if (!s)
        return;
    cl_mem mems[] = {s->a, s->b, s->c};
    for (int i = 0; i < 3; i++)
        if (mems[i])
            dl.clReleaseMemObject(mems[i]);
    free(s);
}

static double clblast_run(void *state)
{
    clblast_state    *s  = state;
    double            t0 = now();
    CLBlastStatusCode st = dl.CLBlastSgemm(
        CLBlastLayoutRowMajor, s->ta ? CLBlastTransposeYes : CLBlastTransposeNo,
        s->tb ? CLBlastTransposeYes : CLBlastTransposeNo, s->m, s->n, s->k, 1.0f, s->a, 0,
        s->ta ? s->m : s->k, s->b, 0, s->tb ? s->k : s->n, 0.0f, s->c, 0, s->n,
        &clblast_queue, NULL);
    if (st != CLBlastSuccess || dl.clFinish(clblast_queue) != CL_SUCCESS)
        return -1.0;
    return now() - t0;
}

static void *clblast_setup(int m, int n, int k, bool ta, bool tb, const float *a,
                           const float *b)
{
    clblast_state *s = calloc(1, sizeof *s);
    if (!s || m <= 0 || n <= 0 || k <= 0) {
        free(s);
        return NULL;
    }
    s->m  = (size_t)m;
    s->n  = (size_t)n;
    s->k  = (size_t)k;
    s->ta = ta;
    s->tb = tb;
    s->a  = buffer(s->m * s->k, a);
    s->b  = buffer(s->k * s->n, b);
    s->c  = buffer(s->m * s->n, NULL);
    /* the first call compiles CLBlast's kernels: not part of any timing */
    if (!s->a || !s->b || !s->c || clblast_run(s) < 0) {
        clblast_teardown(s);
        return NULL;
    }
    return s;
}

static bool clblast_result(void *state, float *c)
{
    clblast_state *s = state;
    return dl.clEnqueueReadBuffer(clblast_queue, s->c, CL_TRUE, 0,
                                  s->m * s->n * sizeof *c, c, 0, NULL,
                                  NULL) == CL_SUCCESS;
}

static void clblast_close(void)
{
    if (clblast_queue)
        dl.clReleaseCommandQueue(clblast_queue);
    if (clblast_ctx)
        dl.clReleaseContext(clblast_ctx);
    clblast_queue = NULL;
    clblast_ctx   = NULL;
    close_libraries();
}

const bench_reference bench_clblast = {
    .name     = "clblast",
    .open     = clblast_open,
    .setup    = clblast_setup,
    .run      = clblast_run,
    .result   = clblast_result,
    .teardown = clblast_teardown,
    .close    = clblast_close,
};
