/* fuzz/select.c — libFuzzer target for backend selection strings: kiln_select
 * and kiln_context_new_for, which KILN_BACKEND goes through
 * (core/runtime/select.c, context.c).
 *
 * The registry is the real one, built from the build tree: the cpu plugin,
 * and the test plugins (tests/plugins: "good" with two devices, and plugins
 * refused for their ABI, a missing entry, a probe of 0, or for not being a
 * shared object at all) and the SDK example (plugins/example). Each input is
 * a selection string; what kiln selects is compared with a reference reading
 * of README's grammar below, over the same kiln_devices() and kiln_plugins()
 * lists, and a selection that succeeds must open a context on that device.
 */
#include <kiln/kiln.h>

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

#ifndef KILN_FUZZ_SELECT_PLUGIN_PATH
#error "KILN_FUZZ_SELECT_PLUGIN_PATH must list the build tree's plugin folders"
#endif

static const kiln_device_report *devices;
static const kiln_plugin_report *plugins;
static size_t                    n_devices, n_plugins;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_setup(KILN_FUZZ_SELECT_PLUGIN_PATH);
    fuzz_pin_plugins(KILN_FUZZ_SELECT_PLUGIN_PATH);
    /* Load every plugin now, before libFuzzer counts its modules. */
    n_plugins = kiln_plugins(&plugins);
    n_devices = kiln_devices(&devices);
    if (n_devices == 0)
        fuzz_fail("no devices: the cpu plugin did not load (%s)",
                  KILN_FUZZ_SELECT_PLUGIN_PATH);
    return 0;
}

/* ---- the reference: README's KILN_BACKEND grammar ------------------------------- */

static bool ascii_ieq(char a, char b)
{
    return tolower((unsigned char)a) == tolower((unsigned char)b);
}

/* [s, e) trimmed of white space. */
static void trim(const char **s, const char **e)
{
    while (*s < *e && isspace((unsigned char)**s))
        (*s)++;
    while (*e > *s && isspace((unsigned char)(*e)[-1]))
        (*e)--;
}

static bool equal_nocase(const char *a, const char *s, const char *e)
{
    size_t n = (size_t)(e - s);
    if (strlen(a) != n)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!ascii_ieq(a[i], s[i]))
            return false;
    return true;
}

static bool contains_nocase(const char *hay, const char *s, const char *e)
{
    size_t n = (size_t)(e - s), len = strlen(hay);
    for (size_t at = 0; at + n <= len; at++) {
        size_t i = 0;
        while (i < n && ascii_ieq(hay[at + i], s[i]))
            i++;
        if (i == n)
            return true;
    }
    return false;
}

/* Whether [s, e) is a decimal number equal to index. */
static bool is_number(const char *s, const char *e, int index)
{
    long long v = 0;
    for (const char *p = s; p < e; p++) {
        if (*p < '0' || *p > '9')
            return false;
        if (v <= index)
            v = 10 * v + (*p - '0');
    }
    return v == index;
}

static bool all_digits(const char *s, const char *e)
{
    for (; s < e; s++)
        if (*s < '0' || *s > '9')
            return false;
    return true;
}

/* One item "name", "name:N" or "name:text": the first device of backend name
 * that the rest matches, if it is usable. */
static bool ref_item(const char *s, const char *e, size_t *out)
{
    const char *colon = memchr(s, ':', (size_t)(e - s));
    const char *ne = colon ? colon : e, *ws = colon ? colon + 1 : e, *we = e;
    trim(&s, &ne);
    trim(&ws, &we);
    if (s == ne || (colon && ws == we))
        return false;
    for (size_t k = 0; k < n_devices; k++) {
        const kiln_device_report *d = &devices[k];
        if (!equal_nocase(d->backend, s, ne))
            continue;
        bool match = !colon ||
                     (all_digits(ws, we) ? is_number(ws, we, d->index)
                                         : contains_nocase(d->name, ws, we) ||
                                               contains_nocase(d->description, ws, we));
        if (match) {
            *out = k;
            return d->unusable == NULL;
        }
    }
    return false;
}

static int score_of(const char *backend)
{
    for (size_t i = 0; i < n_plugins; i++)
        if (!plugins[i].reason && plugins[i].name &&
            strcmp(plugins[i].name, backend) == 0)
            return plugins[i].score;
    return 0;
}

static bool ref_select(const char *spec, size_t *out)
{
    const char *s = spec, *end = spec + strlen(spec);
    trim(&s, &end);
    if (s == end) {
        int best = 0;
        for (size_t k = 0; k < n_devices; k++)
            if (!devices[k].unusable && score_of(devices[k].backend) > best) {
                best = score_of(devices[k].backend);
                *out = k;
            }
        return best > 0;
    }
    for (;;) {
        const char *comma = memchr(s, ',', (size_t)(end - s));
        if (ref_item(s, comma ? comma : end, out))
            return true;
        if (!comma)
            return false;
        s = comma + 1;
    }
}

/* ---- the target ------------------------------------------------------------------ */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char  *spec = fuzz_string(data, size);
    size_t got = SIZE_MAX, want = SIZE_MAX;
    bool   ok  = kiln_select(spec, &got) == KILN_OK;
    bool   ref = ref_select(spec, &want);
    if (ok != ref)
        fuzz_fail("kiln_select(\"%s\") %s, the reference %s", spec,
                  ok ? "succeeded" : "failed", ref ? "selects a device" : "selects none");
    if (!ok && !kiln_last_error()[0])
        fuzz_fail("kiln_select(\"%s\") failed without a message", spec);
    if (ok && got != want)
        fuzz_fail("kiln_select(\"%s\") selected device %zu, the reference %zu", spec, got,
                  want);
    kiln_context *ctx = kiln_context_new_for(spec);
    if (ok != (ctx != NULL))
        fuzz_fail("kiln_context_new_for(\"%s\") %s where kiln_select %s", spec,
                  ctx ? "opened a context" : "failed", ok ? "succeeded" : "failed");
    size_t index = SIZE_MAX;
    if (ctx && (kiln_context_device_index(ctx, &index) != KILN_OK || index != got))
        fuzz_fail("kiln_context_new_for(\"%s\") opened device %zu, not %zu", spec, index,
                  got);
    kiln_context_free(ctx);
    free(spec);
    return 0;
}
