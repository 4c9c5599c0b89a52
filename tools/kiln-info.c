/* kiln-info — what kiln finds on this machine and what it would choose.
 * Exit status: 0 when the current environment selects a usable device,
 * 1 when nothing is usable or KILN_BACKEND names nothing usable, 2 on usage. */
#include "cli.h"

#include <kiln/kiln.h>

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *type_name(kiln_device_type t)
{
    switch (t) {
    case KILN_DEVICE_CPU: return "CPU";
    case KILN_DEVICE_GPU: return "GPU";
    case KILN_DEVICE_ACCELERATOR: return "accelerator";
    }
    return "device";
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
        printf("  %-10s %s (%s", spec, d[i].name, type_name(d[i].type));
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

static int print_selection(void)
{
    const char *spec = getenv("KILN_BACKEND");
    size_t      k;
    printf("\nselection: KILN_BACKEND=%s\n", spec ? spec : "(unset: highest score)");
    if (kiln_select(spec, &k) != KILN_OK) {
        printf("  nothing usable: %s\n", kiln_last_error());
        return 1;
    }
    const kiln_device_report *d;
    kiln_devices(&d);
    printf("  -> %s:%d (%s)\n", d[k].backend, d[k].index, d[k].name);
    return 0;
}

static const char usage[] =
    "usage: kiln-info [--version] [--help]\n"
    "Lists kiln's plugins (and why any was refused), their devices, and the\n"
    "device KILN_BACKEND selects. KILN_LOG=debug shows every load attempt.\n";

static const struct option long_options[] = {
    {"version", no_argument, NULL, 'V'},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

/* Returns only when there is something to list. */
static void parse_args(int argc, char **argv)
{
    cli_init(argv, "kiln-info");
    int c;
    while ((c = getopt_long(argc, argv, "hV", long_options, NULL)) != -1) {
        switch (c) {
        case 'V': printf("kiln-info %s\n", kiln_version()); exit(0);
        case 'h': fputs(usage, stdout); exit(0);
        default: /* getopt said what was wrong */ cli_try_help();
        }
    }
    if (optind < argc)
        cli_usage_error("unexpected argument '%s'", argv[optind]);
}

int main(int argc, char **argv)
{
    parse_args(argc, argv);
    printf("kiln %s\n", kiln_version());
    print_plugins();
    print_devices();
    return print_selection();
}
