/* core/train/init.c — parameter initialisers: values drawn on the host, then written.
 *
 * The generator is xoshiro256** (Blackman and Vigna), its state seeded by four
 * steps of splitmix64 from the 64-bit seed, as its authors recommend. Uniform
 * values take 53 bits of a draw as a double in [0, 1); normal values come from
 * Box-Muller in double, both values of each pair used in turn. The integer
 * steps are exact on every platform, and uniform values are a single rounding
 * of exact arithmetic, so they are the same everywhere. Normal values also go
 * through libm's log, sqrt, cos and sin: two libms that differ in the last bit
 * of a double could, rarely, give a float one step apart.
 *
 * Values are written with kiln_tensor_write, so an initialiser works before
 * compile (the value is staged) and after it (it goes to the device).
 */
#include "../kiln-impl.h"

#include <math.h>
#include <stdlib.h>

uint64_t kiln__splitmix64(uint64_t *state)
{
    uint64_t z = (*state += UINT64_C(0x9E3779B97F4A7C15));
    z          = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    z          = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
    return z ^ (z >> 31);
}

typedef struct rng {
    uint64_t s[4];
} rng;

static void rng_seed(rng *r, uint64_t seed)
{
    for (int i = 0; i < 4; i++)
        r->s[i] = kiln__splitmix64(&seed);
}

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t rng_next(rng *r)
{
    uint64_t *s      = r->s;
    uint64_t  result = rotl(s[1] * 5, 7) * 9;
    uint64_t  t      = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

/* [0, 1) with 53 random bits. */
static double rng_unit(rng *r)
{
    return (double)(rng_next(r) >> 11) * 0x1.0p-53;
}

typedef enum fill_kind { FILL_CONSTANT, FILL_UNIFORM, FILL_NORMAL } fill_kind;

static void fill_uniform(float *v, size_t n, rng *r, double lo, double hi)
{
    for (size_t i = 0; i < n; i++) {
        float x = (float)(lo + (hi - lo) * rng_unit(r));
        /* Rounding to float can reach hi; keep the interval half-open. */
        v[i] = x >= (float)hi && lo < hi ? nextafterf((float)hi, (float)lo) : x;
    }
}

static void fill_normal(float *v, size_t n, rng *r, double mean, double stddev)
{
    static const double two_pi = 6.283185307179586476925;
    for (size_t i = 0; i < n; i += 2) {
        double u1     = 1.0 - rng_unit(r); /* (0, 1]: log(u1) is finite */
        double u2     = rng_unit(r);
        double radius = sqrt(-2.0 * log(u1));
        v[i]          = (float)(mean + stddev * radius * cos(two_pi * u2));
        if (i + 1 < n)
            v[i + 1] = (float)(mean + stddev * radius * sin(two_pi * u2));
    }
}

/* The tensor must be an f32 parameter of a graph without errors in it. */
static kiln_status check_param(const char *call, const kiln_tensor *p)
{
    if (!p)
        return kiln__error(KILN_ERR_INVALID_ARG, "%s: the parameter is NULL", call);
    if (p->flags & KILN__POISON)
        return kiln__error(KILN_ERR_STATE,
                           "%s: the tensor is poisoned by an earlier "
                           "error: %s",
                           call, kiln_graph_error(p->graph));
    char d[160];
    if (!(p->flags & KILN__PARAM))
        return kiln__error(KILN_ERR_INVALID_ARG,
                           "%s: %s is not a parameter; "
                           "initialisers write tensors made with kiln_param",
                           call, kiln__describe(d, sizeof d, p));
    if (p->node.dtype != KILN_F32)
        return kiln__error(KILN_ERR_INVALID_ARG, "%s: %s is not f32", call,
                           kiln__describe(d, sizeof d, p));
    return KILN_OK;
}

static kiln_status fill_and_write(kiln_tensor *p, fill_kind kind, double a, double b,
                                  uint64_t seed)
{
    size_t n = (size_t)p->node.numel;
    float *v = kiln__malloc(n * sizeof *v, "initial parameter values");
    if (!v)
        return KILN_ERR_NO_MEMORY;
    rng r;
    rng_seed(&r, seed);
    switch (kind) {
    case FILL_CONSTANT:
        for (size_t i = 0; i < n; i++)
            v[i] = (float)a;
        break;
    case FILL_UNIFORM: fill_uniform(v, n, &r, a, b); break;
    case FILL_NORMAL: fill_normal(v, n, &r, a, b); break;
    }
    kiln_status st = kiln_tensor_write(p, v, n * sizeof *v);
    free(v);
    return st;
}

static kiln_status check_finite(const char *call, const char *what, double x)
{
    if (isfinite(x))
        return KILN_OK;
    return kiln__error(KILN_ERR_INVALID_ARG, "%s: %s is %g; expected a finite number",
                       call, what, x);
}

KILN_API kiln_status kiln_init_constant(kiln_tensor *p, float value)
{
    kiln_status st = check_param("kiln_init_constant", p);
    return st != KILN_OK ? st : fill_and_write(p, FILL_CONSTANT, value, 0, 0);
}

KILN_API kiln_status kiln_init_uniform(kiln_tensor *p, float lo, float hi, uint64_t seed)
{
    static const char call[] = "kiln_init_uniform";
    kiln_status       st     = check_param(call, p);
    if (st == KILN_OK)
        st = check_finite(call, "lo", lo);
    if (st == KILN_OK)
        st = check_finite(call, "hi", hi);
    if (st == KILN_OK && lo > hi)
        st = kiln__error(KILN_ERR_INVALID_ARG,
                         "%s: lo %g is greater than hi %g; "
                         "expected lo <= hi",
                         call, (double)lo, (double)hi);
    return st != KILN_OK ? st : fill_and_write(p, FILL_UNIFORM, lo, hi, seed);
}

KILN_API kiln_status kiln_init_normal(kiln_tensor *p, float mean, float stddev,
                                      uint64_t seed)
{
    static const char call[] = "kiln_init_normal";
    kiln_status       st     = check_param(call, p);
    if (st == KILN_OK)
        st = check_finite(call, "mean", mean);
    if (st == KILN_OK)
        st = check_finite(call, "stddev", stddev);
    if (st == KILN_OK && stddev < 0)
        st = kiln__error(KILN_ERR_INVALID_ARG,
                         "%s: stddev %g is negative; expected "
                         "stddev >= 0",
                         call, (double)stddev);
    return st != KILN_OK ? st : fill_and_write(p, FILL_NORMAL, mean, stddev, seed);
}

/* fan_in and fan_out as kiln.h defines them: [in, out] for a dense weight,
 * [O, C, KH, KW] for a conv weight. */
static kiln_status fans(const char *call, const kiln_tensor *p, double *in, double *out)
{
    const int64_t *d = p->node.dims;
    if (p->node.ndim == 2) {
        *in  = (double)d[0];
        *out = (double)d[1];
        return KILN_OK;
    }
    if (p->node.ndim == 4) {
        *in  = (double)(d[1] * d[2] * d[3]);
        *out = (double)(d[0] * d[2] * d[3]);
        return KILN_OK;
    }
    char s[160];
    return kiln__error(KILN_ERR_SHAPE,
                       "%s: %s has %d dimension%s; fan_in and fan_out "
                       "are defined for a dense weight [in, out] or a conv weight "
                       "[O, C, KH, KW]",
                       call, kiln__describe(s, sizeof s, p), p->node.ndim,
                       p->node.ndim == 1 ? "" : "s");
}

/* A parameter with a dense or conv weight's shape, and its fans. */
static kiln_status check_weight(const char *call, const kiln_tensor *p, double *in,
                                double *out)
{
    kiln_status st = check_param(call, p);
    return st != KILN_OK ? st : fans(call, p, in, out);
}

KILN_API kiln_status kiln_init_xavier(kiln_tensor *p, uint64_t seed)
{
    double      in, out;
    kiln_status st = check_weight("kiln_init_xavier", p, &in, &out);
    if (st != KILN_OK)
        return st;
    /* An empty weight has no fans and no values to draw. */
    double a = in + out > 0 ? sqrt(6.0 / (in + out)) : 0.0;
    return fill_and_write(p, FILL_UNIFORM, -a, a, seed);
}

KILN_API kiln_status kiln_init_he(kiln_tensor *p, uint64_t seed)
{
    double      in, out;
    kiln_status st = check_weight("kiln_init_he", p, &in, &out);
    if (st != KILN_OK)
        return st;
    return fill_and_write(p, FILL_NORMAL, 0.0, in > 0 ? sqrt(2.0 / in) : 0.0, seed);
}
