/* core/base/file.c — opening the files kiln reads (weights, data, plugins)
 * so that what is not a regular file is refused before any read.
 *
 * A FIFO blocks a reader forever, a device or a folder has no end, and a
 * device node may act on being opened: each is refused by stat before it is
 * opened, and again by fstat of what was opened (the name may have changed
 * in between). The open itself never blocks (O_NONBLOCK, cleared once the
 * file is known to be regular). */
#include "../kiln-impl.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

const char *kiln__file_kind(unsigned mode)
{
    switch (mode & S_IFMT) {
    case S_IFREG: return "a regular file";
    case S_IFDIR: return "a directory";
    case S_IFIFO: return "a FIFO";
    case S_IFCHR: return "a character device";
    case S_IFBLK: return "a block device";
    case S_IFSOCK: return "a socket";
    case S_IFLNK: return "a symbolic link";
    default: return "not a regular file";
    }
}

static kiln_status not_regular(const char *what, const char *path, unsigned mode)
{
    return kiln__error(KILN_ERR_IO, "%s %s is %s, expected a regular file", what, path,
                       kiln__file_kind(mode));
}

kiln_status kiln__open_regular(const char *path, const char *what, int *fd,
                               uint64_t *size)
{
    struct stat st;
    *fd = -1;
    if (stat(path, &st) != 0)
        return kiln__error(KILN_ERR_IO, "cannot open %s %s: %s", what, path,
                           strerror(errno));
    if (!S_ISREG(st.st_mode))
        return not_regular(what, path, st.st_mode);
    int f = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (f < 0)
        return kiln__error(KILN_ERR_IO, "cannot open %s %s: %s", what, path,
                           strerror(errno));
    int flags;
    if (fstat(f, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size < 0 ||
        (flags = fcntl(f, F_GETFL)) < 0 || fcntl(f, F_SETFL, flags & ~O_NONBLOCK) < 0) {
        int         err = errno;
        kiln_status ret = S_ISREG(st.st_mode)
                              ? kiln__error(KILN_ERR_IO, "cannot open %s %s: %s", what,
                                            path, strerror(err))
                              : not_regular(what, path, st.st_mode);
        close(f);
        return ret;
    }
    *fd   = f;
    *size = (uint64_t)st.st_size;
    return KILN_OK;
}
