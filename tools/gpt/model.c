/* tools/gpt/model.c — the byte-level GPT's graph and its recorded shape
 * (model.h). */
#include "model.h"

#include "../random.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct builder {
    kiln_graph      *g;
    const gpt_shape *s;
    int64_t          batch, t;
    uint64_t        *init; /* or NULL: parameters are loaded */
    gpt_cache       *cache;
    kiln_dtype       dtype; /* what the layers compute in (f32, f16, bf16) */
    kiln_status      st; /* the first initialisation that failed */
    char             why[512];
} builder;

/* A parameter: N(0, stddev) for stddev > 0, zeros for 0, ones for < 0; in
 * the layers' type (an f32 parameter cast to it). */
static kiln_tensor *param(builder *b, const char *name, int ndim, const int64_t *dims,
                          float stddev)
{
    kiln_tensor *p = kiln_param(b->g, name, ndim, dims);
    if (!p || !b->init || b->st != KILN_OK || kiln_graph_status(b->g) != KILN_OK)
        return kiln_cast(b->g, p, b->dtype);
    kiln_status st = stddev > 0 ? kiln_init_normal(p, 0.0f, stddev, next_random(b->init))
                                : kiln_init_constant(p, stddev < 0 ? 1.0f : 0.0f);
    if (st != KILN_OK) {
        b->st = st;
        snprintf(b->why, sizeof b->why, "initialising %s: %s", name, kiln_last_error());
    }
    return kiln_cast(b->g, p, b->dtype);
}

/* x [rows, in] @ name.weight [in, out] + name.bias [out], weight N(0, std). */
static kiln_tensor *linear(builder *b, kiln_tensor *x, int64_t in, int64_t out,
                           const char *name, float stddev)
{
    char w[160], bias[160];
    snprintf(w, sizeof w, "%s.weight", name);
    snprintf(bias, sizeof bias, "%s.bias", name);
    kiln_tensor *weight = param(b, w, KILN_SHAPE(in, out), stddev);
    kiln_tensor *bv     = param(b, bias, KILN_SHAPE(out), 0.0f);
    return kiln_add(b->g, kiln_matmul(b->g, x, weight), bv);
}

/* name.weight (ones) and name.bias (zeros) over the last axis, eps 1e-5. */
static kiln_tensor *layer_norm(builder *b, kiln_tensor *x, int64_t c, const char *name)
{
    char w[160], bias[160];
    snprintf(w, sizeof w, "%s.weight", name);
    snprintf(bias, sizeof bias, "%s.bias", name);
    return kiln_layer_norm(b->g, x, param(b, w, KILN_SHAPE(c), -1.0f),
                           param(b, bias, KILN_SHAPE(c), 0.0f), 1e-5f);
}

/* [B, T, 3C] rows of qkv from `at` to [B, H, T, D]. */
static kiln_tensor *heads_of(builder *b, kiln_tensor *qkv, int64_t at)
{
    const gpt_shape *s = b->s;
    int64_t          D = s->embd / s->heads;
    kiln_tensor     *x = kiln_slice(b->g, qkv, 2, at, s->embd);
    if (b->t == 1) /* [B, 1, H, D] is [B, H, 1, D] in memory: no copy */
        return kiln_reshape(b->g, x, KILN_SHAPE(b->batch, s->heads, 1, D));
    x = kiln_reshape(b->g, x, KILN_SHAPE(b->batch, b->t, s->heads, D));
    return kiln_permute(b->g, x, (const int[]){0, 2, 1, 3});
}

/* One block on x [B, T, C]: x + attn(ln_1(x)), then + mlp(ln_2(x)). */
static kiln_tensor *block(builder *b, kiln_tensor *x, int layer)
{
    const gpt_shape *s = b->s;
    kiln_graph      *g = b->g;
    int64_t B = b->batch, T = b->t, C = s->embd, H = s->heads, D = C / H, BT = B * T;
    /* GPT-2 scales the two projections into the residual by 1/sqrt(2 layers) */
    float std = 0.02f, resid_std = 0.02f / sqrtf(2.0f * (float)s->layers);
    float scale = 1.0f / sqrtf((float)D);
    char  name[128];

    snprintf(name, sizeof name, "transformer.h.%d.ln_1", layer);
    kiln_tensor *h = kiln_reshape(g, layer_norm(b, x, C, name), KILN_SHAPE(BT, C));
    snprintf(name, sizeof name, "transformer.h.%d.attn.c_attn", layer);
    kiln_tensor *qkv = kiln_reshape(g, linear(b, h, C, 3 * C, name, std),
                                    KILN_SHAPE(B, T, 3 * C));
    kiln_tensor *y;
    if (b->cache) {
        /* the new keys and values join the cache; the queries see it all,
         * up to their own positions */
        kiln_tensor *q = heads_of(b, qkv, 0), *k = heads_of(b, qkv, C),
                    *v   = heads_of(b, qkv, 2 * C);
        k                = kiln_store_slice(g, b->cache->k[layer], k, 2, b->cache->at);
        v                = kiln_store_slice(g, b->cache->v[layer], v, 2, b->cache->at);
        kiln_tensor *att = kiln_causal_softmax_offset(g,
                                                      kiln_matmul_t(g, q, k, false, true),
                                                      scale, b->cache->at);
        y                = kiln_matmul(g, att, v); /* [B, H, T, D] */
        if (T > 1)
            y = kiln_permute(g, y, (const int[]){0, 2, 1, 3});
    } else {
        y = kiln_causal_attention(g, qkv, (int)H, scale);
    }
    y = kiln_reshape(g, y, KILN_SHAPE(BT, C));
    snprintf(name, sizeof name, "transformer.h.%d.attn.c_proj", layer);
    y = kiln_reshape(g, linear(b, y, C, C, name, resid_std), KILN_SHAPE(B, T, C));
    x = kiln_add(g, x, y);

    snprintf(name, sizeof name, "transformer.h.%d.ln_2", layer);
    h = kiln_reshape(g, layer_norm(b, x, C, name), KILN_SHAPE(BT, C));
    snprintf(name, sizeof name, "transformer.h.%d.mlp.c_fc", layer);
    h = kiln_gelu(g, linear(b, h, C, 4 * C, name, std));
    snprintf(name, sizeof name, "transformer.h.%d.mlp.c_proj", layer);
    h = kiln_reshape(g, linear(b, h, 4 * C, C, name, resid_std), KILN_SHAPE(B, T, C));
    return kiln_add(g, x, h);
}

/* gpt_build's reason for NULL, when it is not the graph's error */
static const char *last_error;

kiln_tensor *gpt_build(kiln_graph *g, const gpt_shape *s, int64_t batch, int64_t t,
                       uint64_t *init, gpt_cache *cache, kiln_dtype dtype,
                       kiln_tensor **ids, kiln_tensor **positions)
{
    static char problem[160];
    if (gpt_shape_problem(s, problem, sizeof problem)) {
        last_error = problem;
        return NULL;
    }
    builder b = {.g     = g,
                 .s     = s,
                 .batch = batch,
                 .t     = t,
                 .init  = init,
                 .cache = cache,
                 .dtype = dtype};
    int64_t C = s->embd, D = s->embd / s->heads;
    *ids       = kiln_input(g, "ids", KILN_I32, KILN_SHAPE(batch, t));
    *positions = kiln_input(g, "positions", KILN_I32, KILN_SHAPE(t));
    if (cache) {
        char name[64];
        cache->at = kiln_input(g, "cache.at", KILN_I32, KILN_SHAPE(1));
        for (int l = 0; l < s->layers; l++) {
            snprintf(name, sizeof name, "cache.%d.k", l);
            cache->k[l] = kiln_input(g, name, dtype,
                                     KILN_SHAPE(1, s->heads, s->ctx, D));
            snprintf(name, sizeof name, "cache.%d.v", l);
            cache->v[l] = kiln_input(g, name, dtype,
                                     KILN_SHAPE(1, s->heads, s->ctx, D));
        }
    }
    kiln_tensor *wte = param(&b, "transformer.wte.weight", KILN_SHAPE(GPT_VOCAB, C),
                             0.02f);
    kiln_tensor *wpe = param(&b, "transformer.wpe.weight", KILN_SHAPE(s->ctx, C), 0.02f);
    kiln_tensor *x   = kiln_add(g, kiln_embedding(g, wte, *ids),
                                kiln_embedding(g, wpe, *positions));
    for (int l = 0; l < s->layers; l++)
        x = block(&b, x, l);
    x                   = kiln_reshape(g, layer_norm(&b, x, C, "transformer.ln_f"),
                                       KILN_SHAPE(batch * t, C));
    /* the tied head; logits in f32 for the loss and sampling */
    kiln_tensor *logits = kiln_cast(g, kiln_matmul_t(g, x, wte, false, true), KILN_F32);
    if (b.st != KILN_OK) {
        static char why[512];
        memcpy(why, b.why, sizeof why);
        last_error = why;
        return NULL;
    }
    last_error = NULL;
    return kiln_graph_status(g) == KILN_OK ? logits : NULL;
}

const char *gpt_error(const kiln_graph *g)
{
    return last_error ? last_error : kiln_graph_error(g);
}

const char *gpt_shape_problem(const gpt_shape *s, char *buf, size_t len)
{
    if (s->layers < 1 || s->layers > GPT_MAX_LAYERS)
        snprintf(buf, len, "%d layers: expected 1 to %d", s->layers, GPT_MAX_LAYERS);
    else if (s->heads < 1 || s->embd < 1 || s->ctx < 1)
        snprintf(buf, len, "heads %d, embd %d, ctx %d: expected each at least 1",
                 s->heads, s->embd, s->ctx);
    else if (s->embd % s->heads != 0)
        snprintf(buf, len, "embd %d is not a multiple of heads %d", s->embd, s->heads);
    else
        return NULL;
    return buf;
}

/* ---- the shape in a weights file --------------------------------------------------------- */

static const char *const keys[] = {"kiln.layers", "kiln.heads", "kiln.embd", "kiln.ctx"};

static int *field(gpt_shape *s, int i)
{
    int *f[] = {&s->layers, &s->heads, &s->embd, &s->ctx};
    return f[i];
}

kiln_status gpt_shape_save(kiln_graph *g, const gpt_shape *s)
{
    kiln_status st = kiln_graph_set_meta(g, "kiln.model", "gpt");
    for (int i = 0; st == KILN_OK && i < 4; i++) {
        char v[16];
        snprintf(v, sizeof v, "%d", *field((gpt_shape *)s, i));
        st = kiln_graph_set_meta(g, keys[i], v);
    }
    return st;
}

static char load_error[768];

kiln_status gpt_shape_load(const char *path, gpt_shape *s)
{
    char        v[64];
    kiln_status st = kiln_file_meta(path, "kiln.model", v, sizeof v);
    if (st == KILN_ERR_NOT_FOUND) {
        snprintf(load_error, sizeof load_error,
                 "%s records no model (no metadata \"kiln.model\"): expected weights "
                 "saved "
                 "by kiln-train --model gpt --save",
                 path);
        return st;
    }
    if (st != KILN_OK) {
        snprintf(load_error, sizeof load_error, "%s", kiln_last_error());
        return st;
    }
    if (strcmp(v, "gpt") != 0) {
        snprintf(load_error, sizeof load_error,
                 "%s holds a \"%.20s\" model: expected \"gpt\" (kiln-train --model gpt)",
                 path, v);
        return KILN_ERR_INVALID_ARG;
    }
    for (int i = 0; i < 4; i++) {
        st = kiln_file_meta(path, keys[i], v, sizeof v);
        if (st != KILN_OK) {
            snprintf(load_error, sizeof load_error, "%s: %s", path, kiln_last_error());
            return st;
        }
        char *end;
        errno  = 0;
        long n = strtol(v, &end, 10);
        if (errno || end == v || *end || n < 1 || n > INT_MAX) {
            snprintf(load_error, sizeof load_error,
                     "%s: metadata \"%s\" is \"%.20s\": expected a whole number from 1",
                     path, keys[i], v);
            return KILN_ERR_INVALID_ARG;
        }
        *field(s, i) = (int)n;
    }
    char        buf[160];
    const char *problem = gpt_shape_problem(s, buf, sizeof buf);
    if (problem) {
        snprintf(load_error, sizeof load_error, "%s: the recorded shape has %s", path,
                 problem);
        return KILN_ERR_INVALID_ARG;
    }
    return KILN_OK;
}

const char *gpt_load_error(void)
{
    return load_error;
}
