/* kiln-info — what kiln finds on this machine and what it would choose,
 * as a table or (--json) as one JSON object.
 * Exit status: 0 when the current environment selects a usable device,
 * 1 when nothing is usable or KILN_BACKEND names nothing usable, 2 on usage. */
#include "../cli.h"
#include "info.h"

#include <kiln/kiln.h>

#include <ctype.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *info_type_name(kiln_device_type t)
{
    switch (t) {
    case KILN_DEVICE_CPU: return "CPU";
    case KILN_DEVICE_GPU: return "GPU";
    case KILN_DEVICE_ACCELERATOR: return "accelerator";
    }
    return "device";
}

/* The usable plugin of that name's probe score, or 0. */
static int plugin_score(const char *name)
{
    const kiln_plugin_report *p;
    size_t                    n = kiln_plugins(&p);
    for (size_t i = 0; i < n; i++)
        if (!p[i].reason && p[i].name && strcmp(p[i].name, name) == 0)
            return p[i].score;
    return 0;
}

/* Unset: the highest score won; say so, with the other plugins' scores. */
static void why_best(info_selection *sel)
{
    const kiln_device_report *d;
    kiln_devices(&d);
    const char *won = d[sel->device].backend;
    size_t      n   = (size_t)snprintf(sel->why, sizeof sel->why,
                                       "KILN_BACKEND is unset: the first usable device of "
                                       "the plugin with the highest probe score, %s (%d",
                                       won, plugin_score(won));
    const kiln_plugin_report *p;
    size_t                    np = kiln_plugins(&p), others = 0;
    for (size_t i = 0; i < np && n < sizeof sel->why; i++)
        if (!p[i].reason && p[i].name && strcmp(p[i].name, won) != 0)
            n += (size_t)snprintf(sel->why + n, sizeof sel->why - n, "%s%s %d",
                                  others++ ? ", " : "; others: ", p[i].name, p[i].score);
    if (n < sizeof sel->why)
        snprintf(sel->why + n, sizeof sel->why - n, ")");
}

/* Set: which entry of a comma-separated list named the device. */
static void why_spec(info_selection *sel)
{
    if (!strchr(sel->spec, ',')) {
        snprintf(sel->why, sizeof sel->why, "KILN_BACKEND=\"%s\" names it", sel->spec);
        return;
    }
    char entry[256];
    int  number = 0;
    for (const char *s = sel->spec; *s;) {
        size_t len = strcspn(s, ",");
        number++;
        snprintf(entry, sizeof entry, "%.*s", (int)(len < 255 ? len : 255), s);
        size_t k;
        if (kiln_select(entry, &k) == KILN_OK && k == sel->device) {
            char *e = entry;
            while (isspace((unsigned char)*e))
                e++;
            snprintf(sel->why, sizeof sel->why,
                     "KILN_BACKEND=\"%s\": entry %d (\"%s\") is the first that names a "
                     "usable device",
                     sel->spec, number, e);
            return;
        }
        s += len + (s[len] == ',');
    }
    snprintf(sel->why, sizeof sel->why, "KILN_BACKEND=\"%s\" names it", sel->spec);
}

void info_select(info_selection *sel)
{
    memset(sel, 0, sizeof *sel);
    sel->spec = getenv("KILN_BACKEND");
    if (kiln_select(sel->spec, &sel->device) != KILN_OK) {
        snprintf(sel->why, sizeof sel->why, "%s", kiln_last_error());
        return;
    }
    sel->ok = true;
    const char *s = sel->spec ? sel->spec : "";
    while (isspace((unsigned char)*s))
        s++;
    if (*s)
        why_spec(sel);
    else
        why_best(sel);
}

static void print_plugins(void)
{
    const kiln_plugin_report *p;
    size_t                    n = kiln_plugins(&p), refused = 0;
    const char               *path = getenv("KILN_PLUGIN_PATH");
    printf("plugin search path:\n");
    if (path && *path)
        printf("  KILN_PLUGIN_PATH  %s\n", path);
    printf("  installed         %s\n\nplugins:\n", kiln_plugin_dir());
    for (size_t i = 0; i < n; i++) {
        if (p[i].reason) {
            refused++;
            continue;
        }
        printf("  %-10s score %-3d %d device%s  %s\n", p[i].name, p[i].score,
               p[i].n_devices, p[i].n_devices == 1 ? " " : "s", p[i].path);
    }
    if (n == refused)
        printf("  (none usable)\n");
    if (refused) {
        printf("\nrefused:\n");
        for (size_t i = 0; i < n; i++)
            if (p[i].reason)
                printf("  %s\n      %s\n", p[i].path, p[i].reason);
    }
}

/* The communicator plugins, and the one kiln_comm_open(NULL) would take. */
static void print_comms(void)
{
    const kiln_plugin_report *p;
    size_t                    n    = kiln_comm_plugins(&p), k;
    const char               *path = getenv("KILN_COMM_PATH");
    const char               *want = getenv("KILN_COMM");
    printf("\ncommunicators (");
    if (path && *path)
        printf("KILN_COMM_PATH %s, then ", path);
    printf("%s):\n", kiln_comm_dir());
    for (size_t i = 0; i < n; i++)
        if (!p[i].reason)
            printf("  %-10s probe %-3d %s\n", p[i].name, p[i].score, p[i].path);
    for (size_t i = 0; i < n; i++)
        if (p[i].reason)
            printf("  refused: %s\n      %s\n", p[i].path, p[i].reason);
    if (kiln_comm_select(NULL, &k) != KILN_OK)
        printf("  -> none: %s\n", kiln_last_error());
    else
        printf("  -> %s (%s)\n", p[k].name,
               want && *want ? "KILN_COMM names it"
               : strcmp(p[k].name, "loopback") == 0
                   ? "one process: not started by mpirun"
                   : "the highest probe: this process belongs to a job");
}

static void print_devices(void)
{
    const kiln_device_report *d;
    size_t                    n = kiln_devices(&d);
    printf("\ndevices:\n");
    if (n == 0)
        printf("  (none)\n");
    for (size_t i = 0; i < n; i++) {
        char spec[96];
        snprintf(spec, sizeof spec, "%s:%d", d[i].backend, d[i].index);
        printf("  %-10s %s (%s", spec, d[i].name, info_type_name(d[i].type));
        if (d[i].compute_units > 0)
            printf(", %d compute units", d[i].compute_units);
        if (d[i].memory)
            printf(", %.1f GiB", (double)d[i].memory / (1024.0 * 1024.0 * 1024.0));
        printf(")\n");
        if (d[i].description && *d[i].description)
            printf("             %s\n", d[i].description);
        if (d[i].unusable)
            printf("             not usable: %s\n", d[i].unusable);
    }
}

static int print_selection(const info_selection *sel)
{
    printf("\nselection: KILN_BACKEND=%s\n",
           sel->spec ? sel->spec : "(unset: highest score)");
    if (!sel->ok) {
        printf("  nothing usable: %s\n", sel->why);
        return 1;
    }
    const kiln_device_report *d;
    kiln_devices(&d);
    size_t k = sel->device;
    printf("  -> %s:%d (%s)\n     %s\n", d[k].backend, d[k].index, d[k].name, sel->why);
    return 0;
}

static const char usage[] =
    "usage: kiln-info [--json] [--version] [--help]\n"
    "Lists kiln's plugins (and why any was refused), their devices, and the\n"
    "device KILN_BACKEND selects. KILN_LOG=debug shows every load attempt.\n"
    "  --json     the same as one JSON object on stdout (kiln-info(1))\n"
    "  --version  print kiln's version and exit\n"
    "  --help     print this and exit\n";

static const struct option long_options[] = {
    {"json", no_argument, NULL, 'j'},
    {"version", no_argument, NULL, 'V'},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

/* Returns only when there is something to list: whether to write JSON. */
static bool parse_args(int argc, char **argv)
{
    bool json = false;
    cli_init(argv, "kiln-info");
    int c;
    while ((c = getopt_long(argc, argv, "hV", long_options, NULL)) != -1) {
        switch (c) {
        case 'j': json = true; break;
        case 'V': printf("kiln-info %s\n", kiln_version()); exit(0);
        case 'h': fputs(usage, stdout); exit(0);
        default: /* getopt said what was wrong */ cli_try_help();
        }
    }
    if (optind < argc)
        cli_usage_error("unexpected argument '%s'", argv[optind]);
    return json;
}

int main(int argc, char **argv)
{
    bool           json = parse_args(argc, argv);
    info_selection sel;
    info_select(&sel);
    if (json)
        return info_print_json(&sel);
    printf("kiln %s\n", kiln_version());
    print_plugins();
    print_devices();
    int status = print_selection(&sel);
    print_comms();
    return status;
}
