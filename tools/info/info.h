/* tools/info/info.h — what kiln-info's two outputs (the table and --json)
 * share: how the selection came about, and the device types' names. */
#ifndef KILN_TOOLS_INFO_H
#define KILN_TOOLS_INFO_H

#include <kiln/kiln.h>

#include <stdbool.h>
#include <stddef.h>

/* The outcome of KILN_BACKEND (or of its absence) on this machine. */
typedef struct info_selection {
    const char *spec;   /* KILN_BACKEND, NULL when unset              */
    bool        ok;     /* a usable device was selected               */
    size_t      device; /* its index into kiln_devices(), when ok     */
    char        why[1536]; /* how it was chosen, or why nothing was    */
} info_selection;

void        info_select(info_selection *sel);
const char *info_type_name(kiln_device_type t); /* "CPU", "GPU", ... */

/* Prints everything as one JSON object on stdout; the exit status. */
int info_print_json(const info_selection *sel);

#endif /* KILN_TOOLS_INFO_H */
