/* tests/test_loader.c — finding, loading and refusing backend plugins.
 *
 * The registry is built once per process, on the first kiln call. Criterion
 * runs each test in a fresh process, so every test sets KILN_PLUGIN_PATH (and
 * KILN_LOG) before its first kiln call, and nothing here calls kiln outside a
 * test body.
 *
 * make check provides (Makefile.am, AM_TESTS_ENVIRONMENT):
 *   KILN_CPU_PLUGIN      the cpu plugin's directory (KILN_PLUGIN_PATH lists it
 *                        and every other real backend built)
 *   KILN_TEST_PLUGINS    tests/plugins of the build tree: <name>/.libs/kiln-*.so
 *   KILN_EXAMPLE_PLUGIN  the directory of the SDK example, kiln-example.so
 *   KILN_TEST_SRCDIR     tests/ of the source tree: plugins/garbage/kiln-garbage.so
 *   KILN_TEST_BUILDDIR   tests/ of the build tree: oom_runner, .libs/malloc-fail.so
 *
 * The installed plugin directory is searched too and may hold real plugins,
 * so the tests find reports by file (device and inode, whatever spelling of
 * the path the loader kept) or by name, and never count them all.
 *
 * Files that are not plugins (truncated, a FIFO, a folder, an ELF file for
 * another machine) are made in a scratch folder ahead of a link to the cpu
 * plugin, which must still load; each test has a timeout, so a loader that
 * blocks on a FIFO fails instead of hanging.
 *
 * Running out of memory: tests/oom_runner runs kiln in a child process with
 * tests/.libs/malloc-fail.so preloaded, an allocator that lets a given
 * number of allocations succeed and then refuses the next one or all the
 * rest (tests/malloc-fail.c). It does so for every count from 0 up to the
 * number the call makes, in a forked child each, for the first
 * kiln_context_new (the registry's load, dlopen, the device) and for
 * kiln_graph_run: a call may fail, with a message that says it ran out of
 * memory, and once memory is back the next call must work; nothing may end
 * the process. The shim replaces malloc for the dynamic loader too, which is
 * how dlopen's own failures and the lazy allocation of a dlopen'd module's
 * thread-local storage are reached. A resource limit (RLIMIT_AS) cannot be
 * raised again by an unprivileged process, so it could not show a load that
 * succeeds on the second try. The shim cannot be preloaded under
 * AddressSanitizer, whose allocator must come first: those tests skip there.
 */
#include "child.h"
#include "expect.h"
#include "reference.h"

#include <kiln/backend.h>
#include <kiln/kiln.h>

#include <criterion/criterion.h>

#include <elf.h>
#include <limits.h>
#include <link.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#define LEN 4096

/* ---- where the plugins are --------------------------------------------- */

typedef struct test_plugin {
    const char *key;    /* what the tests call it                            */
    const char *subdir; /* under KILN_TEST_PLUGINS, or NULL                   */
    const char *file;
} test_plugin;

static const test_plugin test_plugins[] = {
    {"cpu", NULL, "kiln-cpu.so"},
    {"example", NULL, "kiln-example.so"},
    {"garbage", NULL, "kiln-garbage.so"},
    {"good", "good", "kiln-good.so"},
    {"bad_abi", "bad_abi", "kiln-bad-abi.so"},
    {"no_entry", "no_entry", "kiln-no-entry.so"},
    {"probe_zero", "probe_zero", "kiln-probe-zero.so"},
    {"unresolved", "unresolved", "kiln-unresolved.so"},
};

/* The cpu plugin's directory, as make check gives it. */
static char cpu_dir[LEN];

static void fmt(char *buf, size_t len, const char *format, ...)
    __attribute__((format(printf, 3, 4)));

static void fmt(char *buf, size_t len, const char *format, ...)
{
    va_list ap;
    va_start(ap, format);
    int n = vsnprintf(buf, len, format, ap);
    va_end(ap);
    cr_assert(n >= 0 && (size_t)n < len, "a test path is longer than %zu bytes", len);
}

static void setup(void)
{
    fmt(cpu_dir, sizeof cpu_dir, "%s", expect_env("KILN_CPU_PLUGIN"));
    unsetenv("KILN_BACKEND");
    unsetenv("KILN_LOG");
}

static const test_plugin *lookup(const char *key)
{
    for (size_t i = 0; i < sizeof test_plugins / sizeof *test_plugins; i++)
        if (strcmp(test_plugins[i].key, key) == 0)
            return &test_plugins[i];
    cr_assert_fail("no test plugin \"%s\"", key);
    return NULL;
}

/* The directory that holds the plugin `key`. */
static void plugin_dir(const char *key, char *buf, size_t len)
{
    const test_plugin *p = lookup(key);
    if (strcmp(key, "cpu") == 0)
        fmt(buf, len, "%s", cpu_dir);
    else if (strcmp(key, "example") == 0)
        fmt(buf, len, "%s", expect_env("KILN_EXAMPLE_PLUGIN"));
    else if (strcmp(key, "garbage") == 0)
        fmt(buf, len, "%s/plugins/garbage", expect_env("KILN_TEST_SRCDIR"));
    else
        fmt(buf, len, "%s/%s/.libs", expect_env("KILN_TEST_PLUGINS"), p->subdir);
}

static void plugin_file(const char *key, char *buf, size_t len)
{
    char dir[LEN];
    plugin_dir(key, dir, sizeof dir);
    fmt(buf, len, "%s/%s", dir, lookup(key)->file);
    struct stat st;
    cr_assert(stat(buf, &st) == 0, "test plugin %s is missing: was it built?", buf);
}

/* Sets KILN_PLUGIN_PATH to the directories of the plugins named, in order. */
static void use_plugins(const char *first, ...)
{
    char    path[LEN] = "";
    size_t  n         = 0;
    va_list ap;
    va_start(ap, first);
    for (const char *key = first; key; key = va_arg(ap, const char *)) {
        char dir[LEN];
        plugin_dir(key, dir, sizeof dir);
        fmt(path + n, sizeof path - n, "%s%s", n ? ":" : "", dir);
        n = strlen(path);
    }
    va_end(ap);
    cr_assert_eq(setenv("KILN_PLUGIN_PATH", path, 1), 0);
}

/* ---- finding reports -------------------------------------------------------- */

static bool same_file(const char *a, const char *b)
{
    struct stat sa, sb;
    return a && b && stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev &&
           sa.st_ino == sb.st_ino;
}

/* Every report of an attempt on `file`, in discovery order; returns how many. */
static size_t reports_for_file(const char *file, const kiln_plugin_report **out,
                               size_t max)
{
    const kiln_plugin_report *r;
    size_t                    n = kiln_plugins(&r), found = 0;
    for (size_t i = 0; i < n; i++)
        if (same_file(r[i].path, file) && found < max)
            out[found++] = &r[i];
    return found;
}

/* The one report of an attempt on the plugin `key`. */
static const kiln_plugin_report *report(const char *key)
{
    char file[LEN];
    plugin_file(key, file, sizeof file);
    const kiln_plugin_report *found[2];
    size_t                    n = reports_for_file(file, found, 2);
    cr_assert_eq(n, 1, "expected one attempt on %s in kiln_plugins(), found %zu", file,
                 n);
    return found[0];
}

/* Position of a report in kiln_plugins(). */
static size_t position(const kiln_plugin_report *r)
{
    const kiln_plugin_report *all;
    kiln_plugins(&all);
    return (size_t)(r - all);
}

static void assert_usable(const char *key, const char *name)
{
    const kiln_plugin_report *r = report(key);
    cr_assert_null(r->reason, "%s was refused: %s", r->path, r->reason);
    cr_assert_not_null(r->name, "%s: usable, but no name", r->path);
    cr_assert_str_eq(r->name, name);
    cr_assert_gt(r->score, 0, "%s: usable with score %d", r->path, r->score);
}

static void assert_refused(const char *key, const char *why)
{
    const kiln_plugin_report *r = report(key);
    cr_assert_not_null(r->reason, "%s was not refused; expected \"%s\"", r->path, why);
    cr_assert(strstr(r->reason, why), "%s: the reason \"%s\" does not say \"%s\"",
              r->path, r->reason, why);
    cr_assert_eq(r->score, 0, "%s: refused with score %d", r->path, r->score);
}

static size_t devices_of(const char *backend)
{
    const kiln_device_report *d;
    size_t                    n = kiln_devices(&d), found = 0;
    for (size_t i = 0; i < n; i++)
        found += strcmp(d[i].backend, backend) == 0;
    return found;
}

/* ---- stderr ----------------------------------------------------------------- */

/* stderr goes to a temporary file between capture_begin and capture_end, at
 * the file descriptor, so whatever kiln uses to write is caught. */
typedef struct capture {
    FILE *file;
    int   saved;
} capture;

static void capture_begin(capture *c)
{
    fflush(stderr);
    c->file = tmpfile();
    cr_assert_not_null(c->file, "tmpfile failed");
    c->saved = dup(STDERR_FILENO);
    cr_assert(c->saved >= 0 && dup2(fileno(c->file), STDERR_FILENO) >= 0,
              "cannot redirect stderr");
}

/* Restores stderr; returns what was written (free it). */
static char *capture_end(capture *c)
{
    fflush(stderr);
    cr_assert(dup2(c->saved, STDERR_FILENO) >= 0, "cannot restore stderr");
    close(c->saved);
    long size = ftell(c->file);
    cr_assert(size >= 0 && fseek(c->file, 0, SEEK_SET) == 0);
    char *text = malloc((size_t)size + 1);
    cr_assert_not_null(text);
    size_t got = fread(text, 1, (size_t)size, c->file);
    text[got]  = '\0';
    fclose(c->file);
    return text;
}

/* Whether some line of text starts with prefix and contains needle. */
static bool has_line(const char *text, const char *prefix, const char *needle)
{
    for (const char *line = text; *line;) {
        const char *end = strchr(line, '\n');
        size_t      len = end ? (size_t)(end - line) : strlen(line);
        const char *hit = strstr(line, needle);
        if (strncmp(line, prefix, strlen(prefix)) == 0 && hit &&
            hit + strlen(needle) <= line + len)
            return true;
        line += len + (end != NULL);
    }
    return false;
}

/* ---- refusals ------------------------------------------------------------------ */

TestSuite(loader, .init = setup);
TestSuite(oom, .init = setup);

Test(loader, refuses_file_that_is_not_a_shared_object)
{
    use_plugins("cpu", "garbage", NULL);
    assert_refused("garbage", "not an ELF file");
    cr_assert_null(report("garbage")->name);
    assert_usable("cpu", "cpu");
}

Test(loader, refuses_object_dlopen_fails_on_with_its_words)
{
    use_plugins("unresolved", "cpu", NULL);
    assert_refused("unresolved", "dlopen failed: ");
    assert_refused("unresolved", "kiln_test_undefined");
    cr_assert_null(report("unresolved")->name);
    assert_usable("cpu", "cpu");
}

Test(loader, refuses_object_without_entry_symbol)
{
    use_plugins("cpu", "no_entry", NULL);
    assert_refused("no_entry", "no symbol kiln_backend_entry");
    cr_assert_null(report("no_entry")->name);
    cr_assert_eq(devices_of("noentry"), 0);
    assert_usable("cpu", "cpu");
}

Test(loader, refuses_abi_mismatch_naming_both_versions)
{
    char why[64];
    fmt(why, sizeof why, "ABI version 999, kiln expects %d", KILN_BACKEND_ABI_VERSION);
    use_plugins("cpu", "bad_abi", NULL);
    assert_refused("bad_abi", why);
    cr_assert_eq(devices_of("badabi"), 0);
}

Test(loader, refuses_plugin_whose_probe_returns_zero)
{
    use_plugins("cpu", "probe_zero", NULL);
    assert_refused("probe_zero", "probe returned 0");
    const kiln_plugin_report *r = report("probe_zero");
    cr_assert_not_null(r->name);
    cr_assert_str_eq(r->name, "probezero");
    cr_assert_eq(r->n_devices, 0);
    cr_assert_eq(devices_of("probezero"), 0);
}

Test(loader, refuses_second_plugin_with_a_name_already_loaded)
{
    /* The same file twice: named directly, then found in its directory. */
    char file[LEN], path[2 * LEN + 2];
    plugin_file("cpu", file, sizeof file);
    fmt(path, sizeof path, "%s:%s", file, cpu_dir);
    cr_assert_eq(setenv("KILN_PLUGIN_PATH", path, 1), 0);

    const kiln_plugin_report *r[3];
    size_t                    n = reports_for_file(file, r, 3);
    cr_assert_eq(n, 2, "expected two attempts on %s, found %zu", file, n);
    cr_assert_null(r[0]->reason, "first attempt refused: %s", r[0]->reason);
    cr_assert_not_null(r[0]->name);
    cr_assert_str_eq(r[0]->name, "cpu");
    cr_assert_not_null(r[1]->reason, "the second plugin named cpu was not refused");
    cr_assert(strstr(r[1]->reason, "already loaded from"), "reason: %s", r[1]->reason);
    cr_assert(strstr(r[1]->reason, r[0]->path),
              "the reason \"%s\" does not name "
              "the first file, %s",
              r[1]->reason, r[0]->path);

    const kiln_device_report *d;
    size_t                    nd = kiln_devices(&d), cpu0 = 0;
    for (size_t i = 0; i < nd; i++)
        cpu0 += strcmp(d[i].backend, "cpu") == 0 && d[i].index == 0;
    cr_assert_eq(cpu0, 1, "cpu:0 is listed %zu times", cpu0);
}

/* ---- what still loads, and in which order ------------------------------------ */

Test(loader, loads_good_plugins_past_broken_ones)
{
    use_plugins("cpu", "garbage", "no_entry", "bad_abi", "probe_zero", "unresolved",
                "good", NULL);
    assert_usable("cpu", "cpu");
    assert_usable("good", "good");
    const kiln_plugin_report *good = report("good");
    cr_assert_eq(good->score, 5);
    cr_assert_eq(good->n_devices, 2);
    cr_assert_eq(devices_of("good"), 2);
    cr_assert_gt(devices_of("cpu"), 0);

    static const char *const broken[] = {"garbage", "no_entry", "bad_abi", "probe_zero",
                                         "unresolved"};
    for (size_t i = 0; i < sizeof broken / sizeof *broken; i++)
        cr_assert_not_null(report(broken[i])->reason, "%s was not refused", broken[i]);
}

Test(loader, path_entry_may_name_one_file)
{
    char file[LEN], path[2 * LEN + 2];
    plugin_file("good", file, sizeof file);
    fmt(path, sizeof path, "%s:%s", cpu_dir, file);
    cr_assert_eq(setenv("KILN_PLUGIN_PATH", path, 1), 0);
    assert_usable("good", "good");
    assert_usable("cpu", "cpu");
}

Test(loader, tries_path_entries_in_order)
{
    use_plugins("good", "bad_abi", "cpu", "garbage", NULL);
    size_t good = position(report("good")), bad = position(report("bad_abi"));
    size_t cpu = position(report("cpu")), garbage = position(report("garbage"));
    cr_assert(good < bad && bad < cpu && cpu < garbage,
              "attempts out of KILN_PLUGIN_PATH order: good %zu, bad_abi %zu, "
              "cpu %zu, garbage %zu",
              good, bad, cpu, garbage);
}

/* A scratch directory of symbolic links, removed after each test using it. */
static char scratch[LEN];

static void scratch_setup(void)
{
    setup();
    child_temp_dir(scratch, sizeof scratch);
}

static void scratch_teardown(void)
{
    child_remove_dir(scratch);
}

/* Links scratch/name to the plugin `key`. */
static void scratch_link(const char *name, const char *key)
{
    char file[LEN], link[LEN + 32];
    plugin_file(key, file, sizeof file);
    fmt(link, sizeof link, "%s/%s", scratch, name);
    cr_assert_eq(symlink(file, link), 0, "symlink %s -> %s failed", link, file);
}

Test(loader, tries_files_ending_in_so_in_name_order, .init = scratch_setup,
     .fini = scratch_teardown)
{
    /* Created out of order, so that directory order is unlikely to be name order. */
    scratch_link("c.so", "bad_abi");
    scratch_link("a.so", "no_entry");
    scratch_link("b.so", "garbage");
    scratch_link("kiln-good.so.bak", "good");
    scratch_link("notes.txt", "good");
    char path[2 * LEN + 2];
    fmt(path, sizeof path, "%s:%s", cpu_dir, scratch);
    cr_assert_eq(setenv("KILN_PLUGIN_PATH", path, 1), 0);

    size_t a = position(report("no_entry")), b = position(report("garbage"));
    size_t c = position(report("bad_abi"));
    cr_assert(a < b && b < c, "a.so, b.so, c.so tried at %zu, %zu, %zu", a, b, c);
    const kiln_plugin_report *r[1] = {NULL};
    char                      good[LEN];
    plugin_file("good", good, sizeof good);
    size_t tried = reports_for_file(good, r, 1);
    cr_assert_eq(tried, 0, "a file not ending in .so was tried: %s",
                 tried ? r[0]->path : "");
}

Test(loader, never_searches_the_current_directory, .init = scratch_setup,
     .fini = scratch_teardown)
{
    /* Empty and relative entries would all mean the current directory. */
    scratch_link("kiln-good.so", "good");
    cr_assert_eq(chdir(scratch), 0, "chdir %s failed", scratch);
    char path[LEN + 64];
    fmt(path, sizeof path, ":%s::.:kiln-good.so:./kiln-good.so:", cpu_dir);
    cr_assert_eq(setenv("KILN_PLUGIN_PATH", path, 1), 0);

    capture c; /* warnings about the odd entries are welcome, but not here */
    capture_begin(&c);
    const kiln_plugin_report *all;
    size_t                    n = kiln_plugins(&all);
    free(capture_end(&c));

    assert_usable("cpu", "cpu");
    for (size_t i = 0; i < n; i++)
        cr_assert(!all[i].name || strcmp(all[i].name, "good") != 0, "loaded good from %s",
                  all[i].path);
    cr_assert_eq(devices_of("good"), 0);
}

/* ---- files in a plugin folder that are not plugins ------------------------- */

/* dlopen maps a file's segments before it reads them: a truncated file
 * kills the process (SIGBUS) and a FIFO blocks it forever. The loader
 * checks each file first; these tests put the bad file first in name order,
 * before a link to the cpu plugin, which must still load. */

typedef ElfW(Ehdr) elf_header;
typedef ElfW(Phdr) elf_segment;

/* scratch/name: `size` bytes of the cpu plugin, with hdr (when not NULL)
 * applied to its ELF header first. */
static void scratch_copy(const char *name, size_t size, void (*hdr)(elf_header *))
{
    char from[LEN], to[LEN + 32];
    plugin_file("cpu", from, sizeof from);
    fmt(to, sizeof to, "%s/%s", scratch, name);
    size_t len;
    char  *bytes = child_read_file(from, &len);
    cr_assert_leq(size, len);
    if (hdr) {
        cr_assert_geq(len, sizeof(elf_header));
        hdr((elf_header *)(void *)bytes);
    }
    FILE *f = fopen(to, "wb");
    cr_assert_not_null(f, "cannot create %s", to);
    cr_assert_eq(fwrite(bytes, 1, size, f), size);
    cr_assert_eq(fclose(f), 0);
    free(bytes);
}

/* Where the file data of the cpu plugin's last PT_LOAD segment starts. */
static size_t last_load_offset(void)
{
    char file[LEN];
    plugin_file("cpu", file, sizeof file);
    size_t            len;
    char             *bytes = child_read_file(file, &len);
    const elf_header *eh    = (const elf_header *)(void *)bytes;
    size_t            at    = 0;
    for (size_t i = 0; i < eh->e_phnum; i++) {
        const elf_segment *ph = (const elf_segment *)(void *)(bytes + eh->e_phoff +
                                                              i * eh->e_phentsize);
        if (ph->p_type == PT_LOAD && ph->p_filesz > 0)
            at = ph->p_offset;
    }
    free(bytes);
    cr_assert_gt(at, 0, "the cpu plugin has no PT_LOAD segment past the headers");
    return at;
}

static void no_section_headers(elf_header *h)
{
    h->e_shoff = 0;
    h->e_shnum = h->e_shstrndx = 0;
}

static void other_class(elf_header *h)
{
    h->e_ident[EI_CLASS] = sizeof(void *) == 8 ? ELFCLASS32 : ELFCLASS64;
}

static void other_byte_order(elf_header *h)
{
    h->e_ident[EI_DATA] = h->e_ident[EI_DATA] == ELFDATA2LSB ? ELFDATA2MSB : ELFDATA2LSB;
}

static void other_machine(elf_header *h)
{
    h->e_machine = h->e_machine == EM_AARCH64 ? EM_X86_64 : EM_AARCH64;
}

static void relocatable(elf_header *h)
{
    h->e_type = ET_REL;
}

/* The report of scratch/name, which must be refused saying `why`. */
static void assert_scratch_refused(const char *name, const char *why)
{
    char file[LEN + 32];
    fmt(file, sizeof file, "%s/%s", scratch, name);
    const kiln_plugin_report *r[2];
    cr_assert_eq(reports_for_file(file, r, 2), 1, "expected one attempt on %s", file);
    cr_assert_not_null(r[0]->reason, "%s was not refused; expected \"%s\"", file, why);
    cr_assert(strstr(r[0]->reason, why), "%s: the reason \"%s\" does not say \"%s\"",
              file, r[0]->reason, why);
    cr_assert_null(r[0]->name);
    cr_assert_eq(r[0]->score, 0);
}

/* KILN_PLUGIN_PATH is the scratch folder, with the cpu plugin linked in. */
static void use_scratch_with_cpu(void)
{
    scratch_link("kiln-cpu.so", "cpu");
    cr_assert_eq(setenv("KILN_PLUGIN_PATH", scratch, 1), 0);
}

Test(loader, refuses_truncated_plugin_and_loads_the_next, .init = scratch_setup,
     .fini = scratch_teardown, .timeout = 60)
{
    scratch_copy("kiln-a.so", 1000, NULL);
    use_scratch_with_cpu();
    assert_scratch_refused("kiln-a.so",
                           "truncated: 1000 bytes, the ELF headers say at least ");
    assert_usable("cpu", "cpu");
    cr_assert_gt(devices_of("cpu"), 0);
}

/* Without section headers only the program headers say how long the file
 * is: cut inside the last segment it maps, dlopen would fault. */
Test(loader, refuses_plugin_cut_inside_a_segment, .init = scratch_setup,
     .fini = scratch_teardown, .timeout = 60)
{
    size_t size = last_load_offset() + 16;
    char   why[96];
    fmt(why, sizeof why, "truncated: %zu bytes, the ELF headers say at least ", size);
    scratch_copy("kiln-a.so", size, no_section_headers);
    use_scratch_with_cpu();
    assert_scratch_refused("kiln-a.so", why);
    assert_usable("cpu", "cpu");
}

Test(loader, refuses_files_too_short_for_an_elf_header, .init = scratch_setup,
     .fini = scratch_teardown, .timeout = 60)
{
    scratch_copy("kiln-a.so", 0, NULL);
    scratch_copy("kiln-b.so", 3, NULL);
    scratch_copy("kiln-c.so", 40, NULL);
    use_scratch_with_cpu();
    assert_scratch_refused("kiln-a.so", "an empty file");
    assert_scratch_refused("kiln-b.so",
                           "truncated: 3 bytes, the ELF headers say at least ");
    char why[96];
    fmt(why, sizeof why, "truncated: 40 bytes, the ELF headers say at least %zu",
        sizeof(elf_header));
    assert_scratch_refused("kiln-c.so", why);
    assert_usable("cpu", "cpu");
}

Test(loader, refuses_elf_files_for_another_machine, .init = scratch_setup,
     .fini = scratch_teardown, .timeout = 60)
{
    char file[LEN];
    plugin_file("cpu", file, sizeof file);
    struct stat st;
    cr_assert_eq(stat(file, &st), 0);
    size_t size = (size_t)st.st_size;
    scratch_copy("kiln-a.so", size, other_class);
    scratch_copy("kiln-b.so", size, other_byte_order);
    scratch_copy("kiln-c.so", size, other_machine);
    scratch_copy("kiln-d.so", size, relocatable);
    use_scratch_with_cpu();
    assert_scratch_refused("kiln-a.so", sizeof(void *) == 8 ? "32-bit" : "64-bit");
    assert_scratch_refused("kiln-b.so", "-endian");
    assert_scratch_refused("kiln-c.so", "built for ");
    assert_scratch_refused("kiln-d.so", "not a shared object");
    assert_usable("cpu", "cpu");
}

Test(loader, refuses_fifo_and_folder_named_like_plugins_without_blocking,
     .init = scratch_setup, .fini = scratch_teardown, .timeout = 60)
{
    char fifo[LEN + 32], dir[LEN + 32];
    fmt(fifo, sizeof fifo, "%s/kiln-a.so", scratch);
    fmt(dir, sizeof dir, "%s/kiln-b.so", scratch);
    cr_assert_eq(mkfifo(fifo, 0600), 0, "mkfifo %s failed", fifo);
    cr_assert_eq(mkdir(dir, 0700), 0, "mkdir %s failed", dir);
    use_scratch_with_cpu();
    assert_scratch_refused("kiln-a.so", "is a FIFO, expected a regular file");
    assert_scratch_refused("kiln-b.so", "is a directory, expected a regular file");
    assert_usable("cpu", "cpu");
}

/* qsort on an empty list was undefined behaviour (a sanitizer build
 * stopped on it); a folder that holds no plugin is simply empty. */
Test(loader, folders_without_plugins_add_nothing, .init = scratch_setup,
     .fini = scratch_teardown, .timeout = 60)
{
    char empty[LEN + 32], other[LEN + 32], notes[LEN + 64], path[3 * LEN];
    fmt(empty, sizeof empty, "%s/empty", scratch);
    fmt(other, sizeof other, "%s/other", scratch);
    fmt(notes, sizeof notes, "%s/notes.txt", other);
    cr_assert_eq(mkdir(empty, 0700), 0);
    cr_assert_eq(mkdir(other, 0700), 0);
    FILE *f = fopen(notes, "w");
    cr_assert_not_null(f);
    fclose(f);
    fmt(path, sizeof path, "%s:%s:%s", empty, other, cpu_dir);
    cr_assert_eq(setenv("KILN_PLUGIN_PATH", path, 1), 0);

    const kiln_plugin_report *r;
    size_t                    n = kiln_plugins(&r);
    for (size_t i = 0; i < n; i++)
        cr_assert(strncmp(r[i].path, scratch, strlen(scratch)) != 0, "%s was tried",
                  r[i].path);
    assert_usable("cpu", "cpu");
}

Test(loader, empty_plugin_folder_alone_selects_nothing_with_a_message,
     .init = scratch_setup, .fini = scratch_teardown, .timeout = 60)
{
    cr_assert_eq(setenv("KILN_PLUGIN_PATH", scratch, 1), 0);
    const kiln_plugin_report *r;
    size_t                    n = kiln_plugins(&r);
    for (size_t i = 0; i < n; i++)
        cr_assert(strncmp(r[i].path, scratch, strlen(scratch)) != 0, "%s was tried",
                  r[i].path);
    size_t k;
    expect_error(kiln_select("nosuchbackend", &k), KILN_ERR_NOT_FOUND, "nosuchbackend",
                 "Available");
}

/* kiln-info lists what it refused, and why, and goes on. */
Test(loader, kiln_info_lists_bad_files_and_the_plugins_past_them, .init = scratch_setup,
     .fini = scratch_teardown, .timeout = 60)
{
    char fifo[LEN + 32], empty[LEN + 32], path[2 * LEN + 64];
    scratch_copy("kiln-a-trunc.so", 1000, NULL);
    fmt(fifo, sizeof fifo, "%s/kiln-b-fifo.so", scratch);
    cr_assert_eq(mkfifo(fifo, 0600), 0, "mkfifo %s failed", fifo);
    scratch_link("kiln-cpu.so", "cpu");
    fmt(empty, sizeof empty, "%s/empty", scratch);
    cr_assert_eq(mkdir(empty, 0700), 0);
    fmt(path, sizeof path, "KILN_PLUGIN_PATH=%s:%s", scratch, empty);

    const char *const env[] = {path, "-KILN_BACKEND", "-KILN_LOG", NULL};
    child_result      r     = child_run("../tools/kiln-info", env);
    cr_assert_eq(r.status, 0, "kiln-info exited with %d:\n%s\n%s", r.status, r.out,
                 r.err);
    cr_assert(strstr(r.out, "truncated: 1000 bytes"), "no truncated plugin in:\n%s",
              r.out);
    cr_assert(strstr(r.out, "kiln-b-fifo.so is a FIFO"), "no FIFO in:\n%s", r.out);
    cr_assert(strstr(r.out, "-> cpu:0"), "cpu not selected:\n%s", r.out);
    child_free(&r);
}

/* ---- first use from many threads ------------------------------------------------ */

#define RACERS 8

typedef struct racer {
    pthread_barrier_t        *start;
    const kiln_plugin_report *reports;
    size_t                    n;
} racer;

static void *race(void *arg)
{
    racer *r = arg;
    pthread_barrier_wait(r->start);
    r->n = kiln_plugins(&r->reports);
    return NULL;
}

Test(loader, first_use_from_many_threads_loads_once)
{
    use_plugins("cpu", "good", NULL);
    pthread_barrier_t start;
    pthread_t         t[RACERS];
    racer             r[RACERS];
    cr_assert_eq(pthread_barrier_init(&start, NULL, RACERS), 0);
    for (int i = 0; i < RACERS; i++) {
        r[i] = (racer){.start = &start};
        cr_assert_eq(pthread_create(&t[i], NULL, race, &r[i]), 0);
    }
    for (int i = 0; i < RACERS; i++)
        cr_assert_eq(pthread_join(t[i], NULL), 0);
    pthread_barrier_destroy(&start);
    for (int i = 1; i < RACERS; i++) {
        cr_assert_eq(r[i].reports, r[0].reports, "two threads got two lists");
        cr_assert_eq(r[i].n, r[0].n);
    }
    assert_usable("cpu", "cpu");
    assert_usable("good", "good");
}

/* ---- KILN_LOG=debug ------------------------------------------------------------ */

Test(loader, debug_log_shows_every_attempt_and_its_outcome)
{
    use_plugins("cpu", "garbage", "no_entry", "bad_abi", "probe_zero", "good", NULL);
    cr_assert_eq(setenv("KILN_LOG", "debug", 1), 0);
    capture c;
    capture_begin(&c);
    const kiln_plugin_report *r;
    size_t                    n   = kiln_plugins(&r);
    char                     *log = capture_end(&c);

    cr_assert_geq(n, 6);
    for (const char *line = log; *line;) {
        const char *end = strchr(line, '\n');
        cr_assert(strncmp(line, "kiln: ", 6) == 0, "a line without \"kiln: \": %.*s",
                  (int)strcspn(line, "\n"), line);
        cr_assert_not_null(end, "the log does not end with a newline");
        line = end + 1;
    }
    for (size_t i = 0; i < n; i++) {
        cr_assert(has_line(log, "kiln: debug: ", r[i].path),
                  "no debug line names %s; the log:\n%s", r[i].path, log);
        if (r[i].reason)
            cr_assert(has_line(log, "kiln: ", r[i].reason),
                      "the log does not say "
                      "why %s was refused (%s); the log:\n%s",
                      r[i].path, r[i].reason, log);
    }
    free(log);
}

Test(loader, loading_prints_nothing_below_warn_by_default)
{
    use_plugins("cpu", "good", NULL);
    capture c;
    capture_begin(&c);
    kiln_plugins(NULL);
    kiln_devices(NULL);
    char *log = capture_end(&c);
    cr_assert(!strstr(log, "kiln: debug") && !strstr(log, "kiln: info"),
              "KILN_LOG unset, yet:\n%s", log);
    free(log);
}

/* ---- out of memory ----------------------------------------------------------------- */

/* oom_runner under malloc-fail.so (see the top of this file). */
static child_result oom_run(const char *mode)
{
#if defined(__SANITIZE_ADDRESS__)
    cr_skip_test("an allocator that fails on request cannot be preloaded under "
                 "AddressSanitizer");
#endif
    char preload[LEN], path[LEN + 32], oom_mode[64];
    fmt(preload, sizeof preload, "LD_PRELOAD=%s/.libs/malloc-fail.so",
        expect_env("KILN_TEST_BUILDDIR"));
    fmt(path, sizeof path, "KILN_PLUGIN_PATH=%s", cpu_dir);
    fmt(oom_mode, sizeof oom_mode, "KILN_OOM_MODE=%s", mode);
    const char *const env[] = {
        preload,         path,        oom_mode, "KILN_NUM_THREADS=2",
        "-KILN_BACKEND", "-KILN_LOG", NULL};
    child_result r = child_run("oom_runner", env);
    cr_assert_eq(r.status, 0, "oom_runner (KILN_OOM_MODE=%s) exited with %d:\n%s\n%s",
                 mode, r.status, r.out, r.err);
    return r;
}

/* Every call that failed said so, and said it ran out of memory; returns
 * how many failed. */
static size_t oom_failures(const char *out)
{
    size_t n = 0;
    for (const char *line = out; *line;) {
        size_t len = strcspn(line, "\n");
        if (memmem(line, len, " failed: ", 9)) {
            n++;
            cr_assert(memmem(line, len, "memory", 6) || memmem(line, len, "allocate", 8),
                      "a failure that does not say it ran out of memory: %.*s", (int)len,
                      line);
        }
        line += len + (line[len] == '\n');
    }
    return n;
}

/* The registry used to be built under pthread_once: a load that ran out of
 * memory stayed failed, and a dlopen that did left "no backend named cpu",
 * for the rest of the process. */
Test(oom, plugin_load_that_runs_out_of_memory_is_tried_again, .timeout = 240)
{
    child_result r = oom_run("load");
    cr_assert_gt(oom_failures(r.out), 0, "no call failed: was anything refused?\n%s",
                 r.out);
    child_free(&r);
}

/* The cpu plugin kept thread-local state; glibc allocates that of a
 * dlopen'd module on a thread's first use, and ends the process (status
 * 127) when it cannot. */
Test(oom, graph_run_out_of_memory_is_an_error_never_an_exit, .timeout = 240)
{
    child_result r = oom_run("run");
    oom_failures(r.out);
    child_free(&r);
}

/* ---- the SDK example plugin ------------------------------------------------------ */

TestSuite(example, .init = setup);

Test(example, loads_with_score_1_and_is_not_the_default)
{
    use_plugins("cpu", "example", NULL);
    assert_usable("example", "example");
    const kiln_plugin_report *r = report("example");
    cr_assert_eq(r->score, 1);
    cr_assert_eq(r->n_devices, 1);

    size_t k;
    cr_assert_eq(kiln_select(NULL, &k), KILN_OK, "%s", kiln_last_error());
    const kiln_device_report *d;
    cr_assert_lt(k, kiln_devices(&d));
    cr_assert_str_neq(d[k].backend, "example", "the example beat the cpu backend");
}

/* A context on the example device, with its graph. */
static kiln_graph *example_graph(kiln_context **ctx)
{
    use_plugins("cpu", "example", NULL);
    *ctx = kiln_context_new_for("example");
    cr_assert_not_null(*ctx, "kiln_context_new_for(\"example\"): %s", kiln_last_error());
    const char *label = kiln_context_device(*ctx);
    cr_assert(strncmp(label, "example:0", 9) == 0, "context on %s", label);
    kiln_graph *g = kiln_graph_new(*ctx);
    cr_assert_not_null(g, "kiln_graph_new: %s", kiln_last_error());
    return g;
}

static void must_compile(kiln_graph *g)
{
    cr_assert_eq(kiln_graph_compile(g), KILN_OK, "compile: %s", kiln_graph_error(g));
}

static void write_f32(kiln_tensor *t, const float *v, size_t n)
{
    cr_assert_eq(kiln_tensor_write(t, v, n * sizeof *v), KILN_OK, "write %s: %s",
                 kiln_tensor_name(t), kiln_last_error());
}

static void assert_result(const kiln_tensor *y, const float *want, size_t n)
{
    float got[16];
    cr_assert_leq(n, 16);
    cr_assert_eq(kiln_tensor_read(y, got, n * sizeof *got), KILN_OK, "read: %s",
                 kiln_last_error());
    ref_expect_close("the result", got, want, ref_shape_of(KILN_SHAPE((int64_t)n)),
                     (ref_tol){1e-6, 0.0});
}

Test(example, runs_bias_add_then_relu)
{
    kiln_context *ctx;
    kiln_graph   *g = example_graph(&ctx);
    kiln_tensor  *x = kiln_input(g, "x", KILN_F32, KILN_SHAPE(2, 3));
    kiln_tensor  *b = kiln_param(g, "bias", KILN_SHAPE(3));
    kiln_tensor  *y = kiln_relu(g, kiln_add(g, x, b));
    cr_assert_eq(kiln_output(g, y), KILN_OK, "%s", kiln_graph_error(g));
    must_compile(g);

    const float xs[6] = {1.0f, -2.0f, 3.5f, -0.25f, 0.5f, -4.0f};
    const float bs[3] = {0.5f, 1.0f, -1.5f};
    float       want[6];
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 3; j++) {
            float s         = xs[3 * i + j] + bs[j];
            want[3 * i + j] = s > 0.0f ? s : 0.0f;
        }
    write_f32(x, xs, 6);
    write_f32(b, bs, 3);
    cr_assert_eq(kiln_graph_run(g), KILN_OK, "run: %s", kiln_last_error());
    assert_result(y, want, 6);

    kiln_graph_free(g);
    kiln_context_free(ctx);
}

Test(example, runs_mul_and_broadcasts_from_the_left)
{
    kiln_context *ctx;
    kiln_graph   *g = example_graph(&ctx);
    kiln_tensor  *x = kiln_input(g, "x", KILN_F32, KILN_SHAPE(2, 3));
    kiln_tensor  *w = kiln_input(g, "w", KILN_F32, KILN_SHAPE(2, 3));
    kiln_tensor  *b = kiln_input(g, "b", KILN_F32, KILN_SHAPE(3));
    /* y = b + (-2 * x) * w: a scalar and a bias broadcast from the left */
    kiln_tensor *t = kiln_mul(g, kiln_scalar(g, -2.0f), x);
    kiln_tensor *y = kiln_add(g, b, kiln_mul(g, t, w));
    cr_assert_eq(kiln_output(g, y), KILN_OK, "%s", kiln_graph_error(g));
    must_compile(g);

    const float xs[6] = {1.0f, -2.0f, 3.0f, 0.5f, 0.0f, -1.0f};
    const float ws[6] = {2.0f, 0.5f, -1.0f, 4.0f, 3.0f, 0.25f};
    const float bs[3] = {10.0f, 20.0f, 30.0f};
    float       want[6];
    for (int i = 0; i < 6; i++)
        want[i] = bs[i % 3] + (-2.0f * xs[i]) * ws[i];
    write_f32(x, xs, 6);
    write_f32(w, ws, 6);
    write_f32(b, bs, 3);
    cr_assert_eq(kiln_graph_run(g), KILN_OK, "run: %s", kiln_last_error());
    assert_result(y, want, 6);

    kiln_graph_free(g);
    kiln_context_free(ctx);
}

/* The example runs no matmul: the scheduler runs that node on the cpu
 * backend, copying its sources over and its result back, and says so. */
Test(example, runs_matmul_on_the_cpu_fallback_and_logs_it)
{
    cr_assert_eq(setenv("KILN_LOG", "debug", 1), 0); /* read once per process */
    kiln_context *ctx;
    kiln_graph   *g = example_graph(&ctx);
    kiln_tensor  *a = kiln_input(g, "a", KILN_F32, KILN_SHAPE(2, 3));
    kiln_tensor  *w = kiln_param(g, "w", KILN_SHAPE(3, 2));
    kiln_tensor  *y = kiln_relu(g, kiln_matmul(g, a, w));
    cr_assert_eq(kiln_output(g, y), KILN_OK, "%s", kiln_graph_error(g));

    capture c;
    capture_begin(&c);
    kiln_status st  = kiln_graph_compile(g);
    char       *log = capture_end(&c);
    cr_assert_eq(st, KILN_OK, "compile: %s", kiln_last_error());
    cr_assert(has_line(log, "kiln: debug: ", "(matmul [2, 2]) runs on cpu:0"),
              "no fallback line for the matmul in:\n%s", log);
    cr_assert(has_line(log, "kiln: debug: ", "(relu [2, 2]) runs on example:0"),
              "the relu should stay on the example device:\n%s", log);
    free(log);

    const float as[6] = {1.0f, -2.0f, 3.0f, 0.5f, 0.0f, -1.0f};
    const float ws[6] = {2.0f, 0.5f, -1.0f, 4.0f, 3.0f, 0.25f};
    float       want[4];
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 2; j++) {
            float acc = 0.0f;
            for (int k = 0; k < 3; k++)
                acc += as[i * 3 + k] * ws[k * 2 + j];
            want[i * 2 + j] = acc > 0.0f ? acc : 0.0f;
        }
    write_f32(a, as, 6);
    write_f32(w, ws, 6);
    cr_assert_eq(kiln_graph_run(g), KILN_OK, "run: %s", kiln_last_error());
    assert_result(y, want, 4);

    kiln_graph_free(g);
    kiln_context_free(ctx);
}
