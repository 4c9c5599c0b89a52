/* fuzz/cache.c — libFuzzer target for the OpenCL plugin's program-cache
 * entries (backends/opencl/cache.c: ocl_cache_load, ocl_cache_store).
 *
 * cache.c is internal to the plugin, so it is compiled into this target by
 * itself; it needs nothing from the rest of the plugin, nor OpenCL beyond
 * its headers. Each input is written as an entry file and loaded with a
 * fixed key (the seeds in fuzz/corpus/cache are entries for it), and the
 * result is compared with a reference reading of the format cache.c
 * documents:
 *
 *   "KILNCLP\n"  u32 format (1)  u32 key length  key  u64 size  u64 FNV-1a  binary
 *
 * (little-endian): a hit must return exactly the binary, anything else must
 * be reported bad and deleted. Then the input is stored as a binary under
 * the key and loaded back, which must give it again.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common.h"
#include "ocl-impl.h"

#define KEY "kiln fuzz: source 0123456789abcdef, options -cl-std=CL1.2, device POCL 3.1"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_setup(""); /* no plugins: cache.c is all there is */
    return 0;
}

static uint64_t le(const uint8_t *p, int bytes)
{
    uint64_t v = 0;
    for (int i = 0; i < bytes; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

/* Where the binary is, if the input is a valid entry for KEY. */
static bool reference_entry(const uint8_t *d, size_t n, size_t *at)
{
    size_t key_len = strlen(KEY), head = 8 + 4 + 4 + key_len + 16;
    if (n < head || memcmp(d, "KILNCLP\n", 8) != 0 || le(d + 8, 4) != 1 ||
        le(d + 12, 4) != key_len || memcmp(d + 16, KEY, key_len) != 0)
        return false;
    uint64_t size = le(d + 16 + key_len, 8), sum = le(d + 24 + key_len, 8);
    uint64_t h = 14695981039346656037ull; /* FNV-1a, 64-bit */
    for (size_t i = head; i < n; i++)
        h = (h ^ d[i]) * 1099511628211ull;
    *at = head;
    return size == n - head && size > 0 && h == sum;
}

static void load(const char *path, const uint8_t *data, size_t size, const char *what)
{
    unsigned char   *bin = NULL;
    size_t           len = 0, at = 0;
    char             why[256];
    bool             valid = reference_entry(data, size, &at);
    ocl_cache_result r     = ocl_cache_load(path, KEY, &bin, &len, why, sizeof why);
    struct stat      st;
    if (r == OCL_CACHE_HIT) {
        if (!valid)
            fuzz_fail("%s: ocl_cache_load accepted an entry the reference refuses", what);
        if (len != size - at || memcmp(bin, data + at, len) != 0)
            fuzz_fail("%s: ocl_cache_load returned other bytes than the binary", what);
        free(bin);
    } else if (r == OCL_CACHE_BAD) {
        if (valid)
            fuzz_fail("%s: ocl_cache_load refused a valid entry: %s", what, why);
        if (stat(path, &st) == 0)
            fuzz_fail("%s: ocl_cache_load left a bad entry (%s) in place", what, why);
    } else {
        fuzz_fail("%s: ocl_cache_load missed an entry that exists", what);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = fuzz_path(0, "entry");
    char        why[256];
    fuzz_write(path, data, size);
    load(path, data, size, "the input as an entry");
    unlink(path);

    if (size == 0)
        return 0; /* program.c never stores an empty binary */
    if (!ocl_cache_store(fuzz_dir(), path, KEY, data, size, why, sizeof why))
        fuzz_fail("ocl_cache_store: %s", why);
    size_t   key_len = strlen(KEY), n = 8 + 4 + 4 + key_len + 16 + size;
    uint8_t *entry = malloc(n);
    if (!entry)
        fuzz_fail("out of memory");
    uint64_t h = 14695981039346656037ull;
    for (size_t i = 0; i < size; i++)
        h = (h ^ data[i]) * 1099511628211ull;
    memcpy(entry, "KILNCLP\n", 8);
    for (int i = 0; i < 4; i++) {
        entry[8 + i]  = (uint8_t)(1u >> (8 * i));
        entry[12 + i] = (uint8_t)(key_len >> (8 * i));
    }
    memcpy(entry + 16, KEY, key_len);
    for (int i = 0; i < 8; i++) {
        entry[16 + key_len + (size_t)i] = (uint8_t)((uint64_t)size >> (8 * i));
        entry[24 + key_len + (size_t)i] = (uint8_t)(h >> (8 * i));
    }
    memcpy(entry + n - size, data, size);
    load(path, entry, n, "the input stored as a binary");
    free(entry);
    unlink(path);
    return 0;
}
