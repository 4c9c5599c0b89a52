/* tests/plugins/bad_abi.c — a plugin built against an ABI kiln does not speak.
 *
 * Apart from abi_version (999, where kiln expects KILN_BACKEND_ABI_VERSION)
 * this is a complete, working plugin with no devices, so a loader that skipped
 * the version check would take it and the test would see no refusal. A real
 * plugin of another ABI may lay out the table differently: the loader must
 * read abi_version and nothing else before refusing it.
 */
#include <kiln/backend.h>

static const kiln_host *badabi_host;

static int badabi_probe(const kiln_host *host)
{
    (void)host;
    return 7;
}

static kiln_status badabi_init(const kiln_host *host)
{
    badabi_host = host;
    return KILN_OK;
}

static int badabi_device_count(void)
{
    return 0;
}

static kiln_status badabi_device_desc(int index, kiln_device_desc *desc)
{
    (void)desc;
    return badabi_host->error(KILN_ERR_NOT_FOUND, "badabi: no device %d (it has none)",
                              index);
}

static kiln_status badabi_device_open(int index, kiln_device *device)
{
    (void)device;
    return badabi_host->error(KILN_ERR_NOT_FOUND, "badabi: no device %d (it has none)",
                              index);
}

static const kiln_plugin badabi_plugin = {
    .abi_version  = 999,
    .name         = "badabi",
    .description  = "kiln test plugin with a wrong ABI version",
    .probe        = badabi_probe,
    .init         = badabi_init,
    .shutdown     = NULL,
    .device_count = badabi_device_count,
    .device_desc  = badabi_device_desc,
    .device_open  = badabi_device_open,
};

KILN_BACKEND_ENTRY
{
    return &badabi_plugin;
}
