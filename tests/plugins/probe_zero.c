/* tests/plugins/probe_zero.c — a plugin that cannot run on this machine.
 *
 * A complete plugin whose probe returns 0, as a GPU backend does when no
 * device is present. The loader must refuse it ("probe returned 0") without
 * calling init, and selecting "probezero" must say why it is unavailable.
 * init fails on purpose, so a loader that called it anyway would report a
 * different reason and the test would notice.
 */
#include <kiln/backend.h>

static const kiln_host *probezero_host;

static int probezero_probe(const kiln_host *host)
{
    (void)host;
    return 0;
}

static kiln_status probezero_init(const kiln_host *host)
{
    probezero_host = host;
    return host->error(KILN_ERR_BACKEND, "probezero: init called after probe "
                                         "returned 0");
}

static int probezero_device_count(void)
{
    return 0;
}

static kiln_status probezero_device_desc(int index, kiln_device_desc *desc)
{
    (void)desc;
    return probezero_host->error(KILN_ERR_NOT_FOUND, "probezero: no device %d", index);
}

static kiln_status probezero_device_open(int index, kiln_device *device)
{
    (void)device;
    return probezero_host->error(KILN_ERR_NOT_FOUND, "probezero: no device %d", index);
}

static const kiln_plugin probezero_plugin = {
    .abi_version  = KILN_BACKEND_ABI_VERSION,
    .name         = "probezero",
    .description  = "kiln test plugin that cannot run anywhere",
    .probe        = probezero_probe,
    .init         = probezero_init,
    .shutdown     = NULL,
    .device_count = probezero_device_count,
    .device_desc  = probezero_device_desc,
    .device_open  = probezero_device_open,
};

KILN_BACKEND_ENTRY
{
    return &probezero_plugin;
}
