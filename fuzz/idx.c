/* fuzz/idx.c — libFuzzer target for kiln_idx_read, the IDX reader
 * (core/formats/idx.c), through both of its paths.
 *
 * Each input is read twice: as a plain file, and gzipped here with zlib, so
 * that the gzip path sees the same structures. Both results are compared
 * with what a small reference reader below expects of the bytes: the header
 * (00 00 <type> <ndim>, ndim big-endian u32 sizes), exactly as many elements
 * as it announces and nothing after them; an input that is itself gzip (1f
 * 8b) is inflated first, as a sequence of whole gzip members and nothing
 * else, since kiln detects gzip by content. A disagreement aborts (a result
 * kiln.h does not promise), as does a failed read that leaves *out set, and
 * everything ASan and UBSan see.
 */
#include <kiln/kiln.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "common.h"

/* What the reference reader makes of some bytes. */
typedef struct expect {
    bool           ok;
    const char    *why; /* when not ok */
    kiln_idx       idx; /* data points into the bytes, big-endian */
    size_t         elem;
    unsigned char *owned; /* inflated bytes, if any, to free */
} expect;

static size_t type_size(unsigned type)
{
    switch (type) {
    case 0x08: return 1;
    case 0x09: return 1;
    case 0x0B: return 2;
    case 0x0C: return 4;
    case 0x0D: return 4;
    case 0x0E: return 8;
    }
    return 0;
}

static expect refuse(const char *why)
{
    return (expect){.ok = false, .why = why};
}

static expect reference_idx(const uint8_t *b, size_t n)
{
    expect e = {.ok = true};
    if (n < 4 || b[0] != 0 || b[1] != 0)
        return refuse("bad magic");
    if (!(e.elem = type_size(b[2])))
        return refuse("unknown type");
    if (b[3] > KILN_MAX_DIMS || n < 4 + 4 * (size_t)b[3])
        return refuse("bad dimensions");
    e.idx.type  = b[2];
    e.idx.ndim  = b[3];
    e.idx.count = 1;
    /* kiln.h: a product that overflows, even before a later 0, is refused. */
    size_t   at    = 4 + 4 * (size_t)b[3];
    uint64_t limit = (uint64_t)INT64_MAX / e.elem;
    for (int i = 0; i < e.idx.ndim; i++) {
        const uint8_t *d = b + 4 + 4 * i;
        e.idx.dims[i]    = (int64_t)((uint32_t)d[0] << 24 | (uint32_t)d[1] << 16 |
                                  (uint32_t)d[2] << 8 | d[3]);
        if (e.idx.dims[i] && (uint64_t)e.idx.count > limit / (uint64_t)e.idx.dims[i])
            return refuse("dimensions whose product overflows");
        e.idx.count *= e.idx.dims[i];
    }
    if ((uint64_t)e.idx.count > (n - at) / e.elem)
        return refuse("more elements than bytes");
    if ((size_t)e.idx.count * e.elem != n - at)
        return refuse("not as many bytes as elements");
    e.idx.data = (void *)(b + at);
    return e;
}

/* Inflates a sequence of whole gzip members into *out (malloc'd); NULL if
 * that is what the bytes are, else what they are instead: a broken member,
 * one cut short, or bytes after one that do not start another. */
static const char *gunzip(const uint8_t *b, size_t n, unsigned char **out,
                          size_t *out_len)
{
    z_stream    z   = {0};
    size_t      cap = 4096, have = 0;
    const char *why = NULL;
    *out            = malloc(cap);
    if (!*out || inflateInit2(&z, 16 + MAX_WBITS) != Z_OK)
        fuzz_fail("zlib: out of memory");
    z.next_in  = (unsigned char *)b;
    z.avail_in = (uInt)n;
    for (;;) {
        if (have == cap) {
            unsigned char *grown = cap < (64u << 20) ? realloc(*out, 2 * cap) : NULL;
            if (!grown) {
                why = "inflates past 64 MiB";
                break;
            }
            *out = grown;
            cap *= 2;
        }
        z.next_out  = *out + have;
        z.avail_out = (uInt)(cap - have);
        int ret     = inflate(&z, Z_NO_FLUSH);
        have        = cap - z.avail_out;
        if (ret == Z_STREAM_END) {
            if (z.avail_in == 0)
                break;
            if (z.avail_in < 2 || z.next_in[0] != 0x1f || z.next_in[1] != 0x8b) {
                why = "bytes after the last gzip member";
                break;
            }
            inflateReset(&z);
        } else if (ret != Z_OK && ret != Z_BUF_ERROR) {
            why = "a corrupt gzip member";
            break;
        } else if (z.avail_in == 0 && z.avail_out != 0) {
            why = "a gzip member cut short";
            break;
        }
    }
    inflateEnd(&z);
    *out_len = have;
    return why;
}

static bool is_gzip(const uint8_t *b, size_t n)
{
    return n >= 2 && b[0] == 0x1f && b[1] == 0x8b;
}

/* The input gzipped, as one member. */
static unsigned char *gzip(const uint8_t *b, size_t n, size_t *out_len)
{
    z_stream z = {0};
    /* A small window and state: the inputs are a few KiB, and a large
     * allocation per input would halve the executions a second. */
    if (deflateInit2(&z, Z_BEST_SPEED, Z_DEFLATED, 16 + 9, 1, Z_DEFAULT_STRATEGY) != Z_OK)
        fuzz_fail("zlib: out of memory");
    size_t         cap = deflateBound(&z, (uLong)n);
    unsigned char *out = malloc(cap);
    if (!out)
        fuzz_fail("zlib: out of memory");
    z.next_in   = (unsigned char *)b;
    z.avail_in  = (uInt)n;
    z.next_out  = out;
    z.avail_out = (uInt)cap;
    if (deflate(&z, Z_FINISH) != Z_STREAM_END)
        fuzz_fail("zlib: deflate did not finish in deflateBound's size");
    *out_len = cap - z.avail_out;
    deflateEnd(&z);
    return out;
}

/* Host-order element i of the reference's big-endian data. */
static uint64_t element(const expect *e, int64_t i)
{
    const uint8_t *p = (const uint8_t *)e->idx.data + (size_t)i * e->elem;
    uint64_t       v = 0;
    for (size_t k = 0; k < e->elem; k++)
        v = v << 8 | p[k];
    return v;
}

static uint64_t got_element(const kiln_idx *idx, size_t elem, int64_t i)
{
    const uint8_t *p = (const uint8_t *)idx->data + (size_t)i * elem;
    uint8_t        u8;
    uint16_t       u16;
    uint32_t       u32;
    uint64_t       u64;
    switch (elem) {
    case 1: memcpy(&u8, p, 1); return u8;
    case 2: memcpy(&u16, p, 2); return u16;
    case 4: memcpy(&u32, p, 4); return u32;
    default: memcpy(&u64, p, 8); return u64;
    }
}

static void check(const char *path, const char *which, const expect *e)
{
    kiln_idx    idx;
    kiln_status st = kiln_idx_read(path, &idx);
    if (st != KILN_OK && e->ok)
        fuzz_fail("%s: kiln_idx_read refused a valid file: %s", which, kiln_last_error());
    if (st == KILN_OK && !e->ok)
        fuzz_fail("%s: kiln_idx_read accepted a file the reference refuses (%s)", which,
                  e->why);
    if (st != KILN_OK) {
        bool zero = !idx.type && !idx.ndim && !idx.count && !idx.data;
        for (int i = 0; i < KILN_MAX_DIMS; i++)
            zero = zero && !idx.dims[i];
        if (!zero)
            fuzz_fail("%s: a failed kiln_idx_read left *out set", which);
        return;
    }
    if (idx.type != e->idx.type || idx.ndim != e->idx.ndim || idx.count != e->idx.count)
        fuzz_fail("%s: type, ndim or count differ from the header's", which);
    for (int i = 0; i < idx.ndim; i++)
        if (idx.dims[i] != e->idx.dims[i])
            fuzz_fail("%s: dimension %d differs from the header's", which, i);
    for (int64_t i = 0; i < idx.count; i++)
        if (got_element(&idx, e->elem, i) != element(e, i))
            fuzz_fail("%s: element %lld differs from the file's", which, (long long)i);
    kiln_idx_free(&idx);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_setup(""); /* the reader needs no plugin */
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *raw = fuzz_path(0, "input.idx"), *gz = fuzz_path(1, "input.idx.gz");
    expect      e;
    if (is_gzip(data, size)) {
        unsigned char *plain;
        size_t         plain_len;
        const char    *why = gunzip(data, size, &plain, &plain_len);
        e                  = why ? refuse(why) : reference_idx(plain, plain_len);
        e.owned            = plain;
    } else {
        e = reference_idx(data, size);
    }
    fuzz_write(raw, data, size);
    check(raw, "the input as it is", &e);
    unlink(raw);
    free(e.owned);

    size_t         gz_len;
    unsigned char *z = gzip(data, size, &gz_len);
    e                = reference_idx(data, size);
    fuzz_write(gz, z, gz_len);
    check(gz, "the input gzipped", &e);
    unlink(gz);
    free(z);
    return 0;
}
