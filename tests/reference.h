/* tests/reference.h — a plain reference for every kiln op, for the op tests.
 *
 * Written from the semantics in kiln.h, not from any backend: naive loops,
 * double accumulation, explicit multi-index broadcasting. Inputs and outputs
 * are f32 (what a backend reads and writes); every sum is taken in double, so
 * the only rounding left is the final one to f32. Tensors are contiguous and
 * row-major, as everywhere in kiln.
 */
#ifndef KILN_TESTS_REFERENCE_H
#define KILN_TESTS_REFERENCE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define REF_MAX_DIMS 4

/* A shape: 0 dimensions is a scalar with one element. */
typedef struct ref_shape {
    int     ndim;
    int64_t dims[REF_MAX_DIMS];
} ref_shape;

/* ref_shape_of(KILN_SHAPE(3, 4)) */
ref_shape ref_shape_of(int ndim, const int64_t *dims);
size_t    ref_numel(ref_shape s);
bool      ref_shape_eq(ref_shape a, ref_shape b);
/* "[3, 4]", "[]" for a scalar; returns buf. */
char *ref_shape_str(ref_shape s, char *buf, size_t size);
/* The same in one of 8 static buffers used in turn, so that a message can
 * name a few shapes at once: for labels and failure messages. */
const char *ref_shape_text(ref_shape s);

/* ---- data ---------------------------------------------------------------- */

/* xorshift64*: the same seed gives the same numbers on every machine. */
typedef struct ref_rng {
    uint64_t state;
} ref_rng;

void ref_rng_seed(ref_rng *rng, uint64_t seed);
/* A seed from a string (FNV-1a), e.g. a test case's label, so that each
 * case gets its own numbers and the same ones on every run. */
uint64_t ref_hash_str(const char *s);
uint64_t ref_rng_next(ref_rng *rng);
/* uniform in [lo, hi] */
float ref_rng_uniform(ref_rng *rng, float lo, float hi);

/* calloc of n elements (of at least one, so that empty tensors can be read
 * into it); asserts (Criterion) that it succeeded. */
void *ref_calloc(size_t n, size_t size);

/* uniform in [-2, 2] */
void ref_fill(float *x, size_t n, uint64_t seed);
/* uniform in [lo, hi] */
void ref_fill_uniform(float *x, size_t n, uint64_t seed, float lo, float hi);
/* uniform in [0.1, 2]: for log and sqrt */
void ref_fill_positive(float *x, size_t n, uint64_t seed);
/* magnitude in [0.5, 2], either sign: for divisors */
void ref_fill_nonzero(float *x, size_t n, uint64_t seed);
/* integers in {-2, ..., 2}, so that maxima tie often */
void ref_fill_ties(float *x, size_t n, uint64_t seed);
/* center + uniform in [-2, 2] */
void ref_fill_around(float *x, size_t n, uint64_t seed, float center);
/* integers in [0, classes) */
void ref_fill_labels(int32_t *x, size_t n, int32_t classes, uint64_t seed);

/* ---- comparison ---------------------------------------------------------- */

typedef struct ref_tol {
    double abs; /* an element passes when |got - want| <= abs + rel * |want| */
    double rel;
} ref_tol;

/* Asserts (Criterion) that every element of `got` is within tolerance of
 * `want`; NaN matches NaN and an infinity matches itself. On failure the
 * message names `what`, the first bad multi-index, got and expected, and the
 * largest absolute and relative errors over the whole tensor. */
void ref_expect_close(const char *what, const float *got, const float *want,
                      ref_shape shape, ref_tol tol);
/* The same against a reference computed in double, compared unrounded. */
void ref_expect_close_f64(const char *what, const float *got, const double *want,
                          ref_shape shape, ref_tol tol);
/* Exact comparison for i32 tensors (argmax), reported as above. */
void ref_expect_equal_i32(const char *what, const int32_t *got, const int32_t *want,
                          ref_shape shape);
/* Asserts that every element is finite, naming the first that is not. */
void ref_expect_finite(const char *what, const float *got, ref_shape shape);

/* ---- elementwise ---------------------------------------------------------- */

typedef enum ref_binop { REF_ADD, REF_SUB, REF_MUL, REF_DIV } ref_binop;

/* kiln's rule: equal shapes, or the smaller one, after dropping its leading
 * 1s, equals the trailing dimensions of the larger. Sets *out to the larger
 * shape; false if the shapes do not broadcast. */
bool ref_broadcast_shape(ref_shape a, ref_shape b, ref_shape *out);
/* out[idx] = a[idx'] op b[idx''], where idx' and idx'' are idx aligned to the
 * right with size-1 dimensions pinned to 0. `out` has shape `so`. */
void ref_binary(ref_binop op, const float *a, ref_shape sa, const float *b, ref_shape sb,
                float *out, ref_shape so);

typedef enum ref_unop {
    REF_NEG,
    REF_EXP,
    REF_LOG,
    REF_SQRT,
    REF_RELU,
    REF_SIGMOID,
    REF_TANH,
    REF_SCALE, /* uses `factor` */
    REF_GELU,  /* tanh approximation; -inf gives 0, +inf gives +inf */
} ref_unop;

void ref_unary(ref_unop op, const float *a, size_t n, float factor, float *out);

/* GELU (tanh approximation), 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))),
 * and its derivative, in double, straight from that formula; at -inf and +inf
 * their limits (0 and +inf; 0 and 1). */
double ref_gelu(double x);
double ref_gelu_grad(double x);

/* ---- linear algebra and shapes ------------------------------------------- */

/* out [M, N] = op(a) @ op(b); a is stored [M, K], or [K, M] if transpose_a;
 * b is stored [K, N], or [N, K] if transpose_b. K = 0 gives zeros. */
void ref_matmul(const float *a, const float *b, int64_t m, int64_t k, int64_t n,
                bool transpose_a, bool transpose_b, float *out);
/* ref_matmul once per batch entry: a [batch, (M, K)], b [batch, (K, N)]
 * stored as ref_matmul's, out [batch, M, N]. */
void ref_matmul_batched(const float *a, const float *b, int64_t batch, int64_t m,
                        int64_t k, int64_t n, bool transpose_a, bool transpose_b,
                        float *out);
/* out = a [s] with its axes permuted: out's axis d is a's axis perm[d]. */
void ref_permute(const float *a, ref_shape s, const int *perm, float *out);
/* out = a [s] restricted to [start, start + length) along axis. */
void ref_slice(const float *a, ref_shape s, int axis, int64_t start, int64_t length,
               float *out);
/* out [s] = zeros, with g (s with length along axis) at [start, start +
 * length) along axis: the gradient of ref_slice. */
void ref_slice_grad(const float *g, ref_shape s, int axis, int64_t start, int64_t length,
                    float *out);
/* out [cols, rows] = a [rows, cols] transposed */
void ref_transpose(const float *a, int64_t rows, int64_t cols, float *out);
/* reshape and flatten keep the row-major order: the data is copied as is. */
void ref_reshape(const float *a, size_t n, float *out);
/* [N, d1, ...] -> [N, d1 * ...]; a 1-D shape stays as it is */
ref_shape ref_flatten_shape(ref_shape s);

/* ---- reductions ------------------------------------------------------------ */

float ref_sum_all(const float *a, size_t n);
float ref_mean_all(const float *a, size_t n); /* NaN for n = 0 */
/* The shape a reduction over `axis` (negative counts from the end) leaves. */
ref_shape ref_reduce_shape(ref_shape s, int axis, bool keepdim);
/* Over one axis; `out` is laid out as ref_reduce_shape (keepdim or not, the
 * order of elements is the same). */
void ref_sum_axis(const float *a, ref_shape s, int axis, float *out);
void ref_mean_axis(const float *a, ref_shape s, int axis, float *out);

/* Along the last axis of [rows, cols], cols >= 1 for max and argmax. */
void ref_max_last(const float *a, int64_t rows, int64_t cols, float *out);
void ref_argmax_last(const float *a, int64_t rows, int64_t cols, int32_t *out);
void ref_softmax_last(const float *a, int64_t rows, int64_t cols, float *out);
void ref_log_softmax_last(const float *a, int64_t rows, int64_t cols, float *out);

/* Layer norm of each row of [rows, cols] (cols >= 1): (x - mean) /
 * sqrt(var + eps) * w + b, var the biased variance; b may be NULL (none).
 * Statistics in double, two passes. */
void ref_layer_norm_last(const float *x, const float *w, const float *b, int64_t rows,
                         int64_t cols, float eps, float *out);

/* ---- convolution and pooling ----------------------------------------------- */

typedef struct ref_conv2d_shape {
    int64_t n, c, h, w; /* input x [n, c, h, w]          */
    int64_t o, kh, kw;  /* weights [o, c, kh, kw]         */
    int     stride;
    int     padding;
} ref_conv2d_shape;

/* (size + 2 * padding - kernel) / stride + 1 */
int64_t ref_conv_out_size(int64_t size, int64_t kernel, int stride, int padding);
/* out [n, o, oh, ow]; bias [o] or NULL. Cross-correlation, zero padding. */
void ref_conv2d(const float *x, const float *w, const float *bias, ref_conv2d_shape cs,
                float *out);
/* x [n, c, h, w] -> out [n, c, (h - k) / s + 1, (w - k) / s + 1] */
void ref_max_pool2d(const float *x, int64_t n, int64_t c, int64_t h, int64_t w,
                    int kernel, int stride, float *out);

/* ---- losses ------------------------------------------------------------------ */

/* mean((pred - target)^2) over n elements */
float ref_mse_loss(const float *pred, const float *target, size_t n);
/* mean over rows of logsumexp(logits[r]) - logits[r][labels[r]] */
float ref_cross_entropy(const float *logits, const int32_t *labels, int64_t rows,
                        int64_t classes);

/* ---- transformers ------------------------------------------------------------ */

/* out [positions, cols] = rows ids[p] of table [vocab, cols]; ids in range */
void ref_embedding(const float *table, int64_t vocab, int64_t cols, const int32_t *ids,
                   int64_t positions, float *out);
/* out [vocab, cols]: row v is the sum of g's rows p with ids[p] == v */
void ref_embedding_grad(const float *g, const int32_t *ids, int64_t positions,
                        int64_t vocab, int64_t cols, float *out);
/* x [mats, t, t]: row i of each matrix is softmax(scale * x[i, 0..i]) in
 * columns j <= i, exactly 0 in the others */
void ref_causal_softmax(const float *x, int64_t mats, int64_t t, float scale, float *out);
/* The same with queries [mats, tq] against keys [tk]: row i keeps columns
 * j <= i + offset (none when negative: the row is 0). */
/* qkv [B, T, 3C] with H heads -> out [B, T, C]: GPT-2's causal attention
 * (kiln_causal_attention), in double */
void ref_causal_attention(const float *qkv, int64_t B, int64_t T, int64_t C, int64_t H,
                          float scale, float *out);
void ref_causal_softmax_offset(const float *x, int64_t mats, int64_t tq, int64_t tk,
                               int64_t offset, float scale, float *out);

#endif /* KILN_TESTS_REFERENCE_H */
