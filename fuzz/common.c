/* fuzz/common.c — set-up, temporary files and failure reports of the fuzz
 * targets (see common.h). */
#include "common.h"

#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char dir[256];
static char paths[2][512];

/* Removes folder d and the files in it (the targets make no subfolders). */
static void remove_tree(const char *d)
{
    DIR           *dp = opendir(d);
    struct dirent *e;
    char           f[1024];
    while (dp && (e = readdir(dp)) != NULL) {
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) {
            snprintf(f, sizeof f, "%s/%s", d, e->d_name);
            unlink(f);
        }
    }
    if (dp)
        closedir(dp);
    rmdir(d);
}

static void remove_dir(void)
{
    remove_tree(dir);
}

static void die(const char *what)
{
    fprintf(stderr, "fuzz: %s: %s\n", what, strerror(errno));
    exit(1);
}

/* The folders of targets that ended without removing theirs: crashed, or
 * fork-mode workers that libFuzzer ends with _Exit. Each is named after its
 * process, so one whose process is gone is removed here. */
static void sweep(const char *parent)
{
    DIR           *dp = opendir(parent);
    struct dirent *e;
    char           d[512];
    while (dp && (e = readdir(dp)) != NULL) {
        int pid, end = 0;
        if (sscanf(e->d_name, "kiln-fuzz-%d%n", &pid, &end) == 1 && !e->d_name[end] &&
            pid > 0 && kill(pid, 0) != 0 && errno == ESRCH) {
            snprintf(d, sizeof d, "%s/%s", parent, e->d_name);
            remove_tree(d);
        }
    }
    if (dp)
        closedir(dp);
}

static bool make_dir(const char *parent)
{
    struct stat st;
    if (!parent || parent[0] != '/' || stat(parent, &st) != 0 || !S_ISDIR(st.st_mode) ||
        access(parent, W_OK) != 0)
        return false;
    sweep(parent);
    snprintf(dir, sizeof dir, "%s/kiln-fuzz-%ld", parent, (long)getpid());
    remove_tree(dir); /* left by an earlier process of the same id */
    return mkdir(dir, 0700) == 0;
}

void fuzz_setup(const char *plugin_path)
{
    if (setenv("KILN_PLUGIN_PATH", plugin_path, 1) != 0 ||
        setenv("KILN_NUM_THREADS", "1", 1) != 0 || setenv("KILN_LOG", "error", 1) != 0 ||
        setenv("KILN_CACHE_DIR", "off", 1) != 0 || unsetenv("KILN_BACKEND") != 0 ||
        unsetenv("KILN_DEBUG_REFUSE") != 0)
        die("setting the environment");
    if (!make_dir("/dev/shm") && !make_dir(getenv("TMPDIR")) && !make_dir("/tmp"))
        die("creating a temporary folder");
    atexit(remove_dir);
}

void fuzz_pin_plugins(const char *plugin_path)
{
    char *list = strdup(plugin_path), *save = NULL;
    if (!list)
        die("a copy of the plugin path");
    for (char *d = strtok_r(list, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
        DIR           *dp = opendir(d);
        struct dirent *e;
        while (dp && (e = readdir(dp)) != NULL) {
            size_t n = strlen(e->d_name);
            char   so[1024];
            if (n < 3 || strcmp(e->d_name + n - 3, ".so") != 0)
                continue;
            snprintf(so, sizeof so, "%s/%s", d, e->d_name);
            (void)dlopen(so, RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE); /* kept */
        }
        if (dp)
            closedir(dp);
    }
    free(list);
}

const char *fuzz_dir(void)
{
    return dir;
}

const char *fuzz_path(int slot, const char *name)
{
    snprintf(paths[slot], sizeof paths[slot], "%s/%s", dir, name);
    return paths[slot];
}

void fuzz_write(const char *path, const uint8_t *data, size_t size)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        die(path);
    while (size > 0) {
        ssize_t n = write(fd, data, size);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            die(path);
        data += n;
        size -= (size_t)n;
    }
    if (close(fd) != 0)
        die(path);
}

char *fuzz_string(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    if (!s)
        die("a copy of the input");
    memcpy(s, data, size);
    s[size] = '\0';
    return s;
}

void fuzz_fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("fuzz: invariant broken: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    remove_dir(); /* libFuzzer saves the input; the files here are copies */
    abort();
}
