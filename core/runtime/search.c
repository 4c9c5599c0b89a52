/* core/runtime/search.c — the plugin files of a search path: compute
 * backends (registry.c) and communicators (comm/comm.c) are found alike.
 *
 * Each absolute entry of the list a variable holds (colon-separated: one .so
 * file, or a folder), then the installed folder; never the current
 * directory, since an empty or relative entry is ignored with a warning. In
 * a folder, the files ending in ".so" go in name order, so the result does
 * not depend on the file system. A folder that cannot be read holds nothing,
 * unless memory ran out.
 */
#include "../kiln-impl.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static bool has_so_suffix(const char *name)
{
    size_t n = strlen(name);
    return n > 3 && strcmp(name + n - 3, ".so") == 0;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The names of dir's files ending in ".so", unsorted, into *names and *n;
 * false when kiln ran out of memory. */
static bool list_dir(const char *dir, char ***names, size_t *n)
{
    DIR *d = opendir(dir);
    if (!d) {
        if (errno == ENOMEM) {
            kiln__error(KILN_ERR_NO_MEMORY,
                        "out of memory opening the plugin directory %s", dir);
            return false;
        }
        kiln__log(KILN_LOG_DEBUG, "plugin directory %s: cannot open (%s)", dir,
                  strerror(errno));
        return true;
    }
    size_t cap = 0;
    bool   ok  = true;
    for (;;) {
        errno            = 0;
        struct dirent *e = readdir(d);
        if (!e) {
            if (errno == ENOMEM) {
                kiln__error(KILN_ERR_NO_MEMORY,
                            "out of memory reading the plugin directory %s", dir);
                ok = false;
            } else if (errno) {
                kiln__log(KILN_LOG_WARN, "plugin directory %s: cannot read on (%s)", dir,
                          strerror(errno));
            }
            break;
        }
        if (!has_so_suffix(e->d_name))
            continue;
        if (*n == cap) {
            size_t grown_cap = cap ? 2 * cap : 16;
            char **grown     = realloc(*names, grown_cap * sizeof *grown);
            if (!grown) {
                kiln__error(KILN_ERR_NO_MEMORY, "out of memory: %zu plugin file names",
                            grown_cap);
                ok = false;
                break;
            }
            *names = grown;
            cap    = grown_cap;
        }
        (*names)[*n] = kiln__strdup(e->d_name, "a plugin file name");
        if (!(*names)[*n]) {
            ok = false;
            break;
        }
        ++*n;
    }
    closedir(d);
    return ok;
}

static bool search_dir(const char *dir, kiln__plugin_visit visit, void *arg)
{
    char **names = NULL;
    size_t n     = 0;
    bool   ok    = list_dir(dir, &names, &n);
    if (ok && n > 1)
        qsort(names, n, sizeof *names, cmp_str);
    for (size_t i = 0; ok && i < n; i++) {
        size_t len  = strlen(dir) + strlen(names[i]) + 2;
        char  *path = kiln__malloc(len, "a plugin path");
        if (path) {
            snprintf(path, len, "%s/%s", dir, names[i]);
            ok = visit(arg, path);
        } else {
            ok = false;
        }
        free(path);
    }
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    return ok;
}

static bool search_list(const char *var, const char *list, kiln__plugin_visit visit,
                        void *arg)
{
    char *copy = kiln__strdup(list, var);
    if (!copy)
        return false;
    bool ok = true;
    for (char *save = NULL, *tok = strtok_r(copy, ":", &save); ok && tok;
         tok = strtok_r(NULL, ":", &save)) {
        struct stat st;
        if (tok[0] != '/')
            kiln__log(KILN_LOG_WARN, "%s entry \"%s\" ignored: expected an absolute path",
                      var, tok);
        else if (stat(tok, &st) == 0 && S_ISREG(st.st_mode))
            ok = visit(arg, tok);
        else
            ok = search_dir(tok, visit, arg);
    }
    free(copy);
    return ok;
}

bool kiln__plugin_search(const char *var, const char *dir, kiln__plugin_visit visit,
                         void *arg)
{
    const char *list = getenv(var);
    return (!(list && *list) || search_list(var, list, visit, arg)) &&
           search_dir(dir, visit, arg);
}
