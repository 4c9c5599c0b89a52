/* core/formats/idx.c — IDX files, the format of MNIST and Fashion-MNIST.
 *
 * A file is the magic 0x00 0x00 <type> <ndim>, ndim big-endian u32 sizes, then
 * the elements, big-endian, row-major. A file that starts with the gzip magic
 * 0x1f 0x8b is inflated (zlib), any other is read as it is, so a ".gz" and a
 * plain file take the same path. The buffer grows as data arrives rather than
 * trusting the header's size up front, so a short file that claims to be huge
 * fails as truncated without a huge allocation first.
 *
 * A file must hold exactly what its header announces: bytes left over after
 * the elements are refused, whether they are in the file or in the gzip
 * stream. A gzip file may hold several members one after another (as
 * `cat a.gz b.gz` makes, and as gzip -d reads): their contents are read as
 * one stream. After the last member nothing may follow: zlib's gzread skips
 * such trailing bytes silently, which is why inflate is driven here, so that
 * they are refused and counted. Every gzip member's checksum and length are
 * checked, so a stream cut in its trailer is truncated, not accepted.
 *
 * The file is opened with kiln__open_regular: a FIFO, a device or a folder
 * is refused before any read.
 */
#include "../kiln-impl.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

/* Bytes read from the file at a time. */
#define IN_SIZE ((size_t)1 << 17)

/* Bytes after the elements are counted up to this many, then "or more". */
#define EXTRA_COUNT_MAX ((uint64_t)1 << 20)

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
    const char    *path;
    int            fd;
    uint64_t       size;   /* of the file, when it was opened               */
    uint64_t       offset; /* bytes delivered so far (after decompression)  */
    bool           gzip;
    bool           eof;  /* the file has no more bytes to give             */
    bool           done; /* gzip: the last member ended, nothing follows   */
    z_stream       z;    /* next_in/avail_in: read, not yet consumed bytes */
    unsigned char *in;   /* IN_SIZE bytes                                  */
} reader;

/* Up to n bytes of the file into buf, fewer only at its end (then r->eof). */
static kiln_status read_file(reader *r, unsigned char *buf, size_t n, size_t *got)
{
    *got = 0;
    while (*got < n && !r->eof) {
        ssize_t k = read(r->fd, buf + *got, n - *got);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0)
            return kiln__error(KILN_ERR_IO, "kiln_idx_read: reading %s: %s", r->path,
                               strerror(errno));
        r->eof = k == 0;
        *got += (size_t)k;
    }
    return KILN_OK;
}

/* More bytes of the file after the avail_in pending ones, as many as the
 * buffer holds, or the rest of the file. */
static kiln_status fill(reader *r)
{
    if (r->z.avail_in && r->z.next_in != r->in)
        memmove(r->in, r->z.next_in, r->z.avail_in);
    r->z.next_in = r->in;
    size_t      got;
    kiln_status st = read_file(r, r->in + r->z.avail_in, IN_SIZE - r->z.avail_in, &got);
    r->z.avail_in += (uInt)got;
    return st;
}

/* The file byte at which the pending input starts. */
static uint64_t file_at(const reader *r)
{
    return (uint64_t)lseek(r->fd, 0, SEEK_CUR) - r->z.avail_in;
}

/* A gzip member has ended: another may follow, else nothing may. */
static kiln_status member_end(reader *r)
{
    kiln_status st = fill(r);
    if (st != KILN_OK)
        return st;
    if (r->z.avail_in == 0) {
        r->done = true;
        return KILN_OK;
    }
    if (r->z.avail_in >= 2 && r->z.next_in[0] == 0x1f && r->z.next_in[1] == 0x8b) {
        if (inflateReset(&r->z) != Z_OK)
            return kiln__error(KILN_ERR_IO, "kiln_idx_read: reading %s: %s", r->path,
                               r->z.msg ? r->z.msg : "inflateReset failed");
        return KILN_OK;
    }
    uint64_t end = file_at(r), extra = r->size > end ? r->size - end : r->z.avail_in;
    return kiln__error(KILN_ERR_IO,
                       "kiln_idx_read: %s has %llu byte%s after its gzip stream, which "
                       "ends at byte %llu; expected the end of the file or another gzip "
                       "member (0x1f 0x8b)",
                       r->path, (unsigned long long)extra, extra == 1 ? "" : "s",
                       (unsigned long long)end);
}

/* Up to n inflated bytes into buf; fewer only at the end of the stream. */
static kiln_status inflate_some(reader *r, void *buf, size_t n, size_t *got)
{
    r->z.next_out  = buf;
    r->z.avail_out = (uInt)n;
    kiln_status st = KILN_OK;
    while (st == KILN_OK && r->z.avail_out > 0 && !r->done) {
        if (r->z.avail_in == 0 && (st = fill(r)) != KILN_OK)
            break;
        int ret = inflate(&r->z, Z_NO_FLUSH);
        if (ret == Z_STREAM_END)
            st = member_end(r);
        else if (ret == Z_BUF_ERROR && r->z.avail_in == 0 && r->eof)
            st = kiln__error(KILN_ERR_IO,
                             "kiln_idx_read: %s is truncated: its gzip stream ends "
                             "early, after %llu bytes of data",
                             r->path,
                             (unsigned long long)(r->offset + n - r->z.avail_out));
        else if (ret == Z_MEM_ERROR)
            st = kiln__error(KILN_ERR_NO_MEMORY,
                             "kiln_idx_read: out of memory inflating %s", r->path);
        else if (ret != Z_OK && ret != Z_BUF_ERROR)
            st = kiln__error(KILN_ERR_IO, "kiln_idx_read: reading %s: %s", r->path,
                             r->z.msg ? r->z.msg : zError(ret));
    }
    *got = n - r->z.avail_out;
    return st;
}

/* Up to n bytes of a plain file into buf: the pending ones, then the file's. */
static kiln_status read_plain(reader *r, void *buf, size_t n, size_t *got)
{
    size_t pending = r->z.avail_in < n ? r->z.avail_in : n, k;
    memcpy(buf, r->z.next_in, pending);
    r->z.next_in += pending;
    r->z.avail_in -= (uInt)pending;
    kiln_status st = read_file(r, (unsigned char *)buf + pending, n - pending, &k);
    *got           = pending + k;
    return st;
}

/* Reads up to n bytes; *got says how many, fewer only at the end of the
 * data. An error other than the end is reported. */
static kiln_status read_some(reader *r, void *buf, size_t n, size_t *got)
{
    *got = 0;
    while (*got < n) {
        size_t      chunk = n - *got < UINT_MAX ? n - *got : UINT_MAX, k;
        kiln_status st    = r->gzip ? inflate_some(r, (char *)buf + *got, chunk, &k)
                                    : read_plain(r, (char *)buf + *got, chunk, &k);
        *got += k;
        r->offset += k;
        if (st != KILN_OK)
            return st;
        if (k < chunk)
            break;
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

/* Nothing may follow the elements; what does is counted, up to
 * EXTRA_COUNT_MAX. */
static kiln_status check_end(reader *r, const kiln_idx *out, size_t elem)
{
    unsigned char scratch[4096];
    uint64_t      at = r->offset, extra = 0;
    size_t        got;
    kiln_status   st;
    do {
        st = read_some(r, scratch, sizeof scratch, &got);
        extra += got;
    } while (st == KILN_OK && got == sizeof scratch && extra < EXTRA_COUNT_MAX);
    if (st != KILN_OK || extra == 0)
        return st;
    char s[KILN__SHAPE_STR];
    return kiln__error(KILN_ERR_IO,
                       "kiln_idx_read: %s has more data than its header announces (%s "
                       "of %zu-byte elements, %llu bytes in all), then %llu byte%s "
                       "more%s",
                       r->path, kiln__shape_str(s, out->ndim, out->dims), elem,
                       (unsigned long long)at, (unsigned long long)extra,
                       extra == 1 ? "" : "s", got == sizeof scratch ? " or more" : "");
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
    st = check_end(r, out, elem);
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
    reader      r  = {.path = path};
    kiln_status st = kiln__open_regular(path, "IDX file", &r.fd, &r.size);
    if (st != KILN_OK)
        return kiln__error(st, "kiln_idx_read: %s", kiln_last_error());
    r.in   = kiln__malloc(IN_SIZE, "the input buffer of an IDX file");
    st     = r.in ? fill(&r) : KILN_ERR_NO_MEMORY;
    r.gzip = st == KILN_OK && r.z.avail_in >= 2 && r.in[0] == 0x1f && r.in[1] == 0x8b;
    if (r.gzip && inflateInit2(&r.z, 16 + MAX_WBITS) != Z_OK) {
        r.gzip = false;
        st = kiln__error(KILN_ERR_NO_MEMORY, "kiln_idx_read: out of memory to inflate %s",
                         path);
    }
    if (st == KILN_OK)
        st = read_idx(&r, out);
    if (r.gzip)
        inflateEnd(&r.z);
    free(r.in);
    close(r.fd);
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
