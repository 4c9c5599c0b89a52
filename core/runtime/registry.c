/* core/runtime/registry.c — finding, loading and vetting backend plugins.
 *
 * Search order: each entry of KILN_PLUGIN_PATH (a directory, or one .so file),
 * then KILN_PLUGIN_DIR (the installed plugin directory); never the current
 * directory. In a directory, files ending in ".so" are tried in name order, so
 * the result does not depend on the file system. Each file is checked before
 * dlopen sees it (elf.c), since dlopen of a truncated file kills the process
 * and of a FIFO blocks it: a bad file is listed as refused, with its reason,
 * and the others load. The registry is built once per process and then only
 * read, so readers need no lock.
 */
#include "../kiln-impl.h"

#include <dirent.h>
#include <errno.h>
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#ifndef KILN_PLUGIN_DIR
#error "KILN_PLUGIN_DIR must name the installed plugin directory"
#endif

static void host_log(kiln_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static kiln_status host_error(kiln_status status, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void host_log(kiln_log_level level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    kiln__vlog(level, fmt, ap);
    va_end(ap);
}

static kiln_status host_error(kiln_status status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    kiln__verror(status, fmt, ap);
    va_end(ap);
    return status;
}

const kiln_host kiln__host = {
    .abi_version = KILN_BACKEND_ABI_VERSION,
    .log         = host_log,
    .error       = host_error,
};

static kiln__registry registry;
static bool           registry_ok;
static pthread_once_t registry_once = PTHREAD_ONCE_INIT;

/* ---- one plugin ------------------------------------------------------------ */

static bool refuse(kiln__plugin *p, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Records why p is refused; closes it. Always returns false. */
static bool refuse(kiln__plugin *p, const char *fmt, ...)
{
    char    why[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    p->reason = kiln__strdup(why, "a plugin's refusal");
    p->table  = NULL;
    p->score  = 0;
    if (p->handle)
        dlclose(p->handle);
    p->handle = NULL;
    kiln__log(KILN_LOG_DEBUG, "refused %s: %s", p->path, why);
    return false;
}

static const kiln__plugin *find_by_name(const char *name)
{
    for (size_t i = 0; i < registry.n_plugins; i++) {
        const kiln__plugin *q = &registry.plugins[i];
        if (q->table && strcmp(q->name, name) == 0)
            return q;
    }
    return NULL;
}

static const char *missing_entry(const kiln_plugin *t)
{
    if (!t->name || !*t->name)
        return "name";
    if (!t->probe)
        return "probe";
    if (!t->init)
        return "init";
    if (!t->device_count)
        return "device_count";
    if (!t->device_desc)
        return "device_desc";
    if (!t->device_open)
        return "device_open";
    return NULL;
}

/* dlopens p->path and vets it; true when the plugin is usable. */
static bool plugin_load(kiln__plugin *p)
{
    kiln__log(KILN_LOG_DEBUG, "trying %s", p->path);
    if (kiln__plugin_file_check(p->path) != KILN_OK)
        return refuse(p, "%s", kiln_last_error());
    dlerror();
    p->handle = dlopen(p->path, RTLD_NOW | RTLD_LOCAL);
    if (!p->handle) {
        const char *e = dlerror();
        return refuse(p, "dlopen failed: %s", e ? e : "unknown error");
    }
    dlerror();
    void       *sym = dlsym(p->handle, KILN_BACKEND_ENTRY_SYMBOL);
    const char *e   = dlerror();
    if (e || !sym)
        return refuse(p,
                      "no symbol " KILN_BACKEND_ENTRY_SYMBOL " (%s): not a kiln "
                      "plugin, or built without KILN_BACKEND_ENTRY",
                      e ? e : "NULL");
    kiln_backend_entry_fn entry;
    memcpy(&entry, &sym, sizeof entry); /* object to function pointer */
    const kiln_plugin *t = entry();
    if (!t)
        return refuse(p, KILN_BACKEND_ENTRY_SYMBOL " returned NULL");
    if (t->abi_version != KILN_BACKEND_ABI_VERSION)
        return refuse(p,
                      "ABI version %u, kiln expects %u: rebuild the plugin "
                      "against this kiln's <kiln/backend.h>",
                      (unsigned)t->abi_version, (unsigned)KILN_BACKEND_ABI_VERSION);
    const char *missing = missing_entry(t);
    if (missing)
        return refuse(p, "its plugin table lacks the required entry '%s'", missing);
    p->name = kiln__strdup(t->name, "a plugin name");
    if (!p->name)
        return refuse(p, "out of memory");
    const kiln__plugin *dup = find_by_name(t->name);
    if (dup)
        return refuse(p, "a plugin named \"%s\" was already loaded from %s", t->name,
                      dup->path);
    int score = t->probe(&kiln__host);
    if (score <= 0)
        return refuse(p, "probe returned %d: backend \"%s\" cannot run on this machine",
                      score, t->name);
    kiln_status st = t->init(&kiln__host);
    if (st != KILN_OK)
        return refuse(p, "init failed (%s): %s", kiln_status_name(st), kiln_last_error());
    int n = t->device_count();
    if (n < 0)
        n = 0;
    p->table     = t;
    p->score     = score;
    p->n_devices = n;
    kiln__log(KILN_LOG_DEBUG, "loaded backend \"%s\" from %s (score %d, %d device%s)",
              t->name, p->path, score, n, n == 1 ? "" : "s");
    return true;
}

static bool add_candidate(const char *path)
{
    kiln__plugin *grown = realloc(registry.plugins,
                                  (registry.n_plugins + 1) * sizeof *grown);
    if (!grown) {
        kiln__error(KILN_ERR_NO_MEMORY, "out of memory while listing plugins");
        return false;
    }
    registry.plugins = grown;
    kiln__plugin *p  = &registry.plugins[registry.n_plugins];
    memset(p, 0, sizeof *p);
    p->path = kiln__strdup(path, "a plugin path");
    if (!p->path)
        return false;
    registry.n_plugins++;
    plugin_load(p);
    return true;
}

/* ---- directories ----------------------------------------------------------- */

static bool has_so_suffix(const char *name)
{
    size_t n = strlen(name);
    return n > 3 && strcmp(name + n - 3, ".so") == 0;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static bool scan_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) {
        kiln__log(KILN_LOG_DEBUG, "plugin directory %s: cannot open (%s)", dir,
                  strerror(errno));
        return true;
    }
    char         **names = NULL;
    size_t         n = 0, cap = 0;
    bool           ok = true;
    struct dirent *e;
    while (ok && (e = readdir(d)) != NULL) {
        if (!has_so_suffix(e->d_name))
            continue;
        if (n == cap) {
            cap          = cap ? 2 * cap : 16;
            char **grown = realloc(names, cap * sizeof *names);
            if (!grown) {
                ok = false;
                break;
            }
            names = grown;
        }
        names[n] = kiln__strdup(e->d_name, "a plugin file name");
        ok       = names[n] != NULL;
        n += ok;
    }
    closedir(d);
    if (n > 1) /* names is NULL when the folder holds no plugin */
        qsort(names, n, sizeof *names, cmp_str);
    for (size_t i = 0; i < n; i++) {
        size_t len  = strlen(dir) + strlen(names[i]) + 2;
        char  *path = malloc(len);
        if (path) {
            snprintf(path, len, "%s/%s", dir, names[i]);
            ok = add_candidate(path) && ok;
        } else {
            ok = false;
        }
        free(path);
        free(names[i]);
    }
    free(names);
    if (!ok)
        kiln__error(KILN_ERR_NO_MEMORY, "out of memory while scanning %s", dir);
    return ok;
}

static bool scan_entry(const char *entry)
{
    struct stat st;
    if (stat(entry, &st) == 0 && S_ISREG(st.st_mode))
        return add_candidate(entry);
    return scan_dir(entry);
}

static bool scan_path(const char *list)
{
    char *copy = kiln__strdup(list, "KILN_PLUGIN_PATH");
    if (!copy)
        return false;
    bool ok = true;
    for (char *save = NULL, *tok = strtok_r(copy, ":", &save); tok;
         tok = strtok_r(NULL, ":", &save)) {
        /* An empty or relative entry could make the current directory a
         * plugin source; only absolute paths are searched. */
        if (tok[0] != '/') {
            kiln__log(KILN_LOG_WARN,
                      "KILN_PLUGIN_PATH entry \"%s\" ignored: "
                      "expected an absolute path",
                      tok);
            continue;
        }
        ok = scan_entry(tok) && ok;
    }
    free(copy);
    return ok;
}

/* ---- reports ----------------------------------------------------------------- */

static bool build_device_reports(void)
{
    size_t total = 0;
    for (size_t i = 0; i < registry.n_plugins; i++)
        total += (size_t)registry.plugins[i].n_devices;
    registry.devices       = kiln__calloc(total, sizeof *registry.devices, "device list");
    registry.descs         = kiln__calloc(total, sizeof *registry.descs, "device list");
    registry.device_plugin = kiln__calloc(total, sizeof(size_t), "device list");
    if (!registry.devices || !registry.descs || !registry.device_plugin)
        return false;
    size_t k = 0;
    for (size_t i = 0; i < registry.n_plugins; i++) {
        const kiln__plugin *p = &registry.plugins[i];
        for (int d = 0; d < p->n_devices; d++, k++) {
            kiln_device_desc   *desc = &registry.descs[k];
            kiln_device_report *r    = &registry.devices[k];
            if (p->table->device_desc(d, desc) != KILN_OK) {
                snprintf(desc->name, sizeof desc->name, "device %d", d);
                snprintf(desc->unusable, sizeof desc->unusable,
                         "could not be described: %s", kiln_last_error());
            }
            desc->name[sizeof desc->name - 1]               = '\0';
            desc->description[sizeof desc->description - 1] = '\0';
            desc->unusable[sizeof desc->unusable - 1]       = '\0';
            r->backend                                      = p->name;
            r->index                                        = d;
            r->name                                         = desc->name;
            r->description                                  = desc->description;
            r->type                                         = desc->type;
            r->memory                                       = desc->memory;
            r->compute_units                                = desc->compute_units;
            r->unusable               = desc->unusable[0] ? desc->unusable : NULL;
            registry.device_plugin[k] = i;
        }
    }
    registry.n_devices = k;
    return true;
}

static bool build_plugin_reports(void)
{
    registry.reports = kiln__calloc(registry.n_plugins, sizeof *registry.reports,
                                    "plugin list");
    if (!registry.reports)
        return false;
    for (size_t i = 0; i < registry.n_plugins; i++) {
        const kiln__plugin *p = &registry.plugins[i];
        registry.reports[i]   = (kiln_plugin_report){.path      = p->path,
                                                     .name      = p->name,
                                                     .reason    = p->reason,
                                                     .score     = p->score,
                                                     .n_devices = p->n_devices};
    }
    return true;
}

static void registry_load(void)
{
    const char *path = getenv("KILN_PLUGIN_PATH");
    bool        ok   = true;
    if (path && *path)
        ok = scan_path(path);
    ok          = ok && scan_dir(KILN_PLUGIN_DIR);
    ok          = ok && build_plugin_reports() && build_device_reports();
    registry_ok = ok;
}

const kiln__registry *kiln__registry_get(void)
{
    pthread_once(&registry_once, registry_load);
    if (!registry_ok) {
        kiln__error(KILN_ERR_NO_MEMORY, "the plugin registry could not be built "
                                        "(out of memory)");
        return NULL;
    }
    return &registry;
}

KILN_API size_t kiln_plugins(const kiln_plugin_report **reports)
{
    const kiln__registry *r = kiln__registry_get();
    if (reports)
        *reports = r ? r->reports : NULL;
    return r ? r->n_plugins : 0;
}

KILN_API size_t kiln_devices(const kiln_device_report **devices)
{
    const kiln__registry *r = kiln__registry_get();
    if (devices)
        *devices = r ? r->devices : NULL;
    return r ? r->n_devices : 0;
}

KILN_API const char *kiln_plugin_dir(void)
{
    return KILN_PLUGIN_DIR;
}
