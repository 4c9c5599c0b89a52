/* core/runtime/profile.c — where a graph's time goes, op by op.
 *
 * With KILN_PROFILE set (to anything but "" or "0") when a graph is
 * compiled, its runs go one node at a time, each waited for (the device's
 * synchronize), and each node's time is added to its op and output shape's
 * row; a fallback node's row says so. Waiting after every node removes the
 * overlap a device would otherwise get, so the total is more than a run
 * takes unprofiled: the rows say where the time goes, not how long a run
 * is. kiln_graph_profile writes the rows, longest first. */
#include "../kiln-impl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct profile_row {
    char   key[160]; /* "matmul [64, 128]", "(cpu fallback) conv2d ..." */
    double seconds;
    long   calls;
} profile_row;

struct kiln__profile {
    profile_row *rows;
    size_t       n, cap;
    long         runs;
};

static void profile_free(kiln_graph *g)
{
    if (g->profile)
        free(g->profile->rows);
    free(g->profile);
    g->profile = NULL;
}

kiln_status kiln__profile_start(kiln_graph *g)
{
    const char *env = getenv("KILN_PROFILE");
    if (!env || !*env || strcmp(env, "0") == 0 || g->profile)
        return KILN_OK;
    g->profile = kiln__calloc(1, sizeof *g->profile, "the graph's profile");
    if (!g->profile)
        return KILN_ERR_NO_MEMORY;
    kiln__graph_on_free(g, profile_free);
    return KILN_OK;
}

double kiln__profile_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void kiln__profile_run(kiln_graph *g)
{
    if (g->profile)
        g->profile->runs++;
}

void kiln__profile_add(kiln_graph *g, const kiln_node *node, bool fallback,
                       double seconds)
{
    kiln__profile *p = g->profile;
    char           key[sizeof p->rows->key], s[KILN__SHAPE_STR];
    snprintf(key, sizeof key, "%s%s %s", fallback ? "(cpu fallback) " : "",
             kiln__op_name(node->op), kiln__shape_str(s, node->ndim, node->dims));
    size_t i = 0;
    while (i < p->n && strcmp(p->rows[i].key, key) != 0)
        i++;
    if (i == p->n) {
        if (p->n == p->cap) {
            size_t       cap   = p->cap ? 2 * p->cap : 32;
            profile_row *grown = realloc(p->rows, cap * sizeof *grown);
            if (!grown)
                return; /* a row lost to a lack of memory: the run goes on */
            p->rows = grown;
            p->cap  = cap;
        }
        p->rows[p->n++] = (profile_row){.seconds = 0.0, .calls = 0};
        memcpy(p->rows[i].key, key, sizeof key);
    }
    p->rows[i].seconds += seconds;
    p->rows[i].calls++;
}

static int by_time(const void *a, const void *b)
{
    const profile_row *x = a, *y = b;
    return x->seconds < y->seconds ? 1 : x->seconds > y->seconds ? -1 : 0;
}

KILN_API kiln_status kiln_graph_profile(kiln_graph *g, char *text, size_t size)
{
    if (!g || !text || size == 0)
        return kiln__error(KILN_ERR_INVALID_ARG, "kiln_graph_profile: %s",
                           !g ? "graph is NULL" : "no room for the text");
    if (!g->profile)
        return kiln__error(KILN_ERR_STATE,
                           "kiln_graph_profile: the graph is not profiled: set "
                           "KILN_PROFILE=1 before kiln_graph_compile");
    kiln__profile *p     = g->profile;
    double         total = 0.0;
    qsort(p->rows, p->n, sizeof *p->rows, by_time);
    for (size_t i = 0; i < p->n; i++)
        total += p->rows[i].seconds;
    size_t used = 0;
    int    n    = snprintf(text, size, "%ld runs on %s, %.1f ms in nodes:\n", p->runs,
                           kiln_context_device(g->ctx), 1e3 * total);
    used        = n > 0 ? (size_t)n : 0;
    for (size_t i = 0; i < p->n && used < size; i++) {
        const profile_row *r = &p->rows[i];
        n = snprintf(text + used, size - used, "%10.2f ms %5.1f%% %8ld calls  %s\n",
                     1e3 * r->seconds, total > 0 ? 100.0 * r->seconds / total : 0.0,
                     r->calls, r->key);
        used += n > 0 ? (size_t)n : 0;
    }
    return KILN_OK; /* text cut short when size is too small: still a table */
}
