/* core/train/optim.c — SGD, Adam and AdamW as in-place update nodes.
 *
 * An optimiser appends, for every parameter with a gradient, one step node
 * (SGD_STEP or ADAM_STEP) whose `inplace` is the parameter: the planner gives
 * it the parameter's storage and runs it after every other node, so every
 * reader of the parameter, gradients included, sees the value from before the
 * step. Its state (velocity; m and v) lives in leaves of kiln's own that
 * persist across runs like parameters. The hyper-parameters sit in one small
 * leaf per optimiser that is rewritten before each kiln_graph_run: the learning
 * rate may change and Adam's bias corrections depend on the step count, and a
 * leaf keeps the step node itself the same from run to run.
 */
#include "../kiln-impl.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HP_MAX 12 /* the larger hyper-parameter vector: Adam's */

struct kiln_optimizer {
    kiln_graph     *g;
    kiln_optimizer *next; /* the graph's list                          */
    kiln_op         op;   /* KILN_OP_SGD_STEP or KILN_OP_ADAM_STEP      */
    const char     *call; /* "kiln_sgd", "kiln_adam", ... for messages */
    float           lr;
    float           beta1; /* SGD: the momentum                         */
    float           beta2, eps, weight_decay;
    bool            decoupled; /* AdamW: decay the weights, not the grads */
    uint64_t        step;  /* runs since creation or the last reset     */
    kiln_tensor    *hp;    /* f32 [8] (SGD) or [12] (Adam)              */
    kiln_tensor    *hp_no_decay; /* AdamW's, for 1-D parameters, or NULL */
    kiln_tensor   **state; /* velocity, or m and v, of every parameter  */
    kiln_tensor   **state_of; /* the parameter of each state tensor     */
    size_t          n_state;
};

/* The hyper-parameter vector of backend.h for the coming step; `decay`
 * false leaves the weight decay out (AdamW's 1-D parameters). */
static size_t hyper_params(const kiln_optimizer *opt, bool decay, float hp[HP_MAX])
{
    memset(hp, 0, HP_MAX * sizeof *hp);
    float max_norm = opt->g->clip_sumsq ? opt->g->clip_max_norm : 0.0f;
    /* loss scaling: the gradients are divided by the scale, and a run whose
     * gradients overflowed changes nothing */
    float unscale = opt->g->scale.on ? 1.0f / opt->g->scale.value : 0.0f;
    float skip    = opt->g->scale.on ? 1.0f : 0.0f;
    hp[0]         = opt->lr;
    if (opt->op == KILN_OP_SGD_STEP) {
        hp[1] = opt->beta1;
        hp[2] = decay ? opt->weight_decay : 0.0f;
        hp[3] = max_norm;
        hp[4] = unscale;
        hp[5] = skip;
        return 8;
    }
    /* bias corrections 1 / (1 - beta^t); t >= 1 whenever a step runs */
    double t = opt->step > 0 ? (double)opt->step : 1.0;
    hp[1]    = opt->beta1;
    hp[2]    = opt->beta2;
    hp[3]    = opt->eps;
    hp[4]    = decay ? opt->weight_decay : 0.0f;
    hp[5]    = (float)(1.0 / (1.0 - pow(opt->beta1, t)));
    hp[6]    = (float)(1.0 / (1.0 - pow(opt->beta2, t)));
    hp[7]    = opt->decoupled ? 1.0f : 0.0f;
    hp[8]    = max_norm;
    hp[9]    = unscale;
    hp[10]   = skip;
    return 12;
}

/* A leaf of zeros that is kiln's, not the user's: a constant to the planner
 * (its own storage, kept across runs), written without kiln_tensor_write. */
static kiln_tensor *zero_leaf(kiln_graph *g, const char *call, int ndim,
                              const int64_t *dims)
{
    kiln_tensor *t = kiln__node_new(g, KILN_OP_LEAF, KILN_F32, ndim, dims, NULL, 0);
    if (t->flags & KILN__POISON)
        return t;
    t->flags  = KILN__CONST;
    t->staged = kiln__calloc((size_t)t->node.numel, sizeof(float), "optimiser state");
    if (!t->staged)
        return kiln__graph_fail(g, KILN_ERR_NO_MEMORY,
                                "%s: out of memory for the "
                                "optimiser's state",
                                call);
    t->written = true;
    return t;
}

static bool push_state(kiln_optimizer *opt, kiln_tensor *t, kiln_tensor *param)
{
    kiln_tensor **grown = realloc(opt->state, (opt->n_state + 1) * sizeof *grown);
    if (!grown)
        return false;
    opt->state = grown;
    grown      = realloc(opt->state_of, (opt->n_state + 1) * sizeof *grown);
    if (!grown)
        return false;
    opt->state_of                 = grown;
    opt->state[opt->n_state]      = t;
    opt->state_of[opt->n_state++] = param;
    return true;
}

/* AdamW decays matrices, embeddings and kernels, not biases or norm scales. */
static bool decays(const kiln_optimizer *opt, const kiln_tensor *p)
{
    return !opt->decoupled || p->node.ndim >= 2;
}

/* The step node of parameter p: src {p, grad, state..., hp[, sum of squares]},
 * in place on p. */
static kiln_tensor *step_node(kiln_optimizer *opt, kiln_tensor *p)
{
    kiln_graph  *g                 = opt->g;
    int          n_state           = opt->op == KILN_OP_SGD_STEP ? 1 : 2;
    kiln_tensor *src[KILN_MAX_SRC] = {p, p->grad};
    for (int i = 0; i < n_state; i++) {
        src[2 + i] = zero_leaf(g, opt->call, p->node.ndim, p->node.dims);
        if ((src[2 + i]->flags & KILN__POISON))
            return src[2 + i];
        if (!push_state(opt, src[2 + i], p))
            return kiln__graph_fail(g, KILN_ERR_NO_MEMORY, "%s: out of memory",
                                    opt->call);
    }
    /* the hyper-parameters' leaf, made when first needed: its values come
     * before each run */
    kiln_tensor **hp = decays(opt, p) ? &opt->hp : &opt->hp_no_decay;
    if (!*hp) {
        float   values[HP_MAX];
        int64_t n_hp = (int64_t)hyper_params(opt, true, values);
        *hp          = zero_leaf(g, opt->call, 1, &n_hp);
        if ((*hp)->flags & KILN__POISON)
            return *hp;
    }
    src[2 + n_state] = *hp;
    int n_src        = 3 + n_state;
    if (g->clip_sumsq)
        src[n_src++] = g->clip_sumsq;
    kiln_tensor *t = kiln__node_new(g, opt->op, KILN_F32, p->node.ndim, p->node.dims, src,
                                    n_src);
    if (!(t->flags & KILN__POISON))
        t->inplace = p;
    return t;
}

/* Why an optimiser cannot be added to g now, or KILN_OK. Nothing is appended
 * when this fails, so nothing is recorded on the graph. */
static kiln_status check_graph(const kiln_graph *g, const char *call)
{
    if (!g)
        return kiln__error(KILN_ERR_INVALID_ARG, "%s: graph is NULL", call);
    if (g->status != KILN_OK)
        return kiln__error(g->status, "%s: the graph has an error: %s", call,
                           kiln_graph_error(g));
    if (g->compiled)
        return kiln__error(KILN_ERR_STATE,
                           "%s: the graph is already compiled; add "
                           "the optimiser before kiln_graph_compile",
                           call);
    if (!g->loss)
        return kiln__error(KILN_ERR_STATE,
                           "%s: call kiln_backward first: the "
                           "optimiser updates the parameters with their gradients",
                           call);
    if (g->optimizers)
        return kiln__error(KILN_ERR_STATE,
                           "%s: the graph already has an optimiser; "
                           "a second would step every parameter twice per run",
                           call);
    return KILN_OK;
}

/* lo <= x < hi, and so not NaN. */
static bool in_range(float x, double lo, double hi)
{
    return x >= lo && x < hi;
}

static kiln_status check_lr(const char *call, float lr)
{
    if (!in_range(lr, 0.0, INFINITY))
        return kiln__error(KILN_ERR_INVALID_ARG,
                           "%s: learning rate %g, expected a "
                           "finite value >= 0",
                           call, (double)lr);
    return KILN_OK;
}

/* Releases the graph's optimisers (registered with kiln__graph_on_free). */
static void optim_free(kiln_graph *g)
{
    kiln_optimizer *opt = g->optimizers;
    while (opt) {
        kiln_optimizer *next = opt->next;
        free(opt->state);
        free(opt->state_of);
        free(opt);
        opt = next;
    }
    g->optimizers = NULL;
}

static kiln_optimizer *optimizer_new(kiln_graph *g, const kiln_optimizer *proto)
{
    if (check_graph(g, proto->call) != KILN_OK)
        return NULL;
    kiln_optimizer *opt = kiln__calloc(1, sizeof *opt, "an optimiser");
    if (!opt)
        return NULL;
    *opt          = *proto;
    opt->g        = g;
    opt->next     = g->optimizers;
    g->optimizers = opt; /* owned from here on, whatever happens below */
    kiln__graph_on_free(g, optim_free);
    /* loss scaling reads the sum of squares for overflows, clipped or not */
    if (g->scale.on && !g->clip_sumsq && !kiln__grad_sumsq(g, proto->call))
        return NULL;
    size_t last = g->loss->id; /* parameters are created before the loss */
    for (size_t i = 0; i <= last && g->status == KILN_OK; i++) {
        kiln_tensor *p = g->nodes[i];
        if ((p->flags & KILN__PARAM) && p->grad)
            step_node(opt, p);
    }
    if (g->status != KILN_OK) {
        kiln__error(g->status, "%s: %s", opt->call, kiln_graph_error(g));
        return NULL;
    }
    return opt;
}

KILN_API kiln_optimizer *kiln_sgd(kiln_graph *g, float lr, float momentum,
                                  float weight_decay)
{
    if (check_lr("kiln_sgd", lr) != KILN_OK)
        return NULL;
    if (!in_range(momentum, 0.0, INFINITY) || !in_range(weight_decay, 0.0, INFINITY)) {
        kiln__error(KILN_ERR_INVALID_ARG,
                    "kiln_sgd: momentum %g and weight decay %g, "
                    "expected finite values >= 0",
                    (double)momentum, (double)weight_decay);
        return NULL;
    }
    const kiln_optimizer proto = {
        .op           = KILN_OP_SGD_STEP,
        .call         = "kiln_sgd",
        .lr           = lr,
        .beta1        = momentum,
        .weight_decay = weight_decay,
    };
    return optimizer_new(g, &proto);
}

static kiln_optimizer *adam_new(kiln_graph *g, const char *call, bool decoupled, float lr,
                                float beta1, float beta2, float eps, float weight_decay)
{
    if (check_lr(call, lr) != KILN_OK)
        return NULL;
    if (!in_range(beta1, 0.0, 1.0) || !in_range(beta2, 0.0, 1.0) ||
        !in_range(eps, 0.0, INFINITY) || !in_range(weight_decay, 0.0, INFINITY)) {
        kiln__error(KILN_ERR_INVALID_ARG,
                    "%s: beta1 %g, beta2 %g, eps %g and "
                    "weight decay %g, expected betas in [0, 1) and finite eps and "
                    "weight decay >= 0",
                    call, (double)beta1, (double)beta2, (double)eps, (double)weight_decay);
        return NULL;
    }
    const kiln_optimizer proto = {
        .op           = KILN_OP_ADAM_STEP,
        .call         = call,
        .lr           = lr,
        .beta1        = beta1,
        .beta2        = beta2,
        .eps          = eps,
        .weight_decay = weight_decay,
        .decoupled    = decoupled,
    };
    return optimizer_new(g, &proto);
}

KILN_API kiln_optimizer *kiln_adam(kiln_graph *g, float lr, float beta1, float beta2,
                                   float eps, float weight_decay)
{
    return adam_new(g, "kiln_adam", false, lr, beta1, beta2, eps, weight_decay);
}

KILN_API kiln_optimizer *kiln_adamw(kiln_graph *g, float lr, float beta1, float beta2,
                                    float eps, float weight_decay)
{
    return adam_new(g, "kiln_adamw", true, lr, beta1, beta2, eps, weight_decay);
}

KILN_API kiln_status kiln_optimizer_set_lr(kiln_optimizer *opt, float lr)
{
    if (!opt)
        return kiln__error(KILN_ERR_INVALID_ARG, "kiln_optimizer_set_lr: optimiser "
                                                 "is NULL");
    kiln_status st = check_lr("kiln_optimizer_set_lr", lr);
    if (st == KILN_OK)
        opt->lr = lr;
    return st;
}

/* Writes host data to a leaf's device storage. */
static kiln_status leaf_upload(kiln_tensor *t, const void *data, const char *call)
{
    const kiln_device *dev = &t->graph->ctx->device;
    kiln_status        st  = dev->iface->buffer_write(dev->context, t->node.buffer,
                                                      t->node.offset, data,
                                                      kiln__tensor_bytes(t));
    if (st != KILN_OK)
        return kiln__error(st, "%s: writing optimiser state to %s: %s", call,
                           kiln_context_device(t->graph->ctx), kiln_last_error());
    return KILN_OK;
}

KILN_API kiln_status kiln_optimizer_reset(kiln_optimizer *opt)
{
    if (!opt)
        return kiln__error(KILN_ERR_INVALID_ARG, "kiln_optimizer_reset: optimiser "
                                                 "is NULL");
    opt->step = 0;
    if (!opt->g->compiled)
        return KILN_OK; /* the state is still the zeros it was made with */
    size_t largest = 0;
    for (size_t i = 0; i < opt->n_state; i++)
        if (kiln__tensor_bytes(opt->state[i]) > largest)
            largest = kiln__tensor_bytes(opt->state[i]);
    void *zeros = kiln__calloc(1, largest, "kiln_optimizer_reset");
    if (!zeros)
        return KILN_ERR_NO_MEMORY;
    kiln_status st = KILN_OK;
    for (size_t i = 0; i < opt->n_state && st == KILN_OK; i++)
        st = leaf_upload(opt->state[i], zeros, "kiln_optimizer_reset");
    free(zeros);
    return st;
}

void kiln__optim_unstep(kiln_graph *g)
{
    for (kiln_optimizer *opt = g->optimizers; opt; opt = opt->next)
        if (opt->step > 0)
            opt->step--;
}

kiln_status kiln__optim_before_run(kiln_graph *g)
{
    for (kiln_optimizer *opt = g->optimizers; opt; opt = opt->next) {
        opt->step++;
        float       hp[HP_MAX];
        kiln_status st = KILN_OK;
        if (opt->hp) {
            hyper_params(opt, true, hp);
            st = leaf_upload(opt->hp, hp, "kiln_graph_run");
        }
        if (st == KILN_OK && opt->hp_no_decay) {
            hyper_params(opt, false, hp);
            st = leaf_upload(opt->hp_no_decay, hp, "kiln_graph_run");
        }
        if (st != KILN_OK)
            return st;
    }
    return KILN_OK;
}

/* ---- the state, for checkpoints and broadcasts --------------------------------- */

void kiln__named_free(kiln__named *list, size_t n)
{
    for (size_t i = 0; list && i < n; i++)
        free(list[i].name);
    free(list);
}

/* PyTorch's names for the state of torch.optim.SGD and Adam. */
static const char *state_suffix(const kiln_optimizer *opt, size_t i)
{
    if (opt->op == KILN_OP_SGD_STEP)
        return "momentum_buffer";
    return i % 2 == 0 ? "exp_avg" : "exp_avg_sq"; /* m and v, in step_node's order */
}

static const char *optim_kind(const kiln_optimizer *opt)
{
    return opt->op == KILN_OP_SGD_STEP ? "sgd" : opt->decoupled ? "adamw" : "adam";
}

kiln_status kiln__optim_state(const kiln_graph *g, kiln__named **list, size_t *n,
                              const char **kind, uint64_t *step)
{
    const kiln_optimizer *opt = g->optimizers; /* a graph has at most one */
    *list                     = NULL;
    *n                        = 0;
    *kind                     = opt ? optim_kind(opt) : "";
    *step                     = opt ? opt->step : 0;
    if (!opt || opt->n_state == 0)
        return KILN_OK;
    *list = kiln__calloc(opt->n_state, sizeof **list, "the optimiser's state");
    if (!*list)
        return KILN_ERR_NO_MEMORY;
    for (size_t i = 0; i < opt->n_state; i++) {
        const char *param = opt->state_of[i]->name ? opt->state_of[i]->name : "";
        const char *what  = state_suffix(opt, i);
        size_t      len   = strlen(param) + strlen(what) + 8;
        char       *name  = kiln__malloc(len, "a state tensor's name");
        if (!name) {
            kiln__named_free(*list, i);
            *list = NULL;
            return KILN_ERR_NO_MEMORY;
        }
        snprintf(name, len, "optim.%s.%s", param, what);
        (*list)[i] = (kiln__named){.t = opt->state[i], .name = name};
    }
    *n = opt->n_state;
    return KILN_OK;
}

void kiln__optim_set_step(kiln_graph *g, uint64_t step)
{
    if (g->optimizers)
        g->optimizers->step = step;
}

kiln_status kiln__state_list(const kiln_graph *g, bool optimiser, kiln__named **list,
                             size_t *n, const char **kind, uint64_t *step)
{
    kiln__named *opt   = NULL;
    size_t       n_opt = 0, params = kiln_graph_param_count(g);
    *list              = NULL;
    *n                 = 0;
    *kind              = "";
    *step              = 0;
    kiln_status st     = KILN_OK;
    if (optimiser && (st = kiln__optim_state(g, &opt, &n_opt, kind, step)) != KILN_OK)
        return st;
    kiln__named *all = kiln__calloc(params + n_opt + 1, sizeof *all, "a list of tensors");
    if (!all) {
        kiln__named_free(opt, n_opt);
        return KILN_ERR_NO_MEMORY;
    }
    for (size_t i = 0; i < params && st == KILN_OK; i++) {
        kiln_tensor *t = kiln_graph_param(g, i);
        all[i].t       = t;
        if (t->name && !(all[i].name = kiln__strdup(t->name, "a tensor name")))
            st = KILN_ERR_NO_MEMORY;
    }
    for (size_t i = 0; i < n_opt; i++) {
        all[params + i] = opt[i]; /* the names move over */
        opt[i].name     = NULL;
    }
    kiln__named_free(opt, n_opt);
    if (st != KILN_OK) {
        kiln__named_free(all, params + n_opt);
        return st;
    }
    *list = all;
    *n    = params + n_opt;
    return KILN_OK;
}
