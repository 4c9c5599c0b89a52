/* tests/reference.c — the plain reference the op tests compare against.
 *
 * Clarity over speed: every op is the textbook loop nest, every sum is taken
 * in double, and broadcasting walks explicit multi-indices. Nothing here may
 * share code or tricks with a backend, or a shared mistake would pass.
 */
#include "reference.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- shapes ---------------------------------------------------------------- */

ref_shape ref_shape_of(int ndim, const int64_t *dims)
{
    ref_shape s;
    memset(&s, 0, sizeof s);
    cr_assert(ndim >= 0 && ndim <= REF_MAX_DIMS, "reference: bad ndim %d", ndim);
    s.ndim = ndim;
    for (int d = 0; d < ndim; d++)
        s.dims[d] = dims[d];
    return s;
}

size_t ref_numel(ref_shape s)
{
    size_t n = 1;
    for (int d = 0; d < s.ndim; d++)
        n *= (size_t)s.dims[d];
    return n;
}

bool ref_shape_eq(ref_shape a, ref_shape b)
{
    if (a.ndim != b.ndim)
        return false;
    for (int d = 0; d < a.ndim; d++)
        if (a.dims[d] != b.dims[d])
            return false;
    return true;
}

char *ref_shape_str(ref_shape s, char *buf, size_t size)
{
    size_t used = 0;
    used += (size_t)snprintf(buf + used, size - used, "[");
    for (int d = 0; d < s.ndim && used < size; d++)
        used += (size_t)snprintf(buf + used, size - used, "%s%lld", d ? ", " : "",
                                 (long long)s.dims[d]);
    if (used < size)
        snprintf(buf + used, size - used, "]");
    return buf;
}

const char *ref_shape_text(ref_shape s)
{
    static char bufs[8][96];
    static int  next;
    char       *buf = bufs[next++ % 8];
    return ref_shape_str(s, buf, sizeof bufs[0]);
}

/* The multi-index of flat element i of shape s, as "[i0, i1]". */
static char *index_str(ref_shape s, size_t i, char *buf, size_t size)
{
    ref_shape idx = s;
    for (int d = s.ndim - 1; d >= 0; d--) {
        idx.dims[d] = (int64_t)(i % (size_t)s.dims[d]);
        i /= (size_t)s.dims[d];
    }
    return ref_shape_str(idx, buf, size);
}

/* ---- data -------------------------------------------------------------------- */

void ref_rng_seed(ref_rng *rng, uint64_t seed)
{
    /* xorshift must not start at 0; mix the seed so that near seeds diverge */
    rng->state = (seed ^ 0x9E3779B97F4A7C15ull) * 0xBF58476D1CE4E5B9ull;
    if (rng->state == 0)
        rng->state = 0x2545F4914F6CDD1Dull;
}

uint64_t ref_hash_str(const char *s)
{
    uint64_t h = 14695981039346656037ull; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

uint64_t ref_rng_next(ref_rng *rng)
{
    uint64_t x = rng->state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    rng->state = x;
    return x * 0x2545F4914F6CDD1Dull;
}

float ref_rng_uniform(ref_rng *rng, float lo, float hi)
{
    /* 24 random bits: exactly representable in f32 */
    double u = (double)(ref_rng_next(rng) >> 40) / (double)((1u << 24) - 1);
    return (float)(lo + (hi - lo) * u);
}

void *ref_calloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size);
    cr_assert_not_null(p, "out of memory for %zu elements", n);
    return p;
}

void ref_fill(float *x, size_t n, uint64_t seed)
{
    ref_fill_around(x, n, seed, 0.0f);
}

void ref_fill_around(float *x, size_t n, uint64_t seed, float center)
{
    ref_rng rng;
    ref_rng_seed(&rng, seed);
    for (size_t i = 0; i < n; i++)
        x[i] = center + ref_rng_uniform(&rng, -2.0f, 2.0f);
}

void ref_fill_uniform(float *x, size_t n, uint64_t seed, float lo, float hi)
{
    ref_rng rng;
    ref_rng_seed(&rng, seed);
    for (size_t i = 0; i < n; i++)
        x[i] = ref_rng_uniform(&rng, lo, hi);
}

void ref_fill_positive(float *x, size_t n, uint64_t seed)
{
    ref_fill_uniform(x, n, seed, 0.1f, 2.0f);
}

void ref_fill_nonzero(float *x, size_t n, uint64_t seed)
{
    ref_rng rng;
    ref_rng_seed(&rng, seed);
    for (size_t i = 0; i < n; i++) {
        float magnitude = ref_rng_uniform(&rng, 0.5f, 2.0f);
        x[i]            = (ref_rng_next(&rng) >> 63) ? -magnitude : magnitude;
    }
}

void ref_fill_ties(float *x, size_t n, uint64_t seed)
{
    ref_rng rng;
    ref_rng_seed(&rng, seed);
    for (size_t i = 0; i < n; i++)
        x[i] = (float)((int)(ref_rng_next(&rng) % 5) - 2);
}

void ref_fill_labels(int32_t *x, size_t n, int32_t classes, uint64_t seed)
{
    ref_rng rng;
    ref_rng_seed(&rng, seed);
    for (size_t i = 0; i < n; i++)
        x[i] = (int32_t)(ref_rng_next(&rng) % (uint64_t)classes);
}

/* ---- comparison ------------------------------------------------------------------ */

static bool close_enough(float got, double want, ref_tol tol)
{
    if (isnan(want))
        return isnan(got);
    if (isinf(want))
        return got == want;
    double err = fabs((double)got - want);
    /* written so that a NaN `got` fails */
    return err <= tol.abs + tol.rel * fabs(want);
}

/* ref_expect_close against want_f (f32) or, when that is NULL, want_d (f64) */
static void expect_close(const char *what, const float *got, const float *want_f,
                         const double *want_d, ref_shape shape, ref_tol tol)
{
    size_t n   = ref_numel(shape);
    size_t bad = 0, first = 0;
    double max_abs = 0.0, max_rel = 0.0;

    for (size_t i = 0; i < n; i++) {
        double want = want_f ? (double)want_f[i] : want_d[i];
        if (!close_enough(got[i], want, tol)) {
            if (bad++ == 0)
                first = i;
        }
        double err = fabs((double)got[i] - want);
        if (isfinite(want) && !(err <= max_abs))
            max_abs = err; /* a NaN got makes the maximum NaN, as it should */
        if (isfinite(want) && want != 0.0) {
            double rel = err / fabs(want);
            if (!(rel <= max_rel))
                max_rel = rel;
        }
    }
    if (bad == 0)
        return;

    char idx[96], shp[96];
    cr_assert_fail("%s: %zu of %zu elements of %s differ from the reference; "
                   "first at %s: got %.9g, expected %.9g "
                   "(tolerance abs %.3g + rel %.3g); max abs err %.3g, max rel err %.3g",
                   what, bad, n, ref_shape_str(shape, shp, sizeof shp),
                   index_str(shape, first, idx, sizeof idx), (double)got[first],
                   want_f ? (double)want_f[first] : want_d[first], tol.abs, tol.rel,
                   max_abs, max_rel);
}

void ref_expect_close(const char *what, const float *got, const float *want,
                      ref_shape shape, ref_tol tol)
{
    expect_close(what, got, want, NULL, shape, tol);
}

void ref_expect_close_f64(const char *what, const float *got, const double *want,
                          ref_shape shape, ref_tol tol)
{
    expect_close(what, got, NULL, want, shape, tol);
}

void ref_expect_equal_i32(const char *what, const int32_t *got, const int32_t *want,
                          ref_shape shape)
{
    size_t n   = ref_numel(shape);
    size_t bad = 0, first = 0;
    for (size_t i = 0; i < n; i++) {
        if (got[i] != want[i] && bad++ == 0)
            first = i;
    }
    if (bad == 0)
        return;

    char idx[96], shp[96];
    cr_assert_fail("%s: %zu of %zu elements of %s differ from the reference; "
                   "first at %s: got %d, expected %d",
                   what, bad, n, ref_shape_str(shape, shp, sizeof shp),
                   index_str(shape, first, idx, sizeof idx), (int)got[first],
                   (int)want[first]);
}

void ref_expect_finite(const char *what, const float *got, ref_shape shape)
{
    size_t n = ref_numel(shape);
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(got[i])) {
            char idx[96];
            cr_assert_fail("%s: element %s is %g, expected a finite value", what,
                           index_str(shape, i, idx, sizeof idx), (double)got[i]);
        }
    }
}

/* ---- elementwise -------------------------------------------------------------------- */

/* s without its leading 1s */
static ref_shape drop_leading_ones(ref_shape s)
{
    int skip = 0;
    while (skip < s.ndim && s.dims[skip] == 1)
        skip++;
    ref_shape r;
    memset(&r, 0, sizeof r);
    r.ndim = s.ndim - skip;
    for (int d = 0; d < r.ndim; d++)
        r.dims[d] = s.dims[skip + d];
    return r;
}

/* whether `small` equals the trailing dimensions of `big` */
static bool is_suffix(ref_shape small, ref_shape big)
{
    if (small.ndim > big.ndim)
        return false;
    for (int d = 0; d < small.ndim; d++)
        if (small.dims[d] != big.dims[big.ndim - small.ndim + d])
            return false;
    return true;
}

bool ref_broadcast_shape(ref_shape a, ref_shape b, ref_shape *out)
{
    if (ref_shape_eq(a, b)) {
        *out = a;
        return true;
    }
    bool b_fits_a = is_suffix(drop_leading_ones(b), a);
    bool a_fits_b = is_suffix(drop_leading_ones(a), b);
    if (b_fits_a && (!a_fits_b || a.ndim >= b.ndim)) {
        *out = a;
        return true;
    }
    if (a_fits_b) {
        *out = b;
        return true;
    }
    return false;
}

/* The flat offset into an operand of shape s of the output multi-index idx
 * (of so.ndim dimensions): dimensions align on the right, and a dimension of
 * size 1 is read at 0. */
static size_t broadcast_offset(ref_shape s, const int64_t *idx, int out_ndim)
{
    size_t off = 0;
    for (int d = 0; d < s.ndim; d++) {
        int64_t i = idx[out_ndim - s.ndim + d];
        if (s.dims[d] == 1)
            i = 0;
        off = off * (size_t)s.dims[d] + (size_t)i;
    }
    return off;
}

void ref_binary(ref_binop op, const float *a, ref_shape sa, const float *b, ref_shape sb,
                float *out, ref_shape so)
{
    cr_assert(sa.ndim <= so.ndim && sb.ndim <= so.ndim,
              "reference: operands have more dimensions than the output");
    size_t  n                 = ref_numel(so);
    int64_t idx[REF_MAX_DIMS] = {0};

    for (size_t i = 0; i < n; i++) {
        size_t rest = i;
        for (int d = so.ndim - 1; d >= 0; d--) {
            idx[d] = (int64_t)(rest % (size_t)so.dims[d]);
            rest /= (size_t)so.dims[d];
        }
        double x = a[broadcast_offset(sa, idx, so.ndim)];
        double y = b[broadcast_offset(sb, idx, so.ndim)];
        double r = 0.0;
        switch (op) {
        case REF_ADD: r = x + y; break;
        case REF_SUB: r = x - y; break;
        case REF_MUL: r = x * y; break;
        case REF_DIV: r = x / y; break;
        }
        out[i] = (float)r;
    }
}

#define REF_GELU_K0 0.79788456080286535588 /* sqrt(2 / pi) */
#define REF_GELU_K1 0.044715

double ref_gelu(double x)
{
    if (isinf(x))
        return x > 0 ? x : 0.0;
    double t = tanh(REF_GELU_K0 * (x + REF_GELU_K1 * x * x * x));
    return 0.5 * x * (1.0 + t);
}

/* d/dx: 0.5 (1 + t) + 0.5 x (1 - t^2) sqrt(2/pi) (1 + 3 0.044715 x^2). */
double ref_gelu_grad(double x)
{
    if (isinf(x))
        return x > 0 ? 1.0 : 0.0;
    double t = tanh(REF_GELU_K0 * (x + REF_GELU_K1 * x * x * x));
    return 0.5 * (1.0 + t) +
           0.5 * x * (1.0 - t * t) * REF_GELU_K0 * (1.0 + 3.0 * REF_GELU_K1 * x * x);
}

void ref_unary(ref_unop op, const float *a, size_t n, float factor, float *out)
{
    for (size_t i = 0; i < n; i++) {
        double x = a[i], r = 0.0;
        switch (op) {
        case REF_NEG: r = -x; break;
        case REF_EXP: r = exp(x); break;
        case REF_LOG: r = log(x); break;
        case REF_SQRT: r = sqrt(x); break;
        case REF_RELU: r = x > 0.0 ? x : 0.0; break;
        case REF_SIGMOID: r = 1.0 / (1.0 + exp(-x)); break;
        case REF_TANH: r = tanh(x); break;
        case REF_SCALE: r = x * (double)factor; break;
        case REF_GELU: r = ref_gelu(x); break;
        }
        out[i] = (float)r;
    }
}

/* ---- linear algebra and shapes ---------------------------------------------------------- */

void ref_matmul(const float *a, const float *b, int64_t m, int64_t k, int64_t n,
                bool transpose_a, bool transpose_b, float *out)
{
    for (int64_t i = 0; i < m; i++) {
        for (int64_t j = 0; j < n; j++) {
            double acc = 0.0;
            for (int64_t p = 0; p < k; p++) {
                double x = transpose_a ? a[p * m + i] : a[i * k + p];
                double y = transpose_b ? b[j * k + p] : b[p * n + j];
                acc += x * y;
            }
            out[i * n + j] = (float)acc;
        }
    }
}

void ref_transpose(const float *a, int64_t rows, int64_t cols, float *out)
{
    for (int64_t i = 0; i < rows; i++)
        for (int64_t j = 0; j < cols; j++)
            out[j * rows + i] = a[i * cols + j];
}

void ref_matmul_batched(const float *a, const float *b, int64_t batch, int64_t m,
                        int64_t k, int64_t n, bool transpose_a, bool transpose_b,
                        float *out)
{
    for (int64_t e = 0; e < batch; e++)
        ref_matmul(a + e * m * k, b + e * k * n, m, k, n, transpose_a, transpose_b,
                   out + e * m * n);
}

/* Row-major strides of s. */
static void ref_strides(ref_shape s, int64_t *stride)
{
    int64_t st = 1;
    for (int d = s.ndim; d-- > 0;) {
        stride[d] = st;
        st *= s.dims[d];
    }
}

/* out's element i, through the coordinates of out's shape, read from a at
 * the coordinates mapped back: each output coordinate d is a's axis perm[d]. */
void ref_permute(const float *a, ref_shape s, const int *perm, float *out)
{
    int64_t   in_stride[REF_MAX_DIMS];
    ref_shape so = s;
    ref_strides(s, in_stride);
    for (int d = 0; d < s.ndim; d++)
        so.dims[d] = s.dims[perm[d]];
    size_t n = ref_numel(s);
    for (size_t i = 0; i < n; i++) {
        size_t  rest = i;
        int64_t src  = 0;
        for (int d = so.ndim; d-- > 0;) {
            int64_t c = (int64_t)(rest % (size_t)so.dims[d]);
            rest /= (size_t)so.dims[d];
            src += c * in_stride[perm[d]];
        }
        out[i] = a[src];
    }
}

/* The elements whose coordinate along axis lies in the window, in
 * row-major order. */
void ref_slice(const float *a, ref_shape s, int axis, int64_t start, int64_t length,
               float *out)
{
    int64_t stride[REF_MAX_DIMS];
    ref_strides(s, stride);
    size_t n = ref_numel(s), j = 0;
    for (size_t i = 0; i < n; i++) {
        int64_t c = (int64_t)(i / (size_t)stride[axis]) % s.dims[axis];
        if (c >= start && c < start + length)
            out[j++] = a[i];
    }
}

void ref_slice_grad(const float *g, ref_shape s, int axis, int64_t start, int64_t length,
                    float *out)
{
    int64_t stride[REF_MAX_DIMS];
    ref_strides(s, stride);
    size_t n = ref_numel(s), j = 0;
    for (size_t i = 0; i < n; i++) {
        int64_t c = (int64_t)(i / (size_t)stride[axis]) % s.dims[axis];
        out[i]    = c >= start && c < start + length ? g[j++] : 0.0f;
    }
}

void ref_reshape(const float *a, size_t n, float *out)
{
    for (size_t i = 0; i < n; i++)
        out[i] = a[i];
}

ref_shape ref_flatten_shape(ref_shape s)
{
    if (s.ndim <= 1)
        return s;
    ref_shape r;
    memset(&r, 0, sizeof r);
    r.ndim    = 2;
    r.dims[0] = s.dims[0];
    r.dims[1] = 1;
    for (int d = 1; d < s.ndim; d++)
        r.dims[1] *= s.dims[d];
    return r;
}

/* ---- reductions ---------------------------------------------------------------------------- */

float ref_sum_all(const float *a, size_t n)
{
    double acc = 0.0;
    for (size_t i = 0; i < n; i++)
        acc += a[i];
    return (float)acc;
}

float ref_mean_all(const float *a, size_t n)
{
    double acc = 0.0;
    for (size_t i = 0; i < n; i++)
        acc += a[i];
    return (float)(n ? acc / (double)n : NAN);
}

static int positive_axis(ref_shape s, int axis)
{
    int ax = axis < 0 ? axis + s.ndim : axis;
    cr_assert(ax >= 0 && ax < s.ndim, "reference: axis %d out of range", axis);
    return ax;
}

ref_shape ref_reduce_shape(ref_shape s, int axis, bool keepdim)
{
    int       ax = positive_axis(s, axis);
    ref_shape r;
    memset(&r, 0, sizeof r);
    for (int d = 0; d < s.ndim; d++) {
        if (d != ax)
            r.dims[r.ndim++] = s.dims[d];
        else if (keepdim)
            r.dims[r.ndim++] = 1;
    }
    return r;
}

/* a viewed as [outer, len, inner] around the axis */
static void split_at_axis(ref_shape s, int ax, size_t *outer, size_t *len, size_t *inner)
{
    *outer = 1;
    *inner = 1;
    for (int d = 0; d < ax; d++)
        *outer *= (size_t)s.dims[d];
    *len = (size_t)s.dims[ax];
    for (int d = ax + 1; d < s.ndim; d++)
        *inner *= (size_t)s.dims[d];
}

static void reduce_axis(const float *a, ref_shape s, int axis, bool mean, float *out)
{
    size_t outer, len, inner;
    split_at_axis(s, positive_axis(s, axis), &outer, &len, &inner);
    for (size_t o = 0; o < outer; o++) {
        for (size_t i = 0; i < inner; i++) {
            double acc = 0.0;
            for (size_t k = 0; k < len; k++)
                acc += a[(o * len + k) * inner + i];
            if (mean)
                acc = len ? acc / (double)len : NAN;
            out[o * inner + i] = (float)acc;
        }
    }
}

void ref_sum_axis(const float *a, ref_shape s, int axis, float *out)
{
    reduce_axis(a, s, axis, false, out);
}

void ref_mean_axis(const float *a, ref_shape s, int axis, float *out)
{
    reduce_axis(a, s, axis, true, out);
}

void ref_max_last(const float *a, int64_t rows, int64_t cols, float *out)
{
    for (int64_t r = 0; r < rows; r++) {
        float best = a[r * cols];
        for (int64_t c = 1; c < cols; c++)
            if (a[r * cols + c] > best)
                best = a[r * cols + c];
        out[r] = best;
    }
}

void ref_argmax_last(const float *a, int64_t rows, int64_t cols, int32_t *out)
{
    for (int64_t r = 0; r < rows; r++) {
        int64_t best = 0;
        for (int64_t c = 1; c < cols; c++)
            if (a[r * cols + c] > a[r * cols + best]) /* strict: first wins */
                best = c;
        out[r] = (int32_t)best;
    }
}

/* log(sum(exp(row))), computed stably in double */
static double row_logsumexp(const float *row, int64_t cols)
{
    double m = -INFINITY;
    for (int64_t c = 0; c < cols; c++)
        if (row[c] > m)
            m = row[c];
    double s = 0.0;
    for (int64_t c = 0; c < cols; c++)
        s += exp((double)row[c] - m);
    return m + log(s);
}

void ref_softmax_last(const float *a, int64_t rows, int64_t cols, float *out)
{
    for (int64_t r = 0; r < rows; r++) {
        double lse = row_logsumexp(a + r * cols, cols);
        for (int64_t c = 0; c < cols; c++)
            out[r * cols + c] = (float)exp((double)a[r * cols + c] - lse);
    }
}

void ref_log_softmax_last(const float *a, int64_t rows, int64_t cols, float *out)
{
    for (int64_t r = 0; r < rows; r++) {
        double lse = row_logsumexp(a + r * cols, cols);
        for (int64_t c = 0; c < cols; c++)
            out[r * cols + c] = (float)((double)a[r * cols + c] - lse);
    }
}

void ref_layer_norm_last(const float *x, const float *w, const float *b, int64_t rows,
                         int64_t cols, float eps, float *out)
{
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * cols;
        double       s = 0.0, v = 0.0;
        for (int64_t c = 0; c < cols; c++)
            s += xr[c];
        double mean = s / (double)cols;
        for (int64_t c = 0; c < cols; c++)
            v += ((double)xr[c] - mean) * ((double)xr[c] - mean);
        double sd = sqrt(v / (double)cols + (double)eps);
        for (int64_t c = 0; c < cols; c++)
            out[r * cols + c] = (float)(((double)xr[c] - mean) / sd * (double)w[c] +
                                        (b ? (double)b[c] : 0.0));
    }
}

/* ---- convolution and pooling ------------------------------------------------------------------ */

int64_t ref_conv_out_size(int64_t size, int64_t kernel, int stride, int padding)
{
    return (size + 2 * (int64_t)padding - kernel) / stride + 1;
}

void ref_conv2d(const float *x, const float *w, const float *bias, ref_conv2d_shape cs,
                float *out)
{
    int64_t oh = ref_conv_out_size(cs.h, cs.kh, cs.stride, cs.padding);
    int64_t ow = ref_conv_out_size(cs.w, cs.kw, cs.stride, cs.padding);

    for (int64_t n = 0; n < cs.n; n++)
        for (int64_t o = 0; o < cs.o; o++)
            for (int64_t y = 0; y < oh; y++)
                for (int64_t xo = 0; xo < ow; xo++) {
                    double acc = bias ? bias[o] : 0.0;
                    for (int64_t c = 0; c < cs.c; c++)
                        for (int64_t i = 0; i < cs.kh; i++)
                            for (int64_t j = 0; j < cs.kw; j++) {
                                int64_t iy = y * cs.stride - cs.padding + i;
                                int64_t ix = xo * cs.stride - cs.padding + j;
                                if (iy < 0 || iy >= cs.h || ix < 0 || ix >= cs.w)
                                    continue; /* zero padding */
                                double xv = x[((n * cs.c + c) * cs.h + iy) * cs.w + ix];
                                double wv = w[((o * cs.c + c) * cs.kh + i) * cs.kw + j];
                                acc += xv * wv;
                            }
                    out[((n * cs.o + o) * oh + y) * ow + xo] = (float)acc;
                }
}

void ref_max_pool2d(const float *x, int64_t n, int64_t c, int64_t h, int64_t w,
                    int kernel, int stride, float *out)
{
    int64_t oh = (h - kernel) / stride + 1;
    int64_t ow = (w - kernel) / stride + 1;

    for (int64_t b = 0; b < n; b++)
        for (int64_t ch = 0; ch < c; ch++)
            for (int64_t y = 0; y < oh; y++)
                for (int64_t xo = 0; xo < ow; xo++) {
                    float best = -INFINITY;
                    for (int i = 0; i < kernel; i++)
                        for (int j = 0; j < kernel; j++) {
                            float v = x[((b * c + ch) * h + y * stride + i) * w +
                                        xo * stride + j];
                            if (v > best)
                                best = v;
                        }
                    out[((b * c + ch) * oh + y) * ow + xo] = best;
                }
}

/* ---- losses --------------------------------------------------------------------------------------- */

float ref_mse_loss(const float *pred, const float *target, size_t n)
{
    double acc = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)pred[i] - (double)target[i];
        acc += d * d;
    }
    return (float)(n ? acc / (double)n : NAN);
}

float ref_cross_entropy(const float *logits, const int32_t *labels, int64_t rows,
                        int64_t classes)
{
    double acc = 0.0;
    for (int64_t r = 0; r < rows; r++) {
        const float *row = logits + r * classes;
        acc += row_logsumexp(row, classes) - (double)row[labels[r]];
    }
    return (float)(rows ? acc / (double)rows : NAN);
}

/* ---- transformers ---------------------------------------------------------------------------- */

void ref_embedding(const float *table, int64_t vocab, int64_t cols, const int32_t *ids,
                   int64_t positions, float *out)
{
    for (int64_t p = 0; p < positions; p++) {
        cr_assert(ids[p] >= 0 && ids[p] < vocab, "test bug: id %d of %lld", (int)ids[p],
                  (long long)vocab);
        for (int64_t c = 0; c < cols; c++)
            out[p * cols + c] = table[(int64_t)ids[p] * cols + c];
    }
}

void ref_embedding_grad(const float *g, const int32_t *ids, int64_t positions,
                        int64_t vocab, int64_t cols, float *out)
{
    double *acc = ref_calloc((size_t)(vocab * cols), sizeof *acc);
    for (int64_t p = 0; p < positions; p++)
        for (int64_t c = 0; c < cols; c++)
            acc[(int64_t)ids[p] * cols + c] += g[p * cols + c];
    for (int64_t k = 0; k < vocab * cols; k++)
        out[k] = (float)acc[k];
    free(acc);
}

void ref_causal_softmax(const float *x, int64_t mats, int64_t t, float scale, float *out)
{
    ref_causal_softmax_offset(x, mats, t, t, 0, scale, out);
}

void ref_causal_softmax_offset(const float *x, int64_t mats, int64_t tq, int64_t tk,
                               int64_t offset, float scale, float *out)
{
    for (int64_t r = 0; r < mats * tq; r++) {
        const float *row = x + r * tk;
        int64_t      i   = r % tq + offset; /* columns 0..i are kept */
        double       m = -INFINITY, s = 0.0;
        for (int64_t j = 0; j <= i && j < tk; j++)
            if ((double)scale * row[j] > m)
                m = (double)scale * row[j];
        for (int64_t j = 0; j <= i && j < tk; j++)
            s += exp((double)scale * row[j] - m);
        for (int64_t j = 0; j < tk; j++)
            out[r * tk + j] = j <= i ? (float)(exp((double)scale * row[j] - m) / s)
                                     : 0.0f;
    }
}

void ref_causal_attention(const float *qkv, int64_t B, int64_t T, int64_t C, int64_t H,
                          float scale, float *out)
{
    int64_t D = C / H;
    double *p = malloc((size_t)(T > 0 ? T : 1) * sizeof *p);
    if (!p)
        abort();
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < H; h++)
            for (int64_t t = 0; t < T; t++) {
                const float *q = qkv + (b * T + t) * 3 * C + h * D;
                double       m = -INFINITY, s = 0.0;
                for (int64_t j = 0; j <= t; j++) {
                    const float *k = qkv + (b * T + j) * 3 * C + C + h * D;
                    double       d = 0.0;
                    for (int64_t e = 0; e < D; e++)
                        d += (double)q[e] * k[e];
                    p[j] = (double)scale * d;
                    m    = p[j] > m ? p[j] : m;
                }
                for (int64_t j = 0; j <= t; j++)
                    s += p[j] = exp(p[j] - m);
                for (int64_t e = 0; e < D; e++) {
                    double y = 0.0;
                    for (int64_t j = 0; j <= t; j++)
                        y += p[j] / s * qkv[(b * T + j) * 3 * C + 2 * C + h * D + e];
                    out[(b * T + t) * C + h * D + e] = (float)y;
                }
            }
    free(p);
}
