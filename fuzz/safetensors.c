/* fuzz/safetensors.c — libFuzzer target for kiln_load, the safetensors reader
 * (core/formats/safetensors.c).
 *
 * Each input is written to a file and loaded twice on the cpu backend:
 *
 * - into a compiled graph with two parameters of fixed shape, fc.weight
 *   [4, 3] and fc.bias [3] (the seeds in fuzz/corpus/safetensors hold them),
 *   whose values are set to a sentinel first: a failed load must leave them
 *   as they were (kiln.h promises it), a successful one must give them the
 *   file's bytes;
 * - into a graph made from the header itself (parsed here with Jansson, as
 *   kiln does), one parameter per tensor of a small shape, so that a mutated
 *   file whose tensors still match reaches the data, not just the checks.
 *
 * Either broken promise aborts, and so does everything ASan and UBSan see.
 */
#include <kiln/kiln.h>

#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common.h"

#ifndef KILN_FUZZ_PLUGIN_PATH
#error "KILN_FUZZ_PLUGIN_PATH must name the build tree's cpu plugin folder"
#endif

/* The graph made from a header gets at most this many parameters, each of at
 * most this many elements: the input is small, so a larger tensor cannot
 * match it anyway. */
#define MAX_PARAMS 32
#define MAX_NUMEL  (1 << 16)

static kiln_context *ctx;
static kiln_graph   *fixed;
static kiln_tensor  *fixed_params[2];

static void must(kiln_status st, const char *what)
{
    if (st != KILN_OK)
        fuzz_fail("%s: %s", what, kiln_last_error());
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_setup(KILN_FUZZ_PLUGIN_PATH);
    fuzz_pin_plugins(KILN_FUZZ_PLUGIN_PATH);
    ctx = kiln_context_new_for("cpu");
    if (!ctx)
        fuzz_fail("no cpu context: %s", kiln_last_error());
    fixed           = kiln_graph_new(ctx);
    kiln_tensor *x  = kiln_input(fixed, "x", KILN_F32, KILN_SHAPE(1, 4));
    fixed_params[0] = kiln_param(fixed, "fc.weight", KILN_SHAPE(4, 3));
    fixed_params[1] = kiln_param(fixed, "fc.bias", KILN_SHAPE(3));
    kiln_add(fixed, kiln_matmul(fixed, x, fixed_params[0]), fixed_params[1]);
    must(kiln_graph_compile(fixed), "compiling the fixed graph");
    return 0;
}

/* The header as Jansson reads it with kiln's flags, or NULL; *data_at is
 * where the tensors' bytes begin. */
static json_t *parse_header(const uint8_t *data, size_t size, size_t *data_at)
{
    if (size < 8)
        return NULL;
    uint64_t len = 0;
    for (int i = 0; i < 8; i++)
        len |= (uint64_t)data[i] << (8 * i);
    if (len > size - 8)
        return NULL;
    *data_at = 8 + (size_t)len;
    return json_loadb((const char *)data + 8, (size_t)len,
                      JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, NULL);
}

/* After a successful load, parameter t must hold the values of its tensor
 * in the file: its bytes for F32, the F16 or BF16 values widened otherwise
 * (little-endian, as this host stores them). */
static void check_value(const kiln_tensor *t, json_t *header, const uint8_t *data,
                        size_t size, size_t data_at)
{
    const char *name  = kiln_tensor_name(t);
    json_t     *entry = json_object_get(header, name);
    json_t     *offs  = json_object_get(entry, "data_offsets");
    json_int_t  begin = json_integer_value(json_array_get(offs, 0));
    const char *type  = json_string_value(json_object_get(entry, "dtype"));
    kiln_dtype  dt    = type && strcmp(type, "F16") == 0    ? KILN_F16
                        : type && strcmp(type, "BF16") == 0 ? KILN_BF16
                                                             : KILN_F32;
    size_t      count = (size_t)kiln_tensor_numel(t), n = kiln_tensor_nbytes(t);
    size_t      stored = count * kiln_dtype_size(dt);
    if (!header || begin < 0 || (uint64_t)begin > size - data_at ||
        stored > size - data_at - (size_t)begin)
        fuzz_fail("kiln_load accepted tensor \"%s\" whose offsets the header "
                  "does not hold",
                  name);
    unsigned char *got = malloc(n ? n : 1), *want = malloc(n ? n : 1);
    unsigned char *file = malloc(stored ? stored : 1); /* aligned for widening */
    if (!got || !want || !file)
        fuzz_fail("out of memory");
    memcpy(file, data + data_at + (size_t)begin, stored);
    must(kiln_tensor_read(t, got, n), "reading a loaded parameter");
    must(kiln_convert(want, KILN_F32, file, dt, count), "widening the file's values");
    free(file);
    /* compared as bits: a NaN's payload widens the same way both times */
    if (memcmp(got, want, n) != 0)
        fuzz_fail("parameter \"%s\" does not hold the file's values", name);
    free(got);
    free(want);
}

static void load_fixed(const char *path, json_t *header, const uint8_t *data, size_t size,
                       size_t data_at)
{
    float sentinel[12], got[12];
    for (int i = 0; i < 12; i++)
        sentinel[i] = 1000.0f + (float)i;
    must(kiln_tensor_write(fixed_params[0], sentinel, 12 * sizeof(float)), "sentinel");
    must(kiln_tensor_write(fixed_params[1], sentinel, 3 * sizeof(float)), "sentinel");
    if (kiln_load(fixed, path) == KILN_OK) {
        for (int i = 0; i < 2; i++)
            check_value(fixed_params[i], header, data, size, data_at);
        return;
    }
    must(kiln_tensor_read(fixed_params[0], got, 12 * sizeof(float)), "reading back");
    if (memcmp(got, sentinel, sizeof got) != 0)
        fuzz_fail("a failed kiln_load changed fc.weight");
    must(kiln_tensor_read(fixed_params[1], got, 3 * sizeof(float)), "reading back");
    if (memcmp(got, sentinel, 3 * sizeof(float)) != 0)
        fuzz_fail("a failed kiln_load changed fc.bias");
}

/* The shape of a header entry, if it is small enough to make a parameter. */
static bool small_shape(json_t *entry, int *ndim, int64_t *dims)
{
    json_t *shape = json_object_get(entry, "shape");
    size_t  n     = json_array_size(shape);
    int64_t numel = 1;
    if (!json_is_array(shape) || n > KILN_MAX_DIMS)
        return false;
    for (size_t i = 0; i < n; i++) {
        json_t *d = json_array_get(shape, i);
        if (!json_is_integer(d) || json_integer_value(d) < 0 ||
            json_integer_value(d) > MAX_NUMEL)
            return false;
        dims[i] = json_integer_value(d);
        numel *= dims[i];
        if (numel > MAX_NUMEL)
            return false;
    }
    *ndim = (int)n;
    return true;
}

static void load_matching(const char *path, json_t *header, const uint8_t *data,
                          size_t size, size_t data_at)
{
    kiln_graph  *g = kiln_graph_new(ctx);
    kiln_tensor *params[MAX_PARAMS];
    int          n = 0;
    const char  *key;
    json_t      *entry;
    if (!g)
        fuzz_fail("kiln_graph_new: %s", kiln_last_error());
    json_object_foreach(header, key, entry)
    {
        int     ndim;
        int64_t dims[KILN_MAX_DIMS];
        if (n == MAX_PARAMS)
            break;
        if (strcmp(key, "__metadata__") != 0 && small_shape(entry, &ndim, dims))
            params[n++] = kiln_param(g, key, ndim, dims);
    }
    if (n > 0 && kiln_graph_status(g) == KILN_OK && kiln_load(g, path) == KILN_OK)
        for (int i = 0; i < n; i++)
            check_value(params[i], header, data, size, data_at);
    kiln_graph_free(g);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path    = fuzz_path(0, "input.safetensors");
    size_t      data_at = 0;
    fuzz_write(path, data, size);
    json_t *header = parse_header(data, size, &data_at);
    load_fixed(path, header, data, size, data_at);
    if (json_is_object(header))
        load_matching(path, header, data, size, data_at);
    json_decref(header);
    unlink(path);
    return 0;
}
