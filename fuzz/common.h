/* fuzz/common.h — what the libFuzzer targets share: a quiet, deterministic
 * environment pointing at the build tree's plugins, and a private folder for
 * the files the readers are given.
 *
 * kiln's readers take a path, not a buffer, so each input is written to a
 * regular file in a folder of this process's own (under /dev/shm when it can,
 * to keep disk writes off the hot loop), and removed after the call. The
 * folder, kiln-fuzz-<pid>, is removed at exit or on a broken invariant, and
 * by the next target to start if its process ended otherwise; -jobs and
 * -fork workers each have their own.
 */
#ifndef KILN_FUZZ_COMMON_H
#define KILN_FUZZ_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Sets KILN_PLUGIN_PATH to plugin_path (build-tree folders, or "" for a
 * target that loads no plugin: only the installed folder is then searched,
 * and only when the target asks for a device), one cpu
 * thread, only errors logged, no KILN_BACKEND and no OpenCL program cache,
 * and creates the temporary folder. Exits on failure: a target that cannot
 * set itself up must not report the fuzzer's inputs as fine. */
void fuzz_setup(const char *plugin_path);

/* dlopens every .so of plugin_path's folders with RTLD_NODELETE, and keeps
 * them: kiln dlcloses a plugin it refuses, and a module built with coverage
 * must never be unloaded, as libFuzzer keeps pointers to its counters. kiln's
 * own dlopen then finds the module loaded and behaves as before. */
void fuzz_pin_plugins(const char *plugin_path);

/* The temporary folder, and "<folder>/<name>" in a static buffer of its own
 * per name slot (0 or 1). */
const char *fuzz_dir(void);
const char *fuzz_path(int slot, const char *name);

/* Writes data to path, replacing what was there; exits on failure. */
void fuzz_write(const char *path, const uint8_t *data, size_t size);

/* The first size bytes of data as a NUL-terminated string from malloc (a NUL
 * in data ends it early); exits when memory runs out. */
char *fuzz_string(const uint8_t *data, size_t size);

/* Reports a broken invariant of the code under test as a crash (abort), with
 * what was expected; the input that got there is the reproducer. */
void fuzz_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

#endif
