/* core/runtime/context.c — a context owns one opened device of one plugin. */
#include "../kiln-impl.h"

#include <stdio.h>
#include <stdlib.h>

static bool device_iface_complete(const kiln_device *d)
{
    const kiln_device_iface *i = d->iface;
    return i && i->buffer_alloc && i->buffer_free && i->buffer_write && i->buffer_read &&
           i->supports_op && i->graph_compute && i->free;
}

KILN_API kiln_context *kiln_context_new_for(const char *spec)
{
    size_t k;
    if (kiln_select(spec, &k) != KILN_OK)
        return NULL;
    const kiln__registry     *r   = kiln__registry_get();
    const kiln__plugin       *p   = &r->plugins[r->device_plugin[k]];
    const kiln_device_report *d   = &r->devices[k];
    kiln_context             *ctx = kiln__calloc(1, sizeof *ctx, "a context");
    if (!ctx)
        return NULL;
    ctx->plugin    = p->table;
    ctx->index     = d->index;
    ctx->max_alloc = r->descs[k].max_alloc;
    kiln_status st = p->table->device_open(d->index, &ctx->device);
    if (st != KILN_OK) {
        kiln__error(st, "cannot open %s:%d (%s): %s", d->backend, d->index, d->name,
                    kiln_last_error());
        free(ctx);
        return NULL;
    }
    if (!device_iface_complete(&ctx->device)) {
        kiln__error(KILN_ERR_BACKEND,
                    "%s:%d (%s from %s) returned a device whose "
                    "table lacks a required entry",
                    d->backend, d->index, d->name, p->path);
        if (ctx->device.iface && ctx->device.iface->free)
            ctx->device.iface->free(ctx->device.context);
        free(ctx);
        return NULL;
    }
    snprintf(ctx->label, sizeof ctx->label, "%s:%d (%s)", d->backend, d->index, d->name);
    kiln__log(KILN_LOG_INFO, "context on %s", ctx->label);
    return ctx;
}

KILN_API kiln_context *kiln_context_new(void)
{
    return kiln_context_new_for(getenv("KILN_BACKEND"));
}

KILN_API void kiln_context_free(kiln_context *ctx)
{
    if (!ctx)
        return;
    kiln__context_close_fallback(ctx);
    ctx->device.iface->free(ctx->device.context);
    free(ctx);
}

KILN_API const char *kiln_context_device(const kiln_context *ctx)
{
    return ctx ? ctx->label : "(no context)";
}

/* The context keeps its plugin's table and the device's index within the
 * plugin, as a backend sees it; the registry's list, which never changes once
 * loaded, holds the same pair at the report's index. */
KILN_API kiln_status kiln_context_device_index(const kiln_context *ctx, size_t *device)
{
    if (!ctx || !device)
        return kiln__error(KILN_ERR_INVALID_ARG, "kiln_context_device_index: %s is NULL",
                           ctx ? "device" : "ctx");
    const kiln__registry *r = kiln__registry_get();
    for (size_t k = 0; r && k < r->n_devices; k++) {
        if (r->plugins[r->device_plugin[k]].table == ctx->plugin &&
            r->devices[k].index == ctx->index) {
            *device = k;
            return KILN_OK;
        }
    }
    return kiln__error(KILN_ERR_STATE,
                       "kiln_context_device_index: %s is not in "
                       "kiln_devices()",
                       ctx->label);
}
