/* core/comm/comm.c — communicator plugins: finding, choosing and opening one,
 * and the collectives of the public API over it.
 *
 * The files are found as the compute backends' are (runtime/search.c):
 * KILN_COMM_PATH, then KILN_COMM_DIR. Each is checked before dlopen sees it
 * (elf.c), loaded, probed and closed again once per process, for the list
 * kiln_comm_plugins gives; kiln_comm_select chooses from that list (the
 * plugin KILN_COMM or the spec names, else the highest probe: mpi under
 * mpirun, the loopback elsewhere), and kiln_comm_open loads the chosen file
 * for good (an MPI library must not be unloaded). One communicator at most
 * is open in the process at a time, since MPI starts once.
 */
#include "../kiln-impl.h"

#include <kiln/comm.h>

#include <dlfcn.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#ifndef KILN_COMM_DIR
#error "KILN_COMM_DIR must name the installed communicator folder"
#endif

#define DEFAULT_TIMEOUT 60.0

/* Whether a communicator is open: MPI starts once per process. */
static pthread_mutex_t open_mu = PTHREAD_MUTEX_INITIALIZER;
static bool            is_open;

KILN_API const char *kiln_comm_dir(void)
{
    return KILN_COMM_DIR;
}

/* ---- one file ------------------------------------------------------------------- */

/* Checks and dlopens path and vets its table: the table and its handle, or
 * NULL with why it was refused in why. */
static const kiln_comm_plugin *load(const char *path, void **handle, char *why,
                                    size_t len)
{
    *handle = NULL;
    if (kiln__plugin_file_check(path) != KILN_OK) {
        snprintf(why, len, "%s", kiln_last_error());
        return NULL;
    }
    dlerror();
    if (!(*handle = dlopen(path, RTLD_NOW | RTLD_LOCAL))) {
        const char *e = dlerror();
        snprintf(why, len, "dlopen failed: %s", e ? e : "unknown error");
        return NULL;
    }
    dlerror();
    void                   *sym = dlsym(*handle, KILN_COMM_ENTRY_SYMBOL);
    const kiln_comm_plugin *t   = NULL;
    if (sym) {
        kiln_comm_entry_fn entry;
        memcpy(&entry, &sym, sizeof entry); /* object to function pointer */
        t = entry();
    }
    if (!sym)
        snprintf(why, len, "no symbol " KILN_COMM_ENTRY_SYMBOL ": not a communicator plugin");
    else if (!t)
        snprintf(why, len, KILN_COMM_ENTRY_SYMBOL " returned NULL");
    else if (t->abi_version != KILN_COMM_ABI_VERSION)
        snprintf(why, len,
                 "communicator ABI version %u, kiln expects %u: rebuild the plugin "
                 "against this kiln's <kiln/comm.h>",
                 (unsigned)t->abi_version, (unsigned)KILN_COMM_ABI_VERSION);
    else if (!t->name || !*t->name || !t->probe || !t->open || !t->close ||
             !t->broadcast || !t->allreduce_start || !t->wait || !t->barrier || !t->abort)
        snprintf(why, len, "its table lacks a required entry");
    else
        return t;
    dlclose(*handle);
    *handle = NULL;
    return NULL;
}

/* ---- the list of them ----------------------------------------------------------- */

/* kiln_comm_plugins's list: made once, kept for the process. */
static pthread_mutex_t     list_mu = PTHREAD_MUTEX_INITIALIZER;
static kiln_plugin_report *listed;
static size_t              n_listed;
static bool                have_listed;

/* One more report for path (a kiln__plugin_visit): loaded, probed, closed. */
static bool add_report(void *arg, const char *path)
{
    (void)arg;
    kiln_plugin_report *grown = realloc(listed, (n_listed + 1) * sizeof *grown);
    if (!grown) {
        kiln__error(KILN_ERR_NO_MEMORY, "out of memory listing communicator plugins");
        return false;
    }
    listed                  = grown;
    kiln_plugin_report *r   = memset(&listed[n_listed], 0, sizeof *r);
    char                why[320];
    void               *handle;
    const kiln_comm_plugin *t = load(path, &handle, why, sizeof why);
    /* a name seen before is refused: the first on the path wins */
    for (size_t i = 0; t && i < n_listed; i++)
        if (listed[i].name && strcmp(listed[i].name, t->name) == 0) {
            snprintf(why, sizeof why, "a communicator named \"%s\" was found first in %s",
                     t->name, listed[i].path);
            t = NULL;
        }
    r->path   = kiln__strdup(path, "a plugin path");
    r->name   = t ? kiln__strdup(t->name, "a plugin name") : NULL;
    r->reason = t ? NULL : kiln__strdup(why, "a plugin's refusal");
    r->score  = t ? t->probe(&kiln__host) : 0;
    if (handle)
        dlclose(handle);
    n_listed++; /* counted even when a copy failed, so that it is freed */
    return r->path && (t ? r->name != NULL : r->reason != NULL);
}

/* The list in *reports and *n; false (the error set) when memory ran out
 * making it, and then the next call tries again. */
static bool listing(const kiln_plugin_report **reports, size_t *n)
{
    pthread_mutex_lock(&list_mu);
    if (!have_listed) {
        have_listed = kiln__plugin_search("KILN_COMM_PATH", KILN_COMM_DIR, add_report, NULL);
        if (!have_listed) { /* out of memory: the next call tries again */
            for (size_t i = 0; i < n_listed; i++) {
                free((char *)listed[i].path);
                free((char *)listed[i].name);
                free((char *)listed[i].reason);
            }
            free(listed);
            listed   = NULL;
            n_listed = 0;
        }
    }
    *reports = listed;
    *n       = n_listed;
    bool ok  = have_listed;
    pthread_mutex_unlock(&list_mu);
    return ok;
}

KILN_API size_t kiln_comm_plugins(const kiln_plugin_report **reports)
{
    const kiln_plugin_report *r;
    size_t                    n;
    listing(&r, &n);
    if (reports)
        *reports = r;
    return n;
}

/* "Found: mpi (path, probe 0), loopback (path, probe 1). Refused: path (why)." */
static void list_found(const kiln_plugin_report *r, size_t count, char *buf, size_t len)
{
    size_t n = (size_t)snprintf(buf, len, "Found:");
    for (size_t i = 0; i < count && n < len; i++)
        if (!r[i].reason)
            n += (size_t)snprintf(buf + n, len - n, " %s (%s, probe %d)", r[i].name,
                                  r[i].path, r[i].score);
    if (n < len && count == 0)
        n += (size_t)snprintf(buf + n, len - n, " no plugin in KILN_COMM_PATH or %s",
                              KILN_COMM_DIR);
    for (size_t i = 0; i < count && n < len; i++)
        if (r[i].reason)
            n += (size_t)snprintf(buf + n, len - n, " Refused: %s (%s).", r[i].path,
                                  r[i].reason);
}

KILN_API kiln_status kiln_comm_select(const char *spec, size_t *index)
{
    if (!index)
        return kiln__error(KILN_ERR_INVALID_ARG, "kiln_comm_select: index is NULL");
    if (!spec || !*spec)
        spec = getenv("KILN_COMM");
    bool                      named = spec && *spec;
    const kiln_plugin_report *r;
    size_t                    n, best = SIZE_MAX;
    if (!listing(&r, &n))
        return KILN_ERR_NO_MEMORY;
    for (size_t i = 0; i < n; i++) {
        if (r[i].reason)
            continue;
        if (named ? strcasecmp(r[i].name, spec) == 0
                  : r[i].score > 0 && (best == SIZE_MAX || r[i].score > r[best].score))
            best = i;
        if (named && best != SIZE_MAX)
            break;
    }
    if (best != SIZE_MAX) {
        *index = best;
        return KILN_OK;
    }
    char list[1536];
    list_found(r, n, list, sizeof list);
    return kiln__error(KILN_ERR_NOT_FOUND,
                       named ? "no communicator plugin is named \"%s\" (KILN_COMM). %s"
                             : "no communicator plugin accepts this process%s. %s",
                       named ? spec : "", list);
}

/* ---- opening one ---------------------------------------------------------------- */

/* KILN_COMM_TIMEOUT in seconds, or the default; false for a bad value. */
static bool read_timeout(double *out)
{
    const char *text = getenv("KILN_COMM_TIMEOUT");
    *out             = DEFAULT_TIMEOUT;
    if (!text || !*text)
        return true;
    char  *end;
    double v = strtod(text, &end);
    if (end == text || *end || !(v > 0) || !isfinite(v)) {
        kiln__error(KILN_ERR_INVALID_ARG,
                    "KILN_COMM_TIMEOUT=\"%s\": expected a number of seconds greater "
                    "than 0, e.g. 60",
                    text);
        return false;
    }
    *out = v;
    return true;
}

/* Loads the plugin at path for good and joins its job. */
static kiln_comm *open_path(const char *path, double timeout)
{
    char                    why[320];
    void                   *handle;
    const kiln_comm_plugin *t = load(path, &handle, why, sizeof why);
    if (!t) {
        kiln__error(KILN_ERR_BACKEND, "cannot load communicator %s: %s", path, why);
        return NULL;
    }
    kiln_comm *comm = kiln__calloc(1, sizeof *comm, "a communicator");
    if (!comm) {
        dlclose(handle);
        return NULL;
    }
    comm->plugin   = t;
    comm->timeout  = timeout;
    kiln_status st = t->open(&kiln__host, &comm->state, &comm->info);
    if (st != KILN_OK) {
        kiln__error(st, "cannot open communicator \"%s\" (%s): %s", t->name, path,
                    kiln_last_error());
        free(comm);
        return NULL;
    }
    const kiln_comm_info *i = &comm->info;
    if (i->size < 1 || i->rank < 0 || i->rank >= i->size || i->local_size < 1 ||
        i->local_rank < 0 || i->local_rank >= i->local_size) {
        kiln__error(KILN_ERR_BACKEND,
                    "communicator \"%s\" says rank %d of %d, local %d of %d: not a "
                    "possible job",
                    t->name, i->rank, i->size, i->local_rank, i->local_size);
        t->close(comm->state);
        free(comm);
        return NULL;
    }
    kiln__log(KILN_LOG_INFO, "communicator %s: rank %d of %d", t->name, i->rank, i->size);
    return comm; /* the handle stays open for the life of the process */
}

KILN_API kiln_comm *kiln_comm_open(const char *spec)
{
    double      timeout;
    size_t      k;
    kiln_status st = read_timeout(&timeout) ? kiln_comm_select(spec, &k)
                                            : KILN_ERR_INVALID_ARG;
    if (st != KILN_OK) {
        kiln__error(st, "kiln_comm_open: %s", kiln_last_error());
        return NULL;
    }
    const kiln_plugin_report *r;
    kiln_comm_plugins(&r);
    pthread_mutex_lock(&open_mu);
    kiln_comm *comm = NULL;
    if (is_open)
        kiln__error(KILN_ERR_STATE, "kiln_comm_open: a communicator is open already in "
                                    "this process; close it first");
    else
        comm = open_path(r[k].path, timeout);
    is_open = is_open || comm != NULL;
    pthread_mutex_unlock(&open_mu);
    return comm;
}

KILN_API void kiln_comm_close(kiln_comm *c)
{
    if (!c)
        return;
    c->plugin->close(c->state);
    free(c->scratch);
    free(c);
    pthread_mutex_lock(&open_mu);
    is_open = false;
    pthread_mutex_unlock(&open_mu);
}

KILN_API const char *kiln_comm_name(const kiln_comm *c)
{
    return c ? c->plugin->name : NULL;
}

KILN_API int kiln_comm_rank(const kiln_comm *c)
{
    return c ? c->info.rank : 0;
}

KILN_API int kiln_comm_size(const kiln_comm *c)
{
    return c ? c->info.size : 1;
}

KILN_API int kiln_comm_local_rank(const kiln_comm *c)
{
    return c ? c->info.local_rank : 0;
}

KILN_API int kiln_comm_local_size(const kiln_comm *c)
{
    return c ? c->info.local_size : 1;
}

KILN_API uint64_t kiln_comm_bytes(const kiln_comm *c)
{
    return c ? c->bytes : 0;
}

KILN_API void kiln_comm_abort(kiln_comm *c, int code)
{
    if (c)
        c->plugin->abort(c->state, code);
}

/* ---- collectives over host memory ------------------------------------------------ */

static kiln_status check_comm(const kiln_comm *c, const char *call)
{
    return c ? KILN_OK
             : kiln__error(KILN_ERR_INVALID_ARG, "%s: the communicator is NULL", call);
}

KILN_API kiln_status kiln_comm_barrier(kiln_comm *c)
{
    kiln_status st = check_comm(c, "kiln_comm_barrier");
    if (st == KILN_OK && (st = c->plugin->barrier(c->state, c->timeout)) != KILN_OK)
        kiln__error(st, "kiln_comm_barrier: %s", kiln_last_error());
    return st;
}

KILN_API kiln_status kiln_comm_broadcast(kiln_comm *c, void *data, size_t nbytes,
                                         int root)
{
    kiln_status st = check_comm(c, "kiln_comm_broadcast");
    if (st != KILN_OK)
        return st;
    if (root < 0 || root >= c->info.size)
        return kiln__error(KILN_ERR_INVALID_ARG,
                           "kiln_comm_broadcast: root %d, expected a rank in [0, %d)",
                           root, c->info.size);
    if (!data && nbytes)
        return kiln__error(KILN_ERR_INVALID_ARG, "kiln_comm_broadcast: data is NULL");
    c->bytes += nbytes;
    if ((st = c->plugin->broadcast(c->state, data, nbytes, root, c->timeout)) != KILN_OK)
        kiln__error(st, "kiln_comm_broadcast: %s", kiln_last_error());
    return st;
}

kiln_status kiln__comm_allreduce(kiln_comm *c, void *data, size_t n, kiln_comm_dtype dt,
                                 const char *call)
{
    void       *req;
    kiln_status st = c->plugin->allreduce_start(c->state, data, n, dt, &req);
    if (st == KILN_OK)
        st = c->plugin->wait(c->state, req, c->timeout);
    c->bytes += n * (dt == KILN_COMM_F32 ? 4 : 8);
    if (st != KILN_OK)
        kiln__error(st, "%s: %s", call, kiln_last_error());
    return st;
}

KILN_API kiln_status kiln_comm_allreduce(kiln_comm *c, double *data, size_t n,
                                         bool average)
{
    kiln_status st = check_comm(c, "kiln_comm_allreduce");
    if (st != KILN_OK)
        return st;
    if (!data && n)
        return kiln__error(KILN_ERR_INVALID_ARG, "kiln_comm_allreduce: data is NULL");
    st = kiln__comm_allreduce(c, data, n, KILN_COMM_F64, "kiln_comm_allreduce");
    for (size_t i = 0; st == KILN_OK && average && i < n; i++)
        data[i] /= c->info.size;
    return st;
}
