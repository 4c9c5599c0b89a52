/* tools/bench/compare_clblast.c — CLBlast's CLBlastSgemm, called directly,
 * as the reference for kiln's OpenCL backend (kiln-bench --compare clblast).
 *
 * Which device: the OpenCL device (in the loader's platform and device
 * order) whose device or platform name contains KILN_BENCH_CL_DEVICE,
 * ignoring case; without it, the device whose name is that of the device
 * kiln selects for KILN_BACKEND (when that is an OpenCL device), else of
 * the first usable OpenCL device kiln lists. So `KILN_BACKEND=opencl:1
 * kiln-bench --compare clblast` compares kiln and CLBlast on one device.
 *
 * Same parameters: CLBlast keeps its kernel parameters per device for the
 * whole process, and kiln's OpenCL backend sets them (a verified Xgemm set
 * on CPU devices) when it opens the device. Run kiln's side first, or open
 * a kiln context on the device before timing this one, and both use the
 * same kernels; then the difference is kiln's own overhead.
 *
 * run() times one complete CLBlastSgemm and clFinish on this file's own
 * context and queue, with A and B already on the device.
 */
#define CL_TARGET_OPENCL_VERSION 120
#include "compare.h"

#include <clblast_c.h>
#include <kiln/kiln.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

static cl_device_id     clblast_device;
static cl_context       clblast_ctx;
static cl_command_queue clblast_queue;

typedef struct clblast_state {
    size_t m, n, k;
    bool   ta, tb;
    cl_mem a, b, c;
} clblast_state;

static bool contains_nocase(const char *hay, const char *needle)
{
    size_t n = strlen(needle);
    for (; *hay; hay++)
        if (strncasecmp(hay, needle, n) == 0)
            return true;
    return false;
}

/* The name to look for, as the header comment says; false if none. */
static bool wanted_name(char *buf, size_t len, bool *exact)
{
    const char *env = getenv("KILN_BENCH_CL_DEVICE");
    *exact = false;
    if (env && *env) {
        snprintf(buf, len, "%s", env);
        return true;
    }
    const kiln_device_report *d;
    size_t n = kiln_devices(&d), k;
    *exact = true;
    if (kiln_select(getenv("KILN_BACKEND"), &k) == KILN_OK &&
        strcmp(d[k].backend, "opencl") == 0) {
        snprintf(buf, len, "%s", d[k].name);
        return true;
    }
    for (k = 0; k < n; k++) {
        if (strcmp(d[k].backend, "opencl") == 0 && !d[k].unusable) {
            snprintf(buf, len, "%s", d[k].name);
            return true;
        }
    }
    return false;
}

static bool device_matches(cl_platform_id p, cl_device_id dev, const char *want,
                           bool exact)
{
    char name[256] = "", platform[256] = "";
    clGetDeviceInfo(dev, CL_DEVICE_NAME, sizeof name - 1, name, NULL);
    clGetPlatformInfo(p, CL_PLATFORM_NAME, sizeof platform - 1, platform, NULL);
    if (exact)
        return strcmp(name, want) == 0;
    return contains_nocase(name, want) || contains_nocase(platform, want);
}

static bool find_device(const char *want, bool exact)
{
    cl_platform_id platforms[16];
    cl_uint np = 0;
    if (clGetPlatformIDs(16, platforms, &np) != CL_SUCCESS)
        return false;
    for (cl_uint p = 0; p < np && p < 16; p++) {
        cl_device_id devs[16];
        cl_uint nd = 0;
        if (clGetDeviceIDs(platforms[p], CL_DEVICE_TYPE_ALL, 16, devs, &nd) != CL_SUCCESS)
            continue;
        for (cl_uint d = 0; d < nd && d < 16; d++)
            if (device_matches(platforms[p], devs[d], want, exact)) {
                clblast_device = devs[d];
                return true;
            }
    }
    return false;
}

static bool clblast_open(char *why, size_t len)
{
    char want[256];
    bool exact;
    cl_int err;
    if (!wanted_name(want, sizeof want, &exact)) {
        snprintf(why, len, "no OpenCL device: set KILN_BENCH_CL_DEVICE or KILN_BACKEND");
        return false;
    }
    if (!find_device(want, exact)) {
        snprintf(why, len, "no OpenCL device is named like \"%s\"", want);
        return false;
    }
    clblast_ctx = clCreateContext(NULL, 1, &clblast_device, NULL, NULL, &err);
    if (err == CL_SUCCESS)
        clblast_queue = clCreateCommandQueue(clblast_ctx, clblast_device, 0, &err);
    if (err != CL_SUCCESS) {
        snprintf(why, len, "clCreateContext/clCreateCommandQueue failed: %d", err);
        if (clblast_ctx)
            clReleaseContext(clblast_ctx);
        clblast_ctx = NULL;
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
    cl_mem m = clCreateBuffer(clblast_ctx, CL_MEM_READ_WRITE |
                              (data ? CL_MEM_COPY_HOST_PTR : 0), n * sizeof(float),
                              (void *)data, &err);
    return err == CL_SUCCESS ? m : NULL;
}

static void clblast_teardown(void *state)
{
    clblast_state *s = state;
    if (!s)
        return;
    cl_mem mems[] = { s->a, s->b, s->c };
    for (int i = 0; i < 3; i++)
        if (mems[i])
            clReleaseMemObject(mems[i]);
    free(s);
}

static double clblast_run(void *state)
{
    clblast_state *s = state;
    double t0 = now();
    CLBlastStatusCode st = CLBlastSgemm(
        CLBlastLayoutRowMajor, s->ta ? CLBlastTransposeYes : CLBlastTransposeNo,
        s->tb ? CLBlastTransposeYes : CLBlastTransposeNo, s->m, s->n, s->k, 1.0f, s->a, 0,
        s->ta ? s->m : s->k, s->b, 0, s->tb ? s->k : s->n, 0.0f, s->c, 0, s->n,
        &clblast_queue, NULL);
    if (st != CLBlastSuccess || clFinish(clblast_queue) != CL_SUCCESS)
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
    s->m = (size_t)m;
    s->n = (size_t)n;
    s->k = (size_t)k;
    s->ta = ta;
    s->tb = tb;
    s->a = buffer(s->m * s->k, a);
    s->b = buffer(s->k * s->n, b);
    s->c = buffer(s->m * s->n, NULL);
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
    return clEnqueueReadBuffer(clblast_queue, s->c, CL_TRUE, 0,
                               s->m * s->n * sizeof *c, c, 0, NULL, NULL) == CL_SUCCESS;
}

static void clblast_close(void)
{
    if (clblast_queue)
        clReleaseCommandQueue(clblast_queue);
    if (clblast_ctx)
        clReleaseContext(clblast_ctx);
    clblast_queue = NULL;
    clblast_ctx = NULL;
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
