/* example.c — the smallest useful kiln backend. Copy it to start your own.
 *
 * It offers one device that computes in host memory and runs three f32 ops:
 * add and mul (with kiln's broadcast rule) and relu. Any other op is refused
 * in supports_op, which kiln asks before it runs a graph.
 *
 * It sees <kiln/backend.h> and libc, nothing of kiln's internals, so it builds
 * against an installed kiln alone (see Makefile and ../README.md):
 *
 *   cc -std=c11 -shared -fPIC -fvisibility=hidden $(pkg-config --cflags kiln) \
 *      -o kiln-example.so example.c
 *   KILN_PLUGIN_PATH=$PWD KILN_BACKEND=example your-program
 */
#include <kiln/backend.h>

#include <stdlib.h>
#include <string.h>

/* What kiln gave us at init: logging and error reporting. Plugin-private
 * names are prefixed with the backend's name. */
static const kiln_host *example_host;

/* ---- buffers -------------------------------------------------------------
 * The device computes in host memory, so a buffer handle is simply the
 * pointer malloc returned. A GPU backend would return its own handle (a
 * cl_mem, say) and copy in buffer_write / buffer_read. */

static kiln_status example_buffer_alloc(void *dev, size_t size, void **buffer)
{
    (void)dev;
    *buffer = malloc(size ? size : 1); /* malloc(0) may return NULL */
    if (!*buffer)
        return example_host->error(KILN_ERR_NO_MEMORY,
                                   "example: out of memory "
                                   "allocating %zu bytes",
                                   size);
    return KILN_OK;
}

static void example_buffer_free(void *dev, void *buffer)
{
    (void)dev;
    free(buffer);
}

static kiln_status example_buffer_write(void *dev, void *buffer, size_t offset,
                                        const void *src, size_t size)
{
    (void)dev;
    memcpy((char *)buffer + offset, src, size);
    return KILN_OK;
}

static kiln_status example_buffer_read(void *dev, void *buffer, size_t offset, void *dst,
                                       size_t size)
{
    (void)dev;
    memcpy(dst, (const char *)buffer + offset, size);
    return KILN_OK;
}

/* ---- ops ------------------------------------------------------------------ */

/* A node's data lives `offset` bytes into its buffer. */
static float *example_data(const kiln_node *node)
{
    return (float *)((char *)node->buffer + node->offset);
}

/* Binary ops broadcast by repetition: out[i] = a[i % numel(a)] op b[i % numel(b)].
 * This covers equal shapes, a bias [N] on [M, N] and a scalar on anything,
 * with the smaller operand on either side. */
static void example_binary(const kiln_node *out, bool mul)
{
    const kiln_node *a = out->src[0], *b = out->src[1];
    const float     *x = example_data(a), *y = example_data(b);
    float           *z = example_data(out);
    for (int64_t i = 0; i < out->numel; i++) {
        float u = x[i % a->numel], v = y[i % b->numel];
        z[i] = mul ? u * v : u + v;
    }
}

static void example_relu(const kiln_node *out)
{
    const float *x = example_data(out->src[0]);
    float       *z = example_data(out);
    for (int64_t i = 0; i < out->numel; i++)
        z[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

/* Say yes only to what graph_compute really does: kiln refuses to compile a
 * graph with a node no device supports, and says which op and device. */
static bool example_supports_op(void *dev, const kiln_node *node)
{
    (void)dev;
    if (node->dtype != KILN_F32)
        return false;
    switch (node->op) {
    case KILN_OP_ADD:
    case KILN_OP_MUL: {
        const kiln_node *a = node->src[0], *b = node->src[1];
        /* the rule above needs each operand's numel to divide the output's */
        return a->dtype == KILN_F32 && b->dtype == KILN_F32 &&
               (node->numel == 0 ||
                (a->numel > 0 && b->numel > 0 && node->numel % a->numel == 0 &&
                 node->numel % b->numel == 0));
    }
    case KILN_OP_RELU: return node->src[0]->dtype == KILN_F32;
    default: return false;
    }
}

/* Runs the nodes in the order given; sources are always complete. Outputs
 * are not zeroed and their storage is reused, so write every element. */
static kiln_status example_graph_compute(void *dev, const kiln_node *const *nodes,
                                         size_t n_nodes)
{
    (void)dev;
    for (size_t i = 0; i < n_nodes; i++) {
        const kiln_node *n = nodes[i];
        switch (n->op) {
        case KILN_OP_ADD: example_binary(n, false); break;
        case KILN_OP_MUL: example_binary(n, true); break;
        case KILN_OP_RELU: example_relu(n); break;
        default:
            return example_host->error(KILN_ERR_BACKEND,
                                       "example: op %d of node "
                                       "\"%s\" is not supported",
                                       (int)n->op, n->name ? n->name : "?");
        }
    }
    return KILN_OK;
}

/* The device has no state of its own, so there is nothing to free. A real
 * backend keeps its queue, pools, etc. in the context device_open returns. */
static void example_device_free(void *dev)
{
    (void)dev;
}

static const kiln_device_iface example_device_iface = {
    .buffer_alloc  = example_buffer_alloc,
    .buffer_free   = example_buffer_free,
    .buffer_write  = example_buffer_write,
    .buffer_read   = example_buffer_read,
    .supports_op   = example_supports_op,
    .graph_compute = example_graph_compute,
    .synchronize   = NULL, /* optional: everything above is synchronous */
    .free          = example_device_free,
};

/* ---- the plugin --------------------------------------------------------- */

/* The score orders usable backends when KILN_BACKEND is unset. 1 is the
 * lowest that still loads, so this example is chosen only when asked for. */
static int example_probe(const kiln_host *h)
{
    (void)h;
    return 1;
}

static kiln_status example_init(const kiln_host *h)
{
    example_host = h;
    example_host->log(KILN_LOG_DEBUG, "example: ready, one host-memory device");
    return KILN_OK;
}

static int example_device_count(void)
{
    return 1;
}

static kiln_status example_device_desc(int index, kiln_device_desc *desc)
{
    if (index != 0)
        return example_host->error(KILN_ERR_NOT_FOUND, "example: no device %d", index);
    memset(desc, 0, sizeof *desc); /* unusable[0] == '\0': the device is usable */
    strcpy(desc->name, "Example CPU");
    strcpy(desc->description, "plugin SDK example: add, mul, relu in host memory");
    desc->type          = KILN_DEVICE_CPU;
    desc->compute_units = 1;
    return KILN_OK;
}

static kiln_status example_device_open(int index, kiln_device *device)
{
    if (index != 0)
        return example_host->error(KILN_ERR_NOT_FOUND, "example: no device %d", index);
    device->iface   = &example_device_iface;
    device->context = NULL;
    return KILN_OK;
}

static const kiln_plugin example_plugin = {
    .abi_version  = KILN_BACKEND_ABI_VERSION, /* the loader refuses any other */
    .name         = "example",                /* what KILN_BACKEND names      */
    .description  = "plugin SDK example backend",
    .probe        = example_probe,
    .init         = example_init,
    .shutdown     = NULL, /* optional: init acquired nothing */
    .device_count = example_device_count,
    .device_desc  = example_device_desc,
    .device_open  = example_device_open,
};

/* The one exported symbol. With -fvisibility=hidden everything else stays
 * private to this file, so two plugins never clash. */
KILN_BACKEND_ENTRY
{
    return &example_plugin;
}
