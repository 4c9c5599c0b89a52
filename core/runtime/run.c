/* core/runtime/run.c — running a compiled graph on its device. */
#include "../kiln-impl.h"

#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
static struct { char key[160]; double t; long n; } prof[512];
static int nprof;
static void prof_dump(void) {
    double tot=0; for(int i=0;i<nprof;i++) tot+=prof[i].t;
    for(int i=0;i<nprof;i++) for(int j=i+1;j<nprof;j++) if(prof[j].t>prof[i].t){__typeof__(prof[0]) x=prof[i];prof[i]=prof[j];prof[j]=x;}
    for(int i=0;i<nprof && i<45;i++) fprintf(stderr,"%8.1f ms %5.1f%% %6ld  %s\n",prof[i].t*1e3,100*prof[i].t/tot,prof[i].n,prof[i].key);
    fprintf(stderr,"total %.1f ms\n",tot*1e3);
}
static double tnow(void){struct timespec ts;clock_gettime(CLOCK_MONOTONIC,&ts);return ts.tv_sec+1e-9*ts.tv_nsec;}

/* Every input and parameter a node reads must hold a value, or the run would
 * compute on whatever the device memory held. */
static kiln_status check_leaves_written(const kiln_graph *g)
{
    for (size_t i = 0; i < g->n_nodes; i++) {
        const kiln_tensor *t = g->nodes[i];
        if (!(t->flags & KILN__LEAF) || t->written)
            continue;
        char s[KILN__SHAPE_STR];
        return kiln__error(KILN_ERR_STATE,
                           "kiln_graph_run: %s '%s' %s has not been "
                           "written; call kiln_tensor_write first",
                           (t->flags & KILN__PARAM) ? "parameter" : "input",
                           t->name ? t->name : "",
                           kiln__shape_str(s, t->node.ndim, t->node.dims));
    }
    return KILN_OK;
}

/* Runs the plan's nodes for which run[i] is true (all when run is NULL):
 * consecutive nodes of the selected device go to it in one call, and each
 * fallback node runs between them with its copies. */
static kiln_status run_plan(kiln_graph *g, const bool *run)
{
    const kiln__plan  *plan = &g->plan;
    const kiln_device *dev  = &g->ctx->device;
    kiln_status        st   = check_leaves_written(g);
    size_t             n    = 0;
    for (size_t i = 0; i <= plan->n_exec && st == KILN_OK; i++) {
        bool end = i == plan->n_exec;
        if (!end && run && !run[i])
            continue;
        if (!end && !plan->fallback[i] && getenv("KPROF")) {
            static int reg; if(!reg){reg=1;atexit(prof_dump);}
            const kiln_node *nd = plan->exec[i];
            char key[160], sh[96]; kiln__shape_str(sh, nd->ndim, nd->dims);
            char s0[96]="", s1[96]="";
            if (nd->src[0]) kiln__shape_str(s0, nd->src[0]->ndim, nd->src[0]->dims);
            if (nd->src[1]) kiln__shape_str(s1, nd->src[1]->ndim, nd->src[1]->dims);
            snprintf(key,sizeof key,"%s %s <- %s %s t%d%d", kiln__op_name(nd->op), sh, s0, s1, nd->iparam[0], nd->iparam[1]);
            double t0=tnow();
            st = dev->iface->graph_compute(dev->context, &plan->exec[i], 1);
            if (dev->iface->synchronize) dev->iface->synchronize(dev->context);
            double dt=tnow()-t0; int k; for(k=0;k<nprof;k++) if(!strcmp(prof[k].key,key)) break;
            if(k==nprof && nprof<512){strcpy(prof[nprof].key,key);nprof++;}
            if(k<512){prof[k].t+=dt;prof[k].n++;}
            continue;
        }
        if (!end && !plan->fallback[i]) {
            plan->batch[n++] = plan->exec[i];
            continue;
        }
        if (n)
            st = dev->iface->graph_compute(dev->context, plan->batch, n);
        n = 0;
        if (st == KILN_OK && !end)
            st = kiln__fallback_run(g, plan->fallback[i], plan->exec[i]);
    }
    if (st == KILN_OK && dev->iface->synchronize)
        st = dev->iface->synchronize(dev->context);
    if (st != KILN_OK)
        return kiln__error(st, "kiln_graph_run on %s: %s", kiln_context_device(g->ctx),
                           kiln_last_error());
    g->ran = true;
    return KILN_OK;
}

KILN_API kiln_status kiln_graph_run(kiln_graph *g)
{
    if (!g)
        return kiln__error(KILN_ERR_INVALID_ARG, "kiln_graph_run: graph is NULL");
    if (!g->compiled)
        return kiln__error(g->status != KILN_OK ? g->status : KILN_ERR_STATE,
                           "kiln_graph_run: %s",
                           g->status != KILN_OK ? kiln_graph_error(g)
                                                : "the graph is not compiled; call "
                                                  "kiln_graph_compile first");
    kiln_status st = kiln__optim_before_run(g); /* one optimiser step per run */
    if (st != KILN_OK)
        return st;
    return run_plan(g, NULL);
}

KILN_API kiln_status kiln_graph_eval(kiln_graph *g, kiln_tensor *t)
{
    if (!g || !t)
        return kiln__error(KILN_ERR_INVALID_ARG, "kiln_graph_eval: %s is NULL",
                           g ? "tensor" : "graph");
    if (!g->compiled)
        return kiln__error(KILN_ERR_STATE, "kiln_graph_eval: the graph is not compiled; "
                                           "call kiln_graph_compile first");
    if (t->graph != g)
        return kiln__error(KILN_ERR_INVALID_ARG, "kiln_graph_eval: the tensor belongs "
                                                 "to another graph");
    /* Mark t's ancestors, then run the marked nodes in the compiled order: a
     * subset of a valid schedule keeps every lifetime the plan assumed. */
    bool       *need = kiln__calloc(g->n_nodes, sizeof *need, "kiln_graph_eval");
    bool       *run  = kiln__calloc(g->plan.n_exec, sizeof *run, "kiln_graph_eval");
    kiln_status st   = KILN_ERR_NO_MEMORY;
    if (need && run) {
        need[t->id] = true;
        for (size_t i = t->id + 1; i-- > 0;) {
            if (!need[i])
                continue;
            for (int s = 0; s < KILN_MAX_SRC; s++)
                if (g->nodes[i]->node.src[s])
                    need[((const kiln_tensor *)g->nodes[i]->node.src[s])->id] = true;
        }
        for (size_t i = 0; i < g->plan.n_exec; i++)
            run[i] = need[((const kiln_tensor *)g->plan.exec[i])->id];
        st = run_plan(g, run);
    }
    free(need);
    free(run);
    return st;
}
