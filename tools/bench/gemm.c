/* tools/bench/gemm.c — kiln-bench gemm: matmul in GFLOP/s, square and the
 * shapes of an MLP's and a CNN's training, next to the FMA peak; with
 * --compare, another library's SGEMM on the same shapes, interleaved with
 * kiln's, its result checked against kiln's. */
#include "bench.h"
#include "compare.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int        bench_reference_threads;
kiln_dtype bench_reference_dtype = KILN_F32;

const bench_reference *const bench_references[] = {
    &bench_openblas,
    &bench_onednn,
#ifdef KILN_BENCH_CLBLAST
    &bench_clblast,
#endif
    NULL,
};

/* The reference --compare names, or NULL for none or an unknown one. */
const bench_reference *bench_find_reference(const char *name)
{
    for (size_t i = 0; name && bench_references[i]; i++)
        if (strcmp(bench_references[i]->name, name) == 0)
            return bench_references[i];
    return NULL;
}

/* C [M,N] = op(A) [M,K] @ op(B) [K,N]; ta: A is stored [K,M] (read
 * transposed), tb: B is stored [N,K]. */
typedef struct gemm_shape {
    int  m, k, n;
    bool ta, tb;
} gemm_shape;

/* Square sizes, and the products of a batch-64 MLP 784-256-128-10 as
 * training runs them: forward x @ w, then for each layer the weight's
 * gradient x^T @ g and the input's g @ w^T (none for the first layer, whose
 * input needs no gradient); then the CNN's dense layer 6272-128. */
static const gemm_shape default_gemm_shapes[] = {
    {128, 128, 128, false, false},    {256, 256, 256, false, false},
    {512, 512, 512, false, false},    {1024, 1024, 1024, false, false},
    {2048, 2048, 2048, false, false}, {64, 784, 256, false, false},
    {64, 256, 128, false, false},     {64, 128, 10, false, false},
    {784, 64, 256, true, false},      {256, 64, 128, true, false},
    {128, 64, 10, true, false},       {64, 128, 256, false, true},
    {64, 10, 128, false, true},       {64, 6272, 128, false, false},
    {6272, 64, 128, true, false},     {64, 128, 6272, false, true},
};

typedef struct ref_run {
    const bench_reference *ref;
    void                  *state;
} ref_run;

static bool run_reference(void *arg)
{
    ref_run *r = arg;
    return r->ref->run(r->state) >= 0.0;
}

/* max |x - y| / max |y|: the error of x relative to y's scale. */
static double max_rel_error(const float *x, const float *y, size_t n)
{
    double err = 0.0, scale = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)x[i] - (double)y[i]);
        err      = d > err ? d : err;
        scale    = fabs((double)y[i]) > scale ? fabs((double)y[i]) : scale;
    }
    return scale > 0 ? err / scale : err;
}

typedef struct gemm_result {
    bench_stats kiln; /* GFLOP/s of each repeat: worst, median, best */
    bench_stats ref;
    double      rel_error;
    bool        have_ref;
    bench_stats f32;       /* --dtype f16/bf16: kiln's f32 on the same shape */
    double      f32_error; /* the 16-bit result against it                  */
} gemm_result;

static bool gemm_reference(const bench_options *o, const bench_reference *ref,
                           const gemm_shape *s, const float *a, const float *b,
                           const float *c_kiln, gemm_result *res, double *secs)
{
    void *state = ref->setup(s->m, s->n, s->k, s->ta, s->tb, a, b);
    if (!state) {
        fprintf(stderr, "kiln-bench: %s: setup failed for %dx%dx%d\n", ref->name, s->m,
                s->k, s->n);
        return false;
    }
    ref_run rr = {ref, state};
    size_t  nc = (size_t)s->m * (size_t)s->n;
    float  *c  = malloc((nc ? nc : 1) * sizeof *c);
    bool    ok = c && bench_time(run_reference, &rr, o->repeat, o->min_s, secs) &&
              ref->result(state, c);
    if (ok) {
        res->ref = bench_rate_stats(secs, o->repeat, 2.0 * s->m * s->n * (double)s->k);
        res->rel_error = max_rel_error(c_kiln, c, nc);
        res->have_ref  = true;
    }
    free(c);
    ref->teardown(state);
    return ok;
}

/* One product as a compiled graph: operands and result of dtype, a and b
 * (f32 values, exact in dtype) written in; NULL after a message. */
static kiln_graph *gemm_graph(kiln_context *ctx, const gemm_shape *s, kiln_dtype dtype,
                              const float *a, const float *b, kiln_tensor **tc)
{
    size_t       na = (size_t)s->m * s->k, nb = (size_t)s->k * s->n;
    kiln_graph  *g  = kiln_graph_new(ctx);
    kiln_tensor *ta = s->ta ? kiln_input(g, "a", dtype, KILN_SHAPE(s->k, s->m))
                            : kiln_input(g, "a", dtype, KILN_SHAPE(s->m, s->k));
    kiln_tensor *tb = s->tb ? kiln_input(g, "b", dtype, KILN_SHAPE(s->n, s->k))
                            : kiln_input(g, "b", dtype, KILN_SHAPE(s->k, s->n));
    *tc             = kiln_matmul_t(g, ta, tb, s->ta, s->tb);
    size_t size     = kiln_dtype_size(dtype);
    void  *buf      = malloc((na > nb ? na : nb) * size + 4);
    bool   ok       = g && buf && bench_compile(g, *tc) &&
              kiln_convert(buf, dtype, a, KILN_F32, na) == KILN_OK &&
              kiln_tensor_write(ta, buf, na * size) == KILN_OK &&
              kiln_convert(buf, dtype, b, KILN_F32, nb) == KILN_OK &&
              kiln_tensor_write(tb, buf, nb * size) == KILN_OK;
    free(buf);
    if (!ok) {
        fprintf(stderr, "kiln-bench: %s\n",
                g && kiln_graph_error(g) ? kiln_graph_error(g) : kiln_last_error());
        kiln_graph_free(g);
        return NULL;
    }
    return g;
}

/* Times g (one product of `work` FLOP) into *stats and reads its result as
 * f32 into c (nc elements of dtype). */
static bool gemm_time(const bench_options *o, kiln_graph *g, kiln_tensor *tc,
                      kiln_dtype dtype, double work, float *c, size_t nc,
                      bench_stats *stats)
{
    double secs[64];
    void  *raw = malloc(nc * 4 + 4);
    bool   ok  = raw && bench_time(bench_run_graph, g, o->repeat, o->min_s, secs) &&
              kiln_tensor_read(tc, raw, nc * kiln_dtype_size(dtype)) == KILN_OK &&
              kiln_convert(c, KILN_F32, raw, dtype, nc) == KILN_OK;
    if (ok)
        *stats = bench_rate_stats(secs, o->repeat, work);
    free(raw);
    return ok;
}

static bool bench_gemm_shape(const bench_options *o, kiln_context *ctx,
                             const bench_reference *ref, const gemm_shape *s,
                             gemm_result *res)
{
    bool        ok = false;
    double      secs[64];
    kiln_dtype  dt = o->dtype;
    size_t      na = (size_t)s->m * s->k, nb = (size_t)s->k * s->n, nc = (size_t)s->m * s->n;
    float      *a = bench_random_floats(na, 1), *b = bench_random_floats(nb, 2);
    float      *c  = malloc((nc ? nc : 1) * sizeof *c);
    float      *c32 = dt != KILN_F32 ? malloc((nc ? nc : 1) * sizeof *c32) : NULL;
    kiln_tensor *tc, *tc32;
    kiln_graph  *g = NULL, *g32 = NULL;
    memset(res, 0, sizeof *res);
    if (!a || !b || !c || (dt != KILN_F32 && !c32))
        goto out;
    /* 16 bits: the operands rounded to it, so that f32 and the reference
     * multiply the same values */
    if (dt != KILN_F32) {
        uint16_t *h = malloc((na > nb ? na : nb) * sizeof *h + 2);
        if (!h)
            goto out;
        float *both[2] = {a, b};
        size_t count[2] = {na, nb};
        for (int i = 0; i < 2; i++) {
            kiln_convert(h, dt, both[i], KILN_F32, count[i]);
            kiln_convert(both[i], KILN_F32, h, dt, count[i]);
        }
        free(h);
    }
    double work = 2.0 * s->m * s->n * (double)s->k;
    if (!(g = gemm_graph(ctx, s, dt, a, b, &tc)) ||
        !gemm_time(o, g, tc, dt, work, c, nc, &res->kiln))
        goto out;
    if (dt != KILN_F32) { /* kiln's f32, side by side */
        if (!(g32 = gemm_graph(ctx, s, KILN_F32, a, b, &tc32)) ||
            !gemm_time(o, g32, tc32, KILN_F32, work, c32, nc, &res->f32))
            goto out;
        res->f32_error = max_rel_error(c, c32, nc);
    }
    /* a reference that fails leaves kiln's figures, without its column */
    ok = true;
    if (ref && !gemm_reference(o, ref, s, a, b, c, res, secs))
        fprintf(stderr, "kiln-bench: %s failed on %dx%dx%d: no comparison for it\n",
                ref->name, s->m, s->k, s->n);
    /* the second kiln measurement, after the others: the best of both */
    if (ok && (ref || g32) && bench_time(bench_run_graph, g, o->repeat, o->min_s, secs)) {
        bench_stats again = bench_rate_stats(secs, o->repeat, work);
        if (again.median > res->kiln.median)
            res->kiln = again;
    }
out:
    kiln_graph_free(g);
    kiln_graph_free(g32);
    free(a);
    free(b);
    free(c);
    free(c32);
    return ok;
}

/* "1024" is square; "64x784x256" is M x K x N; a suffix ":tn", ":nt" or
 * ":tt" reads A and/or B transposed (":nn" is the default). */
static int parse_gemm_sizes(const char *list, gemm_shape *out, int cap)
{
    int   n    = 0;
    char *copy = strdup(list), *save = NULL;
    for (char *tok = strtok_r(copy, ",", &save); tok && n < cap;
         tok       = strtok_r(NULL, ",", &save)) {
        int   m, k, nn, used = 0;
        char *trans = strchr(tok, ':');
        bool  ta = false, tb = false, good = true;
        if (trans) {
            *trans++ = '\0';
            good = strlen(trans) == 2 && strchr("nt", trans[0]) && strchr("nt", trans[1]);
            ta   = trans[0] == 't';
            tb   = trans[1] == 't';
        }
        if (good && sscanf(tok, "%dx%dx%d%n", &m, &k, &nn, &used) == 3 &&
            tok[used] == '\0' && m > 0 && k > 0 && nn > 0)
            out[n++] = (gemm_shape){m, k, nn, ta, tb};
        else if (good && sscanf(tok, "%d%n", &m, &used) == 1 && tok[used] == '\0' &&
                 m > 0)
            out[n++] = (gemm_shape){m, m, m, ta, tb};
        else {
            fprintf(stderr,
                    "kiln-bench: bad size '%s%s%s' (want N or MxKxN, optionally "
                    "followed by :nn, :tn, :nt or :tt)\n",
                    tok, trans ? ":" : "", trans ? trans : "");
            n = -1;
            break;
        }
    }
    free(copy);
    return n;
}

/* One row of --json: the shape, kiln's figures and the reference's. */
static json_t *gemm_json(const gemm_shape *s, const char *label, const gemm_result *r,
                         double pct, const bench_reference *ref, kiln_dtype o_dtype)
{
    json_t *row = json_pack("{s:s, s:i, s:i, s:i, s:b, s:b, s:o, s:o}", "shape", label,
                            "m", s->m, "k", s->k, "n", s->n, "ta", s->ta, "tb", s->tb,
                            "gflops", bench_json_stats(&r->kiln), "percent_of_peak",
                            bench_json_fixed(pct, 1));
    if (row && o_dtype != KILN_F32 &&
        (json_object_set_new(row, "dtype", json_string(kiln_dtype_name(o_dtype))) != 0 ||
         json_object_set_new(row, "f32",
                             json_pack("{s:o, s:o, s:o}", "gflops",
                                       bench_json_stats(&r->f32), "ratio",
                                       bench_json_fixed(r->kiln.median / r->f32.median, 3),
                                       "max_rel_error",
                                       bench_json_sci(r->f32_error, 2))) != 0)) {
        json_decref(row);
        return NULL;
    }
    if (row && r->have_ref &&
        json_object_set_new(row, "reference",
                            json_pack("{s:s, s:o, s:o, s:o}", "name", ref->name, "gflops",
                                      bench_json_stats(&r->ref), "ratio",
                                      bench_json_fixed(r->kiln.median / r->ref.median, 3),
                                      "max_rel_error",
                                      bench_json_sci(r->rel_error, 2))) != 0) {
        json_decref(row);
        return NULL;
    }
    return row;
}

int bench_gemm(const bench_options *o, kiln_context *ctx, const bench_machine *mach,
               json_t *results)
{
    gemm_shape shapes[64];
    int        n = sizeof default_gemm_shapes / sizeof default_gemm_shapes[0];
    memcpy(shapes, default_gemm_shapes, sizeof default_gemm_shapes);
    if (o->sizes && (n = parse_gemm_sizes(o->sizes, shapes, 64)) < 0)
        return 2;

    const bench_reference *ref      = bench_find_reference(o->compare);
    char                   why[256] = "";
    bool                   half     = o->dtype != KILN_F32;
    bench_reference_dtype           = o->dtype;
    if (ref && half && !(o->dtype == KILN_BF16 && ref->bf16)) {
        fprintf(results ? stderr : stdout, "%s: no %s GEMM, no comparison\n", ref->name,
                kiln_dtype_name(o->dtype));
        ref = NULL;
    }
    if (ref) {
        bench_reference_threads = mach->threads;
        if (!ref->open(ctx, why, sizeof why)) {
            fprintf(results ? stderr : stdout, "%s: not found, no comparison: %s\n",
                    ref->name, why);
            ref = NULL;
        }
    }
    if (!results && half)
        printf("%s GEMM (f32 accumulation): %s; beside kiln's f32 on the same values\n",
               kiln_dtype_name(o->dtype), mach->half_path);
    if (!results) {
        printf("%-16s %8s %8s %8s %7s", "MxKxN", "worst", "median", "best", "%peak");
        if (half)
            printf(" %8s %8s %9s", "f32", "x f32", "err.f32");
        if (ref)
            printf(" %10s %9s %9s", ref->name, "ratio", "rel.err");
        printf("   (GFLOP/s, %d repeats)\n", o->repeat);
    }
    int status = 0;
    for (int i = 0; i < n; i++) {
        gemm_result r;
        char        label[48];
        snprintf(label, sizeof label, "%dx%dx%d%s", shapes[i].m, shapes[i].k, shapes[i].n,
                 shapes[i].ta ? (shapes[i].tb ? ":tt" : ":tn")
                              : (shapes[i].tb ? ":nt" : ""));
        if (!bench_gemm_shape(o, ctx, ref, &shapes[i], &r)) {
            status = 1;
            continue;
        }
        double pct = mach->peak_gflops > 0 ? 100.0 * r.kiln.median / mach->peak_gflops
                                           : 0;
        if (results) {
            if (!bench_json_append(results,
                                   gemm_json(&shapes[i], label, &r, pct, ref, o->dtype)))
                status = 1;
        } else {
            printf("%-16s %8.1f %8.1f %8.1f %6.1f%%", label, r.kiln.min, r.kiln.median,
                   r.kiln.max, pct);
            if (half)
                printf(" %8.1f %7.2fx %9.1e", r.f32.median, r.kiln.median / r.f32.median,
                       r.f32_error);
            if (r.have_ref)
                printf(" %10.1f %8.2fx %9.1e", r.ref.median, r.kiln.median / r.ref.median,
                       r.rel_error);
            printf("\n");
        }
        fflush(stdout);
    }
    if (ref)
        ref->close();
    return status;
}
