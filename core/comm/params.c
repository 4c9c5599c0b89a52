/* core/comm/params.c — whole graphs over a communicator: the same initial
 * weights (and a resumed optimiser) on every process, federated averaging
 * of the weights, and one device per process of a machine.
 *
 * The tensors go through one host buffer in the graph's creation order, so
 * a process needs memory for all its parameters once more. The buffer stays
 * with the communicator for the next call: federated averaging every few
 * steps would otherwise map fresh pages each time, which the engine then
 * touches for the first time too.
 */
#include "../kiln-impl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Checks the arguments and lists g's parameters (and with state its
 * optimiser's state) for call. */
static kiln_status begin(const kiln_comm *c, const kiln_graph *g, const char *call,
                         bool state, kiln__named **list, size_t *n, uint64_t *step)
{
    if (!c || !g)
        return kiln__error(KILN_ERR_INVALID_ARG, "%s: %s is NULL", call,
                           c ? "the graph" : "the communicator");
    if (g->status != KILN_OK)
        return kiln__error(g->status, "%s: the graph has an error: %s", call,
                           kiln_graph_error(g));
    const char *kind;
    return kiln__state_list(g, state, list, n, &kind, step);
}

/* The communicator's buffer, of at least floats elements. */
static float *scratch(kiln_comm *c, size_t floats)
{
    if (floats > c->n_scratch || !c->scratch) {
        float *grown = kiln__malloc(floats * sizeof *grown + 8, "the values to communicate");
        if (!grown)
            return NULL;
        free(c->scratch);
        c->scratch   = grown;
        c->n_scratch = floats;
    }
    return c->scratch;
}

static size_t count_floats(const kiln__named *list, size_t n)
{
    size_t total = 0;
    for (size_t i = 0; i < n; i++)
        total += (size_t)list[i].t->node.numel;
    return total;
}

/* The values of list[0, n) into the communicator's buffer, or back. */
static kiln_status pack(kiln_comm *c, const kiln__named *list, size_t n, size_t *floats,
                        float **out)
{
    size_t total = count_floats(list, n);
    float *buf   = scratch(c, total);
    if (!buf)
        return KILN_ERR_NO_MEMORY;
    kiln_status st = KILN_OK;
    size_t      at = 0;
    for (size_t i = 0; i < n && st == KILN_OK; i++) {
        const kiln_tensor *t = list[i].t;
        st                   = kiln_tensor_read(t, buf + at, kiln__tensor_bytes(t));
        at += (size_t)t->node.numel;
    }
    if (st != KILN_OK)
        return st;
    *floats = total;
    *out    = buf;
    return KILN_OK;
}

static kiln_status unpack(const kiln__named *list, size_t n, const float *buf)
{
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        kiln_tensor *t  = list[i].t;
        kiln_status  st = kiln__leaf_write(t, buf + at, kiln__tensor_bytes(t));
        if (st != KILN_OK)
            return st;
        at += (size_t)t->node.numel;
    }
    return KILN_OK;
}

KILN_API kiln_status kiln_comm_broadcast_params(kiln_comm *c, kiln_graph *g, int root,
                                                bool optimizer_state)
{
    const char  *call = "kiln_comm_broadcast_params";
    kiln__named *list;
    size_t       n, floats = 0;
    uint64_t     step;
    float       *buf = NULL;
    kiln_status  st  = begin(c, g, call, optimizer_state, &list, &n, &step);
    if (st != KILN_OK)
        return st;
    /* root's values; every parameter must hold one there */
    if (c->info.rank == root)
        st = pack(c, list, n, &floats, &buf);
    else if (!(buf = scratch(c, floats = count_floats(list, n))))
        st = KILN_ERR_NO_MEMORY;
    /* a status first, so that a root that failed to read stops the others */
    /* with the optimiser's state go its step and the loss scale's state */
    double ok = st == KILN_OK ? 1.0 : 0.0;
    double head[5] = {ok, (double)step, g->scale.value, g->scale.good,
                      (double)g->scale.skipped};
    if (c->info.rank == root || st == KILN_OK) {
        kiln_status bst = kiln_comm_broadcast(c, head, sizeof head, root);
        if (bst != KILN_OK)
            st = bst;
        else if (head[0] != 1.0 && st == KILN_OK)
            st = kiln__error(KILN_ERR_STATE, "%s: rank %d could not read its parameters",
                             call, root);
    }
    if (st == KILN_OK)
        st = kiln_comm_broadcast(c, buf, floats * sizeof *buf, root);
    if (st == KILN_OK && c->info.rank != root)
        st = unpack(list, n, buf);
    if (st == KILN_OK && optimizer_state)
        kiln__optim_set_step(g, (uint64_t)head[1]);
    if (st == KILN_OK && optimizer_state && g->scale.on) {
        g->scale.value   = (float)head[2];
        g->scale.good    = (int)head[3];
        g->scale.skipped = (uint64_t)head[4];
    }
    kiln__named_free(list, n);
    if (st != KILN_OK)
        return kiln__error(st, "%s: %s", call, kiln_last_error());
    return KILN_OK;
}

KILN_API kiln_status kiln_comm_average_params(kiln_comm *c, kiln_graph *g)
{
    const char  *call = "kiln_comm_average_params";
    kiln__named *list;
    size_t       n, floats = 0;
    uint64_t     step;
    float       *buf = NULL;
    kiln_status  st  = begin(c, g, call, false, &list, &n, &step);
    if (st != KILN_OK)
        return st;
    st = pack(c, list, n, &floats, &buf);
    if (st == KILN_OK)
        st = kiln__comm_allreduce(c, buf, floats, KILN_COMM_F32, call);
    float scale = 1.0f / (float)c->info.size;
    for (size_t i = 0; st == KILN_OK && i < floats; i++)
        buf[i] *= scale;
    if (st == KILN_OK)
        st = unpack(list, n, buf);
    kiln__named_free(list, n);
    return st;
}

/* ---- a device per process ---------------------------------------------------------- */

KILN_API kiln_context *kiln_comm_context_new(const kiln_comm *c)
{
    const char *spec = getenv("KILN_BACKEND");
    if (!c || c->info.local_size <= 1 || (spec && strpbrk(spec, ":,")))
        return kiln_context_new_for(spec); /* one process here, or a device named */
    size_t k;
    if (kiln_select(spec, &k) != KILN_OK)
        return NULL;
    const kiln_device_report *devs;
    size_t                    n_devs = kiln_devices(&devs), usable = 0;
    for (size_t i = 0; i < n_devs; i++)
        usable += strcmp(devs[i].backend, devs[k].backend) == 0 && !devs[i].unusable;
    size_t want = usable ? (size_t)c->info.local_rank % usable : 0;
    for (size_t i = 0; i < n_devs; i++) {
        if (strcmp(devs[i].backend, devs[k].backend) != 0 || devs[i].unusable)
            continue;
        if (want-- == 0) {
            char one[96];
            snprintf(one, sizeof one, "%s:%d", devs[i].backend, devs[i].index);
            kiln__log(KILN_LOG_INFO, "local rank %d of %d takes %s (%zu usable)",
                      c->info.local_rank, c->info.local_size, one, usable);
            return kiln_context_new_for(one);
        }
    }
    return kiln_context_new_for(spec);
}
