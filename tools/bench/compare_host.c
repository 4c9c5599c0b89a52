/* tools/bench/compare_host.c — what the references that multiply host
 * matrices share (compare_openblas.c, compare_onednn.c): the operands kiln's
 * side made, and a C of their own to write and hand back. */
#include "compare.h"

#include <stdlib.h>
#include <string.h>

void *bench_host_setup(int m, int n, int k, bool ta, bool tb, const float *a,
                       const float *b)
{
    bench_host_state *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    *s   = (bench_host_state){.m = m, .n = n, .k = k, .ta = ta, .tb = tb, .a = a, .b = b};
    s->c = malloc((size_t)m * (size_t)n * sizeof *s->c + 1);
    if (s->c && bench_reference_dtype == KILN_BF16) {
        size_t na = (size_t)m * (size_t)k, nb = (size_t)k * (size_t)n;
        s->a16    = malloc(na * 2 + 2);
        s->b16    = malloc(nb * 2 + 2);
        if (s->a16 && s->b16) {
            kiln_convert(s->a16, KILN_BF16, a, KILN_F32, na);
            kiln_convert(s->b16, KILN_BF16, b, KILN_F32, nb);
        }
    }
    if (!s->c || (bench_reference_dtype == KILN_BF16 && (!s->a16 || !s->b16))) {
        bench_host_teardown(s);
        return NULL;
    }
    return s;
}

bool bench_host_result(void *state, float *c)
{
    bench_host_state *s = state;
    memcpy(c, s->c, (size_t)s->m * (size_t)s->n * sizeof *c);
    return true;
}

void bench_host_teardown(void *state)
{
    bench_host_state *s = state;
    if (s) {
        free(s->c);
        free(s->a16);
        free(s->b16);
    }
    free(s);
}
