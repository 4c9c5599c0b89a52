/* core/runtime/select.c — KILN_BACKEND: which device a selection string names.
 *
 * Forms: "name" (its device 0), "name:N" (device index), "name:text" (first
 * device whose name or description contains text, ignoring case), and a
 * comma-separated list of those (the first that resolves wins). An empty
 * string picks the device of the highest-scoring plugin.
 */
#include "../kiln-impl.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static bool contains_nocase(const char *hay, const char *needle)
{
    size_t n = strlen(needle);
    for (; *hay; hay++)
        if (strncasecmp(hay, needle, n) == 0)
            return true;
    return n == 0;
}

static char *trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    char *end = s + strlen(s);
    while (end > s && isspace((unsigned char)end[-1]))
        *--end = '\0';
    return s;
}

static bool usable(const kiln__registry *r, size_t k)
{
    return r->devices[k].unusable == NULL;
}

/* Resolves one "name[:which]" item; on failure writes why into why, and
 * sets *bad_form when the item is not of that form at all. */
static bool resolve_item(const kiln__registry *r, char *item, size_t *out, bool *bad_form,
                         char *why, size_t why_len)
{
    char *which = strchr(item, ':');
    if (which)
        *which++ = '\0';
    char *name = trim(item);
    if (which)
        which = trim(which);
    if (!*name || (which && !*which)) {
        *bad_form = true;
        snprintf(why, why_len,
                 "\"%s%s%s\" is not of the form name, name:N or "
                 "name:text",
                 name, which ? ":" : "", which ? which : "");
        return false;
    }
    bool   is_index = which && strspn(which, "0123456789") == strlen(which);
    long   index    = is_index ? strtol(which, NULL, 10) : 0;
    size_t seen     = 0;
    for (size_t k = 0; k < r->n_devices; k++) {
        const kiln_device_report *d = &r->devices[k];
        if (strcasecmp(d->backend, name) != 0)
            continue;
        seen++;
        bool match = !which || (is_index ? d->index == index
                                         : contains_nocase(d->name, which) ||
                                               contains_nocase(d->description, which));
        if (!match)
            continue;
        if (!usable(r, k)) {
            snprintf(why, why_len, "%s:%d is not usable: %s", d->backend, d->index,
                     d->unusable);
            return false;
        }
        *out = k;
        return true;
    }
    for (size_t i = 0; !seen && i < r->n_plugins; i++) {
        const kiln__plugin *p = &r->plugins[i];
        if (p->name && strcasecmp(p->name, name) == 0 && p->reason) {
            snprintf(why, why_len, "backend \"%s\" was refused: %s", name, p->reason);
            return false;
        }
    }
    if (!seen)
        snprintf(why, why_len, "no backend is named \"%s\"", name);
    else
        snprintf(why, why_len,
                 "backend \"%s\" has %zu device%s and none is %s "
                 "\"%s\"",
                 name, seen, seen == 1 ? "" : "s", is_index ? "numbered" : "named like",
                 which);
    return false;
}

static bool resolve_best(const kiln__registry *r, size_t *out, char *why, size_t why_len)
{
    int best = 0;
    for (size_t k = 0; k < r->n_devices; k++) {
        int score = r->plugins[r->device_plugin[k]].score;
        if (usable(r, k) && score > best) {
            best = score;
            *out = k;
        }
    }
    if (!best)
        snprintf(why, why_len, "no usable backend was found");
    return best > 0;
}

/* "Available: cpu:0 (CPU), ... Refused: path (reason); ..." */
static void list_available(const kiln__registry *r, char *buf, size_t len)
{
    size_t n     = (size_t)snprintf(buf, len, "Available:");
    size_t shown = 0;
    for (size_t k = 0; k < r->n_devices && n < len; k++) {
        if (!usable(r, k))
            continue;
        n += (size_t)snprintf(buf + n, len - n, "%s %s:%d (%s)", shown++ ? "," : "",
                              r->devices[k].backend, r->devices[k].index,
                              r->devices[k].name);
    }
    if (!shown && n < len)
        n += (size_t)snprintf(buf + n, len - n,
                              " nothing (set KILN_PLUGIN_PATH, or "
                              "check the install: %s)",
                              KILN_PLUGIN_DIR);
    size_t refused = 0;
    for (size_t i = 0; i < r->n_plugins && n < len; i++) {
        if (!r->plugins[i].reason)
            continue;
        n += (size_t)snprintf(buf + n, len - n, "%s %s (%s)",
                              refused++ ? ";" : ". Refused:", r->plugins[i].path,
                              r->plugins[i].reason);
    }
    if (n < len)
        snprintf(buf + n, len - n, ".");
}

KILN_API kiln_status kiln_select(const char *spec, size_t *device)
{
    const kiln__registry *r = kiln__registry_get();
    if (!r)
        return KILN_ERR_NO_MEMORY;
    if (!device)
        return kiln__error(KILN_ERR_INVALID_ARG, "kiln_select: device is NULL");
    char        why[1024] = "";
    char        list[2048];
    const char *s = spec ? spec : "";
    while (isspace((unsigned char)*s))
        s++;
    if (!*s) {
        if (resolve_best(r, device, why, sizeof why))
            return KILN_OK;
        list_available(r, list, sizeof list);
        return kiln__error(KILN_ERR_NOT_FOUND, "%s. %s", why, list);
    }
    char *copy = kiln__strdup(s, "a backend selection");
    if (!copy)
        return KILN_ERR_NO_MEMORY;
    bool   found    = false;
    bool   bad_form = false;
    size_t n_why    = 0;
    char  *rest     = copy;
    for (;;) {
        char *comma = strchr(rest, ',');
        if (comma)
            *comma = '\0';
        char  item_why[512];
        char *item = trim(rest);
        if (!*item) {
            snprintf(item_why, sizeof item_why, "an empty entry in the list");
            bad_form = true;
        } else if (resolve_item(r, item, device, &bad_form, item_why, sizeof item_why)) {
            found = true;
            break;
        }
        n_why += (size_t)snprintf(why + n_why, sizeof why - n_why, "%s%s",
                                  n_why ? "; " : "", item_why);
        if (n_why >= sizeof why)
            n_why = sizeof why - 1;
        if (!comma)
            break;
        rest = comma + 1;
    }
    free(copy);
    if (found)
        return KILN_OK;
    list_available(r, list, sizeof list);
    return kiln__error(bad_form ? KILN_ERR_INVALID_ARG : KILN_ERR_NOT_FOUND,
                       "backend selection \"%s\" names no usable device: %s. %s", spec,
                       why, list);
}
