/* core/runtime/schedule.c — which device runs each node, and the CPU fallback.
 *
 * Every node runs on the context's device when that device supports it. A
 * node it does not support runs on the cpu backend instead (as ggml's
 * scheduler does): at compile the node gets a buffer on the cpu device big
 * enough for its sources and its result; at run its sources are copied there
 * through host memory, it runs, and its result (and, for an optimiser step,
 * the state it updates) is copied back to where the plan put it on the
 * selected device. The memory plan of the selected device stays whole, so a
 * fallback node changes nothing for its neighbours.
 *
 * KILN_DEBUG_REFUSE=op,op (kiln's op names: "matmul", "conv2d", ...) makes the
 * selected device refuse those ops, which proves the fallback in tests.
 */
#include "../kiln-impl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static size_t node_bytes(const kiln_node *n)
{
    return (size_t)n->numel * kiln__elem_size(n->dtype);
}

/* Whether `name` is in the comma-separated list (case-sensitive op names). */
static bool listed(const char *list, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = list; p && *p;) {
        const char *end = strchr(p, ',');
        size_t      len = end ? (size_t)(end - p) : strlen(p);
        if (len == n && strncmp(p, name, n) == 0)
            return true;
        p = end ? end + 1 : NULL;
    }
    return false;
}

static void warn_unknown_refusals(const char *list)
{
    char copy[256];
    snprintf(copy, sizeof copy, "%s", list);
    for (char *save = NULL, *tok = strtok_r(copy, ",", &save); tok;
         tok = strtok_r(NULL, ",", &save)) {
        bool known = false;
        for (int op = KILN_OP_ADD; op < KILN_OP_COUNT && !known; op++)
            known = strcmp(kiln__op_name((kiln_op)op), tok) == 0;
        if (!known)
            kiln__log(KILN_LOG_WARN,
                      "KILN_DEBUG_REFUSE names \"%s\", which is not "
                      "an op kiln dispatches (e.g. matmul, conv2d, softmax)",
                      tok);
    }
}

/* Opens the cpu backend's device 0 for ctx, once. */
static kiln_status open_fallback(kiln_context *ctx)
{
    if (ctx->fallback.iface)
        return KILN_OK;
    const kiln__registry *r = kiln__registry_get();
    for (size_t k = 0; r && k < r->n_devices; k++) {
        const kiln_device_report *d = &r->devices[k];
        if (strcmp(d->backend, "cpu") != 0 || d->index != 0 || d->unusable)
            continue;
        const kiln_plugin *p  = r->plugins[r->device_plugin[k]].table;
        kiln_status        st = p->device_open(0, &ctx->fallback);
        if (st != KILN_OK)
            return kiln__error(st,
                               "cannot open cpu:0 to run the nodes %s does not "
                               "support: %s",
                               ctx->label, kiln_last_error());
        snprintf(ctx->fallback_label, sizeof ctx->fallback_label, "cpu:0 (%s)", d->name);
        return KILN_OK;
    }
    return kiln__error(KILN_ERR_NOT_FOUND,
                       "no cpu backend is loaded to run the nodes "
                       "%s does not support",
                       ctx->label);
}

void kiln__context_close_fallback(kiln_context *ctx)
{
    if (ctx->fallback.iface)
        ctx->fallback.iface->free(ctx->fallback.context);
    memset(&ctx->fallback, 0, sizeof ctx->fallback);
}

/* Lays the node and its sources out in one fallback buffer. */
static kiln_status fallback_prepare(kiln_graph *g, const kiln_node *node,
                                    kiln__fallback **out)
{
    const kiln_device *cpu = &g->ctx->fallback;
    kiln__fallback    *fb  = kiln__calloc(1, sizeof *fb, "a fallback node");
    if (!fb)
        return KILN_ERR_NO_MEMORY;
    size_t size = 0, largest = node_bytes(node);
    fb->node = *node;
    for (int s = 0; s < KILN_MAX_SRC; s++) {
        if (!node->src[s])
            continue;
        fb->src[s]        = *node->src[s];
        fb->src[s].offset = size;
        memset(fb->src[s].src, 0, sizeof fb->src[s].src);
        fb->node.src[s] = &fb->src[s];
        size += kiln__align_up(node_bytes(node->src[s]));
        if (node_bytes(node->src[s]) > largest)
            largest = node_bytes(node->src[s]);
    }
    /* An optimiser step writes its src[0] in place. */
    bool inplace    = (kiln__op_def_of(node->op)->flags & KILN__OP_IN_PLACE) != 0;
    fb->node.offset = inplace ? fb->src[0].offset : size;
    size += inplace ? 0 : kiln__align_up(node_bytes(node));
    kiln_status st = cpu->iface->buffer_alloc(cpu->context, size, &fb->buffer);
    if (st != KILN_OK) {
        free(fb);
        return kiln__error(st, "cannot reserve %zu bytes on %s for a fallback node: %s",
                           size, g->ctx->fallback_label, kiln_last_error());
    }
    fb->node.buffer = fb->buffer;
    for (int s = 0; s < KILN_MAX_SRC; s++)
        fb->src[s].buffer = fb->buffer;
    if (largest > g->plan.staging_size)
        g->plan.staging_size = largest;
    *out = fb;
    return KILN_OK;
}

/* Decides where exec[i] runs; prepares the fallback when it is not here. */
static kiln_status place(kiln_graph *g, size_t i, const char *refuse)
{
    const kiln_node   *node = g->plan.exec[i];
    const kiln_device *dev  = &g->ctx->device;
    const char        *name = kiln__op_name(node->op);
    const char        *why  = NULL;
    char               s[KILN__SHAPE_STR];
    kiln__shape_str(s, node->ndim, node->dims);
    if (refuse && listed(refuse, name))
        why = "refused by KILN_DEBUG_REFUSE";
    else if (!dev->iface->supports_op(dev->context, node))
        why = "not supported there";
    if (!why) {
        kiln__log(KILN_LOG_DEBUG, "node %zu (%s %s) runs on %s", i, name, s,
                  g->ctx->label);
        return KILN_OK;
    }
    kiln_status st = open_fallback(g->ctx);
    if (st != KILN_OK)
        return st;
    const kiln_device *cpu = &g->ctx->fallback;
    if (!cpu->iface->supports_op(cpu->context, node))
        return kiln__error(KILN_ERR_BACKEND,
                           "node %zu (%s %s) is %s on %s, and the "
                           "fallback %s does not support it either",
                           i, name, s, why, g->ctx->label, g->ctx->fallback_label);
    kiln__log(KILN_LOG_DEBUG, "node %zu (%s %s) runs on cpu:0 (fallback: %s on %s)", i,
              name, s, why, g->ctx->label);
    return fallback_prepare(g, node, &g->plan.fallback[i]);
}

kiln_status kiln__schedule(kiln_graph *g)
{
    kiln__plan *plan = &g->plan;
    plan->fallback   = kiln__calloc(plan->n_exec, sizeof *plan->fallback, "the schedule");
    plan->batch      = kiln__calloc(plan->n_exec, sizeof *plan->batch, "the schedule");
    if (!plan->fallback || !plan->batch)
        return KILN_ERR_NO_MEMORY;
    const char *refuse = getenv("KILN_DEBUG_REFUSE");
    if (refuse && *refuse)
        warn_unknown_refusals(refuse);
    else
        refuse = NULL;
    for (size_t i = 0; i < plan->n_exec; i++) {
        kiln_status st = place(g, i, refuse);
        if (st != KILN_OK)
            return st;
    }
    if (plan->staging_size) {
        plan->staging = kiln__malloc(plan->staging_size, "fallback staging memory");
        if (!plan->staging)
            return KILN_ERR_NO_MEMORY;
    }
    return KILN_OK;
}

void kiln__schedule_free(kiln_graph *g)
{
    kiln__plan *plan = &g->plan;
    for (size_t i = 0; plan->fallback && i < plan->n_exec; i++) {
        kiln__fallback *fb = plan->fallback[i];
        if (!fb)
            continue;
        g->ctx->fallback.iface->buffer_free(g->ctx->fallback.context, fb->buffer);
        free(fb);
    }
    free(plan->fallback);
    free(plan->batch);
    free(plan->staging);
    plan->fallback = NULL;
    plan->batch    = NULL;
    plan->staging  = NULL;
}

/* Copies size bytes between two devices through the staging memory. */
static kiln_status copy(kiln_graph *g, const kiln_device *from, const kiln_node *src,
                        const kiln_device *to, const kiln_node *dst)
{
    size_t size = node_bytes(src);
    if (size == 0)
        return KILN_OK;
    kiln_status st = from->iface->buffer_read(from->context, src->buffer, src->offset,
                                              g->plan.staging, size);
    if (st == KILN_OK)
        st = to->iface->buffer_write(to->context, dst->buffer, dst->offset,
                                     g->plan.staging, size);
    return st;
}

kiln_status kiln__fallback_run(kiln_graph *g, kiln__fallback *fb, const kiln_node *node)
{
    const kiln_device *dev = &g->ctx->device, *cpu = &g->ctx->fallback;
    unsigned           writes = kiln__op_def_of(node->op)->writes;
    kiln_status        st     = KILN_OK;
    for (int s = 0; s < KILN_MAX_SRC && st == KILN_OK; s++)
        if (node->src[s])
            st = copy(g, dev, node->src[s], cpu, &fb->src[s]);
    const kiln_node *one[] = {&fb->node};
    if (st == KILN_OK)
        st = cpu->iface->graph_compute(cpu->context, one, 1);
    if (st == KILN_OK)
        st = copy(g, cpu, &fb->node, dev, node);
    /* the sources it updated where they lie (an optimiser's state) */
    for (int s = 0; s < KILN_MAX_SRC && st == KILN_OK; s++)
        if (node->src[s] && (writes & (1u << s)))
            st = copy(g, cpu, &fb->src[s], dev, node->src[s]);
    return st;
}
