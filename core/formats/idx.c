/* core/formats/idx.c — IDX files, the format of MNIST and Fashion-MNIST.
 *
 * A file is the magic 0x00 0x00 <type> <ndim>, ndim big-endian u32 sizes, then
 * the elements, big-endian, row-major. zlib reads it: gzopen recognises the
 * gzip magic 0x1f 0x8b and inflates, and reads any other file as it is, so a
 * ".gz" and a plain file take the same path. The buffer grows as data arrives
 * rather than trusting the header's size up front, so a short file that
 * claims to be huge fails as truncated without a huge allocation first. A
 * file with bytes left over after its elements is refused too: it was not
 * written as its header says.
 */
#include "../kiln-impl.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

/* Element size of a type code, 0 if unknown. */
static size_t type_size(unsigned type)
{
    switch (type) {
    case 0x08: return 1; /* u8  */
    case 0x09: return 1; /* i8  */
    case 0x0B: return 2; /* i16 */
    case 0x0C: return 4; /* i32 */
    case 0x0D: return 4; /* f32 */
    case 0x0E: return 8; /* f64 */
    }
    return 0;
}

typedef struct reader {
    const char *path;
    gzFile      gz;
    uint64_t    offset; /* bytes read so far (after decompression) */
} reader;

/* Reads up to n bytes; *got says how many. An error other than the end of
 * the file is reported. */
static kiln_status read_some(reader *r, void *buf, size_t n, size_t *got)
{
    *got = 0;
    while (*got < n) {
        size_t      chunk = n - *got < INT_MAX ? n - *got : INT_MAX;
        int         k     = gzread(r->gz, (char *)buf + *got, (unsigned)chunk);
        int         code;
        const char *msg = gzerror(r->gz, &code);
        if (k < 0 || (code != Z_OK && code != Z_BUF_ERROR))
            return kiln__error(KILN_ERR_IO, "kiln_idx_read: reading %s: %s", r->path,
                               code == Z_ERRNO ? strerror(errno) : msg);
        *got += (size_t)k;
        r->offset += (uint64_t)k;
        if (k == 0)
            break; /* the end, or a gzip stream cut short (Z_BUF_ERROR) */
    }
    return KILN_OK;
}

static kiln_status read_exact(reader *r, void *buf, size_t n, const char *what)
{
    size_t      got;
    uint64_t    at = r->offset;
    kiln_status st = read_some(r, buf, n, &got);
    if (st != KILN_OK || got == n)
        return st;
    return kiln__error(KILN_ERR_IO,
                       "kiln_idx_read: %s is truncated: expected %zu bytes "
                       "of %s from byte %llu, got %zu",
                       r->path, n, what, (unsigned long long)at, got);
}

static kiln_status read_header(reader *r, kiln_idx *out, size_t *elem)
{
    unsigned char magic[4];
    kiln_status   st = read_exact(r, magic, 4, "magic number");
    if (st != KILN_OK)
        return st;
    if (magic[0] != 0 || magic[1] != 0)
        return kiln__error(KILN_ERR_IO,
                           "kiln_idx_read: %s: bad magic number %02x %02x "
                           "%02x %02x; an IDX file starts with 00 00 <type> <ndim>",
                           r->path, magic[0], magic[1], magic[2], magic[3]);
    *elem = type_size(magic[2]);
    if (!*elem)
        return kiln__error(KILN_ERR_IO,
                           "kiln_idx_read: %s: unknown type code 0x%02x; "
                           "expected 0x08 (u8), 0x09 (i8), 0x0B (i16), 0x0C (i32), "
                           "0x0D (f32) or 0x0E (f64)",
                           r->path, magic[2]);
    if (magic[3] > KILN_MAX_DIMS)
        return kiln__error(KILN_ERR_IO,
                           "kiln_idx_read: %s has %d dimensions; kiln "
                           "tensors have at most %d",
                           r->path, magic[3], KILN_MAX_DIMS);
    unsigned char dims[4 * KILN_MAX_DIMS];
    st = read_exact(r, dims, 4 * (size_t)magic[3], "dimension sizes");
    if (st != KILN_OK)
        return st;
    out->type = magic[2];
    out->ndim = magic[3];
    for (int i = 0; i < out->ndim; i++) {
        const unsigned char *b = &dims[4 * i];
        out->dims[i]           = (int64_t)((uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 |
                                 (uint32_t)b[2] << 8 | b[3]);
    }
    /* Elements and bytes must both be representable (int64_t, size_t). */
    uint64_t limit = (uint64_t)(SIZE_MAX < INT64_MAX ? SIZE_MAX : INT64_MAX) / *elem;
    out->count     = 1;
    for (int i = 0; i < out->ndim; i++) {
        if (out->dims[i] && (uint64_t)out->count > limit / (uint64_t)out->dims[i]) {
            char s[KILN__SHAPE_STR];
            return kiln__error(KILN_ERR_IO,
                               "kiln_idx_read: %s: dimensions %s overflow: "
                               "more elements than memory can address",
                               r->path, kiln__shape_str(s, out->ndim, out->dims));
        }
        out->count *= out->dims[i];
    }
    return KILN_OK;
}

/* The elements, read into a buffer that grows as they arrive. */
static kiln_status read_data(reader *r, size_t nbytes, unsigned char **data)
{
    const size_t   first = (size_t)1 << 20;
    size_t         cap = nbytes < first ? nbytes : first, have = 0;
    unsigned char *buf = kiln__malloc(cap, "IDX data");
    if (!buf)
        return KILN_ERR_NO_MEMORY;
    kiln_status st = KILN_OK;
    while (have < nbytes) {
        if (have == cap) {
            size_t         grow  = cap > nbytes / 2 ? nbytes : 2 * cap;
            unsigned char *grown = realloc(buf, grow);
            if (!grown) {
                st = kiln__error(KILN_ERR_NO_MEMORY,
                                 "kiln_idx_read: out of memory: %zu "
                                 "bytes for the data of %s",
                                 grow, r->path);
                break;
            }
            buf = grown;
            cap = grow;
        }
        size_t got;
        st = read_some(r, buf + have, cap - have, &got);
        have += got;
        if (st == KILN_OK && have < cap)
            st = kiln__error(KILN_ERR_IO,
                             "kiln_idx_read: %s is truncated: its header "
                             "announces %zu bytes of data, the file has %zu",
                             r->path, nbytes, have);
        if (st != KILN_OK)
            break;
    }
    if (st != KILN_OK) {
        free(buf);
        return st;
    }
    *data = buf;
    return KILN_OK;
}

/* Big-endian elements to host order, in place. */
static void to_host(unsigned char *b, int64_t count, size_t elem)
{
    for (int64_t i = 0; i < count && elem > 1; i++, b += elem) {
        uint64_t v = 0;
        for (size_t k = 0; k < elem; k++)
            v = v << 8 | b[k];
        if (elem == 2) {
            uint16_t u = (uint16_t)v;
            memcpy(b, &u, 2);
        } else if (elem == 4) {
            uint32_t u = (uint32_t)v;
            memcpy(b, &u, 4);
        } else {
            memcpy(b, &v, 8);
        }
    }
}

static kiln_status read_idx(reader *r, kiln_idx *out)
{
    size_t      elem = 0;
    kiln_status st   = read_header(r, out, &elem);
    if (st != KILN_OK)
        return st;
    unsigned char *data;
    st = read_data(r, (size_t)out->count * elem, &data);
    if (st != KILN_OK)
        return st;
    unsigned char extra;
    size_t        got;
    st = read_some(r, &extra, 1, &got);
    if (st == KILN_OK && got) {
        char s[KILN__SHAPE_STR];
        st = kiln__error(KILN_ERR_IO,
                         "kiln_idx_read: %s has more data than its header "
                         "announces (%s of %zu-byte elements, %llu bytes in all)",
                         r->path, kiln__shape_str(s, out->ndim, out->dims), elem,
                         (unsigned long long)(r->offset - got));
    }
    if (st != KILN_OK) {
        free(data);
        return st;
    }
    to_host(data, out->count, elem);
    out->data = data;
    return KILN_OK;
}

KILN_API kiln_status kiln_idx_read(const char *path, kiln_idx *out)
{
    if (out)
        memset(out, 0, sizeof *out);
    if (!path || !out)
        return kiln__error(KILN_ERR_INVALID_ARG, "kiln_idx_read: %s is NULL",
                           path ? "out" : "path");
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return kiln__error(KILN_ERR_IO, "kiln_idx_read: cannot open %s: %s", path,
                           strerror(errno));
    reader r = {.path = path, .gz = gzdopen(fd, "rb")};
    if (!r.gz) {
        close(fd);
        return kiln__error(KILN_ERR_NO_MEMORY, "kiln_idx_read: out of memory opening %s",
                           path);
    }
    (void)gzbuffer(r.gz, 1 << 17); /* only a larger read size; the default works */
    kiln_status st = read_idx(&r, out);
    gzclose(r.gz);
    if (st != KILN_OK)
        memset(out, 0, sizeof *out);
    return st;
}

KILN_API void kiln_idx_free(kiln_idx *idx)
{
    if (!idx)
        return;
    free(idx->data);
    memset(idx, 0, sizeof *idx);
}
