/* tools/gpt/model.h — the byte-level GPT of kiln-train --model gpt and
 * kiln-generate: its graph, and its shape as a weights file records it.
 *
 * The model is GPT-2's block, as nanoGPT writes it: pre-LayerNorm, one
 * fused qkv projection, causal attention over heads, a 4x MLP with
 * tanh-GELU, biases on every linear layer; learned position embeddings, a
 * final layer norm and the output head tied to the byte embedding
 * (vocabulary: the 256 byte values). Parameters have PyTorch-style names
 * (transformer.h.0.attn.c_attn.weight, ...); a dense weight is [in, out],
 * kiln's layout, the transpose of torch.nn.Linear's.
 *
 * One builder serves training (B windows of ctx positions, causal
 * attention within each) and decoding (T new positions of one sequence,
 * after the `at` positions already in a key/value cache: each layer's keys
 * and values are appended to the cache with kiln_store_slice, and the
 * queries attend to the cache with the mask shifted by `at`).
 */
#ifndef KILN_TOOLS_GPT_MODEL_H
#define KILN_TOOLS_GPT_MODEL_H

#include <kiln/kiln.h>

#include <stdint.h>

#define GPT_VOCAB      256
#define GPT_MAX_LAYERS 256

typedef struct gpt_shape {
    int layers, heads, embd, ctx;
} gpt_shape;

/* A key/value cache for decoding: per layer, inputs k and v [1, heads,
 * ctx, embd / heads], and the number of positions already in it, an i32
 * [1] input (also the position of the first new one). */
typedef struct gpt_cache {
    kiln_tensor *k[GPT_MAX_LAYERS], *v[GPT_MAX_LAYERS];
    kiln_tensor *at;
} gpt_cache;

/* The model's graph up to its logits [batch * t, 256], on inputs ids
 * [batch, t] i32 and positions [t] i32 (the position of each column, for
 * the position embedding), both made here. With a cache (batch 1), its
 * tensors are made here too, and attention reaches back over the cached
 * positions. Parameters are drawn from *init (splitmix64) as GPT-2
 * initialises them, or left unset when init is NULL (to be loaded). The
 * layers compute in dtype (f32, or f16/bf16 for mixed precision, the f32
 * parameters cast to it, the cache too); the logits are f32.
 * Returns NULL on failure, and gpt_error says why. */
kiln_tensor *gpt_build(kiln_graph *g, const gpt_shape *s, int64_t batch, int64_t t,
                       uint64_t *init, gpt_cache *cache, kiln_dtype dtype,
                       kiln_tensor **ids, kiln_tensor **positions);
/* Why the last gpt_build on g failed. */
const char *gpt_error(const kiln_graph *g);

/* Why the shape cannot be built ("--embd 130 is not a multiple of --heads
 * 4"), or NULL. */
const char *gpt_shape_problem(const gpt_shape *s, char *buf, size_t len);

/* Records the shape in the graph's weights-file metadata ("kiln.model" =
 * "gpt", "kiln.layers", ...), and reads it back from a file. */
kiln_status gpt_shape_save(kiln_graph *g, const gpt_shape *s);
/* The shape recorded in a weights file, or a status and gpt_load_error():
 * what is missing or wrong, naming the file. */
kiln_status gpt_shape_load(const char *path, gpt_shape *s);
const char *gpt_load_error(void);

#endif /* KILN_TOOLS_GPT_MODEL_H */
