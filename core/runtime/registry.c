/* core/runtime/registry.c — finding, loading and vetting backend plugins.
 *
 * Search order (search.c): each entry of KILN_PLUGIN_PATH (a directory, or one
 * .so file), then KILN_PLUGIN_DIR (the installed plugin directory); never the
 * current directory; in a directory, files ending in ".so" in name order, so
 * the result does not depend on the file system. Each file is checked before
 * dlopen sees it (elf.c), since dlopen of a truncated file kills the process
 * and of a FIFO blocks it: a bad file is listed as refused, with its reason,
 * and the others load.
 *
 * The registry is built on first use, under a mutex, and published as a
 * snapshot that is never changed or freed, so readers need no lock and may
 * keep its arrays for the life of the process. Running out of memory is not
 * final:
 *  - when the registry's own records cannot be allocated, nothing is
 *    published: the call fails with KILN_ERR_NO_MEMORY, naming what was
 *    being allocated, and the next call starts again;
 *  - a plugin that dlopen or its init refuses for lack of memory is listed
 *    as refused, and the next call tries it again. Once it loads, or is
 *    refused for another reason, a new snapshot replaces the old one: the
 *    same reports in the same order, with that one changed and its devices
 *    after all the others, so that an index into the devices names the same
 *    device in every snapshot.
 * A plugin's init runs once per process, whatever the attempts, and a plugin
 * that loaded is never unloaded: contexts hold its table.
 */
#include "../kiln-impl.h"

#include <errno.h>
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

static pthread_mutex_t registry_mu = PTHREAD_MUTEX_INITIALIZER;
/* The published snapshot; ->older, the ones it replaced. Under registry_mu. */
static kiln__registry *current;
/* The tables whose init succeeded, so that init runs once. Under registry_mu. */
static const kiln_plugin **initialised;
static size_t              n_initialised, cap_initialised;

/* What became of one attempt; LOAD_FAILED: kiln could not allocate its own
 * record of it (the error is set) and the whole load stops. */
typedef enum load_result { LOAD_OK, LOAD_REFUSED, LOAD_FAILED } load_result;

/* realloc of n items of size, recording KILN_ERR_NO_MEMORY with `what`;
 * NULL on failure, leaving p as it was. */
static void *grow(void *p, size_t n, size_t size, const char *what)
{
    size_t bytes;
    void  *q = NULL;
    if (!__builtin_mul_overflow(n, size, &bytes))
        q = realloc(p, bytes ? bytes : 1);
    if (!q)
        kiln__error(KILN_ERR_NO_MEMORY, "out of memory: %zu x %zu bytes for %s", n, size,
                    what);
    return q;
}

/* ---- one plugin ------------------------------------------------------------ */

static load_result refuse(kiln__plugin *p, bool transient, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Records why p is refused, and whether for lack of memory (then it is tried
 * again on next use); closes it. */
static load_result refuse(kiln__plugin *p, bool transient, const char *fmt, ...)
{
    char    why[768];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    if (transient && n >= 0 && (size_t)n < sizeof why)
        snprintf(why + n, sizeof why - (size_t)n,
                 " (out of memory: tried again on next use)");
    p->table     = NULL;
    p->score     = 0;
    p->n_devices = 0;
    p->transient = transient;
    if (p->handle)
        dlclose(p->handle);
    p->handle = NULL;
    kiln__log(KILN_LOG_DEBUG, "refused %s: %s", p->path, why);
    p->reason = kiln__strdup(why, "a plugin's refusal");
    return p->reason ? LOAD_REFUSED : LOAD_FAILED;
}

/* Gives up on p because kiln's own record could not be allocated. */
static load_result give_up(kiln__plugin *p)
{
    if (p->handle)
        dlclose(p->handle);
    p->handle = NULL;
    p->table  = NULL;
    return LOAD_FAILED;
}

/* A usable plugin named `name` in r, or in older (all of it), or NULL. */
static const kiln__plugin *find_by_name(const kiln__registry *r,
                                        const kiln__registry *older, const char *name)
{
    for (size_t i = 0; i < r->n_plugins; i++) {
        const kiln__plugin *q = &r->plugins[i];
        if (q->table && strcmp(q->name, name) == 0)
            return q;
    }
    return older ? find_by_name(older, NULL, name) : NULL;
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

/* Whether a message of dlopen or dlsym is about memory. glibc words it many
 * ways ("cannot allocate ...", "cannot create ...", "out of memory", or
 * strerror(ENOMEM)); and when it cannot copy a file's name it says that it
 * cannot open the file: for the plugin itself, which elf.c has just opened,
 * that means the same. A full static TLS block does not pass with time. */
static bool dl_out_of_memory(const char *msg, const char *path)
{
    static const char *const words[] = {"cannot allocate", "cannot create",
                                        "out of memory"};
    if (!msg)
        return true; /* not even a message could be had */
    if (strstr(msg, "static TLS"))
        return false;
    for (size_t i = 0; i < sizeof words / sizeof *words; i++)
        if (strcasestr(msg, words[i]))
            return true;
    if (strstr(msg, strerror(ENOMEM)))
        return true;
    size_t      n    = strlen(path);
    const char *open = ": cannot open shared object file";
    return strncmp(msg, path, n) == 0 && strncmp(msg + n, open, strlen(open)) == 0;
}

/* Whether init has run for t. */
static bool is_initialised(const kiln_plugin *t)
{
    for (size_t i = 0; i < n_initialised; i++)
        if (initialised[i] == t)
            return true;
    return false;
}

/* Room for one more initialised table, so that one whose init succeeds is
 * always recorded. */
static bool reserve_initialised(void)
{
    if (n_initialised < cap_initialised)
        return true;
    size_t              cap   = cap_initialised ? 2 * cap_initialised : 4;
    const kiln_plugin **grown = grow(initialised, cap, sizeof *initialised,
                                     "the list of initialised plugins");
    if (!grown)
        return false;
    initialised     = grown;
    cap_initialised = cap;
    return true;
}

/* Checks, dlopens and vets p->path; older (or NULL) holds the plugins loaded
 * by an earlier attempt, whose names are taken. */
static load_result plugin_load(kiln__registry *r, const kiln__registry *older,
                               kiln__plugin *p)
{
    kiln__log(KILN_LOG_DEBUG, "trying %s", p->path);
    if (kiln__plugin_file_check(p->path) != KILN_OK)
        return refuse(p, false, "%s", kiln_last_error());
    dlerror();
    p->handle = dlopen(p->path, RTLD_NOW | RTLD_LOCAL);
    if (!p->handle) {
        const char *e = dlerror();
        return refuse(p, dl_out_of_memory(e, p->path), "dlopen failed: %s",
                      e ? e : "unknown error");
    }
    dlerror();
    void       *sym = dlsym(p->handle, KILN_BACKEND_ENTRY_SYMBOL);
    const char *e   = dlerror();
    if (e || !sym)
        return refuse(p, e && dl_out_of_memory(e, p->path),
                      "no symbol " KILN_BACKEND_ENTRY_SYMBOL " (%s): not a kiln "
                      "plugin, or built without KILN_BACKEND_ENTRY",
                      e ? e : "NULL");
    kiln_backend_entry_fn entry;
    memcpy(&entry, &sym, sizeof entry); /* object to function pointer */
    const kiln_plugin *t = entry();
    if (!t)
        return refuse(p, false, KILN_BACKEND_ENTRY_SYMBOL " returned NULL");
    if (t->abi_version != KILN_BACKEND_ABI_VERSION)
        return refuse(p, false,
                      "ABI version %u, kiln expects %u: rebuild the plugin "
                      "against this kiln's <kiln/backend.h>",
                      (unsigned)t->abi_version, (unsigned)KILN_BACKEND_ABI_VERSION);
    const char *missing = missing_entry(t);
    if (missing)
        return refuse(p, false, "its plugin table lacks the required entry '%s'",
                      missing);
    p->name = kiln__strdup(t->name, "a plugin name");
    if (!p->name)
        return give_up(p);
    const kiln__plugin *dup = find_by_name(r, older, t->name);
    if (dup)
        return refuse(p, false, "a plugin named \"%s\" was already loaded from %s",
                      t->name, dup->path);
    int score = t->probe(&kiln__host);
    if (score <= 0)
        return refuse(p, false,
                      "probe returned %d: backend \"%s\" cannot run on this machine",
                      score, t->name);
    if (!is_initialised(t)) {
        if (!reserve_initialised())
            return give_up(p);
        kiln_status st = t->init(&kiln__host);
        if (st != KILN_OK)
            return refuse(p, st == KILN_ERR_NO_MEMORY, "init failed (%s): %s",
                          kiln_status_name(st), kiln_last_error());
        initialised[n_initialised++] = t;
    }
    int n = t->device_count();
    if (n < 0)
        n = 0;
    p->table     = t;
    p->score     = score;
    p->n_devices = n;
    kiln__log(KILN_LOG_DEBUG, "loaded backend \"%s\" from %s (score %d, %d device%s)",
              t->name, p->path, score, n, n == 1 ? "" : "s");
    return LOAD_OK;
}

/* Appends an attempt on path to the registry arg; false when kiln ran out
 * of memory. */
static bool add_candidate(void *arg, const char *path)
{
    kiln__registry *r = arg;
    kiln__plugin *grown = grow(r->plugins, r->n_plugins + 1, sizeof *grown,
                               "the list of plugins");
    if (!grown)
        return false;
    r->plugins      = grown;
    kiln__plugin *p = &r->plugins[r->n_plugins];
    memset(p, 0, sizeof *p);
    p->path = kiln__strdup(path, "a plugin path");
    if (!p->path)
        return false;
    p->attempt = r->attempt;
    r->n_plugins++;
    load_result lr = plugin_load(r, NULL, p);
    r->transient |= p->transient;
    return lr != LOAD_FAILED;
}

/* ---- reports ----------------------------------------------------------------- */

/* The devices of r's usable plugins: those loaded by the first attempt in
 * plugin order, then those of each later attempt, so that a snapshot's
 * devices begin with those of the snapshot it replaces. */
static bool build_device_reports(kiln__registry *r)
{
    size_t total = 0;
    for (size_t i = 0; i < r->n_plugins; i++)
        total += (size_t)r->plugins[i].n_devices;
    r->devices       = kiln__calloc(total, sizeof *r->devices, "the list of devices");
    r->descs         = kiln__calloc(total, sizeof *r->descs, "the list of devices");
    r->device_plugin = kiln__calloc(total, sizeof(size_t), "the list of devices");
    if (!r->devices || !r->descs || !r->device_plugin)
        return false;
    size_t k = 0;
    for (unsigned attempt = 0; attempt <= r->attempt; attempt++) {
        for (size_t i = 0; i < r->n_plugins; i++) {
            const kiln__plugin *p = &r->plugins[i];
            if (p->attempt != attempt)
                continue;
            for (int d = 0; d < p->n_devices; d++, k++) {
                kiln_device_desc   *desc = &r->descs[k];
                kiln_device_report *rep  = &r->devices[k];
                if (p->table->device_desc(d, desc) != KILN_OK) {
                    snprintf(desc->name, sizeof desc->name, "device %d", d);
                    snprintf(desc->unusable, sizeof desc->unusable,
                             "could not be described: %s", kiln_last_error());
                }
                desc->name[sizeof desc->name - 1]               = '\0';
                desc->description[sizeof desc->description - 1] = '\0';
                desc->unusable[sizeof desc->unusable - 1]       = '\0';
                desc->capabilities[sizeof desc->capabilities - 1] = '\0';
                rep->backend                                    = p->name;
                rep->index                                      = d;
                rep->name                                       = desc->name;
                rep->description                                = desc->description;
                rep->type                                       = desc->type;
                rep->memory                                     = desc->memory;
                rep->compute_units                              = desc->compute_units;
                rep->unusable       = desc->unusable[0] ? desc->unusable : NULL;
                rep->capabilities   = desc->capabilities;
                r->device_plugin[k] = i;
            }
        }
    }
    r->n_devices = k;
    return true;
}

static bool build_plugin_reports(kiln__registry *r)
{
    r->reports = kiln__calloc(r->n_plugins, sizeof *r->reports, "the list of plugins");
    if (!r->reports)
        return false;
    for (size_t i = 0; i < r->n_plugins; i++) {
        const kiln__plugin *p = &r->plugins[i];
        r->reports[i]         = (kiln_plugin_report){.path      = p->path,
                                                     .name      = p->name,
                                                     .reason    = p->reason,
                                                     .score     = p->score,
                                                     .n_devices = p->n_devices};
    }
    return true;
}

/* ---- snapshots ----------------------------------------------------------------- */

/* Frees a snapshot that was never published. Plugins stay loaded. */
static void registry_free(kiln__registry *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->n_plugins; i++) {
        free(r->plugins[i].path);
        free(r->plugins[i].name);
        free(r->plugins[i].reason);
    }
    free(r->plugins);
    free(r->reports);
    free(r->devices);
    free(r->descs);
    free(r->device_plugin);
    free(r);
}

/* The first snapshot: every plugin on the search path. NULL, with the error
 * set, when kiln ran out of memory. */
static kiln__registry *registry_build(void)
{
    kiln__registry *r = kiln__calloc(1, sizeof *r, "the plugin registry");
    if (!r)
        return NULL;
    bool ok = kiln__plugin_search("KILN_PLUGIN_PATH", KILN_PLUGIN_DIR, add_candidate, r);
    ok      = ok && build_plugin_reports(r) && build_device_reports(r);
    if (!ok) {
        registry_free(r);
        return NULL;
    }
    return r;
}

/* Copies p's outcome from an earlier snapshot. */
static bool copy_plugin(kiln__plugin *p, const kiln__plugin *from)
{
    p->handle    = from->handle;
    p->table     = from->table;
    p->score     = from->score;
    p->n_devices = from->n_devices;
    p->attempt   = from->attempt;
    p->name      = from->name ? kiln__strdup(from->name, "a plugin name") : NULL;
    p->reason    = from->reason ? kiln__strdup(from->reason, "a plugin's refusal") : NULL;
    return (p->name || !from->name) && (p->reason || !from->reason);
}

/* old, with the plugins it refused for lack of memory tried again. NULL when
 * nothing changed, or when kiln ran out of memory again (the error set). */
static kiln__registry *registry_retry(const kiln__registry *old)
{
    kiln__registry *r = kiln__calloc(1, sizeof *r, "the plugin registry");
    if (!r)
        return NULL;
    r->attempt = old->attempt + 1;
    r->plugins = kiln__calloc(old->n_plugins, sizeof *r->plugins, "the list of plugins");
    bool ok    = r->plugins != NULL;
    bool changed = false;
    for (size_t i = 0; ok && i < old->n_plugins; i++) {
        const kiln__plugin *was = &old->plugins[i];
        kiln__plugin       *p   = &r->plugins[i];
        p->path                 = kiln__strdup(was->path, "a plugin path");
        if (!p->path)
            break;
        r->n_plugins++;
        if (!was->transient) {
            ok = copy_plugin(p, was);
            continue;
        }
        p->attempt = r->attempt;
        ok         = plugin_load(r, old, p) != LOAD_FAILED;
        changed |= !p->transient;
        r->transient |= p->transient;
    }
    ok = ok && r->n_plugins == old->n_plugins && build_plugin_reports(r) &&
         build_device_reports(r);
    if (!ok || !changed) {
        registry_free(r);
        return NULL;
    }
    return r;
}

const kiln__registry *kiln__registry_get(void)
{
    pthread_mutex_lock(&registry_mu);
    if (!current) {
        current = registry_build();
    } else if (current->transient) {
        kiln__registry *next = registry_retry(current);
        if (next) {
            next->older = current;
            current     = next;
        }
    }
    const kiln__registry *r = current;
    pthread_mutex_unlock(&registry_mu);
    if (!r)
        kiln__error(KILN_ERR_NO_MEMORY, "cannot load the plugins: %s", kiln_last_error());
    return r;
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
