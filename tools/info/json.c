/* tools/info/json.c — kiln-info --json: the plugins, the devices with their
 * capabilities, and the selection with its reason, as one JSON object
 * (its fields are documented in kiln-info(1)). */
#include "info.h"

#include <jansson.h>

#include <ctype.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static json_t *string_or_null(const char *s)
{
    return s ? json_string(s) : json_null();
}

static json_t *word(const char *s, size_t len)
{
    return json_stringn(s, len);
}

/* One capability value: yes/no, a decimal integer, [a,b] or a word. */
static json_t *capability_value(const char *v, size_t len)
{
    if (len == 3 && memcmp(v, "yes", 3) == 0)
        return json_true();
    if (len == 2 && memcmp(v, "no", 2) == 0)
        return json_false();
    if (len > 0 && len < 20 && strspn(v, "0123456789") >= len) {
        char digits[20];
        memcpy(digits, v, len);
        digits[len] = '\0';
        errno                  = 0;
        unsigned long long n   = strtoull(digits, NULL, 10);
        if (errno == 0 && n <= (unsigned long long)INT64_MAX)
            return json_integer((json_int_t)n);
    }
    if (len >= 2 && v[0] == '[' && v[len - 1] == ']') {
        json_t *list = json_array();
        for (size_t i = 1; list && i < len - 1;) {
            size_t n = 0;
            while (i + n < len - 1 && v[i + n] != ',')
                n++;
            if (n && json_array_append_new(list, word(v + i, n)) != 0) {
                json_decref(list);
                return NULL;
            }
            i += n + 1;
        }
        return list;
    }
    return word(v, len);
}

/* "isa=avx2 isas=[avx2,scalar]" as {"isa": "avx2", "isas": ["avx2", "scalar"]};
 * a word without '=' is a flag, true. */
static json_t *capabilities(const char *text)
{
    json_t *obj = json_object();
    for (const char *s = text ? text : ""; obj && *s;) {
        while (isspace((unsigned char)*s))
            s++;
        size_t len = 0;
        while (s[len] && !isspace((unsigned char)s[len]))
            len++;
        if (!len)
            break;
        const char *eq  = memchr(s, '=', len);
        size_t      key = eq ? (size_t)(eq - s) : len;
        json_t     *v   = eq ? capability_value(eq + 1, len - key - 1) : json_true();
        if (!v || json_object_setn_new(obj, s, key, v) != 0) {
            json_decref(obj);
            return NULL;
        }
        s += len;
    }
    return obj;
}

/* One object per plugin report: a backend's probe is its "score", with its
 * devices; a communicator's is its "probe". */
static json_t *reports(const kiln_plugin_report *p, size_t n, bool backend)
{
    json_t *list = json_array();
    for (size_t i = 0; list && i < n; i++) {
        json_t *o = json_pack("{s:s, s:o, s:b, s:i, s:o}", "path", p[i].path, "name",
                              string_or_null(p[i].name), "usable", !p[i].reason,
                              backend ? "score" : "probe", p[i].score, "refused",
                              string_or_null(p[i].reason));
        if (o && backend &&
            json_object_set_new(o, "devices", json_integer(p[i].n_devices)) != 0) {
            json_decref(o);
            o = NULL;
        }
        if (!o || json_array_append_new(list, o) != 0) { /* which released o */
            json_decref(list);
            return NULL;
        }
    }
    return list;
}

static json_t *plugins(void)
{
    const kiln_plugin_report *p;
    size_t                    n = kiln_plugins(&p);
    return reports(p, n, true);
}

static json_t *communicators(void)
{
    const kiln_plugin_report *p;
    size_t                    n = kiln_comm_plugins(&p);
    return reports(p, n, false);
}

static json_t *devices(void)
{
    const kiln_device_report *d;
    size_t                    n    = kiln_devices(&d);
    json_t                   *list = json_array();
    for (size_t i = 0; list && i < n; i++) {
        char id[96], type[16];
        snprintf(id, sizeof id, "%s:%d", d[i].backend, d[i].index);
        snprintf(type, sizeof type, "%s", info_type_name(d[i].type));
        for (char *c = type; *c; c++)
            *c = (char)tolower((unsigned char)*c);
        json_t *o = json_pack(
            "{s:s, s:s, s:i, s:s, s:s, s:s, s:o, s:o, s:b, s:o, s:o}", "id", id, "backend",
            d[i].backend, "index", d[i].index, "name", d[i].name, "type", type,
            "description", d[i].description ? d[i].description : "", "memory_bytes",
            d[i].memory ? json_integer((json_int_t)d[i].memory) : json_null(),
            "compute_units", d[i].compute_units > 0 ? json_integer(d[i].compute_units)
                                                    : json_null(),
            "usable", !d[i].unusable, "unusable", string_or_null(d[i].unusable),
            "capabilities", capabilities(d[i].capabilities));
        if (!o || json_array_append_new(list, o) != 0) {
            json_decref(list);
            return NULL;
        }
    }
    return list;
}

static json_t *selection(const info_selection *sel)
{
    json_t *device = json_null(), *index = json_null();
    if (sel->ok) {
        const kiln_device_report *d;
        kiln_devices(&d);
        char id[96];
        snprintf(id, sizeof id, "%s:%d", d[sel->device].backend, d[sel->device].index);
        device = json_string(id);
        index  = json_integer((json_int_t)sel->device);
    }
    return json_pack("{s:o, s:b, s:o, s:o, s:s}", "KILN_BACKEND",
                     string_or_null(sel->spec), "ok", sel->ok, "device", device,
                     "device_index", index, "why", sel->why);
}

int info_print_json(const info_selection *sel)
{
    const char *path = getenv("KILN_PLUGIN_PATH");
    json_t     *out  = json_pack(
        "{s:s, s:{s:o, s:s}, s:o, s:o, s:o, s:o}", "kiln_version", kiln_version(),
        "plugin_path", "KILN_PLUGIN_PATH", string_or_null(path && *path ? path : NULL),
        "installed", kiln_plugin_dir(), "plugins", plugins(), "devices", devices(),
        "selection", selection(sel), "communicators", communicators());
    if (!out || json_dumpf(out, stdout, JSON_INDENT(2) | JSON_ENSURE_ASCII) != 0 ||
        putchar('\n') == EOF || fflush(stdout) != 0) {
        fprintf(stderr, "kiln-info: could not write the JSON output%s\n",
                out ? "" : ": out of memory");
        json_decref(out);
        return 1;
    }
    json_decref(out);
    return sel->ok ? 0 : 1;
}
