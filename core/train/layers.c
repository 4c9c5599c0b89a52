/* core/train/layers.c — dense and conv layers: their parameters made, named and
 * initialised, then the ops that use them.
 *
 * Each layer takes the next value of the graph's seed sequence (splitmix64
 * from the seed kiln_graph_seed set, 0 if none), whether or not it is named,
 * so a model built the same way from the same seed starts from the same
 * values on every backend.
 */
#include "../kiln-impl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

KILN_API void kiln_graph_seed(kiln_graph *g, uint64_t seed)
{
    if (g)
        g->seed = seed;
}

typedef struct layer {
    kiln_tensor *weight, *bias;
} layer;

/* Makes "<name>.weight" (He-normal) and "<name>.bias" [out] (zero); a NULL
 * name becomes `kind` and the layer's index in the graph ("dense0", "conv1").
 * Returns false with the graph's error recorded. */
static bool layer_new(kiln_graph *g, const char *kind, const char *name, int ndim,
                      const int64_t *weight_dims, int64_t out, layer *l)
{
    unsigned index = g->n_layers++;
    uint64_t seed  = kiln__splitmix64(&g->seed);
    char     generated[32];
    if (!name) {
        snprintf(generated, sizeof generated, "%s%u", kind, index);
        name = generated;
    }
    size_t len   = strlen(name) + sizeof ".weight";
    char  *pname = kiln__malloc(len, "a parameter name");
    if (!pname) {
        kiln__graph_fail(g, KILN_ERR_NO_MEMORY,
                         "%s: out of memory for the parameter "
                         "names of layer \"%s\"",
                         kind, name);
        return false;
    }
    snprintf(pname, len, "%s.weight", name);
    l->weight = kiln_param(g, pname, ndim, weight_dims);
    snprintf(pname, len, "%s.bias", name);
    l->bias = kiln_param(g, pname, KILN_SHAPE(out));
    free(pname);
    if ((l->weight->flags | l->bias->flags) & KILN__POISON)
        return false;
    kiln_status st = kiln_init_he(l->weight, seed);
    if (st == KILN_OK)
        st = kiln_init_constant(l->bias, 0.0f);
    if (st != KILN_OK) {
        kiln__graph_fail(g, st, "%s \"%s\": %s", kind, name, kiln_last_error());
        return false;
    }
    return true;
}

/* x must be a float operand of g with `ndim` dimensions, `layout` naming them. */
static bool check_input(kiln_graph *g, const char *op, kiln_tensor *x, int ndim,
                        const char *layout)
{
    if (!kiln__check_operands(g, op, &x, 1) || !kiln__check_float(g, op, "x", x))
        return false;
    if (x->node.ndim == ndim)
        return true;
    char s[KILN__SHAPE_STR];
    kiln__graph_fail(g, KILN_ERR_SHAPE, "%s: x %s has %d dimension%s, expected %d %s", op,
                     kiln__shape_str(s, x->node.ndim, x->node.dims), x->node.ndim,
                     x->node.ndim == 1 ? "" : "s", ndim, layout);
    return false;
}

KILN_API kiln_tensor *kiln_dense(kiln_graph *g, kiln_tensor *x, int64_t out,
                                 const char *name)
{
    if (!check_input(g, "dense", x, 2, "([N, in]; kiln_flatten makes it)"))
        return g ? g->poison : NULL;
    if (out < 1)
        return kiln__graph_fail(g, KILN_ERR_INVALID_ARG,
                                "dense: out %lld, expected at "
                                "least 1",
                                (long long)out);
    layer l;
    if (!layer_new(g, "dense", name, KILN_SHAPE(x->node.dims[1], out), out, &l))
        return g->poison;
    /* f32 parameters, used in x's type (mixed precision) */
    kiln_dtype t = x->node.dtype;
    return kiln_add(g, kiln_matmul(g, x, kiln_cast(g, l.weight, t)), kiln_cast(g, l.bias, t));
}

KILN_API kiln_tensor *kiln_conv2d_layer(kiln_graph *g, kiln_tensor *x,
                                        int64_t out_channels, int kernel, int stride,
                                        int padding, const char *name)
{
    if (!check_input(g, "conv2d_layer", x, 4, "([N, C, H, W])"))
        return g ? g->poison : NULL;
    if (out_channels < 1 || kernel < 1)
        return kiln__graph_fail(g, KILN_ERR_INVALID_ARG,
                                "conv2d_layer: out_channels "
                                "%lld and kernel %d: expected both >= 1",
                                (long long)out_channels, kernel);
    layer l;
    if (!layer_new(g, "conv", name,
                   KILN_SHAPE(out_channels, x->node.dims[1], kernel, kernel),
                   out_channels, &l))
        return g->poison;
    kiln_dtype t = x->node.dtype;
    return kiln_conv2d(g, x, kiln_cast(g, l.weight, t), kiln_cast(g, l.bias, t), stride,
                       padding);
}
