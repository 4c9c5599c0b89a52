/* tests/test_idx.c — IDX files: every type, gzipped or not, and every error.
 *
 * The files are written here, byte by byte in big-endian order (and through
 * zlib for the gzipped ones), so what the reader must return is known
 * independently of it. When Debian's dataset-fashion-mnist is installed, the
 * real test set is read too.
 */
#include "child.h"

#include <criterion/criterion.h>
#include <kiln/kiln.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#define FASHION_MNIST "/usr/share/datasets/fashion-mnist"

#define PATH_LEN 4200

static char dir[4096];

static void make_dir(void)
{
    child_temp_dir(dir, sizeof dir);
}

static void remove_dir(void)
{
    child_remove_dir(dir);
}

TestSuite(idx, .init = make_dir, .fini = remove_dir);

/* dir/name; a static buffer per call site is enough for these tests. */
static const char *path_of(const char *name, char *buf, size_t len)
{
    snprintf(buf, len, "%s/%s", dir, name);
    return buf;
}

static void write_file(const char *path, const void *bytes, size_t n, bool gzip)
{
    if (gzip) {
        gzFile gz = gzopen(path, "wb");
        cr_assert_not_null(gz, "gzopen %s", path);
        cr_assert_eq(gzwrite(gz, bytes, (unsigned)n), (int)n, "gzwrite %s", path);
        cr_assert_eq(gzclose(gz), Z_OK, "gzclose %s", path);
        return;
    }
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f, "fopen %s", path);
    cr_assert_eq(fwrite(bytes, 1, n, f), n, "fwrite %s", path);
    cr_assert_eq(fclose(f), 0, "fclose %s", path);
}

/* An IDX header for `type` and dims, then `data` (already big-endian). */
static size_t idx_bytes(unsigned char *out, unsigned type, int ndim, const uint32_t *dims,
                        const void *data, size_t data_len)
{
    size_t n = 0;
    out[n++] = 0;
    out[n++] = 0;
    out[n++] = (unsigned char)type;
    out[n++] = (unsigned char)ndim;
    for (int i = 0; i < ndim; i++)
        for (int k = 3; k >= 0; k--)
            out[n++] = (unsigned char)(dims[i] >> (8 * k));
    memcpy(out + n, data, data_len);
    return n + data_len;
}

/* dir/name holding an IDX file of `type` and dims with `data` (big-endian). */
static const char *write_idx(const char *name, bool gzip, unsigned type, int ndim,
                             const uint32_t *dims, const void *data, size_t data_len)
{
    static char   path[PATH_LEN];
    unsigned char buf[4096];
    cr_assert_leq(4 + 4 * (size_t)ndim + data_len, sizeof buf);
    write_file(path_of(name, path, sizeof path), buf,
               idx_bytes(buf, type, ndim, dims, data, data_len), gzip);
    return path;
}

static void expect_read_error(const char *path, const char *a, const char *b)
{
    kiln_idx    idx;
    kiln_status st = kiln_idx_read(path, &idx);
    cr_assert_eq(st, KILN_ERR_IO, "reading %s gave %s, expected KILN_ERR_IO (%s)", path,
                 kiln_status_name(st), kiln_last_error());
    const char *e = kiln_last_error();
    cr_assert(strstr(e, path), "error \"%s\" does not name the file", e);
    cr_assert(strstr(e, a), "error \"%s\" does not mention \"%s\"", e, a);
    cr_assert(!b || strstr(e, b), "error \"%s\" does not mention \"%s\"", e, b);
    cr_assert_null(idx.data, "a failed read left data behind");
    cr_assert_eq(idx.count, 0);
    kiln_idx_free(&idx); /* safe on what a failed read leaves */
}

static void expect_u8_images(const char *path)
{
    kiln_idx idx;
    cr_assert_eq(kiln_idx_read(path, &idx), KILN_OK, "%s", kiln_last_error());
    cr_assert_eq(idx.type, 0x08);
    cr_assert_eq(idx.ndim, 3);
    cr_assert(idx.dims[0] == 2 && idx.dims[1] == 3 && idx.dims[2] == 4,
              "dims %lld %lld "
              "%lld",
              (long long)idx.dims[0], (long long)idx.dims[1], (long long)idx.dims[2]);
    cr_assert_eq(idx.count, 24);
    const uint8_t *v = idx.data;
    for (int i = 0; i < 24; i++)
        cr_assert_eq(v[i], 10 * i, "element %d is %d, expected %d", i, v[i], 10 * i);
    kiln_idx_free(&idx);
    cr_assert_null(idx.data, "kiln_idx_free leaves data");
}

/* Images [2, 3, 4] of u8 0, 10, 20, ... */
static const char *write_u8_images(const char *name, bool gzip)
{
    uint8_t data[24];
    for (int i = 0; i < 24; i++)
        data[i] = (uint8_t)(10 * i);
    return write_idx(name, gzip, 0x08, 3, (const uint32_t[]){2, 3, 4}, data, sizeof data);
}

Test(idx, reads_u8_images_with_their_dimensions)
{
    expect_u8_images(write_u8_images("images", false));
}

Test(idx, reads_a_gzipped_file_like_a_plain_one)
{
    expect_u8_images(write_u8_images("images.gz", true));
}

Test(idx, detects_gzip_by_content_not_by_name)
{
    expect_u8_images(write_u8_images("gzipped-without-suffix", true));
    expect_u8_images(write_u8_images("plain-with-suffix.gz", false));
}

/* One element of each type, big-endian in the file, native after reading. */
Test(idx, converts_every_type_to_host_byte_order)
{
    static const struct {
        unsigned      type;
        unsigned char be[8];
        size_t        size;
    } cases[] = {
        {0x08, {0xFE}, 1},
        {0x09, {0xFB}, 1},                                           /* -5 */
        {0x0B, {0xFE, 0xD4}, 2},                                     /* -300 */
        {0x0C, {0xFF, 0xFE, 0xEE, 0x90}, 4},                         /* -70000 */
        {0x0D, {0xC0, 0x10, 0x00, 0x00}, 4},                         /* -2.25f */
        {0x0E, {0x40, 0x09, 0x21, 0xFB, 0x54, 0x44, 0x2D, 0x18}, 8}, /* pi */
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        unsigned char twice[16];
        char          name[32];
        memcpy(twice, cases[c].be, cases[c].size);
        memcpy(twice + cases[c].size, cases[c].be, cases[c].size);
        snprintf(name, sizeof name, "type-%02x", cases[c].type);
        const char *p = write_idx(name, c % 2 == 1, cases[c].type, 1,
                                  (const uint32_t[]){2}, twice, 2 * cases[c].size);
        kiln_idx    idx;
        cr_assert_eq(kiln_idx_read(p, &idx), KILN_OK, "%s", kiln_last_error());
        cr_assert_eq(idx.type, cases[c].type);
        cr_assert_eq(idx.count, 2);
        switch (cases[c].type) {
        case 0x08: cr_assert_eq(((uint8_t *)idx.data)[1], 254); break;
        case 0x09: cr_assert_eq(((int8_t *)idx.data)[1], -5); break;
        case 0x0B: cr_assert_eq(((int16_t *)idx.data)[1], -300); break;
        case 0x0C: cr_assert_eq(((int32_t *)idx.data)[1], -70000); break;
        case 0x0D: cr_assert_eq(((float *)idx.data)[1], -2.25f); break;
        case 0x0E: cr_assert_eq(((double *)idx.data)[1], 3.141592653589793); break;
        }
        kiln_idx_free(&idx);
    }
}

Test(idx, reads_an_empty_tensor)
{
    const char *p = write_idx("empty", false, 0x08, 2, (const uint32_t[]){0, 28}, "", 0);
    kiln_idx    idx;
    cr_assert_eq(kiln_idx_read(p, &idx), KILN_OK, "%s", kiln_last_error());
    cr_assert_eq(idx.count, 0);
    cr_assert_eq(idx.dims[1], 28);
    kiln_idx_free(&idx);
}

Test(idx, bad_magic_shows_the_bytes_found)
{
    char p[PATH_LEN];
    write_file(path_of("bad-magic", p, sizeof p), "\x01\x02\x08\x01\0\0\0\0", 8, false);
    expect_read_error(p, "bad magic", "01 02 08 01");
}

Test(idx, unknown_type_code_is_named)
{
    expect_read_error(write_idx("type-0a", false, 0x0A, 1, (const uint32_t[]){1}, "x", 1),
                      "unknown type code 0x0a", NULL);
}

Test(idx, truncated_data_says_expected_and_got)
{
    expect_read_error(write_idx("short", false, 0x0C, 2, (const uint32_t[]){2, 5},
                                "0123456789abc", 13),
                      "truncated", "announces 40 bytes of data, the file has 13");
}

Test(idx, truncated_gzip_stream_is_truncated)
{
    char    p[PATH_LEN];
    uint8_t data[2000];
    for (size_t i = 0; i < sizeof data; i++)
        data[i] = (uint8_t)(i * 7919 % 251);
    size_t packed_len;
    char  *packed = child_read_file(write_idx("whole.gz", true, 0x08, 1,
                                              (const uint32_t[]){2000}, data, sizeof data),
                                    &packed_len);
    write_file(path_of("cut.gz", p, sizeof p), packed, packed_len / 2, false);
    free(packed);
    expect_read_error(p, "truncated", NULL);
}

Test(idx, truncated_header_says_expected_and_got)
{
    char p[PATH_LEN];
    write_file(path_of("two-bytes", p, sizeof p), "\0\0", 2, false);
    expect_read_error(p, "expected 4 bytes of magic number", "got 2");
    write_file(path_of("half-dims", p, sizeof p), "\0\0\x08\x02\0\0\0\x05\0\0", 10,
               false);
    expect_read_error(p, "expected 8 bytes of dimension sizes", "got 6");
}

Test(idx, more_dimensions_than_kiln_has_is_an_error)
{
    expect_read_error(write_idx("five-dims", false, 0x08, 5,
                                (const uint32_t[]){1, 1, 1, 1, 1}, "x", 1),
                      "has 5 dimensions", "at most 4");
}

Test(idx, dimensions_that_overflow_are_an_error)
{
    expect_read_error(write_idx("huge", false, 0x0E, 4,
                                (const uint32_t[]){0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 2},
                                "x", 1),
                      "overflow", "[4294967295, 4294967295, 4294967295, 2]");
}

Test(idx, a_huge_claim_in_a_small_file_is_truncated_not_out_of_memory)
{
    expect_read_error(write_idx("claims-16-GiB", false, 0x0E, 2,
                                (const uint32_t[]){0x40000000, 2}, "12345678", 8),
                      "truncated", "the file has 8");
}

Test(idx, data_after_the_elements_is_an_error_counting_the_bytes)
{
    expect_read_error(write_idx("long", false, 0x08, 1, (const uint32_t[]){3}, "abcdef",
                                6),
                      "more data than its header announces", "then 3 bytes more");
    expect_read_error(write_idx("long.gz", true, 0x08, 1, (const uint32_t[]){3}, "abcd",
                                4),
                      "more data than its header announces", "then 1 byte more");
}

/* The gzip file of images [2, 3, 4] (write_u8_images), read whole. */
static char *u8_images_gz(size_t *len)
{
    return child_read_file(write_u8_images("images.gz", true), len);
}

/* dir/name holding `a` (a_len bytes) and then `b`. */
static const char *write_two(const char *name, const void *a, size_t a_len, const void *b,
                             size_t b_len)
{
    static char path[PATH_LEN];
    char       *both = malloc(a_len + b_len);
    cr_assert_not_null(both);
    memcpy(both, a, a_len);
    memcpy(both + a_len, b, b_len);
    write_file(path_of(name, path, sizeof path), both, a_len + b_len, false);
    free(both);
    return path;
}

/* gzread stops at the end of a gzip stream and ignores what follows it, so
 * a file with something appended read as whole. */
Test(idx, bytes_after_the_gzip_stream_are_refused_and_counted)
{
    size_t      len;
    char       *gz = u8_images_gz(&len);
    const char *p  = write_two("appended.gz", gz, len, "garbage", 7);
    char        at[64];
    snprintf(at, sizeof at, "7 bytes after its gzip stream, which ends at byte %zu", len);
    expect_read_error(p, at, "another gzip member");
    p = write_two("zero-padded.gz", gz, len, "\0\0\0\0\0\0\0\0", 8);
    expect_read_error(p, "8 bytes after its gzip stream", NULL);
    p = write_two("half-a-magic.gz", gz, len, "\x1f", 1);
    expect_read_error(p, "1 byte after its gzip stream", NULL);
    free(gz);
}

/* gzip -d reads a file of several members (cat a.gz b.gz) as their
 * contents one after the other; so does kiln. */
Test(idx, gzip_members_one_after_another_are_read_as_one_stream)
{
    uint8_t       data[24];
    unsigned char whole[64];
    char          first[PATH_LEN], second[PATH_LEN];
    for (int i = 0; i < 24; i++)
        data[i] = (uint8_t)(10 * i);
    size_t n = idx_bytes(whole, 0x08, 3, (const uint32_t[]){2, 3, 4}, data, sizeof data);
    write_file(path_of("first.gz", first, sizeof first), whole, 10, true);
    write_file(path_of("second.gz", second, sizeof second), whole + 10, n - 10, true);
    size_t a_len, b_len;
    char  *a = child_read_file(first, &a_len), *b = child_read_file(second, &b_len);
    expect_u8_images(write_two("members.gz", a, a_len, b, b_len));
    free(a);
    free(b);
}

/* The IDX data can end before the gzip stream does: a stream cut in its
 * 8-byte trailer (CRC-32 and length) holds all the data, but not whole. */
Test(idx, a_gzip_stream_cut_in_its_trailer_is_truncated)
{
    size_t      len;
    char       *gz = u8_images_gz(&len);
    const char *p  = write_two("no-trailer.gz", gz, len - 4, "", 0);
    expect_read_error(p, "truncated", "gzip stream");
    free(gz);
}

Test(idx, a_gzip_stream_with_a_wrong_checksum_is_refused)
{
    size_t len;
    char  *gz = u8_images_gz(&len);
    gz[len - 8] ^= 0x55; /* the CRC-32 of the trailer */
    expect_read_error(write_two("bad-crc.gz", gz, len, "", 0), "incorrect data check",
                      NULL);
    free(gz);
}

/* A FIFO would block the reader forever; it, a folder and a device are
 * refused by what they are before anything is read. */
Test(idx, what_is_not_a_regular_file_is_refused_before_any_read, .timeout = 20)
{
    char p[PATH_LEN];
    cr_assert_eq(mkfifo(path_of("fifo", p, sizeof p), 0600), 0, "mkfifo %s", p);
    expect_read_error(p, "is a FIFO", "expected a regular file");
    expect_read_error(dir, "is a directory", "expected a regular file");
    expect_read_error("/dev/null", "is a character device", "expected a regular file");
}

Test(idx, a_missing_file_names_the_path_and_the_reason)
{
    char p[PATH_LEN];
    expect_read_error(path_of("no-such-file", p, sizeof p), "cannot open",
                      "No such file");
}

Test(idx, null_arguments_are_refused)
{
    kiln_idx idx;
    cr_assert_eq(kiln_idx_read(NULL, &idx), KILN_ERR_INVALID_ARG);
    cr_assert_eq(kiln_idx_read("x", NULL), KILN_ERR_INVALID_ARG);
    kiln_idx_free(NULL);
}

/* ---- the real data set, when installed ------------------------------------------ */

static void read_fashion(const char *name, kiln_idx *idx)
{
    char p[256];
    snprintf(p, sizeof p, "%s/%s", FASHION_MNIST, name);
    if (access(p, R_OK) != 0)
        cr_skip_test("%s is not installed (Debian package dataset-fashion-mnist)", p);
    cr_assert_eq(kiln_idx_read(p, idx), KILN_OK, "%s", kiln_last_error());
}

Test(fashion_mnist, test_images_are_10000_of_28x28_u8)
{
    kiln_idx idx;
    read_fashion("t10k-images-idx3-ubyte.gz", &idx);
    cr_assert_eq(idx.type, 0x08);
    cr_assert_eq(idx.ndim, 3);
    cr_assert(idx.dims[0] == 10000 && idx.dims[1] == 28 && idx.dims[2] == 28,
              "dims [%lld, %lld, %lld]", (long long)idx.dims[0], (long long)idx.dims[1],
              (long long)idx.dims[2]);
    cr_assert_eq(idx.count, 10000 * 28 * 28);
    const uint8_t *v   = idx.data;
    int            max = 0;
    for (int64_t i = 0; i < idx.count; i++)
        max = v[i] > max ? v[i] : max;
    cr_assert_eq(max, 255, "no pixel is 255: the data does not look like images");
    kiln_idx_free(&idx);
}

Test(fashion_mnist, test_labels_are_1000_of_each_class)
{
    kiln_idx idx;
    read_fashion("t10k-labels-idx1-ubyte.gz", &idx);
    cr_assert_eq(idx.type, 0x08);
    cr_assert_eq(idx.ndim, 1);
    cr_assert_eq(idx.dims[0], 10000);
    int            per_class[10] = {0};
    const uint8_t *v             = idx.data;
    for (int64_t i = 0; i < idx.count; i++) {
        cr_assert_lt(v[i], 10, "label %lld is %d, expected 0 to 9", (long long)i, v[i]);
        per_class[v[i]]++;
    }
    for (int c = 0; c < 10; c++)
        cr_assert_eq(per_class[c], 1000, "class %d has %d test images", c, per_class[c]);
    kiln_idx_free(&idx);
}
