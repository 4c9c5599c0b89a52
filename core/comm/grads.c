/* core/comm/grads.c — data-parallel gradients: each run of a graph averages
 * its parameters' gradients over the processes of a communicator, in
 * buckets whose allreduce overlaps the rest of the backward pass.
 *
 * kiln_graph_allreduce_grads marks where the averaged gradients start to be
 * read: every node made after it (gradient clipping, the optimiser's steps,
 * whatever the program adds) and every step that runs last. At compile, the
 * plan is read in its execution order:
 *  - the boundary: the first node of the plan that reads averaged
 *    gradients; every bucket is waited for before it runs;
 *  - each gradient's storage (deduplicated: two parameters may share one
 *    gradient tensor) is complete after the last node before the boundary
 *    that writes or reads it (a gradient that is also the gradient of an
 *    intermediate is read by other backward nodes, which must see the local
 *    value);
 *  - gradients in the order they complete fill buckets of about
 *    bucket_bytes, PyTorch DDP's scheme; a bucket is started as soon as its
 *    last gradient is complete.
 * At run time, a bucket's gradients are copied into one host buffer, its
 * allreduce started, and, while any is under way, the engine is let
 * progress after every node (the nodes then go to the device one by one);
 * at the boundary all are waited for, divided by the number of processes
 * and written back in place. A gradient's storage lives until
 * the steps that read it (the optimiser's steps run last), so nothing else
 * is placed in it meanwhile. Gradients stored in a leaf (a constant) are
 * the same on every process and left alone.
 */
#include "../kiln-impl.h"

#include <stdlib.h>
#include <string.h>

#define DEFAULT_BUCKET (1u << 20)

typedef struct bucket {
    size_t first, count; /* its gradients: dp->grads[first, first + count) */
    size_t floats;
    float *host;
    size_t ready;   /* the exec index after which it is complete        */
    void  *request; /* the allreduce under way, or NULL                 */
    bool   done;    /* the engine said it finished (wait is still due)  */
} bucket;

struct kiln__dp {
    kiln_comm    *comm;
    size_t        bucket_bytes;
    size_t        sync_from; /* nodes made from here on read averaged grads */
    kiln_tensor **grads;     /* storage roots, in the order they complete    */
    size_t        n_grads;
    bucket       *buckets; /* in the order they complete                  */
    size_t        n_buckets;
    size_t        boundary; /* exec index of the first reader of averages   */
    size_t        next;     /* during a run: the next bucket to start       */
    size_t        pending;  /* started buckets not known to be done         */
    bool          broken;   /* a collective failed: the job must end         */
};

static void dp_free(kiln_graph *g)
{
    kiln__dp *dp = g->dp;
    if (!dp)
        return;
    for (size_t i = 0; i < dp->n_buckets; i++)
        free(dp->buckets[i].host);
    free(dp->buckets);
    free(dp->grads);
    free(dp);
    g->dp = NULL;
}

KILN_API kiln_status kiln_graph_allreduce_grads(kiln_graph *g, kiln_comm *c,
                                                size_t bucket_bytes)
{
    const char *call = "kiln_graph_allreduce_grads";
    if (!g || !c)
        return kiln__error(KILN_ERR_INVALID_ARG, "%s: %s is NULL", call,
                           g ? "the communicator" : "the graph");
    if (g->status != KILN_OK)
        return kiln__error(g->status, "%s: the graph has an error: %s", call,
                           kiln_graph_error(g));
    const char *order = g->compiled     ? "the graph is compiled already"
                        : !g->loss      ? "call kiln_backward first: it averages the "
                                          "gradients it makes"
                        : g->optimizers ? "the optimiser is added already, and its "
                                          "steps would read the local gradients"
                        : g->clip_sumsq ? "kiln_clip_grad_norm was called already, and "
                                          "it would clip the local gradients"
                        : g->dp         ? "it was called already for this graph"
                                        : NULL;
    if (order)
        return kiln__error(KILN_ERR_STATE, "%s: %s; call it after kiln_backward and "
                                           "before clipping, the optimiser and compile",
                           call, order);
    kiln__dp *dp = kiln__calloc(1, sizeof *dp, call);
    if (!dp)
        return KILN_ERR_NO_MEMORY;
    dp->comm         = c;
    dp->bucket_bytes = bucket_bytes ? bucket_bytes : DEFAULT_BUCKET;
    dp->sync_from    = g->n_nodes;
    g->dp            = dp;
    kiln__graph_on_free(g, dp_free);
    return KILN_OK;
}

/* ---- the plan -------------------------------------------------------------------- */

static bool reads_averages(const kiln_graph *g, const kiln_tensor *t)
{
    return t->id >= g->dp->sync_from ||
           (t->inplace && (kiln__op_def_of(t->node.op)->flags & KILN__OP_RUNS_LAST));
}

typedef struct pending {
    kiln_tensor *root;
    size_t       ready;
} pending;

static int by_ready(const void *a, const void *b)
{
    const pending *x = a, *y = b;
    if (x->ready != y->ready)
        return x->ready < y->ready ? -1 : 1;
    return x->root->id < y->root->id ? -1 : x->root->id > y->root->id;
}

/* The gradients' storage roots, each once, with the exec index after which
 * each is complete (the last node before the boundary that writes or reads
 * its storage), sorted by it; *n of them. */
static pending *collect(kiln_graph *g, size_t *n)
{
    kiln__dp *dp   = g->dp;
    pending  *p    = kiln__calloc(g->n_nodes, sizeof *p, "the gradients to average");
    size_t   *last = kiln__malloc(g->n_nodes * sizeof *last, "the gradients to average");
    *n             = 0;
    if (!p || !last) {
        free(p);
        free(last);
        return NULL;
    }
    /* per storage root (by node id): the last node before the boundary that
     * uses it, or SIZE_MAX */
    for (size_t i = 0; i < g->n_nodes; i++)
        last[i] = SIZE_MAX;
    for (size_t i = 0; i < dp->boundary; i++) {
        kiln_tensor *t = (kiln_tensor *)g->plan.exec[i];
        last[kiln__storage(t)->id] = i;
        for (int s = 0; s < KILN_MAX_SRC; s++)
            if (t->node.src[s])
                last[kiln__storage((kiln_tensor *)t->node.src[s])->id] = i;
    }
    for (size_t i = 0; i < dp->sync_from; i++) {
        kiln_tensor *param = g->nodes[i];
        if (!(param->flags & KILN__PARAM) || !param->grad)
            continue;
        kiln_tensor *root = kiln__storage(param->grad);
        if ((root->flags & KILN__LEAF) || last[root->id] == SIZE_MAX)
            continue; /* a constant, the same everywhere; or taken already */
        p[(*n)++]      = (pending){root, last[root->id]};
        last[root->id] = SIZE_MAX; /* a second parameter may share it */
    }
    free(last);
    qsort(p, *n, sizeof *p, by_ready);
    return p;
}

kiln_status kiln__dp_plan(kiln_graph *g)
{
    kiln__dp *dp = g->dp;
    if (!dp || dp->comm->info.size <= 1)
        return KILN_OK; /* one process: its gradients are the mean */
    dp->boundary = g->plan.n_exec;
    for (size_t i = 0; i < g->plan.n_exec; i++)
        if (reads_averages(g, (const kiln_tensor *)g->plan.exec[i])) {
            dp->boundary = i;
            break;
        }
    size_t   n;
    pending *p = collect(g, &n);
    if (!p)
        return KILN_ERR_NO_MEMORY;
    dp->grads   = kiln__calloc(n ? n : 1, sizeof *dp->grads, "the gradients to average");
    dp->buckets = kiln__calloc(n ? n : 1, sizeof *dp->buckets, "the gradient buckets");
    kiln_status st = dp->grads && dp->buckets ? KILN_OK : KILN_ERR_NO_MEMORY;
    for (size_t k = 0; st == KILN_OK && k < n; k++) {
        dp->grads[k] = p[k].root;
        bucket *b    = dp->n_buckets ? &dp->buckets[dp->n_buckets - 1] : NULL;
        if (!b || b->floats * sizeof(float) >= dp->bucket_bytes) {
            b        = &dp->buckets[dp->n_buckets++];
            b->first = k;
        }
        b->count++;
        b->floats += (size_t)p[k].root->node.numel;
        b->ready = p[k].ready;
    }
    dp->n_grads = n;
    for (size_t i = 0; st == KILN_OK && i < dp->n_buckets; i++) {
        bucket *b = &dp->buckets[i];
        b->host   = kiln__malloc(b->floats * sizeof(float) + 1, "a gradient bucket");
        if (!b->host)
            st = KILN_ERR_NO_MEMORY;
    }
    free(p);
    if (st == KILN_OK)
        kiln__log(KILN_LOG_DEBUG,
                  "allreduce of %zu gradients in %zu buckets over %d processes; the "
                  "averages are read from node %zu of %zu",
                  dp->n_grads, dp->n_buckets, dp->comm->info.size, dp->boundary,
                  g->plan.n_exec);
    return st;
}

/* ---- the run ---------------------------------------------------------------------- */

bool kiln__dp_after(const kiln_graph *g, size_t i)
{
    const kiln__dp *dp = g->dp;
    return dp && ((dp->next < dp->n_buckets && dp->buckets[dp->next].ready == i) ||
                  (dp->pending && dp->comm->plugin->progress && i < dp->boundary));
}

bool kiln__dp_before(const kiln_graph *g, size_t i)
{
    const kiln__dp *dp = g->dp;
    return dp && dp->n_buckets && i == dp->boundary;
}

static kiln_status broken(void)
{
    return kiln__error(KILN_ERR_STATE,
                       "averaging gradients: a collective of an earlier run failed, so "
                       "the processes are out of step; end the job (kiln_comm_abort)");
}

static kiln_status start(kiln_graph *g, bucket *b)
{
    kiln__dp          *dp  = g->dp;
    const kiln_device *dev = &g->ctx->device;
    float             *at  = b->host;
    for (size_t k = b->first; k < b->first + b->count; k++) {
        kiln_tensor *t  = dp->grads[k];
        size_t       n  = kiln__tensor_bytes(t);
        kiln_status  st = dev->iface->buffer_read(dev->context, t->node.buffer,
                                                  t->node.offset, at, n);
        if (st != KILN_OK)
            return st;
        at += t->node.numel;
    }
    kiln_comm  *c  = dp->comm;
    kiln_status st = c->plugin->allreduce_start(c->state, b->host, b->floats,
                                                KILN_COMM_F32, &b->request);
    c->bytes += b->floats * sizeof(float);
    b->done = false;
    if (st != KILN_OK)
        b->request = NULL;
    else
        dp->pending++;
    return st;
}

kiln_status kiln__dp_run_after(kiln_graph *g, size_t i)
{
    kiln__dp *dp = g->dp;
    if (dp->broken)
        return broken();
    kiln_status st = KILN_OK;
    while (st == KILN_OK && dp->next < dp->n_buckets && dp->buckets[dp->next].ready == i)
        st = start(g, &dp->buckets[dp->next++]);
    kiln_comm *c = dp->comm;
    for (size_t k = 0; st == KILN_OK && c->plugin->progress && k < dp->next; k++) {
        bucket *b = &dp->buckets[k];
        if (b->request && !b->done &&
            (st = c->plugin->progress(c->state, b->request, &b->done)) == KILN_OK &&
            b->done)
            dp->pending--;
    }
    if (st != KILN_OK) {
        dp->broken = true;
        return kiln__error(st, "averaging gradients: %s", kiln_last_error());
    }
    return KILN_OK;
}

kiln_status kiln__dp_run_before(kiln_graph *g, size_t i)
{
    (void)i;
    kiln__dp          *dp  = g->dp;
    kiln_comm         *c   = dp->comm;
    const kiln_device *dev = &g->ctx->device;
    if (dp->broken)
        return broken();
    kiln_status st = KILN_OK;
    while (st == KILN_OK && dp->next < dp->n_buckets) /* none should be left */
        st = start(g, &dp->buckets[dp->next++]);
    float scale = 1.0f / (float)c->info.size;
    for (size_t k = 0; k < dp->n_buckets; k++) {
        bucket *b = &dp->buckets[k];
        if (b->request && st == KILN_OK)
            st = c->plugin->wait(c->state, b->request, c->timeout);
        b->request = NULL;
        if (st != KILN_OK)
            continue;
        for (size_t e = 0; e < b->floats; e++)
            b->host[e] *= scale;
        const float *at = b->host;
        for (size_t j = b->first; st == KILN_OK && j < b->first + b->count; j++) {
            kiln_tensor *t = dp->grads[j];
            st = dev->iface->buffer_write(dev->context, t->node.buffer, t->node.offset,
                                          at, kiln__tensor_bytes(t));
            at += t->node.numel;
        }
    }
    dp->next    = 0;
    dp->pending = 0;
    if (st != KILN_OK) {
        dp->broken = true;
        return kiln__error(st, "averaging gradients: %s", kiln_last_error());
    }
    return KILN_OK;
}

void kiln__dp_run_failed(kiln_graph *g)
{
    kiln__dp *dp = g->dp;
    /* an allreduce started and never waited for: the processes are out of
     * step, and a new one must not take its place */
    for (size_t k = 0; dp && k < dp->n_buckets; k++)
        if (dp->buckets[k].request)
            dp->broken = true;
}
