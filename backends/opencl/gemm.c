/* gemm.c — GEMM through CLBlast's C API on the device's own queue, and the
 * check that CLBlast computes the right thing here, once per device and
 * driver: its outcome is kept in kiln's cache folder (KILN_CACHE_DIR) and
 * read back by later processes instead of checking again.
 *
 * CLBlast picks kernel parameters from its database by device name. On an
 * OpenCL CPU device (POCL) its defaults are slow, and a parameter set that
 * breaks CLBlast's own constraints computes garbage at a flattering speed
 * (MWG=64 with MDIMC=16 and VWM=8 did here). So kiln tunes by capability
 * and trusts nothing it has not checked:
 *
 *  1. The direct kernels (small products) are checked against a host
 *     reference with CLBlast's own parameters, for all four transposes.
 *     If they fail, GEMM is not used on the device: matmul and conv2d
 *     report unsupported and kiln's scheduler runs them on the cpu backend.
 *  2. On a CL_DEVICE_TYPE_CPU device (unless KILN_OPENCL_TUNE=off), each
 *     candidate Xgemm set that meets CLBlast's constraints and the device's
 *     limits is applied with CLBlastOverrideParameters and checked on a
 *     product large enough for the indirect kernel. The first that passes
 *     stays, and products from OCL_CPU_MIN_INDIRECT^3 up use it. If none
 *     passes, every product uses the direct kernels checked in 1.
 *  3. Elsewhere (GPUs, accelerators), CLBlast's database stays in charge;
 *     one product large enough for its indirect kernel is run and checked
 *     on a sample of rows, and if it fails, every product takes the direct
 *     kernels.
 *
 * An override cannot be taken back (CLBlast keeps it per device for the
 * process), which is why a failed candidate leads to the direct kernels
 * rather than to CLBlast's unverified defaults. Running these checks also
 * compiles CLBlast's kernels, so the first training step does not.
 */
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ocl-impl.h"

#include <clblast_c.h>

enum { GEMM_UNCHECKED = 0, GEMM_OK, GEMM_BROKEN };

/* A threshold no product reaches: direct kernels only. */
#define OCL_DIRECT_ONLY (1u << 20)

static pthread_mutex_t gemm_lock = PTHREAD_MUTEX_INITIALIZER;

/* ---- GEMM ---------------------------------------------------------------------- */

static CLBlastTranspose transpose(bool t)
{
    return t ? CLBlastTransposeYes : CLBlastTransposeNo;
}

/* C = beta * C for k = 0, where CLBlast refuses the dimension. kiln uses
 * beta 0 (zeros) and 1 (nothing to do). */
static kiln_status gemm_empty_k(ocl_device *dev, const ocl_gemm *g)
{
    if (g->beta == 1.0f)
        return KILN_OK;
    if (g->beta != 0.0f)
        return dev->host->error(KILN_ERR_INVALID_ARG,
                                "opencl: a GEMM with K = 0 and "
                                "beta %g is not supported",
                                (double)g->beta);
    /* contiguous rows are one fill; others one fill a row */
    size_t fills = g->ldc == g->n ? 1 : g->m, len = g->ldc == g->n ? g->m * g->n : g->n;
    kiln_status st = KILN_OK;
    for (size_t r = 0; r < fills && st == KILN_OK; r++) {
        ocl_launch l = ocl_begin(dev, OCL_K_FILL);
        ocl_arg_mem(&l, g->c);
        ocl_arg_u64(&l, g->co + r * g->ldc);
        ocl_arg_u64(&l, len);
        ocl_arg_f32(&l, 0.0f);
        st = ocl_run(&l, len);
    }
    return st;
}

/* CLBlastSgemm for m, n, k > 0, its temporary buffer kiln's. CLBlast 1.5.3
 * aborts the process (std::terminate, from a destructor that throws) when
 * the temporary buffer it would allocate itself cannot be had; kiln's own
 * allocation fails with an error instead. Sets *fail when that allocation
 * did (the error is recorded). */
static CLBlastStatusCode sgemm(ocl_device *dev, const ocl_gemm *g, bool *fail)
{
    size_t            temp = 0;
    cl_mem            buf  = dev->dummy;
    CLBlastStatusCode s    = CLBlastSGemmTempBufferSize(CLBlastLayoutRowMajor,
                                                        transpose(g->ta), transpose(g->tb),
                                                        g->m, g->n, g->k, g->ao, g->lda,
                                                        g->bo, g->ldb, g->co, g->ldc,
                                                        &dev->queue, &temp);
    *fail                  = false;
    if (s != CLBlastSuccess)
        return s;
    if (temp > 0 && ocl_grow_buffer(dev, &dev->gemm_temp, &dev->gemm_temp_size, temp,
                                    "CLBlast's temporary buffer", &buf) != KILN_OK) {
        *fail = true;
        return CLBlastTempBufferAllocFailure;
    }
    return CLBlastSgemmWithTempBuffer(CLBlastLayoutRowMajor, transpose(g->ta),
                                      transpose(g->tb), g->m, g->n, g->k, g->alpha, g->a,
                                      g->ao, g->lda, g->b, g->bo, g->ldb, g->beta, g->c,
                                      g->co, g->ldc, &dev->queue, NULL, buf);
}

size_t ocl_rebase_above(void)
{
    const char *env = getenv("KILN_OPENCL_REBASE_ABOVE");
    char       *end;
    if (!env || !*env)
        return INT_MAX;
    unsigned long long v = strtoull(env, &end, 10);
    return *end || v > INT_MAX ? INT_MAX : (size_t)v;
}

/* Operand mem at element offset *off, touching `extent` elements from
 * there: when they reach past dev->rebase_above, a sub-buffer whose origin
 * is the last address at or below the offset that the device's alignment
 * allows replaces mem in *mem (and in *sub, to release), and *off counts
 * from it. An operand too large for int indices even so is refused. */
static kiln_status rebase(ocl_device *dev, cl_mem *mem, size_t *off, size_t extent,
                          cl_mem *sub)
{
    *sub = NULL;
    if (*off + extent <= dev->rebase_above)
        return KILN_OK;
    size_t align  = dev->info->base_align;
    size_t origin = *off * sizeof(float) / align * align;
    size_t rest   = *off - origin / sizeof(float);
    if (rest + extent > INT_MAX)
        return dev->host->error(KILN_ERR_INVALID_ARG,
                                "opencl: a GEMM operand of %zu elements is too large for "
                                "CLBlast's int indices",
                                extent);
    cl_buffer_region region = {origin, (rest + extent) * sizeof(float)};
    cl_int           err;
    *sub = clCreateSubBuffer(*mem, 0, CL_BUFFER_CREATE_TYPE_REGION, &region, &err);
    if (!*sub)
        return ocl_cl_fail(dev->host, "clCreateSubBuffer", err,
                           "a GEMM operand at element %zu (%zu bytes from byte %zu)",
                           *off, region.size, origin);
    *mem = *sub;
    *off = rest;
    return KILN_OK;
}

/* The elements a row-major operand of rows x cols with leading dimension
 * ld touches. */
static size_t extent_of(size_t rows, size_t cols, size_t ld)
{
    return (rows - 1) * ld + cols;
}

kiln_status ocl_sgemm(ocl_device *dev, const ocl_gemm *given)
{
    if (given->m == 0 || given->n == 0)
        return KILN_OK;
    if (given->k == 0)
        return gemm_empty_k(dev, given);
    ocl_gemm    rebased = *given, *g = &rebased;
    cl_mem      subs[3] = {NULL, NULL, NULL};
    kiln_status st      = rebase(dev, &g->a, &g->ao,
                                 g->ta ? extent_of(g->k, g->m, g->lda)
                                            : extent_of(g->m, g->k, g->lda),
                                 &subs[0]);
    if (st == KILN_OK)
        st = rebase(dev, &g->b, &g->bo,
                    g->tb ? extent_of(g->n, g->k, g->ldb) : extent_of(g->k, g->n, g->ldb),
                    &subs[1]);
    if (st == KILN_OK)
        st = rebase(dev, &g->c, &g->co, extent_of(g->m, g->n, g->ldc), &subs[2]);
    bool              temp_failed = false;
    CLBlastStatusCode s           = CLBlastSuccess;
    if (st == KILN_OK)
        s = sgemm(dev, g, &temp_failed);
    /* the queue keeps what its commands use: releasing now is safe */
    for (int i = 0; i < 3; i++)
        if (subs[i])
            clReleaseMemObject(subs[i]);
    if (st != KILN_OK)
        return st;
    if (temp_failed)
        return KILN_ERR_NO_MEMORY; /* recorded by ocl_grow_buffer */
    if (s != CLBlastSuccess)
        return ocl_clblast_fail(dev->host, "CLBlastSgemm", s,
                                "M=%zu N=%zu K=%zu%s%s on %s", g->m, g->n, g->k,
                                g->ta ? " a^T" : "", g->tb ? " b^T" : "",
                                dev->info->name);
    return KILN_OK;
}

/* ---- verification ------------------------------------------------------------ */

typedef struct gemm_case {
    size_t m, n, k;
    bool   ta, tb;
    size_t row_step; /* compare every row_step-th row (and the last); 0: all */
} gemm_case;

/* Offsets of a, b and c in their buffers: CLBlast must honour them. */
enum { CHECK_AO = 3, CHECK_BO = 5, CHECK_CO = 7 };

/* Reproducible values in [-1, 1). */
static void fill_values(float *x, size_t n, uint32_t seed)
{
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        x[i] = (float)(seed >> 8) / 8388608.0f - 1.0f;
    }
}

/* The first element of got (m x n) that is not within rounding of
 * a op b, or -1: the bound grows with the sum of |products|. */
static size_t next_row(const gemm_case *c, size_t i)
{
    size_t step = c->row_step ? c->row_step : 1;
    if (i + 1 >= c->m)
        return c->m;
    return i + step < c->m ? i + step : c->m - 1;
}

static long first_wrong(const gemm_case *c, const float *a, const float *b,
                        const float *got)
{
    for (size_t i = 0; i < c->m; i = next_row(c, i))
        for (size_t j = 0; j < c->n; j++) {
            double want = 0.0, mag = 0.0;
            for (size_t p = 0; p < c->k; p++) {
                double x = c->ta ? a[p * c->m + i] : a[i * c->k + p];
                double y = c->tb ? b[j * c->k + p] : b[p * c->n + j];
                want += x * y;
                mag += fabs(x * y);
            }
            double g = got[i * c->n + j];
            if (!(fabs(g - want) <= 1e-5 * mag + 1e-6))
                return (long)(i * c->n + j);
        }
    return -1;
}

static cl_mem check_buffer(ocl_device *dev, const float *data, size_t n, cl_int *err)
{
    return clCreateBuffer(dev->ctx, CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR,
                          n * sizeof(float), (void *)data, err);
}

/* Runs one product over C filled with NaN (beta 0 must overwrite it) and
 * compares every element. *ok says whether it ran and matched, why what
 * went wrong; an error status when memory (host or device) runs out, which
 * says nothing about CLBlast: the check is then tried again at the next
 * device open. */
static kiln_status gemm_check(ocl_device *dev, const gemm_case *c, bool *ok, char *why,
                              size_t why_len)
{
    size_t na = CHECK_AO + c->m * c->k, nb = CHECK_BO + c->k * c->n,
           nc = CHECK_CO + c->m * c->n;
    float *a = malloc(na * sizeof *a), *b = malloc(nb * sizeof *b),
          *out     = malloc(nc * sizeof *out);
    cl_mem      ma = NULL, mb = NULL, mc = NULL;
    cl_int      err  = CL_SUCCESS;
    const char *call = "clCreateBuffer";
    *ok              = false;
    if (!a || !b || !out) {
        free(a);
        free(b);
        free(out);
        return dev->host->error(KILN_ERR_NO_MEMORY, "opencl: out of memory for the "
                                                    "GEMM check");
    }
    fill_values(a, na, 1);
    fill_values(b, nb, 2);
    for (size_t i = 0; i < nc; i++)
        out[i] = NAN;
    ma = check_buffer(dev, a, na, &err);
    if (err == CL_SUCCESS)
        mb = check_buffer(dev, b, nb, &err);
    if (err == CL_SUCCESS)
        mc = check_buffer(dev, out, nc, &err);
    ocl_gemm g = {
        .ta    = c->ta,
        .tb    = c->tb,
        .m     = c->m,
        .n     = c->n,
        .k     = c->k,
        .alpha = 1.0f,
        .beta  = 0.0f,
        .a     = ma,
        .b     = mb,
        .c     = mc,
        .ao    = CHECK_AO,
        .bo    = CHECK_BO,
        .co    = CHECK_CO,
        .lda   = c->ta ? c->m : c->k,
        .ldb   = c->tb ? c->k : c->n,
        .ldc   = c->n,
    };
    bool temp_failed = false;
    if (err == CL_SUCCESS) {
        call = "CLBlastSgemm";
        err  = (cl_int)sgemm(dev, &g, &temp_failed);
    }
    if (err == CL_SUCCESS) {
        call = "clEnqueueReadBuffer";
        err  = clEnqueueReadBuffer(dev->queue, mc, CL_TRUE, 0, nc * sizeof *out, out, 0,
                                   NULL, NULL);
    }
    long bad = err == CL_SUCCESS
                   ? first_wrong(c, a + CHECK_AO, b + CHECK_BO, out + CHECK_CO)
                   : -1;
    *ok      = err == CL_SUCCESS && bad < 0;
    if (err != CL_SUCCESS)
        snprintf(why, why_len, "%s failed: %s (%d)", call, ocl_clblast_name(err), err);
    else if (bad >= 0)
        snprintf(why, why_len, "M=%zu N=%zu K=%zu%s%s gave %g at [%ld, %ld]", c->m, c->n,
                 c->k, c->ta ? " a^T" : "", c->tb ? " b^T" : "",
                 (double)out[CHECK_CO + bad], bad / (long)c->n, bad % (long)c->n);
    if (ma)
        clReleaseMemObject(ma);
    if (mb)
        clReleaseMemObject(mb);
    if (mc)
        clReleaseMemObject(mc);
    free(a);
    free(b);
    free(out);
    if (temp_failed)
        return KILN_ERR_NO_MEMORY; /* recorded by ocl_grow_buffer */
    if (err != CL_SUCCESS && ocl_is_alloc_failure(err))
        return ocl_cl_fail(dev->host, call, err, "the GEMM check (M=%zu N=%zu K=%zu)",
                           c->m, c->n, c->k);
    return KILN_OK;
}

static kiln_status gemm_check_all(ocl_device *dev, const gemm_case *cases, int n,
                                  bool *ok, char *why, size_t why_len)
{
    kiln_status st = KILN_OK;
    *ok            = true;
    for (int i = 0; i < n && st == KILN_OK && *ok; i++)
        st = gemm_check(dev, &cases[i], ok, why, why_len);
    return st;
}

/* ---- CPU-device parameters --------------------------------------------------- */

const char *const ocl_xgemm_names[OCL_XGEMM_PARAMS] = {
    "GEMMK", "KREG", "KWG", "KWI", "MDIMA", "MDIMC", "MWG", "NDIMB",
    "NDIMC", "NWG",  "SA",  "SB",  "STRM",  "STRN",  "VWM", "VWN",
};

/* Sets for CPU devices, best first: without local memory (a CPU's caches
 * do that job) and with wide vectors. Measured at 1024^3 on POCL 3.1 on 2
 * Zen 5 cores: about 55 and 50 GFLOP/s, against 14 for CLBlast's defaults. */
static const struct {
    const char *name;
    size_t      v[OCL_XGEMM_PARAMS];
} xgemm_cpu_sets[] = {
    {"cpu-128x128-v8", {0, 1, 32, 2, 16, 16, 128, 16, 16, 128, 0, 0, 0, 0, 8, 8}},
    {"cpu-64x64-v8", {0, 1, 32, 2, 8, 8, 64, 8, 8, 64, 0, 0, 0, 0, 8, 8}},
};

static bool multiple(size_t x, size_t of)
{
    return of != 0 && x % of == 0;
}

const char *ocl_xgemm_unfit(const size_t *v, const ocl_info *info)
{
    if (v[P_GEMMK] != 0)
        return "only GEMMK=0 sets are checked here";
    if (!multiple(v[P_KWG], v[P_KWI]))
        return "KWG is not a multiple of KWI";
    if (!multiple(v[P_MWG], v[P_MDIMC] * v[P_VWM]) ||
        !multiple(v[P_NWG], v[P_NDIMC] * v[P_VWN]))
        return "MWG (NWG) is not a multiple of MDIMC*VWM (NDIMC*VWN)";
    if (!multiple(v[P_MWG], v[P_MDIMA] * v[P_VWM]) ||
        !multiple(v[P_NWG], v[P_NDIMB] * v[P_VWN]))
        return "MWG (NWG) is not a multiple of MDIMA*VWM (NDIMB*VWN)";
    size_t threads = v[P_MDIMC] * v[P_NDIMC];
    if (!multiple(threads, v[P_MDIMA]) || !multiple(threads, v[P_NDIMB]) ||
        !multiple(v[P_KWG], threads / v[P_MDIMA]) ||
        !multiple(v[P_KWG], threads / v[P_NDIMB]))
        return "KWG does not divide among the work-items that load A and B";
    if (threads > info->max_group)
        return "its work-group is larger than the device allows";
    size_t local = 4 * v[P_KWG] * (v[P_SA] * v[P_MWG] + v[P_SB] * v[P_NWG]);
    if (local > info->local_mem)
        return "it needs more local memory than the device has";
    return NULL;
}

kiln_status ocl_gemm_set_min_indirect(ocl_device *dev, size_t size)
{
    const char       *name = "XGEMM_MIN_INDIRECT_SIZE";
    CLBlastStatusCode s    = CLBlastOverrideParameters(dev->info->id, "GemmRoutine",
                                                       CLBlastPrecisionSingle, 1, &name,
                                                       &size);
    if (s != CLBlastSuccess)
        return ocl_clblast_fail(dev->host, "CLBlastOverrideParameters", s,
                                "GemmRoutine XGEMM_MIN_INDIRECT_SIZE=%zu", size);
    dev->info->gemm_min_indirect = size;
    return KILN_OK;
}

int ocl_xgemm_apply(ocl_device *dev, const size_t *v, const char *name)
{
    CLBlastStatusCode s = CLBlastOverrideParameters(dev->info->id, "Xgemm",
                                                    CLBlastPrecisionSingle, OCL_XGEMM_PARAMS,
                                                    (const char **)ocl_xgemm_names, v);
    if (s == CLBlastSuccess) {
        snprintf(dev->info->gemm_set, sizeof dev->info->gemm_set, "%s", name);
        memcpy(dev->info->gemm_params, v, sizeof dev->info->gemm_params);
    }
    return s;
}

/* Puts CPU set i in force. */
static CLBlastStatusCode use_xgemm_set(ocl_device *dev, size_t i)
{
    return ocl_xgemm_apply(dev, xgemm_cpu_sets[i].v, xgemm_cpu_sets[i].name);
}

/* Products that take the indirect kernel once the threshold is 64, with
 * partial tiles, and one of them transposed both ways. */
static const gemm_case indirect_cases[] = {
    {130, 67, 75, false, false, 0},
    {67, 130, 75, true, true, 0},
};

kiln_status ocl_gemm_check_indirect(ocl_device *dev, bool *ok, char *why, size_t len)
{
    return gemm_check_all(dev, indirect_cases, 2, ok, why, len);
}

kiln_status ocl_gemm_check_square(ocl_device *dev, size_t n, bool *ok, char *why,
                                  size_t len)
{
    gemm_case c = {n, n, n, false, false, 61};
    return gemm_check(dev, &c, ok, why, len);
}

/* Tries the CPU sets; leaves the first that verifies in place, or makes
 * every product take the direct kernels. */
static kiln_status tune_cpu(ocl_device *dev, char *note, size_t note_len)
{
    kiln_status st       = ocl_gemm_set_min_indirect(dev, 64);
    const char *chosen   = NULL;
    char        why[256] = "";
    for (size_t i = 0;
         st == KILN_OK && !chosen && i < sizeof xgemm_cpu_sets / sizeof xgemm_cpu_sets[0];
         i++) {
        const char *name  = xgemm_cpu_sets[i].name;
        const char *unfit = ocl_xgemm_unfit(xgemm_cpu_sets[i].v, dev->info);
        if (unfit) {
            dev->host->log(KILN_LOG_DEBUG, "opencl: Xgemm set %s skipped: %s", name,
                           unfit);
            continue;
        }
        CLBlastStatusCode s = use_xgemm_set(dev, i);
        if (s != CLBlastSuccess) {
            dev->host->log(KILN_LOG_DEBUG,
                           "opencl: Xgemm set %s refused by CLBlast: "
                           "%s (%d)",
                           name, ocl_clblast_name(s), s);
            continue;
        }
        bool ok = false;
        st      = gemm_check_all(dev, indirect_cases, 2, &ok, why, sizeof why);
        if (st == KILN_OK && ok)
            chosen = name;
        else if (st == KILN_OK)
            dev->host->log(KILN_LOG_WARN,
                           "opencl: CLBlast Xgemm set %s failed its "
                           "check on %s (%s); not used",
                           name, dev->info->name, why);
    }
    if (!chosen) /* a set that failed its check is not one kiln uses */
        dev->info->gemm_set[0] = '\0';
    if (st == KILN_OK)
        st = ocl_gemm_set_min_indirect(dev, chosen ? OCL_CPU_MIN_INDIRECT : OCL_DIRECT_ONLY);
    if (st != KILN_OK)
        return st;
    if (chosen)
        snprintf(note, note_len, "Xgemm set %s verified, from %d^3", chosen,
                 OCL_CPU_MIN_INDIRECT);
    else
        snprintf(note, note_len, "direct kernels only (no Xgemm set verified)");
    return st;
}

/* Small products for the direct kernels, every transpose. */
static const gemm_case direct_cases[] = {
    {19, 23, 29, false, false, 0},
    {19, 23, 29, true, false, 0},
    {19, 23, 29, false, true, 0},
    {19, 23, 29, true, true, 0},
};

/* Above every XGEMM_MIN_INDIRECT_SIZE in CLBlast's database (at most 1984):
 * a product that takes the indirect kernel wherever CLBlast's own
 * parameters are in force, checked on every 97th row (and the last). */
static const gemm_case large_case = {2048, 2048, 2048, false, false, 97};

/* On devices other than CPUs: compiles CLBlast's indirect kernel now rather
 * than in the first large product, and checks it. If it fails, every
 * product takes the direct kernels, which were checked. A GPU does this
 * product in milliseconds; a device with little memory skips it. */
static kiln_status warm_indirect(ocl_device *dev, char *note, size_t note_len)
{
    size_t bytes = large_case.m * large_case.k * sizeof(float);
    if (dev->info->max_alloc < bytes || dev->info->memory < 8 * bytes)
        return KILN_OK;
    char        why[256] = "";
    bool        ok       = false;
    kiln_status st       = gemm_check(dev, &large_case, &ok, why, sizeof why);
    if (st != KILN_OK || ok)
        return st;
    dev->host->log(KILN_LOG_WARN,
                   "opencl: CLBlast's indirect GEMM failed its check "
                   "on %s (%s); using its direct kernels only",
                   dev->info->name, why);
    snprintf(note, note_len, "direct kernels only (the indirect one failed its check)");
    return ocl_gemm_set_min_indirect(dev, OCL_DIRECT_ONLY);
}

/* ---- the decision, kept on disk per device and driver --------------------------- */

static kiln_status gemm_check_and_tune(ocl_device *dev);

/* What the decision depends on: CLBlast's version, the device and its
 * driver, the limits that rule sets out, the sets themselves, and
 * KILN_OPENCL_TUNE. */
static void decision_key(const ocl_info *info, const char *tuning, char *key, size_t len)
{
    uint64_t h = OCL_FNV_SEED;
    for (size_t i = 0; i < sizeof xgemm_cpu_sets / sizeof xgemm_cpu_sets[0]; i++) {
        h = ocl_fnv1a(h, xgemm_cpu_sets[i].name, strlen(xgemm_cpu_sets[i].name));
        h = ocl_fnv1a(h, xgemm_cpu_sets[i].v, sizeof xgemm_cpu_sets[i].v);
    }
    snprintf(key, len,
             "kiln-opencl GEMM decision, format 3\n"
             "clblast: %d.%d; sets fnv1a %016llx; min indirect %d; tuning %s\n"
             "device: %s | %s | type %llu | group %zu | local %llu | memory %llu\n"
             "driver: %s\n"
             "platform: %s | %s\n",
             CLBLAST_VERSION_MAJOR, CLBLAST_VERSION_MINOR, (unsigned long long)h,
             OCL_CPU_MIN_INDIRECT, tuning, info->name, info->version,
             (unsigned long long)info->type, info->max_group,
             (unsigned long long)info->local_mem, (unsigned long long)info->memory,
             info->driver, info->platform_name, info->platform_version);
}

/* The entry's path for key, into path; false when the cache is off. */
static bool decision_path(const char *key, char *dir, size_t dir_len, char *path,
                          size_t path_len)
{
    char why[512] = "";
    if (!ocl_cache_dir(dir, dir_len, why, sizeof why))
        return false;
    snprintf(path, path_len, "%s/opencl-gemm-%016llx.txt", dir,
             (unsigned long long)ocl_fnv1a(OCL_FNV_SEED, key, strlen(key)));
    return true;
}

/* The 16 comma-separated values of a searched set; false if malformed. */
static bool parse_params(const char *text, size_t *v)
{
    for (int i = 0; i < OCL_XGEMM_PARAMS; i++) {
        char *end;
        unsigned long x = strtoul(text, &end, 10);
        if (end == text || x > 4096 || *end != (i + 1 < OCL_XGEMM_PARAMS ? ',' : '\0'))
            return false;
        v[i] = x;
        text = end + 1;
    }
    return true;
}

/* Applies a stored decision ("state=ok\nset=NAME or -\nparams=...\n
 * min_indirect=N\nnote=...") without checking again; false when there is
 * none, or it cannot be used. A set named "search" is one kiln's search
 * found (tune.c), its values in params. */
static bool decision_load(ocl_device *dev, const char *tuning)
{
    char key[2048], dir[3072], path[4096], why[512] = "";
    decision_key(dev->info, tuning, key, sizeof key);
    if (!decision_path(key, dir, sizeof dir, path, sizeof path))
        return false;
    unsigned char   *data = NULL;
    size_t           len  = 0;
    ocl_cache_result r    = ocl_cache_load(path, key, &data, &len, why, sizeof why);
    if (r == OCL_CACHE_BAD)
        dev->host->log(KILN_LOG_INFO, "opencl: GEMM decision %s was unusable (%s)", path,
                       why);
    if (r != OCL_CACHE_HIT)
        return false;
    char   text[768], state[16] = "", set[32] = "", params[256] = "", note[160] = "";
    size_t min_indirect = 0, v[OCL_XGEMM_PARAMS];
    snprintf(text, sizeof text, "%.*s", (int)(len < sizeof text ? len : sizeof text - 1),
             (const char *)data);
    free(data);
    /* "set=-": CLBlast's own parameters, no set of kiln's */
    bool ok = sscanf(text,
                     "state=%15[a-z]\nset=%31[^\n]\nparams=%255[^\n]\nmin_indirect=%zu\n"
                     "note=%159[^\n]",
                     state, set, params, &min_indirect, note) == 5 &&
              (strcmp(state, "ok") == 0 || strcmp(state, "broken") == 0);
    if (ok && strcmp(set, "search") == 0) {
        ok = parse_params(params, v) && !ocl_xgemm_unfit(v, dev->info) &&
             ocl_xgemm_apply(dev, v, "search") == CLBlastSuccess;
    } else if (ok && strcmp(set, "-") != 0) {
        size_t i = 0, n = sizeof xgemm_cpu_sets / sizeof xgemm_cpu_sets[0];
        while (i < n && strcmp(set, xgemm_cpu_sets[i].name) != 0)
            i++;
        ok = i < n && use_xgemm_set(dev, i) == CLBlastSuccess; /* one this kiln has */
    }
    if (ok && min_indirect)
        ok = ocl_gemm_set_min_indirect(dev, min_indirect) == KILN_OK;
    if (!ok) {
        dev->host->log(KILN_LOG_INFO, "opencl: GEMM decision %s not used: checking again",
                       path);
        return false;
    }
    dev->info->gemm_state = strcmp(state, "ok") == 0 ? GEMM_OK : GEMM_BROKEN;
    snprintf(dev->info->gemm_note, sizeof dev->info->gemm_note, "%.120s (checked before)",
             note);
    dev->host->log(KILN_LOG_DEBUG, "opencl: GEMM decision read from %s", path);
    return true;
}

static void decision_store(ocl_device *dev, const char *tuning)
{
    char key[2048], dir[3072], path[4096], text[768], params[256] = "", why[512] = "";
    decision_key(dev->info, tuning, key, sizeof key);
    if (!decision_path(key, dir, sizeof dir, path, sizeof path))
        return;
    for (int i = 0, at = 0; i < OCL_XGEMM_PARAMS; i++)
        at += snprintf(params + at, sizeof params - (size_t)at, "%s%zu", i ? "," : "",
                       dev->info->gemm_params[i]);
    int n = snprintf(text, sizeof text,
                     "state=%s\nset=%s\nparams=%s\nmin_indirect=%zu\nnote=%s\n",
                     dev->info->gemm_state == GEMM_OK ? "ok" : "broken",
                     dev->info->gemm_set[0] ? dev->info->gemm_set : "-", params,
                     dev->info->gemm_min_indirect, dev->info->gemm_note);
    if (n > 0 && (size_t)n < sizeof text &&
        !ocl_cache_store(dir, path, key, (const unsigned char *)text, (size_t)n, why,
                         sizeof why))
        dev->host->log(KILN_LOG_WARN, "opencl: GEMM decision not kept: %s", why);
}

/* The decision kept for this device and driver (a search's first), else
 * the checks (and the tuning on CPU devices), whose outcome is then kept:
 * the checks take seconds (a 2048^3 product on a GPU, the candidate sets on
 * a CPU device), every process. KILN_OPENCL_TUNE=search[:SECONDS] searches
 * afresh and keeps the result where later processes look first. Running
 * out of memory decides nothing and keeps nothing. */
static kiln_status gemm_decide(ocl_device *dev)
{
    const char *tune_env = getenv("KILN_OPENCL_TUNE");
    bool        search   = ocl_tune_budget() > 0;
    const char *mode     = search                                       ? "search"
                           : tune_env && strcmp(tune_env, "off") == 0 ? "off"
                                                                       : "on";
    if (!search && strcmp(mode, "on") == 0 && decision_load(dev, "search"))
        return KILN_OK;
    if (!search && decision_load(dev, mode))
        return KILN_OK;
    kiln_status st = gemm_check_and_tune(dev);
    if (st == KILN_OK)
        decision_store(dev, mode);
    return st;
}

static kiln_status gemm_check_and_tune(ocl_device *dev)
{
    ocl_info   *info     = dev->info;
    char        why[256] = "";
    bool        ok       = false;
    kiln_status st       = gemm_check_all(dev, direct_cases, 4, &ok, why, sizeof why);
    if (st != KILN_OK)
        return st;
    if (!ok) {
        info->gemm_state = GEMM_BROKEN;
        snprintf(info->gemm_note, sizeof info->gemm_note,
                 "CLBlast's GEMM failed its "
                 "check: %s",
                 why);
        return KILN_OK;
    }
    const char *tune   = getenv("KILN_OPENCL_TUNE");
    bool        tuning = !(tune && strcmp(tune, "off") == 0);
    snprintf(info->gemm_note, sizeof info->gemm_note, "CLBlast's own parameters%s",
             tuning ? "" : " (KILN_OPENCL_TUNE=off)");
    if (tuning && (info->type & CL_DEVICE_TYPE_CPU))
        st = tune_cpu(dev, info->gemm_note, sizeof info->gemm_note);
    else if (!(info->type & CL_DEVICE_TYPE_CPU))
        st = warm_indirect(dev, info->gemm_note, sizeof info->gemm_note);
    /* a search starts from the set that verified, if any */
    if (st == KILN_OK && ocl_tune_budget() > 0) {
        size_t best[OCL_XGEMM_PARAMS];
        st = ocl_tune_search(dev, ocl_tune_budget(), info->gemm_set[0] ? info->gemm_params
                                                                      : NULL,
                             best, info->gemm_note, sizeof info->gemm_note);
    }
    /* running out of memory says nothing of CLBlast: decide again next time */
    if (st == KILN_ERR_NO_MEMORY)
        return st;
    if (st != KILN_OK)
        snprintf(info->gemm_note, sizeof info->gemm_note,
                 "CLBlast's parameters could "
                 "not be set (CLBlastOverrideParameters failed)");
    info->gemm_state = st == KILN_OK ? GEMM_OK : GEMM_BROKEN;
    return KILN_OK;
}

kiln_status ocl_gemm_prepare(ocl_device *dev)
{
    pthread_mutex_lock(&gemm_lock);
    kiln_status st = KILN_OK;
    if (dev->info->gemm_state == GEMM_UNCHECKED)
        st = gemm_decide(dev);
    dev->gemm_ok = dev->info->gemm_state == GEMM_OK;
    pthread_mutex_unlock(&gemm_lock);
    if (st != KILN_OK)
        return st;
    if (dev->gemm_ok)
        dev->host->log(KILN_LOG_DEBUG, "opencl: GEMM on %s: %s", dev->info->name,
                       dev->info->gemm_note);
    else
        dev->host->log(KILN_LOG_WARN,
                       "opencl: %s on %s; matmul and conv2d will run "
                       "on the cpu backend",
                       dev->info->gemm_note, dev->info->name);
    return KILN_OK;
}
