/* core/runtime/elf.c — checking a plugin file before dlopen sees it.
 *
 * dlopen trusts the file: it maps the segments the program headers name and
 * touches them, so a truncated file kills the process with SIGBUS, and a
 * FIFO blocks it forever in open. So the file is opened as kiln opens every
 * file (kiln__open_regular: a regular file, or a refusal that never
 * blocks), and its ELF header and program headers are read through that
 * descriptor: the class, byte order and machine must be those of libkiln
 * itself (read from its own header in memory, so every architecture is
 * covered), the type a shared object, and the header tables and the file
 * data of every segment must lie within the file. Nothing is allocated, so
 * the check works when memory is short.
 *
 * The file can still change between this check and dlopen; the check is
 * for the files that are broken, not for those being rewritten meanwhile.
 */
#include "../kiln-impl.h"

#include <dlfcn.h>
#include <elf.h>
#include <errno.h>
#include <inttypes.h>
#include <link.h>
#include <string.h>
#include <unistd.h>

typedef ElfW(Ehdr) elf_header;
typedef ElfW(Phdr) elf_segment;

/* Its address tells dladdr which object this is: libkiln. */
static const char self_anchor;

/* libkiln's own ELF header (mapped with its first page), or NULL. */
static const elf_header *own_header(void)
{
    Dl_info info;
    if (dladdr(&self_anchor, &info) == 0 || !info.dli_fbase)
        return NULL;
    const elf_header *h = info.dli_fbase;
    return memcmp(h->e_ident, ELFMAG, SELFMAG) == 0 ? h : NULL;
}

static const char *class_name(unsigned c)
{
    return c == ELFCLASS32   ? "32-bit"
           : c == ELFCLASS64 ? "64-bit"
                             : "of an unknown class";
}

static const char *byte_order_name(unsigned d)
{
    return d == ELFDATA2LSB   ? "little-endian"
           : d == ELFDATA2MSB ? "big-endian"
                              : "of an unknown byte order";
}

static const char *machine_name(unsigned m)
{
    switch (m) {
    case EM_386: return "i386";
    case EM_X86_64: return "x86-64";
    case EM_ARM: return "ARM";
    case EM_AARCH64: return "AArch64";
    case EM_PPC: return "PowerPC";
    case EM_PPC64: return "PowerPC64";
    case EM_S390: return "s390";
    case EM_RISCV: return "RISC-V";
    case EM_MIPS: return "MIPS";
    case EM_LOONGARCH: return "LoongArch";
    }
    return "another machine";
}

static const char *type_name(unsigned t)
{
    switch (t) {
    case ET_REL: return "a relocatable object (ET_REL)";
    case ET_EXEC: return "an executable (ET_EXEC)";
    case ET_CORE: return "a core dump (ET_CORE)";
    }
    return "of an unknown type";
}

/* Reads len bytes at offset; false (errno set, or 0 for a short file) if
 * they cannot all be had. */
static bool read_at(int fd, void *buf, size_t len, uint64_t offset)
{
    char *p = buf;
    while (len > 0) {
        ssize_t n = pread(fd, p, len, (off_t)offset);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            if (n == 0)
                errno = 0;
            return false;
        }
        p += n;
        len -= (size_t)n;
        offset += (uint64_t)n;
    }
    return true;
}

/* *end = max(*end, offset + count * size); false if that overflows. */
static bool extend(uint64_t *end, uint64_t offset, uint64_t count, uint64_t size)
{
    uint64_t bytes, last;
    if (__builtin_mul_overflow(count, size, &bytes) ||
        __builtin_add_overflow(offset, bytes, &last))
        return false;
    if (last > *end)
        *end = last;
    return true;
}

static kiln_status not_loadable(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));

static kiln_status not_loadable(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    kiln__verror(KILN_ERR_IO, fmt, ap);
    va_end(ap);
    return KILN_ERR_IO;
}

static kiln_status truncated(uint64_t size, uint64_t end)
{
    return not_loadable("truncated: %" PRIu64 " bytes, the ELF headers say at least "
                        "%" PRIu64,
                        size, end);
}

/* The identification bytes against libkiln's own. */
static kiln_status check_ident(const elf_header *h, uint64_t size)
{
    if (size == 0)
        return not_loadable("an empty file, not an ELF shared object");
    size_t have = size < SELFMAG ? (size_t)size : SELFMAG;
    if (memcmp(h->e_ident, ELFMAG, have) != 0)
        return not_loadable("not an ELF file (it does not start with \\177ELF)");
    if (size < sizeof *h)
        return truncated(size, sizeof *h);
    const elf_header *own = own_header();
    unsigned          cls = own ? own->e_ident[EI_CLASS]
                                : (sizeof(void *) == 8 ? ELFCLASS64 : ELFCLASS32);
    if (h->e_ident[EI_CLASS] != cls)
        return not_loadable("a %s ELF file, and kiln is %s",
                            class_name(h->e_ident[EI_CLASS]), class_name(cls));
    if (own && h->e_ident[EI_DATA] != own->e_ident[EI_DATA])
        return not_loadable("a %s ELF file, and kiln is %s",
                            byte_order_name(h->e_ident[EI_DATA]),
                            byte_order_name(own->e_ident[EI_DATA]));
    if (h->e_ident[EI_VERSION] != EV_CURRENT)
        return not_loadable("ELF version %u, expected %u", h->e_ident[EI_VERSION],
                            EV_CURRENT);
    if (h->e_type != ET_DYN)
        return not_loadable("%s, not a shared object (ET_DYN)", type_name(h->e_type));
    if (own && h->e_machine != own->e_machine)
        return not_loadable("built for %s (ELF machine %u), and kiln runs on %s (%u)",
                            machine_name(h->e_machine), h->e_machine,
                            machine_name(own->e_machine), own->e_machine);
    return KILN_OK;
}

/* How far into the file the header tables and the segments reach. */
static kiln_status check_extent(int fd, const elf_header *h, uint64_t size)
{
    uint64_t end = sizeof *h;
    if (h->e_phnum == 0 || h->e_phentsize != sizeof(elf_segment))
        return not_loadable("malformed: %u program headers of %u bytes, expected at "
                            "least one of %zu",
                            h->e_phnum, h->e_phentsize, sizeof(elf_segment));
    if (!extend(&end, h->e_phoff, h->e_phnum, h->e_phentsize))
        return not_loadable("malformed: the program headers' offset %" PRIu64
                            " is past any file",
                            (uint64_t)h->e_phoff);
    if (h->e_shoff != 0) {
        if (h->e_shentsize != sizeof(ElfW(Shdr)))
            return not_loadable("malformed: section headers of %u bytes, expected %zu",
                                h->e_shentsize, sizeof(ElfW(Shdr)));
        /* 0 sections with an offset: the count is in section 0 (many sections) */
        if (!extend(&end, h->e_shoff, h->e_shnum ? h->e_shnum : 1, h->e_shentsize))
            return not_loadable("malformed: the section headers' offset %" PRIu64
                                " is past any file",
                                (uint64_t)h->e_shoff);
    }
    if (end > size)
        return truncated(size, end);
    /* the program headers are in the file: the segments' data must be too */
    elf_segment seg[32];
    for (size_t i = 0; i < h->e_phnum; i += sizeof seg / sizeof *seg) {
        size_t n = h->e_phnum - i < sizeof seg / sizeof *seg ? h->e_phnum - i
                                                             : sizeof seg / sizeof *seg;
        if (!read_at(fd, seg, n * sizeof *seg, h->e_phoff + i * sizeof *seg))
            return not_loadable("cannot read its program headers: %s",
                                errno ? strerror(errno) : "the file got shorter");
        for (size_t j = 0; j < n; j++)
            if (seg[j].p_type != PT_NULL && seg[j].p_filesz > 0 &&
                !extend(&end, seg[j].p_offset, 1, seg[j].p_filesz))
                return not_loadable("malformed: segment %zu reaches past any file",
                                    i + j);
    }
    return end > size ? truncated(size, end) : KILN_OK;
}

kiln_status kiln__plugin_file_check(const char *path)
{
    int         fd;
    uint64_t    size;
    kiln_status st = kiln__open_regular(path, "plugin file", &fd, &size);
    if (st != KILN_OK)
        return st;
    elf_header h;
    memset(&h, 0, sizeof h);
    size_t head = size < sizeof h ? (size_t)size : sizeof h;
    if (!read_at(fd, &h, head, 0))
        st = not_loadable("cannot read its ELF header: %s",
                          errno ? strerror(errno) : "the file got shorter");
    else
        st = check_ident(&h, size);
    if (st == KILN_OK)
        st = check_extent(fd, &h, size);
    close(fd);
    return st;
}
