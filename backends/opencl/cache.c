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
 *
 * An entry is read in steps, each checked before the next is read: the
 * header, the key (its length first), the binary's size (against the file
 * and OCL_CACHE_MAX), and only then the binary, so a damaged or hostile
 * file costs at most what a real entry would. What is not a regular file
 * (a FIFO would block the reader forever) is refused before it is opened
 * for a blocking read: the check of core's kiln__open_regular, which a
 * plugin cannot call.
 *
 * The folder must be an absolute path: a relative one would be taken from
 * whatever the working directory is when a program runs, so binaries built
 * in one folder would be loaded from another. A relative KILN_CACHE_DIR or
 * HOME turns the cache off, with a warning; a relative XDG_CACHE_HOME is
 * ignored, as the XDG base directory specification says, for $HOME/.cache.
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

/* The largest binary kept: 64 MiB. kiln's kernels build to under 1 MiB on
 * POCL and a few MiB on GPU drivers. */
#define OCL_CACHE_MAX ((uint64_t)64 << 20)

uint64_t ocl_fnv1a(uint64_t h, const void *data, size_t n)
{
    const unsigned char *p = data;
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

/* Appends a sentence to why. */
static void say(char *why, size_t why_len, const char *name, const char *value,
                const char *then)
{
    size_t n = strlen(why);
    snprintf(why + n, why_len - n, "%s%s=%s is not an absolute path: %s", n ? "; " : "",
             name, value, then);
}

bool ocl_cache_dir(char *dir, size_t len, char *why, size_t why_len)
{
    const char *env = getenv("KILN_CACHE_DIR"), *home = getenv("HOME");
    int         n;
    why[0] = '\0';
    if (env && *env) {
        if (strcmp(env, "off") == 0)
            return false;
        if (env[0] != '/') {
            say(why, why_len, "KILN_CACHE_DIR", env, "the program cache is off");
            return false;
        }
        n = snprintf(dir, len, "%s", env);
    } else if ((env = getenv("XDG_CACHE_HOME")) && env[0] == '/') {
        n = snprintf(dir, len, "%s/kiln", env);
    } else {
        if (env && *env)
            say(why, why_len, "XDG_CACHE_HOME", env,
                "ignored, as the XDG base directory specification says; $HOME/.cache "
                "is used");
        if (!home || !*home)
            return false;
        if (home[0] != '/') {
            say(why, why_len, "HOME", home, "the program cache is off");
            return false;
        }
        n = snprintf(dir, len, "%s/.cache/kiln", home);
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

/* Reads n bytes; false with errno set (EIO at a short file). */
static bool read_all(int fd, void *buf, size_t n)
{
    unsigned char *p = buf;
    while (n > 0) {
        ssize_t k = read(fd, p, n);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0) {
            errno = k == 0 ? EIO : errno;
            return false;
        }
        p += k;
        n -= (size_t)k;
    }
    return true;
}

/* "a FIFO", "a directory", ... for a file that is not a regular one. */
static const char *file_kind(mode_t mode)
{
    switch (mode & S_IFMT) {
    case S_IFDIR: return "a directory";
    case S_IFIFO: return "a FIFO";
    case S_IFCHR: return "a character device";
    case S_IFBLK: return "a block device";
    case S_IFSOCK: return "a socket";
    default: return "not a regular file";
    }
}

/* Opens an entry to read, if it is a regular file: checked by stat before
 * it is opened, and by fstat of what was opened; the open never blocks
 * (O_NONBLOCK, cleared once the file is known to be regular). -1 with errno
 * set if it cannot be opened, -2 with *st describing what is there if it is
 * not a regular file. */
static int open_entry(const char *path, struct stat *st)
{
    if (stat(path, st) != 0)
        return -1;
    if (!S_ISREG(st->st_mode))
        return -2;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0)
        return -1;
    int flags = fcntl(fd, F_GETFL);
    if (fstat(fd, st) != 0 || flags < 0 || fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    if (!S_ISREG(st->st_mode)) {
        close(fd);
        return -2;
    }
    return fd;
}

/* Whether the next n bytes of fd are key's. */
static bool same_key(int fd, const char *key, size_t n)
{
    char chunk[256];
    for (size_t at = 0; at < n; at += sizeof chunk) {
        size_t k = n - at < sizeof chunk ? n - at : sizeof chunk;
        if (!read_all(fd, chunk, k) || memcmp(chunk, key + at, k) != 0)
            return false;
    }
    return true;
}

/* Why the open file of `size` bytes does not hold a valid entry for key (in
 * why, when it needs numbers), or NULL if it does: then *data (malloc'd)
 * and *len hold the binary. */
static const char *read_entry(int fd, uint64_t size, const char *key,
                              unsigned char **data, size_t *len, char *why,
                              size_t why_len)
{
    unsigned char head[OCL_HEADER_SIZE], tail[16];
    size_t        key_len = strlen(key);
    if (size < OCL_HEADER_SIZE || !read_all(fd, head, sizeof head) ||
        memcmp(head, OCL_CACHE_MAGIC, 8) != 0)
        return "not a kiln program cache file";
    if (get_le(head + 8, 4) != OCL_CACHE_FORMAT)
        return "written in another cache format";
    uint64_t stored_key = get_le(head + 12, 4);
    if (stored_key > size - OCL_HEADER_SIZE)
        return "truncated in its key";
    if (stored_key != key_len || !same_key(fd, key, key_len))
        return "stale: built for another source, device, driver or option set";
    uint64_t at = OCL_HEADER_SIZE + key_len;
    if (size - at < 16 || !read_all(fd, tail, sizeof tail))
        return "truncated before its binary";
    uint64_t n = get_le(tail, 8), sum = get_le(tail + 8, 8);
    at += 16;
    if (n > OCL_CACHE_MAX) {
        snprintf(why, why_len,
                 "its header claims a binary of %llu bytes, more than the %llu "
                 "(64 MiB) the cache keeps",
                 (unsigned long long)n, (unsigned long long)OCL_CACHE_MAX);
        return why;
    }
    if (n != size - at)
        return "truncated: its size does not match its header";
    if (n == 0)
        return "corrupt: an empty binary";
    unsigned char *bin = malloc((size_t)n);
    if (!bin) {
        snprintf(why, why_len, "out of memory for its binary of %llu bytes",
                 (unsigned long long)n);
        return why;
    }
    if (!read_all(fd, bin, (size_t)n) || ocl_fnv1a(OCL_FNV_SEED, bin, (size_t)n) != sum) {
        free(bin);
        return "corrupt: its checksum does not match";
    }
    *data = bin;
    *len  = (size_t)n;
    return NULL;
}

ocl_cache_result ocl_cache_load(const char *path, const char *key, unsigned char **data,
                                size_t *len, char *why, size_t why_len)
{
    struct stat st;
    int         fd = open_entry(path, &st);
    if (fd == -1) {
        if (errno != ENOENT)
            snprintf(why, why_len, "unreadable: %s", strerror(errno));
        return OCL_CACHE_MISS;
    }
    if (fd == -2) {
        /* A FIFO, a device or a socket is deleted like any bad entry; a
         * folder cannot be, and is only not used. */
        const char *kind = file_kind(st.st_mode);
        if (unlink(path) == 0) {
            snprintf(why, why_len, "%s, not a regular file", kind);
            return OCL_CACHE_BAD;
        }
        snprintf(why, why_len, "%s, not a regular file, is in its place (not used)",
                 kind);
        return OCL_CACHE_MISS;
    }
    char        detail[160];
    const char *bad = read_entry(fd, (uint64_t)st.st_size, key, data, len, detail,
                                 sizeof detail);
    close(fd);
    if (!bad)
        return OCL_CACHE_HIT;
    snprintf(why, why_len, "%s", bad);
    unlink(path);
    return OCL_CACHE_BAD;
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
    if ((uint64_t)len > OCL_CACHE_MAX) {
        snprintf(why, why_len,
                 "the binary is %zu bytes, more than the %llu (64 MiB) the cache "
                 "keeps; not stored",
                 len, (unsigned long long)OCL_CACHE_MAX);
        return false;
    }
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
