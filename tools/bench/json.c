/* tools/bench/json.c — kiln-bench's figures as JSON values (--json), with
 * the precision the table prints them with, so that the output says no
 * more than was measured. */
#include "bench.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

/* A real read back from its printed form ("%.2f" of 3.14159 is 3.14). */
static json_t *rounded(double v, int digits, bool sci)
{
    char text[64];
    if (!isfinite(v))
        return json_null();
    snprintf(text, sizeof text, sci ? "%.*e" : "%.*f", digits, v);
    return json_real(strtod(text, NULL));
}

json_t *bench_json_fixed(double v, int decimals)
{
    return rounded(v, decimals, false);
}

json_t *bench_json_sci(double v, int digits)
{
    return rounded(v, digits, true);
}

json_t *bench_json_stats(const bench_stats *s)
{
    return json_pack("{s:o, s:o, s:o}", "min", bench_json_fixed(s->min, 2), "median",
                     bench_json_fixed(s->median, 2), "max", bench_json_fixed(s->max, 2));
}

bool bench_json_append(json_t *results, json_t *row)
{
    if (!row || json_array_append_new(results, row) != 0) {
        fprintf(stderr, "kiln-bench: out of memory for the JSON output\n");
        return false;
    }
    return true;
}
