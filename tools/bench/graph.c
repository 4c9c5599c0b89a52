/* tools/bench/graph.c — the graphs kiln-bench times: random inputs, compile,
 * run, and the rate of each repeat. */
#include "bench.h"

#include <stdio.h>
#include <stdlib.h>

bool bench_run_graph(void *graph)
{
    if (kiln_graph_run(graph) != KILN_OK) {
        fprintf(stderr, "kiln-bench: kiln_graph_run: %s\n", kiln_last_error());
        return false;
    }
    return true;
}

float *bench_random_floats(size_t n, unsigned seed)
{
    float *x = malloc((n ? n : 1) * sizeof *x);
    if (!x)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        x[i] = (float)((seed >> 8) & 0xffff) / 32768.0f - 1.0f;
    }
    return x;
}

bool bench_fill_leaf(kiln_tensor *t, unsigned seed)
{
    size_t     n  = (size_t)kiln_tensor_numel(t);
    kiln_dtype dt = kiln_tensor_dtype(t);
    float     *x  = bench_random_floats(n, seed);
    /* a 16-bit leaf gets the same values rounded, in place */
    bool ok = x && kiln_convert(x, dt, x, KILN_F32, n) == KILN_OK &&
              kiln_tensor_write(t, x, n * kiln_dtype_size(dt)) == KILN_OK;
    if (!ok)
        fprintf(stderr, "kiln-bench: cannot fill an input: %s\n",
                x ? kiln_last_error() : "out of memory");
    free(x);
    return ok;
}

bool bench_compile(kiln_graph *g, kiln_tensor *out)
{
    if (kiln_output(g, out) != KILN_OK || kiln_graph_compile(g) != KILN_OK) {
        fprintf(stderr, "kiln-bench: building the graph failed: %s\n",
                kiln_graph_error(g) ? kiln_graph_error(g) : kiln_last_error());
        return false;
    }
    return true;
}

bench_stats bench_rate_stats(const double *seconds, int n, double work)
{
    double rate[64];
    for (int i = 0; i < n; i++)
        rate[i] = work / seconds[i] / 1e9;
    return bench_stats_of(rate, n);
}
