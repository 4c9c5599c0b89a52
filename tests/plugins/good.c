/* tests/plugins/good.c — a well-formed plugin that computes nothing.
 *
 * "good" loads (probe score 5, below the cpu backend) and offers two devices,
 * "Good Device Alpha" (index 0) and "Good Device Beta" (index 1), so that the
 * selection tests can tell "good", "good:1", "good:beta" and "GOOD:ALPHA"
 * apart. Buffers are real host memory with bounds checks, so a core that
 * writes past what it allocated fails loudly here; no op is supported and
 * graph_compute reports an error, so a graph never silently "runs" on it.
 *
 * The device descriptions deliberately avoid the words alpha, beta and gamma:
 * selection by text also looks at descriptions.
 */
#include <kiln/backend.h>

#include <stdlib.h>
#include <string.h>

#define GOOD_DEVICES 2

static const char *const good_names[GOOD_DEVICES] = {
    "Good Device Alpha",
    "Good Device Beta",
};

static const kiln_host *good_host;

typedef struct good_device {
    int index;
} good_device;

/* A buffer remembers its size so that reads and writes can be checked. */
typedef struct good_buffer {
    size_t        size;
    unsigned char data[];
} good_buffer;

static kiln_status good_buffer_alloc(void *dev, size_t size, void **buffer)
{
    good_device *d = dev;
    if (size > SIZE_MAX - sizeof(good_buffer))
        return good_host->error(KILN_ERR_NO_MEMORY, "good:%d: %zu bytes is too large",
                                d->index, size);
    good_buffer *b = malloc(sizeof *b + size);
    if (!b)
        return good_host->error(KILN_ERR_NO_MEMORY,
                                "good:%d: out of memory "
                                "allocating a buffer of %zu bytes",
                                d->index, size);
    b->size = size;
    *buffer = b;
    return KILN_OK;
}

static void good_buffer_free(void *dev, void *buffer)
{
    (void)dev;
    free(buffer);
}

static kiln_status good_check_range(const good_device *d, const good_buffer *b,
                                    size_t offset, size_t size, const char *what)
{
    if (offset > b->size || size > b->size - offset)
        return good_host->error(KILN_ERR_INVALID_ARG,
                                "good:%d: %s of %zu bytes at "
                                "offset %zu overruns a buffer of %zu bytes",
                                d->index, what, size, offset, b->size);
    return KILN_OK;
}

static kiln_status good_buffer_write(void *dev, void *buffer, size_t offset,
                                     const void *src, size_t size)
{
    good_buffer *b  = buffer;
    kiln_status  st = good_check_range(dev, b, offset, size, "write");
    if (st == KILN_OK && size)
        memcpy(b->data + offset, src, size);
    return st;
}

static kiln_status good_buffer_read(void *dev, void *buffer, size_t offset, void *dst,
                                    size_t size)
{
    const good_buffer *b  = buffer;
    kiln_status        st = good_check_range(dev, b, offset, size, "read");
    if (st == KILN_OK && size)
        memcpy(dst, b->data + offset, size);
    return st;
}

static bool good_supports_op(void *dev, const kiln_node *node)
{
    (void)dev;
    (void)node;
    return false;
}

static kiln_status good_graph_compute(void *dev, const kiln_node *const *nodes,
                                      size_t n_nodes)
{
    const good_device *d = dev;
    (void)nodes;
    return good_host->error(KILN_ERR_BACKEND,
                            "good:%d: this test backend runs no "
                            "ops (asked to run %zu nodes)",
                            d->index, n_nodes);
}

static void good_device_free(void *dev)
{
    free(dev);
}

static const kiln_device_iface good_device_iface = {
    .buffer_alloc  = good_buffer_alloc,
    .buffer_free   = good_buffer_free,
    .buffer_write  = good_buffer_write,
    .buffer_read   = good_buffer_read,
    .supports_op   = good_supports_op,
    .graph_compute = good_graph_compute,
    .synchronize   = NULL, /* optional: everything is synchronous */
    .free          = good_device_free,
};

static int good_probe(const kiln_host *host)
{
    (void)host;
    return 5;
}

static kiln_status good_init(const kiln_host *host)
{
    good_host = host;
    return KILN_OK;
}

static int good_device_count(void)
{
    return GOOD_DEVICES;
}

static kiln_status good_check_index(int index)
{
    if (index < 0 || index >= GOOD_DEVICES)
        return good_host->error(KILN_ERR_NOT_FOUND, "good: no device %d (it has %d)",
                                index, GOOD_DEVICES);
    return KILN_OK;
}

static kiln_status good_device_desc(int index, kiln_device_desc *desc)
{
    kiln_status st = good_check_index(index);
    if (st != KILN_OK)
        return st;
    memset(desc, 0, sizeof *desc);
    strncpy(desc->name, good_names[index], sizeof desc->name - 1);
    strncpy(desc->description, "kiln test plugin: host memory, runs no ops",
            sizeof desc->description - 1);
    desc->type          = KILN_DEVICE_CPU;
    desc->memory        = 0;
    desc->compute_units = 1;
    return KILN_OK;
}

static kiln_status good_device_open(int index, kiln_device *device)
{
    kiln_status st = good_check_index(index);
    if (st != KILN_OK)
        return st;
    good_device *d = malloc(sizeof *d);
    if (!d)
        return good_host->error(KILN_ERR_NO_MEMORY,
                                "good:%d: out of memory opening "
                                "the device",
                                index);
    d->index        = index;
    device->iface   = &good_device_iface;
    device->context = d;
    return KILN_OK;
}

static const kiln_plugin good_plugin = {
    .abi_version  = KILN_BACKEND_ABI_VERSION,
    .name         = "good",
    .description  = "kiln test plugin with two devices that run nothing",
    .probe        = good_probe,
    .init         = good_init,
    .shutdown     = NULL, /* optional: init acquires nothing */
    .device_count = good_device_count,
    .device_desc  = good_device_desc,
    .device_open  = good_device_open,
};

KILN_BACKEND_ENTRY
{
    return &good_plugin;
}
