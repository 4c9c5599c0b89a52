/* tests/plugins/unresolved.c — a plugin that calls a function nobody defines.
 *
 * It is a well-formed shared object for this machine, so the loader's own
 * checks pass it, but dlopen (RTLD_NOW) cannot bind kiln_test_undefined and
 * fails: the refusal must say "dlopen failed" with dlopen's words, as for a
 * plugin whose library is missing, and loading must go on.
 */
#include <kiln/backend.h>

#include <stddef.h>

int kiln_test_undefined(void);

static int unresolved_probe(const kiln_host *host)
{
    (void)host;
    return kiln_test_undefined();
}

static kiln_status unresolved_init(const kiln_host *host)
{
    (void)host;
    return KILN_OK;
}

static int unresolved_device_count(void)
{
    return 0;
}

static kiln_status unresolved_device_desc(int index, kiln_device_desc *desc)
{
    (void)index;
    (void)desc;
    return KILN_ERR_NOT_FOUND;
}

static kiln_status unresolved_device_open(int index, kiln_device *device)
{
    (void)index;
    (void)device;
    return KILN_ERR_NOT_FOUND;
}

static const kiln_plugin unresolved_plugin = {
    .abi_version  = KILN_BACKEND_ABI_VERSION,
    .name         = "unresolved",
    .probe        = unresolved_probe,
    .init         = unresolved_init,
    .device_count = unresolved_device_count,
    .device_desc  = unresolved_device_desc,
    .device_open  = unresolved_device_open,
};

KILN_BACKEND_ENTRY
{
    return &unresolved_plugin;
}
