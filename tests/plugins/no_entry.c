/* tests/plugins/no_entry.c — a plugin whose entry point is misspelt.
 *
 * The table is fine, but the exported function is kiln_backend_entry_typo,
 * as happens when a plugin defines its entry by hand instead of with
 * KILN_BACKEND_ENTRY. The loader must refuse the file ("no symbol
 * kiln_backend_entry") rather than guess.
 */
#include <kiln/backend.h>

#include <stddef.h>

__attribute__((visibility("default"))) const kiln_plugin *kiln_backend_entry_typo(void);

static int noentry_probe(const kiln_host *host)
{
    (void)host;
    return 3;
}

static kiln_status noentry_init(const kiln_host *host)
{
    (void)host;
    return KILN_OK;
}

static int noentry_device_count(void)
{
    return 0;
}

static kiln_status noentry_device_desc(int index, kiln_device_desc *desc)
{
    (void)index;
    (void)desc;
    return KILN_ERR_NOT_FOUND;
}

static kiln_status noentry_device_open(int index, kiln_device *device)
{
    (void)index;
    (void)device;
    return KILN_ERR_NOT_FOUND;
}

static const kiln_plugin noentry_plugin = {
    .abi_version  = KILN_BACKEND_ABI_VERSION,
    .name         = "noentry",
    .description  = "kiln test plugin that exports the wrong symbol",
    .probe        = noentry_probe,
    .init         = noentry_init,
    .shutdown     = NULL,
    .device_count = noentry_device_count,
    .device_desc  = noentry_device_desc,
    .device_open  = noentry_device_open,
};

const kiln_plugin *kiln_backend_entry_typo(void)
{
    return &noentry_plugin;
}
