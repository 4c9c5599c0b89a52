/* tools/bench/compare.h — another library's SGEMM, run by kiln-bench on the
 * same shapes in the same run (--compare NAME), to print the ratio.
 *
 * A reference is a table of functions in its own file (compare_openblas.c,
 * compare_onednn.c);
 * adding one is a new file and a line in gemm.c's list. Matrices are
 * row-major, as in kiln: C [M,N] = op(A) [M,K] @ op(B) [K,N], op a transpose
 * or not.
 */
#ifndef KILN_BENCH_COMPARE_H
#define KILN_BENCH_COMPARE_H

#include <kiln/kiln.h>

#include <stdbool.h>
#include <stddef.h>

typedef struct bench_reference {
    const char *name; /* "openblas" */
    /* false + reason if unavailable; ctx is the context kiln's side runs on,
     * for a reference that runs on the same device */
    bool (*open)(const kiln_context *ctx, char *why, size_t len);
    /* row-major C [MxN] = op(A) @ op(B): A stored [MxK], or [KxM] when ta;
     * B stored [KxN], or [NxK] when tb. NULL on failure. */
    void *(*setup)(int m, int n, int k, bool ta, bool tb, const float *a, const float *b);
    double (*run)(void *state); /* seconds for one complete sgemm, <0 on error */
    bool (*result)(void *state, float *c); /* copies C out, for a correctness check */
    void (*teardown)(void *state);
    void (*close)(void);
    /* whether it has a bf16 GEMM (kiln-bench gemm --dtype bf16); none has
     * an f16 one */
    bool bf16;
} bench_reference;

/* The thread count the reference should use (kiln-bench sets it before open);
 * 0 leaves the library's default. */
extern int bench_reference_threads;
/* The operands' type (kiln-bench gemm --dtype, set before open): KILN_F32,
 * or KILN_BF16 for a reference with .bf16 (a bf16 GEMM with f32 results). */
extern kiln_dtype bench_reference_dtype;

/* Every reference kiln-bench knows, by --compare name; NULL ends the list
 * (gemm.c). */
extern const bench_reference *const bench_references[];

/* The reference called `name`, or NULL for none or an unknown one (gemm.c). */
const bench_reference *bench_find_reference(const char *name);

/* ---- references that multiply host matrices (compare_host.c) ---------- */

typedef struct bench_host_state {
    int          m, n, k;
    bool         ta, tb;
    const float *a, *b; /* kiln's side's operands           */
    float       *c;     /* the reference's own [m, n] result */
    /* with bench_reference_dtype KILN_BF16: a and b rounded to it        */
    uint16_t *a16, *b16;
} bench_host_state;

void *bench_host_setup(int m, int n, int k, bool ta, bool tb, const float *a,
                       const float *b);
bool  bench_host_result(void *state, float *c);
void  bench_host_teardown(void *state);

extern const bench_reference bench_openblas;
extern const bench_reference bench_onednn;
#ifdef KILN_BENCH_CLBLAST
extern const bench_reference bench_clblast; /* built with the OpenCL backend */
#endif

#endif /* KILN_BENCH_COMPARE_H */
