/* common.cl — what every kiln kernel shares.
 *
 * The host builds these sources with -cl-std=CL1.2 and defines:
 *   KILN_FP64   the device has double precision: sums accumulate in double,
 *               as the cpu backend's do; without it they use compensated
 *               (Kahan) float sums, so no kernel assumes fp64 exists.
 *
 * Conventions. A tensor is passed as a pointer to the start of its buffer
 * and an offset in elements (kiln's nodes carry byte offsets into one large
 * buffer; sub-buffers would need CL_DEVICE_MEM_BASE_ADDR_ALIGN alignment).
 * Sizes and offsets are ulong. Reduction kernels take a __local scratch of
 * one acc_t per work-item and run with a power-of-two work-group size.
 *
 * Helpers are plain functions, not `inline`: under OpenCL C's C99 rules an
 * inline definition that the compiler chooses not to inline leaves an
 * undefined reference on some drivers.
 */
#ifdef KILN_FP64
#pragma OPENCL EXTENSION cl_khr_fp64 : enable
typedef double acc_t;
#else
typedef float acc_t;
#endif

#define GF   __global float
#define GCF  __global const float
#define GCI  __global const int

/* A running sum: compensated when acc_t is float. */
typedef struct kiln_sum {
    acc_t s, c;
} kiln_sum;

kiln_sum sum_zero(void)
{
    kiln_sum z = { 0, 0 };
    return z;
}

kiln_sum sum_add(kiln_sum a, acc_t x)
{
#ifdef KILN_FP64
    a.s += x;
#else
    acc_t y = x - a.c;
    acc_t t = a.s + y;
    a.c = (t - a.s) - y;
    a.s = t;
#endif
    return a;
}

/* What a running sum holds: s less the part that rounding added. */
acc_t sum_value(kiln_sum a)
{
    return a.s - a.c;
}

/* A sum of r terms, or their mean (NaN when r is 0). */
float sum_or_mean(acc_t total, ulong r, int mean)
{
    if (!mean)
        return (float)total;
    return r > 0 ? (float)(total / (acc_t)r) : NAN;
}

/* The larger of m and x; once NaN, stays NaN (fmax would drop it). */
float max_nan(float m, float x)
{
    return (x > m || isnan(x)) ? x : m;
}

float add2(float a, float b)
{
    return a + b;
}

#ifdef KILN_FP64
double add2d(double a, double b)
{
    return a + b;
}
#define ACC_ADD add2d
#else
#define ACC_ADD add2
#endif

/* name(v, scratch): v combined over the work-group as a tree (the group
 * size is a power of two), the result returned to every work-item. */
#define KILN_GROUP_REDUCE(name, T, combine)                                    \
T name(T v, __local T *scratch)                                                \
{                                                                              \
    size_t lid = get_local_id(0);                                              \
    scratch[lid] = v;                                                          \
    barrier(CLK_LOCAL_MEM_FENCE);                                              \
    for (size_t s = get_local_size(0) / 2; s > 0; s >>= 1) {                   \
        if (lid < s)                                                           \
            scratch[lid] = combine(scratch[lid], scratch[lid + s]);            \
        barrier(CLK_LOCAL_MEM_FENCE);                                          \
    }                                                                          \
    T r = scratch[0];                                                          \
    barrier(CLK_LOCAL_MEM_FENCE);                                              \
    return r;                                                                  \
}

KILN_GROUP_REDUCE(group_sum, acc_t, ACC_ADD)
KILN_GROUP_REDUCE(group_max, float, max_nan)

/* Whether (va, ia) comes before (vb, ib) as the argmax: the first NaN wins,
 * then the larger value, then the lower index (NumPy's rule). */
bool arg_better(float va, ulong ia, float vb, ulong ib)
{
    if (isnan(va) || isnan(vb))
        return isnan(va) && (!isnan(vb) || ia < ib);
    return va > vb || (va == vb && ia < ib);
}

/* The first index of the maximum of x[0, n) (n > 0), over the work-group. */
ulong group_argmax(__global const float *x, ulong n, __local float *sv,
                          __local ulong *si)
{
    size_t lid = get_local_id(0), ls = get_local_size(0);
    float best = x[0];
    ulong at = 0;
    for (ulong i = lid; i < n; i += ls)
        if (arg_better(x[i], i, best, at)) {
            best = x[i];
            at = i;
        }
    sv[lid] = best;
    si[lid] = at;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (size_t s = ls / 2; s > 0; s >>= 1) {
        if (lid < s && arg_better(sv[lid + s], si[lid + s], sv[lid], si[lid])) {
            sv[lid] = sv[lid + s];
            si[lid] = si[lid + s];
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    ulong r = si[0];
    barrier(CLK_LOCAL_MEM_FENCE);
    return r;
}
