/* cache.c — built programs on disk, so that a second process does not pay
 * the OpenCL C compiler again.
 *
 * An entry is one file named after a hash of its key (program.c makes the
 * key from the kernel source, build options, device, driver and platform
 * versions). The file repeats the whole key and a checksum of the binary,
 * so a file that is truncated, corrupt or left by another key is recognised,
 * deleted and rebuilt, never trusted:
 *
 *   "KILNCLP\n"  u32 format  u32 key length  key  u64 size  u64 FNV-1a  binary
 *
 * Entries are written to a temporary file in the same folder and renamed
 * into place, so a reader sees a whole entry or none, even with two
 * processes filling the cache at once. Nothing here is fatal: a cache that
 * cannot be read or written only costs a rebuild.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ocl-impl.h"

#define OCL_CACHE_MAGIC  "KILNCLP\n"
#define OCL_CACHE_FORMAT 1u
#define OCL_HEADER_SIZE  (8 + 4 + 4)

uint64_t ocl_fnv1a(uint64_t h, const void *data, size_t n)
{
    const unsigned char *p = data;
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

bool ocl_cache_dir(char *dir, size_t len)
{
    const char *env = getenv("KILN_CACHE_DIR");
    int         n;
    if (env && *env) {
        if (strcmp(env, "off") == 0)
            return false;
        n = snprintf(dir, len, "%s", env);
    } else if ((env = getenv("XDG_CACHE_HOME")) && env[0] == '/') {
        n = snprintf(dir, len, "%s/kiln", env);
    } else if ((env = getenv("HOME")) && *env) {
        n = snprintf(dir, len, "%s/.cache/kiln", env);
    } else {
        return false;
    }
    return n > 0 && (size_t)n < len;
}

/* mkdir -p, for the folders the user's cache path names. */
static bool make_dirs(const char *dir)
{
    char path[4096];
    if (snprintf(path, sizeof path, "%s", dir) >= (int)sizeof path)
        return false;
    for (char *p = path + 1;; p++) {
        if (*p != '/' && *p != '\0')
            continue;
        char c = *p;
        *p     = '\0';
        if (mkdir(path, 0755) != 0 && errno != EEXIST)
            return false;
        if (c == '\0')
            return true;
        *p = c;
    }
}

static void put_u32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static void put_u64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static uint64_t get_le(const unsigned char *p, int bytes)
{
    uint64_t v = 0;
    for (int i = bytes - 1; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

/* The whole file, malloc'd; NULL with errno set. */
static unsigned char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    unsigned char *buf = NULL;
    struct stat    st;
    if (fstat(fileno(f), &st) == 0 && st.st_size >= 0 &&
        (uint64_t)st.st_size < SIZE_MAX) {
        *len = (size_t)st.st_size;
        buf  = malloc(*len ? *len : 1);
        if (buf && fread(buf, 1, *len, f) != *len) {
            free(buf);
            buf   = NULL;
            errno = EIO;
        }
    }
    fclose(f);
    return buf;
}

/* Why the file does not hold a valid entry for key, or NULL if it does;
 * then *data and *size locate the binary inside buf. */
static const char *check_entry(const unsigned char *buf, size_t len, const char *key,
                               const unsigned char **data, size_t *size)
{
    size_t key_len = strlen(key);
    if (len < OCL_HEADER_SIZE || memcmp(buf, OCL_CACHE_MAGIC, 8) != 0)
        return "not a kiln program cache file";
    if (get_le(buf + 8, 4) != OCL_CACHE_FORMAT)
        return "written in another cache format";
    uint64_t stored_key = get_le(buf + 12, 4);
    if (stored_key > len - OCL_HEADER_SIZE)
        return "truncated in its key";
    if (stored_key != key_len || memcmp(buf + OCL_HEADER_SIZE, key, key_len) != 0)
        return "stale: built for another source, device, driver or option set";
    size_t at = OCL_HEADER_SIZE + key_len;
    if (len - at < 16)
        return "truncated before its binary";
    uint64_t n = get_le(buf + at, 8), sum = get_le(buf + at + 8, 8);
    at += 16;
    if (n != len - at)
        return "truncated: its size does not match its header";
    if (n == 0 || ocl_fnv1a(OCL_FNV_SEED, buf + at, (size_t)n) != sum)
        return "corrupt: its checksum does not match";
    *data = buf + at;
    *size = (size_t)n;
    return NULL;
}

ocl_cache_result ocl_cache_load(const char *path, const char *key, unsigned char **data,
                                size_t *len, char *why, size_t why_len)
{
    size_t         file_len = 0;
    unsigned char *buf      = read_file(path, &file_len);
    if (!buf) {
        if (errno == ENOENT)
            return OCL_CACHE_MISS;
        snprintf(why, why_len, "unreadable: %s", strerror(errno));
        return OCL_CACHE_MISS;
    }
    const unsigned char *bin  = NULL;
    size_t               size = 0;
    const char          *bad  = check_entry(buf, file_len, key, &bin, &size);
    if (bad) {
        snprintf(why, why_len, "%s", bad);
        free(buf);
        unlink(path);
        return OCL_CACHE_BAD;
    }
    memmove(buf, bin, size);
    *data = buf;
    *len  = size;
    return OCL_CACHE_HIT;
}

static bool write_all(int fd, const void *data, size_t len)
{
    const unsigned char *p = data;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return false;
        p += n;
        len -= (size_t)n;
    }
    return true;
}

bool ocl_cache_store(const char *dir, const char *path, const char *key,
                     const unsigned char *data, size_t len, char *why, size_t why_len)
{
    static unsigned serial; /* distinct temp names within this process */
    char            tmp[4096];
    size_t          key_len = strlen(key);
    unsigned char   head[OCL_HEADER_SIZE], tail[16];
    memcpy(head, OCL_CACHE_MAGIC, 8);
    put_u32(head + 8, OCL_CACHE_FORMAT);
    put_u32(head + 12, (uint32_t)key_len);
    put_u64(tail, len);
    put_u64(tail + 8, ocl_fnv1a(OCL_FNV_SEED, data, len));

    if (!make_dirs(dir)) {
        snprintf(why, why_len, "cannot create %s: %s", dir, strerror(errno));
        return false;
    }
    if (snprintf(tmp, sizeof tmp, "%s.tmp.%ld.%u", path, (long)getpid(),
                 __atomic_fetch_add(&serial, 1, __ATOMIC_RELAXED)) >= (int)sizeof tmp) {
        snprintf(why, why_len, "the path is too long");
        return false;
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL, 0644);
    if (fd < 0) {
        snprintf(why, why_len, "cannot create %s: %s", tmp, strerror(errno));
        return false;
    }
    bool ok = write_all(fd, head, sizeof head) && write_all(fd, key, key_len) &&
              write_all(fd, tail, sizeof tail) && write_all(fd, data, len);
    int saved = errno;
    ok        = close(fd) == 0 && ok;
    if (ok && rename(tmp, path) == 0)
        return true;
    snprintf(why, why_len, "cannot write %s: %s", tmp, strerror(ok ? errno : saved));
    unlink(tmp);
    return false;
}
