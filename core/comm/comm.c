/* core/comm/comm.c — communicator plugins: finding, choosing and opening one,
 * and the collectives of the public API over it.
 *
 * Search order, as for the compute backends (runtime/registry.c): each
 * absolute entry of KILN_COMM_PATH (a folder, or one .so file), then
 * KILN_COMM_DIR; in a folder, files ending in ".so" in name order. Each file
 * is checked before dlopen sees it (elf.c). KILN_COMM (or the spec) names
 * the plugin; otherwise the highest probe wins: mpi under mpirun, the
 * loopback elsewhere. The plugins not chosen are closed again; the chosen
 * one never is (an MPI library must not be unloaded), and one communicator
 * at most is open in the process at a time, since MPI starts once.
 */
#include "../kiln-impl.h"

#include <kiln/comm.h>

#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

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

/* ---- finding the plugins ------------------------------------------------------ */

typedef struct candidate {
    char                   *path;
    void                   *handle;
    const kiln_comm_plugin *table; /* NULL if refused */
    int                     score;
    char                    why[320]; /* why refused */
} candidate;

typedef struct candidates {
    candidate *c;
    size_t     n;
} candidates;

static void try_file(candidate *c)
{
    if (kiln__plugin_file_check(c->path) != KILN_OK) {
        snprintf(c->why, sizeof c->why, "%s", kiln_last_error());
        return;
    }
    dlerror();
    c->handle = dlopen(c->path, RTLD_NOW | RTLD_LOCAL);
    if (!c->handle) {
        const char *e = dlerror();
        snprintf(c->why, sizeof c->why, "dlopen failed: %s", e ? e : "unknown error");
        return;
    }
    dlerror();
    void *sym = dlsym(c->handle, KILN_COMM_ENTRY_SYMBOL);
    if (!sym) {
        snprintf(c->why, sizeof c->why,
                 "no symbol " KILN_COMM_ENTRY_SYMBOL ": not a communicator plugin");
        return;
    }
    kiln_comm_entry_fn entry;
    memcpy(&entry, &sym, sizeof entry); /* object to function pointer */
    const kiln_comm_plugin *t = entry();
    if (!t)
        snprintf(c->why, sizeof c->why, KILN_COMM_ENTRY_SYMBOL " returned NULL");
    else if (t->abi_version != KILN_COMM_ABI_VERSION)
        snprintf(c->why, sizeof c->why,
                 "communicator ABI version %u, kiln expects %u: rebuild the plugin "
                 "against this kiln's <kiln/comm.h>",
                 (unsigned)t->abi_version, (unsigned)KILN_COMM_ABI_VERSION);
    else if (!t->name || !*t->name || !t->probe || !t->open || !t->close ||
             !t->broadcast || !t->allreduce_start || !t->wait || !t->barrier || !t->abort)
        snprintf(c->why, sizeof c->why, "its table lacks a required entry");
    else {
        c->table = t;
        c->score = t->probe(&kiln__host);
    }
}

static bool add(candidates *cs, const char *path)
{
    candidate *grown = realloc(cs->c, (cs->n + 1) * sizeof *grown);
    if (!grown) {
        kiln__error(KILN_ERR_NO_MEMORY, "out of memory listing communicator plugins");
        return false;
    }
    cs->c         = grown;
    candidate *c  = memset(&cs->c[cs->n], 0, sizeof *c);
    c->path       = kiln__strdup(path, "a plugin path");
    if (!c->path)
        return false;
    cs->n++;
    try_file(c);
    /* a name seen before is refused: the first on the path wins */
    for (size_t i = 0; c->table && i + 1 < cs->n; i++)
        if (cs->c[i].table && strcmp(cs->c[i].table->name, c->table->name) == 0) {
            snprintf(c->why, sizeof c->why,
                     "a communicator named \"%s\" was found first in %s", c->table->name,
                     cs->c[i].path);
            c->table = NULL;
        }
    return true;
}

static int by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static bool scan_dir(candidates *cs, const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) {
        kiln__log(KILN_LOG_DEBUG, "comm folder %s: %s", dir, strerror(errno));
        return true;
    }
    char         **names = NULL;
    size_t         n = 0, cap = 0;
    bool           ok = true;
    struct dirent *e;
    while (ok && (e = readdir(d))) {
        size_t len = strlen(e->d_name);
        if (len <= 3 || strcmp(e->d_name + len - 3, ".so") != 0)
            continue;
        if (n == cap) {
            cap          = cap ? 2 * cap : 8;
            char **grown = realloc(names, cap * sizeof *grown);
            if (!grown) {
                ok = false;
                break;
            }
            names = grown;
        }
        size_t need = strlen(dir) + len + 2;
        if (!(names[n] = malloc(need)))
            ok = false;
        else
            snprintf(names[n++], need, "%s/%s", dir, e->d_name);
    }
    closedir(d);
    if (!ok)
        kiln__error(KILN_ERR_NO_MEMORY, "out of memory reading %s", dir);
    if (n > 1)
        qsort(names, n, sizeof *names, by_name);
    for (size_t i = 0; i < n; i++) {
        ok = ok && add(cs, names[i]);
        free(names[i]);
    }
    free(names);
    return ok;
}

static bool scan(candidates *cs)
{
    const char *path = getenv("KILN_COMM_PATH");
    char       *copy = path && *path ? kiln__strdup(path, "KILN_COMM_PATH") : NULL;
    bool        ok   = !(path && *path) || copy;
    for (char *save = NULL, *tok = copy ? strtok_r(copy, ":", &save) : NULL; ok && tok;
         tok = strtok_r(NULL, ":", &save)) {
        struct stat sb;
        if (tok[0] != '/')
            kiln__log(KILN_LOG_WARN,
                      "KILN_COMM_PATH entry \"%s\" ignored: expected an absolute path",
                      tok);
        else if (stat(tok, &sb) == 0 && S_ISREG(sb.st_mode))
            ok = add(cs, tok);
        else
            ok = scan_dir(cs, tok);
    }
    free(copy);
    return ok && scan_dir(cs, KILN_COMM_DIR);
}

static void release(candidates *cs, const candidate *keep)
{
    for (size_t i = 0; i < cs->n; i++) {
        if (&cs->c[i] != keep && cs->c[i].handle)
            dlclose(cs->c[i].handle);
        free(cs->c[i].path);
    }
    free(cs->c);
}

/* "Found: mpi (score 0: not started by mpirun), loopback (score 1). Refused:
 * path (why)." */
static void list_found(const candidates *cs, char *buf, size_t len)
{
    size_t n = (size_t)snprintf(buf, len, "Found:");
    for (size_t i = 0; i < cs->n && n < len; i++)
        if (cs->c[i].table)
            n += (size_t)snprintf(buf + n, len - n, " %s (%s, probe %d)",
                                  cs->c[i].table->name, cs->c[i].path, cs->c[i].score);
    if (n < len && cs->n == 0)
        n += (size_t)snprintf(buf + n, len - n, " no plugin in KILN_COMM_PATH or %s",
                              KILN_COMM_DIR);
    for (size_t i = 0; i < cs->n && n < len; i++)
        if (!cs->c[i].table)
            n += (size_t)snprintf(buf + n, len - n, " Refused: %s (%s).", cs->c[i].path,
                                  cs->c[i].why);
}

/* ---- listing them ---------------------------------------------------------------- */

/* The list kiln_comm_plugins gives: made once, kept for the process. */
static kiln_plugin_report *listed;
static size_t              n_listed;
static bool                have_listed;

static bool copy_report(kiln_plugin_report *r, const candidate *c)
{
    r->path   = kiln__strdup(c->path, "a plugin path");
    r->name   = c->table ? kiln__strdup(c->table->name, "a plugin name") : NULL;
    r->reason = c->table ? NULL : kiln__strdup(c->why, "a plugin's refusal");
    r->score  = c->table ? c->score : 0;
    return r->path && (c->table ? r->name != NULL : r->reason != NULL);
}

KILN_API size_t kiln_comm_plugins(const kiln_plugin_report **reports)
{
    pthread_mutex_lock(&open_mu);
    if (!have_listed) {
        candidates cs = {0};
        bool       ok = scan(&cs);
        listed = ok ? kiln__calloc(cs.n + 1, sizeof *listed, "the communicator list") : NULL;
        for (size_t i = 0; listed && i < cs.n; i++)
            if (!copy_report(&listed[i], &cs.c[i])) {
                for (size_t k = 0; k <= i; k++) {
                    free((char *)listed[k].path);
                    free((char *)listed[k].name);
                    free((char *)listed[k].reason);
                }
                free(listed);
                listed = NULL;
            }
        if (listed) {
            n_listed    = cs.n;
            have_listed = true;
        }
        release(&cs, NULL);
    }
    if (reports)
        *reports = listed;
    size_t n = have_listed ? n_listed : 0;
    pthread_mutex_unlock(&open_mu);
    return n;
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

static kiln_comm *open_chosen(const candidate *c, double timeout)
{
    kiln_comm *comm = kiln__calloc(1, sizeof *comm, "a communicator");
    if (!comm)
        return NULL;
    comm->plugin  = c->table;
    comm->timeout = timeout;
    kiln_status st = c->table->open(&kiln__host, &comm->state, &comm->info);
    if (st != KILN_OK) {
        kiln__error(st, "cannot open communicator \"%s\" (%s): %s", c->table->name,
                    c->path, kiln_last_error());
        free(comm);
        return NULL;
    }
    const kiln_comm_info *i = &comm->info;
    if (i->size < 1 || i->rank < 0 || i->rank >= i->size || i->local_size < 1 ||
        i->local_rank < 0 || i->local_rank >= i->local_size) {
        kiln__error(KILN_ERR_BACKEND,
                    "communicator \"%s\" says rank %d of %d, local %d of %d: not a "
                    "possible job",
                    c->table->name, i->rank, i->size, i->local_rank, i->local_size);
        c->table->close(comm->state);
        free(comm);
        return NULL;
    }
    kiln__log(KILN_LOG_INFO, "communicator %s: rank %d of %d", c->table->name, i->rank,
              i->size);
    return comm;
}

KILN_API kiln_comm *kiln_comm_open(const char *spec)
{
    double timeout;
    if (!read_timeout(&timeout))
        return NULL;
    if (!spec || !*spec)
        spec = getenv("KILN_COMM");
    bool named = spec && *spec;
    pthread_mutex_lock(&open_mu);
    if (is_open) {
        pthread_mutex_unlock(&open_mu);
        kiln__error(KILN_ERR_STATE, "kiln_comm_open: a communicator is open already in "
                                    "this process; close it first");
        return NULL;
    }
    candidates cs     = {0};
    candidate *chosen = NULL;
    kiln_comm *comm   = NULL;
    if (scan(&cs)) {
        for (size_t i = 0; i < cs.n; i++) {
            candidate *c = &cs.c[i];
            if (!c->table)
                continue;
            if (named ? strcasecmp(c->table->name, spec) == 0
                      : c->score > 0 && (!chosen || c->score > chosen->score))
                chosen = c;
        }
        char list[1536];
        list_found(&cs, list, sizeof list);
        if (!chosen)
            kiln__error(KILN_ERR_NOT_FOUND,
                        named ? "kiln_comm_open: no communicator plugin is named \"%s\" "
                                "(KILN_COMM). %s"
                              : "kiln_comm_open: no communicator plugin accepts this "
                                "process%s. %s",
                        named ? spec : "", list);
        else
            comm = open_chosen(chosen, timeout);
    }
    release(&cs, comm ? chosen : NULL);
    is_open = comm != NULL;
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
