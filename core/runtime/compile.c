/* core/runtime/compile.c — order the nodes, check the device runs them, plan memory.
 *
 * Nodes are created after their sources, so creation order is topological.
 * Which device runs each node is decided in schedule.c.
 * Every node nobody consumes is an output (it would be dead otherwise), as is
 * every node marked with kiln_output. Leaves get storage of their own that
 * persists across runs. Intermediates share one arena: walking the nodes in
 * order, a node's storage is taken from the free list (best fit) just before it
 * runs and returned right after its last consumer, so tensors whose lifetimes
 * do not overlap share bytes. Views (reshape) use their source's storage and
 * extend its lifetime. Everything is allocated here, so a graph that does not
 * fit fails at compile, not in the middle of a run.
 *
 * A device may allocate less in one buffer than it has in all (OpenCL's
 * CL_DEVICE_MAX_MEM_ALLOC_SIZE: about a quarter of the memory on NVIDIA).
 * Offsets are then planned in segments of that size, no tensor straddling
 * two, and each segment is a buffer of its own, for leaves and arena alike.
 */
#include "../kiln-impl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LIVE_FOREVER SIZE_MAX

/* ---- a best-fit allocator of offsets in an arena that grows at the top ---- */

typedef struct block {
    size_t offset, size;
} block;

typedef struct arena {
    block *free;
    size_t n_free, cap_free;
    size_t top;
    size_t segment; /* no block straddles a multiple of it (SIZE_MAX: none) */
} arena;

/* Where `size` bytes start, at the earliest from `at`, without straddling a
 * segment boundary: at itself, or the next boundary. */
static size_t segment_fit(size_t segment, size_t at, size_t size)
{
    if (segment == SIZE_MAX || size == 0 || at % segment + size <= segment)
        return at;
    return (at / segment + 1) * segment;
}

static bool arena_release(arena *a, size_t offset, size_t size);

/* Removes free block i and gives back what lies before `start` in it and,
 * when `rest`, what lies after start + size. */
static bool take_from(arena *a, size_t i, size_t start, size_t size, bool rest)
{
    block b    = a->free[i];
    a->free[i] = a->free[--a->n_free];
    bool ok    = start == b.offset || arena_release(a, b.offset, start - b.offset);
    if (ok && rest && b.offset + b.size > start + size)
        ok = arena_release(a, start + size, b.offset + b.size - start - size);
    return ok;
}

static bool arena_alloc(arena *a, size_t size, size_t *offset)
{
    /* best fit among the free blocks that hold it within one segment */
    size_t best = SIZE_MAX, best_at = 0;
    for (size_t i = 0; i < a->n_free; i++) {
        size_t at = segment_fit(a->segment, a->free[i].offset, size);
        if (at + size <= a->free[i].offset + a->free[i].size &&
            (best == SIZE_MAX || a->free[i].size < a->free[best].size)) {
            best    = i;
            best_at = at;
        }
    }
    if (best != SIZE_MAX) {
        *offset = best_at;
        return take_from(a, best, best_at, size, true);
    }
    /* A free block that ends at the top can be grown instead of starting anew. */
    for (size_t i = 0; i < a->n_free; i++) {
        if (a->free[i].offset + a->free[i].size == a->top) {
            size_t at = segment_fit(a->segment, a->free[i].offset, size);
            *offset   = at;
            a->top    = at + size;
            return take_from(a, i, at, size, false);
        }
    }
    size_t at = segment_fit(a->segment, a->top, size);
    if (at > a->top && !arena_release(a, a->top, at - a->top))
        return false;
    *offset = at;
    a->top  = at + size;
    return true;
}

static bool arena_release(arena *a, size_t offset, size_t size)
{
    /* Merge with neighbours so fragments do not accumulate. */
    for (size_t i = 0; i < a->n_free;) {
        block *b = &a->free[i];
        if (b->offset + b->size == offset || offset + size == b->offset) {
            size_t lo = b->offset < offset ? b->offset : offset;
            size += b->size;
            offset = lo;
            *b     = a->free[--a->n_free];
            continue;
        }
        i++;
    }
    if (a->n_free == a->cap_free) {
        size_t cap   = a->cap_free ? 2 * a->cap_free : 16;
        block *grown = realloc(a->free, cap * sizeof *grown);
        if (!grown)
            return false;
        a->free     = grown;
        a->cap_free = cap;
    }
    a->free[a->n_free++] = (block){offset, size};
    return true;
}

/* ---- the plan ----------------------------------------------------------------- */

typedef struct planner {
    kiln_graph *g;
    size_t     *last_use; /* per node id: index of the last consumer          */
    size_t     *offset;   /* per node id: offset in leaves or arena           */
    bool       *consumed;
} planner;

static bool is_leaf(const kiln_tensor *t)
{
    return (t->flags & KILN__LEAF) != 0;
}

/* An optimiser step: it runs after every other node (build_exec). */
static bool runs_last(const kiln_tensor *t)
{
    return t->inplace && (kiln__op_def_of(t->node.op)->flags & KILN__OP_RUNS_LAST);
}

static kiln_tensor *src_tensor(const kiln_tensor *t, int i)
{
    return (kiln_tensor *)t->node.src[i]; /* node is the first member */
}

static void compute_lifetimes(planner *p)
{
    kiln_graph *g = p->g;
    for (size_t i = 0; i < g->n_nodes; i++) {
        kiln_tensor *t = g->nodes[i];
        for (int s = 0; s < KILN_MAX_SRC; s++) {
            if (!t->node.src[s])
                continue;
            kiln_tensor *src     = src_tensor(t, s);
            kiln_tensor *root    = kiln__storage(src);
            p->consumed[src->id] = true;
            /* A step runs last (build_exec), later than its index says, so
             * what it reads must not be released at its index. */
            if (p->last_use[root->id] != LIVE_FOREVER)
                p->last_use[root->id] = runs_last(t) ? LIVE_FOREVER : i;
        }
    }
    for (size_t i = 0; i < g->n_nodes; i++) {
        kiln_tensor *t = g->nodes[i];
        if (!is_leaf(t) && !p->consumed[i])
            t->flags |= KILN__OUTPUT;
    }
    /* Outputs (and the storage of outputs that are views) live forever. */
    for (size_t i = 0; i < g->n_nodes; i++) {
        kiln_tensor *t = g->nodes[i];
        if (is_leaf(t) || (t->flags & KILN__OUTPUT))
            p->last_use[kiln__storage(t)->id] = LIVE_FOREVER;
    }
}

/* The segment size of g's device: its largest buffer, rounded down to the
 * alignment, or SIZE_MAX when it has no such limit. */
static size_t device_segment(const kiln_graph *g)
{
    uint64_t m = g->ctx->max_alloc / KILN__ALIGN * KILN__ALIGN;
    return m == 0 || m >= SIZE_MAX ? SIZE_MAX : (size_t)m;
}

/* A tensor larger than the device's largest buffer cannot be placed. */
static kiln_status check_fits(kiln_graph *g, const kiln_tensor *t, size_t size,
                              size_t segment)
{
    if (size <= segment)
        return KILN_OK;
    char s[KILN__SHAPE_STR];
    kiln__graph_fail(g, KILN_ERR_NO_MEMORY,
                     "compile: %s %s%s%s takes %zu bytes, more than %s allocates in one "
                     "buffer (%zu bytes)",
                     kiln_op_name(t->node.op),
                     kiln__shape_str(s, t->node.ndim, t->node.dims), t->name ? " " : "",
                     t->name ? t->name : "", size, kiln_context_device(g->ctx), segment);
    return KILN_ERR_NO_MEMORY;
}

/* Assigns offsets: leaves packed one after another, intermediates in the arena. */
static kiln_status assign_offsets(planner *p)
{
    kiln_graph *g      = p->g;
    arena       a      = {.segment = device_segment(g)};
    size_t      leaves = 0, unshared = 0;
    kiln_status st = KILN_OK;
    for (size_t i = 0; i < g->n_nodes && st == KILN_OK; i++) {
        kiln_tensor *t    = g->nodes[i];
        size_t       size = kiln__align_up(kiln__tensor_bytes(t));
        if ((is_leaf(t) || (!t->view_src && !t->inplace)) &&
            (st = check_fits(g, t, size, a.segment)) != KILN_OK)
            break;
        if (is_leaf(t)) {
            p->offset[i] = leaves = segment_fit(a.segment, leaves, size);
            leaves += size;
            continue;
        }
        if (t->view_src)
            continue; /* not run: it only names its source's storage */
        if (!t->inplace) {
            unshared += size;
            /* Storage read after a run (outputs, and what output views show)
             * takes fresh bytes: kiln_graph_eval reruns some earlier nodes
             * alone, and one that had used these bytes would overwrite them. */
            bool ok;
            if (p->last_use[i] == LIVE_FOREVER) {
                size_t at    = segment_fit(a.segment, a.top, size);
                ok           = at == a.top || arena_release(&a, a.top, at - a.top);
                p->offset[i] = at;
                a.top        = at + size;
            } else {
                ok = arena_alloc(&a, size, &p->offset[i]);
            }
            if (!ok) {
                kiln__graph_fail(g, KILN_ERR_NO_MEMORY,
                                 "compile: out of memory while "
                                 "planning");
                st = KILN_ERR_NO_MEMORY;
            }
        }
        for (int s = 0; s < KILN_MAX_SRC; s++) {
            if (!t->node.src[s])
                continue;
            kiln_tensor *root = kiln__storage(src_tensor(t, s));
            /* A node that reads the same source twice frees it once. */
            bool seen = false;
            for (int r = 0; r < s; r++)
                seen |= t->node.src[r] && kiln__storage(src_tensor(t, r)) == root;
            if (seen || is_leaf(root) || p->last_use[root->id] != i)
                continue;
            if (!arena_release(&a, p->offset[root->id],
                               kiln__align_up(kiln__tensor_bytes(root)))) {
                kiln__graph_fail(g, KILN_ERR_NO_MEMORY,
                                 "compile: out of memory while "
                                 "planning");
                st = KILN_ERR_NO_MEMORY;
            }
        }
    }
    free(a.free);
    g->plan.leaves_size = leaves;
    g->plan.arena_size  = a.top;
    g->plan.unshared    = unshared;
    g->plan.segment     = a.segment;
    return st;
}

/* One buffer per segment of `size` bytes (one, possibly empty, without
 * segments). */
static kiln_status alloc_segments(kiln_graph *g, size_t size, kiln__buffers *b)
{
    const kiln_device *dev = &g->ctx->device;
    size_t             seg = g->plan.segment;
    size_t             n   = seg == SIZE_MAX || size == 0 ? 1 : (size + seg - 1) / seg;
    b->buf                 = kiln__calloc(n, sizeof *b->buf, "the plan's buffers");
    if (!b->buf)
        return KILN_ERR_NO_MEMORY;
    for (; b->n < n; b->n++) {
        size_t      part = n == 1 ? size : b->n + 1 < n ? seg : size - b->n * seg;
        kiln_status st   = dev->iface->buffer_alloc(dev->context, part, &b->buf[b->n]);
        if (st != KILN_OK)
            return st;
    }
    return KILN_OK;
}

static void free_segments(kiln_graph *g, kiln__buffers *b)
{
    const kiln_device *dev = &g->ctx->device;
    for (size_t i = 0; i < b->n; i++)
        dev->iface->buffer_free(dev->context, b->buf[i]);
    free(b->buf);
    memset(b, 0, sizeof *b);
}

static kiln_status alloc_buffers(kiln_graph *g)
{
    kiln__plan *plan = &g->plan;
    kiln_status st   = alloc_segments(g, plan->leaves_size, &plan->leaves);
    if (st == KILN_OK)
        st = alloc_segments(g, plan->arena_size, &plan->arena);
    if (st != KILN_OK) {
        kiln__graph_fail(g, st,
                         "compile: cannot reserve %zu bytes for parameters and "
                         "inputs and %zu for intermediates on %s: %s",
                         plan->leaves_size, plan->arena_size, kiln_context_device(g->ctx),
                         kiln_last_error());
        return st;
    }
    return KILN_OK;
}

/* Points every node at its storage and uploads the leaves written so far. */
static kiln_status bind_and_upload(planner *p)
{
    kiln_graph        *g   = p->g;
    const kiln_device *dev = &g->ctx->device;
    for (size_t i = 0; i < g->n_nodes; i++) {
        kiln_tensor         *t    = g->nodes[i];
        kiln_tensor         *root = kiln__storage(t);
        const kiln__buffers *b    = is_leaf(root) ? &g->plan.leaves : &g->plan.arena;
        size_t               off = p->offset[root->id], seg = g->plan.segment;
        t->node.buffer = b->buf[seg == SIZE_MAX ? 0 : off / seg];
        t->node.offset = seg == SIZE_MAX ? off : off % seg;
        if (!is_leaf(t) || !t->staged)
            continue;
        kiln_status st = dev->iface->buffer_write(dev->context, t->node.buffer,
                                                  t->node.offset, t->staged,
                                                  kiln__tensor_bytes(t));
        if (st != KILN_OK) {
            kiln__graph_fail(g, st, "compile: cannot upload %s to %s: %s",
                             t->name ? t->name : "a constant",
                             kiln_context_device(g->ctx), kiln_last_error());
            return st;
        }
        free(t->staged);
        t->staged = NULL;
    }
    return KILN_OK;
}

static kiln_status build_exec(kiln_graph *g)
{
    kiln__plan *plan = &g->plan;
    plan->exec       = kiln__calloc(g->n_nodes, sizeof *plan->exec, "the execution list");
    if (!plan->exec) {
        kiln__graph_fail(g, KILN_ERR_NO_MEMORY, "compile: out of memory");
        return KILN_ERR_NO_MEMORY;
    }
    /* Optimiser steps go last, so that every reader of the parameter they
     * overwrite has run, even one created after them. */
    for (int last = 0; last <= 1; last++) {
        for (size_t i = 0; i < g->n_nodes; i++) {
            const kiln_tensor *t = g->nodes[i];
            if (!is_leaf(t) && !t->view_src && runs_last(t) == last)
                plan->exec[plan->n_exec++] = &t->node;
        }
    }
    /* No backend sees a node that breaks its op's row of the op table: the
     * constructors check more than the rows do, so this only catches a bug
     * in kiln, but a plugin may then trust the table's rules. */
    for (size_t i = 0; i < plan->n_exec; i++) {
        const kiln_node *node = plan->exec[i];
        const char      *why  = kiln__op_check(node);
        if (why) {
            char s[KILN__SHAPE_STR];
            kiln__graph_fail(g, KILN_ERR_SHAPE,
                             "compile: node %zu (%s %s) breaks its "
                             "op's rule: %s (a bug in kiln: please report it)",
                             i, kiln__op_name(node->op),
                             kiln__shape_str(s, node->ndim, node->dims), why);
            return KILN_ERR_SHAPE;
        }
    }
    return KILN_OK;
}

/* Releases the plan: device buffers, schedule, lists (registered with
 * kiln__graph_on_free, and called when a compile fails). */
static void plan_free(kiln_graph *g)
{
    kiln__plan *plan = &g->plan;
    free_segments(g, &plan->leaves);
    free_segments(g, &plan->arena);
    kiln__schedule_free(g);
    free(plan->exec);
    memset(plan, 0, sizeof *plan);
}

KILN_API kiln_status kiln_graph_compile(kiln_graph *g)
{
    if (!g)
        return kiln__error(KILN_ERR_INVALID_ARG, "kiln_graph_compile: graph is NULL");
    if (g->status != KILN_OK)
        return kiln__error(g->status, "kiln_graph_compile: the graph has an error: %s",
                           g->error ? g->error : "out of memory");
    if (g->compiled)
        return kiln__error(KILN_ERR_STATE, "kiln_graph_compile: already compiled");
    kiln__graph_on_free(g, plan_free);
    planner p = {
        .g        = g,
        .last_use = kiln__calloc(g->n_nodes, sizeof(size_t), "memory planning"),
        .offset   = kiln__calloc(g->n_nodes, sizeof(size_t), "memory planning"),
        .consumed = kiln__calloc(g->n_nodes, sizeof(bool), "memory planning"),
    };
    kiln_status st = KILN_ERR_NO_MEMORY;
    if (p.last_use && p.offset && p.consumed) {
        compute_lifetimes(&p);
        st = assign_offsets(&p);
        if (st == KILN_OK)
            st = alloc_buffers(g);
        if (st == KILN_OK)
            st = bind_and_upload(&p);
        if (st == KILN_OK)
            st = build_exec(g);
        if (st == KILN_OK && (st = kiln__dp_plan(g)) != KILN_OK)
            kiln__graph_fail(g, st, "compile: %s", kiln_last_error());
        if (st == KILN_OK && (st = kiln__profile_start(g)) != KILN_OK)
            kiln__graph_fail(g, st, "compile: out of memory for the profile");
        if (st == KILN_OK && (st = kiln__schedule(g)) != KILN_OK)
            kiln__graph_fail(g, st, "compile: %s", kiln_last_error());
    } else {
        kiln__graph_fail(g, st, "compile: out of memory for %zu nodes", g->n_nodes);
    }
    free(p.last_use);
    free(p.offset);
    free(p.consumed);
    if (st != KILN_OK) {
        plan_free(g);
        return kiln__error(st, "%s", g->error ? g->error : "compile failed");
    }
    g->compiled = true;
    kiln__log(KILN_LOG_DEBUG,
              "compiled %zu nodes (%zu run) on %s: %zu bytes of leaves, "
              "%zu of intermediates (%zu unshared)",
              g->n_nodes, g->plan.n_exec, kiln_context_device(g->ctx),
              g->plan.leaves_size, g->plan.arena_size, g->plan.unshared);
    if (g->plan.segment != SIZE_MAX)
        kiln__log(KILN_LOG_DEBUG,
                  "the device allocates at most %zu bytes a buffer: leaves in %zu and "
                  "intermediates in %zu buffers (in %zu KiB buffers)",
                  g->plan.segment, g->plan.leaves.n, g->plan.arena.n,
                  g->plan.segment / 1024);
    return KILN_OK;
}

KILN_API kiln_status kiln_graph_memory(const kiln_graph *g, size_t *planned,
                                       size_t *unshared)
{
    if (!g || !g->compiled)
        return kiln__error(g ? KILN_ERR_STATE : KILN_ERR_INVALID_ARG,
                           "kiln_graph_memory: %s",
                           g ? "compile the graph first" : "graph is NULL");
    if (planned)
        *planned = g->plan.arena_size;
    if (unshared)
        *unshared = g->plan.unshared;
    return KILN_OK;
}
